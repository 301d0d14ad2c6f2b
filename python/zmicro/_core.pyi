"""Type stubs for the compiled core (core/*.pyx), in the order core/_core.pyx
includes them. Checked against the built module by tests/test_stubs.py
(mypy's stubtest); `cdef readonly` fields are properties, `cdef public`
fields attributes."""

import asyncio
import collections
import logging
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Executor
from contextvars import ContextVar
from types import MappingProxyType
from typing import Any, ClassVar, Literal, NoReturn

import zmq
from typing_extensions import Buffer, disjoint_base

from zmicro.auth.principal import Principal
from zmicro.codec import Codec
from zmicro.errors import Code
from zmicro.security.mackeys import MacSecrets

_Socket = zmq.Socket[Any] | int
_Codes = Iterable[Code | int | str]

# -- native.pyx: libzmq, libsodium, OpenSSL -----------------------------------

MIN_LIBZMQ: tuple[int, int, int]

def _check_libzmq_version(version: Sequence[int]) -> None: ...
def libzmq_version() -> tuple[int, int, int]: ...
def have_sodium() -> bool: ...
def mac_backends() -> dict[str, str]:
    """Who computes each MAC algorithm: "openssl", "libsodium" or "python"."""

# -- errors.pyx ---------------------------------------------------------------

def _error_codes() -> dict[str, int]: ...
def _raise_errno(err: int) -> NoReturn: ...

# -- wire.pyx: the header -----------------------------------------------------

WIRE_VERSION: int
MAX_HEADER: int
MAX_NAME: int
MAX_VALUE: int
MAX_METADATA: int
FLAG_SIGNED: int
FLAG_BODY_INLINE: int
FLAG_MAC_TRAILER: int
FLAG_NOT_PROCESSED: int

@disjoint_base
class Header:
    version: int
    kind: int
    flags: int
    request_id: int
    deadline_us: int
    status: int
    key_id: int
    timestamp_us: int
    trace_id: int
    span_id: int
    content_type: str
    service: str
    endpoint: str
    metadata: dict[str, bytes]
    nonce: bytes
    principal: str
    detail: str
    max_reply_size: int
    def __init__(
        self,
        *,
        version: int = ...,
        kind: int = 0,
        flags: int = 0,
        request_id: int = 0,
        deadline_us: int = 0,
        status: int = 0,
        key_id: int = 0,
        timestamp_us: int = 0,
        trace_id: int = 0,
        span_id: int = 0,
        content_type: str = "",
        service: str = "",
        endpoint: str = "",
        metadata: dict[str, bytes] | None = None,
        nonce: bytes = b"",
        principal: str = "",
        detail: str = "",
        max_reply_size: int = 0,
    ) -> None: ...
    def encode(self) -> bytes: ...
    def __eq__(self, other: object, /) -> bool: ...
    __hash__: ClassVar[None]  # type: ignore[assignment]

def decode_header(data: Buffer) -> Header: ...
def utf8_valid(data: Buffer) -> bool: ...

# -- context.pyx: the per-request Context -------------------------------------

CURRENT: ContextVar[Context]

@disjoint_base
class Context:
    """What a handler knows about the request it serves; made by the server."""
    @property
    def service(self) -> str: ...
    @property
    def endpoint(self) -> str: ...
    @property
    def request_id(self) -> int: ...
    @property
    def peer(self) -> bytes: ...
    @property
    def content_type(self) -> str: ...
    @property
    def user_id(self) -> str | None: ...
    @property
    def trace_hi(self) -> int: ...
    @property
    def trace_lo(self) -> int: ...
    @property
    def span_id(self) -> int: ...
    @property
    def deadline(self) -> float | None: ...
    @property
    def expired(self) -> bool: ...
    @property
    def metadata(self) -> MappingProxyType[str, bytes]: ...
    @property
    def principal(self) -> Principal | None: ...
    @principal.setter
    def principal(self, value: Principal | None) -> None: ...
    @property
    def cancelled(self) -> bool: ...
    @property
    def trace_id(self) -> int: ...
    def time_remaining(self) -> float | None: ...

def _test_context(
    *,
    service: str = "svc",
    endpoint: str = "Svc.Call",
    request_id: int = 1,
    metadata: dict[str, Any] | None = None,
    principal: Principal | None = None,
    timeout: float | None = None,
    peer: bytes = b"peer",
    content_type: str = "application/msgpack",
    user_id: str | None = None,
) -> Context: ...
def current_context() -> Context | None: ...

