#!/usr/bin/env python3
"""End-to-end benchmark: zmicro against C libzmq, a plain pyzmq loop and
grpcio, in one run on one machine, echo over tcp loopback, every server and
client its own process; plaintext, and secure (C libzmq over CURVE, grpcio
over TLS, zmicro with its secure defaults).

    python bench/e2e/run.py --smoke      # CI: < 60 s, checks the harness only
    python bench/e2e/run.py              # full run, prints the tables
    python bench/e2e/run.py --record     # full run, then update RESULTS.md

Latency: sequential calls (one in flight), per-call p50 / p99 and the ratio
to C libzmq REQ/REP. Throughput: 64 calls in flight, calls/s, per-call
p50 / p99 and the ratio to C libzmq DEALER/ROUTER. Then the targets, as
ratios measured in the same run. The secure family gets sections of its own
(base: C libzmq over CURVE), with each secure contender's ratio to its
plaintext counterpart in the same run. The contenders are described in
``contenders/__init__.py``; how to read the numbers in ``bench/README.md``.

Noise: the host is shared. Contenders are measured in alternating rounds
(``--repeat``; each round rotates the order). Each row reports the median
over the rounds of each round's p50 (calls/s), with the best round's beside
it, and the median of the rounds' p99s. A ratio is the median over the
rounds of the ratio within each round (two figures taken seconds apart),
with the ratio of the two rows' best rounds beside it; targets are judged
on the median: the best round flatters whoever got a quiet moment.
"""

from __future__ import annotations

import argparse
import ctypes
import datetime
import json
import math
import os
import platform
import resource
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from array import array
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

E2E = Path(__file__).resolve().parent
BENCH = E2E.parent
ROOT = BENCH.parent
C_SOURCE = BENCH / "c" / "zmq_pingpong.c"
RESULTS = BENCH / "RESULTS.md"

sys.path.insert(0, str(E2E))
from contenders import (  # noqa: E402
    BASES, CONTENDERS, CContender, Contender, Env, RunParams, by_name)
from harness import NO_ANSWER  # noqa: E402

MODES = ("latency", "throughput")
FAMILIES = ("plaintext", "secure")
# These must run in --smoke (the baselines every comparison needs); the
# others may be reported unavailable.
SMOKE_REQUIRED = ("c-reqrep", "pyzmq", "grpcio",
                  "c-reqrep-curve", "c-dealer-curve", "grpcio-tls")
# What the design says Curve alone costs at the transport (latency, C).
CURVE_EXPECTED = (1.0, 1.35)

_SECURE = "## Secure: zmicro's defaults vs C libzmq over CURVE and grpcio over TLS"
# (family, mode) -> (heading, begin marker, end marker) in RESULTS.md
SECTIONS = {
    ("plaintext", "latency"): (
        "## End-to-end latency: zmicro vs C libzmq, pyzmq, grpcio",
        "<!-- e2e-latency:begin: written by bench/e2e/run.py --record -->",
        "<!-- e2e-latency:end -->"),
    ("plaintext", "throughput"): (
        "## Throughput",
        "<!-- e2e-throughput:begin: written by bench/e2e/run.py --record -->",
        "<!-- e2e-throughput:end -->"),
    ("secure", "latency"): (
        _SECURE,
        "<!-- e2e-secure-latency:begin: written by bench/e2e/run.py --record -->",
        "<!-- e2e-secure-latency:end -->"),
    ("secure", "throughput"): (
        _SECURE,
        "<!-- e2e-secure-throughput:begin: written by bench/e2e/run.py --record -->",
        "<!-- e2e-secure-throughput:end -->"),
}
TITLES = {("plaintext", "latency"): "End-to-end latency",
          ("plaintext", "throughput"): "Throughput",
          ("secure", "latency"): "Secure: latency",
          ("secure", "throughput"): "Secure: throughput"}


@dataclass(frozen=True)
class Target:
    """A performance target, stated as a ratio between two rows of one run
    (the rows may be of either family; the target shows in its family's
    section). Judged on the median over rounds of the per-round ratio."""

    family: str
    mode: str
    text: str                 # how the report states it
    num: str                  # contender whose value is the numerator
    den: str                  # ... and the denominator
    metric: str               # p50 | rate
    op: str                   # "<=" | ">="
    bound: float
    sizes: tuple[int, ...] = ()   # body sizes it applies to (): every size
    source: str = ""          # where it was set


# Issue 9 ("Performance") first: what the core refactor must reach.
TARGETS = [
    Target("secure", "latency",
           "zmicro-secure-sync p50 ≤ 1.15 × c-reqrep-curve p50",
           "zmicro-secure-sync", "c-reqrep-curve", "p50", "<=", 1.15,
           source="issue 9"),
    Target("plaintext", "throughput",
           "zmicro-async calls/s ≥ 0.5 × c-dealer calls/s",
           "zmicro-async", "c-dealer", "rate", ">=", 0.5, sizes=(64,),
           source="issue 9"),
    Target("secure", "throughput",
           "zmicro-secure-async calls/s ≥ 0.5 × c-dealer-curve calls/s",
           "zmicro-secure-async", "c-dealer-curve", "rate", ">=", 0.5,
           sizes=(64,), source="issue 9"),
    Target("plaintext", "throughput",
           "zmicro-async-uvloop calls/s ≥ 0.5 × c-dealer calls/s",
           "zmicro-async-uvloop", "c-dealer", "rate", ">=", 0.5, sizes=(64,),
           source="issue 9, on uvloop"),
    Target("secure", "throughput",
           "zmicro-secure-async-uvloop calls/s ≥ 0.5 × c-dealer-curve calls/s",
           "zmicro-secure-async-uvloop", "c-dealer-curve", "rate", ">=", 0.5,
           sizes=(64,), source="issue 9, on uvloop"),
    Target("plaintext", "latency", "zmicro-sync p50 ≤ 1.25 × c-reqrep p50",
           "zmicro-sync", "c-reqrep", "p50", "<=", 1.25, source="issue 9"),
    Target("plaintext", "latency", "grpcio p50 / zmicro-sync p50 ≥ 6",
           "grpcio", "zmicro-sync", "p50", ">=", 6.0),
    Target("plaintext", "latency", "zmicro-async p50 ≤ 2 × zmicro-sync p50",
           "zmicro-async", "zmicro-sync", "p50", "<=", 2.0),
    Target("secure", "latency", "grpcio-tls p50 / zmicro-secure-sync p50 ≥ 6",
           "grpcio-tls", "zmicro-secure-sync", "p50", ">=", 6.0),
]


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def percentile(sorted_values, q: float) -> float:
    """Linear interpolation between closest ranks (as run_micro.py)."""
    n = len(sorted_values)
    if n == 1:
        return float(sorted_values[0])
    pos = q * (n - 1)
    lo = math.floor(pos)
    if lo >= n - 1:
        return float(sorted_values[-1])
    frac = pos - lo
    return sorted_values[lo] + (sorted_values[lo + 1] - sorted_values[lo]) * frac


