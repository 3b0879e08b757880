"""Self-test of tests/tools/consul_server.py: one test per documented rule
it follows (the doc or Go source is named in the server next to each rule)."""
import base64
import http.client
import json
import os
import socket
import sys
import threading
import time

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "tools"))
from consul_server import NODE_NAME, ConsulServer  # noqa: E402


class Client:
    def __init__(self, srv, token=None):
        self.srv, self.token = srv, token

    def req(self, method, path, body=None, headers=None, timeout=5):
        conn = http.client.HTTPConnection("127.0.0.1", self.srv.port, timeout=timeout)
        h = dict(headers or {})
        if self.token:
            h.setdefault("X-Consul-Token", self.token)
        if isinstance(body, (dict, list)):
            body = json.dumps(body)
        try:
            conn.request(method, path, body=body, headers=h)
            r = conn.getresponse()
            data = r.read()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, data
        finally:
            conn.close()

    def json(self, method, path, body=None, **kw):
        st, h, data = self.req(method, path, body, **kw)
        return st, h, (json.loads(data) if data and st == 200 else data.decode())


@pytest.fixture
def srv():
    s = ConsulServer().start()
    yield s
    s.stop()


@pytest.fixture
def c(srv):
    return Client(srv)


def ttl_service(c, sid="db", **extra):
    body = {"Name": "db", "ID": sid, "Port": 5432, "Check": {"TTL": "10s"}}
    body.update(extra)
    st, _, out = c.req("PUT", "/v1/agent/service/register", body)
    assert st == 200, out


# ---- agent: services and checks ----

def test_register_requires_name(c):
    st, _, out = c.req("PUT", "/v1/agent/service/register", {"Port": 1})
    assert (st, out) == (400, b"Missing service name")


def test_register_defaults_and_listing(c, srv):
    st, _, _ = c.req("PUT", "/v1/agent/service/register",
                     {"Name": "db", "Tags": ["a"], "Check": {"TTL": "15s"}})
    assert st == 200
    _, _, svcs = c.json("GET", "/v1/agent/services")
    assert svcs["db"]["ID"] == "db" and svcs["db"]["Service"] == "db"
    assert svcs["db"]["Tags"] == ["a"] and svcs["db"]["Meta"] == {}
    _, _, checks = c.json("GET", "/v1/agent/checks")
    chk = checks["service:db"]
    assert chk["Status"] == "critical" and chk["Type"] == "ttl"
    assert chk["Name"] == "Service 'db' check" and chk["ServiceID"] == "db"
    assert srv.history("service:db") == ["critical"]


def test_checks_list_ids_and_given_status(c, srv):
    c.req("PUT", "/v1/agent/service/register",
          {"Name": "db", "ID": "db1", "Checks": [{"TTL": "10s", "Status": "passing"},
                                                  {"TTL": "10s"}]})
    checks = srv.checks()
    assert checks["service:db1:1"]["Status"] == "passing"
    assert checks["service:db1:2"]["Status"] == "critical"
    c.req("PUT", "/v1/agent/service/register",
          {"Name": "db", "ID": "db2", "Checks": [{"TTL": "10s"}]})
    assert "service:db2" in srv.checks()  # ":n" only with more than one check


def test_bad_check_status_on_register(c):
    st, _, out = c.req("PUT", "/v1/agent/service/register",
                       {"Name": "db", "Check": {"TTL": "10s", "Status": "ok"}})
    assert (st, out) == (400, b"Status for checks must 'passing', 'warning', 'critical'")


def test_reregister_replaces_service_keeps_check_state(c, srv):
    c.req("PUT", "/v1/agent/service/register",
          {"Name": "db", "Port": 1, "Checks": [{"TTL": "10s", "CheckID": "a"},
                                               {"TTL": "10s", "CheckID": "b"}]})
    c.req("PUT", "/v1/agent/check/pass/a")
    c.req("PUT", "/v1/agent/service/register",
          {"Name": "db", "Port": 2, "Check": {"TTL": "10s", "CheckID": "a"}})
    assert srv.services()["db"]["Port"] == 2
    assert srv.checks()["a"]["Status"] == "passing" and "b" in srv.checks()
    c.req("PUT", "/v1/agent/service/register?replace-existing-checks",
          {"Name": "db", "Port": 3, "Check": {"TTL": "10s", "CheckID": "a"}})
    assert set(srv.checks()) == {"a"}


