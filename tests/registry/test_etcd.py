"""What the etcd registry does beyond the contract: one lease with keep-alive,
healing after etcd restarts or loses the lease, deregistering on close,
trust only with authentication, errors that name no secret.

These run against the real server of the ``etcd_server`` fixture; waits
are bounded polls (WAIT seconds), never a sleep that hopes.
"""

from __future__ import annotations

import sys

import pytest

from zmicro.registry import EtcdRegistry, EventType, Node, RegistryError, ServiceRecord
from zmicro.registry._etcd_client import parse_endpoints, range_end

from ..helpers import WAIT, eventually


def rec(name: str, *node_ids: str, version: str = "1") -> ServiceRecord:
    nodes = tuple(Node(id=i, address=f"tcp://127.0.0.1:{6000 + len(i)}") for i in node_ids)
    return ServiceRecord(name=name, version=version, nodes=nodes)


@pytest.fixture
def make(etcd_endpoint, etcd_prefix):
    made = []

    def make(**kw) -> EtcdRegistry:
        kw.setdefault("prefix", etcd_prefix)
        reg = EtcdRegistry(etcd_endpoint, **kw)
        made.append(reg)
        return reg

    yield make
    for reg in made:
        reg.close()


def node_ids(registry: EtcdRegistry, name: str) -> list[str]:
    return sorted(n.id for r in registry.get(name) for n in r.nodes)


def test_one_lease_shared_by_every_registration(make, etcd_server, etcd_prefix):
    reg = make(ttl=5)
    assert reg.lease_id is None  # nothing leased yet
    reg.register(rec("A", "a1", "a2"), ttl=5)
    reg.register(rec("B", "b1"), ttl=30)  # a different ttl: still the same lease
    reg.register(rec("C", "c1"))  # no ttl: no lease
    keys = etcd_server.keys(etcd_prefix)
    assert len(keys) == 4
    leases = {k.rsplit("/", 1)[1]: v["lease"] for k, v in keys.items()}
    assert leases["a1"] == leases["a2"] == leases["b1"] == reg.lease_id != 0
    assert leases["c1"] == 0
    assert reg.lease_id in etcd_server.leases()
    # A second registry object (another process, say) has a lease of its own.
    other = make(ttl=5)
    other.register(rec("A", "a3"), ttl=5)
    assert other.lease_id not in (None, reg.lease_id)


def test_keep_alive_outlives_the_ttl(make, etcd_server, etcd_prefix):
    reg = make(ttl=3)
    reg.register(rec("Kept", "kept"), ttl=3)
    # The control: a key on a lease of the same TTL that nobody refreshes, put after ours.
    lease = etcd_server.grant(3)
    etcd_server.put(etcd_prefix + "control", b"x", lease)
    eventually(lambda: etcd_prefix + "control" not in etcd_server.keys(etcd_prefix),
               "the unrefreshed control key expires")
    # It expired, so more than 3 s passed since ours was registered: only the
    # keep-alive explains that ours is still there.
    assert node_ids(reg, "Kept") == ["kept"]


def test_reregisters_after_the_lease_is_revoked(make, etcd_server, etcd_prefix):
    reg = make(ttl=3)  # keep-alive every second
    reg.register(rec("A", "a1", "a2"), ttl=3)
    reg.register(rec("B", "b1"), ttl=3)
    first = reg.lease_id
    watcher = make().watch("A")
    etcd_server.revoke(first)  # behind the registry's back: its keys go at once
    assert etcd_server.keys(etcd_prefix) == {}
    gone = {watcher.next(timeout=WAIT).record.nodes[0].id for _ in range(2)}
    assert gone == {"a1", "a2"}
    # The keep-alive thread notices and puts everything back under a new lease.
    eventually(lambda: len(etcd_server.keys(etcd_prefix)) == 3, "the nodes are registered again")
    assert reg.lease_id not in (None, first)
    assert {v["lease"] for v in etcd_server.keys(etcd_prefix).values()} == {reg.lease_id}
    assert node_ids(reg, "A") == ["a1", "a2"]
    back = [watcher.next(timeout=WAIT) for _ in range(2)]
    assert {(e.type, e.record.nodes[0].id) for e in back} == {
        (EventType.CREATE, "a1"), (EventType.CREATE, "a2")
    }


def test_heartbeats_write_nothing_changes_do(make, etcd_server, etcd_prefix):
    reg = make(ttl=5)
    reg.register(rec("A", "a1"), ttl=5)
    [before] = etcd_server.keys(etcd_prefix).values()
    for _ in range(3):
        reg.register(rec("A", "a1"), ttl=5)  # what a service does every ttl/3
    assert list(etcd_server.keys(etcd_prefix).values()) == [before]
    reg.register(ServiceRecord(name="A", version="1", metadata={"new": "yes"},
                               nodes=rec("A", "a1").nodes), ttl=5)
    [after] = etcd_server.keys(etcd_prefix).values()
    assert after["mod_revision"] > before["mod_revision"]
    assert reg.get("A")[0].metadata == {"new": "yes"}


