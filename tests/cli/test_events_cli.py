"""``zmicro publish``, ``subscribe`` and the topics of ``zmicro list``, run
as ``python -m zmicro`` in subprocesses against a private embedded
registry (and, for publish/subscribe, real subscribers)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading

import pytest

from zmicro import cli
from zmicro.registry import EmbeddedRegistry, Node, ServiceRecord

from ..helpers import eventually
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


# -- publish, subscribe ----------------------------------------------------------------


class Subscriber:
    """``zmicro subscribe ARGS`` running in the background; its stdout
    lines are collected by a thread."""

    def __init__(self, env: dict[str, str], *args: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "zmicro", "subscribe", *args],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env=env)
        self.lines: list[str] = []
        self.errors: list[str] = []
        for stream, into in ((self.proc.stdout, self.lines), (self.proc.stderr, self.errors)):
            threading.Thread(target=lambda s=stream, i=into: i.extend(iter(s.readline, "")),
                             daemon=True).start()

    def ready(self) -> bool:
        return any(line.startswith("subscribed to") for line in self.errors)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                return self.proc.wait(STOP_WAIT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.wait(STOP_WAIT)


STOP_WAIT = 60.0


@pytest.fixture
def env(tmp_path_factory):
    return cli_env(private_dir(tmp_path_factory, "registry"))


@pytest.fixture
def subscriber(env):
    started: list[Subscriber] = []

    def start(*args: str) -> Subscriber:
        sub = Subscriber(env, *args)
        started.append(sub)
        eventually(lambda: sub.ready() or sub.proc.poll() is not None, "subscribed")
        assert sub.proc.poll() is None, sub.errors
        return sub

    yield start
    for sub in started:
        sub.stop()


def test_publish_reaches_a_subscriber_that_prints_it_and_drains_on_sigint(env, subscriber):
    sub = subscriber("order.created", "--queue", "billing", "--json")
    result = run_cli("publish", "order.created", '{"id": 1, "items": ["a"]}',
                     "-m", "source=cli", "--wait", "--timeout", "30", env=env)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["topic"] == "order.created" and report["groups"] == {"billing": "acked"}
    [line] = eventually(lambda: sub.lines, "the event printed")
    event = json.loads(line)
    assert event["topic"] == "order.created" and event["event_id"] == report["event_id"]
    assert event["body"] == {"id": 1, "items": ["a"]}
    assert event["metadata"] == {"source": "cli"}
    assert event["content_type"] == "application/json"
    assert sub.stop() == 0
    listed = json.loads(run_cli("list", "--json", env=env).stdout)
    assert not [e for e in listed if e["name"].startswith("zmicro.topic.")]  # deregistered


def test_publish_reads_the_body_from_stdin_and_broadcast_prints_plain_lines(env, subscriber):
    one, two = subscriber("a.b"), subscriber("a.b")
    result = run_cli("publish", "a.b", "-", "--timeout", "30", input='{"x": 2}', env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""  # without --wait nothing is printed
    for sub in (one, two):  # broadcast: every subscriber
        [line] = eventually(lambda: sub.lines, "the event printed")
        stamp, topic, event_id, body = line.split(" ", 3)
        assert topic == "a.b" and len(event_id) == 32 and json.loads(body) == {"x": 2}
        assert stamp.endswith("+00:00")
    listed = run_cli("list", env=env)
    [row] = [r for r in listed.stdout.splitlines() if r.startswith("a.b ")]
    assert row.split()[1] == "(broadcast)" and row.count("zmicro-cli-") == 2


def test_publish_to_nobody(env):
    result = run_cli("publish", "nobody.here", "{}", "--timeout", "0.5", env=env)
    assert result.returncode == 0, result.stderr
    assert "no subscriber" in result.stderr
    result = run_cli("publish", "nobody.here", "{}", "--timeout", "0.5", "--wait", env=env)
    assert result.returncode == cli.EXIT_FAILED
    assert "error: no subscriber" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("args, needle", [
    (("order.*", "{}"), "TOPIC"),
    (("order.created", "{nope"), "not valid JSON"),
    (("order.created", "{}", "-m", "novalue"), "KEY=VALUE"),
])
def test_publish_usage_errors(env, args, needle):
    result = run_cli("publish", *args, env=env)
    assert result.returncode == cli.EXIT_USAGE, result.stderr
    assert needle in result.stderr and "Traceback" not in result.stderr


def test_subscribe_refuses_a_bad_topic(env):
    result = run_cli("subscribe", "a..b", env=env)
    assert result.returncode == cli.EXIT_USAGE and "Traceback" not in result.stderr


def test_publish_and_subscribe_through_nats(env, subscriber, nats_url, nats_topic):
    sub = subscriber(nats_topic, "--queue", "cli", "--json", "--broker", nats_url)
    result = run_cli("publish", nats_topic, '{"n": 5}', "--broker", nats_url,
                     "--timeout", "30", env=env)
    assert result.returncode == 0, result.stderr
    [line] = eventually(lambda: sub.lines, "the event printed")
    event = json.loads(line)
    assert event["topic"] == nats_topic and event["body"] == {"n": 5}
    assert sub.stop() == 0
    # --wait reports the embedded broker's acks: refused on NATS.
    result = run_cli("publish", nats_topic, "{}", "--broker", nats_url, "--wait", env=env)
    assert result.returncode == cli.EXIT_USAGE and "--wait" in result.stderr


def test_an_unknown_broker_is_a_usage_error(env):
    result = run_cli("publish", "a.b", "{}", "--broker", "kafka://x", env=env)
    assert result.returncode == cli.EXIT_USAGE and "--broker" in result.stderr


@pytest.fixture
def dead_port():
    """A port bound but not listening: a connection to it is refused."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


PASSWORD = "s3cret-pw%21"  # percent-encoded: its decoded form must not show either


@pytest.mark.parametrize("where", ["--broker", "ZMICRO_BROKER"])
def test_a_failing_publish_prints_no_password(env, dead_port, where):
    url = f"nats://alice:{PASSWORD}@127.0.0.1:{dead_port}"
    args = ("publish", "a.b", "{}", "--timeout", "2")
    if where == "--broker":
        result = run_cli(*args, "--broker", url, env=env)
    else:
        result = run_cli(*args, env={**env, "ZMICRO_BROKER": url})
    assert result.returncode != 0
    out = result.stdout + result.stderr
    assert "error:" in result.stderr, out
    assert "s3cret" not in out, out


def test_a_bad_broker_url_prints_no_password(env):
    result = run_cli("publish", "a.b", "{}", "--broker", f"kafka://alice:{PASSWORD}@x", env=env)
    assert result.returncode == cli.EXIT_USAGE and "--broker" in result.stderr
    assert "s3cret" not in result.stderr and "alice:***@x" in result.stderr, result.stderr


def test_a_token_from_the_environment_is_not_printed(env, dead_port):
    result = run_cli("publish", "a.b", "{}", "--timeout", "2", "--token-env", "T",
                     "--broker", f"nats://127.0.0.1:{dead_port}",
                     env={**env, "T": "tok-s3cret"})
    assert result.returncode != 0 and "error:" in result.stderr
    assert "s3cret" not in result.stdout + result.stderr
    result = run_cli("publish", "a.b", "{}", "--token-env", "T", env=env)
    assert result.returncode == cli.EXIT_USAGE and "NATS" in result.stderr
