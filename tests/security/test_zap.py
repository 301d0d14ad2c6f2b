"""The ZAP handler over real sockets: Curve ROUTER servers configured by
Security.configure_server, DEALER clients by Security.configure_client,
tcp://127.0.0.1, one zmq.Context per test.

What a refused client sees (libzmq 4.3.5), checked here:
- key not in the allowlist (ZAP 400): EVENT_HANDSHAKE_FAILED_AUTH with
  value 400, and libzmq does not reconnect;
- no ZAP handler, with ZAP_ENFORCE_DOMAIN: the server sees
  HANDSHAKE_FAILED_NO_DETAIL (EFAULT) and usually keeps the connection
  open, so the client sees nothing until its HANDSHAKE_IVL expires
  (NO_DETAIL, EAGAIN), then reconnects; now and then the server closes at
  once (client: NO_DETAIL, EPIPE);
- a wrong server key: the server sees HANDSHAKE_FAILED_PROTOCOL
  (ZMTP_CRYPTOGRAPHIC), the client NO_DETAIL (EPIPE), and it reconnects
  every RECONNECT_IVL.
"""

from __future__ import annotations

import errno
import json
import logging
import os

import pytest
import zmq
import zmq.utils.z85
from hypothesis import given
from hypothesis import strategies as st

from zmicro.errors import Error
from zmicro.security.keys import TrustedKey, fingerprint
from zmicro.security.zap import Authenticator, decode_metadata, encode_metadata

from ..helpers import eventually
from .conftest import WAIT, Monitor

AUTH = "HANDSHAKE_FAILED_AUTH"
NO_DETAIL = "HANDSHAKE_FAILED_NO_DETAIL"
PROTOCOL = "HANDSHAKE_FAILED_PROTOCOL"
SUCCEEDED = "HANDSHAKE_SUCCEEDED"
REFUSED = 0.5  # seconds a refused message is looked for (its absence is the result)


def trusted_pair(make_security, *, name="ada", roles=("admin", "ops")):
    server, client = make_security("server"), make_security("client")
    server.store.trust(client.public_key, name=name, roles=roles)
    return server, client


def test_trusted_client_gets_its_key_and_metadata_on_every_message(
        zctx, make_security, servers, clients):
    server_sec, client_sec = trusted_pair(make_security)
    server = servers(server_sec, "greeter")
    client = clients(client_sec, server)
    client.socket.send(b"hello")
    frames = server.receive()
    assert frames is not None, "the trusted client's message never arrived"
    body = frames[-1]
    assert body.bytes == b"hello"
    assert body.get("User-Id") == client_sec.public_key
    assert body.get("X-Name") == "ada"
    assert body.get("X-Roles") == "admin ops"
    principal = server_sec.principal_for(body.get("User-Id"))
    assert (principal.key, principal.name, principal.roles) == (
        client_sec.public_key, "ada", frozenset({"admin", "ops"}))
    assert client.monitor.wait_for(SUCCEEDED) is not None
    assert Authenticator.for_context(zctx).stats() == {"allowed": 1, "denied": 0}


def test_untrusted_client_is_refused_with_an_auth_failure(
        zctx, make_security, servers, clients, caplog):
    server_sec, stranger = make_security("server"), make_security("stranger")
    server = servers(server_sec, "greeter")
    with caplog.at_level(logging.INFO, logger="zmicro.audit"):
        client = clients(stranger, server)
        client.socket.send(b"let me in")
        event = client.monitor.wait_for(AUTH, SUCCEEDED)
        assert event == (AUTH, 400)
        assert server.receive(REFUSED) is None
        assert server.monitor.wait_for(AUTH, SUCCEEDED) == (AUTH, 400)
    assert Authenticator.for_context(zctx).stats() == {"allowed": 0, "denied": 1}
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "zmicro.audit"]
    assert [(x["decision"], x["reason"], x["service"]) for x in lines] == [
        ("deny", "handshake:key-not-allowed", "greeter")]
    assert lines[0]["key"] == fingerprint(stranger.public_key)[:8]
    assert stranger.public_key not in caplog.text  # a fingerprint prefix, never the key


