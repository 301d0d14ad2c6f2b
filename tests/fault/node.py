"""A node of the fault suite's service, in its own process.

    python tests/fault/node.py NAME REGISTRY [TTL]

REGISTRY is a directory (the embedded registry) or an etcd URL
(``etcd://127.0.0.1:PORT``). Prints ``READY <address>`` once serving.
Endpoints: ``Work.Echo`` answers at once with its pid; ``Work.Sleep``
sleeps ``seconds`` first (a blocking handler).
"""

from __future__ import annotations

import os
import sys
import time

import zmicro

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[2]))
from tests.processes import announce_ready  # noqa: E402
from tests.fault.registries import open_registry  # noqa: E402


def main() -> None:
    name, where = sys.argv[1:3]
    ttl = float(sys.argv[3]) if len(sys.argv) > 3 else 2.0
    svc = zmicro.Service(name, version="1.0.0", registry=open_registry(where), ttl=ttl)
    pid = os.getpid()

    @svc.handler("Work.Echo")
    def echo(req, ctx):
        return {"pid": pid, "req": req}

    @svc.handler("Work.Sleep", blocking=True)
    def sleep(req: dict, ctx):
        time.sleep(req["seconds"])
        return {"pid": pid, "slept": req["seconds"]}

    announce_ready(svc)
    svc.run()


if __name__ == "__main__":
    main()
