"""Subprocess spawn rate: asyncio vs uvloop vs zloop (every backend).

    python bench/spawn.py [--loops asyncio,uvloop,zloop] [--rows ...]
                          [--rounds 5] [--quick] [--n N] [--json PATH]

Rows (each child process runs one row on one loop, N children in all):

    exec_wait        await create_subprocess_exec('true'); await proc.wait()  -- one at a time
    exec_pipe        create_subprocess_exec('echo', 'x', stdout=PIPE); communicate()  -- one at a time, pipes
    exec_wait_x10    as exec_wait, 10 children in flight at once (gather of 10, N/10 times)

Every figure (row x loop x round) is a fresh process: ``spawn.py --child ROW LOOPSPEC --n N``; rounds outermost,
the loop order rotated every round.  The child warms up with N/10 spawns, then times N: wall time (the spawn
rate) and the parent's CPU time (time.process_time_ns: this process, all its threads, not the children).  It
checks every return code (0) and every output; any error, wrong result or hang (faulthandler after
--time-limit) fails the figure.  Report: median spawns/s over rounds with (min-max), median parent CPU us per
spawn, and ratios against uvloop and asyncio.  JSON goes to bench/results/spawn.json.
"""

import asyncio
import sys
import time

import _harness
from _harness import Clock, check

DEFAULT_N = 400
CONCURRENCY = 10
CHILD_TIME_LIMIT = 60.0
ROW_WIDTH = 16


# --------------------------------------------------------------- the rows
# Each row is a coroutine function running n spawns and returning what it checked.

async def row_exec_wait(n):
    for _ in range(n):
        proc = await asyncio.create_subprocess_exec("true")
        check(await proc.wait() == 0, "true did not exit 0")


async def row_exec_pipe(n):
    for _ in range(n):
        proc = await asyncio.create_subprocess_exec("echo", "x", stdout=asyncio.subprocess.PIPE)
        out, _ = await proc.communicate()
        check(out == b"x\n" and proc.returncode == 0, f"echo gave {out!r}, exit {proc.returncode}")


async def row_exec_wait_x10(n):
    async def one():
        proc = await asyncio.create_subprocess_exec("true")
        return await proc.wait()

    for _ in range(n // CONCURRENCY):
        codes = await asyncio.gather(*[one() for _ in range(CONCURRENCY)])
        check(codes == [0] * CONCURRENCY, f"exit codes {codes}")


ROWS = {
    "exec_wait": row_exec_wait,
    "exec_pipe": row_exec_pipe,
    "exec_wait_x10": row_exec_wait_x10,
}


# ------------------------------------------------------------- the child

def run_child(row, spec, n, time_limit):
    """Measure one figure and print it as one JSON line."""
    func = ROWS[row]

    def measure(loop, n):
        asyncio.set_event_loop(loop)  # asyncio 3.9-3.11: its child watcher attaches to the current loop
        try:
            loop.run_until_complete(func(max(n // 10, CONCURRENCY)))  # warm-up, same loop
            clock = Clock()
            clock.start()
            loop.run_until_complete(func(n))
            clock.stop()
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            asyncio.set_event_loop(None)
        return clock

    _harness.run_child(row, spec, n, time_limit, measure, stop_on_error=False)


# ------------------------------------------------------------ the parent

def report(results, rows, specs, rounds):
    _harness.print_tables(results, rows, specs, ROW_WIDTH, [
        (f"spawns per second (wall): median (min-max) of {rounds} round(s), one process each", 20,
         lambda c: _harness.median_text(c, rounds, ".0f", fail_on_any=False)),
        ("parent CPU us per spawn (median)", 20, _harness.field_text("cpu_us_per_spawn_median", ".0f")),
        ("rate ratio: x uvloop / x asyncio (higher is faster)", 20, _harness.ratio_text)])


def parse_args():
    p = _harness.arg_parser(__doc__, ROWS, "spawn.json", CHILD_TIME_LIMIT, scale=False,
                            n_default=DEFAULT_N, n_help=f"spawns per figure (default {DEFAULT_N})")
    return _harness.parse(p, run_child)


def main():
    args = parse_args()
    specs, rows, rounds = _harness.selection(args, ROWS, "spawn.py")
    n = max(args.n // (10 if args.quick else 1), CONCURRENCY)
    n -= n % CONCURRENCY
    info = _harness.machine_info()
    started = time.monotonic()
    print(f"spawn: loops {', '.join(specs)}; {len(rows)} rows x {rounds} round(s) x {n} spawns, "
          "one process per figure", file=sys.stderr)
    runs, failures, classes = _harness.run_figures(__file__, {r: (n, specs) for r in rows}, rounds,
                                                   args.time_limit, started)

    def summarize(row, res, failed):
        # Rates: higher is faster, so the ratios are ours / theirs (2.0 = twice as many spawns per second).
        return _harness.summarize(n, failed,
                                  {"spawns_per_s": [r["ops"] / (r["wall_ns"] / 1e9) for r in res],
                                   "cpu_us_per_spawn": [r["cpu_ns"] / r["ops"] / 1000 for r in res]},
                                  {"cpu_us_per_spawn_median": "cpu_us_per_spawn"})

    results = _harness.tabulate(runs, failures, summarize)
    _harness.add_ratios(results, 3)
    report(results, rows, specs, rounds)
    config = {"rounds": rounds, "quick": args.quick, "spawns": n, "concurrency": CONCURRENCY,
              "loops": specs, "loop_classes": classes}
    return _harness.write_json(args.json, "spawn", info, config, started, results, failures)


if __name__ == "__main__":
    sys.exit(main())
