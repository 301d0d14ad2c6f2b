"""Peers of another protocol version (docs/protocol.md §3.7): neither side
waits for a deadline. A version-2 server answers any other version with an
unsigned UNIMPLEMENTED + NOT_PROCESSED, written in the caller's version
when that one is older (version 1 has the same layout); a version-2 client
ends a call whose answer is of another version with UNIMPLEMENTED,
processed=False, signed or not.
"""

from __future__ import annotations

import asyncio
import threading

import pytest
import zmq

import zmicro
from zmicro import _core, wire
from zmicro.registry import MemoryRegistry

from .raw_peer import OCTETS, SERVICE, WAIT, RawPeer, request, secure_node


@pytest.fixture
def node(serve, tmp_path):
    return secure_node(serve, tmp_path / "home")


@pytest.mark.parametrize("version, answered_in", [(1, 1), (0, 2), (3, 2), (0xFFFF, 2)])
@pytest.mark.parametrize("signed", [True, False], ids=["signed", "unsigned"])
def test_a_request_of_another_version_is_refused_unsigned(node, zctx, version, answered_in,
                                                          signed):
    peer = RawPeer(zctx, node.address, node.server_key, node.store.identity())
    try:
        header = request(42)
        header.version = version
        peer.send(node.ring().seal(header, [b"x"]) if signed else [header.encode(), b"x"])
        frames = peer.receive()
        assert frames is not None and len(frames) == 1
        answer = wire.decode_header(frames[0])  # no body, no MAC: the header alone
        assert (answer.version, answer.kind, answer.status, answer.request_id) == \
            (answered_in, wire.Kind.ERROR, zmicro.Code.UNIMPLEMENTED, 42)
        assert answer.flags == wire.FLAG_NOT_PROCESSED  # not SIGNED
        assert f"version {version}" in answer.detail
        assert node.ran == []
    finally:
        peer.close()


class OldServer:
    """A node of another protocol version: it answers every request with
    `answer(header)`'s frames, unsigned (as version 1 answers version 2)."""

    def __init__(self, zctx, answer) -> None:
        self.answer = answer
        public, secret = zmq.curve_keypair()
        self.public_key = public.decode()
        self.sock = zctx.socket(zmq.ROUTER)
        self.sock.linger = 0
        self.sock.curve_server = True
        self.sock.curve_secretkey = secret
        self.address = f"tcp://127.0.0.1:{self.sock.bind_to_random_port('tcp://127.0.0.1')}"
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            if self.sock.poll(20):
                peer, *frames = self.sock.recv_multipart()
                self.sock.send_multipart([peer, *self.answer(_core.parse_frames(frames).header)])

    def close(self) -> None:
        self.stop.set()
        self.thread.join(WAIT)
        self.sock.close(0)


def version_1_refusal(req: wire.Header) -> list[bytes]:
    return [wire.Header(version=1, kind=wire.Kind.ERROR, request_id=req.request_id,
                        status=zmicro.Code.UNIMPLEMENTED, service=SERVICE,
                        detail="unsupported protocol version 2").encode()]


def version_3_reply(req: wire.Header) -> list[bytes]:
    return [wire.Header(version=3, kind=wire.Kind.REPLY, request_id=req.request_id,
                        content_type=OCTETS).encode(), b"not for you"]


@pytest.mark.parametrize("answer", [version_1_refusal, version_3_reply])
@pytest.mark.parametrize("use_async", [False, True], ids=["Client", "AsyncClient"])
def test_a_client_ends_a_call_answered_in_another_version(node, zctx, answer, use_async):
    old = OldServer(zctx, answer)
    kw = dict(registry=MemoryRegistry(), keys=node.store, retry=False, timeout=WAIT)
    call = (SERVICE, "Greeter.Echo", b"hi")
    options = dict(content_type=OCTETS, address=old.address, server_key=old.public_key)
    try:
        with pytest.raises(zmicro.RPCError) as err:
            if use_async:
                async def run():
                    client = zmicro.AsyncClient(**kw)
                    try:
                        return await client.call(*call, **options)
                    finally:
                        client.close()
                asyncio.run(run())
            else:
                with zmicro.Client(**kw) as client:
                    client.call(*call, **options)
    finally:
        old.close()
    assert err.value.code == zmicro.Code.UNIMPLEMENTED  # not DEADLINE_EXCEEDED
    assert err.value.processed is False
    assert "version" in err.value.detail