# -- socket.pyx: received frames ----------------------------------------------

@disjoint_base
class Frame:
    """A received frame as a read-only buffer, without a copy; made by the core."""
    def __len__(self) -> int: ...
    if sys.version_info >= (3, 12):
        def __buffer__(self, flags: int, /) -> memoryview: ...
        def __release_buffer__(self, buffer: memoryview, /) -> None: ...

def _release_sent() -> None: ...

# -- mac.pyx ------------------------------------------------------------------

MAC_HMAC_SHA256: int
MAC_BLAKE2B: int
MAC_BLAKE3: int
MAC_SIZE: int
MAC_DOMAIN: bytes
MAC_KEY_MIN: int
MAC_KEY_MAX: int
FRAME_MAX: int

def mac_compute(alg: int, key: Buffer, frames: Sequence[Buffer]) -> bytes: ...
def mac_verify(alg: int, key: Buffer, frames: Sequence[Buffer], tag: Buffer) -> bool: ...
def random_bytes(n: int) -> bytes: ...

# -- keyring.pyx: keys, signing and checking, nonce sets ----------------------

MAC_FAILURE_NAMES: tuple[str, ...]
KEYS_RELOAD_INTERVAL: float

def _forget_nonces() -> None: ...

@disjoint_base
class MacKey:
    """A prepared MAC key; its secret is not readable."""
    @property
    def id(self) -> int: ...
    @property
    def alg(self) -> int: ...
    def __init__(self, id: int, alg: int, secret: Buffer) -> None: ...

@disjoint_base
class Keyring:
    """The MAC keys of one service, its window and its nonce set."""
    @property
    def window(self) -> float: ...
    @property
    def replay_quota(self) -> int: ...
    @property
    def max_principals(self) -> int: ...
    @property
    def current_id(self) -> int: ...
    @property
    def key_ids(self) -> list[int]: ...
    def __init__(self, keys: Iterable[MacKey], current: int, *, window: float = 30.0,
                 replay_quota: int = 1_500_000, max_principals: int = 65536,
                 clock: Callable[[], float] | None = None) -> None: ...
    def update(self, keys: Iterable[MacKey], current: int) -> None: ...
    def stats(self) -> dict[str, int]: ...
    def held(self, principal: Buffer) -> int: ...
    def seal(self, header: Header, bodies: Sequence[Buffer] = (), *, bind: Buffer = b"",
             inline: bool = False) -> list[bytes]: ...
    def open(self, frames: Sequence[Buffer], principal: Buffer = b"", *, bind: Buffer = b"",
             remember: bool = True) -> str: ...

@disjoint_base
class KeySource:
    """The keyrings of the services a core talks to; rotated keys picked up."""
    @property
    def own(self) -> Keyring | None: ...
    def __init__(self, secrets: MacSecrets, *, service: str | None = None,
                 max_rings: int = 0) -> None: ...

# -- codecs.pyx ---------------------------------------------------------------

@disjoint_base
class CodecEntry:
    """A codec as the core uses it."""
    @property
    def name(self) -> str: ...
    @property
    def codec(self) -> Codec: ...
    def __init__(self, codec: Codec, index: int = 0) -> None: ...

# -- message.pyx: the message layer -------------------------------------------

INLINE_MAX: int
ZERO_COPY_MIN: int
NONCE_SIZE: int
DETAIL_MAX: int
MESSAGE_MAX_DEFAULT: int

@disjoint_base
class Parked:
    """A built message waiting for room on its socket; made by the core."""

# -- frame.pyx: messages as Python objects ------------------------------------

@disjoint_base
class Message:
    """A received message; made by recv_message() and parse_frames()."""
    @property
    def routing_id(self) -> bytes | None: ...
    @property
    def header(self) -> Header: ...
    @property
    def raw_header(self) -> bytes: ...
    @property
    def bodies(self) -> list[bytes]: ...
    @property
    def mac(self) -> bytes | None: ...
    @property
    def user_id(self) -> str | None: ...
    @property
    def inline(self) -> bool: ...
    def verify(self, alg: int, key: Buffer, bind: Buffer = b"") -> bool: ...

