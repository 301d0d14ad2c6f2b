"""The key store: directories and permissions, the identity, the allowlist
files, environment overrides, and key parsing."""

from __future__ import annotations

import logging
import os
import stat
import subprocess
import sys
import threading
import time

import blake3
import pytest
import zmq
import zmq.auth
import zmq.utils.z85
from hypothesis import given
from hypothesis import strategies as st

import zmicro.auth
from zmicro.errors import Error
from zmicro.security.keys import (KeyPair, KeyStore, KeyStoreError, TrustedKey, check_key,
                                  fingerprint, home, load_public_key, write_keypair)
from zmicro.security.zap import allowlist_from


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def new_key() -> str:
    return zmq.curve_keypair()[0].decode()


@pytest.fixture
def clean_env(monkeypatch):
    for name in ("ZMICRO_HOME", "ZMICRO_KEY", "ZMICRO_TRUSTED", "XDG_CONFIG_HOME"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


# -- home ----------------------------------------------------------------------


def test_home_is_created_private_with_its_parents(tmp_path):
    path = home(tmp_path / "a" / "b" / "zmicro")
    assert path == tmp_path / "a" / "b" / "zmicro" and path.is_dir()
    assert mode(path) == 0o700


def test_home_precedence(tmp_path, clean_env):
    clean_env.setenv("HOME", str(tmp_path / "h"))
    assert home() == tmp_path / "h" / ".config" / "zmicro"
    clean_env.setenv("XDG_CONFIG_HOME", "relative/ignored")
    assert home() == tmp_path / "h" / ".config" / "zmicro"
    clean_env.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert home() == tmp_path / "xdg" / "zmicro"
    clean_env.setenv("ZMICRO_HOME", str(tmp_path / "env"))
    assert home() == tmp_path / "env"
    assert home(tmp_path / "arg") == tmp_path / "arg"


def test_the_session_never_uses_the_real_config_dir():
    assert os.environ["ZMICRO_HOME"]
    assert not KeyStore().path.is_relative_to(os.path.expanduser("~/.config"))


def test_an_open_home_of_ours_is_tightened(tmp_path, caplog):
    path = tmp_path / "store"
    path.mkdir(mode=0o755)
    os.chmod(path, 0o755)
    with caplog.at_level(logging.WARNING, logger="zmicro.security.keys"):
        home(path)
    assert mode(path) == 0o700 and "now 0700" in caplog.text


# -- another user's files (issue 10.2): refused, root included -------------------
#
# The tests run as root here: files are given to another uid (65534). Run as
# another user, they pretend to be a uid the files do not belong to instead.

OTHER_UID = 65534


@pytest.fixture
def give_away(monkeypatch):
    """give_away(path): make `path` belong to someone else than the
    effective uid (chown as root, else a pretended euid)."""
    def give(path) -> None:
        if os.geteuid() == 0:
            os.chown(path, OTHER_UID, OTHER_UID, follow_symlinks=False)
        else:
            uid = os.geteuid()
            monkeypatch.setattr(os, "geteuid", lambda: uid + 1)
    return give


def owner_named(path) -> str:
    """What the refusal must say: the path and the owner's uid."""
    return rf"{path}.*belongs to uid {os.stat(path).st_uid}"


def test_a_home_of_someone_else_is_refused(tmp_path, give_away):
    path = tmp_path / "theirs"
    path.mkdir(mode=0o700)
    give_away(path)
    with pytest.raises(KeyStoreError, match=owner_named(path)):
        home(path)
    with pytest.raises(KeyStoreError, match="not to you"):
        KeyStore(path)
    assert isinstance(KeyStoreError("x"), Error)


def test_an_open_home_of_someone_else_is_refused_not_tightened(tmp_path, give_away):
    path = tmp_path / "theirs"
    path.mkdir()
    os.chmod(path, 0o755)
    give_away(path)
    with pytest.raises(KeyStoreError, match=owner_named(path)):
        home(path)
    assert mode(path) == 0o755  # theirs: not ours to fix either


@pytest.mark.skipif(os.geteuid() != 0, reason="names the owner of a chowned file (root)")
def test_the_refusal_names_the_owner(tmp_path):
    import pwd
    path = tmp_path / "theirs"
    path.mkdir(mode=0o700)
    os.chown(path, OTHER_UID, OTHER_UID)
    with pytest.raises(KeyStoreError) as err:
        home(path)
    assert f"uid {OTHER_UID} ({pwd.getpwuid(OTHER_UID).pw_name})" in str(err.value)
    assert "not to you (uid 0" in str(err.value)


def test_an_identity_of_someone_else_is_refused(tmp_path, give_away):
    store = KeyStore(tmp_path / "s")
    store.identity()
    give_away(store.identity_path)
    with pytest.raises(KeyStoreError, match=owner_named(store.identity_path)):
        KeyStore(tmp_path / "s").identity()


def test_a_zmicro_key_of_someone_else_is_refused(tmp_path, clean_env, give_away):
    KeyStore(tmp_path / "theirs").identity()
    key = tmp_path / "theirs" / "id.key_secret"
    clean_env.setenv("ZMICRO_KEY", str(key))
    store = KeyStore(tmp_path / "mine")
    give_away(key)
    with pytest.raises(KeyStoreError, match=owner_named(key)):
        store.identity()


def test_mac_secrets_of_someone_else_are_refused(tmp_path, give_away):
    from zmicro.security.mackeys import MacSecrets, MacSecretsError
    path = tmp_path / "mac.keys"
    MacSecrets(path)
    give_away(path)
    with pytest.raises(MacSecretsError, match=owner_named(path)):
        MacSecrets(path)


def test_mac_secrets_given_away_while_running_keep_the_keys_in_use(tmp_path, give_away,
                                                                   caplog):
    from zmicro.security.mackeys import MacSecrets
    secrets = MacSecrets(tmp_path / "mac.keys")
    before = secrets.secrets
    new = MacSecrets(tmp_path / "other.keys")  # another file, swapped in
    os.replace(new.path, secrets.path)
    give_away(secrets.path)
    with caplog.at_level(logging.WARNING, logger="zmicro.security.mackeys"):
        assert secrets.reload_if_changed() is False
    assert secrets.secrets == before and "belongs to uid" in caplog.text


def test_home_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(KeyStoreError, match="not a directory|cannot create"):
        home(tmp_path / "file")


# -- identity ------------------------------------------------------------------


def test_identity_is_created_once_private_and_trusted(tmp_path):
    store = KeyStore(tmp_path / "s")
    pair = store.identity()
    assert isinstance(pair, KeyPair) and len(pair.public) == len(pair.secret) == 40
    assert mode(store.path / "id.key_secret") == 0o600
    assert mode(store.path / "trusted") == 0o700
    public, secret = zmq.auth.load_certificate(store.path / "id.key_secret")
    assert (public.decode(), secret.decode()) == pair
    assert zmq.auth.load_certificate(store.path / "id.key")[0].decode() == pair.public
    entry = store.trusted()[pair.public]
    assert entry.roles == frozenset({"self"}) and entry.name
    # idempotent, across KeyStore objects too
    assert store.identity() == pair == KeyStore(tmp_path / "s").identity()
    assert len(store.trusted()) == 1


def test_key_pair_repr_hides_the_secret(tmp_path):
    pair = KeyStore(tmp_path / "s").identity()
    assert pair.secret not in repr(pair) and pair.secret not in str(pair)
    assert pair.public in repr(pair)


def test_identity_without_create(tmp_path):
    store = KeyStore(tmp_path / "s")
    assert not store.has_identity()
    with pytest.raises(KeyStoreError, match="zmicro keygen"):
        store.identity(create=False)
    assert not store.has_identity()


def test_identity_created_by_many_threads_at_once_is_one(tmp_path):
    barrier = threading.Barrier(8)
    got: list[KeyPair] = []

    def create() -> None:
        barrier.wait()
        got.append(KeyStore(tmp_path / "s").identity())

    threads = [threading.Thread(target=create) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(got)) == 1
    assert list(KeyStore(tmp_path / "s").trusted()) == [got[0].public]


_CREATE = """
import os, sys, time
from zmicro.security.keys import KeyStore
while not os.path.exists(sys.argv[2]):
    time.sleep(0.001)
print(KeyStore(sys.argv[1]).identity().public)
"""


def test_identity_created_by_two_processes_at_once_is_one(tmp_path):
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", _CREATE, str(tmp_path / "s"), str(go)],
                              stdout=subprocess.PIPE, text=True) for _ in range(2)]
    time.sleep(0.5)  # let both start and wait; a late one only makes the race milder
    go.write_text("")
    outputs = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert outputs[0] == outputs[1] and len(outputs[0]) == 40
    store = KeyStore(tmp_path / "s")
    assert store.identity().public == outputs[0]
    assert list(store.trusted()) == [outputs[0]]
    # No temporary file left (they are the only names with a leading dot).
    assert not [n for n in os.listdir(store.path) if n.startswith(".")]
    assert not [n for n in os.listdir(store.trusted_dir) if n.startswith(".")]


