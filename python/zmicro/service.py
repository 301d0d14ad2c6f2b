"""Services: named sets of endpoints, served on one ZeroMQ ROUTER socket.

::

    svc = zmicro.Service("greeter", version="1.0.0")

    @svc.handler("Greeter.Hello")
    def hello(req: HelloRequest, ctx: zmicro.Context) -> HelloReply:
        return HelloReply(message=f"Hello {req.name}")

    svc.run()            # or, under asyncio: await svc.serve()

Handlers take ``(request, ctx)``. The request is decoded by the codec its
content type names, into the type the handler's first parameter is annotated
with (a bad request is answered ``INVALID_ARGUMENT`` naming the field);
the return value is encoded the same way. A handler may be

- sync, run inline on the service's thread (the fast path);
- sync and ``blocking=True`` (or decorated with :func:`blocking`): run in a
  thread pool, so it may wait on I/O; its reply is still sent from the
  service's thread;
- ``async def``: run as a task on the event loop.

``run()`` with only sync handlers waits in libzmq with the GIL released;
with async handlers, or with ``serve()``, the service waits through the
event loop. Both use the same dispatch.

The service registers itself (with a TTL it keeps refreshing) in the
registry — the embedded one by default — once bound. Its node's metadata
carries ``health=serving`` or ``health=not_serving`` (:meth:`set_serving`),
re-registered when it changes; every service also answers the built-in
``zmicro.Health.Check`` and ``zmicro.Health.Watch`` endpoints
(:mod:`zmicro.health`; the ``zmicro.`` prefix is reserved).

Stopping is graceful: on ``stop()``, SIGINT or SIGTERM the service
deregisters (on its heartbeat thread) and at once answers new calls with
``UNAVAILABLE`` and the wire's ``NOT_PROCESSED`` flag (callers retry
another node), while the calls already in flight — inline, blocking or
async — go on and are answered. When none is left, or after ``grace``
seconds (default 10), it closes: never before it is deregistered. A second
signal changes nothing; the grace period bounds the wait.

Security is on unless asked off (``insecure=True`` or ``ZMICRO_INSECURE=1``):
the socket is a CurveZMQ server that admits only the keys of the trust store's
allowlist (a ZAP handler with ``ZAP_ENFORCE_DOMAIN``, see
:mod:`zmicro.security.zap`), its public key goes into the registry record,
every request must carry a valid MAC under the service's key
(:mod:`zmicro.security.mackeys`) within the ``mac_window`` and a nonce not
seen before, and every reply is signed.
``policy=`` (:class:`zmicro.auth.Policy`) adds end-user tokens, rules and
rate limits in front of the handlers; ``ctx.principal`` names the caller.

Events: ``@svc.subscriber(topic, queue=...)`` runs a function for each
event published to ``topic`` (:mod:`zmicro.events`) through the service's
broker (``broker=``; default: the embedded one, on this service's own
socket, whose publishing side the service's ``policy=`` rules too: who may
subscribe). Subscriptions start once the socket is bound, before the service
registers; on stop they run no new handler, wait for the running ones
(within ``grace``) and close before the socket does. Service names
starting with ``zmicro.`` are reserved (topics are named
``zmicro.topic.<topic>``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import logging
import resource
import signal
import threading
import time
import typing
import uuid
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any, TypeVar

import msgspec
import zmq

from . import _core, health
from .codec import DEFAULT_CONTENT_TYPE, codecs
from .context import Context
from .middleware import ServerInterceptor, chain_server, is_async
from .registry import Endpoint as EndpointRecord
from .auth import Policy
from .auth.audit import audit
from .auth.principal import ANONYMOUS
from .broker.base import TOPIC_PREFIX, Broker, SubscribeOptions, check_topic
from .events import (REPLAY_QUOTA, _default_broker, _RefusalAudit, _Subscriber,
                     check_replay_quota, wait_idle)
from .registry import Node, Registry, ServiceRecord, default_registry
from .security import KeyStore, Security

__all__ = ["Service", "blocking"]

log = logging.getLogger("zmicro.service")

_BLOCKING_ATTR = "__zmicro_blocking__"
#: Largest frame a peer may send (libzmq's MAXMSGSIZE): gRPC's default
#: receive limit (src/zm_limits.h). Larger payloads belong to streams.
DEFAULT_MAX_MESSAGE = _core.MESSAGE_MAX_DEFAULT
#: Seconds a connection may take to finish its handshake (libzmq's
#: HANDSHAKE_IVL; its default, 30 s, lets idle connections hold a
#: descriptor each for that long: docs/operations.md).
DEFAULT_HANDSHAKE_TIMEOUT = 5.0
#: Below this many open files a service warns that a flood can starve it.
_NOFILE_LOW = 4096
_nofile_checked = False


#: A handler: the decorators below return it unchanged, with its own type.
_Fn = TypeVar("_Fn", bound=Callable[..., Any])


def blocking(fn: _Fn) -> _Fn:
    """Mark a handler (or a method given to ``Service.register``) as
    blocking: it runs in the service's thread pool."""
    setattr(fn, _BLOCKING_ATTR, True)
    return fn


