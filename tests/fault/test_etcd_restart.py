"""etcd restarted under load: no call fails (the clients' caches serve the
nodes they know), and once it is back a node that joins takes traffic."""

from __future__ import annotations

import time

import zmicro

from .load import two_loads
from .registries import open_registry


def test_restart_etcd_under_load(nodes, etcd_server, etcd_registry):
    name = "fault-etcd-restart"
    a, b, c = nodes(name, etcd_registry, n=3)
    registry = open_registry(etcd_registry)
    client = zmicro.Client(registry=registry, timeout=10)
    idempotent, plain = two_loads(client, name, (a, b, c))
    try:
        etcd_server.stop()
        stopped_at = time.monotonic()
        for load in (idempotent, plain):
            load.wait_for(lambda: len(load.since(stopped_at)) >= 100
                          and time.monotonic() > stopped_at + 3, "calls while etcd is down")
        etcd_server.start()
        (d,) = nodes(name, etcd_registry)
        for load in (idempotent, plain):
            load.wait_for(lambda: load.served_by(d.pid) >= 5, "traffic on a node that joined")
    finally:
        if not etcd_server.running:
            etcd_server.start()
        idempotent.stop()
        plain.stop()
        client.close()
        registry.close()
    assert idempotent.failures() == [] and plain.failures() == []
