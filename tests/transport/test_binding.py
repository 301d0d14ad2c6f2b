"""The core's libzmq binding on sockets pyzmq created."""

from __future__ import annotations

import errno
import signal
import threading
import time

import pytest
import zmq
import zmq.auth.thread

import zmicro
from zmicro import _core, errors, wire
from zmicro.security.mac import Alg

KEY = b"0123456789abcdef0123456789abcdef"


@pytest.fixture(params=["inproc", "ipc", "tcp"])
def pair(request, zctx, tmp_path):
    """A connected (DEALER, ROUTER) pair over each transport."""
    router = zctx.socket(zmq.ROUTER)
    router.linger = 0
    if request.param == "inproc":
        addr = f"inproc://binding-{id(router)}"
        router.bind(addr)
    elif request.param == "ipc":
        addr = f"ipc://{tmp_path}/binding.sock"
        router.bind(addr)
    else:
        port = router.bind_to_random_port("tcp://127.0.0.1")
        addr = f"tcp://127.0.0.1:{port}"
    dealer = zctx.socket(zmq.DEALER)
    dealer.linger = 0
    dealer.connect(addr)
    return dealer, router


def request_header(**kw):
    return zmicro.Header(kind=zmicro.Kind.REQUEST, request_id=42, deadline_us=5_000_000,
                         service="greeter", endpoint="Greeter.Hello",
                         content_type="application/msgpack",
                         metadata={"traceparent": b"00-" + b"a" * 32}, **kw)


def test_libzmq_is_pyzmqs():
    assert _core.libzmq_version() == zmq.zmq_version_info()


@pytest.mark.parametrize("signed", [False, True])
def test_request_reply_round_trip(pair, signed):
    dealer, router = pair
    key = KEY if signed else None
    req = request_header()
    wire.send_message(dealer, req, [b"first", b"", b"third"], mac_key=key, timeout=5)
    got = wire.recv_message(router, routed=True, timeout=5)
    assert got.header.request_id == 42 and got.header.service == "greeter"
    assert got.header.metadata == req.metadata
    assert got.bodies == [b"first", b"", b"third"]
    assert isinstance(got.routing_id, bytes) and got.routing_id
    assert bool(got.header.flags & wire.FLAG_SIGNED) is signed
    assert got.verify(Alg.HMAC_SHA256, KEY) is signed

    reply = zmicro.Header(kind=zmicro.Kind.REPLY, request_id=42)
    wire.send_message(router, reply, [b"answer"], routing_id=got.routing_id,
                      mac_key=key, timeout=5)
    back = wire.recv_message(dealer, timeout=5)
    assert back.routing_id is None
    assert back.header.kind == zmicro.Kind.REPLY and back.bodies == [b"answer"]
    assert back.verify(Alg.HMAC_SHA256, KEY) is signed
    assert back.user_id is None


@pytest.mark.parametrize("signed, limit", [(False, 15), (True, 14)])
def test_send_refuses_too_many_frames(pair, signed, limit):
    """Header + bodies (+ MAC) must fit the receiver's frame limit."""
    dealer, router = pair
    key = KEY if signed else None
    wire.send_message(dealer, zmicro.Header(), [b"b"] * limit, mac_key=key, timeout=5)
    assert len(wire.recv_message(router, routed=True, timeout=5).bodies) == limit
    for n in (limit + 1, limit + 2, 100):
        with pytest.raises(zmicro.WireError) as err:
            wire.send_message(dealer, zmicro.Header(), [b"b"] * n, mac_key=key, timeout=5)
        assert err.value.code == zmicro.WireErrorCode.FRAME_COUNT


@pytest.mark.parametrize("signed", [False, True])
def test_inline_body_round_trip(pair, signed):
    dealer, router = pair
    key = KEY if signed else None
    wire.send_message(dealer, request_header(), [b"inline body"], mac_key=key, timeout=5,
                      inline_body=True)
    got = wire.recv_message(router, routed=True, timeout=5)
    assert got.inline and got.bodies == [b"inline body"]
    assert got.header.flags & wire.FLAG_BODY_INLINE
    assert got.verify(Alg.HMAC_SHA256, KEY) is signed
    with pytest.raises(ValueError):
        wire.send_message(dealer, request_header(), [b"a", b"b"], inline_body=True)


def test_large_bodies(pair):
    dealer, router = pair
    big = bytes(range(256)) * 4096  # 1 MiB
    wire.send_message(dealer, request_header(), [big, big[:70_000]], timeout=5)
    got = wire.recv_message(router, routed=True, timeout=5)
    assert got.bodies == [big, big[:70_000]]


def test_accepts_underlying_address(pair):
    dealer, router = pair
    wire.send_message(dealer.underlying, request_header(), [b"x"], timeout=5)
    assert wire.recv_message(router.underlying, routed=True, timeout=5).bodies == [b"x"]


def test_many_messages_in_order(pair):
    dealer, router = pair
    for i in range(500):
        wire.send_message(dealer, zmicro.Header(request_id=i), [str(i).encode()], timeout=5)
    ids = [wire.recv_message(router, routed=True, timeout=5).header.request_id for _ in range(500)]
    assert ids == list(range(500))


def test_recv_timeout(pair):
    dealer, _ = pair
    t0 = time.monotonic()
    with pytest.raises(errors.WouldBlock) as err:
        wire.recv_message(dealer, timeout=0.05)
    assert err.value.errno == errno.EAGAIN
    assert time.monotonic() - t0 >= 0.04
    with pytest.raises(errors.WouldBlock):
        wire.recv_message(dealer, timeout=0)


