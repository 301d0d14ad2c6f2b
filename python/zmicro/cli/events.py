"""``zmicro publish`` and ``zmicro subscribe``: events from the command line,
on the embedded broker (the registry names the subscribers).

::

    zmicro publish order.created '{"id": 1}' [-m k=v ...] [--wait] [--timeout S]
    echo '{"id": 1}' | zmicro publish order.created -
    zmicro subscribe order.created [--queue billing] [--json]

``publish`` signs and sends one event with the JSON body as given
(``application/json``, or converted with ``--content-type msgpack``). A
process cannot leave its outbox behind, so it always waits, up to
``--timeout``, until every queue group acked the event or gave it up (dead
letter): exit 0 when none gave it up, 1 otherwise or when the time ran out
(and, with ``--wait``, 1 when no subscriber exists). ``--wait`` prints the
outcome per group as JSON. With no subscriber at all the event waits for
one up to ``--timeout``; then, without ``--wait``, a note on stderr and
exit 0 (publishing to nobody is not an error in publish/subscribe).

``--broker URL`` (or ``$ZMICRO_BROKER``): ``embedded`` (the default) or a
NATS server (``nats://host:4222``, ``tls://...``: :class:`NatsBroker`, with
JetStream). On NATS, ``publish`` returns once the server stored the event
(the subscribers' acks are the stream's business: ``--wait`` is refused).
NATS secrets: ``--creds FILE`` (a ``.creds`` file) or ``--token-env VAR``
(the name of an environment variable holding the token) keep them off the
command line, where other users' ``ps`` can read them; a password in the
URL (``nats://user:pass@host``) works too. Nothing this command prints
contains the password or the token: URLs are shown as ``user:***@host``.

``subscribe`` serves the topic from a service of its own,
``zmicro-cli-<pid>`` (in queue group ``--queue``, else a broadcast
subscriber), and prints one line per event as it arrives: ``published_at
topic event_id body`` (JSON body), or with ``--json`` one JSON object per
line (``topic``, ``event_id`` in hex, ``published_at``, ``principal``,
``metadata``, ``content_type``, ``body``). SIGINT or SIGTERM drains: events
in hand are acked, the subscription deregisters, exit 0.
"""

from __future__ import annotations

import asyncio
import datetime
import functools
import logging
import os
import sys
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

import click
import msgspec
import zmq

from .. import _core, codec
from ..broker.base import BrokerError, check_topic
from ..broker.embedded import DeliveryReport, EmbeddedBroker
from ..errors import RPCError, TransportError, WireError
from ..registry import RegistryError
from ..security import Security
from ._shared import EXIT_ENVIRONMENT, EXIT_FAILED, Failure, _json, _registry, _registry_option
from .calls import _parse_metadata, _read_json

#: Seconds publish waits for the groups' acks by default.
DEFAULT_TIMEOUT = 10.0

_line = msgspec.json.Encoder()
_NATS_SCHEMES = ("nats://", "tls://")
#: Seconds publish waits beyond --timeout for the engine's own verdict.
_GRACE = 2.0


def _broker_option(fn: Any) -> Any:
    return click.option(
        "--broker", "broker_url", metavar="URL", envvar="ZMICRO_BROKER",
        help="embedded, or a NATS server: nats://host:4222 "
             "[default: $ZMICRO_BROKER, else embedded].")(fn)


def _nats_auth_options(fn: Any) -> Any:
    fn = click.option(
        "--token-env", metavar="VAR",
        help="NATS: read the token from environment variable VAR (not the command "
             "line, which other users can see).")(fn)
    return click.option(
        "--creds", type=click.Path(exists=True, dir_okay=False), metavar="FILE",
        help="NATS: a user credentials (.creds) file.")(fn)


def _url_secrets(url: str | None) -> list[str]:
    """The password in `url`'s user-info, as written and decoded."""
    if not url:
        return []
    # Any scheme: a mistyped one must not print its password either.
    out: list[str] = []
    for part in url.split(","):  # nats-py takes comma-separated servers
        userinfo = part.rpartition("@")[0].partition("://")[2] if "@" in part else ""
        user, colon, password = userinfo.partition(":")
        if not colon:
            password = user  # nats://TOKEN@host: the whole user-info is the token
        if password:
            out += [password, unquote(password)]
    return out


def _redact(text: str, hidden: list[str]) -> str:
    """`text` with every secret in `hidden` replaced by ***."""
    for secret in sorted(set(hidden), key=len, reverse=True):
        if secret:
            text = text.replace(secret, "***")
    return text


class _RedactFilter(logging.Filter):
    """Rewrites a log record whose message contains a secret."""

    def __init__(self, hidden: list[str]) -> None:
        super().__init__()
        self.hidden = hidden

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = _redact(message, self.hidden)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


