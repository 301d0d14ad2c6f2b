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
        assert reg._prefix == etcd_prefix.encode() and reg._ttl == 4.0 and reg._timeout == 3.0
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
