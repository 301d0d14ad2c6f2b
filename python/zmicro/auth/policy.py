"""A service's security policy: who may call it, what, and how often.

A :class:`Policy` composes the pieces of :mod:`zmicro.auth` into the server
interceptors a :class:`~zmicro.Service` runs before its own
(``Service(..., policy=Policy(...))``). It adds no check of its own: each
decision is made, and audited, by the component that owns it.

The order, outermost first, and why:

1. **Authentication of the end user** (:class:`~zmicro.auth.jwt.JWTVerifier`).
   It refines ``ctx.principal`` from the calling key to the user the key
   acts for. Everything after it must see that final identity: rules match
   the user's roles, and the per-principal rate limit keys on the user's
   ``sub``. Behind a gateway, a rate limit placed before it would put every
   user in the gateway key's one bucket.
2. **Authorization** (:func:`~zmicro.auth.rules.authorizer`). Cheap: a
   memoised lookup and a set intersection per call.
3. **Rate limits** (:class:`~zmicro.auth.ratelimit.RateLimiter`). Only calls
   that would otherwise run take a token. A caller that may not call an
   endpoint cannot drain that endpoint's shared bucket, so it cannot deny
   the endpoint to callers that may. The buckets count only calls that
   are let through to do work.
4. The service's own interceptors, then the handler.

The case for limiting first is denial of service. Steps 1 and 2 run for
every request, refused ones included. A token not seen before costs a
signature check: tens of microseconds for HS256 or RS256, more for ES256.
Verified tokens are cached; refused ones are not. We keep the order above
anyway, because of who reaches step 1 at all. With Curve on (the default),
only a peer whose key is on the allowlist, and whose message carries a
valid MAC, gets that far. That peer's message rate is already bounded
before any interceptor runs. Its nonce-cache partition holds rate × window
entries and refuses the key when full. So a flood of bad tokens comes from
a known key at a bounded rate. The audit log names the key (``invalid-token``,
with the key's fingerprint), and the answer is to untrust it. Limiting first
would cost more than it buys. The buckets would key on the calling key, not
the user. Refused calls would drain the shared endpoint buckets. And the
only gain would be a second bound on a rate the transport already bounds.
In insecure mode anyone who can reach the port gets to
step 1, at any rate. Insecure mode is not for exposed networks.

Audit: the policy adds no audit call of its own. Each decision is logged once,
by the component that makes it. That gives one line for a token refused
(``invalid-token``, ``missing-token``), one for an authorization decision,
allow or deny (``rule:<id>``, ``default``), and one for a rate-limit refusal
(``rate-limit``). A call refused by the rate limiter therefore leaves two
lines: the rules allowed it, then the limiter refused it. Without ``rules``
no authorization decision is made, and an allowed call leaves no line.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .audit import audit as _audit
from .jwt import JWTVerifier
from .ratelimit import Rate, RateLimiter
from .rules import Rule, Rules, authorizer

if TYPE_CHECKING:
    from ..middleware import ServerInterceptor
    from .ratelimit import _Table

__all__ = ["Policy"]

AuditFn = Callable[..., None]


@dataclass(frozen=True, kw_only=True)
class Policy:
    """The security interceptors of one service, in the order of the module
    docstring.

    ``jwt``: verifies end users' tokens (``authorization: Bearer <token>``
    metadata). ``require_user``: a call without a valid token is refused
    with ``UNAUTHENTICATED``. Without it, a call with no token passes as its
    calling key, and a call with an invalid token is still refused. Needs
    ``jwt``. It is the verifier's own ``required`` check, applied to a
    shallow copy of the verifier, so the copy shares its keys and token cache.
    A verifier built with ``required=True`` needs ``require_user=True``: the
    policy must say what it enforces.

    ``rules``: who may call what (a :class:`~zmicro.auth.rules.Rules`, or
    rules that become one with the default DENY). ``None``: no authorization
    step. Every caller the transport let in may then call every endpoint,
    so the Curve allowlist is the only gate.

    ``rate``: per-principal and per-endpoint token buckets.

    ``audit``: where :func:`~zmicro.auth.audit.audit`-style decisions go
    (default: the ``"zmicro.audit"`` logger). The authorizer uses it. A
    ``jwt`` or ``rate`` component must have been built with the same hook,
    or the policy is refused (``ValueError``), so that one trail holds every
    decision.

    Immutable. The components it holds keep their state (token cache,
    buckets), and every list :meth:`interceptors` returns shares them.
    """

    jwt: JWTVerifier | None = None
    require_user: bool = False
    rules: Rules | Iterable[Rule] | None = None
    rate: RateLimiter | None = None
    audit: AuditFn = _audit
    # The interceptors, built once: the components are stateful and every
    # chain of the service must share them.
    _chain: tuple[Any, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.jwt is not None and not isinstance(self.jwt, JWTVerifier):
            raise TypeError(f"jwt must be a JWTVerifier, not {type(self.jwt).__name__}")
        if self.rate is not None and not isinstance(self.rate, RateLimiter):
            raise TypeError(f"rate must be a RateLimiter, not {type(self.rate).__name__}")
        if not isinstance(self.require_user, bool):
            raise TypeError("require_user must be a bool")
        if not callable(self.audit):
            raise TypeError("audit must be callable")
        if self.require_user and self.jwt is None:
            raise ValueError("require_user needs jwt: without a verifier no token is valid")
        if self.jwt is not None and self.jwt.required and not self.require_user:
            raise ValueError("this JWTVerifier requires a token: set require_user=True "
                             "(or build the verifier with required=False)")
        # ``!=``, not ``is not``: two bound methods of one object are equal
        # but distinct objects.
        for name, component in (("jwt", self.jwt), ("rate", self.rate)):
            if component is not None and component._audit != self.audit:
                raise ValueError(f"the {name} component audits to another hook than the "
                                 "policy: pass the same audit= to both")
        rules = self.rules
        if rules is not None and not isinstance(rules, Rules):
            rules = list(rules)  # once: an iterator would be spent by the first use
            for rule in rules:
                if not isinstance(rule, Rule):
                    raise TypeError(f"rules must be Rule objects, not {type(rule).__name__}")
            rules = Rules(rules)
            object.__setattr__(self, "rules", rules)

        chain: list[Any] = []
        if self.jwt is not None:
            verifier = self.jwt
            if self.require_user and not verifier.required:
                verifier = copy.copy(verifier)
                verifier.required = True
            chain.append(verifier.interceptor)
        if rules is not None:
            chain.append(authorizer(rules, audit=self.audit))
        if self.rate is not None:
            chain.append(self.rate.interceptor)
        object.__setattr__(self, "_chain", tuple(chain))

    def interceptors(self) -> list[ServerInterceptor]:
        """The server interceptors, outermost first: JWT, rules, rate limits
        (those configured). The service appends its own after them."""
        return list(self._chain)

    def describe(self) -> dict[str, Any]:
        """What the policy enforces, as plain JSON-ready data for
        ``zmicro describe`` and reviews. Holds no secret: no key, no HMAC
        secret, no token; only settings, key ids and rules."""
        return {
            "order": [step for step, present in (
                ("jwt", self.jwt is not None), ("rules", self.rules is not None),
                ("rate-limit", self.rate is not None)) if present],
            "jwt": _describe_jwt(self.jwt),
            "require_user": self.require_user,
            "rules": _describe_rules(self.rules),
            "rate": _describe_rate(self.rate),
            "audit": _name(self.audit),
        }


def _describe_jwt(verifier: JWTVerifier | None) -> dict[str, Any] | None:
    if verifier is None:
        return None
    # Key objects stay inside: only the algorithms they serve and the key ids
    # (ids are public, every token names one in its header).
    bound = [b for b in (verifier._default, *verifier._by_kid.values()) if b is not None]
    return {
        "algorithms": sorted(set().union(*(algs for _key, algs in bound))),
        "key_ids": sorted(verifier._by_kid),
        "issuer": _listed(verifier.issuer),
        "audience": _listed(verifier.audience),
        "leeway": verifier.leeway,
        "roles_claim": verifier.roles_claim,
    }


def _describe_rules(rules: Rules | Iterable[Rule] | None) -> dict[str, Any] | None:
    if rules is None:
        return None
    assert isinstance(rules, Rules)  # Policy.__post_init__ made it one
    return {
        "default": rules.default.value,
        # Evaluation order: the first rule that applies decides.
        # Unnamed rules get the label the audit log uses ("#<position>").
        "rules": [{"id": compiled[-1].rule_id, "resource": rule.resource,
                   "roles": sorted(rule.roles), "access": rule.access.value,
                   "priority": rule.priority}
                  for rule, compiled in zip(rules, rules._compiled)],
    }


def _describe_rate(limiter: RateLimiter | None) -> dict[str, Any] | None:
    if limiter is None:
        return None

    def one(table: _Table | None) -> dict[str, Any] | None:
        if table is None:
            return None
        rate: Rate = table.rate
        return {"rate": rate.rate, "per": rate.per, "burst": rate.capacity}

    return {"per_principal": one(limiter._principals), "per_endpoint": one(limiter._endpoints)}


def _listed(value: str | tuple[str, ...] | None) -> list[str] | None:
    return None if value is None else [value] if isinstance(value, str) else list(value)


def _name(fn: Callable[..., Any]) -> str:
    module = getattr(fn, "__module__", None) or type(fn).__module__
    qualname = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    return f"{module}.{qualname}"
