"""A subscriber of the embedded broker, in its own process.

    python tests/events/embedded_node.py REGISTRY_DIR TOPIC RECORD [options]

A zmicro.Service (name ``--name``, default "sub") with one subscriber of
TOPIC (queue group ``--queue``, else broadcast). Each event's body is a
msgpack map ``{"n": int}``; the handler appends ``"<n> <pid>"`` to the
RECORD file, a line per handled event (flushed: a SIGKILL loses nothing
written). ``--gate FILE``: the (blocking) handler first appends n to
``RECORD.held``, then waits until FILE exists, so events stay unacked. ``--deny-publish``: the service's policy
grants ``publish`` on the topic to no role but "publisher" (the test
session's key has none), so every event is refused PERMISSION_DENIED.
Prints ``READY <address>`` once serving.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import zmicro
from zmicro.auth import Policy
from zmicro.auth.rules import Rule
from zmicro.registry import EmbeddedRegistry

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.processes import announce_ready  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("registry")
    parser.add_argument("topic")
    parser.add_argument("record")
    parser.add_argument("--queue")
    parser.add_argument("--name", default="sub")
    parser.add_argument("--gate")
    parser.add_argument("--insecure", action="store_true")
    parser.add_argument("--deny-publish", action="store_true")
    parser.add_argument("--ttl", type=float, default=2.0)
    args = parser.parse_args()

    policy = None
    if args.deny_publish:
        policy = Policy(rules=[Rule(f"zmicro.topic.{args.topic}:publish", "publisher")])
    svc = zmicro.Service(args.name, registry=EmbeddedRegistry(args.registry), ttl=args.ttl,
                         insecure=True if args.insecure else None, policy=policy)
    pid = os.getpid()
    record = open(args.record, "a", buffering=1)  # noqa: SIM115 - open for the process' life
    held = open(args.record + ".held", "a", buffering=1)  # noqa: SIM115

    @svc.subscriber(args.topic, queue=args.queue, blocking=bool(args.gate))
    def handle(event: dict, ctx: zmicro.EventContext) -> None:
        if args.gate:
            held.write(f"{event['n']} {pid}\n")
            held.flush()
            while not os.path.exists(args.gate):
                time.sleep(0.01)
        record.write(f"{event['n']} {pid}\n")
        record.flush()

    announce_ready(svc)
    svc.run()


if __name__ == "__main__":
    main()
