# tests/test_pipes.py — connect_read_pipe / connect_write_pipe on every backend: pipes, FIFOs, sockets and a pty;
# regular files rejected; EOF, close, abort and connection_lost exactly once; pause/resume_reading; write
# buffering, water marks and pause/resume_writing; the peer going away; no fd or watcher left behind.
# Under ZLOOP_TEST_CONTROL=1 the same tests run on stock asyncio, which is the reference for every behaviour here.

import asyncio
import errno
import gc
import io
import os
import socket
import sys
import warnings

import pytest

from conftest import TIMEOUT
from net_helpers import fd_count, no_fd_leak, watched


class Recorder(asyncio.Protocol):
    """Records every protocol call; `done` resolves at connection_lost."""

    def __init__(self, loop):
        self.events = []
        self.data = bytearray()
        self.transport = None
        self.lost_exc = None
        self.done = loop.create_future()
        self.paused_writing = 0
        self.resumed_writing = 0

    def connection_made(self, transport):
        self.transport = transport
        self.events.append("made")

    def data_received(self, data):
        assert isinstance(data, bytes)
        if not self.events or self.events[-1] != "data":
            self.events.append("data")
        self.data += data

    def eof_received(self):
        self.events.append("eof")

    def pause_writing(self):
        self.paused_writing += 1
        self.events.append("pause")

    def resume_writing(self):
        self.resumed_writing += 1
        self.events.append("resume")

    def connection_lost(self, exc):
        self.events.append("lost")
        self.lost_exc = exc
        assert not self.done.done(), "connection_lost called twice"
        self.done.set_result(None)

    async def wait_bytes(self, n):
        while len(self.data) < n and not self.done.done():
            await asyncio.sleep(0.001)
        return bytes(self.data)


@pytest.fixture
def pipe():
    """An os.pipe() as unbuffered file objects (rf, wf); closed after the test unless a transport closed them.
    File objects, not raw fds: closing an fd number twice could close an unrelated fd that reused it."""
    r, w = os.pipe()
    rf = open(r, "rb", buffering=0)
    wf = open(w, "wb", buffering=0)
    yield rf, wf
    rf.close()
    wf.close()


@pytest.fixture
def has_is_reading(is_zloop):
    """zloop's read pipes have is_reading() (and honour a pause in connection_made) on every Python; asyncio's
    only from 3.11 on (before, ReadTransport.is_reading raises NotImplementedError)."""
    return is_zloop or sys.version_info >= (3, 11)


def settle(loop, n=3):
    for _ in range(n):
        loop.run_until_complete(asyncio.sleep(0))


def read_all_nonblocking(fd):
    out = bytearray()
    while True:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            return bytes(out)
        if not chunk:
            return bytes(out)
        out += chunk


# ---------------------------------------------------------------------- read pipes


def test_read_pipe_data_then_eof(loop, run, pipe, has_is_reading):
    rf, wf = pipe
    w = wf.fileno()
    with no_fd_leak(loop):
        rpipe = rf
        base = watched(loop)
        transport, proto = run(loop.connect_read_pipe(lambda: Recorder(loop), rpipe))
        assert proto.transport is transport
        assert proto.events == ["made"]
        assert transport.get_extra_info("pipe") is rpipe
        assert not has_is_reading or transport.is_reading()
        os.write(w, b"hello ")
        os.write(w, b"world")
        assert run(proto.wait_bytes(11)) == b"hello world"
        wf.close()
        run(proto.done)
        assert proto.events == ["made", "data", "eof", "lost"]
        assert proto.lost_exc is None
        assert rpipe.closed
        assert transport.is_closing()
        assert watched(loop) == base


