"""Scale: what a loop costs per connection and per timer, from 1,000 connections up to the fd limit.

Three measurements, each loop's server (or timer child) in a fresh process run by the loop's own interpreter
(peers from bench/peers.sh), the client in another process (this interpreter, plain blocking sockets), loopback
only; rounds outermost, the loop order rotated each round:

  hold     the server accepts W warm-up connections (2,000: see HOLD_WARM), then N more; each connection sends 100 bytes, gets them
           echoed and stays open, idle.  Between the W-th and the (W+N)-th echo the server reads its RSS
           (/proc/self/statm) and CPU (CLOCK_PROCESS_CPUTIME_ID): memory growth per connection and CPU per
           accept + first echo.  N = 1,000, 5,000 and the largest the fd limit allows (both processes raise
           their soft RLIMIT_NOFILE to the hard one).
  churn    connect, one 100-byte request echoed, client closes; M connections after W warm-up ones: server
           connections per second of server CPU (counted at connection_lost).
  timers   1,000,000 pending call_later(3600 + i * 1 us) kept in a list: RSS growth per timer (the list
           included), CPU ns per call_later; then cancel() every other one and run one loop iteration: CPU ns
           per cancelled timer.

The floor: scale_floor.c, a bare C epoll server doing only what hold and churn ask (accept4 until the backlog is
drained, epoll add, one recv, one send back, close at EOF; no Python), built with cc on first use and measured in
the same rounds as the loops (--no-floor leaves it out).  What a loop's server costs above it is the loop's.

The client connects in batches (--batch sockets: connect all, send all, read all), so the server sees bursts
as a busy server does.  A figure fails when a child fails, hangs past --time-limit or reports other work than it
was given (each echo is checked by the client, counts by the server).

    PYTHONPATH=python python3 bench/scale.py                  # every loop, 3 rounds; make bench-scale
    python3 bench/scale.py --loops uvloop,zloop:native --rows hold --sizes 1000,max --rounds 1
"""

import argparse
import asyncio
import gc
import json
import os
import resource
import selectors
import socket
import statistics
import subprocess
import sys
import time

import _loops

PAYLOAD = 100              # bytes each connection sends and gets back
WARM = 100                 # warm-up connections (churn) before the measured ones
# hold: warm-up connections before the measured ones.  A fresh interpreter's heap has free memory it already
# touched (start-up garbage): the first ~1,500 connections fill it without growing RSS (native, sampling RSS every
# 500 connections from 0: +532 B per connection, then ~640 from 1,500 on; 115 then ~720 with PYTHONMALLOC=malloc;
# uvloop 754 then ~1,250), so measured from 100 on, N = 1,000 read low for every loop.
HOLD_WARM = 2000
FD_MARGIN = 200            # fds the server and client keep for themselves besides the connections
CLIENT_GRACE = 30.0        # seconds the client may take past --time-limit to close its connections
ROWS = ("hold", "churn", "timers")
HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")
FLOOR = "floor"            # the spec of the bare C server (hold and churn only)
FLOOR_SOURCE = os.path.join(HERE, "scale_floor.c")
FLOOR_BINARY = os.path.join(RESULTS, "scale_floor")
PAGE = os.sysconf("SC_PAGE_SIZE")
# The client's connections come from this many loopback addresses (127.0.0.2, ...): from one, each connect() searches
# the ephemeral port range for a port free with that address, and with 19,700 of its 28,232 ports held that search
# was 79% of the client's CPU (perf), which slowed the client 4.6x per connection and changed what the server did.
CLIENT_SOURCES = 32
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)   # Linux: the port is picked at connect


