"""The order of a server's checks (docs/protocol.md §4.2, the numbered list;
core/server.pyx's header): a message that fails two checks gets the answer
of the earlier one. One row per pair of neighbouring concerns, in the
list's order, on a real secure service through a raw Curve socket.

A row names the check that must decide, what is wrong with the message
(`faults`), the state of the node or the sender (`state`: the sender's key
revoked, the node draining, or busy at max_in_flight=1) and what comes back:
an answer (its status, which key signed it, bound to the request's nonce,
and the audit reason) or nothing (dropped, counted under `counted`).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass

import pytest

import zmicro
from zmicro import wire
from zmicro.security.keys import KeyStore
from zmicro.security.mackeys import MacSecrets, secrets_path

from ..helpers import eventually
from .raw_peer import OCTETS, SERVICE, WAIT, RawPeer, request, secure_node

OTHER = "billing"
C = zmicro.Code
REPLY, PONG = "reply", "pong"


@dataclass(frozen=True)
class Answer:
    status: int | str      # a Code of an error, or REPLY / PONG
    signed: str | None     # "own" (the node's service key), "other" (billing's), None
    audit: str | None = None  # the deny reason audited, if any


@dataclass(frozen=True)
class Nothing:
    counted: str           # the stats counter that grows instead


@dataclass(frozen=True)
class Row:
    check: int
    faults: tuple[str, ...]
    expect: Answer | Nothing
    state: str = ""        # "", "revoked", "draining", "busy"

    def __str__(self) -> str:
        return f"{self.check}-{'+'.join(self.faults) or 'none'}{'@' + self.state if self.state else ''}"


# docs/protocol.md §4.2, in order. Every refusal carries NOT_PROCESSED.
ROWS = [
    # 1 frame: unreadable is dropped, whoever sends it
    Row(1, ("garbage",), Nothing("malformed"), state="revoked"),
    # 2 version and kind: before the caller and the MAC; unsigned; a cancel never answered
    Row(2, ("version-1", "bad-mac"), Answer(C.UNIMPLEMENTED, None)),
    Row(2, ("version-1",), Answer(C.UNIMPLEMENTED, None), state="revoked"),
    Row(2, ("kind-9", "unsigned"), Answer(C.UNIMPLEMENTED, None)),
    Row(2, ("version-1", "cancel"), Nothing("malformed")),
    Row(2, ("reply-kind",), Nothing("unexpected"), state="revoked"),
    # 3 caller: before the service, sizes and MAC
    Row(3, ("bad-mac",), Answer(C.UNAUTHENTICATED, "own", "key-revoked"), state="revoked"),
    Row(3, ("other-service",), Answer(C.UNAUTHENTICATED, "other", "key-revoked"),
        state="revoked"),
    # 4 service picks the key: another service's request is checked under its key
    Row(4, ("other-service", "own-key"), Answer(C.UNAUTHENTICATED, "other", "mac:bad_mac")),
    # 5 sizes, 6 MAC and window, 7 replay: before the endpoint and the node's state
    Row(5, ("unsigned", "unknown-endpoint"), Answer(C.UNAUTHENTICATED, "own", "mac:unsigned")),
    Row(6, ("bad-mac", "unknown-endpoint"), Answer(C.UNAUTHENTICATED, "own", "mac:bad_mac")),
    Row(6, ("stale",), Answer(C.UNAUTHENTICATED, "own", "mac:stale"), state="draining"),
    Row(7, ("replay", "unknown-endpoint"), Answer(C.UNAUTHENTICATED, "own", "mac:replay")),
    Row(7, ("replay",), Answer(C.UNAUTHENTICATED, "own", "mac:replay"), state="busy"),
    # 8 kind: a ping is answered before the target, draining and capacity
    Row(8, ("ping",), Answer(PONG, "own"), state="draining"),
    Row(8, ("ping",), Answer(PONG, "own"), state="busy"),
    Row(8, ("ping", "other-service"), Answer(C.UNAVAILABLE, "other")),
    # 9 target: before draining and the endpoint
    Row(9, ("other-service",), Answer(C.UNAVAILABLE, "other"), state="draining"),
    Row(9, ("other-service", "unknown-endpoint"), Answer(C.UNAVAILABLE, "other")),
    # 11 endpoint: draining before unknown; builtin endpoints still served
    Row(11, ("unknown-endpoint",), Answer(C.UNAVAILABLE, "own"), state="draining"),
    Row(11, ("health",), Answer(REPLY, "own"), state="draining"),
    Row(11, ("unknown-endpoint", "content-type"), Answer(C.UNIMPLEMENTED, "own")),
    # 12 body: before capacity
    Row(12, ("content-type",), Answer(C.INVALID_ARGUMENT, "own"), state="busy"),
    Row(12, ("two-bodies",), Answer(C.INVALID_ARGUMENT, "own"), state="busy"),
    # 13 capacity: before decoding
    Row(13, ("undecodable",), Answer(C.RESOURCE_EXHAUSTED, "own"), state="busy"),
    # 14 decode
    Row(14, ("undecodable",), Answer(C.INVALID_ARGUMENT, "own")),
    # 15 the handler
    Row(15, (), Answer(REPLY, "own")),
]


def test_the_rows_follow_the_numbered_list():
    checks = [row.check for row in ROWS]
    assert checks == sorted(checks)
    assert set(checks) >= {1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 12, 13, 14, 15}  # 10: no answer of its own


def message(node, row: Row, request_id: int) -> tuple[list[bytes], bytes]:
    """The frames of `row`'s message and the nonce an answer is bound to."""
    faults = set(row.faults)
    service = OTHER if "other-service" in faults else SERVICE
    fields = dict(endpoint="Greeter.Echo", content_type=OCTETS)
    bodies = [b"x"]
    if "unknown-endpoint" in faults:
        fields["endpoint"] = "Greeter.Nope"
    if "content-type" in faults:
        fields["content_type"] = "text/x-unknown"
    if "two-bodies" in faults:
        bodies = [b"a", b"b"]
    if "undecodable" in faults:
        fields.update(endpoint="Greeter.Typed", content_type="application/json")
        bodies = [b"{not json"]
    if "health" in faults:
        fields.update(endpoint="zmicro.Health.Check", content_type="")
        bodies = [b"\xc0"]  # msgpack nil: the default request
    header = request(request_id, service=service, **fields)
    for kind in ("ping", "cancel", "reply-kind", "kind-9"):
        if kind in faults:
            header = wire.Header(kind={"ping": wire.Kind.PING, "cancel": wire.Kind.CANCEL,
                                       "reply-kind": wire.Kind.REPLY, "kind-9": 9}[kind],
                                 request_id=request_id,
                                 service=service if service == OTHER else "")
            bodies = []
    if "version-1" in faults:
        header.version = 1
    if "garbage" in faults:
        return [b"not a zmicro header"], b""
    if "unsigned" in faults:
        return [header.encode(), *bodies], b""
    ring = node.ring(SERVICE if "own-key" in faults else service)
    if "stale" in faults:
        ring = MacSecrets(secrets_path(node.store.path),
                          clock=lambda: time.time() - 31).keyring(service)
    frames = ring.seal(header, bodies)
    if "bad-mac" in faults:
        frames[-1] = frames[-1][:-1] + bytes([frames[-1][-1] ^ 1])
    return frames, header.nonce


