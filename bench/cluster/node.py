"""A node of the cluster benchmark, in its own process.

    python bench/cluster/node.py NAME REGISTRY_DIR DELAY_MS [EXTRA_BINDS]

Serves ``Bench.Echo`` and ``Bench.Who`` (its pid), async handlers that
wait DELAY_MS first (so one process can be slow for many calls at once),
and ``Bench.Work``, which keeps the CPU busy for the given microseconds. With EXTRA_BINDS > 0 the
service's socket is bound to that many more loopback ports, each registered
as a node of its own: many peers for the client's pool from one process.
Prints ``READY <address>`` once serving.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
import uuid

import zmicro
import zmicro.service as _service
from zmicro.registry import EmbeddedRegistry, Node, ServiceRecord


def main() -> None:
    name, registry_dir, delay_ms = sys.argv[1], sys.argv[2], float(sys.argv[3])
    extra = int(sys.argv[4]) if len(sys.argv) > 4 else 0
    registry = EmbeddedRegistry(registry_dir)
    svc = zmicro.Service(name, registry=registry, ttl=60)
    delay = delay_ms / 1000.0
    extra_addresses: list[str] = []

    if extra:
        bind = _service._bind

        def bind_more(sock, address):  # the one socket, bound many times
            first = bind(sock, address)
            for _ in range(extra):
                extra_addresses.append(bind(sock, "tcp://127.0.0.1:*"))
            return first

        _service._bind = bind_more

    pid = __import__("os").getpid()

    @svc.handler("Bench.Echo")
    async def echo(req, ctx):
        if delay:
            await asyncio.sleep(delay)
        return req

    @svc.handler("Bench.Who")
    async def who(req, ctx):
        if delay:
            await asyncio.sleep(delay)
        return pid

    @svc.handler("Bench.Work")
    def work(req, ctx):  # CPU-bound: req microseconds of pure Python
        end = time.perf_counter() + req / 1e6
        while time.perf_counter() < end:
            pass
        return req

    def announce() -> None:
        while svc.address is None:
            time.sleep(0.01)
        if extra_addresses:
            key = svc._record.nodes[0].public_key
            nodes = tuple(Node(id=f"{name}-extra-{uuid.uuid4().hex[:8]}", address=a,
                               public_key=key) for a in extra_addresses)
            registry.register(ServiceRecord(name=name, version=svc._record.version,
                                            nodes=nodes), ttl=None)
        print("READY", svc.address, flush=True)

    threading.Thread(target=announce, daemon=True).start()
    asyncio.run(svc.serve())


if __name__ == "__main__":
    main()
