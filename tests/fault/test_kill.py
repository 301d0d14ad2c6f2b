"""kill -9 one of three nodes under steady load: no call fails but those in
flight on the dead node, and the idempotent ones among them succeed on
retry; a node started again takes traffic."""

from __future__ import annotations

import time

import pytest

import zmicro
from zmicro import Code

from .load import two_loads
from .registries import open_registry


@pytest.mark.parametrize("where", ["embedded", "etcd"])
def test_kill_9_one_of_three(request, nodes, where):
    registry_name = request.getfixturevalue(f"{where}_registry")
    name = f"fault-kill-{where}"
    a, b, c = nodes(name, registry_name, n=3)
    registry = open_registry(registry_name)
    client = zmicro.Client(registry=registry, timeout=10)
    idempotent, plain = two_loads(client, name, (a, b, c))
    try:
        b.proc.kill()
        b.proc.wait(30)
        killed_at = time.monotonic()
        # Through the dead node's registration expiring (its TTL is 2 s).
        for load in (idempotent, plain):
            load.wait_for(lambda: len(load.since(killed_at)) >= 100
                          and time.monotonic() > killed_at + 4, "calls after the kill")
        # Started again (a new port): it takes traffic.
        (d,) = nodes(name, registry_name)
        for load in (idempotent, plain):
            load.wait_for(lambda: load.served_by(d.pid) >= 5, "traffic on the new node")
    finally:
        idempotent.stop()
        plain.stop()
        client.close()
        registry.close()

    print(f"calls: {len(idempotent.outcomes)} idempotent, {len(plain.outcomes)} not, "
          f"{len(plain.failures())} of which failed")
    assert idempotent.failures() == []
    for failure in plain.failures():  # only calls in flight on b may fail
        err = failure.error
        assert err.code == Code.UNAVAILABLE and err.processed is None, err
        assert b.address in err.detail, err
