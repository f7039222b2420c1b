"""zloop's low-level socket methods (sock_recv ... sock_sendfile), name resolution, and helpers shared by _net.

Every method tries the system call first and waits for readiness (add_reader/add_writer and a future) only on
EAGAIN; the watcher goes away when the call completes and when the awaiting task is cancelled.
"""

import errno
import functools
import inspect
import io
import os
import socket
import sys
from asyncio import constants, coroutines, exceptions
from asyncio.log import logger

try:
    import ssl
except ImportError:  # pragma: no cover - Python built without ssl
    ssl = None

_PLAIN_SOCKET = socket.socket   # exactly this type takes the C fast paths (core/sock_now.c)
HAS_IPV6 = hasattr(socket, "AF_INET6")
_INET_FAMILIES = (socket.AF_INET, socket.AF_INET6) if HAS_IPV6 else (socket.AF_INET,)
_NUMERIC_NI = socket.NI_NUMERICHOST | socket.NI_NUMERICSERV
# os.sendfile's count must fit a C ssize_t; 1 GiB on 32-bit machines, like asyncio.
_MAX_SENDFILE_BLOCK = sys.maxsize // 2 + 1
# asyncio 3.14+ always moves the file position: the read-and-send fallbacks seek to the offset even when it is 0,
# and os.sendfile leaves it at offset + sent even when nothing was sent. Before 3.14, neither did.
_SENDFILE_ALWAYS_SEEKS = sys.version_info >= (3, 14)


def seek_to_sendfile_offset(file, offset):
    if offset or (_SENDFILE_ALWAYS_SEEKS and hasattr(file, "seek")):
        file.seek(offset)


# ---------------------------------------------------------------------- per-version signatures

def params_since(**versions):
    """Hide keyword-only parameters that the running Python's asyncio does not have yet.

    params_since(all_errors=(3, 12)) on Python 3.11 removes all_errors from the signature, and passing it raises
    TypeError when the method is called, as the stdlib does. On a Python that has them all, the function is kept.
    """
    missing = tuple(name for name, version in versions.items() if sys.version_info < version)

    def decorate(func):
        if not missing:
            return func
        signature = inspect.signature(func)
        qualname = func.__qualname__

        @functools.wraps(func)
        def method(*args, **kwargs):
            for name in missing:
                if name in kwargs:
                    raise TypeError(f"{qualname}() got an unexpected keyword argument {name!r}")
            return func(*args, **kwargs)

        method.__signature__ = signature.replace(
            parameters=[p for p in signature.parameters.values() if p.name not in missing])
        if hasattr(inspect, "markcoroutinefunction") and inspect.iscoroutinefunction(func):
            inspect.markcoroutinefunction(method)
        elif inspect.iscoroutinefunction(func) and hasattr(coroutines, "_is_coroutine"):
            method._is_coroutine = coroutines._is_coroutine  # what asyncio.iscoroutinefunction looks for
        return method

    return decorate


# ---------------------------------------------------------------------- checks

def check_ssl_socket(sock):
    if ssl is not None and isinstance(sock, ssl.SSLSocket):
        raise TypeError("Socket cannot be of type SSLSocket")


def check_socket(sock):
    """Reject what the sock_* methods cannot wait on: SSL sockets and blocking sockets."""
    if ssl is not None and isinstance(sock, ssl.SSLSocket):
        raise TypeError("Socket cannot be of type SSLSocket")
    if sock.gettimeout() != 0:
        raise ValueError("the socket must be non-blocking")


def fileobj_to_fd(fileobj):
    if isinstance(fileobj, int):
        return fileobj
    try:
        return int(fileobj.fileno())
    except (AttributeError, TypeError, ValueError):
        raise ValueError(f"Invalid file object: {fileobj!r}") from None


# ---------------------------------------------------------------------- addresses

def _port_number(port):
    """The port as an int when it is numeric (or empty), else None (a service name needs getaddrinfo)."""
    if port is None or port == b"" or port == "":
        return 0
    if isinstance(port, int):
        return port
    try:
        return int(port)
    except (TypeError, ValueError):
        return None


