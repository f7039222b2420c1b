#!/bin/sh
# scripts/conformance-matrix.sh — CPython's test_asyncio against zloop on every supported Python (3.11–3.15; 3.14
# and 3.15 from the Debian unstable chroot, see build-python.sh) and every compiled backend, uring also with
# ZLOOP_URING_COMPLETION=1; fails if any run has a failure outside known internals. Arguments go to
# tests/conformance/run.py (e.g. --control for stock asyncio as the control on each version, about a third more
# time).
set -eu
cd "$(dirname "$0")/.."
./scripts/bootstrap.sh
status=0
for version in ${ZLOOP_PYTHON_VERSIONS:-3.11 3.12 3.13 3.14 3.15}; do
    python=$(./scripts/build-python.sh "$version")
    if [ -z "$python" ]; then
        echo "-- Python $version not installed here, skipped"
        continue
    fi
    echo "== conformance on Python $version"
    started=$(date +%s)
    nice -n 10 python3 tests/conformance/run.py --python "$python" --loop zloop --backend all --pythonpath python \
        --list-failures --json "build/conformance-$version.json" "$@" || status=1
    # uring's level 2 (completions for the C transports, off by default) once more on its own.
    if PYTHONPATH=python "$python" -c "import sys, zloop; sys.exit('uring' not in zloop.backends())" 2>/dev/null; then
        ZLOOP_URING_COMPLETION=1 nice -n 10 python3 tests/conformance/run.py --python "$python" --loop zloop \
            --backend uring --pythonpath python --list-failures \
            --json "build/conformance-$version-uring-completion.json" "$@" || status=1
    fi
    echo "-- conformance on Python $version: $(( $(date +%s) - started )) s"
done
exit $status
