"""The audit log: one JSON line per decision, levels, and no secrets ever."""

from __future__ import annotations

import json
import logging
import re
import time
from datetime import datetime, timezone

import jwt
import pytest

from zmicro import RPCError, _core
from zmicro.auth.audit import LOGGER_NAME, audit
from zmicro.auth.jwt import JWTVerifier
from zmicro.auth.principal import Principal, fingerprint
from zmicro.auth.ratelimit import Rate, RateLimiter
from zmicro.auth.rules import Rule, authorizer

from ..helpers import FakeClock
from .conftest import as_principal, new_key

SECRET = b"k" * 32


def lines(caplog) -> list[dict]:
    return [json.loads(r.getMessage()) for r in caplog.records if r.name == LOGGER_NAME]


@pytest.fixture
def everything(caplog):
    """Capture every logger at every level, so nothing escapes the search."""
    caplog.set_level(logging.DEBUG)
    return caplog


def test_a_line_is_one_json_object_with_the_fields(everything):
    key = new_key()
    ada = Principal(key=key, name="ada")
    audit("deny", "rule:admins", principal=ada, service="billing", endpoint="Billing.Refund",
          status="PERMISSION_DENIED", attempt=2)
    [record] = [r for r in everything.records if r.name == LOGGER_NAME]
    assert record.levelno == logging.WARNING
    assert "\n" not in record.getMessage()
    line = json.loads(record.getMessage())
    assert list(line)[:7] == ["time", "decision", "reason", "principal", "key", "service",
                              "endpoint"]
    assert line["decision"] == "deny" and line["reason"] == "rule:admins"
    assert line["principal"] == "ada" and line["key"] == fingerprint(key)[:8]
    assert (line["service"], line["endpoint"]) == ("billing", "Billing.Refund")
    assert (line["status"], line["attempt"]) == ("PERMISSION_DENIED", 2)
    assert line["time"].endswith("Z")
    when = datetime.fromisoformat(line["time"].replace("Z", "+00:00"))
    assert when.tzinfo is not None and when.utcoffset().total_seconds() == 0
    assert abs((datetime.now(timezone.utc) - when).total_seconds()) < 3600
    assert key not in everything.text


def test_allows_are_debug_denials_warning(everything):
    audit("allow", "default", principal=None, service="s", endpoint="E")
    audit("deny", "default", principal=None, service="s", endpoint="E")
    assert [r.levelno for r in everything.records] == [logging.DEBUG, logging.WARNING]
    first = lines(everything)[0]
    assert (first["principal"], first["key"]) == ("anonymous", "")


def test_at_the_default_level_allows_are_not_emitted(caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER_NAME)
    audit("allow", "rule:x", principal=None, service="s", endpoint="E")
    audit("deny", "rule:x", principal=None, service="s", endpoint="E")
    assert [line["decision"] for line in lines(caplog)] == ["deny"]


def test_at_info_allows_are_not_emitted(caplog):
    # A service logging at INFO (zmicro run, the examples) writes no line
    # per connection or call; its denials still show.
    caplog.set_level(logging.INFO, logger=LOGGER_NAME)
    audit("allow", "handshake", principal=None, service="s", endpoint="")
    audit("deny", "handshake:key-not-allowed", principal=None, service="s", endpoint="")
    assert [line["decision"] for line in lines(caplog)] == ["deny"]


def test_the_subject_is_the_user_when_there_is_one(everything):
    user = Principal(key=new_key(), name="gw").with_user({"sub": "ada", "email": "ada@example.com"})
    audit("allow", "rule:x", principal=user, service="s", endpoint="E")
    assert lines(everything)[0]["principal"] == "ada"
    assert "ada@example.com" not in everything.text


@pytest.mark.parametrize("name", ["token", "access_token", "Authorization", "authorisation",
                                  "password", "passwd", "secret", "client_secret", "mac",
                                  "mac_key", "nonce", "signature", "credentials", "cookie",
                                  "private_key", "api_key", "bearer", "session"])
def test_fields_named_like_secrets_are_refused(caplog, name):
    caplog.set_level(logging.DEBUG)
    with pytest.raises(ValueError):
        audit("deny", "x", principal=None, service="s", endpoint="E", **{name: "v"})
    caplog.set_level(logging.CRITICAL)  # refused even when nothing would be logged
    with pytest.raises(ValueError):
        audit("allow", "x", principal=None, service="s", endpoint="E", **{name: "v"})
    assert not lines(caplog)


@pytest.mark.parametrize("name", ["machine", "limit", "error", "status", "kid", "remac"])
def test_ordinary_field_names_pass(everything, name):
    audit("deny", "x", principal=None, service="s", endpoint="E", **{name: "v"})
    assert lines(everything)[0][name] == "v"


