#!/bin/sh
# scripts/conformance-matrix.sh — CPython's test_asyncio against zloop on every installed Python 3.9–3.13 and
# every compiled backend (stock asyncio as the control); fails if any run has a failure outside known internals.
set -eu
cd "$(dirname "$0")/.."
./scripts/bootstrap.sh
status=0
for version in 3.9 3.10 3.11 3.12 3.13; do
    python=$(./scripts/build-python.sh "$version")
    if [ -z "$python" ]; then
        echo "-- Python $version not installed here, skipped"
        continue
    fi
    echo "== conformance on Python $version"
    python3 tests/conformance/run.py --python "$python" --loop zloop --backend all --pythonpath python \
        --control --list-failures --json "build/conformance-$version.json" || status=1
done
exit $status