def raise_fd_limit():
    """The soft fd limit raised to the hard one; returns it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def sample():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return {"rss": rss_bytes(), "cpu_ns": time.process_time_ns(), "user": r.ru_utime, "sys": r.ru_stime}


# ------------------------------------------------------------------ server child (the loop measured)

def serve(spec, mode, warm, n):
    """Echo server: print the port, count echoes (hold) or lost connections (churn), sample at warm and at
    warm + n, print the JSON figure and exit at once (the open connections are not the measurement)."""
    raise_fd_limit()
    loop = _loops.make_loop(spec)
    asyncio.set_event_loop(loop)
    count = 0
    samples = []

    def mark():
        nonlocal count
        count += 1
        if count == warm or count == warm + n:
            samples.append(sample())
        if count == warm + n:
            print(json.dumps({"count": count - warm, "base": samples[0], "end": samples[1]}), flush=True)
            os._exit(0)

    class Echo(asyncio.Protocol):
        __slots__ = ("transport", "received")

        def connection_made(self, transport):
            self.transport = transport
            self.received = 0

        def data_received(self, data):
            self.transport.write(data)
            before = self.received
            self.received += len(data)
            if mode == "hold" and before < PAYLOAD <= self.received:
                mark()

        def connection_lost(self, exc):
            if mode == "churn":
                mark()

    server = loop.run_until_complete(loop.create_server(Echo, "127.0.0.1", 0, backlog=1024))
    print(server.sockets[0].getsockname()[1], flush=True)
    loop.run_forever()


def timers(spec, n):
    """n pending timers: RSS and CPU of creating them, then of cancelling half and one iteration."""
    loop = _loops.make_loop(spec)
    fired = []

    def callback():
        fired.append(1)

    gc.collect()
    before = sample()
    handles = [loop.call_later(3600 + i * 1e-6, callback) for i in range(n)]
    created = sample()
    for i in range(0, n, 2):
        handles[i].cancel()
    loop.call_soon(loop.stop)
    loop.run_forever()
    cancelled = sample()
    if fired or len(handles) != n:
        raise SystemExit(f"timers: {len(fired)} timer(s) fired, {len(handles)} made of {n}")
    print(json.dumps({"count": n, "bytes_per_timer": (created["rss"] - before["rss"]) / n,
                      "call_later_ns": (created["cpu_ns"] - before["cpu_ns"]) / n,
                      "cancel_ns": (cancelled["cpu_ns"] - created["cpu_ns"]) / (n // 2)}), flush=True)
    os._exit(0)   # freeing a million handles is not measured


# ------------------------------------------------------------------ client child

def echo_once(sock, tag):
    message = tag.to_bytes(4, "big") * (PAYLOAD // 4)
    sock.sendall(message)
    return message


def read_exactly(sock, size):
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise SystemExit(f"client: connection closed after {len(data)} of {size} bytes")
        data += chunk
    return data


def client_socket(i):
    """A client socket bound to the i-th source address, its port left to connect()."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(30)
    if sys.platform == "linux":
        sock.setsockopt(socket.SOL_IP, IP_BIND_ADDRESS_NO_PORT, 1)
        sock.bind((f"127.0.0.{2 + i % CLIENT_SOURCES}", 0))
    return sock


def client_phase(port, count, batch, close, held):
    for start in range(0, count, batch):
        socks = []
        for i in range(min(batch, count - start)):
            sock = client_socket(start + i)
            socks.append(sock)
            sock.connect(("127.0.0.1", port))
        sent = [echo_once(sock, start + i) for i, sock in enumerate(socks)]
        for sock, message in zip(socks, sent):
            if read_exactly(sock, PAYLOAD) != message:
                raise SystemExit("client: the echo differs from what was sent")
        for sock in socks:
            if close:
                sock.close()
            else:
                held.append(sock)


def client(port, mode, warm, n, batch):
    raise_fd_limit()
    held = []
    client_phase(port, warm, batch, mode == "churn", held)
    time.sleep(0.3)   # the server's baseline is taken before the measured connections arrive
    client_phase(port, n, batch, mode == "churn", held)
    print(json.dumps({"connections": warm + n, "held": len(held)}), flush=True)
    # Held connections are reset, not closed: no TIME_WAIT left behind for the next figure.
    for sock in held:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        sock.close()


# ------------------------------------------------------------------ parent

class FigureError(Exception):
    pass


