"""A raw peer of a secure zmicro service, for the tests of protocol rules.

:class:`RawPeer` is a Curve DEALER on an authenticated connection (a key
pair the service trusts): it puts the frames it is given on the wire and
reads what comes back, with a monitor of its connection. The frames are
signed, or not, by the test: ``MacSecrets(...).keyring(service).seal(...)``
signs as docs/protocol.md §7 says, ``Keyring.open(..., bind=, remember=False)``
checks an answer bound to its request's nonce.

:func:`secure_node` starts a secure ``greeter`` service in a thread, with
its own key store, whose handlers record what ran.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
import zmq
from zmq.utils.monitor import recv_monitor_message

import zmicro
from zmicro import _core, wire
from zmicro.registry import MemoryRegistry
from zmicro.security.keys import KeyPair, KeyStore
from zmicro.security.mackeys import MacSecrets, secrets_path

WAIT = 30.0  # seconds: a bound for answers that take milliseconds

SERVICE = "greeter"
OCTETS = "application/octet-stream"


def request(request_id: int, *, service: str = SERVICE, endpoint: str = "Greeter.Echo",
            content_type: str = OCTETS, **fields) -> wire.Header:
    return wire.Header(kind=wire.Kind.REQUEST, request_id=request_id, service=service,
                       endpoint=endpoint, content_type=content_type, **fields)


def ping(request_id: int, service: str = "") -> wire.Header:
    return wire.Header(kind=wire.Kind.PING, request_id=request_id, service=service)


def cancel(request_id: int, service: str = SERVICE) -> wire.Header:
    return wire.Header(kind=wire.Kind.CANCEL, request_id=request_id, service=service)


class Named(msgspec.Struct):
    name: str


@dataclass
class Node:
    """A secure greeter in a thread: Greeter.Echo (bytes) records each
    body it ran for in ``ran``; Greeter.Typed takes a Named; Greeter.Hold
    (blocking) waits for ``release`` or its cancellation, recorded in
    ``cancelled``."""

    svc: zmicro.Service
    store: KeyStore
    secrets: MacSecrets
    ran: list = field(default_factory=list)
    held: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    cancelled: list = field(default_factory=list)

    @property
    def address(self) -> str:
        return self.svc.address

    @property
    def server_key(self) -> str:
        return self.svc._security.public_key

    def ring(self, service: str = SERVICE) -> _core.Keyring:
        """The keyring of `service`, as any holder of the master secret has it."""
        return self.secrets.keyring(service)

    def trusts(self, public_key: str) -> bool:
        """Whether the service's allowlist holds `public_key` now."""
        return public_key in self.svc._security.allowlist()


def secure_node(serve, home: Path, *, name: str = SERVICE, **options) -> Node:
    store = KeyStore(home)
    store.identity()
    svc = zmicro.Service(name, registry=MemoryRegistry(), keys=store, **options)
    node = Node(svc, store, MacSecrets(secrets_path(store.path)))

    @svc.handler("Greeter.Echo")
    def echo(req: bytes, ctx: zmicro.Context) -> bytes:
        node.ran.append(bytes(req))
        return req

    @svc.handler("Greeter.Double")
    def double(req: bytes, ctx: zmicro.Context) -> bytes:
        return bytes(req) * 2

    @svc.handler("Greeter.Typed")
    def typed(req: Named, ctx: zmicro.Context) -> str:
        node.ran.append(req.name)
        return req.name

    @svc.handler("Greeter.Hold", blocking=True)
    def hold(req: bytes, ctx: zmicro.Context) -> bytes:
        node.held.set()
        deadline = time.monotonic() + WAIT
        while not ctx.cancelled and not node.release.is_set() and time.monotonic() < deadline:
            time.sleep(0.005)
        node.cancelled.append(ctx.cancelled)
        return b"held"

    serve(svc)
    return node


