"""The etcd registry's client: etcd v3's HTTP JSON gateway, a lease, a watch stream.

What :mod:`.etcd` builds on, knowing nothing of records (keys and values are
bytes here; base64 and the gateway's JSON shapes stay in this module):

- :class:`GatewayClient`: requests to ``/v3/...`` over one or more endpoints.
  Construction contacts etcd (and authenticates when given a username); a
  failing endpoint makes the next one current; a token etcd refuses as
  expired or stale is renewed once and the request retried. Every failure
  is a :class:`RegistryError` naming the endpoint and the caller's
  ``action``, never the password. Thread-safe.
- :class:`Lease`: one lease, granted on first use, and the thread that
  keeps it alive. Not locked: its owner serialises the calls that change it.
- :class:`WatchStream`: one watch of a key range, read by one thread,
  interruptible from another.

Client library: ``etcd3gw``, imported when a client is made (the optional
``zmicro[etcd]`` extra). It is synchronous, pure Python on requests, and
talks to the gateway (``/v3/`` from etcd 3.4), which fits the registry's
threads; ``etcd3`` no longer imports with current protobuf, and ``aetcd``
needs grpcio and an event loop. Its own watch helper gives no sign when its
stream ends and it has no authentication, so the watch stream is read here
through its HTTP session, and the token header is set on that session.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import os
import socket
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import urlsplit

from .base import RegistryError

if TYPE_CHECKING:
    import requests

__all__ = ["GatewayClient", "KeyEvent", "Lease", "WatchStream", "parse_endpoints", "range_end"]

# The registry's logger: its messages are filtered and configured by that one name.
log = logging.getLogger("zmicro.registry.etcd")

#: What etcd says when a token expired or went stale: authenticate again.
_TOKEN_REFUSED = ("invalid auth token", "user name is empty", "auth store is old")


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


def range_end(prefix: bytes) -> bytes:
    """The first key after every key starting with ``prefix``."""
    b = bytearray(prefix)
    while b and b[-1] == 0xFF:
        b.pop()
    if not b:
        return b"\0"  # the whole keyspace
    b[-1] += 1
    return bytes(b)


class GatewayClient:
    """etcd v3's HTTP JSON gateway at ``endpoints`` (see :func:`parse_endpoints`).

    ``timeout``: seconds per request. ``username``/``password``: etcd
    authentication; then :attr:`authenticated` is true. Construction
    contacts etcd: an unreachable server or refused credentials raise
    :class:`RegistryError` at once (and nothing is left open).

    Every request method takes ``action`` first: what the caller is doing,
    for the error message (``"etcd http://h:2379: cannot <action>: ..."``).
    """

    def __init__(
        self,
        endpoints: str | Sequence[str],
        *,
        timeout: float,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        try:
            import etcd3gw  # the optional dependency, imported when used
        except ImportError as e:
            raise RegistryError(
                f"the etcd registry needs the etcd3gw package: pip install 'zmicro[etcd]' ({e})"
            ) from None

        self._endpoints = parse_endpoints(endpoints)
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
        self._lock = threading.RLock()  # endpoint choice and token (_authenticate calls call)
        try:
            if username is not None:
                self._authenticate()
            else:
                self.call("reach", "maintenance/status", {})
        except BaseException:
            self.close()
            raise
        #: Whether etcd accepted ``username``/``password`` (an open etcd lets anyone write).
        self.authenticated = username is not None

    @property
    def endpoint(self) -> str:
        """The current endpoint's URL."""
        return self._url(self._current)

    def close(self) -> None:
        """Close the HTTP sessions (a stream still open keeps its own connection)."""
        for client in self._clients:
            client.session.close()

    # -- key-value --

    def put(self, action: str, key: bytes, value: bytes, *, lease: int = 0) -> None:
        body: dict[str, str | int] = {"key": _b64(key), "value": _b64(value)}
        if lease:
            body["lease"] = lease
        self.call(action, "kv/put", body)

    def delete(self, action: str, key: bytes) -> None:
        self.call(action, "kv/deleterange", {"key": _b64(key)})

    def range(self, action: str, prefix: bytes) -> tuple[int, list[tuple[bytes, bytes]]]:
        """(revision, [(key, value)]) of every key starting with ``prefix``."""
        answer = self.call(action, "kv/range", {"key": _b64(prefix), "range_end": _b64(range_end(prefix))})
        revision = int(answer.get("header", {}).get("revision", 0))
        return revision, [(_unb64(kv["key"]), _unb64(kv.get("value", ""))) for kv in answer.get("kvs", [])]

    def watch(self, prefix: bytes, start_revision: int) -> WatchStream:
        """Open a watch of every key starting with ``prefix``, from ``start_revision``.

        Returns once etcd answered the request; :meth:`WatchStream.wait_created`
        then waits for etcd to confirm the watch.
        """
        import requests

        body: dict[str, Any] = {"create_request": {
            "key": _b64(prefix), "range_end": _b64(range_end(prefix)), "start_revision": start_revision,
        }}
        reauthenticated = False
        while True:
            index = self._current
            client = self._clients[index]
            try:
                resp = client.session.post(client.get_url("watch"), json=body, stream=True,
                                           timeout=(self._timeout, None))
            except requests.RequestException as e:
                with self._lock:
                    if self._current == index:  # let the next attempt try the next endpoint
                        self._current = (index + 1) % len(self._clients)
                raise RegistryError(
                    f"etcd {self._url(index)}: cannot watch: unreachable ({_cause(e)})"
                ) from None
            if resp.status_code == 200:
                return WatchStream(self, resp)
            text = resp.text.strip()
            resp.close()
            if not reauthenticated and self._username is not None and any(s in text for s in _TOKEN_REFUSED):
                reauthenticated = True
                with self._lock:
                    self._authenticate()
                continue
            raise RegistryError(f"etcd {self._url(index)}: cannot watch: {text}")

    # -- requests --

    def call(self, action: str, path: str, body: dict[str, Any], *,
             auth: bool = True) -> dict[str, Any]:
        """POST ``body`` to ``/v3/<path>``; the answer's JSON."""
        import requests
        from etcd3gw import exceptions as gw

        attempts = len(self._clients)
        reauthenticated = False
        while True:
            index = self._current
            client = self._clients[index]
            try:
                if auth:
                    answer: dict[str, Any] = client.post(client.get_url(path), json=body)
                    return answer
                # Without the session's (maybe stale) token: etcd refuses any request with a bad one.
                answer = client.post(client.get_url(path), json=body, headers={"Authorization": None})
                return answer
            except (gw.ConnectionFailedError, gw.ConnectionTimeoutError) as e:
                attempts -= 1
                if attempts <= 0:
                    raise RegistryError(
                        f"etcd {self._url(index)}: cannot {action}: unreachable ({_cause(e)})"
                    ) from None
                with self._lock:
                    if self._current == index:
                        self._current = (index + 1) % len(self._clients)
            except gw.Etcd3Exception as e:
                detail = _detail(e)
                if (auth and self._username is not None and not reauthenticated
                        and any(sign in detail for sign in _TOKEN_REFUSED)):
                    reauthenticated = True
                    with self._lock:
                        self._authenticate()
                    continue
                raise RegistryError(f"etcd {self._url(index)}: cannot {action}: {detail}") from None
            except ValueError as e:  # an answer that is not JSON
                raise RegistryError(f"etcd {self._url(index)}: cannot {action}: bad answer ({e})") from None
            except requests.RequestException as e:  # anything else the HTTP layer raises
                raise RegistryError(f"etcd {self._url(index)}: cannot {action}: {_brief(e)}") from None

    def _authenticate(self) -> None:
        """Get a token for username/password and send it from now on."""
        answer = self.call(
            "authenticate", "auth/authenticate",
            {"name": self._username, "password": self._password}, auth=False,
        )
        token = answer.get("token")
        if not token:
            raise RegistryError(f"etcd {self.endpoint}: authentication returned no token")
        for client in self._clients:
            client.session.headers["Authorization"] = token

    def _url(self, index: int) -> str:
        scheme, host, port = self._endpoints[index]
        return f"{scheme}://{host}:{port}"


