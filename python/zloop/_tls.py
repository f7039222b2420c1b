"""TLS for zloop: the C TLS protocol (core/tls_protocol.c, asyncio's SSLProtocol state machine in C) over zloop's
stream transport, or asyncio's own sslproto.SSLProtocol when ZLOOP_TLS=python.

_make_ssl_transport (what create_connection/create_server/connect_accepted_socket use) and start_tls; the checks
and defaults of SSLProtocol.__init__ happen here, before the C protocol is made; the helpers below report errors
and log as sslproto does.
"""

import os
import sys
import types
from asyncio import constants, exceptions, protocols, sslproto, transports
from asyncio.log import logger

from . import _zloop
from ._sock import params_since

try:
    import _ssl
    import ssl
except ImportError:  # pragma: no cover - Python built without ssl
    ssl = None

_SSLPROTO_HAS_SHUTDOWN_TIMEOUT = sys.version_info >= (3, 11)
# 3.14+ (gh-142352): a server-side start_tls hands what the StreamReader already buffered (the ClientHello that
# arrived before start_tls) to the TLS protocol, instead of leaving it where TLS never reads it.
_START_TLS_TAKES_STREAM_BUFFER = sys.version_info >= (3, 14)
_OWN_STREAM_TYPE = getattr(_zloop, "TCPTransport", None)


def report_fatal(loop, exc, message, transport, protocol):
    """SSLProtocol._fatal_error's report, once the stream has been force-closed."""
    if isinstance(exc, OSError):
        if loop.get_debug():
            logger.debug("%r: %s", protocol, message, exc_info=True)
    elif not isinstance(exc, exceptions.CancelledError):
        loop.call_exception_handler({
            "message": message,
            "exception": exc,
            "transport": transport,
            "protocol": protocol,
        })


def report_error(loop, message, exc, transport, protocol):
    """The application's pause_writing()/resume_writing() raised."""
    loop.call_exception_handler({
        "message": message,
        "exception": exc,
        "transport": transport,
        "protocol": protocol,
    })


def log(level, message, protocol, arg):
    """sslproto's log lines: message formats protocol when it has %r; handshake_done logs the time taken."""
    if level == "handshake_done":
        logger.debug("%r: SSL handshake took %.1f ms", protocol, arg * 1e3)
    elif "%r" in message:
        getattr(logger, level)(message, protocol)
    else:
        getattr(logger, level)(message)


_C_TLS = ssl is not None and os.environ.get("ZLOOP_TLS", "c") != "python"
if _C_TLS:
    _zloop._set_hooks(tls=types.SimpleNamespace(
        protocol_base=protocols.BufferedProtocol,
        transport_base=transports.Transport,
        SSLWantReadError=ssl.SSLWantReadError,
        SSLSyscallError=ssl.SSLSyscallError,
        SSLError=ssl.SSLError,
        CertificateError=ssl.CertificateError,
        SSLSocketType=_ssl._SSLSocket,     # what SSLObject._sslobj is: the C layer calls its methods
        MemoryBIO=ssl.MemoryBIO,
        TimeoutError=exceptions.TimeoutError,
        report_fatal=report_fatal,
        report_error=report_error,
        log=log,
        # 3.14+ sslproto: the shutdown timeout lasts until connection_lost; is_closing() follows the stream's
        shutdown_timeout_until_lost=sys.version_info >= (3, 14),
        closing_with_transport=sys.version_info >= (3, 14),
    ))
    _zloop.SSLTransport._start_tls_compatible = True
    _zloop.SSLTransport._sendfile_compatible = constants._SendfileMode.FALLBACK


def c_tls_enabled():
    """True when TLS connections run on the C TLS protocol (the default; ZLOOP_TLS=python turns it off)."""
    return _C_TLS


def _check_timeout(name, value, default):
    if value is None:
        return default
    if value <= 0:
        raise ValueError(f"{name} should be a positive number, got {value}")
    return value


def new_c_tls_protocol(loop, app_protocol, sslcontext, waiter, server_side=False, server_hostname=None, *,
                       call_connection_made=True, ssl_handshake_timeout=None, ssl_shutdown_timeout=None):
    """The C TLS protocol, with SSLProtocol.__init__'s checks, defaults and SSLObject."""
    ssl_handshake_timeout = _check_timeout("ssl_handshake_timeout", ssl_handshake_timeout,
                                           constants.SSL_HANDSHAKE_TIMEOUT)
    ssl_shutdown_timeout = _check_timeout("ssl_shutdown_timeout", ssl_shutdown_timeout,
                                          constants.SSL_SHUTDOWN_TIMEOUT)
    if not sslcontext:
        sslcontext = sslproto._create_transport_context(server_side, server_hostname)
    hostname = server_hostname if server_hostname and not server_side else None
    incoming = ssl.MemoryBIO()
    outgoing = ssl.MemoryBIO()
    sslobj = sslcontext.wrap_bio(incoming, outgoing, server_side=server_side, server_hostname=hostname)
    return _zloop.SSLProtocol(loop, app_protocol, sslcontext, sslobj, incoming, outgoing, waiter, server_side,
                              call_connection_made, ssl_handshake_timeout, ssl_shutdown_timeout)


def is_own_stream(transport):
    """True for zloop's C stream transport, which supports start_tls and native sendfile."""
    return _OWN_STREAM_TYPE is not None and isinstance(transport, _OWN_STREAM_TYPE)


def new_ssl_protocol(loop, app_protocol, sslcontext, waiter, server_side=False, server_hostname=None, *,
                     call_connection_made=True, ssl_handshake_timeout=None, ssl_shutdown_timeout=None):
    """The TLS protocol: zloop's C one, or asyncio.sslproto.SSLProtocol with the arguments the running Python's
    version takes. A context whose sslobject_class is not ssl.SSLObject gets asyncio's: the C layer would call
    the _ssl object under it and skip that class's methods."""
    if _C_TLS and (not sslcontext or getattr(sslcontext, "sslobject_class", None) is ssl.SSLObject):
        return new_c_tls_protocol(loop, app_protocol, sslcontext, waiter, server_side, server_hostname,
                                  call_connection_made=call_connection_made,
                                  ssl_handshake_timeout=ssl_handshake_timeout,
                                  ssl_shutdown_timeout=ssl_shutdown_timeout)
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
