# tests/difffuzz — the differential fuzzer: random loop and transport operation sequences replayed on every zloop
# backend and on stock asyncio, each in a worker subprocess, with what a program can observe compared (docs/reliability.md).
