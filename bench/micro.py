"""Scheduling micro-benchmark: asyncio vs uvloop vs zloop (every backend).

Each figure (row x loop x round) is measured in its own fresh process:

    python bench/micro.py [--loops asyncio,uvloop,zloop] [--rows ...]
                          [--rounds 5] [--quick] [--json PATH]

The parent spawns ``micro.py --child ROW LOOPSPEC --n N`` per figure, rounds
outermost and the loop order rotated every round.  A child warms up with N/10
operations, then times N operations (CPU via time.process_time_ns, all threads
of the process, plus wall time), verifies that the work was really done and
prints one JSON line; any mismatch, exception or timeout fails the child and
no figure is recorded.  See bench/README.md.
"""

import argparse
import asyncio
import collections
import faulthandler
import gc
import json
import operator
import os
import statistics
import subprocess
import sys
import threading
import time

import _loops

CHAINS = 100           # concurrent self-rescheduling call_soon callbacks
BATCH = 1000           # timers / tasks created per loop iteration
FIRE_DELAY = 0.001     # >= 1 ms: uvloop turns smaller delays into call_soon
CANCEL_DELAY = 0.01    # cancelled timers would fire within the run if kept
CHILD_TIME_LIMIT = 30.0
HERE = os.path.dirname(os.path.abspath(__file__))


class BenchError(Exception):
    """A child did not do the work it was asked to do."""


def check(ok, what):
    if not ok:
        raise BenchError(what)


class Clock:
    """CPU and wall time of one measured section."""

    cpu_ns = wall_ns = None

    def start(self):
        gc.collect()
        self._wall0 = time.perf_counter_ns()
        self._cpu0 = time.process_time_ns()

    def stop(self):
        self.cpu_ns = time.process_time_ns() - self._cpu0
        self.wall_ns = time.perf_counter_ns() - self._wall0


# --------------------------------------------------------------- the floor
# The call_soon rows also run on FloorLoop: not an event loop, the least any loop can cost there. What a row
# costs on a real loop minus what it costs here is that loop's own scheduling overhead (handle, context copy,
# queueing, dispatch); the rest is the Python callback itself, the same on every loop.

FLOOR = "floor"
FLOOR_ROWS = ("call_soon", "call_soon_chain")
_call = getattr(operator, "call", None) or operator.methodcaller("__call__")   # operator.call: 3.11+


class FloorLoop(collections.deque):
    """call_soon is deque.append (one argument, no handle, no context copy); run_forever pops and calls from C
    until the deque is empty. A method of the class, like a real loop's, so the row's `loop.call_soon` lookup
    costs what it costs on a real loop."""

    call_soon = collections.deque.append

    def run_forever(self):
        try:
            collections.deque(map(_call, iter(self.popleft, None)), maxlen=0)
        except IndexError:   # ran empty: every callback has run
            pass

    def stop(self):
        pass

    def close(self):
        pass

    def set_exception_handler(self, handler):
        pass


# --------------------------------------------------------------- the rows
# Each row function runs n operations on `loop`, timing only the loop run
# with `clock`, then checks the result.

def row_call_soon(loop, n, clock):
    """CHAINS callbacks each re-scheduling itself until n calls ran."""
    left = n

    def callback():
        nonlocal left
        left -= 1
        if left >= CHAINS:
            loop.call_soon(callback)
        elif left == 0:
            loop.stop()

    for _ in range(min(CHAINS, n)):
        loop.call_soon(callback)
    clock.start()
    loop.run_forever()
    clock.stop()
    check(left == 0, f"{n - left} of {n} callbacks ran")


def row_call_soon_chain(loop, n, clock):
    """One callback re-scheduling itself: every call_soon also costs one loop iteration, as in a chain of
    callbacks or `await sleep(0)` steps with nothing else ready."""
    left = n

    def callback():
        nonlocal left
        left -= 1
        if left > 0:
            loop.call_soon(callback)
        else:
            loop.stop()

    loop.call_soon(callback)
    clock.start()
    loop.run_forever()
    clock.stop()
    check(left == 0, f"{n - left} of {n} callbacks ran")


def row_call_soon_3args(loop, n, clock):
    """As call_soon, the callback taking three positional arguments."""
    left = n

    def callback(step, tag, extra):
        nonlocal left
        left -= step
        if left >= CHAINS:
            loop.call_soon(callback, step, tag, extra)
        elif left == 0:
            loop.stop()

    for _ in range(min(CHAINS, n)):
        loop.call_soon(callback, 1, "tag", None)
    clock.start()
    loop.run_forever()
    clock.stop()
    check(left == 0, f"{n - left} of {n} callbacks ran")


