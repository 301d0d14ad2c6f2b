"""One event never runs twice at once on one node (EventInbox's in-progress
mark, docs/protocol.md §4.6 check 7): a copy that arrives while the first
is still being handled - a broker's redelivery after ack_wait, a replaying
broker, a publisher resending after its timeout - is nacked for later, not
run; once the first is acked the copy is a duplicate; once it is released
(nacked, termed, failed) a copy runs.

The core's part on frames from encode_event and a FakeClock; the glue's
over the memory broker with a fake clock: ack_wait runs out while a
blocking handler waits on an Event, so the redelivery is a state, not a
race."""

from __future__ import annotations

import threading

import pytest

import zmicro
from zmicro import Publisher
from zmicro.broker.memory import MemoryBroker
from zmicro.errors import EventRefused
from zmicro.registry import MemoryRegistry

from .. import helpers
from ..helpers import UNIX_START, FakeClock, eventually
from .test_core_events import encode, inbox, keys_dir, secrets  # noqa: F401 (fixtures)

TOPIC = "order.created"


def test_copy_in_progress_is_marked_not_run(secrets):
    box = inbox(secrets)
    frame, event_id = encode(secrets)
    first = box.check(frame)
    assert not first.in_progress and not first.duplicate
    copy = box.check(frame)
    assert copy.in_progress and not copy.duplicate and copy.event_id == event_id
    box.release(copy)                        # not the mark's holder: nothing
    assert box.check(frame).in_progress
    box.acked(first)
    assert box.check(frame).duplicate
    stats = box.stats()
    assert (stats["in_progress"], stats["running"], stats["remembered"]) == (2, 0, 1)


def test_released_event_runs_again(secrets):
    box = inbox(secrets)
    frame, _ = encode(secrets)
    first = box.check(frame)
    box.release(first)
    box.release(first)                       # twice: harmless
    again = box.check(frame)
    assert not again.in_progress and not again.duplicate
    assert box.check(frame).in_progress      # the new copy holds the mark now
    with pytest.raises(ValueError):
        inbox(secrets).release(again)


def test_in_progress_ids_share_the_quota(secrets):
    box = inbox(secrets, replay_quota=2)
    a, b = box.check(encode(secrets)[0]), box.check(encode(secrets)[0])
    with pytest.raises(EventRefused) as err:
        box.check(encode(secrets)[0])
    assert err.value.reason == "replay_full"
    box.acked(a)
    box.release(b)                           # one slot free again
    box.check(encode(secrets)[0])
    assert box.stats()["running"] == 1


def test_redelivery_while_running_is_nacked_not_run(zmicro_keys, zmicro_serve):
    clock = FakeClock(UNIX_START)
    mem = MemoryBroker(clock=clock)
    svc = zmicro.Service("billing", broker=mem, registry=MemoryRegistry())
    go = threading.Event()
    lock = threading.Lock()
    runs: list[bytes] = []
    running = [0, 0]                         # now, most at once

    @svc.subscriber(TOPIC, blocking=True, ack_wait=1.0, max_deliveries=10,
                    backoff=(0.5,))
    def handler(ev, ctx):
        with lock:
            runs.append(ctx.event_id)
            running[0] += 1
            running[1] = max(running)
        go.wait(helpers.WAIT)
        with lock:
            running[0] -= 1

    def sub():
        return svc.stats()["subscriptions"][TOPIC]

    try:
        zmicro_serve(svc)
        with Publisher(broker=mem) as pub:
            pub.publish(TOPIC, {"id": 1})
        eventually(lambda: runs, "the first run")
        for n in range(1, 4):                # ack_wait runs out, again and again
            clock.advance(2.0)
            mem.tick()
            eventually(lambda: sub()["received"] >= n + 1, f"copy {n} delivered")
        go.set()
        eventually(lambda: (s := sub())["acked"] >= 1 and s["running"] == 0, "the ack")
        clock.advance(2.0)
        mem.tick()                           # a copy still due comes back: a duplicate
        stats = eventually(lambda: (s := sub())["received"] >= 5 and s["running"] == 0 and s,
                           "the last copy")
        assert len(runs) == 1 and running[1] == 1
        assert (stats["in_progress"], stats["duplicates"], stats["acked"]) == (3, 1, 1)
        assert mem.dead_letters() == []
    finally:
        go.set()
        mem.close()
