"""Clients: call a service's endpoint by name.

::

    client = zmicro.Client()
    client.call("greeter", "Greeter.Hello", {"name": "Ada"})
    client.call("greeter", "Greeter.Hello", HelloRequest("Ada"), response_type=HelloReply)

    reply = await zmicro.AsyncClient().call("greeter", "Greeter.Hello", {"name": "Ada"})

Every call has a deadline (``timeout``, or the client's default); its
remaining budget travels with the request, and a call made inside a handler
inherits the handler's remaining deadline (the earlier of the two wins) and
its metadata (trace context included). Nodes come from the registry and are
picked by a balancer in the core: ``round_robin`` (rotating across calls),
``random``, ``p2c`` (the less busy of two), ``peak_ewma`` (Finagle's
latency-aware P2C) or ``hash`` (consistent hashing on the call's ``key=``);
``version=`` and ``node_filter=`` narrow the nodes; ``address=`` calls one
node directly, without discovery (go-micro's ``WithAddress``). A node that
keeps failing is ejected for a while (``outlier=``).

A failed call is retried (``retry=``, a :class:`RetryPolicy`; per client and
per call) when no handler ran it, or when the call says the endpoint is
``idempotent=True``: within the call's one deadline, on another node, with
backoff, and only while the service's retry budget allows (a failing
service is not hammered). An AsyncClient can also hedge idempotent calls
(``hedging=`` or per call ``hedge=``, a :class:`HedgingPolicy`): a second
attempt goes to another node when the first is slow, the first reply wins.

Errors are :class:`~zmicro.errors.RPCError`: the server's code for an error
reply, ``UNAVAILABLE`` when no node could be reached (the request was never
sent: safe to retry; a node that refuses the connection fails the attempt
at once, unless the call says ``wait_for_ready=True``) or the connection
dropped while the call waited (``processed=None``), ``DEADLINE_EXCEEDED``
when the reply did not come in time (a cancel frame tells the server),
``UNAUTHENTICATED`` when the server refused this client's key or a message
failed its MAC, ``INVALID_ARGUMENT`` / ``RESOURCE_EXHAUSTED`` for metadata
or a request the wire cannot carry (never sent).

Security is on unless asked off (``insecure=True`` or ``ZMICRO_INSECURE=1``):
every socket is a CurveZMQ client with the user's key pair (the key store,
``keys=``), expecting the server key from a trusted source (an explicit
``server_key=``, the registry record when the registry is trusted, else the
user's own key: on one machine, the user's services have it); every request
is signed with its service's MAC key and every reply checked (see
:mod:`zmicro.security.mackeys`).

After ``os.fork()`` a client goes on working in the child: the child's
first call opens a new zmq context (``zmq.Context.instance()`` of the child,
also for a client given ``context=``), new sockets and a new registry
watch. libzmq contexts must not be used across a fork, so the parent's
sockets and watch threads are left alone in the child, neither used nor
closed; the parent's client is unaffected. (A fork that bypasses
``os.register_at_fork``, e.g. from C, is not seen: make clients after it.)
At interpreter exit every client still open is closed (its registry watch
threads stopped), so that nothing is printed at exit.

``Client`` may be shared by threads (it keeps one socket per node per
thread). ``AsyncClient`` belongs to one event loop (asyncio's or uvloop's);
its ``call()`` returns an awaitable Future, not a coroutine: no Task per
call. The first call of a loop iteration is sent at once; the calls that
follow it in the same iteration leave together at its end, so that libzmq
wakes its I/O thread once for the lot.
"""

from __future__ import annotations

import asyncio
import atexit
import itertools
import logging
import os
import weakref
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

import zmq

from . import _core
from .codec import DEFAULT_CONTENT_TYPE, codecs
from .middleware import Call, ClientInterceptor, chain_client
from .errors import Code, RPCError
from .registry import Registry, RegistryError, ServiceRecord, default_registry
from .registry.cache import RegistryCache
from .security import KeyStore, Security

__all__ = ["AsyncClient", "Client", "DEFAULT_TIMEOUT", "HedgingPolicy", "OutlierPolicy",
           "RetryPolicy"]