def row_call_later_fire(loop, n, clock):
    """Batches of BATCH timers (FIRE_DELAY) that all fire; per timer."""
    scheduled = fired = 0

    def on_timer():
        nonlocal fired
        fired += 1
        if fired == scheduled:
            if scheduled < n:
                schedule_batch()
            else:
                loop.stop()

    def schedule_batch():
        nonlocal scheduled
        count = min(BATCH, n - scheduled)
        for _ in range(count):
            loop.call_later(FIRE_DELAY, on_timer)
        scheduled += count

    loop.call_soon(schedule_batch)
    clock.start()
    loop.run_forever()
    clock.stop()
    check(scheduled == n and fired == n, f"{fired} of {n} timers fired")


def row_call_later_cancel(loop, n, clock):
    """call_later + cancel, BATCH per loop iteration; per timer."""
    scheduled = fired = 0

    def never():
        nonlocal fired
        fired += 1

    def batch():
        nonlocal scheduled
        count = min(BATCH, n - scheduled)
        for _ in range(count):
            loop.call_later(CANCEL_DELAY, never).cancel()
        scheduled += count
        if scheduled < n:
            loop.call_soon(batch)
        else:
            loop.stop()

    loop.call_soon(batch)
    clock.start()
    loop.run_forever()
    clock.stop()
    # Untimed: wait past CANCEL_DELAY; a timer that survived cancel fires.
    loop.call_later(CANCEL_DELAY * 1.5, loop.stop)
    loop.run_forever()
    check(scheduled == n, f"{scheduled} of {n} timers scheduled")
    check(fired == 0, f"{fired} cancelled timers fired")


def row_call_soon_threadsafe(loop, n, clock):
    """A producer thread calls call_soon_threadsafe n times; per call."""
    count = 0
    go = threading.Event()
    errors = []

    def callback():
        nonlocal count
        count += 1
        if count == n:
            loop.stop()

    def produce():
        try:
            check(go.wait(CHILD_TIME_LIMIT), "producer never started")
            for _ in range(n):
                loop.call_soon_threadsafe(callback)
        except BaseException as exc:
            errors.append(exc)
            loop.call_soon_threadsafe(loop.stop)

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    loop.call_soon(go.set)
    clock.start()
    loop.run_forever()
    thread.join(CHILD_TIME_LIMIT)
    clock.stop()
    check(not errors, f"producer failed: {errors!r}")
    check(count == n, f"{count} of {n} threadsafe callbacks ran")


def row_sleep0(loop, n, clock):
    """One coroutine doing `await asyncio.sleep(0)` n times."""
    async def main():
        done = 0
        for _ in range(n):
            await asyncio.sleep(0)
            done += 1
        return done

    coro = main()
    clock.start()
    done = loop.run_until_complete(coro)
    clock.stop()
    check(done == n, f"{done} of {n} sleeps")


