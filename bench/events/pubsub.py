"""The contenders of the events benchmark: one publisher and one subscriber
per group, each its own process, for every way of moving an event.

    python pubsub.py NAME probe
    python pubsub.py NAME sub --url U --topic T --group G --count N --out F
    python pubsub.py NAME pub --url U --topic T --size S --count N [--window W]

Every event's body starts with the publisher's ``time.perf_counter_ns()``
(CLOCK_MONOTONIC, one clock for every process of the machine) at the moment
it calls publish: the subscriber's handler takes ``now - stamp``, the
publish-to-handler latency. A subscriber prints ``READY`` once subscribed,
then one JSON line when it has received ``--count`` events (or none came for
``IDLE`` seconds): ``{"received", "first_ns", "last_ns", "p50_ns",
"p99_ns"}``. The publisher prints ``{"published", "elapsed_ns"}``.

Contenders (NAME):

- ``pyzmq-pubsub``: a PUB/SUB ``send`` loop, how users write it (each group
  is one SUB socket; ``url`` is a tcp endpoint the PUB binds). No acks.
- ``nats-core``: nats-py ``publish`` / ``subscribe`` (a queue group per
  group), flush at the end. At most once.
- ``nats-js`` / ``nats-js-pipelined``: nats-py JetStream: ``js.publish``
  awaited one at a time, or ``--window`` (256) of them in flight; each group
  a durable pull consumer, ``fetch`` in batches, ``ack`` each.
- ``zmicro-nats`` / ``zmicro-nats-async`` / ``zmicro-nats-pipelined``: the
  same through :class:`zmicro.broker.nats.NatsBroker`: ``publish`` (sync,
  on the calling thread's own loop and connection) one at a time,
  ``publish_async`` awaited one at a time, or ``publish_async`` with
  ``--window`` in flight, from the caller's loop; each group a ``subscribe(queue=G)`` acking in
  ``on_delivery``. Raw frames through the broker.
- ``zmicro-publisher`` / ``-async`` / ``-pipelined``: the whole of zmicro
  on NATS: ``zmicro.Publisher`` (sync) or ``zmicro.AsyncPublisher`` (one at
  a time, or ``--window`` in flight) over a NatsBroker, events encoded
  (msgpack) and signed with the topic key; each group a secure
  ``zmicro.Service`` whose ``@subscriber(queue=G)`` handler gets the decoded
  event after the MAC, window and replay checks. The key store and the
  registry are the driver's (``ZMICRO_HOME``, ``ZMICRO_REGISTRY_DIR``).
- ``zmicro-embedded`` / ``zmicro-embedded-insecure``: zmicro's default,
  brokerless: ``zmicro.Publisher()`` (sync, one thread; ``publish``
  returns once the event is in the outbox) delivering to each group's
  ``zmicro.Service`` over Curve + MAC, signed (or both sides insecure:
  plain TCP, unsigned); the subscriber's reply is the ack. ``url`` is
  unused: members are found in the driver's registry. The publisher waits
  until the registry lists every group (``--groups``) before the timed
  span, and after it until the outbox is empty (``close(linger=)``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import struct
import sys
import threading
import time
from array import array
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
IDLE = 5.0  # seconds without an event before a subscriber gives up
STAMP = struct.Struct("<q")

NAMES = ("pyzmq-pubsub", "nats-core", "nats-js", "nats-js-pipelined",
         "zmicro-nats", "zmicro-nats-async", "zmicro-nats-pipelined",
         "zmicro-publisher", "zmicro-publisher-async", "zmicro-publisher-pipelined",
         "zmicro-embedded", "zmicro-embedded-insecure")


def body(size: int) -> bytearray:
    data = bytearray((i * 31 + 7) & 0xFF for i in range(max(size, STAMP.size)))
    return data


def stamped(template: bytearray) -> bytes:
    STAMP.pack_into(template, 0, time.perf_counter_ns())
    return bytes(template)


def subject(topic: str) -> str:
    return "zmicro.topic." + topic


class Sink:
    """Counts events and their latency; done once `count` arrived."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.lat = array("q")
        self.first = self.last = 0
        self.done = threading.Event()

    def take(self, data: bytes) -> None:
        now = time.perf_counter_ns()
        if not self.lat:
            self.first = now
        self.last = now
        self.lat.append(now - STAMP.unpack_from(data)[0])
        if len(self.lat) >= self.count:
            self.done.set()

    def wait(self) -> None:
        seen = -1
        while not self.done.wait(IDLE):
            if len(self.lat) == seen:
                break  # nothing for IDLE seconds: report what came
            seen = len(self.lat)

    def report(self) -> None:
        lat = sorted(self.lat)

        def pct(q: float) -> int:
            return lat[min(len(lat) - 1, int(q * len(lat)))] if lat else 0

        print(json.dumps({"received": len(lat), "first_ns": self.first, "last_ns": self.last,
                          "p50_ns": pct(0.5), "p99_ns": pct(0.99)}), flush=True)


