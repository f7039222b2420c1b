"""What loop statistics cost: bench/micro.py's rows on one zloop loop with timing off (ZLOOP_STATS=0, the counters
only) and on (ZLOOP_STATS=1), and optionally on a build without statistics (--baseline DIR: its PYTHONPATH).

    PYTHONPATH=python python3 bench/stats_overhead.py [--loop zloop:native] [--rows call_soon,sleep0]
                                                      [--rounds 5] [--baseline /path/to/other/python] [--json PATH]

Every figure is one micro.py child (a fresh process); rounds outermost, the configurations' order rotated each
round. Before measuring, each configuration is checked: loop.stats()['timing'] is what it should be, and the
baseline's loops have no stats(). Reported: median CPU ns per operation and the overhead of timing (on vs off) and
of the counters (off vs baseline), in percent of the cheaper one.
"""

import argparse
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import _harness  # noqa: E402
import micro  # noqa: E402

MICRO = os.path.join(HERE, "micro.py")
CHECK = ("import sys, zloop; loop = zloop.new_event_loop(backend=sys.argv[1]); "
         "print(loop.stats()['timing'] if hasattr(loop, 'stats') else 'none'); loop.close()")


def config_env(name, baseline):
    env = dict(os.environ)
    env.pop("ZLOOP_STATS", None)
    if name == "timing on":
        env["ZLOOP_STATS"] = "1"
    elif name == "baseline":
        env["PYTHONPATH"] = baseline
    return env


def check_config(name, env, backend):
    done = subprocess.run([sys.executable, "-c", CHECK, backend], env=env, capture_output=True, text=True,
                          timeout=60)
    expected = {"timing off": "False", "timing on": "True", "baseline": "none"}[name]
    if done.returncode != 0 or done.stdout.strip() != expected:
        raise SystemExit(f"stats_overhead.py: configuration {name!r} is not what it should be "
                         f"(loop.stats()['timing'] said {done.stdout.strip() or done.stderr.strip()!r})")


def measure(row, spec, n, env):
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        res = _harness.spawn_child(MICRO, row, spec, n, micro.CHILD_TIME_LIMIT)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return res["cpu_ns"] / res["ops"]


def percent(value, reference):
    return f"{(value / reference - 1) * 100:+.1f}%"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--loop", default="zloop:native")
    parser.add_argument("--rows", default=",".join(micro.ROWS))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every row's N")
    parser.add_argument("--baseline", help="PYTHONPATH of a zloop build without statistics, to price the counters")
    parser.add_argument("--json", default=os.path.join(_harness.RESULTS, "stats_overhead.json"))
    args = parser.parse_args()
    rows = [r for r in args.rows.split(",") if r]
    unknown = [r for r in rows if r not in micro.ROWS]
    if unknown or not rows or not args.loop.startswith("zloop:") or not 1 <= args.rounds <= 50:
        parser.error(f"--rows from {', '.join(micro.ROWS)}; --loop zloop:<backend>; --rounds 1..50")
    configs = ["timing off", "timing on"] + (["baseline"] if args.baseline else [])
    envs = {name: config_env(name, args.baseline) for name in configs}
    for name in configs:
        check_config(name, envs[name], args.loop.partition(":")[2])
    info = _harness.machine_info()
    started = time.monotonic()
    figures = {row: {name: [] for name in configs} for row in rows}
    failures = []
    for round_no in range(args.rounds):
        for row in rows:
            n = max(int(micro.ROWS[row][1] * args.scale), 1)
            for name in _harness.rotated(configs, round_no):
                try:
                    figures[row][name].append(measure(row, args.loop, n, envs[name]))
                except _harness.BenchError as exc:
                    failures.append({"round": round_no, "row": row, "config": name, "error": str(exc)})
                    print(f"FAILED {row} {name}: {exc}", file=sys.stderr)
        print(f"  round {round_no + 1} of {args.rounds} done", file=sys.stderr, flush=True)
    medians = {row: {name: statistics.median(v) for name, v in cells.items() if v} for row, cells in figures.items()}
    head = f"{'row':22}" + "".join(f"{name:>14}" for name in configs) + f"{'timing cost':>14}" + \
        (f"{'counters cost':>15}" if args.baseline else "")
    print(f"\n{args.loop}: CPU ns per operation, median of {args.rounds} round(s)\n{head}\n" + "-" * len(head))
    for row, cell in medians.items():
        if len(cell) != len(configs):
            print(f"{row:22} FAIL")
            continue
        line = f"{row:22}" + "".join(f"{cell[name]:14.1f}" for name in configs)
        line += f"{percent(cell['timing on'], cell['timing off']):>14}"
        if args.baseline:
            line += f"{percent(cell['timing off'], cell['baseline']):>15}"
        print(line)
    info["loadavg_at_end"] = os.getloadavg()
    config = {"loop": args.loop, "rows": rows, "rounds": args.rounds, "scale": args.scale, "baseline": args.baseline}
    return _harness.write_json(args.json, "stats_overhead", info, config, started,
                               {"figures": figures, "medians": medians}, failures)


if __name__ == "__main__":
    sys.exit(main())
