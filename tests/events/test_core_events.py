"""Event frames in the core (docs/protocol.md §4.6): encode_event() builds
one signed frame, EventInbox.check() refuses every frame a broker could
forge, alter, replay, hold back or misroute, with the reason, and finds the
duplicates of events it acked.

Each refusal comes from a real frame: built by encode_event and then
tampered with, signed with another secret or a key the subscriber does not
know, replayed after acked(), or checked on a FakeClock moved past its age."""

from __future__ import annotations

import shutil

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zmicro import _core, wire
from zmicro.errors import EventRefused, RPCError
from zmicro.security.mackeys import MacSecrets

from ..helpers import UNIX_START, FakeClock

TOPIC = "order.created"


@pytest.fixture(scope="module")
def keys_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("events-keys")


@pytest.fixture(scope="module")
def secrets(keys_dir):
    return MacSecrets(keys_dir / "mac.keys")


@pytest.fixture(scope="module")
def other_secrets(keys_dir):
    """Another deployment: its own master secret, the same key id."""
    return MacSecrets(keys_dir / "other.keys")


def encode(secrets, topic=TOPIC, body=b"payload", *, now=UNIX_START, **kw):
    return _core.encode_event(topic, body, secrets=secrets, request_id=kw.pop("request_id", 1),
                              now=now, **kw)


def inbox(secrets, topic=TOPIC, *, clock=None, **kw):
    return _core.EventInbox(topic, secrets=secrets, clock=clock or FakeClock(UNIX_START), **kw)


def reason(box, frame) -> str:
    with pytest.raises(EventRefused) as err:
        box.check(frame)
    assert str(err.value) == f"event refused: {err.value.reason}"
    return err.value.reason


# -- round trips ----------------------------------------------------------------

topics = st.lists(st.from_regex(r"[A-Za-z0-9_-]{1,12}", fullmatch=True),
                  min_size=1, max_size=4).map(".".join)
texts = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=30)
u64 = st.integers(0, 2**64 - 1)


