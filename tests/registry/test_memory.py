"""What is particular to the memory registry: its expire() helper and polling watchers."""

from __future__ import annotations

import threading
import time

from zmicro.registry import EventType, MemoryRegistry, Node, ServiceRecord

from ..helpers import FakeClock

WAIT = 10.0


def rec(node_id: str) -> ServiceRecord:
    return ServiceRecord(name="Greeter", nodes=(Node(id=node_id, address="tcp://h:1"),))


def test_expire_sweeps_deterministically():
    clock = FakeClock()
    reg = MemoryRegistry(clock=clock)
    watcher = reg.watch()
    reg.register(rec("a"), ttl=5)
    reg.register(rec("b"), ttl=50)
    assert watcher.next(timeout=0).type == EventType.CREATE
    assert watcher.next(timeout=0).type == EventType.CREATE
    assert reg.expire() == 0
    clock.advance(5)  # expiry is at ttl, inclusive
    assert reg.expire() == 1
    event = watcher.next(timeout=0)
    assert (event.type, event.record.nodes[0].id) == (EventType.DELETE, "a")
    assert watcher.next(timeout=0) is None
    reg.close()


def test_blocked_watcher_notices_expiry_by_itself():
    # No registry call after the clock moves: the waiting watcher polls.
    clock = FakeClock()
    reg = MemoryRegistry(clock=clock)
    reg.register(rec("a"), ttl=5)
    with reg.watch() as watcher:
        got = []
        reader = threading.Thread(target=lambda: got.append(watcher.next(timeout=WAIT)))
        reader.start()
        clock.advance(6)
        reader.join()
        assert got[0] is not None and got[0].type == EventType.DELETE


def test_default_clock_is_monotonic():
    reg = MemoryRegistry()
    assert reg._clock is time.monotonic
    reg.register(rec("a"), ttl=3600)
    assert len(reg.get("Greeter")[0].nodes) == 1
