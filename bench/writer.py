#!/usr/bin/python3
"""The application stand-in: a separate process that commits to a SQLite DB in WAL mode.

    writer.py steady DB OUT --rate 500 --seconds 30
    writer.py burst  DB OUT --rows 20000 --batch 200

For each commit it records, after COMMIT returns: the wall time, the commit
latency, and the WAL position the commit reached — (salt1, salt2) from the
-wal header plus the byte offset just past the last commit frame (found by
walking frame headers; the file size is not the position after a WAL restart,
since a restarted WAL is overwritten from the start). A replica covers the
commit once it holds WAL bytes of that salt up to that offset.

The connection behaves like a typical app's: journal_mode=WAL,
synchronous=NORMAL, busy_timeout=5000, SQLite's default autocheckpoint.
Output: one line per commit, "wall_time latency_s salt1 salt2 offset"
(latency to the ns).
"""
import argparse
import os
import sqlite3
import struct
import sys
import time


class WalPosition:
    """Tracks the end of the last commit frame in a -wal file, incrementally."""

    def __init__(self, path):
        self.path = path
        self.fd = -1
        self.salt = None
        self.pos = 32
        self.commit_end = 32
        self.frame = 0

    def read(self):
        if self.fd < 0:
            self.fd = os.open(self.path, os.O_RDONLY)
        hdr = os.pread(self.fd, 32, 0)
        if len(hdr) < 32:
            return (0, 0, 0)
        page_size = struct.unpack(">I", hdr[8:12])[0]
        salt = hdr[16:24]
        if salt != self.salt:
            self.salt, self.pos, self.commit_end = salt, 32, 32
            self.frame = 24 + page_size
        while True:
            fh = os.pread(self.fd, 24, self.pos)
            if len(fh) < 24 or fh[8:16] != salt:
                break
            self.pos += self.frame
            if fh[4:8] != b"\0\0\0\0":
                self.commit_end = self.pos
        s1, s2 = struct.unpack(">II", salt)
        return (s1, s2, self.commit_end)


def open_db(path):
    conn = sqlite3.connect(path, isolation_level=None, timeout=5.0)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA busy_timeout=5000")
    conn.execute("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, ts REAL, body TEXT)")
    return conn


PAYLOAD = "order {n}: customer-{c} item-{i} qty {q} status pending note lorem ipsum dolor sit"


def row(n):
    return (time.time(), PAYLOAD.format(n=n, c=n * 7919 % 10007, i=n % 977, q=n % 13))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["steady", "burst"])
    ap.add_argument("db")
    ap.add_argument("out")
    ap.add_argument("--rate", type=float, default=500)
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--rows", type=int, default=20000)
    ap.add_argument("--batch", type=int, default=200)
    a = ap.parse_args()

    conn = open_db(a.db)
    wal = WalPosition(a.db + "-wal")
    recs = []
    n = 0
    if a.mode == "steady":
        total = int(a.rate * a.seconds)
        t0 = time.monotonic()
        for k in range(total):
            due = t0 + k / a.rate
            d = due - time.monotonic()
            if d > 0:
                time.sleep(d)
            t1 = time.perf_counter()
            conn.execute("BEGIN")
            conn.execute("INSERT INTO t (ts, body) VALUES (?, ?)", row(n))
            conn.execute("COMMIT")
            lat = time.perf_counter() - t1
            wall = time.time()
            n += 1
            recs.append((wall, lat) + wal.read())
    else:
        while n < a.rows:
            k = min(a.batch, a.rows - n)
            t1 = time.perf_counter()
            conn.execute("BEGIN")
            conn.executemany("INSERT INTO t (ts, body) VALUES (?, ?)",
                             [row(n + j) for j in range(k)])
            conn.execute("COMMIT")
            lat = time.perf_counter() - t1
            wall = time.time()
            n += k
            recs.append((wall, lat) + wal.read())
    conn.close()
    with open(a.out + ".tmp", "w") as f:
        for r in recs:
            # latency in ns: a commit takes ~30 µs here, and the 1 % goal needs < 0.3 µs
            f.write("%.6f %.9f %d %d %d\n" % r)
    os.rename(a.out + ".tmp", a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
