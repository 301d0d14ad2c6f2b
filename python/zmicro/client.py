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
picked round robin (rotating across calls) or at random; ``address=`` calls
one node directly, without discovery (go-micro's ``WithAddress``).

Errors are :class:`~zmicro.errors.RPCError`: the server's code for an error
reply, ``UNAVAILABLE`` when no node could be reached (the request was never
sent: safe to retry), ``DEADLINE_EXCEEDED`` when the reply did not come in
time (a cancel frame tells the server).

``Client`` may be shared by threads (it keeps one socket per node per
thread). ``AsyncClient`` belongs to one event loop; its ``call()`` sends at
once and returns an awaitable Future, not a coroutine: no Task per call.
"""

from __future__ import annotations

import asyncio
import threading
import time
import weakref
from collections.abc import Sequence
from typing import Any

import zmq

from . import _core
from .codec import DEFAULT_CONTENT_TYPE, codecs
from .errors import Code, RPCError
from .middleware import Call, ClientInterceptor, chain_client
from .registry import Registry, default_registry
from .security import resolve_insecure

__all__ = ["AsyncClient", "Client", "DEFAULT_TIMEOUT"]

DEFAULT_TIMEOUT = 5.0
_STRATEGIES = {"round_robin": _core.SELECT_ROUND_ROBIN, "random": _core.SELECT_RANDOM}
_current = _core.CURRENT.get
_monotonic = time.monotonic


def _make_socket(zctx: zmq.Context, address: str, max_message_size: int) -> zmq.Socket:
    sock = zctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    # Queue nothing for a peer that is not connected: a call either reaches
    # a node or fails as UNAVAILABLE, never sits in a dead pipe.
    sock.setsockopt(zmq.IMMEDIATE, 1)
    sock.setsockopt(zmq.MAXMSGSIZE, max_message_size)
    sock.connect(address)
    return sock


class _Base:
    """What both clients share: defaults, codecs, node selection."""

    def __init__(self, *, registry: Registry | None, selector: str, timeout: float,
                 content_type: str, insecure: bool | None,
                 interceptors: Sequence[ClientInterceptor], context: zmq.Context | None,
                 cache_ttl: float, max_message_size: int) -> None:
        if selector not in _STRATEGIES:
            raise ValueError(f"selector is one of {sorted(_STRATEGIES)}, not {selector!r}")
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self.insecure = resolve_insecure(insecure)
        self.timeout = timeout
        self.content_type = content_type
        self._registry = registry
        self._strategy = _STRATEGIES[selector]
        self._interceptors = list(interceptors)
        self._zctx = context or zmq.Context.instance()
        self._cache_ttl = cache_ttl
        self._max_message_size = max_message_size
        self._codecs = codecs()
        self._decoders: dict[tuple[str, Any], Any] = {}
        self._selectors: dict[str, tuple[float, _core.NodeSelector]] = {}
        self._lock = threading.Lock()

    # -- codecs ------------------------------------------------------------

    def _codec(self, content_type: str):
        try:
            return self._codecs[content_type]
        except KeyError:
            raise ValueError(f"no codec registered for {content_type!r}") from None

    def _decoder(self, content_type: str, response_type: Any):
        key = (content_type, response_type)
        decode = self._decoders.get(key)
        if decode is None:
            decode = self._codec(content_type).decoder(Any if response_type is None else response_type)
            self._decoders[key] = decode
        return decode

    # -- nodes -------------------------------------------------------------

    def _pick(self, service: str) -> str:
        entry = self._selectors.get(service)
        now = _monotonic()
        if entry is None or entry[0] <= now:
            entry = self._refresh(service, entry, now)
        address = entry[1].pick()
        if address is None:
            raise RPCError(Code.UNAVAILABLE, f"no node of service {service!r} is registered")
        return address

    def _refresh(self, service: str, entry, now: float):
        registry = self._registry or default_registry()
        try:
            records = registry.get(service)
        except Exception:
            if entry is not None:  # the registry is down: keep the nodes we knew
                return entry
            raise
        nodes = sorted({n.address for r in records for n in r.nodes})
        with self._lock:
            old = self._selectors.get(service)
            if old is not None:
                old[1].update(nodes)  # keep the rotation going
                selector = old[1]
            else:
                selector = _core.NodeSelector(nodes, self._strategy)
            entry = (now + self._cache_ttl, selector)
            self._selectors[service] = entry
        return entry

    # -- calls -------------------------------------------------------------

    def _prepare(self, service: str, endpoint: str, request: Any, timeout: float | None,
                 metadata: dict | None, content_type: str | None):
        """(content type, body, deadline, metadata, trace ids) of a call."""
        content_type = content_type or self.content_type
        body = self._codec(content_type).encode(request)
        deadline = _monotonic() + (self.timeout if timeout is None else timeout)
        trace = (0, 0, 0)
        parent = _current(None)
        if parent is not None:  # inside a handler: inherit deadline and metadata
            inherited = parent.deadline
            if inherited is not None and inherited < deadline:
                deadline = inherited
            if parent.metadata:
                metadata = {**parent.metadata, **metadata} if metadata else dict(parent.metadata)
            trace = (parent.trace_hi, parent.trace_lo, parent.span_id)
        return content_type, body, deadline, metadata, trace


class Client(_Base):
    """A blocking client; safe to share between threads."""

    def __init__(self, *, registry: Registry | None = None, selector: str = "round_robin",
                 timeout: float = DEFAULT_TIMEOUT, content_type: str = DEFAULT_CONTENT_TYPE,
                 insecure: bool | None = None, interceptors: Sequence[ClientInterceptor] = (),
                 context: zmq.Context | None = None, cache_ttl: float = 1.0,
                 max_message_size: int = 64 * 1024 * 1024) -> None:
        super().__init__(registry=registry, selector=selector, timeout=timeout,
                         content_type=content_type, insecure=insecure,
                         interceptors=interceptors, context=context, cache_ttl=cache_ttl,
                         max_message_size=max_message_size)
        self._local = threading.local()
        self._channels: weakref.WeakSet = weakref.WeakSet()
        self._closed = False
        self._invoke = chain_client(self._interceptors, self._invoke_call) if self._interceptors else None

    def call(self, service: str, endpoint: str, request: Any = None, *,
             timeout: float | None = None, metadata: dict[str, Any] | None = None,
             address: str | None = None, response_type: Any = None,
             content_type: str | None = None) -> Any:
        """Call ``endpoint`` of ``service`` and return the decoded reply."""
        if self._invoke is not None:
            return self._invoke(Call(service, endpoint, request, dict(metadata or {}), timeout,
                                     address, content_type, response_type))
        return self._call(service, endpoint, request, timeout, metadata, address,
                          response_type, content_type)

    def _invoke_call(self, call: Call) -> Any:
        return self._call(call.service, call.endpoint, call.request, call.timeout,
                          call.metadata or None, call.address, call.response_type,
                          call.content_type)

    def _call(self, service, endpoint, request, timeout, metadata, address, response_type,
              content_type):
        if self._closed:
            raise RPCError(Code.UNAVAILABLE, "client closed")
        content_type, body, deadline, metadata, trace = self._prepare(
            service, endpoint, request, timeout, metadata, content_type)
        if address is None:
            address = self._pick(service)
        parent = _current(None)
        if parent is not None and parent._blocks_address == address:
            raise RPCError(
                Code.FAILED_PRECONDITION,
                f"{parent.service}/{parent.endpoint} calls its own service from the thread "
                f"that serves it: the call could never be answered; make the handler "
                f"blocking=True, or async with AsyncClient")
        body = self._channel(address).call(service, endpoint, content_type, body, deadline,
                                           metadata, *trace)
        return self._decoder(content_type, response_type)(body)

    def _channel(self, address: str) -> _core.Channel:
        channels = getattr(self._local, "channels", None)
        if channels is None:
            channels = self._local.channels = {}
        channel = channels.get(address)
        if channel is None:
            channel = _core.Channel(_make_socket(self._zctx, address, self._max_message_size),
                                    address)
            channels[address] = channel
            self._channels.add(channel)
        return channel

    def close(self) -> None:
        """Close every socket (do not use the client from other threads meanwhile)."""
        self._closed = True
        for channel in list(self._channels):
            channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class AsyncClient(_Base):
    """An asyncio client for the event loop it is first used on.

    ``call()`` returns an ``asyncio.Future``: the request is already on its
    way when it returns. With interceptors, it returns a Task running them.
    """

    def __init__(self, *, registry: Registry | None = None, selector: str = "round_robin",
                 timeout: float = DEFAULT_TIMEOUT, content_type: str = DEFAULT_CONTENT_TYPE,
                 insecure: bool | None = None, interceptors: Sequence[ClientInterceptor] = (),
                 context: zmq.Context | None = None, cache_ttl: float = 1.0,
                 max_message_size: int = 64 * 1024 * 1024) -> None:
        super().__init__(registry=registry, selector=selector, timeout=timeout,
                         content_type=content_type, insecure=insecure,
                         interceptors=interceptors, context=context, cache_ttl=cache_ttl,
                         max_message_size=max_message_size)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._channels: dict[str, _core.AsyncChannel] = {}
        self._invoke = chain_client(self._interceptors, self._invoke_call) if self._interceptors else None

    def call(self, service: str, endpoint: str, request: Any = None, *,
             timeout: float | None = None, metadata: dict[str, Any] | None = None,
             address: str | None = None, response_type: Any = None,
             content_type: str | None = None) -> asyncio.Future:
        """Send the call now; await the result (the decoded reply)."""
        if self._invoke is not None:
            call = Call(service, endpoint, request, dict(metadata or {}), timeout, address,
                        content_type, response_type)
            return asyncio.ensure_future(self._intercepted(call))
        return self._call(service, endpoint, request, timeout, metadata, address,
                          response_type, content_type)

    async def _intercepted(self, call: Call) -> Any:
        result = self._invoke(call)
        while hasattr(result, "__await__"):
            result = await result
        return result

    def _invoke_call(self, call: Call) -> asyncio.Future:
        return self._call(call.service, call.endpoint, call.request, call.timeout,
                          call.metadata or None, call.address, call.response_type,
                          call.content_type)

    def _call(self, service, endpoint, request, timeout, metadata, address, response_type,
              content_type) -> asyncio.Future:
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        try:
            content_type, body, deadline, metadata, trace = self._prepare(
                service, endpoint, request, timeout, metadata, content_type)
            if address is None:
                address = self._pick(service)
            channel = self._channels.get(address)
            if channel is None:
                if asyncio.get_running_loop() is not loop:
                    raise RuntimeError("an AsyncClient belongs to the event loop it was first used on")
                channel = _core.AsyncChannel(
                    _make_socket(self._zctx, address, self._max_message_size), address, loop)
                self._channels[address] = channel
        except BaseException as exc:
            fut = loop.create_future()
            fut.set_exception(exc)
            return fut
        return channel.call(service, endpoint, content_type, body, deadline,
                            self._decoder(content_type, response_type), metadata, *trace)

    def close(self) -> None:
        """Fail pending calls with UNAVAILABLE and close every socket."""
        for channel in self._channels.values():
            channel.close()
        self._channels.clear()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc) -> None:
        self.close()
