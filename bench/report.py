"""Turns run.py's results into bench/results/latest.md (+ .json, + a copy per mode) and PNGs.

Every figure is a median over rounds with its spread (min–max) when there was
more than one round. "n/a: why" is printed where a figure could not be
measured. Goals (issue 7) are printed beside the figures with ✓/✗ — they
never fail the run.
"""
import json
import os
import shutil
import subprocess

from common import RESULTS, WORK


def med(xs):
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2


class Fig:
    """A measured figure: median, min, max over rounds — or the reason there is none."""

    def __init__(self, vals=None, na=None):
        self.vals = [v for v in (vals or []) if v is not None]
        self.na = None if self.vals else (na or "n/a: not measured")

    @property
    def ok(self):
        return bool(self.vals)

    @property
    def m(self):
        return med(self.vals) if self.vals else None

    def fmt(self, unit="", digits=2, scale=1.0):
        if not self.vals:
            return self.na
        f = "%%.%df" % digits
        s = f % (self.m * scale) + unit
        if len(self.vals) > 1:
            s += " (" + f % (min(self.vals) * scale) + "–" + f % (max(self.vals) * scale) + ")"
        return s


def collect(runs, get):
    """Fig from a tool's per-round result dicts; the first n/a reason wins if nothing measured."""
    if isinstance(runs, dict):
        return Fig(na=runs.get("na", "n/a"))
    vals, na = [], None
    for r in runs:
        if "na" in r:
            na = na or r["na"]
            continue
        try:
            v = get(r)
        except (KeyError, TypeError):
            v = None
        if v is not None:
            vals.append(v)
    if not vals:
        return Fig(na=na or "n/a: not measured")
    return Fig(vals)


def ratio(a, b):
    if a.ok and b.ok and b.m:
        return a.m / b.m
    return None


def verdict(ok):
    return "✓" if ok else "✗"


class Table:
    def __init__(self, header):
        self.header = header
        self.rows = []
        self.notes = []

    def cell(self, fig, *fmt):
        """A figure's text; an n/a reason becomes a numbered note under the table."""
        if fig.ok:
            return fig.fmt(*fmt)
        if fig.na not in self.notes:
            self.notes.append(fig.na)
        return f"n/a [{self.notes.index(fig.na) + 1}]"

    def add(self, *cells):
        self.rows.append([str(c) for c in cells])

    def md(self):
        out = ["| " + " | ".join(self.header) + " |",
               "|" + "|".join("---" for _ in self.header) + "|"]
        out += ["| " + " | ".join(r) + " |" for r in self.rows]
        if self.notes:
            out.append("")
            out += [f"[{i + 1}] {n}  " for i, n in enumerate(self.notes)]
        return "\n".join(out)


def tool_row(t, label, runs_by_tool, get, unit, digits=2, scale=1.0, goal=None):
    """A row: Litestream | litevisor | ratio | goal. goal = (text, check(lv, ls, ratio)) or text."""
    ls = collect(runs_by_tool.get("Litestream", []), get)
    lv = collect(runs_by_tool.get("litevisor", []), get)
    r = ratio(lv, ls)
    rtxt = "%.2f×" % r if r is not None else "—"
    if isinstance(goal, tuple):
        text, check = goal
        g = text
        if lv.ok:
            res = check(lv.m, ls.m if ls.ok else None, r)
            if res is not None:
                g += " " + verdict(res)
    else:
        g = goal or ""
    t.add(label, t.cell(ls, unit, digits, scale), t.cell(lv, unit, digits, scale), rtxt, g)


def le_ratio(limit):
    return (f"≤ {limit}× Litestream", lambda lv, ls, r: None if r is None else r <= limit)


def le_abs(limit, unit, scale=1.0):
    return (f"≤ {limit} {unit}".strip(), lambda lv, ls, r: lv * scale <= limit)


HDR = ["figure", "Litestream v0.3.13", "litevisor", "litevisor / Litestream", "goal"]


