#!/usr/bin/env bash
# fuzz/run.sh [SECONDS] - build every zmicro fuzzer and run each for SECONDS
# (default 60), one after another. Exits non-zero if any of them finds a
# crash, timeout, leak or OOM, naming the harness and its artifact.
#
# Needs:
#   clang (14 or newer) with compiler-rt's libFuzzer, ASan and UBSan
#       Debian/Ubuntu: apt-get install clang libclang-rt-14-dev
#   libsodium headers and library      Debian/Ubuntu: apt-get install libsodium-dev
#   ${PYTHON:-python3}, with its C headers, and these packages installed:
#       Cython setuptools pyzmq atheris
#       (pycapnp is needed only to regenerate seeds: fuzz/make_seeds.py)
#
# Writes only under fuzz/: build/ (harnesses, the sanitized zmicro._core in
# build/py), work/<harness>/ (seeds plus what the fuzzer adds, kept between
# runs; delete it to start over), artifacts/ (crashing inputs). The zmicro
# installed in $PYTHON, if any, is left alone. fuzz/README.md has the rest.
set -euo pipefail

DURATION="${1:-60}"
if ! [[ "$DURATION" =~ ^[1-9][0-9]*$ ]]; then
    echo "usage: $0 [SECONDS]   (a positive integer, default 60)" >&2
    exit 2
fi

FUZZ="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$FUZZ")"
BUILD="$FUZZ/build"
WORK="$FUZZ/work"
ARTIFACTS="$FUZZ/artifacts"
PY="${PYTHON:-python3}"
CLANG="${CLANG:-clang}"

log() { printf '\n== %s\n' "$*"; }
die() { printf 'run.sh: %s\n' "$*" >&2; exit 2; }

# ---------------------------------------------------------------------------
# Preflight: name everything that is missing at once.
# ---------------------------------------------------------------------------
log "checking the toolchain"
missing=()
mkdir -p "$BUILD"
if ! command -v "$CLANG" >/dev/null; then
    missing+=("clang (apt-get install clang)")
else
    probe="$BUILD/probe"
    printf '%s\n' '#include <stddef.h>' '#include <stdint.h>' \
        'int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) { (void)d; (void)n; return 0; }' \
        >"$probe.c"
    "$CLANG" -fsanitize=fuzzer,address,undefined "$probe.c" -o "$probe" 2>"$probe.log" ||
        missing+=("clang's libFuzzer/ASan/UBSan runtimes (apt-get install libclang-rt-14-dev): $(head -c 300 "$probe.log")")
    printf '%s\n' '#include <sodium.h>' 'int main(void) { return sodium_init() < 0; }' >"$probe-sodium.c"
    "$CLANG" "$probe-sodium.c" -lsodium -o "$probe-sodium" 2>"$probe.log" ||
        missing+=("libsodium headers/library (apt-get install libsodium-dev): $(head -c 300 "$probe.log")")
fi
if ! PY_EXE="$("$PY" -c 'import sys; print(sys.executable)' 2>/dev/null)"; then
    missing+=("a Python interpreter: '$PY' does not run (set PYTHON)")
    PY_EXE=""
else
    for mod in Cython setuptools zmq atheris; do
        "$PY_EXE" -c "import $mod" 2>/dev/null ||
            missing+=("Python package for $mod in $PY_EXE (pip install $([ $mod = zmq ] && echo pyzmq || echo $mod))")
    done
    "$PY_EXE" -c 'import sysconfig, os, sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' ||
        missing+=("Python.h for $PY_EXE (Debian: python3-dev)")
