"""Restore from a peer whose download stalls: it must give up on it and fall back
soon, not wait out the stall timeout of uploads and retry it over and over.

Real S3 servers (s3rver, SigV4 checked) behind a loopback proxy that stops
forwarding the snapshot's body after its first bytes and keeps the connection
open: what a hung peer looks like from here.
"""
import os
import time

from test_restore import (Proxy, candidate_line, history, lv, rows, s3_peer,  # noqa: F401
                          upload, write_config)


class StallingProxy(Proxy):
    """For a GET whose path contains `cut`: the headers and 10 bytes of the body,
    then nothing more, with the connection left open."""

    def _down(self, s, c, state):
        try:
            while True:
                data = s.recv(65536)
                if not data:
                    break
                if state["cut"]:
                    end = data.find(b"\r\n\r\n")
                    c.sendall(data[:end + 4 + 10] if end >= 0 else data)
                    if end >= 0:
                        self.cuts += 1
                        while not self.closed:
                            time.sleep(0.1)
                        break
                else:
                    c.sendall(data)
        except OSError:
            pass
        finally:
            for x in (c, s):
                try:
                    x.close()
                except OSError:
                    pass


def test_s3_peer_stalling_mid_download_falls_back_within_the_stall_window(
        tmp_path, litevisor_bin, s3server, history):
    p05, nas = s3server(), s3server()
    upload(history, p05, tmp_path)
    upload(history, nas, tmp_path)
    stalling = StallingProxy(p05.port, cut="/snapshots/")
    slow = Proxy(nas.port, delay=0.15)
    try:
        db = tmp_path / "app.db"
        cfg = write_config(tmp_path / "lv.yml", db, [
            s3_peer("peer-05", p05, stalling.port), s3_peer("nas", nas, slow.port)],
            restore={"probe-timeout": "5s"})
        t0 = time.monotonic()
        p = lv(litevisor_bin, "restore", "-config", str(cfg), str(db), timeout=120)
        elapsed = time.monotonic() - t0
    finally:
        stalling.close()
        slow.close()
    assert p.returncode == 0, p.stderr
    assert stalling.cuts == 1, "a stall is not retried on the same peer"
    assert "WINNER" in candidate_line(p.stderr, "peer-05"), p.stderr
    assert "stalled" in p.stderr and "falling back" in p.stderr, p.stderr
    assert rows(db) == history.states[-1][2]
    assert not [n for n in os.listdir(tmp_path) if "litevisor-restore" in n]
    assert 9 < elapsed < 16, elapsed  # the 10 s stall window, once
