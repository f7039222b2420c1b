"""Scheduling micro-benchmark: zloop (every backend) against asyncio, uvloop, rloop and the Zig zloop.

Each figure (row x loop x round) is measured in its own fresh process:

    python bench/micro.py [--loops asyncio,uvloop,zloop,rloop,zloop-zig] [--rows ...]
                          [--rounds 5] [--quick] [--json PATH]

Two shapes of rows: chains (a fixed number of self-rescheduling callbacks, so
the ready queue stays short) and the seed's batch shape (a coroutine schedules
N callbacks, then lets them all run: N handles alive at once).  The peers
rloop and the Zig zloop run from their own environments (bench/peers.sh), each
child with its loop's interpreter.

The parent spawns ``micro.py --child ROW LOOPSPEC --n N`` per figure, rounds
outermost and the loop order rotated every round.  A child warms up with N/10
operations, then times N operations (CPU via time.process_time_ns, all threads
of the process, plus wall time), verifies that the work was really done and
prints one JSON line; any mismatch, exception or timeout fails the child and
no figure is recorded.  The harness is bench/_harness.py; see bench/README.md.
"""

import asyncio
import collections
import operator
import sys
import threading
import time

import _harness
import _loops
from _harness import Clock, check

CHAINS = 100           # concurrent self-rescheduling call_soon callbacks
BATCH_N = 200_000      # batch rows: handles scheduled before any runs (the seed's N)
BATCH = 1000           # timers / tasks created per loop iteration
FIRE_DELAY = 0.001     # >= 1 ms: uvloop turns smaller delays into call_soon
CANCEL_DELAY = 0.01    # cancelled timers would fire within the run if kept
CHILD_TIME_LIMIT = 60.0    # the Zig zloop takes ~12 s on batch_call_later_cancel (its cancel is slow)
ROW_WIDTH = 27


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


# ---------------------------------------------------------- the batch rows
# The seed's shape: inside a coroutine, schedule n callbacks, then wait until they have all run. Scheduling and
# running are both timed; n handles are alive at once, which is what the chain rows never show.

def run_batch(loop, n, clock, schedule):
    """Time `schedule(done)` (it schedules n callbacks that each call done()) and the run of those callbacks."""
    count = 0
    finished = loop.create_future()

    def done(step=1, tag=None, extra=None):     # the 3-argument row passes (1, "tag", None)
        nonlocal count
        count += step
        if count == n:
            finished.set_result(None)

    async def main():
        schedule(done)
        await finished

    coro = main()
    clock.start()
    loop.run_until_complete(coro)
    clock.stop()
    check(count == n, f"{count} of {n} callbacks ran")


def row_batch_call_soon(loop, n, clock):
    """n x call_soon(cb) from a coroutine, then all run."""
    def schedule(done):
        call_soon = loop.call_soon
        for _ in range(n):
            call_soon(done)

    run_batch(loop, n, clock, schedule)


def row_batch_call_soon_3args(loop, n, clock):
    """n x call_soon(cb, 1, "tag", None), then all run."""
    def schedule(done):
        call_soon = loop.call_soon
        for _ in range(n):
            call_soon(done, 1, "tag", None)

    run_batch(loop, n, clock, schedule)


def row_batch_call_later0(loop, n, clock):
    """n x call_later(0, cb), then all fire (in the order they were scheduled)."""
    def schedule(done):
        call_later = loop.call_later
        for _ in range(n):
            call_later(0, done)

    run_batch(loop, n, clock, schedule)


def row_batch_call_later_cancel(loop, n, clock):
    """n x call_later(30, cb).cancel() from a coroutine; then the loop runs one more step. Per timer."""
    fired = 0

    def never():
        nonlocal fired
        fired += 1

    async def main():
        call_later = loop.call_later
        for _ in range(n):
            call_later(30, never).cancel()
        await asyncio.sleep(0)

    coro = main()
    clock.start()
    loop.run_until_complete(coro)
    clock.stop()
    check(fired == 0, f"{fired} cancelled timers fired")


def row_batch_call_soon_threadsafe(loop, n, clock):
    """A thread started from a coroutine calls call_soon_threadsafe(cb) n times; the coroutine waits until all
    ran. Per call; CPU of both threads."""
    errors = []

    def schedule(done):
        def produce():
            try:
                call = loop.call_soon_threadsafe
                for _ in range(n):
                    call(done)
            except BaseException as exc:
                errors.append(exc)
                loop.call_soon_threadsafe(loop.stop)

        threading.Thread(target=produce, daemon=True).start()

    run_batch(loop, n, clock, schedule)
    check(not errors, f"producer failed: {errors!r}")


# name -> (function, N); chain rows: N gives ~0.2-0.5 s per child on stock asyncio.
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
    "batch_call_soon": (row_batch_call_soon, BATCH_N),
    "batch_call_soon_3args": (row_batch_call_soon_3args, BATCH_N),
    "batch_call_later0": (row_batch_call_later0, BATCH_N),
    "batch_call_later_cancel": (row_batch_call_later_cancel, BATCH_N),
    "batch_call_soon_threadsafe": (row_batch_call_soon_threadsafe, BATCH_N),
}

# The seed's own benchmark, row by row: the batch rows, and the chain rows that already have its shape.
SEED_ROWS = ("batch_call_soon", "batch_call_soon_3args", "batch_call_later0", "batch_call_later_cancel",
             "batch_call_soon_threadsafe", "sleep0", "create_task", "future_roundtrip")