@settings(deadline=None, max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(topic=topics, body=st.binary(max_size=2000), request_id=u64,
       metadata=st.dictionaries(st.from_regex(r"[a-z][a-z0-9-]{0,10}", fullmatch=True), texts,
                                max_size=5),
       principal=texts, content_type=st.sampled_from(["application/msgpack", "application/json"]),
       trace=st.tuples(u64, u64, u64), signed=st.booleans())
def test_round_trip(secrets, topic, body, request_id, metadata, principal, content_type,
                    trace, signed):
    keys = secrets if signed else None
    frame, event_id = _core.encode_event(
        topic, body, secrets=keys, request_id=request_id, content_type=content_type,
        metadata=metadata, principal=principal, trace_id_high=trace[0],
        trace_id_low=trace[1], span_id=trace[2], now=UNIX_START - 5)
    # One frame, kind event, named by the topic; signed with a trailer.
    m = wire.parse_frames([frame])
    assert m.header.kind == wire.Kind.EVENT and m.header.service == "zmicro.topic." + topic
    assert m.header.nonce == event_id and len(event_id) == 16
    assert bool(m.header.flags & wire.FLAG_SIGNED) == signed
    ev = inbox(keys, topic).check(frame)
    assert (ev.topic, ev.event_id, ev.request_id, ev.body) == (topic, event_id, request_id, body)
    assert (ev.content_type, ev.metadata, ev.principal) == (content_type, metadata, principal)
    assert (ev.trace_id_high, ev.trace_id_low, ev.span_id) == trace
    assert ev.published_at == UNIX_START - 5
    assert (ev.signed, ev.duplicate) == (signed, False)


def test_bytes_metadata_comes_back_as_str_losslessly(secrets):
    frame, _ = encode(secrets, metadata={"raw": b"\xff\x00ok"})
    value = inbox(secrets).check(frame).metadata["raw"]
    assert value.encode("utf-8", "surrogateescape") == b"\xff\x00ok"


def test_every_event_has_its_own_id(secrets):
    ids = {encode(secrets)[1] for _ in range(100)} | {encode(None)[1] for _ in range(100)}
    assert len(ids) == 200


def test_large_body_stays_one_frame_up_to_event_max(secrets):
    frame, _ = encode(secrets, body=b"x" * (_core.EVENT_MAX - 400))
    assert len(frame) <= _core.EVENT_MAX
    assert inbox(secrets).check(frame).body == b"x" * (_core.EVENT_MAX - 400)
    for size in (_core.EVENT_MAX - 100, _core.EVENT_MAX + 1):  # header + trailer push it over
        with pytest.raises(RPCError) as err:
            encode(secrets, body=b"x" * size)
        assert err.value.code.name == "RESOURCE_EXHAUSTED" and err.value.processed is False


@pytest.mark.parametrize("topic", ["", "a..b", "a.*", "a b", "x" * 243])
def test_bad_topic_is_a_value_error(secrets, topic):
    with pytest.raises(ValueError):
        encode(secrets, topic)
    with pytest.raises(ValueError):
        _core.EventInbox(topic, secrets=secrets)


# -- refusals, in check order ---------------------------------------------------


def test_malformed(secrets):
    frame, _ = encode(secrets)
    box = inbox(secrets)
    assert reason(box, frame[:20]) == "malformed"          # header cut
    assert reason(box, frame[:-1]) == "bad_mac"            # (the body ends where the MAC starts)
    assert reason(box, b"") == "malformed"
    assert reason(box, b"x" * (_core.EVENT_MAX + 1)) == "malformed"
    # An event header without BODY_INLINE: no body at all is not an event.
    bare = wire.Header(kind=wire.Kind.EVENT, service="zmicro.topic." + TOPIC).encode()
    assert reason(box, bare) == "malformed"
    assert box.stats()["refused_malformed"] == 4


def test_version_and_kind(secrets):
    box = inbox(secrets)
    inline = wire.FLAG_BODY_INLINE
    name = "zmicro.topic." + TOPIC
    assert reason(box, wire.Header(version=3, kind=8, flags=inline, service=name).encode()) \
        == "version"
    assert reason(box, wire.Header(kind=9, flags=inline, service=name).encode()) == "kind"
    # A request (kind 0) made to look like an event is not one.
    assert reason(box, wire.Header(kind=0, flags=inline, service=name).encode() + b"x") == "kind"


def test_wrong_topic(secrets):
    frame, _ = encode(secrets, "order.shipped")
    assert reason(inbox(secrets), frame) == "wrong_topic"
    assert reason(inbox(None), frame) == "wrong_topic"  # insecure inboxes check it too


def test_unsigned_refused_unless_insecure(secrets):
    frame, _ = encode(None)
    assert reason(inbox(secrets), frame) == "unsigned"
    ev = inbox(None).check(frame)
    assert not ev.signed


def test_signed_event_on_an_insecure_inbox_is_accepted_unchecked(secrets):
    # No keys, no MAC check: `signed` says what was checked, not the flag.
    ev = inbox(None).check(encode(secrets)[0])
    assert not ev.signed


def test_unknown_key(keys_dir):
    # The publisher rotated to a key the subscriber has not seen yet.
    shutil.copy(keys_dir / "mac.keys", keys_dir / "rotated.keys")
    publisher = MacSecrets(keys_dir / "rotated.keys")
    publisher.set_current(publisher.add())
    subscriber = MacSecrets(keys_dir / "mac.keys")
    assert reason(inbox(subscriber), encode(publisher)[0]) == "unknown_key"


def test_forged_with_another_secret(secrets, other_secrets):
    assert reason(inbox(secrets), encode(other_secrets)[0]) == "bad_mac"


def test_topic_key_is_per_topic(secrets):
    # A frame signed for one topic, renamed to another of the same length:
    # the name picks the key, so the MAC no longer verifies.
    frame, _ = encode(secrets, "order.created")
    moved = frame.replace(b"zmicro.topic.order.created", b"zmicro.topic.order.deleted")
    assert reason(inbox(secrets, "order.deleted"), moved) == "bad_mac"


@pytest.mark.parametrize("field, old, new", [
    ("principal", b"alice", b"admin"),
    ("metadata value", b"v-one", b"v-two"),
    ("metadata key", b"k-one", b"k-two"),
    ("content type", b"application/json", b"application/jsom"),
    ("body", b"payload", b"paylaod"),
])
def test_mac_covers_every_field(secrets, field, old, new):
    frame, _ = encode(secrets, principal="alice", metadata={"k-one": "v-one"},
                      content_type="application/json")
    assert frame.count(old) == 1, field
    assert reason(inbox(secrets), frame.replace(old, new)) == "bad_mac"


def test_any_altered_byte_is_refused(secrets):
    """Every byte of the frame (header, timestamp, nonce, key id, body,
    trailer) is covered: altering any one is refused, never accepted."""
    frame, _ = encode(secrets, principal="p", metadata={"k": "v"}, span_id=7)
    box = inbox(secrets)
    box.check(frame)
    for i in range(len(frame)):
        altered = frame[:i] + bytes([frame[i] ^ 0x01]) + frame[i + 1:]
        with pytest.raises(EventRefused):
            box.check(altered)


def test_future_and_stale():
    clock = FakeClock(UNIX_START)
    box = _core.EventInbox(TOPIC, secrets=None, max_age=120.0, window=30.0, clock=clock)
    assert box.check(encode(None, now=UNIX_START + 30)[0])       # at the window's edge
    assert reason(box, encode(None, now=UNIX_START + 31)[0]) == "future"
    assert box.check(encode(None, now=UNIX_START - 120)[0])      # exactly max_age old
    assert reason(box, encode(None, now=UNIX_START - 121)[0]) == "stale"


def test_stale_and_future_signed(secrets):
    clock = FakeClock(UNIX_START)
    box = inbox(secrets, clock=clock, max_age=60.0, window=5.0)
    frame, _ = encode(secrets)
    assert box.check(frame)
    clock.advance(61)
    assert reason(box, frame) == "stale"         # held back by a broker
    clock.advance(-61 - 6)
    assert reason(box, frame) == "future"        # our clock is behind by more than window


# -- the acked set ----------------------------------------------------------------


def test_duplicate_only_after_acked(secrets):
    box = inbox(secrets)
    frame, event_id = encode(secrets)
    first = box.check(frame)
    assert not first.duplicate
    copy = box.check(frame)                 # redelivered before the ack: in progress
    assert copy.in_progress and not copy.duplicate
    box.acked(first)
    again = box.check(frame)
    assert again.duplicate and again.event_id == event_id
    box.acked(again)                        # acking a duplicate is harmless
    other = inbox(secrets)                  # another subscription has its own set
    assert not other.check(frame).duplicate
    stats = box.stats()
    assert (stats["checked"], stats["duplicates"], stats["remembered"], stats["refused"]) \
        == (3, 1, 1, 0)


def test_acked_refuses_another_inbox_event(secrets):
    frame, _ = encode(secrets)
    with pytest.raises(ValueError):
        inbox(secrets).acked(inbox(secrets).check(frame))


def test_acked_ids_expire_with_max_age(secrets):
    clock = FakeClock(UNIX_START)
    box = inbox(secrets, clock=clock, max_age=100.0, replay_quota=1)
    frame, _ = encode(secrets)
    box.acked(box.check(frame))
    # The quota is full: a new event cannot be remembered, so it is refused.
    assert reason(box, encode(secrets)[0]) == "replay_full"
    assert box.check(frame).duplicate      # a duplicate needs no room
    clock.advance(101)
    # The first id expired with its max_age: room again; its frame is stale.
    assert not box.check(encode(secrets, now=clock.now)[0]).duplicate
    assert reason(box, frame) == "stale"


def test_insecure_inbox_dedups_too():
    box = inbox(None)
    frame, _ = encode(None)
    box.acked(box.check(frame))
    assert box.check(frame).duplicate


def test_refusal_text_holds_no_secret(secrets):
    frame, _ = encode(secrets)
    with pytest.raises(EventRefused) as err:
        inbox(secrets).check(frame[:-1] + b"\x00")
    assert err.value.reason == "bad_mac"
    assert repr(err.value) == "EventRefused('bad_mac')"
    assert set(_core.EVENT_REFUSALS) == {
        "malformed", "version", "kind", "wrong_topic", "unsigned", "unknown_key", "bad_mac",
        "future", "stale", "replay_full"}
