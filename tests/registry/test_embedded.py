"""What is particular to the embedded registry: its directory, files and trust."""

from __future__ import annotations

import json
import logging
import os
import stat
from pathlib import Path

import pytest

import zmicro.registry as registry_pkg
from zmicro.registry import (
    EmbeddedRegistry,
    EventType,
    Node,
    RegistryError,
    ServiceRecord,
    default_registry,
)
from zmicro.registry import _files, embedded
from zmicro.registry._paths import encode
from zmicro.registry.cache import RegistryCache

from ..helpers import eventually


WAIT = 10.0


def rec(name="Greeter", version="1.0", node_id="a", **kw) -> ServiceRecord:
    nodes = (Node(id=node_id, address="tcp://127.0.0.1:1"),)
    return ServiceRecord(name=name, version=version, nodes=nodes, **kw)


def node_file(base: Path, name: str, version: str, node_id: str) -> Path:
    *dirs, last = [*encode(name), *encode(version), *encode(node_id)]
    return base.joinpath(*dirs, last + ".json")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


@pytest.fixture
def base(tmp_path) -> Path:
    return tmp_path / "registry"


@pytest.fixture
def reg(base, clock):
    r = EmbeddedRegistry(base, clock=clock, poll_interval=0.02)
    yield r
    r.close()


@pytest.fixture
def umask():
    """Set the process umask for one test (the registry must not depend on it)."""
    saved = os.umask(0o022)
    os.umask(saved)
    yield os.umask
    os.umask(saved)


# -- the directory ---------------------------------------------------------------


@pytest.mark.parametrize("mask", [0o000, 0o022, 0o077])
def test_directory_and_parents_created_0700(tmp_path, umask, mask):
    umask(mask)
    base = tmp_path / "a" / "b" / "registry"
    EmbeddedRegistry(base).close()
    assert [mode(p) for p in (tmp_path / "a", tmp_path / "a" / "b", base)] == [0o700] * 3
    assert mode(tmp_path) == 0o700  # existing parents are left alone (pytest made this one)


@pytest.mark.parametrize("bits", [0o755, 0o750, 0o705, 0o710, 0o701, 0o770])
def test_group_or_other_access_refused(tmp_path, bits):
    base = tmp_path / "registry"
    base.mkdir()
    base.chmod(bits)
    with pytest.raises(RegistryError, match=rf"mode {bits:04o}.*chmod 700 {base}"):
        EmbeddedRegistry(base)


def test_permissions_checked_on_every_call(reg, base):
    reg.register(rec())
    base.chmod(0o755)
    for call in (lambda: reg.register(rec()), lambda: reg.get("Greeter"), reg.list, reg.watch):
        with pytest.raises(RegistryError, match="group or others"):
            call()
    base.chmod(0o700)
    assert len(reg.get("Greeter")) == 1


def test_other_owner_refused(tmp_path, monkeypatch):
    base = tmp_path / "registry"
    base.mkdir(mode=0o700)
    if os.geteuid() == 0:
        os.chown(base, 65534, 65534)
    else:
        uid = os.geteuid()
        monkeypatch.setattr(os, "geteuid", lambda: uid + 1)
    with pytest.raises(RegistryError, match="belongs to uid"):
        EmbeddedRegistry(base)


