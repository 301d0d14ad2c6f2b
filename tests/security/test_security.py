"""Security: plaintext only on request, socket options, the rule of trust
for server keys, principals from the allowlist."""

from __future__ import annotations

import logging

import pytest
import zmq

import zmicro.security.transport as transport
from zmicro.auth import ANONYMOUS
from zmicro.errors import Code, Error, RPCError
from zmicro.security.keys import KeyStore, write_keypair
from zmicro.security.transport import Security, resolve_insecure

from ..helpers import eventually


@pytest.fixture
def fresh_warnings(monkeypatch):
    """Forget which once-per-process warnings were given."""
    monkeypatch.setattr(transport, "_said", set())


# -- resolve_insecure ----------------------------------------------------------


@pytest.mark.parametrize("value, expected", [
    ("1", True), ("true", True), ("YES", True), (" yes ", True),
    ("", False), ("0", False), ("false", False), ("no", False), ("on", False),
    ("2", False),
])
def test_insecure_from_the_environment(monkeypatch, fresh_warnings, value, expected):
    monkeypatch.setenv("ZMICRO_INSECURE", value)
    assert resolve_insecure(None) is expected
    assert resolve_insecure() is expected


def test_the_argument_wins_over_the_environment(monkeypatch, fresh_warnings):
    monkeypatch.setenv("ZMICRO_INSECURE", "1")
    assert resolve_insecure(False) is False
    monkeypatch.setenv("ZMICRO_INSECURE", "0")
    assert resolve_insecure(True) is True
    monkeypatch.delenv("ZMICRO_INSECURE")
    assert resolve_insecure(None) is False


def test_plaintext_is_said_once_per_process(monkeypatch, fresh_warnings, caplog):
    monkeypatch.delenv("ZMICRO_INSECURE", raising=False)
    with caplog.at_level(logging.WARNING, logger="zmicro.security"):
        resolve_insecure(False)
        assert caplog.records == []
        for _ in range(3):
            resolve_insecure(True)
    assert len(caplog.records) == 1
    message = caplog.records[0].getMessage()
    assert "plaintext" in message and "not authenticated" in message and "MAC" in message


def test_an_unknown_value_keeps_security_on_and_says_so(monkeypatch, fresh_warnings, caplog):
    monkeypatch.setenv("ZMICRO_INSECURE", "on")
    with caplog.at_level(logging.WARNING, logger="zmicro.security"):
        assert resolve_insecure() is False
        assert resolve_insecure() is False
    assert len(caplog.records) == 1 and "security stays on" in caplog.text


# -- Security ------------------------------------------------------------------


def test_insecure_security_does_nothing(zctx, fresh_warnings):
    sec = Security.resolve(insecure=True, keys="/nonexistent/never/created")
    assert (sec.insecure, sec.store, sec.identity, sec.public_key) == (True, None, None, "")
    server, client = zctx.socket(zmq.ROUTER), zctx.socket(zmq.DEALER)
    sec.configure_server(server, "svc")
    sec.configure_client(client, "not even a key")
    assert server.getsockopt(zmq.MECHANISM) == zmq.NULL == client.getsockopt(zmq.MECHANISM)
    assert server.getsockopt(zmq.ZAP_DOMAIN) == b""
    sec.release_server(server, "svc")
    assert sec.server_key_for("tcp://127.0.0.1:1") == ""
    assert sec.principal_for("anything") is ANONYMOUS


def test_secure_by_default_with_the_session_store(monkeypatch):
    monkeypatch.delenv("ZMICRO_INSECURE", raising=False)
    sec = Security.resolve()
    assert not sec.insecure and sec.store.path == KeyStore().path
    assert sec.public_key == sec.identity.public == KeyStore().identity().public


def test_keys_may_be_a_store_or_a_directory(tmp_path):
    store = KeyStore(tmp_path / "a")
    assert Security.resolve(insecure=False, keys=store).store is store
    assert Security.resolve(insecure=False, keys=tmp_path / "b").store.path == tmp_path / "b"


def test_configure_server_sets_curve_and_an_enforced_domain(zctx, make_security):
    sec = make_security("s")
    sock = zctx.socket(zmq.ROUTER)
    sec.configure_server(sock, "greeter")
    assert sock.getsockopt(zmq.MECHANISM) == zmq.CURVE
    assert sock.getsockopt(zmq.CURVE_SERVER) == 1
    assert sock.getsockopt(zmq.ZAP_DOMAIN) == b"greeter"
    assert sock.getsockopt(zmq.ZAP_ENFORCE_DOMAIN) == 1
    from zmicro.security.zap import Authenticator
    auth = Authenticator.for_context(zctx)
    assert auth.domains() == ["greeter"]
    sec.release_server(sock, "greeter")
    assert auth.domains() == []


