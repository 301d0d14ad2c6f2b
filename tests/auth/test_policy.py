"""Policy: the order of the security interceptors, what each step sees and
spends, require_user, one audit line per decision and no token in any."""

from __future__ import annotations

import dataclasses
import json
import logging
import time

import jwt
import pytest

from zmicro import Code, RPCError, _core
from zmicro.auth import (
    LOGGER_NAME,
    Access,
    JWTVerifier,
    Policy,
    Principal,
    Rate,
    RateLimiter,
    Rule,
    Rules,
    audit,
)
from zmicro.middleware import chain_server

from ..helpers import FakeClock
from .conftest import as_principal, new_key

NOW = 1_700_000_000.0
SECRET = b"policy-test-secret-0123456789abc"  # 32 bytes: the least HS256 takes
GATEWAY = Principal(key=new_key(), name="gateway", roles={"gateway"})


def token(sub="ada", roles=("admin",), *, secret=SECRET, exp=NOW + 300) -> str:
    return jwt.encode({"sub": sub, "roles": list(roles), "iat": NOW, "exp": exp},
                      secret, algorithm="HS256")


def bearer(tok: str) -> dict:
    return {"authorization": f"Bearer {tok}"}


@pytest.fixture
def jclock() -> FakeClock:
    return FakeClock(NOW)


@pytest.fixture
def verifier(jclock, recorder) -> JWTVerifier:
    return JWTVerifier(key=SECRET, clock=jclock, audit=recorder)


@pytest.fixture
def limiter(clock, recorder) -> RateLimiter:
    return RateLimiter(per_principal=Rate(1, per=60), clock=clock, audit=recorder)


ADMINS = [Rule("p:*", "admin", id="admins")]


class Handler:
    """The innermost callable: records the context of each call it serves."""

    def __init__(self) -> None:
        self.seen: list = []

    def __call__(self, request, ctx):
        self.seen.append(ctx.principal)
        return request


def call(policy: Policy, handler=None, *, principal=GATEWAY, metadata=None,
         endpoint="P.Echo"):
    """One call through the policy's chain; the handler's result, or the
    RPCError's code."""
    ctx = _core._test_context(service="p", endpoint=endpoint, principal=principal,
                              metadata=metadata)
    try:
        return chain_server(policy.interceptors(), handler or Handler())("ok", ctx)
    except RPCError as exc:
        return exc.code


# -- the order ----------------------------------------------------------------

def test_interceptors_come_in_order_jwt_rules_rate(verifier, limiter, recorder):
    policy = Policy(jwt=verifier, rules=ADMINS, rate=limiter, audit=recorder)
    first, second, third = policy.interceptors()
    assert first == verifier.interceptor
    assert second.rules is policy.rules
    assert third == limiter.interceptor
    assert policy.describe()["order"] == ["jwt", "rules", "rate-limit"]


def test_only_the_configured_steps_and_always_the_same_ones(limiter, recorder):
    assert Policy().interceptors() == []
    policy = Policy(rate=limiter, audit=recorder)
    assert policy.interceptors() == [limiter.interceptor]
    with_rules = Policy(rules=ADMINS)
    a, b = with_rules.interceptors(), with_rules.interceptors()
    assert a is not b and a[0] is b[0]  # fresh lists, one shared authorizer


def test_a_token_failure_reaches_neither_rules_nor_rate_limit(verifier, limiter, recorder):
    policy = Policy(jwt=verifier, rules=ADMINS, rate=limiter, audit=recorder)
    handler = Handler()
    forged = token(secret=b"f" * 32)
    assert call(policy, handler, metadata=bearer(forged)) is Code.UNAUTHENTICATED
    assert recorder.decisions == [("deny", "invalid-token")]
    assert len(limiter) == 0  # no bucket was even looked at
    assert handler.seen == []


def test_a_rule_denial_never_consumes_a_rate_limit_token(verifier, clock, recorder):
    limiter = RateLimiter(per_principal=Rate(1, per=60), per_endpoint=Rate(1, per=60),
                          clock=clock, audit=recorder)
    policy = Policy(jwt=verifier, rules=ADMINS, rate=limiter, audit=recorder)
    viewer = bearer(token("bob", roles=["viewer"]))
    for _ in range(3):
        assert call(policy, metadata=viewer) is Code.PERMISSION_DENIED
    assert len(limiter) == 0
    # The endpoint's one token is still there for a caller the rules admit.
    assert call(policy, metadata=bearer(token("ada"))) == "ok"
    assert recorder.decisions == [("deny", "default")] * 3 + [("allow", "rule:admins")]


