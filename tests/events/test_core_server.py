"""Events on a service's own ROUTER (docs/protocol.md §4.6), the embedded
broker's subscriber side: ServerCore.add_subscription() hands each event to
a callback as an EventDelivery whose ack / nack / term go back from the
server's thread, signed with the topic's key and bound to the event's
nonce; the server refuses (NOT_PROCESSED) what no subscription can take,
drops malformed event frames, and keeps serving calls meanwhile.

A real secure service in a thread, and a raw Curve DEALER (tests/rpc/raw_peer)
that sends the frames encode_event builds and checks every answer's MAC."""

from __future__ import annotations

import queue
import threading

import pytest

import zmicro
from zmicro import _core, wire
from zmicro.broker.base import Delivery
from zmicro.security.keys import KeyStore

from ..helpers import eventually
from ..processes import InProcess
from ..rpc.raw_peer import WAIT, RawPeer, request, secure_node

TOPIC = "order.created"
NAME = "zmicro.topic." + TOPIC
NP = wire.FLAG_NOT_PROCESSED
C = zmicro.Code


@pytest.fixture(params=[False, True], ids=["blocking", "asyncio"])
def node(request, tmp_path):
    running = []
    n = secure_node(lambda svc: running.append(InProcess(svc, use_asyncio=request.param)),
                    tmp_path / "home")
    yield n
    for r in running:
        r.stop()


@pytest.fixture
def peer(node, zctx):
    p = RawPeer(zctx, node.address, node.server_key, node.store.identity())
    yield p
    p.close()


class Inbox:
    """A subscription's callback: the deliveries it got, in order."""

    def __init__(self) -> None:
        self.got: queue.Queue = queue.Queue()

    def __call__(self, d) -> None:
        self.got.put(d)

    def next(self):
        return self.got.get(timeout=WAIT)


def subscribe(node, topic=TOPIC, *, max_in_flight=16) -> Inbox:
    inbox = Inbox()
    node.svc._core.add_subscription(topic, inbox, max_in_flight)
    return inbox


def publish(node, peer, topic=TOPIC, body=b"event", *, request_id=7):
    frame, event_id = _core.encode_event(topic, body, secrets=node.secrets,
                                         request_id=request_id)
    peer.send([frame])
    return frame, event_id


def answer(node, peer, event_id, topic=TOPIC):
    """The next answer, checked: signed with the topic's key, bound to the
    event (and refused under any other binding or key)."""
    frames, header = peer.answer()
    ring = node.ring("zmicro.topic." + topic)
    assert ring.open(frames, bind=event_id, remember=False) == "ok"
    assert ring.open(frames, bind=bytes(16), remember=False) == "bad_mac"
    assert node.ring().open(frames, bind=event_id, remember=False) == "bad_mac"
    return header


def in_another_thread(fn, *args, **kw) -> None:
    t = threading.Thread(target=fn, args=args, kwargs=kw)
    t.start()
    t.join(WAIT)


def test_delivery_ack_is_a_signed_reply_bound_to_the_event(node, peer):
    inbox = subscribe(node)
    frame, event_id = publish(node, peer, request_id=41)
    d = inbox.next()
    assert isinstance(d, Delivery)
    assert (d.data, d.user_id, d.deliveries) == (frame, node.store.identity().public, None)
    assert not d.ended
    in_another_thread(d.ack)  # any thread; the answer leaves from the server's
    reply = answer(node, peer, event_id)
    assert (reply.kind, reply.request_id) == (wire.Kind.REPLY, 41)
    assert d.ended
    # Ended once: later calls send nothing more.
    d.nack()
    d.term("late")
    peer.nothing_before_pong(node.ring())
    stats = node.svc.stats()
    assert (stats["events"], stats["events_acked"], stats["events_nacked"],
            stats["events_refused"]) == (1, 1, 0, 0)


def test_nack_with_and_without_delay(node, peer):
    inbox = subscribe(node)
    _, first = publish(node, peer, request_id=1)
    in_another_thread(inbox.next().nack, delay=1.5)
    nack = answer(node, peer, first)
    assert (nack.kind, nack.status, nack.request_id) == (wire.Kind.ERROR, C.UNAVAILABLE, 1)
    assert nack.metadata == {"retry-after-ms": b"1500"}
    assert not nack.flags & NP and nack.service == node.svc.name
    _, second = publish(node, peer, request_id=2)
    inbox.next().nack()
    nack = answer(node, peer, second)
    assert (nack.status, nack.metadata) == (C.UNAVAILABLE, {})
    _, third = publish(node, peer, request_id=3)
    d = inbox.next()
    with pytest.raises(ValueError):
        d.nack(delay=-1)
    assert not d.ended  # a refused call ends nothing
    d.ack()
    assert answer(node, peer, third).kind == wire.Kind.REPLY
    assert node.svc.stats()["events_nacked"] == 2


