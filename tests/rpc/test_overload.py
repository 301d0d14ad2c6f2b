"""A service under more load than it can take (docs/protocol.md §1 and
§4.2): a burst of calls to a slow inline handler, a caller that does not
read its answers.

- Requests waiting for an inline handler count against max_in_flight, so
  beyond it callers are refused at once; one whose deadline passed while
  it waited is not run, and a cancel overtakes the request it cancels: a
  burst costs its callers at most its deadlines, not a lock-out of
  (burst × handler time).
- An answer to a caller whose queue is full waits in the server and goes
  out when the caller reads: every caller learns its outcome, refusals
  included, long before its deadline.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import pytest
import zmq

import zmicro
from zmicro import Code, RPCError, wire
from zmicro.registry import MemoryRegistry

from .raw_peer import cancel, request

def _header(frame: bytes) -> wire.Header:
    """The header message at the start of a frame (an inline body may follow)."""
    return wire.decode_header(frame[:8 + 8 * int.from_bytes(frame[4:8], "little")])


# A 10 ms inline handler and a burst that would keep it busy for 6 s if
# every request ran: its deadline of 0.5 s must end it far sooner.
HANDLER_S = 0.010
BURST = 600
BURST_DEADLINE = 0.5


def _burst_service(serve, *, use_asyncio: bool = False, **options) -> zmicro.Service:
    svc = zmicro.Service("burst", registry=MemoryRegistry(), insecure=True, **options)

    @svc.handler("Slow.Work")  # inline: the service's own thread
    def work(req, ctx):
        time.sleep(HANDLER_S)
        return req

    serve(svc, use_asyncio=use_asyncio)
    return svc


async def _burst_then_one_call(registry) -> tuple[Counter, float, object]:
    """BURST calls with BURST_DEADLINE, then (once they all ended) one more
    call on the same client; returns the burst's outcomes, the seconds
    from the burst's deadline to the last call's answer, its result."""
    async with zmicro.AsyncClient(registry=registry, insecure=True, timeout=5.0) as client:
        assert await client.call("burst", "Slow.Work", 0) == 0  # connected
        started = time.monotonic()
        calls = [client.call("burst", "Slow.Work", i, timeout=BURST_DEADLINE)
                 for i in range(BURST)]
        outcomes = await asyncio.gather(*calls, return_exceptions=True)
        kinds = Counter("ok" if not isinstance(o, BaseException)
                        else o.code.name if isinstance(o, RPCError) else repr(o)
                        for o in outcomes)
        # Generous: locked out, this call would wait behind ~6 s of work
        # and fail at its deadline.
        result = await client.call("burst", "Slow.Work", "after", timeout=4.0)
        answered = time.monotonic() - (started + BURST_DEADLINE)
    return kinds, answered, result


@pytest.mark.parametrize("use_asyncio", [False, True], ids=["blocking", "asyncio"])
def test_a_burst_to_an_inline_handler_does_not_lock_its_client_out(serve, use_asyncio):
    svc = _burst_service(serve, use_asyncio=use_asyncio)
    kinds, answered, result = asyncio.run(_burst_then_one_call(svc._registry))
    assert result == "after"
    assert set(kinds) <= {"ok", "DEADLINE_EXCEEDED"}, kinds
    assert kinds["ok"] < BURST  # most expired: they were not all run
    stats = svc.stats()
    # The requests the server skipped never ran (cancelled or expired).
    assert stats["replies"].get("OK", 0) < BURST / 2
    assert answered < 3.0  # not locked out for the ~6 s the burst would take


def test_beyond_max_in_flight_queued_inline_requests_are_refused_at_once(serve):
    svc = _burst_service(serve, max_in_flight=50)
    kinds, answered, result = asyncio.run(_burst_then_one_call(svc._registry))
    assert result == "after"
    # 50 may wait (and run, or expire); the other 550 were refused when read.
    assert kinds["RESOURCE_EXHAUSTED"] >= BURST - 50 - 50, kinds
    assert svc.stats()["replies"]["RESOURCE_EXHAUSTED"] == kinds["RESOURCE_EXHAUSTED"]


def test_a_cancel_overtakes_its_queued_request(serve):
    """Raw peer: requests to a slow inline handler, each followed at once by
    its cancel; the first runs (nothing waited yet), the others are
    cancelled while they wait, so never run and never answered."""
    ran = []
    svc = zmicro.Service("cancels", registry=MemoryRegistry(), insecure=True)

    @svc.handler("Slow.Work")
    def work(req, ctx):
        ran.append(bytes(req))
        time.sleep(0.05)
        return req

    serve(svc)
    zctx = zmq.Context()
    try:
        sock = zctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(svc.address)
        for i in range(1, 21):
            h = request(i, service="cancels", endpoint="Slow.Work")
            sock.send_multipart([h.encode(), b"%d" % i])
            sock.send(cancel(i, service="cancels").encode())
        h = request(99, service="cancels", endpoint="Slow.Work")
        sock.send_multipart([h.encode(), b"last"])
        answers = []
        while sock.poll(5000):
            answer = _header(sock.recv_multipart()[0])
            answers.append(answer.request_id)
            if answer.request_id == 99:
                break
        assert answers[-1] == 99
        assert len(ran) < 5, ran  # not 21 × 50 ms of work
        assert svc.stats()["cancels"] == 20
    finally:
        zctx.destroy(linger=0)


@pytest.mark.parametrize("use_asyncio", [False, True], ids=["blocking", "asyncio"])
def test_answers_wait_for_a_full_queue_instead_of_being_dropped(serve, use_asyncio):
    """A caller sends many requests and reads nothing for a while: the
    server's queue to it (a high-water mark of 4, small socket buffers)
    fills at once. Every request, replied to or refused, still gets its
    answer when the caller reads, long before any deadline."""
    zctx = zmq.Context()
    zctx.setsockopt(zmq.SNDHWM, 4)
    zctx.setsockopt(zmq.RCVHWM, 4)
    zctx.setsockopt(zmq.SNDBUF, 4096)
    zctx.setsockopt(zmq.RCVBUF, 4096)
    svc = zmicro.Service("flooded", registry=MemoryRegistry(), insecure=True, context=zctx)
    svc.handler("Big.Echo")(lambda req, ctx: bytes(req) * 64)  # 16 KiB replies
    running = serve(svc, use_asyncio=use_asyncio)
    try:
        sock = zctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(svc.address)
        n = 400
        for i in range(1, n + 1):
            # Half to an endpoint the service lacks: refused (UNIMPLEMENTED).
            h = request(i, service="flooded",
                        endpoint="Big.Echo" if i % 2 else "Big.Missing")
            h.deadline_us = 60_000_000
            sock.send_multipart([h.encode(), b"x" * 256])
        deadline = time.monotonic() + 30
        while svc.stats()["replies_parked"] == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert svc.stats()["replies_parked"] > 0  # the queue was full
        answered = Counter()
        while len(answered) < n and sock.poll(5000):
            answer = _header(sock.recv_multipart()[0])
            answered[answer.request_id] += 1
        assert sorted(answered) == list(range(1, n + 1))
        assert set(answered.values()) == {1}
        stats = svc.stats()
        assert stats["replies_dropped"] == 0
        assert stats["replies"] == {"OK": n // 2, "UNIMPLEMENTED": n // 2}
    finally:
        running.stop()  # before its socket's context goes
        zctx.destroy(linger=0)
