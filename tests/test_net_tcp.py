# tests/test_net_tcp.py — TCP connections over IPv4 and IPv6: create_connection and each of its parameters,
# Happy Eyeballs, the transport as protocols see it (Protocol and BufferedProtocol), flow control, half-close,
# 10 MiB both ways and 500 concurrent connections.

import asyncio
import hashlib
import os
import re
import socket
import sys

import pytest

from net_helpers import (INET_HOSTS, PY311, PY312, EchoServer, Recorder, blackhole, closed_port,
                         echo_roundtrip, no_fd_leak, outcome, requires_ipv6, run, stock_exception, tcp_listener,
                         watched)


async def echo_server(loop, host="127.0.0.1", **kwargs):
    server = await loop.create_server(EchoServer, host, 0, **kwargs)
    return server, server.sockets[0].getsockname()[:2]


async def close_server(server):
    server.close()
    await server.wait_closed()


class BufferedRecorder(asyncio.BufferedProtocol):
    """A BufferedProtocol that gathers what arrives through its own buffer."""

    def __init__(self, loop):
        self.buffer = bytearray(16 * 1024)
        self.data = bytearray()
        self.sizehints = []
        self.lost = loop.create_future()
        self.eof = False

    def connection_made(self, transport):
        self.transport = transport

    def get_buffer(self, sizehint):
        self.sizehints.append(sizehint)
        return self.buffer

    def buffer_updated(self, nbytes):
        self.data += self.buffer[:nbytes]

    def eof_received(self):
        self.eof = True

    def connection_lost(self, exc):
        self.lost.set_result(exc)


# ---------------------------------------------------------------------- basics

@pytest.mark.parametrize("host", INET_HOSTS)
def test_echo_and_extra_info(loop, host):
    async def main():
        server, address = await echo_server(loop, host)
        transport, proto = await loop.create_connection(lambda: Recorder(loop), *address)
        assert await echo_roundtrip(transport, proto, b"hello") == b"hello"
        sock = transport.get_extra_info("socket")
        assert isinstance(sock, asyncio.trsock.TransportSocket)
        assert sock.family == (socket.AF_INET6 if ":" in host else socket.AF_INET)
        assert transport.get_extra_info("peername")[:2] == address
        assert transport.get_extra_info("sockname") == sock.getsockname()
        assert transport.get_extra_info("nothing", "default") == "default"
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        assert transport.get_protocol() is proto
        assert not transport.is_closing() and transport.is_reading()
        transport.close()
        assert transport.is_closing()
        assert await proto.lost is None
        assert proto.calls == ["made", "data", "lost"]
        await close_server(server)
    run(loop, main())


@pytest.mark.parametrize("host", INET_HOSTS)
def test_buffered_protocol_client(loop, host):
    payload = os.urandom(200 * 1024)

    async def main():
        server, address = await echo_server(loop, host)
        transport, proto = await loop.create_connection(lambda: BufferedRecorder(loop), *address)
        transport.write(payload)
        while len(proto.data) < len(payload):
            await asyncio.sleep(0.005)
        transport.close()
        await proto.lost
        await close_server(server)
        return proto
    proto = run(loop, main())
    assert proto.data == payload and proto.sizehints


def test_create_connection_with_a_connected_sock(loop):
    async def main():
        server, address = await echo_server(loop)
        raw = socket.create_connection(address)
        transport, proto = await loop.create_connection(lambda: Recorder(loop), sock=raw)
        assert await echo_roundtrip(transport, proto, b"x") == b"x"
        transport.close()
        await proto.lost
        assert raw.fileno() == -1  # the transport owned and closed it
        await close_server(server)
    run(loop, main())


def test_create_connection_resolves_names_and_honours_family_proto_flags(loop):
    async def main():
        server, (_, port) = await echo_server(loop)
        transport, proto = await loop.create_connection(lambda: Recorder(loop), "localhost", port,
                                                        family=socket.AF_INET, proto=socket.IPPROTO_TCP)
        assert transport.get_extra_info("peername") == ("127.0.0.1", port)
        transport.close()
        await proto.lost
        with pytest.raises(socket.gaierror):  # AI_NUMERICHOST forbids looking the name up
            await loop.create_connection(asyncio.Protocol, "localhost", port, flags=socket.AI_NUMERICHOST)
        await close_server(server)
    run(loop, main())