def test_an_open_identity_file_of_ours_is_tightened(tmp_path):
    store = KeyStore(tmp_path / "s")
    store.identity()
    os.chmod(store.identity_path, 0o644)
    store.identity()
    assert mode(store.identity_path) == 0o600


def test_a_mismatched_or_public_only_identity_is_refused(tmp_path):
    store = KeyStore(tmp_path / "s")
    store.identity()
    text = store.identity_path.read_text()
    other = zmq.curve_keypair()[0].decode()
    public = zmq.auth.load_certificate(store.identity_path)[0].decode()
    store.identity_path.write_text(text.replace(public, other))
    with pytest.raises(KeyStoreError, match="does not belong"):
        store.identity()
    store.identity_path.write_text((store.path / "id.key").read_text())
    with pytest.raises(KeyStoreError, match="no secret key"):
        store.identity()
    store.identity_path.write_text("garbage\n")
    with pytest.raises(KeyStoreError, match="malformed"):
        store.identity()


def test_create_identity_replaces_only_when_asked_and_keeps_the_old_key_trusted(tmp_path):
    store = KeyStore(tmp_path / "s")
    old = store.identity()
    with pytest.raises(KeyStoreError, match="exists"):
        store.create_identity()
    new = store.create_identity(name="laptop", replace=True)
    assert new != old and store.identity() == new
    trusted = store.trusted()
    assert trusted[new.public].name == "laptop" and old.public in trusted


