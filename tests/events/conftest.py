"""Fixtures of the event tests: every broker implementation, and a timeline.

To run the contract suite (test_contract.py, test_signed.py) against a new
backend, add one entry to IMPLEMENTATIONS: an :class:`Impl` whose ``make``
takes the pytest request (for other fixtures, e.g.
``request.getfixturevalue("nats_url")``), the test's fake clock and the
broker options a test asks for (``max_pending``: events a group, or the
publisher, holds before publish waits; a backend that has no such bound
ignores it and says ``publish_blocks=False``), the flags that say what
the backend promises beyond the contract, and the registry Services
subscribing through it use.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from zmicro import _core
from zmicro.broker import Broker
from zmicro.broker.memory import MemoryBroker
from zmicro.registry import MemoryRegistry, Registry

from ..helpers import UNIX_START, FakeClock


def _advance(broker: Broker, clock: FakeClock, seconds: float) -> None:
    clock.advance(seconds)
    broker.tick()  # type: ignore[attr-defined]  # (fake-clock backends have it)


@dataclass(frozen=True)
class Impl:
    #: make(request, clock, **options) -> Broker; options: max_pending.
    make: Callable[..., Broker]
    #: A queue group keeps events published while it has no member (JetStream).
    durable: bool = False
    #: Backoffs and ack_wait follow the injected FakeClock, and
    #: advance(broker, clock, seconds) moves it and returns once every
    #: delivery due by then was passed to on_delivery. Without it, tests of
    #: "nothing more comes" are not generated for the backend.
    fake_clock: bool = True
    advance: Callable[[Broker, FakeClock, float], None] = _advance
    #: A full broker makes publish wait, then raise RESOURCE_EXHAUSTED.
    publish_blocks: bool = True
    #: Delivery.deliveries is counted (embedded: None, the subscriber cannot know).
    counts_deliveries: bool = True
    #: The backend's own transport routes a frame by the topic its header
    #: names and drops malformed frames before any subscriber sees them, so
    #: a broker there cannot move an event to another topic's subscribers,
    #: and a cut frame is dropped without a dead letter; the tests of those
    #: refusals hold for the other backends. No backend does so now: the
    #: embedded publisher dead-letters such a frame itself, with the
    #: subscriber's reason (embedded.frame_refusal), as the others do.
    transport_checks: bool = False
    #: The registry a Service subscribing through this broker must use
    #: (embedded: the one its publishers look subscribers up in); None: any
    #: (a fresh MemoryRegistry).
    registry_of: Callable[[Broker], Registry] | None = None

    def service_registry(self, broker: Broker) -> Registry:
        return self.registry_of(broker) if self.registry_of is not None else MemoryRegistry()


def _nats(request, clock, **options: Any) -> Broker:
    """A NatsBroker on the session's nats-server (tests/conftest.py), with
    subjects, streams and dead letters of its own: the suite's fixed topic
    names must not meet earlier tests' stored events and durable groups.
    Real time (JetStream's timers); no publisher bound (the stream holds
    events, max_pending does not apply)."""
    import uuid

    from zmicro.broker.nats import NatsBroker

    tenant = f"zmicro.t{uuid.uuid4().hex[:10]}"
    return NatsBroker(request.getfixturevalue("nats_url"), subject_prefix=f"{tenant}.topic.",
                      dlq_prefix=f"{tenant}.dlq.")


def _embedded(request, clock, **options: Any) -> Broker:
    """An EmbeddedBroker on an embedded registry of its own, secure (the
    session's key store): its subscriptions are served by subscriber
    services of its own. Real time; close() lingers half a second at most."""
    from zmicro.broker.embedded import EmbeddedBroker
    from zmicro.registry import EmbeddedRegistry

    from ..processes import private_dir

    directory = private_dir(request.getfixturevalue("tmp_path_factory"), "embedded")
    return EmbeddedBroker(EmbeddedRegistry(str(directory)), linger=0.5, **options)


IMPLEMENTATIONS: dict[str, Impl] = {
    "embedded": Impl(_embedded, fake_clock=False, counts_deliveries=False,
                     registry_of=lambda broker: broker._registry),  # type: ignore[attr-defined]
    "memory": Impl(lambda request, clock, **options: MemoryBroker(clock=clock, **options)),
    "nats": Impl(_nats, durable=True, fake_clock=False, publish_blocks=False),
}


@pytest.fixture
def clock() -> FakeClock:
    """Unix seconds: event timestamps are wall-clock times."""
    return FakeClock(UNIX_START)


@pytest.fixture(params=sorted(IMPLEMENTATIONS))
def impl(request) -> Impl:
    return IMPLEMENTATIONS[request.param]


@pytest.fixture
def make_broker(request, impl, clock):
    """make_broker(**options): a broker of this test's backend, closed after it."""
    made: list[Broker] = []

    def make(**options: Any) -> Broker:
        broker = impl.make(request, clock, **options)
        made.append(broker)
        return broker

    yield make
    for broker in made:
        broker.close()


@pytest.fixture
def broker(make_broker) -> Broker:
    return make_broker()


class Timeline:
    """Moves a fake-clock backend's time (see Impl.fake_clock)."""

    def __init__(self, impl: Impl, broker: Broker, clock: FakeClock) -> None:
        self._impl, self._broker, self._clock = impl, broker, clock

    def advance(self, seconds: float) -> None:
        self._impl.advance(self._broker, self._clock, seconds)

    def settle(self) -> None:
        """Return once everything due now was handed out."""
        self.advance(0)


@pytest.fixture
def timeline(impl, broker, clock) -> Timeline:
    """The broker's time, for tests that move it (fake-clock backends only:
    see pytest_collection_modifyitems)."""
    assert impl.fake_clock
    return Timeline(impl, broker, clock)


@pytest.fixture
def frame():
    """frame(topic, body=b"...") -> (data, event_id): an unsigned event
    frame as a publisher makes it (``encode_event``), for tests of the
    broker alone: every frame is distinct (its event id is random)."""
    request_ids = itertools.count(1)

    def make(topic: str, body: bytes = b"payload") -> tuple[bytes, bytes]:
        return _core.encode_event(topic, body, secrets=None, request_id=next(request_ids),
                                  content_type="application/octet-stream")

    return make


def pytest_collection_modifyitems(config, items):
    """Tests that move a fake clock are not generated for backends whose
    time is real (deselected, not skipped)."""
    keep, drop = [], []
    for item in items:
        callspec = getattr(item, "callspec", None)
        name = callspec.params.get("impl") if callspec else None
        if (name in IMPLEMENTATIONS and "timeline" in item.fixturenames
                and not IMPLEMENTATIONS[name].fake_clock):
            drop.append(item)
        else:
            keep.append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
