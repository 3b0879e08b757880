"""Scenario 6: /readyz latency while litevisor uploads a large snapshot (litevisor only).

`litevisor run` supervises a do-nothing service (`sleep`) with one database
of ~500 MB and the S3 replica; a fresh replica means the first thing it does
is upload the whole snapshot. Meanwhile a client asks /readyz over a new
connection every 20 ms, like a Nomad/Consul check, and times each answer.
The figures count only if the snapshot upload was seen to happen during the
window (its object appears in the S3 store after the first probe); otherwise
the scenario reports n/a with the reason.
"""
import glob
import http.client
import os
import shutil
import subprocess
import time

import common
import lag
from common import fresh_dir, stop, wait_for


def _probe(port):
    t0 = time.monotonic()
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        c.request("GET", "/readyz")
        r = c.getresponse()
        r.read()
        status = r.status
        c.close()
    except OSError:
        return None, time.monotonic() - t0
    return status, time.monotonic() - t0


def measure(tool, s3, src_db, d, timeout=300):
    fresh_dir(d)
    db = os.path.join(d, "db.sqlite")
    shutil.copyfile(src_db, db)
    port = common.free_port()
    prefix = "health-" + str(int(time.time()))
    cfg = os.path.join(d, "config.yml")
    common.write_config(cfg, db, s3=s3, s3_prefix=prefix)
    with open(cfg) as f:
        text = f.read()
    with open(cfg, "w") as f:
        f.write(f"addr: 127.0.0.1:{port}\n" + text)
    logf = open(os.path.join(d, "tool.log"), "w")
    proc = subprocess.Popen([tool.binary, "run", "-config", cfg, "--", "sleep", "3600"],
                            stdout=logf, stderr=subprocess.STDOUT)
    snap_glob = os.path.join(s3.prefix_dir(prefix), "generations", "*", "snapshots",
                             "*.snapshot.lz4" + lag.S3_META)
    times, statuses = [], {}
    try:
        first = wait_for(lambda: proc.poll() is not None or _probe(port)[0] is not None, 30, 0.05)
        if not first or proc.poll() is not None:
            with open(logf.name, errors="replace") as f:
                last = [x.strip() for x in f if x.strip()][-1:] or [""]
            return {"na": f"n/a: `litevisor run` with a database did not serve /readyz "
                          f"(exit {proc.poll()}: {last[0][:200]})"}
        if glob.glob(snap_glob):
            return {"na": "n/a: the snapshot upload finished before the first probe"}
        end = time.monotonic() + timeout
        while time.monotonic() < end and proc.poll() is None:
            status, dt = _probe(port)
            times.append(dt)
            statuses[status] = statuses.get(status, 0) + 1
            if glob.glob(snap_glob):
                break
            time.sleep(0.02)
        uploaded = bool(glob.glob(snap_glob))
    finally:
        stop(proc)
        logf.close()
    if not uploaded:
        return {"na": f"n/a: no snapshot upload finished within {timeout} s "
                      f"(exit {proc.returncode}; see {os.path.relpath(d, common.ROOT)}/tool.log)"}
    times.sort()
    n = len(times)
    return {"n": n, "p50": times[n // 2], "p99": times[min(n - 1, int(n * 0.99))],
            "max": times[-1], "statuses": {str(k): v for k, v in statuses.items()},
            "db_bytes": os.path.getsize(db),
            "note": f"{n} probes during the upload of a {os.path.getsize(db) / 1e6:.0f} MB "
                    f"database's snapshot to the S3 test server; answers: "
                    + ", ".join(f"{k}×{v}" for k, v in statuses.items()) + "."}