def replication_table(sc, cpu_goal=None, with_lag_goals=False, mem=True):
    t = Table(HDR)
    tool_row(t, "CPU seconds (user+sys, replicator only)", sc, lambda r: r["cpu_s"], " s", 2,
             goal=cpu_goal)
    if mem:
        tool_row(t, "peak RSS (VmHWM)", sc, lambda r: r["hwm_mib"], " MiB", 1,
                 goal="report (libs ≈ 12 MiB file-backed)")
        tool_row(t, "peak private (anonymous) memory", sc, lambda r: r["peak_anon_mib"], " MiB", 1,
                 goal=le_abs(8, "MiB"))
    tool_row(t, "SIGTERM → exit (final flush)", sc, lambda r: r.get("stop_s"), " s", 2,
             goal="report")
    for rep in ("file", "s3"):
        name = "file replica" if rep == "file" else "S3 replica"
        for q in ("p50", "p99", "max"):
            goal = None
            if with_lag_goals and q == "p50":
                goal = le_abs(50, "ms", 1000)
            elif with_lag_goals and q == "p99":
                goal = le_abs(250, "ms", 1000)
            tool_row(t, f"commit→replica lag {q}, {name}", sc,
                     lambda r, rep=rep, q=q: r[f"lag_{rep}"][q], " ms", 0, 1000, goal=goal)
        tool_row(t, f"commits never replicated, {name}", sc,
                 lambda r, rep=rep: r[f"lag_{rep}"]["unreplicated"], "", 0)
        tool_row(t, f"replica bytes, {name}", sc, lambda r, rep=rep: r[f"bytes_{rep}"] / 1e6,
                 " MB", 2)
    return t


def restore_s(r):
    """A restore's time without litevisor's built-in check (Litestream has none): a run
    with the check turned off; in results from before those runs, minus the check's time."""
    if "nocheck_s" in r:
        return r["nocheck_s"]
    return r["s"] - r.get("check_s", 0.0)


def restore_refs(e):
    """One size's references and floors: (refs by name, floor from file, floor from S3).

    The floor is the slower of decompress-only and write+fsync-only (issue 5); from
    S3 the server's own delivery of the object alone is a third. None if unmeasured.
    """
    refs = {k: collect(e.get(k, {"na": "n/a"}), lambda r: r["s"])
            for k in ("download_only", "download_beside_busy", "raw_s3", "raw_file",
                      "decompress_only", "write_fsync_only")}
    floor = None
    if refs["decompress_only"].ok and refs["write_fsync_only"].ok:
        floor = max(refs["decompress_only"].m, refs["write_fsync_only"].m)
    floor_s3 = floor
    if floor and refs["download_only"].ok:
        floor_s3 = max(floor, refs["download_only"].m)
    return refs, floor, floor_s3


