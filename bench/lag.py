"""Commit-to-replica lag, measured on the replica side, never from a tool's log.

A replica object is a WAL segment generations/<gen>/wal/<idx>_<off>.wal.lz4;
decompressing it (liblz4 through ctypes) gives the salt of its frames and its
length, so it covers WAL bytes [off, off+len) of the WAL session with that
salt. The time it came to exist is:
- file replica: the object file's ctime (both tools write a temp file and
  rename it; rename sets ctime, so this is when the name appeared);
- S3 test server: s3rver writes <key>._S3rver_object, then
  <key>._S3rver_metadata.json, then answers the PUT: the later of the two
  ctimes.
A commit (salt, offset) counts as replicated at the earliest time of an object
with that salt that covers the offset. Kernel file times are coarse (one
jiffy, a few ms), so lags below that read as 0.
"""
import ctypes
import ctypes.util
import os
import re

SEG_RE = re.compile(r"^([0-9a-f]{8})_([0-9a-f]{8})\.wal\.lz4$")
S3_OBJ = "._S3rver_object"
S3_META = "._S3rver_metadata.json"

_lz4 = ctypes.CDLL(ctypes.util.find_library("lz4") or "liblz4.so.1")
_lz4.LZ4F_createDecompressionContext.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_uint]
_lz4.LZ4F_createDecompressionContext.restype = ctypes.c_size_t
_lz4.LZ4F_freeDecompressionContext.argtypes = [ctypes.c_void_p]
_lz4.LZ4F_freeDecompressionContext.restype = ctypes.c_size_t
_lz4.LZ4F_decompress.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.POINTER(ctypes.c_size_t),
                                 ctypes.c_void_p, ctypes.POINTER(ctypes.c_size_t), ctypes.c_void_p]
_lz4.LZ4F_decompress.restype = ctypes.c_size_t
_lz4.LZ4F_isError.argtypes = [ctypes.c_size_t]
_lz4.LZ4F_isError.restype = ctypes.c_uint


def lz4_decompress(data):
    """Decompress one LZ4 frame held in bytes; raises ValueError if it is broken."""
    dctx = ctypes.c_void_p()
    if _lz4.LZ4F_isError(_lz4.LZ4F_createDecompressionContext(ctypes.byref(dctx), 100)):
        raise MemoryError("LZ4F_createDecompressionContext")
    out = []
    cap = 1 << 20
    dst = ctypes.create_string_buffer(cap)
    src = ctypes.create_string_buffer(data, len(data))
    pos = 0
    try:
        while True:
            dsz = ctypes.c_size_t(cap)
            ssz = ctypes.c_size_t(len(data) - pos)
            r = _lz4.LZ4F_decompress(dctx, dst, ctypes.byref(dsz),
                                     ctypes.byref(src, pos), ctypes.byref(ssz), None)
            if _lz4.LZ4F_isError(r):
                raise ValueError("corrupt LZ4 frame")
            out.append(dst.raw[:dsz.value])
            pos += ssz.value
            if r == 0:
                break
            if ssz.value == 0 and dsz.value == 0:
                raise ValueError("truncated LZ4 frame")
    finally:
        _lz4.LZ4F_freeDecompressionContext(dctx)
    return b"".join(out)


def _segment(path, off):
    """(salt1, salt2, decompressed length) of a WAL segment object."""
    with open(path, "rb") as f:
        raw = lz4_decompress(f.read())
    if off == 0:
        salt = raw[16:24]     # WAL header
    else:
        salt = raw[8:16]      # first frame header
    return (int.from_bytes(salt[:4], "big"), int.from_bytes(salt[4:], "big"), len(raw))


def scan(root, s3=False, cache=None):
    """Replica objects under root: list of dicts (t, salt, off, end, index) plus total bytes.

    root is a file replica's path, or the s3rver store directory of a prefix.
    cache (a dict) keeps decoded segments between calls while polling.
    """
    if cache is None:
        cache = {}
    objs = []
    total = 0
    if not os.path.isdir(root):
        return objs, 0
    for dirpath, _, files in os.walk(root):
        for name in files:
            full = os.path.join(dirpath, name)
            key = name
            if s3:
                if not name.endswith(S3_OBJ):
                    continue
                key = name[:-len(S3_OBJ)]
            elif name.endswith(".tmp"):
                continue
            try:
                st = os.stat(full)
            except FileNotFoundError:
                continue
            total += st.st_size
            m = SEG_RE.match(key)
            if not m or os.path.basename(dirpath) != "wal":
                continue
            t = st.st_ctime
            if s3:
                try:
                    t = max(t, os.stat(os.path.join(dirpath, key + S3_META)).st_ctime)
                except FileNotFoundError:
                    continue   # PUT not finished
            off = int(m.group(2), 16)
            ck = (full, st.st_ino, st.st_size)
            if ck not in cache:
                try:
                    cache[ck] = _segment(full, off)
                except (ValueError, OSError):
                    continue
            s1, s2, n = cache[ck]
            objs.append({"t": t, "salt": (s1, s2), "off": off, "end": off + n,
                         "index": int(m.group(1), 16)})
    return objs, total


def commit_lags(commits, objs):
    """Per commit (wall, lag seconds or None if never replicated).

    commits: list of (wall, latency, salt1, salt2, offset) from writer.py.
    """
    by_salt = {}
    for o in objs:
        by_salt.setdefault(o["salt"], []).append(o)
    for lst in by_salt.values():
        lst.sort(key=lambda o: o["off"])
    out = []
    for wall, _, s1, s2, pos in commits:
        lst = by_salt.get((s1, s2), [])
        best = None
        # objects starting before pos; the covering one is normally the last of them
        lo, hi = 0, len(lst)
        while lo < hi:
            mid = (lo + hi) // 2
            if lst[mid]["off"] < pos:
                lo = mid + 1
            else:
                hi = mid
        for o in reversed(lst[max(0, lo - 64):lo]):
            if o["end"] >= pos and (best is None or o["t"] < best):
                best = o["t"]
        out.append((wall, None if best is None else max(0.0, best - wall)))
    return out


def read_commits(path):
    recs = []
    with open(path) as f:
        for line in f:
            p = line.split()
            recs.append((float(p[0]), float(p[1]), int(p[2]), int(p[3]), int(p[4])))
    return recs


def all_covered(commits, root, s3=False, cache=None):
    """True once the last commit is covered by an object in root (used to end a run)."""
    if not commits:
        return True
    objs, _ = scan(root, s3, cache)
    lags = commit_lags(commits[-1:], objs)
    return lags[0][1] is not None
