"""Which key signs each message, and what a captured message is worth
(docs/protocol.md §7.2 and §7.4), on a real secure service through raw
Curve sockets:

- one rule picks the MAC key: the service a request, cancel or ping names,
  the node's own when it names none; every answer is signed with that key,
  so the caller of another service verifies the node's UNAVAILABLE with
  the key of the service it called;
- an answer is bound to its request's nonce: a captured reply is refused
  by every other call and every other client;
- one nonce set per service: a captured request resent over a connection
  authenticated with another allowlisted key is a replay.
"""

from __future__ import annotations

import asyncio
import json
import logging

import pytest

import zmicro
from zmicro import _core, wire
from zmicro.registry import MemoryRegistry
from zmicro.security.keys import KeyStore

from ..helpers import eventually
from .raw_peer import (OCTETS, SERVICE, WAIT, RawPeer, ScriptedPeer, cancel, ping, request,
                       secure_node)

OTHER = "billing"  # a service this node does not serve
NP = wire.FLAG_NOT_PROCESSED


@pytest.fixture
def node(serve, tmp_path):
    return secure_node(serve, tmp_path / "home")


@pytest.fixture
def peer(node, zctx):
    """A raw peer with the node's own (trusted) key pair."""
    p = RawPeer(zctx, node.address, node.server_key, node.store.identity())
    yield p
    p.close()


def bound(ring, frames, nonce) -> str:
    """What `ring` says of the answer `frames`, bound to the request `nonce`."""
    return ring.open(frames, bind=nonce, remember=False)


# -- the key rule ----------------------------------------------------------------


@pytest.mark.parametrize("named", ["", SERVICE], ids=["empty-service", "own-service"])
def test_a_ping_is_signed_with_the_key_of_the_service_it_names_or_the_nodes(node, peer, named):
    own, other = node.ring(), node.ring(OTHER)
    header = ping(1, named)
    peer.send(own.seal(header))
    frames, pong = peer.answer()
    assert (pong.kind, pong.request_id) == (wire.Kind.PONG, 1)
    assert bound(own, frames, header.nonce) == "ok"
    assert bound(own, frames, bytes(16)) == "bad_mac"  # bound to that ping only
    assert bound(other, frames, header.nonce) == "bad_mac"
    # The same ping under another service's key is refused (UNAUTHENTICATED,
    # itself signed with the key the rule picks).
    header = ping(2, named)
    peer.send(other.seal(header))
    frames, refused = peer.answer()
    assert (refused.kind, refused.status) == (wire.Kind.ERROR, zmicro.Code.UNAUTHENTICATED)
    assert bound(own, frames, header.nonce) == "ok"


def test_a_request_with_an_empty_service_is_the_nodes(node, peer):
    own = node.ring()
    header = request(1, service="")
    peer.send(own.seal(header, [b"anonymous"]))
    frames, reply = peer.answer()
    assert reply.kind == wire.Kind.REPLY
    assert _core.parse_frames(frames).bodies == [b"anonymous"]
    assert bound(own, frames, header.nonce) == "ok"
    assert node.ran == [b"anonymous"]
    # Signed with another service's key, it is refused before any handler.
    header = request(2, service="")
    peer.send(node.ring(OTHER).seal(header, [b"wrong key"]))
    frames, refused = peer.answer()
    assert refused.status == zmicro.Code.UNAUTHENTICATED and refused.flags & NP
    assert bound(own, frames, header.nonce) == "ok"
    assert node.ran == [b"anonymous"]


