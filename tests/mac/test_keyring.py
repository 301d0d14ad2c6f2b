"""The MAC end to end in the core: signing, and the receiver's checks in
their order (sizes, key id, MAC, timestamp window, nonce), answers bound to
their request's nonce, one nonce set per service with a quota per
principal, with keys derived from master secrets (zmicro.security.mackeys)."""

from __future__ import annotations

import base64
import json
import os
import stat
import threading

import blake3
import pytest
from hypothesis import given
from hypothesis import strategies as st

from zmicro import _core, wire
from zmicro.security import mackeys
from zmicro.wire import Header

from ..helpers import UNIX_START, FakeClock

SECRET = bytes(range(32))
ALGS = [_core.MAC_HMAC_SHA256, _core.MAC_BLAKE2B, _core.MAC_BLAKE3]


def ring(*ids: int, current: int | None = None, alg: int = _core.MAC_HMAC_SHA256,
         **kw) -> _core.Keyring:
    ids = ids or (1,)
    keys = [_core.MacKey(i, alg, bytes([i]) * 32) for i in ids]
    return _core.Keyring(keys, ids[0] if current is None else current, **kw)


def request(**kw) -> Header:
    return Header(kind=0, request_id=7, service="svc", endpoint="Svc.Call", **kw)


def header_of(frames) -> Header:
    return wire.parse_frames(frames).header


@pytest.mark.parametrize("alg", ALGS)
def test_sealed_message_opens_once_for_any_principal(alg):
    r = ring(alg=alg)
    frames = r.seal(request(), [b"body"])
    assert r.open(frames, b"alice") == "ok"
    assert r.open(frames, b"alice") == "replay"
    # One nonce set per service: a request captured (say by a proxy that
    # ends Curve) and resent under another caller's key is a replay too.
    assert r.open(frames, b"bob") == "replay"
    stats = r.stats()
    assert stats["ok"] == 1 and stats["replay"] == 2 and stats["signed"] == 1
    assert r.held(b"alice") == 1 and r.held(b"bob") == 0


@pytest.mark.parametrize("bodies", [[], [b"inline body"]])
def test_one_frame_messages_carry_the_mac_as_a_trailer(bodies):
    r = ring()
    frames = r.seal(request(), bodies, inline=bool(bodies))
    assert len(frames) == 1
    signed, tag = frames[0][:-32], frames[0][-32:]
    assert tag == _core.mac_compute(_core.MAC_HMAC_SHA256, bytes([1]) * 32, [b"", signed])
    assert header_of(frames).flags & wire.FLAG_MAC_TRAILER
    assert r.open(frames, b"p") == "ok"
    assert r.open([signed + bytes(32)], b"q") == "bad_mac"


def test_mac_frame_matches_the_documented_definition():
    r = ring()
    frames = r.seal(request(), [b"body"])
    assert len(frames) == 3  # header, body, MAC
    assert frames[-1] == _core.mac_compute(_core.MAC_HMAC_SHA256, bytes([1]) * 32,
                                           [b"", *frames[:-1]])
    header = wire.decode_header(frames[0])
    assert header.flags & 1 and header.key_id == 1
    assert len(header.nonce) == 16 and header.timestamp_us > 0


@pytest.mark.parametrize("alg", ALGS)
def test_an_answer_opens_only_bound_to_its_request_nonce(alg):
    """Answers carry the request's nonce in their MAC (protocol.md §7): a
    captured reply is refused by every other call and every other client;
    the binding makes a nonce set on the client needless (remember=False)."""
    r = ring(alg=alg)
    asked, other = os.urandom(16), os.urandom(16)
    reply = r.seal(Header(kind=wire.Kind.REPLY, request_id=7), [b"yes"], bind=asked,
                   inline=True)
    assert r.open(reply, bind=asked, remember=False) == "ok"
    assert r.open(reply, bind=asked, remember=False) == "ok"  # (the call ends at once)
    assert r.open(reply, bind=other, remember=False) == "bad_mac"
    assert r.open(reply, remember=False) == "bad_mac"       # unbound
    assert r.stats()["nonces"] == 0


def test_blake3_mac_is_keyed_blake3_of_the_framed_input():
    key = os.urandom(32)
    frames = [b"head", b"", b"body"]
    data = b"zmicro-mac-v2" + (3).to_bytes(4, "little")
    for f in frames:
        data += len(f).to_bytes(8, "little") + f
    assert _core.mac_compute(_core.MAC_BLAKE3, key, frames) == blake3.blake3(data, key=key).digest()


