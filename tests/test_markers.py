"""The ``etcd`` marker: every test that needs etcd has it, so that
``pytest -m "not etcd"`` runs on a machine without etcd (README)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def collected(*args: str) -> set[str]:
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
         *args, "tests/registry", "tests/fault", "tests/cli"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "ZMICRO_TEST_ETCD": "/nonexistent/etcd"})
    assert result.returncode == 0, result.stdout + result.stderr
    return {line for line in result.stdout.splitlines() if "::" in line}


def test_the_etcd_tests_are_marked_and_the_others_are_not():
    etcd, rest = collected("-m", "etcd"), collected("-m", "not etcd")
    assert etcd and not etcd & rest
    # Each way a test gets etcd: a fixture, the contract suite's backend
    # parameter, the fault suite's.
    assert any("test_etcd.py::" in t for t in etcd)
    assert any("test_contract.py::" in t and "[etcd" in t for t in etcd)
    assert any("test_kill.py::" in t and "[etcd]" in t for t in etcd)
    assert any("test_cli_registry.py::test_list_from_etcd" in t for t in etcd)
    assert not any(re.search(r"[\[-]etcd[\]-]", t) for t in rest)
    # Tests of an unreachable etcd need none and stay in.
    assert any("test_unreachable_is_a_registry_error" in t for t in rest)
    assert any("[embedded]" in t for t in rest)