def test_deregister(c, srv):
    ttl_service(c)
    assert c.req("PUT", "/v1/agent/service/deregister/db")[0] == 200
    assert srv.services() == {} and srv.checks() == {}
    st, _, out = c.req("PUT", "/v1/agent/service/deregister/db")
    assert st == 404
    assert out == (b'Unknown service ID "db". Ensure that the service ID is passed, '
                   b"not the service name.")


def test_check_update(c, srv):
    ttl_service(c)
    st, _, _ = c.req("PUT", "/v1/agent/check/update/service:db",
                     {"Status": "passing", "Output": "fine"})
    assert st == 200 and srv.checks()["service:db"]["Output"] == "fine"
    st, _, out = c.req("PUT", "/v1/agent/check/update/service:db", {"Status": "bogus"})
    assert (st, out) == (400, b"Invalid check status: 'bogus'")
    st, _, out = c.req("PUT", "/v1/agent/check/update/nope", {"Status": "passing"})
    assert st == 404 and out.startswith(b'Unknown check ID "nope".')
    c.req("PUT", "/v1/agent/check/warn/service:db?note=slow")
    c.req("PUT", "/v1/agent/check/fail/service:db")
    assert srv.history("service:db") == ["critical", "passing", "warning", "critical"]


def test_only_ttl_checks_take_updates(c):
    c.req("PUT", "/v1/agent/service/register",
          {"Name": "web", "Check": {"HTTP": "http://127.0.0.1:1/", "Interval": "10s"}})
    st, _, out = c.req("PUT", "/v1/agent/check/pass/service:web")
    assert (st, out) == (500, b'CheckID "service:web" does not have associated TTL')


def test_ttl_expiry(c, srv):
    c.req("PUT", "/v1/agent/service/register",
          {"Name": "db", "Check": {"TTL": "300ms", "DeregisterCriticalServiceAfter": "90s"}})
    c.req("PUT", "/v1/agent/check/update/service:db", {"Status": "passing", "Output": "up"})
    time.sleep(0.7)
    chk = srv.checks()["service:db"]
    assert chk["Status"] == "critical"
    assert chk["Output"] == "TTL expired (last output before timeout follows): up"
    assert chk["DeregisterCriticalServiceAfter"] == "90s"
    assert "db" in srv.services()  # reaping waits at least 1m


def test_agent_self(c):
    _, _, out = c.json("GET", "/v1/agent/self")
    assert out["Config"]["NodeName"] == NODE_NAME and out["Config"]["Datacenter"] == "dc1"


# ---- sessions ----

def test_session_create_defaults(c):
    _, _, out = c.json("PUT", "/v1/session/create", {"Name": "lock"})
    _, h, info = c.json("GET", "/v1/session/info/" + out["ID"])
    s = info[0]
    assert s["LockDelay"] == 15 * 10**9 and s["Behavior"] == "release"
    assert s["Node"] == NODE_NAME and s["NodeChecks"] == ["serfHealth"] and s["TTL"] == ""
    assert h["x-consul-knownleader"] == "true" and int(h["x-consul-index"]) >= 1
    _, _, out = c.json("PUT", "/v1/session/create", {"LockDelay": 5, "NodeChecks": []})
    s = c.json("GET", "/v1/session/info/" + out["ID"])[2][0]
    assert s["LockDelay"] == 5 * 10**9 and s["NodeChecks"] is None


def test_session_ttl_bounds(c):
    st, _, out = c.json("PUT", "/v1/session/create", {"TTL": "5s"})
    assert (st, out) == (500, "Invalid Session TTL '5000000000', must be between [10s=24h0m0s]")
    assert c.req("PUT", "/v1/session/create", {"TTL": "86401s"})[0] == 500
    assert c.req("PUT", "/v1/session/create", {"TTL": "86400s"})[0] == 200


