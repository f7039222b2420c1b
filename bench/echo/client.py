#!/usr/bin/env python3
"""Lock-step echo load generator for the echo benchmark.

`--concurrency` worker processes each open one connection (plain blocking
socket, TCP_NODELAY) and loop: send one `--msize`-byte message, read until the
whole message has come back, repeat.  Blocking sockets in separate processes
keep the client cheap and simple, so the server is what gets measured.

Every reply is checked: the client reads exactly the message's length, and
compares the reply byte for byte with the request, whose first 8 bytes carry
the request's sequence number (a memcmp: ~2 us for 100 KiB, far below one
round trip).  A server that drops, duplicates, delays forever or corrupts data
makes the run fail instead of producing a figure.

With --cafile (run.py --tls) every connection speaks TLS: the socket is
wrapped after connect() with a client context that trusts that certificate
and checks the server's name (localhost), the handshake happens before the
warm-up, and the client pays for its own encryption as the server does.

Phases: connect, warm up (`--warmup` s), wait for all workers, then measure
for `--duration` seconds (also capped at `--max-requests` in total).  The
command prints one JSON object: requests, req/s, latency percentiles (us).
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import queue
import socket
import ssl
import struct
import sys
import time
from array import array

MAX_DURATION = 600.0       # seconds; hard bound on one measurement
IO_TIMEOUT = 10.0          # seconds; a stuck server fails the run
_SEQ = struct.Struct("<Q")
TLS_HOSTNAME = "localhost"   # the name the benchmark certificate carries (bench/_tlscert.py)
# What a blocking read or write raises when SO_RCVTIMEO / SO_SNDTIMEO expires, plain or TLS.
_TIMED_OUT = (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError)


class EchoError(RuntimeError):
    """The server misbehaved or the run could not complete."""


# --- address helpers --------------------------------------------------------

def parse_target(addr: str = None, unix: str = None):
    """Return (family, address) for --addr HOST:PORT or --unix PATH."""
    if unix:
        return socket.AF_UNIX, unix
    host, _, port = addr.rpartition(":")
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return family, (host, int(port))


def _connect(family, address, cafile=None) -> socket.socket:
    """A connected blocking socket; with cafile, a TLS socket whose handshake is done."""
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        if family != socket.AF_UNIX:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # Kernel-side timeouts keep the socket in plain blocking mode (no
        # poll() before each call, unlike settimeout) yet never hang forever.
        timeval = struct.pack("ll", int(IO_TIMEOUT), 0)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval)
        sock.connect(address)
        if cafile:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.load_verify_locations(cafile)
            sock = context.wrap_socket(sock, server_hostname=TLS_HOSTNAME)   # handshakes here
    except BaseException:
        sock.close()
        raise
    return sock


# --- one worker process -----------------------------------------------------

def _message(msize: int, worker: int) -> bytearray:
    """A recognisable per-worker byte pattern of length msize."""
    unit = bytes((i + 37 * worker) % 256 for i in range(256))
    return bytearray((unit * (msize // 256 + 1))[:msize])


class _Conversation:
    """Lock-step request/reply on one connection, checking every reply."""

    def __init__(self, sock: socket.socket, msize: int, worker: int):
        self.sock = sock
        self.msize = msize
        self.message = _message(msize, worker)
        self.reply = bytearray(msize)
        self.view = memoryview(self.reply)
        self.seq = 0

    def roundtrip(self) -> None:
        seq = self.seq
        _SEQ.pack_into(self.message, 0, seq)
        try:
            self.sock.sendall(self.message)
        except _TIMED_OUT:  # SO_SNDTIMEO expired
            raise EchoError(f"request {seq}: server stopped reading "
                            f"for {IO_TIMEOUT:.0f} s") from None
        self._receive_reply()
        if self.reply != self.message:
            raise EchoError(self._describe_mismatch())
        self.seq = seq + 1

    def _describe_mismatch(self) -> str:
        seq, got = self.seq, _SEQ.unpack_from(self.reply, 0)[0]
        if got != seq:
            return f"reply {seq}: carries sequence number {got} (stale, extra or lost bytes)"
        first = next(i for i, (a, b) in enumerate(zip(self.reply, self.message)) if a != b)
        return f"reply {seq}: differs from the request at byte {first}"

    def _receive_reply(self) -> None:
        # Ask for exactly the missing bytes, so extra bytes sent by the
        # server show up as a bad sequence number in the next reply.
        got, msize, recv_into, view = 0, self.msize, self.sock.recv_into, self.view
        while got < msize:
            try:
                n = recv_into(view[got:], msize - got)
            except _TIMED_OUT:  # SO_RCVTIMEO expired
                raise EchoError(f"no reply within {IO_TIMEOUT:.0f} s "
                                f"({got}/{msize} bytes received)") from None
            if n == 0:
                raise EchoError(f"server closed the connection after {got}/{msize} bytes")
            got += n


def _worker(index, family, address, msize, warmup, duration, max_requests,
            messages, go, finished, cafile):
    """Worker process body: connect, warm up, measure, report, wait."""
    sock = None
    try:
        sock = _connect(family, address, cafile)
        talk = _Conversation(sock, msize, index)
        warm_end = time.perf_counter() + warmup
        talk.roundtrip()
        while time.perf_counter() < warm_end:
            talk.roundtrip()
        messages.put(("ready", index, None))
        if not go.wait(MAX_DURATION):
            return
        messages.put(("result", index, _measure(talk, duration, max_requests)))
        finished.wait(MAX_DURATION)
    except EchoError as exc:
        messages.put(("error", index, str(exc)))
    except BaseException as exc:  # report everything, the parent decides
        messages.put(("error", index, f"{type(exc).__name__}: {exc}"))
    finally:
        if sock is not None:
            sock.close()


def _measure(talk: _Conversation, duration: float, max_requests: int) -> dict:
    clock = time.perf_counter_ns
    latencies = array("q")
    record = latencies.append
    roundtrip = talk.roundtrip
    start = clock()
    deadline = start + int(duration * 1e9)
    now = start
    while now < deadline and len(latencies) < max_requests:
        roundtrip()
        end = clock()
        record(end - now)
        now = end
    return {"requests": len(latencies), "elapsed": (now - start) / 1e9,
            "latencies": latencies.tobytes()}


# --- coordinator --------------------------------------------------------------

def _mp_context():
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else None)


def _collect(messages, kind: str, count: int, timeout: float, procs) -> dict:
    """Wait for `count` messages of `kind`; raise on any worker error or death."""
    found = {}
    deadline = time.monotonic() + timeout
    while len(found) < count:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise EchoError(f"timed out waiting for workers ({kind}: {len(found)}/{count})")
        try:
            what, index, payload = messages.get(timeout=min(remaining, 0.5))
        except queue.Empty:
            dead = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
            if dead:
                raise EchoError(f"worker process died (exit codes {dead})")
            continue
        if what == "error":
            raise EchoError(f"worker {index}: {payload}")
        if what == kind:
            found[index] = payload
    return found


def _percentiles(latencies: array) -> dict:
    if not latencies:
        return {}
    ordered = sorted(latencies)

    def rank(p):  # nearest-rank percentile, in microseconds
        return ordered[min(len(ordered) - 1, max(0, math.ceil(p / 100 * len(ordered)) - 1))] / 1e3

    return {"p50": rank(50), "p90": rank(90), "p99": rank(99), "p99.9": rank(99.9),
            "max": ordered[-1] / 1e3, "mean": sum(ordered) / len(ordered) / 1e3}


def run(family, address, msize: int, concurrency: int = 3, duration: float = 3.0,
        warmup: float = 0.5, max_requests: int = 5_000_000,
        on_start=None, on_stop=None, cafile=None) -> dict:
    """Run one measurement against a listening echo server; return a summary.

    `on_start` is called right before the measured window opens (all workers
    connected and warmed up) and `on_stop` right after every worker has
    finished it, while the connections are still open: a caller can sample
    the server's CPU time there to cover exactly the measured requests.
    With `cafile` the connections speak TLS and trust that certificate.
    """
    if msize < _SEQ.size:
        raise ValueError(f"msize must be at least {_SEQ.size} bytes")
    if not 0 < duration <= MAX_DURATION:
        raise ValueError(f"duration must be in (0, {MAX_DURATION}] seconds")
    ctx = _mp_context()
    messages, go, finished = ctx.Queue(), ctx.Event(), ctx.Event()
    per_worker = max(1, max_requests // concurrency)
    procs = [ctx.Process(target=_worker, daemon=True,
                         args=(i, family, address, msize, warmup, duration,
                               per_worker, messages, go, finished, cafile))
             for i in range(concurrency)]
    completed = False
    for proc in procs:
        proc.start()
    try:
        _collect(messages, "ready", concurrency, warmup + IO_TIMEOUT + 5, procs)
        if on_start is not None:
            on_start()
        go.set()
        results = _collect(messages, "result", concurrency, duration + IO_TIMEOUT + 5, procs)
        if on_stop is not None:
            on_stop()
        completed = True
    finally:
        _stop_workers(procs, finished, graceful=completed)
    return _summarize(results, msize, concurrency, duration)


def _stop_workers(procs, finished, graceful: bool) -> None:
    """Let workers close their sockets and exit; terminate them on failure
    (a worker with unread results queued would otherwise block at exit)."""
    finished.set()
    for proc in procs:
        if graceful:
            proc.join(timeout=5)
        if proc.is_alive():
            proc.terminate()
        proc.join(timeout=2)


def _summarize(results: dict, msize: int, concurrency: int, duration: float) -> dict:
    latencies = array("q")
    for result in results.values():
        latencies.frombytes(result["latencies"])
    requests = sum(r["requests"] for r in results.values())
    # Each worker's own rate over its own window, summed across workers.
    rps = sum(r["requests"] / r["elapsed"] for r in results.values() if r["elapsed"] > 0)
    return {
        "requests": requests,
        "rps": rps,
        "elapsed": max(r["elapsed"] for r in results.values()),
        "msize": msize,
        "concurrency": concurrency,
        "duration": duration,
        "latency_us": _percentiles(latencies),
    }


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--addr", default="127.0.0.1:25000", help="server HOST:PORT")
    where.add_argument("--unix", metavar="PATH", help="server unix socket path")
    parser.add_argument("--msize", type=int, default=1024, help="message size in bytes")
    parser.add_argument("--concurrency", type=int, default=3,
                        help="worker processes, one connection each (default 3: "
                             "on a 2-core machine more clients only steal CPU "
                             "from the server)")
    parser.add_argument("--duration", type=float, default=3.0,
                        help=f"measured seconds (at most {MAX_DURATION:.0f})")
    parser.add_argument("--warmup", type=float, default=0.5, help="warm-up seconds")
    parser.add_argument("--max-requests", type=int, default=5_000_000,
                        help="cap on measured requests, all workers together")
    parser.add_argument("--cafile", help="speak TLS, trusting this certificate (PEM); the server must be "
                                         "server.py --certfile/--keyfile")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    family, address = parse_target(args.addr, args.unix)
    try:
        summary = run(family, address, args.msize, args.concurrency, args.duration,
                      args.warmup, args.max_requests, cafile=args.cafile)
    except (EchoError, OSError, ValueError) as exc:
        print(f"client: {exc}", file=sys.stderr)
        return 1
    json.dump(summary, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
