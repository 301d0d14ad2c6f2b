"""The cluster registry: etcd v3, through its HTTP JSON gateway.

Layout: each registered node is one key ::

    <prefix><service>/<version>/<node id>

(UTF-8; names hold no "/", so the three parts split back unambiguously; an
empty version gives ``Greeter//node``) whose value is JSON
``{"record": <the record with only that node>, "changed": <ns>}`` —
``changed`` is the wall-clock time of the registration's last content
change, which picks a version's metadata and endpoints (see
:func:`._shared.merge`).

Leases: a registration with a ``ttl`` is put under the registry object's one
lease (granted on first use with the registry's ``ttl``), which one
keep-alive thread refreshes every ttl/3; so a node lives while its process
does, and disappears ``ttl`` seconds after the process died. The per-call
``ttl`` only says "expire with the process"; its value does not matter (one
lease serves every registration). A heartbeat (``register`` of what this
object already registered, unchanged) writes nothing: the keep-alive is
what keeps it alive (so a node another client deleted stays deleted until
its content changes or the lease is renewed). When a refresh finds the
lease gone (it expired while etcd was unreachable, or was revoked), the
thread grants a new lease and puts every live leased registration again:
the registry heals by itself after an etcd restart or outage. A registration without ``ttl`` has
no lease and stays until deregistered. :meth:`EtcdRegistry.close` deregisters
everything the object registered (revokes its lease, deletes its other keys).

Watchers read the gateway's watch stream from one thread each; when it
breaks (etcd restarted or unreachable) they re-read the range, report the
difference as events and watch again from there, with a backoff.

Trust (:attr:`EtcdRegistry.trusted`): true only when etcd has
authentication on and accepted ``username``/``password``; an open etcd lets
anyone who reaches it write records, so their node keys are not believed.

Client library: ``etcd3gw`` (see the commit that added this module for why);
its client (HTTP session, URLs, errors) makes the requests; the watch stream
is read directly through that session so that a broken stream is noticed
(etcd3gw's own watch helper gives no sign when its stream ends).
"""

from __future__ import annotations

import base64
import contextlib
import logging
import math
import os
import socket
import threading
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from urllib.parse import urlsplit

import msgspec

from ._shared import QueueWatcher, diff, merge
from .base import (
    Registry,
    RegistryError,
    ServiceRecord,
    Watcher,
    check_name,
    check_record,
    check_ttl,
)

__all__ = ["DEFAULT_PREFIX", "DEFAULT_TTL", "EtcdRegistry", "parse_endpoints"]

log = logging.getLogger(__name__)

DEFAULT_PREFIX = "/zmicro/registry/"
#: Seconds a node outlives its process (the lease's TTL); etcd's minimum is 2.
DEFAULT_TTL = 10.0
#: What etcd says when a token expired or went stale: authenticate again.
_TOKEN_REFUSED = ("invalid auth token", "user name is empty", "auth store is old")
#: Longest wait between two reconnection attempts of a watcher, in seconds.
BACKOFF_MAX = 2.0


class _Value(msgspec.Struct, frozen=True):
    record: ServiceRecord
    changed: int


_encode_value = msgspec.json.Encoder().encode
_decode_value = msgspec.json.Decoder(_Value).decode


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(data: str) -> bytes:
    return base64.b64decode(data)


def _range_end(prefix: bytes) -> bytes:
    """The first key after every key starting with ``prefix``."""
    b = bytearray(prefix)
    while b and b[-1] == 0xFF:
        b.pop()
    if not b:
        return b"\0"  # the whole keyspace
    b[-1] += 1
    return bytes(b)