def ready() -> None:
    print("READY", flush=True)


# -- pyzmq ----------------------------------------------------------------------

def pyzmq_sub(a: argparse.Namespace) -> None:
    import zmq

    ctx = zmq.Context()
    s = ctx.socket(zmq.SUB)
    s.setsockopt(zmq.SUBSCRIBE, b"")
    s.connect(a.url)
    sink = Sink(a.count)
    ready()
    poller = zmq.Poller()
    poller.register(s, zmq.POLLIN)
    while len(sink.lat) < a.count:
        if not poller.poll(IDLE * 1000):
            break
        sink.take(s.recv())
    sink.report()


def pyzmq_pub(a: argparse.Namespace) -> None:
    import zmq

    ctx = zmq.Context()
    s = ctx.socket(zmq.PUB)
    s.bind(a.url)
    # PUB/SUB has no handshake: give the subscribers time to connect (the
    # "slow joiner"); the driver started them first.
    time.sleep(1.0)
    template = body(a.size)
    t0 = time.perf_counter_ns()
    for _ in range(a.count):
        s.send(stamped(template))
    print(json.dumps({"published": a.count, "elapsed_ns": time.perf_counter_ns() - t0}),
          flush=True)
    time.sleep(1.0)  # let the queue drain before closing
    s.close(linger=5000)


# -- nats-py --------------------------------------------------------------------

async def _connect(url: str):
    import nats

    return await nats.connect(url, max_reconnect_attempts=-1)


async def _ensure_stream(js, topic: str) -> None:
    from nats.js import api

    from zmicro.broker.nats import stream_name  # the same stream config as zmicro's
    try:
        await js.add_stream(api.StreamConfig(
            name=stream_name(topic), subjects=[subject(topic)],
            retention=api.RetentionPolicy.LIMITS, max_age=240.0, duplicate_window=120.0,
            storage=api.StorageType.FILE))
    except Exception as e:  # noqa: BLE001 - made already by another process
        if "already in use" not in str(e):
            raise


def nats_core_sub(a: argparse.Namespace) -> None:
    async def main() -> None:
        nc = await _connect(a.url)
        sink = Sink(a.count)

        async def cb(msg) -> None:
            sink.take(msg.data)

        await nc.subscribe(subject(a.topic), queue=a.group, cb=cb,
                           pending_msgs_limit=1_000_000, pending_bytes_limit=-1)
        await nc.flush()
        ready()
        await asyncio.get_running_loop().run_in_executor(None, sink.wait)
        sink.report()
        await nc.close()

    asyncio.run(main())


def nats_core_pub(a: argparse.Namespace) -> None:
    async def main() -> None:
        nc = await _connect(a.url)
        template, subj = body(a.size), subject(a.topic)
        t0 = time.perf_counter_ns()
        for _ in range(a.count):
            await nc.publish(subj, stamped(template))
        await nc.flush(30)
        print(json.dumps({"published": a.count, "elapsed_ns": time.perf_counter_ns() - t0}),
              flush=True)
        await nc.close()

    asyncio.run(main())


def nats_js_sub(a: argparse.Namespace) -> None:
    async def main() -> None:
        import nats.errors
        from nats.js import api

        nc = await _connect(a.url)
        js = nc.jetstream()
        await _ensure_stream(js, a.topic)
        from zmicro.broker.nats import stream_name
        psub = await js.pull_subscribe(
            subject(a.topic), durable=f"bench_{a.group}", stream=stream_name(a.topic),
            config=api.ConsumerConfig(ack_policy=api.AckPolicy.EXPLICIT, ack_wait=30,
                                      max_ack_pending=4096))
        sink = Sink(a.count)
        ready()
        idle_since = time.monotonic()
        while len(sink.lat) < a.count and time.monotonic() - idle_since < IDLE:
            try:
                msgs = await psub.fetch(256, timeout=0.5)
            except (nats.errors.TimeoutError, asyncio.TimeoutError):
                continue
            idle_since = time.monotonic()
            for m in msgs:
                sink.take(m.data)
                await m.ack()
        sink.report()
        await nc.close()

    asyncio.run(main())


def nats_js_pub(a: argparse.Namespace, window: int) -> None:
    async def main() -> None:
        nc = await _connect(a.url)
        js = nc.jetstream()
        await _ensure_stream(js, a.topic)
        template, subj = body(a.size), subject(a.topic)
        t0 = time.perf_counter_ns()
        if window <= 1:
            for _ in range(a.count):
                await js.publish(subj, stamped(template))
        else:
            sem = asyncio.Semaphore(window)

            async def one() -> None:
                try:
                    await js.publish(subj, stamped(template))
                finally:
                    sem.release()

            tasks = set()
            for _ in range(a.count):
                await sem.acquire()
                t = asyncio.ensure_future(one())
                tasks.add(t)
                t.add_done_callback(tasks.discard)
            await asyncio.gather(*list(tasks))
        print(json.dumps({"published": a.count, "elapsed_ns": time.perf_counter_ns() - t0}),
              flush=True)
        await nc.close()

    asyncio.run(main())


