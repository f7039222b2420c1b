"""create_datagram_endpoint for zloop.Loop: UDP over IPv4/IPv6 and Unix datagram sockets, as a mixin.

Parameters, validation and exceptions follow asyncio's base_events for the running Python (reuse_address exists
on 3.9 and 3.10 only, and is refused there when true). The transport is C (LoopCore._make_datagram_transport).
"""

import os
import socket
import stat
import sys
import warnings
from asyncio import base_events
from asyncio.log import logger

_PY310 = sys.version_info[:2] == (3, 10)
_PY311 = sys.version_info >= (3, 11)
_PY313 = sys.version_info >= (3, 13)

# asyncio's "not given" marker for reuse_address (3.9, 3.10); it is truthy, which shows in error messages.
_unset = getattr(base_events, "_unset", object())


def _set_reuseport(sock):
    if not hasattr(socket, "SO_REUSEPORT"):
        raise ValueError("reuse_port not supported by socket module")
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    except OSError:
        raise ValueError("reuse_port not supported by socket module, SO_REUSEPORT defined but not implemented.")


def _check_given_sock(sock, options):
    if _PY313:
        if sock.type == socket.SOCK_STREAM:
            raise ValueError(f"A datagram socket was expected, got {sock!r}")
    elif sock.type != socket.SOCK_DGRAM:
        raise ValueError(f"A UDP Socket was expected, got {sock!r}")
    if any(value for name, value in options.items() if name != "reuse_address"):
        problems = ", ".join(f"{name}={value}" for name, value in options.items() if value)
        raise ValueError(f"socket modifier keyword arguments can not be used when sock is specified. ({problems})")
    sock.setblocking(False)


def _check_reuse_address(reuse_address):
    # bpo-37228: SO_REUSEADDR on UDP lets another process take over the port; 3.9 and 3.10 refuse it.
    if reuse_address is _unset:
        return
    if reuse_address:
        raise ValueError("Passing `reuse_address=True` is no longer supported, as the usage of SO_REUSEPORT in "
                         "UDP poses a significant security concern.")
    warnings.warn("The *reuse_address* parameter has been deprecated as of 3.5.10 and is scheduled for removal "
                  "in 3.11.", DeprecationWarning, stacklevel=4)  # the caller of create_datagram_endpoint


def _remove_stale_unix_socket(path):
    """A socket file left by an earlier endpoint at path is removed before bind, as asyncio does."""
    if not path or path[0] in (0, "\x00"):
        return  # abstract namespace: no file
    try:
        if stat.S_ISSOCK(os.stat(path).st_mode):
            os.remove(path)
    except FileNotFoundError:
        pass
    except OSError as err:
        # The directory may allow creating a socket but not inspecting it.
        logger.error("Unable to check or remove stale UNIX socket %r: %r", path, err)


def _check_address_pair(addr):
    if _PY310:
        assert isinstance(addr, tuple) and len(addr) == 2, "2-tuple is expected"
    elif not (isinstance(addr, tuple) and len(addr) == 2):
        raise TypeError("2-tuple is expected")


