"""Micro benchmarks of the selectors (core/selector.pyx): one pick per
round, for every strategy at 10 / 1,000 / 10,000 nodes, without a filter
(``Balancer.pick()``) and with one (``pick(subset(version, metadata))``:
the filter's cache lookup included, and a Python lambda around both, so the
filtered rows slightly overstate the cost).

Nodes alternate versions ``1.0`` / ``2.0`` and zones ``eu`` / ``us``; the
filter (version 1.0, zone eu) keeps a quarter of them. Every node has one
latency sample, so peak-EWMA picks compute real costs (and read the clock).
SELECT_HASH picks with a fixed key. Rows have no C counterpart.
"""

from __future__ import annotations

import pytest

from zmicro import _core

SIZES = (10, 1_000, 10_000)
STRATEGIES = {
    "random": _core.SELECT_RANDOM,
    "round_robin": _core.SELECT_ROUND_ROBIN,
    "p2c": _core.SELECT_P2C,
    "peak_ewma": _core.SELECT_PEAK_EWMA,
    "hash": _core.SELECT_HASH,
}
VERSION = "1.0"
FILTER = {"zone": "eu"}


def _balancer(strategy: int, n: int) -> _core.Balancer:
    b = _core.Balancer(strategy, seed=42)
    b.update(
        (f"tcp://10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}:9000",
         ("1.0", "2.0")[i & 1], {"zone": ("eu", "eu", "us", "us")[i & 3]}, None)
        for i in range(n))
    for node in b.nodes():
        b.begin(node)
        b.end(node, 0.001 + (hash(node.address) % 100) * 1e-5)
    return b


@pytest.mark.parametrize("filtered", [False, True], ids=["all", "filter"])
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("name", list(STRATEGIES))
def test_select_pick(benchmark, name, n, filtered):
    b = _balancer(STRATEGIES[name], n)
    key = "user-4242" if name == "hash" else None
    op = f"select.{name}.{n}" + (".filter" if filtered else "")
    benchmark.group = f"select {n}"
    what = "pick(subset(version, metadata))" if filtered else "pick()"
    benchmark.extra_info.update(
        op=op, impl="zmicro",
        label=f"select `{name}`, {n:,} nodes: `{what}`")
    if filtered:
        subset, pick = b.subset, b.pick
        node = benchmark(lambda: pick(subset(VERSION, FILTER), key))
        assert node.version == VERSION and node.metadata == FILTER
        assert len(b.subset(VERSION, FILTER)) == (n + 3) // 4
    else:
        node = benchmark(b.pick, None, key)
        assert node is not None
