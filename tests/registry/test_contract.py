"""The behaviour every Registry implementation shares (see conftest.IMPLEMENTATIONS).

Waits on watchers are generous (WAIT seconds) and only bound a failure; time
that matters (TTLs) is the fake clock's.
"""

from __future__ import annotations

import threading

import msgspec
import pytest

from zmicro.registry import (
    Endpoint,
    Event,
    EventType,
    Node,
    RegistryError,
    ServiceRecord,
)

WAIT = 10.0


def node(node_id: str, address: str | None = None, **metadata: str) -> Node:
    return Node(id=node_id, address=address or f"tcp://127.0.0.1:{5000 + len(node_id)}", metadata=metadata)


def rec(name: str = "Greeter", version: str = "1.0", *nodes: Node, **kw) -> ServiceRecord:
    return ServiceRecord(name=name, version=version, nodes=nodes, **kw)


def ids(record: ServiceRecord) -> list[str]:
    return [n.id for n in record.nodes]


def expect(watcher, kind: EventType, name: str, node_ids: list[str]) -> Event:
    event = watcher.next(timeout=WAIT)
    assert event is not None, f"no {kind.name} event for {name} {node_ids}"
    assert (event.type, event.record.name, ids(event.record)) == (kind, name, node_ids)
    return event


class HelloRequest(msgspec.Struct):
    name: str
    times: int = 1


class HelloReply(msgspec.Struct):
    greeting: list[str]


# -- register / get / list / deregister ----------------------------------------------


def test_unknown_service_is_empty(registry):
    assert registry.get("Nobody") == []
    assert registry.list() == []


def test_register_get_deregister(registry):
    a = node("greeter-a")
    registry.register(rec("Greeter", "1.0", a))
    assert registry.get("Greeter") == [rec("Greeter", "1.0", a)]
    assert registry.list() == [rec("Greeter", "1.0", a)]
    assert registry.get("Other") == []
    registry.deregister(rec("Greeter", "1.0", a))
    assert registry.get("Greeter") == []
    assert registry.list() == []


def test_deregister_unknown_is_harmless(registry):
    registry.deregister(rec("Greeter", "1.0", node("nobody")))
    registry.register(rec("Greeter", "1.0", node("a")))
    registry.deregister(rec("Greeter", "2.0", node("a")))  # right id, wrong version
    assert ids(registry.get("Greeter")[0]) == ["a"]


def test_nodes_and_versions(registry):
    registry.register(rec("Greeter", "1.0", node("g1-b")))
    registry.register(rec("Greeter", "1.0", node("g1-a")))
    registry.register(rec("Greeter", "2.0", node("g2-a"), node("g2-b")))
    registry.register(rec("Adder", "", node("add-a")))

    one, two = registry.get("Greeter")
    assert (one.version, ids(one)) == ("1.0", ["g1-a", "g1-b"])  # sorted, whatever the order of arrival
    assert (two.version, ids(two)) == ("2.0", ["g2-a", "g2-b"])
    assert [(r.name, r.version) for r in registry.list()] == [
        ("Adder", ""), ("Greeter", "1.0"), ("Greeter", "2.0")
    ]

    registry.deregister(rec("Greeter", "2.0", node("g2-a")))
    assert [ids(r) for r in registry.get("Greeter")] == [["g1-a", "g1-b"], ["g2-b"]]
    registry.deregister(rec("Greeter", "2.0", node("g2-b")))  # the last node takes the version
    assert [r.version for r in registry.get("Greeter")] == ["1.0"]
    registry.deregister(rec("Greeter", "1.0", node("g1-a"), node("g1-b")))
    assert registry.get("Greeter") == []
    assert [r.name for r in registry.list()] == ["Adder"]


def test_reregister_replaces_the_node(registry):
    registry.register(rec("Greeter", "1.0", node("a", "tcp://127.0.0.1:1", zone="x")))
    registry.register(rec("Greeter", "1.0", node("a", "tcp://127.0.0.1:2", zone="y")))
    [got] = registry.get("Greeter")
    assert got.nodes == (Node(id="a", address="tcp://127.0.0.1:2", metadata={"zone": "y"}),)


