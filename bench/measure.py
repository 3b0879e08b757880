"""CPU and memory of ONE process (the replicator or the restorer), from /proc.

- CPU: utime+stime of the whole thread group from /proc/<pid>/stat (clock
  ticks, usually 10 ms), taken as the difference over a measurement window.
  It includes threads already reaped, so it suits windows where threads come
  and go. For the idle window, where 10 ms ticks are too coarse, thread_cpu
  sums the run time in ns of every live thread (/proc/<pid>/task/*/schedstat);
  a thread that exits inside the window takes its time with it, so the caller
  checks the thread set did not change (else it falls back to the ticks).
- Peak RSS: VmHWM from /proc/<pid>/status (the kernel's own high-water mark
  of the process's current memory map), read while the process lives. Not
  ru_maxrss from wait4: Python starts children with vfork, and the kernel
  carries the parent's (the harness's) high-water mark into the child's
  ru_maxrss at exec.
- Peak private (anonymous) memory: the largest "Anonymous:" value of
  /proc/<pid>/smaps_rollup seen by a sampler thread (every 20 ms by default).
  Anonymous memory is the heap/stack/arenas the program itself dirtied, as
  opposed to file-backed pages of shared libraries and the page cache.
"""
import os
import threading

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    """user+sys CPU seconds of pid so far, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rindex(")") + 2:].split()
    # fields[0] is state (field 3); utime/stime are fields 14/15
    return (int(fields[11]) + int(fields[12])) / TICK


def thread_cpu(pid):
    """(CPU seconds of pid's live threads at ns resolution, their tids), or None.

    Sums the first field of /proc/<pid>/task/*/schedstat (time on CPU in ns).
    Without schedstat (kernel built without it) the tick figure stands in and
    the tid set is None, which never equals another read's.
    """
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    total, seen = 0, set()
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
            seen.add(tid)
        except FileNotFoundError:
            if not os.path.exists(f"/proc/{pid}/task/{tid}"):
                continue   # the thread exited between listdir and open
            ticks = cpu_seconds(pid)
            return None if ticks is None else (ticks, None)
        except (OSError, ValueError, IndexError):
            continue
    return total / 1e9, frozenset(seen)


def window_cpu(before, after, pid_ticks):
    """(CPU seconds, source) between two thread_cpu reads: ns-precise when the
    same threads lived at both (no run time lost with an exited thread), else
    pid_ticks, the caller's tick difference over the same window."""
    if before is not None and after is not None and before[1] is not None and \
            before[1] == after[1]:
        return after[0] - before[0], "schedstat"
    return pid_ticks, "ticks"


def status_kib(pid, key):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def rollup_kib(pid, keys=("Anonymous", "Rss")):
    out = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                k, _, rest = line.partition(":")
                if k in keys:
                    out[k] = int(rest.split()[0])
    except OSError:
        return None
    return out


class Sampler:
    """Samples a pid's memory in a thread until stop(); keeps the peaks."""

    def __init__(self, pid, interval=0.02):
        self.pid = pid
        self.interval = interval
        self.peak_anon_kib = 0
        self.peak_rss_kib = 0
        self.hwm_kib = None
        self.samples = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def start(self):
        """interval None: sample nothing (stop() then reports no peaks)."""
        if self.interval is not None:
            self._t.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            r = rollup_kib(self.pid)
            if r is None:
                break
            self.samples += 1
            self.peak_anon_kib = max(self.peak_anon_kib, r.get("Anonymous", 0))
            self.peak_rss_kib = max(self.peak_rss_kib, r.get("Rss", 0))
            hwm = status_kib(self.pid, "VmHWM")
            if hwm is not None:
                self.hwm_kib = hwm
            self._stop.wait(self.interval)

    def stop(self):
        self._stop.set()
        if self._t.is_alive():
            self._t.join()
        return self


def mib(kib):
    return None if kib is None else kib / 1024.0
