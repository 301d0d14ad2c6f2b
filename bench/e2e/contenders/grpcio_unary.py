"""Baseline: grpcio, a unary call carrying raw bytes.

No generated code: the server registers a generic handler for
``/bench.Bench/Echo`` and the client calls ``channel.unary_unary`` on that
path; with no serializers on either side grpcio passes the bytes through
as they are (the identity serializer). Insecure channel and port, the sync
server with a thread pool of 10 (the size grpc's own examples use), default
channel options.

Throughput keeps ``--window`` calls outstanding with ``.future()``: each
call's done-callback records its latency and starts the next one, so there
are always exactly ``window`` in flight and every latency ends when the
reply arrives (not when the loop gets round to it).

The server's port and the client's channel are parameters (``add_port``,
``make_channel``): ``grpcio_tls.py`` runs the same code over TLS.
"""

from __future__ import annotations

import threading
import time

from harness import HOST, Meter, run, time_calls, wait_ready

METHOD = "/bench.Bench/Echo"


def probe() -> None:
    import grpc  # noqa: F401


def info() -> dict:
    import grpc

    return {"grpcio": grpc.__version__}


def insecure_port(srv, address: str) -> int:
    return srv.add_insecure_port(address)


def insecure_channel(args):
    import grpc

    return grpc.insecure_channel(f"{HOST}:{args.port}")


def server(args, add_port=insecure_port) -> None:
    from concurrent import futures

    import grpc

    def echo(request: bytes, context) -> bytes:
        return request

    handler = grpc.method_handlers_generic_handler(
        "bench.Bench", {"Echo": grpc.unary_unary_rpc_method_handler(echo)})
    srv = grpc.server(futures.ThreadPoolExecutor(max_workers=10))
    srv.add_generic_rpc_handlers((handler,))
    if add_port(srv, f"{HOST}:{args.port}") == 0:
        raise SystemExit(f"cannot bind {HOST}:{args.port}")
    srv.start()
    srv.wait_for_termination()


def _stub(args, make_channel):
    channel = make_channel(args)
    return channel, channel.unary_unary(METHOD)


def latency(args, body: bytes, make_channel=insecure_channel):
    _, echo = _stub(args, make_channel)
    timeout = args.timeout_ms / 1000

    def call(body: bytes) -> bytes:
        return echo(body, timeout=timeout)

    return time_calls(call, body, args.warmup, args.iterations)


def throughput(args, body: bytes, make_channel=insecure_channel):
    _, echo = _stub(args, make_channel)
    timeout = args.timeout_ms / 1000
    meter = Meter(args.warmup_seconds, args.seconds)
    lock = threading.Lock()
    finished = threading.Event()
    state = {"in_flight": 0, "sending": True, "error": None, "reply": b""}

    def start() -> None:
        t0 = time.perf_counter_ns()
        try:
            future = echo.future(body, timeout=timeout)
        except Exception as e:  # a failing call must end the run
            with lock:
                state["error"] = state["error"] or e
                state["sending"] = False
                state["in_flight"] -= 1
                if state["in_flight"] == 0:
                    finished.set()
            return
        future.add_done_callback(lambda f: on_done(f, t0))

    def on_done(future, t0: int) -> None:
        keep = meter.done(t0)
        try:
            error = future.exception()
        except Exception as e:  # cancelled
            error = e
        with lock:
            if error is not None and state["error"] is None:
                state["error"] = error
            state["sending"] = state["sending"] and keep and state["error"] is None
            again = state["sending"]
            if not again:
                state["in_flight"] -= 1
                if state["in_flight"] == 0:
                    finished.set()
        if error is None:
            state["reply"] = future.result()
        if again:
            start()

    with lock:
        state["in_flight"] = args.window
    for _ in range(args.window):
        start()
    if not finished.wait(args.warmup_seconds + args.seconds + timeout + 30):
        raise SystemExit("throughput run did not finish")
    if state["error"] is not None:
        raise SystemExit(f"call failed: {state['error']!r}")
    return meter.samples, meter.calls, meter.elapsed_ns, state["reply"]


def ping(args, body: bytes, make_channel=insecure_channel) -> None:
    import grpc

    channel, echo = _stub(args, make_channel)
    try:
        grpc.channel_ready_future(channel).result(timeout=args.timeout_ms / 1000)
        wait_ready(lambda left: echo(body, timeout=left), 2.0)
    except grpc.FutureTimeoutError:
        raise SystemExit("server not ready within the timeout") from None


if __name__ == "__main__":
    run(probe=probe, server=server, latency=latency, throughput=throughput,
        ping=ping, info=info)
