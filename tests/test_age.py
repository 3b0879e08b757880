"""Replicas with `age:` encryption, as Litestream v0.3.13 writes and reads them.

Every object (snapshot, WAL segment) is age(lz4(data)) under its usual name.
Checked against two independent implementations: the `age` tool (Debian's
age package) decrypts what litevisor wrote, and Litestream v0.3.13 restores
litevisor's replicas and writes replicas litevisor restores. Keys come from
`age-keygen`.
"""
import os
import shutil
import subprocess
import time

import pytest

import json

from test_replicate import (PY, WRITER, config, content, create, file_replica, generations,
                            integrity, objects, run, s3_replica, wait_for,
                            write)  # noqa: F401 (run: fixture)

LZ4_MAGIC = b"\x04\x22\x4d\x18"
AGE_MAGIC = b"age-encryption.org/v1\n"


def need_age():
    if not shutil.which("age") or not shutil.which("age-keygen"):
        pytest.fail("the age tool is missing: run scripts/deps.sh (Debian package age)")


class Key:
    """One age X25519 key pair made by age-keygen, in a key file."""

    def __init__(self, path):
        subprocess.run(["age-keygen", "-o", str(path)], check=True, capture_output=True)
        self.path = str(path)
        self.identity = next(l for l in open(path).read().splitlines()
                             if l.startswith("AGE-SECRET-KEY-1"))
        self.recipient = subprocess.run(["age-keygen", "-y", str(path)], check=True,
                                        capture_output=True, text=True).stdout.strip()


@pytest.fixture
def keys(tmp_path):
    need_age()
    return [Key(tmp_path / f"key{i}.txt") for i in range(3)]


def age_map(identities=(), recipients=()):
    """The age: value as a YAML flow map (config() writes one line per key)."""
    parts = []
    if identities:
        parts.append("identities: [" + ", ".join(k.identity for k in identities) + "]")
    if recipients:
        parts.append("recipients: [" + ", ".join(k.recipient for k in recipients) + "]")
    return "{" + ", ".join(parts) + "}"


def age_decrypt(key, path):
    """The plain bytes of an age file, by the age tool (None if it refuses)."""
    p = subprocess.run(["age", "-d", "-i", key.path, str(path)], capture_output=True)
    return p.stdout if p.returncode == 0 else None


def object_paths(rep):
    return [os.path.join(rep, "generations", g, kind, f)
            for kind in ("snapshots", "wal") for g, f in objects(rep, kind)]


def assert_encrypted_for(rep, key, others=()):
    """Every object of rep is an age file key opens to an LZ4 frame; others open none."""
    paths = object_paths(rep)
    assert paths, f"no objects in {rep}"
    for p in paths:
        with open(p, "rb") as f:
            assert f.read(len(AGE_MAGIC)) == AGE_MAGIC, p
        plain = age_decrypt(key, p)
        assert plain is not None and plain[:4] == LZ4_MAGIC, p
        for o in others:
            assert age_decrypt(o, p) is None, p
    snap = [p for p in paths if p.endswith(".snapshot.lz4")][0]
    db = subprocess.run(["lz4", "-d", "-c"], input=age_decrypt(key, snap), capture_output=True,
                        check=True).stdout
    assert db[:16] == b"SQLite format 3\x00"


def ls_config(tmp_path, target, replica_lines, name="ls.yml"):
    p = tmp_path / name
    p.write_text("dbs:\n  - path: %s\n    monitor-interval: 100ms\n    replicas:\n%s" % (
        target, "".join(f"      {'- ' if i == 0 else '  '}{l}\n"
                        for i, l in enumerate(replica_lines))))
    return p


def ls_restore_cfg(litestream_bin, cfg, target, out):
    p = subprocess.run([litestream_bin, "restore", "-config", str(cfg), "-o", str(out),
                        str(target)], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    return p


def lv(binary, *args, timeout=120):
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=timeout)


def lv_restore_cfg(litevisor_bin, cfg, target, out):
    return lv(litevisor_bin, "restore", "-config", str(cfg), "-o", str(out), str(target))


def restore_config(tmp_path, rep, age, name="restore.yml"):
    """A config naming the file replica rep (with age: value age) for `litevisor restore`."""
    return ls_config(tmp_path, tmp_path / "target.db",
                     [f"url: file://{rep}"] + ([f"age: {age}"] if age else []), name)


# ---------------------------------------------------------------------------


