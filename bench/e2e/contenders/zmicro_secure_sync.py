"""zmicro with its defaults (secure after the security release: CurveZMQ,
an enforced client allowlist, a MAC on every message), sync client: the
code of ``zmicro_sync.py`` with no ``insecure=`` anywhere. Unavailable while
zmicro still says it has no transport security."""

from __future__ import annotations

from harness import run

from contenders import zmicro_service as svc
from contenders import zmicro_sync as base

if __name__ == "__main__":
    run(probe=lambda: base.probe(secure=True),
        server=lambda args: svc.server(args, secure=True),
        latency=lambda args, body: base.latency(args, body, secure=True),
        ping=lambda args, body: base.ping(args, body, secure=True),
        plaintext_ping=svc.plaintext_ping,
        info=lambda: svc.info(secure=True))
