"""nats-server restarts under load (JetStream, file storage): every publish
that returned is delivered, and the subscriptions resume by themselves
(reconnect, stream and consumer made sure of again, pulls again).

Both a clean stop (SIGTERM) and a crash (SIGKILL): nats-server 2.9 writes
a message to its store file before the PubAck (flush in place), so a
process crash loses nothing acknowledged (a power loss may: no fsync).
"""

from __future__ import annotations

import os
import threading

import pytest

from zmicro.broker.base import SubscribeOptions
from zmicro.broker.nats import NatsBroker
from zmicro.errors import Code, RPCError

from ..helpers import eventually
from ..nats_server import NatsServer


class Publisher(threading.Thread):
    """Publishes numbered events; an UNAVAILABLE publish is retried with the
    same event id, as an application would; `returned` holds what returned."""

    def __init__(self, broker: NatsBroker, topic: str) -> None:
        super().__init__(daemon=True)
        self.broker, self.topic = broker, topic
        self.returned: list[bytes] = []
        self.retries = 0
        self.stopping = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        i = 0
        try:
            while not self.stopping.is_set():
                data, event_id = f"event-{i}".encode(), os.urandom(16)
                while True:
                    try:
                        self.broker.publish(self.topic, data, event_id=event_id, timeout=2.0)
                        break
                    except RPCError as e:
                        if e.code != Code.UNAVAILABLE:
                            raise
                        self.retries += 1
                self.returned.append(data)
                i += 1
        except BaseException as e:  # noqa: BLE001 - reported by the test
            self.error = e


@pytest.mark.parametrize("how", ["stop", "kill"])
def test_restart_under_load_loses_nothing(tmp_path, how):
    server = NatsServer(tmp_path / "nats")
    server.start()
    topic = "fault.restart"
    handled: set[bytes] = set()
    lock = threading.Lock()

    def on_delivery(d) -> None:
        with lock:
            handled.add(d.data)
        d.ack()

    try:
        with NatsBroker(server.url) as sub_broker, NatsBroker(server.url) as pub_broker:
            sub_broker.subscribe(topic, on_delivery, SubscribeOptions(queue="g"))
            publisher = Publisher(pub_broker, topic)
            publisher.start()
            eventually(lambda: len(publisher.returned) >= 200, "load before the restart")
            if how == "kill":
                server.kill()
            else:
                server.stop()
            server.start()
            before = len(publisher.returned)
            eventually(lambda: len(publisher.returned) >= before + 200 or publisher.error,
                       "load after the restart", timeout=60)
            publisher.stopping.set()
            publisher.join(30)
            assert publisher.error is None, publisher.error
            returned = set(publisher.returned)
            eventually(lambda: returned <= handled, "every returned publish handled",
                       timeout=60)
            print(f"published {len(returned)}, {publisher.retries} retried publishes, "
                  f"handled {len(handled)}")
    finally:
        server.cleanup()
