#!/bin/sh
# scripts/bench.sh — set up, build and run zloop's benchmarks against asyncio, uvloop, rloop and the Zig zloop,
# side by side: the scheduling micro-benchmark (peers from bench/peers.sh's environments, outside the tree),
# then a short echo run (1 KiB over TCP, every mode, 2 rounds of 1 s, with the bare C floor; about 2 minutes;
# a peer's failed cells are reported, not fatal), then the HTTP server benchmark (uvicorn driven by wrk; asyncio,
# uvloop, rloop). Extra arguments go to micro.py; the full echo matrix is `make bench-echo`.
set -eu
cd "$(dirname "$0")/.."
./scripts/bootstrap.sh
bench/peers.sh || echo "bench.sh: peer environments not made: measuring without rloop and the Zig zloop" >&2
PYTHONPATH=python python3 bench/micro.py "$@"
PYTHONPATH=python python3 bench/echo/run.py --quick
# uvicorn + httptools on asyncio, uvloop, rloop and each zloop backend, 3 rounds of 5 s of wrk per loop and
# endpoint: about 4 minutes on 2 cores, stopped after 15.
PYTHONPATH=python timeout 900 python3 bench/http_bench.py --rounds 3 --duration 5
