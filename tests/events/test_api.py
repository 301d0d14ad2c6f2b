"""The events API: Publisher / AsyncPublisher, Service.subscriber, EventContext,
Nack / Reject, and the glue between a broker's deliveries and handlers
(zmicro/events.py), over the memory broker with a fake clock.

Time that matters (backoffs) is the broker's fake clock; MemoryBroker.tick()
returns once every delivery due was handed out, so "not yet" is a state.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable

import msgspec
import pytest
import zmq

import zmicro
from zmicro import Code, EventContext, Nack, Publisher, Reject, RPCError
from zmicro.auth import Policy, Rule, topic_resource
from zmicro.broker import TOPIC_PREFIX, SubscribeOptions
from zmicro.broker.memory import MemoryBroker
from zmicro.registry import MemoryRegistry

from ..helpers import eventually


class OrderCreated(msgspec.Struct):
    id: int
    note: str = ""


class Handled:
    """A handler that records (event, ctx), doing what `then` says first."""

    def __init__(self, then=None) -> None:
        self.then = then
        self.lock = threading.Lock()
        self.calls: list[tuple[object, EventContext]] = []

    def __call__(self, ev: OrderCreated, ctx: EventContext) -> None:
        with self.lock:
            self.calls.append((ev, ctx))
            n = len(self.calls)
        if self.then is not None:
            self.then(n)

    def __len__(self) -> int:
        with self.lock:
            return len(self.calls)

    def wait(self, n: int) -> list[tuple[object, EventContext]]:
        eventually(lambda: len(self) >= n, f"{n} handler calls")
        with self.lock:
            return list(self.calls)


@pytest.fixture
def mem(clock):
    broker = MemoryBroker(clock=clock)
    yield broker
    broker.close()


@pytest.fixture
def pub(mem, zmicro_keys):
    with Publisher(broker=mem) as publisher:
        yield publisher


def service(mem, name: str = "billing", **kw) -> zmicro.Service:
    return zmicro.Service(name, broker=mem, registry=kw.pop("registry", MemoryRegistry()), **kw)


def dead(mem, n: int = 1):
    return eventually(lambda: len(mem.dead_letters()) >= n and mem.dead_letters(),
                      f"{n} dead letters")


# -- the happy path -----------------------------------------------------------------


def test_handler_gets_typed_events_with_their_context(mem, pub, zmicro_serve):
    svc = service(mem)
    handled = Handled()
    svc.subscriber("order.created", queue="billing")(handled)
    zmicro_serve(svc)
    before = time.time()
    pub.publish("order.created", OrderCreated(id=1, note="hi"), metadata={"k": "v"})
    after = time.time()
    ((ev, ctx),) = handled.wait(1)
    assert ev == OrderCreated(id=1, note="hi")
    assert (ctx.topic, ctx.queue, ctx.deliveries) == ("order.created", "billing", 1)
    assert len(ctx.event_id) == 16
    assert before - 1 <= ctx.published_at <= after + 1   # (timestamps in microseconds)
    assert dict(ctx.metadata) == {"k": "v"}
    assert ctx.content_type == "application/msgpack" and ctx.signed
    assert ctx.user_id is None                        # memory proves nothing
    assert ctx.principal is not None and ctx.principal.key == pub._security.public_key
    assert (ctx.service, ctx.endpoint) == (TOPIC_PREFIX + "order.created", "publish")
    assert ctx.deadline is None and ctx.time_remaining() is None
    stats = eventually(lambda: (s := svc.stats()["subscriptions"]["order.created"])["acked"] and s,
                       "the ack counted")
    assert stats["acked"] == 1 and stats["broker"]["acked"] == 1
    assert mem.dead_letters() == []


def test_json_publisher_and_an_untyped_subscriber(mem, zmicro_keys, zmicro_serve):
    svc = service(mem)
    got = []
    svc.subscriber("order.created")(lambda ev, ctx: got.append((ev, ctx.content_type)))
    zmicro_serve(svc)
    with Publisher(broker=mem, content_type="application/json") as pub:
        pub.publish("order.created", {"id": 7, "tags": ["a"]})
    eventually(lambda: got, "the event")
    assert got == [({"id": 7, "tags": ["a"]}, "application/json")]


def test_async_subscriber(mem, pub, zmicro_serve):
    svc = service(mem)
    got = []

    @svc.subscriber("order.created")
    async def on_created(ev: OrderCreated, ctx: EventContext) -> None:
        await asyncio.sleep(0)
        got.append((ev.id, threading.current_thread().name))

    zmicro_serve(svc)
    pub.publish("order.created", OrderCreated(id=3))
    eventually(lambda: got, "the async handler")
    assert got[0][0] == 3


def test_async_publisher(mem, zmicro_keys, zmicro_serve):
    svc = service(mem)
    handled = Handled()
    svc.subscriber("order.created")(handled)
    zmicro_serve(svc)

    async def main() -> None:
        async with zmicro.AsyncPublisher(broker=mem) as apub:
            await apub.publish("order.created", OrderCreated(id=2))

    asyncio.run(main())
    assert handled.wait(1)[0][0] == OrderCreated(id=2)


def test_a_blocking_subscriber_runs_in_the_pool(mem, pub, zmicro_serve):
    svc = service(mem)
    names = []

    @svc.subscriber("order.created", blocking=True)
    def on_created(ev: OrderCreated, ctx: EventContext) -> None:
        names.append(threading.current_thread().name)

    zmicro_serve(svc)
    pub.publish("order.created", OrderCreated(id=1))
    eventually(lambda: names, "the handler")
    assert names[0].startswith("zmicro-billing-events")


def test_a_service_may_have_only_subscribers(mem, pub, zmicro_serve):
    svc = service(mem)
    handled = Handled()
    svc.subscriber("order.created")(handled)
    served = zmicro_serve(svc)
    assert svc.endpoints == [] and svc.topics == ["order.created"]
    # ...and still answers its health checks.
    assert served.client.call("billing", "zmicro.Health.Check", None)["status"] == "SERVING"


def test_queue_groups_across_services(mem, pub, zmicro_serve):
    registry = MemoryRegistry()
    one, two, audit = Handled(), Handled(), Handled()
    for handler, name, queue in ((one, "billing", "billing"), (two, "billing", "billing"),
                                 (audit, "audit", None)):
        svc = service(mem, name, registry=registry)
        svc.subscriber("order.created", queue=queue)(handler)
        zmicro_serve(svc)
    for i in range(20):
        pub.publish("order.created", OrderCreated(id=i))
    eventually(lambda: len(one) + len(two) == 20 and len(audit) == 20, "every delivery")
    billing = sorted(ev.id for ev, _ in one.calls + two.calls)
    assert billing == list(range(20))                          # once per group
    assert sorted(ev.id for ev, _ in audit.calls) == list(range(20))
    assert len(one) and len(two)                                # both members worked


# -- nack, reject, exceptions ----------------------------------------------------------


def test_nack_redelivers_after_its_delay(mem, pub, clock, zmicro_serve):
    svc = service(mem)

    def first_time(n: int) -> None:
        if n == 1:
            raise Nack(delay=5.0)

    handled = Handled(first_time)
    svc.subscriber("order.created", backoff=(100.0,))(handled)
    zmicro_serve(svc)
    pub.publish("order.created", OrderCreated(id=1))
    handled.wait(1)
    eventually(lambda: svc.stats()["subscriptions"]["order.created"]["nacked"], "the nack")
    clock.advance(4.9)
    mem.tick()
    assert len(handled) == 1
    clock.advance(0.2)
    mem.tick()
    (_, first), (ev, second) = handled.wait(2)
    assert ev == OrderCreated(id=1)
    assert second.event_id == first.event_id and second.deliveries == 2
    eventually(lambda: svc.stats()["subscriptions"]["order.created"]["acked"], "the ack")


def test_reject_dead_letters_at_once(mem, pub, clock, zmicro_serve):
    svc = service(mem)

    def refuse(n: int) -> None:
        raise Reject("no such customer")

    handled = Handled(refuse)
    svc.subscriber("order.created", queue="billing")(handled)
    zmicro_serve(svc)
    pub.publish("order.created", OrderCreated(id=1))
    (letter,) = dead(mem)
    assert (letter.topic, letter.queue, letter.reason) == ("order.created", "billing",
                                                           "no such customer")
    clock.advance(3600)
    mem.tick()
    assert len(handled) == 1


def test_an_exception_is_logged_and_retried_with_the_backoff(mem, pub, clock, zmicro_serve,
                                                              caplog):
    svc = service(mem)

    def boom(n: int) -> None:
        raise ValueError("boom")

    handled = Handled(boom)
    svc.subscriber("order.created", backoff=(1.0,), max_deliveries=2)(handled)
    zmicro_serve(svc)
    with caplog.at_level(logging.ERROR, logger="zmicro.events"):
        pub.publish("order.created", OrderCreated(id=1))
        (_, ctx), = handled.wait(1)
        eventually(lambda: svc.stats()["subscriptions"]["order.created"]["failed"], "a failure")
        clock.advance(0.9)
        mem.tick()
        assert len(handled) == 1
        clock.advance(0.2)
        mem.tick()
        handled.wait(2)
        (letter,) = dead(mem)
    assert "max_deliveries" in letter.reason
    records = [r for r in caplog.records if r.name == "zmicro.events"]
    assert len(records) == 2
    text = caplog.text
    assert "order.created" in text and ctx.event_id.hex() in text and "ValueError: boom" in text
    # The frame (its MAC included) is never logged.
    assert letter.data.hex() not in text and repr(letter.data)[2:40] not in text


@pytest.mark.parametrize("code, terminal", [(Code.FAILED_PRECONDITION, True),
                                            (Code.PERMISSION_DENIED, True),
                                            (Code.UNAVAILABLE, False),
                                            (Code.RESOURCE_EXHAUSTED, False)])
def test_rpc_errors_end_by_their_code(mem, pub, clock, zmicro_serve, code, terminal):
    svc = service(mem)

    def fail(n: int) -> None:
        if n == 1:
            raise RPCError(code, "said the handler")

    handled = Handled(fail)
    svc.subscriber("order.created", backoff=(1.0,))(handled)
    zmicro_serve(svc)
    pub.publish("order.created", OrderCreated(id=1))
    handled.wait(1)
    if terminal:
        (letter,) = dead(mem)
        assert letter.reason == f"{code.name}: said the handler"
    else:
        eventually(lambda: svc.stats()["subscriptions"]["order.created"]["failed"], "a retry")
        clock.advance(1.0)
        mem.tick()
        handled.wait(2)
        assert mem.dead_letters() == []


def test_an_undecodable_event_is_dead_lettered(mem, pub, zmicro_serve):
    svc = service(mem)
    handled = Handled()
    svc.subscriber("order.created")(handled)
    zmicro_serve(svc)
    pub.publish("order.created", {"id": "not a number"})
    (letter,) = dead(mem)
    assert letter.reason.startswith("undecodable: ") and "$.id" in letter.reason
    assert len(handled) == 0
    assert svc.stats()["subscriptions"]["order.created"]["undecodable"] == 1


# -- security ----------------------------------------------------------------------------


def test_rbac_rules_on_the_topic_decide_who_may_publish(mem, pub, zmicro_serve):
    deny = service(mem, "billing", policy=Policy(
        rules=[Rule(topic_resource("order.*", "publish"), "billing-admin")]))
    allow = service(mem, "shipping", policy=Policy(
        rules=[Rule(topic_resource("order.*", "publish"), "self")]))   # the key's own role
    denied, allowed = Handled(), Handled()
    deny.subscriber("order.created", queue="billing")(denied)
    allow.subscriber("order.created", queue="shipping")(allowed)
    zmicro_serve(deny)
    zmicro_serve(allow)
    pub.publish("order.created", OrderCreated(id=1))
    allowed.wait(1)
    (letter,) = dead(mem)
    assert (letter.queue, letter.reason) == ("billing", "PERMISSION_DENIED: permission denied")
    assert len(denied) == 0


class TransportKeyBroker(MemoryBroker):
    """Deliveries say they came over a connection authenticated as `key`
    (what the embedded broker's deliveries carry: the Curve User-Id)."""

    def __init__(self, key: str | None, **kw) -> None:
        super().__init__(**kw)
        self.key = key

    def subscribe(self, topic, on_delivery, options=SubscribeOptions()):
        def with_key(delivery):
            delivery.user_id = self.key
            on_delivery(delivery)

        return super().subscribe(topic, with_key, options)


@pytest.mark.parametrize("transport", ["admin", "stranger"])
def test_rules_see_the_transport_key_before_the_signed_principal(zmicro_keys, zmicro_serve,
                                                                 transport):
    admin_key, _ = zmq.curve_keypair()
    stranger_key, _ = zmq.curve_keypair()
    store = zmicro.security.KeyStore(zmicro_keys)
    store.trust(admin_key.decode(), name="admin-node", roles={"admin"})
    key = (admin_key if transport == "admin" else stranger_key).decode()
    broker = TransportKeyBroker(key)
    try:
        # The publisher's own key (role "self", its signed principal) may
        # publish too: only the transport key decides.
        svc = service(broker, policy=Policy(rules=[
            Rule(topic_resource("order.*", "publish"), ["admin", "self"])]))
        handled = Handled()
        svc.subscriber("order.created")(handled)
        zmicro_serve(svc)
        eventually(lambda: "admin" in svc._security.principal_for(admin_key.decode()).roles,
                   "the trusted admin key")
        with Publisher(broker=broker) as pub:
            pub.publish("order.created", OrderCreated(id=1))
        if transport == "admin":
            ((_, ctx),) = handled.wait(1)
            assert ctx.user_id == key and ctx.principal.name == "admin-node"
        else:
            (letter,) = dead(broker)
            assert letter.reason == "UNAUTHENTICATED: authentication required"
            assert len(handled) == 0
    finally:
        broker.close()


def test_an_insecure_subscriber_accepts_unsigned_events(mem, zmicro_serve):
    svc = service(mem, insecure=True)
    handled = Handled()
    svc.subscriber("order.created")(handled)
    zmicro_serve(svc)
    with Publisher(broker=mem, insecure=True) as pub:
        pub.publish("order.created", OrderCreated(id=1))
    ((ev, ctx),) = handled.wait(1)
    assert ev == OrderCreated(id=1)
    assert not ctx.signed and ctx.principal is None


def test_a_secure_subscriber_refuses_unsigned_events(mem, zmicro_keys, zmicro_serve):
    svc = service(mem)
    handled = Handled()
    svc.subscriber("order.created")(handled)
    zmicro_serve(svc)
    with Publisher(broker=mem, insecure=True) as pub:
        pub.publish("order.created", OrderCreated(id=1))
    (letter,) = dead(mem)
    assert letter.reason == "unsigned"
    assert len(handled) == 0
    assert svc.stats()["subscriptions"]["order.created"]["refused"] == 1


# -- trace context ----------------------------------------------------------------------


def test_events_published_in_a_handler_carry_its_trace(mem, zmicro_serve):
    svc = service(mem, "front", insecure=True)
    pub = Publisher(broker=mem, insecure=True)
    handled = Handled()
    svc.subscriber("order.created")(handled)

    @svc.handler("Front.Order")
    def order(req, ctx):
        pub.publish("order.created", OrderCreated(id=9))
        return None

    served = zmicro_serve(svc)
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(served.address)
        trace = (0x1234 << 64) | 0x5678
        zmicro.send_message(sock, zmicro.Header(
            kind=zmicro.Kind.REQUEST, request_id=1, service="front", endpoint="Front.Order",
            content_type="application/msgpack", trace_id=trace, span_id=42),
            [msgspec.msgpack.encode(None)])
        reply = zmicro.recv_message(sock, timeout=30)
        assert reply.header.status == 0
    finally:
        sock.close()
        pub.close()
    ((_, ev_ctx),) = handled.wait(1)
    assert (ev_ctx.trace_id, ev_ctx.span_id) == (trace, 42)


def test_outside_a_handler_there_is_no_trace(mem, zmicro_serve):
    svc = service(mem, insecure=True)
    handled = Handled()
    svc.subscriber("order.created")(handled)
    zmicro_serve(svc)
    with Publisher(broker=mem, insecure=True) as pub:
        pub.publish("order.created", OrderCreated(id=1))
    ((_, ctx),) = handled.wait(1)
    assert (ctx.trace_id, ctx.span_id) == (0, 0)


# -- lifecycle and registry ----------------------------------------------------------------


class RegisteringBroker(MemoryBroker):
    """A broker that finds subscribers through the registry (as the embedded
    one), and wants each subscription's policy in its record."""

    registers_topics = True

    @staticmethod
    def topic_node_metadata(options):
        return {"test.max_deliveries": str(options.max_deliveries)}


def test_topic_records_follow_the_service(zmicro_keys, zmicro_serve):
    registry = MemoryRegistry()
    broker = RegisteringBroker()
    try:
        svc = zmicro.Service("billing", broker=broker, registry=registry)
        svc.subscriber("order.created", queue="billing", max_deliveries=7)(Handled())
        svc.subscriber("order.paid")(Handled())
        with zmicro.testing.serving(svc):
            (created,) = registry.get(TOPIC_PREFIX + "order.created")
            (paid,) = registry.get(TOPIC_PREFIX + "order.paid")
            assert (created.version, paid.version) == ("billing", "")
            assert created.metadata == {"zmicro.kind": "topic"} and created.endpoints == ()
            (node,) = created.nodes
            assert node.id == svc._node_id and node.address == svc.address
            assert node.metadata == {"service": "billing", "health": "serving",
                                     "test.max_deliveries": "7"}
            assert node.public_key == svc._security.public_key
            svc.set_serving(False)
            eventually(lambda: registry.get(TOPIC_PREFIX + "order.paid")[0].nodes[0]
                       .metadata["health"] == "not_serving", "the topic record follows health")
        assert registry.get(TOPIC_PREFIX + "order.created") == []
        assert registry.get(TOPIC_PREFIX + "order.paid") == []
    finally:
        broker.close()


def test_no_topic_records_for_a_broker_that_does_not_use_them(mem, zmicro_keys, zmicro_serve):
    registry = MemoryRegistry()
    svc = service(mem, registry=registry)
    svc.subscriber("order.created")(Handled())
    zmicro_serve(svc)
    assert [r.name for r in registry.list()] == ["billing"]


def test_stop_lets_running_handlers_finish_and_ack(mem, pub, zmicro_keys):
    registry = MemoryRegistry()
    gate = threading.Event()
    svc = service(mem, registry=registry)
    handled = Handled(lambda n: gate.wait(30))
    svc.subscriber("order.created", queue="billing", blocking=True)(handled)
    other = Handled()
    late = service(mem, "late", registry=registry)
    late.subscriber("order.created", queue="billing")(other)
    with zmicro.testing.serving(svc):
        pub.publish("order.created", OrderCreated(id=1))
        handled.wait(1)                    # running, held at the gate
        with zmicro.testing.serving(late):
            svc.stop()                     # returns at once; the drain goes on
            pub.publish("order.created", OrderCreated(id=2))
            gate.set()
            eventually(lambda: svc.address is None, "the first service stopped")
            other.wait(1)
            mem.tick()
            # 1 was acked by the draining service, so never handed to the
            # other member; 2 came while it drained and went to the other.
            assert [ev.id for ev, _ in other.calls] == [2]
    assert [ev.id for ev, _ in handled.calls] == [1]
    assert mem.dead_letters() == []


# -- validation -----------------------------------------------------------------------------


def test_subscriber_validation(mem, zmicro_keys):
    svc = service(mem)
    for bad in ("", "a..b", "a.*", "a b", None):
        with pytest.raises(ValueError):
            svc.subscriber(bad)
    with pytest.raises(ValueError):
        svc.subscriber("t", max_in_flight=0)
    with pytest.raises(ValueError):
        svc.subscriber("t", backoff=())
    with pytest.raises(ValueError):
        svc.subscriber("t", queue="a b")
    for max_age in (0, -1, float("nan"), float("inf")):
        with pytest.raises(ValueError):
            svc.subscriber("t", max_age=max_age)
    svc.subscriber("order.created")(Handled())
    with pytest.raises(ValueError, match="subscribes to it already"):
        svc.subscriber("order.created", queue="other")(Handled())

    async def handler(ev, ctx):
        pass

    with pytest.raises(ValueError, match="async"):
        svc.subscriber("order.paid", blocking=True)(handler)


def test_subscribers_are_added_before_start(mem, zmicro_keys, zmicro_serve):
    svc = service(mem)
    svc.subscriber("order.created")(Handled())
    zmicro_serve(svc)
    with pytest.raises(RuntimeError):
        svc.subscriber("order.paid")(Handled())


def test_service_names_under_zmicro_are_reserved():
    for name in ("zmicro.topic.order.created", "zmicro.x"):
        with pytest.raises(ValueError, match="reserved"):
            zmicro.Service(name, insecure=True)


def test_publisher_refuses_what_it_cannot_send(mem, pub):
    with pytest.raises(ValueError):
        pub.publish("a..b", OrderCreated(id=1))
    with pytest.raises(ValueError):
        Publisher(broker=mem, content_type="text/x-unknown")
    with pytest.raises(ValueError):
        Publisher(broker=mem, timeout=0)
    with pytest.raises(TypeError):
        pub.publish("order.created", object())        # the codec cannot encode it
    pub.close()
    pub.close()
    with pytest.raises(RuntimeError):
        pub.publish("order.created", OrderCreated(id=1))


def test_nack_and_reject_arguments():
    assert Nack().delay is None and Nack(2).delay == 2.0
    for bad in (-1, float("nan"), "1"):
        with pytest.raises(ValueError):
            Nack(bad)
    assert Reject("why").reason == "why" and str(Reject("why")) == "why"


def test_topic_resource():
    assert topic_resource("order.*", "publish") == "zmicro.topic.order.*:publish"
    assert topic_resource("a", "subscribe").startswith(TOPIC_PREFIX)
    for topic, action in (("a", "read"), ("", "publish"), ("a:b", "publish")):
        with pytest.raises(ValueError):
            topic_resource(topic, action)
    Rule(topic_resource("order.*", "publish"), "orders")   # a valid rule resource


def test_an_inline_handler_calling_its_own_service_fails_fast(zmicro_keys, tmp_path):
    """On the embedded broker a sync subscriber runs on the thread that
    serves its service, as an inline call handler does: a sync call from it
    back to that service could never be answered, so it fails at once
    (FAILED_PRECONDITION), as from a call's handler; a blocking subscriber
    (the pool) makes the same call."""
    from zmicro.broker.embedded import EmbeddedBroker
    from zmicro.registry import EmbeddedRegistry

    registry = EmbeddedRegistry(str(tmp_path / "registry"))
    svc = zmicro.Service("selfish", registry=registry)
    client = zmicro.Client(registry=registry, timeout=10)
    outcomes: dict[str, object] = {}
    done = threading.Event()

    @svc.handler("S.Echo")
    def echo(req: int, ctx: zmicro.Context) -> int:
        return req

    def calls_itself(name: str) -> Callable[[OrderCreated, EventContext], None]:
        def handler(ev: OrderCreated, ctx: EventContext) -> None:
            try:
                outcomes[name] = client.call("selfish", "S.Echo", ev.id)
            except RPCError as exc:
                outcomes[name] = exc
            if len(outcomes) == 2:
                done.set()
        return handler

    svc.subscriber("order.created")(calls_itself("inline"))
    svc.subscriber("order.paid", blocking=True)(calls_itself("pool"))
    broker = EmbeddedBroker(registry)
    try:
        with zmicro.testing.serving(svc):
            with Publisher(broker=broker) as pub:
                eventually(lambda: all(registry.get(TOPIC_PREFIX + t)
                                       for t in ("order.created", "order.paid")),
                           "both topics registered")
                pub.publish("order.created", OrderCreated(id=5))
                pub.publish("order.paid", OrderCreated(id=5))
                assert done.wait(30), outcomes
    finally:
        client.close()
        broker.close(linger=0)
    inline = outcomes["inline"]
    assert isinstance(inline, RPCError) and inline.code == Code.FAILED_PRECONDITION, inline
    assert "calls its own service" in inline.detail
    assert outcomes["pool"] == 5