def test_zmicro_key_overrides_the_identity(tmp_path, monkeypatch):
    pair = write_keypair(tmp_path / "keys", "svc")
    monkeypatch.setenv("ZMICRO_KEY", str(tmp_path / "keys" / "svc.key_secret"))
    store = KeyStore(tmp_path / "s")
    assert store.identity() == pair
    assert not (store.path / "id.key_secret").exists()  # nothing created
    assert store.trusted() == {}                         # nor trusted
    with pytest.raises(KeyStoreError, match="ZMICRO_KEY"):
        store.create_identity()
    monkeypatch.setenv("ZMICRO_KEY", str(tmp_path / "missing.key_secret"))
    with pytest.raises(KeyStoreError, match="does not exist"):
        KeyStore(tmp_path / "s").identity()


def test_zmicro_trusted_overrides_the_allowlist(tmp_path, monkeypatch):
    other = tmp_path / "shared-trust"
    monkeypatch.setenv("ZMICRO_TRUSTED", str(other))
    store = KeyStore(tmp_path / "s")
    assert store.trusted_dir == other
    key = new_key()
    store.trust(key, name="k")
    assert list(store.trusted()) == [key] and other.is_dir()
    monkeypatch.delenv("ZMICRO_TRUSTED")
    assert KeyStore(tmp_path / "s").trusted() == {}


def test_write_keypair(tmp_path):
    pair = write_keypair(tmp_path / "out", "svc")
    assert mode(tmp_path / "out" / "svc.key_secret") == 0o600
    assert mode(tmp_path / "out" / "svc.key") == 0o644
    assert zmq.auth.load_certificate(tmp_path / "out" / "svc.key") == (pair.public.encode(), None)
    with pytest.raises(FileExistsError):
        write_keypair(tmp_path / "out", "svc")
    assert write_keypair(tmp_path / "out", "svc", overwrite=True) != pair
    for bad in ("", "../x", "a/b", ".hidden"):
        with pytest.raises(ValueError):
            write_keypair(tmp_path / "out", bad)


