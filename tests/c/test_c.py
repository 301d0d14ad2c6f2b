"""Build src/ alone (libc only, strict warnings) with its C test and run it."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SRC = sorted((ROOT / "src").glob("*.c"))
STRICT = ["-std=c11", "-O1", "-g", "-Wall", "-Wextra", "-Wpedantic", "-Wconversion",
          "-Wshadow", "-Werror"]
SANITIZE = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all",
            "-fno-omit-frame-pointer"]


def _compilers():
    """Each distinct C compiler on PATH (cc is usually gcc)."""
    found = {}
    for cc in (os.environ.get("CC", "cc"), "gcc", "clang"):
        path = shutil.which(cc)
        if path:
            found.setdefault(os.path.realpath(path), cc)
    return list(found.values())


def _sanitizers_link(cc: str, tmp: Path) -> bool:
    probe = tmp / "probe.c"
    probe.write_text("int main(void) { return 0; }\n")
    return subprocess.run([cc, *SANITIZE, str(probe), "-o", str(tmp / "probe")],
                          capture_output=True).returncode == 0


@pytest.mark.parametrize("cc", _compilers())
def test_src_builds_alone_and_passes(cc, tmp_path):
    flags = STRICT + (SANITIZE if _sanitizers_link(cc, tmp_path) else [])
    exe = tmp_path / "test_src"
    build = subprocess.run(
        [cc, *flags, f"-I{ROOT / 'src'}", str(Path(__file__).with_name("test_src.c")),
         *map(str, SRC), "-o", str(exe)],
        capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    # The binary links its own compiler's sanitizer runtime: drop a preload
    # meant for the Python process (make sanitize sets one).
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=120,
                         env={**env, "ASAN_OPTIONS": "detect_leaks=1"})
    assert run.returncode == 0, run.stdout + run.stderr
    assert "passed" in run.stdout
