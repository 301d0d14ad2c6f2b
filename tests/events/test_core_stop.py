"""Stop ordering on the embedded path: a blocking (thread-pool) event
handler still running when ``svc.stop()`` comes gets its ack sent. The
ServerCore counts the deliveries it handed out (events_in_flight) in its
drain, so the blocking receive loop (run_blocking) ends only once their
answers went out, and the subscriptions close after that (service.py
_close_events: wait_idle, then close). The publisher sees one delivery
and its ack: no ack timeout, no redelivery, the handler ran once."""

from __future__ import annotations

import itertools
import threading

import zmicro
from zmicro.broker.embedded import EmbeddedBroker
from zmicro.registry import EmbeddedRegistry

from ..helpers import eventually
from ..processes import private_dir

TOPIC = "order.created"


def test_a_blocking_handler_running_at_stop_is_acked_once(zmicro_keys, tmp_path_factory):
    directory = str(private_dir(tmp_path_factory, "events-stop"))
    started, gate = threading.Event(), threading.Event()
    runs = itertools.count(1)
    ran: list[int] = []

    svc = zmicro.Service("billing", registry=EmbeddedRegistry(directory), grace=60.0)

    @svc.subscriber(TOPIC, queue="billing", blocking=True)
    def on_created(ev: dict, ctx: zmicro.EventContext) -> None:
        started.set()
        gate.wait(60)
        ran.append(next(runs))

    thread = threading.Thread(target=svc.run, name="billing", daemon=True)
    thread.start()
    publisher = zmicro.Publisher(broker=EmbeddedBroker(EmbeddedRegistry(directory)))
    try:
        eventually(lambda: EmbeddedRegistry(directory).get("zmicro.topic." + TOPIC),
                   "the subscriber registered")
        publisher.publish(TOPIC, {"id": 1})
        eventually(started.is_set, "the handler started")
        svc.stop()
        gate.set()  # the handler finishes after the stop began
        eventually(lambda: publisher.broker.stats()["acked"] == 1, "the ack")
        thread.join(60)
        assert not thread.is_alive()
        stats = publisher.broker.stats()
        # (the embedded publisher counts under "deliveries" the deliveries
        # that ended without an ack: none here)
        assert (stats["deliveries"], stats["refusals"], stats["dead_letters"]) == (0, 0, 0)
        assert ran == [1]
    finally:
        gate.set()
        svc.stop()
        publisher.close()
        publisher.broker.close()  # given, not made: the publisher leaves it open
        thread.join(60)
