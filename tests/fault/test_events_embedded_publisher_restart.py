"""An embedded publisher killed mid-stream (SIGKILL): the subscribers are
unaffected (still registered, still serving), every event the dead
publisher saw acked was handled, and a new publisher delivers (issue 12's
"a publisher restarts", embedded side). What the dead one held unacked is
lost, as embedded.py's docstring says: not asserted either way.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path

from zmicro.broker.embedded import EmbeddedBroker
from zmicro.registry import EmbeddedRegistry

from ..events.test_embedded import TOPIC, Sub, _numbers, frame, members
from ..helpers import eventually
from ..processes import ServiceProcess, private_dir

PUBLISHER = Path(__file__).parents[1] / "events" / "embedded_publisher.py"


def test_a_publisher_restarting_leaves_subscribers_unaffected(tmp_path_factory, tmp_path):
    registry_dir = private_dir(tmp_path_factory, "events-restart")
    one = Sub(registry_dir, tmp_path / "one", "--queue", "g")
    two = Sub(registry_dir, tmp_path / "two", "--queue", "g")
    acked = tmp_path / "acked"
    publisher = ServiceProcess([sys.executable, str(PUBLISHER), str(registry_dir), TOPIC,
                                str(acked), "0", "100000"], name="publisher")
    broker = None
    try:
        eventually(lambda: members(registry_dir, "g") == 2, "both members registered")
        eventually(lambda: len(_numbers(acked)) >= 20, "the publisher's first acks")
        publisher.signal(signal.SIGKILL)
        publisher.proc.wait(30)
        seen_acked = set(_numbers(acked))
        handled = lambda: set(one.handled()) | set(two.handled())  # noqa: E731
        assert seen_acked <= handled()
        # The subscribers did not notice: alive and registered.
        assert one.proc.poll() is None and two.proc.poll() is None
        assert members(registry_dir, "g") == 2
        broker = EmbeddedBroker(EmbeddedRegistry(str(registry_dir)))
        fresh = range(1_000_000, 1_000_020)
        for n in fresh:
            data, event_id = frame(n)
            assert broker.publish_wait(TOPIC, data, event_id=event_id, timeout=30).ok
        assert set(fresh) <= handled()
    finally:
        if broker is not None:
            broker.close(linger=0)
        publisher.stop()
        one.stop()
        two.stop()
