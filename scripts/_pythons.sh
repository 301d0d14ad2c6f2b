# Sourced by build-wheels.sh and check-wheels.sh: find a CPython by its
# version, by name. python3.X on PATH if it really is 3.X and runs (a pyenv
# shim of a version that is not selected fails), else pyenv's newest 3.X.Y.
# Prints the interpreter's own path (sys.executable, past any shim), or
# nothing when there is none.
find_python() {  # $1 = 3.X
    local v="$1" cand root
    cand="$(command -v "python$v" 2>/dev/null || true)"
    if [ -z "$cand" ] || ! "$cand" -c "import sys; sys.exit(sys.version_info[:2] != tuple(map(int, '$v'.split('.'))))" 2>/dev/null; then
        cand=""
        if command -v pyenv >/dev/null 2>&1; then
            root="$(pyenv root)"
            cand="$(ls -d "$root"/versions/"$v".[0-9]*/bin/"python$v" 2>/dev/null | sort -V | tail -1 || true)"
        fi
    fi
    [ -n "$cand" ] || return 0
    "$cand" -c 'import sys; print(sys.executable)' 2>/dev/null || true
}