def restore_tables(rs):
    out = []
    for size, e in rs.items():
        title = f"#### {size} MB database ({e.get('db_bytes', 0) / 1e6:.1f} MB file"
        if "snapshot_lz4_bytes" in e:
            title += f", snapshot {e['snapshot_lz4_bytes'] / 1e6:.1f} MB LZ4, written by Litestream"
        title += ")"
        out.append(title)
        if "na" in e:
            out.append("\n" + e["na"] + "\n")
            continue
        refs, floor, floor_s3 = restore_refs(e)
        t = Table(HDR)
        fs = e.get("first_snapshot", {})
        if fs:
            tool_row(t, "replicate: start → first snapshot in file + S3 replicas", fs,
                     lambda r: r["s"], " s", 2, goal="report")
            tool_row(t, "replicate: CPU seconds until then", fs, lambda r: r["cpu_s"], " s", 2,
                     goal=le_ratio(0.5))
            tool_row(t, "replicate: peak RSS", fs, lambda r: r["hwm_mib"], " MiB", 1,
                     goal="report")
            tool_row(t, "replicate: peak private (anonymous)", fs, lambda r: r["peak_anon_mib"],
                     " MiB", 1, goal=("≤ 8 MiB, flat with size",
                                      lambda lv, ls, r: lv <= 8))
        for src in ("s3", "file"):
            by = {"Litestream": e.get(f"Litestream|{src}", []),
                  "litevisor": e.get(f"litevisor|{src}", [])}
            sname = "S3 test server" if src == "s3" else "file replica"
            raw = refs["raw_s3" if src == "s3" else "raw_file"]
            fl = floor_s3 if src == "s3" else floor

            def time_check(lv, ls, r, raw=raw, fl=fl):
                checks = []
                if r is not None:
                    checks.append(r <= 0.8)
                if fl:
                    checks.append(lv <= 1.15 * fl)
                if raw.ok:
                    checks.append(lv <= 1.3 * raw.m)
                return all(checks) if checks else None
            lvf = collect(by["litevisor"], restore_s)
            extra = []
            if lvf.ok and fl:
                extra.append("%.2f× floor" % (lvf.m / fl))
            if lvf.ok and raw.ok:
                extra.append("%.2f× raw" % (lvf.m / raw.m))
            gtxt = "≤ 0.8× Litestream, ≤ 1.15× floor, ≤ 1.3× raw"
            if extra:
                gtxt += " (" + ", ".join(extra) + ")"
            tool_row(t, f"restore time from {sname}, check timed apart (median of rounds)", by,
                     restore_s, " s", 3, goal=(gtxt, time_check))
            tool_row(t, f"litevisor's built-in quick_check (Litestream has none), {sname}", by,
                     lambda r: r.get("check_s"), " s", 3, goal="report")
            tool_row(t, f"restore time including that check, {sname}", by, lambda r: r["s"],
                     " s", 3, goal="report")
            tool_row(t, f"peak RSS, {sname}", by, lambda r: r["rss_mib"], " MiB", 1,
                     goal="report")
            tool_row(t, f"peak private (anonymous), {sname}", by, lambda r: r["anon_mib"],
                     " MiB", 1, goal=le_abs(16, "MiB"))
            tool_row(t, f"integrity_check of the result (timed apart), {sname}", by,
                     lambda r: r["integrity_s"] if r["integrity_ok"] else None, " s", 3,
                     goal="ok")
        out.append(t.md())
        by = {"Litestream": e.get("Litestream|s3-litevisor", []),
              "litevisor": e.get("litevisor|s3-litevisor", [])}
        if any(by.values()):
            t2 = Table(HDR)
            tool_row(t2, "restore time, replica written by litevisor, from S3 (check timed apart)",
                     by, restore_s, " s", 3, goal="report")
            tool_row(t2, "restore time including litevisor's built-in quick_check", by,
                     lambda r: r["s"], " s", 3, goal="report")
            tool_row(t2, "peak RSS", by, lambda r: r["rss_mib"], " MiB", 1, goal="report")
            tool_row(t2, "peak private (anonymous)", by, lambda r: r["anon_mib"], " MiB", 1,
                     goal=le_abs(16, "MiB"))
            tool_row(t2, "integrity_check of the result (timed apart)", by,
                     lambda r: r["integrity_s"] if r["integrity_ok"] else None, " s", 3,
                     goal="ok")
            out.append("The same database replicated by litevisor (its own LZ4 framing), "
                       "restored by both tools:\n\n" + t2.md())
        r = Table(["reference (same snapshot object)", "seconds"])
        r.add("download only: `curl` GET from S3 > /dev/null", r.cell(refs["download_only"], " s", 3))
        r.add("download only, with one busy loop on the other CPU (what any CPU work beside "
              "the server costs it here; not a floor)", r.cell(refs["download_beside_busy"], " s", 3))
        r.add("raw: `curl` GET from S3 \\| `lz4 -d` > file && sync file", r.cell(refs["raw_s3"], " s", 3))
        r.add("raw: `lz4 -d` < file-replica object > file && sync file", r.cell(refs["raw_file"], " s", 3))
        r.add("floor: LZ4 decompress only, to /dev/null", r.cell(refs["decompress_only"], " s", 3))
        r.add("floor: write + fsync only, same bytes", r.cell(refs["write_fsync_only"], " s", 3))
        r.add("floor (the slower of the two), for a restore from file", "%.3f s" % floor if floor else "n/a")
        r.add("floor from S3: the slowest of those two and the download alone",
              "%.3f s" % floor_s3 if floor_s3 else "n/a")
        out.append("\n" + r.md())
    return "\n\n".join(out)


