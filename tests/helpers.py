"""Helpers every test folder uses: waiting for a condition, and a fake clock.

- :func:`eventually` (and :func:`eventually_async` inside a coroutine)
  polls a predicate until it returns something truthy and returns that; on
  timeout it raises ``AssertionError`` naming what was awaited and what the
  predicate last returned or raised. Bounds are generous (:data:`WAIT`):
  a loaded 2-core machine must not fail a test, and a passing test never
  waits for the bound. No test asserts how long a wait took.
- :class:`FakeClock`: a clock that moves only when the test moves it, for
  code that takes ``clock=`` (``time.monotonic`` or ``time.time`` shaped).
"""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

__all__ = ["UNIX_START", "WAIT", "FakeClock", "eventually", "eventually_async"]

T = TypeVar("T")

#: Seconds a wait gives up after, by default.
WAIT = 30.0
#: Seconds between two tries, by default.
INTERVAL = 0.01
#: A Unix time (November 2023) for a FakeClock read as wall-clock time.
UNIX_START = 1_700_000_000.0


def eventually(
    predicate: Callable[[], T], what: str = "the condition", *,
    timeout: float = WAIT, interval: float = INTERVAL,
) -> T:
    """``predicate()``'s first truthy value, trying every ``interval`` seconds.

    An ``Exception`` from the predicate counts as "not yet" (a server that
    is restarting refuses for a while); the last one is named, and chained,
    if time runs out. A ``BaseException`` (``pytest.fail()``, Ctrl-C) ends
    the wait at once.
    """
    poll = _Poll(what, timeout)
    while not poll.done(_attempt(predicate)):
        time.sleep(interval)
    return poll.value


async def eventually_async(
    predicate: Callable[[], T | Awaitable[T]], what: str = "the condition", *,
    timeout: float = WAIT, interval: float = INTERVAL,
) -> T:
    """:func:`eventually` for a coroutine: sleeps without blocking the event
    loop, and awaits the predicate's result when it is awaitable."""
    poll = _Poll(what, timeout)
    while not poll.done(await _attempt_async(predicate)):
        await asyncio.sleep(interval)
    return poll.value


class _Poll:
    """The bookkeeping both flavours of :func:`eventually` share."""

    def __init__(self, what: str, timeout: float) -> None:
        self._what = what
        self._timeout = timeout
        self._deadline = time.monotonic() + timeout
        self.value = None

    def done(self, outcome: tuple[object, BaseException | None]) -> bool:
        """Whether ``outcome`` (a try's (value, exception)) ends the wait;
        raises ``AssertionError`` when it does not and time is up."""
        value, error = outcome
        self.value = value
        if error is None and value:
            return True
        if time.monotonic() < self._deadline:
            return False
        last = f"raised {error!r}" if error is not None else f"returned {value!r}"
        raise AssertionError(f"not within {self._timeout} s: {self._what} (last try {last})") from error


def _attempt(predicate: Callable[[], T]) -> tuple[T | None, Exception | None]:
    try:
        return predicate(), None
    except Exception as e:  # noqa: BLE001 - "not yet", see eventually()
        return None, e


async def _attempt_async(predicate: Callable[[], T | Awaitable[T]]) -> tuple[T | None, Exception | None]:
    try:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        return value, None
    except Exception as e:  # noqa: BLE001 - "not yet", see eventually()
        return None, e


class FakeClock:
    """A clock that moves only when told; call it as you would ``time.monotonic``.

    ``start`` is its first reading: the default suits code that wants a
    monotonic clock; pass :data:`UNIX_START` where the code compares the
    reading with wall-clock times (file stamps, message timestamps, token
    expiry). ``step``: seconds every call moves it first, for code that
    must see time pass between its own reads. Thread-safe (services under
    test read it from their threads); ``reads`` counts the calls, for tests
    of how often the code asks.
    """

    def __init__(self, start: float = 1000.0, *, step: float = 0.0) -> None:
        self._now = start
        self._step = step
        self._lock = threading.Lock()
        self.reads = 0

    def __call__(self) -> float:
        with self._lock:
            self.reads += 1
            self._now += self._step
            return self._now

    @property
    def now(self) -> float:
        """The current reading (not counted in ``reads``)."""
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        """Move by ``seconds``; negative steps back, as a wall clock may."""
        with self._lock:
            self._now += seconds

    def set(self, now: float) -> None:
        with self._lock:
            self._now = now