def test_encrypted_file_replica_restores_with_litestream_age_and_litevisor(
        run, tmp_path, litestream_bin, litevisor_bin, keys):
    k0, k1, other = keys
    db, rep = tmp_path / "app.db", tmp_path / "rep"
    create(db)
    # two recipients: the first identity opens it, so does the second; a third does not
    r = run(config(tmp_path, db, [file_replica(rep, age=age_map([k0], [k0, k1]))],
                   min_checkpoint_page_count=300))
    write(db, 2000, start=1, blob=300)
    assert r.stop() == 0
    assert_encrypted_for(rep, k0, [other])
    assert_encrypted_for(rep, k1)
    # Litestream v0.3.13 restores it, given the identity
    cfg = ls_config(tmp_path, tmp_path / "target.db",
                    [f"url: file://{rep}", f"age: {age_map([k1], [k1])}"])
    out = tmp_path / "by-litestream.db"
    ls_restore_cfg(litestream_bin, cfg, tmp_path / "target.db", out)
    assert integrity(out) == "ok" and content(out) == content(db)
    # so does litevisor, with identities only (restore needs no recipients)
    out = tmp_path / "by-litevisor.db"
    p = lv_restore_cfg(litevisor_bin, restore_config(tmp_path, rep, age_map([k0])),
                       tmp_path / "target.db", out)
    assert p.returncode == 0, p.stderr
    assert integrity(out) == "ok" and content(out) == content(db)
    # the listing commands read the encrypted replica too
    lcfg = restore_config(tmp_path, rep, age_map([k0]))
    for cmd in ("generations", "snapshots", "wal"):
        p = lv(litevisor_bin, cmd, "-config", str(lcfg), str(tmp_path / "target.db"))
        assert p.returncode == 0, p.stderr
        assert generations(rep)[0] in p.stdout, p.stdout


def test_encrypted_s3_replica_restores_with_litestream(run, tmp_path, litestream_bin,
                                                       litevisor_bin, s3server, keys):
    k0 = keys[0]
    srv = s3server()
    db = tmp_path / "app.db"
    create(db)
    rep = s3_replica(srv)
    rep["age"] = age_map([k0], [k0])
    r = run(config(tmp_path, db, [rep], min_checkpoint_page_count=300))
    write(db, 1500, start=1, blob=500)
    assert r.stop() == 0
    # the objects as stored in the bucket are age files
    stored = [os.path.join(d, f) for d, _, fs in os.walk(srv.directory) for f in fs
              if f.endswith(".lz4") or f.endswith(".lz4._S3rver_object")]
    assert stored, os.listdir(srv.directory)
    for p in stored:
        with open(p, "rb") as f:
            assert f.read(len(AGE_MAGIC)) == AGE_MAGIC, p
    lines = [f"type: s3", f"bucket: {srv.bucket}", "path: db", f"endpoint: {srv.endpoint}",
             "region: us-east-1", "force-path-style: true", f"access-key-id: {srv.key}",
             f'secret-access-key: "{srv.secret}"', f"age: {age_map([k0], [k0])}"]
    cfg = ls_config(tmp_path, tmp_path / "target.db", lines)
    out = tmp_path / "by-litestream.db"
    ls_restore_cfg(litestream_bin, cfg, tmp_path / "target.db", out)
    assert integrity(out) == "ok" and content(out) == content(db)
    # litevisor reads it back the same way (libcrypto serves S3 and age alike)
    out = tmp_path / "by-litevisor.db"
    p = lv_restore_cfg(litevisor_bin, cfg, tmp_path / "target.db", out)
    assert p.returncode == 0, p.stderr
    assert integrity(out) == "ok" and content(out) == content(db)


def test_litestream_written_encrypted_replica_restores_with_litevisor(
        tmp_path, litestream_bin, litevisor_bin, keys):
    k0, _, other = keys
    db, rep = tmp_path / "app.db", tmp_path / "rep"
    create(db)
    write(db, 300, start=1, blob=200)
    cfg = ls_config(tmp_path, db, [f"url: file://{rep}", "sync-interval: 100ms",
                                   f"age: {age_map([k0], [k0])}"])
    ls = subprocess.Popen([litestream_bin, "replicate", "-config", str(cfg)],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: objects(rep, "snapshots") and objects(rep, "wal"), timeout=30,
                 what="Litestream's first snapshot and segment")
        write(db, 200, start=1000, blob=200)
        time.sleep(1)
    finally:
        ls.terminate()  # its shutdown flush syncs the replica
        ls.wait(timeout=30)
    assert_encrypted_for(rep, k0, [other])  # Litestream's objects as the age tool sees them
    out = tmp_path / "by-litevisor.db"
    p = lv_restore_cfg(litevisor_bin, restore_config(tmp_path, rep, age_map([k0])),
                       tmp_path / "target.db", out)
    assert p.returncode == 0, p.stderr
    assert integrity(out) == "ok" and content(out) == content(db)


