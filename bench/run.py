#!/usr/bin/python3
"""make bench: litevisor beside Litestream v0.3.13, same machine, same run.

    run.py --bin PATH/TO/litevisor [--quick] [--only steady,burst,idle,restore,latency,health]

Each tool runs one after another on a fresh copy of the same database with the
same workload, several rounds; medians and spread go to bench/results/latest.md
(+ latest.json, PNG plots). A figure that cannot be measured says "n/a: why";
nothing is ever filled in. Goals are printed beside the figures, never failing.
"""
import argparse
import fcntl
import glob
import os
import platform
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
import lag  # noqa: E402
import measure  # noqa: E402
import report  # noqa: E402
from common import PYTHON, WORK, fresh_dir, log, stop, wait_for  # noqa: E402

WRITER = os.path.join(common.BENCH, "writer.py")
SCENARIOS = ("steady", "burst", "idle", "restore", "latency", "health")   # --only's names


class Plan:
    """Durations and rounds: full mode follows issue 7, QUICK shrinks them to < 2 min."""

    def __init__(self, quick):
        self.quick = quick
        self.steady_rate = 500
        self.steady_seconds = 3 if quick else 30
        self.steady_rounds = 1 if quick else 3
        self.burst_rows = 20000
        self.burst_batch = 200
        self.burst_rounds = 1 if quick else 3
        self.idle_seconds = 5 if quick else 60
        self.restore_sizes_mb = [15] if quick else [15, 500]
        self.restore_rounds = 3 if quick else 5
        self.first_snapshot_rounds = 1 if quick else 3
        self.latency_seconds = 2 if quick else 10
        self.latency_rounds = 2 if quick else 7
        self.health_size_mb = 500


# ---------------------------------------------------------------- databases

def make_base_db(path, rows=2000):
    """The starting database every replication run copies: small, WAL mode, checkpointed."""
    if os.path.exists(path):
        os.unlink(path)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, ts REAL, body TEXT)")
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO t (ts, body) VALUES (?, ?)",
                     [(time.time(), f"seed row {i} " + "x" * 80) for i in range(rows)])
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return path


WORDS = ("alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike "
         "november oscar papa quebec romeo sierra tango uniform victor whiskey xray").split()


def sized_db(size_mb):
    """A database of about size_mb MB (cached in bench/work/dbcache), deterministic.

    Rows mix repeated words with random bytes so LZ4 compresses it roughly like
    application data (neither all-zero nor incompressible).
    """
    cache = os.path.join(WORK, "dbcache")
    os.makedirs(cache, exist_ok=True)
    path = os.path.join(cache, f"db-{size_mb}mb.sqlite")
    if os.path.exists(path):
        return path
    log(f"building a {size_mb} MB database (cached for later runs)")
    tmp = path + ".tmp"
    for p in (tmp, tmp + "-wal", tmp + "-shm"):
        if os.path.exists(p):
            os.unlink(p)
    import random
    rnd = random.Random(size_mb)
    conn = sqlite3.connect(tmp, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, ts REAL, body TEXT, blob BLOB)")
    target = size_mb * 1000 * 1000
    i = 0
    while True:
        conn.execute("BEGIN")
        batch = []
        for _ in range(2000):
            words = " ".join(rnd.choice(WORDS) for _ in range(60))
            batch.append((1.7e9 + i, f"{i} {words}", rnd.randbytes(200)))
            i += 1
        conn.executemany("INSERT INTO t (ts, body, blob) VALUES (?, ?, ?)", batch)
        conn.execute("COMMIT")
        pages, psize = conn.execute("PRAGMA page_count").fetchone()[0], \
            conn.execute("PRAGMA page_size").fetchone()[0]
        if pages * psize >= target:
            break
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    for p in (tmp + "-wal", tmp + "-shm"):
        if os.path.exists(p):
            os.unlink(p)
    os.rename(tmp, path)
    return path


# ---------------------------------------------------------------- replication

