"""Atheris harness for the checks of received signed messages.

What a secure zmicro core does with the frames of a message before anything
else: zmicro._core.Keyring.open parses the frame layout and the header
(src/), then checks, in order, the sizes, the key id, the MAC bound to the
message's exchange, the timestamp window and, for a message a server
remembers, the service's nonce set with its quota per principal
(core/keyring.pyx over src/zm_mac.c, src/zm_replay.c; docs/protocol.md §7).

It fuzzes events too (docs/protocol.md §4.6), in the same budget: when
bit 7 of byte 0 is set, each message's first frame goes to
zmicro._core.EventInbox.check (topic "t", acked set of 1 + (b & 3) ids),
re-signed as an event when the mode says so, and acked when bit 1 of the
mode is set. Every frame must raise EventRefused or be accepted, and the
model decides: a frame accepted as given has the right MAC; an accepted
event is a duplicate exactly when its id was acked before; a new one is
"replay_full" exactly when the model holds `quota` acked ids.

Input format (so that seeds can be real signed messages):

    byte 0        the ring of this input: quota per principal 1 + (b & 3),
                  principals tracked 1 + (b >> 2 & 3); bit 7: events
    then up to 8 messages, each:
      byte        mode: bit 0 re-sign (replace the MAC by the right one, when
                  the header names a key the ring holds, so that inputs get
                  past the MAC to the window and nonce checks); bit 1 an
                  answer (opened bound to the binding below, remembered
                  nowhere), else a request (binding empty, its nonce
                  remembered under its principal); bits 2-3 the principal
                  (one of four)
      byte        binding length (mod 33), then that many bytes
      byte        frame count (mod 18), then each frame: u16le length +
                  bytes (a length past the end takes what is left)

Each input gets a ring of its own (clock fixed), so inputs do not depend on
each other. Every message must either raise WireError (a layout or header
the frame layer refuses) or return an outcome name, and the outcome must be
the one a model predicts: an answer never touches the nonce set; a request
that passes the MAC and the window is "replay_full" if its principal found
no slot (the ring tracks its maximum of principals already), "replay" if
any principal had that nonce accepted, "replay_full" if its principal holds
its quota, else "ok" (and remembered). Accepting a wrong MAC is a finding too.

    python fuzz/atheris_verify.py --make-seeds fuzz/corpus/verify   # seeds
"""

import os
import sys

import atheris

with atheris.instrument_imports(include=["zmicro"]):
    import zmicro._core as core
    from zmicro.errors import EventRefused, WireError
    from zmicro.wire import Header

NOW = 1_800_000_000.0
SECRETS = {1: (core.MAC_HMAC_SHA256, b"\x01" * 32), 2: (core.MAC_BLAKE2B, b"\x02" * 32),
           3: (core.MAC_BLAKE3, b"\x03" * 32)}
OUTCOMES = set(core.MAC_FAILURE_NAMES)
PRINCIPALS = (b"", b"alice", b"bob", b"k" * 40)
MAX_MESSAGES = 8


def ring(config: int = 0, current: int = 1) -> core.Keyring:
    keys = [core.MacKey(i, alg, secret) for i, (alg, secret) in SECRETS.items()]
    return core.Keyring(keys, current, window=30.0, clock=lambda: NOW,
                        replay_quota=1 + (config & 3), max_principals=1 + (config >> 2 & 3))


class _Secrets:
    """What EventInbox asks of a MacSecrets: every name's ring is ring()."""

    def __init__(self) -> None:
        self.r = ring()

    def keyring(self, service: str, *, cache: bool = True) -> core.Keyring:
        return self.r

    def reload_if_changed(self) -> bool:
        return False


EVENT_REFUSALS = set(core.EVENT_REFUSALS)


def _event_resigned(frame: bytes) -> bytes:
    """`frame` with its MAC trailer recomputed, when its header asks for a
    trailer and names a key (else as it was)."""
    try:
        header, covered, _ = _header([frame])
    except (WireError, IndexError, ValueError):
        return frame
    if header.key_id not in SECRETS or not header.flags & 4 or len(frame) < 32:
        return frame
    alg, secret = SECRETS[header.key_id]
    return covered[0] + core.mac_compute(alg, secret, [b"", covered[0]])


