# tests/test_reliability.py — misuse a new user might try (NaN and huge numbers, wrong types, a closed loop, closed
# or reused fds, calls from callbacks) never crashes, hangs, leaks or crosses connections, on every backend.
#
# Each test holds what stock asyncio does (ZLOOP_TEST_CONTROL=1 runs it on asyncio too), or, where asyncio
# misbehaves, what it documents; docs/compatibility.md lists those places.

import asyncio
import contextlib
import errno
import fcntl
import gc
import math
import os
import socket
import sys
import threading

import pytest

from conftest import TIMEOUT, WAKE_BOUND
from net_helpers import fd_count, no_fd_leak


@contextlib.contextmanager
def watchdog(loop, seconds=TIMEOUT):
    """Stop the loop from another thread after `seconds`: a loop blocked for ever in its poll still wakes up.
    Yields a list that holds True once the watchdog had to fire."""
    fired = []
    done = threading.Event()

    def expire():
        if not done.wait(seconds):
            fired.append(True)
            loop.call_soon_threadsafe(loop.stop)

    thread = threading.Thread(target=expire, daemon=True)
    thread.start()
    try:
        yield fired
    finally:
        done.set()
        thread.join()


def run_until_stopped(loop, seconds=TIMEOUT):
    with watchdog(loop, seconds) as fired:
        loop.run_forever()
    assert not fired, f"the loop was not stopped within {seconds} s"


# ---------------------------------------------------------------------- timers: NaN, infinities, huge, wrong types

@pytest.mark.parametrize("nan_first", [True, False], ids=["nan-first", "nan-second"])
@pytest.mark.parametrize("method", ["call_later", "call_at"])
def test_nan_timer_leaves_other_timers_firing(loop, method, nan_first):
    nan = float("nan")
    ran = []

    def schedule_nan():
        return getattr(loop, method)(nan, ran.append, "nan")

    if nan_first:
        handle = schedule_nan()
    loop.call_later(0.01, ran.append, "a")
    if not nan_first:
        handle = schedule_nan()
    loop.call_later(0.02, ran.append, "b")
    loop.call_later(0.05, loop.stop)
    run_until_stopped(loop)
    assert math.isnan(handle.when())
    # asyncio runs the NaN timer whenever its heap happens to put it first; it runs, and so do the others, in order.
    assert sorted(ran) == ["a", "b", "nan"]
    assert [x for x in ran if x != "nan"] == ["a", "b"]


@pytest.mark.parametrize("delay", [float("inf"), 1e300, float(sys.float_info.max)])
def test_timer_far_in_the_future_never_fires_and_never_blocks_the_others(loop, delay):
    ran = []
    far = loop.call_later(delay, ran.append, "far")
    loop.call_later(0.01, ran.append, "a")
    loop.call_later(0.02, loop.stop)
    run_until_stopped(loop)
    assert ran == ["a"]
    assert far.when() >= 1e300
    far.cancel()


def test_timer_far_in_the_future_alone_lets_a_threadsafe_call_through(loop):
    far = loop.call_later(float("inf"), lambda: None)
    threading.Timer(0.05, loop.call_soon_threadsafe, (loop.stop,)).start()
    run_until_stopped(loop)
    far.cancel()


@pytest.mark.parametrize("delay", [float("-inf"), -1e300, -5, 0, -0.0, False])
def test_timer_in_the_past_fires_at_once(loop, delay):
    ran = []
    loop.call_later(delay, ran.append, delay)
    loop.call_later(0.01, loop.stop)
    run_until_stopped(loop)
    assert ran == [delay]


@pytest.mark.parametrize("value,exc", [("x", TypeError), (None, TypeError), (b"1", TypeError), ([], TypeError),
                                       (10**400, OverflowError), (-10**400, OverflowError)])
def test_call_later_bad_delay_raises_and_schedules_nothing(loop, value, exc):
    with pytest.raises(exc):
        loop.call_later(value, lambda: None)
    ran = []
    loop.call_soon(ran.append, 1)
    loop.call_soon(loop.stop)
    run_until_stopped(loop)
    assert ran == [1]


@pytest.mark.zloop_only
@pytest.mark.parametrize("value,exc", [("x", TypeError), (b"1", TypeError), (10**400, OverflowError)])
def test_call_at_bad_deadline_raises_at_once(loop, value, exc):
    # asyncio stores any object and fails later, in the loop itself, when it compares or subtracts it;
    # its documentation says `when` is an int or a float: zloop refuses anything else where it is given.
    with pytest.raises(exc):
        loop.call_at(value, lambda: None)
    loop.call_soon(loop.stop)
    run_until_stopped(loop)


def test_call_at_int_and_huge_float_deadlines(loop):
    ran = []
    h = loop.call_at(int(loop.time()), ran.append, "int")
    assert isinstance(h.when(), int)
    loop.call_at(1e308, ran.append, "never")
    loop.call_later(0.01, loop.stop)
    run_until_stopped(loop)
    assert ran == ["int"]


