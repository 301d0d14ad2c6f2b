"""A handler the glue cannot start: the thread pool of blocking handlers is
shut down (``submit`` raises RuntimeError, as while the service stops), or
an async handler's event loop is closed. The delivery is nacked (the
backoff: later, or another member), the event may run again, and it is not
counted as running: a count left up kept ``stop()`` waiting for a handler
that never ran until the grace ended.

Over the memory broker with a fake clock; the grace is an hour, so only a
running count back at zero lets the service stop in time."""

from __future__ import annotations

import asyncio
import threading

import zmicro
from zmicro import Publisher
from zmicro.broker.memory import MemoryBroker
from zmicro.registry import MemoryRegistry

from ..helpers import UNIX_START, FakeClock, eventually

TOPIC = "order.created"


def run_until_stopped(svc: zmicro.Service) -> threading.Thread:
    thread = threading.Thread(target=svc.run, name="billing", daemon=True)
    thread.start()
    eventually(lambda: svc.address, "the service serves")
    return thread


def publish_one_nacked_then_stop(svc, mem, runs, thread) -> None:
    """An event the glue cannot start: nacked (with the backoff, not a
    dead letter), not run, not counted running; then stop() ends at once
    (a count left running would hold it for the whole grace)."""
    with Publisher(broker=mem) as pub:
        pub.publish(TOPIC, {"id": 1})
        stats = eventually(lambda: (s := svc.stats()["subscriptions"][TOPIC])["nacked"] == 1
                           and s, "the delivery nacked")
    assert (stats["running"], stats["failed"], stats["broker"]["in_flight"]) == (0, 0, 0)
    assert runs == [] and mem.dead_letters() == []
    svc.stop()
    thread.join(30)
    assert not thread.is_alive()


def test_a_blocking_handler_the_pool_refuses_is_nacked_not_left_running(zmicro_keys):
    clock = FakeClock(UNIX_START)
    mem = MemoryBroker(clock=clock)
    svc = zmicro.Service("billing", broker=mem, registry=MemoryRegistry(), grace=3600.0)
    runs: list[int] = []
    svc.subscriber(TOPIC, blocking=True, backoff=(5.0,))(lambda ev, ctx: runs.append(ev["id"]))
    thread = run_until_stopped(svc)
    try:
        assert svc._events_pool is not None
        svc._events_pool.shutdown()        # what the service does as it stops
        publish_one_nacked_then_stop(svc, mem, runs, thread)
    finally:
        svc.stop()
        thread.join(30)
        mem.close()


def test_an_async_handler_whose_loop_is_closed_is_nacked_not_left_running(zmicro_keys):
    clock = FakeClock(UNIX_START)
    mem = MemoryBroker(clock=clock)
    svc = zmicro.Service("billing", broker=mem, registry=MemoryRegistry(), grace=3600.0)
    runs: list[int] = []

    @svc.subscriber(TOPIC, backoff=(5.0,))
    async def handler(ev, ctx):
        runs.append(ev["id"])

    thread = run_until_stopped(svc)
    glue = svc._subscribers[TOPIC]
    closed = asyncio.new_event_loop()
    closed.close()
    loop, glue._loop = glue._loop, lambda: closed  # the service's loop, as once it ended
    try:
        publish_one_nacked_then_stop(svc, mem, runs, thread)
    finally:
        glue._loop = loop
        svc.stop()
        thread.join(30)
        mem.close()
