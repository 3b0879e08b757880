"""Consul: the writer lock and the service registration (consul/, supervisor/consul_link.h).

Consul cannot be installed here: these tests run litevisor against
tests/tools/consul_server.py, a loopback stand-in for a Consul agent that
follows Consul's documented HTTP API (api-docs/agent/service.mdx, agent/check.mdx,
session.mdx, kv.mdx, features/blocking.mdx) and its Go source for status codes
and messages; tests/test_consul_server.py checks the stand-in against those rules.
"""
import base64
import json
import os
import signal
import sqlite3
import threading
import socket
import subprocess
import sys
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "tools"))
from consul_server import ConsulServer  # noqa: E402
from conftest import faulty_env, free_port, kuma_stand_in  # noqa: E402
from test_run import DB_SERVICE, curl, kill_group, one_replica_down, poll, runs, start  # noqa: E402,F401


@pytest.fixture
def consul():
    srv = ConsulServer().start()
    yield srv
    srv.stop()


def http(srv, method, path, body=None, token=None):
    req = urllib.request.Request(srv.url + path, method=method,
                                 data=body.encode() if isinstance(body, str) else body)
    if token:
        req.add_header("X-Consul-Token", token)
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.loads(r.read() or b"null")


def hold_lock_elsewhere(srv, key):
    """Another writer: a session of its own holding key, made through the API."""
    sid = http(srv, "PUT", "/v1/session/create",
               json.dumps({"Name": "litevisor: other-node", "TTL": "60s"}))["ID"]
    assert http(srv, "PUT", f"/v1/kv/{key}?acquire={sid}",
                '{"holder":"litevisor: other-node","pid":1}') is True
    return sid


def lock_cfg(tmp, node, consul, key="litevisor/app", extra=""):
    """A node's config: its own database path, one file replica shared by every node."""
    return (f"node: {node}\n"
            f"dbs:\n  - path: {tmp}/{node}/app.db\n    name: app\n"
            f"    replicas:\n      - name: shared\n        type: file\n        path: {tmp}/replica\n"
            f"        sync-interval: 100ms\n"
            f"restore:\n  handover-wait: 0s\n"
            f"consul:\n  addr: {consul.addr}\n  lock:\n    key: {key}\n{extra}")


def node_run(runs, binary, tmp, node, cfg, rows=3, env=None):
    d = tmp / node
    d.mkdir(exist_ok=True)
    (d / "cfg").mkdir(exist_ok=True)
    return start(runs, binary, d / "cfg",
                 DB_SERVICE + ["--report", str(d / "report.json"), "--ready", str(d / "ready"),
                               "--rows", str(rows)], config=cfg, env=env)


def log_time(text, needle):
    """The time (seconds since the epoch) of the first log line holding needle."""
    import datetime
    line = next(x for x in text.splitlines() if needle in x)
    return datetime.datetime.fromisoformat(line.split()[0].replace("Z", "+00:00")).timestamp()


def holder_session(srv, key):
    e = srv.kv(key)
    return e.get("Session") if e else None


def test_the_next_writer_waits_for_the_lock_and_restores_the_final_commits(litevisor_bin,
                                                                           tmp_path, runs, consul):
    """A rolling deploy: B starts while A still runs. B restores nothing and starts nothing
    until A has stopped, flushed its last commit (its TERM handler's row) and released the
    lock; then B restores all of it. Without the lock B would restore at once, without
    A's last commits."""
    a = node_run(runs, litevisor_bin, tmp_path, "a", lock_cfg(tmp_path, "a", consul))
    poll(lambda: (tmp_path / "a" / "ready").exists(), timeout=30)
    sa = holder_session(consul, "litevisor/app")
    (sess,) = consul.sessions().values()
    assert sa == sess["ID"] and sess["Name"].startswith("litevisor: a pid "), sess
    assert sess["TTL"] == "15000ms" and sess["Behavior"] == "release", sess
    assert sess["LockDelay"] in ("16s", 16 * 10**9, "16000ms"), sess  # stop-grace + flush + 1s
    b = node_run(runs, litevisor_bin, tmp_path, "b", lock_cfg(tmp_path, "b", consul))
    poll(lambda: "waiting for the writer lock" in b.stderr(), timeout=10)
    assert 'held_by="litevisor: a pid ' in b.stderr(), b.stderr()
    time.sleep(1.5)
    assert not (tmp_path / "b" / "report.json").exists()  # B's service never started
    assert not (tmp_path / "b" / "app.db").exists()       # and nothing was restored
    # the holder watches its key with consistent reads, as Consul's api/lock.go does
    assert any(m == "GET" and p.startswith("/v1/kv/litevisor/app?consistent")
               for m, p, _, _ in consul.requests), [q[1] for q in consul.requests]
    os.kill(a.pid, signal.SIGTERM)
    assert a.wait(timeout=30) == 0
    assert "writer lock released" in a.stderr()
    poll(lambda: (tmp_path / "b" / "ready").exists(), timeout=30)
    report = json.loads((tmp_path / "b" / "report.json").read_text())
    assert report["rows"] == ["row-0", "row-1", "row-2", "term-handler"], report
    # taken as the key changed, not a second later (QA151 D2)
    gap = log_time(b.stderr(), "writer lock held") - log_time(a.stderr(), "writer lock released")
    assert gap < 0.8, gap
    assert holder_session(consul, "litevisor/app") not in (None, sa)
    os.kill(b.pid, signal.SIGTERM)
    assert b.wait(timeout=30) == 0
    assert holder_session(consul, "litevisor/app") is None
    # the key keeps who held it last, as Consul's api.Lock leaves it (QA93 O7)
    held = json.loads(bytes(consul.kv("litevisor/app")["Value"]))
    assert held["pid"] == b.pid and held["holder"] and held["since"], held
    assert not consul.sessions()  # destroyed, not left to expire


def test_the_lock_is_shown_in_metrics(litevisor_bin, tmp_path, runs, consul):
    """litevisor_consul_lock_held: 1 on the node holding the writer lock, 0 on the one
    waiting for it (an alert on the standby node waiting far longer than a handover);
    no such series without consul.lock-key."""
    def held(port):
        _, _, body = curl(f"http://127.0.0.1:{port}/metrics")
        found = [l for l in body.splitlines() if l.startswith("litevisor_consul_lock_held")]
        return found[0].split()[1] if found else None

    pa, pb = free_port(), free_port()
    a = node_run(runs, litevisor_bin, tmp_path, "a",
                 f"addr: 127.0.0.1:{pa}\n" + lock_cfg(tmp_path, "a", consul))
    poll(lambda: (tmp_path / "a" / "ready").exists(), timeout=30)
    assert held(pa) == "1"
    b = node_run(runs, litevisor_bin, tmp_path, "b",
                 f"addr: 127.0.0.1:{pb}\n" + lock_cfg(tmp_path, "b", consul))
    poll(lambda: "waiting for the writer lock" in b.stderr(), timeout=10)
    poll(lambda: held(pb) == "0", timeout=10)
    os.kill(a.pid, signal.SIGTERM)
    assert a.wait(timeout=30) == 0
    poll(lambda: (tmp_path / "b" / "ready").exists(), timeout=30)
    assert held(pb) == "1"
    os.kill(b.pid, signal.SIGTERM)
    assert b.wait(timeout=30) == 0
    pc = free_port()
    c = node_run(runs, litevisor_bin, tmp_path, "c", f"addr: 127.0.0.1:{pc}\n" +
                 lock_cfg(tmp_path, "c", consul).split("consul:")[0])
    poll(lambda: (tmp_path / "c" / "ready").exists(), timeout=30)
    assert held(pc) is None
    os.kill(c.pid, signal.SIGTERM)
    assert c.wait(timeout=30) == 0


def test_a_local_agent_is_never_reached_through_http_proxy(litevisor_bin, tmp_path, runs,
                                                          consul):
    """With $http_proxy set, the requests to a loopback agent went through the proxy, its
    ACL token with them (QA89 D2); Consul's own Go client never proxies loopback. The
    stand-in proxy, on loopback too, would answer every request 200 with JSON."""
    proxy, got = kuma_stand_in()
    try:
        a = node_run(runs, litevisor_bin, tmp_path, "a", lock_cfg(tmp_path, "a", consul),
                     env={"http_proxy": f"http://127.0.0.1:{proxy.server_port}", "no_proxy": "",
                          "NO_PROXY": "", "CONSUL_HTTP_TOKEN": "not-for-a-proxy"})
        poll(lambda: (tmp_path / "a" / "ready").exists(), timeout=30)
        assert holder_session(consul, "litevisor/app"), a.stderr()
        os.kill(a.pid, signal.SIGTERM)
        assert a.wait(timeout=30) == 0, a.stderr()
    finally:
        proxy.shutdown()
    assert not got, got


def test_a_lock_not_taken_within_its_wait_starts_nothing_and_exits_111(litevisor_bin, tmp_path,
                                                                       runs, consul):
    hold_lock_elsewhere(consul, "litevisor/app")
    r = node_run(runs, litevisor_bin, tmp_path, "b",
                 lock_cfg(tmp_path, "b", consul, extra="    wait: 2s\n"))
    assert r.wait(timeout=20) == 111
    err = r.stderr()
    assert "not acquired within consul.lock.wait (2s)" in err, err
    assert 'held_by="litevisor: other-node' in err, err
    assert not (tmp_path / "b" / "app.db").exists()
    assert not (tmp_path / "b" / "report.json").exists()
    assert len(consul.sessions()) == 1  # ours destroyed; the holder's untouched


def test_a_stop_while_waiting_for_the_lock_exits_at_once(litevisor_bin, tmp_path, runs, consul):
    """While it waits, the allocation is in Consul, critical, saying why; a stop ends the
    wait at once, deregisters it and destroys its session."""
    hold_lock_elsewhere(consul, "litevisor/app")
    r = node_run(runs, litevisor_bin, tmp_path, "b",
                 lock_cfg(tmp_path, "b", consul) + "  service:\n    name: app\n    id: app-b\n")
    poll(lambda: "waiting for the writer lock" in r.stderr(), timeout=10)
    chk = poll(lambda: consul.checks().get("service:app-b"), timeout=10)
    poll(lambda: consul.checks()["service:app-b"]["Output"] == "waiting for the writer lock")
    assert chk["Status"] == "critical"
    t0 = time.monotonic()
    os.kill(r.pid, signal.SIGTERM)
    assert r.wait(timeout=10) == 128 + signal.SIGTERM
    assert time.monotonic() - t0 < 3
    assert len(consul.sessions()) == 1
    assert not consul.services()
    assert not (tmp_path / "b" / "report.json").exists()


