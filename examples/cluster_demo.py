"""Three greeter nodes on etcd, steady calls, one node killed (kill -9) and
a new one started: the calls go on without a failure.

    bash scripts/cluster-demo.sh     # sets up .venv and etcd, then runs this

It starts its own etcd (free loopback ports, a temporary data directory),
three ``examples/greeter.py`` processes registered in it
(``ZMICRO_REGISTRY=etcd://...``), and calls ``Greeter.Hello`` from four
threads, printing a line per second: calls made, calls failed, the nodes the
client's balancer knows and how many are ejected.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import zmicro  # noqa: E402
from tests.etcd_server import EtcdServer  # noqa: E402  (a real etcd on free ports)
from zmicro.registry import from_url  # noqa: E402


def start_node(env: dict[str, str]) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, str(ROOT / "examples" / "greeter.py")], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return proc


def main() -> int:
    etcd = EtcdServer()
    etcd.start()
    url = f"etcd://127.0.0.1:{etcd.client_port}/zmicro-demo/?ttl=2"
    env = dict(os.environ, ZMICRO_REGISTRY=url)
    print(f"etcd at {etcd.endpoint}; registry {url}")
    nodes = [start_node(env) for _ in range(3)]
    registry = from_url(url)
    client = zmicro.Client(registry=registry, timeout=5)
    counts = {"calls": 0, "failed": 0}
    stop = threading.Event()

    def caller() -> None:
        while not stop.is_set():
            try:
                client.call("greeter", "Greeter.Hello", {"name": "Ada"}, idempotent=True)
                counts["calls"] += 1
            except zmicro.RPCError as exc:
                counts["failed"] += 1
                print("  failed:", exc)

    try:
        while len(registry.get("greeter") and registry.get("greeter")[0].nodes) < 3:
            time.sleep(0.1)
        print("three nodes registered:", [n.address for n in registry.get("greeter")[0].nodes])
        threads = [threading.Thread(target=caller, daemon=True) for _ in range(4)]
        for t in threads:
            t.start()
        plan = {3: "kill", 8: "start"}
        for second in range(1, 13):
            time.sleep(1)
            nodes_known = client.balancer("greeter").nodes()
            ejected = sum(1 for n in nodes_known if n.ejected_until > time.monotonic())
            print(f"t={second:2d}s  calls {counts['calls']:7d}  failed {counts['failed']}  "
                  f"nodes {len(nodes_known)} ({ejected} ejected)")
            if plan.get(second) == "kill":
                victim = nodes[1]
                victim.send_signal(signal.SIGKILL)
                print(f"      kill -9 node pid {victim.pid}")
            elif plan.get(second) == "start":
                nodes.append(start_node(env))
                print(f"      started a new node, pid {nodes[-1].pid}")
        stop.set()
        for t in threads:
            t.join()
    finally:
        client.close()
        registry.close()
        for p in nodes:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in nodes:
            p.wait(30)
        etcd.stop()
    print(f"done: {counts['calls']} calls, {counts['failed']} failed")
    return 1 if counts["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
