"""The parent/child harness shared by micro.py, spawn.py and udp_pingpong.py.

Every figure (row x loop x round) is measured in a fresh process.  The parent
(`run_figures`) runs ``SCRIPT --child ROW LOOPSPEC --n N --time-limit S`` per
figure, rounds outermost and the loop order rotated every round; the child
(`run_child`) makes the loop, has the benchmark time its work with a `Clock`
and prints one JSON line.  A child that fails, hangs (faulthandler aborts it
after --time-limit) or reports other work than it was given fails that figure:
no figure is recorded, the failure is listed.  Then `summarize` (medians over
rounds), `add_ratios` (against uvloop and asyncio), `print_table` and
`write_json` (machine info, loop versions, config, results, failures).

Use from a script in bench/ with ``import _harness`` (the script's directory
is on sys.path).
"""

import argparse
import faulthandler
import gc
import json
import os
import statistics
import subprocess
import sys
import sysconfig
import time

import _loops

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
KILL_GRACE = 15.0      # seconds past --time-limit before the parent kills a child


class BenchError(Exception):
    """A child did not do the work it was asked to do."""


def check(ok, what):
    if not ok:
        raise BenchError(what)


class Clock:
    """CPU (all threads of this process) and wall time of one measured section."""

    cpu_ns = wall_ns = None

    def start(self):
        gc.collect()
        self._wall0 = time.perf_counter_ns()
        self._cpu0 = time.process_time_ns()

    def stop(self):
        self.cpu_ns = time.process_time_ns() - self._cpu0
        self.wall_ns = time.perf_counter_ns() - self._wall0


def build_c(source, binary, extension=False):
    """binary compiled from the one C file source with cc (or $CC) when missing or older than it; returns its path.
    extension: a Python extension module of this interpreter (its headers, -shared -fPIC)."""
    fresh = os.path.exists(binary) and os.path.getmtime(binary) >= os.path.getmtime(source)
    if not fresh:
        os.makedirs(os.path.dirname(binary), exist_ok=True)
        cc = os.environ.get("CC", "cc")
        flags = ["-shared", "-fPIC", "-I" + sysconfig.get_paths()["include"]] if extension else []
        subprocess.run([cc, "-O2", "-std=c11", "-Wall", "-Wextra", *flags, "-o", binary, source],
                       check=True, timeout=120)
        print(f"built {binary}", file=sys.stderr)
    return binary


# ------------------------------------------------------------ command line

def arg_parser(doc, rows, json_name, time_limit, scale=True, n_default=None, n_help=argparse.SUPPRESS):
    """The options every benchmark takes; the caller adds its own, then calls `parse`."""
    p = argparse.ArgumentParser(description=doc.split("\n")[0])
    p.add_argument("--loops", help="comma list of asyncio, uvloop, "
                   "zloop:<backend>, zloop (= all backends); default all")
    p.add_argument("--rows", help="comma list of rows; default all: " + ", ".join(rows))
    p.add_argument("--rounds", type=int, help="default 5 (1 with --quick)")
    p.add_argument("--quick", action="store_true", help="smoke test: 1 round, N/10")
    if scale:
        p.add_argument("--scale", type=float, default=1.0, help="multiply every N by this")
    p.add_argument("--json", default=os.path.join(RESULTS, json_name))
    p.add_argument("--time-limit", type=float, default=time_limit,
                   help="seconds a child may take before it fails")
    p.add_argument("--child", nargs=2, metavar=("ROW", "LOOPSPEC"), help=argparse.SUPPRESS)
    p.add_argument("--n", type=int, default=n_default, help=n_help)
    return p


def parse(parser, run_child):
    """The parsed options; with --child, run_child(ROW, LOOPSPEC, n, time_limit) measures that figure and the
    process exits."""
    args = parser.parse_args()
    if args.child:
        run_child(args.child[0], args.child[1], args.n, args.time_limit)
        sys.exit(0)
    return args


