"""The embedded publisher's primitive: AsyncClient._deliver() sends a
prebuilt event frame on the client's channels and resolves on the
subscriber's ack (docs/protocol.md §4.6).

Against a real secure service with a subscription (ServerCore, step 3 of
the plan) for acks, nacks, terms and refusals; against a fake Curve
subscriber for what a real one never does: answers forged with the wrong
key or bound to another event (dropped and counted, never taken for an
ack), and a connection lost with the delivery in flight.

Every test runs both ends of a delivery: the Future `deliver()` returns,
and the Completion the embedded publisher's core passes instead
(`deliver_then`: the same outcomes, given to a callback)."""

from __future__ import annotations

import asyncio
import threading

import pytest
import zmq

import zmicro
from zmicro import RPCError, _core, wire
from zmicro.registry import MemoryRegistry

from ..processes import InProcess
from ..rpc.raw_peer import WAIT, ScriptedPeer, secure_node

TOPIC = "order.created"
NAME = "zmicro.topic." + TOPIC
C = zmicro.Code


@pytest.fixture(params=["future", "completion"], autouse=True)
def end(request, monkeypatch):
    """How each delivery of the test ends: a Future, or a Completion."""
    if request.param == "completion":
        monkeypatch.setattr(zmicro.AsyncClient, "_deliver", _deliver_then)
    return request.param


class _Ended(asyncio.Future):
    """A test's view of a Completion's end, as an awaitable (with the
    channel the delivery went on, as a CallFuture has)."""

    _zm_channel = None


def _deliver_then(client, address, frame, event_id, *, topic, timeout, server_key=None):
    ended = _Ended()
    returned = []

    def done(error):
        # (What done() raises goes to the loop's handler: the test would
        # hang, so a broken contract fails the delivery instead.)
        if ended.done():
            error = AssertionError("a Completion was called twice")
        elif asyncio.get_running_loop() is not ended.get_loop():
            error = AssertionError("completed off the loop")
        elif not returned:
            # The publisher's bookkeeping around the send must not be
            # re-entered.
            error = AssertionError("completed before deliver_then returned")
        if ended.done():
            ended.get_loop().call_exception_handler({"message": str(error)})
        elif error is None:
            ended.set_result(None)
        else:
            ended.set_exception(error)

    ended._zm_channel = client._core.deliver_then(
        address, frame, event_id, topic=topic, timeout=timeout, server_key=server_key,
        done=done)
    returned.append(True)
    return ended


@pytest.fixture
def node(tmp_path):
    running = []
    n = secure_node(lambda svc: running.append(InProcess(svc)), tmp_path / "home")
    yield n
    for r in running:
        r.stop()


def run(node, deliveries, *, timeout=WAIT, address=None, server_key=None, topic=TOPIC):
    """Deliver each of `deliveries` (request ids) through one AsyncClient
    holding the node's keys; the outcomes (None or the exception), and the
    frames' event ids."""
    outcomes, ids = [], []

    async def main():
        async with zmicro.AsyncClient(registry=MemoryRegistry(), keys=node.store) as client:
            for request_id in deliveries:
                frame, event_id = _core.encode_event(topic, b"event", secrets=node.secrets,
                                                     request_id=request_id)
                ids.append(event_id)
                try:
                    outcomes.append(await client._deliver(
                        address or node.address, frame, event_id, topic=topic,
                        timeout=timeout, server_key=server_key or node.server_key))
                except RPCError as exc:
                    outcomes.append(exc)

    asyncio.run(main())
    return outcomes, ids


def subscribe(node, end, *, max_in_flight=16):
    """A subscription that ends every delivery with end(d), on the server's thread."""
    node.svc._core.add_subscription(TOPIC, end, max_in_flight)


def test_ack_resolves_none(node):
    subscribe(node, lambda d: d.ack())
    outcomes, _ = run(node, [1, 2, 3])
    assert outcomes == [None, None, None]
    assert node.svc.stats()["events_acked"] == 3


def test_ack_from_another_thread(node):
    subscribe(node, lambda d: threading.Thread(target=d.ack).start())
    assert run(node, [1])[0] == [None]


def test_nack_raises_with_retry_after(node):
    delays = iter([2.5, None])
    subscribe(node, lambda d: d.nack(delay=next(delays)))
    (first, second), _ = run(node, [1, 2])
    assert (first.code, first.processed, first.retry_after) == (C.UNAVAILABLE, True, 2.5)
    assert (second.code, second.retry_after) == (C.UNAVAILABLE, None)


@pytest.mark.parametrize("how, reason, code, processed", [
    ("term", "undecodable: nope", C.FAILED_PRECONDITION, True),
    ("term", "bad_mac", C.FAILED_PRECONDITION, True),    # a Reject's words: still a term
    ("refuse", "bad_mac", C.UNAUTHENTICATED, False),
])
def test_term_raises(node, how, reason, code, processed):
    subscribe(node, lambda d: getattr(d, how)(reason))
    (exc,), _ = run(node, [1])
    assert (exc.code, exc.detail, exc.processed, exc.retry_after) == (
        code, reason, processed, None)
    assert exc.id == node.svc.name