def median(values: list[float]) -> float:
    return percentile(sorted(values), 0.5)


# ---------------------------------------------------------------------------
# Setup: libzmq, the C program
# ---------------------------------------------------------------------------


def pyzmq_libzmq() -> str | None:
    """The libzmq file pyzmq loaded (its wheel bundles one under a mangled
    name in pyzmq.libs/), read from this process's own mappings."""
    import zmq  # noqa: F401
    from zmq.backend.cython import _zmq

    with open("/proc/self/maps") as maps:
        for line in maps:
            parts = line.split()
            if len(parts) >= 6 and Path(parts[5]).name.startswith("libzmq"):
                return parts[5]
    # pyzmq built with libzmq linked in: its backend module exports the API.
    return _zmq.__file__


def build_pingpong(cc: str, build: Path) -> tuple[Path | None, str]:
    exe = build / "zmq_pingpong"
    cmd = [cc, "-O2", "-std=c11", "-Wall", "-Wextra", str(C_SOURCE), "-ldl",
           "-o", str(exe)]
    log("$ " + shlex.join(cmd))
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.SubprocessError) as e:
        return None, str(e)
    if proc.returncode != 0:
        return None, proc.stderr.strip().splitlines()[-1] if proc.stderr else "?"
    if proc.stderr.strip():
        log(proc.stderr.rstrip())
    return exe, ""


# ---------------------------------------------------------------------------
# Processes
# ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


try:
    _libc = ctypes.CDLL(None, use_errno=True)
except OSError:
    _libc = None


def _child_setup() -> None:
    """In the child before exec: die with the driver (PR_SET_PDEATHSIG), so
    no server outlives a killed run."""
    if _libc is not None:
        _libc.prctl(1, signal.SIGKILL)


class ContenderFailed(Exception):
    pass


def tail(text: str, lines: int = 3) -> str:
    got = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return " / ".join(got[-lines:])


class Server:
    """A contender's server process, on a free port, killed by ``stop()``."""

    def __init__(self, contender: Contender, env: Env, logs: Path) -> None:
        self.contender = contender
        self.env = env
        self.log_path = logs / f"{contender.name}-server.log"
        self.proc: subprocess.Popen | None = None
        self.port = 0

    def start(self, ping_timeout_s: float) -> None:
        last = ""
        for _ in range(3):  # the free port may be taken meanwhile: retry
            self.port = free_port()
            cmd = self.contender.server_cmd(self.env, self.port)
            log("$ " + shlex.join(cmd) + " &")
            with open(self.log_path, "w") as logf:
                self.proc = subprocess.Popen(
                    cmd, cwd=E2E, env=self.environ(), stdin=subprocess.DEVNULL,
                    stdout=logf, stderr=subprocess.STDOUT,
                    start_new_session=True, preexec_fn=_child_setup)
            try:
                self.ping(ping_timeout_s)
                return
            except ContenderFailed as e:
                last = str(e)
                died = not self.alive()
                self.stop()
                # Retry only a server that died on its port.
                if not died or not any(
                        w in self.log_text().lower() for w in ("in use", "bind")):
                    break
        raise ContenderFailed(last)

    def environ(self) -> dict[str, str]:
        return {**os.environ, **self.contender.environ(self.env)}

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def ping(self, timeout_s: float) -> None:
        params = RunParams(mode="ping", size=64,
                           timeout_ms=int(timeout_s * 1000))
        cmd = self.contender.client_cmd(self.env, self.port, params)
        try:
            proc = subprocess.run(cmd, cwd=E2E, env=self.environ(),
                                  capture_output=True, text=True,
                                  timeout=timeout_s + 10)
            ok = proc.returncode == 0
            why = tail(proc.stderr, 1)
        except subprocess.TimeoutExpired:
            ok, why = False, "health check hung"
        if not ok or not self.alive():
            server = (f"; server exited {self.proc.returncode}: "
                      f"{tail(self.log_text(), 1)}" if not self.alive() else "")
            raise ContenderFailed(f"no answer from the server ({why}){server}")

    def plaintext_check(self, answer_expected: bool = False,
                        timeout_s: float = 1.0) -> str | None:
        """Secure contenders: a client without the security must get no
        answer from the server (else the contender is not secure, whatever
        it says). Returns how the plaintext call ended, None if the
        contender has no such check. ``answer_expected``: the contender
        already said it runs plaintext (zmicro's defaults before the
        security release), so an answer is noted, not a failure."""
        params = RunParams(mode="ping", size=64, timeout_ms=int(timeout_s * 1000))
        cmd = self.contender.plaintext_cmd(self.env, self.port, params)
        if cmd is None:
            return None
        log("$ " + shlex.join(cmd))
        try:
            proc = subprocess.run(cmd, cwd=E2E, env=self.environ(),
                                  capture_output=True, text=True,
                                  timeout=timeout_s + 30)
        except subprocess.TimeoutExpired:
            raise ContenderFailed("the plaintext check hung") from None
        if proc.returncode == 0:
            if answer_expected:
                return ("a client without the security got an answer, as "
                        "expected while the defaults are plaintext")
            raise ContenderFailed(
                "not secure: a client without the security got an answer "
                f"from the server ({tail(proc.stderr, 1) or 'no detail'})")
        if proc.returncode != NO_ANSWER:
            raise ContenderFailed("the plaintext check failed (exit "
                                  f"{proc.returncode}): {tail(proc.stderr)}")
        return ("a client without the security got no answer ("
                + tail(proc.stderr, 1) + ")")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.proc.wait(wait)
                return
            except subprocess.TimeoutExpired:
                continue