# -- zmicro on NATS -------------------------------------------------------------

def zmicro_sub(a: argparse.Namespace) -> None:
    from zmicro.broker.base import SubscribeOptions
    from zmicro.broker.nats import NatsBroker

    sink = Sink(a.count)

    def on_delivery(d) -> None:
        sink.take(d.data)
        d.ack()

    with NatsBroker(a.url) as broker:
        broker.subscribe(a.topic, on_delivery, SubscribeOptions(queue=a.group,
                                                                max_in_flight=256))
        ready()
        sink.wait()
        sink.report()


def zmicro_pub(a: argparse.Namespace, window: int) -> None:
    from zmicro.broker.nats import NatsBroker

    template = body(a.size)
    warmup = a.topic + ".warmup"  # opens what the first publish would (not timed)

    def done(t0: int) -> None:
        print(json.dumps({"published": a.count, "elapsed_ns": time.perf_counter_ns() - t0}),
              flush=True)

    with NatsBroker(a.url) as broker:
        if window == 0:
            broker.publish(warmup, b"w" * 8, event_id=os.urandom(16))
            t0 = time.perf_counter_ns()
            for _ in range(a.count):
                broker.publish(a.topic, stamped(template), event_id=os.urandom(16))
            done(t0)
            return

        async def main() -> None:
            # publish_async's own connection on this loop is opened here.
            await broker.publish_async(warmup, b"w" * 8, event_id=os.urandom(16))
            t0 = time.perf_counter_ns()
            if window == 1:
                for _ in range(a.count):
                    await broker.publish_async(a.topic, stamped(template),
                                               event_id=os.urandom(16))
                done(t0)
                return
            sem = asyncio.Semaphore(window)

            async def one() -> None:
                try:
                    await broker.publish_async(a.topic, stamped(template),
                                               event_id=os.urandom(16))
                finally:
                    sem.release()

            tasks = set()
            for _ in range(a.count):
                await sem.acquire()
                t = asyncio.ensure_future(one())
                tasks.add(t)
                t.add_done_callback(tasks.discard)
            await asyncio.gather(*list(tasks))
            done(t0)

        asyncio.run(main())


try:  # the zmicro-publisher contenders' event type (module level: the
    # subscriber's annotation must resolve to it)
    import msgspec

    class Stamped(msgspec.Struct, array_like=True):
        stamp: int
        pad: bytes
except ImportError:  # pragma: no cover - zmicro's own dependency
    pass


def publisher_sub(a: argparse.Namespace) -> None:
    from zmicro.broker.nats import NatsBroker

    _service_sub(a, broker=NatsBroker(a.url))


def _service_sub(a: argparse.Namespace, **service_options: object) -> None:
    """A zmicro Service subscribing to the topic (queue group a.group),
    reporting what it got; `service_options` go to zmicro.Service."""
    import zmicro

    sink = Sink(a.count)
    svc = zmicro.Service(f"bench-{a.group}", **service_options)  # type: ignore[arg-type]

    @svc.subscriber(a.topic, queue=a.group, max_in_flight=256)
    def on_event(ev: Stamped, ctx) -> None:  # ctx unannotated: zmicro is a local name
        sink.take(STAMP.pack(ev.stamp))

    thread = threading.Thread(target=svc.run, daemon=True)
    thread.start()
    while svc.address is None:
        if not thread.is_alive():
            raise SystemExit("the service stopped")
        time.sleep(0.01)
    ready()
    sink.wait()
    sink.report()
    svc.stop()
    thread.join(30)


