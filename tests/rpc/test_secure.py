"""Secure by default, end to end: CurveZMQ with the allowlist, the MAC on
every message with replay protection, principals, policy, size limits.

Services run in a thread of the test process with a private key store
(``keys=``); clients either share it (the one-machine case) or bring
another. Raw pyzmq sockets, given the trusted key pair, play an attacker who
can put arbitrary frames on an authenticated connection.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import threading
import time

import pytest
import zmq

import zmicro
from zmicro import _core, wire
from zmicro.auth import Access, Policy, Rule
from zmicro.security.keys import KeyStore
from zmicro.security.mackeys import MacSecrets, secrets_path
from zmicro.registry import MemoryRegistry
from zmicro.security.zap import Authenticator

from ..processes import InProcess

WAIT = 60.0  # generous: a refusal must come long before such a deadline


@pytest.fixture
def store(tmp_path):
    s = KeyStore(tmp_path / "home")
    s.identity()
    return s


@pytest.fixture
def greeter(serve, store):
    registry = MemoryRegistry()
    svc = zmicro.Service("greeter", registry=registry, keys=store)

    @svc.handler("Greeter.Hello")
    def hello(req: dict, ctx: zmicro.Context) -> dict:
        p = ctx.principal
        return {"message": f"Hello {req['name']}", "who": p.name,
                "roles": sorted(p.roles), "key": ctx.user_id}

    @svc.handler("Greeter.Echo")
    def echo(req: bytes, ctx: zmicro.Context) -> bytes:
        return req

    serve(svc)
    return svc, registry


def raw_client(svc: zmicro.Service, store: KeyStore, zctx: zmq.Context) -> zmq.Socket:
    """A DEALER with the trusted key pair: an authenticated peer that sends
    whatever frames it likes."""
    me = store.identity()
    sock = zctx.socket(zmq.DEALER)
    sock.linger = 0
    sock.curve_publickey, sock.curve_secretkey = me.public.encode(), me.secret.encode()
    sock.curve_serverkey = svc._security.public_key.encode()
    sock.connect(svc.address)
    return sock


def answer(sock: zmq.Socket) -> wire.Header:
    assert sock.poll(WAIT * 1000), "no answer"
    frames = sock.recv_multipart()
    return _core.parse_frames(frames).header


def request_header(request_id: int, endpoint: str = "Greeter.Echo") -> wire.Header:
    return wire.Header(kind=zmicro.Kind.REQUEST, request_id=request_id, service="greeter",
                       endpoint=endpoint, content_type="application/octet-stream")


# -- the happy path and identity ----------------------------------------------


def test_secure_call_on_one_machine_needs_no_setup(greeter, store):
    svc, registry = greeter
    assert not svc.insecure
    with zmicro.Client(registry=registry, keys=store) as client:
        reply = client.call("greeter", "Greeter.Hello", {"name": "Ada"}, timeout=WAIT)
    assert reply["message"] == "Hello Ada"
    me = store.identity().public
    assert reply["key"] == me  # ZAP User-Id: the caller's Curve key
    assert reply["roles"] == ["self"]  # from the allowlist entry
    # The registry record carries the node's key.
    (record,) = registry.get("greeter")
    assert record.nodes[0].public_key == svc._security.public_key


def test_principal_name_and_roles_come_from_the_allowlist(greeter, store, tmp_path):
    svc, registry = greeter
    other = KeyStore(tmp_path / "other")
    # Another machine: its own key pair, the deployment's MAC secrets.
    shutil.copy(secrets_path(store.path), secrets_path(other.path))
    store.trust(other.identity().public, name="billing", roles=["reader", "ops"])
    time.sleep(0.6)  # the allowlist is re-read at most every 0.5 s
    with zmicro.Client(registry=registry, keys=other) as client:
        reply = client.call("greeter", "Greeter.Hello", {"name": "Bo"}, timeout=WAIT,
                            server_key=svc._security.public_key)
    assert (reply["who"], reply["roles"]) == ("billing", ["ops", "reader"])


@pytest.mark.parametrize("use_async", [False, True])
def test_unknown_client_key_is_refused_at_once_and_not_retried(greeter, tmp_path, use_async):
    svc, registry = greeter
    stranger = KeyStore(tmp_path / "stranger")
    auth = Authenticator.existing(zmq.Context.instance())
    denied_before = auth.stats()["denied"]

    async def async_call():
        client = zmicro.AsyncClient(registry=registry, keys=stranger)
        try:
            return await client.call("greeter", "Greeter.Hello", {"name": "Eve"},
                                     timeout=WAIT, server_key=svc._security.public_key)
        finally:
            client.close()

    with pytest.raises(zmicro.RPCError) as err:
        if use_async:
            asyncio.run(async_call())
        else:
            with zmicro.Client(registry=registry, keys=stranger) as client:
                client.call("greeter", "Greeter.Hello", {"name": "Eve"}, timeout=WAIT,
                            server_key=svc._security.public_key)
    # Not DEADLINE_EXCEEDED: the failed handshake ended the call.
    assert err.value.code == zmicro.Code.UNAUTHENTICATED
    assert "allowlist" in err.value.detail
    # The refused socket is closed: no handshake every 100 ms (libzmq's
    # reconnect interval) for the server to redo.
    denied = auth.stats()["denied"]
    assert denied > denied_before
    time.sleep(1.0)
    assert auth.stats()["denied"] == denied


def test_wrong_server_key_is_refused(greeter, store, tmp_path):
    svc, registry = greeter
    impostor_key = KeyStore(tmp_path / "impostor").identity().public
    with zmicro.Client(registry=registry, keys=store) as client:
        with pytest.raises(zmicro.RPCError) as err:
            client.call("greeter", "Greeter.Hello", {"name": "Ada"}, timeout=5.0,
                        server_key=impostor_key)
    # The server cannot complete a handshake for a key it does not hold:
    # the call never goes out.
    assert err.value.code in (zmicro.Code.UNAUTHENTICATED, zmicro.Code.UNAVAILABLE)


def test_plaintext_peer_is_refused(greeter, zctx):
    svc, _ = greeter
    sock = zctx.socket(zmq.DEALER)
    sock.linger = 0
    # Once the server has refused the handshake, libzmq may have no pipe to
    # queue on for a moment (it reconnects): a blocking send would wait
    # forever, so the send gives up after a while (nothing sent, the same
    # outcome for this test).
    sock.sndtimeo = 2000
    sock.connect(svc.address)
    try:
        sock.send_multipart([request_header(1).encode(), b"x"])
    except zmq.Again:
        pass
    assert not sock.poll(1000)
    assert svc.stats()["requests"] == 0


# -- the MAC -----------------------------------------------------------------------


@pytest.fixture
def ring(store):
    """The greeter's keyring, as a client holding the master secret has it."""
    return MacSecrets(secrets_path(store.path)).keyring("greeter")


