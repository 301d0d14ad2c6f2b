"""Fixtures of the fault suite: nodes of one service in their own
processes, on a registry named by one string (see registries.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from ..processes import ServiceProcess, private_dir

NODE = Path(__file__).with_name("node.py")


class Node(ServiceProcess):
    """A tests/fault/node.py process."""

    def __init__(self, name: str, registry: str, ttl: float = 2.0) -> None:
        import os
        super().__init__([sys.executable, str(NODE), name, registry, str(ttl)],
                         env=dict(os.environ), name=name)
        self.pid = self.proc.pid


@pytest.fixture
def embedded_registry(tmp_path_factory) -> str:
    return str(private_dir(tmp_path_factory, "fault-registry"))


@pytest.fixture
def etcd_registry(etcd_server, etcd_endpoint, etcd_prefix) -> str:
    """An etcd registry URL of its own prefix; leases of 2 s, like the
    embedded nodes' TTL."""
    return f"etcd://127.0.0.1:{etcd_server.client_port}{etcd_prefix}?ttl=2"


@pytest.fixture
def nodes():
    """start(name, registry, n=1, ttl=2.0) -> [Node]; all stopped at the end."""
    started: list[Node] = []

    def start(name: str, registry: str, n: int = 1, ttl: float = 2.0) -> list[Node]:
        new = [Node(name, registry, ttl) for _ in range(n)]
        started.extend(new)
        return new

    yield start
    for node in started:
        node.stop()
