"""replay_full is temporary (docs/protocol.md §4.6 check 7): a subscription
whose acked set is full (at most replay_quota ids, each kept max_age
seconds: a ceiling of replay_quota / max_age events/s sustained) gives the
event back with a delay, for later or another member - never a dead letter,
never a refusal.

Over the memory broker with a fake clock; the subscription has
replay_quota=N (``@svc.subscriber(replay_quota=)``), so event N+1 finds it
full.
Likewise temporary: the glue itself failing on a delivery (a nack, its
in-progress mark cleared)."""

from __future__ import annotations

import threading

import pytest

import zmicro
from zmicro import Publisher
from zmicro.broker.memory import MemoryBroker
from zmicro.registry import MemoryRegistry

from ..helpers import UNIX_START, FakeClock, eventually

TOPIC = "order.created"


@pytest.mark.parametrize("quota", [1, 2])
def test_replay_full_is_nacked_with_the_backoff_not_dead_lettered(quota, zmicro_keys,
                                                                 zmicro_serve):
    clock = FakeClock(UNIX_START)
    mem = MemoryBroker(clock=clock)
    svc = zmicro.Service("billing", broker=mem, registry=MemoryRegistry())
    lock = threading.Lock()
    runs: list[int] = []

    @svc.subscriber(TOPIC, max_deliveries=3, backoff=(5.0,), replay_quota=quota)
    def handler(ev, ctx):
        with lock:
            runs.append(ev["id"])

    def sub():
        return svc.stats()["subscriptions"][TOPIC]

    try:
        zmicro_serve(svc)
        glue = svc._subscribers[TOPIC]
        with Publisher(broker=mem) as pub:
            for n in range(1, quota + 1):
                pub.publish(TOPIC, {"id": n})
                eventually(lambda: sub()["acked"] == n, f"event {n} acked")
            pub.publish(TOPIC, {"id": quota + 1})  # no room to remember it
            stats = eventually(lambda: (s := sub())["broker"]["nacked"] == 1 and s,
                               "the last event nacked")
        assert runs == list(range(1, quota + 1))
        assert (stats["refused"], stats["nacked"], stats["acked"]) == (0, 1, quota)
        inbox = glue._inbox.stats()
        assert (inbox["remembered"], inbox["refused_replay_full"]) == (quota, 1)
        assert mem.dead_letters() == []
    finally:
        mem.close()


def test_a_failing_glue_nacks_and_releases_the_event(zmicro_keys, zmicro_serve):
    """The glue itself fails after the check (here: naming the principal,
    which it does before the handler runs when the broker proves no key,
    as the memory broker: the event's signed principal names the core
    Context's): the delivery is nacked through the broker's own delivery
    (not left in flight), and the event's in-progress mark is cleared, so
    its next copy runs."""
    clock = FakeClock(UNIX_START)
    mem = MemoryBroker(clock=clock)
    svc = zmicro.Service("billing", broker=mem, registry=MemoryRegistry())
    runs: list[int] = []
    svc.subscriber(TOPIC, max_deliveries=3, backoff=(5.0,))(
        lambda ev, ctx: runs.append(ev["id"]))
    principal_for = svc._security.principal_for
    failing = [True]

    def broken(key):
        if failing[0]:
            raise RuntimeError("the principal lookup failed")
        return principal_for(key)

    svc._security.principal_for = broken  # (what the glue is given when it starts)

    def sub():
        return svc.stats()["subscriptions"][TOPIC]

    try:
        zmicro_serve(svc)
        with Publisher(broker=mem) as pub:
            pub.publish(TOPIC, {"id": 1})
            stats = eventually(lambda: (s := sub())["broker"]["nacked"] == 1 and s,
                               "the delivery nacked")
        assert stats["broker"]["in_flight"] == 0 and stats["failed"] == 1
        assert runs == []
        failing[0] = False
        clock.advance(6.0)
        mem.tick()                               # the next copy runs: not "in progress"
        eventually(lambda: sub()["acked"] == 1, "the event handled")
        assert runs == [1] and sub()["in_progress"] == 0
    finally:
        mem.close()