def test_read_pipe_large_volume(loop, run, pipe):
    rf, wf = pipe
    rpipe = rf
    wpipe = wf
    transport, proto = run(loop.connect_read_pipe(lambda: Recorder(loop), rpipe))
    wtransport, wproto = run(loop.connect_write_pipe(lambda: Recorder(loop), wpipe))
    payload = os.urandom(4 * 1024 * 1024)
    wtransport.write(payload)
    wtransport.close()
    run(proto.done)
    run(wproto.done)
    assert bytes(proto.data) == payload
    assert wproto.lost_exc is None


def test_read_pipe_pause_resume(loop, run, pipe, has_is_reading):
    rf, wf = pipe
    w = wf.fileno()
    transport, proto = run(loop.connect_read_pipe(lambda: Recorder(loop), rf))
    base = watched(loop)
    transport.pause_reading()
    transport.pause_reading()  # twice is harmless
    assert not has_is_reading or not transport.is_reading()
    assert watched(loop) == base - 1
    os.write(w, b"x" * 100)
    loop.run_until_complete(asyncio.sleep(0.05))
    assert proto.data == b""
    transport.resume_reading()
    transport.resume_reading()
    assert not has_is_reading or transport.is_reading()
    assert run(proto.wait_bytes(100)) == b"x" * 100
    transport.close()
    run(proto.done)
    assert proto.events == ["made", "data", "lost"]


def test_read_pipe_paused_in_connection_made_does_not_read(loop, run, pipe, has_is_reading):
    if not has_is_reading:
        pytest.skip("asyncio before 3.11 starts reading even when connection_made() paused")
    rf, wf = pipe
    w = wf.fileno()

    class PausesAtOnce(Recorder):
        def connection_made(self, transport):
            super().connection_made(transport)
            transport.pause_reading()

    os.write(w, b"early")
    transport, proto = run(loop.connect_read_pipe(lambda: PausesAtOnce(loop), rf))
    loop.run_until_complete(asyncio.sleep(0.05))
    assert proto.data == b""
    transport.resume_reading()
    assert run(proto.wait_bytes(5)) == b"early"
    transport.close()
    run(proto.done)


def test_read_pipe_close_calls_connection_lost_once(loop, run, pipe, has_is_reading):
    rf, wf = pipe
    with no_fd_leak(loop):
        rpipe = rf
        base = watched(loop)
        transport, proto = run(loop.connect_read_pipe(lambda: Recorder(loop), rpipe))
        transport.close()
        transport.close()
        assert transport.is_closing()
        assert not has_is_reading or not transport.is_reading()
        run(proto.done)
        settle(loop)
        assert proto.events == ["made", "lost"]
        assert proto.lost_exc is None
        assert rpipe.closed
        assert watched(loop) == base
        transport.pause_reading()  # no effect once closed
        transport.resume_reading()


def test_read_pipe_close_in_data_received(loop, run, pipe):
    rf, wf = pipe
    w = wf.fileno()

    class ClosesOnData(Recorder):
        def data_received(self, data):
            super().data_received(data)
            self.transport.close()

    transport, proto = run(loop.connect_read_pipe(lambda: ClosesOnData(loop), rf))
    os.write(w, b"abc")
    run(proto.done)
    assert proto.events == ["made", "data", "lost"]


def test_read_fifo(loop, run, tmp_path):
    path = str(tmp_path / "fifo")
    os.mkfifo(path)
    # Opening a FIFO's read end with O_NONBLOCK does not wait for a writer.
    rfd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    wfd = os.open(path, os.O_WRONLY)
    try:
        transport, proto = run(loop.connect_read_pipe(lambda: Recorder(loop), open(rfd, "rb", buffering=0)))
        os.write(wfd, b"through the fifo")
        assert run(proto.wait_bytes(16)) == b"through the fifo"
    finally:
        os.close(wfd)
    run(proto.done)
    assert proto.events == ["made", "data", "eof", "lost"]


def test_read_socket(loop, run):
    a, b = socket.socketpair()
    try:
        transport, proto = run(loop.connect_read_pipe(lambda: Recorder(loop), a))
        b.sendall(b"via a socket")
        assert run(proto.wait_bytes(12)) == b"via a socket"
        b.close()
        run(proto.done)
        assert proto.events == ["made", "data", "eof", "lost"]
        assert a.fileno() == -1  # the transport closed it
    finally:
        a.close()
        b.close()


