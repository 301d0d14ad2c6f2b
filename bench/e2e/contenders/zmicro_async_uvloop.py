"""zmicro's AsyncClient on uvloop's event loop: ``zmicro_async.py`` with
``loop="uvloop"``, plaintext (``insecure=True``)."""

from __future__ import annotations

from harness import run

from contenders import zmicro_async as base
from contenders import zmicro_service as svc

if __name__ == "__main__":
    run(probe=lambda: base.probe(loop="uvloop"), server=svc.server,
        latency=lambda args, body: base.latency(args, body, loop="uvloop"),
        throughput=lambda args, body: base.throughput(args, body, loop="uvloop"),
        ping=lambda args, body: base.ping(args, body, loop="uvloop"),
        info=svc.info)
