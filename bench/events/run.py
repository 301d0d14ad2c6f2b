#!/usr/bin/env python3
"""Events benchmark: events/s and publish-to-handler latency, 1 publisher
to 1 group and fan-out to 4 groups, at 64 B and 4 KiB, on one machine: a
plain pyzmq PUB/SUB loop, nats-py core, nats-py JetStream (acked publish
one at a time and pipelined), and zmicro's NatsBroker on the same
nats-server (zmicro's overhead on NATS). Every publisher and subscriber is
its own process (``pubsub.py``); nats-server is Debian's, started on
free ports by ``tests/nats_server.py``.

    python bench/events/run.py --smoke    # CI: ~30 s, checks the harness only
    python bench/events/run.py            # full run, prints the tables

Each run: the subscribers (one per group, each a queue group of one member)
say READY, the publisher publishes ``--count`` events (a quarter of it for
the one-at-a-time JetStream contenders), each subscriber reports the events
it got, their publish-to-handler latency (p50, p99) and the span between its
first and last event. events/s = events received per group / that span.
``lost`` counts events a group never got (at-most-once contenders under
overload: pyzmq's high-water mark, NATS' slow-consumer drops).

Noise: the host is shared, so as bench/e2e does (its helpers are reused),
contenders run in alternating rounds (``--rounds``, the order rotating),
each row is the median over rounds with the best round beside, and a ratio
is the median over rounds of the per-round ratio, the best rows' ratio
beside. Targets (issue 12): zmicro on JetStream ≥ 0.8 × nats-py JetStream
alone, one at a time and pipelined; signed embedded ≥ 50 k events/s from one
publisher at 64 B (``zmicro-embedded``, beside the pyzmq PUB/SUB loop).
Timings never fail the run; a
contender that fails does (in --smoke: the harness has rotted).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shlex
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCH = HERE.parent
ROOT = BENCH.parent
BUILD = BENCH / "build" / "events"
sys.path.insert(0, str(ROOT))

# bench/e2e's statistics, formatting and child-process helpers, reused.
_spec = importlib.util.spec_from_file_location("e2e_run", BENCH / "e2e" / "run.py")
assert _spec is not None and _spec.loader is not None
e2e = importlib.util.module_from_spec(_spec)
sys.modules["e2e_run"] = e2e  # dataclasses look their module up
_spec.loader.exec_module(e2e)

sys.path.insert(0, str(HERE))
from pubsub import NAMES  # noqa: E402

from tests.nats_server import NatsServer  # noqa: E402

ONE_AT_A_TIME = ("nats-js", "zmicro-nats", "zmicro-nats-async", "zmicro-publisher",
                 "zmicro-publisher-async")
# Targets: (numerator, denominator, bound) on events/s and on publishes/s,
# judged on the median. The asyncio publisher is the like-for-like one
# (nats-py is asyncio); the sync one runs a loop of the calling thread's own.
TARGETS = [("zmicro-nats-async", "nats-js", 0.8),
           ("zmicro-nats", "nats-js", 0.8),
           ("zmicro-nats-pipelined", "nats-js-pipelined", 0.8),
           ("zmicro-publisher-async", "nats-js", 0.8),
           ("zmicro-publisher", "nats-js", 0.8),
           ("zmicro-publisher-pipelined", "nats-js-pipelined", 0.8)]
# Absolute targets: (contender, size, events/s per group), 1 group, median.
FLOORS = [("zmicro-embedded", 64, 50_000.0)]
log = e2e.log


@dataclass
class Run:
    rate: float               # events/s received, per group
    pub_rate: float           # publishes/s returned, at the publisher
    p50_ns: float
    p99_ns: float
    lost: int
    round: int


@dataclass
class Row:
    name: str
    runs: list[Run] = field(default_factory=list)
    failed: str = ""

    @property
    def rate(self) -> float:
        return e2e.median([r.rate for r in self.runs])

    @property
    def best_rate(self) -> float:
        return max(r.rate for r in self.runs)

    def value(self, metric: str) -> float:
        return e2e.median([getattr(r, metric) for r in self.runs])

    def best(self, metric: str) -> float:
        return max(getattr(r, metric) for r in self.runs)


class Failed(Exception):
    pass


def spawn(name: str, role: str, *args: str) -> subprocess.Popen:
    cmd = [sys.executable, str(HERE / "pubsub.py"), name, role, *args]
    log("$ " + shlex.join(cmd))
    return subprocess.Popen(cmd, cwd=HERE, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=e2e._child_setup)


def result(proc: subprocess.Popen, what: str, timeout: float) -> dict:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise Failed(f"{what} did not finish in {timeout:.0f} s: {e2e.tail(err)}") from None
    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise Failed(f"{what} exited {proc.returncode}: {e2e.tail(err) or e2e.tail(out)}")
    return json.loads(lines[-1])


def run_one(name: str, url: str, size: int, groups: int, count: int, rnd: int) -> Run:
    if name == "pyzmq-pubsub":
        url = f"tcp://127.0.0.1:{e2e.free_port()}"
    if name in ONE_AT_A_TIME:
        count = max(1, count // 4)
    topic = f"bench.{uuid.uuid4().hex[:12]}"
    common = ["--url", url, "--topic", topic, "--count", str(count)]
    subs = []
    try:
        for g in range(groups):
            p = spawn(name, "sub", *common, "--group", f"g{g}")
            subs.append(p)
            line = p.stdout.readline().strip() if p.stdout else ""
            if line != "READY":
                raise Failed(f"subscriber did not start ({line!r}): {e2e.tail(p.stderr.read())}")
        pub = spawn(name, "pub", *common, "--size", str(size), "--groups", str(groups))
        published = result(pub, "publisher", count / 500 + 60)
        got = [result(p, "subscriber", count / 500 + 60) for p in subs]
    finally:
        for p in subs:
            if p.poll() is None:
                p.kill()
                p.wait()
    received = sum(g["received"] for g in got)
    if not received:
        raise Failed("no event arrived")
    spans = [(g["last_ns"] - g["first_ns"]) / 1e9 for g in got if g["received"] > 1]
    rate = (received / groups) / max(max(spans, default=0.0), 1e-9)
    pub_rate = published["published"] / max(published["elapsed_ns"] / 1e9, 1e-9)
    return Run(rate=rate, pub_rate=pub_rate, p50_ns=max(g["p50_ns"] for g in got),
               p99_ns=max(g["p99_ns"] for g in got), lost=count * groups - received,
               round=rnd)


def available(name: str) -> str:
    proc = subprocess.run([sys.executable, str(HERE / "pubsub.py"), name, "probe"],
                          cwd=HERE, capture_output=True, text=True, timeout=120)
    return "" if proc.returncode == 0 else (e2e.tail(proc.stderr) or "probe failed")


def report(rows: dict[tuple[int, int], dict[str, Row]], smoke: bool) -> list[str]:
    out = []
    if smoke:
        out.append("(smoke run: the figures below mean nothing)\n")
    for (size, groups), by_name in rows.items():
        out.append(f"### {e2e.fmt_size(size)}, {groups} group{'s' if groups > 1 else ''}\n")
        out.append("| contender | events/s per group (median) | best round | publishes/s "
                   "| p50 µs | p99 µs | lost |")
        out.append("|---|---:|---:|---:|---:|---:|---:|")
        for name, row in by_name.items():
            if not row.runs:
                out.append(f"| {name} | failed: {e2e.cell(row.failed, 80)} | | | | | |")
                continue
            out.append(
                f"| {name} | {e2e.fmt_rate(row.rate)} | {e2e.fmt_rate(row.best_rate)} "
                f"| {e2e.fmt_rate(row.value('pub_rate'))} "
                f"| {e2e.fmt_us(e2e.median([r.p50_ns for r in row.runs]))} "
                f"| {e2e.fmt_us(e2e.median([r.p99_ns for r in row.runs]))} "
                f"| {max(r.lost for r in row.runs)} |")
        out.append("")
        for num, den, bound in TARGETS:
            a, b = by_name.get(num), by_name.get(den)
            if not (a and b and a.runs and b.runs):
                continue
            for metric, what in (("rate", "events/s"), ("pub_rate", "publishes/s")):
                per_round = {r.round: getattr(r, metric) for r in b.runs}
                ratios = [getattr(r, metric) / per_round[r.round] for r in a.runs
                          if per_round.get(r.round)]
                if not ratios:
                    continue
                ratio = e2e.median(ratios)
                verdict = "met" if ratio >= bound else "missed"
                out.append(f"- {num} {what} ≥ {bound} × {den}: ratio {ratio:.2f} "
                           f"(best rounds {a.best(metric) / b.best(metric):.2f}): "
                           f"**{verdict}**")
        for num, at, floor in FLOORS:
            row = by_name.get(num)
            if at != size or groups != 1 or not (row and row.runs):
                continue
            verdict = "met" if row.rate >= floor else "missed"
            out.append(f"- {num} events/s ≥ {e2e.fmt_rate(floor)} (one publisher): "
                       f"{e2e.fmt_rate(row.rate)} (best round {e2e.fmt_rate(row.best_rate)}): "
                       f"**{verdict}**")
        out.append("")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--contenders", default=",".join(NAMES),
                   help="comma-separated, of: " + ", ".join(NAMES))
    p.add_argument("--sizes", default="64,4096")
    p.add_argument("--groups", default="1,4")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--count", type=int, default=20000,
                   help="events per run (a quarter for the one-at-a-time JetStream ones)")
    p.add_argument("--smoke", action="store_true",
                   help="one round, 64 B, 1 group, 400 events: checks the harness")
    a = p.parse_args(argv)
    names = [n.strip() for n in a.contenders.split(",") if n.strip()]
    unknown = set(names) - set(NAMES)
    if unknown:
        p.error(f"unknown contenders: {', '.join(sorted(unknown))}")
    sizes = [int(s) for s in a.sizes.split(",")]
    groups = [int(g) for g in a.groups.split(",")]
    rounds, count = a.rounds, a.count
    if a.smoke:
        sizes, groups, rounds, count = [64], [1], 1, 400
    BUILD.mkdir(parents=True, exist_ok=True)
    # The zmicro-publisher contenders' key store and registry, every child's
    # (as bench/e2e's secure contenders): never the user's own.
    for var, path in (("ZMICRO_HOME", BUILD / "home"), ("ZMICRO_REGISTRY_DIR", BUILD / "registry")):
        path.mkdir(exist_ok=True)
        path.chmod(0o700)
        os.environ[var] = str(path)
    for var in ("ZMICRO_KEY", "ZMICRO_TRUSTED", "ZMICRO_MAC_KEYS", "ZMICRO_INSECURE"):
        os.environ.pop(var, None)
    if any(n.startswith(("zmicro-publisher", "zmicro-embedded")) for n in names):
        # The identity and MAC secrets, made once here, not raced for by
        # the first publisher and subscriber.
        subprocess.run([sys.executable, "-c", "from zmicro.security import Security; "
                        "Security.resolve()"], check=False, timeout=120)

    rows: dict[tuple[int, int], dict[str, Row]] = {
        (s, g): {n: Row(n) for n in names} for s in sizes for g in groups}
    unavailable = {n: why for n in names if (why := available(n))}
    for n, why in unavailable.items():
        for by_name in rows.values():
            by_name[n].failed = f"unavailable: {why}"

    server = NatsServer(BUILD / "nats")
    server.start()
    log(f"nats-server {server.url} (store {server.store_dir})")
    results = []
    try:
        for rnd in range(rounds):
            for (size, ngroups), by_name in rows.items():
                order = [n for n in names if n not in unavailable]
                shift = rnd % max(1, len(order))
                for name in order[shift:] + order[:shift]:
                    row = by_name[name]
                    try:
                        run = run_one(name, server.url, size, ngroups, count, rnd)
                    except Failed as e:
                        row.failed = str(e)
                        log(f"{name}: FAILED: {e}")
                        continue
                    row.runs.append(run)
                    results.append({"contender": name, "size": size, "groups": ngroups,
                                    **run.__dict__})
                    log(f"{name} {size} B x{ngroups}: {run.rate:,.0f} ev/s, "
                        f"{run.pub_rate:,.0f} pub/s, "
                        f"p50 {run.p50_ns / 1e3:.0f} µs, p99 {run.p99_ns / 1e3:.0f} µs, "
                        f"lost {run.lost}")
    finally:
        server.cleanup()
    (BUILD / "results.json").write_text(json.dumps(results, indent=1))
    print("\n".join(report(rows, a.smoke)))
    failed = [f"{n} ({s} B x{g}): {r.failed}" for (s, g), by in rows.items()
              for n, r in by.items() if r.failed]
    if failed:
        print("failed:\n  " + "\n  ".join(failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