# -- the allowlist -------------------------------------------------------------


def test_trust_untrust_and_metadata(tmp_path):
    store = KeyStore(tmp_path / "s")
    key = new_key()
    path = store.trust(key, name="Ada Lovelace", roles=["admin", "ops"])
    assert path.parent == store.trusted_dir and path.suffix == ".key"
    assert store.trusted() == {key: TrustedKey(key, "Ada Lovelace", frozenset({"admin", "ops"}))}
    # pyzmq reads our certificates
    assert zmq.auth.load_certificates(store.trusted_dir) == {key.encode(): True}
    # trusting again replaces the entry
    store.trust(key, name="ada", roles="reader")
    assert store.trusted() == {key: TrustedKey(key, "ada", frozenset({"reader"}))}
    assert len(list(store.trusted_dir.glob("*.key"))) == 1
    unnamed = new_key()
    assert store.trust(unnamed).name == fingerprint(unnamed)[:16] + ".key"
    assert store.trusted()[unnamed] == TrustedKey(unnamed, "", frozenset())
    assert store.untrust(key) is True
    assert store.untrust(key) is False
    assert list(store.trusted()) == [unnamed]


def test_trust_validates(tmp_path):
    store = KeyStore(tmp_path / "s")
    key = new_key()
    for bad_key in ("short", "x" * 41, key[:-1] + '"', 12):
        with pytest.raises(ValueError):
            store.trust(bad_key)
    for bad_name in ('a"b', "a\nb", " padded", "x" * 129):
        with pytest.raises(ValueError):
            store.trust(key, name=bad_name)
    for bad_roles in (["two words"], ['q"'], [""]):
        with pytest.raises(ValueError):
            store.trust(key, roles=bad_roles)
    assert store.trusted() == {}


def test_certificates_written_by_pyzmq_are_trusted(tmp_path):
    store = KeyStore(tmp_path / "s")
    store.trusted_dir.mkdir(mode=0o700)
    public_file, _secret_file = zmq.auth.create_certificates(store.trusted_dir, "peer",
                                                             metadata={"name": "peer"})
    key = zmq.auth.load_certificate(public_file)[0].decode()
    # the .key_secret beside it is ignored: only *.key files count
    assert store.trusted() == {key: TrustedKey(key, "", frozenset())}


def test_malformed_files_are_skipped_with_one_warning_each(tmp_path, caplog):
    store = KeyStore(tmp_path / "s")
    good = new_key()
    store.trust(good, name="good")
    d = store.trusted_dir
    (d / "garbage.key").write_text("not a certificate\n")
    (d / "badkey.key").write_text('curve\n    public-key = "tooshort"\n')
    (d / "binary.key").write_bytes(b"\xff\xfe public-key = \xff")
    (d / "huge.key").write_text("#" * 100_000)
    (d / "dir.key").mkdir()
    secret_public, secret = zmq.curve_keypair()
    (d / "leaked.key").write_text(f'curve\n    public-key = "{secret_public.decode()}"\n'
                                  f'    secret-key = "{secret.decode()}"\n')
    (d / "badroles.key").write_text(f'metadata\n    roles = "ok b\\\\ad"\ncurve\n'
                                    f'    public-key = "{new_key()}"\n')
    (d / "ignored.key_secret").write_text("whatever")
    (d / "notes.txt").write_text("whatever")
    with caplog.at_level(logging.WARNING, logger="zmicro.security.keys"):
        assert list(store.trusted()) == [good]
        assert list(store.trusted()) == [good]
    warned = [r.getMessage() for r in caplog.records]
    for name in ("garbage", "badkey", "binary", "huge", "leaked", "badroles"):
        assert sum(f"{name}.key" in m for m in warned) == 1, (name, warned)
    assert not any("ignored" in m or "notes" in m or "dir.key" in m for m in warned)
    assert secret.decode() not in caplog.text


def test_a_duplicate_key_keeps_the_first_file(tmp_path):
    store = KeyStore(tmp_path / "s")
    key = new_key()
    first = store.trust(key, name="a", roles=["reader"])
    (store.trusted_dir / "zz-copy.key").write_text(
        first.read_text().replace('"reader"', '"admin"'))
    assert store.trusted()[key].roles == frozenset({"reader"})