def test_refusals_are_not_processed(node):
    (exc,), _ = run(node, [1])  # no subscription
    assert (exc.code, exc.processed) == (C.UNAVAILABLE, False)
    held = []
    subscribe(node, held.append, max_in_flight=1)

    async def full():
        async with zmicro.AsyncClient(registry=MemoryRegistry(), keys=node.store) as client:
            for request_id in range(1, 6):
                f1, id1 = _core.encode_event(TOPIC, b"e", secrets=node.secrets,
                                             request_id=request_id)
                first = client._deliver(node.address, f1, id1, topic=TOPIC, timeout=WAIT,
                                        server_key=node.server_key)
                while not held and not first.done():  # in flight on the subscriber
                    await asyncio.sleep(0.01)
                if held:
                    break
                # It ended before the subscriber got it (a handshake that
                # timed out on a loaded host: unsent): once more.
                assert first.exception().processed is False, first.exception()
            else:
                raise AssertionError("no delivery reached the subscriber in 5 tries")
            f2, id2 = _core.encode_event(TOPIC, b"e", secrets=node.secrets, request_id=99)
            with pytest.raises(RPCError) as busy:
                await client._deliver(node.address, f2, id2, topic=TOPIC, timeout=WAIT,
                                      server_key=node.server_key)
            held[0].ack()
            assert await first is None
            return busy.value

    busy = asyncio.run(full())
    assert (busy.code, busy.processed) == (C.RESOURCE_EXHAUSTED, False)


def test_timeout_is_deadline_exceeded(node):
    subscribe(node, lambda d: None)  # never ended
    (exc,), _ = run(node, [1], timeout=0.2)
    assert (exc.code, exc.processed) == (C.DEADLINE_EXCEEDED, None)


def test_nobody_listening_is_unavailable_unsent(node, unused_tcp_port):
    (exc,), _ = run(node, [1], address=f"tcp://127.0.0.1:{unused_tcp_port}",
                    server_key=zmq.curve_keypair()[0].decode())
    assert (exc.code, exc.processed) == (C.UNAVAILABLE, False)


# -- a fake subscriber ------------------------------------------------------------


def deliver_to(node, fake, *, timeout=WAIT):
    """One delivery to `fake`: (outcome, forged answers the channel counted)."""

    async def main():
        async with zmicro.AsyncClient(registry=MemoryRegistry(), keys=node.store) as client:
            frame, event_id = _core.encode_event(TOPIC, b"e", secrets=node.secrets,
                                                 request_id=77)
            fut = client._deliver(fake.address, frame, event_id, topic=TOPIC,
                                  timeout=timeout, server_key=fake.public_key)
            channel = fut._zm_channel
            try:
                return await fut, channel.n_unauthenticated
            except RPCError as exc:
                return exc, channel.n_unauthenticated

    return asyncio.run(main())


def ack(ring, header, *, bind=None):
    reply = wire.Header(kind=wire.Kind.REPLY, request_id=header.request_id)
    return ring.seal(reply, bind=header.nonce if bind is None else bind)


def test_forged_acks_are_dropped_and_counted_the_real_one_counts(node, zctx):
    topic_ring, service_ring = node.ring(NAME), node.ring()

    def script(header):
        return [ack(service_ring, header),                  # another key
                ack(topic_ring, header, bind=bytes(16)),    # bound to another event
                ack(topic_ring, header)]                    # the subscriber's

    fake = ScriptedPeer(zctx, script)
    try:
        outcome, forged = deliver_to(node, fake)
    finally:
        fake.close()
    assert (outcome, forged) == (None, 2)


def test_only_forged_acks_end_at_the_deadline(node, zctx):
    fake = ScriptedPeer(zctx, lambda h: [ack(node.ring(), h)])
    try:
        outcome, forged = deliver_to(node, fake, timeout=0.3)
    finally:
        fake.close()
    assert (outcome.code, outcome.processed, forged) == (C.DEADLINE_EXCEEDED, None, 1)


def test_lost_connection_is_unavailable_maybe_processed(node, zctx):
    fake = ScriptedPeer(zctx, lambda h: "close")
    try:
        outcome, _ = deliver_to(node, fake)
    finally:
        fake.close()
    assert (outcome.code, outcome.processed) == (C.UNAVAILABLE, None)


def test_deliver_needs_an_event_frame(node):
    async def main():
        async with zmicro.AsyncClient(registry=MemoryRegistry(), keys=node.store) as client:
            head = wire.Header(kind=wire.Kind.REQUEST, request_id=1).encode()
            with pytest.raises(ValueError):
                client._deliver(node.address, head, bytes(16), topic=TOPIC, timeout=1.0)

    asyncio.run(main())