@dataclass
class Run:
    """One client run's figures."""

    p50_ns: float
    p99_ns: float
    calls: int
    rate: float               # calls / s over the timed span
    others: float = 0.0       # cores busy outside client and server (CpuWatch)
    info: dict = field(default_factory=dict)
    round: int = 0            # which of the --repeat rounds


_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


class CpuWatch:
    """How busy the host was with anything but this client and server while
    the client ran: CPU time of the whole machine (/proc/stat) minus the
    client's (rusage of waited children) and the server's (/proc/PID/stat),
    per second of wall time. Near 0 on a quiet host (kernel work for the
    loopback traffic outside the processes' own time stays in it, a few
    percent); a large value marks a round whose numbers other work shared.
    Linux only; elsewhere it reports 0."""

    @staticmethod
    def _machine() -> float:
        try:
            with open("/proc/stat") as f:
                v = [int(x) for x in f.readline().split()[1:9]]
        except (OSError, ValueError):
            return 0.0
        user, nice, system, _idle, _iowait, irq, softirq, steal = v
        return (user + nice + system + irq + softirq + steal) / _TICK

    @staticmethod
    def _process(pid: int) -> float:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / _TICK
        except (OSError, ValueError, IndexError):
            return 0.0

    @staticmethod
    def _children() -> float:
        r = resource.getrusage(resource.RUSAGE_CHILDREN)
        return r.ru_utime + r.ru_stime

    def __init__(self, server_pid: int) -> None:
        self.pid = server_pid
        self.t = time.monotonic()
        self.m = self._machine()
        self.s = self._process(server_pid)
        self.c = self._children()

    def others(self) -> float:
        wall = time.monotonic() - self.t
        used = ((self._machine() - self.m) - (self._process(self.pid) - self.s)
                - (self._children() - self.c))
        return max(used, 0.0) / wall if wall > 0 else 0.0


def run_client(server: Server, params: RunParams) -> Run:
    cmd = server.contender.client_cmd(server.env, server.port, params)
    if params.mode == "latency":
        limit = (params.warmup + params.iterations) * 0.01 + 60
    else:
        limit = params.warmup_seconds + params.seconds + 60
    log("$ " + shlex.join(cmd))
    watch = CpuWatch(server.proc.pid)
    try:
        proc = subprocess.run(cmd, cwd=E2E, env=server.environ(),
                              capture_output=True, text=True, timeout=limit,
                              preexec_fn=_child_setup)
        others = watch.others()
    except subprocess.TimeoutExpired:
        raise ContenderFailed(f"client did not finish in {limit:.0f} s") from None
    if proc.returncode != 0:
        why = tail(proc.stderr) or f"client exited {proc.returncode}"
        if not server.alive():
            why += f"; server exited: {tail(server.log_text())}"
        raise ContenderFailed(why)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        raise ContenderFailed(f"client printed no result: {tail(proc.stdout)}")
    doc = json.loads(lines[-1])
    samples = array("q")
    with open(params.out, "rb") as f:
        samples.frombytes(f.read())
    os.unlink(params.out)
    if not samples:
        raise ContenderFailed("client measured no call")
    ordered = sorted(samples)
    elapsed = doc["elapsed_ns"] / 1e9
    return Run(p50_ns=percentile(ordered, 0.5), p99_ns=percentile(ordered, 0.99),
               calls=doc["calls"], rate=doc["calls"] / elapsed if elapsed else 0,
               others=others, info=doc.get("info") or {})


# ---------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------


@dataclass
class Row:
    """A contender in one (mode, size): its runs, or why it has none."""

    contender: Contender
    runs: list[Run] = field(default_factory=list)
    failed: str = ""
    # A secure contender that ran plaintext (zmicro's defaults before the
    # security release): why. Its figures are shown, marked, and kept out of
    # met / missed and out of RESULTS.md.
    plaintext: str = ""

    @property
    def ok(self) -> bool:
        return bool(self.runs) and not self.failed

    @property
    def p50(self) -> float:
        """Median over the rounds of the round's p50."""
        return median([r.p50_ns for r in self.runs])

    @property
    def best_p50(self) -> float:
        return min(r.p50_ns for r in self.runs)

    @property
    def p99(self) -> float:
        return median([r.p99_ns for r in self.runs])

    @property
    def rate(self) -> float:
        """Median over the rounds of the round's calls/s."""
        return median([r.rate for r in self.runs])

    @property
    def best_rate(self) -> float:
        return max(r.rate for r in self.runs)

    def value(self, metric: str) -> float:
        """The row's figure: median over rounds."""
        return self.p50 if metric == "p50" else self.rate

    def best(self, metric: str) -> float:
        """The best round's figure (lowest p50, highest calls/s)."""
        return self.best_p50 if metric == "p50" else self.best_rate

    def by_round(self, metric: str) -> dict[int, float]:
        return {r.round: (r.p50_ns if metric == "p50" else r.rate)
                for r in self.runs}


def fmt_us(ns: float) -> str:
    us = ns / 1000
    return f"{us:,.0f}" if us >= 100 else f"{us:.1f}"


def fmt_rate(r: float) -> str:
    return f"{r:,.0f}"


def fmt_size(n: int) -> str:
    return f"{n // 1024} KiB" if n >= 1024 and n % 1024 == 0 else f"{n} B"


