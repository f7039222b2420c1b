# tests/test_stream_completion.py — what a stream transport must keep doing when its bytes go through a completion
# backend (uring with ZLOOP_URING_COMPLETION=1): held data while paused, flow control, abort and close with sends in
# flight, small BufferedProtocol buffers, a reset peer. Run on every backend too (and the asyncio control).

import asyncio
import contextvars
import os
import socket
import struct
import sys

import pytest

from conftest import BACKENDS, COMPLETION_KINDS, CONTROL, new_loop

TIMEOUT = 20.0
KINDS = BACKENDS + COMPLETION_KINDS + (["asyncio"] if CONTROL else [])


@pytest.fixture(params=KINDS)
def cloop(request):
    lp = new_loop(request.param)
    try:
        yield lp
    finally:
        lp.close()
        asyncio.set_event_loop(None)


def run(loop, coro):
    return loop.run_until_complete(asyncio.wait_for(coro, TIMEOUT))


class Recorder(asyncio.Protocol):
    def __init__(self, pause_after_first=False):
        self.chunks = []
        self.events = []
        self.lost = None
        self.pause_after_first = pause_after_first

    def connection_made(self, transport):
        self.transport = transport
        self.lost = asyncio.get_running_loop().create_future()

    def data_received(self, data):
        assert type(data) is bytes
        self.chunks.append(bytes(data))
        self.events.append("data")
        if self.pause_after_first and len(self.chunks) == 1:
            self.transport.pause_reading()

    def eof_received(self):
        self.events.append("eof")

    def pause_writing(self):
        self.events.append("pause")

    def resume_writing(self):
        self.events.append("resume")

    def connection_lost(self, exc):
        self.events.append("lost")
        if not self.lost.done():
            self.lost.set_result(exc)


async def connect(loop, protocol):
    a, b = socket.socketpair()
    b.setblocking(False)
    transport, _ = await loop.create_connection(lambda: protocol, sock=a)
    return transport, b


async def recv_exactly(loop, sock, n):
    got = bytearray()
    while len(got) < n:
        chunk = await loop.sock_recv(sock, min(n - len(got), 1 << 20))
        if not chunk:
            break
        got += chunk
    return bytes(got)


def test_data_that_comes_while_paused_waits_and_keeps_its_order(cloop):
    async def main():
        proto = Recorder(pause_after_first=True)
        transport, peer = await connect(cloop, proto)
        with peer:
            await cloop.sock_sendall(peer, b"first")
            for _ in range(200):
                if proto.chunks:
                    break
                await asyncio.sleep(0.005)
            for i in range(5):
                await cloop.sock_sendall(peer, b"-%d" % i)
                await asyncio.sleep(0.01)
            peer.shutdown(socket.SHUT_WR)
            await asyncio.sleep(0.05)
            assert proto.chunks == [b"first"] and proto.events == ["data"]   # nothing while paused
            assert not transport.is_reading()
            transport.resume_reading()
            for _ in range(400):
                if "eof" in proto.events:
                    break
                await asyncio.sleep(0.005)
            assert b"".join(proto.chunks) == b"first-0-1-2-3-4"
            assert proto.events.count("eof") == 1 and proto.events.index("eof") == len(proto.chunks)  # after the data
            assert await proto.lost is None   # eof_received() said no: the transport closes

    run(cloop, main())


def test_flow_control_follows_the_marks_with_a_peer_that_reads_late(cloop):
    async def main():
        proto = Recorder()
        transport, peer = await connect(cloop, proto)
        with peer:
            transport.set_write_buffer_limits(high=64 * 1024, low=16 * 1024)
            payload = os.urandom(4 * 1024 * 1024)
            for i in range(0, len(payload), 256 * 1024):
                transport.write(payload[i:i + 256 * 1024])
            await asyncio.sleep(0.05)
            assert proto.events == ["pause"]
            assert transport.get_write_buffer_size() > 64 * 1024
            got = await recv_exactly(cloop, peer, len(payload))
            assert got == payload
            for _ in range(200):
                if transport.get_write_buffer_size() == 0:
                    break
                await asyncio.sleep(0.005)
            assert transport.get_write_buffer_size() == 0
            assert proto.events == ["pause", "resume"]
            transport.close()
            await proto.lost

    run(cloop, main())


