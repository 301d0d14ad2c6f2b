"""Identity and authorization for zmicro services.

The pieces a server's security interceptors are made of: the caller's
:class:`Principal`, go-micro style :class:`Rule` sets checked by
:func:`authorizer`, per-principal and per-endpoint token buckets
(:func:`rate_limiter`), end-user tokens (:class:`JWTVerifier`) and the
structured audit log (:func:`audit`). A :class:`Policy` puts them in
order for a service.
"""

from __future__ import annotations

from .audit import LOGGER_NAME, audit
from .jwt import JWTVerifier, TokenError, bearer_token
from .policy import Policy
from .principal import ANONYMOUS, AUTHENTICATED, Principal, fingerprint
from .ratelimit import Rate, RateLimiter, TokenBucket, rate_limiter
from .rules import TOPIC_ACTIONS, ANYONE, Access, Decision, Rule, Rules, authorizer, topic_resource

__all__ = [
    "ANONYMOUS", "ANYONE", "AUTHENTICATED", "TOPIC_ACTIONS", "Access", "Decision", "JWTVerifier",
    "LOGGER_NAME", "Policy", "Principal", "Rate", "RateLimiter", "Rule", "Rules",
    "TokenBucket", "TokenError", "audit", "authorizer", "bearer_token", "fingerprint",
    "rate_limiter", "topic_resource",
]