def test_refused_client_does_not_reconnect(make_security, servers, clients):
    """After a ZAP 400 libzmq gives up on that peer: no handshake storm."""
    server = servers(make_security("server"), "greeter")
    client = clients(make_security("stranger"), server)
    assert client.monitor.wait_for(AUTH) is not None
    assert client.monitor.wait_for("CONNECT_RETRIED", "CONNECTED", timeout=1.0) is None


def test_a_key_trusted_after_start_is_accepted_without_restart(
        make_security, servers, clients):
    server_sec, late = make_security("server"), make_security("late")
    server = servers(server_sec, "greeter")
    refused = clients(late, server)
    assert refused.monitor.wait_for(AUTH, SUCCEEDED) == (AUTH, 400)

    server_sec.store.trust(late.public_key, name="late")  # what `zmicro trust` does
    eventually(lambda: late.public_key in server_sec.allowlist(), "the late key in the allowlist")
    client = clients(late, server)
    client.socket.send(b"now?")
    frames = server.receive()
    assert frames is not None and frames[-1].get("X-Name") == "late"


def test_a_removed_key_is_refused_for_new_connections(make_security, servers, clients):
    server_sec, client_sec = trusted_pair(make_security)
    server = servers(server_sec, "greeter")
    first = clients(client_sec, server)
    first.socket.send(b"one")
    frames = server.receive()
    assert frames is not None
    user_id = frames[-1].get("User-Id")

    assert server_sec.store.untrust(client_sec.public_key)
    eventually(lambda: client_sec.public_key not in server_sec.allowlist(), "the key out of the allowlist")
    second = clients(client_sec, server)
    assert second.monitor.wait_for(AUTH, SUCCEEDED) == (AUTH, 400)
    # The open connection stays (ZAP runs at handshake), but its rights go.
    assert server_sec.principal_for(user_id).authenticated is False


def test_stopped_authenticator_fails_closed(zctx, make_security, servers, clients):
    server_sec, client_sec = trusted_pair(make_security)
    server = servers(server_sec, "greeter")
    auth = Authenticator.for_context(zctx)
    auth.stop()
    assert not auth.running and Authenticator.existing(zctx) is None

    # A trusted key, even. The server fails the handshake but often leaves
    # the connection open: the client learns only from its own handshake
    # timer (HANDSHAKE_IVL, 30 s by default; 1 s here), as NO_DETAIL/EAGAIN.
    client = clients(client_sec, server, handshake_ivl=1000)
    client.socket.send(b"anyone?")
    assert server.monitor.wait_for(NO_DETAIL, SUCCEEDED) == (NO_DETAIL, errno.EFAULT)
    assert client.monitor.wait_for(NO_DETAIL, SUCCEEDED, AUTH)[0] == NO_DETAIL
    assert server.receive(REFUSED) is None


def test_without_enforce_domain_libzmq_fails_open(zctx, make_security, servers, clients):
    """Why configure_server sets ZAP_ENFORCE_DOMAIN: without it, no handler
    means no check at all, and the peer has no User-Id."""
    server = servers(make_security("server"), "greeter", enforce=False)
    Authenticator.for_context(zctx).stop()
    client = clients(make_security("stranger"), server)
    client.socket.send(b"in")
    frames = server.receive()
    assert frames is not None and frames[-1].bytes == b"in"
    with pytest.raises(zmq.ZMQError):
        frames[-1].get("User-Id")


def test_after_stop_a_new_authenticator_serves_only_reregistered_domains(
        zctx, make_security, servers, clients):
    server_sec, client_sec = trusted_pair(make_security)
    server = servers(server_sec, "greeter")
    old = Authenticator.for_context(zctx)
    old.stop()
    new = Authenticator.for_context(zctx)
    assert new is not old and new.running and new.domains() == []
    refused = clients(client_sec, server)
    assert refused.monitor.wait_for(AUTH, SUCCEEDED) == (AUTH, 400)  # unknown domain

    new.add_domain("greeter", server_sec.allowlist)
    client = clients(client_sec, server)
    client.socket.send(b"back")
    assert server.receive() is not None


