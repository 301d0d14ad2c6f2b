"""The zmicro echo service that the zmicro contenders call: one sync handler,
octet-stream (bytes in, bytes out), served by the blocking ``svc.run()``
(the fast path: the server waits in libzmq with the GIL released).

Two families:

- plaintext (``zmicro-sync``, ``zmicro-async``): ``insecure=True`` on the
  Service and on every client, so that they are compared with the plaintext
  baselines;
- secure (``zmicro-secure-*``): zmicro's defaults, no security argument at
  all, which after the security release means CurveZMQ with an enforced
  client allowlist and a MAC on every message. ``ZMICRO_INSECURE`` is
  removed from the environment so that it cannot turn them plaintext.

Every zmicro process of a run (probe, servers, clients) shares one key
store, ``ZMICRO_HOME`` under the benchmark's build directory (run.py sets
it, and empties it at the start of a run): the probe, which builds a Service
and a client with the defaults, goes through zmicro's first-run setup (the
key pair, trusted) before any server starts, so server and client trust
each other as one user's processes do. Never the user's own store.

Until the security release lands, zmicro's defaults are plaintext: the
secure contenders then still run (they measure the same thing as the
plaintext ones) and :func:`with_defaults` notes why they are not secure;
the probe reports it (``plaintext_defaults``) and run.py marks their rows,
keeps their targets out of met / missed and refuses to record them.
"""

from __future__ import annotations

import functools
import logging
import operator
import os
import time
import warnings
from collections.abc import Callable
from typing import TypeVar

from harness import HOST, NoAnswer

SERVICE = "bench"
ENDPOINT = "Bench.Echo"
CONTENT_TYPE = "application/octet-stream"
NOT_LANDED = "security release not landed"

T = TypeVar("T")


def probe(*names: str, secure: bool = False) -> None:
    """Import zmicro and check that it has what the benchmark calls: until
    it does, the contenders are reported unavailable with this reason. The
    secure contenders also build a Service and the clients with the
    defaults (on the first run this creates the key store under
    ``ZMICRO_HOME``) and note whether those are plaintext."""
    import zmicro

    missing = [n for n in ("Service", *names) if not hasattr(zmicro, n)]
    if missing:
        raise SystemExit(f"zmicro {zmicro.__version__} has no "
                         f"{', '.join('zmicro.' + n for n in missing)} yet")
    require_home()
    if secure:
        with_defaults("zmicro.Service(...)",
                      lambda: zmicro.Service(SERVICE, address=address(0)))
        for n in names:
            with_defaults(f"zmicro.{n}()", getattr(zmicro, n))


def require_home() -> None:
    """Every zmicro process of the benchmark runs with its own key store,
    never the user's: refuse to start without ``ZMICRO_HOME``."""
    if not os.environ.get("ZMICRO_HOME"):
        raise SystemExit("ZMICRO_HOME is not set (run.py sets it to a "
                         "directory under bench/build): the benchmark never "
                         "uses the user's key store")


def info(secure: bool = False) -> dict:
    import zmq

    import zmicro

    out = {"zmicro": zmicro.__version__, "pyzmq": zmq.__version__,
           "libzmq": zmq.zmq_version(),
           "zmicro_home": os.environ.get("ZMICRO_HOME", "")}
    if secure:
        out["security"] = "zmicro's defaults (no insecure=)"
        if PLAINTEXT_DEFAULTS:
            out["plaintext_defaults"] = PLAINTEXT_DEFAULTS[0]
    else:
        out["security"] = "insecure=True"
    return out


def address(port: int) -> str:
    return f"tcp://{HOST}:{port}"


