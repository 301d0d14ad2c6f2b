"""Graceful shutdown: on stop() (or SIGTERM) a service deregisters, refuses
new calls with UNAVAILABLE + NOT_PROCESSED, still answers the calls in
flight, and closes when they are done or the grace period is over.

Handlers wait on events the test sets, never on sleeps; waits for the
service are generous and no test asserts a duration.
"""

from __future__ import annotations

import asyncio
import signal
import threading
import time

import pytest
import zmq

import zmicro
from zmicro import Code, RPCError, wire

from ..helpers import WAIT, eventually
from ..processes import InProcess
from .conftest import ServiceProcess
from .test_refusals import raw_call


def listed(registry, name) -> list[str]:
    return [n.address for r in registry.get(name) for n in r.nodes]


def build(name, registry, release, *, grace=10.0, insecure=True):
    svc = zmicro.Service(name, registry=registry, insecure=insecure, grace=grace)

    @svc.handler("G.Slow", blocking=True)
    def slow(req, ctx):
        release.wait(60)
        return "slow done"

    @svc.handler("G.Fast")
    def fast(req, ctx):
        return "fast"

    return svc


def start_call(client, name, endpoint, address, results):
    def call():
        try:
            results.append(client.call(name, endpoint, None, address=address))
        except RPCError as exc:
            results.append(exc)

    t = threading.Thread(target=call, daemon=True)
    t.start()
    return t


@pytest.mark.parametrize("use_asyncio", [False, True], ids=["run", "serve"])
def test_in_flight_call_completes_new_calls_are_refused(memory_registry, use_asyncio):
    release = threading.Event()
    svc = build("graceful", memory_registry, release)
    running = InProcess(svc, use_asyncio=use_asyncio)
    address = svc.address
    client = zmicro.Client(registry=memory_registry, insecure=True, timeout=WAIT)
    results: list = []
    caller = threading.Thread()
    try:
        caller = start_call(client, "graceful", "G.Slow", address, results)
        eventually(lambda: svc.stats()["in_flight"] == 1, "the slow call to start")

        svc.stop()
        # Deregistered while the service still serves its call in flight.
        eventually(lambda: listed(memory_registry, "graceful") == [], "deregistration")
        assert running.thread.is_alive() and not results
        # A new call is refused at once, flagged safe to retry elsewhere.
        header = zmicro.Header(kind=wire.Kind.REQUEST, request_id=3, service="graceful",
                               endpoint="G.Fast", content_type="application/json")
        refused = raw_call(address, header, [b"null"])
        assert refused.status == Code.UNAVAILABLE and refused.flags & wire.FLAG_NOT_PROCESSED
        assert running.thread.is_alive() and not results

        release.set()
        caller.join(WAIT)
        assert results == ["slow done"]
        running.thread.join(WAIT)
        assert not running.thread.is_alive()
        assert svc.address is None
    finally:
        release.set()
        caller.join(WAIT)  # before the client closes under it
        client.close()
        running.stop()


def test_async_handler_in_flight_completes(memory_registry):
    release = threading.Event()
    svc = zmicro.Service("graceful-async", registry=memory_registry)  # secure: the defaults

    @svc.handler("G.AsyncSlow")
    async def async_slow(req, ctx):
        while not release.is_set():
            await asyncio.sleep(0.01)
        return "async done"

    running = InProcess(svc, use_asyncio=True)
    address = svc.address
    client = zmicro.Client(registry=memory_registry, timeout=WAIT)
    results: list = []
    caller = threading.Thread()
    try:
        caller = start_call(client, "graceful-async", "G.AsyncSlow", address, results)
        eventually(lambda: svc.stats()["in_flight"] == 1, "the async call to start")
        svc.stop()
        eventually(lambda: listed(memory_registry, "graceful-async") == [], "deregistration")
        with pytest.raises(RPCError) as err:  # through the secure client
            client.call("graceful-async", "G.AsyncSlow", None, address=address)
        assert err.value.code == Code.UNAVAILABLE
        assert "shutting down" in err.value.detail
        release.set()
        caller.join(WAIT)
        assert results == ["async done"]
        running.thread.join(WAIT)
        assert not running.thread.is_alive()
    finally:
        release.set()
        caller.join(WAIT)  # before the client closes under it
        client.close()
        running.stop()


