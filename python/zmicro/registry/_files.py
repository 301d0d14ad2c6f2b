"""The embedded registry's files: writing, reading and removing one node's file.

Layout and trust are described in :mod:`.embedded`. Every path is opened
relative to a directory fd, one component at a time, with ``O_NOFOLLOW``:
nothing here follows a symlink. Readers never raise for a file another
process wrote badly; they log it at debug level and move on.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import secrets
import stat
import time
from collections.abc import Iterator

import msgspec

from ..security._files import foreign_owner
from ._paths import FINAL, MORE, SUFFIX, decode, encode
from .base import ServiceRecord

__all__ = ["NodeFile", "load", "node_files", "open_dirs", "reap", "remove_node", "write_node"]

log = logging.getLogger(__name__)

_FORMAT = 1  # bump when the file layout changes; readers leave newer files alone
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: opening a planted FIFO must not hang a reader.
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
_WRITE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_MAX = 4 << 20  # endpoint schemas can be large; anything bigger is not ours
_TMP, _REAP = ".tmp-", ".reap-"  # our transient names; the leading "." keeps readers off them
_STALE_NS = 60 * 10**9  # a temporary file this old belongs to a writer that died
_WRITE_ATTEMPTS = 10  # a concurrent deregister may remove an empty directory we are about to use


class NodeFile(msgspec.Struct, kw_only=True):
    """What one node's file holds."""

    format: int  # _FORMAT
    record: ServiceRecord  # the registration, with exactly this node
    expires: float | None  # epoch seconds from the writer's clock; None: never
    changed: int  # time.time_ns() of the last content change: picks a version's endpoints
    pid: int  # the writer's, for people reading the directory


class _Format(msgspec.Struct):
    format: int = 0


_encode = msgspec.json.Encoder().encode
_decode_node = msgspec.json.Decoder(NodeFile).decode
_decode_format = msgspec.json.Decoder(_Format).decode


# -- paths -------------------------------------------------------------------------