def test_signed_raw_request_is_served(greeter, store, ring, zctx):
    svc, _ = greeter
    sock = raw_client(svc, store, zctx)
    header = request_header(1)
    sock.send_multipart(ring.seal(header, [b"ping"]))
    assert sock.poll(WAIT * 1000)
    frames = sock.recv_multipart()
    reply = _core.parse_frames(frames)
    assert reply.header.status == 0 and reply.bodies == [b"ping"]
    # Replies are signed too, with the service's key, and bound to the
    # request's nonce: no other call could take this one for its answer.
    assert reply.header.flags & 1
    assert ring.open(frames, bind=header.nonce, remember=False) == "ok"
    assert ring.open(frames, bind=bytes(16), remember=False) == "bad_mac"


def tamper(frames: list[bytes], index: int, offset: int) -> list[bytes]:
    f = bytearray(frames[index])
    f[offset % len(f)] ^= 0x01
    return [*frames[:index], bytes(f), *frames[index + 1:]]


@pytest.mark.parametrize("case", ["unsigned", "header", "body", "mac", "resplit",
                                  "unknown-key", "stale", "future", "replay"])
def test_bad_messages_are_refused_and_the_server_keeps_serving(greeter, store, ring, zctx,
                                                              case, caplog):
    svc, registry = greeter
    sock = raw_client(svc, store, zctx)
    good = ring.seal(request_header(1), [b"body", b""]) if case == "resplit" else \
        ring.seal(request_header(1), [b"body"])
    if case == "unsigned":
        frames = [request_header(1).encode(), b"body"]
    elif case == "header":
        frames = tamper(good, 0, len(good[0]) - 3)  # a byte of the endpoint text
    elif case == "body":
        frames = tamper(good, 1, 0)
    elif case == "mac":
        frames = tamper(good, 2, 5)
    elif case == "resplit":  # bytes moved from one body frame to the next
        frames = [good[0], b"bod", b"y", good[-1]]
    elif case == "unknown-key":
        other = _core.Keyring([_core.MacKey(99, _core.MAC_HMAC_SHA256, b"k" * 32)], 99)
        frames = other.seal(request_header(1), [b"body"])
    elif case in ("stale", "future"):
        shift = -31.0 if case == "stale" else 31.0
        skewed = MacSecrets(secrets_path(store.path), clock=lambda: time.time() + shift)
        frames = skewed.keyring("greeter").seal(request_header(1), [b"body"])
    else:  # replay: the first copy is served, the second refused
        sock.send_multipart(good)
        assert answer(sock).status == 0
        frames = good

    with caplog.at_level(logging.WARNING, logger="zmicro.audit"):
        sock.send_multipart(frames)
        header = answer(sock)
    assert header.kind == zmicro.Kind.ERROR
    assert header.status == zmicro.Code.UNAUTHENTICATED
    assert header.detail == "unauthenticated"  # never which check failed
    assert svc.stats()["unauthenticated"] >= 1
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "zmicro.audit"]
    assert any(line["decision"] == "deny" and line["reason"].startswith("mac:")
               for line in lines)
    for line in lines:  # no secret, nonce or MAC in the audit trail
        text = json.dumps(line)
        assert frames[-1].hex() not in text and store.identity().public not in text

    # The service is unharmed.
    with zmicro.Client(registry=registry, keys=store) as client:
        assert client.call("greeter", "Greeter.Echo", b"ok",
                           content_type="application/octet-stream", timeout=WAIT) == b"ok"


