"""JWT verification: what is accepted, everything that is refused, and how
the user's claims reach the principal and the rules."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from zmicro import Code, RPCError, _core
from zmicro.auth.jwt import MAX_TOKEN, JWTVerifier, TokenError, bearer_token
from zmicro.auth.principal import Principal, freeze_claims
from zmicro.auth.rules import Rule, authorizer

from ..helpers import FakeClock
from .conftest import as_principal, new_key

NOW = 1_700_000_000.0
SECRET = b"0123456789abcdef0123456789abcdef"  # 32 bytes: the least HS256 takes
OTHER_SECRET = b"fedcba9876543210fedcba9876543210"


@pytest.fixture(scope="module")
def rsa_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key():
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def jclock():
    return FakeClock(NOW)


def claims(**extra):
    base = {"sub": "ada", "iat": NOW, "exp": NOW + 300, "roles": ["admin"]}
    base.update(extra)
    return {k: v for k, v in base.items() if v is not None}


def hs(payload=None, secret=SECRET, **headers):
    return jwt.encode(claims() if payload is None else payload, secret, algorithm="HS256",
                      headers=headers or None)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(header: dict, payload: dict, signature: bytes = b"", *,
          hmac_key: bytes | None = None) -> str:
    """A token built by hand, for the ones PyJWT refuses to make."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"
    if hmac_key is not None:
        signature = hmac.new(hmac_key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


def pem(public_key) -> bytes:
    return public_key.public_bytes(serialization.Encoding.PEM,
                                   serialization.PublicFormat.SubjectPublicKeyInfo)


def refused(verifier: JWTVerifier, token) -> str:
    with pytest.raises(TokenError) as err:
        verifier.verify(token)
    assert str(err.value) == err.value.reason  # the message is the reason code only
    return err.value.reason


# -- accepted -----------------------------------------------------------------

def test_valid_hs256(jclock):
    verifier = JWTVerifier(key=SECRET, clock=jclock)
    assert verifier.verify(hs()) == freeze_claims(claims())
    assert JWTVerifier(key=SECRET.decode(), clock=jclock).verify(hs())["sub"] == "ada"


def test_valid_rs256_with_a_key_object_or_pem(rsa_key, jclock):
    token = jwt.encode(claims(), rsa_key, algorithm="RS256")
    for key in (rsa_key.public_key(), pem(rsa_key.public_key()), pem(rsa_key.public_key()).decode(),
                rsa_key):  # a private key object is reduced to its public half
        assert JWTVerifier(key=key, clock=jclock).verify(token)["sub"] == "ada"


def test_valid_es256(ec_key, jclock):
    token = jwt.encode(claims(), ec_key, algorithm="ES256")
    assert JWTVerifier(key=ec_key.public_key(), clock=jclock).verify(token)["sub"] == "ada"


def test_valid_eddsa_when_allowed(jclock):
    key = ed25519.Ed25519PrivateKey.generate()
    token = jwt.encode(claims(), key, algorithm="EdDSA")
    verifier = JWTVerifier(key=key.public_key(), algorithms=["EdDSA"], clock=jclock)
    assert verifier.verify(token)["sub"] == "ada"
    with pytest.raises(ValueError):  # not among the default algorithms
        JWTVerifier(key=key.public_key())


def test_keys_by_kid(rsa_key, ec_key, jclock):
    verifier = JWTVerifier(keys={"r": rsa_key.public_key(), "e": ec_key.public_key(), "h": SECRET},
                           clock=jclock)
    assert verifier.verify(jwt.encode(claims(), rsa_key, "RS256", headers={"kid": "r"}))
    assert verifier.verify(jwt.encode(claims(), ec_key, "ES256", headers={"kid": "e"}))
    assert verifier.verify(hs(kid="h"))
    mislabelled = jwt.encode(claims(), rsa_key, "RS256", headers={"kid": "e"})
    assert refused(verifier, mislabelled) == "algorithm"
    assert refused(verifier, hs(kid="unknown")) == "key"
    assert refused(verifier, hs()) == "key"  # no kid and no default key
    with_default = JWTVerifier(key=SECRET, keys={"r": rsa_key.public_key()}, clock=jclock)
    assert with_default.verify(hs())
    assert refused(with_default, hs(kid="other")) == "key"  # an unknown kid never falls back


def test_a_kid_is_ignored_without_keys(jclock):
    assert JWTVerifier(key=SECRET, clock=jclock).verify(hs(kid="whatever"))


def test_issuer_and_audience(jclock):
    verifier = JWTVerifier(key=SECRET, issuer="https://idp", audience=["svc", "other"],
                           clock=jclock)
    assert verifier.verify(hs(claims(iss="https://idp", aud="svc")))
    assert verifier.verify(hs(claims(iss="https://idp", aud=["x", "other"])))


def test_default_clock_is_the_system_clock():
    now = time.time()
    token = hs(claims(iat=now, exp=now + 3600))
    assert JWTVerifier(key=SECRET).verify(token)["sub"] == "ada"
    assert refused(JWTVerifier(key=SECRET), hs(claims(iat=now - 7200, exp=now - 3600))) == "expired"


# -- verified tokens are remembered ---------------------------------------------

class Counting(JWTVerifier):
    decoded = 0

    def _decode(self, token):
        self.decoded += 1
        return super()._decode(token)


def test_a_verified_token_is_decoded_once_and_its_times_checked_every_time(jclock):
    verifier = Counting(key=SECRET, clock=jclock)
    token = hs()
    first = verifier.verify(token)
    assert verifier.verify(token) is first and verifier.decoded == 1
    jclock.advance(300)
    assert refused(verifier, token) == "expired"
    assert refused(verifier, token) == "expired"
    assert verifier.decoded == 2  # dropped from the cache once expired


def test_refused_tokens_are_not_remembered(jclock):
    verifier = Counting(key=SECRET, clock=jclock)
    for _ in range(2):
        assert refused(verifier, hs(claims(nbf=NOW + 10))) == "not-yet-valid"
        assert refused(verifier, hs(secret=OTHER_SECRET)) == "signature"
    assert verifier.decoded == 4


def test_the_cache_is_bounded_and_can_be_off(jclock):
    verifier = Counting(key=SECRET, clock=jclock, cache_size=2)
    tokens = [hs(claims(sub=name)) for name in "abc"]
    for token in tokens + tokens[1:]:  # a, b, c evicts a; b and c are hits
        verifier.verify(token)
    assert verifier.decoded == 3
    verifier.verify(tokens[0])
    assert verifier.decoded == 4
    off = Counting(key=SECRET, clock=jclock, cache_size=0)
    off.verify(tokens[0])
    off.verify(tokens[0])
    assert off.decoded == 2
    with pytest.raises(ValueError):
        JWTVerifier(key=SECRET, cache_size=-1)


def test_claims_are_read_only_all_the_way_down(jclock):
    verifier = JWTVerifier(key=SECRET, clock=jclock)
    token = hs(claims(profile={"groups": ["a"]}))
    user = verifier.verify(token)
    assert user["roles"] == ("admin",) and user["profile"]["groups"] == ("a",)
    with pytest.raises(TypeError):
        user["profile"]["groups"] = ["admin"]
    with pytest.raises(AttributeError):
        user["roles"].append("root")


# -- refused: time ------------------------------------------------------------

def test_expired(jclock):
    verifier = JWTVerifier(key=SECRET, clock=jclock)
    token = hs()
    jclock.advance(299.5)
    assert verifier.verify(token)
    jclock.advance(0.5)  # exactly at exp: no longer valid (RFC 7519 4.1.4)
    assert refused(verifier, token) == "expired"
    assert JWTVerifier(key=SECRET, clock=jclock, leeway=1).verify(token)


def test_not_yet_valid(jclock):
    verifier = JWTVerifier(key=SECRET, clock=jclock)
    assert refused(verifier, hs(claims(nbf=NOW + 10))) == "not-yet-valid"
    assert refused(verifier, hs(claims(iat=NOW + 10))) == "not-yet-valid"  # issued in the future
    assert JWTVerifier(key=SECRET, clock=jclock, leeway=10).verify(hs(claims(nbf=NOW + 10)))
    jclock.advance(10)
    assert verifier.verify(hs(claims(nbf=NOW + 10)))


@pytest.mark.parametrize("bad", [dict(exp=None), dict(exp="soon"), dict(exp=True),
                                 dict(nbf="x"), dict(iat=[1])])
def test_bad_or_missing_times(jclock, bad):
    reason = refused(JWTVerifier(key=SECRET, clock=jclock), hs(claims(**bad)))
    assert reason in ("missing-claim", "malformed")


# -- refused: who signed, for whom ---------------------------------------------

def test_forged_signature(jclock, rsa_key):
    verifier = JWTVerifier(key=SECRET, clock=jclock)
    assert refused(verifier, hs(secret=OTHER_SECRET)) == "signature"
    header, payload, signature = hs().split(".")
    tampered = b64(json.dumps(claims(sub="root")).encode())
    assert refused(verifier, f"{header}.{tampered}.{signature}") == "signature"
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert refused(JWTVerifier(key=rsa_key.public_key(), clock=jclock),
                   jwt.encode(claims(), other, "RS256")) == "signature"


def test_wrong_audience(jclock):
    verifier = JWTVerifier(key=SECRET, audience="svc", clock=jclock)
    assert refused(verifier, hs(claims(aud="other"))) == "audience"
    assert refused(verifier, hs()) == "missing-claim"
    # A token meant for some audience is refused by a verifier that expects none.
    assert refused(JWTVerifier(key=SECRET, clock=jclock), hs(claims(aud="svc"))) == "audience"


def test_wrong_issuer(jclock):
    verifier = JWTVerifier(key=SECRET, issuer="https://idp", clock=jclock)
    assert refused(verifier, hs(claims(iss="https://evil"))) == "issuer"
    assert refused(verifier, hs()) == "missing-claim"


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
def test_alg_none(jclock, alg):
    verifier = JWTVerifier(key=SECRET, clock=jclock)
    assert refused(verifier, forge({"alg": alg, "typ": "JWT"}, claims())) == "algorithm"
    signed = forge({"alg": alg}, claims(), hmac_key=SECRET)  # even with a valid HMAC
    assert refused(verifier, signed) == "algorithm"


def test_algorithm_none_cannot_be_configured():
    for algorithms in (["none"], ["HS256", "NONE"]):
        with pytest.raises(ValueError):
            JWTVerifier(key=SECRET, algorithms=algorithms)


def test_hs256_signed_with_the_rsa_public_key_is_refused(rsa_key, jclock):
    # Algorithm confusion: the attacker knows the public key and uses its PEM
    # as an HMAC secret; a verifier that let the header pick the algorithm
    # would check that HMAC with the same bytes.
    public_pem = pem(rsa_key.public_key())
    token = forge({"alg": "HS256", "typ": "JWT"}, claims(), hmac_key=public_pem)
    for key in (rsa_key.public_key(), public_pem):
        assert refused(JWTVerifier(key=key, clock=jclock), token) == "algorithm"


def test_each_key_serves_only_the_algorithms_of_its_kind(rsa_key, ec_key, jclock):
    hmac_verifier = JWTVerifier(key=SECRET, clock=jclock)
    assert refused(hmac_verifier, jwt.encode(claims(), rsa_key, "RS256")) == "algorithm"
    assert refused(JWTVerifier(key=rsa_key.public_key(), clock=jclock), hs()) == "algorithm"
    p384 = ec.generate_private_key(ec.SECP384R1())
    verifier = JWTVerifier(key=ec_key.public_key(), algorithms=["ES256", "ES384"], clock=jclock)
    assert refused(verifier, jwt.encode(claims(), p384, "ES384")) == "algorithm"
    restricted = JWTVerifier(key=rsa_key.public_key(), algorithms=["PS256"], clock=jclock)
    assert refused(restricted, jwt.encode(claims(), rsa_key, "RS256")) == "algorithm"
    assert restricted.verify(jwt.encode(claims(), rsa_key, "PS256"))


def signed_raw(header: bytes, payload: bytes) -> str:
    signing_input = f"{b64(header)}.{b64(payload)}"
    signature = hmac.new(SECRET, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


@pytest.mark.parametrize("token, reason", [
    ("", "malformed"), ("abc", "malformed"), ("a.b", "malformed"), ("a.b.c", "malformed"),
    ("a.b.c.d", "malformed"), ("..", "malformed"), ("!!!.???.***", "malformed"),
    ("x" * (MAX_TOKEN + 1), "malformed"), (None, "malformed"), (b"a.b.c", "malformed"),
    ("eyJhbGciOiJIUzI1NiJ9..", "signature"),
    (signed_raw(b"[1]", b"{}"), "malformed"),  # header not an object
    (signed_raw(b'{"alg":"HS256"}', b"[1,2]"), "malformed"),  # payload not an object
    (signed_raw(b'{"alg":"HS256"}', b"not json"), "malformed"),
    (signed_raw(b'{"alg":"HS256"}', b'{"sub": 5, "exp": 1e300}'), "malformed"),  # sub not a string
    (signed_raw(b'{"alg":"HS256"}', b'{"exp": NaN}'), "malformed"),
    (signed_raw(b'{"alg":"HS256","kid":["x"]}', b'{"exp": 1e300}'), "malformed"),
    (signed_raw(b'{"typ":"JWT"}', b'{"exp": 1e300}'), "algorithm"),  # no alg at all
    (b64(b"[" * 3000 + b"]" * 3000) + ".e30.", "malformed"),  # nested past the recursion limit
    (signed_raw(b'{"alg":"HS256"}', b'{"a":' + b"[" * 2500 + b"]" * 2500 + b"}"), "malformed"),
])
def test_malformed(jclock, token, reason):
    assert refused(JWTVerifier(key=SECRET, clock=jclock), token) == reason


@pytest.mark.parametrize("extension", [{"crit": ["exp"]}, {"b64": False, "crit": ["b64"]},
                                       {"b64": False}, {"b64": True}])
def test_extension_headers_are_refused(jclock, extension):
    token = forge({"alg": "HS256", **extension}, claims(), hmac_key=SECRET)
    assert refused(JWTVerifier(key=SECRET, clock=jclock), token) == "malformed"


def test_oversized_token_is_refused_before_decoding(jclock):
    token = hs(claims(pad="x" * MAX_TOKEN))
    assert refused(JWTVerifier(key=SECRET, clock=jclock), token) == "malformed"


# -- keys a verifier refuses to hold -------------------------------------------

def test_constructor_refuses_weak_or_wrong_keys(rsa_key):
    with pytest.raises(ValueError):
        JWTVerifier()
    with pytest.raises(ValueError):
        JWTVerifier(key=b"short secret")  # < 32 bytes (RFC 7518 3.2)
    with pytest.raises(ValueError):
        JWTVerifier(key=SECRET, algorithms=["HS512"])  # HS512 needs 64 bytes
    with pytest.raises(ValueError):
        JWTVerifier(key=SECRET, algorithms=["RS256"])  # the secret serves none of them
    with pytest.raises(ValueError):
        JWTVerifier(key=SECRET, algorithms=["XS256"])
    private_pem = rsa_key.private_bytes(serialization.Encoding.PEM,
                                        serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption())
    with pytest.raises(ValueError):
        JWTVerifier(key=private_pem)
    der = rsa_key.public_key().public_bytes(serialization.Encoding.DER,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
    with pytest.raises(ValueError):
        JWTVerifier(key=der)  # asymmetric bytes are never an HMAC secret
    with pytest.raises(ValueError):
        JWTVerifier(key=b'{"kty": "oct", "k": "' + b"A" * 43 + b'"}')
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(ValueError):
        JWTVerifier(key=weak.public_key())
    with pytest.raises(TypeError):
        JWTVerifier(key=object())


# -- bearer values and the interceptor ----------------------------------------

def test_bearer_token():
    assert bearer_token(b"Bearer abc.def.ghi") == "abc.def.ghi"
    assert bearer_token("bearer   abc.def.ghi ") == "abc.def.ghi"
    for bad in (b"Basic dXNlcjpwYXNz", b"Bearer", b"Bearer ", b"abc.def.ghi", b"Bearer a b",
                "Bearer caf\u00e9".encode(), b"\xff\xfe"):
        with pytest.raises(TokenError):
            bearer_token(bad)


def context(token=None, principal=None, raw=None):
    metadata = {"authorization": raw if raw is not None else f"Bearer {token}"} \
        if (token or raw) else None
    return _core._test_context(service="p", endpoint="P.Echo", metadata=metadata,
                               principal=principal)


def through(interceptor, ctx):
    return interceptor("req", ctx, lambda request, ctx: ctx.principal)


def test_interceptor_sets_the_user_on_the_principal(jclock, recorder):
    verifier = JWTVerifier(key=SECRET, clock=jclock, audit=recorder)
    principal = through(verifier.interceptor, context(hs()))
    assert principal.user == freeze_claims(claims()) and principal.subject == "ada"
    assert principal.key == "" and principal.name == "anonymous"
    key = new_key()
    gateway = Principal(key=key, name="gateway", roles={"gateway"})
    principal = through(verifier.interceptor, context(hs(), gateway))
    assert (principal.key, principal.name, principal.subject) == (key, "gateway", "ada")
    assert principal.all_roles == {"gateway", "admin", "authenticated"}
    assert recorder.calls == []  # valid tokens are not audited here; the authorizer does it


def test_interceptor_without_a_token(jclock, recorder):
    optional = JWTVerifier(key=SECRET, clock=jclock, audit=recorder)
    gateway = Principal(key=new_key())
    assert through(optional.interceptor, context()) is None
    assert through(optional.interceptor, context(principal=gateway)) is gateway
    required = JWTVerifier(key=SECRET, clock=jclock, required=True, audit=recorder)
    with pytest.raises(RPCError) as err:
        through(required.interceptor, context(principal=gateway))
    assert err.value.code == Code.UNAUTHENTICATED
    assert recorder.decisions == [("deny", "missing-token")]


@pytest.mark.parametrize("make, reason", [
    (lambda: hs(claims(exp=NOW - 1)), "expired"),
    (lambda: hs(secret=OTHER_SECRET), "signature"),
    (lambda: forge({"alg": "none"}, claims()), "algorithm"),
    (lambda: "not-a-token", "malformed"),
])
def test_interceptor_refuses_invalid_tokens_without_saying_why(jclock, recorder, make, reason):
    verifier = JWTVerifier(key=SECRET, clock=jclock, audit=recorder)
    token = make()
    ctx = context(token, Principal(name="gw"))
    with pytest.raises(RPCError) as err:
        through(verifier.interceptor, ctx)
    assert (err.value.code, err.value.detail) == (Code.UNAUTHENTICATED, "invalid token")
    assert err.value.__cause__ is None and err.value.__suppress_context__
    assert token not in str(err.value)
    assert ctx.principal == Principal(name="gw")  # unchanged
    assert recorder.calls[0][:2] == ("deny", "invalid-token")
    assert recorder.calls[0][2]["error"] == reason


def test_interceptor_refuses_a_non_bearer_authorization(jclock, recorder):
    verifier = JWTVerifier(key=SECRET, clock=jclock, audit=recorder)
    with pytest.raises(RPCError) as err:
        through(verifier.interceptor, context(raw=b"Basic dXNlcjpwYXNz"))
    assert err.value.code == Code.UNAUTHENTICATED


def test_roles_claim_feeds_the_rules(jclock, recorder):
    verifier = JWTVerifier(key=SECRET, clock=jclock, roles_claim="groups", audit=recorder)
    authorize = authorizer([Rule("p:*", "billing-admin", id="billing")], audit=recorder)

    def chain(token):
        ctx = context(token, Principal(key=new_key(), roles={"gateway"}))
        return verifier.interceptor("req", ctx, lambda r, c: authorize(r, c, lambda r2, c2: "ok"))

    assert chain(hs(claims(groups=["billing-admin"]))) == "ok"
    with pytest.raises(RPCError) as err:
        chain(hs(claims(groups="viewer", roles=["billing-admin"])))  # the other claim counts not
    assert err.value.code == Code.PERMISSION_DENIED


def test_jwt_end_to_end(served, rsa_key):
    now = time.time()
    verifier = JWTVerifier(key=rsa_key.public_key(), audience="p", required=True)
    rules = [Rule("p:*", "admin", id="admins")]
    client = served([as_principal({"gw": Principal(key=new_key(), name="gw")}),
                     verifier.interceptor, authorizer(rules)])

    def token(**extra):
        payload = claims(iat=now, exp=now + 3600, aud="p")
        payload.update(extra)
        return "Bearer " + jwt.encode(payload, rsa_key, "RS256")

    assert client.call("p", "P.Whoami", None, metadata={"authorization": token(), "as": "gw"}) == {
        "subject": "ada", "roles": ["admin", "authenticated"]}
    assert client.call("p", "P.Async", 7, metadata={"authorization": token()}) == 7
    for metadata in ({"authorization": token(exp=now - 1)}, {"authorization": token(aud="q")},
                     {}, {"as": "gw"}):
        with pytest.raises(RPCError) as err:
            client.call("p", "P.Echo", 1, metadata=metadata)
        assert err.value.code == Code.UNAUTHENTICATED
    with pytest.raises(RPCError) as err:
        client.call("p", "P.Echo", 1, metadata={"authorization": token(roles=["viewer"])})
    assert err.value.code == Code.PERMISSION_DENIED
