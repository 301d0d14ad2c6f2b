"""Backpressure, garbage, counters."""

from __future__ import annotations

import threading
import time

import pytest
import zmq

import zmicro
from zmicro import Code, RPCError

from ..helpers import eventually


def test_in_flight_cap_answers_resource_exhausted(memory_registry, serve):
    release = threading.Event()
    svc = zmicro.Service("capped", registry=memory_registry, insecure=True, max_in_flight=2,
                         workers=4)

    @svc.handler("C.Hold", blocking=True)
    def hold(req, ctx):
        release.wait(30)
        return "done"

    serve(svc)
    c = zmicro.Client(registry=memory_registry, insecure=True, timeout=30)
    results = []
    threads = [threading.Thread(target=lambda: results.append(c.call("capped", "C.Hold", None)))
               for _ in range(2)]
    for t in threads:
        t.start()
    eventually(lambda: svc.stats()["in_flight"] >= 2, "both calls in flight")
    t0 = time.monotonic()
    with pytest.raises(RPCError) as err:
        c.call("capped", "C.Hold", None)
    assert err.value.code == Code.RESOURCE_EXHAUSTED
    assert time.monotonic() - t0 < 10  # at once, not after a queue drained
    release.set()
    for t in threads:
        t.join(30)
    assert results == ["done", "done"]
    stats = svc.stats()
    assert stats["replies"]["RESOURCE_EXHAUSTED"] == 1 and stats["replies"]["OK"] == 2
    c.close()


def test_full_send_queue_is_an_error_not_a_hang(memory_registry, serve):
    """A service that stops reading: the caller's queue fills and calls fail
    by their deadline (UNAVAILABLE: never sent) instead of hanging."""
    stuck = threading.Event()
    ctx = zmq.Context()
    # Small high-water marks, so a few messages fill the queues (the
    # defaults, 1000 messages a side, would take hundreds of megabytes).
    ctx.setsockopt(zmq.SNDHWM, 4)
    ctx.setsockopt(zmq.RCVHWM, 4)
    svc = zmicro.Service("stuck", registry=memory_registry, insecure=True, context=ctx)

    @svc.handler("S.Block")
    def block(req, ctx):  # inline: the whole service stops reading
        stuck.wait(60)
        return b""

    running = serve(svc)
    c = zmicro.Client(registry=memory_registry, insecure=True, timeout=0.5, context=ctx)
    try:
        with pytest.raises(RPCError):
            c.call("stuck", "S.Block", None)
        big = b"x" * 60_000
        codes = set()
        t0 = time.monotonic()
        for _ in range(400):  # > SNDHWM and the socket buffers
            try:
                c.call("stuck", "S.Block", big, timeout=0.02,
                       content_type="application/octet-stream")
            except RPCError as e:
                codes.add(e.code)
            if Code.UNAVAILABLE in codes:
                break
        assert Code.UNAVAILABLE in codes  # the queue filled: refused, not dropped
        assert time.monotonic() - t0 < 60
    finally:
        stuck.set()
        c.close()
        running.stop()  # before its socket's context goes
        ctx.destroy(0)


def test_garbage_flood_is_counted_and_service_keeps_answering(memory_registry, serve):
    svc = zmicro.Service("sturdy", registry=memory_registry, insecure=True)

    @svc.handler("S.Echo")
    def echo(req, ctx):
        return req

    serve(svc)
    ctx = zmq.Context()
    raw = ctx.socket(zmq.DEALER)
    raw.connect(svc.address)
    garbage = [
        [b""],
        [b"\x00" * 7],
        [b"not a header at all"],
        [b"\xff" * 64, b"body"],
        [zmicro.Header(version=1, kind=0).encode()[:-3]],
        [b"x"] * 40,
        [zmicro.Header(flags=zmicro.wire.FLAG_SIGNED).encode()],
    ]
    sent = 0
    with zmicro.Client(registry=memory_registry, insecure=True) as c:
        for round_ in range(50):
            for frames in garbage:
                raw.send_multipart(frames)
                sent += 1
            assert c.call("sturdy", "S.Echo", round_) == round_
        eventually(lambda: svc.stats()["malformed"] >= sent, f"{sent} malformed messages counted")
    stats = svc.stats()
    assert stats["malformed"] == sent
    assert stats["replies"]["OK"] == 50
    raw.close(0)
    ctx.term()


def test_unsupported_version_gets_an_error_reply(memory_registry, serve):
    svc = zmicro.Service("versioned", registry=memory_registry, insecure=True)

    @svc.handler("V.Echo")
    def echo(req, ctx):
        return req

    serve(svc)
    ctx = zmq.Context()
    raw = ctx.socket(zmq.DEALER)
    raw.connect(svc.address)
    raw.send_multipart([zmicro.Header(version=9, request_id=77, endpoint="V.Echo").encode(), b""])
    assert raw.poll(20000)
    frames = raw.recv_multipart()
    header = zmicro.decode_header(frames[0])
    assert header.kind == zmicro.Kind.ERROR and header.request_id == 77
    assert header.status == Code.UNIMPLEMENTED and "version 9" in header.detail
    raw.close(0)
    ctx.term()


def test_ping_pong(memory_registry, serve):
    svc = zmicro.Service("pinged", registry=memory_registry, insecure=True)

    @svc.handler("P.Echo")
    def echo(req, ctx):
        return req

    serve(svc)
    ctx = zmq.Context()
    raw = ctx.socket(zmq.DEALER)
    raw.connect(svc.address)
    zmicro.send_message(raw, zmicro.Header(kind=zmicro.Kind.PING, request_id=5), timeout=10)
    m = zmicro.recv_message(raw, timeout=20)
    assert (m.header.kind, m.header.request_id) == (zmicro.Kind.PONG, 5)
    raw.close(0)
    ctx.term()


def test_stats_counts(memory_registry, serve):
    svc = zmicro.Service("counted", registry=memory_registry, insecure=True)

    @svc.handler("C.Ok")
    def ok(req, ctx):
        return req

    @svc.handler("C.Boom")
    def boom(req, ctx):
        raise RuntimeError("x")

    serve(svc)
    with zmicro.Client(registry=memory_registry, insecure=True) as c:
        for i in range(5):
            c.call("counted", "C.Ok", i)
        for _ in range(3):
            with pytest.raises(RPCError):
                c.call("counted", "C.Boom", None)
        with pytest.raises(RPCError):
            c.call("counted", "C.Missing", None)
    stats = svc.stats()
    assert stats["requests"] == 9
    assert stats["replies"] == {"OK": 5, "INTERNAL": 3, "UNIMPLEMENTED": 1}
    assert stats["errors"] == 4 and stats["in_flight"] == 0


def test_stop_right_after_start_is_not_lost(memory_registry):
    """Regression: stop() between bind and the loop's start was ignored and
    run() never returned."""
    from .conftest import InProcess
    for _ in range(20):
        svc = zmicro.Service("quick", registry=memory_registry, insecure=True)

        @svc.handler("Q.Echo")
        def echo(req, ctx):
            return req

        InProcess(svc).stop()  # asserts the thread ended
