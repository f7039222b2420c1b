# tests/test_net_sendfile.py — loop.sendfile(transport, ...): os.sendfile on plain TCP and Unix transports, the
# read-and-write fallback (TLS, objects without a file descriptor), offsets/counts/file position, and errors.

import asyncio
import io
import os
import socket
import sys

import pytest

from net_helpers import Recorder, client_context, no_fd_leak, run, server_context, watched

SIZE = 2 * 1024 * 1024 + 17


class Sink(asyncio.Protocol):
    """Server side: counts and keeps what it receives; the test reads `done` after the client closes."""

    def __init__(self, loop, holder):
        self.data = bytearray()
        self.done = loop.create_future()
        holder.append(self)

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.data += data

    def connection_lost(self, exc):
        if not self.done.done():
            self.done.set_result(bytes(self.data))


@pytest.fixture
def data_file(tmp_path):
    data = os.urandom(SIZE)
    path = tmp_path / "data"
    path.write_bytes(data)
    with open(path, "rb") as fp:
        yield fp, data


async def open_pair(loop, kind, tmp_path=None):
    sinks = []
    if kind == "unix":
        path = str(tmp_path / "sf.sock")
        server = await loop.create_unix_server(lambda: Sink(loop, sinks), path)
        transport, proto = await loop.create_unix_connection(lambda: Recorder(loop), path)
    elif kind == "tls":
        server = await loop.create_server(lambda: Sink(loop, sinks), "127.0.0.1", 0, ssl=server_context())
        transport, proto = await loop.create_connection(lambda: Recorder(loop), *server.sockets[0].getsockname(),
                                                        ssl=client_context(), server_hostname="localhost")
    else:
        server = await loop.create_server(lambda: Sink(loop, sinks), "127.0.0.1", 0)
        transport, proto = await loop.create_connection(lambda: Recorder(loop), *server.sockets[0].getsockname())
    while not sinks:
        await asyncio.sleep(0.001)
    return server, transport, proto, sinks[0]


async def finish(server, transport, proto, sink):
    transport.close()
    await proto.lost
    received = await sink.done
    server.close()
    await server.wait_closed()
    return received


@pytest.mark.parametrize("kind", ["tcp", "unix", "tls"])
@pytest.mark.parametrize("offset,count", [(0, None), (100, None), (100, 1000), (5, SIZE * 2)])
def test_sendfile(loop, tmp_path, data_file, kind, offset, count):
    fp, data = data_file
    expected = data[offset:offset + count] if count else data[offset:]

    async def main():
        pair = await open_pair(loop, kind, tmp_path)
        sent = await loop.sendfile(pair[1], fp, offset, count)
        assert fp.tell() == offset + sent
        # The transport works as before afterwards.
        pair[1].write(b"<after>")
        received = await finish(*pair)
        return sent, received
    sent, received = run(loop, main(), timeout=60)
    assert sent == len(expected)
    assert received == expected + b"<after>"


def test_sendfile_keeps_queued_writes_in_order(loop, data_file):
    fp, data = data_file

    async def main():
        pair = await open_pair(loop, "tcp")
        pair[1].write(b"<before>" * 10000)
        sent = await loop.sendfile(pair[1], fp)
        return sent, await finish(*pair)
    sent, received = run(loop, main(), timeout=60)
    assert received == b"<before>" * 10000 + data


def test_sendfile_fallback_for_objects_without_fd(loop):
    data = os.urandom(300 * 1024)

    async def main():
        pair = await open_pair(loop, "tcp")
        sent = await loop.sendfile(pair[1], io.BytesIO(data), 7)
        return sent, await finish(*pair)
    sent, received = run(loop, main())
    assert sent == len(data) - 7 and received == data[7:]


@pytest.mark.parametrize("kind", ["tcp", "tls"])
def test_sendfile_from_the_end_of_the_file_moves_the_position_there(loop, data_file, kind):
    # Nothing to send at offset == size: asyncio 3.14+ leaves the position at offset + sent all the same; before,
    # os.sendfile left it alone when nothing was sent (the read-and-send fallback of TLS sought the offset).
    fp, data = data_file
    fp.seek(123)

    async def main():
        pair = await open_pair(loop, kind)
        sent = await loop.sendfile(pair[1], fp, len(data))
        return sent, fp.tell(), await finish(*pair)
    moved = sys.version_info >= (3, 14) or kind == "tls"
    assert run(loop, main()) == (0, len(data) if moved else 123, b"")


