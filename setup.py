"""Build of zmicro's compiled core.

One extension, ``zmicro._core``: the Cython in ``core/`` (included into
``core/_core.pyx``) and the plain C in ``src/``. It links no libzmq and no
libsodium: it finds pyzmq's at import (``core/native.pyx``).

Build modes, by environment variable:

- ``ZMICRO_DEBUG=1``: ``-O0 -g``, C asserts on, Cython bounds checks and line
  tracing (coverage, profilers), annotated HTML in ``build/debug/cython/core/``.
- ``ZMICRO_SANITIZE=1``: clang with AddressSanitizer and UBSan
  (run with ``LD_PRELOAD=$(clang -print-file-name=libclang_rt.asan-x86_64.so)``).
  ``ZMICRO_SANITIZE=fuzzer`` adds ``-fsanitize=fuzzer-no-link`` so atheris
  sees the C code's coverage (``fuzz/run.sh`` builds it this way).
"""

import os

from Cython.Build import cythonize
from setuptools import Extension, find_packages, setup


def _flag(name):
    return os.environ.get(name, "") not in ("", "0")


DEBUG = _flag("ZMICRO_DEBUG")
SANITIZE = os.environ.get("ZMICRO_SANITIZE", "")
if SANITIZE == "0":
    SANITIZE = ""
# Objects are reused by timestamp, not by flags: one build tree per mode.
MODE = "-".join(filter(None, ["debug" if DEBUG else "", f"sanitize-{SANITIZE}" if SANITIZE else ""])) or "release"

SOURCES = [
    "core/_core.pyx",
    "src/zm_common.c",
    "src/zm_wire.c",
    "src/zm_frame.c",
    "src/zm_mac.c",
    "src/zm_replay.c",
    "src/zm_hash.c",
]
DEPENDS = [
    os.path.join(d, f)
    for d in ("src", "core", "core/includes")
    for f in sorted(os.listdir(d))
    if f.endswith((".h", ".pxd", ".pyx"))
]

compile_args = ["-fvisibility=hidden"]
link_args = []
macros = []
directives = {
    "language_level": 3,
    "boundscheck": False,
    "wraparound": False,
    "initializedcheck": False,
    "cdivision": True,
    "embedsignature": True,
}

if DEBUG:
    compile_args += ["-O0", "-g3", "-UNDEBUG"]
    macros += [("CYTHON_TRACE", "1"), ("CYTHON_TRACE_NOGIL", "1")]
    directives.update(boundscheck=True, initializedcheck=True, linetrace=True)

if SANITIZE:
    os.environ.setdefault("CC", "clang")
    os.environ.setdefault("LDSHARED", "clang -shared")
    sanitizers = "address,undefined"
    if SANITIZE == "fuzzer":
        sanitizers += ",fuzzer-no-link"
    compile_args += [f"-fsanitize={sanitizers}", "-fno-omit-frame-pointer", "-g"]
    link_args += [f"-fsanitize={sanitizers}"]

# cythonize follows the .pyx includes but not .pxd files included from the
# module's .pxd: regenerate the C whenever anything under core/ is newer.
_generated = os.path.join("build", MODE, "cython", "core", "_core.c")
if os.path.exists(_generated) and max(
    os.path.getmtime(os.path.join(d, f))
    for d, _, files in os.walk("core") for f in files
) > os.path.getmtime(_generated):
    os.remove(_generated)

extensions = [
    Extension(
        "zmicro._core",
        sources=SOURCES,
        depends=DEPENDS,
        include_dirs=["src", "core/includes"],
        define_macros=macros,
        extra_compile_args=compile_args,
        extra_link_args=link_args,
    )
]

setup(
    package_dir={"": "python"},
    packages=find_packages("python"),
    ext_modules=cythonize(
        extensions,
        include_path=["core"],
        compiler_directives=directives,
        annotate=DEBUG,
        build_dir=f"build/{MODE}/cython",
    ),
    options={"build": {"build_base": f"build/{MODE}"}},
)