class _Said(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


# What zmicro says when it runs plaintext (python/zmicro/security/transport.py).
_PLAINTEXT_SAYS = ("no transport security", "insecure mode")
# Why zmicro's defaults are plaintext in this process (empty: they are not).
PLAINTEXT_DEFAULTS: list[str] = []


def with_defaults(what: str, make: Callable[[], T]) -> T:
    """``make()`` (a Service or a client with zmicro's defaults), with
    ``ZMICRO_INSECURE`` removed from the environment first. When zmicro
    says it runs plaintext (a warning, through logging or ``warnings``,
    saying so, or an ``insecure`` attribute that is True), the reason is
    appended to :data:`PLAINTEXT_DEFAULTS`; the object is returned either
    way, so that the benchmark runs before the security release too."""
    os.environ.pop("ZMICRO_INSECURE", None)
    said = _Said()
    log = logging.getLogger("zmicro")
    log.addHandler(said)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            obj = make()
    finally:
        log.removeHandler(said)
    messages = said.messages + [str(w.message) for w in caught]
    plaintext = [m for m in messages
                 if any(s in m.lower() for s in _PLAINTEXT_SAYS)]
    if plaintext or getattr(obj, "insecure", False) is True:
        import zmicro

        if plaintext:  # "zmicro: this release has no ...: traffic is ..."
            said_ = plaintext[0].removeprefix("zmicro: ").split(":")[0]
            why = f'says "{said_}"'
        else:
            why = "has insecure=True"
        PLAINTEXT_DEFAULTS.append(f"{NOT_LANDED}: zmicro {zmicro.__version__}'s "
                                  f"{what} {why}")
    return obj


def server(args, secure: bool = False) -> None:
    import zmicro

    require_home()
    if secure:
        svc = with_defaults("zmicro.Service(...)", lambda: zmicro.Service(
            SERVICE, address=address(args.port)))
    else:
        svc = zmicro.Service(SERVICE, address=address(args.port), insecure=True)

    @svc.handler(ENDPOINT)
    def echo(req: bytes, ctx) -> bytes:
        return req

    svc.run()


_HANDSHAKE_FAILED = ("EVENT_HANDSHAKE_FAILED_PROTOCOL",
                     "EVENT_HANDSHAKE_FAILED_NO_DETAIL",
                     "EVENT_HANDSHAKE_FAILED_AUTH")


def _null_handshake(port: int, timeout_s: float) -> tuple[bool | None, str]:
    """Connect a plain DEALER (ZMTP NULL mechanism, what a plaintext peer
    speaks) and watch its monitor: (True, how) when the server completed the
    handshake (it accepts plaintext peers), (False, how) when the handshake
    failed (a CURVE server answers NULL with a mechanism mismatch), (None,
    "") when neither happened in time. Independent of zmicro's client and of
    its error codes: no message is sent."""
    import zmq
    from zmq.utils.monitor import recv_monitor_message

    failed = {getattr(zmq, n) for n in _HANDSHAKE_FAILED}
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    mon = sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED
                                  | functools.reduce(operator.or_, failed))
    try:
        sock.connect(address(port))
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            if not mon.poll(int(left * 1000) + 1):
                break
            event = recv_monitor_message(mon)
            if event["event"] == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                return True, "the server completed a ZMTP NULL handshake"
            if event["event"] in failed:
                # The value is a ZMQ_PROTOCOL_ERROR_* code for protocol
                # failures (a mechanism mismatch here), else an errno.
                value = int(event["value"])
                detail = f"errno {value}"
                if event["event"] == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL:
                    try:
                        detail = zmq.Event(value).name
                    except ValueError:
                        detail = f"protocol error {value:#x}"
                return False, (f"ZMTP NULL handshake refused: "
                               f"{zmq.Event(event['event']).name} ({detail})")
        return None, ""
    finally:
        sock.disable_monitor()
        mon.close()
        sock.close()
        ctx.term()


def plaintext_ping(args, body: bytes) -> str | None:
    """Does the server accept a plaintext peer? First at the transport: a
    ZMTP NULL handshake must fail against a secure (CURVE) server. If the
    monitor saw neither outcome in time, a plaintext zmicro client
    (``insecure=True``) calls it: that call must end as UNAVAILABLE or
    DEADLINE_EXCEEDED; any reply, an error reply included, means the server
    speaks plaintext."""
    import zmicro

    timeout = min(args.timeout_ms / 1000, 1.5)
    accepted, how = _null_handshake(args.port, timeout)
    if accepted is True:
        return how
    if accepted is False:
        raise NoAnswer(how)
    client = zmicro.Client(insecure=True)
    try:
        client.call(SERVICE, ENDPOINT, body, address=address(args.port),
                    content_type=CONTENT_TYPE, timeout=timeout)
    except zmicro.RPCError as e:
        if e.code in (zmicro.Code.UNAVAILABLE, zmicro.Code.DEADLINE_EXCEEDED):
            raise NoAnswer(f"{e.code.name}: {e.detail}") from None
        return f"an error reply: {e.code.name}: {e.detail}"
    finally:
        client.close()
    return "a reply"