def test_not_a_directory_refused(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(RegistryError, match="cannot open"):
        EmbeddedRegistry(tmp_path / "file")


def test_directory_may_be_a_symlink_to_a_private_one(tmp_path):
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    (tmp_path / "link").symlink_to(real)
    with EmbeddedRegistry(tmp_path / "link") as reg:
        reg.register(rec())
    assert node_file(real, "Greeter", "1.0", "a").exists()


def remove_tree(base: Path) -> None:
    for path in sorted(base.rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    base.rmdir()


def test_a_deleted_directory_is_an_error_until_a_node_registers(reg, base):
    """Deleted under running services, the directory must not read as "no
    nodes" (issue 10.11): a read raises, and a client's cache keeps what it
    knew; the services' next heartbeat makes it again."""
    reg.register(rec(node_id="a"))
    remove_tree(base)
    with pytest.raises(RegistryError, match="missing"):
        reg.get("Greeter")
    with pytest.raises(RegistryError, match="missing"):
        reg.list()
    with pytest.raises(RegistryError, match="missing"):
        reg.watch("Greeter")
    reg.deregister(rec(node_id="a"))  # nothing to remove: no error, no directory made
    assert not base.exists()
    reg.register(rec(node_id="b"))
    assert mode(base) == 0o700
    assert [n.id for n in reg.get("Greeter")[0].nodes] == ["b"]


def test_a_watcher_keeps_its_nodes_while_the_directory_is_gone(reg, base):
    reg.register(rec(node_id="a"), ttl=30)
    with reg.watch("Greeter") as watcher:
        remove_tree(base)
        eventually(lambda: not watcher.connected, "the watcher notices", timeout=WAIT)
        assert watcher.next(timeout=0.2) is None  # no DELETE: stale, not empty
        reg.register(rec(node_id="a"), ttl=30)  # the heartbeat brings it back
        eventually(lambda: watcher.connected, "the watcher reads again", timeout=WAIT)
        assert watcher.next(timeout=0.2) is None  # the same node: nothing changed


def test_a_refilling_directory_drops_no_live_node(reg, base, clock):
    """Deleted, then made again by one node's heartbeat: the nodes not yet
    written again are kept until they expire (their services write them
    within their heartbeat period), not dropped at once."""
    reg.register(rec(node_id="a"), ttl=30)
    reg.register(rec(node_id="b"), ttl=30)
    with reg.watch("Greeter") as watcher:
        remove_tree(base)
        eventually(lambda: not watcher.connected, "the watcher notices", timeout=WAIT)
        reg.register(rec(node_id="a"), ttl=30)  # a's heartbeat comes first
        eventually(lambda: watcher.connected, "the watcher reads again", timeout=WAIT)
        assert watcher.next(timeout=0.2) is None  # b is kept
        clock.advance(31)  # b never came back: it expires as a killed node does
        reg.register(rec(node_id="a"), ttl=30)
        event = watcher.next(timeout=WAIT)
        assert event is not None and event.type is EventType.DELETE
        assert [n.id for n in event.record.nodes] == ["b"]
        reg.deregister(rec(node_id="a"))  # a deregistration is seen as ever
        event = watcher.next(timeout=WAIT)
        assert event is not None and event.type is EventType.DELETE
        assert [n.id for n in event.record.nodes] == ["a"]


def test_a_cache_serves_the_last_view_while_the_directory_is_gone(reg, base):
    reg.register(rec(node_id="a"), ttl=30)
    with RegistryCache(reg) as cache:
        assert [n.id for n in cache.get("Greeter")[0].nodes] == ["a"]
        remove_tree(base)
        eventually(lambda: cache.is_stale("Greeter"), "the cache knows it is stale",
                   timeout=WAIT)
        assert [n.id for n in cache.get("Greeter")[0].nodes] == ["a"]
        reg.register(rec(node_id="a"), ttl=30)
        eventually(lambda: not cache.is_stale("Greeter"), "fresh again", timeout=WAIT)
        assert [n.id for n in cache.get("Greeter")[0].nodes] == ["a"]


# -- the files ---------------------------------------------------------------------


@pytest.mark.parametrize("mask", [0o000, 0o077])
def test_files_0600_directories_0700(reg, base, umask, mask):
    umask(mask)
    reg.register(rec("Greeter", "1.0", "a"))
    reg.register(rec("x" * 255, "é" * 127, "\U0001f600" * 63))  # nested continuation dirs
    files = [p for p in base.rglob("*") if p.is_file()]
    dirs = [p for p in base.rglob("*") if p.is_dir()]
    assert len(files) == 2 and len(dirs) > 4
    assert {mode(p) for p in files} == {0o600}
    assert {mode(p) for p in dirs} == {0o700}


def test_file_content(reg, base, clock):
    reg.register(rec("Greeter", "1.0", "a", metadata={"k": "v"}), ttl=30)
    data = json.loads(node_file(base, "Greeter", "1.0", "a").read_bytes())
    assert data["expires"] == clock() + 30
    assert data["pid"] == os.getpid()
    assert data["record"]["name"] == "Greeter" and len(data["record"]["nodes"]) == 1
    assert not [p for p in base.rglob(".*")]  # no temporary file left behind


def test_one_file_per_node(reg, base):
    record = ServiceRecord(
        name="Greeter",
        nodes=(Node(id="a", address="tcp://h:1"), Node(id="b", address="tcp://h:2")),
    )
    reg.register(record)
    assert node_file(base, "Greeter", "", "a").exists() and node_file(base, "Greeter", "", "b").exists()
    reg.deregister(record)
    assert list(base.iterdir()) == []  # empty directories pruned too


def test_expired_files_deleted_on_read(reg, base, clock):
    reg.register(rec(node_id="a"), ttl=5)
    reg.register(rec(node_id="b"), ttl=50)
    clock.advance(10)
    assert [n.id for n in reg.get("Greeter")[0].nodes] == ["b"]
    assert not node_file(base, "Greeter", "1.0", "a").exists()
    assert node_file(base, "Greeter", "1.0", "b").exists()


def _plant(directory: Path, name: str, content: bytes | str) -> Path:
    path = directory / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    path.chmod(0o600)
    return path


def test_corrupt_and_half_written_files_ignored(reg, base, caplog):
    reg.register(rec(node_id="good"), ttl=60)
    good = node_file(base, "Greeter", "1.0", "good")
    text = good.read_text()
    d = good.parent
    removable = [
        _plant(d, "=garbage.json", b"\x00\xff not json"),
        _plant(d, "=truncated.json", text[: len(text) // 2]),
        _plant(d, "=schema.json", json.dumps({"format": 1, "record": "nope"})),
        _plant(d, "=empty.json", b""),
        _plant(d, "=misplaced.json", text),  # content names node "good"
    ]
    kept = [
        _plant(d, ".tmp-0123456789abcdef", text[:10]),  # a writer mid-way: not ours to judge yet
        _plant(d, "=newer.json", json.dumps({"format": 99, "anything": []})),
        _plant(d, "=%zz.json", text),  # not a name we would write: never read
        _plant(d, "notes.txt", "hello"),
    ]
    with caplog.at_level(logging.DEBUG, logger="zmicro.registry"):
        [got] = reg.get("Greeter")
        assert [n.id for n in got.nodes] == ["good"]
        assert [r.name for r in reg.list()] == ["Greeter"]
    assert "corrupt" in caplog.text
    assert [p.exists() for p in removable] == [False] * len(removable)
    assert [p.exists() for p in kept] == [True] * len(kept)


def test_corrupt_files_do_not_disturb_watchers(reg, base):
    reg.register(rec(node_id="a"))
    with reg.watch() as watcher:
        _plant(node_file(base, "Greeter", "1.0", "a").parent, "=junk.json", "{")
        reg.register(rec(node_id="b"))
        event = watcher.next(timeout=WAIT)
        assert (event.type, [n.id for n in event.record.nodes]) == (EventType.CREATE, ["b"])


def test_stale_temporary_files_removed(reg, base):
    reg.register(rec())
    d = node_file(base, "Greeter", "1.0", "a").parent
    old = _plant(d, ".tmp-00000000000000aa", "{")
    fresh = _plant(d, ".tmp-00000000000000bb", "{")
    os.utime(old, (0, 0))
    reg.get("Greeter")
    assert not old.exists() and fresh.exists()


def test_files_of_another_owner_ignored(reg, base):
    if os.geteuid() != 0:
        pytest.skip("needs root to give a file away")
    reg.register(rec(node_id="a"))
    path = node_file(base, "Greeter", "1.0", "a")
    os.chown(path, 65534, 65534)
    assert reg.get("Greeter") == []
    assert path.exists()  # not ours to delete


def test_symlinks_never_followed(reg, base, tmp_path):
    # A complete, valid tree outside the registry...
    with EmbeddedRegistry(tmp_path / "outside") as other:
        other.register(rec("Evil", "1", "e"))
        other.register(rec("Greeter", "6.6.6", "e"))
        other.register(rec("Greeter", "1.0", "e"))
    outside = tmp_path / "outside"
    reg.register(rec("Greeter", "1.0", "a"))
    version_dir = node_file(base, "Greeter", "1.0", "a").parent
    # ...linked in as a service, as a version, and as a node file.
    (base / encode("Evil")[0]).symlink_to(outside / encode("Evil")[0])
    (version_dir.parent / encode("6.6.6")[0]).symlink_to(outside / encode("Greeter")[0] / encode("6.6.6")[0])
    (version_dir / (encode("e")[0] + ".json")).symlink_to(node_file(outside, "Greeter", "1.0", "e"))

    assert reg.get("Evil") == []
    assert [(r.name, r.version, [n.id for n in r.nodes]) for r in reg.list()] == [("Greeter", "1.0", ["a"])]
    with pytest.raises(RegistryError):
        reg.register(rec("Evil", "1", "mine"))  # would write through the link
    assert not node_file(outside, "Evil", "1", "mine").exists()
    with reg.watch() as watcher:
        reg.register(rec("Greeter", "1.0", "b"))
        event = watcher.next(timeout=WAIT)
        assert [n.id for n in event.record.nodes] == ["b"]


def test_reap_spares_a_file_refreshed_meanwhile(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    _plant(d, "=n.json", "old")
    judged = os.stat(d / "=n.json")
    keep_alive = open(d / "=n.json")  # noqa: SIM115  (holds the old inode, as _load does)
    fresh = _plant(d, ".tmp-1", "fresh")
    os.replace(fresh, d / "=n.json")
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    try:
        _files.reap(fd, "=n.json", judged)
        assert (d / "=n.json").read_text() == "fresh"
        _files.reap(fd, "=n.json", os.stat(d / "=n.json"))
        assert not (d / "=n.json").exists()
        assert os.listdir(d) == []
    finally:
        os.close(fd)
        keep_alive.close()


# -- watching ----------------------------------------------------------------------


def test_watcher_stop_is_prompt(base):
    with EmbeddedRegistry(base, poll_interval=3600) as reg:
        watcher = reg.watch()
        watcher.stop()  # must not wait for the hour-long poll
        assert not watcher._thread.is_alive()
        watchers = [reg.watch("A"), reg.watch()]
    assert not any(w._thread.is_alive() for w in watchers)  # close() stopped them


def test_two_instances_share_the_directory(base, clock):
    with EmbeddedRegistry(base, clock=clock, poll_interval=0.02) as one, \
         EmbeddedRegistry(base, clock=clock, poll_interval=0.02) as two, \
         two.watch("Greeter") as watcher:
        one.register(rec(node_id="a"), ttl=10)
        assert [n.id for n in two.get("Greeter")[0].nodes] == ["a"]
        assert watcher.next(timeout=WAIT).type == EventType.CREATE
        one.register(rec(node_id="a", metadata={"changed": "yes"}), ttl=10)
        event = watcher.next(timeout=WAIT)
        assert (event.type, event.record.metadata) == (EventType.UPDATE, {"changed": "yes"})
        clock.advance(11)
        assert watcher.next(timeout=WAIT).type == EventType.DELETE


def test_poll_interval_validated(base):
    with pytest.raises(ValueError, match="poll_interval"):
        EmbeddedRegistry(base, poll_interval=0)


# -- the default directory and registry ------------------------------------------------


def test_default_path_from_env(tmp_path, monkeypatch):
    monkeypatch.setenv("ZMICRO_REGISTRY_DIR", str(tmp_path / "explicit"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    with EmbeddedRegistry() as reg:
        assert reg.path == str(tmp_path / "explicit")
    assert mode(tmp_path / "explicit") == 0o700


def test_default_path_xdg_then_home(tmp_path, monkeypatch):
    monkeypatch.delenv("ZMICRO_REGISTRY_DIR", raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    assert embedded.default_path() == str(tmp_path / "state" / "zmicro" / "registry")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    expected = tmp_path / "home" / ".local" / "state" / "zmicro" / "registry"
    for xdg in ("", "relative/ignored"):
        monkeypatch.setenv("XDG_STATE_HOME", xdg)
        assert embedded.default_path() == str(expected)
    (tmp_path / "home").mkdir()
    EmbeddedRegistry().close()
    # registry, zmicro, state and .local were made; home was there
    assert [mode(p) for p in (expected, *expected.parents[:3])] == [0o700] * 4


@pytest.fixture
def fresh_default(tmp_path, monkeypatch):
    monkeypatch.setenv("ZMICRO_REGISTRY_DIR", str(tmp_path / "default"))
    monkeypatch.setattr(registry_pkg, "_default", None)
    yield
    if registry_pkg._default is not None:
        registry_pkg._default.close()


def test_default_registry_is_shared(fresh_default, tmp_path):
    reg = default_registry()
    assert isinstance(reg, EmbeddedRegistry) and reg.path == str(tmp_path / "default")
    assert default_registry() is reg
    reg.close()
    assert default_registry() is not reg  # a closed one is replaced


def test_default_registry_per_process(fresh_default):
    parent = default_registry()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report, then leave without running pytest's teardown
        try:
            child = default_registry()
            ok = child is not parent and default_registry() is child and not child.closed
            os.write(write, b"1" if ok else b"0")
        finally:
            os._exit(0)
    os.close(write)
    try:
        assert os.read(read, 1) == b"1"
    finally:
        os.close(read)
        os.waitpid(pid, 0)
    assert default_registry() is parent

