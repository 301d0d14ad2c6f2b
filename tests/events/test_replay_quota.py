"""``@svc.subscriber(..., replay_quota=N)``: how many event ids the
subscription remembers at once (acked ones, each for ``max_age``, and the
ones in progress), its EventInbox's bound; beyond it an event is nacked
with the backoff (``replay_full``: temporary, never a dead letter).
Validated like the other options: a ValueError naming the field. What
the bound does (event N+1 nacked, not dead-lettered) is
test_core_replay_full.py's, for N = 1 and 2."""

from __future__ import annotations

import pytest

import zmicro
from zmicro.broker.memory import MemoryBroker
from zmicro.events import REPLAY_QUOTA, REPLAY_QUOTA_MAX
from zmicro.registry import MemoryRegistry

TOPIC = "order.created"


def test_replay_quota_defaults_to_the_inbox_default(zmicro_keys):
    svc = zmicro.Service("billing", broker=MemoryBroker(), registry=MemoryRegistry())
    svc.subscriber(TOPIC)(lambda ev, ctx: None)
    assert svc._subscribers[TOPIC].replay_quota == REPLAY_QUOTA == 1_500_000


@pytest.mark.parametrize("bad", [0, -1, 1.5, 10.0, True, "10", None, REPLAY_QUOTA_MAX + 1])
def test_a_bad_replay_quota_is_refused_naming_it(bad, zmicro_keys):
    svc = zmicro.Service("billing", broker=MemoryBroker(), registry=MemoryRegistry())
    with pytest.raises(ValueError, match="replay_quota"):
        svc.subscriber(TOPIC, replay_quota=bad)
    svc.subscriber(TOPIC, replay_quota=REPLAY_QUOTA_MAX)(lambda ev, ctx: None)  # the largest
