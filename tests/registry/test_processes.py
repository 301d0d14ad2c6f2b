"""The embedded registry across processes: what a second terminal sees.

The SIGKILL test is the one that waits for real time (a 1 s TTL), with a
generous bound; nothing here asserts how long anything took.
"""

from __future__ import annotations

import logging
import os
import selectors
import signal
import subprocess
import sys

import pytest

from zmicro.registry import EmbeddedRegistry, EventType

from ..helpers import eventually

BOUND = 15.0  # seconds a change may take to show on a loaded machine

# argv: directory, service name, ttl ("none" or seconds). Registers one node,
# prints "ready", then heartbeats every ttl/3 like a Service, or just waits.
# SIGTERM deregisters and exits, as a graceful shutdown does.
CHILD = r"""
import os, signal, sys, threading
from zmicro.registry import EmbeddedRegistry, Node, ServiceRecord

path, name, ttl = sys.argv[1], sys.argv[2], sys.argv[3]
ttl = None if ttl == "none" else float(ttl)
reg = EmbeddedRegistry(path)
record = ServiceRecord(name=name, version="1",
                       nodes=(Node(id=f"{name}-{os.getpid()}", address="tcp://127.0.0.1:1"),))

def on_term(signum, frame):
    reg.deregister(record)
    reg.close()
    os._exit(0)

signal.signal(signal.SIGTERM, on_term)
reg.register(record, ttl=ttl)
print("ready", flush=True)
stop = threading.Event()
while True:
    stop.wait(ttl / 3 if ttl else 3600)
    if ttl:
        reg.register(record, ttl=ttl)
"""

# argv: directory, worker number, rounds. Registers, changes and removes its
# nodes as fast as it can, so readers meet files being replaced and removed.
CHURN = r"""
import sys
from zmicro.registry import EmbeddedRegistry, Node, ServiceRecord, Endpoint

path, worker, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
reg = EmbeddedRegistry(path)
for i in range(rounds):
    for n in range(3):
        record = ServiceRecord(
            name="Churn", version=str(n % 2),
            metadata={"round": str(i), "pad": "x" * (i % 50)},
            endpoints=tuple(Endpoint(name=f"E.m{k}") for k in range(i % 4)),
            nodes=(Node(id=f"w{worker}-{n}", address="tcp://127.0.0.1:1"),),
        )
        reg.register(record, ttl=60)
        if (i + n) % 3 == 0:
            reg.deregister(record)
print("done", flush=True)
"""


def spawn(script: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", script, *args],
        stdout=subprocess.PIPE,
        text=True,
    )


def readline(proc: subprocess.Popen, timeout: float = 120.0) -> str:
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout):
            proc.kill()
            pytest.fail(f"child said nothing within {timeout} s")
    return proc.stdout.readline().strip()


@pytest.fixture
def children():
    procs: list[subprocess.Popen] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stdout.close()


def test_killed_service_disappears_after_its_ttl(tmp_path, children):
    with EmbeddedRegistry(tmp_path, poll_interval=0.05) as reg, reg.watch("Crashy") as watcher:
        proc = spawn(CHILD, str(tmp_path), "Crashy", "1")
        children.append(proc)
        assert readline(proc) == "ready"
        [record] = reg.get("Crashy")
        assert record.nodes[0].id == f"Crashy-{proc.pid}"
        first = watcher.next(timeout=BOUND)
        assert first is not None and first.type == EventType.CREATE

        proc.send_signal(signal.SIGKILL)
        proc.wait()
        eventually(lambda: reg.get("Crashy") == [], "the killed node expires", timeout=BOUND)
        assert not list(tmp_path.rglob("*.json"))  # the reader removed the dead file

        # A starved child may have expired and come back before the kill;
        # whatever the watcher saw must end with the node gone.
        alive = 1
        while alive:
            event = watcher.next(timeout=BOUND)
            assert event is not None, "no DELETE after the node expired"
            alive += {EventType.CREATE: 1, EventType.DELETE: -1}.get(event.type, 0)


def test_terminated_service_is_gone_at_once(tmp_path, children):
    with EmbeddedRegistry(tmp_path) as reg:
        proc = spawn(CHILD, str(tmp_path), "Polite", "none")
        children.append(proc)
        assert readline(proc) == "ready"
        assert len(reg.get("Polite")) == 1
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == 0
        assert reg.get("Polite") == []  # no TTL to wait for: it deregistered
        assert os.listdir(tmp_path) == []


def test_readers_never_see_partial_files(tmp_path, children, caplog):
    workers = [spawn(CHURN, str(tmp_path), str(w), "150") for w in range(2)]
    children.extend(workers)
    reads = 0
    with EmbeddedRegistry(tmp_path) as reg, caplog.at_level(logging.DEBUG, logger="zmicro.registry"):
        while any(p.poll() is None for p in workers) or reads < 20:
            for record in reg.get("Churn") + reg.list():
                assert record.name == "Churn" and record.nodes
                assert int(record.metadata["round"]) < 150
            reads += 1
    assert [readline(p) for p in workers] == ["done", "done"]
    assert [p.wait() for p in workers] == [0, 0]
    assert "ignored" not in caplog.text, caplog.text
    # Every worker ends having registered or removed each of its nodes; what is
    # left parses and matches the last round.
    with EmbeddedRegistry(tmp_path) as reg:
        for record in reg.get("Churn"):
            assert record.metadata["round"] == "149"
