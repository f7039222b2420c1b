# tests/difffuzz/executor.py — replays one operation sequence on one loop (a zloop backend or stock asyncio) and
# returns what a program can observe: op results and exception types, callback order, bytes, connection_lost, fds left.
#
# A program is a list of tuples ("op", *args) built by machine.py; every index in it (sockets, handles, transports)
# is the position of an earlier op's object, so the same program means the same thing on every loop kind.

import asyncio
import gc
import inspect
import math
import os
import socket
import sys
import time

# Payload values: ("bytes", b) and friends are rebuilt here so that non-picklable views can be written.
_MAKERS = {
    "bytes": bytes,
    "bytearray": bytearray,
    "memoryview": lambda b: memoryview(bytes(b)),
    "str": str,
    "int": int,
    "float": float,
    "none": lambda _: None,
    "big": lambda size: b"\x07" * size,
    "list": None,  # handled in make_value
}


def make_value(spec):
    """Build an argument from its spec: ("bytes", b"..."), ("list", [spec, ...]), ("none", None), ..."""
    kind, raw = spec
    if kind == "list":
        return [make_value(item) for item in raw]
    return _MAKERS[kind](raw)


FLOAT_MAX = sys.float_info.max


def close_unstarted(coro):
    """Close a coroutine run_until_complete refused (closed loop), never one a task is still running."""
    if inspect.getcoroutinestate(coro) == inspect.CORO_CREATED:
        coro.close()


def open_fds():
    return set(os.listdir("/proc/self/fd"))


def describe(value):
    """A loop-independent picture of a return value."""
    if value is None or isinstance(value, (bool, int, str, bytes)):
        return value
    if isinstance(value, float):
        return "float"
    if isinstance(value, tuple):
        return tuple(describe(v) for v in value)
    return type(value).__name__


class CallbackRaised(ValueError):
    """What the 'raise' callbacks raise; the exception handler records its type."""


class Recorder:
    """What stream and datagram protocols record alike."""

    def __init__(self, run, label, opts):
        self.run, self.label, self.opts = run, label, opts

    def connection_made(self, transport):
        self.run.event("made", self.label)

    def connection_lost(self, exc):
        self.run.event("lost", self.label, type(exc).__name__ if exc is not None else None)

    def pause_writing(self):
        self.run.event("pause_writing", self.label)

    def resume_writing(self):
        self.run.event("resume_writing", self.label)


class StreamRecorder(Recorder, asyncio.Protocol):
    def data_received(self, data):
        self.run.event("data", self.label)
        self.run.data(("t", self.label), data)
        if "raise_data" in self.opts:
            raise CallbackRaised("data_received")

    def eof_received(self):
        self.run.event("eof", self.label)
        return "keep_open" in self.opts


class DatagramRecorder(Recorder, asyncio.DatagramProtocol):
    def datagram_received(self, data, addr):
        self.run.event("datagram", self.label, bytes(data), describe(addr))
        if "raise_data" in self.opts:
            raise CallbackRaised("datagram_received")

    def error_received(self, exc):
        self.run.event("error_received", self.label, type(exc).__name__)


