"""Services for the RPC tests, run in their own processes.

    python tests/rpc/app.py KIND NAME ADDRESS REGISTRY_DIR [DOWNSTREAM]

KIND "sync": only sync handlers (inline and blocking), so run() waits in
libzmq; "async": the same plus async handlers, served under asyncio. Prints
"READY <address>" once serving. DOWNSTREAM names a service that the Nested
endpoints call, to observe inherited deadlines and metadata.
"""

from __future__ import annotations

import asyncio
import sys
import time

import msgspec

import zmicro
from zmicro.registry import EmbeddedRegistry

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[2]))
from tests.processes import announce_ready  # noqa: E402


class HelloRequest(msgspec.Struct):
    name: str
    times: int = 1


class HelloReply(msgspec.Struct):
    message: str


def build(kind: str, name: str, address: str, registry_dir: str, downstream: str | None):
    registry = EmbeddedRegistry(registry_dir)
    # max_in_flight is the default (1024): tests send bursts of 500 calls to
    # inline handlers, which count against it while they wait their turn.
    svc = zmicro.Service(name, version="1.0.0", address=address, registry=registry,
                         ttl=2.0)
    client = zmicro.Client(registry=registry)
    seen_cancelled: list[int] = []

    @svc.handler("Greeter.Hello")
    def hello(req: HelloRequest, ctx: zmicro.Context) -> HelloReply:
        return HelloReply(message=" ".join([f"Hello {req.name}"] * req.times))

    @svc.handler("Greeter.Echo")
    def echo(req, ctx):
        return req

    @svc.handler("Greeter.Context")
    def context(req, ctx):
        left = ctx.time_remaining()
        return {"service": ctx.service, "endpoint": ctx.endpoint,
                "metadata": {k: v.decode() for k, v in ctx.metadata.items()},
                "remaining": left, "trace_id": str(ctx.trace_id)}

    @svc.handler("Greeter.Fail")
    def fail(req, ctx):
        raise ValueError("secret-internal-detail")

    @svc.handler("Greeter.Refuse")
    def refuse(req, ctx):
        raise zmicro.RPCError(zmicro.Code.PERMISSION_DENIED, "not you", id="gatekeeper")

    @svc.handler("Greeter.Sleep", blocking=True)
    def sleep(req: dict, ctx):
        # Waits until cancelled or for req["seconds"]; says which.
        end = time.monotonic() + req["seconds"]
        while time.monotonic() < end and not ctx.cancelled:
            time.sleep(0.005)
        if ctx.cancelled:
            seen_cancelled.append(ctx.request_id)
        return {"cancelled": ctx.cancelled}

    @svc.handler("Greeter.Cancelled")
    def cancelled(req, ctx):
        return len(seen_cancelled)

    @svc.handler("Greeter.Stats")
    def stats(req, ctx):
        return svc.stats()

    @svc.handler("Greeter.NestedInline")
    def nested_inline(req, ctx):
        return client.call(downstream, "Greeter.Context", None)

    @svc.handler("Greeter.NestedBlocking", blocking=True)
    def nested_blocking(req, ctx):
        return client.call(downstream, "Greeter.Context", None)

    @svc.handler("Greeter.CallSelf")
    def call_self(req, ctx):
        return client.call(name, "Greeter.Echo", 1)

    if kind == "async":
        aclient = zmicro.AsyncClient(registry=registry)

        @svc.handler("Greeter.Wave")
        async def wave(req: dict, ctx) -> dict:
            await asyncio.sleep(0)
            return {"wave": req, "async": True}

        @svc.handler("Greeter.AsyncSleep")
        async def async_sleep(req: dict, ctx):
            try:
                await asyncio.sleep(req["seconds"])
            except asyncio.CancelledError:
                seen_cancelled.append(ctx.request_id)
                raise
            return {"slept": req["seconds"]}

        @svc.handler("Greeter.NestedAsync")
        async def nested_async(req, ctx):
            return await aclient.call(downstream, "Greeter.Context", None)

    return svc


def main() -> None:
    kind, name, address, registry_dir = sys.argv[1:5]
    downstream = sys.argv[5] if len(sys.argv) > 5 else None
    svc = build(kind, name, address, registry_dir, downstream)
    announce_ready(svc)
    if kind == "async":
        asyncio.run(svc.serve())
    else:
        svc.run()


if __name__ == "__main__":
    main()
