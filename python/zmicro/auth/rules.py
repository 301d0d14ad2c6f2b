"""Who may call what: go-micro's rule model, as a server interceptor.

A :class:`Rule` grants or denies a resource — ``"service:endpoint"`` with
shell-style wildcards in each part — to callers holding one of its roles.
:class:`Rules` puts them in one total order and lets the first rule that
applies decide:

1. higher ``priority`` first;
2. at equal priority, DENY before GRANT (deny wins a tie);
3. then the order the rules were given in.

Nothing else breaks ties: a specific resource beats a wildcard only when
its priority is higher (``Rule("billing:Refund", "admin", priority=10)``
before ``Rule("billing:*")``). A rule *applies* when its resource matches and
the caller holds one of its roles; when no rule applies, ``default``
decides (DENY unless said otherwise).

Roles: ``"*"`` is anyone, anonymous callers included; ``"authenticated"``
(:data:`~zmicro.auth.principal.AUTHENTICATED`) is any caller that proved an
identity — a Curve key or a verified user token — whatever its roles; any
other role must be among the principal's roles or its user's (see
:attr:`Principal.all_roles <zmicro.auth.principal.Principal.all_roles>`).

:func:`authorizer` makes the server interceptor. It answers a refused caller
that has no identity with ``UNAUTHENTICATED`` and an identified one with
``PERMISSION_DENIED``; neither answer names the rule (the audit log does).

Topics (events, :mod:`zmicro.events`) are resources of the same model:
``zmicro.topic.<topic>:publish`` and ``zmicro.topic.<topic>:subscribe``
(:func:`topic_resource`; the topic part may be a pattern,
``zmicro.topic.order.*:publish``). A subscriber's service enforces
``publish`` on every event it gets, with the policy's interceptors, as for
calls: the principal is the publisher's (its transport key where the
broker proves it, else the event's signed ``principal``).
``Rule(topic_resource("order.*", "publish"), "orders")`` lets keys with
role ``orders`` publish to every ``order.`` topic a service subscribes to.
"""

from __future__ import annotations

import enum
import fnmatch
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import Code, RPCError
from .audit import audit as _audit
from .principal import Principal

if TYPE_CHECKING:
    from .._core import Context
    from ..middleware import Handler, ServerInterceptor

__all__ = ["ANYONE", "TOPIC_ACTIONS", "Access", "Decision", "Rule", "Rules", "authorizer",
           "topic_resource"]

#: The role that matches every caller, anonymous ones included.
ANYONE = "*"

#: What a principal may do to a topic (the endpoint part of its resource).
TOPIC_ACTIONS = ("publish", "subscribe")


def topic_resource(topic: str, action: str) -> str:
    """The resource of ``action`` (``"publish"`` or ``"subscribe"``) on
    ``topic`` (a topic name or an fnmatch pattern of them), for a
    :class:`Rule`: ``topic_resource("order.*", "publish")`` is
    ``"zmicro.topic.order.*:publish"``."""
    if action not in TOPIC_ACTIONS:
        raise ValueError(f"action is one of {TOPIC_ACTIONS}, not {action!r}")
    if not isinstance(topic, str) or not topic or ":" in topic:
        raise ValueError(f"invalid topic (pattern) {topic!r}")
    # (zmicro.broker.TOPIC_PREFIX spelt out: its backends import this package.)
    return f"zmicro.topic.{topic}:{action}"


class Access(enum.Enum):
    """What a rule does to the calls it applies to."""

    GRANT = "grant"
    DENY = "deny"


