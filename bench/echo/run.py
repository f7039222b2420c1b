#!/usr/bin/env python3
"""Echo benchmark matrix: event loops x server modes x message sizes x transports.

For every round, for every cell (transport, mode, message size), for every
loop (the order rotates between cells and rounds, so no loop always runs
first or last): start server.py in its own process, run the lock-step client
(client.py) against it, stop the server.  Around the measured window -- after
the client's warm-up, while its connections are open -- the server's CPU time
(the scheduler's run time from /proc/PID/task/*/schedstat; user and system
from /proc/PID/stat) is read, so the figure covers exactly the requests counted.

Per cell and loop the report gives the median over rounds of req/s and of
**server CPU time per request** (us), and both as ratios to uvloop.  The
loops include the peers that run from their own environments (rloop, the Zig
zloop: bench/peers.sh; each server runs with that loop's interpreter).

The floor: a bare C epoll echo server (floor_server.c, built with cc into
bench/results/ on first use; one recv and one send per request, no Python) is
measured the same way, once per transport and size and round, interleaved with
the loops.  The table gives its CPU per request and each loop's CPU per
request above it: what the loop adds to the system calls an echo cannot avoid.  CPU per
request is the headline figure: on a small machine the client processes and
the server share the cores, so req/s depends on the scheduler, while the CPU
the server burns per echoed message depends on the loop.

The Python floor (--python-floor, proto and buffered modes): the same C epoll
loop (floor_py.c, a C extension built into bench/results/ on first use) run
inside server.py, calling server.py's own protocol objects (data_received, or
get_buffer and buffer_updated; write() sends at once).  It is measured as a
loop, so its CPU above the floor is the least any Python event loop can add
to it with these protocols: the Python process and the protocol's own calls.

TLS (--tls): a throw-away ECDSA key and self-signed certificate are made in the
run's temp dir (bench/_tlscert.py); the servers serve TLS with them in the
proto, buffered and streams modes (sock mode has no TLS), the clients wrap
their sockets and verify the server against that certificate.  The floor is
left out (the C server speaks no TLS), and so is rloop (0.5 has no TLS: its
create_server(ssl=...) raises NotImplementedError).

Outputs: a table on stdout, JSON (--json) with machine info and every raw
measurement, and an SVG chart (--svg) of server CPU per request.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import selectors
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

import chart
import client
import many
import server

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import _harness  # noqa: E402  (bench/_harness.py)
import _loops  # noqa: E402  (bench/_loops.py)
import _tlscert  # noqa: E402  (bench/_tlscert.py)

HERE = os.path.dirname(os.path.abspath(__file__))
SERVER = os.path.join(HERE, "server.py")
RESULTS = os.path.join(os.path.dirname(HERE), "results")
FLOOR_SOURCE = os.path.join(HERE, "floor_server.c")
FLOOR_BINARY = os.path.join(RESULTS, "floor_server")
FLOOR = "floor"   # the spec of the bare C server in records and the summary
PY_FLOOR_SOURCE = os.path.join(HERE, "floor_py.c")
PY_FLOOR = server.PY_FLOOR   # --python-floor: that server's epoll loop inside server.py, calling its protocols
PY_FLOOR_MODES = server.PY_FLOOR_MODES

MODES = ("sock", "proto", "buffered", "streams")
TLS_MODES = ("proto", "buffered", "streams")   # sock mode (sock_recv/sock_sendall) has no TLS
NO_TLS_LOOPS = ("rloop",)                      # rloop 0.5: create_server(ssl=...) raises NotImplementedError
SIZES = (1024, 10240, 102400)
TRANSPORTS = ("tcp", "unix")
BASELINE = "uvloop"

# Three client processes, as in uvloop's echoclient: on a 2-core machine the
# clients and the server share the cores, and more client processes only take
# CPU away from the server without adding information.
DEFAULT_CONCURRENCY = 3
DEFAULT_PIN = "0:1"   # --pin: the server alone on CPU 0, the clients (and run.py) on CPU 1

SERVER_START_TIMEOUT = 15.0   # seconds until the server's READY line
SERVER_STOP_TIMEOUT = 5.0     # seconds after SIGTERM before SIGKILL
CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


class ServerError(RuntimeError):
    """The echo server did not start, or died."""


# --- one server process -----------------------------------------------------

def build_python_floor() -> str:
    """floor_py.c as an extension module of this interpreter in bench/results/ (server.py loads it from there)."""
    return _harness.build_c(PY_FLOOR_SOURCE, server.python_floor_path(), extension=True)


def build_floor() -> str:
    """The floor server's binary, compiled with cc when missing or older than its source."""
    return _harness.build_c(FLOOR_SOURCE, FLOOR_BINARY)


