"""``zmicro call``, ``list`` and ``describe``: call an endpoint, and show
what the registry holds."""

from __future__ import annotations

import sys
from typing import Any

import click
import msgspec
import zmq

from .. import codec
from ..broker.base import TOPIC_PREFIX
from ..client import DEFAULT_TIMEOUT, Client
from ..errors import RPCError, TransportError, WireError
from ..registry import RegistryError, ServiceRecord
from ._shared import (
    _ADDRESS_SCHEMES,
    EXIT_ENVIRONMENT,
    EXIT_FAILED,
    Failure,
    _indent,
    _json,
    _registry,
    _registry_option,
    _table,
)


def _read_body(body: str | None) -> tuple[str, str]:
    """(JSON text, where it came from) for the BODY argument."""
    if body is not None and body != "-":
        return body, "BODY"
    stdin = sys.stdin  # (click.get_text_stream is deprecated since click 8.5)
    if body is None and stdin.isatty():
        raise click.UsageError("give BODY as an argument, or pipe JSON on stdin "
                               "(BODY '-' reads the terminal)")
    return stdin.read(), "BODY (stdin)"


def _read_json(body: str | None) -> tuple[str, Any]:
    """(JSON text, its decoded value) for the BODY argument; a usage error
    saying what is wrong when it is empty or not JSON."""
    text, source = _read_body(body)
    if not text.strip():
        raise click.BadParameter("empty: give a JSON value (e.g. {} or null)", param_hint=source)
    try:
        return text, msgspec.json.decode(text)
    except msgspec.DecodeError as exc:
        raise click.BadParameter(f"not valid JSON: {exc}", param_hint=source) from None


def _parse_metadata(pairs: tuple[str, ...]) -> dict[str, str]:
    metadata: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint="--metadata")
        if key in metadata:
            raise click.BadParameter(f"key {key!r} given twice", param_hint="--metadata")
        metadata[key] = value
    return metadata


def _has_bytes(value: Any) -> bool:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return True
    if isinstance(value, dict):
        return any(_has_bytes(k) or _has_bytes(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return any(_has_bytes(v) for v in value)
    return False


@click.command()
@click.argument("service")
@click.argument("endpoint")
@click.argument("body", required=False)
@click.option("--address", metavar="ADDR",
              help="Call this node (tcp://host:port or ipc://path) instead of "
                   "asking the registry.")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True),
              default=DEFAULT_TIMEOUT, show_default=True, metavar="SECONDS",
              help="Deadline of the call.")
@click.option("--metadata", "-m", multiple=True, metavar="KEY=VALUE",
              help="Request metadata entry (repeatable); values are sent as UTF-8.")
@click.option("--content-type", type=click.Choice([codec.JSON, codec.MSGPACK]),
              default=codec.JSON, show_default=True,
              help="Codec on the wire: JSON is sent as given; msgpack is converted "
                   "from the JSON, and the reply back to JSON.")
@click.option("--server-key", metavar="KEY",
              help="The node's Curve public key (Z85 or a .key file), with --address "
                   "[default: the trusted registry's, else this user's own].")
@_registry_option
def call(service: str, endpoint: str, body: str | None, address: str | None,
         timeout: float, metadata: tuple[str, ...], content_type: str,
         server_key: str | None, registry_dir: str | None) -> None:
    """Call ENDPOINT of SERVICE with the JSON request BODY (default: stdin).

    Prints the reply as indented JSON; bytes in a msgpack reply appear as
    base64 strings. An error reply prints "error: CODE: detail" on stderr
    and exits with status 1.
    """
    text, value = _read_json(body)
    if address is not None and not address.startswith(_ADDRESS_SCHEMES):
        raise click.BadParameter(f"{address!r} is not tcp://host:port or ipc://path",
                                 param_hint="--address")
    entries = _parse_metadata(metadata)

    if content_type == codec.JSON:
        # The JSON goes out byte for byte; the reply is only re-indented.
        request, response_type = msgspec.Raw(text.encode()), msgspec.Raw
    else:
        request, response_type = value, None
    registry = None if address is not None else _registry(registry_dir)
    client = Client(registry=registry, timeout=timeout, content_type=content_type)
    try:
        reply = client.call(service, endpoint, request, metadata=entries or None,
                            address=address, response_type=response_type,
                            server_key=server_key)
    except RPCError as exc:
        if isinstance(exc.__cause__, WireError):  # names or metadata the wire refuses
            raise click.UsageError(exc.detail) from None
        raise Failure(f"{exc.code.name}: {exc.detail}", EXIT_FAILED) from None
    except (WireError, ValueError) as exc:
        raise click.UsageError(str(exc)) from None
    except (RegistryError, TransportError, zmq.ZMQError) as exc:
        raise Failure(str(exc), EXIT_ENVIRONMENT) from None
    finally:
        client.close()
        if registry is not None:
            registry.close()

    if isinstance(reply, msgspec.Raw):
        try:
            click.echo(msgspec.json.format(bytes(reply), indent=2).decode())
        except (msgspec.DecodeError, UnicodeDecodeError):
            raise Failure("the reply is not valid JSON", EXIT_FAILED) from None
        return
    try:
        click.echo(_json(reply))
    except (msgspec.EncodeError, TypeError) as exc:
        raise Failure(f"the reply cannot be shown as JSON: {exc}", EXIT_FAILED) from None
    if _has_bytes(reply):
        click.echo("note: bytes in the reply are shown as base64 strings", err=True)


