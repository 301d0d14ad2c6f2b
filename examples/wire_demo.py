"""Two processes talking zmicro's wire protocol through the compiled core.

The server (a ROUTER, in a child process) answers each request with a reply
echoing the body; both directions are signed (HMAC-SHA256) and verified. The
client (a DEALER) prints a few replies, then the round-trip latency.

This is the foundation layer; the Service/Client API sits on top of it.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import time

import zmq

import zmicro
from zmicro import mac, wire

KEY = b"demo-key-demo-key-demo-key-32byt"  # shared MAC key (32 bytes)


def serve(port_queue: mp.Queue[int]) -> None:
    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    port_queue.put(port)
    while True:
        msg = wire.recv_message(router, routed=True)
        if not msg.verify(mac.Alg.HMAC_SHA256, KEY):
            continue  # unsigned or forged: dropped
        if msg.header.endpoint == "Demo.Stop":
            break
        reply = zmicro.Header(kind=zmicro.Kind.REPLY, request_id=msg.header.request_id,
                              content_type=msg.header.content_type)
        wire.send_message(router, reply, msg.bodies, routing_id=msg.routing_id, mac_key=KEY)
    router.close(0)
    ctx.term()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--calls", type=int, default=20_000)
    args = parser.parse_args()

    ports: mp.Queue[int] = mp.get_context("spawn").Queue()
    server = mp.get_context("spawn").Process(target=serve, args=(ports,), daemon=True)
    server.start()
    port = ports.get(timeout=30)

    ctx = zmq.Context()
    dealer = ctx.socket(zmq.DEALER)
    dealer.connect(f"tcp://127.0.0.1:{port}")
    print(f"zmicro {zmicro.__version__}: libzmq {'.'.join(map(str, zmicro._core.libzmq_version()))}, "
          f"MAC by {'libsodium' if mac.have_sodium() else 'hashlib'}; server pid {server.pid}, "
          f"client pid {os.getpid()}, tcp://127.0.0.1:{port}")

    samples = []
    for i in range(args.calls):
        req = zmicro.Header(kind=zmicro.Kind.REQUEST, request_id=i, deadline_us=1_000_000,
                            service="demo", endpoint="Demo.Echo",
                            content_type="application/octet-stream")
        t0 = time.perf_counter()
        wire.send_message(dealer, req, [f"hello {i}".encode()], mac_key=KEY, timeout=5)
        rep = wire.recv_message(dealer, timeout=5)
        samples.append(time.perf_counter() - t0)
        assert rep.header.request_id == i and rep.verify(mac.Alg.HMAC_SHA256, KEY)
        if i < 3:
            print(f"  request {i} -> reply {rep.bodies[0].decode()!r} (signed, verified)")

    wire.send_message(dealer, zmicro.Header(endpoint="Demo.Stop"), [], mac_key=KEY, timeout=5)
    server.join(10)
    samples.sort()
    us = [s * 1e6 for s in samples]
    print(f"{args.calls} signed round trips: p50 {statistics.median(us):.1f} us, "
          f"p99 {us[int(len(us) * 0.99) - 1]:.1f} us (python + core, separate processes)")
    dealer.close(0)
    ctx.term()


if __name__ == "__main__":
    main()
