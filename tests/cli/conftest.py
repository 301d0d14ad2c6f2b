"""Fixtures of the CLI tests: a real service in a subprocess, registered in a
private embedded registry, and the CLI run as ``python -m zmicro``.

Waits are generous (a loaded 2-core machine) and no test asserts a time.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from ..processes import START_TIMEOUT, ServiceProcess, private_dir, stop_process

__all__ = ["CLI_TIMEOUT", "START_TIMEOUT", "private_dir", "run_cli", "stop_process"]

HERE = Path(__file__).parent
CLI_TIMEOUT = 120.0    # seconds one CLI run may take before the test fails


@dataclass
class RunningService:
    name: str
    address: str
    env: dict[str, str]      # environment naming the registry the service is in
    registry_dir: Path
    process: ServiceProcess


def cli_env(registry_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("ZMICRO_REGISTRY", None)  # the developer's choice would override the dir
    env["ZMICRO_REGISTRY_DIR"] = str(registry_dir)
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    """The service of tests/cli/service.py, named "greeter", for this module."""
    registry_dir = private_dir(tmp_path_factory, "registry")
    env = cli_env(registry_dir)
    proc = ServiceProcess([sys.executable, str(HERE / "service.py"), "greeter"], env=env,
                          name="greeter")
    yield RunningService("greeter", proc.address, env, registry_dir, proc)
    proc.stop()


def run_cli(*args: str, env: dict[str, str], input: str | None = None
            ) -> subprocess.CompletedProcess:
    """``python -m zmicro ARGS`` with ``input`` on stdin (else /dev/null)."""
    return subprocess.run(
        [sys.executable, "-m", "zmicro", *args],
        input=input,
        stdin=subprocess.DEVNULL if input is None else None,
        capture_output=True,
        text=True,
        env=env,
        timeout=CLI_TIMEOUT,
    )
