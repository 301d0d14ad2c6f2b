"""Rules: the one total order, wildcards, roles, defaults, the authorizer."""

from __future__ import annotations

import fnmatch

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zmicro import Code, RPCError, _core
from zmicro.auth.principal import ANONYMOUS, AUTHENTICATED, Principal
from zmicro.auth.rules import ANYONE, Access, Decision, Rule, Rules, authorizer

from .conftest import as_principal, new_key

GRANT, DENY = Access.GRANT, Access.DENY
ADMIN = Principal(key=new_key(), name="root", roles={"admin"})
GUEST = Principal(key=new_key(), name="guest", roles={"guest"})


def ids(rules: Rules) -> list[str]:
    return [r.id for r in rules]


# -- the order ---------------------------------------------------------------

def test_higher_priority_first():
    rules = Rules([Rule("*", id="low"), Rule("*", access=DENY, priority=5, id="high")])
    assert ids(rules) == ["high", "low"]
    assert rules.decide(ADMIN, "s", "E") == Decision(DENY, "high", "rule:high")


def test_deny_wins_at_equal_priority_whatever_the_insertion_order():
    for order in ([Rule("*", id="g"), Rule("*", access=DENY, id="d")],
                  [Rule("*", access=DENY, id="d"), Rule("*", id="g")]):
        rules = Rules(order)
        assert ids(rules) == ["d", "g"]
        assert rules.decide(ADMIN, "s", "E").rule_id == "d"


def test_a_specific_rule_beats_a_wildcard_only_through_priority():
    wildcard_deny = Rule("billing:*", access=DENY, id="wild")
    specific_grant = Rule("billing:Billing.Refund", id="specific")
    # Same priority: the wildcard DENY comes first; specificity is no tie-breaker.
    same_priority = Rules([specific_grant, wildcard_deny])
    assert not same_priority.decide(ADMIN, "billing", "Billing.Refund").allowed
    promoted = Rule("billing:Billing.Refund", priority=1, id="specific")
    decision = Rules([wildcard_deny, promoted]).decide(ADMIN, "billing", "Billing.Refund")
    assert decision == Decision(GRANT, "specific", "rule:specific")


def test_insertion_order_breaks_the_remaining_ties():
    rules = Rules([Rule("s:*", id="first"), Rule("s:E", id="second"), Rule("*", id="third")])
    assert ids(rules) == ["first", "second", "third"]
    assert rules.decide(ADMIN, "s", "E").rule_id == "first"
    assert Rules(list(reversed(list(rules)))).decide(ADMIN, "s", "E").rule_id == "third"


def test_full_order():
    given_rules = [Rule("*", id="a"), Rule("*", access=DENY, priority=-1, id="b"),
                   Rule("*", priority=3, id="c"), Rule("*", access=DENY, id="d"),
                   Rule("*", priority=3, access=DENY, id="e"), Rule("*", id="f")]
    assert ids(Rules(given_rules)) == ["e", "c", "d", "a", "f", "b"]


def test_unnamed_rules_are_called_by_position():
    rules = Rules([Rule("x:*"), Rule("s:*", "admin")])
    assert rules.decide(ADMIN, "s", "E") == Decision(GRANT, "#1", "rule:#1")


# -- resources ---------------------------------------------------------------

@pytest.mark.parametrize("resource, service, endpoint, matches", [
    ("*", "any", "Thing.Do", True),
    ("greeter:*", "greeter", "Greeter.Hello", True),
    ("greeter:*", "greeter2", "Greeter.Hello", False),
    ("*:Health.*", "billing", "Health.Check", True),
    ("*:Health.*", "billing", "Billing.Health", False),
    ("g*:Greeter.Hel?o", "greeter", "Greeter.Hello", True),
    ("greeter:Greeter.Hello", "greeter", "Greeter.Hello", True),
    ("greeter:Greeter.Hello", "Greeter", "Greeter.Hello", False),  # case-sensitive
    ("greeter:greeter.hello", "greeter", "Greeter.Hello", False),
    ("team:a:Svc.*", "team:a", "Svc.Call", True),  # split at the last colon
    ("team:a:Svc.*", "team", "a:Svc.Call", False),
    ("*:*", "s", "E", True),
])
def test_resource_patterns(resource, service, endpoint, matches):
    rule = Rule(resource, id="r")
    assert rule.matches(service, endpoint) is matches
    decision = Rules([rule]).decide(None, service, endpoint)
    assert decision.allowed is matches


@pytest.mark.parametrize("resource", ["greeter", "", ":E", "s:", ":"])
def test_bad_resources(resource):
    with pytest.raises(ValueError):
        Rule(resource)