def test_read_pty_master(loop, run):
    master, slave = os.openpty()
    handler_calls = []
    loop.set_exception_handler(lambda lp, ctx: handler_calls.append(ctx))
    try:
        master_obj = open(master, "rb", buffering=0)
        transport, proto = run(loop.connect_read_pipe(lambda: Recorder(loop), master_obj))
        os.write(slave, b"1")
        assert run(proto.wait_bytes(1)) == b"1"
        os.write(slave, b"2345")
        assert run(proto.wait_bytes(5)) == b"12345"
    finally:
        os.close(slave)
    # Closing the slave makes the master's read fail with EIO: connection_lost(that error), nothing logged.
    run(proto.done)
    assert master_obj.closed
    assert isinstance(proto.lost_exc, OSError) and proto.lost_exc.errno == errno.EIO
    assert proto.events[-1] == "lost" and "eof" not in proto.events
    assert handler_calls == []


def test_write_pty_slave_and_bidirectional(loop, run):
    master, slave = os.openpty()
    os.set_blocking(master, False)
    # Raw mode, so the terminal line discipline neither echoes nor transforms what goes through.
    import tty
    tty.setraw(slave)
    slave_obj = open(slave, "wb", buffering=0)
    try:
        wtransport, wproto = run(loop.connect_write_pipe(lambda: Recorder(loop), slave_obj))
        wtransport.write(b"to the master")
        got = bytearray()

        async def collect():
            while len(got) < 13:
                got.extend(read_all_nonblocking(master))
                await asyncio.sleep(0.001)

        run(collect())
        assert bytes(got) == b"to the master"
        wtransport.close()
        run(wproto.done)
        assert wproto.lost_exc is None
        assert slave_obj.closed
    finally:
        os.close(master)


def test_pty_bidirectional_transports(loop, run):
    master, slave = os.openpty()
    import tty
    tty.setraw(slave)
    master_r = open(master, "rb", buffering=0)
    master_w = open(os.dup(master), "wb", buffering=0)
    try:
        rtransport, rproto = run(loop.connect_read_pipe(lambda: Recorder(loop), master_r))
        wtransport, wproto = run(loop.connect_write_pipe(lambda: Recorder(loop), master_w))
        wtransport.write(b"ping")
        got = bytearray()

        async def collect_slave():
            os.set_blocking(slave, False)
            while len(got) < 4:
                got.extend(read_all_nonblocking(slave))
                await asyncio.sleep(0.001)

        run(collect_slave())
        assert bytes(got) == b"ping"
        os.write(slave, b"pong")
        assert run(rproto.wait_bytes(4)) == b"pong"
        wtransport.close()
        run(wproto.done)
    finally:
        os.close(slave)
    run(rproto.done)


# ---------------------------------------------------------------------- what is rejected


@pytest.mark.parametrize("direction", ["read", "write"])
def test_regular_file_rejected(loop, run, tmp_path, direction):
    path = tmp_path / "regular"
    path.write_bytes(b"data")
    with no_fd_leak(loop):
        f = open(path, "r+b", buffering=0)
        base = watched(loop)
        connect = loop.connect_read_pipe if direction == "read" else loop.connect_write_pipe
        made = []
        with pytest.raises(ValueError):
            run(connect(lambda: made.append(1) or Recorder(loop), f))
        settle(loop)
        assert not f.closed  # the caller still owns it
        assert watched(loop) == base
        with warnings.catch_warnings():
            warnings.simplefilter("error", ResourceWarning)
            gc.collect()  # the rejected transport must not warn or close the file on collection
        assert not f.closed
        f.close()