@given(body=st.binary(max_size=200), inline=st.booleans(), data=st.data())
def test_any_changed_byte_is_refused(body, inline, data):
    r = ring()
    frames = r.seal(request(metadata={"k": b"v"}), [body], inline=inline)
    i = data.draw(st.integers(0, len(frames) - 1), label="frame")
    if not frames[i]:
        return
    j = data.draw(st.integers(0, len(frames[i]) - 1), label="byte")
    bit = data.draw(st.integers(0, 7), label="bit")
    bad = list(frames)
    bad[i] = frames[i][:j] + bytes([frames[i][j] ^ (1 << bit)]) + frames[i][j + 1:]
    try:
        outcome = r.open(bad, b"p")
    except Exception:  # the header no longer parses: refused before any check
        return
    assert outcome != "ok"


@given(body=st.binary(min_size=2, max_size=100), data=st.data())
def test_bytes_moved_between_frames_are_refused(body, data):
    r = ring()
    frames = r.seal(request(), [body, b"tail"])
    cut = data.draw(st.integers(1, len(body) - 1))
    moved = [frames[0], body[:cut], body[cut:] + b"tail", frames[-1]]
    assert r.open(moved, b"p") == "bad_mac"


def test_unsigned_and_unknown_key_and_wrong_key():
    r = ring(1)
    plain = [request().encode(), b"body"]
    assert r.open(plain, b"p") == "unsigned"
    other = ring(2)
    assert r.open(other.seal(request(), [b"x"]), b"p") == "unknown_key"
    same_id_other_secret = _core.Keyring([_core.MacKey(1, _core.MAC_HMAC_SHA256, os.urandom(32))], 1)
    assert r.open(same_id_other_secret.seal(request(), [b"x"]), b"p") == "bad_mac"


def test_refusals_do_not_fill_the_nonce_cache():
    """The cache is inserted into only after the MAC passed: a forged
    message with a fresh nonce takes no room."""
    r = ring(replay_quota=1)
    forged = ring(1, alg=_core.MAC_BLAKE2B)  # same id, other key
    for _ in range(5):
        assert r.open(forged.seal(request(), [b"x"]), b"p") == "bad_mac"
    assert r.open(r.seal(request(), [b"x"]), b"p") == "ok"


def test_window_uses_the_injected_clock():
    clock = FakeClock(UNIX_START)
    r = ring(window=30.0, clock=clock)
    frames = r.seal(request(), [b"x"])
    clock.advance(30.5)
    assert r.open(frames, b"p") == "stale"
    clock.advance(-61.0)  # the message is now 30.5 s in our future
    assert r.open(frames, b"p") == "stale"
    clock.advance(31.0)  # 0.5 s old
    assert r.open(frames, b"p") == "ok"


def test_replay_inside_the_window_is_refused_and_after_it_is_stale():
    clock = FakeClock(UNIX_START)
    r = ring(window=10.0, clock=clock)
    frames = r.seal(request(), [b"x"])
    assert r.open(frames, b"p") == "ok"
    for dt in (0.0, 5.0, 4.9):
        clock.advance(dt)
        assert r.open(frames, b"p") == "replay"
    clock.advance(0.2)
    assert r.open(frames, b"p") == "stale"  # never accepted again


def test_full_quota_refuses_its_principal_only():
    clock = FakeClock(UNIX_START)
    r = ring(replay_quota=3, window=10.0, clock=clock)
    for _ in range(3):
        assert r.open(r.seal(request(), [b"x"]), b"noisy") == "ok"
    assert r.open(r.seal(request(), [b"x"]), b"noisy") == "replay_full"
    assert r.open(r.seal(request(), [b"x"]), b"quiet") == "ok"
    # Entries leave with their message's window, never earlier.
    clock.advance(10.0)
    assert r.open(r.seal(request(), [b"x"]), b"noisy") == "replay_full"
    clock.advance(2.0)
    assert r.open(r.seal(request(), [b"x"]), b"noisy") == "ok"


def test_a_forged_message_takes_no_principal_slot():
    """A principal gets its place in the nonce set only once a message of
    its passed the MAC and the window: forgeries from new keys cannot use
    up max_principals."""
    r = ring(max_principals=1)
    forged = ring(1, alg=_core.MAC_BLAKE2B)  # same id, other key
    for who in (b"x", b"y", b"z"):
        assert r.open(forged.seal(request(), [b"x"]), who) == "bad_mac"
    assert r.stats()["principals"] == 0
    assert r.open(r.seal(request(), [b"x"]), b"real") == "ok"
    assert r.open(r.seal(request(), [b"x"]), b"other") == "replay_full"


