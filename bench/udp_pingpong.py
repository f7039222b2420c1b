"""UDP ping-pong benchmark: asyncio vs uvloop vs zloop (every backend).

    python bench/udp_pingpong.py [--loops asyncio,uvloop,zloop] [--rows ...]
                                 [--rounds 5] [--quick] [--json PATH]

One round trip: the client sends a datagram, the echo side sends it back,
and only then does the client send the next one (lock-step, so nothing can be
dropped on loopback and a lost datagram would show as a hang). Rows:

    udp4_64      IPv4, 64-byte payload, both endpoints on the loop under test
    udp4_1k      IPv4, 1 KiB payload, both endpoints on the loop under test
    unix_64      Unix datagram sockets, 64 bytes, both endpoints on the loop
    udp4_64_ext  IPv4, 64 bytes, the echo side is a separate plain-socket
                 process: the figure is the client's cost only

Each figure (row x loop x round) is measured in its own fresh process
(``udp_pingpong.py --child ROW LOOPSPEC --n N``); rounds are outermost and the
loop order rotates every round. A child warms up with N/10 round trips, then
times N (CPU of the process via time.process_time_ns, and wall time), checks
that every datagram came back intact and in order, and prints one JSON line.
The report gives the median CPU time per round trip (min-max over rounds),
round trips per second from the median wall time, and ratios against uvloop
and asyncio. See bench/README.md.
"""

import argparse
import asyncio
import faulthandler
import gc
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import _loops

HERE = os.path.dirname(os.path.abspath(__file__))
CHILD_TIME_LIMIT = 60.0

# row -> (family, payload bytes, external echo process, round trips)
ROWS = {
    "udp4_64": ("ipv4", 64, False, 20000),
    "udp4_1k": ("ipv4", 1024, False, 20000),
    "unix_64": ("unix", 64, False, 20000),
    "udp4_64_ext": ("ipv4", 64, True, 10000),
}


class BenchError(Exception):
    """A child did not do the work it was asked to do."""


def check(ok, what):
    if not ok:
        raise BenchError(what)


# --------------------------------------------------------------- protocols

class EchoProtocol(asyncio.DatagramProtocol):
    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        self.transport.sendto(data, addr)


class PingProtocol(asyncio.DatagramProtocol):
    """Sends the payload again each time it comes back, until `count` round trips are done."""

    def __init__(self, payload):
        self.payload = payload
        self.transport = None
        self.done = None
        self.left = 0
        self.bad = 0

    def connection_made(self, transport):
        self.transport = transport

    def start(self, loop, count):
        self.done = loop.create_future()
        self.left = count
        self.transport.sendto(self.payload)
        return self.done

    def datagram_received(self, data, addr):
        if data != self.payload:
            self.bad += 1
        self.left -= 1
        if self.left:
            self.transport.sendto(self.payload)
        elif not self.done.done():
            self.done.set_result(None)

    def error_received(self, exc):
        if not self.done.done():
            self.done.set_exception(exc)


# --------------------------------------------------------------- the echo peer process

ECHO_PEER = r"""
import socket, sys
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind(("127.0.0.1", 0))
print(sock.getsockname()[1], flush=True)
while True:
    data, addr = sock.recvfrom(65536)
    if data == b"stop":
        break
    sock.sendto(data, addr)
"""


def start_echo_peer():
    proc = subprocess.Popen([sys.executable, "-c", ECHO_PEER], stdout=subprocess.PIPE, text=True)
    port = int(proc.stdout.readline())
    return proc, ("127.0.0.1", port)


def stop_echo_peer(proc, addr):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.sendto(b"stop", addr)
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# ------------------------------------------------------------- the child

async def open_endpoints(loop, family, external, directory):
    """(echo server transport or None, create_datagram_endpoint keywords for the client)."""
    if external:
        return None, {"remote_addr": None}
    if family == "unix":
        # Given sockets: uvloop's create_datagram_endpoint takes Unix datagram sockets only this way.
        server_sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        server_sock.bind(os.path.join(directory, "s"))
        client_sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        client_sock.bind(os.path.join(directory, "c"))
        client_sock.connect(os.path.join(directory, "s"))
        server, _ = await loop.create_datagram_endpoint(EchoProtocol, sock=server_sock)
        return server, {"sock": client_sock}
    server, _ = await loop.create_datagram_endpoint(EchoProtocol, local_addr=("127.0.0.1", 0))
    return server, {"remote_addr": server.get_extra_info("sockname")}