@pytest.mark.parametrize("how, reason, status, flags", [
    ("term", "undecodable: not msgpack", C.FAILED_PRECONDITION, 0),
    # A handler's Reject("stale") is a term: processed, whatever the words.
    ("term", "stale", C.FAILED_PRECONDITION, 0),
    ("term", "bad_mac", C.FAILED_PRECONDITION, 0),
    ("refuse", "bad_mac", C.UNAUTHENTICATED, NP),
    ("refuse", "stale", C.UNAUTHENTICATED, NP),
])
def test_term_and_refuse(node, peer, how, reason, status, flags):
    inbox = subscribe(node)
    _, event_id = publish(node, peer)
    getattr(inbox.next(), how)(reason)
    term = answer(node, peer, event_id)
    assert (term.kind, term.status, term.detail, term.flags & NP) == (
        wire.Kind.ERROR, status, reason, flags)
    assert node.svc.stats()["events_refused"] == 1


def test_no_subscription_is_unavailable_not_processed(node, peer):
    subscribe(node)
    _, event_id = publish(node, peer, "order.shipped")
    refused = answer(node, peer, event_id, "order.shipped")  # signed with *that* topic's key
    assert (refused.status, refused.flags & NP) == (C.UNAVAILABLE, NP)
    assert "order.shipped" in refused.detail
    # After remove_subscription, the same for the topic it had.
    node.svc._core.remove_subscription(TOPIC)
    node.svc._core.remove_subscription(TOPIC)  # idempotent
    _, event_id = publish(node, peer)
    assert answer(node, peer, event_id).status == C.UNAVAILABLE


def test_an_event_naming_no_topic_is_invalid_argument(node, peer):
    ring = node.ring()
    header = wire.Header(kind=wire.Kind.EVENT, request_id=3, service=node.svc.name)
    peer.send(ring.seal(header, [b"x"], inline=True))
    frames, refused = peer.answer()
    assert ring.open(frames, bind=header.nonce, remember=False) == "ok"
    assert (refused.status, refused.flags & NP) == (C.INVALID_ARGUMENT, NP)


def test_in_flight_full_is_resource_exhausted_not_processed(node, peer):
    inbox = subscribe(node, max_in_flight=1)
    _, first = publish(node, peer, request_id=1)
    d = inbox.next()
    _, second = publish(node, peer, request_id=2)
    busy = answer(node, peer, second)
    assert (busy.status, busy.flags & NP, busy.request_id) == (C.RESOURCE_EXHAUSTED, NP, 2)
    assert node.svc._core.subscriptions() == {TOPIC: (1, 1)}
    d.ack()
    assert answer(node, peer, first).kind == wire.Kind.REPLY
    _, third = publish(node, peer, request_id=3)
    inbox.next().ack()  # room again
    assert answer(node, peer, third).kind == wire.Kind.REPLY
    assert node.svc.stats()["events_refused"] == 1


def test_a_revoked_publisher_key_is_refused(node, zctx, tmp_path):
    inbox = subscribe(node)
    guest = KeyStore(tmp_path / "guest").identity()
    node.store.trust(guest.public)
    eventually(lambda: node.trusts(guest.public), "the guest key allowlisted")
    p = RawPeer(zctx, node.address, node.server_key, guest)
    try:
        _, event_id = publish(node, p, request_id=1)
        inbox.next().ack()
        assert answer(node, p, event_id).kind == wire.Kind.REPLY
        node.store.untrust(guest.public)
        eventually(lambda: not node.trusts(guest.public), "the guest key removed")
        # The connection stays up (ZAP ran at the handshake); the key is
        # looked at again per message.
        refused = None
        for attempt in range(50):
            _, event_id = publish(node, p, request_id=10 + attempt)
            refused = answer(node, p, event_id)
            if refused.kind == wire.Kind.ERROR:
                break
            inbox.next().ack()  # (the allowlist is re-read within ALLOWLIST_RECHECK)
        assert (refused.status, refused.flags & NP) == (C.UNAUTHENTICATED, NP)
        assert node.svc.stats()["events_refused"] >= 1
    finally:
        p.close()


def test_malformed_event_frames_are_dropped_and_counted(node, peer):
    subscribe(node)
    frame, _ = _core.encode_event(TOPIC, b"x", secrets=node.secrets, request_id=1)
    peer.send([frame, b"second frame"])
    head = wire.Header(kind=wire.Kind.EVENT, request_id=2, service=NAME,
                       flags=wire.FLAG_BODY_INLINE).encode()
    peer.send([head + b"x" * _core.EVENT_MAX])          # over EVENT_MAX
    peer.send([wire.Header(kind=wire.Kind.EVENT, request_id=3, service=NAME).encode()])
    peer.nothing_before_pong(node.ring())
    stats = node.svc.stats()
    # The first is no message at all (a MAC trailer and a body frame): the
    # frame layer drops it before its kind is known; the others are events.
    assert (stats["malformed"], stats["events_refused"], stats["events"]) == (3, 2, 0)


def test_calls_are_served_while_events_are_in_flight(node, peer):
    inbox = subscribe(node, max_in_flight=4)
    pending = [publish(node, peer, request_id=i)[1] for i in range(1, 4)]
    held = [inbox.next() for _ in pending]
    ring = node.ring()
    peer.send(ring.seal(request(100), [b"still here"]))
    frames, reply = peer.answer()
    assert (reply.kind, reply.request_id) == (wire.Kind.REPLY, 100)
    assert node.ran == [b"still here"]
    for d in held:
        d.ack()
    for event_id in pending:
        assert answer(node, peer, event_id).kind == wire.Kind.REPLY


