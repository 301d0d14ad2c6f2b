"""The client's channel pool: one socket per node per thread (sync) or per
event loop (asyncio), at most max_sockets open with the least recently
used closed first, idle ones closed after idle_ttl, and counters.
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

import zmicro
from zmicro.registry import MemoryRegistry


@pytest.fixture
def nodes(serve):
    """Three nodes of one service; calls address them directly."""
    registry = MemoryRegistry()
    addresses = []
    for _ in range(3):
        svc = zmicro.Service("pooled", registry=registry)

        @svc.handler("Svc.Where")
        def where(req, ctx, svc=svc):
            return svc.address

        serve(svc)
        addresses.append(svc.address)
    return registry, addresses


def test_reuse_and_counters(nodes):
    registry, (a, b, c) = nodes
    with zmicro.Client(registry=registry, timeout=20) as client:
        for address in (a, a, b, a, b):
            assert client.call("pooled", "Svc.Where", address=address) == address
        assert client.stats() == {"open": 2, "opens": 2, "reuses": 3, "evictions": 0,
                                  "idle_closed": 0}


def test_least_recently_used_is_evicted(nodes):
    registry, (a, b, c) = nodes
    with zmicro.Client(registry=registry, timeout=20, max_sockets=2) as client:
        for address in (a, b, a, c):  # c evicts b (a was used after b)
            assert client.call("pooled", "Svc.Where", address=address) == address
        assert client.stats() | {} == {"open": 2, "opens": 3, "reuses": 1, "evictions": 1,
                                       "idle_closed": 0}
        assert client.call("pooled", "Svc.Where", address=a) == a  # still open
        assert client.stats()["opens"] == 3
        assert client.call("pooled", "Svc.Where", address=b) == b  # reopened, c evicted
        assert client.stats() == {"open": 2, "opens": 4, "reuses": 2, "evictions": 2,
                                  "idle_closed": 0}


def test_idle_sockets_are_closed(nodes):
    registry, (a, b, c) = nodes
    with zmicro.Client(registry=registry, timeout=20, idle_ttl=0.2) as client:
        assert client.call("pooled", "Svc.Where", address=a) == a
        time.sleep(0.5)  # a is idle for more than its TTL
        assert client.call("pooled", "Svc.Where", address=b) == b
        stats = client.stats()
        assert stats["idle_closed"] == 1 and stats["open"] == 1
        assert client.call("pooled", "Svc.Where", address=a) == a  # opens again
        assert client.stats()["opens"] == 3


def test_one_socket_per_node_per_thread(nodes):
    registry, (a, b, c) = nodes
    with zmicro.Client(registry=registry, timeout=20) as client:
        errors = []

        def work():
            try:
                for _ in range(5):
                    assert client.call("pooled", "Svc.Where", address=a) == a
            except Exception as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=work) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors
        # A socket each, closed with its thread; the counts stay.
        assert client.stats() == {"open": 0, "opens": 3, "reuses": 12, "evictions": 0,
                                  "idle_closed": 0}


def test_one_socket_per_node_per_loop(nodes):
    registry, (a, b, c) = nodes

    async def main():
        async with zmicro.AsyncClient(registry=registry, timeout=20, max_sockets=2) as client:
            replies = await asyncio.gather(
                *[client.call("pooled", "Svc.Where", address=x) for x in (a, b) * 10])
            assert replies == [a, b] * 10
            first = client.stats()
            # Eviction never closes a socket with calls in flight: with a
            # and b busy, c goes past the bound.
            busy = [client.call("pooled", "Svc.Where", address=x) for x in (a, b)]
            in_c = client.call("pooled", "Svc.Where", address=c)
            over = client.stats()
            assert await asyncio.gather(*busy, in_c) == [a, b, c]
            # Idle again: the next call brings the pool back to its bound,
            # closing the least recently used (b).
            await client.call("pooled", "Svc.Where", address=a)
            return first, over, client.stats()

    first, over, after = asyncio.run(main())
    assert first == {"open": 2, "opens": 2, "reuses": 18, "evictions": 0, "idle_closed": 0}
    assert over == {"open": 3, "opens": 3, "reuses": 20, "evictions": 0, "idle_closed": 0}
    assert after == {"open": 2, "opens": 3, "reuses": 21, "evictions": 1, "idle_closed": 0}


@pytest.mark.parametrize("kw", [{"max_sockets": 0}, {"idle_ttl": 0}, {"connect_timeout": -1}])
def test_bad_pool_settings(kw):
    with pytest.raises(ValueError):
        zmicro.Client(registry=MemoryRegistry(), **kw)