def _redacting(fn: Callable[..., None]) -> Callable[..., None]:
    """Wrap a command so that nothing it prints names the broker's password
    or token (URLs from --broker/$ZMICRO_BROKER, --token-env): not the
    errors it raises, nor the log lines of the libraries it calls (these
    commands configure no logging, so warnings would go to stderr through
    logging's last resort: a handler of the same shape that redacts takes
    its place while the command runs)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        hidden = _url_secrets(kwargs.get("broker_url"))
        if kwargs.get("token_env"):
            hidden.append(os.environ.get(kwargs["token_env"], ""))
        hidden = [h for h in hidden if h]
        root = logging.getLogger()
        redact = _RedactFilter(hidden)
        own: logging.Handler | None = None
        if not root.handlers:
            own = logging.StreamHandler(sys.stderr)
            own.setLevel(logging.WARNING)
            root.addHandler(own)
        handlers = list(root.handlers)
        for handler in handlers:
            handler.addFilter(redact)
        try:
            fn(*args, **kwargs)
        except click.ClickException as exc:
            # click declares message Final, but reads it from the instance
            # when it prints (as Failure's exit_code in _shared.py).
            exc.message = _redact(exc.message, hidden)  # type: ignore[misc]
            raise
        finally:
            for handler in handlers:
                handler.removeFilter(redact)
            if own is not None:
                root.removeHandler(own)

    return wrapper


def _nats_url(url: str | None) -> str | None:
    """The NATS URL of --broker, or None for the embedded broker."""
    if url is None or url.strip() in ("", "embedded"):
        return None
    if not url.startswith(_NATS_SCHEMES):
        # (_redacting hides a password in it)
        raise click.BadParameter(f"{url!r} is neither 'embedded' nor nats://host:port",
                                 param_hint="--broker")
    return url


def _nats_broker(url: str, creds: str | None, token_env: str | None) -> Any:
    from ..broker.nats import NatsBroker

    token = None
    if token_env is not None:
        token = os.environ.get(token_env)
        if not token:
            raise click.BadParameter(f"${token_env} is not set", param_hint="--token-env")
    return NatsBroker(url, user_credentials=creds, token=token)


@click.command()
@click.argument("topic")
@click.argument("body", required=False)
@click.option("--metadata", "-m", multiple=True, metavar="KEY=VALUE",
              help="Event metadata entry (repeatable); values are sent as UTF-8.")
@click.option("--wait", is_flag=True,
              help="Print the outcome per queue group (JSON); no subscriber is a failure.")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True),
              default=DEFAULT_TIMEOUT, show_default=True, metavar="SECONDS",
              help="How long to wait for a subscriber and for every group's ack.")
@click.option("--content-type", type=click.Choice([codec.JSON, codec.MSGPACK]),
              default=codec.JSON, show_default=True,
              help="Codec of the body: JSON is sent as given; msgpack is converted "
                   "from the JSON.")
@_broker_option
@_nats_auth_options
@_registry_option
@_redacting
def publish(topic: str, body: str | None, metadata: tuple[str, ...], wait: bool,
            timeout: float, content_type: str, broker_url: str | None,
            creds: str | None, token_env: str | None, registry_dir: str | None) -> None:
    """Publish one event to TOPIC with the JSON BODY (default: stdin).

    Waits (up to --timeout) until every queue group acked it; exit 1 if a
    group gave it up (dead letter) or time ran out.
    """
    try:
        check_topic(topic)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="TOPIC") from None
    text, value = _read_json(body)
    payload = text.encode() if content_type == codec.JSON else codec.get_codec(
        content_type).encode(value)
    entries = _parse_metadata(metadata)
    nats = _nats_url(broker_url)
    if nats is None and (creds or token_env):
        raise click.UsageError("--creds and --token-env are for a NATS --broker")
    if nats is not None and wait:
        raise click.UsageError("--wait needs the embedded broker (on NATS, publish returns "
                               "once the server stored the event)")
    registry = _registry(registry_dir) if nats is None else None
    try:
        security = Security.resolve()
        frame, event_id = _core.encode_event(
            topic, payload, secrets=security.secrets,
            request_id=secrets.randbits(63) or 1, content_type=content_type,
            metadata=entries or None, principal=security.public_key)
        if nats is not None:
            _publish_nats(_nats_broker(nats, creds, token_env), topic, frame, event_id,
                          timeout)
            return
        report, dropped, unrouted = asyncio.run(_publish(registry, topic, frame, event_id,
                                                         timeout))
    except RPCError as exc:
        if isinstance(exc.__cause__, WireError):  # metadata the wire refuses
            raise click.UsageError(exc.detail) from None
        raise Failure(f"{exc.code.name}: {exc.detail}", EXIT_FAILED) from None
    except (WireError, ValueError) as exc:
        raise click.UsageError(str(exc)) from None
    except (RegistryError, TransportError, zmq.ZMQError, BrokerError) as exc:
        raise Failure(str(exc), EXIT_ENVIRONMENT) from None
    finally:
        if registry is not None:
            registry.close()

    if report is None:  # time ran out
        missing = ", ".join(f"{g}: {o}" for g, o in sorted(dropped.groups.items())
                            if o != "acked") if dropped is not None else ""
        raise Failure(f"not acked by every group within {timeout:g} s"
                      + (f" ({missing})" if missing else ""), EXIT_FAILED)
    if wait:
        click.echo(_json({"topic": topic, "event_id": event_id.hex(), "groups": report.groups}))
    if not report.groups:
        if wait:
            raise Failure(f"no subscriber for {topic!r} within {timeout:g} s", EXIT_FAILED)
        click.echo(f"note: no subscriber for {topic!r} within {timeout:g} s "
                   f"({unrouted} event dropped)", err=True)
        return
    failed = {g: o for g, o in report.groups.items() if o != "acked"}
    if failed:
        raise Failure("; ".join(f"{g}: {o}" for g, o in sorted(failed.items())), EXIT_FAILED)


def _publish_nats(broker: Any, topic: str, frame: bytes, event_id: bytes,
                  timeout: float) -> None:
    try:
        broker.publish(topic, frame, event_id=event_id, timeout=timeout)
    finally:
        broker.close()


async def _publish(registry: Any, topic: str, frame: bytes, event_id: bytes,
                   timeout: float) -> tuple[DeliveryReport | None, DeliveryReport | None, int]:
    """(report, or None when time ran out; what closing dropped; unrouted)."""
    broker = EmbeddedBroker(registry, ack_timeout=timeout, max_age=max(timeout * 2, 120.0))
    report: DeliveryReport | None = None
    try:
        try:
            # The engine gives up waiting for a subscriber at `timeout`: the
            # grace lets that outcome (no group) arrive before this wait ends.
            report = await asyncio.wait_for(
                broker.publish_wait_async(topic, frame, event_id=event_id, timeout=timeout),
                timeout + _GRACE)
        except (asyncio.TimeoutError, TimeoutError):
            report = None
    finally:
        await broker.aclose(linger=0.0)
        dropped = broker.dropped
        unrouted = broker.stats()["unrouted"]
    return report, (dropped[0] if dropped else None), unrouted


@click.command()
@click.argument("topic")
@click.option("--queue", "-q", metavar="GROUP",
              help="Join queue group GROUP (each event goes to one member) "
                   "[default: get every event].")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per event.")
@_broker_option
@_nats_auth_options
@_registry_option
@_redacting
def subscribe(topic: str, queue: str | None, as_json: bool, broker_url: str | None,
              creds: str | None, token_env: str | None, registry_dir: str | None) -> None:
    """Print the events of TOPIC as they arrive, until SIGINT or SIGTERM."""
    from ..service import Service

    try:
        check_topic(topic)
        if queue is not None:
            check_topic(queue)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    nats = _nats_url(broker_url)
    if nats is None and (creds or token_env):
        raise click.UsageError("--creds and --token-env are for a NATS --broker")
    broker: Any = None
    if nats is not None:
        try:
            broker = _nats_broker(nats, creds, token_env)
        except BrokerError as exc:
            raise Failure(str(exc), EXIT_ENVIRONMENT) from None
    registry = _registry(registry_dir)
    svc = Service(f"zmicro-cli-{os.getpid()}", registry=registry, broker=broker)

    @svc.subscriber(topic, queue=queue)
    def on_event(event: Any, ctx: Any) -> None:
        if as_json:
            line = _line.encode({
                "topic": ctx.topic, "event_id": ctx.event_id.hex(),
                "published_at": ctx.published_at, "principal": ctx.principal,
                "metadata": dict(ctx.metadata), "content_type": ctx.content_type,
                "body": event}).decode()
        else:
            when = datetime.datetime.fromtimestamp(ctx.published_at, datetime.timezone.utc)
            line = (f"{when.isoformat(timespec='milliseconds')} {ctx.topic} "
                    f"{ctx.event_id.hex()} {_line.encode(event).decode()}")
        click.echo(line)

    def announce() -> None:
        click.echo(f"subscribed to {topic!r}"
                   + (f" in group {queue!r}" if queue else " (every event)")
                   + f" at {svc.address}", err=True)

    try:
        _run_announced(svc, announce)
    except (RegistryError, TransportError, zmq.ZMQError, BrokerError) as exc:
        raise Failure(str(exc), EXIT_ENVIRONMENT) from None
    finally:
        if broker is not None:  # (a broker given to a Service is the giver's to close)
            broker.close()
        registry.close()


def _run_announced(svc: Any, announce: Callable[[], None]) -> None:
    """svc.run(), telling stderr once it is bound and registered."""

    def wait() -> None:
        while svc.address is None:
            time.sleep(0.01)
        announce()

    threading.Thread(target=wait, daemon=True).start()
    svc.run()