def cell(text: str, limit: int = 160) -> str:
    text = " ".join(text.split()).replace("|", "\\|")
    return text if len(text) <= limit else text[:limit - 1] + "…"


PLAINTEXT_MARK = "⚠"


def row_name(r: Row) -> str:
    return f"`{r.contender.name}`" + (f" {PLAINTEXT_MARK}" if r.plaintext else "")


def plaintext_note(rows: list[Row]) -> list[str]:
    """The footnote of a table with rows that ran plaintext."""
    marked = [r for r in rows if r.plaintext and r.ok]
    if not marked:
        return []
    names = ", ".join(f"`{r.contender.name}`" for r in marked)
    return [f"{PLAINTEXT_MARK} {names}: **not a secure measurement**: "
            f"{marked[0].plaintext}. These rows measure zmicro's plaintext "
            "defaults (the same as their plaintext counterparts) until the "
            "security release lands.", ""]


def _ok(rows: dict[str, Row], name: str) -> Row | None:
    r = rows.get(name)
    return r if r is not None and r.ok else None


def _vs_plain(r: Row, all_rows: dict[str, Row], metric: str) -> str:
    """Two cells: a secure row's plaintext counterpart's figure in the same
    run (median of rounds), and the median over rounds of the secure row's
    ratio to it."""
    plain = _ok(all_rows, r.contender.plain)
    if not plain:
        return " — | — |"
    fig = fmt_us(plain.p50) if metric == "p50" else fmt_rate(plain.rate)
    ratio = round_ratio(r, plain, metric)
    return f" {fig} | {fmt_ratio(ratio)} |"


def fmt_ratio(x: float | None) -> str:
    return f"{x:.2f}×" if x is not None else "—"


def latency_table(rows: list[Row], base_name: str,
                  all_rows: dict[str, Row], secure: bool = False) -> list[str]:
    """``all_rows``: every contender of this mode and size, so that secure
    rows can be set against their plaintext counterparts."""
    base = _ok(all_rows, base_name)
    vs = (" plaintext counterpart's p50 µs | p50 / plaintext p50 |"
          if secure else "")
    out = [f"| Contender | p50 µs (median of rounds) | best round | p99 µs "
           f"| p50 / {base_name} p50 (median of rounds) | best rounds' ratio "
           f"| p50 − {base_name} p50 µs |{vs} rounds' p50 µs (min–max) |",
           "|---|--:|--:|--:|--:|--:|--:|" + ("--:|--:|" if secure else "")
           + "---|"]
    for r in rows:
        name = row_name(r)
        if not r.ok:
            out.append(f"| {name} | — | — | — | — | — | — |"
                       f"{' — | — |' if secure else ''}"
                       f" {cell(unavailable(r))} |")
            continue
        ratio = fmt_ratio(round_ratio(r, base, "p50")) if base else "—"
        best = fmt_ratio(r.best_p50 / base.best_p50) if base else "—"
        diff = round_diff(r, base, "p50") if base else None
        plain = _vs_plain(r, all_rows, "p50") if secure else ""
        p50s = [x.p50_ns for x in r.runs]
        spread = (f"{fmt_us(min(p50s))}–{fmt_us(max(p50s))}"
                  if len(p50s) > 1 else fmt_us(p50s[0]))
        out.append(f"| {name} | {fmt_us(r.p50)} | {fmt_us(r.best_p50)} "
                   f"| {fmt_us(r.p99)} | {ratio} | {best} "
                   f"| {fmt_us(diff) if diff is not None else '—'} |{plain} "
                   f"{spread} |")
    return out


def throughput_table(rows: list[Row], base_name: str,
                     all_rows: dict[str, Row], secure: bool = False) -> list[str]:
    base = _ok(all_rows, base_name)
    vs = (" plaintext counterpart's calls/s | calls/s / plaintext calls/s |"
          if secure else "")
    out = [f"| Contender | calls/s (median of rounds) | best round "
           f"| × {base_name} (median of rounds) | best rounds' ratio |{vs} "
           "p50 µs | p99 µs | rounds' calls/s (min–max) |",
           "|---|--:|--:|--:|--:|" + ("--:|--:|" if secure else "")
           + "--:|--:|---|"]
    for r in rows:
        name = row_name(r)
        if not r.ok:
            out.append(f"| {name} | — | — | — | — |{' — | — |' if secure else ''}"
                       f" — | — | {cell(unavailable(r))} |")
            continue
        ratio = fmt_ratio(round_ratio(r, base, "rate")) if base else "—"
        best = fmt_ratio(r.best_rate / base.best_rate) if base else "—"
        plain = _vs_plain(r, all_rows, "rate") if secure else ""
        rates = [x.rate for x in r.runs]
        spread = (f"{fmt_rate(min(rates))}–{fmt_rate(max(rates))}"
                  if len(rates) > 1 else fmt_rate(rates[0]))
        out.append(f"| {name} | {fmt_rate(r.rate)} | {fmt_rate(r.best_rate)} "
                   f"| {ratio} | {best} |{plain} {fmt_us(r.p50)} "
                   f"| {fmt_us(r.p99)} | {spread} |")
    return out


def unavailable(r: Row) -> str:
    reason = r.failed or "not run"
    if r.contender.name.startswith("zmicro") and \
            not reason.startswith("not secure"):
        return f"zmicro: not yet available ({reason})"
    return f"failed: {reason}"


def round_ratio(num: Row, den: Row, metric: str) -> float | None:
    """Median over the rounds of the ratio within each round (figures taken
    seconds apart, so a slow stretch of the host hits both alike)."""
    a, b = num.by_round(metric), den.by_round(metric)
    pairs = [a[k] / b[k] for k in a if b.get(k)]
    return median(pairs) if pairs else None


def round_diff(num: Row, den: Row, metric: str) -> float | None:
    """Median over the rounds of the difference within each round."""
    a, b = num.by_round(metric), den.by_round(metric)
    diffs = [a[k] - b[k] for k in a if k in b]
    return median(diffs) if diffs else None


def target_sizes(t: Target, sizes: list[int]) -> list[int]:
    return [s for s in sizes if not t.sizes or s in t.sizes]