@pytest.mark.parametrize("host", INET_HOSTS)
def test_create_connection_local_addr(loop, host):
    local_port = closed_port(host)

    async def main():
        server, address = await echo_server(loop, host)
        transport, proto = await loop.create_connection(lambda: Recorder(loop), *address,
                                                        local_addr=(host, local_port))
        assert transport.get_extra_info("sockname")[:2] == (host, local_port)
        transport.close()
        await proto.lost
        await close_server(server)
    run(loop, main())


def test_create_connection_local_addr_in_use(loop):
    with tcp_listener() as busy:
        async def main():
            server, address = await echo_server(loop)
            try:
                with pytest.raises(OSError, match="error while attempting to bind on address"):
                    await loop.create_connection(asyncio.Protocol, *address, local_addr=busy.getsockname())
            finally:
                await close_server(server)
        run(loop, main())


@requires_ipv6
def test_create_connection_local_addr_of_another_family(loop):
    def attempt(lp):
        return lp.create_connection(asyncio.Protocol, "127.0.0.1", closed_port(), local_addr=("::1", 0))
    # asyncio 3.9 leaks a TypeError from socket.bind here; 3.10+ says OSError, and so does zloop everywhere
    # (docs/compatibility.md).
    assert outcome(loop, attempt(loop)) is OSError
    if sys.version_info >= (3, 10):
        assert stock_exception(attempt) is OSError


@pytest.mark.parametrize("host", INET_HOSTS)
def test_connection_refused(loop, host):
    with pytest.raises(ConnectionRefusedError):
        run(loop, loop.create_connection(asyncio.Protocol, host, closed_port(host)))


@pytest.mark.parametrize("kwargs,error", [
    ({"server_hostname": "x"}, ValueError),
    ({"ssl_handshake_timeout": 1.0}, ValueError),
    pytest.param({"ssl_shutdown_timeout": 1.0}, ValueError,
                 marks=pytest.mark.skipif(not PY311, reason="Python 3.11+ parameter")),
    pytest.param({"ssl_shutdown_timeout": 1.0}, TypeError,
                 marks=pytest.mark.skipif(PY311, reason="not a parameter before 3.11")),
    pytest.param({"all_errors": True}, TypeError,
                 marks=pytest.mark.skipif(PY312, reason="not a parameter before 3.12")),
])
def test_create_connection_argument_errors(loop, kwargs, error):
    with pytest.raises(error):
        run(loop, loop.create_connection(asyncio.Protocol, "127.0.0.1", 1, **kwargs))


def test_create_connection_sock_argument_errors(loop):
    async def main():
        with socket.socket() as sock:
            with pytest.raises(ValueError, match="can not be specified at the same time"):
                await loop.create_connection(asyncio.Protocol, "127.0.0.1", 1, sock=sock)
            with pytest.raises(ValueError, match="server_hostname"):
                await loop.create_connection(asyncio.Protocol, sock=sock, ssl=True)
        with pytest.raises(ValueError, match="no sock specified"):
            await loop.create_connection(asyncio.Protocol)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            with pytest.raises(ValueError, match="A Stream Socket was expected"):
                await loop.create_connection(asyncio.Protocol, sock=udp)
    run(loop, main())


@pytest.mark.parametrize("host,port", [
    pytest.param("no-such-host.invalid", 80, id="unknown-host"),
    pytest.param("127.0.0.1", "no-such-service", id="bad-service"),
    pytest.param("127.0.0.1", 70000, id="port-out-of-range"),
    pytest.param(12.5, 80, id="float-host"),
    pytest.param("127.0.0.1", 1.5, id="float-port"),
    pytest.param("", 80, id="empty-host"),
])
def test_create_connection_garbage_addresses_raise_what_asyncio_raises(loop, host, port):
    def attempt(lp):
        return lp.create_connection(asyncio.Protocol, host, port)
    expected = stock_exception(attempt)
    assert expected is not None
    assert outcome(loop, attempt(loop)) is expected


def test_protocol_factory_failure_leaks_nothing(loop):
    class Boom(Exception):
        pass

    def factory():
        raise Boom

    async def main():
        server, address = await echo_server(loop)
        with pytest.raises(Boom):
            await loop.create_connection(factory, *address)
        await close_server(server)
    with no_fd_leak(loop):
        run(loop, main())


