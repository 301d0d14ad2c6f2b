"""docs/protocol.md cannot drift from the code: its quoted schema, tables,
example bytes, MAC vector and example programs are checked here, the
programs against a real zmicro service and a real zmicro client.

A block under test follows a ``<!-- doc-test: NAME -->`` line: a fenced code
block, or a Markdown table.
"""

from __future__ import annotations

import base64
import json
import os
import random
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import zmicro
from zmicro import _core, mac, wire
from zmicro.security import mackeys
from zmicro.registry import MemoryRegistry

from .conftest import CLI_TIMEOUT, START_TIMEOUT, stop_process

capnp = pytest.importorskip("capnp")

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"
_MARK = re.compile(r"^<!-- doc-test: ([\w-]+) -->\n", re.M)


def doc_blocks() -> dict[str, str]:
    text = DOC.read_text()
    blocks = {}
    for mark in _MARK.finditer(text):
        rest = text[mark.end():]
        fence = re.match(r"```[\w-]*\n(.*?)^```\n", rest, re.S | re.M)
        if fence:
            blocks[mark.group(1)] = fence.group(1)
        else:
            table = re.match(r"(?:\|.*\n)+", rest)
            assert table, f"doc-test {mark.group(1)} marks neither a code block nor a table"
            blocks[mark.group(1)] = table.group(0)
    return blocks


BLOCKS = doc_blocks()


def table_rows(name: str) -> list[list[str]]:
    lines = BLOCKS[name].splitlines()[2:]  # skip the header row and the rule
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]


def example_header(flags: int = 0) -> bytes:
    return zmicro.Header(kind=zmicro.Kind.REQUEST, flags=flags, request_id=1,
                         deadline_us=5_000_000, content_type="application/json",
                         service="greeter", endpoint="Greeter.Hello",
                         metadata={"user": b"ada"}).encode()


def test_every_marked_block_is_tested():
    assert set(BLOCKS) == {"schema", "mac", "mac-vector", "status-codes", "wire-error-codes",
                           "header-fields", "header-hex", "client", "server", "cxx-reader",
                           "answer-header-fields", "answer-header-hex", "answer-vector",
                           "kdf", "kdf-vector", "mac-keys",
                           # tested in tests/mac/test_event_vector.py
                           "event-header-fields", "event-header-hex", "event-vector"}


# -- the header ----------------------------------------------------------------


def test_the_quoted_schema_is_wire_capnp():
    assert BLOCKS["schema"] == wire.SCHEMA.read_text()


def test_the_cxx_reader_is_the_one_tests_wire_runs():
    """3.8's C++ is a region of tests/wire/cxx/read_header.c++, which
    tests/wire/test_cxx.py compiles against libcapnp and checks."""
    source = (DOC.parents[1] / "tests" / "wire" / "cxx" / "read_header.c++").read_text()
    region = re.search(r"// doc-begin: cxx-reader\n(.*?)// doc-end: cxx-reader\n", source, re.S)
    assert BLOCKS["cxx-reader"] == region.group(1)


def test_the_field_table_gives_the_compiled_layout():
    compiled = wire.load_schema().Header.schema.node.struct
    sizes = {"uint16": 2, "enum": 2, "uint32": 4, "uint64": 8}
    expected = {}
    for field in compiled.fields:
        kind = field.slot.type.which()
        if kind in sizes:
            expected[field.name] = f"data +{field.slot.offset * sizes[kind]}"
        else:
            expected[field.name] = f"ptr {field.slot.offset}"
    text = DOC.read_text()
    table = re.search(r"\| field \| type \| where \| meaning \|\n\|.*\n((?:\|.*\n)+)", text)
    documented = {}
    for line in table.group(1).splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        documented[cells[0].strip("`")] = cells[2]
    assert documented == expected
    assert (compiled.dataWordCount, compiled.pointerCount) == (9, 7)


def test_the_example_header_bytes():
    documented = "".join(BLOCKS["header-hex"].split())
    assert eval(BLOCKS["header-fields"], {"zmicro": zmicro}) == documented  # noqa: S307
    assert bytes.fromhex(documented) == example_header()
    assert len(example_header()) == 160


def test_the_example_header_reads_back():
    h = zmicro.decode_header(example_header())
    assert (h.version, h.kind, h.request_id, h.deadline_us) == (2, 0, 1, 5_000_000)
    assert h.version == wire.WIRE_VERSION
    assert (h.content_type, h.service, h.endpoint) == ("application/json", "greeter",
                                                       "Greeter.Hello")
    assert h.metadata == {"user": b"ada"}


# -- tables --------------------------------------------------------------------


def test_the_status_code_table_is_zmicro_code():
    rows = {int(code): name for code, name, _ in table_rows("status-codes")}
    assert rows == {c.value: c.name for c in zmicro.Code}


def test_the_wire_error_table_is_wire_error_code():
    rows = {int(value): name for value, name, _ in table_rows("wire-error-codes")}
    assert rows == {c.value: c.name for c in zmicro.WireErrorCode}


