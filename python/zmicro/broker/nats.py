"""NatsBroker: events over NATS JetStream (or core NATS), on nats-py.

The broker moves opaque event frames (:mod:`zmicro.broker.base`) through a
NATS server; the frame is the NATS payload as is. Needs the optional extra
``zmicro[nats]`` (nats-py).

JetStream (``jetstream=True``, the default), per topic ``T``:

- **Subject** ``zmicro.topic.T`` (the header's service name), stored in a
  stream of its own named ``ZMICRO_<T with . as _>_<8 hex of BLAKE3(T)>``
  (stream names forbid ``.``; the hash keeps ``a.b`` and ``a_b`` apart),
  retention ``limits`` (several groups read one stream), ``max_age``
  ``stream_max_age`` (default 240 s: twice a subscriber's default
  ``max_age``, older events are refused as stale anyway), a duplicate window
  of ``duplicate_window`` seconds.
- **Publish** is ``js.publish`` with header ``Nats-Msg-Id`` = the event id
  (hex); it returns after the server's PubAck: the event is stored. The
  stream is created only when the server answers that none stores the
  subject (a subscriber looks it up first, then creates it), so a publisher
  needs no JetStream API rights at all. A lost
  answer or a connection lost mid-way is retried with the same bytes and
  the same id until ``timeout``, which the duplicate window makes
  idempotent. Then it raises ``RPCError(UNAVAILABLE)``, or
  ``RESOURCE_EXHAUSTED`` (nothing accepted) when the stream stayed full;
  ``PERMISSION_DENIED`` (nothing accepted) as soon as the server says this
  user may not publish to the subject (or create its stream).
- **Queue group** ``g``: one durable pull consumer ``G_<g as _>_<hash>``
  that every member shares (that is JetStream's queue group), created with
  ``deliver_policy=all``: a group also gets the events stored before its
  first member subscribed (``Capabilities.durable``). The consumer's
  options (``ack_wait``, ``max_deliver``, ``max_ack_pending``) are the
  group's: nats-server updates a durable to the options of the member that
  subscribed last, so members of a group should agree. **Broadcast**
  (``queue=None``): an ephemeral pull consumer per subscription, deleted on
  close (30 s after its subscriber vanished otherwise); it gets the events
  published after subscribe() returned.
- **Delivery**: explicit ack. ``ack`` acks; ``nack(delay)`` naks with that
  delay (None: the subscription's backoff for that delivery count);
  ``term(reason)`` stores the event in the dead-letter stream, then
  terminates it. An event not ended within ``ack_wait`` is redelivered by
  the server; while a delivery is handed out and not ended, the broker
  sends ``in_progress`` every ``ack_wait``/2, so a handler running longer
  than ``ack_wait`` is not redelivered meanwhile (only a member that died
  or lost its connection lets ``ack_wait`` run out). The consumer's
  ``max_deliver`` is ``max_deliveries + 1``:
  the extra delivery is never handed out, the broker dead-letters it
  (reason ``max_deliveries``), so an event whose last holder died is not
  dropped silently. A nack of the ``max_deliveries``-th delivery
  dead-letters at once. The server's own consumer ``backoff`` is not used:
  it replaces ``ack_wait`` for every redelivery, which would redeliver a
  running handler's event after the first backoff step.
- **Bounded in flight**: the broker pulls (``$JS.API.CONSUMER.MSG.NEXT``)
  only as many events as the subscription has free slots, one pull request
  at a time, so at most ``max_in_flight`` deliveries are handed out and not
  ended; the rest stay in the stream. The consumer's ``max_ack_pending``
  (default ``max(1024, 4 x max_in_flight)``) bounds the whole group.
- **Dead letters**: stream ``ZMICRO_DLQ`` (subjects ``zmicro.dlq.>``, 7
  days, at most ``dlq_max_bytes`` / ``dlq_max_msgs``, the oldest discarded),
  one message per dead event and group on ``zmicro.dlq.T``, the original
  bytes with headers ``Zmicro-Reason``, ``Zmicro-Topic``, ``Zmicro-Queue``,
  ``Zmicro-Deliveries``, ``Zmicro-Stream-Seq`` (stored once per event and
  group: ``Nats-Msg-Id``). An event the subscriber's checks refused
  (``REFUSAL_REASONS``: forged, stale, ...) is stored without its bytes,
  with ``Zmicro-Size`` and ``Zmicro-Blake3`` (hex) instead: anyone allowed
  to publish on the subject can make such events, and must not fill the
  dead-letter stream with them. :meth:`NatsBroker.dead_letters`
  reads the last 1,000 of the topics this broker subscribed to.
- **Reconnect** forever (``max_reconnect_attempts=-1``). After a reconnect
  every subscription makes sure its stream and consumer exist again (a
  broadcast consumer the server forgot is made again from the oldest
  sequence it had not ended) and pulls again; nats-py restores the
  subscriptions. Nothing acknowledged by a PubAck is lost by a server
  restart (file storage).

Core NATS (``jetstream=False``): ``publish`` sends and flushes (it returns
once the server read it), subscriptions are NATS subscriptions with native
queue groups. At most once: no store, no redelivery; ``ack`` and ``nack``
only end the delivery, ``term`` keeps a dead letter in this process (the
last 1,000). A subscription hands out ``max_in_flight`` deliveries at most;
nats-py then holds up to ``pending_limit`` more and drops the rest (a slow
consumer, logged). ``Capabilities`` are all False.

Threads: a nats-py client belongs to one event loop, so the broker runs a
private loop on a daemon thread (``zmicro-nats``) with its connection:
subscriptions and ends of deliveries run there. ``publish_async`` runs on
the **caller's** loop, over a connection of that loop's own, opened at its
first ``publish_async`` and closed with the broker: no thread hop per
event, so an asyncio publisher costs what nats-py costs (from the broker's
own loop, e.g. in ``on_delivery``, it uses the broker's connection).
``publish`` (sync) does the same on the **calling thread**: each thread
that publishes gets a loop and a connection of its own (the loop runs only
during that thread's ``publish`` calls), because handing every event to
the broker's thread and waiting for its answer cost two thread wake-ups per
event, most of a JetStream round trip on a loaded machine. An idle
thread's connection answers no PING (its loop is not running): a server
may drop it, and that thread's next publish reconnects. Called from a
thread whose own loop is running (sync code inside a coroutine), it hands
the event to the broker's thread instead. ``on_delivery`` is called on the broker's
loop: it must not block. Deliveries may be ended from any thread. So the
broker says ``Capabilities.delivers_on_loop``: a Service runs every sync
handler (``blocking`` or not) in its thread pool, where it may block and
publish through a Publisher on this same broker.

Permissions: :func:`permissions` / :func:`permissions_config` give the
exact NATS permissions of a publisher or subscriber user (its subjects, its
own ``inbox_prefix``, its stream and durable's API subjects; never
``$JS.API.>`` or ``_INBOX.>``, which let any user consume any topic).

Authentication and TLS are nats-py's options, passed through: ``user`` and
``password``, ``token``, ``user_credentials`` (a .creds file), ``nkeys_seed``
(a seed file's path, or the seed itself, ``SU...``), ``tls`` (an
``ssl.SSLContext``) and ``tls_hostname``; ``connect_options`` adds any
other ``nats.connect`` keyword. A refused authentication fails the
constructor at once with :class:`BrokerError`; an unreachable server after
``connect_timeout`` seconds.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import json
import logging
import math
import os
import re
import ssl
import threading
from collections.abc import Callable, Iterable
from typing import Any

import blake3

from ..errors import Code, RPCError
from ._loop import LoopThread
from .base import (
    TOPIC_PREFIX,
    Broker,
    BrokerError,
    Capabilities,
    DeadLetter,
    Delivery,
    SubscribeOptions,
    Subscription,
    check_topic,
)

try:
    import nats
    import nats.errors
    import nats.js.errors
    from nats.aio.client import Client as NatsClient
    from nats.aio.msg import Msg
    from nats.js import api as js_api
except ImportError as exc:  # pragma: no cover - the extra is not installed
    raise ImportError("zmicro.broker.nats needs nats-py: pip install 'zmicro[nats]'") from exc

__all__ = ["NatsBroker", "permissions", "permissions_config", "redact_url"]

log = logging.getLogger("zmicro.broker.nats")


#: Dead letters' subjects and stream.
DLQ_PREFIX = "zmicro.dlq."
DLQ_STREAM = "ZMICRO_DLQ"
DLQ_MAX_AGE = 7 * 24 * 3600.0
#: The dead-letter stream's default bounds (discard old): a flood of dead
#: letters drops the oldest, never fills the server.
DLQ_MAX_BYTES = 256 * 1024 * 1024
DLQ_MAX_MSGS = 100_000
#: Refusals of the subscriber's checks (EventRefused reasons): anyone who
#: may publish on the subject can cause them, so their dead letters keep
#: reason, size and hash only, never the frame.
REFUSAL_REASONS = frozenset({"malformed", "version", "kind", "wrong_topic", "unsigned",
                             "unknown_key", "bad_mac", "future", "stale", "replay_full"})
#: Seconds a pull request waits on the server before it expires (a new one
#: follows at once): short enough that a request lost with a server is
#: replaced soon, long enough to cost nothing when idle.
PULL_EXPIRES = 5.0
#: Dead letters dead_letters() reads, at most (the newest).
DEAD_LETTERS_READ = 1000
#: Topics whose stream name is remembered (then the memo starts over).
_NAMES_CACHED = 10_000
_JS_API = "$JS.API"
_DENIED = re.compile(r'[Pp]ermissions [Vv]iolation for [Pp]ublish to "?([^"\s\']+)')
# JetStream API error codes (nats-server's errors.json).
_ERR_STREAM_NAME_IN_USE = 10058
_RESOURCE_ERRORS = frozenset({10077, 10047, 10027, 10028})  # store full, no resources


# ``scheme://user:password@`` or ``scheme://token@``: the user-info of a URL.
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<info>[^/@\s'\"]*)@")


def _redact_info(m: re.Match[str]) -> str:
    user, sep, _ = m.group("info").partition(":")
    # user:password keeps the user (who it is, for the operator); a lone
    # part may be a token: hidden whole.
    return f"{m.group('scheme')}{user}:***@" if sep else f"{m.group('scheme')}***@"


def redact_url(text: str | Iterable[str]) -> str:
    """`text` (a URL, a list of URLs, or any message naming URLs) with every
    URL's password or token replaced by ``***``: what NatsBroker logs and
    raises, never a secret (the CLI reuses it)."""
    if not isinstance(text, str):
        text = ", ".join(str(t) for t in text)
    return _USERINFO.sub(_redact_info, text)


def _hash8(name: str) -> str:
    return blake3.blake3(name.encode()).hexdigest()[:8]


def stream_name(topic: str, subject_prefix: str = TOPIC_PREFIX) -> str:
    """The JetStream stream that stores `topic` (see the module docstring).
    Another ``subject_prefix`` (a deployment of its own on a shared server)
    gets other streams: the hash covers the whole subject."""
    hashed = topic if subject_prefix == TOPIC_PREFIX else subject_prefix + topic
    return f"ZMICRO_{topic.replace('.', '_')[:200]}_{_hash8(hashed)}"


def dlq_stream_name(dlq_prefix: str = DLQ_PREFIX) -> str:
    """The dead-letter stream for subjects ``<dlq_prefix>>``."""
    return DLQ_STREAM if dlq_prefix == DLQ_PREFIX else f"{DLQ_STREAM}_{_hash8(dlq_prefix)}"


def durable_name(queue: str) -> str:
    """The durable consumer of queue group `queue`."""
    return f"G_{queue.replace('.', '_')[:200]}_{_hash8(queue)}"


def permissions(*, inbox_prefix: str, publish: Iterable[str] = (),
                subscribe: Iterable[tuple[str, str | None]] = (),
                create_streams: bool = True, read_dead_letters: bool = False,
                subject_prefix: str = TOPIC_PREFIX,
                dlq_prefix: str = DLQ_PREFIX) -> dict[str, dict[str, list[str]]]:
    """The exact NATS permissions of a user whose NatsBroker (JetStream)
    uses `inbox_prefix`, publishes to the topics `publish` and subscribes to
    the ``(topic, queue)`` pairs `subscribe` (queue None: broadcast).

    Nothing wider than those streams and durables: no ``$JS.API.>``, which
    would let any user create a consumer on any stream and pull it to its
    own inbox. Each user needs an inbox prefix of its own, since a pulled
    event comes on the puller's inbox and ``_INBOX.>`` would let every user
    read every other's. `create_streams`: a subscriber may create the
    topic's stream (and the dead-letter stream) if it does not exist yet;
    False when an administrator made them. `read_dead_letters`: may read the
    dead-letter stream (``dead_letters()``), the dead letters of **every**
    topic. A publisher never needs more than its subjects and its inbox.
    """
    pub: list[str] = []
    sub: list[str] = [inbox_prefix + ".>"]
    api = _JS_API
    for topic in publish:
        check_topic(topic)
        pub.append(subject_prefix + topic)
    dlq = dlq_stream_name(dlq_prefix)
    subscribed = list(subscribe)
    for topic, queue in subscribed:
        check_topic(topic)
        stream = stream_name(topic, subject_prefix)
        pub.append(f"{api}.STREAM.INFO.{stream}")
        if create_streams:
            pub.append(f"{api}.STREAM.CREATE.{stream}")
        if queue:
            durable = durable_name(queue)
            pub += [f"{api}.CONSUMER.DURABLE.CREATE.{stream}.{durable}",
                    f"{api}.CONSUMER.INFO.{stream}.{durable}",
                    f"{api}.CONSUMER.MSG.NEXT.{stream}.{durable}",
                    f"$JS.ACK.{stream}.{durable}.>"]
        else:  # an ephemeral consumer, named by the server
            pub += [f"{api}.CONSUMER.CREATE.{stream}",
                    f"{api}.CONSUMER.INFO.{stream}.*",
                    f"{api}.CONSUMER.DELETE.{stream}.*",
                    f"{api}.CONSUMER.MSG.NEXT.{stream}.*",
                    f"$JS.ACK.{stream}.*.>"]
        pub.append(dlq_prefix + topic)
    if subscribed:
        pub.append(f"{api}.STREAM.INFO.{dlq}")
        if create_streams:
            pub.append(f"{api}.STREAM.CREATE.{dlq}")
        if read_dead_letters:
            pub.append(f"{api}.STREAM.MSG.GET.{dlq}")
    return {"publish": {"allow": list(dict.fromkeys(pub))}, "subscribe": {"allow": sub}}


def permissions_config(**options: Any) -> str:
    """:func:`permissions` as a ``permissions: {...}`` block for a user of
    nats-server's configuration file (same keyword options)."""
    perms = permissions(**options)
    lines = ["permissions: {"]
    for side in ("publish", "subscribe"):
        lines.append(f"  {side}: {{ allow: [")
        lines += [f"    {json.dumps(s)}" for s in perms[side]["allow"]]
        lines.append("  ] }")
    lines.append("}")
    return "\n".join(lines)


