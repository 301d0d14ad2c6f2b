"""The embedded broker end to end: real subscriber services in their own
processes (tests/events/embedded_node.py) on a private embedded registry,
the publisher (EmbeddedBroker) in the test process, real frames
(zmicro._core.encode_event), secure (Curve + allowlist + MAC, the test
session's key store) unless a test says insecure.

Waits are `eventually` (generous bounds, never asserted durations).
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import sys
import threading
from collections import Counter
from pathlib import Path

import msgspec
import pytest
import zmq

from zmicro import _core, wire
from zmicro.broker import SubscribeOptions
from zmicro.broker.embedded import EmbeddedBroker, topic_node_metadata
from zmicro.registry import EmbeddedRegistry, Node, ServiceRecord
from zmicro.security import Security

from ..helpers import eventually
from ..processes import ServiceProcess, in_child, private_dir

NODE = Path(__file__).with_name("embedded_node.py")
TOPIC = "order.created"
_ids = itertools.count(1)


def frame(n: int, *, insecure: bool = False, topic: str = TOPIC) -> tuple[bytes, bytes]:
    """A real event frame whose body is {"n": n}, signed unless insecure."""
    security = Security.resolve(insecure=insecure)
    return _core.encode_event(topic, msgspec.msgpack.encode({"n": n}),
                              secrets=security.secrets, request_id=next(_ids),
                              principal=security.public_key)


class Sub(ServiceProcess):
    """An embedded_node.py process; `handled()` reads its record file."""

    def __init__(self, registry: Path, record: Path, *args: str,
                 env: dict[str, str] | None = None) -> None:
        self.record = record
        super().__init__([sys.executable, str(NODE), str(registry), TOPIC, str(record), *args],
                         name=f"sub {args}", env=env)

    def handled(self) -> list[int]:
        """The events its handler completed (a line each)."""
        return _numbers(self.record)

    def held(self) -> list[int]:
        """The events its handler started (with --gate)."""
        return _numbers(self.record.with_name(self.record.name + ".held"))


def _numbers(path: Path) -> list[int]:
    if not path.exists():
        return []
    return [int(line.split()[0]) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture
def registry_dir(tmp_path_factory) -> Path:
    return private_dir(tmp_path_factory, "events-registry")


@pytest.fixture
def subs(registry_dir, tmp_path):
    """start(*args) -> Sub; all stopped at the end."""
    started: list[Sub] = []

    def start(*args: str) -> Sub:
        sub = Sub(registry_dir, tmp_path / f"record-{len(started)}", *args)
        started.append(sub)
        return sub

    yield start
    for sub in started:
        sub.stop()


@pytest.fixture
def broker(registry_dir):
    made: list[EmbeddedBroker] = []

    def make(**options) -> EmbeddedBroker:
        b = EmbeddedBroker(EmbeddedRegistry(str(registry_dir)), **options)
        made.append(b)
        return b

    yield make
    for b in made:
        b.close(linger=0)


def members(registry_dir: Path, group: str) -> int:
    records = EmbeddedRegistry(str(registry_dir)).get("zmicro.topic." + TOPIC)
    return sum(len(r.nodes) for r in records if r.version == group)


def publish_all(b: EmbeddedBroker, ns, **kw) -> None:
    for n in ns:
        data, event_id = frame(n, **kw)
        b.publish(TOPIC, data, event_id=event_id, timeout=30)


def test_two_groups_each_get_every_event_and_a_group_spreads_over_its_members(
        subs, broker, registry_dir):
    billing = [subs("--queue", "billing"), subs("--queue", "billing")]
    audit = subs("--queue", "audit")
    eventually(lambda: members(registry_dir, "billing") == 2 and members(registry_dir, "audit"))
    b = broker()
    publish_all(b, range(40))
    eventually(lambda: len(audit.handled()) >= 40 and
               sum(len(s.handled()) for s in billing) >= 40, "both groups handled 40")
    assert sorted(audit.handled()) == list(range(40))
    spread = Counter(n for s in billing for n in s.handled())
    assert sorted(spread) == list(range(40))
    assert all(s.handled() for s in billing)  # the balancer used both members
    eventually(lambda: b.stats()["pending"] == 0)
    assert b.stats()["acked"] >= 80 and b.dead_letters() == []


def test_a_forked_child_publishes_with_a_fresh_engine_and_leaves_the_parents_alone(
        broker, registry_dir):
    """After fork(), the parent's engine thread, registry watch and
    subscriptions do not exist in the child: its broker starts afresh on
    first use (the events reach the subscriber), and closing it there does
    not deregister the parent's subscription."""
    b = broker(insecure=True)
    got: list[bytes] = []
    b.subscribe(TOPIC, lambda d: (got.append(d.data), d.ack()), SubscribeOptions(queue="g"))
    eventually(lambda: members(registry_dir, "g") == 1)
    data, event_id = frame(1, insecure=True)
    assert b.publish_wait(TOPIC, data, event_id=event_id, timeout=30).ok  # the parent's engine

    def child() -> bytes:
        data, event_id = frame(2, insecure=True)
        report = b.publish_wait(TOPIC, data, event_id=event_id, timeout=30)
        b.close(linger=5)
        return repr(report.groups).encode()

    assert in_child(child) == repr({"g": "acked"}).encode()
    eventually(lambda: len(got) == 2, "the child's event handled by the parent's subscriber")
    assert members(registry_dir, "g") == 1  # still subscribed
    data, event_id = frame(3, insecure=True)
    assert b.publish_wait(TOPIC, data, event_id=event_id, timeout=30).ok