def test_two_domains_in_one_context_keep_their_own_allowlists(
        zctx, make_security, servers, clients):
    sec_a, sec_b = make_security("a"), make_security("b")
    x, y = make_security("x"), make_security("y")
    sec_a.store.trust(x.public_key, name="x")
    sec_b.store.trust(y.public_key, name="y")
    a, b = servers(sec_a, "alpha"), servers(sec_b, "beta")
    assert Authenticator.for_context(zctx).domains() == ["alpha", "beta"]

    for client_sec, server, ok in ((x, a, True), (x, b, False), (y, b, True), (y, a, False)):
        client = clients(client_sec, server)
        client.socket.send(b"?")
        event = client.monitor.wait_for(AUTH, SUCCEEDED)
        assert event is not None and (event[0] == SUCCEEDED) is ok
        if ok:
            frames = server.receive()
            assert frames is not None and frames[-1].get("User-Id") == client_sec.public_key


def test_wrong_server_key_never_completes(zctx, make_security, servers, clients):
    """A client expecting another server key: the server cannot decrypt its
    HELLO (PROTOCOL on the server); the client sees only NO_DETAIL."""
    server_sec, client_sec = trusted_pair(make_security)
    server = servers(server_sec, "greeter")
    impostor_key = make_security("other").public_key
    client = clients(client_sec, server, server_key=impostor_key)
    client.socket.send(b"?")
    assert server.monitor.wait_for(PROTOCOL, SUCCEEDED)[0] == PROTOCOL
    assert client.monitor.wait_for(NO_DETAIL, SUCCEEDED, AUTH)[0] == NO_DETAIL
    assert server.receive(REFUSED) is None


def test_plaintext_sockets_without_a_domain_are_not_asked_about(zctx, make_security,
                                                                servers):
    """An insecure service in the same context as secure ones keeps working:
    libzmq consults ZAP for NULL only when ZAP_DOMAIN is set."""
    servers(make_security("server"), "greeter")  # the authenticator runs
    plain = zctx.socket(zmq.ROUTER)
    port = plain.bind_to_random_port("tcp://127.0.0.1")
    dealer = zctx.socket(zmq.DEALER)
    dealer.connect(f"tcp://127.0.0.1:{port}")
    dealer.send(b"plain")
    assert plain.poll(int(WAIT * 1000)) and plain.recv_multipart()[-1] == b"plain"
    assert Authenticator.for_context(zctx).stats()["denied"] == 0


def test_a_plaintext_socket_in_a_registered_domain_is_refused(zctx, make_security):
    sec = make_security("server")
    Authenticator.for_context(zctx).add_domain("greeter", sec.allowlist)
    server = zctx.socket(zmq.ROUTER)
    server.zap_domain = b"greeter"
    server.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 1)
    port = server.bind_to_random_port("tcp://127.0.0.1")
    dealer = zctx.socket(zmq.DEALER)
    mon = dealer.get_monitor_socket()
    dealer.connect(f"tcp://127.0.0.1:{port}")
    assert Monitor(mon).wait_for(AUTH, SUCCEEDED) == (AUTH, 400)
    dealer.disable_monitor()


def test_for_context_is_one_per_context_and_thread_safe(zctx):
    import threading
    got: list[Authenticator] = []
    threads = [threading.Thread(target=lambda: got.append(Authenticator.for_context(zctx)))
               for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(a) for a in got}) == 1 and got[0].running
    other = zmq.Context()
    try:
        assert Authenticator.for_context(other) is not got[0]
    finally:
        other.destroy(linger=0)


def test_another_zap_handler_in_the_context_is_reported(zctx):
    squatter = zctx.socket(zmq.REP)
    squatter.bind("inproc://zeromq.zap.01")
    with pytest.raises(Error, match="another handler"):
        Authenticator.for_context(zctx)


def test_terminating_the_context_stops_the_authenticator():
    ctx = zmq.Context()
    auth = Authenticator.for_context(ctx)
    ctx.destroy(linger=0)  # returns: the handler closed its socket on ETERM
    eventually(lambda: not auth.running, "the authenticator stops")
    assert Authenticator.existing(ctx) is None
    with pytest.raises(Error, match="terminated"):
        Authenticator.for_context(ctx)


