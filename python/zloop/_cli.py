"""python -m zloop: info | run [--backend B] [--stats] (script.py | -m module) [args...] |
bench [--seconds S] [--loops ...]"""

import argparse
import asyncio
import os
import platform
import runpy
import socket
import sys
import time

from . import _zloop

USAGE = """usage: python -m zloop COMMAND ...

commands:
  info                                   zloop's version, build options, backends, libuv/libevent versions, Python
  run [--backend B] [--stats] script.py [args]
                                         run a program with zloop as asyncio's event loop;
                                         --stats: time every loop and print loop.stats() at exit
  run [--backend B] [--stats] -m module [args]
                                         the same for a module, like python -m
  bench [--seconds S] [--loops L,...]    a quick scheduling comparison: asyncio, uvloop, zloop's backends
"""


class UsageError(Exception):
    """Bad command line: the message says what to type instead."""


# ---------------------------------------------------------------- info

def build_info():
    """What this zloop is: version, backends, build options, library versions, the Python running it."""
    from . import __version__
    info = dict(_zloop._build_info())
    info["backends"] = _zloop.backends()
    info["package_version"] = __version__
    info["location"] = os.path.dirname(os.path.abspath(__file__))
    info["configure_args"] = info["configure_args"].strip()
    info["distribution"] = None
    try:
        from importlib import metadata
        dist = metadata.distribution("zloop-c")
    except Exception:   # not installed by pip: a source tree on PYTHONPATH
        pass
    else:
        # Only if that installed distribution is the zloop imported here.
        if os.path.realpath(dist.locate_file("zloop/__init__.py")) == os.path.realpath(__file__[:-len("_cli.py")]
                                                                                      + "__init__.py"):
            info["distribution"] = f"zloop-c {dist.version}"
    info["python"] = f"{platform.python_implementation()} {platform.python_version()} ({sys.executable})"
    return info


def _library_line(versions):
    if versions is None:
        return "not built in"
    return f"{versions['runtime']} (built against {versions['compiled']})"


def cmd_info(argv):
    parser = argparse.ArgumentParser(prog="python -m zloop info", description="Show how this zloop was built.")
    parser.parse_args(argv)
    info = build_info()
    selected = os.environ.get("ZLOOP_BACKEND")
    rows = [
        ("zloop", info["version"]),
        ("installed as", info["distribution"] or "not by pip (imported from a source tree)"),
        ("location", info["location"]),
        ("backends", ", ".join(f"{b} ({info['native']})" if b == "native" else b for b in info["backends"])),
        ("default backend", info["default_backend"]
         + (f"; ZLOOP_BACKEND={selected} in this environment" if selected else "")),
        ("libuv", _library_line(info["libuv"])),
        ("libevent", _library_line(info["libevent"])),
        ("AddressSanitizer", "yes" if info["asan"] else "no"),
        ("configure options", info["configure_args"] or "(none)"),
        ("compiler", info["compiler"]),
        ("Python", info["python"]),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name + ':':{width + 1}} {value}")
    return 0


# ---------------------------------------------------------------- run

def check_backend(name):
    backends = _zloop.backends()
    if name not in backends:
        raise UsageError(f"unknown backend {name!r}: this zloop has {', '.join(backends)} "
                         "(python -m zloop info shows how it was built)")
    return name


RUN_USAGE = "usage: python -m zloop run [--backend B] [--stats] (script.py | -m module) [args...]"


def parse_run(argv, options=None):
    """(backend or None, 'script' or 'module', target, program args). Options stop at the target, like python's;
    --stats sets options["stats"] when options is given."""
    backend = None
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in ("-h", "--help"):
            raise SystemExit(print(RUN_USAGE + "\n\nRuns the program with zloop as asyncio's event loop: "
                                   "asyncio.run, asyncio.new_event_loop and the event loop policy give zloop "
                                   "loops on backend B\n(default: $ZLOOP_BACKEND, else the build's default). "
                                   "--stats times every zloop loop the program makes and prints\nits loop.stats() "
                                   "on stderr when the program ends."))
        if arg == "--backend" or arg.startswith("--backend="):
            if arg == "--backend":
                if i + 1 == len(argv):
                    raise UsageError("--backend needs a name: " + ", ".join(_zloop.backends()))
                i += 1
                backend = argv[i]
            else:
                backend = arg.split("=", 1)[1]
            check_backend(backend)
        elif arg == "--stats":
            if options is None:
                raise UsageError("--stats is not taken here\n" + RUN_USAGE)
            options["stats"] = True
        elif arg == "-m" or (arg.startswith("-m") and len(arg) > 2):
            module = argv[i + 1] if arg == "-m" and i + 1 < len(argv) else arg[2:]
            if not module:
                raise UsageError("-m needs a module name\n" + RUN_USAGE)
            rest = argv[i + 2:] if arg == "-m" else argv[i + 1:]
            return backend, "module", module, rest
        elif arg.startswith("-"):
            raise UsageError(f"unknown option {arg!r} before the program\n" + RUN_USAGE)
        else:
            return backend, "script", arg, argv[i + 1:]
        i += 1
    raise UsageError("no program to run\n" + RUN_USAGE)


