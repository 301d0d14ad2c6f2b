"""Steady load on a service from threads of the test process, with every
outcome recorded (node pid or error) for the fault suite's verdicts."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from zmicro import RPCError

from ..helpers import eventually


@dataclass
class Outcome:
    at: float                      # monotonic time the call ended
    pid: int | None = None         # the node that answered
    error: RPCError | None = None


@dataclass
class Load:
    """``threads`` threads calling ``endpoint`` of ``service`` in a loop."""

    client: object
    service: str
    endpoint: str = "Work.Echo"
    request: object = 0
    threads: int = 2
    options: dict = field(default_factory=dict)
    outcomes: list[Outcome] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._workers = [threading.Thread(target=self._run, daemon=True)
                         for _ in range(self.threads)]

    def start(self) -> Load:
        for w in self._workers:
            w.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for w in self._workers:
            w.join(60)
            assert not w.is_alive(), "a load thread hangs"

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                reply = self.client.call(self.service, self.endpoint, self.request,
                                         **self.options)
                outcome = Outcome(time.monotonic(), pid=reply["pid"])
            except RPCError as exc:
                outcome = Outcome(time.monotonic(), error=exc)
            with self._lock:
                self.outcomes.append(outcome)

    # -- verdicts ------------------------------------------------------------------

    def since(self, t: float) -> list[Outcome]:
        with self._lock:
            return [o for o in self.outcomes if o.at >= t]

    def failures(self) -> list[Outcome]:
        with self._lock:
            return [o for o in self.outcomes if o.error is not None]

    def served_by(self, pid: int, since: float = 0.0) -> int:
        return sum(1 for o in self.since(since) if o.pid == pid)

    def wait_for(self, predicate, what: str, timeout: float = 60.0) -> None:
        """Wait (generously) until predicate() holds; a timeout says how the load went."""
        try:
            # Every 0.05 s: the predicates scan all outcomes, under the lock the callers need.
            eventually(predicate, what, timeout=timeout, interval=0.05)
        except AssertionError as e:
            raise AssertionError(f"{e}; {len(self.outcomes)} calls, {len(self.failures())} failed") from e


def two_loads(client, service: str, nodes) -> tuple[Load, Load]:
    """Idempotent calls from two threads and plain ones from a third,
    started, once each of them has reached every node in `nodes`."""
    idempotent = Load(client, service, threads=2, options={"idempotent": True}).start()
    plain = Load(client, service, threads=1).start()
    try:
        for load in (idempotent, plain):
            for node in nodes:
                load.wait_for(lambda: load.served_by(node.pid) >= 5, f"traffic on {node.pid}")
    except BaseException:
        idempotent.stop()
        plain.stop()
        raise
    return idempotent, plain
