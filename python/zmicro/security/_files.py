"""The one writer of the key store's files: whole or not at all, private from
the first byte.

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
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

__all__ = ["TEMPORARY_PREFIX", "write_atomic"]

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