def test_a_lost_lock_stops_the_service_flushes_and_exits_111(litevisor_bin, tmp_path, runs,
                                                              consul):
    """An operator (or Consul) ends the session: another writer may take the key after
    the lock delay, so the service is stopped, its last commits flushed, and 111 tells
    the orchestrator to start it again (that start waits for the lock)."""
    quick = "supervisor:\n  stop-grace: 500ms\n  flush-timeout: 500ms\n"
    r = node_run(runs, litevisor_bin, tmp_path, "a",
                 quick + lock_cfg(tmp_path, "a", consul, extra="    lock-delay: 1s\n"))
    poll(lambda: (tmp_path / "a" / "ready").exists(), timeout=30)
    sid = holder_session(consul, "litevisor/app")
    assert http(consul, "PUT", f"/v1/session/destroy/{sid}") is True
    assert r.wait(timeout=30) == 111
    err = r.stderr()
    assert "the writer lock is lost" in err, err
    # said as Consul's doing, not someone else's release (QA142 O1)
    assert "Consul ended the lock's session" in err and "someone else" not in err, err
    # the service got its TERM and its last row reached the replica
    b = node_run(runs, litevisor_bin, tmp_path, "b", lock_cfg(tmp_path, "b", consul))
    poll(lambda: (tmp_path / "b" / "ready").exists(), timeout=30)
    rows = json.loads((tmp_path / "b" / "report.json").read_text())["rows"]
    assert rows[-1] == "term-handler", rows
    os.kill(b.pid, signal.SIGTERM)
    assert b.wait(timeout=30) == 0


def test_settings_that_cannot_cover_a_late_learned_loss_are_warned_of(litevisor_bin, tmp_path,
                                                                      runs, consul):
    """Consul can end the session while the holder cannot reach its agent (its node left,
    serfHealth failed): the lock delay starts then, but the holder learns of it up to a
    TTL later and only then stops and flushes. The next writer's restore waits for that
    flush within restore.handover-wait; with lock-delay + handover-wait short of ttl +
    stop-grace + flush-timeout its last commits can be lost (QA69 D2): said at start.
    The defaults cover it."""
    warning = "a lost lock is learned up to its TTL late"
    for node, cfg, warned in (("a", lock_cfg(tmp_path, "a", consul), True),
                              ("b", lock_cfg(tmp_path, "b", consul).replace(
                                  "restore:\n  handover-wait: 0s\n", ""), False)):
        r = node_run(runs, litevisor_bin, tmp_path, node, cfg)
        poll(lambda: (tmp_path / node / "ready").exists(), timeout=30)
        assert (warning in r.stderr()) == warned, r.stderr()
        if warned:
            assert "handover_wait=0s" in r.stderr() and "lock_delay=16s" in r.stderr(), r.stderr()
        os.kill(r.pid, signal.SIGTERM)
        assert r.wait(timeout=30) == 0, r.stderr()


def test_an_agent_down_at_start_is_waited_for(litevisor_bin, tmp_path, runs, consul):
    consul.down()
    r = node_run(runs, litevisor_bin, tmp_path, "a", lock_cfg(tmp_path, "a", consul))
    poll(lambda: "writer lock: request failed; trying again" in r.stderr(), timeout=10)
    assert not (tmp_path / "a" / "report.json").exists()
    consul.up()
    poll(lambda: (tmp_path / "a" / "ready").exists(), timeout=30)
    os.kill(r.pid, signal.SIGTERM)
    assert r.wait(timeout=30) == 0


def test_an_acl_refusal_fails_at_once(litevisor_bin, tmp_path, runs):
    srv = ConsulServer(token="right").start()
    try:
        cfg = lock_cfg(tmp_path, "a", srv).replace("consul:\n", "consul:\n  token: wrong\n")
        r = node_run(runs, litevisor_bin, tmp_path, "a", cfg)
        assert r.wait(timeout=10) == 111
        err = r.stderr()
        assert "Consul refused the session: HTTP 403: ACL not found" in err, err
        assert "wrong" not in err  # a token is never logged
        assert not (tmp_path / "a" / "report.json").exists()
    finally:
        srv.stop()


def test_a_writer_stopped_in_its_long_wait_passes_it_on(litevisor_bin, tmp_path, runs, consul):
    """After a release by hand while A is cut off from its agent, B takes the key and waits
    long for A; stopped during that wait, B releases the key with its own unreleased record,
    which C read as a session Consul ended (a lock delay set): C waited handover-wait only
    (QA152 D1). B's release marks the record: the longer wait passes on."""
    a, path_a, cfg = holder_with_its_own_agent_path(litevisor_bin, tmp_path, runs, consul, "3s")
    poll(lambda: "snapshot written" in a.stderr(), timeout=30, log=a.log_path)
    sid = holder_session(consul, "litevisor/app")
    path_a.cut()
    http(consul, "PUT", f"/v1/kv/litevisor/app?release={sid}")
    b = node_run(runs, litevisor_bin, tmp_path, "b", cfg("b", consul.addr))
    poll(lambda: "no lock delay held the key before this take" in b.stderr(), timeout=20,
         log=b.log_path)
    os.kill(b.pid, signal.SIGTERM)
    assert b.wait(timeout=30) == 143, b.stderr()
    assert json.loads(bytes(consul.kv("litevisor/app")["Value"])).get("undelayed") is True
    c = node_run(runs, litevisor_bin, tmp_path, "c", cfg("c", consul.addr))
    poll(lambda: "waiting for its node to finish stopping" in c.stderr(), timeout=20,
         log=c.log_path)
    assert "no lock delay held the key before this take" in c.stderr(), c.stderr()


def b_holds_the_key(consul):
    """Writer B, a session made through the API, holds litevisor/app with a holder's
    record: (its session, its record)."""
    sid = http(consul, "PUT", "/v1/session/create",
               json.dumps({"Name": "litevisor: b", "TTL": "60s", "LockDelay": "7s"}))["ID"]
    record = {"holder": "litevisor: b pid 1", "pid": 1, "since": "2026-12-07T00:00:00Z"}
    assert http(consul, "PUT", f"/v1/kv/litevisor/app?acquire={sid}", json.dumps(record)) is True
    return sid, record


def c_config_with_a_slow_agent(tmp_path, consul):
    """Node c's config: ttl 10s, stop-grace 4s, flush-timeout 2s (the longer wait 16 s),
    handover-wait 3s, consul.timeout 1s (an answer held back longer is lost)."""
    return ("supervisor:\n  stop-grace: 4s\n  flush-timeout: 2s\n" +
            lock_cfg(tmp_path, "c", consul, extra="    ttl: 10s\n").replace(
                "handover-wait: 0s", "handover-wait: 3s").replace(
                "consul:\n", "consul:\n  timeout: 1s\n"))


@pytest.mark.parametrize("answer", ["received", "lost"])
@pytest.mark.parametrize("release", ["undelayed", "by-hand", "undelayed-before"])
def test_a_key_freed_between_its_read_and_the_acquire_gets_the_longer_wait(
        litevisor_bin, tmp_path, runs, consul, release, answer):
    """C reads the key held by B, and B lets it go before C's acquire lands (a slow
    agent): released by a writer stopped in its long wait (its record marked
    "undelayed"), or by hand. C judged its take from B's held record, read before, as
    a session Consul ended with a lock delay, and waited handover-wait only (QA153 D1).
    A key read held and taken at once was freed in a way not seen: the longer wait.
    When the acquire's answer was lost (it landed after consul.timeout), C read the key
    again, found its own record there and judged from that: handover-wait only again,
    also for a key read free with an "undelayed" record (QA156 D1). What the key held
    before that acquire is kept."""
    sid, record = b_holds_the_key(consul)
    undelayed = json.dumps(dict(record, undelayed=True))
    if release == "undelayed-before":
        assert http(consul, "PUT", f"/v1/kv/litevisor/app?release={sid}", undelayed) is True
    hold = consul.hold_next(path="/v1/kv/litevisor/app", method="PUT", contains="acquire=")
    cfg = c_config_with_a_slow_agent(tmp_path, consul)
    c = node_run(runs, litevisor_bin, tmp_path, "c", cfg)
    assert hold.arrived.wait(20), c.stderr()
    assert "waiting for the writer lock" not in c.stderr()  # its first acquire, after one read
    if answer == "lost":
        poll(lambda: "writer lock: request failed" in c.stderr(), timeout=10, log=c.log_path)
    if release != "undelayed-before":
        body = undelayed if release == "undelayed" else None
        assert http(consul, "PUT", f"/v1/kv/litevisor/app?release={sid}", body) is True
    hold.go()
    poll(lambda: "restore done" in c.stderr() or "exiting" in c.stderr(), timeout=30,
         log=c.log_path)
    err = c.stderr()
    assert "no lock delay held the key before this take" in err, err
    assert ("writer lock taken right as its holder let it go" in err) == \
        (release != "undelayed-before"), err


@pytest.mark.parametrize("note", [False, True])
def test_an_acquire_landing_after_a_later_one_was_refused_is_taken_at_once(
        litevisor_bin, tmp_path, runs, consul, note):
    """C's first acquire is answered after consul.timeout (a slow agent), its second is
    refused while B still holds the key, then B lets go and the first lands: C read the
    key held by its own session, logged that it waited for itself, and sat in a blocking
    query until its next renewal (QA157 D1). It takes the key at once, also when someone
    wrote another value into it meanwhile (a plain PUT keeps the session): that read as a
    foreign value, never acquired, and C spun on reads for ever (QA158 D2)."""
    sid, record = b_holds_the_key(consul)
    first = consul.hold_next(path="/v1/kv/litevisor/app", method="PUT", contains="acquire=")
    cfg = c_config_with_a_slow_agent(tmp_path, consul)
    c = node_run(runs, litevisor_bin, tmp_path, "c", cfg)
    assert first.arrived.wait(20), c.stderr()
    second = consul.hold_next(path="/v1/kv/litevisor/app", method="PUT", contains="acquire=")
    poll(lambda: "writer lock: request failed" in c.stderr(), timeout=10, log=c.log_path)
    assert second.arrived.wait(10), c.stderr()
    read = consul.hold_next(path="/v1/kv/litevisor/app", method="GET")
    second.go()  # refused: B holds the key
    assert read.arrived.wait(5), c.stderr()
    assert http(consul, "PUT", f"/v1/kv/litevisor/app?release={sid}",
                json.dumps(dict(record, released=True))) is True
    first.go()  # lands at last
    poll(lambda: holder_session(consul, "litevisor/app"), timeout=10)
    mine = holder_session(consul, "litevisor/app")
    if note:
        assert http(consul, "PUT", "/v1/kv/litevisor/app", "maintenance note") is True
    t0 = time.monotonic()
    read.go()  # C reads the key held by its own session
    poll(lambda: "writer lock held" in c.stderr(), timeout=30, log=c.log_path)
    assert time.monotonic() - t0 < 1.5, c.stderr()
    assert not any("waiting for the writer lock" in line and mine in line
                   for line in c.stderr().splitlines()), c.stderr()


