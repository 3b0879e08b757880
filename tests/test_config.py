"""`litevisor config`: the real binary validates a config file and prints the effective config.

Bad fixtures live in tests/config/bad/*.yml; the first line of each is
"# error: <the exact message>", which must be what the binary prints on stderr
(after "litevisor config: ") with exit code 100.
"""
import glob
import json
import os
import pathlib
import shutil
import sqlite3
import subprocess
import time

import pytest
import yaml

TESTS = os.path.dirname(os.path.abspath(__file__))
GOOD = os.path.join(TESTS, "config", "good")
BAD = os.path.join(TESTS, "config", "bad")

# Credentials used in these tests: none may ever appear in any output.
AKID = "AKIA7LVTESTONLYKEY42"
SAK = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYTESTSECRET"


def run(binary, *args, env=None, cwd=None):
    e = {k: v for k, v in os.environ.items() if not k.startswith(("LITEVISOR_", "LITESTREAM_"))}
    e.update(env or {})
    return subprocess.run([binary, "config", *args], capture_output=True, text=True, env=e,
                          cwd=cwd, timeout=30)


def bad_fixtures():
    return sorted(glob.glob(os.path.join(BAD, "*.yml")))


def test_there_are_bad_fixtures():
    assert len(bad_fixtures()) >= 10


@pytest.mark.parametrize("path", bad_fixtures(), ids=os.path.basename)
def test_bad_fixture_exits_100_with_exact_error(litevisor_bin, path):
    with open(path) as f:
        first = f.readline()
    assert first.startswith("# error: "), f"{path}: first line must be '# error: <message>'"
    want = first[len("# error: "):].rstrip("\n")
    p = run(litevisor_bin, "-config", os.path.basename(path), cwd=BAD)
    assert p.returncode == 100, p.stderr
    assert p.stdout == ""
    assert p.stderr == f"litevisor config: {want}\n"


@pytest.mark.parametrize("command", [["config"], ["databases"], ["version"], ["help"],
                                     ["generations", "-h"], ["generations", "REPLICA"],
                                     ["restore", "-dry-run", "-if-replica-exists", "-o", "OUT",
                                      "REPLICA"]])
@pytest.mark.parametrize("redirect", ["1>&-", ">/dev/full"])
def test_output_that_cannot_be_written_fails_the_command(litevisor_bin, tmp_path, command,
                                                         redirect):
    """Output lost to a full disk or a closed stdout is an error, as in coreutils: a
    script must not read exit 0 as "printed". A closed stdout exited 0 (QA41 #6),
    databases, version, help and the listings ignored write errors, and a dry run named
    no cause (QA45 #6)."""
    sub = {"REPLICA": f"file://{tmp_path}/r", "OUT": str(tmp_path / "out.db")}
    command = [sub.get(a, a) for a in command]
    cfg = tmp_path / "c.yml"
    cfg.write_text(f"dbs:\n  - path: {tmp_path}/db\n    replicas:\n      - url: file://{tmp_path}/r\n")
    args = command + (["-config", str(cfg)] if command[0] in ("config", "databases") else [])
    p = subprocess.run(["sh", "-c", f'exec "$@" {redirect}', "sh", litevisor_bin, *args],
                       capture_output=True, text=True, timeout=30, env={"PATH": os.environ["PATH"]})
    why = "Bad file descriptor" if redirect == "1>&-" else "No space left on device"
    assert p.returncode == 111, (p.returncode, p.stderr)
    assert f"writing standard output: {why}" in p.stderr, p.stderr