class Lease:
    """One etcd lease of ``ttl`` seconds (at least 2, etcd's minimum).

    :attr:`id` is None until :meth:`ensure` grants the lease, and again
    after :meth:`renew` found it gone or :meth:`forget`. Not locked: the
    owner serialises ensure/renew/forget (the registry calls them under its
    lock, the keep-alive thread included, through ``round``).
    """

    def __init__(self, client: GatewayClient, ttl: float) -> None:
        self._client = client
        self._ttl = ttl
        self.id: int | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def ensure(self) -> int:
        """The lease's id, granting it first when there is none."""
        if self.id is None:
            answer = self._client.call(
                "grant a lease", "lease/grant", {"TTL": max(2, math.ceil(self._ttl)), "ID": 0}
            )
            if not str(answer.get("ID", "")).isdigit():
                raise RegistryError(
                    f"etcd {self._client.endpoint}: cannot grant a lease: {answer.get('error', answer)}"
                )
            self.id = int(answer["ID"])
        return self.id

    def renew(self) -> bool:
        """One keep-alive request (the lease must be granted): whether etcd
        still has the lease. When it has not (it expired while etcd was out
        of reach, or was revoked), :attr:`id` becomes None."""
        assert self.id is not None, "renew() before ensure()"
        answer = self._client.call("keep the lease alive", "lease/keepalive", {"ID": self.id})
        if int(answer.get("result", {}).get("TTL", -1)) > 0:
            return True
        self.id = None
        return False

    def forget(self) -> int | None:
        """The id, which the lease no longer holds (for revoking it)."""
        lease, self.id = self.id, None
        return lease

    def revoke(self, action: str, lease: int) -> None:
        """Revoke ``lease`` (from :meth:`forget`): its keys go at once."""
        self._client.call(action, "lease/revoke", {"ID": lease})

    def start(self, round: Callable[[], object]) -> None:
        """Start, once, the thread that calls ``round`` every ttl/3 (every 0.5 s
        at most while it raises :class:`RegistryError`) until :meth:`stop`.
        ``round`` renews the lease and deals with its loss."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._keep_alive, args=(round,), name="zmicro-etcd-keepalive", daemon=True
            )
            self._thread.start()

    def stop(self) -> None:
        """Stop the thread and wait for it (unless called from it)."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=30)

    def _keep_alive(self, round: Callable[[], object]) -> None:
        interval = self._ttl / 3
        failing = False
        while not self._stop.wait(interval if not failing else min(interval, 0.5)):
            try:
                round()
            except RegistryError as e:
                if not failing:
                    log.warning("etcd registry: keep-alive failed (will retry): %s", e)
                failing = True
                continue
            if failing:
                log.info("etcd registry: keep-alive works again")
            failing = False


