"""Nomad job files in jobs/: parsed with a real HCL parser (@cdktf/hcl2json,
HashiCorp's HCL compiled to WebAssembly), and the litevisor config each one
renders is validated by the real binary (`litevisor config`) on each node,
then held against the job: topology, stop budget, ports, credential files."""
import json
import os
import re
import subprocess
from urllib.parse import urlsplit

import pytest
import yaml

from conftest import ROOT, TESTS

JOBS = sorted(f for f in os.listdir(os.path.join(ROOT, "jobs")) if f.endswith(".nomad.hcl"))
HCL2JSON = os.path.join(TESTS, "tools", "hcl2json.js")


def duration_s(text):
    """Seconds in a Go-style duration such as "1m0s", "168h0m0s", "500ms"."""
    import re
    parts = re.findall(r"([0-9.]+)(ms|h|m|s)", text)
    assert parts and "".join(n + u for n, u in parts) == text, f"not a duration: {text}"
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    return sum(float(n) * units[u] for n, u in parts)


def parse_job(name):
    out = subprocess.run(["node", HCL2JSON, os.path.join(ROOT, "jobs", name)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def tasks(job):
    for jname, jobs in job["job"].items():
        for group_map in jobs[0]["group"].values():
            group = group_map[0]
            for tname, t in group["task"].items():
                yield group, tname, t[0]


def litevisor_template(task):
    for tp in task.get("template", []):
        if tp["destination"].endswith("litevisor.yml"):
            return tp["data"]
    return None


def render(template, node):
    """What Nomad's template stanza would write, for the functions these jobs use."""
    return template.replace('{{ env "node.unique.name" }}', node)


def task_ports(group, task):
    """Port label -> the port the task itself binds for it. A docker task
    binds the mapped port (`to`, else the static one); raw_exec binds the host
    port, static or the one Nomad picks (a stand-in here). Nomad passes each
    as NOMAD_PORT_<label>."""
    ports = {}
    for net in group.get("network", []):
        for i, (label, spec) in enumerate(sorted(net.get("port", {}).items())):
            spec = spec[0] if spec else {}
            if task["driver"] == "docker" and "to" in spec:
                ports[label] = spec["to"]
            else:
                ports[label] = spec.get("static", 25001 + i)
    return ports


def url_port(url):
    u = urlsplit(url)
    return u.hostname, u.port or (443 if u.scheme == "https" else 80)


@pytest.mark.parametrize("name", JOBS)
def test_job_parses_and_runs_litevisor(name):
    job = parse_job(name)
    found = False
    for group, tname, task in tasks(job):
        cfg = task["config"][0]
        argv = [cfg.get("command") or cfg.get("entrypoint", [""])[0]] + cfg.get("args", [])
        assert argv[0].endswith("litevisor"), f"{tname} is not wrapped by litevisor: {argv}"
        assert argv[1] == "run" and "--" in argv, argv
        assert litevisor_template(task), f"{tname} renders no litevisor.yml"
        # a node cut off from the servers stops its task rather than writing
        # beside its replacement (docs/replication.md, "Another writer")
        assert duration_s(group["disconnect"][0]["stop_on_client_after"]) <= 60, group
        # the health check Nomad runs is litevisor's readiness endpoint
        checks = [c for s in group.get("service", []) for c in s.get("check", [])]
        assert any(c["path"] == "/readyz" for c in checks), checks
        # and a task that never gets ready is restarted (QA93 O5)
        assert all(c.get("check_restart") for c in checks if c["path"] == "/readyz"), checks
        # litevisor's S3 credentials go to files under secrets/, never into the task's
        # environment, which the service inherits (QA93 O5); the service's own keys may
        for tp in task.get("template", []):
            assert not (tp.get("env") and re.search(r"(?i)access_key|s3_key|s3_secret",
                                                    tp["data"])), tp
        found = True
    assert found


@pytest.mark.parametrize("name", JOBS)
@pytest.mark.parametrize("node", ["node-105", "node-106"])
def test_job_config_is_valid_on_each_node(name, node, litevisor_bin, tmp_path):
    job = parse_job(name)
    for group, tname, task in tasks(job):
        secrets = tmp_path / "secrets"
        secrets.mkdir(exist_ok=True)
        (secrets / "s3_key").write_text("AKIAEXAMPLEKEY\n")
        (secrets / "s3_secret").write_text("do-not-print-me\n")
        conf = tmp_path / "litevisor.yml"
        conf.write_text(render(litevisor_template(task), node))
        ports = task_ports(group, task)
        env = dict(os.environ, NOMAD_SECRETS_DIR=str(secrets), NOMAD_TASK_DIR=str(tmp_path),
                   **{f"NOMAD_PORT_{label}": str(port) for label, port in ports.items()})
        p = subprocess.run([litevisor_bin, "config", "-config", str(conf)], env=env,
                           capture_output=True, text=True, timeout=30)
        assert p.returncode == 0, p.stderr
        assert "do-not-print-me" not in p.stdout + p.stderr
        eff = yaml.safe_load(p.stdout)

        # Seed topology: replicate to the OTHER node's MinIO and the NAS; the
        # MinIO on this node is a restore source only.
        other = "node-106" if node == "node-105" else "node-105"
        for db in eff["dbs"]:
            by_name = {r["name"]: r for r in db["replicas"]}
            local = [r for r in db["replicas"] if r.get("node") == node]
            peer = [r for r in db["replicas"] if r.get("node") == other]
            assert len(local) == 1 and local[0]["restore-only"] is True, by_name
            assert len(peer) == 1 and peer[0]["restore-only"] is False, by_name
            assert duration_s(peer[0]["sync-interval"]) == 5
            nas = by_name["nas"]
            assert nas["restore-only"] is False
            assert duration_s(nas["sync-interval"]) == 60
            assert duration_s(nas["retention"]) == 7 * 86400

        # Stop budget: stop-grace + flush must fit in Nomad's kill_timeout,
        # which must fit in the client's default max_kill_timeout (30 s).
        kill = duration_s(task.get("kill_timeout", "5s"))
        sup = eff["supervisor"]
        assert kill <= 30
        # + up to 2 s for the replication threads to stop, + a second of margin
        assert duration_s(sup["stop-grace"]) + duration_s(sup["flush-timeout"]) + 3 <= kill

        # Ports: litevisor listens on the port the /readyz check is sent to,
        # and probes the service on another port of the group, over loopback
        # (the service's own health URL). A docker task maps every port.
        services = group.get("service", [])
        ready = [s["port"] for s in services if any(c["path"] == "/readyz" for c in s.get("check", []))]
        assert len(ready) == 1, services
        assert int(eff["addr"].rsplit(":", 1)[1]) == ports[ready[0]], (eff["addr"], ports)
        host, port = url_port(eff["health"]["probe-url"])
        assert host in ("127.0.0.1", "localhost", "::1"), eff["health"]
        assert port in [n for label, n in ports.items() if label != ready[0]], (port, ports)
        if task["driver"] == "docker":
            assert sorted(task["config"][0].get("ports", [])) == sorted(ports), task["config"]

        # Credentials given as files are files a template of the task writes.
        written = {os.path.basename(tp["destination"]) for tp in task.get("template", [])}
        for db in eff["dbs"]:
            for r in db["replicas"]:
                for key in ("access-key-id-file", "secret-access-key-file"):
                    if key in r:
                        assert os.path.basename(r[key]) in written, (key, r[key], written)