def parse_endpoints(endpoints: str | Sequence[str]) -> list[tuple[str, str, int]]:
    """``"http://h:2379,http://h2:2379"`` (or a list) as [(scheme, host, port)].

    A bare ``host:port`` means http; credentials in a URL are refused (pass
    ``username``/``password``, which are never logged).
    """
    items = endpoints.split(",") if isinstance(endpoints, str) else list(endpoints)
    out = []
    for item in items:
        if not isinstance(item, str) or not item.strip():
            raise ValueError(f"endpoints: empty or not a str: {item!r}")
        text = item.strip()
        if "://" not in text:
            text = "http://" + text
        try:
            parts = urlsplit(text)
        except ValueError as e:  # e.g. an unclosed "[" of an IPv6 address
            raise ValueError(f"endpoints: cannot parse {item!r}: {e}") from None
        if parts.scheme not in ("http", "https"):
            raise ValueError(f"endpoints: scheme must be http or https: {item!r}")
        if "@" in parts.netloc:
            raise ValueError("endpoints: put no credentials in the URL; pass username= and password=")
        try:
            port = parts.port or 2379
        except ValueError:
            raise ValueError(f"endpoints: bad port in {item!r}") from None
        if not parts.hostname or parts.path not in ("", "/"):
            raise ValueError(f"endpoints: expected scheme://host:port, not {item!r}")
        out.append((parts.scheme, parts.hostname, port))
    if not out:
        raise ValueError("endpoints: none given")
    return out


