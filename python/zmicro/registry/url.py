"""Registries named by URL: what ``$ZMICRO_REGISTRY`` and ``--registry`` accept."""

from __future__ import annotations

import os
from urllib.parse import parse_qs, unquote, urlsplit

from .base import Registry

__all__ = ["from_url"]


def from_url(url: str) -> Registry:
    """A registry from ``url``:

    - ``etcd://host:port[,host:port...][/prefix/][?ttl=10]`` (``etcds://`` for
      https): :class:`EtcdRegistry`; credentials come from
      ``$ZMICRO_ETCD_USERNAME`` / ``$ZMICRO_ETCD_PASSWORD``, never from the
      URL (URLs end up in logs and process listings);
    - ``embedded:///path`` or ``embedded:`` (its default directory), or a
      plain path: :class:`EmbeddedRegistry`;
    - ``memory:``: a fresh :class:`MemoryRegistry`.

    Anything else raises ``ValueError`` naming the URL.
    """
    if not isinstance(url, str) or not url.strip():
        raise ValueError(f"registry URL must be a non-empty str, not {url!r}")
    url = url.strip()
    if url.startswith("/") or url.startswith("~") or url.startswith("."):
        from .embedded import EmbeddedRegistry

        return EmbeddedRegistry(os.path.expanduser(url))
    try:
        parts = urlsplit(url)
    except ValueError as e:
        raise ValueError(f"registry URL {url!r}: {e}") from None
    scheme = parts.scheme.lower()
    if scheme in ("etcd", "etcds"):
        from .etcd import DEFAULT_PREFIX, DEFAULT_TTL, EtcdRegistry

        if "@" in parts.netloc:
            raise ValueError("registry URL: put no credentials in it; "
                             "set ZMICRO_ETCD_USERNAME and ZMICRO_ETCD_PASSWORD")
        if not parts.netloc:
            raise ValueError(f"registry URL {url!r}: expected etcd://host:port")
        http = "https" if scheme == "etcds" else "http"
        endpoints = [f"{http}://{hostport}" for hostport in parts.netloc.split(",")]
        query = parse_qs(parts.query, strict_parsing=False)
        unknown = set(query) - {"ttl", "timeout"}
        if unknown:
            raise ValueError(f"registry URL {url!r}: unknown parameter(s) {sorted(unknown)}")
        try:
            ttl = float(query["ttl"][-1]) if "ttl" in query else DEFAULT_TTL
            timeout = float(query["timeout"][-1]) if "timeout" in query else 5.0
        except ValueError:
            raise ValueError(f"registry URL {url!r}: ttl and timeout must be numbers") from None
        prefix = unquote(parts.path) if parts.path not in ("", "/") else DEFAULT_PREFIX
        username = os.environ.get("ZMICRO_ETCD_USERNAME") or None
        password = os.environ.get("ZMICRO_ETCD_PASSWORD") if username else None
        if username is not None and password is None:
            raise ValueError("ZMICRO_ETCD_USERNAME is set but ZMICRO_ETCD_PASSWORD is not")
        return EtcdRegistry(endpoints, prefix=prefix, ttl=ttl, timeout=timeout,
                            username=username, password=password)
    if scheme == "embedded":
        from .embedded import EmbeddedRegistry

        path = unquote(parts.path)
        return EmbeddedRegistry(path or None)
    if scheme == "memory":
        from .memory import MemoryRegistry

        return MemoryRegistry()
    raise ValueError(f"registry URL {url!r}: unknown scheme (use etcd://, embedded:, memory:)")