def test_rule_validation():
    with pytest.raises(ValueError):
        Rule("*", roles=[])
    with pytest.raises(ValueError):
        Rule("*", roles=["admin", ""])
    with pytest.raises(TypeError):
        Rule("*", access="deny")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Rule("*", priority=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Rules([Rule("*", id="x"), Rule("s:*", id="x")])
    with pytest.raises(ValueError):
        Rules([Rule("*"), Rule("s:*", id="#0")])  # clashes with the first's label
    with pytest.raises(TypeError):
        Rules([], default="grant")  # type: ignore[arg-type]


# -- roles and defaults -------------------------------------------------------

def test_anyone_includes_anonymous():
    rules = Rules([Rule("*:Health.*", ANYONE)])
    for who in (None, ANONYMOUS, GUEST):
        assert rules.decide(who, "s", "Health.Check").allowed


def test_a_rule_with_roles_skips_callers_without_them():
    rules = Rules([Rule("s:*", ["admin", "ops"], priority=1, id="staff"),
                   Rule("s:Public.*", id="pub")])
    assert rules.decide(ADMIN, "s", "Private.Do").rule_id == "staff"
    assert rules.decide(Principal(roles={"ops"}), "s", "Private.Do").rule_id == "staff"
    for who in (None, ANONYMOUS, GUEST):
        assert rules.decide(who, "s", "Private.Do") == Decision(DENY, None, "default")
        assert rules.decide(who, "s", "Public.Read").rule_id == "pub"  # passed over "staff"


def test_a_deny_with_roles_applies_only_to_them():
    rules = Rules([Rule("*", "guest", DENY, id="no-guests"), Rule("*", id="all")])
    assert rules.decide(GUEST, "s", "E").rule_id == "no-guests"
    assert rules.decide(ADMIN, "s", "E").rule_id == "all"
    assert rules.decide(None, "s", "E").rule_id == "all"


def test_authenticated_pseudo_role():
    rules = Rules([Rule("*", AUTHENTICATED, id="auth")])
    assert rules.decide(Principal(key=new_key()), "s", "E").allowed
    assert rules.decide(ANONYMOUS.with_user({"sub": "ada"}), "s", "E").allowed
    for who in (None, ANONYMOUS, Principal(name="svc", roles={"admin", AUTHENTICATED})):
        assert not rules.decide(who, "s", "E").allowed


def test_user_roles_count():
    rules = Rules([Rule("s:*", "admin", id="adm")])
    user = GUEST.with_user({"sub": "ada", "roles": ["admin"]})
    assert rules.decide(user, "s", "E").rule_id == "adm"
    assert not rules.decide(GUEST.with_user({"sub": "bob", "roles": ["viewer"]}), "s", "E").allowed


def test_default_decides_when_no_rule_applies():
    assert Rules([]).decide(ADMIN, "s", "E") == Decision(DENY, None, "default")
    assert Rules([], default=GRANT).decide(None, "s", "E") == Decision(GRANT, None, "default")
    denied = Rules([Rule("s:Admin.*", "admin", DENY)], default=GRANT)
    assert not denied.decide(ADMIN, "s", "Admin.Drop").allowed
    assert denied.decide(ADMIN, "s", "User.Get").allowed


def test_memo_is_bounded_and_never_changes_a_decision():
    from zmicro.auth import rules as rules_module
    rules = Rules([Rule("s:E1*", "admin", id="a"), Rule("*", id="b", priority=-1)])
    for i in range(rules_module._MEMO_MAX + 10):
        assert rules.decide(ADMIN, "s", f"E{i}").rule_id == ("a" if str(i).startswith("1") else "b")
    assert len(rules._memo) <= rules_module._MEMO_MAX
    assert rules.decide(GUEST, "s", "E1").rule_id == "b"


# -- the property: decide() is the documented order ---------------------------

NAMES = ["a", "b", "ab"]
ROLES = ["admin", "ops", "guest", AUTHENTICATED]

patterns = st.sampled_from(["*", "a", "b", "a*", "?", "[ab]", "ab"])
rules_strategy = st.lists(st.builds(
    lambda svc, ep, everything, roles, access, priority: Rule(
        "*" if everything else f"{svc}:{ep}", roles, access, priority),
    patterns, patterns, st.booleans(),
    st.one_of(st.just(ANYONE), st.sets(st.sampled_from(ROLES), min_size=1)),
    st.sampled_from(Access), st.integers(-2, 2)), max_size=8)
KEY = new_key()


def _principal(has_key: bool, roles: set[str], user_roles: set[str] | None) -> Principal:
    principal = Principal(key=KEY if has_key else "", roles=roles)
    return principal if user_roles is None else principal.with_user({"roles": sorted(user_roles)})


principals = st.one_of(st.none(), st.builds(
    _principal, st.booleans(), st.sets(st.sampled_from(ROLES)),
    st.one_of(st.none(), st.sets(st.sampled_from(ROLES[:3])))))


def reference(rules: list[Rule], default: Access, principal, service: str, endpoint: str):
    """The documented order, written independently: among the applicable
    rules, the one with the highest priority, then DENY over GRANT, then the
    earliest given."""
    held = set()
    if principal is not None:
        held = set(principal.roles) | set(principal.user_roles)
        held.discard(AUTHENTICATED)
        if principal.key or principal.user is not None:
            held.add(AUTHENTICATED)
    applicable = []
    for index, rule in enumerate(rules):
        if rule.resource == "*":
            svc_pattern, ep_pattern = "*", "*"
        else:
            svc_pattern, ep_pattern = rule.resource.rsplit(":", 1)
        if not (fnmatch.fnmatchcase(service, svc_pattern)
                and fnmatch.fnmatchcase(endpoint, ep_pattern)):
            continue
        if "*" in rule.roles or held & set(rule.roles):
            applicable.append((rule.priority, rule.access == Access.DENY, -index, index, rule))
    if not applicable:
        return default, None
    *_, index, rule = max(applicable)
    return rule.access, rule.id or f"#{index}"


@given(rules_strategy, st.sampled_from(Access), principals,
       st.sampled_from(NAMES), st.sampled_from(NAMES))
def test_decide_matches_the_reference(rule_list, default, principal, service, endpoint):
    decision = Rules(rule_list, default=default).decide(principal, service, endpoint)
    expected = reference(rule_list, default, principal, service, endpoint)
    assert (decision.access, decision.rule_id) == expected
    rule_id = decision.rule_id
    assert decision.reason == ("default" if rule_id is None else f"rule:{rule_id}")


# -- the interceptor ----------------------------------------------------------

RULES = [Rule("*:Health.*", id="health"), Rule("p:*", "admin", id="admins"),
         Rule("p:P.Echo", "guest", id="guests-echo")]


def call(interceptor, principal, endpoint="P.Echo"):
    ctx = _core._test_context(service="p", endpoint=endpoint, principal=principal)
    return interceptor("req", ctx, lambda request, ctx: ("handled", request))


def test_authorizer_lets_granted_calls_through_and_audits(recorder):
    authorize = authorizer(Rules(RULES), audit=recorder)
    assert call(authorize, ADMIN, "P.Drop") == ("handled", "req")
    assert call(authorize, None, "Health.Check") == ("handled", "req")
    assert recorder.decisions == [("allow", "rule:admins"), ("allow", "rule:health")]
    assert recorder.calls[0][2] == {"principal": ADMIN, "service": "p", "endpoint": "P.Drop"}


def test_authorizer_refuses_identified_callers_with_permission_denied(recorder):
    authorize = authorizer(RULES, audit=recorder)  # a plain list works too
    with pytest.raises(RPCError) as err:
        call(authorize, GUEST, "P.Drop")
    assert err.value.code == Code.PERMISSION_DENIED
    assert err.value.detail == "permission denied"  # names no rule
    assert recorder.calls == [("deny", "default", {
        "principal": GUEST, "service": "p", "endpoint": "P.Drop", "status": "PERMISSION_DENIED"})]


def test_authorizer_refuses_anonymous_callers_with_unauthenticated(recorder):
    authorize = authorizer(RULES + [Rule("p:P.Secret", access=DENY, priority=9, id="never")],
                           audit=recorder)
    for who in (None, ANONYMOUS, Principal(name="svc", roles={"guest"})):  # roles, no identity
        with pytest.raises(RPCError) as err:
            call(authorize, who, "P.Drop")
        assert err.value.code == Code.UNAUTHENTICATED
    with pytest.raises(RPCError) as err:
        call(authorize, ADMIN, "P.Secret")
    assert err.value.code == Code.PERMISSION_DENIED and "never" not in str(err.value)
    assert recorder.decisions == [("deny", "default")] * 3 + [("deny", "rule:never")]
    assert [fields["status"] for *_, fields in recorder.calls] == ["UNAUTHENTICATED"] * 3 + [
        "PERMISSION_DENIED"]


def test_authorizer_end_to_end(served):
    people = {"root": ADMIN, "guest": GUEST, "nobody": ANONYMOUS}
    client = served([as_principal(people), authorizer(RULES)])
    assert client.call("p", "P.Echo", 1, metadata={"as": "root"}) == 1
    assert client.call("p", "P.Echo", 2, metadata={"as": "guest"}) == 2
    assert client.call("p", "P.Async", 3, metadata={"as": "root"}) == 3
    with pytest.raises(RPCError) as err:
        client.call("p", "P.Whoami", None, metadata={"as": "guest"})
    assert (err.value.code, err.value.detail) == (Code.PERMISSION_DENIED, "permission denied")
    for metadata in ({"as": "nobody"}, {}):
        with pytest.raises(RPCError) as err:
            client.call("p", "P.Echo", 1, metadata=metadata)
        assert err.value.code == Code.UNAUTHENTICATED
        with pytest.raises(RPCError) as err:
            client.call("p", "P.Async", 1, metadata=metadata)
        assert err.value.code == Code.UNAUTHENTICATED
