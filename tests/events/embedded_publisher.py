"""A publisher of the embedded broker, in its own process.

    python tests/events/embedded_publisher.py REGISTRY_DIR TOPIC ACKED FIRST COUNT

Publishes events {"n": FIRST} .. {"n": FIRST + COUNT - 1} one at a time,
each waiting for every group's ack (``publish_wait``), and appends n to the
ACKED file once it was acked (flushed: a SIGKILL loses nothing written).
Prints ``READY -`` first.
"""

from __future__ import annotations

import itertools
import sys

import msgspec

from zmicro import _core
from zmicro.broker.embedded import EmbeddedBroker
from zmicro.registry import EmbeddedRegistry
from zmicro.security import Security


def main() -> None:
    registry, topic, acked_path = sys.argv[1:4]
    first, count = int(sys.argv[4]), int(sys.argv[5])
    security = Security.resolve()
    broker = EmbeddedBroker(EmbeddedRegistry(registry))
    ids = itertools.count(1)
    print("READY -", flush=True)
    with open(acked_path, "a", buffering=1) as acked:
        for n in range(first, first + count):
            data, event_id = _core.encode_event(
                topic, msgspec.msgpack.encode({"n": n}), secrets=security.secrets,
                request_id=next(ids), principal=security.public_key)
            report = broker.publish_wait(topic, data, event_id=event_id, timeout=30)
            if report is not None and report.ok:
                acked.write(f"{n}\n")
                acked.flush()
    broker.close()


if __name__ == "__main__":
    main()
