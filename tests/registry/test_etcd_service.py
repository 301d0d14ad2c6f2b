"""A Service and a Client meeting in etcd, and what etcd's trust decides:
a node key from an open etcd is not believed; from etcd with authentication
on, it is."""

from __future__ import annotations

import shutil

import pytest

import zmicro
from zmicro.security.keys import KeyStore
from zmicro.security.mackeys import MacSecrets, secrets_path
from zmicro.registry import EtcdRegistry

from ..processes import InProcess

WAIT = 60.0
PASSWORD = "etcd-root-pw-for-tests"


@pytest.fixture
def stores(tmp_path):
    """The service's key store, and another machine's whose key the service trusts
    (sharing the deployment's MAC secrets) but which does not trust the service's key."""
    server = KeyStore(tmp_path / "server")
    server.identity()
    MacSecrets(secrets_path(server.path))  # created on first use
    other = KeyStore(tmp_path / "other")
    shutil.copy(secrets_path(server.path), secrets_path(other.path))
    server.trust(other.identity().public, name="caller")
    return server, other


def serve_greeter(registry, store) -> InProcess:
    svc = zmicro.Service("greeter", registry=registry, keys=store, ttl=3)
    svc.handler("Greeter.Echo")(lambda req, ctx: req)
    return InProcess(svc)


def test_service_registers_in_etcd_and_a_client_calls_it(etcd_endpoint, etcd_prefix, stores):
    server_store, _ = stores
    service_registry = EtcdRegistry(etcd_endpoint, prefix=etcd_prefix, ttl=3)
    client_registry = EtcdRegistry(etcd_endpoint, prefix=etcd_prefix)
    running = serve_greeter(service_registry, server_store)
    try:
        [record] = client_registry.get("greeter")
        assert record.nodes[0].public_key == running.svc._security.public_key
        with zmicro.Client(registry=client_registry, keys=server_store) as client:
            assert client.call("greeter", "Greeter.Echo", {"x": 1}, timeout=WAIT) == {"x": 1}
    finally:
        running.stop()
    assert client_registry.get("greeter") == []  # deregistered on stop
    client_registry.close()
    service_registry.close()


def test_node_keys_from_etcd_are_believed_only_with_authentication(
        etcd_server, etcd_endpoint, etcd_prefix, stores):
    server_store, other = stores
    # An open etcd: anyone could have written the key, the client refuses it.
    service_registry = EtcdRegistry(etcd_endpoint, prefix=etcd_prefix, ttl=3)
    client_registry = EtcdRegistry(etcd_endpoint, prefix=etcd_prefix)
    running = serve_greeter(service_registry, server_store)
    try:
        with zmicro.Client(registry=client_registry, keys=other) as client:
            with pytest.raises(zmicro.RPCError) as err:
                client.call("greeter", "Greeter.Echo", 1, timeout=WAIT)
        assert err.value.code == zmicro.Code.UNAUTHENTICATED
        assert "untrusted" in err.value.detail
    finally:
        running.stop()
        client_registry.close()
        service_registry.close()

    etcd_server.enable_auth(PASSWORD)
    try:
        creds = dict(prefix=etcd_prefix, username="root", password=PASSWORD)
        service_registry = EtcdRegistry(etcd_endpoint, ttl=3, **creds)
        client_registry = EtcdRegistry(etcd_endpoint, **creds)
        assert client_registry.trusted
        running = serve_greeter(service_registry, server_store)
        try:
            with zmicro.Client(registry=client_registry, keys=other) as client:
                assert client.call("greeter", "Greeter.Echo", 2, timeout=WAIT) == 2
        finally:
            running.stop()
            client_registry.close()
            service_registry.close()
    finally:
        etcd_server.disable_auth()
