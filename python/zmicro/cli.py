"""The ``zmicro`` command: call services and look them up in the registry.

::

    zmicro call greeter Greeter.Hello '{"name": "Ada"}'
    echo '{"name": "Ada"}' | zmicro call greeter Greeter.Hello
    zmicro call greeter Greeter.Hello '{"name": "Ada"}' --address tcp://127.0.0.1:5555
    zmicro list [--json]
    zmicro describe greeter [--json]
    zmicro health greeter [--json]
    zmicro run myapp.services:greeter [--workers 4] [--address tcp://127.0.0.1:*]
    zmicro keygen [--out DIR --name NAME] [--force]
    zmicro trust KEY_OR_FILE [--name NAME] [--role ROLE ...]
    zmicro trust --remove KEY_OR_FILE
    zmicro keys

The Python API does the work (:class:`~zmicro.Client`, the registry); this
module turns arguments into calls and results into text.

Exit status (``EXIT_*`` below): 0 success; 1 the call failed with an RPC
error (the service's, or ``UNAVAILABLE`` when no node could be reached) or
the service to describe is not registered, ``health`` found no serving node,
or a ``run`` worker failed; 2 usage error (bad option, invalid JSON, a
``run`` target that is not a service); 3 the registry or the transport
could not be used.
"""

from __future__ import annotations

import importlib
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
from typing import Any

import click
import msgspec
import zmq

from . import __version__, codec, health as _health
from .client import DEFAULT_TIMEOUT, Client
from .errors import RPCError, TransportError, WireError
from .registry import EmbeddedRegistry, Registry, RegistryError, ServiceRecord, from_url
from .security import (
    ALGORITHMS,
    KeyStore,
    KeyStoreError,
    MacSecrets,
    MacSecretsError,
    Security,
    fingerprint,
    load_public_key,
    secrets_path,
    write_keypair,
)

__all__ = ["EXIT_ENVIRONMENT", "EXIT_FAILED", "EXIT_USAGE", "main"]

EXIT_FAILED = 1       # an RPC error, or no such service
EXIT_USAGE = 2        # click's own status for usage errors
EXIT_ENVIRONMENT = 3  # registry or transport unusable

_pretty = msgspec.json.Encoder()
_ADDRESS_SCHEMES = ("tcp://", "ipc://")


