"""Curve keys: the user's key store, its identity and the trusted keys.

The key store is one private directory (:func:`home`)::

    ~/.config/zmicro/            0700   $ZMICRO_HOME, else ${XDG_CONFIG_HOME:-~/.config}/zmicro
        id.key_secret            0600   this user's identity (public + secret key)
        id.key                   0644   its public half, to copy to other machines
        trusted/                 0700   the allowlist: one public certificate per key
            alice-3f2a9c0d1b7e.key
        mac.keys                        MAC master secrets (zmicro.security.mackeys)

Files use pyzmq's certificate format (``zmq.auth.create_certificates``,
ZPL text, RFC 4): what pyzmq and czmq write can be read here and the other
way round. A trusted key's certificate carries its ``name`` and ``roles``
(space-separated) in the metadata section; the authenticator
(:mod:`zmicro.security.zap`) hands them to the server as the connection's
``X-Name`` and ``X-Roles``, and :class:`~zmicro.auth.Principal` is built
from them.

The first use creates the identity and trusts it, so every service and
client of one user on one machine accept each other with no setup; keys of
other machines are added with :meth:`KeyStore.trust` (``zmicro trust``).

Environment, read when a :class:`KeyStore` is built: ``ZMICRO_HOME`` (the
store), ``ZMICRO_KEY`` (a ``.key_secret`` file used as the identity instead
of the store's), ``ZMICRO_TRUSTED`` (a directory used as the allowlist
instead of ``trusted/``). ``docs/keys.md`` is the user's guide.
"""

from __future__ import annotations

import datetime
import getpass
import logging
import os
import re
import stat
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

import blake3
import zmq
import zmq.auth
import zmq.utils.z85

from ..errors import Error
from ._files import foreign_owner, write_atomic

__all__ = [
    "KeyPair",
    "KeyStore",
    "KeyStoreError",
    "TrustedKey",
    "check_key",
    "fingerprint",
    "home",
    "load_public_key",
    "write_keypair",
]

log = logging.getLogger(__name__)

KEY_LENGTH = 40          # a Z85 Curve key: 32 bytes as 40 characters
_CERT_MAX = 64 * 1024    # a certificate is a few hundred bytes; never read more
_Z85_ALPHABET = frozenset(zmq.utils.z85.Z85CHARS.decode())
# What a certificate's metadata may hold: one line of text without quotes
# or backslashes (ZPL has no escapes), and roles without whitespace.
_NAME = re.compile(r'[^\x00-\x1f\x7f-\x9f\u2028\u2029"\\]{0,128}')
_ROLE = re.compile(r'[^\s"\\\x00-\x1f\x7f]{1,64}')
# File names we make: no path separator, no leading dot (hidden, temporary).
_FILE_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}")
_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9._-]+")
_create_lock = threading.Lock()


class KeyStoreError(Error):
    """The key store cannot be used: unsafe permissions, a missing or
    unreadable identity, a directory owned by another user."""


class KeyPair(NamedTuple):
    """A Curve key pair, both halves Z85 (40 characters)."""

    public: str
    secret: str

    def __repr__(self) -> str:
        # Key pairs travel through tracebacks and debug logs: never the secret.
        return f"KeyPair(public={self.public!r}, secret=<hidden>)"


class TrustedKey(NamedTuple):
    """One allowlist entry: a Z85 public key, its name and its roles."""

    key: str
    name: str
    roles: frozenset[str]


# -- keys ----------------------------------------------------------------------


def _decode(key: object) -> bytes:
    if not isinstance(key, str):
        raise ValueError(f"a Curve key is a str, not {type(key).__name__}")
    if len(key) != KEY_LENGTH or not _Z85_ALPHABET.issuperset(key):
        raise ValueError(f"not a Z85 Curve key ({KEY_LENGTH} characters of the Z85 alphabet)")
    try:
        raw = zmq.utils.z85.decode(key)
    except Exception:  # a 5-character group above 2**32 (struct.error)
        raise ValueError("not a Z85 Curve key (a group of characters overflows 32 bits)"
                         ) from None
    if len(raw) != 32:  # cannot happen with 40 characters; checked, not assumed
        raise ValueError("not a Z85 Curve key (does not decode to 32 bytes)")
    return raw


def check_key(key: object) -> str:
    """Return ``key`` if it is a Z85 Curve key (40 characters decoding to 32
    bytes), else raise ValueError (which never quotes the key: it might be a
    secret one pasted by mistake)."""
    _decode(key)
    assert isinstance(key, str)  # _decode refused anything else
    return key


