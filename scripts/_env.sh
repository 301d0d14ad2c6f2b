# Sourced by the scripts: make (or reuse) .venv and install zmicro into it
# with the extras named in $ZMICRO_EXTRAS. Needs python3 >= 3.11 and a C
# compiler, nothing else.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-python3}"
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
    echo "zmicro needs Python >= 3.11 (found $("$PY" --version 2>&1)); set PYTHON=..." >&2
    exit 1
}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
VPY="$ROOT/.venv/bin/python"
"$VPY" -m pip install -q --disable-pip-version-check "setuptools>=77" "Cython>=3.0.10,<4" wheel
# setuptools copies python/ into build/<mode>/lib*/ and never deletes there:
# a module moved or removed in python/ would still be installed from its old
# copy (and imports of its old path keep working here, nowhere else).
"$VPY" - <<'EOF'
from pathlib import Path
source = Path("python/zmicro")
for lib in Path("build").glob("*/lib*/zmicro"):
    for copy in [*lib.rglob("*.py"), *lib.rglob("*.pyi")]:
        if not (source / copy.relative_to(lib)).exists():
            copy.unlink()
EOF
# No build isolation: reuses build/ between runs, so a rebuild compiles
# only what changed.
"$VPY" -m pip install -q --disable-pip-version-check --no-build-isolation ".[${ZMICRO_EXTRAS:-test}]"