def test_cancelled_create_connection_leaves_no_watcher_and_no_fd(loop):
    with blackhole() as address:
        async def main():
            base = watched(loop)
            task = loop.create_task(loop.create_connection(asyncio.Protocol, *address))
            for _ in range(5):
                await asyncio.sleep(0.01)
            assert not task.done()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await asyncio.sleep(0)
            assert watched(loop) == base
        with no_fd_leak(loop):
            run(loop, main())


# ---------------------------------------------------------------------- Happy Eyeballs and interleaving

def fake_resolver(loop, table):
    """Make loop.getaddrinfo answer the names in table with the given (family, address) lists."""
    real = loop.getaddrinfo

    async def getaddrinfo(host, port, *, family=0, type=0, proto=0, flags=0):
        if host in table:
            return [(fam, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", addr) for fam, addr in table[host]]
        return await real(host, port, family=family, type=type, proto=proto, flags=flags)

    loop.getaddrinfo = getaddrinfo


def v4(address):
    return socket.AF_INET, address


def v6(address):
    return socket.AF_INET6, (address[0], address[1], 0, 0)


def test_happy_eyeballs_skips_a_hanging_address(loop):
    with blackhole() as hanging:
        async def main():
            server, good = await echo_server(loop)
            fake_resolver(loop, {"multi.test": [v4(hanging), v4(good)]})
            transport, proto = await loop.create_connection(lambda: Recorder(loop), "multi.test", 80,
                                                            happy_eyeballs_delay=0.05)
            assert transport.get_extra_info("peername") == good
            assert await echo_roundtrip(transport, proto, b"he") == b"he"
            transport.close()
            await proto.lost
            await close_server(server)
            await asyncio.sleep(0.01)  # the losing attempt is cancelled and closes its socket
        with no_fd_leak(loop):
            run(loop, main())


def test_happy_eyeballs_starts_the_next_attempt_when_one_fails(loop):
    async def main():
        server, good = await echo_server(loop)
        fake_resolver(loop, {"multi.test": [v4(("127.0.0.1", closed_port())), v4(good)]})
        # A failure starts the next attempt at once: far sooner than this delay.
        transport, proto = await asyncio.wait_for(
            loop.create_connection(lambda: Recorder(loop), "multi.test", 80, happy_eyeballs_delay=30.0), 10.0)
        assert transport.get_extra_info("peername") == good
        transport.close()
        await proto.lost
        await close_server(server)
    run(loop, main())


def test_happy_eyeballs_all_attempts_fail(loop):
    refused = [v4(("127.0.0.1", closed_port())), v4(("127.0.0.1", closed_port()))]

    async def main():
        fake_resolver(loop, {"multi.test": refused})
        with pytest.raises(OSError, match="Multiple exceptions"):
            await loop.create_connection(asyncio.Protocol, "multi.test", 80, happy_eyeballs_delay=0.01)
        fake_resolver(loop, {"one.test": refused[:1]})
        with pytest.raises(ConnectionRefusedError):
            await loop.create_connection(asyncio.Protocol, "one.test", 80, happy_eyeballs_delay=0.01)
    with no_fd_leak(loop):
        run(loop, main())


def test_cancelled_happy_eyeballs_leaves_nothing(loop):
    with blackhole() as first, blackhole() as second:
        async def main():
            base = watched(loop)
            fake_resolver(loop, {"multi.test": [v4(first), v4(second)]})
            task = loop.create_task(loop.create_connection(asyncio.Protocol, "multi.test", 80,
                                                           happy_eyeballs_delay=0.01))
            for _ in range(10):
                await asyncio.sleep(0.01)
            assert watched(loop) == base + 2  # both attempts are in progress
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            for _ in range(3):
                await asyncio.sleep(0)
            assert watched(loop) == base
        with no_fd_leak(loop):
            run(loop, main())


def _attempt_order(message):
    return [int(port) for port in re.findall(r"Connect call failed \('[^']+', (\d+)", message)]


@requires_ipv6
@pytest.mark.parametrize("kwargs,order", [
    ({}, [0, 1, 2, 3]),
    ({"interleave": 1}, [0, 2, 1, 3]),
    ({"interleave": 2}, [0, 1, 2, 3]),
    ({"happy_eyeballs_delay": 0.01}, [0, 2, 1, 3]),  # Happy Eyeballs interleaves by default
])
def test_interleave_orders_attempts_by_family(loop, kwargs, order):
    ports = [closed_port("::1"), closed_port("::1"), closed_port(), closed_port()]
    infos = [v6(("::1", ports[0])), v6(("::1", ports[1])), v4(("127.0.0.1", ports[2])),
             v4(("127.0.0.1", ports[3]))]

    async def main():
        fake_resolver(loop, {"multi.test": infos})
        with pytest.raises(OSError) as info:
            await loop.create_connection(asyncio.Protocol, "multi.test", 80, **kwargs)
        return str(info.value)
    message = run(loop, main())
    assert _attempt_order(message) == [ports[i] for i in order]


@pytest.mark.skipif(not PY312, reason="all_errors is a Python 3.12+ parameter")
def test_all_errors_raises_an_exception_group(loop):
    refused = [v4(("127.0.0.1", closed_port())), v4(("127.0.0.1", closed_port()))]

    async def main():
        fake_resolver(loop, {"multi.test": refused})
        with pytest.raises(ExceptionGroup) as info:  # noqa: F821
            await loop.create_connection(asyncio.Protocol, "multi.test", 80, all_errors=True)
        assert all(isinstance(e, ConnectionRefusedError) for e in info.value.exceptions)
        assert len(info.value.exceptions) == 2
    run(loop, main())


# ---------------------------------------------------------------------- flow control

class Throttled(asyncio.Protocol):
    """Server side that stops reading at once, so the client's writes pile up."""

    def __init__(self, loop, holder):
        self.received = 0
        holder.append(self)

    def connection_made(self, transport):
        self.transport = transport
        transport.pause_reading()

    def data_received(self, data):
        self.received += len(data)


class FlowRecorder(Recorder):
    def __init__(self, loop):
        super().__init__(loop)
        self.paused = loop.create_future()
        self.resumed = loop.create_future()

    def pause_writing(self):
        self.calls.append("pause")
        if not self.paused.done():
            self.paused.set_result(self.transport.get_write_buffer_size())

    def resume_writing(self):
        self.calls.append("resume")
        if not self.resumed.done():
            self.resumed.set_result(self.transport.get_write_buffer_size())


@pytest.mark.parametrize("host", INET_HOSTS)
def test_pause_and_resume_writing_at_the_water_marks(loop, host):
    servers = []

    async def main():
        server = await loop.create_server(lambda: Throttled(loop, servers), host, 0)
        address = server.sockets[0].getsockname()[:2]
        transport, proto = await loop.create_connection(lambda: FlowRecorder(loop), *address)
        transport.set_write_buffer_limits(high=64 * 1024, low=16 * 1024)
        assert transport.get_write_buffer_limits() == (16 * 1024, 64 * 1024)
        chunk = b"x" * (256 * 1024)
        sent = 0
        while not proto.paused.done() and sent < 256 * 1024 * 1024:
            transport.write(chunk)
            sent += len(chunk)
        size_at_pause = await proto.paused
        assert size_at_pause > 64 * 1024
        assert transport.get_write_buffer_size() > 0
        while not servers:
            await asyncio.sleep(0.001)
        servers[0].transport.resume_reading()
        size_at_resume = await proto.resumed
        assert size_at_resume <= 16 * 1024
        while servers[0].received < sent:
            await asyncio.sleep(0.005)
        assert proto.calls.count("pause") == proto.calls.count("resume") == 1
        transport.close()
        await proto.lost
        await close_server(server)
    run(loop, main(), timeout=30)


def test_set_write_buffer_limits_validates(loop):
    async def main():
        server, address = await echo_server(loop)
        transport, proto = await loop.create_connection(lambda: Recorder(loop), *address)
        with pytest.raises(ValueError):
            transport.set_write_buffer_limits(high=10, low=20)
        transport.set_write_buffer_limits(high=0)
        assert transport.get_write_buffer_limits() == (0, 0)
        transport.close()
        await proto.lost
        await close_server(server)
    run(loop, main())


def test_pause_and_resume_reading(loop):
    async def main():
        server, address = await echo_server(loop)
        transport, proto = await loop.create_connection(lambda: Recorder(loop), *address)
        transport.pause_reading()
        assert not transport.is_reading()
        transport.write(b"abc")
        await asyncio.sleep(0.05)
        assert proto.data == b""
        transport.resume_reading()
        assert transport.is_reading()
        assert await proto.receive(3) == b"abc"
        transport.close()
        await proto.lost
        await close_server(server)
    run(loop, main())


# ---------------------------------------------------------------------- half-close

class HalfCloseServer(asyncio.Protocol):
    """Collects the request until EOF, keeps the transport open (eof_received -> True), answers, closes."""

    def __init__(self, keep_open=True):
        self.keep_open = keep_open
        self.request = bytearray()

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.request += data

    def eof_received(self):
        if self.keep_open:
            self.transport.write(b"got " + bytes(self.request))
            self.transport.close()
            return True
        return False


@pytest.mark.parametrize("host", INET_HOSTS)
def test_write_eof_half_close(loop, host):
    async def main():
        server = await loop.create_server(HalfCloseServer, host, 0)
        address = server.sockets[0].getsockname()[:2]
        transport, proto = await loop.create_connection(lambda: Recorder(loop), *address)
        assert transport.can_write_eof()
        transport.write(b"request")
        transport.write_eof()
        assert not transport.is_closing()
        await proto.eof
        await proto.lost
        assert bytes(proto.data) == b"got request"
        assert proto.calls[-2:] == ["eof", "lost"]
        with pytest.raises(RuntimeError):
            transport.write(b"after eof")  # asyncio: 'Cannot call write() after write_eof()'
        await close_server(server)
    run(loop, main())


def test_eof_received_returning_false_closes(loop):
    async def main():
        server = await loop.create_server(lambda: HalfCloseServer(keep_open=False), "127.0.0.1", 0)
        address = server.sockets[0].getsockname()[:2]
        transport, proto = await loop.create_connection(lambda: Recorder(loop), *address)
        transport.write_eof()
        await proto.lost  # the server closed its side when eof_received returned False
        assert "eof" in proto.calls
        await close_server(server)
    run(loop, main())


# ---------------------------------------------------------------------- volume

@pytest.mark.parametrize("host", INET_HOSTS)
def test_ten_mebibytes_both_ways(loop, host):
    size = 10 * 1024 * 1024
    payload = os.urandom(size)

    async def main():
        server, address = await echo_server(loop, host)
        transport, proto = await loop.create_connection(lambda: Recorder(loop), *address)
        view = memoryview(payload)
        for start in range(0, size, 1024 * 1024):
            transport.write(view[start:start + 1024 * 1024])
        echoed = await proto.receive(size)
        transport.close()
        await proto.lost
        await close_server(server)
        return echoed
    echoed = run(loop, main(), timeout=60)
    assert hashlib.sha256(echoed).digest() == hashlib.sha256(payload).digest()


def test_large_reads_then_small_ones_then_eof(loop):
    # After a read of 64 KiB or more, zloop reads straight into a bytes of 120 KiB shrunk to what came (until a
    # read is small again): data, order and the end of stream must come through as through the shared buffer.
    big = os.urandom(3 * 1024 * 1024)
    listener = tcp_listener("127.0.0.1")
    listener.setblocking(False)

    async def main():
        transport, proto = await loop.create_connection(lambda: Recorder(loop), *listener.getsockname()[:2])
        peer, _ = await loop.sock_accept(listener)
        with peer:
            peer.setblocking(False)
            await loop.sock_sendall(peer, big)
            await proto.receive(len(big))
            for i in range(5):
                await loop.sock_sendall(peer, b"small %d;" % i)
                await asyncio.sleep(0.01)
            peer.shutdown(socket.SHUT_WR)
            await proto.eof
        transport.close()
        await proto.lost
        return proto
    with listener:
        proto = run(loop, main(), timeout=60)
    assert bytes(proto.data) == big + b"".join(b"small %d;" % i for i in range(5))
    assert proto.calls[-2:] == ["eof", "lost"]


class KeepingRecorder(Recorder):
    """A Recorder whose data_received keeps every other bytes object it is given (as itself, through a
    memoryview, or as a dict key after hashing it) beside a copy made at once, so a later read that wrote into a
    bytes the protocol still holds shows as a difference. Every read's hash is checked against a fresh copy's."""

    def __init__(self, loop, how):
        super().__init__(loop)
        self.how = how
        self.kept = []            # (what was kept, a copy of its bytes at data_received)
        self.hash_mismatches = []
        self.reads = 0

    def data_received(self, data):
        super().data_received(data)
        self.reads += 1
        copy = bytes(bytearray(data))   # a new object: its hash is computed from the content
        if hash(data) != hash(copy):
            self.hash_mismatches.append(self.reads)
        if self.reads % 2:
            return   # dropped: the transport may reuse this one for a later read
        if self.how == "bytes":
            self.kept.append((data, copy))
        elif self.how == "memoryview":
            self.kept.append((memoryview(data), copy))
        else:
            self.kept.append(({data: self.reads}, copy))


def _receive_large_reads(loop, how):
    big = os.urandom(4 * 1024 * 1024)
    listener = tcp_listener("127.0.0.1")
    listener.setblocking(False)

    async def main():
        transport, proto = await loop.create_connection(lambda: KeepingRecorder(loop, how),
                                                        *listener.getsockname()[:2])
        peer, _ = await loop.sock_accept(listener)
        with peer:
            peer.setblocking(False)
            half = len(big) // 2
            for offset in range(0, half, 256 * 1024):
                await loop.sock_sendall(peer, big[offset:offset + 256 * 1024])
                await asyncio.sleep(0.001)   # let the reader catch up: reads of many sizes
            await proto.receive(half)
            transport.pause_reading()        # then a backlog: reads that fill the whole 120 KiB
            sending = loop.create_task(loop.sock_sendall(peer, big[half:]))
            await asyncio.sleep(0.05)
            transport.resume_reading()
            await sending
            await proto.receive(len(big))
        transport.close()
        await proto.lost
        return proto
    with listener:
        proto = run(loop, main(), timeout=60)
    assert bytes(proto.data) == big
    assert proto.hash_mismatches == []
    assert len(proto.kept) >= 8
    return proto


def test_large_reads_kept_bytes_never_change(loop):
    # zloop may reuse a large read's bytes for the next large read when nobody else holds it: one the protocol
    # kept must never be written to again.
    proto = _receive_large_reads(loop, "bytes")
    for data, copy in proto.kept:
        assert type(data) is bytes and data == copy


def test_large_reads_kept_through_a_memoryview_never_change(loop):
    proto = _receive_large_reads(loop, "memoryview")
    for view, copy in proto.kept:
        assert type(view.obj) is bytes and view.tobytes() == copy


def test_large_reads_hashed_bytes_keep_their_hash(loop):
    # A read's bytes hashed and dropped, then reused, must not keep the old content's cached hash (checked on
    # every read); one kept as a dict key must keep its hash and stay findable by an equal bytes.
    proto = _receive_large_reads(loop, "dict key")
    for table, copy in proto.kept:
        (key, reads), = table.items()
        assert key == copy and hash(key) == hash(copy) and table[copy] == reads


def test_writelines(loop):
    async def main():
        server, address = await echo_server(loop)
        transport, proto = await loop.create_connection(lambda: Recorder(loop), *address)
        transport.writelines([b"a", bytearray(b"bc"), memoryview(b"def"), b"x" * 100000])
        data = await proto.receive(6 + 100000)
        transport.close()
        await proto.lost
        await close_server(server)
        return data
    assert run(loop, main()) == b"abcdef" + b"x" * 100000


def test_five_hundred_concurrent_connections(loop):
    count = 500

    async def client(address, i):
        transport, proto = await loop.create_connection(lambda: Recorder(loop), *address)
        message = b"client %d" % i
        assert await echo_roundtrip(transport, proto, message) == message
        return transport, proto

    async def main():
        server, address = await echo_server(loop, backlog=count + 10)
        pairs = await asyncio.gather(*[client(address, i) for i in range(count)])
        for transport, _ in pairs:
            transport.close()
        await asyncio.gather(*[proto.lost for _, proto in pairs])
        await close_server(server)
    with no_fd_leak(loop):
        run(loop, main(), timeout=90)


def test_many_sequential_connections_leak_no_fd(loop):
    async def main():
        server, address = await echo_server(loop)
        for i in range(100):
            transport, proto = await loop.create_connection(lambda: Recorder(loop), *address)
            assert await echo_roundtrip(transport, proto, b"%d" % i) == b"%d" % i
            if i % 2:
                transport.abort()
            else:
                transport.close()
            await proto.lost
        await close_server(server)
        await asyncio.sleep(0.01)
    with no_fd_leak(loop):
        run(loop, main(), timeout=30)


@pytest.mark.skipif(sys.platform != "linux", reason="Linux socket options")
@pytest.mark.parametrize("listener_nodelay", [None, 0, 1])
def test_accepted_connections_have_nodelay(loop, listener_nodelay):
    # zloop sets TCP_NODELAY on the listener once (Linux copies it to accepted sockets) and checks the first
    # connection; a listener whose option was cleared after start_serving still gives every connection its own.
    seen = []

    class Probe(asyncio.Protocol):
        def connection_made(self, transport):
            seen.append(transport.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            transport.close()

    async def main():
        server = await loop.create_server(Probe, "127.0.0.1", 0)
        if listener_nodelay is not None:
            server.sockets[0].setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, listener_nodelay)
        for _ in range(3):
            transport, proto = await loop.create_connection(lambda: Recorder(loop), *server.sockets[0].getsockname())
            await proto.lost
        await close_server(server)
    run(loop, main())
    assert seen == [1, 1, 1]



# ---------------------------------------------------------------------- how the read path calls the protocol

class _Collect(asyncio.Protocol):
    """Records what data_received (a plain method) gets, and on the first chunk switches to `then` if set."""

    def __init__(self, got, then=None):
        self.got = got
        self.then = then

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.got.append(("class", bytes(data)))
        if self.then is not None:
            self.transport.set_protocol(self.then)
            self.then = None


class _BuiltinDataReceived(asyncio.Protocol):
    """data_received is a builtin bound to a list: no Python function behind the attribute."""

    def __init__(self, got):
        self.data_received = got.append


class _StaticDataReceived(asyncio.Protocol):
    got = []
    data_received = staticmethod(got.append)


def _chunks_through(loop, make_protocol, chunks):
    """Send chunks one by one to a server whose protocol make_protocol() builds; the protocol's records."""
    async def main():
        server = await loop.create_server(make_protocol, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for chunk in chunks:
            writer.write(chunk)
            await writer.drain()
            await asyncio.sleep(0.05)
        writer.close()
        await writer.wait_closed()
        await close_server(server)
    run(loop, main())


def test_data_received_as_an_instance_attribute_overrides_the_class(loop):
    got = []

    def make():
        protocol = _Collect(got)
        protocol.data_received = lambda data: got.append(("instance", bytes(data)))
        return protocol
    _chunks_through(loop, make, [b"one", b"two"])
    assert got == [("instance", b"one"), ("instance", b"two")]


def test_data_received_that_is_not_a_python_function(loop):
    got = []
    _chunks_through(loop, lambda: _BuiltinDataReceived(got), [b"one", b"two"])
    assert got == [b"one", b"two"]
    _StaticDataReceived.got.clear()
    _chunks_through(loop, _StaticDataReceived, [b"three"])
    assert _StaticDataReceived.got == [b"three"]


def test_set_protocol_inside_data_received_drops_the_old_protocol(loop):
    import gc
    import weakref
    got = []
    later = []
    refs = []

    def make():
        protocol = _Collect(got, then=_Collect(later))
        refs.append(weakref.ref(protocol))
        return protocol
    _chunks_through(loop, make, [b"first", b"second"])
    assert got == [("class", b"first")]
    assert later == [("class", b"second")]
    gc.collect()
    assert refs[0]() is None


class _BufferedSwitch(asyncio.BufferedProtocol):
    def __init__(self, got, then=None):
        self.got = got
        self.then = then
        self.buffer = bytearray(1024)

    def connection_made(self, transport):
        self.transport = transport

    def get_buffer(self, sizehint):
        return self.buffer

    def buffer_updated(self, nbytes):
        self.got.append(bytes(self.buffer[:nbytes]))
        if self.then is not None:
            self.transport.set_protocol(self.then)
            self.then = None


def test_buffered_protocol_switching_to_a_plain_one(loop):
    got = []
    later = []
    _chunks_through(loop, lambda: _BufferedSwitch(got, then=_Collect(later)), [b"first", b"second"])
    assert got == [b"first"]
    assert later == [("class", b"second")]
