"""The broker's interface: :class:`Broker`, :class:`Delivery`, :class:`Subscription`.

A broker moves **opaque event frames** (``bytes``) from publishers to
subscriptions. It never sees a key, a codec or a handler: the frame is a
zmicro message of kind ``event`` (docs/protocol.md), built and signed once
by the publisher (``zmicro._core.encode_event``) and checked by the
subscriber (``zmicro._core.EventInbox``) above the broker, so one signing
implementation serves every backend and a broker can neither forge, alter
nor replay an event.

``memory``, ``embedded`` and ``nats`` implement it; ``tests/events`` holds
the contract they share. The contract, for every implementation:

- **Topics** are names checked by :func:`check_topic` (``[A-Za-z0-9_-]+``
  tokens joined by ``.``, no wildcards); the same error for every backend.
- **Queue groups.** A subscription with ``queue="g"`` is a member of group
  ``g``: each event goes to one member of each group. ``queue=None`` is a
  broadcast subscription: it gets every event (one per subscription).
- **Publish** returns once the broker *accepted* the event (what accepted
  means per backend is in docs/events.md: queued, in the publisher's outbox,
  stored by JetStream). It raises :class:`~zmicro.errors.RPCError`
  ``RESOURCE_EXHAUSTED`` (nothing accepted) when the broker stays full for
  ``timeout`` seconds, ``UNAVAILABLE`` when it cannot reach anything that
  accepts it in that time.
- **Delivery.** ``on_delivery(delivery)`` is called for each delivery, on a
  thread or loop of the broker's choosing; it must not block (hand the work
  to an executor or a task) and must end every delivery exactly once with
  :meth:`Delivery.ack`, :meth:`Delivery.nack` or :meth:`Delivery.term`,
  from any thread. An event neither acked nor ended within ``ack_wait`` is
  redelivered (the subscriber is presumed dead or stuck).
- **Bounded.** A subscription never has more than ``max_in_flight``
  deliveries handed out and not ended: the broker holds the rest (or makes
  the publisher wait). A slow subscriber never grows memory without bound.
- **At-least-once per group** (memory, embedded while the publisher lives,
  JetStream): a nacked or unended event is delivered again, to the same or
  another member, after the backoff; after ``max_deliveries`` deliveries, or
  a :meth:`Delivery.term`, it goes to the dead letters (with the reason)
  and never comes back.
- ``close()`` is idempotent; a closed subscription gets no more deliveries.
"""

from __future__ import annotations

import math
import re
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import Error

__all__ = [
    "TOPIC_MAX",
    "TOPIC_PREFIX",
    "Broker",
    "BrokerError",
    "Capabilities",
    "DeadLetter",
    "Delivery",
    "SubscribeOptions",
    "Subscription",
    "check_topic",
]

#: A topic travels in the header's ``service`` field as ``TOPIC_PREFIX +
#: topic``: that one string names the MAC key, the registry record, the NATS
#: subject and the RBAC resource. Service names starting with ``zmicro.`` are
#: reserved for it.
TOPIC_PREFIX = "zmicro.topic."

#: Longest topic, in bytes: a header name is at most 255 bytes with the prefix.
TOPIC_MAX = 255 - len(TOPIC_PREFIX)

_TOKEN = re.compile(r"[A-Za-z0-9_-]+\Z")


class BrokerError(Error):
    """The broker's backend failed (unreachable server, a stream configured
    otherwise, closed broker...). Invalid arguments raise :class:`ValueError`."""


#: Topics check_topic() passed lately: a publisher checks its topic once
#: per event, in two places (1.6 us each, as much as signing the event).
#: Emptied when full (a process using more topics checks again).
_VALID: set[str] = set()
_VALID_KEPT = 4096


def check_topic(topic: object) -> str:
    """Return `topic` if it is a valid topic name, else raise ValueError
    saying what is wrong (the same message for every backend)."""
    if type(topic) is str and topic in _VALID:
        return topic
    if not isinstance(topic, str):
        raise ValueError(f"a topic must be a str, not {type(topic).__name__}")
    if not topic:
        raise ValueError("the topic is empty")
    size = len(topic.encode("utf-8", "surrogatepass"))
    if size > TOPIC_MAX:
        raise ValueError(f"the topic is {size} bytes, over the limit of {TOPIC_MAX}")
    for token in topic.split("."):
        if not _TOKEN.match(token):
            shown = topic if len(topic) <= 60 else topic[:60] + "..."
            raise ValueError(
                f"topic {shown!r}: every dot-separated part must be letters, digits, "
                f"'_' or '-' (no empty part, no wildcard)")
    if type(topic) is str:
        if len(_VALID) >= _VALID_KEPT:
            _VALID.clear()
        _VALID.add(topic)
    return topic