def read(node, frames: list[bytes], nonce: bytes) -> tuple[wire.Header, str | None]:
    """The header of an answer (any version) and which key signed it."""
    size = 8 + 8 * int.from_bytes(frames[0][4:8], "little")
    header = wire.decode_header(frames[0][:size])
    if not header.flags & wire.FLAG_SIGNED:
        return header, None
    for name, service in (("own", SERVICE), ("other", OTHER)):
        if node.ring(service).open(frames, bind=nonce, remember=False) == "ok":
            return header, name
    return header, "unverifiable"


def audited(caplog) -> list[str]:
    return [json.loads(r.getMessage())["reason"] for r in caplog.records
            if r.name == "zmicro.audit" and json.loads(r.getMessage())["decision"] == "deny"]


@pytest.fixture(params=ROWS, ids=str)
def row(request):
    return request.param


@pytest.fixture
def node(serve, tmp_path, row):
    n = secure_node(serve, tmp_path / "home", max_in_flight=1 if row.state == "busy" else 1024)
    yield n
    n.release.set()  # a held call ends, so that the service stops


def test_the_earlier_check_answers(node, row, zctx, tmp_path, caplog):
    owner = RawPeer(zctx, node.address, node.server_key, node.store.identity())
    peer = owner
    try:
        if row.state == "revoked":
            guest = KeyStore(tmp_path / "guest").identity()
            node.store.trust(guest.public)
            eventually(lambda: node.trusts(guest.public), "the guest allowlisted")
            peer = RawPeer(zctx, node.address, node.server_key, guest)
            peer.nothing_before_pong(node.ring())  # connected and served
            node.store.untrust(guest.public)

            def refused():
                peer.send(node.ring().seal(wire.Header(kind=wire.Kind.PING, request_id=0)))
                return peer.answer()[1].status == C.UNAUTHENTICATED
            eventually(refused, "the guest's key revoked")
        elif row.state in ("busy", "draining"):
            owner.send(node.ring().seal(request(0, endpoint="Greeter.Hold"), [b"h"]))
            assert node.held.wait(WAIT)
            if row.state == "draining":
                node.svc.stop()  # returns at once; the held call keeps the node draining
        frames, nonce = message(node, row, 1)
        if "replay" in row.faults:  # the first copy goes through the checks
            peer.send(frames)
            assert peer.receive() is not None
        before = node.svc.stats()
        ran = list(node.ran)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="zmicro.audit"):
            peer.send(frames)
            expect = row.expect
            if isinstance(expect, Nothing):
                eventually(lambda: node.svc.stats()[expect.counted] == before[expect.counted] + 1,
                           f"{expect.counted} counted")
                assert peer.receive(timeout=0.3) is None, "an answer to a dropped message"
                assert node.svc.stats()["unauthenticated"] == before["unauthenticated"]
                assert audited(caplog) == []
                return
            frames = peer.receive()
            assert frames is not None, "no answer"
            answer, signed = read(node, frames, nonce)
        assert answer.request_id == 1
        if expect.status == REPLY:
            assert answer.kind == wire.Kind.REPLY
        elif expect.status == PONG:
            assert answer.kind == wire.Kind.PONG
        else:
            assert (answer.kind, answer.status) == (wire.Kind.ERROR, expect.status), answer
            assert answer.flags & wire.FLAG_NOT_PROCESSED
        assert signed == expect.signed
        if expect.signed is None:  # another version's refusal speaks that version
            assert answer.version == (1 if "version-1" in row.faults else wire.WIRE_VERSION)
        assert audited(caplog) == ([expect.audit] if expect.audit else [])
        if expect.status != REPLY:
            assert node.ran == ran  # no handler ran
    finally:
        if peer is not owner:
            peer.close()
        owner.close()