def impact(lat, tool, q):
    """A tool's write-latency impact: tool / none - 1 per round, over the rounds where both
    were measured. Rounds are interleaved (none, Litestream, litevisor, none_after), so each
    ratio compares runs seconds apart; where the round's closing bare run was measured too,
    the tool is compared with the mean of the two bare runs around it, so drift within the
    round cancels. The median of the ratios is what the goal is judged on, and one
    disturbed run moves it no more than one rank."""
    runs, base = lat.get(tool, []), lat.get("none", [])
    after = lat.get("none_after", [])
    if isinstance(runs, dict) or isinstance(base, dict):
        return Fig(na=(runs if isinstance(runs, dict) else base).get("na", "n/a"))
    if isinstance(after, dict):
        after = []
    key = f"commit_{q}_ms"
    vals = []
    for i, (t, n) in enumerate(zip(runs, base)):
        if "na" in t or "na" in n or not n.get(key):
            continue
        a = after[i] if i < len(after) else {}
        ref = (n[key] + a[key]) / 2 if "na" not in a and a.get(key) else n[key]
        vals.append(t[key] / ref - 1)
    return Fig(vals, na="n/a: no round measured both")


def control(lat, q):
    """The A/A control: each round's closing bare run against its opening one (none_after /
    none - 1). A replicator that cost nothing would read about this; its spread is the
    noise the impact figure carries on this machine."""
    base, after = lat.get("none", []), lat.get("none_after", [])
    if isinstance(base, dict) or isinstance(after, dict):
        return Fig(na="n/a")
    key = f"commit_{q}_ms"
    return Fig([a[key] / n[key] - 1 for n, a in zip(base, after)
                if "na" not in n and "na" not in a and n.get(key)],
               na="n/a: no A/A control in this run")


def signed_pct(f):
    """An impact Fig as "+3.3 % (−8.3 to +102.9 %)"."""
    if not f.ok:
        return f.na
    s = "%+.1f %%" % (f.m * 100)
    if len(f.vals) > 1:
        s += " (%+.1f to %+.1f %%)" % (min(f.vals) * 100, max(f.vals) * 100)
    return s


def latency_table(lat):
    t = Table(["commit latency", "no replicator", "Litestream v0.3.13", "litevisor",
               "litevisor / Litestream", "goal"])
    for q in ("p50", "p99"):
        bare = [r for k in ("none", "none_after") if isinstance(lat.get(k), list) for r in lat[k]]
        none = collect(bare or lat.get("none", []), lambda r: r[f"commit_{q}_ms"])
        ls = collect(lat.get("Litestream", []), lambda r: r[f"commit_{q}_ms"])
        lv = collect(lat.get("litevisor", []), lambda r: r[f"commit_{q}_ms"])
        r = ratio(lv, ls)
        g = "impact ≤ 1% vs no replicator (the round's bare runs), median of the rounds' ratios"
        lvi, lsi = impact(lat, "litevisor", q), impact(lat, "Litestream", q)
        if lvi.ok:
            g += ": %s %s" % (signed_pct(lvi), verdict(lvi.m <= 0.01))
        if lsi.ok:
            g += "; Litestream %s" % signed_pct(lsi)
        aa = control(lat, q)
        if aa.ok:
            g += "; A/A control (no replicator vs no replicator) %s" % signed_pct(aa)
        t.add(q, t.cell(none, " ms", 3), t.cell(ls, " ms", 3), t.cell(lv, " ms", 3),
              "%.2f×" % r if r is not None else "—", g)
    return t


def png_suffix(meta):
    """A mode's plots never replace another's, nor a subset run's (BENCH_ONLY) its mode's."""
    return ("_quick" if meta["mode"] == "quick" else "") + ("_partial" if meta.get("only") else "")


def png_place(meta):
    """(directory, link prefix from bench/results/) of a run's plots: a subset run's stay in
    the ignored scratch directory, so latest.md never links a file git does not keep."""
    if meta.get("only"):
        return os.path.join(WORK, "plots"), "../work/plots/"
    return RESULTS, ""