def selection(args, known_rows, prog, peers=False):
    """(loop specs, rows, rounds) from the options; exits on a bad name.  With peers, the loops that run from
    their own environment (bench/peers.sh) are offered too."""
    try:
        specs = _loops.select(args.loops, peers=peers)
    except ValueError as exc:
        sys.exit(f"{prog}: {exc}")
    rows = args.rows.split(",") if args.rows else list(known_rows)
    unknown = [r for r in rows if r not in known_rows]
    if unknown:
        sys.exit(f"{prog}: unknown rows {unknown}; known: {list(known_rows)}")
    return specs, rows, args.rounds or (1 if args.quick else 5)


def scale(args):
    """The factor for every row's N: --scale, and a tenth with --quick."""
    return args.scale / (10 if args.quick else 1)


# ------------------------------------------------------------- the child

def run_child(row, spec, n, time_limit, measure, make_loop=_loops.make_loop, stop_on_error=True):
    """Make the loop for *spec*, run ``measure(loop, n)`` (it returns the Clock of its timed section) and print
    the figure as one JSON line.  An error the loop reports fails the child; with stop_on_error it also stops
    the loop, so a row waiting for work that will never come fails fast instead of hanging."""
    faulthandler.dump_traceback_later(time_limit, exit=True)
    loop = make_loop(spec)
    errors = []

    def on_error(lp, context):
        errors.append(f"{context.get('message')}: {context.get('exception')!r}")
        if stop_on_error:
            lp.stop()

    loop.set_exception_handler(on_error)
    try:
        clock = measure(loop, n)
    finally:
        loop.close()
        check(not errors, "error in the loop: " + "; ".join(errors[:3]))
    faulthandler.cancel_dump_traceback_later()
    check(clock.cpu_ns is not None, "row did not time its run")
    print(json.dumps({"row": row, "loop": spec, "ops": n, "cpu_ns": clock.cpu_ns, "wall_ns": clock.wall_ns,
                      "loop_class": type(loop).__module__ + "." + type(loop).__qualname__}))


# ------------------------------------------------------------ the parent

def spawn_child(script, row, spec, n, time_limit):
    """Run one child of *script* with the interpreter of *spec*; return its result dict or raise BenchError."""
    cmd = [_loops.interpreter(spec), os.path.abspath(script), "--child", row, spec, "--n", str(n),
           "--time-limit", str(time_limit)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=time_limit + KILL_GRACE,
                              env=_loops.child_env(spec))
    except subprocess.TimeoutExpired:
        raise BenchError(f"child killed after {time_limit + KILL_GRACE:.0f} s")
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines()
        tail = lines[-6:]
        hung = [line for line in lines if line.startswith("Timeout (") and line not in tail]
        raise BenchError(f"child exited {proc.returncode}:\n  " + "\n  ".join(hung + tail))
    try:
        res = json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        raise BenchError(f"child printed no result: {proc.stdout[-300:]!r}")
    check(res["row"] == row and res["loop"] == spec and res["ops"] == n, f"child reported the wrong work: {res}")
    return res


def rotated(items, shift):
    shift %= len(items)
    return items[shift:] + items[:shift]


def run_figures(script, plan, rounds, time_limit, started):
    """Run every figure of *plan* ({row: (n, [loop specs])}) *rounds* times, one child each.
    Returns ({row: {spec: [child results]}}, failures, {spec: loop class})."""
    runs = {row: {spec: [] for spec in specs} for row, (_, specs) in plan.items()}
    failures = []
    classes = {}
    for rnd in range(rounds):
        for row, (n, specs) in plan.items():
            for spec in rotated(specs, rnd):
                try:
                    res = spawn_child(script, row, spec, n, time_limit)
                except BenchError as exc:
                    print(f"FAILED {row} {spec} round {rnd + 1}: {exc}", file=sys.stderr)
                    failures.append({"row": row, "loop": spec, "round": rnd + 1, "error": str(exc)})
                    continue
                runs[row][spec].append(res)
                classes[spec] = res["loop_class"]
        print(f"  round {rnd + 1}/{rounds} done ({time.monotonic() - started:.0f} s)", file=sys.stderr)
    return runs, failures, classes


def tabulate(runs, failures, summarize_cell):
    """{row: {spec: summarize_cell(row, child results, failed rounds)}}."""
    def failed(row, spec):
        return sum(1 for f in failures if f["row"] == row and f["loop"] == spec)

    return {row: {spec: summarize_cell(row, results, failed(row, spec)) for spec, results in cells.items()}
            for row, cells in runs.items()}


