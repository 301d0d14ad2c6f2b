"""``zmicro health`` and ``zmicro run``, against real services: in the test
process (health, with a private embedded registry the CLI reads too) and
in processes the CLI spawns (run). Waits are generous; no test asserts a
duration; ports are free ones chosen by the system."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import zmicro
from zmicro import health
from zmicro.registry import EmbeddedRegistry, Node, ServiceRecord

from ..processes import InProcess
from .conftest import CLI_TIMEOUT, START_TIMEOUT, cli_env, private_dir, run_cli, stop_process


@pytest.fixture
def registry_dir(tmp_path_factory):
    return private_dir(tmp_path_factory, "registry")


@pytest.fixture
def registry(registry_dir):
    reg = EmbeddedRegistry(registry_dir)
    yield reg
    reg.close()


@pytest.fixture
def nodes(registry):
    """nodes(n) starts n nodes of "checked" in this process."""
    running = []

    def start(n):
        for _ in range(n):
            svc = zmicro.Service("checked", version="2.0", registry=registry)
            svc.handler("C.Echo")(lambda req, ctx: req)
            running.append(InProcess(svc))
        return [r.svc for r in running]

    yield start
    for r in running:
        r.stop()


def rows(result):
    assert result.stderr == "" or "error" not in result.stderr, result.stderr
    return {row["address"]: row for row in json.loads(result.stdout)}


def test_health_lists_every_node(nodes, registry_dir):
    a, b = nodes(2)
    env = cli_env(registry_dir)
    result = run_cli("health", "checked", "--json", env=env)
    assert result.returncode == 0, result.stderr
    found = rows(result)
    assert set(found) == {a.address, b.address}
    assert {r["status"] for r in found.values()} == {health.SERVING}
    assert {r["node"] for r in found.values()} == {a.stats()["node"], b.stats()["node"]}

    b.set_serving(False)
    result = run_cli("health", "checked", env=env)  # the table
    assert result.returncode == 0, result.stderr  # one node still serves
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["NODE", "VERSION", "ADDRESS", "STATUS"]
    status = {line.split()[2]: line.split()[3] for line in lines[1:]}
    assert status == {a.address: "SERVING", b.address: "NOT_SERVING"}

    a.set_serving(False)
    result = run_cli("health", "checked", "--json", env=env)
    assert result.returncode == 1  # no node serves
    assert {r["status"] for r in rows(result).values()} == {health.NOT_SERVING}


def test_health_of_an_unreachable_node(registry, registry_dir):
    """A node in the registry that nobody answers for (an address nothing
    listens on: bound then closed, so the port is free)."""
    import zmq
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.ROUTER)
    sock.bind("tcp://127.0.0.1:*")
    address = sock.getsockopt_string(zmq.LAST_ENDPOINT)
    sock.close(0)
    record = ServiceRecord(name="ghost", version="1",
                           nodes=(Node(id="ghost-1", address=address),))
    registry.register(record, ttl=60)
    result = run_cli("health", "ghost", "--json", "--timeout", "1", env=cli_env(registry_dir))
    assert result.returncode == 1
    row = rows(result)[address]
    assert row["status"] in ("UNAVAILABLE", "DEADLINE_EXCEEDED") and row["error"]


def test_health_of_an_unknown_service(registry_dir):
    result = run_cli("health", "nobody", env=cli_env(registry_dir))
    assert result.returncode == 1
    assert "not registered" in result.stderr


# -- run -------------------------------------------------------------------------

APP = '''
import os
import zmicro

service = zmicro.Service("runner", version="1.0.0", ttl=5)

@service.handler("Runner.Pid")
def pid(req, ctx):
    return os.getpid()

empty = zmicro.Service("empty")   # no handlers: fails to start
not_a_service = 42
'''


@pytest.fixture
def app_dir(tmp_path):
    (tmp_path / "runapp.py").write_text(textwrap.dedent(APP))
    return tmp_path


def start_run(app_dir, registry_dir, *args):
    env = cli_env(registry_dir)
    return subprocess.Popen([sys.executable, "-m", "zmicro", "run", *args], cwd=app_dir,
                            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_nodes(registry, name, n, proc):
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        found = [node for r in registry.get(name) for node in r.nodes]
        if len(found) == n:
            return found
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_process(proc)
            pytest.fail(f"{n} nodes never registered ({found}): {proc.stderr.read()}")
        time.sleep(0.05)


def test_run_workers_each_their_own_node(app_dir, registry_dir, registry):
    proc = start_run(app_dir, registry_dir, "runapp:service", "--workers", "2")
    try:
        found = wait_nodes(registry, "runner", 2, proc)
        addresses = {n.address for n in found}
        assert len(addresses) == 2
        with zmicro.Client(registry=registry, timeout=30) as client:
            pids = {client.call("runner", "Runner.Pid", None, address=a) for a in addresses}
        assert len(pids) == 2 and proc.pid not in pids  # two worker processes
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(CLI_TIMEOUT) == 0, proc.stderr.read()
        assert [n for r in registry.get("runner") for n in r.nodes] == []  # deregistered
        for pid in pids:  # the workers are gone (the parent reaped them)
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)
    finally:
        stop_process(proc)


def test_run_one_worker_with_an_address(app_dir, registry_dir, registry):
    proc = start_run(app_dir, registry_dir, "runapp:service", "--address", "tcp://127.0.0.1:*")
    try:
        (node,) = wait_nodes(registry, "runner", 1, proc)
        with zmicro.Client(registry=registry, timeout=30) as client:
            assert client.call("runner", "Runner.Pid", None) == proc.pid  # in-process
        proc.send_signal(signal.SIGINT)
        assert proc.wait(CLI_TIMEOUT) == 0, proc.stderr.read()
        assert registry.get("runner") == []
    finally:
        stop_process(proc)


def test_a_failing_worker_fails_the_run(app_dir, registry_dir):
    proc = start_run(app_dir, registry_dir, "runapp:empty", "--workers", "2")
    try:
        assert proc.wait(CLI_TIMEOUT) == 1
        assert "has no handlers" in proc.stderr.read()
    finally:
        stop_process(proc)


@pytest.mark.parametrize("args, message", [
    (["runapp:service", "--workers", "2", "--address", "tcp://127.0.0.1:5555"], "cannot share"),
    (["runapp:service", "--workers", "2", "--address", "ipc:///tmp/x"], "cannot share"),
    (["runapp:service", "--address", "udp://x"], "not tcp://"),
    (["runapp:service", "--workers", "0"], "workers"),
    (["runapp", ], "MODULE:SERVICE"),
    (["nosuchmodule:service"], "cannot import"),
    (["runapp:missing"], "no attribute"),
    (["runapp:not_a_service"], "not a zmicro.Service"),
])
def test_run_usage_errors(app_dir, registry_dir, args, message):
    result = subprocess.run([sys.executable, "-m", "zmicro", "run", *args], cwd=app_dir,
                            env=cli_env(registry_dir), capture_output=True, text=True,
                            stdin=subprocess.DEVNULL, timeout=CLI_TIMEOUT)
    assert result.returncode == 2
    assert message in result.stderr