def send_message(
    socket: _Socket,
    header: Header,
    bodies: Sequence[Buffer] = (),
    *,
    routing_id: Buffer | None = None,
    mac_key: Buffer | None = None,
    mac_alg: int = 1,
    bind: Buffer = b"",
    timeout: float = -1.0,
    inline_body: bool = False,
) -> None: ...
def parse_frames(frames: Sequence[Buffer], *, routed: bool = False) -> Message: ...
def recv_message(socket: _Socket, *, routed: bool = False, timeout: float = -1.0) -> Message: ...

# -- events.pyx: event frames, the subscriber's checks -------------------------

EVENT_MAX: int
EVENT_REFUSALS: tuple[str, ...]

def event_frame_check(topic: str, frame: Buffer) -> tuple[int, str | None]: ...
def event_frame_refusal(topic: str, frame: Buffer) -> str | None: ...
def encode_event(topic: str, body: Buffer, *, secrets: MacSecrets | KeySource | None,
                 request_id: int,
                 content_type: str = "application/msgpack",
                 metadata: Mapping[str, str | bytes] | None = None, principal: str = "",
                 trace_id_high: int = 0, trace_id_low: int = 0, span_id: int = 0,
                 now: float | None = None) -> tuple[bytes, bytes]: ...

@disjoint_base
class InEvent:
    """An event frame EventInbox.check() accepted; made by the core."""
    @property
    def topic(self) -> str: ...
    @property
    def event_id(self) -> bytes: ...
    @property
    def request_id(self) -> int: ...
    @property
    def published_us(self) -> int: ...
    @property
    def published_at(self) -> float: ...
    @property
    def content_type(self) -> str: ...
    @property
    def metadata(self) -> dict[str, str]: ...
    @property
    def principal(self) -> str: ...
    @property
    def trace_id_high(self) -> int: ...
    @property
    def trace_id_low(self) -> int: ...
    @property
    def span_id(self) -> int: ...
    @property
    def body(self) -> bytes: ...
    @property
    def signed(self) -> bool: ...
    @property
    def duplicate(self) -> bool: ...
    @property
    def in_progress(self) -> bool: ...
    def context(self, *, principal: Any = None, user_id: str | None = None) -> Context: ...

@disjoint_base
class EventInbox:
    """What one subscription checks of every event frame it gets."""
    @property
    def topic(self) -> str: ...
    @property
    def service(self) -> str: ...
    @property
    def max_age(self) -> float: ...
    @property
    def window(self) -> float: ...
    def __init__(self, topic: str, *, secrets: MacSecrets | None, max_age: float = 120.0,
                 window: float = 30.0, replay_quota: int = 1_500_000,
                 clock: Callable[[], float] | None = None) -> None: ...
    def check(self, data: Buffer) -> InEvent: ...
    def acked(self, event: InEvent) -> None: ...
    def release(self, event: InEvent) -> None: ...
    def stats(self) -> dict[str, int]: ...

# -- subscriber.pyx: a subscription's per-event path -----------------------------

GLUE_COUNTERS: tuple[str, ...]

@disjoint_base
class EventContext:
    """What a subscriber knows about the event it handles; made by zmicro."""
    topic: str
    queue: str | None
    event_id: bytes
    published_at: float
    deliveries: int | None
    metadata: Mapping[str, str]
    user_id: str | None
    content_type: str
    signed: bool
    trace_hi: int
    trace_lo: int
    span_id: int
    _core: Context | None
    def __init__(self, *, topic: str, queue: str | None, event_id: bytes, published_at: float,
                 deliveries: int | None, metadata: Mapping[str, str],
                 principal: Principal | None, user_id: str | None, content_type: str,
                 signed: bool, trace_hi: int = 0, trace_lo: int = 0,
                 span_id: int = 0) -> None: ...
    @property
    def principal(self) -> Principal | None: ...
    @principal.setter
    def principal(self, value: Principal | None) -> None: ...
    @property
    def service(self) -> str: ...
    @property
    def endpoint(self) -> str: ...
    @property
    def deadline(self) -> None: ...
    @property
    def cancelled(self) -> bool: ...
    @property
    def trace_id(self) -> int: ...
    def time_remaining(self) -> None: ...