class _ThreadLoop:
    """A publishing thread's own event loop; `lock` is held while it runs
    (by that thread's publish, or by close())."""

    __slots__ = ("loop", "lock", "thread")

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.lock = threading.Lock()
        self.thread = threading.current_thread()

    def close(self, conn: _Conn | None) -> None:
        """With `lock` held, on a thread running no loop."""
        try:
            if conn is not None:
                self.loop.run_until_complete(asyncio.wait_for(conn.nc.close(), 10))
        except Exception:  # noqa: BLE001 - closing: the process keeps going
            log.exception("nats: closing a publishing thread's connection")
        finally:
            self.loop.close()


class _Conn:
    """One NATS connection, its JetStream context and the streams it made sure of."""

    nc: NatsClient
    js: Any

    def __init__(self) -> None:
        self.streams: set[str] = set()
        # Subjects the server refused to let this connection publish to.
        self.denied: dict[str, str] = {}


class NatsBroker(Broker):
    """A :class:`~zmicro.broker.base.Broker` on NATS (see the module docstring).

    ``dlq_max_bytes`` / ``dlq_max_msgs``: the dead-letter stream's bounds
    when this broker creates it (discard old; -1: unbounded). A stream made
    earlier keeps its own limits.
    """

    def __init__(self, servers: str | list[str] = "nats://127.0.0.1:4222", *,
                 user: str | None = None, password: str | None = None,
                 token: str | None = None, user_credentials: str | None = None,
                 nkeys_seed: str | None = None, tls: ssl.SSLContext | None = None,
                 tls_hostname: str | None = None, jetstream: bool = True,
                 subject_prefix: str = TOPIC_PREFIX, dlq_prefix: str = DLQ_PREFIX,
                 stream_max_age: float = 240.0, duplicate_window: float = 120.0,
                 storage: str = "file", replicas: int = 1,
                 max_ack_pending: int | None = None, pending_limit: int = 65536,
                 dlq_max_bytes: int = DLQ_MAX_BYTES, dlq_max_msgs: int = DLQ_MAX_MSGS,
                 connect_timeout: float = 10.0, name: str | None = None,
                 inbox_prefix: str = "_INBOX",
                 connect_options: dict[str, Any] | None = None) -> None:
        if storage not in ("file", "memory"):
            raise ValueError(f"storage must be 'file' or 'memory', not {storage!r}")
        if not subject_prefix.endswith(".") or not dlq_prefix.endswith("."):
            raise ValueError("subject_prefix and dlq_prefix must end with '.'")
        self.jetstream = jetstream
        self.capabilities = Capabilities(durable=jetstream, survives_publisher=jetstream,
                                         delivers_on_loop=True)
        self._subject_prefix = subject_prefix
        self._dlq_prefix = dlq_prefix
        self._dlq_stream = dlq_stream_name(dlq_prefix)
        self._dlq_max_bytes = int(dlq_max_bytes)
        self._dlq_max_msgs = int(dlq_max_msgs)
        self._stream_max_age = float(stream_max_age)
        self._duplicate_window = float(duplicate_window)
        self._storage = (js_api.StorageType.FILE if storage == "file"
                         else js_api.StorageType.MEMORY)
        self._replicas = replicas
        self._max_ack_pending = max_ack_pending
        self._pending_limit = pending_limit
        self._topics: set[str] = set()       # topics subscribed through this broker
        self._stream_names: dict[str, str] = {}  # checked topics -> their stream
        self._subs: set[_JsSubscription | _CoreSubscription] = set()
        self._core_dead: collections.deque[DeadLetter] = collections.deque(
            maxlen=DEAD_LETTERS_READ)
        self._closed = False
        self._close_lock = threading.Lock()
        # Ends of deliveries posted from any thread, run on the loop in order.
        self._posted: collections.deque[tuple[Callable[..., Any], tuple[Any, ...]]] = (
            collections.deque())
        self._post_scheduled = False
        self._posted_tasks: set[asyncio.Task[None]] = set()
        # publish_async's connections, one per caller loop (see the module doc).
        self._loop_conns: dict[asyncio.AbstractEventLoop, asyncio.Future[_Conn]] = {}
        self._loop_ready: dict[asyncio.AbstractEventLoop, _Conn] = {}  # the opened ones
        # publish()'s loops, one per publishing thread (see the module doc).
        self._local = threading.local()
        self._thread_loops: list[_ThreadLoop] = []

        options: dict[str, Any] = {
            "name": name or f"zmicro-{os.getpid()}",
            "user": user, "password": password, "token": token,
            "tls": tls, "tls_hostname": tls_hostname, "inbox_prefix": inbox_prefix,
            "allow_reconnect": True, "max_reconnect_attempts": -1,
            "reconnect_time_wait": 0.5, "connect_timeout": min(connect_timeout, 5.0),
            "ping_interval": 10, "max_outstanding_pings": 3,
        }
        if user_credentials is not None:
            options["user_credentials"] = user_credentials
        if nkeys_seed is not None:
            if os.path.exists(nkeys_seed) or not nkeys_seed.startswith("S"):
                options["nkeys_seed"] = nkeys_seed
            else:
                options["nkeys_seed_str"] = nkeys_seed
        options.update(connect_options or {})
        self._servers = servers
        self._options = options
        self._connect_timeout = connect_timeout
        self._runner = LoopThread("zmicro-nats")
        try:
            self._conn = self._runner.run(self._connect(main=True))
        except BaseException:
            self._runner.stop()
            raise
        self._nc: NatsClient = self._conn.nc
        self._js = self._conn.js

    # -- connection ------------------------------------------------------------

    async def _connect(self, *, main: bool, timeout: float | None = None) -> _Conn:
        """A connection on the running loop; `main`: the broker's own (its
        reconnects resume the subscriptions)."""
        servers = self._servers
        timeout = self._connect_timeout if timeout is None else timeout
        loop = asyncio.get_running_loop()
        auth_failed: asyncio.Future[BaseException] = loop.create_future()
        last_error: list[BaseException] = []
        connected = False
        conn = _Conn()

        async def error_cb(e: Exception) -> None:
            last_error[:] = [e]
            if not connected:
                # nats-py reports a refused CONNECT as a plain Error naming it.
                refused = (isinstance(e, nats.errors.AuthorizationError)
                           or "authorization violation" in str(e).lower())
                if refused and not auth_failed.done():
                    auth_failed.set_result(e)
                log.debug("nats: connecting: %s", redact_url(str(e) or type(e).__name__))
            else:
                log.warning("nats: %s", redact_url(str(e) or type(e).__name__))
            # The server answers a publish it forbids with an error on the
            # connection, not on the request: remember it for publish().
            denied = _DENIED.search(str(e))
            if denied:
                conn.denied[denied.group(1)] = str(e)

        async def disconnected_cb() -> None:
            if not self._closed:
                log.warning("nats: disconnected from %s", redact_url(self._servers))

        async def reconnected_cb() -> None:
            log.info("nats: reconnected")
            conn.streams.clear()
            if main:
                for sub in list(self._subs):
                    sub.resume()

        nc = NatsClient()
        task = loop.create_task(nc.connect(servers, error_cb=error_cb,
                                           disconnected_cb=disconnected_cb,
                                           reconnected_cb=reconnected_cb, **self._options))
        waits: set[asyncio.Future[Any]] = {task, auth_failed}
        done, _ = await asyncio.wait(waits, timeout=timeout,
                                     return_when=asyncio.FIRST_COMPLETED)
        if task in done and task.exception() is None:
            connected = True
            conn.nc, conn.js = nc, nc.jetstream()
            return conn
        task.cancel()
        try:
            await asyncio.wait_for(nc.close(), 5)
        except BaseException:  # noqa: BLE001 - best effort on a failed client
            pass
        if auth_failed in done:
            raise BrokerError(redact_url(f"NATS at {redact_url(servers)} refused the "
                                         f"credentials: {auth_failed.result()}"))
        why = (task.exception() if task in done and not task.cancelled()
               else last_error[0] if last_error else None)
        raise BrokerError(redact_url(f"cannot connect to NATS at {redact_url(servers)} "
                                     f"within {timeout} s: {why or 'no answer'}"))

    def _check_open(self) -> None:
        if self._closed:
            raise BrokerError("the NatsBroker is closed")

    def _subject(self, topic: str) -> str:
        return self._subject_prefix + topic

    def _stream_of(self, topic: str) -> str:
        name = self._stream_names.get(topic)
        if name is None:
            if len(self._stream_names) >= _NAMES_CACHED:
                self._stream_names.clear()
            name = self._stream_names[topic] = stream_name(topic, self._subject_prefix)
        return name

    def _check_topic(self, topic: str) -> None:
        # check_topic once per topic (the hot path publishes few topics often).
        if type(topic) is not str or topic not in self._stream_names:
            check_topic(topic)

    async def _ensure_stream(self, topic: str, conn: _Conn | None = None) -> str:
        """Make sure the topic's stream exists (subscribers: looked up first,
        so a user NATS lets only read it needs no right to create it)."""
        conn = conn or self._conn
        name = self._stream_of(topic)
        if name in conn.streams:
            return name
        await self._lookup_or_add_stream(conn.js, name, [self._subject(topic)],
                                         self._stream_max_age)
        conn.streams.add(name)
        return name

    async def _ensure_dlq(self) -> None:
        if self._dlq_stream not in self._conn.streams:
            info = await self._lookup_or_add_stream(self._js, self._dlq_stream,
                                                    [self._dlq_prefix + ">"], DLQ_MAX_AGE,
                                                    max_bytes=self._dlq_max_bytes,
                                                    max_msgs=self._dlq_max_msgs)
            if info is not None:
                await self._dlq_limits(info)
            self._conn.streams.add(self._dlq_stream)

    async def _dlq_limits(self, info: Any) -> None:
        """The dead-letter stream existed: give it this broker's bounds
        (dlq_max_bytes, dlq_max_msgs) if it has others, so that changing
        them takes effect (brokers configured apart: the last one to start
        wins). Without the right to update it, it is used as it is."""
        config = info.config
        if (config.max_bytes, config.max_msgs) == (self._dlq_max_bytes, self._dlq_max_msgs):
            return
        old = (config.max_bytes, config.max_msgs)
        config.max_bytes = self._dlq_max_bytes
        config.max_msgs = self._dlq_max_msgs
        try:
            await self._js.update_stream(config)
        except nats.errors.Error as e:
            log.warning("events: the dead-letter stream %s keeps its bounds %s (could not "
                        "update it to %s: %s)", self._dlq_stream, old,
                        (self._dlq_max_bytes, self._dlq_max_msgs), e)
            return
        log.info("events: the dead-letter stream %s now holds at most %d bytes and %d "
                 "messages (was %s)", self._dlq_stream, self._dlq_max_bytes,
                 self._dlq_max_msgs, old)

    async def _lookup_or_add_stream(self, js: Any, name: str, subjects: list[str],
                                    max_age: float, max_bytes: int | None = None,
                                    max_msgs: int | None = None) -> Any:
        """Look the stream up, or create it: its StreamInfo when it existed
        (None: created here)."""
        try:
            info = await js.stream_info(name)
        except nats.js.errors.NotFoundError:
            if await self._add_stream(js, name, subjects, max_age, max_bytes=max_bytes,
                                      max_msgs=max_msgs):
                return None
            info = await js.stream_info(name)  # made meanwhile by another broker
        # Made by a broker with other limits: use it if it stores our subjects.
        missing = set(subjects) - set(info.config.subjects or ())
        if missing:
            raise BrokerError(f"stream {name} exists without subjects {sorted(missing)}")
        return info

    async def _add_stream(self, js: Any, name: str, subjects: list[str],
                          max_age: float, max_bytes: int | None = None,
                          max_msgs: int | None = None) -> bool:
        """Create a stream; False when one of that name exists already."""
        config = js_api.StreamConfig(
            name=name, subjects=subjects, retention=js_api.RetentionPolicy.LIMITS,
            max_age=max_age, duplicate_window=min(self._duplicate_window, max_age),
            storage=self._storage, num_replicas=self._replicas,
            discard=js_api.DiscardPolicy.OLD, max_bytes=max_bytes, max_msgs=max_msgs)
        try:
            await js.add_stream(config)
        except nats.js.errors.APIError as e:
            if e.err_code != _ERR_STREAM_NAME_IN_USE:
                raise BrokerError(f"cannot create stream {name}: {e}") from e
            return False
        return True

    # -- publish ---------------------------------------------------------------

    def publish(self, topic: str, data: bytes, *, event_id: bytes,
                timeout: float = 5.0) -> None:
        self._check_topic(topic)
        self._check_open()
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # no loop runs on this thread: publish on one of its own
            here = getattr(self._local, "loop", None) or self._thread_loop()
            with here.lock:
                self._check_open()
                here.loop.run_until_complete(
                    self.publish_async(topic, data, event_id=event_id, timeout=timeout))
            return
        try:
            self._runner.run(self._publish(topic, data, event_id, timeout), timeout + 30)
        except concurrent.futures.TimeoutError:  # the loop itself is stuck
            raise RPCError(Code.UNAVAILABLE, "the NATS broker's loop did not answer",
                           processed=None) from None

    async def publish_async(self, topic: str, data: bytes, *, event_id: bytes,
                            timeout: float = 5.0) -> None:
        self._check_topic(topic)
        self._check_open()
        if self._runner.on_loop():
            await self._publish(topic, data, event_id, timeout)
            return
        conn = self._loop_ready.get(asyncio.get_running_loop())
        if conn is None:
            try:
                conn = await self._loop_conn(timeout)
            except BrokerError as e:
                if self._closed:
                    raise
                raise RPCError(Code.UNAVAILABLE, f"cannot publish: {e}",
                               processed=False) from e
        await self._publish(topic, data, event_id, timeout, conn)

    def _thread_loop(self) -> _ThreadLoop:
        here = _ThreadLoop()
        with self._close_lock:
            self._check_open()
            gone = [t for t in self._thread_loops if not t.thread.is_alive()]
            self._thread_loops = [t for t in self._thread_loops if t.thread.is_alive()]
            self._thread_loops.append(here)
        for old in gone:  # threads that published and ended: their connections go
            with old.lock:
                self._loop_conns.pop(old.loop, None)
                old.close(self._loop_ready.pop(old.loop, None))
        self._local.loop = here
        return here

    def _close_thread_loops(self) -> None:
        """Close the publishing threads' connections and loops (from a
        thread of its own: the closing thread may be running a loop)."""
        def close_all() -> None:
            for here in self._thread_loops:
                # Waits for a publish running on that thread (its timeout bounds it).
                if not here.lock.acquire(timeout=60):
                    continue
                try:
                    self._loop_conns.pop(here.loop, None)
                    here.close(self._loop_ready.pop(here.loop, None))
                finally:
                    here.lock.release()
            self._thread_loops.clear()

        closer = threading.Thread(target=close_all, name="zmicro-nats-close", daemon=True)
        closer.start()
        closer.join(120)

    async def _loop_conn(self, timeout: float) -> _Conn:
        """The running loop's own connection, opened at its first publish_async
        (within `timeout` seconds, at most the broker's connect_timeout)."""
        loop = asyncio.get_running_loop()
        pending = self._loop_conns.get(loop)
        if pending is None:
            for old in [lp for lp in self._loop_conns if lp.is_closed()]:
                del self._loop_conns[old]  # a finished asyncio.run(): its socket is gone
                self._loop_ready.pop(old, None)
            pending = self._loop_conns[loop] = loop.create_future()
            try:
                pending.set_result(await self._connect(
                    main=False, timeout=min(timeout, self._connect_timeout)))
            except BaseException as e:
                del self._loop_conns[loop]
                pending.set_exception(e)
                pending.exception()  # retrieved: raised below
                raise
        conn = await asyncio.shield(pending)
        if self._closed:
            raise BrokerError("the NatsBroker is closed")
        self._loop_ready[loop] = conn
        return conn

    async def _publish(self, topic: str, data: bytes, event_id: bytes,
                       timeout: float, conn: _Conn | None = None) -> None:
        conn = conn or self._conn
        if not self.jetstream:
            return await self._publish_core(conn.nc, topic, data, timeout)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        subject = self._subject(topic)
        msg_id = event_id.hex()
        full = False
        # The stream is made only when the server says there is none: a
        # publisher needs no right to look streams up or create them (the
        # permissions of docs/events.md give it the subject alone).
        no_stream = False
        last: BaseException | None = None
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                if no_stream:
                    await self._add_stream(conn.js, self._stream_of(topic),
                                           [subject], self._stream_max_age)
                    no_stream = False
                # Fresh headers each attempt: nats-py may add to the dict.
                await conn.js.publish(subject, data, timeout=min(remaining, 2.0),
                                      headers={"Nats-Msg-Id": msg_id})
                return
            except nats.errors.MaxPayloadError as e:
                raise RPCError(Code.RESOURCE_EXHAUSTED,
                               f"the event ({len(data)} bytes) is over the NATS server's "
                               f"max_payload", processed=False) from e
            except nats.js.errors.NoStreamResponseError as e:
                # No stream (never made, deleted behind our back) or JetStream not up yet.
                no_stream, last = True, e
            except nats.js.errors.APIError as e:
                if e.err_code in _RESOURCE_ERRORS:
                    full, last = True, e
                else:
                    raise BrokerError(f"JetStream refused the event on {subject}: {e}") from e
            except BrokerError:
                raise
            except (nats.errors.Error, asyncio.TimeoutError, OSError) as e:
                if isinstance(e, nats.errors.ConnectionClosedError) and self._closed:
                    raise BrokerError("the NatsBroker is closed") from e
                last = e
            for refused in (subject, f"{_JS_API}.STREAM.CREATE.{self._stream_of(topic)}"):
                why = conn.denied.pop(refused, None)
                if why is not None:
                    raise RPCError(Code.PERMISSION_DENIED,
                                   f"NATS does not let this user publish to {refused} "
                                   f"({why})", processed=False)
            await asyncio.sleep(min(0.05, max(0.0, deadline - loop.time())))
        if full:
            raise RPCError(Code.RESOURCE_EXHAUSTED,
                           f"the stream of {topic!r} stayed full for {timeout} s: "
                           f"{redact_url(str(last))}",
                           processed=False)
        raise RPCError(Code.UNAVAILABLE,
                       f"JetStream did not store the event within {timeout} s: "
                       f"{redact_url(str(last or 'no answer'))}", processed=None)

    async def _publish_core(self, nc: NatsClient, topic: str, data: bytes,
                            timeout: float) -> None:
        try:
            await nc.publish(self._subject(topic), data)
            await nc.flush(max(1, math.ceil(timeout)))  # nats-py: whole seconds
        except nats.errors.MaxPayloadError as e:
            raise RPCError(Code.RESOURCE_EXHAUSTED, f"the event ({len(data)} bytes) is over "
                           f"the NATS server's max_payload", processed=False) from e
        except (nats.errors.Error, asyncio.TimeoutError, OSError) as e:
            raise RPCError(Code.UNAVAILABLE, f"NATS did not take the event within "
                           f"{timeout} s: {redact_url(str(e))}", processed=None) from e

    # -- subscribe -------------------------------------------------------------

    def subscribe(self, topic: str, on_delivery: Callable[[Delivery], Any],
                  options: SubscribeOptions = SubscribeOptions()) -> Subscription:
        check_topic(topic)
        if not isinstance(options, SubscribeOptions):
            raise TypeError("options must be a SubscribeOptions")
        self._check_open()
        sub: _JsSubscription | _CoreSubscription
        if self.jetstream:
            sub = _JsSubscription(self, topic, on_delivery, options)
        else:
            sub = _CoreSubscription(self, topic, on_delivery, options)
        self._runner.run(sub.start(), 60)
        self._topics.add(topic)
        self._subs.add(sub)
        return sub

    # -- ends of deliveries, from any thread -----------------------------------

    def _post(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` (a coroutine function) on the loop, in post order."""
        self._posted.append((fn, args))
        if not self._post_scheduled:
            self._post_scheduled = True
            try:
                self._runner.loop.call_soon_threadsafe(self._drain_posted)
            except RuntimeError:  # loop closed: the broker is closed
                self._post_scheduled = False

    def _drain_posted(self) -> None:
        # Clear the flag before popping: an item posted after this line
        # schedules another drain, one posted before it is popped below.
        self._post_scheduled = False
        items = []
        while self._posted:
            items.append(self._posted.popleft())
        if items:
            task = self._runner.loop.create_task(self._run_posted(items))
            self._posted_tasks.add(task)
            task.add_done_callback(self._posted_tasks.discard)

    async def _run_posted(self, items: list[tuple[Callable[..., Any], tuple[Any, ...]]]) -> None:
        for fn, args in items:
            try:
                await fn(*args)
            except Exception:  # noqa: BLE001 - one failed end must not stop the others
                log.exception("nats: ending a delivery failed")

    # -- dead letters ----------------------------------------------------------

    async def _dead_letter(self, topic: str, queue: str | None, msg: Msg, reason: str,
                           deliveries: int | None) -> None:
        await self._ensure_dlq()
        meta = msg.metadata
        seq = meta.sequence.stream if meta.sequence else 0
        event = (msg.headers or {}).get("Nats-Msg-Id", f"seq{seq}")
        headers = {
            "Nats-Msg-Id": f"dlq-{event}-{queue or ''}-{meta.consumer or ''}",
            "Zmicro-Reason": reason[:1000], "Zmicro-Topic": topic,
            "Zmicro-Queue": queue or "", "Zmicro-Deliveries": str(deliveries or ""),
            "Zmicro-Stream-Seq": str(seq),
        }
        data = msg.data
        if reason in REFUSAL_REASONS:
            # Forgeable by any publisher on the subject: no bytes kept.
            headers["Zmicro-Size"] = str(len(data))
            headers["Zmicro-Blake3"] = blake3.blake3(data).hexdigest()
            data = b""
        await self._js.publish(self._dlq_prefix + topic, data, headers=headers, timeout=5)

    def dead_letters(self) -> list[DeadLetter]:
        self._check_open()
        if not self.jetstream:
            return list(self._core_dead)
        return self._runner.run(self._read_dead_letters(), 120)

    async def _read_dead_letters(self) -> list[DeadLetter]:
        try:
            info = await self._js.stream_info(self._dlq_stream)
        except nats.js.errors.NotFoundError:
            return []
        first, last = info.state.first_seq, info.state.last_seq
        out = []
        for seq in range(max(first, last - DEAD_LETTERS_READ + 1), last + 1):
            try:
                raw = await self._js.get_msg(self._dlq_stream, seq)
            except nats.js.errors.NotFoundError:
                continue
            headers = raw.headers or {}
            topic = headers.get("Zmicro-Topic", "")
            if topic not in self._topics:
                continue
            deliveries = headers.get("Zmicro-Deliveries", "")
            out.append(DeadLetter(
                topic=topic, queue=headers.get("Zmicro-Queue") or None, data=raw.data or b"",
                reason=headers.get("Zmicro-Reason", ""),
                deliveries=int(deliveries) if deliveries.isdigit() else None))
        return out

    # -- close -----------------------------------------------------------------

    def close(self) -> None:
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        if self._runner.on_loop():
            raise RuntimeError("NatsBroker.close() from the broker's own loop")
        try:
            self._runner.run(self._close(), 60)
        except Exception:  # noqa: BLE001 - closing: log, release the thread anyway
            log.exception("nats: closing the broker")
        finally:
            self._runner.stop()
        self._close_thread_loops()
        self._close_loop_conns()

    def _close_loop_conns(self) -> None:
        # Each on its own loop, without waiting: that loop may be the caller's.
        for loop, pending in list(self._loop_conns.items()):
            if loop.is_closed() or not pending.done() or pending.exception():
                continue
            try:
                asyncio.run_coroutine_threadsafe(pending.result().nc.close(), loop)
            except RuntimeError:  # the loop closed meanwhile
                pass
        self._loop_conns.clear()
        self._loop_ready.clear()

    async def _close(self) -> None:
        for sub in list(self._subs):
            await sub.stop()
        await self._drain_ends()
        try:
            await asyncio.wait_for(self._nc.close(), 10)
        except asyncio.TimeoutError:
            log.warning("nats: the connection did not close within 10 s")

    async def _drain_ends(self) -> None:
        # Ends posted before close() are sent before the connection goes.
        await self._flush_posted()

    async def _flush_posted(self) -> None:
        """Run the ends posted so far (on the loop)."""
        self._drain_posted()
        if self._posted_tasks:
            await asyncio.wait(set(self._posted_tasks), timeout=10)


class _NatsDelivery(Delivery):
    """One delivery; ending it posts the end to the broker's loop."""

    __slots__ = ("data", "deliveries", "user_id", "_sub", "_msg", "_ended", "_released",
                 "_ticker")

    def __init__(self, sub: _JsSubscription | _CoreSubscription, msg: Msg,
                 deliveries: int | None) -> None:
        self.data = msg.data
        self.deliveries = deliveries
        self.user_id = None
        self._sub = sub
        self._msg = msg
        self._ended = False
        self._released = False  # given back by close(): a later end is moot
        self._ticker: asyncio.Task[None] | None = None  # JetStream: in_progress (ack_wait/2)

    def _end(self, kind: str, arg: Any) -> None:
        with self._sub.lock:
            if self._released:
                return
            if self._ended:
                raise RuntimeError("this delivery was already ended")
            self._ended = True
        self._sub.broker._post(self._sub.finish, self, kind, arg)

    def ack(self) -> None:
        self._end("ack", None)

    def nack(self, *, delay: float | None = None) -> None:
        if delay is not None and (not isinstance(delay, (int, float)) or delay < 0):
            raise ValueError(f"delay must be seconds >= 0 or None, not {delay!r}")
        self._end("nack", delay)

    def term(self, reason: str) -> None:
        self._end("term", str(reason))


class _SubscriptionBase(Subscription):
    def __init__(self, broker: NatsBroker, topic: str, on_delivery: Callable[[Delivery], Any],
                 options: SubscribeOptions) -> None:
        self.broker = broker
        self.topic = topic
        self.options = options
        self.queue = options.queue
        self.on_delivery = on_delivery
        self.lock = threading.Lock()
        self.closed = False
        self.in_flight = 0
        self.out: dict[int, _NatsDelivery] = {}   # handed out, not ended (by id)
        self.counts = {"delivered": 0, "acked": 0, "nacked": 0, "terminated": 0,
                       "dead_lettered": 0}

    def _hand_out(self, delivery: _NatsDelivery) -> None:
        self.out[id(delivery)] = delivery
        self.in_flight += 1
        self.counts["delivered"] += 1
        try:
            self.on_delivery(delivery)
        except Exception:  # noqa: BLE001 - the contract says it must not raise
            log.exception("nats: on_delivery raised for %s; the delivery is nacked", self.topic)
            if not delivery._ended:
                delivery.nack()

    def stats(self) -> dict[str, int]:
        return {**self.counts, "in_flight": self.in_flight}

    def close(self) -> None:
        with self.lock:
            if self.closed:
                return
            self.closed = True
        if self.broker._closed:
            return
        try:
            self.broker._runner.run(self.stop(), 60)
        finally:
            self.broker._subs.discard(self)

    async def stop(self) -> None:
        raise NotImplementedError

    async def start(self) -> None:
        raise NotImplementedError

    def resume(self) -> None:
        """After a reconnect (on the loop)."""

    async def finish(self, delivery: _NatsDelivery, kind: str, arg: Any) -> None:
        raise NotImplementedError


class _JsSubscription(_SubscriptionBase):
    """A JetStream pull consumer and the loop that pulls only free slots."""

    def __init__(self, broker: NatsBroker, topic: str, on_delivery: Callable[[Delivery], Any],
                 options: SubscribeOptions) -> None:
        super().__init__(broker, topic, on_delivery, options)
        self.stream = stream_name(topic, broker._subject_prefix)
        self.consumer: str = durable_name(options.queue) if options.queue else ""
        self._inbox = ""
        self._nats_sub: Any = None
        self._backlog: collections.deque[Msg] = collections.deque()
        self._requested = 0                # asked for by the current pull request
        self._request_done = asyncio.Event()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._ready = False
        self._last_seq = 0                 # broadcast: last stream sequence seen
        self._held: dict[int, int] = {}    # broadcast: stream seq -> deliveries handed out

    def _consumer_config(self, start_seq: int | None = None) -> js_api.ConsumerConfig:
        o = self.options
        max_ack_pending = self.broker._max_ack_pending or max(1024, 4 * o.max_in_flight)
        config = js_api.ConsumerConfig(
            filter_subject=self.broker._subject(self.topic),
            ack_policy=js_api.AckPolicy.EXPLICIT, ack_wait=o.ack_wait,
            max_deliver=o.max_deliveries + 1, max_ack_pending=max_ack_pending,
            replay_policy=js_api.ReplayPolicy.INSTANT)
        if self.queue:
            config.durable_name = self.consumer
            config.deliver_policy = js_api.DeliverPolicy.ALL
        else:
            config.inactive_threshold = 30.0
            if start_seq:
                config.deliver_policy = js_api.DeliverPolicy.BY_START_SEQUENCE
                config.opt_start_seq = start_seq
            else:
                config.deliver_policy = js_api.DeliverPolicy.NEW
        return config

    async def _ensure(self) -> None:
        js = self.broker._js
        await self.broker._ensure_stream(self.topic)
        if self.queue:
            try:
                await js.add_consumer(self.stream, self._consumer_config())
            except nats.js.errors.APIError as e:
                raise BrokerError(f"cannot create the consumer of group {self.queue!r} on "
                                  f"{self.stream} (does it exist with other options?): "
                                  f"{e}") from e
            return
        if self.consumer:
            try:
                await js.consumer_info(self.stream, self.consumer)
                return
            except nats.js.errors.NotFoundError:
                pass  # forgotten by a restarted server: make it again
        start = min(self._held) if self._held else (self._last_seq + 1 if self._last_seq
                                                    else None)
        info = await js.add_consumer(self.stream, self._consumer_config(start))
        self.consumer = info.name

    async def start(self) -> None:
        nc = self.broker._nc
        self._inbox = nc.new_inbox()
        self._nats_sub = await nc.subscribe(self._inbox, cb=self._on_msg,
                                            pending_msgs_limit=-1, pending_bytes_limit=-1)
        try:
            await self._ensure()
        except BaseException:
            await self._nats_sub.unsubscribe()
            raise
        self._ready = True
        self._task = asyncio.get_running_loop().create_task(self._pull_loop())

    def resume(self) -> None:
        self._ready = False
        self._request_done.set()
        self._wake.set()

    async def _pull_loop(self) -> None:
        nc = self.broker._nc
        while not self.closed:
            if not self._ready:
                try:
                    await self._ensure()
                    self._ready = True
                except Exception as e:  # noqa: BLE001 - server still away: try again
                    log.debug("nats: %s not ready yet: %s", self.topic, redact_url(str(e)))
                    await asyncio.sleep(0.25)
                    continue
            free = self.options.max_in_flight - self.in_flight - len(self._backlog)
            if free <= 0:
                self._wake.clear()
                await self._wake.wait()
                continue
            self._requested = free
            self._request_done.clear()
            request = json.dumps({"batch": free,
                                  "expires": int(PULL_EXPIRES * 1e9)}).encode()
            try:
                await nc.publish(f"{_JS_API}.CONSUMER.MSG.NEXT.{self.stream}.{self.consumer}",
                                 request, reply=self._inbox)
            except Exception as e:  # noqa: BLE001 - reconnecting: pull again soon
                log.debug("nats: pull request for %s failed: %s", self.topic,
                          redact_url(str(e)))
                await asyncio.sleep(0.1)
                continue
            try:
                # A request lost with its server is replaced after a while.
                await asyncio.wait_for(self._request_done.wait(), PULL_EXPIRES + 2)
            except asyncio.TimeoutError:
                pass

    async def _on_msg(self, msg: Msg) -> None:
        headers = msg.headers
        if headers and not msg.data and "Status" in headers:
            status = headers["Status"]
            if status == "100":
                return  # heartbeat
            if status == "409" and "Deleted" in headers.get("Description", ""):
                self._ready = False
            elif status not in ("404", "408"):
                log.debug("nats: pull status %s %s on %s", status,
                          headers.get("Description", ""), self.topic)
                await asyncio.sleep(0.1)
            self._request_done.set()
            return
        self._requested -= 1
        if self._requested <= 0:
            self._request_done.set()
        if self.closed:
            # Not handed out: let another member have it at once.
            await msg.nak()
            return
        meta = msg.metadata
        deliveries = meta.num_delivered
        if not self.queue and meta.sequence:
            self._last_seq = max(self._last_seq, meta.sequence.stream)
        if deliveries is not None and deliveries > self.options.max_deliveries:
            # The extra delivery of the module docstring: dead-letter, never hand out.
            await self._dead_letter_and_term(msg, "max_deliveries", deliveries - 1)
            return
        if self.in_flight >= self.options.max_in_flight:
            self._backlog.append(msg)  # an earlier request's late answer: hold it
            return
        self._deliver(msg)

    def _deliver(self, msg: Msg) -> None:
        meta = msg.metadata
        if not self.queue and meta.sequence:
            seq = meta.sequence.stream
            self._held[seq] = self._held.get(seq, 0) + 1
        delivery = _NatsDelivery(self, msg, meta.num_delivered)
        delivery._ticker = asyncio.get_running_loop().create_task(self._in_progress(delivery))
        self._hand_out(delivery)

    async def _in_progress(self, delivery: _NatsDelivery) -> None:
        """Tell the server every ack_wait/2 that an unended delivery is
        still being handled: a handler longer than ack_wait must not see its
        event redelivered (to another member) while it runs."""
        every = max(self.options.ack_wait / 2, 0.05)
        msg = delivery._msg
        while True:
            await asyncio.sleep(every)
            if delivery._ended or delivery._released or self.closed:
                return
            try:
                await msg.in_progress()
            except Exception as e:  # noqa: BLE001 - reconnecting: the next tick tries again
                log.debug("nats: in_progress on %s failed: %s", self.topic, redact_url(str(e)))

    async def _dead_letter_and_term(self, msg: Msg, reason: str,
                                    deliveries: int | None) -> bool:
        try:
            await self.broker._dead_letter(self.topic, self.queue, msg, reason, deliveries)
        except Exception as e:  # noqa: BLE001 - DLQ unreachable: keep the event
            log.error("nats: cannot dead-letter an event of %s (%s): %s; it is redelivered",
                      self.topic, reason, redact_url(str(e)))
            await msg.nak(delay=self.options.delay(deliveries or 1))
            return False
        await msg.term()
        self.counts["dead_lettered"] += 1
        return True

    async def finish(self, delivery: _NatsDelivery, kind: str, arg: Any) -> None:
        msg = delivery._msg
        if delivery._ticker is not None:
            delivery._ticker.cancel()
        if self.out.pop(id(delivery), None) is None:
            return  # released by close() meanwhile: naked already
        self.in_flight -= 1
        if not self.queue and msg.metadata.sequence:
            seq = msg.metadata.sequence.stream
            left = self._held.get(seq, 1) - 1
            if left > 0:
                self._held[seq] = left
            else:
                self._held.pop(seq, None)
        while self._backlog and self.in_flight < self.options.max_in_flight:
            self._deliver(self._backlog.popleft())
        self._wake.set()
        deliveries = delivery.deliveries or 1
        if kind == "ack":
            self.counts["acked"] += 1
            await msg.ack()
        elif kind == "nack":
            self.counts["nacked"] += 1
            if deliveries >= self.options.max_deliveries:
                await self._dead_letter_and_term(msg, "max_deliveries", deliveries)
            else:
                delay = self.options.delay(deliveries) if arg is None else arg
                await msg.nak(delay=delay)
        else:
            self.counts["terminated"] += 1
            await self._dead_letter_and_term(msg, arg, deliveries)

    async def stop(self) -> None:
        self.closed = True
        self._request_done.set()
        self._wake.set()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001
                pass
        # Ends already posted go first; what is still out is given back at
        # once (nak), so another member gets it without waiting for ack_wait.
        await self.broker._flush_posted()
        released = []
        with self.lock:
            for key, d in list(self.out.items()):
                if not d._ended:  # (an end posted meanwhile is still sent)
                    d._released = True
                    released.append(d._msg)
                    del self.out[key]
                    self.in_flight -= 1
        for msg in [*released, *self._backlog]:
            try:
                await msg.nak()
            except Exception:  # noqa: BLE001 - redelivered after ack_wait anyway
                pass
        self._backlog.clear()
        if self._nats_sub is not None:
            try:
                await self._nats_sub.unsubscribe()
            except Exception:  # noqa: BLE001 - connection gone: nothing to undo
                pass
        if not self.queue and self.consumer:
            try:
                await self.broker._js.delete_consumer(self.stream, self.consumer)
            except Exception:  # noqa: BLE001 - it expires by itself (inactive_threshold)
                pass
        self.broker._subs.discard(self)


class _CoreSubscription(_SubscriptionBase):
    """A core NATS subscription (native queue group), at most once."""

    def __init__(self, broker: NatsBroker, topic: str, on_delivery: Callable[[Delivery], Any],
                 options: SubscribeOptions) -> None:
        super().__init__(broker, topic, on_delivery, options)
        self._nats_sub: Any = None
        self._free = asyncio.Event()

    async def start(self) -> None:
        self._free.set()
        self._nats_sub = await self.broker._nc.subscribe(
            self.broker._subject(self.topic), queue=self.queue or "", cb=self._on_msg,
            pending_msgs_limit=self.broker._pending_limit)
        # subscribe() returns once the server holds the subscription: a
        # publish from another connection (each publishing thread has its
        # own) right after it is then delivered, not lost to core NATS'
        # at-most-once.
        await self.broker._nc.flush()

    async def _on_msg(self, msg: Msg) -> None:
        # nats-py runs one callback at a time per subscription: waiting here
        # holds the next messages in its pending queue (bounded).
        while self.in_flight >= self.options.max_in_flight and not self.closed:
            self._free.clear()
            await self._free.wait()
        if self.closed:
            return
        self._hand_out(_NatsDelivery(self, msg, None))

    async def finish(self, delivery: _NatsDelivery, kind: str, arg: Any) -> None:
        if self.out.pop(id(delivery), None) is None:
            return
        self.in_flight -= 1
        self._free.set()
        if kind == "ack":
            self.counts["acked"] += 1
        elif kind == "nack":
            self.counts["nacked"] += 1  # at most once: nothing redelivers it
        else:
            self.counts["terminated"] += 1
            self.counts["dead_lettered"] += 1
            self.broker._core_dead.append(DeadLetter(self.topic, self.queue, delivery.data,
                                                     arg, None))

    async def stop(self) -> None:
        self.closed = True
        self._free.set()
        if self._nats_sub is not None:
            try:
                await self._nats_sub.unsubscribe()
            except Exception:  # noqa: BLE001 - connection gone: nothing to undo
                pass
        self.broker._subs.discard(self)
