"""zmicro's AsyncClient on uvloop's event loop with zmicro's defaults
(CurveZMQ, the client allowlist, a MAC on every message):
``zmicro_secure_async.py`` with ``loop="uvloop"``."""

from __future__ import annotations

from harness import run

from contenders import zmicro_async as base
from contenders import zmicro_service as svc

if __name__ == "__main__":
    run(probe=lambda: base.probe(secure=True, loop="uvloop"),
        server=lambda args: svc.server(args, secure=True),
        latency=lambda args, body: base.latency(args, body, secure=True, loop="uvloop"),
        throughput=lambda args, body: base.throughput(args, body, secure=True, loop="uvloop"),
        ping=lambda args, body: base.ping(args, body, secure=True, loop="uvloop"),
        plaintext_ping=svc.plaintext_ping,
        info=lambda: svc.info(secure=True))
