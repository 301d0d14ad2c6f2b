"""The registry a fault-suite process uses, named by one string: a
directory (embedded) or an etcd URL (zmicro.registry.from_url)."""

from __future__ import annotations

from zmicro.registry import Registry, from_url


def open_registry(where: str) -> Registry:
    return from_url(where)