class EchoServer:
    """server.py (or, for the floor, the C server) in a child process; a context manager that always reaps it."""

    def __init__(self, spec: str, mode: str, transport: str, workdir: str, tls=None, cpus=None):
        self.cpus = cpus   # --pin: the CPUs the server may run on, set in the child before exec
        self.unix_path = os.path.join(workdir, "echo.sock") if transport == "unix" else None
        where = ["--unix", self.unix_path] if self.unix_path else ["--addr", "127.0.0.1:0"]
        if spec == FLOOR:
            self.command = [FLOOR_BINARY, *where]
        elif spec == PY_FLOOR:
            self.command = [sys.executable, SERVER, "--loop", PY_FLOOR, "--mode", mode, *where]
        else:
            self.command = [_loops.interpreter(spec), SERVER, "--loop", spec, "--mode", mode, *where]
            if tls:
                self.command += ["--certfile", tls[0], "--keyfile", tls[1]]
        self.env = _loops.child_env(spec)
        self.proc = None
        self.info = {}
        self.exit_code = None

    def __enter__(self):
        pin = (lambda: os.sched_setaffinity(0, self.cpus)) if self.cpus else None
        self.proc = subprocess.Popen(self.command, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, text=True, env=self.env, preexec_fn=pin)
        try:
            self.info = self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc):
        self.stop()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def target(self):
        """(family, address) for client.run."""
        return client.parse_target(self.info.get("addr"), self.info.get("unix"))

    def _wait_ready(self) -> dict:
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise ServerError(f"no READY line within {SERVER_START_TIMEOUT:.0f} s")
                if not sel.select(remaining):
                    continue
                line = self.proc.stdout.readline()
                if not line:
                    raise ServerError(f"server exited with status {self.proc.wait()} "
                                      "before it was ready")
                if line.startswith("READY "):
                    return json.loads(line[len("READY "):])

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after a grace period; remove the socket file."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=SERVER_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None:
            self.exit_code = self.proc.returncode
            self.proc.stdout.close()
        if self.unix_path and os.path.exists(self.unix_path):
            os.unlink(self.unix_path)


def read_cpu_seconds(pid: int):
    """(user, system, total) CPU seconds of process `pid`, all its threads included.

    user and system come from /proc/PID/stat in clock ticks (10 ms here: a 1.5 s window at 30% CPU is only 45
    ticks); total is the scheduler's nanosecond run time summed over /proc/PID/task/*/schedstat when the kernel
    has it, so the headline figure carries no tick rounding (else user + system)."""
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    fields = stat[stat.rindex(")") + 2:].split()  # fields[0] is field 3, "state"
    user, system = int(fields[11]) / CLOCK_TICKS, int(fields[12]) / CLOCK_TICKS
    return user, system, _run_time_seconds(pid, user + system)


def read_minor_faults(pid: int) -> int:
    """Minor page faults of process `pid` so far, all its threads (minflt, field 10 of /proc/PID/stat): a heap
    that is trimmed and grown again shows here (docs/performance.md, issue 10's sixth pass)."""
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    return int(stat[stat.rindex(")") + 2:].split()[7])


def _run_time_seconds(pid: int, fallback: float) -> float:
    total = 0
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return fallback
    return total / 1e9


# --- one measurement ----------------------------------------------------------

