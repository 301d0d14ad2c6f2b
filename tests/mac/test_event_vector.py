"""docs/protocol.md §7.7's event vector: the documented header is what
zmicro writes for those fields, the documented MACs are the core's over the
documented frame with the topic's derived key, and a subscriber holding
that master secret accepts the frame (and refuses it altered)."""

from __future__ import annotations

import base64
import json

import pytest

import zmicro
from zmicro import _core, wire
from zmicro.errors import EventRefused
from zmicro.security import mac, mackeys

from ..cli.test_protocol_doc import BLOCKS, reference_mac, vector

MASTER = bytes(range(32))
TOPIC = "order.created"
ALGS = {"HMAC-SHA256": ("hmac-sha256", _core.MAC_HMAC_SHA256),
        "BLAKE2b-256": ("blake2b", _core.MAC_BLAKE2B),
        "BLAKE3": ("blake3", _core.MAC_BLAKE3)}


def documented_header() -> bytes:
    hexed = "".join(BLOCKS["event-header-hex"].split())
    assert eval(BLOCKS["event-header-fields"], {"zmicro": zmicro}) == hexed  # noqa: S307
    return bytes.fromhex(hexed)


def test_the_event_header():
    header = zmicro.decode_header(documented_header())
    assert len(documented_header()) == 168
    assert (header.kind, header.flags, header.service) == (
        wire.Kind.EVENT, wire.FLAG_SIGNED | wire.FLAG_BODY_INLINE | wire.FLAG_MAC_TRAILER,
        "zmicro.topic." + TOPIC)


@pytest.mark.parametrize("name", ALGS)
def test_the_event_vector(tmp_path, name):
    alg_name, alg = ALGS[name]
    inline = documented_header() + b'{"id":1}'
    key = mackeys.derive_key(MASTER, "zmicro.topic." + TOPIC, 1)
    documented = vector("event-vector")
    assert documented.keys() == ALGS.keys()
    assert mac.compute(alg, key, [b"", inline]).hex() == documented[name]
    assert reference_mac()(alg, key, b"", [inline]).hex() == documented[name]
    # A subscriber with that master secret (id 1, this algorithm) takes it.
    path = tmp_path / "mac.keys"
    path.write_text(json.dumps({"format": 1, "current": 1, "keys": [
        {"id": 1, "alg": alg_name, "secret": base64.b64encode(MASTER).decode()}]}))
    path.chmod(0o600)
    inbox = _core.EventInbox(TOPIC, secrets=mackeys.MacSecrets(path, create=False),
                             clock=lambda: 1_800_000_000.0)
    frame = inline + bytes.fromhex(documented[name])
    assert len(frame) == 208
    event = inbox.check(frame)
    assert (event.event_id, event.body, event.content_type, event.signed) == (
        bytes(range(48, 64)), b'{"id":1}', "application/json", True)
    with pytest.raises(EventRefused):
        inbox.check(frame[:-1] + bytes([frame[-1] ^ 1]))