class Failure(click.ClickException):
    """Print ``error: <message>`` on stderr and exit with ``exit_code``."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


def _remember_registry_url(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    if value is not None:
        source = ctx.get_parameter_source(param.name)
        ctx.meta["zmicro.registry_url"] = (value, source is click.core.ParameterSource.COMMANDLINE)


def _registry_option(fn):
    fn = click.option(
        "--registry", "registry_url", metavar="URL", envvar="ZMICRO_REGISTRY",
        expose_value=False, callback=_remember_registry_url,
        help="The registry, as a URL: etcd://host:2379, embedded:///dir, ... "
             "[default: $ZMICRO_REGISTRY, else the embedded registry].",
    )(fn)
    return click.option(
        "--registry-dir",
        type=click.Path(exists=True, file_okay=False),
        help="The embedded registry's directory "
             "[default: $ZMICRO_REGISTRY_DIR, else ~/.local/state/zmicro/registry].",
    )(fn)


def _registry(registry_dir: str | None) -> Registry:
    """--registry-dir, else --registry / $ZMICRO_REGISTRY, else the embedded default."""
    url, explicit = click.get_current_context().meta.get("zmicro.registry_url", (None, False))
    if registry_dir is not None and explicit:
        raise click.UsageError("give --registry or --registry-dir, not both")
    try:
        if registry_dir is None and url:
            return from_url(url)
        return EmbeddedRegistry(registry_dir)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--registry") from None
    except RegistryError as exc:
        raise Failure(str(exc), EXIT_ENVIRONMENT) from None


def _json(value: Any) -> str:
    return msgspec.json.format(_pretty.encode(value), indent=2).decode()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="zmicro")
def main() -> None:
    """Call zmicro services and look them up in the registry.

    Exit status: 0 success, 1 RPC error or unknown service, 2 usage error,
    3 registry or transport unusable.
    """


# -- call ----------------------------------------------------------------------


def _read_body(body: str | None) -> tuple[str, str]:
    """(JSON text, where it came from) for the BODY argument."""
    if body is not None and body != "-":
        return body, "BODY"
    stdin = click.get_text_stream("stdin")
    if body is None and stdin.isatty():
        raise click.UsageError("give BODY as an argument, or pipe JSON on stdin "
                               "(BODY '-' reads the terminal)")
    return stdin.read(), "BODY (stdin)"


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


@main.command()
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
    text, source = _read_body(body)
    if not text.strip():
        raise click.BadParameter("empty: give a JSON value (e.g. {} or null)", param_hint=source)
    try:
        value = msgspec.json.decode(text)
    except msgspec.DecodeError as exc:
        raise click.BadParameter(f"not valid JSON: {exc}", param_hint=source) from None
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
        raise Failure(f"{exc.code.name}: {exc.detail}", EXIT_FAILED) from None
    except (WireError, ValueError) as exc:  # names or metadata the wire refuses
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


def _table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip()
                     for row in rows)


def _pairs(mapping: dict[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(mapping.items()))


@main.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@_registry_option
def list_(as_json: bool, registry_dir: str | None) -> None:
    """List the registered services: versions, node and endpoint counts."""
    records = _records(registry_dir, None)
    if as_json:
        click.echo(_json([{"name": r.name, "version": r.version, "nodes": len(r.nodes),
                           "endpoints": [e.name for e in r.endpoints]} for r in records]))
        return
    if not records:
        click.echo("no services registered", err=True)
        return
    rows = [("SERVICE", "VERSION", "NODES", "ENDPOINTS")]
    rows += [(r.name, r.version or "-", str(len(r.nodes)), str(len(r.endpoints)))
             for r in records]
    click.echo(_table(rows))


def _indent(text: str, spaces: int) -> str:
    return "\n".join(" " * spaces + line for line in text.splitlines())


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


@main.command()
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


# -- keygen, trust, keys -------------------------------------------------------

_FINGERPRINT_SHOWN = 16  # hex digits: 64 bits, plenty to tell keys apart by eye


def _home_option(fn):
    return click.option(
        "--home", "home_dir", type=click.Path(file_okay=False), metavar="DIR",
        help="The key store [default: $ZMICRO_HOME, else ~/.config/zmicro].",
    )(fn)


def _store(home_dir: str | None) -> KeyStore:
    try:
        return KeyStore(home_dir)
    except KeyStoreError as exc:
        raise Failure(str(exc), EXIT_ENVIRONMENT) from None


def _show_key(label: str, public: str) -> None:
    click.echo(f"{label}public key:  {public}")
    click.echo(f"{label}fingerprint: {fingerprint(public)}")


@main.command()
@click.option("--out", "out_dir", type=click.Path(file_okay=False), metavar="DIR",
              help="Write NAME.key and NAME.key_secret in DIR instead of creating this "
                   "user's identity.")
@click.option("--name", default=None, metavar="NAME",
              help="File name with --out [default: id]; else the identity's name in the "
                   "trust store [default: the user name].")
@click.option("--force", is_flag=True, help="Replace an existing key pair.")
@_home_option
def keygen(out_dir: str | None, name: str | None, force: bool, home_dir: str | None) -> None:
    """Create a Curve key pair.

    Without --out: this user's identity in the key store, trusted at once
    (the first service or client creates it anyway). With --out: a key pair
    in pyzmq's certificate format for another machine or service. Prints the
    public key and its fingerprint, never the secret key.
    """
    if out_dir is not None:
        try:
            pair = write_keypair(out_dir, name or "id", overwrite=force)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--name") from None
        except FileExistsError as exc:
            raise Failure(f"{exc} (replace it with --force)", EXIT_FAILED) from None
        except (OSError, KeyStoreError) as exc:
            raise Failure(str(exc), EXIT_ENVIRONMENT) from None
        base = os.path.join(out_dir, name or "id")
        click.echo(f"wrote {base}.key and {base}.key_secret (keep this one private)")
        _show_key("", pair.public)
        return
    store = _store(home_dir)
    try:
        previous = store.identity(create=False) if force and store.has_identity() else None
    except KeyStoreError:  # unreadable: replacing it is what --force is for
        previous = None
    try:
        pair = store.create_identity(name=name or "", replace=force)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--name") from None
    except KeyStoreError as exc:
        raise Failure(str(exc), EXIT_FAILED) from None
    click.echo(f"created the identity {store.identity_path} (trusted)")
    _show_key("", pair.public)
    if previous is not None:
        click.echo(f"note: the previous key ({fingerprint(previous.public)[:_FINGERPRINT_SHOWN]}"
                   ") stays trusted for services still running with it; remove it with "
                   f"zmicro trust --remove '{previous.public}' once they restarted", err=True)


@main.command()
@click.argument("key")
@click.option("--name", default="", metavar="NAME", help="A label for the key (shown in "
              "logs and to handlers as the caller's name).")
@click.option("--role", "roles", multiple=True, metavar="ROLE",
              help="A role of the key, for authorization rules (repeatable).")
@click.option("--remove", is_flag=True, help="Stop trusting KEY instead.")
@_home_option
def trust(key: str, name: str, roles: tuple[str, ...], remove: bool,
          home_dir: str | None) -> None:
    """Trust the public key KEY (Z85, or a .key / .key_secret file).

    Quote a Z85 key for the shell ('...'), and put -- before one that starts
    with "-".

    Services of this user accept clients with a trusted key (new
    connections, within a second, no restart), and clients accept servers
    announcing it. With --remove, new connections with KEY are refused.
    """
    try:
        public = load_public_key(key)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="KEY") from None
    store = _store(home_dir)
    short = fingerprint(public)[:_FINGERPRINT_SHOWN]
    if remove:
        if name or roles:
            raise click.UsageError("--remove takes no --name or --role")
        try:
            removed = store.untrust(public)
        except (OSError, KeyStoreError) as exc:
            raise Failure(str(exc), EXIT_ENVIRONMENT) from None
        if not removed:
            raise Failure(f"key {short} is not trusted", EXIT_FAILED)
        click.echo(f"removed {short} from {store.trusted_dir}")
        return
    try:
        path = store.trust(public, name=name, roles=roles)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--name/--role") from None
    except (OSError, KeyStoreError) as exc:
        raise Failure(str(exc), EXIT_ENVIRONMENT) from None
    click.echo(f"trusted {name or short} ({short}) in {path}")


@main.command()
@_home_option
def keys(home_dir: str | None) -> None:
    """Show this user's identity and the trusted keys (name, roles, fingerprint)."""
    store = _store(home_dir)
    if store.has_identity():
        try:
            _show_key("identity ", store.identity(create=False).public)
        except KeyStoreError as exc:
            raise Failure(str(exc), EXIT_ENVIRONMENT) from None
    else:
        click.echo("identity: none yet (the first service or client creates it; "
                   "or run 'zmicro keygen')")
    trusted = store.trusted()
    click.echo(f"trusted keys ({store.trusted_dir}):")
    if not trusted:
        click.echo("  none")
        return
    rows = [("NAME", "ROLES", "FINGERPRINT")]
    rows += sorted((t.name or "-", ",".join(sorted(t.roles)) or "-",
                    fingerprint(t.key)[:_FINGERPRINT_SHOWN]) for t in trusted.values())
    click.echo(_indent(_table(rows), 2))


