"""The default registry on one machine: a private directory of JSON files.

No server, no multicast, works offline. Each registered node is one file::

    <dir>/<service>/<version>/<node id>.json

with every name escaped by :mod:`._paths` (any valid name is a safe file
name and maps back to itself); :mod:`._files` reads and writes them. A
file holds the node's registration (the record with only that node),
``expires`` (epoch seconds from the registry's clock, or null), ``changed``
(wall-clock ns of the last content change, which picks a version's
endpoints) and the writer's pid. Writers replace files
atomically (temporary file + ``os.replace``), so readers in other processes
never see half a file; readers delete (best effort) the expired and corrupt
files they meet, which is how a crashed (kill -9) service disappears.

Trust: the directory is created 0700 and refused unless it belongs to the
current user and is closed to group and others — clients will trust the
public keys found here. Inside it nothing is followed through a symlink:
every open is relative to a directory fd, with ``O_NOFOLLOW``.

A lost directory is an error, never "no nodes": it is created when the
registry is made and when a node registers (so the services' heartbeats
bring a deleted directory back), but a read (``get``, ``list``, a watcher's
poll) that finds it missing raises :class:`RegistryError`, and a client's
cache keeps serving what it knew (stale-on-error). A watcher that finds
the directory replaced (deleted, then made again by a heartbeat) keeps each
node it knew until that node's file comes back or its ``expires`` passes:
its service will write it again within its heartbeat period, so a
directory refilling itself never makes clients drop live nodes.
"""

from __future__ import annotations

import builtins
import contextlib
import logging
import os
import stat
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import msgspec

from ..security._files import foreign_owner
from . import _files
from ._shared import QueueWatcher, diff, merge
from .base import (
    Event,
    Registry,
    RegistryError,
    ServiceRecord,
    Watcher,
    check_name,
    check_record,
    check_ttl,
)

__all__ = ["EmbeddedRegistry", "default_path"]

log = logging.getLogger(__name__)

# File timestamps are coarse (a kernel tick). A file read less than this after
# its mtime may change again without its (ino, size, mtime, ctime) changing, so a
# watcher re-reads it (git's "racy clean" problem).
_RACY_NS = 2 * 10**9


def default_path() -> str:
    """``$ZMICRO_REGISTRY_DIR``, else ``${XDG_STATE_HOME:-~/.local/state}/zmicro/registry``."""
    explicit = os.environ.get("ZMICRO_REGISTRY_DIR")
    if explicit:
        return os.path.abspath(os.path.expanduser(explicit))
    state = os.environ.get("XDG_STATE_HOME", "")
    if not os.path.isabs(state):  # the XDG spec says to ignore a relative value
        state = os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(state, "zmicro", "registry")