def test_endpoints_and_metadata_round_trip(registry):
    record = ServiceRecord(
        name="Greeter",
        version="1.2.3",
        metadata={"team": "core", "ünïcode": "✓"},
        endpoints=(
            Endpoint(
                name="Greeter.Hello",
                request=msgspec.json.schema(HelloRequest),
                response=msgspec.json.schema(HelloReply),
                metadata={"stream": "false"},
            ),
            Endpoint(name="Greeter.Raw"),
        ),
        nodes=(Node(id="g-1", address="ipc:///tmp/greeter.sock", metadata={"public_key": "x" * 40}),),
    )
    registry.register(record, ttl=30)
    [got] = registry.get("Greeter")
    assert got == record
    schema = got.endpoints[0].request
    # The schema still describes the type: it validates what the type encodes.
    assert schema == msgspec.json.schema(HelloRequest)
    assert registry.list() == [record]


def test_latest_change_supplies_endpoints_and_metadata(registry):
    v1 = dict(metadata={"build": "1"}, endpoints=(Endpoint(name="Greeter.Hello"),))
    v2 = dict(metadata={"build": "2"}, endpoints=(Endpoint(name="Greeter.Hello"), Endpoint(name="Greeter.Bye")))
    registry.register(rec("Greeter", "1.0", node("a"), **v1))
    registry.register(rec("Greeter", "1.0", node("b"), **v2))
    [got] = registry.get("Greeter")
    assert (got.metadata, got.endpoints, ids(got)) == (v2["metadata"], v2["endpoints"], ["a", "b"])
    # A heartbeat of "a" changes nothing, so it does not bring back the old endpoints.
    registry.register(rec("Greeter", "1.0", node("a"), **v1))
    assert registry.get("Greeter")[0].metadata == {"build": "2"}
    registry.register(rec("Greeter", "1.0", node("a"), metadata={"build": "3"}))
    assert registry.get("Greeter")[0].metadata == {"build": "3"}


def test_returned_records_are_copies(registry):
    registry.register(rec("Greeter", "1.0", node("a", zone="x"), metadata={"k": "v"}))
    [got] = registry.get("Greeter")
    got.metadata["k"] = "changed"
    got.nodes[0].metadata["zone"] = "changed"
    assert registry.get("Greeter") == [rec("Greeter", "1.0", node("a", zone="x"), metadata={"k": "v"})]


def test_register_stores_a_copy(registry):
    metadata = {"k": "v"}
    registry.register(rec("Greeter", "1.0", node("a"), metadata=metadata))
    metadata["k"] = "changed"
    assert registry.get("Greeter")[0].metadata == {"k": "v"}


def test_threads_register_concurrently(registry):
    def work(t: int) -> None:
        for i in range(10):
            registry.register(rec(f"svc-{i % 3}", "1", node(f"t{t}-n{i}")), ttl=600)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(len(r.nodes) for r in registry.list()) == 40


# -- expiry (the fake clock decides) -----------------------------------------------


def test_nodes_expire_after_ttl(fake_clock_registry, clock):
    registry = fake_clock_registry
    registry.register(rec("Greeter", "1.0", node("short")), ttl=5)
    registry.register(rec("Greeter", "1.0", node("long")), ttl=50)
    registry.register(rec("Greeter", "1.0", node("forever")))
    clock.advance(4.9)
    assert ids(registry.get("Greeter")[0]) == ["forever", "long", "short"]
    clock.advance(0.2)
    assert ids(registry.get("Greeter")[0]) == ["forever", "long"]
    clock.advance(100)
    assert ids(registry.list()[0]) == ["forever"]
    clock.advance(10**9)
    assert ids(registry.get("Greeter")[0]) == ["forever"]


def test_reregister_refreshes_ttl(fake_clock_registry, clock):
    registry = fake_clock_registry
    registry.register(rec("Greeter", "1.0", node("a")), ttl=10)
    clock.advance(8)
    registry.register(rec("Greeter", "1.0", node("a")), ttl=10)  # heartbeat
    clock.advance(8)  # 16 s after the first registration, 8 after the last
    assert ids(registry.get("Greeter")[0]) == ["a"]
    clock.advance(3)
    assert registry.get("Greeter") == []
    # Once expired, registering again brings it back.
    registry.register(rec("Greeter", "1.0", node("a")), ttl=10)
    assert ids(registry.get("Greeter")[0]) == ["a"]


