"""A private asyncio event loop on a daemon thread, for a broker's sync API.

The embedded and the NATS brokers both run their engine on one: sync
callers hand it coroutines (:meth:`LoopThread.run` waits for the result,
:meth:`LoopThread.submit` does not), and :meth:`LoopThread.stop` ends the
tasks still on it before it closes the loop (a library such as nats-py
leaves tasks behind, which would otherwise be collected after the loop is
closed, with warnings).

The loop is uvloop's where uvloop is installed (a dependency on Linux and
macOS): nobody but the broker runs code on it, and the embedded
publisher's engine does a few loop operations per event (a callback per
answer, a read per burst), which asyncio's loop runs in Python: uvloop
took 8-15 us of CPU per event off the publisher (bench/events,
zmicro-embedded, 3 alternating runs each).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def new_loop() -> asyncio.AbstractEventLoop:
    """A new event loop: uvloop's if it is installed, else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


class LoopThread:
    """An event loop running on a daemon thread named `name`."""

    def __init__(self, name: str) -> None:
        self.loop = new_loop()
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def on_loop(self) -> bool:
        """Whether the caller runs on this loop's thread."""
        return threading.current_thread() is self.thread

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Schedule `coro` on the loop; its result as a concurrent Future."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run `coro` on the loop and wait up to `timeout` for its result.
        From the loop's own thread that would wait forever: RuntimeError."""
        if self.on_loop():
            coro.close()
            raise RuntimeError("a blocking call from the broker's own loop (on_delivery): "
                               "use the async API, or hand the work to a thread")
        return self.submit(coro).result(timeout)

    def stop(self) -> None:
        """Cancel the tasks left on the loop, stop it, and (from another
        thread) wait for the thread and close the loop. Idempotent."""
        if self.loop.is_closed():
            return

        async def cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self.loop.stop()

        try:
            asyncio.run_coroutine_threadsafe(cancel_all(), self.loop)
        except RuntimeError:  # stopped meanwhile
            return
        if not self.on_loop():
            self.thread.join(30)
            if not self.thread.is_alive():
                self.loop.close()