@pytest.mark.parametrize("kind", ["request", "ping"])
def test_another_services_caller_verifies_unavailable_with_that_services_key(node, peer, kind):
    """A stale address: the node serves greeter, the caller wanted billing.
    The answer is UNAVAILABLE + NOT_PROCESSED signed with billing's key
    (which the caller holds), not greeter's."""
    own, other = node.ring(), node.ring(OTHER)
    header = request(1, service=OTHER) if kind == "request" else ping(1, OTHER)
    peer.send(other.seal(header, [b"x"] if kind == "request" else []))
    frames, answer = peer.answer()
    assert (answer.kind, answer.status) == (wire.Kind.ERROR, zmicro.Code.UNAVAILABLE)
    assert answer.flags & NP and answer.request_id == 1
    assert repr(OTHER) in answer.detail
    assert bound(other, frames, header.nonce) == "ok"
    assert bound(own, frames, header.nonce) == "bad_mac"
    assert node.ran == []
    # Signed with the node's own key, the same request fails billing's MAC
    # check: UNAUTHENTICATED, still signed with billing's key.
    header = request(2, service=OTHER) if kind == "request" else ping(2, OTHER)
    peer.send(own.seal(header, [b"x"] if kind == "request" else []))
    frames, refused = peer.answer()
    assert refused.status == zmicro.Code.UNAUTHENTICATED
    assert bound(other, frames, header.nonce) == "ok"


def test_a_cancel_counts_only_under_the_key_of_the_service_it_names(node, peer):
    own, other = node.ring(), node.ring(OTHER)
    unauthenticated = node.svc.stats()["unauthenticated"]
    peer.send(own.seal(request(7, endpoint="Greeter.Hold"), [b"h"]))
    assert node.held.wait(WAIT)
    # Signed with another service's key: not a cancel at all (and never answered).
    peer.send(other.seal(cancel(7)))
    eventually(lambda: node.svc.stats()["unauthenticated"] == unauthenticated + 1,
               "the wrongly signed cancel refused")
    peer.send(other.seal(cancel(7, service="")))
    eventually(lambda: node.svc.stats()["unauthenticated"] == unauthenticated + 2,
               "the wrongly signed cancel with an empty service refused")
    assert not node.cancelled and node.svc.stats()["cancels"] == 0
    # A cancel naming another service, signed with that service's key,
    # passes the MAC check but is not for this node: ignored.
    peer.send(other.seal(cancel(7, service=OTHER)))
    peer.nothing_before_pong(own)
    assert not node.cancelled and node.svc.stats()["cancels"] == 0
    # Signed with the key of the service it names: the handler sees it.
    peer.send(own.seal(cancel(7)))
    eventually(lambda: node.cancelled == [True], "the handler cancelled")
    assert node.svc.stats()["cancels"] == 1
    peer.nothing_before_pong(own)  # a cancelled request gets no answer, a cancel none either


# -- replay across keys ------------------------------------------------------------


def test_a_request_resent_over_a_connection_with_another_key_is_a_replay(node, peer, zctx,
                                                                        tmp_path, caplog):
    """The broker-hop case: a proxy that ends Curve captures a signed
    request and resends it under the key it holds itself (allowlisted)."""
    second = KeyStore(tmp_path / "second").identity()
    node.store.trust(second.public, name="proxy")
    eventually(lambda: node.trusts(second.public), "the second key allowlisted")
    proxy = RawPeer(zctx, node.address, node.server_key, second)
    try:
        ring = node.ring()
        captured = ring.seal(request(1), [b"pay once"])
        peer.send(captured)
        _, first = peer.answer()
        assert first.kind == wire.Kind.REPLY
        with caplog.at_level(logging.WARNING, logger="zmicro.audit"):
            proxy.send(captured)
            _, again = proxy.answer()
        assert (again.kind, again.status) == (wire.Kind.ERROR, zmicro.Code.UNAUTHENTICATED)
        assert node.ran == [b"pay once"]
        reasons = [json.loads(r.getMessage())["reason"] for r in caplog.records
                   if r.name == "zmicro.audit"]
        assert "mac:replay" in reasons
        # The second key itself is welcome: its own requests run.
        proxy.send(ring.seal(request(2), [b"its own"]))
        _, own = proxy.answer()
        assert own.kind == wire.Kind.REPLY
        assert node.ran == [b"pay once", b"its own"]
        # And the replay set is per service, not per connection: the first
        # peer cannot resend it either.
        peer.send(captured)
        _, third = peer.answer()
        assert third.status == zmicro.Code.UNAUTHENTICATED
        assert node.ran == [b"pay once", b"its own"]
    finally:
        proxy.close()


