"""Fixtures of the RPC tests: services in their own processes, registered
in a private embedded registry, and clients for them.

Services and clients run with zmicro's defaults: secure (CurveZMQ and the
MAC), with the test session's key store (ZMICRO_HOME, tests/conftest.py).
Only the tests that put raw frames on the wire (test_backpressure,
test_codecs) run insecure services, on purpose.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

import zmicro
from zmicro.registry import EmbeddedRegistry, MemoryRegistry

from ..processes import ServiceProcess as _ServiceProcess
from ..processes import InProcess, private_dir

APP = Path(__file__).with_name("app.py")


class ServiceProcess(_ServiceProcess):
    """A tests/rpc/app.py service in a child process."""

    def __init__(self, kind: str, name: str, registry_dir: Path, *, address: str = "",
                 downstream: str | None = None) -> None:
        argv = [sys.executable, str(APP), kind, name, address or "tcp://127.0.0.1:*",
                str(registry_dir)]
        if downstream:
            argv.append(downstream)
        super().__init__(argv, env=dict(os.environ), name=name)


@pytest.fixture(scope="module")
def registry_dir(tmp_path_factory) -> Path:
    return private_dir(tmp_path_factory, "registry")


@pytest.fixture(scope="module")
def registry(registry_dir) -> EmbeddedRegistry:
    reg = EmbeddedRegistry(registry_dir)
    yield reg
    reg.close()


@pytest.fixture(scope="module")
def services(registry_dir):
    """Four services in their own processes: a sync and an async one, each
    with a downstream service its Nested endpoints call."""
    procs = {}
    try:
        procs["down"] = ServiceProcess("sync", "down", registry_dir)
        procs["sync"] = ServiceProcess("sync", "greeter-sync", registry_dir, downstream="down")
        procs["async"] = ServiceProcess("async", "greeter-async", registry_dir, downstream="down")
        yield procs
    finally:
        for p in procs.values():
            p.stop()


@pytest.fixture
def client(registry):
    c = zmicro.Client(registry=registry, timeout=10)
    yield c
    c.close()


@pytest.fixture
def memory_registry():
    return MemoryRegistry()


@pytest.fixture
def serve():
    """serve(svc, use_asyncio=False) runs a service in a thread until the test ends."""
    running = []

    def start(svc, *, use_asyncio=False):
        running.append(InProcess(svc, use_asyncio=use_asyncio))
        return running[-1]

    yield start
    for r in running:
        r.stop()
