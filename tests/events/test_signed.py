"""Events are signed end to end: whatever a broker does to the bytes, a
subscriber runs the handler only for events a publisher of the deployment
made, on their topic, once, while fresh (plan §1.3, §5.2).

The broker under test (every backend of conftest.IMPLEMENTATIONS) is
wrapped in `Tampering` (the fake broker): it records what publishers hand
it and passes on something else — altered bytes, another topic, a copy
later, a frame an attacker built. A refused event is dead-lettered with
the refusal's reason and never reaches the handler.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections.abc import Callable

import msgspec
import pytest
import zmq

import zmicro
from zmicro import _core
from zmicro.auth import Policy, Rule, topic_resource
from zmicro.broker import Broker, DeadLetter
from zmicro.errors import Code, RPCError
from zmicro.security import MacSecrets

from ..helpers import eventually

Tamper = Callable[[str, bytes], list[tuple[str, bytes]]]


class Tampering(Broker):
    """A broker in the middle: every publish is recorded (``sent``), then
    what ``tamper(topic, data)`` returns is passed on instead (default: the
    event as it came). ``inject`` hands the inner broker any bytes."""

    def __init__(self, inner: Broker) -> None:
        self.inner = inner
        self.sent: list[tuple[str, bytes, bytes]] = []
        self.tamper: Tamper = lambda topic, data: [(topic, data)]
        self.capabilities = inner.capabilities

    def publish(self, topic, data, *, event_id, timeout=5.0):
        self.sent.append((topic, bytes(data), event_id))
        for to, altered in self.tamper(topic, bytes(data)):
            self.inner.publish(to, altered, event_id=event_id, timeout=timeout)

    async def publish_async(self, topic, data, *, event_id, timeout=5.0):
        self.sent.append((topic, bytes(data), event_id))
        for to, altered in self.tamper(topic, bytes(data)):
            await self.inner.publish_async(to, altered, event_id=event_id, timeout=timeout)

    def inject(self, topic: str, data: bytes, event_id: bytes | None = None) -> None:
        self.inner.publish(topic, data, event_id=event_id or os.urandom(16))

    def subscribe(self, topic, on_delivery, options=None):
        if options is None:
            return self.inner.subscribe(topic, on_delivery)
        return self.inner.subscribe(topic, on_delivery, options)

    def dead_letters(self) -> list[DeadLetter]:
        return self.inner.dead_letters()

    def close(self) -> None:
        self.inner.close()

    def __getattr__(self, name: str):
        # The backend's own extras (attach, registers_topics, registry, tick).
        return getattr(self.inner, name)


class OrderCreated(msgspec.Struct):
    id: int
    note: str = ""


@pytest.fixture
def fake_broker(broker) -> Tampering:
    return Tampering(broker)


@pytest.fixture
def publisher(fake_broker, zmicro_keys):
    with zmicro.Publisher(broker=fake_broker) as pub:
        yield pub


class Subscribed:
    """A secure service subscribed to `topic` through the fake broker."""

    def __init__(self, fake_broker: Tampering, serve, registry, topic: str = "order.created",
                 **options) -> None:
        policy = options.pop("policy", None)
        blocking_gate: threading.Event | None = options.pop("gate", None)
        self.calls: list[tuple[OrderCreated, zmicro.EventContext]] = []
        self.lock = threading.Lock()
        self.running = 0
        self.most_running = 0
        self.service = zmicro.Service("billing", broker=fake_broker, registry=registry,
                                      policy=policy)

        def handle(ev: OrderCreated, ctx: zmicro.EventContext) -> None:
            with self.lock:
                self.running += 1
                self.most_running = max(self.most_running, self.running)
            try:
                if blocking_gate is not None:
                    blocking_gate.wait(60)
                with self.lock:
                    self.calls.append((ev, ctx))
            finally:
                with self.lock:
                    self.running -= 1

        self.service.subscriber(topic, blocking=blocking_gate is not None, **options)(handle)
        serve(self.service)
        self.topic = topic

    def stats(self) -> dict:
        return self.service.stats()["subscriptions"][self.topic]

    def wait_stat(self, name: str, n: int = 1) -> dict:
        return eventually(lambda: (s := self.stats())[name] >= n and s, f"{n} {name}")

    def __len__(self) -> int:
        with self.lock:
            return len(self.calls)


@pytest.fixture
def subscribed(impl, fake_broker, zmicro_serve, zmicro_keys):
    def make(**options) -> Subscribed:
        return Subscribed(fake_broker, zmicro_serve, impl.service_registry(fake_broker.inner),
                          **options)

    return make


def refused(fake_broker: Tampering, reason: str, n: int = 1) -> list[DeadLetter]:
    letters = eventually(lambda: len(fake_broker.dead_letters()) >= n
                         and fake_broker.dead_letters(), f"{n} dead letters")
    assert [d.reason for d in letters] == [reason] * n
    return letters


def flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1:]


def replace(data: bytes, old: bytes, new: bytes) -> bytes:
    assert len(old) == len(new) and data.count(old) == 1, (old, data)
    return data.replace(old, new)


_ids = itertools.count(1 << 40)


def forge(topic: str, event: object, *, secrets: MacSecrets | None, **fields) -> tuple[bytes, bytes]:
    """An event frame built outside any Publisher (what an attacker, or a
    node holding other secrets, could build)."""
    return _core.encode_event(topic, msgspec.msgpack.encode(event), secrets=secrets,
                              request_id=next(_ids), **fields)


# -- alterations -------------------------------------------------------------------------


def test_an_untouched_event_goes_through(fake_broker, publisher, subscribed):
    sub = subscribed()
    publisher.publish("order.created", OrderCreated(id=1))
    sub.wait_stat("acked")
    assert [ev for ev, _ in sub.calls] == [OrderCreated(id=1)]
    assert fake_broker.dead_letters() == []


def test_a_flipped_body_byte_is_refused(fake_broker, publisher, subscribed):
    sub = subscribed()
    body = msgspec.msgpack.encode(OrderCreated(id=1, note="body-marker"))
    fake_broker.tamper = lambda topic, data: [(topic, flip(data, data.index(body) + len(body) - 1))]
    publisher.publish("order.created", OrderCreated(id=1, note="body-marker"))
    refused(fake_broker, "bad_mac")
    assert len(sub) == 0 and sub.stats()["refused"] == 1


def test_a_flipped_header_byte_is_refused(fake_broker, publisher, subscribed):
    sub = subscribed()
    fake_broker.tamper = lambda topic, data: [(topic, replace(data, b"header-marker",
                                                               b"header-markes"))]
    publisher.publish("order.created", OrderCreated(id=1), metadata={"k": "header-marker"})
    refused(fake_broker, "bad_mac")
    assert len(sub) == 0


def test_a_flipped_mac_byte_is_refused(fake_broker, publisher, subscribed):
    sub = subscribed()
    fake_broker.tamper = lambda topic, data: [(topic, flip(data, len(data) - 1))]
    publisher.publish("order.created", OrderCreated(id=1))
    refused(fake_broker, "bad_mac")
    assert len(sub) == 0


def test_an_event_moved_to_another_topic_is_refused(impl, fake_broker, publisher, subscribed):
    sub = subscribed(topic="order.deleted")
    # Its header rewritten to the other topic: the MAC is under the first
    # topic's key.
    fake_broker.tamper = lambda topic, data: [
        ("order.deleted", replace(data, b"zmicro.topic.order.created",
                                  b"zmicro.topic.order.deleted"))]
    publisher.publish("order.created", OrderCreated(id=1))
    refused(fake_broker, "bad_mac")
    if not impl.transport_checks:
        # As it is: its header names the topic it was signed for.
        fake_broker.tamper = lambda topic, data: [("order.deleted", data)]
        publisher.publish("order.created", OrderCreated(id=2))
        letters = eventually(lambda: len(fake_broker.dead_letters()) >= 2
                             and fake_broker.dead_letters(), "two dead letters")
        assert letters[1].reason == "wrong_topic"
    assert len(sub) == 0


def test_a_stripped_or_cut_mac_is_refused(impl, fake_broker, publisher, subscribed):
    sub = subscribed()
    # The same event, unsigned (what stripping the MAC and its flags makes).
    data, event_id = forge("order.created", OrderCreated(id=1), secrets=None)
    fake_broker.inject("order.created", data, event_id)
    refused(fake_broker, "unsigned")
    if not impl.transport_checks:
        # The trailer cut off, the flags left.
        fake_broker.tamper = lambda topic, data: [(topic, data[:-32])]
        publisher.publish("order.created", OrderCreated(id=2))
        letters = eventually(lambda: len(fake_broker.dead_letters()) >= 2
                             and fake_broker.dead_letters(), "two dead letters")
        assert letters[1].reason in ("malformed", "bad_mac")
    assert len(sub) == 0


def test_an_unknown_key_id_is_refused(fake_broker, subscribed, tmp_path):
    sub = subscribed()
    other = MacSecrets(tmp_path / "other.keys")
    other.set_current(other.add())          # key id 2: the subscriber knows only 1
    data, event_id = forge("order.created", OrderCreated(id=1), secrets=other)
    fake_broker.inject("order.created", data, event_id)
    refused(fake_broker, "unknown_key")
    assert len(sub) == 0


def test_other_master_secrets_are_refused(fake_broker, subscribed, tmp_path):
    sub = subscribed()
    data, event_id = forge("order.created", OrderCreated(id=1),
                           secrets=MacSecrets(tmp_path / "other.keys"))   # key id 1 too
    fake_broker.inject("order.created", data, event_id)
    refused(fake_broker, "bad_mac")
    assert len(sub) == 0


# -- time and replays ----------------------------------------------------------------------


def test_a_replay_after_the_ack_runs_the_handler_once(fake_broker, publisher, subscribed):
    sub = subscribed()
    publisher.publish("order.created", OrderCreated(id=1))
    sub.wait_stat("acked")
    ((topic, data, _event_id),) = fake_broker.sent
    # The same frame as a new message for the broker (a fresh broker-level
    # id: JetStream would drop a second publish of the same id itself).
    # (One replay: the embedded publisher refuses to send a frame whose
    # request id is still in flight on its channel, as a copy may be.)
    fake_broker.inject(topic, data)
    stats = sub.wait_stat("duplicates")
    assert len(sub) == 1 and stats["acked"] == 1
    assert fake_broker.dead_letters() == []


def test_a_replay_older_than_max_age_is_refused_as_stale(fake_broker, publisher, subscribed):
    sub = subscribed(max_age=60.0)
    secrets = publisher._secrets
    data, event_id = forge("order.created", OrderCreated(id=1), secrets=secrets,
                           now=time.time() - 3600)
    fake_broker.inject("order.created", data, event_id)
    (letter,) = refused(fake_broker, "stale")
    # NATS keeps a refused frame's reason, size and hash, never its bytes (a
    # forger's flood must not fill the dead-letter stream); the others keep it.
    from zmicro.broker.nats import NatsBroker
    kept = b"" if isinstance(fake_broker.inner, NatsBroker) else data
    assert letter.data == kept
    assert len(sub) == 0


def test_a_timestamp_in_the_future_is_refused(fake_broker, publisher, subscribed):
    sub = subscribed()
    data, event_id = forge("order.created", OrderCreated(id=1), secrets=publisher._secrets,
                           now=time.time() + 3600)     # beyond the 30 s clock window
    fake_broker.inject("order.created", data, event_id)
    refused(fake_broker, "future")
    assert len(sub) == 0


# -- identity ------------------------------------------------------------------------------


def test_a_forged_principal_is_refused(fake_broker, publisher, subscribed):
    """Rules grant publishing to an admin key only; the broker rewrites the
    event's principal to that key: the MAC covers it."""
    admin_key, _secret = zmq.curve_keypair()
    sub = subscribed(policy=Policy(rules=[Rule(topic_resource("order.*", "publish"), "admin")]))
    own = publisher._security.public_key.encode()
    fake_broker.tamper = lambda topic, data: [(topic, replace(data, own, admin_key))]
    publisher.publish("order.created", OrderCreated(id=1))
    refused(fake_broker, "bad_mac")
    assert len(sub) == 0


# -- sizes and floods ------------------------------------------------------------------------


def test_an_oversized_event_is_refused_before_it_is_sent(fake_broker, zmicro_keys):
    with zmicro.Publisher(broker=fake_broker, content_type="application/octet-stream") as pub:
        with pytest.raises(RPCError) as info:
            pub.publish("order.created", b"x" * (_core.EVENT_MAX + 1))
    assert info.value.code == Code.RESOURCE_EXHAUSTED
    assert fake_broker.sent == []


def test_a_flood_from_one_publisher_is_bounded_by_max_in_flight(fake_broker, publisher,
                                                                 subscribed):
    gate = threading.Event()
    sub = subscribed(max_in_flight=4, gate=gate)
    for i in range(40):
        publisher.publish("order.created", OrderCreated(id=i))
    eventually(lambda: sub.running == 4, "four handlers running")
    broker_stats = sub.stats()["broker"]
    assert broker_stats["in_flight"] <= 4
    assert sub.most_running <= 4
    gate.set()
    eventually(lambda: len(sub) == 40, "every event handled")
    assert sub.most_running <= 4
    assert sorted(ev.id for ev, _ in sub.calls) == list(range(40))