def measure(spec: str, cell: dict, args, workdir: str) -> dict:
    """Run one server + client pair; return the raw measurement."""
    record = dict(cell, loop=spec)
    marks = {}

    with EchoServer(spec, cell["mode"], cell["transport"], workdir, tls=args.tls_files,
                    cpus=args.pin[0] if args.pin else None) as server:
        def on_start():
            marks["cpu0"] = read_cpu_seconds(server.pid)
            marks["minflt0"] = read_minor_faults(server.pid)
            marks["t0"] = time.perf_counter()

        def on_stop():
            marks["t1"] = time.perf_counter()
            marks["cpu1"] = read_cpu_seconds(server.pid)
            marks["minflt1"] = read_minor_faults(server.pid)

        family, address = server.target()
        if args.connections:
            result = many.run(family, address, cell["msize"], args.connections, args.duration, args.warmup,
                              on_start=on_start, on_stop=on_stop)
        else:
            result = client.run(family, address, cell["msize"], args.concurrency,
                                args.duration, args.warmup, args.max_requests,
                                on_start=on_start, on_stop=on_stop,
                                cafile=args.tls_files[0] if args.tls_files else None)
    if server.exit_code != 0:
        record["server_exit"] = server.exit_code

    user, ticked_system, total = (end - start for start, end in zip(marks["cpu0"], marks["cpu1"]))
    window = marks["t1"] - marks["t0"]
    record.update(
        requests=result["requests"],
        rps=result["rps"],
        latency_us=result["latency_us"],
        window_s=window,
        server_user_s=user,
        server_sys_s=total - user,   # the precise total minus the ticked user time
        server_ticked_sys_s=ticked_system,
        server_cpu_util=total / window,
        cpu_us_per_req=total * 1e6 / result["requests"],
        minflt_per_req=(marks["minflt1"] - marks["minflt0"]) / result["requests"],
    )
    return record


def _run_one(spec: str, cell: dict, rnd: int, args, workdir: str, progress: dict) -> dict:
    """measure() with its progress line; a failure becomes a record with "error"."""
    progress["done"] += 1
    label = (f"[{progress['done']}/{progress['total']}] round {rnd + 1} {cell['transport']} "
             f"{cell['mode']} {cell['msize']} {spec}")
    try:
        record = measure(spec, cell, args, workdir)
    except (client.EchoError, many.ManyClientError, ServerError, OSError, ValueError) as exc:
        record = dict(cell, loop=spec, error=f"{type(exc).__name__}: {exc}")
        log(f"{label}: FAILED: {record['error']}")
    else:
        log(f"{label}: {record['rps']:,.0f} req/s, {record['cpu_us_per_req']:.1f} us CPU/req "
            f"({record['server_user_s'] * 1e6 / record['requests']:.2f} user)")
    record["round"] = rnd + 1
    return record


def rotated(items, shift: int) -> list:
    shift %= len(items)
    return list(items[shift:]) + list(items[:shift])


def cell_specs(args, cell) -> list:
    """The servers a cell runs: every loop, and the floor in the first mode's cell of each transport and size
    (the floor has no modes). With --paired the floor runs before every loop instead (run_matrix)."""
    loops = [spec for spec in args.loops if spec != PY_FLOOR or cell["mode"] in PY_FLOOR_MODES]
    if args.floor and not args.paired and cell["mode"] == args.modes[0]:
        return loops + [FLOOR]
    return loops


def run_matrix(args) -> list:
    cells = [{"transport": t, "mode": m, "msize": s}
             for t in args.transports for m in args.modes for s in args.sizes]
    if args.floor:
        build_floor()
    if PY_FLOOR in args.loops:
        build_python_floor()
    if args.connections:
        many.build()
    total = args.rounds * sum(len(cell_specs(args, cell)) * (2 if args.paired else 1) for cell in cells)
    estimate = total * (args.duration + args.warmup + 0.6)
    when = f"{estimate:.0f} s" if estimate < 120 else f"{estimate / 60:.0f} min"
    floor = " (each after a floor run)" if args.paired else " (+ the floor)" if args.floor else ""
    log(f"{len(cells)} cells x {len(args.loops)} loops{floor} x {args.rounds} rounds = "
        f"{total} runs, about {when}")
    if args.pin:
        # The client processes (forked by client.py, or many_client) inherit run.py's CPUs.
        os.sched_setaffinity(0, args.pin[1])
        log(f"pinned: servers on CPUs {sorted(args.pin[0])}, clients on {sorted(args.pin[1])}")
    records = []
    workdir = tempfile.mkdtemp(prefix="zloop-echo-")
    try:
        args.tls_files = _tlscert.make(workdir) if args.tls else None
        progress = {"done": 0, "total": total}
        for rnd in range(args.rounds):
            for index, cell in enumerate(cells):
                for spec in rotated(cell_specs(args, cell), rnd + index):
                    if args.paired:
                        floor_record = _run_one(FLOOR, cell, rnd, args, workdir, progress)
                        floor_record["paired_with"] = spec
                        records.append(floor_record)
                    record = _run_one(spec, cell, rnd, args, workdir, progress)
                    if args.paired and "error" not in floor_record and "error" not in record:
                        record["paired_floor_us"] = floor_record["cpu_us_per_req"]
                    records.append(record)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return records


