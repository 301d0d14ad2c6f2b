"""Refusals before a handler runs carry the wire's NOT_PROCESSED flag (safe
to retry on any node); errors from a handler that ran never do.

Most of these put raw frames on the wire, so they use insecure services
(like test_backpressure); the MAC refusal is checked on a secure one.
"""

from __future__ import annotations

import threading

import msgspec
import pytest
import zmq

import zmicro
from zmicro import Code, wire
from zmicro.security.transport import Security

from ..helpers import eventually

NP = wire.FLAG_NOT_PROCESSED


class Typed(msgspec.Struct):
    name: str


def raw_call(address, header, bodies=(), *, security=None, server_key=None):
    """Send one request on a fresh DEALER; the answer's header."""
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    try:
        if security is not None:
            security.configure_client(sock, server_key)
        sock.connect(address)
        zmicro.send_message(sock, header, bodies, timeout=30)
        return zmicro.recv_message(sock, timeout=30).header
    finally:
        sock.close(0)


def request(endpoint="R.Echo", **fields):
    fields = {"service": "refusals", "content_type": "application/json", **fields}
    return zmicro.Header(kind=wire.Kind.REQUEST, request_id=7, endpoint=endpoint, **fields)


@pytest.fixture
def refusals(memory_registry, serve):
    release = threading.Event()
    svc = zmicro.Service("refusals", registry=memory_registry, insecure=True, max_in_flight=1)

    @svc.handler("R.Echo")
    def echo(req, ctx):
        return req

    @svc.handler("R.Typed")
    def typed(req: Typed, ctx) -> str:
        return req.name

    @svc.handler("R.Fail")
    def fail(req, ctx):
        raise zmicro.RPCError(Code.UNAVAILABLE, "the handler's own UNAVAILABLE")

    @svc.handler("R.Hold", blocking=True)
    def hold(req, ctx):
        release.wait(60)
        return "held"

    serve(svc)
    yield svc, release
    release.set()


def test_the_flag_value_is_the_protocol_docs():
    assert wire.FLAG_NOT_PROCESSED == 0x8 == wire.Flags.NOT_PROCESSED
    # distinct from every other flag bit
    others = wire.FLAG_SIGNED | wire.FLAG_BODY_INLINE | wire.FLAG_MAC_TRAILER
    assert not (others & NP)


@pytest.mark.parametrize("header, bodies, code", [
    (request(service="someone-else"), [b"1"], Code.UNAVAILABLE),
    (request("R.Nope"), [b"1"], Code.UNIMPLEMENTED),
    (request(content_type="text/x-unknown"), [b"1"], Code.INVALID_ARGUMENT),
    (request(), [b"1", b"2"], Code.INVALID_ARGUMENT),
    (request("R.Typed"), [b'{"name": 1}'], Code.INVALID_ARGUMENT),
    (request("R.Typed"), [b"{not json"], Code.INVALID_ARGUMENT),
    (zmicro.Header(version=wire.WIRE_VERSION + 1, kind=wire.Kind.REQUEST, request_id=7), [],
     Code.UNIMPLEMENTED),
], ids=["wrong-service", "unknown-endpoint", "content-type", "two-bodies", "bad-field",
        "undecodable", "version"])
def test_refusals_are_flagged_not_processed(refusals, header, bodies, code):
    svc, _ = refusals
    answer = raw_call(svc.address, header, bodies)
    assert (answer.kind, answer.status, answer.request_id) == (wire.Kind.ERROR, code, 7)
    assert answer.flags & NP


def test_handler_outcomes_are_not_flagged(refusals):
    svc, _ = refusals
    ok = raw_call(svc.address, request(), [b'"hi"'])
    assert ok.kind == wire.Kind.REPLY and not ok.flags & NP
    failed = raw_call(svc.address, request("R.Fail"), [b"null"])
    assert (failed.kind, failed.status) == (wire.Kind.ERROR, Code.UNAVAILABLE)
    assert not failed.flags & NP  # the same code, but a handler ran


def test_busy_is_flagged(refusals):
    svc, release = refusals
    holder = threading.Thread(target=raw_call, args=(svc.address, request("R.Hold"), [b"1"]),
                              daemon=True)
    holder.start()
    eventually(lambda: svc.stats()["in_flight"] >= 1, "the held call starts")
    busy = raw_call(svc.address, request(), [b"1"])
    assert busy.status == Code.RESOURCE_EXHAUSTED and busy.flags & NP
    release.set()
    holder.join(30)


def test_a_mac_refusal_is_flagged_and_signed(memory_registry, serve):
    """Secure service (the defaults); the request has no MAC."""
    svc = zmicro.Service("refusals", registry=memory_registry)

    @svc.handler("R.Echo")
    def echo(req, ctx):
        return req

    serve(svc)
    security = Security.resolve()
    answer = raw_call(svc.address, request(), [b"1"], security=security,
                      server_key=security.public_key)
    assert answer.status == Code.UNAUTHENTICATED and answer.flags & NP
    assert answer.flags & wire.FLAG_SIGNED  # the refusal is signed like any reply