def plots(res):
    """PNG plots with gnuplot; returns Markdown image lines (or why there are none).

    QUICK runs name theirs *_quick.png so they never replace a full run's."""
    sfx = png_suffix(res["meta"])
    pngdir, link = png_place(res["meta"])
    if not shutil.which("gnuplot"):
        return ["(no plots: gnuplot not installed — scripts/deps.sh installs gnuplot-nox)"]
    pdir = os.path.join(WORK, "plots")
    os.makedirs(pdir, exist_ok=True)
    lines = []
    sc = res["scenarios"]
    series = []
    for key, label in (("steady_1s", "sync-interval 1s"), ("steady_0", "sync-interval 0")):
        for tool, runs in sc.get(key, {}).items():
            if not runs or "na" in runs[0]:
                continue
            pts = [(x, l) for x, l in runs[0].get("series_s3", []) if l is not None]
            if not pts:
                continue
            f = os.path.join(pdir, f"lag-{key}-{tool}.dat")
            with open(f, "w") as fh:
                for x, l in pts:
                    fh.write("%.4f %.3f\n" % (x, max(l * 1000, 0.5)))
            series.append((f, f"{tool}, {label}"))
    if series:
        out = os.path.join(pngdir, f"lag_steady{sfx}.png")
        gp = ["set terminal pngcairo size 900,450",
              f"set output '{out}'",
              "set title 'Commit-to-replica lag, S3 replica, 500 tx/s (round 1)'",
              "set xlabel 'seconds since the first commit'",
              "set ylabel 'lag (ms, log scale)'", "set logscale y", "set yrange [0.5:*]",
              "set key below horizontal maxcols 3", "set grid"]
        gp.append("plot " + ", ".join(f"'{f}' using 1:2 with points pt 7 ps 0.3 title '{t}'"
                                      for f, t in series))
        if run_gnuplot(gp, pdir, "lag"):
            lines.append(f"![commit-to-replica lag over time]({link}lag_steady{sfx}.png)")
    rs = sc.get("restore", {})
    cols = [("Litestream|s3", "Litestream, S3"), ("Litestream|file", "Litestream, file"),
            ("litevisor|s3", "litevisor, S3"), ("litevisor|file", "litevisor, file"),
            ("raw_s3", "raw curl|lz4 -d, S3"), ("floor", "floor (max of decompress, write+fsync)")]
    series = []
    for key, label in cols:
        pts = []
        for size, e in rs.items():
            if key == "floor":
                a = collect(e.get("decompress_only", {"na": 1}), lambda r: r["s"])
                b = collect(e.get("write_fsync_only", {"na": 1}), lambda r: r["s"])
                if a.ok and b.ok:
                    pts.append((e["db_bytes"] / 1e6, max(a.m, b.m)))
                continue
            f_ = collect(e.get(key, {"na": 1}), restore_s)
            if f_.ok:
                pts.append((e["db_bytes"] / 1e6, f_.m))
        if pts:
            f = os.path.join(pdir, "restore-" + key.replace("|", "-") + ".dat")
            with open(f, "w") as fh:
                for x, y in sorted(pts):
                    fh.write("%.2f %.4f\n" % (x, y))
            series.append((f, label))
    if series:
        out = os.path.join(pngdir, f"restore_vs_size{sfx}.png")
        gp = ["set terminal pngcairo size 900,450", f"set output '{out}'",
              "set title 'Restore time vs database size (median of rounds)'",
              "set xlabel 'database size (MB)'", "set ylabel 'seconds'",
              "set logscale xy", "set key below horizontal maxcols 3", "set grid"]
        gp.append("plot " + ", ".join(f"'{f}' using 1:2 with linespoints pt 7 title '{t}'"
                                      for f, t in series))
        if run_gnuplot(gp, pdir, "restore"):
            lines.append(f"![restore time vs database size]({link}restore_vs_size{sfx}.png)")
    return lines


def run_gnuplot(script, pdir, name):
    path = os.path.join(pdir, name + ".gp")
    with open(path, "w") as f:
        f.write("\n".join(script) + "\n")
    r = subprocess.run(["gnuplot", path], capture_output=True, text=True)
    return r.returncode == 0