# --- summary ------------------------------------------------------------------

def _median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def _loop_stats(runs: list) -> dict:
    """Medians over the rounds of one loop in one cell."""
    ok = [r for r in runs if "error" not in r]
    paired = [r["cpu_us_per_req"] - r["paired_floor_us"] for r in ok if "paired_floor_us" in r]
    return {
        "rounds_ok": len(ok),
        "errors": [r["error"] for r in runs if "error" in r],
        "rps": _median(r["rps"] for r in ok),
        "cpu_us_per_req": _median(r["cpu_us_per_req"] for r in ok),
        "cpu_spread": _spread([r["cpu_us_per_req"] for r in ok]),
        "user_us_per_req": _median(r["server_user_s"] * 1e6 / r["requests"] for r in ok),
        "sys_us_per_req": _median(r["server_sys_s"] * 1e6 / r["requests"] for r in ok),
        # --paired: the loop minus the floor run right before it, per round; the median and range of those.
        "paired_above_floor_us": _median(paired),
        "paired_above_floor_range": [min(paired), max(paired)] if paired else None,
        "server_cpu_util": _median(r["server_cpu_util"] for r in ok),
        "minflt_per_req": _median(r.get("minflt_per_req") for r in ok),
        "p50_us": _median(r["latency_us"].get("p50") for r in ok),
        "p99_us": _median(r["latency_us"].get("p99") for r in ok),
    }


def summarize(records: list, loops: list) -> list:
    """One entry per cell: per loop medians over rounds, ratios to uvloop, the floor of the cell's transport and
    size, and each loop's CPU per request above it (and that as a ratio to uvloop's)."""
    cells, floors = {}, {}
    for rec in records:
        if rec["loop"] == FLOOR:
            floors.setdefault((rec["transport"], rec["msize"]), []).append(rec)
            continue
        key = (rec["transport"], rec["mode"], rec["msize"])
        cells.setdefault(key, {}).setdefault(rec["loop"], []).append(rec)
    summary = []
    for (transport, mode, msize), by_loop in cells.items():
        entry = {"transport": transport, "mode": mode, "msize": msize, "loops": {}}
        floor_runs = floors.get((transport, msize))
        entry["floor"] = _loop_stats(floor_runs) if floor_runs else None
        floor_cpu = entry["floor"]["cpu_us_per_req"] if entry["floor"] else None
        for spec in loops:
            if spec == PY_FLOOR and spec not in by_loop:
                continue   # a mode it has no server for
            entry["loops"][spec] = stats = _loop_stats(by_loop.get(spec, []))
            above = stats["cpu_us_per_req"] is not None and floor_cpu is not None
            stats["above_floor_us"] = stats["cpu_us_per_req"] - floor_cpu if above else None
            if stats["paired_above_floor_us"] is not None:
                stats["above_floor_us"] = stats["paired_above_floor_us"]
        base = entry["loops"].get(BASELINE, {})
        for stats in entry["loops"].values():
            stats["rps_vs_uvloop"] = _ratio(stats["rps"], base.get("rps"))
            stats["cpu_vs_uvloop"] = _ratio(stats["cpu_us_per_req"], base.get("cpu_us_per_req"))
            # Only against a positive margin: at or below the floor (noise) a ratio means nothing.
            margin = base.get("above_floor_us")
            stats["above_floor_vs_uvloop"] = _ratio(stats["above_floor_us"], margin) if margin and margin > 0 else None
        summary.append(entry)
    return summary


def _spread(values):
    """(max - min) / median of a loop's rounds in one cell: how far apart the rounds were (0.1 = 10%)."""
    return (max(values) - min(values)) / statistics.median(values) if len(values) > 1 else None


