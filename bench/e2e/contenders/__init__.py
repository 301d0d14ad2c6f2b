"""The contenders of the end-to-end benchmark, as run.py sees them.

A contender is an echo server and a client, each its own process, described
by a :class:`Contender`: how to check that it can run (``probe``), the server
command for a port, and the client command for a mode, size and run
parameters. Clients print one JSON line and write raw int64 ns samples (see
``harness.py``; the C program follows the same conventions).

Adding one (say a secure variant, family "secure"): write its module next to
the others (a Python module calls ``harness.run(...)``; a C variant adds
flags to ``bench/c/``), then add one line to :data:`CONTENDERS`. run.py needs
no change unless the contender brings a new target.

Only the standard library is imported here: the driver must run (and report
a contender unavailable) when a contender's packages are missing.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

E2E = Path(__file__).resolve().parent.parent


@dataclass
class Env:
    """What the contenders' commands need from the driver."""

    python: str                  # interpreter for the Python sides
    build: Path                  # bench/build/e2e
    libzmq: str | None = None    # the libzmq file pyzmq loaded
    pingpong: Path | None = None  # built bench/c/zmq_pingpong.c
    pingpong_error: str = ""     # why it did not build


@dataclass
class RunParams:
    """One client run."""

    mode: str                    # latency | throughput | ping
    size: int
    iterations: int = 10000
    warmup: int = 1000
    window: int = 64
    seconds: float = 2.0
    warmup_seconds: float = 0.3
    timeout_ms: int = 5000
    out: str | None = None

    def flags(self) -> list[str]:
        out = ["--mode", self.mode, "--size", str(self.size),
               "--iterations", str(self.iterations), "--warmup", str(self.warmup),
               "--window", str(self.window), "--seconds", str(self.seconds),
               "--warmup-seconds", str(self.warmup_seconds),
               "--timeout-ms", str(self.timeout_ms)]
        if self.out:
            out += ["--out", self.out]
        return out


@dataclass
class Contender:
    name: str
    family: str                  # plaintext | secure: compared within a family
    modes: tuple[str, ...]       # latency and/or throughput
    summary: str                 # one line for the report's legend

    def probe(self, env: Env) -> tuple[str | None, dict]:
        """(reason it cannot run or None, info for the report)."""
        raise NotImplementedError

    def server_cmd(self, env: Env, port: int) -> list[str]:
        raise NotImplementedError

    def client_cmd(self, env: Env, port: int, params: RunParams) -> list[str]:
        raise NotImplementedError

    def environ(self, env: Env) -> dict[str, str]:
        """Variables added to the environment of its server and clients."""
        return {}


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else ""


@dataclass
class PythonContender(Contender):
    """Server and client from one module under contenders/, run with
    ``python -m contenders.<module>`` (cwd bench/e2e)."""

    module: str = ""

    def _cmd(self, env: Env, *args: str) -> list[str]:
        return [env.python, "-u", "-m", f"contenders.{self.module}", *args]

    def probe(self, env: Env) -> tuple[str | None, dict]:
        proc = subprocess.run(self._cmd(env, "probe"), cwd=E2E,
                              env={**os.environ, **self.environ(env)},
                              capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            return (_last_line(proc.stderr) or f"probe exited {proc.returncode}",
                    {})
        try:
            return None, json.loads(proc.stdout or "{}")
        except json.JSONDecodeError:
            return None, {}

    def server_cmd(self, env: Env, port: int) -> list[str]:
        return self._cmd(env, "server", "--port", str(port))

    def client_cmd(self, env: Env, port: int, params: RunParams) -> list[str]:
        return self._cmd(env, "client", "--port", str(port), *params.flags())


@dataclass
class ZmicroContender(PythonContender):
    """A zmicro side: the service registers itself, so its registry goes to
    a directory of the benchmark's own, not the user's."""

    def environ(self, env: Env) -> dict[str, str]:
        return {"ZMICRO_REGISTRY_DIR": str(env.build / "registry")}


@dataclass
class CContender(Contender):
    """bench/c/zmq_pingpong.c with the libzmq pyzmq loaded."""

    server_pattern: str = ""
    client_pattern: str = ""
    extra: list[str] = field(default_factory=list)  # e.g. a later --curve

    def probe(self, env: Env) -> tuple[str | None, dict]:
        if env.pingpong is None:
            return f"zmq_pingpong did not build: {env.pingpong_error}", {}
        if env.libzmq is None:
            return "pyzmq's libzmq not found", {}
        proc = subprocess.run([str(env.pingpong), "--lib", env.libzmq, "version"],
                              capture_output=True, text=True, timeout=30)
        if proc.returncode != 0:
            return _last_line(proc.stderr) or "zmq_pingpong version failed", {}
        return None, json.loads(proc.stdout)

    def _prefix(self, env: Env) -> list[str]:
        return [str(env.pingpong), "--lib", str(env.libzmq)]

    def server_cmd(self, env: Env, port: int) -> list[str]:
        return self._prefix(env) + ["server", "--pattern", self.server_pattern,
                                    "--bind", f"tcp://127.0.0.1:{port}",
                                    *self.extra]

    def client_cmd(self, env: Env, port: int, params: RunParams) -> list[str]:
        return self._prefix(env) + ["client", "--pattern", self.client_pattern,
                                    "--connect", f"tcp://127.0.0.1:{port}",
                                    *self.extra, *params.flags()]


# In report order. The first latency contender is the ratio base of the
# latency tables (c-reqrep); "pyzmq" is the base of the throughput tables.
CONTENDERS: list[Contender] = [
    CContender("c-reqrep", "plaintext", ("latency",),
               "C, libzmq REQ/REP ping-pong (`bench/c/zmq_pingpong.c`): the "
               "transport's limit",
               server_pattern="rep", client_pattern="req"),
    CContender("c-dealer", "plaintext", ("latency", "throughput"),
               "C, libzmq DEALER/ROUTER, frames [8-byte id, body]; 64 in "
               "flight for throughput",
               server_pattern="router", client_pattern="dealer"),
    PythonContender("pyzmq", "plaintext", ("latency", "throughput"),
                    "plain pyzmq DEALER/ROUTER loop, blocking "
                    "`send_multipart`/`recv_multipart` of [8-byte id, body]",
                    module="pyzmq_loop"),
    PythonContender("grpcio", "plaintext", ("latency", "throughput"),
                    "grpcio unary call of raw bytes (generic handler, identity "
                    "serializers), insecure channel, sync server with a "
                    "10-thread pool; throughput via `.future()`",
                    module="grpcio_unary"),
    ZmicroContender("zmicro-sync", "plaintext", ("latency",),
                    "zmicro `Client.call`, octet-stream echo, `insecure=True`, "
                    "server `svc.run()`",
                    module="zmicro_sync"),
    ZmicroContender("zmicro-async", "plaintext", ("latency", "throughput"),
                    "zmicro `AsyncClient.call` (a Future), octet-stream echo, "
                    "`insecure=True`, server `svc.run()`",
                    module="zmicro_async"),
]

LATENCY_BASE = "c-reqrep"
THROUGHPUT_BASE = "pyzmq"


def by_name() -> dict[str, Contender]:
    return {c.name: c for c in CONTENDERS}
