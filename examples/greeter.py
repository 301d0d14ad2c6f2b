"""The README's service: run it, then call it from anywhere on this machine.

    python examples/greeter.py
    zmicro call greeter Greeter.Hello '{"name": "Ada"}'
    zmicro publish greeter.visited '{"name": "Ada"}'
    zmicro call greeter Greeter.Visitors '{}'
"""

import asyncio
import logging
from typing import Any

import msgspec

import zmicro


class HelloRequest(msgspec.Struct):
    name: str


class HelloReply(msgspec.Struct):
    message: str


svc = zmicro.Service("greeter", version="1.0.0")  # embedded registry by default


@svc.handler("Greeter.Hello")
def hello(req: HelloRequest, ctx: zmicro.Context) -> HelloReply:
    return HelloReply(message=f"Hello {req.name}")


class Visited(msgspec.Struct):
    name: str


visitors: list[str] = []


@svc.subscriber("greeter.visited", queue="greeter")  # one member of the group gets each event
def on_visited(ev: Visited, ctx: zmicro.EventContext) -> None:
    visitors.append(ev.name)  # returning acks the event


@svc.handler("Greeter.Visitors")
def list_visitors(req: dict[str, Any], ctx: zmicro.Context) -> dict[str, Any]:
    return {"visitors": list(visitors)}


class Greeter:  # every public method becomes "Greeter.<Method>"
    async def Wave(self, req: dict[str, Any], ctx: zmicro.Context) -> dict[str, Any]:
        await asyncio.sleep(0)
        return {"wave": f"👋 {req.get('name', 'you')}", "deadline_left": ctx.time_remaining()}


svc.register(Greeter())

if __name__ == "__main__":
    # The application configures logging, never the library: one line says
    # where the service serves ("zmicro: greeter 1.0.0 serving ... at tcp://...").
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    svc.run()  # has an async handler, so it serves under asyncio; Ctrl-C deregisters and exits
