"""A client over a process's life: after ``os.fork()`` (the child reopens
it: new context, sockets and registry watch; the parent's is untouched),
and at exit (nothing printed, ever: the README's one-liner, a service
stopped by SIGTERM while its own client is open, a forked child)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap

import pytest

import zmicro

from ..processes import in_child
from .conftest import ServiceProcess

def env_for(registry_dir) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("ZMICRO_REGISTRY", None)
    env["ZMICRO_REGISTRY_DIR"] = str(registry_dir)
    return env


def run_python(code: str, registry_dir) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, env=env_for(registry_dir), timeout=120)


# -- fork ----------------------------------------------------------------------


def test_a_client_used_before_fork_works_in_the_child(services, client):
    assert client.call("greeter-sync", "Greeter.Hello", {"name": "parent"}) == {
        "message": "Hello parent"}

    def child() -> bytes:
        return client.call("greeter-sync", "Greeter.Hello", {"name": "child"})["message"].encode()

    assert in_child(child) == b"Hello child"
    # The child neither used nor closed the parent's sockets.
    assert client.call("greeter-sync", "Greeter.Hello", {"name": "again"}) == {
        "message": "Hello again"}
    assert client.stats()["open"] >= 1


def test_a_client_with_interceptors_works_in_the_child(services, registry):
    seen: list[str] = []

    def interceptor(call, proceed):
        seen.append(call.endpoint)
        return proceed(call)

    with zmicro.Client(registry=registry, timeout=10, interceptors=[interceptor]) as client:
        client.call("greeter-sync", "Greeter.Hello", {"name": "parent"})

        def child() -> bytes:
            reply = client.call("greeter-sync", "Greeter.Hello", {"name": "child"})
            return reply["message"].encode() + f" {len(seen)}".encode()

        assert in_child(child) == b"Hello child 2"


def test_an_async_client_used_before_fork_works_in_the_child(services, registry):
    client = zmicro.AsyncClient(registry=registry, timeout=10)

    async def hello(name: str) -> dict:
        return await client.call("greeter-async", "Greeter.Hello", {"name": name})

    try:
        assert asyncio.run(hello("parent")) == {"message": "Hello parent"}
        assert in_child(lambda: asyncio.run(hello("child"))["message"].encode()) == b"Hello child"
    finally:
        client.close()


def test_a_closed_client_stays_closed_in_the_child(registry):
    client = zmicro.Client(registry=registry)
    client.close()

    def child() -> bytes:
        try:
            client.call("greeter-sync", "Greeter.Hello", {"name": "child"}, timeout=2)
        except zmicro.RPCError as exc:
            return exc.code.name.encode()
        return b"it answered"

    assert in_child(child) == b"UNAVAILABLE"


# -- exit ------------------------------------------------------------------------


def test_the_readme_one_liner_prints_nothing_at_exit(services, registry_dir):
    # Three times: what printed at exit depended on where the watch threads were.
    for _ in range(3):
        result = run_python("""
            import zmicro
            print(zmicro.Client().call("greeter-sync", "Greeter.Hello", {"name": "Ada"}))
        """, registry_dir)
        assert result.returncode == 0, result.stderr
        assert result.stdout == "{'message': 'Hello Ada'}\n"
        assert result.stderr == ""


def test_a_forked_child_that_exits_prints_nothing(services, registry_dir):
    result = run_python("""
        import os, sys, zmicro
        client = zmicro.Client()
        client.call("greeter-sync", "Greeter.Hello", {"name": "parent"})
        pid = os.fork()
        if pid == 0:
            print(client.call("greeter-sync", "Greeter.Hello", {"name": "child"}), flush=True)
            sys.exit(0)  # a normal exit: atexit hooks, finalization
        assert os.waitpid(pid, 0)[1] == 0
        print(client.call("greeter-sync", "Greeter.Hello", {"name": "parent"}))
    """, registry_dir)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "{'message': 'Hello child'}\n{'message': 'Hello parent'}\n"
    assert result.stderr == ""


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_sigterm_to_a_service_holding_a_client_prints_nothing(services, registry_dir, client,
                                                              kind):
    # The service's own client (app.py's, made at import) calls "down" for
    # Nested*: its registry watch threads run when SIGTERM comes.
    name = f"exit-{kind}"
    proc = ServiceProcess(kind, name, registry_dir, downstream="down")
    try:
        endpoint = "Greeter.NestedAsync" if kind == "async" else "Greeter.NestedInline"
        client.call(name, endpoint, {})
    finally:
        log = proc.stop()
    assert proc.proc.returncode == 0
    assert log == ""