def run_child(row, spec, n, time_limit):
    """Measure one figure and print it as one JSON line."""
    faulthandler.dump_traceback_later(time_limit, exit=True)
    family, size, external, _ = ROWS[row]
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    loop = _loops.make_loop(spec)
    errors = []

    def on_error(loop, context):     # fail fast instead of hanging
        errors.append(f"{context.get('message')}: {context.get('exception')!r}")
        loop.stop()

    loop.set_exception_handler(on_error)
    peer = None
    directory = tempfile.mkdtemp(prefix="zlbench-")
    try:
        server, client_kwargs = loop.run_until_complete(open_endpoints(loop, family, external, directory))
        if external:
            peer, client_kwargs["remote_addr"] = start_echo_peer()
        client, proto = loop.run_until_complete(
            loop.create_datagram_endpoint(lambda: PingProtocol(payload), **client_kwargs))
        loop.run_until_complete(proto.start(loop, max(n // 10, 1)))     # warm-up
        gc.collect()
        wall0, cpu0 = time.perf_counter_ns(), time.process_time_ns()
        loop.run_until_complete(proto.start(loop, n))
        cpu_ns, wall_ns = time.process_time_ns() - cpu0, time.perf_counter_ns() - wall0
        check(proto.left == 0 and proto.bad == 0, f"{proto.left} left, {proto.bad} corrupted")
        client.close()
        if server is not None:
            server.close()
        loop.run_until_complete(asyncio.sleep(0))
    finally:
        if peer is not None:
            stop_echo_peer(peer, client_kwargs["remote_addr"])
        loop.close()
        for name in os.listdir(directory):
            os.unlink(os.path.join(directory, name))
        os.rmdir(directory)
        check(not errors, "error in the loop: " + "; ".join(errors[:3]))
    faulthandler.cancel_dump_traceback_later()
    print(json.dumps({"row": row, "loop": spec, "ops": n, "cpu_ns": cpu_ns, "wall_ns": wall_ns,
                      "loop_class": type(loop).__module__ + "." + type(loop).__qualname__}))


# ------------------------------------------------------------ the parent

def spawn(row, spec, n, time_limit):
    """Run one child; return its result dict or raise BenchError."""
    cmd = [sys.executable, os.path.abspath(__file__), "--child", row, spec, "--n", str(n),
           "--time-limit", str(time_limit)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=time_limit + 15)
    except subprocess.TimeoutExpired:
        raise BenchError(f"child killed after {time_limit + 15:.0f} s")
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines()
        hung = [line for line in lines if line.startswith("Timeout (")]
        raise BenchError(f"child exited {proc.returncode}:\n  " + "\n  ".join(hung + lines[-4:]))
    try:
        res = json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        raise BenchError(f"child printed no result: {proc.stdout[-300:]!r}")
    check(res["row"] == row and res["loop"] == spec and res["ops"] == n, f"child reported the wrong work: {res}")
    return res


def machine_info():
    info = {"nproc": os.cpu_count(), "kernel": " ".join(os.uname()[i] for i in (0, 2, 4)),
            "python": sys.version.replace("\n", " "), "loadavg_at_start": os.getloadavg(), "cpu_model": None}
    try:
        with open("/proc/cpuinfo") as f:
            info["cpu_model"] = next((line.split(":", 1)[1].strip() for line in f
                                      if line.startswith("model name")), None)
    except OSError:
        pass
    return info


def summarize(cpu, wall, n, failed):
    if not cpu:
        return {"n": n, "failed": failed, "median": None, "rt_per_s": None}
    wall_median = statistics.median(wall)
    return {"n": n, "failed": failed, "median": statistics.median(cpu), "min": min(cpu), "max": max(cpu),
            "wall_median": wall_median, "rt_per_s": round(1e9 / wall_median),
            "cpu_ns_per_rt": [round(x, 1) for x in cpu], "wall_ns_per_rt": [round(x, 1) for x in wall]}


def add_ratios(results):
    for cells in results.values():
        for base in ("uvloop", "asyncio"):
            ref = cells.get(base, {}).get("median")
            for cell in cells.values():
                ok = ref and cell["median"] and not cell["failed"]
                cell["vs_" + base] = round(cell["median"] / ref, 4) if ok else None


def print_table(title, rows, specs, cell_text, width):
    print(f"\n{title}")
    print(f"{'row':<14}" + "".join(f"{s:>{width}}" for s in specs))
    for row in rows:
        print(f"{row:<14}" + "".join(f"{cell_text(row, s):>{width}}" for s in specs))


def report(results, rows, specs, rounds):
    def cpu(row, spec):
        c = results[row][spec]
        if c["failed"]:
            return f"FAIL({c['failed']}/{rounds})"
        return f"{c['median'] / 1000:.2f} ({c['min'] / 1000:.2f}-{c['max'] / 1000:.2f})"

    def rate(row, spec):
        c = results[row][spec]
        return "-" if c["rt_per_s"] is None else f"{c['rt_per_s']:,}"

    def ratio(row, spec):
        c = results[row][spec]
        return " / ".join(f"{c[k]:.2f}" if c[k] else "-" for k in ("vs_uvloop", "vs_asyncio"))

    print_table(f"CPU us per round trip: median (min-max) of {rounds} round(s), one process each",
                rows, specs, cpu, 20)
    print_table("round trips per second (from the median wall time)", rows, specs, rate, 20)
    print_table("CPU ratio: x uvloop / x asyncio (lower is faster)", rows, specs, ratio, 20)


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--loops", help="comma list of asyncio, uvloop, zloop:<backend>, zloop (= all backends); "
                   "default all")
    p.add_argument("--rows", help="comma list of rows; default all: " + ", ".join(ROWS))
    p.add_argument("--rounds", type=int, help="default 5 (1 with --quick)")
    p.add_argument("--quick", action="store_true", help="smoke test: 1 round, N/10")
    p.add_argument("--scale", type=float, default=1.0, help="multiply every N by this")
    p.add_argument("--json", default=os.path.join(HERE, "results", "udp_pingpong.json"))
    p.add_argument("--time-limit", type=float, default=CHILD_TIME_LIMIT,
                   help="seconds a child may take before it fails")
    p.add_argument("--child", nargs=2, metavar=("ROW", "LOOPSPEC"), help=argparse.SUPPRESS)
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
        sys.exit(f"udp_pingpong.py: {exc}")
    rows = args.rows.split(",") if args.rows else list(ROWS)
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        sys.exit(f"udp_pingpong.py: unknown rows {unknown}; known: {list(ROWS)}")
    rounds = args.rounds or (1 if args.quick else 5)
    scale = args.scale / (10 if args.quick else 1)
    sizes = {r: max(int(ROWS[r][3] * scale), 10) for r in rows}

    samples = {r: {s: ([], []) for s in specs} for r in rows}
    failures = []
    classes = {}
    info = machine_info()
    started = time.monotonic()
    print(f"udp_pingpong: loops {', '.join(specs)}; {len(rows)} rows x {rounds} round(s), one process per figure",
          file=sys.stderr)
    for rnd in range(rounds):
        order = specs[rnd % len(specs):] + specs[:rnd % len(specs)]
        for row in rows:
            for spec in order:
                try:
                    res = spawn(row, spec, sizes[row], args.time_limit)
                except BenchError as exc:
                    print(f"FAILED {row} {spec} round {rnd + 1}: {exc}", file=sys.stderr)
                    failures.append({"row": row, "loop": spec, "round": rnd + 1, "error": str(exc)})
                    continue
                samples[row][spec][0].append(res["cpu_ns"] / res["ops"])
                samples[row][spec][1].append(res["wall_ns"] / res["ops"])
                classes[spec] = res["loop_class"]
        print(f"  round {rnd + 1}/{rounds} done ({time.monotonic() - started:.0f} s)", file=sys.stderr)

    results = {}
    for row in rows:
        results[row] = {}
        for spec in specs:
            failed = sum(1 for f in failures if f["row"] == row and f["loop"] == spec)
            results[row][spec] = summarize(*samples[row][spec], sizes[row], failed)
    add_ratios(results)
    report(results, rows, specs, rounds)

    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump({"benchmark": "udp_pingpong", "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                   "command": [sys.executable] + sys.argv, "machine": info, "versions": _loops.versions(),
                   "config": {"rounds": rounds, "quick": args.quick, "loops": specs, "loop_classes": classes,
                              "n": sizes, "rows": {r: dict(zip(("family", "payload", "external_peer"), ROWS[r][:3]))
                                                   for r in rows}},
                   "seconds": round(time.monotonic() - started, 1), "results": results, "failures": failures},
                  f, indent=1)
    print(f"\nwrote {args.json}" + (f"; {len(failures)} FAILED run(s)" if failures else ""))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