class Run:
    """One program on one loop: holds the objects its ops refer to and the trace it produces."""

    def __init__(self, new_loop):
        self.baseline = open_fds()
        self.loop = new_loop()
        self.loop.set_exception_handler(self._exception_handler)
        # zloop opens its signal wakeup socketpair at the first run, asyncio its self-pipe at creation: one empty
        # iteration first, so the fd numbers the program's sockets get (and reuse) are alike (accepted.py).
        self.loop.call_soon(self.loop.stop)
        self.loop.run_forever()
        self.trace = []          # ordered events and op results
        self.streams = {}        # stream key -> bytes received, compared as a whole (chunking is timing)
        self.objects = {}        # op index -> socket / handle / (transport, protocol)
        self.fileno = {}         # op index of a socket -> its fd number when created
        self.deadline_first = {}  # deadline -> op index of the first timer scheduled for it
        self.ties, self.tie_groups = {}, {}  # timer op index -> that first index; first index -> the timers

    # ---- recording
    def event(self, *what):
        self.trace.append(what)

    def data(self, key, chunk):
        self.streams[key] = self.streams.get(key, b"") + bytes(chunk)

    def _exception_handler(self, loop, context):
        exc = context.get("exception")
        self.event("exception_handler", type(exc).__name__ if exc is not None else None)

    # ---- callbacks
    def callback(self, label, behaviour):
        def cb():
            tie = self.ties.get(label[0]) if len(label) == 1 else None
            if tie is not None and len(self.tie_groups[tie]) > 1:
                self.event("cb", label, "same deadline as", tie)  # accepted.py: their order is asyncio's heap's
            else:
                self.event("cb", label)
            self.behave(label, behaviour)
        return cb

    def note_deadline(self, index):
        """Group timers whose deadlines are the same number (huge values absorb the clock, equal call_at values)."""
        when = self.objects[index].when()
        first = self.deadline_first.setdefault(float(when) if isinstance(when, int) else when, index)
        self.ties[index] = first
        self.tie_groups.setdefault(first, []).append(index)

    def behave(self, label, behaviour):
        kind = behaviour[0]
        if kind == "raise":
            raise CallbackRaised(str(label))
        if kind == "stop":
            self.loop.stop()
        elif kind == "close":
            self.loop.close()
        elif kind == "soon":
            self.loop.call_soon(self.callback(label + ("soon",), ("record",)))
        elif kind == "cancel":
            handle = self.objects.get(behaviour[1])
            if handle is not None:
                handle.cancel()
        elif kind == "interrupt":
            raise KeyboardInterrupt

    def unwatch(self, remove, fd):
        """remove_reader/remove_writer from inside a callback; refused while a transport owns the fd (RuntimeError)."""
        try:
            return remove(fd)
        except Exception as exc:
            return type(exc).__name__

    def reader(self, label, fd, behaviour):
        done = []

        def on_readable():
            if done:  # could not be removed: level-triggered, it fires again each iteration (how often is timing)
                return
            if behaviour[0] == "remove":
                done.append(True)
                self.event("reader", label, "removed", self.unwatch(self.loop.remove_reader, fd))
                return
            try:
                chunk = os.read(fd, 65536)
            except OSError as exc:
                chunk = type(exc).__name__
            if not isinstance(chunk, bytes) or not chunk:
                done.append(True)
                self.event("reader", label, chunk or "eof", self.unwatch(self.loop.remove_reader, fd))
                return
            self.event("reader", label)
            self.data(("r", label), chunk)
            if behaviour[0] == "raise":
                raise CallbackRaised("reader")
        return on_readable

    def writer(self, label, fd):
        done = []

        def on_writable():
            if done:
                return
            done.append(True)
            try:
                written = os.write(fd, b"w%d;" % label)
            except OSError as exc:
                written = type(exc).__name__
            self.event("writer", label, written, self.unwatch(self.loop.remove_writer, fd))
        return on_writable

    # ---- ops
    def fd_of(self, ref):
        """An fd argument: ("sock", index) is that socket's fd number, even when closed or reused; else a raw value."""
        if isinstance(ref, tuple) and ref and ref[0] == "sock":
            return self.fileno[ref[1]]
        return make_value(ref)

    def execute(self, index, op):
        name, args = op[0], op[1:]
        try:
            result = getattr(self, "op_" + name)(index, *args)
        except KeyboardInterrupt:
            self.event("op", index, name, "raised", "KeyboardInterrupt")
        except Exception as exc:  # the type is what the program observes
            self.event("op", index, name, "raised", type(exc).__name__)
        else:
            self.event("op", index, name, describe(result))

    def op_pair(self, index, kind):
        """A socketpair; returns which ends took the fd number of a socket the program closed (reuse is observable)."""
        closed = {n for k, n in self.fileno.items() if self.objects[k].fileno() == -1}
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM if kind == "stream" else socket.SOCK_DGRAM)
        for end, sock in ((0, a), (1, b)):
            sock.setblocking(False)
            self.objects[(index, end)] = sock
            self.fileno[(index, end)] = sock.fileno()
        if self.loop.is_closed():  # the loop's own fds are free again, and loops own different numbers of them
            return None
        return tuple(end for end in (0, 1) if self.fileno[(index, end)] in closed)

    def op_soon(self, index, behaviour):
        self.objects[index] = self.loop.call_soon(self.callback((index,), behaviour))

    def op_later(self, index, delay, behaviour):
        delay = make_value(delay)
        self.objects[index] = self.loop.call_later(delay, self.callback((index,), behaviour))
        self.note_deadline(index)
        if isinstance(delay, float) and math.isnan(delay):
            return "nan deadline"  # accepted.py: where it runs among due timers is asyncio's heap layout

    def op_at(self, index, when, relative, behaviour):
        when = make_value(when)
        if relative:
            when = self.loop.time() + when
        self.objects[index] = self.loop.call_at(when, self.callback((index,), behaviour))
        if isinstance(when, int) and abs(when) > FLOAT_MAX:
            return "int beyond float"  # accepted.py: asyncio's run fails on it later, zloop's call_at at once
        if isinstance(when, float) and math.isnan(when):
            return "nan deadline"
        if not isinstance(when, (int, float)):
            return "raised", "TypeError"  # asyncio took it (its heap was empty): accepted.py
        self.note_deadline(index)


    def op_cancel(self, index, handle):
        return self.objects[handle].cancel()

    def op_cancelled(self, index, handle):
        return self.objects[handle].cancelled()

    def op_add_reader(self, index, ref, behaviour):
        fd = self.fd_of(ref)
        return self.loop.add_reader(fd, self.reader(index, fd, behaviour))

    def op_remove_reader(self, index, ref):
        return self.loop.remove_reader(self.fd_of(ref))

    def op_add_writer(self, index, ref):
        fd = self.fd_of(ref)
        return self.loop.add_writer(fd, self.writer(index, fd))

    def op_remove_writer(self, index, ref):
        return self.loop.remove_writer(self.fd_of(ref))

    def op_stream(self, index, sock, opts):
        protocol = StreamRecorder(self, index, opts)
        coro = self.loop.connect_accepted_socket(lambda: protocol, self.objects[sock])
        try:
            transport, _ = self.loop.run_until_complete(coro)
        finally:
            close_unstarted(coro)
        self.objects[index] = transport

    def op_datagram(self, index, sock, opts):
        if sys.version_info < (3, 12):
            # asyncio refuses a socket whose fd a live transport holds from 3.12 on (RuntimeError from
            # _make_datagram_transport), zloop on every version: before 3.12 the loop's own check is asked first.
            self.loop._ensure_fd_no_transport(self.objects[sock])
        protocol = DatagramRecorder(self, index, opts)
        coro = self.loop.create_datagram_endpoint(lambda: protocol, sock=self.objects[sock])
        try:
            transport, _ = self.loop.run_until_complete(coro)
        finally:
            close_unstarted(coro)
        self.objects[index] = transport

    def op_call(self, index, transport, method, args):
        values = [make_value(a) for a in args]
        if method == "set_write_buffer_limits" and any(isinstance(v, float) for v in values):
            try:  # asyncio keeps a float water mark, zloop raises TypeError: accepted.py, compared up to here
                self.objects[transport].set_write_buffer_limits(*values)
            except TypeError:
                pass
            return "float water mark"
        return getattr(self.objects[transport], method)(*values)

    def op_extra(self, index, transport, name):
        return self.objects[transport].get_extra_info(name, "default")

    def op_extra_kw(self, index, transport, name):
        return self.objects[transport].get_extra_info(name, default="default")

    def op_send(self, index, sock, payload):
        return self.objects[sock].send(make_value(payload))

    def op_drain(self, index, sock):
        """Read what the peer has received (compared as one stream per socket); returns whether EOF was seen."""
        s = self.objects[sock]
        while True:
            try:
                chunk = s.recv(65536)
            except BlockingIOError:
                return False
            if not chunk:
                return True
            self.data(("peer", sock), chunk)

    def op_shutdown(self, index, sock):
        self.objects[sock].shutdown(socket.SHUT_WR)

    def op_close_sock(self, index, sock):
        self.objects[sock].close()

    def op_stop(self, index):
        self.loop.stop()

    def op_close(self, index):
        self.loop.close()

    def op_is_closed(self, index):
        return (self.loop.is_closed(), self.loop.is_running())

    def op_run(self, index, seconds):
        guard = self.loop.call_later(seconds, self.loop.stop)
        try:
            self.loop.run_forever()
        finally:
            guard.cancel()

    def op_run_once(self, index):
        self.loop.call_soon(self.loop.stop)
        self.loop.run_forever()

    # ---- for the fuzzer's own tests (never generated): a worker that dies or hangs
    def op_selftest_signal(self, index, signum):
        os.kill(os.getpid(), signum)

    def op_selftest_sleep(self, index, seconds):
        time.sleep(seconds)

    # ---- the whole program
    def settle(self):
        """After the program: let pending writes reach the peers, read them, then close everything the program made."""
        # What the program abandoned (a task a KeyboardInterrupt or a stop left pending) is finalized when the
        # garbage is collected: by reference counting on zloop, often only by the cycle collector on asyncio.
        # Collect at fixed points so that what finalization does lands at the same place in both traces.
        gc.collect()
        if not self.loop.is_closed():
            self.execute("end", ("run", 0.08))
        # A transport closed after loop.close() raises RuntimeError on both, but asyncio's socket stays open until the
        # transport is collected; zloop's is closed already. Collect first, so the peers' EOF compares (accepted).
        gc.collect()
        for key, obj in list(self.objects.items()):
            if isinstance(obj, socket.socket) and obj.fileno() != -1:
                self.execute("end", ("drain", key))
        self.execute("end", ("is_closed",))
        if not self.loop.is_closed():
            self.execute("end", ("close",))
        for obj in self.objects.values():
            if isinstance(obj, socket.socket):
                obj.close()
        self.objects.clear()
        gc.collect()
        gc.collect()
        leaked = open_fds() - self.baseline
        self.event("fds_left_open", len(leaked))


def run_program(program, new_loop):
    """Replay `program` on a fresh loop from new_loop(); return (events, streams)."""
    run = Run(new_loop)
    try:
        for index, op in enumerate(program):
            run.execute(index, op)
        run.settle()
    finally:
        loop, run.loop = run.loop, None
        if not loop.is_running() and not loop.is_closed():
            loop.close()
    return run.trace, run.streams
