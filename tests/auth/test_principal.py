"""Principal: identities, subject, roles, and what its repr shows."""

from __future__ import annotations

import blake3

import pytest
import zmq.utils.z85

from zmicro.auth.principal import (ANONYMOUS, AUTHENTICATED, Principal, fingerprint,
                                   roles_from_claim)

from .conftest import new_key


def test_anonymous():
    assert ANONYMOUS.name == ANONYMOUS.subject == "anonymous"
    assert not ANONYMOUS.authenticated
    assert ANONYMOUS.all_roles == frozenset()
    assert Principal() == ANONYMOUS


def test_name_defaults_to_a_fingerprint_of_the_key():
    key = new_key()
    p = Principal(key=key)
    assert p.name == "key:" + fingerprint(key)[:16]
    assert p.subject == p.name
    assert p.authenticated
    assert Principal(key=key, name="billing").subject == "billing"


def test_fingerprint_hashes_the_raw_key():
    key = new_key()
    assert fingerprint(key) == blake3.blake3(zmq.utils.z85.decode(key)).hexdigest()
    assert Principal(key=key).short_fingerprint == fingerprint(key)[:8]
    assert ANONYMOUS.short_fingerprint == ""


@pytest.mark.parametrize("bad", ["short", "x" * 39 + "~", b"\0" * 32])
def test_key_must_be_z85(bad):
    with pytest.raises(ValueError):
        Principal(key=bad)


def test_roles_are_a_frozenset_and_one_string_is_one_role():
    assert Principal(roles="admin").roles == frozenset({"admin"})
    assert Principal(roles=["a", "b", "a"]).roles == frozenset({"a", "b"})


def test_with_user_keeps_the_key_and_reads_the_roles_claim():
    key = new_key()
    p = Principal(key=key, name="gateway", roles={"gateway"})
    u = p.with_user({"sub": "ada", "groups": ["admin", 7, ""], "roles": ["ignored"]},
                    roles_claim="groups")
    assert (u.key, u.name, u.roles) == (key, "gateway", frozenset({"gateway"}))
    assert u.subject == "ada"
    assert u.user_roles == frozenset({"admin"})
    assert u.all_roles == {"gateway", "admin", AUTHENTICATED}
    assert p.user is None  # immutable: a new principal
    with pytest.raises(TypeError):
        u.user["sub"] = "eve"  # type: ignore[index]


def test_user_claims_are_frozen_all_the_way_down():
    u = ANONYMOUS.with_user({"sub": "ada", "roles": ["a"], "org": {"teams": [{"id": 1}]}})
    assert u.user["roles"] == ("a",)
    assert u.user["org"]["teams"][0]["id"] == 1
    with pytest.raises(TypeError):
        u.user["org"]["teams"][0]["id"] = 2


def test_user_without_sub_is_known_by_the_principal_name():
    u = ANONYMOUS.with_user({"iss": "idp"})
    assert u.subject == "anonymous"
    assert u.authenticated  # a verified token is an identity, even without sub


@pytest.mark.parametrize("claim, roles", [
    (["a", "b"], {"a", "b"}),
    ("read write  admin", {"read", "write", "admin"}),  # OAuth scope style
    (None, set()),
    ({"admin": True}, set()),  # malformed claims grant nothing
    (["a", ["b"], None, 3], {"a"}),
])
def test_roles_from_claim(claim, roles):
    assert roles_from_claim(claim) == roles


def test_authenticated_is_computed_never_granted():
    keyless = Principal(name="svc", roles={"admin", AUTHENTICATED})
    assert not keyless.authenticated
    assert keyless.all_roles == {"admin"}
    assert AUTHENTICATED in Principal(key=new_key()).all_roles


def test_hashable_and_comparable():
    key = new_key()
    a = Principal(key=key, roles={"x"}).with_user({"sub": "ada"})
    b = Principal(key=key, roles={"x"}).with_user({"sub": "ada"})
    assert a == b and hash(a) == hash(b)
    assert a != Principal(key=key, roles={"x"})
    assert len({a, b, ANONYMOUS}) == 2


def test_repr_shows_neither_the_key_nor_the_claims():
    key = new_key()
    p = Principal(key=key, roles="admin").with_user({"sub": "ada", "email": "ada@example.com"})
    text = repr(p) + str(p)
    assert key not in text
    assert "ada@example.com" not in text
    assert "ada" in text and fingerprint(key)[:8] in text
