"""Events: publishing them, and what runs a Service's subscribers.

::

    svc = zmicro.Service("billing")

    @svc.subscriber("order.created", queue="billing")   # each event to one member
    def on_created(ev: OrderCreated, ctx: zmicro.EventContext) -> None: ...

    pub = zmicro.Publisher()
    pub.publish("order.created", OrderCreated(id=1), metadata={"k": "v"})
    await zmicro.AsyncPublisher().publish("order.created", OrderCreated(id=2))

An event is a zmicro message of kind ``event`` (docs/protocol.md): the
publisher encodes the value with the codec of its content type, and
``zmicro._core.encode_event`` builds and signs one frame (the MAC under
the key of ``zmicro.topic.<topic>``; unsigned in insecure mode) carrying
the metadata, the trace context of the handler it is published from (if
any), and the publisher's Curve public key as ``principal``. The broker
(:mod:`zmicro.broker`) moves that frame as opaque bytes; a broker can
neither forge, alter nor replay it.

**Publishing** returns once the broker *accepted* the event (see
docs/events.md for what that means per backend). When the broker is full
it waits up to ``timeout`` seconds, then raises
:class:`~zmicro.errors.RPCError` ``RESOURCE_EXHAUSTED`` (nothing accepted).
An event larger than the protocol's limit (1 MiB) is refused before
anything is sent (``RESOURCE_EXHAUSTED``). ``Publisher`` is thread-safe;
``AsyncPublisher.publish()`` encodes and signs at once (errors are raised
by the call) and returns an awaitable that completes once accepted.

**Subscribing** (:meth:`zmicro.Service.subscriber`): for each delivery the
subscription's glue, in this order,

1. checks the frame with ``EventInbox.check`` (MAC, key id, topic, age,
   unsigned events when secure): a refusal ends the delivery with
   ``term(reason)`` (dead-lettered, audited as ``mac:<reason>``: at most
   REFUSAL_AUDIT_LINES lines per topic and reason each second, the rest
   summed up);
2. acks a *duplicate* (an event this subscription acked already) without
   running the handler;
3. decodes the body into the type the handler's first parameter is
   annotated with: failure ends it with ``term("undecodable: ...")``;
4. runs the service's interceptors (its policy first) and the handler, with
   an :class:`EventContext` whose ``service`` is ``zmicro.topic.<topic>``
   and ``endpoint`` is ``publish``, so RBAC rules on
   ``zmicro.topic.<topic>:publish`` decide who may publish to the handler;
   while it runs, the current context (:func:`zmicro.context.current_context`)
   is the core Context of the event (``InEvent.context()``): the calls and
   events the handler makes carry its trace id, span and metadata on, as
   those made in a call handler do;
5. on return: ack (and remember the event id until it is too old to be
   accepted again); :class:`Nack`: deliver again after its delay (None:
   the subscription's backoff); :class:`Reject`, or an ``RPCError`` with a
   terminal code (INVALID_ARGUMENT, PERMISSION_DENIED, UNAUTHENTICATED,
   FAILED_PRECONDITION, UNIMPLEMENTED): dead-letter now; any other
   exception: logged (with the topic and event id; never the frame), then
   delivered again after the backoff.

The principal the rules see is the transport's (the Curve key that sent
the delivery, embedded) when the broker knows it, else the event's signed
``principal`` field (memory, NATS); None in insecure mode, as for calls.
A sync handler runs inline on the thread that delivers (``blocking=True``,
or a broker whose ``capabilities.delivers_on_loop``, NATS: in the service's
thread pool), an ``async def`` one as a task on the service's event loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import importlib
import itertools
import logging
import math
from secrets import randbelow as _randbelow
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from . import _core
from .auth.audit import audit
from .auth.principal import ANONYMOUS, Principal
from .broker.base import TOPIC_PREFIX, Broker, Delivery, SubscribeOptions, Subscription
from .codec import DEFAULT_CONTENT_TYPE, Codec, codecs, get_codec
from .context import current_context
from .errors import Code, RPCError
from .middleware import ServerInterceptor, chain_server, is_async
from .registry import Registry
from .security import KeyStore, Security

__all__ = ["DEFAULT_TIMEOUT", "REPLAY_QUOTA", "REPLAY_QUOTA_MAX", "AsyncPublisher",
           "EventContext", "Nack", "Publisher", "Reject"]

log = logging.getLogger("zmicro.events")

#: Seconds publish() waits for the broker to accept an event, by default.
DEFAULT_TIMEOUT = 5.0

#: The endpoint part of a topic's RBAC resource for publishing to it
#: (``zmicro.topic.<topic>:publish``), which subscribers enforce.
PUBLISH = "publish"

#: Event ids a subscription remembers at once, by default (``replay_quota``:
#: the ids it acked, each kept ``max_age`` seconds, and those in progress).
#: A subscription takes at most replay_quota / max_age events/s sustained
#: (12,500/s at the defaults); beyond, events are nacked with the backoff.
REPLAY_QUOTA = 1_500_000
#: The largest ``replay_quota``: the replay set counts ids in 32 bits.
REPLAY_QUOTA_MAX = 2**32 - 1

#: Audit lines a service writes at most for the events its subscribers
#: refuse (EventInbox.check), per topic and reason, each
#: REFUSAL_AUDIT_PERIOD seconds; the rest are counted and summed up.
REFUSAL_AUDIT_LINES = 10
REFUSAL_AUDIT_PERIOD = 1.0

#: Handler errors that will not go better next time: dead-letter at once.
_TERMINAL = frozenset({Code.INVALID_ARGUMENT, Code.PERMISSION_DENIED, Code.UNAUTHENTICATED,
                       Code.FAILED_PRECONDITION, Code.UNIMPLEMENTED})


class Nack(Exception):
    """Raise in a subscriber: not handled now; deliver this event again
    after ``delay`` seconds (None: the subscription's backoff). Counts as a
    delivery towards ``max_deliveries``."""

    def __init__(self, delay: float | None = None) -> None:
        if delay is not None and not (isinstance(delay, (int, float)) and math.isfinite(delay)
                                      and delay >= 0):
            raise ValueError(f"delay must be seconds >= 0, not {delay!r}")
        self.delay = None if delay is None else float(delay)
        super().__init__(delay)


class Reject(Exception):
    """Raise in a subscriber: never deliver this event to this group again;
    it goes to the dead letters with ``reason``."""

    def __init__(self, reason: str = "rejected") -> None:
        self.reason = str(reason)
        super().__init__(self.reason)


#: What a subscriber knows about the event it handles (see its docstring):
#: made by the core's glue (zmicro._core.EventGlue), once per event.
EventContext = _core.EventContext


# -- publishing ---------------------------------------------------------------------------


def _default_broker(registry: Registry | None, security: Security, policy: Any = None) -> Broker:
    """The embedded broker (broker=None), with the caller's registry,
    security and policy (who may subscribe). Imported when needed: it brings the client machinery, which
    a process using another backend does without."""
    try:
        embedded = importlib.import_module(".broker.embedded", __package__)
    except ImportError as exc:
        raise RuntimeError("the embedded broker is not available here: pass broker=") from exc
    broker: Broker = embedded.EmbeddedBroker(registry=registry, insecure=security.insecure,
                                             keys=security.store, policy=policy)
    return broker


class _PublisherBase:
    """What both publishers share: encoding, signing, identity."""

    def __init__(self, broker: Broker | None = None, *, insecure: bool | None = None,
                 keys: str | KeyStore | None = None, registry: Registry | None = None,
                 content_type: str = DEFAULT_CONTENT_TYPE, timeout: float = DEFAULT_TIMEOUT,
                 mac_window: float = 30.0, policy: Any = None) -> None:
        """``broker``: where events go (None: the embedded broker over
        ``registry``, closed with the publisher); ``policy``: with the
        embedded broker, who may subscribe (a :class:`zmicro.auth.Policy`
        or its rules: ``zmicro.topic.<topic>:subscribe``; a denied
        subscriber never gets the event; another broker is given its own
        policy, so ``policy`` with ``broker`` is a ValueError); ``insecure`` / ``keys`` /
        ``mac_window``: security, as for clients (the MAC keys come from
        the key store's secrets); ``content_type``: the codec values are
        encoded with; ``timeout``: seconds publish() waits to be accepted
        unless the call says."""
        if not (isinstance(timeout, (int, float)) and timeout > 0):
            raise ValueError(f"timeout must be seconds > 0, not {timeout!r}")
        if policy is not None and broker is not None:
            raise ValueError("policy= is for the default (embedded) broker: "
                             "give it to the broker you pass")
        try:
            codec: Codec = get_codec(content_type)
        except KeyError:
            raise ValueError(f"no codec for content type {content_type!r}") from None
        self._security = Security.resolve(insecure=insecure, keys=keys, mac_window=mac_window)
        self.insecure = self._security.insecure
        self._secrets = self._security.secrets
        # Signing goes through a KeySource: rotated keys are picked up as
        # calls pick them up (one stat of the secrets file at most every
        # KEYS_RELOAD_INTERVAL, before signing).
        self._keys = (None if self._secrets is None
                      else _core.KeySource(self._secrets))
        self.content_type = content_type
        self._encode = codec.encode
        self.timeout = float(timeout)
        # Delivery ids, unique per publisher (the embedded path keys its
        # pending acks on them); next() on a count is atomic under the GIL.
        # From a random point, so that publishers sharing a broker rarely
        # number alike (the broker then sends such frames one after the
        # other: correct, but serialised).
        self._ids = itertools.count(1 + _randbelow(1 << 62))
        self._owns_broker = broker is None
        self.broker: Broker = broker if broker is not None else _default_broker(
            registry, self._security, policy)
        self._closed = False

    def _frame(self, topic: str, event: Any,
               metadata: Mapping[str, str | bytes] | None) -> tuple[bytes, bytes]:
        body = self._encode(event)  # (encode_event checks the topic: check_topic)
        parent = current_context()
        trace = (parent.trace_hi, parent.trace_lo, parent.span_id) if parent is not None else (0, 0, 0)
        return _core.encode_event(
            topic, body, secrets=self._keys, request_id=next(self._ids),
            content_type=self.content_type, metadata=metadata,
            principal=self._security.public_key, trace_id_high=trace[0],
            trace_id_low=trace[1], span_id=trace[2])

    def _timeout(self, timeout: float | None) -> float:
        if self._closed:
            raise RuntimeError("the publisher is closed")
        return self.timeout if timeout is None else timeout

    def close(self) -> None:
        """Close the broker if this publisher made it (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if self._owns_broker:
            self.broker.close()


class Publisher(_PublisherBase):
    """Publishes events (thread-safe). See the module docstring."""

    def publish(self, topic: str, event: Any, *,
                metadata: Mapping[str, str | bytes] | None = None,
                timeout: float | None = None) -> None:
        """Publish ``event`` to ``topic``; returns once the broker accepted
        it. Raises ValueError for a bad topic, RPCError
        ``RESOURCE_EXHAUSTED`` when it is too large or the broker stays
        full for ``timeout`` seconds, ``UNAVAILABLE`` when nothing that
        accepts it can be reached."""
        timeout = self._timeout(timeout)
        data, event_id = self._frame(topic, event, metadata)
        self.broker.publish(topic, data, event_id=event_id, timeout=timeout)

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncPublisher(_PublisherBase):
    """Publishes events from asyncio code. See the module docstring."""

    def publish(self, topic: str, event: Any, *,
                metadata: Mapping[str, str | bytes] | None = None,
                timeout: float | None = None) -> Awaitable[None]:
        """Encode and sign ``event`` now, and return an awaitable that
        completes once the broker accepted it (errors as
        :meth:`Publisher.publish`)."""
        timeout = self._timeout(timeout)
        data, event_id = self._frame(topic, event, metadata)
        return self.broker.publish_async(topic, data, event_id=event_id, timeout=timeout)

    async def __aenter__(self) -> AsyncPublisher:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


# -- subscribing (used by zmicro.Service) ------------------------------------------------------


class _RefusalAudit:
    """The audit lines of the events a service's subscribers refused
    (``deny``, reason ``mac:<reason>``, service ``zmicro.topic.<topic>``,
    endpoint ``publish``), called as the glue's ``on_refused(reason,
    user_id, topic)``: at most `lines` per topic and reason in each
    `period` seconds of `clock` (a window starts with its first refusal),
    so that a flood of forged events does not write a WARNING line each.
    The refusals beyond are counted, and written as one summary line (the
    same fields, principal anonymous, plus ``suppressed``: how many, and
    ``seconds``: the period) when the next refusal of that topic and
    reason comes after the window, or at :meth:`flush` (the service's
    heartbeat, its stop). Counters elsewhere (the subscription's
    ``refused``, its EventInbox's ``refused_<reason>``) count every one.
    The principal is looked up only for the lines written. Thread-safe."""

    def __init__(self, principal_for: Callable[[str], Principal] | None, *,
                 lines: int = REFUSAL_AUDIT_LINES, period: float = REFUSAL_AUDIT_PERIOD,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._principal_for = principal_for
        self.lines = lines
        self.period = period
        self.clock = clock
        self._lock = threading.Lock()
        # (topic, reason) -> [window start, lines written, refusals suppressed];
        # bounded: a service's topics times the refusal reasons.
        self._windows: dict[tuple[str, str], list[float]] = {}

    def __call__(self, reason: str, user_id: str | None, topic: str) -> None:
        now = self.clock()
        key = (topic, reason)
        with self._lock:
            window = self._windows.get(key)
            suppressed = 0
            if window is None or not window[0] <= now < window[0] + self.period:
                suppressed = int(window[2]) if window is not None else 0
                window = self._windows[key] = [now, 0, 0]
            write = window[1] < self.lines
            window[1 if write else 2] += 1
        if suppressed:
            self._summary(topic, reason, suppressed)
        if write:
            principal = (self._principal_for(user_id) if user_id and self._principal_for
                         else ANONYMOUS)
            audit("deny", f"mac:{reason}", principal=principal, service=TOPIC_PREFIX + topic,
                  endpoint=PUBLISH)

    def flush(self, *, due_only: bool = False) -> None:
        """Write the summary of every window that suppressed lines (with
        `due_only`: of those whose period is over, which then end)."""
        now = self.clock()
        due: list[tuple[str, str, int]] = []
        with self._lock:
            for key, window in list(self._windows.items()):
                over = not window[0] <= now < window[0] + self.period
                if due_only and not over:
                    continue
                if window[2]:
                    due.append((key[0], key[1], int(window[2])))
                    window[2] = 0
                if over:
                    del self._windows[key]
        for topic, reason, suppressed in due:
            self._summary(topic, reason, suppressed)

    def _summary(self, topic: str, reason: str, suppressed: int) -> None:
        audit("deny", f"mac:{reason}", principal=None, service=TOPIC_PREFIX + topic,
              endpoint=PUBLISH, suppressed=suppressed, seconds=self.period)


def check_replay_quota(value: object) -> int:
    """`value` if it is a valid ``replay_quota`` (an int from 1 to
    REPLAY_QUOTA_MAX), else ValueError naming the field."""
    if type(value) is not int or not 1 <= value <= REPLAY_QUOTA_MAX:
        raise ValueError(f"replay_quota must be an int from 1 to {REPLAY_QUOTA_MAX}, "
                         f"not {value!r}")
    return value


class _Subscriber:
    """One ``@svc.subscriber``: its options, and while the service runs,
    its subscription. The glue between deliveries and the handler is the
    core's EventGlue (what every event costs: check, decode, run inline,
    ack); this class is its owner, called for every other outcome (see
    EventGlue's docstring), and keeps no state per event."""

    def __init__(self, topic: str, fn: Callable[..., Any], *, event_type: Any,
                 blocking: bool, options: SubscribeOptions, max_age: float,
                 replay_quota: int = REPLAY_QUOTA) -> None:
        self.topic = topic
        self.fn = fn
        self.event_type = event_type
        self.is_async = is_async(fn)
        if self.is_async and blocking:
            raise ValueError(f"subscriber of {topic!r}: an async handler cannot be blocking")
        self.blocking = blocking
        self.options = options
        self.max_age = max_age
        self.replay_quota = check_replay_quota(replay_quota)
        self._subscription: Subscription | None = None
        self._glue: Any = None
        self._gated = False
        self._tasks: set[asyncio.Task[None]] = set()

    # -- lifecycle (the service's) --

    def start(self, broker: Broker, *, service: str, secrets: Any, window: float,
              resolve_principal: Callable[[str | None], Principal] | None,
              interceptors: Sequence[ServerInterceptor],
              executor: concurrent.futures.Executor | None,
              loop: Callable[[], asyncio.AbstractEventLoop | None],
              on_refused: Callable[[str, str | None, str], None],
              gated: bool = False, own_address: str | None = None) -> None:
        """Subscribe through `broker`. `gated`: its deliveries pass the
        service's own core (the embedded broker on the service's socket),
        which refuses new events itself once the service drains (not
        processed: the publisher tries another member), so every delivery
        that reaches this glue was admitted before and runs (see drain()).
        `own_address`: the service's, when `gated`: an inline handler then
        runs on the thread that serves it, and a sync call from it back to
        the service fails fast (FAILED_PRECONDITION) instead of waiting
        for an answer that thread could never give."""
        self._service = service
        self._gated = gated
        self._inbox = _core.EventInbox(self.topic, secrets=secrets, max_age=self.max_age,
                                       window=window, replay_quota=self.replay_quota)
        self._executor = executor
        # The service's loop if it runs in this thread (serve() starts the
        # subscriptions on it): deliveries in this thread start their
        # handler's task directly (get_running_loop per event would cost a
        # getpid() each on 3.11).
        running = _running_loop()
        self._own_loop = running if running is not None and running is loop() else None
        self._own_thread = threading.get_ident()
        self._task_name = f"zmicro-event:{self.topic}"
        # A broker delivering on its own loop (NATS) must not run handlers inline.
        on_loop = getattr(broker.capabilities, "delivers_on_loop", False)
        self._loop = loop
        self._on_refused = on_refused
        self._codecs = codecs()
        self._decoders: dict[str, Callable[[Any], Any] | None] = {}
        self._handler = chain_server(interceptors, self.fn) if interceptors else self.fn
        previous, self._glue = self._glue, _core.EventGlue(
            self, self._inbox, queue=self.options.queue, handler=self._handler,
            resolve=resolve_principal,
            inline=not (self.is_async or ((self.blocking or on_loop) and executor is not None)))
        if previous is not None:  # counters count every run (handlers: this one's)
            for name, count in previous.counters().items():
                self._glue.add(name, count)
        if gated:
            self._glue.blocks_address = own_address
        self._subscription = broker.subscribe(self.topic, self._glue, self.options)

    def drain(self) -> None:
        """Run no new handler (duplicates are still acked); deliveries that
        arrive meanwhile are left to close(), which gives them back. Not
        when gated (start()): the core stops admitting, and one it admitted
        just before is in flight (held here, it would keep the core's drain
        waiting for it until the grace ended)."""
        if self._glue is not None:
            self._glue.draining = not self._gated

    @property
    def idle(self) -> bool:
        return self._glue is None or self._glue.active == 0

    def close(self) -> None:
        subscription, self._subscription = self._subscription, None
        if subscription is not None:
            subscription.close()

    def stats(self) -> dict[str, Any]:
        glue = self._glue
        if glue is None:
            out: dict[str, Any] = dict.fromkeys(_core.GLUE_COUNTERS, 0)
            out["running"] = 0
        else:
            out = glue.counters()
            out["running"] = glue.active
        if self._subscription is not None:
            out["broker"] = self._subscription.stats()
        return out

    # -- the glue's other paths (EventGlue calls them) --

    def _refused(self, d: Delivery, reason: str) -> None:
        """EventInbox.check refused the frame (`reason`)."""
        if reason == "replay_full":
            # Temporary, not the event's fault: this subscription
            # remembers replay_quota ids for max_age s each, so it
            # takes replay_quota / max_age events/s sustained. Back
            # for later (or another member), never a dead letter.
            self._glue.add("nacked")
            d.nack(delay=self.options.delay(d.deliveries or 1))
            return
        self._glue.add("refused")
        # A refusal is told apart from a handler's Reject by the call,
        # never by the reason's text (a Reject may say "stale" too):
        # (Delivery.refuse: the embedded core answers it UNAUTHENTICATED,
        # not processed; the other brokers dead-letter it as a term.)
        d.refuse(reason)
        self._on_refused(reason, d.user_id, self.topic)

    def _later(self, d: Delivery) -> None:
        """A copy of an event in progress here: back after the backoff."""
        d.nack(delay=self.options.delay(d.deliveries or 1))

    def _decoder(self, content_type: str) -> Callable[[Any], Any] | None:
        """The decoder of `content_type` into the handler's type (None: the
        body as is); ValueError for a content type without a codec."""
        try:
            return self._decoders[content_type]
        except KeyError:
            codec = self._codecs.get(content_type)
            if codec is None:
                raise ValueError(f"no codec for content type {content_type!r}") from None
            decode = self._decoders[content_type] = codec.decoder(self.event_type)
            return decode

    def _undecodable(self, d: Delivery, exc: Exception) -> None:
        d.term(f"undecodable: {_short(exc)}")

    def _start(self, d: Delivery, ev: Any, value: Any, ctx: Any) -> None:
        """A handler that does not run inline: an async one as a task on
        the service's loop, a blocking one (or any sync one of a broker
        delivering on its loop) in the pool."""
        if self.is_async:
            loop = self._loop()
            if loop is None:
                self._not_started(d, ev, "the service has no event loop")
                return
            coro = self._run_async(d, ev, value, ctx)
            try:
                if loop is self._own_loop and threading.get_ident() == self._own_thread:
                    # Delivered on the loop's own thread (the embedded core
                    # serving with asyncio): a task at once, not the
                    # thread-safe hop (a concurrent Future, a callback
                    # chain and a wake-up of the loop per event). Named:
                    # a default name is formatted per task.
                    task = loop.create_task(coro, name=self._task_name)
                    self._tasks.add(task)  # (the loop keeps tasks weakly)
                    task.add_done_callback(self._tasks.discard)
                else:
                    asyncio.run_coroutine_threadsafe(coro, loop)
            except RuntimeError:  # the loop is closed: the service is stopping
                coro.close()
                self._not_started(d, ev, "the service's event loop is closed")
            return
        assert self._executor is not None  # (EventGlue runs inline without one)
        try:
            self._executor.submit(self._glue.run, d, ev, value, ctx)
        except RuntimeError:  # the pool is shut down: the service is stopping
            self._not_started(d, ev, "the thread pool is shut down")

    def _not_started(self, d: Delivery, ev: Any, why: str) -> None:
        """The handler could not be started (`why`): not counted running
        any more (a count left up kept the service's stop waiting for it
        until the grace ended), the event may run again, and the delivery
        is nacked with the backoff: later, or another member."""
        self._inbox.release(ev)
        self._glue.not_run()
        self._glue.add("nacked")
        log.warning("zmicro: %s: the subscriber of %r could not start on event %s (%s): "
                    "delivered again after the backoff", self._service, self.topic,
                    ev.event_id.hex(), why)
        d.nack()

    async def _run_async(self, d: Delivery, ev: Any, value: Any, ctx: Any) -> None:
        _core.CURRENT.set(ctx._core)  # (this task's own copy of the context)
        try:
            result = self._handler(value, ctx)
            if asyncio.iscoroutine(result) or isinstance(result, Awaitable):
                await result
        except BaseException as exc:  # (CancelledError too: the service is stopping)
            self._glue.finish(d, ev, exc)
        else:
            self._glue.finish(d, ev, None)

    def _failed(self, d: Delivery, ev: Any, exc: BaseException) -> None:
        """The handler raised `exc` (the event is released already)."""
        glue = self._glue
        if isinstance(exc, Nack):
            glue.add("nacked")
            d.nack(delay=exc.delay)
        elif isinstance(exc, Reject):
            glue.add("rejected")
            d.term(exc.reason)
        elif isinstance(exc, RPCError) and exc.code in _TERMINAL:
            glue.add("rejected")
            d.term(f"{exc.code.name}: {exc.detail}")
        else:
            glue.add("failed")
            # The handler's own traceback, the topic and the event id:
            # never the frame (its MAC) nor the body.
            log.error("zmicro: %s: the subscriber of %r failed on event %s "
                      "(delivery %s): delivered again after the backoff",
                      self._service, self.topic, ev.event_id.hex(), d.deliveries,
                      exc_info=None if isinstance(exc, RPCError) else exc)
            d.nack()

    def _glue_failed(self, d: Delivery, ev: Any) -> None:
        """The glue itself failed (counted; called in its ``except``
        clause): `d` is nacked through the broker's own delivery (its
        bookkeeping stays right), with no delay of ours (the broker's or
        publisher's backoff applies), and the event's in-progress mark is
        cleared. Nothing if `d` was ended before the failure."""
        log.exception("zmicro: %s: the subscriber glue of %r failed: the event is "
                      "delivered again after the backoff", self._service, self.topic)
        if ev is not None:
            self._inbox.release(ev)
        d.nack()


def _running_loop() -> asyncio.AbstractEventLoop | None:
    """The event loop running in this thread, or None."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _short(exc: BaseException, limit: int = 200) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= limit else text[:limit] + "..."


def wait_idle(subscribers: Sequence[_Subscriber], until: float) -> None:
    """Until every subscriber's handlers finished or `until` (monotonic) passed."""
    while not all(s.idle for s in subscribers) and time.monotonic() < until:
        time.sleep(0.01)