def open_dirs(base: int, components: list[str], *, create: bool) -> int:
    """Open base/components... one level at a time, never through a symlink."""
    fd = os.dup(base)
    try:
        for comp in components:
            if create:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(comp, 0o700, dir_fd=fd)
            sub = os.open(comp, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = sub
    except BaseException:
        os.close(fd)
        raise
    return fd


def _node_path(name: str, version: str, node_id: str) -> tuple[list[str], str]:
    """The directories and the file name of a node."""
    id_comps = encode(node_id)
    return [*encode(name), *encode(version), *id_comps[:-1]], id_comps[-1] + SUFFIX


# -- writing -----------------------------------------------------------------------


def write_node(base: int, view: ServiceRecord, expires: float | None) -> None:
    dirs, fname = _node_path(view.name, view.version, view.nodes[0].id)
    for attempt in itertools.count(1):
        try:
            dir_fd = open_dirs(base, dirs, create=True)
            try:
                _replace_file(dir_fd, fname, view, expires)
                return
            finally:
                os.close(dir_fd)
        except FileNotFoundError:
            # A concurrent deregister pruned a directory on our path after we
            # made it (it was empty then); make it again.
            if attempt == _WRITE_ATTEMPTS:
                raise


def _replace_file(dir_fd: int, fname: str, view: ServiceRecord, expires: float | None) -> None:
    old, _ = load(dir_fd, fname, None, reap_at=None)
    # A heartbeat keeps `changed`, so it does not win the version's endpoints.
    changed = old.changed if old is not None and old.record == view else time.time_ns()
    data = _encode(
        NodeFile(format=_FORMAT, record=view, expires=expires, changed=changed, pid=os.getpid())
    )
    tmp = _TMP + secrets.token_hex(8)
    fd = os.open(tmp, _WRITE_FLAGS, 0o600, dir_fd=dir_fd)
    try:
        try:
            os.fchmod(fd, 0o600)  # exact, whatever the umask
            view_ = memoryview(data)
            while view_:
                view_ = view_[os.write(fd, view_):]
        finally:
            os.close(fd)
        os.replace(tmp, fname, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dir_fd)
        raise


def remove_node(base: int, name: str, version: str, node_id: str) -> None:
    dirs, fname = _node_path(name, version, node_id)
    try:
        dir_fd = open_dirs(base, dirs, create=False)
    except (FileNotFoundError, NotADirectoryError):
        return
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(fname, dir_fd=dir_fd)
    finally:
        os.close(dir_fd)
    _prune(base, dirs)


def _prune(base: int, dirs: list[str]) -> None:
    """Remove the empty directories of a path, deepest first (a writer may race us: it retries)."""
    for depth in range(len(dirs), 0, -1):
        try:
            parent = open_dirs(base, dirs[: depth - 1], create=False)
        except OSError:
            return
        try:
            os.rmdir(dirs[depth - 1], dir_fd=parent)
        except OSError:  # not empty, or gone: either way the rest is not ours to prune
            return
        finally:
            os.close(parent)


# -- reading -----------------------------------------------------------------------


class _Unusable(Exception):
    def __init__(self, why: str, *, deletable: bool) -> None:
        super().__init__(why)
        self.deletable = deletable


def _parse(fd: int, st: os.stat_result, fname: str, key: tuple[str, str, str] | None) -> NodeFile:
    if not stat.S_ISREG(st.st_mode):
        raise _Unusable("not a regular file", deletable=False)
    problem = foreign_owner(st, fname, "registry file")
    if problem is not None:
        raise _Unusable(problem, deletable=False)
    chunks, size = [], 0
    while size <= _FILE_MAX:
        chunk = os.read(fd, _FILE_MAX + 1 - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    if size > _FILE_MAX:
        raise _Unusable("too large", deletable=True)
    data = b"".join(chunks)
    try:
        entry = _decode_node(data)
    except msgspec.DecodeError as e:
        try:
            newer = _decode_format(data).format > _FORMAT
        except msgspec.DecodeError:
            newer = False
        if newer:  # a newer zmicro's file: not ours to judge
            raise _Unusable("written in a newer format", deletable=False) from None
        raise _Unusable(f"corrupt: {e}", deletable=True) from None
    nodes = entry.record.nodes
    if len(nodes) != 1:
        raise _Unusable("not exactly one node", deletable=True)
    if key is not None and key != (entry.record.name, entry.record.version, nodes[0].id):
        raise _Unusable("its content names another node than its path", deletable=True)
    return entry


def load(
    dir_fd: int, fname: str, key: tuple[str, str, str] | None, *, reap_at: float | None
) -> tuple[NodeFile | None, os.stat_result | None]:
    """Read one node file: (entry or None if unusable, its stat or None if it could not be opened).

    With ``reap_at`` (a clock time), expired entries count as unusable and
    are deleted along with corrupt ones.
    """
    try:
        fd = os.open(fname, _READ_FLAGS, dir_fd=dir_fd)
    except OSError:  # gone meanwhile, or a symlink (ELOOP): nothing to read
        return None, None
    try:
        st = os.fstat(fd)
        try:
            entry = _parse(fd, st, fname, key)
        except _Unusable as e:
            log.debug("registry file %s ignored: %s", fname, e)
            if reap_at is not None and e.deletable:
                reap(dir_fd, fname, st)
            return None, st
        if reap_at is not None and entry.expires is not None and entry.expires <= reap_at:
            reap(dir_fd, fname, st)
            return None, st
        return entry, st
    finally:
        # Closed only now: holding the file keeps its inode from being reused,
        # which reap relies on.
        os.close(fd)


def reap(dir_fd: int, fname: str, judged: os.stat_result) -> None:
    """Delete the file we judged dead, but not a fresh one its owner wrote since.

    Unlinking by name would race with the owner's heartbeat (it may have just
    replaced the file). So move the name aside, check that it is still the
    inode we read, and put it back when it is not.
    """
    tomb = _REAP + secrets.token_hex(8)
    try:
        os.rename(fname, tomb, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except OSError:
        return
    try:
        st = os.stat(tomb, dir_fd=dir_fd, follow_symlinks=False)
        if (st.st_dev, st.st_ino) != (judged.st_dev, judged.st_ino):
            # link() fails if an even newer file took the name: that one wins.
            with contextlib.suppress(OSError):
                os.link(tomb, fname, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tomb, dir_fd=dir_fd)


def _scandir(dir_fd: int) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(dir_fd) as it:
            return list(it)
    except OSError:  # removed meanwhile
        return []


def _walk(
    dir_fd: int, *, leaf: bool, clean: bool, prefix: tuple[str, ...] = ()
) -> Iterator[tuple[str, int, str]]:
    """Yield (name, fd of the directory holding its entry, entry name) for each
    name encoded under ``dir_fd``: directories, or node files when ``leaf``.
    The fd is valid until the generator resumes."""
    for entry in _scandir(dir_fd):
        fname = entry.name
        try:
            if fname.startswith(MORE) and entry.is_dir(follow_symlinks=False):
                sub = os.open(fname, _DIR_FLAGS, dir_fd=dir_fd)
            elif fname.startswith(FINAL):
                sub = None
                if leaf:
                    ok = fname.endswith(SUFFIX) and entry.is_file(follow_symlinks=False)
                    comp = fname[: -len(SUFFIX)]
                else:
                    ok, comp = entry.is_dir(follow_symlinks=False), fname
                if not ok:
                    continue
            else:
                if clean and fname.startswith((_TMP, _REAP)):
                    _remove_if_stale(dir_fd, entry)
                continue
        except OSError:
            continue
        if sub is not None:
            try:
                yield from _walk(sub, leaf=leaf, clean=clean, prefix=(*prefix, fname))
            finally:
                os.close(sub)
            continue
        try:
            name = decode((*prefix, comp))
        except ValueError as e:
            log.debug("registry entry %s ignored: %s", fname, e)
            continue
        yield name, dir_fd, fname


def _remove_if_stale(dir_fd: int, entry: os.DirEntry[str]) -> None:
    with contextlib.suppress(OSError):
        if entry.stat(follow_symlinks=False).st_mtime_ns < time.time_ns() - _STALE_NS:
            os.unlink(entry.name, dir_fd=dir_fd)


def _subdirs(dir_fd: int, *, clean: bool) -> Iterator[tuple[str, int]]:
    for name, parent, fname in _walk(dir_fd, leaf=False, clean=clean):
        try:
            fd = os.open(fname, _DIR_FLAGS, dir_fd=parent)
        except OSError:
            continue
        try:
            yield name, fd
        finally:
            os.close(fd)


def _service_dir(base: int, name: str) -> Iterator[tuple[str, int]]:
    try:
        fd = open_dirs(base, encode(name), create=False)
    except OSError:  # absent, or not a plain directory
        return
    try:
        yield name, fd
    finally:
        os.close(fd)


def node_files(
    base: int, name: str | None, *, clean: bool
) -> Iterator[tuple[tuple[str, str, str], int, str]]:
    """Yield ((service, version, node id), directory fd, file name) of every node file."""
    services = _subdirs(base, clean=clean) if name is None else _service_dir(base, name)
    for service, service_fd in services:
        for version, version_fd in _subdirs(service_fd, clean=clean):
            for node_id, dir_fd, fname in _walk(version_fd, leaf=True, clean=clean):
                if service and node_id:
                    yield (service, version, node_id), dir_fd, fname
