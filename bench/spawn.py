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

import argparse
import asyncio
import faulthandler
import gc
import json
import os
import statistics
import subprocess
import sys
import time

import _loops

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_N = 400
CONCURRENCY = 10
CHILD_TIME_LIMIT = 60.0


class BenchError(Exception):
    """A child did not do the work it was asked to do."""


def check(ok, what):
    if not ok:
        raise BenchError(what)


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
    faulthandler.dump_traceback_later(time_limit, exit=True)
    loop = _loops.make_loop(spec)
    asyncio.set_event_loop(loop)  # asyncio 3.9-3.11: its child watcher attaches to the current loop
    errors = []

    def on_error(lp, context):
        errors.append(f"{context.get('message')}: {context.get('exception')!r}")

    loop.set_exception_handler(on_error)
    func = ROWS[row]
    try:
        loop.run_until_complete(func(max(n // 10, CONCURRENCY)))  # warm-up, same loop
        gc.collect()
        wall0 = time.perf_counter_ns()
        cpu0 = time.process_time_ns()
        loop.run_until_complete(func(n))
        cpu_ns = time.process_time_ns() - cpu0
        wall_ns = time.perf_counter_ns() - wall0
        loop.run_until_complete(loop.shutdown_asyncgens())
    finally:
        asyncio.set_event_loop(None)
        loop.close()
    check(not errors, "error in the loop: " + "; ".join(errors[:3]))
    faulthandler.cancel_dump_traceback_later()
    print(json.dumps({"row": row, "loop": spec, "spawns": n, "cpu_ns": cpu_ns, "wall_ns": wall_ns,
                      "loop_class": type(loop).__module__ + "." + type(loop).__qualname__}))


# ------------------------------------------------------------ the parent

def spawn_child(row, spec, n, time_limit):
    cmd = [sys.executable, os.path.abspath(__file__), "--child", row, spec, "--n", str(n),
           "--time-limit", str(time_limit)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=time_limit + 15)
    except subprocess.TimeoutExpired:
        raise BenchError(f"child killed after {time_limit + 15:.0f} s")
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines()
        raise BenchError(f"child exited {proc.returncode}:\n  " + "\n  ".join(lines[-6:]))
    try:
        res = json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        raise BenchError(f"child printed no result: {proc.stdout[-300:]!r}")
    check(res["row"] == row and res["loop"] == spec and res["spawns"] == n, f"child reported the wrong work: {res}")
    return res


def machine_info():
    info = {"nproc": os.cpu_count(), "kernel": " ".join(os.uname()[i] for i in (0, 2, 4)),
            "python": sys.version.replace("\n", " "), "executable": sys.executable,
            "loadavg_at_start": os.getloadavg(), "cpu_model": None}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu_model"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return info


def summarize(rates, cpu_us, n, failed):
    if not rates:
        return {"n": n, "failed": failed, "median": None}
    return {"n": n, "failed": failed,
            "median": statistics.median(rates), "min": min(rates), "max": max(rates),
            "cpu_us_per_spawn_median": statistics.median(cpu_us),
            "spawns_per_s": [round(x, 1) for x in rates],
            "cpu_us_per_spawn": [round(x, 1) for x in cpu_us]}


def add_ratios(results):
    # Rates: higher is faster, so the ratio is ours / theirs (2.0 = twice as many spawns per second).
    for cells in results.values():
        for base in ("uvloop", "asyncio"):
            ref = cells.get(base, {}).get("median")
            for cell in cells.values():
                ok = ref and cell["median"] and not cell["failed"]
                cell["vs_" + base] = round(cell["median"] / ref, 3) if ok else None


def print_table(title, rows, specs, cell_text, width):
    print(f"\n{title}")
    print(f"{'row':<16}" + "".join(f"{s:>{width}}" for s in specs))
    for row in rows:
        print(f"{row:<16}" + "".join(f"{cell_text(row, s):>{width}}" for s in specs))


def report(results, rows, specs, rounds):
    def rate(row, spec):
        c = results[row][spec]
        if c["median"] is None:
            return f"FAIL({c['failed']}/{rounds})"
        return f"{c['median']:.0f} ({c['min']:.0f}-{c['max']:.0f})"

    def cpu(row, spec):
        c = results[row][spec]
        return "-" if c["median"] is None else f"{c['cpu_us_per_spawn_median']:.0f}"

    def ratio(row, spec):
        c = results[row][spec]
        return " / ".join(f"{c[k]:.2f}" if c.get(k) else "-" for k in ("vs_uvloop", "vs_asyncio"))

    print_table(f"spawns per second (wall): median (min-max) of {rounds} round(s), one process each",
                rows, specs, rate, 20)
    print_table("parent CPU us per spawn (median)", rows, specs, cpu, 20)
    print_table("rate ratio: x uvloop / x asyncio (higher is faster)", rows, specs, ratio, 20)


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--loops", help="comma list of asyncio, uvloop, zloop:<backend>, zloop (= all backends)")
    p.add_argument("--rows", help="comma list of rows; default all: " + ", ".join(ROWS))
    p.add_argument("--rounds", type=int, help="default 5 (1 with --quick)")
    p.add_argument("--quick", action="store_true", help="smoke test: 1 round, N/10")
    p.add_argument("--n", type=int, default=DEFAULT_N, help=f"spawns per figure (default {DEFAULT_N})")
    p.add_argument("--json", default=os.path.join(HERE, "results", "spawn.json"))
    p.add_argument("--time-limit", type=float, default=CHILD_TIME_LIMIT,
                   help="seconds a child may take before it fails")
    p.add_argument("--child", nargs=2, metavar=("ROW", "LOOPSPEC"), help=argparse.SUPPRESS)
    return p.parse_args()


def main():
    args = parse_args()
    if args.child:
        run_child(args.child[0], args.child[1], args.n, args.time_limit)
        return 0
    try:
        specs = _loops.select(args.loops)
    except ValueError as exc:
        sys.exit(f"spawn.py: {exc}")
    rows = args.rows.split(",") if args.rows else list(ROWS)
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        sys.exit(f"spawn.py: unknown rows {unknown}; known: {list(ROWS)}")
    rounds = args.rounds or (1 if args.quick else 5)
    n = max(args.n // (10 if args.quick else 1), CONCURRENCY)
    n -= n % CONCURRENCY

    samples = {r: {s: ([], []) for s in specs} for r in rows}
    failures = []
    classes = {}
    info = machine_info()
    started = time.monotonic()
    print(f"spawn: loops {', '.join(specs)}; {len(rows)} rows x {rounds} round(s) x {n} spawns, "
          "one process per figure", file=sys.stderr)
    for rnd in range(rounds):
        order = specs[rnd % len(specs):] + specs[:rnd % len(specs)]
        for row in rows:
            for spec in order:
                try:
                    res = spawn_child(row, spec, n, args.time_limit)
                except BenchError as exc:
                    print(f"FAILED {row} {spec} round {rnd + 1}: {exc}", file=sys.stderr)
                    failures.append({"row": row, "loop": spec, "round": rnd + 1, "error": str(exc)})
                    continue
                samples[row][spec][0].append(n / (res["wall_ns"] / 1e9))
                samples[row][spec][1].append(res["cpu_ns"] / n / 1000)
                classes[spec] = res["loop_class"]
        print(f"  round {rnd + 1}/{rounds} done ({time.monotonic() - started:.0f} s)", file=sys.stderr)

    results = {}
    for row in rows:
        results[row] = {}
        for spec in specs:
            failed = sum(1 for f in failures if f["row"] == row and f["loop"] == spec)
            results[row][spec] = summarize(*samples[row][spec], n, failed)
    add_ratios(results)
    report(results, rows, specs, rounds)

    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump({"benchmark": "spawn",
                   "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                   "command": [sys.executable] + sys.argv,
                   "machine": info, "versions": _loops.versions(),
                   "config": {"rounds": rounds, "quick": args.quick, "spawns": n, "concurrency": CONCURRENCY,
                              "loops": specs, "loop_classes": classes},
                   "seconds": round(time.monotonic() - started, 1),
                   "results": results, "failures": failures}, f, indent=1)
    print(f"\nwrote {args.json}" + (f"; {len(failures)} FAILED run(s)" if failures else ""))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
