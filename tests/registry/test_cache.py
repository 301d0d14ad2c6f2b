"""RegistryCache: lookups from memory, watch-fed updates, singleflight,
stale-on-error and re-sync.

The behaviour tests run over every registry of conftest.IMPLEMENTATIONS
(memory, embedded, etcd) through a proxy that counts the registry calls;
waits are bounded polls (WAIT seconds), never sleeps that hope.
"""

from __future__ import annotations

import sys
import threading

import pytest

from zmicro.registry import (
    EtcdRegistry,
    MemoryRegistry,
    Node,
    Registry,
    RegistryCache,
    RegistryError,
    ServiceRecord,
)
from zmicro.registry.cache import Backoff

from ..helpers import WAIT, eventually



def rec(name: str, *node_ids: str, version: str = "1", **metadata: str) -> ServiceRecord:
    nodes = tuple(Node(id=i, address=f"tcp://127.0.0.1:{7000 + len(i)}") for i in node_ids)
    return ServiceRecord(name=name, version=version, nodes=nodes, metadata=metadata)


def ids(records: list[ServiceRecord]) -> list[str]:
    return sorted(n.id for r in records for n in r.nodes)


class Proxy(Registry):
    """A registry that forwards to another, counts gets and watches, and can
    be made to fail (``failing``) or to end its watchers (``break_watches``)."""

    def __init__(self, inner: Registry) -> None:
        self.inner = inner
        self.gets = 0
        self.watches = 0
        self.failing = False
        self._watchers: list = []
        self._lock = threading.Lock()

    @property
    def trusted(self) -> bool:  # type: ignore[override]
        return self.inner.trusted

    def _check(self) -> None:
        if self.failing:
            raise RegistryError("the registry is down (test)")

    def register(self, record, *, ttl=None):
        self.inner.register(record, ttl=ttl)

    def deregister(self, record):
        self.inner.deregister(record)

    def get(self, name):
        with self._lock:
            self.gets += 1
        self._check()
        return self.inner.get(name)

    def list(self):
        self._check()
        return self.inner.list()

    def watch(self, name=None):
        with self._lock:
            self.watches += 1
        self._check()
        watcher = self.inner.watch(name)
        with self._lock:
            self._watchers.append(watcher)
        return watcher

    def break_watches(self) -> None:
        with self._lock:
            watchers, self._watchers = self._watchers, []
        for watcher in watchers:
            watcher.stop()

    def close(self):
        self.inner.close()


@pytest.fixture
def proxy(registry):
    return Proxy(registry)


@pytest.fixture
def cache(proxy):
    c = RegistryCache(proxy, backoff_initial=0.01, backoff_max=0.05)
    yield c
    c.close()


# -- over every registry -----------------------------------------------------------


def test_first_lookup_reads_then_watch_keeps_it_current(proxy, cache):
    proxy.register(rec("Greeter", "a"), ttl=60)
    changes = []
    cache.subscribe(lambda name, records: changes.append((name, ids(records))))
    assert ids(cache.get("Greeter")) == ["a"]
    assert (proxy.gets, proxy.watches) == (1, 1)
    assert changes == []  # the first load is not a change

    proxy.register(rec("Greeter", "b"), ttl=60)
    eventually(lambda: ids(cache.get("Greeter")) == ["a", "b"], "b arrives by watch")
    proxy.register(rec("Greeter", "a", zone="eu"), ttl=60)  # an UPDATE
    eventually(lambda: cache.get("Greeter")[0].metadata == {"zone": "eu"}, "a's update arrives")
    proxy.deregister(rec("Greeter", "b"))
    eventually(lambda: ids(cache.get("Greeter")) == ["a"], "b's removal arrives")

    for _ in range(100):
        cache.get("Greeter")
    assert (proxy.gets, proxy.watches) == (1, 1)  # never asked again
    eventually(lambda: changes and changes[-1] == ("Greeter", ["a"]), "listeners heard the last change")
    assert ("Greeter", ["a", "b"]) in changes
    assert not cache.is_stale("Greeter")


def test_unknown_name_is_empty_then_fills(proxy, cache):
    assert cache.get("Later") == []
    proxy.register(rec("Later", "x"))
    eventually(lambda: ids(cache.get("Later")) == ["x"], "x arrives by watch")
    assert proxy.gets == 1


