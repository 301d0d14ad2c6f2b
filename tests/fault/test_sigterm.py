"""SIGTERM to one of three nodes under steady load: it deregisters,
refuses new calls as not processed (they go elsewhere), finishes those in
flight and exits; not one call fails, idempotent or not."""

from __future__ import annotations

import signal
import time

import pytest

import zmicro

from .load import two_loads
from .registries import open_registry


@pytest.mark.parametrize("where", ["embedded", "etcd"])
def test_sigterm_under_load(request, nodes, where):
    registry_name = request.getfixturevalue(f"{where}_registry")
    name = f"fault-term-{where}"
    a, b, c = nodes(name, registry_name, n=3)
    registry = open_registry(registry_name)
    client = zmicro.Client(registry=registry, timeout=10)
    idempotent, plain = two_loads(client, name, (a, b, c))
    try:
        b.signal(signal.SIGTERM)
        assert b.proc.wait(60) == 0
        ended_at = time.monotonic()
        for load in (idempotent, plain):
            load.wait_for(lambda: len(load.since(ended_at)) >= 100, "calls after the exit")
            assert load.served_by(b.pid, since=ended_at + 1) == 0
    finally:
        idempotent.stop()
        plain.stop()
        client.close()
        registry.close()
    assert idempotent.failures() == [] and plain.failures() == []
