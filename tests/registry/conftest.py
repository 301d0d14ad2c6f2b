"""Fixtures of the registry tests: a fake clock and every implementation.

To run the contract suite against a new implementation, add one line to
IMPLEMENTATIONS: a factory taking the pytest request (for other fixtures,
e.g. ``request.getfixturevalue("etcd_endpoint")``) and the fake clock.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest

from zmicro.registry import EmbeddedRegistry, EtcdRegistry, MemoryRegistry, Registry

from ..helpers import UNIX_START, FakeClock


@dataclass(frozen=True)
class Impl:
    make: Callable[[pytest.FixtureRequest, FakeClock], Registry]
    # Expiry follows the injected clock (etcd's leases follow the server's).
    fake_clock: bool = True


IMPLEMENTATIONS: dict[str, Impl] = {
    "memory": Impl(lambda request, clock: MemoryRegistry(clock=clock)),
    "embedded": Impl(
        lambda request, clock: EmbeddedRegistry(
            request.getfixturevalue("tmp_path") / "registry", clock=clock, poll_interval=0.02
        )
    ),
    "etcd": Impl(
        lambda request, clock: EtcdRegistry(
            request.getfixturevalue("etcd_endpoint"), prefix=request.getfixturevalue("etcd_prefix")
        ),
        fake_clock=False,
    ),
}


@pytest.fixture
def clock() -> FakeClock:
    """Unix seconds: the embedded registry's clock is a wall clock (expiry times it writes are epoch seconds)."""
    return FakeClock(UNIX_START)


@pytest.fixture(params=sorted(IMPLEMENTATIONS))
def impl(request) -> Impl:
    return IMPLEMENTATIONS[request.param]


@pytest.fixture
def registry(request, impl, clock):
    reg = impl.make(request, clock)
    yield reg
    reg.close()


@pytest.fixture
def fake_clock_registry(registry, impl):
    """The registry, for tests of expiry driven by the fake clock (only
    backends whose expiry follows it get these tests: see below; etcd's
    leases follow its server and have real-time tests in test_etcd.py)."""
    assert impl.fake_clock
    return registry


def pytest_collection_modifyitems(config, items):
    """Tests of fake-clock expiry are not generated for backends whose
    expiry follows a server's clock (deselected, not skipped)."""
    keep, drop = [], []
    for item in items:
        callspec = getattr(item, "callspec", None)
        impl = callspec.params.get("impl") if callspec else None
        if (impl in IMPLEMENTATIONS and "fake_clock_registry" in item.fixturenames
                and not IMPLEMENTATIONS[impl].fake_clock):
            drop.append(item)
        else:
            keep.append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
