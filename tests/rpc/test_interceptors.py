"""Interceptors: ordered chains around calls and handlers."""

from __future__ import annotations

import asyncio

import pytest

import zmicro
from zmicro import Code, RPCError


def _service(registry, interceptors):
    svc = zmicro.Service("icpt", registry=registry, interceptors=interceptors)

    @svc.handler("I.Echo")
    def echo(req, ctx):
        return req

    @svc.handler("I.Async")
    async def async_echo(req, ctx):
        await asyncio.sleep(0)
        return req

    return svc


def test_server_order_metadata_deadline_result(memory_registry, serve):
    log = []

    def outer(request, ctx, next):
        log.append(("outer-in", dict(ctx.metadata), ctx.time_remaining() is not None))
        result = next(request, ctx)
        log.append(("outer-out", result))
        return result

    def inner(request, ctx, next):
        log.append(("inner-in", request))
        return next(request + 1, ctx)  # may change what the handler sees

    serve(_service(memory_registry, [outer, inner]))
    with zmicro.Client(registry=memory_registry) as c:
        assert c.call("icpt", "I.Echo", 1, metadata={"who": "ada"}) == 2
    assert log == [("outer-in", {"who": b"ada"}, True), ("inner-in", 1), ("outer-out", 2)]


def test_server_interceptor_refuses(memory_registry, serve):
    def auth(request, ctx, next):
        if ctx.metadata.get("token") != b"ok":
            raise RPCError(Code.UNAUTHENTICATED, "no token")
        return next(request, ctx)

    serve(_service(memory_registry, [auth]))
    with zmicro.Client(registry=memory_registry) as c:
        with pytest.raises(RPCError) as err:
            c.call("icpt", "I.Echo", 1)
        assert err.value.code == Code.UNAUTHENTICATED
        assert c.call("icpt", "I.Echo", 1, metadata={"token": "ok"}) == 1


def test_async_interceptor_sees_async_result(memory_registry, serve):
    seen = []

    async def observe(request, ctx, next):
        result = await next(request, ctx)
        seen.append(result)
        return result * 10

    serve(_service(memory_registry, [observe]), use_asyncio=True)

    async def go():
        async with zmicro.AsyncClient(registry=memory_registry) as c:
            return await c.call("icpt", "I.Async", 3)

    assert asyncio.run(go()) == 30
    assert seen == [3]


def test_client_order_and_retry(memory_registry, serve):
    serve(_service(memory_registry, []))
    log = []

    def outer(call, next):
        log.append("outer")
        call.metadata["via"] = "outer"
        try:
            return next(call)
        except RPCError:
            log.append("retry")
            call.endpoint = "I.Echo"
            return next(call)

    def inner(call, next):
        log.append(f"inner:{call.endpoint}:{call.metadata['via']}")
        return next(call)

    with zmicro.Client(registry=memory_registry,
                       interceptors=[outer, inner]) as c:
        assert c.call("icpt", "I.Missing", 5) == 5
    assert log == ["outer", "inner:I.Missing:outer", "retry", "inner:I.Echo:outer"]


def test_async_client_interceptors(memory_registry, serve):
    serve(_service(memory_registry, []))
    log = []

    async def timing(call, next):
        log.append("before")
        result = await next(call)
        log.append(("after", result))
        return result

    def sync_tag(call, next):
        call.metadata["tag"] = "t"
        return next(call)  # a Future: the async interceptor awaits it

    async def go():
        async with zmicro.AsyncClient(registry=memory_registry,
                                      interceptors=[timing, sync_tag]) as c:
            return await c.call("icpt", "I.Echo", 9)

    assert asyncio.run(go()) == 9
    assert log == ["before", ("after", 9)]