def summary_table(sc):
    """The headline: one row per goal of issue 7, with the figure it is checked on."""
    t = Table(["goal (issue 7)", "Litestream v0.3.13", "litevisor", "litevisor / Litestream",
               "met?"])

    def row(label, ls, lv, check, unit, digits=2, scale=1.0, show_ratio=True):
        r = ratio(lv, ls) if show_ratio else None
        met = "—"
        if lv.ok:
            v = check(lv.m, ls.m if ls.ok else None, r)
            met = "—" if v is None else verdict(v)
        t.add(label, t.cell(ls, unit, digits, scale), t.cell(lv, unit, digits, scale),
              "%.2f×" % r if r is not None else "—", met)

    def get(key, tool, f):
        return collect(sc.get(key, {}).get(tool, []), f)
    if "steady_1s" in sc:
        row("CPU ≤ 0.5× Litestream (steady 500 tx/s, sync-interval 1s)",
            get("steady_1s", "Litestream", lambda r: r["cpu_s"]),
            get("steady_1s", "litevisor", lambda r: r["cpu_s"]),
            lambda lv, ls, r: None if r is None else r <= 0.5, " s")
        row("private (anonymous) memory ≤ 8 MiB replicating",
            get("steady_1s", "Litestream", lambda r: r["peak_anon_mib"]),
            get("steady_1s", "litevisor", lambda r: r["peak_anon_mib"]),
            lambda lv, ls, r: lv <= 8, " MiB", 1)
    if "steady_0" in sc:
        for q, lim in (("p50", 50), ("p99", 250)):
            row(f"lag {q} ≤ {lim} ms at sync-interval 0, S3 (Litestream: at its 1s default)",
                get("steady_1s", "Litestream", lambda r, q=q: r["lag_s3"][q]),
                get("steady_0", "litevisor", lambda r, q=q: r["lag_s3"][q]),
                lambda lv, ls, r, lim=lim: lv * 1000 <= lim, " ms", 0, 1000)
    if "idle" in sc:
        row("idle CPU ≤ 0.2× Litestream",
            get("idle", "Litestream", lambda r: r["cpu_s"]),
            get("idle", "litevisor", lambda r: r["cpu_s"]),
            lambda lv, ls, r: None if r is None else r <= 0.2, " s", 4)
    rs = sc.get("restore", {})
    if rs:
        size = max(rs, key=lambda k: int(k))
        e = rs[size]
        row(f"restore ≤ 0.8× Litestream ({size} MB, from S3, check timed apart)",
            collect(e.get("Litestream|s3", {"na": e.get("na", "n/a")}), restore_s),
            collect(e.get("litevisor|s3", {"na": e.get("na", "n/a")}), restore_s),
            lambda lv, ls, r: None if r is None else r <= 0.8, " s", 3)
        refs, floor, floor_s3 = restore_refs(e)
        for src, ref, lim, what, unit in (
                ("s3", floor_s3, 1.15, "floor", "slowest of decompress only, write+fsync only "
                                                "and download alone"),
                ("file", floor, 1.15, "floor", "slower of decompress only and write+fsync only"),
                ("s3", refs["raw_s3"].m if refs["raw_s3"].ok else None, 1.3, "raw",
                 "`curl \\| lz4 -d > f && sync`")):
            ls = collect(e.get(f"Litestream|{src}", {"na": e.get("na", "n/a")}), restore_s)
            lv = collect(e.get(f"litevisor|{src}", {"na": e.get("na", "n/a")}), restore_s)
            label = (f"restore ≤ {lim}× {what} ({size} MB from {'S3' if src == 's3' else 'file'}; "
                     f"{what}: {unit}" + (f", {ref:.3f} s)" if ref else ")"))
            met = verdict(lv.m <= lim * ref) if lv.ok and ref else "—"
            t.add(label, t.cell(ls, " s", 3), t.cell(lv, " s", 3),
                  f"{lv.m / ref:.2f}× {what}" if lv.ok and ref else "—", met)
    if "latency" in sc:
        lat = sc["latency"]
        ls, lv = impact(lat, "Litestream", "p50"), impact(lat, "litevisor", "p50")
        aa = control(lat, "p50")
        t.add("write-latency impact ≤ 1% (commit p50 vs no replicator, median of paired rounds"
              + ("; A/A control, no replicator vs no replicator: %s)" % signed_pct(aa)
                 if aa.ok else ")"),
              signed_pct(ls), signed_pct(lv), "—", verdict(lv.m <= 0.01) if lv.ok else "—")
    if "health" in sc:
        h = sc["health"]
        lv = Fig(na=h["na"]) if "na" in h else Fig([h["p99"]])
        row("/readyz p99 ≤ 50 ms during a 500 MB snapshot upload",
            Fig(na="n/a: Litestream v0.3 has no health endpoint"), lv,
            lambda v, ls_, r: v <= 0.05, " ms", 1, 1000, show_ratio=False)
    return t