def _install_loop():
    # The policy is what asyncio.run (3.12+ without loop_factory: through Runner), asyncio.new_event_loop and
    # get_event_loop ask for a loop; zloop's policy makes every such loop a zloop loop.
    from ._loop import EventLoopPolicy
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)   # policies are deprecated from 3.14, still in force
        asyncio.set_event_loop_policy(EventLoopPolicy())


STATS_ORDER = ("iterations", "callbacks", "timers_fired", "io_events", "poll_seconds", "io_seconds",
               "callback_seconds", "slowest_callback_seconds", "slowest_callback", "lag_samples", "lag_mean_seconds",
               "lag_max_seconds")


def format_stats(loop, number):
    """A loop's stats() as lines of text, for --stats."""
    stats = loop.stats()
    state = "closed" if loop.is_closed() else "open"
    lines = [f"zloop stats: loop {number} ({loop.get_backend()}, {state})"]
    for key in STATS_ORDER:
        value = stats[key]
        text = f"{value:.6f}" if isinstance(value, float) else str(value)
        lines.append(f"  {key:25} {text}")
    return "\n".join(lines)


def _report_stats(loops, out):
    if not loops:
        print("zloop stats: the program made no zloop loop", file=out)
    for number, loop in enumerate(loops, 1):
        print(format_stats(loop, number), file=out)
    out.flush()


def cmd_run(argv):
    options = {"stats": False}
    backend, kind, target, args = parse_run(argv, options)
    if backend is not None:
        os.environ["ZLOOP_BACKEND"] = backend   # read by each new loop; child processes inherit it
    if kind == "script" and not os.path.exists(target):
        raise UsageError(f"can't open file {target!r}: no such file")
    _install_loop()
    if not options["stats"]:
        return _run_target(kind, target, args)
    from ._loop import _loop_observers
    loops = []

    def observe(loop):   # every zloop loop made in this process, whoever makes it (uvicorn's factory too)
        loop.set_stats(True)
        loops.append(loop)
    _loop_observers.append(observe)
    try:
        return _run_target(kind, target, args)
    finally:
        _loop_observers.remove(observe)
        _report_stats(loops, sys.stderr)


def _run_target(kind, target, args):
    if kind == "script":
        sys.argv = [target, *args]
        sys.path[0] = os.path.dirname(os.path.abspath(target))
        runpy.run_path(target, run_name="__main__")
    else:
        sys.argv = [target, *args]   # run_module replaces argv[0] with the module's file, as python -m does
        sys.path[0] = os.getcwd()
        runpy.run_module(target, run_name="__main__", alter_sys=True)
    return 0


# ---------------------------------------------------------------- bench

# Each workload runs n operations on a fresh loop and returns the count it verified done.

def work_call_soon(loop, n):
    """100 callbacks, each re-scheduling itself with call_soon, until n calls ran."""
    chains = min(100, n)
    left = n

    def step():
        nonlocal left
        left -= 1
        if left >= chains:
            loop.call_soon(step)
        elif left == 0:
            loop.stop()
    for _ in range(chains):
        loop.call_soon(step)
    loop.run_forever()
    return n - left


def work_timers(loop, n):
    """n timers (call_later, 1-2 ms), scheduled in batches of 1000 that each fire before the next batch."""
    fired = 0

    def on_timer():
        nonlocal fired
        fired += 1
        if fired == n:
            loop.stop()
        elif fired % 1000 == 0:
            batch()

    def batch():
        for i in range(min(1000, n - fired)):
            loop.call_later(0.001 + i * 1e-6, on_timer)
    loop.call_soon(batch)
    loop.run_forever()
    return fired


def work_tasks(loop, n):
    """n tasks that each await sleep(0) once, gathered in batches of 1000."""
    async def child():
        await asyncio.sleep(0)
        return 1

    async def main():
        done = 0
        while done < n:
            done += sum(await asyncio.gather(*[child() for _ in range(min(1000, n - done))]))
        return done
    return loop.run_until_complete(main())


def work_sock_pingpong(loop, n):
    """n round trips of 64 bytes over a socketpair with sock_sendall / sock_recv (the I/O backend at work)."""
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    message = b"x" * 64

    async def echo():
        for _ in range(n):
            data = await loop.sock_recv(b, 64)
            await loop.sock_sendall(b, data)

    async def main():
        server = loop.create_task(echo())
        trips = 0
        for _ in range(n):
            await loop.sock_sendall(a, message)
            got = b""
            while len(got) < 64:
                got += await loop.sock_recv(a, 64 - len(got))
            trips += got == message
        await server
        return trips
    try:
        return loop.run_until_complete(main())
    finally:
        a.close()
        b.close()


WORKLOADS = {"call_soon": work_call_soon, "timers": work_timers, "tasks": work_tasks,
             "sock_pingpong": work_sock_pingpong}


