"""Deadlines travel with requests, nested calls inherit them (and the
metadata), timeouts cancel, late replies are dropped."""

from __future__ import annotations

import asyncio
import time

import pytest

import zmicro
from zmicro import Code, RPCError

from ..helpers import eventually, eventually_async


def test_budget_travels(services, client):
    got = client.call("greeter-sync", "Greeter.Context", None, timeout=7.0)
    assert 0 < got["remaining"] <= 7.0
    assert got["remaining"] > 1.0  # generous: a loaded machine still fits


def test_metadata_travels(services, client):
    got = client.call("greeter-sync", "Greeter.Context", None,
                      metadata={"traceparent": "00-abc-def-01", "x-bin": b"\x01\x02"})
    assert got["metadata"]["traceparent"] == "00-abc-def-01"
    assert got["metadata"]["x-bin"] == "\x01\x02"


@pytest.mark.parametrize("service, endpoint", [
    ("greeter-sync", "Greeter.NestedInline"),
    ("greeter-sync", "Greeter.NestedBlocking"),
    ("greeter-async", "Greeter.NestedInline"),
    ("greeter-async", "Greeter.NestedBlocking"),
    ("greeter-async", "Greeter.NestedAsync"),
])
def test_nested_calls_inherit_deadline_and_metadata(services, client, service, endpoint):
    """The downstream service sees the caller's shorter deadline (4 s, not
    the nested client's default 5 s... but at most what was left) and the
    caller's metadata, from inline, blocking and async handlers alike."""
    got = client.call(service, endpoint, None, timeout=3.0, metadata={"tenant": "acme"})
    assert got["service"] == "down"
    assert got["metadata"] == {"tenant": "acme"}
    assert 0 < got["remaining"] <= 3.0


def test_timeout_is_deadline_exceeded_and_cancels(services, client):
    """The caller gives up; the server's handler sees ctx.cancelled."""
    before = client.call("greeter-sync", "Greeter.Cancelled", None)
    t0 = time.monotonic()
    with pytest.raises(RPCError) as err:
        client.call("greeter-sync", "Greeter.Sleep", {"seconds": 30}, timeout=0.3)
    assert err.value.code == Code.DEADLINE_EXCEEDED
    assert time.monotonic() - t0 < 20  # it did not wait for the handler
    eventually(lambda: client.call("greeter-sync", "Greeter.Cancelled", None) != before,
               "the server sees the cancel")


def test_late_reply_never_answers_a_later_call(services, client):
    """A reply that arrives after its call timed out is dropped, not handed
    to the next call on the same socket."""
    with pytest.raises(RPCError):
        client.call("greeter-sync", "Greeter.Sleep", {"seconds": 0.5}, timeout=0.05)
    # The late reply ({"cancelled": ...}) may arrive while these run.
    for i in range(20):
        assert client.call("greeter-sync", "Greeter.Echo", i) == i
        time.sleep(0.05)


def test_async_timeout_cancels_the_task(services, registry):
    async def go():
        async with zmicro.AsyncClient(registry=registry) as c:
            before = await c.call("greeter-async", "Greeter.Cancelled", None)
            with pytest.raises(RPCError) as err:
                await c.call("greeter-async", "Greeter.AsyncSleep", {"seconds": 30}, timeout=0.2)
            assert err.value.code == Code.DEADLINE_EXCEEDED
            await eventually_async(lambda: cancelled_since(c, before), "the task is cancelled")
    asyncio.run(go())


def test_async_deadlines_out_of_sending_order(services, registry):
    """A call with a short timeout sent after calls with long ones ends at
    its own deadline, not theirs (the async channel keeps deadlines that
    come in sending order without a timer entry each), and the long calls
    still end at theirs."""
    async def go():
        async with zmicro.AsyncClient(registry=registry) as c:
            sleep = {"seconds": 30}
            long = [c.call("greeter-async", "Greeter.AsyncSleep", sleep, timeout=t)
                    for t in (20.0, 25.0)]
            short = c.call("greeter-async", "Greeter.AsyncSleep", sleep, timeout=0.3)
            later = c.call("greeter-async", "Greeter.AsyncSleep", sleep, timeout=1.0)
            done, _ = await asyncio.wait([*long, short, later], timeout=15,
                                         return_when=asyncio.FIRST_COMPLETED)
            assert done == {short}  # long before the long calls' deadlines
            assert short.exception().code == Code.DEADLINE_EXCEEDED
            with pytest.raises(RPCError) as err:
                await later
            assert err.value.code == Code.DEADLINE_EXCEEDED
            assert not any(f.done() for f in long)
            for f in long:
                f.cancel()
    asyncio.run(go())


