"""MemoryBroker: a delivery that outlives ack_wait is redelivered but keeps
its in-flight slot until it is ended (memory.py's "Bounded" rule), so a
stuck handler never has more than max_in_flight runs at once, nor work
queued for it. Time is the fake clock's: tick() returns once everything due
was handed out, so "nothing more came" is a state, not a wait."""

from __future__ import annotations

import threading

from zmicro.broker import Delivery, SubscribeOptions
from zmicro.broker.memory import MemoryBroker

from ..helpers import FakeClock, eventually


class Held:
    """An on_delivery whose handler is stuck: nothing is ended by itself."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.got: list[Delivery] = []

    def __call__(self, delivery: Delivery) -> None:
        with self.lock:
            self.got.append(delivery)

    def snapshot(self) -> list[Delivery]:
        with self.lock:
            return list(self.got)


def test_an_expired_delivery_keeps_its_slot_until_it_is_ended():
    clock = FakeClock()
    broker = MemoryBroker(clock=clock)
    held = Held()
    sub = broker.subscribe("jobs", held, SubscribeOptions(max_in_flight=2, ack_wait=1.0,
                                                          max_deliveries=100))
    try:
        for i in range(2):
            broker.publish("jobs", b"job %d" % i, event_id=bytes([i]) * 16)
        eventually(lambda: len(held.snapshot()) == 2, "the first two deliveries")

        for _ in range(5):  # ack_wait runs out again and again
            clock.advance(1.5)
            broker.tick()
            # Before the fix: each expiry freed both slots and redelivered
            # both events, 2 more stuck runs per ack_wait.
            assert len(held.snapshot()) == 2
            assert sub.stats()["in_flight"] == 2
        assert sub.stats()["expired"] == 2  # each expired once; redelivery waits for a slot

        first = held.snapshot()[0]
        first.ack()  # the stuck handler ends, late: its slot comes back
        eventually(lambda: len(held.snapshot()) == 3, "a redelivery into the freed slot")
        got = held.snapshot()
        assert got[2].deliveries == 2
        assert sub.stats()["in_flight"] == 2 and sub.stats()["late"] == 1
        clock.advance(0.1)
        broker.tick()
        assert len(held.snapshot()) == 3  # one slot freed, one run more
    finally:
        sub.close()
        broker.close()