def test_configure_client_sets_curve_and_checks_the_key(zctx, make_security):
    sec = make_security("c")
    sock = zctx.socket(zmq.DEALER)
    with pytest.raises(ValueError):
        sec.configure_client(sock, "not a key")
    server_key = make_security("s").public_key
    sec.configure_client(sock, server_key)
    # (libzmq only returns Curve keys into a 32- or 41-byte buffer, which
    # pyzmq does not offer; tests/security/test_zap.py shows they work.)
    assert sock.getsockopt(zmq.MECHANISM) == zmq.CURVE
    assert sock.getsockopt(zmq.CURVE_SERVER) == 0


def test_old_libzmq_is_refused(monkeypatch, tmp_path):
    monkeypatch.setattr(zmq, "zmq_version_info", lambda: (4, 3, 2))
    with pytest.raises(Error, match="CVE-2019-13132"):
        Security.resolve(insecure=False, keys=tmp_path / "s")


# -- the rule of trust ---------------------------------------------------------


ADDRESS = "tcp://10.0.0.7:5555"


def test_explicit_server_key_wins(tmp_path, make_security):
    sec = make_security("c")
    pair = write_keypair(tmp_path / "k", "svc")
    other = make_security("o").public_key
    assert sec.server_key_for(ADDRESS, server_key=pair.public, registry_key=other,
                              registry_trusted=True) == pair.public
    assert sec.server_key_for(ADDRESS, server_key=str(tmp_path / "k" / "svc.key")) == pair.public
    with pytest.raises(ValueError):
        sec.server_key_for(ADDRESS, server_key="garbage")


def test_registry_key_from_a_trusted_registry(make_security):
    sec = make_security("c")
    remote = make_security("remote").public_key
    assert sec.server_key_for(ADDRESS, registry_key=remote, registry_trusted=True) == remote


def test_registry_key_from_an_untrusted_registry_needs_the_trust_store(make_security):
    sec = make_security("c")
    remote = make_security("remote").public_key
    with pytest.raises(RPCError) as info:
        sec.server_key_for(ADDRESS, registry_key=remote)
    assert info.value.code == Code.UNAUTHENTICATED
    assert ADDRESS in info.value.detail and remote not in info.value.detail
    sec.store.trust(remote, name="remote")
    eventually(lambda: remote in sec.allowlist(), "the new key in the allowlist")
    assert sec.server_key_for(ADDRESS, registry_key=remote) == remote
    # our own key is always acceptable: only we hold its secret
    assert sec.server_key_for(ADDRESS, registry_key=sec.public_key) == sec.public_key


def test_without_any_source_the_own_key(make_security):
    sec = make_security("c")
    assert sec.server_key_for(ADDRESS) == sec.public_key


def test_a_malformed_registry_key_is_unauthenticated(make_security):
    with pytest.raises(RPCError) as info:
        make_security("c").server_key_for(ADDRESS, registry_key="#" * 40,
                                          registry_trusted=True)
    assert info.value.code == Code.UNAUTHENTICATED


def test_without_an_identity_there_is_no_default(make_security):
    sec = make_security("c")
    sec.identity = None  # a Security that has no identity of its own
    with pytest.raises(RPCError, match="pass server_key= or trust the registry"):
        sec.server_key_for(ADDRESS)


# -- principals ----------------------------------------------------------------


def test_principal_for_maps_keys_to_names_and_roles(make_security):
    sec = make_security("s")
    friend = make_security("friend").public_key
    sec.store.trust(friend, name="friend", roles=["reader"])
    eventually(lambda: friend in sec.allowlist(), "the friend in the allowlist")
    p = sec.principal_for(friend)
    assert (p.key, p.name, p.roles, p.authenticated) == (friend, "friend",
                                                         frozenset({"reader"}), True)
    assert sec.principal_for(friend) is p  # cached: a dict hit
    own = sec.principal_for(sec.public_key)
    assert own.roles == frozenset({"self"})
    assert sec.principal_for(None) is ANONYMOUS
    assert sec.principal_for("") is ANONYMOUS
    assert sec.principal_for(make_security("stranger").public_key) is ANONYMOUS

    sec.store.trust(friend, name="friend", roles=["writer"])
    eventually(lambda: sec.principal_for(friend).roles == frozenset({"writer"}), "the new role")