def events_input(config: int, messages) -> None:
    """EventInbox against a model of its sets: ids acked, and ids in
    progress (checked, neither acked nor released), which share the quota.
    Like the glue, it acks or releases the copy that took the in-progress
    mark (mode bit 2 acks, bit 4 releases, neither: still running), acks a
    duplicate again (bit 2), and leaves an in-progress copy alone (nacked
    without touching the inbox)."""
    quota = 1 + (config & 3)
    inbox = core.EventInbox("t", secrets=_Secrets(), replay_quota=quota, clock=lambda: NOW)
    acked: set[bytes] = set()
    running: set[bytes] = set()
    for mode, _, frames in messages:
        frame = frames[0] if frames else b""
        if mode & 1:
            frame = _event_resigned(frame)
        try:
            event = inbox.check(frame)
        except EventRefused as exc:
            if exc.reason not in EVENT_REFUSALS:
                raise AssertionError(f"unexpected reason {exc.reason!r}") from None
            if exc.reason == "replay_full" and len(acked) + len(running) < quota:
                raise AssertionError("replay_full with room in the acked set") from None
            continue
        header, covered, tag = _header([frame])
        alg, secret = SECRETS[header.key_id]
        if not mode & 1 and core.mac_compute(alg, secret, [b"", covered[0]]) != tag:
            raise AssertionError("accepted an event whose MAC is wrong")
        eid = event.event_id
        if event.duplicate != (eid in acked):
            raise AssertionError(f"duplicate={event.duplicate}, the model says otherwise")
        if event.in_progress != (not event.duplicate and eid in running):
            raise AssertionError(f"in_progress={event.in_progress}, the model says otherwise")
        if event.in_progress:
            continue
        if event.duplicate:
            if mode & 2:
                inbox.acked(event)
            continue
        if len(acked) + len(running) >= quota:
            raise AssertionError("accepted a new event with the acked set full")
        running.add(eid)
        if mode & 2:
            inbox.acked(event)
            running.discard(eid)
            acked.add(eid)
        elif mode & 4:
            inbox.release(event)
            running.discard(eid)


def split(data: bytes):
    """(ring config, [(mode, binding, frames)...]) from an input."""
    if not data:
        return 0, []
    config, rest, messages = data[0], data[1:], []
    while len(rest) >= 3 and len(messages) < MAX_MESSAGES:
        mode, blen = rest[0], rest[1] % 33
        binding, rest = rest[2:2 + blen], rest[2 + blen:]
        if not rest:
            break
        count, rest = rest[0] % 18, rest[1:]
        frames = []
        for _ in range(count):
            n = int.from_bytes(rest[:2], "little")
            frames.append(rest[2:2 + n])
            rest = rest[2 + n:]
        messages.append((mode, binding, frames))
    return config, messages


def join(config: int, messages) -> bytes:
    out = bytes([config])
    for mode, binding, frames in messages:
        out += bytes([mode, len(binding)]) + binding + bytes([len(frames)])
        for f in frames:
            out += len(f).to_bytes(2, "little") + f
    return out


def _header(frames):
    """The header of a message, and (covered frames, tag) as the MAC sees them."""
    head = frames[0]
    size = 8 + 8 * int.from_bytes(head[4:8], "little")
    header = core.decode_header(head[:size])
    if header.flags & 4:  # MAC_TRAILER: the MAC ends the one frame
        return header, [head[:-32]], head[-32:]
    return header, frames[:-1], frames[-1]


def _resigned(frames, binding):
    try:
        header, covered, _ = _header(frames)
    except (WireError, IndexError):
        return frames
    if header.key_id not in SECRETS or (header.flags & 4 and len(frames[0]) < 32) \
            or (not header.flags & 4 and len(frames) < 2) or len(frames) > core.FRAME_MAX:
        return frames  # (more frames than a message may have: open() refuses it)
    alg, secret = SECRETS[header.key_id]
    tag = core.mac_compute(alg, secret, [binding, *covered])
    if header.flags & 4:
        return [covered[0] + tag]
    return [*covered, tag]


