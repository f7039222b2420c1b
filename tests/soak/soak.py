"""tests/soak/soak.py — the soak run (make soak): per backend, a server process (tests/soak/server.py) takes rounds of
thousands of loopback TCP and Unix connections that stream in random chunk sizes, half-close, reset (SO_LINGER 0) or
stall as slow readers, then a round of accepts under RLIMIT_NOFILE exhaustion (EMFILE). Its RSS and open fds are
sampled after every round: the fds must come back to the baseline exactly, the RSS within --rss-slack-mb of it.
Everything is bounded: connections per round, rounds, a timeout per connection and one for the whole run.
Clients run on stock asyncio in this process. Prints a table and, with --json, writes the figures.
"""
import argparse
import asyncio
import collections
import json
import os
import random
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from server_process import ServerProcess  # noqa: E402
from workload import run_clients  # noqa: E402

SIZES = {"stream": (1, 256 * 1024), "half_close": (1, 256 * 1024), "reset": (1, 64 * 1024),
         "stall": (1 << 20, 4 << 20)}
EMFILE_SIZES = {name: (1, 16 * 1024) for name in SIZES}


def soak_backend(backend, args):
    rng = random.Random(args.seed)
    figures = collections.Counter()
    loop = asyncio.new_event_loop()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="zloop-soak-") as tmp:
        server = ServerProcess(backend, os.path.join(tmp, "soak.sock"))
        try:
            def clients(count, concurrency, sizes):
                figures.update(loop.run_until_complete(
                    run_clients(server.addresses, rng, count, concurrency, sizes, args.connection_timeout)))

            clients(args.warmup, args.concurrency, SIZES)
            baseline = server.settle(30.0)
            samples = [baseline]
            for _ in range(args.rounds):
                if time.monotonic() - started > args.max_seconds:
                    raise TimeoutError(f"{backend}: over --max-seconds before the rounds were done")
                clients(args.connections, args.concurrency, SIZES)
                samples.append(server.settle(30.0))
            server.ask(f"limit {args.emfile_room}")
            clients(args.emfile_connections, args.emfile_connections, EMFILE_SIZES)
            server.ask("unlimit")
            samples.append(server.settle(30.0, watched=baseline["watched"]))
            final, status = server.quit(30.0)
        finally:
            server.close()
            loop.close()
    stats = final["stats"]
    last = samples[-1]
    return {
        "backend": backend,
        "seconds": round(time.monotonic() - started, 1),
        "connections": figures["connections"],
        "bytes": figures["bytes"],
        "half_closes": figures["half_closes"],
        "resets": figures["resets"],
        "stalls": figures["stalls"],
        "server_accepted": stats.get("accepted", 0),
        "server_lost_with_error": {k[5:]: v for k, v in stats.items() if k.startswith("lost_")},
        "pause_writing": stats.get("pauses", 0),
        "resume_writing": stats.get("resumes", 0),
        "emfile_pauses": stats.get("emfile_pauses", 0),
        "handler_errors": {k: v for k, v in stats.items() if k.startswith("handler_")},
        "exit_status": status,
        "fds_baseline": baseline["fds"],
        "fds_after": [s["fds"] for s in samples[1:]],
        "leaked_fds": last["fds"] - baseline["fds"],
        "watched_after": last["watched"],
        "rss_kb_baseline": baseline["rss_kb"],
        "rss_kb_after": [s["rss_kb"] for s in samples[1:]],
        "rss_drift_kb": last["rss_kb"] - baseline["rss_kb"],
    }


def check(result, args):
    problems = []
    if result["exit_status"] != 0:
        problems.append(f"server exit status {result['exit_status']}")
    if result["leaked_fds"] != 0:
        problems.append(f"{result['leaked_fds']} fd(s) left open")
    if result["rss_drift_kb"] > args.rss_slack_mb * 1024:
        problems.append(f"RSS {result['rss_drift_kb']} KiB over the baseline")
    if result["emfile_pauses"] == 0:
        problems.append("accept never ran out of fds: the EMFILE round tested nothing")
    # Every pause is followed by a resume, unless the connection was reset while paused.
    if result["pause_writing"] == 0 or result["resume_writing"] > result["pause_writing"]:
        problems.append(f"pause_writing {result['pause_writing']}, resume_writing {result['resume_writing']}")
    if result["handler_errors"]:
        problems.append(f"exception handler calls: {result['handler_errors']}")
    return problems


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", action="append", help="zloop backend or asyncio (repeatable; default: all zloop)")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--connections", type=int, default=1000, help="connections per round")
    parser.add_argument("--warmup", type=int, default=300, help="connections before the baseline sample")
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--emfile-connections", type=int, default=60)
    parser.add_argument("--emfile-room", type=int, default=8, help="fds the server may still open in that round")
    parser.add_argument("--connection-timeout", type=float, default=120.0)
    parser.add_argument("--max-seconds", type=float, default=1200.0, help="per backend")
    parser.add_argument("--rss-slack-mb", type=float, default=8.0)
    parser.add_argument("--seed", type=int, default=9)
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    import zloop
    backends = args.backend or list(zloop.backends())
    results, failed = [], False
    for backend in backends:
        result = soak_backend(backend, args)
        problems = check(result, args)
        result["problems"] = problems
        results.append(result)
        failed |= bool(problems)
        print(f"{backend:8} {result['seconds']:7.1f} s  {result['connections']} connections  "
              f"{result['bytes'] / 2**20:.0f} MiB  {result['half_closes']} half-closes  {result['resets']} resets  "
              f"{result['stalls']} stalls  pause/resume {result['pause_writing']}/{result['resume_writing']}  "
              f"EMFILE pauses {result['emfile_pauses']}  leaked fds {result['leaked_fds']}  "
              f"RSS {result['rss_kb_baseline'] / 1024:.1f} MiB, drift {result['rss_drift_kb'] / 1024:+.1f} MiB"
              f"  {'FAIL: ' + '; '.join(problems) if problems else 'ok'}", flush=True)
    if args.json:
        with open(args.json, "w") as fp:
            json.dump(results, fp, indent=1)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
