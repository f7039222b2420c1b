"""Pipe transports of zloop.Loop: connect_read_pipe / connect_write_pipe, as a mixin.

The transports are Python over add_reader/add_writer and os.read/os.write, with the semantics of asyncio's
unix_events pipe transports: pipes, FIFOs, sockets and character devices (a pty) are accepted, regular files
are rejected with ValueError; a read pipe reports EOF as eof_received() then connection_lost(None); a write
pipe writes at once and buffers only what the pipe does not take, with water marks and pause/resume_writing.
connection_lost() is called exactly once, and the pipe object is closed after it.
"""

import errno
import os
import stat
import warnings
from asyncio import constants, transports
from asyncio.log import logger

__all__ = ["PipeMixin", "ReadPipeTransport", "WritePipeTransport"]

_DEFAULT_HIGH_WATER = 64 * 1024


def _set_result_unless_cancelled(fut, result):
    if not fut.cancelled():
        fut.set_result(result)


def _pipe_kind(fileno):
    """'fifo', 'socket', 'char', or None for anything a pipe transport cannot watch (a regular file...)."""
    mode = os.fstat(fileno).st_mode
    if stat.S_ISFIFO(mode):
        return "fifo"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode):
        return "char"
    return None


class _PipeTransportBase:
    """What both pipe transports share: the pipe, its fd, the loop and connection_lost exactly once."""

    _fileno = None
    _pipe = None  # until the pipe is accepted: a rejected pipe stays the caller's, __del__ leaves it alone

    def _init_pipe(self, loop, pipe, protocol, kinds, message):
        """Check the pipe's kind (ValueError if it is not one of kinds), make it non-blocking, take it."""
        fileno = pipe.fileno()
        kind = _pipe_kind(fileno)
        if kind not in kinds:
            raise ValueError(message)
        os.set_blocking(fileno, False)
        self._extra["pipe"] = pipe
        self._loop = loop
        self._pipe = pipe
        self._fileno = fileno
        self._protocol = protocol
        self._closing = False
        self._lost_scheduled = False
        return kind

    def _loop_usable(self):
        return self._loop is not None and not self._loop.is_closed()

    def _unwatch_reader(self):
        if self._loop_usable():
            self._loop.remove_reader(self._fileno)

    def _unwatch_writer(self):
        if self._loop_usable():
            self._loop.remove_writer(self._fileno)

    def _schedule_connection_lost(self, exc):
        if self._lost_scheduled:
            return
        self._lost_scheduled = True
        if self._loop.is_closed():
            # Closed after its loop (from a __del__, say): no loop will run connection_lost; let go of the pipe.
            self._release_pipe()
            return
        self._loop.call_soon(self._call_connection_lost, exc)

    def _call_connection_lost(self, exc):
        try:
            self._protocol.connection_lost(exc)
        finally:
            self._release_pipe()

    def _release_pipe(self):
        self._pipe.close()
        self._pipe = None
        self._protocol = None
        self._loop = None

    def _state_words(self, watching):
        if self._pipe is None:
            return ["closed", f"fd={self._fileno}"]
        words = ["closing"] if self._closing else []
        words.append(f"fd={self._fileno}")
        if not self._loop_usable():
            words.append("open")
        else:
            words.append("polling" if watching else "idle")
        return words

    def set_protocol(self, protocol):
        self._protocol = protocol

    def get_protocol(self):
        return self._protocol

    def is_closing(self):
        return self._closing

    def __del__(self, _warn=warnings.warn):
        if self._pipe is not None:
            _warn(f"unclosed transport {self!r}", ResourceWarning, source=self)
            self._pipe.close()