def test_rate_limit_exhaustion_is_resource_exhausted_and_recovers(verifier, limiter, clock,
                                                                   recorder):
    policy = Policy(jwt=verifier, rules=ADMINS, rate=limiter, audit=recorder)
    ada = bearer(token("ada"))
    assert call(policy, metadata=ada) == "ok"
    assert call(policy, metadata=ada) is Code.RESOURCE_EXHAUSTED
    clock.advance(60)
    assert call(policy, metadata=ada) == "ok"
    # Two decisions for the refused call: the rules allowed it, the limiter refused it.
    assert recorder.decisions == [("allow", "rule:admins"), ("allow", "rule:admins"),
                                  ("deny", "rate-limit"), ("allow", "rule:admins")]


def test_users_behind_one_key_have_their_own_budgets(verifier, limiter, recorder):
    """The limiter runs after the JWT step, so it keys on the user, not on
    the gateway's key that every user's call arrives with."""
    policy = Policy(jwt=verifier, rules=ADMINS, rate=limiter, audit=recorder)
    assert call(policy, metadata=bearer(token("ada"))) == "ok"
    assert call(policy, metadata=bearer(token("ada"))) is Code.RESOURCE_EXHAUSTED
    assert call(policy, metadata=bearer(token("bob"))) == "ok"


# -- rules through the chain ----------------------------------------------------

@pytest.mark.parametrize("deny_first", [True, False])
def test_deny_wins_at_equal_priority_through_the_whole_chain(verifier, limiter, recorder,
                                                             deny_first):
    grant = Rule("p:*", "admin", id="admins")
    deny = Rule("p:*", "suspended", access=Access.DENY, id="suspended")
    rules = [deny, grant] if deny_first else [grant, deny]
    policy = Policy(jwt=verifier, rules=rules, rate=limiter, audit=recorder)
    handler = Handler()
    both = bearer(token("ada", roles=["admin", "suspended"]))
    assert call(policy, handler, metadata=both) is Code.PERMISSION_DENIED
    assert recorder.decisions == [("deny", "rule:suspended")]
    assert handler.seen == [] and len(limiter) == 0
    # A grant at a higher priority is what overrides the deny.
    promoted = Rule("p:*", "admin", priority=1, id="admins")
    policy = Policy(jwt=verifier, rules=[deny, promoted], audit=recorder)
    assert call(policy, handler, metadata=both) == "ok"


def test_the_default_decision_is_configurable(recorder):
    only_admin = [Rule("p:P.Admin", "admin", id="admin")]
    open_policy = Policy(rules=Rules(only_admin, default=Access.GRANT), audit=recorder)
    closed_policy = Policy(rules=only_admin, audit=recorder)  # a plain list: DENY
    assert open_policy.describe()["rules"]["default"] == "grant"
    assert closed_policy.describe()["rules"]["default"] == "deny"
    assert call(open_policy) == "ok"
    assert call(closed_policy) is Code.PERMISSION_DENIED
    assert call(closed_policy, principal=None) is Code.UNAUTHENTICATED  # no identity at all
    assert recorder.decisions == [("allow", "default"), ("deny", "default"),
                                  ("deny", "default")]


def test_the_handler_sees_the_refined_principal(verifier, recorder):
    policy = Policy(jwt=verifier, rules=ADMINS, audit=recorder)
    handler = Handler()
    assert call(policy, handler, metadata=bearer(token("ada", roles=["admin"]))) == "ok"
    (seen,) = handler.seen
    assert seen.key == GATEWAY.key and seen.name == "gateway"
    assert seen.subject == "ada" and seen.user["sub"] == "ada"
    assert {"admin", "gateway", "authenticated"} <= seen.all_roles


def test_without_rules_the_transport_is_the_only_gate(verifier, recorder):
    policy = Policy(jwt=verifier, audit=recorder)
    assert policy.describe()["rules"] is None
    assert call(policy, principal=None) == "ok"  # anonymous, no token: let through
    assert call(policy) == "ok"
    assert recorder.calls == []  # no authorization step, so no decision to log


# -- require_user ---------------------------------------------------------------