def test_a_holders_replacement_after_its_lock_delay_waits_no_longer_than_handover_wait(
        litevisor_bin, tmp_path, runs, consul):
    """A holder killed; Consul ends its session (here a destroy) and holds the key in its
    lock delay; its replacement starts after the delay: it saw no delay, and took the
    key for one released by hand, waiting ttl + stop-grace + flush-timeout for the dead
    holder's open generation instead of handover-wait (QA151 D3). Consul keeps the value
    of a key whose session it ended, the holder's record: that tells."""
    def cfg(node):
        return lock_cfg(tmp_path, node, consul, extra="    ttl: 10s\n    lock-delay: 1s\n"
                        ).replace("handover-wait: 0s", "handover-wait: 3s")
    quick = "supervisor:\n  stop-grace: 400ms\n  flush-timeout: 500ms\n"
    (tmp_path / "a" / "cfg").mkdir(parents=True)
    a = start(runs, litevisor_bin, tmp_path / "a" / "cfg",
              DB_SERVICE + ["--report", str(tmp_path / "a" / "report.json"), "--ready",
                            str(tmp_path / "a" / "ready"), "--rows", "3"],
              config=quick + cfg("a"), own_group=True)
    poll(lambda: (tmp_path / "a" / "ready").exists(), timeout=30)
    poll(lambda: "snapshot written" in a.stderr(), timeout=30, log=a.log_path)
    time.sleep(0.5)  # its rows shipped
    kill_group(a.p)  # with its service
    assert http(consul, "PUT", f"/v1/session/destroy/{holder_session(consul, 'litevisor/app')}")
    time.sleep(1.5)  # the lock delay is over
    b = node_run(runs, litevisor_bin, tmp_path, "b", quick + cfg("b"))
    poll(lambda: (tmp_path / "b" / "ready").exists(), timeout=30, log=b.log_path)
    err = b.stderr()
    assert "waiting for its node to finish stopping" in err, err  # any age: A's is not recent
    assert "no lock delay held the key" not in err, err
    assert "handover_wait_ms=3000" in err, err
    os.kill(b.pid, signal.SIGTERM)
    assert b.wait(timeout=30) == 0, b.stderr()


def test_a_key_the_token_may_not_read_fails_at_once(litevisor_bin, tmp_path, runs, consul):
    """The key is read before every acquire; a read the ACLs refuse (a token whose
    policy covers sessions but not this key) is no failure to wait out."""
    consul.fail_next(1, 403, "Permission denied", path="/v1/kv/litevisor/app", method="GET")
    r = node_run(runs, litevisor_bin, tmp_path, "a", lock_cfg(tmp_path, "a", consul))
    assert r.wait(timeout=10) == 111, r.stderr()
    assert "Consul refused to read the lock's key: HTTP 403" in r.stderr(), r.stderr()
    assert not (tmp_path / "a" / "report.json").exists()


def test_registered_with_a_ttl_check_that_follows_healthz(litevisor_bin, tmp_path, runs):
    """Registration from Nomad's environment (port label → host port and IP, ID from the
    allocation), the token from a file as X-Consul-Token, a TTL check kept passing past
    its TTL, and deregistration as soon as the stop begins, before the service is gone."""
    srv = ConsulServer(token="t0k3n").start()
    try:
        (tmp_path / "token").write_text("t0k3n\n")
        gone = tmp_path / "gone"
        cfg = (f"consul:\n  addr: http://{srv.addr}\n  token-file: {tmp_path}/token\n"
               f"  service:\n    name: web\n    port: http\n    tags: [primary, v1]\n"
               f"    meta:\n      owner: homelab\n    check-ttl: 5s\n"
               f"    deregister-critical-after: 5m\n")
        env = {"NOMAD_ALLOC_ID": "8f3c-alloc", "NOMAD_HOST_PORT_http": "28123",
               "NOMAD_IP_http": "127.0.0.9", "NOMAD_PORT_http": "8123"}
        r = start(runs, litevisor_bin, tmp_path,
                  ["sh", "-c", f'trap "sleep 1; touch {gone}; exit 0" TERM; '
                               f'while :; do sleep 0.1; done'], config=cfg, env=env)
        poll(lambda: "web-8f3c-alloc" in srv.services(), timeout=10)
        svc = srv.services()["web-8f3c-alloc"]
        assert (svc["Name"], svc["Port"], svc["Address"], svc["Tags"], svc["Meta"]) == \
            ("web", 28123, "127.0.0.9", ["primary", "v1"], {"owner": "homelab"}), svc
        cid = "service:web-8f3c-alloc"
        poll(lambda: srv.checks().get(cid, {}).get("Status") == "passing", timeout=10)
        chk = srv.checks()[cid]
        assert chk["Output"] == "OK" and chk["ServiceID"] == "web-8f3c-alloc", chk
        reg = [q for q in srv.requests if q[1].startswith("/v1/agent/service/register")]
        body = json.loads(reg[0][3])
        assert body["Check"]["TTL"] == "5000ms" and body["Check"]["Status"] == "critical"
        assert body["Check"]["DeregisterCriticalServiceAfter"] == "300000ms", body
        time.sleep(6.5)  # past the TTL: updates keep it passing
        assert srv.history(cid) == ["critical", "passing"], srv.history(cid)
        assert all(h.get("X-Consul-Token") == "t0k3n" for _, _, h, _ in srv.requests)
        os.kill(r.pid, signal.SIGTERM)
        poll(lambda: "web-8f3c-alloc" not in srv.services(), timeout=5)
        assert not gone.exists()  # deregistered while the service was still stopping
        assert r.wait(timeout=20) == 0
        assert gone.exists()
        assert "t0k3n" not in r.stderr()
    finally:
        srv.stop()


def test_the_check_warns_while_a_replica_fails(litevisor_bin, tmp_path, runs, consul):
    (tmp_path / "data").mkdir()
    port, refused = free_port(), free_port()
    cfg = one_replica_down(tmp_path, port, refused) + (
        f"consul:\n  addr: {consul.addr}\n  service:\n    name: app\n")
    ready = tmp_path / "ready"
    env = {k: "" for k in os.environ if k.startswith("NOMAD_")}
    r = start(runs, litevisor_bin, tmp_path,
              DB_SERVICE + ["--report", str(tmp_path / "report.json"), "--ready", str(ready),
                            "--rows", "3"], config=cfg, env=env)
    poll(lambda: ready.exists(), timeout=30)
    # outside Nomad the ID is per process: a second instance on this host never takes it over
    sid = f"app-{socket.gethostname()}-{r.pid}"
    assert list(consul.services()) == [sid], consul.services()
    chk = poll(lambda: (lambda c: c if "app/down" in c.get("Output", "") else None)(
        consul.checks().get(f"service:{sid}", {})), timeout=20)
    assert chk["Status"] == "warning", chk
    health = json.loads(curl(f"http://127.0.0.1:{port}/healthz")[2])
    assert health["status"] == "warn" and "app/down" in health["output"], health
    os.kill(r.pid, signal.SIGTERM)
    assert r.wait(timeout=30) == 0


def test_replicate_holds_the_lock_and_refuses_a_service_registration(litevisor_bin, tmp_path,
                                                                      consul):
    (tmp_path / "a").mkdir()
    cfg = tmp_path / "replicate.yml"
    cfg.write_text(lock_cfg(tmp_path, "a", consul))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LITEVISOR_", "LITESTREAM_"))}
    log = tmp_path / "replicate.log"
    p = subprocess.Popen([litevisor_bin, "replicate", "-config", str(cfg)], env=env,
                         stderr=log.open("w"))
    try:
        poll(lambda: "replicating" in log.read_text(), timeout=10)
        assert holder_session(consul, "litevisor/app")
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=20) == 0
        assert holder_session(consul, "litevisor/app") is None and not consul.sessions()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    cfg.write_text(lock_cfg(tmp_path, "a", consul) + "  service:\n    name: app\n")
    q = subprocess.run([litevisor_bin, "replicate", "-config", str(cfg)], env=env,
                       capture_output=True, text=True, timeout=20)
    assert q.returncode == 100 and "consul.service registers the service" in q.stderr, q.stderr


