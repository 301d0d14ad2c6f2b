#!/usr/bin/env python3
"""Instructions per call, by thread, under callgrind: zmicro's round trip
(client and ``svc.run()`` server, plaintext and with the secure defaults,
one call at a time and with 64 in flight) beside C libzmq's own.

    python bench/callgrind/run.py --smoke    # CI: < 60 s, checks the harness
    python bench/callgrind/run.py            # every case, about 15 minutes
    python bench/callgrind/run.py --record   # then update bench/RESULTS.md

Why: timings on the shared hosts move by tens of percent from run to run;
callgrind counts the instructions a round trip executes, which do not depend
on the load, so "this change adds no instructions" can be checked to within
the spread of repeated measurements (tens of instructions per call for most
one-at-a-time cases, a few hundred with calls in flight).

Method (the difference method): for each case, two fresh server + client
pairs run, every process under ``valgrind --tool=callgrind
--separate-threads=yes`` (server started first and killed with SIGTERM after
the client exits; callgrind writes its counts at exit), the client making
``N1`` then ``N2`` calls after the same warm-up. Per call =
(I(N2) - I(N1)) / (N2 - N1) for each thread class of each process, so
start-up, imports, the handshake and shutdown cancel out. The Python
processes start uninstrumented (``--instr-atstart=no``, some ten times
faster) and switch counting on at a fixed point (``cg_start.c``); see
``workload.py``. Each case is measured ``--repeat`` times; a row is the
repeat with the median total, beside the range. Thread classes: the main
thread; libzmq's threads (its I/O thread, plus the reaper, which does
nothing per call); other threads (zmicro's registry heartbeat, ZAP
handler), which run on a clock or per connection, not per call, and are
shown apart.

Cases: ``c-reqrep`` (``bench/c/zmq_pingpong.c``, REQ/REP, one call at a
time: the floor under ``zmicro-sync``), ``c-dealer`` (DEALER/ROUTER,
``--window`` in flight: the floor under ``zmicro-async``), ``zmicro-sync``
(``Client.call``), ``zmicro-async`` (``AsyncClient.call``, ``--window`` in
flight), the plaintext ones with ``insecure=True``, and each over CURVE /
with zmicro's secure defaults (``-curve``, ``zmicro-secure-*``); the servers
are the e2e benchmark's (``bench/e2e/contenders``), octet-stream echo.

Caveats (also in the report): callgrind counts user-space instructions,
not the kernel's work for system calls (most of libzmq's I/O threads' CPU
time); under valgrind OpenSSL cannot use the CPU's SHA instructions, so the secure zmicro counts include a portable SHA-256 per
MAC (what the CPU runs is far less at 4 KiB); with calls in flight, how
messages batch depends on thread scheduling, which valgrind changes (it runs
one thread of a process at a time), so the ``-async``/``c-dealer`` counts are
less exact than the one-at-a-time ones.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import platform
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCH = HERE.parent
ROOT = BENCH.parent
E2E = BENCH / "e2e"
RESULTS = BENCH / "RESULTS.md"
WORKLOAD = HERE / "workload.py"

sys.path.insert(0, str(E2E))
from contenders import CContender, Env, RunParams, by_name  # noqa: E402

# The e2e driver's helpers (its file is also called run.py: loaded by path).
_spec = importlib.util.spec_from_file_location("e2e_run", E2E / "run.py")
e2e = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = e2e  # dataclasses look their module up there
_spec.loader.exec_module(e2e)

HEADING = "## Instructions per call (callgrind)"
BEGIN = "<!-- callgrind:begin: written by bench/callgrind/run.py --record -->"
END = "<!-- callgrind:end -->"
HIST_BEGIN = ("<!-- callgrind-history:begin: rows added by "
              "bench/callgrind/run.py --record -->")
HIST_END = "<!-- callgrind-history:end -->"

CLASSES = ("main", "libzmq", "other")
# Threads that run Python code (other than the main one) show this function.
PY_EVAL = "_PyEval_EvalFrameDefault"


@dataclass(frozen=True)
class Case:
    name: str        # how the report calls it
    contender: str   # the e2e contender whose server (and keys, env) it uses
    client: str      # c | sync | async
    window: int      # calls in flight (1: one at a time)
    floor: str = ""  # the C case it is compared with ("": it is a floor)

    @property
    def secure(self) -> bool:
        return self.contender.endswith("-curve") or "-secure-" in self.contender


def cases(window: int) -> list[Case]:
    return [
        Case("c-reqrep", "c-reqrep", "c", 1),
        Case("zmicro-sync", "zmicro-sync", "sync", 1, "c-reqrep"),
        Case("c-dealer", "c-dealer", "c", window),
        Case("zmicro-async", "zmicro-async", "async", window, "c-dealer"),
        Case("c-reqrep-curve", "c-reqrep-curve", "c", 1),
        Case("zmicro-secure-sync", "zmicro-secure-sync", "sync", 1,
             "c-reqrep-curve"),
        Case("c-dealer-curve", "c-dealer-curve", "c", window),
        Case("zmicro-secure-async", "zmicro-secure-async", "async", window,
             "c-dealer-curve"),
    ]


SMOKE_CASES = ("c-reqrep", "zmicro-secure-sync")


def log(msg: str) -> None:
    print(f"[callgrind] {msg}", file=sys.stderr, flush=True)


class Failed(Exception):
    pass


# ---------------------------------------------------------------------------
# Running one process pair under callgrind
# ---------------------------------------------------------------------------


def valgrind(out: Path, instr_atstart: bool = True) -> list[str]:
    # Strings uncompressed: each per-thread file then names its own objects
    # and functions (the thread classes are read from them).
    return ["valgrind", "--tool=callgrind", "--separate-threads=yes",
            "--compress-strings=no", "--compress-pos=no", "--dump-line=no",
            f"--instr-atstart={'yes' if instr_atstart else 'no'}",
            f"--callgrind-out-file={out}.%p"]


def build_cg_start(cc: str, build: Path) -> tuple[Path | None, str]:
    """cg_start.c as a shared library (needs valgrind's headers, which
    Debian's valgrind package ships)."""
    lib = build / "libcgstart.so"
    cmd = [cc, "-O2", "-shared", "-fPIC", str(HERE / "cg_start.c"), "-o",
           str(lib)]
    log("$ " + shlex.join(cmd))
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        return None, e2e.tail(proc.stderr, 2) or "cc failed"
    return lib, ""


def listening(port: int) -> bool:
    """Whether something listens on 127.0.0.1:port (read from
    /proc/net/tcp: asking the server itself would add calls to its count)."""
    want = f"0100007F:{port:04X}"
    try:
        with open("/proc/net/tcp") as f:
            next(f)
            for line in f:
                parts = line.split()
                if parts[1] == want and parts[3] == "0A":
                    return True
    except (OSError, StopIteration, IndexError):
        pass
    return False


@dataclass
class Thread:
    tid: int
    cls: str
    ir: int


@dataclass
class Process:
    pid: int
    threads: list[Thread]

    def by_class(self) -> dict[str, int]:
        out = dict.fromkeys(CLASSES, 0)
        for t in self.threads:
            out[t.cls] += t.ir
        return out


def read_counts(out: Path, pid: int) -> Process:
    """The per-thread files of one process: ``<out>.<pid>-<tid>``."""
    threads = []
    for f in sorted(out.parent.glob(f"{out.name}.{pid}-*")):
        tid = int(f.name.rsplit("-", 1)[1])
        text = f.read_text(errors="replace")
        m = re.search(r"^summary:\s*(\d+)", text, re.M) or \
            re.search(r"^totals:\s*(\d+)", text, re.M)
        if not m:
            raise Failed(f"{f.name}: no summary line")
        if tid == 1:
            cls = "main"
        elif PY_EVAL in text:
            cls = "other"      # a Python thread: heartbeat, watcher, ...
        elif re.search(r"^ob=.*libzmq", text, re.M):
            cls = "libzmq"
        else:
            cls = "other"
        threads.append(Thread(tid, cls, int(m.group(1))))
    if not threads:
        raise Failed(f"callgrind wrote no file for {out.name}.{pid}")
    return Process(pid, threads)


def stop(proc: subprocess.Popen, wait_s: float) -> None:
    """SIGTERM to the process group (zmicro's server drains, deregisters
    and exits; callgrind writes its counts at exit), SIGKILL if it hangs."""
    for sig, wait in ((signal.SIGTERM, wait_s), (signal.SIGKILL, 10.0)):
        if proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


@dataclass
class Pair:
    client: Process
    server: Process
    info: dict = field(default_factory=dict)


def run_pair(case: Case, contender, env: Env, size: int, calls: int,
             warmup: int, tag: str, work: Path, timeout_s: float,
             cg_lib: Path) -> Pair:
    """One server and one client, each under callgrind; their counts."""
    for old in work.glob(f"{tag}-*"):
        old.unlink()
    port = e2e.free_port()
    environ = {**os.environ, **contender.environ(env),
               # Same hash seed in every run: dict and set layouts (and so
               # their probing) do not change between the two runs.
               "PYTHONHASHSEED": "0"}
    srv_out, cli_out = work / f"{tag}-server", work / f"{tag}-client"
    if case.client == "c":
        # C starts in a few million instructions: counted from the start.
        srv_cmd = valgrind(srv_out) + contender.server_cmd(env, port)
        params = RunParams(mode="count", size=size, iterations=calls,
                           warmup=warmup, window=case.window,
                           timeout_ms=int(timeout_s * 1000))
        cli_cmd = valgrind(cli_out) + contender.client_cmd(env, port, params)
    else:
        # Python's start-up runs uninstrumented (much faster); counting
        # starts at cg_start(). The client starts beside the server; its
        # first call waits for our "go".
        secure = ["--secure"] if case.secure else []
        srv_cmd = valgrind(srv_out, instr_atstart=False) + [
            env.python, str(WORKLOAD), "server", "--port", str(port),
            "--cg-lib", str(cg_lib), *secure]
        cli_cmd = valgrind(cli_out, instr_atstart=False) + [
            env.python, str(WORKLOAD), "client", "--port", str(port),
            "--client", case.client, "--size", str(size), "--calls",
            str(calls), "--warmup", str(warmup), "--window", str(case.window),
            "--go-on-stdin", "--cg-lib", str(cg_lib), *secure]
    srv_log = work / f"{tag}-server.log"
    t0 = time.monotonic()
    log("$ " + shlex.join(srv_cmd) + " &")
    with open(srv_log, "w") as logf:
        server = subprocess.Popen(srv_cmd, cwd=E2E, env=environ,
                                  stdin=subprocess.DEVNULL, stdout=logf,
                                  stderr=subprocess.STDOUT,
                                  start_new_session=True,
                                  preexec_fn=e2e._child_setup)
    client = None

    def start_client(stdin) -> subprocess.Popen:
        log("$ " + shlex.join(cli_cmd))
        return subprocess.Popen(cli_cmd, cwd=E2E, env=environ, stdin=stdin,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, start_new_session=True,
                                preexec_fn=e2e._child_setup)

    try:
        if case.client != "c":
            client = start_client(subprocess.PIPE)
        deadline = time.monotonic() + timeout_s
        while not listening(port):
            if server.poll() is not None:
                raise Failed(f"{tag}: server exited {server.returncode}: "
                             f"{e2e.tail(srv_log.read_text(errors='replace'))}")
            if client is not None and client.poll() is not None:
                raise Failed(f"{tag}: client exited {client.returncode} "
                             f"before the server listened: "
                             f"{e2e.tail(client.stderr.read())}")
            if time.monotonic() > deadline:
                raise Failed(f"{tag}: server not listening after {timeout_s:.0f} s")
            time.sleep(0.05)
        if client is None:
            client = start_client(subprocess.DEVNULL)
            go = None
        else:
            go = "go\n"
        try:
            out, err = client.communicate(go, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise Failed(f"{tag}: client did not finish in {timeout_s:.0f} s") \
                from None
        if client.returncode != 0:
            raise Failed(f"{tag}: client exited {client.returncode}: "
                         f"{e2e.tail(err)}")
        info = {}
        for line in out.splitlines():
            if line.startswith("{"):
                info = json.loads(line)
        counts = read_counts(cli_out, client.pid)
    finally:
        if client is not None and client.poll() is None:
            stop(client, wait_s=5.0)
        stop(server, wait_s=120.0)
    if server.returncode is None or server.returncode == -signal.SIGKILL:
        raise Failed(f"{tag}: the server did not exit on SIGTERM (no counts)")
    log(f"{tag}: {time.monotonic() - t0:.0f} s")
    return Pair(counts, read_counts(srv_out, server.pid), info)


# ---------------------------------------------------------------------------
# Per call
# ---------------------------------------------------------------------------


@dataclass
class Result:
    """Instructions per call of one case and size, by process and class:
    the repeat whose total is the median of the repeats' totals."""

    case: Case
    size: int
    client: dict[str, float]
    server: dict[str, float]
    totals: list[float] = field(default_factory=list)  # every repeat's total
    runs: list = field(default_factory=list)     # raw, for results.json
    notes: list[str] = field(default_factory=list)

    @property
    def total(self) -> float:
        return total(self.client, self.server)

    @property
    def other(self) -> float:
        return self.client["other"] + self.server["other"]


def total(client: dict[str, float], server: dict[str, float]) -> float:
    return (client["main"] + client["libzmq"]
            + server["main"] + server["libzmq"])


def per_call(a: Process, b: Process, n: int) -> dict[str, float]:
    ca, cb = a.by_class(), b.by_class()
    return {k: (cb[k] - ca[k]) / n for k in CLASSES}


def measure(case: Case, contender, env: Env, size: int, args,
            work: Path) -> Result:
    """``args.repeat`` estimates, each from an N1 and an N2 pair."""
    n1, n2 = args.n1, args.n2
    estimates, raw, notes = [], [], []
    for rnd in range(args.repeat):
        jobs = [(case, contender, env, size, n, args.warmup,
                 f"{case.name}-{size}-r{rnd}-{n}", work, args.timeout,
                 args.cg_lib)
                for n in (n1, n2)]
        if args.parallel:
            # Smoke: both pairs at once (the counts get noisier, the run
            # twice as quick).
            with ThreadPoolExecutor(2) as pool:
                p1, p2 = [f.result() for f in
                          [pool.submit(run_pair, *job) for job in jobs]]
        else:
            p1, p2 = [run_pair(*job) for job in jobs]
        for side in ("client", "server"):
            c1 = sorted(t.cls for t in getattr(p1, side).threads)
            c2 = sorted(t.cls for t in getattr(p2, side).threads)
            if c1 != c2:
                notes.append(f"{side} threads differ between the runs: "
                             f"{c1} / {c2}")
        plain = p2.info.get("plaintext_defaults")
        if plain and f"ran plaintext: {plain}" not in notes:
            notes.append(f"ran plaintext: {plain}")
        est = (per_call(p1.client, p2.client, n2 - n1),
               per_call(p1.server, p2.server, n2 - n1))
        estimates.append(est)
        raw.append({str(n): {side: [vars(t) for t in getattr(p, side).threads]
                             for side in ("client", "server")}
                    for n, p in ((n1, p1), (n2, p2))})
        log(f"{case.name} {fmt_size(size)} repeat {rnd + 1}: "
            f"{fmt_n(total(*est))} per call")
    totals = [total(*e) for e in estimates]
    mid = sorted(range(len(totals)), key=totals.__getitem__)[len(totals) // 2]
    client, server = estimates[mid]
    return Result(case, size, client, server, totals, raw, notes)


# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------


def fmt_n(x: float) -> str:
    return f"{round(x):,}"  # round() first: -0.3 is "0", not "-0"


def fmt_size(n: int) -> str:
    return e2e.fmt_size(n)


def parse_size(text: str) -> int:
    """The inverse of fmt_size: "64 B" -> 64, "4 KiB" -> 4096."""
    num, unit = text.split()
    return int(num) * (1024 if unit == "KiB" else 1)


LIBRARY = ("src", "core", "python", "setup.py")
HARNESS = ("bench/callgrind", "bench/c", "bench/e2e/contenders",
           "bench/e2e/harness.py")


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", "-C", str(ROOT), *args],
                              capture_output=True, text=True,
                              timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def commit_label() -> str:
    """The commit of the measured code: the last one that changed the
    library (so a commit touching only bench/ keeps the label), "+dirty"
    when the library has uncommitted changes. History rows are keyed by it."""
    rev = _git("log", "-1", "--format=%h", "--", *LIBRARY) or "unknown"
    return rev + ("+dirty" if _git("status", "--porcelain", "--", *LIBRARY)
                  else "")


def harness_note() -> str:
    head = _git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = _git("status", "--porcelain", "--", *HARNESS)
    return f"HEAD {head}" + (", harness with uncommitted changes" if dirty
                             else "")


def environment(args, libzmq: str | None) -> list[str]:
    import zmq

    return [
        f"- Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}",
        f"- Machine: {e2e.cpu_model()}, {os.cpu_count()} cores, kernel "
        f"{platform.release()} (instruction counts do not depend on the load)",
        f"- {e2e.first_line(['valgrind', '--version'])}; Python "
        f"{platform.python_version()}, pyzmq {zmq.__version__} (libzmq "
        f"{zmq.zmq_version()}, `{Path(libzmq).name if libzmq else 'n/a'}`), "
        f"zmicro {e2e.version_of('zmicro')}, library code of "
        f"**{commit_label()}** ({harness_note()})",
        f"- C: `{args.cc} -O2` = {e2e.first_line([args.cc, '--version'])}",
    ]


def table(results: list[Result], size: int,
          previous: dict[tuple[str, int], tuple[str, float]]) -> list[str]:
    by = {r.case.name: r for r in results if r.size == size}
    rank = {c.name: i for i, c in enumerate(cases(1))}
    by = dict(sorted(by.items(), key=lambda kv: rank.get(kv[0], len(rank))))
    prev_col = bool(previous)
    out = ["| Case | client main | client I/O | server main | server I/O "
           "| total | repeats' totals (min–max) | total / C floor |"
           + (" Δ total vs last record |" if prev_col else "")
           + " other threads |",
           "|---|--:|--:|--:|--:|--:|--:|--:|" + ("--:|" if prev_col else "")
           + "--:|"]
    for r in by.values():
        floor = by.get(r.case.floor)
        ratio = (f"{r.total / floor.total:.2f}× {r.case.floor}"
                 if floor and floor.total else "—")
        name = f"`{r.case.name}`" + (f" ({r.case.window} in flight)"
                                     if r.case.window > 1 else "")
        if r.notes:
            name += " ⚠"
        delta = ""
        if prev_col:
            p = previous.get((r.case.name, size))
            delta = (f" {round(r.total) - round(p[1]):+,} ({p[0]}) |" if p
                     else " — |")
        spread = (f"{fmt_n(min(r.totals))}–{fmt_n(max(r.totals))}"
                  if len(r.totals) > 1 else "—")
        out.append(f"| {name} | {fmt_n(r.client['main'])} "
                   f"| {fmt_n(r.client['libzmq'])} | {fmt_n(r.server['main'])} "
                   f"| {fmt_n(r.server['libzmq'])} | **{fmt_n(r.total)}** "
                   f"| {spread} | {ratio} |{delta} {fmt_n(r.other)} |")
    return out


def section(args, results: list[Result], libzmq: str | None,
            previous: dict[tuple[str, int], tuple[str, float]]) -> str:
    lines = [*environment(args, libzmq), ""]
    if args.smoke:
        lines += ["**SMOKE RUN: a few calls per case; the numbers are not "
                  "measurements.**", ""]
    for size in args.sizes:
        if not any(r.size == size for r in results):
            continue
        lines += [f"**Instructions per call, {fmt_size(size)} request, "
                  f"{fmt_size(size)} reply**", ""]
        lines += table(results, size, previous) + [""]
    notes = [f"- `{r.case.name}` {fmt_size(r.size)}: {n}"
             for r in results for n in r.notes]
    if notes:
        lines += ["⚠ Notes:", "", *notes, ""]
    lines += [
        f"Per call = (I({args.n2}) − I({args.n1})) / {args.n2 - args.n1}: "
        f"two runs of each case, {args.n1} and {args.n2} calls after "
        f"{args.warmup} warm-up calls, every process under `valgrind "
        "--tool=callgrind --separate-threads=yes`, server started first (a "
        "zmicro client starts beside it and makes its first call once the "
        "server listens) and stopped with SIGTERM after the client exits, "
        "`PYTHONHASHSEED=0`; start-up, imports, handshakes and shutdown "
        f"cancel out. Each case is measured {args.repeat} times (each time "
        "both runs); a row is the repeat with the median total, beside the "
        "range of the repeats' totals: the counts are not exactly "
        "reproducible (a thread that finds its work already there takes "
        "a shorter path than one that waits for it, and that depends on "
        "timing), so differences inside that range are noise. Client / "
        "server main: the process's main thread (Python, zmicro's core, "
        "libzmq's API side); I/O: libzmq's threads (the I/O thread; the "
        "reaper does nothing per call); total: those four. Other threads: "
        "zmicro's registry heartbeat and the like, which run on a clock, not "
        "per call, outside the total (their share of the difference follows "
        "how long the runs took). Clients: `bench/callgrind/workload.py` "
        "(zmicro; no clock read per call) and `zmq_pingpong --mode count` "
        "(C); servers: the e2e benchmark's. Raw counts per thread: "
        "`bench/build/callgrind/results.json`.",
        "",
        "Caveats: callgrind counts user-space instructions only: system "
        "calls and the kernel's work for them (TCP send and receive, "
        "eventfd wake-ups, epoll, context switches: by `perf`, two thirds "
        "of libzmq's I/O threads' CPU time and an eighth of the main "
        "threads') are not in the counts, so fewer wake-ups or syscalls per "
        "call do not show here. Under valgrind OpenSSL cannot use the CPU's "
        "SHA instructions, so the secure zmicro rows count a portable "
        "SHA-256 per MAC (two MACs per message each way at 4 KiB: most of "
        "the secure 4 KiB main-thread counts; on the CPU a 4 KiB MAC takes "
        "~3 µs, see the micro section). With calls in flight, how messages "
        "batch (per wake-up, per TCP read) depends on thread scheduling, "
        "which valgrind changes (it runs one thread of a process at a time): "
        f"the {args.window}-in-flight rows are less exact than the "
        "one-at-a-time rows and describe batching under valgrind.",
    ]
    return "\n".join(lines) + "\n"


# -- history ------------------------------------------------------------------

HIST_HEADER = ["| Commit | Date | Case | Size | client main | client I/O "
               "| server main | server I/O | total |",
               "|---|---|---|---|--:|--:|--:|--:|--:|"]


@dataclass
class HistRow:
    commit: str
    date: str
    case: str
    size: str
    cells: list[str]   # client main, client I/O, server main, server I/O, total

    def line(self) -> str:
        return (f"| {self.commit} | {self.date} | `{self.case}` | {self.size} | "
                + " | ".join(self.cells) + " |")

    @property
    def total(self) -> float:
        return float(self.cells[-1].strip("*").replace(",", ""))


def read_history(doc: str) -> list[HistRow]:
    if HIST_BEGIN not in doc or HIST_END not in doc:
        return []
    block = doc.split(HIST_BEGIN, 1)[1].split(HIST_END, 1)[0]
    rows = []
    for line in block.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 9 or cells[0] in ("Commit", "") or \
                cells[0].startswith("---"):
            continue
        rows.append(HistRow(cells[0], cells[1], cells[2].strip("`"), cells[3],
                            cells[4:]))
    return rows


def previous_records(rows: list[HistRow], commit: str
                     ) -> dict[tuple[str, int], tuple[str, float]]:
    """(case, size) -> (commit, total) of the last record of another commit
    (rows are kept in recording order within a case and size)."""
    out = {}
    for r in rows:
        if r.commit == commit:
            continue
        out[(r.case, parse_size(r.size))] = (r.commit, r.total)
    return out


def history_block(rows: list[HistRow], order: list[str]) -> str:
    rank = {n: i for i, n in enumerate(order)}
    # Grouped by case and size, records in order: before and after of one
    # case sit on adjacent lines.
    ordered = sorted(enumerate(rows), key=lambda ir: (
        rank.get(ir[1].case, len(rank)), parse_size(ir[1].size), ir[0]))
    return "\n".join([HIST_BEGIN, *HIST_HEADER,
                      *(r.line() for _, r in ordered), HIST_END])


def record(text: str, results: list[Result], commit: str,
           order: list[str]) -> None:
    doc = RESULTS.read_text()
    date = f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d}"
    rows = [r for r in read_history(doc) if r.commit != commit]
    for r in results:
        rows.append(HistRow(commit, date, r.case.name, fmt_size(r.size), [
            fmt_n(r.client["main"]), fmt_n(r.client["libzmq"]),
            fmt_n(r.server["main"]), fmt_n(r.server["libzmq"]),
            fmt_n(r.total)]))
    block = f"{BEGIN}\n{text.rstrip()}\n{END}"
    hist = history_block(rows, order)
    if BEGIN in doc and END in doc:
        head, rest = doc.split(BEGIN, 1)
        doc = head + block + rest.split(END, 1)[1]
    else:
        intro = (
            f"\n{HEADING}\n\n"
            "Instructions per call by thread (`python bench/callgrind/run.py "
            "--record`; method in [`README.md`](README.md#instructions-per-"
            "call-callgrindrunpy)): deterministic where the timings above "
            "move by tens of percent, so a change to the send / receive path "
            "is judged here first — it should add no instructions — and "
            "the timings tell how much instructions matter. The latest run, "
            "then every recorded run (one row per commit, case and size).\n\n")
        nxt = doc.find("\n## Cluster")
        at = nxt + 1 if nxt >= 0 else len(doc)
        doc = (doc[:at].rstrip("\n") + "\n" + intro + block + "\n\n"
               + "History (instructions per call; `--record` adds the rows "
               "of the commit it measured, replacing that commit's earlier "
               "rows):\n\n" + hist + "\n\n" + doc[at:].lstrip("\n"))
        RESULTS.write_text(doc)
        return
    if HIST_BEGIN in doc and HIST_END in doc:
        head, rest = doc.split(HIST_BEGIN, 1)
        doc = head + hist + rest.split(HIST_END, 1)[1]
    else:
        doc = doc.replace(END, END + "\n\n" + hist, 1)
    RESULTS.write_text(doc)


# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------


def parse_args(argv: list[str] | None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true",
                   help="two cases, a few calls: checks the harness (< 60 s)")
    p.add_argument("--record", action="store_true",
                   help="write the table into bench/RESULTS.md and add this "
                        "commit's rows to the history (refused with --smoke)")
    p.add_argument("--cases", default="all",
                   help="comma-separated, default all: "
                        + ", ".join(c.name for c in cases(64)))
    p.add_argument("--sizes", default="64,4096")
    p.add_argument("--calls", default=None,
                   help="N1,N2: calls in the two runs (default 200,1200; "
                        "smoke 4,12)")
    p.add_argument("--repeat", type=int, default=None,
                   help="estimates per case (each two runs); a row is the "
                        "median one (default 3; smoke 1)")
    p.add_argument("--warmup", type=int, default=None,
                   help="calls before the counted ones, in both runs "
                        "(default 20; smoke 2)")
    p.add_argument("--window", type=int, default=64,
                   help="calls in flight of the async / DEALER cases")
    p.add_argument("--timeout", type=float, default=900.0,
                   help="seconds a server may take to listen, or a client "
                        "to finish")
    p.add_argument("--cc", default=os.environ.get("CC") or "cc")
    p.add_argument("--build-dir", type=Path,
                   default=BENCH / "build" / "callgrind")
    args = p.parse_args(argv)
    if args.record and args.smoke:
        p.error("--record needs a full run, not --smoke")
    try:
        n = [int(x) for x in (args.calls or
                              ("4,12" if args.smoke else "200,1200")).split(",")]
        args.n1, args.n2 = n
    except ValueError:
        p.error("--calls: N1,N2")
    if not 0 <= args.n1 < args.n2:
        p.error("--calls: 0 <= N1 < N2")
    if args.warmup is None:
        args.warmup = 2 if args.smoke else 20
    if args.repeat is None:
        args.repeat = 1 if args.smoke else 3
    if args.repeat < 1:
        p.error("--repeat >= 1")
    args.parallel = args.smoke
    if args.warmup < 1:
        p.error("--warmup >= 1 (the connection is made during the warm-up)")
    try:
        args.sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    except ValueError:
        p.error("--sizes: comma-separated integers")
    known = {c.name: c for c in cases(args.window)}
    if args.cases == "all":
        names = list(SMOKE_CASES) if args.smoke else list(known)
    else:
        names = [s.strip() for s in args.cases.split(",") if s.strip()]
        bad = [n for n in names if n not in known]
        if bad:
            p.error(f"unknown case(s) {', '.join(bad)}; known: "
                    + ", ".join(known))
    args.cases = [known[n] for n in names]
    if args.smoke and args.sizes == [64, 4096]:
        args.sizes = [64]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("valgrind") is None:
        if args.smoke and not os.environ.get("CI"):
            log("valgrind is not installed: skipping the callgrind smoke run "
                "(CI installs it and fails without it)")
            return 0
        log("error: valgrind is not installed (Debian: apt-get install valgrind)")
        return 1
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    t0 = time.monotonic()
    build = args.build_dir.resolve()
    work = build / "out"
    work.mkdir(parents=True, exist_ok=True)
    # zmicro's key store and registry for this run (as the e2e driver):
    # emptied, so the secure probe goes through the first-run setup.
    shutil.rmtree(build / "zmicro-home", ignore_errors=True)
    env = Env(python=sys.executable, build=build, libzmq=e2e.pyzmq_libzmq())
    contenders = by_name()
    if any(c.client == "c" for c in args.cases):
        env.pingpong, env.pingpong_error = e2e.build_pingpong(args.cc, build)
    args.cg_lib, why = build_cg_start(args.cc, build)
    if args.cg_lib is None:
        log(f"error: bench/callgrind/cg_start.c did not build: {why}")
        return 1

    results: list[Result] = []
    failed: list[str] = []
    probed: dict[str, str | None] = {}
    for case in args.cases:
        contender = contenders[case.contender]
        if case.contender not in probed:
            why, info = contender.probe(env)
            probed[case.contender] = why
            if not why and info.get("plaintext_defaults"):
                log(f"{case.name}: {info['plaintext_defaults']}")
        if probed[case.contender]:
            failed.append(f"{case.name}: {probed[case.contender]}")
            log(f"{case.name}: cannot run: {probed[case.contender]}")
            continue
        if isinstance(contender, CContender) and env.pingpong is None:
            failed.append(f"{case.name}: {env.pingpong_error}")
            continue
        for size in args.sizes:
            log(f"-- {case.name}, {fmt_size(size)}")
            try:
                r = measure(case, contender, env, size, args, work)
            except Failed as e:
                failed.append(f"{case.name} {fmt_size(size)}: {e}")
                log(f"error: {e}")
                continue
            results.append(r)
            log(f"{case.name} {fmt_size(size)}: total {fmt_n(r.total)} per "
                f"call (client {fmt_n(r.client['main'])} + "
                f"{fmt_n(r.client['libzmq'])}, server "
                f"{fmt_n(r.server['main'])} + {fmt_n(r.server['libzmq'])})")

    commit = commit_label()
    doc = RESULTS.read_text() if RESULTS.exists() else ""
    previous = previous_records(read_history(doc), commit)
    text = section(args, results, env.libzmq, previous)
    print(f"\n{HEADING}\n\n{text}")
    with open(build / "results.json", "w") as f:
        json.dump(dict(commit=commit, n1=args.n1, n2=args.n2,
                       warmup=args.warmup, window=args.window,
                       repeat=args.repeat,
                       results=[dict(case=r.case.name, size=r.size,
                                     client=r.client, server=r.server,
                                     totals=r.totals, notes=r.notes,
                                     runs=r.runs)
                                for r in results],
                       failed=failed), f, indent=1)
    log(f"raw counts in {build / 'results.json'}; callgrind files in {work}; "
        f"took {time.monotonic() - t0:.0f} s")
    if failed:
        log("error: cases failed:\n  " + "\n  ".join(failed))
        return 1
    plain = [r for r in results if any(n.startswith("ran plaintext")
                                       for n in r.notes)]
    if args.record and plain:
        log("error: not recording: secure cases ran plaintext ("
            + ", ".join(sorted({r.case.name for r in plain})) + ")")
        return 1
    if args.record:
        record(text, results, commit, [c.name for c in cases(args.window)])
        log(f"recorded in {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
