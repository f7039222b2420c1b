#!/bin/sh
# bench/peers.sh — create the virtual environments the benchmarks run their peer loops from (rloop, and the Zig
# zloop from PyPI, which needs Python >= 3.12 and shares our import name), outside the source tree; idempotent.
#
#   bench/peers.sh            create what is missing, print the directory
#   ZLOOP_PEERS_DIR=DIR       where the environments live (default ~/.cache/zloop-bench-peers)
#
# Environments (bench/_loops.py knows them by these names):
#   py311    the interpreter running the benchmarks (python3) with rloop
#   py312    Python 3.12 with the Zig zloop and uvloop (uvloop here measures what the interpreter alone changes)
set -eu

DIR=${ZLOOP_PEERS_DIR:-$HOME/.cache/zloop-bench-peers}
RLOOP=rloop==0.5.0
ZIG_ZLOOP=zloop==0.0.1
UVLOOP=uvloop==0.23.0

# find_python VERSION: an interpreter of that minor version (python3.X on PATH, or pyenv's), or nothing.
find_python() {
    for cand in "python$1" "$HOME/.pyenv/versions/$1"*/bin/python"$1"; do
        if command -v "$cand" >/dev/null 2>&1 && "$cand" -c 'import venv' >/dev/null 2>&1; then
            command -v "$cand"
            return 0
        fi
    done
    return 1
}

# make_env NAME PYTHON PACKAGE...: the venv DIR/NAME from PYTHON with the packages at exactly these versions.
make_env() {
    name=$1 python=$2
    shift 2
    env_dir=$DIR/$name
    if [ -x "$env_dir/bin/python" ] && "$env_dir/bin/python" -m pip freeze 2>/dev/null | sort >"$DIR/.$name.have" &&
        printf '%s\n' "$@" | sort | comm -23 - "$DIR/.$name.have" | grep -q . ; then
        :   # something missing or at another version: install below
    elif [ -x "$env_dir/bin/python" ]; then
        echo "peers: $name up to date ($*)"
        return 0
    fi
    [ -x "$env_dir/bin/python" ] || "$python" -m venv "$env_dir"
    "$env_dir/bin/python" -m pip install --quiet --disable-pip-version-check "$@"
    echo "peers: $name ready ($*)"
}

mkdir -p "$DIR"
make_env py311 "$(command -v python3)" "$RLOOP"
if py312=$(find_python 3.12); then
    make_env py312 "$py312" "$ZIG_ZLOOP" "$UVLOOP"
else
    echo "peers: no Python 3.12 found: the Zig zloop is left out" >&2
fi
echo "$DIR"