def fingerprint(public_key: str) -> str:
    """BLAKE3 of the key's 32 raw bytes, as 64 hex digits.

    Logs, file names and the CLI show a prefix of it, never the key. Hashing
    the raw bytes makes it independent of the encoding; the same function
    is :func:`zmicro.auth.fingerprint`.
    """
    return blake3.blake3(_decode(public_key)).hexdigest()


def load_public_key(value: str | os.PathLike[str]) -> str:
    """The Z85 public key ``value`` is, or the one in the certificate file
    (``.key`` or ``.key_secret``) it names. Raises ValueError otherwise."""
    text = os.fspath(value)
    try:
        return check_key(text)
    except ValueError:
        pass
    path = Path(text).expanduser()
    if not path.is_file():
        raise ValueError("expected a Z85 Curve public key (40 characters) or the path "
                         "of a .key / .key_secret certificate file")
    try:
        public, _secret, _meta = _read_certificate(path)
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: not a usable certificate: {exc}") from None
    return public


# -- files ---------------------------------------------------------------------


def _owned(st: os.stat_result) -> bool:
    return st.st_uid == os.geteuid()


def _check_owner(st: os.stat_result, path: Path, what: str, advice: str) -> None:
    """Refuse what the effective uid does not own, root included: another
    user's store would hand us their identity (security._files)."""
    problem = foreign_owner(st, path, what)
    if problem is not None:
        raise KeyStoreError(f"{problem}; {advice}")


def _private_dir(path: Path, what: str) -> None:
    """Make ``path`` a directory only its owner can use (0700), or refuse."""
    try:
        path.mkdir(mode=0o700, parents=True)
        os.chmod(path, 0o700)  # mkdir's mode went through the umask
    except FileExistsError:
        pass
    except OSError as exc:
        raise KeyStoreError(f"cannot create the {what} {path}: {exc.strerror}") from None
    try:
        st = os.stat(path)
    except OSError as exc:
        raise KeyStoreError(f"cannot use the {what} {path}: {exc.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise KeyStoreError(f"the {what} {path} is not a directory")
    _check_owner(st, path, what, "point ZMICRO_HOME at a directory of your own")
    if st.st_mode & 0o077:
        os.chmod(path, 0o700)
        log.warning("zmicro: %s %s was accessible to other users (mode %04o); now 0700",
                    what, path, stat.S_IMODE(st.st_mode))


def home(path: str | os.PathLike[str] | None = None) -> Path:
    """The key store directory, created (0700, parents as needed) if missing.

    ``path`` if given, else ``$ZMICRO_HOME``, else
    ``${XDG_CONFIG_HOME:-~/.config}/zmicro``. An existing directory that other
    users can access is tightened to 0700 when it is ours; otherwise, or when
    it is not a directory or belongs to someone else, :class:`KeyStoreError`.
    """
    if path is None:
        path = os.environ.get("ZMICRO_HOME") or None
    if path is None:
        config = os.environ.get("XDG_CONFIG_HOME", "")
        if not os.path.isabs(config):  # the XDG spec says to ignore a relative value
            config = os.path.join(os.path.expanduser("~"), ".config")
        directory = Path(config, "zmicro")
    else:
        directory = Path(os.fspath(path)).expanduser()
    directory = directory.absolute()
    _private_dir(directory, "key store")
    return directory


def _quote(value: str) -> str:
    # ZPL (RFC 4) ends an unquoted value at whitespace: "admin ops" must be
    # quoted to stay one value. _NAME and _ROLE exclude the quote character.
    return f'"{value}"'


def _certificate(public: str, secret: str | None, metadata: dict[str, str]) -> bytes:
    # pyzmq's layout (zmq.auth.certs._write_key_file), so pyzmq, czmq and
    # zmq.auth.load_certificate read what we write.
    now = datetime.datetime.now().isoformat(timespec="seconds")
    kind = "**Secret** Certificate" if secret else "Public Certificate"
    lines = [f"#   ****  Generated on {now} by zmicro  ****",
             f"#   ZeroMQ CURVE {kind}"]
    if secret:
        lines.append("#   DO NOT PROVIDE THIS FILE TO OTHER USERS nor change its permissions.")
    lines += ["", "metadata"]
    lines += [f"    {k} = {_quote(v)}" for k, v in metadata.items()]
    lines += ["curve", f'    public-key = "{public}"']
    if secret:
        lines.append(f'    secret-key = "{secret}"')
    return ("\n".join(lines) + "\n").encode()


def _parse_metadata(data: bytes) -> dict[str, str]:
    """The ``metadata`` section of a certificate (ZPL, RFC 4): ``name = value``
    lines indented under it; values quoted (ours) or bare (pyzmq's)."""
    metadata: dict[str, str] = {}
    section = None
    # split("\n"), not splitlines(): ZPL lines end at LF, and splitlines()
    # also breaks at characters a value may hold (U+0085, U+2028...).
    for line in data.decode("utf-8").split("\n"):
        line = line.removesuffix("\r")
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if not line[0].isspace():
            section = line.strip()
            continue
        if section != "metadata":
            continue
        name, sep, value = line.strip().partition("=")
        if not sep:
            raise ValueError(f"malformed metadata line {line.strip()!r}")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        metadata[name.strip()] = value
    return metadata


def _read_certificate(path: Path) -> tuple[str, str | None, dict[str, str]]:
    """(public key, secret key or None, metadata) of a certificate file."""
    with open(path, "rb") as f:
        data = f.read(_CERT_MAX + 1)
    if len(data) > _CERT_MAX:
        raise ValueError(f"larger than {_CERT_MAX} bytes")
    public, secret = zmq.auth.load_certificate(path)
    public_key = check_key(public.decode("ascii"))
    secret_key = check_key(secret.decode("ascii")) if secret else None
    return public_key, secret_key, _parse_metadata(data)


def _check_name(name: object) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name) or name != name.strip():
        raise ValueError("a key's name is one line of at most 128 characters, without "
                         "quotes, backslashes or surrounding spaces")
    return name


