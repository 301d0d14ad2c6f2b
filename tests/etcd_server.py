"""A real etcd server for tests: free loopback ports, its own data directory.

:class:`EtcdServer` runs ``/usr/bin/etcd`` (Debian's ``etcd-server``, 3.4)
as a one-member cluster on two ports the OS picked (client and peer, both
on 127.0.0.1). ``stop()`` (SIGTERM), ``kill()`` (SIGKILL) and ``start()``
keep the data directory and the ports, so a restarted server has the same
address and the same keys and leases: what restart tests need.

If etcd is not installed, :func:`require_etcd` raises with a clear message
(tests that need etcd fail; CI installs it, see ``.ci/run``).

Auth helpers (:meth:`EtcdServer.enable_auth`) drive the server's HTTP JSON
gateway (``/v3/``), the same API the registry uses.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from .server_process import START_TIMEOUT, STOP_TIMEOUT, ServerProcess, free_port, get_json

ETCD = os.environ.get("ZMICRO_TEST_ETCD", "/usr/bin/etcd")
__all__ = ["START_TIMEOUT", "STOP_TIMEOUT", "EtcdServer", "require_etcd"]


def require_etcd() -> str:
    """The etcd binary's path; raises RuntimeError saying how to install it."""
    path = ETCD if os.path.isabs(ETCD) else shutil.which(ETCD)
    if not path or not os.access(path, os.X_OK):
        raise RuntimeError(
            f"etcd is not installed ({ETCD} not found): the etcd tests need a real server; "
            f"install it with `apt-get install -y etcd-server` (or set ZMICRO_TEST_ETCD)"
        )
    return path


class EtcdServer(ServerProcess):
    """One etcd member on loopback; see the module docstring."""

    what = "etcd"

    def __init__(self, data_dir: str | os.PathLike[str] | None = None) -> None:
        self.binary = require_etcd()
        self._own_dir = data_dir is None
        self.data_dir = Path(data_dir or tempfile.mkdtemp(prefix="zmicro-etcd-"))
        self.client_port = free_port()
        self.peer_port = free_port()
        self.log_path = self.data_dir.with_name(self.data_dir.name + ".log")
        self.token = ""  # set by enable_auth(): the root user's token

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    def argv(self) -> list[str]:
        client = f"http://127.0.0.1:{self.client_port}"
        peer = f"http://127.0.0.1:{self.peer_port}"
        return [
            self.binary,
            "--name", "zmicro-test",
            "--data-dir", str(self.data_dir / "data"),
            "--listen-client-urls", client,
            "--advertise-client-urls", client,
            "--listen-peer-urls", peer,
            "--initial-advertise-peer-urls", peer,
            "--initial-cluster", f"zmicro-test={peer}",
            "--initial-cluster-state", "new",
            "--log-level", "warn",
            "--logger", "zap",
        ]

    def ready(self) -> bool:
        return bool(get_json(f"{self.endpoint}/health").get("health") == "true")

    def wipe(self) -> None:
        """Stop, delete every key and lease (the data directory), start: a replaced etcd."""
        self.stop()
        shutil.rmtree(self.data_dir / "data", ignore_errors=True)
        self.token = ""
        self.start()

    def cleanup(self) -> None:
        """Kill the server and remove its data directory (if this object made it)."""
        self.kill()
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            with_log = self.log_path
            with_log.unlink(missing_ok=True)

    # -- the HTTP JSON gateway, for tests that act behind the registry's back --

    def call(self, path: str, body: dict, *, token: str | None = None) -> dict:
        """POST ``body`` to ``/v3/<path>`` and return the decoded answer."""
        request = urllib.request.Request(
            f"{self.endpoint}/v3/{path.lstrip('/')}",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        token = self.token if token is None else token
        if token:
            request.add_header("Authorization", token)
        try:
            with urllib.request.urlopen(request, timeout=10) as resp:
                return json.load(resp)
        except urllib.error.HTTPError as e:
            raise RuntimeError(f"etcd {path}: {e.code} {e.read().decode(errors='replace')}") from e

    def leases(self) -> list[int]:
        return [int(x["ID"]) for x in self.call("lease/leases", {}).get("leases", [])]

    def grant(self, ttl: int) -> int:
        return int(self.call("lease/grant", {"TTL": ttl, "ID": 0})["ID"])

    def put(self, key: str, value: bytes, lease: int = 0) -> None:
        body = {"key": _b64(key.encode()), "value": _b64(value)}
        if lease:
            body["lease"] = lease
        self.call("kv/put", body)

    def revoke(self, lease: int) -> None:
        self.call("lease/revoke", {"ID": lease})

    def keys(self, prefix: str = "/") -> dict[str, dict]:
        """Every key under ``prefix`` with its lease (an int, 0 for none) and mod_revision."""
        b = prefix.encode()
        end = b[:-1] + bytes([b[-1] + 1])
        answer = self.call("kv/range", {"key": _b64(b), "range_end": _b64(end)})
        out = {}
        for kv in answer.get("kvs", []):
            out[base64.b64decode(kv["key"]).decode()] = {
                "lease": int(kv.get("lease", 0)), "mod_revision": int(kv.get("mod_revision", 0)),
            }
        return out

    def enable_auth(self, password: str) -> None:
        """Add user root with ``password`` (role root) and turn authentication on.

        After disable_auth() the user is still there: its password is changed.
        """
        try:
            self.call("auth/user/add", {"name": "root", "password": password})
        except RuntimeError as e:
            if "already exists" not in str(e):
                raise
            self.call("auth/user/changepw", {"name": "root", "password": password})
        try:
            self.call("auth/user/grant", {"user": "root", "role": "root"})
        except RuntimeError as e:
            if "already" not in str(e):
                raise
        self.call("auth/enable", {})
        answer = self.call("auth/authenticate", {"name": "root", "password": password}, token="")
        self.token = answer["token"]

    def disable_auth(self) -> None:
        """Turn authentication off (the root user stays)."""
        self.call("auth/disable", {})
        self.token = ""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
