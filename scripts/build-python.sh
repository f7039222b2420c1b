#!/bin/sh
# scripts/build-python.sh VERSION — print the interpreter for Python VERSION (pyenv) after building zloop for it
# in build-pyVERSION/ (the extension lands in python/zloop beside the others). Prints nothing if not installed.
set -eu
cd "$(dirname "$0")/.."
version=$1
python=$(ls -d "$HOME"/.pyenv/versions/"$version".*/bin/python 2>/dev/null | tail -n 1 || true)
[ -n "$python" ] || exit 0
dir="build-py$version"
mkdir -p "$dir"
if [ ! -f "$dir/Makefile" ] || [ configure -nt "$dir/config.status" ]; then
    (cd "$dir" && ../configure --quiet PYTHON="$python") >&2
fi
make -C "$dir" -j2 --no-print-directory >/dev/null
echo "$python"