def test_domains_are_counted_and_conflicts_refused(zctx, make_security):
    auth = Authenticator.for_context(zctx)
    a, b = make_security("a"), make_security("b")
    auth.add_domain("svc", a.allowlist)
    auth.add_domain("svc", a.allowlist)
    with pytest.raises(ValueError, match="another allowlist"):
        auth.add_domain("svc", b.allowlist)
    auth.remove_domain("svc")
    assert auth.domains() == ["svc"]
    auth.remove_domain("svc")
    assert auth.domains() == []
    auth.remove_domain("svc")  # harmless
    for bad in ("", "x" * 256):
        with pytest.raises(ValueError):
            auth.add_domain(bad, a.allowlist)


# -- the answers, without sockets ----------------------------------------------


def _request(key: bytes, *, domain=b"svc", mechanism=b"CURVE", version=b"1.0"):
    return [version, b"1", domain, b"127.0.0.1", b"", mechanism, key]


@pytest.fixture
def auth_with_one_key(zctx):
    public, _ = zmq.curve_keypair()
    key = public.decode()
    auth = Authenticator.for_context(zctx)
    auth.add_domain("svc", lambda: {key: TrustedKey(key, "n", frozenset({"r"}))})
    return auth, zmq.utils.z85.decode(public)


def test_answers_follow_rfc27(auth_with_one_key):
    auth, raw = auth_with_one_key
    key = zmq.utils.z85.encode(raw)
    ok = auth._answer(_request(raw))
    assert ok[:5] == [b"1.0", b"1", b"200", b"OK", key]
    assert decode_metadata(ok[5]) == {"X-Name": "n", "X-Roles": "r"}
    assert auth._answer(_request(raw, domain=b"other"))[2:4] == [b"400", b"unknown domain"]
    assert auth._answer(_request(raw, mechanism=b"PLAIN"))[2] == b"400"
    assert auth._answer(_request(os.urandom(32)))[2:4] == [b"400", b"key not allowed"]
    assert auth._answer(_request(raw, version=b"2.0"))[2] == b"500"
    assert auth._answer([b"1.0"])[2] == b"500"


def test_a_failing_allowlist_refuses(zctx):
    auth = Authenticator.for_context(zctx)

    def broken():
        raise OSError("disk on fire")

    auth.add_domain("svc", broken)
    assert auth._answer(_request(os.urandom(32)))[2] == b"500"


@given(st.lists(st.binary(max_size=40), max_size=9))
def test_any_request_gets_a_six_frame_answer_and_only_a_known_key_gets_200(frames):
    ctx = zmq.Context()
    try:
        public, _ = zmq.curve_keypair()
        key = public.decode()
        auth = Authenticator.for_context(ctx)
        auth.add_domain("svc", lambda: {key: TrustedKey(key, "", frozenset())})
        reply = auth._answer(frames)
        assert len(reply) == 6 and reply[0] == b"1.0"
        assert reply[2] in (b"200", b"400", b"500")
        assert reply[2] != b"200"  # random bytes are never the trusted key
        assert auth._answer(_request(zmq.utils.z85.decode(public)))[2] == b"200"
    finally:
        ctx.destroy(linger=0)


@given(st.dictionaries(st.text(min_size=1).filter(lambda s: len(s.encode()) < 256),
                       st.text(), max_size=5))
def test_metadata_round_trips(properties):
    assert decode_metadata(encode_metadata(properties)) == properties


@given(st.binary(max_size=64))
def test_metadata_decoder_accepts_or_raises_value_error(data):
    try:
        decode_metadata(data)
    except ValueError:
        pass


def test_stop_and_start_again_many_times(zctx, make_security):
    """stop() releases the endpoint at once: the next handler can bind."""
    sec = make_security("s")
    for _ in range(200):
        auth = Authenticator.for_context(zctx)
        auth.add_domain("svc", sec.allowlist)
        auth.stop()
    assert Authenticator.for_context(zctx).domains() == []
