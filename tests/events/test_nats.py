"""The NATS broker against a real nats-server (tests/nats_server.py).

First the fixture itself: JetStream answers, a restart keeps the port and
the store, each authentication variant lets the right client in and keeps
the wrong one out.
"""

from __future__ import annotations

import asyncio

import nats
import pytest

from tests.nats_server import NatsServer


def _run(coro):
    return asyncio.run(coro)


async def _roundtrip(url: str, **options) -> bytes:
    """Connect, store one message in a stream, read it back: what the broker needs."""
    nc = await nats.connect(url, allow_reconnect=False, connect_timeout=5, **options)
    try:
        js = nc.jetstream()
        await js.add_stream(name="FIXTURE", subjects=["fixture.>"])
        await js.publish("fixture.one", b"stored")
        return (await js.get_last_msg("FIXTURE", "fixture.one")).data
    finally:
        await nc.close()


def test_server_runs_jetstream_on_free_ports(nats_server):
    assert nats_server.port != 4222 and nats_server.monitor_port != nats_server.port
    assert nats_server.varz("jsz")["config"]["store_dir"].startswith(str(nats_server.store_dir))
    assert _run(_roundtrip(nats_server.url)) == b"stored"


def test_restart_keeps_port_and_store(tmp_path):
    server = NatsServer(tmp_path / "restart")
    try:
        server.start()
        port = server.port
        assert _run(_roundtrip(server.url)) == b"stored"
        server.kill()
        server.start()
        assert server.port == port

        async def read_back() -> bytes:
            nc = await nats.connect(server.url, allow_reconnect=False)
            try:
                return (await nc.jetstream().get_last_msg("FIXTURE", "fixture.one")).data
            finally:
                await nc.close()

        assert _run(read_back()) == b"stored"
    finally:
        server.cleanup()


@pytest.mark.parametrize("auth", ["password", "token", "nkey"])
def test_auth_variants(tmp_path, auth):
    server = NatsServer(tmp_path / auth, auth=auth)
    try:
        server.start()
        with pytest.raises(Exception, match="[Aa]uthoriz"):
            _run(_roundtrip(server.url))
        good = {"password": {"user": server.user, "password": server.password},
                "token": {"token": server.token},
                "nkey": {"nkeys_seed_str": server.nkey_seed}}[auth]
        assert _run(_roundtrip(server.url, **good)) == b"stored"
    finally:
        server.cleanup()


def test_tls_variant(tmp_path):
    server = NatsServer(tmp_path / "tls", tls=True)
    try:
        server.start()
        assert server.url.startswith("tls://")
        assert _run(_roundtrip(server.url, tls=server.client_ssl_context())) == b"stored"
        import ssl
        untrusting = ssl.create_default_context()  # the system CAs: not ours
        with pytest.raises(ssl.SSLError):
            _run(_roundtrip(server.url, tls=untrusting))
    finally:
        server.cleanup()


def test_missing_binary_fails_loudly(monkeypatch):
    import tests.nats_server as ns

    monkeypatch.setattr(ns, "NATS", "/nonexistent/nats-server")
    with pytest.raises(RuntimeError, match="apt-get install -y nats-server"):
        ns.require_nats()


# -- the broker ----------------------------------------------------------------

import os  # noqa: E402
import threading  # noqa: E402

from zmicro.broker.base import BrokerError, SubscribeOptions  # noqa: E402
from nats.js import api as js_api  # noqa: E402

from zmicro.broker.nats import NatsBroker, durable_name, stream_name  # noqa: E402
from zmicro.errors import Code, RPCError  # noqa: E402

from tests.helpers import eventually  # noqa: E402


@pytest.fixture
def broker(nats_url):
    b = NatsBroker(nats_url)
    yield b
    b.close()


class Recorder:
    """on_delivery that records (data, deliveries) and ends each delivery by `policy`."""

    def __init__(self, policy=lambda d: d.ack()):
        self.policy = policy
        self.got: list[tuple[bytes, int | None]] = []
        self.held = []
        self.lock = threading.Lock()

    def __call__(self, d) -> None:
        with self.lock:
            self.got.append((d.data, d.deliveries))
        self.policy(d)

    def datas(self) -> list[bytes]:
        with self.lock:
            return [g[0] for g in self.got]


def publish(broker, topic, data: bytes) -> bytes:
    event_id = os.urandom(16)
    broker.publish(topic, data, event_id=event_id)
    return event_id


def consumer_info(broker, topic, queue):
    async def info():
        return await broker._js.consumer_info(stream_name(topic), durable_name(queue))
    return broker._runner.run(info(), 30)


def test_bytes_in_bytes_out(broker, nats_topic):
    rec = Recorder()
    broker.subscribe(nats_topic, rec, SubscribeOptions(queue="g"))
    frames = [b"", b"\x00\xff" * 7, os.urandom(4096)]
    for frame in frames:
        publish(broker, nats_topic, frame)
    assert eventually(lambda: sorted(rec.datas()) == sorted(frames), "every frame, exact")


