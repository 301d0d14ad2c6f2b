"""Name validation and the embedded registry's file-name escaping."""

from __future__ import annotations

import os

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from zmicro.registry import EmbeddedRegistry, Node, ServiceRecord
from zmicro.registry._paths import CHUNK, SUFFIX, decode, encode, quote, unquote
from zmicro.registry.base import NAME_MAX, check_name

# Every valid name: no "/" or NUL, no lone surrogate, at most 255 bytes of UTF-8.
names = st.text(
    st.characters(blacklist_characters="/\0", blacklist_categories=("Cs",)),
    min_size=1,
    max_size=NAME_MAX,
).filter(lambda s: len(s.encode()) <= NAME_MAX)
# Long names, to exercise the split into several components.
long_names = st.builds(
    lambda unit, n: (unit * n)[: NAME_MAX // len(unit.encode())],
    st.sampled_from(["x", "%", "é", "\U0001f600", "a+", ".="]),
    st.integers(1, NAME_MAX),
)


@given(st.one_of(names, long_names))
@example(".")
@example("..")
@example("=")
@example("+x")
@example(".tmp-1")
@example("%41")
@example("x" * 255)
@example("\U0001f600" * 63)
@example("a%" * 85)  # an escape would straddle every cut
def test_names_round_trip_to_safe_components(name):
    check_name(name, "name")
    components = encode(name)
    assert decode(components) == name
    for i, comp in enumerate(components):
        last = i == len(components) - 1
        assert comp[0] == ("=" if last else "+")
        assert comp.isascii() and "/" not in comp and "\0" not in comp
        assert comp not in (".", "..") and not comp.startswith(".")
        assert len((comp + (SUFFIX if last else "")).encode()) <= 255
        assert last or len(comp) >= CHUNK - 1  # chunks are as long as escapes allow
    base = "/registry"
    path = os.path.normpath(os.path.join(base, *components))
    assert os.path.dirname(path) == os.path.join(base, *components[:-1])
    assert path.startswith(base + "/")


@given(names, names)
def test_distinct_names_distinct_paths(a, b):
    assert (encode(a) == encode(b)) == (a == b)


@given(st.text(max_size=40))
def test_decode_accepts_only_what_encode_makes(text):
    for components in ([text], ["=" + text], text.split("/")):
        try:
            name = decode(components)
        except ValueError:
            continue
        assert encode(name) == components


@pytest.mark.parametrize("text", ["%41", "%2f", "%", "%4", "a b", "%C3", "%FF"])
def test_unquote_refuses_non_canonical(text):
    with pytest.raises(ValueError):
        unquote(text)


def test_quote_keeps_readable_names():
    assert quote("Greeter.Hello-v1_2") == "Greeter.Hello-v1_2"
    assert quote("a b/é") == "a%20b%2F%C3%A9"
    assert encode("") == ["="]


@settings(max_examples=40)
@given(st.one_of(names, long_names), st.one_of(st.just(""), names), st.one_of(names, long_names))
def test_names_round_trip_through_the_filesystem(tmp_path_factory, name, version, node_id):
    base = tmp_path_factory.mktemp("names") / "registry"
    record = ServiceRecord(name=name, version=version, nodes=(Node(id=node_id, address="tcp://h:1"),))
    with EmbeddedRegistry(base) as reg:
        reg.register(record)
        assert reg.get(name) == [record]
        assert reg.list() == [record]
        files = [os.path.join(d, f) for d, _, fs in os.walk(base) for f in fs]
        assert len(files) == 1 and os.path.realpath(files[0]).startswith(str(base.resolve()) + "/")
        reg.deregister(record)
        assert os.listdir(base) == []