@pytest.mark.parametrize("section,message", [
    ("  lock:\n    key: k\n    ttl: 5s\n", "consul.lock.ttl: Consul takes a session TTL of 10s to 24h"),
    ("  lock:\n    key: k\n    lock-delay: 61s\n", "Consul takes a lock delay of 0s to 60s"),
    ("  lock:\n    key: /k\n", "no leading or trailing '/'"),
    ("  lock:\n    key: team-a/../app\n", "no empty, \".\" or \"..\" part"),
    ("  lock:\n    key: \"litevisor:radarr\"\n", "(what every Consul version takes)"),
    ("  service:\n    name: a\n    address: 0.0.0.0\n", "Consul refuses it"),
    ("  lock:\n    key: " + "k" * 513 + "\n", "longer than 512 bytes"),
    ("  lock:\n    key: k\n    lock-delay: 10s\n",
     "the lock delay (10s) must cover supervisor.stop-grace + supervisor.flush-timeout (10s + 5s)"),
    ("  lock:\n    key: k\nsupervisor:\n  stop-grace: 1m\n",
     "consul.lock: the lock delay (1m0s) must cover"),
    ("  service:\n    name: a\n    check-ttl: 3s\n", "consul.service.check-ttl: at least 5s"),
    ("  lock:\n    ttl: 20s\n", "needs key"),
    ("  service:\n    port: 80\n", "needs name"),
    ("  service:\n    name: a b\n", "consul.service.name"),
    ("  service:\n    name: a\n    deregister-critical-after: 30s\n", "Consul's minimum is 1m"),
    ("  service:\n    name: a\n    port: 70000\n", "not a port"),
    ("  service:\n    name: a\n    meta:\n      consul-x: y\n", "reserved by Consul"),
    ("  addr: unix:///run/consul.sock\n", "expected http://HOST:PORT"),
    ("  token: a\n  token-file: /f\n", "not both"),
    ("  service:\n    name: " + "a" * 257 + "\n", "must be UTF-8 text of at most 256 bytes"),
    ("  token-file: /nonexistent/token\n  lock:\n    key: k\n",
     'consul.token-file: cannot read "/nonexistent/token"'),
    # never sent, so every request would fail until lock.wait ran out (QA69 D5)
    ('  token: "abc\\ndef"\n  lock:\n    key: k\n', "consul.token: contains a line break"),
    # each was found only at run, by a request that failed (QA69 O2)
    ("  addr: 127.0.0.1:99999\n", "the port is not a number from 1 to 65535"),
    ("  addr: \"[::1]:0\"\n", "the port is not a number from 1 to 65535"),
    ("  addr: 127.0.0.1\n", "has no port"),
    # no host: every request failed, and run exited 111 after lock.wait (QA78 D6)
    ("  addr: \":8500\"\n", 'consul.addr: ":8500" has no host'),
    ("  addr: \"http://:8500\"\n", 'consul.addr: "http://:8500" has no host'),
    ("  addr: \"${LITEVISOR_TEST_UNSET_HOST}:8500\"\n",
     "has no host (HOST:PORT, [IPV6]:PORT or http(s)://HOST[:PORT]) (environment variable "
     "LITEVISOR_TEST_UNSET_HOST is not set)"),
    ("  ca-file: /nonexistent/ca.pem\n", 'consul.ca-file: cannot read "/nonexistent/ca.pem"'),
    ("  service:\n    name: a\n    port: \"-5\"\n", "neither a port number nor a Nomad port label"),
])
def test_consul_settings_consul_would_refuse_are_refused_at_load(litevisor_bin, tmp_path, section,
                                                                 message):
    cfg = tmp_path / "c.yml"
    cfg.write_text("dbs: []\nconsul:\n" + section)
    p = subprocess.run([litevisor_bin, "config", "-config", str(cfg)], capture_output=True,
                       text=True, timeout=10)
    assert p.returncode == 100 and message in p.stderr, p.stderr


@pytest.mark.parametrize("addr", ["http://admin:Pa55w0rd-T@127.0.0.1:8500",
                                  "admin:Pa55w0rd-T@127.0.0.1:8500",
                                  "unix://admin:Pa55w0rd-T@/run/consul.sock"])
@pytest.mark.parametrize("where", ["consul.addr", "CONSUL_HTTP_ADDR"])
def test_an_agent_address_with_a_password_is_refused_unechoed(litevisor_bin, tmp_path, addr, where):
    """consul.addr with user:password@ was refused with the whole value, password and all,
    in the message (QA78 D5); a unix:// $CONSUL_HTTP_ADDR echoed it too."""
    cfg = tmp_path / "c.yml"
    cfg.write_text("dbs: []\nconsul:\n" + (f"  addr: \"{addr}\"\n" if where == "consul.addr" else "")
                   + "  lock:\n    key: k\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONSUL_")}
    if where == "CONSUL_HTTP_ADDR":
        env["CONSUL_HTTP_ADDR"] = addr
    p = subprocess.run([litevisor_bin, "config", "-config", str(cfg)], capture_output=True,
                       text=True, timeout=10, env=env)
    assert p.returncode == 100, p.stderr
    assert where in p.stderr and "Pa55w0rd-T" not in p.stderr, p.stderr
    if where == "consul.addr":
        assert "consul.addr: must not carry credentials (user@HOST)" in p.stderr, p.stderr


@pytest.mark.parametrize("section", [
    "  addr: http://consul.example\n",          # the scheme's own port
    "  addr: \"[::1]:8500\"\n",
    "  addr: https://[::1]\n",
    "  service:\n    name: a\n    port: http_2\n",
])
def test_consul_addresses_and_port_labels_consul_and_nomad_take_load(litevisor_bin, tmp_path,
                                                                      section):
    cfg = tmp_path / "c.yml"
    cfg.write_text("dbs: []\nconsul:\n" + section)
    p = subprocess.run([litevisor_bin, "config", "-config", str(cfg)], capture_output=True,
                       text=True, timeout=10)
    assert p.returncode == 0, p.stderr


def test_an_agent_that_stops_answering_loses_the_lock_within_its_ttl(litevisor_bin, tmp_path,
                                                                      runs, consul):
    """Held, then the agent hangs (accepts, never answers): Consul may end the session one
    TTL after its last renewal, and no request may keep litevisor from noticing by then."""
    r = node_run(runs, litevisor_bin, tmp_path, "a",
                 lock_cfg(tmp_path, "a", consul, extra="    ttl: 10s\n"))
    poll(lambda: (tmp_path / "a" / "ready").exists(), timeout=30)
    consul.hang(True)
    t0 = time.monotonic()
    poll(lambda: "the writer lock is lost" in r.stderr(), timeout=15, interval=0.1)
    assert time.monotonic() - t0 <= 10.5, time.monotonic() - t0
    assert "could not be renewed for its whole TTL (10s)" in r.stderr()
    # said before it was lost, once (QA69 O1: a failing renewal left no trace)
    err = r.stderr()
    assert err.count("writer lock: renewal failed") == 1, err
    assert err.index("writer lock: renewal failed") < err.index("the writer lock is lost"), err
    assert r.wait(timeout=20) == 111
    consul.hang(False)


def clockshift_env(seconds, arm):
    """Environment loading tests/tools/preload/clockshift.c: the wall clock moves by
    seconds once the file arm exists."""
    tools = os.environ.get("LITEVISOR_TOOLS_DIR") or os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "build", "tests", "tools")
    return {"LD_PRELOAD": os.path.join(tools, "clockshift.so"), "CLOCKSHIFT_S": str(seconds),
            "CLOCKSHIFT_ARM": str(arm), "ASAN_OPTIONS": "verify_asan_link_order=0"}


def test_a_wall_clock_step_does_not_stretch_the_pauses_of_a_held_lock(litevisor_bin, tmp_path,
                                                                      runs, consul):
    """NTP steps the clock of a node that booted with a wrong one while the lock is held,
    then the agent starts failing: the retry pauses must still end on time, so the loss
    is declared within the TTL. Pauses timed on the wall clock would sleep an hour."""
    arm = tmp_path / "stepped"
    r = node_run(runs, litevisor_bin, tmp_path, "a",
                 lock_cfg(tmp_path, "a", consul, extra="    ttl: 10s\n"),
                 env=clockshift_env(3600, arm))
    poll(lambda: (tmp_path / "a" / "ready").exists(), timeout=30)
    arm.touch()
    consul.fail_next(100000, 500, "rpc error making call: No cluster leader")
    t0 = time.monotonic()
    poll(lambda: "the writer lock is lost" in r.stderr(), timeout=15, interval=0.1)
    assert time.monotonic() - t0 <= 10.5, time.monotonic() - t0
    assert "could not be renewed for its whole TTL (10s)" in r.stderr()
    assert r.wait(timeout=20) == 111


def test_a_lock_lost_during_the_restore_starts_nothing(litevisor_bin, tmp_path, runs, consul):
    """The restore waits for a SIGKILLed writer's open generation (ttl + stop-grace +
    flush-timeout, 30 s: the key held no lock delay); an operator deletes the key
    meanwhile (the next writer may take it at once). Nothing of ours may then reach the
    replica, and the service must not start; nor does the wait go on to its end, and the
    restore with it, for a result that may not be used: the restore stops at once."""
    x = node_run(runs, litevisor_bin, tmp_path, "x", lock_cfg(tmp_path, "x", consul, key="other"))
    poll(lambda: (tmp_path / "x" / "ready").exists(), timeout=30)
    time.sleep(1)
    # SIGKILL, its generation left open: the next restore waits for it (its service too,
    # or it would outlive the test)
    service = int(open(f"/proc/{x.pid}/task/{x.pid}/children").read().split()[0])
    x.kill()
    os.kill(service, signal.SIGKILL)
    gens = sorted(os.listdir(tmp_path / "replica" / "generations"))
    cfg = lock_cfg(tmp_path, "a", consul).replace("handover-wait: 0s", "handover-wait: 6s")
    a = node_run(runs, litevisor_bin, tmp_path, "a", cfg)
    poll(lambda: "writer lock held" in a.stderr(), timeout=15)
    time.sleep(0.5)
    assert "restore done" not in a.stderr()
    urllib.request.urlopen(urllib.request.Request(consul.url + "/v1/kv/litevisor/app",
                                                  method="DELETE"), timeout=5).read()
    assert a.wait(timeout=10) == 111, a.stderr()
    assert "the writer lock was lost during the restore" in a.stderr(), a.stderr()
    assert "restore done" not in a.stderr(), a.stderr()
    assert not (tmp_path / "a" / "report.json").exists()
    assert sorted(os.listdir(tmp_path / "replica" / "generations")) == gens


