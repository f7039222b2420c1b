# tests/test_readers.py — add_reader/add_writer/remove_reader/remove_writer with fds and socket objects:
# readiness callbacks and their arguments, replacing a watcher, level-triggered readiness, EOF, bad fds
# (same exceptions as asyncio's selector loop, nothing left registered), fds above the initial table size.

import asyncio
import fcntl
import os
import socket
import tempfile

import pytest


@pytest.fixture
def pair():
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    yield a, b
    a.close()
    b.close()


def registered_fds(loop):
    """fds the loop has registered with its backend (zloop), or with its selector (asyncio)."""
    if hasattr(loop, "_watched_fd_count"):
        return loop._watched_fd_count
    return len(loop._selector.get_map())


@pytest.fixture
def watched(loop):
    """watched(): fds registered by the test. The loop runs once first so that fds it keeps for itself
    (asyncio's self-pipe, a signal wake-up socket) are part of the baseline."""
    loop.run_until_complete(asyncio.sleep(0))
    base = registered_fds(loop)
    return lambda: registered_fds(loop) - base


def noop(*args):
    pass


@pytest.mark.parametrize("as_object", [False, True], ids=["fd", "socket"])
def test_reader_fires_with_arguments(loop, run_forever, pair, as_object, watched):
    a, b = pair
    got = []

    def on_readable(*args):
        got.append((args, a.recv(100)))
        assert loop.remove_reader(a if as_object else a.fileno()) is True
        loop.stop()

    loop.add_reader(a if as_object else a.fileno(), on_readable, "x", 2)
    b.send(b"hello")
    run_forever()
    assert got == [(("x", 2), b"hello")]
    assert watched() == 0


@pytest.mark.parametrize("as_object", [False, True], ids=["fd", "socket"])
def test_writer_fires_with_arguments(loop, run_forever, pair, as_object, watched):
    a, _ = pair
    got = []

    def on_writable(*args):
        got.append(args)
        assert loop.remove_writer(a if as_object else a.fileno()) is True
        loop.stop()

    loop.add_writer(a if as_object else a.fileno(), on_writable, 1, 2, 3, 4)
    run_forever()
    assert got == [(1, 2, 3, 4)]
    assert watched() == 0


def test_remove_returns_bool(loop, pair, watched):
    a, _ = pair
    assert loop.remove_reader(a) is False
    assert loop.remove_writer(a) is False
    loop.add_reader(a, noop)
    loop.add_writer(a, noop)
    assert watched() == 1
    assert loop.remove_reader(a) is True
    assert loop.remove_reader(a) is False
    assert watched() == 1
    assert loop.remove_writer(a.fileno()) is True
    assert loop.remove_writer(a.fileno()) is False
    assert watched() == 0


def test_reader_without_readiness_does_not_fire(loop, run_forever, pair):
    a, _ = pair
    got = []
    loop.add_reader(a, got.append, "fired")
    loop.call_later(0.02, loop.stop)
    run_forever()
    assert got == []
    loop.remove_reader(a)


def test_replacing_a_reader(loop, run_forever, pair, is_zloop, watched):
    a, b = pair
    got = []
    first = loop.add_reader(a, got.append, "first")
    second = loop.add_reader(a, lambda: (got.append("second"), a.recv(100), loop.stop()))
    if is_zloop:
        assert first.cancelled(), "the replaced reader's handle is not cancelled"
        assert not second.cancelled()
    b.send(b"x")
    run_forever()
    assert got == ["second"]
    assert watched() == 1
    loop.remove_reader(a)
    if is_zloop:
        assert second.cancelled(), "remove_reader does not cancel the handle"
    assert watched() == 0


def test_replacing_a_writer(loop, run_forever, pair, is_zloop, watched):
    a, _ = pair
    got = []
    first = loop.add_writer(a, got.append, "first")
    loop.add_writer(a, lambda: (got.append("second"), loop.remove_writer(a), loop.stop()))
    if is_zloop:
        assert first.cancelled()
    run_forever()
    assert got == ["second"]
    assert watched() == 0


