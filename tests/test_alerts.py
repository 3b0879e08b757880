"""The Prometheus alerting rules shipped in jobs/litevisor.rules.yml, checked with
Prometheus's own promtool (Debian's prometheus package, installed by `make deps`): the
file loads; every series its rules name is one litevisor's /metrics serves, with the
labels their texts use; and evaluated over a real scrape of a running `litevisor run`
(one replica failing, one database written to no replica) by `promtool test rules`, the
alerts fire exactly where they should and no others."""
import os
import re
import shutil
import signal
import subprocess
import time

import pytest
import yaml

from conftest import ROOT, free_port
from test_replicate import create, http_body, take_away, wait_for, write

RULES = os.path.join(ROOT, "jobs", "litevisor.rules.yml")
SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
TARGET = {"instance": "node5:9091", "job": "litevisor"}  # what the scrape adds


def promtool():
    tool = shutil.which("promtool")
    assert tool, "promtool is missing: `make deps` installs Debian's prometheus package"
    return tool


def rules():
    with open(RULES) as f:
        return [r for g in yaml.safe_load(f)["groups"] for r in g["rules"]]


def parse(text):
    """The samples of a text-format scrape: [(name, {label: value}, value)]."""
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        assert m, f"not a sample line: {line!r}"
        labels = {k: v.replace('\\"', '"').replace("\\n", "\n").replace("\\\\", "\\")
                  for k, v in LABEL.findall(m.group(2) or "")}
        out.append((m.group(1), labels, float(m.group(3))))
    return out


@pytest.fixture
def scrape(litevisor_bin, tmp_path):
    """/metrics of `litevisor run` over a sleeping service: database app.db replicated to
    "good" and "down" (file replicas; "down" taken away once the service runs, and a
    commit made: failing), archive.db whose only replica is restore-only (written to
    none), and scratch.db with no replica at all (none was meant)."""
    app, arch, scratch = tmp_path / "app.db", tmp_path / "archive.db", tmp_path / "scratch.db"
    create(app)
    create(arch)
    create(scratch)
    port = free_port()
    cfg = tmp_path / "litevisor.yml"
    cfg.write_text(
        f"addr: 127.0.0.1:{port}\n"
        "dbs:\n"
        f"  - path: {app}\n    replicas:\n"
        f"      - name: good\n        url: file://{tmp_path / 'good'}\n"
        f"      - name: down\n        url: file://{tmp_path / 'down'}\n"
        f"  - path: {arch}\n    replicas:\n"
        f"      - name: old\n        url: file://{tmp_path / 'old'}\n        restore-only: true\n"
        f"  - path: {scratch}\n")
    log = open(tmp_path / "log", "w+")
    p = subprocess.Popen([litevisor_bin, "run", "-config", str(cfg), "--", "/bin/sleep", "60"],
                         stdout=subprocess.DEVNULL, stderr=log, start_new_session=True)

    def shows(*lines):
        assert p.poll() is None, open(tmp_path / "log").read()
        text = http_body(port, "/metrics")
        return text if all(line in text for line in lines) else None

    def text():
        return open(tmp_path / "log").read()

    try:
        wait_for(lambda: shows("litevisor_service_up 1", 'litevisor_replica_snapshots_total{'
                               'db="app.db",replica="down"} 1'), what="the service", log=text)
        take_away(tmp_path / "down", tmp_path)
        write(app, 1, start=1)
        yield wait_for(lambda: shows('litevisor_replica_failing{db="app.db",replica="down"} 1'),
                       what="the replica to fail", log=text)
    finally:
        os.killpg(p.pid, signal.SIGTERM)
        p.wait(timeout=30)
        log.close()