def test_a_lock_lost_while_a_restore_is_stuck_in_a_call_ends_within_seconds(
        litevisor_bin, tmp_path, runs, consul):
    """The writer lock is lost while the restore is inside a call that does not return (a
    write into its temp file that hangs, as on a hung NFS target; a peer that sends
    nothing): the restores were asked to stop, and the supervisor waited for the call to
    return, 24 s here (QA165 D2), where a stop signal gives them a second. Now the same:
    their files removed under them, exit 111 within a few seconds."""
    x = node_run(runs, litevisor_bin, tmp_path, "x", lock_cfg(tmp_path, "x", consul),
                 rows=2000)
    poll(lambda: (tmp_path / "x" / "ready").exists(), timeout=60)
    os.kill(x.pid, signal.SIGTERM)
    assert x.wait(timeout=30) == 0, x.stderr()
    fault = tmp_path / "a.fault"
    env = faulty_env(op="write", suffix="app.db.litevisor-restore", delay_ms=25000, log=fault)
    a = node_run(runs, litevisor_bin, tmp_path, "a", lock_cfg(tmp_path, "a", consul), env=env)
    poll(lambda: fault.exists(), timeout=30)
    time.sleep(0.5)
    t0 = time.monotonic()
    urllib.request.urlopen(urllib.request.Request(consul.url + "/v1/kv/litevisor/app",
                                                  method="DELETE"), timeout=5).read()
    assert a.wait(timeout=20) == 111, a.stderr()
    took = time.monotonic() - t0
    assert took < 6, f"{took:.1f} s\n" + a.stderr()
    assert "the writer lock was lost during the restore" in a.stderr(), a.stderr()
    assert "restore did not stop in time" in a.stderr(), a.stderr()
    assert not (tmp_path / "a" / "report.json").exists()
    assert not [f for f in os.listdir(tmp_path / "a") if "litevisor-restore" in f]


def test_reads_of_the_key_failing_for_a_ttl_lose_the_lock(litevisor_bin, tmp_path, runs,
                                                          consul):
    """Reads of the key refused (Consul's read rate limit: 429) while renewals still
    pass: an operator's release and another session's acquire went unseen, and both
    services ran for good (QA142 D6). A run of failed reads as long as the TTL loses
    the lock, as failed renewals do; the first failed read is said."""
    r = node_run(runs, litevisor_bin, tmp_path, "a",
                 lock_cfg(tmp_path, "a", consul, extra="    ttl: 10s\n"))
    poll(lambda: (tmp_path / "a" / "ready").exists(), timeout=30)
    consul.fail_next(100000, 429, "rate limit exceeded", path="/v1/kv/", method="GET")
    t0 = time.monotonic()
    # the blocking query under way ends (at TTL/2 at the latest): then every read fails
    poll(lambda: "reading the key failed" in r.stderr(), timeout=10, interval=0.1)
    http(consul, "PUT", f"/v1/kv/litevisor/app?release={holder_session(consul, 'litevisor/app')}")
    hold_lock_elsewhere(consul, "litevisor/app")
    poll(lambda: "the writer lock is lost" in r.stderr(), timeout=25, interval=0.1)
    assert time.monotonic() - t0 <= 21, time.monotonic() - t0  # a TTL from the first failure
    err = r.stderr()
    assert "could not be read for the session's whole TTL (10s)" in err, err
    assert err.count("writer lock: reading the key failed") == 1, err
    assert "too slowly" not in err, err  # the agent answered at once (QA142 D3)
    assert r.wait(timeout=20) == 111


def test_an_agent_dropping_connections_now_and_then_keeps_the_lock(litevisor_bin, tmp_path,
                                                                    runs, consul):
    """An agent that drops its connections for a moment every few seconds (a restart
    loop, a flaky proxy) answers in between, but after a failed read the next read was
    a blocking query, which the next drop cut again: the failing clock ran on through
    the answers, and the lock was lost within a TTL (QA148 O5). The read after a
    failure returns at once."""
    r = node_run(runs, litevisor_bin, tmp_path, "a",
                 lock_cfg(tmp_path, "a", consul, extra="    ttl: 10s\n"))
    poll(lambda: (tmp_path / "a" / "ready").exists(), timeout=30)
    end = time.monotonic() + 16
    while time.monotonic() < end:
        consul.down()
        time.sleep(0.8)
        consul.up()
        time.sleep(2.2)
        assert r.p.poll() is None, r.stderr()
    err = r.stderr()
    assert "reading the key failed" in err, err  # the drops did cut reads
    assert "the writer lock is lost" not in err, err
    os.kill(r.pid, signal.SIGTERM)
    assert r.wait(timeout=30) == 0, r.stderr()


def test_a_lock_lost_while_replication_starts_starts_no_service(litevisor_bin, tmp_path, runs,
                                                               consul):
    """The lock was looked at right after the restore, and replication's first looks then
    took seconds (a replica's server accepting and never answering): an operator's
    release meanwhile still started the service, without the lock (QA142 D1)."""
    x = node_run(runs, litevisor_bin, tmp_path, "x", lock_cfg(tmp_path, "x", consul))
    poll(lambda: (tmp_path / "x" / "ready").exists(), timeout=30)
    x.p.send_signal(signal.SIGTERM)
    assert x.wait(timeout=30) == 0, x.stderr()
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    try:
        cfg = lock_cfg(tmp_path, "a", consul).replace(
            "        sync-interval: 100ms\n",
            "        sync-interval: 100ms\n"
            f"      - url: s3://bkt.localhost:{silent.getsockname()[1]}/app\n"
            "        access-key-id: k\n        secret-access-key: s\n")
        a = node_run(runs, litevisor_bin, tmp_path, "a", cfg)
        poll(lambda: "restore done" in a.stderr(), timeout=30, interval=0.01)
        http(consul, "PUT",
             f"/v1/kv/litevisor/app?release={holder_session(consul, 'litevisor/app')}")
        assert a.wait(timeout=40) == 111, a.stderr()
        assert "the writer lock was lost before the service could start" in a.stderr(), a.stderr()
        assert "service started" not in a.stderr(), a.stderr()
        assert not (tmp_path / "a" / "report.json").exists()
    finally:
        silent.close()


@pytest.mark.parametrize("how", ["release", "delete"])
def test_a_writer_taking_a_lock_its_holder_lost_waits_for_its_last_commit(litevisor_bin, tmp_path,
                                                                         runs, consul, how):
    """An operator releases or deletes the key (Consul sets no lock delay then) while A's
    service is idle: the next writer took the lock at once, and its restore waited only for
    a generation written to within handover-wait, so it restored before A's service saved
    its state on the way out, and that commit was lost (QA142 D8; D7 the same for a
    session Consul ended). Taken from a holder that did not release it, the lock makes the
    restore wait for its open generation however old; a released one does not."""
    def cfg(node):
        return lock_cfg(tmp_path, node, consul).replace(
            "restore:\n  handover-wait: 0s\n", "restore:\n  handover-wait: 8s\n  clock-skew: 1s\n")
    (tmp_path / "a" / "cfg").mkdir(parents=True)
    a = start(runs, litevisor_bin, tmp_path / "a" / "cfg",
              DB_SERVICE + ["--report", str(tmp_path / "a.json"), "--ready", str(tmp_path / "a.ready"),
                            "--rows", "2", "--term-delay", "2"], config=cfg("a"))
    poll(lambda: (tmp_path / "a.ready").exists(), timeout=30)
    b = node_run(runs, litevisor_bin, tmp_path, "b", cfg("b"))
    poll(lambda: "waiting for the writer lock" in b.stderr(), timeout=15)
    time.sleep(10)  # A's generation idle for longer than handover-wait + clock-skew
    if how == "release":
        http(consul, "PUT", f"/v1/kv/litevisor/app?release={holder_session(consul, 'litevisor/app')}")
    else:
        urllib.request.urlopen(urllib.request.Request(consul.url + "/v1/kv/litevisor/app",
                                                      method="DELETE"), timeout=5).read()
    assert a.wait(timeout=30) == 111, a.stderr()
    assert "released or deleted by someone else" in a.stderr(), a.stderr()
    poll(lambda: (tmp_path / "b" / "report.json").exists(), timeout=30, log=b.log_path)
    rows = json.loads((tmp_path / "b" / "report.json").read_text())["rows"]
    assert rows[-1] == "term-handler", (rows, b.stderr())
    assert "restore waits for its open generation" in b.stderr(), b.stderr()
    # B stops cleanly: its release is marked, and the next writer waits for nothing (its
    # service ready first: the report comes before its TERM handler)
    poll(lambda: (tmp_path / "b" / "ready").exists(), timeout=30, log=b.log_path)
    os.kill(b.pid, signal.SIGTERM)
    assert b.wait(timeout=30) == 0, b.stderr()
    c = node_run(runs, litevisor_bin, tmp_path, "c", cfg("c"))
    poll(lambda: (tmp_path / "c" / "ready").exists(), timeout=30, log=c.log_path)
    assert "restore waits for its open generation" not in c.stderr(), c.stderr()
    assert "waiting for its node to finish stopping" not in c.stderr(), c.stderr()
    os.kill(c.pid, signal.SIGTERM)
    assert c.wait(timeout=30) == 0, c.stderr()


class AgentPath:
    """One node's way to the agent: a loopback TCP relay that cut() ends for good (its
    connections shut, new ones refused), while other nodes still reach the agent."""

    def __init__(self, agent_port):
        self.agent_port, self.socks, self.is_cut = agent_port, [], False
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.is_cut:
                client.close()
                continue
            agent = socket.create_connection(("127.0.0.1", self.agent_port))
            self.socks += [client, agent]
            for src, dst in ((client, agent), (agent, client)):
                threading.Thread(target=self._relay, args=(src, dst), daemon=True).start()

    @staticmethod
    def _relay(src, dst):
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for x in (src, dst):
            try:
                x.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self):
        self.is_cut = True
        self.listener.close()
        for x in self.socks:
            try:
                x.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def holder_with_its_own_agent_path(litevisor_bin, tmp_path, runs, consul, handover, args=()):
    """Node A holding the lock (ttl 10s, stop-grace 4s, flush-timeout 2s) through an
    AgentPath of its own, so its agent can be cut while others still reach it: (A, its
    path, cfg(node, agent address) for the other nodes). Its service reports to a.json
    and a.ready."""
    def cfg(node, addr):
        return ("supervisor:\n  stop-grace: 4s\n  flush-timeout: 2s\n" +
                lock_cfg(tmp_path, node, consul, extra="    ttl: 10s\n").replace(
                    "handover-wait: 0s", f"handover-wait: {handover}").replace(consul.addr, addr))
    path_a = AgentPath(consul.port)
    (tmp_path / "a" / "cfg").mkdir(parents=True)
    a = start(runs, litevisor_bin, tmp_path / "a" / "cfg",
              DB_SERVICE + ["--report", str(tmp_path / "a.json"), "--ready", str(tmp_path / "a.ready"),
                            "--rows", "2", *args], config=cfg("a", f"127.0.0.1:{path_a.port}"))
    return a, path_a, cfg