@pytest.mark.parametrize("use_asyncio", [False, True], ids=["run", "serve"])
def test_grace_period_bounds_the_wait(memory_registry, use_asyncio):
    """A handler that never finishes does not keep the service alive."""
    release = threading.Event()
    svc = build("graceless", memory_registry, release, grace=0.2)
    running = InProcess(svc, use_asyncio=use_asyncio)
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    try:
        sock.connect(svc.address)
        zmicro.send_message(sock, zmicro.Header(kind=wire.Kind.REQUEST, request_id=1,
                                                service="graceless", endpoint="G.Slow"),
                            [b"\xc0"], timeout=WAIT)
        eventually(lambda: svc.stats()["in_flight"] == 1, "the slow call to start")
        svc.stop()
        running.thread.join(WAIT)
        assert not running.thread.is_alive()  # closed with the handler still blocked
        assert not release.is_set()
        assert listed(memory_registry, "graceless") == []
    finally:
        release.set()
        sock.close(0)
        running.stop()


def test_stop_is_idempotent_and_a_second_stop_keeps_draining(memory_registry):
    release = threading.Event()
    svc = build("twice", memory_registry, release)
    running = InProcess(svc)
    client = zmicro.Client(registry=memory_registry, insecure=True, timeout=WAIT)
    results: list = []
    caller = threading.Thread()
    try:
        caller = start_call(client, "twice", "G.Slow", svc.address, results)
        eventually(lambda: svc.stats()["in_flight"] == 1, "the slow call to start")
        svc.stop()
        svc.stop()
        eventually(lambda: listed(memory_registry, "twice") == [], "deregistration")
        assert running.thread.is_alive()
        release.set()
        caller.join(WAIT)
        assert results == ["slow done"]
    finally:
        release.set()
        caller.join(WAIT)  # before the client closes under it
        client.close()
        running.stop()


@pytest.mark.parametrize("use_asyncio", [False, True], ids=["run", "serve"])
def test_a_service_that_just_answered_keeps_its_quiet_period(memory_registry, use_asyncio):
    """After its last answer a stopping service keeps its socket open
    close_delay seconds (the quiet period: its callers read the last
    answers, calls on their way get their refusal), even with nothing in
    flight. Counted from that answer: one idle for longer closes at once
    (test_lifecycle.py, in a process)."""
    svc = build("quiet", memory_registry, threading.Event())
    running = InProcess(svc, use_asyncio=use_asyncio)
    core = svc._core
    try:
        with zmicro.Client(registry=memory_registry, insecure=True, timeout=WAIT) as client:
            assert client.call("quiet", "G.Fast", None) == "fast"
        core.close_delay = 3600.0
        svc.stop()
        eventually(lambda: listed(memory_registry, "quiet") == [], "deregistration")
        assert not core.drained and running.thread.is_alive()  # in its quiet period
        core.close_delay = 0.0
        running.thread.join(WAIT)
        assert not running.thread.is_alive()
    finally:
        core.close_delay = 0.0
        running.stop()


@pytest.mark.parametrize("use_asyncio", [False, True], ids=["run", "serve"])
def test_the_quiet_period_counts_from_the_last_answer(memory_registry, use_asyncio):
    """A service whose last answer is older than its quiet period is
    drained the moment it stops (nothing in flight): with the quiet
    period counted from stop(), it would not be for close_delay seconds."""
    svc = build("idle", memory_registry, threading.Event())
    running = InProcess(svc, use_asyncio=use_asyncio)
    core = svc._core
    core.close_delay = 1.0
    try:
        with zmicro.Client(registry=memory_registry, insecure=True, timeout=WAIT) as client:
            assert client.call("idle", "G.Fast", None) == "fast"
        time.sleep(core.close_delay + 0.2)  # idle for longer than the quiet period
        svc.stop()
        assert core.drained
        running.thread.join(WAIT)
        assert not running.thread.is_alive()
    finally:
        running.stop()


def test_grace_is_validated():
    for bad in (-1, float("nan")):
        with pytest.raises(ValueError, match="grace"):
            zmicro.Service("bad-grace", grace=bad, insecure=True)


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_sigterm_with_a_call_in_flight(registry_dir, registry, kind):
    """The real signal path, in a process: the call started before SIGTERM
    is answered, the process deregisters and exits cleanly."""
    name = f"drain-{kind}"
    proc = ServiceProcess(kind, name, registry_dir)
    results: list = []
    with zmicro.Client(registry=registry, timeout=WAIT) as client:
        caller = threading.Thread(
            target=lambda: results.append(client.call(name, "Greeter.Sleep", {"seconds": 4})),
            daemon=True)
        caller.start()
        # Greeter.Stats is inline: it sees the Sleep in flight, and itself.
        eventually(lambda: client.call(name, "Greeter.Stats", None)["in_flight"] >= 2,
              "the sleeping call to start")
        proc.signal(signal.SIGTERM)
        caller.join(WAIT)
    assert results == [{"cancelled": False}]
    assert proc.proc.wait(WAIT) == 0
    assert listed(registry, name) == []
    proc.stop()
