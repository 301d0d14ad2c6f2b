"""A flood of idle TCP connections from someone with no key (issue 10.1).

Each accepted connection holds one descriptor of the service until its
handshake completes or times out. With a soft limit of 1024 open files,
1,100 idle connections once exhausted them: libzmq's accept loop spun on
EMFILE, new clients were not served, and the registry heartbeat failed
until the node expired. Now a Service raises its soft limit to the hard
one (logged), drops handshakes that do not finish within
``handshake_timeout``, and its heartbeat retries every tick.

Both cases run: a hard limit above the flood (the raise is enough), and a
hard limit of 1024 too (nothing to raise: the short handshake timeout
frees the descriptors, and the heartbeat outlasts the shortage). The CPU
bound is generous: it tells "idle" from "spinning", nothing finer.
"""

from __future__ import annotations

import os
import resource
import socket
import sys
import threading
import time
from pathlib import Path

import pytest

import zmicro
from zmicro.registry import EmbeddedRegistry

from ..helpers import eventually
from ..processes import ServiceProcess, private_dir

NODE = Path(__file__).with_name("flood_node.py")
FLOOD = 1100
CPU_WINDOW = 3.0      # seconds of wall time the service's CPU time is measured over
CPU_BOUND = 0.30      # of one core: spinning is ~1.0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid` (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def idle_connections(address: str, n: int) -> list[socket.socket]:
    """`n` TCP connections to `address` that never say a word, made one
    after the other as a flood would (a burst of SYNs would mostly be
    dropped by the kernel's accept queue and trickle in over minutes). A
    connect the server cannot take in time is left pending."""
    host, port = address.removeprefix("tcp://").rsplit(":", 1)
    socks = []
    for _ in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(0.2)
        try:
            s.connect((host, int(port)))
        except (socket.timeout, BlockingIOError):
            pass  # the server's queue is full: its kernel retries the SYN
        socks.append(s)
    return socks


class Presence:
    """Polls the registry from a thread: was the node ever missing?"""

    def __init__(self, registry: EmbeddedRegistry, name: str) -> None:
        self.registry, self.name = registry, name
        self.missing: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            if not self.registry.get(self.name):
                self.missing.append(time.monotonic())

    def stop(self) -> list[float]:
        self._stop.set()
        self._thread.join(10)
        return self.missing


@pytest.fixture
def own_limit():
    """The test process holds the flood's client ends: it needs the room."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = FLOOD + 512
    if soft < need:
        if hard != resource.RLIM_INFINITY and hard < need and os.geteuid() != 0:
            pytest.skip(f"needs {need} open files in the test process (hard limit {hard})")
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, max(hard, need)))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.parametrize("hard", ["high", 1024])
def test_a_flood_of_idle_connections_starves_nothing(tmp_path_factory, own_limit, hard):
    _soft, own_hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == "high":
        hard = max(own_hard, 4 * FLOOD) if own_hard != resource.RLIM_INFINITY else 4 * FLOOD
        if hard > own_hard and os.geteuid() != 0:
            pytest.skip(f"the hard limit {own_hard} is below the flood and cannot be raised")
        handshake = "default"  # the raise alone must do it
    else:
        handshake = "1.0"  # nothing to raise: the timeout frees the descriptors
    directory = private_dir(tmp_path_factory, "flood-registry")
    proc = ServiceProcess([sys.executable, str(NODE), str(directory), "1024", str(hard),
                           handshake], env=dict(os.environ), name="flooded")
    registry = EmbeddedRegistry(directory)
    presence = Presence(registry, "flooded")
    flood: list[socket.socket] = []
    try:
        if hard > 1024:
            assert "raised the open files limit (RLIMIT_NOFILE) from 1024 to" in proc.log
        else:
            assert "open files limit is 1024" in proc.log  # warned: nothing to raise
        flood = idle_connections(proc.address, FLOOD)
        with zmicro.Client(registry=registry, timeout=5) as client:
            eventually(lambda: client.call("flooded", "Flood.Echo", 7) == 7,
                       "a legitimate call is served under the flood", timeout=30, interval=0.2)
            before = cpu_seconds(proc.proc.pid)
            time.sleep(CPU_WINDOW)
            used = (cpu_seconds(proc.proc.pid) - before) / CPU_WINDOW
            assert used < CPU_BOUND, f"the flooded service used {used:.0%} of a core"
            assert client.call("flooded", "Flood.Echo", 8) == 8
        time.sleep(5)  # longer than the TTL: a lost heartbeat would show now
        assert presence.stop() == [], "the node left the registry during the flood"
        assert registry.get("flooded")
    finally:
        presence.stop()
        for s in flood:
            s.close()
        log = proc.stop()
        registry.close()
    assert "Traceback" not in log, log