@disjoint_base
class EventGlue:
    """The per-event path of one subscription (a broker's on_delivery)."""
    draining: bool
    blocks_address: str | None
    @property
    def inbox(self) -> EventInbox: ...
    @property
    def topic(self) -> str: ...
    @property
    def active(self) -> int: ...
    def __init__(self, owner: Any, inbox: EventInbox, *, queue: str | None,
                 handler: Callable[[Any, EventContext], Any],
                 resolve: Callable[[str], Principal] | None, inline: bool) -> None: ...
    def __call__(self, delivery: Any) -> None: ...
    def run(self, delivery: Any, event: InEvent, value: Any, ctx: EventContext) -> None: ...
    def finish(self, delivery: Any, event: InEvent, exc: BaseException | None) -> None: ...
    def not_run(self) -> None: ...
    def add(self, name: str, n: int = 1) -> None: ...
    def counters(self) -> dict[str, int]: ...

# -- server.pyx: a service's receive loop -------------------------------------

INLINE: int
BLOCKING: int
ASYNC: int
STATS_KEYS: tuple[str, ...]

def empty_stats() -> dict[str, Any]: ...

@disjoint_base
class Endpoint:
    """A handler as the server loop sees it."""
    @property
    def name(self) -> str: ...
    @property
    def handler(self) -> Callable[[Any, Context], Any]: ...
    @property
    def mode(self) -> int: ...
    @property
    def request_type(self) -> Any: ...
    @property
    def builtin(self) -> bool: ...
    @property
    def executor(self) -> Executor | None: ...
    def __init__(self, name: str, handler: Callable[[Any, Context], Any], mode: int,
                 request_type: Any, *, builtin: bool = False,
                 executor: Executor | None = None) -> None: ...

@disjoint_base
class TopicSub:
    """A subscription of a ServerCore; made by add_subscription()."""
    @property
    def topic(self) -> str: ...
    @property
    def max_in_flight(self) -> int: ...
    @property
    def in_flight(self) -> int: ...
    def stats(self) -> dict[str, int]: ...

@disjoint_base
class EventDelivery:
    """One event handed to a ServerCore subscription (a broker Delivery)."""
    @property
    def data(self) -> bytes: ...
    @property
    def user_id(self) -> str | None: ...
    @property
    def deliveries(self) -> int | None: ...
    @property
    def ended(self) -> bool: ...
    def ack(self) -> None: ...
    def nack(self, *, delay: float | None = None) -> None: ...
    def term(self, reason: str) -> None: ...
    def refuse(self, reason: str) -> None: ...

@disjoint_base
class ServerCore:
    """The receive loop and dispatch of one service (one ROUTER socket)."""
    local_address: str | None
    close_delay: float
    @property
    def service(self) -> str: ...
    @property
    def max_in_flight(self) -> int: ...
    @property
    def max_frame(self) -> int: ...
    @property
    def in_flight(self) -> int: ...
    @property
    def draining(self) -> bool: ...
    @property
    def drained(self) -> bool: ...
    def __init__(
        self,
        zsock: zmq.Socket[Any],
        service: str,
        endpoints: Iterable[Endpoint],
        codecs: dict[str, Codec],
        *,
        default_content_type: str,
        max_in_flight: int,
        executor_factory: Callable[[], Executor],
        logger: logging.Logger | None = None,
        secrets: MacSecrets | None = None,
        allowlist: Callable[[], Mapping[str, Any]] | None = None,
        on_refused: Callable[[str, str | None, str], object] | None = None,
        resolve_principal: Callable[[str], Principal | None] | None = None,
        max_message_size: int = 0,
    ) -> None: ...
    def close(self) -> int: ...
    def run_blocking(self) -> None: ...
    def stop(self) -> None: ...
    def drain(self, grace: float) -> None: ...
    def attach(self, loop: asyncio.AbstractEventLoop) -> None: ...
    def detach(self) -> None: ...
    def add_subscription(self, topic: str, on_delivery: Callable[[EventDelivery], Any],
                         max_in_flight: int) -> TopicSub: ...
    def remove_subscription(self, topic: str) -> list[EventDelivery]: ...
    def subscriptions(self) -> dict[str, tuple[int, int]]: ...
    def stats(self) -> dict[str, Any]: ...
    def _flush_from_loop(self) -> None: ...

# -- selector.pyx: load balancing ---------------------------------------------

SELECT_RANDOM: int
SELECT_ROUND_ROBIN: int
SELECT_P2C: int
SELECT_PEAK_EWMA: int
SELECT_HASH: int
SELECT_NAMES: tuple[str, ...]
DEFAULT_REPLICAS: int