def test_versions_are_separate_records(proxy, cache):
    proxy.register(rec("Greeter", "v1-a", version="1"))
    proxy.register(rec("Greeter", "v2-a", version="2"))
    assert [(r.version, ids([r])) for r in cache.get("Greeter")] == [("1", ["v1-a"]), ("2", ["v2-a"])]
    proxy.register(rec("Greeter", "v2-b", version="2"))
    eventually(
        lambda: [(r.version, ids([r])) for r in cache.get("Greeter")]
        == [("1", ["v1-a"]), ("2", ["v2-a", "v2-b"])],
        "v2-b joins version 2",
    )
    proxy.deregister(rec("Greeter", "v1-a", version="1"))
    eventually(lambda: [r.version for r in cache.get("Greeter")] == ["2"], "version 1 goes")


def test_names_are_independent(proxy, cache):
    proxy.register(rec("A", "a"))
    proxy.register(rec("B", "b"))
    assert ids(cache.get("A")) == ["a"]
    assert ids(cache.get("B")) == ["b"]
    proxy.register(rec("B", "b2"))
    eventually(lambda: ids(cache.get("B")) == ["b", "b2"], "b2 arrives")
    assert ids(cache.get("A")) == ["a"]
    assert cache.names() == ["A", "B"]


def test_a_failing_listener_does_not_stop_updates(proxy, cache):
    def bad(name, records):
        raise RuntimeError("listener bug")

    cache.subscribe(bad)
    heard = []
    unsubscribe = cache.subscribe(lambda name, records: heard.append(ids(records)))
    cache.get("A")
    proxy.register(rec("A", "a"))
    eventually(lambda: heard == [["a"]], "the good listener hears a")
    unsubscribe()
    proxy.register(rec("A", "b"))
    eventually(lambda: ids(cache.get("A")) == ["a", "b"], "b arrives")
    assert heard == [["a"]]


def test_stale_on_error_then_resync(proxy, cache):
    proxy.register(rec("Greeter", "a"))
    assert ids(cache.get("Greeter")) == ["a"]
    heard = []
    cache.subscribe(lambda name, records: heard.append(ids(records)))

    proxy.failing = True
    proxy.break_watches()  # the watch ends; re-syncs fail while failing
    eventually(lambda: cache.is_stale("Greeter"), "the cache notices")
    assert ids(cache.get("Greeter")) == ["a"]  # the last known records, no error
    proxy.register(rec("Greeter", "b"))  # a change it cannot see now
    attempts = proxy.watches
    eventually(lambda: proxy.watches >= attempts + 2, "it keeps retrying")
    assert ids(cache.get("Greeter")) == ["a"]

    proxy.failing = False
    eventually(lambda: ids(cache.get("Greeter")) == ["a", "b"], "re-synced")
    assert not cache.is_stale("Greeter")
    eventually(lambda: heard and heard[-1] == ["a", "b"], "listeners hear the re-sync")
    proxy.register(rec("Greeter", "c"))  # and the new watch works
    eventually(lambda: ids(cache.get("Greeter")) == ["a", "b", "c"], "c arrives by watch")


def test_first_lookup_failure_raises_and_is_retried(proxy, cache):
    proxy.failing = True
    with pytest.raises(RegistryError, match="down"):
        cache.get("Greeter")
    proxy.failing = False
    proxy.register(rec("Greeter", "a"))
    assert ids(cache.get("Greeter")) == ["a"]


def test_close_stops_the_watches(proxy, registry):
    before = set(threading.enumerate())  # (other tests' caches may still run)
    cache = RegistryCache(proxy)
    cache.get("A")
    cache.get("B")
    threads = [t for t in threading.enumerate()
               if t.name.startswith("zmicro-cache(") and t not in before]
    assert len(threads) >= 2
    cache.close()
    for t in threads:
        t.join(WAIT)
    assert not any(t.is_alive() for t in threads)
    with pytest.raises(RegistryError, match="closed"):
        cache.get("C")
    cache.close()  # idempotent


def test_bad_name(cache):
    with pytest.raises(ValueError, match="name"):
        cache.get("a/b")


# -- singleflight --------------------------------------------------------------------