class DatagramMixin:
    """create_datagram_endpoint; mixed into zloop.Loop after NetworkingMixin (whose resolution helpers it uses)."""

    async def _datagram_address_pairs(self, local_addr, remote_addr, family, proto, flags):
        """[((family, proto), (local address, remote address)), ...] to try in order, as asyncio builds it."""
        if not (local_addr or remote_addr):
            if family == 0:
                raise ValueError("unexpected address family")
            return [((family, proto), (None, None))]
        if hasattr(socket, "AF_UNIX") and family == socket.AF_UNIX:
            for addr in (local_addr, remote_addr):
                if addr is not None and not isinstance(addr, str):
                    raise TypeError("string is expected")
            if local_addr:
                _remove_stale_unix_socket(local_addr)
            return [((family, proto), (local_addr, remote_addr))]
        by_key = {}  # (family, proto) -> [local, remote], in resolution order
        for index, addr in ((0, local_addr), (1, remote_addr)):
            if addr is None:
                continue
            _check_address_pair(addr)
            infos = await self._ensure_resolved(addr, family=family, type=socket.SOCK_DGRAM, proto=proto,
                                                flags=flags, loop=self)
            if not infos:
                raise OSError("getaddrinfo() returned empty list")
            for fam, _, pro, _, address in infos:
                by_key.setdefault((fam, pro), [None, None])[index] = address
        # Each address given must have an entry of the pair's (family, proto).
        pairs = [(key, pair) for key, pair in by_key.items()
                 if not ((local_addr and pair[0] is None) or (remote_addr and pair[1] is None))]
        if not pairs:
            raise ValueError("can not get address information")
        return pairs

    async def _open_datagram_socket(self, family, proto, local_address, remote_address, reuse_port,
                                    allow_broadcast):
        """A non-blocking datagram socket, bound and connected as asked; (sock, remote address or None)."""
        sock = socket.socket(family=family, type=socket.SOCK_DGRAM, proto=proto)
        try:
            if reuse_port:
                _set_reuseport(sock)
            if allow_broadcast:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            sock.setblocking(False)
            if local_address:
                sock.bind(local_address)
            if remote_address:
                # A broadcast endpoint stays unconnected: it sends to remote_addr with sendto.
                if not allow_broadcast:
                    await self.sock_connect(sock, remote_address)
                return sock, remote_address
            return sock, None
        except BaseException:
            sock.close()
            raise

    async def _create_datagram_endpoint(self, protocol_factory, local_addr, remote_addr, family, proto, flags,
                                        reuse_address, reuse_port, allow_broadcast, sock):
        if sock is not None:
            options = dict(local_addr=local_addr, remote_addr=remote_addr, family=family, proto=proto,
                           flags=flags, reuse_address=reuse_address, reuse_port=reuse_port,
                           allow_broadcast=allow_broadcast)
            if _PY311:
                del options["reuse_address"]
            _check_given_sock(sock, options)
            r_addr = None
        else:
            pairs = await self._datagram_address_pairs(local_addr, remote_addr, family, proto, flags)
            _check_reuse_address(reuse_address)
            errors = []
            for (fam, pro), (local_address, remote_address) in pairs:
                try:
                    sock, r_addr = await self._open_datagram_socket(
                        fam, pro, local_address if local_addr else None, remote_address if remote_addr else None,
                        reuse_port, allow_broadcast)
                    break
                except OSError as exc:
                    errors.append(exc)
            else:
                raise errors[0]

        protocol = protocol_factory()
        waiter = self.create_future()
        transport = self._make_datagram_transport(sock, protocol, r_addr, waiter)
        if self.get_debug():
            if local_addr:
                logger.info("Datagram endpoint local_addr=%r remote_addr=%r created: (%r, %r)",
                            local_addr, remote_addr, transport, protocol)
            else:
                logger.debug("Datagram endpoint remote_addr=%r created: (%r, %r)", remote_addr, transport, protocol)
        try:
            await waiter
        except BaseException:
            transport.close()
            raise
        return transport, protocol

    if _PY311:
        async def create_datagram_endpoint(self, protocol_factory, local_addr=None, remote_addr=None, *, family=0,
                                           proto=0, flags=0, reuse_port=None, allow_broadcast=None, sock=None):
            """Create a datagram endpoint (UDP, or Unix datagram with family=AF_UNIX); return (transport,
            protocol)."""
            return await self._create_datagram_endpoint(protocol_factory, local_addr, remote_addr, family, proto,
                                                        flags, _unset, reuse_port, allow_broadcast, sock)
    else:
        async def create_datagram_endpoint(self, protocol_factory, local_addr=None, remote_addr=None, *, family=0,
                                           proto=0, flags=0, reuse_address=_unset, reuse_port=None,
                                           allow_broadcast=None, sock=None):
            """Create a datagram endpoint (UDP, or Unix datagram with family=AF_UNIX); return (transport,
            protocol). reuse_address=True is refused (bpo-37228)."""
            return await self._create_datagram_endpoint(protocol_factory, local_addr, remote_addr, family, proto,
                                                        flags, reuse_address, reuse_port, allow_broadcast, sock)