DEFAULT_TIMEOUT = 5.0
_STRATEGIES = {"round_robin": _core.SELECT_ROUND_ROBIN, "random": _core.SELECT_RANDOM,
               "p2c": _core.SELECT_P2C, "peak_ewma": _core.SELECT_PEAK_EWMA,
               "hash": _core.SELECT_HASH}
RetryPolicy = _core.RetryPolicy
HedgingPolicy = _core.HedgingPolicy
OutlierPolicy = _core.OutlierPolicy
#: The default: up to 3 attempts, for UNAVAILABLE only (what was not
#: processed, or an idempotent endpoint's call).
DEFAULT_RETRY = RetryPolicy()


#: Milliseconds a secure handshake may take (libzmq's default is 30 s).
HANDSHAKE_TIMEOUT_MS = 5000



#: libzmq's reconnect interval doubles from its 100 ms up to this (ms) while
#: a node stays unreachable: a dead node costs a connect attempt (and a
#: monitor event) a second, not ten. A channel that lost its node is
#: replaced by a fresh socket at its next call anyway (channel.pyx).
RECONNECT_IVL_MAX_MS = 1000

_monitor_ids = itertools.count()


def _monitor(zctx: zmq.Context[Any], sock: zmq.Socket[Any]) -> zmq.Socket[Any]:
    """The PAIR socket that receives `sock`'s monitor events, with no
    receive limit.

    libzmq sends monitor events from the context's I/O thread with a
    blocking send: with pyzmq's ``get_monitor_socket`` (default HWM) a
    monitor nobody reads (an idle client whose node went away sees a
    CONNECT_RETRIED per reconnect) fills after about 2,000 events and then
    blocks that thread for good, and with it every socket of the context
    (no handshake, no message, ``term()`` hangs). Our end's RCVHWM of 0
    makes the inproc pipe unbounded (libzmq sums both ends' limits, and 0
    means none), so the I/O thread never waits on us. An async channel reads
    its monitor as events come; a sync one while a call waits on it; both
    drop the queue when they close (an idle channel is closed after the
    pool's ``idle_ttl``).
    """
    address = f"inproc://zmicro.monitor.{os.getpid()}.{next(_monitor_ids)}"
    sock.monitor(address, _core.MONITOR_EVENTS)
    monitor: zmq.Socket[Any] = zctx.socket(zmq.PAIR)
    try:
        monitor.setsockopt(zmq.LINGER, 0)
        monitor.setsockopt(zmq.RCVHWM, 0)
        monitor.connect(address)
    except BaseException:
        sock.disable_monitor()
        monitor.close(0)
        raise
    return monitor


def _make_socket(zctx: zmq.Context[Any], address: str, max_message_size: int,
                 security: Security | None = None,
                 server_key: str = "") -> tuple[zmq.Socket[Any], zmq.Socket[Any] | None]:
    """A DEALER connected to `address`, and (secure) a monitor of its handshakes."""
    sock = zctx.socket(zmq.DEALER)
    monitor = None
    try:
        sock.setsockopt(zmq.LINGER, 0)
        # Queue nothing for a peer that is not connected: a call either reaches
        # a node or fails as UNAVAILABLE, never sits in a dead pipe.
        sock.setsockopt(zmq.IMMEDIATE, 1)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, RECONNECT_IVL_MAX_MS)
        sock.setsockopt(zmq.MAXMSGSIZE, max_message_size)
        if security is not None and not security.insecure:
            security.configure_client(sock, server_key)
            # A server that never completes the handshake (its ZAP handler
            # gone: it then answers nobody) fails it after this, which the
            # monitor reports, instead of holding calls to their deadline.
            sock.setsockopt(zmq.HANDSHAKE_IVL, HANDSHAKE_TIMEOUT_MS)
        # A refused handshake becomes an error at once (the core reads this
        # while it waits for the connection), not a hang; a connection lost
        # (the node killed) ends the calls in flight on it.
        monitor = _monitor(zctx, sock)
        sock.connect(address)
    except BaseException:
        if monitor is not None:
            monitor.close(0)
        sock.close(0)
        raise
    return sock, monitor