def _check_roles(roles: Iterable[str] | str) -> frozenset[str]:
    # A bare string is one role, not a set of characters (as in Principal).
    roles = frozenset((roles,) if isinstance(roles, str) else roles)
    for role in roles:
        if not isinstance(role, str) or not _ROLE.fullmatch(role):
            raise ValueError(f"invalid role {role!r}: 1 to 64 characters, no whitespace, "
                             "quotes or backslashes")
    return roles


def write_keypair(directory: str | os.PathLike[str], name: str, *,
                  overwrite: bool = False) -> KeyPair:
    """Create a key pair as ``name.key`` (public, 0644) and ``name.key_secret``
    (0600) in ``directory`` (created 0700 if missing): pyzmq's format, for
    a machine or service that does not use this user's identity.

    Raises FileExistsError when ``name.key_secret`` exists, unless
    ``overwrite``; ValueError for a name that is not a plain file name.
    """
    if not isinstance(name, str) or not _FILE_NAME.fullmatch(name):
        raise ValueError("name must be a plain file name: letters, digits, '.', '_', '-'")
    target = Path(os.fspath(directory)).expanduser().absolute()
    if not target.exists():
        _private_dir(target, "key directory")
    public, secret = (k.decode("ascii") for k in zmq.curve_keypair())
    secret_path = target / f"{name}.key_secret"
    if not write_atomic(secret_path, _certificate(public, secret, {}),
                        mode=0o600, replace=overwrite):
        raise FileExistsError(f"{secret_path} exists")
    write_atomic(target / f"{name}.key", _certificate(public, None, {}),
                 mode=0o644, replace=True)
    return KeyPair(public, secret)


def _user() -> str:
    try:
        name = getpass.getuser()
    except Exception:  # no passwd entry, no LOGNAME: a container
        return "self"
    return name if _NAME.fullmatch(name) and name == name.strip() and name else "self"


# -- the store -----------------------------------------------------------------