def test_abort_with_sends_in_flight_loses_the_connection_once_and_closes_the_fd(cloop):
    async def main():
        proto = Recorder()
        transport, peer = await connect(cloop, proto)
        fd = transport.get_extra_info("socket").fileno()
        with peer:
            for _ in range(32):
                transport.write(b"x" * (256 * 1024))   # far more than the socket buffers take
            await asyncio.sleep(0.02)
            assert transport.get_write_buffer_size() > 0
            transport.abort()
            assert await proto.lost is None
            await asyncio.sleep(0.02)
            assert proto.events.count("lost") == 1
            with pytest.raises(OSError):
                os.fstat(fd)   # closed (nothing else opened a file since)
            received = 0
            while True:   # the peer drains what got through, then sees the end
                try:
                    chunk = await asyncio.wait_for(cloop.sock_recv(peer, 1 << 20), 5)
                except ConnectionResetError:
                    break
                if not chunk:
                    break
                received += len(chunk)
            assert received < 32 * 256 * 1024

    run(cloop, main())


def test_close_sends_everything_queued_then_the_end(cloop):
    async def main():
        proto = Recorder()
        transport, peer = await connect(cloop, proto)
        with peer:
            payload = os.urandom(3 * 1024 * 1024 + 7)
            transport.write(payload[:1000])
            transport.writelines([payload[1000:2000000], memoryview(payload)[2000000:]])
            transport.close()
            assert transport.is_closing()
            got = await recv_exactly(cloop, peer, len(payload) + 1)
            assert got == payload   # and then the end of stream
            assert await proto.lost is None

    run(cloop, main())


def test_close_right_after_a_write_loses_the_connection_before_the_loop_stops(cloop):
    # asyncio sends inside write(), so close() right after one has nothing left to send and connection_lost runs
    # in the next iteration, before run_until_complete() returns: the transport lets go of its protocol there
    # (CPython's test_ssl test_create_connection_memory_leak counts on it). Through the ring the send completes
    # at the next poll, and what its completion schedules must run in that same iteration.
    proto = Recorder()

    async def main():
        transport, peer = await connect(cloop, proto)
        transport.write(b"last words")
        transport.close()
        return peer

    peer = cloop.run_until_complete(main())   # no wait_for: its extra iterations would hide a late connection_lost
    with peer:
        assert proto.events == ["lost"]
        assert proto.lost.result() is None
        peer.setblocking(True)
        peer.settimeout(TIMEOUT)
        got = b""
        while chunk := peer.recv(64):
            got += chunk
        assert got == b"last words"


def test_callbacks_after_a_resume_from_a_task_run_in_the_transports_context(cloop):
    # The end of stream that came while reading was paused reaches the protocol after a resume_reading() that a
    # task called: in the transport's context, not the task's (CPython gh-140947, fixed in asyncio 3.15; before
    # it asyncio re-added its reader in the caller's context). Through the ring it is held, delivered by a handle.
    if isinstance(cloop, asyncio.BaseEventLoop) and sys.version_info < (3, 15):
        pytest.skip("asyncio before 3.15 runs them in the resuming task's context")
    var = contextvars.ContextVar("resumer", default="unset")
    seen = []

    class Protocol(Recorder):
        def data_received(self, data):
            seen.append(("data", var.get()))
            super().data_received(data)

        def eof_received(self):
            seen.append(("eof", var.get()))

        def connection_lost(self, exc):
            seen.append(("lost", var.get()))
            super().connection_lost(exc)

    async def resume(transport):
        var.set("task")
        transport.resume_reading()

    async def main():
        proto = Protocol(pause_after_first=True)
        transport, peer = await connect(cloop, proto)
        with peer:
            peer.sendall(b"first")
            peer.shutdown(socket.SHUT_WR)   # the data and the end in one poll: through the ring the end is held
            while not proto.chunks:
                await asyncio.sleep(0.001)
            assert not transport.is_reading()
            await asyncio.sleep(0.05)
            assert seen == [("data", "unset")]
            await asyncio.create_task(resume(transport))
            assert await proto.lost is None
        assert proto.chunks == [b"first"]
        assert seen[-2:] == [("eof", "unset"), ("lost", "unset")]
        assert all(value == "unset" for _, value in seen), seen

    run(cloop, main())


async def wait_for_bytes(proto, n):
    for _ in range(2000):
        if sum(map(len, proto.chunks)) >= n:
            return
        await asyncio.sleep(0.002)


