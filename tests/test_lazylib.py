"""Libraries loaded on first use (common/lazylib.h).

litevisor is not linked against libcurl, libmicrohttpd or libcrypto: it
loads each when a command needs it (S3, the service's HTTP probe, the
health server), so a restore from a file replica starts without their
~14 ms of dynamic linking. A library that cannot be loaded is a clear error
naming it, for the commands that need it only. "Cannot be loaded" is made
real here with a stand-in shared object of the same soname, built by the
test and found first through LD_LIBRARY_PATH.
"""
import os
import subprocess

from conftest import free_port

LAZY = ("libcurl.so", "libmicrohttpd.so", "libcrypto.so")


def needed(binary):
    out = subprocess.run(["readelf", "-d", binary], capture_output=True, text=True,
                         check=True).stdout
    return [line.split("[")[1].split("]")[0] for line in out.splitlines() if "(NEEDED)" in line]


def run(binary, *args, env=None, timeout=60):
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run([binary, *args], capture_output=True, text=True, env=e, timeout=timeout)


def loaded(stderr):
    """Sonames the dynamic loader reports loading (LD_DEBUG=files), at start or by dlopen."""
    names = []
    for line in stderr.splitlines():
        if "file=" in line and ("needed by" in line or "dynamically loaded by" in line):
            names.append(line.split("file=")[1].split()[0])
    return names


def stand_in(tmp_path, soname):
    """A shared object named soname that defines none of the library's functions."""
    d = tmp_path / "lib"
    d.mkdir(exist_ok=True)
    src = tmp_path / "empty.c"
    src.write_text("int litevisor_stand_in;\n")
    subprocess.run(["cc", "-shared", "-fPIC", f"-Wl,-soname,{soname}", "-o", str(d / soname),
                    str(src)], check=True)
    return {"LD_LIBRARY_PATH": str(d)}


def empty_file_replica(tmp_path):
    d = tmp_path / "replica"
    d.mkdir()
    return f"file://{d}"


def test_binary_is_not_linked_against_the_lazy_libraries(litevisor_bin):
    libs = needed(litevisor_bin)
    assert libs, "readelf found no NEEDED entries at all"
    assert not [n for n in libs if n.startswith(LAZY)], libs
    assert [n for n in libs if n.startswith("libsqlite3.so")], libs


def test_file_restore_loads_none_of_them(litevisor_bin, tmp_path):
    out = tmp_path / "r.db"
    p = run(litevisor_bin, "restore", "-if-replica-exists", "-o", str(out),
            empty_file_replica(tmp_path), env={"LD_DEBUG": "files"})
    assert p.returncode == 0, p.stderr
    libs = loaded(p.stderr)
    assert [n for n in libs if n.startswith("libsqlite3.so")], libs[:5]
    assert not [n for n in libs if n.startswith(LAZY)], libs


def test_version_loads_libcurl(litevisor_bin):
    p = run(litevisor_bin, "version", env={"LD_DEBUG": "files"})
    assert p.returncode == 0, p.stderr
    assert "libcurl/" in p.stdout, p.stdout
    assert [n for n in loaded(p.stderr) if n.startswith("libcurl.so")]
    # and names every library it uses, the lazy ones loaded to ask them
    for lib in ("sqlite ", "lz4 ", "jansson ", "libyaml ", "libmicrohttpd "):
        assert lib in p.stdout, p.stdout


def test_unloadable_libcurl_fails_what_needs_it_only(litevisor_bin, tmp_path):
    env = stand_in(tmp_path, "libcurl.so.4")
    db = tmp_path / "db.sqlite"
    cfg = tmp_path / "lv.yml"
    cfg.write_text(f"dbs:\n  - path: {db}\n    replicas:\n"
                   f"      - {{name: peer, type: s3, bucket: b, path: db,"
                   f" endpoint: 'http://127.0.0.1:{free_port()}',"
                   f" access-key-id: k, secret-access-key: s}}\n")
    p = run(litevisor_bin, "restore", "-config", str(cfg), str(db), env=env)
    assert p.returncode != 0
    assert "libcurl.so.4 has no curl_global_init" in p.stderr, p.stderr
    assert "libcurl4 package" in p.stderr, p.stderr
    assert not db.exists()
    # A file replica needs no libcurl: the stand-in is never even opened.
    out = tmp_path / "r.db"
    p = run(litevisor_bin, "restore", "-if-replica-exists", "-o", str(out),
            empty_file_replica(tmp_path), env=env)
    assert p.returncode == 0, p.stderr
    p = run(litevisor_bin, "version", env=env)
    assert p.returncode == 0 and "libcurl.so.4 has no curl_global_init" in p.stdout, p.stdout


def test_unloadable_libmicrohttpd_is_a_clear_error(litevisor_bin, tmp_path):
    env = stand_in(tmp_path, "libmicrohttpd.so.12")
    cfg = tmp_path / "lv.yml"
    cfg.write_text(f"addr: 127.0.0.1:{free_port()}\n")
    p = run(litevisor_bin, "run", "-config", str(cfg), "--", "sh", "-c", "sleep 30", env=env,
            timeout=30)
    assert p.returncode == 111, p.stderr
    assert "cannot serve health and metrics" in p.stderr, p.stderr
    assert "libmicrohttpd.so.12 has no MHD_start_daemon_va" in p.stderr, p.stderr
    # Without an HTTP address the health server is not started, nor the library loaded.
    cfg.write_text("dbs: []\n")
    p = run(litevisor_bin, "run", "-config", str(cfg), "--", "sh", "-c", "exit 7", env=env)
    assert p.returncode == 7, p.stderr


def test_a_file_replica_with_age_loads_libcrypto(litevisor_bin, tmp_path):
    """age: encrypts with libcrypto: a file replica with it loads the library (and a
    missing one is a clear error), one without it still does not."""
    d = tmp_path / "replica"
    d.mkdir()
    db = tmp_path / "db.sqlite"
    cfg = tmp_path / "lv.yml"
    cfg.write_text(f"dbs:\n  - path: {db}\n    replicas:\n      - url: file://{d}\n"
                   "        age: {identities: [AGE-SECRET-KEY-1ZK6J7HR06S8VERXYETW4F2VRDCH60D3N2"
                   "F6UJ0PJQ0GHZFT25V3SLXQHPC]}\n")
    p = run(litevisor_bin, "restore", "-if-replica-exists", "-config", str(cfg), str(db),
            env={"LD_DEBUG": "files"})
    assert p.returncode == 0, p.stderr
    assert [n for n in loaded(p.stderr) if n.startswith("libcrypto.so")], p.stderr[-2000:]
    p = run(litevisor_bin, "restore", "-if-replica-exists", "-config", str(cfg), str(db),
            env=stand_in(tmp_path, "libcrypto.so.3"))
    assert p.returncode != 0
    assert "age encryption needs libcrypto" in p.stderr and "libcrypto.so.3 has no" in p.stderr, \
        p.stderr
    assert not db.exists()
