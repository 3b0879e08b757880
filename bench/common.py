"""Shared plumbing for the benchmark: paths, the S3 test server, configs, tools.

Everything here is stdlib; the only outside programs are the ones the project
already depends on (node + s3rver, Litestream v0.3.13, lz4, curl, sqlite3).
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
WORK = os.path.join(BENCH, "work")
RESULTS = os.path.join(BENCH, "results")
NODE_MODULES = os.path.join(ROOT, "tests", "node_modules")
LITESTREAM = os.path.join(NODE_MODULES, "@flydotio", "litestream-linux-x64", "litestream")
S3_LAUNCHER = os.path.join(ROOT, "tests", "tools", "s3server.js")
PYTHON = "/usr/bin/python3"
BUCKET = "bench"


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fresh_dir(path):
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    return path


def wait_for(pred, timeout, interval=0.02):
    """Poll pred() until it returns something truthy or timeout passes."""
    end = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= end:
            return None
        time.sleep(interval)


def stop(proc, sig=signal.SIGTERM, timeout=30):
    """Signal a child and wait for it; SIGKILL after timeout. Returns rusage or None."""
    if proc.poll() is not None:
        return None
    try:
        proc.send_signal(sig)
    except ProcessLookupError:
        return None
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return ru
        time.sleep(0.01)
    proc.kill()
    _, status, ru = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return ru


class S3Server:
    """The S3 test server (s3rver) on a free 127.0.0.1 port with its own store dir.

    Started through the project's launcher tests/tools/s3server.js (SigV4
    verified, s3rver's listing/delete bugs patched). Objects end up as files
    under store/<bucket>/<key>._S3rver_object (+ .metadata.json written last),
    which is what the lag measurement reads.
    """

    def __init__(self, workdir):
        self.store = fresh_dir(os.path.join(workdir, "s3store"))
        self.port = None
        self.access_key = self.secret_key = None
        self.region = "us-east-1"
        self.proc = None
        self.logf = open(os.path.join(workdir, "s3server.log"), "w")

    def start(self):
        if not os.path.exists(S3_LAUNCHER):
            raise RuntimeError(f"{S3_LAUNCHER} missing: the S3 test server launcher is needed")
        self.access_key, self.secret_key = "benchkey", "benchsecret0123456789"
        # DES for s3rver's ListObjectsV2 paging lives in OpenSSL 3's legacy provider
        args = ["node", "--openssl-legacy-provider", S3_LAUNCHER, "--dir", self.store, "--access-key", self.access_key,
                "--secret-key", self.secret_key, "--port", "0", "--bucket", BUCKET]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=self.logf, text=True)
        line = self.proc.stdout.readline()
        try:
            self.port = int(json.loads(line)["port"])
        except (ValueError, KeyError, TypeError):
            stop(self.proc)
            raise RuntimeError(f"S3 launcher did not print its ready line: {line!r} "
                               "(see bench/work/s3server.log)")
        if not wait_for(self._listening, 20, 0.05):
            raise RuntimeError("S3 test server not ready (see bench/work/s3server.log)")
        return self

    def _listening(self):
        if self.proc.poll() is not None:
            raise RuntimeError("s3rver exited (see bench/work/s3server.log)")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return os.path.isdir(os.path.join(self.store, BUCKET))
        except OSError:
            return False

    @property
    def endpoint(self):
        return f"http://127.0.0.1:{self.port}"

    def prefix_dir(self, prefix):
        """Directory in the store that holds the objects under key prefix."""
        return os.path.join(self.store, BUCKET, prefix)

    def close(self):
        if self.proc:
            stop(self.proc)
        self.logf.close()


def write_config(path, db, file_replica=None, s3=None, s3_prefix=None, sync_interval="1s",
                 snapshot_interval=None, extra_db=""):
    """litestream.yml (v0.3 schema) that both tools read; either replica may be omitted."""
    lines = ["dbs:", f"  - path: {db}"]
    if extra_db:
        lines.append(extra_db)
    lines.append("    replicas:")
    if file_replica:
        lines += ["      - type: file", "        name: file", f"        path: {file_replica}",
                  f"        sync-interval: {sync_interval}"]
        if snapshot_interval:
            lines.append(f"        snapshot-interval: {snapshot_interval}")
    if s3:
        lines += ["      - type: s3", "        name: s3", f"        bucket: {BUCKET}",
                  f"        path: {s3_prefix}", f"        endpoint: {s3.endpoint}",
                  f"        region: {s3.region}", "        force-path-style: true",
                  f"        access-key-id: {s3.access_key}",
                  f"        secret-access-key: {s3.secret_key}",
                  f"        sync-interval: {sync_interval}"]
        if snapshot_interval:
            lines.append(f"        snapshot-interval: {snapshot_interval}")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


class Tool:
    """One replicator under test: how to start replicate and restore, and whether it can."""

    def __init__(self, name, binary):
        self.name = name
        self.binary = binary
        self.missing = {}

    def available(self, command):
        """None if `<bin> <command>` exists, else the reason it is not measurable."""
        if command in self.missing:
            return self.missing[command]
        why = None
        if not self.binary or not os.access(self.binary, os.X_OK):
            why = f"n/a: {self.name} binary not found"
        else:
            try:
                r = subprocess.run([self.binary, command, "-help"], capture_output=True,
                                   text=True, timeout=10)
                out = r.stdout + r.stderr
                if "unknown command" in out.lower() or r.returncode == 127:
                    why = f"n/a: `{self.name} {command}` not available in this build"
            except (OSError, subprocess.TimeoutExpired) as e:
                why = f"n/a: {self.name} {command} -help failed: {e}"
        self.missing[command] = why
        return why

    def replicate_cmd(self, config):
        return [self.binary, "replicate", "-config", config]

    def restore_cmd(self, config, out, db):
        return [self.binary, "restore", "-config", config, "-o", out, db]


def make_tools(litevisor_bin):
    return [Tool("Litestream", LITESTREAM), Tool("litevisor", litevisor_bin)]
