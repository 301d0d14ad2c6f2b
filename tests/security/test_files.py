"""The key store's file writer (zmicro.security._files): replace or never
clobber, exact modes, private before the first byte, no temporary file left
behind, symlinks not followed."""

from __future__ import annotations

import os
import stat
import tempfile
import threading
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zmicro.security._files import TEMPORARY_PREFIX, write_atomic


def mode(path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.fixture
def umask():
    """os.umask, the process's umask restored after the test."""
    old = os.umask(0o022)
    try:
        yield os.umask
    finally:
        os.umask(old)


@pytest.mark.parametrize("replace", [True, False])
def test_a_second_write_replaces_only_when_asked(tmp_path, replace):
    path = tmp_path / "f"
    assert write_atomic(path, b"first", replace=replace) is True
    assert write_atomic(path, b"second", replace=replace) is replace
    assert path.read_bytes() == (b"second" if replace else b"first")
    assert os.listdir(tmp_path) == ["f"]


@pytest.mark.parametrize("wanted", [0o600, 0o644, 0o640])
@pytest.mark.parametrize("mask", [0o000, 0o022, 0o077])
@pytest.mark.parametrize("replace", [True, False])
def test_the_mode_is_exact_whatever_the_umask(tmp_path, umask, wanted, mask, replace):
    umask(mask)
    path = tmp_path / "f"
    write_atomic(path, b"x", mode=wanted, replace=replace)
    assert mode(path) == wanted


def test_the_default_mode_is_private(tmp_path, umask):
    umask(0o000)
    write_atomic(tmp_path / "f", b"x", replace=True)
    assert mode(tmp_path / "f") == 0o600


@pytest.mark.parametrize("wanted", [0o600, 0o644])
def test_the_mode_is_set_before_the_first_byte_under_a_name_readers_skip(
        tmp_path, monkeypatch, umask, wanted):
    """Every write finds the file with its final mode already (a secret is
    never readable by others, even with umask 0), under a temporary name
    with a leading dot that does not end in ".key"."""
    umask(0o000)
    real_write = os.write
    seen = []

    def spy(fd, data):
        seen.append((stat.S_IMODE(os.fstat(fd).st_mode), sorted(os.listdir(tmp_path))))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", spy)
    write_atomic(tmp_path / "id.key", b"secret" * 1000, mode=wanted, replace=False)
    monkeypatch.undo()
    assert seen and all(m == wanted for m, _ in seen)
    names = seen[0][1]
    assert len(names) == 1
    assert names[0].startswith(TEMPORARY_PREFIX) and not names[0].endswith(".key")


@pytest.mark.parametrize("replace", [True, False])
@pytest.mark.parametrize("failing", ["write", "fsync", "fchmod"])
def test_no_temporary_file_is_left_after_an_error(tmp_path, monkeypatch, replace, failing):
    path = tmp_path / "f"
    path.write_bytes(b"old")

    def fail(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, failing, fail)
    with pytest.raises(OSError, match="No space"):
        write_atomic(path, b"new", replace=replace)
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["f"]
    assert path.read_bytes() == b"old"


def test_no_temporary_file_is_left_when_the_name_is_a_directory(tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(IsADirectoryError):
        write_atomic(tmp_path / "d", b"new", replace=True)
    assert write_atomic(tmp_path / "d", b"new", replace=False) is False
    assert os.listdir(tmp_path) == ["d"] and os.listdir(tmp_path / "d") == []


def test_a_missing_directory_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        write_atomic(tmp_path / "missing" / "f", b"x", replace=True)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("replace", [True, False])
def test_a_symlink_at_the_name_is_not_followed(tmp_path, replace):
    target = tmp_path / "elsewhere"
    target.write_bytes(b"theirs")
    link = tmp_path / "f"
    link.symlink_to(target)
    won = write_atomic(link, b"ours", replace=replace)
    assert target.read_bytes() == b"theirs"
    if replace:  # the link itself was replaced by our file
        assert won and not link.is_symlink() and link.read_bytes() == b"ours"
    else:  # a name that exists, even as a link, is not ours to take
        assert not won and link.is_symlink()
    assert sorted(os.listdir(tmp_path)) == ["elsewhere", "f"]


def test_racing_creators_one_wins_and_its_file_stays(tmp_path):
    """Creation without replace, from many threads at once: exactly one
    returns True, and the file is that one's, whole."""
    for round_ in range(20):
        path = tmp_path / f"f{round_}"
        start = threading.Barrier(8)
        results: dict[int, bool] = {}

        def create(i: int) -> None:
            start.wait()
            results[i] = write_atomic(path, str(i).encode() * 4096, replace=False)

        threads = [threading.Thread(target=create, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        winners = [i for i, won in results.items() if won]
        assert len(results) == 8 and len(winners) == 1
        assert path.read_bytes() == str(winners[0]).encode() * 4096
    assert sorted(os.listdir(tmp_path)) == sorted(f"f{i}" for i in range(20))


@settings(deadline=None, max_examples=50)
@given(data=st.binary(max_size=1 << 17), replace=st.booleans())
def test_the_bytes_written_are_the_bytes_given(data, replace):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "f"
        assert write_atomic(path, data, replace=replace)
        assert path.read_bytes() == data