@pytest.mark.parametrize("direction", ["read", "write"])
def test_bad_pipe_objects(loop, run, direction, pipe):
    connect = loop.connect_read_pipe if direction == "read" else loop.connect_write_pipe
    with pytest.raises(AttributeError):
        run(connect(lambda: Recorder(loop), object()))  # no fileno()
    rf, wf = pipe
    r = rf.fileno()
    closed = open(os.dup(r), "rb", buffering=0)
    closed.close()
    with pytest.raises(ValueError):
        run(connect(lambda: Recorder(loop), closed))  # fileno() of a closed file


def test_connect_pipe_on_closed_loop(make_loop, pipe, is_zloop):
    other = make_loop()
    rf, wf = pipe
    rpipe = open(os.dup(rf.fileno()), "rb", buffering=0)
    other.close()
    coro = other.connect_read_pipe(asyncio.Protocol, rpipe)
    with pytest.raises(RuntimeError):
        coro.send(None)
    coro.close()
    if is_zloop:
        assert not rpipe.closed  # zloop fails before taking the pipe (asyncio closes it, with a ResourceWarning)
    rpipe.close()


# ---------------------------------------------------------------------- write pipes


def test_write_pipe_immediate_and_eof(loop, run, pipe):
    rf, wf = pipe
    r = rf.fileno()
    with no_fd_leak(loop):
        wpipe = wf
        base = watched(loop)
        transport, proto = run(loop.connect_write_pipe(lambda: Recorder(loop), wpipe))
        assert transport.get_extra_info("pipe") is wpipe
        assert transport.can_write_eof()
        transport.write(b"abc")
        transport.write(bytearray(b"def"))
        transport.write(memoryview(b"ghi"))
        transport.write(b"")
        assert transport.get_write_buffer_size() == 0
        assert os.read(r, 100) == b"abcdefghi"
        transport.write_eof()
        assert transport.is_closing()
        run(proto.done)
        assert proto.events == ["made", "lost"]
        assert proto.lost_exc is None
        assert wpipe.closed
        assert os.read(r, 100) == b""  # EOF for the reader
        assert watched(loop) == base
        transport.write(b"dropped")  # after close: silently dropped, as asyncio does
        transport.close()
        transport.write_eof()


def test_write_pipe_buffers_and_flow_control(loop, run, pipe):
    rf, wf = pipe
    r = rf.fileno()
    transport, proto = run(loop.connect_write_pipe(lambda: Recorder(loop), wf))
    assert transport.get_write_buffer_limits() == (16 * 1024, 64 * 1024)
    payload = os.urandom(2 * 1024 * 1024)
    transport.write(payload)  # fills the pipe, the rest waits in the buffer
    assert transport.get_write_buffer_size() > 64 * 1024
    assert proto.paused_writing == 1
    transport.write(b"tail")
    assert proto.paused_writing == 1  # once, not per write
    os.set_blocking(r, False)
    got = bytearray()

    async def drain_reader():
        while len(got) < len(payload) + 4:
            got.extend(read_all_nonblocking(r))
            await asyncio.sleep(0)

    run(drain_reader())
    assert bytes(got) == payload + b"tail"
    assert transport.get_write_buffer_size() == 0
    assert proto.resumed_writing == 1
    assert proto.events == ["made", "pause", "resume"]
    transport.close()
    run(proto.done)
    assert proto.lost_exc is None


def test_write_buffer_limits(loop, run, pipe):
    rf, wf = pipe
    transport, proto = run(loop.connect_write_pipe(lambda: Recorder(loop), wf))
    transport.set_write_buffer_limits(high=1000)
    assert transport.get_write_buffer_limits() == (250, 1000)
    transport.set_write_buffer_limits(low=100)
    assert transport.get_write_buffer_limits() == (100, 400)
    transport.set_write_buffer_limits(high=0)
    assert transport.get_write_buffer_limits() == (0, 0)
    transport.set_write_buffer_limits()
    assert transport.get_write_buffer_limits() == (16 * 1024, 64 * 1024)
    with pytest.raises(ValueError):
        transport.set_write_buffer_limits(high=10, low=20)
    with pytest.raises(ValueError):
        transport.set_write_buffer_limits(high=-1, low=-2)
    # Lowering the high mark below what is buffered pauses the protocol at once.
    transport.write(b"x" * (1024 * 1024))
    assert transport.get_write_buffer_size() > 0
    transport.set_write_buffer_limits(high=10 * 1024 * 1024)
    transport.abort()
    run(proto.done)