# -- MAC master secrets ------------------------------------------------------------


def _secrets(home_dir: str | None) -> MacSecrets:
    try:
        return MacSecrets(secrets_path(_store(home_dir).path))
    except (OSError, MacSecretsError) as exc:
        raise Failure(str(exc), EXIT_ENVIRONMENT) from None


@main.group()
def mac() -> None:
    """The MAC master secrets (mac.keys in the key store), for rotation.

    Rotate without downtime: 'add' (copy mac.keys to every machine: all
    accept the new id), 'current ID' (copy again: all sign with it), then,
    after a window, 'remove OLD'. Processes re-read the file within seconds.
    """


@mac.command("list")
@_home_option
def mac_list(home_dir: str | None) -> None:
    """Show the key ids, their algorithms and which one signs (never secrets)."""
    secrets = _secrets(home_dir)
    click.echo(f"MAC secrets ({secrets.path}):")
    rows = [("ID", "ALGORITHM", "")]
    rows += [(str(k.id), k.alg, "current" if k.id == secrets.current else "")
             for k in sorted(secrets.secrets)]
    click.echo(_indent(_table(rows), 2))


@mac.command("add")
@click.option("--alg", type=click.Choice(sorted(ALGORITHMS)), default="hmac-sha256",
              show_default=True, help="The MAC algorithm of the new key.")
