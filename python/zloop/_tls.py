"""TLS for zloop: asyncio's own sslproto.SSLProtocol running over zloop's stream transport.

_make_ssl_transport (what create_connection/create_server/connect_accepted_socket use) and start_tls; the
SSLProtocol constructor differs between Python versions (ssl_shutdown_timeout exists from 3.11 on).
"""

import sys
from asyncio import sslproto

from . import _zloop
from ._sock import params_since

try:
    import ssl
except ImportError:  # pragma: no cover - Python built without ssl
    ssl = None

_SSLPROTO_HAS_SHUTDOWN_TIMEOUT = sys.version_info >= (3, 11)
# 3.14+ (gh-142352): a server-side start_tls hands what the StreamReader already buffered (the ClientHello that
# arrived before start_tls) to the TLS protocol, instead of leaving it where TLS never reads it.
_START_TLS_TAKES_STREAM_BUFFER = sys.version_info >= (3, 14)
_OWN_STREAM_TYPE = getattr(_zloop, "TCPTransport", None)


def is_own_stream(transport):
    """True for zloop's C stream transport, which supports start_tls and native sendfile."""
    return _OWN_STREAM_TYPE is not None and isinstance(transport, _OWN_STREAM_TYPE)


def new_ssl_protocol(loop, app_protocol, sslcontext, waiter, server_side=False, server_hostname=None, *,
                     call_connection_made=True, ssl_handshake_timeout=None, ssl_shutdown_timeout=None):
    """asyncio.sslproto.SSLProtocol with the arguments the running Python's version takes."""
    kwargs = {"call_connection_made": call_connection_made, "ssl_handshake_timeout": ssl_handshake_timeout}
    if _SSLPROTO_HAS_SHUTDOWN_TIMEOUT:
        kwargs["ssl_shutdown_timeout"] = ssl_shutdown_timeout
    return sslproto.SSLProtocol(loop, app_protocol, sslcontext, waiter, server_side, server_hostname, **kwargs)


class TLSMixin:
    """_make_ssl_transport and start_tls."""

    def _make_ssl_transport(self, rawsock, protocol, sslcontext, waiter=None, *, server_side=False,
                            server_hostname=None, extra=None, server=None, ssl_handshake_timeout=None,
                            ssl_shutdown_timeout=None, call_connection_made=True):
        """A TLS transport over rawsock: the stream transport carries SSLProtocol, which speaks to protocol."""
        self._ensure_fd_no_transport(rawsock)
        ssl_protocol = new_ssl_protocol(self, protocol, sslcontext, waiter, server_side, server_hostname,
                                        call_connection_made=call_connection_made,
                                        ssl_handshake_timeout=ssl_handshake_timeout,
                                        ssl_shutdown_timeout=ssl_shutdown_timeout)
        self._make_socket_transport(rawsock, ssl_protocol, extra=extra, server=server)
        return ssl_protocol._app_transport

    @params_since(ssl_shutdown_timeout=(3, 11))
    async def start_tls(self, transport, protocol, sslcontext, *, server_side=False, server_hostname=None,
                        ssl_handshake_timeout=None, ssl_shutdown_timeout=None):
        """Upgrade transport to TLS; return the new transport that protocol must use from now on."""
        if ssl is None:
            raise RuntimeError("Python ssl module is not available")
        if not isinstance(sslcontext, ssl.SSLContext):
            raise TypeError(f"sslcontext is expected to be an instance of ssl.SSLContext, got {sslcontext!r}")
        if not (getattr(transport, "_start_tls_compatible", False) or is_own_stream(transport)):
            raise TypeError(f"transport {transport!r} is not supported by start_tls()")

        waiter = self.create_future()
        ssl_protocol = new_ssl_protocol(self, protocol, sslcontext, waiter, server_side, server_hostname,
                                        call_connection_made=False,
                                        ssl_handshake_timeout=ssl_handshake_timeout,
                                        ssl_shutdown_timeout=ssl_shutdown_timeout)
        # Paused first, so that no data reaches ssl_protocol before its connection_made().
        transport.pause_reading()
        if server_side and _START_TLS_TAKES_STREAM_BUFFER:
            _move_stream_buffer(protocol, ssl_protocol)
        transport.set_protocol(ssl_protocol)
        conmade_cb = self.call_soon(ssl_protocol.connection_made, transport)
        resume_cb = self.call_soon(transport.resume_reading)
        try:
            await waiter
        except BaseException:
            transport.close()
            conmade_cb.cancel()
            resume_cb.cancel()
            waiter = None   # the exception's frames hold this frame: no cycle back to the transport (gh-159049)
            raise
        return ssl_protocol._app_transport


def _move_stream_buffer(protocol, ssl_protocol):
    from asyncio.streams import StreamReaderProtocol
    if isinstance(protocol, StreamReaderProtocol):
        reader = getattr(protocol, "_stream_reader", None)
        if reader is not None and reader._buffer:
            ssl_protocol._incoming.write(reader._buffer)
            reader._buffer.clear()
