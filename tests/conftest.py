"""Shared pytest fixtures: the litevisor binary and the pinned test peers."""
import os
import shutil
import socket

import pytest

TESTS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TESTS)
NODE_MODULES = os.path.join(TESTS, "node_modules")
LITESTREAM = os.path.join(NODE_MODULES, "@flydotio", "litestream-linux-x64", "litestream")


def free_port(host="127.0.0.1"):
    """A TCP port that was free on host a moment ago."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def litevisor_bin():
    path = os.environ.get("LITEVISOR_BIN") or os.path.join(ROOT, "litevisor")
    assert os.access(path, os.X_OK), f"build litevisor first ({path})"
    return path


@pytest.fixture(scope="session")
def litestream_bin():
    assert os.access(LITESTREAM, os.X_OK), "run scripts/deps.sh (npm ci in tests/)"
    return LITESTREAM


@pytest.fixture(scope="session")
def sqlite3_cli():
    path = shutil.which("sqlite3")
    assert path, "sqlite3 CLI missing: run scripts/deps.sh"
    return path
