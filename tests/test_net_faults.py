# tests/test_net_faults.py — faults: peers that reset, writes after close, protocols that raise (reported to the
# exception handler, connection closed, loop alive), connection_lost exactly once, and no fd left behind.

import asyncio
import socket
import struct

import pytest

from net_helpers import EchoServer, Recorder, echo_roundtrip, no_fd_leak, run

RST_LINGER = struct.pack("ii", 1, 0)


async def echo_server(loop):
    server = await loop.create_server(EchoServer, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()


async def close_server(server):
    server.close()
    await server.wait_closed()


def test_peer_reset_reaches_the_client_protocol(loop):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()

    async def main():
        transport, proto = await loop.create_connection(lambda: Recorder(loop), *listener.getsockname())
        conn, _ = listener.accept()
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RST_LINGER)
        conn.close()  # RST
        exc = await proto.lost
        assert isinstance(exc, ConnectionResetError) or exc is None
        assert proto.calls.count("lost") == 1
        assert transport.is_closing()
        transport.write(b"after reset")  # ignored, no exception
    with listener:
        with no_fd_leak(loop):
            run(loop, main())


def test_peer_reset_while_server_writes(loop):
    servers = []

    class Writer(Recorder):
        def connection_made(self, transport):
            super().connection_made(transport)
            servers.append(self)

    async def main():
        server = await loop.create_server(lambda: Writer(loop), "127.0.0.1", 0)
        raw = socket.create_connection(server.sockets[0].getsockname())
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        while not servers:
            await asyncio.sleep(0.001)
        peer = servers[0]
        for _ in range(64):
            peer.transport.write(b"x" * 65536)  # more than the socket takes: the rest is queued
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RST_LINGER)
        raw.close()
        exc = await peer.lost
        assert exc is None or isinstance(exc, (ConnectionResetError, BrokenPipeError))
        assert peer.calls.count("lost") == 1
        await close_server(server)
    with no_fd_leak(loop):
        run(loop, main())


def test_writes_after_close_are_ignored(loop):
    async def main():
        server, address = await echo_server(loop)
        transport, proto = await loop.create_connection(lambda: Recorder(loop), *address)
        transport.close()
        transport.write(b"late")
        transport.close()
        await proto.lost
        for _ in range(10):
            transport.write(b"after connection_lost")  # asyncio only logs a warning after a few
        transport.abort()
        await asyncio.sleep(0.01)
        assert proto.calls.count("lost") == 1
        await close_server(server)
    run(loop, main())


def test_close_flushes_buffered_data_before_connection_lost(loop):
    async def main():
        server, address = await echo_server(loop)
        transport, proto = await loop.create_connection(lambda: Recorder(loop), *address)
        sink = Recorder(loop)
        server2 = await loop.create_server(lambda: sink, "127.0.0.1", 0)
        t2, p2 = await loop.create_connection(lambda: Recorder(loop), *server2.sockets[0].getsockname())
        payload = b"y" * (8 * 1024 * 1024)
        t2.write(payload)
        t2.close()  # the queued bytes still go out before connection_lost
        await p2.lost
        assert await sink.receive(len(payload)) == payload
        transport.close()
        await proto.lost
        await close_server(server)
        await close_server(server2)
    run(loop, main(), timeout=60)


def test_abort_drops_buffered_data(loop):
    async def main():
        server, address = await echo_server(loop)
        transport, proto = await loop.create_connection(lambda: Recorder(loop), *address)
        transport.write(b"z" * (16 * 1024 * 1024))
        transport.abort()
        assert transport.get_write_buffer_size() == 0
        assert await proto.lost is None
        await close_server(server)
    run(loop, main())