def test_require_user_refuses_calls_without_a_valid_token(verifier, recorder):
    policy = Policy(jwt=verifier, require_user=True, audit=recorder)
    handler = Handler()
    assert call(policy, handler) is Code.UNAUTHENTICATED
    assert call(policy, handler, metadata=bearer(token(exp=NOW - 1))) is Code.UNAUTHENTICATED
    assert call(policy, handler, metadata={"authorization": "Basic YWRhOnB3"}) \
        is Code.UNAUTHENTICATED
    assert call(policy, handler, metadata=bearer(token("ada"))) == "ok"
    assert [p.subject for p in handler.seen] == ["ada"]
    assert recorder.decisions == [("deny", "missing-token"), ("deny", "invalid-token"),
                                  ("deny", "invalid-token")]


def test_require_user_leaves_the_given_verifier_unchanged(verifier, recorder):
    Policy(jwt=verifier, require_user=True, audit=recorder)
    assert verifier.required is False
    assert call(Policy(jwt=verifier, audit=recorder)) == "ok"


def test_without_require_user_a_missing_token_passes_an_invalid_one_does_not(verifier,
                                                                              recorder):
    policy = Policy(jwt=verifier, audit=recorder)
    handler = Handler()
    assert call(policy, handler) == "ok"
    assert handler.seen == [GATEWAY]  # the calling key, unrefined
    assert call(policy, handler, metadata=bearer(token(secret=b"f" * 32))) \
        is Code.UNAUTHENTICATED
    assert call(policy, handler, metadata={"authorization": "Bearer"}) is Code.UNAUTHENTICATED
    assert len(handler.seen) == 1
    assert recorder.decisions == [("deny", "invalid-token")] * 2


def test_require_user_and_the_verifiers_required_must_agree(jclock, recorder):
    with pytest.raises(ValueError, match="require_user needs jwt"):
        Policy(require_user=True)
    strict = JWTVerifier(key=SECRET, clock=jclock, required=True, audit=recorder)
    with pytest.raises(ValueError, match="requires a token"):
        Policy(jwt=strict, audit=recorder)
    policy = Policy(jwt=strict, require_user=True, audit=recorder)
    assert policy.interceptors() == [strict.interceptor]
    assert call(policy) is Code.UNAUTHENTICATED


# -- audit ------------------------------------------------------------------------

def test_every_decision_is_logged_once_and_no_token_ever(caplog, jclock, clock):
    caplog.set_level(logging.DEBUG, logger=LOGGER_NAME)
    verifier = JWTVerifier(key=SECRET, clock=jclock)
    limiter = RateLimiter(per_principal=Rate(1, per=60), clock=clock)
    policy = Policy(jwt=verifier, rules=ADMINS, rate=limiter, require_user=True)
    admin, viewer = token("ada"), token("bob", roles=["viewer"])
    forged, expired = token("eve", secret=b"e" * 32), token("ada", exp=NOW - 1)
    outcomes = [call(policy, metadata=bearer(t)) for t in (admin, admin, viewer, forged, expired)]
    outcomes.append(call(policy, metadata={"authorization": f"Bearer {admin}{admin}"}))
    outcomes.append(call(policy))
    assert outcomes == ["ok", Code.RESOURCE_EXHAUSTED, Code.PERMISSION_DENIED,
                        Code.UNAUTHENTICATED, Code.UNAUTHENTICATED, Code.UNAUTHENTICATED,
                        Code.UNAUTHENTICATED]
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == LOGGER_NAME]
    assert [(line["decision"], line["reason"]) for line in lines] == [
        ("allow", "rule:admins"),
        ("allow", "rule:admins"), ("deny", "rate-limit"),
        ("deny", "default"),
        ("deny", "invalid-token"), ("deny", "invalid-token"), ("deny", "invalid-token"),
        ("deny", "missing-token")]
    text = "\n".join(r.getMessage() for r in caplog.records) + caplog.text
    for tok in (admin, viewer, forged, expired):
        assert tok not in text
        for part in tok.split("."):
            assert part not in text
    assert SECRET.decode() not in text and GATEWAY.key not in text


