"""A real nats-server for tests: free loopback ports, JetStream, its own store.

:class:`NatsServer` runs ``nats-server`` (Debian's ``nats-server``, 2.9)
with JetStream on two ports the OS picked, both on 127.0.0.1: the client
port and the monitoring port (its ``/healthz?js-enabled-only=true`` says
when the server, JetStream included, is ready). Everything is in one
generated configuration file in the server's own directory, next to the
JetStream store (``store/``) and the log. ``stop()`` (SIGTERM), ``kill()``
(SIGKILL) and ``start()`` keep the directory, the store and the ports, so a
restarted server has the same address and the same streams, consumers and
messages: what restart tests need.

Variants (keyword-only, one server each):

- ``auth="password"``: one user, :attr:`user` / :attr:`password`;
- ``auth="token"``: :attr:`token`;
- ``auth="nkey"``: one user known by its NKey public key; the client signs
  the server's nonce with :attr:`nkey_seed` (a seed made here, the way
  ``nk -gen user`` does: NATS' base32 with a CRC16);
- ``extra_config``: configuration text appended as is (e.g. users with
  permissions, as docs/events.md shows them);
- ``tls=True``: a CA and a server certificate for 127.0.0.1 / localhost
  (made with ``cryptography`` in the server's directory); clients trust
  :attr:`ca_file` (:meth:`client_ssl_context`).

If nats-server is not installed, :func:`require_nats` raises saying how to
install it (tests that need it fail, they do not skip; CI installs it, see
``.ci/run``). ``ZMICRO_TEST_NATS`` names another binary.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import json
import os
import secrets
import shutil
import ssl
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from .server_process import START_TIMEOUT, STOP_TIMEOUT, ServerProcess, free_port, get_json

NATS = os.environ.get("ZMICRO_TEST_NATS", "nats-server")
__all__ = ["START_TIMEOUT", "STOP_TIMEOUT", "NatsServer", "free_port", "make_user_nkey",
           "require_nats"]


def require_nats() -> str:
    """The nats-server binary's path; raises RuntimeError saying how to install it."""
    path = NATS if os.path.isabs(NATS) else (shutil.which(NATS)
                                              or shutil.which(NATS, path="/usr/sbin:/sbin"))
    if not path or not os.access(path, os.X_OK):
        raise RuntimeError(
            f"nats-server is not installed ({NATS} not found): the NATS broker's tests need "
            f"a real server; install it with `apt-get install -y nats-server` "
            f"(or set ZMICRO_TEST_NATS to its path)"
        )
    return path