# ------------------------------------------------------------- the child

def run_child(row, spec, n, time_limit):
    """Measure one figure and print it as one JSON line."""
    func = ROWS[row][0]

    def make_loop(spec):
        if spec == FLOOR:
            check(row in FLOOR_ROWS, f"row {row} does not run on the floor")
            return FloorLoop()
        return _loops.make_loop(spec)

    def measure(loop, n):
        func(loop, max(n // 10, 1), Clock())        # warm-up, same loop
        clock = Clock()
        func(loop, n, clock)
        return clock

    _harness.run_child(row, spec, n, time_limit, measure, make_loop)


# ------------------------------------------------------------ the parent

def report(results, rows, specs, rounds):
    def overhead(c):
        o = c.get("overhead")
        if o is None:
            return "-"
        vs = o["vs_uvloop"]
        return f"{o['ns']:.1f}" + (f" ({vs:.2f})" if vs else "")

    floor_rows = [r for r in rows if FLOOR in results[r]]
    _harness.print_tables(results, rows, specs, ROW_WIDTH, [
        (f"CPU ns per operation: median (min-max) of {rounds} round(s), one process each", 20,
         lambda c: _harness.median_text(c, rounds, ".1f", ".0f"), specs + [FLOOR] if floor_rows else specs),
        ("ratio: x uvloop / x asyncio (median CPU ns, lower is faster)", 16, _harness.ratio_text)])
    if floor_rows:
        _harness.print_tables(results, floor_rows, specs, ROW_WIDTH, [
            ("scheduling overhead: median CPU ns per operation above the floor (ratio to uvloop's)", 20,
             overhead)])


def is_ours(spec):
    return spec.startswith("zloop:") or spec == "zloop"


def add_best_peer(results):
    """Per row: the fastest loop that is not ours (asyncio included) and each of our loops' speed against it,
    its median over ours (above 1: ours is faster)."""
    for cells in results.values():
        peers = {spec: cell["median"] for spec, cell in cells.items()
                 if not is_ours(spec) and spec != FLOOR and cell["median"] and not cell["failed"]}
        best = min(peers, key=peers.get) if peers else None
        for spec, cell in cells.items():
            ok = best and is_ours(spec) and cell["median"] and not cell["failed"]
            cell["best_peer"] = best
            cell["vs_best_peer"] = round(peers[best] / cell["median"], 3) if ok else None


def print_best_peer(results, rows, specs):
    ours = [s for s in specs if is_ours(s)]
    if not ours or len(ours) == len(specs):
        return
    print("\nspeed against the fastest peer: its median CPU ns over ours (above 1: zloop is faster)")
    print(f"{'row':<{ROW_WIDTH + 4}}{'fastest peer':>14}" + "".join(f"{s:>16}" for s in ours))
    for row in rows:
        cells = results[row]
        best = next((c["best_peer"] for c in cells.values() if c.get("best_peer")), None)
        text = ["-" if cells.get(s, {}).get("vs_best_peer") is None else f"{cells[s]['vs_best_peer']:.2f}"
                for s in ours]
        seed = " *" if row in SEED_ROWS else "  "
        print(f"{row + seed:<{ROW_WIDTH + 4}}{best or '-':>14}" + "".join(f"{t:>16}" for t in text))
    print("(* the seed's rows)")


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
    p = _harness.arg_parser(__doc__, ROWS, "micro.json", CHILD_TIME_LIMIT)
    p.add_argument("--no-floor", action="store_true",
                   help="do not run the call_soon rows on the floor")
    return _harness.parse(p, run_child)


def main():
    args = parse_args()
    specs, rows, rounds = _harness.selection(args, ROWS, "micro.py", peers=True)
    sizes = {r: max(int(ROWS[r][1] * _harness.scale(args)), 1) for r in rows}
    floor = [FLOOR] if not args.no_floor else []
    plan = {r: (sizes[r], specs + floor if r in FLOOR_ROWS else specs) for r in rows}
    info = _harness.machine_info()
    started = time.monotonic()
    print(f"micro: loops {', '.join(specs)}; {len(rows)} rows x {rounds} "
          "round(s), one process per figure", file=sys.stderr)
    runs, failures, classes = _harness.run_figures(__file__, plan, rounds, args.time_limit, started)

    def summarize(row, res, failed):
        return _harness.summarize(sizes[row], failed,
                                  {"cpu_ns_per_op": [r["cpu_ns"] / r["ops"] for r in res],
                                   "wall_ns_per_op": [r["wall_ns"] / r["ops"] for r in res]},
                                  {"wall_median": "wall_ns_per_op"})

    results = _harness.tabulate(runs, failures, summarize)
    _harness.add_ratios(results, 4)
    add_overheads(results)
    add_best_peer(results)
    report(results, rows, specs, rounds)
    print_best_peer(results, rows, specs)
    config = {"rounds": rounds, "quick": args.quick, "loops": specs, "loop_classes": classes, "n": sizes,
              "chains": CHAINS, "batch": BATCH, "fire_delay": FIRE_DELAY, "cancel_delay": CANCEL_DELAY}
    return _harness.write_json(args.json, "micro", info, config, started, results, failures)


if __name__ == "__main__":
    sys.exit(main())