class KeyEvent(NamedTuple):
    """One change of a watched key (``value`` is empty for a deletion)."""

    deleted: bool
    key: bytes
    value: bytes


class WatchStream:
    """The gateway's stream of one watch, as :meth:`GatewayClient.watch` opened it.

    One thread reads it (:meth:`wait_created`, then :meth:`batches`); any
    thread may :meth:`interrupt` or :meth:`close` it, and both are no-ops
    once it is closed (so an interrupt never touches a reused fd).
    """

    def __init__(self, client: GatewayClient, resp: requests.Response) -> None:
        self._client = client
        self._resp = resp  # a requests Response, streaming
        self._lock = threading.Lock()
        self._closed = False
        self._messages = _lines(resp)

    def wait_created(self) -> None:
        """Wait for etcd to confirm the watch; :class:`RegistryError` if it does not."""
        try:
            first = next(self._messages)
        except Exception as e:  # noqa: BLE001 - any break of the stream
            raise RegistryError(f"etcd {self._client.endpoint}: cannot watch: {_brief(e)}") from None
        if not first.get("result", {}).get("created"):
            raise RegistryError(f"etcd {self._client.endpoint}: cannot watch: {first}")

    def batches(self) -> Iterator[list[KeyEvent]]:
        """The events, one list per message of the stream, until it breaks:
        it always ends by raising (etcd cancelled the watch, the connection
        dropped or was interrupted)."""
        for message in self._messages:
            result = message.get("result")
            if result is None:
                raise RuntimeError(f"watch error: {message}")
            if result.get("canceled") or result.get("compact_revision"):
                raise RuntimeError(f"watch canceled: {result}")
            yield [_key_event(event) for event in result.get("events", [])]

    def interrupt(self) -> None:
        """Wake the thread blocked reading the stream (shut its socket down)."""
        with self._lock:
            if self._closed:
                return
            try:
                fd = self._resp.raw._fp.fileno()  # the urllib3 response's socket
                sock = socket.socket(fileno=os.dup(fd))
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                finally:
                    sock.close()
            except (AttributeError, OSError, ValueError):
                pass

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._resp.close()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(data: str) -> bytes:
    return base64.b64decode(data)


def _key_event(event: dict[str, Any]) -> KeyEvent:
    kv = event.get("kv", {})
    return KeyEvent(event.get("type") == "DELETE", _unb64(kv.get("key", "")), _unb64(kv.get("value", "")))


def _detail(e: Exception) -> str:
    text = getattr(e, "detail_text", None) or str(e)
    try:
        text = json.loads(text).get("message", text)
    except (ValueError, AttributeError):
        pass
    return str(text).strip() or type(e).__name__


def _brief(e: Exception | str) -> str:
    text = str(e)
    return text if len(text) < 200 else text[:200] + "..."


def _cause(e: BaseException) -> str:
    """Why a request reached no etcd, in the OS's words when it said any
    ("[Errno 111] Connection refused", "[Errno -2] Name or service not
    known"). etcd3gw raises its own exception with no arguments (its text
    is in ``detail_text``) from requests' one, which wraps urllib3's, which
    wraps the socket's error: the root cause is at the end of that chain."""
    chain: list[BaseException] = []
    todo: list[BaseException] = [e]
    while todo and len(chain) < 16:  # bounded: chains can loop
        cur = todo.pop(0)
        if any(cur is seen for seen in chain):
            continue
        chain.append(cur)
        reason = getattr(cur, "reason", None)  # urllib3's MaxRetryError keeps it here
        todo += [x for x in (cur.__cause__, cur.__context__, reason, *cur.args)
                 if isinstance(x, BaseException)]
    for cur in reversed(chain):
        if isinstance(cur, OSError) and cur.strerror:
            return f"[Errno {cur.errno}] {cur.strerror}" if cur.errno is not None else cur.strerror
    for cur in chain:
        if isinstance(cur, TimeoutError) or "timeout" in type(cur).__name__.lower():
            return "no answer in time"
    for cur in chain:
        text = str(cur) or str(getattr(cur, "detail_text", "") or "")
        if text:
            return _brief(text)
    return type(e).__name__


def _lines(resp: requests.Response) -> Iterator[dict[str, Any]]:
    """The JSON messages of a gateway stream (one per line, chunks may split them)."""
    buffer = b""
    for chunk in resp.iter_content(chunk_size=None):
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            if line.strip():
                yield json.loads(line)
    raise ConnectionError("the watch stream ended")