def test_session_renew(c):
    sid = c.json("PUT", "/v1/session/create", {"TTL": "30s"})[2]["ID"]
    st, _, out = c.json("PUT", "/v1/session/renew/" + sid)
    assert st == 200 and len(out) == 1 and out[0]["TTL"] == "30s"
    st, _, out = c.json("PUT", "/v1/session/renew/nope")
    assert (st, out) == (404, "Session id 'nope' not found")


def test_session_destroy_info_list(c):
    sid = c.json("PUT", "/v1/session/create", {})[2]["ID"]
    assert [s["ID"] for s in c.json("GET", "/v1/session/list")[2]] == [sid]
    assert c.json("PUT", "/v1/session/destroy/" + sid)[2] is True
    assert c.json("PUT", "/v1/session/destroy/" + sid)[2] is True  # idempotent
    assert c.json("GET", "/v1/session/info/" + sid)[2] == []


def test_session_checks_must_be_healthy(c, srv):
    ttl_service(c)
    st, _, out = c.json("PUT", "/v1/session/create",
                        {"ServiceChecks": [{"ID": "service:db"}]})
    assert (st, out) == (500, "Check 'service:db' is in critical state")
    st, _, out = c.json("PUT", "/v1/session/create", {"NodeChecks": ["nope"]})
    assert (st, out) == (500, "Missing check 'nope' registration")
    c.req("PUT", "/v1/agent/check/pass/service:db")
    sid = c.json("PUT", "/v1/session/create",
                 {"ServiceChecks": [{"ID": "service:db"}]})[2]["ID"]
    c.req("PUT", "/v1/kv/leader?acquire=" + sid)
    c.req("PUT", "/v1/agent/check/fail/service:db")  # critical: session invalidated
    assert sid not in srv.sessions() and "Session" not in srv.kv("leader")


# ---- KV ----

def test_kv_get_put_delete(c):
    st, h, out = c.req("GET", "/v1/kv/a/b")
    assert (st, out) == (404, b"") and int(h["x-consul-index"]) >= 1
    assert c.json("PUT", "/v1/kv/a/b?flags=7", "hello")[2] is True
    st, h, out = c.json("GET", "/v1/kv/a/b")
    e = out[0]
    assert e["Key"] == "a/b" and e["Flags"] == 7 and base64.b64decode(e["Value"]) == b"hello"
    assert e["LockIndex"] == 0 and "Session" not in e
    assert int(h["x-consul-index"]) == e["ModifyIndex"] and h["x-consul-lastcontact"] == "0"
    assert c.req("GET", "/v1/kv/a/b?raw")[2] == b"hello"
    c.req("PUT", "/v1/kv/empty")
    assert c.json("GET", "/v1/kv/empty")[2][0]["Value"] is None
    assert c.json("DELETE", "/v1/kv/a/b")[2] is True
    assert c.req("GET", "/v1/kv/a/b")[0] == 404


def test_kv_cas(c):
    assert c.json("PUT", "/v1/kv/k?cas=0", "1")[2] is True
    assert c.json("PUT", "/v1/kv/k?cas=0", "2")[2] is False
    idx = c.json("GET", "/v1/kv/k")[2][0]["ModifyIndex"]
    assert c.json("PUT", f"/v1/kv/k?cas={idx + 100}", "3")[2] is False
    assert c.json("PUT", f"/v1/kv/k?cas={idx}", "3")[2] is True
    st, _, out = c.req("PUT", "/v1/kv/k?cas=0&acquire=x")
    assert st == 400 and out.startswith(b"Conflicting flags: ")