@pytest.mark.parametrize("value", [b"raw bytes", {"a": 1}, ["a"], object(), float("nan")])
def test_only_json_scalars_are_accepted(value):
    with pytest.raises((TypeError, ValueError)):
        audit("deny", "x", principal=None, service="s", endpoint="E", detail=value)


def test_misuse_is_refused():
    with pytest.raises(ValueError):
        audit("maybe", "x", principal=None, service="s", endpoint="E")
    with pytest.raises(ValueError):
        audit("deny", "x", principal=None, service="s", endpoint="E", time="yesterday")
    with pytest.raises(ValueError):
        audit("deny", "x", principal=None, service="s", endpoint="E", key="full key")


def test_jwt_shaped_values_are_redacted_and_lines_cannot_be_forged(everything):
    token = jwt.encode({"sub": "ada"}, SECRET, algorithm="HS256")
    forged_line = '{"decision": "allow"}'
    audit("deny", "x", principal=None, service="s", endpoint=f"E.{token}\n{forged_line}",
          detail=f"got {token}")
    assert token not in everything.text
    line = lines(everything)[0]
    assert line["detail"] == "got [redacted]"
    assert line["endpoint"].startswith("E.[redacted]\n")  # one line, the newline escaped
    assert len(everything.records) == 1 and "\n" not in everything.records[0].getMessage()


# -- through the interceptors: no token ever reaches any log -------------------

def token_parts(token: str) -> list[str]:
    return [part for part in token.split(".") if len(part) > 8]


def test_a_token_never_reaches_the_log_when_verification_fails(everything):
    clock = FakeClock(1_700_000_000)
    verifier = JWTVerifier(key=SECRET, audience="p", clock=clock)
    good = {"sub": "ada", "aud": "p", "exp": clock.now + 60}
    tokens = [
        jwt.encode({**good, "exp": clock.now - 1}, SECRET, "HS256"),  # expired
        jwt.encode(good, b"x" * 32, "HS256"),  # forged
        jwt.encode({**good, "aud": "q"}, SECRET, "HS256"),  # wrong audience
        jwt.encode(good, SECRET, "HS256")[:-4],  # truncated signature
        "eyJhbGciOiJub25lIn0." + jwt.encode(good, SECRET, "HS256").split(".")[1] + ".",  # alg none
    ]
    for token in tokens:
        ctx = _core._test_context(service="p", endpoint="P.Echo",
                                  metadata={"authorization": f"Bearer {token}"})
        with pytest.raises(RPCError) as err:
            verifier.interceptor(None, ctx, lambda r, c: r)
        assert token not in str(err.value) and token not in repr(err.value)
    reasons = [line["error"] for line in lines(everything)]
    assert reasons == ["expired", "signature", "audience", "malformed", "algorithm"]
    for token in tokens:
        for part in token_parts(token):
            assert part not in everything.text


def test_no_secret_reaches_the_log_end_to_end(everything, served):
    """A whole service: verifier, authorizer and rate limiter log their
    decisions; neither a token nor a full key appears anywhere in the logs."""
    key = new_key()
    clock = FakeClock()
    verifier = JWTVerifier(key=SECRET)
    limiter = RateLimiter(per_principal=Rate(1, per=60), clock=clock)
    client = served([as_principal({"gw": Principal(key=key, name="gw")}), verifier.interceptor,
                     authorizer([Rule("p:*", "admin", id="admins")]), limiter.interceptor])
    now = time.time()
    admin = jwt.encode({"sub": "ada", "roles": ["admin"], "exp": now + 600}, SECRET, "HS256")
    viewer = jwt.encode({"sub": "bob", "roles": ["viewer"], "exp": now + 600}, SECRET, "HS256")
    forged = jwt.encode({"sub": "eve", "roles": ["admin"], "exp": now + 600}, b"e" * 32, "HS256")
    outcomes = []
    for token in (admin, admin, viewer, forged):
        try:
            client.call("p", "P.Echo", 1, metadata={"authorization": f"Bearer {token}", "as": "gw"})
            outcomes.append("ok")
        except RPCError as exc:
            outcomes.append(exc.code.name)
    assert outcomes == ["ok", "RESOURCE_EXHAUSTED", "PERMISSION_DENIED", "UNAUTHENTICATED"]
    audit_lines = lines(everything)
    assert [(line["decision"], line["reason"]) for line in audit_lines] == [
        ("allow", "rule:admins"), ("allow", "rule:admins"), ("deny", "rate-limit"),
        ("deny", "default"), ("deny", "invalid-token")]
    assert {line["key"] for line in audit_lines} == {fingerprint(key)[:8]}
    assert key not in everything.text
    for token in (admin, viewer, forged):
        for part in token_parts(token):
            assert part not in everything.text
    assert not re.search(r"eyJ[A-Za-z0-9_-]+\.", everything.text)
