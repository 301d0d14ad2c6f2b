"""``zmicro keygen``, ``trust`` and ``keys``: this user's Curve identity and
the keys it trusts."""

from __future__ import annotations

import os
from pathlib import Path

import click

from ..security import KeyStoreError, fingerprint, load_public_key, write_keypair
from ._shared import (
    EXIT_ENVIRONMENT,
    EXIT_FAILED,
    Failure,
    _home_option,
    _indent,
    _store,
    _table,
)

_FINGERPRINT_SHOWN = 16  # hex digits: 64 bits, plenty to tell keys apart by eye
_KEY_SUFFIXES = (".key", ".key_secret")


def _show_key(label: str, public: str) -> None:
    click.echo(f"{label}public key:  {public}")
    click.echo(f"{label}fingerprint: {fingerprint(public)}")


@click.command()
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


@click.command()
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
        raise click.BadParameter(_key_problem(key, exc), param_hint="KEY") from None
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


def _key_problem(key: str, exc: ValueError) -> str:
    """What is wrong with KEY, for the user: a path that names no file says
    so (load_public_key's message lists what a KEY may be, which hides it)."""
    shown = os.path.expanduser(key)  # as given: Path() would drop a leading "./"
    path = Path(shown)
    looks_like_a_path = os.sep in key or key.startswith("~") or path.suffix in _KEY_SUFFIXES
    if looks_like_a_path and not path.exists():
        return (f"file not found: {shown} (KEY is a Z85 Curve public key, 40 characters, "
                "or the path of a .key / .key_secret file)")
    if path.is_dir():
        return f"{shown} is a directory, not a .key / .key_secret file"
    return str(exc)


@click.command()
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