def _ratio(value, base):
    return value / base if value is not None and base else None


def format_table(summary: list, tls: bool = False) -> str:
    """A line per cell and loop (the floor first, where measured): req/s, CPU us per request, CPU above the
    floor, each with its ratio to uvloop, server CPU utilisation, latency."""
    header = ("TLS echo (every connection over TLS)\n" if tls else "") + (f"{'transport':<9} {'mode':<8} {'msize':>6}  {'loop':<14} {'req/s':>9} "
              f"{'vs uv':>6} {'cpu us/req':>10} {'vs uv':>6} {'user':>5} {'sys':>5} {'spread':>6} "
              f"{'>floor':>7} {'vs uv':>6} {'srv cpu':>7} {'flt/req':>7} "
              f"{'p50 us':>7} {'p99 us':>7}")
    lines = [header, "-" * len(header.splitlines()[-1])]
    for entry in summary:
        rows = list(entry["loops"].items())
        if entry.get("floor"):
            rows.insert(0, ("floor (C)", entry["floor"]))
        for spec, s in rows:
            lines.append(f"{entry['transport']:<9} {entry['mode']:<8} {entry['msize']:>6}  "
                         f"{spec:<14} {_table_row(s)}")
        lines.append("")
    return "\n".join(lines)


def _table_row(s: dict) -> str:
    if s["rps"] is None:
        errors = s["errors"] or ["no run"]
        more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
        return f"FAILED: {errors[0]}{more}"
    above = s.get("above_floor_us")
    return (f"{s['rps']:>9,.0f} {_fmt(s.get('rps_vs_uvloop'), 'x'):>6} "
            f"{s['cpu_us_per_req']:>10.1f} {_fmt(s.get('cpu_vs_uvloop'), 'x'):>6} "
            f"{s['user_us_per_req']:>5.2f} {s['sys_us_per_req']:>5.1f} {_fmt_percent(s.get('cpu_spread')):>6} "
            f"{'-' if above is None else f'{above:.1f}':>7} {_fmt(s.get('above_floor_vs_uvloop'), 'x'):>6} "
            f"{s['server_cpu_util'] * 100:>6.0f}% {_fmt(s.get('minflt_per_req')):>7} "
            f"{_fmt_us(s['p50_us']):>7} {_fmt_us(s['p99_us']):>7}")


def _fmt_percent(value):
    return "-" if value is None else f"{value * 100:.0f}%"


def _fmt_us(value):
    return "-" if value is None else f"{value:.0f}"   # none in the many-connections mode (no per-request clock)


def _fmt(value, suffix=""):
    return "-" if value is None else f"{value:.2f}{suffix}"


def machine_info() -> dict:
    info = {
        "nproc": os.cpu_count(),
        "cpu_model": _harness.cpu_model() or platform.processor() or "unknown",
        "kernel": platform.release(),
        "platform": platform.platform(),
        "loadavg_at_end": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }
    if hasattr(os, "sched_getaffinity"):
        info["usable_cpus"] = len(os.sched_getaffinity(0))
    versions = {name: value for name, value in _loops.versions().items() if value is not None}
    info.update(python=versions.pop("python"),
                python_implementation=platform.python_implementation(),
                python_build=" ".join(platform.python_build()),
                python_executable=sys.executable)
    info.update(versions)
    return info


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- command line ---------------------------------------------------------------

def _cpu_list(text: str) -> set:
    """'0', '1-3', '0,2' -> a set of CPU numbers."""
    cpus = set()
    for part in text.split(","):
        first, _, last = part.partition("-")
        cpus.update(range(int(first), int(last or first) + 1))
    return cpus


