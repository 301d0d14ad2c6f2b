"""Fixtures of the RPC tests: services in their own processes, registered
in a private embedded registry, and clients for them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import zmicro
from zmicro.registry import EmbeddedRegistry, MemoryRegistry

APP = Path(__file__).with_name("app.py")


class ServiceProcess:
    """A tests/rpc/app.py service in a child process."""

    def __init__(self, kind: str, name: str, registry_dir: Path, *, address: str = "",
                 downstream: str | None = None) -> None:
        args = [sys.executable, str(APP), kind, name, address or "tcp://127.0.0.1:*",
                str(registry_dir)]
        if downstream:
            args.append(downstream)
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env={**os.environ, "ZMICRO_INSECURE": "1"})
        self.name = name
        line = _readline(self.proc, timeout=60)
        if not line.startswith("READY "):
            self.stop()
            raise RuntimeError(f"service {name} did not start: {line!r} {self.proc.stderr.read()}")
        self.address = line.split()[1]

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self) -> str:
        """Terminate (SIGTERM, then SIGKILL after a generous wait); returns stderr."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)
        return self.proc.stderr.read() if self.proc.stderr else ""


def _readline(proc: subprocess.Popen, timeout: float) -> str:
    out: list[str] = []
    t = threading.Thread(target=lambda: out.append(proc.stdout.readline()), daemon=True)
    t.start()
    t.join(timeout)
    return out[0].strip() if out else ""


@pytest.fixture(scope="module")
def registry_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("registry")
    path.chmod(0o700)
    return path


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
    c = zmicro.Client(registry=registry, insecure=True, timeout=10)
    yield c
    c.close()


class InProcess:
    """A Service running in a thread of the test process."""

    def __init__(self, svc: zmicro.Service, *, use_asyncio: bool = False) -> None:
        self.svc = svc
        if use_asyncio:
            import asyncio
            target = lambda: asyncio.run(svc.serve())  # noqa: E731
        else:
            target = svc.run
        self.thread = threading.Thread(target=target, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while svc.address is None:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("service did not start")
            time.sleep(0.005)

    def stop(self) -> None:
        self.svc.stop()
        self.thread.join(30)
        assert not self.thread.is_alive()


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
