"""Runs every C unit-test binary (tests/unit/test_*.c), one pytest case per C test."""
import os
import subprocess

import pytest

UNIT_DIR = os.environ.get("LITEVISOR_UNIT_DIR") or os.path.join(
    os.path.dirname(__file__), "..", "build", "tests")


def _cases():
    if not os.path.isdir(UNIT_DIR):
        return []
    cases = []
    for name in sorted(os.listdir(UNIT_DIR)):
        path = os.path.join(UNIT_DIR, name)
        if not name.startswith("test_") or not os.access(path, os.X_OK) or os.path.isdir(path):
            continue
        out = subprocess.run([path, "--list"], capture_output=True, text=True, check=True).stdout
        cases += [pytest.param(path, t, id=f"{name}::{t}") for t in out.split()]
    return cases


@pytest.mark.parametrize("binary,test", _cases())
def test_c_unit(binary, test):
    p = subprocess.run([binary, test], capture_output=True, text=True, timeout=300,
                       cwd=os.path.dirname(__file__))
    assert p.returncode == 0, f"{os.path.basename(binary)} {test} failed:\n{p.stdout}{p.stderr}"