def row_create_task(loop, n, clock):
    """create_task of a trivial coroutine, BATCH at a time, each awaited."""
    async def trivial(i):
        return i

    async def main():
        total = 0
        for start in range(0, n, BATCH):
            tasks = [loop.create_task(trivial(i))
                     for i in range(start, min(start + BATCH, n))]
            for task in tasks:
                total += await task
        return total

    coro = main()
    clock.start()
    total = loop.run_until_complete(coro)
    clock.stop()
    check(total == n * (n - 1) // 2, "task results do not add up")


def row_future_roundtrip(loop, n, clock):
    """create_future, set_result from a call_soon callback, await it."""
    async def main():
        total = 0
        for i in range(n):
            fut = loop.create_future()
            loop.call_soon(fut.set_result, i)
            total += await fut
        return total

    coro = main()
    clock.start()
    total = loop.run_until_complete(coro)
    clock.stop()
    check(total == n * (n - 1) // 2, "future results do not add up")


# name -> (function, N); N gives ~0.2-0.5 s per child on stock asyncio.
ROWS = {
    "call_soon": (row_call_soon, 500_000),
    "call_soon_chain": (row_call_soon_chain, 150_000),
    "call_soon_3args": (row_call_soon_3args, 500_000),
    "call_later_fire": (row_call_later_fire, 150_000),
    "call_later_cancel": (row_call_later_cancel, 200_000),
    "call_soon_threadsafe": (row_call_soon_threadsafe, 80_000),
    "sleep0": (row_sleep0, 120_000),
    "create_task": (row_create_task, 120_000),
    "future_roundtrip": (row_future_roundtrip, 70_000),
}


# ------------------------------------------------------------- the child

def run_child(row, spec, n, time_limit):
    """Measure one figure and print it as one JSON line."""
    faulthandler.dump_traceback_later(time_limit, exit=True)
    func = ROWS[row][0]
    if spec == FLOOR:
        check(row in FLOOR_ROWS, f"row {row} does not run on the floor")
        loop = FloorLoop()
    else:
        loop = _loops.make_loop(spec)
    errors = []

    def on_error(loop, context):     # fail fast instead of hanging
        errors.append(f"{context.get('message')}: "
                      f"{context.get('exception')!r}")
        loop.stop()

    loop.set_exception_handler(on_error)
    try:
        func(loop, max(n // 10, 1), Clock())        # warm-up, same loop
        clock = Clock()
        func(loop, n, clock)
    finally:
        loop.close()
        check(not errors, "error in the loop: " + "; ".join(errors[:3]))
    faulthandler.cancel_dump_traceback_later()
    check(clock.cpu_ns is not None, "row did not time its run")
    print(json.dumps({"row": row, "loop": spec, "ops": n,
                      "cpu_ns": clock.cpu_ns, "wall_ns": clock.wall_ns,
                      "loop_class": type(loop).__module__ + "."
                      + type(loop).__qualname__}))


# ------------------------------------------------------------ the parent

def spawn(row, spec, n, time_limit):
    """Run one child; return its result dict or raise BenchError."""
    cmd = [sys.executable, os.path.abspath(__file__), "--child", row, spec,
           "--n", str(n), "--time-limit", str(time_limit)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True,
                              timeout=time_limit + 15)
    except subprocess.TimeoutExpired:
        raise BenchError(f"child killed after {time_limit + 15:.0f} s")
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines()
        hung = [line for line in lines if line.startswith("Timeout (")]
        tail = "\n  ".join(hung + lines[-4:])
        raise BenchError(f"child exited {proc.returncode}:\n  {tail}")
    try:
        res = json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        raise BenchError(f"child printed no result: {proc.stdout[-300:]!r}")
    check(res["row"] == row and res["loop"] == spec and res["ops"] == n,
          f"child reported the wrong work: {res}")
    return res


def machine_info():
    info = {"nproc": os.cpu_count(),
            "affinity": len(os.sched_getaffinity(0)),
            "cpu_model": None,
            "kernel": " ".join(os.uname()[i] for i in (0, 2, 4)),
            "python": sys.version.replace("\n", " "),
            "executable": sys.executable,
            "loadavg_at_start": os.getloadavg()}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu_model"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    governor = "/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"
    try:
        with open(governor) as f:
            info["governor"] = f.read().strip()
    except OSError:
        info["governor"] = None
    return info


def summarize(cpu, wall, n, failed):
    if not cpu:
        return {"n": n, "failed": failed, "median": None}
    return {"n": n, "failed": failed,
            "median": statistics.median(cpu), "min": min(cpu),
            "max": max(cpu), "wall_median": statistics.median(wall),
            "cpu_ns_per_op": [round(x, 1) for x in cpu],
            "wall_ns_per_op": [round(x, 1) for x in wall]}


def add_ratios(results):
    for cells in results.values():
        for base in ("uvloop", "asyncio"):
            ref = cells.get(base, {}).get("median")
            for cell in cells.values():
                ok = ref and cell["median"] and not cell["failed"]
                cell["vs_" + base] = (round(cell["median"] / ref, 4)
                                      if ok else None)


def print_table(title, rows, specs, cell_text, width):
    print(f"\n{title}")
    print(f"{'row':<22}" + "".join(f"{s:>{width}}" for s in specs))
    for row in rows:
        print(f"{row:<22}" + "".join(f"{cell_text(row, s):>{width}}"
                                     for s in specs))


def report(results, rows, specs, rounds):
    def ns(row, spec):
        c = results[row].get(spec)
        if c is None:
            return "-"
        if c["failed"]:
            return f"FAIL({c['failed']}/{rounds})"
        return f"{c['median']:.1f} ({c['min']:.0f}-{c['max']:.0f})"

    def ratio(row, spec):
        c = results[row][spec]
        text = [f"{c[k]:.2f}" if c[k] else "-"
                for k in ("vs_uvloop", "vs_asyncio")]
        return " / ".join(text)

    floor_rows = [r for r in rows if FLOOR in results[r]]
    columns = specs + [FLOOR] if floor_rows else specs
    print_table(f"CPU ns per operation: median (min-max) of {rounds} "
                "round(s), one process each", rows, columns, ns, 20)
    print_table("ratio: x uvloop / x asyncio (median CPU ns, lower is "
                "faster)", rows, specs, ratio, 16)
    if floor_rows:
        def overhead(row, spec):
            c = results[row][spec].get("overhead")
            if c is None:
                return "-"
            vs = c["vs_uvloop"]
            return f"{c['ns']:.1f}" + (f" ({vs:.2f})" if vs else "")

        print_table("scheduling overhead: median CPU ns per operation above "
                    "the floor (ratio to uvloop's)", floor_rows, specs,
                    overhead, 20)


def add_overheads(results):
    """Each loop's median minus the floor's, and its ratio to uvloop's."""
    for cells in results.values():
        floor = cells.get(FLOOR, {}).get("median")
        if not floor:
            continue
        for spec, cell in cells.items():
            if spec != FLOOR and cell["median"]:
                cell["overhead"] = {"ns": round(cell["median"] - floor, 1)}
        ref = cells.get("uvloop", {}).get("overhead", {}).get("ns")
        for spec, cell in cells.items():
            if "overhead" in cell:
                ok = ref and ref > 0
                cell["overhead"]["vs_uvloop"] = (
                    round(cell["overhead"]["ns"] / ref, 4) if ok else None)


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--loops", help="comma list of asyncio, uvloop, "
                   "zloop:<backend>, zloop (= all backends); default all")
    p.add_argument("--rows", help="comma list of rows; default all: "
                   + ", ".join(ROWS))
    p.add_argument("--rounds", type=int, help="default 5 (1 with --quick)")
    p.add_argument("--quick", action="store_true",
                   help="smoke test: 1 round, N/10")
    p.add_argument("--scale", type=float, default=1.0,
                   help="multiply every N by this")
    p.add_argument("--json", default=os.path.join(HERE, "results",
                                                  "micro.json"))
    p.add_argument("--time-limit", type=float, default=CHILD_TIME_LIMIT,
                   help="seconds a child may take before it fails")
    p.add_argument("--no-floor", action="store_true",
                   help="do not run the call_soon rows on the floor")
    p.add_argument("--child", nargs=2, metavar=("ROW", "LOOPSPEC"),
                   help=argparse.SUPPRESS)
    p.add_argument("--n", type=int, help=argparse.SUPPRESS)
    return p.parse_args()


def main():
    args = parse_args()
    if args.child:
        run_child(args.child[0], args.child[1], args.n, args.time_limit)
        return 0
    try:
        specs = _loops.select(args.loops)
    except ValueError as exc:
        sys.exit(f"micro.py: {exc}")
    rows = args.rows.split(",") if args.rows else list(ROWS)
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        sys.exit(f"micro.py: unknown rows {unknown}; known: {list(ROWS)}")
    rounds = args.rounds or (1 if args.quick else 5)
    scale = args.scale / (10 if args.quick else 1)
    sizes = {r: max(int(ROWS[r][1] * scale), 1) for r in rows}

    def row_specs(row):
        return specs + [FLOOR] if row in FLOOR_ROWS and not args.no_floor else specs

    samples = {r: {s: ([], []) for s in row_specs(r)} for r in rows}
    failures = []
    classes = {}
    info = machine_info()
    started = time.monotonic()
    print(f"micro: loops {', '.join(specs)}; {len(rows)} rows x {rounds} "
          "round(s), one process per figure", file=sys.stderr)
    for rnd in range(rounds):
        for row in rows:
            here = row_specs(row)
            order = here[rnd % len(here):] + here[:rnd % len(here)]
            for spec in order:
                try:
                    res = spawn(row, spec, sizes[row], args.time_limit)
                except BenchError as exc:
                    print(f"FAILED {row} {spec} round {rnd + 1}: {exc}",
                          file=sys.stderr)
                    failures.append({"row": row, "loop": spec,
                                     "round": rnd + 1, "error": str(exc)})
                    continue
                samples[row][spec][0].append(res["cpu_ns"] / res["ops"])
                samples[row][spec][1].append(res["wall_ns"] / res["ops"])
                classes[spec] = res["loop_class"]
        print(f"  round {rnd + 1}/{rounds} done "
              f"({time.monotonic() - started:.0f} s)", file=sys.stderr)

    results = {}
    for row in rows:
        results[row] = {}
        for spec in row_specs(row):
            failed = sum(1 for f in failures
                         if f["row"] == row and f["loop"] == spec)
            results[row][spec] = summarize(*samples[row][spec], sizes[row],
                                           failed)
    add_ratios(results)
    add_overheads(results)
    report(results, rows, specs, rounds)

    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump({"benchmark": "micro",
                   "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                   "command": [sys.executable] + sys.argv,
                   "machine": info, "versions": _loops.versions(),
                   "config": {"rounds": rounds, "quick": args.quick,
                              "loops": specs, "loop_classes": classes,
                              "n": sizes,
                              "chains": CHAINS, "batch": BATCH,
                              "fire_delay": FIRE_DELAY,
                              "cancel_delay": CANCEL_DELAY},
                   "seconds": round(time.monotonic() - started, 1),
                   "results": results, "failures": failures}, f, indent=1)
    print(f"\nwrote {args.json}" + (f"; {len(failures)} FAILED run(s)"
                                    if failures else ""))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
