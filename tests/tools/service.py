#!/usr/bin/python3
"""A stand-in service for tests/test_run.py: records signals, makes orphans,
ignores TERM, serves a readiness URL, dumps its environment — as asked by flags."""
import argparse
import json
import os
import signal
import sys
import threading
import time

# CONT only with --trap CONT: litevisor sends one after every stop signal (lifecycle.c).
NAMES = {getattr(signal, "SIG" + n): n for n in
         ("HUP", "INT", "QUIT", "TERM", "USR1", "USR2", "WINCH")}


def append(path, line):
    with open(path, "a") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())


def make_orphans(n, pids_file, life):
    """Double-fork n grandchildren that outlive their parent, then exit."""
    for _ in range(n):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            gpid = os.fork()
            if gpid == 0:
                os.close(w)
                time.sleep(life)
                os._exit(3)
            os.write(w, str(gpid).encode())
            os._exit(0)
        os.close(w)
        gpid = int(os.read(r, 32).decode())
        os.close(r)
        os.waitpid(pid, 0)
        append(pids_file, str(gpid))


def serve(port, go_file):
    from http.server import BaseHTTPRequestHandler, HTTPServer

    class H(BaseHTTPRequestHandler):
        def do_GET(self):
            ok = go_file is None or os.path.exists(go_file)
            self.send_response(200 if ok else 500)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b'{"status":"OK"}' if ok else b'{"status":"starting"}')

        def log_message(self, *a):
            pass

    HTTPServer(("127.0.0.1", port), H).serve_forever()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--record")
    p.add_argument("--ready")
    p.add_argument("--term-exit", type=int, default=0)
    p.add_argument("--ignore-term", action="store_true")
    p.add_argument("--orphans", type=int, default=0)
    p.add_argument("--orphan-life", type=float, default=0.2)
    p.add_argument("--pids")
    p.add_argument("--env")
    p.add_argument("--serve", type=int)
    p.add_argument("--go")
    p.add_argument("--count")
    p.add_argument("--fail-until", type=int, default=0)
    p.add_argument("--busy", action="store_true")
    p.add_argument("--sleep", type=float, default=60)
    p.add_argument("--exit", type=int)
    p.add_argument("--trap", action="append", default=[],
                   help="also record this signal: ALRM, PWR, RTMIN+5… (repeatable)")
    a = p.parse_args()
    for name in a.trap:
        base, _, off = name.partition("+")
        NAMES[getattr(signal, "SIG" + base) + int(off or 0)] = name

    if a.count:
        n = int(open(a.count).read()) if os.path.exists(a.count) else 0
        with open(a.count, "w") as f:
            f.write(str(n + 1))
        if n + 1 < a.fail_until:
            sys.exit(1)
    if a.env:
        with open(a.env + ".tmp", "w") as f:
            json.dump(dict(os.environ), f)
        os.rename(a.env + ".tmp", a.env)
    if a.exit is not None:
        sys.exit(a.exit)

    def on_signal(sig, frame):
        if a.record:
            append(a.record, NAMES.get(sig, str(sig)))
        if sig in (signal.SIGTERM, signal.SIGINT) and not a.ignore_term:
            os._exit(a.term_exit)

    for sig in NAMES:
        if sig == signal.SIGTERM and a.ignore_term:
            signal.signal(sig, signal.SIG_IGN)
        else:
            signal.signal(sig, on_signal)
    if a.orphans:
        make_orphans(a.orphans, a.pids, a.orphan_life)
    if a.serve:
        threading.Thread(target=serve, args=(a.serve, a.go), daemon=True).start()
    if a.busy:
        def spin():
            x = 0
            while True:
                x += 1
        threading.Thread(target=spin, daemon=True).start()
    if a.ready:
        append(a.ready, str(os.getpid()))
    deadline = time.monotonic() + a.sleep
    while time.monotonic() < deadline:
        time.sleep(0.05)
    sys.exit(0)


if __name__ == "__main__":
    main()