# -- MAC -----------------------------------------------------------------------

ALGS = {"HMAC-SHA256": mac.Alg.HMAC_SHA256, "BLAKE2b-256": mac.Alg.BLAKE2B,
        "BLAKE3": _core.MAC_BLAKE3}
VECTOR_KEY = bytes(range(32))


def run_block(name: str, function: str):
    namespace: dict = {}
    exec(BLOCKS[name], namespace)  # noqa: S102
    return namespace[function]


def reference_mac():
    return run_block("mac", "zmicro_mac")


def vector(name: str) -> dict[str, str]:
    return dict(line.split() for line in BLOCKS[name].splitlines())


@pytest.mark.parametrize("alg", ALGS.values(), ids=ALGS.keys())
def test_the_reference_mac_is_the_core_mac(alg):
    zmicro_mac = reference_mac()
    rng = random.Random(alg)
    for _ in range(50):
        size = 32 if alg == _core.MAC_BLAKE3 else rng.randint(mac.KEY_MIN, mac.KEY_MAX)
        key = rng.randbytes(size)
        binding = rng.choice([b"", rng.randbytes(16)])
        frames = [rng.randbytes(rng.choice([0, 1, 7, 8, 100, 70_000]))
                  for _ in range(rng.randint(1, mac.FRAME_MAX - 1))]
        assert zmicro_mac(alg, key, binding, frames) == mac.compute(alg, key, [binding, *frames])


def test_the_request_vector():
    zmicro_mac = reference_mac()
    frames = [example_header(flags=wire.FLAG_SIGNED), b'{"name":"Ada"}']
    assert frames[0][20] == 1 and example_header()[20] == 0  # "byte 20 becomes 01"
    documented = vector("mac-vector")
    assert documented.keys() == ALGS.keys()
    for name, alg in ALGS.items():
        assert mac.compute(alg, VECTOR_KEY, [b"", *frames]).hex() == documented[name]
        assert zmicro_mac(alg, VECTOR_KEY, b"", frames).hex() == documented[name]


def test_the_answer_vector():
    zmicro_mac = reference_mac()
    documented_hex = "".join(BLOCKS["answer-header-hex"].split())
    assert eval(BLOCKS["answer-header-fields"], {"zmicro": zmicro}) == documented_hex  # noqa: S307
    header = bytes.fromhex(documented_hex)
    assert len(header) == 136
    reply = zmicro.decode_header(header)
    assert (reply.kind, reply.flags, reply.version) == (zmicro.Kind.REPLY, wire.FLAG_SIGNED, 2)
    body = b'{"message":"Hello Ada"}'
    binding = bytes(range(16, 32))  # the request's nonce
    documented = vector("answer-vector")
    assert documented.keys() == ALGS.keys()
    for name, alg in ALGS.items():
        assert mac.compute(alg, VECTOR_KEY, [binding, header, body]).hex() == documented[name]
        assert zmicro_mac(alg, VECTOR_KEY, binding, [header, body]).hex() == documented[name]
        # and the core's keyring checks it, bound to that nonce only
        ring = _core.Keyring([_core.MacKey(1, alg, VECTOR_KEY)], 1,
                             clock=lambda: reply.timestamp_us / 1e6)
        frames = [header, body, bytes.fromhex(documented[name])]
        assert ring.open(frames, bind=binding, remember=False) == "ok"
        assert ring.open(frames, bind=bytes(16), remember=False) == "bad_mac"


def test_the_reference_key_derivation_is_zmicros():
    zmicro_service_key = run_block("kdf", "zmicro_service_key")
    rng = random.Random(7)
    for service in ["greeter", "a", "grüße-dienst", "x" * 255, "服务"]:
        master = rng.randbytes(rng.choice([16, 32, 64]))
        key_id = rng.choice([0, 1, 2**32 - 1, rng.randrange(2**32)])
        assert zmicro_service_key(master, service, key_id) == \
            mackeys.derive_key(master, service, key_id)


def test_the_key_derivation_vectors():
    zmicro_service_key = run_block("kdf", "zmicro_service_key")
    rows = table_rows("kdf-vector")
    assert len(rows) >= 4 and any(not row[1].strip("`").isascii() for row in rows)
    for master, service, key_id, derived in rows:
        master, service, derived = (bytes.fromhex(master.strip("`")), service.strip("`"),
                                    derived.strip("`"))
        assert mackeys.derive_key(master, service, int(key_id)).hex() == derived
        assert zmicro_service_key(master, service, int(key_id)).hex() == derived