def test_queue_group_each_event_once_per_group(broker, nats_topic):
    a, b, other = Recorder(), Recorder(), Recorder()
    broker.subscribe(nats_topic, a, SubscribeOptions(queue="billing", max_in_flight=4))
    broker.subscribe(nats_topic, b, SubscribeOptions(queue="billing", max_in_flight=4))
    broker.subscribe(nats_topic, other, SubscribeOptions(queue="audit"))
    sent = [f"e{i}".encode() for i in range(60)]
    for data in sent:
        publish(broker, nats_topic, data)
    eventually(lambda: len(a.got) + len(b.got) == 60 and len(other.got) == 60, "all events")
    assert sorted(a.datas() + b.datas()) == sorted(sent)   # each once in the group
    assert sorted(other.datas()) == sorted(sent)           # the other group gets every one
    assert a.got and b.got                                 # both members took a share


def test_broadcast_every_subscription_gets_every_event(broker, nats_topic):
    x, y = Recorder(), Recorder()
    broker.subscribe(nats_topic, x)
    broker.subscribe(nats_topic, y)
    sent = [f"b{i}".encode() for i in range(10)]
    for data in sent:
        publish(broker, nats_topic, data)
    eventually(lambda: sorted(x.datas()) == sorted(sent) and sorted(y.datas()) == sorted(sent),
               "both subscriptions get all")


def test_ack_stops_redelivery(broker, nats_topic):
    rec = Recorder()
    sub = broker.subscribe(nats_topic, rec, SubscribeOptions(queue="g", ack_wait=1.0))
    publish(broker, nats_topic, b"once")
    eventually(lambda: rec.got, "the delivery")
    # The server holds nothing unacked and nothing pending for the group: it
    # has nothing to redeliver, after ack_wait or ever.
    eventually(lambda: (lambda i: i.num_ack_pending == 0 and i.num_pending == 0
                        and i.num_redelivered == 0)(consumer_info(broker, nats_topic, "g")),
               "the ack reached the server")
    assert rec.got == [(b"once", 1)]
    assert sub.stats()["acked"] == 1 and sub.stats()["in_flight"] == 0


def test_nack_redelivers_with_deliveries_counted(broker, nats_topic):
    rec = Recorder(lambda d: d.ack() if d.deliveries == 3 else d.nack(delay=0.01))
    sub = broker.subscribe(nats_topic, rec, SubscribeOptions(queue="g", max_deliveries=5))
    publish(broker, nats_topic, b"retry me")
    eventually(lambda: len(rec.got) == 3, "three deliveries")
    assert rec.got == [(b"retry me", 1), (b"retry me", 2), (b"retry me", 3)]
    assert sub.stats()["nacked"] == 2 and sub.stats()["acked"] == 1
    assert broker.dead_letters() == []


def test_nack_without_delay_uses_the_backoff(broker, nats_topic):
    rec = Recorder(lambda d: d.ack() if d.deliveries == 2 else d.nack())
    broker.subscribe(nats_topic, rec,
                     SubscribeOptions(queue="g", backoff=(0.01,), max_deliveries=3))
    publish(broker, nats_topic, b"x")
    eventually(lambda: [g[1] for g in rec.got] == [1, 2], "redelivered after the backoff")


def test_max_deliveries_dead_letters_with_reason(broker, nats_topic):
    rec = Recorder(lambda d: d.nack(delay=0))
    sub = broker.subscribe(nats_topic, rec, SubscribeOptions(queue="g", max_deliveries=3))
    publish(broker, nats_topic, b"poison")
    dead = eventually(broker.dead_letters, "a dead letter")
    assert [(d.topic, d.queue, d.data, d.reason, d.deliveries) for d in dead] == [
        (nats_topic, "g", b"poison", "max_deliveries", 3)]
    assert rec.got == [(b"poison", 1), (b"poison", 2), (b"poison", 3)]
    eventually(lambda: consumer_info(broker, nats_topic, "g").num_ack_pending == 0,
               "terminated on the server")
    assert sub.stats()["dead_lettered"] == 1


def test_term_dead_letters_at_once(broker, nats_topic):
    rec = Recorder(lambda d: d.term("rejected: no such order"))
    broker.subscribe(nats_topic, rec, SubscribeOptions(queue="g"))
    publish(broker, nats_topic, b"poison")
    dead = eventually(broker.dead_letters, "a dead letter")
    assert [(d.data, d.reason, d.deliveries) for d in dead] == [
        (b"poison", "rejected: no such order", 1)]
    assert rec.got == [(b"poison", 1)]


def test_ending_twice_is_an_error(broker, nats_topic):
    errors = []

    def twice(d):
        d.ack()
        try:
            d.ack()
        except RuntimeError as e:
            errors.append(e)

    broker.subscribe(nats_topic, Recorder(twice), SubscribeOptions(queue="g"))
    publish(broker, nats_topic, b"x")
    eventually(lambda: errors, "the second end refused")