def test_write_pipe_close_flushes_buffer(loop, run, pipe):
    rf, wf = pipe
    r = rf.fileno()
    transport, proto = run(loop.connect_write_pipe(lambda: Recorder(loop), wf))
    payload = os.urandom(512 * 1024)
    transport.write(payload)
    transport.close()
    assert transport.is_closing()
    transport.write(b"after close")  # dropped
    os.set_blocking(r, False)
    got = bytearray()

    async def drain_reader():
        while not proto.done.done() or len(got) < len(payload):
            got.extend(read_all_nonblocking(r))
            await asyncio.sleep(0)

    run(drain_reader())
    assert bytes(got) == payload
    assert os.read(r, 10) == b""
    assert proto.lost_exc is None
    assert proto.events.count("lost") == 1


def test_write_pipe_abort_drops_buffer(loop, run, pipe):
    rf, wf = pipe
    with no_fd_leak(loop):
        base = watched(loop)
        transport, proto = run(loop.connect_write_pipe(lambda: Recorder(loop), wf))
        transport.write(b"y" * (1024 * 1024))
        assert transport.get_write_buffer_size() > 0
        transport.close()  # would flush...
        transport.abort()  # ...but abort drops the rest
        transport.abort()
        assert transport.get_write_buffer_size() == 0
        run(proto.done)
        settle(loop)
        assert proto.events.count("lost") == 1
        assert proto.lost_exc is None
        assert watched(loop) == base


def test_write_pipe_reader_closes_while_idle(loop, run, pipe):
    rf, wf = pipe
    r = rf.fileno()
    transport, proto = run(loop.connect_write_pipe(lambda: Recorder(loop), wf))
    transport.write(b"1")
    assert os.read(r, 10) == b"1"
    rf.close()
    run(proto.done)
    assert proto.lost_exc is None  # nothing was pending: a plain close
    assert transport.is_closing()


def test_write_pipe_reader_closes_with_pending_data(loop, run, pipe):
    rf, wf = pipe
    transport, proto = run(loop.connect_write_pipe(lambda: Recorder(loop), wf))
    transport.write(b"z" * (1024 * 1024))
    assert transport.get_write_buffer_size() > 0
    rf.close()
    run(proto.done)
    assert isinstance(proto.lost_exc, BrokenPipeError)


def test_write_pipe_epipe_on_write(loop, run, pipe):
    rf, wf = pipe
    handler_calls = []
    loop.set_exception_handler(lambda lp, ctx: handler_calls.append(ctx))
    transport, proto = run(loop.connect_write_pipe(lambda: Recorder(loop), wf))
    rf.close()
    transport.write(b"into the void")  # EPIPE before the loop noticed the reader went away
    run(proto.done)
    assert isinstance(proto.lost_exc, BrokenPipeError)
    assert handler_calls == []  # an OSError on a pipe is no application bug: not logged
    for _ in range(10):
        transport.write(b"more")  # dropped, counted


def test_write_socket_peer_closes(loop, run):
    a, b = socket.socketpair()
    wobj = io.open(a.detach(), "wb", buffering=0)
    try:
        transport, proto = run(loop.connect_write_pipe(lambda: Recorder(loop), wobj))
        transport.write(b"1")
        b.setblocking(True)
        b.settimeout(TIMEOUT)
        assert b.recv(10) == b"1"
        b.close()
        run(proto.done)
        assert proto.lost_exc is None
        assert wobj.closed
    finally:
        b.close()


