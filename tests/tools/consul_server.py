#!/usr/bin/python3
"""A loopback Consul HTTP API server for tests.

This is a stand-in for a Consul agent, following the documented HTTP API;
Consul cannot be installed here. It covers what litevisor's Consul module
uses: service registration with TTL checks (agent endpoints), sessions, and
the KV store with ?cas / ?acquire / ?release and blocking reads. It behaves
like a single agent running in server mode (`consul agent -dev`): RPC errors
come back without the "rpc error making call: " prefix a client agent adds.

Each behaviour names the document or Go file of hashicorp/consul it follows:
  docs: website/content/api-docs/{agent/service,agent/check,session,kv,index}.mdx,
        website/content/api-docs/features/blocking.mdx
  Go:   agent/http.go, agent/agent_endpoint.go, agent/acl.go, agent/agent.go,
        agent/checks/check.go, agent/session_endpoint.go, agent/kvs_endpoint.go,
        agent/consul/{session_endpoint,kvs_endpoint}.go,
        agent/consul/state/{kvs,session}.go, agent/blockingquery/blockingquery.go

Usage:
    srv = ConsulServer(token=None).start()   # srv.addr, srv.url
    ...                                       # srv.kv("k"), srv.checks(), ...
    srv.stop()

Fault switches: hang(on), fail_next(n, status, body), down() / up(),
index_zero (every X-Consul-Index is 0: the Consul bug blocking.mdx warns of),
delay (seconds every answer takes: a loaded agent).
Not covered: ?recurse and ?keys on KV, catalog/health endpoints, non-TTL
checks are stored but never run, blocking-query jitter (see _kv_get).
"""
import base64
import json
import re
import socket
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, quote_plus, unquote, urlsplit

NODE_NAME = "litevisor-test-node"
DATACENTER = "dc1"

# agent/consul/session_endpoint.go + structs: SessionTTLMin 10s, SessionTTLMax 24h.
SESSION_TTL_MIN_NS = 10 * 10**9
SESSION_TTL_MAX_NS = 24 * 3600 * 10**9
# structs.MaxLockDelay (agent/consul/state/session.go caps the delay with it).
MAX_LOCK_DELAY_NS = 60 * 10**9
# agent/session_endpoint.go: lockDelayMinThreshold, numbers below are seconds.
LOCK_DELAY_MIN_THRESHOLD = 1000
# agent/config defaults: check_reap_interval 30s, check_deregister_interval_min 1m.
CHECK_REAP_INTERVAL_S = 30.0
CHECK_DEREGISTER_INTERVAL_MIN_S = 60.0
# agent/blockingquery/blockingquery.go via RPCQueryTimeout; blocking.mdx:
# wait defaults to 5m and is capped at 10m.
DEFAULT_QUERY_TIME_S = 300.0
MAX_QUERY_TIME_S = 600.0

