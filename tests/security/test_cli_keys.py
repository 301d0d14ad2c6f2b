"""`zmicro keygen`, `zmicro trust`, `zmicro keys`, through click's CliRunner
with ZMICRO_HOME in tmp_path."""

from __future__ import annotations

import os
import stat

import pytest
import zmq
import zmq.auth
from click.testing import CliRunner

from zmicro.cli import EXIT_FAILED, EXIT_USAGE, main
from zmicro.security.keys import KeyStore, fingerprint


@pytest.fixture
def home(tmp_path, monkeypatch):
    path = tmp_path / "home"
    monkeypatch.setenv("ZMICRO_HOME", str(path))
    monkeypatch.delenv("ZMICRO_KEY", raising=False)
    monkeypatch.delenv("ZMICRO_TRUSTED", raising=False)
    return path


def run(*args: str):
    return CliRunner().invoke(main, list(args))


def test_keygen_creates_the_identity_and_trusts_it(home):
    result = run("keygen")
    assert result.exit_code == 0, result.output
    pair = KeyStore(home).identity(create=False)
    assert pair.public in result.stdout and fingerprint(pair.public) in result.stdout
    assert pair.secret not in result.stdout + result.stderr
    assert KeyStore(home).trusted()[pair.public].roles == frozenset({"self"})

    again = run("keygen")
    assert again.exit_code == EXIT_FAILED and "--force" in again.stderr
    assert KeyStore(home).identity() == pair

    forced = run("keygen", "--force", "--name", "laptop")
    assert forced.exit_code == 0
    new = KeyStore(home).identity()
    assert new != pair and new.public in forced.stdout
    assert "stays trusted" in forced.stderr and pair.public in KeyStore(home).trusted()
    assert KeyStore(home).trusted()[new.public].name == "laptop"


def test_keygen_out_writes_a_pyzmq_key_pair(home, tmp_path):
    out = tmp_path / "out"
    result = run("keygen", "--out", str(out), "--name", "billing")
    assert result.exit_code == 0, result.output
    public, secret = zmq.auth.load_certificate(out / "billing.key_secret")
    assert zmq.auth.load_certificate(out / "billing.key") == (public, None)
    assert public.decode() in result.stdout and secret.decode() not in result.stdout
    assert stat.S_IMODE(os.stat(out / "billing.key_secret").st_mode) == 0o600
    assert not (home / "id.key_secret").exists()  # the user's identity is untouched
    assert run("keygen", "--out", str(out), "--name", "billing").exit_code == EXIT_FAILED
    assert run("keygen", "--out", str(out), "--name", "billing", "--force").exit_code == 0
    assert run("keygen", "--out", str(out), "--name", "../x").exit_code == EXIT_USAGE


def test_trust_list_and_remove(home, tmp_path):
    assert run("keygen", "--out", str(tmp_path), "--name", "bob").exit_code == 0
    bob = zmq.auth.load_certificate(tmp_path / "bob.key")[0].decode()
    carol = zmq.curve_keypair()[0].decode()

    result = run("trust", str(tmp_path / "bob.key"), "--name", "bob", "--role", "admin",
                 "--role", "ops")
    assert result.exit_code == 0, result.output
    assert run("trust", "--", carol).exit_code == 0
    store = KeyStore(home)
    assert store.trusted()[bob].roles == frozenset({"admin", "ops"})
    assert store.trusted()[carol].name == ""

    listing = run("keys")
    assert listing.exit_code == 0
    assert "bob" in listing.stdout and "admin,ops" in listing.stdout
    assert fingerprint(bob)[:16] in listing.stdout and fingerprint(carol)[:16] in listing.stdout
    assert bob not in listing.stdout  # fingerprints, not keys
    assert "identity: none yet" in listing.stdout  # listing creates nothing
    assert not store.has_identity()

    removed = run("trust", "--remove", str(tmp_path / "bob.key_secret"))
    assert removed.exit_code == 0 and bob not in KeyStore(home).trusted()
    assert run("trust", "--remove", str(tmp_path / "bob.key")).exit_code == EXIT_FAILED


def test_keys_shows_the_identity(home):
    run("keygen")
    pair = KeyStore(home).identity()
    listing = run("keys")
    assert pair.public in listing.stdout and fingerprint(pair.public) in listing.stdout
    assert "self" in listing.stdout


def test_trust_refuses_bad_input(home):
    assert run("trust", "not-a-key").exit_code == EXIT_USAGE
    key = zmq.curve_keypair()[0].decode()
    assert run("trust", "--", key, "--name", 'a"b').exit_code == EXIT_USAGE
    assert run("trust", "--", key, "--role", "two words").exit_code == EXIT_USAGE
    assert run("trust", "--remove", "--", key, "--role", "x").exit_code == EXIT_USAGE
    assert KeyStore(home).trusted() == {}


def test_home_option(tmp_path, home):
    other = tmp_path / "other"
    assert run("keygen", "--home", str(other)).exit_code == 0
    assert (other / "id.key_secret").exists() and not home.exists()


def test_mac_rotation_commands(tmp_path):
    """zmicro mac list|add|current|remove edit mac.keys; secrets never print."""
    from click.testing import CliRunner

    from zmicro.cli import main
    from zmicro.security.mackeys import MacSecrets, secrets_path

    home = str(tmp_path / "home")
    run = CliRunner().invoke
    listed = run(main, ["mac", "list", "--home", home])
    assert listed.exit_code == 0, listed.output
    assert "1" in listed.output and "current" in listed.output
    added = run(main, ["mac", "add", "--alg", "blake3", "--home", home])
    assert added.exit_code == 0 and "added MAC key 2 (blake3)" in added.output
    assert run(main, ["mac", "current", "2", "--home", home]).exit_code == 0
    refused = run(main, ["mac", "remove", "2", "--home", home])
    assert refused.exit_code != 0 and "current" in refused.output
    assert run(main, ["mac", "remove", "1", "--home", home]).exit_code == 0
    secrets = MacSecrets(secrets_path(home))
    assert [(s.id, s.alg) for s in secrets.secrets] == [(2, "blake3")] and secrets.current == 2
    output = run(main, ["mac", "list", "--home", home]).output
    assert secrets.secrets[0].secret.hex() not in output
    import base64
    assert base64.b64encode(secrets.secrets[0].secret).decode() not in output