def test_reregister_without_ttl_makes_it_permanent(fake_clock_registry, clock):
    registry = fake_clock_registry
    registry.register(rec("Greeter", "1.0", node("a")), ttl=1)
    registry.register(rec("Greeter", "1.0", node("a")))
    clock.advance(1000)
    assert ids(registry.get("Greeter")[0]) == ["a"]


def test_expiry_yields_delete(fake_clock_registry, clock):
    registry = fake_clock_registry
    with registry.watch("Greeter") as watcher:
        registry.register(rec("Greeter", "1.0", node("a")), ttl=5)
        registry.register(rec("Greeter", "1.0", node("b")), ttl=60)
        expect(watcher, EventType.CREATE, "Greeter", ["a"])
        expect(watcher, EventType.CREATE, "Greeter", ["b"])
        clock.advance(6)
        event = expect(watcher, EventType.DELETE, "Greeter", ["a"])
        assert event.record.version == "1.0"
        assert ids(registry.get("Greeter")[0]) == ["b"]
        assert ids(registry.list()[0]) == ["b"]


# -- watching --------------------------------------------------------------------


def test_watch_one_service_in_order(registry):
    with registry.watch("Greeter") as watcher:
        registry.register(rec("Greeter", "1.0", node("a")), ttl=30)
        created = expect(watcher, EventType.CREATE, "Greeter", ["a"])
        assert created.record == rec("Greeter", "1.0", node("a"))

        changed = rec("Greeter", "1.0", node("a", zone="eu"), endpoints=(Endpoint(name="Greeter.Hello"),))
        registry.register(changed, ttl=30)
        assert expect(watcher, EventType.UPDATE, "Greeter", ["a"]).record == changed

        registry.register(changed, ttl=30)  # a heartbeat: no event
        registry.deregister(rec("Greeter", "1.0", node("a")))
        assert expect(watcher, EventType.DELETE, "Greeter", ["a"]).record == changed


def test_watch_ignores_other_services(registry):
    with registry.watch("Greeter") as watcher:
        registry.register(rec("Other", "1", node("o")))
        registry.register(rec("Greeter", "1", node("g")))
        expect(watcher, EventType.CREATE, "Greeter", ["g"])
        registry.deregister(rec("Other", "1", node("o")))
        registry.deregister(rec("Greeter", "1", node("g")))
        expect(watcher, EventType.DELETE, "Greeter", ["g"])


def test_watch_all_services(registry):
    with registry.watch() as watcher:
        registry.register(rec("A", "1", node("a1")))
        registry.register(rec("B", "2", node("b1"), node("b2")))
        seen = {(e.type, e.record.name, e.record.version, n) for e in _take(watcher, 3) for n in ids(e.record)}
        assert seen == {
            (EventType.CREATE, "A", "1", "a1"),
            (EventType.CREATE, "B", "2", "b1"),
            (EventType.CREATE, "B", "2", "b2"),
        }
        registry.deregister(rec("B", "2", node("b1"), node("b2")))
        seen = {(e.type, n) for e in _take(watcher, 2) for n in ids(e.record)}
        assert seen == {(EventType.DELETE, "b1"), (EventType.DELETE, "b2")}


def _take(watcher, count: int) -> list[Event]:
    # Events of one node each here; a backend may pack several nodes in one.
    events, nodes = [], 0
    while nodes < count:
        event = watcher.next(timeout=WAIT)
        assert event is not None, f"got {events}, expected {count} nodes"
        events.append(event)
        nodes += len(event.record.nodes)
    return events


def test_watch_reports_only_later_changes(registry):
    registry.register(rec("Greeter", "1", node("before")))
    with registry.watch() as watcher:
        registry.register(rec("Greeter", "1", node("after")))
        expect(watcher, EventType.CREATE, "Greeter", ["after"])


def test_next_times_out_with_none(registry):
    with registry.watch("Greeter") as watcher:
        assert watcher.next(timeout=0) is None
        assert watcher.next(timeout=0.01) is None


