"""Hedged calls (AsyncClient, idempotent endpoints): a slow first attempt
gets company on another node; the first reply wins, the rest are
cancelled."""

from __future__ import annotations

import asyncio

import pytest

import zmicro
from zmicro import Code, RPCError
from zmicro.client import HedgingPolicy
from zmicro.registry import MemoryRegistry

from ..helpers import eventually


def node(registry, name: str, delay: float, log: list, *, fail: bool = False):
    svc = zmicro.Service(name, registry=registry)

    @svc.handler("Svc.Who")
    async def who(req, ctx):
        log.append("start")
        try:
            await asyncio.sleep(delay)
        except asyncio.CancelledError:
            log.append("cancelled")
            raise
        if fail:
            raise RPCError(Code.UNAVAILABLE, "down")
        return delay

    return svc


@pytest.fixture
def registry():
    return MemoryRegistry()


def test_the_fast_node_answers(registry, serve):
    slow_log, fast_log = [], []
    serve(node(registry, "hedged", 30.0, slow_log), use_asyncio=True)
    serve(node(registry, "hedged", 0.0, fast_log), use_asyncio=True)

    async def main():
        async with zmicro.AsyncClient(registry=registry, timeout=60) as c:
            hedge = HedgingPolicy(max_attempts=2, delay=0.05)
            return [await c.call("hedged", "Svc.Who", None, idempotent=True, hedge=hedge)
                    for _ in range(4)]

    assert asyncio.run(main()) == [0.0] * 4
    # Calls that began on the slow node were hedged, and cancelled there
    # when the fast one answered.
    assert 1 <= slow_log.count("start") <= 4 and fast_log.count("start") == 4
    eventually(lambda: slow_log.count("cancelled") == slow_log.count("start"),
               "every hedged-away attempt is cancelled")


def test_client_default_hedges_idempotent_calls(registry, serve):
    slow_log, fast_log = [], []
    serve(node(registry, "hedged-default", 30.0, slow_log), use_asyncio=True)
    serve(node(registry, "hedged-default", 0.0, fast_log), use_asyncio=True)

    async def main():
        async with zmicro.AsyncClient(registry=registry, timeout=60,
                                      hedging=HedgingPolicy(delay=0.05)) as c:
            return [await c.call("hedged-default", "Svc.Who", None, idempotent=True)
                    for _ in range(4)]

    assert asyncio.run(main()) == [0.0] * 4


def test_a_non_fatal_failure_sends_the_next_at_once(registry, serve):
    bad_log, good_log = [], []
    serve(node(registry, "hedged-fail", 0.0, bad_log, fail=True), use_asyncio=True)
    serve(node(registry, "hedged-fail", 0.0, good_log), use_asyncio=True)

    async def main():
        async with zmicro.AsyncClient(registry=registry, timeout=60, retry=None) as c:
            hedge = HedgingPolicy(delay=30)  # never by time: only after the failure
            return [await c.call("hedged-fail", "Svc.Who", None, idempotent=True, hedge=hedge)
                    for _ in range(4)]

    assert asyncio.run(main()) == [0.0] * 4
    assert 1 <= bad_log.count("start") <= 4


def test_hedging_asks_for_idempotent_and_async(registry):
    with pytest.raises(ValueError, match="idempotent"):
        async def main():
            async with zmicro.AsyncClient(registry=registry) as c:
                c.call("x", "Svc.Who", None, hedge=HedgingPolicy())
        asyncio.run(main())
    with zmicro.Client(registry=registry) as c:
        with pytest.raises(ValueError, match="AsyncClient"):
            c.call("x", "Svc.Who", None, idempotent=True, hedge=HedgingPolicy())
    with pytest.raises(TypeError):  # the blocking client has no hedging
        zmicro.Client(registry=registry, hedging=HedgingPolicy())
    for kw in ({"max_attempts": 1}, {"max_attempts": 6}, {"delay": -1}):
        with pytest.raises(ValueError):
            HedgingPolicy(**kw)
