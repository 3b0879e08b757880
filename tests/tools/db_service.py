#!/usr/bin/python3
"""A stand-in SQLite service for tests/test_run.py.

At start it records what it finds (its database path from the environment,
whether the file exists, the rows in it) into --report, then opens the
database in WAL mode and inserts --rows rows. It touches --ready and waits.
--commit-on FILE: when FILE appears, insert the row named in it and touch
FILE.done. On SIGTERM it inserts "term-handler" (--term-delay seconds later: a
service saving its state on its way out) and exits 0.
"""
import argparse
import json
import os
import signal
import sqlite3
import sys
import time


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--var", default="LITESTREAM_DB_PATH")
    p.add_argument("--report", required=True)
    p.add_argument("--ready")
    p.add_argument("--rows", type=int, default=0)
    p.add_argument("--commit-on")
    p.add_argument("--exit-after-report", action="store_true")
    p.add_argument("--term-delay", type=float, default=0)
    a = p.parse_args()

    path = os.environ.get(a.var)
    report = {"path": path, "exists": bool(path and os.path.exists(path)), "rows": [],
              "env": {k: v for k, v in os.environ.items()
                      if k.startswith("LITEVISOR_DB_") or k == "LITESTREAM_DB_PATH"}}
    if report["exists"]:
        db = sqlite3.connect(path)
        try:
            report["rows"] = [r[0] for r in db.execute("SELECT v FROM t ORDER BY id")]
        except sqlite3.Error as e:
            report["error"] = str(e)
        db.close()
    with open(a.report + ".tmp", "w") as f:
        json.dump(report, f)
    os.rename(a.report + ".tmp", a.report)
    if a.exit_after_report:
        sys.exit(0)

    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA busy_timeout=5000")
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, v TEXT)")

    def insert(v):
        db.execute("INSERT INTO t (v) VALUES (?)", (v,))

    def on_term(sig, frame):
        time.sleep(a.term_delay)
        insert("term-handler")
        db.close()
        os._exit(0)

    signal.signal(signal.SIGTERM, on_term)
    for i in range(a.rows):
        insert(f"row-{i}")
    if a.ready:
        open(a.ready, "w").close()
    while True:
        if a.commit_on and os.path.exists(a.commit_on) and not os.path.exists(a.commit_on + ".done"):
            insert(open(a.commit_on).read().strip())
            open(a.commit_on + ".done", "w").close()
        time.sleep(0.01)


if __name__ == "__main__":
    main()