def ip_literal_info(host, port, family, type, proto, flowinfo=0, scopeid=0):
    """One getaddrinfo() entry for a host that is already an IP address, or None when it has to be resolved."""
    if host is None or proto not in (0, socket.IPPROTO_TCP, socket.IPPROTO_UDP):
        return None
    if type == socket.SOCK_STREAM:
        proto = socket.IPPROTO_TCP
    elif type == socket.SOCK_DGRAM:
        proto = socket.IPPROTO_UDP
    else:
        return None
    port = _port_number(port)
    if port is None:
        return None
    if isinstance(host, bytes):
        try:
            host = host.decode("idna")
        except UnicodeError:
            return None
    if not isinstance(host, str) or "%" in host:
        return None  # inet_pton does not take an IPv6 zone index
    families = _INET_FAMILIES if family == socket.AF_UNSPEC else (family,)
    for af in families:
        try:
            socket.inet_pton(af, host)
        except (OSError, ValueError):
            continue
        if HAS_IPV6 and af == socket.AF_INET6:
            return af, type, proto, "", (host, port, flowinfo, scopeid)
        return af, type, proto, "", (host, port)
    return None


def _is_numeric_host(host):
    """True when getaddrinfo(host, ...) needs no name service: None or an IP literal (zone index allowed)."""
    if host is None:
        return True
    if isinstance(host, bytes):
        try:
            host = host.decode("ascii")
        except UnicodeError:
            return False
    if not isinstance(host, str) or not host:
        return False
    address = host.partition("%")[0]
    for af in _INET_FAMILIES:
        try:
            socket.inet_pton(af, address)
            return True
        except (OSError, ValueError):
            pass
    return False


def _is_numeric_port(port):
    return port is None or isinstance(port, int) or (
        isinstance(port, (str, bytes)) and (port.isdigit() or not port))


# ---------------------------------------------------------------------- readiness callbacks

# The operations retried on readiness take the socket first and look its method up at each call.
def _recv(sock, n):
    return sock.recv(n)


def _recv_into(sock, buf):
    return sock.recv_into(buf)


def _recvfrom(sock, bufsize):
    return sock.recvfrom(bufsize)


def _recvfrom_into(sock, buf, nbytes):
    return sock.recvfrom_into(buf, nbytes)


def _sendto(sock, data, address):
    return sock.sendto(data, address)


def _accept_nonblocking(sock):
    conn, address = sock.accept()
    try:
        conn.setblocking(False)
    except BaseException:
        conn.close()
        raise
    return conn, address


