"""``zmicro mac list|add|current|remove``: the MAC master secrets."""

from __future__ import annotations

import click

from ..security import ALGORITHMS, MacSecrets, MacSecretsError, secrets_path
from ._shared import EXIT_ENVIRONMENT, Failure, _home_option, _indent, _store, _table


def _secrets(home_dir: str | None) -> MacSecrets:
    try:
        return MacSecrets(secrets_path(_store(home_dir).path))
    except (OSError, MacSecretsError) as exc:
        raise Failure(str(exc), EXIT_ENVIRONMENT) from None


@click.group()
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
    """Add a new random master secret, accepted but not signing yet; says its id."""
    secrets = _secrets(home_dir)
    key_id = secrets.add(alg)
    click.echo(f"added MAC key {key_id} ({alg}) to {secrets.path}: accepted from now on, "
               f"not signing yet; copy the file to every node, then run "
               f"'zmicro mac current {key_id}'")


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
