"""UDP burst benchmark: an echo server's CPU and system calls per datagram when one iteration carries many.

    PYTHONPATH=python python3 bench/udp_burst.py [--loops zloop:native,zloop:uring,zloop:uring+completion]
                                                 [--shapes 8x16,1x1] [--size 64] [--n 200000] [--rounds 5]
                                                 [--syscalls]

The server is an echo DatagramProtocol on the loop under test, alone in its own process (``udp_burst.py
--server SPEC``); the load is udp_burst_client.c (built with cc into bench/results/ on first use): S UDP sockets,
each keeping W datagrams in flight (shape SxW; a new datagram for each echo back) until N echoes came back. The
client checks every echo's length and fails on a 10 s silence. Per figure: a warm-up of N/10, then the server's
CPU (its time.process_time_ns, asked over UDP before and after the window) per datagram echoed, the datagrams
per second (client wall time) and, with --syscalls, the server's system calls over the window
(``perf stat -e raw_syscalls:sys_enter -p PID``, all its threads) per datagram. Rounds are outermost and the
loop order rotates every round; the report gives medians with (min-max).
"""

import argparse
import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import _harness  # noqa: E402
import _loops  # noqa: E402

CLIENT = os.path.join(HERE, "udp_burst_client.c")
CLIENT_BINARY = os.path.join(HERE, "results", "udp_burst_client")
ATTACH_SECONDS = 0.3    # time given to perf to attach before the window opens
CPU_QUERY = b"cpu?"


# ------------------------------------------------------------------ the server process

class Echo(asyncio.DatagramProtocol):
    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        if data == CPU_QUERY:
            data = str(time.process_time_ns()).encode()
        self.transport.sendto(data, addr)


def serve(spec):
    loop = _loops.make_loop(spec)
    transport, _ = loop.run_until_complete(loop.create_datagram_endpoint(Echo, local_addr=("127.0.0.1", 0)))
    transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    print(transport.get_extra_info("sockname")[1], flush=True)
    loop.add_signal_handler(signal.SIGTERM, loop.stop)
    loop.run_forever()
    transport.close()
    loop.run_until_complete(asyncio.sleep(0))
    loop.close()


# ------------------------------------------------------------------ one figure

def server_cpu_ns(port):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(10)
        sock.sendto(CPU_QUERY, ("127.0.0.1", port))
        return int(sock.recv(100))


def run_client(port, shape, size, total):
    sockets, window = shape
    out = subprocess.run([CLIENT_BINARY, str(port), str(sockets), str(window), str(size), str(total)],
                         capture_output=True, text=True, timeout=120)
    _harness.check(out.returncode == 0, f"client failed: {out.stderr.strip()}")
    return float(out.stdout)


def count_syscalls_start(pid, path):
    proc = subprocess.Popen(["perf", "stat", "-x", ",", "-e", "raw_syscalls:sys_enter", "-o", path, "-p", str(pid)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(ATTACH_SECONDS)
    return proc


def count_syscalls_stop(proc, path):
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=30)
    with open(path) as f:
        for line in f:
            fields = line.strip().split(",")
            if len(fields) > 2 and fields[2] == "raw_syscalls:sys_enter":
                return int(fields[0])
    raise RuntimeError(f"perf stat gave no count in {path}")


def measure(spec, shape, size, n, syscalls):
    server = subprocess.Popen([_loops.interpreter(spec), __file__, "--server", spec], stdout=subprocess.PIPE,
                              text=True, env=_loops.child_env(spec))
    try:
        port = int(server.stdout.readline())
        run_client(port, shape, size, max(n // 10, 1))        # warm-up
        perf_out = tempfile.mktemp(prefix="zlburst-perf-")
        counter = count_syscalls_start(server.pid, perf_out) if syscalls else None
        cpu_before = server_cpu_ns(port)
        wall = run_client(port, shape, size, n)
        cpu_after = server_cpu_ns(port)
        figure = {"cpu_us": (cpu_after - cpu_before) / n / 1000, "dgrams_per_s": n / wall}
        if counter is not None:
            figure["syscalls"] = count_syscalls_stop(counter, perf_out) / n
            os.unlink(perf_out)
        return figure
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


# ------------------------------------------------------------------ the report

def spread(values, fmt):
    return f"{statistics.median(values):{fmt}} ({min(values):{fmt}}-{max(values):{fmt}})"


def report(results, specs, shapes, syscalls):
    columns = [("server CPU us/datagram", "cpu_us", ".2f"), ("datagrams/s", "dgrams_per_s", ",.0f")]
    if syscalls:
        columns.append(("server syscalls/datagram", "syscalls", ".3f"))
    for title, key, fmt in columns:
        print(f"\n{title}: median (min-max)")
        print(f"{'shape':<8}" + "".join(f"{spec:>30}" for spec in specs))
        for shape in shapes:
            cells = [spread([r[key] for r in results[(spec, shape)]], fmt) for spec in specs]
            print(f"{'%dx%d' % shape:<8}" + "".join(f"{c:>30}" for c in cells))


def parse_shape(text):
    sockets, _, window = text.partition("x")
    return int(sockets), int(window)


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--server":
        return serve(sys.argv[2])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--loops", default="zloop:native,zloop:uring,zloop:uring+completion")
    parser.add_argument("--shapes", default="8x16,1x1", help="SOCKETSxWINDOW, comma-separated")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--n", type=int, default=200000, help="datagrams echoed per figure")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--syscalls", action="store_true", help="count the server's system calls (perf)")
    args = parser.parse_args()
    _harness.build_c(CLIENT, CLIENT_BINARY)
    specs = args.loops.split(",")
    shapes = [parse_shape(s) for s in args.shapes.split(",")]
    results = {(spec, shape): [] for spec in specs for shape in shapes}
    for round_ in range(args.rounds):
        for shape in shapes:
            for spec in _harness.rotated(specs, round_):
                results[(spec, shape)].append(measure(spec, shape, args.size, args.n, args.syscalls))
        print(f"round {round_ + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    print(f"{args.size}-byte datagrams, {args.n} per figure, {args.rounds} rounds; {_harness.cpu_model()}")
    report(results, specs, shapes, args.syscalls)


if __name__ == "__main__":
    main()