@dataclass(frozen=True)
class Rule:
    """Grant (or deny) ``resource`` to callers holding one of ``roles``.

    ``resource`` is ``"service:endpoint"``, each part an :mod:`fnmatch`
    pattern matched case-sensitively (``"greeter:*"``, ``"*:Health.*"``), or
    ``"*"`` alone for everything. Service names may contain ``:``, endpoint
    names should not: the resource is split at its *last* colon.
    ``roles`` is one role or several; ``"*"`` means anyone (``role_set``
    holds them as a frozenset, typed as one). ``id`` names the rule in the
    audit log (``"rule:<id>"``); unnamed rules are called ``#<position>``
    after their position in the list given to :class:`Rules`.
    """

    resource: str
    roles: Iterable[str] | str = ANYONE
    access: Access = Access.GRANT
    priority: int = 0
    id: str = ""
    service_pattern: str = field(init=False, repr=False, compare=False)
    endpoint_pattern: str = field(init=False, repr=False, compare=False)
    # roles as given may be a str or any iterable; this is the set made of
    # them (roles is that same frozenset once built, but not to a type checker)
    role_set: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.access, Access):
            raise TypeError(f"access must be an Access, not {self.access!r}")
        if not isinstance(self.priority, int) or isinstance(self.priority, bool):
            raise TypeError("priority must be an int")
        roles = frozenset((self.roles,) if isinstance(self.roles, str) else self.roles)
        if not roles or not all(isinstance(r, str) and r for r in roles):
            raise ValueError("a rule needs at least one role (non-empty strings; '*' is anyone)")
        object.__setattr__(self, "roles", roles)
        object.__setattr__(self, "role_set", roles)
        if self.resource == "*":
            service, endpoint = "*", "*"
        else:
            service, sep, endpoint = self.resource.rpartition(":")
            if not sep or not service or not endpoint:
                raise ValueError('resource must be "service:endpoint" or "*", '
                                 f"not {self.resource!r}")
        object.__setattr__(self, "service_pattern", service)
        object.__setattr__(self, "endpoint_pattern", endpoint)

    def matches(self, service: str, endpoint: str) -> bool:
        """Whether the resource covers ``endpoint`` of ``service`` (roles aside)."""
        return (fnmatch.fnmatchcase(service, self.service_pattern)
                and fnmatch.fnmatchcase(endpoint, self.endpoint_pattern))

    def admits(self, principal: Principal | None) -> bool:
        """Whether ``principal`` (None: anonymous) holds one of the roles."""
        if ANYONE in self.role_set:
            return True
        return principal is not None and not self.role_set.isdisjoint(principal.all_roles)


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of :meth:`Rules.decide`: ``access``, the ``rule_id`` that
    decided (None: the default did) and the audit ``reason`` code
    (``"rule:<id>"`` or ``"default"``)."""

    access: Access
    rule_id: str | None
    reason: str

    @property
    def allowed(self) -> bool:
        return self.access is Access.GRANT


# (rule admits anyone, the rule's roles, its decision)
_Candidate = tuple[bool, frozenset[str], Decision]

# Resources seen per Rules object; callers choose endpoint names, so the
# memo is bounded (and simply cleared when full: it refills in one call each).
_MEMO_MAX = 4096


class Rules:
    """An ordered rule set (see the module docstring for the order).

    Immutable once built; ``decide`` is thread-safe. Iterating yields the
    rules in evaluation order. Rule ids must be unique.
    """

    def __init__(self, rules: Iterable[Rule], *, default: Access = Access.DENY) -> None:
        if not isinstance(default, Access):
            raise TypeError(f"default must be an Access, not {default!r}")
        given = list(rules)
        labels = [rule.id or f"#{i}" for i, rule in enumerate(given)]
        if len(set(labels)) != len(labels):
            raise ValueError("rule ids must be unique")
        # sorted() is stable, so equal keys keep insertion order (step 3).
        order = sorted(range(len(given)), key=lambda i: (
            -given[i].priority, given[i].access is not Access.DENY))
        self._rules = tuple(given[i] for i in order)
        self._compiled = tuple(
            (re.compile(fnmatch.translate(given[i].service_pattern)).match,
             re.compile(fnmatch.translate(given[i].endpoint_pattern)).match,
             ANYONE in given[i].role_set,
             given[i].role_set,
             Decision(given[i].access, labels[i], f"rule:{labels[i]}"))
            for i in order)
        self.default = default
        self._default = Decision(default, None, "default")
        self._memo: dict[tuple[str, str], tuple[_Candidate, ...]] = {}

    def __iter__(self) -> Iterator[Rule]:
        return iter(self._rules)

    def __len__(self) -> int:
        return len(self._rules)

    def __repr__(self) -> str:
        return f"<Rules {len(self._rules)} rules, default={self.default.name}>"

    def decide(self, principal: Principal | None, service: str, endpoint: str) -> Decision:
        """The decision for ``principal`` (None: anonymous) calling
        ``endpoint`` of ``service``: the first applicable rule's, else the
        default."""
        candidates = self._memo.get((service, endpoint))
        if candidates is None:
            candidates = self._candidates(service, endpoint)
        held = principal.all_roles if principal is not None else frozenset()
        for anyone, roles, decision in candidates:
            if anyone or not roles.isdisjoint(held):
                return decision
        return self._default

    def _candidates(self, service: str, endpoint: str) -> tuple[_Candidate, ...]:
        # The rules whose resource matches, in order; roles are checked per
        # call since they depend on the caller.
        found = tuple((anyone, roles, decision)
                      for svc, ep, anyone, roles, decision in self._compiled
                      if svc(service) and ep(endpoint))
        if len(self._memo) >= _MEMO_MAX:
            self._memo.clear()  # racing threads at worst recompute an entry
        self._memo[(service, endpoint)] = found
        return found


AuditFn = Callable[..., None]


def authorizer(rules: Rules | Iterable[Rule], *, audit: AuditFn = _audit) -> ServerInterceptor:
    """A server interceptor that lets a call through only when ``rules``
    grant it to ``ctx.principal`` (None: anonymous).

    Refused: ``UNAUTHENTICATED`` ("authentication required") when the caller
    proved no identity (no key, no verified token), ``PERMISSION_DENIED``
    ("permission denied") otherwise. Every decision, allow or deny, is passed
    to ``audit`` (default: :func:`zmicro.auth.audit.audit`).

    Place it after the interceptors that establish the principal (the JWT
    verifier) and, usually, before a rate limiter, so that callers who may
    not call an endpoint cannot spend its budget.
    """
    if not isinstance(rules, Rules):
        rules = Rules(rules)

    def authorize(request: Any, ctx: Context, next: Handler) -> Any:
        principal = ctx.principal
        decision = rules.decide(principal, ctx.service, ctx.endpoint)
        if decision.access is Access.GRANT:
            audit("allow", decision.reason, principal=principal, service=ctx.service,
                  endpoint=ctx.endpoint)
            return next(request, ctx)
        if principal is None or not principal.authenticated:
            audit("deny", decision.reason, principal=principal, service=ctx.service,
                  endpoint=ctx.endpoint, status=Code.UNAUTHENTICATED.name)
            raise RPCError(Code.UNAUTHENTICATED, "authentication required")
        audit("deny", decision.reason, principal=principal, service=ctx.service,
              endpoint=ctx.endpoint, status=Code.PERMISSION_DENIED.name)
        raise RPCError(Code.PERMISSION_DENIED, "permission denied")

    authorize.rules = rules  # type: ignore[attr-defined]  # (mypy knows no attributes on functions)
    return authorize
