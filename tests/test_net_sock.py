# tests/test_net_sock.py — the low-level socket methods (sock_recv ... sock_sendfile): the immediate and the
# waiting paths, IPv4/IPv6/Unix/UDP, rejected sockets, cancellation leaving no watcher, and garbage addresses.

import asyncio
import io
import os
import socket
import ssl

import pytest

from net_helpers import (HAS_IPV6, INET_HOSTS, blackhole, closed_port, no_fd_leak, outcome, run,
                         stock_exception, tcp_listener, watched)


def connected_pair(host="127.0.0.1"):
    """A connected, non-blocking TCP pair (client, server side) over loopback."""
    listener = tcp_listener(host)
    try:
        client = socket.create_connection(listener.getsockname()[:2])
        server, _ = listener.accept()
    finally:
        listener.close()
    client.setblocking(False)
    server.setblocking(False)
    return client, server


@pytest.fixture
def pair():
    client, server = connected_pair()
    yield client, server
    client.close()
    server.close()


# ---------------------------------------------------------------------- receive and send

@pytest.mark.parametrize("host", INET_HOSTS)
def test_sock_recv_immediate_and_waiting(loop, host):
    client, server = connected_pair(host)
    with client, server:
        async def main():
            server.send(b"ready")
            await asyncio.sleep(0.01)
            first = await loop.sock_recv(client, 100)  # data is there: no waiting
            later = loop.create_task(loop.sock_recv(client, 100))
            await asyncio.sleep(0.01)
            assert not later.done()
            server.send(b"later")
            return first, await later
        assert run(loop, main()) == (b"ready", b"later")


async def _recv_while_peer_resets(lp):
    """sock_recv waits; the peer then resets the connection (SO_LINGER 0): the waiting call gets the error."""
    client, server = connected_pair()
    with client, server:
        waiting = asyncio.ensure_future(lp.sock_recv(client, 10))
        await asyncio.sleep(0.01)
        assert not waiting.done()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        server.close()
        return await waiting


def test_sock_recv_error_while_waiting_is_raised(loop):
    expected = stock_exception(_recv_while_peer_resets)
    assert expected is ConnectionResetError
    run(loop, asyncio.sleep(0))   # the first run adds the loop's own watches (signal wake-up)
    base = watched(loop)
    assert outcome(loop, _recv_while_peer_resets(loop)) is expected
    assert watched(loop) == base


def test_sock_recv_returns_empty_bytes_at_eof(loop, pair):
    client, server = pair

    async def main():
        waiting = loop.create_task(loop.sock_recv(client, 10))
        await asyncio.sleep(0.01)
        server.shutdown(socket.SHUT_WR)
        return await waiting
    assert run(loop, main()) == b""


def test_sock_recv_larger_than_one_read_buffer(loop, pair):
    # zloop reads up to 256 KiB through one shared buffer and larger sizes straight into a bytes of that size.
    client, server = pair
    payload = os.urandom(600 * 1024)

    async def main():
        sender = loop.create_task(loop.sock_sendall(server, payload))
        got = bytearray()
        while len(got) < len(payload):
            chunk = await loop.sock_recv(client, 1024 * 1024)
            assert 0 < len(chunk) <= 1024 * 1024
            got += chunk
        await sender
        return bytes(got)
    assert run(loop, main()) == payload


@pytest.mark.parametrize("make", [
    pytest.param(lambda lp, c, s: lp.sock_recv(c, -1), id="recv_negative_size"),
    pytest.param(lambda lp, c, s: (c.close(), lp.sock_recv(c, 10))[1], id="recv_closed"),
    pytest.param(lambda lp, c, s: lp.sock_sendall(c, "text"), id="sendall_str"),
    pytest.param(lambda lp, c, s: (c.close(), lp.sock_sendall(c, b"x"))[1],
                 id="sendall_closed"),
])
def test_sock_recv_and_sendall_errors_are_asyncio_s(loop, make):
    expected = stock_exception(lambda stock: _sock_call(stock, make))
    assert expected in (OSError, ValueError, TypeError)
    assert outcome(loop, _sock_call(loop, make)) is expected