def read_line(proc, deadline):
    """One stdout line of proc, or FigureError past the deadline or at EOF."""
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise FigureError("timed out")
            if sel.select(left):
                line = proc.stdout.readline()
                if not line:
                    raise FigureError(f"exited ({proc.wait()}) without an answer")
                return line


def child_cmd(spec, *args):
    return [_loops.interpreter(spec), os.path.abspath(__file__), "--child", *map(str, args)]


def stop(proc):
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    proc.stdout.close()


def warm_of(mode):
    return HOLD_WARM if mode == "hold" else WARM


def server_cmd(spec, mode, n):
    """The server child measured: the loop's serve(), or the floor."""
    if spec == FLOOR:
        return [FLOOR_BINARY, mode, str(warm_of(mode)), str(n)], None
    return child_cmd(spec, "serve", spec, mode, warm_of(mode), n), _loops.child_env(spec)


def run_connections(spec, mode, n, batch, time_limit):
    deadline = time.monotonic() + time_limit
    cmd, env = server_cmd(spec, mode, n)
    server = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
    client_proc = None
    try:
        port = int(read_line(server, deadline))
        client_proc = subprocess.Popen(child_cmd("asyncio", "client", port, mode, warm_of(mode), n, batch),
                                       stdout=subprocess.PIPE, text=True)
        done = json.loads(read_line(client_proc, deadline))
        figure = json.loads(read_line(server, deadline))
        if done["connections"] != warm_of(mode) + n or figure["count"] != n:
            raise FigureError(f"did other work: client {done}, server counted {figure['count']} of {n}")
        cpu = figure["end"]["cpu_ns"] - figure["base"]["cpu_ns"]
        if mode == "churn":
            return {"conn_per_cpu_s": n / (cpu / 1e9)}
        return {"bytes_per_conn": (figure["end"]["rss"] - figure["base"]["rss"]) / n, "cpu_us": cpu / n / 1e3}
    finally:
        stop(server)
        if client_proc is not None:   # its answer is in: closing its sockets gets a grace of its own
            client_proc.wait(timeout=max(0.0, deadline - time.monotonic()) + CLIENT_GRACE)
            client_proc.stdout.close()


def run_timers(spec, n, time_limit):
    proc = subprocess.Popen(child_cmd(spec, "timers", spec, n), stdout=subprocess.PIPE, text=True,
                            env=_loops.child_env(spec))
    try:
        figure = json.loads(read_line(proc, time.monotonic() + time_limit))
        if figure["count"] != n:
            raise FigureError(f"made {figure['count']} timers, not {n}")
        return {k: figure[k] for k in ("bytes_per_timer", "call_later_ns", "cancel_ns")}
    finally:
        stop(proc)


def plan(args, max_n):
    rows = args.rows.split(",") if args.rows else list(ROWS)
    unknown = set(rows) - set(ROWS)
    if unknown:
        raise SystemExit(f"unknown rows: {', '.join(sorted(unknown))} (known: {', '.join(ROWS)})")
    figures = []
    if "hold" in rows:
        sizes = [max_n if s == "max" else int(s) for s in args.sizes.split(",")]
        if max(sizes) > max_n:
            raise SystemExit(f"--sizes: at most {max_n} connections fit under the fd limit")
        figures += [("hold", n) for n in sizes]
    if "churn" in rows:
        figures.append(("churn", args.churn))
    if "timers" in rows:
        figures.append(("timers", args.timers))
    return figures


def measure_all(specs, figures, args):
    series, failures = {}, []
    for r in range(args.rounds):
        order = specs[r % len(specs):] + specs[:r % len(specs)]
        for row, n in figures:
            for spec in order:
                if spec == FLOOR and row == "timers":
                    continue
                try:
                    if row == "timers":
                        value = run_timers(spec, n, args.time_limit)
                    else:
                        value = run_connections(spec, row, n, args.batch, args.time_limit)
                except (FigureError, ValueError, KeyError, subprocess.TimeoutExpired) as exc:
                    failures.append({"row": row, "n": n, "loop": spec, "round": r, "error": str(exc)})
                    print(f"  FAILED {row} n={n} {spec}: {exc}", file=sys.stderr)
                    continue
                series.setdefault(f"{row}/{n}", {}).setdefault(spec, []).append(value)
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    return series, failures