@pytest.mark.parametrize("value, retry_after", [
    (b"1500", 1.5),
    (b"7200000", 3600.0),      # capped at an hour
    (b"9" * 400, None),        # int() then / 1000.0 raised OverflowError: the call hung
    (b"99999999999", None),    # over 10 digits
    (b"-5", None),
    (b"1e3", None),
    ("٣".encode(), None),      # a digit, not an ASCII one
])
def test_a_subscribers_pushback_is_parsed_strictly(node, zctx, value, retry_after):
    ring = node.ring(NAME)

    def script(header):
        nack = wire.Header(kind=wire.Kind.ERROR, request_id=header.request_id,
                           status=int(C.UNAVAILABLE), detail="later",
                           metadata={"retry-after-ms": value})
        return [ring.seal(nack, bind=header.nonce)]

    fake = ScriptedPeer(zctx, script)
    try:
        outcome, forged = deliver_to(node, fake)
    finally:
        fake.close()
    assert isinstance(outcome, RPCError) and forged == 0, outcome
    assert (outcome.code, outcome.retry_after) == (C.UNAVAILABLE, retry_after)


def test_forged_answers_do_not_grow_the_timer_heap(node, zctx):
    """A peer spamming answers that fail the MAC for one delivery: each is
    dropped and the delivery waits on, with one timer entry, not one per
    forged answer (the heap would grow until the deadline)."""
    topic_ring, service_ring = node.ring(NAME), node.ring()

    def script(header):
        return [ack(service_ring, header)] * 300 + [ack(topic_ring, header)]

    fake = ScriptedPeer(zctx, script)

    async def main():
        async with zmicro.AsyncClient(registry=MemoryRegistry(), keys=node.store) as client:
            frame, event_id = _core.encode_event(TOPIC, b"e", secrets=node.secrets,
                                                 request_id=78)
            fut = client._deliver(fake.address, frame, event_id, topic=TOPIC,
                                  timeout=WAIT, server_key=fake.public_key)
            channel = fut._zm_channel
            return await fut, channel.n_unauthenticated, channel.timer_entries

    try:
        outcome, forged, entries = asyncio.run(main())
    finally:
        fake.close()
    assert (outcome, forged) == (None, 300)
    assert entries <= 2


def test_a_failing_delivery_callback_is_a_nack_without_pushback(node):
    """The subscription's callback raised: the core nacks the delivery, with
    no retry-after-ms (a 0 ms one made the publisher retry at once): the
    publisher's own backoff applies."""

    def broken(d):
        raise RuntimeError("the glue failed")

    subscribe(node, broken)
    (exc,), _ = run(node, [1])
    assert (exc.code, exc.retry_after) == (C.UNAVAILABLE, None)
    assert node.svc.stats()["events_nacked"] == 1


def test_a_frame_over_the_peers_limit_is_refused_unsent(node):
    """Refused before it is sent (RESOURCE_EXHAUSTED, not processed): a
    Completion gets it from the loop, after deliver_then returned."""
    subscribe(node, lambda d: d.ack())

    async def main():
        async with zmicro.AsyncClient(registry=MemoryRegistry(), keys=node.store) as client:
            outcomes = []
            for request_id in (1, 2):
                frame, event_id = _core.encode_event(TOPIC, b"x" * 200, secrets=node.secrets,
                                                     request_id=request_id)
                sent = client._deliver(node.address, frame, event_id, topic=TOPIC,
                                       timeout=WAIT, server_key=node.server_key)
                try:
                    outcomes.append(await sent)
                except RPCError as exc:
                    outcomes.append(exc)
                sent._zm_channel.max_frame = 100  # (the peer's limit, as a registry says)
            return outcomes

    first, second = asyncio.run(main())
    assert first is None
    assert (second.code, second.processed) == (C.RESOURCE_EXHAUSTED, False)
    assert node.svc.stats()["events_acked"] == 1


@pytest.mark.parametrize("end", ["completion"], indirect=True)
def test_a_completion_that_raises_stops_nothing(node, end):
    """What a Completion raises goes to the loop's exception handler; the
    channel reads on (its next delivery is acked)."""
    subscribe(node, lambda d: d.ack())
    reported, acked = [], []

    async def main():
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda loop, ctx: reported.append(ctx))
        async with zmicro.AsyncClient(registry=MemoryRegistry(), keys=node.store) as client:
            for request_id, done in ((1, _raise), (2, acked.append)):
                frame, event_id = _core.encode_event(TOPIC, b"e", secrets=node.secrets,
                                                     request_id=request_id)
                client._core.deliver_then(node.address, frame, event_id, topic=TOPIC,
                                          timeout=WAIT, server_key=node.server_key, done=done)
            give_up = loop.time() + WAIT
            while not acked and loop.time() < give_up:
                await asyncio.sleep(0.01)

    asyncio.run(main())
    assert acked == [None]
    assert [type(c.get("exception")) for c in reported] == [ZeroDivisionError]
    assert node.svc.stats()["events_acked"] == 2


def _raise(error):
    raise ZeroDivisionError("the sink broke")
