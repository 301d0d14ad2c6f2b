"""``zmicro publish``, ``subscribe`` and the topics of ``zmicro list``, run
as ``python -m zmicro`` in subprocesses against a private embedded
registry (and, for publish/subscribe, real subscribers)."""

from __future__ import annotations

import json

from zmicro.registry import EmbeddedRegistry, Node, ServiceRecord

from .conftest import cli_env, private_dir, run_cli


def topic_record(topic: str, group: str, *members: tuple[str, str]) -> ServiceRecord:
    """A topic record as a subscribing Service writes it (plan §2.4)."""
    return ServiceRecord(
        name="zmicro.topic." + topic, version=group, metadata={"zmicro.kind": "topic"},
        nodes=tuple(Node(id=f"{service}-{i}", address=address,
                         metadata={"service": service, "health": "serving"})
                    for i, (service, address) in enumerate(members)))


def test_list_shows_topics_their_groups_and_members(tmp_path_factory):
    directory = private_dir(tmp_path_factory, "registry")
    registry = EmbeddedRegistry(str(directory))
    registry.register(topic_record("order.created", "billing",
                                   ("billing", "tcp://127.0.0.1:1001"),
                                   ("billing", "tcp://127.0.0.1:1002")), ttl=300)
    registry.register(topic_record("order.created", "", ("audit", "tcp://127.0.0.1:1003")),
                      ttl=300)
    registry.register(ServiceRecord(name="greeter", version="1.0.0",
                                    nodes=(Node(id="g1", address="tcp://127.0.0.1:1004"),)),
                      ttl=300)
    env = cli_env(directory)

    result = run_cli("list", env=env)
    assert result.returncode == 0, result.stderr
    services, topics = result.stdout.split("\n\n")
    assert [row.split() for row in services.splitlines()] == [
        ["SERVICE", "VERSION", "NODES", "ENDPOINTS"], ["greeter", "1.0.0", "1", "0"]]
    assert [row.split(None, 2) for row in topics.splitlines()] == [
        ["TOPIC", "GROUP", "MEMBERS"],
        ["order.created", "(broadcast)", "audit@tcp://127.0.0.1:1003"],
        ["order.created", "billing",
         "billing@tcp://127.0.0.1:1001, billing@tcp://127.0.0.1:1002"]]

    result = run_cli("list", "--json", env=env)
    assert result.returncode == 0, result.stderr
    entries = {(e["name"], e["version"]): e for e in json.loads(result.stdout)}
    assert entries[("greeter", "1.0.0")] == {"name": "greeter", "version": "1.0.0",
                                             "nodes": 1, "endpoints": []}
    billing = entries[("zmicro.topic.order.created", "billing")]
    assert billing["topic"] == "order.created" and billing["group"] == "billing"
    assert sorted(m["address"] for m in billing["members"]) == [
        "tcp://127.0.0.1:1001", "tcp://127.0.0.1:1002"]
    assert {m["service"] for m in billing["members"]} == {"billing"}
    broadcast = entries[("zmicro.topic.order.created", "")]
    assert broadcast["group"] is None and broadcast["nodes"] == 1


def test_list_with_only_topics_prints_the_topics(tmp_path_factory):
    directory = private_dir(tmp_path_factory, "registry")
    EmbeddedRegistry(str(directory)).register(
        topic_record("a.b", "g", ("svc", "tcp://127.0.0.1:1001")), ttl=300)
    result = run_cli("list", env=cli_env(directory))
    assert result.returncode == 0, result.stderr
    assert [row.split() for row in result.stdout.splitlines()] == [
        ["TOPIC", "GROUP", "MEMBERS"], ["a.b", "g", "svc@tcp://127.0.0.1:1001"]]