def test_a_database_path_that_is_a_symlink_is_refused(litevisor_bin, tmp_path):
    """SQLite follows a symlinked database file and keeps its -wal beside the target:
    litevisor watched the -wal beside the link, shipped nothing after the first snapshot
    and reported every flush done (QA43 #2). A symlinked directory is fine."""
    vol = tmp_path / "vol"
    vol.mkdir()
    conn = sqlite3.connect(vol / "app.db")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.close()
    (tmp_path / "app.db").symlink_to(vol / "app.db")
    (tmp_path / "data").symlink_to(vol)
    cfg = tmp_path / "c.yml"
    want = (f"is a symlink to {vol}/app.db: SQLite keeps the database's -wal and -shm beside "
            f"{vol}/app.db, where litevisor would not look; give {vol}/app.db as the path")
    cfg.write_text(f"dbs:\n  - path: {tmp_path}/app.db\n    replicas:\n      - url: file://{tmp_path}/r\n")
    p = run(litevisor_bin, "-config", str(cfg))
    assert p.returncode == 100 and f"c.yml:2:11: dbs[0].path: {tmp_path}/app.db {want}" in p.stderr, \
        p.stderr
    p = subprocess.run([litevisor_bin, "replicate", str(tmp_path / "app.db"), f"file://{tmp_path}/r"],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 100 and want in p.stderr, p.stderr
    cfg.write_text(f"dbs:\n  - path: {tmp_path}/data/app.db\n    replicas:\n      - url: file://{tmp_path}/r\n")
    p = run(litevisor_bin, "-config", str(cfg))
    assert p.returncode == 0, p.stderr


def test_a_database_name_too_long_for_the_files_beside_it_is_refused(litevisor_bin, tmp_path):
    """A database file name of 248 bytes is one SQLite could open, but its -journal, and
    a copy moved aside, pass the 255-byte limit: a restore failed late with "cannot move
    a file aside …-wal: File name too long", a file the user never named (QA110 O6).
    Refused at once, naming the path and the longest name allowed."""
    src = tmp_path / "a.db"
    conn = sqlite3.connect(src)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE t(x)")
    conn.close()
    long = tmp_path / ("x" * 207 + ".db")  # 210 bytes: one past the limit
    want = f"the file name of {long} is 210 bytes, too long"
    cfg = tmp_path / "c.yml"
    cfg.write_text(f"dbs:\n  - path: {long}\n    replicas:\n      - url: file://{tmp_path}/r\n")
    p = run(litevisor_bin, "-config", str(cfg))
    assert p.returncode == 100 and f"dbs[0].path: {want}" in p.stderr and "at most 209" in p.stderr, \
        p.stderr
    p = subprocess.run([litevisor_bin, "replicate", str(long), f"file://{tmp_path}/r"],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 100 and f"DB_PATH: {want}" in p.stderr, p.stderr
    p = subprocess.run([litevisor_bin, "restore", "-o", str(long), f"file://{tmp_path}/r"],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 100 and f"-o: {want}" in p.stderr, p.stderr
    assert not os.path.exists(long)
    ok = tmp_path / ("x" * 206 + ".db")  # 209 bytes: the longest taken
    cfg.write_text(f"dbs:\n  - path: {ok}\n    replicas:\n      - url: file://{tmp_path}/r\n")
    p = run(litevisor_bin, "-config", str(cfg))
    assert p.returncode == 0, p.stderr


def test_a_restore_output_naming_a_directory_is_a_usage_error(litevisor_bin, tmp_path):
    """`restore -o DIR/` made the directory, then failed "already exists (restored
    meanwhile?)", blaming another restore (QA115 O8); so did DIR/. and DIR/.. (QA118
    D4). A usage error, before anything."""
    for o in (f"{tmp_path}/new/", f"{tmp_path}/new/.", f"{tmp_path}/new/..", "."):
        p = subprocess.run([litevisor_bin, "restore", "-o", o, f"file://{tmp_path}/r"],
                           capture_output=True, text=True, timeout=30)
        assert p.returncode == 100 and f"-o: {o} names a directory" in p.stderr, p.stderr
        assert not os.path.exists(tmp_path / "new")


def test_seed_topology_effective_config(litevisor_bin):
    p = run(litevisor_bin, "-config", os.path.join(GOOD, "seed-topology.yml"))
    assert p.returncode == 0, p.stderr
    assert p.stderr == ""
    cfg = yaml.safe_load(p.stdout)
    assert cfg["node"] == "node-105"
    assert [d["path"] for d in cfg["dbs"]] == ["/config/radarr.db", "/config/logs.db"]
    for db in cfg["dbs"]:
        reps = {r["name"]: r for r in db["replicas"]}
        assert set(reps) == {"minio-105", "minio-106", "nas"}
        # Replicating to the node we run on protects nothing: restore source only.
        assert reps["minio-105"]["restore-only"] is True
        assert reps["minio-106"]["restore-only"] is False
        assert reps["nas"]["restore-only"] is False
        assert reps["minio-105"]["endpoint"] == "http://localhost:9000"
        assert reps["minio-105"]["force-path-style"] is True
        assert reps["minio-106"]["region"] == "us-east-1"
        assert reps["nas"]["type"] == "file"
        assert reps["nas"]["path"].startswith("/mnt/nas/litevisor/radarr/")
        assert reps["minio-105"]["access-key-id"] == "<redacted>"
    # Defaults are spelled out.
    assert cfg["restore"]["mode"] == "freshest-reachable"
    assert cfg["supervisor"]["stop-grace"] == "10s"
    assert cfg["dbs"][0]["max-backlog"] == "1GiB"
    assert "minioadmin" not in p.stdout


def put_secrets_back(text):
    """What the docs ask before loading config's output: the redacted secrets put back."""
    return text.replace('"<redacted>"', '"the-secret"')


def test_output_loads_again_unchanged(litevisor_bin, tmp_path):
    first = run(litevisor_bin, "-config", os.path.join(GOOD, "seed-topology.yml"))
    assert first.returncode == 0, first.stderr
    again = tmp_path / "effective.yml"
    again.write_text(put_secrets_back(first.stdout))
    second = run(litevisor_bin, "-config", str(again))
    assert second.returncode == 0, second.stderr
    strip = lambda s: [l for l in s.splitlines() if not l.lstrip().startswith("#")]
    assert strip(second.stdout) == strip(first.stdout)


def test_credentials_never_printed(litevisor_bin, tmp_path):
    keyfile = tmp_path / "sak"
    keyfile.write_text(SAK + "\n")
    env = {"LITEVISOR_TEST_AKID": AKID, "LITEVISOR_TEST_SAK": SAK}
    p = run(litevisor_bin, "-config", os.path.join(GOOD, "litestream.yml"), env=env)
    assert p.returncode == 0, p.stderr
    assert AKID not in p.stdout + p.stderr
    assert SAK not in p.stdout + p.stderr
    cfg = yaml.safe_load(p.stdout)
    s3 = cfg["dbs"][0]["replicas"][0]
    # Top-level credentials were copied into the S3 replica, and redacted.
    assert s3["access-key-id"] == "<redacted>"
    assert s3["secret-access-key"] == "<redacted>"
    assert s3["endpoint"] == "http://localhost:9000"
    assert s3["retention"] == "72h0m0s"
    assert "access-key-id" not in cfg["dbs"][0]["replicas"][1]  # file replicas take no keys

    # A file credential shows its path (not a secret), never its content.
    cfgfile = tmp_path / "c.yml"
    cfgfile.write_text(
        "dbs:\n  - path: /d/a.db\n    replicas:\n"
        f"      - url: s3://b/p\n        secret-access-key-file: {keyfile}\n"
        f"        access-key-id: {AKID}\n")
    p = run(litevisor_bin, "-config", str(cfgfile))
    assert p.returncode == 0, p.stderr
    assert f'secret-access-key-file: "{keyfile}"' in p.stdout
    assert SAK not in p.stdout and AKID not in p.stdout

    # An Uptime-Kuma push URL ends in a token: redacted as well.
    cfgfile.write_text("health:\n  push-url: https://kuma.lan/api/push/Tok3nSecret42\n")
    p = run(litevisor_bin, "-config", str(cfgfile))
    assert p.returncode == 0, p.stderr
    assert 'push-url: "<redacted>"' in p.stdout
    assert "Tok3nSecret42" not in p.stdout

    # A service probe with basic auth in its URL: the user and password go.
    cfgfile.write_text("health:\n  probe-url: http://admin:Pr0bePass@127.0.0.1:7878/ping\n")
    p = run(litevisor_bin, "-config", str(cfgfile))
    assert p.returncode == 0, p.stderr
    assert 'probe-url: "http://<redacted>@127.0.0.1:7878/ping"' in p.stdout, p.stdout
    assert "Pr0bePass" not in p.stdout and "admin" not in p.stdout

    # A bad credential is refused without being echoed.
    cfgfile.write_text(
        "dbs:\n  - path: /d/a.db\n    replicas:\n"
        f"      - url: s3://b/p\n        secret-access-key: \"{SAK}${{\"\n")
    p = run(litevisor_bin, "-config", str(cfgfile))
    assert p.returncode == 100
    assert "(value redacted)" in p.stderr
    assert SAK not in p.stderr


def test_env_expansion_and_no_expand_env(litevisor_bin, tmp_path):
    cfgfile = tmp_path / "c.yml"
    cfgfile.write_text("exec: \"app --port ${LITEVISOR_TEST_PORT:-80} $$HOME\"\n"
                       "dbs:\n  - path: ${LITEVISOR_TEST_DIR}/a.db\n")
    p = run(litevisor_bin, "-config", str(cfgfile), env={"LITEVISOR_TEST_DIR": "/srv"})
    assert p.returncode == 0, p.stderr
    cfg = yaml.safe_load(p.stdout)
    # exec is printed as its words, "$HOME" inside '…' where nothing is expanded.
    assert cfg["exec"] == "app --port 80 '$HOME'"
    assert cfg["dbs"][0]["path"] == "/srv/a.db"

    p = run(litevisor_bin, "-config", str(cfgfile), "-no-expand-env",
            env={"LITEVISOR_TEST_DIR": "/srv"})
    assert p.returncode == 0, p.stderr
    cfg = yaml.safe_load(p.stdout)
    assert cfg["exec"] == "app --port ${LITEVISOR_TEST_PORT:-80} $$HOME"
    assert cfg["dbs"][0]["path"].endswith("/${LITEVISOR_TEST_DIR}/a.db")


@pytest.mark.parametrize("value", ["$LITEVISOR_TEST_UNSET", "~", ""])
def test_a_choice_or_duration_with_no_value_takes_its_default(litevisor_bin, tmp_path, value):
    # docs/config.md: a null value, or a plain one expanding to nothing, is the
    # default, as Litestream reads it (`level: ${LOG_LEVEL}` with LOG_LEVEL unset).
    # logging.level/type/stderr, a replica's type and validation-interval and
    # meta-path were refused (QA39 #1).
    cfgfile = tmp_path / "c.yml"
    cfgfile.write_text(f"logging:\n  level: {value}\n  type: {value}\n  stderr: {value}\n"
                       f"dbs:\n  - path: {tmp_path}/a.db\n    meta-path: {value}\n"
                       f"    replicas:\n      - url: file://{tmp_path}/r\n"
                       f"        type: {value}\n        validation-interval: {value}\n")
    p = run(litevisor_bin, "-config", str(cfgfile))
    assert p.returncode == 0, p.stderr
    cfg = yaml.safe_load(p.stdout)
    assert cfg["logging"]["level"] == "info" and cfg["logging"]["type"] == "text", cfg
    assert cfg["dbs"][0]["meta-path"] == f"{tmp_path}/.a.db-litevisor", cfg
    assert cfg["dbs"][0]["replicas"][0]["type"] == "file", cfg
    # a quoted "" is no null: an error, as in Litestream (yaml cannot parse it there)
    cfgfile.write_text('logging:\n  level: ""\ndbs:\n  - path: /srv/a.db\n')
    p = run(litevisor_bin, "-config", str(cfgfile))
    assert p.returncode == 100 and "logging.level" in p.stderr, p.stderr


def test_config_path_from_environment(litevisor_bin, tmp_path):
    a, b = tmp_path / "a.yml", tmp_path / "b.yml"
    a.write_text("addr: \":1111\"\n")
    b.write_text("addr: \":2222\"\n")
    p = run(litevisor_bin, env={"LITESTREAM_CONFIG": str(b)})
    assert p.returncode == 0, p.stderr
    assert 'addr: ":2222"' in p.stdout
    p = run(litevisor_bin, env={"LITESTREAM_CONFIG": str(b), "LITEVISOR_CONFIG": str(a)})
    assert 'addr: ":1111"' in p.stdout
    p = run(litevisor_bin, "-config", str(b), env={"LITEVISOR_CONFIG": str(a)})
    assert 'addr: ":2222"' in p.stdout


def test_missing_file_and_usage_errors(litevisor_bin, tmp_path):
    missing = tmp_path / "nope.yml"
    p = run(litevisor_bin, "-config", str(missing))
    assert p.returncode == 100
    assert p.stderr == (f"litevisor config: {missing}: cannot read the config file: "
                        "No such file or directory\n")
    p = run(litevisor_bin, "-config", str(missing), "extra")
    assert p.returncode == 100
    assert "unexpected argument" in p.stderr
    p = run(litevisor_bin, "-help")
    assert p.returncode == 0
    assert "-no-expand-env" in p.stdout


@pytest.mark.parametrize("text", ["", "# only a comment\n", "dbs:\n", "addr: :9090\n"])
def test_a_blank_config_is_refused_as_run_refuses_it(litevisor_bin, tmp_path, text):
    # `config` validates "exactly as run would": run refuses an empty file or a bare
    # "dbs:" (what a template renders when its data is missing), so config does too.
    cfg = tmp_path / "c.yml"
    cfg.write_text(text)
    for argv in (["-config", str(cfg)], None):
        p = run(litevisor_bin, *argv) if argv else subprocess.run(
            [litevisor_bin, "run", "-config", str(cfg), "--", "/bin/true"], capture_output=True,
            text=True, timeout=20)
        if text.startswith("addr"):
            assert p.returncode == 0, p.stderr
            continue
        assert p.returncode == 100, p.stderr
        assert 'is empty or its "dbs:" has no value' in p.stderr, p.stderr
    cfg.write_text("dbs: []\n")
    assert run(litevisor_bin, "-config", str(cfg)).returncode == 0


@pytest.mark.parametrize("section,key", [
    ("dbs:\n  - path: /srv/a.db\n    replicas:\n      - url: s3://b/app\n        ", "access-key-id"),
    ("dbs:\n  - path: /srv/a.db\n    replicas:\n      - url: s3://b/app\n        ", "secret-access-key"),
    ("dbs: []\nhealth:\n  ", "push-url"),
    ("dbs: []\nconsul:\n  addr: 127.0.0.1:8500\n  lock:\n    key: a\n  ", "token"),
])
def test_redacted_output_loaded_back_is_refused_not_used(litevisor_bin, tmp_path, section, key):
    # config prints secrets as "<redacted>"; loaded back as it is, that text would
    # become the secret (an S3 403 much later) or fail with a puzzling message.
    cfg = tmp_path / "c.yml"
    cfg.write_text(section + f'{key}: "<redacted>"\n')
    p = run(litevisor_bin, "-config", str(cfg))
    assert p.returncode == 100, p.stdout
    assert f'{key}: "<redacted>" is what `litevisor config` prints in place of a secret' in p.stderr
    cfg.write_text('dbs: []\nhealth:\n  probe-url: "http://<redacted>@127.0.0.1:8080/ping"\n')
    p = run(litevisor_bin, "-config", str(cfg))
    assert p.returncode == 100 and "health.probe-url" in p.stderr, p.stderr


# Each command that loads a config, as the QA report ran it.
LOADERS = {
    "config": [],
    "restore": ["-o", "{tmp}/out.db", "{tmp}/app.db"],
    "replicate": [],
    "run": ["--", "/bin/true"],
}


@pytest.mark.parametrize("where", ["config", "credential"])
@pytest.mark.parametrize("command", sorted(LOADERS))
def test_fifo_is_refused_not_waited_on(litevisor_bin, tmp_path, command, where):
    # open(2) of a FIFO waits for a writer, and run, replicate and restore load
    # the config with TERM already blocked: only SIGKILL ended them. Refused at
    # once now, naming the file and what it is (the timeout kills a hang).
    fifo = tmp_path / "x.fifo"
    os.mkfifo(fifo)
    cfgfile = tmp_path / "c.yml"
    cfgfile.write_text(f"dbs:\n  - path: {tmp_path}/app.db\n    replicas:\n"
                       f"      - url: s3://bkt/app\n        endpoint: http://127.0.0.1:9\n"
                       f"        access-key-id-file: {fifo}\n        secret-access-key: s\n")
    args = [a.format(tmp=tmp_path) for a in LOADERS[command]]
    target = fifo if where == "config" else cfgfile
    e = {k: v for k, v in os.environ.items() if not k.startswith(("LITEVISOR_", "LITESTREAM_"))}
    p = subprocess.run([litevisor_bin, command, "-config", str(target), *args],
                       capture_output=True, text=True, env=e, timeout=10)
    assert p.returncode == 100, p.stderr
    if where == "config":
        assert p.stderr == (f"litevisor {command}: {fifo}: cannot read the config file: "
                            "not a regular file but a FIFO (named pipe)\n")
    else:
        assert p.stderr == (f"litevisor {command}: {cfgfile}:6:29: "
                            "dbs[0].replicas[0].access-key-id-file: "
                            f"cannot read \"{fifo}\": not a regular file but a FIFO (named pipe)\n")


def test_a_fifo_as_the_shared_aws_credentials_file_is_not_waited_on(litevisor_bin, tmp_path):
    # ~/.aws/credentials is read on a replica's thread when nothing else gives
    # credentials: a FIFO there blocked the restore until SIGKILL.
    fifo = tmp_path / "creds.fifo"
    os.mkfifo(fifo)
    e = {k: v for k, v in os.environ.items()
         if not k.startswith(("LITEVISOR_", "LITESTREAM_", "AWS_"))}
    e["AWS_SHARED_CREDENTIALS_FILE"] = str(fifo)
    p = subprocess.run([litevisor_bin, "restore", "-o", str(tmp_path / "x.db"),
                        "s3://bkt.localhost:9/app"], capture_output=True, text=True, env=e,
                       timeout=20)
    assert "shared credentials file not read" in p.stderr and "FIFO" in p.stderr, p.stderr
    assert "no S3 credentials" in p.stderr, p.stderr


def test_devices_and_directories_are_refused_as_config_or_credential(litevisor_bin, tmp_path):
    for path, kind in (("/dev/null", "a character device"), (str(tmp_path), "a directory")):
        p = run(litevisor_bin, "-config", path)
        assert p.returncode == 100
        assert p.stderr == (f"litevisor config: {path}: cannot read the config file: "
                            f"not a regular file but {kind}\n")
        cfgfile = tmp_path / "c.yml"
        cfgfile.write_text(f"secret-access-key-file: {path}\n")
        p = run(litevisor_bin, "-config", str(cfgfile))
        assert p.returncode == 100
        assert p.stderr == (f"litevisor config: {cfgfile}:1:25: secret-access-key-file: "
                            f"cannot read \"{path}\": not a regular file but {kind}\n")


def test_nested_default_is_expanded_as_a_shell_does(litevisor_bin, tmp_path):
    # It used to end at the first "}": exit 0 and a path "<cwd>/$${LV_DIR/app.db}".
    cfgfile = tmp_path / "n.yml"
    cfgfile.write_text('dbs:\n  - path: "${LV_UNSET:-${LV_DIR}/app.db}"\n'
                       '  - path: "${LV_UNSET:-$LV_DIR/${LV_UNSET:-b}.db}"\n')
    p = run(litevisor_bin, "-config", str(cfgfile), env={"LV_DIR": str(tmp_path)}, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    cfg = yaml.safe_load(p.stdout)
    assert [d["path"] for d in cfg["dbs"]] == [f"{tmp_path}/app.db", f"{tmp_path}/b.db"]
    cfgfile.write_text('dbs:\n  - path: "${LV_UNSET:-${LV_DIR}/app.db"\n')
    p = run(litevisor_bin, "-config", str(cfgfile), env={"LV_DIR": str(tmp_path)})
    assert p.returncode == 100
    assert p.stderr == (f"litevisor config: {cfgfile}:2:11: dbs[0].path: unterminated \"${{\" "
                        "(write \"$$\" for a literal \"$\") in \"${LV_UNSET:-${LV_DIR}/app.db\"\n")


def test_docs_seed_topology_example_loads(litevisor_bin, tmp_path):
    """The seed-topology example in docs/config.md is a working config."""
    with open(os.path.join(TESTS, "..", "docs", "config.md")) as f:
        doc = f.read()
    example = doc[doc.index("## Example: the seed topology"):]
    example = example[example.index("```yaml\n") + 8:]
    example = example[:example.index("```")]
    for name in ("s3_key", "s3_secret"):
        (tmp_path / name).write_text("x\n")
    cfgfile = tmp_path / "seed.yml"
    cfgfile.write_text(example.replace("/secrets/", f"{tmp_path}/"))
    for node, own in (("node-105", "minio-105"), ("node-106", "minio-106")):
        p = run(litevisor_bin, "-config", str(cfgfile), env={"NODE_NAME": node})
        assert p.returncode == 0, p.stderr
        cfg = yaml.safe_load(p.stdout)
        for db in cfg["dbs"]:
            only = {r["name"] for r in db["replicas"] if r["restore-only"]}
            assert only == {own}
            s3 = [r for r in db["replicas"] if r["type"] == "s3"]
            assert all(r["access-key-id-file"] == f"{tmp_path}/s3_key" for r in s3)


def test_dollar_in_values_round_trips(litevisor_bin, tmp_path):
    """A literal "$" (written "$$", or coming from a variable's value) is printed as "$$",
    so the printed config loads back as the same config; with -no-expand-env values
    are printed as written and load back the same with -no-expand-env."""
    cfgfile = tmp_path / "d.yml"
    cfgfile.write_text(
        'exec: "app --home $$HOME"\n'
        "dbs:\n"
        "  - path: /tmp/a$$b.db\n"
        '    name: "n$$1"\n'
        "    replicas:\n"
        "      - url: file:///data${LITEVISOR_TEST_DIR}/r$$x\n"
        "      - url: s3://bkt/p$$q\n"
        "        endpoint: http://127.0.0.1:9000\n"
        "        access-key-id: k$$1\n"
        "        secret-access-key: s\n")
    env = {"LITEVISOR_TEST_DIR": "/srv/v$ar"}  # a variable's value with a "$" in it
    strip = lambda s: [l for l in s.splitlines() if not l.lstrip().startswith("#")]

    first = run(litevisor_bin, "-config", str(cfgfile), env=env)
    assert first.returncode == 0, first.stderr
    cfg = yaml.safe_load(first.stdout)
    assert cfg["exec"] == "app --home '$HOME'"
    assert cfg["dbs"][0]["path"] == "/tmp/a$$b.db"
    assert cfg["dbs"][0]["name"] == "n$$1"
    assert cfg["dbs"][0]["meta-path"] == "/tmp/.a$$b.db-litevisor"
    assert cfg["dbs"][0]["replicas"][0]["path"] == "/data/srv/v$$ar/r$$x"
    assert cfg["dbs"][0]["replicas"][1]["path"] == "p$$q"
    again = tmp_path / "effective.yml"
    again.write_text(put_secrets_back(first.stdout))
    second = run(litevisor_bin, "-config", str(again))  # no variable needed any more
    assert second.returncode == 0, second.stderr
    assert strip(second.stdout) == strip(first.stdout)

    raw = run(litevisor_bin, "-no-expand-env", "-config", str(cfgfile), env=env)
    assert raw.returncode == 0, raw.stderr
    assert "load this with -no-expand-env" in raw.stdout
    cfg = yaml.safe_load(raw.stdout)
    assert cfg["dbs"][0]["path"] == "/tmp/a$$b.db"
    # As Litestream (Go net/url) does, a file URL's directory has "{" and "}" escaped.
    assert cfg["dbs"][0]["replicas"][0]["path"] == "/data$%7BLITEVISOR_TEST_DIR%7D/r$$x"
    again.write_text(put_secrets_back(raw.stdout))
    raw2 = run(litevisor_bin, "-no-expand-env", "-config", str(again))
    assert raw2.returncode == 0, raw2.stderr
    assert strip(raw2.stdout) == strip(raw.stdout)


def test_printed_values_with_line_breaks_round_trip(litevisor_bin, tmp_path):
    """Values holding YAML line breaks (NEL, LS, PS, newline) or control characters
    print escaped and load back unchanged; a config file path or URL with a newline
    cannot break out of its comment line."""
    d = tmp_path / "we\nird"
    d.mkdir()
    cfgfile = d / "c.yml"
    cfgfile.write_text('exec: "a\\Nb\\Lc\\Pd\\ne\\x01f"\n'
                       'dbs:\n  - path: /tmp/x.db\n    replicas:\n'
                       '      - path: "/tmp/r\\nkey: 1"\n'
                       '      - url: "file:///tmp/s\\Lkey: 2"\n        name: u\n')
    first = run(litevisor_bin, "-config", str(cfgfile))
    assert first.returncode == 0, first.stderr
    cfg = yaml.safe_load(first.stdout)
    assert cfg["exec"] == "'a\u0085b\u2028c\u2029d' 'e\x01f'"  # its two words
    assert cfg["dbs"][0]["replicas"][0]["path"] == "/tmp/r\nkey: 1"
    assert "key" not in cfg["dbs"][0]["replicas"][0]
    # in the "# from url" comment the line separator is made harmless; the
    # directory is what Litestream (Go net/url) makes of the URL: escaped
    assert cfg["dbs"][0]["replicas"][1]["path"] == "/tmp/s%E2%80%A8key:%202"
    assert "key" not in cfg["dbs"][0]["replicas"][1]
    again = tmp_path / "effective.yml"
    again.write_text(first.stdout)
    second = run(litevisor_bin, "-config", str(again))
    assert second.returncode == 0, second.stderr
    assert yaml.safe_load(second.stdout)["exec"] == cfg["exec"]



def test_printed_exec_runs_the_same_argv(litevisor_bin, tmp_path):
    """exec is read as shell words with nothing expanded inside '…': the printed
    config must give the service the same argv ("$", quotes, backslashes, blanks,
    empty words), not a "$" turned into "$$"."""
    argv_json = "import json,sys; print(json.dumps(sys.argv[1:]))"
    orig = tmp_path / "orig.yml"
    orig.write_text("exec: >-\n"
                    f"  /usr/bin/python3 -c '{argv_json}' '$HOME' cost\\ $$5 \"a\\\"b\"\n"
                    "  'it'\\''s' '' back\\\\slash \"$$X ${LITEVISOR_TEST_V}\" '  sp  ' $${Y}\n")
    want = ["$HOME", "cost $5", 'a"b', "it's", "", "back\\slash", "$X v'a\"l$", "  sp  ", "${Y}"]
    env = {"LITEVISOR_TEST_V": "v'a\"l$"}

    def service_argv(cfgfile):
        e = {k: v for k, v in os.environ.items() if not k.startswith(("LITEVISOR_", "LITESTREAM_"))}
        e.update(env)
        p = subprocess.run([litevisor_bin, "run", "-config", str(cfgfile)], capture_output=True,
                           text=True, env=e, timeout=30)
        assert p.returncode == 0, p.stderr
        return json.loads(p.stdout)

    assert service_argv(orig) == want
    first = run(litevisor_bin, "-config", str(orig), env=env)
    assert first.returncode == 0, first.stderr
    effective = tmp_path / "effective.yml"
    effective.write_text(first.stdout)
    assert service_argv(effective) == want
    second = run(litevisor_bin, "-config", str(effective))
    assert second.stdout.splitlines()[1:] == first.stdout.splitlines()[1:]


# ---- a litestream.yml and Litestream's command lines, read as Litestream v0.3.13 reads them ----

def lv(binary, *args, env=None, cwd=None):
    e = {k: v for k, v in os.environ.items() if not k.startswith(("LITEVISOR_", "LITESTREAM_"))}
    e.update(env or {})
    return subprocess.run([binary, *args], capture_output=True, text=True, env=e, cwd=cwd,
                          timeout=60)


def test_db_path_argument_and_config_name_are_found_as_litestream_finds_them(litevisor_bin,
                                                                               tmp_path):
    """DB_PATH is made absolute as Litestream's expand() does: "~/" (QA57 D1) and a
    symlinked working directory as the shell has it ($PWD, as Go's os.Getwd). A path
    beats a database named like it: the name was matched first, in list order, and
    `restore -if-replica-exists` exited 0 restoring nothing from the wrong one (QA57
    D8). The config file's own name may start with "~/" too: the password file's home,
    whatever $HOME says, as Litestream's user.Current() (QA92 D2)."""
    import pwd
    import tempfile
    pw_home = pwd.getpwuid(os.getuid()).pw_dir
    under_home = pathlib.Path(tempfile.mkdtemp(dir=pw_home, prefix=".litevisor-test-"))
    try:
        _found_as_litestream_finds_them(litevisor_bin, tmp_path, under_home)
    finally:
        shutil.rmtree(under_home)


def _found_as_litestream_finds_them(litevisor_bin, tmp_path, under_home):
    real = tmp_path / "real"
    (real / "other").mkdir(parents=True)
    link = tmp_path / "link"
    link.symlink_to(real)
    (real / "c.yml").write_text(
        "dbs:\n"
        f"  - path: {real}/other/other.db\n    name: app.db\n"
        f"    replicas:\n      - url: file://{real}/rep-other\n        name: r-other\n"
        "  - path: app.db\n"
        f"    replicas:\n      - url: file://{real}/rep-app\n        name: r-app\n"
        f"  - path: {real}/third.db\n    name: third\n"
        f"    replicas:\n      - url: file://{real}/rep-third\n        name: r-third\n")
    home = {"HOME": str(tmp_path / "not-the-home")}
    tilde = "~/" + under_home.name
    (under_home / "c.yml").write_text((real / "c.yml").read_text().replace(
        "  - path: app.db\n", f"  - path: {tilde}/app.db\n"))
    for cwd, pwd, cfg, arg in ((real, real, "c.yml", "app.db"),
                               (real, real, f"{tilde}/c.yml", f"{tilde}/app.db"),
                               (link, link, f"{link}/c.yml", f"{link}/app.db")):
        p = lv(litevisor_bin, "generations", "-config", cfg, "-replica", "r-app", arg,
               env=dict(home, PWD=str(pwd)), cwd=cwd)
        assert p.returncode == 0, (cwd, cfg, arg, p.stderr)
    p = lv(litevisor_bin, "generations", "-replica", "r-app", f"{tilde}/app.db",
           env=dict(home, PWD=str(real), LITESTREAM_CONFIG=f"{tilde}/c.yml"), cwd=real)
    assert p.returncode == 0, p.stderr
    # the name still finds its database when no path is the argument
    p = lv(litevisor_bin, "generations", "-config", "c.yml", "-replica", "r-third", "third",
           env=dict(home, PWD=str(real)), cwd=real)
    assert p.returncode == 0, p.stderr


def test_a_tilde_without_home_is_the_password_files_home(litevisor_bin, tmp_path):
    """A service started by systemd or Nomad may have no $HOME: "~/" is then the
    password file's home for the user, as Litestream's user.Current() finds it; it was
    "cannot make an absolute path"."""
    import pwd
    home = pwd.getpwuid(os.getuid()).pw_dir
    cfgfile = tmp_path / "c.yml"
    cfgfile.write_text("dbs:\n  - path: ~/app.db\n")
    e = {k: v for k, v in os.environ.items()
         if k != "HOME" and not k.startswith(("LITEVISOR_", "LITESTREAM_"))}
    p = subprocess.run([litevisor_bin, "config", "-config", str(cfgfile)], capture_output=True,
                       text=True, env=e, timeout=30)
    assert p.returncode == 0, p.stderr
    assert yaml.safe_load(p.stdout)["dbs"][0]["path"] == os.path.join(home, "app.db")
    # and with one: still the password file's, as Litestream reads the same file (QA92 D2)
    p = run(litevisor_bin, "-config", str(cfgfile), env={"HOME": str(tmp_path)})
    assert yaml.safe_load(p.stdout)["dbs"][0]["path"] == os.path.join(home, "app.db"), p.stderr


def test_go_boolean_flag_spellings_are_accepted(litevisor_bin, tmp_path):
    """Flags are read as Go's flag package reads them: strconv.ParseBool's spellings
    (QA57 D2); anything else stays a usage error."""
    cfgfile = tmp_path / "c.yml"
    cfgfile.write_text("dbs:\n  - path: /srv/$X.db\n")
    for v, literal in (("t", True), ("T", True), ("TRUE", True), ("True", True), ("1", True),
                       ("f", False), ("F", False), ("FALSE", False), ("False", False)):
        p = run(litevisor_bin, "-config", str(cfgfile), f"-no-expand-env={v}", env={"X": "x"})
        assert p.returncode == 0, (v, p.stderr)
        assert ("/srv/$X.db" if literal else "/srv/x.db") in p.stdout, (v, p.stdout)
    p = run(litevisor_bin, "-config", str(cfgfile), "-no-expand-env=yes")
    assert p.returncode == 100 and 'invalid boolean "yes"' in p.stderr, p.stderr


def test_yaml_values_are_read_as_litestreams_yaml_reads_them(litevisor_bin, tmp_path):
    """yaml.v2's spellings: y/n booleans (QA57 D3), a leading-zero integer is octal
    (QA57 D7: 01750 was 1750 pages here and 1000 in Litestream), a type that the url
    contradicts gives way to its scheme (QA57 D6), a host shortcut keeps path-style
    against force-path-style: false (QA57 D4), and blanks an env value brings around
    a plain value are dropped (QA57 D9: "/data/app.db " was waited for in silence)."""
    cfgfile = tmp_path / "c.yml"
    cfgfile.write_text("dbs:\n  - path: $DB_PATH\n    min-checkpoint-page-count: 01750\n"
                       "    max-checkpoint-page-count: 0x2710\n"
                       "    replicas:\n"
                       "      - url: s3://bkt.localhost:9000/app\n        force-path-style: n\n"
                       "        skip-verify: y\n        access-key-id: $KEY\n"
                       "        secret-access-key: $SECRET\n"
                       "      - url: file:///backups/app\n        type: s3\n")
    p = run(litevisor_bin, "-config", str(cfgfile),
            env={"DB_PATH": "/data/app.db \r\n", "KEY": "AKIDEXAMPLE\n", "SECRET": "s3cr3t"})
    assert p.returncode == 0, p.stderr
    cfg = yaml.safe_load(p.stdout)
    db = cfg["dbs"][0]
    assert db["path"] == "/data/app.db"
    assert db["min-checkpoint-page-count"] == 1000 and db["max-checkpoint-page-count"] == 10000
    s3, f = db["replicas"]
    assert s3["force-path-style"] is True and s3["skip-verify"] is True, s3
    assert f["type"] == "file" and f["path"] == "/backups/app", f


def test_a_quoted_number_with_a_leading_zero_is_refused(litevisor_bin, tmp_path):
    """A plain 010 is octal, as yaml.v2 reads it; a quoted "010" was read as 8 too,
    silently, where Litestream refuses any quoted number. A quoted decimal is still
    taken; a quoted leading zero is refused with both readings named."""
    cfgfile = tmp_path / "c.yml"
    for value, ok in (('"010"', False), ("'-010'", False), ('"${PAGES}"', False),
                      ('"0_10"', False), ('"_010"', False), ('"09"', False),
                      ('"1000"', True), ("010", True), ('"0"', True), ('"0x10"', True)):
        cfgfile.write_text(f"dbs:\n  - path: /srv/a.db\n    min-checkpoint-page-count: {value}\n"
                           "    replicas:\n      - url: file:///backups/a\n")
        p = run(litevisor_bin, "-config", str(cfgfile), env={"PAGES": "010"})
        if ok:
            assert p.returncode == 0 or "out of range" in p.stderr, (value, p.stderr)
            continue
        assert p.returncode == 100, (value, p.stdout)
        assert "min-checkpoint-page-count" in p.stderr and "leading zero" in p.stderr, p.stderr
        assert "Litestream reads it as" in p.stderr, p.stderr


def test_an_empty_exec_flag_leaves_the_configs_exec(litevisor_bin, tmp_path):
    """`replicate -exec "$APP_CMD"` with APP_CMD unset runs the config's exec, as in
    Litestream; it was a usage error, "exec: empty command" (QA57 D5)."""
    cfgfile = tmp_path / "c.yml"
    cfgfile.write_text("exec: sh -c 'exit 7'\n"
                       f"dbs:\n  - path: {tmp_path}/a.db\n"
                       f"    replicas:\n      - url: file://{tmp_path}/rep\n")
    p = lv(litevisor_bin, "replicate", "-exec", "", "-config", str(cfgfile))
    assert p.returncode == 7, p.stderr


def test_run_names_the_unset_variable_an_empty_exec_came_from(litevisor_bin, tmp_path):
    """`exec: $APP_CMD` with APP_CMD unset (a Nomad env block that did not render): run
    said "no command: give one after -- or set exec", though exec was set; every other
    value names the variable (QA110 O3)."""
    cfgfile = tmp_path / "c.yml"
    cfgfile.write_text("exec: $QA110_UNSET_CMD\ndbs: []\n")
    p = lv(litevisor_bin, "run", "-config", str(cfgfile))
    assert p.returncode == 100, p.stderr
    assert "exec: empty: environment variable QA110_UNSET_CMD is not set" in p.stderr, p.stderr


def test_values_an_env_leaves_blank_count_as_none(litevisor_bin, tmp_path):
    """As Litestream reads them after its whole-file expansion: an exec of blanks only
    ("$APP_CMD" from a CRLF env file) is no exec, and `path:` or `bucket:` beside a url
    with no value is none: both were refused (QA61 #3, #4). A host shortcut's region
    holds when `region:` has no value."""
    cfgfile = tmp_path / "c.yml"
    cfgfile.write_text("exec: $APP_CMD\n"
                       "dbs:\n  - path: /srv/a.db\n    replicas:\n"
                       "      - url: file:///backups/a\n        path: $UNSET_PATH\n"
                       "      - url: s3://bkt.s3.us-west-000.backblazeb2.com/a\n"
                       "        bucket: $UNSET_BUCKET\n        region: $UNSET_REGION\n")
    p = run(litevisor_bin, "-config", str(cfgfile), env={"APP_CMD": " \r\n"})
    assert p.returncode == 0, p.stderr
    cfg = yaml.safe_load(p.stdout)
    assert not cfg.get("exec"), cfg
    f, s3 = cfg["dbs"][0]["replicas"]
    assert f["path"] == "/backups/a", f
    assert s3["bucket"] == "bkt" and s3["region"] == "us-west-000", s3


@pytest.mark.parametrize("command", [["config"], ["databases"], ["run", "--", "TOUCH", "STARTED"],
                                     ["replicate", "-exec", "TOUCH STARTED"],
                                     ["restore", "-o", "OUT", "DB"], ["generations", "DB"],
                                     ["snapshots", "DB"], ["wal", "DB"]])
@pytest.mark.parametrize("how", ["-config", "LITEVISOR_CONFIG", "LITESTREAM_CONFIG"])
def test_an_empty_config_name_is_a_usage_error(litevisor_bin, tmp_path, command, how):
    """A wrapper's `-config "$CFG"` with CFG unset, or LITEVISOR_CONFIG rendered empty,
    fell back to "no config": `run` started the service with no restore and nothing
    replicated, exit 0 (QA78 D1). Each command that reads a config refuses it, naming
    the flag or the variable; a set variable is not passed over for the next one."""
    sub = {"TOUCH": "/usr/bin/touch", "STARTED": str(tmp_path / "started"),
           "TOUCH STARTED": f"/usr/bin/touch {tmp_path}/started",
           "OUT": str(tmp_path / "out.db"), "DB": str(tmp_path / "a.db")}
    args = [sub.get(a, a) for a in command]
    other = tmp_path / "other.yml"
    other.write_text(f"dbs:\n  - path: {tmp_path}/a.db\n    replicas:\n"
                     f"      - url: file://{tmp_path}/r\n")
    if how == "-config":
        args[1:1] = ["-config", ""]
        env, want = {"LITEVISOR_CONFIG": str(other)}, "-config: a config file is required (the path is empty)"
    else:
        env = {how: ""}
        if how == "LITEVISOR_CONFIG":
            env["LITESTREAM_CONFIG"] = str(other)
        want = f"${how} is set but empty: name the config file in it, or unset it"
    p = lv(litevisor_bin, *args, env=env)
    assert p.returncode == 100, (p.returncode, p.stderr)
    assert f"litevisor {command[0]}: {want}\n" in p.stderr, p.stderr
    assert not (tmp_path / "started").exists()



def test_replicate_takes_an_empty_config_beside_a_database_and_url_for_none(litevisor_bin,
                                                                          tmp_path):
    """`replicate -config "" DB_PATH URL` was refused (100, "give either -config or
    DB_PATH REPLICA_URL"), where Litestream v0.3.13, and our restore and listings, take
    an empty -config beside a URL for no config (QA135 D1). It replicates."""
    db, rep = tmp_path / "app.db", tmp_path / "rep"
    c = sqlite3.connect(db)
    c.execute("PRAGMA journal_mode=WAL")
    c.execute("CREATE TABLE t(x)")
    c.commit()
    c.close()
    p = subprocess.Popen([litevisor_bin, "replicate", "-config", "", str(db), f"file://{rep}"],
                         stderr=subprocess.PIPE, text=True)
    try:
        end = time.monotonic() + 20
        while not list(rep.glob("generations/*/snapshots/*")) and time.monotonic() < end:
            assert p.poll() is None, p.stderr.read()
            time.sleep(0.05)
    finally:
        p.terminate()
        err = p.communicate(timeout=30)[1]
    assert p.returncode == 0, err
    assert list(rep.glob("generations/*/snapshots/*")), err


@pytest.mark.parametrize("where", ["default", "litestream-default", "-config"])
def test_a_config_path_that_is_a_symlink_to_nowhere_is_refused(litevisor_bin, tmp_path, where):
    """/etc/litevisor.yml linked to a volume not mounted yet was taken for "no config":
    `run -- CMD` started the service with no restore and nothing replicated, exit 0
    (QA89 D1), or /etc/litestream.yml was read instead; so was a dangling
    /etc/litestream.yml with no /etc/litevisor.yml (QA90 D2). A link there shows a
    config was meant: it is refused, naming where it points. The default paths are
    tried in a mount namespace of the test's own, over a copy of /etc."""
    started = tmp_path / "started"
    link_to = "/nonexistent-volume/litevisor.yml"
    if where == "-config":
        (tmp_path / "c.yml").symlink_to(link_to)
        p = lv(litevisor_bin, "run", "-config", str(tmp_path / "c.yml"), "--",
               "/usr/bin/touch", str(started))
        rc, err = p.returncode, p.stderr
    else:
        etc = tmp_path / "etc"
        subprocess.run(["cp", "-a", "/etc", str(etc)], capture_output=True, timeout=60)
        for name in ("litevisor.yml", "litestream.yml"):
            (etc / name).unlink(missing_ok=True)
        if where == "default":
            (etc / "litevisor.yml").symlink_to(link_to)
            (etc / "litestream.yml").write_text(f"dbs:\n  - path: {tmp_path}/a.db\n"
                                                f"    replicas:\n      - url: file://{tmp_path}/r\n")
        else:
            (etc / "litestream.yml").symlink_to(link_to)
        script = (f'mount --bind "{etc}" /etc || exit 99; '
                  f'"{litevisor_bin}" run -- /usr/bin/touch "{started}"')
        p = lv("unshare", "-rm", "sh", "-c", script)
        if p.returncode == 99 or "unshare" in p.stderr:
            pytest.skip(f"cannot make a mount namespace here: {p.stderr.strip()}")
        rc, err = p.returncode, p.stderr
    assert rc == 100, err
    assert f"a symbolic link to {link_to}, which does not exist" in err, err
    assert "nor is there" not in err, err
    assert not started.exists()


@pytest.mark.parametrize("exec_,why", [('"sh -c \\"echo hi"', "unterminated double quote"),
                                       ("\"sh -c 'echo hi\"", "unterminated single quote"),
                                       ('"echo hi \\\\"', "trailing backslash")])
@pytest.mark.parametrize("command", [["config"], ["run"], ["replicate"]])
def test_an_exec_run_cannot_split_is_refused_at_load(litevisor_bin, tmp_path, exec_, why, command):
    """`config` passed an exec that `run` then refused, and run's message had no line
    or column (QA78 D2): the load splits it once, so each command names its place."""
    cfg = tmp_path / "c.yml"
    cfg.write_text(f"exec: {exec_}\ndbs:\n  - path: {tmp_path}/a.db\n    replicas:\n"
                   f"      - url: file://{tmp_path}/r\n")
    p = lv(litevisor_bin, *command, "-config", str(cfg))
    assert p.returncode == 100, p.stderr
    assert p.stderr == f"litevisor {command[0]}: {cfg}:1:7: exec: {why}\n"


def test_consul_cacert_from_the_environment_must_be_readable(litevisor_bin, tmp_path):
    """consul.ca-file is checked at load; its default, $CONSUL_CACERT, was not, so a typo
    there passed `config` and failed every request at run (QA78 D4). It counts only when
    Consul is used (a lock or a service) and the key is unset."""
    cfg = tmp_path / "c.yml"
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    missing = tmp_path / "no-ca.pem"
    cfg.write_text("consul:\n  lock: {key: app}\ndbs: []\n")
    p = run(litevisor_bin, "-config", str(cfg), env={"CONSUL_CACERT": str(missing)})
    assert p.returncode == 100, p.stderr
    assert p.stderr == (f"litevisor config: {cfg}:2:3: consul.ca-file ($CONSUL_CACERT): cannot read "
                        f"\"{missing}\": No such file or directory\n")
    assert run(litevisor_bin, "-config", str(cfg), env={"CONSUL_CACERT": str(ca)}).returncode == 0
    cfg.write_text(f"consul:\n  ca-file: {ca}\n  lock: {{key: app}}\ndbs: []\n")
    assert run(litevisor_bin, "-config", str(cfg), env={"CONSUL_CACERT": str(missing)}).returncode == 0
    cfg.write_text("consul:\n  timeout: 2s\ndbs: []\n")
    assert run(litevisor_bin, "-config", str(cfg), env={"CONSUL_CACERT": str(missing)}).returncode == 0


def test_the_consul_defaults_read_at_start_are_said_in_the_effective_config(litevisor_bin,
                                                                           tmp_path):
    """`config` prints every default, but consul.addr and consul.token left unset printed
    nothing (QA154 O3): they are read from the environment at start, so a comment says
    where from, and the output still loads as it was."""
    cfg = tmp_path / "c.yml"
    cfg.write_text("consul:\n  lock: {key: app}\ndbs: []\n")
    p = run(litevisor_bin, "-config", str(cfg))
    assert p.returncode == 0, p.stderr
    assert "  # addr: $CONSUL_HTTP_ADDR, else 127.0.0.1:8500\n" in p.stdout, p.stdout
    assert "  # token: $CONSUL_HTTP_TOKEN or $CONSUL_HTTP_TOKEN_FILE, else none\n" in p.stdout
    out = tmp_path / "eff.yml"
    out.write_text(p.stdout)
    assert run(litevisor_bin, "-config", str(out)).stdout == p.stdout.replace(str(cfg), str(out))
    cfg.write_text("consul:\n  addr: 127.0.0.1:9\n  token: t\n  lock: {key: app}\ndbs: []\n")
    p = run(litevisor_bin, "-config", str(cfg))
    assert "# addr:" not in p.stdout and "# token:" not in p.stdout, p.stdout


@pytest.mark.parametrize("where", ["inline", "file", "top-inline", "top-file"])
def test_an_s3_credential_of_more_than_one_line_is_refused_at_load(litevisor_bin, tmp_path, where):
    """A key file rendered with a blank line after the key (one trailing newline is
    dropped, not two) or an inline value with a line break: accepted at load, and every
    request then failed with a bare HTTP 400 or SignatureDoesNotMatch, exit 111 at each
    start (QA110 O5). Refused at load, as consul.token is; an empty file is still taken
    (it may be filled a moment after the start)."""
    key = tmp_path / "akid"
    key.write_text("AKIDQA\n\n")
    value = (f"access-key-id-file: {key}" if where.endswith("file")
             else 'access-key-id: "AKIDQA\\n"')
    cfg = tmp_path / "c.yml"
    # the top-level keys (Litestream's) were checked before they reach the replicas (QA111 D5)
    top = f"{value}\nsecret-access-key: s\n" if where.startswith("top") else ""
    mine = "" if top else f"        {value}\n        secret-access-key: s\n"
    cfg.write_text(f"{top}dbs:\n  - path: {tmp_path}/a.db\n    replicas:\n      - url: s3://b/x\n"
                   f"        endpoint: http://127.0.0.1:9\n{mine}")
    p = run(litevisor_bin, "-config", str(cfg))
    assert p.returncode == 100, p.stderr
    assert ("more than one line" if where.endswith("file") else "contains a line break") \
        in p.stderr, p.stderr
    key.write_text("")
    cfg.write_text(cfg.read_text().replace(value, f"access-key-id-file: {key}"))
    assert run(litevisor_bin, "-config", str(cfg)).returncode == 0


@pytest.mark.parametrize("content", [b"", b"not a certificate\n", b"0\x82\x01\x0a\x02\x82",
                                     b"-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n"])
@pytest.mark.parametrize("where", ["replica", "consul"])
def test_a_ca_file_without_a_pem_certificate_is_refused_at_load(litevisor_bin, tmp_path, content,
                                                                  where):
    """A readable ca-file that holds no PEM certificate (a DER file, the key named by
    mistake, an empty file) passed the load check, and every request failed at run:
    exit 111, "try again", at every start (QA110 D2). It is refused at load."""
    ca = tmp_path / "ca.crt"
    ca.write_bytes(content)
    cfg = tmp_path / "c.yml"
    if where == "replica":
        cfg.write_text(f"dbs:\n  - path: {tmp_path}/a.db\n    replicas:\n      - url: s3://b/x\n"
                       f"        endpoint: https://127.0.0.1:9\n        access-key-id: k\n"
                       f"        secret-access-key: s\n        ca-file: {ca}\n")
    else:
        cfg.write_text(f"consul:\n  ca-file: {ca}\n  lock: {{key: app}}\ndbs: []\n")
    p = run(litevisor_bin, "-config", str(cfg))
    assert p.returncode == 100, p.stderr
    assert "ca-file: " in p.stderr and "holds no PEM certificate" in p.stderr, p.stderr
    # the old "X509 CERTIFICATE" form, which OpenSSL still reads, is taken (QA111 O4)
    ca.write_bytes(b"-----BEGIN X509 CERTIFICATE-----\nMIIB\n-----END X509 CERTIFICATE-----\n")
    assert run(litevisor_bin, "-config", str(cfg)).returncode == 0


@pytest.mark.parametrize("addr", ["127.0.0.1:9090", "localhost:0", "\"[::1]:9090\"", "\"::1:9090\"",
                                  "\":9090\"", "app.service.consul.:9090", "my_app:9090",
                                  "\"[fe80::1%lo]:9090\""])
def test_addr_hosts_that_can_be_listened_on_load(litevisor_bin, tmp_path, addr):
    """The host check that refuses "a b" and "1.2.3.4.5" (QA78 D11) takes every form run
    can listen on: IPv4, IPv6 (bracketed, bare, with a zone), DNS names, every interface."""
    cfg = tmp_path / "c.yml"
    cfg.write_text(f"addr: {addr}\ndbs: []\n")
    p = run(litevisor_bin, "-config", str(cfg))
    assert p.returncode == 0, p.stderr


@pytest.mark.parametrize("name,what", [("PATH", "where it finds the programs it runs"),
                                       ("HOME", "its home directory"),
                                       ("LD_PRELOAD", "the dynamic loader's settings"),
                                       ("LD_LIBRARY_PATH", "the dynamic loader's settings")])
def test_a_db_env_the_service_needs_is_refused(litevisor_bin, tmp_path, name, what):
    """`env: PATH` replaced the service's PATH with the database's path: every program
    it ran by name was "not found", with no word of the cause (QA78 D8)."""
    cfg = tmp_path / "c.yml"
    cfg.write_text(f"dbs:\n  - path: {tmp_path}/a.db\n    env: {name}\n")
    p = run(litevisor_bin, "-config", str(cfg))
    assert p.returncode == 100, p.stderr
    assert p.stderr == (f"litevisor config: {cfg}:3:10: dbs[0].env: \"{name}\" is {what}, which "
                        "the service needs: the database's path would replace it; give another "
                        "name (the default is LITEVISOR_DB_<NAME>)\n")
    cfg.write_text(f"dbs:\n  - path: {tmp_path}/a.db\n    env: APP_{name}\n")
    assert run(litevisor_bin, "-config", str(cfg)).returncode == 0


def test_max_backlog_zero_is_no_cap_and_documented_so(litevisor_bin, tmp_path):
    """`max-backlog: 0` loads and the engine then keeps no cap at all, which the docs did
    not say: "a cap of 0" reads as the opposite (QA78 D9). Like the page counts' 0, it
    is "off", and docs/config.md's row says so."""
    cfg = tmp_path / "c.yml"
    cfg.write_text(f"dbs:\n  - path: {tmp_path}/a.db\n    max-backlog: 0\n")
    p = run(litevisor_bin, "-config", str(cfg))
    assert p.returncode == 0, p.stderr
    assert yaml.safe_load(p.stdout)["dbs"][0]["max-backlog"] == 0, p.stdout
    with open(os.path.join(TESTS, "..", "docs", "config.md")) as f:
        row = next(line for line in f if line.startswith("| `max-backlog`"))
    assert "`0` means no cap" in row, row


def test_the_size_unit_hint_lists_exactly_the_units_accepted(litevisor_bin, tmp_path):
    """The hint for a bad unit listed B, KiB, MiB, GiB, KB, MB, GB, while K, M, G (the
    docs' own), kB, T, TiB and TB were accepted too (QA78 observation)."""
    cfg = tmp_path / "c.yml"
    cfg.write_text(f"dbs:\n  - path: {tmp_path}/a.db\n    max-backlog: 10kb\n")
    p = run(litevisor_bin, "-config", str(cfg))
    assert p.returncode == 100, p.stderr
    units = p.stderr.rsplit("(use ", 1)[1].rstrip(")\n").split(", ")
    assert set(units) >= {"B", "K", "KiB", "KB", "kB", "M", "MiB", "MB", "G", "GiB", "GB", "T",
                          "TiB", "TB"}, units
    for unit in units:
        cfg.write_text(f"dbs:\n  - path: {tmp_path}/a.db\n    max-backlog: 2{unit}\n")
        p = run(litevisor_bin, "-config", str(cfg))
        assert p.returncode == 0, (unit, p.stderr)


def config_with_bytes(litevisor_bin, cfg, **values):
    """`litevisor config -config cfg` with the variables values (bytes) set: (exit code,
    stderr as text)."""
    env = {k: v for k, v in os.environb.items()
           if not k.startswith((b"LITEVISOR_", b"LITESTREAM_"))}
    env.update({k.encode(): v for k, v in values.items()})
    p = subprocess.run([litevisor_bin, "config", "-config", str(cfg)], capture_output=True,
                       env=env, timeout=30)
    return p.returncode, p.stderr.decode(errors="replace")


def test_names_that_differ_only_in_bytes_that_are_not_utf8_are_refused(litevisor_bin, tmp_path):
    """Logs, /healthz and /metrics show a byte that is not UTF-8 as U+FFFD: two databases
    whose file names differed only there were one in the logs and twice one series in
    /metrics, which Prometheus refuses whole (QA93 D2). Refused at load, saying how to
    tell them apart: a name; the paths alone still collide in Litestream's series."""
    cfg = tmp_path / "c.yml"
    cfg.write_text(f"dbs:\n  - path: {tmp_path}/${{A}}.db\n    env: A_DB\n"
                   f"  - path: {tmp_path}/${{E}}.db\n    env: E_DB\n")
    rc, err = config_with_bytes(litevisor_bin, cfg, A=b"\xe9", E=b"\xe8")
    assert rc == 100, err
    assert ("dbs[1].name: shows as the same name as dbs[0] (line 2) in logs, /healthz and "
            "/metrics, \ufffd.db: bytes that are not UTF-8 all read as U+FFFD; give each "
            'database its own "name"') in err, err
    cfg.write_text(cfg.read_text().replace("env: A_DB", "env: A_DB\n    name: acute")
                   .replace("env: E_DB", "env: E_DB\n    name: grave"))
    rc, err = config_with_bytes(litevisor_bin, cfg, A=b"\xe9", E=b"\xe8")
    assert rc == 100 and "dbs[1].path: shows as the same path as dbs[0]" in err, err
    assert "rename one of the files" in err
    assert config_with_bytes(litevisor_bin, cfg, A=b"\xe9", E=b"e")[0] == 0


def test_replica_names_that_differ_only_in_bytes_that_are_not_utf8_are_refused(litevisor_bin,
                                                                              tmp_path):
    """The same for two replicas of one database named from variables (QA94 D2)."""
    cfg = tmp_path / "c.yml"
    cfg.write_text(f"dbs:\n  - path: {tmp_path}/app.db\n    replicas:\n"
                   f"      - {{ url: 'file://{tmp_path}/r1', name: \"r${{R1}}\" }}\n"
                   f"      - {{ url: 'file://{tmp_path}/r2', name: \"r${{R2}}\" }}\n")
    rc, err = config_with_bytes(litevisor_bin, cfg, R1=b"\xe9", R2=b"\xe8")
    assert rc == 100, err
    assert ("dbs[0].replicas[1].name: shows as the same replica name as dbs[0].replicas[0] "
            "(line 4) in logs, /healthz and /metrics") in err, err
    assert config_with_bytes(litevisor_bin, cfg, R1=b"\xe9", R2=b"e")[0] == 0