class BlockingRegistry(MemoryRegistry):
    """A memory registry whose get counts calls and blocks until released."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0
        self.entered = threading.Event()
        self.release = threading.Event()

    def get(self, name):
        self.calls += 1
        self.entered.set()
        assert self.release.wait(WAIT)
        return super().get(name)


def _in_function(thread: threading.Thread, function: str) -> bool:
    frame = sys._current_frames().get(thread.ident)
    while frame is not None:
        if frame.f_code.co_name == function:
            return True
        frame = frame.f_back
    return False


def test_concurrent_misses_make_one_lookup():
    registry = BlockingRegistry()
    registry.register(rec("Greeter", "a"))
    cache = RegistryCache(registry)
    results: list = []
    threads = [threading.Thread(target=lambda: results.append(ids(cache.get("Greeter"))))
               for _ in range(8)]
    for t in threads:
        t.start()
    assert registry.entered.wait(WAIT)
    # Hold the lookup until every thread is inside it (in get or waiting for it).
    eventually(lambda: all(_in_function(t, "_load") for t in threads), "all 8 threads are looking up")
    registry.release.set()
    for t in threads:
        t.join(WAIT)
    assert results == [["a"]] * 8
    assert registry.calls == 1
    cache.close()
    registry.close()


# -- against a real etcd that stops and comes back ---------------------------------------


@pytest.mark.parametrize("how", ["stop", "kill"])
def test_etcd_stopped_serves_stale_then_resyncs(etcd_server, etcd_endpoint, etcd_prefix, how):
    writer = EtcdRegistry(etcd_endpoint, prefix=etcd_prefix, ttl=3)
    reader = EtcdRegistry(etcd_endpoint, prefix=etcd_prefix)
    proxy = Proxy(reader)
    cache = RegistryCache(proxy, backoff_initial=0.05, backoff_max=0.5)
    try:
        writer.register(rec("Greeter", "a"), ttl=3)
        assert ids(cache.get("Greeter")) == ["a"]
        assert not cache.is_stale("Greeter")
        getattr(etcd_server, how)()  # SIGTERM or SIGKILL
        with pytest.raises(RegistryError, match="unreachable"):
            reader.get("Greeter")
        eventually(lambda: cache.is_stale("Greeter"), "the cache knows its watch is down")
        for _ in range(10):
            assert ids(cache.get("Greeter")) == ["a"]  # stale-on-error: still served
        etcd_server.start()
        writer.register(rec("Greeter", "b"), ttl=3)
        eventually(lambda: ids(cache.get("Greeter")) == ["a", "b"], "b arrives after the restart")
        assert not cache.is_stale("Greeter")
        writer.deregister(rec("Greeter", "a"))
        eventually(lambda: ids(cache.get("Greeter")) == ["b"], "a's removal arrives")
        assert proxy.gets == 1  # the etcd watcher re-synced itself; the cache never re-read
    finally:
        cache.close()
        reader.close()
        writer.close()
        etcd_server.start()


# -- backoff -------------------------------------------------------------------------------


def test_backoff_doubles_up_to_the_cap_with_jitter():
    low = Backoff(0.1, 1.0, rng=lambda: 0.0)
    assert [round(low.next(), 6) for _ in range(6)] == [0.05, 0.1, 0.2, 0.4, 0.5, 0.5]
    low.reset()
    assert low.next() == pytest.approx(0.05)
    high = Backoff(0.1, 1.0, rng=lambda: 0.999999)
    assert [round(high.next(), 3) for _ in range(6)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    assert Backoff(0.1, 1.0, rng=lambda: 0.0).next() > 0
    for _ in range(200):
        Backoff(1, 2).next()  # many attempts do not overflow
    big = Backoff(1, 2)
    for _ in range(5000):
        assert 0.5 <= big.next() < 2


@pytest.mark.parametrize("initial, maximum", [(0, 1), (-1, 1), (2, 1)])
def test_backoff_bad_bounds(initial, maximum):
    with pytest.raises(ValueError, match="backoff"):
        Backoff(initial, maximum)
    with pytest.raises(ValueError, match="backoff"):
        RegistryCache(MemoryRegistry(), backoff_initial=initial, backoff_max=maximum)