_UNITS_NS = {"ns": 1, "us": 10**3, "µs": 10**3, "μs": 10**3, "ms": 10**6,
             "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9}


def parse_go_duration(text):
    """Go's time.ParseDuration: nanoseconds, or ValueError with Go's message."""
    orig, s = text, text
    neg = s[:1] == "-"
    if s[:1] in "+-" and s:
        s = s[1:]
    if s == "0":
        return 0
    if s == "":
        raise ValueError(f'time: invalid duration "{orig}"')
    total = 0.0
    while s:
        num = re.match(r"[0-9]*(\.[0-9]*)?", s).group(0)
        if num in ("", "."):
            raise ValueError(f'time: invalid duration "{orig}"')
        s = s[len(num):]
        unit = re.match(r"[^0-9.]*", s).group(0)
        if unit == "":
            raise ValueError(f'time: missing unit in duration "{orig}"')
        if unit not in _UNITS_NS:
            raise ValueError(f'time: unknown unit "{unit}" in duration "{orig}"')
        s = s[len(unit):]
        total += float(num) * _UNITS_NS[unit]
    return int(-total if neg else total)


def _json(obj):
    # Go's encoding/json output is compact.
    return json.dumps(obj, separators=(",", ":")).encode()


class _Reply(Exception):
    """Raised by a handler to answer at once (status, body, extra headers)."""

    def __init__(self, status, body=b"", headers=None):
        super().__init__(status)
        self.status = status
        self.body = body if isinstance(body, bytes) else body.encode()
        self.headers = headers or []


def _http_error(status, reason):
    # agent/http.go: HTTPError{StatusCode, Reason} writes Reason as the body.
    return _Reply(status, reason, [("Content-Type", "text/plain; charset=utf-8")])


def _rpc_error(text):
    # agent/http.go handleErr: any other error is a 500 with err.Error().
    return _http_error(500, text)


class Hold:
    """A request kept back by ConsulServer.hold_next."""

    def __init__(self, path, method, contains):
        self.path, self.method, self.contains = path, method, contains
        self.arrived, self._go = threading.Event(), threading.Event()

    def matches(self, method, path):
        return ((self.path is None or path.startswith(self.path)) and
                (self.method is None or method == self.method) and
                (self.contains is None or self.contains in path))

    def go(self):
        self._go.set()


class ConsulServer:
    """One in-process fake agent on a free 127.0.0.1 port; see module doc."""

    def __init__(self, token=None):
        self.token = token
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._index = 1                 # raft index: every applied write bumps it
        self._kv_index = 0              # max index of the kvs + tombstones tables
        self._sess_index = 0            # index of the sessions table
        self._kv = {}                   # key -> entry (Value as bytes or None)
        self._key_change = {}           # key -> counter, the per-key memdb watch
        self._lock_delay = {}           # key -> monotonic time the delay ends
        self._sessions = {}             # id -> session object as Consul shows it
        self._session_deadline = {}     # id -> monotonic time of TTL invalidation
        self._services = {}             # id -> registration body as stored
        self._checks = {}               # id -> check object as Consul shows it
        self._check_state = {}          # id -> ttl/deadline/reap/critical_since
        self._history = {}              # id -> statuses the check went through
        self._requests = []
        self._hang = False
        self._hang_release = threading.Event()
        self._fail = []                 # pending (status, body, path prefix, method) answers
        self._holds = []                # pending Hold: a request kept back until go()
        self.index_zero = False         # blocking.mdx: "this has happened a few times"
        self.delay = 0.0                # seconds before each request is handled
        self._httpd = None
        self._serve_thread = None
        self._conns = set()
        self._stopping = threading.Event()
        self._ticker = None
        self._next_reap = 0.0
        self.port = 0

    # ---- lifecycle and fault switches ----

    @property
    def addr(self):
        return f"127.0.0.1:{self.port}"

    @property
    def url(self):
        return f"http://{self.addr}"

    def start(self):
        self._open()
        self._next_reap = time.monotonic() + CHECK_REAP_INTERVAL_S
        self._ticker = threading.Thread(target=self._tick, daemon=True)
        self._ticker.start()
        return self

    def stop(self):
        self._stopping.set()
        self._close()
        with self._cond:
            self._cond.notify_all()
        if self._ticker:
            self._ticker.join(timeout=2)

    def down(self):
        """Close the listening socket and live connections: connects are refused."""
        self._close()

    def up(self):
        """Listen again on the same port."""
        self._open()

    def hang(self, on):
        """While on, requests are read and recorded but never answered; when
        turned off (or on stop/down) the held connections are closed unanswered."""
        with self._lock:
            if on and not self._hang:
                self._hang_release = threading.Event()
            elif not on:
                self._hang_release.set()
            self._hang = bool(on)

    def fail_next(self, n, status=500, body="injected failure", path=None, method=None):
        """The next n requests (those whose path starts with path, and of that method,
        when given) get this answer instead of being handled."""
        with self._lock:
            self._fail.extend([(status, body, path, method)] * n)

    def hold_next(self, path=None, method=None, contains=None):
        """The next request whose path starts with path, of that method, and whose path
        and query hold contains (each when given) is kept back, unanswered, until the
        returned Hold's go(): one slow answer while the others go on. Hold.arrived is
        set when it came."""
        h = Hold(path, method, contains)
        with self._lock:
            self._holds.append(h)
        return h

    def _open(self):
        server = self

        class Handler(_Handler):
            consul = server

        httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        httpd.daemon_threads = True
        self.port = httpd.server_address[1]
        self._httpd = httpd
        self._serve_thread = threading.Thread(target=httpd.serve_forever,
                                              kwargs={"poll_interval": 0.05}, daemon=True)
        self._serve_thread.start()

    def _close(self):
        with self._lock:
            self._hang_release.set()
            conns = list(self._conns)
        if self._httpd:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    # ---- inspection helpers for tests ----

    @property
    def requests(self):
        """(method, path_with_query, headers dict, body bytes) per request."""
        with self._lock:
            return list(self._requests)

    def services(self):
        with self._lock:
            return json.loads(json.dumps(self._services))

    def checks(self):
        with self._lock:
            out = {}
            for cid, c in self._checks.items():
                d = dict(c)
                d.update(self._check_state[cid]["def"])
                out[cid] = d
            return out

    def history(self, check_id):
        """Statuses the check went through, initial one first, one per change."""
        with self._lock:
            return list(self._history.get(check_id, []))

    def kv(self, key):
        with self._lock:
            e = self._kv.get(key)
            return dict(e) if e else None

    def sessions(self):
        with self._lock:
            return json.loads(json.dumps(self._sessions))

    # ---- background timers: check TTLs, session TTLs, the service reaper ----

    def _tick(self):
        while not self._stopping.wait(0.05):
            now = time.monotonic()
            with self._cond:
                for cid, st in list(self._check_state.items()):
                    if st["deadline"] is not None and now >= st["deadline"]:
                        # agent/checks/check.go CheckTTL.run: the timer fires once
                        # per SetStatus; getExpiredOutput gives this text.
                        st["deadline"] = None
                        out = "TTL expired"
                        if st["last_output"]:
                            out += (" (last output before timeout follows): "
                                    + st["last_output"])
                        self._set_check_status(cid, "critical", out)
                for sid, deadline in list(self._session_deadline.items()):
                    # Consul invalidates somewhere between TTL and 2*TTL
                    # (session.mdx; SessionTTLMultiplier in session_ttl.go):
                    # this stand-in does it at TTL, the earliest Consul may.
                    if now >= deadline:
                        self._destroy_session(sid)
                if now >= self._next_reap:
                    self._next_reap = now + CHECK_REAP_INTERVAL_S
                    self._reap_services(now)

    def _reap_services(self, now):
        # agent/agent.go reapServicesInternal, every CheckReapInterval (30s).
        for cid, st in list(self._check_state.items()):
            c = self._checks.get(cid)
            if not c or not c["ServiceID"] or c["Status"] != "critical":
                continue
            if c["ServiceID"] not in self._services:
                continue
            reap = st["reap_after"]
            if reap and st["critical_since"] is not None and now - st["critical_since"] > reap:
                self._remove_service(c["ServiceID"])

    # ---- state changes (callers hold the lock) ----

    def _bump(self):
        self._index += 1
        return self._index

    def _touch_key(self, key, idx):
        self._kv_index = idx
        self._key_change[key] = self._key_change.get(key, 0) + 1
        self._cond.notify_all()

    def _set_check_status(self, cid, status, output):
        c = self._checks[cid]
        st = self._check_state[cid]
        if c["Status"] != status:
            self._history[cid].append(status)
            st["critical_since"] = time.monotonic() if status == "critical" else None
        c["Status"], c["Output"] = status, output
        self._bump()  # anti-entropy writes the new status to the catalog
        if status == "critical":
            # agent/consul/state/catalog.go ensureCheckTxn: a critical check
            # invalidates the sessions that name it.
            self._invalidate_sessions_for_check(cid)

    def _invalidate_sessions_for_check(self, cid):
        for sid, s in list(self._sessions.items()):
            ids = list(s["NodeChecks"] or []) + [x["ID"] for x in (s["ServiceChecks"] or [])]
            if cid in ids:
                self._destroy_session(sid)

    def _remove_check(self, cid):
        self._checks.pop(cid, None)
        self._check_state.pop(cid, None)
        self._bump()
        # state/catalog.go deleteCheckTxn invalidates sessions using the check.
        self._invalidate_sessions_for_check(cid)

    def _remove_service(self, sid):
        # agent/agent.go removeServiceLocked: the service and all its checks.
        self._services.pop(sid, None)
        for cid in [k for k, c in self._checks.items() if c["ServiceID"] == sid]:
            self._remove_check(cid)
        self._bump()

    def _destroy_session(self, sid):
        """agent/consul/state/session.go deleteSessionTxn."""
        idx = self._bump()
        sess = self._sessions.pop(sid, None)
        self._session_deadline.pop(sid, None)
        if sess is None:
            return
        self._sess_index = idx
        delay_ns = min(sess["LockDelay"], MAX_LOCK_DELAY_NS)
        now = time.monotonic()
        for key, e in list(self._kv.items()):
            if e.get("Session") != sid:
                continue
            if sess["Behavior"] == "delete":
                del self._kv[key]
            else:
                # release: Session cleared, LockIndex kept, ModifyIndex bumped.
                e.pop("Session", None)
                e["ModifyIndex"] = idx
            self._touch_key(key, idx)
            if delay_ns > 0:
                self._lock_delay[key] = now + delay_ns / 1e9

    # ---- request handling ----

    def _auth(self, query, headers):
        # agent/http.go parseToken: ?token, X-Consul-Token, Authorization: Bearer.
        if self.token is None:
            return
        tok = query.get("token", [""])[0] or headers.get("x-consul-token", "")
        if not tok:
            auth = headers.get("authorization", "")
            if auth[:7].lower() == "bearer ":
                tok = auth[7:].strip()
        if tok == self.token:
            return
        if not tok:
            # No token means the anonymous token, which a default-deny ACL
            # system refuses (real text adds which permission is missing).
            raise _http_error(403, "Permission denied")
        raise _http_error(403, "ACL not found")  # acl.ErrNotFound

    def dispatch(self, method, target, headers, body):
        """Answer one request: (status, [(header, value)], body bytes)."""
        parts = urlsplit(target)
        path = parts.path
        query = parse_qs(parts.query, keep_blank_values=True)
        if self.delay:
            time.sleep(self.delay)
        try:
            self._auth(query, headers)
            status, hdrs, out = self._route(method, path, query, body)
        except _Reply as r:
            status, hdrs, out = r.status, r.headers, r.body
        if self.index_zero:
            hdrs = [(k, "0" if k == "X-Consul-Index" else v) for k, v in hdrs]
        return status, hdrs, out

    # (path prefix, exact?, allowed methods, handler)
    _ROUTES = [
        ("/v1/agent/service/register", True, ("PUT",), "_svc_register"),
        ("/v1/agent/service/deregister/", False, ("PUT",), "_svc_deregister"),
        ("/v1/agent/check/update/", False, ("PUT",), "_check_update"),
        ("/v1/agent/check/pass/", False, ("PUT",), "_check_pass"),
        ("/v1/agent/check/warn/", False, ("PUT",), "_check_warn"),
        ("/v1/agent/check/fail/", False, ("PUT",), "_check_fail"),
        ("/v1/agent/services", True, ("GET",), "_agent_services"),
        ("/v1/agent/checks", True, ("GET",), "_agent_checks"),
        ("/v1/agent/self", True, ("GET",), "_agent_self"),
        ("/v1/session/create", True, ("PUT",), "_sess_create"),
        ("/v1/session/renew/", False, ("PUT",), "_sess_renew"),
        ("/v1/session/destroy/", False, ("PUT",), "_sess_destroy"),
        ("/v1/session/info/", False, ("GET",), "_sess_info"),
        ("/v1/session/list", True, ("GET",), "_sess_list"),
        ("/v1/kv/", False, ("GET", "PUT", "DELETE"), "_kv_route"),
    ]

    def _route(self, method, path, query, body):
        for prefix, exact, methods, name in self._ROUTES:
            if (path == prefix) if exact else path.startswith(prefix):
                if method not in methods:
                    # agent/http.go MethodNotAllowedError.
                    raise _Reply(405, f"method {method} not allowed",
                                 [("Allow", ",".join(methods))])
                rest = unquote(path[len(prefix):])
                return getattr(self, name)(method, rest, query, body)
        # Go's http.ServeMux NotFound.
        raise _Reply(404, "404 page not found\n", [("Content-Type", "text/plain; charset=utf-8")])

    @staticmethod
    def _decode(body):
        # agent/http.go decodeBody: "Request decode failed: %v" with a 400.
        try:
            obj = json.loads(body or b"null")
        except ValueError as e:
            raise _http_error(400, f"Request decode failed: {e}")
        return obj

    @staticmethod
    def _ok_json(obj, meta_index=None):
        headers = [("Content-Type", "application/json")]
        if meta_index is not None:
            # agent/http.go setMeta: index, last contact (ms), known leader.
            headers += [("X-Consul-Index", str(meta_index)),
                        ("X-Consul-Knownleader", "true"),
                        ("X-Consul-Lastcontact", "0")]
        return 200, headers, _json(obj)

    @staticmethod
    def _ok_empty():
        # Agent write endpoints return (nil, nil): 200 with an empty body.
        return 200, [], b""

    # ---- agent: services and checks ----

    @staticmethod
    def _duration_field(value, what):
        """A check duration: Go duration string or a number of nanoseconds."""
        if value is None or value == "":
            return 0
        if isinstance(value, (int, float)):
            return int(value)
        try:
            return parse_go_duration(str(value))
        except ValueError as e:
            raise _http_error(400, f"Request decode failed: {what}: {e}")

    def _svc_register(self, method, _rest, query, body):
        args = self._decode(body)
        if not isinstance(args, dict):
            raise _http_error(400, "Request decode failed: expected a JSON object")
        # agent_endpoint.go AgentRegisterService: "Missing service name".
        if not args.get("Name"):
            raise _http_error(400, "Missing service name")
        if args.get("Address") in ("0.0.0.0", "::", "[::]"):
            raise _http_error(400, "Invalid service address")
        # structs.ServiceDefinition.CheckTypes: Check first, then Checks.
        chk_types = []
        if isinstance(args.get("Check"), dict) and args["Check"]:
            chk_types.append(args["Check"])
        for c in args.get("Checks") or []:
            chk_types.append(c)
        parsed = []
        for c in chk_types:
            status = c.get("Status", "")
            if status and status not in ("passing", "warning", "critical"):
                raise _http_error(400, "Status for checks must 'passing', 'warning', 'critical'")
            ttl = self._duration_field(c.get("TTL"), "TTL")
            kind = ("ttl" if ttl else "http" if c.get("HTTP") else "tcp" if c.get("TCP")
                    else "grpc" if c.get("GRPC") else "script" if c.get("Args") else "")
            if not kind or (kind != "ttl" and not c.get("Interval")):
                # structs.CheckType.Validate (text of older Consul's
                # invalidCheckMessage; newer wording differs slightly).
                raise _http_error(400, "Invalid check: Must provide TTL or Script/"
                                       "DockerContainerID/HTTP/TCP/GRPC and Interval")
            reap = self._duration_field(c.get("DeregisterCriticalServiceAfter"),
                                        "DeregisterCriticalServiceAfter")
            parsed.append((c, kind, ttl, reap))
        replace = "replace-existing-checks" in query and \
            query["replace-existing-checks"][0] in ("", "true")
        with self._cond:
            sid = args.get("ID") or args["Name"]  # agent.go validateService
            stored = dict(args)
            stored["ID"] = sid
            self._services[sid] = stored
            self._bump()
            existing = {cid for cid, c in self._checks.items() if c["ServiceID"] == sid}
            keep = set()
            for i, (c, kind, ttl, reap) in enumerate(parsed):
                # agent.go addServiceInternal: default ID and Name.
                cid = c.get("CheckID") or f"service:{sid}"
                if not c.get("CheckID") and len(parsed) > 1:
                    cid += f":{i + 1}"
                keep.add(cid)
                prev = self._checks.get(cid)
                status = c.get("Status") or "critical"
                output = ""
                if prev is not None:
                    # addServiceInternal restores Status/Output from the
                    # snapshot of existing checks, to avoid flapping.
                    status, output = prev["Status"], prev["Output"]
                check = {
                    "Node": NODE_NAME, "CheckID": cid,
                    "Name": c.get("Name") or f"Service '{args['Name']}' check",
                    "Status": status, "Notes": c.get("Notes", ""), "Output": output,
                    "ServiceID": sid, "ServiceName": args["Name"],
                    "ServiceTags": list(args.get("Tags") or []), "Type": kind,
                    "Interval": c.get("Interval", ""), "Timeout": c.get("Timeout", ""),
                    "ExposedPort": 0, "Definition": {}, "CreateIndex": 0, "ModifyIndex": 0,
                }
                self._checks[cid] = check
                if prev is None:
                    self._history[cid] = [status]
                if reap:
                    # agent.go addCheck: below check_deregister_interval_min
                    # the minimum is used instead.
                    reap = max(reap / 1e9, CHECK_DEREGISTER_INTERVAL_MIN_S)
                self._check_state[cid] = {
                    "ttl": ttl / 1e9 if ttl else None,
                    # CheckTTL.Start: a fresh timer of TTL on (re)registration.
                    "deadline": time.monotonic() + ttl / 1e9 if ttl else None,
                    "last_output": "", "reap_after": reap or None,
                    "critical_since": (self._check_state[cid]["critical_since"] if prev is not None
                                       else time.monotonic() if status == "critical" else None),
                    "def": {"TTL": c.get("TTL"), "DeregisterCriticalServiceAfter":
                            c.get("DeregisterCriticalServiceAfter"), "Timeout": c.get("Timeout")},
                }
            if replace:
                for cid in existing - keep:
                    self._remove_check(cid)
        return self._ok_empty()

    def _svc_deregister(self, method, sid, query, body):
        with self._cond:
            if sid not in self._services:
                # agent/acl.go vetServiceUpdateWithAuthorizer.
                raise _http_error(404, f'Unknown service ID "{sid}". Ensure that the '
                                       "service ID is passed, not the service name.")
            self._remove_service(sid)
        return self._ok_empty()

    def _ttl_update(self, cid, status, output):
        with self._cond:
            if cid not in self._checks:
                # agent/acl.go vetCheckUpdateWithAuthorizer.
                raise _http_error(404, f'Unknown check ID "{cid}". Ensure that the '
                                       "check ID is passed, not the check name.")
            st = self._check_state[cid]
            if st["ttl"] is None:
                # agent/agent.go updateTTLCheck; a plain error, so a 500.
                raise _rpc_error(f'CheckID "{cid}" does not have associated TTL')
            if len(output) > 4096:
                # checks.CheckTTL.SetStatus truncates to DefaultBufSize.
                output = f"{output[:4096]} ... (captured 4096 of {len(output)} bytes)"
            st["last_output"] = output
            st["deadline"] = time.monotonic() + st["ttl"]
            self._set_check_status(cid, status, output)
        return self._ok_empty()

    def _check_update(self, method, cid, query, body):
        upd = self._decode(body) or {}
        status = upd.get("Status", "") if isinstance(upd, dict) else ""
        if status not in ("passing", "warning", "critical"):
            # agent_endpoint.go AgentCheckUpdate.
            raise _http_error(400, f"Invalid check status: '{status}'")
        return self._ttl_update(cid, status, upd.get("Output", "") or "")

    def _check_pass(self, method, cid, query, body):
        return self._ttl_update(cid, "passing", query.get("note", [""])[0])

    def _check_warn(self, method, cid, query, body):
        return self._ttl_update(cid, "warning", query.get("note", [""])[0])

    def _check_fail(self, method, cid, query, body):
        return self._ttl_update(cid, "critical", query.get("note", [""])[0])

    def _agent_services(self, method, rest, query, body):
        # agent/service.mdx "List Services": a map by service ID.
        with self._lock:
            out = {}
            for sid, s in self._services.items():
                out[sid] = {
                    "ID": sid, "Service": s["Name"], "Tags": list(s.get("Tags") or []),
                    "Meta": dict(s.get("Meta") or {}), "Port": s.get("Port", 0),
                    "Address": s.get("Address", ""),
                    "Weights": s.get("Weights") or {"Passing": 1, "Warning": 1},
                    "EnableTagOverride": bool(s.get("EnableTagOverride", False)),
                    "Datacenter": DATACENTER,
                }
        return self._ok_json(out)

    def _agent_checks(self, method, rest, query, body):
        # agent/check.mdx "List Checks": a map by check ID.
        with self._lock:
            return self._ok_json({k: dict(v) for k, v in self._checks.items()})

    def _agent_self(self, method, rest, query, body):
        return self._ok_json({"Config": {"Datacenter": DATACENTER, "NodeName": NODE_NAME,
                                         "Server": True},
                              "Member": {"Name": NODE_NAME}})

    # ---- sessions ----

    def _sess_create(self, method, rest, query, body):
        # agent/session_endpoint.go SessionCreate: defaults.
        args = self._decode(body) if body else {}
        if not isinstance(args, dict):
            args = {}
        lower = {k.lower(): k for k in args}
        delay = 15 * 10**9
        if "lockdelay" in lower:
            v = args[lower["lockdelay"]]
            if isinstance(v, str):
                try:
                    delay = parse_go_duration(v)
                except ValueError as e:
                    raise _http_error(400, f"Request decode failed: {e}")
            elif isinstance(v, (int, float)):
                delay = int(v)
            if delay < LOCK_DELAY_MIN_THRESHOLD:  # FixupLockDelay: seconds
                delay *= 10**9
        has_checks = any(k in lower for k in ("checks", "nodechecks", "servicechecks"))
        node_checks = list(args.get("Checks") or []) + list(args.get("NodeChecks") or [])
        if not has_checks:
            node_checks = ["serfHealth"]  # structs.SerfCheckID by default
        svc_checks = [{"ID": c.get("ID", ""), "Namespace": c.get("Namespace", "")}
                      for c in (args.get("ServiceChecks") or [])]
        behavior = args.get("Behavior") or "release"
        ttl = args.get("TTL") or ""
        node = args.get("Node") or NODE_NAME
        # agent/consul/session_endpoint.go Session.Apply; RPC errors are 500s.
        if behavior not in ("release", "delete"):
            raise _rpc_error(f"Invalid Behavior setting '{behavior}'")
        ttl_ns = 0
        if ttl:
            try:
                ttl_ns = parse_go_duration(ttl)
            except ValueError as e:
                raise _rpc_error(f"Session TTL '{ttl}' invalid: {e}")
            if ttl_ns != 0 and not SESSION_TTL_MIN_NS <= ttl_ns <= SESSION_TTL_MAX_NS:
                raise _rpc_error(f"Invalid Session TTL '{ttl_ns}', must be between "
                                 "[10s=24h0m0s]")
        with self._cond:
            # state/session.go sessionCreateTxn + validateSessionChecksTxn.
            if node != NODE_NAME:
                raise _rpc_error("Missing node registration")
            for cid in node_checks + [c["ID"] for c in svc_checks]:
                if cid == "serfHealth":
                    continue  # the node's Serf check, always passing here
                c = self._checks.get(cid)
                if c is None:
                    raise _rpc_error(f"Missing check '{cid}' registration")
                if c["Status"] == "critical":
                    raise _rpc_error(f"Check '{cid}' is in critical state")
            idx = self._sess_index = self._bump()
            sid = str(uuid.uuid4())
            self._sessions[sid] = {
                "ID": sid, "Name": args.get("Name", ""), "Node": node, "LockDelay": delay,
                "Behavior": behavior, "TTL": ttl, "NodeChecks": node_checks or None,
                "ServiceChecks": svc_checks or None, "CreateIndex": idx, "ModifyIndex": idx,
            }
            if ttl_ns:
                self._session_deadline[sid] = time.monotonic() + ttl_ns / 1e9
        return self._ok_json({"ID": sid})

    def _sess_renew(self, method, sid, query, body):
        if not sid:
            raise _http_error(400, "Missing session")
        with self._lock:
            s = self._sessions.get(sid)
            if s is None:
                # agent/session_endpoint.go SessionRenew.
                raise _http_error(404, f"Session id '{sid}' not found")
            if s["TTL"]:
                ttl_ns = parse_go_duration(s["TTL"])
                if ttl_ns:
                    self._session_deadline[sid] = time.monotonic() + ttl_ns / 1e9
            return self._ok_json([dict(s)])

    def _sess_destroy(self, method, sid, query, body):
        if not sid:
            raise _http_error(400, "Missing session")
        with self._cond:
            # session.mdx: unknown or expired IDs still answer 200 (idempotent).
            self._destroy_session(sid)
        return self._ok_json(True)

    def _sess_info(self, method, sid, query, body):
        if not sid:
            raise _http_error(400, "Missing session")
        with self._lock:
            s = self._sessions.get(sid)
            # state/session.go SessionGet: the sessions table index.
            return self._ok_json([dict(s)] if s else [], max(self._sess_index, 1))

    def _sess_list(self, method, rest, query, body):
        with self._lock:
            return self._ok_json([dict(s) for s in self._sessions.values()],
                                 max(self._sess_index, 1))

    # ---- KV ----

    @staticmethod
    def _entry_json(e):
        # structs.DirEntry field order; Session omitted when empty.
        out = {"LockIndex": e["LockIndex"], "Key": e["Key"], "Flags": e["Flags"],
               "Value": base64.b64encode(e["Value"]).decode() if e["Value"] is not None else None}
        if e.get("Session"):
            out["Session"] = e["Session"]
        out["CreateIndex"] = e["CreateIndex"]
        out["ModifyIndex"] = e["ModifyIndex"]
        return out

    def _kv_route(self, method, key, query, body):
        if "recurse" in query or "keys" in query:
            raise _http_error(501, "consul_server.py: ?recurse and ?keys are not implemented")
        if key == "":
            raise _http_error(400, "Missing key name")  # agent/kvs_endpoint.go
        if method == "GET":
            return self._kv_get(key, query)
        if method == "PUT":
            return self._kv_put(key, query, body)
        return self._kv_delete(key, query)

    def _kv_read(self, key):
        # agent/consul/kvs_endpoint.go KVS.Get: the entry's ModifyIndex, else
        # the kvs table index, and never 0.
        e = self._kv.get(key)
        if e is not None:
            return e["ModifyIndex"], e
        return max(self._kv_index, 1), None

    def _kv_get(self, key, query):
        # agent/http.go parseWait.
        wait_s = 0.0
        if query.get("wait", [""])[0]:
            try:
                wait_s = parse_go_duration(query["wait"][0]) / 1e9
            except ValueError:
                raise _http_error(400, "Invalid wait time")
        min_index = 0
        if query.get("index", [""])[0]:
            try:
                min_index = int(query["index"][0])
                if min_index < 0:
                    raise ValueError
            except ValueError:
                raise _http_error(400, "Invalid index")
        with self._cond:
            idx, e = self._kv_read(key)
            if min_index > 0:
                # blockingquery.Query: block until the index is above
                # min_index or the wait ends. blocking.mdx: wait defaults to
                # 5m, is capped at 10m, and Consul adds up to wait/16 of
                # random jitter, which this stand-in leaves out.
                if wait_s <= 0:
                    wait_s = DEFAULT_QUERY_TIME_S
                wait_s = min(wait_s, MAX_QUERY_TIME_S)
                end = time.monotonic() + wait_s
                while idx <= min_index and not self._stopping.is_set():
                    seen = self._key_change.get(key, 0)
                    # The watch set holds this key only: writes to other keys
                    # do not wake it.
                    while self._key_change.get(key, 0) == seen and not self._stopping.is_set():
                        left = end - time.monotonic()
                        if left <= 0:
                            break
                        self._cond.wait(left)
                    if self._key_change.get(key, 0) == seen:
                        break  # timed out: answer with the current state
                    idx, e = self._kv_read(key)
            if e is None:
                return 404, [("X-Consul-Index", str(idx)), ("X-Consul-Knownleader", "true"),
                             ("X-Consul-Lastcontact", "0")], b""
            if "raw" in query:
                val = e["Value"] or b""
                return 200, [("X-Consul-Index", str(idx)), ("X-Consul-Knownleader", "true"),
                             ("X-Consul-Lastcontact", "0"), ("Content-Type", "text/plain"),
                             ("X-Content-Type-Options", "nosniff"),
                             ("Content-Security-Policy", "sandbox")], val
            return self._ok_json([self._entry_json(e)], idx)

    @staticmethod
    def _uint_param(query, name):
        raw = query[name][0]
        if not re.fullmatch(r"[0-9]+", raw):
            # strconv.ParseUint's error, returned as a plain error: a 500.
            raise _rpc_error(f'strconv.ParseUint: parsing "{raw}": invalid syntax')
        return int(raw)

    def _conflicting(self, query, *flags):
        if sum(1 for f in flags if f in query) > 1:
            # agent/kvs_endpoint.go conflictingFlags (Go's url.Values.Encode).
            enc = "&".join(f"{quote_plus(k)}={quote_plus(v)}"
                           for k in sorted(query) for v in query[k])
            raise _Reply(400, f"Conflicting flags: {enc}\n")

    def _kv_put(self, key, query, body):
        self._conflicting(query, "cas", "acquire", "release")
        flags = self._uint_param(query, "flags") if "flags" in query else 0
        cas = self._uint_param(query, "cas") if "cas" in query else None
        # bytes.Buffer of an empty body gives a nil slice: Value null.
        value = body if body else None
        with self._cond:
            existing = self._kv.get(key)
            if "acquire" in query:
                return self._ok_json(self._kv_lock(key, query["acquire"][0], flags, value))
            if "release" in query:
                return self._ok_json(self._kv_unlock(key, query["release"][0], flags, value))
            idx = self._bump()
            if cas is not None:
                # state/kvs.go kvsSetCASTxn: 0 means "only if absent".
                if (cas == 0 and existing is not None) or \
                        (cas != 0 and (existing is None or existing["ModifyIndex"] != cas)):
                    return self._ok_json(False)
            self._kv_set(key, idx, flags, value, existing.get("Session") if existing else None,
                         existing["LockIndex"] if existing else 0)
            return self._ok_json(True)

    def _kv_set(self, key, idx, flags, value, session, lock_index):
        """state/kvs.go kvsSetTxn: CreateIndex kept; no write when unchanged."""
        existing = self._kv.get(key)
        new = {"LockIndex": lock_index, "Key": key, "Flags": flags, "Value": value,
               "CreateIndex": existing["CreateIndex"] if existing else idx, "ModifyIndex": idx}
        if session:
            new["Session"] = session
        if existing is not None and all(existing.get(f) == new.get(f) for f in
                                        ("LockIndex", "Key", "Flags", "Value", "Session")):
            return  # DirEntry.Equal: ModifyIndex stays, nothing wakes
        self._kv[key] = new
        self._touch_key(key, idx)

    def _kv_lock(self, key, sid, flags, value):
        # agent/consul/kvs_endpoint.go kvsPreApply: lock-delay first, answer false.
        until = self._lock_delay.get(key)
        if until is not None and until > time.monotonic():
            return False
        idx = self._bump()
        # state/kvs.go kvsLockTxn.
        if not sid:
            raise _rpc_error("missing session")
        if sid not in self._sessions:
            raise _rpc_error(f'invalid session "{sid}"')
        e = self._kv.get(key)
        if e is not None and e.get("Session") == sid:
            lock_index = e["LockIndex"]        # already held: no new LockIndex
        elif e is not None and e.get("Session"):
            return False                       # someone else holds it
        else:
            lock_index = (e["LockIndex"] if e else 0) + 1
        self._kv_set(key, idx, flags, value, sid, lock_index)
        return True

    def _kv_unlock(self, key, sid, flags, value):
        # state/kvs.go kvsUnlockTxn: no lock delay on an explicit release.
        idx = self._bump()
        if not sid:
            raise _rpc_error("missing session")
        e = self._kv.get(key)
        if e is None or e.get("Session") != sid:
            return False
        self._kv_set(key, idx, flags, value, None, e["LockIndex"])
        return True

    def _kv_delete(self, key, query):
        self._conflicting(query, "recurse", "cas")
        cas = self._uint_param(query, "cas") if "cas" in query else None
        with self._cond:
            idx = self._bump()
            e = self._kv.get(key)
            if cas is not None:
                # state/kvs.go kvsDeleteCASTxn: on a mismatch the answer is
                # whether the key is absent.
                if e is None or e["ModifyIndex"] != cas:
                    return self._ok_json(e is None)
            if e is not None:
                del self._kv[key]          # a tombstone keeps the index moving
                self._touch_key(key, idx)
            return self._ok_json(True)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    consul = None  # set per server

    def log_message(self, fmt, *args):
        pass

    def setup(self):
        super().setup()
        with self.consul._lock:
            self.consul._conns.add(self.connection)

    def finish(self):
        try:
            super().finish()
        finally:
            with self.consul._lock:
                self.consul._conns.discard(self.connection)

    def _read_body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return out
                out += self.rfile.read(size)
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _handle(self):
        c = self.consul
        body = self._read_body()
        headers = {k.lower(): v for k, v in self.headers.items()}
        with c._lock:
            c._requests.append((self.command, self.path, dict(self.headers.items()), body))
            hanging, release = c._hang, c._hang_release
            fail = None
            if not hanging:
                i = next((i for i, f in enumerate(c._fail)
                          if (f[2] is None or self.path.startswith(f[2])) and
                          (f[3] is None or self.command == f[3])), None)
                fail = c._fail.pop(i) if i is not None else None
            hold = None
            if not hanging and fail is None:
                j = next((j for j, h in enumerate(c._holds) if h.matches(self.command, self.path)),
                         None)
                hold = c._holds.pop(j) if j is not None else None
        if hold is not None:
            hold.arrived.set()
            while not hold._go.wait(0.1) and not c._stopping.is_set():
                pass
        if hanging:
            release.wait()
            self.close_connection = True
            return
        if fail is not None:
            status, hdrs, out = fail[0], [], fail[1].encode() if isinstance(fail[1], str) else fail[1]
        else:
            status, hdrs, out = c.dispatch(self.command, self.path, headers, body)
        try:
            self.send_response(status)
            for k, v in hdrs:
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)
        except OSError:
            self.close_connection = True

    do_GET = do_PUT = do_DELETE = do_POST = do_PATCH = _handle


if __name__ == "__main__":
    import sys
    srv = ConsulServer(token=sys.argv[1] if len(sys.argv) > 1 else None).start()
    print(json.dumps({"addr": srv.addr}), flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        srv.stop()
