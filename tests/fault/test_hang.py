"""A node that hangs (SIGSTOP) under load: calls to it end with
DEADLINE_EXCEEDED at their deadline, it is ejected and the calls go to the
others; resumed (SIGCONT), it comes back after its ejection."""

from __future__ import annotations

import signal
import time

import zmicro
from zmicro import Code
from zmicro.client import OutlierPolicy

from .load import Load
from .registries import open_registry


def test_a_hanging_node_is_ejected(nodes, embedded_registry):
    name = "fault-hang"
    # A long TTL: the registry keeps the frozen node; ejection must do the work.
    a, b, c = nodes(name, embedded_registry, n=3, ttl=120)
    registry = open_registry(embedded_registry)
    client = zmicro.Client(registry=registry, timeout=1.0,
                           outlier=OutlierPolicy(base_ejection=2.0, max_ejection=2.0))
    load = Load(client, name, threads=3).start()
    try:
        for node in (a, b, c):
            load.wait_for(lambda: load.served_by(node.pid) >= 5, f"traffic on {node.pid}")
        c.signal(signal.SIGSTOP)
        frozen_at = time.monotonic()
        state = client.balancer(name).lookup(c.address)
        load.wait_for(lambda: state.ejected, "the hanging node's ejection")
        ejected_at = time.monotonic()
        load.wait_for(lambda: len(load.since(ejected_at)) >= 200, "calls after the ejection")
        after = load.since(ejected_at)
        c.signal(signal.SIGCONT)
        load.wait_for(lambda: load.served_by(c.pid, since=time.monotonic() - 0.5) >= 5,
                      "traffic on the resumed node")
    finally:
        c.signal(signal.SIGCONT)
        load.stop()
        client.close()
        registry.close()

    failures = [o for o in load.failures() if o.at >= frozen_at]
    assert failures, "no call reached the frozen node"
    for f in failures:
        assert f.error.code == Code.DEADLINE_EXCEEDED and c.address in f.error.detail, f.error
    # Once ejected it gets no calls: at most those already on their way fail.
    assert sum(1 for o in after if o.error is not None) <= 3