def test_reader_and_writer_on_the_same_fd(loop, run_forever, pair, watched):
    a, b = pair
    events = []

    def on_writable():
        events.append("w")
        loop.remove_writer(a)
        b.send(b"data")

    def on_readable():
        events.append("r")
        a.recv(100)
        loop.stop()

    loop.add_reader(a, on_readable)
    loop.add_writer(a, on_writable)
    run_forever()
    assert events == ["w", "r"]
    # Removing the writer kept the reader registered.
    assert loop.remove_reader(a) is True
    assert watched() == 0


def test_readiness_is_level_triggered(loop, run_forever, pair):
    a, b = pair
    calls = []

    def on_readable():
        calls.append(1)  # does not read: the fd stays readable
        if len(calls) == 3:
            loop.remove_reader(a)
            loop.stop()

    loop.add_reader(a, on_readable)
    b.send(b"x")
    run_forever()
    assert len(calls) == 3


def test_reader_sees_eof(loop, run_forever, pair):
    a, b = pair
    got = []

    def on_readable():
        got.append(a.recv(100))
        loop.remove_reader(a)
        loop.stop()

    loop.add_reader(a, on_readable)
    b.close()
    run_forever()
    assert got == [b""]


def test_reader_on_a_pipe(loop, run_forever):
    r, w = os.pipe()
    got = []
    try:
        def on_readable():
            got.append(os.read(r, 100))
            loop.remove_reader(r)
            loop.stop()

        loop.add_reader(r, on_readable)
        os.write(w, b"pipe")
        run_forever()
    finally:
        os.close(r)
        os.close(w)
    assert got == [b"pipe"]


def test_remove_reader_from_its_own_callback_stops_further_calls(loop, run_forever, pair):
    a, b = pair
    calls = []

    def on_readable():
        calls.append(1)
        loop.remove_reader(a)  # without reading: must not be called again

    loop.add_reader(a, on_readable)
    b.send(b"x")
    loop.call_later(0.05, loop.stop)
    run_forever()
    assert calls == [1]


def test_many_fds(loop, run_forever, watched):
    pairs = [socket.socketpair() for _ in range(50)]
    got = set()
    try:
        def on_readable(i, sock):
            sock.recv(100)
            got.add(i)
            loop.remove_reader(sock)
            if len(got) == len(pairs):
                loop.stop()

        for i, (a, b) in enumerate(pairs):
            loop.add_reader(a, on_readable, i, a)
        assert watched() == len(pairs)
        for a, b in pairs:
            b.send(b"x")
        run_forever()
    finally:
        for a, b in pairs:
            a.close()
            b.close()
    assert got == set(range(50))
    assert watched() == 0


def test_high_fd_number(loop, run_forever, pair):
    a, b = pair
    high = fcntl.fcntl(a.fileno(), fcntl.F_DUPFD_CLOEXEC, 700)
    got = []
    try:
        def on_readable():
            got.append(os.read(high, 100))
            loop.remove_reader(high)
            loop.stop()

        loop.add_reader(high, on_readable)
        b.send(b"high")
        run_forever()
    finally:
        os.close(high)
    assert got == [b"high"]


def test_fd_closed_while_watched_can_be_removed(loop, run_forever, watched):
    a, b = socket.socketpair()
    fd = a.fileno()
    loop.add_reader(fd, noop)
    a.close()
    assert loop.remove_reader(fd) is True
    assert watched() == 0
    b.close()
    # The number is free again and works for a new socket.
    c, d = socket.socketpair()
    got = []
    try:
        def on_readable():
            got.append(c.recv(10))
            loop.remove_reader(c)
            loop.stop()

        loop.add_reader(c, on_readable)
        d.send(b"new")
        run_forever()
    finally:
        c.close()
        d.close()
    assert got == [b"new"]


def test_reader_callback_runs_in_the_loop_context(loop, run_forever, pair):
    a, b = pair
    seen = []

    def on_readable():
        seen.append(asyncio.get_running_loop() is loop)
        a.recv(10)
        loop.remove_reader(a)
        loop.stop()

    loop.add_reader(a, on_readable)
    b.send(b"x")
    run_forever()
    assert seen == [True]


# ------------------------------------------------------------------ bad fds


def _closed_fd():
    # A high number: new fds take the lowest free number, so nothing reuses it during the test.
    r, w = os.pipe()
    high = fcntl.fcntl(r, fcntl.F_DUPFD_CLOEXEC, 900)
    for fd in (r, w, high):
        os.close(fd)
    return high


