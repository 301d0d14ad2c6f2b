"""``--registry URL`` / ``$ZMICRO_REGISTRY``: the CLI on another registry (etcd here)."""

from __future__ import annotations

import json
import os

import pytest

from zmicro import cli
from zmicro.registry import EtcdRegistry, Node, ServiceRecord

from .conftest import run_cli


@pytest.fixture
def env(tmp_path):
    env = dict(os.environ)
    env.pop("ZMICRO_REGISTRY", None)
    env["ZMICRO_REGISTRY_DIR"] = str(tmp_path / "unused")
    return env


@pytest.fixture
def etcd_with_a_service(etcd_endpoint, etcd_prefix):
    reg = EtcdRegistry(etcd_endpoint, prefix=etcd_prefix)
    reg.register(ServiceRecord(name="adder", version="2.0",
                               nodes=(Node(id="adder-1", address="tcp://127.0.0.1:1"),)), ttl=30)
    host_port = etcd_endpoint.split("://", 1)[1]
    yield f"etcd://{host_port}{etcd_prefix}"
    reg.close()


def test_list_from_etcd_by_option(env, etcd_with_a_service):
    result = run_cli("list", "--json", "--registry", etcd_with_a_service, env=env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [
        {"name": "adder", "version": "2.0", "nodes": 1, "endpoints": []}
    ]


def test_describe_from_etcd_by_environment(env, etcd_with_a_service):
    result = run_cli("describe", "adder", "--json", env={**env, "ZMICRO_REGISTRY": etcd_with_a_service})
    assert result.returncode == 0, result.stderr
    [record] = json.loads(result.stdout)
    assert [n["id"] for n in record["nodes"]] == ["adder-1"]


def test_registry_and_registry_dir_together_are_refused(env, tmp_path):
    result = run_cli("list", "--registry", "memory:", "--registry-dir", str(tmp_path), env=env)
    assert result.returncode == cli.EXIT_USAGE
    assert "not both" in result.stderr


def test_bad_registry_url_is_a_usage_error(env):
    result = run_cli("list", "--registry", "nosuch://x", env=env)
    assert result.returncode == cli.EXIT_USAGE
    assert "--registry" in result.stderr and "unknown scheme" in result.stderr


def test_unreachable_etcd_is_an_environment_error(env, unused_tcp_port):
    result = run_cli("list", "--registry", f"etcd://127.0.0.1:{unused_tcp_port}?timeout=2", env=env)
    assert result.returncode == cli.EXIT_ENVIRONMENT, result.stderr
    assert "unreachable" in result.stderr and "Traceback" not in result.stderr