def test_write_fifo(loop, run, tmp_path):
    path = str(tmp_path / "fifo")
    os.mkfifo(path)
    rfd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        wobj = open(path, "wb", buffering=0)  # does not block: the FIFO has a reader
        transport, proto = run(loop.connect_write_pipe(lambda: Recorder(loop), wobj))
        transport.write(b"into the fifo")
        transport.close()
        run(proto.done)
        assert os.read(rfd, 100) == b"into the fifo"
        assert os.read(rfd, 100) == b""
    finally:
        os.close(rfd)


def test_write_pipe_non_byte_memoryview(loop, run, pipe):
    rf, wf = pipe
    r = rf.fileno()
    transport, proto = run(loop.connect_write_pipe(lambda: Recorder(loop), wf))
    import array
    data = array.array("i", range(100))
    transport.write(memoryview(data))
    assert os.read(r, 10000) == data.tobytes()
    transport.close()
    run(proto.done)


@pytest.mark.zloop_only
def test_write_pipe_rejects_str(loop, run, pipe):
    # asyncio asserts (AssertionError, or nothing under -O); zloop raises TypeError like its socket transports.
    rf, wf = pipe
    transport, proto = run(loop.connect_write_pipe(lambda: Recorder(loop), wf))
    with pytest.raises(TypeError):
        transport.write("text")
    transport.close()
    run(proto.done)


def test_write_protocol_pause_writing_error_goes_to_handler(loop, run, pipe):
    rf, wf = pipe
    handler_calls = []
    loop.set_exception_handler(lambda lp, ctx: handler_calls.append(ctx))

    class BadPause(Recorder):
        def pause_writing(self):
            raise ZeroDivisionError("pause")

    transport, proto = run(loop.connect_write_pipe(lambda: BadPause(loop), wf))
    transport.write(b"q" * (1024 * 1024))
    assert len(handler_calls) == 1
    assert isinstance(handler_calls[0]["exception"], ZeroDivisionError)
    assert handler_calls[0]["transport"] is transport
    transport.abort()
    run(proto.done)


@pytest.mark.zloop_only
def test_write_from_resume_writing(loop, run, pipe):
    # Stock asyncio loses `extra` here when the pipe is full again: its flush path ends the transport as soon as
    # the old buffer is out, whatever resume_writing() added; zloop writes it, then closes.
    rf, wf = pipe
    r = rf.fileno()
    extra = b"written from resume_writing"

    class WritesOnResume(Recorder):
        def resume_writing(self):
            super().resume_writing()
            self.transport.write(extra)
            self.transport.close()

    transport, proto = run(loop.connect_write_pipe(lambda: WritesOnResume(loop), wf))
    payload = b"p" * (1024 * 1024)
    transport.write(payload)
    os.set_blocking(r, False)
    got = bytearray()

    async def drain_reader():
        while not proto.done.done() or len(got) < len(payload) + len(extra):
            got.extend(read_all_nonblocking(r))
            await asyncio.sleep(0)

    run(drain_reader())
    assert bytes(got) == payload + extra


# ---------------------------------------------------------------------- lifetime


def test_unclosed_transports_after_loop_close(make_loop, pipe):
    other = make_loop()
    rf, wf = pipe
    r, w = rf.fileno(), wf.fileno()
    rpipe = open(os.dup(r), "rb", buffering=0)
    wpipe = open(os.dup(w), "wb", buffering=0)

    async def connect():
        rt, _ = await other.connect_read_pipe(asyncio.Protocol, rpipe)
        wt, _ = await other.connect_write_pipe(asyncio.BaseProtocol, wpipe)
        return rt, wt

    rt, wt = other.run_until_complete(asyncio.wait_for(connect(), TIMEOUT))
    other.close()
    assert "open" in repr(rt)
    assert "open" in repr(wt)
    # Dropping an unclosed transport warns and closes its pipe.
    with pytest.warns(ResourceWarning):
        del rt, wt
        gc.collect()
    assert rpipe.closed and wpipe.closed