class KeyStore:
    """A user's keys: the identity (:meth:`identity`) and the allowlist of
    trusted public keys (:meth:`trust`, :meth:`untrust`, :meth:`trusted`).

    ``path`` is the store directory (see :func:`home`). ``ZMICRO_KEY`` and
    ``ZMICRO_TRUSTED`` are read here, once. Methods are safe to call from
    several threads and several processes at once: files are written to a
    temporary name and renamed (or linked) into place, so readers see a
    whole file or none.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path: Path = home(path)
        key = os.environ.get("ZMICRO_KEY") or None
        trusted = os.environ.get("ZMICRO_TRUSTED") or None
        #: The identity's certificate: ``$ZMICRO_KEY`` or ``path/id.key_secret``.
        self.identity_path: Path = (Path(key).expanduser().absolute() if key
                                    else self.path / "id.key_secret")
        self._identity_from_env = key is not None
        #: The allowlist: ``$ZMICRO_TRUSTED`` or ``path/trusted``.
        self.trusted_dir: Path = (Path(trusted).expanduser().absolute() if trusted
                                  else self.path / "trusted")
        self._warned: set[tuple[str, int, int]] = set()

    def __repr__(self) -> str:
        return f"<KeyStore {str(self.path)!r}>"

    @property
    def mac_secrets_path(self) -> Path:
        """Where the MAC master secrets live (read by
        :mod:`zmicro.security.mackeys`)."""
        return self.path / "mac.keys"

    # -- identity

    def identity(self, create: bool = True) -> KeyPair:
        """This user's key pair, created on first use when ``create``.

        Creating it also trusts its public key (named after the user, role
        ``"self"``), so this user's services and clients accept each other.
        When two processes create it at once, one wins and both return the
        winner's. Raises :class:`KeyStoreError` when the identity is missing
        and ``create`` is false (or ``ZMICRO_KEY`` names a missing file), or
        when its file is unreadable, malformed or readable by others and
        not ours to fix.
        """
        try:
            return self._load_identity()
        except FileNotFoundError:
            if self._identity_from_env:
                raise KeyStoreError(f"ZMICRO_KEY names {self.identity_path}, which does "
                                    "not exist") from None
            if not create:
                raise KeyStoreError(f"no identity in {self.path}: run `zmicro keygen`"
                                    ) from None
        return self._create_identity(name="", replace=False)

    def has_identity(self) -> bool:
        """Whether :meth:`identity` would find a key without creating one."""
        return self.identity_path.is_file()

    def create_identity(self, *, name: str = "", replace: bool = False) -> KeyPair:
        """Create a new identity and trust it (``zmicro keygen``); ``name``
        labels it in the allowlist (default: the user name).

        The previous identity, if ``replace`` allows overwriting it, stays
        trusted: services started with it keep being accepted until removed
        with :meth:`untrust`. Raises :class:`KeyStoreError` when an identity
        exists and not ``replace``, or when ``ZMICRO_KEY`` is set (that file
        is the user's to manage).
        """
        _check_name(name)
        if self._identity_from_env:
            raise KeyStoreError("ZMICRO_KEY is set: the identity is that file, not the "
                                "store's; unset it or make keys with `zmicro keygen --out`")
        if self.has_identity() and not replace:
            raise KeyStoreError(f"{self.identity_path} exists (replace it with --force)")
        return self._create_identity(name=name, replace=replace)

    def _create_identity(self, *, name: str, replace: bool) -> KeyPair:
        with _create_lock:
            public, secret = (k.decode("ascii") for k in zmq.curve_keypair())
            try:
                won = write_atomic(self.identity_path, _certificate(public, secret, {}),
                                   mode=0o600, replace=replace)
            except OSError as exc:
                raise KeyStoreError(f"cannot write {self.identity_path}: {exc.strerror}"
                                    ) from None
            if not won:  # another process created it first: use theirs
                return self._load_identity()
            write_atomic(self.path / "id.key", _certificate(public, None, {}),
                         mode=0o644, replace=True)
            self.trust(public, name=name or _user(), roles={"self"})
            log.info("zmicro: created the identity %s (fingerprint %s)",
                     self.identity_path, fingerprint(public)[:16])
            return KeyPair(public, secret)

    def _load_identity(self) -> KeyPair:
        path = self.identity_path
        try:
            st = os.stat(path)
            # Whose secret this is comes first: another user's (mode aside)
            # is theirs to use, not ours, even for root.
            _check_owner(st, path, "identity", "use a key file of your own (ZMICRO_KEY, "
                         "ZMICRO_HOME)")
            if st.st_mode & 0o077:
                os.chmod(path, 0o600)
                log.warning("zmicro: %s was accessible to other users (mode %04o); now 0600",
                            path, stat.S_IMODE(st.st_mode))
            public, secret, _meta = _read_certificate(path)
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise KeyStoreError(f"cannot read the identity {path}: {exc.strerror}") from None
        except (ValueError, UnicodeDecodeError) as exc:
            raise KeyStoreError(f"the identity {path} is malformed: {exc}") from None
        if secret is None:
            raise KeyStoreError(f"{path} holds no secret key (a .key_secret file is needed)")
        if zmq.curve_public(secret.encode()).decode() != public:
            raise KeyStoreError(f"{path}: its public key does not belong to its secret key")
        return KeyPair(public, secret)

    # -- allowlist

    def trust(self, public_key: str, *, name: str = "", roles: Iterable[str] = ()) -> Path:
        """Add ``public_key`` to the allowlist with ``name`` and ``roles``;
        returns the certificate written.

        Trusting a key again replaces its entry (name and roles). The file
        is ``<name>-<fingerprint 12>.key``, or ``<fingerprint 16>.key``
        without a name. Raises ValueError for a malformed key, name or role.
        """
        key = check_key(public_key)
        name = _check_name(name)
        role_set = _check_roles(roles)
        _private_dir(self.trusted_dir, "trusted keys directory")
        digest = fingerprint(key)
        safe = _UNSAFE_CHARS.sub("_", name).strip("._")[:48]
        file_name = f"{safe}-{digest[:12]}.key" if safe else f"{digest[:16]}.key"
        metadata = {"name": name} if name else {}
        if role_set:
            metadata["roles"] = " ".join(sorted(role_set))
        write_atomic(self.trusted_dir / file_name,
                     _certificate(key, None, metadata), mode=0o644, replace=True)
        for path in self._files_holding(key):
            if path.name != file_name:
                path.unlink(missing_ok=True)
        return self.trusted_dir / file_name

    def untrust(self, public_key: str) -> bool:
        """Remove ``public_key`` from the allowlist; False if it was not there."""
        key = check_key(public_key)
        removed = False
        for path in self._files_holding(key):
            try:
                path.unlink()
                removed = True
            except FileNotFoundError:
                pass
        return removed

    def _certificates(self) -> list[Path]:
        try:
            names = sorted(os.listdir(self.trusted_dir))
        except FileNotFoundError:
            return []
        # "*.key" only: "*.key_secret" never belongs in an allowlist, and
        # temporary files start with a dot.
        return [self.trusted_dir / n for n in names
                if n.endswith(".key") and not n.startswith(".")]

    def _files_holding(self, key: str) -> list[Path]:
        found = []
        for path in self._certificates():
            try:
                public, _secret = zmq.auth.load_certificate(path)
            except (OSError, ValueError):
                continue
            if public.decode("ascii", "replace") == key:
                found.append(path)
        return found

    def trusted(self) -> dict[str, TrustedKey]:
        """The allowlist: every ``*.key`` certificate in :attr:`trusted_dir`,
        by Z85 public key.

        Never raises for the files' sake: an unreadable or malformed file is
        skipped with one warning (per version of the file); a key found in
        two files keeps the first by file name. A directory that other users
        may write to yields an empty allowlist (and a warning): anyone could
        have added a key.
        """
        try:
            st = os.stat(self.trusted_dir)
        except FileNotFoundError:
            return {}
        except OSError as exc:
            log.warning("zmicro: cannot read the trusted keys in %s: %s", self.trusted_dir,
                        exc.strerror)
            return {}
        if st.st_mode & 0o022 or (not _owned(st) and st.st_uid != 0):
            self._warn_once(self.trusted_dir, st, "other users can write to this directory, "
                            "so no key in it is trusted; chmod 700 it")
            return {}
        result: dict[str, TrustedKey] = {}
        for path in self._certificates():
            try:
                fst = os.stat(path)
                if not stat.S_ISREG(fst.st_mode):
                    continue
                public, secret, metadata = _read_certificate(path)
                if secret is not None:
                    raise ValueError("it holds a secret key; only public certificates "
                                     "belong here")
                entry = TrustedKey(public, _check_name(metadata.get("name", "")),
                                   _check_roles(metadata.get("roles", "").split()))
            except (OSError, ValueError, UnicodeDecodeError) as exc:
                self._warn_once(path, None, f"skipped: {exc}")
                continue
            if public in result:
                self._warn_once(path, fst, "skipped: the same key is trusted by an earlier "
                                "file")
                continue
            result[public] = entry
        return result

    def _warn_once(self, path: Path, st: os.stat_result | None, message: str) -> None:
        try:
            st = st or os.stat(path)
            version = (str(path), st.st_mtime_ns, st.st_size)
        except OSError:
            version = (str(path), 0, 0)
        if version not in self._warned:
            self._warned.add(version)
            log.warning("zmicro: %s: %s", path, message)