class ReadPipeTransport(_PipeTransportBase, transports.ReadTransport):
    """Reads a pipe, FIFO, socket or character device and passes the data to protocol.data_received()."""

    max_size = 256 * 1024  # at most this many bytes per readiness event

    def __init__(self, loop, pipe, protocol, waiter=None, extra=None):
        super().__init__(extra)
        self._paused = False
        self._reading = False  # registered with the loop
        self._init_pipe(loop, pipe, protocol, ("fifo", "socket", "char"),
                        "Pipe transport is for pipes/sockets only.")
        loop.call_soon(protocol.connection_made, self)
        # Reading starts after connection_made(), unless the protocol paused or closed us in it.
        loop.call_soon(self._start_reading)
        if waiter is not None:
            loop.call_soon(_set_result_unless_cancelled, waiter, None)

    def __repr__(self):
        return "<{} {}>".format(type(self).__name__, " ".join(self._state_words(self._reading)))

    def _start_reading(self):
        if self.is_reading() and not self._reading:
            self._loop.add_reader(self._fileno, self._read_ready)
            self._reading = True

    def _stop_reading(self):
        if self._reading:
            self._reading = False
            self._unwatch_reader()

    def _read_ready(self):
        try:
            data = os.read(self._fileno, self.max_size)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._fatal_error(exc, "Fatal read error on pipe transport")
            return
        if data:
            self._protocol.data_received(data)
            return
        if self._loop.get_debug():
            logger.info("%r was closed by peer", self)
        self._closing = True
        self._stop_reading()
        self._loop.call_soon(self._protocol.eof_received)
        self._schedule_connection_lost(None)

    def is_reading(self):
        return not self._paused and not self._closing

    def pause_reading(self):
        if not self.is_reading():
            return
        self._paused = True
        self._stop_reading()
        if self._loop.get_debug():
            logger.debug("%r pauses reading", self)

    def resume_reading(self):
        if self._closing or not self._paused:
            return
        self._paused = False
        self._start_reading()
        if self._loop.get_debug():
            logger.debug("%r resumes reading", self)

    def close(self):
        if not self._closing:
            self._close(None)

    def _fatal_error(self, exc, message="Fatal error on pipe transport"):
        # EIO is how a pty master reports that the slave side was closed: an end of input, not a bug.
        if isinstance(exc, OSError) and exc.errno == errno.EIO:
            if self._loop.get_debug():
                logger.debug("%r: %s", self, message, exc_info=True)
        else:
            self._loop.call_exception_handler({
                "message": message,
                "exception": exc,
                "transport": self,
                "protocol": self._protocol,
            })
        self._close(exc)

    def _close(self, exc):
        self._closing = True
        self._stop_reading()
        self._schedule_connection_lost(exc)