async def cancelled_since(c, before: int) -> bool:
    """Whether the async handlers saw a cancel since their count was ``before``."""
    return await c.call("greeter-async", "Greeter.Cancelled", None) != before


def test_async_future_cancel_sends_cancel(services, registry):
    """Cancelling the Future the AsyncClient returned cancels the server side."""
    async def go():
        async with zmicro.AsyncClient(registry=registry, timeout=30) as c:
            before = await c.call("greeter-async", "Greeter.Cancelled", None)
            fut = c.call("greeter-async", "Greeter.AsyncSleep", {"seconds": 30})
            await asyncio.sleep(0.2)
            fut.cancel()
            await eventually_async(lambda: cancelled_since(c, before), "the server side is cancelled")
            # The channel keeps working.
            assert await c.call("greeter-async", "Greeter.Echo", 7) == 7
    asyncio.run(go())


def test_expired_deadline_is_not_sent(services, client):
    with pytest.raises(RPCError) as err:
        client.call("greeter-sync", "Greeter.Echo", 1, timeout=-1)
    assert err.value.code == Code.DEADLINE_EXCEEDED


def test_handler_calling_its_own_service_fails_fast(services, client):
    """An inline handler's sync call back into its own service could never
    be answered (its thread is the one serving): refused at once."""
    t0 = time.monotonic()
    with pytest.raises(RPCError) as err:
        client.call("greeter-sync", "Greeter.CallSelf", None, timeout=10)
    # An RPCError raised in a handler is answered with its own code.
    assert err.value.code == Code.FAILED_PRECONDITION
    assert "blocking=True" in err.value.detail
    assert time.monotonic() - t0 < 8


def test_self_call_error_in_process(memory_registry, serve):
    """The same, in process, where the exact error is visible."""
    svc = zmicro.Service("selfish", registry=memory_registry)
    client = zmicro.Client(registry=memory_registry, timeout=5)
    seen = []

    @svc.handler("S.Echo")
    def echo(req, ctx):
        return req

    @svc.handler("S.Self")
    def self_call(req, ctx):
        try:
            return client.call("selfish", "S.Echo", 1)
        except RPCError as e:
            seen.append(e)
            raise

    serve(svc)
    with pytest.raises(RPCError):
        client.call("selfish", "S.Self", None)
    assert seen and seen[0].code == Code.FAILED_PRECONDITION
    assert "blocking=True" in seen[0].detail
    client.close()


def test_deadline_passed_before_a_blocking_handler_starts(memory_registry, serve):
    """A blocking handler queued behind a busy pool is not started once its
    deadline has passed."""
    import threading
    release = threading.Event()
    started = []
    svc = zmicro.Service("busy", registry=memory_registry, workers=1)

    @svc.handler("B.Hold", blocking=True)
    def hold(req, ctx):
        release.wait(30)
        return "held"

    @svc.handler("B.Quick", blocking=True)
    def quick(req, ctx):
        started.append(1)
        return "quick"

    @svc.handler("B.Ping")
    def ping(req, ctx):
        return "pong"

    serve(svc)
    c = zmicro.Client(registry=memory_registry)
    # Connected (the secure handshake done) before the 0.2 s call below.
    assert c.call("busy", "B.Ping", None, timeout=30) == "pong"
    holder = threading.Thread(target=lambda: c.call("busy", "B.Hold", None, timeout=30))
    holder.start()
    eventually(lambda: svc.stats()["in_flight"] >= 1, "the pool's one worker is taken")
    with pytest.raises(RPCError) as err:
        c.call("busy", "B.Quick", None, timeout=0.2)
    assert err.value.code == Code.DEADLINE_EXCEEDED
    release.set()
    holder.join(30)
    time.sleep(0.3)  # the pool now reaches B.Quick: expired, not run
    assert started == []
    c.close()
