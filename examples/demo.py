"""The README demo: a service in one process, calls and events to it from another.

Starts examples/greeter.py as a child process (it registers itself in the
embedded registry, in your private state directory), finds it by name from
this process, calls it with the blocking and the asyncio client, prints the
replies and round-trip latencies, publishes three events its subscriber
handles (delivered by the embedded broker over the same secure path as the
calls), then stops it with SIGTERM (it deregisters before exiting).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import zmicro
from zmicro.registry import default_registry

sys.path.insert(0, str(Path(__file__).parent))
from greeter import HelloReply, HelloRequest, Visited  # noqa: E402


def wait_registered(name: str, pid: int, timeout: float = 60) -> str:
    registry = default_registry()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for record in registry.get(name):
            for node in record.nodes:
                return node.address
        time.sleep(0.05)
    raise SystemExit(f"{name} (pid {pid}) did not register within {timeout} s")


def events(client: zmicro.Client, timeout: float = 30) -> None:
    names = ["Ada", "Grace", "Edsger"]
    with zmicro.Publisher() as publisher:
        for name in names:
            publisher.publish("greeter.visited", Visited(name))  # returns once accepted
        # Delivery is asynchronous (at-least-once, acked by the subscriber's
        # return): ask the greeter what its subscriber has handled.
        deadline = time.monotonic() + timeout
        while True:
            seen = client.call("greeter", "Greeter.Visitors", {})["visitors"]
            if sorted(seen) == sorted(names) or time.monotonic() > deadline:
                break
            time.sleep(0.05)
    print(f"events: published {names} to 'greeter.visited'; the greeter's subscriber "
          f"handled {seen}")
    if sorted(seen) != sorted(names):
        raise SystemExit("the greeter did not handle every event in time")


def percentiles(samples: list[float]) -> str:
    samples = sorted(s * 1e6 for s in samples)
    return (f"p50 {statistics.median(samples):.0f} µs, "
            f"p99 {samples[int(len(samples) * 0.99) - 1]:.0f} µs")


async def async_calls(n: int) -> list[float]:
    client = zmicro.AsyncClient()
    print("async:", await client.call("greeter", "Greeter.Wave", {"name": "Grace"}))
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        await client.call("greeter", "Greeter.Hello", {"name": "Grace"})
        samples.append(time.perf_counter() - t0)
    client.close()
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--calls", type=int, default=5000)
    args = parser.parse_args()

    server = subprocess.Popen([sys.executable, str(Path(__file__).with_name("greeter.py"))])
    try:
        address = wait_registered("greeter", server.pid)
        print(f"greeter (pid {server.pid}) registered at {address}; calling from pid "
              f"{__import__('os').getpid()}")
        client = zmicro.Client()
        store = client._security.store  # None: insecure
        if store is None:
            print("security: OFF (insecure mode on request): plaintext, no MAC")
        else:
            print(f"security: CurveZMQ, only allowlisted keys, a MAC on every message "
                  f"(key store {store.path})")
        print("sync: ", client.call("greeter", "Greeter.Hello", {"name": "Ada"}, timeout=1.0))
        print("typed:", client.call("greeter", "Greeter.Hello", HelloRequest("Ada"),
                                    response_type=HelloReply))
        try:
            client.call("greeter", "Greeter.Hello", {"nom": "Ada"})
        except zmicro.RPCError as exc:
            print("error:", exc)
        samples = []
        for _ in range(args.calls):
            t0 = time.perf_counter()
            client.call("greeter", "Greeter.Hello", {"name": "Ada"})
            samples.append(time.perf_counter() - t0)
        print(f"{args.calls} sync calls:  {percentiles(samples)}")
        print(f"{args.calls} async calls: {percentiles(asyncio.run(async_calls(args.calls)))}")
        events(client)
        print("(greeter has an async handler, so it serves on asyncio; a service with only "
              "sync handlers waits in libzmq and answers faster: bench/RESULTS.md)")
        client.close()
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(30)
    left = [n for r in default_registry().get("greeter") for n in r.nodes]
    print(f"greeter stopped (exit {server.returncode}); nodes left in the registry: {len(left)}")


if __name__ == "__main__":
    main()
