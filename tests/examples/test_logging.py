"""What a started service says: one INFO line with where it serves, from
the README's example (``python examples/greeter.py``) and from ``zmicro
run``; allowed connections and calls write nothing at INFO (the audit
log's allows are DEBUG), and nothing else is printed, at exit included."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

import zmicro
from zmicro.registry import EmbeddedRegistry

from ..processes import START_TIMEOUT, STOP_TIMEOUT, private_dir

ROOT = Path(__file__).resolve().parents[2]
SERVING = re.compile(r"zmicro: (\S+) \S* ?serving .* at (tcp://127\.0\.0\.1:\d+)$")

APP = '''
import zmicro

service = zmicro.Service("logged", version="1.0.0")

@service.handler("Logged.Echo")
def echo(req, ctx):
    return req
'''


class Lines:
    """A process's stderr, line by line, read by a thread (no blocking read
    in the test, no pipe left full)."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc = proc
        self.seen: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, pattern: re.Pattern[str]) -> re.Match[str]:
        while True:
            try:
                line = self._queue.get(timeout=START_TIMEOUT)
            except queue.Empty:
                pytest.fail(f"no line matching {pattern.pattern!r} in time: {self.seen}")
            if line is None:
                pytest.fail(f"the process ended without {pattern.pattern!r}: {self.seen}")
            self.seen.append(line)
            if (found := pattern.search(line)) is not None:
                return found

    def rest(self) -> list[str]:
        """Every line until the process closes stderr."""
        while (line := self._queue.get(timeout=STOP_TIMEOUT)) is not None:
            self.seen.append(line)
        return self.seen


def env_for(registry_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("ZMICRO_REGISTRY", None)
    env["ZMICRO_REGISTRY_DIR"] = str(registry_dir)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def serve_call_stop(argv: list[str], *, cwd: Path, registry_dir: Path, name: str,
                    endpoint: str, request) -> list[str]:
    """Start a service process, wait for its serving line, call it twice,
    SIGTERM it; its stderr lines."""
    proc = subprocess.Popen(argv, cwd=cwd, env=env_for(registry_dir), stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        lines = Lines(proc)
        found = lines.wait_for(SERVING)
        assert found.group(1) == name
        registry = EmbeddedRegistry(registry_dir)
        try:
            [record] = registry.get(name)
            assert [n.address for n in record.nodes] == [found.group(2)]
            with zmicro.Client(registry=registry, timeout=30) as client:
                for _ in range(2):  # a connection and two calls, allowed
                    client.call(name, endpoint, request)
        finally:
            registry.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(STOP_TIMEOUT) == 0
        return lines.rest()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def assert_quiet(lines: list[str]) -> None:
    assert len([line for line in lines if SERVING.search(line)]) == 1, lines
    assert not [line for line in lines if '"allow"' in line], lines
    assert not [line for line in lines
                if "Traceback" in line or "Error in sys.excepthook" in line], lines


@pytest.fixture
def registry_dir(tmp_path_factory) -> Path:
    return private_dir(tmp_path_factory, "registry")


def test_the_greeter_example_says_where_it_serves(registry_dir):
    lines = serve_call_stop([sys.executable, str(ROOT / "examples" / "greeter.py")],
                            cwd=ROOT, registry_dir=registry_dir, name="greeter",
                            endpoint="Greeter.Hello", request={"name": "Ada"})
    assert_quiet(lines)


def test_zmicro_run_says_where_it_serves(tmp_path, registry_dir):
    (tmp_path / "loggedapp.py").write_text(textwrap.dedent(APP))
    lines = serve_call_stop([sys.executable, "-m", "zmicro", "run", "loggedapp:service"],
                            cwd=tmp_path, registry_dir=registry_dir, name="logged",
                            endpoint="Logged.Echo", request={"x": 1})
    assert_quiet(lines)