def test_sendfile_fallback_at_offset_0_from_a_moved_position(loop):
    # asyncio 3.14+ seeks to the offset even when it is 0; before 3.14 it read on from the current position.
    data = os.urandom(10000)
    source = io.BytesIO(data)
    source.seek(10)

    async def main():
        pair = await open_pair(loop, "tcp")
        sent = await loop.sendfile(pair[1], source, 0)
        return sent, await finish(*pair)
    expected = data if sys.version_info >= (3, 14) else data[10:]
    assert run(loop, main()) == (len(expected), expected)
    assert source.tell() == len(expected)   # offset + sent


def test_sendfile_without_fallback(loop):
    async def main():
        pair = await open_pair(loop, "tcp")
        with pytest.raises(asyncio.SendfileNotAvailableError):
            await loop.sendfile(pair[1], io.BytesIO(b"data"), fallback=False)
        await finish(*pair)
        tls = await open_pair(loop, "tls")
        with pytest.raises(RuntimeError, match="fallback is disabled"):
            await loop.sendfile(tls[1], io.BytesIO(b"data"), fallback=False)
        await finish(*tls)
    run(loop, main())


def test_sendfile_on_a_closing_transport(loop, data_file):
    async def main():
        pair = await open_pair(loop, "tcp")
        pair[1].close()
        with pytest.raises(RuntimeError, match="Transport is closing"):
            await loop.sendfile(pair[1], data_file[0])
        await pair[2].lost
        pair[0].close()
    run(loop, main())


def test_sendfile_on_an_unsupported_transport(loop, data_file):
    class Foreign(asyncio.Transport):
        def is_closing(self):
            return False

    with pytest.raises(RuntimeError, match="not supported"):
        run(loop, loop.sendfile(Foreign(), data_file[0]))


@pytest.mark.parametrize("kwargs,error", [({"offset": -1}, ValueError), ({"count": 0}, ValueError)])
def test_sendfile_bad_parameters(loop, data_file, kwargs, error):
    async def main():
        pair = await open_pair(loop, "tcp")
        with pytest.raises(error):
            await loop.sendfile(pair[1], data_file[0], **kwargs)
        await finish(*pair)
    run(loop, main())


def test_write_during_sendfile_is_refused(loop, tmp_path):
    path = tmp_path / "big"
    path.write_bytes(b"b" * (16 * 1024 * 1024))

    async def main():
        pair = await open_pair(loop, "tcp")
        pair[3].transport.pause_reading()  # the receiver stalls: sendfile has to wait
        with open(path, "rb") as fp:
            sending = loop.create_task(loop.sendfile(pair[1], fp))
            await asyncio.sleep(0.05)
            assert not sending.done()
            with pytest.raises(RuntimeError):
                pair[1].write(b"x")
            pair[3].transport.resume_reading()
            assert await sending == 16 * 1024 * 1024
        received = await finish(*pair)
        assert len(received) == 16 * 1024 * 1024
    run(loop, main(), timeout=60)


def test_cancelled_sendfile_leaves_no_watcher(loop, tmp_path):
    path = tmp_path / "big"
    path.write_bytes(b"c" * (32 * 1024 * 1024))

    async def main():
        pair = await open_pair(loop, "tcp")
        pair[3].transport.pause_reading()
        pair[1].get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        base = watched(loop)
        with open(path, "rb") as fp:
            sending = loop.create_task(loop.sendfile(pair[1], fp))
            await asyncio.sleep(0.05)
            assert not sending.done()
            sending.cancel()
            with pytest.raises(asyncio.CancelledError):
                await sending
        await asyncio.sleep(0)
        assert watched(loop) == base
        assert pair[1].is_reading()  # reading was resumed
        pair[3].transport.resume_reading()
        await finish(*pair)
    with no_fd_leak(loop):
        run(loop, main(), timeout=60)