def test_insecure_end_to_end(subs, broker, registry_dir):
    one, two = subs("--insecure"), subs("--insecure")  # broadcast: both get all
    eventually(lambda: members(registry_dir, "") == 2)
    b = broker(insecure=True)
    publish_all(b, range(10), insecure=True)
    eventually(lambda: len(one.handled()) >= 10 and len(two.handled()) >= 10)
    assert sorted(one.handled()) == sorted(two.handled()) == list(range(10))


def test_wait_reports_every_group(subs, broker, registry_dir):
    subs("--queue", "billing")
    subs("--queue", "audit")
    eventually(lambda: members(registry_dir, "billing") and members(registry_dir, "audit"))
    data, event_id = frame(1)
    report = broker().publish_wait(TOPIC, data, event_id=event_id, timeout=30)
    assert report.groups == {"billing": "acked", "audit": "acked"} and report.ok


def test_the_subscribers_rbac_refuses_a_publisher_it_does_not_grant(subs, broker, registry_dir):
    denied = subs("--queue", "strict", "--deny-publish")
    allowed = subs("--queue", "open")
    eventually(lambda: members(registry_dir, "strict") and members(registry_dir, "open"))
    data, event_id = frame(7)
    report = broker().publish_wait(TOPIC, data, event_id=event_id, timeout=30)
    assert report.groups["open"] == "acked"
    assert report.groups["strict"] != "acked"  # dead-lettered, never handled
    assert denied.handled() == [] and allowed.handled() == [7]


def test_an_old_node_answering_unimplemented_is_skipped_for_another(
        subs, broker, registry_dir, zctx):
    new = subs("--queue", "g", "--insecure")
    eventually(lambda: members(registry_dir, "g") == 1)
    with OldNode(zctx) as old:
        EmbeddedRegistry(str(registry_dir)).register(ServiceRecord(
            name="zmicro.topic." + TOPIC, version="g",
            nodes=(Node(id="old-node", address=old.address,
                        metadata={"service": "old", "health": "serving"}),)), ttl=60)
        eventually(lambda: members(registry_dir, "g") == 2)
        b = broker(insecure=True)
        for n in range(6):
            data, event_id = frame(n, insecure=True)
            assert b.publish_wait(TOPIC, data, event_id=event_id, timeout=30).ok
        assert sorted(new.handled()) == list(range(6))
        assert old.seen  # it was tried (round robin), refused, and skipped