class EmbeddedRegistry(Registry):
    """A :class:`Registry` shared by every process of the user on this machine.

    ``path`` defaults to :func:`default_path`; it is created (0700, parents
    too) and checked at construction and on every call, so a bad directory
    raises :class:`RegistryError` early and clearly. ``clock`` gives epoch
    seconds and decides expiry (inject one in tests; processes sharing a
    directory must share the wall clock). Watchers poll the directory every
    ``poll_interval`` seconds from one thread each; changes between two
    polls may merge (a node created and removed in between is not seen).
    """

    #: A 0700 directory of this user (checked on every call): no one else
    #: can write a record, so its keys are trusted.
    trusted = True

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        clock: Callable[[], float] = time.time,
        poll_interval: float = 0.2,
    ) -> None:
        if not poll_interval > 0:
            raise ValueError(f"poll_interval must be positive, not {poll_interval!r}")
        self._path = default_path() if path is None else os.path.abspath(os.fspath(path))
        self._clock = clock
        self._poll_interval = poll_interval
        self._lock = threading.Lock()
        self._watchers: list[_PollingWatcher] = []
        self._closed = False
        with self._opened_base(create=True):
            pass

    @property
    def path(self) -> str:
        return self._path

    @property
    def closed(self) -> bool:
        return self._closed

    def register(self, record: ServiceRecord, *, ttl: float | None = None) -> None:
        record = check_record(record, for_register=True)
        ttl = check_ttl(ttl)
        # The one operation that makes a lost directory again: the services'
        # heartbeats bring it (and themselves) back.
        with self._base("register", create=True) as base:
            expires = None if ttl is None else self._clock() + ttl
            for node in record.nodes:
                _files.write_node(base, msgspec.structs.replace(record, nodes=(node,)), expires)

    def deregister(self, record: ServiceRecord) -> None:
        record = check_record(record, for_register=False)
        if not os.path.lexists(self._path):
            self._check_open()
            return  # the directory is gone, and the node's file with it
        with self._base("deregister") as base:
            for node in record.nodes:
                _files.remove_node(base, record.name, record.version, node.id)

    def get(self, name: str) -> list[ServiceRecord]:
        check_name(name, "name")
        return self._read(name)

    def list(self) -> list[ServiceRecord]:
        return self._read(None)

    def watch(self, name: str | None = None) -> Watcher:
        if name is not None:
            check_name(name, "name")
        self._check_open()
        with self._errors("watch"):
            watcher = _PollingWatcher(self, name)
        with self._lock:
            if not self._closed:
                self._watchers.append(watcher)
                return watcher
        watcher.stop()
        raise RegistryError("the registry is closed")

    def close(self) -> None:
        with self._lock:
            self._closed = True
            watchers, self._watchers = self._watchers, []
        for watcher in watchers:
            watcher.stop()

    # -- internals --

    def _read(self, name: str | None) -> builtins.list[ServiceRecord]:  # (list: the method)
        groups: dict[tuple[str, str], list[tuple[int, ServiceRecord]]] = defaultdict(list)
        with self._base("read") as base:
            now = self._clock()
            for key, dir_fd, fname in _files.node_files(base, name, clean=True):
                entry, _ = _files.load(dir_fd, fname, key, reap_at=now)
                if entry is not None:
                    groups[key[:2]].append((entry.changed, entry.record))
        return [merge(groups[k]) for k in sorted(groups)]

    def _check_open(self) -> None:
        if self._closed:
            raise RegistryError("the registry is closed")

    def _forget(self, watcher: QueueWatcher) -> None:
        with self._lock:
            self._watchers = [w for w in self._watchers if w is not watcher]

    @contextlib.contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        try:
            yield
        except OSError as e:
            raise RegistryError(f"registry {self._path}: cannot {action}: {e}") from e

    @contextlib.contextmanager
    def _base(self, action: str, *, create: bool = False) -> Iterator[int]:
        """The checked registry directory as an fd, for one operation."""
        self._check_open()
        with self._errors(action), self._opened_base(create=create) as fd:
            yield fd

    @contextlib.contextmanager
    def _opened_base(self, *, create: bool) -> Iterator[int]:
        """The registry directory as an fd, checked; made first if missing
        and ``create``, else a missing one raises RegistryError: a deleted
        directory must not read as a registry without nodes."""
        # Opened (and checked) per operation rather than once: each call sees
        # the directory as it is now, and no fd outlives close().
        flags = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC  # the directory itself may be a symlink
        try:
            try:
                fd = os.open(self._path, flags)
            except FileNotFoundError:
                if not create:
                    raise RegistryError(
                        f"the registry directory {self._path} is missing (deleted?); "
                        f"it comes back when a service registers") from None
                _make_private_dirs(self._path)
                fd = os.open(self._path, flags)
        except OSError as e:
            raise RegistryError(f"cannot open the registry directory {self._path}: {e}") from e
        try:
            _check_private(fd, self._path)
            yield fd
        finally:
            os.close(fd)


# -- the directory itself ----------------------------------------------------------


def _make_private_dirs(path: str) -> None:
    missing = []
    while not os.path.lexists(path):
        missing.append(path)
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    try:
        for d in reversed(missing):
            try:
                os.mkdir(d, 0o700)
            except FileExistsError:  # another process won the race; it is checked on open
                continue
            os.chmod(d, 0o700)  # mkdir's mode went through the umask
    except OSError as e:
        raise RegistryError(f"cannot create the registry directory {missing[0]}: {e}") from e


def _check_private(fd: int, path: str) -> None:
    st = os.fstat(fd)
    problem = foreign_owner(st, path, "registry directory")
    if problem is not None:
        raise RegistryError(
            f"{problem}, so its records could come from another user; use a directory "
            f"of your own (ZMICRO_REGISTRY_DIR)"
        )
    if st.st_mode & 0o077:
        raise RegistryError(
            f"refusing the registry directory {path}: its mode {stat.S_IMODE(st.st_mode):04o} "
            f"lets group or others in, so another user could plant records; "
            f"run `chmod 700 {path}`"
        )


