"""The client under connection faults (issue 10, points 5, 6, 9 and 12).

- A sync call whose connection drops while it waits for its answer learns
  it from the socket's monitor when the monitor says so, not by looking
  every so often.

- A node that refuses connections (nothing listens at its address) fails
  an attempt at once with UNAVAILABLE, never sent: a call with a fixed
  address fails fast, a call through the balancer moves on to another
  node. ``wait_for_ready=True`` (per call, or the client's default) waits
  for the node instead, until the deadline (gRPC's fail-fast and
  wait-for-ready).
- A reply frame over the client's ``max_message_size`` makes libzmq drop
  the connection for good; the client replaces that socket, so the next
  call to the node goes through.
- Metadata the wire cannot carry raises RPCError (INVALID_ARGUMENT naming
  the key, RESOURCE_EXHAUSTED for too much), never WireError.

These tests never assert timings: where a fix is about failing fast, the
call's deadline is long and the error must name the refusal (without the
fix the call would end at its deadline, with another detail).
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
import zmq
from zmq.utils.monitor import recv_monitor_message

import zmicro
from zmicro import Code, RPCError, wire
from zmicro.registry import MemoryRegistry
from zmicro.registry.base import Node, ServiceRecord
from zmicro.security.keys import KeyStore
from zmicro.security.mackeys import MacSecrets, secrets_path

from .raw_peer import ScriptedPeer

OCTETS = "application/octet-stream"
#: Long enough that a call which waited for its deadline could not pass
#: for one that failed fast.
LONG = 20.0

both = pytest.mark.parametrize("kind", ["sync", "async"])


def call(kind: str, client_options: dict, *args, **kwargs):
    """One call through a Client or an AsyncClient made for it (closed after)."""
    if kind == "sync":
        with zmicro.Client(**client_options) as client:
            return client.call(*args, **kwargs)

    async def run():
        async with zmicro.AsyncClient(**client_options) as client:
            return await client.call(*args, **kwargs)

    return asyncio.run(run())


def nobody_at(port: int) -> str:
    return f"tcp://127.0.0.1:{port}"


# -- point 5: a sync call learns of a drop from its monitor -------------------------

#: Seconds the peer holds the call before it drops the connection: a wait
#: that looked at the monitor every 100 ms would wake about 20 times.
HOLD = 2.0


def test_a_sync_call_learns_of_a_dropped_connection_from_its_monitor(zctx, tmp_path):
    """A raw peer answers one call, then holds the next for HOLD seconds
    and drops the connection. The call fails as lost (UNAVAILABLE, maybe
    processed) after a handful of wake-ups of its wait: the end of its
    quick slice, the monitor's news (a late handshake event of the first
    call, the drop). A wait that polled would wake once per period
    instead. Counting wake-ups, not seconds: load cannot pass the bound."""
    store = KeyStore(tmp_path)
    store.identity()
    ring = MacSecrets(secrets_path(store.path)).keyring("raw")

    def script(header: wire.Header):
        if header.kind != wire.Kind.REQUEST:
            return []
        if header.request_id == 1:
            reply = wire.Header(kind=wire.Kind.REPLY, request_id=1, content_type=OCTETS)
            return [ring.seal(reply, [b"first"], bind=header.nonce)]
        time.sleep(HOLD)
        return "drop"

    peer = ScriptedPeer(zctx, script)
    options = dict(address=peer.address, server_key=peer.public_key, content_type=OCTETS)
    try:
        with zmicro.Client(registry=MemoryRegistry(), keys=store, retry=False,
                           timeout=LONG) as client:
            assert client.call("raw", "Raw.Echo", b"", **options) == b"first"
            [channel] = client._core.channels()
            before = channel.n_wakes
            with pytest.raises(RPCError) as err:
                client.call("raw", "Raw.Echo", b"", **options)
            wakes = channel.n_wakes - before
    finally:
        peer.close()
    assert err.value.code == Code.UNAVAILABLE and err.value.processed is None, err.value
    assert "lost" in err.value.detail, err.value.detail
    assert peer.received == 2
    assert wakes <= 4, f"the wait woke {wakes} times in {HOLD} s: it polls"


# -- point 12: a refused connection fails fast; wait_for_ready waits ---------------


@both
def test_a_refused_connection_fails_at_once_unsent(kind, unused_tcp_port):
    with pytest.raises(RPCError) as err:
        call(kind, dict(registry=MemoryRegistry(), connect_timeout=0, timeout=LONG),
             "nobody", "Any.Thing", {}, address=nobody_at(unused_tcp_port))
    assert err.value.code == Code.UNAVAILABLE
    assert err.value.processed is False
    assert "refuses connections" in err.value.detail, err.value.detail


def greeter(address: str, registry=None) -> zmicro.Service:
    svc = zmicro.Service("greeter", address=address, registry=registry or MemoryRegistry())
    svc.handler("Greeter.Echo")(lambda req, ctx: req)
    return svc


@both
@pytest.mark.parametrize("where", ["call", "client"])
def test_wait_for_ready_waits_for_the_node_to_come(kind, where, serve, unused_tcp_port):
    address = nobody_at(unused_tcp_port)
    started = threading.Event()
    client_options = dict(registry=MemoryRegistry(), timeout=LONG)
    call_options: dict = dict(address=address, content_type=OCTETS)
    if where == "client":
        client_options["wait_for_ready"] = True
    else:
        call_options["wait_for_ready"] = True

    def start_later():
        # Once the call has met a refusal or two (the client retries
        # connecting every 100 ms), the node starts listening.
        started.wait(LONG)
        serve(greeter(address))

    threading.Timer(0.3, started.set).start()
    starter = threading.Thread(target=start_later)
    starter.start()
    try:
        assert call(kind, client_options, "greeter", "Greeter.Echo", b"hi", **call_options) == b"hi"
    finally:
        starter.join()


@both
def test_a_call_waiting_for_ready_still_ends_at_its_deadline(kind, unused_tcp_port):
    with pytest.raises(RPCError) as err:
        call(kind, dict(registry=MemoryRegistry(), retry=False), "nobody", "Any.Thing", {},
             address=nobody_at(unused_tcp_port), timeout=0.3, wait_for_ready=True)
    assert err.value.code == Code.UNAVAILABLE and err.value.processed is False
    assert "in time" in err.value.detail, err.value.detail


@both
def test_the_balancer_moves_on_from_a_node_that_refuses(kind, serve, unused_tcp_port):
    """Two registered nodes, one with nobody listening: every call succeeds,
    also those that pick the dead node first (their deadline is shorter
    than the connect timeout: only failing fast leaves time to go on)."""
    registry = MemoryRegistry()
    svc = greeter("tcp://127.0.0.1:*", registry)
    serve(svc)
    dead = nobody_at(unused_tcp_port)
    registry.register(ServiceRecord(name="greeter", nodes=(Node(id="dead", address=dead),)))
    options = dict(registry=registry, connect_timeout=LONG, timeout=LONG / 2)

    async def many_async():
        async with zmicro.AsyncClient(**options) as client:
            return [await client.call("greeter", "Greeter.Echo", b"%d" % i, content_type=OCTETS)
                    for i in range(6)]

    if kind == "sync":
        with zmicro.Client(**options) as client:
            replies = [client.call("greeter", "Greeter.Echo", b"%d" % i, content_type=OCTETS)
                       for i in range(6)]
            assert dead in [n.address for n in client.balancer("greeter").nodes()]
    else:
        replies = asyncio.run(many_async())
    assert replies == [b"%d" % i for i in range(6)]


# -- point 6: a reply over max_message_size does not cut the node off --------------


class OversizedOnce:
    """A raw ROUTER (insecure) that answers the first request with one frame
    larger than the client accepts, and later ones properly."""

    def __init__(self, zctx: zmq.Context, too_big: int) -> None:
        self.sock = zctx.socket(zmq.ROUTER)
        self.sock.linger = 0
        self.port = self.sock.bind_to_random_port("tcp://127.0.0.1")
        self.too_big = too_big
        self.requests = 0
        self.peers: set[bytes] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self.sock.poll(50):
                continue
            routing_id, header, *_ = self.sock.recv_multipart()
            h = wire.decode_header(header)
            if h.kind != wire.Kind.REQUEST:
                continue
            self.requests += 1
            self.peers.add(routing_id)
            if self.requests == 1:
                self.sock.send_multipart([routing_id, b"x" * self.too_big])
            else:
                reply = wire.Header(kind=wire.Kind.REPLY, request_id=h.request_id,
                                    content_type=OCTETS)
                self.sock.send_multipart([routing_id, reply.encode(), b"fine"])

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


@both
def test_after_an_oversized_reply_the_next_call_goes_through(kind, zctx):
    peer = OversizedOnce(zctx, too_big=2000)
    options = dict(insecure=True, registry=MemoryRegistry(), max_message_size=1000,
                   retry=False, timeout=LONG)

    def two_calls():
        outcomes = []
        if kind == "sync":
            with zmicro.Client(**options) as client:
                for _ in range(2):
                    try:
                        outcomes.append(client.call("raw", "Raw.Echo", b"", address=peer.address,
                                                    content_type=OCTETS))
                    except RPCError as exc:
                        outcomes.append(exc)
            return outcomes

        async def run():
            async with zmicro.AsyncClient(**options) as client:
                for _ in range(2):
                    try:
                        outcomes.append(await client.call("raw", "Raw.Echo", b"",
                                                          address=peer.address,
                                                          content_type=OCTETS))
                    except RPCError as exc:
                        outcomes.append(exc)
            return outcomes

        return asyncio.run(run())

    try:
        first, second = two_calls()
    finally:
        peer.close()
    # The first call's connection dropped under it (libzmq, MAXMSGSIZE):
    # its reply cannot come, and it may have run.
    assert isinstance(first, RPCError), first
    assert first.code == Code.UNAVAILABLE and first.processed is None, first
    # The next one, with no retry, on a new connection (a new routing id).
    assert second == b"fine"
    assert peer.requests == 2 and len(peer.peers) == 2


# -- point 9: metadata the wire cannot carry is an RPCError ------------------------

LIMITS = [
    ({"": "x"}, Code.INVALID_ARGUMENT, "empty"),
    ({"bad\0key": "x"}, Code.INVALID_ARGUMENT, "'bad\\x00key'"),
    ({"k\ud800": "x"}, Code.INVALID_ARGUMENT, "UTF-8"),
    ({"k": "\ud800"}, Code.INVALID_ARGUMENT, "'k'"),
    ({"k" * (wire.MAX_NAME + 1): "x"}, Code.RESOURCE_EXHAUSTED, f"{wire.MAX_NAME + 1} bytes"),
    ({"big": b"v" * (wire.MAX_VALUE + 1)}, Code.RESOURCE_EXHAUSTED, "'big'"),
    ({f"k{i}": "v" for i in range(wire.MAX_METADATA + 1)}, Code.RESOURCE_EXHAUSTED,
     f"{wire.MAX_METADATA + 1} entries"),
    ({f"k{i}": b"v" * wire.MAX_VALUE for i in range(3)}, Code.RESOURCE_EXHAUSTED,
     f"{wire.MAX_HEADER} bytes"),
]


@both
@pytest.mark.parametrize("metadata, code, named", LIMITS,
                         ids=["empty-key", "nul-key", "key-not-utf8", "value-not-utf8",
                              "long-key", "long-value", "too-many", "header-too-big"])
def test_metadata_over_the_limits_is_an_rpc_error(kind, serve, metadata, code, named):
    svc = greeter("tcp://127.0.0.1:*")
    serve(svc)
    with pytest.raises(RPCError) as err:
        call(kind, dict(registry=svc._registry), "greeter", "Greeter.Echo", b"x",
             content_type=OCTETS, metadata=metadata, timeout=LONG)
    assert err.value.code == code, err.value
    assert named in err.value.detail, err.value.detail
    assert err.value.processed is False  # it never left the client
    assert isinstance(err.value.__cause__, zmicro.WireError)  # what the writer said
    assert svc.stats()["requests"] == 0


# -- a monitor nobody reads never stops the context ----------------------------------


def test_an_unread_monitor_never_blocks_the_contexts_io_thread(serve, zctx, monkeypatch,
                                                              unused_tcp_port):
    """libzmq sends monitor events from the context's I/O thread with a
    blocking send. A client channel that sits idle while its node is gone
    gets an event per reconnect attempt, read by nobody; with pyzmq's
    default monitor (HWM 1000 at each end) the I/O thread blocked for good
    after about 2,000 of them, and every socket of the context with it: no
    handshake, no call, term() hung (seen in CI: an idle client leaked by
    one test froze the shared context minutes later). Here reconnects are
    every millisecond, so thousands of events pile up in seconds; a call
    through the same context must still go through."""
    from zmicro.client import _make_socket

    monkeypatch.setattr(zmicro.client, "RECONNECT_IVL_MAX_MS", 0)  # no backoff
    zctx.setsockopt(zmq.RECONNECT_IVL, 1)
    idle, monitor = _make_socket(zctx, nobody_at(unused_tcp_port), 1 << 20)
    try:
        assert monitor is not None
        zctx.setsockopt(zmq.RECONNECT_IVL, 100)
        # The rate of events on this machine, then long enough for twice
        # the old limit to pile up unread.
        counted, t0 = 0, time.monotonic()
        while time.monotonic() - t0 < 1.0:
            if monitor.poll(100):
                monitor.recv_multipart()
                counted += 1
        rate = counted / (time.monotonic() - t0)
        time.sleep(min(60.0, 4000 / max(rate, 1.0)))

        svc = serve(greeter("tcp://127.0.0.1:0")).svc
        with zmicro.Client(registry=MemoryRegistry(), context=zctx, timeout=LONG) as client:
            assert client.call("greeter", "Greeter.Echo", b"x", address=svc.address,
                               server_key=svc._security.public_key,
                               content_type=OCTETS) == b"x"
        piled = 0
        while monitor.poll(0):
            monitor.recv_multipart()
            piled += 1
        assert piled > 2500, f"only {piled} events piled up ({rate:.0f}/s): inconclusive"
    finally:
        # Reading the queue first unblocks an I/O thread stuck on it (the
        # old failure), so that disable_monitor() and term() return.
        while monitor.poll(0):
            monitor.recv_multipart()
        idle.disable_monitor()
        monitor.close(0)
        idle.close(0)


def test_reconnects_to_a_node_that_is_down_back_off(zctx, unused_tcp_port):
    """docs/cluster.md: reconnects to a node that is down back off from
    100 ms to 1 s (a dead node costs an attempt, and a monitor event, a
    second). In 3.5 s: at most 6 attempts (0.1, 0.3, 0.7, 1.5, 2.5, 3.5 s)
    where a fixed 100 ms interval makes about 35. A loaded machine makes
    fewer attempts, never more: the bound cannot be passed by load."""
    from zmicro.client import _make_socket

    sock, monitor = _make_socket(zctx, nobody_at(unused_tcp_port), 1 << 20)
    try:
        retries, end = 0, time.monotonic() + 3.5
        while (left := end - time.monotonic()) > 0:
            if monitor.poll(int(left * 1000) + 1):
                if recv_monitor_message(monitor)["event"] == zmq.EVENT_CONNECT_RETRIED:
                    retries += 1
        assert 1 <= retries <= 12, retries
    finally:
        sock.disable_monitor()
        monitor.close(0)
        sock.close(0)
