"""The key store's files: the one writer (whole or not at all, private from
the first byte) and the one owner check.

:func:`write_atomic` writes every file the store keeps (identities, public
certificates, allowlist entries, ``mac.keys``). Readers in other threads and
processes see the old file or the new one, never a part of it: the data
goes to a temporary file in the same directory (the same file system, so
the final rename is atomic), is fsynced, then takes the final name. The
temporary file is created 0600 and given its mode before any byte is
written, so a secret is never readable by others, not even for a moment.

Temporary names start with ``.tmp-`` and never end in ``.key``: the store's
readers skip names with a leading dot. Neither the final name nor a
temporary one is followed if it is a symlink: ``rename`` and ``link``
replace or refuse the name itself.

:func:`foreign_owner` is the one test of who owns a file zmicro trusts (the
key store, the identity, ``mac.keys``, the embedded registry's directory and
files): only the effective uid, **root included**. Root can read anyone's
files, which is exactly why it must not use them: a store another user
prepared (``ZMICRO_HOME`` or ``HOME`` pointing at it) would hand root that
user's identity and MAC secrets, and make it accept replies forged with
them.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import tempfile
from pathlib import Path

__all__ = ["TEMPORARY_PREFIX", "foreign_owner", "write_atomic"]

TEMPORARY_PREFIX = ".tmp-"


def write_atomic(path: str | os.PathLike[str], data: bytes, *, mode: int = 0o600,
                 replace: bool) -> bool:
    """Write ``data`` as ``path`` with exactly ``mode`` (whatever the umask),
    whole or not at all; the directory must exist.

    With ``replace``, an existing file is replaced and True returned.
    Without, the file is created only if no file (or symlink) has that name
    yet: when another thread or process created it first, theirs stays and
    False is returned. Raises OSError when the file cannot be written; no
    temporary file is left behind either way.
    """
    path = Path(path)
    # mkstemp: O_EXCL | O_NOFOLLOW, mode 0600 (less after the umask).
    fd, tmp = tempfile.mkstemp(prefix=f"{TEMPORARY_PREFIX}{path.name}.", dir=path.parent)
    try:
        try:
            os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        if replace:
            os.replace(tmp, path)
            return True
        try:
            os.link(tmp, path)  # unlike rename, refuses an existing name
        except FileExistsError:
            return False
        return True
    finally:
        # Gone after a replace; after a link or an error, ours to remove.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _uid_name(uid: int) -> str:
    """``uid 65534 (nobody)``, or just the uid when it has no name."""
    try:
        return f"uid {uid} ({pwd.getpwuid(uid).pw_name})"
    except KeyError:
        return f"uid {uid}"


def foreign_owner(st: os.stat_result, path: str | os.PathLike[str], what: str) -> str | None:
    """None when the effective uid owns ``st`` (the stat of ``path``); else
    why ``path`` is refused, naming it and its owner (uid and name), for the
    caller to raise with its own error type and advice. Root is no
    exception."""
    uid = os.geteuid()
    if st.st_uid == uid:
        return None
    return (f"refusing the {what} {os.fspath(path)}: it belongs to {_uid_name(st.st_uid)}, "
            f"not to you ({_uid_name(uid)})")
