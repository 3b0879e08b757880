"""Shared pytest fixtures: the litevisor binary and the pinned test peers."""
import json
import os
import select
import shutil
import socket
import subprocess

import pytest

TESTS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TESTS)
NODE_MODULES = os.path.join(TESTS, "node_modules")
LITESTREAM = os.path.join(NODE_MODULES, "@flydotio", "litestream-linux-x64", "litestream")


def free_port(host="127.0.0.1"):
    """A TCP port that was free on host a moment ago."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def kuma_stand_in(unquote=False):
    """An Uptime-Kuma push endpoint on loopback: answers every GET 200 {"ok":true} and
    records its path (percent-decoded with unquote) in got. Returns (server, got);
    server.server_port is its port; server.shutdown() ends it."""
    import threading
    import urllib.parse
    from http.server import BaseHTTPRequestHandler, HTTPServer
    got = []

    class Kuma(BaseHTTPRequestHandler):
        def do_GET(self):
            got.append(urllib.parse.unquote(self.path) if unquote else self.path)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b'{"ok":true}')

        def log_message(self, *a):
            pass

    server = HTTPServer(("127.0.0.1", 0), Kuma)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, got


def faulty_env(**fault):
    """Environment loading tests/tools/preload/faultinject.c with FAULT_<KEY>=value."""
    tools = os.environ.get("LITEVISOR_TOOLS_DIR") or os.path.join(ROOT, "build", "tests",
                                                                  "tools")
    return dict(os.environ, LD_PRELOAD=os.path.join(tools, "faultinject.so"),
                ASAN_OPTIONS="verify_asan_link_order=0",
                **{f"FAULT_{k.upper()}": str(v) for k, v in fault.items()})


@pytest.fixture(scope="session")
def litevisor_bin():
    path = os.environ.get("LITEVISOR_BIN") or os.path.join(ROOT, "litevisor")
    assert os.access(path, os.X_OK), f"build litevisor first ({path})"
    return path


@pytest.fixture(scope="session")
def litestream_bin():
    assert os.access(LITESTREAM, os.X_OK), "run scripts/deps.sh (npm ci in tests/)"
    return LITESTREAM


@pytest.fixture(scope="session")
def sqlite3_cli():
    path = shutil.which("sqlite3")
    assert path, "sqlite3 CLI missing: run scripts/deps.sh"
    return path


# ---- S3 test server (tests/tools/s3server.js: s3rver 4.0.4 with two fixes) ----

S3SERVER_JS = os.path.join(TESTS, "tools", "s3server.js")


class S3Server:
    """One running s3rver: endpoint, bucket and the credentials it accepts."""

    def __init__(self, proc, endpoint, port, bucket, key, secret, directory):
        self.proc, self.endpoint, self.port = proc, endpoint, port
        self.bucket, self.key, self.secret, self.directory = bucket, key, secret, directory

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for f in (self.proc.stdout, self.proc.stderr):
            if f:
                f.close()
        shutil.rmtree(self.directory, ignore_errors=True)


@pytest.fixture
def s3server(tmp_path_factory):
    """Factory: s3server(bucket=..., fix_list/fix_delete/fix_escape=True,
    tls=(keyfile, certfile) for HTTPS) starts one
    s3rver on a free 127.0.0.1 port with its own temp dir and the bucket
    created; every server started is stopped and its dir removed afterwards."""
    started = []

    def start(bucket="litevisor", key="AKIDLITEVISORTEST", secret="litevisor/test+secret",
              fix_list=True, fix_delete=True, fix_escape=True, tls=None):
        directory = str(tmp_path_factory.mktemp("s3rver"))
        cmd = ["node", "--openssl-legacy-provider", S3SERVER_JS, "--port", "0", "--dir", directory,
               "--access-key", key, "--secret-key", secret, "--bucket", bucket]
        if not fix_list:
            cmd.append("--no-fix-list")
        if not fix_delete:
            cmd.append("--no-fix-delete")
        if not fix_escape:
            cmd.append("--no-fix-escape")
        if tls:
            cmd += ["--tls-key", tls[0], "--tls-cert", tls[1]]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        ready, _, _ = select.select([proc.stdout], [], [], 20)
        line = proc.stdout.readline() if ready else ""
        if not line.startswith("{"):
            proc.kill()
            err = proc.stderr.read()
            raise RuntimeError(f"s3server.js did not start: {line!r} {err}")
        info = json.loads(line)
        srv = S3Server(proc, info["endpoint"], info["port"], bucket, key, secret, directory)
        started.append(srv)
        return srv

    yield start
    for srv in started:
        srv.stop()
