"""Networking methods of zloop.Loop (sockets, connections, servers, TLS, DNS), as a mixin.

The methods live by concern in _sock.py (sock_*, DNS), _connect.py (create_connection, create_server, Unix),
_server.py (Server, accept loop) and _tls.py (TLS); this module puts them together and adds transport
sendfile(). The stream transport itself is C (LoopCore._make_socket_transport).
"""

import os
from asyncio import constants, exceptions, protocols

from ._connect import ConnectMixin
from ._server import Server, ServerMixin
from ._sock import SocketMixin, seek_to_sendfile_offset
from ._tls import TLSMixin, is_own_stream

__all__ = ["NetworkingMixin", "Server"]

_FALLBACK_BLOCK_SIZE = 64 * 1024


class NetworkingMixin(ConnectMixin, ServerMixin, TLSMixin, SocketMixin):
    """Mixed into zloop.Loop, after LoopCore: a method the C core defines takes precedence."""

    # asyncio's selector transports and sslproto call these private names.
    def _add_reader(self, fd, callback, *args):
        return self.add_reader(fd, callback, *args)

    def _remove_reader(self, fd):
        return self.remove_reader(fd)

    def _add_writer(self, fd, callback, *args):
        return self.add_writer(fd, callback, *args)

    def _remove_writer(self, fd):
        return self.remove_writer(fd)

    # ------------------------------------------------------------------ sendfile on a transport

    async def sendfile(self, transport, file, offset=0, count=None, *, fallback=True):
        """Send file over transport: os.sendfile when the transport is a plain socket, else read-and-write."""
        if transport.is_closing():
            raise RuntimeError("Transport is closing")
        mode = getattr(transport, "_sendfile_compatible", None)
        if mode is None:
            mode = constants._SendfileMode.TRY_NATIVE if is_own_stream(transport) else \
                constants._SendfileMode.UNSUPPORTED
        if mode is constants._SendfileMode.UNSUPPORTED:
            raise RuntimeError(f"sendfile is not supported for transport {transport!r}")
        if mode is constants._SendfileMode.TRY_NATIVE:
            try:
                return await self._sendfile_native(transport, file, offset, count)
            except exceptions.SendfileNotAvailableError:
                if not fallback:
                    raise
        if not fallback:
            raise RuntimeError(f"fallback is disabled and native sendfile is not supported for transport "
                               f"{transport!r}")
        return await self._sendfile_fallback(transport, file, offset, count)

    async def _sendfile_native(self, transp, file, offset, count):
        sock = transp.get_extra_info("socket")
        if sock is None or not hasattr(transp, "_make_empty_waiter"):
            raise exceptions.SendfileNotAvailableError("the transport has no socket to sendfile to")
        self._check_sendfile_params(sock, file, offset, count)
        if not hasattr(os, "sendfile"):
            raise exceptions.SendfileNotAvailableError("os.sendfile() is not available")
        try:
            fileno = file.fileno()
            fsize = os.fstat(fileno).st_size
        except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is both OSError and ValueError
            raise exceptions.SendfileNotAvailableError("not a regular file")
        blocksize = count if count else fsize
        if not blocksize:
            return 0
        resume_reading = transp.is_reading()
        transp.pause_reading()
        await transp._make_empty_waiter()
        dup_fd = None
        try:
            # A second fd for the same socket: the transport keeps its own fd (and its place in the loop).
            dup_fd = os.dup(sock.fileno())
            return await self._sendfile_fd(dup_fd, fileno, offset, count, blocksize)
        finally:
            if dup_fd is not None:
                os.close(dup_fd)
            transp._reset_empty_waiter()
            if resume_reading:
                transp.resume_reading()

    async def _sendfile_fallback(self, transp, file, offset, count):
        seek_to_sendfile_offset(file, offset)
        blocksize = min(count, _FALLBACK_BLOCK_SIZE) if count else _FALLBACK_BLOCK_SIZE
        buf = bytearray(blocksize)
        total = 0
        proto = _SendfileFallbackProtocol(self, transp)
        try:
            while True:
                if count:
                    blocksize = min(count - total, blocksize)
                    if blocksize <= 0:
                        return total
                view = memoryview(buf)[:blocksize]
                read = await self.run_in_executor(None, file.readinto, view)
                if not read:
                    return total  # EOF
                await proto.drain()
                # bytes: the transport may keep what it cannot send now, and buf is reused for the next read.
                transp.write(bytes(view[:read]))
                total += read
        finally:
            if total > 0 and hasattr(file, "seek"):
                file.seek(offset + total)
            await proto.restore()


def _writing_paused(transport):
    paused = getattr(transport, "_protocol_paused", None)
    if paused is not None:
        return bool(paused)
    try:
        return transport.get_write_buffer_size() > transport.get_write_buffer_limits()[1]
    except (AttributeError, NotImplementedError):
        return False


class _SendfileFallbackProtocol(protocols.Protocol):
    """Stands in for the transport's protocol while sendfile() writes a file: tracks pause/resume_writing."""

    def __init__(self, loop, transp):
        self._loop = loop
        self._transport = transp
        self._proto = transp.get_protocol()
        self._should_resume_reading = transp.is_reading()
        self._should_resume_writing = _writing_paused(transp)
        transp.pause_reading()
        transp.set_protocol(self)
        self._write_ready_fut = loop.create_future() if self._should_resume_writing else None

    async def drain(self):
        if self._transport.is_closing():
            raise ConnectionError("Connection closed by peer")
        fut = self._write_ready_fut
        if fut is not None:
            await fut

    def connection_made(self, transport):
        raise RuntimeError("Invalid state: connection should have been established already.")

    def connection_lost(self, exc):
        fut = self._write_ready_fut
        if fut is not None and not fut.done():
            # The peer left before the whole file went out: always an error for the sender.
            fut.set_exception(exc if exc is not None else ConnectionError("Connection is closed by peer"))
        self._proto.connection_lost(exc)

    def pause_writing(self):
        if self._write_ready_fut is None:
            self._write_ready_fut = self._loop.create_future()

    def resume_writing(self):
        fut = self._write_ready_fut
        if fut is None:
            return
        self._write_ready_fut = None
        if not fut.done():
            fut.set_result(False)

    def data_received(self, data):
        raise RuntimeError("Invalid state: reading should be paused")

    def eof_received(self):
        raise RuntimeError("Invalid state: reading should be paused")

    async def restore(self):
        self._transport.set_protocol(self._proto)
        if self._should_resume_reading:
            self._transport.resume_reading()
        fut = self._write_ready_fut
        if fut is not None:
            if fut.done() and not fut.cancelled():
                fut.exception()  # retrieved: the caller already got the error from drain() or write()
            fut.cancel()
        if self._should_resume_writing:
            self._proto.resume_writing()
