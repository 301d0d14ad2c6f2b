"""Fixtures of the CLI tests: a real service in a subprocess, registered in a
private embedded registry, and the CLI run as ``python -m zmicro``.

Waits are generous (a loaded 2-core machine) and no test asserts a time.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from zmicro.registry import EmbeddedRegistry

HERE = Path(__file__).parent
START_TIMEOUT = 60.0   # seconds for the service to show up in the registry
STOP_TIMEOUT = 30.0    # seconds between SIGTERM and SIGKILL
CLI_TIMEOUT = 120.0    # seconds one CLI run may take before the test fails


@dataclass
class RunningService:
    name: str
    address: str
    env: dict[str, str]      # environment naming the registry the service is in
    registry_dir: Path
    process: subprocess.Popen


def private_dir(tmp_path_factory: pytest.TempPathFactory, name: str) -> Path:
    path = tmp_path_factory.mktemp(name)
    path.chmod(0o700)  # the embedded registry refuses a directory others can open
    return path


def cli_env(registry_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["ZMICRO_REGISTRY_DIR"] = str(registry_dir)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def start_service(name: str, registry_dir: Path, log_path: Path) -> RunningService:
    env = cli_env(registry_dir)
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, str(HERE / "service.py"), name],
                                   env=env, stdout=log, stderr=subprocess.STDOUT)
    registry = EmbeddedRegistry(registry_dir)
    try:
        give_up = time.monotonic() + START_TIMEOUT
        while True:
            records = registry.get(name)
            if records and records[0].nodes:
                return RunningService(name, records[0].nodes[0].address, env, registry_dir,
                                      process)
            if process.poll() is not None or time.monotonic() > give_up:
                stop_process(process)
                pytest.fail(f"service {name} did not start:\n{log_path.read_text()}")
            time.sleep(0.05)
    finally:
        registry.close()


def stop_process(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    """The service of tests/cli/service.py, named "greeter", for this module."""
    registry_dir = private_dir(tmp_path_factory, "registry")
    logs = tmp_path_factory.mktemp("logs")
    running = start_service("greeter", registry_dir, logs / "greeter.log")
    yield running
    stop_process(running.process)


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
