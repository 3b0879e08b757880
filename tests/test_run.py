"""`litevisor run`: the supervisor, tested on the real binary with real processes.

Exit codes, signal forwarding, zombie reaping (as PID 1 in a PID namespace and
as a child subreaper), SIGKILL escalation, exec failures, and the HTTP
endpoints (/livez /readyz /healthz /metrics) checked with curl.
"""
import datetime
import json
import os
import pathlib
import re
import shutil
import shlex
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time

import pytest

from conftest import faulty_env, free_port, kuma_stand_in
from test_replicate import bring_back, take_away

TOOLS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tools")
SERVICE = [sys.executable if os.path.basename(sys.executable).startswith("python") else "/usr/bin/python3",
           os.path.join(TOOLS, "service.py")]
FORWARDED = ["HUP", "QUIT", "USR1", "USR2", "WINCH", "CONT"]


def ends_with_stop(lines, before, stop="TERM"):
    """The service recorded before, then the stop signal. litevisor sends a CONT right
    after a stop signal (for a stopped service): a service that records CONT may show it
    just before or after the stop signal, or not at all if it exited first."""
    return lines in (before + [stop], before + [stop, "CONT"], before + ["CONT", stop])


def poll(fn, timeout=10.0, interval=0.02, log=None):
    """Call fn until it returns something truthy; fail after timeout, showing the
    file `log` if given."""
    end = time.monotonic() + timeout
    while True:
        v = fn()
        if v:
            return v
        if time.monotonic() > end:
            shown = f"\n{log.read_text()}" if log else ""
            raise AssertionError(f"timed out waiting for {getattr(fn, '__name__', fn)}{shown}")
        time.sleep(interval)


def read_lines(path):
    try:
        with open(path) as f:
            return [l.strip() for l in f if l.strip()]
    except FileNotFoundError:
        return []


def proc_stat(pid):
    """(state, ppid) of a process, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            s = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    rest = s[s.rindex(")") + 2:].split()
    return rest[0], int(rest[1])


def zombies_of(ppid):
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            st = proc_stat(int(d))
            if st and st[1] == ppid and st[0] == "Z":
                out.append(int(d))
    return out


def curl(url, timeout=5):
    """(status, content-type, body) fetched with the curl CLI."""
    p = subprocess.run(["curl", "-s", "-m", str(timeout), "-D", "-", url], capture_output=True)
    assert p.returncode == 0, f"curl {url} failed: {p.stderr}"
    head, _, body = p.stdout.decode().partition("\r\n\r\n")
    lines = head.split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, _, v in (l.partition(":") for l in lines[1:])}
    return status, headers.get("content-type", ""), body


class Background:
    """A litevisor process in the background; its stdout and stderr go to a file."""

    def __init__(self, cmd, log_path, env, cwd=None, own_group=False):
        self.log_path = log_path
        self.log = open(self.log_path, "w")
        # own_group: its own process group, whose parent (pytest) is in another of the same
        # session: never orphaned, as a shell's job is not, whatever pytest's group is
        self.p = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                  process_group=0 if own_group else None)

    @property
    def pid(self):
        return self.p.pid

    def wait(self, timeout=20):
        try:
            return self.p.wait(timeout)
        finally:
            self.log.close()

    def stderr(self):
        return self.log_path.read_text()

    def kill(self):
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait()
        self.log.close()


class Run(Background):
    """litevisor run, started in the background."""

    def __init__(self, binary, tmp, args, config=None, env=None, wrap=None, own_group=False):
        self.tmp = tmp
        cmd = [binary, "run"]
        if config is not None:
            cfg = tmp / "litevisor.yml"
            cfg.write_text(config)
            cmd += ["-config", str(cfg)]
        cmd += ["--"] + args
        if wrap:
            cmd = wrap + cmd
        e = dict(os.environ)
        e.pop("LITEVISOR_CONFIG", None)
        e.pop("LITESTREAM_CONFIG", None)
        e.update(env or {})
        super().__init__(cmd, tmp / "litevisor.log", e, own_group=own_group)


@pytest.fixture
def runs():
    started = []
    yield started
    for r in started:
        r.kill()


def start(runs, *a, **kw):
    r = Run(*a, **kw)
    runs.append(r)
    return r


# ---------------------------------------------------------------- exit codes

def test_closed_stdio_is_held_by_dev_null(litevisor_bin, tmp_path):
    """Started with stdout and stderr closed, litevisor's signalfd and eventfd took
    descriptors 1 and 2 and its log lines were written into them (QA38); a file opened
    there would have taken them instead. /dev/null holds them now; the service gets one it
    can write to (litevisor's own is read-only, so its output is reported lost)."""
    out, svc = tmp_path / "fds", tmp_path / "svc.py"
    svc.write_text("import os, sys\nprint('the service may print', flush=True)\n"
                   "os.write(2, b'and write to stderr')\n"
                   "os.write(0, b'and even to stdin, as under catatonit')\n"
                   "open(sys.argv[1], 'w').write("
                   "' '.join(os.readlink(f'/proc/self/fd/{i}') for i in range(3)))\n")
    p = subprocess.run(["sh", "-c", 'exec "$0" run -- /usr/bin/python3 "$1" "$2" <&- 1>&- 2>&-',
                        litevisor_bin, str(svc), str(out)], capture_output=True, text=True,
                       timeout=20, env={"PATH": os.environ["PATH"]})
    assert p.returncode == 0, p.stderr
    assert out.read_text().split() == ["/dev/null"] * 3, out.read_text()


def test_closed_stdio_without_dev_null_stays_closed_for_the_service(litevisor_bin, tmp_path):
    """Where no /dev/null exists (a bare chroot, /dev not mounted) litevisor holds a
    closed descriptor with "/"; the service got that directory as its stdout and a python
    one could not start (QA45 #5). It gets the closed descriptor it was started with."""
    out, svc = tmp_path / "fds", tmp_path / "svc.py"
    svc.write_text("import os, sys\nprint('printed nowhere')\n"
                   "fds = ' '.join(str(os.path.exists(f'/proc/self/fd/{i}')) for i in range(3))\n"
                   "open(sys.argv[1], 'w').write(fds)\n")
    script = ('mount -t tmpfs tmpfs /dev || exit 99; '
              'exec "$0" run -- /usr/bin/python3 "$1" "$2" <&- 1>&- 2>"$3"')
    p = subprocess.run(["unshare", "-rm", "sh", "-c", script, litevisor_bin, str(svc), str(out),
                        str(tmp_path / "err")], capture_output=True, text=True, timeout=30,
                       env={"PATH": os.environ["PATH"]})
    if p.returncode == 99 or "unshare" in p.stderr:
        pytest.skip(f"cannot mount a tmpfs here: {p.stderr.strip()}")
    assert p.returncode == 0, (p.stderr, (tmp_path / "err").read_text())
    assert out.read_text().split() == ["False", "False", "True"], out.read_text()


@pytest.mark.parametrize("code", [0, 1, 42, 255])
def test_exit_code_propagates(litevisor_bin, tmp_path, code):
    p = subprocess.run([litevisor_bin, "run", "--", "sh", "-c", f"exit {code}"],
                       capture_output=True, text=True, timeout=20, env={"PATH": os.environ["PATH"]})
    assert p.returncode == code, p.stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL, signal.SIGSEGV, signal.SIGUSR1])
def test_death_by_signal_is_128_plus_signal(litevisor_bin, sig):
    p = subprocess.run([litevisor_bin, "run", "--", "sh", "-c", f"kill -{sig.name[3:]} $$"],
                       capture_output=True, text=True, timeout=20, env={"PATH": os.environ["PATH"]})
    assert p.returncode == 128 + sig, p.stderr


def test_exec_from_config_is_split_like_shell_words(litevisor_bin, tmp_path, runs):
    out = tmp_path / "argv.json"
    script = "import json,sys; json.dump(sys.argv[1:], open(sys.argv[1], 'w')); sys.exit(7)"
    cfg = f"exec: {SERVICE[0]} -c \"{script}\" {out} 'two words' \"a\\\\\\\"b\"\n"
    cfgf = tmp_path / "c.yml"
    cfgf.write_text(cfg)
    p = subprocess.run([litevisor_bin, "run", "-config", str(cfgf)], capture_output=True,
                       text=True, timeout=20)
    assert p.returncode == 7, p.stderr
    assert json.load(open(out)) == [str(out), "two words", 'a\\"b']


@pytest.mark.parametrize("text", ["", "# litevisor.yml\n", "addr: 127.0.0.1:9\ndbs:\n"])
def test_an_empty_config_never_starts_the_service_unrestored(litevisor_bin, tmp_path, text):
    """What a Nomad template renders when its data is missing ({{ with nomadVar }}
    around the whole file): an empty file, or a dbs: with no value. run started
    the service with no restore at all, on whatever database was there."""
    marker = tmp_path / "started"
    cfg = tmp_path / "lv.yml"
    cfg.write_text(text)
    p = subprocess.run([litevisor_bin, "run", "-config", str(cfg), "--", "touch", str(marker)],
                       capture_output=True, text=True, timeout=20)
    assert p.returncode == 100, p.stderr
    assert "the service would start without its restore" in p.stderr, p.stderr
    assert not marker.exists()
    cfg.write_text("dbs: []\n")  # said on purpose: supervision only
    p = subprocess.run([litevisor_bin, "run", "-config", str(cfg), "--", "touch", str(marker)],
                       capture_output=True, text=True, timeout=20)
    assert p.returncode == 0 and marker.exists(), p.stderr


def test_exec_naming_an_unset_variable_says_which(litevisor_bin, tmp_path):
    # as in a shell it expands to nothing (often on purpose: $EXTRA_ARGS), so it is a
    # warning; without it, a failure to start named only what was left ("-nobrowser")
    cfgf = tmp_path / "c.yml"
    cfgf.write_text("exec: ${LITEVISOR_TEST_UNSET_BIN} -nobrowser\ndbs: []\n")
    env = {k: v for k, v in os.environ.items() if k != "LITEVISOR_TEST_UNSET_BIN"}
    p = subprocess.run([litevisor_bin, "run", "-config", str(cfgf)], capture_output=True,
                       text=True, timeout=20, env=env)
    assert p.returncode == 127, p.stderr
    assert "variable=LITEVISOR_TEST_UNSET_BIN" in p.stderr, p.stderr


def test_exec_variables_are_data_not_shell_syntax(litevisor_bin, tmp_path):
    # "$FOO" is one word whatever FOO holds (quotes included), as in a shell;
    # an unquoted $ARGS splits at its blanks; '$FOO' is not expanded
    out = tmp_path / "argv.json"
    script = "import json,sys; json.dump(sys.argv[1:], open(sys.argv[1], 'w'))"
    cfgf = tmp_path / "c.yml"
    cfgf.write_text(f"exec: {SERVICE[0]} -c \"{script}\" {out} \"$FOO\" $ARGS '$FOO' end\n")
    env = dict(os.environ, FOO='x" "--evil', ARGS="-a  -b")
    p = subprocess.run([litevisor_bin, "run", "-config", str(cfgf)], capture_output=True,
                       text=True, timeout=20, env=env)
    assert p.returncode == 0, p.stderr
    assert json.load(open(out)) == [str(out), 'x" "--evil', "-a", "-b", "$FOO", "end"]
    env["FOO"] = 'a"b'  # an odd quote in a value is no syntax error either
    p = subprocess.run([litevisor_bin, "run", "-config", str(cfgf)], capture_output=True,
                       text=True, timeout=20, env=env)
    assert p.returncode == 0, p.stderr
    assert json.load(open(out))[1] == 'a"b'


def test_no_command_is_a_usage_error(litevisor_bin, tmp_path):
    cfgf = tmp_path / "c.yml"
    cfgf.write_text("addr: 127.0.0.1:0\n")
    p = subprocess.run([litevisor_bin, "run", "-config", str(cfgf)], capture_output=True,
                       text=True, timeout=20)
    assert p.returncode == 100
    assert "no command" in p.stderr


@pytest.mark.parametrize("how", ["--", "exec", "exec-unset", "replicate-exec"])
def test_an_empty_command_name_is_a_usage_error(litevisor_bin, tmp_path, how):
    """`run -- ""` or `exec: '"$UNSET" --flag'` exited 127 ("cannot run \"\""), where
    `exec: ""` is 100, "no command" (QA134 O4): a configuration error either way."""
    cfgf = tmp_path / "c.yml"
    exec_line = {"exec": "exec: '\"\" --flag'\n",
                 "exec-unset": "exec: '\"$QA_UNSET_CMD\" --flag'\n",
                 "replicate-exec": "exec: '\"\"'\n"}.get(how, "")
    cfgf.write_text(f"dbs:\n  - path: {tmp_path}/a.db\n    replicas:\n"
                    f"      - url: file://{tmp_path}/r\n" + exec_line)
    cmd = "replicate" if how == "replicate-exec" else "run"
    args = [litevisor_bin, cmd, "-config", str(cfgf)] + (["--", ""] if how == "--" else [])
    env = {k: v for k, v in os.environ.items() if k != "QA_UNSET_CMD"}
    p = subprocess.run(args, capture_output=True, text=True, timeout=20, env=env)
    assert p.returncode == 100, p.stderr
    assert "the command's name is empty" in p.stderr, p.stderr
    assert ("QA_UNSET_CMD" in p.stderr) == (how == "exec-unset"), p.stderr
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("var", ["LITEVISOR_CONFIG", "LITESTREAM_CONFIG", "-config"])
def test_a_config_named_on_purpose_must_exist(litevisor_bin, tmp_path, var):
    # Only the fallback /etc/litevisor.yml may be absent (run then needs just a
    # command); a file named by a flag or a variable that is not there (a typo)
    # must not start the service with no restore and no replication.
    missing = tmp_path / "litevisor-typo.yml"
    env = {k: v for k, v in os.environ.items() if k not in ("LITEVISOR_CONFIG", "LITESTREAM_CONFIG")}
    args = [litevisor_bin, "run"]
    if var == "-config":
        args += ["-config", str(missing)]
    else:
        env[var] = str(missing)
    flag = tmp_path / "started"
    p = subprocess.run(args + ["--", "touch", str(flag)], capture_output=True, text=True,
                       timeout=20, env=env)
    assert p.returncode == 100, p.stderr
    assert str(missing) in p.stderr and "No such file or directory" in p.stderr, p.stderr
    assert not flag.exists()


@pytest.mark.parametrize("kind,code", [("missing", 127), ("not-in-path", 127), ("not-executable", 126)])
def test_exec_failure_codes(litevisor_bin, tmp_path, kind, code):
    if kind == "missing":
        cmd = str(tmp_path / "nope")
    elif kind == "not-in-path":
        cmd = "litevisor-no-such-command"
        # one in the working directory is not one in $PATH (execvp, sh)
        (tmp_path / cmd).write_text("#!/bin/sh\nexit 0\n")
        (tmp_path / cmd).chmod(0o755)
    else:
        f = tmp_path / "script.sh"
        f.write_text("#!/bin/sh\nexit 0\n")
        f.chmod(0o644)
        cmd = str(f)
    p = subprocess.run([litevisor_bin, "run", "--", cmd], capture_output=True, text=True,
                       timeout=20, env={"PATH": os.environ["PATH"]}, cwd=tmp_path)
    assert p.returncode == code, p.stderr
    want = "No such file or directory" if code == 127 else "Permission denied"
    assert f'cannot run "{cmd}": {want}' in p.stderr


def test_a_script_without_a_shebang_runs_with_sh_but_a_foreign_binary_does_not(litevisor_bin,
                                                                             tmp_path):
    """execve refuses a file with no "#!" and no binary format (ENOEXEC); execvp, tini,
    dumb-init and shells run it with /bin/sh, and so does run: its arguments and its
    exit code go through. An ELF binary for another machine is not fed to sh (it would
    print its bytes as errors): 126 and "Exec format error"."""
    script, out = tmp_path / "start", tmp_path / "out"
    script.write_text(f'printf "%s|" "$0" "$@" > {out}\nexit 7\n')
    script.chmod(0o755)
    p = subprocess.run([litevisor_bin, "run", "--", str(script), "a b", "c"],
                       capture_output=True, text=True, timeout=20,
                       env={"PATH": os.environ["PATH"]})
    assert p.returncode == 7, p.stderr
    assert out.read_text() == f"{script}|a b|c|"
    elf = bytearray(open("/bin/true", "rb").read())
    assert elf[:4] == b"\x7fELF"
    elf[18:20] = (0xB7 if elf[18:20] != b"\xb7\x00" else 0x3E).to_bytes(2, "little")
    foreign = tmp_path / "foreign"
    foreign.write_bytes(bytes(elf))
    foreign.chmod(0o755)
    p = subprocess.run([litevisor_bin, "run", "--", str(foreign)], capture_output=True,
                       text=True, timeout=20, env={"PATH": os.environ["PATH"]})
    assert p.returncode == 126, p.stderr
    assert f'cannot run "{foreign}": Exec format error' in p.stderr, p.stderr


# ---------------------------------------------------------------- signals

def test_each_forwarded_signal_reaches_the_service(litevisor_bin, tmp_path, runs):
    rec, ready = tmp_path / "signals", tmp_path / "ready"
    r = start(runs, litevisor_bin, tmp_path,
              SERVICE + ["--record", str(rec), "--ready", str(ready), "--term-exit", "0",
                         "--trap", "CONT"])
    poll(lambda: read_lines(ready))
    for name in FORWARDED:
        os.kill(r.pid, getattr(signal, "SIG" + name))
        poll(lambda: name in read_lines(rec), timeout=5)
    os.kill(r.pid, signal.SIGTERM)
    assert r.wait() == 0, r.stderr()
    assert ends_with_stop(read_lines(rec), FORWARDED), read_lines(rec)


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 5), (signal.SIGTERM, 0)])
def test_stop_signal_reaches_service_and_its_code_is_returned(litevisor_bin, tmp_path, runs, sig, code):
    rec, ready = tmp_path / "signals", tmp_path / "ready"
    r = start(runs, litevisor_bin, tmp_path,
              SERVICE + ["--record", str(rec), "--ready", str(ready), "--term-exit", str(code)])
    poll(lambda: read_lines(ready))
    os.kill(r.pid, sig)
    assert r.wait() == code, r.stderr()
    assert read_lines(rec) == [sig.name[3:]]


def test_a_terminal_signal_reaches_the_service_once(litevisor_bin, tmp_path):
    """On a terminal (docker run -it), ^\\ goes to the whole foreground process group,
    the service included (it shares litevisor's group by default): litevisor must
    not forward it a second time. A kill(2) of litevisor still is forwarded."""
    import pty
    rec, ready = tmp_path / "rec", tmp_path / "ready"
    pid, fd = pty.fork()
    if pid == 0:
        try:
            os.execv(litevisor_bin, [litevisor_bin, "run", "--"] + SERVICE +
                     ["--record", str(rec), "--ready", str(ready)])
        finally:
            os._exit(127)
    out = []
    threading.Thread(target=lambda: out.append(_drain(fd)), daemon=True).start()
    try:
        poll(lambda: read_lines(ready))
        os.write(fd, b"\x1c")  # ^\ : SIGQUIT from the terminal
        poll(lambda: read_lines(rec))
        time.sleep(0.5)  # a forwarded second one would have come by now
        assert read_lines(rec) == ["QUIT"]
        os.kill(pid, signal.SIGUSR1)  # from a process: forwarded
        poll(lambda: len(read_lines(rec)) == 2)
        os.kill(pid, signal.SIGTERM)
        _, status = os.waitpid(pid, 0)
    finally:
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except OSError:
            pass
    assert os.WEXITSTATUS(status) == 0, out
    assert read_lines(rec) == ["QUIT", "USR1", "TERM"], out


def test_ctrl_c_stops_a_service_with_its_own_group_instead_of_restarting_it(litevisor_bin,
                                                                             tmp_path):
    """With new-process-group the service takes the terminal, so ^C reaches it alone.
    It died of SIGINT and restart: on-failure restarted it: the user's ^C only
    restarted the service (QA19). It now stops litevisor, exit 130."""
    import pty
    runs = tmp_path / "runs"
    cfg = tmp_path / "c.yml"
    cfg.write_text("supervisor:\n  new-process-group: true\n  restart: on-failure\n"
                   "  restart-delay: 100ms\n")
    pid, fd = pty.fork()
    if pid == 0:
        try:
            os.execv(litevisor_bin, [litevisor_bin, "run", "-config", str(cfg), "--", "sh", "-c",
                                     f"echo run >> {runs}; exec sleep 60"])
        finally:
            os._exit(127)
    out = []
    threading.Thread(target=lambda: out.append(_drain(fd)), daemon=True).start()
    try:
        poll(lambda: read_lines(runs) == ["run"])
        time.sleep(0.3)  # the service has taken the terminal
        os.write(fd, b"\x03")  # ^C
        _, status = os.waitpid(pid, 0)
    finally:
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except OSError:
            pass
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 130, (status, out)
    assert read_lines(runs) == ["run"], out

class InteractiveBash:
    """An interactive bash on a pty (a user's terminal): type lines, wait for output."""

    def __init__(self, cwd):
        import pty
        self.pid, self.fd = pty.fork()
        if self.pid == 0:
            try:
                os.chdir(cwd)
                os.environ["PS1"] = "PROMPT$ "
                os.execvp("bash", ["bash", "--norc", "--noprofile", "-i"])
            finally:
                os._exit(127)
        self.out = b""
        self.wait_for(b"PROMPT$ ", 5)

    def read_for(self, seconds):
        import select
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if select.select([self.fd], [], [], 0.05)[0]:
                try:
                    self.out += os.read(self.fd, 65536)
                except OSError:
                    time.sleep(0.05)

    def wait_for(self, what, timeout, since=0):
        end = time.monotonic() + timeout
        while what not in self.out[since:] and time.monotonic() < end:
            self.read_for(0.05)
        return what in self.out[since:]

    def type(self, data):
        mark = len(self.out)
        os.write(self.fd, data)
        return mark

    def close(self):
        """Kill bash and every process of its session (a failed test's jobs too)."""
        for d in os.listdir("/proc"):
            try:
                if d.isdigit() and int(open(f"/proc/{d}/stat").read().rsplit(")", 1)[1]
                                       .split()[3]) == self.pid:
                    os.kill(int(d), signal.SIGKILL)
            except (OSError, ValueError, IndexError):
                pass
        try:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        except OSError:
            pass


def ticking_in_a_shell(litevisor_bin, tmp_path):
    """An interactive bash running litevisor with new-process-group on a service that
    writes its pid to tmp_path/pid and a line to the returned ticks file every 50 ms,
    once it ticks: (bash, ticks)."""
    ticks = tmp_path / "ticks"
    (tmp_path / "c.yml").write_text("dbs: []\nsupervisor:\n  new-process-group: true\n")
    sh = InteractiveBash(tmp_path)
    sh.type(f"{litevisor_bin} run -config c.yml -- sh -c 'echo $$ > {tmp_path}/pid; "
            f"while :; do echo t >> {ticks}; sleep 0.05; done' 2>lv.err\n".encode())
    try:
        poll(lambda: len(read_lines(ticks)) > 2)
    except AssertionError:
        sh.close()
        raise
    return sh, ticks


def test_ctrl_z_stops_a_service_with_its_own_group_and_the_shell_gets_its_prompt(
        litevisor_bin, tmp_path):
    """With new-process-group the service holds the terminal, so ^Z stopped it alone:
    litevisor did not notice, the shell waiting on it never got its prompt back (QA134
    D1). litevisor takes the terminal back and stops too, as a shell's job; `bg` lets it
    run on with the terminal left to the shell (QA137 D2: it was taken, the shell
    exited); `fg` gives the terminal to the service again."""
    sh, ticks = ticking_in_a_shell(litevisor_bin, tmp_path)
    try:
        mark = sh.type(b"\x1a")  # ^Z
        assert sh.wait_for(b"PROMPT$ ", 5, mark), sh.out[mark:]
        time.sleep(0.3)
        n = len(read_lines(ticks))
        time.sleep(0.5)
        assert len(read_lines(ticks)) == n, "the service ran on while its job was stopped"
        # bg: it runs on, and the shell keeps its terminal (QA137 D2: it was taken)
        sh.type(b"bg\n")
        poll(lambda: len(read_lines(ticks)) > n + 2, timeout=5)
        mark = sh.type(b"echo ALIVE$((40+2))\n")
        assert sh.wait_for(b"ALIVE42", 5, mark), sh.out[mark:]
        n = len(read_lines(ticks))
        sh.type(b"fg\n")
        poll(lambda: len(read_lines(ticks)) > n + 2, timeout=5)
        time.sleep(0.3)
        mark = sh.type(b"\x03")  # ^C: the service has the terminal again
        assert sh.wait_for(b"PROMPT$ ", 10, mark), sh.out[mark:]
        mark = sh.type(b"echo code=$?\n")
        assert sh.wait_for(b"code=130", 5, mark), (sh.out[mark:], (tmp_path / "lv.err").read_text())
    finally:
        sh.close()


def test_ctrl_z_stops_a_wrapper_that_did_not_exec_litevisor_too(litevisor_bin, tmp_path):
    """new-process-group under a wrapper that did not exec litevisor (bash -c '…; echo
    done'): ^Z stopped the service and litevisor, not the wrapper, so the shell saw its job
    running and gave no prompt (QA146 D5). A job stop stops litevisor's whole group, as the
    terminal's ^Z stops a job."""
    ticks = tmp_path / "ticks"
    (tmp_path / "c.yml").write_text("dbs: []\nsupervisor:\n  new-process-group: true\n")
    sh = InteractiveBash(tmp_path)
    try:
        sh.type(f"bash -c '{litevisor_bin} run -config c.yml -- sh -c \"while :; do echo t >> "
                f"{ticks}; sleep 0.05; done\" 2>lv.err; echo done'\n".encode())
        poll(lambda: len(read_lines(ticks)) > 2, log=tmp_path / "lv.err")
        mark = sh.type(b"\x1a")
        assert sh.wait_for(b"PROMPT$ ", 5, mark), (sh.out[mark:], (tmp_path / "lv.err").read_text())
        n = len(read_lines(ticks))
        sh.type(b"fg\n")
        poll(lambda: len(read_lines(ticks)) > n + 2, timeout=5)
        time.sleep(0.3)
        mark = sh.type(b"\x03")
        assert sh.wait_for(b"PROMPT$ ", 10, mark), sh.out[mark:]
    finally:
        sh.close()


def test_a_background_run_with_its_own_group_leaves_the_terminal_to_the_shell(litevisor_bin,
                                                                             tmp_path):
    """`litevisor run … &` from an interactive shell with new-process-group handed the
    terminal to the service anyway: the shell lost it and exited (QA134 D2). Only a
    litevisor in the foreground hands it on."""
    (tmp_path / "c.yml").write_text("dbs: []\nsupervisor:\n  new-process-group: true\n")
    sh = InteractiveBash(tmp_path)
    try:
        sh.type(f"{litevisor_bin} run -config c.yml -- sleep 1 2>lv.err &\n".encode())
        time.sleep(0.5)
        mark = sh.type(b"echo ALIVE$((40+2))\n")
        assert sh.wait_for(b"ALIVE42", 5, mark), sh.out[mark:]
        time.sleep(1)  # the service has exited: litevisor takes nothing back either
        mark = sh.type(b"wait; echo AGAIN$((40+3))\n")
        assert sh.wait_for(b"AGAIN43", 5, mark), sh.out[mark:]
    finally:
        sh.close()


@pytest.mark.parametrize("how", ["^Z bg fg", "& fg"])
def test_a_job_brought_back_with_fg_gives_its_service_the_terminal(litevisor_bin, tmp_path, how):
    """A shell's fg of a running job sends no SIGCONT: after ^Z and bg, or a start with &,
    the service never got the terminal back, and one reading it stopped for good (QA138
    D2, D3). Whenever litevisor's group holds the terminal, the service's gets it."""
    got = tmp_path / "got"
    (tmp_path / "c.yml").write_text("dbs: []\nsupervisor:\n  new-process-group: true\n")
    sh = InteractiveBash(tmp_path)
    try:
        cmd = (f"{litevisor_bin} run -config c.yml -- sh -c 'while read l; do "
               f"echo \"got:$l\" >> {got}; done' 2>lv.err")
        if how == "& fg":
            sh.type(f"{cmd} &\n".encode())
            time.sleep(1)
        else:
            sh.type(f"{cmd}\n".encode())
            time.sleep(1)
            mark = sh.type(b"\x1a")
            assert sh.wait_for(b"PROMPT$ ", 5, mark), sh.out[mark:]
            sh.type(b"bg\n")
            time.sleep(1)
        sh.type(b"fg\n")
        time.sleep(1.5)  # litevisor's loop turns at least once a second
        sh.type(b"hello\n")
        poll(lambda: read_lines(got) == ["got:hello"], timeout=5,
             log=tmp_path / "lv.err")
        mark = sh.type(b"\x03")
        assert sh.wait_for(b"PROMPT$ ", 10, mark), sh.out[mark:]
    finally:
        sh.close()


@pytest.mark.parametrize("group", ["shared", "own"])
def test_a_service_reading_the_terminal_in_the_background_stops_the_job(litevisor_bin, tmp_path,
                                                                       group):
    """After ^Z and bg, a service reading the terminal was stopped by SIGTTIN, but
    litevisor (which ignores it) ran on: the shell showed the job running, its fg sent
    no SIGCONT, and the service never woke (QA139 D3, the default shared group).
    litevisor stops as the job, as a plain job would, and fg continues it."""
    got = tmp_path / "got"
    (tmp_path / "c.yml").write_text("dbs: []\nsupervisor:\n  new-process-group: "
                                    f"{'true' if group == 'own' else 'false'}\n")
    sh = InteractiveBash(tmp_path)
    try:
        sh.type(f"{litevisor_bin} run -config c.yml -- sh -c 'while read l; do "
                f"echo \"got:$l\" >> {got}; done' 2>lv.err\n".encode())
        time.sleep(1)
        sh.type(b"one\n")
        poll(lambda: read_lines(got) == ["got:one"], timeout=5, log=tmp_path / "lv.err")
        mark = sh.type(b"\x1a")
        assert sh.wait_for(b"PROMPT$ ", 5, mark), sh.out[mark:]
        mark = sh.type(b"bg\n")
        time.sleep(1)
        mark = sh.type(b"jobs\n")
        assert sh.wait_for(b"Stopped", 5, mark), sh.out[mark:]  # it read the terminal
        sh.type(b"fg\n")
        time.sleep(1.5)
        sh.type(b"two\n")
        poll(lambda: read_lines(got) == ["got:one", "got:two"], timeout=5,
             log=tmp_path / "lv.err")
        mark = sh.type(b"\x03")
        assert sh.wait_for(b"PROMPT$ ", 10, mark), sh.out[mark:]
    finally:
        sh.close()


@pytest.mark.parametrize("group", ["shared", "own"])
def test_a_service_writing_the_terminal_of_a_job_without_stdin_stops_the_job(litevisor_bin,
                                                                            tmp_path, group):
    """`litevisor run … </dev/null &` with `stty tostop`: the service's write to the
    terminal on stdout stopped it on SIGTTOU, and since job control looked at stdin only,
    litevisor ran on and the service stayed stopped for good (QA144 D5). The controlling
    terminal is looked for on stdout and stderr too: the job stops, and fg lets it write."""
    done = tmp_path / "done"
    (tmp_path / "c.yml").write_text("dbs: []\nsupervisor:\n  new-process-group: "
                                    f"{'true' if group == 'own' else 'false'}\n")
    sh = InteractiveBash(tmp_path)
    try:
        sh.type(b"stty tostop\n")
        sh.type(f"{litevisor_bin} run -config c.yml -- sh -c 'sleep 0.5; echo SVC-$((6*7)); "
                f"echo x > {done}' </dev/null 2>lv.err &\n".encode())
        time.sleep(2)
        mark = sh.type(b"jobs\n")
        assert sh.wait_for(b"Stopped", 5, mark), (sh.out[mark:], (tmp_path / "lv.err").read_text())
        assert not done.exists()
        mark = sh.type(b"fg\n")
        poll(done.exists, timeout=5, log=tmp_path / "lv.err")
        assert sh.wait_for(b"SVC-42", 5, mark), sh.out[mark:]
        assert sh.wait_for(b"PROMPT$ ", 10, mark), sh.out[mark:]
    finally:
        sh.close()


def _proc_stat(pid):
    """(state, pgrp, tpgid) of a process, from /proc/<pid>/stat."""
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return f[0], int(f[2]), int(f[5])


def pause_and_continue(tmp_path, ticks):
    """kill -STOP the service (its pid in tmp_path/pid, writing a line to ticks every 50
    ms): it stays paused while litevisor runs on holding the terminal; kill -CONT: it
    runs again, and its group gets the terminal back."""
    svc = int(read_lines(tmp_path / "pid")[0])
    lv = _ppid_of(svc)
    os.kill(svc, signal.SIGSTOP)
    poll(lambda: "paused until continued" in (tmp_path / "lv.err").read_text())
    n = len(read_lines(ticks))
    time.sleep(1.5)  # litevisor's loop turns at least once a second
    assert len(read_lines(ticks)) == n, "the paused service was continued"
    state, pgrp, tpgid = _proc_stat(lv)
    assert state != "T" and tpgid == pgrp, (state, pgrp, tpgid)  # the terminal is its
    os.kill(svc, signal.SIGCONT)
    poll(lambda: len(read_lines(ticks)) > n + 2, timeout=5)
    poll(lambda: _proc_stat(lv)[2] == svc, timeout=5)  # the service's again


def test_a_service_stopped_from_elsewhere_is_paused_and_litevisor_runs_on(litevisor_bin,
                                                                          tmp_path):
    """new-process-group: a kill -STOP of the service left its stopped group holding the
    terminal; ^C, ^\\ and ^Z reached nobody (QA139 D4). Taken for the job's stop,
    litevisor stopped itself, and the kill -CONT that followed continued the service alone:
    it wrote on, unreplicated (QA146 D4). A SIGSTOP of a service that did not stop itself
    (top, nano and mutt do so on ^Z) is a pause: the service stays stopped until
    continued, litevisor runs on with the terminal meanwhile, and hands it back."""
    sh, ticks = ticking_in_a_shell(litevisor_bin, tmp_path)
    try:
        pause_and_continue(tmp_path, ticks)
        mark = sh.type(b"\x03")
        assert sh.wait_for(b"PROMPT$ ", 10, mark), sh.out[mark:]
        mark = sh.type(b"echo code=$?\n")
        assert sh.wait_for(b"code=130", 5, mark), (sh.out[mark:], (tmp_path / "lv.err").read_text())
    finally:
        sh.close()


def svc_py_in_a_shell(litevisor_bin, tmp_path, ticks):
    """An interactive bash running litevisor with new-process-group on tmp_path/svc.py,
    once the service has written ticks a few times: the bash."""
    (tmp_path / "c.yml").write_text("dbs: []\nsupervisor:\n  new-process-group: true\n")
    sh = InteractiveBash(tmp_path)
    try:
        sh.type(f"{litevisor_bin} run -config c.yml -- /usr/bin/python3 svc.py 2>lv.err\n".encode())
        poll(lambda: len(read_lines(ticks)) > 2, log=tmp_path / "lv.err")
    except AssertionError:
        sh.close()
        raise
    time.sleep(0.3)
    return sh


STOPS_ITSELF_ON_TSTP = """
import os, signal, sys, time
def on_tstp(*_):
    os.kill(os.getpid(), signal.SIGSTOP)  # as top, nano and mutt end their ^Z handling
def on_term(*_):
    time.sleep(2)
    open({done!r}, "w").write("done")
    os._exit(0)
signal.signal(signal.SIGTSTP, on_tstp)
signal.signal(signal.SIGTERM, on_term)
open({pid!r}, "w").write(str(os.getpid()))
while True:
    open({ticks!r}, "a").write("t\\n")
    time.sleep(0.05)
"""


@pytest.mark.parametrize("thread", ["main", "worker"])
def test_a_service_ending_its_ctrl_z_handling_with_sigstop_stops_the_job(litevisor_bin, tmp_path,
                                                                        thread):
    """new-process-group: top, nano and mutt answer ^Z by stopping themselves with SIGSTOP;
    taken for a pause from elsewhere, litevisor took the terminal back and ran on, and the
    shell never got its prompt (QA144 D1). From a worker thread (raise() there), only the
    main thread was looked at, and it was a pause again (QA150 D3)."""
    ticks = tmp_path / "ticks"
    svc = STOPS_ITSELF_ON_TSTP
    if thread == "worker":
        svc = svc.replace(
            "def on_tstp(*_):\n    os.kill(os.getpid(), signal.SIGSTOP)",
            "import threading\n"
            "stop = threading.Event()\n"
            "def worker():\n"
            "    while True:\n"
            "        stop.wait(); stop.clear()\n"
            "        signal.pthread_kill(threading.get_ident(), signal.SIGSTOP)  # raise() here\n"
            "threading.Thread(target=worker, daemon=True).start()\n"
            "def on_tstp(*_):\n    stop.set()")
        assert "pthread_kill" in svc
    (tmp_path / "svc.py").write_text(svc.format(
        done=str(tmp_path / "done"), pid=str(tmp_path / "pid"), ticks=str(ticks)))
    sh = svc_py_in_a_shell(litevisor_bin, tmp_path, ticks)
    try:
        mark = sh.type(b"\x1a")
        assert sh.wait_for(b"PROMPT$ ", 5, mark), (sh.out[mark:], (tmp_path / "lv.err").read_text())
        n = len(read_lines(ticks))
        sh.type(b"fg\n")
        poll(lambda: len(read_lines(ticks)) > n + 2, timeout=5)
        mark = sh.type(b"\x03")
        assert sh.wait_for(b"PROMPT$ ", 10, mark), sh.out[mark:]
    finally:
        sh.close()


def _unshare_ok():
    if not shutil.which("unshare") or os.geteuid() != 0:
        return False
    p = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "true"], capture_output=True)
    return p.returncode == 0


def test_a_kill_stop_of_a_service_that_catches_tstp_is_a_pause(litevisor_bin, tmp_path):
    """new-process-group: a service catching TSTP only to note it (a Go program's
    signal.Notify for every signal) was taken, on a kill -STOP, for one ending its ^Z
    handling so: litevisor stopped as the job, and the kill -CONT that followed continued
    the service alone, litevisor stopped while it wrote (QA147 D2). Only a service that
    stopped itself (it stands in its own kill) stops the job; this one is paused."""
    ticks = tmp_path / "ticks"
    (tmp_path / "svc.py").write_text(
        "import os, signal, time\n"
        f"signal.signal(signal.SIGTSTP, lambda *a: open({str(tmp_path / 'noted')!r}, 'a')"
        ".write('TSTP\\n'))\n"
        f"open({str(tmp_path / 'pid')!r}, 'w').write(str(os.getpid()))\n"
        f"while True:\n    open({str(ticks)!r}, 'a').write('t\\n'); time.sleep(0.05)\n")
    sh = svc_py_in_a_shell(litevisor_bin, tmp_path, ticks)
    try:
        pause_and_continue(tmp_path, ticks)
        mark = sh.type(b"\x03")
        assert sh.wait_for(b"PROMPT$ ", 10, mark), sh.out[mark:]
    finally:
        sh.close()


@pytest.mark.skipif(not _unshare_ok(), reason="needs root and unshare --pid")
def test_ctrl_z_of_a_service_stopping_itself_under_another_namespaces_proc_stops_the_job(
        litevisor_bin, tmp_path):
    """An interactive shell in `unshare -pf` without --mount-proc: whether the service
    stopped itself was read from /proc/<its pid>, which there is another process of the
    host's: a top-like ^Z was taken for a pause, and the shell never gave its prompt
    (QA147 D1). The service is read under its number in /proc's namespace."""
    ticks = tmp_path / "ticks"
    (tmp_path / "svc.py").write_text(STOPS_ITSELF_ON_TSTP.format(
        done=str(tmp_path / "done"), pid=str(tmp_path / "pid"), ticks=str(ticks)))
    (tmp_path / "c.yml").write_text("dbs: []\nsupervisor:\n  new-process-group: true\n")
    sh = InteractiveBash(tmp_path)
    try:
        mark = sh.type(b"unshare -pf bash --norc --noprofile -i\n")
        assert sh.wait_for(b"PROMPT$ ", 5, mark), sh.out[mark:]
        sh.type(f"{litevisor_bin} run -config c.yml -- /usr/bin/python3 svc.py 2>lv.err\n".encode())
        poll(lambda: len(read_lines(ticks)) > 2, log=tmp_path / "lv.err")
        time.sleep(0.3)
        mark = sh.type(b"\x1a")
        assert sh.wait_for(b"PROMPT$ ", 5, mark), (sh.out[mark:], (tmp_path / "lv.err").read_text())
        assert "stopped by the terminal" in (tmp_path / "lv.err").read_text()
    finally:
        sh.close()


@pytest.mark.skipif(not _unshare_ok(), reason="needs root and unshare --pid")
def test_ctrl_z_while_stopping_in_a_pid_namespace_lets_the_service_finish(litevisor_bin,
                                                                         tmp_path):
    """PID 1 of `unshare -pf` run from a shell, the service in litevisor's group: a ^Z
    during the grace stopped the service, and litevisor, seeing the terminal's groups
    outside its namespace, looked no further: the service's TERM handler sat out the
    grace and was killed, exit 137 (QA147 D3). It is continued, as anywhere else."""
    (tmp_path / "svc.py").write_text(
        "import os, signal, time\n"
        "def on_term(*_):\n    time.sleep(2)\n"
        f"    open({str(tmp_path / 'done')!r}, 'w').write('done')\n    os._exit(0)\n"
        "signal.signal(signal.SIGTERM, on_term)\n"
        f"open({str(tmp_path / 'pid')!r}, 'w').write(str(os.getpid()))\n"
        "while True:\n    time.sleep(0.05)\n")
    (tmp_path / "c.yml").write_text("dbs: []\nsupervisor:\n  stop-grace: 8s\n")
    sh = InteractiveBash(tmp_path)
    try:
        sh.type(f"unshare -pf --mount-proc {litevisor_bin} run -config c.yml -- /usr/bin/python3 "
                f"svc.py 2>lv.err\n".encode())
        poll(lambda: (tmp_path / "pid").exists(), log=tmp_path / "lv.err")
        lv = poll(lambda: _named_in_session(sh.pid, "litevisor"))
        os.kill(lv, signal.SIGTERM)
        time.sleep(0.5)
        sh.type(b"\x1a")  # stops unshare too, whose stop the shell may see before litevisor's CONT
        poll(lambda: (tmp_path / "done").exists(), timeout=5, log=tmp_path / "lv.err")
        poll(lambda: "exiting code=0" in (tmp_path / "lv.err").read_text(), timeout=10,
             log=tmp_path / "lv.err")
    finally:
        sh.close()


class SessionLeader:
    """litevisor run leading a session on a pty with no shell (ssh -t, docker exec -it,
    script -c); its log in tmp_path/lv.err. A context manager: killed with its group."""

    def __init__(self, litevisor_bin, tmp_path, cfg, cmd):
        import pty
        self.pid, self.fd = pty.fork()
        if self.pid == 0:
            try:
                e = os.open(str(tmp_path / "lv.err"), os.O_WRONLY | os.O_CREAT, 0o644)
                os.dup2(e, 2)
                os.execv(litevisor_bin, [litevisor_bin, "run", "-config", str(cfg), "--"] + cmd)
            finally:
                os._exit(127)
        threading.Thread(target=_drain, args=(self.fd,), daemon=True).start()

    def stop(self):
        """SIGTERM; it must exit (not be killed)."""
        os.kill(self.pid, signal.SIGTERM)
        _, status = os.waitpid(self.pid, 0)
        self.pid = None
        assert os.WIFEXITED(status), status

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.pid:
            try:
                os.killpg(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
            except OSError:
                pass
        os.close(self.fd)


def test_with_no_shell_a_stopped_service_is_paused_and_litevisor_runs_on(litevisor_bin,
                                                                          tmp_path):
    """new-process-group, litevisor leading its session (no job-control shell): a kill -STOP
    of the service was taken for the terminal's job stop, and litevisor stopped itself for
    good, replication and /livez with it (QA141 D4). It is a pause: the service stays
    stopped until continued, litevisor runs on holding the terminal, then hands it back."""
    ticks = tmp_path / "ticks"
    (tmp_path / "c.yml").write_text("dbs: []\nsupervisor:\n  new-process-group: true\n")
    with SessionLeader(litevisor_bin, tmp_path, tmp_path / "c.yml",
                       ["sh", "-c", f"echo $$ > {tmp_path}/pid; while :; do "
                                    f"echo t >> {ticks}; sleep 0.05; done"]) as lv:
        poll(lambda: len(read_lines(ticks)) > 2, log=tmp_path / "lv.err")
        pause_and_continue(tmp_path, ticks)
        lv.stop()


@pytest.mark.parametrize("group", ["shared", "own"])
def test_with_no_shell_ctrl_z_does_not_stop_litevisor(litevisor_bin, tmp_path, group):
    """litevisor leading its session (ssh -t, docker exec -it): its process group is
    orphaned, the kernel ignores ^Z for a plain program there, but litevisor stopped itself
    with SIGSTOP, for good: replication and health stopped while the service ran on
    (QA144 D4)."""
    ticks = tmp_path / "ticks"
    (tmp_path / "c.yml").write_text("dbs: []\nsupervisor:\n  new-process-group: "
                                    f"{'true' if group == 'own' else 'false'}\n")
    with SessionLeader(litevisor_bin, tmp_path, tmp_path / "c.yml",
                       ["sh", "-c", f"while :; do echo t >> {ticks}; sleep 0.05; done"]) as lv:
        poll(lambda: len(read_lines(ticks)) > 2, log=tmp_path / "lv.err")
        os.write(lv.fd, b"\x1a")
        poll(lambda: "not stopping litevisor itself" in (tmp_path / "lv.err").read_text(),
             timeout=5)
        time.sleep(1.5)
        assert _proc_stat(lv.pid)[0] != "T", (tmp_path / "lv.err").read_text()
        n = len(read_lines(ticks))
        poll(lambda: len(read_lines(ticks)) > n + 2, timeout=5)  # and the service runs
        lv.stop()


MASTER_AND_WORKER = """
import os, signal, subprocess, sys, time
worker = subprocess.Popen([sys.executable, "-c",
    "import os, signal, time\\n"
    "signal.signal(signal.SIGTERM, lambda *a: (time.sleep(1), os._exit(0)))\\n"
    "while True: time.sleep(0.1)\\n"])
def on_term(*_):
    worker.terminate()
    worker.wait()  # a master waits for its worker
    open({done!r}, "w").write("done")
    os._exit(0)
signal.signal(signal.SIGTERM, on_term)
open({pid!r}, "w").write(str(os.getpid()))
while True:
    time.sleep(0.1)
"""


def test_ctrl_z_during_the_grace_continues_the_services_children_too(litevisor_bin, tmp_path):
    """While stopping, the terminal's ^Z stopped the service and its worker; only the
    service was continued, and it waited for its stopped worker until the grace's SIGKILL
    (QA146 D1). What the terminal stopped is continued, as a shell's fg does."""
    done = tmp_path / "done"
    (tmp_path / "svc.py").write_text(MASTER_AND_WORKER.format(done=str(done),
                                                              pid=str(tmp_path / "pid")))
    (tmp_path / "c.yml").write_text("dbs: []\nsupervisor:\n  stop-grace: 30s\n")
    sh = InteractiveBash(tmp_path)
    try:
        sh.type(f"{litevisor_bin} run -config c.yml -- /usr/bin/python3 svc.py 2>lv.err\n".encode())
        poll(lambda: (tmp_path / "pid").exists(), log=tmp_path / "lv.err")
        time.sleep(0.5)
        os.kill(_ppid_of(int(read_lines(tmp_path / "pid")[0])), signal.SIGTERM)
        time.sleep(0.3)
        sh.type(b"\x1a")  # during the worker's 1 s TERM handler
        poll(lambda: done.exists(), timeout=8, log=tmp_path / "lv.err")
    finally:
        sh.close()


def test_with_no_shell_a_service_sending_itself_tstp_makes_no_loop(litevisor_bin, tmp_path):
    """litevisor leading its session, a service whose ^Z handler sends TSTP to its group:
    litevisor forwarded it back and declined to stop, the handler sent it again, 50-1000
    rounds a second (QA146 D6). The service's own TSTP to its group is not forwarded."""
    (tmp_path / "c.yml").write_text("dbs: []\n")
    (tmp_path / "svc.py").write_text(
        "import os, signal, time\n"
        "def on_tstp(*_):\n"
        "    signal.signal(signal.SIGTSTP, signal.SIG_DFL)\n"
        "    os.kill(0, signal.SIGTSTP)\n"
        "    signal.signal(signal.SIGTSTP, on_tstp)\n"
        "signal.signal(signal.SIGTSTP, on_tstp)\n"
        "while True:\n    time.sleep(0.1)\n")
    with SessionLeader(litevisor_bin, tmp_path, tmp_path / "c.yml",
                       ["/usr/bin/python3", str(tmp_path / "svc.py")]) as lv:
        time.sleep(1)
        os.write(lv.fd, b"\x1a")
        time.sleep(2)
        lines = (tmp_path / "lv.err").read_text().count("\n")
        assert lines < 30, (tmp_path / "lv.err").read_text()[-2000:]


def test_a_shared_group_service_in_a_group_of_its_own_makes_no_signal_loop(litevisor_bin,
                                                                          tmp_path):
    """Default mode, a service that put itself in a group of its own and reads the
    terminal: litevisor continued its own group (itself, not the service) and forwarded
    that SIGCONT to the service, which read and stopped again: 20,000-30,000 log lines a
    second (QA144 D3)."""
    (tmp_path / "c.yml").write_text("dbs: []\n")
    (tmp_path / "svc.py").write_text("import os, sys\nos.setpgid(0, 0)\n"
                                     f"open({str(tmp_path / 'pid')!r}, 'w').write(str(os.getpid()))\n"
                                     "sys.stdin.readline()\n")
    sh = InteractiveBash(tmp_path)
    try:
        sh.type(f"{litevisor_bin} run -config c.yml -- /usr/bin/python3 svc.py 2>lv.err\n".encode())
        poll(lambda: (tmp_path / "pid").exists(), log=tmp_path / "lv.err")
        time.sleep(2)
        lines = (tmp_path / "lv.err").read_text().count("\n")
        assert lines < 30, lines
        mark = sh.type(b"\x03")
        assert sh.wait_for(b"PROMPT$ ", 10, mark), sh.out[mark:]
    finally:
        try:
            os.kill(int(read_lines(tmp_path / "pid")[0]), signal.SIGKILL)
        except (OSError, IndexError, ValueError):
            pass
        sh.close()


def test_pid_1_leaves_a_paused_service_paused(litevisor_bin, tmp_path):
    """As PID 1 on a terminal (docker run -it) a kill -STOP of the service was taken for
    the terminal's job stop, which PID 1 cannot make: the service was continued at once
    and could not be paused (QA141 D4)."""
    ticks = tmp_path / "ticks"
    (tmp_path / "c.yml").write_text("dbs: []\nsupervisor:\n  new-process-group: true\n")
    m, s = os.openpty()
    inner = (f"import os\nos.setsid()\nfd = os.open({os.ttyname(s)!r}, os.O_RDWR)\n"
             "os.dup2(fd, 0); os.dup2(fd, 1)\n"
             f"e = os.open({str(tmp_path / 'lv.err')!r}, os.O_WRONLY | os.O_CREAT, 0o644)\n"
             "os.dup2(e, 2)\n"
             f"os.execv({litevisor_bin!r}, [{litevisor_bin!r}, 'run', '-config', "
             f"{str(tmp_path / 'c.yml')!r}, '--', 'sh', '-c', 'echo $$ > {tmp_path}/pid; "
             f"while :; do echo t >> {ticks}; sleep 0.05; done'])\n")
    p = subprocess.Popen(["unshare", "-pf", "--mount-proc", "/usr/bin/python3", "-c", inner],
                         stdin=subprocess.DEVNULL)
    os.close(s)
    try:
        poll(lambda: len(read_lines(ticks)) > 2, log=tmp_path / "lv.err")
        lv = [d for d in _children_of(p.pid) if _comm_of(d) == "litevisor"]
        svc = [d for d in _children_of(lv[0]) if _comm_of(d) == "sh"] if lv else []
        assert len(svc) == 1, (lv, svc)
        os.kill(svc[0], signal.SIGSTOP)
        poll(lambda: "paused until continued" in (tmp_path / "lv.err").read_text())
        n = len(read_lines(ticks))
        time.sleep(1.5)
        assert len(read_lines(ticks)) == n, "the paused service was continued"
        os.kill(svc[0], signal.SIGCONT)
        poll(lambda: len(read_lines(ticks)) > n + 2, timeout=5)
    finally:
        for d in _children_of(p.pid):
            try:
                os.kill(d, signal.SIGKILL)  # PID 1 of the namespace: all goes with it
            except OSError:
                pass
        p.wait(timeout=10)
        os.close(m)


def _comm_of(pid):
    try:
        return open(f"/proc/{pid}/comm").read().strip()
    except OSError:
        return None


def _ppid_of(pid):
    try:
        return int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def _named_in_session(sid, comm):
    """The pid of a process named comm in session sid (in /proc's numbering), or None."""
    for d in filter(str.isdigit, os.listdir("/proc")):
        try:
            if (open(f"/proc/{d}/comm").read().strip() == comm and
                    int(open(f"/proc/{d}/stat").read().rsplit(")", 1)[1].split()[3]) == sid):
                return int(d)
        except (OSError, ValueError, IndexError):
            pass
    return None


def _children_of(pid):
    return [int(d) for d in os.listdir("/proc") if d.isdigit() and _ppid_of(int(d)) == pid]


def kill_group(p, timeout=30):
    """SIGKILL p's process group (p leads it) and wait until none of it is left: the
    group's other members (the service) die on their own time, and one in the middle of
    a write finishes it first."""
    os.killpg(p.pid, signal.SIGKILL)
    p.wait(timeout=timeout)

    def gone():
        for d in os.listdir("/proc"):
            try:
                if d.isdigit() and int(open(f"/proc/{d}/stat").read().rsplit(")", 1)[1]
                                       .split()[2]) == p.pid:
                    return False
            except (OSError, ValueError, IndexError):
                pass
        return True
    poll(gone, timeout=timeout)


RESTORES_TERMINAL_ON_TERM = """
import os, signal, sys, termios, time
def on_term(*_):
    termios.tcsetattr(0, termios.TCSANOW, termios.tcgetattr(0))  # SIGTTOU from the background
    time.sleep({delay})
    open({done!r}, "w").write("done")
    os._exit(0)
signal.signal(signal.SIGTERM, on_term)
open({pid!r}, "w").write(str(os.getpid()))
while True:
    time.sleep(0.1)
"""


def shell_running_svc_py(litevisor_bin, tmp_path, group):
    """An interactive bash running litevisor (stop-grace 30s, the service in litevisor's
    group or its own) on tmp_path/svc.py, once it wrote its pid to tmp_path/pid."""
    (tmp_path / "c.yml").write_text("dbs: []\nsupervisor:\n  stop-grace: 30s\n"
                                    f"  new-process-group: {'true' if group == 'own' else 'false'}\n")
    sh = InteractiveBash(tmp_path)
    sh.type(f"{litevisor_bin} run -config c.yml -- /usr/bin/python3 svc.py 2>lv.err\n".encode())
    try:
        poll(lambda: (tmp_path / "pid").exists(), log=tmp_path / "lv.err")
    except AssertionError:
        sh.close()
        raise
    time.sleep(0.3)
    return sh


@pytest.mark.parametrize("group", ["shared", "own"])
def test_a_stopping_service_stopped_by_the_terminal_goes_on_once_brought_back(
        litevisor_bin, tmp_path, group):
    """^Z, bg, kill %1: the service's TERM handler restoring the terminal's settings from
    the background was stopped by SIGTTOU. In the shared group (the default) litevisor,
    stopping, neither stopped as a job nor continued it when fg made its group the
    foreground: the handler never ran, SIGKILL at the grace's end (QA141 D1)."""
    done = tmp_path / "done"
    (tmp_path / "svc.py").write_text(RESTORES_TERMINAL_ON_TERM.format(
        delay=0, done=str(done), pid=str(tmp_path / "pid")))
    sh = shell_running_svc_py(litevisor_bin, tmp_path, group)
    try:
        mark = sh.type(b"\x1a")
        assert sh.wait_for(b"PROMPT$ ", 5, mark), sh.out[mark:]
        sh.type(b"bg\n")
        time.sleep(1)
        sh.type(b"kill %1\n")
        time.sleep(1.5)
        assert not done.exists()  # stopped by SIGTTOU in its handler, in the background
        mark = sh.type(b"fg\n")
        poll(lambda: done.exists(), timeout=5, log=tmp_path / "lv.err")
        assert sh.wait_for(b"PROMPT$ ", 10, mark), sh.out[mark:]
    finally:
        sh.close()


@pytest.mark.parametrize("service", ["plain", "stops itself"])
@pytest.mark.parametrize("group", ["shared", "own"])
def test_ctrl_z_during_the_grace_does_not_hold_the_service(litevisor_bin, tmp_path, group,
                                                          service):
    """While stopping, litevisor drops a TSTP so that the service does not sit out the grace,
    but the terminal's ^Z stopped the service itself: it was SIGKILLed at the grace's end,
    its TERM handler unfinished (QA141 D3); the same for a service that ends its ^Z
    handling with SIGSTOP (QA144 D2). It is continued."""
    done = tmp_path / "done"
    if service == "plain":
        (tmp_path / "svc.py").write_text(
            "import os, signal, time\n"
            f"def on_term(*_):\n    time.sleep(2)\n    open({str(done)!r}, 'w').write('done')\n"
            "    os._exit(0)\n"
            "signal.signal(signal.SIGTERM, on_term)\n"
            f"open({str(tmp_path / 'pid')!r}, 'w').write(str(os.getpid()))\n"
            "while True:\n    time.sleep(0.1)\n")
    else:
        (tmp_path / "svc.py").write_text(STOPS_ITSELF_ON_TSTP.format(
            done=str(done), pid=str(tmp_path / "pid"), ticks=str(tmp_path / "ticks")))
    sh = shell_running_svc_py(litevisor_bin, tmp_path, group)
    try:
        os.kill(_ppid_of(int(read_lines(tmp_path / "pid")[0])), signal.SIGTERM)
        time.sleep(0.5)
        mark = sh.type(b"\x1a")  # during the TERM handler's 2 s
        poll(lambda: done.exists(), timeout=8, log=tmp_path / "lv.err")
        assert sh.wait_for(b"PROMPT$ ", 10, mark), sh.out[mark:]
    finally:
        sh.close()


def test_bg_then_fg_at_once_leaves_no_service_stopped_in_the_foreground(litevisor_bin,
                                                                        tmp_path):
    """`bg; fg` in the shared group: the service read the terminal before fg handed it over
    and was stopped by SIGTTIN; by the time litevisor looked its group held the terminal
    again, so it did nothing: no prompt, and typed lines reached nobody (QA141 D2). It is
    continued, as it can read the terminal now."""
    got = tmp_path / "got"
    (tmp_path / "c.yml").write_text("dbs: []\n")
    sh = InteractiveBash(tmp_path)
    try:
        sh.type(f"{litevisor_bin} run -config c.yml -- sh -c 'while read l; do "
                f"echo \"got:$l\" >> {got}; done' 2>lv.err\n".encode())
        time.sleep(1)
        for i in range(12):
            mark = sh.type(b"\x1a")
            assert sh.wait_for(b"PROMPT$ ", 5, mark), sh.out[mark:]
            mark = sh.type(b"bg; fg\n")
            time.sleep(0.5)
            sh.type(f"line{i}\n".encode())
            end = time.monotonic() + 3
            while f"got:line{i}" not in read_lines(got) and time.monotonic() < end:
                time.sleep(0.05)
            if f"got:line{i}" not in read_lines(got):
                # a plain job's way out: shown stopped, the prompt back
                assert sh.wait_for(b"PROMPT$ ", 2, mark), (i, sh.out[mark:])
                sh.type(b"fg\n")
                time.sleep(0.5)
    finally:
        sh.close()


# Signals litevisor left at their default action used to kill it when not PID 1 (Nomad
# raw_exec): the service was orphaned and the final flush never ran. XFSZ, PIPE, TTIN and
# TTOU are ignored instead (signals.h); the fault signals and KILL/STOP are never caught.
CAUGHT_TOO = ["ALRM", "PWR", "VTALRM", "PROF", "STKFLT", "IO", "URG", "XCPU", "RTMIN", "RTMIN+5",
              "RTMAX"]


def _signum(name):
    base, _, off = name.partition("+")
    return getattr(signal, "SIG" + base) + int(off or 0)


def test_every_catchable_signal_reaches_the_service_and_the_flush_still_runs(litevisor_bin,
                                                                             tmp_path, runs):
    (tmp_path / "data").mkdir()
    rec, ready = tmp_path / "signals", tmp_path / "ready"
    traps = [x for name in CAUGHT_TOO for x in ("--trap", name)]
    r = start(runs, litevisor_bin, tmp_path,
              SERVICE + ["--record", str(rec), "--ready", str(ready)] + traps,
              config=db_config(tmp_path))
    poll(lambda: read_lines(ready), timeout=30)
    for name in CAUGHT_TOO:
        os.kill(r.pid, _signum(name))
        poll(lambda: name in read_lines(rec) or r.p.poll() is not None, timeout=5)
        assert r.p.poll() is None, f"litevisor died of SIG{name}: {r.stderr()}"
    os.kill(r.pid, signal.SIGTERM)
    assert r.wait(timeout=30) == 0, r.stderr()
    assert read_lines(rec) == CAUGHT_TOO + ["TERM"], r.stderr()
    assert "final flush done" in r.stderr(), r.stderr()


def test_replicate_without_a_service_survives_stray_signals(litevisor_bin, tmp_path):
    (tmp_path / "data").mkdir()
    cfg = tmp_path / "lv.yml"
    cfg.write_text(db_config(tmp_path))
    p = Background([litevisor_bin, "replicate", "-config", str(cfg)], tmp_path / "replicate.log",
                   dict(os.environ))
    try:
        poll(lambda: "replicating" in p.stderr(), timeout=30)
        for name in ("ALRM", "PWR", "RTMIN+3"):
            os.kill(p.pid, _signum(name))
            poll(lambda: f"signal={name}" in p.stderr() or p.p.poll() is not None, timeout=5)
            assert p.p.poll() is None, f"replicate died of SIG{name}: {p.stderr()}"
        os.kill(p.pid, signal.SIGTERM)
        assert p.wait(timeout=30) == 0, p.stderr()
    finally:
        p.kill()


def test_tstp_is_forwarded_and_stops_litevisor_as_a_job_until_cont(litevisor_bin, tmp_path, runs):
    """As dumb-init: the service gets TSTP, litevisor stops itself so a shell sees
    its job stopped; a CONT resumes litevisor and is forwarded. (In a process group of
    its own, as a shell's job: in an orphaned one it would not stop, as a plain program
    does not.)"""
    rec, ready = tmp_path / "signals", tmp_path / "ready"
    r = start(runs, litevisor_bin, tmp_path,
              SERVICE + ["--record", str(rec), "--ready", str(ready), "--trap", "TSTP",
                         "--trap", "CONT"], own_group=True)
    poll(lambda: read_lines(ready))
    os.kill(r.pid, signal.SIGTSTP)
    poll(lambda: "TSTP" in read_lines(rec), timeout=5)
    poll(lambda: proc_stat(r.pid)[0] == "T", timeout=5)
    os.kill(r.pid, signal.SIGCONT)
    poll(lambda: "CONT" in read_lines(rec), timeout=5)
    assert proc_stat(r.pid)[0] != "T"
    os.kill(r.pid, signal.SIGTERM)
    assert r.wait() == 0, r.stderr()
    assert ends_with_stop(read_lines(rec), ["TSTP", "CONT"]), r.stderr()


def test_a_stopped_service_acts_on_its_stop_signal_at_once(litevisor_bin, tmp_path, runs):
    """A service stopped (SIGSTOP, ^Z) when the TERM comes gets a SIGCONT after it, as
    under systemd or s6: it exits now, not with the SIGKILL at the end of the grace."""
    rec, ready = tmp_path / "signals", tmp_path / "ready"
    r = start(runs, litevisor_bin, tmp_path,
              SERVICE + ["--record", str(rec), "--ready", str(ready), "--term-exit", "7"],
              config="supervisor:\n  stop-grace: 8s\n")
    poll(lambda: read_lines(ready))
    svc = int(read_lines(ready)[0])
    os.kill(svc, signal.SIGSTOP)
    poll(lambda: proc_stat(svc)[0] == "T", timeout=5)
    t0 = time.monotonic()
    os.kill(r.pid, signal.SIGTERM)
    code = r.wait(timeout=30)
    took = time.monotonic() - t0
    assert code == 7, r.stderr()
    assert took < 4, r.stderr()
    assert read_lines(rec) == ["TERM"], r.stderr()


def _drain(fd):
    data = b""
    while True:
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            return data
        if not chunk:
            return data
        data += chunk


def test_sigkill_after_grace_when_service_ignores_term(litevisor_bin, tmp_path, runs):
    ready = tmp_path / "ready"
    r = start(runs, litevisor_bin, tmp_path,
              SERVICE + ["--ignore-term", "--ready", str(ready)],
              config="supervisor:\n  stop-grace: 1s\n")
    poll(lambda: read_lines(ready))
    svc = int(read_lines(ready)[0])
    t0 = time.monotonic()
    os.kill(r.pid, signal.SIGTERM)
    code = r.wait()
    took = time.monotonic() - t0
    assert code == 128 + signal.SIGKILL, r.stderr()
    assert 0.9 <= took < 5, took
    assert proc_stat(svc) is None
    assert "grace period over" in r.stderr()


def test_leftover_children_are_stopped_when_the_service_exits(litevisor_bin, tmp_path, runs):
    """The service exits leaving a long-lived orphan: litevisor TERMs it and waits for it."""
    pids = tmp_path / "pids"
    r = start(runs, litevisor_bin, tmp_path,
              SERVICE + ["--orphans", "1", "--orphan-life", "60", "--pids", str(pids), "--sleep", "0.3"])
    assert r.wait() == 0, r.stderr()
    orphan = int(read_lines(pids)[0])
    assert proc_stat(orphan) is None, "orphan still alive after litevisor exited"


@pytest.mark.parametrize("how", ["service exits", "stop signal"])
def test_worker_behind_a_wrapper_gets_one_term_once_re_parented(litevisor_bin, tmp_path, runs,
                                                                 how):
    """A wrapper shell that does not exec its worker is left behind; litevisor TERMs
    it, it dies, its worker is re-parented to litevisor: the worker must get its own
    TERM then (exactly one), not only the KILL at the end of the grace period."""
    rec, ready = tmp_path / "rec", tmp_path / "ready"
    worker = " ".join(shlex.quote(str(x)) for x in SERVICE + ["--record", rec, "--ready", ready])
    wrapper = tmp_path / "wrapper.sh"
    wrapper.write_text("#!/bin/sh\n"
                       f"( sh -c {shlex.quote(worker + '; true')} & )\n"
                       f"while [ ! -s {shlex.quote(str(ready))} ]; do sleep 0.05; done\n"
                       + ("exit 3\n" if how == "service exits" else "sleep 60\n"))
    wrapper.chmod(0o755)
    r = start(runs, litevisor_bin, tmp_path, [str(wrapper)],
              config="supervisor:\n  stop-grace: 8s\n")
    poll(lambda: read_lines(ready))
    t0 = time.monotonic()
    if how == "stop signal":
        os.kill(r.pid, signal.SIGTERM)
    code = r.wait()
    assert code == (3 if how == "service exits" else 143), r.stderr()
    assert time.monotonic() - t0 < 4, r.stderr()  # not the 8 s grace period
    assert read_lines(rec) == ["TERM"], r.stderr()
    assert proc_stat(int(read_lines(ready)[0])) is None
    assert "grace period over" not in r.stderr()


def test_a_tree_ignoring_term_is_killed_whole_before_the_final_flush(litevisor_bin, tmp_path,
                                                                     runs):
    """Three shells deep, every level ignoring TERM, a writer commits every 20 ms. At the
    deadline every descendant must die, however deep (not only litevisor's children,
    whose own children would be re-parented and go on writing after the final flush):
    nothing of the tree outlives litevisor, and the replica holds every row."""
    db, rep, pids = tmp_path / "app.db", tmp_path / "rep", tmp_path / "pids"
    writer = tmp_path / "writer.py"
    writer.write_text(
        "import os, signal, sqlite3, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "open(sys.argv[2], 'a').write('%d\\n' % os.getpid())\n"
        "c = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=5)\n"
        "c.execute('PRAGMA journal_mode=wal')\n"
        "c.execute('CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, ts REAL)')\n"
        "while True:\n"
        "    c.execute('INSERT INTO t(ts) VALUES (?)', (time.time(),))\n"
        "    time.sleep(0.02)\n")
    chain = tmp_path / "chain.sh"
    chain.write_text("#!/bin/sh\ntrap '' TERM\necho $$ >> \"$PIDS\"\n"
                     "if [ \"$1\" -gt 0 ]; then \"$0\" $(($1 - 1)) & while :; do sleep 0.1; done\n"
                     f"else exec {shlex.quote(SERVICE[0])} {shlex.quote(str(writer))} \"$DB\" \"$PIDS\"; fi\n")
    chain.chmod(0o755)
    cfg = ("restore:\n  allow-empty-when-unreachable: true\n"
           "supervisor:\n  stop-grace: 1s\n"
           f"dbs:\n  - path: {db}\n    replicas:\n      - url: file://{rep}\n"
           "        sync-interval: 10s\n")
    r = start(runs, litevisor_bin, tmp_path,
              ["sh", "-c", f"{shlex.quote(str(chain))} 3 & sleep 1; exit 0"], config=cfg,
              env={"PIDS": str(pids), "DB": str(db)})
    assert r.wait(timeout=30) == 0, r.stderr()
    tree = [int(x) for x in read_lines(pids)]
    assert len(tree) == 5, (tree, r.stderr())  # chain 3, 2, 1, 0 and the writer (exec'd by 0)
    alive = [p for p in set(tree) if proc_stat(p) is not None]
    assert alive == [], r.stderr()
    assert "still not gone" not in r.stderr()
    out = tmp_path / "restored.db"
    p = subprocess.run([litevisor_bin, "restore", "-o", str(out), f"file://{rep}"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    count = lambda path: sqlite3.connect(path).execute("SELECT count(*) FROM t").fetchone()[0]  # noqa: E731
    assert count(out) == count(db) > 0


# ---------------------------------------------------------------- reaping

def test_orphans_reaped_as_subreaper(litevisor_bin, tmp_path, runs):
    pids, ready = tmp_path / "pids", tmp_path / "ready"
    port = free_port()
    r = start(runs, litevisor_bin, tmp_path,
              SERVICE + ["--orphans", "5", "--orphan-life", "0.5", "--pids", str(pids),
                         "--ready", str(ready)],
              config=f"addr: 127.0.0.1:{port}\n")
    poll(lambda: read_lines(ready))
    orphans = [int(x) for x in read_lines(pids)]
    assert len(orphans) == 5
    # Re-parented to litevisor (PR_SET_CHILD_SUBREAPER), not to init.
    parents = {proc_stat(p)[1] for p in orphans if proc_stat(p)}
    assert parents <= {r.pid}, parents
    poll(lambda: all(proc_stat(p) is None for p in orphans), timeout=10)
    assert zombies_of(r.pid) == []
    _, _, body = curl(f"http://127.0.0.1:{port}/metrics")
    m = re.search(r"^litevisor_orphans_reaped_total (\d+)$", body, re.M)
    assert m and int(m.group(1)) >= 5, body
    # The service itself is still running: orphans' exits were not taken for its exit.
    assert r.p.poll() is None
    os.kill(r.pid, signal.SIGTERM)
    assert r.wait() == 0


def _child_of(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            kids = f.read().split()
        return int(kids[0]) if kids else None
    except FileNotFoundError:
        return None


@pytest.mark.skipif(not _unshare_ok(), reason="needs root and unshare --pid")
def test_orphans_reaped_and_signals_forwarded_as_pid1(litevisor_bin, tmp_path, runs):
    pids, ready, rec = tmp_path / "pids", tmp_path / "ready", tmp_path / "signals"
    r = start(runs, litevisor_bin, tmp_path,
              SERVICE + ["--orphans", "5", "--orphan-life", "0.5", "--pids", str(pids),
                         "--ready", str(ready), "--record", str(rec), "--term-exit", "3"],
              wrap=["unshare", "--pid", "--fork", "--mount-proc"])
    poll(lambda: read_lines(ready))
    lv = poll(lambda: _child_of(r.pid))  # litevisor, PID 1 inside the namespace
    with open(f"/proc/{lv}/status") as f:
        nspid = [l for l in f if l.startswith("NSpid:")][0].split()
    assert nspid[-1] == "1", nspid
    # Orphans are listed with their namespace pids; find them as litevisor's children here.
    # Each process's stat is read once: an orphan may exit between two reads.
    def live_orphans():
        kid = _child_of(lv)
        stats = ((int(d), proc_stat(int(d))) for d in os.listdir("/proc") if d.isdigit())
        return [p for p, st in stats if st and st[1] == lv and st[0] != "Z" and p != kid]
    poll(lambda: not live_orphans(), timeout=10)
    assert zombies_of(lv) == []
    os.kill(lv, signal.SIGUSR1)
    poll(lambda: "USR1" in read_lines(rec))
    os.kill(lv, signal.SIGTERM)
    assert r.wait() == 3, r.stderr()
    assert read_lines(rec) == ["USR1", "TERM"]


@pytest.mark.skipif(not _unshare_ok(), reason="needs root and unshare --pid")
@pytest.mark.parametrize("groups", [0, 300])
def test_in_a_pid_namespace_seeing_anothers_proc_only_its_own_leftovers_are_signalled(
        litevisor_bin, tmp_path, groups):
    """Under `unshare --pid --fork` without --mount-proc (a sandbox binding the host's
    /proc) the sweep compared /proc's pids, the host's, with litevisor's own: its
    leftover got no TERM, and unrelated processes of the namespace whose numbers matched
    children of a host process (kernel threads) were killed: 23 of 30 (QA134 D3). The
    tree is walked in /proc's numbering and signalled in litevisor's (NSpid). With
    hundreds of supplementary groups (a directory service's user) the Groups: line
    pushed NSpid: past the one read of the status file: no TERM again (QA153 D2)."""
    svc = tmp_path / "svc.py"
    svc.write_text(
        "import os, signal, sys, time\n"
        f"log = {str(tmp_path / 'gc.log')!r}\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    if os.fork() == 0:\n"
        "        def h(s, f):\n"
        "            open(log, 'a').write('TERM\\n'); os._exit(0)\n"
        "        signal.signal(signal.SIGTERM, h)\n"
        "        open(log, 'a').write('started\\n')\n"
        "        while True: time.sleep(0.05)\n"
        "    os._exit(0)\n"
        "os.wait(); time.sleep(1.0)\n")
    cfg = tmp_path / "c.yml"
    cfg.write_text("dbs: []\nsupervisor:\n  stop-grace: 3s\n")
    res = tmp_path / "res"
    inner = (f"{shlex.quote(litevisor_bin)} run -config {cfg} -- {sys.executable} {svc} "
             f"2>{tmp_path}/err & lv=$!\n"
             "sibs=''; i=0; while [ $i -lt 30 ]; do sleep 60 & sibs=\"$sibs $!\"; i=$((i+1)); done\n"
             "wait $lv; echo rc=$? > " + str(res) + "\n"
             "for s in $sibs; do kill -0 $s 2>/dev/null || echo gone $s >> " + str(res) + "; done\n"
             "kill $sibs 2>/dev/null\n")
    subprocess.run(["unshare", "--pid", "--fork", "sh", "-c", inner], timeout=60,
                   preexec_fn=lambda: os.setgroups(range(1000000000, 1000000000 + groups)))
    out = res.read_text()
    err = (tmp_path / "err").read_text()
    assert out.splitlines()[0] == "rc=0", (out, err)
    assert "gone" not in out, (out, err)
    assert (tmp_path / "gc.log").read_text().split() == ["started", "TERM"], err
    assert "grace period over" not in err, err


@pytest.mark.skipif(not _unshare_ok(), reason="needs root and unshare --pid")
def test_pid_1_started_in_the_background_leaves_the_terminal_to_the_shell(litevisor_bin,
                                                                        tmp_path):
    """PID 1 of a pid namespace started with &: the shell's group lies outside the
    namespace, tcgetpgrp() and getpgrp() both said 0, equal, so litevisor "was in the
    foreground" and took the terminal; the shell exited (QA138 D1)."""
    (tmp_path / "c.yml").write_text("dbs: []\nsupervisor:\n  new-process-group: true\n")
    sh = InteractiveBash(tmp_path)
    try:
        sh.type(f"unshare -pf --mount-proc {litevisor_bin} run -config c.yml -- sleep 3 "
                f"2>lv.err &\n".encode())
        time.sleep(1)
        mark = sh.type(b"echo ALIVE$((40+2))\n")
        assert sh.wait_for(b"ALIVE42", 5, mark), sh.out[mark:]
        time.sleep(3)  # the service exits: nothing is taken back either
        mark = sh.type(b"wait; echo AGAIN$((40+3))\n")
        assert sh.wait_for(b"AGAIN43", 5, mark), sh.out[mark:]
    finally:
        sh.close()


# ---------------------------------------------------------------- HTTP

@pytest.mark.parametrize("target", ["loopback", "elsewhere"])
def test_a_loopback_probe_never_goes_through_http_proxy(litevisor_bin, tmp_path, runs, target):
    """With $http_proxy set (Docker hands its client's proxy to containers), libcurl
    sent the readiness probe of the local service through it: a proxy answering for a
    service that was not even listening made /readyz 200 (QA89 D2); the Consul and S3
    clients sent loopback requests (the Consul token too) the same way. Loopback is
    never proxied, as in Go's clients (Litestream, Nomad, Consul); other hosts still are.
    The "proxy" is a stand-in on loopback: nothing leaves this machine."""
    port, dead = free_port(), free_port()
    proxy, got = kuma_stand_in()
    url = f"http://127.0.0.1:{dead}/ping" if target == "loopback" else "http://svc.invalid/ping"
    start(runs, litevisor_bin, tmp_path, ["sleep", "30"],
          config=f"addr: 127.0.0.1:{port}\ndbs: []\nhealth:\n  probe-url: {url}\n"
                 "  probe-interval: 100ms\n  probe-timeout: 1s\n",
          env={"http_proxy": f"http://127.0.0.1:{proxy.server_port}", "no_proxy": "",
               "NO_PROXY": ""})
    base = f"http://127.0.0.1:{port}"
    try:
        poll(lambda: subprocess.run(["curl", "-s", base + "/livez"],
                                    capture_output=True).returncode == 0)
        if target == "loopback":
            time.sleep(1.0)  # ten probes
            assert curl(base + "/readyz")[0] == 503 and not got, got
        else:
            poll(lambda: curl(base + "/readyz")[0] == 200)
            assert "http://svc.invalid/ping" in got, got
    finally:
        proxy.shutdown()


@pytest.mark.parametrize("skip", [False, True])
def test_an_https_probe_of_a_self_signed_service_passes_only_with_skip_verify(
        litevisor_bin, tmp_path, runs, skip):
    """A service serving TLS with its own certificate (vaultwarden's ROCKET_TLS): the
    probe verifies it and fails, naming why, unless health.probe-skip-verify (Nomad's
    and Consul's tls_skip_verify)."""
    import http.server
    import ssl
    import threading
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)

    class Ping(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *a):
            pass

    svc = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Ping)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    svc.socket = ctx.wrap_socket(svc.socket, server_side=True)
    threading.Thread(target=svc.serve_forever, daemon=True).start()
    port = free_port()
    try:
        start(runs, litevisor_bin, tmp_path, ["sleep", "30"],
              config=f"addr: 127.0.0.1:{port}\ndbs: []\nhealth:\n"
                     f"  probe-url: https://127.0.0.1:{svc.server_port}/ping\n"
                     f"  probe-interval: 100ms\n  probe-timeout: 1s\n"
                     f"  probe-skip-verify: {'true' if skip else 'false'}\n")
        base = f"http://127.0.0.1:{port}"
        poll(lambda: subprocess.run(["curl", "-s", base + "/livez"],
                                    capture_output=True).returncode == 0)
        if skip:
            poll(lambda: curl(base + "/readyz")[0] == 200)
        else:
            poll(lambda: "certificate" in curl(base + "/healthz")[2])
            probe = json.loads(curl(base + "/healthz")[2])["checks"]["service:probe"][0]
            assert probe["status"] == "fail", probe
            time.sleep(0.5)
            assert curl(base + "/readyz")[0] == 503
    finally:
        svc.shutdown()


def test_health_endpoints_follow_the_service_probe(litevisor_bin, tmp_path, runs):
    port, svc_port = free_port(), free_port()
    go = tmp_path / "go"
    kuma, got = kuma_stand_in()
    r = start(runs, litevisor_bin, tmp_path,
              SERVICE + ["--serve", str(svc_port), "--go", str(go)],
              config=f"addr: 127.0.0.1:{port}\n"
                     f"health:\n  probe-url: http://127.0.0.1:{svc_port}/ping\n"
                     f"  probe-interval: 100ms\n  probe-timeout: 1s\n"
                     f"  push-url: http://127.0.0.1:{kuma.server_port}/api/push/t\n"
                     f"  push-interval: 100ms\n")
    base = f"http://127.0.0.1:{port}"
    poll(lambda: subprocess.run(["curl", "-s", base + "/livez"], capture_output=True).returncode == 0)
    assert curl(base + "/livez")[0] == 200
    # before the first probe it may read "service not running" (the fork) or the phase
    seen = []
    poll(lambda: seen.append(curl(base + "/readyz")) or seen[-1][2].startswith(
        "not ready: service probe"), timeout=10)
    assert seen[-1][0] == 503 and all(s[0] == 503 for s in seen), seen
    status, ctype, body = curl(base + "/healthz")
    assert status == 503 and ctype == "application/health+json"
    doc = json.loads(body)
    assert doc["status"] == "fail" and '"status":"fail"' in body
    assert doc["checks"]["service:probe"][0]["status"] == "fail"
    # the process runs: its own check passes (a failed one read as a crash)
    proc = doc["checks"]["service:process"][0]
    assert proc["status"] == "pass" and proc["phase"] == "running" and "output" not in proc, proc

    go.write_text("")
    poll(lambda: curl(base + "/readyz")[0] == 200, timeout=10)
    assert curl(base + "/readyz")[2] == "ok\n"
    status, ctype, body = curl(base + "/healthz")
    assert status == 200 and '"status":"pass"' in body, body
    assert " " not in body.split('"description"')[0], "health JSON must be compact"
    doc = json.loads(body)
    assert doc["checks"]["service:process"][0]["pid"] > 0
    status2, _, body2 = curl(base + "/status")
    assert status2 == 200 and json.loads(body2)["status"] == "pass"
    assert curl(base + "/nope")[0] == 404
    # Uptime-Kuma: nothing while the service came up (no alert for a deploy), up once
    # ready, and down with the reason once its probe fails after that
    poll(lambda: any("status=up" in p for p in got), timeout=10)
    assert not [p for p in got if "status=down" in p], got
    go.unlink()
    poll(lambda: any("status=down&msg=service%20probe" in p for p in got), timeout=10)
    kuma.shutdown()
    os.kill(r.pid, signal.SIGTERM)
    assert r.wait() == 0


DRAINING_SERVICE = r"""
import http.server, os, signal, sys, time
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")
    def log_message(self, *a):
        pass
srv = http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H)
def term(*a):
    srv.socket.close()  # no new connections, then the requests under way drain
    time.sleep(2)
    os._exit(0)
signal.signal(signal.SIGTERM, term)
srv.serve_forever()
"""


def test_a_probe_the_stop_makes_fail_is_no_warning(litevisor_bin, tmp_path, runs):
    """A service that closes its listener at TERM and drains for a while (most HTTP
    servers): the probe thread, which never looked at the phase, logged WARN "service
    probe fails ... Couldn't connect to server" at every graceful stop (QA172 D3)."""
    svc_port = free_port()
    svc = tmp_path / "svc.py"
    svc.write_text(DRAINING_SERVICE)
    r = start(runs, litevisor_bin, tmp_path, ["/usr/bin/python3", str(svc), str(svc_port)],
              config=f"health:\n  probe-url: http://127.0.0.1:{svc_port}/\n"
                     f"  probe-interval: 100ms\n")
    poll(lambda: "service probe passes" in r.stderr(), timeout=10)
    os.kill(r.pid, signal.SIGTERM)
    assert r.wait() == 0, r.stderr()
    after = r.stderr().split("supervisor: stopping", 1)[1]
    assert not [l for l in after.splitlines() if "service probe fails" in l and " WARN " in l], \
        r.stderr()


def test_restart_on_failure_with_backoff_then_ready(litevisor_bin, tmp_path, runs):
    port = free_port()
    count = tmp_path / "count"
    r = start(runs, litevisor_bin, tmp_path,
              SERVICE + ["--count", str(count), "--fail-until", "3"],
              config=f"addr: 127.0.0.1:{port}\nsupervisor:\n  restart: on-failure\n"
                     f"  restart-limit: 5\n  restart-delay: 100ms\n  restart-delay-max: 1s\n")
    base = f"http://127.0.0.1:{port}"
    poll(lambda: read_lines(count) == ["3"], timeout=10)
    poll(lambda: curl(base + "/readyz")[0] == 200, timeout=10)
    _, _, body = curl(base + "/metrics")
    assert re.search(r"^litevisor_service_restarts_total 2$", body, re.M), body
    os.kill(r.pid, signal.SIGTERM)
    assert r.wait() == 0


def test_restart_limit_then_exit_with_service_code(litevisor_bin, tmp_path, runs):
    count = tmp_path / "count"
    r = start(runs, litevisor_bin, tmp_path,
              SERVICE + ["--count", str(count), "--fail-until", "100"],
              config="supervisor:\n  restart: on-failure\n  restart-limit: 2\n"
                     "  restart-delay: 50ms\n  restart-delay-max: 100ms\n")
    assert r.wait() == 1, r.stderr()
    assert read_lines(count) == ["3"]
    # giving up is said, not only "stopping" (QA77)
    assert "restart-limit reached, not restarting code=1 restarts=2 limit=2" in r.stderr()


LEAVES_A_CHILD = (  # run 1 leaves a child that ignores nothing and exits 3; run 2 looks for it
    "import os, subprocess, sys, time\n"
    "d = sys.argv[1]\n"
    "if not os.path.exists(d + '/child'):\n"
    "    c = subprocess.Popen(['sleep', '600'], start_new_session=True)\n"
    "    open(d + '/child', 'w').write(str(c.pid))\n"
    "    sys.exit(3)\n"
    "pid = int(open(d + '/child').read())\n"
    "try:\n"
    "    st = open('/proc/%d/stat' % pid).read().split(')')[1].split()[0]\n"
    "except OSError:\n"
    "    st = 'gone'\n"
    "open(d + '/seen', 'w').write(st)\n")


def test_a_restart_does_not_run_beside_what_the_failed_run_left(litevisor_bin, tmp_path):
    """The failed run left a child behind (its own session, so not in its process
    group). It kept running beside the restarted service, holding whatever it held
    (the port, the database: QA19). It now gets TERM when the run fails and KILL if
    still there when the backoff ends, before the restart."""
    cfg = tmp_path / "c.yml"
    cfg.write_text("supervisor:\n  restart: on-failure\n  restart-limit: 1\n"
                   "  restart-delay: 300ms\n")
    p = subprocess.run([litevisor_bin, "run", "-config", str(cfg), "--", SERVICE[0], "-c",
                        LEAVES_A_CHILD, str(tmp_path)], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    # gone, or a zombie not yet reaped: never still running
    assert (tmp_path / "seen").read_text() in ("gone", "Z"), p.stderr
    assert "terminating what the failed run left behind" in p.stderr, p.stderr

@pytest.mark.parametrize("sig", [signal.SIGQUIT, signal.SIGHUP])
def test_a_service_killed_by_a_signal_from_outside_is_stopped_not_restarted(
        litevisor_bin, tmp_path, runs, sig):
    """A stop signal other than TERM/INT (Docker STOPSIGNAL SIGQUIT, a Nomad kill_signal,
    `docker kill -s HUP`) is forwarded, and the service died of it: with restart:
    on-failure it was restarted, again and again, until the orchestrator's SIGKILL, and
    the final flush never ran (QA89 O1). Someone asked it to end: litevisor stops. A
    service killed by the same signal on its own is still restarted."""
    cfg = "dbs: []\nsupervisor:\n  restart: on-failure\n  restart-limit: 1\n  restart-delay: 200ms\n"
    r = start(runs, litevisor_bin, tmp_path, ["sleep", "30"], config=cfg)
    poll(lambda: "service started" in r.stderr(), timeout=10)
    os.kill(r.pid, sig)
    assert r.wait(timeout=20) == 128 + sig, r.stderr()
    err = r.stderr()
    assert "died of a signal sent to it from outside" in err, err
    assert "restarting after backoff" not in err and err.count("service started") == 1, err
    (tmp_path / "own").mkdir()
    r = start(runs, litevisor_bin, tmp_path / "own",
              ["sh", "-c", f"sleep 0.2; kill -{sig.name[3:]} $$"], config=cfg)
    assert r.wait(timeout=20) == 128 + sig, r.stderr()
    assert "restarting after backoff" in r.stderr(), r.stderr()


def test_a_service_exiting_with_a_code_on_a_forwarded_quit_is_stopped_not_restarted(
        litevisor_bin, tmp_path, runs):
    """A STOPSIGNAL SIGQUIT is forwarded, and the service ends on it with a code of its
    own (Go programs exit 2; one that catches it for a graceful stop): with restart:
    on-failure it was restarted, until the orchestrator's SIGKILL cut the final flush
    (QA114 O10). Within stop-grace of the QUIT, it was asked to end: litevisor stops,
    with its code. One that fails on its own is still restarted."""
    cfg = "dbs: []\nsupervisor:\n  restart: on-failure\n  restart-limit: 1\n  restart-delay: 200ms\n"
    ready = tmp_path / "ready"
    svc = ["sh", "-c", f"trap 'exit 2' QUIT; touch {ready}; sleep 30 & wait"]
    r = start(runs, litevisor_bin, tmp_path, svc, config=cfg)
    poll(lambda: ready.exists(), timeout=10)  # its trap is set: not killed by the QUIT
    os.kill(r.pid, signal.SIGQUIT)
    assert r.wait(timeout=20) == 2, r.stderr()
    err = r.stderr()
    assert "exited on a QUIT sent to it from outside" in err, err
    assert "restarting after backoff" not in err and err.count("service started") == 1, err
    (tmp_path / "own").mkdir()
    r = start(runs, litevisor_bin, tmp_path / "own", ["sh", "-c", "sleep 0.2; exit 2"],
              config=cfg)
    assert r.wait(timeout=20) == 2, r.stderr()
    assert "restarting after backoff" in r.stderr(), r.stderr()


def test_a_stop_signal_in_a_restart_backoff_stops_instead_of_the_restart(
        litevisor_bin, tmp_path, runs):
    """QUIT (a `STOPSIGNAL SIGQUIT`, a Nomad kill_signal) while the service waits for its
    restart: with no service to forward it to, it was dropped and the service restarted
    after the stop was asked for (QA110 O1). It stops litevisor, 131; USR1 and HUP are
    still dropped."""
    sig = signal.SIGQUIT
    cfg = "dbs: []\nsupervisor:\n  restart: on-failure\n  restart-limit: 3\n  restart-delay: 3s\n"
    r = start(runs, litevisor_bin, tmp_path, ["sh", "-c", "exit 3"], config=cfg)
    poll(lambda: "restarting after backoff" in r.stderr(), timeout=10)
    os.kill(r.pid, signal.SIGUSR1)
    os.kill(r.pid, signal.SIGHUP)
    poll(lambda: "signal dropped: no service running signal=HUP" in r.stderr(), timeout=10)
    os.kill(r.pid, sig)
    assert r.wait(timeout=10) == 128 + sig, r.stderr()
    assert r.stderr().count("service started") == 1, r.stderr()


def test_a_restart_spares_the_children_litevisor_had_before_the_service(litevisor_bin, tmp_path):
    """An entrypoint's `helper & exec litevisor run …` (cron, a log shipper): the helper
    is litevisor's child from the start. Before a restart every direct child was taken
    for what the failed run left behind and got TERM, then KILL (QA89 D3). It is spared
    now, it and its own child, while the service restarts; at the final stop it is
    stopped with the rest."""
    cfg = tmp_path / "c.yml"
    cfg.write_text("dbs: []\nsupervisor:\n  restart: on-failure\n  restart-limit: 1\n"
                   "  restart-delay: 300ms\n  stop-grace: 2s\n")
    svc = tmp_path / "svc.sh"
    svc.write_text("#!/bin/sh\n"
                   "if [ -e ran-once ]; then\n"
                   "  sleep 0.5\n"
                   "  for f in helper grandchild; do\n"
                   "    kill -0 $(cat $f.pid) 2>/dev/null && echo $f >> alive\n"
                   "  done\n"
                   "  exit 0\n"
                   "fi\n"
                   "touch ran-once; sleep 0.3; exit 3\n")
    svc.chmod(0o755)
    entry = ('sh -c \'echo $$ > helper.pid; '
             '(sh -c "echo \\$\\$ > grandchild.pid; exec sleep 60") & '
             'while :; do sleep 0.1; done\' & '
             f'exec "{litevisor_bin}" run -config "{cfg}" -- ./svc.sh')
    p = subprocess.run(["sh", "-c", entry], cwd=tmp_path, capture_output=True, text=True,
                       timeout=30)
    assert p.returncode == 0, p.stderr
    assert "restarting after backoff" in p.stderr, p.stderr
    assert (tmp_path / "alive").read_text() == "helper\ngrandchild\n", p.stderr


def test_a_run_at_least_restart_reset_long_starts_the_restart_count_over(
        litevisor_bin, tmp_path, runs):
    """restart-limit counts consecutive restarts: a service that ran at least
    restart-reset before failing was a fresh start. Each run here lasts 0.4 s
    (restart-reset 300ms) and fails, five times, then exits 0: litevisor gave
    up at the third failure (restart-limit 2) with the service's code."""
    count = tmp_path / "count"
    script = ("import os, sys, time\n"
              f"p = {str(count)!r}\n"
              "n = len(open(p).read().split()) + 1 if os.path.exists(p) else 1\n"
              "open(p, 'a').write('%d\\n' % n)\n"
              "time.sleep(0.4)\n"
              "sys.exit(1 if n <= 5 else 0)\n")
    r = start(runs, litevisor_bin, tmp_path, [SERVICE[0], "-c", script],
              config="supervisor:\n  restart: on-failure\n  restart-limit: 2\n"
                     "  restart-delay: 50ms\n  restart-delay-max: 100ms\n  restart-reset: 300ms\n")
    assert r.wait(timeout=30) == 0, r.stderr()
    assert read_lines(count) == [str(i) for i in range(1, 7)]
    assert "restart count and delay start over" in r.stderr()


def test_runs_longer_than_the_longest_backoff_but_short_still_reach_the_restart_limit(
        litevisor_bin, tmp_path, runs):
    """A run longer than restart-delay-max ended the series of restarts, so with a
    small restart-delay-max a service failing 0.2 s after each start was restarted
    for ever, never reaching restart-limit (QA34 #8). Such runs are failed starts
    now: shorter than restart-reset (10 s by default, as Docker's)."""
    count = tmp_path / "count"
    script = ("import os, sys, time\n"
              f"p = {str(count)!r}\n"
              "open(p, 'a').write('x\\n')\n"
              "time.sleep(0.2)\n"
              "sys.exit(3)\n")
    r = start(runs, litevisor_bin, tmp_path, [SERVICE[0], "-c", script],
              config="supervisor:\n  restart: on-failure\n  restart-limit: 2\n"
                     "  restart-delay: 1ms\n  restart-delay-max: 100ms\n")
    assert r.wait(timeout=30) == 3, r.stderr()
    assert len(read_lines(count)) == 3, r.stderr()


def test_a_stderr_nobody_reads_does_not_hold_up_the_stop(litevisor_bin, tmp_path):
    """litevisor's stderr is a pipe whose reader stopped (a stuck log collector) and
    the service filled it. litevisor blocked writing its own log line on TERM: the
    service never got the TERM, no grace, no SIGKILL, no final flush, until the
    orchestrator killed it (QA, 4 of 4). Lines that find no room are now dropped,
    counted, and reported once the pipe drains."""
    got = tmp_path / "got_term"
    script = ("import os, signal, sys, threading, time\n"
              f"signal.signal(signal.SIGTERM, lambda *a: (open({str(got)!r}, 'w').close(), os._exit(0)))\n"
              "threading.Thread(target=lambda: (sys.stderr.write('x' * 1000000), sys.stderr.flush()),\n"
              "                 daemon=True).start()\n"
              "while True:\n"
              "    time.sleep(0.1)\n")
    cfg = tmp_path / "lv.yml"
    cfg.write_text("supervisor:\n  stop-grace: 2s\n  flush-timeout: 1s\n")
    rd, wr = os.pipe()
    p = subprocess.Popen([litevisor_bin, "run", "-config", str(cfg), "--", SERVICE[0], "-c", script],
                         stdout=subprocess.DEVNULL, stderr=wr)
    os.close(wr)
    try:
        time.sleep(1.5)  # the service's thread fills the pipe and blocks
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=10) == 0
        assert got.exists()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        subprocess.run(["pkill", "-KILL", "-f", str(got)])  # a service left behind
        os.close(rd)


def test_term_during_backoff_stops_without_restart(litevisor_bin, tmp_path, runs):
    port = free_port()
    count = tmp_path / "count"
    r = start(runs, litevisor_bin, tmp_path,
              SERVICE + ["--count", str(count), "--fail-until", "100"],
              config=f"addr: 127.0.0.1:{port}\nsupervisor:\n  restart: on-failure\n"
                     f"  restart-delay: 30s\n  restart-delay-max: 60s\n")
    base = f"http://127.0.0.1:{port}"
    poll(lambda: read_lines(count) == ["1"])
    poll(lambda: "backoff" in curl(base + "/readyz")[2])
    status, _, body = curl(base + "/readyz")
    assert status == 503
    # when the restart comes, not a countdown that stands still (QA77)
    at = re.search(r"restarting at (\S+Z) \(after 30000 ms\)", body)
    assert at, body
    when = datetime.datetime.fromisoformat(at.group(1).replace("Z", "+00:00"))
    left = (when - datetime.datetime.now(datetime.timezone.utc)).total_seconds()
    assert 20 < left <= 30, (body, left)
    os.kill(r.pid, signal.SIGTERM)
    assert r.wait(timeout=10) == 128 + signal.SIGTERM
    assert read_lines(count) == ["1"]


IGNORES_TERM_LEAVES_A_CHILD = (  # a child in a session of its own, ignoring TERM; exits 3
    "import os, signal, sys, time\n"
    "if os.fork() == 0:\n"
    "    signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "    os.setsid()\n"
    "    open(sys.argv[1], 'w').write(str(os.getpid()))\n"
    "    time.sleep(600)\n"
    "    os._exit(0)\n"
    "time.sleep(0.3)\n"
    "sys.exit(3)\n")


def test_term_during_backoff_gives_leftovers_only_what_is_left_of_their_grace(
        litevisor_bin, tmp_path, runs):
    """What the failed run left behind got its TERM when the run failed. A TERM to
    litevisor during the backoff gave it a whole new stop-grace, so a leftover
    ignoring TERM held the stop that long again (QA77 D2): its grace runs from its
    TERM."""
    child = tmp_path / "child"
    r = start(runs, litevisor_bin, tmp_path, [SERVICE[0], "-c", IGNORES_TERM_LEAVES_A_CHILD,
                                              str(child)],
              config="supervisor:\n  restart: on-failure\n  restart-delay: 30s\n"
                     "  stop-grace: 4s\n")
    poll(lambda: "terminating what the failed run left behind" in r.stderr(), timeout=10)
    time.sleep(2.5)
    t0 = time.monotonic()
    os.kill(r.pid, signal.SIGTERM)
    assert r.wait(timeout=10) == 128 + signal.SIGTERM, r.stderr()
    elapsed = time.monotonic() - t0
    assert elapsed < 3, (elapsed, r.stderr())
    assert "killing remaining processes" in r.stderr() and "service_pid=0" not in r.stderr()
    pid = int(child.read_text())
    poll(lambda: not os.path.exists(f"/proc/{pid}") or
         open(f"/proc/{pid}/stat").read().split(")")[1].split()[0] == "Z")


def test_term_during_backoff_terms_a_leftover_that_came_since(litevisor_bin, tmp_path, runs):
    """A grandchild is re-parented to litevisor only once its parent obeyed the TERM
    the failed run's leftovers got: it never had one. Stopped during the backoff past
    stop-grace since that TERM, litevisor SIGKILLed it without any (QA80 D3): it gets
    its TERM now, and a whole stop-grace."""
    log = tmp_path / "log"
    script = tmp_path / "svc.sh"
    script.write_text("#!/bin/bash\n"
                      "bash -c 'trap \"exit 0\" TERM\n"
                      f"  bash -c \"trap \\\"echo got-TERM >> {log}; exit 0\\\" TERM; "
                      "while :; do sleep 0.1; done\" &\n"
                      "  while :; do sleep 0.1; done' &\n"
                      "sleep 0.5\nexit 1\n")
    script.chmod(0o755)
    r = start(runs, litevisor_bin, tmp_path, [str(script)],
              config="supervisor:\n  restart: on-failure\n  restart-delay: 30s\n"
                     "  stop-grace: 2s\n")
    poll(lambda: "terminating what the failed run left behind" in r.stderr(), timeout=10)
    time.sleep(3)  # past stop-grace since that TERM
    os.kill(r.pid, signal.SIGTERM)
    assert r.wait(timeout=10) == 128 + signal.SIGTERM, r.stderr()
    assert log.exists() and "got-TERM" in log.read_text(), r.stderr()


def parse_prometheus(text):
    """Parse the 0.0.4 text format strictly enough to enforce the naming rules."""
    assert text.endswith("\n")
    helps, types, series, order = {}, {}, set(), []
    label_re = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
    for line in text.split("\n")[:-1]:
        if line.startswith("# HELP "):
            name = line.split()[2]
            assert name not in helps, f"HELP twice for {name}"
            helps[name] = line
            order.append(name)
        elif line.startswith("# TYPE "):
            _, _, name, typ = line.split()
            assert name not in types, f"TYPE twice for {name}"
            assert typ in ("counter", "gauge", "histogram", "summary", "untyped")
            types[name] = typ
        else:
            m = re.fullmatch(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)", line)
            assert m, f"bad sample line: {line!r}"
            name, labels, value = m.group(1), m.group(3) or "", m.group(4)
            float(value)
            assert name in types, f"sample before TYPE: {name}"
            assert order[-1] == name, f"{name} samples not grouped under their HELP/TYPE"
            pairs = label_re.findall(labels)
            assert ",".join(f'{k}="{v}"' for k, v in pairs) == labels, labels
            key = (name, tuple(sorted(pairs)))
            assert key not in series, f"duplicate series {key}"
            series.add(key)
    for name, typ in types.items():
        assert name in helps, f"no HELP for {name}"
        if name.startswith("litestream_"):
            continue  # Litestream v0.3.13's own names, kept for its dashboards
        assert name.startswith("litevisor_"), name
        assert (typ == "counter") == name.endswith("_total"), f"{name} is a {typ}"
        assert not re.search(r"_(ms|milliseconds|kb|mb|count)$", name), f"{name}: not base units"
    return types, series


def test_metrics_follow_prometheus_rules(litevisor_bin, tmp_path, runs):
    port = free_port()
    ready = tmp_path / "ready"
    r = start(runs, litevisor_bin, tmp_path, SERVICE + ["--ready", str(ready)],
              config=f"addr: 127.0.0.1:{port}\n")
    poll(lambda: read_lines(ready))
    status, ctype, body = curl(f"http://127.0.0.1:{port}/metrics")
    assert status == 200
    assert ctype.startswith("text/plain; version=0.0.4")
    types, series = parse_prometheus(body)
    for name in ("litevisor_process_resident_memory_bytes", "litevisor_process_cpu_seconds_total",
                 "litevisor_service_restarts_total", "litevisor_ready", "litevisor_service_up"):
        assert name in types, name
    rss = [s for s in series if s[0] == "litevisor_process_resident_memory_bytes"]
    assert len(rss) == 1
    m = re.search(r"^litevisor_process_resident_memory_bytes (\d+)$", body, re.M)
    assert 1_000_000 < int(m.group(1)) < 500_000_000
    assert re.search(r"^litevisor_ready 1$", body, re.M)
    # values in the fewest digits that read back the same: 0.03, not 0.029999999999999999
    assert not re.search(r"\.\d{16}", body), body
    _, _, health = curl(f"http://127.0.0.1:{port}/healthz")
    assert not re.search(r"\.\d{16}", health), health
    # methods and paths: 404 for what does not exist, 405 with Allow for the rest
    for method, path, want in (("POST", "/nope", 404), ("POST", "/metrics", 405),
                               ("DELETE", "/healthz", 405), ("HEAD", "/livez", 200)):
        p = subprocess.run(["curl", "-s", "-o", "/dev/null", "-D", "-", "-X", method,
                            *(["-I"] if method == "HEAD" else []),
                            f"http://127.0.0.1:{port}{path}"], capture_output=True, text=True)
        assert f" {want} " in p.stdout.splitlines()[0], (method, path, p.stdout)
        if want == 405:
            assert re.search(r"^Allow: GET, HEAD\r?$", p.stdout, re.M | re.I), p.stdout
    os.kill(r.pid, signal.SIGTERM)
    assert r.wait() == 0


def served_service(runs, litevisor_bin, tmp_path):
    """`run` of the test service with addr on a free loopback port, once the service is
    ready: (the run, the port)."""
    port = free_port()
    ready = tmp_path / "ready"
    r = start(runs, litevisor_bin, tmp_path, SERVICE + ["--ready", str(ready)],
              config=f"addr: 127.0.0.1:{port}\n")
    poll(lambda: read_lines(ready))
    return r, port


def test_one_host_trickling_requests_cannot_take_every_connection(litevisor_bin, tmp_path,
                                                                    runs):
    """A host that opens many connections and sends its headers a byte at a time
    (each byte restarts the idle timeout) gets at most its share of the slots:
    checkers on other addresses are still answered."""
    import socket
    r, port = served_service(runs, litevisor_bin, tmp_path)
    slow = []
    try:
        for _ in range(70):  # more than one address may hold, more than 64 in all
            c = socket.create_connection(("127.0.0.1", port), timeout=2)
            slow.append(c)
            try:
                c.sendall(b"GET /livez HTTP/1.1\r\nHost: x\r\n")
            except OSError:
                pass  # refused over the share
        time.sleep(0.3)
        for c in slow:  # one more header byte each: never idle, never done
            try:
                c.sendall(b"X")
            except OSError:
                pass  # refused over the share: that is the point
        other = socket.socket()
        other.settimeout(3)
        other.bind(("127.0.0.2", 0))
        t0 = time.monotonic()
        other.connect(("127.0.0.1", port))
        other.sendall(b"GET /livez HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answer = other.recv(200)
        other.close()
        assert answer.startswith(b"HTTP/1.1 200"), answer
        assert time.monotonic() - t0 < 2
    finally:
        for c in slow:
            c.close()
    os.kill(r.pid, signal.SIGTERM)
    assert r.wait() == 0


def test_hosts_trickling_requests_from_every_slot_lose_them_at_the_request_deadline(
        litevisor_bin, tmp_path, runs):
    """8 addresses of 32 trickling connections each (the per-address share) took all 256
    slots, for as long as they trickled: /readyz from another address got no answer, and a
    Nomad check_restart would restart a healthy service in a loop (QA136 D2). A request
    not read whole within 5 s of its accept loses its connection; a whole one is answered."""
    import socket
    r, port = served_service(runs, litevisor_bin, tmp_path)
    slow = []

    def readyz(timeout):
        c = socket.socket()
        c.settimeout(timeout)
        try:
            c.connect(("127.0.0.1", port))
            c.sendall(b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n")
            return c.recv(200)
        except OSError:
            return b""
        finally:
            c.close()

    try:
        for ip in range(1, 9):
            for _ in range(32):
                c = socket.socket()
                c.bind((f"127.0.1.{ip}", 0))
                c.connect(("127.0.0.1", port))
                c.sendall(b"GET /readyz HTTP/1.1\r\nHost: x\r\n")
                slow.append(c)
        t0 = time.monotonic()
        answer = b""
        while not answer.startswith(b"HTTP/1.1 200") and time.monotonic() - t0 < 12:
            for c in slow:  # a byte each: never idle
                try:
                    c.sendall(b"X")
                except OSError:
                    pass  # shut down at the deadline: that is the point
            answer = readyz(1)
        assert answer.startswith(b"HTTP/1.1 200"), answer
        assert time.monotonic() - t0 < 8, time.monotonic() - t0
    finally:
        for c in slow:
            c.close()
    os.kill(r.pid, signal.SIGTERM)
    assert r.wait() == 0


def test_livez_answers_fast_while_busy(litevisor_bin, tmp_path, runs):
    """The control path never waits: /livez within 50 ms while the service burns CPU
    and spawns orphans, and signals are being forwarded."""
    port = free_port()
    ready, rec, pids = tmp_path / "ready", tmp_path / "signals", tmp_path / "pids"
    r = start(runs, litevisor_bin, tmp_path,
              SERVICE + ["--busy", "--ready", str(ready), "--record", str(rec),
                         "--orphans", "20", "--orphan-life", "0.05", "--pids", str(pids)],
              config=f"addr: 127.0.0.1:{port}\n")
    poll(lambda: read_lines(ready))
    times = []
    import urllib.request
    for i in range(40):
        if i % 4 == 0:
            os.kill(r.pid, signal.SIGWINCH)
        t0 = time.monotonic()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/livez", timeout=2) as resp:
            assert resp.status == 200
        times.append(time.monotonic() - t0)
    times.sort()
    # The goal (p99 <= 50 ms) is measured by `make bench`; here a scheduling hiccup
    # on a loaded 2-core CI machine (ASan) must not fail the run, while a control
    # path that waited on the service or on signals would show in the median.
    assert times[len(times) // 2] < 0.050, f"median /livez took {times[len(times)//2]*1000:.1f} ms"
    assert times[-1] < 0.5, f"slowest /livez took {times[-1]*1000:.1f} ms"
    os.kill(r.pid, signal.SIGTERM)
    assert r.wait() == 0


def test_listens_on_nomad_port_label(litevisor_bin, tmp_path, runs):
    port = free_port()
    ready = tmp_path / "ready"
    r = start(runs, litevisor_bin, tmp_path, SERVICE + ["--ready", str(ready)],
              config="health:\n  port-label: sup-http\n",
              env={"NOMAD_PORT_sup_http": str(port), "NOMAD_IP_sup_http": "127.0.0.1"})
    poll(lambda: read_lines(ready))
    assert curl(f"http://127.0.0.1:{port}/livez")[0] == 200
    os.kill(r.pid, signal.SIGTERM)
    assert r.wait() == 0


def test_a_host_nomad_ip_that_is_not_here_listens_on_every_interface(litevisor_bin, tmp_path):
    """Under Docker, NOMAD_IP_<label> is the host's address, which the container's own
    network namespace does not have: run exited 111 (QA93 O4). It listens on every
    interface then, which the port map reaches. In a network namespace of the test's
    own (2001:db8::1 is an address nowhere; nothing leaves the namespace)."""
    cfg = tmp_path / "c.yml"
    cfg.write_text("health:\n  port-label: sup\n")
    log = tmp_path / "log"
    script = (
        "ip link set lo up || exit 99\n"
        f"NOMAD_PORT_sup=9090 NOMAD_IP_sup=2001:db8::1 {litevisor_bin} run -config {cfg} "
        f"-- sleep 30 2>{log} & pid=$!\n"
        "i=0; while ! curl -s -o /dev/null http://127.0.0.1:9090/livez; do\n"
        "  i=$((i+1)); [ $i -gt 100 ] && break; sleep 0.1; done\n"
        "code=$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:9090/livez)\n"
        "kill $pid; wait $pid; echo \"code=$code\"\n")
    p = subprocess.run(["unshare", "-rn", "sh", "-c", script], capture_output=True, text=True,
                       timeout=60)
    if p.returncode == 99 or "unshare" in p.stderr:
        pytest.skip(f"no network namespace here: {p.stderr.strip()}")
    text = log.read_text()
    if "Address family not supported" in text:
        pytest.skip("no IPv6 in this kernel")
    assert "code=200" in p.stdout, (p.stdout, p.stderr, text)
    assert "NOMAD_IP_<label> is not an address here" in text, text
    assert re.search(r"listening addr=(\[::\]|0\.0\.0\.0):9090", text), text


def test_uptime_kuma_push_heartbeat(litevisor_bin, tmp_path, runs):
    srv, got = kuma_stand_in()
    try:
        token = "s3cr3tT0k3n"
        ready = tmp_path / "ready"
        r = start(runs, litevisor_bin, tmp_path, SERVICE + ["--ready", str(ready)],
                  # pasted as Kuma's push page shows it, its own parameters included
                  config=f"health:\n  push-url: \"http://127.0.0.1:{srv.server_port}/api/push/"
                         f"{token}?status=up&msg=OK&ping=\"\n  push-interval: 200ms\n")
        poll(lambda: any("status=up" in p for p in got), timeout=10)
        # the service handles TERM only once it says so; a TERM before that kills it (143)
        poll(lambda: read_lines(ready))
        up = [p for p in got if "status=up" in p][0]
        assert up.startswith(f"/api/push/{token}?status=up&msg=OK&ping=")
        assert all(p.count("status=") == 1 and p.count("ping=") == 1 for p in got), got
        os.kill(r.pid, signal.SIGTERM)
        assert r.wait() == 0
        time.sleep(0.5)
        assert token not in r.stderr()
        # starting and stopping (a deploy) raise no DOWN alert
        assert not [p for p in got if "status=down" in p], got
    finally:
        srv.shutdown()



def one_replica_down(tmp_path, port, refused, health="", sync=""):
    """Config text: health on port, database app (optional) with a file replica
    "local" and an S3 replica "down" whose port refuses connections."""
    return (f"addr: 127.0.0.1:{port}\n"
            + (f"health:\n{health}" if health else "")
            + f"dbs:\n  - path: {tmp_path}/data/app.db\n    name: app\n    optional: true\n"
            f"    replicas:\n"
            f"      - name: local\n        type: file\n        path: {tmp_path}/replica\n"
            f"      - name: down\n        url: s3://bkt/app\n"
            f"        endpoint: http://127.0.0.1:{refused}\n"
            f"        access-key-id: x\n        secret-access-key: y\n"
            + (f"        sync-interval: {sync}\n" if sync else "")
            + f"restore:\n  probe-timeout: 300ms\n")

def test_push_goes_down_while_replication_fails_past_fail_after(litevisor_bin, tmp_path, runs):
    """A push monitor is all a push setup has: while /healthz fails because a replica
    has failed longer than health.fail-after, the push says down with that reason,
    not "up, OK" (QA25 D1); while it only warns, up with the warning as the message."""
    srv, got = kuma_stand_in(unquote=True)
    try:
        (tmp_path / "data").mkdir()
        port, refused = free_port(), free_port()  # nobody listens on the replica's port
        ready = tmp_path / "ready"
        cfg = one_replica_down(tmp_path, port, refused,
                               health=f"  fail-after: 2s\n  push-interval: 200ms\n"
                                      f"  push-url: http://127.0.0.1:{srv.server_port}/api/push/T\n",
                               sync="100ms")
        r = start(runs, litevisor_bin, tmp_path,
                  DB_SERVICE + ["--report", str(tmp_path / "report.json"), "--ready", str(ready),
                                "--rows", "5"], config=cfg)
        poll(lambda: ready.exists(), timeout=30)
        base = f"http://127.0.0.1:{port}"
        poll(lambda: curl(base + "/healthz")[0] == 503, timeout=20)
        assert curl(base + "/readyz")[0] == 200  # ready: only replication fails
        n = len(got)
        poll(lambda: len(got) >= n + 3, timeout=10)
        late = got[n:]
        assert all("status=down" in p and "app/down: failing for" in p for p in late), late
        # before fail-after it only warned: up, with the warning as the message
        warned = [p for p in got[:n] if "status=up" in p]
        # (or, on a loaded machine, pushed before the engine's first look at the database)
        assert all("msg=OK" in p or "app/down: failing for" in p or
                   "msg=app: waiting for database" in p for p in warned), warned
        os.kill(r.pid, signal.SIGTERM)
        assert r.wait(timeout=30) == 0
    finally:
        srv.shutdown()


def test_healthz_warn_code_for_consul(litevisor_bin, tmp_path, runs):
    """/healthz answers 200 for warn (Nomad fails any other code); ?warn=429 makes a
    warning Consul's "warning" state (it reads 429 so) while pass stays 200 and fail 503."""
    (tmp_path / "data").mkdir()
    port, refused = free_port(), free_port()
    ready = tmp_path / "ready"
    cfg = one_replica_down(tmp_path, port, refused)
    r = start(runs, litevisor_bin, tmp_path,
              DB_SERVICE + ["--report", str(tmp_path / "report.json"), "--ready", str(ready),
                            "--rows", "3"], config=cfg)
    poll(lambda: ready.exists(), timeout=30)
    base = f"http://127.0.0.1:{port}"
    poll(lambda: json.loads(curl(base + "/healthz")[2])["status"] == "warn", timeout=20)
    status, ctype, body = curl(base + "/healthz?warn=429")
    assert status == 429 and ctype.startswith("application/health+json"), (status, body)
    assert json.loads(body)["status"] == "warn"
    assert curl(base + "/healthz")[0] == 200
    assert curl(base + "/healthz?warn=2x9")[0] == 400
    assert curl(base + "/healthz?warn=600")[0] == 400
    os.kill(r.pid, signal.SIGTERM)
    assert r.wait(timeout=30) == 0

def test_bad_listen_address_fails_before_starting(litevisor_bin, tmp_path):
    busy = __import__("socket").socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    try:
        cfgf = tmp_path / "c.yml"
        cfgf.write_text(f"addr: 127.0.0.1:{busy.getsockname()[1]}\n")
        marker = tmp_path / "started"
        p = subprocess.run([litevisor_bin, "run", "-config", str(cfgf), "--", "touch", str(marker)],
                           capture_output=True, text=True, timeout=20)
        assert p.returncode == 111, p.stderr
        assert "cannot listen" in p.stderr
        assert not marker.exists()
    finally:
        busy.close()


def test_service_runs_as_configured_user_with_streams_passed_through(litevisor_bin, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root to switch user")
    import pwd
    nobody = pwd.getpwnam("nobody")
    cfgf = tmp_path / "c.yml"
    cfgf.write_text("supervisor:\n  user: nobody\n  groups: [daemon]\n")
    p = subprocess.run([litevisor_bin, "run", "-config", str(cfgf), "--", "sh", "-c",
                        'read line; echo "$line $(id -u) $(id -g) $(id -G) $HOME $USER"; echo err >&2'],
                       input="hello\n", capture_output=True, text=True, timeout=20)
    assert p.returncode == 0, p.stderr
    import grp
    daemon = grp.getgrnam("daemon").gr_gid
    words = p.stdout.split()
    assert words[:3] == ["hello", str(nobody.pw_uid), str(nobody.pw_gid)], p.stdout
    assert sorted(int(g) for g in words[3:-2]) == sorted({nobody.pw_gid, daemon})
    assert words[-2:] == [nobody.pw_dir, "nobody"]
    assert "err\n" in p.stderr


def test_numeric_user_without_passwd_entry_runs_like_docker_user(litevisor_bin, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root to switch user")
    import pwd
    uid = next(u for u in range(54321, 60000) if not _has_pw(pwd, u))
    cfgf = tmp_path / "c.yml"
    cfgf.write_text(f"supervisor:\n  user: {uid}\n")
    p = subprocess.run([litevisor_bin, "run", "-config", str(cfgf), "--", "sh", "-c",
                        'echo "$(id -u) $(id -g) $HOME ${USER-unset} ${LOGNAME-unset}"'],
                       capture_output=True, text=True, timeout=20,
                       env=dict(os.environ, HOME="/root", USER="root", LOGNAME="root"))
    assert p.returncode == 0, p.stderr
    # no name to give: USER and LOGNAME are not left saying root (QA19)
    assert p.stdout.split() == [str(uid), str(os.getgid()), "/", "unset", "unset"], p.stdout


def test_first_deploy_makes_the_database_directory_for_a_service_user(litevisor_bin, tmp_path):
    """First deploy, no directory yet where only root may create one: the service
    (user nobody) could not create its database (QA19). The restore step makes the
    directories as a restore would, owned by the configured user."""
    if os.geteuid() != 0:
        pytest.skip("needs root to switch user")
    import pwd
    nobody = pwd.getpwnam("nobody")
    base = pathlib.Path(tempfile.mkdtemp(prefix="lv-firstdeploy-", dir="/tmp"))
    try:
        os.chmod(base, 0o755)  # root's, as /data would be
        db = base / "data" / "app" / "app.db"
        cfg = tmp_path / "c.yml"
        cfg.write_text(f"supervisor:\n  user: nobody\ndbs:\n  - path: {db}\n    replicas:\n"
                       f"      - url: file://{tmp_path / 'rep'}\n")
        p = subprocess.run([litevisor_bin, "run", "-config", str(cfg), "--", SERVICE[0], "-c",
                            ADD_ROWS, "2", "x"], capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stderr
        assert "first deploy" in p.stderr, p.stderr
        assert os.stat(db.parent).st_uid == nobody.pw_uid, p.stderr
        assert query(db, "SELECT v FROM t") == [("x-0",), ("x-1",)]
    finally:
        shutil.rmtree(base, ignore_errors=True)

def _has_pw(pwd, uid):
    try:
        pwd.getpwuid(uid)
        return True
    except KeyError:
        return False


def test_unknown_user_is_a_config_error(litevisor_bin, tmp_path):
    cfgf = tmp_path / "c.yml"
    marker = tmp_path / "started"
    cfgf.write_text("supervisor:\n  user: no-such-user-xyz\n")
    p = subprocess.run([litevisor_bin, "run", "-config", str(cfgf), "--", "touch", str(marker)],
                       capture_output=True, text=True, timeout=20)
    assert p.returncode == 100
    assert 'unknown user "no-such-user-xyz"' in p.stderr
    assert not marker.exists()
    # `litevisor config` refuses what run would refuse
    p = subprocess.run([litevisor_bin, "config", "-config", str(cfgf)], capture_output=True,
                       text=True, timeout=20)
    assert p.returncode == 100 and 'unknown user "no-such-user-xyz"' in p.stderr, p.stderr


@pytest.mark.parametrize("text,want", [
    ("supervisor:\n  user: no-such-user-xyz\n", '2:9: supervisor.user: unknown user "no-such-user-xyz"'),
    ("supervisor:\n  group: no-such-group-xyz\n",
     '2:10: supervisor.group: unknown group "no-such-group-xyz"'),
    ("supervisor:\n  groups: [root, no-such-group-xyz]\n",
     '2:18: supervisor.groups[1]: unknown group "no-such-group-xyz"'),
])
def test_unknown_user_or_group_names_its_place(litevisor_bin, tmp_path, text, want):
    """An unknown user or group said "c.yml: supervisor: unknown user", without the line,
    column or key every other config error has (QA78 D10)."""
    cfgf = tmp_path / "c.yml"
    cfgf.write_text(text + "dbs: []\n")
    p = subprocess.run([litevisor_bin, "config", "-config", str(cfgf)], capture_output=True,
                       text=True, timeout=20)
    assert p.returncode == 100 and p.stderr == f"litevisor config: {cfgf}:{want}\n", p.stderr
    p = subprocess.run([litevisor_bin, "run", "-config", str(cfgf), "--", "true"],
                       capture_output=True, text=True, timeout=20)
    assert p.returncode == 100 and f"{cfgf}:{want}" in p.stderr, p.stderr


def _ignore_signal_32():
    """In the child before exec: ignore signal 32, as a CI runner's environment did.
    glibc refuses it (reserved for itself), so through the raw x86-64 system call."""
    import ctypes
    k = (ctypes.c_ulong * 4)(1, 0, 0, 0)  # SIG_IGN, no flags, no restorer, empty mask
    ctypes.CDLL(None, use_errno=True).syscall(13, 32, ctypes.byref(k), None, 8)


def test_ignored_sigpipe_is_not_inherited(litevisor_bin, tmp_path):
    """litevisor ignores SIGPIPE itself; the service must get the default back. So too
    for a signal litevisor's own parent left ignored, glibc's reserved ones included
    (a CI runner ignored 32, which glibc's sigaction cannot reset)."""
    import platform
    pre = _ignore_signal_32 if platform.machine() == "x86_64" else None
    p = subprocess.run([litevisor_bin, "run", "--", "sh", "-c", "grep SigIgn /proc/self/status"],
                       capture_output=True, text=True, timeout=20, preexec_fn=pre)
    assert p.returncode == 0, p.stderr
    ignored = int(p.stdout.split()[1], 16)
    assert not ignored & (1 << (signal.SIGPIPE - 1)), p.stdout
    assert ignored == 0, p.stdout  # nor XFSZ, TTIN, TTOU: every disposition is the default
    blocked = subprocess.run([litevisor_bin, "run", "--", "sh", "-c", "grep SigBlk /proc/self/status"],
                             capture_output=True, text=True, timeout=20).stdout
    assert int(blocked.split()[1], 16) == 0, blocked


# ---------------------------------------------------------------- databases (restore, replicate, flush)

DB_SERVICE = [SERVICE[0], os.path.join(TOOLS, "db_service.py")]
LITESTREAM = os.path.join(os.path.dirname(os.path.abspath(__file__)), "node_modules", "@flydotio",
                          "litestream-linux-x64", "litestream")


def db_config(tmp, replica_extra="", db_extra="", top=""):
    return (f"{top}dbs:\n"
            f"  - path: {tmp}/data/app.db\n"
            f"    name: app\n{db_extra}"
            f"    replicas:\n"
            f"      - type: file\n"
            f"        path: {tmp}/replica\n{replica_extra}")


def litestream_rows(tmp, replica):
    """Restore the replica with Litestream v0.3.13 itself and read the rows."""
    out = tmp / "check.db"
    for f in (out, tmp / "check.db-wal", tmp / "check.db-shm"):
        if f.exists():
            f.unlink()
    p = subprocess.run([LITESTREAM, "restore", "-o", str(out), f"file://{replica}"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    import sqlite3
    db = sqlite3.connect(str(out))
    try:
        return [r[0] for r in db.execute("SELECT v FROM t ORDER BY id")]
    finally:
        db.close()


def test_exec_expands_the_variables_the_service_gets(litevisor_bin, tmp_path):
    """`exec: app --db $LITEVISOR_DB_APP` expanded from litevisor's own environment,
    where the variable the service gets is not (an empty argument, and a warning
    blaming an unset variable): it now reads the database's path, as the service's
    environment has it, before litevisor's own environment."""
    out = tmp_path / "argv.json"
    (tmp_path / "data").mkdir()
    script = "import json,sys; json.dump(sys.argv[1:], open(sys.argv[1], 'w'))"
    env = dict(os.environ, LITEVISOR_DB_APP="/stale/from/the/environment")
    env.pop("LITESTREAM_DB_PATH", None)

    def argv(args, dbs):
        cfg = tmp_path / "c.yml"
        cfg.write_text(f"exec: {SERVICE[0]} -c \"{script}\" {out} {args}\n"
                       "dbs:\n" + "".join(
                           f"  - path: {tmp_path}/data/{n}.db\n    name: {n}\n"
                           f"    replicas:\n      - path: {tmp_path}/rep-{n}\n"
                           for n in dbs))
        p = subprocess.run([litevisor_bin, "run", "-config", str(cfg)], capture_output=True,
                           text=True, timeout=30, env=env)
        assert p.returncode == 0, p.stderr
        assert "variable=" not in p.stderr, p.stderr  # no unset variable
        return json.load(open(out))[1:]

    app, logs = str(tmp_path / "data" / "app.db"), str(tmp_path / "data" / "logs.db")
    # one database: LITESTREAM_DB_PATH too
    assert argv("$LITEVISOR_DB_APP \"$LITESTREAM_DB_PATH\"", ["app"]) == [app, app]
    # two: no LITESTREAM_DB_PATH for the service, so none here either
    assert argv("$LITEVISOR_DB_APP \"${LITEVISOR_DB_LOGS}\" ${LITESTREAM_DB_PATH:-none}",
                ["app", "logs"]) == [app, logs, "none"]


def wipe_local(tmp):
    shutil.rmtree(tmp / "data", ignore_errors=True)
    (tmp / "data").mkdir()


@pytest.mark.skipif(not os.access(LITESTREAM, os.X_OK), reason="Litestream binary missing (scripts/deps.sh)")
def test_row_committed_before_term_is_in_replica_then_restored_before_start(litevisor_bin, tmp_path, runs):
    (tmp_path / "data").mkdir()
    report, ready, commit = tmp_path / "report.json", tmp_path / "ready", tmp_path / "commit"
    # A long sync interval: only the final flush can ship the last rows.
    cfg = db_config(tmp_path, replica_extra="        sync-interval: 1h\n")
    r = start(runs, litevisor_bin, tmp_path,
              DB_SERVICE + ["--report", str(report), "--ready", str(ready), "--rows", "3",
                            "--commit-on", str(commit)], config=cfg)
    poll(lambda: ready.exists(), timeout=30)
    first = json.load(open(report))
    assert first["path"] == str(tmp_path / "data" / "app.db")
    assert first["env"] == {"LITEVISOR_DB_APP": first["path"], "LITESTREAM_DB_PATH": first["path"]}
    commit.write_text("just-before-term")
    poll(lambda: (tmp_path / "commit.done").exists())
    os.kill(r.pid, signal.SIGTERM)
    assert r.wait(timeout=30) == 0, r.stderr()
    assert "final flush done" in r.stderr(), r.stderr()
    rows = litestream_rows(tmp_path, tmp_path / "replica")
    assert rows == ["row-0", "row-1", "row-2", "just-before-term", "term-handler"], rows

    # Restore before start: the local database is gone; the service must find it restored.
    wipe_local(tmp_path)
    report.unlink()
    r2 = start(runs, litevisor_bin, tmp_path,
               DB_SERVICE + ["--report", str(report), "--exit-after-report"], config=cfg)
    assert r2.wait(timeout=60) == 0, r2.stderr()
    second = json.load(open(report))
    assert second["exists"], r2.stderr()
    assert second["rows"] == rows


ADD_ROWS = (
    "import os, sqlite3, sys\n"
    "c = sqlite3.connect(os.environ['LITESTREAM_DB_PATH'], isolation_level=None)\n"
    "c.execute('PRAGMA journal_mode=wal')\n"
    "c.execute('CREATE TABLE IF NOT EXISTS t(v TEXT)')\n"
    "for i in range(int(sys.argv[1])):\n"
    "    c.execute('INSERT INTO t VALUES (?)', ('%s-%d' % (sys.argv[2], i),))\n")


def query(db, sql):
    """Rows of sql on db, read only and closed before returning. A read-write
    connection checkpoints and deletes the WAL when it closes last (the next run
    then finds the files changed since its clean stop), and one left to the
    garbage collector does so at a random moment, or holds its -shm locks while
    the next run's engine waits and its service comes and goes."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def node_run(litevisor_bin, tmp_path, node, rep, rows=0, tag="", restore_keys=""):
    """One `run` on node (a directory of its own), sharing the file replica rep; the
    service adds rows and exits. Returns the database's rows after the run, and the
    files beside it."""
    db = tmp_path / node / "app.db"
    db.parent.mkdir(exist_ok=True)
    cfg = tmp_path / f"{node}.yml"
    # a node these tests kill is not waited for long (restore.handover-wait)
    cfg.write_text("restore:\n  allow-empty-when-unreachable: true\n  handover-wait: 1s\n"
                   f"{restore_keys}dbs:\n  - path: {db}\n    replicas:\n      - url: file://{rep}\n"
                   "        sync-interval: 100ms\n")
    p = subprocess.run([litevisor_bin, "run", "-config", str(cfg), "--", SERVICE[0], "-c",
                        ADD_ROWS, str(rows), tag], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    got = query(db, "SELECT v FROM t") if rows or db.exists() else []
    return [v for (v,) in got], sorted(os.listdir(db.parent)), p.stderr


def test_a_state_that_cannot_be_read_is_named_not_taken_for_none(litevisor_bin, tmp_path):
    """A corrupt generation file in the state directory was read as no state at all:
    "database exists without state", naming no file, while the decision then rested on
    the file's times alone (QA115 O5). It is named."""
    rep = tmp_path / "rep"
    node_run(litevisor_bin, tmp_path, "A", rep, 3, "a1")
    gen = tmp_path / "A" / ".app.db-litevisor" / "generation"
    assert gen.exists()
    gen.write_text("not a generation id\n")
    rows, _, err = node_run(litevisor_bin, tmp_path, "A", rep, 1, "a2")
    assert "litevisor's state for it cannot be read" in err and f'file="{gen}"' in err, err
    assert "without state to compare positions" not in err, err
    assert rows[-1] == "a2-0", (rows, err)


def test_node_back_after_an_idle_run_gets_what_the_other_wrote(litevisor_bin, tmp_path):
    """B restores A's data and its service writes nothing; A writes more; B starts
    again. B's state then has a generation and no shadow file (nothing was copied
    since the restore): B must still see the replica is ahead and restore A's
    rows (its own file moved aside), and a further run with nothing new must keep
    the file (no restore, no copy moved aside: no churn on every restart)."""
    rep = tmp_path / "rep"
    a1, _, _ = node_run(litevisor_bin, tmp_path, "A", rep, 30, "a1")
    b, _, _ = node_run(litevisor_bin, tmp_path, "B", rep)
    assert b == a1
    a2, _, _ = node_run(litevisor_bin, tmp_path, "A", rep, 20, "a2")
    assert len(a2) == 50
    b, files, err = node_run(litevisor_bin, tmp_path, "B", rep)
    assert b == a2, err
    assert any(f.startswith("app.db.replaced-") for f in files), files
    again, files2, err = node_run(litevisor_bin, tmp_path, "B", rep)
    assert again == a2, err
    assert files2 == files, err
    assert "outcome=exists" in err, err



def test_a_node_does_not_continue_a_generation_another_node_took_over(
        litevisor_bin, litestream_bin, tmp_path):
    """A stops cleanly (its closed mark on the replica). B restores A's generation,
    continues it (deleting the mark) and is killed before writing a segment. A comes
    back with its old files: the replica still ends where A stopped, so names alone
    say A may continue, but B may be writing that generation too (the same object
    names, two histories: QA18). A remembers where it closed the generation; the
    mark being gone, it starts a new generation instead."""
    rep = tmp_path / "rep"
    a1, _, _ = node_run(litevisor_bin, tmp_path, "A", rep, 5, "a1")
    (tmp_path / "B").mkdir()
    cfg = tmp_path / "B.yml"
    cfg.write_text(f"dbs:\n  - path: {tmp_path / 'B' / 'app.db'}\n    replicas:\n"
                   f"      - url: file://{rep}\n        sync-interval: 100ms\n")
    log = tmp_path / "b.log"
    with open(log, "w") as f:
        b = subprocess.Popen([litevisor_bin, "run", "-config", str(cfg), "--", SERVICE[0], "-c",
                              "import time; time.sleep(60)"], stdout=subprocess.DEVNULL,
                             stderr=f, start_new_session=True)
    try:
        poll(lambda: "replica continues generation" in log.read_text(), timeout=20)
        assert not list(rep.glob("generations/*/closed/*")), log.read_text()
    finally:
        os.killpg(b.pid, signal.SIGKILL)
        b.wait()
    gen = os.listdir(rep / "generations")
    a2, _, err = node_run(litevisor_bin, tmp_path, "A", rep, 3, "a2")
    assert a2 == a1 + ["a2-0", "a2-1", "a2-2"], err
    assert "another node took the generation over" in err, err
    assert len(os.listdir(rep / "generations")) == 2 and gen[0] in os.listdir(rep / "generations")
    assert restored_rows(litestream_bin, rep, tmp_path / "ls.db") == a2
    # a clean stop and start again: A's own mark, A's own generation, continued
    a3, _, err = node_run(litevisor_bin, tmp_path, "A", rep, 1, "a3")
    assert a3 == a2 + ["a3-0"] and "took the generation over" not in err, err
    assert len(os.listdir(rep / "generations")) == 2, err


def test_the_handover_wait_allows_for_a_server_clock_running_behind(litevisor_bin, tmp_path):
    """A's generation is open (no closed mark: A is still stopping) and its objects
    are stamped 25 s ago by a server whose clock runs behind ours. Judged by our
    clock alone they looked quiet for longer than restore.handover-wait, and B
    restored at once what A had shipped so far (QA18). Within restore.clock-skew
    of the wait, B now waits for A."""
    rep = tmp_path / "rep"
    a, _, _ = node_run(litevisor_bin, tmp_path, "A", rep, 5, "a")
    for mark in rep.glob("generations/*/closed/*"):
        mark.unlink()
    then = time.time() - 25
    for f in rep.rglob("*.lz4"):
        os.utime(f, (then, then))
    rep2 = tmp_path / "rep2"  # the same, for a second node (B's run starts a generation)
    shutil.copytree(rep, rep2)
    b, _, err = node_run(litevisor_bin, tmp_path, "B", rep, restore_keys="  clock-skew: 30s\n")
    assert b == a, err
    assert "waiting for its node to finish stopping" in err, err
    # a margin smaller than the gap: quiet, restored at once
    c, _, err = node_run(litevisor_bin, tmp_path, "C", rep2, restore_keys="  clock-skew: 5s\n")
    assert c == a, err
    assert "waiting for its node" not in err, err

def test_the_handover_wait_never_forgets_newer_data_it_saw(litevisor_bin, tmp_path):
    """B's first probe sees the peer replica holding A's open generation (A still
    stopping) ahead of the NAS and waits. The peer then stops answering for B and A
    never closes its generation. B restored the stale NAS copy with exit 0 and its new
    generation hid A's commits from every later restore (QA26 D1). Newer data seen in
    this restore is not forgotten: B does not start, and says why."""
    peer, nas = tmp_path / "peer", tmp_path / "nas"
    node_run(litevisor_bin, tmp_path, "A", peer, 10, "a1")
    shutil.copytree(peer, nas)  # the NAS has A's first run only
    a, _, _ = node_run(litevisor_bin, tmp_path, "A", peer, 20, "a2")
    assert len(a) == 30
    for mark in peer.glob("generations/*/closed/*"):
        mark.unlink()  # A is still stopping: its generation is open, written just now
    now = time.time()
    for f in peer.rglob("*.lz4"):
        os.utime(f, (now, now))
    db = tmp_path / "B" / "app.db"
    db.parent.mkdir()
    marker, log = tmp_path / "started", tmp_path / "b.log"
    cfg = tmp_path / "B.yml"
    cfg.write_text("restore:\n  handover-wait: 3s\n"
                   f"dbs:\n  - path: {db}\n    replicas:\n"
                   f"      - name: peer\n        url: file://{peer}\n"
                   f"      - name: nas\n        url: file://{nas}\n")
    with open(log, "w") as err:
        b = subprocess.Popen([litevisor_bin, "run", "-config", str(cfg), "--", "touch",
                              str(marker)], stderr=err, stdout=subprocess.DEVNULL)
    try:
        poll(lambda: "waiting for its node to finish stopping" in log.read_text(), timeout=20)
        os.rename(peer, tmp_path / "peer.away")  # gone for B: its listing fails
        peer.write_text("not a directory")
        assert b.wait(timeout=30) == 111, log.read_text()
    finally:
        if b.poll() is None:
            b.kill()
    text = log.read_text()
    assert not marker.exists() and not db.exists(), text
    assert "peer held newer data" in text and "not restoring older data" in text, text

def test_the_handover_wait_takes_a_generation_written_since_the_one_it_lost(litevisor_bin,
                                                                           tmp_path):
    """The other side of the rule above (QA28 D2): what the NAS holds after the peer
    stopped answering is a generation written later than the one the wait saw (A went
    on in a new one). That one is the newer, and B restores it."""
    peer, nas, other = tmp_path / "peer", tmp_path / "nas", tmp_path / "other"
    node_run(litevisor_bin, tmp_path, "A", peer, 10, "a1")
    shutil.copytree(peer, nas)
    node_run(litevisor_bin, tmp_path, "A", peer, 20, "a2")
    for mark in peer.glob("generations/*/closed/*"):
        mark.unlink()
    now = time.time()
    for f in peer.rglob("*.lz4"):
        os.utime(f, (now, now))
    c, _, _ = node_run(litevisor_bin, tmp_path, "C", other, 40, "c")  # a generation of its own
    (gen_c,) = os.listdir(other / "generations")
    db = tmp_path / "B" / "app.db"
    db.parent.mkdir()
    log = tmp_path / "b.log"
    cfg = tmp_path / "B.yml"
    cfg.write_text("restore:\n  handover-wait: 3s\n"
                   f"dbs:\n  - path: {db}\n    replicas:\n"
                   f"      - name: peer\n        url: file://{peer}\n"
                   f"      - name: nas\n        url: file://{nas}\n")
    with open(log, "w") as err:
        b = subprocess.Popen([litevisor_bin, "run", "-config", str(cfg), "--", "true"],
                             stderr=err, stdout=subprocess.DEVNULL)
    try:
        poll(lambda: "waiting for its node to finish stopping" in log.read_text(), timeout=20)
        os.rename(peer, tmp_path / "peer.away")
        peer.write_text("not a directory")
        later = time.time() + 1
        shutil.copytree(other / "generations" / gen_c, nas / "generations" / gen_c)
        for f in (nas / "generations" / gen_c).rglob("*"):
            os.utime(f, (later, later))
        assert b.wait(timeout=30) == 0, log.read_text()
    finally:
        if b.poll() is None:
            b.kill()
    assert [v for (v,) in query(db, "SELECT v FROM t")] == c, log.read_text()

def restored_rows(tool, rep, out):
    """Restore the file replica rep with tool (litevisor or Litestream) into out."""
    p = subprocess.run([tool, "restore", "-o", str(out), f"file://{rep}"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    return [v for (v,) in sqlite3.connect(out).execute("SELECT v FROM t ORDER BY rowid")]


def test_a_node_left_behind_with_its_replicas_names_swapped_still_refuses(litevisor_bin,
                                                                            tmp_path):
    """Two replicas whose names were swapped in A's config: each name's closed record
    named the other place and was not used, and A's app had written while A was down,
    so A was in a new generation, built on older data, that hid B's commit from every
    restore (QA35 #2). The records are found by the place they name and exchanged."""
    r1, r2 = tmp_path / "r1", tmp_path / "r2"

    def cfg(node, first, second):
        db = tmp_path / node / "app.db"
        db.parent.mkdir(exist_ok=True)
        f = tmp_path / f"{node}.yml"
        f.write_text(f"dbs:\n  - path: {db}\n    replicas:\n"
                     f"      - name: {first}\n        path: {r1}\n"
                     f"      - name: {second}\n        path: {r2}\n")
        return f, db

    (a_cfg, a_db), (b_cfg, b_db) = cfg("A", "a", "b"), cfg("B", "a", "b")
    with sqlite3.connect(a_db) as c:
        c.execute("PRAGMA journal_mode=WAL")
        c.execute("CREATE TABLE t(v TEXT)")
    for c, db, v in ((a_cfg, a_db, "a1"), (b_cfg, b_db, "b1")):
        p = subprocess.run([litevisor_bin, "run", "-config", str(c), "--", "sqlite3", str(db),
                            f"INSERT INTO t(v) VALUES ('{v}')"],
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stderr
        time.sleep(1.2)
    with sqlite3.connect(a_db) as c:  # A's app wrote before its sidecar came back
        c.execute("INSERT INTO t(v) VALUES ('a2')")
    a_cfg, _ = cfg("A", "b", "a")
    p = subprocess.Popen([litevisor_bin, "replicate", "-config", str(a_cfg)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    time.sleep(1.5)
    p.terminate()
    _, err = p.communicate(timeout=30)
    assert "this database is older than the replica's data" in err, err
    assert "whose names were swapped exchanged" in err, err
    for rep in (r1, r2):
        assert restored_rows(litevisor_bin, rep, tmp_path / f"{rep.name}.db") == ["a1", "b1"]


def test_a_node_without_its_closed_record_never_writes_into_a_continued_index(
        litevisor_bin, litestream_bin, tmp_path):
    """A replicated its database (its last index empty: nothing but the snapshot) and
    stopped; B restored it and wrote into that very index. A's closed record is gone
    (its state copied from a backup, say), and A runs `replicate` on its unchanged
    file. Its position compared with the replica's alone: the replica holding more
    of A's index than A's shadow needed only a snapshot. A wrote its snapshot over
    the generation's, took its next commit as shipped (it ended where B's did) and
    appended the one after behind B's frames: the generation no longer restored
    ("WAL salt mismatch", QA34 #1). Bytes of an index A never had are another node's:
    under newest-wins A refuses, as with the record."""
    rep = tmp_path / "rep"
    for node in "AB":
        (tmp_path / node).mkdir()
        (tmp_path / f"{node}.yml").write_text(
            f"dbs:\n  - path: {tmp_path / node / 'app.db'}\n    replicas:\n"
            f"      - url: file://{rep}\n        sync-interval: 100ms\n")
    a_db = tmp_path / "A" / "app.db"
    c = sqlite3.connect(a_db)
    c.execute("PRAGMA journal_mode=WAL")
    c.execute("CREATE TABLE t (v TEXT)")
    c.execute("INSERT INTO t VALUES ('a1')")
    c.commit()
    c.close()
    for node, svc in (("A", ["true"]),
                      ("B", [SERVICE[0], "-c", ADD_ROWS, "1", "b"])):
        p = subprocess.run([litevisor_bin, "run", "-config", str(tmp_path / f"{node}.yml"),
                            "--", *svc], capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stderr
    b = restored_rows(litevisor_bin, rep, tmp_path / "b.db")
    assert b == ["a1", "b-0"], b
    for f in (tmp_path / "A" / ".app.db-litevisor").glob("closed-*"):
        f.unlink()
    p = subprocess.Popen([litevisor_bin, "replicate", "-config", str(tmp_path / "A.yml")],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    time.sleep(1.5)
    for v in ("a2", "a3"):
        with sqlite3.connect(a_db) as c:
            c.execute("INSERT INTO t VALUES (?)", (v,))
        time.sleep(0.5)
    p.terminate()
    _, err = p.communicate(timeout=30)
    assert "this database is older than the replica's data" in err, err
    assert "this node has 0 bytes of that index" in err, err
    assert restored_rows(litevisor_bin, rep, tmp_path / "lv.db") == b
    assert restored_rows(litestream_bin, rep, tmp_path / "ls.db") == b


def test_idle_restarts_and_hand_offs_continue_the_generation(litevisor_bin, litestream_bin,
                                                            tmp_path):
    """Runs that write nothing, on either node, neither start a new generation nor
    upload a snapshot: the index they entered (with no shadow file) is resumed
    from its record, vouched for by the clean stop. Before, each such restart
    began a generation, so the other node restored it and moved an identical
    copy aside on every hand-off. What is written next continues the same
    generation and restores with both tools."""
    rep = tmp_path / "rep"
    node_run(litevisor_bin, tmp_path, "A", rep, 1, "a0")
    a1, _, _ = node_run(litevisor_bin, tmp_path, "A", rep, 30, "a1")
    gens = os.listdir(rep / "generations")
    assert len(gens) == 1
    for _ in range(2):
        b, fb, eb = node_run(litevisor_bin, tmp_path, "B", rep)
        assert b == a1, eb
        a, fa, ea = node_run(litevisor_bin, tmp_path, "A", rep)
        assert a == a1, ea
    b, fb, eb = node_run(litevisor_bin, tmp_path, "B", rep)
    for err in (ea, eb):
        assert "clean restart" in err and "replica continues generation" in err, err
        assert "new generation" not in err and "snapshot written" not in err, err
    assert not [f for f in fa + fb if "replaced" in f or ".old-" in f], (fa, fb)
    assert os.listdir(rep / "generations") == gens
    b2, _, eb = node_run(litevisor_bin, tmp_path, "B", rep, 10, "b")
    assert len(b2) == 41 and "new generation" not in eb, eb
    assert os.listdir(rep / "generations") == gens
    assert restored_rows(litevisor_bin, rep, tmp_path / "lv.db") == b2
    assert restored_rows(litestream_bin, rep, tmp_path / "ls.db") == b2
    a, _, ea = node_run(litevisor_bin, tmp_path, "A", rep)
    assert a == b2, ea


UNSHIPPED = (
    "import os, sqlite3, sys, time\n"
    "time.sleep(1)\n"  # after the first sync at start: none of this reaches the replica
    "c = sqlite3.connect(os.environ['LITESTREAM_DB_PATH'], isolation_level=None)\n"
    "for i in range(300):\n"
    "    c.execute('INSERT INTO t VALUES (?)', ('a2-%d' % i,))\n"
    "    if i == 150:\n"
    "        c.execute('PRAGMA wal_checkpoint(TRUNCATE)').fetchall()\n"
    "print('written', flush=True)\n"
    "time.sleep(60)\n")


def node_dies_with_unshipped_commits(litevisor_bin, tmp_path, rep):
    """Node A's next session commits 300 rows across a WAL restart (its shadow then
    holds an index 1 of its own), ships none of them (sync-interval 1h) and dies
    (SIGKILL to the whole group). Returns A's rows.

    A died without closing its generation, so B restoring it would start a new one.
    The replica is then closed where it ends, as it is when B restores right after
    A's clean stop and A starts again at the same moment (two starts at once): B
    continues the generation, and what must keep the two histories apart is the
    check of whose session each index is."""
    db = tmp_path / "A" / "app.db"
    cfg = tmp_path / "A-slow.yml"
    cfg.write_text(f"dbs:\n  - path: {db}\n    replicas:\n      - url: file://{rep}\n"
                   "        sync-interval: 1h\n")
    p = subprocess.Popen([litevisor_bin, "run", "-config", str(cfg), "--", SERVICE[0], "-c",
                          UNSHIPPED], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    try:
        assert p.stdout.readline().strip() == "written", p.stderr.read()
        shadow = tmp_path / "A" / ".app.db-litevisor"
        wait = time.time() + 10
        while time.time() < wait and not list(shadow.glob("generations/*/wal/00000001.wal")):
            time.sleep(0.05)
        time.sleep(0.5)  # the monitor copies each commit within milliseconds
    finally:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        p.stdout.close()
        p.stderr.close()
    close_where_it_ends(litevisor_bin, rep, tmp_path / "end.db")
    return [v for (v,) in query(db, "SELECT v FROM t ORDER BY rowid")]


def test_a_file_put_in_place_while_stopped_is_not_taken_for_the_one_the_state_describes(
        litevisor_bin, tmp_path):
    """An older copy renamed over the database while the job was stopped: litevisor's
    state describes the file that was there at the stop, so comparing its position
    said "local database is current" and the service started on the older copy
    while the replica held newer data. It is now compared by time, as a file
    without state is: the replica's data is newer, the copy is moved aside."""
    rep = tmp_path / "rep"
    a1, _, _ = node_run(litevisor_bin, tmp_path, "A", rep, 100, "a1")
    db = tmp_path / "A" / "app.db"
    shutil.copy2(db, tmp_path / "old.db")  # keeps its time, as mv and cp -p do
    a2, _, _ = node_run(litevisor_bin, tmp_path, "A", rep, 50, "a2")
    assert len(a2) == 150
    for sfx in ("-wal", "-shm"):
        if os.path.exists(f"{db}{sfx}"):
            os.unlink(f"{db}{sfx}")
    os.rename(tmp_path / "old.db", db)
    a3, files, err = node_run(litevisor_bin, tmp_path, "A", rep)
    assert "not the one litevisor's state describes" in err, err
    assert a3 == a2, err
    assert any(f.startswith("app.db.replaced-") for f in files), files


def test_another_databases_replica_never_replaces_the_local_database(litevisor_bin, tmp_path):
    """The two databases' replica paths swapped between restarts (an edit mix-up; the
    config check cannot see it: no two replicas share a place). logs.db's history, newer,
    now sits where radarr.db's is expected: restoring it over radarr.db would start the
    service on the wrong database. Their tables show they are different databases: the
    local radarr.db is kept, nothing is started, and the error says why."""
    import sqlite3
    data = tmp_path / "data"
    data.mkdir()
    radarr, logs = data / "radarr.db", data / "logs.db"
    for path, tables in ((radarr, ["Movies", "History", "Config", "VersionInfo"]),
                         (logs, ["Logs", "VersionInfo"])):
        c = sqlite3.connect(str(path))
        c.execute("PRAGMA journal_mode=WAL")
        for t in tables:
            c.execute(f"CREATE TABLE {t}(id INTEGER PRIMARY KEY, v TEXT)")
            c.execute(f"INSERT INTO {t}(v) VALUES ('{path.name}')")
        c.commit()
        c.close()

    def cfg(name, rp, lp):
        f = tmp_path / f"{name}.yml"
        f.write_text(f"restore:\n  clock-skew: 1s\n  handover-wait: 0s\n"
                     f"stores:\n  nas: {{url: file://{tmp_path}/nas}}\n"
                     f"dbs:\n  - path: {radarr}\n    replicas:\n      - {{store: nas, path: {rp}}}\n"
                     f"  - path: {logs}\n    replicas:\n      - {{store: nas, path: {lp}}}\n")
        return str(f)

    def run(cfgf, *cmd):
        return subprocess.run([litevisor_bin, "run", "-config", cfgf, "--", *cmd],
                              capture_output=True, text=True, timeout=60)

    good = cfg("good", "radarr.db", "logs.db")
    p = run(good, "true")
    assert p.returncode == 0, p.stderr
    time.sleep(2.5)  # logs.db is written later than radarr.db, as a log database is
    p = run(good, "sqlite3", str(logs), "INSERT INTO Logs(v) VALUES ('later')")
    assert p.returncode == 0, p.stderr
    started = tmp_path / "started"
    p = run(cfg("swapped", "logs.db", "radarr.db"), "touch", str(started))
    assert p.returncode == 111, p.stderr
    assert not started.exists()
    assert "the replica's database is not this database" in p.stderr, p.stderr
    # each generation's database id differs (and their tables)
    assert 'another database id' in p.stderr, p.stderr
    c = sqlite3.connect(str(radarr))
    assert c.execute("SELECT v FROM Movies").fetchall() == [("radarr.db",)]
    c.close()
    assert not [f for f in os.listdir(data) if ".replaced-" in f], os.listdir(data)


SONARR_TABLES = ("Config RootFolders ScheduledTasks Indexers Notifications Metadata "
                 "DownloadClients SceneMappings History Series EpisodeFiles Episodes "
                 "QualityDefinitions Profiles LanguageProfiles NamingConfig Blacklist MetadataFiles "
                 "SubtitleFiles ExtraFiles PendingReleases RemotePathMappings Tags Restrictions "
                 "DelayProfiles Users Commands IndexerStatus DownloadClientStatus VersionInfo").split()
RADARR_TABLES = ("Config RootFolders ScheduledTasks Indexers ImportLists Notifications Metadata "
                 "DownloadClients History MovieFiles Movies ImportListMovies AlternativeTitles "
                 "MovieTranslations Credits ImportExclusions QualityDefinitions CustomFormats "
                 "Profiles NamingConfig Blocklist MetadataFiles SubtitleFiles ExtraFiles "
                 "PendingReleases RemotePathMappings Tags Restrictions DelayProfiles Users Commands "
                 "IndexerStatus DownloadClientStatus ImportListStatus CustomFilters DownloadHistory "
                 "UpdateHistory VersionInfo").split()


def test_a_sibling_applications_replica_never_replaces_the_local_database(litevisor_bin,
                                                                          tmp_path):
    """Sonarr's job given Radarr's replica path (copied from the radarr job). The two
    apps come from one code base and share 24 of Radarr's 38 table names, so the table
    comparison took Radarr's newer database for Sonarr's, and Sonarr started on it
    (QA34 #2). Each generation's database id tells them apart: the local sonarr.db is
    kept and nothing starts."""
    dbs = {}
    for app, tables in (("sonarr", SONARR_TABLES), ("radarr", RADARR_TABLES)):
        (tmp_path / app).mkdir()
        db = dbs[app] = tmp_path / app / f"{app}.db"
        c = sqlite3.connect(db)
        c.execute("PRAGMA journal_mode=WAL")
        for t in tables:
            c.execute(f'CREATE TABLE "{t}"(Id INTEGER PRIMARY KEY, v TEXT)')
        c.execute("INSERT INTO Config(v) VALUES (?)", (app,))
        c.commit()
        c.close()

    def run(app, rep, *cmd):
        cfg = tmp_path / f"{app}.yml"
        cfg.write_text(f"dbs:\n  - path: {dbs[app]}\n    replicas:\n"
                       f"      - path: {tmp_path / ('rep-' + rep)}\n")
        return subprocess.run([litevisor_bin, "run", "-config", str(cfg), "--", *cmd],
                              capture_output=True, text=True, timeout=60)

    p = run("sonarr", "sonarr", "true")
    assert p.returncode == 0, p.stderr
    time.sleep(1.2)  # Radarr's data is newer
    p = run("radarr", "radarr", "true")
    assert p.returncode == 0, p.stderr
    started = tmp_path / "started"
    p = run("sonarr", "radarr", "touch", str(started))
    assert p.returncode == 111, p.stderr
    assert not started.exists()
    assert "another database id" in p.stderr, p.stderr
    assert query(dbs["sonarr"], "SELECT v FROM Config") == [("sonarr",)]
    assert not [f for f in os.listdir(tmp_path / "sonarr") if ".replaced-" in f]


def test_the_same_databases_history_replaces_it_whatever_its_schema_became(litevisor_bin,
                                                                            tmp_path):
    """A ran app v1; B restored A's generation, and app v2 there rebuilt the schema (a
    table dropped, others renamed, full-text tables added, an application_id set) and
    went on in that generation. Back on A, the tables compare as another database's,
    and `run` refused on every start, keeping v1's stale data (QA34 #3, #5). A replica
    continuing the local database's own generation is its history: it is restored."""
    rep = tmp_path / "rep"
    v1 = ("import os, sqlite3\n"
          "c = sqlite3.connect(os.environ['LITESTREAM_DB_PATH'], isolation_level=None)\n"
          "c.execute('PRAGMA journal_mode=wal')\n"
          "for t in ('users', 'notes', 'settings'):\n"
          "    c.execute(f'CREATE TABLE IF NOT EXISTS {t}(v TEXT)')\n"
          "c.execute(\"INSERT INTO notes VALUES ('v1')\")\n")
    v2 = ("import os, sqlite3\n"
          "c = sqlite3.connect(os.environ['LITESTREAM_DB_PATH'], isolation_level=None)\n"
          "c.execute('DROP TABLE settings')\n"
          "c.execute('ALTER TABLE users RENAME TO accounts')\n"
          "c.execute('ALTER TABLE notes RENAME TO posts')\n"
          "c.execute('CREATE VIRTUAL TABLE posts_fts USING fts5(v)')\n"
          "c.execute('CREATE TABLE audit(v TEXT)')\n"
          "c.execute('PRAGMA application_id = 1196444487')\n"
          "c.execute(\"INSERT INTO posts VALUES ('v2')\")\n")

    def node(name, code):
        db = tmp_path / name / "app.db"
        db.parent.mkdir(exist_ok=True)
        cfg = tmp_path / f"{name}.yml"
        cfg.write_text("restore:\n  handover-wait: 1s\n"
                       f"dbs:\n  - path: {db}\n    replicas:\n      - url: file://{rep}\n"
                       "        sync-interval: 100ms\n")
        p = subprocess.run([litevisor_bin, "run", "-config", str(cfg), "--", SERVICE[0], "-c",
                            code], capture_output=True, text=True, timeout=60)
        return p, db

    p, _ = node("A", v1)
    assert p.returncode == 0, p.stderr
    p, _ = node("B", v2)
    assert p.returncode == 0, p.stderr
    assert len(os.listdir(rep / "generations")) == 1, p.stderr  # B went on in A's generation
    p, db = node("A", "pass")
    assert p.returncode == 0, p.stderr
    assert "not this database" not in p.stderr, p.stderr
    assert query(db, "SELECT v FROM posts") == [("v1",), ("v2",)], p.stderr


def test_moved_aside_copies_are_bounded_by_keep_replaced(litevisor_bin, tmp_path):
    """Each return of a job to a node whose database another node moved ahead keeps
    the old file aside. Without restore.keep-replaced none is ever deleted, and a
    warning says they pile up; with it only the newest N (and their -wal/-shm and
    state directories) stay."""
    rep = tmp_path / "rep"
    def copies(files, tag=".replaced-", lead="app.db"):
        return sorted(f for f in files if f.startswith(lead + tag) and f[-4:] not in ("-wal", "-shm"))
    for i in range(5):
        a, _, _ = node_run(litevisor_bin, tmp_path, "A", rep, 5, f"a{i}")
        b, files, err = node_run(litevisor_bin, tmp_path, "B", rep)
        assert b == a, err
    assert len(copies(files)) == 4, files
    assert "old copies of the database pile up" in err and "copies=4" in err, err
    assert "deleted an old moved-aside copy" not in err
    kept = copies(files)[-2:]
    a, _, _ = node_run(litevisor_bin, tmp_path, "A", rep, 5, "a5")
    b, files, err = node_run(litevisor_bin, tmp_path, "B", rep,
                             restore_keys="  keep-replaced: 2\n")
    assert b == a, err
    now = copies(files)
    assert len(now) == 2 and now[0] == kept[1] and now[1] > kept[1], (now, kept)
    # nothing of the deleted copies is left beside the kept ones (a copy has a -wal
    # only when litevisor's connection was the last to close it: not in a short run)
    assert all(any(f.startswith(n) for n in now) for f in files
               if f.startswith("app.db.replaced-")), files
    assert not [f for f in files if f.startswith(kept[0])], files
    assert len(copies(files, ".old-", ".app.db-litevisor")) == 2, files
    assert err.count("deleted an old moved-aside copy") == 6, err  # 3 databases, 3 states
    assert "pile up" not in err
    assert len(sqlite3.connect(tmp_path / "B" / now[1]).execute("SELECT v FROM t").fetchall()) == 25


def test_state_of_deleted_databases_piling_up_is_warned_about(litevisor_bin, tmp_path):
    """A database deleted between runs leaves its state directory, which the next
    restore moves aside (it may hold commits no replica got). These piled up with
    no word: the warning counted copies of the database only (QA15 D7)."""
    rep = tmp_path / "rep"
    db = tmp_path / "A" / "app.db"
    for i in range(5):
        a, files, err = node_run(litevisor_bin, tmp_path, "A", rep, 1, f"a{i}")
        assert len(a) == i + 1, err
        for sfx in ("", "-wal", "-shm"):
            if os.path.exists(f"{db}{sfx}"):
                os.unlink(f"{db}{sfx}")
    states = [f for f in files if f.startswith(".app.db-litevisor.old-")]
    assert len(states) == 4, files
    assert "old copies of the database pile up" in err and "state_copies=4" in err, err


def test_keep_replaced_never_deletes_the_copy_it_just_made(litevisor_bin, tmp_path):
    """Copies are ordered by the time in their names; one made while the clock was
    ahead (a Pi on fake-hwclock before NTP) sorts as newest, and keep-replaced: 1
    deleted the copy the restore had just moved aside instead of it."""
    rep = tmp_path / "rep"
    node_run(litevisor_bin, tmp_path, "A", rep, 5, "a1")
    node_run(litevisor_bin, tmp_path, "B", rep)
    node_run(litevisor_bin, tmp_path, "A", rep, 5, "a2")
    node_run(litevisor_bin, tmp_path, "B", rep)  # B's first copies (database, state)
    node_run(litevisor_bin, tmp_path, "A", rep, 5, "a3")
    first = [f for f in os.listdir(tmp_path / "B") if ".replaced-" in f or ".old-" in f]
    assert {f.split("-20")[0] for f in first} >= {"app.db.replaced", ".app.db-litevisor.old"}, first
    for f in os.listdir(tmp_path / "B"):
        if f.startswith(("app.db.replaced-", ".app.db-litevisor.old-")):
            stem = f.split("Z", 1)
            os.rename(tmp_path / "B" / f, tmp_path / "B" / (f[:f.index("-20") + 1] + "2099-01-01T00:00:00.000" + "Z" + stem[1]))
    (tmp_path / "B" / "app.db.replaced-mybackup").write_text("a user's own file")
    b, files, err = node_run(litevisor_bin, tmp_path, "B", rep, restore_keys="  keep-replaced: 1\n")
    assert "app.db.replaced-mybackup" in files  # not litevisor's: never counted, never deleted
    (moved,) = re.findall(r'moved aside \(kept, not deleted\) path="[^"]*/app.db" to="[^"]*/(app.db.replaced-[^"]*)"', err)
    assert moved in files, (moved, files, err)
    # the state copy that goes with it too, not the one whose name says 2099 (QA41 #3)
    (smoved,) = re.findall(r'moved aside \(kept, not deleted\) path="[^"]*/.app.db-litevisor" to="[^"]*/(.app.db-litevisor.old-[^"]*)"', err)
    assert smoved in files, (smoved, files, err)
    assert not [f for f in files if "2099" in f], files


def test_keep_replaced_keeps_the_state_copy_of_a_database_that_is_gone(litevisor_bin, tmp_path):
    """A database deleted while its state stayed: the state goes aside before the restore,
    and keep-replaced: 1 deleted that very copy when an older one's name said 2099 (QA42 #3)."""
    rep = tmp_path / "rep"
    node_run(litevisor_bin, tmp_path, "A", rep, 5, "a1")
    old = tmp_path / "A" / ".app.db-litevisor.old-2099-01-01T00:00:00.000Z"
    old.mkdir()
    (old / "generation").write_text("x\n")
    for f in ("app.db", "app.db-wal", "app.db-shm"):
        if (tmp_path / "A" / f).exists():
            (tmp_path / "A" / f).unlink()
    rows, files, err = node_run(litevisor_bin, tmp_path, "A", rep, restore_keys="  keep-replaced: 1\n")
    assert len(rows) == 5, err
    (smoved,) = re.findall(r'moved aside \(kept, not deleted\) path="[^"]*/.app.db-litevisor" to="[^"]*/(.app.db-litevisor.old-[^"]*)"', err)
    assert smoved in files and old.name not in files, (smoved, files, err)


def close_where_it_ends(litevisor_bin, rep, scratch):
    """Put the closed mark of a clean stop where the file replica rep's newest
    generation ends (found by restoring it into scratch)."""
    r = subprocess.run([litevisor_bin, "restore", "-o", str(scratch), f"file://{rep}"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    m = re.search(r"restore: restored .* generation=(\w+) index=(\w+) offset=(\w+)", r.stderr)
    assert m, r.stderr
    (rep / "generations" / m[1] / "closed").mkdir(exist_ok=True)
    (rep / "generations" / m[1] / "closed" / f"{m[2]}_{m[3]}").touch()
    scratch.unlink()


def test_node_back_with_commits_it_never_shipped_takes_the_other_nodes_history(
        litevisor_bin, litestream_bin, tmp_path):
    """A dies with commits it never shipped; B restores what the replica holds,
    writes and stops. Both continued the same generation from one point, so A's
    local position compares as "ahead" of the replica's, but the replica's last
    index is B's WAL session, not A's. A must take B's data (its own file moved
    aside, kept), not keep its file: that lost B's rows, and A then appended its
    frames after B's in the same index, so no tool could restore the replica."""
    rep = tmp_path / "rep"
    a1, _, _ = node_run(litevisor_bin, tmp_path, "A", rep, 100, "a1")
    a2 = node_dies_with_unshipped_commits(litevisor_bin, tmp_path, rep)
    assert len(a2) == 400
    b, _, eb = node_run(litevisor_bin, tmp_path, "B", rep, 20, "b")
    assert len(b) == 120 and b[:100] == a1, eb
    a3, files, ea = node_run(litevisor_bin, tmp_path, "A", rep, 5, "a3")
    assert a3 == b + [f"a3-{i}" for i in range(5)], ea
    assert "was written by another WAL session" in ea, ea
    (kept,) = [f for f in files if f.startswith("app.db.replaced-") and f[-4:] not in ("-wal", "-shm")]
    assert kept + "-wal" in files, files  # where SQLite finds it: the kept copy is whole
    assert [v for (v,) in sqlite3.connect(tmp_path / "A" / kept).execute(
        "SELECT v FROM t ORDER BY rowid")] == a2
    assert restored_rows(litevisor_bin, rep, tmp_path / "lv.db") == a3
    assert restored_rows(litestream_bin, rep, tmp_path / "ls.db") == a3


@pytest.mark.parametrize("spelling", ["same", "symlink", "renamed", "no-record"])
@pytest.mark.parametrize("a_rows", [10, 0])
def test_replicate_on_a_node_left_behind_does_not_hide_the_newer_data(
        litevisor_bin, litestream_bin, tmp_path, spelling, a_rows):
    """A stopped cleanly; B restored A's generation, wrote to it and stopped. A then
    runs `replicate` alone on its old database (no restore step): it holds nothing
    the replica lacks, only less. A new generation from it, as before, was the
    newest data anywhere, and every later restore brought back A's old rows
    instead of B's (QA18). With restore.existing newest-wins (the default) A now
    refuses to replicate it and says to restore; keep-local starts the new
    generation on purpose.
    The same when A's config spells the replica another way: through a symlink to
    its directory (A's closed record is for the place, not the spelling), or under
    another name (no record applies: the replica holding more of the generation
    than A's file ever had tells). With a_rows 0 A's last index held no WAL and B
    wrote into that very index: A then wrote into it after B's frames, its own commit
    taken as shipped, and the generation no longer restored (QA34 #1). With no
    record that applies at all (an S3 server's name for its address, a bind mount:
    here the records are removed), A's app having written while A was down, A is in
    a generation of its own at once: where its file stood in the one it left tells
    (QA35 #2)."""
    rep = tmp_path / "rep"
    a, _, _ = node_run(litevisor_bin, tmp_path, "A", rep, a_rows, "a")
    b, _, _ = node_run(litevisor_bin, tmp_path, "B", rep, 5, "b")
    assert b == a + [f"b-{i}" for i in range(5)]
    (gen,) = os.listdir(rep / "generations")
    a_cfg = tmp_path / "A.yml"
    if spelling == "symlink":
        (tmp_path / "mnt").symlink_to(rep)
        a_cfg.write_text(a_cfg.read_text().replace(f"file://{rep}\n", f"file://{tmp_path}/mnt\n"))
    elif spelling == "renamed":
        a_cfg.write_text(a_cfg.read_text().replace("      - url:", "      - name: nas\n        url:"))
    elif spelling == "no-record":
        for f in (tmp_path / "A" / ".app.db-litevisor").glob("closed-*"):
            f.unlink()

    def replicate(cfg):
        p = subprocess.Popen([litevisor_bin, "replicate", "-config", str(cfg)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        time.sleep(2)
        p.terminate()
        _, err = p.communicate(timeout=30)
        return err

    for _ in range(2):  # and again at the next start, whatever the files did meanwhile
        err = replicate(a_cfg)  # written by node_run
        assert "this database is older than the replica's data" in err, err
        assert "stopped: the database is older" in err, err
        assert os.listdir(rep / "generations") == [gen], err
    assert restored_rows(litestream_bin, rep, tmp_path / "ls.db") == b
    assert restored_rows(litevisor_bin, rep, tmp_path / "lv-b.db") == b
    keep = tmp_path / "A-keep.yml"
    keep.write_text("restore:\n  existing: keep-local\n" +
                    a_cfg.read_text().replace("restore:\n", ""))
    err = replicate(keep)
    assert "older than the replica" not in err, err
    assert "new generation" in err, err
    assert len(os.listdir(rep / "generations")) == 2, err
    assert restored_rows(litevisor_bin, rep, tmp_path / "lv.db") == a


def replicate_for(litevisor_bin, cfg, seconds=2.5):
    """`replicate -config cfg` for a while, then TERM; returns (exit code, stderr)."""
    p = subprocess.Popen([litevisor_bin, "replicate", "-config", str(cfg)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    time.sleep(seconds)
    p.terminate()
    _, err = p.communicate(timeout=30)
    return p.returncode, err


def test_a_node_left_behind_writes_no_replica_when_one_shows_it(litevisor_bin, tmp_path):
    """A replicates to r1 and r2 and stops cleanly; B, with r1 only, continues A's
    generation. A's file changes offline (its app wrote), then A runs `replicate`:
    r1 refused, but r2, holding only A's own history, wrote a new generation from
    the older database 3 ms later, the newest data anywhere (QA21). No replica
    writes until each has looked once; the refusal is logged once, not each second."""
    r1, r2 = tmp_path / "r1", tmp_path / "r2"

    def cfg(node, reps):
        (tmp_path / node).mkdir(exist_ok=True)
        c = tmp_path / f"{node}.yml"
        c.write_text(f"dbs:\n  - path: {tmp_path / node / 'app.db'}\n    replicas:\n" +
                     "".join(f"      - name: {r.name}\n        url: file://{r}\n"
                             "        sync-interval: 100ms\n" for r in reps))
        return c

    for node, reps, tag in (("A", [r1, r2], "a"), ("B", [r1], "b")):
        p = subprocess.run([litevisor_bin, "run", "-config", str(cfg(node, reps)), "--",
                            SERVICE[0], "-c", ADD_ROWS, "3", tag], capture_output=True, text=True,
                           timeout=60)
        assert p.returncode == 0, p.stderr
    before = sorted(os.listdir(r2 / "generations"))
    con = sqlite3.connect(tmp_path / "A" / "app.db")
    con.execute("INSERT INTO t VALUES ('a-offline')")
    con.commit()
    con.close()
    code, err = replicate_for(litevisor_bin, cfg("A", [r1, r2]))
    assert "this database is older than the replica's data" in err, err
    assert sorted(os.listdir(r2 / "generations")) == before, err
    assert err.count("ERROR replica: this database is older") == 1, err
    assert code != 0 and "replication of the database had stopped" in err, err  # not replicated


def test_a_node_left_behind_is_told_by_a_generation_gone_from_the_replica(litevisor_bin,
                                                                           tmp_path):
    """A closed its generation on the replica; another node went on in a generation
    of its own, and its retention deleted A's (QA21). A's record names a generation
    the replica no longer lists while it lists others: A is older, and refuses."""
    rep = tmp_path / "rep"
    node_run(litevisor_bin, tmp_path, "A", rep, 3, "a")
    (gen,) = os.listdir(rep / "generations")
    os.rename(rep / "generations" / gen, rep / "generations" / "00000000000b0b00")
    code, err = replicate_for(litevisor_bin, tmp_path / "A.yml")
    assert "no longer holds it" in err, err
    assert os.listdir(rep / "generations") == ["00000000000b0b00"], err

def test_replicate_never_writes_into_a_generation_another_node_continued(
        litevisor_bin, litestream_bin, tmp_path):
    """The same split history, but A runs `replicate` alone (no restore step, as after
    `litestream restore -if-db-not-exists`): it keeps its database, and its engine
    must start a new generation rather than append its frames to B's index (or
    snapshot over B's objects). B's generation stays restorable as it was."""
    rep = tmp_path / "rep"
    node_run(litevisor_bin, tmp_path, "A", rep, 100, "a1")
    a2 = node_dies_with_unshipped_commits(litevisor_bin, tmp_path, rep)
    b, _, _ = node_run(litevisor_bin, tmp_path, "B", rep, 20, "b")
    (gen_b,) = os.listdir(rep / "generations")
    cfg = tmp_path / "A.yml"  # written by node_run: sync-interval 100ms
    p = subprocess.Popen([litevisor_bin, "replicate", "-config", str(cfg)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait = time.time() + 20
        while time.time() < wait and len(os.listdir(rep / "generations")) < 2:
            time.sleep(0.05)
        time.sleep(1)
    finally:
        p.terminate()
        _, err = p.communicate(timeout=30)
    assert p.returncode == 0, err
    assert "starting a new generation rather than writing into it" in err, err
    assert len(os.listdir(rep / "generations")) == 2, err
    assert restored_rows(litevisor_bin, rep, tmp_path / "lv.db") == a2  # the newest: A's
    assert restored_rows(litestream_bin, rep, tmp_path / "ls.db") == a2
    out = tmp_path / "b.db"
    r = subprocess.run([litevisor_bin, "restore", "-generation", gen_b, "-o", str(out),
                        f"file://{rep}"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert [v for (v,) in sqlite3.connect(out).execute("SELECT v FROM t ORDER BY rowid")] == b


WRITE_UNTIL_TERM = (
    "import os, signal, sqlite3, sys, time\n"
    "stop = []\n"
    "signal.signal(signal.SIGTERM, lambda *a: stop.append(1))\n"
    "c = sqlite3.connect(os.environ['LITESTREAM_DB_PATH'], isolation_level=None)\n"
    "c.execute('PRAGMA journal_mode=wal')\n"
    "c.execute('CREATE TABLE IF NOT EXISTS t(v TEXT)')\n"
    "i = 0\n"
    "while not stop:\n"
    "    c.execute('INSERT INTO t VALUES (?)', ('%s-%d' % (sys.argv[1], i),))\n"
    "    i += 1\n"
    "    time.sleep(0.01)\n")


def test_a_node_started_while_the_other_still_runs_never_writes_into_its_generation(
        litevisor_bin, litestream_bin, tmp_path):
    """Two nodes at once: a Nomad client cut off from its servers keeps its task
    while a replacement starts elsewhere, or a drain starts the new task before the
    old one has stopped. B restores A's generation while A still writes into it, A
    not having closed it: B must start a generation of its own. Continuing A's, both
    wrote the same indexes under the same names, and neither tool could restore
    the replica (Litestream wrote a malformed database and exited 0)."""
    rep = tmp_path / "rep"

    def start(node):
        db = tmp_path / node / "app.db"
        db.parent.mkdir()
        cfg = tmp_path / f"{node}.yml"
        # B waits 1 s for A to close its generation (restore.handover-wait); A never does
        cfg.write_text("restore:\n  handover-wait: 1s\n"
                       f"dbs:\n  - path: {db}\n    min-checkpoint-page-count: 20\n"
                       f"    replicas:\n      - url: file://{rep}\n        sync-interval: 100ms\n"
                       "        writer-check-interval: 300ms\n")
        return subprocess.Popen([litevisor_bin, "run", "-config", str(cfg), "--", SERVICE[0],
                                 "-c", WRITE_UNTIL_TERM, node],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    a = start("A")
    b = None
    try:
        poll(lambda: list(rep.glob("generations/*/wal/*")), timeout=20)
        time.sleep(1)
        b = start("B")
        time.sleep(3)  # both write, each through several WAL indexes
        b.terminate()
        _, eb = b.communicate(timeout=30)
    finally:
        if b and b.poll() is None:
            b.kill()
            b.communicate()
        a.terminate()
        _, ea = a.communicate(timeout=30)
    assert a.returncode == 0, ea
    assert b.returncode == 0, eb
    assert "did not close it in time" in eb, eb
    assert "replication will not continue the restored generation" in eb, eb
    assert "closed where it was restored" in eb, eb
    gen_a = re.search(r"new generation db=\S+ generation=(\w+)", ea)[1]
    gen_b = re.search(r"new generation db=\S+ generation=(\w+)", eb)[1]
    assert gen_a != gen_b
    assert sorted(os.listdir(rep / "generations")) == sorted([gen_a, gen_b])
    # A, the node that will lose the next restore, is told once; B found A's there
    assert ea.count("another writer") == 1, ea
    assert re.search(rf"another writer: .* generation={gen_b} writing={gen_a}", ea), ea
    assert "another writer" not in eb, eb
    assert "its node still runs" in eb, eb
    for node, gen in (("A", gen_a), ("B", gen_b)):
        local = [v for (v,) in sqlite3.connect(tmp_path / node / "app.db").execute(
            "SELECT v FROM t ORDER BY rowid")]
        assert any(v.startswith(f"{node}-") for v in local)
        for tool in (litevisor_bin, litestream_bin):
            out = tmp_path / f"{node}-{os.path.basename(tool)}.db"
            r = subprocess.run([tool, "restore", "-generation", gen, "-o", str(out),
                                f"file://{rep}"], capture_output=True, text=True, timeout=60)
            assert r.returncode == 0, r.stderr
            con = sqlite3.connect(out)
            assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
            assert [v for (v,) in con.execute("SELECT v FROM t ORDER BY rowid")] == local, tool
    # each closed its own generation at its stop: a later start continues the newest
    assert list(rep.glob(f"generations/{gen_a}/closed/*")), ea
    assert list(rep.glob(f"generations/{gen_b}/closed/*")), eb


DRAINS_ON_TERM = (  # commits until TERM, then 2 s more (an app draining its queue)
    "import os, signal, sqlite3, sys, time\n"
    "stop = []\n"
    "signal.signal(signal.SIGTERM, lambda *a: stop.append(time.time()))\n"
    "c = sqlite3.connect(os.environ['LITESTREAM_DB_PATH'], isolation_level=None)\n"
    "c.execute('PRAGMA journal_mode=wal')\n"
    "c.execute('CREATE TABLE IF NOT EXISTS t(v TEXT)')\n"
    "i = 0\n"
    "while not stop or time.time() < stop[0] + 2:\n"
    "    c.execute('INSERT INTO t VALUES (?)', ('%s-%d' % ('drain' if stop else 'a', i),))\n"
    "    i += 1\n"
    "    time.sleep(0.02)\n")


def test_a_node_started_while_the_other_drains_takes_its_last_commits(
        litevisor_bin, litestream_bin, tmp_path):
    """A drain starts the new task before the old one has stopped: A gets TERM and its
    app commits for 2 s more; B starts 0.5 s after the TERM, with an empty disk. A's
    generation is not closed yet and was written a moment ago, so B waits for A's
    final flush and its closed mark (restore.handover-wait), then restores all of
    A's rows, the drained ones too, and continues the generation. Without the wait
    B restored A's state of 0.5 s after the TERM and A's last commits went into a
    generation nobody restores any more."""
    rep = tmp_path / "rep"

    def cfg(node):
        (tmp_path / node).mkdir()
        c = tmp_path / f"{node}.yml"
        c.write_text(f"dbs:\n  - path: {tmp_path / node / 'app.db'}\n    replicas:\n"
                     f"      - url: file://{rep}\n        sync-interval: 100ms\n")
        return c

    a = subprocess.Popen([litevisor_bin, "run", "-config", str(cfg("A")), "--", SERVICE[0], "-c",
                          DRAINS_ON_TERM], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         text=True)
    try:
        poll(lambda: list(rep.glob("generations/*/wal/*")), timeout=20)
        time.sleep(1)
        a.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        b = subprocess.run([litevisor_bin, "run", "-config", str(cfg("B")), "--", SERVICE[0], "-c",
                            ADD_ROWS, "3", "b"], capture_output=True, text=True, timeout=60)
    finally:
        _, ea = a.communicate(timeout=30)
    assert a.returncode == 0, ea
    assert b.returncode == 0, b.stderr
    assert "waiting for its node to finish stopping" in b.stderr, b.stderr
    assert "replica continues generation" in b.stderr, b.stderr
    # one block as the wait begins, one as it ends: not one per re-probe (QA22 D2)
    assert b.stderr.count("restore: decision db=") == 2, b.stderr
    a_rows = [v for (v,) in sqlite3.connect(tmp_path / "A" / "app.db").execute(
        "SELECT v FROM t ORDER BY rowid")]
    assert any(v.startswith("drain-") for v in a_rows)
    b_rows = [v for (v,) in sqlite3.connect(tmp_path / "B" / "app.db").execute(
        "SELECT v FROM t ORDER BY rowid")]
    assert b_rows == a_rows + ["b-0", "b-1", "b-2"], b.stderr
    assert len(os.listdir(rep / "generations")) == 1
    assert restored_rows(litestream_bin, rep, tmp_path / "ls.db") == b_rows


TWO_SESSIONS = (  # rows in two WAL sessions: each run moves its generation two indexes on
    "import os, sqlite3, sys, time\n"
    "c = sqlite3.connect(os.environ['LITESTREAM_DB_PATH'], isolation_level=None)\n"
    "c.execute('PRAGMA journal_mode=wal')\n"
    "c.execute('CREATE TABLE IF NOT EXISTS t(v TEXT)')\n"
    "n = int(sys.argv[1])\n"
    "for i in range(n):\n"
    "    c.execute('INSERT INTO t VALUES (?)', ('%s-%d' % (sys.argv[2], i),))\n"
    "    if i == n // 2:\n"
    "        time.sleep(0.3)\n"
    "        c.execute('PRAGMA wal_checkpoint(TRUNCATE)').fetchall()\n"
    "time.sleep(0.3)\n")


def test_a_replica_that_missed_the_other_nodes_session_restores_with_litestream(
        litevisor_bin, litestream_bin, tmp_path):
    """The seed's topology: each node writes its own peer and the NAS. After A -> B
    -> A, A's own peer holds A's old indexes 0-1 only (B's 2-3 are on the NAS); A
    continues the generation at index 4 and gives that replica a snapshot there.
    Until a segment of index 4 existed, Litestream's restore of it panicked
    ("makechan: size out of range", exit 2): with the app idle, for good. The
    snapshot now comes with the index's placeholder, a bare WAL header that the
    first real segment replaces."""
    nas = tmp_path / "nas"

    def node(name, rows):
        db = tmp_path / name / "app.db"
        db.parent.mkdir(exist_ok=True)
        cfg = tmp_path / f"{name}.yml"
        cfg.write_text(f"dbs:\n  - path: {db}\n    replicas:\n"
                       f"      - name: peer\n        url: file://{tmp_path}/peer-{name}\n"
                       "        sync-interval: 100ms\n"
                       f"      - name: nas\n        url: file://{nas}\n        sync-interval: 100ms\n")
        p = subprocess.run([litevisor_bin, "run", "-config", str(cfg), "--", SERVICE[0], "-c",
                            TWO_SESSIONS, str(rows), name], capture_output=True, text=True,
                           timeout=60)
        assert p.returncode == 0, p.stderr
        return [v for (v,) in query(db, "SELECT v FROM t ORDER BY rowid")], p.stderr

    a1, _ = node("A", 30)
    b, _ = node("B", 20)
    assert len(b) == 50
    a2, err = node("A", 0)
    assert a2 == b, err
    assert "replica continues generation" in err and "replica needs a snapshot" in err, err
    for tool in (litestream_bin, litevisor_bin):
        out = tmp_path / f"1-{os.path.basename(tool)}.db"
        assert restored_rows(tool, tmp_path / "peer-A", out) == b
    # A writes: the index's first real segment replaces the placeholder; both still restore
    a3, err = node("A", 5)
    assert len(a3) == 55 and "new generation" not in err, err
    for tool in (litestream_bin, litevisor_bin):
        out = tmp_path / f"2-{os.path.basename(tool)}.db"
        assert restored_rows(tool, tmp_path / "peer-A", out) == a3


def test_node_idle_after_a_restore_is_behind_the_other_nodes_same_index(litevisor_bin,
                                                                         tmp_path):
    """B restores A's index 0 and idles (it enters index 1, copying nothing); A then
    writes more into the same index 0 (its WAL session survived: a connection held
    it open). B's state says "index 1, offset 0", which sorts after A's (0, more),
    but B holds only (0, where it restored): it must restore A's rows, not keep
    its file. (This depended on whether A's WAL restarted: a flaky test before.)"""
    rep = tmp_path / "rep"
    a = tmp_path / "A" / "app.db"
    a.parent.mkdir()
    hold = sqlite3.connect(a, isolation_level=None)
    hold.execute("PRAGMA journal_mode=wal")
    hold.execute("CREATE TABLE t(v TEXT)")
    try:
        a1, _, _ = node_run(litevisor_bin, tmp_path, "A", rep, 30, "a1")
        b, _, eb = node_run(litevisor_bin, tmp_path, "B", rep)
        assert b == a1, eb
        a2, _, ea = node_run(litevisor_bin, tmp_path, "A", rep, 20, "a2")
        assert len(a2) == 50
        gen = os.listdir(rep / "generations")[0]
        assert not [f for f in os.listdir(rep / "generations" / gen / "wal")
                    if not f.startswith("00000000_")], ea  # A stayed in index 0
    finally:
        hold.close()
    b, files, eb = node_run(litevisor_bin, tmp_path, "B", rep)
    assert b == a2, eb


def a_then_b_snapshots_only(litevisor_bin, tmp_path, rep, b_rows=0):
    """A writes 31 rows and stops; B continues A's generation, writes nothing (or
    b_rows rows) and snapshots (snapshot-interval) at the next index. Returns A's
    rows."""
    node_run(litevisor_bin, tmp_path, "A", rep, 1, "a0")
    a1, _, _ = node_run(litevisor_bin, tmp_path, "A", rep, 30, "a1")
    db = tmp_path / "B" / "app.db"
    db.parent.mkdir()
    cfg = tmp_path / "B-snap.yml"
    cfg.write_text(f"dbs:\n  - path: {db}\n    replicas:\n      - url: file://{rep}\n"
                   "        snapshot-interval: 1s\n")
    service = [SERVICE[0], "-c", ADD_ROWS + "import time\ntime.sleep(2.5)\n", str(b_rows), "b"]
    p = subprocess.run([litevisor_bin, "run", "-config", str(cfg), "--"] + service,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    gen = os.listdir(rep / "generations")[0]
    assert "00000001.snapshot.lz4" in os.listdir(rep / "generations" / gen / "snapshots"), p.stderr
    return a1


def test_a_snapshot_the_other_node_took_where_we_ended_keeps_the_local_file(
        litevisor_bin, tmp_path):
    """B continues A's generation, writes nothing and snapshots (snapshot-interval)
    at the next index. When A comes back, that snapshot holds exactly A's data:
    A's replica index ends where A's shadow does, so A keeps its file instead
    of restoring the same data and moving an identical copy aside."""
    rep = tmp_path / "rep"
    a1 = a_then_b_snapshots_only(litevisor_bin, tmp_path, rep)
    # A's service writes on the file it kept: replication goes on at B's snapshot. Resumed
    # at its own index, it found the generation continued elsewhere and stopped, the
    # service running on: every commit of the run (and of each later one) lost (QA72 D1)
    a, files, err = node_run(litevisor_bin, tmp_path, "A", rep, 10, "a2")
    assert a == a1 + [f"a2-{i}" for i in range(10)], err
    assert "taken where the local database ends" in err, err
    assert "outcome=exists" in err, err
    assert "older than the replica" not in err and "final flush done" in err, err
    assert not [f for f in files if "replaced" in f], files
    b, _, err = node_run(litevisor_bin, tmp_path, "B", rep)
    assert b == a, err


@pytest.mark.parametrize("b_rows", [0, 1])
def test_replicate_alone_goes_on_from_a_file_the_other_nodes_snapshot_holds(
        litevisor_bin, tmp_path, b_rows):
    """As above, but A comes back as a sidecar: `replicate` alone (no restore
    step), its app a process of its own. A's file holds all B's snapshot holds, so
    refusing it as "older than the replica's data" stopped replication for good
    while the app ran on, and every commit of the run was lost (QA75 D2). A new
    generation from the file loses nothing: B's snapshot is this very data. When B
    wrote a row, A's file is older, and still refused."""
    rep = tmp_path / "rep"
    a1 = a_then_b_snapshots_only(litevisor_bin, tmp_path, rep, b_rows)
    db = tmp_path / "A" / "app.db"
    cfg = tmp_path / "A-sidecar.yml"
    cfg.write_text(f"dbs:\n  - path: {db}\n    replicas:\n      - url: file://{rep}\n"
                   "        sync-interval: 100ms\n")
    log = tmp_path / "sidecar.log"
    with open(log, "w") as out:
        r = subprocess.Popen([litevisor_bin, "replicate", "-config", str(cfg)],
                             stdout=out, stderr=subprocess.STDOUT)
    try:
        poll(lambda: any(w in log.read_text() for w in (
            "replica continues generation", "snapshot written", "older than the replica")),
             timeout=30, log=log)
        subprocess.run([sys.executable, "-c", ADD_ROWS, "10", "a2"], check=True, timeout=30,
                       env=dict(os.environ, LITESTREAM_DB_PATH=str(db)))
    finally:
        r.send_signal(signal.SIGTERM)
        code = r.wait(timeout=30)
    err = log.read_text()
    if b_rows:
        assert code == 1 and "older than the replica" in err, err
        assert "snapshot at the next index holds this data" not in err, err
        b, _, err = node_run(litevisor_bin, tmp_path, "B", rep)
        assert b == a1 + ["b-0"], err
        return
    assert code == 0, err
    assert "older than the replica" not in err, err
    assert "snapshot at the next index holds this data" in err, err
    assert "final flush done" in err, err
    b, _, err = node_run(litevisor_bin, tmp_path, "B", rep)
    assert b == a1 + [f"a2-{i}" for i in range(10)], err


def test_replicate_alone_waits_for_every_replicas_look_before_going_on_from_that_snapshot(
        litevisor_bin, tmp_path):
    """Two replicas. B snapshots at the next index on both and stops, then writes 5
    rows to r2 alone. A's sidecar starts while r2 cannot be read: r1 holds only B's
    snapshot of A's data, and went on in a new generation once the 3 s left-behind
    wait ran out; r2 then refused the file as older, too late: the new generation,
    newer, hid B's rows from every restore (QA80 D1). r1 waits for r2's look."""
    r1, r2 = tmp_path / "r1", tmp_path / "r2"

    def cfg_for(node, reps, extra=""):
        db = tmp_path / node / "app.db"
        db.parent.mkdir(exist_ok=True)
        cfg = tmp_path / f"{node}-{len(reps)}.yml"
        reps_yml = "".join(f"      - url: file://{r}\n        sync-interval: 100ms\n{extra}"
                           for r in reps)
        cfg.write_text("restore:\n  handover-wait: 1s\n"
                       f"dbs:\n  - path: {db}\n    replicas:\n{reps_yml}")
        return cfg, db

    def node(name, reps, rows, tag, extra=""):
        cfg, db = cfg_for(name, reps, extra)
        service = [SERVICE[0], "-c", ADD_ROWS + "import time\ntime.sleep(2.5)\n", str(rows), tag]
        p = subprocess.run([litevisor_bin, "run", "-config", str(cfg), "--"] + service,
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stderr
        return p.stderr

    node("A", [r1, r2], 30, "a1")
    err = node("B", [r1, r2], 0, "b", extra="        snapshot-interval: 1s\n")
    assert err.count("snapshot written") >= 2, err
    # both replicas hold only B's snapshot of A's data: each waited for the other's
    # look, which never counted, and neither replicated again (QA82 D1)
    cfg, db = cfg_for("A", [r1, r2])
    log = tmp_path / "both.log"
    with open(log, "w") as out:
        r = subprocess.Popen([litevisor_bin, "replicate", "-config", str(cfg)], stdout=out,
                             stderr=subprocess.STDOUT)
    try:
        poll(lambda: log.read_text().count("snapshot written") >= 2, timeout=30)
    finally:
        r.send_signal(signal.SIGTERM)
        assert r.wait(timeout=30) == 0, log.read_text()
    assert "starting a new generation from this database" in log.read_text()
    # then again, but B writes to r2 alone, and r2 cannot be read when A starts
    node("B", [r1, r2], 0, "b", extra="        snapshot-interval: 1s\n")
    node("B", [r2], 5, "b")
    os.rename(r2, tmp_path / "r2.away")  # unreadable a moment: a server refusing, a mount gone
    r2.write_text("")
    cfg, db = cfg_for("A", [r1, r2])
    log = tmp_path / "sidecar.log"
    with open(log, "w") as out:
        r = subprocess.Popen([litevisor_bin, "replicate", "-config", str(cfg)], stdout=out,
                             stderr=subprocess.STDOUT)
    try:
        poll(lambda: "have not looked at their data yet" in log.read_text(), timeout=30, log=log)
        # the log names the replica waited for (QA82 D2)
        waited = re.findall(r"have not looked at their data yet \(([^)]*)\)", log.read_text())
        assert waited and set(waited) == {"file-2"}, log.read_text()
        time.sleep(3.5)  # past the left-behind wait: r1 still waits
        assert "engine: new generation" not in log.read_text(), log.read_text()
        r2.unlink()
        os.rename(tmp_path / "r2.away", r2)
        poll(lambda: "older than the replica" in log.read_text(), timeout=30, log=log)
    finally:
        r.send_signal(signal.SIGTERM)
        r.wait(timeout=30)
    text = log.read_text()
    assert "engine: new generation" not in text and "snapshot written" not in text, text
    c, _, err = node_run(litevisor_bin, tmp_path, "C", r2)
    assert [v for v in c if v.startswith("b-")] == [f"b-{i}" for i in range(5)], err


def test_run_restores_the_generation_another_node_wrote_right_after_its_clean_stop(
        litevisor_bin, litestream_bin, tmp_path):
    """A runs and stops cleanly; at once a sidecar B restores, its app writes a row and
    B's `replicate` starts a generation of its own and stops. Both generations closed,
    their newest objects 0.2 s apart: A's restore step kept its file on an "ambiguous
    order", and its engine then refused that file as older than the replica (B's
    generation came after A's closed mark): replication stopped at every start (QA84
    D3). Both read "after this node's stop" by one rule now: B's generation is
    restored (A's file kept aside) and replication goes on."""
    rep = tmp_path / "rep"
    node_run(litevisor_bin, tmp_path, "A", rep, 3, "a1")
    (ga,) = os.listdir(rep / "generations")
    # the row before B's replicate: it starts a generation of its own
    code, log = sidecar(litevisor_bin, tmp_path, rep, "B", before=(1, "b1"),
                        until="snapshot written")
    assert code == 0, log
    (gb,) = [g for g in os.listdir(rep / "generations") if g != ga]
    # B's objects 0.2 s after A's closed mark, whatever this machine's pace
    (mark,) = (rep / "generations" / ga / "closed").iterdir()
    t = mark.stat().st_mtime_ns + 200 * 10**6
    for f in (rep / "generations" / gb).rglob("*"):
        if f.is_file():
            os.utime(f, ns=(t, t))
    a, files, err = node_run(litevisor_bin, tmp_path, "A", rep, 1, "a2")
    assert "older than the replica" not in err, err
    assert "written after this node's clean stop" in err, err
    assert a == ["a1-0", "a1-1", "a1-2", "b1-0", "a2-0"], err
    assert any(".replaced-" in f for f in files), files  # A's own file kept aside
    assert restored_rows(litestream_bin, rep, tmp_path / "ls.db") == a


def sidecar(litevisor_bin, tmp_path, rep, node, rows=0, tag="", extra="", until=None,
            before=None, then=None, env=None):
    """One start of a sidecar node: `restore -if-db-not-exists`, then `replicate`
    beside the app, a process of its own adding rows, then SIGTERM (after the log
    shows `until`, if given). before=(rows, tag): the app adds those between the
    restore and `replicate`; then(db): what the app does after its rows; env:
    `replicate`'s environment. Returns replicate's exit code and log."""
    db = tmp_path / node / "app.db"
    db.parent.mkdir(exist_ok=True)
    cfg = tmp_path / f"{node}.yml"
    cfg.write_text(f"dbs:\n  - path: {db}\n    replicas:\n      - url: file://{rep}\n"
                   f"        sync-interval: 100ms\n{extra}")
    p = subprocess.run([litevisor_bin, "restore", "-if-db-not-exists", "-config", str(cfg),
                        str(db)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    if before:
        app_rows(db, *before)
    log = tmp_path / f"{node}.log"
    log.write_text("")
    with open(log, "a") as out:
        r = subprocess.Popen([litevisor_bin, "replicate", "-config", str(cfg)], stdout=out,
                             stderr=subprocess.STDOUT, env=env)
    try:
        poll(lambda: any(w in log.read_text() for w in (
            "replica continues generation", "snapshot written", "older than the replica")),
             timeout=30, log=log)
        if rows:
            app_rows(db, rows, tag)
        if then:
            then(db)
        if until:
            poll(lambda: until in log.read_text(), timeout=30, log=log)
        time.sleep(0.5)
    finally:
        r.send_signal(signal.SIGTERM)
        code = r.wait(timeout=30)
    return code, log.read_text()


def b_refused_a_kept(litevisor_bin, litestream_bin, tmp_path, rep, a_db, says):
    """B's sidecar, its app adding a row, refuses its file (saying `says`), and a fresh
    restore by either tool holds exactly A's rows."""
    a = [v for (v,) in query(a_db, "SELECT v FROM t ORDER BY rowid")]
    code, log = sidecar(litevisor_bin, tmp_path, rep, "B", 1, "b1")
    assert code == 1 and says in log, log
    assert restored_rows(litevisor_bin, rep, tmp_path / "lv.db") == a
    assert restored_rows(litestream_bin, rep, tmp_path / "ls.db") == a


def app_rows(db, rows, tag):
    """The app, a process of its own, adds rows to db."""
    subprocess.run([sys.executable, "-c", ADD_ROWS, str(rows), tag], check=True, timeout=30,
                   env=dict(os.environ, LITESTREAM_DB_PATH=str(db)))


@pytest.mark.parametrize("times", ["one_whole_second", "copied"])
def test_a_nodes_own_earlier_generation_is_not_another_nodes_whatever_its_times(
        litevisor_bin, tmp_path, times):
    """One node: a clean stop in G0, its app writes while it is down, the next start goes
    on in G1 and stops. Read by times alone, G0 could be "written after" G1's closed
    mark: on S3 after a sub-second cycle (whole seconds: G0's last objects in the mark's
    second), the next start refused the file as older, at every start (QA85 D1); with
    the replica copied back into place object by object (G0 copied after G1), `run`
    restored the older G0 over the file (QA85 D2). G0 is the generation this node left
    for G1 (its "previous" record): another node's only if it goes on past where the
    file stood there."""
    rep = tmp_path / "rep"
    db = tmp_path / "A" / "app.db"
    db.parent.mkdir()
    app_rows(db, 1, "init")
    assert sidecar(litevisor_bin, tmp_path, rep, "A", 3, "a1")[0] == 0
    app_rows(db, 1, "while-down")
    code, log = sidecar(litevisor_bin, tmp_path, rep, "A", until="snapshot written")
    assert code == 0 and "new generation" in log, log
    gdir = rep / "generations"
    files = lambda g: [f for f in (gdir / g).rglob("*") if f.is_file()]
    g0, g1 = sorted(os.listdir(gdir), key=lambda g: min(f.stat().st_mtime_ns for f in files(g)))
    stamp = lambda f, t: os.utime(f, ns=(t, t))
    t = (int(time.time()) - 60) * 10**9
    if times == "one_whole_second":
        data = sorted((f for f in files(g0) if "/closed/" not in str(f)),
                      key=lambda f: f.stat().st_mtime_ns)
        for f in files(g0):
            stamp(f, t if f == data[-1] or "/closed/" in str(f) else t - 10 * 10**9)
        for f in files(g1):
            stamp(f, t)
        code, log = sidecar(litevisor_bin, tmp_path, rep, "A")
        assert code == 0 and "older than the replica" not in log, log
        assert "replica continues generation" in log, log
    else:
        for g, at in ((g1, t + 200 * 10**6), (g0, t + 500 * 10**6)):
            for f in files(g):
                stamp(f, at)
        p = subprocess.run([litevisor_bin, "run", "-config", str(tmp_path / "A.yml"), "--",
                            "true"], capture_output=True, text=True, timeout=60)
        assert p.returncode == 0 and "older than the replica" not in p.stderr, p.stderr
        assert "which the local database left" in p.stderr, p.stderr
        assert "while-down-0" in [v for (v,) in query(db, "SELECT v FROM t")]


def one_closed_generation(litevisor_bin, tmp_path):
    """Node A's app writes, its sidecar replicates and stops cleanly: one generation,
    closed, on the file replica. Returns the replica, A's database and the generation."""
    rep = tmp_path / "rep"
    db = tmp_path / "A" / "app.db"
    db.parent.mkdir()
    app_rows(db, 1, "a0")
    assert sidecar(litevisor_bin, tmp_path, rep, "A", 3, "a1")[0] == 0
    (old,) = os.listdir(rep / "generations")
    return rep, db, old


def test_retention_deletes_a_whole_generation_with_its_marks_whatever_their_age(
        litevisor_bin, tmp_path):
    """A generation past retention went, but a closed mark written after its data (a node
    that took it over idle closed it later) stayed, alone: the generation was still
    listed, and the node that wrote it, back with its older file, wrote into it again
    instead of finding it deleted by another node's retention (QA86 D6)."""
    rep, db, old = one_closed_generation(litevisor_bin, tmp_path)
    (mark,) = (rep / "generations" / old / "closed").iterdir()
    later = time.time() + 30  # closed long after its data
    os.utime(mark, (later, later))
    time.sleep(2.6)  # its data past retention + grace
    app_rows(db, 1, "down")  # while nothing replicates: the next start is a new generation
    code, log = sidecar(litevisor_bin, tmp_path, rep, "A", 60, "a2", until="deleting generation",
                        extra="        retention: 2s\n        retention-check-interval: 500ms\n"
                              "        retention-grace: 500ms\n    min-checkpoint-page-count: 20\n")
    assert code == 0, log
    left = [f for f in (rep / "generations" / old).rglob("*") if f.is_file()] \
        if (rep / "generations" / old).exists() else []
    assert not left, left


def test_a_resumed_generation_the_wal_disowns_keeps_its_closed_mark(litevisor_bin, tmp_path):
    """The app wrote while nothing replicated, and its close cut the WAL: the next start
    resumes its generation, then finds the WAL cut short and starts a new one. The
    replicas were told of the resumed generation first, and one that looked in that
    moment reopened it, deleting its closed mark, though nothing was written there again:
    left unclosed, retention kept it a day longer and other nodes took it for one a live
    node may still write (a CI flake of the retention test above). The replicas now wait
    until the WAL proves it goes on from the shadow. The engine's reads of the database
    are slowed here to widen that moment."""
    rep, db, old = one_closed_generation(litevisor_bin, tmp_path)
    app_rows(db, 1, "down")  # checkpointed and cut at its close
    code, log = sidecar(litevisor_bin, tmp_path, rep, "A", 2, "a2", env=faulty_env(
        op="pread", path=str(db), suffix="app.db", n=11, count=3, delay_ms=700))
    assert code == 0 and "wal truncated while not watching" in log, log
    assert f"replica continues generation db=app.db replica=file generation={old}" not in log, log
    assert list((rep / "generations" / old / "closed").iterdir()), log
    assert restored_rows(litevisor_bin, rep, tmp_path / "lv.db") == \
        ["a0-0", "a1-0", "a1-1", "a1-2", "down-0", "a2-0", "a2-1"]


@pytest.mark.parametrize("a_wrote_while_down", [True, False])
def test_a_restored_node_whose_replicate_starts_after_the_other_went_on_refuses(
        litevisor_bin, litestream_bin, tmp_path, a_wrote_while_down):
    """B restores A's closed generation by hand (`litevisor restore`: the restored
    marker), but its `replicate` starts only later; meanwhile A went on: in a new
    generation (its app wrote while A was down), or in that very generation. B continued
    the restored generation, the marker turning every left-behind check off, or
    snapshotted its older file into it, and A's rows were gone from every restore, with
    no warning (QA86 D1, QA87 F2): B refuses. Then `keep-local` once (the refusal's
    other remedy) and back: the refusal record did not go, and B was refused at every
    start though nothing was newer than its file (QA87 F1)."""
    rep = tmp_path / "rep"
    a_db, b_db = tmp_path / "A" / "app.db", tmp_path / "B" / "app.db"
    a_db.parent.mkdir()
    b_db.parent.mkdir()
    app_rows(a_db, 1, "a0")
    assert sidecar(litevisor_bin, tmp_path, rep, "A", 3, "a1")[0] == 0
    (tmp_path / "B.yml").write_text(f"dbs:\n  - path: {b_db}\n    replicas:\n      - url: "
                                    f"file://{rep}\n        sync-interval: 100ms\n")
    p = subprocess.run([litevisor_bin, "restore", "-config", str(tmp_path / "B.yml"), str(b_db)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    if a_wrote_while_down:
        app_rows(a_db, 2, "a-down")
    code, log = sidecar(litevisor_bin, tmp_path, rep, "A", 1, "a2")
    assert code == 0 and ("new generation" in log) == a_wrote_while_down, log
    b_refused_a_kept(litevisor_bin, litestream_bin, tmp_path, rep, a_db,
                     "another node went on since the restore" if a_wrote_while_down
                     else "another node continued it since the restore")
    code, log = sidecar(litevisor_bin, tmp_path, rep, "B", 1, "b2",
                        extra="restore:\n  existing: keep-local\n")
    assert code == 0 and "new generation" in log, log
    # newest-wins again: the refusal record went with the keep-local start
    code, log = sidecar(litevisor_bin, tmp_path, rep, "B", 1, "b3")
    assert "refused at an earlier start" not in log, log


def b_restored_from_two(litevisor_bin, tmp_path):
    """A's sidecar writes G1 to two file replicas and stops; B restores it by hand from
    both (its restored marker names both). Returns r1, r2, the config lines of r2 (for
    sidecar's extra) and A's database."""
    r1, r2 = tmp_path / "r1", tmp_path / "r2"
    second = f"      - url: file://{r2}\n        sync-interval: 100ms\n"
    a_db, b_db = tmp_path / "A" / "app.db", tmp_path / "B" / "app.db"
    a_db.parent.mkdir()
    b_db.parent.mkdir()
    app_rows(a_db, 1, "a0")
    assert sidecar(litevisor_bin, tmp_path, r1, "A", 2, "a1", extra=second)[0] == 0
    (tmp_path / "B.yml").write_text(f"dbs:\n  - path: {b_db}\n    replicas:\n      - url: "
                                    f"file://{r1}\n        sync-interval: 100ms\n{second}")
    p = subprocess.run([litevisor_bin, "restore", "-config", str(tmp_path / "B.yml"), str(b_db)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    return r1, r2, second, a_db


def test_a_restored_node_writes_nothing_before_every_replica_of_its_marker_looked(
        litevisor_bin, tmp_path):
    """B restored A's closed generation by hand (both replicas named in its marker); its
    `replicate` started after A had gone on in a new generation on the second replica
    only (the first was down then). B's first replica, holding nothing newer, went on
    in the restored generation at once, and B's rows were in it before the second
    replica's look stopped the database: there, a fork later than A's last generation
    on the other replica. The replicas the marker names now wait for each other's first
    look (3 s at most), as those holding a closed mark do (QA87 F3)."""
    r1, r2, second, a_db = b_restored_from_two(litevisor_bin, tmp_path)
    app_rows(a_db, 1, "a-down")
    code, log = sidecar(litevisor_bin, tmp_path, r2, "A", 1, "a2")  # the second replica only
    assert code == 0 and "new generation" in log, log
    gens, away = r2 / "generations", tmp_path / "r2-generations"
    os.rename(gens, away)
    os.symlink(gens, gens)  # a loop: listing it fails (ELOOP) until it is put back

    def write_then_put_back(db):
        # in this process: a second's start of an app under load could outlast the wait
        c = sqlite3.connect(db, isolation_level=None, timeout=30)
        c.execute("INSERT INTO t VALUES ('b1-0')")
        c.close()
        time.sleep(0.3)  # the first replica's sync-interval, thrice over
        gens.unlink()
        os.rename(away, gens)

    code, log = sidecar(litevisor_bin, tmp_path, r1, "B", extra=second, then=write_then_put_back,
                        until="older than the replica")
    assert code == 1 and "another node went on since the restore" in log, log
    assert restored_rows(litevisor_bin, r1, tmp_path / "r1.db") == ["a0-0", "a1-0", "a1-1"], log
    assert "replicas wait for the left-behind check" in log, log


def test_the_left_behind_wait_counts_from_when_the_replicas_may_look(litevisor_bin, tmp_path):
    """The replicas wait (3 s at most) for each other's first look, so that the one
    holding only this node's history does not write before the one holding the other
    node's newer data stops the database. The wait counted from the engine's start, but
    a resumed generation reaches the replicas only once the first copy proves it: a
    first copy longer than 3 s (a large WAL written while litevisor was down; here its
    shadow write is slowed) used the wait up, and the first replica shipped this node's
    rows into a fork (QA90 D1). It counts from when the replicas may look."""
    r1, r2 = tmp_path / "r1", tmp_path / "r2"
    second = f"      - url: file://{r2}\n        sync-interval: 100ms\n"
    a_db = tmp_path / "A" / "app.db"
    a_db.parent.mkdir()
    app_rows(a_db, 1, "a0")
    assert sidecar(litevisor_bin, tmp_path, r1, "A", 2, "a1", extra=second)[0] == 0
    assert sidecar(litevisor_bin, tmp_path, r2, "B", 2, "b1")[0] == 0  # B: the second only
    app = subprocess.Popen([sys.executable, "-c", ADD_ROWS + "import time\nprint('ok', flush=True)\n"
                            "time.sleep(120)\n", "3", "down"], stdout=subprocess.PIPE, text=True,
                           env=dict(os.environ, LITESTREAM_DB_PATH=str(a_db)))
    try:
        assert app.stdout.readline() == "ok\n"  # its connection kept: the WAL goes on
        gens, away = r2 / "generations", tmp_path / "r2-generations"
        os.rename(gens, away)
        os.symlink(gens, gens)  # listing it fails (ELOOP) until it is put back

        def put_back(db):
            time.sleep(0.3)
            gens.unlink()
            os.rename(away, gens)

        code, log = sidecar(litevisor_bin, tmp_path, r1, "A", extra=second, then=put_back,
                            until="older than the replica", env=faulty_env(
                                op="pwrite", delay_ms=4000,
                                path=str(tmp_path / "A" / ".app.db-litevisor" / "generations")))
    finally:
        app.kill()
        app.wait()
    assert code == 1, log
    assert restored_rows(litevisor_bin, r1, tmp_path / "r1.db") == ["a0-0", "a1-0", "a1-1"], log


@pytest.mark.parametrize("fault", ["shadow-full", "wal-unreadable"])
def test_a_resume_whose_first_copy_fails_shows_the_replica_lagging(litevisor_bin, tmp_path,
                                                                   fault):
    """A resumed generation whose copy fails from the first pass. The shadow's disk full:
    while it was held back from the replicas until a copy proved it, the database counted
    as not ready, so the replica's lag read 0 and the max-lag check stayed silent while
    no commit reached any replica (QA90 D3); it is published as before, only the
    replicas' looks wait for the proof. The WAL unreadable (EIO): a failed read of its
    header was taken for an empty WAL, the resume counted as proven, nothing was said,
    and the final flush said "done" and closed the generation short of commits no
    replica had (QA90 O1)."""
    db, port = tmp_path / "A" / "app.db", free_port()
    db.parent.mkdir()
    app_rows(db, 1, "a0")
    assert sidecar(litevisor_bin, tmp_path, tmp_path / "rep", "A", 2, "a1")[0] == 0
    app = subprocess.Popen([sys.executable, "-c", ADD_ROWS + "import time\nprint('ok', flush=True)\n"
                            "time.sleep(120)\n", "3", "down"], stdout=subprocess.PIPE, text=True,
                           env=dict(os.environ, LITESTREAM_DB_PATH=str(db)))
    cfg = tmp_path / "A.yml"
    cfg.write_text(f"addr: 127.0.0.1:{port}\n" + cfg.read_text())
    log = tmp_path / "second.log"
    try:
        assert app.stdout.readline() == "ok\n"  # its connection kept: the WAL goes on
        with open(log, "w") as out:
            r = subprocess.Popen([litevisor_bin, "replicate", "-config", str(cfg)], stdout=out,
                                 stderr=subprocess.STDOUT, env=faulty_env(
                                     count=1000000, **(
                                         dict(op="pwrite", errno=28, path=str(
                                             db.parent / ".app.db-litevisor" / "generations"))
                                         if fault == "shadow-full" else
                                         dict(op="pread", errno=5, path=f"{db}-wal"))))
        try:
            poll(lambda: "cannot copy new commits" in log.read_text(), timeout=20, log=log)
            time.sleep(3)

            def lag():
                body = curl(f"http://127.0.0.1:{port}/metrics")[2]
                m = re.search(r"^litevisor_replica_lag_seconds\{[^}]*\} (\S+)", body, re.M)
                return float(m.group(1)) if m else None
            assert (lag() or 0) >= 2.0, (lag(), log.read_text())
        finally:
            r.send_signal(signal.SIGTERM)
            assert r.wait(timeout=30) == 1, log.read_text()
    finally:
        app.kill()
        app.wait()


def test_replicas_refusing_at_once_write_the_refusal_record_once(litevisor_bin, tmp_path):
    """Both replicas refuse B's database at once (A went on since B's hand restore):
    each wrote the refusal record through the same temp file, and one of them failed
    ("cannot record the refusal locally"), or a replica clearing the record as it went
    on could delete what the other had just written (QA87 F6). The first refusal writes
    it, alone; its rename is slowed here so that the two would overlap."""
    r1, r2, second, a_db = b_restored_from_two(litevisor_bin, tmp_path)
    app_rows(a_db, 1, "a-down")
    code, log = sidecar(litevisor_bin, tmp_path, r1, "A", 1, "a2", extra=second)
    assert code == 0 and "new generation" in log, log
    code, log = sidecar(litevisor_bin, tmp_path, r1, "B", extra=second,
                        until="older than the replica", env=faulty_env(
                            op="rename", path="refused", delay_ms=500, count=2))
    assert code == 1 and "another node went on since the restore" in log, log
    assert "cannot record the refusal" not in log, log
    code, log = sidecar(litevisor_bin, tmp_path, r1, "B", extra=second)
    assert code == 1 and "refused at an earlier start" in log, log


def test_a_forked_file_whose_closed_generation_the_other_node_deleted_is_restored(
        litevisor_bin, tmp_path):
    """A stopped cleanly in G1; B restored it, went on in a generation of its own, and
    its retention deleted G1; A's app then wrote while A was down. A's restore step,
    finding G1 on no replica, compared times: B's newest object and A's write fell
    within the clock-skew margin, the later (A's) won and the file was kept, and the
    engine then refused it (its closed generation gone while others remain: another
    node went on), leaving the service unreplicated for that start (QA86 D7). The
    restore step now reads the closed record as the engine does: B's data is restored,
    A's file kept aside."""
    rep = tmp_path / "rep"
    a1, _, err = node_run(litevisor_bin, tmp_path, "A", rep, 2, "a1")
    (g1,) = os.listdir(rep / "generations")
    code, log = sidecar(litevisor_bin, tmp_path, rep, "B", 1, "b1", before=(1, "b0"),
                        until=f"deleting generation db=app.db replica=file generation={g1}",
                        extra="        retention: 2s\n        retention-check-interval: 500ms\n"
                              "        retention-grace: 500ms\n")
    assert code == 0 and "new generation" in log, log
    app_rows(tmp_path / "A" / "app.db", 1, "a-down")
    a, files, err = node_run(litevisor_bin, tmp_path, "A", rep, 1, "a2")
    assert "no longer holds it" in err, err
    assert a == a1 + ["b0-0", "b1-0", "a2-0"], err
    assert any(".replaced-" in f for f in files), files


def test_a_generation_continued_past_this_nodes_mark_is_newer_whatever_the_times(
        litevisor_bin, tmp_path):
    """B closed G1; A restored and continued it past B's mark (replacing B's mark with
    its own), then went on in G2 (its app wrote while A was down). With G1 and G2 both
    closed and their newest objects within a second, B's restore step took the order
    for ambiguous ("a copied replica?") and kept its stale file: the service ran without
    A's rows, and replication refused it, so its commits reached no replica (QA88 F2,
    critical). A replica holding a segment of G1 past this node's closed position is
    another node's going on, as the engine reads it: A's data is restored."""
    rep = tmp_path / "rep"
    b1, _, _ = node_run(litevisor_bin, tmp_path, "B", rep, 2, "b1")
    (g1,) = os.listdir(rep / "generations")
    a1, _, err = node_run(litevisor_bin, tmp_path, "A", rep, 2, "a1")
    assert a1 == b1 + ["a1-0", "a1-1"] and os.listdir(rep / "generations") == [g1], err
    app_rows(tmp_path / "A" / "app.db", 1, "down")
    a2, _, err = node_run(litevisor_bin, tmp_path, "A", rep, 1, "a2")
    (g2,) = set(os.listdir(rep / "generations")) - {g1}
    t = (int(time.time()) - 5) * 10**9
    for g, at in ((g1, t), (g2, t + 400 * 10**6)):  # newest objects 0.4 s apart
        for f in (rep / "generations" / g).rglob("*"):
            if f.is_file():
                os.utime(f, ns=(at, at))
    b, files, err = node_run(litevisor_bin, tmp_path, "B", rep, 1, "b2")
    assert "continued past that by another node" in err, err
    assert b == a2 + ["b2-0"], err
    assert any(".replaced-" in f for f in files), files


def start_writer(litevisor_bin, cfg, tag):
    """`run -config cfg` whose service writes rows tagged tag until TERM, in a session of
    its own (os.killpg kills litevisor and the service at once)."""
    return subprocess.Popen([litevisor_bin, "run", "-config", str(cfg), "--", SERVICE[0], "-c",
                             WRITE_UNTIL_TERM, tag], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)


def hw_node(tmp_path, node, reps, top=""):
    """<node>.yml for <node>/app.db, replicating to the file replicas reps (100 ms)."""
    db = tmp_path / node / "app.db"
    db.parent.mkdir(exist_ok=True)
    cfg = tmp_path / f"{node}.yml"
    cfg.write_text(top + f"dbs:\n  - path: {db}\n    replicas:\n" + "".join(
        f"      - url: file://{r}\n        sync-interval: 100ms\n" for r in reps))
    return cfg


def add_rows_on(litevisor_bin, cfg, rows, tag):
    """`run -config cfg` whose service adds rows tagged tag; exits 0. Its log."""
    p = subprocess.run([litevisor_bin, "run", "-config", str(cfg), "--", SERVICE[0], "-c",
                        ADD_ROWS, str(rows), tag], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    return p.stderr


def test_a_handover_wait_measures_the_local_records_generations_once(litevisor_bin, tmp_path):
    """B's file left G1 (its `previous` record) for G2; A now runs, writing on, so B's
    start waits for A's handover and probes again every second. Where G1 ends on the
    replica (its last segment downloaded) was measured again on every probe (QA101 O2);
    it is measured once now, the same last object ending at the same place."""
    rep = tmp_path / "rep"
    top = "logging:\n  level: debug\nrestore:\n  handover-wait: 3s\n"
    a, b = hw_node(tmp_path, "A", [rep], top), hw_node(tmp_path, "B", [rep], top)
    add_rows_on(litevisor_bin, a, 5, "a1")
    (g1,) = os.listdir(rep / "generations")
    add_rows_on(litevisor_bin, b, 5, "b0")
    # a write while B is stopped: B's next start forks G2, recording G1 as left
    con = sqlite3.connect(tmp_path / "B" / "app.db")
    con.execute("INSERT INTO t VALUES ('by hand')")
    con.commit()
    con.close()
    add_rows_on(litevisor_bin, b, 5, "b1")
    (g2,) = set(os.listdir(rep / "generations")) - {g1}

    def objects():
        # (os.walk: a directory the replicator removes meanwhile, a closed mark, is skipped)
        return sum(len(files) for _, _, files in os.walk(rep / "generations" / g2))
    n = objects()
    log = tmp_path / "a.log"
    with open(log, "w") as f:
        pa = subprocess.Popen([litevisor_bin, "run", "-config", str(a), "--", SERVICE[0], "-c",
                               WRITE_UNTIL_TERM, "a2"], stderr=f)
    try:
        # A goes on in G2, past B's clean stop
        poll(lambda: objects() > n + 1, timeout=30, log=log)
        err = add_rows_on(litevisor_bin, b, 1, "b2")
    finally:
        pa.send_signal(signal.SIGTERM)
        pa.wait(timeout=30)
    assert "waiting for its node to finish stopping" in err, err
    measured = [l for l in err.splitlines()
                if "measured where a generation the local state records ends" in l]
    assert len(measured) == 1, err


def in_one_second(rep, old, new):
    """Every object of generation old and the closed mark of new: one whole second, as a
    server keeping whole seconds (S3) may show them."""
    second = (int(time.time()) - 5) * 10**9
    for f in (rep / "generations" / old).rglob("*"):
        if f.is_file():
            os.utime(f, ns=(second, second))
    (mark,) = (rep / "generations" / new / "closed").iterdir()
    os.utime(mark, ns=(second, second))


def test_a_node_that_left_the_restored_generation_does_not_refuse_its_own_file_for_it(
        litevisor_bin, tmp_path):
    """B restored A's generation G1 while its second replica did not answer: no restored
    marker, so replication started a generation of its own, G2, and closed it. On a
    server keeping whole seconds, G1's last objects in the second of G2's closed mark
    read as another node going on after B's stop, and B refused its own file at the next
    start: the run's commits reached no replica, and the start after moved them aside
    (QA88 F1, critical). The restore now records where the file stood in G1 (its
    "previous" record), as the engine does when it leaves a generation. The times are
    set here to one whole second on a file replica."""
    r1, r2 = tmp_path / "r1", tmp_path / "r2"
    a, b = hw_node(tmp_path, "A", [r1, r2]), hw_node(tmp_path, "B", [r1, r2])
    add_rows_on(litevisor_bin, a, 2, "a1")
    (g1,) = os.listdir(r1 / "generations")
    os.rename(r2, tmp_path / "r2.away")
    r2.write_text("not a directory: this replica cannot be read\n")
    err = add_rows_on(litevisor_bin, b, 2, "b1")
    assert "will not continue the restored generation" in err, err
    r2.unlink()
    os.rename(tmp_path / "r2.away", r2)
    (g2,) = set(os.listdir(r1 / "generations")) - {g1}
    in_one_second(r1, g1, g2)
    err = add_rows_on(litevisor_bin, b, 3, "b2")
    assert "older than the replica" not in err, err
    assert restored_rows(litevisor_bin, r1, tmp_path / "lv.db") == \
        ["a1-0", "a1-1", "b1-0", "b1-1", "b2-0", "b2-1", "b2-2"], err


def test_a_node_restored_from_a_killed_nodes_generation_does_not_refuse_its_own_file_for_it(
        litevisor_bin, tmp_path):
    """A was killed: its generation G1 is not closed. B, with handover-wait 0s, restored
    G1 and started G2 of its own (G1's node may still write into it), then stopped
    cleanly. On whole-second times, G1's last objects in the second of G2's closed mark
    read as A going on after B's stop: B refused its own file at its next start, and
    that run's commits reached no replica (QA88 F1, after-a-kill trigger). The restore
    records where the file stood in G1 as an open generation's: G1 ending there is B's
    past whatever the times; G1 going on past it counts by its times (A may have been
    alive, the documented cost of 0s). The kill is a removed closed mark; the times are
    set to one whole second on a file replica."""
    rep = tmp_path / "rep"
    hw0 = "restore:\n  handover-wait: 0s\n"
    a, b = hw_node(tmp_path, "A", [rep], hw0), hw_node(tmp_path, "B", [rep], hw0)
    add_rows_on(litevisor_bin, a, 2, "a1")
    (g1,) = os.listdir(rep / "generations")
    shutil.rmtree(rep / "generations" / g1 / "closed")  # A died before its final flush
    err = add_rows_on(litevisor_bin, b, 2, "b1")
    assert "will not continue the restored generation" in err, err
    (g2,) = set(os.listdir(rep / "generations")) - {g1}
    in_one_second(rep, g1, g2)
    err = add_rows_on(litevisor_bin, b, 3, "b2")
    assert "older than the replica" not in err, err
    assert restored_rows(litevisor_bin, rep, tmp_path / "lv.db") == \
        ["a1-0", "a1-1", "b1-0", "b1-1", "b2-0", "b2-1", "b2-2"], err


def split_by_two_outages(litevisor_bin, tmp_path):
    """Nodes A and B on file replicas r1, r2: A writes G1 (a1); B, with r1 down, restores
    it from r2 and forks G2 there (b1); A, with r2 down, goes on in G1 on r1 (a2). r2 is
    left down. Returns (r1, r2, A's config, B's config)."""
    r1, r2 = tmp_path / "r1", tmp_path / "r2"
    a, b = hw_node(tmp_path, "A", [r1, r2]), hw_node(tmp_path, "B", [r1, r2])
    add_rows_on(litevisor_bin, a, 2, "a1")
    take_away(r1, tmp_path)
    add_rows_on(litevisor_bin, b, 2, "b1")
    bring_back(r1, tmp_path)
    take_away(r2, tmp_path)
    add_rows_on(litevisor_bin, a, 2, "a2")
    return r1, r2, a, b


def test_a_generation_gone_on_past_where_this_node_left_it_wins_over_its_own_fork(
        litevisor_bin, tmp_path):
    """Two outages split the replicas. B ran with r1 down: it restored A's G1 from r2 and
    wrote G2 of its own there. A then ran with r2 down and went on in G1 on r1, past
    where B's file left G1. At B's next start r2, holding both generations, ranks its
    G2 over G1 by its one clock, and the restore kept B's file; but replication, which
    reads B's "previous" record, found G1 gone on past it on r1 and refused the file at
    every start (QA95 D3, high). The restore weighs that record as replication does: G1
    gone on past where B left it is newer than B's own fork; B's file goes aside, kept."""
    r1, r2, a, b = split_by_two_outages(litevisor_bin, tmp_path)
    bring_back(r2, tmp_path)
    err = add_rows_on(litevisor_bin, b, 1, "b2")
    assert "older than the replica" not in err, err
    assert "a replica holds newer data than the local database" in err, err
    for rep in (r1, r2):
        assert restored_rows(litevisor_bin, rep, tmp_path / f"{rep.name}.db") == \
            ["a1-0", "a1-1", "a2-0", "a2-1", "b2-0"], err


def test_a_fork_another_node_went_on_in_before_this_nodes_stop_does_not_supersede_the_file(
        litevisor_bin, tmp_path):
    """Two outages split the history; B's restore took G1 and recorded its own fork G2 as
    set aside. While B ran on, C (on r2 only) restored G2 and went on in it; then B wrote
    on and stopped cleanly. Replication asks about G2 only if it was written after B's
    clean stop, and it was not: it keeps B's file. The restore took G2 gone on past B's
    aside record for newer whenever that happened and replaced B's newest file by C's
    older fork (QA104 D5, critical). The aside record now counts only what was written
    after this node's own end, as replication reads it."""
    r1, r2, a, b = split_by_two_outages(litevisor_bin, tmp_path)
    bring_back(r2, tmp_path)
    c_cfg = hw_node(tmp_path, "C", [r2], "restore:\n  existing: keep-local\n")
    p = subprocess.run([litevisor_bin, "restore", "-config", str(c_cfg),
                        str(tmp_path / "C" / "app.db")], capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0, p.stderr
    bdb = tmp_path / "B" / "app.db"
    log = tmp_path / "b.log"
    with open(log, "w") as f:
        w = subprocess.Popen([litevisor_bin, "run", "-config", str(b), "--", SERVICE[0], "-c",
                              WRITE_UNTIL_TERM, "B"], stderr=f)
    def b_restored_and_writing():
        # B's restore moves the state directory and the file aside on its way: missing
        # for a moment is "not yet".
        try:
            return "aside" in os.listdir(tmp_path / "B" / ".app.db-litevisor") and \
                query(bdb, "SELECT count(*) FROM t WHERE v LIKE 'B-%'")[0][0] > 3
        except (FileNotFoundError, sqlite3.OperationalError):
            return False
    try:
        poll(b_restored_and_writing, timeout=30, log=log)
        err = add_rows_on(litevisor_bin, c_cfg, 3, "c")  # C goes on in G2 on r2
        assert "continuing restored generation" in err, err
        time.sleep(1.5)  # B writes on, after C's rows
    finally:
        w.terminate()
        assert w.wait(timeout=30) == 0, log.read_text()
    before = query(bdb, "SELECT v FROM t ORDER BY rowid")
    err = add_rows_on(litevisor_bin, b, 1, "b2")
    assert "older than the replica" not in err, err
    assert "local database is current" in err, err
    assert query(bdb, "SELECT v FROM t ORDER BY rowid") == before + [("b2-0",)]


def test_a_restore_that_cannot_record_the_file_it_set_aside_puts_it_back(litevisor_bin,
                                                                         tmp_path):
    """B's restore moves its fork G2 aside for G1 (QA95 D3) and records that in the new
    state ("aside"). That record was written after the restored file took its place, and a
    failure (a full state disk) was only a warning: replication then took G2 for another
    node's, refused the restored file, and the next start restored B's stale fork (QA104 D2,
    critical). It is written before the rename now; when it cannot be, the restore fails
    and B's file and state go back, as they were. The next start, with room, restores."""
    r1, r2, a, b = split_by_two_outages(litevisor_bin, tmp_path)
    bring_back(r2, tmp_path)
    bdb = tmp_path / "B" / "app.db"
    before = query(bdb, "SELECT v FROM t ORDER BY rowid")
    state = sorted(os.listdir(tmp_path / "B" / ".app.db-litevisor"))
    env = faulty_env(op="rename", suffix="/aside", errno=28)
    p = subprocess.run([litevisor_bin, "run", "-config", str(b), "--", SERVICE[0], "-c",
                        ADD_ROWS, "1", "b2"], capture_output=True, text=True, timeout=60,
                       env=env)
    assert p.returncode == 111, p.stderr
    assert "cannot record in" in p.stderr and "the local database is put back" in p.stderr
    assert query(bdb, "SELECT v FROM t ORDER BY rowid") == before
    assert sorted(os.listdir(tmp_path / "B" / ".app.db-litevisor")) == state
    assert not list((tmp_path / "B").glob("app.db.replaced-*"))
    err = add_rows_on(litevisor_bin, b, 1, "b3")
    assert "older than the replica" not in err, err
    err = add_rows_on(litevisor_bin, b, 1, "b4")
    assert "older than the replica" not in err, err
    rows = ["a1-0", "a1-1", "a2-0", "a2-1", "b3-0", "b4-0"]
    for rep in (r1, r2):
        assert restored_rows(litevisor_bin, rep, tmp_path / f"{rep.name}.db") == rows, err


def one_second_fork_moved(litevisor_bin, tmp_path):
    """One-second fork: A writes G1, B restores it while A runs, forks G2 and stops
    cleanly; A stops in the same whole second. The replica then moves (B's config names
    the new path), so B's closed record names another location and is not used: B's
    restore keeps its file, and replication, with no closed record, counts G1 in the
    same second as written after B's last object and refuses it (QA104 D1). Returns
    (B's config, the moved replica)."""
    rep = tmp_path / "rep"
    hw0 = "restore:\n  handover-wait: 0s\n"
    b = hw_node(tmp_path, "B", [rep], hw0)
    a = subprocess.Popen([litevisor_bin, "run", "-config", str(hw_node(tmp_path, "A", [rep], hw0)),
                          "--", SERVICE[0], "-c", WRITE_UNTIL_TERM, "A"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        poll(lambda: list(rep.glob("generations/*/wal/*")), timeout=20)
        (g1,) = os.listdir(rep / "generations")
        err = add_rows_on(litevisor_bin, b, 2, "b1")
        assert "will not continue the restored generation" in err, err
        had = len(list((rep / "generations" / g1).glob("wal/*")))
        poll(lambda: len(list((rep / "generations" / g1).glob("wal/*"))) > had, timeout=20)
        time.sleep(0.3)
    finally:
        a.terminate()
        assert a.wait(timeout=30) == 0
    (g2,) = set(os.listdir(rep / "generations")) - {g1}
    second = (int(time.time()) - 5) * 10**9
    for gen, start in ((g1, 3), (g2, 1)):  # both end in one whole second, as on S3
        for f in (rep / "generations" / gen).rglob("*"):
            if f.is_file():
                t = second - start * 10**9 if f.parent.name == "snapshots" else second
                os.utime(f, ns=(t, t))
    moved = tmp_path / "rep-moved"
    os.rename(rep, moved)
    return hw_node(tmp_path, "B", [moved], hw0), moved


def test_a_database_replication_refuses_at_its_first_look_is_restored_before_the_service_starts(
        litevisor_bin, tmp_path):
    """A one-second fork whose replica moved (one_second_fork_moved): B's restore kept
    its file, replication refused it (QA104 D1), and the service ran a whole run whose
    commits reached no replica and went aside at the next start. Replication's first
    look now comes before the service: refused, the database is restored again (the
    refusal recorded) and the service starts on what replication takes, its commits
    replicated."""
    b, moved = one_second_fork_moved(litevisor_bin, tmp_path)
    err = add_rows_on(litevisor_bin, b, 1, "b2")
    assert "restoring again before the service starts" in err, err
    assert "refused the database again" not in err, err
    start = err.index("restoring again before the service starts")
    assert "service started" in err[start:] and "service started" not in err[:start], err
    err = add_rows_on(litevisor_bin, b, 1, "b3")
    assert "older than the replica" not in err, err
    rows = restored_rows(litevisor_bin, moved, tmp_path / "r.db")
    assert rows[-2:] == ["b2-0", "b3-0"], (rows, err)


def test_the_engine_stop_before_a_second_restore_does_not_wait_out_a_snapshot(
        litevisor_bin, tmp_path):
    """The refused database of one_second_fork_moved, with six more databases in the
    config, each starting a new generation (a snapshot) as replication first looks: the
    old engine's stop before the second restore waited out a snapshot's 5 s wait for a
    monitor pass that never came. The start took 5 s longer, or tripped the stop's 5 s
    bound: exit 111, "a replica that does not answer?" with every replica a local
    directory (QA107 D3). A stop now ends that wait."""
    for attempt in range(3):  # the race: about one start in two before
        base = tmp_path / f"a{attempt}"
        base.mkdir()
        b, _ = one_second_fork_moved(litevisor_bin, base)
        extra = ""
        for k in range(6):
            db2 = base / "B" / f"two{k}.db"
            extra += (f"  - path: {db2}\n    replicas:\n      - url: file://{base}/rep2-{k}\n"
                      "        sync-interval: 100ms\n")
            c = sqlite3.connect(db2, isolation_level=None)
            c.execute("PRAGMA journal_mode=wal")
            c.execute("CREATE TABLE t(v TEXT)")
            c.executemany("INSERT INTO t VALUES (?)", [("x" * 1000,)] * 200)
            c.close()
        b.write_text(b.read_text() + extra)
        t0 = time.monotonic()
        p = subprocess.run([litevisor_bin, "run", "-config", str(b), "--", SERVICE[0], "-c",
                            "pass"], capture_output=True, text=True, timeout=90)
        took = time.monotonic() - t0
        assert "restoring again before the service starts" in p.stderr, p.stderr
        assert p.returncode == 0 and "did not stop in time" not in p.stderr, p.stderr
        assert took < 4, (took, p.stderr)


def test_a_stop_during_the_second_restore_stops_before_the_service(litevisor_bin, tmp_path):
    """A TERM while the restore step ran again after a refusal: the restore's event
    counter still held the first restore's count, so the wait returned at once, the
    signal went unread, and the service started anyway (QA106 D1). It ends litevisor
    with 143 now, the service never started, as during the first restore."""
    b, _ = one_second_fork_moved(litevisor_bin, tmp_path)
    fault = tmp_path / "fault.log"
    # the first restore keeps the file: the only rename onto app.db is the second one's
    env = faulty_env(op="rename", path=str(tmp_path / "B"), suffix="/app.db", delay_ms=4000,
                     log=str(fault))
    log = tmp_path / "b.log"
    with open(log, "w") as f:
        p = subprocess.Popen([litevisor_bin, "run", "-config", str(b), "--", SERVICE[0], "-c",
                              ADD_ROWS, "1", "b2"], stderr=f, env=env)
    try:
        poll(fault.exists, timeout=30, log=log)
        time.sleep(0.5)
        p.terminate()
        assert p.wait(timeout=30) == 143, log.read_text()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert "service started" not in log.read_text(), log.read_text()
    # the last line of every exit, this one's too (QA149 O2)
    assert log.read_text().splitlines()[-1].endswith("supervisor: exiting code=143"), \
        log.read_text()


def test_a_fresh_node_is_not_refused_on_a_replica_whose_copy_of_the_restored_fork_is_short(
        litevisor_bin, tmp_path):
    """A writes X on r1 and r2; B starts beside it, restores X and forks G on both; B
    then loses r2 (a partition) while A writes on in X on both; A is killed, B writes on
    in G on r1 only and is killed. A fresh node C restores G (it started later: the
    servers disagree) from r1. Replication on r2 measured "written after the restore"
    from r2's own copy of G, cut short at the partition, found X newer and refused C at
    every start, each run's commits moved aside at the next (QA104 D6). A replica
    holding less of the restored generation than was restored says nothing of what came
    after the restore."""
    r1, r2 = tmp_path / "r1", tmp_path / "r2"
    r2.mkdir()
    link = tmp_path / "r2-via-link"
    os.symlink(r2, link)
    hw0 = "restore:\n  handover-wait: 0s\n"

    a = start_writer(litevisor_bin, hw_node(tmp_path, "A", [r1, r2], hw0), "A")
    b = None
    try:
        poll(lambda: all(list(r.glob("generations/*/wal/*")) for r in (r1, r2)), timeout=20)
        b = start_writer(litevisor_bin, hw_node(tmp_path, "B", [r1, link], hw0), "B")
        poll(lambda: all(len(os.listdir(r / "generations")) == 2 and
                         all(list(g.glob("wal/*")) for g in (r / "generations").iterdir())
                         for r in (r1, r2)), timeout=20)
        time.sleep(0.3)
        os.unlink(link)  # B is cut off from r2
        link.write_text("unreachable from B\n")
        time.sleep(1.5)  # A writes on in X on both
        os.killpg(a.pid, signal.SIGKILL)
        a.wait()
        time.sleep(1.5)  # B writes on in G on r1 only
    finally:
        for p in (a, b):
            if p and p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
    c = hw_node(tmp_path, "C", [r1, r2], hw0)
    for i in range(2):
        err = add_rows_on(litevisor_bin, c, 1, f"c{i}")
        assert "older than the replica" not in err, err
    rows = query(tmp_path / "C" / "app.db", "SELECT v FROM t ORDER BY rowid")
    assert rows[-2:] == [("c0-0",), ("c1-0",)], rows[-4:]


@pytest.mark.parametrize("newest", ["own-past", "older-fork"])
def test_a_supersede_restores_what_ranks_above_the_file_not_the_newest_by_time(
        litevisor_bin, tmp_path, newest):
    """B left G1 (on d only) for G2 (on c and d) and stopped cleanly; c, keeping whole
    seconds, also holds X, another node's generation ending in the second of B's closed
    mark: B's state ranks X above G2 (as replication does). The restore then took the
    newest of the others by time across servers: d's clock runs 4 s ahead, so that was
    G1, B's own past (the file was kept and replication refused it for X), or Z, another
    node's fork on d that ended before G2 began there, restored over B's newer file
    (QA104 D3). What it restores must rank above the file: X here."""
    c, d = tmp_path / "c", tmp_path / "d"
    add_rows_on(litevisor_bin, hw_node(tmp_path, "B", [d]), 2, "b1")  # G1, on d only
    (g1,) = os.listdir(d / "generations")
    b = hw_node(tmp_path, "B", [c, d])
    con = sqlite3.connect(tmp_path / "B" / "app.db", isolation_level=None)
    con.execute("INSERT INTO t VALUES ('b-offline')")  # while litevisor is stopped
    con.close()
    assert "new generation" in add_rows_on(litevisor_bin, b, 2, "b2")  # G2, on c and d
    (g2,) = set(os.listdir(d / "generations")) - {g1}
    (bid,) = os.listdir(d / "generations" / g2 / "database")

    def other_node(name, rep, tags):
        """Another node's generation of this database, moved into rep."""
        own = tmp_path / f"{name}-rep"
        cfg = hw_node(tmp_path, name, [own])
        for tag in tags:
            add_rows_on(litevisor_bin, cfg, 2, tag)
        (g,) = os.listdir(own / "generations")
        os.rename(own / "generations" / g, rep / "generations" / g)
        for f in (rep / "generations" / g / "database").iterdir():
            f.unlink()
        (rep / "generations" / g / "database" / bid).write_bytes(b"")
        return g

    gx = other_node("X", c, ["x", "y"])
    gz = other_node("Z", d, ["z", "zz"]) if newest == "older-fork" else None
    second = (int(time.time()) - 30) * 10**9

    def stamp(rep, gen, start, end):
        for f in (rep / "generations" / gen).rglob("*"):
            if f.is_file():
                if f.stat().st_nlink > 1:  # one inode shared by both file replicas
                    shutil.copyfile(f, str(f) + ".copy")
                    os.rename(str(f) + ".copy", f)
                t = start if f.parent.name == "snapshots" else end
                os.utime(f, ns=(t, t))

    stamp(c, g2, second - 2 * 10**9, second)  # c: whole seconds, G2 and X end in one
    stamp(c, gx, second - 3 * 10**9, second)
    ahead = 4 * 10**9  # d: nanoseconds, 4 s ahead
    stamp(d, g2, second - 2 * 10**9 + ahead + 789, second + ahead + 321)
    if gz:
        stamp(d, g1, second - 8 * 10**9 + ahead + 123, second - 7 * 10**9 + ahead + 456)
        stamp(d, gz, second - 6 * 10**9 + ahead + 123, second - 25 * 10**8 + ahead + 456)
    else:
        stamp(d, g1, second - 5 * 10**9 + ahead + 123, second - 25 * 10**8 + ahead + 456)
    err = add_rows_on(litevisor_bin, b, 1, "b3")
    rows = [v for (v,) in query(tmp_path / "B" / "app.db", "SELECT v FROM t ORDER BY rowid")]
    assert rows == ["x-0", "x-1", "y-0", "y-1", "b3-0"], (rows, err)
    assert "older than the replica" not in err, err
    assert "does not rank above the local generation" in err, err


def stamp_generation(rep, gen, start, end):
    """The oldest object of generation gen on the file replica rep at start (ns), every
    other one at end."""
    files = sorted((f for f in (rep / "generations" / gen).rglob("*") if f.is_file()),
                   key=lambda f: f.stat().st_mtime_ns)
    for i, f in enumerate(files):
        os.utime(f, ns=(start, start) if i == 0 else (end, end))


@pytest.mark.parametrize("a_stops,b_stops,last", [
    ("TERM", "clean", "A"), ("KILL", "clean", "A"), ("TERM", "clean", "B"),
    ("TERM", "killed", "A"), ("TERM", "killed", "B"), ("KILL", "killed", "B")])
def test_a_fork_ending_in_one_second_is_ordered_alike_by_the_restore_and_replication(
        litevisor_bin, tmp_path, a_stops, b_stops, last):
    """handover-wait 0s: B restored A's open G1 while A wrote on, and wrote G2 of its own;
    B stopped cleanly or was killed, A stopped or was killed, in one second. On a server
    keeping whole seconds ("s3") both end in that second, and G2, which started later,
    ranked newer; on one keeping nanoseconds ("file") `last` ended last. The restore kept
    B's file while replication, reading G1 in the second of B's clean stop (or of its last
    object, killed) as written after it, refused it at every start (QA95 D1, high; QA100
    D1 with B last). The restore now reads B's own state by replication's rules: G1 in
    that second supersedes B's file, which goes aside, and the file's generation stays
    B's own past for replication (its "aside" record)."""
    s3, f = tmp_path / "s3", tmp_path / "file"
    hw0 = "restore:\n  handover-wait: 0s\n"
    b_cfg = hw_node(tmp_path, "B", [s3, f], hw0)

    a = start_writer(litevisor_bin, hw_node(tmp_path, "A", [s3, f], hw0), "A")
    b = None
    try:
        poll(lambda: all(list(r.glob("generations/*/wal/*")) for r in (s3, f)), timeout=20)
        (g1,) = os.listdir(s3 / "generations")
        if b_stops == "clean":
            err = add_rows_on(litevisor_bin, b_cfg, 2, "b1")
            assert "will not continue the restored generation" in err, err
        else:
            b = start_writer(litevisor_bin, b_cfg, "b1")
            poll(lambda: all(len(list(r.glob("generations/*/wal/*"))) >= 2 for r in (s3, f)),
                 timeout=20)
        # A writes on in G1 after B's fork, and both replicas get it
        had = [len(list((r / "generations" / g1).glob("wal/*"))) for r in (s3, f)]
        poll(lambda: all(len(list((r / "generations" / g1).glob("wal/*"))) > n
                         for r, n in zip((s3, f), had)), timeout=20)
        time.sleep(0.3)
    finally:
        if b:
            os.killpg(b.pid, signal.SIGKILL)
            b.wait(timeout=30)
        os.killpg(a.pid, signal.SIGTERM if a_stops == "TERM" else signal.SIGKILL)
        a.wait(timeout=30)
    (g2,) = set(os.listdir(s3 / "generations")) - {g1}
    second = (int(time.time()) - 5) * 10**9
    stamp_generation(s3, g1, second - 3 * 10**9, second)
    stamp_generation(s3, g2, second - 10**9, second)
    a_end, b_end = (8, 3) if last == "A" else (3, 8)
    stamp_generation(f, g1, second - 29 * 10**8, second + a_end * 10**8)
    stamp_generation(f, g2, second - 9 * 10**8, second + b_end * 10**8)
    err = add_rows_on(litevisor_bin, b_cfg, 1, "b2")
    assert "older than the replica" not in err, err
    rows = [restored_rows(litevisor_bin, rep, tmp_path / f"{rep.name}.db") for rep in (s3, f)]
    assert rows[0] == rows[1] and rows[0][-1] == "b2-0" and len(rows[0]) > 3, (rows, err)
    assert not any(v.startswith("b1-") for v in rows[0]), (rows, err)
    assert list((tmp_path / "B").glob("app.db.replaced-*")), os.listdir(tmp_path / "B")


def test_the_left_generation_does_not_outrank_a_fork_another_node_went_on_in(
        litevisor_bin, tmp_path):
    """Two outages split the history: B's file is in its fork G2, having left G1 at X; A
    went on in G1 past X with r2 down, then, its disk wiped, restored G2 and went on in
    it on both replicas. At B's next start the restore took G1 ("gone on past where the
    file left it") over G2, the newest on both replicas, and replication refused the
    restored file (QA102 D1, high, a regression of d5d6b9c). Once another node went on
    in the file's own generation too, the record does not order the two."""
    r1, r2 = tmp_path / "r1", tmp_path / "r2"
    a, b = hw_node(tmp_path, "A", [r1, r2]), hw_node(tmp_path, "B", [r1, r2])

    def wipe_a():
        shutil.rmtree(tmp_path / "A")
        (tmp_path / "A").mkdir()

    add_rows_on(litevisor_bin, a, 2, "a1")
    take_away(r1, tmp_path)
    wipe_a()
    add_rows_on(litevisor_bin, a, 2, "a2")   # G1, on r2
    add_rows_on(litevisor_bin, b, 2, "b3")   # B restores G1, forks G2
    bring_back(r1, tmp_path)
    take_away(r2, tmp_path)
    add_rows_on(litevisor_bin, a, 300, "a4")  # A goes on in G1 on r1
    bring_back(r2, tmp_path)
    wipe_a()
    add_rows_on(litevisor_bin, a, 2, "a5")   # A restores G2 and goes on in it
    err = add_rows_on(litevisor_bin, b, 1, "b6")
    assert "older than the replica" not in err, err
    rows = restored_rows(litevisor_bin, r1, tmp_path / "r1.db")
    assert rows[-3:] == ["a5-0", "a5-1", "b6-0"], (rows[-5:], err)


def test_a_fresh_node_is_not_refused_for_the_parent_of_the_generation_it_restored(
        litevisor_bin, tmp_path):
    """Sequential runs: B closed G1; with "file" down, A restored G1 from "s3" (no restored
    marker: a replica did not answer), wrote and closed G2, in the second G1 ended. A
    fresh node C, "file" still down, restored G2 (on "s3" both end in one second, and G2
    started later) and started G3; replication then took G1, G2's own parent, in G2's
    last second for another node's going on and refused C at every start (QA99 D1,
    high). The restore's record says it weighed that tie: only a strictly later object
    counts after it."""
    f, s3 = tmp_path / "file", tmp_path / "s3"
    b = hw_node(tmp_path, "B", [f, s3])
    a = hw_node(tmp_path, "A", [f, s3])
    c = hw_node(tmp_path, "C", [f, s3])
    p = subprocess.Popen([litevisor_bin, "run", "-config", str(b), "--", SERVICE[0], "-c",
                          WRITE_UNTIL_TERM, "b1"], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    try:
        poll(lambda: len(list(s3.glob("generations/*/wal/*"))) >= 2, timeout=20)
    finally:
        p.terminate()
        assert p.wait(timeout=30) == 0
    (g1,) = os.listdir(s3 / "generations")
    take_away(f, tmp_path)
    err = add_rows_on(litevisor_bin, a, 2, "a1")
    assert "will not continue the restored generation" in err, err
    (g2,) = set(os.listdir(s3 / "generations")) - {g1}
    second = (int(time.time()) - 5) * 10**9
    stamp_generation(s3, g1, second - 3 * 10**9, second)
    stamp_generation(s3, g2, second - 10**9, second)
    err = add_rows_on(litevisor_bin, c, 1, "c1")
    assert "older than the replica" not in err, err
    rows = restored_rows(litevisor_bin, s3, tmp_path / "s3.db")
    assert rows[-3:] == ["a1-0", "a1-1", "c1-0"] and rows[0] == "b1-0", (rows, err)


def two_killed_forks(litevisor_bin, tmp_path, shorten=False):
    """handover-wait 0s and both nodes killed: G1 (A's) and G2 (B's, from G1) both open.
    On "s3" both end in one second and G2 started later; on "file" G1 ends half a second
    after G2. shorten: "file" holds G1's segments as "s3" does, but one frame less of the
    last (a replica its node did not ship the last commits to). Returns (s3, file, the
    config head every node uses, G1)."""
    s3, f = tmp_path / "s3", tmp_path / "file"
    hw0 = "restore:\n  handover-wait: 0s\n"

    def start(node, tag):
        return subprocess.Popen([litevisor_bin, "run", "-config",
                                 str(hw_node(tmp_path, node, [s3, f], hw0)), "--", SERVICE[0],
                                 "-c", WRITE_UNTIL_TERM, tag], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)

    a = start("A", "A")
    b = None
    try:
        poll(lambda: all(list(r.glob("generations/*/wal/*")) for r in (s3, f)), timeout=20)
        (g1,) = os.listdir(s3 / "generations")
        b = start("B", "B")
        # G2 begun, with WAL of its own, on both replicas
        poll(lambda: all(len(os.listdir(r / "generations")) == 2 and
                         all(list(g.glob("wal/*")) for g in (r / "generations").iterdir())
                         for r in (s3, f)), timeout=20)
        time.sleep(0.5)
    finally:
        for p in (a, b):
            if p:
                kill_group(p)
    (g2,) = set(os.listdir(s3 / "generations")) - {g1}
    if shorten:
        wal = f / "generations" / g1 / "wal"
        shutil.rmtree(wal)
        shutil.copytree(s3 / "generations" / g1 / "wal", wal)
        # not a put's temporary file, left by the kill ("<key>.tmp-…" sorts after <key>)
        last = sorted(p for p in wal.iterdir() if p.name.endswith(".wal.lz4"))[-1]
        data = subprocess.run(["lz4", "-dc", str(last)], capture_output=True,
                              check=True).stdout
        frame = 24 + 4096
        assert len(data) >= 2 * frame and len(data) % frame == 0, len(data)
        last.write_bytes(subprocess.run(["lz4", "-c"], input=data[:-frame],
                                        capture_output=True, check=True).stdout)
    second = (int(time.time()) - 5) * 10**9
    stamp_generation(s3, g1, second - 3 * 10**9, second)
    stamp_generation(s3, g2, second - 10**9, second)
    stamp_generation(f, g1, second - 29 * 10**8, second + 8 * 10**8)
    stamp_generation(f, g2, second - 9 * 10**8, second + 3 * 10**8)
    return s3, f, hw0, g1


def test_two_killed_forks_in_one_second_are_ordered_by_the_clock_that_can_tell(
        litevisor_bin, tmp_path):
    """Two killed forks (two_killed_forks). The restore let "started later" outvote the
    clock that could tell, picked G2, and replication, for which G1's later nanoseconds
    are later, refused every node at every start, a fresh one too (QA99 D2, high). The
    clock that can tell decides."""
    s3, f, hw0, _ = two_killed_forks(litevisor_bin, tmp_path)
    err = add_rows_on(litevisor_bin, hw_node(tmp_path, "C", [s3, f], hw0), 1, "c1")
    assert "older than the replica" not in err, err
    rows = [restored_rows(litevisor_bin, rep, tmp_path / f"{rep.name}.db") for rep in (s3, f)]
    assert rows[0] == rows[1] and rows[0][-1] == "c1-0", (rows, err)
    assert not any(v.startswith("B-") for v in rows[0]), rows


def test_a_file_two_forks_on_from_a_generation_in_one_second_is_not_refused_for_it(
        litevisor_bin, litestream_bin, tmp_path):
    """B's file forked twice (its app wrote while litevisor was down): G1 -> G2 -> G3,
    and B was killed in G3. On a server keeping whole seconds, all three end in one
    second. The state kept one `previous` record (G2), so G1 was no record's: read as
    written after B's last object, another node going on, and replication refused B's
    own file at every start (QA101 D2, high; B's restore kept it). The state now keeps
    every generation the file left ("earlier"): G1 is B's own past, not gone on."""
    rep = tmp_path / "rep"
    a, b = hw_node(tmp_path, "A", [rep]), hw_node(tmp_path, "B", [rep])
    add_rows_on(litevisor_bin, a, 2, "a1")
    (g1,) = os.listdir(rep / "generations")
    add_rows_on(litevisor_bin, b, 2, "b0")

    def by_hand(v):  # the app writes while litevisor is down: the next start forks
        con = sqlite3.connect(tmp_path / "B" / "app.db")
        con.execute("INSERT INTO t VALUES (?)", (v,))
        con.commit()
        con.close()

    by_hand("h1")
    add_rows_on(litevisor_bin, b, 1, "b1")
    (g2,) = set(os.listdir(rep / "generations")) - {g1}
    by_hand("h2")
    p = subprocess.Popen([litevisor_bin, "run", "-config", str(b), "--", SERVICE[0], "-c",
                          WRITE_UNTIL_TERM, "b2"], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        poll(lambda: [g for g in set(os.listdir(rep / "generations")) - {g1, g2}
                      if list((rep / "generations" / g).glob("wal/*"))], timeout=20)
        time.sleep(0.5)
    finally:
        kill_group(p)
    (g3,) = set(os.listdir(rep / "generations")) - {g1, g2}
    second = (int(time.time()) - 5) * 10**9
    for gen, start in ((g1, 3), (g2, 2), (g3, 1)):  # each started later, all end at once
        for f in (rep / "generations" / gen).rglob("*"):
            if f.is_file():
                t = second - start * 10**9 if f.parent.name == "snapshots" else second
                os.utime(f, ns=(t, t))
    rows = query(tmp_path / "B" / "app.db", "SELECT v FROM t ORDER BY rowid")
    err = add_rows_on(litevisor_bin, b, 1, "b3")
    assert "older than the replica" not in err, err
    assert "local database is current" in err, err
    assert query(tmp_path / "B" / "app.db", "SELECT v FROM t ORDER BY rowid") == \
        rows + [("b3-0",)]
    assert [(v,) for v in restored_rows(litestream_bin, rep, tmp_path / "ls.db")] == \
        rows + [("b3-0",)]


def test_a_fresh_node_is_not_refused_for_a_fork_two_servers_order_each_their_own_way(
        litevisor_bin, tmp_path):
    """Two killed forks (two_killed_forks), stamped as QA103's fuzz found them: on "s3" G1
    ends a whole second before G2, on "file" 0.1 s after it. Each server's clock can
    tell, and they disagree: whichever fork a fresh node restored, replication on the
    other server found the other fork written after the restored one and refused the
    database, at every start (QA103 D1). The restore records the fork it ranked below,
    where it ended then: older, unless a replica holds it past that."""
    s3, f, hw0, g1 = two_killed_forks(litevisor_bin, tmp_path)
    (g2,) = set(os.listdir(s3 / "generations")) - {g1}
    second = (int(time.time()) - 5) * 10**9
    stamp_generation(s3, g1, second - 3 * 10**9, second - 10**9)
    stamp_generation(s3, g2, second - 2 * 10**9, second)
    stamp_generation(f, g1, second - 29 * 10**8, second + 4 * 10**8)
    stamp_generation(f, g2, second - 19 * 10**8, second + 3 * 10**8)
    c = hw_node(tmp_path, "C", [s3, f], hw0)
    err = add_rows_on(litevisor_bin, c, 1, "c1")
    assert "older than the replica" not in err, err
    assert "recorded a generation ranked below the restored one" in err, err
    err = add_rows_on(litevisor_bin, c, 1, "c2")
    assert "older than the replica" not in err, err
    rows = [restored_rows(litevisor_bin, rep, tmp_path / f"{rep.name}.db") for rep in (s3, f)]
    assert rows[0] == rows[1] and rows[0][-2:] == ["c1-0", "c2-0"], (rows, err)


def test_a_restore_takes_the_longer_copy_of_a_last_segment_another_replica_ranks_older(
        litevisor_bin, tmp_path):
    """Two killed forks (two_killed_forks), and "file", whose clock ranks G1 newest, holds
    one frame less of G1's last segment than "s3", which ranks G2 newest: its node was
    killed before shipping it there. A fresh node restored G1 from "file" only (a segment
    starting where "file"'s last one starts said nothing of its length), less than "s3"
    held, and replication, finding G1 gone on past the restored file on "s3", refused
    it (seen as a flaky failure of the test above under load). A last segment of another
    size is weighed too: every copy of G1 is measured, and the longer one restored."""
    s3, f, hw0, g1 = two_killed_forks(litevisor_bin, tmp_path, shorten=True)
    err = add_rows_on(litevisor_bin, hw_node(tmp_path, "C", [s3, f], hw0), 1, "c1")
    assert "older than the replica" not in err, err
    assert "weighing every copy of it" in err, err
    c = tmp_path / "C" / "app.db"
    rows = [v for (v,) in query(c, "SELECT v FROM t ORDER BY rowid")]
    a = [v for v in rows if v.startswith("A-")]
    assert rows == a + ["c1-0"] and a == [f"A-{i}" for i in range(len(a))], rows
    # every row of G1 on "s3", to its end
    out = tmp_path / "g1.db"
    p = subprocess.run([litevisor_bin, "restore", "-generation", g1, "-o", str(out),
                        f"file://{s3}"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert a == [v for (v,) in query(out, "SELECT v FROM t ORDER BY rowid")], err


def test_the_generation_a_node_left_supersedes_its_fork_though_no_replica_ranks_it_newest(
        litevisor_bin, tmp_path):
    """The two-outage split above, and then A's app wrote while A was down: A went on in
    a generation of its own, G3, on r1, whose clock runs 60 s behind r2's. r1 holds G1
    gone on past where B's file left it and G3; r2 holds G1 up to there and B's fork G2.
    No replica's newest is G1, so the restore never set it against G2 by B's "previous"
    record, ranked r1's G3 below r2's G2 by the clocks and kept B's file; replication
    refused it on r1 at every start (QA100 D2, high). B's own state supersedes its
    file's generation, and the newest of the others, A's G3, is restored."""
    r1, r2, a, b = split_by_two_outages(litevisor_bin, tmp_path)
    con = sqlite3.connect(tmp_path / "A" / "app.db", isolation_level=None)
    con.execute("INSERT INTO t VALUES ('a-offline')")  # while litevisor is down
    con.close()
    add_rows_on(litevisor_bin, a, 1, "a3")
    bring_back(r2, tmp_path)
    assert len(os.listdir(r1 / "generations")) == 2
    for obj in r1.rglob("*"):
        if obj.is_file():
            t = obj.stat().st_mtime_ns - 60 * 10**9
            os.utime(obj, ns=(t, t))
    err = add_rows_on(litevisor_bin, b, 1, "b2")
    assert "older than the replica" not in err, err
    assert "superseded" in err, err
    rows = restored_rows(litevisor_bin, r1, tmp_path / "r1.db")
    assert rows == ["a1-0", "a1-1", "a2-0", "a2-1", "a-offline", "a3-0", "b2-0"], (rows, err)


def test_a_generation_left_open_at_a_restore_and_written_on_after_the_nodes_stop_wins(
        litevisor_bin, tmp_path):
    """The other side of the record above: A still ran (handover-wait 0s). B restored
    A's open generation G1, wrote G2 of its own and stopped; A wrote on in G1 after
    B's stop. At B's next start G1 is the newest data: B's file goes aside and G1 is
    restored, its rows after B's stop with it, and replication goes on (no refusal)."""
    rep = tmp_path / "rep"
    hw0 = "restore:\n  handover-wait: 0s\n"
    b_cfg = hw_node(tmp_path, "B", [rep], hw0)
    a = subprocess.Popen([litevisor_bin, "run", "-config", str(hw_node(tmp_path, "A", [rep], hw0)),
                          "--", SERVICE[0], "-c", WRITE_UNTIL_TERM, "A"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        poll(lambda: list(rep.glob("generations/*/wal/*")), timeout=20)
        err = add_rows_on(litevisor_bin, b_cfg, 2, "b1")
        assert "will not continue the restored generation" in err, err
        time.sleep(1.5)  # A writes on in G1, seconds after B's closed mark
    finally:
        a.terminate()
        _, ea = a.communicate(timeout=30)
    assert a.returncode == 0, ea
    last_a = query(tmp_path / "A" / "app.db", "SELECT v FROM t ORDER BY rowid DESC LIMIT 1")
    err = add_rows_on(litevisor_bin, b_cfg, 1, "b2")
    assert "older than the replica" not in err, err
    rows = query(tmp_path / "B" / "app.db", "SELECT v FROM t ORDER BY rowid")
    assert rows[-2:] == [last_a[0], ("b2-0",)], (rows[-3:], err)
    assert ("b1-0",) not in rows
    assert list((tmp_path / "B").glob("app.db.replaced-*")), os.listdir(tmp_path / "B")


def test_a_node_killed_in_its_own_generation_is_not_refused_for_one_written_before_its_end(
        litevisor_bin, tmp_path):
    """A killed; B took over with handover-wait 0s (G1 -> G2, its restore recording G1 as
    an open past) and kept writing; A came back beside B, restored G2 and wrote G3; B
    wrote on, well after G3, and was killed. At B's next start its file is the newest
    data, but replication measured "newer" against G1, the generation it left, not G2,
    the one it wrote last: G3 read as another node going on, and B refused its own file
    while its restore step called it current (QA94 D1)."""
    rep = tmp_path / "rep"
    hw0 = "restore:\n  handover-wait: 0s\n"
    a, b_cfg = hw_node(tmp_path, "A", [rep], hw0), hw_node(tmp_path, "B", [rep], hw0)

    def gens():
        return set(os.listdir(rep / "generations"))

    add_rows_on(litevisor_bin, a, 2, "a1")
    (g1,) = gens()
    shutil.rmtree(rep / "generations" / g1 / "closed")  # A died before its final flush
    b = subprocess.Popen([litevisor_bin, "run", "-config", str(b_cfg), "--", SERVICE[0],
                          "-c", WRITE_UNTIL_TERM, "b"], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        poll(lambda: [g for g in gens() - {g1}
                      if list((rep / "generations" / g).glob("wal/*"))], timeout=20)
        (g2,) = gens() - {g1}
        err = add_rows_on(litevisor_bin, a, 2, "a2")
        assert "will not continue the restored generation" in err, err
        assert len(gens() - {g1, g2}) == 1  # A's G3
        time.sleep(2.5)  # B writes on in G2, seconds after G3's last object
    finally:
        os.killpg(b.pid, signal.SIGKILL)  # B killed: no closed record
        b.wait()
    err = add_rows_on(litevisor_bin, b_cfg, 1, "b2")
    assert "older than the replica" not in err, err
    assert "local database is current" in err, err
    rows = query(tmp_path / "B" / "app.db", "SELECT v FROM t ORDER BY rowid")
    assert rows[-1] == ("b2-0",) and ("a1-0",) in rows, rows[-3:]
    assert restored_rows(litevisor_bin, rep, tmp_path / "lv.db")[-1] == "b2-0"


def test_a_killed_node_whose_left_generation_shares_a_second_with_its_own_is_not_refused(
        litevisor_bin, tmp_path):
    """B was killed in P; A took P over with handover-wait 0s (P left open), wrote G and
    was killed. On a server keeping whole seconds P's and G's last objects shared one;
    measured against G (QA94 D1's fix), P, which ends where A's file stood, read as
    written after it: A refused its newest file, and the next start served P without
    A's rows (QA96 D1, critical). P ending there is A's past, whatever its times."""
    rep = tmp_path / "rep"
    hw0 = "restore:\n  handover-wait: 0s\n"
    a, b = hw_node(tmp_path, "A", [rep], hw0), hw_node(tmp_path, "B", [rep], hw0)

    def gens():
        return set(os.listdir(rep / "generations"))

    def objects(g):
        return [f for f in (rep / "generations" / g).rglob("*") if f.is_file()]

    add_rows_on(litevisor_bin, b, 3, "b")
    (p,) = gens()
    shutil.rmtree(rep / "generations" / p / "closed")  # B died before its final flush
    proc = subprocess.Popen([litevisor_bin, "run", "-config", str(a), "--", SERVICE[0], "-c",
                             WRITE_UNTIL_TERM, "a"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        poll(lambda: [g for g in gens() - {p} if list((rep / "generations" / g).glob("wal/*"))],
             timeout=20)
        time.sleep(1)  # A ships rows of its own
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # A killed: no closed record
        proc.wait()
    (g,) = gens() - {p}
    second = int(max(f.stat().st_mtime for f in objects(g)))
    for f in objects(p) + objects(g):
        os.utime(f, (second, second))
    err = add_rows_on(litevisor_bin, a, 1, "a2")
    assert "older than the replica" not in err and "another node went on" not in err, err
    assert "local database is current" in err, err
    rows = query(tmp_path / "A" / "app.db", "SELECT v FROM t ORDER BY rowid")
    assert rows[-1] == ("a2-0",) and ("a-0",) in rows and ("b-0",) in rows, rows[-3:]


def test_a_killed_generation_ending_in_the_second_its_successor_closed_is_the_older(
        litevisor_bin, tmp_path):
    """A was killed in G1 (open); B, with handover-wait 0s, restored it, wrote G2 and
    stopped cleanly, all in the second G1 ended. On whole-second times the tie went to
    "a closed generation is the older": every restore served G1 without B's rows, which
    B's run had reported replicated (QA95 D2, critical). A successor starts after the
    generation it came from: the later start decides first now."""
    rep = tmp_path / "rep"
    hw0 = "restore:\n  handover-wait: 0s\n"
    a, b = hw_node(tmp_path, "A", [rep], hw0), hw_node(tmp_path, "B", [rep], hw0)
    proc = subprocess.Popen([litevisor_bin, "run", "-config", str(a), "--", SERVICE[0], "-c",
                             WRITE_UNTIL_TERM, "a"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        poll(lambda: list(rep.glob("generations/*/wal/*")), timeout=20)
        time.sleep(0.5)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # A killed: G1 stays open
        proc.wait()
    (g1,) = os.listdir(rep / "generations")
    err = add_rows_on(litevisor_bin, b, 5, "b")
    assert "will not continue the restored generation" in err, err
    (g2,) = set(os.listdir(rep / "generations")) - {g1}
    second = int(time.time()) - 30  # G1's end and all of G2 in one whole second
    for g in (g1, g2):
        for f in (rep / "generations" / g).rglob("*"):
            if f.is_file():
                t = second - 3 if g == g1 and f.parent.name == "snapshots" else second
                os.utime(f, (t, t))
    rows = restored_rows(litevisor_bin, rep, tmp_path / "lv.db")
    assert rows[-5:] == [f"b-{i}" for i in range(5)], rows[-7:]


def test_a_node_back_behind_the_other_nodes_mark_and_snapshotting_onto_it_is_refused_there(
        litevisor_bin, litestream_bin, tmp_path):
    """A closes its generation at index 1 (after its app's own TRUNCATE checkpoint); B
    restores it and idles into index 2, closed at 2/0; A comes back, goes on in index 1
    behind B's mark, and its snapshot interval ends the generation at 2/0, the very
    position of B's mark. B, back, took that mark for its own and wrote its WAL over
    A's snapshot: A's rows were gone from every restore (QA86 D5). The replica holds
    more of index 1 than B's file had when B went on to index 2: B refuses."""
    rep = tmp_path / "rep"
    db = tmp_path / "A" / "app.db"
    db.parent.mkdir()
    app_rows(db, 1, "a0")

    def truncate_then_write(path):
        c = sqlite3.connect(path, isolation_level=None, timeout=30)
        c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        c.close()
        app_rows(path, 2, "a1b")

    assert sidecar(litevisor_bin, tmp_path, rep, "A", 3, "a1", then=truncate_then_write)[0] == 0
    assert sidecar(litevisor_bin, tmp_path, rep, "B")[0] == 0
    code, log = sidecar(litevisor_bin, tmp_path, rep, "A", 5, "a2",
                        extra="        snapshot-interval: 1s\n",
                        until="snapshots/00000002.snapshot")
    assert code == 0, log
    b_refused_a_kept(litevisor_bin, litestream_bin, tmp_path, rep, db,
                     "another node wrote into it since")


def test_a_hand_restore_of_a_generation_not_closed_keeps_the_database_id_under_run(
        litevisor_bin, tmp_path):
    """A's sidecar is killed (its generation not closed); B restores it by hand
    (`litevisor restore`: the database id, no marker), then runs. B's restore step moved
    that state aside (it describes no position), the id with it: replication drew a new
    id, and A's `run` then refused its own database as another's, exit 111, at every
    start (QA86 D3). A state of nothing but an id is kept."""
    rep = tmp_path / "rep"
    a_db, b_db = tmp_path / "A" / "app.db", tmp_path / "B" / "app.db"
    a_db.parent.mkdir()
    b_db.parent.mkdir()
    app_rows(a_db, 1, "a0")
    cfg = tmp_path / "A-kill.yml"
    cfg.write_text(f"dbs:\n  - path: {a_db}\n    replicas:\n      - url: file://{rep}\n"
                   "        sync-interval: 100ms\n")
    r = subprocess.Popen([litevisor_bin, "replicate", "-config", str(cfg)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        poll(lambda: list(rep.glob("generations/*/snapshots/*.lz4")), timeout=30)
        app_rows(a_db, 3, "a1")
        poll(lambda: list(rep.glob("generations/*/wal/*.lz4")), timeout=30)
        time.sleep(0.5)  # shipped, not closed
    finally:
        r.kill()
        r.wait()
    b_cfg = tmp_path / "B.yml"
    b_cfg.write_text(f"restore:\n  handover-wait: 1s\ndbs:\n  - path: {b_db}\n    replicas:\n"
                     f"      - url: file://{rep}\n        sync-interval: 100ms\n")
    p = subprocess.run([litevisor_bin, "restore", "-config", str(b_cfg), str(b_db)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    a_id = (tmp_path / "A" / ".app.db-litevisor" / "database-id").read_text()
    p = subprocess.run([litevisor_bin, "run", "-config", str(b_cfg), "--", SERVICE[0], "-c",
                        ADD_ROWS, "2", "b1"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "B" / ".app.db-litevisor" / "database-id").read_text() == a_id
    a_cfg = tmp_path / "A-run.yml"
    a_cfg.write_text(b_cfg.read_text().replace(str(b_db), str(a_db)))
    p = subprocess.run([litevisor_bin, "run", "-config", str(a_cfg), "--", "true"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and "not this database" not in p.stderr, p.stderr
    rows = [v for (v,) in query(a_db, "SELECT v FROM t ORDER BY rowid")]
    assert rows == ["a0-0", "a1-0", "a1-1", "a1-2", "b1-0", "b1-1"], rows


@pytest.mark.parametrize("b_wrote_while_down", [False, True])
def test_sidecars_idle_handover_back_and_forth_never_hide_the_first_nodes_rows(
        litevisor_bin, litestream_bin, tmp_path, b_wrote_while_down):
    """Sidecars, clean stops only. A writes; B restores, writes nothing (it enters
    index 1); A comes back and goes on in its own index 0, deleting B's mark; B comes
    back with its file from before A's rows. The replica's end, in index 0, lay behind
    B's index 1, so B snapshotted its older file there, and A's rows were gone from
    every restore (QA81 D4). B's index record says where its index 0 ended: the
    replica's bytes past that are another node's, and B refuses its file as older.
    When B's app wrote while B's `replicate` was down, B started a new generation from
    its older file, with no warning (QA84 N1): where B's file stood in the generation
    it left (its "previous" record: the end of index 0, not the start of index 1)
    shows the same, and B refuses."""
    rep = tmp_path / "rep"
    (tmp_path / "A").mkdir()
    app_rows(tmp_path / "A" / "app.db", 1, "a0")
    assert sidecar(litevisor_bin, tmp_path, rep, "A", 5, "a1")[0] == 0
    assert sidecar(litevisor_bin, tmp_path, rep, "B")[0] == 0
    assert sidecar(litevisor_bin, tmp_path, rep, "A", 10, "a2")[0] == 0
    a = [v for (v,) in query(tmp_path / "A" / "app.db", "SELECT v FROM t ORDER BY rowid")]
    assert a == ["a0-0"] + [f"a1-{i}" for i in range(5)] + [f"a2-{i}" for i in range(10)]
    if b_wrote_while_down:
        app_rows(tmp_path / "B" / "app.db", 1, "b-while-down")
    code, text = sidecar(litevisor_bin, tmp_path, rep, "B")
    assert code == 1 and "older than the replica" in text, text
    if b_wrote_while_down:
        assert "where its file stood at 00000000/" in text, text
    assert restored_rows(litevisor_bin, rep, tmp_path / "lv.db") == a
    assert restored_rows(litestream_bin, rep, tmp_path / "ls.db") == a
    # and at the next start, whatever the refused run did to the state (a new local
    # generation, written nowhere, hid the refusal's cause: QA86 D2)
    app_rows(tmp_path / "B" / "app.db", 1, "b-again")
    code, text = sidecar(litevisor_bin, tmp_path, rep, "B")
    assert code == 1 and "refused at an earlier start and not restored since" in text, text
    assert restored_rows(litevisor_bin, rep, tmp_path / "lv2.db") == a
    # `run`'s restore step restores it, the file kept aside
    p = subprocess.run([litevisor_bin, "run", "-config", str(tmp_path / "B.yml"), "--", "true"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and "refused this database as older" in p.stderr, p.stderr
    assert [v for (v,) in query(tmp_path / "B" / "app.db", "SELECT v FROM t ORDER BY rowid")] == a
    assert "ERROR replica: this database is older" not in p.stderr, p.stderr


@pytest.mark.parametrize("retention", [False, True])
def test_a_sidecar_sees_rows_written_into_its_last_index_before_the_next_snapshot(
        litevisor_bin, tmp_path, retention):
    """A's generation ends on its snapshot (closed at 0/0). B restores it, goes on in
    that same index 0 (a snapshot's own index), commits rows and snapshots at index 1.
    A's app writes while A's replicate is down, and A's sidecar started a new
    generation from its older file: "next index, offset 0" read as nothing past A's
    mark, though B wrote into index 0 (QA81 D2). It is refused as older. Also when B's
    retention deleted index 0's segments: with A's mark gone too, nothing proves B
    wrote nothing there (QA82 D5)."""
    rep = tmp_path / "rep"
    (tmp_path / "A").mkdir()
    app_rows(tmp_path / "A" / "app.db", 3, "a0")
    assert sidecar(litevisor_bin, tmp_path, rep, "A")[0] == 0
    keep = ("        retention: 1s\n        retention-check-interval: 1s\n"
            "        retention-grace: 0s\n") if retention else ""
    assert sidecar(litevisor_bin, tmp_path, rep, "B", 5, "b1",
                   extra="        snapshot-interval: 2s\n" + keep,
                   until="objects deleted" if retention
                   else "snapshots/00000001.snapshot.lz4")[0] == 0
    app_rows(tmp_path / "A" / "app.db", 2, "a2")
    code, text = sidecar(litevisor_bin, tmp_path, rep, "A")
    assert code == 1 and "older than the replica" in text, text
    assert restored_rows(litevisor_bin, rep, tmp_path / "out.db") == \
        [f"a0-{i}" for i in range(3)] + [f"b1-{i}" for i in range(5)]


def test_a_killed_sidecar_back_does_not_hide_the_other_nodes_generation(litevisor_bin,
                                                                        tmp_path):
    """A's replicate is killed (no clean stop, no closed record); B restores A's
    generation, which is not closed, so B goes on in one of its own, commits and stops.
    A came back and went on from its older file, which hid B's rows from every restore
    (QA81 D1). A generation written after the one A wrote last, not by Litestream from
    this file, is another node's: A's file is refused as older."""
    rep = tmp_path / "rep"
    a = tmp_path / "A" / "app.db"
    a.parent.mkdir()
    app_rows(a, 1, "a0")
    cfg = tmp_path / "A.yml"
    cfg.write_text(f"dbs:\n  - path: {a}\n    replicas:\n      - url: file://{rep}\n"
                   "        sync-interval: 100ms\n")
    log = tmp_path / "A-killed.log"
    with open(log, "w") as out:
        r = subprocess.Popen([litevisor_bin, "replicate", "-config", str(cfg)], stdout=out,
                             stderr=subprocess.STDOUT)
    want = ["a0-0"] + [f"a1-{i}" for i in range(20)]

    def shipped():
        out = tmp_path / "shipped.db"
        out.unlink(missing_ok=True)
        return restored_rows(litevisor_bin, rep, out) == want
    try:
        poll(lambda: "snapshot written" in log.read_text(), timeout=30, log=log)
        app_rows(a, 20, "a1")
        poll(shipped, timeout=30)
    finally:
        r.kill()
        r.wait(timeout=30)
    code, text = sidecar(litevisor_bin, tmp_path, rep, "B", 10, "b")
    assert code == 0 and "new generation" in text, text
    code, text = sidecar(litevisor_bin, tmp_path, rep, "A", 5, "a2")
    assert code == 1 and "older than the replica" in text, text
    assert restored_rows(litevisor_bin, rep, tmp_path / "out.db") == \
        want + [f"b-{i}" for i in range(10)]


def test_a_database_written_while_down_is_not_continued_at_the_other_nodes_snapshot(
        litevisor_bin, litestream_bin, tmp_path):
    """As above, but A's file was written while litevisor was down (an operator's
    sqlite3): it is not the data at A's position any more. Continued at B's snapshot
    (checkpointed, with the restored marker), replication built on a file B's snapshot
    does not hold, and every later restore of the replica failed its check (QA74 #1).
    The snapshot is restored instead; A's file is kept aside."""
    rep = tmp_path / "rep"
    a1 = a_then_b_snapshots_only(litevisor_bin, tmp_path, rep)
    c = sqlite3.connect(tmp_path / "A" / "app.db", isolation_level=None)
    c.execute("INSERT INTO t VALUES ('by hand')")
    c.execute("CREATE TABLE big(x)")
    c.execute("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 50) "
              "INSERT INTO big SELECT randomblob(3000) FROM n")
    c.close()
    a, files, err = node_run(litevisor_bin, tmp_path, "A", rep, 10, "a2")
    assert a == a1 + [f"a2-{i}" for i in range(10)], err
    assert "not as this node's clean stop left it" in err and "outcome=restored" in err, err
    aside = [f for f in files if f.startswith("app.db.replaced-") and "-wal" not in f
             and "-shm" not in f]
    assert len(aside) == 1, files
    assert "by hand" in [v for (v,) in query(tmp_path / "A" / aside[0], "SELECT v FROM t")]
    out = tmp_path / "check.db"
    p = subprocess.run([litestream_bin, "restore", "-o", str(out), f"file://{rep}"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert query(out, "PRAGMA integrity_check") == [("ok",)]
    assert [v for (v,) in query(out, "SELECT v FROM t")] == a


def test_a_copy_put_in_place_while_stopped_is_replicated_not_refused(litevisor_bin, tmp_path):
    """A's file replaced while the job was stopped (an operator copied B's database over
    it): the restore step set A's state aside as another file's and kept the file, but
    the state stayed in place, and replication read its closed record as this file's:
    "another node continued it since", nothing replicated, the run's commits lost (QA75
    D6). The state is moved aside: replication starts a new generation from the file."""
    rep = tmp_path / "rep"
    node_run(litevisor_bin, tmp_path, "A", rep, 30, "a1")
    b, _, _ = node_run(litevisor_bin, tmp_path, "B", rep, 5, "b1")
    time.sleep(1)
    a = tmp_path / "A" / "app.db"
    for f in (a.with_name("app.db-wal"), a.with_name("app.db-shm")):
        if f.exists():
            f.unlink()
    src = sqlite3.connect(tmp_path / "B" / "app.db")
    dst = sqlite3.connect(tmp_path / "A" / "copy.db")
    src.backup(dst)
    src.close()
    dst.close()
    os.rename(tmp_path / "A" / "copy.db", a)
    got, _, err = node_run(litevisor_bin, tmp_path, "A", rep, 3, "a2")
    assert got == b + ["a2-0", "a2-1", "a2-2"], err
    assert "older than the replica" not in err and "final flush done" in err, err
    out = tmp_path / "next.db"
    p = subprocess.run([litevisor_bin, "restore", "-o", str(out), f"file://{rep}"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert [v for (v,) in query(out, "SELECT v FROM t")] == got


def test_litestreams_own_tables_do_not_make_another_database(litevisor_bin, litestream_bin,
                                                              tmp_path):
    """The same-database check before replacing a local database counted Litestream's
    tables (_litestream_seq, _litestream_lock: it adds them to every database it
    replicates): a one-table app's database that went through Litestream on the other
    node shared "1 of its 3 tables", was "not this database", and run exited 111 (QA75
    D5)."""
    rep = tmp_path / "rep"
    b, _, _ = node_run(litevisor_bin, tmp_path, "B", rep, 3, "b")
    a = tmp_path / "A" / "app.db"
    a.parent.mkdir()
    p = subprocess.run([litevisor_bin, "restore", "-o", str(a), f"file://{rep}"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    ls_cfg = tmp_path / "ls.yml"
    ls_cfg.write_text(f"dbs:\n  - path: {a}\n    replicas:\n      - url: file://{rep}\n"
                      "        sync-interval: 100ms\n")
    ls = subprocess.Popen([litestream_bin, "replicate", "-config", str(ls_cfg)],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1.5)
        c = sqlite3.connect(a, isolation_level=None)
        for i in range(5):
            c.execute("INSERT INTO t VALUES (?)", (f"ls-{i}",))
        c.close()
        time.sleep(1.5)
    finally:
        ls.send_signal(signal.SIGTERM)
        ls.communicate(timeout=30)
    got, _, err = node_run(litevisor_bin, tmp_path, "B", rep)
    assert got == b + [f"ls-{i}" for i in range(5)], err


def test_stale_source_restored_while_a_fresher_replica_was_out_of_reach_is_a_new_generation(
        litevisor_bin, tmp_path):
    """Node A shipped its generation to minio (fast) and the NAS (1 min), then died.
    Node B starts while minio cannot be read, so the NAS's stale copy is restored
    (freshest reachable). B must not continue A's generation: minio, back by the
    time B writes, holds more of it, and B's objects under the same names would
    mix two histories whose end (A's) lies ahead: every later restore returned
    A's rows and lost all of B's commits."""
    rep_cfg = ("    replicas:\n"
               f"      - {{ name: nas, url: file://{tmp_path}/nas, sync-interval: 1m }}\n"
               f"      - {{ name: minio, url: file://{tmp_path}/minio, sync-interval: 100ms }}\n")
    a = tmp_path / "A" / "app.db"
    a.parent.mkdir()
    (tmp_path / "A.yml").write_text(f"dbs:\n  - path: {a}\n" + rep_cfg)
    db = sqlite3.connect(a, isolation_level=None)
    db.execute("PRAGMA journal_mode=wal")
    db.execute("CREATE TABLE t(v TEXT)")
    db.close()
    lv = subprocess.Popen([litevisor_bin, "replicate", "-config", str(tmp_path / "A.yml")],
                          stderr=subprocess.PIPE, text=True)
    try:
        # the NAS's snapshot is complete (its sync ships what follows it, if anything)
        poll(lambda: list((tmp_path / "nas").glob("generations/*/snapshots/*.snapshot.lz4")),
             timeout=20)
        db = sqlite3.connect(a, isolation_level=None)
        for i in range(3):
            db.execute("INSERT INTO t VALUES (?)", (f"a{i}",))
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        db.close()

        def minio_rows():
            out = tmp_path / "minio.db"
            out.unlink(missing_ok=True)
            p = subprocess.run([litevisor_bin, "restore", "-o", str(out),
                                f"file://{tmp_path}/minio"], capture_output=True, timeout=60)
            return p.returncode == 0 and [v for (v,) in sqlite3.connect(out).execute(
                "SELECT v FROM t ORDER BY rowid")] == ["a0", "a1", "a2"]
        # the commits may share one WAL index (a checkpoint the engine's hold kept
        # from finishing): wait for the rows, not for a number of objects
        poll(minio_rows, timeout=20)
    finally:
        lv.kill()
        lv.wait()
    # What the NAS holds: its snapshot, and perhaps the WAL its sync right after
    # the snapshot found (a0 when the monitor copied it first). Stale either way.
    nas_rows = restored_rows(litevisor_bin, tmp_path / "nas", tmp_path / "nas.db")
    assert len(nas_rows) < 3, nas_rows
    # minio cannot be read when B starts (its path is briefly something else)
    (tmp_path / "minio").rename(tmp_path / "minio.away")
    (tmp_path / "minio").write_text("")
    b = tmp_path / "B" / "app.db"
    b.parent.mkdir()
    # A was killed: its generation is never closed (a short wait for it)
    (tmp_path / "B.yml").write_text(f"restore:\n  handover-wait: 1s\ndbs:\n  - path: {b}\n" + rep_cfg)
    back = (f"import os, sqlite3\n"
            f"os.remove('{tmp_path}/minio'); os.rename('{tmp_path}/minio.away', '{tmp_path}/minio')\n"
            f"c = sqlite3.connect(os.environ['LITESTREAM_DB_PATH'], isolation_level=None)\n"
            f"for i in range(3):\n"
            f"    c.execute(\"INSERT INTO t VALUES ('b%d')\" % i)\n")
    p = subprocess.run([litevisor_bin, "run", "-config", str(tmp_path / "B.yml"), "--",
                        SERVICE[0], "-c", back], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    out = tmp_path / "next.db"
    r = subprocess.run([litevisor_bin, "restore", "-config", str(tmp_path / "B.yml"), "-o",
                        str(out), str(b)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    got = [v for (v,) in sqlite3.connect(out).execute("SELECT v FROM t ORDER BY rowid")]
    assert got == nas_rows + ["b0", "b1", "b2"], r.stderr
    assert "replication will not continue the restored generation" in p.stderr, p.stderr
    assert "minio did not answer" in p.stderr, p.stderr


def test_database_changed_after_an_idle_run_starts_a_new_generation(litevisor_bin, tmp_path):
    """The record of an index with no shadow file proves nothing by itself: when
    the files changed after the clean stop (the app ran without litevisor and
    checkpointed), the next run starts a new generation, so the change reaches
    the replica instead of being hidden behind the old position."""
    rep = tmp_path / "rep"
    node_run(litevisor_bin, tmp_path, "A", rep, 1, "a0")
    node_run(litevisor_bin, tmp_path, "A", rep, 30, "a1")
    node_run(litevisor_bin, tmp_path, "B", rep)
    db = sqlite3.connect(tmp_path / "B" / "app.db", isolation_level=None)
    db.execute("INSERT INTO t VALUES ('offline')")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    b, _, eb = node_run(litevisor_bin, tmp_path, "B", rep)
    assert "files changed since the last stop" in eb, eb
    assert "offline" in b
    assert restored_rows(litevisor_bin, rep, tmp_path / "lv.db") == b


def test_node_migrating_from_litestream_is_compared_with_litestreams_state(
        litevisor_bin, litestream_bin, tmp_path):
    """A node that ran Litestream comes back stale, with only Litestream's state beside
    its database, while another node wrote more to the replica: litevisor reads
    Litestream's position and restores the newer data instead of keeping the file."""
    rep = tmp_path / "rep"
    x = tmp_path / "X" / "app.db"
    x.parent.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "LITESTREAM_DB_PATH"}
    subprocess.run([SERVICE[0], "-c", ADD_ROWS, "30", "x"], check=True, timeout=30,
                   env={**env, "LITESTREAM_DB_PATH": str(x)})
    cfg = tmp_path / "litestream.yml"
    cfg.write_text(f"dbs:\n  - path: {x}\n    replicas:\n      - url: file://{rep}\n"
                   "        sync-interval: 100ms\n")
    ls = subprocess.Popen([litestream_bin, "replicate", "-config", str(cfg)],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        poll(lambda: list((rep / "generations").glob("*/wal/*")) if (rep / "generations").exists()
             else [], timeout=30)
        time.sleep(1)
    finally:
        ls.send_signal(signal.SIGTERM)
        ls.wait(timeout=30)
    assert (x.parent / ".app.db-litestream").is_dir()
    # another node (litevisor) restores that and writes more
    y, _, _ = node_run(litevisor_bin, tmp_path, "Y", rep, 20, "y")
    assert len(y) == 50
    cfgx = tmp_path / "X.yml"
    cfgx.write_text(f"dbs:\n  - path: {x}\n    replicas:\n      - url: file://{rep}\n")
    p = subprocess.run([litevisor_bin, "run", "-config", str(cfgx), "--", "true"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert "Litestream's state" in p.stderr, p.stderr
    got = [v for (v,) in sqlite3.connect(x).execute("SELECT v FROM t").fetchall()]
    assert got == y, p.stderr
    # Litestream's old state stays beside the database: the state that restore just
    # wrote (no shadow WAL yet, the service idle) counted as written at time 0, so the
    # old one won at every later start, and the current database was moved aside and
    # restored again each time (QA43 #3)
    for _ in range(2):
        p = subprocess.run([litevisor_bin, "run", "-config", str(cfgx), "--", "true"],
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stderr
        assert "Litestream's state" not in p.stderr and "moved aside" not in p.stderr, p.stderr
    copies = [n for n in os.listdir(x.parent) if ".replaced-" in n and n.endswith("Z")]
    assert len(copies) == 1, os.listdir(x.parent)  # the first restore's, of the stale file


def test_first_deploy_starts_on_an_empty_database(litevisor_bin, tmp_path, runs):
    (tmp_path / "data").mkdir()
    report = tmp_path / "report.json"
    r = start(runs, litevisor_bin, tmp_path,
              DB_SERVICE + ["--report", str(report), "--exit-after-report"],
              config=db_config(tmp_path))
    assert r.wait(timeout=30) == 0, r.stderr()
    assert json.load(open(report))["exists"] is False


def test_the_service_starts_after_replication_looked_at_the_database(litevisor_bin, tmp_path):
    """An app that writes as it starts must find the engine already holding its
    database: had it written first, the engine would take the change for one
    made while nobody watched, and every restart would begin a new generation
    with a full snapshot. The engine's first look is logged before the service
    starts, on a first run (new generation) and on a restart (resumed)."""
    db, rep = tmp_path / "app.db", tmp_path / "rep"
    sqlite3.connect(db).execute("PRAGMA journal_mode=wal").fetchall()
    cfg = tmp_path / "c.yml"
    cfg.write_text(f"dbs:\n  - path: {db}\n    replicas:\n      - url: file://{rep}\n")
    for want in ("new generation", "resuming generation", "resuming generation"):
        p = subprocess.run([litevisor_bin, "run", "-config", str(cfg), "--", "sqlite3", str(db),
                            "CREATE TABLE IF NOT EXISTS t(v); INSERT INTO t VALUES(1)"],
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stderr
        lines = p.stderr.splitlines()
        looked = [i for i, l in enumerate(lines) if f"engine: {want}" in l]
        started = [i for i, l in enumerate(lines) if "service started" in l]
        assert looked and started and looked[0] < started[0], p.stderr
    assert len(os.listdir(rep / "generations")) == 1


@pytest.mark.parametrize("restore", ["{}", "{ mode: all, wait-timeout: 1s }",
                                     "{ allow-empty-when-unreachable: true }"])
def test_existing_database_with_every_replica_unreachable(litevisor_bin, tmp_path, runs,
                                                          restore):
    """A database that exists is no more known to be current than a missing one
    is known to be new: with no replica answering (one of them may hold newer
    data written on another node), run does not start on it (111) unless
    allow-empty-when-unreachable says so (config.md)."""
    (tmp_path / "data").mkdir()
    db = tmp_path / "data" / "app.db"
    sqlite3.connect(db).execute("CREATE TABLE t(v)").connection.commit()
    marker = tmp_path / "started"
    dead = free_port()
    cfg = (f"restore: {restore}\nsupervisor: {{ flush-timeout: 1s }}\n"
           f"dbs:\n  - path: {db}\n"
           f"    replicas:\n      - url: s3://bkt/app\n        endpoint: http://127.0.0.1:{dead}\n"
           f"        access-key-id: x\n        secret-access-key: y\n")
    r = start(runs, litevisor_bin, tmp_path, ["touch", str(marker)], config=cfg)
    code = r.wait(timeout=60)
    if "allow-empty" in restore:
        assert code == 0, r.stderr()
        assert marker.exists() and "keeping the existing database" in r.stderr()
    else:
        assert code == 111, r.stderr()
        assert not marker.exists()
        assert "might hold newer data than the existing database" in r.stderr(), r.stderr()
    assert sqlite3.connect(db).execute("SELECT count(*) FROM t").fetchone() == (0,)


@pytest.mark.parametrize("optional", [False, True])
def test_unreachable_required_database_blocks_start(litevisor_bin, tmp_path, runs, optional):
    (tmp_path / "data").mkdir()
    marker = tmp_path / "started"
    dead = free_port()
    cfg = (f"dbs:\n  - path: {tmp_path}/data/app.db\n    optional: {str(optional).lower()}\n"
           f"    replicas:\n      - url: s3://bkt/app\n        endpoint: http://127.0.0.1:{dead}\n"
           f"        access-key-id: x\n        secret-access-key: y\n"
           f"restore:\n  probe-timeout: 500ms\n")
    r = start(runs, litevisor_bin, tmp_path, ["touch", str(marker)], config=cfg)
    code = r.wait(timeout=60)
    if optional:
        assert code == 0, r.stderr()
        assert marker.exists()
    else:
        assert code == 111, r.stderr()
        assert not marker.exists()
        assert "required database not restored" in r.stderr()


def test_health_and_metrics_show_databases(litevisor_bin, tmp_path, runs):
    (tmp_path / "data").mkdir()
    port = free_port()
    report, ready = tmp_path / "report.json", tmp_path / "ready"
    late = tmp_path / "late"
    r = start(runs, litevisor_bin, tmp_path,
              DB_SERVICE + ["--report", str(report), "--ready", str(ready), "--rows", "2",
                            "--commit-on", str(late)],
              config=db_config(tmp_path, replica_extra="        sync-interval: 100ms\n",
                               top=f"addr: 127.0.0.1:{port}\n"))
    poll(lambda: ready.exists(), timeout=30)
    base = f"http://127.0.0.1:{port}"
    poll(lambda: curl(base + "/readyz")[0] == 200)
    status, ctype, body = curl(base + "/healthz")
    assert status == 200, body
    doc = json.loads(body)

    # a pass stays 200 under ?warn=429 (a moment's warn, a commit not yet shipped on a
    # busy machine, answers 429: that is the query's point, so wait for a pass)
    def passing():
        status, _, body = curl(base + "/healthz?warn=429")
        return status == 200 and '"status":"pass"' in body
    poll(passing, timeout=15)
    # the first rows may all be in the generation's first snapshot (the service can
    # write them before replication first looks): one commit after it goes as WAL
    late.write_text("late")
    poll(lambda: (tmp_path / "late.done").exists(), timeout=15)
    poll(lambda: re.search(r'^litestream_replica_wal_bytes\{[^}]*name="file"[^}]*\} [1-9]',
                           curl(base + "/metrics")[2], re.M), timeout=15)
    assert doc["checks"]["database:replication"][0]["componentId"] == "app"
    assert doc["checks"]["replica:lag"][0]["componentId"].startswith("app/")
    status, ctype, body = curl(base + "/metrics")
    types, series = parse_prometheus(body)
    assert ("litevisor_db_size_bytes", (("db", "app"),)) in series
    assert any(s[0] == "litevisor_replica_lag_seconds" for s in series)
    assert any(s[0] == "litevisor_restore_duration_seconds" for s in series)
    # the first deploy's listings answered "nothing there": an answer, no failed call
    errors = [ln for ln in body.splitlines()
              if ln.startswith("litevisor_storage_operation_errors_total{")]
    assert errors and all(ln.endswith(" 0") for ln in errors), errors
    # Litestream v0.3.13's series, labelled with the database's path as it does (QA27)
    db = str(tmp_path / "data" / "app.db")

    label_re = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
    values = {}
    for ln in body.splitlines():
        m = re.fullmatch(r"(litestream_\w+)\{(.*)\} (\S+)", ln)
        if m:
            values[(m.group(1), tuple(sorted(label_re.findall(m.group(2)))))] = float(m.group(3))

    def ls(family, **labels):
        key = (family, tuple(sorted({"db": db, **labels}.items())))
        assert key in values, (key, sorted(values))
        return values[key]
    assert ls("litestream_db_size") > 0 and ls("litestream_wal_size") >= 0
    assert ls("litestream_sync_count") > 0 and ls("litestream_sync_error_count") == 0
    assert ls("litestream_total_wal_bytes") > 0 and ls("litestream_sync_seconds") > 0
    assert ls("litestream_shadow_wal_index") >= 0
    assert ls("litestream_checkpoint_count", mode="PASSIVE") >= 0
    assert ls("litestream_replica_wal_index", name="file") >= 0
    assert ls("litestream_replica_wal_bytes", name="file") > 0
    assert ls("litestream_replica_validation_total", name="file", status="error") == 0
    assert types["litestream_replica_operation_total"] == "counter"
    assert re.search(r'^litestream_replica_operation_total\{replica_type="file",operation="PUT"\} [1-9]',
                     body, re.M), body
    os.kill(r.pid, signal.SIGTERM)
    assert r.wait(timeout=30) == 0


def test_the_restores_storage_calls_are_counted_in_metrics(litevisor_bin, tmp_path, runs):
    """The restore opens storage of its own: its listings and downloads were never in
    /metrics, and a restore-only replica's counters stayed 0 whatever the restore read
    from it (QA93 D1); docs/supervisor.md says they count as any other's. Litestream's
    operation counter counts them too."""
    db = tmp_path / "data" / "app.db"
    db.parent.mkdir()
    with sqlite3.connect(db) as c:
        c.execute("PRAGMA journal_mode=wal")
        c.execute("CREATE TABLE t(v)")
        c.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(500)])
    c.close()
    first = tmp_path / "first.yml"
    first.write_text(f"dbs:\n  - path: {db}\n    replicas:\n"
                     f"      - {{ url: 'file://{tmp_path}/a', name: a }}\n")
    p = subprocess.run([litevisor_bin, "run", "-config", str(first), "--", "true"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    shutil.rmtree(db.parent)  # a new node's empty disk
    port = free_port()
    r = start(runs, litevisor_bin, tmp_path, ["sleep", "30"],
              config=f"addr: 127.0.0.1:{port}\ndbs:\n  - path: {db}\n    replicas:\n"
                     f"      - {{ url: 'file://{tmp_path}/a', name: a, restore-only: true }}\n"
                     f"      - {{ url: 'file://{tmp_path}/b', name: b }}\n")
    base = f"http://127.0.0.1:{port}"
    poll(lambda: subprocess.run(["curl", "-sf", base + "/readyz"],
                                capture_output=True).returncode == 0, timeout=20)
    body = curl(base + "/metrics")[2]
    assert 'litevisor_restore_info{db="app.db",source="a",result="restored"} 1' in body, body

    def ops(replica, op):
        m = re.search(rf'^litevisor_storage_operations_total\{{db="app.db",replica="{replica}",'
                      rf'operation="{op}"\}} (\S+)$', body, re.M)
        assert m, (replica, op, body)
        return float(m.group(1))
    assert ops("a", "list") >= 1 and ops("a", "get") >= 1, body
    assert ops("a", "put") == 0  # restore-only: never written
    m = re.search(r'^litestream_replica_operation_total\{replica_type="file",operation="GET"\} (\S+)$',
                  body, re.M)
    assert m and float(m.group(1)) >= ops("a", "get"), body
    os.kill(r.pid, signal.SIGTERM)
    assert r.wait(timeout=30) == 143  # sleep's own death by TERM


def silent_server(backlog):
    """A 127.0.0.1 socket that accepts connections and never answers (a blackholed
    server), and the list of connections it accepted; close it at the end of the test."""
    import socket
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(backlog)
    held = []

    def hold_connections():
        try:
            for _ in range(backlog):
                held.append(silent.accept())
        except OSError:
            pass  # the socket was closed at the end of the test

    threading.Thread(target=hold_connections, daemon=True).start()
    return silent, held


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGQUIT])
def test_term_during_a_slow_restore_exits_at_once_without_starting(litevisor_bin, tmp_path, runs,
                                                                    sig):
    """A replica that accepts connections but never answers keeps the restore busy;
    TERM must still end litevisor promptly (the control path never waits on restore).
    So must QUIT, an orchestrator's stop signal, which was dropped ("no service running
    yet") and the service started after the stop was asked for (QA110 O1). A HUP (a
    template re-render's reload) is dropped."""
    silent, held = silent_server(16)
    try:
        (tmp_path / "data").mkdir()
        port = free_port()
        marker = tmp_path / "started"
        cfg = (f"addr: 127.0.0.1:{port}\n"
               f"dbs:\n  - path: {tmp_path}/data/app.db\n"
               f"    replicas:\n      - url: s3://bkt/app\n"
               f"        endpoint: http://127.0.0.1:{silent.getsockname()[1]}\n"
               f"        access-key-id: x\n        secret-access-key: y\n"
               f"restore:\n  probe-timeout: 20s\n")
        r = start(runs, litevisor_bin, tmp_path, ["touch", str(marker)], config=cfg)
        base = f"http://127.0.0.1:{port}"
        poll(lambda: held, timeout=10)
        status, _, body = curl(base + "/readyz")
        assert status == 503 and "restoring" in body, body
        assert curl(base + "/livez")[0] == 200
        os.kill(r.pid, signal.SIGHUP)
        poll(lambda: "signal dropped: no service running yet signal=HUP" in r.stderr(),
             timeout=10)
        t0 = time.monotonic()
        os.kill(r.pid, sig)
        assert r.wait(timeout=10) == 128 + sig, r.stderr()
        assert time.monotonic() - t0 < 2
        assert not marker.exists()
    finally:
        silent.close()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGQUIT], ids=["TERM", "QUIT"])
def test_a_stop_while_replication_first_looks_does_not_start_the_service(
        litevisor_bin, tmp_path, s3server, sig):
    """After the restore step, `run` waits for replication's first look (seconds, on a
    slow listing) without reading signals: a TERM or QUIT then was read only once the
    service had been started, and forwarded to it (QA114 D3). The service is not
    started, the final flush runs, and litevisor exits 128+signal."""
    from test_replicate import ListHider

    class SlowList(ListHider):
        slow = False

        def refuse(self, line, c):
            if self.slow and line.startswith(b"GET") and b"list-type=2" in line:
                time.sleep(4)
            return False

    srv = s3server()
    proxy = SlowList(srv.port)
    try:
        db, marker = tmp_path / "app.db", tmp_path / "started"
        con = sqlite3.connect(db)
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("CREATE TABLE t(v)")
        con.close()
        cfg = tmp_path / "c.yml"
        cfg.write_text(f"restore:\n  existing: keep-local\ndbs:\n  - path: {db}\n"
                       f"    replicas:\n      - url: s3://{srv.bucket}/db\n"
                       f"        endpoint: http://127.0.0.1:{proxy.port}\n"
                       f"        access-key-id: {srv.key}\n"
                       f"        secret-access-key: {json.dumps(srv.secret)}\n")
        p = subprocess.run([litevisor_bin, "run", "-config", str(cfg), "--", "true"],
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 0 and "generation closed" in p.stderr, p.stderr
        proxy.slow = True
        log = tmp_path / "run.log"
        with open(log, "w") as out:
            r = subprocess.Popen([litevisor_bin, "run", "-config", str(cfg), "--", "sh", "-c",
                                  f"touch {marker}; exec sleep 30"], stderr=out)
        try:
            poll(lambda: "restore done" in log.read_text(), timeout=30, log=log)
            time.sleep(0.2)
            assert not marker.exists(), log.read_text()
            r.send_signal(signal.SIGUSR1)  # dropped, and said so, as while restoring
            r.send_signal(sig)
            assert r.wait(timeout=30) == 128 + sig, log.read_text()
        finally:
            if r.poll() is None:
                r.kill()
                r.wait()
        text = log.read_text()
        assert "service started" not in text and not marker.exists(), text
        assert f"stopped before starting the service; it was not started signal=" \
               f"{sig.name[3:]}" in text, text
        assert "signal dropped: no service running yet signal=USR1" in text, text
    finally:
        proxy.close()


@pytest.mark.parametrize("kind", ["directory", "fifo", "not-sqlite"])
def test_run_does_not_start_the_service_on_a_path_that_holds_no_database(litevisor_bin,
                                                                          tmp_path, kind):
    """A directory at the database's path (Docker's bind mount of a missing host file), a
    FIFO, or a file that is no SQLite database: the restore step called it "local database
    is current" by its time, and the service started with no database (QA115 D2). It is
    not started (exit 111), the log names what is there, and nothing is moved."""
    rep = tmp_path / "rep"
    node_run(litevisor_bin, tmp_path, "A", rep, 3, "a1")
    db = tmp_path / "B" / "app.db"
    db.parent.mkdir()
    if kind == "directory":
        db.mkdir()
        want = f"{db} is a directory, not a database"
    elif kind == "fifo":
        os.mkfifo(db)
        want = f"{db} is not a regular file"
    else:
        db.write_text("<html>an error page the download saved</html>\n" * 5)
        want = f"{db} is not an SQLite database"
    marker = tmp_path / "started"
    cfg = tmp_path / "B.yml"
    cfg.write_text(f"dbs:\n  - path: {db}\n    replicas:\n      - url: file://{rep}\n")
    p = subprocess.run([litevisor_bin, "run", "-config", str(cfg), "--", "touch", str(marker)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 111 and f"{want}: nothing restored over it" in p.stderr, p.stderr
    assert not marker.exists() and os.listdir(db.parent) == ["app.db"], p.stderr


def test_a_database_without_replicas_at_a_directory_logs_no_flush_incomplete_at_stop(
        litevisor_bin, tmp_path):
    """With no replicas, a directory at the database's path is said at the start and the
    service runs (QA118 O6); every stop then also logged "final flush incomplete: the
    database was not being replicated" at ERROR, though there was nothing to flush
    (QA119 O1)."""
    db = tmp_path / "app.db"
    db.mkdir()
    cfg = tmp_path / "c.yml"
    cfg.write_text(f"dbs:\n  - path: {db}\n")
    p = subprocess.run([litevisor_bin, "run", "-config", str(cfg), "--", "true"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert f"{db} is a directory, not a database" in p.stderr, p.stderr
    assert "final flush done" in p.stderr and "incomplete" not in p.stderr, p.stderr


def test_endpoints_answer_fast_while_a_replica_hangs(litevisor_bin, tmp_path, runs):
    """One replica accepts connections and never answers; the service keeps writing.
    /livez, /healthz and /metrics still answer within 50 ms, and the stuck replica
    shows as warn (HTTP 200), never as unready."""
    import urllib.request
    silent, _ = silent_server(64)
    try:
        (tmp_path / "data").mkdir()
        port = free_port()
        report, ready, commit = tmp_path / "report.json", tmp_path / "ready", tmp_path / "commit"
        cfg = (f"addr: 127.0.0.1:{port}\n"
               f"dbs:\n  - path: {tmp_path}/data/app.db\n    name: app\n    optional: true\n"
               f"    replicas:\n"
               f"      - name: local\n        type: file\n        path: {tmp_path}/replica\n"
               f"        sync-interval: 100ms\n"
               f"      - name: stuck\n        url: s3://bkt/app\n"
               f"        endpoint: http://127.0.0.1:{silent.getsockname()[1]}\n"
               f"        access-key-id: x\n        secret-access-key: y\n        sync-interval: 100ms\n"
               f"restore:\n  probe-timeout: 300ms\n")
        r = start(runs, litevisor_bin, tmp_path,
                  DB_SERVICE + ["--report", str(report), "--ready", str(ready), "--rows", "50"],
                  config=cfg)
        poll(lambda: ready.exists(), timeout=30)
        base = f"http://127.0.0.1:{port}"
        slowest = {}
        for i in range(30):
            if i % 5 == 0:
                commit.write_text(f"busy-{i}")
            for path in ("/livez", "/healthz", "/metrics"):
                t0 = time.monotonic()
                try:
                    urllib.request.urlopen(base + path, timeout=2).read()
                except urllib.error.HTTPError as e:
                    e.read()
                slowest[path] = max(slowest.get(path, 0), time.monotonic() - t0)
            for f in (commit, tmp_path / "commit.done"):
                if (tmp_path / "commit.done").exists() and f.exists():
                    f.unlink()
            time.sleep(0.02)
        # a control path waiting on the stuck replica would take seconds; 0.5 s leaves room
        # for scheduling noise under ASan on 2 cores (the 50 ms goal is `make bench`'s)
        assert all(v < 0.5 for v in slowest.values()), slowest
        assert curl(base + "/readyz")[0] == 200
        status, _, body = curl(base + "/healthz")
        assert status == 200, body
        lag = {c["componentId"]: c for c in json.loads(body)["checks"]["replica:lag"]}
        assert lag["app/local"]["status"] == "pass", lag
        t0 = time.monotonic()
        os.kill(r.pid, signal.SIGTERM)
        assert r.wait(timeout=40) == 0, r.stderr()
        # flush-timeout (5s default) + at most 2s for replication threads: within budget.
        assert time.monotonic() - t0 < 8.5, r.stderr()
        assert "final flush incomplete" in r.stderr()
    finally:
        silent.close()


def test_stop_budget_holds_with_a_service_ignoring_term_and_a_replica_stuck(litevisor_bin,
                                                                           tmp_path, runs):
    """The documented bound, measured from the TERM: stop-grace + flush-timeout + 2 s
    (docs/supervisor.md), even when the service ignores TERM (SIGKILL and its reaping
    take time) and a replica is stuck in a request (its thread is abandoned): an
    orchestrator whose kill timeout is exactly that sum must find litevisor gone."""
    import socket
    import sqlite3
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(64)  # never accept(): the kernel completes handshakes, nobody answers
    try:
        (tmp_path / "data").mkdir()
        db = sqlite3.connect(tmp_path / "data" / "app.db")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE t(x)")
        db.close()
        ready = tmp_path / "ready"
        cfg = ("supervisor:\n  stop-grace: 1s\n  flush-timeout: 1s\n"
               f"dbs:\n  - path: {tmp_path}/data/app.db\n    name: app\n    optional: true\n"
               f"    replicas:\n"
               f"      - name: stuck\n        url: s3://bkt/app\n"
               f"        endpoint: http://127.0.0.1:{silent.getsockname()[1]}\n"
               f"        access-key-id: x\n        secret-access-key: y\n        sync-interval: 100ms\n"
               f"restore:\n  probe-timeout: 300ms\n")
        r = start(runs, litevisor_bin, tmp_path,
                  SERVICE + ["--ignore-term", "--ready", str(ready)], config=cfg)
        poll(lambda: read_lines(ready), timeout=30)
        time.sleep(1)  # the replica is inside a request that will never be answered
        t0 = time.monotonic()
        os.kill(r.pid, signal.SIGTERM)
        code = r.wait(timeout=10)
        took = time.monotonic() - t0
        assert code == 128 + signal.SIGKILL, r.stderr()
        assert took <= 1 + 1 + 2, (took, r.stderr())
        assert "grace period over" in r.stderr()
    finally:
        silent.close()


def test_replicate_exec_is_run_with_that_command(litevisor_bin, tmp_path):
    """Litestream's `replicate -exec CMD` form: restore, supervise, exit with the service's code."""
    (tmp_path / "data").mkdir()
    db = tmp_path / "data" / "app.db"
    out = tmp_path / "env.txt"
    p = subprocess.run([litevisor_bin, "replicate", "-exec",
                        f"sh -c 'echo \"$LITESTREAM_DB_PATH\" > {out}; exit 9'",
                        str(db), f"file://{tmp_path}/replica"],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 9, p.stderr
    assert out.read_text().strip() == str(db)
    # a config with no database (an empty template) starts nothing, -exec or exec:
    marker = tmp_path / "started"
    for text, args in (("", ["-exec", f"touch {marker}"]), ("dbs:\n", ["-exec", f"touch {marker}"]),
                       (f"exec: touch {marker}\ndbs:\n", [])):
        cfg = tmp_path / "lv.yml"
        cfg.write_text(text)
        p = subprocess.run([litevisor_bin, "replicate", "-config", str(cfg), *args],
                           capture_output=True, text=True, timeout=30)
        assert p.returncode == 100 and "no databases configured" in p.stderr, p.stderr
        assert not marker.exists()


def test_own_process_group_gets_signals_and_the_group_kill(litevisor_bin, tmp_path, runs):
    """new-process-group + signal-group: a forwarded signal reaches the service's whole
    group, and the SIGKILL escalation takes the group down (a child ignoring TERM too)."""
    rec, pids = tmp_path / "rec", tmp_path / "pids"
    script = (f"trap 'echo parent >> {rec}' USR1; trap '' TERM; "
              f"(trap 'echo child >> {rec}' USR1; trap '' TERM; echo $(exec sh -c 'echo $PPID') >> {pids}; "
              f" while :; do sleep 0.05; done) & "
              f"while :; do sleep 0.05; done")
    r = start(runs, litevisor_bin, tmp_path, ["sh", "-c", script],
              config="supervisor:\n  new-process-group: true\n  signal-group: true\n  stop-grace: 1s\n")
    poll(lambda: read_lines(pids))
    child = int(read_lines(pids)[0])
    assert os.getpgid(child) != os.getpgid(r.pid)
    os.kill(r.pid, signal.SIGUSR1)
    poll(lambda: sorted(read_lines(rec)) == ["child", "parent"], timeout=5)
    os.kill(r.pid, signal.SIGTERM)
    assert r.wait(timeout=20) == 128 + signal.SIGKILL, r.stderr()
    assert proc_stat(child) is None


def test_no_descriptor_leaks_into_the_service(litevisor_bin, tmp_path, runs):
    """Everything litevisor opens (signalfd, HTTP socket, databases, replicas) is close-on-exec."""
    (tmp_path / "data").mkdir()
    port = free_port()
    out = tmp_path / "fds"
    cfg = db_config(tmp_path, top=f"addr: 127.0.0.1:{port}\n")
    r = start(runs, litevisor_bin, tmp_path,
              ["sh", "-c", f"ls -l /proc/$$/fd > {out}.tmp; mv {out}.tmp {out}"], config=cfg)
    assert r.wait(timeout=30) == 0, r.stderr()
    fds = sorted(int(l.split()[-3]) for l in read_lines(out) if "->" in l)
    assert fds[:3] == [0, 1, 2]
    # dash keeps a copy of stdout (fd 10) around the redirection of ls; nothing else.
    assert len(fds) <= 4, open(out).read()
    for bad in ("socket:", "anon_inode:", "app.db", "pipe:", "replica"):
        assert bad not in open(out).read(), open(out).read()


def test_descriptor_limit_raised_for_litevisor_and_given_back_to_the_service(litevisor_bin,
                                                                           tmp_path, runs):
    """Litestream (a Go program) raises its soft RLIMIT_NOFILE to the hard limit; litevisor
    kept it, so some 55 databases ran out of descriptors under systemd's 1024 (QA49 #3).
    It raises it now, and the service gets the soft limit it was started with back."""
    (tmp_path / "data").mkdir()
    out = tmp_path / "limits"
    r = start(runs, litevisor_bin, tmp_path,
              ["sh", "-c", f"{{ ulimit -Sn; grep 'open files' /proc/$PPID/limits; }} > {out}"],
              config=db_config(tmp_path), wrap=["prlimit", "--nofile=64:4096"])
    assert r.wait(timeout=30) == 0, r.stderr()
    service, litevisor = out.read_text().splitlines()
    assert service == "64"
    assert litevisor.split()[3:5] == ["4096", "4096"], litevisor


def test_no_connection_of_an_s3_replica_leaks_into_a_restarted_service(litevisor_bin, tmp_path,
                                                                      runs, s3server):
    """libcurl opens its connections and socketpairs without close-on-exec: a service
    restarted after the S3 replica had connected inherited them (QA19). Every
    descriptor litevisor opened now closes on exec, whoever opened it."""
    (tmp_path / "data").mkdir()
    srv = s3server()
    out, mark = tmp_path / "fds", tmp_path / "ran-once"
    s3 = (f"      - type: s3\n        bucket: {srv.bucket}\n        path: app\n"
          f"        endpoint: {srv.endpoint}\n        region: us-east-1\n"
          f"        access-key-id: {srv.key}\n        secret-access-key: {srv.secret}\n"
          "        sync-interval: 100ms\n")
    cfg = db_config(tmp_path, top="supervisor:\n  restart: on-failure\n  restart-delay: 100ms\n",
                    replica_extra=s3)
    script = (f"if [ ! -e {mark} ]; then touch {mark}; sqlite3 {tmp_path}/data/app.db "
              "'PRAGMA journal_mode=WAL; CREATE TABLE t(x); INSERT INTO t VALUES (1);' "
              f">/dev/null; sleep 1.5; exit 1; fi; ls -l /proc/$$/fd > {out}.tmp; mv {out}.tmp {out}")
    r = start(runs, litevisor_bin, tmp_path, ["sh", "-c", script], config=cfg)
    assert r.wait(timeout=30) == 0, r.stderr()
    assert mark.exists()  # out is written by the second run only
    text = open(out).read()
    for bad in ("socket:", "anon_inode:", "app.db", "pipe:"):
        assert bad not in text, text


def test_endpoints_answer_fast_while_a_large_snapshot_uploads(litevisor_bin, tmp_path, runs):
    import sqlite3
    import urllib.request
    (tmp_path / "data").mkdir()
    db = sqlite3.connect(str(tmp_path / "data" / "app.db"))
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT, b BLOB)")
    for i in range(96):
        db.execute("INSERT INTO t (v, b) VALUES (?, randomblob(1048576))", (f"big-{i}",))
    db.commit()
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    port = free_port()
    r = start(runs, litevisor_bin, tmp_path, SERVICE,
              config=db_config(tmp_path, top=f"addr: 127.0.0.1:{port}\n"))
    base = f"http://127.0.0.1:{port}"
    poll(lambda: subprocess.run(["curl", "-s", base + "/livez"], capture_output=True).returncode == 0)
    slowest, during = {}, 0
    end = time.monotonic() + 20
    while time.monotonic() < end:
        body = urllib.request.urlopen(base + "/metrics", timeout=2).read().decode()
        m = re.search(r'^litevisor_replica_snapshots_total\{db="app",replica="[^"]*"\} (\d+)$', body, re.M)
        if m and int(m.group(1)) > 0:
            break
        for path in ("/livez", "/healthz", "/readyz"):
            t0 = time.monotonic()
            try:
                urllib.request.urlopen(base + path, timeout=2).read()
            except urllib.error.HTTPError as e:
                e.read()
            slowest[path] = max(slowest.get(path, 0), time.monotonic() - t0)
        during += 1
    assert during >= 3, "the snapshot finished before it could be observed"
    # a control path waiting on the snapshot upload would take seconds; 0.5 s leaves
    # room for scheduling noise under ASan on 2 cores (the 50 ms goal is `make bench`'s)
    assert all(v < 0.5 for v in slowest.values()), slowest
    os.kill(r.pid, signal.SIGTERM)
    assert r.wait(timeout=60) == 0, r.stderr()


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root and setpriv")
def test_user_switch_without_root_is_refused_before_anything_starts(litevisor_bin, tmp_path):
    import tempfile
    with tempfile.TemporaryDirectory(dir="/tmp") as d:
        os.chmod(d, 0o755)  # readable by the unprivileged user (pytest's tmp_path is not)
        cfgf = os.path.join(d, "c.yml")
        with open(cfgf, "w") as f:
            f.write("supervisor:\n  user: root\n")
        os.chmod(cfgf, 0o644)
        p = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                            litevisor_bin, "run", "-config", cfgf, "--", "true"],
                           capture_output=True, text=True, timeout=20)
    assert p.returncode == 100, p.stderr
    assert "needs litevisor to run as root" in p.stderr


def test_a_second_litevisor_on_the_database_exits_111_before_restoring(litevisor_bin, tmp_path,
                                                                       runs):
    """Two litevisors on one database (a job started twice on a host, two jobs whose
    configs share a meta-path) raced on one state directory: one took the other's
    generation for its own. The second is refused before its restore and its
    service, naming the directory and the first; it may start once the first is gone
    (however it went: its lock goes with it, SIGKILL too)."""
    (tmp_path / "data").mkdir()
    db = tmp_path / "data" / "app.db"
    c = sqlite3.connect(db)
    c.execute("PRAGMA journal_mode=wal")
    c.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    c.close()
    cfg = tmp_path / "lv.yml"
    # no hand-over wait for the killed first's open generation
    cfg.write_text(db_config(tmp_path, top="restore:\n  handover-wait: 0s\n"))
    log = open(tmp_path / "first.log", "w")
    first = subprocess.Popen([litevisor_bin, "replicate", "-config", str(cfg)],
                             stdout=subprocess.DEVNULL, stderr=log)
    try:
        poll(lambda: "database state" in (tmp_path / "first.log").read_text(), timeout=30)
        marker = tmp_path / "started"
        p = subprocess.run([litevisor_bin, "run", "-config", str(cfg), "--", "touch", str(marker)],
                           capture_output=True, text=True, timeout=30)
        assert p.returncode == 111, p.stderr
        assert not marker.exists()
        line = next(l for l in p.stderr.splitlines() if "state directory is in use" in l)
        assert " ERROR " in line and f'dir="{tmp_path}/data/.app.db-litevisor"' in line, line
        assert f"pid {first.pid} on host" in line, line
        assert "restoring database" not in p.stderr, p.stderr
        first.kill()
        first.wait()
        p = subprocess.run([litevisor_bin, "run", "-config", str(cfg), "--", "touch", str(marker)],
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 0 and marker.exists(), p.stderr
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
        log.close()


# ---------------------------------------------------------------- exec: missing interpreter

def _elf_with_missing_loader(tmp):
    """A copy of /bin/true whose PT_INTERP names a loader that does not exist (same length)."""
    data = open("/bin/true", "rb").read()
    m = re.search(rb"/lib[^\0]*/ld-[^\0]+\0", data)
    if not m:
        return None, None
    old = m.group(0)
    new = (b"/nonexistent/ld" + b"x" * len(old))[:len(old) - 1] + b"\0"
    f = tmp / "app"
    f.write_bytes(data[:m.start()] + new + data[m.end():])
    f.chmod(0o755)
    return f, new[:-1].decode()


@pytest.mark.parametrize("kind", ["shebang", "crlf", "chained", "elf"])
def test_exec_names_the_missing_interpreter(litevisor_bin, tmp_path, kind):
    """execve says ENOENT for an existing file whose interpreter is missing: the message
    names the interpreter (not the file, which exists), and the code stays 127."""
    script = tmp_path / "script.sh"
    if kind == "shebang":
        script.write_text("#!/nonexistent/interp -x\nexit 0\n")
        want = 'its #! interpreter "/nonexistent/interp" does not exist'
    elif kind == "crlf":
        script.write_text("#!/bin/sh\r\nexit 0\r\n")
        want = 'its #! interpreter "/bin/sh\\r" does not exist (the #! line ends in a carriage return'
    elif kind == "chained":
        inner = tmp_path / "inner.sh"
        inner.write_text("#! /nonexistent/interp\n")
        inner.chmod(0o755)
        script.write_text(f"#!{inner}\nexit 0\n")
        want = (f'its #! interpreter "{inner}" cannot start: '
                'its #! interpreter "/nonexistent/interp" does not exist')
    else:
        script, loader = _elf_with_missing_loader(tmp_path)
        if not script:
            pytest.skip("/bin/true has no PT_INTERP")
        want = f'its ELF interpreter (dynamic loader) "{loader}" does not exist'
    script.chmod(0o755)
    p = subprocess.run([litevisor_bin, "run", "--", str(script)], capture_output=True, text=True,
                       timeout=20, env={"PATH": os.environ["PATH"]})
    assert p.returncode == 127, p.stderr
    assert f'cannot run "{script}": {want}' in p.stderr, p.stderr
    assert "No such file or directory" not in p.stderr


# ---------------------------------------------------------------- replicate: addr, relative path

class Replicate(Background):
    """litevisor replicate in the background."""

    def __init__(self, binary, tmp, args, cwd=None):
        e = {k: v for k, v in os.environ.items() if not k.startswith(("LITEVISOR_", "LITESTREAM_"))}
        super().__init__([binary, "replicate", *args], tmp / "replicate.log", e, cwd=cwd)

    def wait(self, timeout=30):
        return super().wait(timeout)


def write_rows(path, rows):
    import sqlite3
    db = sqlite3.connect(str(path))
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v TEXT)")
        with db:
            db.executemany("INSERT INTO t(v) VALUES (?)", [(r,) for r in rows])
    finally:
        db.close()


def test_replicate_serves_metrics_and_health_on_addr(litevisor_bin, tmp_path, runs):
    """`replicate -config` with `addr` serves /metrics (as Litestream v0.3.13 does) and
    the health endpoints without the service's checks: /livez, /readyz, /healthz."""
    (tmp_path / "data").mkdir()
    write_rows(tmp_path / "data" / "app.db", ["a"])
    port = free_port()
    cfgf = tmp_path / "c.yml"
    cfgf.write_text(db_config(tmp_path, replica_extra="        sync-interval: 100ms\n",
                              top=f"addr: 127.0.0.1:{port}\n"))
    r = Replicate(litevisor_bin, tmp_path, ["-config", str(cfgf)])
    runs.append(r)
    base = f"http://127.0.0.1:{port}"
    poll(lambda: subprocess.run(["curl", "-sf", "-o", "/dev/null", base + "/readyz"]).returncode == 0,
         timeout=20)
    assert curl(base + "/livez")[:3:2] == (200, "ok\n")
    poll(lambda: re.search(r'^litevisor_replica_last_sync_timestamp_seconds\{db="app",replica="file"\} [1-9]',
                           curl(base + "/metrics")[2], re.M), timeout=20)
    status, ctype, body = curl(base + "/metrics")
    assert status == 200 and ctype.startswith("text/plain; version=0.0.4")
    types, series = parse_prometheus(body)
    assert ("litevisor_db_size_bytes", (("db", "app"),)) in series
    assert any(s[0] == "litevisor_replica_lag_seconds" for s in series)
    assert re.search(r"^litevisor_ready 1$", body, re.M)
    assert re.search(r'^litevisor_phase\{phase="running"\} 1$', body, re.M)
    # no service: no service series (a constant 0 fired LitevisorServiceDown: QA136 D1)
    assert "litevisor_service_" not in body, body
    status, ctype, body = curl(base + "/healthz")
    doc = json.loads(body)
    assert status == 200 and doc["status"] == "pass", body
    assert not [k for k in doc["checks"] if k.startswith("service:")], body
    assert doc["checks"]["replica:lag"][0]["componentId"].endswith("file"), body
    os.kill(r.pid, signal.SIGTERM)
    assert r.wait() == 0, r.stderr()
    assert f"listening addr=127.0.0.1:{port}" in r.stderr()
    # Stopped: the port is released.
    assert subprocess.run(["curl", "-s", "-m", "2", base + "/livez"], capture_output=True).returncode != 0


def test_replicate_addr_errors(litevisor_bin, tmp_path):
    """A bad listen address is a configuration error (100); an address in use a temporary
    failure (111), found before anything replicates, as with `run`."""
    (tmp_path / "data").mkdir()
    cfgf = tmp_path / "c.yml"
    cfgf.write_text(db_config(tmp_path, top="health:\n  port-label: http\n"))
    p = subprocess.run([litevisor_bin, "replicate", "-config", str(cfgf)], capture_output=True,
                       text=True, timeout=20, env={**os.environ, "NOMAD_PORT_http": "nope"})
    assert p.returncode == 100, p.stderr
    assert "NOMAD_PORT_http is not a port number" in p.stderr
    assert not (tmp_path / "replica").exists()
    busy = __import__("socket").socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    try:
        cfgf.write_text(db_config(tmp_path, top=f"addr: 127.0.0.1:{busy.getsockname()[1]}\n"))
        p = subprocess.run([litevisor_bin, "replicate", "-config", str(cfgf)], capture_output=True,
                           text=True, timeout=20)
        assert p.returncode == 111, p.stderr
        assert "cannot listen" in p.stderr
        assert not (tmp_path / "replica").exists()
    finally:
        busy.close()


def test_a_port_litevisor_may_not_bind_is_a_config_error(litevisor_bin, tmp_path):
    """A port below 1024 without root or CAP_NET_BIND_SERVICE exited 111, "temporary
    failure", so an orchestrator retried it for good (QA89 O3): no retry gets it. It is
    100, with a hint. Run as root with that capability dropped."""
    cfg = tmp_path / "c.yml"
    cfg.write_text("addr: 127.0.0.1:81\ndbs: []\n")
    unpriv = pathlib.Path("/proc/sys/net/ipv4/ip_unprivileged_port_start")
    if os.geteuid() != 0 or not shutil.which("setpriv") or \
            (unpriv.exists() and int(unpriv.read_text()) <= 81):
        pytest.skip("needs root, setpriv, and port 81 to be privileged here")
    p = subprocess.run(["setpriv", "--inh-caps=-net_bind_service",
                        "--bounding-set=-net_bind_service", litevisor_bin, "run", "-config",
                        str(cfg), "--", "true"], capture_output=True, text=True, timeout=20)
    if "setpriv" in p.stderr:
        pytest.skip(f"setpriv cannot drop the capability here: {p.stderr.strip()}")
    assert p.returncode == 100, p.stderr
    assert "Permission denied" in p.stderr and "CAP_NET_BIND_SERVICE" in p.stderr, p.stderr


def test_a_second_litevisor_on_the_same_addr_is_address_in_use(litevisor_bin, tmp_path, runs):
    """Two services given one addr (a copy-pasted config, a second instance on the node):
    the second must exit 111, not share the port with the first, which would send each
    health check and scrape to either of them at random (SO_REUSEPORT)."""
    port = free_port()
    (tmp_path / "a").mkdir()
    a = start(runs, litevisor_bin, tmp_path / "a", ["sleep", "30"], config=f"addr: 127.0.0.1:{port}\n")
    poll(lambda: f"listening addr=127.0.0.1:{port}" in a.stderr(), timeout=10)
    p = subprocess.run([litevisor_bin, "run", "--", "sleep", "30"], capture_output=True, text=True,
                       timeout=20, env={**os.environ, "LITEVISOR_CONFIG": str(tmp_path / "a" / "litevisor.yml")})
    assert p.returncode == 111, p.stderr
    assert "cannot listen" in p.stderr and "Address already in use" in p.stderr, p.stderr
    help_text = subprocess.run([litevisor_bin, "replicate", "-help"], capture_output=True,
                               text=True, timeout=10)
    assert "/healthz" in help_text.stdout + help_text.stderr
    assert curl(f"http://127.0.0.1:{port}/livez")[0] == 200  # a connection left in TIME_WAIT
    os.kill(a.pid, signal.SIGTERM)
    assert a.wait() == 128 + signal.SIGTERM
    # its port is free again at once for the next start (SO_REUSEADDR)
    b = start(runs, litevisor_bin, tmp_path / "a", ["sleep", "30"], config=f"addr: 127.0.0.1:{port}\n")
    poll(lambda: f"listening addr=127.0.0.1:{port}" in b.stderr(), timeout=10)
    os.kill(b.pid, signal.SIGTERM)
    b.wait()


def test_a_bare_port_listens_on_ipv4_and_ipv6(litevisor_bin, tmp_path):
    """addr ":PORT" is every interface as Go (and so Litestream) listens: IPv6 too, on one
    dual-stack socket. It was 0.0.0.0 alone, so a checker reaching the host over IPv6 got
    no answer (QA39 #2). Checked in a network namespace of the test's own, where the
    loopback is the only interface (127.0.0.1 and ::1)."""
    (tmp_path / "a.yml").write_text("addr: :9099\n")
    script = ('ip link set lo up || exit 99; '
              '"$1" run -config "$2" -- sleep 30 & pid=$!; '
              'for i in $(seq 100); do curl -s -o /dev/null http://127.0.0.1:9099/livez && break; '
              'sleep 0.05; done; '
              'curl -s -m 5 -o /dev/null -w "v4 %{http_code}\\n" http://127.0.0.1:9099/livez; '
              'curl -s -m 5 -o /dev/null -w "v6 %{http_code}\\n" "http://[::1]:9099/livez"; '
              'kill -TERM $pid; wait $pid')
    p = subprocess.run(["unshare", "-rn", "sh", "-c", script, "sh", litevisor_bin,
                        str(tmp_path / "a.yml")], capture_output=True, text=True, timeout=60)
    if p.returncode == 99 or "unshare" in p.stderr:
        pytest.skip(f"no network namespace here: {p.stderr.strip()}")
    assert "v4 200" in p.stdout and "v6 200" in p.stdout, (p.stdout, p.stderr)
    assert "listening addr=[::]:9099" in p.stderr, p.stderr


@pytest.mark.skipif(not os.access(LITESTREAM, os.X_OK), reason="Litestream binary missing (scripts/deps.sh)")
def test_replicate_relative_db_path_without_config(litevisor_bin, tmp_path, runs):
    """`replicate DB_PATH REPLICA_URL` takes a relative DB_PATH against the working
    directory, as Litestream and the config file do; Litestream restores the result."""
    (tmp_path / "data").mkdir()
    write_rows(tmp_path / "data" / "app.db", ["row-0", "row-1"])
    replica = tmp_path / "replica"
    r = Replicate(litevisor_bin, tmp_path, ["data/app.db", f"file://{replica}"], cwd=tmp_path)
    runs.append(r)
    poll(lambda: list(replica.glob("generations/*/snapshots/*")), timeout=20)
    write_rows(tmp_path / "data" / "app.db", ["row-2"])
    os.kill(r.pid, signal.SIGTERM)
    assert r.wait() == 0, r.stderr()
    assert "db=app.db" in r.stderr()
    assert (tmp_path / "data" / ".app.db-litevisor").is_dir()  # state next to the database
    assert litestream_rows(tmp_path, replica) == ["row-0", "row-1", "row-2"]
    # A DB_PATH that cannot be a database file is still a usage error.
    p = subprocess.run([litevisor_bin, "replicate", "", f"file://{replica}"], capture_output=True,
                       text=True, timeout=20, cwd=tmp_path)
    assert p.returncode == 100 and "DB_PATH: empty path" in p.stderr, p.stderr



def test_a_service_does_not_outlive_a_killed_litevisor(litevisor_bin, tmp_path):
    """litevisor killed (SIGKILL, a crash) when it is not PID 1 (a hand start, systemd
    without its cgroup kill) left the service running with nothing replicating it, and
    the next run started a second copy on the same database beside it (QA97 O3). The
    service gets a TERM when litevisor dies (the parent-death signal), and its handler
    runs."""
    db, done = tmp_path / "app.db", tmp_path / "termed"
    cfg = tmp_path / "c.yml"
    cfg.write_text(f"dbs:\n  - path: {db}\n    replicas:\n      - url: file://{tmp_path / 'rep'}\n")
    script = ("import signal, sys, time\n"
              "signal.signal(signal.SIGTERM, lambda *a: (open(sys.argv[1], 'w').close(), "
              "sys.exit(0)))\n"
              "print('up', flush=True)\n"
              "time.sleep(60)\n")
    p = subprocess.Popen([litevisor_bin, "run", "-config", str(cfg), "--", SERVICE[0], "-c",
                          script, str(done)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                         text=True)
    try:
        assert p.stdout.readline() == "up\n"
        p.kill()
        p.wait(timeout=10)
        poll(lambda: done.exists(), timeout=10)
    finally:
        if p.poll() is None:
            p.kill()
        p.stdout.close()