def test_restart_continues_the_generation_of_an_encrypted_replica(run, tmp_path, litestream_bin,
                                                                  keys):
    """At start-up the replica's last segment is decrypted to find where it ends, and
    shipping continues there, in the same generation (as Litestream does)."""
    k0 = keys[0]
    db, rep = tmp_path / "app.db", tmp_path / "rep"
    create(db)
    cfg = config(tmp_path, db, [file_replica(rep, age=age_map([k0], [k0]))])
    r = run(cfg)
    write(db, 300, start=1)
    assert r.stop() == 0
    first = generations(rep)
    nseg = len(objects(rep, "wal"))
    r = run(cfg)
    write(db, 300, start=1000)
    assert r.stop() == 0
    assert generations(rep) == first, r.text()
    assert len(objects(rep, "wal")) > nseg
    assert_encrypted_for(rep, k0)
    lcfg = ls_config(tmp_path, tmp_path / "target.db",
                     [f"url: file://{rep}", f"age: {age_map([k0], [k0])}"])
    out = tmp_path / "by-litestream.db"
    ls_restore_cfg(litestream_bin, lcfg, tmp_path / "target.db", out)
    assert integrity(out) == "ok" and content(out) == content(db)


def test_each_replica_encrypts_the_shared_snapshot_for_its_own_recipients(
        run, tmp_path, litestream_bin, s3server, keys):
    """The snapshot a new generation needs in every replica is compressed once; each
    replica encrypts that for its own recipients (to S3 with the exact length, which
    the encrypted size of the shared file gives up front)."""
    ka, kb, kc = keys
    srv = s3server()
    db, a, b = tmp_path / "app.db", tmp_path / "a", tmp_path / "b"
    create(db)
    write(db, 200, start=1, blob=2000)
    s3 = s3_replica(srv)
    s3["age"] = age_map([kc], [kc])
    r = run(config(tmp_path, db, [file_replica(a, "a", age=age_map([ka], [ka])),
                                  file_replica(b, "b", age=age_map([kb], [kb])), s3]))
    wait_for(lambda: r.text().count("snapshot written") >= 3, what="three snapshots")
    assert r.stop() == 0
    assert "how=shared-built" in r.text() and r.text().count("how=shared-reused") == 2, r.text()
    assert_encrypted_for(a, ka, [kb, kc])
    assert_encrypted_for(b, kb, [ka, kc])
    lines = [f"type: s3", f"bucket: {srv.bucket}", "path: db", f"endpoint: {srv.endpoint}",
             "region: us-east-1", "force-path-style: true", f"access-key-id: {srv.key}",
             f'secret-access-key: "{srv.secret}"', f"age: {age_map([kc], [kc])}"]
    cfg = ls_config(tmp_path, tmp_path / "target.db", lines)
    out = tmp_path / "by-litestream.db"
    ls_restore_cfg(litestream_bin, cfg, tmp_path / "target.db", out)
    assert integrity(out) == "ok" and content(out) == content(db)


def test_wrong_identity_is_a_clear_error_and_writes_nothing(run, tmp_path, litevisor_bin, keys):
    k0, _, other = keys
    db, rep = tmp_path / "app.db", tmp_path / "rep"
    create(db)
    r = run(config(tmp_path, db, [file_replica(rep, age=age_map([k0], [k0]))]))
    write(db, 100, start=1)
    assert r.stop() == 0
    out = tmp_path / "out" / "r.db"
    p = lv_restore_cfg(litevisor_bin, restore_config(tmp_path, rep, age_map([other])),
                       tmp_path / "target.db", out)
    assert p.returncode == 1, p.stderr
    assert "cannot decrypt" in p.stderr and "no identity matches" in p.stderr, p.stderr
    assert not (tmp_path / "out").exists(), os.listdir(tmp_path / "out")
    # no age: at all: the message says what is missing
    p = lv(litevisor_bin, "restore", "-o", str(out), f"file://{rep}")
    assert p.returncode == 1, p.stderr
    assert "age-encrypted: give the replica's age: identities" in p.stderr, p.stderr
    assert not (tmp_path / "out").exists()