@dataclass(frozen=True, kw_only=True)
class SubscribeOptions:
    """How one subscription consumes its topic (keyword-only, validated)."""

    #: Queue group: each event goes to one member of the group. None: this
    #: subscription gets every event (broadcast).
    queue: str | None = None
    #: Deliveries handed out and not yet ended, at most.
    max_in_flight: int = 256
    #: Deliveries of one event to this group before it is dead-lettered.
    max_deliveries: int = 5
    #: Seconds before the n-th redelivery (the last value repeats).
    backoff: tuple[float, ...] = (0.1, 1.0, 5.0)
    #: Seconds a delivery may stay unended before it is redelivered.
    ack_wait: float = 30.0

    def __post_init__(self) -> None:
        if self.queue is not None:
            check_topic(self.queue)  # the same charset: it names a NATS durable too
        for name in ("max_in_flight", "max_deliveries"):
            value = getattr(self, name)
            if type(value) is not int or value < 1:
                raise ValueError(f"{name} must be an int >= 1, not {value!r}")
        if not self.backoff or not all(_seconds(b) for b in self.backoff):
            raise ValueError(f"backoff must be a non-empty tuple of seconds >= 0, "
                             f"not {self.backoff!r}")
        if not _seconds(self.ack_wait) or self.ack_wait <= 0:
            raise ValueError(f"ack_wait must be seconds > 0, not {self.ack_wait!r}")

    def delay(self, deliveries: int) -> float:
        """Seconds to wait before delivering again an event delivered
        `deliveries` times so far."""
        return float(self.backoff[min(max(deliveries, 1), len(self.backoff)) - 1])


def _seconds(value: object) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value) and value >= 0)


@dataclass(frozen=True)
class Capabilities:
    """What a backend promises beyond the contract (tests and docs read it)."""

    #: An event published while no member of a group is subscribed is kept
    #: for that group (durable groups: JetStream).
    durable: bool = False
    #: Events accepted survive the publisher's process (JetStream's store).
    survives_publisher: bool = False
    #: on_delivery runs on the broker's event loop (NATS): the Service
    #: glue runs sync handlers in its thread pool, never inline.
    delivers_on_loop: bool = False


@dataclass(frozen=True)
class DeadLetter:
    """An event a group will never get: too many deliveries, or terminated."""

    topic: str
    queue: str | None
    data: bytes
    reason: str
    deliveries: int | None = None


class Delivery(ABC):
    """One delivery of one event to one subscription. End it exactly once."""

    #: The event frame as published (opaque to the broker).
    data: bytes
    #: Deliveries of this event to this group so far, this one included
    #: (1: first), or None where the backend cannot know (embedded).
    deliveries: int | None = None
    #: The transport-authenticated identity of the publisher (embedded: its
    #: Curve public key, Z85), or None where the hop proves nothing (memory,
    #: NATS: the subscriber then relies on the event's signed principal).
    user_id: str | None = None

    @abstractmethod
    def ack(self) -> None:
        """Handled: never deliver this event to this group again."""

    @abstractmethod
    def nack(self, *, delay: float | None = None) -> None:
        """Not handled: deliver again after `delay` seconds (None: the
        subscription's backoff), or dead-letter it if it reached
        max_deliveries."""

    @abstractmethod
    def term(self, reason: str) -> None:
        """Never deliver this event to this group again: dead-letter it with
        `reason` (an undecodable body, a handler's Reject...)."""

    def refuse(self, reason: str) -> None:
        """The subscriber refused the frame itself (`reason`: an EventInbox
        refusal such as "bad_mac"): no handler ran. A broker whose transport
        can tell the publisher so (embedded: UNAUTHENTICATED, not processed,
        so it tries another member) overrides this; the others dead-letter
        it as a term."""
        self.term(reason)


class Subscription(ABC):
    """A live subscription; close() stops its deliveries."""

    topic: str
    options: SubscribeOptions

    @abstractmethod
    def close(self) -> None:
        """Stop deliveries (idempotent). Deliveries handed out and not yet
        ended are redelivered to another member (or later)."""

    @abstractmethod
    def stats(self) -> dict[str, int]:
        """Counters: at least ``delivered``, ``acked``, ``nacked``,
        ``terminated``, ``in_flight``."""


class Broker(ABC):
    """Moves event frames from publishers to subscriptions (see the module doc)."""

    capabilities: Capabilities = Capabilities()

    @abstractmethod
    def publish(self, topic: str, data: bytes, *, event_id: bytes,
                timeout: float = 5.0) -> None:
        """Hand `data` (an event frame, whose nonce is `event_id`) to the
        broker; return once it is accepted (blocking up to `timeout`)."""

    @abstractmethod
    async def publish_async(self, topic: str, data: bytes, *, event_id: bytes,
                            timeout: float = 5.0) -> None:
        """publish() for asyncio: completes once the event is accepted."""

    @abstractmethod
    def subscribe(self, topic: str, on_delivery: Callable[[Delivery], Any],
                  options: SubscribeOptions = SubscribeOptions()) -> Subscription:
        """Start delivering `topic`'s events to `on_delivery` (see the module doc)."""

    @abstractmethod
    def dead_letters(self) -> list[DeadLetter]:
        """Dead letters this broker holds for its subscriptions, oldest
        first (memory and embedded keep the last 1,000 in process; NATS
        reads them from the dead-letter stream)."""

    @abstractmethod
    def close(self) -> None:
        """Close every subscription and release the backend (idempotent)."""

    def __enter__(self) -> Broker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