def medians(series):
    out = {}
    for key, per_loop in series.items():
        out[key] = {}
        for spec, values in per_loop.items():
            out[key][spec] = {field: {"median": statistics.median(v[field] for v in values),
                                      "min": min(v[field] for v in values), "max": max(v[field] for v in values),
                                      "rounds": len(values)} for field in values[0]}
    return out


FIELDS = [("bytes_per_conn", "server memory per connection (B)", "{:.0f}"),
          ("cpu_us", "server CPU per accept + first echo (us)", "{:.1f}"),
          ("conn_per_cpu_s", "churn: connections per second of server CPU", "{:.0f}"),
          ("bytes_per_timer", "memory per pending timer incl. the list (B)", "{:.0f}"),
          ("call_later_ns", "call_later (ns)", "{:.0f}"),
          ("cancel_ns", "cancel() half + one iteration, per cancelled timer (ns)", "{:.0f}")]


def print_tables(results, specs):
    width = max(len(s) for s in specs) + 2
    for key, per_loop in results.items():
        row, n = key.split("/")
        print(f"\n{row}, N = {int(n):,}")
        for field, title, fmt in FIELDS:
            cells = {s: per_loop[s][field] for s in specs if s in per_loop and field in per_loop[s]}
            if not cells:
                continue
            print(f"  {title}")
            for spec in specs:
                if spec in cells:
                    c = cells[spec]
                    print(f"    {spec:<{width}}{fmt.format(c['median']):>10}   "
                          f"({fmt.format(c['min'])}-{fmt.format(c['max'])})")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--loops", help="comma list of loop specs (bench/_loops.py); default all, peers included")
    p.add_argument("--rows", help="comma list of " + ", ".join(ROWS) + "; default all")
    p.add_argument("--sizes", default="1000,5000,max", help="hold: connection counts, 'max' = the fd limit's")
    p.add_argument("--churn", type=int, default=5000, help="churn: measured connections")
    p.add_argument("--timers", type=int, default=1_000_000, help="timers: pending timers")
    p.add_argument("--batch", type=int, default=100, help="client: connections opened together")
    p.add_argument("--no-floor", action="store_true", help="leave out the bare C server (scale_floor.c)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--time-limit", type=float, default=120.0, help="seconds one figure may take")
    p.add_argument("--json", default=os.path.join(RESULTS, "scale.json"))
    p.add_argument("--child", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        role, *rest = args.child
        if role == "serve":
            return serve(rest[0], rest[1], int(rest[2]), int(rest[3]))
        if role == "timers":
            return timers(rest[0], int(rest[1]))
        return client(int(rest[0]), rest[1], int(rest[2]), int(rest[3]), int(rest[4]))

    import _harness
    max_n = raise_fd_limit() - HOLD_WARM - FD_MARGIN
    specs = _loops.select(args.loops, peers=True)
    if not args.no_floor and {"hold", "churn"} & {row for row, _ in plan(args, max_n)}:
        _harness.build_c(FLOOR_SOURCE, FLOOR_BINARY)
        specs.append(FLOOR)
    figures = plan(args, max_n)
    started = time.monotonic()
    print(f"loops: {', '.join(specs)}; figures: {figures}; rounds: {args.rounds}", file=sys.stderr)
    series, failures = measure_all(specs, figures, args)
    results = medians(series)
    print_tables(results, specs)
    config = {"rows": [f"{row}/{n}" for row, n in figures], "rounds": args.rounds, "batch": args.batch,
              "warm": WARM, "hold_warm": HOLD_WARM, "payload": PAYLOAD, "fd_limit": raise_fd_limit()}
    return _harness.write_json(args.json, "scale", _harness.machine_info(), config, started, results, failures)


if __name__ == "__main__":
    sys.exit(main())