class _Base:
    """What both clients share: the core's call path and the policy it
    asks for (registry lookups, sockets)."""

    #: AsyncChannel on one event loop (AsyncClient) or Channel per thread (Client).
    _is_async = False

    def __init__(self, *, registry: Registry | None = None, selector: str = "round_robin",
                 timeout: float = DEFAULT_TIMEOUT, content_type: str = DEFAULT_CONTENT_TYPE,
                 insecure: bool | None = None, interceptors: Sequence[ClientInterceptor] = (),
                 context: zmq.Context[Any] | None = None,
                 max_message_size: int = _core.MESSAGE_MAX_DEFAULT,
                 keys: str | KeyStore | None = None, mac_window: float = 30.0,
                 retry: RetryPolicy | None | bool = DEFAULT_RETRY,
                 retry_budget: tuple[float, float] = (10.0, 0.1),
                 outlier: OutlierPolicy | None = None, connect_timeout: float = 1.0,
                 max_sockets: int = 1024, idle_ttl: float = 300.0,
                 hedging: HedgingPolicy | None = None, wait_for_ready: bool = False) -> None:
        """Options, keyword-only, the same for both clients: ``registry``
        (default: the embedded one), ``selector`` (a strategy name),
        ``timeout`` (seconds per call unless the call says), ``content_type``,
        ``insecure`` / ``keys`` / ``mac_window`` (security), ``interceptors``,
        ``context`` (a zmq.Context), ``max_message_size`` (bytes per frame
        the servers accept: larger requests are refused before sending),
        ``retry`` / ``retry_budget`` / ``hedging`` (AsyncClient only) /
        ``outlier`` (failures), ``connect_timeout`` (seconds an attempt
        waits for its node's connection), ``wait_for_ready`` (the default
        of every call's ``wait_for_ready``, see ``Client.call``),
        ``max_sockets`` / ``idle_ttl`` (the socket pool)."""
        is_async = self._is_async
        if hedging is not None and not is_async:
            raise TypeError("hedging: only an AsyncClient hedges calls")
        if selector not in _STRATEGIES:
            raise ValueError(f"selector is one of {sorted(_STRATEGIES)}, not {selector!r}")
        if retry is True:
            retry = DEFAULT_RETRY
        if retry is not None and retry is not False and not isinstance(retry, RetryPolicy):
            raise TypeError(f"retry is a RetryPolicy, None or False, not {type(retry).__name__}")
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self._security = Security.resolve(insecure=insecure, keys=keys, mac_window=mac_window)
        self.insecure = self._security.insecure
        self._secrets = self._security.secrets
        self._node_keys: dict[str, str] = {}
        self.timeout = timeout
        self.content_type = content_type
        self._registry = registry
        self._cache: RegistryCache | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self._strategy = _STRATEGIES[selector]
        self._outlier = outlier
        self._interceptors = list(interceptors)
        self._zctx: zmq.Context[Any] | None = context or zmq.Context.instance()
        self._max_message_size = max_message_size
        self._closed = False
        self._core_options: dict[str, Any] = dict(
            refresh=self._refresh, make_socket=self._make_socket, is_async=is_async,
            secrets=self._secrets, max_message_size=max_message_size,
            retry=retry or None, budget=retry_budget, connect_timeout=connect_timeout,
            max_sockets=max_sockets, idle_ttl=idle_ttl, hedge=hedging,
            wait_for_ready=wait_for_ready)
        self._open_core()
        if self._interceptors:
            self._invoke = chain_client(self._interceptors, self._invoke_call)
        _open_clients.add(self)

    def _open_core(self) -> None:
        self._core = _core.ClientCore(codecs(), self.content_type, self.timeout,
                                      **self._core_options)
        if not self._interceptors:
            self.call = self._core.call  # no Python frame

    def _reopen_in_child(self) -> None:
        """After a fork, in the child: a new core (no sockets yet), no
        registry cache, no context until the first socket needs one. The
        parent's core and cache are dropped, not closed: pyzmq does not
        close a parent's socket in a child, and their threads are not here.
        (Kept until exit instead, they would be finalized while modules are
        torn down, and print.)"""
        if self._closed:
            return
        self._cache = None
        self._unsubscribe = None
        self._zctx = None
        self._open_core()

    def _make_socket(self, address: str,
                     server_key: str | None) -> tuple[zmq.Socket[Any], zmq.Socket[Any] | None]:
        key = ""
        if not self.insecure:
            registry = self._registry or default_registry()
            key = self._security.server_key_for(
                address, server_key=server_key, registry_key=self._node_keys.get(address, ""),
                registry_trusted=getattr(registry, "trusted", False))
        if self._zctx is None:  # reopened in a forked child: this process's own
            self._zctx = zmq.Context.instance()
        return _make_socket(self._zctx, address, self._max_message_size, self._security, key)

    def _registry_cache(self) -> RegistryCache:
        if self._cache is None:
            self._cache = RegistryCache(self._registry or default_registry())
            self._unsubscribe = self._cache.subscribe(self._on_change)
        return self._cache

    def _refresh(self, service: str) -> _core.Balancer:
        """The core meets `service` for the first time: its nodes from the
        registry cache, in a new Balancer (the watch updates it later)."""
        try:
            records = self._registry_cache().get(service)
        except RegistryError as exc:
            raise RPCError(Code.UNAVAILABLE, f"the registry could not be read: {exc}",
                           processed=False) from None
        balancer = _core.Balancer(self._strategy, outlier=self._outlier)
        self._update(balancer, records)
        return balancer

    def _update(self, balancer: _core.Balancer, records: Iterable[ServiceRecord]) -> None:
        # address -> Balancer.update's node: (address, version, metadata, key)
        nodes: dict[str, tuple[str, str, dict[str, str], str]] = {}
        resting: dict[str, tuple[str, str, dict[str, str], str]] = {}
        for r in records:
            for n in r.nodes:
                # A node that says it is not serving (Service.set_serving(False))
                # gets calls only when no other node is left.
                into = resting if n.metadata.get("health") == "not_serving" else nodes
                into[n.address] = (n.address, r.version, dict(n.metadata), n.public_key)
                if n.public_key:
                    self._node_keys[n.address] = n.public_key
        nodes = nodes or resting
        balancer.update(nodes[a] for a in sorted(nodes))  # state persists in place

    def _on_change(self, service: str, records: list[ServiceRecord]) -> None:
        """The registry watch says `service` changed (on the cache's thread)."""
        balancer = self._core.known_balancer(service)
        if balancer is None:
            return
        loop = self._core.event_loop() if self._is_async else None
        if loop is None:
            self._update(balancer, records)  # picks hold the GIL: one swap
            return
        try:  # the loop's thread owns the balancer
            loop.call_soon_threadsafe(self._update, balancer, records)
        except RuntimeError:  # the loop is closed
            pass

    def _pick(self, service: str) -> str | None:
        return self._core.pick(service)

    def _invoke_call(self, call: Call) -> Any:
        """The innermost link of the interceptor chain: the core's call
        (a value for Client, a Future for AsyncClient)."""
        args, kwargs = self._call_args(call)
        return self._core.call(*args, **kwargs)

    @staticmethod
    def _call_args(call: Call) -> tuple[tuple[str, str, Any], dict[str, Any]]:
        return ((call.service, call.endpoint, call.request),
                {"timeout": call.timeout, "metadata": call.metadata or None,
                 "address": call.address, "response_type": call.response_type,
                 "content_type": call.content_type, "server_key": call.server_key,
                 **call.options})

    def close(self) -> None:
        """Close the client (Client and AsyncClient each say how)."""
        raise NotImplementedError

    def _close_cache(self) -> None:
        if self._cache is not None:
            self._cache.close()
            self._cache = None

    def stats(self) -> dict[str, Any]:
        """The channel pool's counters (open, opens, reuses, evictions,
        idle_closed), summed over threads."""
        return self._core.pool_stats()

    def balancer(self, service: str) -> _core.Balancer:
        """The core's balancer of `service`: its nodes with their in-flight
        counts, latency and ejection state."""
        return self._core.balancer(service)


