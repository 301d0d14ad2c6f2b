"""The audit log: one JSON line per security decision.

Every decision of zmicro's security interceptors (authorization, rate
limits, token checks; the transport's handshake and MAC checks) goes through
:func:`audit` to the logger ``"zmicro.audit"``: denials at WARNING, allows at
DEBUG (a service logging at INFO, as ``zmicro run`` does, would otherwise
write a line per connection and per call), so that an allowed call costs one
level check and nothing else unless DEBUG is on. Route the logger to a file or a collector to
keep the trail; each message is one JSON object::

    {"time": "2025-01-31T12:00:00.123Z", "decision": "deny",
     "reason": "rule:admins-only", "principal": "ada", "key": "7c862f02",
     "service": "billing", "endpoint": "Billing.Refund"}

The log never holds a secret: no token, MAC, nonce, password or full public
key (``key`` is an 8-hex-digit fingerprint prefix). :func:`audit` enforces
it rather than trusting its callers: a field named like a credential is a
programming error (``ValueError``), only JSON scalars are accepted as values
(no bytes, no objects whose ``repr`` might carry one), and any string that
looks like a JWT is replaced by ``"[redacted]"`` — callers log names chosen
by the peer (service, endpoint), and a peer may put a token there.
"""

from __future__ import annotations

import json
import logging
import math
import re
from datetime import datetime, timezone
from typing import Any

from .principal import Principal

__all__ = ["LOGGER_NAME", "audit", "log"]

LOGGER_NAME = "zmicro.audit"
log = logging.getLogger(LOGGER_NAME)

_DECISIONS = {"allow": logging.DEBUG, "deny": logging.WARNING}
_FIXED = ("time", "decision", "reason", "principal", "key", "service", "endpoint")

# Field names that announce a secret. Matched as substrings, case-insensitive,
# so "access_token", "X-Authorization" and "mac_key" are all refused.
_SECRET_NAME = re.compile(
    r"token|secret|authori[sz]ation|passw|credential|cookie|private|signature|nonce"
    r"|(?:^|[^a-z])mac(?:$|[^a-z])|bearer|api_?key|session",
    re.IGNORECASE,
)
# A JWS compact serialization: base64url JSON header ('{"' encodes as "eyJ"),
# payload and (possibly empty) signature. Matched anywhere in a value.
_JWT_LIKE = re.compile(r"eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*")
_REDACTED = "[redacted]"


def audit(decision: str, reason: str, *, principal: Principal | None, service: str,
          endpoint: str, **fields: Any) -> None:
    """Log one security decision as a JSON line on ``"zmicro.audit"``.

    ``decision`` is ``"allow"`` (logged at DEBUG) or ``"deny"`` (WARNING);
    ``reason`` a short code such as ``"rule:<id>"``, ``"default"``,
    ``"rate-limit"``, ``"invalid-token"``, ``"mac"``, ``"handshake"``.
    ``principal`` (None: anonymous) appears as its subject and key
    fingerprint prefix. Extra ``fields`` are added as they are; their values
    must be str, int, float, bool or None.

    Raises ValueError for an unknown decision, a field named like a secret
    (token, secret, authorization, password, MAC, nonce...) or one that
    would replace a fixed field; TypeError for a value of another type. The
    checks run even when the line is not emitted, so a bad call site fails
    in its first test rather than on the day audit logging is switched on.
    """
    level = _DECISIONS.get(decision)
    if level is None:
        raise ValueError(f"decision must be 'allow' or 'deny', not {decision!r}")
    for name, value in fields.items():
        if name in _FIXED:
            raise ValueError(f"audit field {name!r} is set by audit() itself")
        if _SECRET_NAME.search(name):
            raise ValueError(f"audit field {name!r} is named like a secret; "
                             "the audit log never holds one")
        if value is not None and not isinstance(value, (str, int, float)):
            raise TypeError(f"audit field {name!r} must be a str, number, bool or None, "
                            f"not {type(value).__name__}")
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"audit field {name!r} is not finite (not JSON)")
    if not log.isEnabledFor(level):
        return
    record: dict[str, Any] = {
        "time": datetime.now(timezone.utc).isoformat(timespec="milliseconds")
                .replace("+00:00", "Z"),
        "decision": decision,
        "reason": reason,
        "principal": principal.subject if principal is not None else "anonymous",
        "key": principal.short_fingerprint if principal is not None else "",
        "service": service,
        "endpoint": endpoint,
    }
    record.update(fields)
    for name, value in record.items():
        if isinstance(value, str) and "eyJ" in value:
            record[name] = _JWT_LIKE.sub(_REDACTED, value)
    # ensure_ascii keeps the line plain ASCII; json escapes newlines, so a
    # peer-chosen endpoint name cannot forge a second log line.
    log.log(level, json.dumps(record, ensure_ascii=True))
