"""The client and server side of every Python contender: one command line, one
timing method, one output format, so that run.py treats them (and the C
program, which follows the same conventions) alike.

A contender module calls ``main(argv, server=..., latency=..., ...)`` from its
``__main__`` block; this module parses the command line and runs the piece
asked for::

    python -m contenders.X probe             import what the contender needs
    python -m contenders.X server --port P   serve the echo until killed
    python -m contenders.X client --port P --mode latency|throughput|ping
        --size N --iterations N --warmup N --window N --seconds S
        --warmup-seconds S --timeout-ms T --out FILE
    python -m contenders.X client --port P --mode ping --plaintext
                                             (secure contenders: see below)

Timing: ``time.perf_counter_ns`` (CLOCK_MONOTONIC on Linux, as the C
program). Latency mode times each call around send + reply after ``--warmup``
discarded calls. Throughput mode keeps ``--window`` calls in flight; a
:class:`Meter` counts the replies that arrive in the ``--seconds`` after
``--warmup-seconds`` and takes each one's latency (its send to its reply).

Output: the samples as raw native int64 ns in ``--out``; on stdout one JSON
object ``{"mode", "size", "window", "calls", "elapsed_ns", "info"}``. Only the
standard library is imported here: what a contender needs is imported by its
own functions, so a missing package makes that contender unavailable and
nothing else.

Secure contenders also answer ``--mode ping --plaintext``: one call to their
server *without* the security (a plaintext channel, ``insecure=True``), which
the server must refuse. Exit status 0: it answered (the server is not
secure); :data:`NO_ANSWER` (3, as the C program on a timeout): no answer,
the reason on stderr; anything else: the check itself failed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from array import array
from collections.abc import Callable
from typing import Any

HOST = "127.0.0.1"
NO_ANSWER = 3  # exit status: the call got no answer (timeout, refused)


class NoAnswer(Exception):
    """Raised by a ``plaintext_ping``: the server did not answer the
    plaintext call (what a secure server must do)."""


def payload(size: int) -> bytes:
    """The request body: ``size`` bytes, not all equal (a body that
    compresses to nothing would flatter a transport that compresses)."""
    return bytes((i * 31 + 7) & 0xFF for i in range(size))


class Meter:
    """Counts replies in the measured span of a throughput run and records
    their latency. ``done(t0)`` returns whether to keep sending: False once
    the span is over, then the caller only drains what is in flight."""

    def __init__(self, warmup_s: float, seconds: float) -> None:
        now = time.perf_counter_ns()
        self.begin = now + int(warmup_s * 1e9)
        self.end = self.begin + int(seconds * 1e9)
        self.samples = array("q")
        self.calls = 0

    def done(self, t0: int) -> bool:
        t1 = time.perf_counter_ns()
        if self.begin <= t1 < self.end:
            self.samples.append(t1 - t0)
            self.calls += 1
        return t1 < self.end

    @property
    def elapsed_ns(self) -> int:
        return self.end - self.begin


def time_calls(call: Callable[[bytes], bytes], body: bytes, warmup: int,
               iterations: int) -> tuple[array, int, bytes]:
    """Sequential calls: (per-call ns after the warm-up, ns for the timed
    calls, last reply)."""
    now = time.perf_counter_ns
    reply = b""
    for _ in range(warmup):
        reply = call(body)
    samples = array("q", bytes(8 * iterations))
    start = now()
    for i in range(iterations):
        t0 = now()
        reply = call(body)
        samples[i] = now() - t0
    return samples, now() - start, reply


async def time_calls_async(call: Callable[[bytes], Any], body: bytes,
                           warmup: int, iterations: int
                           ) -> tuple[array, int, bytes]:
    """As :func:`time_calls`, awaiting ``call(body)`` each time."""
    now = time.perf_counter_ns
    reply = b""
    for _ in range(warmup):
        reply = await call(body)
    samples = array("q", bytes(8 * iterations))
    start = now()
    for i in range(iterations):
        t0 = now()
        reply = await call(body)
        samples[i] = now() - t0
    return samples, now() - start, reply


def wait_ready(try_call: Callable[[float], object], timeout_s: float) -> None:
    """Health check: ``try_call(seconds_left)`` until it returns without
    raising, or raise the last error when the time is up."""
    deadline = time.monotonic() + timeout_s
    while True:
        left = deadline - time.monotonic()
        try:
            try_call(max(left, 0.05))
            return
        except Exception:
            if time.monotonic() + 0.05 >= deadline:
                raise
            time.sleep(0.05)


def check_echo(body: bytes, reply: object) -> None:
    if bytes(reply) != body:  # type: ignore[call-overload]
        raise SystemExit(f"echo differs from the request ({len(body)} bytes "
                         f"sent, {len(bytes(reply))} received)")  # type: ignore


def emit(args: argparse.Namespace, samples: array, calls: int,
         elapsed_ns: int, info: dict | None = None) -> None:
    if args.out:
        with open(args.out, "wb") as f:
            samples.tofile(f)
    window = args.window if args.mode == "throughput" else 1
    print(json.dumps(dict(mode=args.mode, size=args.size, window=window,
                          calls=calls, elapsed_ns=elapsed_ns,
                          info=info or {})), flush=True)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    p.add_argument("command", choices=("probe", "server", "client"))
    p.add_argument("--port", type=int)
    p.add_argument("--mode", choices=("latency", "throughput", "ping"),
                   default="latency")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--iterations", type=int, default=10000)
    p.add_argument("--warmup", type=int, default=1000)
    p.add_argument("--window", type=int, default=64)
    p.add_argument("--seconds", type=float, default=2.0)
    p.add_argument("--warmup-seconds", type=float, default=0.3)
    p.add_argument("--timeout-ms", type=int, default=5000)
    p.add_argument("--out")
    p.add_argument("--plaintext", action="store_true",
                   help="with --mode ping: call without the contender's "
                        "security (its server must refuse)")
    args = p.parse_args(argv)
    if args.command != "probe" and args.port is None:
        p.error("--port is required")
    return args


def main(*, probe: Callable[[], object], server: Callable[[argparse.Namespace], object],
         latency: Callable[[argparse.Namespace, bytes], tuple[array, int, bytes]] | None = None,
         throughput: Callable[[argparse.Namespace, bytes], tuple[array, int, int, bytes]] | None = None,
         ping: Callable[[argparse.Namespace, bytes], object] | None = None,
         plaintext_ping: Callable[[argparse.Namespace, bytes], object] | None = None,
         info: Callable[[], dict] | None = None,
         argv: list[str] | None = None) -> int:
    """Entry point of a contender module.

    probe()                         import the dependencies (raise if missing)
    server(args)                    serve on ``args.port`` until killed
    latency(args, body)             -> (samples, elapsed_ns, last reply)
    throughput(args, body)          -> (samples, calls, elapsed_ns, last reply)
    ping(args, body)                one call within ``args.timeout_ms``
    plaintext_ping(args, body)      secure contenders: one call without the
                                    security; raise NoAnswer if none came,
                                    else may return how it was answered
    info()                          versions etc. for the report
    """
    args = parse(argv)
    if args.command == "probe":
        probe()
        print(json.dumps(info() if info else {}))
        return 0
    if args.command == "server":
        server(args)
        return 0
    body = payload(args.size)
    if args.plaintext:
        if args.mode != "ping" or plaintext_ping is None:
            raise SystemExit("--plaintext: only --mode ping of a secure contender")
        try:
            how = plaintext_ping(args, body)
        except NoAnswer as e:
            print(f"no answer to a plaintext call: {e}", file=sys.stderr)
            return NO_ANSWER
        print("the server answered a plaintext call"
              + (f": {how}" if isinstance(how, str) and how else ""),
              file=sys.stderr)
        return 0
    extra = info() if info else {}
    if args.mode == "ping":
        if ping is None:
            raise SystemExit("no ping for this contender")
        ping(args, body)
        emit(args, array("q"), 0, 0, extra)
    elif args.mode == "latency":
        if latency is None:
            raise SystemExit("this contender has no latency mode")
        samples, elapsed, reply = latency(args, body)
        check_echo(body, reply)
        emit(args, samples, len(samples), elapsed, extra)
    else:
        if throughput is None:
            raise SystemExit("this contender has no throughput mode")
        samples, calls, elapsed, reply = throughput(args, body)
        check_echo(body, reply)
        emit(args, samples, calls, elapsed, extra)
    return 0


def run(**kw: Any) -> None:
    """``main`` with the exit code handed to the interpreter."""
    sys.exit(main(**kw))