def test_kv_acquire_release(c, srv):
    s1 = c.json("PUT", "/v1/session/create", {})[2]["ID"]
    s2 = c.json("PUT", "/v1/session/create", {})[2]["ID"]
    assert c.json("PUT", f"/v1/kv/lock?acquire={s1}", "one")[2] is True
    e = srv.kv("lock")
    assert e["Session"] == s1 and e["LockIndex"] == 1
    assert c.json("PUT", f"/v1/kv/lock?acquire={s1}", "two")[2] is True  # holder again
    e2 = srv.kv("lock")
    assert e2["LockIndex"] == 1 and e2["Value"] == b"two" and e2["ModifyIndex"] > e["ModifyIndex"]
    assert c.json("PUT", f"/v1/kv/lock?acquire={s2}")[2] is False
    assert c.json("PUT", f"/v1/kv/lock?release={s2}")[2] is False
    assert c.json("PUT", f"/v1/kv/lock?release={s1}", "two")[2] is True
    assert c.json("PUT", f"/v1/kv/lock?acquire={s2}", "x")[2] is True  # no lock delay
    assert srv.kv("lock")["LockIndex"] == 2
    st, _, out = c.req("PUT", "/v1/kv/other?acquire=bogus")
    assert (st, out) == (500, b'invalid session "bogus"')


def test_invalidation_release_and_lock_delay(c, srv):
    s1 = c.json("PUT", "/v1/session/create", {"LockDelay": "400ms"})[2]["ID"]
    s2 = c.json("PUT", "/v1/session/create", {})[2]["ID"]
    c.req("PUT", f"/v1/kv/lock?acquire={s1}", "v")
    c.req("PUT", f"/v1/session/destroy/{s1}")
    e = srv.kv("lock")
    assert "Session" not in e and e["LockIndex"] == 1 and e["Value"] == b"v"
    assert c.json("PUT", f"/v1/kv/lock?acquire={s2}")[2] is False
    time.sleep(0.5)
    assert c.json("PUT", f"/v1/kv/lock?acquire={s2}")[2] is True


def test_invalidation_delete(c, srv):
    sid = c.json("PUT", "/v1/session/create", {"Behavior": "delete"})[2]["ID"]
    c.req("PUT", f"/v1/kv/lock?acquire={sid}", "v")
    c.req("PUT", f"/v1/session/destroy/{sid}")
    assert srv.kv("lock") is None


def test_session_ttl_expiry(c, srv):
    # The only test that waits for a TTL: 10s is Consul's minimum. Two
    # sessions: the renewed one outlives the other.
    a = c.json("PUT", "/v1/session/create", {"TTL": "10s", "LockDelay": "1ms"})[2]["ID"]
    b = c.json("PUT", "/v1/session/create", {"TTL": "10s"})[2]["ID"]
    c.req("PUT", f"/v1/kv/lock?acquire={a}")
    time.sleep(5)
    assert c.req("PUT", f"/v1/session/renew/{b}")[0] == 200
    time.sleep(5.3)
    assert a not in srv.sessions() and "Session" not in srv.kv("lock")
    assert b in srv.sessions()  # renewed: 10s from the renewal


def test_blocking_query(c):
    c.req("PUT", "/v1/kv/w", "1")
    _, h, _ = c.req("GET", "/v1/kv/w")
    idx = int(h["x-consul-index"])
    t0 = time.monotonic()
    st, h2, _ = c.req("GET", f"/v1/kv/w?index={idx}&wait=300ms")
    assert st == 200 and int(h2["x-consul-index"]) == idx
    assert time.monotonic() - t0 >= 0.3

    def later():
        time.sleep(0.2)
        c.req("PUT", "/v1/kv/other", "x")  # another key does not wake it
        time.sleep(0.2)
        c.req("PUT", "/v1/kv/w", "2")
    threading.Thread(target=later).start()
    t0 = time.monotonic()
    st, h3, out = c.json("GET", f"/v1/kv/w?index={idx}&wait=5s")
    assert 0.35 < time.monotonic() - t0 < 3
    assert int(h3["x-consul-index"]) > idx and base64.b64decode(out[0]["Value"]) == b"2"
    assert c.req("GET", "/v1/kv/w?index=1&wait=zz")[:3:2] == (400, b"Invalid wait time")