class EtcdRegistry(Registry):
    """A :class:`Registry` on an etcd v3 cluster (3.4 or later).

    ``endpoints``: one URL, a comma-separated string or a list; a failing
    endpoint makes the next one current. ``prefix``: where the keys live
    (different prefixes are different registries). ``ttl``: the lease's
    TTL in seconds (at least 2). ``username``/``password``: etcd
    authentication (then :attr:`trusted` is true). ``timeout``: seconds per
    request. Construction contacts etcd (and authenticates): an unreachable
    server or refused credentials raise :class:`RegistryError` at once.
    """

    def __init__(
        self,
        endpoints: str | Sequence[str] = "http://127.0.0.1:2379",
        *,
        prefix: str = DEFAULT_PREFIX,
        ttl: float = DEFAULT_TTL,
        username: str | None = None,
        password: str | None = None,
        timeout: float = 5.0,
    ) -> None:
        try:
            import etcd3gw  # the optional dependency, imported when used
        except ImportError as e:
            raise RegistryError(
                f"the etcd registry needs the etcd3gw package: pip install 'zmicro[etcd]' ({e})"
            ) from None

        self._endpoints = parse_endpoints(endpoints)
        if not isinstance(prefix, str) or not prefix or "\0" in prefix:
            raise ValueError(f"prefix must be a non-empty str without NUL, not {prefix!r}")
        if not prefix.endswith("/"):
            prefix += "/"
        try:
            self._prefix = prefix.encode()
        except UnicodeEncodeError:
            raise ValueError(f"prefix is not valid UTF-8 (lone surrogate): {prefix!r}") from None
        ttl = check_ttl(ttl)
        if ttl is None or ttl < 2:
            raise ValueError(f"ttl must be at least 2 seconds (etcd's minimum lease), not {ttl!r}")
        self._ttl = ttl
        if not (isinstance(timeout, (int, float)) and timeout > 0):
            raise ValueError(f"timeout must be a positive number of seconds, not {timeout!r}")
        self._timeout = float(timeout)
        if (username is None) != (password is None):
            raise ValueError("username and password go together")
        if username is not None and not (isinstance(username, str) and username
                                         and isinstance(password, str)):
            raise ValueError("username must be a non-empty str and password a str")
        self._username = username
        self._password = password
        self._clients = [
            etcd3gw.Etcd3Client(host=h, port=p, protocol=s, timeout=self._timeout, api_path="/v3/")
            for s, h, p in self._endpoints
        ]
        self._current = 0
        self._token = ""
        self._io_lock = threading.RLock()  # endpoint choice and token (_authenticate calls _call)
        self._lock = threading.RLock()  # registrations and lease
        # key -> (encoded value, under the lease?)
        self._regs: dict[bytes, tuple[bytes, bool]] = {}
        self._lease: int | None = None  # the lease's id
        self._keeper: threading.Thread | None = None
        self._stop = threading.Event()
        self._watchers: list[_EtcdWatcher] = []
        self._closed = False
        self.trusted = False
        try:
            if username is not None:
                self._authenticate()
                self.trusted = True
            else:
                self._call("reach", "maintenance/status", {})
        except BaseException:
            for client in self._clients:
                client.session.close()
            raise

    # -- public API --

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def endpoint(self) -> str:
        scheme, host, port = self._endpoints[self._current]
        return f"{scheme}://{host}:{port}"

    @property
    def lease_id(self) -> int | None:
        """The id of the registry's lease (None before the first leased registration)."""
        return self._lease

    def register(self, record: ServiceRecord, *, ttl: float | None = None) -> None:
        record = check_record(record, for_register=True)
        ttl = check_ttl(ttl)
        with self._lock:
            self._check_open()
            for node in record.nodes:
                view = msgspec.structs.replace(record, nodes=(node,))
                key = self._key(record.name, record.version, node.id)
                old = self._regs.get(key)
                changed = time.time_ns()
                if old is not None:
                    previous = _decode_value(old[0])
                    if previous.record == view:
                        changed = previous.changed  # a heartbeat: content unchanged
                value = _encode_value(_Value(view, changed))
                leased = ttl is not None
                if old == (value, leased) and (not leased or self._lease is not None):
                    continue  # a heartbeat: the lease's keep-alive does the work, no write
                lease_id = self._ensure_lease() if leased else 0
                self._put(key, value, lease_id)
                self._regs[key] = (value, leased)
            if ttl is not None:
                self._start_keeper()

    def deregister(self, record: ServiceRecord) -> None:
        record = check_record(record, for_register=False)
        with self._lock:
            self._check_open()
            for node in record.nodes:
                key = self._key(record.name, record.version, node.id)
                self._call("deregister", "kv/deleterange", {"key": _b64(key)})
                self._regs.pop(key, None)

    def get(self, name: str) -> list[ServiceRecord]:
        check_name(name, "name")
        self._check_open()
        _, views = self._range(self._prefix + name.encode() + b"/")
        return _records(views)

    def list(self) -> list[ServiceRecord]:
        self._check_open()
        _, views = self._range(self._prefix)
        return _records(views)

    def watch(self, name: str | None = None) -> Watcher:
        if name is not None:
            check_name(name, "name")
        self._check_open()
        prefix = self._prefix if name is None else self._prefix + name.encode() + b"/"
        watcher = _EtcdWatcher(self, prefix, name)  # raises RegistryError if etcd is out of reach
        with self._lock:
            if not self._closed:
                self._watchers.append(watcher)
                return watcher
        watcher.stop()
        raise RegistryError("the registry is closed")

    def close(self) -> None:
        """Stop watchers and the keep-alive; deregister this object's nodes (best effort)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            watchers, self._watchers = self._watchers, []
            regs, self._regs = self._regs, {}
            lease, self._lease = self._lease, None
        self._stop.set()
        for watcher in watchers:
            watcher.stop()
        keeper = self._keeper
        if keeper is not None and keeper is not threading.current_thread():
            keeper.join(timeout=30)
        try:
            if lease is not None:
                self._call("close", "lease/revoke", {"ID": lease})
            for key, (_, leased) in regs.items():
                if not leased:
                    self._call("close", "kv/deleterange", {"key": _b64(key)})
        except RegistryError as e:
            log.warning("etcd registry: could not deregister on close: %s", e)
        for client in self._clients:
            client.session.close()

    # -- keys and values --

    def _key(self, name: str, version: str, node_id: str) -> bytes:
        return self._prefix + f"{name}/{version}/{node_id}".encode()

    def _split(self, key: bytes) -> tuple[str, str, str] | None:
        if not key.startswith(self._prefix):
            return None
        try:
            parts = key[len(self._prefix):].decode().split("/")
        except UnicodeDecodeError:
            return None
        return tuple(parts) if len(parts) == 3 else None  # type: ignore[return-value]

    def _view(self, key: bytes, value: bytes) -> tuple[tuple[str, str, str], _Value] | None:
        """The registration stored at ``key``; None (and a log line) for a foreign one."""
        split = self._split(key)
        try:
            decoded = _decode_value(value)
        except (msgspec.DecodeError, msgspec.ValidationError) as e:
            log.warning("etcd registry: ignoring the unreadable key %r: %s", key, e)
            return None
        record = decoded.record
        if split is None or len(record.nodes) != 1 or split != (record.name, record.version, record.nodes[0].id):
            log.warning("etcd registry: ignoring the key %r: it does not match its record", key)
            return None
        return split, decoded

    def _range(self, prefix: bytes) -> tuple[int, dict[tuple[str, str, str], _Value]]:
        """(revision, registrations) of every key under ``prefix``."""
        answer = self._call("read", "kv/range", {"key": _b64(prefix), "range_end": _b64(_range_end(prefix))})
        revision = int(answer.get("header", {}).get("revision", 0))
        views = {}
        for kv in answer.get("kvs", []):
            got = self._view(_unb64(kv["key"]), _unb64(kv.get("value", "")))
            if got is not None:
                views[got[0]] = got[1]
        return revision, views

    # -- lease and keep-alive --

    def _check_open(self) -> None:
        if self._closed:
            raise RegistryError("the registry is closed")

    def _put(self, key: bytes, value: bytes, lease_id: int) -> None:
        body = {"key": _b64(key), "value": _b64(value)}
        if lease_id:
            body["lease"] = lease_id
        self._call("register", "kv/put", body)

    def _ensure_lease(self) -> int:
        """The lease's id, granting it on first use (under self._lock)."""
        if self._lease is None:
            answer = self._call("grant a lease", "lease/grant", {"TTL": max(2, math.ceil(self._ttl)), "ID": 0})
            if not str(answer.get("ID", "")).isdigit():
                raise RegistryError(f"etcd {self.endpoint}: cannot grant a lease: {answer.get('error', answer)}")
            self._lease = int(answer["ID"])
        return self._lease

    def _start_keeper(self) -> None:
        if self._keeper is None:
            self._keeper = threading.Thread(target=self._keep_alive, name="zmicro-etcd-keepalive", daemon=True)
            self._keeper.start()

    def _keep_alive(self) -> None:
        """Refresh the lease every ttl/3; re-grant and re-put when it is gone."""
        interval = self._ttl / 3
        failing = False
        while not self._stop.wait(interval if not failing else min(interval, 0.5)):
            try:
                self.refresh()
            except RegistryError as e:
                if not failing:
                    log.warning("etcd registry: keep-alive failed (will retry): %s", e)
                failing = True
                continue
            if failing:
                log.info("etcd registry: keep-alive works again")
            failing = False

    def refresh(self) -> bool:
        """One keep-alive round (the thread's work, callable by tests).

        Returns False when the lease was gone and everything was put again
        under a new one.
        """
        with self._lock:
            lease = self._lease
            if lease is None or self._closed:
                return True
            answer = self._call("keep the lease alive", "lease/keepalive", {"ID": lease})
            if int(answer.get("result", {}).get("TTL", -1)) > 0:
                return True
            log.warning("etcd registry: lease %x is gone; registering %d nodes again",
                        lease, sum(leased for _, leased in self._regs.values()))
            self._lease = None
            lease_id = self._ensure_lease()
            for key, (value, leased) in list(self._regs.items()):
                self._put(key, value, lease_id if leased else 0)
            return False

    # -- HTTP --

    def _authenticate(self) -> None:
        """Get a token for username/password (under or before self._io_lock users)."""
        answer = self._call(
            "authenticate", "auth/authenticate",
            {"name": self._username, "password": self._password}, auth=False,
        )
        token = answer.get("token")
        if not token:
            raise RegistryError(f"etcd {self.endpoint}: authentication returned no token")
        self._token = token
        for client in self._clients:
            client.session.headers["Authorization"] = token

    def _call(self, action: str, path: str, body: dict, *, auth: bool = True) -> dict:
        """POST to the gateway; errors become RegistryError naming ``action`` (never the password)."""
        import requests
        from etcd3gw import exceptions as gw

        attempts = len(self._clients)
        reauthenticated = False
        while True:
            index = self._current
            client = self._clients[index]
            try:
                if auth:
                    return client.post(client.get_url(path), json=body)
                # Without the session's (maybe stale) token: etcd refuses any request with a bad one.
                return client.post(client.get_url(path), json=body, headers={"Authorization": None})
            except (gw.ConnectionFailedError, gw.ConnectionTimeoutError) as e:
                attempts -= 1
                if attempts <= 0:
                    raise RegistryError(
                        f"etcd {self._url(index)}: cannot {action}: unreachable ({_brief(e)})"
                    ) from None
                with self._io_lock:
                    if self._current == index:
                        self._current = (index + 1) % len(self._clients)
            except gw.Etcd3Exception as e:
                detail = _detail(e)
                if (auth and self._username is not None and not reauthenticated
                        and any(sign in detail for sign in _TOKEN_REFUSED)):
                    reauthenticated = True
                    with self._io_lock:
                        self._authenticate()
                    continue
                raise RegistryError(f"etcd {self._url(index)}: cannot {action}: {detail}") from None
            except ValueError as e:  # an answer that is not JSON
                raise RegistryError(f"etcd {self._url(index)}: cannot {action}: bad answer ({e})") from None
            except requests.RequestException as e:  # anything else the HTTP layer raises
                raise RegistryError(f"etcd {self._url(index)}: cannot {action}: {_brief(e)}") from None

    def _url(self, index: int) -> str:
        scheme, host, port = self._endpoints[index]
        return f"{scheme}://{host}:{port}"

    @contextlib.contextmanager
    def _stream(self, body: dict) -> Iterator:
        """The watch stream (a requests Response) for ``body``; closed on exit."""
        import requests

        for attempt in range(2):
            index = self._current
            client = self._clients[index]
            try:
                resp = client.session.post(client.get_url("watch"), json=body, stream=True,
                                           timeout=(self._timeout, None))
            except requests.RequestException as e:
                with self._io_lock:
                    if self._current == index:  # let the next attempt try the next endpoint
                        self._current = (index + 1) % len(self._clients)
                raise RegistryError(
                    f"etcd {self._url(index)}: cannot watch: unreachable ({_brief(e)})"
                ) from None
            if resp.status_code == 200:
                break
            text = resp.text.strip()
            resp.close()
            if attempt == 0 and self._username is not None and any(s in text for s in _TOKEN_REFUSED):
                with self._io_lock:
                    self._authenticate()
                continue
            raise RegistryError(f"etcd {self._url(index)}: cannot watch: {text}")
        try:
            yield resp
        finally:
            resp.close()

    def _forget(self, watcher: QueueWatcher) -> None:
        with self._lock:
            self._watchers = [w for w in self._watchers if w is not watcher]


