"""zloop's Server (an asyncio.AbstractServer) and the accept loop behind create_server and create_unix_server.

Plain (non-TLS) listening sockets are served by a C acceptor (loop._make_acceptor, core/stream_server.c): each
readiness accepts a burst of at most `backlog` connections, calls the protocol factory and makes the transports in
C. TLS servers keep the Python accept loop here (add_reader). Either way EMFILE/ENFILE/ENOBUFS/ENOMEM go to the
exception handler and accepting pauses for asyncio's ACCEPT_RETRY_DELAY (1 s), then resumes.
"""

import contextvars
import errno
import functools
import os
import sys
from asyncio import constants, events, exceptions, tasks, trsock
from asyncio.log import logger

from ._tls import c_tls_enabled, new_ssl_protocol

# Before 3.12, wait_closed() returned at once once the server was closed, even with clients still connected.
_WAIT_CLOSED_WAITS_FOR_CLIENTS = sys.version_info >= (3, 12)
# A cancelled serve_forever() closes the accepted connections too from 3.14 on (else wait_closed would wait on them).
_SERVE_FOREVER_CLOSES_CLIENTS = sys.version_info >= (3, 14)
_OUT_OF_RESOURCES = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


class Server(events.AbstractServer):
    """A listening server of a zloop loop: what create_server() and create_unix_server() return."""

    def __init__(self, loop, sockets, protocol_factory, ssl_context, backlog, ssl_handshake_timeout,
                 ssl_shutdown_timeout=None):
        self._loop = loop
        self._sockets = sockets
        # The connections themselves are not kept here: the loop finds them in its fd table (_server_clients).
        self._active_count = 0
        self._waiters = []
        self._protocol_factory = protocol_factory
        self._backlog = backlog
        self._ssl_context = ssl_context
        self._ssl_handshake_timeout = ssl_handshake_timeout
        self._ssl_shutdown_timeout = ssl_shutdown_timeout
        self._serving = False
        self._serving_forever_fut = None
        self._accept_retries = {}  # listening socket -> TimerHandle resuming accept() after EMFILE

    def __repr__(self):
        return f"<{self.__class__.__name__} sockets={self.sockets!r}>"

    # ------------------------------------------------------------------ transports report here

    def _attach(self, transport=None):
        assert self._sockets is not None
        self._active_count += 1

    def _detach(self, transport=None):
        if self._active_count > 0:
            self._active_count -= 1
        if self._active_count == 0 and self._sockets is None:
            self._wakeup()

    def _wakeup(self):
        waiters = self._waiters
        self._waiters = None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    # ------------------------------------------------------------------ serving

    def _start_serving(self):
        if self._serving:
            return
        self._serving = True
        for sock in self._sockets:
            sock.listen(self._backlog)
            self._loop._start_serving(self._protocol_factory, sock, self._ssl_context, self, self._backlog,
                                      self._ssl_handshake_timeout, self._ssl_shutdown_timeout)

    def get_loop(self):
        return self._loop

    def is_serving(self):
        return self._serving

    @property
    def sockets(self):
        if self._sockets is None:
            return ()
        return tuple(trsock.TransportSocket(s) for s in self._sockets)

    def close(self):
        """Stop listening and close the listening sockets; connected clients are left alone."""
        sockets = self._sockets
        if sockets is None:
            return
        self._sockets = None
        for timer in self._accept_retries.values():
            timer.cancel()
        self._accept_retries.clear()
        for sock in sockets:
            self._loop._stop_serving(sock)
        self._serving = False
        if self._serving_forever_fut is not None and not self._serving_forever_fut.done():
            self._serving_forever_fut.cancel()
            self._serving_forever_fut = None
        if self._active_count == 0:
            self._wakeup()

    def close_clients(self):
        """Close every connection accepted by this server (their buffers are flushed first)."""
        for transport in self._loop._server_clients(self):
            transport.close()

    def abort_clients(self):
        """Abort every connection accepted by this server at once."""
        for transport in self._loop._server_clients(self):
            transport.abort()

    async def start_serving(self):
        self._start_serving()
        # One loop iteration, so that the add_reader calls take effect, as asyncio does.
        await tasks.sleep(0)

    async def serve_forever(self):
        if self._serving_forever_fut is not None:
            raise RuntimeError(f"server {self!r} is already being awaited on serve_forever()")
        if self._sockets is None:
            raise RuntimeError(f"server {self!r} is closed")
        self._start_serving()
        self._serving_forever_fut = self._loop.create_future()
        try:
            await self._serving_forever_fut
        except exceptions.CancelledError:
            try:
                self.close()
                if _SERVE_FOREVER_CLOSES_CLIENTS:
                    self.close_clients()
                await self.wait_closed()
            finally:
                raise
        finally:
            self._serving_forever_fut = None

    async def wait_closed(self):
        """Wait until the server is closed and (from Python 3.12 on, as asyncio) every connection is gone."""
        if self._waiters is None:
            return
        if not _WAIT_CLOSED_WAITS_FOR_CLIENTS and self._sockets is None:
            return
        waiter = self._loop.create_future()
        self._waiters.append(waiter)
        await waiter


