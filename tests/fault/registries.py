"""The registry a fault-suite process uses, named by one string: a
directory (embedded) or an etcd URL."""

from __future__ import annotations

from zmicro.registry import EmbeddedRegistry, Registry


def open_registry(where: str) -> Registry:
    if where.startswith("etcd://"):
        from zmicro.registry import from_url
        return from_url(where)
    return EmbeddedRegistry(where)
