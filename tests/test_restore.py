"""Restore (issue 5): choosing the freshest replica, fallback, verification,
point-in-time, the existing-database policies, and the listing commands.

Replicas are real: written by Litestream v0.3.13 from a database another
process writes, or built here object by object from a real SQLite WAL (so
mtimes, gaps and corruption can be placed exactly). Unreachable peers are
real sockets: a closed port (refused) and a listener that never answers.
"""
import json
import os
import re
import shutil
import socket
import signal
import sqlite3
import struct
import subprocess
import threading
import time

import pytest

from conftest import faulty_env, free_port, kuma_stand_in
from test_replicate import ListHider, with_body

TOOLS = os.environ.get("LITEVISOR_TOOLS_DIR") or os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "build", "tests", "tools")
GEN = "0123456789abcdef"
GEN2 = "fedcba9876543210"


# ---------------------------------------------------------------- helpers

def lz4(data):
    return subprocess.run(["lz4", "-z", "-c", "-q"], input=data, capture_output=True,
                          check=True).stdout


def rows(path):
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return con.execute("SELECT id, v FROM t ORDER BY id").fetchall()
    finally:
        con.close()


def journal_mode(path):
    con = sqlite3.connect(path)
    try:
        return con.execute("PRAGMA journal_mode").fetchone()[0]
    finally:
        con.close()


class History:
    """A database's history as Litestream v0.3 objects of one generation.

    plan: one list per WAL index, each a list of segments, each a list of
    transactions (rows inserted by each). After every segment, states holds
    (index, end offset, rows) so a test knows what each position contains.
    """

    def __init__(self, tmp, plan, initial=20, payload=300):
        self.dir = os.path.join(str(tmp), "history")
        os.makedirs(self.dir, exist_ok=True)
        db = os.path.join(self.dir, "src.db")
        con = sqlite3.connect(db, isolation_level=None)
        con.execute("PRAGMA journal_mode=wal")
        con.execute("PRAGMA wal_autocheckpoint=0")
        con.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
        n = 0

        def insert(k):
            nonlocal n
            con.execute("BEGIN")
            for _ in range(k):
                n += 1
                con.execute("INSERT INTO t(id, v) VALUES(?, ?)", (n, f"row-{n}-" + "x" * payload))
            con.execute("COMMIT")

        insert(initial)
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        with open(db, "rb") as f:
            self.snapshot = f.read()
        self.snapshot_rows = con.execute("SELECT id, v FROM t ORDER BY id").fetchall()
        self.segments = []  # (index, offset, plain bytes)
        self.states = []    # (index, end offset, rows)
        for idx, segs in enumerate(plan):
            if idx > 0:
                con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            done = 0
            for seg in segs:
                for k in seg:
                    insert(k)
                with open(db + "-wal", "rb") as f:
                    wal = f.read()
                self.segments.append((idx, done, wal[done:]))
                done = len(wal)
                self.states.append((idx, done,
                                    con.execute("SELECT id, v FROM t ORDER BY id").fetchall()))
        con.close()

    def write(self, root, gen=GEN, upto=None, t0=None, step=10, skip=(), closed=True):
        """Write the objects into a file replica at root; object i gets mtime
        t0 + i*step (snapshot first). upto: only the first N segments.
        closed: as a node that stopped cleanly there leaves it, with the
        closed mark at the end (replication may continue it after a restore)."""
        t0 = t0 or time.time() - 3600
        base = os.path.join(root, "generations", gen)
        os.makedirs(os.path.join(base, "snapshots"), exist_ok=True)
        os.makedirs(os.path.join(base, "wal"), exist_ok=True)
        snap = os.path.join(base, "snapshots", "00000000.snapshot.lz4")
        with open(snap, "wb") as f:
            f.write(lz4(self.snapshot))
        os.utime(snap, (t0, t0))
        times = {}
        for i, (idx, off, data) in enumerate(self.segments[:upto]):
            if (idx, off) in skip:
                continue
            p = os.path.join(base, "wal", f"{idx:08x}_{off:08x}.wal.lz4")
            with open(p, "wb") as f:
                f.write(lz4(data))
            t = t0 + (i + 1) * step
            os.utime(p, (t, t))
            times[(idx, off)] = t
        if closed and self.segments[:upto]:
            idx, off, data = self.segments[:upto][-1]
            os.makedirs(os.path.join(base, "closed"), exist_ok=True)
            open(os.path.join(base, "closed", f"{idx:08x}_{off + len(data):08x}"), "wb").close()
        return times

    def seg_path(self, root, i, gen=GEN):
        idx, off, _ = self.segments[i]
        return os.path.join(root, "generations", gen, "wal", f"{idx:08x}_{off:08x}.wal.lz4")


def write_config(path, db, replicas, restore=None):
    lines = []
    if restore:
        lines.append("restore:")
        lines += [f"  {k}: {v}" for k, v in restore.items()]
    lines += ["dbs:", f"  - path: {db}", "    replicas:"]
    for r in replicas:
        lines.append(f"      - name: {r['name']}")
        for k, v in r.items():
            if k != "name":
                lines.append(f"        {k}: {v}")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def lv(binary, *args, timeout=60):
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=timeout)


def restore_a_b(binary, tmp_path, a, b, *args):
    """restore (args) of app.db from file replicas A (a) and B (b) in a config, into a
    new file; returns (the process, its output path)."""
    cfg = write_config(tmp_path / "lv.yml", tmp_path / "app.db",
                       [{"name": "A", "url": f"file://{a}"}, {"name": "B", "url": f"file://{b}"}])
    out = tmp_path / f"out-{time.monotonic_ns()}.db"
    return lv(binary, "restore", "-config", str(cfg), *args, "-o", str(out),
              str(tmp_path / "app.db")), out


def candidate_line(stderr, name):
    for line in stderr.splitlines():
        if "candidate" in line and f"name={name} " in line:
            return line
    return ""


def dir_leftovers(d, keep):
    return sorted(set(os.listdir(d)) - set(keep))


class Blackhole:
    """A TCP listener that accepts connections (backlog) and never answers."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]

    def close(self):
        self.sock.close()


def s3_unreachable(name, port):
    return {"name": name, "type": "s3", "bucket": "b", "path": "db",
            "endpoint": f"http://127.0.0.1:{port}", "access-key-id": "k",
            "secret-access-key": "s"}


# ---------------------------------------------------------------- fixtures

@pytest.fixture
def history(tmp_path):
    # index 0: two segments; index 1: two segments; index 2: one segment
    return History(tmp_path, [[[5, 5], [7]], [[4], [3, 2]], [[6]]])


# ---------------------------------------------------------------- tests

def test_litestream_written_replica_restores_equal_single_file(tmp_path, litevisor_bin,
                                                               litestream_bin):
    src = tmp_path / "app.db"
    rep = tmp_path / "rep"
    con = sqlite3.connect(src, isolation_level=None)
    con.execute("PRAGMA journal_mode=wal")
    con.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    con.executemany("INSERT INTO t(v) VALUES(?)", [(os.urandom(200).hex(),) for _ in range(300)])
    con.close()
    cfg = tmp_path / "ls.yml"
    cfg.write_text(f"dbs:\n  - path: {src}\n    monitor-interval: 100ms\n    replicas:\n"
                   f"      - url: file://{rep}\n        sync-interval: 100ms\n")
    ls = subprocess.Popen([litestream_bin, "replicate", "-config", str(cfg)],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 20
        while time.time() < deadline and not list(rep.glob("generations/*/snapshots/*")):
            time.sleep(0.1)
        assert list(rep.glob("generations/*/snapshots/*")), "litestream made no snapshot"
        # more writes from a separate connection while Litestream replicates
        con = sqlite3.connect(src, isolation_level=None)
        con.execute("PRAGMA busy_timeout=5000")
        for i in range(5):
            con.execute("INSERT INTO t(v) VALUES(?)", (f"late-{i}",))
            time.sleep(0.15)
        con.close()
    finally:
        ls.terminate()  # Litestream's shutdown flush syncs every replica
        ls.wait(timeout=20)
    out = tmp_path / "out" / "restored.db"  # its directory does not exist yet
    p = lv(litevisor_bin, "restore", "-o", str(out), f"file://{rep}")
    assert p.returncode == 0, p.stderr
    assert rows(out) == rows(src)
    assert journal_mode(out) == "delete"
    assert dir_leftovers(out.parent, ["restored.db"]) == []  # no -wal, -shm or temp files
    assert "WINNER" in p.stderr
    # Litestream restores the same replica to the same content (interop)
    out2 = tmp_path / "out" / "by-litestream.db"
    q = subprocess.run([litestream_bin, "restore", "-o", str(out2), f"file://{rep}"],
                       capture_output=True, text=True, timeout=60)
    assert q.returncode == 0, q.stderr
    assert rows(out2) == rows(out)


def litestream_replicate_once(litestream_bin, cfg, env, done):
    """Run `litestream replicate` until done() or 20 s, then stop it (its stop flushes).

    done() must wait for Litestream's first sync to finish: stopped while a WAL segment
    uploads to S3, Litestream 0.3.13 hangs for good (its upload gives up on the cancelled
    context and the LZ4 writer blocks on a pipe nobody reads). Should it hang all the
    same, it is killed: what done() saw is complete, and the restores below check it."""
    ls = subprocess.Popen([litestream_bin, "replicate", "-config", str(cfg)], env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 20
        while time.time() < deadline and not done():
            time.sleep(0.1)
    finally:
        ls.terminate()
        try:
            _, err = ls.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            ls.kill()
            _, err = ls.communicate(timeout=20)
    assert done(), err


def first_sync_done(root, scheme):
    """A complete snapshot and a complete WAL segment under root (a generations/ directory
    of a file replica, or of the S3 test server's store: s3rver writes an object's
    metadata file after its content)."""
    end = "._S3rver_metadata.json" if scheme == "s3" else ".lz4"
    seen = set()
    for d, _, files in os.walk(root):
        for f in files:
            if f.endswith(end):
                rel = os.path.relpath(os.path.join(d, f), root).split(os.sep)
                if len(rel) >= 3:
                    seen.add(rel[1])
    return {"snapshots", "wal"} <= seen


# Litestream v0.3.13 reads a replica URL with Go's net/url: an s3:// prefix is the
# decoded path without query (it reads no query parameter) or fragment; a file://
# directory keeps escapes, query and fragment as written. The same URL must lead
# litevisor to what Litestream wrote, or `run` would start on an empty database.
@pytest.mark.parametrize("scheme,tail,where", [
    ("s3", "app?region=eu-west-1&endpoint=http://127.0.0.1:9&forcePathStyle=false", "app"),
    ("s3", "x%41y", "xAy"),
    ("s3", "db#main", "db"),
    ("s3", "a/./b/../c%20d/", "a/c d"),
    ("file", "x%41y", "x%41y"),
    ("file", "q?x=1#frag", "q?x=1#frag"),
    ("file", "a b/../c", "c"),
])
def test_replica_url_leads_where_litestream_wrote(tmp_path, litevisor_bin, litestream_bin,
                                                  s3server, scheme, tail, where):
    src = tmp_path / "app.db"
    con = sqlite3.connect(src, isolation_level=None)
    con.execute("PRAGMA journal_mode=wal")
    con.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    con.executemany("INSERT INTO t(v) VALUES(?)", [(f"row-{i}",) for i in range(50)])
    con.close()
    env = dict(os.environ)
    if scheme == "s3":
        srv = s3server()
        url = f"s3://{srv.bucket}.localhost:{srv.port}/{tail}"
        env.update(AWS_ACCESS_KEY_ID=srv.key, AWS_SECRET_ACCESS_KEY=srv.secret)
        root = os.path.join(srv.directory, srv.bucket, *where.split("/"), "generations")
    else:
        url = f"file://{tmp_path}/rep/{tail}"
        root = os.path.join(tmp_path, "rep", where, "generations")
    cfg = tmp_path / "ls.yml"
    cfg.write_text(f"dbs:\n  - path: {src}\n    replicas:\n      - url: \"{url}\"\n")
    litestream_replicate_once(litestream_bin, cfg, env, lambda: first_sync_done(root, scheme))
    # by URL, and through a config naming the same URL for another database path
    out = tmp_path / "by-url.db"
    p = subprocess.run([litevisor_bin, "restore", "-o", str(out), url], env=env,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert rows(out) == rows(src)
    db = tmp_path / "service.db"
    lvcfg = tmp_path / "lv.yml"
    lvcfg.write_text(f"dbs:\n  - path: {db}\n    replicas:\n      - url: \"{url}\"\n")
    p = subprocess.run([litevisor_bin, "restore", "-config", str(lvcfg), str(db)], env=env,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert rows(db) == rows(src)


def test_point_in_time_by_index_and_timestamp(tmp_path, litevisor_bin, history):
    rep = tmp_path / "rep"
    t0 = int(time.time()) - 7200 + 0.512345
    times = history.write(str(rep), t0=t0, step=100)
    url = f"file://{rep}"
    last_of = {}
    for idx, off, r in history.states:
        last_of[idx] = r
    for idx in (0, 1, 2):
        out = tmp_path / f"idx{idx}.db"
        p = lv(litevisor_bin, "restore", "-index", f"{idx:x}", "-o", str(out), url)
        assert p.returncode == 0, p.stderr
        assert rows(out) == last_of[idx], f"index {idx}"
    # an index past the end is an error (Litestream silently restores to the end)
    out = tmp_path / "past.db"
    p = lv(litevisor_bin, "restore", "-index", "3", "-o", str(out), url)
    assert p.returncode == 1
    assert "past the end" in p.stderr
    assert not out.exists()
    # timestamps: between the 3rd and 4th segment → state after the 3rd
    ts = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t0 + 3 * 100 + 50))
    out = tmp_path / "ts.db"
    p = lv(litevisor_bin, "restore", "-timestamp", ts, "-o", str(out), url)
    assert p.returncode == 0, p.stderr
    assert rows(out) == history.states[2][2]
    assert len(times) == len(history.segments)
    # before the snapshot: nothing matches
    ts = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t0 - 100))
    p = lv(litevisor_bin, "restore", "-timestamp", ts, "-o", str(tmp_path / "none.db"), url)
    assert p.returncode == 1, p.stderr
    # a bad timestamp is a usage error
    p = lv(litevisor_bin, "restore", "-timestamp", "yesterday", "-o", str(tmp_path / "x.db"), url)
    assert p.returncode == 100
    # the time `wal` lists for a segment restores up to that segment, itself included
    # (listed in milliseconds, an object stamped .512345 was left out: QA17)
    p = lv(litevisor_bin, "wal", url)
    assert p.returncode == 0, p.stderr
    listed = [l.split() for l in p.stdout.splitlines()[1:]]
    assert len(listed) == len(history.segments), p.stdout
    for k in (2, 3):
        out = tmp_path / f"listed{k}.db"
        p = lv(litevisor_bin, "restore", "-timestamp", listed[k][-1], "-o", str(out), url)
        assert p.returncode == 0, p.stderr
        assert rows(out) == history.states[k][2], listed[k]


def test_timestamp_whose_snapshot_retention_removed_matches_nothing(tmp_path, litevisor_bin,
                                                                     history):
    """Retention removed every snapshot at or before the timestamp while WAL from before it
    remains: the state then is gone for good. That exited 111 ("retrying may help", a
    restore script loops on it) where Litestream exits 1, no matching backups (QA43 #6)."""
    rep = tmp_path / "rep"
    t0 = int(time.time()) - 7200
    history.write(str(rep), t0=t0, step=100)
    snaps = rep / "generations" / GEN / "snapshots"
    later = snaps / "00000002.snapshot.lz4"
    (snaps / "00000000.snapshot.lz4").rename(later)  # only a later snapshot is left
    os.utime(later, (t0 + 1000, t0 + 1000))
    ts = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t0 + 150))
    out = tmp_path / "out.db"
    p = lv(litevisor_bin, "restore", "-timestamp", ts, "-o", str(out), f"file://{rep}")
    assert p.returncode == 1, p.stderr
    assert "no snapshot at or before it (retention removed it" in p.stderr, p.stderr
    assert not out.exists()


def at_text(t):
    """t (epoch seconds, maybe fractional) as RFC 3339 with nanoseconds."""
    whole = int(t)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + \
        ".%09dZ" % round((t - whole) * 1e9)


def turns(tmp_path):
    """Two histories for two writers taking turns on one replica: litevisor's (G1, the
    fixture's five segments) and Litestream's (GEN2, two segments), as sources."""
    return (History(tmp_path / "h1", [[[5, 5], [7]], [[4], [3, 2]], [[6]]]),
            History(tmp_path / "h2", [[[9], [8]]], initial=40))


def test_timestamp_across_replicas_takes_the_generation_written_then(tmp_path, litevisor_bin):
    """Litestream wrote to replica B only for a while (a roll-back), litevisor then went on
    in G1 on A and B. -timestamp inside Litestream's window picked a replica's generation
    by its newest object overall, written after the timestamp: litevisor's older state,
    exit 0 (QA65 D1). The time at or before the timestamp decides between replicas too."""
    g1, ls = turns(tmp_path)
    base = time.time() - 7200
    a, b = tmp_path / "A", tmp_path / "B"
    g1.write(str(a), t0=base, step=100)           # snapshot at base, segments +100 … +500
    g1.write(str(b), t0=base, step=100)
    ls.write(str(b), gen=GEN2, t0=base + 110, step=20)  # Litestream: base+110 … +150
    p, out = restore_a_b(litevisor_bin, tmp_path, a, b, "-timestamp", at_text(base + 160))
    assert p.returncode == 0, p.stderr
    assert rows(out) == ls.states[-1][2], p.stderr
    assert "generation=" + GEN2 in p.stderr, p.stderr


def test_segments_past_the_timestamp_elsewhere_are_not_weighed_again(tmp_path, litevisor_bin,
                                                                    history):
    """B lists the generation's segments but no snapshot at or before the timestamp (its
    snapshot taken later): it has no plan there, and its segments after the timestamp made
    the restore probe every replica again for that generation, log "another candidate
    holds more of the newest generation", and come to the same result (QA125). Only the
    segments a restore to the timestamp could apply count."""
    base = time.time() - 7200
    a, b = tmp_path / "A", tmp_path / "B"
    history.write(str(a), t0=base, step=100)   # snapshot at base, segments +100 … +500
    history.write(str(b), t0=base, step=100)
    for f in (b / "generations" / GEN / "snapshots").iterdir():
        os.utime(f, (base + 300, base + 300))
    p, out = restore_a_b(litevisor_bin, tmp_path, a, b, "-timestamp", at_text(base + 250))
    assert p.returncode == 0, p.stderr
    assert rows(out) == history.states[1][2], p.stderr
    assert "holds more of the newest generation" not in p.stderr, p.stderr
    # without a timestamp both end at the same place
    p, out = restore_a_b(litevisor_bin, tmp_path, a, b)
    assert p.returncode == 0, p.stderr
    assert rows(out) == history.states[-1][2], p.stderr


def test_timestamp_in_a_generation_whose_snapshot_was_rewritten_later(tmp_path, litevisor_bin):
    """Litestream's snapshot-interval rewrites its snapshot under one name: its generation
    holds WAL from before the timestamp and only a later snapshot. The state then is gone:
    exit 1; litevisor's state from before Litestream's window was restored with exit 0,
    its generation being the newest overall (QA65 D2). And a timestamp inside litevisor's
    own later window was refused because Litestream's generation was newer overall, its
    WAL reaching back before it (QA65 D5): the generation written at the timestamp
    decides both."""
    g1, ls = turns(tmp_path)
    base = time.time() - 7200
    rep = tmp_path / "rep"
    g1.write(str(rep), t0=base, step=100)
    ls.write(str(rep), gen=GEN2, t0=base + 110, step=20)
    snap = rep / "generations" / GEN2 / "snapshots" / "00000000.snapshot.lz4"
    out = tmp_path / "out.db"

    os.utime(snap, (base + 300, base + 300))  # rewritten in Litestream's window, after T
    p = lv(litevisor_bin, "restore", "-timestamp", at_text(base + 160), "-o", str(out),
           f"file://{rep}")
    assert p.returncode == 1 and not out.exists(), p.stderr
    assert f"generation {GEN2}, the one written at the timestamp" in p.stderr, p.stderr
    assert f"-generation {GEN}" in p.stderr, p.stderr

    os.utime(snap, (base + 600, base + 600))  # Litestream came back after litevisor's window
    p = lv(litevisor_bin, "restore", "-timestamp", at_text(base + 450), "-o", str(out),
           f"file://{rep}")
    assert p.returncode == 0, p.stderr
    assert rows(out) == g1.states[3][2], p.stderr


def test_timestamp_in_the_second_of_a_switch_takes_the_generation_started_then(
        tmp_path, litevisor_bin):
    """S3 keeps whole seconds: litevisor's last object and Litestream's first ones in the
    second of a handover tie at a timestamp within it. The tie went to the generation
    newest overall (litevisor went on later), dropping Litestream's commits stored by
    then, without a warning (QA65 D3). The one that started later is the successor, and
    the tie is said to be ambiguous."""
    g1, ls = turns(tmp_path)
    base = int(time.time()) - 7200
    rep = tmp_path / "rep"
    g1.write(str(rep), t0=base, step=100)       # a segment at base+100, the next at +200
    ls.write(str(rep), gen=GEN2, t0=base + 100, step=0)  # all of it in that second
    out = tmp_path / "out.db"
    p = lv(litevisor_bin, "restore", "-timestamp", at_text(base + 100.5), "-o", str(out),
           f"file://{rep}")
    assert p.returncode == 0, p.stderr
    assert rows(out) == ls.states[-1][2], p.stderr
    assert "ambiguous" in p.stderr, p.stderr


def test_index_past_the_newest_generation_is_an_error_with_an_older_one_elsewhere(
        tmp_path, litevisor_bin):
    """-index past the end of the newest generation is an error; with a second replica
    holding only an older generation that reaches the index, that one was restored,
    exit 0 (QA65 D4)."""
    g1, ls = turns(tmp_path)
    base = time.time() - 7200
    a, b = tmp_path / "A", tmp_path / "B"
    g1.write(str(a), t0=base, step=10)
    g1.write(str(b), t0=base, step=10)
    ls.write(str(a), gen=GEN2, t0=base + 100, step=10)  # newer, index 0 only
    cfg = write_config(tmp_path / "lv.yml", tmp_path / "app.db",
                       [{"name": "A", "url": f"file://{a}"}, {"name": "B", "url": f"file://{b}"}])
    out = tmp_path / "out.db"
    p = lv(litevisor_bin, "restore", "-config", str(cfg), "-index", "00000002", "-o", str(out),
           str(tmp_path / "app.db"))
    assert p.returncode == 1 and not out.exists(), p.stderr
    assert f"index 00000002 is past the end of generation {GEN2}" in p.stderr, p.stderr
    p = lv(litevisor_bin, "restore", "-config", str(cfg), "-generation", GEN, "-index",
           "00000002", "-o", str(out), str(tmp_path / "app.db"))
    assert p.returncode == 0 and rows(out) == g1.states[-1][2], p.stderr


def test_segments_left_behind_in_an_emptied_replica_do_not_hide_the_new_generation(
        tmp_path, litevisor_bin):
    """The replica emptied under the writer: the segments shipped into it before the loss
    was seen form a generation without a snapshot, and the writer starts a new one. On S3
    (whole seconds) both can end in one second, and the one without a snapshot counted as
    the newest: "not restorable", exit 111 (QA63 #4). One that began before the other
    was left for it; one still uploading its first snapshot begins after."""
    g1, left = turns(tmp_path)
    base = int(time.time()) - 7200
    rep = tmp_path / "rep"
    g1.write(str(rep), gen=GEN2, t0=base + 60, step=10)   # the new one: base+60 … base+110
    left.write(str(rep), gen=GEN, t0=base + 50, step=0, closed=False)  # its snapshot gone
    os.unlink(rep / "generations" / GEN / "snapshots" / "00000000.snapshot.lz4")
    last = sorted(rep.glob(f"generations/{GEN}/wal/*"))[-1]
    os.utime(last, (base + 110, base + 110))               # ending in the same second
    out = tmp_path / "out.db"
    p = lv(litevisor_bin, "restore", "-o", str(out), f"file://{rep}")
    assert p.returncode == 0, p.stderr
    assert rows(out) == g1.states[-1][2], p.stderr


def test_a_newer_generation_without_a_snapshot_elsewhere_is_not_replaced_by_an_older_one(
        tmp_path, litevisor_bin):
    """Replica B's newest generation holds WAL but no snapshot (deleted, or still
    uploading), replica A only the older one: with B alone the restore fails (111), but
    with both A's older state was restored, exit 0, by restore and run alike (QA66 D2)."""
    g1, g2 = turns(tmp_path)
    base = time.time() - 7200
    a, b = tmp_path / "A", tmp_path / "B"
    g1.write(str(a), t0=base, step=10)
    g1.write(str(b), t0=base, step=10)
    g2.write(str(b), gen=GEN2, t0=base + 100, step=10, closed=False)
    os.unlink(b / "generations" / GEN2 / "snapshots" / "00000000.snapshot.lz4")
    cfg = write_config(tmp_path / "lv.yml", tmp_path / "app.db",
                       [{"name": "A", "url": f"file://{a}"}, {"name": "B", "url": f"file://{b}"}])
    out = tmp_path / "out.db"
    p = lv(litevisor_bin, "restore", "-config", str(cfg), "-o", str(out),
           str(tmp_path / "app.db"))
    assert p.returncode == 111 and not out.exists(), p.stderr
    assert f"newest generation {GEN2} has WAL but no snapshot" in p.stderr, p.stderr