class Client(_Base):
    """A blocking client; safe to share between threads. Options: see
    ``_Base.__init__`` (the same for both clients)."""

    def call(self, service: str, endpoint: str, request: Any = None, *,
             timeout: float | None = None, metadata: dict[str, Any] | None = None,
             address: str | None = None, response_type: Any = None,
             content_type: str | None = None, server_key: str | None = None,
             **options: Any) -> Any:
        """Call ``endpoint`` of ``service`` and return the decoded reply.

        ``options``: ``retry`` (a RetryPolicy, or False), ``idempotent``
        (retrying is safe even if a handler ran), ``key`` (for the hash
        selector), ``version`` and ``node_filter`` (node metadata that must
        match), ``wait_for_ready`` (gRPC's name; default: the client's,
        False): by default an attempt whose node refuses the connection
        (nothing listens there) fails at once with UNAVAILABLE, never sent,
        and the call moves on to another node or fails fast;
        ``wait_for_ready=True`` waits for the node to accept, until the
        call's deadline (``connect_timeout`` does not cut that wait).

        Metadata the wire cannot carry raises RPCError before anything
        is sent: INVALID_ARGUMENT naming the key (empty, a NUL, not
        UTF-8), RESOURCE_EXHAUSTED for too many entries or too large a
        key, value or header."""
        return self._invoke(Call(service, endpoint, request, dict(metadata or {}), timeout,
                                 address, content_type, response_type, server_key, options))

    def close(self) -> None:
        """Close every socket (do not use the client from other threads meanwhile)."""
        self._closed = True
        self._core.close()
        self._close_cache()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncClient(_Base):
    """An asyncio client for the event loop it is first used on.

    ``call()`` returns an ``asyncio.Future``: the request leaves at once, or
    with the other calls of this loop iteration at its end; cancelling the
    Future cancels the call. With interceptors, it returns a Task running
    them.
    """

    _is_async = True

    def call(self, service: str, endpoint: str, request: Any = None, *,
             timeout: float | None = None, metadata: dict[str, Any] | None = None,
             address: str | None = None, response_type: Any = None,
             content_type: str | None = None, server_key: str | None = None,
             **options: Any) -> asyncio.Future[Any]:
        """Send the call (now, or at the end of this loop iteration with the
        others made in it); await the result (the decoded reply). Options
        as for Client.call, and ``hedge`` (a HedgingPolicy; idempotent calls
        only)."""
        call = Call(service, endpoint, request, dict(metadata or {}), timeout, address,
                    content_type, response_type, server_key, options)
        return asyncio.ensure_future(self._intercepted(call))

    def _deliver(self, address: str, frame: bytes, event_id: bytes, *, topic: str,
                 timeout: float, server_key: str | None = None) -> Awaitable[None]:
        """Send the prebuilt event `frame` (``_core.encode_event``) to the
        subscriber at `address` on this client's channels (Curve, monitors
        and refusals as for calls); the embedded broker's primitive, no
        interceptors. The Future resolves to None on the subscriber's ack
        (a reply bound to `event_id`, MAC checked with `topic`'s key);
        raises RPCError for its nack or term (``retry_after``: seconds the
        subscriber asked for, or None), UNAVAILABLE when it could not be
        sent or the connection was lost, DEADLINE_EXCEEDED after
        `timeout` seconds. An answer that fails the MAC is dropped and
        counted, not taken for an ack. The frame's request id keys the
        answer: use a client of its own for publishing (its ids are not
        the client's)."""
        return self._core.deliver(address, frame, event_id, topic=topic, timeout=timeout,
                                  server_key=server_key)

    async def _intercepted(self, call: Call) -> Any:
        result = self._invoke(call)
        while hasattr(result, "__await__"):
            result = await result
        return result

    def close(self) -> None:
        """Fail pending calls with UNAVAILABLE and close every socket."""
        self._closed = True
        self._core.close()
        self._close_cache()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


# -- every client of the process: closed at exit, reopened in a forked child ----

log = logging.getLogger("zmicro.client")
_open_clients: weakref.WeakSet[_Base] = weakref.WeakSet()


def _close_at_exit() -> None:
    # Before the interpreter finalizes: a client's registry watch threads
    # (daemons) still running while modules are torn down print "Error in
    # sys.excepthook" at exit. Nothing may be printed at exit: a failure
    # here is only logged at DEBUG.
    for client in list(_open_clients):
        if not client._closed:
            try:
                client.close()
            except Exception:  # noqa: BLE001 - e.g. an AsyncClient whose loop is gone
                log.debug("closing a client at exit failed", exc_info=True)


def _reopen_after_fork() -> None:
    for client in list(_open_clients):
        client._reopen_in_child()


# pyzmq registered its own exit hook when imported (before this module):
# atexit runs hooks last-in first-out, so clients close while pyzmq is whole.
atexit.register(_close_at_exit)
os.register_at_fork(after_in_child=_reopen_after_fork)