def render(res):
    meta = res["meta"]
    m = meta["machine"]
    plan = meta["plan"]
    sc = res["scenarios"]
    md = [f"# litevisor vs Litestream v0.3.13 — `make bench`{' QUICK=1' if meta['mode'] == 'quick' else ''}",
          "",
          f"Run {meta['started']} ({meta['mode']} mode"
          f"{', only ' + ' '.join(meta['only']) if meta.get('only') else ''}, "
          f"{meta.get('seconds', '?')} s) on "
          f"{m.get('cpu', '?')}, {m.get('cores')} cores, {m.get('mem_gib')} GiB RAM, "
          f"Linux {m.get('kernel')}, work dir on {m.get('work_fs', '?')}. "
          f"Litestream `{meta['litestream']}`, litevisor `{meta['litevisor']}`"
          f"{' built from tree `' + meta['tree'] + '`' if meta.get('tree') else ''}.",
          "",
          "Same machine, same run; the tools run one after another, each on a fresh copy of the "
          "same database with the same workload, written by a separate writer process. "
          "Figures are medians over rounds, (min–max) when there was more than one round. "
          "The machine is shared: expect noise. Goals are issue 7's, printed, never failing.",
          "", "## Summary", "", summary_table(sc).md(), ""]
    if "steady_1s" in sc or "steady_0" in sc:
        md += [f"## 1. Replication, steady: {plan['steady_rate']} tx/s for {plan['steady_seconds']} s, "
               f"file + S3 replica in one process ({plan['steady_rounds']} round(s))", ""]
        if "steady_1s" in sc:
            md += ["### sync-interval: 1s (Litestream's default)", "",
                   replication_table(sc["steady_1s"], le_ratio(0.5)).md(), ""]
        if "steady_0" in sc:
            md += ["### sync-interval: 0", "",
                   replication_table(sc["steady_0"], None, with_lag_goals=True).md(), ""]
    if "burst" in sc:
        md += [f"## 2. Replication, burst: {plan['burst_rows']} rows in batches of "
               f"{plan['burst_batch']}, as fast as possible (sync-interval 1s, "
               f"{plan['burst_rounds']} round(s))", "",
               replication_table(sc["burst"], le_ratio(0.5)).md(), ""]
    if "idle" in sc:
        t = Table(HDR)
        tool_row(t, f"CPU seconds over {plan['idle_seconds']} s idle", sc["idle"],
                 lambda r: r["cpu_s"], " s", 4, goal=le_ratio(0.2))
        tool_row(t, "peak RSS", sc["idle"], lambda r: r["hwm_mib"], " MiB", 1, goal="report")
        tool_row(t, "peak private (anonymous) memory", sc["idle"], lambda r: r["peak_anon_mib"],
                 " MiB", 1, goal=le_abs(8, "MiB"))
        md += [f"## 3. Idle: {plan['idle_seconds']} s without writes", "",
               "CPU: the sum of every thread's time on CPU from /proc/<pid>/task/*/schedstat "
               "(ns) over the idle window (the tick figure of /proc/<pid>/stat only if a thread "
               "came or went meanwhile; results.json's cpu_source says which).", "",
               t.md(), ""]
    if "restore" in sc:
        md += [f"## 4. Restore (median of {plan['restore_rounds']})", "",
               "Both tools restore the same replica, written by Litestream (4 MiB LZ4 blocks). "
               "Restore time is the restore command's wall time with the integrity check timed "
               "apart, as issue 7 asks: litevisor runs `PRAGMA quick_check` on the result before "
               "renaming it into place (Litestream checks nothing), overlapping the final fsync; "
               "so each round also runs litevisor with the check turned off (`restore: verify: "
               "none`), and that run's time is the one compared. The check's own time, from "
               "litevisor's log line, and the time with it are shown on their own rows. "
               "`PRAGMA integrity_check` of both results is also timed apart. From S3, "
               "the server's delivery of the object alone (`curl` > /dev/null) is a floor too. "
               "Peak RSS (VmHWM) and private memory (smaps_rollup) are sampled every 5 ms.", "",
               restore_tables(sc["restore"]), ""]
    if "latency" in sc:
        md += [f"## 5. Write-latency impact: the writer's commit latency at {plan['steady_rate']} tx/s, "
               f"{plan['latency_seconds']} s per run, {plan['latency_rounds']} interleaved rounds", "",
               latency_table(sc["latency"]).md(), ""]
    if "health" in sc:
        h = sc["health"]
        md += ["## 6. Health latency under load (litevisor only)", ""]
        if "na" in h:
            md += [h["na"], ""]
        else:
            t = Table(["figure", "litevisor", "goal"])
            t.add("/readyz p50 while a snapshot uploads", "%.1f ms" % (h["p50"] * 1000), "")
            t.add("/readyz p99 while a snapshot uploads", "%.1f ms" % (h["p99"] * 1000),
                  "≤ 50 ms " + verdict(h["p99"] <= 0.05))
            t.add("/readyz max", "%.1f ms" % (h["max"] * 1000), "")
            t.add("requests during the upload", str(h["n"]), "")
            md += [h.get("note", ""), "", t.md(), ""]
    md += ["## Plots", ""] + plots(res) + [""]
    md += ["How each figure is measured: bench/README.md. Raw data: latest.json.", ""]
    return "\n".join(md)


