"""Embedded events survive a subscriber's SIGKILL: the publisher retries
the events the dead member held on the other member of its group, and
nothing is lost (issue 12's fault test, embedded side).

Two subscriber processes in one queue group; their handlers wait for a
gate file, so each holds the events it got, unacked. One is killed; once
the gate opens, every event was handled by the survivor (handled ⊇ all).
"""

from __future__ import annotations

import signal

from zmicro.broker.embedded import EmbeddedBroker
from zmicro.registry import EmbeddedRegistry

from ..events.test_embedded import TOPIC, Sub, frame, members
from ..helpers import eventually
from ..processes import private_dir

N = 20


def test_a_killed_subscriber_holding_events_is_replaced_by_the_other_member(
        tmp_path_factory, tmp_path):
    registry_dir = private_dir(tmp_path_factory, "events-kill")
    gate = tmp_path / "gate"
    victim = Sub(registry_dir, tmp_path / "victim", "--queue", "g", "--gate", str(gate))
    survivor = Sub(registry_dir, tmp_path / "survivor", "--queue", "g", "--gate", str(gate))
    broker = EmbeddedBroker(EmbeddedRegistry(str(registry_dir)), backoff=(0.2,))
    try:
        eventually(lambda: members(registry_dir, "g") == 2, "both members registered")
        for n in range(N):
            data, event_id = frame(n)
            broker.publish(TOPIC, data, event_id=event_id, timeout=30)
        # Both members hold events (round robin), none acked: the gate is shut.
        eventually(lambda: survivor.held() and victim.held(), "both members holding events")
        victim.signal(signal.SIGKILL)
        victim.proc.wait(30)
        gate.touch()
        eventually(lambda: set(survivor.handled()) >= set(range(N)),
                   "every event handled by the survivor")
        eventually(lambda: broker.stats()["pending"] == 0, "the outbox empty")
        assert victim.handled() == []  # it never got past the gate
        assert broker.dead_letters() == []
    finally:
        broker.close(linger=0)
        victim.stop()
        survivor.stop()

