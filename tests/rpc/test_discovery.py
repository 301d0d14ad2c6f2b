"""A client's nodes come from the watch-fed registry cache: nodes that join
or leave reach its balancer without any lookup on the call path."""

from __future__ import annotations


import zmicro
from zmicro.registry import MemoryRegistry

from ..helpers import eventually, eventually_async


class CountingRegistry(MemoryRegistry):
    def __init__(self) -> None:
        super().__init__()
        self.gets = 0

    def get(self, name):
        self.gets += 1
        return super().get(name)


def where(svc):
    @svc.handler("Svc.Where")
    def handler(req, ctx):
        return svc.address
    return svc


def test_nodes_join_and_leave_by_watch(serve):
    registry = CountingRegistry()
    first = serve(where(zmicro.Service("disc", registry=registry)))
    with zmicro.Client(registry=registry, timeout=20) as c:
        assert c.call("disc", "Svc.Where") == first.svc.address
        assert registry.gets == 1
        second = serve(where(zmicro.Service("disc", registry=registry)))
        balancer = c.balancer("disc")
        eventually(lambda: len(balancer.nodes()) == 2, "the second node")
        seen = {c.call("disc", "Svc.Where") for _ in range(6)}
        assert seen == {first.svc.address, second.svc.address}
        second.stop()  # deregisters
        eventually(lambda: len(balancer.nodes()) == 1, "the node to leave")
        assert {c.call("disc", "Svc.Where") for _ in range(4)} == {first.svc.address}
        assert registry.gets == 1  # every change came by the watch


def test_async_client_follows_the_watch(serve):
    import asyncio
    registry = CountingRegistry()
    first = serve(where(zmicro.Service("disc-async", registry=registry)))

    async def main():
        async with zmicro.AsyncClient(registry=registry, timeout=20) as c:
            assert await c.call("disc-async", "Svc.Where") == first.svc.address
            second = serve(where(zmicro.Service("disc-async", registry=registry)))
            balancer = c.balancer("disc-async")
            await eventually_async(lambda: len(balancer.nodes()) >= 2, "the second node")
            return {await c.call("disc-async", "Svc.Where") for _ in range(6)}, second

    seen, second = asyncio.run(main())
    assert seen == {first.svc.address, second.svc.address}
    assert registry.gets == 1


def test_nodes_not_serving_get_calls_only_when_alone(serve):
    registry = MemoryRegistry()
    a = serve(where(zmicro.Service("disc-health", registry=registry)))
    b = serve(where(zmicro.Service("disc-health", registry=registry)))
    with zmicro.Client(registry=registry, timeout=20) as c:
        assert {c.call("disc-health", "Svc.Where") for _ in range(4)} == {a.svc.address,
                                                                          b.svc.address}
        balancer = c.balancer("disc-health")
        b.svc.set_serving(False)
        eventually(lambda: [n.address for n in balancer.nodes()] == [a.svc.address],
                 "the not-serving node to leave the balancer")
        assert {c.call("disc-health", "Svc.Where") for _ in range(4)} == {a.svc.address}
        a.svc.set_serving(False)  # none serves: both take calls again
        eventually(lambda: len(balancer.nodes()) == 2, "both nodes back")
        b.svc.set_serving(True)
        eventually(lambda: [n.address for n in balancer.nodes()] == [b.svc.address],
                 "the serving node alone")