def test_the_mac_keys_example_is_read_by_zmicro(tmp_path):
    path = tmp_path / "mac.keys"
    path.write_text(BLOCKS["mac-keys"])
    path.chmod(0o600)
    secrets = mackeys.MacSecrets(path, create=False)
    doc = json.loads(BLOCKS["mac-keys"])
    assert secrets.current == doc["current"] == 2
    assert {s.alg for s in secrets.secrets} == {"hmac-sha256", "blake3"}
    # A message zmicro signs under it is what the document computes: the
    # current id's secret, derived for the service, its algorithm.
    header = zmicro.Header(kind=zmicro.Kind.PING, request_id=1, service="greeter")
    frames = secrets.keyring("greeter").seal(header)
    assert header.key_id == 2
    master = next(base64.b64decode(k["secret"]) for k in doc["keys"] if k["id"] == 2)
    key = run_block("kdf", "zmicro_service_key")(master, "greeter", 2)
    (one,) = frames  # a one-frame message: the MAC is its trailer
    assert reference_mac()(_core.MAC_BLAKE3, key, b"", [one[:-32]]) == one[-32:]


# -- the example programs ------------------------------------------------------


def test_the_minimal_client_calls_a_zmicro_service(service, tmp_path):
    program = tmp_path / "client.py"
    program.write_text(BLOCKS["client"])
    result = subprocess.run(
        [sys.executable, str(program), service.address, str(wire.SCHEMA), "Ada"],
        capture_output=True, text=True, timeout=CLI_TIMEOUT, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "Hello Ada\n"


@pytest.fixture
def minimal_server(tmp_path):
    """The doc's server, running; yields its address."""
    program = tmp_path / "server.py"
    program.write_text(BLOCKS["server"])
    process = subprocess.Popen([sys.executable, str(program), str(wire.SCHEMA)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
    line: list[str] = []
    reader = threading.Thread(target=lambda: line.append(process.stdout.readline()),
                              daemon=True)
    reader.start()
    reader.join(START_TIMEOUT)
    try:
        if not line or not line[0].startswith("tcp://"):
            stop_process(process)
            pytest.fail(f"the doc's server did not start: {line} {process.stderr.read()}")
        yield line[0].strip()
    finally:
        stop_process(process)


def test_the_minimal_server_answers_a_zmicro_client(minimal_server):
    with zmicro.Client(registry=MemoryRegistry(), timeout=30, insecure=True,
                       content_type=zmicro.codec.JSON) as client:
        def call(endpoint, request):
            return client.call("greeter", endpoint, request, address=minimal_server)

        assert call("Greeter.Hello", {"name": "Ada"}) == {"message": "Hello Ada"}
        with pytest.raises(zmicro.RPCError) as err:
            call("Greeter.Nope", {"name": "Ada"})
        assert err.value.code == zmicro.Code.UNIMPLEMENTED and err.value.id == "greeter"
        with pytest.raises(zmicro.RPCError) as err:
            call("Greeter.Hello", {"name": 1})
        assert err.value.code == zmicro.Code.INVALID_ARGUMENT


def test_the_minimal_server_answers_ping_and_unknown_versions(minimal_server, zctx):
    import zmq

    sock = zctx.socket(zmq.DEALER)
    sock.connect(minimal_server)
    for header, kind, status in [
        (zmicro.Header(kind=zmicro.Kind.PING, request_id=7), zmicro.Kind.PONG, 0),
        (zmicro.Header(kind=zmicro.Kind.PING, request_id=8, service="other"),
         zmicro.Kind.ERROR, zmicro.Code.UNAVAILABLE),
        (zmicro.Header(version=1, request_id=9), zmicro.Kind.ERROR, zmicro.Code.UNIMPLEMENTED),
        (zmicro.Header(version=3, request_id=10), zmicro.Kind.ERROR, zmicro.Code.UNIMPLEMENTED),
        (zmicro.Header(kind=9, request_id=11), zmicro.Kind.ERROR, zmicro.Code.UNIMPLEMENTED),
    ]:
        zmicro.send_message(sock, header, timeout=CLI_TIMEOUT)
        assert sock.poll(CLI_TIMEOUT * 1000)
        (frame,) = sock.recv_multipart()  # a header, nothing else
        answer = zmicro.decode_header(frame)
        assert (answer.kind, answer.request_id, answer.status) == \
            (kind, header.request_id, status)
        # The version rules (3.7): a refusal speaks the caller's version when
        # it is older, this one's otherwise; every refusal is NOT_PROCESSED.
        assert answer.version == (1 if header.version == 1 else 2)
        assert answer.flags == (wire.FLAG_NOT_PROCESSED if kind == zmicro.Kind.ERROR else 0)


def test_the_minimal_client_calls_the_minimal_server(minimal_server, tmp_path):
    program = tmp_path / "client.py"
    program.write_text(BLOCKS["client"])
    result = subprocess.run(
        [sys.executable, str(program), minimal_server, str(wire.SCHEMA), "Bo"],
        capture_output=True, text=True, timeout=CLI_TIMEOUT, stdin=subprocess.DEVNULL,
        env={**os.environ, "ZMICRO_INSECURE": "1"})
    assert result.returncode == 0, result.stderr
    assert result.stdout == "Hello Bo\n"
