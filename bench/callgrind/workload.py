"""The zmicro processes that ``run.py`` runs under callgrind: the e2e echo
server (``bench/e2e/contenders/zmicro_service.py``, ``svc.run()``) and a
client making a fixed number of calls, none timed.

    python workload.py server --port P [--secure] [--cg-lib LIB]
    python workload.py client --port P --client sync|async --size N
        --calls N [--warmup N] [--window N] [--secure] [--go-on-stdin]
        [--cg-lib LIB]

Client ``sync``: ``Client.call`` one call at a time. ``async``:
``AsyncClient.call`` with ``--window`` calls in flight, each completed
Future's done-callback issuing the next (the e2e throughput client's shape,
counted in calls rather than seconds). Plaintext (``insecure=True``, as the
e2e ``zmicro-sync`` / ``zmicro-async``) or, with ``--secure``, zmicro's
defaults (the e2e ``zmicro-secure-*``; the output says so if those defaults
are plaintext). Server: the e2e contenders' server function, unchanged.

The calls are the e2e contenders' calls (same service, endpoint, content
type, body) with two differences that leave the per-call path alone: no
clock is read per call (a timing read would be part of the count), and a
connection may take as long as the call's deadline (``connect_timeout=0``;
under valgrind a CURVE handshake can exceed the default second, and a retry
in one run and not in the other would not cancel out).

``--cg-lib``: ``cg_start.c`` built as a shared library. The processes run
under ``--instr-atstart=no``, and call its ``cg_start()`` at a fixed point:
the server before it builds its Service, the client before its first call.

``--go-on-stdin`` (client): everything up to the first call (imports, the
client object) is done, then the process blocks reading a line from stdin.
The driver starts it beside the server and writes that line once the
server listens: the two start-ups overlap, and the wait is one blocking
read, the same count however long it lasts (a polling loop would add
instructions in proportion to the wait).

Client output: one JSON line ``{"calls", "secure", "plaintext_defaults"}``.
Exit 1 if a reply differs from the request.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "e2e"))
from harness import check_echo, payload  # noqa: E402

from contenders import zmicro_service as svc  # noqa: E402

TIMEOUT_S = 120.0  # per call: valgrind runs everything some 50x slower


def start_instrumentation(lib: str | None) -> None:
    if lib:
        ctypes.CDLL(lib).cg_start()


def make_client(kind: str, secure: bool):
    import zmicro

    cls = zmicro.Client if kind == "sync" else zmicro.AsyncClient
    if secure:
        return svc.with_defaults(f"zmicro.{cls.__name__}()",
                                 lambda: cls(connect_timeout=0))
    return cls(insecure=True, connect_timeout=0)


def ready(args) -> None:
    """Before the first call: wait for the driver's go, then count."""
    if args.go_on_stdin:
        sys.stdin.readline()
    start_instrumentation(args.cg_lib)


def run_sync(args, body: bytes) -> bytes:
    client = make_client("sync", args.secure)
    addr = svc.address(args.port)
    reply = b""
    ready(args)
    try:
        for _ in range(args.warmup + args.calls):
            reply = client.call(svc.SERVICE, svc.ENDPOINT, body, address=addr,
                                content_type=svc.CONTENT_TYPE,
                                timeout=TIMEOUT_S)
    finally:
        client.close()
    return reply


def run_async(args, body: bytes) -> bytes:
    async def main() -> bytes:
        client = make_client("async", args.secure)
        addr = svc.address(args.port)
        loop = asyncio.get_running_loop()
        finished = loop.create_future()
        total = args.warmup + args.calls
        state = {"issued": 0, "done": 0, "reply": b""}

        def start() -> None:
            state["issued"] += 1
            future = client.call(svc.SERVICE, svc.ENDPOINT, body, address=addr,
                                 content_type=svc.CONTENT_TYPE,
                                 timeout=TIMEOUT_S)
            future.add_done_callback(on_done)

        def on_done(future) -> None:
            if future.cancelled() or future.exception() is not None:
                if not finished.done():
                    finished.set_exception(
                        future.exception() if not future.cancelled()
                        else asyncio.CancelledError("call cancelled"))
                return
            state["reply"] = future.result()
            state["done"] += 1
            if state["issued"] < total:
                start()
            elif state["done"] == total and not finished.done():
                finished.set_result(None)

        ready(args)
        # The warm-up calls go one at a time, so the connection (and its
        # handshake) is up before the window opens, in every run alike.
        for _ in range(args.warmup):
            state["reply"] = await client.call(
                svc.SERVICE, svc.ENDPOINT, body, address=addr,
                content_type=svc.CONTENT_TYPE, timeout=TIMEOUT_S)
        state["issued"] = state["done"] = args.warmup
        for _ in range(min(args.window, args.calls)):
            start()
        try:
            if args.calls:
                await finished
        finally:
            client.close()
        return state["reply"]

    return asyncio.run(main())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("command", choices=("server", "client"))
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--client", choices=("sync", "async"), default="sync")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--calls", type=int, default=0)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--window", type=int, default=64)
    p.add_argument("--secure", action="store_true",
                   help="zmicro's defaults (no insecure=)")
    p.add_argument("--go-on-stdin", action="store_true",
                   help="client: make the first call after reading a line "
                        "from stdin")
    p.add_argument("--cg-lib", help="cg_start.c built as a shared library: "
                                    "start callgrind's instrumentation")
    args = p.parse_args(argv)
    if args.calls < 0 or args.warmup < 1 or args.window < 1:
        p.error("--calls >= 0, --warmup >= 1, --window >= 1")
    svc.require_home()
    if args.command == "server":
        import zmicro  # noqa: F401  (imported before the count starts)

        start_instrumentation(args.cg_lib)
        svc.server(args, secure=args.secure)
        return 0
    body = payload(args.size)
    reply = (run_sync if args.client == "sync" else run_async)(args, body)
    check_echo(body, reply)
    print(json.dumps({"calls": args.calls, "secure": args.secure,
                      "plaintext_defaults": svc.PLAINTEXT_DEFAULTS[0]
                      if svc.PLAINTEXT_DEFAULTS else ""}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
