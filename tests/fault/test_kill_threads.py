"""kill -9 one of three nodes while six threads share one Client: no
idempotent call fails, round after round (issue 10, point 5).

Each thread has its own socket to every node. When a node dies, every
thread loses the call it had in flight there, or its next one (libzmq took
it before it noticed the drop): six losses at once, with no success in
between. They are retried on the live nodes, and they must not drain the
service's retry budget (10 tokens, retries stop at half): a drop is no
answer from an overloaded service, so it costs no token. The monitor ends
a lost call at once, so a round is short.
"""

from __future__ import annotations

import time

from zmicro import Client

from .load import Load
from .registries import open_registry

THREADS = 6
ROUNDS = 10


def test_kill_9_with_six_threads_ten_rounds(nodes, embedded_registry):
    name = "fault-kill-threads"
    live = nodes(name, embedded_registry, n=3)
    registry = open_registry(embedded_registry)
    client = Client(registry=registry, timeout=10)
    load = Load(client, name, threads=THREADS, options={"idempotent": True}).start()
    killed = []
    try:
        for _ in range(ROUNDS):
            started = time.monotonic()
            # Every live node serves every thread (round robin over the
            # service, shared by the threads): each holds a connection to
            # the victim.
            for node in live:
                load.wait_for(lambda: load.served_by(node.pid, started) >= 3 * THREADS,
                              f"traffic on {node.pid}")
            victim = live.pop(0)
            victim.proc.kill()
            victim.proc.wait(30)
            killed.append(victim)
            killed_at = time.monotonic()
            # Calls go on; the next round's third node starts meanwhile.
            (new,) = nodes(name, embedded_registry)
            live.append(new)
            load.wait_for(lambda: len(load.since(killed_at)) >= 10 * THREADS,
                          "calls after the kill")
    finally:
        load.stop()
        client.close()
        registry.close()

    print(f"{len(load.outcomes)} calls over {ROUNDS} kills")
    assert load.failures() == [], [o.error for o in load.failures()[:5]]
