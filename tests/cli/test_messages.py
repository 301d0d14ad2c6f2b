"""What the commands say when something is wrong, or when they did
something: each message names the thing (the file, the key id, the URL)
and the cause, not only that it failed."""

from __future__ import annotations

import os
import socket

import pytest
from click.testing import CliRunner

from zmicro import cli
from zmicro.security.mackeys import MacSecrets, secrets_path

from .conftest import run_cli


def invoke(*args: str):
    return CliRunner().invoke(cli.main, list(args))


@pytest.mark.parametrize("path", ["/nonexistent.key", "/no/such/dir/bob.key_secret",
                                  "./missing", "~/zmicro-no-such-key"])
def test_trust_of_a_missing_file_says_not_found(tmp_path, path):
    result = invoke("trust", path, "--home", str(tmp_path / "home"))
    assert result.exit_code == cli.EXIT_USAGE
    assert "file not found" in result.stderr
    assert os.path.expanduser(path) in result.stderr


def test_trust_of_a_directory_says_so(tmp_path):
    result = invoke("trust", str(tmp_path), "--home", str(tmp_path / "home"))
    assert result.exit_code == cli.EXIT_USAGE
    assert "is a directory" in result.stderr


def test_trust_of_a_word_still_says_what_a_key_is(tmp_path):
    result = invoke("trust", "not-a-key", "--home", str(tmp_path / "home"))
    assert result.exit_code == cli.EXIT_USAGE
    assert "Z85" in result.stderr and "file not found" not in result.stderr


def test_mac_add_says_what_it_did(tmp_path):
    home = str(tmp_path / "home")
    result = invoke("mac", "add", "--alg", "blake3", "--home", home)
    assert result.exit_code == 0, result.output
    [added] = [s for s in MacSecrets(secrets_path(home)).secrets if s.alg == "blake3"]
    out = result.stdout
    assert f"added MAC key {added.id} (blake3)" in out
    assert str(secrets_path(home)) in out
    assert f"zmicro mac current {added.id}" in out  # the next step of a rotation


def test_unreachable_etcd_names_the_url_and_the_cause(tmp_path, unused_tcp_port):
    env = {**os.environ, "ZMICRO_REGISTRY_DIR": str(tmp_path / "unused")}
    result = run_cli("list", "--registry", f"etcd://127.0.0.1:{unused_tcp_port}?timeout=2",
                     env=env)
    assert result.returncode == cli.EXIT_ENVIRONMENT, result.stderr
    assert f"http://127.0.0.1:{unused_tcp_port}" in result.stderr
    assert "Connection refused" in result.stderr
    assert "Traceback" not in result.stderr


def test_etcd_that_never_answers_says_so(tmp_path):
    # A listening socket nobody accepts from: the TCP handshake succeeds
    # (the kernel's backlog), the HTTP request is never answered.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        port = silent.getsockname()[1]
        env = {**os.environ, "ZMICRO_REGISTRY_DIR": str(tmp_path / "unused")}
        result = run_cli("list", "--registry", f"etcd://127.0.0.1:{port}?timeout=1", env=env)
    assert result.returncode == cli.EXIT_ENVIRONMENT, result.stderr
    assert f"http://127.0.0.1:{port}" in result.stderr
    assert "no answer in time" in result.stderr