class NatsServer(ServerProcess):
    """One nats-server with JetStream on loopback; see the module docstring."""

    what = "nats-server"

    def __init__(self, directory: str | os.PathLike[str] | None = None, *,
                 auth: str | None = None, tls: bool = False, extra_config: str = "") -> None:
        if auth not in (None, "password", "token", "nkey"):
            raise ValueError(f"auth must be None, 'password', 'token' or 'nkey', not {auth!r}")
        self.binary = require_nats()
        self._own_dir = directory is None
        self.dir = Path(directory or tempfile.mkdtemp(prefix="zmicro-nats-"))
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.monitor_port = free_port()
        self.store_dir = self.dir / "store"
        self.log_path = self.dir / "nats-server.log"
        self.config_path = self.dir / "nats-server.conf"
        self.auth = auth
        self.tls = tls
        self.extra_config = extra_config  # appended as is (an authorization block...)
        self.user = "zmicro" if auth == "password" else None
        self.password = secrets.token_urlsafe(16) if auth == "password" else None
        self.token = secrets.token_urlsafe(16) if auth == "token" else None
        self.nkey_seed: str | None = None
        self.nkey_public: str | None = None
        if auth == "nkey":
            self.nkey_seed, self.nkey_public = make_user_nkey()
        self.ca_file: Path | None = None
        if tls:
            self.ca_file, self._cert_file, self._key_file = make_certificates(self.dir / "tls")
        self._write_config()

    @property
    def url(self) -> str:
        return f"{'tls' if self.tls else 'nats'}://127.0.0.1:{self.port}"

    @property
    def monitor(self) -> str:
        return f"http://127.0.0.1:{self.monitor_port}"

    def client_ssl_context(self) -> ssl.SSLContext:
        """A client context trusting this server's CA (tls=True only)."""
        if self.ca_file is None:
            raise RuntimeError("this server runs without TLS")
        return ssl.create_default_context(cafile=str(self.ca_file))

    def _write_config(self) -> None:
        # JSON strings are valid NATS configuration strings (quoted, escaped).
        q = json.dumps
        lines = [
            f"listen: {q(f'127.0.0.1:{self.port}')}",
            f"http: {q(f'127.0.0.1:{self.monitor_port}')}",
            f"server_name: {q('zmicro-test-' + str(self.port))}",
            f"jetstream {{ store_dir: {q(str(self.store_dir))} }}",
        ]
        if self.auth == "password":
            lines.append(f"authorization {{ users: [ {{ user: {q(self.user)}, "
                         f"password: {q(self.password)} }} ] }}")
        elif self.auth == "token":
            lines.append(f"authorization {{ token: {q(self.token)} }}")
        elif self.auth == "nkey":
            lines.append(f"authorization {{ users: [ {{ nkey: {q(self.nkey_public)} }} ] }}")
        if self.tls:
            lines.append(f"tls {{ cert_file: {q(str(self._cert_file))}, "
                         f"key_file: {q(str(self._key_file))}, timeout: 5 }}")
        if self.extra_config:
            lines.append(self.extra_config)
        self.config_path.write_text("\n".join(lines) + "\n")

    def argv(self) -> list[str]:
        return [self.binary, "-c", str(self.config_path)]

    def ready(self) -> bool:
        """JetStream included (the monitor's /healthz?js-enabled-only=true)."""
        answer = get_json(f"{self.monitor}/healthz?js-enabled-only=true")
        return bool(answer.get("status") == "ok")

    def cleanup(self) -> None:
        """Kill the server and remove its directory (if this object made it)."""
        self.kill()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    # -- the monitoring endpoints, for tests that look behind the broker's back --

    def varz(self, endpoint: str = "varz", **params: str) -> dict:
        """GET ``/<endpoint>`` (``jsz``, ``connz``...) and return the decoded answer."""
        query = "&".join(f"{k}={v}" for k, v in params.items())
        url = f"{self.monitor}/{endpoint}" + (f"?{query}" if query else "")
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                return json.load(resp)
        except urllib.error.HTTPError as e:
            raise RuntimeError(f"nats-server {endpoint}: {e.code} "
                               f"{e.read().decode(errors='replace')}") from e


# -- NKeys: NATS' base32 keys with a prefix byte and a CRC16 ------------------

_PREFIX_SEED = 18 << 3   # "S"
_PREFIX_USER = 20 << 3   # "U"


def _crc16(data: bytes) -> bytes:
    # CRC-16/XMODEM, what NKeys append (little-endian).
    return binascii.crc_hqx(data, 0).to_bytes(2, "little")


def _nkey_encode(raw: bytes) -> str:
    return base64.b32encode(raw + _crc16(raw)).decode().rstrip("=")


def make_user_nkey() -> tuple[str, str]:
    """A fresh user NKey: (seed "SU...", public key "U..."), as ``nk -gen user``."""
    from nacl.signing import SigningKey  # nkeys' own dependency (nats-py[nkeys])

    seed = secrets.token_bytes(32)
    public = bytes(SigningKey(seed).verify_key)
    seed_str = _nkey_encode(bytes([_PREFIX_SEED | (_PREFIX_USER >> 5),
                                   (_PREFIX_USER & 31) << 3]) + seed)
    return seed_str, _nkey_encode(bytes([_PREFIX_USER]) + public)


# -- TLS: a CA and a server certificate for 127.0.0.1 and localhost -----------

def make_certificates(directory: Path) -> tuple[Path, Path, Path]:
    """Write ca.pem, server.pem and server-key.pem in `directory`; return their paths."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    start, end = now - datetime.timedelta(days=1), now + datetime.timedelta(days=30)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "zmicro test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(start).not_valid_after(end)
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False,
                                       encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))

    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end)
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))

    ca_file, cert_file, key_file = (directory / "ca.pem", directory / "server.pem",
                                    directory / "server-key.pem")
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_file.chmod(0o600)
    return ca_file, cert_file, key_file