def test_max_in_flight_bounds_what_is_handed_out(broker, nats_topic):
    rec = Recorder(policy=lambda d: rec.held.append(d))
    sub = broker.subscribe(nats_topic, rec, SubscribeOptions(queue="g", max_in_flight=2))
    for i in range(10):
        publish(broker, nats_topic, f"{i}".encode())
    # The server itself handed out 2 and keeps 8: the broker pulled no more
    # than its free slots (so it cannot hand out more, whatever the timing).
    eventually(lambda: (lambda i: i.num_ack_pending == 2 and i.num_pending == 8)(
        consumer_info(broker, nats_topic, "g")), "two handed out, eight kept")
    assert len(rec.got) == 2 and sub.stats()["in_flight"] == 2
    rec.held.pop(0).ack()
    eventually(lambda: len(rec.got) == 3, "a freed slot is filled")
    while len(rec.got) < 10:
        eventually(lambda: rec.held, "a held delivery")
        rec.held.pop(0).ack()
        assert sub.stats()["in_flight"] <= 2
    for d in rec.held:
        d.ack()
    assert sorted(rec.datas()) == sorted(f"{i}".encode() for i in range(10))


def test_durable_group_keeps_events_published_before_it_subscribes(broker, nats_topic):
    sent = [publish(broker, nats_topic, f"early{i}".encode()) and f"early{i}".encode()
            for i in range(3)]
    rec = Recorder()
    broker.subscribe(nats_topic, rec, SubscribeOptions(queue="late"))
    eventually(lambda: sorted(rec.datas()) == sorted(sent), "the stored events")
    assert broker.capabilities.durable and broker.capabilities.survives_publisher


def test_group_members_share_one_durable_across_brokers(nats_url, nats_topic):
    with NatsBroker(nats_url) as one, NatsBroker(nats_url) as two:
        a, b = Recorder(), Recorder()
        sub = one.subscribe(nats_topic, a, SubscribeOptions(queue="g", max_in_flight=1))
        two.subscribe(nats_topic, b, SubscribeOptions(queue="g", max_in_flight=1))
        for i in range(20):
            publish(one, nats_topic, f"{i}".encode())
        eventually(lambda: len(a.got) + len(b.got) == 20, "all events")
        assert sorted(a.datas() + b.datas()) == sorted(f"{i}".encode() for i in range(20))
        sub.close()
        sub.close()  # idempotent
        publish(one, nats_topic, b"after close")
        eventually(lambda: b"after close" in b.datas(), "the remaining member gets it")
        assert b"after close" not in a.datas()


def test_publish_is_idempotent_by_event_id(broker, nats_topic):
    rec = Recorder()
    broker.subscribe(nats_topic, rec, SubscribeOptions(queue="g"))
    event_id = os.urandom(16)
    broker.publish(nats_topic, b"same", event_id=event_id)
    broker.publish(nats_topic, b"same", event_id=event_id)  # a retry
    publish(broker, nats_topic, b"marker")
    eventually(lambda: b"marker" in rec.datas(), "the marker")
    assert rec.datas().count(b"same") == 1


def test_publish_async_from_the_callers_loop(broker, nats_topic):
    rec = Recorder()
    broker.subscribe(nats_topic, rec, SubscribeOptions(queue="g"))

    async def main():
        await asyncio.gather(*(broker.publish_async(nats_topic, f"{i}".encode(),
                                                    event_id=os.urandom(16))
                               for i in range(20)))

    _run(main())
    _run(main())  # a second loop gets a connection of its own
    eventually(lambda: len(rec.got) == 40, "all forty")