class ServerMixin:
    """The loop's side of serving: the accept loop, per-connection transports, and closing listeners."""

    def _unix_listeners(self):
        # Unix listening sockets whose file create_unix_server(cleanup_socket=True) removes on close: sock -> inode.
        registry = self.__dict__.get("_unix_server_sockets")
        if registry is None:
            registry = self.__dict__["_unix_server_sockets"] = {}
        return registry

    def _acceptors(self):
        # Listening sockets accepted on in C: sock -> acceptor.
        registry = self.__dict__.get("_zl_acceptors")
        if registry is None:
            registry = self.__dict__["_zl_acceptors"] = {}
        return registry

    def _start_serving(self, protocol_factory, sock, sslcontext=None, server=None, backlog=100,
                       ssl_handshake_timeout=constants.SSL_HANDSHAKE_TIMEOUT,
                       ssl_shutdown_timeout=None):
        if sslcontext and not c_tls_enabled():
            self.add_reader(sock.fileno(), self._accept_connection, protocol_factory, sock, sslcontext, server,
                            backlog, ssl_handshake_timeout, ssl_shutdown_timeout)
            return
        if sslcontext:
            # Accepted in C too: the acceptor's factory makes the C TLS protocol around the application's.
            protocol_factory = functools.partial(self._tls_server_protocol, protocol_factory, sslcontext,
                                                 ssl_handshake_timeout, ssl_shutdown_timeout)
        acceptors = self._acceptors()
        acceptor = acceptors.get(sock)
        if acceptor is None:
            on_error = functools.partial(self._accept_failed, protocol_factory, sock, server, backlog)
            acceptor = acceptors[sock] = self._make_acceptor(sock, protocol_factory, server, backlog, on_error,
                                                             self._report_accept_failure)
        acceptor.start()

    def _accept_failed(self, protocol_factory, sock, server, backlog, exc):
        # The C acceptor's accept() failed: out of resources pauses accepting, anything else is reported as an
        # exception in the accept callback would be.
        if exc.errno in _OUT_OF_RESOURCES:
            self._pause_accepting(exc, protocol_factory, sock, None, server, backlog, None, None)
            return
        self.call_exception_handler({
            "message": f"Exception in callback accepting connections on {sock!r}",
            "exception": exc,
            "socket": trsock.TransportSocket(sock),
        })

    def _stop_serving(self, sock):
        path = None
        registry = self.__dict__.get("_unix_server_sockets")
        if registry and sock in registry:
            try:
                path = sock.getsockname()
            except OSError:
                path = None
            inode = registry.pop(sock)
        acceptor = self.__dict__.get("_zl_acceptors", {}).pop(sock, None)
        if acceptor is not None:
            acceptor.stop()
        elif sock.fileno() != -1:
            self.remove_reader(sock.fileno())
        sock.close()
        if path:
            try:
                if os.stat(path).st_ino == inode:
                    os.unlink(path)
            except FileNotFoundError:
                pass
            except OSError as err:
                logger.error("Unable to clean up listening UNIX socket %r: %r", path, err)

    def _accept_connection(self, protocol_factory, sock, sslcontext=None, server=None, backlog=100,
                           ssl_handshake_timeout=constants.SSL_HANDSHAKE_TIMEOUT, ssl_shutdown_timeout=None):
        # One readiness of the listening socket: accept what is waiting, at most `backlog` connections.
        for _ in range(max(backlog, 1)):
            try:
                conn, addr = sock.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            except OSError as exc:
                if exc.errno not in _OUT_OF_RESOURCES:
                    raise  # the loop reports it to the exception handler
                self._pause_accepting(exc, protocol_factory, sock, sslcontext, server, backlog,
                                      ssl_handshake_timeout, ssl_shutdown_timeout)
                return
            if self.get_debug():
                logger.debug("%r got a new connection from %r: %r", server, addr, conn)
            try:
                conn.setblocking(False)
            except OSError:
                conn.close()
                continue
            # Each connection starts from its own copy of the context, as it would in asyncio's per-accept Task.
            contextvars.copy_context().run(self._serve_accepted, protocol_factory, conn, {"peername": addr},
                                           sslcontext, server, ssl_handshake_timeout, ssl_shutdown_timeout)

    def _pause_accepting(self, exc, protocol_factory, sock, sslcontext, server, backlog,
                         ssl_handshake_timeout, ssl_shutdown_timeout):
        # Out of fds (or memory): level-triggered readiness would spin, so stop watching for a while.
        self.call_exception_handler({
            "message": "socket.accept() out of system resource",
            "exception": exc,
            "socket": trsock.TransportSocket(sock),
        })
        acceptor = self.__dict__.get("_zl_acceptors", {}).get(sock)
        if acceptor is not None:
            acceptor.stop()
        else:
            self.remove_reader(sock.fileno())
        timer = self.call_later(constants.ACCEPT_RETRY_DELAY, self._resume_accepting, protocol_factory, sock,
                                sslcontext, server, backlog, ssl_handshake_timeout, ssl_shutdown_timeout)
        if server is not None:
            server._accept_retries[sock] = timer

    def _resume_accepting(self, protocol_factory, sock, sslcontext, server, backlog,
                          ssl_handshake_timeout, ssl_shutdown_timeout):
        if server is not None:
            server._accept_retries.pop(sock, None)
            if server._sockets is None:
                return
        if sock.fileno() == -1:
            return
        self._start_serving(protocol_factory, sock, sslcontext, server, backlog, ssl_handshake_timeout,
                            ssl_shutdown_timeout)

    def _serve_accepted(self, protocol_factory, conn, extra, sslcontext, server, ssl_handshake_timeout,
                        ssl_shutdown_timeout):
        protocol = transport = None
        try:
            protocol = protocol_factory()
            if sslcontext:
                waiter = self.create_future()
                transport = self._make_ssl_transport(
                    conn, protocol, sslcontext, waiter, server_side=True, extra=extra, server=server,
                    ssl_handshake_timeout=ssl_handshake_timeout, ssl_shutdown_timeout=ssl_shutdown_timeout)
                waiter.add_done_callback(functools.partial(self._accepted_handshake_done, transport, protocol))
            else:
                transport = self._make_socket_transport(conn, protocol, extra=extra, server=server)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            if transport is None:
                conn.close()
            else:
                transport.close()
            self._report_accept_failure(exc, protocol, transport)

    def _tls_server_protocol(self, protocol_factory, sslcontext, ssl_handshake_timeout, ssl_shutdown_timeout):
        # One accepted TLS connection's protocol: what _serve_accepted does for it, for the C acceptor.
        protocol = protocol_factory()
        waiter = self.create_future()
        ssl_protocol = new_ssl_protocol(self, protocol, sslcontext, waiter, server_side=True,
                                        ssl_handshake_timeout=ssl_handshake_timeout,
                                        ssl_shutdown_timeout=ssl_shutdown_timeout)
        waiter.add_done_callback(functools.partial(self._accepted_handshake_done, ssl_protocol._app_transport,
                                                   protocol))
        return ssl_protocol

    def _accepted_handshake_done(self, transport, protocol, waiter):
        if waiter.cancelled():
            transport.close()
            return
        exc = waiter.exception()
        if exc is not None:
            transport.close()
            self._report_accept_failure(exc, protocol, transport)

    def _report_accept_failure(self, exc, protocol, transport):
        # asyncio reports these only in debug mode; the connection is closed either way.
        if not self.get_debug():
            return
        context = {"message": "Error on transport creation for incoming connection", "exception": exc}
        if protocol is not None:
            context["protocol"] = protocol
        if transport is not None:
            context["transport"] = transport
        self.call_exception_handler(context)
