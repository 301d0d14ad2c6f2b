"""Atheris harness for the MAC-verify path of received messages.

What a secure server does with the frames of a request before any handler:
zmicro._core.Keyring.open parses the frame layout and the header (src/),
then checks, in order, the sizes, the key id, the MAC, the timestamp window
and the nonce cache (core/keyring.pyx over src/zm_mac.c, src/zm_replay.c).

Input format (so that seeds can be real signed messages):

    byte 0        mode: even = frames as given; odd = the harness re-signs
                  them (replaces the last frame by the right MAC, when the
                  header names a key it holds), so that inputs get past the
                  MAC to the window and nonce checks
    byte 1        principal length p (mod 48), then p bytes of principal
    then frames   u16le length + bytes, until the input ends

Every input must either raise WireError (a layout or header the frame layer
refuses) or return one of the outcome names; anything else is a finding.
The clock is fixed, the nonce partitions small, their number bounded, so
that state carried between inputs stays small.

    python fuzz/atheris_verify.py --make-seeds fuzz/corpus/verify   # seeds
"""

import os
import sys

import atheris

with atheris.instrument_imports(include=["zmicro"]):
    import zmicro._core as core
    from zmicro.errors import WireError
    from zmicro.wire import Header

NOW = 1_800_000_000.0
SECRETS = {1: (core.MAC_HMAC_SHA256, b"\x01" * 32), 2: (core.MAC_BLAKE2B, b"\x02" * 32),
           3: (core.MAC_BLAKE3, b"\x03" * 32)}
OUTCOMES = set(core.MAC_FAILURE_NAMES)


def _ring(**kw):
    keys = [core.MacKey(i, alg, secret) for i, (alg, secret) in SECRETS.items()]
    return core.Keyring(keys, 1, window=30.0, clock=lambda: NOW, **kw)


RING = _ring(replay_max=64, max_partitions=256)


def split(data: bytes):
    """(resign, principal, frames) from an input."""
    if len(data) < 2:
        return False, b"", [data]
    resign = bool(data[0] & 1)
    p = data[1] % 48
    principal, rest = data[2:2 + p], data[2 + p:]
    frames = []
    while rest:
        n = int.from_bytes(rest[:2], "little")
        frames.append(rest[2:2 + n])
        rest = rest[2 + n:]
    return resign, principal, frames


def join(resign: bool, principal: bytes, frames) -> bytes:
    out = bytes([1 if resign else 0, len(principal)]) + principal
    for f in frames:
        out += len(f).to_bytes(2, "little") + f
    return out


def _resigned(frames):
    try:
        header = core.decode_header(frames[0])
    except (WireError, IndexError):
        # An inline body follows the header in its frame: read the prefix.
        try:
            size = 8 + 8 * int.from_bytes(frames[0][4:8], "little")
            header = core.decode_header(frames[0][:size])
        except Exception:
            return frames
    if header.key_id not in SECRETS:
        return frames
    alg, secret = SECRETS[header.key_id]
    if header.flags & 4 and len(frames) == 1 and len(frames[0]) >= 32:  # MAC_TRAILER
        signed = frames[0][:-32]
        return [signed + core.mac_compute(alg, secret, [signed])]
    if len(frames) < 2:
        return frames
    return [*frames[:-1], core.mac_compute(alg, secret, frames[:-1])]


def TestOneInput(data: bytes) -> None:
    resign, principal, frames = split(data)
    if not frames or len(frames) > 17:
        return
    if resign:
        frames = _resigned(frames)
    try:
        outcome = RING.open(frames, principal)
    except WireError:
        return
    if outcome not in OUTCOMES:
        raise AssertionError(f"unexpected outcome {outcome!r}")
    if outcome == "ok" and not resign:
        # Accepted as given: the MAC must be the right one.
        header_frame = frames[0]
        size = 8 + 8 * int.from_bytes(header_frame[4:8], "little")
        header = core.decode_header(header_frame[:size])
        alg, secret = SECRETS[header.key_id]
        if header.flags & 4:
            covered, tag = [header_frame[:-32]], header_frame[-32:]
        else:
            covered, tag = frames[:-1], frames[-1]
        if core.mac_compute(alg, secret, covered) != tag:
            raise AssertionError("accepted a message whose MAC is wrong")


def make_seeds(directory: str) -> None:
    os.makedirs(directory, exist_ok=True)
    seeds = {}
    for key_id in SECRETS:
        ring = core.Keyring([core.MacKey(i, a, s) for i, (a, s) in SECRETS.items()], key_id,
                            window=30.0, clock=lambda: NOW)
        h = Header(kind=0, request_id=7, service="svc", endpoint="Svc.Call",
                   content_type="application/msgpack", metadata={"k": b"v"})
        seeds[f"request-key{key_id}"] = join(False, b"alice", ring.seal(h, [b"\x81\xa1a\x01"]))
        seeds[f"inline-key{key_id}"] = join(True, b"bob", ring.seal(h, [b"body"], inline=True))
        seeds[f"cancel-key{key_id}"] = join(True, b"", ring.seal(Header(kind=5, request_id=9)))
        seeds[f"trailer-key{key_id}"] = join(False, b"carol", ring.seal(
            h, [b"inline"], inline=True, trailer=True))
        seeds[f"trailer-error-key{key_id}"] = join(True, b"", ring.seal(
            Header(kind=2, request_id=4, status=16, detail="unauthenticated"), trailer=True))
    ring = _ring()
    seeds["two-bodies"] = join(False, b"p", ring.seal(Header(kind=1, request_id=1), [b"a", b"b"]))
    seeds["unsigned"] = join(False, b"p", [Header(kind=0, request_id=1).encode(), b"x"])
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