def test_the_rules_load_in_promtool():
    p = subprocess.run([promtool(), "check", "rules", RULES], capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
    assert f"SUCCESS: {len(rules())} rules found" in p.stdout, p.stdout


def test_every_series_the_rules_name_is_served_with_the_labels_they_use(scrape):
    samples = parse(scrape)
    served = {}
    for name, labels, _ in samples:
        served.setdefault(name, []).append(set(labels))
    for r in rules():
        names = set(re.findall(r"\blitevisor_[a-z_]+", r["expr"]))
        assert names, r["alert"]
        used = set(re.findall(r"\$labels\.([a-z_]+)", str(r["annotations"]))) - set(TARGET)
        for n in names:
            assert n in served, f"{r['alert']}: {n} is not in /metrics"
            for labels in served[n]:
                assert used <= labels, f"{r['alert']}: {n} lacks labels {used - labels}"


def render(text, labels):
    return re.sub(r"\{\{ \$labels\.([a-z_]+) \}\}", lambda m: labels[m.group(1)], text)


def held_alerts_are(scrape, firing, tmp_path):
    """The scrape held for 30 minutes (what Prometheus would see if nothing changed),
    with the target labels a scrape adds: promtool finds exactly the alerts firing
    [(alert, {label: value})] at 20 minutes, with their labels and texts."""
    samples = parse(scrape)
    series = []
    for name, labels, value in samples:
        labels = {**labels, **TARGET}
        sel = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        series.append({"series": f"{name}{{{sel}}}", "values": " ".join([repr(value)] * 31)})
    expect = {r["alert"]: [] for r in rules()}
    for alert, want in firing:
        rule = next(r for r in rules() if r["alert"] == alert)
        labels = {**want, **TARGET, **rule["labels"]}
        expect[alert].append({"exp_labels": labels,
                              "exp_annotations": {k: render(v, labels)
                                                  for k, v in rule["annotations"].items()}})
    test = {"rule_files": [RULES], "evaluation_interval": "1m",
            "tests": [{"interval": "1m", "input_series": series,
                       "alert_rule_test": [{"eval_time": "20m", "alertname": a, "exp_alerts": e}
                                           for a, e in expect.items()]}]}
    path = tmp_path / "alerts_test.yml"
    path.write_text(yaml.safe_dump(test, sort_keys=False))
    p = subprocess.run([promtool(), "test", "rules", str(path)], capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "SUCCESS" in p.stdout, p.stdout


def test_alerts_fire_on_a_real_scrape_where_they_should_and_nowhere_else(scrape, tmp_path):
    """The failing replica and the database written to no replica alert, with their
    labels and texts; no other alert fires: not the database with no replica
    configured either, which the docs say is left alone (QA154 D2)."""
    assert 'litevisor_db_writable_replicas{db="scratch.db"} 0' in scrape
    held_alerts_are(scrape, [("LitevisorReplicaFailing", {"db": "app.db", "replica": "down"}),
                             ("LitevisorNotBackedUp", {"db": "archive.db"})], tmp_path)


def test_a_healthy_replicate_without_a_service_fires_no_alert(litevisor_bin, tmp_path):
    """`litevisor replicate` has no service: its /metrics said litevisor_service_up 0, and
    the shipped LitevisorServiceDown (critical) fired for every healthy one (QA136 D1)."""
    db = tmp_path / "app.db"
    create(db)
    port = free_port()
    cfg = tmp_path / "litevisor.yml"
    cfg.write_text(f"addr: 127.0.0.1:{port}\ndbs:\n  - path: {db}\n    replicas:\n"
                   f"      - name: good\n        url: file://{tmp_path / 'good'}\n")
    log = open(tmp_path / "log", "w+")
    p = subprocess.Popen([litevisor_bin, "replicate", "-config", str(cfg)],
                         stdout=subprocess.DEVNULL, stderr=log)
    try:
        def ready():
            assert p.poll() is None, open(tmp_path / "log").read()
            text = http_body(port, "/metrics")
            return text if 'litevisor_replica_snapshots_total{db="app.db",replica="good"} 1' \
                in text and "litevisor_ready 1" in text else None
        text = wait_for(ready, what="replication running",
                        log=lambda: open(tmp_path / "log").read())
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=30)
        log.close()
    held_alerts_are(text, [], tmp_path)


@pytest.mark.parametrize("restarts", [2, 3])
def test_service_restarting_fires_for_more_than_two_restarts_on_unaligned_scrapes(tmp_path,
                                                                                  restarts):
    """increase() extrapolates to the window's edges when scrapes (45 s here) and
    evaluations (1 min) are not aligned: 2 restarts read 2.105 and "more than 2 restarts
    in 15 min" fired after exactly 2 (QA136 D3). It fires from the third."""
    name = 'litevisor_service_restarts_total{instance="node5:9091",job="litevisor"}'
    values = "1x19 2 3 3x40" if restarts == 2 else "1x19 2 3 4 4x40"
    rule = next(r for r in rules() if r["alert"] == "LitevisorServiceRestarting")
    labels = {**TARGET, **rule["labels"]}
    want = [] if restarts == 2 else [{"exp_labels": labels, "exp_annotations": {
        k: render(v, labels) for k, v in rule["annotations"].items()}}]
    test = {"rule_files": [RULES], "evaluation_interval": "1m",
            "tests": [{"interval": "45s", "input_series": [{"series": name, "values": values}],
                       "alert_rule_test": [{"eval_time": "25m",
                                            "alertname": "LitevisorServiceRestarting",
                                            "exp_alerts": want}]}]}
    path = tmp_path / "restarts_test.yml"
    path.write_text(yaml.safe_dump(test, sort_keys=False))
    p = subprocess.run([promtool(), "test", "rules", str(path)], capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