def test_a_lock_released_by_hand_from_a_holder_cut_off_waits_for_it_to_learn_and_stop(
        litevisor_bin, tmp_path, runs, consul):
    """A's agent goes out of reach and an operator releases A's lock to fail over: Consul
    sets no lock delay then, so nothing but restore.handover-wait stood between B's start
    and A, which learns of the loss only a TTL later, then stops: B restored and started
    before A's service saved its state on the way out, and that commit was lost (QA149
    D1). Taken with no lock delay from a holder that did not release it, the lock makes
    the restore wait for its open generation as long as ttl + stop-grace +
    flush-timeout."""
    a, path_a, cfg = holder_with_its_own_agent_path(litevisor_bin, tmp_path, runs, consul, "7s",
                                                    ["--term-delay", "2"])
    poll(lambda: (tmp_path / "a.ready").exists(), timeout=30)
    b = node_run(runs, litevisor_bin, tmp_path, "b", cfg("b", consul.addr))
    poll(lambda: "waiting for the writer lock" in b.stderr(), timeout=15)
    sid = holder_session(consul, "litevisor/app")
    renewals = lambda: sum(1 for r in consul.requests if r[1].startswith(f"/v1/session/renew/{sid}"))
    n = renewals()
    poll(lambda: renewals() > n, timeout=10)  # A learns of its loss a whole TTL from here
    path_a.cut()
    http(consul, "PUT", f"/v1/kv/litevisor/app?release={sid}")
    assert a.wait(timeout=40) == 111, a.stderr()
    poll(lambda: (tmp_path / "b" / "report.json").exists(), timeout=30, log=b.log_path)
    rows = json.loads((tmp_path / "b" / "report.json").read_text())["rows"]
    assert rows[-1] == "term-handler", (rows, b.stderr())
    assert "no lock delay held the key before this take" in b.stderr(), b.stderr()
    poll(lambda: (tmp_path / "b" / "ready").exists(), timeout=30, log=b.log_path)
    os.kill(b.pid, signal.SIGTERM)  # once its service handles it
    assert b.wait(timeout=30) == 0, b.stderr()


@pytest.mark.parametrize("first_read", ["answered", "refused", "held", "held-unnamed"])
def test_a_key_holding_another_value_is_not_taken_over(litevisor_bin, tmp_path, runs, consul,
                                                       first_read):
    """lock.key naming a key that holds data (a typo, a key shared with a template): taking
    the lock replaced its value with litevisor's record, for good (QA142 D5). Consul's own
    api.Lock refuses such a key; so does litevisor, and the value stays. A refused read of
    the key before the acquire (a 429 of Consul's read rate limit) let it acquire unread
    (QA148 D2): the read is made again first. Read held by another program, it was
    acquired anyway, and taken over if that program let it go before the acquire landed
    (QA156 D2): refused at once too, also under a session with no name, as plain HTTP
    clients make them (QA159 D2: waited on as maybe a litevisor's)."""
    assert http(consul, "PUT", "/v1/kv/app/config", "db_password=hunter2\n") is True
    if first_read == "refused":
        consul.fail_next(1, 429, "rate limit exceeded", path="/v1/kv/app/config", method="GET")
    if first_read.startswith("held"):
        named = {"Name": "other"} if first_read == "held" else {}
        sid = http(consul, "PUT", "/v1/session/create", json.dumps(named))["ID"]
        assert http(consul, "PUT", f"/v1/kv/app/config?acquire={sid}", "db_password=hunter2\n")
    r = node_run(runs, litevisor_bin, tmp_path, "a", lock_cfg(tmp_path, "a", consul, key="app/config"))
    assert r.wait(timeout=30) == 111, r.stderr()
    acquires = [q for q in consul.requests
                if q[0] == "PUT" and q[1].startswith("/v1/kv/app/config?acquire=")]
    assert len(acquires) == first_read.startswith("held"), acquires  # the other program's only
    assert "holds a value that is not a litevisor holder's record" in r.stderr(), r.stderr()
    assert http(consul, "GET", "/v1/kv/app/config")[0]["Value"] == \
        base64.b64encode(b"db_password=hunter2\n").decode()
    assert not (tmp_path / "a" / "report.json").exists()


def test_a_lock_wait_ends_on_time_with_an_agent_that_never_answers(litevisor_bin, tmp_path,
                                                                   runs, consul):
    consul.hang(True)
    r = node_run(runs, litevisor_bin, tmp_path, "a",
                 lock_cfg(tmp_path, "a", consul, extra="    wait: 2s\n"))
    t0 = time.monotonic()
    assert r.wait(timeout=20) == 111
    assert time.monotonic() - t0 < 3.5, time.monotonic() - t0
    assert "not acquired within consul.lock.wait (2s)" in r.stderr()
    consul.hang(False)


@pytest.mark.parametrize("addr,message", [
    ("http://user:pa55w0rd@127.0.0.1:8500", "CONSUL_HTTP_ADDR: must not carry credentials"),
    ("unix:///run/consul.sock", "CONSUL_HTTP_ADDR: expected http://HOST:PORT"),
    (":8500", "CONSUL_HTTP_ADDR: \":8500\""),
    ("127.0.0.1:99999", "the port is not a number from 1 to 65535"),
    ("127.0.0.1:http", "the port is not a number from 1 to 65535"),
    ("localhost", "\"localhost\" has no port"),
])
def test_a_consul_http_addr_it_cannot_use_is_a_config_error(litevisor_bin, tmp_path, addr, message):
    """Not a retry loop of temporary failures, and never a password in the log. Checked as
    consul.addr is: values the key refuses were used, and failed for lock.wait (QA142 D2)."""
    cfg = tmp_path / "c.yml"
    cfg.write_text("dbs: []\nconsul:\n  lock:\n    key: k\n")
    env = dict(os.environ, CONSUL_HTTP_ADDR=addr)
    for cmd in (["config"], ["run"]):
        p = subprocess.run([litevisor_bin] + cmd + ["-config", str(cfg)] + (["--", "true"] if cmd == ["run"] else []),
                           capture_output=True, text=True, timeout=20, env=env)
        assert p.returncode == 100 and message in p.stderr, (cmd, p.stderr)
        assert "pa55w0rd" not in p.stderr


@pytest.mark.parametrize("var,value", [("CONSUL_HTTP_TOKEN", "s3cr3t\nX-Other: 1"),
                                       ("CONSUL_HTTP_TOKEN_FILE", None)])
def test_a_consul_token_with_a_line_break_is_a_config_error(litevisor_bin, tmp_path, var, value):
    """A token consul_call never sends (it would end the header) failed every request:
    `run` waited for lock.wait, then exited 111, forever (QA69 D5). The token file is
    read as at start: rotated later to such a value, requests fail until it is fixed."""
    if value is None:
        (tmp_path / "token").write_text("s3cr3t\r\nX-Other: 1\n")
        value = str(tmp_path / "token")
    cfg = tmp_path / "c.yml"
    cfg.write_text("dbs: []\nconsul:\n  addr: 127.0.0.1:1\n  lock:\n    key: k\n")
    env = dict(os.environ, **{var: value})
    for cmd in (["config"], ["run"]):
        p = subprocess.run([litevisor_bin] + cmd + ["-config", str(cfg)] +
                           (["--", "true"] if cmd == ["run"] else []),
                           capture_output=True, text=True, timeout=20, env=env)
        assert p.returncode == 100, (cmd, p.returncode, p.stderr)
        # a file's: read as every credential file is, one line (QA110 O5)
        assert (f"{var}: the token contains a line break" in p.stderr or
                (f"{var}: " in p.stderr and "holds more than one line" in p.stderr)), \
            (cmd, p.stderr)
        assert "s3cr3t" not in p.stderr


def test_a_lock_lost_while_already_stopping_keeps_the_services_code(litevisor_bin, tmp_path, runs,
                                                                    consul):
    """The stop was asked for anyway and its flush ends inside the lock delay: the
    orchestrator sees what the service did, not a temporary failure."""
    cfg = f"dbs: []\nconsul:\n  addr: {consul.addr}\n  lock:\n    key: litevisor/app\n"
    trapped = tmp_path / "trapped"
    # the TERM must find the trap set: "service started" is logged at the fork
    r = start(runs, litevisor_bin, tmp_path,
              ["sh", "-c", f'trap "sleep 2; exit 0" TERM; touch {trapped}; '
                           'while :; do sleep 0.1; done'], config=cfg)
    sid = poll(lambda: holder_session(consul, "litevisor/app"), timeout=10)
    poll(trapped.exists, timeout=10)
    os.kill(r.pid, signal.SIGTERM)
    time.sleep(0.5)
    assert http(consul, "PUT", f"/v1/session/destroy/{sid}") is True
    assert r.wait(timeout=20) == 0
    assert "the writer lock is lost while stopping" in r.stderr(), r.stderr()


def test_a_failing_agent_is_not_hammered_with_check_updates(litevisor_bin, tmp_path, runs, consul):
    cfg = (f"consul:\n  addr: {consul.addr}\n  service:\n    name: app\n    id: app-1\n"
           f"    check-ttl: 5s\n")
    r = start(runs, litevisor_bin, tmp_path, ["sleep", "60"], config=cfg)
    poll(lambda: consul.checks().get("service:app-1", {}).get("Status") == "passing", timeout=10)
    n = len(consul.requests)
    consul.fail_next(100000, 500, "rpc error: no leader")
    time.sleep(4)
    updates = [q for q in consul.requests[n:] if q[1].startswith("/v1/agent/check/update/")]
    assert 1 <= len(updates) <= 4, len(updates)  # backing off: 1 s, 2 s, …
    assert "cannot update the check; trying again" in r.stderr()
    os.kill(r.pid, signal.SIGTERM)
    assert r.wait(timeout=20) == 128 + signal.SIGTERM  # sleep's own death by TERM