class WritePipeTransport(_PipeTransportBase, transports.WriteTransport):
    """Writes to a pipe, FIFO, socket or character device: at once when it can, else from a buffer."""

    def __init__(self, loop, pipe, protocol, waiter=None, extra=None):
        super().__init__(extra)
        self._buffer = bytearray()
        self._conn_lost = 0
        self._writing = False  # writer registered with the loop
        self._watching_peer = False  # reader registered to learn that the reading end went away
        self._protocol_paused = False
        self._high_water = _DEFAULT_HIGH_WATER
        self._low_water = _DEFAULT_HIGH_WATER // 4
        kind = self._init_pipe(loop, pipe, protocol, ("fifo", "socket", "char"),
                               "Pipe transport is only for pipes, sockets and character devices")
        loop.call_soon(protocol.connection_made, self)
        # A pipe's or socket's write end polls readable (error/hangup) once the reading end is closed.
        if kind in ("fifo", "socket"):
            loop.call_soon(self._watch_peer)
        if waiter is not None:
            loop.call_soon(_set_result_unless_cancelled, waiter, None)

    def __repr__(self):
        words = self._state_words(self._writing)
        if self._pipe is not None and self._loop_usable():
            words.append(f"bufsize={len(self._buffer)}")
        return "<{} {}>".format(type(self).__name__, " ".join(words))

    def _watch_peer(self):
        if self._closing or self._watching_peer:
            return
        self._loop.add_reader(self._fileno, self._peer_closed)
        self._watching_peer = True

    def _unwatch_peer(self):
        if self._watching_peer:
            self._watching_peer = False
            self._unwatch_reader()

    def _peer_closed(self):
        if self._loop.get_debug():
            logger.info("%r was closed by peer", self)
        self._close(BrokenPipeError() if self._buffer else None)

    # ------------------------------------------------------------------ writing

    def get_write_buffer_size(self):
        return len(self._buffer)

    def write(self, data):
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"data argument must be a bytes-like object, not {type(data).__name__!r}")
        if isinstance(data, memoryview) and (data.itemsize != 1 or data.ndim != 1):
            data = data.cast("B") if data.c_contiguous else data.tobytes()  # lengths below are in bytes
        if not data:
            return
        if self._conn_lost or self._closing:
            if self._conn_lost >= constants.LOG_THRESHOLD_FOR_CONNLOST_WRITES:
                logger.warning("pipe closed by peer or os.write(pipe, data) raised exception.")
            self._conn_lost += 1
            return
        if not self._buffer:
            written = self._write_now(data)
            if written is None or written == len(data):
                return
            self._buffer += memoryview(data)[written:]
            self._loop.add_writer(self._fileno, self._write_ready)
            self._writing = True
        else:
            self._buffer += data
        self._maybe_pause_protocol()

    def _write_now(self, data):
        """Bytes written (0 when the pipe is full), or None after a fatal error."""
        try:
            return os.write(self._fileno, data)
        except (BlockingIOError, InterruptedError):
            return 0
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._conn_lost += 1
            self._fatal_error(exc, "Fatal write error on pipe transport")
            return None

    def _write_ready(self):
        try:
            written = os.write(self._fileno, self._buffer)
        except (BlockingIOError, InterruptedError):
            return
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._conn_lost += 1
            self._fatal_error(exc, "Fatal write error on pipe transport")
            return
        if written < len(self._buffer):
            del self._buffer[:written]
            return
        self._buffer.clear()
        self._stop_writing()
        self._maybe_resume_protocol()  # the protocol may write again from here
        if self._closing and not self._buffer:
            self._unwatch_peer()
            if not self._lost_scheduled:
                self._lost_scheduled = True
                self._call_connection_lost(None)

    def _stop_writing(self):
        if self._writing:
            self._writing = False
            self._unwatch_writer()

    # ------------------------------------------------------------------ flow control

    def _maybe_pause_protocol(self):
        if self._protocol_paused or len(self._buffer) <= self._high_water:
            return
        self._protocol_paused = True
        try:
            self._protocol.pause_writing()
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._loop.call_exception_handler({
                "message": "protocol.pause_writing() failed",
                "exception": exc,
                "transport": self,
                "protocol": self._protocol,
            })

    def _maybe_resume_protocol(self):
        if not self._protocol_paused or len(self._buffer) > self._low_water:
            return
        self._protocol_paused = False
        try:
            self._protocol.resume_writing()
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._loop.call_exception_handler({
                "message": "protocol.resume_writing() failed",
                "exception": exc,
                "transport": self,
                "protocol": self._protocol,
            })

    def get_write_buffer_limits(self):
        return (self._low_water, self._high_water)

    def set_write_buffer_limits(self, high=None, low=None):
        if high is None:
            high = _DEFAULT_HIGH_WATER if low is None else 4 * low
        if low is None:
            low = high // 4
        if not high >= low >= 0:
            raise ValueError(f"high ({high!r}) must be >= low ({low!r}) must be >= 0")
        self._high_water = high
        self._low_water = low
        self._maybe_pause_protocol()

    # ------------------------------------------------------------------ closing

    def can_write_eof(self):
        return True

    def write_eof(self):
        if self._closing or self._pipe is None:
            return
        self._closing = True
        if not self._buffer:
            self._unwatch_peer()
            self._schedule_connection_lost(None)

    def close(self):
        if self._pipe is not None and not self._closing:
            self.write_eof()  # a pipe has no half-close: EOF is closing it

    def abort(self):
        if self._pipe is not None:
            self._close(None)

    def _fatal_error(self, exc, message="Fatal error on pipe transport"):
        if isinstance(exc, OSError):
            # EPIPE and friends: the reader went away; that ends the transport without being an application bug.
            if self._loop.get_debug():
                logger.debug("%r: %s", self, message, exc_info=True)
        else:
            self._loop.call_exception_handler({
                "message": message,
                "exception": exc,
                "transport": self,
                "protocol": self._protocol,
            })
        self._close(exc)

    def _close(self, exc=None):
        self._closing = True
        self._stop_writing()
        self._buffer.clear()
        self._unwatch_peer()
        self._schedule_connection_lost(exc)


class PipeMixin:
    """connect_read_pipe / connect_write_pipe for zloop.Loop."""

    def _make_read_pipe_transport(self, pipe, protocol, waiter=None, extra=None):
        return ReadPipeTransport(self, pipe, protocol, waiter, extra)

    def _make_write_pipe_transport(self, pipe, protocol, waiter=None, extra=None):
        return WritePipeTransport(self, pipe, protocol, waiter, extra)

    async def connect_read_pipe(self, protocol_factory, pipe):
        """Read pipe (a file-like object with fileno()) into protocol_factory(); return (transport, protocol)."""
        return await self._connect_pipe(self._make_read_pipe_transport, "Read", protocol_factory, pipe)

    async def connect_write_pipe(self, protocol_factory, pipe):
        """Write to pipe (a file-like object with fileno()) for protocol_factory(); return (transport, protocol)."""
        return await self._connect_pipe(self._make_write_pipe_transport, "Write", protocol_factory, pipe)

    async def _connect_pipe(self, make_transport, kind, protocol_factory, pipe):
        self._check_closed()
        protocol = protocol_factory()
        waiter = self.create_future()
        transport = make_transport(pipe, protocol, waiter)
        try:
            await waiter
        except BaseException:
            transport.close()
            raise
        if self.get_debug():
            logger.debug("%s pipe %r connected: (%r, %r)", kind, pipe.fileno(), transport, protocol)
        return transport, protocol
