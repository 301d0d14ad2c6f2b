"""Helpers of the selector tests (pure core: no sockets, no sleeping)."""

from __future__ import annotations

from zmicro import _core


def records(*addresses, version="1.0", metadata=None, public_key=None):
    """(address, version, metadata, public_key) records for Balancer.update."""
    return [(a, version, dict(metadata or {}), public_key) for a in addresses]


def addrs(n: int, prefix: str = "tcp://10.0.0.") -> list[str]:
    return [f"{prefix}{i}:9000" for i in range(n)]


def balancer(strategy, addresses, **kw):
    b = _core.Balancer(strategy, **kw)
    b.update(records(*addresses))
    return b


STRATEGIES = [
    _core.SELECT_RANDOM,
    _core.SELECT_ROUND_ROBIN,
    _core.SELECT_P2C,
    _core.SELECT_PEAK_EWMA,
    _core.SELECT_HASH,
]
