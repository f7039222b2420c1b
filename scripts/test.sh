#!/bin/sh
# scripts/test.sh — set up, build and run zloop's whole test suite: the C backend tests and pytest on the
# default python3 (every compiled backend), CPython's asyncio conformance run, then build each other installed
# Python from 3.9 to 3.13 and run the smoke test and the pytest suite on it, and the conformance matrix.
set -eu
cd "$(dirname "$0")/.."
./scripts/bootstrap.sh

echo "== C backend tests and pytest (every compiled backend)"
make -C build check --no-print-directory

echo "== CPython test_asyncio conformance (default Python, every compiled backend, stock asyncio as control)"
make -C build check-conformance --no-print-directory

echo "== build, smoke-test and test the other supported Pythons"
tested=0
for version in 3.9 3.10 3.12 3.13; do
    python=$(./scripts/build-python.sh "$version")
    if [ -z "$python" ]; then
        echo "-- Python $version not installed here, skipped"
        continue
    fi
    PYTHONPATH=python "$python" tests/smoke.py
    if ! "$python" -c 'import pytest, cryptography' 2>/dev/null; then
        "$python" -m pip install -q --disable-pip-version-check pytest cryptography
    fi
    PYTHONPATH=python PYTHONDONTWRITEBYTECODE=1 "$python" -m pytest -q -p no:cacheprovider tests
    tested=$((tested + 1))
done
echo "built and tested $tested other Python versions"

echo "== CPython test_asyncio conformance on every Python version and backend"
./scripts/conformance-matrix.sh
