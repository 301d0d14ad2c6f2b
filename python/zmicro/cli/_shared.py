"""What the ``zmicro`` commands share: exit statuses, the error that prints
``error: ...``, the registry and key store options, JSON and table output."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import click
import msgspec

from ..registry import EmbeddedRegistry, Registry, RegistryError, from_url
from ..security import KeyStore, KeyStoreError

EXIT_FAILED = 1       # an RPC error, or no such service
EXIT_USAGE = 2        # click's own status for usage errors
EXIT_ENVIRONMENT = 3  # registry or transport unusable

_pretty = msgspec.json.Encoder()
_ADDRESS_SCHEMES = ("tcp://", "ipc://")


class Failure(click.ClickException):
    """Print ``error: <message>`` on stderr and exit with ``exit_code``."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        # click declares exit_code a ClassVar, but reads it from the
        # instance: each Failure carries its own.
        self.exit_code = exit_code  # type: ignore[misc]

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


def _remember_registry_url(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    if value is not None:
        source = ctx.get_parameter_source(param.name)
        ctx.meta["zmicro.registry_url"] = (value, source is click.core.ParameterSource.COMMANDLINE)


_Command = TypeVar("_Command", bound=Callable[..., Any])


def _registry_option(fn: _Command) -> _Command:
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


def _table(rows: Sequence[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip()
                     for row in rows)


def _indent(text: str, spaces: int) -> str:
    return "\n".join(" " * spaces + line for line in text.splitlines())


def _home_option(fn: _Command) -> _Command:
    return click.option(
        "--home", "home_dir", type=click.Path(file_okay=False), metavar="DIR",
        help="The key store [default: $ZMICRO_HOME, else ~/.config/zmicro].",
    )(fn)


def _store(home_dir: str | None) -> KeyStore:
    try:
        return KeyStore(home_dir)
    except KeyStoreError as exc:
        raise Failure(str(exc), EXIT_ENVIRONMENT) from None