# -- list, describe ------------------------------------------------------------


def _records(registry_dir: str | None, name: str | None) -> list[ServiceRecord]:
    registry = _registry(registry_dir)
    try:
        return registry.list() if name is None else registry.get(name)
    except RegistryError as exc:
        raise Failure(str(exc), EXIT_ENVIRONMENT) from None
    except ValueError as exc:  # an invalid service name
        raise click.BadParameter(str(exc), param_hint="SERVICE") from None
    finally:
        registry.close()


def _pairs(mapping: dict[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(mapping.items()))


def _topic_entry(record: ServiceRecord) -> dict[str, Any]:
    return {"topic": record.name[len(TOPIC_PREFIX):], "group": record.version or None,
            "members": [{"service": n.metadata.get("service", ""), "node": n.id,
                         "address": n.address} for n in record.nodes]}


@click.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@_registry_option
def list_(as_json: bool, registry_dir: str | None) -> None:
    """List the registered services (versions, node and endpoint counts),
    then the topics subscribers registered: per queue group ("(broadcast)":
    every subscriber gets each event), the member nodes (service@address).

    With --json, one entry per registry record, as before; a topic's record
    adds "topic", "group" (null: broadcast) and "members".
    """
    records = _records(registry_dir, None)
    if as_json:
        click.echo(_json([{"name": r.name, "version": r.version, "nodes": len(r.nodes),
                           "endpoints": [e.name for e in r.endpoints]}
                          | (_topic_entry(r) if r.name.startswith(TOPIC_PREFIX) else {})
                          for r in records]))
        return
    services = [r for r in records if not r.name.startswith(TOPIC_PREFIX)]
    topics = [r for r in records if r.name.startswith(TOPIC_PREFIX)]
    if not records:
        click.echo("no services registered", err=True)
        return
    tables = []
    rows: list[tuple[str, ...]]
    if services:
        rows = [("SERVICE", "VERSION", "NODES", "ENDPOINTS")]
        rows += [(r.name, r.version or "-", str(len(r.nodes)), str(len(r.endpoints)))
                 for r in services]
        tables.append(_table(rows))
    if topics:
        rows = [("TOPIC", "GROUP", "MEMBERS")]  # (a table of its own: 3 columns)
        for r in sorted(topics, key=lambda r: (r.name, r.version)):
            entry = _topic_entry(r)
            members = ", ".join(sorted(f"{m['service'] or m['node']}@{m['address']}"
                                       for m in entry["members"]))
            rows.append((entry["topic"], r.version or "(broadcast)", members or "-"))
        tables.append(_table(rows))
    click.echo("\n\n".join(tables))


def _describe(record: ServiceRecord) -> str:
    lines = [f"{record.name} {record.version or '(no version)'}"]
    if record.metadata:
        lines.append(f"  metadata: {_pairs(record.metadata)}")
    lines.append("  nodes:")
    for node in record.nodes:
        extra = f"  {_pairs(node.metadata)}" if node.metadata else ""
        lines.append(f"    {node.id}  {node.address}{extra}")
    lines.append("  endpoints:")
    for ep in record.endpoints:
        lines.append(f"    {ep.name}")
        if ep.metadata:
            lines.append(f"      metadata: {_pairs(ep.metadata)}")
        for label, schema in (("request", ep.request), ("response", ep.response)):
            if schema is None:
                lines.append(f"      {label}: (untyped)")
            else:
                lines.append(f"      {label}:")
                lines.append(_indent(_json(schema), 8))
    return "\n".join(lines)


@click.command()
@click.argument("service")
@click.option("--json", "as_json", is_flag=True, help="Print the registry records as JSON.")
@_registry_option
def describe(service: str, as_json: bool, registry_dir: str | None) -> None:
    """Show SERVICE: versions, metadata, nodes, endpoints and their JSON schemas."""
    records = _records(registry_dir, service)
    if not records:
        raise Failure(f"service {service!r} is not registered", EXIT_FAILED)
    if as_json:
        click.echo(_json(records))
        return
    click.echo("\n\n".join(_describe(r) for r in records))