def test_a_directory_others_can_write_trusts_nobody(tmp_path, caplog):
    store = KeyStore(tmp_path / "s")
    store.trust(new_key())
    os.chmod(store.trusted_dir, 0o777)
    with caplog.at_level(logging.WARNING, logger="zmicro.security.keys"):
        assert store.trusted() == {}
    assert "other users can write" in caplog.text


def test_a_missing_trusted_directory_is_empty(tmp_path):
    assert KeyStore(tmp_path / "s").trusted() == {}


def test_allowlist_from_rereads_only_on_change(tmp_path, monkeypatch):
    store = KeyStore(tmp_path / "s")
    reads = []
    real = store.trusted
    monkeypatch.setattr(store, "trusted", lambda: reads.append(1) or real())
    allowlist = allowlist_from(store, interval=0)
    assert allowlist() == {} and len(reads) == 1
    allowlist()
    assert len(reads) == 1  # nothing changed: no read
    key = new_key()
    store.trust(key, name="a")
    assert key in allowlist() and len(reads) == 2
    store.trust(key, name="b")  # same file name length, new content
    assert allowlist()[key].name == "b"
    store.untrust(key)
    assert key not in allowlist()
    assert allowlist_from(store, interval=0) is allowlist  # shared per directory


def test_allowlist_from_checks_at_most_every_interval(tmp_path):
    store = KeyStore(tmp_path / "s")
    allowlist = allowlist_from(store, interval=3600)
    assert allowlist() == {}
    store.trust(new_key())
    assert allowlist() == {}  # not looked at again within the interval


# -- parsing -------------------------------------------------------------------


def test_fingerprint_is_blake3_of_the_raw_key_everywhere():
    key = new_key()
    expected = blake3.blake3(zmq.utils.z85.decode(key)).hexdigest()
    assert fingerprint(key) == zmicro.auth.fingerprint(key) == expected
    assert zmicro.auth.Principal(key=key).short_fingerprint == expected[:8]


def test_load_public_key(tmp_path):
    pair = write_keypair(tmp_path, "svc")
    assert load_public_key(pair.public) == pair.public
    assert load_public_key(str(tmp_path / "svc.key")) == pair.public
    assert load_public_key(tmp_path / "svc.key_secret") == pair.public
    (tmp_path / "bad.key").write_text("nothing here")
    for bad in ("", "nope", str(tmp_path / "missing.key"), str(tmp_path / "bad.key"),
                str(tmp_path)):
        with pytest.raises(ValueError):
            load_public_key(bad)


def test_errors_never_quote_the_key():
    secretish = zmq.curve_keypair()[1].decode()[:-1] + "~"  # '~' is not Z85
    with pytest.raises(ValueError) as info:
        load_public_key(secretish)
    assert secretish[:20] not in str(info.value)


@given(st.binary(min_size=32, max_size=32))
def test_every_32_byte_key_is_accepted(raw):
    key = zmq.utils.z85.encode(raw).decode()
    assert check_key(key) == key and load_public_key(key) == key
    assert fingerprint(key) == blake3.blake3(raw).hexdigest()


@given(st.text(max_size=50) | st.text(alphabet=zmq.utils.z85.Z85CHARS.decode(),
                                      min_size=40, max_size=40))
def test_check_key_accepts_or_raises_value_error(text):
    try:
        check_key(text)
    except ValueError:
        return
    assert zmq.utils.z85.encode(zmq.utils.z85.decode(text)).decode() == text


@given(name=st.from_regex(r'[^\x00-\x1f\x7f-\x9f\u2028\u2029"\\]{0,20}', fullmatch=True)
       .filter(lambda s: s == s.strip()),
       roles=st.frozensets(st.from_regex(r'[^\s"\\\x00-\x1f\x7f]{1,10}', fullmatch=True),
                           max_size=4))
def test_names_and_roles_round_trip_through_the_certificate(tmp_path_factory, name, roles):
    store = KeyStore(tmp_path_factory.mktemp("s"))
    key = new_key()
    store.trust(key, name=name, roles=roles)
    assert store.trusted() == {key: TrustedKey(key, name, frozenset(roles))}
