"""A queue-group member is SIGKILLed while it holds unacked events: JetStream
redelivers them (after ack_wait) to the other member, nothing is lost."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

from zmicro.broker.base import SubscribeOptions
from zmicro.broker.nats import NatsBroker

from ..helpers import eventually
from ..processes import ServiceProcess

SUBSCRIBER = Path(__file__).with_name("nats_subscriber.py")


def test_sigkill_member_holding_events(tmp_path, nats_url, nats_topic):
    held_file = tmp_path / "held.txt"
    holder = ServiceProcess([sys.executable, str(SUBSCRIBER), nats_url, nats_topic, "g",
                             str(held_file), "hold"], env=dict(os.environ), name="holder")
    with NatsBroker(nats_url) as broker:
        try:
            sent = {os.urandom(8) for _ in range(20)}
            for data in sent:
                broker.publish(nats_topic, data, event_id=os.urandom(16))

            def held() -> set[bytes]:
                return {bytes.fromhex(x) for x in held_file.read_text().split()}

            eventually(lambda: held() == sent, "the holder holds every event")
            acked: set[bytes] = set()
            lock = threading.Lock()

            def on_delivery(d) -> None:
                with lock:
                    acked.add(d.data)
                d.ack()

            broker.subscribe(nats_topic, on_delivery,
                             SubscribeOptions(queue="g", ack_wait=2.0))
            holder.proc.kill()
            holder.proc.wait(30)
            eventually(lambda: acked == sent, "every held event redelivered to the other member",
                       timeout=60)
        finally:
            holder.stop()
