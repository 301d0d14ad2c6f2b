"""``@svc.subscriber(..., replay_quota=N)``: how many event ids the
subscription remembers at once (acked ones, each for ``max_age``, and the
ones in progress), its EventInbox's bound; beyond it an event is nacked
with the backoff (``replay_full``: temporary, never a dead letter).
Validated like the other options: a ValueError naming the field.

Over the memory broker with a fake clock (nothing is redelivered unless
the test moves it)."""

from __future__ import annotations

import threading

import pytest

import zmicro
from zmicro import Publisher
from zmicro.broker.memory import MemoryBroker
from zmicro.events import REPLAY_QUOTA, REPLAY_QUOTA_MAX
from zmicro.registry import MemoryRegistry

from ..helpers import UNIX_START, FakeClock, eventually

TOPIC = "order.created"


def test_replay_quota_bounds_what_the_subscription_remembers(zmicro_keys, zmicro_serve):
    mem = MemoryBroker(clock=FakeClock(UNIX_START))
    svc = zmicro.Service("billing", broker=mem, registry=MemoryRegistry())
    lock = threading.Lock()
    runs: list[int] = []

    @svc.subscriber(TOPIC, replay_quota=2, backoff=(5.0,))
    def handler(ev, ctx):
        with lock:
            runs.append(ev["id"])

    def sub():
        return svc.stats()["subscriptions"][TOPIC]

    try:
        zmicro_serve(svc)
        with Publisher(broker=mem) as pub:
            for n in (1, 2):
                pub.publish(TOPIC, {"id": n})
                eventually(lambda: sub()["acked"] == n, f"event {n} acked")
            pub.publish(TOPIC, {"id": 3})          # two ids remembered: no room
            stats = eventually(lambda: (s := sub())["nacked"] == 1 and s, "event 3 nacked")
        assert runs == [1, 2]
        assert (stats["refused"], stats["acked"]) == (0, 2)
        inbox = svc._subscribers[TOPIC]._inbox.stats()
        assert (inbox["remembered"], inbox["refused_replay_full"]) == (2, 1)
        assert mem.dead_letters() == []
    finally:
        mem.close()


def test_replay_quota_defaults_to_the_inbox_default(zmicro_keys):
    svc = zmicro.Service("billing", broker=MemoryBroker(), registry=MemoryRegistry())
    svc.subscriber(TOPIC)(lambda ev, ctx: None)
    assert svc._subscribers[TOPIC].replay_quota == REPLAY_QUOTA == 1_500_000


@pytest.mark.parametrize("bad", [0, -1, 1.5, 10.0, True, "10", None, REPLAY_QUOTA_MAX + 1])
def test_a_bad_replay_quota_is_refused_naming_it(bad, zmicro_keys):
    svc = zmicro.Service("billing", broker=MemoryBroker(), registry=MemoryRegistry())
    with pytest.raises(ValueError, match="replay_quota"):
        svc.subscriber(TOPIC, replay_quota=bad)
    svc.subscriber(TOPIC, replay_quota=REPLAY_QUOTA_MAX)(lambda ev, ctx: None)  # the largest
