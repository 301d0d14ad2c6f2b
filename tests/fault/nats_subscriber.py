"""A queue-group member in its own process, for the NATS fault tests.

Usage: nats_subscriber.py URL TOPIC QUEUE OUT_FILE MODE
Appends each delivery's data (one line, hex) to OUT_FILE, flushed, then acks
it (MODE "ack") or holds it unended for ever (MODE "hold"). Prints READY
once subscribed.
"""

from __future__ import annotations

import sys
import threading

from zmicro.broker.base import SubscribeOptions
from zmicro.broker.nats import NatsBroker


def main() -> None:
    url, topic, queue, out_path, mode = sys.argv[1:6]
    out = open(out_path, "a", buffering=1)
    lock = threading.Lock()
    held = []

    def on_delivery(d) -> None:
        with lock:
            out.write(d.data.hex() + "\n")
            out.flush()
        if mode == "ack":
            d.ack()
        else:
            held.append(d)

    broker = NatsBroker(url)
    broker.subscribe(topic, on_delivery,
                     SubscribeOptions(queue=queue, max_in_flight=64, ack_wait=2.0))
    print("READY", url, flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