class _Handler(typing.NamedTuple):
    name: str
    fn: Callable[..., Any]
    mode: int
    request_type: Any
    response_type: Any


def _types_of(fn: Callable[..., Any]) -> tuple[Any, Any]:
    """(request annotation, return annotation), Any where missing."""
    try:
        params = list(inspect.signature(fn).parameters.values())
        # An object with __call__: its hints are the method's.
        hints = typing.get_type_hints(
            fn if inspect.isroutine(fn) or inspect.isclass(fn) else type(fn).__call__)
    except (TypeError, ValueError, NameError):
        return Any, Any
    request = hints.get(params[0].name, Any) if params else Any
    return request, hints.get("return", Any)


def _schema(tp: Any) -> dict[str, Any] | None:
    if tp is Any or tp is None:
        return None
    try:
        return msgspec.json.schema(tp)
    except Exception:  # types msgspec cannot describe (capnp structs...)
        return None


class Service:
    """A service: endpoints served on one socket, registered by name.

    ``address`` binds exactly there (``tcp://host:port`` or ``ipc://path``);
    by default a free port on 127.0.0.1. The ``address`` attribute is the
    bound address once the service is serving and registered (None before
    and after). ``max_in_flight`` caps requests
    being handled at once: beyond it callers get ``RESOURCE_EXHAUSTED`` at
    once instead of a growing queue. ``workers`` sizes the thread pool of
    blocking handlers. ``grace``: seconds a stopping service waits for the
    calls in flight before it closes. ``max_watchers``: health watches
    (``zmicro.Health.Watch``) at once. ``handshake_timeout``: seconds a
    connection may take to finish its (Curve) handshake before the service
    drops it (libzmq's ``HANDSHAKE_IVL``), which bounds how long idle
    connections hold descriptors (docs/operations.md). ``health_public``:
    the health endpoints skip the interceptors, the policy's tokens and
    rules included (the default: probes carry no token, and the status is
    all they reveal; the transport's key and MAC checks still apply);
    False puts them behind the interceptors like any endpoint.

    Starting raises the process's soft limit of open files to its hard
    limit (logged once), so connections are not refused for want of
    descriptors long before the system's limit.
    """

    def __init__(
        self,
        name: str,
        *,
        version: str = "",
        address: str | None = None,
        registry: Registry | None = None,
        metadata: dict[str, str] | None = None,
        insecure: bool | None = None,
        max_in_flight: int = 1024,
        workers: int | None = None,
        ttl: float = 10.0,
        interceptors: Sequence[ServerInterceptor] = (),
        content_type: str = DEFAULT_CONTENT_TYPE,
        max_message_size: int = DEFAULT_MAX_MESSAGE,
        context: zmq.Context[Any] | None = None,
        keys: str | KeyStore | None = None,
        mac_window: float = 30.0,
        policy: Policy | None = None,
        grace: float = 10.0,
        max_watchers: int = 64,
        handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
        health_public: bool = True,
        broker: Broker | None = None,
    ) -> None:
        if not name or "/" in name or ":" in name:
            # ':' separates service and endpoint in authorization resources.
            raise ValueError(f"invalid service name {name!r}")
        if name.startswith(health.RESERVED_PREFIX):
            # Topics are zmicro.topic.<topic>: a service of that name would
            # share a topic's MAC key, registry record and RBAC resource.
            raise ValueError(f"invalid service name {name!r}: names starting with "
                             f"{health.RESERVED_PREFIX!r} are reserved")
        if ttl <= 0:
            raise ValueError("ttl must be positive")
        if not grace >= 0:  # (NaN too)
            raise ValueError("grace must be a number of seconds >= 0")
        if not 0 < handshake_timeout <= 3600:
            raise ValueError("handshake_timeout must be a number of seconds in (0, 3600]")
        self.name = name
        self.version = version
        self.metadata = dict(metadata or {})
        self._security = Security.resolve(insecure=insecure, keys=keys, mac_window=mac_window)
        self._mac_window = mac_window
        self.insecure = self._security.insecure
        self._secrets = self._security.secrets
        self._policy = policy
        self._requested_address = address
        self._registry = registry
        self._max_in_flight = max_in_flight
        self._workers = workers
        self._ttl = ttl
        self._grace = float(grace)
        self._handshake_ms = max(1, round(handshake_timeout * 1000))
        self._health_public = bool(health_public)
        self._health = health.Health(name, max_watchers=max_watchers,
                                     on_change=self._health_changed)
        self._watch_pool: concurrent.futures.Executor | None = None
        self._interceptors = list(interceptors)
        self._content_type = content_type
        self._max_message_size = max_message_size
        self._zctx = context
        self._handlers: dict[str, _Handler] = {}
        self._subscribers: dict[str, _Subscriber] = {}
        # The audit lines of refused events, rate-limited (a flood of
        # forged events must not write a line each).
        self._refusal_audit = _RefusalAudit(self._security.principal_for)
        self._given_broker = broker
        # The broker while running: the one given, or a default made (and
        # closed) per run.
        self._broker: Broker | None = None
        self._events_pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._drain_until = 0.0
        self._topic_records: list[ServiceRecord] = []
        self._node_id = f"{name}-{uuid.uuid4().hex[:12]}"
        self._sock: zmq.Socket[Any] | None = None
        self._core: _core.ServerCore | None = None
        self._record: ServiceRecord | None = None
        self._heartbeat: threading.Thread | None = None
        self._stop_event = threading.Event()
        self._beat_wake = threading.Event()  # stop, or a health change
        self._deregistered = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._async_stop: asyncio.Event | None = None
        self.address: str | None = None

    # -- endpoints ---------------------------------------------------------

    def handler(self, name: str | None = None, *,
                blocking: bool = False) -> Callable[[_Fn], _Fn]:
        """Decorator: serve the function as endpoint ``name`` (default: its
        ``__qualname__``). The function is returned as it was."""

        def register(fn: _Fn) -> _Fn:
            self._add(name or fn.__qualname__, fn, blocking or getattr(fn, _BLOCKING_ATTR, False))
            return fn

        return register

    def register(self, obj: Any, *, prefix: str | None = None) -> None:
        """Serve every public method of ``obj`` as ``<Class>.<Method>``."""
        prefix = prefix or type(obj).__name__
        for attr in dir(obj):
            if attr.startswith("_"):
                continue
            fn = getattr(obj, attr)
            if callable(fn) and (inspect.ismethod(fn) or inspect.isfunction(fn)):
                self._add(f"{prefix}.{attr}", fn, getattr(fn, _BLOCKING_ATTR, False))

    def _add(self, name: str, fn: Callable[..., Any], blocking_: bool) -> None:
        if self._core is not None:
            raise RuntimeError("add handlers before the service starts")
        if name.startswith(health.RESERVED_PREFIX):
            raise ValueError(f"endpoint {name!r}: names starting with "
                             f"{health.RESERVED_PREFIX!r} are zmicro's own")
        if name in self._handlers:
            raise ValueError(f"endpoint {name!r} is already registered")
        if len(name.encode()) > _core.MAX_NAME:
            raise ValueError(f"endpoint names are at most {_core.MAX_NAME} bytes")
        if is_async(fn):
            if blocking_:
                raise ValueError(f"{name}: an async handler cannot be blocking")
            mode = _core.ASYNC
        else:
            mode = _core.BLOCKING if blocking_ else _core.INLINE
        request_type, response_type = _types_of(fn)
        self._handlers[name] = _Handler(name, fn, mode, request_type, response_type)

    @property
    def endpoints(self) -> list[str]:
        return sorted(self._handlers)

    # -- events ------------------------------------------------------------

    def subscriber(self, topic: str, *, queue: str | None = None, blocking: bool = False,
                   max_in_flight: int = 256, max_deliveries: int = 5,
                   backoff: tuple[float, ...] = (0.1, 1.0, 5.0), ack_wait: float = 30.0,
                   max_age: float = 120.0,
                   replay_quota: int = REPLAY_QUOTA) -> Callable[[_Fn], _Fn]:
        """Decorator: run the function for each event published to
        ``topic`` (``fn(event, ctx: zmicro.EventContext)``; the event is
        decoded into the type its first parameter is annotated with). The
        function is returned as it was.

        ``queue``: the queue group (each event goes to one member of it;
        None: this service gets every event). ``blocking``: run in the
        thread pool (sync functions). ``max_in_flight``: deliveries handed
        to this service and not yet ended, at most. ``max_deliveries``,
        ``backoff``, ``ack_wait``: redelivery (:class:`SubscribeOptions`).
        ``max_age``: seconds after which an event is refused as ``stale``
        (and its id forgotten). ``replay_quota``: event ids remembered at
        once (acked, each for ``max_age``, or in progress; about 32 bytes
        each): the subscription takes at most ``replay_quota / max_age``
        events/s sustained, and nacks the rest with the backoff. One
        subscription per topic per service."""
        check_topic(topic)
        options = SubscribeOptions(queue=queue, max_in_flight=max_in_flight,
                                   max_deliveries=max_deliveries, backoff=tuple(backoff),
                                   ack_wait=ack_wait)
        if not (isinstance(max_age, (int, float)) and 0 < max_age < float("inf")):
            raise ValueError(f"max_age must be seconds > 0, not {max_age!r}")
        check_replay_quota(replay_quota)

        def register(fn: _Fn) -> _Fn:
            if self._core is not None:
                raise RuntimeError("add subscribers before the service starts")
            if topic in self._subscribers:
                # The header names no group: a node must know from the
                # topic alone which subscription an event is for.
                raise ValueError(f"topic {topic!r}: this service subscribes to it already")
            self._subscribers[topic] = _Subscriber(
                topic, fn, event_type=_types_of(fn)[0],
                blocking=blocking or getattr(fn, _BLOCKING_ATTR, False),
                options=options, max_age=float(max_age), replay_quota=replay_quota)
            return fn

        return register

    @property
    def topics(self) -> list[str]:
        """The topics this service subscribes to."""
        return sorted(self._subscribers)

    # -- lifecycle ---------------------------------------------------------

    def run(self) -> None:
        """Serve until stopped (``stop()``, SIGINT, SIGTERM), then
        deregister and close. Blocks; waits in libzmq unless a handler is
        async, then runs an asyncio loop."""
        if (any(h.mode == _core.ASYNC for h in self._handlers.values())
                or any(s.is_async for s in self._subscribers.values())):
            asyncio.run(self.serve())
            return
        # Handlers first: a signal while starting is then a stop request
        # (which _start honours), never a KeyboardInterrupt mid-registration.
        restore = self._install_signals()
        try:
            self._start()
            self._running.run_blocking()  # until drained (or the grace is over)
        except KeyboardInterrupt:
            pass
        finally:
            restore()
            self._shutdown()

    async def serve(self) -> None:
        """Serve on the running event loop until stopped, then deregister
        and close."""
        self._loop = asyncio.get_running_loop()
        self._async_stop = asyncio.Event()
        restore = self._install_loop_signals(self._loop)
        try:
            self._start()
            self._running.attach(self._loop)
            if not self._stop_event.is_set():
                await self._async_stop.wait()
            # In-flight calls and event handlers, within the grace.
            while not (self._running.drained and self._events_idle()):
                await asyncio.sleep(0.02)
            # Closing waits for the deregistration: not on the loop.
            await self._loop.run_in_executor(None, self._await_deregistered)
        finally:
            restore()
            if self._core is not None:
                self._core.detach()
            self._shutdown()

    def stop(self) -> None:
        """Stop serving, gracefully (thread-safe; also from a signal
        handler): deregister, refuse new calls (``UNAVAILABLE``,
        ``NOT_PROCESSED``), finish the calls in flight within ``grace``
        seconds, close. Returns at once; ``run()``/``serve()`` return when
        it is done."""
        self._stop_event.set()
        self._beat_wake.set()
        self._health.drain()
        # The core first: from now on it refuses new events itself (not
        # processed: the publisher tries another member at once) while the
        # deliveries it admitted run to their end; draining the
        # subscriptions first let an event in between them be held, unended,
        # until the grace was over.
        if self._core is not None:
            self._core.drain(self._grace)
        self._drain_events()
        if self._loop is not None and self._async_stop is not None:
            try:
                self._loop.call_soon_threadsafe(self._async_stop.set)
            except RuntimeError:  # loop already closed
                pass

    def set_serving(self, serving: bool) -> None:
        """Report this service as serving or not (``zmicro.Health.*``, and
        the registry's ``health`` node metadata, re-registered within a
        second). Thread-safe. A stopping service stays ``NOT_SERVING``."""
        self._health.set_serving(serving)

    @property
    def serving(self) -> bool:
        """What the health endpoints say: serving, not stopping."""
        return self._health.serving

    def _health_changed(self, serving: bool) -> None:
        self._beat_wake.set()  # the heartbeat re-registers

    def stats(self) -> dict[str, Any]:
        """Counters: requests, replies by status code, errors, malformed
        frames dropped, requests in flight, health watches waiting."""
        base = {"service": self.name, "node": self._node_id, "address": self.address,
                "watchers": self._health.watchers,
                "subscriptions": {t: s.stats() for t, s in self._subscribers.items()}}
        if self._core is None:
            return base | _core.empty_stats()
        return base | self._core.stats()

    def __enter__(self) -> Service:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- internals ---------------------------------------------------------

    @property
    def _running(self) -> _core.ServerCore:
        """The core, between ``_start()`` and ``_shutdown()``."""
        if self._core is None:
            raise RuntimeError("the service is not running")
        return self._core

    def _start(self) -> None:
        if self._core is not None:
            raise RuntimeError("the service is already running")
        if not self._handlers and not self._subscribers:
            raise RuntimeError(f"service {self.name!r} has no handlers and no subscribers")
        self._stop_event.clear()
        self._beat_wake.clear()
        self._health.reset()
        self._drain_until = 0.0
        _raise_nofile_limit()
        zctx = self._zctx or zmq.Context.instance()
        sock = zctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 200)
        # A connection that never finishes its handshake (a flood of idle
        # TCP connections) gives its descriptor back this soon.
        sock.setsockopt(zmq.HANDSHAKE_IVL, self._handshake_ms)
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        sock.setsockopt(zmq.MAXMSGSIZE, self._max_message_size)
        try:
            self._security.configure_server(sock, self._node_id)
            address = _bind(sock, self._requested_address)
        except BaseException:
            sock.close(0)
            self._security.release_server(sock, self._node_id)
            raise
        self._sock = sock
        interceptors = [*(self._policy.interceptors() if self._policy else ()),
                        *self._interceptors]
        endpoints = [
            _core.Endpoint(h.name, chain_server(interceptors, h.fn) if interceptors else h.fn,
                           h.mode, h.request_type)
            for h in self._handlers.values()
        ]
        # Health: public by default (health_public), so probes carrying no
        # token pass the policy; else it goes through the interceptors like
        # any endpoint. Watches wait in a pool of their own, so they never
        # hold the blocking handlers' threads.
        around_health = [] if self._health_public else interceptors
        check, watch = ((chain_server(around_health, h) if around_health else h)
                        for h in (self._health.check, self._health.watch))
        self._watch_pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=self._health.max_watchers + 1,  # +1: refusals never queue
            thread_name_prefix=f"zmicro-{self.name}-health")
        endpoints += [
            _core.Endpoint(health.CHECK, check, _core.INLINE,
                           health.CheckRequest | None, builtin=True),
            _core.Endpoint(health.WATCH, watch, _core.BLOCKING,
                           health.WatchRequest | None, builtin=True,
                           executor=self._watch_pool),
        ]
        workers = self._workers

        def executor() -> concurrent.futures.Executor:
            return concurrent.futures.ThreadPoolExecutor(
                max_workers=workers, thread_name_prefix=f"zmicro-{self.name}")

        self._core = _core.ServerCore(
            sock, self.name, endpoints, codecs(),
            default_content_type=self._content_type,
            max_in_flight=self._max_in_flight,
            executor_factory=executor,
            logger=logging.getLogger("zmicro.server"),
            secrets=self._secrets,
            allowlist=None if self.insecure else self._security.allowlist,
            on_refused=self._refused,
            resolve_principal=None if self.insecure else self._security.principal_for,
            max_message_size=self._max_message_size,
        )
        self._core.local_address = address
        if self._registry is None:
            self._registry = default_registry()
        self._subscribe(interceptors)
        if self._stop_event.is_set():  # stop() came while we were starting
            self._core.drain(self._grace)  # (the core first: see stop())
            self._drain_events()
        self._register(address)
        # Last: a service with an address is bound, dispatching and registered.
        self.address = address
        log.info("zmicro: %s %s serving %s at %s", self.name, self.version,
                 ", ".join(self.endpoints), address)

    def _subscribe(self, interceptors: list[ServerInterceptor]) -> None:
        """Start the subscriptions (the socket is bound, the service not
        yet registered)."""
        if not self._subscribers:
            return
        broker = self._given_broker
        if broker is None:
            # With the service's policy: its rules also decide who may
            # subscribe to what this broker publishes (a broker given is
            # given its own policy by whoever made it).
            broker = _default_broker(self._registry, self._security, self._policy)
        self._broker = broker
        attach = getattr(broker, "attach", None)
        if attach is not None:  # the embedded broker serves on this socket
            attach(self)
        # Its deliveries then pass this service's core, which admits none
        # once it drains: what reaches a subscription was admitted before.
        on_loop = getattr(broker.capabilities, "delivers_on_loop", False)
        if any(s.blocking or (on_loop and not s.is_async) for s in self._subscribers.values()):
            self._events_pool = concurrent.futures.ThreadPoolExecutor(
                max_workers=self._workers, thread_name_prefix=f"zmicro-{self.name}-events")
        own_address = self._core.local_address if self._core is not None else None
        for sub in self._subscribers.values():
            sub.start(broker, service=self.name, secrets=self._secrets,
                      window=self._mac_window,
                      resolve_principal=None if self.insecure else self._security.principal_for,
                      interceptors=interceptors, executor=self._events_pool,
                      loop=lambda: self._loop, on_refused=self._refusal_audit,
                      gated=attach is not None, own_address=own_address)

    def _drain_events(self) -> None:
        if not self._drain_until:
            self._drain_until = time.monotonic() + self._grace
        for sub in self._subscribers.values():
            sub.drain()

    def _events_idle(self) -> bool:
        return (all(s.idle for s in self._subscribers.values())
                or time.monotonic() >= self._drain_until)

    def _close_events(self) -> None:
        """After the drain: close the subscriptions, then a broker made here."""
        subs = list(self._subscribers.values())
        wait_idle(subs, self._drain_until)
        for sub in subs:
            try:
                sub.close()
            except Exception as exc:
                log.warning("zmicro: %s: closing the subscription to %r: %s",
                            self.name, sub.topic, exc)
        if subs:
            self._flush_answers()
        self._refusal_audit.flush()
        if self._events_pool is not None:
            self._events_pool.shutdown(wait=False, cancel_futures=True)
            self._events_pool = None
        if self._broker is not None and self._given_broker is None:
            self._broker.close()
        self._broker = None
        self._drain_until = 0.0

    def _flush_answers(self) -> None:
        """Send what the core queued for its socket since its loop ended
        (on the socket's thread: _shutdown's): the deliveries the embedded
        subscriptions handed back when they closed (a nack without delay:
        another member gets the event now, not after the publisher's ack
        wait). If any went out, the socket stays open the core's
        close_delay, as a drained loop does: the publisher's socket drops
        what it has not read yet when the connection goes."""
        core = self._core
        if core is None:
            return
        before = sum(core.stats()["replies"].values())
        core._flush_from_loop()
        if sum(core.stats()["replies"].values()) > before:
            time.sleep(core.close_delay)

    def _make_topic_records(self, address: str, serving: bool) -> list[ServiceRecord]:
        """One record per subscription, when the broker finds subscribers
        through the registry (the embedded one): name ``zmicro.topic.<topic>``,
        version = the queue group ("" for broadcast), the node's metadata
        the service's name and health, plus what the broker's
        ``topic_node_metadata(options)`` adds (the subscriber's redelivery
        policy, which the publisher follows), if it has one."""
        broker = self._broker
        if not getattr(broker, "registers_topics", False):
            return []
        extra = getattr(broker, "topic_node_metadata", None)
        base = {"service": self.name, "health": "serving" if serving else "not_serving"}
        return [
            ServiceRecord(name=TOPIC_PREFIX + topic, version=sub.options.queue or "",
                          metadata={"zmicro.kind": "topic"}, endpoints=(),
                          nodes=(Node(id=self._node_id, address=address,
                                      metadata={**(extra(sub.options) if extra else {}), **base},
                                      public_key=self._security.public_key),))
            for topic, sub in self._subscribers.items()]

    def _register(self, address: str) -> None:
        if self._registry is None:
            self._registry = default_registry()
        self._deregistered.clear()
        serving = self._health.serving
        self._record = self._make_record(address, serving)
        self._registry.register(self._record, ttl=self._ttl)
        self._topic_records = self._make_topic_records(address, serving)
        for record in self._topic_records:
            self._registry.register(record, ttl=self._ttl)
        self._heartbeat = threading.Thread(target=self._beat, args=(self._registry, address),
                                           name=f"zmicro-{self.name}-ttl", daemon=True)
        self._heartbeat.start()

    def _make_record(self, address: str, serving: bool) -> ServiceRecord:
        return ServiceRecord(
            name=self.name,
            version=self.version,
            metadata=self.metadata,
            endpoints=tuple(
                EndpointRecord(name=h.name, request=_schema(h.request_type),
                               response=_schema(h.response_type))
                for h in self._handlers.values()),
            nodes=(Node(id=self._node_id, address=address,
                        metadata={"health": "serving" if serving else "not_serving"},
                        public_key=self._security.public_key),),
        )

    def _refused(self, reason: str, user_id: str | None, endpoint: str) -> None:
        """The core refused a message (a key no longer allowed, or the MAC
        checks): one audit line."""
        principal = self._security.principal_for(user_id) if user_id else ANONYMOUS
        audit("deny", "key-revoked" if reason == "revoked" else f"mac:{reason}",
              principal=principal, service=self.name, endpoint=endpoint)

    def _beat(self, registry: Registry, address: str) -> None:
        # The registry's thread. Every ttl/3, or at once when the health
        # changes: re-register; on stop: deregister (while the service still
        # answers its calls). (Rotated MAC keys are the core's to pick up.)
        tick = min(1.0, self._ttl / 3)
        period = self._ttl / 3
        next_register = time.monotonic() + period
        published = self._health.serving
        failing = False
        while not self._stop_event.is_set():
            if self._beat_wake.wait(tick):
                self._beat_wake.clear()
            self._refusal_audit.flush(due_only=True)  # (refused events' summaries)
            if self._stop_event.is_set():
                break
            serving = self._health.serving
            if serving == published and time.monotonic() < next_register:
                continue
            try:
                record = self._make_record(address, serving)
                registry.register(record, ttl=self._ttl)
                self._record, published = record, serving
                topic_records = self._make_topic_records(address, serving)
                for topic_record in topic_records:
                    registry.register(topic_record, ttl=self._ttl)
                self._topic_records = topic_records
            except Exception as exc:
                # Keep serving, and try again every tick, not every period:
                # a failure that passes (descriptors short under a
                # connection flood, EMFILE) must not let the node expire.
                if not failing:  # once per outage
                    log.warning("zmicro: could not refresh %s in the registry (retrying): %s",
                                self.name, exc)
                failing = True
                continue
            if failing:
                log.info("zmicro: %s refreshed in the registry again", self.name)
            failing = False
            next_register = time.monotonic() + period
        self._deregister()

    def _deregister(self) -> None:
        if (self._record is not None and self._registry is not None
                and not self._deregistered.is_set()):
            for record in (self._record, *self._topic_records):
                try:
                    self._registry.deregister(record)
                except Exception as exc:
                    log.warning("zmicro: could not deregister %s: %s", record.name, exc)
        self._deregistered.set()

    def _await_deregistered(self) -> None:
        """Until the heartbeat thread has deregistered (bounded)."""
        self._stop_event.set()
        self._beat_wake.set()
        if self._heartbeat is not None:
            self._heartbeat.join(timeout=30)
            if self._heartbeat.is_alive():
                log.warning("zmicro: %s: the registry did not answer in 30 s", self.name)

    def _shutdown(self) -> None:
        # Deregistered before the socket closes: the registry never hands
        # out a closed node.
        self._stop_event.set()
        self._health.drain()
        self._await_deregistered()
        if self._heartbeat is None or not self._heartbeat.is_alive():
            self._deregister()  # stopped before the heartbeat started
        # Subscriptions close after the drain, before the socket does.
        self._drain_events()
        self._close_events()
        if self._core is not None and self._core.close():
            # Answers that waited for a slow caller went out at the last
            # moment: the quiet period, as a drained loop keeps it (the
            # caller's socket drops what it has not read when we close).
            time.sleep(self._core.close_delay)
        if self._watch_pool is not None:
            self._watch_pool.shutdown(wait=False, cancel_futures=True)
            self._watch_pool = None
        if self._sock is not None:
            self._sock.close()
            self._security.release_server(self._sock, self._node_id)
        self._core = self._sock = self._record = self._heartbeat = None
        self._topic_records = []
        self._loop = self._async_stop = None
        self.address = None
        log.info("zmicro: %s stopped", self.name)

    def _install_signals(self) -> Callable[[], None]:
        if threading.current_thread() is not threading.main_thread():
            return lambda: None

        def on_signal(signum: int, frame: FrameType | None) -> None:
            self.stop()

        old = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}

        def restore() -> None:
            for sig, handler in old.items():
                signal.signal(sig, handler)

        return restore

    def _install_loop_signals(self, loop: asyncio.AbstractEventLoop) -> Callable[[], None]:
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        installed = []
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, self.stop)
                installed.append(sig)
            except (NotImplementedError, RuntimeError):
                pass

        def restore() -> None:
            for sig in installed:
                loop.remove_signal_handler(sig)

        return restore


