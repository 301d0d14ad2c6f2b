"""Registry records carry each node's public key; which registries are trusted."""

from __future__ import annotations

import msgspec
import zmq

from zmicro.registry import EmbeddedRegistry, MemoryRegistry, Node, Registry, ServiceRecord


def _record(key: str) -> ServiceRecord:
    return ServiceRecord(name="greeter", version="1",
                         nodes=(Node(id="g-1", address="tcp://127.0.0.1:5555", public_key=key),))


def test_public_key_round_trips_through_the_registries(tmp_path):
    key = zmq.curve_keypair()[0].decode()
    for registry in (MemoryRegistry(), EmbeddedRegistry(tmp_path / "reg")):
        with registry:
            registry.register(_record(key))
            assert registry.get("greeter")[0].nodes[0].public_key == key


def test_records_without_a_key_decode_with_an_empty_one():
    old = b'{"id": "g-1", "address": "tcp://127.0.0.1:1", "metadata": {}}'
    assert msgspec.json.decode(old, type=Node).public_key == ""
    assert Node(id="a", address="tcp://h:1").public_key == ""


def test_only_registries_of_this_user_are_trusted():
    assert Registry.trusted is False
    assert MemoryRegistry.trusted is True and EmbeddedRegistry.trusted is True
