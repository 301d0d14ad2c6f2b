"""Fixtures of the transport-security tests: key stores in tmp_path,
Security objects over them, and Curve sockets on 127.0.0.1 with monitors.

Waits are bounded generously (WAIT seconds) and no test asserts a time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest
import zmq
from zmq.utils.monitor import recv_monitor_message

from zmicro.security.keys import KeyStore
from zmicro.security.transport import Security

WAIT = 10.0  # seconds: an upper bound for things that take milliseconds


@pytest.fixture
def make_security(tmp_path) -> Callable[[str], Security]:
    """A secure Security over a fresh key store ``tmp_path/<name>``."""

    def make(name: str) -> Security:
        return Security.resolve(insecure=False, keys=KeyStore(tmp_path / name))

    return make


@dataclass
class Monitor:
    """The events of one socket, drained into ``events`` as (name, value)."""

    socket: zmq.Socket
    events: list[tuple[str, int]] = field(default_factory=list)

    def wait_for(self, *names: str, timeout: float = WAIT) -> tuple[str, int] | None:
        """The first new event among ``names``, or None after ``timeout``."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            if not self.socket.poll(int(left * 1000) + 1):
                break
            msg = recv_monitor_message(self.socket)
            event = (zmq.Event(msg["event"]).name, int(msg["value"]))
            self.events.append(event)
            if event[0] in names:
                return event
        return None


def monitor(sock: zmq.Socket) -> Monitor:
    return Monitor(sock.get_monitor_socket())


@dataclass
class Server:
    """A ROUTER secured by ``security`` under ``domain``, bound to 127.0.0.1."""

    security: Security
    domain: str
    socket: zmq.Socket
    address: str
    monitor: Monitor

    def receive(self, timeout: float = WAIT) -> list[zmq.Frame] | None:
        if not self.socket.poll(int(timeout * 1000)):
            return None
        return self.socket.recv_multipart(copy=False)


@pytest.fixture
def servers(zctx) -> Iterator[Callable[..., Server]]:
    made: list[Server] = []

    def start(security: Security, domain: str, *, enforce: bool = True) -> Server:
        sock = zctx.socket(zmq.ROUTER)
        sock.linger = 0
        security.configure_server(sock, domain)
        if not enforce:  # only to show what ZAP_ENFORCE_DOMAIN is for
            sock.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 0)
        mon = monitor(sock)
        port = sock.bind_to_random_port("tcp://127.0.0.1")
        server = Server(security, domain, sock, f"tcp://127.0.0.1:{port}", mon)
        made.append(server)
        return server

    yield start
    for server in made:
        server.socket.disable_monitor()
        server.security.release_server(server.socket, server.domain)


@dataclass
class ClientSocket:
    socket: zmq.Socket
    monitor: Monitor


@pytest.fixture
def clients(zctx) -> Iterator[Callable[..., ClientSocket]]:
    made: list[ClientSocket] = []

    def connect(security: Security, server: Server, *, server_key: str | None = None,
                handshake_ivl: int | None = None) -> ClientSocket:
        sock = zctx.socket(zmq.DEALER)
        sock.linger = 0
        if handshake_ivl is not None:
            sock.handshake_ivl = handshake_ivl
        key = server_key if server_key is not None else server.security.public_key
        security.configure_client(sock, key)
        mon = monitor(sock)
        sock.connect(server.address)
        client = ClientSocket(sock, mon)
        made.append(client)
        return client

    yield connect
    for client in made:
        client.socket.disable_monitor()