class NoFileno:
    pass


class BadFileno:
    def fileno(self):
        return "not an int"


class NegativeFileno:
    def fileno(self):
        return -5


BAD_FDS = {
    "minus-one": lambda tmp: -1,
    "closed-fd": lambda tmp: _closed_fd(),
    "no-fileno": lambda tmp: NoFileno(),
    "fileno-not-int": lambda tmp: BadFileno(),
    "negative-fileno": lambda tmp: NegativeFileno(),
    "string": lambda tmp: "3",
    "float": lambda tmp: 3.0,
    "regular-file": lambda tmp: tmp.fileno(),
    "regular-file-object": lambda tmp: tmp,
}


def _exception_from(call):
    try:
        call()
    except Exception as exc:
        return exc
    return None


@pytest.mark.parametrize("method", ["add_reader", "add_writer"])
@pytest.mark.parametrize("kind", list(BAD_FDS))
def test_bad_fd_raises_like_asyncio_and_registers_nothing(loop, kind, method, watched):
    with tempfile.TemporaryFile() as tmp:
        target = BAD_FDS[kind](tmp)
        aio = asyncio.new_event_loop()
        try:
            before = len(aio._selector.get_map())
            expected = _exception_from(lambda: getattr(aio, method)(target, noop))
            assert len(aio._selector.get_map()) == before
        finally:
            aio.close()
        assert expected is not None, "stock asyncio accepts it: not a bad fd"
        got = _exception_from(lambda: getattr(loop, method)(target, noop))
        assert got is not None, f"{method}({kind}) did not raise"
        assert type(got) is type(expected), f"asyncio raises {expected!r}, the loop raises {got!r}"
        if isinstance(expected, OSError):
            assert got.errno == expected.errno
        assert watched() == 0
        if isinstance(target, int) and target >= 0:
            assert loop.remove_reader(target) is False
            assert loop.remove_writer(target) is False
    # The loop is still fine.
    loop.run_until_complete(asyncio.sleep(0))


@pytest.mark.parametrize("kind", ["minus-one", "no-fileno", "string"])
def test_remove_with_bad_fd_raises_like_asyncio(loop, kind):
    target = BAD_FDS[kind](None)
    aio = asyncio.new_event_loop()
    try:
        expected = _exception_from(lambda: aio.remove_reader(target))
    finally:
        aio.close()
    got = _exception_from(lambda: loop.remove_reader(target))
    assert type(got) is type(expected)


def test_add_reader_needs_a_callback(loop, pair, watched):
    a, _ = pair
    with pytest.raises(TypeError):
        loop.add_reader(a)
    assert watched() == 0


def test_reader_registered_after_a_failed_attempt(loop, run_forever, pair):
    a, b = pair
    with tempfile.TemporaryFile() as tmp:
        with pytest.raises(OSError):
            loop.add_reader(tmp.fileno(), noop)
    got = []
    loop.add_reader(a, lambda: (got.append(a.recv(10)), loop.remove_reader(a), loop.stop()))
    b.send(b"ok")
    run_forever()
    assert got == [b"ok"]


def test_writer_waits_while_the_send_buffer_is_full(loop, run_forever, pair):
    a, b = pair
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    sent = 0
    try:
        while sent < 64 * 1024 * 1024:  # bounded
            sent += a.send(b"x" * 65536)
    except BlockingIOError:
        pass
    fired = []

    def on_writable():
        fired.append(loop.time())
        loop.remove_writer(a)
        loop.stop()

    loop.add_writer(a, on_writable)
    loop.call_later(0.05, lambda: fired.append("still-full") if not fired else None)
    drained = []

    def drain():
        try:
            while True:
                chunk = b.recv(1 << 20)
                if not chunk:
                    break
                drained.append(len(chunk))
        except BlockingIOError:
            pass

    loop.call_later(0.1, drain)
    run_forever()
    assert fired[0] == "still-full", "the writer fired while the send buffer was full"
    assert len(fired) == 2 and drained