def test_large_and_small_reads_in_turn_keep_their_bytes_and_order(cloop):
    # Small reads, reads of several provided buffers' worth and single bytes in turn: every read keeps the bytes
    # and their order, whatever buffers carried them.
    async def main():
        proto = Recorder()
        transport, peer = await connect(cloop, proto)
        with peer:
            sent = bytearray()
            for size in [100, 10240, 10240, 70000, 300, 5000, 10, 200000, 4096, 1, 1, 9000]:
                block = os.urandom(size)
                sent += block
                await cloop.sock_sendall(peer, block)
                await wait_for_bytes(proto, len(sent))
            assert b"".join(proto.chunks) == sent
            assert max(map(len, proto.chunks)) <= 256 * 1024
            peer.shutdown(socket.SHUT_WR)
            assert await proto.lost is None
            assert proto.events[-2:] == ["eof", "lost"]

    run(cloop, main())


def test_large_reads_while_paused_wait_and_keep_their_order(cloop):
    async def main():
        proto = Recorder(pause_after_first=True)
        transport, peer = await connect(cloop, proto)
        with peer:
            blocks = [os.urandom(10240 + i) for i in range(6)]
            await cloop.sock_sendall(peer, blocks[0])
            await wait_for_bytes(proto, 1)
            for block in blocks[1:]:
                await cloop.sock_sendall(peer, block)
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.05)
            assert proto.events == ["data"] * len(proto.chunks) and not transport.is_reading()
            before = len(proto.chunks)
            transport.resume_reading()
            await wait_for_bytes(proto, sum(map(len, blocks)))
            assert len(proto.chunks) > before
            assert b"".join(proto.chunks) == b"".join(blocks)
            transport.close()
            assert await proto.lost is None

    run(cloop, main())


@pytest.mark.parametrize("how", ["close", "abort"])
def test_close_after_large_reads_closes_the_fd_and_tells_the_peer(cloop, how):
    async def main():
        proto = Recorder()
        transport, peer = await connect(cloop, proto)
        fd = transport.get_extra_info("socket").fileno()
        with peer:
            for _ in range(3):
                await cloop.sock_sendall(peer, os.urandom(20000))
            await wait_for_bytes(proto, 60000)
            await asyncio.sleep(0.01)   # the next recv is armed
            getattr(transport, how)()
            assert await proto.lost is None
            with pytest.raises(OSError):
                os.fstat(fd)
            assert await asyncio.wait_for(cloop.sock_recv(peer, 100), 5) == b""
            assert b"".join(proto.chunks) and proto.events.count("lost") == 1

    run(cloop, main())


class SmallBuffers(asyncio.BufferedProtocol):
    def __init__(self):
        self.received = bytearray()
        self.buffer = bytearray(7)
        self.done = None

    def connection_made(self, transport):
        self.transport = transport
        self.done = asyncio.get_running_loop().create_future()

    def get_buffer(self, sizehint):
        return self.buffer

    def buffer_updated(self, nbytes):
        assert 0 < nbytes <= 7
        self.received += self.buffer[:nbytes]

    def eof_received(self):
        self.done.set_result(bytes(self.received))

    def connection_lost(self, exc):
        pass


def test_buffered_protocol_with_buffers_smaller_than_what_came(cloop):
    async def main():
        proto = SmallBuffers()
        transport, peer = await connect(cloop, proto)
        with peer:
            payload = os.urandom(100 * 1024 + 3)
            await cloop.sock_sendall(peer, payload)
            peer.shutdown(socket.SHUT_WR)
            assert await proto.done == payload
            transport.close()

    run(cloop, main())


def test_a_reset_from_the_peer_is_connection_lost_with_the_error(cloop):
    async def main():
        proto = Recorder()
        transport, peer = await connect_tcp(cloop, proto)
        transport.write(b"hello")
        await asyncio.sleep(0.02)
        peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        peer.close()   # unread data and linger 0: a RST
        exc = await proto.lost
        assert isinstance(exc, ConnectionResetError)

    run(cloop, main())


async def connect_tcp(loop, protocol):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    with listener:
        transport, _ = await loop.create_connection(lambda: protocol, *listener.getsockname())
        peer, _ = listener.accept()
    peer.setblocking(False)
    return transport, peer