@disjoint_base
class NodeState:
    """One node of a Balancer; the same object while its address stays."""
    @property
    def address(self) -> str: ...
    @property
    def version(self) -> str: ...
    @property
    def metadata(self) -> dict[str, Any]: ...
    @property
    def public_key(self) -> str | None: ...
    @property
    def inflight(self) -> int: ...
    @property
    def ewma(self) -> float: ...
    @property
    def failures(self) -> int: ...
    @property
    def ejections(self) -> int: ...
    @property
    def ejected_until(self) -> float: ...
    @property
    def ejected(self) -> bool: ...
    @property
    def probation(self) -> bool: ...

@disjoint_base
class OutlierPolicy:
    @property
    def consecutive_failures(self) -> int: ...
    @property
    def base_ejection(self) -> float: ...
    @property
    def max_ejection(self) -> float: ...
    @property
    def max_ejected_share(self) -> float: ...
    def __init__(self, *, consecutive_failures: int = 5, base_ejection: float = 30.0,
                 max_ejection: float = 300.0, max_ejected_share: float = 0.5) -> None: ...

@disjoint_base
class Subset:
    """The nodes of a Balancer matching one filter (from Balancer.subset)."""
    @property
    def version(self) -> str | None: ...
    @property
    def metadata(self) -> dict[str, Any] | None: ...
    def nodes(self) -> tuple[NodeState, ...]: ...
    def __len__(self) -> int: ...

_NodeRecord = tuple[str, str | None, dict[str, Any] | None, str | None]

@disjoint_base
class Balancer:
    """Picks a node per call."""
    @property
    def strategy(self) -> int: ...
    @property
    def outlier(self) -> OutlierPolicy: ...
    @property
    def decay(self) -> float: ...
    @property
    def replicas(self) -> int: ...
    def __init__(self, strategy: int = 1, *, seed: int = 0,
                 clock: Callable[[], float] | None = None,
                 outlier: OutlierPolicy | None = None, decay: float = 10.0,
                 replicas: int = 64) -> None: ...
    def update(self, nodes: Iterable[_NodeRecord]) -> None: ...
    def subset(self, version: str | None = None,
               metadata: dict[str, Any] | None = None) -> Subset: ...
    def pick(self, subset: Subset | None = None, key: str | bytes | None = None,
             avoid: set[NodeState] | frozenset[NodeState] | tuple[NodeState, ...]
             | list[NodeState] | None = None) -> NodeState | None: ...
    def retire(self, n: NodeState | None) -> int: ...
    def begin(self, n: NodeState) -> None: ...
    def end(self, n: NodeState, latency: float, failed: bool = False) -> None: ...
    def lookup(self, address: str) -> NodeState | None: ...
    def nodes(self) -> tuple[NodeState, ...]: ...
    def stats(self) -> dict[str, Any]: ...
    def __len__(self) -> int: ...

def _hash64(data: str | bytes) -> int: ...

# -- retry.pyx: retries and hedging (gRPC A6) ---------------------------------

@disjoint_base
class RetryPolicy:
    @property
    def max_attempts(self) -> int: ...
    @property
    def initial_backoff(self) -> float: ...
    @property
    def max_backoff(self) -> float: ...
    @property
    def multiplier(self) -> float: ...
    @property
    def jitter(self) -> float: ...
    @property
    def retryable_codes(self) -> frozenset[Code]: ...
    def __init__(self, max_attempts: int = 3, initial_backoff: float = 0.01,
                 max_backoff: float = 1.0, multiplier: float = 2.0, jitter: float = 0.2,
                 retryable_codes: _Codes = ...) -> None: ...
    def delay(self, retry: int, u: float = 0.5) -> float: ...

@disjoint_base
class RetryBudget:
    @property
    def max_tokens(self) -> float: ...
    @property
    def token_ratio(self) -> float: ...
    @property
    def tokens(self) -> float: ...
    @property
    def retry_allowed(self) -> bool: ...
    def __init__(self, max_tokens: float = 10.0, token_ratio: float = 0.1) -> None: ...
    def record(self, ok: bool) -> None: ...

@disjoint_base
class HedgingPolicy:
    @property
    def max_attempts(self) -> int: ...
    @property
    def delay(self) -> float: ...
    @property
    def non_fatal_codes(self) -> frozenset[Code]: ...
    def __init__(self, max_attempts: int = 2, delay: float = 0.05,
                 non_fatal_codes: _Codes = ...) -> None: ...

