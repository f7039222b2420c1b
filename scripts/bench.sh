#!/bin/sh
# scripts/bench.sh — set up, build and run zloop's benchmarks against asyncio and uvloop, side by side:
# the scheduling micro-benchmark, then (once present) the echo benchmark. Extra arguments go to micro.py.
set -eu
cd "$(dirname "$0")/.."
./scripts/bootstrap.sh
PYTHONPATH=python python3 bench/micro.py "$@"