class SocketMixin:
    """sock_* methods, getaddrinfo/getnameinfo and the resolution helpers create_connection builds on."""

    # ------------------------------------------------------------------ transports on fds

    def _ensure_fd_no_transport(self, fd):
        fileno = fd if type(fd) is int else fileobj_to_fd(fd)
        transport = self._fd_transport(fileno)
        if transport is not None and not transport.is_closing():
            raise RuntimeError(f"File descriptor {fd!r} is used by transport {transport!r}")

    # ------------------------------------------------------------------ waiting for readiness

    def _retry_when_ready(self, fut, fd, writer, operation, sock, args):
        # The watcher's callback: run the operation again; a still-blocked call waits for the next readiness.
        if fut.done():
            return
        try:
            result = operation(sock, *args)
        except (BlockingIOError, InterruptedError):
            return
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            fut.set_exception(exc)
        else:
            fut.set_result(result)
        # Done: drop the watcher now rather than when the task resumes (which cancels this handle).
        if writer:
            self.remove_writer(fd)
        else:
            self.remove_reader(fd)

    async def _wait_and_retry(self, sock, writer, operation, *args):
        """Wait until sock is readable (or writable) and return operation(sock, *args), retried on EAGAIN.

        The watcher is added and removed with the socket object, not its number: the loop then keeps the fd
        registered across a remove and the next add of the same socket (one sock_recv after another) instead of
        two epoll_ctl calls per message (core/io_watch.c, stale events)."""
        fut = self.create_future()
        self._ensure_fd_no_transport(sock.fileno())
        fd = sock
        if writer:
            handle = self.add_writer(fd, self._retry_when_ready, fut, fd, True, operation, sock, args)
        else:
            handle = self.add_reader(fd, self._retry_when_ready, fut, fd, False, operation, sock, args)
        try:
            return await fut
        finally:
            # A cancelled handle was either completed (the callback removed it) or replaced by someone else's.
            if not handle.cancelled():
                if writer:
                    self.remove_writer(fd)
                else:
                    self.remove_reader(fd)
            fut = None

    def _wake_once(self, fut, fd, writer):
        if writer:
            self.remove_writer(fd)
        else:
            self.remove_reader(fd)
        if not fut.done():
            fut.set_result(None)

    async def _wait_fd(self, fd, writer):
        """Wait until fd is readable (or writable); the watcher is gone on return, also on cancellation."""
        fut = self.create_future()
        if writer:
            handle = self.add_writer(fd, self._wake_once, fut, fd, True)
        else:
            handle = self.add_reader(fd, self._wake_once, fut, fd, False)
        try:
            await fut
        finally:
            if not handle.cancelled():
                if writer:
                    self.remove_writer(fd)
                else:
                    self.remove_reader(fd)

    # ------------------------------------------------------------------ receiving

    async def sock_recv(self, sock, n):
        """Receive up to n bytes from the non-blocking socket sock."""
        if type(sock) is _PLAIN_SOCKET:
            # check_socket inlined (a plain socket is no SSLSocket): this is the per-message path.
            if sock.timeout != 0:
                raise ValueError("the socket must be non-blocking")
            # One recv in C: nothing to read yet is a None, not a BlockingIOError (core/sock_now.c).
            data = self._sock_recv_now(sock.fileno(), n)
            if data is not None:
                return data
            return await self._wait_and_recv(sock, n)
        check_socket(sock)
        try:
            return sock.recv(n)
        except (BlockingIOError, InterruptedError):
            pass
        return await self._wait_and_retry(sock, False, _recv, n)

    async def _wait_and_recv(self, sock, n):
        """_wait_and_retry for sock_recv on a plain socket, with one Python call per readiness instead of three
        (the retry calls the C recv directly, and "nothing yet" is a None rather than a BlockingIOError)."""
        fut = self.create_future()
        self._ensure_fd_no_transport(sock.fileno())
        handle = self.add_reader(sock, self._recv_when_ready, fut, sock, n)
        try:
            return await fut
        finally:
            if not handle.cancelled():   # as in _wait_and_retry
                self.remove_reader(sock)
            fut = None

    def _recv_when_ready(self, fut, sock, n):
        if fut.done():
            return
        try:
            data = self._sock_recv_now(sock.fileno(), n)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            fut.set_exception(exc)
        else:
            if data is None:
                return
            fut.set_result(data)
        self.remove_reader(sock)

    async def sock_recv_into(self, sock, buf):
        """Receive into the writable buffer buf; return the number of bytes received."""
        check_socket(sock)
        try:
            return sock.recv_into(buf)
        except (BlockingIOError, InterruptedError):
            pass
        return await self._wait_and_retry(sock, False, _recv_into, buf)

    async def sock_recvfrom(self, sock, bufsize):
        """Receive a datagram of up to bufsize bytes; return (data, address)."""
        check_socket(sock)
        try:
            return sock.recvfrom(bufsize)
        except (BlockingIOError, InterruptedError):
            pass
        return await self._wait_and_retry(sock, False, _recvfrom, bufsize)

    async def sock_recvfrom_into(self, sock, buf, nbytes=0):
        """Receive a datagram into buf (at most nbytes, default len(buf)); return (nbytes, address)."""
        check_socket(sock)
        if not nbytes:
            nbytes = len(buf)
        try:
            return sock.recvfrom_into(buf, nbytes)
        except (BlockingIOError, InterruptedError):
            pass
        return await self._wait_and_retry(sock, False, _recvfrom_into, buf, nbytes)

    async def sock_accept(self, sock):
        """Accept a connection on the listening socket sock; return (conn, address), conn non-blocking."""
        check_socket(sock)
        try:
            return _accept_nonblocking(sock)
        except (BlockingIOError, InterruptedError):
            pass
        return await self._wait_and_retry(sock, False, _accept_nonblocking)

    # ------------------------------------------------------------------ sending

    async def sock_sendall(self, sock, data):
        """Send all of data on the connected socket sock."""
        if type(sock) is _PLAIN_SOCKET:
            if sock.timeout != 0:                                   # check_socket, inlined as in sock_recv
                raise ValueError("the socket must be non-blocking")
            sent = self._sock_send_now(sock.fileno(), data) or 0     # None: the socket takes nothing now
        else:
            check_socket(sock)
            try:
                sent = sock.send(data)
            except (BlockingIOError, InterruptedError):
                sent = 0
        if type(data) is bytes or type(data) is bytearray:
            if sent == len(data):
                return
            view = memoryview(data)
        else:
            view = memoryview(data).cast("B")
            if sent == len(view):
                return
        fut = self.create_future()
        self._ensure_fd_no_transport(sock.fileno())
        fd = sock   # the socket object: see _wait_and_retry
        state = [view, sent]
        handle = self.add_writer(fd, self._sock_sendall_ready, fut, fd, sock, state)
        try:
            return await fut
        finally:
            if not handle.cancelled():
                self.remove_writer(fd)
            fut = None

    def _sock_sendall_ready(self, fut, fd, sock, state):
        if fut.done():
            return
        view, pos = state
        try:
            pos += sock.send(view[pos:])
        except (BlockingIOError, InterruptedError):
            return
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            fut.set_exception(exc)
            self.remove_writer(fd)
            return
        if pos >= len(view):
            fut.set_result(None)
            self.remove_writer(fd)
        else:
            state[1] = pos

    async def sock_sendto(self, sock, data, address):
        """Send a datagram to address; return the number of bytes sent."""
        check_socket(sock)
        try:
            return sock.sendto(data, address)
        except (BlockingIOError, InterruptedError):
            pass
        return await self._wait_and_retry(sock, True, _sendto, data, address)

    # ------------------------------------------------------------------ connecting

    async def sock_connect(self, sock, address):
        """Connect sock to address; host names of INET sockets are resolved first."""
        check_socket(sock)
        if sock.family in _INET_FAMILIES:
            resolved = await self._ensure_resolved(address, family=sock.family, type=sock.type,
                                                   proto=sock.proto)
            address = resolved[0][4]
        try:
            sock.connect(address)
            return None
        except (BlockingIOError, InterruptedError):
            pass
        fut = self.create_future()
        fd = sock.fileno()
        self._ensure_fd_no_transport(fd)
        handle = self.add_writer(fd, self._sock_connect_ready, fut, fd, sock, address)
        try:
            return await fut
        finally:
            if not handle.cancelled():
                self.remove_writer(fd)
            fut = None

    def _sock_connect_ready(self, fut, fd, sock, address):
        if fut.done():
            return
        try:
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err != 0:
                raise OSError(err, f"Connect call failed {address}")
        except (BlockingIOError, InterruptedError):
            return
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            fut.set_exception(exc)
        else:
            fut.set_result(None)
        self.remove_writer(fd)
        fut = None

    # ------------------------------------------------------------------ sendfile on a socket

    async def sock_sendfile(self, sock, file, offset=0, count=None, *, fallback=True):
        """Send file over sock with os.sendfile, or read-and-send when that is impossible and fallback is true."""
        check_socket(sock)
        self._check_sendfile_params(sock, file, offset, count)
        try:
            return await self._sock_sendfile_native(sock, file, offset, count)
        except exceptions.SendfileNotAvailableError:
            if not fallback:
                raise
        return await self._sock_sendfile_fallback(sock, file, offset, count)

    def _check_sendfile_params(self, sock, file, offset, count):
        if "b" not in getattr(file, "mode", "b"):
            raise ValueError("file should be opened in binary mode")
        if not sock.type == socket.SOCK_STREAM:
            raise ValueError("only SOCK_STREAM type sockets are supported")
        if count is not None:
            if not isinstance(count, int):
                raise TypeError(f"count must be a positive integer (got {count!r})")
            if count <= 0:
                raise ValueError(f"count must be a positive integer (got {count!r})")
        if not isinstance(offset, int):
            raise TypeError(f"offset must be a non-negative integer (got {offset!r})")
        if offset < 0:
            raise ValueError(f"offset must be a non-negative integer (got {offset!r})")

    async def _sock_sendfile_native(self, sock, file, offset, count):
        if not hasattr(os, "sendfile"):
            raise exceptions.SendfileNotAvailableError("os.sendfile() is not available")
        try:
            fileno = file.fileno()
        except (AttributeError, io.UnsupportedOperation):
            raise exceptions.SendfileNotAvailableError("not a regular file")
        try:
            fsize = os.fstat(fileno).st_size
        except OSError:
            raise exceptions.SendfileNotAvailableError("not a regular file")
        blocksize = count if count else fsize
        if not blocksize:
            return 0  # an empty file
        return await self._sendfile_fd(sock.fileno(), fileno, offset, count, blocksize)

    async def _sendfile_fd(self, fd, fileno, offset, count, blocksize):
        """os.sendfile from fileno to the socket fd until count bytes (or EOF); the file position follows."""
        total = 0
        waited = False
        try:
            while True:
                if count:
                    blocksize = count - total
                    if blocksize <= 0:
                        return total
                try:
                    sent = os.sendfile(fd, fileno, offset + total, min(blocksize, _MAX_SENDFILE_BLOCK))
                except (BlockingIOError, InterruptedError):
                    sent = -1
                except OSError as exc:
                    if total == 0:
                        # Not a file sendfile(2) can read (or a socket it cannot write): the caller falls back.
                        raise exceptions.SendfileNotAvailableError("os.sendfile call failed") from exc
                    if waited and exc.errno == errno.ENOTCONN and type(exc) is not ConnectionError:
                        # The peer went away mid-transfer: the same error on every platform.
                        raise ConnectionError("socket is not connected", errno.ENOTCONN) from exc
                    raise
                if sent == 0:
                    return total  # EOF
                if sent > 0:
                    total += sent
                # Wait for room in the socket buffer (after a full chunk too: the rest of the loop gets a turn).
                waited = True
                self._ensure_fd_no_transport(fd)
                await self._wait_fd(fd, True)
        finally:
            if total > 0 or _SENDFILE_ALWAYS_SEEKS:
                os.lseek(fileno, offset + total, os.SEEK_SET)

    async def _sock_sendfile_fallback(self, sock, file, offset, count):
        seek_to_sendfile_offset(file, offset)
        blocksize = constants.SENDFILE_FALLBACK_READBUFFER_SIZE
        if count:
            blocksize = min(count, blocksize)
        buf = bytearray(blocksize)
        total = 0
        try:
            while True:
                if count:
                    blocksize = min(count - total, blocksize)
                    if blocksize <= 0:
                        break
                view = memoryview(buf)[:blocksize]
                read = await self.run_in_executor(None, file.readinto, view)
                if not read:
                    break  # EOF
                await self.sock_sendall(sock, view[:read])
                total += read
            return total
        finally:
            if total > 0 and hasattr(file, "seek"):
                file.seek(offset + total)

    # ------------------------------------------------------------------ name resolution

    def _getaddrinfo_logged(self, host, port, family, type, proto, flags):
        details = [f"{host}:{port!r}"]
        for name, value in (("family", family), ("type", type), ("proto", proto), ("flags", flags)):
            if value:
                details.append(f"{name}={value!r}")
        details = ", ".join(details)
        logger.debug("Get address info %s", details)
        t0 = self.time()
        infos = socket.getaddrinfo(host, port, family, type, proto, flags)
        dt = self.time() - t0
        message = f"Getting address info {details} took {dt * 1e3:.3f}ms: {infos!r}"
        if dt >= self.slow_callback_duration:
            logger.info(message)
        else:
            logger.debug(message)
        return infos

    async def getaddrinfo(self, host, port, *, family=0, type=0, proto=0, flags=0):
        """socket.getaddrinfo off the loop's thread; IP literals are answered at once, with no thread."""
        if _is_numeric_host(host) and _is_numeric_port(port):
            try:
                return socket.getaddrinfo(host, port, family, type, proto, flags | socket.AI_NUMERICHOST)
            except (OSError, UnicodeError):
                pass  # the resolver in the executor raises the error the stdlib would
        resolve = self._getaddrinfo_logged if self.get_debug() else socket.getaddrinfo
        return await self.run_in_executor(None, resolve, host, port, family, type, proto, flags)

    async def getnameinfo(self, sockaddr, flags=0):
        """socket.getnameinfo off the loop's thread; answered at once when no lookup is asked for."""
        if flags & _NUMERIC_NI == _NUMERIC_NI:
            return socket.getnameinfo(sockaddr, flags)
        return await self.run_in_executor(None, socket.getnameinfo, sockaddr, flags)

    async def _ensure_resolved(self, address, *, family=0, type=socket.SOCK_STREAM, proto=0, flags=0, loop=None):
        """getaddrinfo() entries for address, with no resolver call when its host is an IP literal."""
        host, port = address[:2]
        info = ip_literal_info(host, port, family, type, proto, *address[2:])
        if info is not None:
            return [info]
        return await (loop or self).getaddrinfo(host, port, family=family, type=type, proto=proto, flags=flags)