async def _sock_call(lp, make):
    client, server = connected_pair()
    with client, server:
        return await make(lp, client, server)


def test_sock_recv_into(loop, pair):
    client, server = pair
    buf = bytearray(10)

    async def main():
        waiting = loop.create_task(loop.sock_recv_into(client, buf))
        await asyncio.sleep(0.01)
        server.send(b"abc")
        n = await waiting
        server.send(b"defgh")
        await asyncio.sleep(0.01)
        m = await loop.sock_recv_into(client, memoryview(buf)[n:])
        return n, m
    assert run(loop, main()) == (3, 5)
    assert bytes(buf[:8]) == b"abcdefgh"


@pytest.mark.parametrize("host", INET_HOSTS)
def test_sock_sendall_large_payload_waits_for_room(loop, host):
    client, server = connected_pair(host)
    payload = os.urandom(4 * 1024 * 1024)
    with client, server:
        async def reader():
            got = bytearray()
            while len(got) < len(payload):
                chunk = await loop.sock_recv(server, 256 * 1024)
                assert chunk
                got += chunk
            return bytes(got)

        async def main():
            receiving = loop.create_task(reader())
            await loop.sock_sendall(client, payload)
            return await receiving
        assert run(loop, main()) == payload


@pytest.mark.zloop_only  # asyncio counts len(data) in items, not bytes, and never finishes on an int array
def test_sock_sendall_accepts_bytes_like_objects(loop, pair):
    import array
    client, server = pair
    data = array.array("i", range(1000))

    async def main():
        await loop.sock_sendall(client, data)
        await loop.sock_sendall(client, memoryview(b"tail"))
        await loop.sock_sendall(client, b"")
        got = bytearray()
        while len(got) < len(data.tobytes()) + 4:
            got += await loop.sock_recv(server, 65536)
        return bytes(got)
    assert run(loop, main()) == data.tobytes() + b"tail"


@pytest.mark.parametrize("family,host", [
    pytest.param(socket.AF_INET, "127.0.0.1", id="ipv4"),
    pytest.param(socket.AF_INET6, "::1", id="ipv6", marks=pytest.mark.skipif(not HAS_IPV6, reason="no IPv6")),
])
def test_udp_sendto_recvfrom_and_recvfrom_into(loop, family, host):
    a = socket.socket(family, socket.SOCK_DGRAM)
    b = socket.socket(family, socket.SOCK_DGRAM)
    with a, b:
        for s in (a, b):
            s.bind((host, 0))
            s.setblocking(False)

        async def main():
            waiting = loop.create_task(loop.sock_recvfrom(b, 100))
            await asyncio.sleep(0.01)
            assert await loop.sock_sendto(a, b"one", b.getsockname()) == 3
            data, addr = await waiting
            assert data == b"one" and addr[:2] == a.getsockname()[:2]
            buf = bytearray(16)
            waiting = loop.create_task(loop.sock_recvfrom_into(b, buf))
            await asyncio.sleep(0.01)
            await loop.sock_sendto(a, b"two", b.getsockname())
            n, addr = await waiting
            assert (n, bytes(buf[:n])) == (3, b"two")
            await loop.sock_sendto(a, b"three!", b.getsockname())
            await asyncio.sleep(0.01)
            n, addr = await loop.sock_recvfrom_into(b, buf, 5)  # nbytes caps the datagram
            assert (n, bytes(buf[:n])) == (5, b"three")
        run(loop, main())


class _StallingSocket:
    """A UDP socket whose sendto() reports EAGAIN until released (a real full buffer is hard to get)."""

    def __init__(self, sock):
        self._sock = sock
        self.stalled = True
        self.family, self.type, self.proto = sock.family, sock.type, sock.proto

    def fileno(self):
        return self._sock.fileno()

    def gettimeout(self):
        return self._sock.gettimeout()

    def sendto(self, data, *flags_and_address):
        if self.stalled:
            raise BlockingIOError
        return self._sock.sendto(data, *flags_and_address)


