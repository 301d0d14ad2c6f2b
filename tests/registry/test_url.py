"""from_url and default_registry's $ZMICRO_REGISTRY."""

from __future__ import annotations

import pytest

import zmicro.registry as registry_module
from zmicro.registry import EmbeddedRegistry, EtcdRegistry, MemoryRegistry, from_url


def test_memory_and_embedded(tmp_path):
    assert isinstance(from_url("memory:"), MemoryRegistry)
    reg = from_url(f"embedded://{tmp_path}/reg")
    assert isinstance(reg, EmbeddedRegistry) and reg.path == f"{tmp_path}/reg"
    plain = from_url(str(tmp_path / "plain"))
    assert isinstance(plain, EmbeddedRegistry) and plain.path == str(tmp_path / "plain")


def test_etcd(etcd_endpoint, etcd_prefix, monkeypatch):
    monkeypatch.delenv("ZMICRO_ETCD_USERNAME", raising=False)
    host_port = etcd_endpoint.split("://", 1)[1]
    reg = from_url(f"etcd://{host_port}{etcd_prefix}?ttl=4&timeout=3")
    try:
        assert isinstance(reg, EtcdRegistry)
        assert reg.endpoint == etcd_endpoint and reg.trusted is False
        assert reg._prefix == etcd_prefix.encode() and reg._lease._ttl == 4.0 and reg._client._timeout == 3.0
    finally:
        reg.close()


@pytest.mark.parametrize("url, needle", [
    ("", "non-empty"),
    ("gopher://x", "unknown scheme"),
    ("etcd://root:pw@h:2379", "no credentials"),
    ("etcd://", "host:port"),
    ("etcd://h:2379?ttl=abc", "numbers"),
    ("etcd://h:2379?color=red", "unknown parameter"),
])
def test_bad_urls(url, needle):
    with pytest.raises(ValueError, match=needle) as info:
        from_url(url)
    assert "pw@" not in str(info.value)


def test_username_needs_a_password(monkeypatch):
    monkeypatch.setenv("ZMICRO_ETCD_USERNAME", "root")
    monkeypatch.delenv("ZMICRO_ETCD_PASSWORD", raising=False)
    with pytest.raises(ValueError, match="ZMICRO_ETCD_PASSWORD"):
        from_url("etcd://127.0.0.1:1")


def test_default_registry_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setattr(registry_module, "_default", None)
    monkeypatch.setenv("ZMICRO_REGISTRY", f"embedded://{tmp_path}/via-env")
    reg = registry_module.default_registry()
    assert isinstance(reg, EmbeddedRegistry) and reg.path == f"{tmp_path}/via-env"
    assert registry_module.default_registry() is reg
    reg.close()
    monkeypatch.setenv("ZMICRO_REGISTRY", "memory:")
    assert isinstance(registry_module.default_registry(), MemoryRegistry)
    monkeypatch.delenv("ZMICRO_REGISTRY")
    monkeypatch.setattr(registry_module, "_default", None)
    monkeypatch.setenv("ZMICRO_REGISTRY_DIR", str(tmp_path / "dir"))
    assert registry_module.default_registry().path == str(tmp_path / "dir")


# -- property tests of the parsers --------------------------------------------------

from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from zmicro.registry.etcd import parse_endpoints  # noqa: E402

hosts = st.from_regex(r"[a-z][a-z0-9-]{0,20}(\.[a-z0-9-]{1,10}){0,3}", fullmatch=True)
ports = st.integers(1, 65535)


@given(st.lists(st.tuples(st.sampled_from(["http", "https", None]), hosts, ports), min_size=1, max_size=4))
def test_parse_endpoints_round_trips(items):
    text = ",".join(f"{s}://{h}:{p}" if s else f"{h}:{p}" for s, h, p in items)
    assert parse_endpoints(text) == [(s or "http", h, p) for s, h, p in items]


@given(st.text(max_size=60))
def test_parse_endpoints_refuses_cleanly(text):
    try:
        parsed = parse_endpoints(text)
    except ValueError as e:
        assert "endpoints" in str(e)
    else:
        assert parsed and all(s in ("http", "https") and h and 0 < p < 65536 for s, h, p in parsed)

