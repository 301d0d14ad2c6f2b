"""Health: the endpoints every service answers by itself (in the manner of
``grpc.health.v1``), and the serving status behind them.

Endpoints (their names start with ``zmicro.``, a prefix reserved for
zmicro: a user handler named ``zmicro.…`` is refused with ValueError, so a
user's own ``Health.Check`` never clashes):

- ``zmicro.Health.Check`` ``{service?}`` → ``{status}``: ``SERVING`` or
  ``NOT_SERVING`` for this service (``service`` empty or its name),
  ``SERVICE_UNKNOWN`` for any other name.
- ``zmicro.Health.Watch`` ``{service?, last?, wait?}`` → ``{status}``: a long
  poll. Answers as soon as the status differs from ``last`` (at once when it
  already does, or when ``last`` is empty), else after ``wait`` seconds
  (default 30, at most 300) or at the call's deadline, whichever is first,
  with the status then. A watcher loops, passing the status it got as
  ``last``.

Both run under the service's transport security (CurveZMQ and the MAC) like
any endpoint. By default (``Service(health_public=True)``) they skip its
interceptors, a policy's tokens, rules and rate limits included: probes
(orchestrators, load balancers, ``zmicro health``) carry no end-user token,
and the status is all they reveal. With ``health_public=False`` they go
through the interceptors like any other endpoint (a rule on
``zmicro.Health.*`` then decides who may ask). ``Check`` runs inline; each ``Watch`` holds a
thread of a pool of its own (at most ``max_watchers`` at once, beyond which
it is refused ``RESOURCE_EXHAUSTED``; the pool has one thread more, for
those refusals) and counts as in flight. A draining
service answers both (``NOT_SERVING``, final: watchers are released at once).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated

import msgspec

from .errors import Code, RPCError

if TYPE_CHECKING:
    from ._core import Context

__all__ = [
    "CHECK",
    "MAX_WAIT",
    "NOT_SERVING",
    "RESERVED_PREFIX",
    "SERVICE_UNKNOWN",
    "SERVING",
    "WATCH",
    "CheckRequest",
    "Health",
    "HealthReply",
    "WatchRequest",
]

RESERVED_PREFIX = "zmicro."
CHECK = "zmicro.Health.Check"
WATCH = "zmicro.Health.Watch"

SERVING = "SERVING"
NOT_SERVING = "NOT_SERVING"
SERVICE_UNKNOWN = "SERVICE_UNKNOWN"

DEFAULT_WAIT = 30.0
MAX_WAIT = 300.0
_SLICE = 0.5  # seconds: a watcher looks at ctx.cancelled this often


class CheckRequest(msgspec.Struct, kw_only=True):
    service: str = ""


class WatchRequest(msgspec.Struct, kw_only=True):
    service: str = ""
    last: str = ""
    wait: Annotated[float, msgspec.Meta(ge=0, le=MAX_WAIT)] = DEFAULT_WAIT


class HealthReply(msgspec.Struct, kw_only=True):
    status: str


class Health:
    """The serving status of one service, thread-safe; ``check`` and
    ``watch`` are the endpoints' handlers.

    ``set_serving`` flips it; ``drain`` makes it ``NOT_SERVING`` for good.
    ``on_change(serving)`` is called (outside the lock) after each change.
    ``clock`` (seconds, monotonic) times a watch's ``wait``.
    """

    def __init__(self, service: str, *, max_watchers: int = 64,
                 on_change: Callable[[bool], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if max_watchers < 1:
            raise ValueError("max_watchers must be at least 1")
        self.service = service
        self.max_watchers = max_watchers
        self._on_change = on_change
        self._clock = clock
        # Reentrant: drain() may run in a signal handler on a thread that
        # is inside set_serving().
        self._cond = threading.Condition(threading.RLock())
        self._serving = True
        self._draining = False
        self._watchers = 0

    @property
    def serving(self) -> bool:
        return self._serving and not self._draining

    @property
    def draining(self) -> bool:
        return self._draining

    @property
    def watchers(self) -> int:
        """Watches waiting now."""
        return self._watchers

    def status(self, service: str = "") -> str:
        """The status of ``service`` ("": this one) as the endpoints say it."""
        if service and service != self.service:
            return SERVICE_UNKNOWN
        return SERVING if self.serving else NOT_SERVING

    def set_serving(self, serving: bool) -> bool:
        """Set the status; False (nothing changes) while draining. Returns
        whether the status changed."""
        with self._cond:
            before = self.serving
            self._serving = bool(serving)
            changed = self.serving != before
            if changed:
                self._cond.notify_all()
        if changed and self._on_change is not None:
            self._on_change(self.serving)
        return changed

    def drain(self) -> None:
        """NOT_SERVING from now on, whatever set_serving says."""
        with self._cond:
            before = self.serving
            self._draining = True
            self._cond.notify_all()
        if before and self._on_change is not None:
            self._on_change(False)

    def reset(self) -> None:
        """Serving again after a drain (a service started anew)."""
        with self._cond:
            self._draining = False
            self._serving = True

    # -- the endpoints -------------------------------------------------------

    def check(self, req: CheckRequest | None, ctx: Context | None) -> HealthReply:
        return HealthReply(status=self.status(req.service if req is not None else ""))

    def watch(self, req: WatchRequest | None, ctx: Context | None) -> HealthReply:
        req = req if req is not None else WatchRequest()
        with self._cond:
            if self._watchers >= self.max_watchers:
                raise RPCError(Code.RESOURCE_EXHAUSTED,
                               f"{self.service}: {self._watchers} health watchers already")
            self._watchers += 1
        try:
            return HealthReply(status=self._wait_for_change(req, ctx))
        finally:
            with self._cond:
                self._watchers -= 1

    def _wait_for_change(self, req: WatchRequest, ctx: Context | None) -> str:
        until = self._clock() + req.wait
        remaining = ctx.time_remaining() if ctx is not None else None
        if remaining is not None:  # answer a little before the caller gives up
            until = min(until, self._clock() + remaining - min(0.25, remaining / 10))
        with self._cond:
            while True:
                status = self.status(req.service)
                if status != req.last or self._draining:
                    return status
                left = until - self._clock()
                if left <= 0 or getattr(ctx, "cancelled", False):
                    return status
                self._cond.wait(min(left, _SLICE))