def test_a_check_forgotten_right_after_its_registration_is_registered_again_after_a_pause(
        litevisor_bin, tmp_path, runs, consul):
    """An agent that forgot the check (restarted without its data) gets the registration
    again at once; one that answers "unknown check" again right after it (several agents
    behind one address) gets it after a pause, 1 s doubling, and one warning, not a
    registration and a warning per round trip (QA69 D4: 66 of each in 5 s)."""
    cfg = (f"consul:\n  addr: {consul.addr}\n  service:\n    name: app\n    id: app-1\n"
           f"    check-ttl: 6s\n")
    r = start(runs, litevisor_bin, tmp_path, ["sleep", "60"], config=cfg)
    poll(lambda: consul.checks().get("service:app-1", {}).get("Status") == "passing", timeout=10)
    n = len(consul.requests)
    # agent/acl.go's answer for a check it does not have; the 4th update after it lands
    consul.fail_next(4, 404, 'Unknown check ID "service:app-1". Ensure that the check ID is '
                     "passed, not the check name.", path="/v1/agent/check/update/")

    def regs():
        return [q for q in consul.requests[n:] if q[1].startswith("/v1/agent/service/register")]
    poll(regs, timeout=10)  # the next update (a third of the TTL) found the check forgotten
    time.sleep(2)
    assert len(regs()) <= 3, len(regs())  # at once, then 1 s later; the next 2 s after that
    # the 4th registration's update lands, 4 s after the 3rd
    poll(lambda: len(regs()) == 4 and
         consul.checks().get("service:app-1", {}).get("Status") == "passing", timeout=15)
    err = r.stderr()
    assert err.count("the agent no longer knows the check") == 1, err
    assert err.count("the agent forgot the check again") == 1, err
    os.kill(r.pid, signal.SIGTERM)
    assert r.wait(timeout=20) == 128 + signal.SIGTERM


class SlowCheckUpdates(ConsulServer):
    """An agent slow to answer check updates (a loaded agent, one waiting on its servers);
    every other request is answered at once."""
    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.slow = 0.0
        self.updating = threading.Event()

    def dispatch(self, method, target, headers, body):
        if self.slow and target.startswith("/v1/agent/check/update/"):
            self.updating.set()
            time.sleep(self.slow)
        return super().dispatch(method, target, headers, body)


def test_the_deregistration_does_not_wait_for_a_check_update_under_way(litevisor_bin, tmp_path,
                                                                       runs):
    """The stop begins while a check update waits for its answer: that update is abandoned
    for the deregistration, not waited for up to consul.timeout, while Consul keeps sending
    clients, check passing, to a service already stopping (QA69 D6: 3.9 s)."""
    srv = SlowCheckUpdates().start()
    try:
        cfg = (f"consul:\n  addr: {srv.addr}\n  service:\n    name: app\n    id: app-1\n"
               f"    check-ttl: 6s\n")
        trapped = tmp_path / "trapped"
        r = start(runs, litevisor_bin, tmp_path,
                  ["sh", "-c", f'trap "sleep 4; exit 0" TERM; touch {trapped}; '
                               'while :; do sleep 0.1; done'], config=cfg)
        poll(lambda: srv.checks().get("service:app-1", {}).get("Status") == "passing",
             timeout=10)
        poll(trapped.exists, timeout=10)
        srv.slow = 4.5
        assert srv.updating.wait(timeout=10)  # the next one, a third of the TTL later
        time.sleep(0.2)
        t0 = time.monotonic()
        os.kill(r.pid, signal.SIGTERM)
        poll(lambda: "app-1" not in srv.services(), timeout=10, interval=0.02)
        assert time.monotonic() - t0 < 2, time.monotonic() - t0  # libcurl looks each second
        assert r.wait(timeout=20) == 0
        assert "cannot update the check" not in r.stderr(), r.stderr()  # abandoned, not failed
    finally:
        srv.stop()


def test_a_standby_waiting_for_the_lock_lives_through_a_hup_and_stops_on_quit(
        litevisor_bin, tmp_path, runs, consul):
    """A HUP (Nomad's template change_signal, at every re-render) ended a standby waiting
    for the writer lock for a few commits (QA111 D3): it is dropped. QUIT, a stop signal
    (a `STOPSIGNAL SIGQUIT`), ends the wait, 131."""
    hold_lock_elsewhere(consul, "litevisor/app")
    r = node_run(runs, litevisor_bin, tmp_path, "b", lock_cfg(tmp_path, "b", consul))
    poll(lambda: "waiting for the writer lock" in r.stderr(), timeout=10)
    os.kill(r.pid, signal.SIGHUP)
    poll(lambda: "signal dropped: no service running yet signal=HUP" in r.stderr(), timeout=10)
    time.sleep(0.5)
    assert r.p.poll() is None, r.stderr()
    os.kill(r.pid, signal.SIGQUIT)
    assert r.wait(timeout=10) == 128 + signal.SIGQUIT, r.stderr()


def test_a_failed_deregistration_is_warned_of_once(litevisor_bin, tmp_path, runs, consul):
    """The agent refused the deregistration at the stop: the registration thread's try and
    the stop's last one each logged the same WARN (QA110 O4). Once."""
    cfg = f"consul:\n  addr: {consul.addr}\n  service:\n    name: app\n    id: app-1\n"
    r = start(runs, litevisor_bin, tmp_path, ["sleep", "30"], config=cfg)
    poll(lambda: "app-1" in consul.services(), timeout=10)
    consul.fail_next(100, 500, "agent trouble", path="/v1/agent/service/deregister/app-1")
    os.kill(r.pid, signal.SIGTERM)
    assert r.wait(timeout=20) == 143
    assert r.stderr().count("cannot deregister the service") == 1, r.stderr()


def test_a_deregistration_the_exit_cuts_is_not_warned_of(litevisor_bin, tmp_path, runs, consul):
    """The service ends at once on TERM: the exit's halt cut the registration thread's
    deregistration, still waiting for a slow agent, and it was logged as failed ("cannot
    deregister the service ... Callback aborted") although the exit's own last try
    deregistered the service a moment later (QA172 D1). Cut on purpose: nothing said."""
    cfg = f"consul:\n  addr: {consul.addr}\n  service:\n    name: app\n    id: app-1\n"
    r = start(runs, litevisor_bin, tmp_path, ["sleep", "30"], config=cfg)
    poll(lambda: consul.checks().get("service:app-1", {}).get("Status") == "passing", timeout=10)
    consul.delay = 0.4
    time.sleep(1.5)  # an update under way or not: either way the deregistration is slow
    os.kill(r.pid, signal.SIGTERM)
    assert r.wait(timeout=20) == 143
    assert "app-1" not in consul.services()
    assert "service deregistered" in r.stderr(), r.stderr()
    assert "cannot deregister the service" not in r.stderr(), r.stderr()


def test_a_deregistration_left_no_time_by_the_lock_release_is_warned_of(litevisor_bin, tmp_path,
                                                                         runs, consul):
    """The agent stops answering at the stop: the writer lock's release takes the whole
    close budget, so no last deregistration try is made, and the thread's own try, cut by
    the halt, says nothing since 83b4f65: the service stayed registered with no line
    saying so (QA176 D1). One WARN says it."""
    extra = "  service:\n    name: app\n    id: app-1\n"
    r = node_run(runs, litevisor_bin, tmp_path, "a", lock_cfg(tmp_path, "a", consul, extra=extra))
    poll(lambda: consul.checks().get("service:app-1", {}).get("Status") == "passing",
         timeout=20)
    consul.hang(True)
    try:
        os.kill(r.pid, signal.SIGTERM)
        r.wait(timeout=30)
    finally:
        consul.hang(False)
    assert "app-1" in consul.services()
    assert r.stderr().count("cannot deregister the service") == 1, r.stderr()


@pytest.mark.parametrize("status,body", [(400, "Missing key name"),
                                         (500, 'invalid key name "litevisor/app"')])
def test_a_key_the_agent_refuses_fails_at_once(litevisor_bin, tmp_path, runs, consul, status,
                                               body):
    """A key this Consul will never accept (a 400, or a newer Consul's key-name check, a
    500 naming it): waiting cannot mend it, so the start fails at once with 111, not at
    the end of lock.wait."""
    consul.fail_next(1, status, body, path="/v1/kv/litevisor/app?acquire=")
    r = node_run(runs, litevisor_bin, tmp_path, "b", lock_cfg(tmp_path, "b", consul))
    assert r.wait(timeout=10) == 111
    err = r.stderr()
    assert "Consul refused the lock" in err and body in err, err
    assert not (tmp_path / "b" / "report.json").exists()


def rewrite_key_for(srv, key, seconds, per_second=40):
    """Someone PUTs the key again and again without ?acquire, which Consul allows while a
    session holds it (kv.mdx): each write wakes every blocking query on it."""
    end = time.monotonic() + seconds
    i = 0
    while time.monotonic() < end:
        assert http(srv, "PUT", f"/v1/kv/{key}", f"write {i}") is True
        i += 1
        time.sleep(1 / per_second)
    return i


@pytest.mark.parametrize("phase", ["held", "waiting"])
def test_a_key_written_again_and_again_is_not_queried_in_a_loop(litevisor_bin, tmp_path, runs,
                                                                consul, phase):
    """blocking.mdx asks clients to pace their blocking queries with a token bucket (burst
    2): a key rewritten 40 times a second must not get 40 queries a second from the holder,
    nor 40 acquires (Raft writes) a second from a writer waiting for it."""
    key = "litevisor/app"
    if phase == "waiting":
        sid = hold_lock_elsewhere(consul, key)
        r = node_run(runs, litevisor_bin, tmp_path, "b", lock_cfg(tmp_path, "b", consul))
        poll(lambda: "waiting for the writer lock" in r.stderr(), timeout=10)
    else:
        r = node_run(runs, litevisor_bin, tmp_path, "a", lock_cfg(tmp_path, "a", consul))
        poll(lambda: (tmp_path / "a" / "ready").exists(), timeout=30)
        sid = holder_session(consul, key)
    time.sleep(1.5)  # settled into its blocking query
    n = len(consul.requests)
    writes = rewrite_key_for(consul, key, 4)
    ours = [q for q in consul.requests[n:] if q[1].startswith(f"/v1/kv/{key}?")]
    queries = [q for q in ours if "index=" in q[1]]
    acquires = [q for q in ours if "acquire=" in q[1]]
    assert writes >= 60, writes
    assert 2 <= len(queries) <= 8, (len(queries), writes)  # 4 s at 1/s, a burst of 2
    assert len(acquires) <= 8, len(acquires)
    assert holder_session(consul, key) == sid  # the writes kept the holder
    assert r.p.poll() is None, r.stderr()
    os.kill(r.pid, signal.SIGTERM)
    assert r.wait(timeout=30) in (0, 128 + signal.SIGTERM)