def test_sock_sendto_waits_for_writability(loop):
    a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with a, b:
        for s in (a, b):
            s.bind(("127.0.0.1", 0))
            s.setblocking(False)
        stalling = _StallingSocket(a)

        async def main():
            sending = loop.create_task(loop.sock_sendto(stalling, b"x" * 10, b.getsockname()))
            await asyncio.sleep(0.02)
            assert not sending.done()
            stalling.stalled = False
            return await sending
        assert run(loop, main()) == 10


# ---------------------------------------------------------------------- connect and accept

@pytest.mark.parametrize("host", INET_HOSTS)
def test_sock_connect_and_accept(loop, host):
    listener = tcp_listener(host)
    listener.setblocking(False)
    family = listener.family
    client = socket.socket(family, socket.SOCK_STREAM)
    client.setblocking(False)
    with listener, client:
        async def main():
            accepting = loop.create_task(loop.sock_accept(listener))
            await asyncio.sleep(0.01)
            assert not accepting.done()
            await loop.sock_connect(client, listener.getsockname())
            conn, addr = await accepting
            with conn:
                assert conn.gettimeout() == 0  # accepted sockets are non-blocking
                assert addr[:2] == client.getsockname()[:2]
                await loop.sock_sendall(conn, b"hi")
                return await loop.sock_recv(client, 10)
        assert run(loop, main()) == b"hi"


def test_sock_connect_resolves_host_names(loop):
    listener = tcp_listener("127.0.0.1")
    client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    client.setblocking(False)
    with listener, client:
        run(loop, loop.sock_connect(client, ("localhost", listener.getsockname()[1])))
        assert client.getpeername() == listener.getsockname()


def test_sock_connect_unix_path(loop, tmp_path):
    path = str(tmp_path / "s")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.setblocking(False)
    with listener, client:
        listener.bind(path)
        listener.listen()
        run(loop, loop.sock_connect(client, path))
        assert client.getpeername() == path


@pytest.mark.parametrize("host", INET_HOSTS)
def test_sock_connect_refused(loop, host):
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    client = socket.socket(family, socket.SOCK_STREAM)
    client.setblocking(False)
    with client:
        with pytest.raises(ConnectionRefusedError):
            run(loop, loop.sock_connect(client, (host, closed_port(host))))


def test_sock_connect_missing_unix_path(loop, tmp_path):
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.setblocking(False)
    with client:
        with pytest.raises(FileNotFoundError):
            run(loop, loop.sock_connect(client, str(tmp_path / "nothing")))


@pytest.mark.parametrize("address", [
    pytest.param(("no-such-host.invalid", 80), id="unknown-host"),
    pytest.param(("127.0.0.1", "no-such-service"), id="bad-service"),
    pytest.param(("127.0.0.1", 70000), id="port-out-of-range"),
    pytest.param(("127.0.0.1", -1), id="negative-port"),
    pytest.param(None, id="none"),
    pytest.param(12, id="int"),
    pytest.param(("127.0.0.1",), id="short-tuple"),
    pytest.param(("::1", 80), id="ipv6-on-ipv4-socket"),
])
def test_sock_connect_garbage_addresses_raise_what_asyncio_raises(loop, address):
    def attempt(lp):
        async def go():
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.setblocking(False)
                await lp.sock_connect(sock, address)
        return go()

    expected = stock_exception(attempt)
    assert expected is not None
    assert outcome(loop, attempt(loop)) is expected


# ---------------------------------------------------------------------- rejected sockets

@pytest.mark.zloop_only
@pytest.mark.parametrize("method,args", [
    ("sock_recv", (10,)), ("sock_recv_into", (bytearray(10),)), ("sock_recvfrom", (10,)),
    ("sock_recvfrom_into", (bytearray(10),)), ("sock_sendall", (b"x",)), ("sock_sendto", (b"x", ("127.0.0.1", 9))),
    ("sock_connect", (("127.0.0.1", 9),)), ("sock_accept", ()),
])
def test_blocking_sockets_are_rejected(loop, method, args):
    # asyncio checks this in debug mode only; zloop always does (a blocking call would stall the loop).
    run(loop, asyncio.sleep(0))
    base = watched(loop)
    with socket.socket() as sock:
        with pytest.raises(ValueError, match="the socket must be non-blocking"):
            run(loop, getattr(loop, method)(sock, *args))
    assert watched(loop) == base