@_home_option
def mac_add(alg: str, home_dir: str | None) -> None:
    """Add a new random master secret, accepted but not signing yet; prints its id."""
    click.echo(_secrets(home_dir).add(alg))


@mac.command("current")
@click.argument("key_id", type=click.IntRange(min=0))
@_home_option
def mac_current(key_id: int, home_dir: str | None) -> None:
    """Sign with KEY_ID from now on (every id stays accepted)."""
    try:
        _secrets(home_dir).set_current(key_id)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="KEY_ID") from None
    click.echo(f"key {key_id} signs")


@mac.command("remove")
@click.argument("key_id", type=click.IntRange(min=0))
@_home_option
def mac_remove(key_id: int, home_dir: str | None) -> None:
    """Stop accepting KEY_ID (not the current one)."""
    try:
        _secrets(home_dir).remove(key_id)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="KEY_ID") from None
    click.echo(f"key {key_id} removed")


# -- health --------------------------------------------------------------------


def _node_health(client: Client, security: Security, trusted: bool, record: ServiceRecord,
                 node: Any) -> dict[str, str]:
    """One row of ``zmicro health``: the node's answer to zmicro.Health.Check."""
    row = {"node": node.id, "version": record.version, "address": node.address}
    try:
        # The node's key only from a source the trust rules accept.
        key = security.server_key_for(node.address, registry_key=node.public_key,
                                      registry_trusted=trusted)
        reply = client.call(record.name, _health.CHECK, {"service": record.name},
                            address=node.address, server_key=key or None)
        row["status"] = str(reply["status"]) if isinstance(reply, dict) else "?"
    except RPCError as exc:
        row["status"] = exc.code.name
        row["error"] = exc.detail
    except (TransportError, WireError, ValueError, zmq.ZMQError) as exc:
        row["status"] = "ERROR"
        row["error"] = str(exc)
    return row


@main.command("health")
@click.argument("service")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=5.0,
              show_default=True, metavar="SECONDS", help="Deadline of each node's check.")
@_registry_option
def health_(service: str, as_json: bool, timeout: float, registry_dir: str | None) -> None:
    """Ask every registered node of SERVICE whether it serves.

    Calls zmicro.Health.Check on each node (address and key from the
    registry) and prints node, version, address and status: SERVING,
    NOT_SERVING, or the error code of a failed check. Exit status 0 if at
    least one node serves, 1 otherwise (no node registered included).
    """
    registry = _registry(registry_dir)
    try:
        records = registry.get(service)
    except RegistryError as exc:
        raise Failure(str(exc), EXIT_ENVIRONMENT) from None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="SERVICE") from None
    finally:
        registry.close()
    nodes = [(r, n) for r in records for n in r.nodes]
    if not nodes:
        raise Failure(f"service {service!r} is not registered", EXIT_FAILED)
    try:
        security = Security.resolve()
        client = Client(registry=None, timeout=timeout, content_type=codec.JSON)
    except Exception as exc:  # key store or libzmq unusable
        raise Failure(str(exc), EXIT_ENVIRONMENT) from None
    try:
        rows = [_node_health(client, security, registry.trusted, r, n) for r, n in nodes]
    finally:
        client.close()
    if as_json:
        click.echo(_json(rows))
    else:
        table = [("NODE", "VERSION", "ADDRESS", "STATUS")]
        table += [(row["node"], row["version"] or "-", row["address"],
                   row["status"] + (f" ({row['error']})" if "error" in row else ""))
                  for row in rows]
        click.echo(_table(table))
    if not any(row["status"] == _health.SERVING for row in rows):
        raise SystemExit(EXIT_FAILED)


# -- run -------------------------------------------------------------------------


def _load_service(target: str, cwd: str | None = None):
    """The zmicro.Service that ``module:attribute`` names (the module
    imported with ``cwd`` first on sys.path). ValueError says what is
    wrong."""
    from .service import Service

    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"{target!r} is not MODULE:SERVICE (e.g. myapp.services:greeter)")
    path = cwd if cwd is not None else os.getcwd()
    if path not in sys.path:
        sys.path.insert(0, path)
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"cannot import {module_name!r}: {exc}") from None
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ValueError(f"{module_name!r} has no attribute {attr!r}") from None
    if not isinstance(obj, Service):
        raise ValueError(f"{target} is a {type(obj).__name__}, not a zmicro.Service")
    return obj