def test_a_blocked_point_in_time_with_a_candidate_unreachable_may_be_retried(
        tmp_path, litevisor_bin):
    """The generation written at -timestamp lost its snapshot by then on B, C holds only the
    older one, and A did not answer (it may hold that snapshot, with longer retention):
    exit 1, "no matching backups", where a retry could find A (QA66 D1). 111 now."""
    g1, ls = turns(tmp_path)
    base = time.time() - 7200
    b, c = tmp_path / "B", tmp_path / "C"
    g1.write(str(b), t0=base, step=100)
    g1.write(str(c), t0=base, step=100)
    ls.write(str(b), gen=GEN2, t0=base + 110, step=20)
    snap = b / "generations" / GEN2 / "snapshots" / "00000000.snapshot.lz4"
    os.utime(snap, (base + 300, base + 300))
    a = tmp_path / "A"
    a.write_text("not a directory")  # a replica that fails when listed
    cfg = write_config(tmp_path / "lv.yml", tmp_path / "app.db",
                       [{"name": "A", "url": f"file://{a}"}, {"name": "B", "url": f"file://{b}"},
                        {"name": "C", "url": f"file://{c}"}],
                       restore={"mode": "all", "wait-timeout": "2s"})
    out = tmp_path / "out.db"
    p = lv(litevisor_bin, "restore", "-config", str(cfg), "-timestamp", at_text(base + 160),
           "-o", str(out), str(tmp_path / "app.db"))
    assert p.returncode == 111 and not out.exists(), p.stderr


def test_a_handover_within_one_second_across_a_whole_second_server(tmp_path, litevisor_bin):
    """A handover within one second, each generation on its own server: A's times carry
    fractions (a file replica), B's are whole seconds (S3). S+0.2 beat B's S (stored up to
    a second later), and the older, closed generation was restored, exit 0 (QA66 D3).
    Within a second of a whole-second time, the listings decide: the one that started
    later is the successor."""
    g1, ls = turns(tmp_path)
    s = int(time.time()) - 7200
    a, b = tmp_path / "A", tmp_path / "B"
    g1.write(str(a), t0=s - 500 + 0.2, step=100)   # its last segment at S+0.2, closed
    ls.write(str(b), gen=GEN2, t0=s, step=0, closed=False)  # started in S, listed as S
    cfg = write_config(tmp_path / "lv.yml", tmp_path / "app.db",
                       [{"name": "A", "url": f"file://{a}"}, {"name": "B", "url": f"file://{b}"}])
    for args in ([], ["-timestamp", at_text(s + 0.9)]):
        out = tmp_path / "out.db"
        if out.exists():
            out.unlink()
        p = lv(litevisor_bin, "restore", "-config", str(cfg), *args, "-o", str(out),
               str(tmp_path / "app.db"))
        assert p.returncode == 0, (args, p.stderr)
        assert rows(out) == ls.states[-1][2], (args, p.stderr)


def test_databases_lists_the_config_as_litestream_does(tmp_path, litevisor_bin, litestream_bin):
    cfg = tmp_path / "lv.yml"
    cfg.write_text(f"dbs:\n  - path: {tmp_path}/app.db\n    replicas:\n"
                   f"      - url: file://{tmp_path}/rep\n      - url: s3://bkt/app\n"
                   f"  - path: {tmp_path}/a-longer-name.db\n    replicas:\n"
                   f"      - {{url: file://{tmp_path}/rep2, name: backup}}\n")
    ours = lv(litevisor_bin, "databases", "-config", str(cfg))
    theirs = lv(litestream_bin, "databases", "-config", str(cfg))
    assert ours.returncode == 0 and theirs.returncode == 0, ours.stderr + theirs.stderr
    assert ours.stdout == theirs.stdout, (ours.stdout, theirs.stdout)
    assert ours.stdout.splitlines()[1].split() == [f"{tmp_path}/app.db", "file,s3"]
    bad = lv(litevisor_bin, "databases", "-config", str(tmp_path / "missing.yml"))
    assert bad.returncode == 100 and "missing.yml" in bad.stderr, bad.stderr


def test_freshest_wins_over_stale_and_listing_commands(tmp_path, litevisor_bin, history):
    stale, fresh = tmp_path / "peer-06", tmp_path / "nas"
    history.write(str(stale), upto=3)
    history.write(str(fresh))
    # objects outside the layout, in and beside its folders, are skipped (the
    # generation is read in one listing, so its parser must sort them out)
    gdir = fresh / "generations" / GEN
    for junk in ["snapshots/old/00000009.snapshot.lz4", "wal/00000009_00000000.wal.lz4.tmp",
                 "wal/x/00000009_00000000.wal.lz4", "other/00000009.snapshot.lz4",
                 "00000009_00000000.wal.lz4"]:
        (gdir / junk).parent.mkdir(parents=True, exist_ok=True)
        (gdir / junk).write_bytes(b"not an object of the layout")
    db = tmp_path / "app" / "app.db"
    db.parent.mkdir()
    cfg = write_config(tmp_path / "lv.yml", db, [
        {"name": "peer-06", "url": f"file://{stale}"},
        {"name": "nas", "url": f"file://{fresh}"},
    ])
    # dry run: the decision on stdout, nothing written
    p = lv(litevisor_bin, "restore", "-config", str(cfg), "-dry-run", str(db))
    assert p.returncode == 0, p.stderr
    assert "newest data: nas" in p.stdout
    assert not db.exists() and dir_leftovers(db.parent, []) == []
    p = lv(litevisor_bin, "restore", "-config", str(cfg), str(db))
    assert p.returncode == 0, p.stderr
    assert rows(db) == history.states[-1][2]
    assert "WINNER" in candidate_line(p.stderr, "nas")
    assert "stale" in candidate_line(p.stderr, "peer-06")
    # the restored marker names the replicas holding exactly that position
    marker = (db.parent / ".app.db-litevisor" / "restored").read_text().split()
    end = history.states[-1]
    assert marker[:3] == [GEN, f"{end[0]:08x}", f"{end[1]:08x}"]
    assert marker[3:] == ["nas"]

    p = lv(litevisor_bin, "generations", "-config", str(cfg), str(db))
    assert p.returncode == 0, p.stderr
    lines = [l.split() for l in p.stdout.splitlines()[1:]]
    assert sorted(l[0] for l in lines) == ["nas", "peer-06"] and all(l[1] == GEN for l in lines)
    p = lv(litevisor_bin, "snapshots", "-config", str(cfg), "-replica", "nas", str(db))
    assert p.returncode == 0, p.stderr
    assert [l.split()[:3] for l in p.stdout.splitlines()[1:]] == [["nas", GEN, "0"]]
    p = lv(litevisor_bin, "wal", "-config", str(cfg), "-replica", "nas", str(db))
    assert p.returncode == 0, p.stderr
    got = [tuple(l.split()[2:4]) for l in p.stdout.splitlines()[1:]]
    assert got == [(str(i), str(o)) for i, o, _ in history.segments]
    p = lv(litevisor_bin, "wal", "-config", str(cfg), "-replica", "peer-06", str(db))
    assert p.returncode == 0, p.stderr
    got = [tuple(l.split()[2:4]) for l in p.stdout.splitlines()[1:]]
    assert got == [(str(i), str(o)) for i, o, _ in history.segments[:3]]
    p = lv(litevisor_bin, "wal", "-replica", "nope", "-config", str(cfg), str(db))
    assert p.returncode == 100


def test_listings_are_laid_out_as_litestreams(tmp_path, litevisor_bin, litestream_bin, history):
    # Columns as Go's tabwriter sets Litestream's: each as wide as its widest cell plus
    # two spaces. The times keep their nanoseconds (Litestream prints whole seconds),
    # so a time copied from the listing into restore -timestamp includes that object.
    import re
    rep = tmp_path / "a-replica-with-a-long-name"
    history.write(str(rep))
    url = f"file://{rep}"
    whole = lambda text: re.sub(r"\.[0-9]+Z", "Z", text)  # noqa: E731
    for command in ("snapshots", "wal"):
        ours, theirs = lv(litevisor_bin, command, url), lv(litestream_bin, command, url)
        assert ours.returncode == 0 and theirs.returncode == 0, ours.stderr + theirs.stderr
        assert len(ours.stdout.splitlines()) > 1
        assert whole(ours.stdout) == theirs.stdout, (ours.stdout, theirs.stdout)
    ours, theirs = lv(litevisor_bin, "generations", url), lv(litestream_bin, "generations", url)
    assert ours.returncode == 0 and theirs.returncode == 0, ours.stderr + theirs.stderr
    head, row = ours.stdout.splitlines()
    assert head.split() == theirs.stdout.splitlines()[0].split() and len(head) <= len(row)
    assert head.index("generation") == row.index(GEN) and head.index("end") == row.rindex(" ") + 1
    assert whole(row).split()[:2] + whole(row).split()[3:] == \
        theirs.stdout.splitlines()[1].split()[:2] + theirs.stdout.splitlines()[1].split()[3:]
    # DB_PATH: the lag is how far the replica's end lies behind the database's last write,
    # as Litestream prints it (a Go duration). It was the time since the replica's end, so
    # an idle database fully replicated read a lag growing by the second (QA43 #5).
    db = tmp_path / "app.db"
    db.write_bytes(b"")
    end = os.path.getmtime(max(rep.rglob("*.lz4"), key=os.path.getmtime))
    for ahead in (3.25, 0.004, 75, -20):
        os.utime(db, (end + ahead, end + ahead))
        cfg = tmp_path / "ls.yml"
        cfg.write_text(f"dbs:\n  - path: {db}\n    replicas:\n      - url: {url}\n")
        ours = lv(litevisor_bin, "generations", "-config", str(cfg), str(db))
        theirs = lv(litestream_bin, "generations", "-config", str(cfg), str(db))
        assert ours.returncode == 0 and theirs.returncode == 0, ours.stderr + theirs.stderr
        assert ours.stdout.splitlines()[1].split()[2] == theirs.stdout.splitlines()[1].split()[2], \
            (ahead, ours.stdout, theirs.stdout)


def test_segment_lengths_decide_between_replicas_of_one_generation(tmp_path, litevisor_bin,
                                                                   history):
    """Replicas synced at different intervals cut the same WAL into different segments: one
    whose last segment starts earlier may still end later. The last segments are measured
    when candidates share a generation, so the replica ending later wins even though it
    answers slower; a candidate alone in its generation is not measured (its end, "+" in
    the decision, is found by applying), and the marker still gets the exact end."""
    fine, coarse = tmp_path / "peer-05", tmp_path / "nas"
    # fine: index 1's first segment only; coarse: index 1 in one segment, to its end
    history.write(str(fine), upto=3)
    history.write(str(coarse), upto=2, closed=False)
    i1 = [seg for seg in history.segments if seg[0] == 1]
    with open(os.path.join(coarse, "generations", GEN, "wal", "00000001_00000000.wal.lz4"),
              "wb") as f:
        f.write(lz4(b"".join(data for _, _, data in i1)))
    for i in range(4000):  # coarse answers slower: a tie would go to fine
        (coarse / "generations" / f"junk{i}").touch()
    end = [st for st in history.states if st[0] == 1][-1]
    (coarse / "generations" / GEN / "closed").mkdir()
    (coarse / "generations" / GEN / "closed" / f"00000001_{end[1]:08x}").touch()
    db = tmp_path / "app" / "app.db"
    db.parent.mkdir()
    cfg = write_config(tmp_path / "lv.yml", db, [
        {"name": "peer-05", "url": f"file://{fine}"},
        {"name": "nas", "url": f"file://{coarse}"},
    ])
    p = lv(litevisor_bin, "restore", "-config", str(cfg), str(db))
    assert p.returncode == 0, p.stderr
    assert "WINNER" in candidate_line(p.stderr, "nas"), p.stderr
    assert f"pos={GEN}/00000001/{end[1]:08x} " in candidate_line(p.stderr, "nas")
    assert "stale" in candidate_line(p.stderr, "peer-05"), p.stderr
    assert rows(db) == end[2]

    # one candidate: not measured before applying, exact afterwards
    db.unlink()
    shutil.rmtree(db.parent / ".app.db-litevisor")
    cfg = write_config(tmp_path / "lv1.yml", db, [{"name": "nas", "url": f"file://{coarse}"}])
    p = lv(litevisor_bin, "restore", "-config", str(cfg), str(db))
    assert p.returncode == 0, p.stderr
    assert f"pos={GEN}/00000001/00000000+ " in candidate_line(p.stderr, "nas"), p.stderr
    assert rows(db) == end[2]
    marker = (db.parent / ".app.db-litevisor" / "restored").read_text().split()
    assert marker == [GEN, "00000001", f"{end[1]:08x}", "nas"]


def two_peers_bad_one_wins(tmp_path, history):
    """Two file replicas with the same data; the good one ("nas") answers slower, so
    the other ("peer-05", for the test to damage) wins the tie. Returns
    (bad dir, good dir, config, output path)."""
    bad, good = tmp_path / "peer-05", tmp_path / "nas"
    history.write(str(bad))
    history.write(str(good))
    junk = good / "generations"
    for i in range(4000):
        (junk / f"junk{i}").touch()
    out = tmp_path / "out" / "r.db"
    out.parent.mkdir()
    cfg = write_config(tmp_path / "lv.yml", tmp_path / "unused.db", [
        {"name": "peer-05", "url": f"file://{bad}"},
        {"name": "nas", "url": f"file://{good}"},
    ])
    return bad, good, cfg, out


def restore_to(litevisor_bin, tmp_path, cfg, out):
    return lv(litevisor_bin, "restore", "-config", str(cfg), "-o", str(out),
              str(tmp_path / "unused.db"))


def restore_bad_first(litevisor_bin, tmp_path, cfg, out, tries=5):
    """restore_to, run again while the good replica answered first after all. Which
    of two replicas with the same data answers first is timing: the good one's 4000
    extra entries cost it a few ms, less than the noise of a loaded machine (seen
    under ASan in CI: 24.2 against 25.0 ms), and the damaged one was never read."""
    for _ in range(tries):
        p = restore_to(litevisor_bin, tmp_path, cfg, out)
        if "fallback #" not in candidate_line(p.stderr, "peer-05"):
            return p
        if out.exists():
            out.unlink()
    return p


