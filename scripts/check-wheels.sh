#!/usr/bin/env bash
# Check every wheel in dist/ (or $ZMICRO_DIST) the way a user meets it, with
# no C compiler anywhere on PATH:
#
#   1. a fresh venv of the wheel's own Python (cp311 -> CPython 3.11, found
#      by name as scripts/build-wheels.sh does; a wheel without its Python
#      here fails the check: it would ship untested);
#   2. PATH = that venv's bin/ + a directory holding only readelf (the package
#      test reads the core's NEEDED), and `command -v` proves that cc, gcc,
#      clang, c99 and zig are not found;
#   3. pip install of the wheel and its dependencies, binaries only
#      (--only-binary :all:: nothing is compiled, ours or theirs);
#   4. import, and zmicro.__file__ must be in the venv's site-packages;
#   5. a secure call between two processes: examples/demo.py starts
#      examples/greeter.py and calls it by name over CurveZMQ with the MAC
#      (the defaults), with a temporary ZMICRO_HOME and registry;
#   6. a quick subset of the test suite, copied out of the tree to a
#      temporary directory, so the package under test is the installed wheel
#      (python/ is on no sys.path; the copy of python/zmicro beside it is what
#      test_every_subpackage_is_installed compares the wheel with).
#
# Each wheel's check is bounded by $ZMICRO_CHECK_TIMEOUT seconds (default
# 150); about 45 s per wheel on the 2-core CI host.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
source scripts/_pythons.sh
DIST="${ZMICRO_DIST:-$ROOT/dist}"
LIMIT="${ZMICRO_CHECK_TIMEOUT:-150}"
# The quick subset: the package's make-up, the header codec and frames, the
# MAC, calls to services in other processes (secure by default) and the
# security tests; minus key rotation, 7 s of waiting on its own.
TESTS=(tests/test_package.py tests/wire/test_roundtrip.py tests/wire/test_frames.py
       tests/mac tests/rpc/test_calls.py tests/rpc/test_secure.py)
DESELECT=(--deselect tests/rpc/test_secure.py::test_rotation_without_downtime)
# pytest and hypothesis with the test extra's pins (its other packages are
# for tests outside the subset).
TESTDEPS="$(python3 -c 'import tomllib; print(" ".join(d for d in tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["test"] if d.startswith(("pytest", "hypothesis"))))')"

