"""HTTP server benchmark: uvicorn + httptools serving bench/http_app.py on each loop, driven by wrk on loopback.

    PYTHONPATH=python python3 bench/http_bench.py [--loops asyncio,uvloop,rloop,zloop] [--endpoints plaintext,json]
                                            [--rounds 3] [--duration 5] [--connections 4] [--json PATH] [--tls]

Loops: asyncio (uvicorn --loop asyncio), uvloop (--loop uvloop), rloop (--loop rloop:new_event_loop) and zloop on
each compiled backend (--loop zloop:new_event_loop with ZLOOP_BACKEND=<backend>); a peer that does not import is
left out with a note. Asked for by name only, zloop:<backend>+stats is that backend with loop.stats() timing on
(ZLOOP_STATS=1): what the timings cost a real server.

For every round (outermost; the loop order rotated each round), loop and endpoint: a fresh uvicorn process (one
worker, no access log) on a free loopback port; the harness asks GET /loop which loop class, backend and
statistics setting serve it and fails the figure if it is not the one asked for; one short wrk warm-up; then
user+sys CPU of the server process (/proc/PID/stat) is read, `wrk -t1 -c C -d D` runs, the CPU is read again.
Figures: server CPU per request (the CPU delta over wrk's request count) and wrk's requests/s. Any non-2xx answer,
socket error or timeout fails the figure. Client and server share the machine's cores, so requests/s depends on
how the kernel schedules them; CPU per request is the steadier figure.

--tls (HTTPS): a throw-away ECDSA key and self-signed certificate are made in a temp dir (bench/_tlscert.py) and
given to uvicorn (--ssl-keyfile/--ssl-certfile); the harness's GET /loop verifies the server against that
certificate, wrk (built with OpenSSL) speaks https on keep-alive connections, so the figures are the per-request
cost of TLS records, not of handshakes. rloop is left out (0.5 has no TLS). Results go to http-tls.json.
"""

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import _harness  # noqa: E402
import _loops  # noqa: E402
import _tlscert  # noqa: E402

NO_TLS_LOOPS = ("rloop",)   # rloop 0.5: create_server(ssl=...) raises NotImplementedError

ENDPOINTS = ("plaintext", "json")
STARTUP_LIMIT = 20.0     # seconds for a server to answer its first request
STOP_LIMIT = 10.0        # seconds for a server to exit after SIGINT before it is killed
WARMUP_SECONDS = 1
CLK_TCK = os.sysconf("SC_CLK_TCK")


class FigureError(Exception):
    """A figure could not be measured: the server or wrk misbehaved."""


# ---------------------------------------------------------------- the loops

def uvicorn_loop(spec):
    """(--loop value, extra environment, expected loop class prefix, expected backend) for a loop spec."""
    if spec == "asyncio":
        return "asyncio", {}, "asyncio.", None
    if spec == "uvloop":
        return "uvloop", {}, "uvloop.", None
    if spec == "rloop":
        return "rloop:new_event_loop", {}, "rloop.", None
    backend, _, variant = spec.partition(":")[2].partition("+")
    stats = "1" if variant == "stats" else "0"
    return "zloop:new_event_loop", {"ZLOOP_BACKEND": backend, "ZLOOP_STATS": stats}, "zloop.", backend


def available_loops():
    specs = [s for s in _loops.available() if s != "uvloop"]
    specs[1:1] = [name for name in ("uvloop", "rloop") if _imports(name)]
    return specs


def _imports(module):
    return subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True).returncode == 0


def select_loops(arg):
    avail = available_loops()
    if not arg:
        return avail
    chosen = []
    for item in (s.strip() for s in arg.split(",") if s.strip()):
        matches = [s for s in avail if s.startswith("zloop:")] if item == "zloop" else [item]
        for match in matches:
            base, _, variant = match.partition("+")
            if base not in avail or variant not in ("", "stats") or (variant and not base.startswith("zloop:")):
                raise SystemExit(f"http_bench.py: loop {match!r} is not available here ({', '.join(avail)})")
            if match not in chosen:
                chosen.append(match)
    return chosen


# ---------------------------------------------------------------- one server

