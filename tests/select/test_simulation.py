"""One slow node among three (10x latency) under overlapping calls, as a
discrete-event simulation on a fake clock: a call every 1 ms, 2 ms on a
fast node, 20 ms on the slow one. Round robin and random send the slow node
its third; P2C sees its calls pile up and steers away; peak-EWMA sees its
latency and nearly stops using it (it still probes as its EWMA decays)."""

from __future__ import annotations

import heapq

import pytest

from zmicro import _core

from ..helpers import FakeClock
from .conftest import addrs, balancer

CALLS = 3000


def slow_share(strategy, seed, gap=0.001, fast=0.002, slow=0.020):
    clock = FakeClock(0.0)
    names = addrs(3)
    b = balancer(strategy, names, seed=seed, clock=clock)
    pending = []  # (end time, sequence, node, latency)
    to_slow = 0
    for i in range(CALLS):
        t = i * gap
        while pending and pending[0][0] <= t:
            end, _, n, latency = heapq.heappop(pending)
            clock.set(end)
            b.end(n, latency)
        clock.set(t)
        n = b.pick()
        b.begin(n)
        latency = slow if n.address == names[0] else fast
        heapq.heappush(pending, (t + latency, i, n, latency))
        to_slow += n.address == names[0]
    return to_slow / CALLS


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_one_slow_node_among_three(seed):
    assert slow_share(_core.SELECT_ROUND_ROBIN, seed) == pytest.approx(1 / 3, abs=1 / CALLS)
    assert abs(slow_share(_core.SELECT_RANDOM, seed) - 1 / 3) < 0.04  # ~4.6 sigma
    p2c = slow_share(_core.SELECT_P2C, seed)
    ewma = slow_share(_core.SELECT_PEAK_EWMA, seed)
    assert 0 < p2c < 0.15  # least outstanding: still used, far less
    assert ewma < 0.02
    assert ewma < p2c
