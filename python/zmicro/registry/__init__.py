"""Service discovery: where services announce their nodes and clients find them.

The contract (the docstrings of :class:`Registry` and :class:`Watcher` have
the details):

- A :class:`ServiceRecord` is one version of a service: metadata, endpoints
  (with the JSON schemas of their messages) and the :class:`Node` s serving
  it. Registrations are keyed by (name, version, node id).
- ``register(record, ttl=...)`` adds or refreshes ``record.nodes``; with a
  TTL they expire unless registered again within it (the service
  re-registers every ttl/3). ``deregister`` removes nodes; the last node gone
  removes the version. ``get(name)`` returns one record per live version
  (``[]`` for an unknown service), ``list()`` every live service version.
- ``watch(name=None)`` streams :class:`Event` s (CREATE, UPDATE, DELETE, one
  service or all); an expired node is a DELETE.
- Names are at most 255 bytes of UTF-8 without "/" or NUL (``ValueError``
  otherwise); backend failures raise :class:`RegistryError`.

Implementations: :class:`MemoryRegistry` (in-process, for tests),
:class:`EmbeddedRegistry` (the default: a private directory shared by the
user's processes on one machine), :class:`EtcdRegistry` for clusters (needs
the ``etcd`` extra). :func:`from_url` makes one from a URL
(``etcd://host:2379``, ``embedded:///path``, ``memory:``);
:func:`default_registry` is the process-wide registry that services and
clients share when given none: ``$ZMICRO_REGISTRY`` if set, else the
embedded one. :class:`RegistryCache` is a client's watch-fed view of one.
"""

from __future__ import annotations

import os
import threading

from .base import (
    Endpoint,
    Event,
    EventType,
    Node,
    Registry,
    RegistryError,
    ServiceRecord,
    Watcher,
)
from .cache import RegistryCache
from .embedded import EmbeddedRegistry
from .etcd import EtcdRegistry
from .memory import MemoryRegistry
from .url import from_url

__all__ = [
    "EmbeddedRegistry",
    "Endpoint",
    "EtcdRegistry",
    "Event",
    "EventType",
    "MemoryRegistry",
    "Node",
    "Registry",
    "RegistryCache",
    "RegistryError",
    "ServiceRecord",
    "Watcher",
    "default_registry",
    "from_url",
]

_default: Registry | None = None
_default_lock = threading.Lock()


def default_registry() -> Registry:
    """The process-wide registry, made on first use: ``from_url($ZMICRO_REGISTRY)``
    when that is set (e.g. ``etcd://10.0.0.5:2379``), else the
    :class:`EmbeddedRegistry` of its default directory.

    A closed one is replaced by a fresh one; a forked child gets its own
    (the parent's watcher threads do not survive a fork).
    """
    global _default
    with _default_lock:
        if _default is None or getattr(_default, "closed", False):
            url = os.environ.get("ZMICRO_REGISTRY", "").strip()
            _default = from_url(url) if url else EmbeddedRegistry()
        return _default


def _after_fork_in_child() -> None:
    global _default, _default_lock
    # The lock may have been held by a thread that does not exist in the child.
    _default, _default_lock = None, threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)