def publisher_pub(a: argparse.Namespace, window: int) -> None:
    import zmicro
    from zmicro.broker.nats import NatsBroker

    pad = bytes(body(max(a.size - 12, 0)))  # msgpack array + int64 stamp: ~12 bytes
    warmup = a.topic + ".warmup"

    def done(t0: int) -> None:
        print(json.dumps({"published": a.count, "elapsed_ns": time.perf_counter_ns() - t0}),
              flush=True)

    broker = NatsBroker(a.url)
    try:
        if window == 0:
            with zmicro.Publisher(broker=broker) as pub:
                pub.publish(warmup, Stamped(0, b""))
                t0 = time.perf_counter_ns()
                for _ in range(a.count):
                    pub.publish(a.topic, Stamped(time.perf_counter_ns(), pad))
                done(t0)
            return

        async def main() -> None:
            async with zmicro.AsyncPublisher(broker=broker) as pub:
                await pub.publish(warmup, Stamped(0, b""))
                t0 = time.perf_counter_ns()
                if window == 1:
                    for _ in range(a.count):
                        await pub.publish(a.topic, Stamped(time.perf_counter_ns(), pad))
                    done(t0)
                    return
                sem = asyncio.Semaphore(window)

                async def one() -> None:
                    try:
                        await pub.publish(a.topic, Stamped(time.perf_counter_ns(), pad))
                    finally:
                        sem.release()

                tasks = set()
                for _ in range(a.count):
                    await sem.acquire()
                    t = asyncio.ensure_future(one())
                    tasks.add(t)
                    t.add_done_callback(tasks.discard)
                await asyncio.gather(*list(tasks))
                done(t0)

        asyncio.run(main())
    finally:
        broker.close()


def embedded_sub(a: argparse.Namespace, insecure: bool) -> None:
    _service_sub(a, insecure=insecure)


def embedded_pub(a: argparse.Namespace, insecure: bool) -> None:
    import zmicro
    from zmicro.broker.embedded import EmbeddedBroker
    from zmicro.registry import default_registry

    pad = bytes(body(max(a.size - 12, 0)))
    registry = default_registry()
    deadline = time.monotonic() + 60
    # Every group's record seen first: an event is routed to the groups
    # known when it is, and the timed span must not include the wait.
    while len({r.version for r in registry.get(f"zmicro.topic.{a.topic}")}) < a.groups:
        if time.monotonic() > deadline:
            raise SystemExit("the subscribers' topic records did not appear")
        time.sleep(0.05)
    broker = EmbeddedBroker(registry=registry, insecure=insecure)
    try:
        with zmicro.Publisher(broker=broker, insecure=insecure) as pub:
            t0 = time.perf_counter_ns()
            for _ in range(a.count):
                pub.publish(a.topic, Stamped(time.perf_counter_ns(), pad))
            print(json.dumps({"published": a.count,
                              "elapsed_ns": time.perf_counter_ns() - t0}), flush=True)
    finally:
        broker.close(linger=a.count / 500 + 30)


def probe(name: str) -> None:
    if name == "pyzmq-pubsub":
        import zmq  # noqa: F401
    else:
        import nats  # noqa: F401
    if name.startswith(("zmicro-nats", "zmicro-publisher")):
        import zmicro.broker.nats  # noqa: F401
    if name.startswith("zmicro-embedded"):
        import zmicro.broker.embedded  # noqa: F401
    if name.startswith(("zmicro-publisher", "zmicro-embedded")):
        import msgspec  # noqa: F401

        from zmicro import AsyncPublisher, Publisher  # noqa: F401


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("name", choices=NAMES)
    p.add_argument("role", choices=("probe", "sub", "pub"))
    p.add_argument("--url", default="")
    p.add_argument("--topic", default="bench")
    p.add_argument("--group", default="g0")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--count", type=int, default=1000)
    p.add_argument("--window", type=int, default=256)
    p.add_argument("--groups", type=int, default=1, help="embedded: groups to wait for")
    a = p.parse_args(argv)
    if a.role == "probe":
        probe(a.name)
        return
    sub = {"pyzmq-pubsub": pyzmq_sub, "nats-core": nats_core_sub, "nats-js": nats_js_sub,
           "nats-js-pipelined": nats_js_sub, "zmicro-nats": zmicro_sub,
           "zmicro-nats-async": zmicro_sub, "zmicro-nats-pipelined": zmicro_sub,
           "zmicro-publisher": publisher_sub, "zmicro-publisher-async": publisher_sub,
           "zmicro-publisher-pipelined": publisher_sub,
           "zmicro-embedded": lambda a: embedded_sub(a, False),
           "zmicro-embedded-insecure": lambda a: embedded_sub(a, True)}
    pub = {"pyzmq-pubsub": pyzmq_pub, "nats-core": nats_core_pub,
           "nats-js": lambda a: nats_js_pub(a, 1),
           "nats-js-pipelined": lambda a: nats_js_pub(a, a.window),
           "zmicro-nats": lambda a: zmicro_pub(a, 0),
           "zmicro-nats-async": lambda a: zmicro_pub(a, 1),
           "zmicro-publisher": lambda a: publisher_pub(a, 0),
           "zmicro-publisher-async": lambda a: publisher_pub(a, 1),
           "zmicro-publisher-pipelined": lambda a: publisher_pub(a, a.window),
           "zmicro-nats-pipelined": lambda a: zmicro_pub(a, a.window),
           "zmicro-embedded": lambda a: embedded_pub(a, False),
           "zmicro-embedded-insecure": lambda a: embedded_pub(a, True)}
    (sub if a.role == "sub" else pub)[a.name](a)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