def test_unsigned_cancel_is_ignored(greeter, store, zctx):
    svc, _ = greeter
    sock = raw_client(svc, store, zctx)
    sock.send_multipart([wire.Header(kind=zmicro.Kind.CANCEL, request_id=5).encode()])
    time.sleep(0.2)
    stats = svc.stats()
    assert stats["cancels"] == 0 and stats["unauthenticated"] == 1


def test_rotation_without_downtime(greeter, store):
    svc, registry = greeter
    editor = MacSecrets(secrets_path(store.path))
    stop = threading.Event()
    errors: list[Exception] = []
    calls = [0]

    def caller():
        with zmicro.Client(registry=registry, keys=store) as client:
            while not stop.is_set():
                try:
                    client.call("greeter", "Greeter.Echo", b"x",
                                content_type="application/octet-stream", timeout=WAIT)
                    calls[0] += 1
                except Exception as exc:  # pragma: no cover - reported below
                    errors.append(exc)

    t = threading.Thread(target=caller)
    t.start()
    try:
        new = editor.add("blake2b")
        time.sleep(2.5)  # every process re-reads the file within ~1 s
        editor.set_current(new)
        time.sleep(2.5)
        editor.remove(1)
        time.sleep(2.5)
    finally:
        stop.set()
        t.join(WAIT)
    assert not errors, errors[:3]
    assert calls[0] > 0
    # The service now signs with the new key only.
    with zmicro.Client(registry=registry, keys=store) as client:
        client.call("greeter", "Greeter.Echo", b"x", content_type="application/octet-stream",
                    timeout=WAIT)
    ring = MacSecrets(secrets_path(store.path)).keyring("greeter")
    assert ring.key_ids == [new]


