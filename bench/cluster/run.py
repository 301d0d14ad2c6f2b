#!/usr/bin/env python3
"""Cluster benchmark: how zmicro's balancing, pool and multi-process
serving behave with several nodes, every node its own process on loopback,
with the secure defaults.

    python bench/cluster/run.py --smoke     # CI: quick, checks the harness only
    python bench/cluster/run.py             # full run, prints the tables
    python bench/cluster/run.py --record    # full run, then update RESULTS.md

1. One slow node among three (it answers after 10 ms, the others after
   1 ms), 4 and 16 calls in flight from one AsyncClient: the share of calls
   the slow node got, per-call p50 / p90 / p99 / mean, per selector, and the
   p99 and mean as ratios to round robin's.
2. Throughput with 1 and with 2 server processes (64 calls in flight from
   one AsyncClient), for an echo and for a handler that keeps the CPU busy
   200 µs per call: calls/s and the ratio 2 / 1.
3. Per-call cost with 1 to 1,000 pooled peers: a blocking client calling
   round robin over N nodes (every call another socket of its pool, all
   open), p50 / p99 and the ratio to one peer.

Noise: the host is shared; each row is the best of ``--repeat`` rounds for
p50 and calls/s and the median of the rounds' p99s. Only ratios measured in
the same run mean anything.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import zmq

import zmicro
from zmicro.registry import EmbeddedRegistry

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
RESULTS = ROOT / "bench" / "RESULTS.md"
BEGIN = "<!-- cluster:begin: written by bench/cluster/run.py --record -->"
END = "<!-- cluster:end -->"
SELECTORS = ("round_robin", "random", "p2c", "peak_ewma")


def log(msg: str) -> None:
    print(f"[cluster] {msg}", file=sys.stderr, flush=True)


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * (len(s) - 1) + 0.5))]


class Nodes:
    """Node processes (bench/cluster/node.py) of one service."""

    def __init__(self, name: str, registry_dir: str) -> None:
        self.name, self.registry_dir, self.procs = name, registry_dir, []

    def start(self, delay_ms: float = 0, extra: int = 0) -> str:
        proc = subprocess.Popen(
            [sys.executable, str(HERE / "node.py"), self.name, self.registry_dir,
             str(delay_ms), str(extra)], stdout=subprocess.PIPE, text=True)
        self.procs.append(proc)
        line = proc.stdout.readline().split()
        if not line or line[0] != "READY":
            raise RuntimeError(f"node of {self.name} did not start")
        return line[1]

    def stop(self) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()


# -- 1. one slow node ----------------------------------------------------------------


async def _slow_round(registry, name: str, selector: str, calls: int, inflight: int,
                      slow: str) -> dict:
    async with zmicro.AsyncClient(registry=registry, selector=selector, timeout=30) as c:
        for _ in range(30):  # warm every channel
            await c.call(name, "Bench.Echo", 0)
        lat: list[float] = []
        on_slow = 0
        left = calls

        async def worker() -> None:
            nonlocal left, on_slow
            while left > 0:
                left -= 1
                t0 = time.perf_counter()
                pid = await c.call(name, "Bench.Who", 0)
                lat.append(time.perf_counter() - t0)
                on_slow += pid == slow

        await asyncio.gather(*[worker() for _ in range(inflight)])
        return {"p50": pct(lat, 0.5), "p90": pct(lat, 0.9), "p99": pct(lat, 0.99),
                "mean": statistics.fmean(lat), "slow_share": on_slow / calls}


def bench_slow_node(tmp: str, calls: int, repeat: int) -> list[dict]:
    name = "bench-slow"
    nodes = Nodes(name, tmp)
    try:
        nodes.start(1.0)
        nodes.start(1.0)
        nodes.start(10.0)
        slow = nodes.procs[-1].pid
        registry = EmbeddedRegistry(tmp)
        rows = []
        for inflight in (4, 16):
            for selector in SELECTORS:
                rounds = [asyncio.run(_slow_round(registry, name, selector, calls, inflight,
                                                  slow))
                          for _ in range(repeat)]
                rows.append({"selector": selector, "inflight": inflight,
                             "p50": min(r["p50"] for r in rounds),
                             **{k: statistics.median(r[k] for r in rounds)
                                for k in ("p90", "p99", "mean", "slow_share")}})
                log(f"slow node: {rows[-1]}")
        return rows
    finally:
        nodes.stop()


# -- 2. 1 versus 2 server processes ----------------------------------------------------


async def _throughput_round(registry, name: str, seconds: float, inflight: int,
                            endpoint: str, req: int) -> float:
    async with zmicro.AsyncClient(registry=registry, timeout=30) as c:
        for _ in range(50):
            await c.call(name, endpoint, req)
        done = 0
        end = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal done
            while time.perf_counter() < end:
                await c.call(name, endpoint, req)
                done += 1

        t0 = time.perf_counter()
        await asyncio.gather(*[worker() for _ in range(inflight)])
        return done / (time.perf_counter() - t0)


def bench_processes(tmp: str, seconds: float, repeat: int) -> list[dict]:
    rows = []
    for n in (1, 2):
        name = f"bench-procs-{n}"
        nodes = Nodes(name, tmp)
        try:
            for _ in range(n):
                nodes.start(0)
            registry = EmbeddedRegistry(tmp)
            for label, endpoint, req in (("echo", "Bench.Echo", 0),
                                         ("200 µs of CPU per call", "Bench.Work", 200)):
                rates = [asyncio.run(_throughput_round(registry, name, seconds, 64,
                                                       endpoint, req))
                         for _ in range(repeat)]
                rows.append({"processes": n, "work": label, "calls_per_s": max(rates)})
                log(f"processes: {rows[-1]}")
        finally:
            nodes.stop()
    return rows


# -- 3. pooled peers -------------------------------------------------------------------


def bench_peers(tmp: str, counts: tuple[int, ...], calls: int, repeat: int) -> list[dict]:
    rows = []
    zctx = zmq.Context()
    zctx.set(zmq.MAX_SOCKETS, 8192)
    for n in counts:
        name = f"bench-peers-{n}"
        nodes = Nodes(name, tmp)
        try:
            nodes.start(0, extra=n - 1)
            registry = EmbeddedRegistry(tmp)
            with zmicro.Client(registry=registry, timeout=30, context=zctx,
                               max_sockets=n + 8) as c:
                for _ in range(n):  # open every channel
                    c.call(name, "Bench.Echo", 0)
                assert c.stats()["open"] == n, c.stats()
                p50s, p99s = [], []
                for _ in range(repeat):
                    lat = []
                    for _ in range(calls):
                        t0 = time.perf_counter()
                        c.call(name, "Bench.Echo", 0)
                        lat.append(time.perf_counter() - t0)
                    p50s.append(pct(lat, 0.5))
                    p99s.append(pct(lat, 0.99))
                rows.append({"peers": n, "p50": min(p50s), "p99": statistics.median(p99s),
                             "open": c.stats()["open"]})
            log(f"peers: {rows[-1]}")
        finally:
            nodes.stop()
    zctx.term()
    return rows


# -- report ----------------------------------------------------------------------------


def us(v: float) -> str:
    return f"{v * 1e6:,.0f}"


def report(slow: list[dict], procs: list[dict], peers: list[dict], args) -> str:
    out = [f"- Date: {datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC",
           f"- Machine: {platform.machine()}, {os.cpu_count()} cores, load average "
           f"{' / '.join(f'{x:.2f}' for x in os.getloadavg())} at the end",
           f"- zmicro {zmicro.__version__}, Python {platform.python_version()}, "
           f"pyzmq {zmq.__version__}, libzmq {zmq.zmq_version()}; secure defaults "
           f"(CurveZMQ + MAC); {args.repeat} rounds per row" + (" (SMOKE: not a measurement)"
                                                                if args.smoke else ""),
           "", "One slow node among three (its handler waits 10 ms, the others' 1 ms):", "",
           "| In flight | Selector | calls on the slow node | p50 µs | p90 µs | p99 µs "
           "| mean µs | p99 / round robin's | mean / round robin's |",
           "|--:|---|--:|--:|--:|--:|--:|--:|--:|"]
    for r in slow:
        rr = next(x for x in slow if x["selector"] == "round_robin"
                  and x["inflight"] == r["inflight"])
        out.append(f"| {r['inflight']} | {r['selector']} | {r['slow_share']:.1%} | "
                   f"{us(r['p50'])} | {us(r['p90'])} | {us(r['p99'])} | {us(r['mean'])} | "
                   f"{r['p99'] / rr['p99']:.2f} | {r['mean'] / rr['mean']:.2f} |")
    out += ["", "Server processes (64 calls in flight from one AsyncClient process):", "",
            "| Handler | Processes | calls/s | ratio to 1 process |", "|---|--:|--:|--:|"]
    for r in procs:
        one = next(x["calls_per_s"] for x in procs
                   if x["work"] == r["work"] and x["processes"] == 1)
        out.append(f"| {r['work']} | {r['processes']} | {r['calls_per_s']:,.0f} | "
                   f"{r['calls_per_s'] / one:.2f} |")
    base = peers[0]["p50"]
    out += ["", "Pooled peers (blocking client, round robin: every call another open "
            "socket):", "", "| Peers | p50 µs | p99 µs | p50 / one peer's |", "|--:|--:|--:|--:|"]
    for r in peers:
        out.append(f"| {r['peers']:,} | {us(r['p50'])} | {us(r['p99'])} | "
                   f"{r['p50'] / base:.2f} |")
    return "\n".join(out)


def record(section: str) -> None:
    text = RESULTS.read_text()
    block = f"{BEGIN}\n{section}\n{END}"
    if BEGIN in text:
        head, rest = text.split(BEGIN, 1)
        text = head + block + rest.split(END, 1)[1]
    else:
        text += ("\n## Cluster: balancing, pool, processes\n\n"
                 "Written by `bench/cluster/run.py` (what it measures is in its "
                 "docstring).\n\n" + block + "\n")
    RESULTS.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--record", action="store_true")
    parser.add_argument("--repeat", type=int, default=0)
    args = parser.parse_args(argv)
    if args.record and args.smoke:
        parser.error("--record needs a full run")
    args.repeat = args.repeat or (1 if args.smoke else 3)
    calls = 200 if args.smoke else 5000
    seconds = 0.5 if args.smoke else 3.0
    counts = (1, 10) if args.smoke else (1, 10, 100, 1000)
    peer_calls = 200 if args.smoke else 5000
    with tempfile.TemporaryDirectory(prefix="zmicro-cluster-") as tmp:
        os.chmod(tmp, 0o700)
        slow = bench_slow_node(tmp, calls, args.repeat)
        procs = bench_processes(tmp, seconds, args.repeat)
        peers = bench_peers(tmp, counts, peer_calls, args.repeat)
    section = report(slow, procs, peers, args)
    print(section)
    if args.record:
        record(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
