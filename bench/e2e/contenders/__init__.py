"""The contenders of the end-to-end benchmark, as run.py sees them.

A contender is an echo server and a client, each its own process, described
by a :class:`Contender`: how to check that it can run (``probe``), the server
command for a port, and the client command for a mode, size and run
parameters. Clients print one JSON line and write raw int64 ns samples (see
``harness.py``; the C program follows the same conventions).

Adding one: write its module next to the others (a Python module calls
``harness.run(...)``; a C variant adds flags to ``bench/c/``), then add one
line to :data:`CONTENDERS`. run.py needs no change unless the contender
brings a new target.

Families: ``plaintext`` contenders are compared with each other, ``secure``
ones with each other (and each with its plaintext counterpart, ``plain``:
what the security costs that stack in the same run). A secure contender
also has a ``plaintext_cmd``: a client of its server without the security,
which the driver runs once after the health check and which must get no
answer (exit status 3), or the contender is not what it claims.

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
    plain: str = ""              # secure: its plaintext counterpart's name

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

    def plaintext_cmd(self, env: Env, port: int,
                      params: RunParams) -> list[str] | None:
        """Secure contenders: a ping of the server without the security
        (exit status 0: it answered; 3: no answer). None: no such check."""
        return None


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

    def plaintext_cmd(self, env: Env, port: int,
                      params: RunParams) -> list[str] | None:
        if self.family != "secure":
            return None
        return self.client_cmd(env, port, params) + ["--plaintext"]


@dataclass
class TlsContender(PythonContender):
    """A TLS side: its probe makes a self-signed certificate in the
    benchmark's own directory, where its server and clients read it."""

    def environ(self, env: Env) -> dict[str, str]:
        return {"BENCH_TLS_DIR": str(env.build / "tls")}


@dataclass
class ZmicroContender(PythonContender):
    """A zmicro side: the service registers itself, so its registry goes to
    a directory of the benchmark's own, not the user's; so does the key store
    (keys, trusted keys, MAC secrets: ``ZMICRO_HOME``), which the secure
    contenders create on their first run and which run.py empties at the
    start of each run."""

    def environ(self, env: Env) -> dict[str, str]:
        home = env.build / "zmicro-home"
        # XDG_CONFIG_HOME too: should a zmicro build ignore ZMICRO_HOME and
        # fall back to the XDG config dir, it still lands in the build dir,
        # never in the user's ~/.config.
        return {"ZMICRO_REGISTRY_DIR": str(env.build / "registry"),
                "ZMICRO_HOME": str(home),
                "XDG_CONFIG_HOME": str(home / "xdg-config")}


@dataclass
class CContender(Contender):
    """bench/c/zmq_pingpong.c with the libzmq pyzmq loaded. With ``curve``,
    over CurveZMQ: the probe makes a server and a client key pair (the same
    libzmq's ``zmq_curve_keypair``), handed to the processes in the
    environment, not on the command line."""

    server_pattern: str = ""
    client_pattern: str = ""
    curve: bool = False
    keys: dict[str, str] = field(default_factory=dict, repr=False)

    def _run(self, env: Env, *args: str) -> tuple[str | None, dict]:
        proc = subprocess.run([str(env.pingpong), "--lib", str(env.libzmq),
                               *args], capture_output=True, text=True,
                              timeout=30)
        if proc.returncode != 0:
            return (_last_line(proc.stderr)
                    or f"zmq_pingpong {' '.join(args)} failed"), {}
        return None, json.loads(proc.stdout)

    def probe(self, env: Env) -> tuple[str | None, dict]:
        if env.pingpong is None:
            return f"zmq_pingpong did not build: {env.pingpong_error}", {}
        if env.libzmq is None:
            return "pyzmq's libzmq not found", {}
        why, info = self._run(env, "version")
        if why or not self.curve:
            return why, info
        if not info.get("curve"):
            return "this libzmq has no CURVE (zmq_has(\"curve\") is 0)", info
        for side in ("server", "client"):
            why, pair = self._run(env, "keypair")
            if why:
                return why, info
            self.keys[f"PP_CURVE_{side.upper()}_PUBLIC"] = pair["public"]
            self.keys[f"PP_CURVE_{side.upper()}_SECRET"] = pair["secret"]
        info["security"] = "curve, no client allowlist (no ZAP handler)"
        return None, info

    def environ(self, env: Env) -> dict[str, str]:
        return dict(self.keys)

    def _prefix(self, env: Env) -> list[str]:
        return [str(env.pingpong), "--lib", str(env.libzmq)]

    def _flags(self) -> list[str]:
        return ["--curve"] if self.curve else []

    def server_cmd(self, env: Env, port: int) -> list[str]:
        return self._prefix(env) + ["server", "--pattern", self.server_pattern,
                                    "--bind", f"tcp://127.0.0.1:{port}",
                                    *self._flags()]

    def client_cmd(self, env: Env, port: int, params: RunParams,
                   curve: bool | None = None) -> list[str]:
        flags = self._flags() if curve is None else (["--curve"] if curve else [])
        return self._prefix(env) + ["client", "--pattern", self.client_pattern,
                                    "--connect", f"tcp://127.0.0.1:{port}",
                                    *flags, *params.flags()]

    def plaintext_cmd(self, env: Env, port: int,
                      params: RunParams) -> list[str] | None:
        return self.client_cmd(env, port, params, curve=False) if self.curve \
            else None


