"""Atheris harness for the Python-visible header codec.

The C harness (fuzz_header.c) checks src/zm_wire.c alone; this one goes
through what applications call: zmicro._core.decode_header (the Cython
wrapper that turns slices into str/bytes/dict) and Header.encode. For each
input:

- decode_header(data) either raises WireError (refusing is fine) or returns
  a Header; any other exception (UnicodeDecodeError from a text the C
  validator let through, TypeError, SystemError, ...) is a finding;
- the buffer-protocol path (a bytearray) must agree with the bytes path;
- a decoded Header must encode, decode back equal, and re-encode to the same
  bytes (the canonical form is a fixed point).

Native coverage only reaches libFuzzer when zmicro._core is built with
ZMICRO_SANITIZE=fuzzer and the sanitizer runtime is preloaded; fuzz/run.sh
does both (see fuzz/README.md). Run by hand:

    LD_PRELOAD=$(python -c 'import atheris; print(atheris.path())')/asan_with_fuzzer.so \\
    ASAN_OPTIONS=detect_leaks=0 PYTHONPATH=fuzz/build/py \\
    python fuzz/atheris_header.py -max_len=8200 fuzz/work/atheris_header
"""

import sys

import atheris

# Instrument only zmicro's own Python (errors.py, wire.py, ...): its native
# code carries its own SanitizerCoverage, and instrumenting pyzmq as well
# would slow every input down for branches that no input reaches.
with atheris.instrument_imports(include=["zmicro"]):
    import zmicro._core as core
    from zmicro.errors import WireError


def _code(exc):
    return getattr(exc, "code", None)


def TestOneInput(data: bytes) -> None:
    try:
        header = core.decode_header(data)
    except WireError as exc:
        try:
            core.decode_header(bytearray(data))
        except WireError as exc2:
            if _code(exc2) != _code(exc):
                raise AssertionError(
                    f"bytes path refused with {exc!r}, buffer path with {exc2!r}")
            return
        raise AssertionError(f"bytes path refused with {exc!r}, buffer path accepted")

    if core.decode_header(bytearray(data)) != header:
        raise AssertionError("bytes and buffer paths decoded differently")

    try:
        encoded = header.encode()
    except WireError as exc:
        raise AssertionError(
            f"decode_header accepted {len(data)} bytes whose header does not "
            f"encode: {exc!r}") from exc
    again = core.decode_header(encoded)
    if again != header:
        raise AssertionError(f"round trip changed the header:\n{header!r}\n{again!r}")
    if again.encode() != encoded:
        raise AssertionError("canonical encoding is not a fixed point")


def main() -> None:
    # run.sh checks this line to be sure the sanitized build is the one loaded.
    print(f"atheris_header: zmicro._core from {core.__file__}", file=sys.stderr)
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