def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def process_cpu_seconds(pid):
    """user + sys CPU of the process (all its threads) from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK   # utime, stime: fields 14 and 15 of the line


class Server:
    def __init__(self, spec, tls=None):
        """tls: None, or the (certificate, key) paths to serve HTTPS with."""
        self.spec = spec
        self.tls = tls
        self.port = free_port()
        loop_arg, extra_env, self.expect_class, self.expect_backend = uvicorn_loop(spec)
        env = dict(os.environ, **extra_env)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (HERE, env.get("PYTHONPATH", "")) if p)
        argv = [sys.executable, "-m", "uvicorn", "http_app:app", "--host", "127.0.0.1", "--port", str(self.port),
                "--loop", loop_arg, "--http", "httptools", "--no-access-log", "--log-level", "warning",
                "--lifespan", "off"]
        if tls:
            argv += ["--ssl-certfile", tls[0], "--ssl-keyfile", tls[1]]
        self.proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def url(self, path):
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}/{path}"

    def wait_ready(self):
        deadline = time.monotonic() + STARTUP_LIMIT
        context = _tlscert.client_context(self.tls[0]) if self.tls else None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise FigureError(f"server exited with {self.proc.returncode}: {self.stderr_text()}")
            try:
                with urllib.request.urlopen(self.url("loop"), timeout=2, context=context) as response:
                    served_by = json.loads(response.read())
                break
            except OSError:
                time.sleep(0.1)
        else:
            raise FigureError(f"server did not answer within {STARTUP_LIMIT:g} s")
        if not served_by["loop"].startswith(self.expect_class) or (
                self.expect_backend is not None and (served_by["backend"], served_by["stats_timing"])
                != (self.expect_backend, self.spec.endswith("+stats"))):
            raise FigureError(f"asked for {self.spec}, served by {served_by}")
        return served_by

    def stderr_text(self):
        try:
            return self.proc.stderr.read().decode(errors="replace")[-2000:]
        except (OSError, ValueError):
            return ""

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(STOP_LIMIT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stderr.close()


# ---------------------------------------------------------------- wrk

def run_wrk(url, duration, connections):
    """(requests, requests/s) of one wrk run; FigureError on errors or non-2xx answers."""
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--timeout", "5s", url]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 30)
    except subprocess.TimeoutExpired:
        raise FigureError(f"wrk did not finish within {duration + 30} s") from None
    out = done.stdout
    if done.returncode != 0:
        raise FigureError(f"wrk failed ({done.returncode}): {done.stderr.strip() or out}")
    requests = re.search(r"(\d+) requests in", out)
    rate = re.search(r"Requests/sec:\s*([\d.]+)", out)
    if requests is None or rate is None:
        raise FigureError(f"cannot read wrk's output: {out}")
    for problem in ("Non-2xx or 3xx responses", "Socket errors"):
        if problem in out:
            raise FigureError(f"wrk reports {problem.lower()}: {out}")
    if int(requests.group(1)) == 0:
        raise FigureError(f"wrk completed no request: {out.strip()} {done.stderr.strip()}")
    return int(requests.group(1)), float(rate.group(1))


def measure(spec, endpoint, duration, connections, tls=None):
    server = Server(spec, tls)
    try:
        served_by = server.wait_ready()
        run_wrk(server.url(endpoint), WARMUP_SECONDS, connections)
        cpu_before = process_cpu_seconds(server.proc.pid)
        requests, rate = run_wrk(server.url(endpoint), duration, connections)
        cpu = process_cpu_seconds(server.proc.pid) - cpu_before
        if server.proc.poll() is not None:
            raise FigureError(f"server exited during the run: {server.stderr_text()}")
    finally:
        server.stop()
    return {"requests": requests, "rps": rate, "server_cpu_s": cpu, "cpu_us_per_request": cpu / requests * 1e6,
            "served_by": served_by}


# ---------------------------------------------------------------- report

def median_cell(values, fmt):
    if not values:
        return "FAIL"
    return f"{statistics.median(values):{fmt}} ({min(values):{fmt}}-{max(values):{fmt}})"


def print_table(title, results, specs, key, fmt):
    print(f"\n{title}")
    head = f"{'endpoint':12}" + "".join(f"{spec:>26}" for spec in specs)
    print(head)
    print("-" * len(head))
    for endpoint, cells in results.items():
        print(f"{endpoint:12}" + "".join(f"{median_cell([r[key] for r in cells[s]], fmt):>26}" for s in specs))


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--loops", help="comma list of asyncio, uvloop, rloop, zloop:<backend>, zloop (all backends)")
    parser.add_argument("--endpoints", default=",".join(ENDPOINTS), help="comma list of plaintext, json")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=5, help="seconds of each measured wrk run (default 5)")
    parser.add_argument("--connections", type=int, default=4, help="wrk connections (default 4, one wrk thread)")
    parser.add_argument("--json", help="where to write results (default bench/results/http.json, http-tls.json)")
    parser.add_argument("--tls", action="store_true", help="HTTPS: uvicorn with a throw-away key and certificate")
    args = parser.parse_args()
    if args.json is None:
        args.json = os.path.join(_harness.RESULTS, "http-tls.json" if args.tls else "http.json")
    if not (1 <= args.rounds <= 20 and 1 <= args.duration <= 60 and 1 <= args.connections <= 256):
        parser.error("--rounds 1..20, --duration 1..60 s, --connections 1..256")
    args.endpoints = [e.strip() for e in args.endpoints.split(",") if e.strip()]
    unknown = [e for e in args.endpoints if e not in ENDPOINTS]
    if unknown or not args.endpoints:
        parser.error(f"--endpoints: choose from {', '.join(ENDPOINTS)}")
    return args


def main():
    args = parse_args()
    if subprocess.run(["which", "wrk"], capture_output=True).returncode != 0:
        print("http_bench.py: wrk is not installed (Debian: apt-get install wrk; ./scripts/bootstrap.sh does it)",
              file=sys.stderr)
        return 1
    if not (_imports("uvicorn") and _imports("httptools")):
        print("http_bench.py: needs uvicorn and httptools (pip install -r requirements-dev.txt)", file=sys.stderr)
        return 1
    specs = select_loops(args.loops)
    missing = [name for name in ("uvloop", "rloop") if name not in available_loops()]
    if args.tls:
        if args.loops and any(spec in NO_TLS_LOOPS for spec in specs):
            print(f"http_bench.py: --tls: {', '.join(NO_TLS_LOOPS)} has no TLS", file=sys.stderr)
            return 1
        missing = [name for name in missing if name not in NO_TLS_LOOPS]
        specs = [spec for spec in specs if spec not in NO_TLS_LOOPS]
    info = _harness.machine_info()
    started = time.monotonic()
    print(f"http{'s' if args.tls else ''}: loops {', '.join(specs)}"
          + (f" (not installed: {', '.join(missing)})" if missing else "")
          + f"; {args.rounds} round(s) x {args.duration} s of wrk -t1 -c{args.connections}", file=sys.stderr)
    workdir = tempfile.mkdtemp(prefix="zloop-http-")
    try:
        tls = _tlscert.make(workdir) if args.tls else None
        results, failures = run_rounds(args, specs, tls)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    report(args, specs, missing, info, started, results, failures)
    return 1 if failures else 0


def run_rounds(args, specs, tls):
    """Every round, loop (rotated) and endpoint: the figures, and the failures."""
    results = {endpoint: {spec: [] for spec in specs} for endpoint in args.endpoints}
    failures = []
    for round_no in range(args.rounds):
        for spec in _harness.rotated(specs, round_no):
            for endpoint in args.endpoints:
                try:
                    figure = measure(spec, endpoint, args.duration, args.connections, tls)
                except FigureError as exc:
                    failures.append({"round": round_no, "loop": spec, "endpoint": endpoint, "error": str(exc)})
                    print(f"FAILED round {round_no + 1} {spec} {endpoint}: {exc}", file=sys.stderr)
                    continue
                results[endpoint][spec].append(figure)
                print(f"  round {round_no + 1} {spec:14} {endpoint:10} {figure['cpu_us_per_request']:7.1f} us/req "
                      f"{figure['rps']:9.0f} req/s", file=sys.stderr, flush=True)
    return results, failures


def report(args, specs, missing, info, started, results, failures):
    """The tables on stdout and the JSON file."""
    print_table(f"server CPU per request, µs: median (min-max) of {args.rounds} round(s)", results, specs,
                "cpu_us_per_request", ".1f")
    print_table(f"requests/s (wrk -t1 -c{args.connections}, {args.duration} s): median (min-max)", results, specs,
                "rps", ".0f")
    info["loadavg_at_end"] = os.getloadavg()
    config = {"rounds": args.rounds, "duration": args.duration, "connections": args.connections, "tls": args.tls,
              "endpoints": args.endpoints, "loops": specs, "not_installed": missing}
    summary = {endpoint: {spec: {"cpu_us_per_request": [r["cpu_us_per_request"] for r in cells],
                                 "rps": [r["rps"] for r in cells], "requests": [r["requests"] for r in cells]}
                          for spec, cells in per_loop.items()} for endpoint, per_loop in results.items()}
    _harness.write_json(args.json, "http-tls" if args.tls else "http", info, config, started, summary, failures)


if __name__ == "__main__":
    sys.exit(main())