@pytest.mark.parametrize("where", ["data_received", "eof_received"])
def test_protocol_raising_is_reported_and_the_connection_closed(loop, where):
    reports = []

    class Faulty(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport

        def data_received(self, data):
            if where == "data_received":
                raise RuntimeError("boom in data_received")

        def eof_received(self):
            raise RuntimeError("boom in eof_received")

    async def main():
        loop.set_exception_handler(lambda lp, ctx: reports.append(ctx))
        server = await loop.create_server(Faulty, "127.0.0.1", 0)
        address = server.sockets[0].getsockname()
        transport, proto = await loop.create_connection(lambda: Recorder(loop), *address)
        transport.write(b"trigger")
        if where == "eof_received":
            transport.write_eof()
        await proto.lost  # the faulty side was closed
        # The loop lives on: a new connection works.
        echo, echo_address = await echo_server(loop)
        t2, p2 = await loop.create_connection(lambda: Recorder(loop), *echo_address)
        assert await echo_roundtrip(t2, p2, b"alive") == b"alive"
        t2.close()
        await p2.lost
        await close_server(echo)
        await close_server(server)
    with no_fd_leak(loop):
        run(loop, main())
    assert len(reports) == 1
    assert isinstance(reports[0]["exception"], RuntimeError)
    assert reports[0]["exception"].args[0] == f"boom in {where}"
    assert "protocol" in reports[0] or "transport" in reports[0] or "handle" in reports[0]


def test_connection_made_raising_is_reported(loop):
    reports = []

    class Faulty(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport
            raise ValueError("bad start")

    async def main():
        loop.set_exception_handler(lambda lp, ctx: reports.append(ctx))
        server = await loop.create_server(Faulty, "127.0.0.1", 0)
        transport, proto = await loop.create_connection(lambda: Recorder(loop), *server.sockets[0].getsockname())
        await asyncio.sleep(0.05)
        transport.close()
        await proto.lost
        server.close()
        await asyncio.sleep(0.01)
    run(loop, main())
    assert reports and isinstance(reports[0]["exception"], ValueError)


def test_connection_lost_exactly_once_under_close_and_abort(loop):
    async def main():
        server, address = await echo_server(loop)
        protos = []
        for action in ("close", "abort", "close+abort", "abort+close", "eof+close"):
            transport, proto = await loop.create_connection(lambda: Recorder(loop), *address)
            await echo_roundtrip(transport, proto, b"x")
            for step in action.split("+"):
                if step == "eof":
                    transport.write_eof()
                else:
                    getattr(transport, step)()
            protos.append(proto)
        for proto in protos:
            await proto.lost
        await asyncio.sleep(0.02)
        assert all(p.calls.count("lost") == 1 for p in protos)
        await close_server(server)
    with no_fd_leak(loop):
        run(loop, main())


def test_server_side_reset_reaches_server_protocol(loop):
    holders = []

    class Keeper(Recorder):
        def __init__(self):
            super().__init__(loop)
            holders.append(self)

    async def main():
        server = await loop.create_server(Keeper, "127.0.0.1", 0)
        raw = socket.create_connection(server.sockets[0].getsockname())
        raw.sendall(b"hello")
        while not holders or not holders[0].data:
            await asyncio.sleep(0.001)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RST_LINGER)
        raw.close()
        exc = await holders[0].lost
        assert exc is None or isinstance(exc, ConnectionResetError)
        await close_server(server)
    with no_fd_leak(loop):
        run(loop, main())


def test_exit_raised_while_reporting_a_failed_pause_writing_leaves_write(loop):
    # asyncio reports a raising pause_writing() to the exception handler and lets SystemExit/KeyboardInterrupt
    # raised there through, out of transport.write(): the stream transport does the same as the datagram one.
    class FailingPause(asyncio.Protocol):
        def pause_writing(self):
            raise ValueError("pause failed")

    def handler(loop, context):
        raise KeyboardInterrupt

    async def main():
        ours, peer = socket.socketpair()
        transport, _ = await loop.connect_accepted_socket(FailingPause, ours)
        try:
            transport.set_write_buffer_limits(high=1, low=0)
            loop.set_exception_handler(handler)
            with pytest.raises(KeyboardInterrupt):
                for _ in range(64):              # the socket buffer fills; then the queue passes high water
                    transport.write(b"x" * 65536)
        finally:
            loop.set_exception_handler(None)
            transport.abort()
            peer.close()

    run(loop, main())
