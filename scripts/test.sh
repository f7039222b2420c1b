#!/bin/sh
# scripts/test.sh — set up, build and run zloop's whole test suite: the C backend tests and pytest on the
# default python3 (every compiled backend), CPython's asyncio conformance run, then build each other installed
# Python from 3.9 to 3.13 and run the smoke test and the pytest suite on it.
set -eu
cd "$(dirname "$0")/.."
./scripts/bootstrap.sh

echo "== C backend tests and pytest (every compiled backend)"
make -C build check --no-print-directory

if [ -f tests/conformance/run.py ]; then
    echo "== CPython test_asyncio conformance (every compiled backend, stock asyncio as control)"
    make -C build check-conformance --no-print-directory
fi

echo "== build, smoke-test and test the other supported Pythons"
smoked=0
for version in 3.9 3.10 3.12 3.13; do
    python=$(ls -d "$HOME"/.pyenv/versions/"$version".*/bin/python 2>/dev/null | tail -n 1 || true)
    if [ -z "$python" ]; then
        echo "-- Python $version not installed here, skipped"
        continue
    fi
    dir="build-py$version"
    mkdir -p "$dir"
    if [ ! -f "$dir/Makefile" ] || [ configure -nt "$dir/config.status" ]; then
        (cd "$dir" && ../configure --quiet PYTHON="$python")
    fi
    make -C "$dir" -j2 --no-print-directory >/dev/null
    PYTHONPATH=python "$python" tests/smoke.py
    if ! "$python" -c 'import pytest, cryptography' 2>/dev/null; then
        "$python" -m pip install -q --disable-pip-version-check pytest cryptography
    fi
    PYTHONPATH=python PYTHONDONTWRITEBYTECODE=1 "$python" -m pytest -q -p no:cacheprovider tests
    smoked=$((smoked + 1))
done
echo "built and tested $smoked other Python versions"
