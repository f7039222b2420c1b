#!/usr/bin/env python3
"""System calls per request of an echo server: the other half of the echo benchmark's CPU per request.

For each loop: start server.py, run the lock-step load (client.py's processes, or many_client.c with
--connections N), and count the server's system calls over exactly the measured window, all its threads:
with `perf stat -e raw_syscalls:sys_enter -p PID` (the default; a tracepoint count, cheap enough not to change
the server's batching), per system call with --per-call (`perf stat -e 'syscalls:sys_enter_*'`, as cheap), or
with `strace -c -f -p PID` (--strace: per system call too, but strace slows every call down, so the server
batches differently and the figures are for the breakdown, not the total).

    PYTHONPATH=python python3 bench/echo/syscalls.py --loops zloop:native,zloop:uring --mode proto \\
        --msize 1024 --connections 64
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time

import client
import many
import run as echo_run

import _tlscert  # noqa: E402  (bench/_tlscert.py: run.py puts bench/ on the path)

ATTACH_SECONDS = 0.3   # time given to perf/strace to attach before the window opens


def _start_counter(tool: str, pid: int, out: str) -> subprocess.Popen:
    if tool == "strace":
        command = ["strace", "-c", "-f", "-o", out, "-p", str(pid)]
    else:
        events = "syscalls:sys_enter_*" if tool == "perf-calls" else "raw_syscalls:sys_enter"
        command = ["perf", "stat", "-x", ",", "-e", events, "-o", out, "-p", str(pid)]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(ATTACH_SECONDS)
    return proc


def _stop_counter(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=30)


def _parse_perf(text: str) -> dict:
    for line in text.splitlines():
        fields = line.split(",")
        if len(fields) > 2 and fields[2] == "raw_syscalls:sys_enter":
            return {"total": int(fields[0])}
    raise ValueError(f"no raw_syscalls:sys_enter count in perf's output: {text!r}")


def _parse_perf_calls(text: str) -> dict:
    """perf stat over every syscalls:sys_enter_* tracepoint: {syscall: calls, ..., "total": calls}."""
    counts = {}
    for line in text.splitlines():
        fields = line.split(",")
        if len(fields) > 2 and fields[2].startswith("syscalls:sys_enter_") and fields[0].isdigit():
            if int(fields[0]):
                counts[fields[2][len("syscalls:sys_enter_"):]] = int(fields[0])
    if not counts:
        raise ValueError(f"no syscalls:sys_enter_* counts in perf's output: {text[:200]!r}")
    counts["total"] = sum(counts.values())
    return counts


def _parse_strace(text: str) -> dict:
    """strace -c's table: {syscall: calls, ..., "total": calls}."""
    counts = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 5 and fields[0].replace(".", "").isdigit() and fields[-1] != "total":
            counts[fields[-1]] = int(fields[3])
        elif fields and fields[-1] == "total":
            counts["total"] = int(fields[3])
    return counts


def measure(spec: str, args, workdir: str) -> dict:
    """One server under load with a counter attached for the measured window."""
    out = os.path.join(workdir, "count.txt")
    marks = {}
    with echo_run.EchoServer(spec, args.mode, "tcp", workdir, cpus=args.pin[0] if args.pin else None,
                             tls=args.tls_files) as server:
        def on_start():
            marks["counter"] = _start_counter(args.tool, server.pid, out)
            marks["minflt0"] = echo_run.read_minor_faults(server.pid)

        def on_stop():
            marks["minflt1"] = echo_run.read_minor_faults(server.pid)
            _stop_counter(marks["counter"])

        family, address = server.target()
        if args.connections:
            result = many.run(family, address, args.msize, args.connections, args.duration, args.warmup,
                              on_start=on_start, on_stop=on_stop)
        else:
            result = client.run(family, address, args.msize, args.concurrency, args.duration, args.warmup,
                                on_start=on_start, on_stop=on_stop,
                                cafile=args.tls_files[0] if args.tls_files else None)
    with open(out) as f:
        text = f.read()
    parse = {"strace": _parse_strace, "perf-calls": _parse_perf_calls, "perf": _parse_perf}[args.tool]
    counts = parse(text)
    # The counter runs from before the clients' go to after they stop: requests are the window's, syscalls
    # include the attach time's idle polls (a few, the server waits for the go).
    return {"loop": spec, "requests": result["requests"], "counts": counts,
            "per_request": {name: calls / result["requests"] for name, calls in counts.items()},
            "minflt_per_request": (marks["minflt1"] - marks["minflt0"]) / result["requests"]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--loops", default="zloop:native,zloop:uring")
    parser.add_argument("--mode", default="proto", choices=echo_run.MODES)
    parser.add_argument("--msize", type=int, default=1024)
    parser.add_argument("--concurrency", type=int, default=echo_run.DEFAULT_CONCURRENCY)
    parser.add_argument("--connections", type=int, default=0, help="many-connections mode (many_client.c)")
    parser.add_argument("--duration", type=float, default=2.0)
    parser.add_argument("--warmup", type=float, default=0.5)
    parser.add_argument("--rounds", type=int, default=1, help="interleaved rounds; each row is one run")
    parser.add_argument("--tls", action="store_true", help="every connection over TLS, as run.py --tls")
    parser.add_argument("--strace", dest="tool", action="store_const", const="strace", default="perf",
                        help="count per system call with strace -c -f (slows the server down)")
    parser.add_argument("--per-call", dest="tool", action="store_const", const="perf-calls",
                        help="count per system call with perf's syscalls:sys_enter_* tracepoints (as cheap as "
                             "the total: the server batches as it does unobserved)")
    parser.add_argument("--pin", nargs="?", const=echo_run.DEFAULT_PIN, type=echo_run._cpu_split,
                        metavar="SERVER:CLIENTS", help="as run.py --pin")
    args = parser.parse_args(argv)
    loops = [spec for spec in args.loops.split(",") if spec]
    if args.pin:
        os.sched_setaffinity(0, args.pin[1])   # the clients inherit it
    workdir = tempfile.mkdtemp(prefix="zloop-syscalls-")
    if args.tls and (args.mode == "sock" or args.connections):
        parser.error("--tls: sock mode and the many-connections client speak no TLS")
    args.tls_files = _tlscert.make(workdir) if args.tls else None
    load = f"{args.connections} connections" if args.connections else f"{args.concurrency} client processes"
    print(f"# {args.mode}{' TLS' if args.tls else ''} {args.msize} B, {load}, {args.duration} s, counted with {args.tool}")
    for rnd in range(args.rounds):
        for spec in echo_run.rotated(loops, rnd):
            row = measure(spec, args, workdir)
            per = row["per_request"]
            detail = "  ".join(f"{name} {value:.3f}" for name, value in
                               sorted(per.items(), key=lambda item: -item[1]) if name != "total")
            print(f"{spec:<14} {row['requests']:>9} req  {row['minflt_per_request']:.2f} minor faults/req  "
                  f"{per['total']:.3f} syscalls/req  {detail}".rstrip(),
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
