# tests/soak/server.py — the server side of the soak run, in a process of its own so that its RSS and fds are its own:
# a FlowEcho server on TCP loopback and on a Unix socket, on a zloop backend (or stock asyncio), driven over stdin.
# Commands, one a line, each answered with one JSON line on stdout:
#   sample        after a collection: rss_kb, fds, watched fds, live transports, the server's counters
#   limit N       lower RLIMIT_NOFILE's soft limit to the fds open now + N (accept then fails with EMFILE)
#   unlimit       restore it
#   quit          close the servers, wait for them, answer the last sample and exit
import argparse
import asyncio
import gc
import json
import os
import resource
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from workload import FlowEcho, Stats  # noqa: E402


def rss_kb():
    with open("/proc/self/status") as fp:
        for line in fp:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class Control:
    def __init__(self, loop, servers, stats, transports):
        self.loop = loop
        self.servers = servers
        self.stats = stats
        self.transports = transports
        self.buffer = b""
        self.limits = resource.getrlimit(resource.RLIMIT_NOFILE)
        self.done = loop.create_future()

    def sample(self):
        gc.collect()
        watched = getattr(self.loop, "_watched_fd_count", None)
        if watched is None:
            watched = len(self.loop._selector.get_map())
        return {"rss_kb": rss_kb(), "fds": len(os.listdir("/proc/self/fd")), "watched": watched,
                "transports": len(self.transports), "stats": dict(self.stats)}

    def on_stdin(self):
        data = os.read(0, 4096)
        if not data:
            self.command("quit")
            return
        self.buffer += data
        while b"\n" in self.buffer:
            line, self.buffer = self.buffer.split(b"\n", 1)
            self.command(line.decode().strip())

    def command(self, line):
        word, _, arg = line.partition(" ")
        if word == "sample":
            self.answer(self.sample())
        elif word == "limit":
            in_use = len(os.listdir("/proc/self/fd"))
            resource.setrlimit(resource.RLIMIT_NOFILE, (in_use + int(arg), self.limits[1]))
            self.answer({"limit": in_use + int(arg)})
        elif word == "unlimit":
            resource.setrlimit(resource.RLIMIT_NOFILE, self.limits)
            self.answer({"limit": self.limits[0]})
        elif word == "quit" and not self.done.done():
            self.loop.remove_reader(0)
            self.done.set_result(None)
        else:
            self.answer({"error": f"unknown command {line!r}"})

    def answer(self, obj):
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()


def on_exception(stats):
    def handler(loop, context):
        exc = context.get("exception")
        if context.get("message") == "socket.accept() out of system resource":
            stats["emfile_pauses"] += 1
            return
        stats["handler_" + type(exc).__name__ if exc is not None else "handler_message"] += 1
        loop.default_exception_handler(context)
    return handler


async def main(loop, unix_path):
    stats = Stats()
    transports = set()
    loop.set_exception_handler(on_exception(stats))
    tcp = await loop.create_server(lambda: FlowEcho(stats, transports), "127.0.0.1", 0, backlog=512)
    unix = await loop.create_unix_server(lambda: FlowEcho(stats, transports), unix_path, backlog=512)
    control = Control(loop, [tcp, unix], stats, transports)
    loop.add_reader(0, control.on_stdin)
    control.answer({"tcp": tcp.sockets[0].getsockname()[:2], "unix": unix_path, "pid": os.getpid()})
    await control.done
    for server in (tcp, unix):
        server.close()
        await server.wait_closed()
    control.answer(control.sample())


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backend", default="native", help="a zloop backend, or asyncio")
    parser.add_argument("--unix", required=True, help="the Unix socket path to listen on")
    args = parser.parse_args()
    if args.backend == "asyncio":
        event_loop = asyncio.new_event_loop()
    else:
        import zloop
        event_loop = zloop.new_event_loop(backend=args.backend)
    try:
        event_loop.run_until_complete(main(event_loop, args.unix))
    finally:
        event_loop.close()