def test_corrupt_segment_falls_back_to_replica_with_same_data(tmp_path, litevisor_bin, history):
    bad, good, cfg, out = two_peers_bad_one_wins(tmp_path, history)
    seg = history.seg_path(str(bad), 2)
    data = bytearray(open(seg, "rb").read())
    for i in range(len(data) // 2, len(data) // 2 + 8):
        data[i] ^= 0xFF
    open(seg, "wb").write(bytes(data))
    p = restore_bad_first(litevisor_bin, tmp_path, cfg, out)
    assert p.returncode == 0, p.stderr
    assert "WINNER" in candidate_line(p.stderr, "peer-05"), p.stderr
    assert "fallback" in candidate_line(p.stderr, "nas")
    assert "corrupt" in p.stderr and "falling back" in p.stderr
    assert rows(out) == history.states[-1][2]
    assert dir_leftovers(out.parent, ["r.db"]) == []

    # corrupt on every candidate: nothing at the target, exit 1
    shutil.copyfile(seg, history.seg_path(str(good), 2))
    p = restore_to(litevisor_bin, tmp_path, cfg, tmp_path / "out" / "r2.db")
    assert p.returncode == 1, p.stderr
    assert dir_leftovers(out.parent, ["r.db"]) == []
    # nor the directories it made for the target (QA14): only those, not one that was there
    p = restore_to(litevisor_bin, tmp_path, cfg, tmp_path / "out" / "a" / "b" / "r3.db")
    assert p.returncode == 1, p.stderr
    assert "created directory" in p.stderr
    assert not (tmp_path / "out" / "a").exists(), p.stderr
    assert (tmp_path / "out").is_dir()


def test_a_corrupt_last_segment_is_reported_as_failing_not_unreachable(
        tmp_path, litevisor_bin, history):
    # Both hold the generation, so each one's last segment is read before deciding.
    # peer-05's is corrupt: it answered, so "UNREACHABLE or failing" misled (QA79).
    bad, good, cfg, out = two_peers_bad_one_wins(tmp_path, history)
    seg = history.seg_path(str(bad), len(history.segments) - 1)
    data = bytearray(open(seg, "rb").read())
    for i in range(len(data) // 2, len(data) // 2 + 8):
        data[i] ^= 0xFF
    open(seg, "wb").write(bytes(data))
    p = restore_bad_first(litevisor_bin, tmp_path, cfg, out)
    line = candidate_line(p.stderr, "peer-05")
    assert "FAILING (its last segment could not be read)" in line, p.stderr
    assert "UNREACHABLE" not in line, p.stderr


def test_truncated_segment_is_corrupt_not_a_shorter_index(tmp_path, litevisor_bin, history):
    # The last segment of an index (a later index follows, so the generation's end
    # is unchanged) lost its tail inside a frame: a valid LZ4 object with fewer
    # bytes. SQLite would drop the partial frame and its transaction silently.
    bad, good, cfg, out = two_peers_bad_one_wins(tmp_path, history)
    i = next(k for k in range(len(history.segments) - 1)
             if history.segments[k + 1][0] > history.segments[k][0])
    plain = history.segments[i][2]
    assert len(plain) > 200
    with open(history.seg_path(str(bad), i), "wb") as f:
        f.write(lz4(plain[:-100]))
    p = restore_bad_first(litevisor_bin, tmp_path, cfg, out)
    assert p.returncode == 0, p.stderr
    assert "WINNER" in candidate_line(p.stderr, "peer-05"), p.stderr
    assert "into a frame (truncated)" in p.stderr and "falling back" in p.stderr, p.stderr
    assert rows(out) == history.states[-1][2]
    assert dir_leftovers(out.parent, ["r.db"]) == []


def test_a_segment_overlapping_the_one_before_it_restores_when_the_bytes_agree(
        tmp_path, litevisor_bin, history):
    # A segment that starts inside the one before it, repeating its last frame
    # (QA20: a Litestream replica was refused as "missing segment"). The repeated
    # bytes must be the same; then only the rest is new. Other bytes there are two
    # histories of one index: corrupt, and the restore falls back.
    frame = 24 + 4096
    bad, good, cfg, out = two_peers_bad_one_wins(tmp_path, history)
    (i0, o0, d0), (i1, o1, d1) = history.segments[0], history.segments[1]
    assert (i0, i1, o0, o1) == (0, 0, 0, len(d0)) and len(d0) > frame

    def overlap(root, tail):
        if os.path.exists(history.seg_path(str(root), 1)):
            os.unlink(history.seg_path(str(root), 1))
        p = os.path.join(str(root), "generations", GEN, "wal", f"00000000_{o1 - frame:08x}.wal.lz4")
        with open(p, "wb") as f:
            f.write(lz4(tail + d1))

    for root in (bad, good):
        overlap(root, d0[-frame:])
    p = restore_bad_first(litevisor_bin, tmp_path, cfg, out)
    assert p.returncode == 0, p.stderr
    assert "WINNER" in candidate_line(p.stderr, "peer-05") and "falling back" not in p.stderr, p.stderr
    assert rows(out) == history.states[-1][2]

    # the overlap differs from what the segment before it holds: corrupt, fall back
    different = bytearray(d0[-frame:])
    different[100] ^= 0xFF
    overlap(bad, bytes(different))
    shutil.rmtree(out.parent)
    out.parent.mkdir()
    p = restore_bad_first(litevisor_bin, tmp_path, cfg, out)
    assert p.returncode == 0, p.stderr
    assert "overlaps the one before it with other bytes" in p.stderr, p.stderr
    assert "falling back" in p.stderr, p.stderr
    assert rows(out) == history.states[-1][2]

@pytest.mark.parametrize("content", ["empty-frame", "skippable-frame"])
def test_segment_without_wal_bytes_is_corrupt_not_the_end(tmp_path, litevisor_bin, history, content):
    # An index's last segment (a later index follows, so the generation's end is
    # unchanged) replaced by a valid LZ4 file holding nothing: read as "no more
    # frames", the restore ended that index early and reported success (QA12).
    bad, good, cfg, out = two_peers_bad_one_wins(tmp_path, history)
    i = next(k for k in range(len(history.segments) - 1)
             if history.segments[k + 1][0] > history.segments[k][0] and history.segments[k][1] > 0)
    data = lz4(b"") if content == "empty-frame" else bytes.fromhex("502a4d180400000001020304")
    with open(history.seg_path(str(bad), i), "wb") as f:
        f.write(data)
    p = restore_bad_first(litevisor_bin, tmp_path, cfg, out)
    assert p.returncode == 0, p.stderr
    assert "WINNER" in candidate_line(p.stderr, "peer-05"), p.stderr
    assert "holds no WAL bytes" in p.stderr and "falling back" in p.stderr, p.stderr
    assert rows(out) == history.states[-1][2]
    assert dir_leftovers(out.parent, ["r.db"]) == []


def test_snapshot_named_past_the_wal_is_ignored_not_the_newest(tmp_path, litevisor_bin, history):
    # A snapshot whose name claims an index more than one past the generation's
    # newest WAL (a misnamed object: neither tool writes one) made its replica the
    # freshest, and only that snapshot was restored: older data, exit 0 (QA12).
    # Litestream ignores such a snapshot; so does litevisor now, and says so.
    bad, good, cfg, out = two_peers_bad_one_wins(tmp_path, history)
    snaps = os.path.join(str(bad), "generations", GEN, "snapshots")
    os.rename(os.path.join(snaps, "00000000.snapshot.lz4"), os.path.join(snaps, "00000010.snapshot.lz4"))
    shutil.copyfile(os.path.join(str(good), "generations", GEN, "snapshots", "00000000.snapshot.lz4"),
                    os.path.join(snaps, "00000000.snapshot.lz4"))
    p = restore_bad_first(litevisor_bin, tmp_path, cfg, out)
    assert p.returncode == 0, p.stderr
    line = candidate_line(p.stderr, "peer-05")
    assert 'ignored="snapshot 00000010: past the generation' in line, p.stderr
    assert "/00000010/" not in line, line
    assert rows(out) == history.states[-1][2]


def wal_set_page(wal, k, pgno):
    """WAL bytes (header included) with frame k's page number set to pgno, the checksum
    chain recomputed from there: frames that pass every checksum."""
    w = bytearray(wal)
    fs = 24 + struct.unpack(">I", w[8:12])[0]
    order = ">" if w[3] & 1 else "<"
    if k < 0:
        k += (len(w) - 32) // fs
    w[32 + k * fs:36 + k * fs] = struct.pack(">I", pgno)
    s1, s2 = struct.unpack(">II", w[24:32])
    for off in range(32, len(w), fs):
        for a, b in ((off, off + 8), (off + 24, off + fs)):
            words = struct.unpack(f"{order}{(b - a) // 4}I", w[a:b])
            for i in range(0, len(words), 2):
                s1 = (s1 + words[i] + s2) & 0xFFFFFFFF
                s2 = (s2 + words[i + 1] + s1) & 0xFFFFFFFF
        w[off + 16:off + 24] = struct.pack(">II", s1, s2)
    return bytes(w)


@pytest.mark.parametrize("pgno,why", [
    (0xFFFFFFFF, "page number 4294967295 (SQLite's largest is 4294967294)"),
    (0, "page number 0"),
    (9999, "page number 9999 beyond the commit's database size"),
])
def test_commit_frame_with_impossible_page_number_is_corrupt(tmp_path, litevisor_bin, pgno, why):
    # Checksums right, page number wrong: SQLite's checkpoint skipped the frame, and
    # the restore lost the last transaction with exit 0 (QA fuzz repro-5). Its last
    # transaction adds one small row: one page, rewritten in place, so without it
    # the database is still consistent, only older.
    history = History(tmp_path, [[[5]], [[1, 1]]], payload=10)
    bad, good, cfg, out = two_peers_bad_one_wins(tmp_path, history)
    i = len(history.segments) - 1
    idx, off, plain = history.segments[i]
    assert (idx, off) == (1, 0)  # one segment, the WAL header in it
    with open(history.seg_path(str(bad), i), "wb") as f:
        f.write(lz4(wal_set_page(plain, -1, pgno)))
    p = restore_bad_first(litevisor_bin, tmp_path, cfg, out)
    assert p.returncode == 0, p.stderr
    assert rows(out) == history.states[-1][2]
    assert "WINNER" in candidate_line(p.stderr, "peer-05"), p.stderr
    assert f"is corrupt: WAL {why}" in p.stderr and "falling back" in p.stderr, p.stderr
    # on every candidate: nothing restored, exit 1
    shutil.copyfile(history.seg_path(str(bad), i), history.seg_path(str(good), i))
    p = restore_to(litevisor_bin, tmp_path, cfg, tmp_path / "out" / "r2.db")
    assert p.returncode == 1, p.stderr
    assert dir_leftovers(out.parent, ["r.db"]) == []
    # nor the directories it made for the target (QA14): only those, not one that was there
    p = restore_to(litevisor_bin, tmp_path, cfg, tmp_path / "out" / "a" / "b" / "r3.db")
    assert p.returncode == 1, p.stderr
    assert "created directory" in p.stderr
    assert not (tmp_path / "out" / "a").exists(), p.stderr
    assert (tmp_path / "out").is_dir()


def test_snapshot_with_wrong_checksum_falls_back(tmp_path, litevisor_bin, history):
    # The snapshot's LZ4 blocks decode fine; only the frame's content checksum
    # (XXH32 of the plain bytes, verified on the writer thread) says it is wrong.
    bad, good, cfg, out = two_peers_bad_one_wins(tmp_path, history)
    snap = bad / "generations" / GEN / "snapshots" / "00000000.snapshot.lz4"
    data = bytearray(snap.read_bytes())
    assert data[4] & 0x04, "lz4 CLI frames carry a content checksum"
    data[-1] ^= 0x01
    snap.write_bytes(bytes(data))
    p = restore_bad_first(litevisor_bin, tmp_path, cfg, out)
    assert p.returncode == 0, p.stderr
    assert "WINNER" in candidate_line(p.stderr, "peer-05"), p.stderr
    assert "content checksum mismatch" in p.stderr and "falling back" in p.stderr
    assert rows(out) == history.states[-1][2]
    assert dir_leftovers(out.parent, ["r.db"]) == []


def test_snapshot_that_is_no_database_falls_back(tmp_path, litevisor_bin):
    # Every checksum right, the content a malformed database (a mix of two nodes'
    # histories left one such): SQLite refuses the file when it is opened, and that
    # is the candidate's fault, not our disk's. It failed the whole restore
    # ("cannot restore into <target>"), and `run` refused to start.
    history = History(tmp_path, [[[1]]], payload=10)
    bad, good, cfg, out = two_peers_bad_one_wins(tmp_path, history)
    snap = bad / "generations" / GEN / "snapshots" / "00000000.snapshot.lz4"
    # SQLite's header kept, its schema page gone (no WAL frame rewrites it: the one
    # row added fits in the table's page): SQLITE_CORRUPT as the file is opened
    snap.write_bytes(lz4(history.snapshot[:100] + b"\xa5" * (len(history.snapshot) - 100)))
    p = restore_bad_first(litevisor_bin, tmp_path, cfg, out)
    assert p.returncode == 0, p.stderr
    assert "WINNER" in candidate_line(p.stderr, "peer-05"), p.stderr
    assert "falling back" in p.stderr and "cannot restore into" not in p.stderr, p.stderr
    # which objects to look at, not only the temp files SQLite read (QA79)
    assert f"(generation {GEN} from peer-05 is no database" in p.stderr, p.stderr
    assert rows(out) == history.states[-1][2]
    assert dir_leftovers(out.parent, ["r.db"]) == []


def test_missing_segment_is_detected_not_replayed(tmp_path, litevisor_bin, history):
    rep = tmp_path / "rep"
    # index 1's first segment is gone (a later one of it remains): Litestream #805
    idx, off, _ = history.segments[2]
    assert (idx, off) == (1, 0)
    history.write(str(rep), skip={(idx, off)})
    out = tmp_path / "r.db"
    p = lv(litevisor_bin, "restore", "-o", str(out), f"file://{rep}")
    assert p.returncode == 1, p.stderr
    assert "missing segment" in p.stderr
    assert not out.exists()
    # its dry run says so too, on stdout, and does not answer 0 (QA26 D4)
    p = lv(litevisor_bin, "restore", "-dry-run", "-o", str(out), f"file://{rep}")
    assert p.returncode == 1, p.stderr
    assert "hole: gap before segment 00000001/" in p.stdout, p.stdout


def test_newest_generation_without_snapshot_is_not_silently_skipped(tmp_path, litevisor_bin,
                                                                     history):
    # GEN2 is newer but lost its snapshot (deleted, or still uploading): the
    # replica's newest data cannot be restored. Restoring GEN instead would bring
    # back stale data without a word (Litestream refuses too).
    rep = tmp_path / "rep"
    history.write(str(rep), gen=GEN, t0=time.time() - 7200, upto=3)
    history.write(str(rep), gen=GEN2, t0=time.time() - 3600)
    (rep / "generations" / GEN2 / "snapshots" / "00000000.snapshot.lz4").unlink()
    out = tmp_path / "r.db"
    p = lv(litevisor_bin, "restore", "-o", str(out), f"file://{rep}")
    assert p.returncode != 0 and not out.exists(), p.stderr
    last = p.stderr.strip().splitlines()[-1]
    assert f"{GEN2} has WAL but no snapshot" in last and f"-generation {GEN}" in last, p.stderr
    # named explicitly, the older generation restores
    p = lv(litevisor_bin, "restore", "-generation", GEN, "-o", str(out), f"file://{rep}")
    assert p.returncode == 0, p.stderr
    assert rows(out) == history.states[2][2]
    # the `run` path does not start on the older data either
    db = tmp_path / "app" / "app.db"
    db.parent.mkdir()
    cfg = write_config(tmp_path / "lv.yml", db, [{"name": "a", "url": f"file://{rep}"}])
    p, res = restore_tool(cfg)
    assert res and res[0]["outcome"] == "unreachable", p.stdout + p.stderr
    assert "no snapshot" in res[0]["message"] and not db.exists(), res


def test_unreachable_peers_cost_about_the_probe_timeout(tmp_path, litevisor_bin, history):
    nas = tmp_path / "nas"
    history.write(str(nas))
    hole = Blackhole()
    refused = free_port()
    try:
        db = tmp_path / "app.db"
        cfg = write_config(tmp_path / "lv.yml", db, [
            s3_unreachable("peer-05", hole.port),
            s3_unreachable("peer-06", refused),
            {"name": "nas", "url": f"file://{nas}"},
        ], restore={"probe-timeout": "1s"})
        t0 = time.monotonic()
        p = lv(litevisor_bin, "restore", "-config", str(cfg), str(db))
        elapsed = time.monotonic() - t0
    finally:
        hole.close()
    assert p.returncode == 0, p.stderr
    assert elapsed < 2.5, f"blackholed peer cost {elapsed:.2f}s"
    assert "UNREACHABLE" in candidate_line(p.stderr, "peer-05")
    assert "UNREACHABLE" in candidate_line(p.stderr, "peer-06")
    # the blackhole gave no answer; the closed port answered with an error
    assert "state=unreachable" in candidate_line(p.stderr, "peer-05")
    assert "state=error" in candidate_line(p.stderr, "peer-06")
    # nobody listens on the refused port: no retry, and its round trip is its own
    assert "request retried" not in p.stderr, p.stderr
    m = re.search(r"probe_ms=(\d+)", candidate_line(p.stderr, "peer-06"))
    assert m and int(m.group(1)) < 200, candidate_line(p.stderr, "peer-06")
    assert "WINNER" in candidate_line(p.stderr, "nas")
    assert rows(db) == history.states[-1][2]


def test_nothing_reachable_is_a_temporary_failure(tmp_path, litevisor_bin):
    db = tmp_path / "app.db"
    cfg = write_config(tmp_path / "lv.yml", db, [s3_unreachable("peer-05", free_port())])
    p = lv(litevisor_bin, "restore", "-config", str(cfg), str(db))
    assert p.returncode == 111, p.stderr
    assert not db.exists()


def test_no_replica_has_data(tmp_path, litevisor_bin):
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "r.db"
    p = lv(litevisor_bin, "restore", "-o", str(out), f"file://{empty}")
    assert p.returncode == 1
    assert "no matching backups found" in p.stderr
    p = lv(litevisor_bin, "restore", "-if-replica-exists", "-o", str(out), f"file://{empty}")
    assert p.returncode == 0, p.stderr
    assert not out.exists()
    # a database without replicas (a template with replication off) has no backup either:
    # Litestream skips it under -if-replica-exists, and exited 1 here (QA43 #7)
    cfg = tmp_path / "none.yml"
    cfg.write_text(f"dbs:\n  - path: {out}\n    replicas: []\n")
    p = lv(litevisor_bin, "restore", "-if-replica-exists", "-config", str(cfg), str(out))
    assert p.returncode == 0 and "no replicas configured" in p.stderr, p.stderr
    p = lv(litevisor_bin, "restore", "-config", str(cfg), str(out))
    assert p.returncode == 1 and "no replicas configured" in p.stderr, p.stderr
    assert not out.exists()


def test_asked_generation_without_snapshot_says_so(tmp_path, litevisor_bin, history):
    # "no matching backups found" alone did not say why an explicit -generation had
    # nothing to restore (QA12)
    rep = tmp_path / "rep"
    history.write(str(rep))
    for f in (rep / "generations" / GEN / "snapshots").iterdir():
        f.unlink()
    p = lv(litevisor_bin, "restore", "-generation", GEN, "-o", str(tmp_path / "r.db"), f"file://{rep}")
    assert p.returncode == 1, p.stderr
    assert p.stderr.strip().splitlines()[-1].endswith(
        f"no matching backups found (generation {GEN} has no snapshot at or before the end)"), p.stderr


def test_if_replica_exists_does_not_skip_a_request_that_misses_the_data(tmp_path,
                                                                        litevisor_bin, history):
    """-if-replica-exists is "exit 0 if no replica holds data": with an -index past the
    end, or a -timestamp before every snapshot, of a replica that holds data, it exited
    0 and restored nothing, and an entrypoint then started the app on an empty database
    (QA116 D2). Exit 1, naming the miss."""
    rep = tmp_path / "rep"
    history.write(str(rep))
    out = tmp_path / "r.db"
    for flags, says in ((["-index", "255"], "past the end"),
                        (["-timestamp", "2000-01-01T00:00:00Z"], "no matching backups found")):
        p = lv(litevisor_bin, "restore", "-if-replica-exists", *flags, "-o", str(out),
               f"file://{rep}")
        assert p.returncode == 1 and says in p.stderr, p.stderr
        assert not out.exists()


def test_verbose_flag_logs_at_debug_level(tmp_path, litevisor_bin, history):
    # Litestream's `restore -v` (in v0.3.13's help; accepted up to v0.3.11): entrypoints
    # written for it must not fail with a usage error. It means debug logging, even over
    # the config's logging level.
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "r.db"
    p = lv(litevisor_bin, "restore", "-v", "-if-replica-exists", "-o", str(out), f"file://{empty}")
    assert p.returncode == 0, p.stderr
    assert " DEBUG restore: options " in p.stderr
    assert not out.exists()
    p = lv(litevisor_bin, "restore", "-if-replica-exists", "-o", str(out), f"file://{empty}")
    assert p.returncode == 0, p.stderr
    assert "DEBUG" not in p.stderr
    rep = tmp_path / "rep"
    history.write(str(rep))
    db = tmp_path / "app.db"
    cfg = tmp_path / "lv.yml"
    cfg.write_text(f"logging:\n  level: error\ndbs:\n  - path: {db}\n    replicas:\n"
                   f"      - path: {rep}\n")
    p = lv(litevisor_bin, "restore", "-config", str(cfg), "-v", str(db))
    assert p.returncode == 0, p.stderr
    assert " DEBUG restore: downloaded replica=file key=" in p.stderr
    assert " INFO  restore: restored " in p.stderr
    assert rows(db) == history.states[-1][2]
    p = lv(litevisor_bin, "restore", "-help")
    assert "\n  -v " in p.stdout


def faulty(op, path, n, errno_=5):
    """Environment that makes the nth call of op on a path holding `path` fail
    (tests/tools/preload/faultinject.c)."""
    return dict(os.environ, LD_PRELOAD=os.path.join(TOOLS, "faultinject.so"), FAULT_OP=op,
                FAULT_PATH=str(path), FAULT_N=str(n), FAULT_ERRNO=str(errno_),
                ASAN_OPTIONS="verify_asan_link_order=0")


@pytest.mark.parametrize("op,n,cause", [
    ("fsync", 2, "fsync the directory of"),  # after the rename: the file is taken back
    ("pread", 1, "read "),                   # the snapshot's header, read back from our disk
])
def test_local_io_error_leaves_nothing_and_blames_no_replica(tmp_path, litevisor_bin, history,
                                                              op, n, cause):
    history.write(str(tmp_path / "rep"))
    out = tmp_path / "o" / "r.db"
    out.parent.mkdir()
    log = tmp_path / "faults"
    env = faulty(op, out.parent, n)
    env["FAULT_LOG"] = str(log)
    p = subprocess.run([litevisor_bin, "restore", "-o", str(out), f"file://{tmp_path / 'rep'}"],
                       capture_output=True, text=True, timeout=60, env=env)
    assert log.exists(), p.stderr  # the fault happened
    assert p.returncode == 1, p.stderr
    last = p.stderr.strip().splitlines()[-1]
    assert "cannot restore into" in last and cause in last, p.stderr
    assert "Input/output error" in last and "corrupt" not in last and "SQLite" not in last, last
    assert os.listdir(out.parent) == []


@pytest.mark.parametrize("op,path,errno_", [
    ("unlink", ".litevisor-restore-wal", 5),  # a leftover is said, not silent (QA14)
    ("pwrite", ".litevisor-restore.lock", 4),  # EINTR on the lock's pid: retried (QA14)
])
def test_a_small_local_fault_after_the_work_does_not_fail_the_restore(
        tmp_path, litevisor_bin, history, op, path, errno_):
    history.write(str(tmp_path / "rep"))
    out = tmp_path / "o" / "r.db"
    out.parent.mkdir()
    log = tmp_path / "faults"
    env = faulty(op, str(out) + path, 1, errno_)
    env["FAULT_LOG"] = str(log)
    p = subprocess.run([litevisor_bin, "restore", "-o", str(out), f"file://{tmp_path / 'rep'}"],
                       capture_output=True, text=True, timeout=60, env=env)
    assert log.exists(), p.stderr
    assert p.returncode == 0, p.stderr
    assert rows(out) == history.states[-1][2]
    if op == "unlink":
        assert "cannot remove a temp file" in p.stderr and path in p.stderr, p.stderr


def test_a_marker_that_cannot_be_written_costs_a_generation_not_the_restore(
        tmp_path, litevisor_bin, history):
    # The restore was complete and in place, yet it failed "restored, but the
    # restored marker could not be written" and run did not start the service (QA14).
    history.write(str(tmp_path / "rep"))
    db = tmp_path / "app.db"
    cfg = write_config(tmp_path / "lv.yml", db, [{"name": "file", "url": f"file://{tmp_path / 'rep'}"}])
    log = tmp_path / "faults"
    env = faulty("rename", "/restored", 1, 28)
    env["FAULT_LOG"] = str(log)
    p = subprocess.run([litevisor_bin, "restore", "-config", str(cfg), str(db)],
                       capture_output=True, text=True, timeout=60, env=env)
    assert log.exists(), p.stderr
    assert p.returncode == 0, p.stderr
    assert "cannot write the restored marker: replication will start a new generation" in p.stderr
    assert "No space left on device" in p.stderr
    assert rows(db) == history.states[-1][2]
    assert not (tmp_path / ".app.db-litevisor" / "restored").exists()


def test_a_failed_read_of_our_temp_file_never_blames_the_replica(tmp_path, litevisor_bin, history):
    # SQLite reports an EIO on read as "database disk image is malformed" and keeps
    # no errno: the restore blamed the snapshot and fell back (QA14). Every few
    # reads of the temp database or its -wal in turn fail once: each restore is
    # either complete or fails as our disk's error, with nothing at the target.
    history.write(str(tmp_path / "rep"))
    out = tmp_path / "o" / "r.db"
    out.parent.mkdir()
    log = tmp_path / "faults"
    outcomes = set()
    for n in range(1, 5000):
        env = faulty("pread", out.parent, n)
        env["FAULT_LOG"] = str(log)
        p = subprocess.run([litevisor_bin, "restore", "-o", str(out), f"file://{tmp_path / 'rep'}"],
                           capture_output=True, text=True, timeout=60, env=env)
        if not log.exists():  # fewer than n reads: the sweep is over
            assert p.returncode == 0 and n > 5, p.stderr
            break
        log.unlink()
        last = p.stderr.strip().splitlines()[-1]
        if p.returncode == 0:  # a read-ahead that failed is read again, plainly
            assert rows(out) == history.states[-1][2]
            out.unlink()
            outcomes.add("ok")
            continue
        assert p.returncode == 1 and "cannot restore into" in last, (n, p.stderr)
        assert "Input/output error" in last, (n, last)
        assert "falling back" not in p.stderr and "corrupt" not in last, (n, p.stderr)
        assert os.listdir(out.parent) == [], n
        outcomes.add("malformed" if "malformed" in last else "failed")
    assert "malformed" in outcomes, outcomes  # the case SQLite hides


def test_full_local_disk_is_our_error_not_the_replicas(tmp_path, litevisor_bin, history):
    # The target's disk fills up at each step in turn (a WAL segment download, the
    # snapshot, the WAL applied, SQLite's open): the error names our file and
    # ENOSPC, exits 1 (not "temporary", not "corrupt"), does not blame or fall
    # back across replicas (none can help), and leaves nothing behind.
    a, b = tmp_path / "a", tmp_path / "b"
    history.write(str(a))
    history.write(str(b))
    small = tmp_path / "small"
    small.mkdir()
    cfg = write_config(tmp_path / "lv.yml", small / "app.db",
                       [{"name": "a", "url": f"file://{a}"}, {"name": "b", "url": f"file://{b}"}])
    script = ('for kb in "$@"; do mount -t tmpfs -o size=${kb}k tmpfs "$S" || exit 99; '
              '"$LV" restore -config "$CFG" -o "$S/r.db" "$S/app.db" 2>"$S.err"; '
              'echo "$kb $? $(ls -A "$S" | tr "\\n" " ")"; '
              'echo "$kb $(tail -1 "$S.err")"; grep -c "falling back" "$S.err"; umount "$S"; done')
    p = subprocess.run(["unshare", "-rm", "sh", "-c", script, "sh"] +
                       [str(k) for k in (8, 12, 16, 20, 28, 36, 48, 60, 80, 4096)],
                       env=dict(os.environ, S=str(small), LV=litevisor_bin, CFG=str(cfg)),
                       capture_output=True, text=True, timeout=120)
    if p.returncode == 99 or "unshare" in p.stderr:
        pytest.skip(f"cannot mount a tmpfs here: {p.stderr.strip()}")
    out = p.stdout.splitlines()
    assert len(out) == 30, p.stdout + p.stderr
    failed = 0
    for i in range(0, 30, 3):
        kb, rc, *files = out[i].split()
        msg, fallbacks = out[i + 1], out[i + 2]
        assert fallbacks == "0", out[i:i + 3]
        if rc == "0":
            assert files == ["r.db"], out[i:i + 3]
            continue
        failed += 1
        assert rc == "1" and files == [], out[i:i + 3]
        assert "cannot restore into" in msg and "No space left on device" in msg, msg
        assert "corrupt" not in msg, msg
    assert failed >= 3 and failed < 10, p.stdout  # and the largest disk holds it


def test_a_checkpoint_on_a_full_target_names_the_full_disk(tmp_path, litevisor_bin):
    """With room for the snapshot and the WAL but not the checkpoint of one into the
    other, SQLite's "database or disk is full" came with no OS error and no file system
    named, where every other full-disk failure names both (QA115 O1)."""
    db, rep, small = tmp_path / "app.db", tmp_path / "rep", tmp_path / "small"
    small.mkdir()
    con = sqlite3.connect(db, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA wal_autocheckpoint=0")
    con.execute("CREATE TABLE t(x)")
    con.executemany("INSERT INTO t VALUES (randomblob(1000))", [()] * 200)
    # no checkpoint of litevisor's splits the WAL into indexes: how much the restore
    # downloads beside the target, and so the sizes below, depend on where one fell
    cfg = tmp_path / "lv.yml"
    cfg.write_text(f"dbs:\n  - path: {db}\n    min-checkpoint-page-count: 100000\n"
                   f"    replicas:\n      - url: file://{rep}\n")
    r = subprocess.Popen([litevisor_bin, "replicate", "-config", str(cfg)],
                         stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 20
        while time.time() < deadline and not list(rep.glob("generations/*/snapshots/*")):
            time.sleep(0.1)
        con.executemany("INSERT INTO t VALUES (randomblob(1000))", [()] * 1500)
        time.sleep(1.5)
    finally:
        r.send_signal(signal.SIGTERM)
        assert r.wait(timeout=30) == 0
    con.close()
    script = ('for kb in "$@"; do mount -t tmpfs -o size=${kb}k tmpfs "$S" || exit 99; '
              '"$LV" restore -o "$S/r.db" "file://$REP" 2>"$S.err"; '
              'echo "$kb $? $(tail -1 "$S.err")"; umount "$S"; done')
    p = subprocess.run(["unshare", "-rm", "sh", "-c", script, "sh"] +
                       [str(k) for k in range(11000, 12600, 200)],
                       env=dict(os.environ, S=str(small), LV=litevisor_bin, REP=str(rep)),
                       capture_output=True, text=True, timeout=120)
    if p.returncode == 99 or "unshare" in p.stderr:
        pytest.skip(f"cannot mount a tmpfs here: {p.stderr.strip()}")
    failed = [ln for ln in p.stdout.splitlines() if ln.split()[1] != "0"]
    assert any("checkpoint" in ln for ln in failed), p.stdout
    for ln in failed:
        assert ln.split()[1] == "1" and "No space left on device" in ln, ln


def test_blocks_allocated_ahead_on_a_nearly_full_disk_are_given_back(tmp_path,
                                                                       litevisor_bin):
    """The restore allocates its file's blocks 64 MiB ahead. On ext4, a fallocate that
    fails for want of room keeps what it allocated: with 38 MB free, an 8 MB restore
    then failed at its -wal, "No space left on device", and one without WAL left the
    disk full, 40 MB held by an 8 MB file (QA118 D1). Given back at once, they were
    still held while the WAL segments downloaded beside the target were written, and
    those failed with ENOSPC (seen once in CI; one restore in four on a new file
    system here). No step is allocated ahead on a disk with less than two steps free;
    one with room still gets them. Needs a loop-mounted ext4."""
    History(tmp_path, [[[1]]] * 24, initial=2000, payload=4000).write(str(tmp_path / "rep"))
    img, mnt, log = tmp_path / "img", tmp_path / "mnt", tmp_path / "fallocate.log"
    mnt.mkdir()

    def restore_on_new_fs(size):  # -> the restore's fallocate calls on its target
        with open(img, "wb") as f:
            f.truncate(size)
        subprocess.run(["mkfs.ext4", "-q", "-F", str(img)], check=True, capture_output=True)
        m = subprocess.run(["mount", "-o", "loop", str(img), str(mnt)], capture_output=True,
                           text=True)
        if m.returncode != 0:
            pytest.skip(f"cannot loop-mount an ext4 image here: {m.stderr.strip()}")
        log.unlink(missing_ok=True)
        try:
            p = subprocess.run([litevisor_bin, "restore", "-o", str(mnt / "r.db"),
                                f"file://{tmp_path}/rep"], capture_output=True, text=True,
                               timeout=60, env=faulty_env(op="fallocate", delay_ms=1,
                                                          count=1000, log=log,
                                                          suffix=".litevisor-restore"))
            assert p.returncode == 0, p.stderr
            st = os.stat(mnt / "r.db")
            assert st.st_blocks * 512 <= st.st_size + (1 << 20), (st.st_size, st.st_blocks)
        finally:
            subprocess.run(["umount", str(mnt)], capture_output=True)
        return log.read_text().splitlines() if log.exists() else []

    assert restore_on_new_fs(400 << 20), "no block allocated ahead on a disk with room"
    for _ in range(5):  # 48 MB: free space between the database's size and two steps
        assert restore_on_new_fs(48 << 20) == []


def test_no_block_allocated_ahead_takes_the_room_of_the_wal_downloaded_beside_it(
        tmp_path, litevisor_bin):
    """Blocks allocated ahead are room the WAL segments downloaded beside the target lack
    meanwhile: with 300 MB free and 288 MB needed, a restore failed with "No space left on
    device" every time (QA126 D2). Nothing is allocated ahead when the WAL still to
    download leaves less than two steps free. Needs a loop-mounted ext4."""
    src = tmp_path / "src.db"
    con = sqlite3.connect(src, isolation_level=None)
    con.execute("PRAGMA journal_mode=wal")
    con.execute("PRAGMA wal_autocheckpoint=0")
    con.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
    con.executemany("INSERT INTO t(v) VALUES(randomblob(3900))", [()] * 500)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    gen = tmp_path / "rep" / "generations" / GEN
    (gen / "snapshots").mkdir(parents=True)
    (gen / "wal").mkdir()
    (gen / "snapshots" / "00000000.snapshot.lz4").write_bytes(lz4(src.read_bytes()))
    for idx in range(40):  # 2 MB of incompressible WAL each: 80 MB to download
        if idx:
            con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        con.execute("UPDATE t SET v = randomblob(3900)")
        (gen / "wal" / f"{idx:08x}_00000000.wal.lz4").write_bytes(
            lz4((tmp_path / "src.db-wal").read_bytes()))
    want = con.execute("SELECT sum(length(v)), count(*) FROM t").fetchone()
    con.close()
    img, mnt, log = tmp_path / "img", tmp_path / "mnt", tmp_path / "fallocate.log"
    mnt.mkdir()
    with open(img, "wb") as f:
        f.truncate(210 << 20)  # ~200 MB free: two steps, not two steps and the WAL
    subprocess.run(["mkfs.ext4", "-q", "-F", "-m", "0", str(img)], check=True,
                   capture_output=True)
    m = subprocess.run(["mount", "-o", "loop", str(img), str(mnt)], capture_output=True,
                       text=True)
    if m.returncode != 0:
        pytest.skip(f"cannot loop-mount an ext4 image here: {m.stderr.strip()}")
    try:
        p = subprocess.run([litevisor_bin, "restore", "-o", str(mnt / "r.db"),
                            f"file://{tmp_path}/rep"], capture_output=True, text=True,
                           timeout=120, env=faulty_env(op="fallocate", delay_ms=1, count=1000,
                                                       log=log, suffix=".litevisor-restore"))
        assert p.returncode == 0, p.stderr
        assert not log.exists(), log.read_text()
        c = sqlite3.connect(mnt / "r.db")
        assert c.execute("SELECT sum(length(v)), count(*) FROM t").fetchone() == want
        c.close()
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)


def test_a_symlink_loop_or_deep_directories_in_a_file_replica_are_not_walked_into(
        tmp_path, litevisor_bin, litestream_bin, history):
    """A directory symlink pointing back up inside a file replica, or 40 nested
    directories, crashed the restore (a stack overflow of the probe thread's listing:
    exit 139, nothing said, and `run` with it: QA128 D1). The listing descends into no
    directory already on its path, and only as deep as a replica's layout needs; a
    generation's wal/ linked elsewhere is still read, as Litestream reads it (a first
    fix followed no link, and restored the snapshot alone: QA131 D1)."""
    rep = tmp_path / "rep"
    history.write(str(rep))
    g = rep / "generations" / GEN
    os.symlink(g / "snapshots", g / "snapshots" / "loop")
    os.symlink(rep, g / "wal" / "up")
    (g / "wal").joinpath(*(["d"] * 40)).mkdir(parents=True)
    out = tmp_path / "out.db"
    p = lv(litevisor_bin, "restore", "-o", str(out), f"file://{rep}")
    assert p.returncode == 0, p.stderr
    assert rows(out) == history.states[-1][2]
    for cmd in ("snapshots", "wal", "generations"):
        p = lv(litevisor_bin, cmd, f"file://{rep}")
        assert p.returncode == 0 and "loop/" not in p.stdout and "/up/" not in p.stdout, \
            (cmd, p.stdout, p.stderr)
    linked = tmp_path / "linked"
    history.write(str(linked))
    g = linked / "generations" / GEN
    os.rename(g / "wal", tmp_path / "elsewhere")
    os.symlink(tmp_path / "elsewhere", g / "wal")
    for tool, out in ((litevisor_bin, "l1.db"), (litestream_bin, "l2.db")):
        p = subprocess.run([tool, "restore", "-o", str(tmp_path / out), f"file://{linked}"],
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stderr
        assert rows(tmp_path / out) == history.states[-1][2], (tool, p.stderr)


def test_a_corrupt_last_segment_is_a_failure_whether_found_applying_or_probing(
        tmp_path, litevisor_bin, history):
    """The same corrupt last segment was exit 1 when a restore from one replica found it
    applying, and exit 111 ("temporary failure": a unit retrying on it retries for ever)
    when the probe found it measuring: with -dry-run, or two replicas of the generation
    (QA128 D2). Every candidate that answered with its newest data corrupt is a failure."""
    a, b = tmp_path / "a", tmp_path / "b"
    history.write(str(a))
    last = history.seg_path(str(a), len(history.segments) - 1)
    with open(last, "r+b") as f:
        f.truncate(20)
    shutil.copytree(a, b)
    cfg = write_config(tmp_path / "lv.yml", tmp_path / "app.db",
                       [{"name": "a", "url": f"file://{a}"}, {"name": "b", "url": f"file://{b}"}])
    for args in (["-o", str(tmp_path / "o1.db"), f"file://{a}"],
                 ["-dry-run", "-o", str(tmp_path / "o2.db"), f"file://{a}"],
                 ["-config", str(cfg), "-o", str(tmp_path / "o3.db"), str(tmp_path / "app.db")]):
        p = lv(litevisor_bin, "restore", *args)
        assert p.returncode == 1, (args, p.returncode, p.stderr)
        assert "00000002_00000000.wal.lz4" in p.stderr, p.stderr
    assert not [f for f in os.listdir(tmp_path) if f.startswith("o")], os.listdir(tmp_path)
    # such candidates hold data: nothing settles on "empty" beside them, not a quorum of
    # empty replicas, nor allow-empty-when-unreachable, nor -if-replica-exists (QA131 D2)
    e1, e2 = tmp_path / "e1", tmp_path / "e2"
    e1.mkdir()
    e2.mkdir()
    for extra, reps in (({"mode": "quorum", "quorum": 2},
                         [("e1", e1), ("e2", e2), ("a", a), ("b", b)]),
                        ({"allow-empty-when-unreachable": "true"}, [("a", a), ("b", b)])):
        cfg = write_config(tmp_path / "q.yml", tmp_path / "q.db",
                           [{"name": n, "url": f"file://{r}"} for n, r in reps], restore=extra)
        p = lv(litevisor_bin, "restore", "-config", str(cfg), "-if-replica-exists",
               str(tmp_path / "q.db"))
        assert p.returncode == 1 and "00000002_00000000.wal.lz4" in p.stderr, \
            (extra, p.returncode, p.stderr)
        p = subprocess.run([litevisor_bin, "run", "-config", str(cfg), "--", "true"],
                           capture_output=True, text=True, timeout=60)
        assert p.returncode != 0 and not (tmp_path / "q.db").exists(), (extra, p.stderr)


def test_a_corrupt_last_segment_beside_a_silent_replica_is_temporary_probing_or_applying(
        tmp_path, litevisor_bin, history):
    """Replica a's newest segment corrupt, replica b not answering: -dry-run, whose probe
    found the damage, said 111 (b may hold the generation whole), while the restore, which
    found it applying, said 1 (QA133 D2). Both say 111 now, and why; a alone is still 1."""
    a, b = tmp_path / "a", tmp_path / "b"
    history.write(str(a))
    with open(history.seg_path(str(a), len(history.segments) - 1), "r+b") as f:
        f.truncate(20)
    b.write_text("not a directory: this replica does not answer")
    cfg = write_config(tmp_path / "lv.yml", tmp_path / "app.db",
                       [{"name": "a", "url": f"file://{a}"}, {"name": "b", "url": f"file://{b}"}])
    for extra in (["-dry-run"], []):
        p = lv(litevisor_bin, "restore", "-config", str(cfg), *extra, "-o",
               str(tmp_path / "o.db"), str(tmp_path / "app.db"))
        assert p.returncode == 111, (extra, p.returncode, p.stderr)
        assert "00000002_00000000.wal.lz4" in p.stderr, p.stderr
    assert "may hold it: try again once it answers" in p.stderr, p.stderr
    assert not (tmp_path / "o.db").exists()
    p = lv(litevisor_bin, "restore", "-config", str(cfg), "-replica", "a", "-o",
           str(tmp_path / "o.db"), str(tmp_path / "app.db"))
    assert p.returncode == 1, p.stderr


def test_a_replica_holding_less_than_its_closed_mark_says_so(tmp_path, litevisor_bin,
                                                            history):
    """The generation's last segment gone from the replica (a server that did not keep a
    PUT, a hand clean-up), its closed mark still there: the restore took what was left
    without a word (QA128 O1). It says that objects were lost; an intact replica says
    nothing."""
    rep, whole = tmp_path / "rep", tmp_path / "whole"
    history.write(str(rep))
    history.write(str(whole))
    os.unlink(history.seg_path(str(rep), len(history.segments) - 1))
    p = lv(litevisor_bin, "restore", "-o", str(tmp_path / "o1.db"), f"file://{rep}")
    assert p.returncode == 0, p.stderr
    assert rows(tmp_path / "o1.db") == history.states[-2][2]
    assert "objects were lost since" in p.stderr, p.stderr
    p = lv(litevisor_bin, "restore", "-o", str(tmp_path / "o2.db"), f"file://{whole}")
    assert p.returncode == 0 and " WARN " not in p.stderr, p.stderr


def test_a_target_out_of_inodes_is_said_as_such(tmp_path, litevisor_bin, history):
    """A filesystem with no free inode at each step in turn: SQLite, failing to make
    the temp database's -shm, retries read-only and leaves ENOENT, and the restore
    said "No such file or directory" for a file that was there (QA59 #5). Every
    failure names the full filesystem now."""
    rep = tmp_path / "rep"
    history.write(str(rep))
    small = tmp_path / "small"
    small.mkdir()
    script = ('for n in "$@"; do mount -t tmpfs -o size=40m,nr_inodes=$n tmpfs "$S" || exit 99; '
              '"$LV" restore -o "$S/r.db" "file://$REP" 2>"$S.err"; '
              'echo "$n $? $(tail -1 "$S.err")"; umount "$S"; done')
    p = subprocess.run(["unshare", "-rm", "sh", "-c", script, "sh"] +
                       [str(n) for n in range(3, 10)],
                       env=dict(os.environ, S=str(small), LV=litevisor_bin, REP=str(rep)),
                       capture_output=True, text=True, timeout=120)
    if p.returncode == 99 or "unshare" in p.stderr:
        pytest.skip(f"cannot mount a tmpfs here: {p.stderr.strip()}")
    lines = p.stdout.splitlines()
    assert len(lines) == 7, p.stdout + p.stderr
    failed = [ln for ln in lines if ln.split()[1] != "0"]
    assert failed and len(failed) < 7, p.stdout  # some fail, the most inodes restore
    for ln in failed:
        assert ln.split()[1] == "1" and "No space left on device" in ln, ln
        assert "No such file or directory" not in ln or "no free inodes" in ln, ln


def test_an_io_error_on_a_filesystem_that_counts_no_blocks_is_not_called_full(
        tmp_path, litevisor_bin, history):
    """ramfs (and FUSE filesystems without statfs) report 0 blocks and 0 free: every
    failed open of the temp database was called "its filesystem is full" (QA61 #2)."""
    rep = tmp_path / "rep"
    history.write(str(rep))
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    out = mnt / "out.db"
    script = ('mount -t ramfs ramfs "$M" || exit 99; '
              'LD_PRELOAD="$SO" FAULT_OP=pread FAULT_PATH="$M/out.db.litevisor-restore" FAULT_N=2 '
              'ASAN_OPTIONS=verify_asan_link_order=0 "$LV" restore -o "$M/out.db" "file://$REP"; '
              'echo "rc=$?"; umount "$M"')
    p = subprocess.run(["unshare", "-rm", "sh", "-c", script],
                       env=dict(os.environ, M=str(mnt), LV=litevisor_bin, REP=str(rep),
                                SO=os.path.join(TOOLS, "faultinject.so")),
                       capture_output=True, text=True, timeout=120)
    if p.returncode == 99 or "unshare" in p.stderr:
        pytest.skip(f"cannot mount a ramfs here: {p.stderr.strip()}")
    assert "rc=1" in p.stdout, p.stdout + p.stderr
    last = p.stderr.strip().splitlines()[-1]
    assert "Input/output error" in last, last
    said = last.replace(str(mnt), "")  # a path may hold "full"
    assert "full" not in said and "No space left" not in said, last
    assert not out.exists()


def test_existing_output_is_never_overwritten(tmp_path, litevisor_bin, history):
    rep = tmp_path / "rep"
    history.write(str(rep))
    out = tmp_path / "r.db"
    out.write_bytes(b"precious")
    p = lv(litevisor_bin, "restore", "-o", str(out), f"file://{rep}")
    assert p.returncode == 1
    assert "already exists" in p.stderr
    p = lv(litevisor_bin, "restore", "-if-db-not-exists", "-o", str(out), f"file://{rep}")
    assert p.returncode == 0, p.stderr
    assert out.read_bytes() == b"precious"
    p = lv(litevisor_bin, "restore", f"file://{rep}")
    assert p.returncode == 100  # a URL needs -o


@pytest.mark.parametrize("kind", ["dangling-symlink", "directory", "fifo"])
def test_an_output_that_is_no_database_file_is_refused_not_skipped(tmp_path, litevisor_bin,
                                                                   history, kind):
    """`restore -if-db-not-exists -o PATH` (a container's entrypoint) took a symlink to
    nothing, or a directory (Docker's bind mount of a missing host file), for an existing
    database: exit 0, nothing restored, and the app then made an empty database there
    (QA115 D1). Refused, exit 1, naming what is there; nothing is touched."""
    rep = tmp_path / "rep"
    history.write(str(rep))
    out = tmp_path / "app.db"
    if kind == "dangling-symlink":
        out.symlink_to(tmp_path / "real.db")
        want = f"{out} is a symlink to {tmp_path}/real.db, which does not exist"
    elif kind == "directory":
        out.mkdir()
        want = f"{out} is a directory, not a database"
    else:
        os.mkfifo(out)
        want = f"{out} is not a regular file, not a database"
    for flags in (["-if-db-not-exists"], []):
        p = lv(litevisor_bin, "restore", *flags, "-o", str(out), f"file://{rep}")
        assert p.returncode == 1 and want in p.stderr, p.stderr
    assert os.path.lexists(out) and not (tmp_path / "real.db").exists()
    assert sorted(os.listdir(tmp_path)) == ["app.db", "history", "rep"]


def test_a_restore_lock_that_cannot_be_taken_leaves_no_lock_file(tmp_path, litevisor_bin,
                                                                 history):
    """flock(2) failing with other than "held" (EIO, NFS's ENOLCK) failed the restore but
    left the lock file it had just made beside the target (QA115 O6)."""
    from conftest import faulty_env
    rep = tmp_path / "rep"
    history.write(str(rep))
    out = tmp_path / "out" / "app.db"
    out.parent.mkdir()
    p = subprocess.run([litevisor_bin, "restore", "-o", str(out), f"file://{rep}"],
                       capture_output=True, text=True, timeout=60,
                       env=faulty_env(op="flock", path=str(out.parent), errno=37, count=100))
    assert p.returncode == 1 and "No locks available" in p.stderr, p.stderr
    assert os.listdir(out.parent) == [], os.listdir(out.parent)


# ---------------------------------------------------------------- the `run` path

def restore_tool(cfg):
    tool = os.path.join(TOOLS, "restore_tool")
    assert os.access(tool, os.X_OK), f"build the test tools first ({tool})"
    p = subprocess.run([tool, str(cfg)], capture_output=True, text=True, timeout=60)
    res = [json.loads(l) for l in p.stdout.splitlines() if l.startswith("{")]
    return p, res


def test_run_path_first_deploy_empty_and_unreachable(tmp_path):
    empty1, empty2 = tmp_path / "e1", tmp_path / "e2"
    empty1.mkdir()
    empty2.mkdir()
    db = tmp_path / "app" / "app.db"
    db.parent.mkdir()
    cfg = write_config(tmp_path / "lv.yml", db, [
        {"name": "a", "url": f"file://{empty1}"}, {"name": "b", "url": f"file://{empty2}"}])
    p, res = restore_tool(cfg)
    assert p.returncode == 0, p.stderr
    assert res[0]["outcome"] == "empty"
    # one candidate down, none reachable with data: unreachable is not empty
    cfg = write_config(tmp_path / "lv2.yml", db, [
        {"name": "a", "url": f"file://{empty1}"}, s3_unreachable("peer", free_port())])
    p, res = restore_tool(cfg)
    assert p.returncode == 1
    assert res[0]["outcome"] == "unreachable"
    cfg = write_config(tmp_path / "lv3.yml", db, [s3_unreachable("peer", free_port())],
                       restore={"allow-empty-when-unreachable": "true"})
    p, res = restore_tool(cfg)
    assert p.returncode == 0 and res[0]["outcome"] == "empty", p.stderr


def test_run_path_restores_and_moves_strays_aside(tmp_path, history):
    rep = tmp_path / "rep"
    history.write(str(rep))
    db = tmp_path / "app" / "app.db"
    db.parent.mkdir()
    (db.parent / "app.db-wal").write_bytes(b"stray wal")
    cfg = write_config(tmp_path / "lv.yml", db, [{"name": "nas", "url": f"file://{rep}"}])
    p, res = restore_tool(cfg)
    assert p.returncode == 0, p.stderr
    assert res[0]["outcome"] == "restored" and res[0]["source"] == "nas"
    assert rows(db) == history.states[-1][2]
    strays = [n for n in os.listdir(db.parent) if n.startswith("app.db-wal.stray-")]
    assert len(strays) == 1
    assert (db.parent / strays[0]).read_bytes() == b"stray wal"
    assert not (db.parent / "app.db-wal").exists()
    assert "did not answer" not in p.stderr
    # a peer that does not answer: restored from the NAS, and the summary says so loudly
    db.unlink()
    cfg = write_config(tmp_path / "lv2.yml", db, [{"name": "nas", "url": f"file://{rep}"},
                                                  s3_unreachable("peer", free_port())])
    p, res = restore_tool(cfg)
    assert p.returncode == 0 and res[0]["outcome"] == "restored", p.stderr
    done = [ln for ln in p.stderr.splitlines() if "restore step done" in ln]
    assert done and "WARN" in done[0], p.stderr
    assert "1 of 2 candidates did not answer: they might hold newer data" in done[0], p.stderr


def test_run_path_existing_db_policies(tmp_path, history):
    rep = tmp_path / "rep"
    history.write(str(rep), upto=3)
    db = tmp_path / "app" / "app.db"
    db.parent.mkdir()
    cfg = write_config(tmp_path / "lv.yml", db, [{"name": "nas", "url": f"file://{rep}"}])
    p, res = restore_tool(cfg)
    assert res[0]["outcome"] == "restored", p.stderr
    # the replica is not ahead of the local database: keep it
    p, res = restore_tool(cfg)
    assert res[0]["outcome"] == "exists", p.stderr
    # the replica moves ahead (written elsewhere): newest-wins moves the local file aside
    shutil.rmtree(rep)
    history.write(str(rep))
    keep = write_config(tmp_path / "keep.yml", db, [{"name": "nas", "url": f"file://{rep}"}],
                        restore={"existing": "keep-local"})
    p, res = restore_tool(keep)
    assert res[0]["outcome"] == "exists", p.stderr
    assert rows(db) == history.states[2][2]
    p, res = restore_tool(cfg)
    assert res[0]["outcome"] == "restored", p.stderr
    assert rows(db) == history.states[-1][2]
    moved = res[0]["moved_aside"]
    assert moved and os.path.exists(moved)
    assert rows(moved) == history.states[2][2]  # kept, never deleted


def local_behind_replica(tmp_path, history):
    """A database restored from a file replica, which then moves ahead (written
    elsewhere): (db, cfg) for a newest-wins restore onto it."""
    rep = tmp_path / "rep"
    history.write(str(rep), upto=3)
    db = tmp_path / "app" / "app.db"
    db.parent.mkdir()
    cfg = write_config(tmp_path / "lv.yml", db, [{"name": "nas", "url": f"file://{rep}"}])
    p, res = restore_tool(cfg)
    assert res[0]["outcome"] == "restored", p.stderr
    shutil.rmtree(rep)
    history.write(str(rep))
    return db, cfg


@pytest.mark.parametrize("n", [1, 2, 3])
def test_a_failed_move_aside_leaves_the_database_in_place_with_its_state(tmp_path, history, n):
    """The directory's fsync fails after the nth rename of a newest-wins restore: the
    database's move aside (1), its state directory's (2), the restored file's into
    place (3). The move counted as failed though the rename was made, so the path was
    left without its database (1), the database without its state (2), or the
    restored file was taken back and the old one not put back (3) (QA59 #1). Now a
    move that may not outlive a crash is taken back, and so is the whole move aside
    when the restored file cannot take its place."""
    db, cfg = local_behind_replica(tmp_path, history)
    state = db.parent / ".app.db-litevisor"
    before = db.read_bytes()
    records = sorted(os.listdir(state))
    log = tmp_path / "faults"
    tool = os.path.join(TOOLS, "restore_tool")
    env = faulty("fsync", db.parent, n)
    env.update(FAULT_SUFFIX=f"/{db.parent.name}", FAULT_LOG=str(log))
    p = subprocess.run([tool, str(cfg)], capture_output=True, text=True, timeout=60, env=env)
    assert log.exists(), p.stderr  # the fault happened
    res = [json.loads(ln) for ln in p.stdout.splitlines() if ln.startswith("{")]
    assert res[0]["outcome"] == "failed" and "Input/output error" in res[0]["message"], res
    assert db.read_bytes() == before, p.stderr
    assert sorted(os.listdir(state)) == records, p.stderr
    assert sorted(os.listdir(db.parent)) == [".app.db-litevisor", "app.db"], p.stderr


def test_a_failed_move_back_is_not_called_done(tmp_path, history):
    """Two faults: the restored file cannot take its place, and the state directory's
    move back fails too. The log said "the local database stays in place with its
    state" while the state stayed aside (QA61 #1). It says what stayed where now."""
    db, cfg = local_behind_replica(tmp_path, history)
    state = db.parent / ".app.db-litevisor"
    before = sorted(os.listdir(state))
    # renames: the database aside (its -wal/-shm), the state directory aside, then the
    # restored file into place and the state's move back: both fail
    k = sum(os.path.exists(f"{db}{x}") for x in ("-wal", "-shm"))
    log = tmp_path / "faults"
    env = faulty("rename", f"{db.parent}/", 3 + k)
    env.update(FAULT_COUNT="2", FAULT_LOG=str(log))
    tool = os.path.join(TOOLS, "restore_tool")
    p = subprocess.run([tool, str(cfg)], capture_output=True, text=True, timeout=60, env=env)
    assert log.exists() and len(log.read_text().splitlines()) == 2, p.stderr
    assert "cannot move the state directory back" in p.stderr, p.stderr
    assert "stays in place with its state" not in p.stderr, p.stderr
    assert "but its state could not be put back" in p.stderr, p.stderr
    assert not state.exists()
    olds = [n for n in os.listdir(db.parent) if n.startswith(".app.db-litevisor.old-")]
    assert len(olds) == 1 and sorted(os.listdir(db.parent / olds[0])) == before


def test_a_database_never_goes_back_without_its_wal(tmp_path, history):
    """The move aside fails at its -wal and the move back of that -wal fails too: the
    database went back first and its -wal stayed beside no database, the app seeing
    its last commit gone (QA62 #1). The -wal goes first now; the database stays with
    it, where the log says."""
    db, cfg = local_behind_replica(tmp_path, history)
    subprocess.run(["/usr/bin/python3", "-c", "import os, sqlite3, sys\n"
                    "c = sqlite3.connect(sys.argv[1]); c.execute('PRAGMA journal_mode=wal')\n"
                    "c.execute('PRAGMA wal_autocheckpoint=0')\n"
                    "c.execute('INSERT INTO t (v) VALUES (1)'); c.commit(); os._exit(0)", str(db)],
                   check=True, timeout=30)
    assert os.path.exists(f"{db}-wal")
    want = rows(db)
    log = tmp_path / "faults"
    env = faulty("rename", "app.db-", 1)
    env.update(FAULT_COUNT="2", FAULT_LOG=str(log))
    p = subprocess.run([os.path.join(TOOLS, "restore_tool"), str(cfg)], capture_output=True,
                       text=True, timeout=60, env=env)
    assert log.exists(), p.stderr
    assert "stays where it was moved aside, with its -wal" in p.stderr, p.stderr
    moved = [n for n in os.listdir(db.parent) if n.startswith("app.db.replaced-") and
             not n.endswith(("-wal", "-shm"))]
    assert len(moved) == 1 and os.path.exists(db.parent / f"{moved[0]}-wal"), os.listdir(db.parent)
    assert moved[0] in p.stderr
    assert rows(db.parent / moved[0]) == want


def test_run_path_takes_the_restored_generations_database_id(tmp_path, history):
    """The restored generation's label (generations/<gen>/database/<id>) names the
    database from then on: the restore writes it into the new local state. A local
    database whose id differs from the chosen generation's label gets a WARN in the
    decision block (another database's replica at this location?); the choice stays."""
    rep = tmp_path / "rep"
    history.write(str(rep), upto=3)
    ours, other = "0123456789abcdef0123456789abcdef", "fedcba9876543210fedcba9876543210"
    (rep / "generations" / GEN / "database").mkdir()
    (rep / "generations" / GEN / "database" / ours).write_bytes(b"")
    db = tmp_path / "app" / "app.db"
    db.parent.mkdir()
    state = db.parent / ".app.db-litevisor"
    cfg = write_config(tmp_path / "lv.yml", db, [{"name": "nas", "url": f"file://{rep}"}])
    p, res = restore_tool(cfg)
    assert res[0]["outcome"] == "restored", p.stderr
    assert (state / "database-id").read_text() == ours + "\n"
    assert f"database_id={ours}" in candidate_line(p.stderr, "nas")
    assert "another database id" not in p.stderr
    # the replica moves ahead, labelled with the id the local state does not hold
    shutil.rmtree(rep)
    history.write(str(rep))
    (rep / "generations" / GEN / "database").mkdir()
    (rep / "generations" / GEN / "database" / other).write_bytes(b"")
    p, res = restore_tool(cfg)
    assert res[0]["outcome"] == "restored", p.stderr
    warn = [l for l in p.stderr.splitlines() if "another database id" in l]
    assert len(warn) == 1 and "WARN" in warn[0].upper(), p.stderr
    assert f"database_id={other} local_database_id={ours}" in warn[0]
    assert (state / "database-id").read_text() == other + "\n"
    # unlabelled (Litestream's, an older litevisor's): nothing is said, no id written
    shutil.rmtree(rep / "generations" / GEN / "database")
    db.unlink()
    p, res = restore_tool(cfg)
    assert res[0]["outcome"] == "restored", p.stderr
    assert "database_id=" not in p.stderr
    assert not (state / "database-id").exists()


ID_X, ID_Y, ID_Z = "0123456789abcdef" * 2, "fedcba9876543210" * 2, "00112233445566778899aabbccddeeff"
GEN3 = "00000000000000aa"


def label(rep, gen, dbid):
    os.makedirs(rep / "generations" / gen / "database", exist_ok=True)
    (rep / "generations" / gen / "database" / dbid).write_bytes(b"")


def fresh_target(db, state_id=None, state_gen=None):
    """No database at db; its state directory (and every one moved aside) gone, then,
    with state_id, one naming that database id (and state_gen as its generation)."""
    for n in os.listdir(db.parent):
        if n.startswith(("app.db", ".app.db-litevisor")):
            q = db.parent / n
            shutil.rmtree(q) if q.is_dir() else q.unlink()
    state = db.parent / ".app.db-litevisor"
    if state_id:
        state.mkdir()
        (state / "database-id").write_text(state_id + "\n")
    if state_gen:
        (state / "generation").write_text(state_gen + "\n")
    return state


def kept_id(state):
    f = state / "database-id"
    return f.read_text().strip() if f.exists() else None


def test_a_rollback_into_an_unlabelled_generation_takes_the_replicas_id(tmp_path,
                                                                       litevisor_bin, history):
    """A restore at the database's own path into a generation with no label (Litestream's)
    kept the id of whatever state directory stood at the path, another database's if it
    was stale, and on a fresh node none: replication drew a new id, and the replica's
    labelled (litevisor) generations became another database's (QA172 O2). The replicas'
    labels decide: one id, labelled on generations written after the restored one (the
    replica taken over from Litestream), is kept; after a labelled one, only when the state
    names it too; labels naming two ids keep none."""
    rep = tmp_path / "rep"
    db = tmp_path / "app" / "app.db"
    db.parent.mkdir()
    cfg = write_config(tmp_path / "lv.yml", db, [{"name": "nas", "url": f"file://{rep}"}])
    old, new = time.time() - 7200, time.time() - 3600

    def restore(gen):
        p = lv(litevisor_bin, "restore", "-config", str(cfg), "-generation", gen, str(db))
        assert p.returncode == 0, p.stderr
        assert rows(db) == history.states[-1][2]
        return p

    # Litestream's generation, then litevisor's (labelled) after it took the replica over
    history.write(str(rep), gen=GEN, t0=old)
    history.write(str(rep), gen=GEN2, t0=new)
    label(rep, GEN2, ID_X)
    state = fresh_target(db)  # a fresh node
    restore(GEN)
    assert kept_id(state) == ID_X
    state = fresh_target(db, ID_Y)  # a stale state directory of another database
    p = restore(GEN)
    assert kept_id(state) == ID_X, p.stderr
    assert "is not kept" in p.stderr and f"state_id={ID_Y}" in p.stderr, p.stderr
    label(rep, GEN3, ID_X)  # a label alone (its data deleted by hand): no time to order by
    state = fresh_target(db)
    p = restore(GEN)
    assert kept_id(state) == ID_X, p.stderr
    shutil.rmtree(rep / "generations" / GEN3)
    # a generation of two databases' labels at one location: none kept, said
    label(rep, GEN3, ID_Z)
    history.write(str(rep), gen=GEN3, t0=new + 600)
    state = fresh_target(db, ID_X, GEN2)
    p = restore(GEN)
    assert kept_id(state) is None, p.stderr
    assert "more than one database id" in p.stderr, p.stderr
    # an unlabelled generation written after the labelled one: whose it is cannot be told
    shutil.rmtree(rep)
    history.write(str(rep), gen=GEN2, t0=old)
    label(rep, GEN2, ID_X)
    history.write(str(rep), gen=GEN, t0=new)
    state = fresh_target(db, ID_Y)
    p = restore(GEN)
    assert kept_id(state) is None, p.stderr
    assert "whose it is cannot be told" in p.stderr, p.stderr
    state = fresh_target(db, ID_X)  # ... unless this node's own state names that id
    p = restore(GEN)
    assert kept_id(state) == ID_X, p.stderr
    # no label anywhere: the state's id only when a replica holds the generation it recorded
    shutil.rmtree(rep / "generations" / GEN2 / "database")
    state = fresh_target(db, ID_Y, "00000000000000bb")
    p = restore(GEN)
    assert kept_id(state) is None, p.stderr
    state = fresh_target(db, ID_Y, GEN2)
    p = restore(GEN)
    assert kept_id(state) == ID_Y, p.stderr
    # written while a labelled one was (two databases at one location): by last writes it
    # was "before" it and took its id (QA177 D1); not before its first write: none
    shutil.rmtree(rep)
    history.write(str(rep), gen=GEN2, t0=old, step=100)
    label(rep, GEN2, ID_X)
    history.write(str(rep), gen=GEN, t0=old + 50, step=1)
    state = fresh_target(db)
    p = restore(GEN)
    assert kept_id(state) is None, p.stderr
    assert "is not older than every generation labelled" in p.stderr, p.stderr


def test_run_path_keeps_a_confirmed_state_id_for_an_unlabelled_generation(tmp_path, history):
    """run's restore of a database that is gone kept no id for a generation with no label,
    even when its own state, moved aside, named the id the replica's other generations
    carry: replication drew a new one, and those were another database's (QA172 O2). The
    same rule as `restore`'s keeps it (docs/replication.md, "Database id")."""
    rep = tmp_path / "rep"
    db = tmp_path / "app" / "app.db"
    db.parent.mkdir()
    cfg = write_config(tmp_path / "lv.yml", db, [{"name": "nas", "url": f"file://{rep}"}])
    history.write(str(rep), gen=GEN2, t0=time.time() - 7200)
    label(rep, GEN2, ID_X)
    history.write(str(rep), gen=GEN, t0=time.time() - 3600)  # Litestream's again, newest
    state = fresh_target(db, ID_X, GEN2)
    p, res = restore_tool(cfg)
    assert res[0]["outcome"] == "restored", p.stderr
    assert kept_id(state) == ID_X, p.stderr
    state = fresh_target(db, ID_Y, GEN3)  # stale: not this replica's
    p, res = restore_tool(cfg)
    assert res[0]["outcome"] == "restored", p.stderr
    assert kept_id(state) is None, p.stderr


def test_a_state_directory_that_cannot_go_aside_fails_the_restore(tmp_path, litevisor_bin,
                                                                 history):
    """restore at the database's own path went on when its state directory (another
    database's, left there) could not be moved aside, and wrote the restored generation's
    id and the restored marker into it, mixed with what it held (QA172 O2); left as it was
    beside the restored file, replication then took its id (QA177 D2). It is moved aside
    before the restore, and one that cannot be fails it: nothing written anywhere."""
    rep = tmp_path / "rep"
    db = tmp_path / "app" / "app.db"
    db.parent.mkdir()
    cfg = write_config(tmp_path / "lv.yml", db, [{"name": "nas", "url": f"file://{rep}"}])
    history.write(str(rep))
    label(rep, GEN, ID_X)
    state = fresh_target(db, ID_Y, GEN3)
    log = tmp_path / "faults"
    env = faulty("rename", ".app.db-litevisor", 1)
    env["FAULT_LOG"] = str(log)
    p = subprocess.run([litevisor_bin, "restore", "-config", str(cfg), str(db)],
                       capture_output=True, text=True, timeout=60, env=env)
    assert log.exists(), p.stderr
    assert p.returncode == 1, p.stderr
    assert "cannot move the state directory" in p.stderr and "move it away by hand" in p.stderr
    assert not db.exists()
    assert sorted(os.listdir(state)) == ["database-id", "generation"], p.stderr
    assert kept_id(state) == ID_Y
    p = lv(litevisor_bin, "restore", "-config", str(cfg), str(db))  # once it can go
    assert p.returncode == 0, p.stderr
    assert rows(db) == history.states[-1][2]
    assert kept_id(state) == ID_X, p.stderr


def test_restore_at_the_own_path_prunes_state_copies_as_run_does(tmp_path, litevisor_bin,
                                                                 history):
    """restore at the database's own path moves a state directory found there aside, and
    restore.keep-replaced never pruned those copies: only run's restore step did (QA172
    O2). They are pruned alike, the one just made kept."""
    rep = tmp_path / "rep"
    db = tmp_path / "app" / "app.db"
    db.parent.mkdir()
    cfg = write_config(tmp_path / "lv.yml", db, [{"name": "nas", "url": f"file://{rep}"}],
                       restore={"keep-replaced": 1})
    history.write(str(rep))
    fresh_target(db, ID_Y)
    for day in (1, 2):
        old = db.parent / f".app.db-litevisor.old-2026-01-0{day}T00:00:00.000Z"
        old.mkdir()
        (old / "database-id").write_text(ID_Y + "\n")
    p = lv(litevisor_bin, "restore", "-config", str(cfg), str(db))
    assert p.returncode == 0, p.stderr
    copies = [n for n in os.listdir(db.parent) if n.startswith(".app.db-litevisor.old-")]
    assert len(copies) == 1 and "2026-01-0" not in copies[0], (copies, p.stderr)
    assert "deleted an old moved-aside copy" in p.stderr


# ---------------------------------------------------------------- S3 peers

class Proxy:
    """A loopback TCP proxy in front of an S3 server. delay: seconds added
    before each chunk the client sends (each request; with delay_only, only
    before requests whose request line holds that text); cut: for a GET whose
    path contains this text, pass the answer's headers and cut_after bytes of
    its body, then close (only the first cut_count such GETs, if given).
    requests: (connection number, request line) of each request, in order."""

    def __init__(self, port, delay=0.0, cut=None, cut_count=None, delay_only=None, cut_after=10):
        self.target, self.delay, self.cut, self.cut_left = port, delay, cut, cut_count
        self.cut_after = cut_after
        self.delay_only = delay_only
        self.requests, self.nconn = [], 0
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.cuts = 0
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.closed:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            s = socket.create_connection(("127.0.0.1", self.target))
            self.nconn += 1
            state = {"cut": False, "conn": self.nconn}
            threading.Thread(target=self._up, args=(c, s, state), daemon=True).start()
            threading.Thread(target=self._down, args=(s, c, state), daemon=True).start()

    def _up(self, c, s, state):
        try:
            while True:
                data = c.recv(65536)
                if not data:
                    break
                if self.delay and (not self.delay_only or
                                   self.delay_only.encode() in data.split(b"\r\n", 1)[0]):
                    time.sleep(self.delay)
                if data.split(b" ", 1)[0] in (b"GET", b"HEAD", b"PUT", b"POST", b"DELETE"):
                    self.requests.append((state["conn"], data.split(b"\r\n", 1)[0].decode()))
                if self.cut and data.startswith(b"GET ") and self.cut.encode() in \
                        data.split(b"\r\n", 1)[0] and self.cut_left != 0:
                    state["cut"] = True
                    if self.cut_left is not None:
                        self.cut_left -= 1
                s.sendall(data)
        except OSError:
            pass
        finally:
            for x in (c, s):
                try:
                    x.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def _forward(self, c, data):
        c.sendall(data)

    def _after_cut(self):
        """Once a cut answer's first bytes went: here the connection dies at once."""

    def _cut_head(self, head):
        """The cut answer's header block (without its blank line), as sent."""
        return head

    def _down(self, s, c, state):
        try:
            while not self.closed:
                data = s.recv(65536)
                if not data:
                    break
                if state["cut"]:
                    # the headers and cut_after bytes of the body, then _after_cut()
                    if "body" not in state:
                        end = data.find(b"\r\n\r\n")
                        if end < 0:
                            c.sendall(data)
                            continue
                        c.sendall(self._cut_head(data[:end]) + b"\r\n\r\n")
                        state["body"], data = 0, data[end + 4:]
                    take = data[:self.cut_after - state["body"]]
                    c.sendall(take)
                    state["body"] += len(take)
                    if state["body"] >= self.cut_after:
                        self.cuts += 1
                        self._after_cut()
                        break
                else:
                    self._forward(c, data)
        except OSError:
            pass
        finally:
            for x in (c, s):
                try:
                    x.shutdown(socket.SHUT_RDWR)
                    x.close()
                except OSError:
                    pass

    def close(self):
        self.closed = True
        self.sock.close()


def upload(history, srv, tmp, upto=None, prefix="app.db", gen=GEN):
    """Put the history's objects on an S3 server through storage_tool."""
    root = os.path.join(str(tmp), f"upload-{srv.port}-{upto}-{gen}")
    history.write(root, gen=gen, upto=upto)
    tool = os.path.join(TOOLS, "storage_tool")
    for dirpath, _, files in os.walk(root):
        for name in files:
            path = os.path.join(dirpath, name)
            key = os.path.relpath(path, root)
            p = subprocess.run([tool, "-s3", srv.bucket, "-endpoint", srv.endpoint, "-path", prefix,
                                "-access-key-id", srv.key, "-secret-access-key", srv.secret,
                                "put", path, key], capture_output=True, text=True, timeout=30)
            assert p.returncode == 0, p.stdout + p.stderr


def s3_peer(name, srv, port=None):
    return {"name": name, "type": "s3", "bucket": srv.bucket, "path": "app.db",
            "endpoint": f"http://127.0.0.1:{port or srv.port}", "access-key-id": srv.key,
            "secret-access-key": json.dumps(srv.secret)}


@pytest.mark.parametrize("command", ["generations", "snapshots", "wal"])
def test_listing_exit_code_says_whether_retrying_can_help(tmp_path, litevisor_bin, s3server,
                                                          command):
    """Credentials refused will not fix themselves: exit 1, not 111 ("temporary
    failure"), so a wrapper does not retry a configuration error for good. A
    server that does not answer is 111."""
    srv = s3server()
    db = tmp_path / "app.db"
    wrong = dict(s3_peer("nas", srv), **{"secret-access-key": "not-the-secret"})
    cfg = write_config(tmp_path / "bad.yml", db, [wrong])
    p = lv(litevisor_bin, command, "-config", str(cfg), str(db))
    assert p.returncode == 1, p.stderr
    cfg = write_config(tmp_path / "down.yml", db, [s3_unreachable("nas", free_port())])
    p = lv(litevisor_bin, command, "-config", str(cfg), str(db))
    assert p.returncode == 111, p.stderr
    # both at once: the one retrying cannot fix decides
    cfg = write_config(tmp_path / "both.yml", db, [s3_unreachable("peer", free_port()), wrong])
    p = lv(litevisor_bin, command, "-config", str(cfg), str(db))
    assert p.returncode == 1, p.stderr


class SkewProxy:
    """A loopback HTTP proxy that makes an S3 server's clock run `skew` seconds ahead
    (behind if negative), as it answers: its Date and Last-Modified headers and the
    listing's <LastModified> times are shifted. Requests pass unchanged (the real
    server checks their signatures and times)."""

    def __init__(self, port, skew):
        import email.utils
        import http.client
        import http.server
        from datetime import datetime, timedelta, timezone

        def http_date(v):
            t = email.utils.parsedate_to_datetime(v) + timedelta(seconds=skew)
            return email.utils.format_datetime(t.astimezone(timezone.utc), usegmt=True)

        def iso(m):
            t = datetime.strptime(m.group(1).decode(), "%Y-%m-%dT%H:%M:%S.%fZ")
            t += timedelta(seconds=skew)
            return b"<LastModified>" + t.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3].encode() + \
                b"Z</LastModified>"

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def relay(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else None
                up = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                try:
                    up.request(self.command, self.path, body=body, headers=dict(self.headers))
                    r = up.getresponse()
                    data = re.sub(rb"<LastModified>([^<]+)</LastModified>", iso, r.read())
                    self.send_response_only(r.status, r.reason)
                    for k, v in r.getheaders():
                        if k.lower() in ("date", "last-modified"):
                            v = http_date(v)
                        if k.lower() in ("transfer-encoding", "connection") or \
                                (k.lower() == "content-length" and self.command != "HEAD"):
                            continue
                        self.send_header(k, v)
                    if self.command != "HEAD":
                        self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(data)
                finally:
                    up.close()

            do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = relay

            def log_message(self, *a):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.mark.parametrize("skewed,skew", [("old", 300.5), ("new", -300.5)],
                         ids=["old-server-ahead", "new-server-behind"])
def test_a_server_clock_off_does_not_make_stale_data_the_newest(tmp_path, litevisor_bin,
                                                                s3server, history, skewed, skew):
    """Across servers the newest generation is the one with the latest object time. A
    server 5 minutes ahead made its old generation the newest (or one 5 minutes behind
    hid the new one), and the restore brought back stale data saying "newest data"
    (QA48 D1); `run`'s handover wait and its check of a local database read those times
    too. Each server's Date header tells its clock: object times are read on ours."""
    old, new = s3server(), s3server()
    upload(history, old, tmp_path, upto=3, gen=GEN2)  # the node before wrote this
    time.sleep(1.5)
    upload(history, new, tmp_path)  # ...and the next one this, after it
    proxy = SkewProxy((old if skewed == "old" else new).port, skew)
    try:
        db = tmp_path / "app.db"
        cfg = write_config(tmp_path / "lv.yml", db, [
            s3_peer("old", old, proxy.port if skewed == "old" else None),
            s3_peer("new", new, proxy.port if skewed == "new" else None)])
        p = lv(litevisor_bin, "restore", "-config", str(cfg), str(db))
        # listings print the server's own times, as Litestream does, and -timestamp reads
        # them so: a process measures the offset to a second, the next may differ by one,
        # and a time printed by one found nothing in the other (QA50 D2, QA52 D1)
        listed = {lv(litevisor_bin, "snapshots", "-config", str(cfg), str(db)).stdout
                  for _ in range(3)}
        created = [l.split()[-1] for l in next(iter(listed)).splitlines()
                   if l.startswith(skewed + " ")]
        at = [lv(litevisor_bin, "restore", "-config", str(cfg), "-replica", skewed,
                 "-timestamp", t, "-o", str(tmp_path / f"at-{i}.db"), str(db))
              for i, t in enumerate(created)]
    finally:
        proxy.close()
    assert p.returncode == 0, p.stderr
    assert "WINNER" in candidate_line(p.stderr, "new"), p.stderr
    assert rows(db) == history.states[-1][2]
    m = re.search(r"the server's clock differs from ours.*offset_s=([-+]\d+)\b", p.stderr)
    assert m and abs(int(m.group(1)) - skew) <= 1.5, p.stderr
    assert len(listed) == 1, listed
    assert created and all(r.returncode == 0 for r in at), [r.stderr for r in at]


def test_s3_freshest_wins_and_ties_go_to_the_fastest(tmp_path, litevisor_bin, s3server, history):
    p05, p06, nas = s3server(), s3server(), s3server()
    upload(history, p05, tmp_path, upto=3)  # stale
    upload(history, p06, tmp_path)
    upload(history, nas, tmp_path)
    slow = Proxy(p06.port, delay=0.15)
    try:
        db = tmp_path / "app.db"
        cfg = write_config(tmp_path / "lv.yml", db, [
            s3_peer("peer-05", p05), s3_peer("peer-06", p06, slow.port), s3_peer("nas", nas)],
            restore={"probe-timeout": "5s"})
        p = lv(litevisor_bin, "restore", "-config", str(cfg), str(db))
    finally:
        slow.close()
    assert p.returncode == 0, p.stderr
    assert "WINNER" in candidate_line(p.stderr, "nas"), p.stderr
    assert "fallback" in candidate_line(p.stderr, "peer-06")
    assert "stale" in candidate_line(p.stderr, "peer-05")
    assert rows(db) == history.states[-1][2]


def test_s3_on_loopback_is_never_reached_through_http_proxy(tmp_path, litevisor_bin, s3server,
                                                           history):
    """$http_proxy sent the S3 requests to a loopback endpoint (a node's own MinIO at
    localhost) through the proxy, where Litestream goes direct (QA89 D2). The stand-in
    proxy, on loopback too, would answer every request 200 with JSON."""
    srv = s3server()
    upload(history, srv, tmp_path)
    proxy, got = kuma_stand_in()
    try:
        db = tmp_path / "app.db"
        cfg = write_config(tmp_path / "lv.yml", db, [s3_peer("nas", srv)])
        p = subprocess.run([litevisor_bin, "restore", "-config", str(cfg), str(db)],
                           capture_output=True, text=True, timeout=60, env=dict(
                               os.environ, http_proxy=f"http://127.0.0.1:{proxy.server_port}",
                               no_proxy="", NO_PROXY=""))
    finally:
        proxy.shutdown()
    assert p.returncode == 0 and not got, (got, p.stderr)
    assert rows(db) == history.states[-1][2]


@pytest.mark.parametrize("fault", ["bucket", "secret"])
def test_s3_missing_bucket_or_bad_credentials_is_an_error_not_an_empty_replica(
        tmp_path, litevisor_bin, s3server, history, fault):
    # A typo in the bucket (S3 answers 404 NoSuchBucket to the listing) or in the
    # secret (403 SignatureDoesNotMatch): the server answered, but not "no data".
    # Taken as an empty replica, `run` would start the service on an empty database.
    srv = s3server()
    upload(history, srv, tmp_path)
    peer = s3_peer("peer", srv)
    if fault == "bucket":
        peer["bucket"] = srv.bucket + "-typo"
    else:
        peer["secret-access-key"] = json.dumps(srv.secret + "x")
    db = tmp_path / "app" / "app.db"
    db.parent.mkdir()
    cfg = write_config(tmp_path / "lv.yml", db, [peer])
    want = "does not exist" if fault == "bucket" else "SignatureDoesNotMatch"
    p = lv(litevisor_bin, "restore", "-config", str(cfg), str(db))
    assert p.returncode != 0 and not db.exists(), p.stderr
    last = p.stderr.strip().splitlines()[-1]
    assert want in last and "failing" in last, p.stderr
    p = lv(litevisor_bin, "restore", "-if-replica-exists", "-config", str(cfg), str(db))
    assert p.returncode != 0, p.stderr
    p = lv(litevisor_bin, "generations", "-config", str(cfg), str(db))
    assert p.returncode != 0 and want in p.stderr, p.stdout + p.stderr
    # the `run` path: not a first deploy
    p, res = restore_tool(cfg)
    assert res and res[0]["outcome"] == "unreachable", p.stdout + p.stderr
    assert want in res[0]["message"], res
    assert not db.exists()


def test_s3_snapshot_download_takes_the_probes_connection(tmp_path, litevisor_bin, s3server,
                                                         history):
    # The snapshot's GET is the restore's critical path: it must reuse the connection
    # the probe left open (over TLS to a far server a new one costs a handshake
    # first), not leave it to a WAL download that happened to start first.
    nas = s3server()
    upload(history, nas, tmp_path)
    seen = Proxy(nas.port)
    try:
        db = tmp_path / "app.db"
        cfg = write_config(tmp_path / "lv.yml", db, [s3_peer("nas", nas, seen.port)])
        p = lv(litevisor_bin, "restore", "-config", str(cfg), str(db))
    finally:
        seen.close()
    assert p.returncode == 0, p.stderr
    assert rows(db) == history.states[-1][2]
    snap = [c for c, line in seen.requests if ".snapshot.lz4 " in line]
    wal = [c for c, line in seen.requests if ".wal.lz4 " in line]
    assert len(snap) == 1 and len(wal) > 1, seen.requests
    first = {}
    for c, line in seen.requests:
        first.setdefault(c, line)
    assert ".snapshot.lz4 " not in first[snap[0]], seen.requests


def restore_past_failing_peer(tmp_path, litevisor_bin, s3server, history, make_failing):
    """Restore into tmp_path/app.db from peer-05, behind the proxy make_failing(port),
    and a slower NAS holding the same data. Returns (the completed restore, its
    seconds, the proxy)."""
    p05, nas = s3server(), s3server()
    upload(history, p05, tmp_path)
    upload(history, nas, tmp_path)
    failing = make_failing(p05.port)
    slow = Proxy(nas.port, delay=0.15)
    try:
        cfg = write_config(tmp_path / "lv.yml", tmp_path / "app.db", [
            s3_peer("peer-05", p05, failing.port), s3_peer("nas", nas, slow.port)],
            restore={"probe-timeout": "5s"})
        t0 = time.monotonic()
        p = lv(litevisor_bin, "restore", "-config", str(cfg), str(tmp_path / "app.db"),
               timeout=120)
        elapsed = time.monotonic() - t0
    finally:
        failing.close()
        slow.close()
    assert p.returncode == 0, p.stderr
    assert "WINNER" in candidate_line(p.stderr, "peer-05"), p.stderr
    assert rows(tmp_path / "app.db") == history.states[-1][2]
    return p, elapsed, failing


@pytest.mark.parametrize("fault", ["cut", "stall"])
def test_s3_peer_failing_mid_download_falls_back(tmp_path, litevisor_bin, s3server, history,
                                                 fault):
    # cut: the connection dies after the headers and a few bytes. stall: it stays
    # open and nothing more comes (a hung peer): the restore must give up on it
    # within restore's 10 s stall window, once, not wait out the uploads' 30 s
    # window and retry the same peer.
    p, elapsed, failing = restore_past_failing_peer(
        tmp_path, litevisor_bin, s3server, history,
        lambda port: Proxy(port, cut="/snapshots/") if fault == "cut"
        else Throttle(port, interval=0, hold="/snapshots/"))
    assert "falling back" in p.stderr
    assert not [n for n in os.listdir(tmp_path) if "litevisor-restore" in n]
    if fault == "cut":
        assert failing.cuts >= 1
        assert elapsed < 30
    else:
        assert failing.cuts == 1, "a stall is not retried on the same peer"
        assert "stalled" in p.stderr, p.stderr
        assert 9 < elapsed < 16, elapsed


def test_a_download_stopping_after_a_fast_start_is_dropped_within_the_stall_window(
        tmp_path, litevisor_bin, s3server, big_history):
    # peer-05 sends 20 KB of the snapshot at once, then nothing. curl's own low-speed
    # check averaged the rate over about 5 s before its 10 s began: the stall was
    # seen after about 16 s, not after restore's documented 10 s (QA79 D1).
    p, elapsed, failing = restore_past_failing_peer(
        tmp_path, litevisor_bin, s3server, big_history,
        lambda port: Throttle(port, interval=0, hold="/snapshots/", hold_after=20000))
    assert failing.cuts == 1 and "stalled" in p.stderr, p.stderr
    assert 9 < elapsed < 14, elapsed


class CutThenGone(Proxy):
    """Proxy's cut, and then its port closed: the server went down mid-download."""

    def _after_cut(self):
        self.sock.close()


def test_a_server_gone_mid_download_is_left_at_once(tmp_path, litevisor_bin, s3server, history):
    # A refused connection ends a candidate's probe at once, but a download's resume
    # was retried four times (about 2 s) before falling back (QA79).
    p, _, gone = restore_past_failing_peer(
        tmp_path, litevisor_bin, s3server, history,
        lambda port: CutThenGone(port, cut="/snapshots/"))
    assert gone.cuts >= 1 and "falling back" in p.stderr, p.stderr
    # (a pooled connection the proxy reset is retried; a refused one is not)
    retried = [l for l in p.stderr.splitlines() if "request retried" in l and
               ("connect to" in l or "Couldn't connect" in l)]
    assert not retried, p.stderr


def test_a_pause_on_our_side_is_no_stall_of_the_server(tmp_path, litevisor_bin, s3server):
    # A write of the restore's temp database held 16 s (a slow disk): the ring fills,
    # the download's sink blocks, and no progress call comes meanwhile. The first one
    # after it took the seconds it missed for seconds of nothing from the server and
    # dropped a healthy download as stalled (QA80 D2): the window starts over.
    p05, nas = s3server(), s3server()
    src = tmp_path / "src.db"
    con = sqlite3.connect(src, isolation_level=None)
    con.execute("PRAGMA journal_mode=wal")
    con.execute("CREATE TABLE t(x BLOB)")
    con.execute("BEGIN")
    for _ in range(500):  # 25 MB: more than the ring and the socket buffers hold
        con.execute("INSERT INTO t VALUES (randomblob(50000))")
    con.execute("COMMIT")
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    for srv in (p05, nas):
        cfg = write_config(tmp_path / "rep.yml", src, [s3_peer("s3", srv)])
        r = subprocess.Popen([litevisor_bin, "replicate", "-config", str(cfg)],
                             stderr=subprocess.PIPE, text=True)
        try:
            for line in r.stderr:
                if "snapshot written" in line:
                    break
        finally:
            r.send_signal(signal.SIGTERM)
            r.communicate(timeout=60)
    paced = Throttle(p05.port, chunk=65536, interval=0.02)  # about 3 MB/s
    slow = Proxy(nas.port, delay=0.15)
    db = tmp_path / "out" / "app.db"
    db.parent.mkdir()
    arm = tmp_path / "arm"
    env = dict(os.environ, LD_PRELOAD=os.path.join(TOOLS, "faultinject.so"), FAULT_OP="write",
               FAULT_PATH="app.db.litevisor-restore", FAULT_SUFFIX="app.db.litevisor-restore",
               FAULT_ARM=str(arm), FAULT_DELAY_MS="16000", FAULT_COUNT="1",
               ASAN_OPTIONS="verify_asan_link_order=0")
    cfg = write_config(tmp_path / "lv.yml", db, [
        s3_peer("peer-05", p05, paced.port), s3_peer("nas", nas, slow.port)],
        restore={"probe-timeout": "5s"})
    try:
        proc = subprocess.Popen([litevisor_bin, "restore", "-config", str(cfg), str(db)],
                                stderr=subprocess.PIPE, text=True, env=env)
        tmp = tmp_path / "out" / "app.db.litevisor-restore"
        end = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < end:
            if tmp.exists() and tmp.stat().st_size >= 4 << 20:
                arm.touch()
                break
            time.sleep(0.05)
        _, err = proc.communicate(timeout=120)
    finally:
        paced.close()
        slow.close()
    assert arm.exists(), err
    assert proc.returncode == 0, err
    assert "stalled" not in err and "falling back" not in err, err
    assert "WINNER" in candidate_line(err, "peer-05"), err


def test_a_stall_on_the_only_candidate_is_resumed_not_fatal(tmp_path, litevisor_bin, s3server,
                                                           history):
    """With nobody else holding the data, a download that stalls once failed the whole
    restore (exit 111; `run` would not start the service) where a cut connection at the
    same point is resumed (QA44 #4). It is resumed too, with a Range from where it stood."""
    srv = s3server()
    upload(history, srv, tmp_path)
    hung = Throttle(srv.port, interval=0, hold="/snapshots/")
    hung.cut_left = 1  # the first snapshot GET only
    try:
        db = tmp_path / "app.db"
        cfg = write_config(tmp_path / "lv.yml", db, [s3_peer("nas", srv, hung.port)],
                           restore={"probe-timeout": "5s"})
        t0 = time.monotonic()
        p = lv(litevisor_bin, "restore", "-config", str(cfg), str(db), timeout=120)
        elapsed = time.monotonic() - t0
    finally:
        hung.close()
    assert p.returncode == 0, p.stderr
    assert hung.cuts == 1 and "request retried" in p.stderr, p.stderr
    gets = [line for _, line in hung.requests if line.startswith("GET ") and "/snapshots/" in line]
    assert len(gets) == 2, hung.requests
    assert rows(db) == history.states[-1][2]
    assert elapsed < 30, elapsed


class Unsized(Proxy):
    """Proxy's cut, with the cut answer's Content-Length taken out and Connection:
    close put in: its body then ends where the connection closes, as HTTP/1.1 allows
    (some proxies answer so), and the client cannot tell that it was cut."""

    def _cut_head(self, head):
        lines = [h for h in head.split(b"\r\n")
                 if not h.lower().startswith((b"content-length:", b"connection:"))]
        return b"\r\n".join(lines + [b"Connection: close"])


def test_a_download_without_content_length_closed_early_is_resumed_not_corrupt(
        tmp_path, litevisor_bin, s3server, history):
    """An answer without Content-Length ends where the server closes the connection, so
    a connection dropped midway looked complete to the client: the snapshot was then
    called corrupt, and with no other candidate the restore failed (QA44 #5). The
    object's size (HEAD) now tells, and the rest is fetched with a Range."""
    srv = s3server()
    upload(history, srv, tmp_path)
    cut = Unsized(srv.port, cut="/snapshots/", cut_count=1)
    try:
        db = tmp_path / "app.db"
        cfg = write_config(tmp_path / "lv.yml", db, [s3_peer("nas", srv, cut.port)],
                           restore={"probe-timeout": "5s"})
        p = lv(litevisor_bin, "restore", "-config", str(cfg), str(db), timeout=120)
    finally:
        cut.close()
    assert p.returncode == 0, p.stderr
    assert cut.cuts == 1, cut.requests
    assert "without Content-Length, ended at byte" in p.stderr, p.stderr
    assert "corrupt" not in p.stderr, p.stderr
    gets = [line for _, line in cut.requests if line.startswith("GET ") and "/snapshots/" in line]
    assert len(gets) == 2, cut.requests
    # only that answer is checked: the others came with their length
    assert len([1 for _, line in cut.requests if line.startswith("HEAD ")]) == 1, cut.requests
    assert rows(db) == history.states[-1][2]


@pytest.mark.parametrize("peer", ["same", "more"])
def test_a_peer_stalling_while_its_end_is_measured_costs_only_the_stall_window(
        tmp_path, litevisor_bin, s3server, history, peer):
    # Both peers hold the same generation, so each one's last segment is measured
    # before deciding. peer-05 sends that segment's first bytes, then nothing: it
    # held the restore for its idle-timeout times five attempts, about 30 s (QA13).
    # A stall now drops it after restore's 10 s stall window. more: its listing
    # shows a last segment past the NAS's end, so it holds newer data: the NAS's
    # older data was restored silently (QA15); now the restore fails, temporarily.
    p05, nas = s3server(), s3server()
    upload(history, p05, tmp_path)
    upload(history, nas, tmp_path, upto=len(history.segments) - (1 if peer == "more" else 0))
    stalled = Throttle(p05.port, interval=0, hold="/wal/")
    try:
        db = tmp_path / "app.db"
        cfg = write_config(tmp_path / "lv.yml", db, [
            s3_peer("peer-05", p05, stalled.port), s3_peer("nas", nas, nas.port)])
        t0 = time.monotonic()
        p = lv(litevisor_bin, "restore", "-config", str(cfg), str(db), timeout=120)
        elapsed = time.monotonic() - t0
    finally:
        stalled.close()
    assert "stalled" in candidate_line(p.stderr, "peer-05"), p.stderr
    assert stalled.cuts == 1, "a stall is not retried on the same peer"
    assert 9 < elapsed < 16, elapsed
    if peer == "more":
        assert p.returncode == 111, p.stderr
        assert "NEWEST DATA, failing" in candidate_line(p.stderr, "peer-05"), p.stderr
        assert "not restoring older data" in p.stderr.strip().splitlines()[-1]
        assert not db.exists()
        return
    assert p.returncode == 0, p.stderr
    assert "WINNER" in candidate_line(p.stderr, "nas"), p.stderr
    assert rows(db) == history.states[-1][2]


@pytest.mark.parametrize("status,code", [(503, "SlowDown"), (500, "InternalError")])
def test_one_transient_error_while_probing_is_retried_not_unreachable(
        tmp_path, litevisor_bin, s3server, history, status, code):
    # One 503/500 on the fresher peer's first listing: retried within the probe
    # deadline. Before, the peer counted as unreachable and the stale NAS won.
    from test_storage import FaultProxy
    peer = s3server()
    upload(history, peer, tmp_path)
    nas = tmp_path / "nas"
    history.write(str(nas), upto=2)
    proxy = FaultProxy(peer.port, 1, status=status, code=code)
    try:
        db = tmp_path / "app.db"
        cfg = write_config(tmp_path / "lv.yml", db, [
            s3_peer("peer-05", peer, port=proxy.port), {"name": "nas", "url": f"file://{nas}"}])
        p = lv(litevisor_bin, "restore", "-config", str(cfg), str(db))
    finally:
        proxy.close()
    assert p.returncode == 0, p.stderr
    assert proxy.failed == 1, p.stderr
    assert "WINNER" in candidate_line(p.stderr, "peer-05"), p.stderr
    assert rows(db) == history.states[-1][2]


class BadAnswers(ListHider):
    """A loopback proxy in front of an S3 server that answers some requests wrongly, each
    request on a connection of its own upstream. mode "looping": a listing's answer is
    marked truncated with a fresh continuation token, and every request for a next page is
    answered with the same keys again (a server that ignores continuation-token); mode
    "endless-error": a GET whose path holds `match` is answered 500 with a body that never
    ends; mode "longer": such a GET gets its object with `extra` bytes more (Content-Length
    raised to match); mode "redirect": every request is redirected (307) to `match`;
    mode "repeating": a listing by prefixes comes in two pages, the second repeating the
    first's last common prefix (as older MinIO and LocalStack answer); mode "zero-listed":
    a listing gives the objects whose key holds `match` as 0 bytes, and their GETs are
    answered as in mode "longer".
    Everything else is forwarded as is."""

    def __init__(self, upstream_port, mode, match="/wal/", extra=1 << 20):
        self.mode, self.match, self.extra = mode, match, extra
        self.pages = self.tampered = self.zeroed = 0
        self.sent = 0  # bytes of endless error bodies sent
        self.page = None
        self.closed = False
        super().__init__(upstream_port)

    def close(self):
        self.closed = True
        super().close()

    def refuse(self, line, c):
        if self.mode == "redirect":
            c.sendall(b"HTTP/1.1 307 Temporary Redirect\r\nLocation: " + self.match.encode() +
                      b"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            return True
        if self.mode != "endless-error" or not line.startswith(b"GET ") or \
                self.match.encode() not in line:
            return False
        self.tampered += 1
        try:
            c.sendall(b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/xml\r\n"
                      b"Connection: close\r\n\r\n<?xml version=\"1.0\"?><Error><Code>"
                      b"InternalError</Code><Message>")
            end = time.monotonic() + 60
            while not self.closed and time.monotonic() < end:
                c.sendall(b"x" * 16384)
                self.sent += 16384
                time.sleep(0.005)
        except OSError:
            pass
        return True

    def _page(self, body):
        return with_body(b"HTTP/1.1 200 OK\r\nContent-Type: application/xml\r\n"
                         b"Content-Length: 0\r\nConnection: close", body)

    def answer(self, line, req):
        listing = b"list-type=2" in line
        if self.mode == "repeating" and listing and b"delimiter=" in line:
            # two pages: the whole listing, then its last common prefix again
            self.pages += 1
            if b"continuation-token=" not in line:
                self.page = (self.forward(req) or b"").partition(b"\r\n\r\n")[2]
                return self._page(re.sub(rb"<IsTruncated>false</IsTruncated>",
                                         b"<IsTruncated>true</IsTruncated><NextContinuation"
                                         b"Token>t1</NextContinuationToken>", self.page))
            last = re.findall(rb"<CommonPrefixes>.*?</CommonPrefixes>", self.page, re.S)[-1]
            return self._page(re.sub(rb"<CommonPrefixes>.*</CommonPrefixes>", last, self.page,
                                     flags=re.S))
        if self.mode == "looping" and listing:
            self.pages += 1
            if b"continuation-token=" not in line or self.page is None:
                self.page = re.sub(rb"<IsTruncated>false</IsTruncated>",
                                   b"<IsTruncated>true</IsTruncated>",
                                   (self.forward(req) or b"").partition(b"\r\n\r\n")[2])
            tok = f"<NextContinuationToken>t{self.pages}</NextContinuationToken>".encode()
            return self._page(re.sub(rb"<NextContinuationToken>.*?</NextContinuationToken>", b"",
                                     self.page).replace(b"</ListBucketResult>",
                                                        tok + b"</ListBucketResult>"))
        if self.mode == "zero-listed" and listing:
            ans = self.forward(req)
            if not ans:
                return ans
            ahead, _, abody = ans.partition(b"\r\n\r\n")

            def zero(m):
                if self.match.encode() not in m.group(0):
                    return m.group(0)
                self.zeroed += 1
                return re.sub(rb"<Size>\d+</Size>", b"<Size>0</Size>", m.group(0))
            return with_body(ahead, re.sub(rb"<Contents>.*?</Contents>", zero, abody, flags=re.S))
        ans = self.forward(req)
        if ans and self.mode in ("longer", "zero-listed") and line.startswith(b"GET ") and \
                self.match.encode() in line:
            self.tampered += 1
            ahead, _, abody = ans.partition(b"\r\n\r\n")
            return with_body(ahead, abody + b"\0" * self.extra)
        return ans


def restore_through(tmp_path, litevisor_bin, s3server, history, mode, **kw):
    """The history on an S3 server, restored through a BadAnswers proxy of mode (kw: its
    other arguments): (the restore's CompletedProcess, the proxy, the target, seconds)."""
    srv = s3server()
    upload(history, srv, tmp_path)
    proxy = BadAnswers(srv.port, mode, **kw)
    db = tmp_path / "app.db"
    try:
        cfg = write_config(tmp_path / "lv.yml", db, [s3_peer("peer", srv, port=proxy.port)])
        t0 = time.monotonic()
        p = lv(litevisor_bin, "restore", "-config", str(cfg), str(db), timeout=90)
        return p, proxy, db, time.monotonic() - t0
    finally:
        proxy.close()


def test_a_listing_that_goes_back_fails_instead_of_looping(tmp_path, litevisor_bin, s3server,
                                                          history):
    """A server that ignores continuation-token answers every next page with the same keys
    under a new token: the listing was followed for ever, growing, with nothing said
    (QA167 D1). A page whose keys are not after the last page's fails the listing."""
    srv = s3server()
    upload(history, srv, tmp_path)
    proxy = BadAnswers(srv.port, "looping")
    try:
        cfg = write_config(tmp_path / "lv.yml", tmp_path / "app.db",
                           [s3_peer("peer", srv, port=proxy.port)])
        t0 = time.monotonic()
        p = lv(litevisor_bin, "wal", "-config", str(cfg), str(tmp_path / "app.db"))
        took = time.monotonic() - t0
    finally:
        proxy.close()
    assert p.returncode != 0, p.stdout
    assert "the listing goes back" in p.stderr, p.stderr
    assert "continuation-token" in p.stderr, p.stderr
    assert proxy.pages <= 10 and took < 10, (proxy.pages, took, p.stderr)


def test_a_page_repeating_the_last_pages_last_prefix_is_taken(tmp_path, litevisor_bin,
                                                              s3server, history):
    """Some servers repeat the last page's last common prefix at the top of the next one
    (older MinIO, LocalStack): the check against listings that go back refused it, and
    the restore failed (QA169 D1). A page may start where the last one ended."""
    p, proxy, db, _ = restore_through(tmp_path, litevisor_bin, s3server, history, "repeating")
    assert p.returncode == 0, p.stderr
    assert proxy.pages >= 2, p.stderr
    assert rows(db) == history.states[-1][2]


def test_an_error_answer_whose_body_never_ends_is_taken_as_the_error(tmp_path, litevisor_bin,
                                                                    s3server, history):
    """A 500 whose body never ends: past the 64 KiB kept of an error body, its bytes were
    read on, counted as progress, and the attempt never ended: the restore ran on, its
    byte count frozen (QA167 D3). The answer is cut at the cap and taken as a 500: retried,
    then the candidate fails, naming it."""
    p, proxy, db, took = restore_through(tmp_path, litevisor_bin, s3server, history,
                                         "endless-error")
    assert p.returncode != 0, p.stderr
    assert "HTTP 500" in p.stderr, p.stderr
    assert proxy.tampered >= 2, p.stderr  # retried
    assert proxy.sent < 4 * 1024 * 1024 and took < 40, (proxy.sent, took)
    assert not db.exists()


def test_a_redirect_says_where_it_pointed(tmp_path, litevisor_bin, s3server):
    """A 307 (an endpoint in front of another, a bucket moved) is not followed: the
    signature covers the host. Its error said only "HTTP 307" (QA167 O4); it names the
    Location the server gave, which makes a wrong endpoint plain."""
    srv = s3server()
    proxy = BadAnswers(srv.port, "redirect", match="http://127.0.0.2:9/moved-here")
    try:
        cfg = write_config(tmp_path / "lv.yml", tmp_path / "app.db",
                           [s3_peer("peer", srv, port=proxy.port)])
        p = lv(litevisor_bin, "generations", "-config", str(cfg), str(tmp_path / "app.db"))
    finally:
        proxy.close()
    assert p.returncode != 0, p.stdout
    assert "HTTP 307 (redirected to http://127.0.0.2:9/moved-here" in p.stderr, p.stderr


def test_a_segment_longer_than_listed_is_refused_not_written_on(tmp_path, litevisor_bin,
                                                               s3server, history):
    """A segment's GET answered with more bytes than the listing gave (a broken server or
    proxy; one whose body never ended filled the disk beside the target, QA167 D2): no
    more than the listed size is written, and the candidate fails naming the cause."""
    p, proxy, db, _ = restore_through(tmp_path, litevisor_bin, s3server, history, "longer",
                                      extra=8 << 20)
    assert p.returncode != 0, p.stderr
    assert "the server sent more than" in p.stderr and "the listing gave" in p.stderr, p.stderr
    assert proxy.tampered >= 1
    assert not db.exists()
    assert not [f for f in os.listdir(tmp_path) if "litevisor-restore" in f]


def test_a_segment_listed_with_no_bytes_gets_none_not_an_unbounded_download(
        tmp_path, litevisor_bin, s3server, history):
    """A WAL segment past offset 0 that the listing gave as 0 bytes was downloaded with no
    bound (a limit of 0 read as none), so a body that never ends filled the disk beside the
    target (QA172 O2; QA167 D2 bounded only the others). 0 bytes listed is 0 allowed."""
    k = next(i for i, (_, off, _) in enumerate(history.segments[:-1]) if off > 0)
    idx, off, _ = history.segments[k]
    p, proxy, db, _ = restore_through(tmp_path, litevisor_bin, s3server, history, "zero-listed",
                                      match=f"wal/{idx:08x}_{off:08x}.wal.lz4", extra=8 << 20)
    assert proxy.zeroed >= 1 and proxy.tampered >= 1, p.stderr
    assert p.returncode != 0, p.stderr
    assert "the server sent more than 0 bytes, the listing gave 0" in p.stderr, p.stderr
    assert not db.exists()
    assert not [f for f in os.listdir(tmp_path) if "litevisor-restore" in f]


def test_s3_download_cut_short_once_is_resumed_not_failed(tmp_path, litevisor_bin, s3server,
                                                         history):
    """One snapshot GET whose connection closes mid-body ("transfer closed with N bytes
    remaining") is resumed from the same peer (a Range request for the rest), as a 500
    or a reset would be retried: the restore neither fails nor falls back."""
    p05 = s3server()
    upload(history, p05, tmp_path)
    once = Proxy(p05.port, cut="/snapshots/", cut_count=1)
    try:
        db = tmp_path / "app.db"
        cfg = write_config(tmp_path / "lv.yml", db, [s3_peer("peer-05", p05, once.port)])
        p = lv(litevisor_bin, "restore", "-config", str(cfg), str(db), timeout=60)
    finally:
        once.close()
    assert p.returncode == 0, p.stderr
    assert once.cuts == 1 and "request retried" in p.stderr, p.stderr
    assert "falling back" not in p.stderr
    assert rows(db) == history.states[-1][2]


def test_s3_peer_down_and_blackholed_nas_used(tmp_path, litevisor_bin, s3server, history):
    nas = s3server()
    upload(history, nas, tmp_path)
    hole = Blackhole()
    try:
        db = tmp_path / "app.db"
        cfg = write_config(tmp_path / "lv.yml", db, [
            s3_unreachable("peer-05", free_port()), s3_unreachable("peer-06", hole.port),
            s3_peer("nas", nas)])
        t0 = time.monotonic()
        p = lv(litevisor_bin, "restore", "-config", str(cfg), str(db))
        elapsed = time.monotonic() - t0
    finally:
        hole.close()
    assert p.returncode == 0, p.stderr
    assert elapsed < 2.5, f"{elapsed:.2f}s"
    assert "UNREACHABLE" in candidate_line(p.stderr, "peer-06")
    assert "state=unreachable" in candidate_line(p.stderr, "peer-06")
    assert rows(db) == history.states[-1][2]


def test_strict_modes_wait_for_answers(tmp_path, litevisor_bin, history):
    nas = tmp_path / "nas"
    history.write(str(nas))
    db = tmp_path / "app.db"
    reps = [s3_unreachable("peer-05", free_port()), {"name": "nas", "url": f"file://{nas}"}]
    cfg = write_config(tmp_path / "all.yml", db, reps,
                       restore={"mode": "all", "wait-timeout": "1500ms", "probe-timeout": "500ms"})
    t0 = time.monotonic()
    p = lv(litevisor_bin, "restore", "-config", str(cfg), str(db))
    elapsed = time.monotonic() - t0
    assert p.returncode == 111, p.stderr
    assert 1.2 < elapsed < 4, elapsed  # waited (bounded) for the missing answer
    assert not db.exists()
    # a refusal does not read like a restore: the nas is ranked, never called the winner
    assert "WINNER" not in p.stderr, p.stderr
    assert "not used: mode all needs 2 answer(s)" in candidate_line(p.stderr, "nas")
    assert "not settled: mode all needs 2 answer(s), 1 answered" in p.stderr, p.stderr
    cfg = write_config(tmp_path / "quorum.yml", db, reps,
                       restore={"mode": "quorum", "quorum": 1, "wait-timeout": "5s",
                                "probe-timeout": "500ms"})
    t0 = time.monotonic()
    p = lv(litevisor_bin, "restore", "-config", str(cfg), str(db))
    assert p.returncode == 0, p.stderr
    assert time.monotonic() - t0 < 3
    assert rows(db) == history.states[-1][2]


def test_a_quorum_answering_empty_settles_restore_and_run_alike(tmp_path, litevisor_bin):
    # mode quorum: once the quorum answered and none holds data, that is settled
    # ("nothing there"), for `restore` (no backup: exit 1, 0 with -if-replica-exists)
    # as for `run` (starts empty); before, `restore` said "unreachable" (111).
    db = tmp_path / "app.db"
    reps = [s3_unreachable("peer-05", free_port()), {"name": "nas", "url": f"file://{tmp_path}/nas"}]
    cfg = write_config(tmp_path / "quorum.yml", db, reps,
                       restore={"mode": "quorum", "quorum": 1, "probe-timeout": "300ms"})
    p = lv(litevisor_bin, "restore", "-config", str(cfg), str(db))
    assert p.returncode == 1 and "no matching backups" in p.stderr, p.stderr
    p = lv(litevisor_bin, "restore", "-if-replica-exists", "-config", str(cfg), str(db))
    assert p.returncode == 0, p.stderr
    p = subprocess.run([litevisor_bin, "run", "-config", str(cfg), "--", "true"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and "a quorum (1) answered and none holds data" in p.stderr, p.stderr


@pytest.mark.parametrize("existing", ["newest-wins", "keep-local"])
def test_run_path_empty_file_at_the_database_path_is_no_database(tmp_path, litevisor_bin,
                                                                  history, existing):
    # `sqlite3 app.db .tables` on a new node, or a touch, leaves a 0-byte file: it
    # holds no data, so it is moved aside (kept) and the replica restored, instead
    # of being kept as "current" by its recent mtime (the service then started
    # empty and its new generation hid the real data from every later restore).
    rep = tmp_path / "rep"
    history.write(str(rep))
    db = tmp_path / "app" / "app.db"
    db.parent.mkdir()
    db.write_bytes(b"")
    cfg = write_config(tmp_path / "lv.yml", db, [{"name": "nas", "url": f"file://{rep}"}],
                       restore={"existing": existing})
    p = subprocess.run([litevisor_bin, "run", "-config", str(cfg), "--", "true"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert rows(db) == history.states[-1][2], p.stderr
    assert [f for f in os.listdir(db.parent) if f.startswith("app.db.empty-")], p.stderr
    # a 0-byte file beside a WAL with frames is a database never checkpointed: kept
    db2 = tmp_path / "wal" / "app.db"
    db2.parent.mkdir()
    c = sqlite3.connect(db2)
    c.execute("PRAGMA journal_mode=wal")
    c.execute("CREATE TABLE mine(v)")
    c.commit()
    shutil.copy(str(db2) + "-wal", tmp_path / "saved-wal")
    c.close()
    db2.write_bytes(b"")
    shutil.copy(tmp_path / "saved-wal", str(db2) + "-wal")
    cfg2 = write_config(tmp_path / "lv2.yml", db2, [{"name": "nas", "url": f"file://{rep}"}],
                        restore={"existing": "keep-local"})
    p = subprocess.run([litevisor_bin, "run", "-config", str(cfg2), "--", "true"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert not [f for f in os.listdir(db2.parent) if ".empty-" in f], p.stderr


def test_run_path_existing_db_without_state_is_compared_by_time(tmp_path, history):
    """A database with no state of either tool (state lost, copied in by hand) is no
    reason to keep it blindly: the winner's newest object is compared with the
    file's last write (beyond the clock-skew margin) — newer replica, the file is
    moved aside and the replica restored; older replica, the file is kept."""
    rep = tmp_path / "rep"
    db = tmp_path / "app" / "app.db"
    db.parent.mkdir()
    cfg = write_config(tmp_path / "lv.yml", db, [{"name": "nas", "url": f"file://{rep}"}])
    history.write(str(rep), upto=2, t0=time.time() - 7200)  # objects two hours old
    stale = sqlite3.connect(db)  # the same database's tables (restore_same.c)
    stale.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    stale.execute("INSERT INTO t(v) VALUES ('written here, after the replica')")
    stale.commit()
    stale.close()
    p, res = restore_tool(cfg)
    assert res[0]["outcome"] == "exists", p.stderr
    assert "without state" in p.stderr, p.stderr
    # the file last written three hours ago, the replica's data newer: restore it
    old = time.time() - 3 * 3600
    os.utime(db, (old, old))
    p, res = restore_tool(cfg)
    assert res[0]["outcome"] == "restored", p.stderr
    assert rows(db) == history.states[1][2]
    moved = res[0]["moved_aside"]
    assert sqlite3.connect(moved).execute("SELECT v FROM t").fetchall() == \
        [("written here, after the replica",)]  # kept


@pytest.mark.parametrize("local_after_s,outcome", [(-3, "restored"), (3, "exists")])
def test_run_path_without_state_within_the_clock_skew_margin_the_later_wins(
        tmp_path, history, local_after_s, outcome):
    """No state, and the file's last write a few seconds from the replica's newest
    object (a node that died before writing state, while the other went on): as
    between replicas, the later time wins, with a warning. Keeping the file there
    dropped what the other node committed and shipped in those seconds."""
    rep = tmp_path / "rep"
    db = tmp_path / "app" / "app.db"
    db.parent.mkdir()
    cfg = write_config(tmp_path / "lv.yml", db, [{"name": "nas", "url": f"file://{rep}"}])
    history.write(str(rep), upto=2)
    t_rep = time.time() - 60
    for d, _, files in os.walk(rep):
        for f in files:
            os.utime(os.path.join(d, f), (t_rep, t_rep))
    stale = sqlite3.connect(db)  # the same database's tables (restore_same.c)
    stale.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    stale.commit()
    stale.close()
    os.utime(db, (t_rep + local_after_s, t_rep + local_after_s))
    p, res = restore_tool(cfg)
    assert res[0]["outcome"] == outcome, p.stderr
    assert "within the clock-skew margin: the later time wins" in p.stderr, p.stderr
    if outcome == "restored":
        assert rows(db) == history.states[1][2]
        assert sqlite3.connect(res[0]["moved_aside"]).execute("SELECT * FROM t").fetchall() == []


def test_run_path_newer_generation_written_elsewhere(tmp_path, history):
    rep = tmp_path / "rep"
    history.write(str(rep), upto=2)
    db = tmp_path / "app" / "app.db"
    db.parent.mkdir()
    cfg = write_config(tmp_path / "lv.yml", db, [{"name": "nas", "url": f"file://{rep}"}])
    p, res = restore_tool(cfg)
    assert res[0]["outcome"] == "restored", p.stderr
    local = rows(db)
    # an older generation appears (objects well before the local restore): keep local
    history.write(str(rep), gen=GEN2, t0=time.time() - 7200)
    p, res = restore_tool(cfg)
    assert res[0]["outcome"] == "exists", p.stderr
    assert rows(db) == local
    # a generation written elsewhere after ours (beyond the clock-skew margin): restore it
    shutil.rmtree(rep / "generations" / GEN2)
    history.write(str(rep), gen=GEN2, t0=time.time() + 60, step=1)
    p, res = restore_tool(cfg)
    assert res[0]["outcome"] == "restored", p.stderr
    assert res[0]["generation"] == GEN2
    assert rows(db) == history.states[-1][2]
    assert rows(res[0]["moved_aside"]) == local


def copy_times(rep, gens, t0, step=0.2):
    """As `cp -r` or `aws s3 sync` leave a replica: every object gets the copy's time,
    generation after generation in the order given."""
    for k, g in enumerate(gens):
        for d, _, files in os.walk(rep / "generations" / g):
            for f in files:
                os.utime(os.path.join(d, f), (t0 + k * step, t0 + k * step))


@pytest.mark.parametrize("gen2_closed,outcome", [(True, "exists"), (False, "restored")])
def test_run_path_a_copied_replica_does_not_replace_the_local_database(tmp_path, history,
                                                                       gen2_closed, outcome):
    """A replica moved by copying its objects: every object has the copy's time, and the
    older generation, copied last, looked newer on the replica's one clock. `run`
    replaced the live database (whose own generation the replica holds at exactly its
    position) with it (QA32 #2). Times that close cannot be told apart: the database is
    kept, with a warning. A generation still open where the local one was closed (handed
    over) is newer whatever the times."""
    rep = tmp_path / "rep"
    db = tmp_path / "app" / "app.db"
    db.parent.mkdir()
    cfg = write_config(tmp_path / "lv.yml", db, [{"name": "nas", "url": f"file://{rep}"}])
    history.write(str(rep), upto=3)
    p, res = restore_tool(cfg)
    assert res[0]["outcome"] == "restored", p.stderr
    local = rows(db)
    history.write(str(rep), gen=GEN2, upto=1, closed=gen2_closed)
    copy_times(rep, [GEN, GEN2], time.time() - 60)
    p, res = restore_tool(cfg)
    assert res[0]["outcome"] == outcome, p.stderr
    if outcome == "exists":
        assert "cannot be told apart by their object times" in p.stderr, p.stderr
        assert rows(db) == local
    else:
        assert res[0]["generation"] == GEN2, p.stderr
        assert rows(db) == history.states[0][2]


def test_generations_a_copy_left_in_one_second_are_reported_and_picked_by_position(
        tmp_path, litevisor_bin, history):
    """Generations whose objects all have the same time (uploaded to S3 in one second)
    were picked in listing order, silently (QA32 #2). The tie is reported, naming them,
    and the pick is the one ending furthest, whatever the names or listing order."""
    rep = tmp_path / "rep"
    history.write(str(rep), gen=GEN, upto=3)
    history.write(str(rep), gen=GEN2, upto=1)
    t = int(time.time()) - 60
    copy_times(rep, [GEN, GEN2], t, step=0)
    db = tmp_path / "app.db"
    cfg = write_config(tmp_path / "lv.yml", db, [{"name": "nas", "url": f"file://{rep}"}])
    p = lv(litevisor_bin, "restore", "-config", str(cfg), "-dry-run", str(db))
    assert p.returncode == 0, p.stderr
    assert f"ambiguous: generation {GEN} cannot be told apart by time from {GEN2}" in p.stdout, \
        p.stdout
    p = lv(litevisor_bin, "restore", "-config", str(cfg), str(db))
    assert p.returncode == 0, p.stderr
    warn = [l for l in p.stderr.splitlines() if "cannot be told apart" in l]
    assert warn and "WARN" in warn[0] and f"picked={GEN} tied={GEN2}" in warn[0], p.stderr
    assert 'warning="an ambiguous order' in p.stderr, p.stderr
    assert rows(db) == history.states[2][2]


def test_s3_slow_peer_that_answered_is_measured_not_dropped(tmp_path, litevisor_bin, s3server,
                                                            history):
    p05, nas = s3server(), s3server()
    upload(history, p05, tmp_path, upto=2)  # stale, fast
    upload(history, nas, tmp_path)          # fresh, 300 ms per request
    slow = Proxy(nas.port, delay=0.3)
    try:
        db = tmp_path / "app.db"
        cfg = write_config(tmp_path / "lv.yml", db, [s3_peer("peer-05", p05),
                                                      s3_peer("nas", nas, slow.port)],
                           restore={"probe-timeout": "500ms"})
        p = lv(litevisor_bin, "restore", "-config", str(cfg), str(db))
    finally:
        slow.close()
    assert p.returncode == 0, p.stderr
    # its first answer came within the probe timeout: reachable, so it is waited for
    assert "WINNER" in candidate_line(p.stderr, "nas"), p.stderr
    assert rows(db) == history.states[-1][2]


def test_s3_quorum_waits_for_a_peer_that_answered_and_is_still_listing(tmp_path, litevisor_bin,
                                                                       s3server, history):
    """QA24 D1: quorum settled once a quorum had finished and the probe timeout had
    passed, dropping a fresh peer still going through its listings as "no answer"
    (it had answered): the stale candidate was restored with exit 0."""
    p05, nas = s3server(), s3server()
    upload(history, p05, tmp_path, upto=2)  # stale, fast: a quorum of one by itself
    upload(history, nas, tmp_path)          # fresh; each request 400 ms: its listing
    slow = Proxy(nas.port, delay=0.4)       # ends past the 700 ms probe timeout
    try:
        db = tmp_path / "app.db"
        cfg = write_config(tmp_path / "lv.yml", db, [s3_peer("peer-05", p05),
                                                      s3_peer("nas", nas, slow.port)],
                           restore={"probe-timeout": "700ms", "mode": "quorum", "quorum": 1})
        p = lv(litevisor_bin, "restore", "-config", str(cfg), str(db))
    finally:
        slow.close()
    assert p.returncode == 0, p.stderr
    assert "WINNER" in candidate_line(p.stderr, "nas"), p.stderr
    assert rows(db) == history.states[-1][2]


@pytest.mark.parametrize("mode", ["freshest-reachable", "quorum"])
def test_s3_peer_still_listing_when_the_wait_ends_is_not_passed_over(tmp_path, litevisor_bin,
                                                                     s3server, history, mode):
    """QA24 D2: a peer that answered and was still listing when restore.wait-timeout
    ended was called "unreachable, no answer" and the stale candidate restored with
    exit 0. It is alive and may hold newer data: refuse (111), say what it did, and
    never start empty on it either."""
    p05, nas = s3server(), s3server()
    upload(history, p05, tmp_path, upto=2)
    upload(history, nas, tmp_path)
    slow = Proxy(nas.port, delay=0.7)  # answers at ~0.7 s; its listing ends past 1.4 s
    try:
        db = tmp_path / "app.db"
        cfg = write_config(tmp_path / "lv.yml", db, [s3_peer("peer-05", p05),
                                                      s3_peer("nas", nas, slow.port)],
                           restore={"probe-timeout": "1200ms", "wait-timeout": "1200ms",
                                    "mode": mode, "allow-empty-when-unreachable": "true",
                                    **({"quorum": 1} if mode == "quorum" else {})})
        p = lv(litevisor_bin, "restore", "-config", str(cfg), str(db))
    finally:
        slow.close()
    assert p.returncode == 111, p.stderr
    assert not db.exists()
    line = candidate_line(p.stderr, "nas")
    assert "state=listing" in line and "listings not finished" in line, p.stderr
    assert re.search(r"rtt_ms=[1-9]", line), line  # it answered: its round trip is shown
    assert "might hold newer data than peer-05" in p.stderr, p.stderr


def test_s3_peer_whose_listing_pages_time_out_is_not_passed_over(tmp_path, litevisor_bin,
                                                                 s3server, history):
    """QA26 D2: a peer answered its first request, then each page of its generation's
    listing took longer than its idle-timeout; once the retries were spent (before the
    wait ended) it was called unreachable and the stale candidate restored with exit 0.
    Timing out without any answer is slow, not failing: refuse (111) like a listing
    still running when the wait ends."""
    p05, nas = s3server(), s3server()
    upload(history, p05, tmp_path, upto=2)
    upload(history, nas, tmp_path)
    slow = Proxy(nas.port, delay=2.5, delay_only=f"generations%2F{GEN}")
    try:
        db = tmp_path / "app.db"
        peer = dict(s3_peer("nas", nas, slow.port), **{"idle-timeout": "1s"})
        cfg = write_config(tmp_path / "lv.yml", db, [s3_peer("peer-05", p05), peer],
                           restore={"wait-timeout": "6s"})
        p = lv(litevisor_bin, "restore", "-config", str(cfg), str(db))
    finally:
        slow.close()
    assert p.returncode == 111, p.stderr
    assert not db.exists()
    line = candidate_line(p.stderr, "nas")
    assert "state=listing" in line and "listings not finished" in line, p.stderr
    assert "could not finish listing its objects" in p.stderr, p.stderr


def test_s3_peer_cut_off_for_a_while_after_answering_is_tried_again(tmp_path, litevisor_bin,
                                                                    s3server, history):
    """QA28 D1: in the default mode, a peer that answered and then had its listing
    cut a few times in a row (connections reset for two seconds) spent its storage
    retries in 2 s and the restore refused, with 100 s of wait-timeout left. The wait
    is the peer's, as in all/quorum modes: it is tried again and wins."""
    p05, nas = s3server(), s3server()
    upload(history, p05, tmp_path, upto=2)
    upload(history, nas, tmp_path)
    cut = Proxy(nas.port, cut=f"generations%2F{GEN}", cut_count=8)
    try:
        db = tmp_path / "app.db"
        cfg = write_config(tmp_path / "lv.yml", db, [s3_peer("peer-05", p05),
                                                      s3_peer("nas", nas, cut.port)])
        p = lv(litevisor_bin, "restore", "-config", str(cfg), str(db))
    finally:
        cut.close()
    assert cut.cuts == 8, (cut.cuts, p.stderr)
    assert p.returncode == 0, p.stderr
    assert "WINNER" in candidate_line(p.stderr, "nas"), p.stderr
    assert rows(db) == history.states[-1][2]


WRITER = r"""
import sqlite3, sys
con = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=10)
con.execute("PRAGMA journal_mode=wal")
con.execute("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v TEXT)")
for i in range(int(sys.argv[2])):
    con.execute("INSERT INTO t(v) VALUES(?)", (f"{sys.argv[3]}-{i}-" + "y" * 200,))
if sys.argv[4] == "truncate":
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
"""


def test_s3_many_generations_listed_at_once_newest_wins(tmp_path, litevisor_bin, s3server,
                                                         history):
    # Litestream starts a generation each time it cannot continue the last one; the
    # probe lists a replica's generations several at a time (catalog_load_many).
    srv = s3server()
    old = [f"{i:016x}" for i in range(1, 10) if i != 5]
    for g in old:
        upload(history, srv, tmp_path, upto=1, gen=g)
    time.sleep(1.1)  # S3 object times have a resolution of one second
    newest = f"{5:016x}"  # sorts among the old ones: its place in the listing decides nothing
    upload(history, srv, tmp_path, gen=newest)
    db = tmp_path / "app.db"
    cfg = write_config(tmp_path / "lv.yml", db, [s3_peer("nas", srv)])
    p = lv(litevisor_bin, "restore", "-config", str(cfg), str(db))
    assert p.returncode == 0, p.stderr
    assert f"pos={newest}/" in candidate_line(p.stderr, "nas"), p.stderr
    assert rows(db) == history.states[-1][2]
    g = lv(litevisor_bin, "generations", "-config", str(cfg), str(db))
    assert g.returncode == 0, g.stderr
    assert sorted(line.split()[1] for line in g.stdout.splitlines()[1:]) == sorted(old + [newest])


def test_litevisor_written_replica_restores_equal(tmp_path, litevisor_bin, litestream_bin):
    db, rep = tmp_path / "app.db", tmp_path / "rep"

    def writer(n, tag, after=""):
        subprocess.run(["/usr/bin/python3", "-c", WRITER, str(db), str(n), tag, after],
                       check=True, timeout=120)

    writer(50, "a")
    cfg = tmp_path / "lv.yml"
    cfg.write_text(f"dbs:\n  - path: {db}\n    monitor-interval: 100ms\n    replicas:\n"
                   f"      - name: nas\n        url: file://{rep}\n        sync-interval: 0s\n")
    log = open(tmp_path / "replicate.log", "w+")
    proc = subprocess.Popen([litevisor_bin, "replicate", "-config", str(cfg)],
                            stdout=subprocess.DEVNULL, stderr=log)
    try:
        end = time.monotonic() + 30
        while time.monotonic() < end and not list(rep.glob("generations/*/snapshots/*")):
            assert proc.poll() is None, open(tmp_path / "replicate.log").read()
            time.sleep(0.05)
        writer(300, "b", "truncate")  # the app's own checkpoint: a new WAL index
        writer(200, "c")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
    out = tmp_path / "out.db"
    p = lv(litevisor_bin, "restore", "-o", str(out), f"file://{rep}")
    assert p.returncode == 0, p.stderr + open(tmp_path / "replicate.log").read()
    assert rows(out) == rows(db)
    assert len(rows(out)) == 550
    out2 = tmp_path / "out-ls.db"
    q = subprocess.run([litestream_bin, "restore", "-o", str(out2), f"file://{rep}"],
                       capture_output=True, text=True, timeout=60)
    assert q.returncode == 0, q.stderr
    assert rows(out2) == rows(out)


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_restored_file_gets_the_service_user(tmp_path, history):
    import pwd
    nobody = pwd.getpwnam("nobody")
    rep = tmp_path / "rep"
    history.write(str(rep))
    db = tmp_path / "data" / "app.db"
    cfg = write_config(tmp_path / "lv.yml", db, [{"name": "nas", "url": f"file://{rep}"}])
    with open(cfg, "a") as f:
        f.write("supervisor:\n  user: nobody\n")
    p, res = restore_tool(cfg)
    assert res[0]["outcome"] == "restored", p.stderr
    st = os.stat(db)
    assert (st.st_uid, st.st_gid) == (nobody.pw_uid, nobody.pw_gid)
    assert st.st_mode & 0o777 == 0o640


@pytest.mark.parametrize("parallelism", ["1", "8"])
def test_many_indexes_apply_in_order_whatever_the_parallelism(tmp_path, litevisor_bin,
                                                              parallelism):
    # 25 WAL indexes of 1-3 segments: downloads finish out of order, applying may not
    h = History(tmp_path, [[[2]] * (1 + i % 3) for i in range(25)], initial=5, payload=50)
    rep = tmp_path / "rep"
    h.write(str(rep), step=1)
    out = tmp_path / "r.db"
    p = lv(litevisor_bin, "restore", "-parallelism", parallelism, "-o", str(out), f"file://{rep}")
    assert p.returncode == 0, p.stderr
    assert rows(out) == h.states[-1][2]
    assert f"index={h.states[-1][0]:08x}" in p.stderr


# ---------------------------------------------------------------- command-line checks, the
# target's directory, concurrent and interrupted restores

@pytest.mark.parametrize("ts,why", [
    ("2611-06-24T00:34:09.709551Z", "out of range"),     # wrapped int64 ns: an old state, rc 0
    ("2262-04-11T23:47:16.854775808Z", "out of range"),  # 1 ns past the last representable
    ("2026-02-30T00:00:00Z", "real date"),
    ("2025-02-29T00:00:00Z", "real date"),               # not a leap year
    ("1900-02-29T00:00:00Z", "real date"),               # a century, not a leap year
    ("2026-04-31T00:00:00Z", "real date"),
    ("2026-12-06T08:00:60Z", "real date"),               # no leap second: not 08:01:00 (QA83)
])
def test_timestamp_outside_the_calendar_or_range_is_a_usage_error(tmp_path, litevisor_bin,
                                                                  history, ts, why):
    rep = tmp_path / "rep"
    history.write(str(rep))
    out = tmp_path / "o" / "r.db"
    p = lv(litevisor_bin, "restore", "-timestamp", ts, "-o", str(out), f"file://{rep}")
    assert p.returncode == 100, p.stderr
    assert "-timestamp" in p.stderr and why in p.stderr, p.stderr
    if why == "out of range":
        assert "2262-04-11T23:47:16.854775807Z" in p.stderr  # names the limit
    assert not out.parent.exists()


def test_timestamp_on_the_edges_of_the_range_and_calendar(tmp_path, litevisor_bin, history):
    rep = tmp_path / "rep"
    history.write(str(rep))  # objects written an hour ago
    # valid dates: parsed, and older than every object (as Litestream: no backup, exit 1)
    for ts in ("2024-02-29T12:00:00Z", "2000-02-29T00:00:00Z", "1969-07-20T20:17:40Z",
               "1970-01-01T00:00:00Z"):
        p = lv(litevisor_bin, "restore", "-timestamp", ts, "-o", str(tmp_path / "x.db"),
               f"file://{rep}")
        assert p.returncode == 1 and "no matching backups" in p.stderr, (ts, p.stderr)
        assert not (tmp_path / "x.db").exists()
    # the last representable time is after every object: the newest state
    out = tmp_path / "last.db"
    p = lv(litevisor_bin, "restore", "-timestamp", "2262-04-11T23:47:16.854775807Z",
           "-o", str(out), f"file://{rep}")
    assert p.returncode == 0, p.stderr
    assert rows(out) == history.states[-1][2]


def test_empty_output_path_is_a_usage_error(tmp_path, litevisor_bin, history):
    rep = tmp_path / "rep"
    history.write(str(rep))
    work = tmp_path / "cwd"
    work.mkdir()
    p = subprocess.run([litevisor_bin, "restore", "-o", "", f"file://{rep}"], cwd=work,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 100, p.stderr
    assert "-o" in p.stderr and "output path required" in p.stderr, p.stderr
    assert "restoring" not in p.stderr  # refused before anything was probed
    assert os.listdir(work) == []


def test_empty_replica_name_is_a_usage_error_naming_the_flag(tmp_path, litevisor_bin, history):
    """-replica "" said 'no replica named ""', where -o, -timestamp and -generation name
    the flag (QA135 O2)."""
    rep = tmp_path / "rep"
    history.write(str(rep))
    p = lv(litevisor_bin, "restore", "-replica", "", "-o", str(tmp_path / "o.db"),
           f"file://{rep}")
    assert p.returncode == 100, p.stderr
    assert "-replica: a replica name is required (it is empty)" in p.stderr, p.stderr
    assert not (tmp_path / "o.db").exists()


@pytest.mark.parametrize("cmd", ["restore", "generations", "snapshots", "wal"])
def test_an_empty_database_argument_is_said_to_be_empty(tmp_path, litevisor_bin, cmd):
    """A script's unset "$DB": 'database not found in config F: ' named a blank (QA174 O7)."""
    cfg = tmp_path / "c.yml"
    cfg.write_text(f"dbs:\n  - path: {tmp_path}/app.db\n    replicas:\n"
                   f"      - path: {tmp_path}/rep\n")
    p = lv(litevisor_bin, cmd, "-config", str(cfg), "")
    assert p.returncode == 100, p.stderr
    assert "the database path or replica URL is empty" in p.stderr, p.stderr
    p = lv(litevisor_bin, cmd, "-config", str(cfg), " \r")  # a CRLF env file's "$DB"
    assert p.returncode == 100, p.stderr
    assert "the database path or replica URL is blank" in p.stderr, p.stderr


def test_verbose_options_line_gives_the_parallelism_in_effect(tmp_path, litevisor_bin, history):
    """-v logged parallelism=0 when no -parallelism was given; 8 (restore.parallelism)
    is what runs (QA135 O3)."""
    rep = tmp_path / "rep"
    history.write(str(rep))
    p = lv(litevisor_bin, "restore", "-v", "-o", str(tmp_path / "o.db"), f"file://{rep}")
    assert p.returncode == 0, p.stderr
    line = next(l for l in p.stderr.splitlines() if "restore: options" in l)
    assert "parallelism=8 " in line, line


@pytest.mark.parametrize("index", ["0x2", " 2", "2 ", "+-2", "-1", "100000000", "g"])
def test_index_that_is_not_hex_digits_is_a_usage_error_as_for_litestream(
        tmp_path, litevisor_bin, litestream_bin, history, index):
    """-index took what strtoul takes: blanks and a 0x prefix; Litestream refuses them
    ("invalid hexadecimal format"), so a script working with one failed with the other
    (QA122 O2). A leading '+' both take."""
    rep = tmp_path / "rep"
    history.write(str(rep))
    for tool, code in ((litevisor_bin, 100), (litestream_bin, None)):
        out = tmp_path / "out.db"
        p = subprocess.run([tool, "restore", "-index", index, "-o", str(out), f"file://{rep}"],
                           capture_output=True, text=True, timeout=60)
        assert p.returncode != 0 and not out.exists(), (tool, p.stderr)
        if code:
            assert p.returncode == code and "-index" in p.stderr, p.stderr


@pytest.mark.parametrize("n", ["0", "-3", "257"])
def test_parallelism_outside_1_to_256_is_a_usage_error(tmp_path, litevisor_bin, history, n):
    # the same range as restore.parallelism in the config
    rep = tmp_path / "rep"
    history.write(str(rep))
    out = tmp_path / "r.db"
    p = lv(litevisor_bin, "restore", "-parallelism", n, "-o", str(out), f"file://{rep}")
    assert p.returncode == 100, p.stderr
    assert "-parallelism: must be 1 to 256" in p.stderr, p.stderr
    assert not out.exists()
    if n == "257":
        p = lv(litevisor_bin, "restore", "-parallelism", "256", "-o", str(out), f"file://{rep}")
        assert p.returncode == 0, p.stderr
        assert rows(out) == history.states[-1][2]


@pytest.mark.parametrize("command", ["wal", "snapshots", "generations"])
def test_listing_an_unknown_replica_prints_no_table(tmp_path, litevisor_bin, history, command):
    rep = tmp_path / "rep"
    history.write(str(rep))
    cfg = write_config(tmp_path / "lv.yml", tmp_path / "app.db",
                       [{"name": "nas", "url": f"file://{rep}"}])
    p = lv(litevisor_bin, command, "-config", str(cfg), "-replica", "nosuch",
           str(tmp_path / "app.db"))
    assert p.returncode == 100, p.stderr
    assert 'no replica named "nosuch"' in p.stderr, p.stderr
    assert p.stdout == ""
    p = lv(litevisor_bin, command, "-config", str(cfg), "-replica", "nas", str(tmp_path / "app.db"))
    assert p.returncode == 0 and GEN in p.stdout, p.stdout + p.stderr


@pytest.mark.parametrize("command", ["restore", "wal", "snapshots", "generations"])
def test_replica_url_with_config_flag_is_a_usage_error(tmp_path, litevisor_bin, history, command):
    # The file was silently ignored, missing, invalid or valid (its restore.verify,
    # logging.level never applied). Litestream v0.3.13 refuses the pair, with this text.
    rep = tmp_path / "rep"
    history.write(str(rep))
    bad = tmp_path / "bad.yml"
    bad.write_text("dbs: [\n")
    good = tmp_path / "good.yml"
    good.write_text("logging:\n  level: debug\nrestore:\n  verify: integrity\n")
    out = tmp_path / "out.db"
    extra = ["-o", str(out)] if command == "restore" else []
    for cfg in (tmp_path / "missing.yml", bad, good):
        p = lv(litevisor_bin, command, "-config", str(cfg), *extra, f"file://{rep}")
        assert p.returncode == 100, p.stderr
        assert p.stderr == (f"litevisor {command}: cannot specify a replica URL and the -config "
                            f"flag\nRun 'litevisor {command} -help' for usage.\n")
        assert p.stdout == ""
        assert not out.exists()
    # without -config (or with an empty one, as Litestream) the URL alone works
    p = lv(litevisor_bin, command, "-config", "", *extra, f"file://{rep}")
    assert p.returncode == 0, p.stderr
    assert command != "restore" or rows(out) == history.states[-1][2]


def test_output_below_a_regular_file_says_not_a_directory(tmp_path, litevisor_bin, history):
    rep = tmp_path / "rep"
    history.write(str(rep))
    work = tmp_path / "w"
    work.mkdir()
    (work / "afile").write_bytes(b"a file, not a directory")
    for out in ("afile/x.db", "afile/sub/x.db"):
        p = lv(litevisor_bin, "restore", "-o", str(work / out), f"file://{rep}")
        assert p.returncode == 1, p.stderr
        last = p.stderr.strip().splitlines()[-1]
        assert f"{work / 'afile'} is not a directory" in last, p.stderr
        assert "stray" not in p.stderr, p.stderr
        assert os.listdir(work) == ["afile"]
        assert (work / "afile").read_bytes() == b"a file, not a directory"


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_created_directories_take_the_owner_and_mode_of_the_nearest_one(tmp_path,
                                                                        litevisor_bin, history):
    import pwd
    nobody = pwd.getpwnam("nobody")
    rep = tmp_path / "rep"
    history.write(str(rep))
    os.chmod(tmp_path, 0o755)
    base = tmp_path / "base"
    base.mkdir()
    os.chown(base, nobody.pw_uid, nobody.pw_gid)
    os.chmod(base, 0o750)

    def owner_mode(path):
        st = os.stat(path)
        return st.st_uid, st.st_gid, st.st_mode & 0o7777

    # into the existing directory: the reference
    p = lv(litevisor_bin, "restore", "-o", str(base / "ref.db"), f"file://{rep}")
    assert p.returncode == 0, p.stderr
    want = (nobody.pw_uid, nobody.pw_gid, 0o640)
    assert owner_mode(base / "ref.db") == want
    # below it, through two directories restore creates
    out = base / "a" / "b" / "x.db"
    p = lv(litevisor_bin, "restore", "-o", str(out), f"file://{rep}")
    assert p.returncode == 0, p.stderr
    assert owner_mode(base / "a") == owner_mode(base / "a" / "b") == owner_mode(base)
    assert owner_mode(out) == want
    assert rows(out) == history.states[-1][2]

    # a configured service user wins over the directory's owner, for the file and the dirs
    root_dir = tmp_path / "rootdir"
    root_dir.mkdir()
    os.chmod(root_dir, 0o750)
    db = root_dir / "c" / "app.db"
    cfg = write_config(tmp_path / "lv.yml", db, [{"name": "nas", "url": f"file://{rep}"}])
    with open(cfg, "a") as f:
        f.write("supervisor:\n  user: nobody\n")
    p = lv(litevisor_bin, "restore", "-config", str(cfg), "-o", str(root_dir / "ref.db"), str(db))
    assert p.returncode == 0, p.stderr
    assert owner_mode(root_dir / "ref.db") == want
    p = lv(litevisor_bin, "restore", "-config", str(cfg), str(db))
    assert p.returncode == 0, p.stderr
    assert owner_mode(db.parent) == (nobody.pw_uid, nobody.pw_gid, 0o750)
    assert owner_mode(db) == want


class Throttle(Proxy):
    """A loopback proxy that slows every answer down to `chunk` bytes per `interval`
    seconds; for a GET whose path contains `hold`: the headers and hold_after bytes
    of the body, then nothing more, the connection left open (a peer that hangs)."""

    def __init__(self, port, chunk=1024, interval=0.125, hold=None, hold_after=10):
        self.chunk, self.interval = chunk, interval
        super().__init__(port, cut=hold, cut_after=hold_after)

    def _forward(self, c, data):
        for i in range(0, len(data), self.chunk):
            time.sleep(self.interval)
            c.sendall(data[i:i + self.chunk])

    def _after_cut(self):
        while not self.closed:  # held open, silent
            time.sleep(0.05)


@pytest.fixture
def big_history(tmp_path):
    # a 22 KB LZ4 snapshot: about 3 s through a Throttle at 8 KB/s
    return History(tmp_path, [[[5, 5], [7]], [[4], [3, 2]], [[6]]], initial=2000)


def slow_s3(tmp_path, s3server, history, **kw):
    """An S3 replica of history behind a Throttle; returns (server, throttle, config path,
    db path)."""
    srv = s3server()
    upload(history, srv, tmp_path)
    slow = Throttle(srv.port, **kw)
    db = tmp_path / "out" / "app.db"
    db.parent.mkdir()
    cfg = write_config(tmp_path / "lv.yml", db, [s3_peer("nas", srv, slow.port)],
                       restore={"probe-timeout": "5s"})
    return srv, slow, cfg, db


def wait_for_temp_files(proc, d, name, timeout=10):
    """Wait until the restore into d/name has its temp database and a WAL download
    file beside it; returns them."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        assert proc.poll() is None, proc.communicate()
        names = os.listdir(d)
        if f"{name}.litevisor-restore" in names and \
                any(n.startswith(f"{name}.litevisor-restore-") and n.endswith(".lz4")
                    for n in names):
            return names
        time.sleep(0.02)
    raise AssertionError(f"no temp files in {d}: {os.listdir(d)}")


def interrupt_mid_restore(cmd, slow, db, sig):
    """Run cmd (a restore into db through the Throttle slow), send sig once its temp
    files are there; returns (exit code, stderr, seconds from the signal to the exit)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_temp_files(proc, db.parent, db.name)
        t0 = time.monotonic()
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=10)
        return proc.returncode, err, time.monotonic() - t0
    finally:
        slow.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_concurrent_restores_to_one_target_one_runs_the_others_fail_fast(
        tmp_path, litevisor_bin, s3server, big_history):
    _, slow, cfg, db = slow_s3(tmp_path, s3server, big_history)
    try:
        procs = [subprocess.Popen([litevisor_bin, "restore", "-config", str(cfg), str(db)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(3)]
        t0 = time.monotonic()
        done = {}
        while len(done) < 3 and time.monotonic() - t0 < 60:
            for p in procs:
                if p.pid not in done and p.poll() is not None:
                    done[p.pid] = (time.monotonic() - t0, p.returncode, p.communicate()[1])
            time.sleep(0.01)
    finally:
        slow.close()
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    winners = [pid for pid, (_, rc, _) in done.items() if rc == 0]
    assert len(winners) == 1, done
    win_t = done[winners[0]][0]
    assert win_t > 1.5, done  # the throttle makes it long enough to overlap
    for pid, (t, rc, err) in done.items():
        if pid == winners[0]:
            continue
        assert rc == 1, err
        last = err.strip().splitlines()[-1]
        assert f"another restore to {db} is running (pid {winners[0]})" in last, err
        assert t < win_t - 0.5, done  # failed fast, not after the other one's download
    assert rows(db) == big_history.states[-1][2]
    assert dir_leftovers(db.parent, ["app.db", ".app.db-litevisor"]) == []  # no temp, no lock


@pytest.mark.parametrize("sig,code", [("SIGINT", 130), ("SIGTERM", 143), ("SIGHUP", 129),
                                      ("SIGQUIT", 131)])
def test_signal_during_restore_removes_temp_files_and_exits_128_plus_signal(
        tmp_path, litevisor_bin, s3server, big_history, sig, code):
    import signal
    _, slow, cfg, db = slow_s3(tmp_path, s3server, big_history)
    rc, err, elapsed = interrupt_mid_restore(
        [litevisor_bin, "restore", "-config", str(cfg), str(db)], slow, db, getattr(signal, sig))
    assert rc == code, err
    assert elapsed < 2, elapsed
    assert f"interrupted by {sig}" in err.strip().splitlines()[-1], err
    assert os.listdir(db.parent) == []  # no temp database, WAL downloads, lock or target


def test_signal_while_a_big_wal_is_applied_stops_the_restore(tmp_path, litevisor_bin):
    """A stop that lands while SQLite checkpoints a big WAL index into the temp file
    (one long call) went unseen: the restore went on to check and rename the file,
    exited 0, and said it "was complete before the signal could stop it". The call
    is now interrupted: exit 143, nothing at the target."""
    import signal
    db, rep = tmp_path / "src.db", tmp_path / "rep"
    c = sqlite3.connect(db, isolation_level=None)
    c.execute("PRAGMA journal_mode=wal")
    c.execute("CREATE TABLE t(b)")
    cfg = tmp_path / "lv.yml"
    cfg.write_text(f"dbs:\n  - path: {db}\n    replicas:\n      - url: file://{rep}\n")
    r = subprocess.Popen([litevisor_bin, "replicate", "-config", str(cfg)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        c.execute("BEGIN")
        for _ in range(80):  # one index of 80 MB, after a snapshot of an empty table
            c.execute("INSERT INTO t VALUES (randomblob(1000000))")
        c.execute("COMMIT")
        c.close()
        time.sleep(2)
    finally:
        r.send_signal(signal.SIGTERM)
        _, rerr = r.communicate(timeout=60)
    assert r.returncode == 0, rerr
    out = tmp_path / "out" / "app.db"
    out.parent.mkdir()
    p = subprocess.Popen([litevisor_bin, "restore", "-o", str(out), f"file://{rep}"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wal = out.parent / "app.db.litevisor-restore-wal"
    end = time.monotonic() + 60
    while not (wal.exists() and wal.stat().st_size > 50_000_000) and p.poll() is None \
            and time.monotonic() < end:
        time.sleep(0.001)
    assert p.poll() is None, p.communicate()[1]
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=30)
    assert p.returncode == 143, err
    assert "complete before the signal" not in err, err
    assert os.listdir(out.parent) == [], err


def test_signal_while_the_peer_sends_nothing_still_removes_temp_files(
        tmp_path, litevisor_bin, s3server, big_history):
    # libcurl calls no sink while no byte comes: the restore cannot notice the
    # request to stop; the command removes the files under it after a grace time
    import signal
    _, slow, cfg, db = slow_s3(tmp_path, s3server, big_history, interval=0, hold="/snapshots/")
    rc, err, elapsed = interrupt_mid_restore(
        [litevisor_bin, "restore", "-config", str(cfg), str(db)], slow, db, signal.SIGINT)
    assert rc == 130, err
    assert elapsed < 2, elapsed
    assert "did not stop in time" in err, err
    assert os.listdir(db.parent) == []


def test_leftovers_of_a_killed_restore_are_removed_by_the_next(tmp_path, litevisor_bin,
                                                                s3server, big_history):
    import signal
    srv, slow, cfg, db = slow_s3(tmp_path, s3server, big_history)
    proc = subprocess.Popen([litevisor_bin, "restore", "-config", str(cfg), str(db)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_temp_files(proc, db.parent, "app.db")
        proc.send_signal(signal.SIGKILL)  # no chance to clean up
        proc.wait(timeout=10)
    finally:
        slow.close()
    left = os.listdir(db.parent)
    assert "app.db.litevisor-restore" in left and "app.db.litevisor-restore.lock" in left, left
    # a WAL file of an index the next plan does not have (another plan, same name scheme)
    (db.parent / "app.db.litevisor-restore-000000ff.lz4").write_bytes(b"x")
    direct = write_config(tmp_path / "direct.yml", db, [s3_peer("nas", srv)])
    p = lv(litevisor_bin, "restore", "-config", str(direct), str(db))
    assert p.returncode == 0, p.stderr
    assert rows(db) == big_history.states[-1][2]
    assert dir_leftovers(db.parent, ["app.db", ".app.db-litevisor"]) == []


@pytest.mark.parametrize("command", ["restore", "run"])
def test_stop_while_probing_ends_at_once(tmp_path, litevisor_bin, command):
    # A stop while the probe waits for a blackholed peer (mode all: up to its
    # 30 s wait-timeout) ends the probe at once: nothing is written yet, so
    # there is nothing to wait the 1 s grace for, nor to remove under it.
    import signal
    hole = Blackhole()
    try:
        db = tmp_path / "data" / "app.db"
        db.parent.mkdir()
        cfg = write_config(tmp_path / "lv.yml", db, [s3_unreachable("peer-05", hole.port)],
                           restore={"mode": "all", "wait-timeout": "30s"})
        cmd = [litevisor_bin, command, "-config", str(cfg)]
        cmd += [str(db)] if command == "restore" else ["--", "true"]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(1.0)
        assert proc.poll() is None
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
        elapsed = time.monotonic() - t0
    finally:
        hole.close()
    assert proc.returncode == 143, err
    assert elapsed < 0.8, (elapsed, err)
    assert "did not stop in time" not in err, err
    assert os.listdir(db.parent) == [], err


@pytest.mark.parametrize("hold", [None, "/snapshots/"])
def test_stop_during_runs_restore_step_removes_temp_files(tmp_path, litevisor_bin, s3server,
                                                          big_history, hold):
    # `run` stopped while it restores (TERM from Nomad or Docker): the service never
    # starts, the restore stops and cleans up, also when the peer sends nothing.
    import signal
    _, slow, cfg, db = slow_s3(tmp_path, s3server, big_history, hold=hold,
                               **({"interval": 0} if hold else {}))
    marker = tmp_path / "started"
    rc, err, elapsed = interrupt_mid_restore(
        [litevisor_bin, "run", "-config", str(cfg), "--", "touch", str(marker)], slow, db,
        signal.SIGTERM)
    assert rc == 143, err
    assert elapsed < 2.5, elapsed
    assert not marker.exists()
    assert os.listdir(db.parent) == [], err
    if hold:
        assert "did not stop in time" in err, err


def exact_and_whole_second_replicas(litevisor_bin, tmp_path, stamps):
    """One generation of a snapshot and three segments (commits c0, c1..c3) in replica A,
    its objects stamped stamps (ms into a second an hour ago), and a copy B stamped with
    that whole second (S3's LastModified on most servers): (restore, db, a, b, cfg, s),
    restore(tool, *extra) -> (rows or None for no match, stderr) at -timestamp s + 0.5 s."""
    db, a, b, cfg = tmp_path / "app.db", tmp_path / "A", tmp_path / "B", tmp_path / "lv.yml"
    cfg.write_text(f"dbs:\n  - path: {db}\n    replicas:\n      - name: A\n"
                   f"        path: {a}\n        sync-interval: 0s\n")
    c = sqlite3.connect(db, isolation_level=None)
    c.execute("PRAGMA journal_mode=WAL")
    c.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    c.execute("INSERT INTO t(v) VALUES('c0')")
    log = open(tmp_path / "rep.log", "w")
    p = subprocess.Popen([litevisor_bin, "replicate", "-config", str(cfg)],
                         stdout=subprocess.DEVNULL, stderr=log)
    try:
        def segments():
            return sorted(a.glob("generations/*/wal/*.wal.lz4"))
        deadline = time.monotonic() + 30
        while not list(a.glob("generations/*/snapshots/*.lz4")) or not segments():
            assert time.monotonic() < deadline, (tmp_path / "rep.log").read_text()
            time.sleep(0.05)
        for i in range(1, 4):  # one segment each
            had = len(segments())
            c.execute("INSERT INTO t(v) VALUES(?)", (f"c{i}",))
            while len(segments()) == had:
                assert time.monotonic() < deadline, (tmp_path / "rep.log").read_text()
                time.sleep(0.05)
    finally:
        p.send_signal(signal.SIGTERM)
        assert p.wait(30) == 0, (tmp_path / "rep.log").read_text()
        c.close()
    shutil.copytree(a, b)
    s = (int(time.time()) - 3600) * 10 ** 9
    for rep, whole in ((a, False), (b, True)):
        (g,) = (rep / "generations").iterdir()
        objs = sorted((g / "snapshots").iterdir()) + sorted((g / "wal").iterdir())
        assert len(objs) >= 5, objs
        ms = stamps + [990] * (len(objs) - len(stamps))
        for k, o in enumerate(objs):
            t = s if whole else s + ms[k] * 10 ** 6 + k
            os.utime(o, ns=(t, t))
        for f in g.rglob("*"):  # anything else (the closed mark): the end of the second
            if f.is_file() and f not in objs:
                t = s if whole else s + 999 * 10 ** 6
                os.utime(f, ns=(t, t))
    ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(s // 10 ** 9)) + ".500000000Z"
    cfg.write_text(f"dbs:\n  - path: {db}\n    replicas:\n      - name: A\n        path: {a}\n"
                   f"      - name: B\n        path: {b}\n")

    def restore(tool, *extra):
        out = tmp_path / f"out-{len(list(tmp_path.iterdir()))}.db"
        q = subprocess.run([tool, "restore", "-config", str(cfg), "-o", str(out), "-timestamp",
                            ts, *extra, str(db)], capture_output=True, text=True, timeout=60)
        if q.returncode == 1 and ("no matching backups found" in q.stdout + q.stderr or
                                  "no snapshots available" in q.stdout):  # Litestream's
            return None, q.stderr
        assert q.returncode == 0, q.stderr
        r = sqlite3.connect(out)
        try:
            return [v for (v,) in r.execute("SELECT v FROM t ORDER BY id")], q.stderr
        finally:
            r.close()

    return restore, db, a, b, cfg, s


def test_a_timestamp_over_a_whole_second_and_an_exact_replica_restores_the_state_at_it(
        litevisor_bin, litestream_bin, tmp_path):
    """-timestamp T over two replicas of one generation, one keeping exact object times (a
    file replica) and one whole seconds (S3's LastModified on most servers): rounded down,
    the whole-second one seemed to hold the objects stored later in T's second, "held
    more" and won, and the restore brought back commits made after T; Litestream restores
    the exact one's state (QA122 D1). The whole-second one alone still reads its second
    in, as Litestream does."""
    restore, db, a, b, cfg, s = exact_and_whole_second_replicas(litevisor_bin, tmp_path,
                                                                [50, 100, 350, 650, 950])
    assert restore(litevisor_bin, "-replica", "A")[0] == ["c0", "c1"]
    assert restore(litevisor_bin, "-replica", "B")[0] == ["c0", "c1", "c2", "c3"]
    got, err = restore(litevisor_bin)
    assert got == ["c0", "c1"], err
    assert "replicas keeping whole-second times are read only up to" in err, err
    # B, cut to a second before T, holds nothing there: its objects of T's second are not
    # "more" than A's, and nobody is probed again (QA126 D3)
    assert "holds more of the newest generation" not in err, err
    assert err.count("replicas keeping whole-second times") == 1, err
    assert "read up to a second before it" in candidate_line(err, "B"), err
    assert restore(litestream_bin)[0] == ["c0", "c1"]

    # a finer replica with nothing at T (written later: one added since) cuts nothing:
    # the whole-second one is read as alone (QA125 D1)
    late = tmp_path / "late"
    shutil.copytree(a, late)
    for f in late.rglob("*"):
        if f.is_file() and "/wal/" in str(f):
            f.unlink()  # only its first snapshot, taken 100 s after T
        elif f.is_file():
            os.utime(f, ns=(s + 100_250_000_000,) * 2)
    cfg.write_text(f"dbs:\n  - path: {db}\n    replicas:\n      - name: B\n        path: {b}\n"
                   f"      - name: late\n        path: {late}\n")
    got, err = restore(litevisor_bin)
    assert got == ["c0", "c1", "c2", "c3"], err
    assert "whole-second times are read only up to" not in err, err
    # a whole-second replica with no snapshot at T (rewritten 3 s later): its segments of
    # T's second are not "more" than A's either (QA129 D2)
    b2 = tmp_path / "B2"
    shutil.copytree(b, b2)
    for f in b2.glob("generations/*/snapshots/*"):
        os.utime(f, ns=(s + 3_000_000_000,) * 2)
    cfg.write_text(f"dbs:\n  - path: {db}\n    replicas:\n      - name: A\n        path: {a}\n"
                   f"      - name: B2\n        path: {b2}\n")
    got, err = restore(litevisor_bin)
    assert got == ["c0", "c1"], err
    assert "holds more of the newest generation" not in err, err


def test_a_timestamp_an_exact_replica_cannot_restore_is_not_taken_from_a_whole_second_one(
        litevisor_bin, litestream_bin, tmp_path):
    """-timestamp T where the exact replica of the generation has no snapshot at or before
    T (Litestream's snapshot-interval rewrote it under its name after T, its WAL from
    before T kept): the whole-second copy was not cut, since the exact one planned
    nothing, and its snapshot stamped with T's second won, bringing back commits made
    after T; Litestream finds no snapshot (QA155 D2). An exact replica that stored some of
    the generation by T cuts it, whatever it restores."""
    restore = exact_and_whole_second_replicas(litevisor_bin, tmp_path,  # its WAL before T
                                              [600, 100, 200, 300, 400])[0]
    assert restore(litevisor_bin, "-replica", "A")[0] is None
    assert restore(litevisor_bin, "-replica", "B")[0] == ["c0", "c1", "c2", "c3"]  # its second
    got, err = restore(litevisor_bin)
    assert got is None, err
    assert restore(litestream_bin)[0] is None


def test_a_timestamp_takes_the_segments_an_exact_replica_stored_by_it_from_a_whole_second_one(
        litevisor_bin, tmp_path):
    """-timestamp T where the exact replica A has no snapshot at or before T (rewritten after
    it) but stored the generation's segments by T, and the whole-second copy B holds an
    older snapshot (stamped a second before T's): B was cut to a second before T and gave
    c0 alone, though A's exact times prove c1..c3 were committed before T and B holds those
    segments under the same names and sizes (QA159 D4). What A did not store by T stays
    out: a segment it stored later, or B's copy of a name that holds more (another sync
    schedule), lest commits made after T come back (QA155 D2). And A, with no snapshot to
    start from, does not get every replica probed again (QA159 D3)."""
    restore, db, a, b, cfg, s = exact_and_whole_second_replicas(litevisor_bin, tmp_path,
                                                                [600, 100, 200, 300, 400])
    (ga,) = (a / "generations").iterdir()
    (gb,) = (b / "generations").iterdir()
    wal_a, wal_b = sorted((ga / "wal").iterdir()), sorted((gb / "wal").iterdir())
    assert len(wal_a) == 4, wal_a
    for o in sorted((gb / "snapshots").iterdir()) + wal_b[:1]:  # c0: a second before T's
        os.utime(o, ns=(s - 10 ** 9,) * 2)
    assert restore(litevisor_bin, "-replica", "A")[0] is None
    assert restore(litevisor_bin, "-replica", "B")[0] == ["c0", "c1", "c2", "c3"]
    got, err = restore(litevisor_bin)
    assert got == ["c0", "c1", "c2", "c3"], err
    assert err.count("replicas keeping whole-second times") == 1, err
    assert "holds more of the newest generation" not in err, err

    # A stored c3's segment after T: B's copy of it, stamped T's second, stays out
    os.utime(wal_a[3], ns=(s + 700_000_000,) * 2)
    got, err = restore(litevisor_bin)
    assert got == ["c0", "c1", "c2"], err

    # B lost its last segment: it ends before A's last by T, but A cannot restore the
    # generation at T at all, so nobody is probed again for it (QA159 D3)
    os.utime(wal_a[3], ns=(s + 400_000_000 + 4,) * 2)
    last_b = wal_b[3].read_bytes()
    wal_b[3].unlink()
    got, err = restore(litevisor_bin)
    assert got == ["c0", "c1", "c2"], err
    assert "holds more of the newest generation" not in err, err
    assert err.count("replicas keeping whole-second times") == 1, err

    # B cut c2 and c3 into one segment under c2's name (synced less often than A), and A
    # stored c3 after T: that segment holds a commit A did not store by T and stays out
    os.utime(wal_a[3], ns=(s + 700_000_000,) * 2)
    merged = subprocess.run(["lz4", "-d", "-c", "-q"], input=wal_b[2].read_bytes() + last_b,
                            capture_output=True, check=True).stdout
    wal_b[2].write_bytes(lz4(merged))
    os.utime(wal_b[2], ns=(s, s))
    assert wal_b[2].stat().st_size != wal_a[2].stat().st_size
    assert restore(litevisor_bin, "-replica", "B")[0] == ["c0", "c1", "c2", "c3"]
    got, err = restore(litevisor_bin)
    assert got == ["c0", "c1"], err