def TestOneInput(data: bytes) -> None:
    config, messages = split(data)
    if not messages:
        return
    if config & 0x80:
        events_input(config, messages)
        return
    r = ring(config)
    quota, most = 1 + (config & 3), 1 + (config >> 2 & 3)
    seen: set[bytes] = set()
    held: dict[bytes, int] = {}
    for mode, binding, frames in messages:
        answer = bool(mode & 2)
        principal = PRINCIPALS[mode >> 2 & 3]
        binding = binding if answer else b""
        if not frames or len(frames) > 17:
            continue
        if mode & 1:
            frames = _resigned(frames, binding)
        try:
            # What the MAC and the window say, the nonce set left alone.
            alone = r.open(frames, bind=binding, remember=False)
            outcome = alone if answer else r.open(frames, principal)
        except WireError:
            continue
        if outcome not in OUTCOMES:
            raise AssertionError(f"unexpected outcome {outcome!r}")
        if alone in ("replay", "replay_full"):
            raise AssertionError(f"{alone} without the nonce set")
        if alone == "ok" and not mode & 1:
            # Accepted as given: the MAC must be the right one.
            header, covered, tag = _header(frames)
            alg, secret = SECRETS[header.key_id]
            if core.mac_compute(alg, secret, [binding, *covered]) != tag:
                raise AssertionError("accepted a message whose MAC is wrong")
        if answer:
            continue
        # The model of the nonce set (zm_replay.h, Keyring.check): a
        # principal gets its slot once a message of its passed the MAC and
        # the window (a forged message takes no slot).
        if alone != "ok":
            expected = alone
        elif principal not in held and len(held) >= most:
            expected = "replay_full"
        else:
            held.setdefault(principal, 0)
            nonce = _header(frames)[0].nonce
            if nonce in seen:
                expected = "replay"  # whoever had it accepted
            elif held[principal] >= quota:
                expected = "replay_full"
            else:
                expected = "ok"
                seen.add(nonce)
                held[principal] += 1
        if outcome != expected:
            raise AssertionError(f"the nonce set said {outcome!r}, the model {expected!r} "
                                 f"(principal {principal!r}, quota {quota}, most {most})")


def make_seeds(directory: str) -> None:
    os.makedirs(directory, exist_ok=True)
    seeds = {}
    request = Header(kind=0, request_id=7, service="svc", endpoint="Svc.Call",
                     content_type="application/msgpack", metadata={"k": b"v"})
    bind = bytes(range(16, 32))  # "the request's nonce" of the answers
    for key_id in SECRETS:
        rk = ring(current=key_id)
        msg = rk.seal(request, [b"\x81\xa1a\x01"])
        inline = rk.seal(request, [b"body"], inline=True)  # one frame: a MAC trailer
        reply = rk.seal(Header(kind=1, request_id=7, content_type="application/msgpack"),
                        [b"\xc3"], bind=bind)
        refusal = rk.seal(Header(kind=2, request_id=4, status=16, detail="unauthenticated",
                                 flags=8), bind=bind)
        # a request, the same one under another principal (a replay across
        # keys), a new one from that principal (quota 2, 2 principals)
        seeds[f"request-replayed-across-keys-key{key_id}"] = join(0b0101, [
            (0b0100, b"", msg), (0b1000, b"", msg), (0b1001, b"", inline)])
        # quota 1: a principal's second request; 1 principal: another's first
        seeds[f"quota-key{key_id}"] = join(0, [(0b0100, b"", msg), (0b0101, b"", inline),
                                               (0b1001, b"", inline)])
        seeds[f"answers-key{key_id}"] = join(0, [
            (0b10, bind, reply), (0b10, bytes(16), reply), (0b11, bind, refusal)])
        seeds[f"cancel-ping-key{key_id}"] = join(5, [
            (0b1101, b"", rk.seal(Header(kind=5, request_id=9, service="svc"))),
            (0b0001, b"", rk.seal(Header(kind=6, request_id=10)))])
    # events: re-signed and acked, the same again (a duplicate), a second
    # one with the acked set full (quota 1), one as given (a forged MAC)
    for key_id in SECRETS:
        rk = ring(current=key_id)
        event = rk.seal(Header(kind=8, request_id=1, service="zmicro.topic.t",
                               content_type="application/json"), [b'{"id":1}'], inline=True)
        other = rk.seal(Header(kind=8, request_id=2, service="zmicro.topic.t"), [b""],
                        inline=True)
        seeds[f"events-key{key_id}"] = join(0x80, [
            (0b11, b"", event), (0b11, b"", event), (0b01, b"", other),
            (0b00, b"", [other[0][:-1] + b"\0"])])
    r = ring()
    seeds["two-bodies"] = join(0, [(0, b"", r.seal(Header(kind=0, request_id=1),
                                                   [b"a", b"b"]))])
    seeds["unsigned"] = join(0, [(0, b"", [Header(kind=0, request_id=1).encode(), b"x"])])
    for name, data in seeds.items():
        with open(os.path.join(directory, name), "wb") as f:
            f.write(data)


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--make-seeds":
        make_seeds(sys.argv[2])
        return
    # run.sh checks this line to be sure the sanitized build is the one loaded.
    print(f"atheris_verify: zmicro._core from {core.__file__}", file=sys.stderr)
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