def _detail(e: Exception) -> str:
    text = getattr(e, "detail_text", None) or ""
    try:
        import json

        text = json.loads(text).get("message", text)
    except (ValueError, AttributeError):
        pass
    return str(text).strip() or type(e).__name__


def _brief(e: Exception) -> str:
    text = str(e)
    return text if len(text) < 200 else text[:200] + "..."


def _records(views: dict[tuple[str, str, str], _Value]) -> list[ServiceRecord]:
    groups: dict[tuple[str, str], list[tuple[int, ServiceRecord]]] = defaultdict(list)
    for key, value in views.items():
        groups[key[:2]].append((value.changed, value.record))
    return [merge(groups[k]) for k in sorted(groups)]


class _EtcdWatcher(QueueWatcher):
    """Events of one prefix, from the gateway's watch stream, read by one thread.

    The baseline (a range read) and the stream are set up before the
    constructor returns. When the stream breaks, the thread re-reads the
    range, pushes the difference and watches again (backoff up to
    BACKOFF_MAX); so events may merge across an outage, never get lost.
    """

    def __init__(self, registry: EtcdRegistry, prefix: bytes, name: str | None) -> None:
        super().__init__(on_stop=registry._forget)
        self._registry = registry
        self._prefix = prefix
        self._live: dict[tuple[str, str, str], ServiceRecord] = {}
        self._wake = threading.Event()
        self._resp = None
        self._resp_lock = threading.Lock()
        self._connected = False
        revision = self._sync(push=False)
        first = self._open(revision)  # raises RegistryError: watch() fails
        self._thread = threading.Thread(
            target=self._run, args=(first,), name=f"zmicro-etcd-watch({name or '*'})", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._wake.set()
        super().stop()
        self._interrupt()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=30)

    # -- internals --

    def _sync(self, *, push: bool = True) -> int:
        """Read the range, push the difference from what we knew; return its revision."""
        revision, views = self._registry._range(self._prefix)
        live = {key: value.record for key, value in views.items()}
        events = diff(self._live, live) if push else []
        self._live = live
        for event in events:
            self.push(event)
        return revision

    def _open(self, revision: int):
        """Open the stream from ``revision + 1`` and wait for etcd to confirm it."""
        body = {"create_request": {
            "key": _b64(self._prefix), "range_end": _b64(_range_end(self._prefix)),
            "start_revision": revision + 1,
        }}
        stack = contextlib.ExitStack()
        resp = stack.enter_context(self._registry._stream(body))
        with self._resp_lock:
            self._resp = resp
        if self._wake.is_set():
            self._close(stack)
            return None
        lines = _lines(resp)
        try:
            first = next(lines)
        except Exception as e:  # noqa: BLE001 - any break of the stream
            self._close(stack)
            raise RegistryError(f"etcd {self._registry.endpoint}: cannot watch: {_brief(e)}") from None
        if not first.get("result", {}).get("created"):
            self._close(stack)
            raise RegistryError(f"etcd {self._registry.endpoint}: cannot watch: {first}")
        self._connected = True
        return stack, lines

    @property
    def connected(self) -> bool:
        """Whether the stream is up (False while re-connecting after a break, and once stopped)."""
        return self._connected and not self.stopped

    def _close(self, stack: contextlib.ExitStack) -> None:
        """Close the stream; under the lock so that _interrupt never touches a reused fd."""
        with self._resp_lock:
            self._connected = False
            self._resp = None
            stack.close()

    def _interrupt(self) -> None:
        """Wake a thread blocked reading the stream (shut its socket down)."""
        with self._resp_lock:
            resp = self._resp
            if resp is None:
                return
            try:
                fd = resp.raw._fp.fileno()  # the urllib3 response's socket
                sock = socket.socket(fileno=os.dup(fd))
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                finally:
                    sock.close()
            except (AttributeError, OSError, ValueError):
                pass

    def _run(self, first) -> None:
        stream = first
        failures = 0
        while not self._wake.is_set():
            if stream is not None:
                stack, lines = stream
                try:
                    self._consume(lines)
                except Exception as e:  # noqa: BLE001 - a broken stream, whatever broke it
                    if not self._wake.is_set():
                        log.debug("etcd watch stream broke: %s", e)
                finally:
                    self._close(stack)
                stream = None
            if self._wake.is_set():
                return
            backoff = min(BACKOFF_MAX, 0.05 * 2**failures)
            if self._wake.wait(backoff):
                return
            try:
                revision = self._sync()
                stream = self._open(revision)
                if failures:
                    log.info("etcd registry: watch of %r is back", self._prefix)
                failures = 0
            except RegistryError as e:
                if failures == 0:
                    log.warning("etcd registry: watch of %r broke (will retry): %s", self._prefix, e)
                failures = min(failures + 1, 10)

    def _consume(self, lines) -> None:
        for message in lines:
            if self._wake.is_set():
                return
            result = message.get("result")
            if result is None:
                raise RuntimeError(f"watch error: {message}")
            if result.get("canceled") or result.get("compact_revision"):
                raise RuntimeError(f"watch canceled: {result}")
            for event in result.get("events", []):
                self._apply(event)

    def _apply(self, event: dict) -> None:
        kv = event.get("kv", {})
        key = _unb64(kv.get("key", ""))
        split = self._registry._split(key)
        if split is None:
            return
        old = self._live.get(split)
        if event.get("type") == "DELETE":
            if old is not None:
                del self._live[split]
                self.push(_event("DELETE", old))
            return
        got = self._registry._view(key, _unb64(kv.get("value", "")))
        if got is None:
            return
        record = got[1].record
        if old == record:
            return  # a heartbeat or a re-put after a lease change
        self._live[split] = record
        self.push(_event("CREATE" if old is None else "UPDATE", record))


def _event(kind: str, record: ServiceRecord):
    from ._shared import copy_record
    from .base import Event, EventType

    return Event(EventType[kind], copy_record(record))


def _lines(resp) -> Iterator[dict]:
    """The JSON messages of a gateway stream (one per line, chunks may split them)."""
    import json

    buffer = b""
    for chunk in resp.iter_content(chunk_size=None):
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            if line.strip():
                yield json.loads(line)
    raise ConnectionError("the watch stream ended")