def test_reader_removing_the_writer_in_the_same_iteration(loop, run_forever, pair):
    a, b = pair
    b.send(b"x")  # a is readable and writable
    events = []

    def on_readable():
        events.append("r")
        loop.remove_writer(a)  # the writer may already be queued for this iteration: it must not run
        loop.remove_reader(a)
        loop.call_later(0.02, loop.stop)

    def on_writable():
        events.append("w")
        loop.remove_writer(a)

    loop.add_reader(a, on_readable)
    loop.add_writer(a, on_writable)
    run_forever()
    assert events in (["r"], ["w", "r"])


def test_fd_closed_while_watched_then_loop_runs(loop, run_forever, watched):
    a, b = socket.socketpair()
    fd = a.fileno()
    fired = []
    loop.add_reader(fd, fired.append, "closed-fd")
    a.close()
    loop.call_later(0.02, loop.stop)
    run_forever()  # the backend copes with an fd closed under it
    assert loop.remove_reader(fd) is True
    assert watched() == 0
    b.close()
    c, d = socket.socketpair()
    try:
        loop.add_reader(c, lambda: (fired.append(c.recv(10)), loop.remove_reader(c), loop.stop()))
        d.send(b"z")
        run_forever()
    finally:
        c.close()
        d.close()
    assert fired == [b"z"]


# A reader removed with a socket object stays registered with the backend until the loop next blocks (zloop: a
# stale event), so that the next add_reader of the same socket costs no system call. Closing the socket and
# reusing its number in between must not leave the new socket unwatched.

def test_socket_closed_after_remove_then_number_reused(loop, run_forever, watched):
    a, b = socket.socketpair()
    loop.add_reader(a, noop)
    assert loop.remove_reader(a) is True
    number = a.fileno()
    a.close()
    b.close()
    c, d = socket.socketpair()
    got = []
    try:
        if c.fileno() != number:
            c, d = d, c
        assert number in (c.fileno(), d.fileno())
        # The number, not the object: the stale event is not the new socket's.
        loop.add_reader(c.fileno(), lambda: (got.append(c.recv(10)), loop.remove_reader(c), loop.stop()))
        loop.call_later(5, loop.stop)
        d.send(b"reused")
        run_forever()
        assert (got, watched()) == ([b"reused"], 0)
    finally:
        for sock in (c, d):
            sock.close()


def test_remove_then_add_same_socket_keeps_working(loop, run_forever, pair, watched):
    a, b = pair
    got = []

    def on_readable():
        got.append(a.recv(10))
        loop.remove_reader(a)
        if len(got) < 3:
            loop.call_soon(arm)
        else:
            loop.stop()

    def arm():
        loop.add_reader(a, on_readable)
        b.send(b"m%d" % len(got))

    arm()
    loop.call_later(5, loop.stop)
    run_forever()
    assert got == [b"m0", b"m1", b"m2"]
    assert watched() == 0


def test_removed_reader_is_not_called_while_stale(loop, run_forever, pair, watched):
    a, b = pair
    calls = []
    loop.add_reader(a, calls.append, "old")
    loop.remove_reader(a)
    b.send(b"data")   # a is readable, its event still registered: nobody must be called
    loop.call_later(0.05, loop.stop)
    run_forever()
    assert calls == []
    assert watched() == 0


async def _recv_many(loop, a, b, count):
    got = []
    for i in range(count):
        loop.call_soon(b.send, b"%d" % i)
        got.append(await loop.sock_recv(a, 10))
    return got


def test_sock_recv_in_a_row(loop, pair, watched):
    a, b = pair
    got = loop.run_until_complete(asyncio.wait_for(_recv_many(loop, a, b, 5), 5))
    assert got == [b"0", b"1", b"2", b"3", b"4"]
    loop.run_until_complete(asyncio.sleep(0))
    assert watched() == 0


@pytest.mark.parametrize("number", [-1, 10 ** 8, 2 ** 70])
def test_a_closed_loop_refuses_any_fd_number_before_validating_it(loop, number):
    # asyncio checks the loop is open before its selector looks at the number (differential fuzzer).
    loop.close()
    for add in (loop.add_reader, loop.add_writer):
        with pytest.raises(RuntimeError):
            add(number, lambda: None)
    for remove in (loop.remove_reader, loop.remove_writer):
        assert remove(number) is False
    with pytest.raises(ValueError):
        loop.add_reader("not a file", lambda: None)