def test_refresh_reports_a_lost_lease(make, etcd_server, etcd_prefix):
    reg = make(ttl=600)  # the thread would wait 200 s: refresh() is called here
    reg.register(rec("A", "a1"), ttl=600)
    assert reg.refresh() is True
    etcd_server.revoke(reg.lease_id)
    assert reg.refresh() is False
    assert node_ids(reg, "A") == ["a1"]
    assert reg.refresh() is True


def test_survives_an_etcd_restart(make, etcd_server):
    reg = make(ttl=3)
    reg.register(rec("A", "a1"), ttl=3)
    watcher = reg.watch("A")
    etcd_server.stop()
    with pytest.raises(RegistryError, match="unreachable"):
        reg.get("A")
    etcd_server.start()
    assert node_ids(reg, "A") == ["a1"]
    # The watcher reconnected by itself: a change made now reaches it.
    other = make()
    other.register(rec("A", "a2"))
    event = watcher.next(timeout=WAIT)
    assert (event.type, event.record.nodes[0].id) == (EventType.CREATE, "a2")


def test_reregisters_after_etcd_lost_its_data(make, etcd_server, etcd_prefix):
    reg = make(ttl=3)
    reg.register(rec("A", "a1"), ttl=3)
    reg.register(rec("B", "b1"), ttl=3)
    watcher = reg.watch()
    etcd_server.wipe()  # a new, empty etcd at the same address
    eventually(lambda: len(etcd_server.keys(etcd_prefix)) == 2, "the nodes are registered again")
    assert node_ids(reg, "A") == ["a1"] and node_ids(reg, "B") == ["b1"]
    # The watcher followed: a later change is seen, and nothing was reported
    # for nodes that are back as they were (or, if it noticed the gap, a
    # DELETE then a CREATE of the same node).
    make().register(rec("C", "c1"))
    seen = []
    while not seen or seen[-1] != (EventType.CREATE, "c1"):
        event = watcher.next(timeout=WAIT)
        assert event is not None, f"no CREATE for c1; saw {seen}"
        seen.append((event.type, event.record.nodes[0].id))


def test_close_deregisters(make, etcd_server, etcd_prefix):
    reg = make(ttl=5)
    reg.register(rec("A", "a1"), ttl=5)
    reg.register(rec("B", "b1"))  # without lease
    lease = reg.lease_id
    other = make()
    other.register(rec("A", "other"))
    reg.close()
    assert [k.rsplit("/", 1)[1] for k in etcd_server.keys(etcd_prefix)] == ["other"]
    assert lease not in etcd_server.leases()


def test_deregister_removes_only_those_nodes(make, etcd_server, etcd_prefix):
    reg = make()
    reg.register(rec("A", "a1", "a2"), ttl=5)
    reg.deregister(rec("A", "a1"))
    assert node_ids(reg, "A") == ["a2"]
    reg.close()
    assert etcd_server.keys(etcd_prefix) == {}


def test_unreachable_is_a_registry_error(unused_tcp_port):
    with pytest.raises(RegistryError, match=rf"127\.0\.0\.1:{unused_tcp_port}.*unreachable"):
        EtcdRegistry(f"http://127.0.0.1:{unused_tcp_port}", timeout=2)


def test_second_endpoint_takes_over(etcd_endpoint, etcd_prefix, unused_tcp_port):
    reg = EtcdRegistry([f"http://127.0.0.1:{unused_tcp_port}", etcd_endpoint], prefix=etcd_prefix)
    try:
        reg.register(rec("A", "a1"), ttl=5)
        assert node_ids(reg, "A") == ["a1"]
        assert reg.endpoint == etcd_endpoint
    finally:
        reg.close()


def test_foreign_keys_are_ignored(make, etcd_server, etcd_prefix):
    reg = make()
    etcd_server.put(etcd_prefix + "A/1/junk", b"not json")
    etcd_server.put(etcd_prefix + "A/1/liar", b'{"record": {"name": "B", "nodes": []}, "changed": 1}')
    etcd_server.put(etcd_prefix + "stray", b"{}")
    reg.register(rec("A", "a1"))
    assert node_ids(reg, "A") == ["a1"]
    assert [r.name for r in reg.list()] == ["A"]


