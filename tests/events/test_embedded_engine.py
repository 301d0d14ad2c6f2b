"""The embedded publisher's delivery engine, without sockets.

The engine (zmicro.broker.embedded.DeliveryEngine) gets a fake transport
(`Net`: per address, what the subscriber answers) and a FakeClock: backoffs
only pass when the test moves the clock (and pokes the engine), so "nothing
is sent before the backoff" is checked without timing anything. The same
engine runs over AsyncClient._deliver in EmbeddedBroker (test_embedded.py).
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers import FakeClock, eventually_async
from zmicro.broker import SubscribeOptions
from zmicro.broker.embedded import DeliveryEngine, topic_node_metadata
from zmicro import wire
from zmicro.errors import Code, RPCError, WireError
from zmicro.registry import Node, ServiceRecord

TOPIC = "order.created"


def record(group: str, *addresses: str, not_serving: tuple[str, ...] = (),
           options: SubscribeOptions | None = None) -> ServiceRecord:
    policy = topic_node_metadata(options) if options is not None else {}
    return ServiceRecord(
        name="zmicro.topic." + TOPIC, version=group, metadata={"zmicro.kind": "topic"},
        nodes=tuple(Node(id=f"n-{a}", address=a,
                         metadata={"health": "not_serving" if a in not_serving else "serving",
                                   **policy})
                    for a in addresses))


def refusal(code: Code, *, processed: bool | None, retry_after: float | None = None) -> RPCError:
    exc = RPCError(code, "test", processed=processed)
    exc.retry_after = retry_after  # as AsyncClient._deliver sets it
    return exc


class Net:
    """The fake transport: `answers[address]` is a callable returning None
    (ack) or an exception to raise, or an awaitable to wait for first."""

    def __init__(self) -> None:
        self.records: list[ServiceRecord] = []
        self.answers: dict[str, Callable[[bytes], object]] = {}
        self.sent: list[tuple[str, bytes]] = []           # (address, event id)
        self.timeouts: set[float] = set()
        self.lookups = 0

    async def send(self, address: str, frame: bytes, event_id: bytes, topic: str,
                   timeout: float) -> None:
        assert topic == TOPIC and frame == b"frame-" + event_id
        self.sent.append((address, event_id))
        self.timeouts.add(timeout)
        answer = self.answers.get(address, lambda e: None)(event_id)
        while isinstance(answer, asyncio.Future):
            answer = await answer
        if isinstance(answer, BaseException):
            raise answer

    async def lookup(self, topic: str) -> list[ServiceRecord]:
        assert topic == "order.created"
        self.lookups += 1
        await asyncio.sleep(0)  # a registry read takes a while: others wait meanwhile
        return list(self.records)

    def to(self, address: str) -> list[bytes]:
        return [e for a, e in self.sent if a == address]


def counting(engine: DeliveryEngine, *methods: str) -> list[int]:
    """Count the calls to the engine's Python `methods` (sync or async),
    summed (the core's fast path counts its own: n_credit_looks, n_pumps)."""
    calls = [0]
    for name in methods:
        method = getattr(engine, name)
        if asyncio.iscoroutinefunction(method):
            async def counted(*args, _method=method, **kwargs):
                calls[0] += 1
                return await _method(*args, **kwargs)
        else:
            def counted(*args, _method=method, **kwargs):
                calls[0] += 1
                return _method(*args, **kwargs)
        setattr(engine, name, counted)
    return calls


def holding(net: Net, *addresses: str) -> dict[str, list[asyncio.Future]]:
    """Make each of `addresses` hold every delivery until the test answers
    it: returns, per address, the futures of the deliveries sent there (set
    a result to ack one). Call on the loop."""
    loop = asyncio.get_running_loop()
    held: dict[str, list[asyncio.Future]] = {a: [] for a in addresses}

    def hold(address: str) -> Callable[[bytes], object]:
        def answer(event_id: bytes) -> asyncio.Future:
            held[address].append(loop.create_future())
            return held[address][-1]
        return answer

    for address in addresses:
        net.answers[address] = hold(address)
    return held


def engine_for(net: Net, clock: FakeClock, **options) -> DeliveryEngine:
    options.setdefault("backoff", (1.0, 10.0))
    return DeliveryEngine(send=net.send, lookup=net.lookup, clock=clock, **options)


async def publish(engine: DeliveryEngine, n: int, *, wait: bool = False, timeout: float = 5.0):
    reports = []
    for i in range(n):
        eid = i.to_bytes(16, "big")
        reports.append(await engine.put(TOPIC, b"frame-" + eid, eid, timeout=timeout, wait=wait))
    return reports


async def settle() -> None:
    """Let every runnable task run (no real time passes for the engine)."""
    for _ in range(50):
        await asyncio.sleep(0)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


def test_every_group_gets_every_event_and_the_balancer_spreads_a_group():
    async def main():
        net, clock = Net(), FakeClock()
        net.records = [record("billing", "b1", "b2"), record("audit", "a1")]
        engine = engine_for(net, clock)
        reports = await publish(engine, 10, wait=True)
        assert all(r.ok and set(r.groups) == {"billing", "audit"} for r in reports)
        ids = [i.to_bytes(16, "big") for i in range(10)]
        assert sorted(net.to("b1") + net.to("b2")) == ids  # each once in the group
        assert net.to("b1") and net.to("b2")               # round robin spreads
        assert net.to("a1") == ids
        assert net.timeouts == {engine.ack_timeout}
        assert engine.pending == 0
        assert engine.counters.snapshot()["acked"] == 20
    run(main())


def test_events_waiting_for_the_first_registry_read_wait_in_one_task_in_order():
    """A publisher faster than the first registry read of a topic: what it
    publishes meanwhile waits behind one router task (not a task per
    event), and goes out in publish order once the members are known."""
    async def main():
        net, clock = Net(), FakeClock()
        net.records = [record("g", "m1", options=SubscribeOptions(max_in_flight=1))]
        read = asyncio.get_running_loop().create_future()
        lookup = net.lookup

        async def slow_lookup(topic: str):
            await read
            return await lookup(topic)

        engine = DeliveryEngine(send=net.send, lookup=slow_lookup, clock=clock)
        await publish(engine, 200)
        await settle()
        assert len(engine._tasks) == 1 and not net.sent
        read.set_result(None)
        await eventually_async(lambda: engine.pending == 0)
        assert [e for _, e in net.sent] == [i.to_bytes(16, "big") for i in range(200)]
    run(main())


def test_a_burst_of_events_reads_the_registry_once():
    async def main():
        net, clock = Net(), FakeClock()
        net.records = [record("g", "m1")]
        engine = engine_for(net, clock)
        await publish(engine, 50)
        await eventually_async(lambda: engine.pending == 0)
        assert net.lookups == 1 and len(net.sent) == 50
    run(main())


def test_not_processed_tries_the_next_member_at_once_then_backs_off():
    async def main():
        net, clock = Net(), FakeClock()
        net.records = [record("g", "m1", "m2")]
        net.answers["m1"] = lambda e: refusal(Code.RESOURCE_EXHAUSTED, processed=False)
        net.answers["m2"] = lambda e: refusal(Code.UNAVAILABLE, processed=False)
        engine = engine_for(net, clock)
        await publish(engine, 1)
        await eventually_async(lambda: len(net.sent) == 2, "both members tried")
        await settle()
        assert sorted(a for a, _ in net.sent) == ["m1", "m2"]  # no spin before the backoff
        net.answers["m1"] = lambda e: None
        net.answers["m2"] = lambda e: None
        clock.advance(1.0)  # backoff[0]
        engine.poke()
        await eventually_async(lambda: engine.pending == 0, "acked after the backoff")
        assert len(net.sent) == 3
        stats = engine.counters.snapshot()
        assert stats["refusals"] == 2 and stats["deliveries"] == 0 and stats["acked"] == 1
    run(main())


@pytest.mark.parametrize("unsent", [False, True], ids=["answered", "never_sent"])
def test_only_a_members_own_unavailable_retires_it(unsent):
    """UNAVAILABLE, not processed, answered by the member (draining, not
    subscribed any more) takes it out of the group's picks at once. The
    same code raised here, for a frame that never reached it (a secure
    handshake that timed out on a loaded machine, ``_unsent``), is a failed
    try for that event only: the member keeps getting the next events."""
    async def main():
        net, clock = Net(), FakeClock()
        net.records = [record("g", "m1", "m2")]
        refused: list[str] = []

        def once(address: str) -> Callable[[bytes], object]:
            def answer(event_id: bytes) -> object:
                if refused:
                    return None
                refused.append(address)  # the first member tried refuses once
                exc = refusal(Code.UNAVAILABLE, processed=False)
                if unsent:
                    exc._unsent = True  # as the core's unsent() marks it
                return exc
            return answer

        net.answers = {a: once(a) for a in ("m1", "m2")}
        engine = engine_for(net, clock, selector="round_robin")
        await publish(engine, 1)
        await eventually_async(lambda: engine.pending == 0)
        first = refused[0]
        other = "m2" if first == "m1" else "m1"
        assert [a for a, _ in net.sent] == [first, other]
        await publish(engine, 4)
        await eventually_async(lambda: engine.pending == 0)
        later = [a for a, _ in net.sent[2:]]
        if unsent:
            assert later.count(first) == 2, later
        else:
            assert later == [other] * 4, later
    run(main())


def test_a_processed_failure_backs_off_then_goes_to_any_member():
    async def main():
        net, clock = Net(), FakeClock()
        net.records = [record("g", "m1")]
        net.answers["m1"] = lambda e: refusal(Code.UNAVAILABLE, processed=True)
        engine = engine_for(net, clock)
        await publish(engine, 1)
        await eventually_async(lambda: len(net.sent) == 1)
        await settle()
        assert len(net.sent) == 1
        clock.advance(0.9)
        engine.poke()
        await settle()
        assert len(net.sent) == 1  # backoff[0] is 1 s
        clock.advance(0.1)
        engine.poke()
        await eventually_async(lambda: len(net.sent) == 2, "redelivered after the backoff")
        clock.advance(1.0)
        engine.poke()
        await settle()
        assert len(net.sent) == 2  # the second wait is backoff[1], 10 s
        net.answers["m1"] = lambda e: None
        clock.advance(9.0)
        engine.poke()
        await eventually_async(lambda: engine.pending == 0)
        assert engine.counters.snapshot()["deliveries"] == 2
        assert not engine._dead
    run(main())


def test_the_subscribers_retry_after_replaces_the_backoff():
    async def main():
        net, clock = Net(), FakeClock()
        net.records = [record("g", "m1")]
        net.answers["m1"] = lambda e: refusal(Code.UNAVAILABLE, processed=True, retry_after=7.0)
        engine = engine_for(net, clock)
        await publish(engine, 1)
        await eventually_async(lambda: len(net.sent) == 1)
        clock.advance(6.5)
        engine.poke()
        await settle()
        assert len(net.sent) == 1
        net.answers["m1"] = lambda e: None
        clock.advance(0.5)
        engine.poke()
        await eventually_async(lambda: engine.pending == 0)
        assert len(net.sent) == 2
    run(main())


def test_max_deliveries_dead_letters_and_keeps_the_frame():
    async def main():
        net, clock = Net(), FakeClock()
        net.records = [record("g", "m1", "m2")]
        for a in ("m1", "m2"):
            net.answers[a] = lambda e: refusal(Code.DEADLINE_EXCEEDED, processed=None)
        letters = []
        engine = engine_for(net, clock, max_deliveries=3, backoff=(0.0,),
                            on_dead_letter=letters.append)
        [report] = await publish(engine, 1, wait=True)
        assert len(net.sent) == 3
        assert report.groups["g"].startswith("max_deliveries (3): DEADLINE_EXCEEDED")
        [letter] = letters
        assert list(engine._dead) == letters
        assert letter.queue == "g" and letter.topic == TOPIC and letter.deliveries == 3
        assert letter.data == b"frame-" + (0).to_bytes(16, "big")
        assert engine.counters.snapshot()["dead_letters"] == 1
    run(main())


def test_the_subscriber_record_sets_max_deliveries_backoff_and_ack_wait():
    async def main():
        net, clock = Net(), FakeClock()
        options = SubscribeOptions(max_deliveries=2, backoff=(3.0,), ack_wait=7.5)
        net.records = [record("g", "m1", options=options)]
        net.answers["m1"] = lambda e: refusal(Code.UNAVAILABLE, processed=True)
        engine = engine_for(net, clock, max_deliveries=9, backoff=(1.0,), ack_timeout=1.0)
        done = asyncio.ensure_future(publish(engine, 1, wait=True))
        await eventually_async(lambda: len(net.sent) == 1)
        await advance(engine, clock, 2.0)
        assert len(net.sent) == 1  # its backoff, 3 s, not the publisher's 1 s
        await advance(engine, clock, 1.0)
        [report] = await done
        assert len(net.sent) == 2 and report.groups["g"].startswith("max_deliveries (2)")
        assert net.timeouts == {7.5}
    run(main())


@pytest.mark.parametrize("code", [Code.INVALID_ARGUMENT, Code.PERMISSION_DENIED,
                                  Code.UNAUTHENTICATED, Code.FAILED_PRECONDITION,
                                  Code.UNIMPLEMENTED])
def test_a_terminal_answer_from_the_handler_side_dead_letters_at_once(code):
    async def main():
        net, clock = Net(), FakeClock()
        net.records = [record("g", "m1", "m2")]
        for a in ("m1", "m2"):
            net.answers[a] = lambda e: refusal(code, processed=True)
        engine = engine_for(net, clock)
        [report] = await publish(engine, 1, wait=True)
        assert len(net.sent) == 1
        assert report.groups["g"] == "test"  # the subscriber's reason (its term(reason))
    run(main())


def test_a_transport_failure_that_is_not_an_rpc_error_moves_on_to_another_member():
    async def main():
        net, clock = Net(), FakeClock()
        net.records = [record("g", "broken", "fine")]
        net.answers["broken"] = lambda e: ValueError("a bug below the engine")
        engine = engine_for(net, clock)
        reports = await publish(engine, 4, wait=True)
        assert all(r.ok for r in reports) and len(net.to("fine")) == 4
    run(main())


def test_an_old_member_answering_unimplemented_is_skipped_for_another():
    async def main():
        net, clock = Net(), FakeClock()
        net.records = [record("g", "old", "new")]
        net.answers["old"] = lambda e: refusal(Code.UNIMPLEMENTED, processed=False)
        engine = engine_for(net, clock)
        reports = await publish(engine, 6, wait=True)
        assert all(r.ok for r in reports)
        assert len(net.to("new")) == 6
        # Once an event met the old node it never goes back there; every
        # event tried it at most once.
        assert len(net.to("old")) == len(set(net.to("old"))) <= 6
    run(main())


def test_unimplemented_from_every_member_dead_letters():
    async def main():
        net, clock = Net(), FakeClock()
        net.records = [record("g", "o1", "o2")]
        for a in ("o1", "o2"):
            net.answers[a] = lambda e: refusal(Code.UNIMPLEMENTED, processed=False)
        engine = engine_for(net, clock)
        [report] = await publish(engine, 1, wait=True)
        assert sorted(a for a, _ in net.sent) == ["o1", "o2"]
        assert report.groups["g"] == "test"  # the refusal's detail
        assert engine._dead[0].deliveries == 0
    run(main())


def test_a_member_that_dies_holding_the_event_is_replaced():
    async def main():
        net, clock = Net(), FakeClock()
        net.records = [record("g", "dies", "lives")]
        lost = asyncio.get_running_loop().create_future()
        net.answers["dies"] = lambda e: lost
        engine = engine_for(net, clock, selector="round_robin")
        done = asyncio.ensure_future(publish(engine, 2, wait=True))
        await eventually_async(lambda: net.to("dies"), "one event held by the member")
        held = net.to("dies")[0]
        # The connection drops: the transport says "maybe processed".
        lost.set_result(refusal(Code.UNAVAILABLE, processed=None))
        net.answers["dies"] = lambda e: refusal(Code.UNAVAILABLE, processed=False)
        await advance(engine, clock, 1.0)  # the backoff after a maybe-processed send
        reports = await done
        assert all(r.ok for r in reports)
        assert held in net.to("lives")
    run(main())


def test_the_outbox_is_bounded_publish_blocks_then_resource_exhausted():
    async def main():
        net, clock = Net(), FakeClock()
        net.records = [record("g", "m1")]
        gate = asyncio.get_running_loop().create_future()
        net.answers["m1"] = lambda e: gate
        engine = engine_for(net, clock, max_pending=2)
        await publish(engine, 2)
        assert engine.pending == 2
        with pytest.raises(RPCError) as info:
            await engine.put(TOPIC, b"frame-" + b"x" * 16, b"x" * 16, timeout=0.05)
        assert info.value.code is Code.RESOURCE_EXHAUSTED and info.value.processed is False
        blocked = asyncio.ensure_future(
            engine.put(TOPIC, b"frame-" + b"y" * 16, b"y" * 16, timeout=30))
        await settle()
        assert not blocked.done()  # waiting for room
        gate.set_result(None)     # the subscriber acks: room is made
        await blocked
        await eventually_async(lambda: engine.pending == 0)
        assert b"y" * 16 in net.to("m1") and b"x" * 16 not in net.to("m1")
    run(main())


def test_no_subscriber_the_event_waits_for_one_up_to_the_publish_timeout():
    async def main():
        net, clock = Net(), FakeClock()
        engine = engine_for(net, clock)
        await publish(engine, 1, timeout=5.0)  # accepted: in the outbox
        await settle()
        assert engine.pending == 1 and not net.sent
        # A subscriber appears (the registry watch) within the timeout: it gets it.
        net.records = [record("g", "m1")]
        engine.members_changed("order.created", net.records)
        await eventually_async(lambda: engine.pending == 0)
        assert net.to("m1") == [(0).to_bytes(16, "big")]
    run(main())


def test_no_subscriber_for_the_whole_timeout_the_event_is_dropped_unrouted():
    async def main():
        net, clock = Net(), FakeClock()
        engine = engine_for(net, clock)
        report, _ = await asyncio.gather(
            engine.put(TOPIC, b"frame-" + bytes(16), bytes(16), timeout=5.0, wait=True),
            advance(engine, clock, 5.0))
        assert report.groups == {} and not report.ok
        assert engine.pending == 0 and not net.sent and not engine._dead
        assert engine.counters.snapshot()["unrouted"] == 1
    run(main())


async def advance(engine: DeliveryEngine, clock: FakeClock, seconds: float) -> None:
    await settle()
    clock.advance(seconds)
    engine.poke()


def test_broadcast_one_delivery_per_node_and_a_node_that_leaves_is_gone():
    async def main():
        net, clock = Net(), FakeClock()
        net.records = [record("", "s1", "s2", "s3")]
        net.answers["s3"] = lambda e: refusal(Code.UNAVAILABLE, processed=None)
        engine = engine_for(net, clock)
        done = asyncio.ensure_future(publish(engine, 1, wait=True))
        await eventually_async(lambda: len(net.sent) == 3)
        net.records = [record("", "s1", "s2")]  # s3 deregistered
        engine.members_changed("order.created", net.records)
        await advance(engine, clock, 1.0)
        [report] = await done
        assert report.groups == {"(broadcast) s1": "acked", "(broadcast) s2": "acked",
                                 "(broadcast) s3": "gone"}
        assert len(net.sent) == 3  # never retried elsewhere
    run(main())


def test_a_not_serving_member_gets_events_only_when_no_other_is_left():
    async def main():
        net, clock = Net(), FakeClock()
        net.records = [record("g", "m1", "m2", not_serving=("m2",))]
        engine = engine_for(net, clock)
        await publish(engine, 4, wait=True)
        assert len(net.to("m1")) == 4 and not net.to("m2")
        net.records = [record("g", "m2", not_serving=("m2",))]
        engine.members_changed("order.created", net.records)
        await publish(engine, 1, wait=True)
        assert len(net.to("m2")) == 1
    run(main())


def test_a_group_without_members_until_max_age_dead_letters_as_expired():
    async def main():
        net, clock = Net(), FakeClock()
        net.records = [record("g", "m1")]
        net.answers["m1"] = lambda e: refusal(Code.UNAVAILABLE, processed=None)
        engine = engine_for(net, clock, max_age=30.0)
        done = asyncio.ensure_future(publish(engine, 1, wait=True))
        await eventually_async(lambda: net.sent)
        net.records = []
        engine.members_changed("order.created", net.records)
        for _ in range(3):
            await advance(engine, clock, 10.0)
        [report] = await done
        assert report.groups["g"].startswith("expired after 30 s")
        assert engine._dead[0].deliveries == 1
    run(main())


def test_close_waits_for_the_outbox_then_reports_what_it_drops():
    async def main():
        net, clock = Net(), FakeClock()
        net.records = [record("g", "m1"), record("h", "h1")]
        never = asyncio.get_running_loop().create_future()
        net.answers["h1"] = lambda e: never
        engine = engine_for(net, clock)
        await publish(engine, 2)
        await eventually_async(lambda: len(net.sent) == 4)
        dropped = await engine.close(linger=0.05)
        assert sorted(r.event_id for r in dropped) == [(i).to_bytes(16, "big") for i in range(2)]
        assert all(r.groups == {"g": "acked", "h": "dropped"} for r in dropped)
        assert engine.pending == 0
        assert engine.counters.snapshot()["dropped"] == 2
    run(main())


def test_close_returns_at_once_when_everything_was_delivered():
    async def main():
        net, clock = Net(), FakeClock()
        net.records = [record("g", "m1")]
        engine = engine_for(net, clock)
        await publish(engine, 3)
        assert await engine.close(linger=30.0) == []
        assert len(net.sent) == 3
    run(main())


def test_dead_letters_keep_the_last_thousand():
    async def main():
        net, clock = Net(), FakeClock()
        net.records = [record("g", "m1")]
        net.answers["m1"] = lambda e: refusal(Code.INVALID_ARGUMENT, processed=True)
        dead = collections.deque(maxlen=3)
        engine = engine_for(net, clock, dead_letters=dead)
        await publish(engine, 5, wait=True)
        assert [d.data[-1] for d in dead] == [2, 3, 4]
        assert engine.counters.snapshot()["dead_letters"] == 5
    run(main())


@pytest.mark.parametrize("options", [dict(max_pending=0), dict(max_deliveries=0),
                                     dict(ack_timeout=0), dict(backoff=()),
                                     dict(selector="hash"), dict(max_age=float("nan"))])
def test_bad_options_are_refused(options):
    net = Net()
    with pytest.raises(ValueError):
        DeliveryEngine(send=net.send, lookup=net.lookup, **options)


def test_bad_topics_are_refused_before_anything_is_accepted():
    async def main():
        net, clock = Net(), FakeClock()
        engine = engine_for(net, clock)
        with pytest.raises(ValueError, match="dot-separated"):
            await engine.put("order.*", b"f", bytes(16), timeout=1.0)
        assert engine.pending == 0
    run(main())


def test_a_frame_no_subscriber_would_take_is_dead_lettered_without_sending():
    async def main():
        net, clock = Net(), FakeClock()
        net.records = [record("g", "m1"), record("", "b1")]
        engine = engine_for(net, clock, check=lambda topic, frame: "wrong_topic")
        [report] = await publish(engine, 1, wait=True)
        assert report.groups == {"g": "wrong_topic", "(broadcast) b1": "wrong_topic"}
        assert not net.sent and engine.pending == 0
        assert [(d.queue, d.reason, d.deliveries) for d in engine._dead] == [
            ("g", "wrong_topic", 0), (None, "wrong_topic", 0)]
    run(main())


def test_frame_refusal_names_what_a_subscriber_would_refuse():
    from zmicro import _core
    from zmicro.broker.embedded import frame_refusal
    from zmicro.security import Security

    secrets = Security.resolve().secrets
    frame, _ = _core.encode_event(TOPIC, b"body", secrets=secrets, request_id=1)
    assert frame_refusal(TOPIC, frame) is None
    assert frame_refusal("order.deleted", frame) == "wrong_topic"
    assert frame_refusal(TOPIC, frame[:-32]) == "malformed"  # the MAC trailer cut off
    assert frame_refusal(TOPIC, b"junk") == "malformed"
    unsigned, _ = _core.encode_event(TOPIC, b"body", secrets=None, request_id=2)
    assert frame_refusal(TOPIC, unsigned) is None  # the subscriber's call (insecure or not)
    # The request id (the key of its answer on a channel) comes with it.
    assert _core.event_frame_check(TOPIC, unsigned) == (2, None)
    assert _core.event_frame_check(TOPIC, one_frame_request()) == (0, "kind")


def one_frame_request() -> bytes:
    """A well-formed request's header frame (a whole message: no body) on
    the topic's name."""
    import zmq
    ctx = zmq.Context.instance()
    a, b = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
    try:
        a.bind("inproc://one-frame-request")
        b.connect("inproc://one-frame-request")
        wire.send_message(a, wire.Header(kind=wire.Kind.REQUEST, request_id=3,
                                         service="zmicro.topic." + TOPIC), [b"x"])
        frames = b.recv_multipart()
    finally:
        a.close(0)
        b.close(0)
    return frames[0]


def _reference_refusal(topic: str, frame: bytes) -> str | None:
    """frame_refusal as it was written over the full parser."""
    from zmicro import _core
    try:
        message = _core.parse_frames([frame])
    except WireError:
        return "malformed"
    if message.header.kind != wire.Kind.EVENT:
        return "kind"
    if not message.inline:
        return "malformed"
    return None if message.header.service == "zmicro.topic." + topic else "wrong_topic"


@settings(deadline=None, max_examples=300)
@given(st.data())
def test_event_frame_check_agrees_with_the_full_parser_on_any_bytes(data):
    """The publisher's one look at a frame (core, untrusted bytes from
    broker.publish) never raises and refuses exactly what the full parser
    and a subscriber's checks would: on mutations of a real frame too."""
    from zmicro import _core
    frame, _ = _core.encode_event(TOPIC, b"body", secrets=None, request_id=9)
    raw = data.draw(st.one_of(
        st.binary(max_size=300),
        st.builds(lambda i, b: frame[:i] + bytes([b]) + frame[i + 1:],
                  st.integers(0, len(frame) - 1), st.integers(0, 255)),
        st.integers(0, len(frame)).map(lambda i: frame[:i])))
    topic = data.draw(st.sampled_from([TOPIC, "order.deleted"]))
    request_id, refusal = _core.event_frame_check(topic, raw)
    assert refusal == _reference_refusal(topic, raw)
    assert _core.event_frame_refusal(topic, raw) == refusal  # (the publisher's per-event call)
    if refusal is None:
        assert request_id == _core.parse_frames([raw]).header.request_id


def test_permit_skips_denied_members_and_a_denied_broadcast_node_dead_letters():
    """permit(topic, address, key) is asked before each send: a denied
    member of a group is skipped (never sent to), a group or broadcast
    node with no permitted member dead-letters "no permitted subscriber"."""
    async def main():
        net, clock = Net(), FakeClock()
        net.records = [record("g", "ok", "no"), record("strict", "no2"), record("", "no3")]
        asked: list[tuple[str, str]] = []

        def permit(topic: str, address: str, key: str) -> bool:
            asked.append((topic, address))
            return address == "ok"

        engine = engine_for(net, clock, permit=permit)
        reports = await publish(engine, 4, wait=True)
        assert [r.groups for r in reports] == [
            {"g": "acked", "strict": "no permitted subscriber",
             "(broadcast) no3": "no permitted subscriber"}] * 4
        assert {a for a, _ in net.sent} == {"ok"} and len(net.sent) == 4
        assert {("order.created", a) for a in ("ok", "no2", "no3")} <= set(asked)
        snapshot = engine.counters.snapshot()
        assert snapshot["denied"] >= 8 and snapshot["refusals"] == 0
        assert snapshot["dead_letters"] == 8
    run(main())


# -- credit: the member's max_in_flight bounds this publisher's unanswered deliveries ------


def test_a_member_never_has_more_unanswered_deliveries_than_its_max_in_flight():
    async def main():
        net, clock = Net(), FakeClock()
        net.records = [record("g", "m1", options=SubscribeOptions(max_in_flight=2))]
        held = holding(net, "m1")["m1"]
        engine = engine_for(net, clock)
        await publish(engine, 6)
        await settle()
        # Two sent, four waiting in the outbox for credit: no refusal, no
        # backoff round, nothing more sent however long we let it run.
        assert len(net.sent) == 2
        for _ in range(3):
            clock.advance(30.0)  # backoffs would pass; credit waits (up to max_age, 120 s)
            engine.poke()
            await settle()
        assert len(net.sent) == 2
        # Each answer lets exactly one more go.
        for n in range(3, 7):
            held[n - 3].set_result(None)
            await settle()
            assert len(net.sent) == n
        for f in held[4:]:
            f.set_result(None)
        await settle()
        assert engine.pending == 0
        snapshot = engine.counters.snapshot()
        assert (snapshot["acked"], snapshot["refusals"]) == (6, 0)
    run(main())


def test_an_answer_wakes_one_delivery_waiting_for_credit_not_all():
    """With the outbox far deeper than a member's credit (the normal state
    of a publisher faster than its subscriber), each answer used to wake
    every waiting delivery to look again: O(waiting) work per event, and a
    publisher 30x slower (188 events/s instead of 4,400 in bench/events).
    The work per event must not grow with the queue."""
    async def main():
        net, clock = Net(), FakeClock()
        net.records = [record("g", "m1", options=SubscribeOptions(max_in_flight=1))]
        held = holding(net, "m1")["m1"]
        engine = engine_for(net, clock, max_pending=1000)
        looks = counting(engine, "_without_credit")  # the slow path's; the fast path's:
        fast = engine.n_credit_looks
        n = 300
        await publish(engine, n)
        await settle()
        assert len(net.sent) == 1
        for i in range(n):
            held[i].set_result(None)
            await settle()
            assert len(net.sent) == min(i + 2, n)
        assert engine.pending == 0
        # A handful of looks per event (its first, and one when woken), not
        # one per waiting event per answer (n * n / 2 = 45,000).
        looks[0] += engine.n_credit_looks - fast
        assert n <= looks[0] <= 5 * n, looks[0]
    run(main())


def test_waking_for_credit_looks_at_the_few_waiters_of_the_slots_group():
    """Fan-out: every event waits for credit in each group. An answer from
    one group's member used to scan the other groups' waiters (thousands)
    before reaching its own: 4 groups ran at 200 events/s per group. And a
    heartbeat (a record rewritten, the same members) woke every waiter."""
    async def main():
        net, clock = Net(), FakeClock()
        one = SubscribeOptions(max_in_flight=1)
        net.records = [record("g1", "m1", options=one), record("g2", "m2", options=one)]
        held = holding(net, "m1", "m2")
        engine = engine_for(net, clock, max_pending=1000)
        looks = counting(engine, "_without_credit")  # the slow path's; the fast path's:
        fast = engine.n_credit_looks
        n = 200
        await publish(engine, n)
        await settle()
        # The same members, rewritten by their heartbeats: nobody wakes.
        waits = counting(engine, "_wait_credit")
        pumps = engine.n_pumps
        for _ in range(3):
            engine.members_changed(TOPIC, list(net.records))
            await settle()
        assert waits[0] == 0 and engine.n_pumps == pumps
        for i in range(n):  # g2 answers first each time: g1's waiters come first
            for address in ("m2", "m1"):
                held[address][i].set_result(None)
                await settle()
        assert engine.pending == 0
        looks[0] += engine.n_credit_looks - fast
        assert 2 * n <= looks[0] <= 10 * 2 * n, looks[0]
    run(main())


def test_a_full_member_is_paused_briefly_not_backed_off_nor_dead_lettered():
    async def main():
        net, clock = Net(), FakeClock()
        net.records = [record("g", "m1")]
        answers = iter([refusal(Code.RESOURCE_EXHAUSTED, processed=False)] * 3)
        net.answers["m1"] = lambda e: next(answers, None)
        engine = engine_for(net, clock, backoff=(100.0,))
        await publish(engine, 1)
        for _ in range(5):  # each pause is FULL_PAUSE on the engine's clock
            await settle()
            clock.advance(0.05)
            engine.poke()
        await settle()
        assert len(net.sent) == 4 and engine.pending == 0
        snapshot = engine.counters.snapshot()
        assert (snapshot["acked"], snapshot["full"], snapshot["dead_letters"]) == (1, 3, 0)
    run(main())


# -- a topic record is input: whoever may write the registry writes it ---------------------

HOSTILE_POLICIES = [
    {"zmicro.max_in_flight": "0"},
    {"zmicro.max_in_flight": "-5"},
    {"zmicro.ack_wait": "1e12"},
    {"zmicro.ack_wait": "nan"},
    {"zmicro.backoff": "nan,inf"},
    {"zmicro.backoff": ""},
    {"zmicro.max_deliveries": "x" * 10_000},
    {"zmicro.max_deliveries": "99999999999999", "zmicro.backoff": "0.001"},
]


@pytest.mark.parametrize("metadata", HOSTILE_POLICIES, ids=lambda m: ",".join(m)[:40])
def test_a_hostile_topic_record_bends_nothing(metadata):
    """The subscriber's policy travels in its record's node metadata: values
    no SubscribeOptions would take fall back to the publisher's own policy,
    an ack wait never outlasts the event, and an event a member nacks
    forever still ends, dead-lettered, at max_age."""

    async def main():
        net, clock = Net(), FakeClock()
        net.records = [ServiceRecord(
            name="zmicro.topic." + TOPIC, version="g", metadata={"zmicro.kind": "topic"},
            nodes=(Node(id="n-m1", address="m1", metadata={"health": "serving", **metadata}),))]
        net.answers["m1"] = lambda e: refusal(Code.UNAVAILABLE, processed=True)  # nack, always
        engine = engine_for(net, clock, max_age=60.0, max_deliveries=1_000_000,
                            backoff=(0.5,))
        await publish(engine, 1)
        for _ in range(200):
            await settle()
            clock.advance(0.5)
            engine.poke()
            if engine.pending == 0:
                break
        assert engine.pending == 0
        assert max(net.timeouts) <= 60.0
        (letter,) = engine._dead
        assert letter.reason.startswith(("expired", "max_deliveries")), letter.reason
    run(main())