# -- answers bound to their request ---------------------------------------------------


class FakeServer(ScriptedPeer):
    """A Curve ROUTER (no allowlist) that answers a zmicro client's
    requests: with the reply captured for its request id (`replay`), or
    with a reply it signs itself, bound to the request's nonce (`honest`,
    as a real node would)."""

    def __init__(self, zctx, ring, captured: dict[int, list[bytes]]) -> None:
        self.ring = ring
        self.captured = captured
        self.mode = "replay"
        self.answered: list[int] = []
        super().__init__(zctx, self._answer)

    def _answer(self, req: wire.Header) -> list[list[bytes]]:
        if req.kind != wire.Kind.REQUEST:
            return []
        if self.mode == "replay":
            answer = self.captured[req.request_id]
        else:
            reply = wire.Header(kind=wire.Kind.REPLY, request_id=req.request_id,
                                content_type=OCTETS)
            answer = self.ring.seal(reply, [b"honest"], bind=req.nonce)
        self.answered.append(req.request_id)
        return [answer]


@pytest.fixture
def captured(node, peer):
    """Signed replies of the real node to requests 1 to 3 of one connection
    (what a client's first three calls are numbered), as a proxy on the path
    captures them."""
    ring = node.ring()
    replies = {}
    for request_id in (1, 2, 3):
        peer.send(ring.seal(request(request_id), [b"secret %d" % request_id]))
        frames, header = peer.answer()
        assert header.kind == wire.Kind.REPLY
        replies[request_id] = frames
    return replies


@pytest.fixture
def fake(node, zctx, captured):
    server = FakeServer(zctx, node.ring(), captured)
    yield server
    server.close()


@pytest.mark.parametrize("use_async", [False, True], ids=["Client", "AsyncClient"])
def test_a_captured_reply_is_refused_by_every_other_call_and_client(node, fake, use_async):
    """Request ids restart at 1 on every socket, so a captured reply has the
    request id of other clients' calls; its MAC, bound to the nonce of the
    request it answered, fails theirs."""

    def calls(n: int) -> list:
        """The outcomes of n calls, one after the other, from one new client."""
        kw = dict(registry=MemoryRegistry(), keys=node.store, retry=False, timeout=WAIT)
        args = (SERVICE, "Greeter.Echo", b"mine")
        options = dict(content_type=OCTETS, address=fake.address, server_key=fake.public_key)
        out: list = []
        if not use_async:
            with zmicro.Client(**kw) as client:
                for _ in range(n):
                    try:
                        out.append(client.call(*args, **options))
                    except zmicro.RPCError as exc:
                        out.append(exc)
            return out

        async def run():
            client = zmicro.AsyncClient(**kw)
            try:
                for _ in range(n):
                    try:
                        out.append(await client.call(*args, **options))
                    except zmicro.RPCError as exc:
                        out.append(exc)
            finally:
                client.close()
        asyncio.run(run())
        return out

    first_client = calls(3)
    second_client = calls(1)
    assert fake.answered == [1, 2, 3, 1]  # each call was answered with a captured reply...
    for outcome in first_client + second_client:
        # ... and none of them was taken: never b"secret 1", b"secret 2"...
        assert isinstance(outcome, zmicro.RPCError), outcome
        assert outcome.code == zmicro.Code.UNAUTHENTICATED
        assert "failed authentication" in outcome.detail
    # The same path with answers bound to the client's own requests works.
    fake.mode = "honest"
    assert calls(2) == [b"honest", b"honest"]