class OldNode:
    """A node of a zmicro without events: it answers every message as an
    old ServerCore answers an unknown kind (check 2: UNIMPLEMENTED,
    NOT_PROCESSED, unsigned)."""

    def __init__(self, zctx: zmq.Context) -> None:
        self.sock = zctx.socket(zmq.ROUTER)
        self.sock.linger = 0
        self.sock.bind("tcp://127.0.0.1:*")
        self.address = self.sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self.seen: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self.sock.poll(20):
                continue
            message = _core.recv_message(self.sock, routed=True)
            self.seen.append(message.header.kind)
            answer = wire.Header(kind=wire.Kind.ERROR, request_id=message.header.request_id,
                                 status=12, flags=wire.Flags.NOT_PROCESSED,
                                 detail=f"unknown message kind {int(message.header.kind)}",
                                 service="old")
            _core.send_message(self.sock, answer, routing_id=message.routing_id)

    def __enter__(self) -> OldNode:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        self.sock.close(0)


def test_the_broker_can_subscribe_without_a_service(broker, registry_dir):
    """Without an attached Service the broker serves subscriptions from a
    service of its own, registered with the subscription's policy."""
    b = broker(insecure=True)
    got: list[bytes] = []
    options = SubscribeOptions(queue="g", max_deliveries=3, backoff=(0.5,), ack_wait=9.0)
    sub = b.subscribe(TOPIC, lambda d: (got.append(d.data), d.ack()), options)
    [record] = EmbeddedRegistry(str(registry_dir)).get("zmicro.topic." + TOPIC)
    [node] = record.nodes
    assert record.version == "g" and record.metadata == {"zmicro.kind": "topic"}
    assert node.metadata["service"].startswith("zmicro-events-")
    assert {k: node.metadata[k] for k in topic_node_metadata(options)} == \
        topic_node_metadata(options)
    data, event_id = frame(3, insecure=True)
    assert b.publish_wait(TOPIC, data, event_id=event_id, timeout=30).ok
    assert got == [data]
    assert sub.stats()["acked"] == 1 and sub.stats()["in_flight"] == 0
    sub.close()
    assert EmbeddedRegistry(str(registry_dir)).get("zmicro.topic." + TOPIC) == []


def test_two_publishers_numbering_alike_share_a_broker(broker):
    """Frames carry their publisher's request ids (each Publisher counts
    from 1): two events with one id to one node go one after the other,
    neither refused nor lost."""
    b = broker(insecure=True)
    held: list = []

    def on_delivery(d):  # the first is held until the test acks it
        held.append(d)
        if len(held) > 1:
            d.ack()

    sub = b.subscribe(TOPIC, on_delivery, SubscribeOptions(queue="g"))
    security = Security.resolve(insecure=True)
    first, second = (_core.encode_event(TOPIC, body, secrets=security.secrets, request_id=7)
                     for body in (b"one", b"two"))
    b.publish(TOPIC, first[0], event_id=first[1], timeout=30)
    eventually(lambda: len(held) == 1, "the first delivery held")
    b.publish(TOPIC, second[0], event_id=second[1], timeout=30)
    held[0].ack()
    eventually(lambda: sub.stats()["acked"] >= 2, "both acked")
    assert sorted(d.data for d in held) == sorted([first[0], second[0]])
    eventually(lambda: b.stats()["pending"] == 0)
    assert b.stats()["refusals"] == 0 and b.dead_letters() == []