def _cpu_split(text: str):
    """--pin SERVER:CLIENTS -> (server CPUs, client CPUs), disjoint."""
    try:
        server, clients = (_cpu_list(side) for side in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected SERVER:CLIENTS CPU lists such as 0:1, not {text!r}") from None
    if not server or not clients or server & clients:
        raise argparse.ArgumentTypeError(f"{text!r}: the server's and the clients' CPUs must be disjoint")
    return server, clients


def _csv(kind=str):
    return lambda text: [kind(item) for item in text.split(",") if item]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="--quick: 1 KiB, tcp, 2 rounds of 1 s, writes echo-quick.{json,svg}; "
               "explicit flags override it.")
    parser.add_argument("--loops",
                        help="comma list of asyncio, uvloop, zloop (its default backend), "
                             "zloop:<backend>, and the peers rloop, zloop-zig, uvloop@3.12 "
                             "(bench/peers.sh) (default: all of them that are available)")
    parser.add_argument("--no-floor", dest="floor", action="store_false",
                        help="do not measure the bare C epoll server (the floor)")
    parser.add_argument("--python-floor", action="store_true",
                        help=f"also measure the Python floor ({PY_FLOOR}: the floor's C loop inside server.py "
                             f"calling its protocols; modes {','.join(PY_FLOOR_MODES)}) as a loop")
    parser.add_argument("--modes", type=_csv(), help=f"default {','.join(MODES)}")
    parser.add_argument("--sizes", type=_csv(int),
                        help=f"message sizes in bytes, default {','.join(map(str, SIZES))}")
    parser.add_argument("--transports", type=_csv(), help=f"default {','.join(TRANSPORTS)}")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 3)")
    parser.add_argument("--duration", type=float, help="measured seconds per run (default 3)")
    parser.add_argument("--warmup", type=float, help="client warm-up seconds (default 0.5)")
    parser.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY,
                        help=f"client processes, one connection each (default "
                             f"{DEFAULT_CONCURRENCY}: the machine has 2 cores shared "
                             "by clients and server)")
    parser.add_argument("--connections", type=int, default=0,
                        help="many-connections mode: one C client (many_client.c) with this many lock-step "
                             "connections instead of --concurrency processes (e.g. 64, 256)")
    parser.add_argument("--max-requests", type=int, default=5_000_000,
                        help="cap on measured requests per run")
    parser.add_argument("--pin", nargs="?", const=DEFAULT_PIN, type=_cpu_split, metavar="SERVER:CLIENTS",
                        help=f"run every server (each loop and the floor) on the CPUs SERVER and the clients on "
                             f"CLIENTS, e.g. 0:1 or 0:1-3 (bare --pin: {DEFAULT_PIN}); steadier figures on a "
                             "small shared machine (bench/echo/README.md)")
    parser.add_argument("--paired", action="store_true",
                        help="measure the floor right before every loop run, in the same cell and round, and "
                             "report each loop's CPU above the floor as the median of those per-round differences")
    parser.add_argument("--quick", action="store_true", help="small, fast matrix")
    parser.add_argument("--tls", action="store_true",
                        help=f"every connection over TLS: modes {','.join(TLS_MODES)}, tcp, no floor, loops "
                             f"without {','.join(NO_TLS_LOOPS)}; writes echo-tls.{{json,svg}}")
    parser.add_argument("--json", help="result file (default bench/results/echo.json)")
    parser.add_argument("--svg", help="chart file (default bench/results/echo.svg)")
    parser.add_argument("--no-chart", action="store_true", help="do not write the chart")
    args = parser.parse_args(argv)

    quick, tls = args.quick, args.tls
    name = "echo" + ("-tls" if tls else "") + ("-quick" if quick else "")
    if tls:
        args.floor = False   # the bare C server speaks no TLS
    defaults = {
        "modes": list(TLS_MODES if tls else MODES),
        "sizes": [1024] if quick else list(SIZES),
        "transports": ["tcp"] if quick or tls else list(TRANSPORTS),
        "rounds": 2 if quick else 3,
        "duration": 1.0 if quick else 3.0,
        "warmup": 0.3 if quick else 0.5,
        "json": os.path.join(RESULTS, name + ".json"),
        "svg": os.path.join(RESULTS, name + ".svg"),
    }
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    _validate(parser, args)
    return args


