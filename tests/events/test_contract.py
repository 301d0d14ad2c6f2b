"""The behaviour every Broker implementation shares (zmicro/broker/base.py's
module docstring; backends in conftest.IMPLEMENTATIONS).

Waits are `eventually` (generous, only a bound on failure). Tests that say
"nothing more comes" move the backend's fake clock through `timeline`,
whose advance returns once every due delivery was handed out, so they
assert a state, never a duration.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zmicro.broker import (
    TOPIC_MAX,
    TOPIC_PREFIX,
    BrokerError,
    Delivery,
    SubscribeOptions,
    check_topic,
)
from zmicro.errors import Code, RPCError

from ..helpers import eventually


class Inbox:
    """An on_delivery that records deliveries and ends them as told:
    ``ack`` (default), ``hold`` (never ended by itself), ``nack``."""

    def __init__(self, mode: str = "ack") -> None:
        self.mode = mode
        self.lock = threading.Lock()
        self.got: list[Delivery] = []

    def __call__(self, delivery: Delivery) -> None:
        with self.lock:
            self.got.append(delivery)
        if self.mode == "ack":
            delivery.ack()
        elif self.mode == "nack":
            delivery.nack()

    @property
    def data(self) -> list[bytes]:
        with self.lock:
            return [d.data for d in self.got]

    def __len__(self) -> int:
        with self.lock:
            return len(self.got)

    def wait(self, n: int, what: str = "deliveries") -> list[Delivery]:
        eventually(lambda: len(self) >= n, f"{n} {what}")
        with self.lock:
            return list(self.got)


def opts(**kw) -> SubscribeOptions:
    return SubscribeOptions(**kw)


def publish(broker, frame, topic: str, n: int = 1) -> list[bytes]:
    sent = []
    for i in range(n):
        data, event_id = frame(topic, b"event %d" % i)
        broker.publish(topic, data, event_id=event_id)
        sent.append(data)
    return sent


# -- bytes, groups, broadcast ---------------------------------------------------------


def test_bytes_are_delivered_exactly(broker, frame):
    inbox = Inbox()
    broker.subscribe("order.created", inbox)
    data, event_id = frame("order.created", bytes(range(256)) * 4)
    broker.publish("order.created", data, event_id=event_id)
    (delivery,) = inbox.wait(1)
    assert delivery.data == data
    assert isinstance(delivery.data, bytes)


def test_a_queue_group_gets_each_event_once(broker, frame):
    a, b = Inbox(), Inbox()
    broker.subscribe("order.created", a, opts(queue="billing"))
    broker.subscribe("order.created", b, opts(queue="billing"))
    sent = publish(broker, frame, "order.created", 40)
    eventually(lambda: len(a) + len(b) >= 40, "40 deliveries over the group")
    got = Counter(a.data + b.data)
    assert set(got) == set(sent)
    assert set(got.values()) == {1}


def test_every_group_gets_every_event(broker, frame):
    billing, shipping = Inbox(), Inbox()
    broker.subscribe("order.created", billing, opts(queue="billing"))
    broker.subscribe("order.created", shipping, opts(queue="shipping"))
    sent = publish(broker, frame, "order.created", 10)
    for inbox in (billing, shipping):
        inbox.wait(10)
        assert sorted(inbox.data) == sorted(sent)


def test_broadcast_subscriptions_each_get_every_event(broker, frame):
    one, two, grouped = Inbox(), Inbox(), Inbox()
    broker.subscribe("order.created", one)
    broker.subscribe("order.created", two)
    broker.subscribe("order.created", grouped, opts(queue="billing"))
    sent = publish(broker, frame, "order.created", 5)
    for inbox in (one, two, grouped):
        inbox.wait(5)
        assert sorted(inbox.data) == sorted(sent)


def test_topics_are_separate(broker, frame):
    created, paid = Inbox(), Inbox()
    broker.subscribe("order.created", created)
    broker.subscribe("order.paid", paid)
    (data,) = publish(broker, frame, "order.paid")
    paid.wait(1)
    (other,) = publish(broker, frame, "order.created")
    created.wait(1)
    assert created.data == [other] and paid.data == [data]


def test_publishes_from_many_threads(broker, frame):
    inbox = Inbox()
    broker.subscribe("load", inbox, opts(queue="g"))
    sent: list[bytes] = []
    lock = threading.Lock()

    def run() -> None:
        mine = publish(broker, frame, "load", 25)
        with lock:
            sent.extend(mine)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    inbox.wait(100)
    assert Counter(inbox.data) == Counter(sent)


def test_publish_async(broker, frame):
    inbox = Inbox()
    broker.subscribe("order.created", inbox)
    data, event_id = frame("order.created")

    async def main() -> None:
        await broker.publish_async("order.created", data, event_id=event_id)

    asyncio.run(main())
    inbox.wait(1)
    assert inbox.data == [data]


# -- acks, nacks, redelivery, dead letters ------------------------------------------


def test_an_acked_event_never_comes_back(broker, frame, timeline):
    inbox = Inbox("ack")
    sub = broker.subscribe("order.created", inbox, opts(ack_wait=10.0))
    publish(broker, frame, "order.created")
    inbox.wait(1)
    timeline.advance(3600)
    assert len(inbox) == 1
    assert sub.stats()["acked"] == 1 and sub.stats()["in_flight"] == 0
    assert broker.dead_letters() == []


def test_a_nacked_event_is_delivered_again(broker, frame, impl):
    inbox = Inbox("nack")
    broker.subscribe("order.created", inbox,
                     opts(backoff=(0.0,), max_deliveries=3, queue="g"))
    (data,) = publish(broker, frame, "order.created")
    got = inbox.wait(2, "deliveries (the first one nacked)")
    assert got[0].data == got[1].data == data
    if impl.counts_deliveries:
        assert [d.deliveries for d in got[:2]] == [1, 2]


def test_nack_waits_for_its_delay(broker, frame, timeline):
    inbox = Inbox("hold")
    sub = broker.subscribe("order.created", inbox, opts(backoff=(100.0,)))
    publish(broker, frame, "order.created")
    (first,) = inbox.wait(1)
    first.nack(delay=5.0)
    timeline.advance(4.9)
    assert len(inbox) == 1
    timeline.advance(0.2)
    second = inbox.wait(2)[1]
    assert second.data == first.data
    assert sub.stats()["nacked"] == 1


def test_nack_without_delay_follows_the_backoff(broker, frame, timeline):
    inbox = Inbox("hold")
    broker.subscribe("order.created", inbox, opts(backoff=(1.0, 10.0), max_deliveries=5))
    publish(broker, frame, "order.created")
    inbox.wait(1)[0].nack()
    timeline.advance(0.9)
    assert len(inbox) == 1
    timeline.advance(0.2)
    inbox.wait(2)[1].nack()        # the second delay: 10 s
    timeline.advance(9.5)
    assert len(inbox) == 2
    timeline.advance(0.6)
    third = inbox.wait(3)[2]
    third.nack()                   # the last value repeats
    timeline.advance(9.5)
    assert len(inbox) == 3
    timeline.advance(0.6)
    inbox.wait(4)


def test_max_deliveries_dead_letters_the_event(broker, frame, impl, timeline):
    inbox = Inbox("nack")
    broker.subscribe("order.created", inbox,
                     opts(queue="billing", backoff=(1.0,), max_deliveries=2))
    (data,) = publish(broker, frame, "order.created")
    inbox.wait(1)
    timeline.advance(1.0)
    inbox.wait(2)
    eventually(lambda: broker.dead_letters(), "a dead letter")
    timeline.advance(3600)
    assert len(inbox) == 2
    (dead,) = broker.dead_letters()
    assert (dead.topic, dead.queue, dead.data) == ("order.created", "billing", data)
    assert "max_deliveries" in dead.reason
    if impl.counts_deliveries:
        assert dead.deliveries == 2


def test_term_dead_letters_at_once_with_its_reason(broker, frame, timeline):
    inbox = Inbox("hold")
    sub = broker.subscribe("order.created", inbox, opts(max_deliveries=5))
    (data,) = publish(broker, frame, "order.created")
    inbox.wait(1)[0].term("bad_mac")
    (dead,) = eventually(lambda: broker.dead_letters(), "a dead letter")
    assert (dead.data, dead.reason, dead.queue) == (data, "bad_mac", None)
    timeline.advance(3600)
    assert len(inbox) == 1
    assert sub.stats()["terminated"] == 1


def test_an_unended_delivery_comes_back_after_ack_wait(broker, frame, impl, timeline):
    inbox = Inbox("hold")
    sub = broker.subscribe("order.created", inbox, opts(ack_wait=30.0, max_deliveries=3))
    (data,) = publish(broker, frame, "order.created")
    inbox.wait(1)
    timeline.advance(29)
    assert len(inbox) == 1
    timeline.advance(2)
    first, second = inbox.wait(2)
    assert second.data == data
    if impl.counts_deliveries:
        assert second.deliveries == 2
    first.ack()         # too late: it was given up on, and must not break anything
    second.ack()
    timeline.advance(3600)
    assert len(inbox) == 2
    assert sub.stats()["in_flight"] == 0
    assert broker.dead_letters() == []


def test_events_published_before_a_group_exists(broker, frame, impl, timeline):
    (data,) = publish(broker, frame, "order.created")
    inbox = Inbox()
    broker.subscribe("order.created", inbox, opts(queue="late"))
    if impl.durable:
        assert inbox.wait(1)[0].data == data
    else:
        timeline.settle()
        assert len(inbox) == 0


# -- bounds -------------------------------------------------------------------------


def test_in_flight_is_bounded_per_subscription(broker, frame):
    inbox = Inbox("hold")
    sub = broker.subscribe("order.created", inbox, opts(max_in_flight=2))
    publish(broker, frame, "order.created", 3)
    inbox.wait(2)
    eventually(lambda: sub.stats()["in_flight"] == 2, "two in flight")
    assert sub.stats()["delivered"] == 2
    assert len(inbox) == 2          # the third is held by the broker
    inbox.got[0].ack()
    third = inbox.wait(3)[2]
    assert sub.stats()["in_flight"] == 2
    third.ack()
    inbox.got[1].ack()
    eventually(lambda: sub.stats()["in_flight"] == 0, "nothing in flight")


def test_a_full_broker_makes_publish_wait_then_refuse(make_broker, impl, frame):
    broker = make_broker(max_pending=3)
    inbox = Inbox("hold")
    broker.subscribe("order.created", inbox, opts(max_in_flight=1))
    sent = publish(broker, frame, "order.created", 3)
    data, event_id = frame("order.created")
    if not impl.publish_blocks:
        broker.publish("order.created", data, event_id=event_id, timeout=0.05)
        return
    with pytest.raises(RPCError) as info:
        broker.publish("order.created", data, event_id=event_id, timeout=0.05)
    assert info.value.code == Code.RESOURCE_EXHAUSTED
    assert info.value.processed is False

    async def try_async() -> None:
        await broker.publish_async("order.created", data, event_id=event_id, timeout=0.05)

    with pytest.raises(RPCError) as info:
        asyncio.run(try_async())
    assert info.value.code == Code.RESOURCE_EXHAUSTED
    # Room made (one acked): the waiting publisher goes through.
    waiting = threading.Thread(
        target=broker.publish, args=("order.created", data), kwargs=dict(event_id=event_id))
    waiting.start()
    inbox.wait(1)[0].ack()
    waiting.join(timeout=30)
    assert not waiting.is_alive()
    rest = []
    while len(rest) < 3:
        delivery = inbox.wait(len(rest) + 2)[len(rest) + 1]
        rest.append(delivery.data)
        delivery.ack()
    assert sorted(rest) == sorted([*sent[1:], data])


def test_a_slow_group_does_not_hold_back_delivery_to_others(broker, frame):
    slow, fast = Inbox("hold"), Inbox("ack")
    slow_sub = broker.subscribe("order.created", slow, opts(queue="slow", max_in_flight=1))
    broker.subscribe("order.created", fast, opts(queue="fast"))
    publish(broker, frame, "order.created", 20)
    fast.wait(20)
    # The slow group's first event may still be on its way (embedded: its
    # own member, its own connection); it holds it, and gets no other.
    slow.wait(1)
    assert slow_sub.stats()["in_flight"] == 1 and len(slow) == 1


# -- close -----------------------------------------------------------------------


def test_a_closed_subscription_gets_nothing_more(broker, frame, timeline):
    inbox = Inbox()
    sub = broker.subscribe("order.created", inbox)
    publish(broker, frame, "order.created")
    inbox.wait(1)
    sub.close()
    sub.close()
    publish(broker, frame, "order.created")
    timeline.settle()
    assert len(inbox) == 1


def test_closing_a_member_hands_its_unended_deliveries_to_another(broker, frame):
    holder, other = Inbox("hold"), Inbox("ack")
    sub = broker.subscribe("order.created", holder, opts(queue="billing"))
    (data,) = publish(broker, frame, "order.created")
    holder.wait(1)
    broker.subscribe("order.created", other, opts(queue="billing"))
    sub.close()
    assert other.wait(1)[0].data == data


def test_close_is_idempotent_and_final(broker, frame):
    inbox = Inbox()
    broker.subscribe("order.created", inbox)
    broker.close()
    broker.close()
    data, event_id = frame("order.created")
    with pytest.raises(BrokerError):
        broker.publish("order.created", data, event_id=event_id)
    with pytest.raises(BrokerError):
        broker.subscribe("order.created", inbox)


def test_stats_name_the_contract_counters(broker):
    sub = broker.subscribe("order.created", Inbox())
    assert {"delivered", "acked", "nacked", "terminated", "in_flight"} <= set(sub.stats())
    assert sub.topic == "order.created" and sub.options == SubscribeOptions()


# -- topic names --------------------------------------------------------------------

BAD_TOPICS = ["", ".", "a.", ".a", "a..b", "a.*", "a.>", "a b", "a/b", "ü", "a" * (TOPIC_MAX + 1),
              "é" * (TOPIC_MAX // 2 + 1), None, b"bytes", 7]


@pytest.mark.parametrize("topic", BAD_TOPICS, ids=repr)
def test_every_backend_refuses_bad_topics_alike(broker, frame, topic):
    with pytest.raises(ValueError) as expected:
        check_topic(topic)
    with pytest.raises(ValueError) as published:
        broker.publish(topic, b"x", event_id=bytes(16))
    with pytest.raises(ValueError) as subscribed:
        broker.subscribe(topic, Inbox())
    assert str(published.value) == str(subscribed.value) == str(expected.value)


def test_check_topic_remembers_only_what_it_passed():
    """check_topic keeps the topics it passed (a publisher checks one per
    event): a bad topic is refused every time, however many valid ones are
    checked around it, and a str subclass is always checked afresh."""
    class Odd(str):
        pass

    for n in range(5000):  # more than it keeps: the set is emptied once
        assert check_topic(f"t.{n}") == f"t.{n}"
        for bad in ("a..b", "a.*"):
            with pytest.raises(ValueError):
                check_topic(bad)
    assert check_topic("t.4999") == "t.4999"
    assert check_topic(Odd("t.1")) == "t.1"
    with pytest.raises(ValueError):
        check_topic(Odd("a..b"))


def test_the_longest_topic_fits_a_header_name():
    topic = "a" * TOPIC_MAX
    assert check_topic(topic) == topic
    assert len(TOPIC_PREFIX + topic) == 255


def test_unusual_valid_topics_go_through(broker, frame):
    for topic in ("a", "A-b_c.9", "x" * TOPIC_MAX, "-.x.-"):
        inbox = Inbox()
        sub = broker.subscribe(topic, inbox)
        (data,) = publish(broker, frame, topic)
        assert inbox.wait(1)[0].data == data
        sub.close()


_TOKEN = st.text(alphabet="abcXYZ019_-", min_size=1, max_size=12)
_VALID = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*\Z")


@settings(deadline=None)
@given(st.lists(_TOKEN, min_size=1, max_size=8).map(".".join))
def test_topics_of_valid_tokens_are_accepted(topic):
    if len(topic.encode()) <= TOPIC_MAX:
        assert check_topic(topic) == topic


@settings(deadline=None)
@given(st.text(max_size=300))
def test_check_topic_accepts_exactly_the_documented_names(topic):
    valid = bool(_VALID.match(topic)) and len(topic.encode("utf-8", "surrogatepass")) <= TOPIC_MAX
    if valid:
        assert check_topic(topic) == topic
    else:
        with pytest.raises(ValueError):
            check_topic(topic)
