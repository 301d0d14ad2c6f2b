"""zmicro, asyncio client: ``AsyncClient.call`` returns a Future.

Latency awaits one call at a time. Throughput keeps ``--window`` Futures
outstanding: each one's done-callback records its latency and issues the
next call, so exactly ``window`` are in flight and no Task is created per
call (a Task per call, as ``asyncio.gather`` over coroutines does, caps
asyncio itself near 62 k calls/s on this machine class: see the design's
asyncio notes); the client's cost is what is measured, not asyncio's.

Plaintext (``insecure=True``); ``zmicro_secure_async.py`` runs it with the
defaults. ``loop="uvloop"`` (``zmicro_async_uvloop.py``,
``zmicro_secure_async_uvloop.py``) runs the same code on uvloop's event loop
instead of asyncio's: the client's own work is the same, the event loop's
(its Futures' callbacks, its ready queue) costs less.
"""

from __future__ import annotations

import asyncio
import time

from harness import Meter, run, time_calls_async

from contenders import zmicro_service as svc


def probe(secure: bool = False, loop: str = "asyncio") -> None:
    if loop == "uvloop":
        try:
            import uvloop  # noqa: F401
        except ImportError:
            raise SystemExit("uvloop is not installed (pip install uvloop)") from None
    svc.probe("AsyncClient", secure=secure)


def _run(main, loop: str):
    """main() on asyncio's event loop or on uvloop's."""
    if loop == "uvloop":
        import uvloop
        return uvloop.run(main())
    return asyncio.run(main())


def _client(args, secure: bool = False):
    import zmicro

    svc.require_home()
    if secure:
        client = svc.with_defaults("zmicro.AsyncClient()", zmicro.AsyncClient)
    else:
        client = zmicro.AsyncClient(insecure=True)
    addr = svc.address(args.port)
    timeout = args.timeout_ms / 1000

    def call(body: bytes, timeout: float = timeout):
        return client.call(svc.SERVICE, svc.ENDPOINT, body, address=addr,
                           content_type=svc.CONTENT_TYPE, timeout=timeout)

    return call


def latency(args, body: bytes, secure: bool = False, loop: str = "asyncio"):
    async def main():
        return await time_calls_async(_client(args, secure), body,
                                      args.warmup, args.iterations)

    return _run(main, loop)


def throughput(args, body: bytes, secure: bool = False, loop: str = "asyncio"):
    async def main():
        call = _client(args, secure)
        loop = asyncio.get_running_loop()
        finished = loop.create_future()
        meter = Meter(args.warmup_seconds, args.seconds)
        state = {"in_flight": args.window, "sending": True, "reply": b""}

        def abort(error: BaseException) -> None:
            if not finished.done():
                finished.set_exception(error)

        def start() -> None:
            t0 = time.perf_counter_ns()
            try:
                future = call(body)
            except Exception as e:  # a failing call must end the run
                abort(e)
                return
            future.add_done_callback(lambda f: on_done(f, t0))

        def on_done(future, t0: int) -> None:
            keep = meter.done(t0)
            error = (asyncio.CancelledError("call cancelled")
                     if future.cancelled() else future.exception())
            if error is not None:
                abort(error)
                return
            state["reply"] = future.result()
            state["sending"] = state["sending"] and keep
            if state["sending"]:
                start()
            else:
                state["in_flight"] -= 1
                if state["in_flight"] == 0 and not finished.done():
                    finished.set_result(None)

        for _ in range(args.window):
            start()
        # Bounded even if the client loses a Future: the run fails, not hangs.
        limit = args.warmup_seconds + args.seconds + args.timeout_ms / 1000 + 5
        try:
            await asyncio.wait_for(finished, limit)
        except asyncio.TimeoutError:
            raise SystemExit(f"{state['in_flight']} calls still in flight "
                             f"{limit:.0f} s after the start") from None
        return meter.samples, meter.calls, meter.elapsed_ns, state["reply"]

    return _run(main, loop)


def ping(args, body: bytes, secure: bool = False, loop: str = "asyncio") -> None:
    async def main():
        call = _client(args, secure)
        deadline = time.monotonic() + args.timeout_ms / 1000
        while True:
            try:
                # wait_for: a ping must end even if the client's own timeout
                # does not.
                await asyncio.wait_for(call(body, timeout=1.0), 2.0)
                return
            except Exception:
                if time.monotonic() >= deadline:
                    raise
                await asyncio.sleep(0.05)

    _run(main, loop)


if __name__ == "__main__":
    run(probe=probe, server=svc.server, latency=latency, throughput=throughput,
        ping=ping, info=svc.info)