shopt -s nullglob
wheels=("$DIST"/zmicro-*.whl)
[ ${#wheels[@]} -gt 0 ] || { echo "no wheels in $DIST (run scripts/build-wheels.sh)" >&2; exit 1; }
WORK="$(mktemp -d "${TMPDIR:-/tmp}/zmicro-check.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

check_one() {  # $1 = wheel, $2 = python, $3 = its own work dir
    local whl="$1" py="$2" w="$3" venv cpath c
    venv="$w/venv"
    "$py" -m venv "$venv"
    mkdir -p "$w/bin" "$w/home" "$w/zmicro-home" "$w/registry"
    chmod 700 "$w/zmicro-home" "$w/registry" "$w/home"   # zmicro refuses shared ones
    ln -s "$(command -v readelf)" "$w/bin/readelf"
    cpath="$venv/bin:$w/bin"
    # Everything below runs with this PATH, HOME and key store only (pip's
    # index, proxy and certificate settings pass through: pip needs them).
    local -a pass=()
    mapfile -t pass < <(env | grep -E '^(PIP_[A-Z_]+|https?_proxy|HTTPS?_PROXY|no_proxy|NO_PROXY|SSL_CERT_FILE|SSL_CERT_DIR|REQUESTS_CA_BUNDLE)=' || true)
    local -a ENV=(env -i "${pass[@]}" "PATH=$cpath" "HOME=$w/home" "LANG=C.UTF-8"
                  "XDG_CONFIG_HOME=$w/home/.config" "XDG_STATE_HOME=$w/home/.state"
                  "XDG_CACHE_HOME=$w/home/.cache" "ZMICRO_HOME=$w/zmicro-home"
                  "ZMICRO_REGISTRY_DIR=$w/registry" "TMPDIR=$w")
    for c in cc gcc clang c99 zig x86_64-linux-gnu-gcc; do
        if "${ENV[@]}" /bin/sh -c "command -v $c" >/dev/null; then
            echo "a C compiler is on the check's PATH: $c" >&2; return 1
        fi
    done
    echo "   PATH=$cpath: command -v cc/gcc/clang/c99/zig finds nothing"
    # pip's own cache stays in $HOME/.cache: only the index's wheels come in.
    "${ENV[@]}" "$venv/bin/python" -m pip install -q --disable-pip-version-check \
        --only-binary=:all: "$whl" $TESTDEPS
    echo "   installed with --only-binary :all:"
    (cd "$w" && "${ENV[@]}" "$venv/bin/python" - "$venv" <<'EOF'
import sys, sysconfig
from pathlib import Path
import zmicro
site = Path(sysconfig.get_paths()["purelib"]).resolve()
where = Path(zmicro.__file__).resolve()
assert where.is_relative_to(site) and site.is_relative_to(Path(sys.argv[1]).resolve()), (where, site)
from zmicro import _core
assert Path(_core.__file__).resolve().is_relative_to(site), _core.__file__
print(f"   import zmicro {zmicro.__version__}: {where.parent}")
EOF
    )
    mkdir -p "$w/examples"
    cp examples/demo.py examples/greeter.py "$w/examples/"
    (cd "$w" && "${ENV[@]}" "$venv/bin/python" examples/demo.py -n 200) >"$w/demo.log" 2>&1 \
        || { cat "$w/demo.log" >&2; return 1; }
    # The demo prints what it did; each line below is one claim checked.
    for expect in "security: CurveZMQ, only allowlisted keys, a MAC on every message" \
                  "sync:  {'message': 'Hello Ada'}" "200 sync calls:" "200 async calls:" \
                  "nodes left in the registry: 0"; do
        grep -qF "$expect" "$w/demo.log" || { echo "demo output lacks: $expect" >&2; cat "$w/demo.log" >&2; return 1; }
    done
    echo "   secure call between two processes: $(grep -F "200 sync calls:" "$w/demo.log")"
    mkdir -p "$w/src/python"
    cp -r tests "$w/src/tests"
    cp -r python/zmicro "$w/src/python/zmicro"
    # A plugin loaded before the tests: the zmicro they import is the wheel's.
    cat >"$w/src/installed_zmicro.py" <<'EOF'
import sys, sysconfig
from pathlib import Path

def pytest_configure(config):
    import zmicro
    site = Path(sysconfig.get_paths()["purelib"]).resolve()
    assert Path(zmicro.__file__).resolve().is_relative_to(site), zmicro.__file__
    assert not any(Path(p).resolve().name == "python" for p in sys.path if p), sys.path
EOF
    # CI unset: the subset runs hypothesis' dev profile (the full suite runs
    # the CI one); -p no:cacheprovider: nothing written next to the copy.
    (cd "$w/src" && "${ENV[@]}" "$venv/bin/python" -m pytest -q -p no:cacheprovider \
        --rootdir "$w/src" -p installed_zmicro "${TESTS[@]}" "${DESELECT[@]}") \
        >"$w/pytest.log" 2>&1 || { tail -40 "$w/pytest.log" >&2; return 1; }
    echo "   tests against the installed wheel: $(tail -1 "$w/pytest.log")"
}

status=0
for whl in "${wheels[@]}"; do
    name="$(basename "$whl")"
    tag="$(sed -E 's/.*-cp3([0-9]+)-cp3[0-9]+t?-.*/\1/' <<<"$name")"
    v="3.$tag"
    py="$(find_python "$v")"
    echo "== $name ($(( $(stat -c %s "$whl") / 1024 )) KiB)"
    if [ -z "$py" ]; then
        echo "   FAILED: no CPython $v here to check it with" >&2; status=1; continue
    fi
    mkdir -p "$WORK/$v"
    start=$SECONDS
    # A function cannot be given to timeout(1): run this script's function in
    # a child bash that sources nothing else.
    if timeout "$LIMIT" bash -c "$(declare -f check_one find_python); $(declare -p TESTS DESELECT TESTDEPS); cd '$ROOT'; set -euo pipefail; check_one '$whl' '$py' '$WORK/$v'"; then
        echo "   ok, CPython $v ($py), $(( SECONDS - start )) s"
    else
        echo "   FAILED, CPython $v, after $(( SECONDS - start )) s (limit $LIMIT s)" >&2; status=1
    fi
done
exit $status