# -- watching ----------------------------------------------------------------------


@dataclass
class _Seen:
    sig: tuple[int, int, int, int]  # (ino, size, mtime_ns, ctime_ns) of what we read
    entry: _files.NodeFile | None  # None: unusable
    settled: bool  # read long enough after its mtime that a change must show in sig


_LOST = (-1, -1)  # a watcher's directory identity once it was seen missing


def _sig(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class _PollingWatcher(QueueWatcher):
    """Polls the directory from its own thread and turns differences into events."""

    def __init__(self, registry: EmbeddedRegistry, name: str | None) -> None:
        super().__init__(on_stop=registry._forget)
        self._registry = registry
        self._name = name
        self._seen: dict[tuple[str, str, str], _Seen] = {}
        self._live: dict[tuple[str, str, str], ServiceRecord] = {}
        # Nodes known from a directory since replaced, not yet written into
        # the new one, kept until they expire (the module docstring).
        self._carried: dict[tuple[str, str, str], _files.NodeFile] = {}
        self._dir: tuple[int, int] | None = None  # (st_dev, st_ino) of the directory read
        #: False while the directory cannot be read (a lookup cache then
        #: reports its records as stale, as for etcd's watcher).
        self.connected = True
        self._wake = threading.Event()
        # The baseline, taken before watch() returns: whatever happens after
        # that is a change this watcher reports.
        self._scan()
        self._thread = threading.Thread(
            target=self._run, name=f"zmicro-registry-watch({name or '*'})", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._wake.set()
        super().stop()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=30)

    def _run(self) -> None:
        failing = False
        while not self._wake.wait(self._registry._poll_interval):
            try:
                events = self._scan()
            except (RegistryError, OSError) as e:
                # No events: what was known stays known (stale-on-error). A
                # directory seen missing counts as replaced when it is back,
                # even if it got its old inode number again.
                if not os.path.lexists(self._registry.path):
                    self._dir = _LOST
                if not failing:  # once per outage, not every poll
                    log.warning("registry watcher cannot read %s: %s", self._registry.path, e)
                failing = True
                self.connected = False
                continue
            if failing:
                log.info("registry watcher reads %s again", self._registry.path)
            failing = False
            self.connected = True
            for event in events:
                self.push(event)

    def _scan(self) -> list[Event]:
        registry = self._registry
        seen_now: dict[tuple[str, str, str], _Seen] = {}
        with registry._opened_base(create=False) as base:
            dir_st = os.fstat(base)
            replaced = self._dir is not None and self._dir != (dir_st.st_dev, dir_st.st_ino)
            # (A directory deleted and made again between two polls with the
            # same inode number goes unnoticed: its missing nodes are dropped
            # until their services write them again.)
            self._dir = (dir_st.st_dev, dir_st.st_ino)
            now = registry._clock()
            started = time.time_ns()
            for key, dir_fd, fname in _files.node_files(base, self._name, clean=False):
                try:
                    sig = _sig(os.stat(fname, dir_fd=dir_fd, follow_symlinks=False))
                except OSError:
                    continue
                seen = self._seen.get(key)
                if seen is None or seen.sig != sig or not seen.settled:
                    entry, st = _files.load(dir_fd, fname, key, reap_at=None)
                    if st is None:
                        continue
                    seen = _Seen(_sig(st), entry, st.st_mtime_ns + _RACY_NS < started)
                seen_now[key] = seen
        carried = self._carried
        if replaced:
            # Files the new directory lacks were lost, not deregistered.
            carried = carried | {key: seen.entry for key, seen in self._seen.items()
                                 if seen.entry is not None and key in self._live}
        # Until its node writes it again, or it expires (no TTL: nobody
        # writes it again, so it is not kept).
        self._carried = {key: entry for key, entry in carried.items()
                         if key not in seen_now and entry.expires is not None
                         and entry.expires > now}
        live = {key: entry.record for key, entry in self._carried.items()}
        live.update(
            (key, seen.entry.record)
            for key, seen in seen_now.items()
            if seen.entry is not None and (seen.entry.expires is None or seen.entry.expires > now)
        )
        events = diff(self._live, live)
        self._seen, self._live = seen_now, live
        return events
