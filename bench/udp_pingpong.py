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
and asyncio. The harness is bench/_harness.py; see bench/README.md.
"""

import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time

import _harness
from _harness import Clock, check

CHILD_TIME_LIMIT = 60.0
PEER_IDLE_EXIT = 10    # seconds without a datagram after which the external echo peer exits
ROW_WIDTH = 14

# row -> (family, payload bytes, external echo process, round trips)
ROWS = {
    "udp4_64": ("ipv4", 64, False, 20000),
    "udp4_1k": ("ipv4", 1024, False, 20000),
    "unix_64": ("unix", 64, False, 20000),
    "udp4_64_ext": ("ipv4", 64, True, 10000),
}


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
import socket, struct, sys
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind(("127.0.0.1", 0))
# Kernel-side receive timeout (no poll per datagram): idle this long, its child is gone (faulthandler exit).
sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", PEER_IDLE_EXIT, 0))
print(sock.getsockname()[1], flush=True)
while True:
    try:
        data, addr = sock.recvfrom(65536)
    except BlockingIOError:
        break
    if data == b"stop":
        break
    sock.sendto(data, addr)
""".replace("PEER_IDLE_EXIT", str(PEER_IDLE_EXIT))


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
    family, size, external, _ = ROWS[row]
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)

    def measure(loop, n):
        peer = None
        directory = tempfile.mkdtemp(prefix="zlbench-")
        try:
            server, client_kwargs = loop.run_until_complete(open_endpoints(loop, family, external, directory))
            if external:
                peer, client_kwargs["remote_addr"] = start_echo_peer()
            client, proto = loop.run_until_complete(
                loop.create_datagram_endpoint(lambda: PingProtocol(payload), **client_kwargs))
            loop.run_until_complete(proto.start(loop, max(n // 10, 1)))     # warm-up
            clock = Clock()
            clock.start()
            loop.run_until_complete(proto.start(loop, n))
            clock.stop()
            check(proto.left == 0 and proto.bad == 0, f"{proto.left} left, {proto.bad} corrupted")
            client.close()
            if server is not None:
                server.close()
            loop.run_until_complete(asyncio.sleep(0))
        finally:
            if peer is not None:
                stop_echo_peer(peer, client_kwargs["remote_addr"])
            for name in os.listdir(directory):
                os.unlink(os.path.join(directory, name))
            os.rmdir(directory)
        return clock

    _harness.run_child(row, spec, n, time_limit, measure)


# ------------------------------------------------------------ the parent

def report(results, rows, specs, rounds):
    _harness.print_tables(results, rows, specs, ROW_WIDTH, [
        (f"CPU us per round trip: median (min-max) of {rounds} round(s), one process each", 20,
         lambda c: _harness.median_text(c, rounds, ".2f", unit=1000)),
        ("round trips per second (from the median wall time)", 20, _harness.field_text("rt_per_s", ",")),
        ("CPU ratio: x uvloop / x asyncio (lower is faster)", 20, _harness.ratio_text)])


def parse_args():
    return _harness.parse(_harness.arg_parser(__doc__, ROWS, "udp_pingpong.json", CHILD_TIME_LIMIT), run_child)


def main():
    args = parse_args()
    specs, rows, rounds = _harness.selection(args, ROWS, "udp_pingpong.py")
    sizes = {r: max(int(ROWS[r][3] * _harness.scale(args)), 10) for r in rows}
    info = _harness.machine_info()
    started = time.monotonic()
    print(f"udp_pingpong: loops {', '.join(specs)}; {len(rows)} rows x {rounds} round(s), one process per figure",
          file=sys.stderr)
    runs, failures, classes = _harness.run_figures(__file__, {r: (sizes[r], specs) for r in rows}, rounds,
                                                   args.time_limit, started)

    def summarize(row, res, failed):
        cell = _harness.summarize(sizes[row], failed,
                                  {"cpu_ns_per_rt": [r["cpu_ns"] / r["ops"] for r in res],
                                   "wall_ns_per_rt": [r["wall_ns"] / r["ops"] for r in res]},
                                  {"wall_median": "wall_ns_per_rt"})
        cell["rt_per_s"] = round(1e9 / cell["wall_median"]) if res else None
        return cell

    results = _harness.tabulate(runs, failures, summarize)
    _harness.add_ratios(results, 4)
    report(results, rows, specs, rounds)
    config = {"rounds": rounds, "quick": args.quick, "loops": specs, "loop_classes": classes, "n": sizes,
              "rows": {r: dict(zip(("family", "payload", "external_peer"), ROWS[r][:3])) for r in rows}}
    return _harness.write_json(args.json, "udp_pingpong", info, config, started, results, failures)


if __name__ == "__main__":
    sys.exit(main())