def test_authentication_makes_it_trusted(etcd_server, etcd_endpoint, etcd_prefix):
    password = "s3cret-pw-etcd"
    plain = EtcdRegistry(etcd_endpoint, prefix=etcd_prefix)
    assert plain.trusted is False
    plain.close()
    etcd_server.enable_auth(password)
    try:
        reg = EtcdRegistry(etcd_endpoint, prefix=etcd_prefix, username="root", password=password)
        try:
            assert reg.trusted is True
            reg.register(rec("A", "a1"), ttl=5)
            with reg.watch("A") as watcher:
                reg.register(rec("A", "a2"), ttl=5)
                assert watcher.next(timeout=WAIT).record.nodes[0].id == "a2"
            assert node_ids(reg, "A") == ["a1", "a2"]
            assert reg.refresh() is True
            # A token etcd no longer knows (expired, say) is renewed on the next call.
            for client in reg._client._clients:
                client.session.headers["Authorization"] = "expired.token"
            assert node_ids(reg, "A") == ["a1", "a2"]
            assert reg._client._clients[0].session.headers["Authorization"] != "expired.token"
            for client in reg._client._clients:
                client.session.headers["Authorization"] = "expired.token"
            with reg.watch("A") as watcher:  # and when a watch opens
                reg.deregister(rec("A", "a2"))
                assert watcher.next(timeout=WAIT).type is EventType.DELETE
        finally:
            reg.close()
        with pytest.raises(RegistryError, match="authentication failed") as info:
            EtcdRegistry(etcd_endpoint, prefix=etcd_prefix, username="root", password="wrong-" + password)
        assert password not in str(info.value)
        with pytest.raises(RegistryError, match="user name is empty"):
            EtcdRegistry(etcd_endpoint, prefix=etcd_prefix).get("A")
    finally:
        etcd_server.disable_auth()


def test_username_without_auth_on_the_server_is_refused(etcd_endpoint, etcd_prefix):
    with pytest.raises(RegistryError, match="authentication is not enabled") as info:
        EtcdRegistry(etcd_endpoint, prefix=etcd_prefix, username="root", password="pw-xyz")
    assert "pw-xyz" not in str(info.value)


@pytest.mark.parametrize("kw, field", [
    (dict(ttl=1), "ttl"), (dict(ttl=0), "ttl"), (dict(timeout=0), "timeout"),
    (dict(prefix=""), "prefix"), (dict(prefix="\ud800"), "prefix"), (dict(username="root"), "username"),
    (dict(username="", password="x"), "username"), (dict(username="root", password=1), "password"),
])
def test_bad_arguments(kw, field):
    with pytest.raises(ValueError, match=field):
        EtcdRegistry("http://127.0.0.1:1", **kw)


def test_parse_endpoints():
    assert parse_endpoints("10.0.0.1:2379, https://h:2380") == [
        ("http", "10.0.0.1", 2379), ("https", "h", 2380)
    ]
    assert parse_endpoints(["http://h"]) == [("http", "h", 2379)]
    for bad in ["", "ftp://h:1", "http://u:p@h:1", "http://h:notaport", "http://h:1/x", ","]:
        with pytest.raises(ValueError, match="endpoints"):
            parse_endpoints(bad)


def test_credentials_in_an_endpoint_are_not_echoed():
    with pytest.raises(ValueError) as info:
        parse_endpoints("http://root:hunter2@h:2379")
    assert "hunter2" not in str(info.value)


def testrange_end():
    assert range_end(b"/a/") == b"/a0"
    assert range_end(b"a\xff") == b"b"
    assert range_end(b"\xff\xff") == b"\0"


CRASHING_SERVICE = """
import os, sys
from zmicro.registry import EtcdRegistry, Node, ServiceRecord
reg = EtcdRegistry(sys.argv[1], prefix=sys.argv[2], ttl=2)
reg.register(ServiceRecord(name="Crash", nodes=(Node(id="doomed", address="tcp://127.0.0.1:1"),)), ttl=2)
print(reg.lease_id, flush=True)
os._exit(0)  # no close(): the lease is left to expire, as after kill -9
"""


def test_a_dead_process_nodes_expire_with_its_lease(make, etcd_endpoint, etcd_prefix):
    import subprocess
    import sys

    reg = make()
    with reg.watch("Crash") as watcher:
        out = subprocess.run([sys.executable, "-c", CRASHING_SERVICE, etcd_endpoint, etcd_prefix],
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        created = watcher.next(timeout=WAIT)
        assert (created.type, created.record.nodes[0].id) == (EventType.CREATE, "doomed")
        deleted = watcher.next(timeout=WAIT)  # etcd expires the lease ~2 s later
        assert (deleted.type, deleted.record.nodes[0].id) == (EventType.DELETE, "doomed")
    assert reg.get("Crash") == []


def test_without_the_client_library_the_error_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "etcd3gw", None)  # makes `import etcd3gw` fail
    with pytest.raises(RegistryError, match=r"zmicro\[etcd\]"):
        EtcdRegistry("http://127.0.0.1:1")
