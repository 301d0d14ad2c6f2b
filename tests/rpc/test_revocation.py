"""A key removed from a service's allowlist (its file deleted from
``trusted/``) loses access on its next message, not its next connection
(docs/protocol.md §4.2 check 3, docs/security.md §5): the server looks at
the allowlist again for every message's ZAP User-Id (at most 0.25 s old,
over a directory re-read every 0.5 s). Put back, the key is served again,
on the same connection all along.
"""

from __future__ import annotations

import json
import logging
import shutil

import pytest

import zmicro
from zmicro import wire
from zmicro.security.keys import KeyStore
from zmicro.security.mackeys import secrets_path

from ..helpers import eventually
from .raw_peer import OCTETS, SERVICE, WAIT, RawPeer, request, secure_node


@pytest.fixture
def node(serve, tmp_path):
    return secure_node(serve, tmp_path / "home")


@pytest.fixture
def guest(node, tmp_path):
    """Another machine's key store (its own Curve key, the deployment's MAC
    secrets), allowlisted by the node."""
    store = KeyStore(tmp_path / "guest")
    shutil.copy(secrets_path(node.store.path), secrets_path(store.path))
    node.store.trust(store.identity().public, name="guest")
    eventually(lambda: node.trusts(store.identity().public), "the guest allowlisted")
    return store


def audit_reasons(caplog) -> list[str]:
    return [json.loads(r.getMessage())["reason"] for r in caplog.records
            if r.name == "zmicro.audit"]


def test_a_revoked_key_is_refused_on_its_next_message_on_the_same_connection(
        node, guest, zctx, caplog):
    ring = node.ring()
    peer = RawPeer(zctx, node.address, node.server_key, guest.identity())
    sent = iter(range(1, 10_000))

    def status() -> int:
        peer.send(ring.seal(request(next(sent)), [b"x"]))
        _, header = peer.answer()
        return header.status  # 0 for a reply

    try:
        assert status() == 0
        node.store.untrust(guest.identity().public)
        with caplog.at_level(logging.WARNING, logger="zmicro.audit"):
            eventually(lambda: status() == zmicro.Code.UNAUTHENTICATED, "the key refused")
        assert "key-revoked" in audit_reasons(caplog)
        runs = len(node.ran)
        assert status() == zmicro.Code.UNAUTHENTICATED and len(node.ran) == runs
        node.store.trust(guest.identity().public, name="guest")
        eventually(lambda: status() == 0, "the key served again")
        # One connection from the first message to the last: the refusals
        # came from the server over it, not from a refused handshake.
        events = peer.connection_events()
        assert events.count("HANDSHAKE_SUCCEEDED") == 1, events
        assert "DISCONNECTED" not in events and "HANDSHAKE_FAILED_AUTH" not in events
    finally:
        peer.close()


def test_a_zmicro_client_of_a_revoked_key_hears_so_from_the_server(node, guest):
    with zmicro.Client(registry=node.svc._registry, keys=guest, retry=False) as client:
        def call():
            return client.call(SERVICE, "Greeter.Echo", b"hi", content_type=OCTETS,
                               timeout=WAIT, server_key=node.server_key)

        assert call() == b"hi"
        node.store.untrust(guest.identity().public)

        def refused():
            try:
                call()
            except zmicro.RPCError as exc:
                return exc
            return None

        exc = eventually(refused, "the call refused")
        # The server's own refusal, signed and bound to the request (not a
        # handshake the client would describe), flagged never processed.
        assert exc.code == zmicro.Code.UNAUTHENTICATED and exc.detail == "unauthenticated"
        assert exc.processed is False
        node.store.trust(guest.identity().public, name="guest")
        assert eventually(lambda: call() == b"hi", "served again")


def test_a_revoked_keys_ping_is_refused_and_its_cancel_dropped(node, guest, zctx):
    ring = node.ring()
    peer = RawPeer(zctx, node.address, node.server_key, guest.identity())
    try:
        peer.send(ring.seal(request(1, endpoint="Greeter.Hold"), [b"h"]))
        assert node.held.wait(WAIT)
        node.store.untrust(guest.identity().public)

        def ping_status() -> int:
            peer.send(ring.seal(wire.Header(kind=wire.Kind.PING, request_id=2)))
            _, header = peer.answer()
            return header.status

        eventually(lambda: ping_status() == zmicro.Code.UNAUTHENTICATED, "the ping refused")
        refused = node.svc.stats()["unauthenticated"]
        peer.send(ring.seal(wire.Header(kind=wire.Kind.CANCEL, request_id=1, service=SERVICE)))
        eventually(lambda: node.svc.stats()["unauthenticated"] == refused + 1,
                   "the cancel refused")
        assert node.cancelled == [] and node.svc.stats()["cancels"] == 0
        node.release.set()
        # The request admitted before the key went is answered all the same.
        _, reply = peer.answer()
        assert (reply.kind, reply.request_id) == (wire.Kind.REPLY, 1)
        assert node.cancelled == [False]
    finally:
        peer.close()