def _check_run_address(address: str | None, workers: int) -> None:
    if address is None:
        return
    if not address.startswith(_ADDRESS_SCHEMES):
        raise click.BadParameter(f"{address!r} is not tcp://host:port or ipc://path",
                                 param_hint="--address")
    if workers > 1:
        port = address.rpartition(":")[2]
        if not address.startswith("tcp://") or port not in ("*", "0"):
            raise click.BadParameter(
                f"{workers} workers cannot share {address!r}: each binds its own port; "
                "give tcp://HOST:* (or no --address)", param_hint="--address")


def _log_setup() -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(processName)s[%(process)d] %(message)s")


def _serve(target: str, address: str | None, cwd: str) -> None:
    """A worker process: load the service and run it (drains on SIGTERM)."""
    _log_setup()
    svc = _load_service(target, cwd)
    if address is not None:
        svc._requested_address = address
    svc.run()


def _run_workers(target: str, address: str | None, workers: int) -> int:
    """Start `workers` spawned processes, forward SIGTERM/SIGINT to them,
    wait for all; 0 if every one exited cleanly."""
    mp = multiprocessing.get_context("spawn")  # never fork: libzmq and threads
    procs = [mp.Process(target=_serve, args=(target, address, os.getcwd()),
                        name=f"zmicro-worker-{i + 1}") for i in range(workers)]
    stopping = False

    def terminate_all() -> None:
        for p in procs:
            if p.pid is not None and p.exitcode is None:
                try:
                    os.kill(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass

    def forward(signum, frame) -> None:
        nonlocal stopping
        stopping = True
        terminate_all()

    old = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    failed = False
    try:
        for p in procs:
            if stopping:
                break
            p.start()
        started = [p for p in procs if p.pid is not None]
        click.echo(f"zmicro run: {len(started)} workers of {target}, pids "
                   + " ".join(str(p.pid) for p in started), err=True)
        if stopping:  # a signal came while starting: the late ones got none
            terminate_all()
        running = list(started)
        while running:
            multiprocessing.connection.wait([p.sentinel for p in running])
            for p in [p for p in running if p.exitcode is not None]:
                running.remove(p)
                p.join()
                if p.exitcode != 0:
                    failed = True
                    click.echo(f"zmicro run: {p.name} (pid {p.pid}) exited with status "
                               f"{p.exitcode}", err=True)
                    if not stopping:  # one failed: stop the others too
                        stopping = True
                        terminate_all()
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
    return EXIT_FAILED if failed else 0


@main.command("run")
@click.argument("target", metavar="MODULE:SERVICE")
@click.option("--workers", "-w", type=click.IntRange(min=1), default=1, show_default=True,
              help="Processes to run, each its own node on its own port (spawned, not "
                   "forked).")
@click.option("--address", metavar="ADDR",
              help="Bind here (tcp://host:port or ipc://path) [default: the service's, "
                   "else tcp://127.0.0.1:*]. With several workers only tcp://HOST:*.")
def run_(target: str, workers: int, address: str | None) -> None:
    """Run the zmicro.Service that MODULE:SERVICE names until SIGTERM/SIGINT.

    MODULE is imported with the current directory first on sys.path, like
    python -m. With --workers N, N processes each run it as a node of its
    own; SIGTERM or SIGINT stops them all gracefully (each deregisters and
    finishes its calls in flight). Exit status 1 if a worker failed (the
    others are then stopped).
    """
    _check_run_address(address, workers)
    try:
        _load_service(target)  # a bad target is a usage error, before any process
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="MODULE:SERVICE") from None
    if workers == 1:
        try:
            _serve(target, address, os.getcwd())
        except RuntimeError as exc:  # e.g. a service without handlers
            raise Failure(str(exc), EXIT_FAILED) from None
        except zmq.ZMQError as exc:  # e.g. the address is in use
            raise Failure(f"cannot serve at {address or 'the default address'}: {exc}",
                          EXIT_ENVIRONMENT) from None
        return
    code = _run_workers(target, address, workers)
    if code:
        raise SystemExit(code)
