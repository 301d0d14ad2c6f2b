"""Sync and asyncio clients against sync and asyncio services, each in its
own process, found through the embedded registry or called by address."""

from __future__ import annotations

import asyncio

import pytest

import zmicro
from zmicro import Code, RPCError

from .app import HelloReply, HelloRequest

SERVERS = ["sync", "async"]


def call_sync(registry, service, endpoint, request=None, **kw):
    with zmicro.Client(registry=registry, timeout=10) as c:
        return c.call(service, endpoint, request, **kw)


def call_async(registry, service, endpoint, request=None, **kw):
    async def go():
        async with zmicro.AsyncClient(registry=registry, timeout=10) as c:
            fut = c.call(service, endpoint, request, **kw)
            assert isinstance(fut, asyncio.Future)  # sent at once, not a coroutine
            return await fut
    return asyncio.run(go())


CALLERS = {"sync-client": call_sync, "async-client": call_async}


@pytest.fixture(params=sorted(CALLERS))
def call(request, registry):
    fn = CALLERS[request.param]
    return lambda *a, **kw: fn(registry, *a, **kw)


@pytest.mark.parametrize("server", SERVERS)
def test_hello_dict(services, call, server):
    svc = services[server].name
    assert call(svc, "Greeter.Hello", {"name": "Ada"}) == {"message": "Hello Ada"}


@pytest.mark.parametrize("server", SERVERS)
def test_hello_typed(services, call, server):
    svc = services[server].name
    got = call(svc, "Greeter.Hello", HelloRequest("Ada", times=2), response_type=HelloReply)
    assert got == HelloReply(message="Hello Ada Hello Ada")


@pytest.mark.parametrize("server", SERVERS)
def test_by_address_without_discovery(services, call, server):
    proc = services[server]
    got = call(proc.name, "Greeter.Hello", {"name": "Bo"}, address=proc.address)
    assert got == {"message": "Hello Bo"}


@pytest.mark.parametrize("server", SERVERS)
def test_wrong_service_at_an_address_is_refused(services, call, server):
    """An address that belongs to another service (stale registry data)
    never runs that service's endpoint of the same name."""
    proc = services[server]
    with pytest.raises(RPCError) as err:
        call("someone-else", "Greeter.Hello", {"name": "Bo"}, address=proc.address)
    assert err.value.code == Code.UNAVAILABLE
    assert proc.name in err.value.detail and "someone-else" in err.value.detail


def test_async_handlers(services, call):
    assert call("greeter-async", "Greeter.Wave", {"x": 1}) == {"wave": {"x": 1}, "async": True}


@pytest.mark.parametrize("server", SERVERS)
def test_unknown_endpoint(services, call, server):
    with pytest.raises(RPCError) as err:
        call(services[server].name, "Greeter.Nope", {})
    assert err.value.code == Code.UNIMPLEMENTED
    assert "Greeter.Nope" in err.value.detail


@pytest.mark.parametrize("server", SERVERS)
def test_invalid_argument_names_the_field(services, call, server):
    with pytest.raises(RPCError) as err:
        call(services[server].name, "Greeter.Hello", {"name": 5})
    assert err.value.code == Code.INVALID_ARGUMENT
    assert "$.name" in err.value.detail
    with pytest.raises(RPCError) as err:
        call(services[server].name, "Greeter.Hello", {"times": 1})
    assert err.value.code == Code.INVALID_ARGUMENT and "name" in err.value.detail


@pytest.mark.parametrize("server", SERVERS)
def test_handler_exception_is_internal_without_details(services, call, server):
    with pytest.raises(RPCError) as err:
        call(services[server].name, "Greeter.Fail", {})
    assert err.value.code == Code.INTERNAL
    assert "secret-internal-detail" not in str(err.value)
    assert "Traceback" not in str(err.value)
    assert err.value.id == services[server].name


@pytest.mark.parametrize("server", SERVERS)
def test_rpc_error_crosses_the_wire(services, call, server):
    with pytest.raises(RPCError) as err:
        call(services[server].name, "Greeter.Refuse", {})
    assert (err.value.code, err.value.detail, err.value.id) == (
        Code.PERMISSION_DENIED, "not you", "gatekeeper")
    # the status arrives as the enum, whose str() names it (issue 10, point 16)
    assert type(err.value.code) is Code and str(err.value.code) == "Code.PERMISSION_DENIED"


def test_no_such_service_is_unavailable(services, call):
    with pytest.raises(RPCError) as err:
        call("no-such-service", "X.Y", {})
    assert err.value.code == Code.UNAVAILABLE


def test_unreachable_address_is_unavailable(call):
    with pytest.raises(RPCError) as err:
        call("x", "X.Y", {}, address="tcp://127.0.0.1:9", timeout=0.3)
    assert err.value.code == Code.UNAVAILABLE


def test_server_logs_the_traceback(registry_dir):
    """The INTERNAL error's cause is in the service's log, not the reply."""
    from .conftest import ServiceProcess
    proc = ServiceProcess("sync", "logger-check", registry_dir)
    try:
        with zmicro.Client(timeout=10) as c:
            with pytest.raises(RPCError):
                c.call("logger-check", "Greeter.Fail", {}, address=proc.address)
    finally:
        log = proc.stop()
    assert "secret-internal-detail" in log and "Traceback" in log


def test_ipc_address(tmp_path, registry_dir):
    from .conftest import ServiceProcess
    proc = ServiceProcess("sync", "ipc-greeter", registry_dir,
                          address=f"ipc://{tmp_path}/greeter.sock")
    try:
        assert proc.address == f"ipc://{tmp_path}/greeter.sock"
        with zmicro.Client(timeout=10) as c:
            assert c.call("ipc-greeter", "Greeter.Hello", {"name": "ipc"},
                          address=proc.address) == {"message": "Hello ipc"}
    finally:
        proc.stop()


def test_exact_tcp_address(registry_dir, unused_tcp_port):
    from .conftest import ServiceProcess
    address = f"tcp://127.0.0.1:{unused_tcp_port}"
    proc = ServiceProcess("sync", "fixed-port", registry_dir, address=address)
    try:
        assert proc.address == address
    finally:
        proc.stop()


def test_round_robin_rotates_across_calls(services, registry_dir, registry):
    """Two nodes of one service: consecutive calls alternate between them,
    also across separate call() invocations (go-micro's did not)."""
    from .conftest import ServiceProcess
    second = ServiceProcess("sync", "greeter-sync", registry_dir, downstream="down")
    try:
        with zmicro.Client(registry=registry, timeout=10) as c:
            nodes = [c.call("greeter-sync", "Greeter.Stats", None)["node"] for _ in range(6)]
        assert len(set(nodes)) == 2
        assert nodes[0::2] == [nodes[0]] * 3 and nodes[1::2] == [nodes[1]] * 3
    finally:
        second.stop()


def test_many_threads_share_one_client(services, client):
    import concurrent.futures
    def work(i):
        return client.call("greeter-sync", "Greeter.Echo", i)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        assert list(pool.map(work, range(400))) == list(range(400))


def test_async_many_in_flight(services, registry):
    async def go():
        async with zmicro.AsyncClient(registry=registry, timeout=30) as c:
            futs = [c.call("greeter-async", "Greeter.Echo", i) for i in range(500)]
            return await asyncio.gather(*futs)
    assert asyncio.run(go()) == list(range(500))
