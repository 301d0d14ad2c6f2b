"""Baseline: a plain pyzmq DEALER/ROUTER echo, written the way a typical user
writes it: blocking ``send_multipart``/``recv_multipart`` with default
options, a request id frame to match replies, no tuning.

Frames: the DEALER sends ``[id (8 bytes), body]``; the ROUTER receives
``[routing id, id, body]`` and sends it back as it came.
"""

from __future__ import annotations

import time

from harness import HOST, Meter, run, time_calls, wait_ready


def probe() -> None:
    import zmq  # noqa: F401


def info() -> dict:
    import zmq

    return {"pyzmq": zmq.__version__, "libzmq": zmq.zmq_version()}


def server(args) -> None:
    import zmq

    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    sock.linger = 0
    sock.bind(f"tcp://{HOST}:{args.port}")
    while True:
        frames = sock.recv_multipart()
        sock.send_multipart(frames)


def _dealer(args):
    import zmq

    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.linger = 0
    sock.rcvtimeo = args.timeout_ms
    sock.connect(f"tcp://{HOST}:{args.port}")
    return sock


def latency(args, body: bytes):
    sock = _dealer(args)
    counter = iter(range(1 << 62))

    def call(body: bytes) -> bytes:
        rid = next(counter).to_bytes(8, "little")
        sock.send_multipart([rid, body])
        got, reply = sock.recv_multipart()
        if got != rid:
            raise RuntimeError("reply to another request")
        return reply

    return time_calls(call, body, args.warmup, args.iterations)


def throughput(args, body: bytes):
    sock = _dealer(args)
    meter = Meter(args.warmup_seconds, args.seconds)
    in_flight: dict[bytes, int] = {}
    seq = 0
    reply = b""

    def send() -> None:
        nonlocal seq
        rid = seq.to_bytes(8, "little")
        seq += 1
        in_flight[rid] = time.perf_counter_ns()
        sock.send_multipart([rid, body])

    for _ in range(args.window):
        send()
    sending = True
    while in_flight:
        rid, reply = sock.recv_multipart()
        sending = meter.done(in_flight.pop(rid)) and sending
        if sending:
            send()
    return meter.samples, meter.calls, meter.elapsed_ns, reply


def ping(args, body: bytes) -> None:
    import zmq

    def once(left: float) -> None:
        sock = _dealer(args)
        sock.rcvtimeo = int(left * 1000)
        try:
            sock.send_multipart([b"ping", body])
            sock.recv_multipart()
        finally:
            sock.close()

    try:
        wait_ready(once, args.timeout_ms / 1000)
    except zmq.Again:
        raise SystemExit("no reply within the timeout") from None


if __name__ == "__main__":
    run(probe=probe, server=server, latency=latency, throughput=throughput,
        ping=ping, info=info)

