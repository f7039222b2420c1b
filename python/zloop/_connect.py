"""zloop's connection factories: create_connection (with Happy Eyeballs), create_server, their Unix variants
and connect_accepted_socket. Parameters, validation and exceptions follow asyncio's base_events/unix_events.
"""

import collections.abc
import errno
import itertools
import os
import socket
import stat
import sys
from asyncio import tasks
from asyncio.log import logger

from ._server import Server
from ._sock import HAS_IPV6, check_ssl_socket, params_since

# create_unix_server removes its socket file on close from Python 3.13 on (cleanup_socket).
_UNIX_CLEANUP_DEFAULT = sys.version_info >= (3, 13)


def interleave_by_family(infos, first_family_count=1):
    """Reorder getaddrinfo() entries so that address families alternate (RFC 8305), the first family leading
    with first_family_count entries."""
    by_family = {}
    for info in infos:
        by_family.setdefault(info[0], []).append(info)
    groups = list(by_family.values())
    ordered = []
    if first_family_count > 1 and groups:
        ordered.extend(groups[0][:first_family_count - 1])
        del groups[0][:first_family_count - 1]
    for row in itertools.zip_longest(*groups):
        ordered.extend(info for info in row if info is not None)
    return ordered


def _raise_connect_errors(errors, all_errors):
    # The raised error's traceback keeps this frame: drop the list that holds the error, or error and list
    # stay in a reference cycle (as CPython's create_connection avoids, gh-124859).
    try:
        if all_errors:
            raise ExceptionGroup("create_connection failed", errors)  # noqa: F821 (3.11+, all_errors is 3.12+)
        if not errors:
            raise OSError("create_connection failed: no address could be tried")
        if len(errors) == 1:
            raise errors[0]
        model = str(errors[0])
        if all(str(exc) == model for exc in errors):
            raise errors[0]
        raise OSError("Multiple exceptions: {}".format(", ".join(str(exc) for exc in errors)))
    finally:
        errors = None


def _close_late_winner(task):
    # An attempt cancelled after another one won: close its socket if it connected all the same.
    if task.cancelled():
        return
    if task.exception() is None:
        task.result().close()


def _check_unix_stream(sock):
    if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_STREAM:
        raise ValueError(f"A UNIX Domain Stream Socket was expected, got {sock!r}")


def _is_abstract(path):
    return bool(path) and path[0] in (0, "\x00")