def test_send_without_peers_times_out(zctx):
    lonely = zctx.socket(zmq.DEALER)  # no connection: nowhere to queue
    with pytest.raises(errors.WouldBlock):
        wire.send_message(lonely, zmicro.Header(), timeout=0.05)
    with pytest.raises(errors.WouldBlock):
        wire.send_message(lonely, zmicro.Header(), timeout=0)
    lonely.close(0)


def test_unroutable_with_router_mandatory(pair):
    _, router = pair
    router.setsockopt(zmq.ROUTER_MANDATORY, 1)
    with pytest.raises(errors.HostUnreachable) as err:
        wire.send_message(router, zmicro.Header(), routing_id=b"nobody", timeout=1)
    assert err.value.errno == errno.EHOSTUNREACH


def test_closed_socket(zctx):
    s = zctx.socket(zmq.DEALER)
    s.close()
    with pytest.raises(errors.SocketClosed):
        wire.recv_message(s, timeout=0)
    with pytest.raises(errors.SocketClosed):
        wire.send_message(s, zmicro.Header(), timeout=0)


def test_malformed_messages_are_consumed_whole(pair):
    """Garbage is refused with a code and never desynchronises the stream."""
    dealer, router = pair
    garbage = [
        [b"not a header"],
        [b"x" * 16, b"body"],
        [zmicro.Header(version=9).encode()],
        [b"h"] * 40,                                       # far too many frames
        [zmicro.Header(flags=wire.FLAG_SIGNED).encode()],   # signed, no MAC
    ]
    for frames in garbage:
        dealer.send_multipart(frames)
        wire.send_message(dealer, zmicro.Header(request_id=7), [b"ok"], timeout=5)
    codes = []
    for _ in garbage:
        with pytest.raises(zmicro.WireError) as err:
            wire.recv_message(router, routed=True, timeout=5)
        codes.append(err.value.code)
        assert wire.recv_message(router, routed=True, timeout=5).bodies == [b"ok"]
    E = zmicro.WireErrorCode
    assert codes == [E.SHORT, E.SEGMENTS, E.VERSION, E.FRAME_COUNT, E.MAC_FRAME]


def test_gil_released_while_blocked(pair):
    """A thread blocked in recv_message lets the main thread run Python: the
    main thread does the work that unblocks it, long before the timeout."""
    dealer, router = pair
    result = {}

    def serve():
        try:
            result["msg"] = wire.recv_message(router, routed=True, timeout=30)
        except Exception as exc:  # pragma: no cover - reported below
            result["error"] = exc

    t = threading.Thread(target=serve)
    t.start()
    total = sum(i * i for i in range(200_000))  # pure Python, needs the GIL
    wire.send_message(dealer, zmicro.Header(request_id=total % 1000), [b"go"], timeout=5)
    t.join(30)
    assert not t.is_alive()
    assert "error" not in result
    assert result["msg"].header.request_id == total % 1000


def test_signal_interrupts_blocking_receive(pair):
    """EINTR from libzmq runs Python's signal handlers; their exception ends
    the wait (how Ctrl-C stops a blocked server)."""
    dealer, _ = pair

    class Interrupted(Exception):
        pass

    def handler(signum, frame):
        raise Interrupted

    old = signal.signal(signal.SIGALRM, handler)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.1)
        with pytest.raises(Interrupted):
            wire.recv_message(dealer)  # no timeout: would wait forever
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def test_signal_without_exception_keeps_waiting(pair):
    dealer, router = pair
    hits = []
    old = signal.signal(signal.SIGALRM, lambda *a: hits.append(1))
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        with pytest.raises(errors.WouldBlock):
            wire.recv_message(dealer, timeout=0.5)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    assert hits == [1]


def test_user_id_from_zap(zctx):
    """zmq_msg_gets("User-Id"): the identity the ZAP handler authenticated."""
    auth = zmq.auth.thread.ThreadAuthenticator(zctx)
    auth.start()
    try:
        auth.configure_plain(domain="*", passwords={"ada": "secret"})
        router = zctx.socket(zmq.ROUTER)
        router.plain_server = True
        router.linger = 0
        port = router.bind_to_random_port("tcp://127.0.0.1")
        dealer = zctx.socket(zmq.DEALER)
        dealer.plain_username, dealer.plain_password = b"ada", b"secret"
        dealer.linger = 0
        dealer.connect(f"tcp://127.0.0.1:{port}")
        wire.send_message(dealer, zmicro.Header(request_id=1), [b"hi"], timeout=10)
        got = wire.recv_message(router, routed=True, timeout=10)
        assert got.user_id == "ada"
    finally:
        auth.stop()


@pytest.mark.parametrize("err, cls", [
    (errno.EAGAIN, errors.WouldBlock),
    (156384712 + 53, errors.ContextTerminated),
    (errno.ENOTSOCK, errors.SocketClosed),
    (errno.EHOSTUNREACH, errors.HostUnreachable),
    (errno.EINVAL, errors.TransportError),
])
def test_errno_mapping(err, cls):
    with pytest.raises(cls) as info:
        _core._raise_errno(err)
    assert type(info.value) is cls
    assert info.value.errno == err and info.value.strerror
    assert isinstance(info.value, zmicro.Error) and isinstance(info.value, OSError)


def test_error_code_enum_matches_c():
    assert _core._error_codes() == {c.name: c.value for c in zmicro.WireErrorCode}


@pytest.mark.parametrize("version", [(4, 3, 2), (4, 2, 9), (3, 2, 5)])
def test_old_libzmq_refused(version):
    with pytest.raises(ImportError, match="CVE-2019-13132"):
        _core._check_libzmq_version(version)


@pytest.mark.parametrize("version", [(4, 3, 3), (4, 3, 5), (5, 0, 0)])
def test_current_libzmq_accepted(version):
    _core._check_libzmq_version(version)