def snapshots_present(rep_dir, s3, prefix):
    f = glob.glob(os.path.join(rep_dir, "generations", "*", "snapshots", "*.snapshot.lz4"))
    s = glob.glob(os.path.join(s3.prefix_dir(prefix), "generations", "*", "snapshots",
                               "*.snapshot.lz4" + lag.S3_META))
    return bool(f) and bool(s)


def replica_state(rep_dir, s3, prefix):
    """What both replicas hold: (files, complete) — complete is False while any object is
    half-written (a file replica's temp file, an s3rver object without its metadata)."""
    names, complete = [], True
    for root in (rep_dir, s3.prefix_dir(prefix)):
        for dirpath, _, files in os.walk(root):
            for n in files:
                p = os.path.join(dirpath, n)
                try:
                    names.append((p, os.path.getsize(p)))
                except FileNotFoundError:
                    complete = False
                if n.endswith(".tmp"):
                    complete = False
                if n.endswith(lag.S3_OBJ) and not os.path.exists(p[:-len(lag.S3_OBJ)] + lag.S3_META):
                    complete = False
    return sorted(names), complete


def wait_quiet(rep_dir, s3, prefix, settle=1.5, timeout=60):
    """Wait until no replica object is in flight and nothing changed for settle seconds, so
    stopping the tool cannot abort an upload and leave a broken object behind."""
    end = time.monotonic() + timeout
    last, since = None, time.monotonic()
    while time.monotonic() < end:
        state, complete = replica_state(rep_dir, s3, prefix)
        if state != last or not complete:
            last, since = state, time.monotonic()
        elif time.monotonic() - since >= settle:
            return True
        time.sleep(0.1)
    return False