def test_index_is_monotonic(c):
    seen = []
    for i in range(5):
        c.req("PUT", f"/v1/kv/k{i % 2}", str(i))
        seen.append(int(c.req("GET", f"/v1/kv/k{i % 2}")[1]["x-consul-index"]))
    assert seen == sorted(seen) and len(set(seen)) == len(seen)


def test_token(srv):
    srv.stop()
    s = ConsulServer(token="secret").start()
    try:
        anon = Client(s)
        assert anon.req("GET", "/v1/agent/self")[0] == 403
        st, _, out = anon.req("GET", "/v1/agent/self", headers={"X-Consul-Token": "wrong"})
        assert (st, out) == (403, b"ACL not found")
        assert anon.req("GET", "/v1/agent/self", headers={"X-Consul-Token": "secret"})[0] == 200
        bearer = {"Authorization": "Bearer secret"}
        assert anon.req("GET", "/v1/agent/self", headers=bearer)[0] == 200
        assert s.requests[-1][2]["Authorization"] == "Bearer secret"
    finally:
        s.stop()


def test_requests_recorded(c, srv):
    ttl_service(c)
    method, path, headers, body = srv.requests[-1]
    assert (method, path) == ("PUT", "/v1/agent/service/register")
    assert json.loads(body)["Check"]["TTL"] == "10s"


def test_unknown_path_and_method(c):
    assert c.req("GET", "/v1/nope")[0] == 404
    st, h, out = c.req("GET", "/v1/session/create")
    assert (st, out, h["allow"]) == (405, b"method GET not allowed", "PUT")


# ---- fault switches ----

def test_fail_next(c):
    c.srv.fail_next(2, 503, "busy")
    assert c.req("GET", "/v1/agent/self")[:3:2] == (503, b"busy")
    assert c.req("GET", "/v1/agent/self")[0] == 503
    assert c.req("GET", "/v1/agent/self")[0] == 200


def test_fail_next_on_a_path(c):
    c.srv.fail_next(1, 400, "bad key", path="/v1/kv/")
    assert c.req("GET", "/v1/agent/self")[0] == 200
    assert c.req("GET", "/v1/kv/x")[:3:2] == (400, b"bad key")
    assert c.req("GET", "/v1/kv/x")[0] == 404


def test_fail_next_of_a_method(c):
    c.srv.fail_next(1, 429, "rate limit exceeded", path="/v1/kv/", method="GET")
    assert c.req("PUT", "/v1/kv/x", "v")[0] == 200
    assert c.req("GET", "/v1/kv/x")[:3:2] == (429, b"rate limit exceeded")
    assert c.req("GET", "/v1/kv/x")[0] == 200


def test_hang(c, srv):
    srv.hang(True)
    with pytest.raises(socket.timeout):
        c.req("PUT", "/v1/kv/h", "x", timeout=0.3)
    assert srv.requests[-1][1] == "/v1/kv/h" and srv.kv("h") is None
    srv.hang(False)
    assert c.req("GET", "/v1/agent/self")[0] == 200


def test_hold_next(c, srv):
    h = srv.hold_next(path="/v1/kv/", method="PUT", contains="acquire=")
    out = {}
    t = threading.Thread(target=lambda: out.update(r=c.req("PUT", "/v1/kv/h?acquire=x", "v")))
    t.start()
    assert h.arrived.wait(5)
    assert c.req("PUT", "/v1/kv/h", "w")[0] == 200  # others are answered meanwhile
    time.sleep(0.2)
    assert t.is_alive() and srv.kv("h")["Value"] == b"w"
    h.go()
    t.join(5)
    assert out["r"][0] == 500  # then handled as usual: no such session
    assert c.req("PUT", "/v1/kv/h?acquire=x", "v")[0] == 500  # only the next one was held


def test_down_up(c, srv):
    port = srv.port
    srv.down()
    with pytest.raises(ConnectionRefusedError):
        c.req("GET", "/v1/agent/self")
    srv.up()
    assert srv.port == port and c.req("GET", "/v1/agent/self")[0] == 200