def test_too_many_principals_are_refused_not_tracked():
    r = ring(max_principals=2)
    assert r.open(r.seal(request(), [b"x"]), b"a") == "ok"
    assert r.open(r.seal(request(), [b"x"]), b"b") == "ok"
    assert r.open(r.seal(request(), [b"x"]), b"c") == "replay_full"
    assert r.open(r.seal(request(), [b"x"]), b"a") == "ok"
    assert r.stats()["principals"] == 2


def test_rotation_accepts_old_and_new_keys():
    old = ring(1)
    both = ring(1, 2, current=2)
    assert both.open(old.seal(request(), [b"x"]), b"p") == "ok"
    assert both.open(both.seal(request(), [b"x"]), b"p") == "ok"
    assert header_of(both.seal(request(), [])).key_id == 2
    old.update([_core.MacKey(1, _core.MAC_HMAC_SHA256, bytes([1]) * 32),
                _core.MacKey(2, _core.MAC_HMAC_SHA256, bytes([2]) * 32)], 2)
    assert both.open(old.seal(request(), [b"x"]), b"p") == "ok"
    new_only = ring(2)
    assert new_only.open(ring(1).seal(request(), [b"x"]), b"p") == "unknown_key"


def test_keys_never_shown():
    key = _core.MacKey(1, _core.MAC_HMAC_SHA256, SECRET)
    assert SECRET.hex() not in repr(key) and "secret" not in repr(key)
    with pytest.raises(AttributeError):
        key.secret  # noqa: B018


def test_bad_keys_refused():
    with pytest.raises(ValueError):
        _core.MacKey(1, _core.MAC_BLAKE3, b"short")
    with pytest.raises(Exception):
        _core.MacKey(1, 99, SECRET)
    with pytest.raises(ValueError):
        _core.Keyring([_core.MacKey(1, 1, SECRET)], 2)
    with pytest.raises(ValueError):
        _core.Keyring([_core.MacKey(1, 1, SECRET), _core.MacKey(1, 2, SECRET)], 1)


# -- master secrets and derivation ---------------------------------------------


def test_derivation_is_per_service_and_per_id():
    k = mackeys.derive_key(SECRET, "greeter", 1)
    assert len(k) == 32
    assert k != mackeys.derive_key(SECRET, "greeter", 2)
    assert k != mackeys.derive_key(SECRET, "greeter2", 1)
    # Length prefixes: ("ab", id) and ("a", ...) cannot collide by shifting.
    assert mackeys.derive_key(SECRET, "a", 1) != mackeys.derive_key(SECRET, "a\x01", 1)
    # The documented definition, written out.
    material = (7).to_bytes(4, "little") + b"greeter" + (1).to_bytes(4, "little") + SECRET
    assert k == blake3.blake3(material, derive_key_context=mackeys.DERIVE_CONTEXT).digest()