def _raise_nofile_limit() -> None:
    """Raise the soft limit of open files to the hard limit, once per
    process (logged): libzmq needs a descriptor per connection, and a soft
    limit of 1024 is exhausted by a thousand idle connections, after which
    its accept loop spins and the registry cannot be reached. Warns when
    even the hard limit is low."""
    global _nofile_checked
    if _nofile_checked:
        return
    _nofile_checked = True
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (OSError, ValueError):
        return
    if hard != resource.RLIM_INFINITY and soft != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (OSError, ValueError) as exc:
            log.warning("zmicro: could not raise the open files limit from %d to %d: %s",
                        soft, hard, exc)
        else:
            log.info("zmicro: raised the open files limit (RLIMIT_NOFILE) from %d to %d",
                     soft, hard)
            soft = hard
    if soft != resource.RLIM_INFINITY and soft < _NOFILE_LOW:
        log.warning("zmicro: the open files limit is %d (hard limit %d): a flood of "
                    "connections can use them all; raise it (docs/operations.md)", soft, hard)


def _bind(sock: zmq.Socket[Any], address: str | None) -> str:
    """Bind `sock`; returns the address clients connect to."""
    # (libzmq itself removes an ipc socket file left by a dead process.)
    sock.bind(address or "tcp://127.0.0.1:*")
    return sock.getsockopt_string(zmq.LAST_ENDPOINT)