@pytest.mark.zloop_only
def test_close_after_loop_closed_releases_the_pipe(make_loop, pipe):
    # asyncio raises RuntimeError('Event loop is closed') here (often from a __del__); zloop lets go of the pipe.
    other = make_loop()
    rf, wf = pipe
    rpipe = open(os.dup(rf.fileno()), "rb", buffering=0)
    wpipe = open(os.dup(wf.fileno()), "wb", buffering=0)

    async def connect():
        rt, _ = await other.connect_read_pipe(asyncio.Protocol, rpipe)
        wt, _ = await other.connect_write_pipe(asyncio.BaseProtocol, wpipe)
        return rt, wt

    rt, wt = other.run_until_complete(asyncio.wait_for(connect(), TIMEOUT))
    other.close()
    rt.close()
    wt.abort()
    assert rpipe.closed and wpipe.closed
    assert rt.is_closing() and wt.is_closing()
    assert "closed" in repr(rt) and "closed" in repr(wt)


def test_repr(loop, run, pipe):
    rf, wf = pipe
    r, w = rf.fileno(), wf.fileno()
    rt, rp = run(loop.connect_read_pipe(lambda: Recorder(loop), rf))
    wt, wp = run(loop.connect_write_pipe(lambda: Recorder(loop), wf))
    assert f"fd={r}" in repr(rt) and "polling" in repr(rt)
    rt.pause_reading()
    assert "idle" in repr(rt)
    assert f"fd={w}" in repr(wt) and "bufsize=0" in repr(wt)
    rt.close()
    wt.close()
    assert "closing" in repr(rt) and "closing" in repr(wt)
    run(rp.done)
    run(wp.done)
    assert "closed" in repr(rt) and "closed" in repr(wt)


def test_set_get_protocol(loop, run, pipe):
    rf, wf = pipe
    w = wf.fileno()
    rt, rp = run(loop.connect_read_pipe(lambda: Recorder(loop), rf))
    other = Recorder(loop)
    assert rt.get_protocol() is rp
    rt.set_protocol(other)
    assert rt.get_protocol() is other
    os.write(w, b"to other")
    assert run(other.wait_bytes(8)) == b"to other"
    assert rp.data == b""
    rt.close()
    run(other.done)


def test_many_pipes_no_fd_leak(loop, run):
    # 50 read/write pairs opened, used and closed: the fd count and the loop's watch count come back.
    with no_fd_leak(loop):
        base = watched(loop)

        async def one_pair():
            r, w = os.pipe()
            rt, rp = await loop.connect_read_pipe(lambda: Recorder(loop), open(r, "rb", buffering=0))
            wt, wp = await loop.connect_write_pipe(lambda: Recorder(loop), open(w, "wb", buffering=0))
            wt.write(b"m" * 1000)
            wt.close()
            await rp.done
            await wp.done
            return bytes(rp.data)

        async def all_pairs():
            return await asyncio.gather(*[one_pair() for _ in range(50)])

        results = run(all_pairs())
        assert results == [b"m" * 1000] * 50
        settle(loop)
        assert watched(loop) == base


def test_connection_made_error_still_connects(loop, run, pipe):
    # As in asyncio: an exception in connection_made goes to the handler; the pipe is still connected.
    rf, wf = pipe
    handler_calls = []
    loop.set_exception_handler(lambda lp, ctx: handler_calls.append(ctx))

    class Bad(Recorder):
        def connection_made(self, transport):
            super().connection_made(transport)
            raise RuntimeError("in connection_made")

    rt, rp = run(loop.connect_read_pipe(lambda: Bad(loop), rf))
    assert len(handler_calls) == 1
    wf.close()
    run(rp.done)


@pytest.mark.skipif(sys.platform != "linux", reason="/proc/self/fd")
def test_fd_count_helper_sane():
    assert fd_count() > 2