@pytest.mark.parametrize("method,args", [("sock_recv", (10,)), ("sock_sendall", (b"x",)), ("sock_accept", ())])
def test_ssl_sockets_are_rejected(loop, method, args):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    with ctx.wrap_socket(socket.socket(), do_handshake_on_connect=False, server_hostname="x") as sock:
        with pytest.raises(TypeError, match="SSLSocket"):
            run(loop, getattr(loop, method)(sock, *args))


def test_waiting_on_an_fd_owned_by_a_transport_raises(loop):
    listener = tcp_listener()
    with listener:
        async def main():
            transport, _ = await loop.create_connection(asyncio.Protocol, *listener.getsockname())
            conn, _ = listener.accept()
            try:
                with pytest.raises(RuntimeError, match="is used by transport"):
                    await loop.sock_recv(_SameFd(transport.get_extra_info("socket")), 10)
            finally:
                transport.close()
                conn.close()
            await asyncio.sleep(0)
        run(loop, main())


class _SameFd:
    """Looks like the transport's socket (same fd) to the sock_* methods, without owning the fd."""

    def __init__(self, trsock):
        self._trsock = trsock

    def fileno(self):
        return self._trsock.fileno()

    def gettimeout(self):
        return 0

    def recv(self, n):
        raise BlockingIOError


# ---------------------------------------------------------------------- cancellation leaves no watcher

def _cancel_while_waiting(loop, start):
    """Start an awaiting call, let it block, cancel it: nothing may stay watched."""
    async def main():
        base = watched(loop)
        task = loop.create_task(start())
        for _ in range(5):
            await asyncio.sleep(0.01)
        assert not task.done()
        assert watched(loop) == base + 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0)
        return base
    base = run(loop, main())
    assert watched(loop) == base


def test_cancel_sock_recv(loop, pair):
    _cancel_while_waiting(loop, lambda: loop.sock_recv(pair[0], 10))


def test_cancel_sock_recv_into(loop, pair):
    _cancel_while_waiting(loop, lambda: loop.sock_recv_into(pair[0], bytearray(10)))


def test_cancel_sock_recvfrom_and_recvfrom_into(loop):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        _cancel_while_waiting(loop, lambda: loop.sock_recvfrom(sock, 10))
        _cancel_while_waiting(loop, lambda: loop.sock_recvfrom_into(sock, bytearray(10)))


def test_cancel_sock_accept(loop):
    with tcp_listener() as listener:
        listener.setblocking(False)
        _cancel_while_waiting(loop, lambda: loop.sock_accept(listener))


def test_cancel_sock_sendall(loop, pair):
    client, _ = pair
    client.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    _cancel_while_waiting(loop, lambda: loop.sock_sendall(client, b"x" * (64 * 1024 * 1024)))


def test_cancel_sock_sendto(loop):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        _cancel_while_waiting(loop, lambda: loop.sock_sendto(_StallingSocket(sock), b"x", ("127.0.0.1", 9)))


def test_cancel_sock_connect(loop):
    with blackhole() as address:
        sock = socket.socket()
        sock.setblocking(False)
        with sock:
            _cancel_while_waiting(loop, lambda: loop.sock_connect(sock, address))


def test_cancel_sock_sendfile(loop, pair, tmp_path, is_zloop):
    client, _ = pair
    client.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    path = tmp_path / "big"
    path.write_bytes(b"z" * (32 * 1024 * 1024))
    with open(path, "rb") as fp:
        _cancel_while_waiting(loop, lambda: loop.sock_sendfile(client, fp))
        if is_zloop:  # asyncio leaves the position where it was when cancelled
            assert 0 < fp.tell() < 32 * 1024 * 1024  # the position says how much went out


