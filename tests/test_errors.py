"""zmicro.errors: status codes are ints that print as names, and RPCError
keeps its code through pickling."""

from __future__ import annotations

import pickle

from zmicro import Code, RPCError, WireError, WireErrorCode


def test_code_prints_its_name_and_is_its_wire_int():
    code = RPCError(5, "no such user").code
    assert type(code) is Code
    assert str(code) == f"{code}" == "Code.NOT_FOUND"
    assert repr(code) == "<Code.NOT_FOUND: 5>"
    assert code == 5 and int(code) == 5 and code.name == "NOT_FOUND"
    assert {5: "found"}[code] == "found"  # hashes as its int
    assert f"{code:d}" == "5"


def test_rpc_error_text_uses_the_bare_name():
    assert str(RPCError(Code.NOT_FOUND, "no such user", id="users")) == \
        "NOT_FOUND: no such user [users]"


def test_unknown_codes_become_unknown():
    assert RPCError(99).code is Code.UNKNOWN


def test_rpc_error_pickles_with_its_code():
    err = pickle.loads(pickle.dumps(RPCError(Code.ABORTED, "x", id="svc", processed=None)))
    assert (err.code, err.detail, err.id, err.processed) == (Code.ABORTED, "x", "svc", None)
    assert type(err.code) is Code


def test_wire_error_code_prints_its_name():
    err = WireError(7, "out of bounds")
    assert str(err.code) == "WireErrorCode.BOUNDS" and err.code == 7
    assert str(err) == "out of bounds (BOUNDS)"
    assert WireError(999, "?").code == 999  # not an enum member: kept as the int