class RawPeer:
    """A Curve DEALER connected to `address` with the key pair `identity`."""

    def __init__(self, zctx: zmq.Context, address: str, server_key: str,
                 identity: KeyPair) -> None:
        sock = zctx.socket(zmq.DEALER)
        sock.linger = 0
        sock.curve_publickey = identity.public.encode()
        sock.curve_secretkey = identity.secret.encode()
        sock.curve_serverkey = server_key.encode()
        self.monitor = sock.get_monitor_socket()
        self.events: list[str] = []
        sock.connect(address)
        self.socket = sock

    def send(self, frames: list[bytes]) -> None:
        self.socket.send_multipart(frames)

    def receive(self, timeout: float = WAIT) -> list[bytes] | None:
        """The next message's frames, or None after `timeout` seconds."""
        if not self.socket.poll(int(timeout * 1000)):
            return None
        return self.socket.recv_multipart()

    def answer(self, timeout: float = WAIT) -> tuple[list[bytes], wire.Header]:
        frames = self.receive(timeout)
        assert frames is not None, "no answer"
        return frames, _core.parse_frames(frames).header

    def nothing_before_pong(self, ring: _core.Keyring, request_id: int = 999_999) -> None:
        """Assert that the server answered nothing to what this peer sent
        so far: a ping sent now is answered in order on this connection, so
        the first answer must be its pong."""
        self.send(ring.seal(ping(request_id)))
        _, header = self.answer()
        assert (header.kind, header.request_id) == (wire.Kind.PONG, request_id), header

    def connection_events(self) -> list[str]:
        """Names of the monitor events seen so far (ACCEPTED, CONNECTED...)."""
        while self.monitor.poll(0):
            self.events.append(zmq.Event(recv_monitor_message(self.monitor)["event"]).name)
        return self.events

    def close(self) -> None:
        self.socket.disable_monitor()
        self.monitor.close(0)
        self.socket.close(0)


class ScriptedPeer:
    """The other side of a zmicro client: a Curve ROUTER (no allowlist) on
    a free loopback port. For each message it receives, ``script(header)``
    (the parsed header) returns the answers to send back (lists of frames),
    "close" to close its socket and stop, or "drop" to close its socket
    and listen again at the same address with a new one: the connection
    goes, with nothing answered (as when a node dies with the call in
    flight), and the client's libzmq reconnects. ``handshakes`` counts the
    connections that completed their handshake (``connected``: those to
    the current socket), ``received`` the messages read. Its send HWM is unlimited: a ROUTER drops what is over it, and a
    script may answer many times."""

    def __init__(self, zctx: zmq.Context, script) -> None:
        self.script = script
        self.keys = zmq.curve_keypair()
        self.zctx = zctx
        self.handshakes = 0
        self.received = 0
        self.sock, self.monitor = self._listen(None)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _listen(self, address: str | None) -> tuple[zmq.Socket, zmq.Socket]:
        """A new ROUTER bound to `address` (None: a free port, which
        becomes self.address), with a monitor of its handshakes."""
        sock = self.zctx.socket(zmq.ROUTER)
        sock.linger = 0
        sock.sndhwm = 0
        sock.curve_server = True
        sock.curve_secretkey = self.keys[1]
        monitor = sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED)
        self.connected = 0
        if address is None:
            port = sock.bind_to_random_port("tcp://127.0.0.1")
            self.address = f"tcp://127.0.0.1:{port}"
            return sock, monitor
        # The old socket's listener closes in libzmq's I/O thread, soon.
        deadline = time.monotonic() + WAIT
        while True:
            try:
                sock.bind(address)
                return sock, monitor
            except zmq.ZMQError as exc:
                if exc.errno != zmq.EADDRINUSE or time.monotonic() > deadline:
                    raise
                time.sleep(0.005)

    @property
    def public_key(self) -> str:
        return self.keys[0].decode()

    def _close_socket(self) -> None:
        self.sock.disable_monitor()
        self.monitor.close(0)
        self.sock.close(0)

    def _serve(self) -> None:
        while not self.stop.is_set():
            poller = zmq.Poller()
            poller.register(self.sock, zmq.POLLIN)
            poller.register(self.monitor, zmq.POLLIN)
            ready = dict(poller.poll(20))
            while self.monitor in ready and self.monitor.poll(0):
                recv_monitor_message(self.monitor)
                self.handshakes += 1
                self.connected += 1
            if self.sock not in ready:
                continue
            peer, *frames = self.sock.recv_multipart()
            self.received += 1
            answers = self.script(_core.parse_frames(frames).header)
            if answers == "close":
                self._close_socket()
                return
            if answers == "drop":
                self._close_socket()
                self.sock, self.monitor = self._listen(self.address)
                continue
            for answer in answers:
                self.sock.send_multipart([peer, *answer])

    def close(self) -> None:
        self.stop.set()
        self.thread.join(WAIT)
        if not self.sock.closed:
            self._close_socket()
