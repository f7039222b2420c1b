"""The echo benchmark's many-connections mode: many_client.c (one process, N connections in lock-step).

run.py --connections N measures with it instead of client.py's 3 processes: every round sends one message on
each of the N connections and waits for all N replies, so one loop iteration of the server carries many
requests. build() compiles the client with cc into bench/results/ on first use; run() has client.run's
interface (on_start/on_stop around the measured window, a summary dict).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.join(HERE, "many_client.c")
BINARY = os.path.join(os.path.dirname(HERE), "results", "many_client")
IO_TIMEOUT = 15.0   # seconds for each protocol line beyond the expected run time


class ManyClientError(RuntimeError):
    """The many-connections client failed: the server misbehaved or the run could not complete."""


def build() -> str:
    """The client's binary, compiled with cc when missing or older than its source."""
    if not (os.path.exists(BINARY) and os.path.getmtime(BINARY) >= os.path.getmtime(SOURCE)):
        os.makedirs(os.path.dirname(BINARY), exist_ok=True)
        cc = os.environ.get("CC", "cc")
        subprocess.run([cc, "-O2", "-std=c11", "-Wall", "-Wextra", "-o", BINARY, SOURCE], check=True, timeout=120)
    return BINARY


def _where(family, address) -> list:
    if family == socket.AF_UNIX:
        return ["--unix", address]
    return ["--addr", f"{address[0]}:{address[1]}"]


def _read_line(proc, prefix: str, timeout: float) -> str:
    """The client's next stdout line, which must start with prefix (the client is killed on failure)."""
    import selectors
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout):
            raise ManyClientError(f"no {prefix.strip()} line within {timeout:.0f} s")
    line = proc.stdout.readline()
    if not line.startswith(prefix):
        raise ManyClientError(f"client exited ({proc.poll()}) or said {line!r} instead of {prefix.strip()}")
    return line[len(prefix):]


def run(family, address, msize: int, connections: int, duration: float = 3.0, warmup: float = 0.5,
        on_start=None, on_stop=None) -> dict:
    """One measurement with `connections` lock-step connections; requests, req/s and rounds of the window."""
    command = [build(), *_where(family, address), "--connections", str(connections), "--msize", str(msize),
               "--warmup", str(warmup), "--duration", str(duration)]
    proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        _read_line(proc, "READY", warmup + IO_TIMEOUT)
        if on_start is not None:
            on_start()
        proc.stdin.write("go\n")
        proc.stdin.flush()
        result = json.loads(_read_line(proc, "RESULT ", duration + IO_TIMEOUT))
        if on_stop is not None:
            on_stop()
        proc.stdin.write("close\n")
        proc.stdin.flush()
        if proc.wait(timeout=IO_TIMEOUT) != 0:
            raise ManyClientError(f"client exited with status {proc.returncode}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdin.close()
        proc.stdout.close()
    return dict(result, latency_us={}, connections=connections)