def test_components_must_audit_to_the_policys_hook(jclock, clock, recorder):
    with pytest.raises(ValueError, match="jwt component"):
        Policy(jwt=JWTVerifier(key=SECRET, clock=jclock), audit=recorder)
    with pytest.raises(ValueError, match="rate component"):
        Policy(rate=RateLimiter(per_principal=Rate(1), clock=clock), audit=recorder)
    # Two bound methods of one object are equal, hence the same hook.
    hook = recorder.__call__
    Policy(jwt=JWTVerifier(key=SECRET, audit=recorder.__call__), audit=hook)
    Policy(jwt=JWTVerifier(key=SECRET), rate=RateLimiter(per_endpoint=Rate(1)), audit=audit)


# -- construction and describe ------------------------------------------------------

def test_rules_given_as_an_iterable_become_rules_once():
    policy = Policy(rules=(r for r in ADMINS))
    assert isinstance(policy.rules, Rules) and list(policy.rules) == ADMINS
    assert call(policy) is Code.PERMISSION_DENIED and call(policy) is Code.PERMISSION_DENIED


def test_misuse_is_refused(verifier):
    with pytest.raises(TypeError):
        Policy(jwt="secret")
    with pytest.raises(TypeError):
        Policy(rate=Rate(1))
    with pytest.raises(TypeError):
        Policy(rules=["p:*"])
    with pytest.raises(TypeError):
        Policy(require_user="yes")
    with pytest.raises(TypeError):
        Policy(verifier)  # keyword-only
    with pytest.raises(dataclasses.FrozenInstanceError):
        Policy().rules = ADMINS


def test_describe_is_plain_data_without_secrets(jclock, clock):
    other = b"kid-two-secret-0123456789abcdefgh"
    verifier = JWTVerifier(key=SECRET, keys={"k2": other}, algorithms=["HS256"],
                           issuer="https://issuer", audience=["p", "q"], leeway=5,
                           clock=jclock)
    limiter = RateLimiter(per_principal=Rate(10, per=1, burst=20), per_endpoint=Rate(100),
                          clock=clock)
    rules = [Rule("p:*", "admin", id="admins"), Rule("*", access=Access.DENY, priority=-1)]
    policy = Policy(jwt=verifier, require_user=True, rules=rules, rate=limiter)
    described = policy.describe()
    text = json.dumps(described)
    assert json.loads(text) == described
    assert SECRET.decode() not in text and other.decode() not in text
    assert described == {
        "order": ["jwt", "rules", "rate-limit"],
        "jwt": {"algorithms": ["HS256"], "key_ids": ["k2"], "issuer": ["https://issuer"],
                "audience": ["p", "q"], "leeway": 5.0, "roles_claim": "roles"},
        "require_user": True,
        "rules": {"default": "deny", "rules": [
            {"id": "admins", "resource": "p:*", "roles": ["admin"], "access": "grant",
             "priority": 0},
            {"id": "#1", "resource": "*", "roles": ["*"], "access": "deny", "priority": -1}]},
        "rate": {"per_principal": {"rate": 10, "per": 1, "burst": 20},
                 "per_endpoint": {"rate": 100, "per": 1.0, "burst": 100.0}},
        "audit": "zmicro.auth.audit.audit",
    }
    assert Policy().describe() == {"order": [], "jwt": None, "require_user": False,
                                   "rules": None, "rate": None,
                                   "audit": "zmicro.auth.audit.audit"}


# -- over the wire ----------------------------------------------------------------------

def test_policy_end_to_end(served):
    verifier = JWTVerifier(key=SECRET)  # the real clock: tokens below are fresh
    now = time.time()
    policy = Policy(jwt=verifier, require_user=True, rules=ADMINS,
                    rate=RateLimiter(per_principal=Rate(2, per=3600)))
    client = served([as_principal({"gw": GATEWAY}), *policy.interceptors()])
    ada = jwt.encode({"sub": "ada", "roles": ["admin"], "exp": now + 600}, SECRET, "HS256")
    meta = {"as": "gw", **bearer(ada)}
    assert client.call("p", "P.Whoami", None, metadata=meta) == {
        "subject": "ada", "roles": ["admin", "authenticated", "gateway"]}
    assert client.call("p", "P.Async", 7, metadata=meta) == 7
    with pytest.raises(RPCError) as err:
        client.call("p", "P.Echo", 1, metadata=meta)
    assert err.value.code is Code.RESOURCE_EXHAUSTED
    with pytest.raises(RPCError) as err:
        client.call("p", "P.Echo", 1, metadata={"as": "gw"})
    assert err.value.code is Code.UNAUTHENTICATED