# -- channel.pyx: a client's connection to one node ---------------------------

MONITOR_EVENTS: int

@disjoint_base
class Request:
    """One call as each of its attempts sends it; made by ClientCore.call."""

@disjoint_base
class Completion:
    """Where an event delivery's end goes instead of a Future (core-only:
    its one method is a C method)."""

@disjoint_base
class ChannelBase:
    """One DEALER connected to one node."""
    max_frame: int
    @property
    def address(self) -> str: ...
    @property
    def closed(self) -> bool: ...
    @property
    def n_stale(self) -> int: ...
    @property
    def n_malformed(self) -> int: ...
    @property
    def n_unauthenticated(self) -> int: ...
    def __init__(self, zsock: zmq.Socket[Any], address: str,
                 monitor: zmq.Socket[Any] | None = None) -> None: ...

@disjoint_base
class Channel(ChannelBase):
    """A sync client's connection to one node (one thread uses it)."""
    @property
    def n_wakes(self) -> int: ...
    def close(self) -> None: ...

@disjoint_base
class AsyncChannel(ChannelBase):
    """A connection to one node owned by one asyncio loop."""
    @property
    def in_flight(self) -> int: ...
    @property
    def timer_entries(self) -> int: ...
    def __init__(self, zsock: zmq.Socket[Any], address: str, loop: asyncio.AbstractEventLoop,
                 monitor: zmq.Socket[Any] | None = None) -> None: ...
    def close(self, error: BaseException | None = None) -> None: ...

class CallFuture(asyncio.Future[Any]):
    """The Future of one AsyncClient call: cancelling it cancels the call."""
    def cancel(self, msg: Any | None = None) -> bool: ...

# -- pool.pyx: a client's channels --------------------------------------------

@disjoint_base
class PoolCounters:
    opens: int
    reuses: int
    evictions: int
    idle_closes: int

@disjoint_base
class ChannelPool:
    @property
    def max_sockets(self) -> int: ...
    @property
    def idle_ttl(self) -> float: ...
    @property
    def counters(self) -> PoolCounters: ...
    def __init__(self, make: Callable[[str, Any], ChannelBase], max_sockets: int = 1024,
                 idle_ttl: float = 300.0, counters: PoolCounters | None = None) -> None: ...
    def sweep(self, now: float) -> None: ...
    def close(self) -> None: ...
    def stats(self) -> dict[str, int]: ...
    def __len__(self) -> int: ...

# -- client.pyx: the call path ------------------------------------------------

@disjoint_base
class ClientCore:
    """The call path of Client and AsyncClient."""
    @property
    def timeout(self) -> float: ...
    @property
    def max_message_size(self) -> int: ...
    @property
    def retry(self) -> RetryPolicy | None: ...
    @property
    def hedge(self) -> HedgingPolicy | None: ...
    @property
    def connect_timeout(self) -> float: ...
    @property
    def wait_for_ready(self) -> bool: ...
    def __init__(
        self,
        codecs: dict[str, Codec],
        default_content_type: str,
        timeout: float,
        *,
        refresh: Callable[[str], Balancer],
        make_socket: Callable[[str, Any], tuple[zmq.Socket[Any], zmq.Socket[Any] | None]],
        is_async: bool,
        secrets: MacSecrets | None = None,
        max_message_size: int = 0,
        retry: RetryPolicy | None = None,
        budget: tuple[float, float] = (10.0, 0.1),
        connect_timeout: float = 1.0,
        max_sockets: int = 1024,
        idle_ttl: float = 300.0,
        hedge: HedgingPolicy | None = None,
        wait_for_ready: bool = False,
    ) -> None: ...
    def call(
        self,
        service: str,
        endpoint: str,
        request: Any = None,
        *,
        timeout: float | None = None,
        metadata: dict[str, Any] | None = None,
        address: str | None = None,
        response_type: Any = None,
        content_type: str | None = None,
        server_key: str | None = None,
        retry: RetryPolicy | Literal[False] | None = None,
        idempotent: bool = False,
        key: str | bytes | None = None,
        version: str | None = None,
        node_filter: dict[str, Any] | None = None,
        hedge: HedgingPolicy | None = None,
        wait_for_ready: bool | None = None,
    ) -> Any:
        """The reply (sync), or a CallFuture of it (async)."""
    def deliver(self, address: str, frame: bytes, event_id: bytes, *, topic: str,
                timeout: float, server_key: str | None = None) -> asyncio.Future[None]: ...
    def deliver_then(self, address: str, frame: bytes, event_id: bytes, *, topic: str,
                     timeout: float, server_key: str | None = None,
                     done: Callable[[BaseException | None], object]) -> AsyncChannel: ...
    def pick(self, service: str) -> str | None: ...
    def balancer(self, service: str) -> Balancer: ...
    def known_balancer(self, service: str) -> Balancer | None: ...
    def event_loop(self) -> asyncio.AbstractEventLoop | None: ...
    def pool_stats(self) -> dict[str, int]: ...
    def retry_budget(self, service: str) -> RetryBudget: ...
    def channels(self) -> list[ChannelBase]: ...
    def close(self) -> None: ...

