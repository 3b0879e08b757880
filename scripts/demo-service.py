#!/usr/bin/python3
"""demo-service.py DB — the demo's stand-in for radarr & co: writes a row to a
SQLite database (WAL mode) every 100 ms until SIGTERM/SIGINT, then closes
cleanly. Prints a line every 50 rows so you can see it is alive."""
import os
import signal
import sqlite3
import sys
import time

db_path = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("LITEVISOR_DB_DEMO_DB", "demo.db")
stop = False


def on_signal(signum, frame):
    global stop
    stop = True


signal.signal(signal.SIGTERM, on_signal)
signal.signal(signal.SIGINT, on_signal)

os.makedirs(os.path.dirname(os.path.abspath(db_path)), exist_ok=True)
conn = sqlite3.connect(db_path, timeout=5)
conn.execute("PRAGMA journal_mode=wal")
conn.execute("CREATE TABLE IF NOT EXISTS heartbeat (id INTEGER PRIMARY KEY, at TEXT, note TEXT)")
conn.commit()
n = conn.execute("SELECT count(*) FROM heartbeat").fetchone()[0]
print(f"demo-service: {db_path} holds {n} rows; writing one every 100 ms", flush=True)
while not stop:
    conn.execute("INSERT INTO heartbeat (at, note) VALUES (strftime('%Y-%m-%dT%H:%M:%fZ','now'), ?)",
                 (f"row {n}",))
    conn.commit()
    n += 1
    if n % 50 == 0:
        print(f"demo-service: {n} rows", flush=True)
    time.sleep(0.1)
conn.close()
print(f"demo-service: stopped after {n} rows", flush=True)
