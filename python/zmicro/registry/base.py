"""The registry's interface: record types, :class:`Registry`, :class:`Watcher`.

Everything here is backend-neutral; ``memory``, ``embedded`` and
``etcd`` implement it, and ``tests/registry`` holds the contract they share.
"""

from __future__ import annotations

import enum
import math
from typing import Any
from abc import ABC, abstractmethod

import msgspec

from .._core import MAX_NAME
from ..errors import Error

__all__ = [
    "NAME_MAX",
    "Endpoint",
    "Event",
    "EventType",
    "Node",
    "Registry",
    "RegistryError",
    "ServiceRecord",
    "Watcher",
    "check_name",
    "check_record",
    "check_ttl",
]

#: Longest service name, version, endpoint name or node id, in bytes of
#: UTF-8: what a wire header carries (src/zm_limits.h).
NAME_MAX = MAX_NAME


class RegistryError(Error):
    """The registry's backend failed (unusable directory, bad permissions, closed...).

    Invalid arguments raise :class:`ValueError` instead; an unknown service is
    not an error (``get`` returns ``[]``).
    """


class Node(msgspec.Struct, frozen=True, kw_only=True):
    """One running instance of a service, reachable at ``address``."""

    id: str  # unique per running instance, e.g. f"{name}-{uuid4().hex[:12]}"
    address: str  # "tcp://127.0.0.1:5555" or "ipc:///path"
    metadata: dict[str, str] = {}
    # Z85 Curve public key of the node's server socket; "" in insecure mode.
    # Clients believe it only from a trusted registry (Registry.trusted) or
    # when their own trust store holds it (Security.server_key_for).
    public_key: str = ""


class Endpoint(msgspec.Struct, frozen=True, kw_only=True):
    """A callable method of a service, with the JSON schemas of its messages."""

    name: str  # "Greeter.Hello"
    request: dict[str, Any] | None = None  # msgspec.json.schema of the request type; None if untyped
    response: dict[str, Any] | None = None
    metadata: dict[str, str] = {}


class ServiceRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One version of a service: what it offers and where its nodes are."""

    name: str
    version: str = ""
    metadata: dict[str, str] = {}
    endpoints: tuple[Endpoint, ...] = ()
    nodes: tuple[Node, ...] = ()


class EventType(enum.Enum):
    CREATE = "create"  # a node appeared
    UPDATE = "update"  # a node's registration changed (address, metadata, endpoints)
    DELETE = "delete"  # a node was deregistered or expired


class Event(msgspec.Struct, frozen=True):
    """A change seen by a :class:`Watcher`.

    ``record`` is the service version as the concerned node(s) registered it,
    with only those nodes in ``record.nodes`` (the implementations here send
    one event per node; consumers should accept several).
    """

    type: EventType
    record: ServiceRecord


class Watcher(ABC):
    """A stream of :class:`Event` for one service or all of them.

    It reports changes that happen after ``Registry.watch`` returned, in the
    order the registry saw them; a backend that polls may merge changes that
    happen between two polls. ``next(timeout)`` returns ``None`` on timeout
    and once stopped; iterating blocks and ends after :meth:`stop` (events
    still queued then are dropped). Stopping twice is harmless.
    """

    @abstractmethod
    def next(self, timeout: float | None = None) -> Event | None:
        """The next event, waiting at most ``timeout`` seconds (``None``: until stopped)."""

    @abstractmethod
    def stop(self) -> None:
        """End the stream and release what feeds it; wakes a blocked ``next``."""

    def __iter__(self) -> Watcher:
        return self

    def __next__(self) -> Event:
        event = self.next()
        if event is None:
            raise StopIteration
        return event

    def __enter__(self) -> Watcher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class Registry(ABC):
    """Where services announce their nodes and clients find them.

    A registration is keyed by (name, version, node id). ``register`` adds or
    refreshes nodes; with ``ttl`` they expire ``ttl`` seconds after the last
    ``register`` (heartbeats are the caller's job: re-register every ttl/3).
    A version's metadata and endpoints are those of its most recently
    *changed* registration: a heartbeat that changes nothing does not count,
    so two nodes that disagree do not make the answer flap. Expired nodes are
    invisible to ``get``/``list`` and reported to watchers as DELETE.

    Names (service, endpoint, node id; version may be empty) are at most 255
    bytes of UTF-8 without "/" or NUL; a bad one raises ``ValueError`` naming
    the field. Backend failures raise :class:`RegistryError`, and so does any
    call after :meth:`close`, which also stops every watcher it created.
    Implementations are thread-safe.

    ``trusted`` says whether clients may believe the public keys in the
    records (:attr:`Node.public_key`) without their own trust store vouching
    for them: true only when no one but this user can write the registry.
    """

    #: Whether the records' public keys come from a trusted source.
    trusted: bool = False

    @abstractmethod
    def register(self, record: ServiceRecord, *, ttl: float | None = None) -> None:
        """Add or refresh ``record.nodes`` (at least one) under (name, version)."""

    @abstractmethod
    def deregister(self, record: ServiceRecord) -> None:
        """Remove ``record.nodes`` (by id); the last node gone removes the version."""

    @abstractmethod
    def get(self, name: str) -> list[ServiceRecord]:
        """One record per live version of ``name`` (sorted by version); ``[]`` if none."""

    @abstractmethod
    def list(self) -> list[ServiceRecord]:
        """Every service version with live nodes, sorted by (name, version)."""

    @abstractmethod
    def watch(self, name: str | None = None) -> Watcher:
        """Changes to service ``name``, or to every service when ``None``."""

    @abstractmethod
    def close(self) -> None:
        """Stop every watcher and release resources; idempotent."""

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


# -- validation shared by every implementation ---------------------------------


def check_name(value: object, field: str, *, empty_ok: bool = False) -> str:
    """Return ``value`` if it is a valid name, else raise ValueError naming ``field``."""
    if not isinstance(value, str):
        raise ValueError(f"{field} must be a str, not {type(value).__name__}")
    if not value and not empty_ok:
        raise ValueError(f"{field} must not be empty")
    if "/" in value or "\0" in value:
        raise ValueError(f"{field} must not contain '/' or NUL: {value!r}")
    try:
        size = len(value.encode())
    except UnicodeEncodeError:
        raise ValueError(f"{field} is not valid UTF-8 (lone surrogate): {value!r}") from None
    if size > NAME_MAX:
        raise ValueError(f"{field} is {size} bytes of UTF-8; at most {NAME_MAX} are allowed")
    return value


def check_ttl(ttl: object) -> float | None:
    if ttl is None:
        return None
    if (isinstance(ttl, bool) or not isinstance(ttl, (int, float))
            or not math.isfinite(ttl) or ttl <= 0):
        raise ValueError(f"ttl must be a positive number of seconds or None, not {ttl!r}")
    return float(ttl)


_encode = msgspec.json.Encoder().encode
_decode_record = msgspec.json.Decoder(ServiceRecord).decode


def check_record(record: object, *, for_register: bool) -> ServiceRecord:
    """Validate ``record`` and return a deep copy the caller cannot mutate under us.

    The copy goes through JSON, so what a backend stores is exactly what any
    backend could store (a metadata value that is not a str fails here, not
    in some other process that reads it).
    """
    if not isinstance(record, ServiceRecord):
        raise TypeError(f"expected a ServiceRecord, not {type(record).__name__}")
    check_name(record.name, "name")
    check_name(record.version, "version", empty_ok=True)
    if not isinstance(record.endpoints, tuple) or not isinstance(record.nodes, tuple):
        raise ValueError("endpoints and nodes must be tuples")
    for i, endpoint in enumerate(record.endpoints):
        check_name(getattr(endpoint, "name", None), f"endpoints[{i}].name")
    seen: set[str] = set()
    for i, node in enumerate(record.nodes):
        node_id = check_name(getattr(node, "id", None), f"nodes[{i}].id")
        if node_id in seen:
            raise ValueError(f"nodes[{i}].id {node_id!r} appears twice")
        seen.add(node_id)
        if for_register and not (isinstance(node.address, str) and node.address):
            raise ValueError(f"nodes[{i}].address must be a non-empty str")
    if for_register and not record.nodes:
        raise ValueError("nodes must hold at least one node to register")
    try:
        return _decode_record(_encode(record))
    except (msgspec.EncodeError, msgspec.ValidationError, TypeError) as e:
        raise ValueError(f"record cannot be stored: {e}") from e
