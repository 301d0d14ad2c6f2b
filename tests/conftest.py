"""Shared test configuration.

Hypothesis runs without deadlines everywhere (a loaded 2-core CI machine
makes per-example timings meaningless); the "ci" profile, chosen when CI is
set, also prints the reproduction blob of any failure.
"""

from __future__ import annotations

import os

import pytest
import zmq
from hypothesis import HealthCheck, settings

settings.register_profile(
    "dev",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "ci",
    deadline=None,
    max_examples=200,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


@pytest.fixture
def zctx():
    """A private zmq Context, terminated (sockets closed) after the test."""
    ctx = zmq.Context()
    yield ctx
    ctx.destroy(linger=0)


@pytest.fixture
def unused_tcp_port() -> int:
    """A loopback port free right now (the OS picks it; never a fixed one)."""
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