# In report order. The first latency contender is the ratio base of the
# latency tables (c-reqrep); "c-dealer" is the base of the throughput tables.
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
    ZmicroContender("zmicro-async-uvloop", "plaintext", ("throughput",),
                    "`zmicro-async` on uvloop's event loop (the same client "
                    "code; `uvloop.run`)",
                    module="zmicro_async_uvloop"),
    # Secure: the first latency contender is the base of the secure latency
    # tables (c-reqrep-curve); c-dealer-curve of the secure throughput tables.
    CContender("c-reqrep-curve", "secure", ("latency",),
               "`c-reqrep` over CurveZMQ (`zmq_pingpong --curve`: "
               "ZMQ_CURVE_SERVER + keys from `zmq_curve_keypair`); curve, no "
               "client allowlist (no ZAP handler: libzmq accepts any client key)",
               plain="c-reqrep", server_pattern="rep", client_pattern="req",
               curve=True),
    CContender("c-dealer-curve", "secure", ("latency", "throughput"),
               "`c-dealer` over CurveZMQ, same keys and settings as "
               "`c-reqrep-curve`; 64 in flight for throughput",
               plain="c-dealer", server_pattern="router",
               client_pattern="dealer", curve=True),
    TlsContender("grpcio-tls", "secure", ("latency", "throughput"),
                 "`grpcio` over TLS: `ssl_server_credentials` / "
                 "`ssl_channel_credentials(root_certificates=…)`, grpc's "
                 "default TLS settings, a self-signed EC P-256 certificate "
                 "for 127.0.0.1 made at run time",
                 plain="grpcio", module="grpcio_tls"),
    ZmicroContender("zmicro-secure-sync", "secure", ("latency",),
                    "`zmicro-sync` with zmicro's defaults (no `insecure=`): "
                    "CurveZMQ, enforced client allowlist, a MAC on every "
                    "message; key store in `bench/build/e2e/zmicro-home`",
                    plain="zmicro-sync", module="zmicro_secure_sync"),
    ZmicroContender("zmicro-secure-async", "secure", ("latency", "throughput"),
                    "`zmicro-async` with zmicro's defaults, as "
                    "`zmicro-secure-sync`",
                    plain="zmicro-async", module="zmicro_secure_async"),
    ZmicroContender("zmicro-secure-async-uvloop", "secure", ("throughput",),
                    "`zmicro-secure-async` on uvloop's event loop",
                    plain="zmicro-async-uvloop", module="zmicro_secure_async_uvloop"),
]

LATENCY_BASE = "c-reqrep"
# The transport's ceiling, as the throughput targets are stated (issue 9);
# the plain pyzmq loop is a row like the others.
THROUGHPUT_BASE = "c-dealer"
# family -> (latency base, throughput base)
BASES = {"plaintext": (LATENCY_BASE, THROUGHPUT_BASE),
         "secure": ("c-reqrep-curve", "c-dealer-curve")}


def by_name() -> dict[str, Contender]:
    return {c.name: c for c in CONTENDERS}