def strip_series(res):
    """latest.json without the per-commit series (they are only for the plots)."""
    out = json.loads(json.dumps(res))
    for sc in out["scenarios"].values():
        if isinstance(sc, dict):
            for runs in sc.values():
                if isinstance(runs, list):
                    for r in runs:
                        if isinstance(r, dict):
                            r.pop("series_file", None)
                            r.pop("series_s3", None)
    return out


def _put(name, text):
    tmp = os.path.join(RESULTS, name + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
    os.rename(tmp, os.path.join(RESULTS, name))


def write(res):
    """latest.md/.json (the last run) and full.md/.json or quick.md/.json (the last whole run
    of its mode: a subset run, BENCH_ONLY, is the latest only)."""
    os.makedirs(RESULTS, exist_ok=True)
    mode = res["meta"]["mode"]
    md = render(res)
    js = json.dumps(strip_series(res), indent=1)
    for base in ("latest",) + (() if res["meta"].get("only") else (mode,)):
        _put(base + ".md", md.replace("Raw data: latest.json", f"Raw data: {base}.json"))
        _put(base + ".json", js)
    with open(os.path.join(WORK, "last-results.json"), "w") as f:
        json.dump(res, f)
    return md


def readme_block(res):
    """The README's Performance excerpt: machine, summary table, plots (paths from the root)."""
    meta, m = res["meta"], res["meta"]["machine"]
    sfx = png_suffix(meta)
    only = f" (only {' '.join(meta['only'])})" if meta.get("only") else ""
    out = [f"Last {meta['mode']} run{only}, {meta['started']}, on {m.get('cpu', '?')} "
           f"({m.get('cores')} cores, {m.get('mem_gib')} GiB RAM, Linux {m.get('kernel')}, "
           f"{m.get('work_fs', '?')}), litevisor "
           f"`{meta.get('tree') or meta['litevisor']}` beside Litestream "
           f"`{meta['litestream']}`; medians (min–max) over rounds "
           f"([all tables](bench/results/{'latest' if meta.get('only') else meta['mode']}.md)):",
           "",
           summary_table(res["scenarios"]).md(), ""]
    if meta.get("only"):  # its plots are scratch (png_place), maybe an earlier subset's
        out.append("(a subset run: its plots are in bench/work/plots/, not kept)")
        return "\n".join(out)
    for png, alt in ((f"lag_steady{sfx}.png", "commit-to-replica lag over time"),
                     (f"restore_vs_size{sfx}.png", "restore time vs database size")):
        if os.path.exists(os.path.join(RESULTS, png)):
            out.append(f"![{alt}](bench/results/{png})")
    return "\n".join(out)


if __name__ == "__main__":
    import sys
    # re-render the last run (with its plot series) without measuring again
    with open(os.path.join(WORK, "last-results.json")) as f:
        last = json.load(f)
    if sys.argv[1:] == ["--readme"]:
        print(readme_block(last))
    else:
        print(write(last))