def _validate(parser, args) -> None:
    asked = args.loops
    try:
        args.loops = _loops.select(args.loops, expand_zloop=False, peers=True)
    except ValueError as exc:
        parser.error(str(exc))
    if args.tls:
        _validate_tls(parser, args, asked)
    for mode in args.modes:
        if mode not in MODES:
            parser.error(f"unknown mode {mode!r} (choose from {', '.join(MODES)})")
    for transport in args.transports:
        if transport not in TRANSPORTS:
            parser.error(f"unknown transport {transport!r} (tcp, unix)")
    if any(size < 8 or size > 16 * 1024 * 1024 for size in args.sizes):
        parser.error("message sizes must be between 8 bytes and 16 MiB")
    if not 0 < args.duration <= client.MAX_DURATION:
        parser.error(f"--duration must be in (0, {client.MAX_DURATION:.0f}]")
    if not 1 <= args.rounds <= 100 or not 1 <= args.concurrency <= 256:
        parser.error("--rounds must be 1..100 and --concurrency 1..256")
    if not 0 <= args.connections <= 4096:
        parser.error("--connections must be 0 (the 3-process mode) .. 4096")
    if not os.path.exists("/proc/self/stat"):
        parser.error("server CPU is read from /proc/PID/stat: Linux only")
    if args.python_floor:
        if args.tls:
            parser.error("--python-floor: the Python floor speaks no TLS")
        args.loops.append(PY_FLOOR)
    if args.paired and not args.floor:
        parser.error("--paired measures the floor: not with --no-floor or --tls")
    if args.pin:
        usable = os.sched_getaffinity(0)
        if not (args.pin[0] | args.pin[1]) <= usable:
            parser.error(f"--pin: CPUs {sorted((args.pin[0] | args.pin[1]) - usable)} are not usable here "
                         f"(usable: {sorted(usable)})")


def _validate_tls(parser, args, asked) -> None:
    """--tls: no sock mode, no many-connections client, no loop without TLS (left out of the default set with a
    note, an error when asked for by name)."""
    if "sock" in args.modes:
        parser.error(f"--tls: sock mode has no TLS (modes: {', '.join(TLS_MODES)})")
    if args.connections:
        parser.error("--tls: the many-connections client (many_client.c) speaks no TLS")
    without = [spec for spec in args.loops if spec in NO_TLS_LOOPS]
    if without and asked:
        parser.error(f"--tls: {', '.join(without)} has no TLS (create_server(ssl=...) raises NotImplementedError)")
    if without:
        log(f"--tls: leaving out {', '.join(without)} (no TLS)")
        args.loops = [spec for spec in args.loops if spec not in NO_TLS_LOOPS]


def main(argv=None) -> int:
    args = parse_args(argv)
    started = datetime.datetime.now(datetime.timezone.utc)
    load_at_start = os.getloadavg() if hasattr(os, "getloadavg") else None
    records = run_matrix(args)
    summary = summarize(records, args.loops)
    print(format_table(summary, args.tls))

    report = {
        "benchmark": "echo",
        "started_utc": started.isoformat(timespec="seconds"),
        "machine": dict(machine_info(), loadavg_at_start=load_at_start),
        "settings": {name: getattr(args, name) for name in
                     ("loops", "floor", "tls", "modes", "sizes", "transports", "rounds", "duration",
                      "warmup", "concurrency", "connections", "max_requests", "paired")},
        "pin": {"server_cpus": sorted(args.pin[0]), "client_cpus": sorted(args.pin[1])} if args.pin else None,
        "baseline": BASELINE,
        "cells": summary,
        "runs": records,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(report, f, indent=1)
        f.write("\n")
    log(f"wrote {args.json}")
    if not args.no_chart:
        os.makedirs(os.path.dirname(os.path.abspath(args.svg)), exist_ok=True)
        chart.write_svg(report, args.svg)
        log(f"wrote {args.svg}")

    failures = sum(1 for rec in records if "error" in rec)
    unclean = sum(1 for rec in records if "server_exit" in rec)
    if unclean:
        log(f"warning: {unclean} server(s) did not exit with status 0 on SIGTERM")
    if failures:
        log(f"{failures} of {len(records)} runs FAILED (see 'errors' in the JSON)")
    # A peer that cannot run a cell (the Zig zloop in sock mode, rloop without Unix servers) is reported, not fatal;
    # a zloop run that fails is.
    own_failures = sum(1 for rec in records if "error" in rec and str(rec.get("loop", "")).startswith("zloop:"))
    return 1 if own_failures else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        log("interrupted: servers stopped, nothing written")
        sys.exit(130)
