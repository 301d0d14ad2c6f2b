"""Type stubs for the compiled core (core/*.pyx)."""

from collections.abc import Buffer, Iterable, Sequence
from typing import Any

import zmq

WIRE_VERSION: int
MAX_HEADER: int
MAX_NAME: int
MAX_VALUE: int
MAX_METADATA: int
FLAG_SIGNED: int
FLAG_BODY_INLINE: int
FLAG_MAC_TRAILER: int
FLAG_NOT_PROCESSED: int
MAC_HMAC_SHA256: int
MAC_BLAKE2B: int
MAC_BLAKE3: int
MAC_FAILURE_NAMES: tuple[str, ...]
MAC_SIZE: int
MAC_KEY_MIN: int
MAC_KEY_MAX: int
FRAME_MAX: int
MIN_LIBZMQ: tuple[int, int, int]

_Socket = zmq.Socket[Any] | int

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
    ) -> None: ...
    def encode(self) -> bytes: ...
    def __eq__(self, other: object) -> bool: ...

class Message:
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
    def verify(self, alg: int, key: Buffer) -> bool: ...

def decode_header(data: Buffer) -> Header: ...
def utf8_valid(data: Buffer) -> bool: ...
def parse_frames(frames: Sequence[Buffer], *, routed: bool = False) -> Message: ...
def send_message(
    socket: _Socket,
    header: Header,
    bodies: Sequence[Buffer] = (),
    *,
    routing_id: Buffer | None = None,
    mac_key: Buffer | None = None,
    mac_alg: int = 1,
    timeout: float = -1.0,
) -> None: ...
def recv_message(socket: _Socket, *, routed: bool = False, timeout: float = -1.0) -> Message: ...
def mac_compute(alg: int, key: Buffer, frames: Sequence[Buffer]) -> bytes: ...
def mac_verify(alg: int, key: Buffer, frames: Sequence[Buffer], tag: Buffer) -> bool: ...
def random_bytes(n: int) -> bytes: ...
def libzmq_version() -> tuple[int, int, int]: ...
def _hash64(data: str | bytes) -> int: ...
def have_sodium() -> bool: ...
def _check_libzmq_version(version: Sequence[int]) -> None: ...
def _error_codes() -> dict[str, int]: ...
def _raise_errno(err: int) -> None: ...

class MacKey:
    """A prepared MAC key (core/keyring.pyx); its secret is not readable."""
    id: int
    alg: int
    def __init__(self, id: int, alg: int, secret: Buffer) -> None: ...

class Keyring:
    """The MAC keys of one service, its window and nonce caches."""
    window: float
    replay_max: int
    max_partitions: int
    family: Any
    current_id: int
    key_ids: list[int]
    def __init__(self, keys: Sequence[MacKey], current: int, *, window: float = 30.0,
                 replay_max: int = 1_500_000, max_partitions: int = 65536,
                 clock: Any = None) -> None: ...
    def update(self, keys: Sequence[MacKey], current: int) -> None: ...
    def stats(self) -> dict[str, int]: ...
    def seal(self, header: Header, bodies: Sequence[Buffer] = (), *, inline: bool = False,
             trailer: bool = False) -> list[bytes]: ...
    def open(self, frames: Sequence[Buffer], principal: Buffer = b"") -> str: ...

# -- load balancing (core/selector.pyx) ---------------------------------------

SELECT_RANDOM: int
SELECT_ROUND_ROBIN: int
SELECT_P2C: int
SELECT_PEAK_EWMA: int
SELECT_HASH: int
SELECT_NAMES: tuple[str, ...]
DEFAULT_REPLICAS: int

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

class Subset:
    """The nodes of a Balancer matching one filter (from Balancer.subset)."""
    @property
    def version(self) -> str | None: ...
    @property
    def metadata(self) -> dict[str, Any] | None: ...
    def nodes(self) -> tuple[NodeState, ...]: ...
    def __len__(self) -> int: ...

_NodeRecord = tuple[str, str | None, dict[str, Any] | None, str | None]

class Balancer:
    """Picks a node per call (core/selector.pyx)."""
    @property
    def strategy(self) -> int: ...
    @property
    def outlier(self) -> OutlierPolicy: ...
    @property
    def decay(self) -> float: ...
    @property
    def replicas(self) -> int: ...
    def __init__(self, strategy: int = 1, *, seed: int = 0, clock: Any = None,
                 outlier: OutlierPolicy | None = None, decay: float = 10.0,
                 replicas: int = 64) -> None: ...
    def update(self, nodes: Iterable[_NodeRecord]) -> None: ...
    def subset(self, version: str | None = None,
               metadata: dict[str, Any] | None = None) -> Subset: ...
    def pick(self, subset: Subset | None = None, key: str | bytes | None = None,
             avoid: set[NodeState] | frozenset[NodeState] | tuple[NodeState, ...]
             | list[NodeState] | None = None) -> NodeState | None: ...
    def begin(self, n: NodeState) -> None: ...
    def end(self, n: NodeState, latency: float, failed: bool = False) -> None: ...
    def lookup(self, address: str) -> NodeState | None: ...
    def nodes(self) -> tuple[NodeState, ...]: ...
    def stats(self) -> dict[str, Any]: ...
    def __len__(self) -> int: ...


# -- client.pyx: retries, hedging, the channel pool -------------------------------

MONITOR_EVENTS: int

class RetryPolicy:
    max_attempts: int
    initial_backoff: float
    max_backoff: float
    multiplier: float
    jitter: float
    retryable_codes: frozenset[Any]
    def __init__(self, max_attempts: int = 3, initial_backoff: float = 0.01,
                 max_backoff: float = 1.0, multiplier: float = 2.0, jitter: float = 0.2,
                 retryable_codes: Iterable[Any] = ...) -> None: ...
    def delay(self, retry: int, u: float = 0.5) -> float: ...

class RetryBudget:
    max_tokens: float
    token_ratio: float
    tokens: float
    retry_allowed: bool
    def __init__(self, max_tokens: float = 10.0, token_ratio: float = 0.1) -> None: ...
    def record(self, ok: bool) -> None: ...

class HedgingPolicy:
    max_attempts: int
    delay: float
    non_fatal_codes: frozenset[Any]
    def __init__(self, max_attempts: int = 2, delay: float = 0.05,
                 non_fatal_codes: Iterable[Any] = ...) -> None: ...

class ChannelPool:
    max_sockets: int
    idle_ttl: float
    def sweep(self, now: float) -> None: ...
    def close(self) -> None: ...
    def stats(self) -> dict[str, int]: ...
    def __len__(self) -> int: ...
