"""Every codec end to end: msgpack, JSON, octet-stream, capnp, and a
codec registered by the user."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import capnp
import msgspec
import pytest

import zmicro
from zmicro import Code, RPCError, codec

point_schema = capnp.load(str(Path(__file__).with_name("schemas") / "point.capnp"))


class Order(msgspec.Struct):
    item: str
    quantity: int
    tags: list[str] = []


class Receipt(msgspec.Struct):
    total: int
    item: str


@dataclasses.dataclass
class Pair:
    a: int
    b: int


@pytest.fixture
def codec_service(memory_registry, serve):
    svc = zmicro.Service("codecs", registry=memory_registry, insecure=True)

    @svc.handler("C.Order")
    def order(req: Order, ctx) -> Receipt:
        return Receipt(total=req.quantity * 3, item=req.item)

    @svc.handler("C.Pair")
    def pair(req: Pair, ctx) -> Pair:
        return Pair(req.b, req.a)

    @svc.handler("C.Bytes")
    def raw(req: bytes, ctx) -> bytes:
        view = memoryview(req)
        return bytes(view[::-1]) if len(view) < 1000 else req  # big: echoed as received

    @svc.handler("C.Point")
    def point(req: point_schema.Point, ctx):
        out = point_schema.Point.new_message()
        out.x, out.y, out.label = req.y, req.x, req.label.upper()
        return out

    @svc.handler("C.ContentType")
    def content_type(req, ctx):
        return ctx.content_type

    serve(svc)
    client = zmicro.Client(registry=memory_registry, insecure=True)
    yield client
    client.close()


@pytest.mark.parametrize("ct", [codec.MSGPACK, codec.JSON])
def test_struct_codecs(codec_service, ct):
    got = codec_service.call("codecs", "C.Order", Order("tea", 2), content_type=ct,
                             response_type=Receipt)
    assert got == Receipt(total=6, item="tea")
    assert codec_service.call("codecs", "C.ContentType", None, content_type=ct) == ct


@pytest.mark.parametrize("ct", [codec.MSGPACK, codec.JSON])
def test_dataclass_types(codec_service, ct):
    assert codec_service.call("codecs", "C.Pair", {"a": 1, "b": 2}, content_type=ct,
                              response_type=Pair) == Pair(2, 1)


@pytest.mark.parametrize("ct", [codec.MSGPACK, codec.JSON])
def test_invalid_typed_request(codec_service, ct):
    with pytest.raises(RPCError) as err:
        codec_service.call("codecs", "C.Order", {"item": "tea", "quantity": "two"},
                           content_type=ct)
    assert err.value.code == Code.INVALID_ARGUMENT and "$.quantity" in err.value.detail


def test_malformed_body(codec_service):
    with pytest.raises(RPCError) as err:
        codec_service.call("codecs", "C.Order", b"\xc1\xc1", content_type=codec.OCTET_STREAM)
    assert err.value.code == Code.INVALID_ARGUMENT  # octet-stream to a typed endpoint


def test_octet_stream_small(codec_service):
    assert codec_service.call("codecs", "C.Bytes", b"abc",
                              content_type=codec.OCTET_STREAM) == b"cba"


@pytest.mark.parametrize("size", [codec.ZERO_COPY_MIN - 1, codec.ZERO_COPY_MIN, 4 << 20])
def test_octet_stream_large_round_trip(codec_service, size):
    """Large bodies travel without copies (memoryviews over the received
    frames) and arrive intact."""
    body = bytes(range(256)) * (size // 256) + b"z" * (size % 256)
    got = codec_service.call("codecs", "C.Bytes", body, content_type=codec.OCTET_STREAM)
    if size >= 1000:
        assert bytes(got) == body
    if size >= codec.ZERO_COPY_MIN:
        assert isinstance(got, memoryview) and got.readonly
    else:
        assert isinstance(got, bytes)


def test_octet_stream_size_seen_by_handler(memory_registry, serve):
    svc = zmicro.Service("sizes", registry=memory_registry, insecure=True)
    seen = []

    @svc.handler("S.Take")
    def take(req: bytes, ctx) -> bytes:
        seen.append((type(req).__name__, len(memoryview(req))))
        return b"ok"

    serve(svc)
    with zmicro.Client(registry=memory_registry, insecure=True) as c:
        for size in (10, 1 << 20):
            assert c.call("sizes", "S.Take", b"q" * size,
                          content_type=codec.OCTET_STREAM) == b"ok"
    assert seen == [("bytes", 10), ("memoryview", 1 << 20)]


def test_octet_stream_refuses_non_bytes(codec_service):
    with pytest.raises(TypeError):
        codec_service.call("codecs", "C.Bytes", {"not": "bytes"}, content_type=codec.OCTET_STREAM)


def test_capnp(codec_service):
    p = point_schema.Point.new_message(x=1, y=2, label="north")
    got = codec_service.call("codecs", "C.Point", p, content_type=codec.CAPNP,
                             response_type=point_schema.Point)
    assert (got.x, got.y, got.label) == (2, 1, "NORTH")


def test_capnp_garbage_is_invalid_argument(codec_service):
    with pytest.raises(RPCError) as err:
        codec_service.call("codecs", "C.Point", b"\x07" * 24, content_type=codec.OCTET_STREAM)
    assert err.value.code == Code.INVALID_ARGUMENT


def test_unsupported_content_type(codec_service):
    """A content type the service has no codec for (sent raw)."""
    import zmq
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.connect(codec_service._pick("codecs"))
    zmicro.send_message(sock, zmicro.Header(request_id=1, service="codecs", endpoint="C.Order",
                                            content_type="text/x-unknown"), [b"x"], timeout=10)
    m = zmicro.recv_message(sock, timeout=20)
    assert m.header.status == Code.INVALID_ARGUMENT and "text/x-unknown" in m.header.detail
    sock.close(0)
    ctx.term()


def test_user_codec(memory_registry, serve):
    class Upper:
        content_type = "text/x-upper"

        def encode(self, value):
            return str(value).upper().encode()

        def decoder(self, type=None):
            return lambda data: bytes(data).decode()

    codec.register_codec(Upper())
    svc = zmicro.Service("upper", registry=memory_registry, insecure=True)

    @svc.handler("U.Echo")
    def echo(req: str, ctx) -> str:
        return req + "!"

    serve(svc)
    with zmicro.Client(registry=memory_registry, insecure=True) as c:
        assert c.call("upper", "U.Echo", "hi", content_type="text/x-upper") == "HI!"


def test_async_client_codecs(codec_service, memory_registry):
    async def go():
        async with zmicro.AsyncClient(registry=memory_registry, insecure=True) as c:
            a = await c.call("codecs", "C.Order", Order("x", 1), response_type=Receipt)
            b = await c.call("codecs", "C.Bytes", b"x" * (1 << 20),
                             content_type=codec.OCTET_STREAM)
            return a, b
    a, b = asyncio.run(go())
    assert a == Receipt(3, "x") and bytes(b) == b"x" * (1 << 20)