def bench_loops(selected=None):
    """{name: factory} of the loops to compare: asyncio, uvloop if it imports, zloop on each backend."""
    from ._loop import new_event_loop
    loops = {"asyncio": asyncio.new_event_loop}
    try:
        import uvloop
        loops["uvloop"] = uvloop.new_event_loop
    except ImportError:
        pass
    for name in _zloop.backends():
        loops[f"zloop:{name}"] = (lambda b: lambda: new_event_loop(backend=b))(name)
    if selected:
        unknown = [name for name in selected if name not in loops]
        if unknown:
            raise UsageError(f"unknown loop {', '.join(unknown)}: here there are {', '.join(loops)}")
        loops = {name: loops[name] for name in selected}
    return loops


def measure(name, factory, work, n):
    """CPU seconds of the process (not wall time: timers wait) to run work(loop, n) on a fresh loop; the workload
    must report n done."""
    loop = factory()
    try:
        started = time.process_time()
        done = work(loop, n)
        elapsed = time.process_time() - started
    finally:
        loop.close()
    if done != n:
        raise RuntimeError(f"{work.__name__} on {name}: {done} of {n} operations done")
    return elapsed


def run_bench(seconds, loops, workloads, out=sys.stdout):
    """{workload: {loop: best CPU ns per operation}}, rounds interleaved across loops until the time is used."""
    results = {}
    share = seconds / len(workloads)
    for wname, work in workloads.items():
        # Size a run to about 20 ms of CPU on asyncio, then give every loop rounds in turn while this workload's share lasts.
        n = 200
        reference = "asyncio" if "asyncio" in loops else next(iter(loops))
        while measure(reference, loops[reference], work, n) < 0.02 and n < 1_000_000:
            n *= 2
        best = {}
        deadline = time.perf_counter() + share
        rounds = 0
        while rounds < 1 or (time.perf_counter() < deadline and rounds < 50):
            for lname, factory in loops.items():
                ns = measure(lname, factory, work, n) / n * 1e9
                best[lname] = min(best.get(lname, ns), ns)
            rounds += 1
        results[wname] = best
        print(f"  {wname}: n={n}, {rounds} rounds", file=out, flush=True)
    return results


def format_table(results, loops):
    names = list(loops)
    head = f"{'CPU per op':15}" + "".join(f"{name:>14}" for name in names)
    lines = [head, "-" * len(head)]
    for wname, best in results.items():
        lines.append(f"{wname:15}" + "".join(f"{best[name]:>11.0f} ns" for name in names))
    if "asyncio" in names:
        lines.append("")
        lines.append("relative to asyncio (higher is faster):")
        for wname, best in results.items():
            lines.append(f"{wname:15}" + "".join(f"{best['asyncio'] / best[name]:>13.2f}x" for name in names))
    return "\n".join(lines)


def cmd_bench(argv):
    parser = argparse.ArgumentParser(
        prog="python -m zloop bench",
        description="A quick, in-process comparison of scheduling cost (CPU ns per operation, best round) on asyncio, "
                    "uvloop (if installed) and each zloop backend. bench/micro.py in the source tree is the "
                    "careful one (a fresh process per figure, CPU time).")
    parser.add_argument("--seconds", type=float, default=8.0, help="time budget for all rounds (default 8)")
    parser.add_argument("--loops", help="comma-separated, e.g. asyncio,zloop:native (default: all here)")
    parser.add_argument("--workloads", help=f"comma-separated subset of {','.join(WORKLOADS)}")
    opts = parser.parse_args(argv)
    if not 0 < opts.seconds <= 600:
        raise UsageError(f"--seconds {opts.seconds}: give a budget between 0 and 600 seconds")
    loops = bench_loops(opts.loops.split(",") if opts.loops else None)
    workloads = WORKLOADS
    if opts.workloads:
        unknown = [w for w in opts.workloads.split(",") if w not in WORKLOADS]
        if unknown:
            raise UsageError(f"unknown workload {', '.join(unknown)}: choose from {', '.join(WORKLOADS)}")
        workloads = {w: WORKLOADS[w] for w in opts.workloads.split(",")}
    print(f"zloop bench: {', '.join(loops)}; about {opts.seconds:g} s on Python {platform.python_version()}",
          flush=True)
    results = run_bench(opts.seconds, loops, workloads)
    print()
    print(format_table(results, loops))
    return 0


# ---------------------------------------------------------------- entry

COMMANDS = {"info": cmd_info, "run": cmd_run, "bench": cmd_bench}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE, end="")
        return 0 if argv else 2
    command = COMMANDS.get(argv[0])
    try:
        if command is None:
            raise UsageError(f"unknown command {argv[0]!r}: use {', '.join(COMMANDS)} (python -m zloop --help)")
        return command(argv[1:])
    except UsageError as exc:
        print(f"python -m zloop: error: {exc}", file=sys.stderr)
        return 2