def summarize(n, failed, series, medians=None):
    """One cell: *series* maps a JSON key to the per-round values, the first being the figure (its median, min
    and max); *medians* maps a JSON key to the series whose median it gets."""
    values = next(iter(series.values()))
    if not values:
        return {"n": n, "failed": failed, "median": None}
    cell = {"n": n, "failed": failed, "median": statistics.median(values), "min": min(values),
            "max": max(values)}
    for key, name in (medians or {}).items():
        cell[key] = statistics.median(series[name])
    for key, vals in series.items():
        cell[key] = [round(x, 1) for x in vals]
    return cell


def add_ratios(results, digits):
    """vs_uvloop, vs_asyncio: each cell's median over theirs, None where either failed."""
    for cells in results.values():
        for base in ("uvloop", "asyncio"):
            ref = cells.get(base, {}).get("median")
            for cell in cells.values():
                ok = ref and cell["median"] and not cell["failed"]
                cell["vs_" + base] = round(cell["median"] / ref, digits) if ok else None


def median_text(cell, rounds, fmt, range_fmt=None, unit=1, fail_on_any=True):
    """A cell's "median (min-max)", divided by *unit*, formatted with *fmt* (the range with *range_fmt*, default
    the same); "FAIL(k/rounds)" where no round gave a figure or, with fail_on_any, where any round failed."""
    if cell["median"] is None or (fail_on_any and cell["failed"]):
        return f"FAIL({cell['failed']}/{rounds})"
    range_fmt = range_fmt or fmt
    return f"{cell['median'] / unit:{fmt}} ({cell['min'] / unit:{range_fmt}}-{cell['max'] / unit:{range_fmt}})"


def field_text(key, fmt):
    """A cell_text for print_tables: the cell's *key* formatted with *fmt*, "-" where it has none."""
    return lambda cell: "-" if cell.get(key) is None else f"{cell[key]:{fmt}}"


def ratio_text(cell):
    """A cell's "vs_uvloop / vs_asyncio" for a ratio table."""
    return " / ".join(f"{cell[k]:.2f}" if cell.get(k) else "-" for k in ("vs_uvloop", "vs_asyncio"))


def print_tables(results, rows, specs, row_width, tables):
    """Print each table of *tables*, (title, column width, cell_text) or (..., specs for the columns): a line per
    row, a column per loop spec, cell_text(cell) in each cell ("-" where the row has no such cell)."""
    for title, width, cell_text, *columns in tables:
        columns = columns[0] if columns else specs
        print(f"\n{title}")
        print(f"{'row':<{row_width}}" + "".join(f"{s:>{width}}" for s in columns))
        for row in rows:
            cells = [results[row].get(s) for s in columns]
            print(f"{row:<{row_width}}" + "".join(f"{'-' if c is None else cell_text(c):>{width}}" for c in cells))


# ------------------------------------------------------------ the report

def cpu_model():
    """The CPU's model name from /proc/cpuinfo, or None."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def machine_info():
    info = {"nproc": os.cpu_count(),
            "affinity": len(os.sched_getaffinity(0)),
            "cpu_model": cpu_model(),
            "kernel": " ".join(os.uname()[i] for i in (0, 2, 4)),
            "python": sys.version.replace("\n", " "),
            "executable": sys.executable,
            "loadavg_at_start": os.getloadavg()}
    try:
        with open("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor") as f:
            info["governor"] = f.read().strip()
    except OSError:
        info["governor"] = None
    return info


def write_json(path, benchmark, info, config, started, results, failures):
    """Write the result file and say so; the exit status: 1 if any figure failed."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump({"benchmark": benchmark,
                   "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                   "command": [sys.executable] + sys.argv,
                   "machine": info, "versions": _loops.versions(),
                   "config": config,
                   "seconds": round(time.monotonic() - started, 1),
                   "results": results, "failures": failures}, f, indent=1)
    print(f"\nwrote {path}" + (f"; {len(failures)} FAILED run(s)" if failures else ""))
    return 1 if failures else 0