def test_a_publisher_whose_key_the_subscriber_does_not_trust_is_refused(subs, registry_dir):
    """The subscriber's Curve allowlist on the embedded path: a publisher
    with a key of its own (another key store) is refused before any
    handler, by every member: the event is dead-lettered, never handled."""
    from zmicro.testing import temporary_keys

    sub = subs("--queue", "g")
    eventually(lambda: members(registry_dir, "g") == 1)
    with temporary_keys():
        b = EmbeddedBroker(EmbeddedRegistry(str(registry_dir)))
        try:
            data, event_id = frame(1)
            report = b.publish_wait(TOPIC, data, event_id=event_id, timeout=30)
            letters = b.dead_letters()
        finally:
            b.close(linger=0)
    assert report.groups["g"] != "acked"
    assert [d.queue for d in letters] == ["g"] and letters[0].deliveries == 0
    assert sub.handled() == []


def test_a_node_whose_key_may_not_subscribe_gets_nothing(registry_dir, tmp_path, caplog):
    """EmbeddedBroker(policy=): the rules decide ``subscribe`` for each
    member's key (its allowlist roles). Two members of one group, both
    trusted by the transport: the one whose key lacks the role never gets
    an event, the other gets them all; the denial is audited once for the
    node; once the permitted member left, the group dead-letters."""
    from zmicro.auth import Policy, Rule, topic_resource
    from zmicro.security import KeyStore
    from zmicro.security.keys import write_keypair
    from zmicro.testing import temporary_keys

    caplog.set_level(logging.DEBUG, logger="zmicro.audit")
    with temporary_keys() as home:
        frame(0)  # this store's identity (role "self") and MAC secrets, before the nodes
        other = write_keypair(tmp_path / "keys", "other")
        KeyStore(home).trust(other.public, name="other-node", roles={"guest"})
        allowed = Sub(registry_dir, tmp_path / "allowed", "--queue", "billing")
        denied = Sub(registry_dir, tmp_path / "denied", "--queue", "billing",
                     env={**os.environ, "ZMICRO_KEY": str(tmp_path / "keys" / "other.key_secret")})
        b = EmbeddedBroker(EmbeddedRegistry(str(registry_dir)), policy=Policy(
            rules=[Rule(topic_resource("order.*", "subscribe"), "self")]))
        try:
            eventually(lambda: members(registry_dir, "billing") == 2)
            publish_all(b, range(20))
            eventually(lambda: len(allowed.handled()) >= 20, "the permitted member got all")
            eventually(lambda: b.stats()["pending"] == 0)
            stats = b.stats()
            assert stats["acked"] == 20 and stats["denied"] >= 1 and b.dead_letters() == []
            assert stats["refusals"] == 0  # skipped, never sent
            allowed.stop()
            eventually(lambda: members(registry_dir, "billing") == 1)
            data, event_id = frame(99)
            report = b.publish_wait(TOPIC, data, event_id=event_id, timeout=30)
            letters = b.dead_letters()
        finally:
            b.close(linger=0)
            denied.stop()
    assert sorted(allowed.handled()) == list(range(20))
    assert denied.handled() == []
    assert report.groups == {"billing": "no permitted subscriber"}
    assert [(d.queue, d.reason, d.deliveries) for d in letters] == \
        [("billing", "no permitted subscriber", 0)]
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "zmicro.audit"]
    decisions = [(line["decision"], line["principal"]) for line in lines
                 if line.get("endpoint") == "subscribe"]
    assert decisions.count(("deny", "other-node")) == 1  # once per node, 21 events skipped it
    assert ("allow", "other-node") not in decisions
    assert any(d == "allow" for d, _ in decisions)


def test_publisher_policy_goes_to_its_default_broker(registry_dir):
    import zmicro
    from zmicro.auth import Rule, topic_resource
    from zmicro.broker.memory import MemoryBroker

    rules = [Rule(topic_resource("order.*", "subscribe"), "self")]
    with pytest.raises(ValueError, match="default"):
        zmicro.Publisher(MemoryBroker(), policy=rules)
    with pytest.raises(TypeError):
        EmbeddedBroker(EmbeddedRegistry(str(registry_dir)), policy=["billing:*"])
    pub = zmicro.Publisher(registry=EmbeddedRegistry(str(registry_dir)), policy=rules)
    try:
        assert isinstance(pub.broker, EmbeddedBroker)
        assert [r.resource for r in pub.broker._rules] == ["zmicro.topic.order.*:subscribe"]
    finally:
        pub.close()