def test_completed_calls_leave_no_watcher(loop, pair):
    client, server = pair

    async def main():
        base = watched(loop)
        for i in range(20):
            waiting = loop.create_task(loop.sock_recv(client, 10))
            await asyncio.sleep(0)
            await loop.sock_sendall(server, b"%d" % i)
            await waiting
        assert watched(loop) == base
    run(loop, main())


# ---------------------------------------------------------------------- sock_sendfile

@pytest.fixture
def data_file(tmp_path):
    data = os.urandom(1024 * 1024 + 123)
    path = tmp_path / "data"
    path.write_bytes(data)
    with open(path, "rb") as fp:
        yield fp, data


async def _drain(loop, sock, nbytes):
    got = bytearray()
    while len(got) < nbytes:
        chunk = await loop.sock_recv(sock, 256 * 1024)
        if not chunk:
            break
        got += chunk
    return bytes(got)


@pytest.mark.parametrize("offset,count", [(0, None), (1000, None), (1000, 5000), (0, 10 ** 9)])
def test_sock_sendfile_native(loop, pair, data_file, offset, count):
    client, server = pair
    fp, data = data_file
    expected = data[offset:offset + count] if count else data[offset:]

    async def main():
        receiving = loop.create_task(_drain(loop, server, len(expected)))
        sent = await loop.sock_sendfile(client, fp, offset, count)
        return sent, await receiving
    sent, got = run(loop, main())
    assert sent == len(expected) and got == expected
    assert fp.tell() == offset + sent


def test_sock_sendfile_empty_file(loop, pair, tmp_path):
    path = tmp_path / "empty"
    path.write_bytes(b"")
    with open(path, "rb") as fp:
        assert run(loop, loop.sock_sendfile(pair[0], fp)) == 0


def test_sock_sendfile_fallback_for_objects_without_fd(loop, pair):
    client, server = pair
    data = os.urandom(300 * 1024)

    async def main():
        receiving = loop.create_task(_drain(loop, server, len(data) - 10))
        sent = await loop.sock_sendfile(client, io.BytesIO(data), 10)
        return sent, await receiving
    sent, got = run(loop, main())
    assert sent == len(data) - 10 and got == data[10:]


def test_sock_sendfile_without_fallback_raises(loop, pair):
    with pytest.raises(asyncio.SendfileNotAvailableError):
        run(loop, loop.sock_sendfile(pair[0], io.BytesIO(b"abc"), fallback=False))


@pytest.mark.parametrize("kwargs,error", [
    ({"offset": -1}, ValueError), ({"offset": "1"}, TypeError), ({"count": 0}, ValueError),
    ({"count": 1.5}, TypeError),
])
def test_sock_sendfile_bad_parameters(loop, pair, data_file, kwargs, error):
    with pytest.raises(error):
        run(loop, loop.sock_sendfile(pair[0], data_file[0], **kwargs))


def test_sock_sendfile_rejects_text_files_and_datagram_sockets(loop, pair, tmp_path):
    path = tmp_path / "t"
    path.write_text("text")
    with open(path, "r") as fp:
        with pytest.raises(ValueError, match="binary mode"):
            run(loop, loop.sock_sendfile(pair[0], fp))
    with open(path, "rb") as fp, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.setblocking(False)
        with pytest.raises(ValueError, match="SOCK_STREAM"):
            run(loop, loop.sock_sendfile(udp, fp))


def test_sock_sendfile_to_a_reset_peer(loop, data_file):
    client, server = connected_pair()
    with client:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        server.close()  # RST

        async def main():
            await asyncio.sleep(0.05)
            await loop.sock_sendfile(client, data_file[0])
        with pytest.raises(OSError):
            run(loop, main())


def test_sock_methods_do_not_leak_fds(loop):
    with no_fd_leak(loop):
        for _ in range(20):
            client, server = connected_pair()
            with client, server:
                async def main():
                    waiting = loop.create_task(loop.sock_recv(server, 10))
                    await asyncio.sleep(0)
                    await loop.sock_sendall(client, b"x")
                    return await waiting
                assert run(loop, main()) == b"x"