def test_secrets_file_created_private_and_shared(tmp_path):
    path = tmp_path / "home" / "mac.keys"
    a = mackeys.MacSecrets(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    b = mackeys.MacSecrets(path)  # a second process: same secrets
    assert a.secrets == b.secrets and a.current == b.current == 1
    msg = a.keyring("svc").seal(request(), [b"x"])
    assert b.keyring("svc").open(msg, b"p") == "ok"
    assert b.keyring("other").open(msg, b"p") == "bad_mac"  # per-service keys
    assert all(s.secret.hex() not in repr(s) for s in a.secrets)
    assert os.listdir(path.parent) == ["mac.keys"]  # no temporary file left


def test_secrets_file_created_at_once_is_one(tmp_path):
    """Instances made at the same moment (processes sharing a home) all
    end up with the secrets of the one file that won: none clobbers it."""
    path = tmp_path / "home" / "mac.keys"
    for _ in range(10):
        path.unlink(missing_ok=True)
        start = threading.Barrier(8)
        made = []

        def make() -> None:
            start.wait()
            made.append(mackeys.MacSecrets(path))

        threads = [threading.Thread(target=make) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(made) == 8
        assert all(s.secrets == made[0].secrets for s in made)
        assert mackeys.MacSecrets(path).secrets == made[0].secrets
        assert os.listdir(path.parent) == ["mac.keys"]


def test_rotation_through_the_file(tmp_path):
    path = tmp_path / "mac.keys"
    server = mackeys.MacSecrets(path)
    client = mackeys.MacSecrets(path)
    srv, cli = server.keyring("svc"), client.keyring("svc")
    editor = mackeys.MacSecrets(path)
    new = editor.add("blake3")
    assert server.reload_if_changed() and client.reload_if_changed()
    assert srv.key_ids == [1, 2] and srv.current_id == 1
    editor.set_current(new)
    client.reload_if_changed()  # the client switched first: the server still accepts it
    assert srv.open(cli.seal(request(), [b"x"]), b"p") == "ok"
    server.reload_if_changed()
    editor.remove(1)
    server.reload_if_changed()
    assert srv.key_ids == [2]
    with pytest.raises(ValueError):
        editor.remove(new)  # the current key stays
    assert os.listdir(tmp_path) == ["mac.keys"]


def test_malformed_or_exposed_secrets_file(tmp_path):
    path = tmp_path / "mac.keys"
    path.write_text("{not json")
    path.chmod(0o600)
    with pytest.raises(mackeys.MacSecretsError) as err:
        mackeys.MacSecrets(path)
    assert "not a zmicro MAC secrets file" in str(err.value)
    good = tmp_path / "good.keys"
    s = mackeys.MacSecrets(good)
    good.chmod(0o644)
    with pytest.raises(mackeys.MacSecretsError):
        mackeys.MacSecrets(good)
    # A running process keeps its keys when the file goes bad.
    good.chmod(0o600)
    good.write_text("garbage")
    assert not s.reload_if_changed() and s.keyring("svc").key_ids == [1]


def test_the_documented_file_format(tmp_path):
    """protocol.md §7.5: a mac.keys written by another tool from the
    document is read; another format, or a current id not among the keys,
    is refused."""
    def write(doc) -> mackeys.MacSecrets:
        path = tmp_path / "mac.keys"
        path.write_text(json.dumps(doc))
        path.chmod(0o600)
        return mackeys.MacSecrets(path, create=False)

    keys = [{"id": 7, "alg": "blake3", "secret": base64.b64encode(SECRET).decode()},
            {"id": 4294967295, "alg": "hmac-sha256", "secret": base64.b64encode(b"s" * 16).decode()},
            {"id": 0, "alg": "blake2b", "secret": base64.b64encode(b"t" * 64).decode()}]
    secrets = write({"format": 1, "current": 7, "keys": keys, "comment": "ignored"})
    assert secrets.current == 7
    assert [(s.id, s.alg) for s in secrets.secrets] == [(7, "blake3"), (4294967295, "hmac-sha256"),
                                                       (0, "blake2b")]
    ring7 = secrets.keyring("greeter")
    assert (ring7.current_id, ring7.key_ids) == (7, [0, 7, 4294967295])
    for bad in ({"format": 2, "current": 7, "keys": keys},
                {"current": 7, "keys": keys},
                {"format": 1, "current": 8, "keys": keys},
                {"format": 1, "current": 7, "keys": keys + keys[:1]},
                {"format": 1, "current": 7, "keys": [{**keys[0], "alg": "sha1"}]},
                {"format": 1, "current": 7, "keys": [{**keys[0], "secret": "c2hvcnQ="}]},
                {"format": 1, "current": 7, "keys": [{**keys[0], "secret": "not base64!"}]}):
        with pytest.raises(mackeys.MacSecretsError):
            write(bad)


def test_open_refuses_too_many_frames_as_a_wire_error():
    """Found by fuzz/atheris_verify.py: 17 frames raised ValueError."""
    from zmicro.errors import WireError
    with pytest.raises(WireError):
        ring().open([request().encode()] + [b"x"] * 16, b"p")


def test_nonces_are_unique_and_not_shared_with_a_forked_child():
    r = ring()
    nonces = {header_of(r.seal(request(), [])).nonce for _ in range(2000)}
    assert len(nonces) == 2000  # across several refills of the pool
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child signs with what would be the parent's next nonces
        os.close(read)
        os.write(write, header_of(r.seal(request(), [])).nonce)
        os._exit(0)
    os.close(write)
    child = os.read(read, 16)
    os.close(read)
    os.waitpid(pid, 0)
    assert len(child) == 16
    mine = header_of(r.seal(request(), [])).nonce
    assert child != mine