def test_damaged_encrypted_object_is_corrupt_and_falls_back(run, tmp_path, litevisor_bin, keys):
    k0 = keys[0]
    db, bad, good = tmp_path / "app.db", tmp_path / "peer-05", tmp_path / "nas"
    create(db)
    age = age_map([k0], [k0])
    r = run(config(tmp_path, db, [file_replica(bad, "peer-05", age=age),
                                  file_replica(good, "nas", age=age)]))

    def segments():
        return [p for p in object_paths(bad) if p.endswith(".wal.lz4")]
    # in batches, each shipped before the next: one burst may go up as one or two
    # segments (a slow build ships less often), and the damaged one must not be the last
    for batch in range(5):
        had = len(segments())
        write(db, 100, start=1 + 100 * batch, blob=300)
        wait_for(lambda: len(segments()) > had, what="the batch's segment")
    assert r.stop() == 0
    segs = segments()
    assert len(segs) >= 3
    seg = segs[len(segs) // 2]  # not the last: the probe reads that one (state=error)
    data = bytearray(open(seg, "rb").read())
    data[len(data) - 40] ^= 0x01  # in the payload: only the chunk's tag can tell
    open(seg, "wb").write(bytes(data))
    cfg = ls_config(tmp_path, tmp_path / "target.db",
                    [f"name: peer-05", f"url: file://{bad}", f"age: {age}"])
    # one damaged replica alone: a corrupt object, nothing restored
    out = tmp_path / "out1.db"
    p = lv_restore_cfg(litevisor_bin, cfg, tmp_path / "target.db", out)
    assert p.returncode == 1, p.stderr
    assert "does not authenticate" in p.stderr, p.stderr
    assert not out.exists()
    # with the good replica beside it (answering slower: the damaged one wins the tie),
    # the restore falls back to it
    for i in range(4000):
        (good / "generations" / f"junk{i}").touch()
    cfg.write_text(cfg.read_text() + f"      - name: nas\n        url: file://{good}\n"
                   f"        age: {age}\n")
    out = tmp_path / "out2.db"
    p = lv_restore_cfg(litevisor_bin, cfg, tmp_path / "target.db", out)
    assert p.returncode == 0, p.stderr
    assert "does not authenticate" in p.stderr and "falling back" in p.stderr, p.stderr
    assert integrity(out) == "ok" and content(out) == content(db)


def test_a_replica_it_could_not_read_back_is_never_written(tmp_path, litevisor_bin, keys):
    """Litestream with identities and no recipients writes plain objects it then cannot
    read back; litevisor refuses to write to such a replica: a configuration error, 100,
    from replicate as from run (replicate said 111, "temporary": QA135 D2)."""
    db, rep = tmp_path / "app.db", tmp_path / "rep"
    create(db)
    cfg = config(tmp_path, db, [file_replica(rep, age=age_map([keys[0]]))])
    for cmd in (["replicate"], ["run"]):
        p = subprocess.run([litevisor_bin, *cmd, "-config", str(cfg), "--", "true"][
            :None if cmd == ["run"] else 4], capture_output=True, text=True, timeout=60)
        assert p.returncode == 100, (cmd, p.stderr)
        assert "no recipients to encrypt for" in p.stderr, p.stderr
        assert not rep.exists()
    # nor to one whose identities open nothing it would write (the next start would fail)
    cfg = config(tmp_path, db, [file_replica(rep, age=age_map([keys[1]], [keys[0]]))])
    p = subprocess.run([litevisor_bin, "replicate", "-config", str(cfg)], capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 100, p.stderr
    assert "none of its age: identities belongs to one of its recipients" in p.stderr, p.stderr
    assert not rep.exists()


def test_config_prints_recipients_and_hides_identities(tmp_path, litevisor_bin, keys):
    k0, k1, _ = keys
    cfg = restore_config(tmp_path, tmp_path / "rep", age_map([k0], [k0, k1]))
    p = lv(litevisor_bin, "config", "-config", str(cfg))
    assert p.returncode == 0, p.stderr
    assert k0.recipient in p.stdout and k1.recipient in p.stdout
    assert "AGE-SECRET-KEY" not in p.stdout and "identities: 1, redacted" in p.stdout
    # env expansion as for any other value, and an identity never shows in an error
    cfg.write_text(cfg.read_text().replace(k0.identity, "$AGE_ID"))
    env = dict(os.environ, AGE_ID=k0.identity)
    p = subprocess.run([litevisor_bin, "config", "-config", str(cfg)], capture_output=True,
                       text=True, env=env)
    assert p.returncode == 0, p.stderr
    env["AGE_ID"] = k0.identity[:-1] + ("Q" if k0.identity[-1] != "Q" else "P")
    p = subprocess.run([litevisor_bin, "config", "-config", str(cfg)], capture_output=True,
                       text=True, env=env)
    assert p.returncode == 100 and "bad checksum (value redacted)" in p.stderr, p.stderr
    assert k0.identity[16:] not in p.stderr


def test_a_key_file_pasted_whole_is_one_identity(tmp_path, litevisor_bin, keys):
    """As age.ParseIdentities reads it (Litestream hands it each item): one key per
    line, age-keygen's "#" comment lines and blank lines skipped."""
    k0 = keys[0]
    body = "".join(f"              {l}\n" for l in open(k0.path).read().splitlines())
    cfg = tmp_path / "lv.yml"
    cfg.write_text(f"dbs:\n  - path: {tmp_path}/app.db\n    replicas:\n"
                   f"      - url: file://{tmp_path}/rep\n        age:\n          identities:\n"
                   f"            - |\n{body}\n          recipients: [{k0.recipient}]\n")
    p = lv(litevisor_bin, "config", "-config", str(cfg))
    assert p.returncode == 0, p.stderr
    assert "identities: 1, redacted" in p.stdout, p.stdout
    cfg.write_text(cfg.read_text().replace(k0.identity, k0.identity.lower()))
    p = lv(litevisor_bin, "config", "-config", str(cfg))
    assert p.returncode == 100
    assert "line 3: invalid age identity: an identity is written in uppercase" in p.stderr, \
        p.stderr
    assert k0.identity.lower()[16:] not in p.stderr


def test_an_identity_under_recipients_is_never_quoted(tmp_path, litevisor_bin, keys):
    """Swapped lists, `recipients: [$AGE_IDENTITY]`, or a key file pasted as a recipient:
    the error named the secret key in full (QA23)."""
    k0 = keys[0]
    cfg = restore_config(tmp_path, tmp_path / "rep", "{identities: [%s], recipients: [%s]}"
                         % (k0.identity, k0.identity))
    body = "".join(f"              {l}\n" for l in open(k0.path).read().splitlines())
    pasted = tmp_path / "pasted.yml"
    pasted.write_text(f"dbs:\n  - path: {tmp_path}/app.db\n    replicas:\n"
                      f"      - url: file://{tmp_path}/rep\n        age:\n"
                      f"          identities: [{k0.identity}]\n          recipients:\n"
                      f"            - |\n{body}\n")
    for c in (cfg, pasted):
        p = lv(litevisor_bin, "config", "-config", str(c))
        assert p.returncode == 100, p.stderr
        assert "an identity (AGE-SECRET-KEY-1…) where a recipient belongs" in p.stderr, p.stderr
        assert k0.identity[16:] not in p.stderr + p.stdout, p.stderr
    # a mistyped recipient is still quoted, to be found
    bad = k0.recipient[:-1] + ("q" if k0.recipient[-1] != "q" else "p")
    cfg = restore_config(tmp_path, tmp_path / "rep", "{identities: [%s], recipients: [%s]}"
                         % (k0.identity, bad), name="typo.yml")
    p = lv(litevisor_bin, "config", "-config", str(cfg))
    assert p.returncode == 100 and f'invalid age recipient "{bad}"' in p.stderr, p.stderr


def test_blanks_around_an_expanded_key_are_dropped(run, tmp_path, litestream_bin, litevisor_bin,
                                                    keys):
    """Litestream expands ${VAR} in the file's text before YAML, which drops a value's
    trailing blank (an env file's "KEY=value "); litevisor expands each value after
    parsing, and refused the key as an invalid character (QA23)."""
    k0 = keys[0]
    db, rep = tmp_path / "app.db", tmp_path / "rep"
    create(db)
    r = run(config(tmp_path, db, [file_replica(rep, age=age_map([k0], [k0]))]))
    write(db, 20, start=1)
    assert r.stop() == 0
    cfg = tmp_path / "env.yml"
    cfg.write_text(f"dbs:\n  - path: {tmp_path}/target.db\n    replicas:\n"
                   f"      - url: file://{rep}\n        age:\n          identities:\n"
                   f"            - ${{AGE_IDENTITY}}\n")
    env = dict(os.environ, AGE_IDENTITY=f" {k0.identity} ")
    for tool, args in ((litestream_bin, []), (litevisor_bin, [])):
        out = tmp_path / f"{os.path.basename(tool)}.db"
        p = subprocess.run([tool, "restore", "-config", str(cfg), "-o", str(out),
                            str(tmp_path / "target.db")], capture_output=True, text=True,
                           env=env, timeout=120)
        assert p.returncode == 0, (tool, p.stderr)
        assert content(out) == content(db)


def test_a_header_for_hundreds_of_recipients_reads_back(run, tmp_path, litestream_bin,
                                                        litevisor_bin, keys):
    """700 recipients make a header over 64 KiB: litevisor wrote such objects but its
    restore refused them ("age header over 65536 bytes"), as it refused Litestream's
    (QA23). The age tool sets no limit; litevisor reads headers of up to 10,000."""
    k0 = keys[0]
    subprocess.run(["age-keygen", "-o", str(tmp_path / "many.txt")], capture_output=True,
                   check=True)
    many = [k0.recipient]
    for i in range(699):
        p = subprocess.run(["age-keygen"], capture_output=True, text=True, check=True)
        ident = next(l for l in p.stdout.splitlines() if l.startswith("AGE-SECRET-KEY-1"))
        many.append(subprocess.run(["age-keygen", "-y"], input=ident, capture_output=True,
                                   text=True, check=True).stdout.strip())
    db, rep = tmp_path / "app.db", tmp_path / "rep"
    create(db)
    age = "{identities: [%s], recipients: [%s]}" % (k0.identity, ", ".join(many))
    r = run(config(tmp_path, db, [file_replica(rep, age=age)]))
    write(db, 20, start=1)
    assert r.stop() == 0
    snap = object_paths(rep)[0]
    assert os.path.getsize(snap) > 66000  # the header alone: 700 stanzas of 98 bytes
    assert age_decrypt(k0, snap)[:4] == LZ4_MAGIC
    for tool in (litevisor_bin, litestream_bin):
        out = tmp_path / f"{os.path.basename(tool)}.db"
        p = subprocess.run([tool, "restore", "-config",
                            str(restore_config(tmp_path, rep, age_map([k0]))), "-o", str(out),
                            str(tmp_path / "target.db")], capture_output=True, text=True,
                           timeout=120)
        assert p.returncode == 0, (tool, p.stderr)
        assert content(out) == content(db)


def test_more_recipients_than_a_header_read_back_holds_are_refused(tmp_path, litevisor_bin,
                                                                   keys):
    k0 = keys[0]
    cfg = restore_config(tmp_path, tmp_path / "rep", "{identities: [%s], recipients: [%s]}"
                         % (k0.identity, ", ".join([k0.recipient] * 10001)))
    p = lv(litevisor_bin, "config", "-config", str(cfg))
    assert p.returncode == 100, p.stderr
    assert "10001 recipients: litevisor reads back age headers of at most 10000" in p.stderr


def test_identities_do_not_stay_in_the_process_memory(run, tmp_path, keys):
    """The config's text, libyaml's copies and the parsed values were freed without
    being wiped: a core dump or swap of a running replicate held the identities'
    text (QA23). Only their decoded 32 bytes stay, in the replica's storage."""
    db, rep = tmp_path / "app.db", tmp_path / "rep"
    create(db)
    r = run(config(tmp_path, db, [file_replica(rep, age=age_map(keys, [keys[0]]))]))
    write(db, 5, start=1)
    wait_for(lambda: objects(rep, "wal"), what="the first segment")
    found = {}
    with open(f"/proc/{r.proc.pid}/maps") as maps, open(f"/proc/{r.proc.pid}/mem", "rb") as mem:
        for line in maps:
            addr, perms = line.split()[:2]
            if not perms.startswith("rw"):
                continue
            lo, hi = (int(x, 16) for x in addr.split("-"))
            if hi - lo > 1 << 30:
                continue  # ASan's shadow memory: reserved terabytes, no strings
            for at in range(lo, hi, 16 << 20):  # chunks overlapping by a key's length
                try:
                    mem.seek(at)
                    data = mem.read(min(hi, at + (16 << 20) + 128) - at)
                except OSError:
                    continue
                for i, k in enumerate(keys):
                    # the key body: a freed chunk's first 16 bytes are the allocator's
                    found[i] = found.get(i, 0) + data.count(k.identity[16:].encode())
    assert r.stop() == 0
    assert not any(found.values()), found


def object_bytes(rep, gen):
    """{path: bytes} of every object of generation gen."""
    root = os.path.join(rep, "generations", gen)
    out = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            with open(os.path.join(dirpath, f), "rb") as fh:
                out[os.path.join(dirpath, f)] = fh.read()
    return out


@pytest.mark.parametrize("change", ["plain-to-age", "age-to-plain", "rotate-dropping-old-key"])
def test_changing_a_replicas_age_settings_starts_a_new_generation(run, tmp_path, litevisor_bin,
                                                                  keys, change):
    """QA32 #4: a replica whose age: settings changed while it holds data (encryption
    turned on or off, keys rotated without the old identity) continues in a new
    generation in the new form, said once in the log; the old generation's objects stay
    as they were; another replica of the database is not harmed (it gets the new
    generation's snapshot). The old code retried reading the replica's position for ever
    and shipped nothing to it."""
    k0, k1, _ = keys
    before, after = {
        "plain-to-age": (None, age_map([k0], [k0])),
        "age-to-plain": (age_map([k0], [k0]), None),
        "rotate-dropping-old-key": (age_map([k0], [k0]), age_map([k1], [k1])),
    }[change]
    db, rep, other = tmp_path / "app.db", tmp_path / "rep", tmp_path / "other"
    create(db)

    def cfg(age):
        extra = {"age": age} if age else {}
        return config(tmp_path, db, [file_replica(rep, "changed", **extra),
                                     file_replica(other, "other")])

    r = run(cfg(before))
    write(db, 100, start=1)
    assert r.stop() == 0, r.text()
    [old] = generations(rep)
    old_objects = object_bytes(rep, old)
    r = run(cfg(after))
    # its new generation before the stop: one begun during the final flush left the flush
    # waiting for the old one's end (CI, a TERM 60 ms after the start; in the note)
    wait_for(lambda: 'reason="replica changed' in r.text(), what="the new generation",
             log=r.text)
    write(db, 100, start=1000)
    assert r.stop() == 0, r.text()
    log = r.text()
    assert "cannot read replica position" not in log, log
    assert log.count("age: settings changed since it wrote this generation") == 1, log
    if change == "age-to-plain":  # QA32 #7: the cause is named, not "refused the data"
        assert "the object is age-encrypted" in log, log
    gens = generations(rep)
    assert len(gens) == 2 and old in gens, gens
    [new] = [g for g in gens if g != old]
    assert object_bytes(rep, old) == old_objects  # the old generation is left as it was
    new_objects = [p for p in object_bytes(rep, new) if p.endswith(".lz4")]
    assert new_objects
    for p in new_objects:
        with open(p, "rb") as f:
            magic = LZ4_MAGIC if after is None else AGE_MAGIC
            assert f.read(len(magic)) == magic, p
    if after:
        key = k1 if change.startswith("rotate") else k0
        assert all(age_decrypt(key, p) is not None for p in new_objects)
    # the new settings restore everything; the untouched replica too
    for target_rep, age in ((rep, after), (other, None)):
        out = tmp_path / f"out-{os.path.basename(target_rep)}.db"
        p = lv_restore_cfg(litevisor_bin, restore_config(tmp_path, target_rep, age),
                           tmp_path / "target.db", out)
        assert p.returncode == 0, p.stderr
        assert integrity(out) == "ok" and content(out) == content(db)
    # the old generation still restores with the settings that wrote it
    out = tmp_path / "out-old.db"
    p = lv(litevisor_bin, "restore", "-config", str(restore_config(tmp_path, rep, before)),
           "-generation", old, "-o", str(out), str(tmp_path / "target.db"))
    assert p.returncode == 0, p.stderr
    assert integrity(out) == "ok"


def test_a_damaged_object_is_no_settings_change(run, tmp_path, keys):
    """Only an object in another form than the settings expect starts a new
    generation: a damaged one (here its header MAC) stays an error, retried, and the
    generation is not given up on."""
    k0 = keys[0]
    db, rep = tmp_path / "app.db", tmp_path / "rep"
    create(db)
    cfg = config(tmp_path, db, [file_replica(rep, age=age_map([k0], [k0]))])
    r = run(cfg)
    write(db, 50, start=1)
    assert r.stop() == 0
    first = generations(rep)
    last = sorted(p for p in object_paths(rep) if "/wal/" in p)[-1]
    data = bytearray(open(last, "rb").read())
    mac = data.index(b"\n--- ") + 5
    data[mac] = ord("A") if data[mac] != ord("A") else ord("B")
    open(last, "wb").write(bytes(data))
    r = run(cfg)
    wait_for(lambda: "cannot read replica position" in r.text(), what="the error")
    r.stop()
    assert "header MAC mismatch" in r.text(), r.text()
    assert "settings changed" not in r.text() and generations(rep) == first, r.text()


def test_age_turned_on_for_a_generation_holding_only_a_snapshot(run, tmp_path, litevisor_bin,
                                                                keys):
    """A generation whose end is its snapshot (nothing written since: an idle app) has no
    segment whose reading would show its form: its snapshot's first bytes are read, and
    the age: change starts a new generation rather than adding encrypted segments to a
    plain generation."""
    k0 = keys[0]
    db, rep = tmp_path / "app.db", tmp_path / "rep"
    create(db)
    r = run(config(tmp_path, db, [file_replica(rep)]))
    wait_for(lambda: "snapshot written" in r.text(), what="the snapshot")
    assert r.stop() == 0, r.text()
    [old] = generations(rep)
    assert not objects(rep, "wal"), "precondition: a snapshot alone"
    r = run(config(tmp_path, db, [file_replica(rep, age=age_map([k0], [k0]))]))
    write(db, 20, start=1)
    assert r.stop() == 0, r.text()
    assert "age: settings changed since it wrote this generation" in r.text(), r.text()
    assert len(generations(rep)) == 2, generations(rep)
    for p in object_paths(rep):  # no encrypted object went into the plain generation
        with open(p, "rb") as f:
            assert f.read(4) == (LZ4_MAGIC if f"/{old}/" in p else AGE_MAGIC[:4]), p
    out = tmp_path / "out.db"
    p = lv_restore_cfg(litevisor_bin, restore_config(tmp_path, rep, age_map([k0], [k0])),
                       tmp_path / "target.db", out)
    assert p.returncode == 0, p.stderr
    assert content(out) == content(db)


def lv_run(litevisor_bin, cfg, db, start):
    """`litevisor run` whose service commits 10 transactions (restore step first)."""
    return subprocess.run([litevisor_bin, "run", "-config", str(cfg), "--", PY, "-c", WRITER,
                           json.dumps({"path": str(db), "n": 10, "start": start})],
                          capture_output=True, text=True, timeout=120)


def test_run_starts_after_its_clean_stop_when_age_is_turned_on(tmp_path, litevisor_bin, keys):
    """QA32 #4, run: its only replica's last segment cannot be read with the new age:
    settings, but this node stopped writing it cleanly there (its closed record and the
    replica's closed mark agree): the local database is current, the service starts and
    replication goes on in a new, encrypted generation. The old code refused to start
    (unreachable, exit 111)."""
    k0 = keys[0]
    db, rep = tmp_path / "app.db", tmp_path / "rep"
    create(db)
    p = lv_run(litevisor_bin, config(tmp_path, db, [file_replica(rep)]), db, 1)
    assert p.returncode == 0, p.stderr
    assert objects(rep, "wal")
    [old] = generations(rep)
    cfg = config(tmp_path, db, [file_replica(rep, age=age_map([k0], [k0]))])
    p = lv_run(litevisor_bin, cfg, db, 100)
    assert p.returncode == 0, p.stderr
    assert "it ends where this node stopped writing it cleanly" in p.stderr, p.stderr
    assert "outcome=exists" in p.stderr, p.stderr
    assert len(generations(rep)) == 2 and old in generations(rep)
    out = tmp_path / "out.db"
    r = lv_restore_cfg(litevisor_bin, restore_config(tmp_path, rep, age_map([k0], [k0])),
                       tmp_path / "target.db", out)
    assert r.returncode == 0, r.stderr
    assert content(out) == content(db)


def test_run_refuses_an_unreadable_replica_it_did_not_close_and_says_why(run, tmp_path,
                                                                          litevisor_bin, keys):
    """Without this node's clean stop as the replica's last writer (here: killed), a
    replica written with other age: settings might hold newer data: run does not start,
    and says why and what to do. Both ways out work: a clean run with the old settings
    then the new ones; or keep-local once. Replication continues in a new generation."""
    k0 = keys[0]
    db, rep = tmp_path / "app.db", tmp_path / "rep"
    create(db)
    r = run(config(tmp_path, db, [file_replica(rep)]))
    write(db, 20, start=1)
    wait_for(lambda: len(objects(rep, "wal")) > 0, what="a segment")
    time.sleep(0.5)
    r.kill()
    cfg = config(tmp_path, db, [file_replica(rep, age=age_map([k0], [k0]))])
    p = subprocess.run([litevisor_bin, "run", "-config", str(cfg), "--", "true"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 111, p.stderr
    assert "UNREADABLE with its age: settings" in p.stderr, p.stderr
    assert "restore.existing: keep-local" in p.stderr, p.stderr
    assert "Start once with the settings that wrote it and stop cleanly" in p.stderr, p.stderr
    # way out 1: once with the old settings, stopping cleanly, then the new ones
    enc = cfg.read_text()
    p = lv_run(litevisor_bin, config(tmp_path, db, [file_replica(rep)]), db, 100)
    assert p.returncode == 0, p.stderr
    cfg.write_text(enc)
    p = lv_run(litevisor_bin, cfg, db, 200)
    assert p.returncode == 0, p.stderr
    assert "age: settings changed since it wrote this generation" in p.stderr, p.stderr
    assert len(generations(rep)) == 2
    # way out 2: keep-local once (killed again, with the encryption turned off now)
    r = run(config(tmp_path, db, [file_replica(rep, age=age_map([k0], [k0]))]))
    write(db, 5, start=300)
    wait_for(lambda: "replica continues generation" in r.text(), what="the start")
    time.sleep(0.5)
    r.kill()
    plain = config(tmp_path, db, [file_replica(rep)]).read_text()
    cfg.write_text(plain)
    p = subprocess.run([litevisor_bin, "run", "-config", str(cfg), "--", "true"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 111, p.stderr
    assert "UNREADABLE with its age: settings" in p.stderr, p.stderr
    cfg.write_text("restore:\n  existing: keep-local\n" + plain)
    p = lv_run(litevisor_bin, cfg, db, 400)
    assert p.returncode == 0, p.stderr
    assert "age: settings changed since it wrote this generation" in p.stderr, p.stderr
    assert len(generations(rep)) == 3
    out = tmp_path / "out.db"
    r = lv_restore_cfg(litevisor_bin, restore_config(tmp_path, rep, None),
                       tmp_path / "target.db", out)
    assert r.returncode == 0, r.stderr
    assert content(out) == content(db)


def test_rotating_keys_keeping_the_old_identity_continues_the_generation(run, tmp_path, keys):
    """The way to rotate without a new generation (docs/config.md): the old identity
    stays under identities:, only the new key under recipients:. The generation goes
    on; new objects are for the new key only."""
    k0, k1, _ = keys
    db, rep = tmp_path / "app.db", tmp_path / "rep"
    create(db)
    r = run(config(tmp_path, db, [file_replica(rep, age=age_map([k0], [k0]))]))
    write(db, 50, start=1)
    assert r.stop() == 0
    first = set(object_paths(rep))
    r = run(config(tmp_path, db, [file_replica(rep, age=age_map([k0, k1], [k1]))]))
    write(db, 50, start=1000)
    assert r.stop() == 0, r.text()
    assert "settings changed" not in r.text() and len(generations(rep)) == 1, r.text()
    new = [p for p in object_paths(rep) if p not in first]
    assert new and all(age_decrypt(k1, p) is not None and age_decrypt(k0, p) is None
                       for p in new)