fi
if ((${#missing[@]})); then
    printf 'run.sh: missing:\n' >&2
    printf '  - %s\n' "${missing[@]}" >&2
    exit 2
fi
ASAN_SO="$("$PY_EXE" -c 'import atheris, os; print(os.path.join(atheris.path(), "asan_with_fuzzer.so"))')"
[ -f "$ASAN_SO" ] || die "atheris has no $ASAN_SO (install atheris from its manylinux wheel, see fuzz/README.md)"
echo "clang: $("$CLANG" --version | head -1)"
echo "python: $PY_EXE ($("$PY_EXE" -c 'import sys; print(sys.version.split()[0])'))"

# ---------------------------------------------------------------------------
# Build
# ---------------------------------------------------------------------------
log "building the C harnesses"
CFLAGS=(-std=c11 -g -O1 -fsanitize=fuzzer,address,undefined
        -fno-sanitize-recover=undefined -Wall -Wextra -I"$ROOT/src")
SRC=("$ROOT"/src/*.c)
"$CLANG" "${CFLAGS[@]}" "$FUZZ/fuzz_header.c" "${SRC[@]}" -o "$BUILD/fuzz_header"
"$CLANG" "${CFLAGS[@]}" "$FUZZ/fuzz_frames.c" "${SRC[@]}" -lsodium -o "$BUILD/fuzz_frames"
"$CLANG" "${CFLAGS[@]}" "$FUZZ/fuzz_replay.c" "${SRC[@]}" -o "$BUILD/fuzz_replay"
echo "built $BUILD/fuzz_header $BUILD/fuzz_frames $BUILD/fuzz_replay"

# The sanitized extension is built in a copy of the sources, so neither the
# checkout's build/ nor the installed package is touched; cp -a keeps mtimes,
# so Cython and setuptools reuse what an earlier run built.
log "building zmicro._core with ZMICRO_SANITIZE=fuzzer"
TREE="$BUILD/srctree"
PYOUT="$BUILD/py"
mkdir -p "$TREE" "$PYOUT/zmicro"
for item in setup.py pyproject.toml setup.cfg MANIFEST.in README.md LICENSE core src python; do
    rm -rf "${TREE:?}/$item"
    [ -e "$ROOT/$item" ] && cp -a "$ROOT/$item" "$TREE/$item"
done
find "$TREE/python" \( -name '*.so' -o -name __pycache__ \) -prune -exec rm -rf {} +
find "$PYOUT/zmicro" -mindepth 1 -maxdepth 1 ! -name '_core*.so' -exec rm -rf {} +
cp -a "$TREE/python/zmicro/." "$PYOUT/zmicro/"
# CC and LDSHARED explicitly: setup.py only defaults them, and an inherited
# CC=gcc would build without SanitizerCoverage.
if ! (cd "$TREE" && CC="$CLANG" LDSHARED="$CLANG -shared" ZMICRO_SANITIZE=fuzzer \
        "$PY_EXE" setup.py build_ext --build-lib "$PYOUT" --build-temp "$BUILD/tmp") \
        >"$BUILD/ext-build.log" 2>&1; then
    tail -40 "$BUILD/ext-build.log" >&2
    die "building zmicro._core failed (full log: $BUILD/ext-build.log)"
fi
CORE_SO="$(ls "$PYOUT"/zmicro/_core*.so)"
# Without the coverage callbacks atheris would fuzz blind (cov stays ~2).
grep -q -a __sanitizer_cov_8bit_counters_init "$CORE_SO" ||
    die "$CORE_SO has no SanitizerCoverage; see $BUILD/ext-build.log"
echo "built $CORE_SO"

ATHERIS_ENV=(
    LD_PRELOAD="$ASAN_SO"
    PYTHONPATH="$PYOUT${PYTHONPATH:+:$PYTHONPATH}"
    # One malloc per Python object, so ASan sees the edges of the bytes
    # objects that decode_header reads (pymalloc pools would hide them).
    PYTHONMALLOC=malloc
    # CPython does not free everything at exit; LeakSanitizer would report
    # that on every run, so leaks are checked by the C harnesses only.
    ASAN_OPTIONS="detect_leaks=0"
    # The extension is built recoverable; stop at the first report instead.
    UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"
)
loaded="$(env "${ATHERIS_ENV[@]}" "$PY_EXE" -c 'import zmicro._core as c; print(c.__file__)')" ||
    die "the sanitized zmicro._core does not import under $ASAN_SO"
[ "$loaded" = "$CORE_SO" ] || die "python imports zmicro._core from $loaded, not $CORE_SO"

# ---------------------------------------------------------------------------
# Run
# ---------------------------------------------------------------------------
mkdir -p "$WORK" "$ARTIFACTS"
C_ENV=(
    ASAN_OPTIONS="detect_leaks=1"
    UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"
)
failed=()
summary=()

# run_fuzzer NAME SEEDS MAX_LEN ENV... -- COMMAND...
run_fuzzer() {
    local name="$1" seeds="$2" max_len="$3"
    shift 3
    local envs=()
    while [ "$1" != "--" ]; do envs+=("$1"); shift; done
    shift
    local work="$WORK/$name" logf="$WORK/$name.log" rc=0
    mkdir -p "$work"
    cp "$FUZZ/corpus/$seeds"/* "$work/"
    local before
    before="$(ls "$ARTIFACTS" | grep "^$name-" || true)"
    log "$name: ${DURATION}s, corpus $work"
    # libFuzzer stops itself after max_total_time; the outer timeout only
    # guards against a hang outside an input (then it counts as a failure).
    timeout --kill-after=30 $((DURATION + 300)) \
        env "${envs[@]}" "$@" \
        -max_total_time="$DURATION" -timeout=10 -rss_limit_mb=2048 \
        -max_len="$max_len" -print_final_stats=1 \
        -artifact_prefix="$ARTIFACTS/$name-" "$work" >"$logf" 2>&1 || rc=$?
    local new
    new="$(comm -13 <(echo "$before") <(ls "$ARTIFACTS" | grep "^$name-" || true) | sed "s|^|$ARTIFACTS/|")"
    local done_line execs
    done_line="$(grep -E '^#[0-9]+[[:space:]]+DONE' "$logf" | tail -1 || true)"
    execs="$(sed -n 's/^stat::average_exec_per_sec:[[:space:]]*//p' "$logf" | tail -1)"
    echo "${done_line:-no DONE line}"
    echo "exec/s: ${execs:-?}   log: $logf"
    if [ "$rc" -ne 0 ] || [ -n "$new" ]; then
        grep -E 'ERROR: |SUMMARY: |runtime error:|^fuzz_[a-z]+: |Error: ' "$logf" |
            awk '!seen[$0]++' | head -8 >&2 || true
        failed+=("$name (exit $rc)${new:+: }$(echo $new)")
        summary+=("$name: FAILED, exit $rc, exec/s ${execs:-?}")
        for a in $new; do
            echo "artifact: $a" >&2
            echo "reproduce: $(printf '%q ' env "${envs[@]}" "$@")$a" >&2
        done
    else
        summary+=("$name: ok, exec/s ${execs:-?}, $(echo "$done_line" | grep -oE 'cov: [0-9]+ ft: [0-9]+ corp: [0-9]+/[^ ]+')")
    fi
}

run_fuzzer fuzz_header header 8200 "${C_ENV[@]}" -- "$BUILD/fuzz_header"
run_fuzzer fuzz_frames frames 16384 "${C_ENV[@]}" -- "$BUILD/fuzz_frames"
run_fuzzer fuzz_replay replay 4096 "${C_ENV[@]}" -- "$BUILD/fuzz_replay"
run_fuzzer atheris_header header 8200 "${ATHERIS_ENV[@]}" -- "$PY_EXE" "$FUZZ/atheris_header.py"
run_fuzzer atheris_verify verify 16384 "${ATHERIS_ENV[@]}" -- "$PY_EXE" "$FUZZ/atheris_verify.py"

log "summary"
printf '%s\n' "${summary[@]}"
if ((${#failed[@]})); then
    printf '\nFAILED:\n' >&2
    printf '  %s\n' "${failed[@]}" >&2
    printf 'reproduce: see "Reproducing an artifact" in fuzz/README.md\n' >&2
    exit 1
fi
echo "all fuzzers ran ${DURATION}s without findings"