def test_concurrent_publishers_never_get_more_than_max_pending_accepted(broker):
    """publish() hands events over without waiting for the engine's thread:
    what it counts against the outbox must still bound it, publishers on
    four threads at once included."""
    from zmicro.errors import Code, RPCError

    b = broker(insecure=True, max_pending=5)
    held: list = []
    b.subscribe(TOPIC, held.append, SubscribeOptions(queue="g", max_in_flight=100))
    outcomes: list[str] = []
    lock = threading.Lock()

    def publisher() -> None:
        for n in range(5):
            data, event_id = frame(n, insecure=True)
            try:
                b.publish(TOPIC, data, event_id=event_id, timeout=0.3)
                outcome = "accepted"
            except RPCError as exc:
                outcome = exc.code.name
            with lock:
                outcomes.append(outcome)

    threads = [threading.Thread(target=publisher) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert Counter(outcomes) == {"accepted": 5, Code.RESOURCE_EXHAUSTED.name: 15}
    eventually(lambda: len(held) == 5, "the five accepted are delivered")
    assert b.stats()["pending"] == 5 and b.stats()["published"] == 5
    for d in held:
        d.ack()
    eventually(lambda: b.stats()["pending"] == 0)


@pytest.mark.parametrize("topic, timeout", [
    ("order..created", 1.0), ("order.*", 1.0), (7, 1.0),           # topics
    (TOPIC, 0.0), (TOPIC, -1.0), (TOPIC, float("inf")), (TOPIC, float("nan")),
    (TOPIC, "5"), (TOPIC, None),                                   # timeouts
])
def test_a_started_broker_still_checks_topic_and_timeout(broker, topic, timeout):
    """The hand-over's fast test (a topic seen before, a float timeout)
    lets nothing bad through once the broker is started: ValueError."""
    b = broker(insecure=True)
    data, event_id = frame(0, insecure=True)
    b.publish(TOPIC, data, event_id=event_id, timeout=1.0)  # started; TOPIC seen
    with pytest.raises(ValueError):
        b.publish(topic, data, event_id=event_id, timeout=timeout)


def test_a_publish_waiting_for_room_is_woken_by_the_engine_each_time(broker, monkeypatch):
    """A publish() blocked on a full outbox is woken when the engine makes
    room (once per wait: Handover.room_called), not by its periodic look:
    with that look an hour apart, two waits in a row both end once the
    subscriber acks."""
    from zmicro.broker import embedded

    monkeypatch.setattr(embedded, "_ROOM_RECHECK", 3600.0)
    b = broker(insecure=True, max_pending=2)
    held: list = []
    b.subscribe(TOPIC, held.append, SubscribeOptions(queue="g", max_in_flight=100))
    numbers = itertools.count()

    def publish() -> None:
        data, event_id = frame(next(numbers), insecure=True)
        b.publish(TOPIC, data, event_id=event_id, timeout=60)

    for _ in range(2):  # the second wait must be woken too
        publish()
        publish()  # the outbox is full now
        eventually(lambda: len(held) >= 2, "both delivered")
        waiting = threading.Thread(target=publish)
        waiting.start()
        eventually(lambda: b._hand.room_waiters == 1, "the third publish waits")
        for d in held:
            d.ack()
        held.clear()
        waiting.join(30)
        assert not waiting.is_alive(), "a publish waiting for room was not woken"
        eventually(lambda: len(held) == 1, "the third delivered")
        held.pop().ack()
        eventually(lambda: b.stats()["pending"] == 0)
