"""Calls and events made inside an event handler carry the event's trace
context and metadata on, as calls made inside a call handler carry theirs
(core/client.pyx: ClientCore reads the current core Context): the glue runs
the handler in ``InEvent.context()``, sync (inline or in the thread pool)
and async alike.

The event is built with a known trace id and span id (encode_event) and
published through a memory broker; the handler calls another service,
which reports the context it sees, and publishes an event, whose frame
shows the trace it carries."""

from __future__ import annotations

import threading

import pytest

import zmicro
from zmicro import _core, wire
from zmicro.broker.base import SubscribeOptions
from zmicro.broker.memory import MemoryBroker
from zmicro.registry import MemoryRegistry
from zmicro.security import Security

from ..helpers import eventually

TRACE_HI, TRACE_LO, SPAN = 0x0123456789ABCDEF, 0x0FEDCBA987654321, 0x5151515151515151
TRACE_ID = (TRACE_HI << 64) | TRACE_LO


@pytest.mark.parametrize("mode", ["inline", "blocking", "async"])
def test_a_handler_s_calls_and_events_carry_the_event_s_trace(mode, zmicro_keys, zmicro_serve):
    registry = MemoryRegistry()
    broker = MemoryBroker()
    seen: list[dict] = []       # what the called service saw
    audited: list[bytes] = []   # frames of the events the handler published
    handled = threading.Event()
    lock = threading.Lock()

    inventory = zmicro.Service("inventory", registry=registry)

    @inventory.handler("Inventory.Reserve")
    def reserve(req, ctx):
        with lock:
            seen.append({"trace_id": ctx.trace_id, "span_id": ctx.span_id,
                         "metadata": {k: bytes(v) for k, v in ctx.metadata.items()}})
        return {}

    zmicro_serve(inventory)

    def on_audited(d):
        with lock:
            audited.append(d.data)
        d.ack()

    broker.subscribe("order.audited", on_audited, SubscribeOptions())
    billing = zmicro.Service("billing", registry=registry, broker=broker)
    client = zmicro.Client(registry=registry)
    publisher = zmicro.Publisher(broker=broker)

    if mode == "async":
        apublisher = zmicro.AsyncPublisher(broker=broker)

        @billing.subscriber("order.created")
        async def on_created_async(ev: dict, ctx: zmicro.EventContext) -> None:
            # Made and closed on the handler's loop (an AsyncClient is closed
            # from the loop it runs on; one left open would keep
            # reconnecting to inventory after the test).
            async with zmicro.AsyncClient(registry=registry) as aclient:
                await aclient.call("inventory", "Inventory.Reserve", {"id": ev["id"]})
            await apublisher.publish("order.audited", {"id": ev["id"]})
            handled.set()
    else:
        @billing.subscriber("order.created", blocking=mode == "blocking")
        def on_created(ev: dict, ctx: zmicro.EventContext) -> None:
            client.call("inventory", "Inventory.Reserve", {"id": ev["id"]})
            publisher.publish("order.audited", {"id": ev["id"]})
            handled.set()

    zmicro_serve(billing)
    try:
        frame, event_id = _core.encode_event(
            "order.created", zmicro.codec.get_codec("application/msgpack").encode({"id": 7}),
            secrets=Security.resolve().secrets, request_id=1, metadata={"tenant": "acme"},
            trace_id_high=TRACE_HI, trace_id_low=TRACE_LO, span_id=SPAN)
        broker.publish("order.created", frame, event_id=event_id, timeout=5.0)
        eventually(handled.is_set, "the handler ran")
        with lock:
            assert seen == [{"trace_id": TRACE_ID, "span_id": SPAN,
                             "metadata": {"tenant": b"acme"}}]
        out = eventually(lambda: audited and audited[0], "the audit event")
        header = wire.parse_frames([out]).header
        assert (header.trace_id, header.span_id) == (TRACE_ID, SPAN)
        # Outside the handler nothing is inherited.
        assert _core.current_context() is None
    finally:
        publisher.close()
        client.close()
        if mode == "async":
            apublisher.close()
        broker.close()