def test_cancelled_nan_and_inf_timers_are_dropped(loop):
    handles = [loop.call_later(v, lambda: None) for v in (float("nan"), float("inf"), float("-inf"))] * 50
    for h in handles:
        h.cancel()
    loop.call_later(0.01, loop.stop)
    run_until_stopped(loop)


# ---------------------------------------------------------------------- stream transports: misuse

class Recorder(asyncio.Protocol):
    """Records what the transport tells it."""

    def __init__(self):
        self.transport = None
        self.data = bytearray()
        self.lost = []
        self.events = []

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.data += data

    def eof_received(self):
        self.events.append("eof")

    def connection_lost(self, exc):
        self.lost.append(exc)


def connect_pair(loop, protocol=None):
    """(transport, protocol, peer socket): a stream transport over one end of a socket pair."""
    ours, peer = socket.socketpair()
    protocol = protocol or Recorder()
    transport, _ = loop.run_until_complete(loop.create_connection(lambda: protocol, sock=ours))
    peer.settimeout(TIMEOUT)
    return transport, protocol, peer


def recv_all(peer):
    """Everything the peer receives until EOF."""
    chunks = []
    while True:
        chunk = peer.recv(65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def peer_pending(peer):
    peer.setblocking(False)
    try:
        return peer.recv(65536)
    except BlockingIOError:
        return None
    finally:
        peer.settimeout(TIMEOUT)


def finish(transport):
    """Close the socket of a transport its loop can no longer close (the loop was closed under it)."""
    sock = transport.get_extra_info("socket")
    if sock is not None and transport._sock is not None:
        transport._sock.close()


CLOSED_LOOP_CALLS = [
    # method, arguments, the exception asyncio raises (None: it works), what the peer then receives
    ("resume_reading", (), RuntimeError, None),
    ("pause_reading", (), None, None),
    ("write", (b"x",), None, b"x"),
    ("writelines", ([b"x", b"y"],), None, b"xy"),
    ("close", (), RuntimeError, None),
    ("abort", (), RuntimeError, None),
    ("write_eof", (), None, b""),
    ("is_closing", (), None, None),
    ("get_write_buffer_size", (), None, None),
    ("set_write_buffer_limits", (100,), None, None),
]


@pytest.mark.parametrize("method,args,exc,peer_gets", CLOSED_LOOP_CALLS, ids=[c[0] for c in CLOSED_LOOP_CALLS])
def test_transport_methods_after_loop_close(loop, method, args, exc, peer_gets):
    transport, protocol, peer = connect_pair(loop)
    with peer:
        transport.pause_reading()
        loop.close()
        if exc is None:
            getattr(transport, method)(*args)
        else:
            with pytest.raises(exc, match="closed"):
                getattr(transport, method)(*args)
        assert peer_pending(peer) == peer_gets
        # Whatever was tried, nothing else works on it, and nothing crashes.
        for again in ("pause_reading", "is_reading", "get_write_buffer_size", "is_closing"):
            getattr(transport, again)()
        assert protocol.lost == []
        finish(transport)


def test_transport_resume_reading_after_loop_close_then_collected(loop):
    transport, protocol, peer = connect_pair(loop)
    with peer:
        transport.pause_reading()
        loop.close()
        with pytest.raises(RuntimeError):
            transport.resume_reading()
        finish(transport)
        del transport, protocol
        gc.collect()


def test_writelines_with_a_str_queues_nothing_and_close_still_completes(loop, run):
    transport, protocol, peer = connect_pair(loop)
    with peer:
        with pytest.raises(TypeError):
            transport.writelines([b"a", "b"])
        with pytest.raises(TypeError):
            transport.writelines([b"a", 1])
        released = memoryview(b"z")
        released.release()
        with pytest.raises((TypeError, ValueError)):   # asyncio: TypeError up to 3.11, ValueError from 3.12
            transport.writelines([b"a", released])
        assert transport.get_write_buffer_size() == 0
        transport.writelines([b"ok", bytearray(b"!")])
        transport.close()
        run(asyncio.sleep(0.01))
        for _ in range(100):
            if protocol.lost:
                break
            run(asyncio.sleep(0.01))
        assert protocol.lost == [None]
        assert recv_all(peer) == b"ok!"


def test_writelines_not_iterable(loop):
    transport, protocol, peer = connect_pair(loop)
    with peer:
        with pytest.raises(TypeError):
            transport.writelines(5)
        transport.close()
        loop.run_until_complete(asyncio.sleep(0.01))


def test_get_extra_info_default_by_keyword(loop):
    transport, protocol, peer = connect_pair(loop)
    with peer:
        assert transport.get_extra_info("nope", default=1) == 1
        assert transport.get_extra_info("nope", 2) == 2
        assert transport.get_extra_info(name="nope", default=3) == 3
        assert transport.get_extra_info("nope") is None
        assert transport.get_extra_info("socket", default=1) is not None
        with pytest.raises(TypeError):
            transport.get_extra_info()
        with pytest.raises(TypeError):
            transport.get_extra_info("a", 1, 2)
        with pytest.raises(TypeError):
            transport.get_extra_info("a", dflt=1)
        with pytest.raises(TypeError):
            transport.get_extra_info("a", name="b")
        with pytest.raises(TypeError):
            transport.get_extra_info(["unhashable"])
        transport.close()
        loop.run_until_complete(asyncio.sleep(0.01))


@pytest.mark.parametrize("high,low,expected", [
    (None, 2**40, (2**40, 2**42)),
    (2**41, None, (2**39, 2**41)),
    (0, 0, (0, 0)),
    (None, None, (16384, 65536)),
    (True, False, (0, 1)),
])
def test_set_write_buffer_limits_values(loop, high, low, expected):
    transport, protocol, peer = connect_pair(loop)
    with peer:
        transport.set_write_buffer_limits(high=high, low=low)
        assert transport.get_write_buffer_limits() == expected
        transport.close()
        loop.run_until_complete(asyncio.sleep(0.01))


def test_set_write_buffer_limits_beyond_any_buffer(loop):
    transport, protocol, peer = connect_pair(loop)
    with peer:
        # asyncio keeps Python ints of any size; zloop clamps what no buffer can reach to sys.maxsize.
        transport.set_write_buffer_limits(low=2**62)
        low, high = transport.get_write_buffer_limits()
        assert low == 2**62 and high >= sys.maxsize
        transport.set_write_buffer_limits(high=10**30)
        low, high = transport.get_write_buffer_limits()
        assert high >= sys.maxsize and low >= sys.maxsize // 4
        transport.write(b"x" * 100000)   # no pause_writing, nothing overflows
        transport.close()
        loop.run_until_complete(asyncio.sleep(0.01))
        assert recv_all(peer) == b"x" * 100000


@pytest.mark.parametrize("high,low,exc", [
    (1, 2, ValueError), (-1, None, ValueError), (None, -1, ValueError), (-10**30, None, ValueError),
    ("a", None, TypeError), (None, b"1", TypeError),
])
def test_set_write_buffer_limits_bad_values(loop, high, low, exc):
    transport, protocol, peer = connect_pair(loop)
    with peer:
        before = transport.get_write_buffer_limits()
        with pytest.raises(exc):
            transport.set_write_buffer_limits(high=high, low=low)
        assert transport.get_write_buffer_limits() == before
        transport.close()
        loop.run_until_complete(asyncio.sleep(0.01))


# ---------------------------------------------------------------------- add_reader / add_writer: bad fds

def _fd_beyond_limit():
    import resource
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft + 10


@pytest.mark.parametrize("method", ["add_reader", "add_writer"])
@pytest.mark.parametrize("fd,exc", [
    (10**8, OSError), (2**31 - 1, OSError), (2**31, OverflowError), (2**70, OverflowError),
    (-1, ValueError), (-2**70, ValueError), ("beyond-rlimit", OSError), ("closed", OSError),
])
def test_add_reader_writer_bad_fd_fails_at_once(loop, method, fd, exc):
    if fd == "beyond-rlimit":
        fd = _fd_beyond_limit()
    elif fd == "closed":
        a, b = socket.socketpair()
        fd = a.fileno()
        a.close()
        b.close()
    with pytest.raises(exc) as info:
        getattr(loop, method)(fd, lambda: None)
    if exc is OSError:
        assert info.value.errno == 9
    # Nothing was registered, the loop still runs, and removing it says it was not there.
    remove = getattr(loop, method.replace("add", "remove"))
    if not isinstance(fd, int) or fd >= 0:
        assert remove(fd) is False
    loop.call_soon(loop.stop)
    run_until_stopped(loop)


@pytest.mark.zloop_only
def test_add_reader_huge_fd_does_not_grow_the_fd_table(loop):
    import resource
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for fd in (10**6, 10**7, 10**8, 2**31 - 1):
        with pytest.raises(OSError):
            loop.add_reader(fd, lambda: None)
        with pytest.raises(OSError):
            loop.add_writer(fd, lambda: None)
    # ru_maxrss is in KiB: a table grown to 10**8 slots would be gigabytes.
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before < 64 * 1024
    assert loop._watched_fd_count == 0


def test_add_reader_on_a_high_open_fd(loop):
    import resource
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    a, b = socket.socketpair()
    high = os.dup2(a.fileno(), min(soft - 1, 4000))
    try:
        got = []
        loop.add_reader(high, lambda: (got.append(os.read(high, 10)), loop.stop()))
        b.send(b"hi")
        run_until_stopped(loop)
        assert got == [b"hi"]
        assert loop.remove_reader(high) is True
    finally:
        os.close(high)
        a.close()
        b.close()


def test_data_received_adds_a_reader_on_a_new_high_fd(loop):
    # The uv backend grew its array of fired fds inside watch() while the core still walked the old one (a use
    # after free that ASan and valgrind report); every transport readable in that poll must still be served.
    import resource
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    pairs = [socket.socketpair() for _ in range(4)]
    spare_a, spare_b = socket.socketpair()
    high = os.dup2(spare_a.fileno(), min(soft - 1, 8000))
    got = {}
    added = []

    class Adder(asyncio.Protocol):
        def __init__(self, index):
            self.index = index

        def data_received(self, data):
            got[self.index] = data
            if not added:
                loop.add_reader(high, lambda: None)
                added.append(True)
            if len(got) == len(pairs):
                loop.stop()

    try:
        transports = []
        for i, (ours, _) in enumerate(pairs):
            tr, _ = loop.run_until_complete(loop.create_connection(lambda i=i: Adder(i), sock=ours))
            transports.append(tr)
        for i, (_, peer) in enumerate(pairs):
            peer.send(b"%d" % i)
        run_until_stopped(loop)
        assert got == {i: b"%d" % i for i in range(len(pairs))}
        assert loop.remove_reader(high) is True
        for tr in transports:
            tr.close()
        loop.run_until_complete(asyncio.sleep(0.01))
    finally:
        os.close(high)
        for a, b in pairs + [(spare_a, spare_b)]:
            a.close()
            b.close()


# ---------------------------------------------------------------------- closing, servers, KeyboardInterrupt

def test_write_after_the_closing_drain_never_reaches_the_fd(loop):
    # close() with data queued: once the queue drains, connection_lost is due and nothing more may be sent
    # (asyncio runs connection_lost right there; a write after it is dropped).
    transport, protocol, peer = connect_pair(loop)
    loop.set_exception_handler(lambda loop, context: None)
    with peer:
        transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        payload = b"p" * 1_000_000
        transport.write(payload)
        assert transport.get_write_buffer_size() > 0
        transport.close()
        late = []

        def poke():
            if protocol.lost:
                loop.stop()
                return
            if transport.get_write_buffer_size() == 0 and not late:
                late.append(True)
                transport.write(b"LATE")
            loop.call_soon(poke)

        reader = threading.Thread(target=lambda: late.append(recv_all(peer)))
        reader.start()
        loop.call_soon(poke)
        run_until_stopped(loop)
        reader.join(TIMEOUT)
        received = late[-1]
        assert received == payload
        assert protocol.lost[0] is None


class NoConnectionMade:
    """A protocol object the transport cannot start: it has no connection_made."""

    def data_received(self, data):
        pass


def test_server_wait_closed_after_a_protocol_the_transport_could_not_start(loop, run):
    async def main():
        server = await loop.create_server(NoConnectionMade, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        await asyncio.sleep(0.05)               # the server accepts it and fails to start its transport
        writer.close()
        await writer.wait_closed()
        gc.collect()                            # asyncio's half-made transport closes its socket when collected
        server.close()
        await asyncio.wait_for(server.wait_closed(), WAKE_BOUND)

    run(main())


@pytest.mark.zloop_only
def test_server_forgets_a_transport_it_could_not_start(loop, run):
    async def main():
        server = await loop.create_server(NoConnectionMade, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await reader.read() == b""
        writer.close()
        assert server._active_count == 0
        server.close()
        await server.wait_closed()

    run(main())


def test_keyboard_interrupt_in_data_received_keeps_what_it_scheduled(loop):
    ran = []

    class Interrupting(asyncio.Protocol):
        def data_received(self, data):
            loop.call_soon(lambda: (ran.append("scheduled"), loop.stop()))
            raise KeyboardInterrupt

    ours, peer = socket.socketpair()
    with peer:
        transport, _ = loop.run_until_complete(loop.create_connection(Interrupting, sock=ours))
        far = loop.call_later(3600, lambda: None)   # the poll has a timer to wait for, not just nothing
        peer.send(b"x")
        with pytest.raises(KeyboardInterrupt):
            run_until_stopped(loop)
        expired = []
        guard = loop.call_later(WAKE_BOUND, lambda: (expired.append(True), loop.stop()))
        run_until_stopped(loop)   # nothing but the scheduled callback stops it
        guard.cancel()
        far.cancel()
        assert ran == ["scheduled"] and not expired
        transport.abort()
        loop.run_until_complete(asyncio.sleep(0))


# ---------------------------------------------------------------------- handles

def _clear_like_the_gc(obj):
    """Run the type's tp_clear on obj, as the cyclic GC does to an object in an unreachable cycle."""
    import ctypes
    py_tp_clear = 51   # Include/typeslots.h
    get_slot = ctypes.pythonapi.PyType_GetSlot
    get_slot.restype = ctypes.c_void_p
    get_slot.argtypes = [ctypes.py_object, ctypes.c_int]
    address = get_slot(type(obj), py_tp_clear)
    if not address:
        pytest.skip("this handle type has no tp_clear: the GC never clears it")
    ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.py_object)(address)(obj)   # with the GIL held


@pytest.mark.zloop_only
@pytest.mark.skipif(sys.version_info < (3, 10), reason="PyType_GetSlot on static types needs 3.10")
@pytest.mark.parametrize("method", ["call_soon", "call_later"])
def test_handle_methods_after_the_gc_cleared_it(loop, method):
    args = (0,) if method == "call_later" else ()
    handle = getattr(loop, method)(*args, print, "x")
    handle.cancel()
    _clear_like_the_gc(handle)
    assert handle.get_context() is None
    repr(handle)
    handle.cancelled()
    handle.cancel()
    loop.call_soon(loop.stop)
    run_until_stopped(loop)


# ---------------------------------------------------------------------- fork

@pytest.mark.zloop_only
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_child_does_not_share_the_signal_socket(loop):
    import signal
    import time
    from test_fork import run_in_child

    parent_got = []
    loop.add_signal_handler(signal.SIGUSR1, parent_got.append, "parent")
    try:
        loop.run_until_complete(asyncio.sleep(0))
        parent_inode = os.fstat(loop._signal_rsock.fileno()).st_ino

        def child():
            # Signal itself and leave without running the loop: a byte in a shared socket would reach the parent.
            assert os.fstat(loop._signal_rsock.fileno()).st_ino != parent_inode
            os.kill(os.getpid(), signal.SIGUSR1)
            time.sleep(0.05)
            return True

        status, text = run_in_child(child)
        assert status == 0, text
        loop.run_until_complete(asyncio.sleep(0.05))
        assert parent_got == []
        # The parent's own signals still arrive.
        os.kill(os.getpid(), signal.SIGUSR1)
        loop.run_until_complete(asyncio.sleep(0.05))
        assert parent_got == ["parent"]
    finally:
        loop.remove_signal_handler(signal.SIGUSR1)


# ---------------------------------------------------------------------- sockets closed behind the transport

def _reuse_number(fd):
    """A new socket pair whose first socket has the number fd (the lowest free number is handed out next)."""
    a, b = socket.socketpair()
    if a.fileno() != fd:
        os.dup2(a.fileno(), fd)
        a.close()
        a = socket.socket(fileno=fd)
    return a, b


def _pending(sock):
    sock.setblocking(False)
    try:
        return sock.recv(65536)
    except BlockingIOError:
        return b""
    finally:
        sock.settimeout(TIMEOUT)


async def _accepted_transport(loop, protocol):
    ours, peer = socket.socketpair()
    transport, _ = await loop.connect_accepted_socket(lambda: protocol, ours)
    return transport, ours, peer


@pytest.mark.parametrize("how", ["create_connection", "connect_accepted_socket"])
def test_write_after_the_caller_closed_the_socket_never_reaches_the_new_owner(loop, how):
    loop.set_exception_handler(lambda loop, context: None)
    protocol = Recorder()
    ours, peer = socket.socketpair()
    if how == "create_connection":
        transport, _ = loop.run_until_complete(loop.create_connection(lambda: protocol, sock=ours))
    else:
        transport, _ = loop.run_until_complete(loop.connect_accepted_socket(lambda: protocol, ours))
    number = ours.fileno()
    ours.close()                        # misuse: the transport owns it
    other, other_peer = _reuse_number(number)
    with peer, other, other_peer:
        transport.write(b"secret")
        loop.run_until_complete(asyncio.sleep(0.01))
        assert _pending(other_peer) == b""
        assert len(protocol.lost) == 1
        assert isinstance(protocol.lost[0], OSError) and protocol.lost[0].errno == 9
        # The transport is done; nothing it is asked to do touches the number again.
        transport.write(b"again")
        transport.writelines([b"and", b"again"])
        transport.close()
        transport.abort()
        loop.run_until_complete(asyncio.sleep(0.01))
        assert _pending(other_peer) == b""
        other.send(b"still works")
        assert other_peer.recv(100) == b"still works"


def test_write_eof_after_the_caller_closed_the_socket(loop):
    transport, protocol, peer = connect_pair(loop)
    with peer:
        number = transport.get_extra_info("socket").fileno()
        transport._sock.close()
        other, other_peer = _reuse_number(number)
        with other, other_peer:
            with pytest.raises(OSError) as info:
                transport.write_eof()
            assert info.value.errno == 9
            other.send(b"open")
            assert other_peer.recv(100) == b"open"   # not shut down
            loop.set_exception_handler(lambda loop, context: None)
            transport.abort()
            loop.run_until_complete(asyncio.sleep(0.01))


@pytest.mark.zloop_only
def test_a_new_transport_on_a_reused_number_works_and_the_old_one_leaves_it_alone(loop):
    # asyncio keeps the closed socket's selector key, so the new transport on that number is never polled.
    loop.set_exception_handler(lambda loop, context: None)
    old_protocol, new_protocol = Recorder(), Recorder()
    ours, peer = socket.socketpair()
    old, _ = loop.run_until_complete(loop.create_connection(lambda: old_protocol, sock=ours))
    number = ours.fileno()
    ours.close()
    reused, reused_peer = _reuse_number(number)
    with peer, reused_peer:
        new, _ = loop.run_until_complete(loop.create_connection(lambda: new_protocol, sock=reused))
        reused_peer.send(b"for the new one")
        loop.run_until_complete(asyncio.sleep(0.05))
        assert new_protocol.data == b"for the new one" and old_protocol.data == b""
        # Everything the old transport is asked to do fails or is ignored; the new one keeps its fd.
        old.pause_reading()
        with pytest.raises(OSError):
            old.resume_reading()
        old.write(b"secret")
        loop.run_until_complete(asyncio.sleep(0.01))
        assert isinstance(old_protocol.lost[0], OSError)
        old.abort()
        old.close()
        reused_peer.send(b" and more")
        new.write(b"reply")
        loop.run_until_complete(asyncio.sleep(0.05))
        assert new_protocol.data == b"for the new one and more"
        assert reused_peer.recv(100) == b"reply"
        assert new_protocol.lost == []
        with pytest.raises(RuntimeError):
            loop.add_reader(number, lambda: None)   # still the new transport's
        new.close()
        loop.run_until_complete(asyncio.sleep(0.01))
        assert new_protocol.lost == [None]
        assert recv_all(reused_peer) == b""


@pytest.mark.zloop_only
def test_reading_transport_whose_socket_was_closed_never_reads_the_new_owner(loop):
    old_protocol, new_protocol = Recorder(), Recorder()
    ours, peer = socket.socketpair()
    old, _ = loop.run_until_complete(loop.create_connection(lambda: old_protocol, sock=ours))
    loop.run_until_complete(asyncio.sleep(0))
    number = ours.fileno()
    ours.close()
    reused, reused_peer = _reuse_number(number)
    with peer, reused_peer:
        new, _ = loop.run_until_complete(loop.create_connection(lambda: new_protocol, sock=reused))
        for i in range(5):
            reused_peer.send(b"%d" % i)
            loop.run_until_complete(asyncio.sleep(0.01))
        assert new_protocol.data == b"01234" and old_protocol.data == b""
        new.close()
        loop.set_exception_handler(lambda loop, context: None)
        old.abort()
        loop.run_until_complete(asyncio.sleep(0.01))


class DatagramRecorder(asyncio.DatagramProtocol):
    def __init__(self):
        self.errors = []
        self.received = []
        self.lost = []

    def datagram_received(self, data, addr):
        self.received.append(data)

    def error_received(self, exc):
        self.errors.append(exc)

    def connection_lost(self, exc):
        self.lost.append(exc)


def test_datagram_sendto_after_the_caller_closed_the_socket(loop):
    protocol = DatagramRecorder()
    ours = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    ours.bind(("127.0.0.1", 0))
    ours.setblocking(False)
    target = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    target.bind(("127.0.0.1", 0))
    with target:
        transport, _ = loop.run_until_complete(loop.create_datagram_endpoint(lambda: protocol, sock=ours))
        number = ours.fileno()
        ours.close()
        other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        if other.fileno() != number:
            os.dup2(other.fileno(), number)
            other.close()
            other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, fileno=number)
        with other:
            other.bind(("127.0.0.1", 0))
            transport.sendto(b"secret", target.getsockname())
            loop.run_until_complete(asyncio.sleep(0.01))
            assert _pending(target) == b""
            assert protocol.errors and protocol.errors[0].errno == 9
            transport.abort()
            loop.run_until_complete(asyncio.sleep(0.01))


# ---------------------------------------------------------------------- a reader or writer whose file was closed
#
# add_reader/add_writer watch the open file, not its number (asyncio's epoll registration dies with the file). Closed
# without remove_reader/remove_writer, the watch is dead: it never fires for a new file that reused the number;
# changing its events fails as EPOLL_CTL_MOD does (FileNotFoundError; EBADF while the number is free) and forgets
# the number, after which add_reader/add_writer of the new file work. "registered": the loop ran once before the
# close (libuv registers a watch at its next run).

def _spin(loop, seconds=0.05):
    loop.call_later(seconds, loop.stop)
    run_until_stopped(loop)


def _dead_watch(loop, events, registered):
    """Watch a socket for each of events, close it (maybe after a run), reuse its number: (number, fired, new pair)."""
    _spin(loop, 0)                      # zloop opens its signal wake-up socketpair at the first run
    fired = []
    ours, peer = socket.socketpair()
    number = ours.fileno()
    for event in events:
        getattr(loop, f"add_{event}")(number, fired.append, f"old {event}")
    if registered:
        _spin(loop, 0.01)
        fired.clear()                   # the old socket was writable: that is not under test
    ours.close()
    peer.close()
    new, new_peer = _reuse_number(number)
    new_peer.send(b"for the new socket")   # readable and writable: a watch following the number would fire
    return number, fired, new, new_peer


@pytest.mark.parametrize("registered", [False, True], ids=["fresh", "registered"])
@pytest.mark.parametrize("event", ["reader", "writer"])
def test_a_watch_of_a_closed_file_never_fires_for_the_file_reusing_its_number(loop, event, registered):
    number, fired, new, new_peer = _dead_watch(loop, [event], registered)
    with new, new_peer:
        _spin(loop)
        # Adding the same side again replaces the callback of the dead watch (no system call in asyncio either).
        getattr(loop, f"add_{event}")(number, fired.append, "again")
        _spin(loop)
        assert fired == []
        assert getattr(loop, f"remove_{event}")(number) is True
        # Now the number is free: a new watch is of the new socket, and fires.
        getattr(loop, f"add_{event}")(new, lambda: (fired.append("new"), loop.stop()))
        run_until_stopped(loop)
        assert fired == ["new"]
        assert getattr(loop, f"remove_{event}")(new) is True


@pytest.mark.parametrize("registered", [False, True], ids=["fresh", "registered"])
@pytest.mark.parametrize("event", ["reader", "writer"])
def test_adding_the_other_side_of_a_dead_watch_raises_file_not_found_and_forgets_it(loop, event, registered):
    other = "writer" if event == "reader" else "reader"
    number, fired, new, new_peer = _dead_watch(loop, [event], registered)
    with new, new_peer:
        with pytest.raises(FileNotFoundError):
            getattr(loop, f"add_{other}")(number, fired.append, "other")
        # The number was forgotten with its dead watch: nothing to remove, and a new watch works.
        assert getattr(loop, f"remove_{event}")(number) is False
        assert getattr(loop, f"remove_{other}")(number) is False
        _spin(loop)
        assert fired == []
        getattr(loop, f"add_{other}")(number, lambda: (fired.append("new"), loop.stop()))
        run_until_stopped(loop)
        assert fired == ["new"]
        assert getattr(loop, f"remove_{other}")(number) is True


@pytest.mark.parametrize("registered", [False, True], ids=["fresh", "registered"])
def test_removing_one_side_of_a_dead_watch_of_both_raises_file_not_found(loop, registered):
    number, fired, new, new_peer = _dead_watch(loop, ["reader", "writer"], registered)
    with new, new_peer:
        with pytest.raises(FileNotFoundError):
            loop.remove_reader(number)
        assert loop.remove_writer(number) is False
        _spin(loop)
        assert fired == []
        loop.add_reader(new, lambda: (fired.append(new.recv(100)), loop.stop()))
        run_until_stopped(loop)
        assert fired == [b"for the new socket"]
        assert loop.remove_reader(new) is True


@pytest.mark.parametrize("other", [False, True], ids=["same-side", "other-side"])
def test_a_socket_removed_then_closed_leaves_its_reused_number_free(loop, other):
    # zloop keeps a removed socket object's event registered until the next poll (a stale event, io_watch.c): for
    # asyncio it is unregistered, so a new socket on the number is watched afresh, whichever side it adds.
    _spin(loop, 0)
    ours, peer = socket.socketpair()
    with peer:
        loop.add_reader(ours, lambda: None)
        assert loop.remove_reader(ours) is True
        number = ours.fileno()
        ours.close()
        new, new_peer = _reuse_number(number)
        fired = []
        with new, new_peer:
            new_peer.send(b"x")
            if other:
                loop.add_writer(new, lambda: (fired.append("writer"), loop.stop()))
            else:
                loop.add_reader(new, lambda: (fired.append(new.recv(10)), loop.stop()))
            run_until_stopped(loop)
            assert fired == (["writer"] if other else [b"x"])
            assert (loop.remove_writer(new) if other else loop.remove_reader(new)) is True


@pytest.mark.parametrize("registered", [False, True], ids=["fresh", "registered"])
def test_changing_a_watch_of_a_closed_number_raises_ebadf(loop, registered):
    _spin(loop, 0)
    ours, peer = socket.socketpair()
    with peer:
        # A high number nothing else takes while the test runs.
        number = fcntl.fcntl(ours.fileno(), fcntl.F_DUPFD_CLOEXEC, 900)
        ours.close()
        fired = []
        loop.add_reader(number, fired.append, "reader")
        if registered:
            _spin(loop, 0.01)
        os.close(number)
        with pytest.raises(OSError) as info:
            loop.add_writer(number, fired.append, "writer")
        assert info.value.errno == errno.EBADF
        assert loop.remove_reader(number) is False
        assert fired == []


@pytest.mark.parametrize("registered", [False, True], ids=["fresh", "registered"])
@pytest.mark.parametrize("event", ["reader", "writer"])
def test_a_socket_closed_under_its_watch_is_closed_for_its_peer(loop, event, registered):
    # epoll holds no reference to a watched file: closing the socket closes it, and its peer reads EOF at once,
    # before the loop runs again. A per-fd io_uring poll would hold the file open (difffuzz: a transport's socket
    # closed); the uring backend watches through an epoll set for that reason.
    _spin(loop, 0)
    ours, peer = socket.socketpair()
    with peer:
        peer.setblocking(False)
        fired = []
        getattr(loop, f"add_{event}")(ours.fileno(), fired.append, event)
        if registered:
            _spin(loop, 0.01)
        number = ours.fileno()
        ours.close()
        assert peer.recv(10) == b""
        _spin(loop, 0.02)
        getattr(loop, f"remove_{event}")(number)


# ---------------------------------------------------------------------- a closed loop, calls from callbacks

@pytest.mark.parametrize("call", [
    lambda loop: loop.call_later(float("nan"), print),
    lambda loop: loop.call_later(1, print),
    lambda loop: loop.call_at(float("inf"), print),
    lambda loop: loop.call_soon(print),
    lambda loop: loop.add_reader(0, print),
    lambda loop: loop.add_writer(1, print),
], ids=["call_later-nan", "call_later", "call_at-inf", "call_soon", "add_reader", "add_writer"])
def test_scheduling_on_a_closed_loop_raises_runtime_error(loop, call):
    loop.close()
    with pytest.raises(RuntimeError, match="closed"):
        call(loop)


def test_remove_reader_writer_on_a_closed_loop(loop):
    loop.close()
    assert loop.remove_reader(0) is False
    assert loop.remove_writer(1) is False


def test_misuse_from_inside_a_callback(loop):
    errors = []

    def misuse():
        for attempt in (loop.close, loop.run_forever, lambda: loop.run_until_complete(loop.create_future())):
            try:
                attempt()
            except RuntimeError as exc:
                errors.append(type(exc))
        h = loop.call_later(float("nan"), errors.append, "nan-ran")
        loop.call_later(float("inf"), errors.append, "never")
        with pytest.raises(OSError):
            loop.add_reader(10**8, print)
        loop.call_later(0.01, loop.stop)
        return h

    loop.call_soon(misuse)
    run_until_stopped(loop)
    assert errors == [RuntimeError, RuntimeError, RuntimeError, "nan-ran"]
    assert not loop.is_closed()


def test_transport_close_from_its_own_data_received_with_a_str_write(loop):
    class Rude(Recorder):
        def data_received(self, data):
            super().data_received(data)
            with pytest.raises(TypeError):
                self.transport.write("not bytes")
            with pytest.raises(TypeError):
                self.transport.writelines([b"ok", "not bytes"])
            self.transport.write(b"bye")
            self.transport.close()

    transport, protocol, peer = connect_pair(loop, Rude())
    with peer:
        peer.send(b"hi")
        for _ in range(200):
            if protocol.lost:
                break
            loop.run_until_complete(asyncio.sleep(0.01))
        assert protocol.lost == [None]
        assert recv_all(peer) == b"bye"


@pytest.mark.zloop_only
def test_a_transport_on_the_number_of_a_closed_add_reader_socket_is_polled(loop):
    # The caller closed a socket it had given add_reader without remove_reader; the next socket with that
    # number becomes a transport. asyncio keeps the stale selector key and never polls the new transport.
    stale_calls = []
    a, b = socket.socketpair()
    loop.add_reader(a, stale_calls.append, "stale")
    loop.run_until_complete(asyncio.sleep(0))
    number = a.fileno()
    a.close()
    b.close()
    reused, reused_peer = _reuse_number(number)
    protocol = Recorder()
    with reused_peer:
        transport, _ = loop.run_until_complete(loop.create_connection(lambda: protocol, sock=reused))
        reused_peer.send(b"polled")
        for _ in range(100):
            if protocol.data:
                break
            loop.run_until_complete(asyncio.sleep(0.01))
        assert protocol.data == b"polled" and stale_calls == []
        transport.close()
        loop.run_until_complete(asyncio.sleep(0.01))


@pytest.mark.zloop_only
def test_old_transport_leaves_an_add_reader_on_its_reused_number_alone(loop):
    # The number passes from a transport whose socket the caller closed, to a second transport, and once that one
    # closed, to a socket given to add_reader: the first transport's abort must not remove that reader.
    loop.set_exception_handler(lambda loop, context: None)
    ours, peer = socket.socketpair()
    old, _ = loop.run_until_complete(loop.create_connection(Recorder, sock=ours))
    loop.run_until_complete(asyncio.sleep(0))
    number = ours.fileno()
    ours.close()
    second, second_peer = _reuse_number(number)
    middle, _ = loop.run_until_complete(loop.create_connection(Recorder, sock=second))
    middle.close()
    loop.run_until_complete(asyncio.sleep(0.01))     # connection_lost closed the second socket
    third, third_peer = _reuse_number(number)
    got = []
    with peer, second_peer, third, third_peer:
        loop.add_reader(third, lambda: got.append(third.recv(10)))
        old.abort()
        loop.run_until_complete(asyncio.sleep(0.01))
        third_peer.send(b"mine")
        for _ in range(100):
            if got:
                break
            loop.run_until_complete(asyncio.sleep(0.01))
        assert got == [b"mine"]
        assert loop.remove_reader(third) is True


def test_transport_on_a_socket_whose_number_is_closed_fails_in_a_callback(loop):
    # CPython 3.14's test_sslproto.test_connection_lost_when_busy builds a transport on a mock socket whose
    # fileno() names no open file: asyncio makes the transport and reports EBADF only when it starts watching.
    from unittest import mock
    errors = []
    loop.set_exception_handler(lambda _loop, context: errors.append(type(context.get("exception"))))
    sock = mock.Mock()
    sock.fileno = mock.Mock(return_value=12345)
    transport = loop._make_socket_transport(sock, asyncio.Protocol())
    loop.run_until_complete(asyncio.sleep(0.01))
    assert errors and all(issubclass(kind, OSError) for kind in errors)
    transport.abort()
    loop.run_until_complete(asyncio.sleep(0))
