"""Publishers pick up rotated MAC keys as calls do (core/keyring.pyx,
KeySource): encode_event signs through a KeySource, which looks at the
secrets file at most every KEYS_RELOAD_INTERVAL seconds, before signing.
Nobody calls reload_if_changed() here: another MacSecrets instance (another
process, `zmicro keys rotate`) adds a key and makes it current, and the
next events are signed with the new key id and accepted by a subscriber
that reads the file afresh."""

from __future__ import annotations

import threading

import zmicro
from zmicro import _core, wire
from zmicro.broker.base import SubscribeOptions
from zmicro.broker.memory import MemoryBroker
from zmicro.security import Security
from zmicro.security.mackeys import MacSecrets

from ..helpers import eventually

TOPIC = "order.created"


def key_id(frame: bytes) -> int:
    return wire.parse_frames([frame]).header.key_id


def rotate(path) -> int:
    """Another instance of the same file adds a key and makes it current."""
    other = MacSecrets(path)
    new_id = other.add()
    other.set_current(new_id)
    return new_id


def test_encode_event_given_macsecrets_follows_a_rotation(tmp_path):
    path = tmp_path / "mac.keys"
    secrets = MacSecrets(path)
    first, _ = _core.encode_event(TOPIC, b"x", secrets=secrets, request_id=1)
    old_id = key_id(first)
    new_id = rotate(path)
    assert new_id != old_id
    ids = iter(range(2, 10**9))
    frame = eventually(
        lambda: (f := _core.encode_event(TOPIC, b"x", secrets=secrets,
                                         request_id=next(ids))[0]) and key_id(f) == new_id and f,
        "an event signed with the rotated key")
    box = _core.EventInbox(TOPIC, secrets=MacSecrets(path))  # the file as it is now
    assert box.check(frame).signed
    assert box.check(first).signed  # the old key is still accepted


def test_a_publisher_signs_with_the_rotated_key_and_it_is_accepted(zmicro_keys):
    secrets_path = Security.resolve().secrets.path
    frames: list[bytes] = []
    lock = threading.Lock()

    def on_delivery(d):
        with lock:
            frames.append(d.data)
        d.ack()

    broker = MemoryBroker()
    broker.subscribe(TOPIC, on_delivery, SubscribeOptions())
    def published(n: int) -> bytes:
        """The n-th frame (1-based) once the memory broker delivered it."""
        return eventually(lambda: len(frames) >= n and frames[n - 1], f"delivery {n}")

    with zmicro.Publisher(broker=broker) as pub:
        pub.publish(TOPIC, {"n": 0})
        old_id = key_id(published(1))
        new_id = rotate(secrets_path)
        assert new_id != old_id

        def rotated():
            n = len(frames) + 1  # (every earlier publish was delivered)
            pub.publish(TOPIC, {"n": 1})
            frame = published(n)
            return key_id(frame) == new_id and frame

        frame = eventually(rotated, "an event signed with the rotated key")
    broker.close()
    box = _core.EventInbox(TOPIC, secrets=MacSecrets(secrets_path))
    ev = box.check(frame)
    assert ev.signed and ev.topic == TOPIC