def targets_table(family: str, mode: str, sizes: list[int],
                  results: dict[tuple[str, int], dict[str, Row]]) -> list[str]:
    out = ["| Target | Size | Median of per-round ratios | Best rounds' ratio "
           "| Needs | Status |",
           "|---|---|--:|--:|--:|---|"]
    for t in TARGETS:
        if t.mode != mode or t.family != family:
            continue
        text = t.text + (f" ({t.source})" if t.source else "")
        for size in target_sizes(t, sizes):
            rows = results.get((mode, size), {})
            num, den = rows.get(t.num), rows.get(t.den)
            need = f"{'≤' if t.op == '<=' else '≥'} {t.bound:g}×"
            not_run = [x for x, r in ((t.num, num), (t.den, den)) if r is None]
            broken = [x for x, r in ((t.num, num), (t.den, den))
                      if r is not None and not r.ok]
            if not_run or broken:
                why = "; ".join(
                    ([f"{', '.join(broken)} unavailable"] if broken else [])
                    + ([f"{', '.join(not_run)} not selected"] if not_run else []))
                out.append(f"| {text} | {fmt_size(size)} | — | — | {need} "
                           f"| not measured ({why}) |")
                continue

            def meets(x: float) -> bool:
                return x <= t.bound if t.op == "<=" else x >= t.bound

            ratio = round_ratio(num, den, t.metric)
            best = num.best(t.metric) / den.best(t.metric)
            if ratio is None:
                out.append(f"| {text} | {fmt_size(size)} | — | {best:.2f}× "
                           f"| {need} | not measured (no round with both) |")
                continue
            status = "**met**" if meets(ratio) else "**missed**"
            if meets(best) != meets(ratio):
                status += f" (best rounds: {'met' if meets(best) else 'missed'})"
            plain = [x for x, r in ((t.num, num), (t.den, den))
                     if r.plaintext]
            if plain:
                status = (f"not a secure measurement ({PLAINTEXT_MARK} "
                          f"{', '.join(plain)} ran plaintext)")
            out.append(f"| {text} | {fmt_size(size)} | {ratio:.2f}× "
                       f"| {best:.2f}× | {need} | {status} |")
    return out


def implied_bounds(family: str, mode: str, sizes: list[int],
                   results: dict[tuple[str, int], dict[str, Row]]) -> list[str]:
    """What the baselines alone ask of zmicro (from their medians of
    rounds): readable before zmicro runs. One line per size: every target
    of a zmicro row against a baseline row, turned into the figure it
    implies; for latency, the tightest of them."""
    out = []
    unit = "µs" if mode == "latency" else "calls/s"
    fmt = fmt_us if mode == "latency" else fmt_rate
    for size in sizes:
        rows = results.get((mode, size), {})
        parts: dict[str, list[tuple[float, str]]] = {}
        for t in TARGETS:
            if t.mode != mode or t.family != family or \
                    size not in target_sizes(t, [size]):
                continue
            zn, zd = t.num.startswith("zmicro"), t.den.startswith("zmicro")
            if zn == zd:
                continue
            if zn:   # zmicro ≤ / ≥ bound × baseline
                base = _ok(rows, t.den)
                if base:
                    v = t.bound * base.value(t.metric)
                    parts.setdefault(t.num, []).append(
                        (v, f"{'≤' if t.op == '<=' else '≥'} {t.bound:g} × "
                            f"{t.den} = {fmt(v)} {unit}"))
            else:    # baseline / zmicro ≥ bound: zmicro ≤ baseline / bound
                base = _ok(rows, t.num)
                if base and t.op == ">=":
                    v = base.value(t.metric) / t.bound
                    parts.setdefault(t.den, []).append(
                        (v, f"≤ {t.num} / {t.bound:g} = {fmt(v)} {unit}"))
        for name, got in parts.items():
            what = "p50" if mode == "latency" else "calls/s"
            line = (f"- {fmt_size(size)}: {name} {what} must be "
                    + " and ".join(text for _, text in got))
            if mode == "latency" and len(got) > 1:
                line += f" (both at once: {fmt(min(v for v, _ in got))} µs)"
            out.append(line + ".")
    return out


def curve_cost(mode: str, sizes: list[int],
               results: dict[tuple[str, int], dict[str, Row]]) -> list[str]:
    """Curve alone at the transport: the C programs over CURVE against the
    same programs in plaintext, same run. The design expects 1.0–1.35× for
    latency; far outside that, look at the method before the numbers."""
    metric = "p50" if mode == "latency" else "rate"
    pairs = ((("c-reqrep-curve", "c-reqrep"), ("c-dealer-curve", "c-dealer"))
             if mode == "latency" else (("c-dealer-curve", "c-dealer"),))
    out = []
    for size in sizes:
        rows = results.get((mode, size), {})
        parts = []
        for sec, plain in pairs:
            a, b = _ok(rows, sec), _ok(rows, plain)
            if not (a and b):
                continue
            ratio = round_ratio(a, b, metric)
            if ratio is None:
                continue
            best = a.best(metric) / b.best(metric)
            pr = f" (best rounds' ratio {best:.2f}×)"
            what = "p50" if mode == "latency" else "calls/s"
            verdict = ""
            if mode == "latency":
                lo, hi = CURVE_EXPECTED
                verdict = (" (below 1: within the noise between two rows)"
                           if ratio < lo else
                           f" (within the design's {lo:g}–{hi:g}×)"
                           if ratio <= hi else
                           f" (OUTSIDE the design's {lo:g}–{hi:g}×)")
            parts.append(f"{sec} / {plain} {what}, median of per-round "
                         f"ratios = {ratio:.2f}×{pr}{verdict}")
        if parts:
            out.append(f"- {fmt_size(size)}: " + "; ".join(parts) + ".")
    return out


# ---------------------------------------------------------------------------
# Environment
# ---------------------------------------------------------------------------