def test_deliveries_ended_on_the_servers_own_thread_are_answered(node, peer):
    """A callback that ends its deliveries at once, on the server's thread
    (as the subscriber glue does for an inline handler): each answer goes
    out when the loop is done with the message (or asyncio's batch), with
    no wake-up through the socket, in order, a nack or a term alike."""
    def ack(d):
        d.ack()

    ends = iter([ack, ack, lambda d: d.nack(delay=0.25), ack, lambda d: d.term("no"), ack])
    node.svc._core.add_subscription(TOPIC, lambda d: next(ends)(d), 16)
    sent = [publish(node, peer, body=b"e%d" % n, request_id=n)[1] for n in range(1, 7)]
    answers = [answer(node, peer, event_id) for event_id in sent]
    assert [(a.request_id, a.kind, a.status) for a in answers] == [
        (1, wire.Kind.REPLY, C.OK), (2, wire.Kind.REPLY, C.OK),
        (3, wire.Kind.ERROR, C.UNAVAILABLE), (4, wire.Kind.REPLY, C.OK),
        (5, wire.Kind.ERROR, C.FAILED_PRECONDITION), (6, wire.Kind.REPLY, C.OK)]
    assert answers[2].metadata == {"retry-after-ms": b"250"}
    stats = node.svc.stats()
    assert (stats["events"], stats["events_acked"], stats["events_nacked"],
            stats["events_refused"]) == (6, 4, 1, 1)


def test_a_delivery_ended_makes_room_before_its_answer_leaves(node, peer):
    """max_in_flight counts deliveries not ended: one ended inline frees its
    place at once, also while its answer waits for the messages already in
    the socket to be handled (they go out together), so a burst to a
    subscription of max_in_flight 1 is all acked, none refused as busy."""
    node.svc._core.add_subscription(TOPIC, lambda d: d.ack(), 1)
    sent = [publish(node, peer, body=b"e%d" % n, request_id=n)[1] for n in range(1, 9)]
    answers = [answer(node, peer, event_id) for event_id in sent]
    assert [(a.request_id, a.kind) for a in answers] == [(n, wire.Kind.REPLY)
                                                        for n in range(1, 9)]
    assert node.svc._core.subscriptions() == {TOPIC: (0, 1)}


def test_a_subscription_counts_its_deliveries_and_gives_back_the_unended(node, peer):
    """add_subscription's TopicSub counts deliveries as they end (a second
    end of one is ignored); remove_subscription returns those not ended,
    for the broker to give back."""
    inbox = Inbox()
    counts = node.svc._core.add_subscription(TOPIC, inbox, 16)
    sent = [publish(node, peer, request_id=n)[1] for n in range(1, 5)]
    got = [inbox.next() for _ in sent]
    got[0].ack()
    got[1].nack()
    got[1].ack()
    got[2].refuse("bad_mac")
    assert counts.stats() == {"delivered": 4, "acked": 1, "nacked": 1, "terminated": 1,
                              "in_flight": 1}
    held = node.svc._core.remove_subscription(TOPIC)
    assert held == [got[3]] and not held[0].ended
    held[0].nack(delay=0.0)
    assert [answer(node, peer, event_id).status for event_id in sent] == [
        C.OK, C.UNAVAILABLE, C.UNAUTHENTICATED, C.UNAVAILABLE]
    assert counts.stats()["in_flight"] == 0 and counts.stats()["nacked"] == 2
    assert node.svc._core.remove_subscription(TOPIC) == []


def test_a_failing_callback_nacks(node, peer):
    def explode(d):
        raise RuntimeError("bug in the glue")

    node.svc._core.add_subscription(TOPIC, explode, 4)
    _, event_id = publish(node, peer)
    assert answer(node, peer, event_id).status == C.UNAVAILABLE


def test_add_subscription_checks(node):
    core = node.svc._core
    core.add_subscription(TOPIC, print, 1)
    with pytest.raises(ValueError):
        core.add_subscription(TOPIC, print, 1)   # one per topic and node
    with pytest.raises(ValueError):
        core.add_subscription("a..b", print, 1)
    with pytest.raises(ValueError):
        core.add_subscription("other", print, 0)


def test_a_node_that_only_answered_events_keeps_the_quiet_period_of_its_drain(node, peer):
    """drain() starts the quiet period (the socket stays open close_delay
    after the last answer, so publishers read their last acks and nacks)
    only for a node that has answered something: it counted calls, not
    events, so a subscriber-only node closed at once."""
    inbox = subscribe(node)
    _, event_id = publish(node, peer)
    inbox.next().ack()
    answer(node, peer, event_id)
    core = node.svc._core
    core.close_delay = 3600.0
    try:
        core.drain(3600.0)
        assert not core.drained  # in its quiet period
    finally:
        core.close_delay = 0.0
    eventually(lambda: core.drained, "drained once the quiet period is none")