@pytest.mark.parametrize("phase", ["held", "waiting"])
def test_an_index_of_zero_is_no_busy_loop(litevisor_bin, tmp_path, runs, consul, phase):
    """blocking.mdx: an X-Consul-Index of 0 (a Consul bug it warns of) must be taken as 1,
    or blocking queries return at once and loop. The index stayed 0 and the pacing was
    skipped: 105 reads in 5 s from the holder, 36 acquires (Raft writes) from a waiting
    writer (QA69 D1)."""
    key = "litevisor/app"
    if phase == "waiting":
        hold_lock_elsewhere(consul, key)
        r = node_run(runs, litevisor_bin, tmp_path, "b", lock_cfg(tmp_path, "b", consul))
        poll(lambda: "waiting for the writer lock" in r.stderr(), timeout=10)
    else:
        r = node_run(runs, litevisor_bin, tmp_path, "a", lock_cfg(tmp_path, "a", consul))
        poll(lambda: (tmp_path / "a" / "ready").exists(), timeout=30)
    consul.index_zero = True
    assert http(consul, "PUT", f"/v1/kv/{key}", "poke") is True  # ends the query under way
    time.sleep(1.5)
    n = len(consul.requests)
    time.sleep(4)
    ours = [q for q in consul.requests[n:] if q[1].startswith(f"/v1/kv/{key}")]
    acquires = [q for q in ours if "acquire=" in q[1]]
    # paced at one blocking query a second (a burst of two), each with at most an
    # acquire and a plain read before it while waiting
    assert len(ours) <= (8 if phase == "held" else 18), [q[1] for q in ours]
    assert len(acquires) <= 6, len(acquires)
    assert r.p.poll() is None, r.stderr()
    os.kill(r.pid, signal.SIGTERM)
    assert r.wait(timeout=30) in (0, 128 + signal.SIGTERM)


def slow_agent_node(litevisor_bin, tmp_path, runs, consul):
    """Node a holding the lock (ttl 10s, consul.timeout 8s), its service ready."""
    cfg = lock_cfg(tmp_path, "a", consul, extra="    ttl: 10s\n").replace(
        "consul:\n", "consul:\n  timeout: 8s\n")
    r = node_run(runs, litevisor_bin, tmp_path, "a", cfg)
    poll(lambda: (tmp_path / "a" / "ready").exists(), timeout=30)
    return r


def test_a_slow_agent_keeps_the_lock_and_the_unwatched_key_is_said(litevisor_bin, tmp_path,
                                                                    runs, consul):
    """With an agent answering in 4.2 s (ttl 10s, timeout 8s), each half TTL goes to the
    renewal and no blocking query on the key fits between them: a deleted key went unseen,
    in silence (QA69 D3). A read in between would push the renewal past the lease's end
    and lose a lock renewals alone keep (QA70 D3), so the lock is kept and the unwatched
    key is said once; once the agent is quick again the key is watched again."""
    key = "litevisor/app"
    r = slow_agent_node(litevisor_bin, tmp_path, runs, consul)
    consul.delay = 4.2
    poll(lambda: "answers too slowly to watch the key" in r.stderr(), timeout=20)
    time.sleep(8)  # renewals of 4.2 s keep the lock
    assert r.p.poll() is None, r.stderr()
    assert r.stderr().count("answers too slowly to watch the key") == 1, r.stderr()
    consul.delay = 0
    poll(lambda: "watching the key again" in r.stderr(), timeout=20)
    time.sleep(0.5)
    consul._kv_delete(key, {})
    assert r.wait(timeout=30) == 111, r.stderr()
    assert "the key was deleted" in r.stderr(), r.stderr()


def test_a_slow_agent_still_gets_the_release_and_the_deregistration_at_a_stop(
        litevisor_bin, tmp_path, runs, consul):
    """An agent answering in 0.7 s, the service registered: the close's one second went
    to the registration (its thread's abort, then a second deregistration) and the lock's
    release got 1 ms; the next writer then waited for the session's TTL twice and the
    lock delay (QA142 D4). The release comes first, beside the deregistration."""
    key = "litevisor/app"
    cfg = lock_cfg(tmp_path, "a", consul).replace(
        "consul:\n", "consul:\n  service:\n    name: app\n    port: 8080\n")
    r = node_run(runs, litevisor_bin, tmp_path, "a", cfg)
    poll(lambda: (tmp_path / "a" / "ready").exists(), timeout=30)
    poll(lambda: consul.services(), timeout=10)
    consul.delay = 0.7
    time.sleep(1)
    os.kill(r.pid, signal.SIGTERM)
    assert r.wait(timeout=30) in (0, 128 + signal.SIGTERM), r.stderr()
    consul.delay = 0
    assert "writer lock released" in r.stderr(), r.stderr()
    assert holder_session(consul, key) is None
    assert not consul.services(), consul.services()


def test_an_agent_a_second_or_more_slow_still_has_the_key_watched(litevisor_bin, tmp_path,
                                                                   runs, consul):
    """Reads timed as if the agent answered at once: with one answering in 1.5 s every
    blocking query timed out, taken each time for one cut short for the renewal, and an
    operator's delete went unseen for good, in silence (QA145 D4)."""
    key = "litevisor/app"
    r = slow_agent_node(litevisor_bin, tmp_path, runs, consul)
    consul.delay = 1.5
    time.sleep(12)  # a renewal or two at that speed
    consul._kv_delete(key, {})
    assert r.wait(timeout=30) == 111, r.stderr()
    consul.delay = 0
    assert "the key was deleted" in r.stderr(), r.stderr()
    assert "too slowly" not in r.stderr(), r.stderr()


def test_a_writer_stopped_before_its_restore_ended_passes_the_wait_on(litevisor_bin, tmp_path,
                                                                     runs, consul):
    """B took the lock from a holder that did not release it (A, killed with its generation
    open) and was stopped while its restore waited for that generation: its release marked
    the key released, so the next writer took it for a clean handover and waited for
    nothing (QA145 D1). The mark waits for the restore to have settled. And that stop,
    outside the stop sequence, never told B's registration to leave: with an agent
    answering in 0.6 s the release took the close's whole second and the deregistration
    was skipped without a word (QA145 D3)."""
    key = "litevisor/app"

    def cfg(node):
        return lock_cfg(tmp_path, node, consul).replace(
            "restore:\n  handover-wait: 0s\n", "restore:\n  handover-wait: 20s\n")
    a = node_run(runs, litevisor_bin, tmp_path, "a", cfg("a"))
    poll(lambda: (tmp_path / "a" / "ready").exists(), timeout=30)
    poll(lambda: list((tmp_path / "replica").glob("generations/*/wal/*")), timeout=10)
    service = int(open(f"/proc/{a.pid}/task/{a.pid}/children").read().split()[0])
    a.kill()
    os.kill(service, signal.SIGKILL)
    http(consul, "PUT", f"/v1/kv/{key}?release={holder_session(consul, key)}")  # an operator
    b = node_run(runs, litevisor_bin, tmp_path, "b", cfg("b").replace(
        "consul:\n", "consul:\n  service:\n    name: app\n    port: 8080\n"))
    poll(lambda: "waiting for its node to finish stopping" in b.stderr(), timeout=40,
         log=b.log_path)
    poll(lambda: consul.services(), timeout=10)
    consul.delay = 0.6
    os.kill(b.pid, signal.SIGTERM)
    b.wait(timeout=30)
    consul.delay = 0
    assert "writer lock released" in b.stderr(), b.stderr()
    assert "service deregistered" in b.stderr(), b.stderr()
    value = base64.b64decode(http(consul, "GET", f"/v1/kv/{key}")[0]["Value"])
    assert b'"released"' not in value, value


class LatinS3(BaseHTTPRequestHandler):
    """An S3 server that lists an empty bucket and refuses every write with a French
    error message in Latin-1 (not UTF-8)."""

    def do_GET(self):
        self._answer(200, b'<?xml version="1.0" encoding="UTF-8"?><ListBucketResult><Name>b'
                          b'</Name><KeyCount>0</KeyCount><IsTruncated>false</IsTruncated>'
                          b'</ListBucketResult>')

    def _refuse(self):
        self._answer(500, b'<?xml version="1.0"?><Error><Code>InternalError</Code>'
                          b'<Message>Erreur interne \xe9</Message></Error>')

    do_PUT = do_POST = do_HEAD = do_DELETE = _refuse

    def _answer(self, code, body):
        self.send_response(code)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, *a):
        pass


def test_a_check_output_that_is_not_utf8_still_reaches_consul(litevisor_bin, tmp_path, runs,
                                                               consul):
    """/healthz quotes the server's message; jansson refuses non-UTF-8 text, so the check
    went unupdated (critical at its TTL) while /healthz said warn (QA31 D1)."""
    s3 = ThreadingHTTPServer(("127.0.0.1", 0), LatinS3)
    threading.Thread(target=s3.serve_forever, daemon=True).start()
    try:
        db = tmp_path / "app.db"
        c = sqlite3.connect(db)
        c.execute("PRAGMA journal_mode=WAL")
        c.execute("CREATE TABLE t (x)")
        c.execute("INSERT INTO t VALUES (1)")
        c.commit()
        c.close()
        cfg = (f"dbs:\n  - path: {db}\n    name: app\n    replicas:\n"
               f"      - name: down\n        url: s3://b/app\n"
               f"        endpoint: http://127.0.0.1:{s3.server_address[1]}\n"
               f"        access-key-id: x\n        secret-access-key: y\n        sync-interval: 200ms\n"
               f"restore:\n  probe-timeout: 300ms\n"
               f"consul:\n  addr: {consul.addr}\n  service:\n    name: app\n    id: app-1\n")
        r = start(runs, litevisor_bin, tmp_path, ["sleep", "60"], config=cfg)
        chk = poll(lambda: (lambda c: c if c.get("Status") == "warning" else None)(
            consul.checks().get("service:app-1", {})), timeout=25)
        assert "Erreur interne \ufffd" in chk["Output"], chk
        assert "out of memory" not in r.stderr()
        os.kill(r.pid, signal.SIGTERM)
        r.wait(timeout=20)  # its final flush fails (the server refuses): exit code not asserted
    finally:
        s3.shutdown()