def first_line(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        return (out.stdout or out.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.SubprocessError):
        return "n/a"


def version_of(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def git_revision() -> str:
    """HEAD, and which of the measured code had uncommitted changes: the
    library (src, core, python) and the harness (bench/e2e, bench/c)."""
    rev = first_line(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
    notes = []
    for label, paths in (("src/core/python", ["src", "core", "python", "setup.py"]),
                         ("bench/e2e, bench/c", ["bench/e2e", "bench/c"])):
        try:
            dirty = subprocess.run(
                ["git", "-C", str(ROOT), "status", "--porcelain", "--", *paths],
                capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            dirty = ""
        if dirty:
            notes.append(label)
    return rev + (f" + uncommitted changes in {'; '.join(notes)}" if notes else "")


def environment(args, env: Env, infos: dict[str, dict],
                load: tuple[float, ...], load_end: tuple[float, ...]) -> list[str]:
    import zmq

    affinity = (len(os.sched_getaffinity(0))
                if hasattr(os, "sched_getaffinity") else "?")
    c_info = next((infos[n] for n in ("c-reqrep", "c-dealer", "c-reqrep-curve",
                                      "c-dealer-curve") if n in infos), {})
    c_lib = c_info.get("libzmq", {})
    zmicro_v = version_of("zmicro")
    return [
        f"- Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}",
        f"- Machine: {cpu_model()}, {os.cpu_count()} cores ({affinity} usable), "
        f"kernel {platform.release()}, load average "
        f"{' / '.join(f'{x:.2f}' for x in load)} at start, "
        f"{' / '.join(f'{x:.2f}' for x in load_end)} at end (which counts the "
        "run's own processes)",
        f"- Python {platform.python_version()} ({platform.python_implementation()}), "
        f"pyzmq {zmq.__version__} (libzmq {zmq.zmq_version()}), "
        f"grpcio {version_of('grpcio')}, zmicro {zmicro_v} at {git_revision()}",
        f"- C: `{args.cc} -O2` = {first_line([args.cc, '--version'])}; "
        f"gcc: {first_line(['gcc', '--version'])}; `zmq_pingpong` loaded "
        f"`{Path(c_lib['file']).name if c_lib.get('file') else 'n/a'}` "
        f"(libzmq {c_lib.get('version', 'n/a')}, the file pyzmq loads: "
        f"{'yes' if c_lib.get('file') and env.libzmq and os.path.realpath(c_lib['file']) == os.path.realpath(env.libzmq) else 'NO'})",
    ]


def method_lines(args, mode: str) -> list[str]:
    if mode == "latency":
        what = (f"{args.warmup} warm-up calls discarded, then {args.iterations} "
                "sequential calls, each timed in the client process around "
                "send + reply (`clock_gettime` / `perf_counter_ns`, "
                "CLOCK_MONOTONIC)")
    else:
        what = (f"{args.window} calls kept in flight for {args.warmup_seconds:g} s "
                f"(discarded), then {args.seconds:g} s: calls/s = replies in "
                "that span / its length; p50 / p99 of those calls' latency "
                "(send to reply)")
    out = [f"Each cell: echo over tcp 127.0.0.1, server and client in separate "
           f"processes; {what}."]
    if args.repeat > 1:
        out.append(
            f"{args.repeat} alternating rounds (each round runs every contender "
            "once per size, in an order rotated by one each round): "
            + ("p50 = median of the rounds' p50s, best round = the lowest"
               if mode == "latency"
               else "calls/s = median of the rounds' calls/s, best round = "
                    "the highest; p50 = median of the rounds' p50s")
            + ", p99 = median of the rounds' p99s; a ratio (and the p50 "
              "difference) = median over the rounds of the one within each "
              "round, the best rounds' ratio = best round over best round "
              "(the host has stretches at about half speed, which the best "
              "round dodges and the median does not). Raw figures per "
              "round: `bench/build/e2e/results.json`.")
    if args.smoke:
        out.insert(0, "**SMOKE RUN: a few hundred calls per contender; numbers "
                      "are not measurements.**")
    return out


def legend(names: list[str]) -> list[str]:
    known = by_name()
    out = []
    for n in names:
        c = known[n]
        plain = f" (plaintext counterpart: `{c.plain}`)" if c.plain else ""
        out.append(f"- `{n}` ({c.family}): {c.summary}{plain}")
    return out


def security_lines(names: list[str], infos: dict[str, dict],
                   results: dict[tuple[str, int], dict[str, Row]]) -> list[str]:
    """What each secure contender ran with, as its processes reported it."""
    out = []
    for n in names:
        info = infos.get(n)
        if not info:
            continue
        said = []
        mechs = sorted({x.info.get("mechanism") for rows in results.values()
                        if n in rows for x in rows[n].runs
                        if x.info.get("mechanism")})
        if mechs:
            said.append(f"client socket's mechanism: {', '.join(mechs)}")
        if info.get("tls"):
            said.append(info["tls"])
        if info.get("zmicro_home"):
            said.append(f"key store ZMICRO_HOME=`{Path(info['zmicro_home']).name}/`"
                        " in the build dir, emptied at the start of the run")
        if info.get("plaintext_defaults"):
            said.append(f"**runs plaintext**: {info['plaintext_defaults']}")
        if info.get("plaintext_check"):
            said.append(cell(info["plaintext_check"], 160))
        if said:
            out.append(f"- `{n}`: " + "; ".join(said))
    return out


def section(family: str, mode: str, args, env_lines: list[str],
            sizes: list[int], names: list[str],
            results: dict[tuple[str, int], dict[str, Row]],
            infos: dict[str, dict]) -> str:
    secure = family == "secure"
    lat_base, thr_base = BASES[family]
    lines = [*env_lines, ""]
    lines += ["Contenders (family in brackets; compare within a family):", ""]
    lines += legend(names) + [""]
    if secure:
        checked = security_lines(names, infos, results)
        if checked:
            lines += ["Checked in this run:", "", *checked, ""]
    for size in sizes:
        all_rows = results.get((mode, size), {})
        rows = [all_rows[n] for n in names if n in all_rows]
        if not rows:
            continue
        what = (f"{fmt_size(size)} request, {fmt_size(size)} reply")
        title = (f"Latency, {what}, one call at a time" if mode == "latency"
                 else f"Throughput, {what}, {args.window} calls in flight")
        if secure:
            title = f"Secure: {title[0].lower()}{title[1:]}"
        lines += [f"**{title}**", ""]
        lines += (latency_table(rows, lat_base, all_rows, secure)
                  if mode == "latency"
                  else throughput_table(rows, thr_base, all_rows, secure)) + [""]
        lines += plaintext_note(rows)
    if secure:
        cost = curve_cost(mode, sizes, results)
        if cost:
            lines += ["Curve alone at the transport (C libzmq over CURVE / the "
                      "same program in plaintext, same run; handshake done "
                      "during the warm-up, outside the timings):", "", *cost, ""]
    lines += ["**Targets**: judged on the median over the rounds of the "
              "ratio within each round (figures taken seconds apart); the "
              "ratio of the two rows' best rounds beside it (the best round "
              "flatters whoever got a quiet moment).", ""]
    lines += targets_table(family, mode, sizes, results) + [""]
    bounds = implied_bounds(family, mode, sizes, results)
    if bounds:
        lines += ["What the baselines alone ask of zmicro:", "", *bounds, ""]
    others = [x.others for size in sizes
              for n, r in results.get((mode, size), {}).items()
              if n in names for x in r.runs]
    extra = []
    if others:
        extra.append(
            "Other work on the host while the clients ran (CPU time of the "
            "machine minus client and server, per second): median "
            f"{median(others):.2f} cores, max {max(others):.2f} cores over "
            f"{len(others)} runs (per run in `results.json`: `others`). It "
            "does not see other tenants of the physical host.")
    lines += ["\n\n".join(method_lines(args, mode) + extra)]
    return "\n".join(lines) + "\n"


def record(key: tuple[str, str], text: str) -> None:
    heading, begin, end = SECTIONS[key]
    block = f"{begin}\n{text.rstrip()}\n{end}\n"
    doc = RESULTS.read_text() if RESULTS.exists() else "# zmicro benchmark results\n"
    if begin in doc and end in doc:
        start = doc.index(begin)
        stop = doc.index(end) + len(end)
        if stop < len(doc) and doc[stop] == "\n":
            stop += 1
        doc = doc[:start] + block + doc[stop:]
    elif heading in doc:
        # First record: the block goes at the end of the heading's section
        # (before the next level-2 heading); the prose stays.
        start = doc.index(heading) + len(heading)
        nxt = doc.find("\n## ", start)
        stop = len(doc) if nxt < 0 else nxt + 1
        doc = (doc[:stop].rstrip("\n") + "\n\n" + block
               + ("\n" if nxt >= 0 else "") + doc[stop:])
    else:
        doc = doc.rstrip() + f"\n\n{heading}\n\n" + block
    RESULTS.write_text(doc)
    log(f"recorded the {' '.join(key)} section in {RESULTS}")


# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------


def parse_args(argv: list[str] | None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mode", choices=("latency", "throughput", "all"),
                   default="all")
    p.add_argument("--sizes", default="64,4096",
                   help="request (= reply) body sizes in bytes (default 64,4096)")
    p.add_argument("--contenders", default="all",
                   help="comma-separated, default all: "
                        + ", ".join(c.name for c in CONTENDERS))
    p.add_argument("--iterations", type=int, default=None,
                   help="timed sequential calls per latency run "
                        "(default 5000; smoke 300)")
    p.add_argument("--warmup", type=int, default=None,
                   help="discarded calls before each latency run "
                        "(default 1000; smoke 50)")
    p.add_argument("--seconds", type=float, default=None,
                   help="timed seconds per throughput run (default 1; smoke 0.2)")
    p.add_argument("--warmup-seconds", type=float, default=None,
                   help="discarded seconds before each throughput run "
                        "(default 0.3; smoke 0.05)")
    p.add_argument("--window", type=int, default=64,
                   help="calls in flight for throughput (default 64)")
    p.add_argument("--repeat", type=int, default=None,
                   help="alternating rounds over the contenders "
                        "(default 7; smoke 1)")
    p.add_argument("--smoke", action="store_true",
                   help="a few hundred calls per contender, no thresholds, "
                        "< 60 s: checks the harness, measures nothing")
    p.add_argument("--record", action="store_true",
                   help="write the sections into bench/RESULTS.md "
                        "(refused with --smoke)")
    p.add_argument("--sections", choices=("all", *FAMILIES), default="all",
                   help="which families' sections to print and record "
                        "(default all); the contenders run are still those "
                        "of --contenders, so a secure section keeps its "
                        "plaintext counterparts and cross-family targets")
    p.add_argument("--cc", default=os.environ.get("CC") or "cc",
                   help="C compiler for zmq_pingpong (default $CC or cc)")
    p.add_argument("--build-dir", type=Path, default=BENCH / "build" / "e2e")
    args = p.parse_args(argv)
    if args.record and args.smoke:
        p.error("--record needs a full run, not --smoke")
    smoke = args.smoke
    # Full: 7 rounds of short runs rather than few long ones: the host's slow
    # stretches last about a second, and more rounds give each contender
    # more chances to be measured outside one.
    for name, full, quick in (("iterations", 5000, 300), ("warmup", 1000, 50),
                              ("seconds", 1.0, 0.2),
                              ("warmup_seconds", 0.3, 0.05),
                              ("repeat", 7, 1)):
        if getattr(args, name) is None:
            setattr(args, name, quick if smoke else full)
    if args.repeat < 1 or args.iterations < 1 or args.window < 1:
        p.error("--repeat, --iterations and --window must be >= 1")
    try:
        args.sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    except ValueError:
        p.error("--sizes: comma-separated integers")
    if not args.sizes or min(args.sizes) < 0:
        p.error("--sizes: at least one size, none negative")
    known = by_name()
    if args.contenders == "all":
        args.contenders = [c.name for c in CONTENDERS]
    else:
        args.contenders = [s.strip() for s in args.contenders.split(",")
                           if s.strip()]
        bad = [n for n in args.contenders if n not in known]
        if bad:
            p.error(f"unknown contender(s) {', '.join(bad)}; known: "
                    + ", ".join(known))
    args.modes = list(MODES) if args.mode == "all" else [args.mode]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM (CI's timeout, a kill) unwinds like Ctrl-C, so the servers are
    # stopped by the finally below.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    t0 = time.monotonic()
    load = os.getloadavg()
    if not args.smoke and load[0] > 0.5:
        log(f"warning: load average {load[0]:.2f}: other work is running, "
            "numbers will be noisy")
    build = args.build_dir.resolve()
    (build / "logs").mkdir(parents=True, exist_ok=True)
    (build / "samples").mkdir(parents=True, exist_ok=True)
    # zmicro's key store (ZMICRO_HOME): each run starts without one, so the
    # secure contenders go through zmicro's first-run setup (own key pair,
    # trusted, MAC secret) in the probe, before any server starts.
    shutil.rmtree(build / "zmicro-home", ignore_errors=True)

    env = Env(python=sys.executable, build=build, libzmq=pyzmq_libzmq())
    known = by_name()
    selected = [known[n] for n in args.contenders]
    if any(isinstance(c, CContender) for c in selected):
        env.pingpong, env.pingpong_error = build_pingpong(args.cc, build)

    # (mode, size) -> name -> Row, every selected contender that has the mode.
    results: dict[tuple[str, int], dict[str, Row]] = {
        (m, s): {c.name: Row(c) for c in selected if m in c.modes}
        for m in args.modes for s in args.sizes}
    infos: dict[str, dict] = {}
    servers: dict[str, Server] = {}

    def fail(name: str, why: str, where: tuple[str, int] | None = None) -> None:
        """Mark the contender failed in one (mode, size), or everywhere."""
        log(f"{name}: {why}")
        for key, rows in results.items():
            if name in rows and (where is None or key == where):
                rows[name].failed = rows[name].failed or why

    active = [c for c in selected if any(m in c.modes for m in args.modes)]
    try:
        for c in active:
            reason, info = c.probe(env)
            if reason:
                fail(c.name, reason)
                continue
            infos[c.name] = info
            if info.get("plaintext_defaults"):
                for rows in results.values():
                    if c.name in rows:
                        rows[c.name].plaintext = info["plaintext_defaults"]
            srv = Server(c, env, build / "logs")
            try:
                srv.start(ping_timeout_s=10 if args.smoke else 20)
                checked = srv.plaintext_check(
                    answer_expected=bool(info.get("plaintext_defaults")))
                if checked is not None:
                    info["plaintext_check"] = checked
                servers[c.name] = srv
            except ContenderFailed as e:
                srv.stop()
                fail(c.name, str(e))

        params_base = dict(iterations=args.iterations, warmup=args.warmup,
                           window=args.window, seconds=args.seconds,
                           warmup_seconds=args.warmup_seconds)
        for rnd in range(args.repeat):
            if args.repeat > 1:
                log(f"-- round {rnd + 1}/{args.repeat}")
            for mode in args.modes:
                for size in args.sizes:
                    rows = results[(mode, size)]
                    names = [n for n in rows if n in servers]
                    k = rnd % len(names) if names else 0
                    for name in names[k:] + names[:k]:
                        row = rows[name]
                        if row.failed:
                            continue
                        out = build / "samples" / f"{name}-{mode}-{size}.bin"
                        params = RunParams(mode=mode, size=size, out=str(out),
                                           **params_base)
                        try:
                            run = run_client(servers[name], params)
                            run.round = rnd
                            row.runs.append(run)
                        except ContenderFailed as e:
                            fail(name, str(e), (mode, size))
                            if not servers[name].alive():
                                fail(name, f"server died: "
                                           f"{tail(servers[name].log_text())}")
    finally:
        for srv in servers.values():
            srv.stop()

    env_lines = environment(args, env, infos, load, os.getloadavg())
    texts = {}
    families = FAMILIES if args.sections == "all" else (args.sections,)
    for family in families:
        for mode in args.modes:
            names = [c.name for c in selected
                     if mode in c.modes and c.family == family]
            if names:
                texts[(family, mode)] = section(family, mode, args, env_lines,
                                                args.sizes, names, results,
                                                infos)
    for key, text in texts.items():
        print(f"\n## {TITLES[key]}\n\n{text}")

    raw = {f"{m}/{s}": {n: dict(failed=r.failed,
                                runs=[vars(x) for x in r.runs])
                        for n, r in rows.items()}
           for (m, s), rows in results.items()}
    with open(build / "results.json", "w") as f:
        json.dump(dict(args={k: v for k, v in vars(args).items()
                             if k != "build_dir"},
                       libzmq=env.libzmq, infos=infos, results=raw), f, indent=1)
    log(f"raw results in {build / 'results.json'}; server logs in "
        f"{build / 'logs'}; took {time.monotonic() - t0:.1f} s")
    if args.record:
        for key, text in texts.items():
            family, mode = key
            plain = sorted({n for (m, _), rows in results.items() if m == mode
                            for n, r in rows.items()
                            if r.plaintext and r.contender.family == family})
            if plain:
                # Secure numbers that are not secure never reach RESULTS.md.
                log(f"not recording the {family} {mode} section: "
                    f"{', '.join(plain)} ran plaintext "
                    f"({infos[plain[0]]['plaintext_defaults']})")
                continue
            record(key, text)

    # In smoke runs, the baselines must work: that is what CI checks.
    broken = [f"{n} ({m}, {fmt_size(s)}): {row.failed or 'no result'}"
              for (m, s), rows in results.items() for n, row in rows.items()
              if n in SMOKE_REQUIRED and not row.ok]
    if broken:
        log("error: baseline contenders failed:\n  " + "\n  ".join(broken))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