def lag_stats(lags):
    vals = sorted(x for _, x in lags if x is not None)
    n = len(vals)
    if not n:
        return {"n": 0, "unreplicated": len(lags)}
    return {"n": n, "unreplicated": len(lags) - n, "p50": vals[n // 2],
            "p99": vals[min(n - 1, int(n * 0.99))], "max": vals[-1]}


def replication_run(tool, s3, base_db, d, sync_interval, workload, drain=20, sample=True):
    """One tool, one fresh DB, one workload; returns the figures or {'na': why}.

    sample=False leaves out the memory sampler, so that the write-latency runs load the
    machine exactly as the no-replicator run does, apart from the tool itself."""
    why = tool.available("replicate")
    if why:
        return {"na": why}
    fresh_dir(d)
    db = os.path.join(d, "db.sqlite")
    shutil.copyfile(base_db, db)
    rep = os.path.join(d, "replica")
    prefix = os.path.relpath(d, WORK).replace(os.sep, "-")
    cfg = common.write_config(os.path.join(d, "config.yml"), db, file_replica=rep, s3=s3,
                              s3_prefix=prefix, sync_interval=sync_interval)
    logf = open(os.path.join(d, "tool.log"), "w")
    proc = subprocess.Popen(tool.replicate_cmd(cfg), stdout=logf, stderr=subprocess.STDOUT)
    smp = measure.Sampler(proc.pid, 0.02 if sample else None).start()
    res = {}
    try:
        if not wait_for(lambda: proc.poll() is not None or snapshots_present(rep, s3, prefix),
                        60, 0.05) or proc.poll() is not None:
            reason = log_reason(logf.name)
            if "non-positive interval for NewTicker" in reason:
                return {"na": f"n/a: {tool.name} v0.3.13 does not run with sync-interval 0 "
                              "(panic: non-positive interval for NewTicker); "
                              "see its sync-interval 1s figures"}
            return {"na": f"n/a: {tool.name} made no snapshot in both replicas "
                          f"(exit {proc.poll()}{reason}; "
                          f"see {os.path.relpath(d, common.ROOT)}/tool.log)"}
        commits_path = os.path.join(d, "commits.txt")
        if workload == "idle":
            time.sleep(2)   # let the start-up uploads finish: idle means idle
        t0 = time.monotonic()
        cpu0 = measure.cpu_seconds(proc.pid)
        tc0 = measure.thread_cpu(proc.pid) if workload == "idle" else None
        if workload == "idle":
            time.sleep(PLAN.idle_seconds)
            commits = []
        else:
            why = run_writer(workload(db, commits_path))
            if why:
                return {"na": why}
            commits = lag.read_commits(commits_path)
            cache = {}
            wait_for(lambda: lag.all_covered(commits, rep, False, cache) and
                     lag.all_covered(commits, s3.prefix_dir(prefix), True, cache), drain, 0.05)
        tc1 = measure.thread_cpu(proc.pid) if workload == "idle" else None
        cpu1 = measure.cpu_seconds(proc.pid)
        res["window_s"] = time.monotonic() - t0
        res["hwm_mib"] = measure.mib(measure.status_kib(proc.pid, "VmHWM"))
        if cpu0 is None or cpu1 is None:
            return {"na": f"n/a: {tool.name} exited during the run (exit {proc.poll()})"}
        res["cpu_s"] = cpu1 - cpu0
        if workload == "idle":
            # ticks (10 ms) are too coarse for a few wake-ups a minute
            res["cpu_s"], res["cpu_source"] = measure.window_cpu(tc0, tc1, cpu1 - cpu0)
    finally:
        smp.stop()
        t_stop = time.monotonic()
        stop(proc, timeout=15)
        res["stop_s"] = time.monotonic() - t_stop
        res["exit"] = proc.returncode
        logf.close()
    res["peak_anon_mib"] = measure.mib(smp.peak_anon_kib)
    res["commits"] = len(commits)
    for name, root, is_s3 in (("file", rep, False), ("s3", s3.prefix_dir(prefix), True)):
        objs, total = lag.scan(root, is_s3)
        lags = lag.commit_lags(commits, objs)
        res[f"lag_{name}"] = lag_stats(lags)
        res[f"bytes_{name}"] = total
        res[f"series_{name}"] = [(w - commits[0][0], x) for w, x in lags] if commits else []
    if commits:
        lat = sorted(c[1] for c in commits)
        res["commit_p50_ms"] = lat[len(lat) // 2] * 1000
        res["commit_p99_ms"] = lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000
    return res


def run_writer(args):
    """Run writer.py; None on success, else the n/a reason (the run is void, not the bench)."""
    r = subprocess.run([PYTHON, WRITER] + args, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, text=True)
    if r.returncode == 0:
        return None
    last = (r.stderr.strip().splitlines() or [""])[-1]
    return f"n/a: the writer failed (exit {r.returncode}): {last[:200]}"


def log_reason(path):
    """The first line of a tool's log that says why it failed, if any."""
    try:
        with open(path, errors="replace") as f:
            for line in f:
                low = line.lower()
                if "panic:" in low or "level=error" in low or "error" in low or "fatal" in low:
                    return ": " + line.strip()[:160]
    except OSError:
        pass
    return ""


def steady_workload(db, out):
    return ["steady", db, out, "--rate", str(PLAN.steady_rate),
            "--seconds", str(PLAN.steady_seconds)]


def burst_workload(db, out):
    return ["burst", db, out, "--rows", str(PLAN.burst_rows), "--batch", str(PLAN.burst_batch)]


def scenario_replication(tools, s3, base_db, key, sync_interval, workload, rounds):
    out = {t.name: [] for t in tools}
    for r in range(rounds):
        for t in tools:
            if r > 0 and "na" in out[t.name][0]:
                continue   # it could not run in round 1; the reason stands
            d = os.path.join(WORK, "runs", key, f"{t.name}-{r}")
            log(f"{key}: {t.name} round {r + 1}/{rounds} (sync-interval {sync_interval})")
            res = replication_run(t, s3, base_db, d, sync_interval, workload)
            out[t.name].append(res)
            if "na" in res:
                log(f"  {res['na']}")
            else:
                log(f"  cpu {res['cpu_s']:.3f}s rss {res['hwm_mib']:.1f}MiB "
                    f"anon {res['peak_anon_mib']:.1f}MiB lag-s3 p50 "
                    f"{res['lag_s3'].get('p50', float('nan')):.3f}s")
    return out


# ---------------------------------------------------------------- restore

def prime_page_cache(nbytes):
    """Write nbytes to a scratch file and delete it at once (untimed).

    This VM hands memory that stays free for about 2 s back to its host
    (virtio-balloon free page reporting); the next touch of such a page costs
    a fault on the host. Writing 500 MB into the page cache then takes 0.1 s
    or 0.9 s of system time depending only on how long ago those pages were
    freed. Freeing nbytes of page cache just before a timed run gives every
    tool, floor and reference the same, host-backed pages, as on bare metal.
    """
    path = os.path.join(WORK, "prime.tmp")
    buf = bytes(4 << 20)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        left = nbytes
        while left > 0:
            left -= os.write(fd, buf[:min(left, len(buf))])
    finally:
        os.close(fd)
        os.unlink(path)   # dirty pages of an unlinked file are dropped, never written


def timed(cmd, shell=False, sample=False, timeout=600, prime=0):
    """Run cmd; returns (seconds, rc, VmHWM MiB, peak anon MiB, stderr); the memory
    figures are None unless sample, or if the process ended before the first sample.

    Dirty pages left by the previous run are flushed first (untimed), so one
    run's writeback does not land in the next one's time; then prime bytes of
    page cache are freed just before the start (prime_page_cache).
    """
    os.sync()
    if prime:
        prime_page_cache(prime)
    # stderr to a file, not a pipe: a chatty tool must not block on a full pipe
    with tempfile.TemporaryFile() as errf:
        t0 = time.monotonic()
        p = subprocess.Popen(cmd, shell=shell, stdout=subprocess.DEVNULL, stderr=errf)
        smp = measure.Sampler(p.pid, 0.005).start() if sample else None
        _, status, _ = os.wait4(p.pid, 0)
        dt = time.monotonic() - t0
        errf.seek(0)
        err = errf.read().decode(errors="replace")
    p.returncode = os.waitstatus_to_exitcode(status)
    anon = hwm = None
    if smp:
        smp.stop()
        if smp.samples:
            anon, hwm = measure.mib(smp.peak_anon_kib), measure.mib(smp.hwm_kib)
    return dt, p.returncode, hwm, anon, err


def integrity_seconds(path):
    t0 = time.monotonic()
    r = subprocess.run(["sqlite3", path, "PRAGMA integrity_check"], capture_output=True, text=True)
    return time.monotonic() - t0, r.stdout.strip() == "ok"


def remove_db(path):
    for suffix in ("", "-wal", "-shm", ".tmp", ".tmp-wal", ".tmp-shm"):
        if os.path.exists(path + suffix):
            os.unlink(path + suffix)


def fsync_write(path, nbytes):
    """Write nbytes to path and fsync: the disk half of the restore floor."""
    buf = os.urandom(1 << 20)
    os.sync()
    prime_page_cache(nbytes + (nbytes >> 3))
    t0 = time.monotonic()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        left = nbytes
        while left > 0:
            left -= os.write(fd, buf[:min(left, len(buf))])
        os.fsync(fd)
    finally:
        os.close(fd)
    return time.monotonic() - t0


def first_snapshot(tool, s3, src_db, d):
    """Start replicate on a fresh copy of src_db; time/CPU/memory until the snapshot is in
    both replicas (memory must stay flat whatever the database size). Returns
    (figures or {'na'}, db, file replica dir, S3 prefix)."""
    fresh_dir(d)
    db = os.path.join(d, "db.sqlite")
    shutil.copyfile(src_db, db)
    rep = os.path.join(d, "replica")
    prefix = os.path.relpath(d, WORK).replace(os.sep, "-") + f"-{int(time.time())}"
    why = tool.available("replicate")
    if why:
        return {"na": why}, db, rep, prefix
    cfg = common.write_config(os.path.join(d, "config.yml"), db, file_replica=rep, s3=s3,
                              s3_prefix=prefix)
    os.sync()
    with open(os.path.join(d, "tool.log"), "w") as logf:
        t0 = time.monotonic()
        p = subprocess.Popen(tool.replicate_cmd(cfg), stdout=logf, stderr=subprocess.STDOUT)
        smp = measure.Sampler(p.pid).start()
        ok = wait_for(lambda: p.poll() is not None or snapshots_present(rep, s3, prefix),
                      900, 0.05)
        dt = time.monotonic() - t0
        cpu = measure.cpu_seconds(p.pid)
        hwm = measure.status_kib(p.pid, "VmHWM")
        smp.stop()
        if ok and p.poll() is None:
            wait_quiet(rep, s3, prefix)   # untimed: the restores need whole replicas
        stop(p)
    if not ok or not snapshots_present(rep, s3, prefix) or cpu is None:
        return ({"na": f"n/a: {tool.name} wrote no snapshot to both replicas (exit {p.returncode}"
                       f"{log_reason(logf.name)})"}, db, rep, prefix)
    return ({"s": dt, "cpu_s": cpu, "hwm_mib": measure.mib(hwm),
             "peak_anon_mib": measure.mib(smp.peak_anon_kib)}, db, rep, prefix)


def without_check(config):
    """The same config, with litevisor's check of the restored database turned off."""
    path = config[:-len(".yml")] + "-nocheck.yml"
    if not os.path.exists(path):
        with open(config) as f, open(path, "w") as g:
            g.write(f.read() + "restore:\n  verify: none\n")
    return path


def restore_once(t, config, db, outp, prime):
    """One timed restore of db to outp by tool t: its figures, or {'na': why}."""
    remove_db(outp)
    dt, rc, rss, anon, err = timed(t.restore_cmd(config, outp, db), sample=True, prime=prime)
    if rc != 0 or not os.path.exists(outp):
        return {"na": f"n/a: {t.name} restore failed (exit {rc}): "
                      f"{err.strip().splitlines()[-1] if err.strip() else ''}"}
    it, ok_int = integrity_seconds(outp)
    run = {"s": dt, "rss_mib": rss, "anon_mib": anon, "integrity_s": it, "integrity_ok": ok_int}
    # litevisor checks the result itself (quick_check) before the rename and logs how
    # long that took: timed apart, as issue 7 asks
    m = re.search(r"verified check=\w+ ms=(\d+)", err)
    if m:
        run["check_s"] = int(m.group(1)) / 1000
        # ...but the check overlaps the final fsync, so subtracting it would flatter
        # the restore: time one without it, right after
        remove_db(outp)
        dn, rcn, _, _, errn = timed(t.restore_cmd(without_check(config), outp, db), prime=prime)
        if rcn != 0 or "verified check=" in errn:
            return {"na": f"n/a: {t.name} restore without its check failed (exit {rcn})"}
        run["nocheck_s"] = dn
    return run


def reference_once(name, cmd, outp, raw_bytes, prime):
    """One timed run of a reference or floor command: {'s': seconds}, or {'na': why}."""
    remove_db(outp)
    dt, rc, _, _, err = timed(["/bin/bash", "-o", "pipefail", "-c", cmd], prime=prime)
    if rc == 0 and name not in ("decompress_only", "download_only", "download_beside_busy") and \
            os.path.getsize(outp) != raw_bytes:
        rc, err = -1, f"wrote {os.path.getsize(outp)} bytes, expected {raw_bytes}"
    if rc != 0:
        return {"na": f"n/a: {name} failed (exit {rc}): {err.strip()[-200:]}"}
    return {"s": dt}


def scenario_restore(tools, s3):
    out = {}
    lt = tools[0]
    for size in PLAN.restore_sizes_mb:
        src_db_cached = sized_db(size)
        d = fresh_dir(os.path.join(WORK, "runs", f"restore-{size}"))
        entry = {"db_bytes": os.path.getsize(src_db_cached), "first_snapshot": {}}
        out[str(size)] = entry
        made = made_lv = None
        # rounds interleaved like the restores'; the restores use the last round's replicas
        for rnd in range(PLAN.first_snapshot_rounds):
            for t in tools:
                log(f"restore {size} MB: {t.name} replicates it (first snapshot to file + S3, "
                    f"round {rnd + 1}/{PLAN.first_snapshot_rounds})")
                res, db, rep, prefix = first_snapshot(t, s3, src_db_cached,
                                                      os.path.join(d, "write-" + t.name))
                entry["first_snapshot"].setdefault(t.name, []).append(res)
                if t is lt:
                    made = None if "na" in res else (db, rep, prefix)
                else:
                    made_lv = res.get("na") or (db, prefix)
        if made is None:
            entry["na"] = "n/a: Litestream did not write the snapshot the restores need"
            continue
        db, rep, prefix = made
        snap = sorted(glob.glob(os.path.join(rep, "generations", "*", "snapshots", "*.lz4")))[-1]
        snap_key = os.path.relpath(snap, rep)
        entry["snapshot_lz4_bytes"] = os.path.getsize(snap)
        cfgs = {"file": (common.write_config(os.path.join(d, "file.yml"), db, file_replica=rep),
                         db),
                "s3": (common.write_config(os.path.join(d, "s3.yml"), db, s3=s3,
                                           s3_prefix=prefix), db)}
        if isinstance(made_lv, tuple):
            # the same database replicated by litevisor: its own format, both restorers
            cfgs["s3-litevisor"] = (common.write_config(os.path.join(d, "s3-lv.yml"), made_lv[0],
                                                        s3=s3, s3_prefix=made_lv[1]), made_lv[0])
        outp = os.path.join(d, "out.sqlite")
        # page cache freed before each timed run: what it writes, plus room for temp files
        prime = entry["db_bytes"] + (entry["db_bytes"] >> 3)
        # the snapshot's own size: Litestream's helper tables make it larger than the source
        wc = subprocess.run(f"lz4 -dc < '{snap}' | wc -c", shell=True, capture_output=True,
                            text=True)
        entry["snapshot_bytes"] = raw_bytes = int(wc.stdout.strip() or 0)
        url = f"{s3.endpoint}/{common.BUCKET}/{prefix}/{snap_key}"
        curl = (f"curl -sf --aws-sigv4 'aws:amz:{s3.region}:s3' "
                f"--user '{s3.access_key}:{s3.secret_key}' -H 'x-amz-content-sha256: "
                "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855' "
                f"'{url}'")
        # the raw reference and the floors, on the same object
        # The S3 test server shares this machine's two CPUs with the restore. In two
        # experiments, one busy loop on the other CPU, even at nice 19, slowed s3rver's
        # delivery of the 500 MB object by 21-30 % (e.g. 0.47 -> 0.61 s): a restore's own
        # CPU work (decompression, checksum, page-cache writes) slows the server too. This
        # row shows what such work costs it in each run (docs/restore.md §8).
        busy = "timeout 60 sh -c 'while :; do :; done' & spin=$!; "
        refs = {"download_only": f"{curl} > /dev/null",
                "download_beside_busy": f"{busy}{curl} > /dev/null; rc=$?; kill $spin; "
                                        "wait $spin 2>/dev/null; exit $rc",
                "raw_s3": f"{curl} | lz4 -dc > '{outp}' && sync '{outp}'",
                "raw_file": f"lz4 -dc < '{snap}' > '{outp}' && sync '{outp}'",
                "decompress_only": f"lz4 -dc < '{snap}' > /dev/null"}
        for t in tools:
            why = t.available("restore")
            for source in cfgs:
                entry[f"{t.name}|{source}"] = {"na": why} if why else []
            if not isinstance(made_lv, tuple):
                entry[f"{t.name}|s3-litevisor"] = {"na": made_lv or "n/a"}
        for name in list(refs) + ["write_fsync_only"]:
            entry[name] = []
        # Each round runs everything once, tools interleaved (Litestream, litevisor, ...),
        # then the references and floors. This VM drifts: its first large write after a
        # pause is often slow (that must not always land on the same tool), and s3rver's
        # delivery of the same object took 0.55 s in one run and 0.9 s in another, so a
        # floor timed in another window than the restores would measure the drift.
        for r in range(PLAN.restore_rounds):
            for source, (c, db) in cfgs.items():
                for t in tools:
                    key = f"{t.name}|{source}"
                    if isinstance(entry[key], list):
                        run = restore_once(t, c, db, outp, prime)
                        if "na" in run:
                            entry[key] = run
                            continue
                        entry[key].append(run)
                        chk = (f", {run['nocheck_s']:.2f}s without its check "
                               f"({run['check_s']:.2f}s)" if "check_s" in run else "")
                        log(f"  {t.name} from {source} round {r + 1}: {run['s']:.2f}s{chk} rss "
                            f"{run['rss_mib'] or 0:.1f}MiB integrity "
                            f"{'ok' if run['integrity_ok'] else 'FAILED'} "
                            f"({run['integrity_s']:.2f}s)")
            for name, cmd in refs.items():
                if isinstance(entry[name], list):
                    run = reference_once(name, cmd, outp, raw_bytes, prime)
                    if "na" in run:
                        entry[name] = run
                    else:
                        entry[name].append(run)
            remove_db(outp)
            entry["write_fsync_only"].append({"s": fsync_write(outp, raw_bytes)})
        remove_db(outp)
        log(f"  raw S3 reference {med([x['s'] for x in entry['raw_s3']]) if isinstance(entry['raw_s3'], list) else entry['raw_s3']}")
    return out


def med(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2] if len(xs) % 2 else (xs[len(xs) // 2 - 1] + xs[len(xs) // 2]) / 2


# ---------------------------------------------------------------- write latency

def scenario_latency(tools, s3, base_db):
    """Commit latency of the writer alone, beside Litestream, beside litevisor; rounds interleaved.

    Each round is bracketed by two runs without a replicator ("none" first, "none_after"
    last): a tool is compared with both, so drift within the round hits it no more than
    them, and the two bare runs compared with each other are an A/A control — what the
    impact figure reads for a replicator that costs nothing (report.impact)."""
    variants = [("none", None)] + [(t.name, t) for t in tools] + [("none_after", None)]
    out = {name: [] for name, _ in variants}
    for r in range(PLAN.latency_rounds):
        for name, t in variants:
            d = os.path.join(WORK, "runs", "latency", f"{name}-{r}")
            args = lambda db, o: ["steady", db, o, "--rate", str(PLAN.steady_rate),  # noqa: E731
                                  "--seconds", str(PLAN.latency_seconds)]
            if t is None:
                fresh_dir(d)
                db = os.path.join(d, "db.sqlite")
                shutil.copyfile(base_db, db)
                o = os.path.join(d, "commits.txt")
                why = run_writer(args(db, o))
                if why:
                    res = {"na": why}
                else:
                    c = lag.read_commits(o)
                    lat = sorted(x[1] for x in c)
                    res = {"commit_p50_ms": lat[len(lat) // 2] * 1000,
                           "commit_p99_ms": lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000}
            else:
                res = replication_run(t, s3, base_db, d, "1s", args, drain=5, sample=False)
                res = {k: v for k, v in res.items() if k in ("na", "commit_p50_ms", "commit_p99_ms")}
            out[name].append(res)
            log(f"latency round {r + 1}/{PLAN.latency_rounds} {name}: "
                f"{res.get('na') or '%.3f / %.3f ms' % (res['commit_p50_ms'], res['commit_p99_ms'])}")
    return out


# ---------------------------------------------------------------- health

def scenario_health(tools, s3):
    """p99 of /readyz while litevisor uploads a large snapshot (litevisor only)."""
    lv = tools[1]
    why = lv.available("run")
    if why:
        return {"na": why}
    import health
    return health.measure(lv, s3, sized_db(PLAN.health_size_mb), os.path.join(WORK, "runs", "health"))


# ---------------------------------------------------------------- main

def machine():
    info = {"python": platform.python_version(), "kernel": platform.release()}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info["cores"] = os.cpu_count()
    info["mem_gib"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    try:
        fs = subprocess.run(["findmnt", "-n", "-o", "FSTYPE", "--target", WORK],
                            capture_output=True, text=True)
        info["work_fs"] = fs.stdout.strip()
    except OSError:
        pass
    return info


def version_of(cmd):
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        return (r.stdout or r.stderr).strip().splitlines()[0].split(" (")[0]
    except (OSError, subprocess.TimeoutExpired, IndexError):
        return "unknown"


PLAN = Plan(False)


def main():
    global PLAN
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True, help="the litevisor binary")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", default=",".join(SCENARIOS))
    a = ap.parse_args()
    PLAN = Plan(a.quick)
    only = {n for n in a.only.split(",") if n}
    if not only:
        log(f"no scenario named in --only/BENCH_ONLY (known: {' '.join(SCENARIOS)})")
        return 2
    if only - set(SCENARIOS):
        log(f"unknown scenario(s) in --only/BENCH_ONLY: {', '.join(sorted(only - set(SCENARIOS)))} "
            f"(known: {' '.join(SCENARIOS)})")
        return 2
    os.makedirs(WORK, exist_ok=True)
    # one bench at a time: a second one would delete the first one's runs and S3 store
    lock = open(os.path.join(WORK, ".lock"), "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        log("another `make bench` is running in this tree (bench/work/.lock); not starting")
        return 1
    shutil.rmtree(os.path.join(WORK, "runs"), ignore_errors=True)
    tools = common.make_tools(os.path.abspath(a.bin))
    started = time.time()
    res = {"meta": {"mode": "quick" if a.quick else "full",
                    "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started)),
                    "machine": machine(),
                    "litestream": version_of([common.LITESTREAM, "version"]),
                    "litevisor": version_of([tools[1].binary, "version"]),
                    # the binary's own version is fixed when cmd_version.o was last compiled
                    "tree": version_of(["git", "-C", common.ROOT, "describe", "--always",
                                        "--dirty"]),
                    "plan": vars(PLAN)},
           "scenarios": {}}
    for t in tools:
        for c in ("replicate", "restore", "run"):
            t.available(c)
    res["meta"]["availability"] = {t.name: t.missing for t in tools}
    if only != set(SCENARIOS):   # a subset: kept as latest.* only, never as its mode's record
        res["meta"]["only"] = [n for n in SCENARIOS if n in only]
    s3 = common.S3Server(fresh_dir(os.path.join(WORK, "s3"))).start()
    log(f"S3 test server on {s3.endpoint}; store {s3.store}")
    base = make_base_db(os.path.join(WORK, "base.sqlite"))
    sc = res["scenarios"]
    try:
        if "steady" in only:
            sc["steady_1s"] = scenario_replication(tools, s3, base, "steady-1s", "1s",
                                                   steady_workload, PLAN.steady_rounds)
            sc["steady_0"] = scenario_replication(tools, s3, base, "steady-0", "0s",
                                                  steady_workload, PLAN.steady_rounds)
        if "burst" in only:
            sc["burst"] = scenario_replication(tools, s3, base, "burst", "1s",
                                               burst_workload, PLAN.burst_rounds)
        if "idle" in only:
            sc["idle"] = scenario_replication(tools, s3, base, "idle", "1s", "idle", 1)
        if "restore" in only:
            sc["restore"] = scenario_restore(tools, s3)
        if "latency" in only:
            sc["latency"] = scenario_latency(tools, s3, base)
        if "health" in only:
            if a.quick:
                sc["health"] = {"na": "n/a in QUICK mode: needs a 500 MB snapshot upload "
                                      "(run the full `make bench`)"}
            else:
                sc["health"] = scenario_health(tools, s3)
    finally:
        s3.close()
    res["meta"]["seconds"] = round(time.time() - started, 1)
    md = report.write(res)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
