"""The service the CLI tests call, run in its own process:

    python tests/cli/service.py NAME

It registers NAME (version 1.0.0, metadata team=cli-tests) in the embedded
registry that ZMICRO_REGISTRY_DIR names, on a free loopback port, and serves
until SIGTERM. The message types are importable without starting it.
"""

from __future__ import annotations

import sys
import threading

import msgspec

import zmicro


class HelloRequest(msgspec.Struct):
    name: str
    times: int = 1


class HelloReply(msgspec.Struct):
    message: str


def build(name: str) -> zmicro.Service:
    svc = zmicro.Service(name, version="1.0.0", metadata={"team": "cli-tests"})

    @svc.handler("Greeter.Hello")
    def hello(req: HelloRequest, ctx: zmicro.Context) -> HelloReply:
        return HelloReply(message=", ".join([f"Hello {req.name}"] * req.times))

    @svc.handler("Echo.Echo")
    def echo(req, ctx):
        return req

    @svc.handler("Echo.Metadata")
    def metadata(req, ctx) -> dict[str, str]:
        return {key: value.decode() for key, value in ctx.metadata.items()}

    @svc.handler("Echo.Bytes")
    def raw(req, ctx):
        return {"blob": b"\x00\x01zmicro", "text": "plain"}

    @svc.handler("Fail.Boom")
    def boom(req, ctx):
        raise RuntimeError("a secret the caller must not see")

    @svc.handler("Fail.NotFound")
    def not_found(req, ctx):
        raise zmicro.RPCError(zmicro.Code.NOT_FOUND, "no such thing")

    @svc.handler("Slow.Wait", blocking=True)
    def wait(req, ctx):
        # Runs in the pool, so the service keeps answering other calls; ends
        # when the caller gives up (its cancel frame) or after a minute.
        done = threading.Event()
        for _ in range(1200):
            if ctx.cancelled or done.wait(0.05):
                break
        return "late"

    return svc


if __name__ == "__main__":
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[2]))
    from tests.processes import announce_ready

    svc = build(sys.argv[1])
    announce_ready(svc)
    svc.run()