# -- policy and limits ---------------------------------------------------------------


def test_policy_rules_apply_to_calls(serve, store):
    registry = MemoryRegistry()
    policy = Policy(rules=[Rule("vault:Vault.Read", "self", priority=1),
                           Rule("vault:*", "*", access=Access.DENY, priority=0)])
    svc = zmicro.Service("vault", registry=registry, keys=store, policy=policy)

    @svc.handler("Vault.Read")
    def read(req, ctx):
        return {"ok": True}

    @svc.handler("Vault.Wipe")
    def wipe(req, ctx):  # pragma: no cover - never allowed
        return {"wiped": True}

    serve(svc)
    with zmicro.Client(registry=registry, keys=store) as client:
        assert client.call("vault", "Vault.Read", {}, timeout=WAIT) == {"ok": True}
        with pytest.raises(zmicro.RPCError) as err:
            client.call("vault", "Vault.Wipe", {}, timeout=WAIT)
    assert err.value.code == zmicro.Code.PERMISSION_DENIED


def test_oversize_request_is_refused_before_sending(greeter, store):
    svc, registry = greeter
    with zmicro.Client(registry=registry, keys=store, max_message_size=1000) as client:
        with pytest.raises(zmicro.RPCError) as err:
            client.call("greeter", "Greeter.Echo", b"x" * 1001,
                        content_type="application/octet-stream", timeout=WAIT)
        assert err.value.code == zmicro.Code.RESOURCE_EXHAUSTED
        assert "max_message_size" in err.value.detail and "1001" in err.value.detail
        # The header counts too when the body rides in its frame.
        with pytest.raises(zmicro.RPCError) as err:
            client.call("greeter", "Greeter.Echo", b"x" * 990,
                        content_type="application/octet-stream", timeout=WAIT)
        assert err.value.code == zmicro.Code.RESOURCE_EXHAUSTED
        assert "header and body" in err.value.detail
        # Nothing was sent: the connection (and every call on it) is intact.
        assert client.call("greeter", "Greeter.Echo", b"x" * 500,
                           content_type="application/octet-stream", timeout=WAIT) == b"x" * 500
    assert svc.stats()["requests"] == 1


def test_insecure_only_on_request(monkeypatch, tmp_path):
    monkeypatch.delenv("ZMICRO_INSECURE", raising=False)
    assert not zmicro.Service("a", keys=tmp_path / "k").insecure
    assert zmicro.Service("a", insecure=True).insecure
    monkeypatch.setenv("ZMICRO_INSECURE", "1")
    assert zmicro.Service("a").insecure
    assert zmicro.Client().insecure


def test_a_server_without_its_zap_handler_fails_calls_before_their_deadline(tmp_path):
    """The authenticator gone, the server admits nobody (it never fails
    open), and the client says so instead of waiting for a long deadline.
    (libzmq drops such a handshake at once here; where it leaves it
    hanging, the client's HANDSHAKE_TIMEOUT_MS bounds the wait.)"""
    zctx = zmq.Context()
    store = KeyStore(tmp_path / "home")
    registry = MemoryRegistry()
    svc = zmicro.Service("orphan", registry=registry, keys=store, context=zctx)
    svc.handler("O.Echo")(lambda req, ctx: req)
    running = InProcess(svc)
    try:
        Authenticator.existing(zctx).stop()
        with zmicro.Client(registry=registry, keys=store, context=zctx) as client:
            with pytest.raises(zmicro.RPCError) as err:
                client.call("orphan", "O.Echo", 1, timeout=WAIT)
        # UNAVAILABLE, never sent (libzmq cannot tell this from a wrong
        # server key or a handshake timeout: another node may do), and
        # long before the deadline: the detail is the handshake's.
        assert err.value.code == zmicro.Code.UNAVAILABLE and err.value.processed is False
        assert "secure handshake" in err.value.detail, err.value.detail
        assert svc.stats()["requests"] == 0
    finally:
        running.stop()
        zctx.destroy(linger=0)
