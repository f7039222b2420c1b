#!/usr/bin/env python3
"""Echo server for the echo benchmark: one process, one event loop.

Every byte a client sends is written straight back.  The loop (--loop) and
the API style (--mode) are chosen on the command line:

    sock      loop.sock_accept / loop.sock_recv / loop.sock_sendall, one task
              per client
    proto     asyncio.Protocol: transport.write(data) in data_received
    buffered  asyncio.BufferedProtocol reading into a preallocated buffer
    streams   asyncio.start_server with StreamReader.read / StreamWriter.write

With --certfile and --keyfile the proto, buffered and streams modes serve
TLS (``ssl=`` an SSLContext loaded with that key and certificate) instead of
plain bytes; sock mode has no TLS.

Once listening it prints one line, ``READY {json}`` (pid, loop, mode, tls and
the bound address; --addr 127.0.0.1:0 picks a free port), then serves until
SIGTERM or SIGINT and exits with status 0.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import importlib.util
import json
import os
import signal
import socket
import stat
import sys
import sysconfig

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import _loops  # noqa: E402  (bench/_loops.py)
import _tlscert  # noqa: E402  (bench/_tlscert.py)

MODES = ("sock", "proto", "buffered", "streams")

# Read size for every mode; asyncio and uvloop transports also read 256 KiB.
RECV_SIZE = 256 * 1024

# --loop python-floor: no event loop; floor_py.c's epoll loop calls the protocols below (run.py --python-floor).
PY_FLOOR = "python-floor"
PY_FLOOR_MODES = ("proto", "buffered")

# Transports still open, so shutdown can close them.
_open_transports: set = set()


def set_nodelay(sock) -> None:
    """Disable Nagle on a TCP socket (or loop pseudo-socket); no-op for unix."""
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


# --- sock mode --------------------------------------------------------------

async def _sock_echo(loop, conn: socket.socket) -> None:
    with conn:
        try:
            while True:
                data = await loop.sock_recv(conn, RECV_SIZE)
                if not data:
                    return
                await loop.sock_sendall(conn, data)
        except ConnectionError:
            return


async def serve_sock(loop, listener: socket.socket, stop: asyncio.Future):
    clients: set = set()

    async def accept_forever():
        while True:
            conn, _ = await loop.sock_accept(listener)
            conn.setblocking(False)
            set_nodelay(conn)
            task = loop.create_task(_sock_echo(loop, conn))
            clients.add(task)
            task.add_done_callback(clients.discard)

    acceptor = loop.create_task(accept_forever())
    announce_ready()
    await stop
    acceptor.cancel()
    for task in list(clients):
        task.cancel()
    await asyncio.gather(acceptor, *clients, return_exceptions=True)


# --- proto and buffered modes -----------------------------------------------

class EchoProtocol(asyncio.Protocol):
    transport = None

    def connection_made(self, transport):
        self.transport = transport
        _open_transports.add(transport)
        set_nodelay(transport.get_extra_info("socket"))

    def data_received(self, data):
        self.transport.write(data)

    def connection_lost(self, exc):
        _open_transports.discard(self.transport)
        self.transport = None


class EchoBufferedProtocol(asyncio.BufferedProtocol):
    transport = None

    def connection_made(self, transport):
        self.transport = transport
        self.buffer = bytearray(RECV_SIZE)
        # A memoryview, not the bytearray: asyncio's TLS layer (sslproto, also zloop's today) fills a buffer
        # through buf[offset:], which copies a bytearray, so a TLS record past the first would be lost
        # (CPython issue 156275; the client's check catches it as a reply that differs at byte 16384).
        self.view = memoryview(self.buffer)
        _open_transports.add(transport)
        set_nodelay(transport.get_extra_info("socket"))

    def get_buffer(self, sizehint):
        return self.view

    def buffer_updated(self, nbytes):
        # Slicing a bytearray copies: the transport may keep unsent data
        # after write() returns, and the next read reuses self.buffer.
        self.transport.write(self.buffer[:nbytes])

    def connection_lost(self, exc):
        _open_transports.discard(self.transport)
        self.transport = None


async def serve_protocol(loop, listener, stop, protocol_factory, ssl_context):
    if listener.family == socket.AF_UNIX:
        start = functools.partial(loop.create_unix_server, protocol_factory, ssl=ssl_context)
    else:
        start = functools.partial(loop.create_server, protocol_factory, ssl=ssl_context)
    await serve_until_stopped(start, listener, stop)


# --- streams mode -----------------------------------------------------------

async def _stream_echo(reader, writer) -> None:
    set_nodelay(writer.get_extra_info("socket"))
    transport = writer.transport
    _open_transports.add(transport)
    try:
        while True:
            data = await reader.read(RECV_SIZE)
            if not data:
                break
            writer.write(data)
            if transport.get_write_buffer_size():
                await writer.drain()
    except ConnectionError:
        pass
    finally:
        _open_transports.discard(transport)
        writer.close()


async def serve_streams(loop, listener, stop, ssl_context):
    if listener.family == socket.AF_UNIX:
        start = functools.partial(asyncio.start_unix_server, _stream_echo, ssl=ssl_context)
    else:
        start = functools.partial(asyncio.start_server, _stream_echo, ssl=ssl_context)
    await serve_until_stopped(start, listener, stop)


# --- setup and shutdown -----------------------------------------------------

async def serve_until_stopped(start, listener, stop) -> None:
    """Serve on `listener` with the server `start(sock=listener)` makes until
    `stop` is resolved, then close the server and every connection."""
    server = await start(sock=listener)
    announce_ready()
    await stop
    await close_server(server)


async def close_server(server) -> None:
    server.close()
    for transport in list(_open_transports):
        transport.close()
    try:
        await asyncio.wait_for(server.wait_closed(), timeout=2.0)
    except asyncio.TimeoutError:
        pass


def remove_stale_socket(path: str) -> None:
    """Unlink `path` if it is a leftover unix socket (never a regular file)."""
    try:
        if stat.S_ISSOCK(os.stat(path).st_mode):
            os.unlink(path)
    except FileNotFoundError:
        pass


def make_listener(args) -> socket.socket:
    if args.unix:
        remove_stale_socket(args.unix)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        address = args.unix
    else:
        host, _, port = args.addr.rpartition(":")
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        address = (host.strip("[]"), int(port))
    try:
        sock.bind(address)
        sock.listen(128)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


# What the READY line reports: pid, loop, mode and the bound address.
_ready_info: dict = {}


def note_address(listener: socket.socket) -> None:
    """Record the bound address (before a loop takes the socket over)."""
    name = listener.getsockname()
    if listener.family == socket.AF_UNIX:
        _ready_info["unix"] = name
    else:
        _ready_info["addr"] = f"{name[0]}:{name[1]}"


def announce_ready() -> None:
    print("READY", json.dumps(_ready_info), flush=True)


def install_stop_handlers(loop, stop: asyncio.Future) -> None:
    """Resolve `stop` on SIGTERM/SIGINT, even if add_signal_handler is missing."""
    def request_stop():
        if not stop.done():
            stop.set_result(None)

    for signum in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(signum, request_stop)
        except (NotImplementedError, AttributeError, RuntimeError):
            signal.signal(signum, lambda *_: loop.call_soon_threadsafe(request_stop))


async def serve(args) -> None:
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    install_stop_handlers(loop, stop)
    ssl_context = _tlscert.server_context(args.certfile, args.keyfile) if args.certfile else None
    listener = make_listener(args)
    note_address(listener)
    try:
        if args.mode == "sock":
            await serve_sock(loop, listener, stop)
        elif args.mode == "streams":
            await serve_streams(loop, listener, stop, ssl_context)
        else:
            factory = EchoProtocol if args.mode == "proto" else EchoBufferedProtocol
            await serve_protocol(loop, listener, stop, factory, ssl_context)
    finally:
        listener.close()


def python_floor_path() -> str:
    """Where run.py builds floor_py.c for this interpreter."""
    results = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "results")
    return os.path.join(results, "floor_py" + sysconfig.get_config_var("EXT_SUFFIX"))


def serve_python_floor(args) -> int:
    """The Python floor: floor_py's C epoll loop serving this module's protocols until SIGTERM or SIGINT."""
    spec = importlib.util.spec_from_file_location("floor_py", python_floor_path())
    floor_py = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(floor_py)

    def stop(signum, frame):
        raise KeyboardInterrupt   # the C loop returns at its next wake-up with this exception

    signal.signal(signal.SIGTERM, stop)
    listener = make_listener(args)
    note_address(listener)
    announce_ready()
    factory = EchoProtocol if args.mode == "proto" else EchoBufferedProtocol
    try:
        floor_py.serve(listener.fileno(), factory, args.mode == "buffered")
    except KeyboardInterrupt:
        pass
    finally:
        listener.close()
    return 0


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--loop", default="asyncio",
                        help="a bench/_loops.py spec: asyncio, uvloop, zloop[:<backend>], or a peer "
                             "(rloop, zloop-zig, uvloop@3.12) when run with its interpreter")
    parser.add_argument("--mode", choices=MODES, default="proto")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--addr", default="127.0.0.1:25000",
                       help="HOST:PORT to listen on (port 0: pick a free one)")
    where.add_argument("--unix", metavar="PATH", help="unix socket path")
    parser.add_argument("--certfile", help="serve TLS with this certificate (PEM; needs --keyfile)")
    parser.add_argument("--keyfile", help="the certificate's private key (PEM)")
    args = parser.parse_args(argv)
    if bool(args.certfile) != bool(args.keyfile):
        parser.error("--certfile and --keyfile go together")
    if args.certfile and args.mode == "sock":
        parser.error("sock mode has no TLS (use proto, buffered or streams)")
    if args.loop == PY_FLOOR and (args.certfile or args.mode not in PY_FLOOR_MODES):
        parser.error(f"--loop {PY_FLOOR}: modes {', '.join(PY_FLOOR_MODES)}, no TLS")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    _ready_info.update(pid=os.getpid(), loop=args.loop, mode=args.mode, tls=bool(args.certfile))
    if args.loop == PY_FLOOR:
        return serve_python_floor(args)
    loop = _loops.make_loop(args.loop)
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(serve(args))
        loop.run_until_complete(loop.shutdown_asyncgens())
    finally:
        asyncio.set_event_loop(None)
        loop.close()
        if args.unix:
            remove_stale_socket(args.unix)
    return 0


if __name__ == "__main__":
    sys.exit(main())