class ConnectMixin:
    """create_connection, create_server, create_unix_connection, create_unix_server, connect_accepted_socket."""

    # ------------------------------------------------------------------ client side

    async def _connect_sock(self, exceptions, addr_info, local_addr_infos=None):
        """Create a socket for addr_info, bind it to a local address of its family if asked, connect it."""
        family, type_, proto, _, address = addr_info
        sock = None
        try:
            sock = socket.socket(family=family, type=type_, proto=proto)
            sock.setblocking(False)
            if local_addr_infos is not None:
                bind_errors = []
                for lfamily, _, _, _, laddr in local_addr_infos:
                    if lfamily != family:
                        continue
                    try:
                        sock.bind(laddr)
                        break
                    except OSError as exc:
                        message = f"error while attempting to bind on address {laddr!r}: {str(exc).lower()}"
                        bind_errors.append(OSError(exc.errno, message))
                else:
                    if not bind_errors:
                        raise OSError(f"no matching local address with family={family!r} found")
                    exceptions.extend(bind_errors[:-1])
                    raise bind_errors[-1]
            await self.sock_connect(sock, address)
            return sock
        except OSError as exc:
            exceptions.append(exc)
            if sock is not None:
                sock.close()
            raise
        except BaseException:
            if sock is not None:
                sock.close()
            raise
        finally:
            exceptions = None  # the failure's traceback keeps this frame: no cycle through the list

    async def _happy_eyeballs(self, infos, local_addr_infos, delay, exceptions):
        """Staggered connection attempts (RFC 8305): the next address is tried when the previous attempt fails
        or after `delay` seconds, whichever comes first; the first socket to connect wins, the others are
        cancelled (and closed). Returns the socket, or None when every attempt failed."""
        pending = []
        wakeup = None

        def wake(_=None):
            if wakeup is not None and not wakeup.done():
                wakeup.set_result(None)

        remaining = iter(infos)
        next_info = next(remaining, None)
        try:
            while next_info is not None or pending:
                if next_info is not None:
                    attempt = self.create_task(self._connect_sock(exceptions, next_info, local_addr_infos))
                    attempt.add_done_callback(wake)
                    pending.append(attempt)
                    next_info = next(remaining, None)
                wakeup = self.create_future()
                timer = self.call_later(delay, wake) if next_info is not None else None
                try:
                    await wakeup
                finally:
                    if timer is not None:
                        timer.cancel()
                finished = [attempt for attempt in pending if attempt.done()]
                pending = [attempt for attempt in pending if not attempt.done()]
                connected = [a.result() for a in finished if not a.cancelled() and a.exception() is None]
                unexpected = [a.exception() for a in finished
                              if not a.cancelled() and a.exception() is not None
                              and not isinstance(a.exception(), OSError)]
                if unexpected:
                    for sock in connected:
                        sock.close()
                    raise unexpected[0]  # not a connection failure: a bug to report, as without Happy Eyeballs
                if connected:
                    for sock in connected[1:]:
                        sock.close()
                    return connected[0]
            return None
        finally:
            for attempt in pending:
                attempt.remove_done_callback(wake)
                attempt.cancel()
                attempt.add_done_callback(_close_late_winner)

    @params_since(ssl_shutdown_timeout=(3, 11), all_errors=(3, 12))
    async def create_connection(self, protocol_factory, host=None, port=None, *, ssl=None, family=0, proto=0,
                                flags=0, sock=None, local_addr=None, server_hostname=None,
                                ssl_handshake_timeout=None, ssl_shutdown_timeout=None,
                                happy_eyeballs_delay=None, interleave=None, all_errors=False):
        """Open a TCP connection to host:port (or wrap sock); return (transport, protocol)."""
        if server_hostname is not None and not ssl:
            raise ValueError("server_hostname is only meaningful with ssl")
        if server_hostname is None and ssl:
            # The host is the name to verify; '' skips the check, a bare sock or port-only call must say.
            if not host:
                raise ValueError("You must set server_hostname when using ssl without a host")
            server_hostname = host
        if ssl_handshake_timeout is not None and not ssl:
            raise ValueError("ssl_handshake_timeout is only meaningful with ssl")
        if ssl_shutdown_timeout is not None and not ssl:
            raise ValueError("ssl_shutdown_timeout is only meaningful with ssl")
        if sock is not None:
            check_ssl_socket(sock)
        if happy_eyeballs_delay is not None and interleave is None:
            interleave = 1  # Happy Eyeballs alternates address families by default

        owned = False
        if host is not None or port is not None:
            if sock is not None:
                raise ValueError("host/port and sock can not be specified at the same time")
            infos = await self._ensure_resolved((host, port), family=family, type=socket.SOCK_STREAM,
                                                proto=proto, flags=flags)
            if not infos:
                raise OSError("getaddrinfo() returned empty list")
            local_infos = None
            if local_addr is not None:
                local_infos = await self._ensure_resolved(local_addr, family=family, type=socket.SOCK_STREAM,
                                                          proto=proto, flags=flags)
                if not local_infos:
                    raise OSError("getaddrinfo() returned empty list")
            if interleave:
                infos = interleave_by_family(infos, interleave)
            errors = []
            try:
                if happy_eyeballs_delay is None:
                    for info in infos:
                        try:
                            sock = await self._connect_sock(errors, info, local_infos)
                            break
                        except OSError:
                            continue
                else:
                    sock = await self._happy_eyeballs(infos, local_infos, happy_eyeballs_delay, errors)
                if sock is None:
                    _raise_connect_errors(errors, all_errors)
            finally:
                errors = None  # no cycle through the tracebacks
            owned = True
        else:
            if sock is None:
                raise ValueError("host and port was not specified and no sock specified")
            if sock.type != socket.SOCK_STREAM:
                # AF_UNIX stream sockets are accepted here too, as asyncio does.
                raise ValueError(f"A Stream Socket was expected, got {sock!r}")

        transport, protocol = await self._create_connection_transport(
            sock, protocol_factory, ssl, server_hostname, ssl_handshake_timeout=ssl_handshake_timeout,
            ssl_shutdown_timeout=ssl_shutdown_timeout, _owned=owned)
        if self.get_debug():
            logger.debug("%r connected to %s:%r: (%r, %r)", transport.get_extra_info("socket"), host, port,
                         transport, protocol)
        return transport, protocol

    async def _create_connection_transport(self, sock, protocol_factory, ssl, server_hostname, server_side=False,
                                           ssl_handshake_timeout=None, ssl_shutdown_timeout=None, *,
                                           _owned=False):
        transport = None
        try:
            sock.setblocking(False)
            protocol = protocol_factory()
            waiter = self.create_future()
            if ssl:
                sslcontext = None if isinstance(ssl, bool) else ssl
                transport = self._make_ssl_transport(
                    sock, protocol, sslcontext, waiter, server_side=server_side, server_hostname=server_hostname,
                    ssl_handshake_timeout=ssl_handshake_timeout, ssl_shutdown_timeout=ssl_shutdown_timeout)
            else:
                transport = self._make_socket_transport(sock, protocol, waiter)
        except BaseException:
            if _owned and transport is None:
                sock.close()  # ours, and no transport took it over
            raise
        try:
            await waiter
        except BaseException:
            transport.close()
            waiter = None
            raise
        return transport, protocol

    @params_since(ssl_shutdown_timeout=(3, 11))
    async def create_unix_connection(self, protocol_factory, path=None, *, ssl=None, sock=None,
                                     server_hostname=None, ssl_handshake_timeout=None, ssl_shutdown_timeout=None):
        """Open a Unix stream connection to path (or wrap sock); return (transport, protocol)."""
        assert server_hostname is None or isinstance(server_hostname, str)
        if ssl:
            if server_hostname is None:
                raise ValueError("you have to pass server_hostname when using ssl")
        else:
            if server_hostname is not None:
                raise ValueError("server_hostname is only meaningful with ssl")
            if ssl_handshake_timeout is not None:
                raise ValueError("ssl_handshake_timeout is only meaningful with ssl")
            if ssl_shutdown_timeout is not None:
                raise ValueError("ssl_shutdown_timeout is only meaningful with ssl")
        owned = False
        if path is not None:
            if sock is not None:
                raise ValueError("path and sock can not be specified at the same time")
            path = os.fspath(path)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM, 0)
            try:
                sock.setblocking(False)
                await self.sock_connect(sock, path)
            except BaseException:
                sock.close()
                raise
            owned = True
        else:
            if sock is None:
                raise ValueError("no path and sock were specified")
            _check_unix_stream(sock)
            sock.setblocking(False)
        return await self._create_connection_transport(
            sock, protocol_factory, ssl, server_hostname, ssl_handshake_timeout=ssl_handshake_timeout,
            ssl_shutdown_timeout=ssl_shutdown_timeout, _owned=owned)

    @params_since(ssl_shutdown_timeout=(3, 11))
    async def connect_accepted_socket(self, protocol_factory, sock, *, ssl=None, ssl_handshake_timeout=None,
                                      ssl_shutdown_timeout=None):
        """Wrap a socket accepted elsewhere (server side of TLS if ssl is given); return (transport, protocol)."""
        if sock.type != socket.SOCK_STREAM:
            raise ValueError(f"A Stream Socket was expected, got {sock!r}")
        if ssl_handshake_timeout is not None and not ssl:
            raise ValueError("ssl_handshake_timeout is only meaningful with ssl")
        if ssl_shutdown_timeout is not None and not ssl:
            raise ValueError("ssl_shutdown_timeout is only meaningful with ssl")
        check_ssl_socket(sock)
        transport, protocol = await self._create_connection_transport(
            sock, protocol_factory, ssl, "", server_side=True, ssl_handshake_timeout=ssl_handshake_timeout,
            ssl_shutdown_timeout=ssl_shutdown_timeout)
        if self.get_debug():
            logger.debug("%r handled: (%r, %r)", transport.get_extra_info("socket"), transport, protocol)
        return transport, protocol

    # ------------------------------------------------------------------ server side

    async def _create_server_getaddrinfo(self, host, port, family, flags):
        infos = await self._ensure_resolved((host, port), family=family, type=socket.SOCK_STREAM, flags=flags)
        if not infos:
            raise OSError(f"getaddrinfo({host!r}) returned empty list")
        return infos

    def _open_listening_socket(self, info, reuse_address, reuse_port, keep_alive):
        """A socket bound to info's address, or None when the address family is not available here."""
        af, socktype, proto, _, address = info
        try:
            sock = socket.socket(af, socktype, proto)
        except OSError:
            # Most likely a family/type/protocol combination this machine does not have.
            if self.get_debug():
                logger.warning("create_server() failed to create socket.socket(%r, %r, %r)", af, socktype, proto,
                               exc_info=True)
            return None
        try:
            if reuse_address:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, True)
            if reuse_port:
                _set_reuse_port(sock)
            if keep_alive:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, True)
            if HAS_IPV6 and af == socket.AF_INET6 and hasattr(socket, "IPPROTO_IPV6"):
                # One socket per family, as asyncio: no dual-stack socket that would also take IPv4.
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, True)
            try:
                sock.bind(address)
            except OSError as err:
                message = f"error while attempting to bind on address {address!r}: {str(err).lower()}"
                if err.errno == errno.EADDRNOTAVAIL:
                    # The family is probably not enabled on this machine (bpo-30945): skip the address.
                    sock.close()
                    if self.get_debug():
                        logger.warning(message)
                    return None
                raise OSError(err.errno, message) from None
        except BaseException:
            sock.close()
            raise
        return sock

    @params_since(ssl_shutdown_timeout=(3, 11), keep_alive=(3, 13))
    async def create_server(self, protocol_factory, host=None, port=None, *, family=socket.AF_UNSPEC,
                            flags=socket.AI_PASSIVE, sock=None, backlog=100, ssl=None, reuse_address=None,
                            reuse_port=None, keep_alive=None, ssl_handshake_timeout=None,
                            ssl_shutdown_timeout=None, start_serving=True):
        """Listen on host:port (a host, a sequence of hosts, or all interfaces) or on sock; return a Server."""
        if isinstance(ssl, bool):
            raise TypeError("ssl argument must be an SSLContext or None")
        if ssl_handshake_timeout is not None and ssl is None:
            raise ValueError("ssl_handshake_timeout is only meaningful with ssl")
        if ssl_shutdown_timeout is not None and ssl is None:
            raise ValueError("ssl_shutdown_timeout is only meaningful with ssl")
        if sock is not None:
            check_ssl_socket(sock)

        if host is not None or port is not None:
            if sock is not None:
                raise ValueError("host/port and sock can not be specified at the same time")
            if reuse_address is None:
                reuse_address = os.name == "posix" and sys.platform != "cygwin"
            if host == "":
                hosts = [None]
            elif isinstance(host, str) or not isinstance(host, collections.abc.Iterable):
                hosts = [host]
            else:
                hosts = host
            lookups = [self._create_server_getaddrinfo(h, port, family=family, flags=flags) for h in hosts]
            if len(lookups) == 1:
                resolved = [await lookups[0]]
            else:
                resolved = await tasks.gather(*lookups)
            # Each address once, even when several hosts resolve to it; in resolution order.
            infos = list(dict.fromkeys(itertools.chain.from_iterable(resolved)))
            sockets = []
            try:
                for info in infos:
                    listener = self._open_listening_socket(info, reuse_address, reuse_port, keep_alive)
                    if listener is not None:
                        sockets.append(listener)
                if not sockets:
                    raise OSError(f"could not bind on any address out of {[info[4] for info in infos]!r}")
            except BaseException:
                for listener in sockets:
                    listener.close()
                raise
        else:
            if sock is None:
                raise ValueError("Neither host/port nor sock were specified")
            if sock.type != socket.SOCK_STREAM:
                raise ValueError(f"A Stream Socket was expected, got {sock!r}")
            sockets = [sock]

        for listener in sockets:
            listener.setblocking(False)
        server = Server(self, sockets, protocol_factory, ssl, backlog, ssl_handshake_timeout, ssl_shutdown_timeout)
        if start_serving:
            await _start_serving_now(server)
        if self.get_debug():
            logger.info("%r is serving", server)
        return server

    @params_since(ssl_shutdown_timeout=(3, 11), cleanup_socket=(3, 13))
    async def create_unix_server(self, protocol_factory, path=None, *, sock=None, backlog=100, ssl=None,
                                 ssl_handshake_timeout=None, ssl_shutdown_timeout=None, start_serving=True,
                                 cleanup_socket=_UNIX_CLEANUP_DEFAULT):
        """Listen on the Unix socket path (abstract when it starts with a NUL) or on sock; return a Server."""
        if isinstance(ssl, bool):
            raise TypeError("ssl argument must be an SSLContext or None")
        if ssl_handshake_timeout is not None and not ssl:
            raise ValueError("ssl_handshake_timeout is only meaningful with ssl")
        if ssl_shutdown_timeout is not None and not ssl:
            raise ValueError("ssl_shutdown_timeout is only meaningful with ssl")

        if path is not None:
            if sock is not None:
                raise ValueError("path and sock can not be specified at the same time")
            path = os.fspath(path)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            if path and not _is_abstract(path):
                _remove_stale_socket_file(path)
            try:
                sock.bind(path)
            except OSError as exc:
                sock.close()
                if exc.errno == errno.EADDRINUSE:
                    raise OSError(errno.EADDRINUSE, f"Address {path!r} is already in use") from None
                raise
            except BaseException:
                sock.close()
                raise
        else:
            if sock is None:
                raise ValueError("path was not specified, and no sock specified")
            _check_unix_stream(sock)

        if cleanup_socket:
            bound = sock.getsockname()
            if bound and not _is_abstract(bound):
                try:
                    self._unix_listeners()[sock] = os.stat(bound).st_ino
                except FileNotFoundError:
                    pass

        sock.setblocking(False)
        server = Server(self, [sock], protocol_factory, ssl, backlog, ssl_handshake_timeout, ssl_shutdown_timeout)
        if start_serving:
            await _start_serving_now(server)
        return server


async def _start_serving_now(server):
    server._start_serving()
    try:
        await tasks.sleep(0)  # one iteration, so that the listening sockets are watched, as asyncio does
    except BaseException:
        server.close()  # cancelled: the caller never gets the server, so nobody else could close it
        raise


def _set_reuse_port(sock):
    if not hasattr(socket, "SO_REUSEPORT"):
        raise ValueError("reuse_port not supported by socket module")
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    except OSError:
        raise ValueError("reuse_port not supported by socket module, SO_REUSEPORT defined but not implemented.")


def _remove_stale_socket_file(path):
    # A socket file left by a previous server would make bind() fail with EADDRINUSE; other files are kept.
    try:
        if stat.S_ISSOCK(os.stat(path).st_mode):
            os.remove(path)
    except FileNotFoundError:
        pass
    except OSError as err:
        logger.error("Unable to check or remove stale UNIX socket %r: %r", path, err)