# -- the embedded publisher's fast path (core/outbox.pyx) ------------------------

@disjoint_base
class PendingEvent:
    """One event in the embedded publisher's outbox."""
    topic: str
    frame: bytes
    event_id: bytes
    size: int
    accepted_at: float
    route_until: float
    expires: float
    outcomes: dict[str, str]
    open: int
    done: asyncio.Future[Any] | None
    def __init__(self, topic: str, frame: bytes, event_id: bytes, now: float,
                 route_for: float, max_age: float) -> None: ...

@disjoint_base
class DeliveryCore:
    """zmicro.broker.embedded.DeliveryEngine's base: its fast path."""
    _topics: dict[str, Any]
    _busy: dict[tuple[str, str], int]
    _full_until: dict[tuple[str, str], float]
    _lanes: dict[str, dict[str, collections.deque[PendingEvent]]]
    _flying: set[Any]
    _credit_waiters: dict[str, Any]
    _unrouted: dict[str, collections.deque[PendingEvent]]
    _events: set[PendingEvent]
    _pending_bytes: int
    _send: Any
    _permit: Any
    _clock: Any
    _check: Any
    _default: Any
    counters: Any
    _closing: bool
    _room_waiters: int
    _room: asyncio.Event
    _loop: asyncio.AbstractEventLoop | None
    max_age: float
    @property
    def n_credit_looks(self) -> int: ...
    @property
    def n_pumps(self) -> int: ...
    max_pending: int
    max_pending_bytes: int
    _direct: ClientCore | None
    _same_id: Any
    @property
    def pending(self) -> int: ...
    @property
    def pending_bytes(self) -> int: ...
    @property
    def closing(self) -> bool: ...
    def _core_ready(self) -> None: ...
    def _accept(self, topic: str, frame: bytes, event_id: bytes, timeout: float, wait: bool,
                count: bool = True, route: bool = True) -> PendingEvent: ...
    def accept_batch(self, handed: Iterable[tuple[str, bytes, bytes, float]]) -> list[PendingEvent]: ...
    def route_all(self, events: list[PendingEvent]) -> None: ...
    def _routed(self, event: PendingEvent, groups: list[str], broadcast: list[str]) -> None: ...
    def _release_slot(self, name: str, address: str) -> None: ...
    def _slot_free(self, name: str, address: str | None) -> None: ...
    def _pump(self, name: str, address: str | None = None) -> None: ...
    def _ended(self, event: PendingEvent, key: str, outcome: str) -> None: ...
    def _finish(self, event: PendingEvent) -> None: ...
    def _wake_room(self) -> None: ...

HANDED: int
FULL: int
REFUSED: int
HANDED_WAKE: int

@disjoint_base
class Handover:
    """EmbeddedBroker.publish() -> the engine's thread (core/outbox.pyx)."""
    lock: Any
    queue: collections.deque[tuple[str, bytes, bytes, float]]
    queued_bytes: int
    transit: int
    transit_bytes: int
    woken: bool
    room: Any
    room_waiters: int
    room_low: int
    room_called: bool
    def __init__(self, engine: DeliveryCore, lock: Any, room: Any, room_low: int, *,
                 valid_topics: set[str], check: Callable[[str, float], None]) -> None: ...
    def no_room_locked(self, size: int) -> bool: ...
    def offer(self, topic: str, frame: bytes | bytearray | memoryview,
              event_id: bytes | bytearray | memoryview, timeout: float) -> int: ...
    def take(self) -> collections.deque[tuple[str, bytes, bytes, float]]: ...
    def landed(self) -> None: ...
