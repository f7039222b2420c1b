#!/bin/sh
# scripts/bench.sh — set up, build and run zloop's benchmarks against asyncio, uvloop, rloop and the Zig zloop,
# side by side: the scheduling micro-benchmark (peers from bench/peers.sh's environments, outside the tree),
# then (once present) the echo benchmark. Extra arguments go to micro.py.
set -eu
cd "$(dirname "$0")/.."
./scripts/bootstrap.sh
bench/peers.sh || echo "bench.sh: peer environments not made: measuring without rloop and the Zig zloop" >&2
PYTHONPATH=python python3 bench/micro.py "$@"