def test_stop_ends_iteration_and_wakes_next(registry):
    watcher = registry.watch()
    got: list[Event] = []
    got_one = threading.Event()

    def read() -> None:
        for event in watcher:  # blocks in __next__ until stop()
            got.append(event)
            got_one.set()

    reader = threading.Thread(target=read)
    reader.start()
    registry.register(rec("Greeter", "1", node("a")))
    assert got_one.wait(WAIT)
    watcher.stop()
    reader.join(timeout=WAIT)
    assert not reader.is_alive()
    assert [(e.type, ids(e.record)) for e in got] == [(EventType.CREATE, ["a"])]
    assert watcher.next(timeout=WAIT) is None
    watcher.stop()  # twice is fine


def test_close_stops_watchers(registry):
    one, every = registry.watch("Greeter"), registry.watch()
    registry.close()
    assert one.next(timeout=WAIT) is None
    assert list(every) == []
    registry.close()  # idempotent


def test_closed_registry_refuses(registry):
    registry.close()
    with pytest.raises(RegistryError):
        registry.register(rec("Greeter", "1", node("a")))
    with pytest.raises(RegistryError):
        registry.deregister(rec("Greeter", "1", node("a")))
    with pytest.raises(RegistryError):
        registry.get("Greeter")
    with pytest.raises(RegistryError):
        registry.list()
    with pytest.raises(RegistryError):
        registry.watch()


def test_context_manager_closes(registry):
    with registry as same:
        assert same is registry
        watcher = registry.watch()
    assert watcher.next(timeout=WAIT) is None
    with pytest.raises(RegistryError):
        registry.list()


# -- validation ------------------------------------------------------------------

BAD_NAMES = ["", "a/b", "/", "nul\0", "x" * 256, "é" * 128, "\ud800"]


@pytest.mark.parametrize("bad", BAD_NAMES)
def test_bad_service_name(registry, bad):
    with pytest.raises(ValueError, match="name"):
        registry.register(rec(bad, "1", node("a")))
    with pytest.raises(ValueError, match="name"):
        registry.get(bad)
    with pytest.raises(ValueError, match="name"):
        registry.watch(bad)
    with pytest.raises(ValueError, match="name"):
        registry.deregister(rec(bad, "1", node("a")))


@pytest.mark.parametrize("bad", [b for b in BAD_NAMES if b])
def test_bad_version(registry, bad):
    with pytest.raises(ValueError, match="version"):
        registry.register(rec("Greeter", bad, node("a")))


@pytest.mark.parametrize("bad", BAD_NAMES)
def test_bad_node_id_and_endpoint_name(registry, bad):
    with pytest.raises(ValueError, match=r"nodes\[1\]\.id"):
        registry.register(rec("Greeter", "1", node("a"), Node(id=bad, address="tcp://h:1")))
    with pytest.raises(ValueError, match=r"endpoints\[0\]\.name"):
        registry.register(rec("Greeter", "1", node("a"), endpoints=(Endpoint(name=bad),)))


def test_longest_names_are_fine(registry):
    name, version, node_id = "x" * 255, "é" * 127, "\U0001f600" * 63  # 255, 254, 252 bytes
    registry.register(rec(name, version, node(node_id)))
    [got] = registry.get(name)
    assert (got.version, ids(got)) == (version, [node_id])


@pytest.mark.parametrize("ttl", [0, -1, float("nan"), float("inf"), True, "10"])
def test_bad_ttl(registry, ttl):
    with pytest.raises(ValueError, match="ttl"):
        registry.register(rec("Greeter", "1", node("a")), ttl=ttl)


def test_bad_records(registry):
    with pytest.raises(ValueError, match="nodes"):
        registry.register(rec("Greeter", "1"))
    with pytest.raises(ValueError, match="twice"):
        registry.register(rec("Greeter", "1", node("a"), node("a")))
    with pytest.raises(ValueError, match="address"):
        registry.register(rec("Greeter", "1", Node(id="a", address="")))
    with pytest.raises(ValueError):
        registry.register(rec("Greeter", "1", node("a"), metadata={"k": 1}))
    with pytest.raises(TypeError):
        registry.register({"name": "Greeter"})
    assert registry.list() == []
