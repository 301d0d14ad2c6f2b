"""``zmicro health`` and ``run``: ask a service's nodes whether they serve,
and run a service's processes."""

from __future__ import annotations

import importlib
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
from types import FrameType
from typing import TYPE_CHECKING, Any

import click
import zmq

from .. import codec, health as _health
from ..client import Client
from ..errors import RPCError, TransportError, WireError
from ..registry import RegistryError, ServiceRecord
from ..security import Security
from ._shared import (
    _ADDRESS_SCHEMES,
    EXIT_ENVIRONMENT,
    EXIT_FAILED,
    Failure,
    _json,
    _registry,
    _registry_option,
    _table,
)

if TYPE_CHECKING:
    from ..service import Service


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


@click.command("health")
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


def _load_service(target: str, cwd: str | None = None) -> Service:
    """The zmicro.Service that ``module:attribute`` names (the module
    imported with ``cwd`` first on sys.path). ValueError says what is
    wrong."""
    from ..service import Service

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

    def forward(signum: int, frame: FrameType | None) -> None:
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


@click.command("run")
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
