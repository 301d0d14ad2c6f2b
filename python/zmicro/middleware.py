"""Interceptors: ordered chains around every call and every handler.

go-micro calls them wrappers, gRPC interceptors. Authentication, rate
limits, retries, metrics and tracing are built on them.

A **server interceptor** is ``interceptor(request, ctx, next)``: it may look at
``ctx`` (metadata, deadline, principal), refuse by raising
:class:`~zmicro.errors.RPCError`, and produces the result, usually by
returning ``next(request, ctx)``. For an ``async def`` handler, ``next``
returns an awaitable: an interceptor that needs the result itself is then an
``async def`` that awaits it.

A **client interceptor** is ``interceptor(call, next)`` with a :class:`Call`
describing the call (change its fields, e.g. its metadata, before passing it
on); ``next(call)`` performs it and returns the result (the decoded reply).
A retry interceptor calls ``next`` again. For the AsyncClient, ``next``
returns an awaitable and interceptors may be ``async def``.

The first interceptor of a list is the outermost: it runs first on the way
in and last on the way out.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Call", "ClientInterceptor", "ServerInterceptor", "chain_client", "chain_server"]

Handler = Callable[[Any, Any], Any]
ServerInterceptor = Callable[[Any, Any, Handler], Any]


@dataclass(slots=True)
class Call:
    """One client call, as its interceptors see it."""

    service: str
    endpoint: str
    request: Any
    metadata: dict[str, Any] = field(default_factory=dict)
    timeout: float | None = None          # seconds; None: the client's default
    address: str | None = None            # a node chosen by the caller
    content_type: str | None = None
    response_type: Any = None
    server_key: str | None = None         # the node's Curve key, when the caller knows it
    # Balancing and retry options given to call(): retry, idempotent, key,
    # version, node_filter (only those the caller set).
    options: dict[str, Any] = field(default_factory=dict)


ClientInterceptor = Callable[[Call, Callable[[Call], Any]], Any]


def chain_server(interceptors: Sequence[ServerInterceptor], handler: Handler) -> Handler:
    """`handler` wrapped by `interceptors`, the first outermost."""
    wrapped = handler
    for interceptor in reversed(interceptors):
        wrapped = _server_link(interceptor, wrapped)
    return wrapped


def _server_link(interceptor: ServerInterceptor, inner: Handler) -> Handler:
    def link(request: Any, ctx: Any) -> Any:
        return interceptor(request, ctx, inner)

    link.__wrapped__ = inner  # type: ignore[attr-defined]  # (mypy knows no attributes on functions)
    return link


def chain_client(interceptors: Sequence[ClientInterceptor],
                 invoke: Callable[[Call], Any]) -> Callable[[Call], Any]:
    """`invoke` wrapped by `interceptors`, the first outermost."""
    wrapped = invoke
    for interceptor in reversed(interceptors):
        wrapped = _client_link(interceptor, wrapped)
    return wrapped


def _client_link(interceptor: ClientInterceptor,
                 inner: Callable[[Call], Any]) -> Callable[[Call], Any]:
    def link(call: Call) -> Any:
        return interceptor(call, inner)

    return link


def is_async(fn: Any) -> bool:
    """True for coroutine functions, also behind functools.partial or as
    an object whose __call__ is one."""
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None))