def test_sync_publish_from_threads_on_connections_of_their_own(nats_server, nats_url,
                                                                nats_topic):
    """publish() runs on the calling thread's own loop and connection: four
    threads publish at once, every event arrives; a thread that ended has
    its connection closed when another thread starts publishing, and close()
    closes the rest (the server counts the connections named by the broker)."""
    name = f"threads-{nats_topic}"

    def connections() -> int:
        conns = nats_server.varz("connz", limit="1024")["connections"] or []
        return sum(1 for c in conns if c.get("name") == name)

    broker = NatsBroker(nats_url, name=name)
    try:
        rec = Recorder()
        broker.subscribe(nats_topic, rec, SubscribeOptions(queue="g"))

        def publisher(k: int) -> None:
            for i in range(10):
                publish(broker, nats_topic, f"{k}-{i}".encode())

        threads = [threading.Thread(target=publisher, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        eventually(lambda: len(rec.got) == 40, "all forty")
        assert sorted(rec.datas()) == sorted(f"{k}-{i}".encode()
                                             for k in range(4) for i in range(10))
        assert connections() == 5        # the broker's own and one per thread
        publish(broker, nats_topic, b"main")  # this thread: the four ended ones go
        eventually(lambda: connections() == 2, "the ended threads' connections closed")
    finally:
        broker.close()
    eventually(lambda: connections() == 0, "every connection closed")


def test_an_idle_publishing_thread_survives_the_server_dropping_it(tmp_path, nats_topic):
    """A thread's loop runs only during its publish calls, so its connection
    answers no PING while idle: a server that drops it (here after 1 s)
    costs the next publish a reconnect, not an error."""
    server = NatsServer(tmp_path / "pings", extra_config='ping_interval: "1s"\nping_max: 1')
    try:
        server.start()
        def named(name: str) -> int:
            conns = server.varz("connz")["connections"] or []
            return sum(1 for c in conns if c.get("name") == name)

        with NatsBroker(server.url, name="idle") as broker:
            rec = Recorder()
            broker.subscribe(nats_topic, rec, SubscribeOptions(queue="g"))

            def publisher() -> None:
                publish(broker, nats_topic, b"first")
                eventually(lambda: named("idle") == 1, "the server drops this thread's")
                publish(broker, nats_topic, b"after")

            t = threading.Thread(target=publisher)
            t.start()
            t.join(120)
            eventually(lambda: sorted(rec.datas()) == [b"after", b"first"], "both events")
    finally:
        server.cleanup()


def test_oversized_event_is_resource_exhausted(broker, nats_topic):
    with pytest.raises(RPCError) as info:
        broker.publish(nats_topic, b"x" * (2 * 1024 * 1024), event_id=os.urandom(16))
    assert info.value.code == Code.RESOURCE_EXHAUSTED and info.value.processed is False


def test_unreachable_server_is_unavailable(nats_server, nats_topic):
    broker = NatsBroker(nats_server.url)
    try:
        nats_server.stop()
        with pytest.raises(RPCError) as info:
            broker.publish(nats_topic, b"x", event_id=os.urandom(16), timeout=1.0)
        assert info.value.code == Code.UNAVAILABLE
    finally:
        nats_server.start()
        broker.close()


def test_closed_broker(nats_url, nats_topic):
    broker = NatsBroker(nats_url)
    broker.close()
    broker.close()
    with pytest.raises(BrokerError, match="closed"):
        broker.publish(nats_topic, b"x", event_id=os.urandom(16))
    with pytest.raises(BrokerError, match="closed"):
        broker.subscribe(nats_topic, Recorder())


def test_invalid_topic_is_value_error(broker):
    with pytest.raises(ValueError):
        broker.publish("a.*", b"x", event_id=os.urandom(16))
    with pytest.raises(ValueError):
        broker.subscribe("", Recorder())


def test_names_are_valid_and_distinct():
    assert stream_name("a.b") != stream_name("a_b")
    assert durable_name("a.b") != durable_name("a_b")
    for name in (stream_name("x" * 242), durable_name("q" * 242)):
        assert len(name) < 255 and "." not in name


# -- authentication and TLS, passed through --------------------------------------

@pytest.mark.parametrize("auth", ["password", "token", "nkey"])
def test_broker_authenticates(tmp_path, auth, nats_topic):
    server = NatsServer(tmp_path / auth, auth=auth)
    try:
        server.start()
        options = {"password": {"user": server.user, "password": server.password},
                   "token": {"token": server.token},
                   "nkey": {"nkeys_seed": server.nkey_seed}}[auth]
        with NatsBroker(server.url, **options) as broker:
            rec = Recorder()
            broker.subscribe(nats_topic, rec, SubscribeOptions(queue="g"))
            publish(broker, nats_topic, b"authenticated")
            eventually(lambda: rec.datas() == [b"authenticated"], "the event")
        with pytest.raises(BrokerError, match="refused the credentials"):
            NatsBroker(server.url, user="zmicro", password="wrong", connect_timeout=30)
    finally:
        server.cleanup()


def test_broker_nkey_seed_file(tmp_path, nats_topic):
    server = NatsServer(tmp_path / "nk", auth="nkey")
    try:
        server.start()
        seed = tmp_path / "user.nk"
        seed.write_text(server.nkey_seed)
        with NatsBroker(server.url, nkeys_seed=str(seed)) as broker:
            publish(broker, nats_topic, b"ok")
    finally:
        server.cleanup()


def test_broker_over_tls(tmp_path, nats_topic):
    server = NatsServer(tmp_path / "tls", tls=True)
    try:
        server.start()
        with NatsBroker(server.url, tls=server.client_ssl_context(),
                        tls_hostname="localhost") as broker:
            rec = Recorder()
            broker.subscribe(nats_topic, rec, SubscribeOptions(queue="g"))
            publish(broker, nats_topic, b"private")
            eventually(lambda: rec.datas() == [b"private"], "the event")
    finally:
        server.cleanup()


# -- core NATS (jetstream=False): native queue groups, at most once -------------

def test_core_queue_groups_and_broadcast(nats_url, nats_topic):
    with NatsBroker(nats_url, jetstream=False) as broker:
        assert not broker.capabilities.durable
        a, b, c = Recorder(), Recorder(), Recorder()
        broker.subscribe(nats_topic, a, SubscribeOptions(queue="g"))
        broker.subscribe(nats_topic, b, SubscribeOptions(queue="g"))
        broker.subscribe(nats_topic, c)
        sent = [f"{i}".encode() for i in range(40)]
        for data in sent:
            publish(broker, nats_topic, data)
        eventually(lambda: len(a.got) + len(b.got) == 40 and len(c.got) == 40, "all")
        assert sorted(a.datas() + b.datas()) == sorted(sent) == sorted(c.datas())
        term = Recorder(lambda d: d.term("undecodable"))
        broker.subscribe(nats_topic + ".t", term)
        # At most once: core NATS may lose a message (seen rarely here under
        # load, cause not found yet: see the stop note), so publish again
        # until one is handled; what is handled is dead-lettered as termed.
        def dead_letter():
            if not broker.dead_letters():
                publish(broker, nats_topic + ".t", b"bad")
            return broker.dead_letters()

        dead = eventually(dead_letter, "a dead letter")
        assert {(d.data, d.reason) for d in dead} == {(b"bad", "undecodable")}


# -- what the contract suite checks on a fake clock, here in real time ----------

def test_a_handler_longer_than_ack_wait_is_not_redelivered_while_it_runs(broker, nats_topic):
    import time

    rec = Recorder(policy=lambda d: rec.held.append(d))
    sub = broker.subscribe(nats_topic, rec,
                           SubscribeOptions(queue="g", ack_wait=1.0, max_deliveries=3))
    publish(broker, nats_topic, b"long")
    eventually(lambda: rec.got, "the delivery")
    # The handler "runs" for three ack_waits: the broker's in_progress keeps
    # the server from handing the event out again meanwhile.
    time.sleep(3.0)
    assert rec.got == [(b"long", 1)]
    assert consumer_info(broker, nats_topic, "g").num_redelivered == 0
    rec.held[0].ack()
    eventually(lambda: (lambda i: i.num_ack_pending == 0 and i.num_pending == 0)(
        consumer_info(broker, nats_topic, "g")), "acked on the server")
    assert rec.got == [(b"long", 1)]
    assert sub.stats()["in_flight"] == 0 and broker.dead_letters() == []


def test_closing_gives_back_unended_deliveries_at_once(broker, nats_topic):
    holder = Recorder(policy=lambda d: holder.held.append(d))
    other = Recorder()
    # ack_wait far beyond the test's wait: only the nak of close() can hand it over.
    sub = broker.subscribe(nats_topic, holder, SubscribeOptions(queue="g", ack_wait=3600.0))
    publish(broker, nats_topic, b"held")
    eventually(lambda: holder.held, "held")
    broker.subscribe(nats_topic, other, SubscribeOptions(queue="g", ack_wait=3600.0))
    sub.close()
    eventually(lambda: other.datas() == [b"held"], "handed to the other member")
    holder.held[0].ack()  # after close: moot, no error
    assert sub.stats()["in_flight"] == 0


def test_a_closed_broadcast_subscription_leaves_no_consumer(broker, nats_topic):
    sub = broker.subscribe(nats_topic, Recorder())
    stream = stream_name(nats_topic)

    def consumers() -> int:
        return broker._runner.run(broker._js.stream_info(stream), 30).state.consumer_count

    assert consumers() == 1
    sub.close()
    assert consumers() == 0


def test_tenants_do_not_meet(nats_url, nats_topic):
    with NatsBroker(nats_url, subject_prefix="zmicro.one.", dlq_prefix="zmicro.one.dlq.") as one, \
            NatsBroker(nats_url, subject_prefix="zmicro.two.", dlq_prefix="zmicro.two.dlq.") as two:
        a, b = Recorder(lambda d: d.term("no")), Recorder()
        one.subscribe(nats_topic, a, SubscribeOptions(queue="g"))
        two.subscribe(nats_topic, b, SubscribeOptions(queue="g"))
        publish(one, nats_topic, b"for one")
        publish(two, nats_topic, b"for two")
        eventually(lambda: a.datas() == [b"for one"] and b.datas() == [b"for two"], "each its own")
        eventually(one.dead_letters, "one's dead letter")
        assert two.dead_letters() == []


def test_a_full_stream_is_resource_exhausted(broker, nats_topic):
    from nats.js import api

    # A stream made beforehand with room for one event and no eviction:
    # the broker uses it as it is (it stores the topic's subject).
    async def make_small() -> None:
        await broker._js.add_stream(api.StreamConfig(
            name=stream_name(nats_topic), subjects=["zmicro.topic." + nats_topic], max_msgs=1,
            discard=api.DiscardPolicy.NEW))

    broker._runner.run(make_small(), 30)
    publish(broker, nats_topic, b"fits")
    with pytest.raises(RPCError) as info:
        broker.publish(nats_topic, b"no room", event_id=os.urandom(16), timeout=0.5)
    assert info.value.code == Code.RESOURCE_EXHAUSTED and info.value.processed is False


def test_the_last_member_sets_the_groups_consumer_options(broker, nats_topic):
    broker.subscribe(nats_topic, Recorder(), SubscribeOptions(queue="g", ack_wait=30.0))
    broker.subscribe(nats_topic, Recorder(),
                     SubscribeOptions(queue="g", ack_wait=5.0, max_deliveries=9))
    config = consumer_info(broker, nats_topic, "g").config
    assert (config.ack_wait, config.max_deliver) == (5.0, 10)  # max_deliveries + 1


# -- NATS' own permissions, as docs/events.md shows them ------------------------

def _documented_server(tmp_path):
    """A server with docs/events.md's authorization block as is (passwords
    filled in) and an admin user of the test's own (no permissions: all)."""
    import re
    import secrets
    from pathlib import Path

    doc = (Path(__file__).parents[2] / "docs" / "events.md").read_text()
    block = re.search(r"```\n(authorization \{.*?)```", doc, re.S).group(1)
    pw = {name: secrets.token_hex(8) for name in ("orders", "billing", "admin")}
    block = block.replace("$ORDERS_PASS", pw["orders"]).replace("$BILLING_PASS", pw["billing"])
    block = block.replace("users = [", f'users = [\n    {{ user: admin, password: "{pw["admin"]}" }}',
                          1)
    server = NatsServer(tmp_path / "perms", extra_config=block)
    return server, pw


def test_the_documented_permissions(tmp_path):
    """The publisher user publishes, the subscriber user consumes and
    dead-letters, the subscriber user's publish is refused at once."""
    server, pw = _documented_server(tmp_path)
    try:
        server.start()
        with NatsBroker(server.url, user="orders", password=pw["orders"],
                        inbox_prefix="_INBOX_orders") as orders, \
                NatsBroker(server.url, user="billing", password=pw["billing"],
                           inbox_prefix="_INBOX_billing") as billing, \
                NatsBroker(server.url, user="admin", password=pw["admin"]) as admin:
            rec = Recorder(lambda d: d.ack() if d.data == b"fine" else d.term("bad_mac"))
            billing.subscribe("order.created", rec, SubscribeOptions(queue="billing"))
            publish(orders, "order.created", b"fine")
            publish(orders, "order.created", b"refused")
            eventually(lambda: sorted(rec.datas()) == [b"fine", b"refused"], "both events")
            admin._topics.add("order.created")  # dead_letters() reads the topics it knows
            (dead,) = eventually(admin.dead_letters, "the dead letter, stored by billing")
            # A refusal's dead letter keeps no bytes (anyone may forge one).
            assert (dead.data, dead.reason) == (b"", "bad_mac")
            with pytest.raises(RPCError) as info:
                billing.publish("order.created", b"x", event_id=os.urandom(16), timeout=30)
            assert info.value.code == Code.PERMISSION_DENIED and info.value.processed is False
            assert "zmicro.topic.order.created" in info.value.detail
    finally:
        server.cleanup()


def test_the_publisher_user_cannot_consume(tmp_path):
    """The attack the permissions must stop: the publish-only user creates a
    consumer (durable or ephemeral), pulls the group's durable, reads the
    stream's messages, or listens on the subscriber's inbox or the topic's
    subject. Each is refused by the server (a permissions violation naming
    that subject), nothing reaches the attacker, and the subscriber still
    gets every event."""
    import nats.errors

    stream, durable = stream_name("order.created"), durable_name("billing")
    server, pw = _documented_server(tmp_path)
    try:
        server.start()
        with NatsBroker(server.url, user="orders", password=pw["orders"],
                        inbox_prefix="_INBOX_orders") as orders, \
                NatsBroker(server.url, user="billing", password=pw["billing"],
                           inbox_prefix="_INBOX_billing") as billing:
            rec = Recorder()
            billing.subscribe("order.created", rec, SubscribeOptions(queue="billing"))
            publish(orders, "order.created", b"before")

            async def attack() -> tuple[list[str], list[bytes]]:
                errors: list[str] = []
                stolen: list[bytes] = []

                async def error_cb(e: Exception) -> None:
                    errors.append(str(e))

                async def steal(msg) -> None:
                    stolen.append(msg.data)

                nc = await nats.connect(server.url, user="orders", password=pw["orders"],
                                        inbox_prefix="_INBOX_orders", error_cb=error_cb,
                                        allow_reconnect=False)
                try:
                    js = nc.jetstream(timeout=1.0)
                    for sniffed in ("_INBOX_billing.>", "_INBOX.>", "zmicro.topic.>",
                                    "$JS.ACK.>"):
                        await nc.subscribe(sniffed, cb=steal)
                    attempts = [
                        js.add_consumer(stream, durable_name="steal",
                                        ack_policy=js_api.AckPolicy.EXPLICIT),
                        js.add_consumer(stream, ack_policy=js_api.AckPolicy.EXPLICIT),
                        nc.request(f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}",
                                   b'{"batch": 10}', timeout=1.0),
                        js.get_msg(stream, 1),
                        js.get_last_msg(stream, "zmicro.topic.order.created", direct=True),
                        js.consumer_info(stream, durable),
                    ]
                    for attempt in attempts:
                        with pytest.raises((nats.errors.TimeoutError,
                                            nats.errors.NoRespondersError)):
                            await attempt
                    # Events published while the attacker listens reach billing only.
                    await asyncio.to_thread(publish, orders, "order.created", b"during")
                    await asyncio.to_thread(
                        eventually, lambda: b"during" in rec.datas(), "billing got it")
                    await nc.flush(5)
                    return errors, stolen
                finally:
                    await nc.close()

            errors, stolen = _run(attack())
            assert stolen == []
            text = "\n".join(errors).lower()
            for refused in ("subscription to \"_inbox_billing.>\"",
                            "subscription to \"_inbox.>\"",
                            "subscription to \"zmicro.topic.>\"",
                            f"publish to \"$js.api.consumer.durable.create.{stream}.steal\"",
                            f"publish to \"$js.api.consumer.create.{stream}\"",
                            f"publish to \"$js.api.consumer.msg.next.{stream}.{durable}\"",
                            f"publish to \"$js.api.stream.msg.get.{stream}\""):
                assert refused.lower() in text, (refused, errors)
            eventually(lambda: sorted(rec.datas()) == [b"before", b"during"], "both events")
    finally:
        server.cleanup()


def test_permissions_for_broadcast_and_an_admin_made_stream(tmp_path, nats_topic):
    """permissions_config() for what the documented block does not show: a
    broadcast subscriber (an ephemeral consumer, deleted on close) and
    users that may not create streams (an administrator made them)."""
    import secrets

    from zmicro.broker.nats import permissions_config

    pw = secrets.token_hex(8)

    def user(name: str, **options) -> str:
        block = permissions_config(inbox_prefix=f"_INBOX_{name}", create_streams=False,
                                   **options)
        return f'{{ user: {name}, password: "{pw}"\n{block} }}'

    config = ("authorization {\n  users = [\n"
              + user("pub", publish=[nats_topic]) + "\n"
              + user("bc", subscribe=[(nats_topic, None)]) + "\n"
              + f'{{ user: admin, password: "{pw}" }}\n  ]\n}}\n')
    server = NatsServer(tmp_path / "bcast", extra_config=config)
    try:
        server.start()

        def broker(name: str) -> NatsBroker:
            return NatsBroker(server.url, user=name, password=pw,
                              inbox_prefix=f"_INBOX_{name}" if name != "admin" else "_INBOX")

        with broker("admin") as admin:
            async def make_streams() -> None:
                await admin._ensure_stream(nats_topic)
                await admin._ensure_dlq()
            admin._runner.run(make_streams(), 30)
            with broker("pub") as pub, broker("bc") as bc:
                rec = Recorder(lambda d: d.ack() if d.data != b"bad" else d.term("bad_mac"))
                sub = bc.subscribe(nats_topic, rec, SubscribeOptions())
                publish(pub, nats_topic, b"one")
                publish(pub, nats_topic, b"bad")
                eventually(lambda: sorted(rec.datas()) == [b"bad", b"one"], "both events")
                admin._topics.add(nats_topic)
                (dead,) = eventually(admin.dead_letters, "bc dead-lettered one")
                assert dead.reason == "bad_mac"

                def consumers() -> int:
                    async def count() -> int:
                        info = await admin._js.stream_info(stream_name(nats_topic))
                        return info.state.consumer_count
                    return admin._runner.run(count(), 30)

                assert consumers() == 1
                sub.close()
                assert consumers() == 0  # bc may delete its own ephemeral consumer
    finally:
        server.cleanup()


# -- review findings -------------------------------------------------------------

def test_no_password_in_logs_or_errors_of_a_failed_connect(caplog):
    import logging

    from tests.nats_server import free_port
    from zmicro.broker.nats import redact_url

    url = f"nats://alice:S3cretPW@127.0.0.1:{free_port()}"  # nothing listens there
    caplog.set_level(logging.DEBUG, logger="zmicro.broker.nats")
    with pytest.raises(BrokerError) as info:
        NatsBroker([url, f"nats://T0kenXYZ@127.0.0.1:{free_port()}"], connect_timeout=1.0)
    text = str(info.value) + "\n" + caplog.text
    assert "alice:***@127.0.0.1" in str(info.value)   # which server: still said
    assert "S3cretPW" not in text and "T0kenXYZ" not in text
    assert redact_url("nats://u:p@h:1, tls://tok@h2") == "nats://u:***@h:1, tls://***@h2"
    assert redact_url(["nats://h:4222"]) == "nats://h:4222"


def test_refused_frames_leave_a_bounded_dead_letter_stream_without_their_bytes(nats_url,
                                                                                nats_topic):
    import uuid

    import blake3

    from zmicro.broker.nats import REFUSAL_REASONS, dlq_stream_name

    dlq = f"zmicro.f{uuid.uuid4().hex[:8]}.dlq."   # a dead-letter stream of its own
    reasons = sorted(REFUSAL_REASONS)
    with NatsBroker(nats_url, dlq_prefix=dlq, dlq_max_msgs=20) as broker:
        # What the glue does with forged frames: term with the refusal's reason,
        # here in two groups (one dead letter each).
        rec = Recorder(lambda d: d.term(reasons[d.data[0] % len(reasons)]))
        broker.subscribe(nats_topic, rec, SubscribeOptions(queue="a"))
        broker.subscribe(nats_topic, Recorder(lambda d: d.term("bad_mac")),
                         SubscribeOptions(queue="b"))
        frames = [bytes([i]) + b"F" * 1000 for i in range(60)]
        for frame in frames:
            publish(broker, nats_topic, frame)

        def stored():
            return broker._runner.run(broker._js.stream_info(dlq_stream_name(dlq)), 30)
        eventually(lambda: stored().state.last_seq == 120, "every refusal dead-lettered")
        info = stored()
        assert info.state.messages == 20               # bounded: the oldest went
        assert info.state.bytes < 20 * 1000            # and none holds a frame
        dead = broker.dead_letters()
        assert len(dead) == 20 and all(d.data == b"" for d in dead)
        assert {d.reason for d in dead} <= REFUSAL_REASONS

        async def last():
            return await broker._js.get_last_msg(dlq_stream_name(dlq), dlq + nats_topic)
        raw = broker._runner.run(last(), 30)
        assert raw.headers["Zmicro-Size"] == "1001"
        assert raw.headers["Zmicro-Blake3"] in {blake3.blake3(f).hexdigest() for f in frames}


def test_a_dead_letter_stream_made_with_other_bounds_gets_this_brokers(nats_url, nats_topic,
                                                                        caplog):
    """dlq_max_msgs / dlq_max_bytes changed between two starts take effect:
    the stream the first broker made is updated by the next."""
    import uuid

    from zmicro.broker.nats import dlq_stream_name

    dlq = f"zmicro.f{uuid.uuid4().hex[:8]}.dlq."
    name = dlq_stream_name(dlq)

    def bounds(broker: NatsBroker) -> tuple[int, int]:
        broker._runner.run(broker._ensure_dlq(), 30)
        config = broker._runner.run(broker._js.stream_info(name), 30).config
        return config.max_msgs, config.max_bytes

    with NatsBroker(nats_url, dlq_prefix=dlq, dlq_max_msgs=20, dlq_max_bytes=1 << 20) as b:
        assert bounds(b) == (20, 1 << 20)
    caplog.set_level("INFO", logger="zmicro.broker.nats")
    with NatsBroker(nats_url, dlq_prefix=dlq, dlq_max_msgs=50, dlq_max_bytes=2 << 20) as b:
        assert bounds(b) == (50, 2 << 20)
    assert f"{name} now holds at most" in caplog.text
    with NatsBroker(nats_url, dlq_prefix=dlq, dlq_max_msgs=50, dlq_max_bytes=2 << 20) as b:
        caplog.clear()
        assert bounds(b) == (50, 2 << 20)  # the same bounds: left alone
    assert "now holds" not in caplog.text


def test_a_default_sync_subscriber_may_publish_through_the_same_broker(nats_url, nats_topic,
                                                                     zmicro_keys, zmicro_serve):
    import zmicro
    from zmicro.registry import MemoryRegistry

    follow_up = nats_topic + ".done"
    handled: list[tuple[str, bytes]] = []
    with NatsBroker(nats_url) as broker, zmicro.Publisher(broker=broker) as pub:
        svc = zmicro.Service("billing", broker=broker, registry=MemoryRegistry())

        @svc.subscriber(nats_topic, queue="billing")   # sync, blocking=False (the default)
        def on_created(ev: bytes, ctx: zmicro.EventContext) -> None:
            handled.append((ctx.topic, ev))
            pub.publish(follow_up, b"follow-up")       # a blocking call on this broker

        @svc.subscriber(follow_up, queue="billing")
        def on_done(ev: bytes, ctx: zmicro.EventContext) -> None:
            handled.append((ctx.topic, ev))

        zmicro_serve(svc)
        pub.publish(nats_topic, b"created")
        eventually(lambda: len(handled) == 2, "both events handled")
        assert sorted(handled) == sorted([(nats_topic, b"created"), (follow_up, b"follow-up")])
        assert broker.capabilities.delivers_on_loop
        assert broker.dead_letters() == []
