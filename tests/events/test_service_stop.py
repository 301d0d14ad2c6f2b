"""A Service on the embedded broker, stopping while events come (review
finding 6): what it holds goes back to the publisher before its socket
closes, and what comes once it drains is refused at once (not processed:
the publisher moves to another member), so ``stop()`` never waits its
whole grace period for events it will not run.

Two members of one queue group, in this process, on a private embedded
registry; a real publisher (EmbeddedBroker). The subscriptions ask for an
hour of ack wait and of backoff: an answer that never reaches the
publisher (lost at close, or held until the grace ends) leaves it waiting
far past ``eventually``'s bound, so only the behaviour under test lets the
other member get the events in time. No duration is asserted.
"""

from __future__ import annotations

import threading

import zmicro
from zmicro.broker.embedded import EmbeddedBroker
from zmicro.registry import EmbeddedRegistry, MemoryRegistry

from ..helpers import WAIT, eventually
from ..processes import private_dir

TOPIC = "order.created"
#: Redelivery of these subscriptions: an hour before any timeout or backoff.
SLOW = dict(queue="billing", ack_wait=3600.0, backoff=(3600.0,))


class Member:
    """A Service subscribed to TOPIC, run in a thread; `handled` are the ids
    its handler finished, `started` the ids it began."""

    def __init__(self, directory: str, *, grace: float, gate: threading.Event | None = None):
        self.started: list[int] = []
        self.handled: list[int] = []
        self.svc = zmicro.Service("billing", registry=EmbeddedRegistry(directory), grace=grace)

        @self.svc.subscriber(TOPIC, blocking=gate is not None, **SLOW)
        def on_created(ev: dict, ctx: zmicro.EventContext) -> None:
            self.started.append(ev["id"])
            if gate is not None:
                gate.wait(60)
            self.handled.append(ev["id"])

        self.thread = threading.Thread(target=self.svc.run, name="billing", daemon=True)
        self.thread.start()
        eventually(lambda: self.svc.address, "the member serves")

    @property
    def glue(self):
        return self.svc._subscribers[TOPIC]

    def stop(self) -> None:
        self.svc.stop()
        self.thread.join(WAIT)


def publish_until(publisher: zmicro.Publisher, tried, other: Member, *,
                  first: int = 1) -> list[int]:
    """Publish events `first`, `first` + 1, ... one at a time, each once the
    last one reached a member (handled by `other`, or `tried()` says the
    member under test got one), until `tried()`: the balancer picks every
    member in turn. The ids published."""
    published: list[int] = []
    for n in range(first, first + 20):
        publisher.publish(TOPIC, {"id": n})
        published.append(n)
        eventually(lambda: n in other.handled or tried(), f"event {n} reached a member")
        if tried():
            return published
    raise AssertionError("no event was tried on the member under test")


def members(directory: str) -> int:
    return sum(len(r.nodes) for r in EmbeddedRegistry(directory).get("zmicro.topic." + TOPIC))


def test_deliveries_given_back_at_close_reach_the_publisher(zmicro_keys, tmp_path_factory):
    """Handlers still running when the grace ends: close() hands their
    deliveries back (a nack without delay) and those answers go out
    before the socket closes, so the other member gets the events at once
    rather than after the publisher's ack wait."""
    directory = str(private_dir(tmp_path_factory, "events-stop-close"))
    gate = threading.Event()
    stuck = Member(directory, grace=0.2, gate=gate)
    other = Member(directory, grace=10.0)
    publisher = zmicro.Publisher(broker=EmbeddedBroker(EmbeddedRegistry(directory)))
    try:
        eventually(lambda: members(directory) == 2, "both members registered")
        published = publish_until(publisher, lambda: stuck.started, other)
        stuck.stop()  # its handler outlives the grace: its delivery goes back
        assert not stuck.thread.is_alive()
        eventually(lambda: sorted(set(other.handled)) == published,
                   "the other member got every event")
        assert stuck.handled == []
        assert publisher.broker.dead_letters() == []
    finally:
        gate.set()
        stuck.stop()
        other.stop()
        publisher.close()
        publisher.broker.close(linger=0)


def test_events_coming_while_it_drains_go_to_another_member(zmicro_keys, tmp_path_factory):
    """Events that come once stop() began its drain (the publisher's view
    of the members is older than the deregistration), while a handler
    still runs there: the running one finishes and is acked, the new ones
    are refused (UNAVAILABLE, not processed) and the publisher takes them
    to the other member at once, and the stopping member closes once its
    handler ended, without waiting its grace (an hour here)."""
    directory = str(private_dir(tmp_path_factory, "events-stop-drain"))
    gate = threading.Event()
    stopping = Member(directory, grace=3600.0, gate=gate)
    other = Member(directory, grace=10.0)
    eventually(lambda: members(directory) == 2, "both members registered")
    # The publisher's registry: the members as they were, deregistration unseen.
    view = MemoryRegistry()
    for record in EmbeddedRegistry(directory).get("zmicro.topic." + TOPIC):
        view.register(record, ttl=3600)
    publisher = zmicro.Publisher(broker=EmbeddedBroker(view))
    glue = stopping.glue
    drain = glue.drain
    late: list[int] = []

    def drain_then_publish() -> None:
        # stop() drains the subscriptions: events come right then.
        glue.drain = drain
        drain()
        received = glue.stats()["received"]
        tried = lambda: (glue.stats()["received"] > received  # noqa: E731
                         or stopping.svc.stats()["events_refused"])
        late.extend(publish_until(publisher, tried, other, first=100))

    glue.drain = drain_then_publish
    try:
        early = publish_until(publisher, lambda: stopping.started, other)
        stopping.svc.stop()
        gate.set()  # the handler running there ends after the new events came
        stopping.thread.join(WAIT)
        assert late and not stopping.thread.is_alive()
        assert stopping.handled == early[-1:]
        eventually(lambda: sorted(set(other.handled)) == early[:-1] + late,
                   "the other member got the rest")
        eventually(lambda: publisher.broker.stats()["acked"] == len(early + late), "the acks")
        assert publisher.broker.dead_letters() == []
    finally:
        gate.set()
        stopping.stop()
        other.stop()
        publisher.close()
        publisher.broker.close(linger=0)
        view.close()


def test_a_delivery_admitted_before_the_drain_is_run_not_held(zmicro_keys, tmp_path_factory):
    """The subscription's glue may be told to drain a moment before the
    service's core stops admitting events (another thread calls stop()):
    an event the core admitted in that moment is in flight, so it runs and
    is acked, and is not held until the grace ends."""
    directory = str(private_dir(tmp_path_factory, "events-stop-race"))
    member = Member(directory, grace=3600.0)
    publisher = zmicro.Publisher(broker=EmbeddedBroker(EmbeddedRegistry(directory)))
    try:
        eventually(lambda: members(directory) == 1, "the member registered")
        member.glue.drain()  # what stop() does to it first, the core still admitting
        publisher.publish(TOPIC, {"id": 7})
        eventually(lambda: publisher.broker.stats()["acked"] == 1, "the ack")
        assert member.handled == [7]
        member.stop()
        assert not member.thread.is_alive()
    finally:
        member.stop()
        publisher.close()
        publisher.broker.close(linger=0)
