# tests/test_net_tls.py — TLS with certificates made during the run: create_server/create_connection with ssl,
# extra info, verification failures, handshake timeout, start_tls on both sides, connect_accepted_socket,
# TLS over IPv6 and Unix sockets, and a TLS server surviving failed handshakes.

import asyncio
import os
import socket
import ssl

import pytest

from net_helpers import (INET_HOSTS, PY311, EchoServer, Recorder, client_context, echo_roundtrip, no_fd_leak, run,
                         server_context, watched)


async def tls_echo_server(loop, host="127.0.0.1", **kwargs):
    server = await loop.create_server(EchoServer, host, 0, ssl=server_context(), **kwargs)
    return server, server.sockets[0].getsockname()[:2]


async def close_server(server):
    server.close()
    await server.wait_closed()


@pytest.mark.parametrize("host", INET_HOSTS)
def test_tls_echo_and_extra_info(loop, host):
    async def main():
        server, address = await tls_echo_server(loop, host)
        ctx = client_context()
        transport, proto = await loop.create_connection(lambda: Recorder(loop), *address, ssl=ctx,
                                                        server_hostname="localhost")
        assert await echo_roundtrip(transport, proto, b"secret") == b"secret"
        assert transport.get_extra_info("sslcontext") is ctx
        assert isinstance(transport.get_extra_info("ssl_object"), ssl.SSLObject)
        assert transport.get_extra_info("cipher")
        assert dict(x[0] for x in transport.get_extra_info("peercert")["subject"])["commonName"] == "localhost"
        assert transport.get_extra_info("peername")[:2] == address
        assert isinstance(transport.get_extra_info("socket"), asyncio.trsock.TransportSocket)
        transport.close()
        await proto.lost
        await close_server(server)
    run(loop, main())


def test_tls_server_hostname_defaults_to_host(loop):
    async def main():
        server, (_, port) = await tls_echo_server(loop)
        transport, proto = await loop.create_connection(lambda: Recorder(loop), "localhost", port,
                                                        ssl=client_context())
        assert await echo_roundtrip(transport, proto, b"x") == b"x"
        transport.close()
        await proto.lost
        await close_server(server)
    run(loop, main())


def test_tls_big_transfer(loop):
    payload = os.urandom(3 * 1024 * 1024)

    async def main():
        server, address = await tls_echo_server(loop)
        transport, proto = await loop.create_connection(lambda: Recorder(loop), *address, ssl=client_context(),
                                                        server_hostname="localhost")
        transport.write(payload)
        data = await proto.receive(len(payload))
        transport.close()
        await proto.lost
        await close_server(server)
        return data
    assert run(loop, main(), timeout=60) == payload


def test_tls_verification_failures(loop):
    async def main():
        server, address = await tls_echo_server(loop)
        with pytest.raises(ssl.SSLCertVerificationError):
            await loop.create_connection(asyncio.Protocol, *address, ssl=True, server_hostname="localhost")
        with pytest.raises(ssl.SSLCertVerificationError):
            await loop.create_connection(asyncio.Protocol, *address, ssl=client_context(),
                                         server_hostname="wrong.name")
        # The server survived both failed handshakes.
        transport, proto = await loop.create_connection(lambda: Recorder(loop), *address, ssl=client_context(),
                                                        server_hostname="localhost")
        assert await echo_roundtrip(transport, proto, b"ok") == b"ok"
        transport.close()
        await proto.lost
        await close_server(server)
        await asyncio.sleep(0.05)
    with no_fd_leak(loop):
        run(loop, main())


class Silent(asyncio.Protocol):
    """A plain TCP peer that never answers the TLS handshake."""


def test_tls_handshake_timeout(loop):
    async def main():
        server = await loop.create_server(Silent, "127.0.0.1", 0)
        address = server.sockets[0].getsockname()
        with pytest.raises((ConnectionAbortedError, asyncio.TimeoutError)):
            await loop.create_connection(asyncio.Protocol, *address, ssl=client_context(),
                                         server_hostname="localhost", ssl_handshake_timeout=0.2)
        server.close()
        await asyncio.sleep(0.05)
    with no_fd_leak(loop):
        run(loop, main())


def test_tls_handshake_timeout_must_be_positive(loop):
    async def main():
        server, address = await tls_echo_server(loop)
        with pytest.raises(ValueError):
            await loop.create_connection(asyncio.Protocol, *address, ssl=client_context(),
                                         server_hostname="localhost", ssl_handshake_timeout=-1)
        await close_server(server)
        await asyncio.sleep(0.01)
    with no_fd_leak(loop):
        run(loop, main())


@pytest.mark.skipif(not PY311, reason="ssl_shutdown_timeout is a Python 3.11+ parameter")
def test_tls_shutdown_timeout_parameter(loop):
    async def main():
        server, address = await tls_echo_server(loop, ssl_shutdown_timeout=5.0)
        transport, proto = await loop.create_connection(lambda: Recorder(loop), *address, ssl=client_context(),
                                                        server_hostname="localhost", ssl_shutdown_timeout=5.0)
        assert await echo_roundtrip(transport, proto, b"x") == b"x"
        transport.close()
        await proto.lost
        await close_server(server)
    run(loop, main())


def test_tls_over_unix_sockets(loop, tmp_path):
    path = str(tmp_path / "tls.sock")

    async def main():
        server = await loop.create_unix_server(EchoServer, path, ssl=server_context())
        transport, proto = await loop.create_unix_connection(lambda: Recorder(loop), path, ssl=client_context(),
                                                             server_hostname="localhost")
        assert await echo_roundtrip(transport, proto, b"unix tls") == b"unix tls"
        transport.close()
        await proto.lost
        await close_server(server)
    run(loop, main())


def test_connect_accepted_socket_with_tls(loop):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.setblocking(False)

    async def main():
        accepting = loop.create_task(loop.sock_accept(listener))
        client = loop.create_task(loop.create_connection(lambda: Recorder(loop), *listener.getsockname(),
                                                         ssl=client_context(), server_hostname="localhost"))
        conn, _ = await accepting
        server_transport, _ = await loop.connect_accepted_socket(EchoServer, conn, ssl=server_context())
        transport, proto = await client
        assert await echo_roundtrip(transport, proto, b"accepted") == b"accepted"
        transport.close()
        await proto.lost
        server_transport.close()
    with listener:
        run(loop, main())


def test_connect_accepted_socket_plain_and_errors(loop):
    async def main():
        a, b = socket.socketpair()
        transport, _ = await loop.connect_accepted_socket(EchoServer, a)
        b.setblocking(False)
        await loop.sock_sendall(b, b"pair")
        assert await loop.sock_recv(b, 10) == b"pair"
        transport.close()
        b.close()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            with pytest.raises(ValueError, match="A Stream Socket was expected"):
                await loop.connect_accepted_socket(EchoServer, udp)
        with socket.socket() as tcp:
            with pytest.raises(ValueError, match="ssl_handshake_timeout is only meaningful with ssl"):
                await loop.connect_accepted_socket(EchoServer, tcp, ssl_handshake_timeout=1)
        await asyncio.sleep(0)
    run(loop, main())


# ---------------------------------------------------------------------- start_tls

class UpgradingServer(asyncio.Protocol):
    """Plain text until 'STARTTLS\n', then TLS (server side) and echo. Data that arrives before start_tls has
    returned the new transport (TLS 1.3 clients may send at once) waits for it."""

    def __init__(self, loop):
        self.loop = loop
        self.upgrading = None
        self.pending = bytearray()

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        if self.upgrading is None and data == b"STARTTLS\n":
            self.transport.write(b"GO\n")
            self.transport.pause_reading()  # the ClientHello must wait for start_tls
            self.upgrading = self.loop.create_task(self.upgrade())
        elif self.upgrading is not None and not self.upgrading.done():
            self.pending += data
        else:
            self.transport.write(data)

    async def upgrade(self):
        self.transport = await self.loop.start_tls(self.transport, self, server_context(), server_side=True)
        if self.pending:
            self.transport.write(bytes(self.pending))


def test_start_tls_on_both_sides(loop):
    async def main():
        server = await loop.create_server(lambda: UpgradingServer(loop), "127.0.0.1", 0)
        address = server.sockets[0].getsockname()
        transport, proto = await loop.create_connection(lambda: Recorder(loop), *address)
        assert await echo_roundtrip(transport, proto, b"plain") == b"plain"
        transport.write(b"STARTTLS\n")
        await proto.receive(len(b"plainGO\n"))
        tls_transport = await loop.start_tls(transport, proto, client_context(), server_hostname="localhost")
        assert tls_transport.get_extra_info("peercert")
        start = len(proto.data)
        tls_transport.write(b"now encrypted")
        assert (await proto.receive(start + 13))[start:] == b"now encrypted"
        tls_transport.close()
        await proto.lost
        server.close()
        await server.wait_closed()
    run(loop, main())


def test_start_tls_argument_errors(loop):
    async def main():
        server = await loop.create_server(EchoServer, "127.0.0.1", 0)
        transport, proto = await loop.create_connection(lambda: Recorder(loop), *server.sockets[0].getsockname())
        with pytest.raises(TypeError, match="sslcontext is expected to be an instance of ssl.SSLContext"):
            await loop.start_tls(transport, proto, object())

        class Foreign(asyncio.Transport):
            pass
        with pytest.raises(TypeError, match="is not supported by start_tls"):
            await loop.start_tls(Foreign(), proto, client_context())
        transport.close()
        await proto.lost
        await close_server(server)
    run(loop, main())


def test_cancelled_start_tls_closes_the_transport(loop):
    async def main():
        server = await loop.create_server(Silent, "127.0.0.1", 0)
        transport, proto = await loop.create_connection(lambda: Recorder(loop), *server.sockets[0].getsockname())
        upgrading = loop.create_task(loop.start_tls(transport, proto, client_context(), server_hostname="localhost"))
        await asyncio.sleep(0.05)
        upgrading.cancel()
        with pytest.raises(asyncio.CancelledError):
            await upgrading
        assert transport.is_closing()
        # The protocol never had connection_made from the TLS layer, so it gets no connection_lost either.
        await close_server(server)
        await asyncio.sleep(0.05)
    with no_fd_leak(loop):
        run(loop, main())


def test_start_tls_handshake_failure_closes_the_transport(loop):
    async def main():
        server = await loop.create_server(EchoServer, "127.0.0.1", 0)  # answers TLS with an echo: garbage
        transport, proto = await loop.create_connection(lambda: Recorder(loop), *server.sockets[0].getsockname())
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            await loop.start_tls(transport, proto, client_context(), server_hostname="localhost",
                                 ssl_handshake_timeout=5)
        assert transport.is_closing()
        await close_server(server)
        await asyncio.sleep(0.05)
    with no_fd_leak(loop):
        run(loop, main())


def test_cancelled_tls_connect_leaves_nothing(loop):
    async def main():
        server = await loop.create_server(Silent, "127.0.0.1", 0)
        address = server.sockets[0].getsockname()
        base = watched(loop)
        task = loop.create_task(loop.create_connection(asyncio.Protocol, *address, ssl=client_context(),
                                                       server_hostname="localhost"))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0.05)
        assert watched(loop) <= base + 1  # the server's connection may still be open; the client's is gone
        server.close()
        await asyncio.sleep(0.05)
    with no_fd_leak(loop):
        run(loop, main())


def test_server_start_tls_takes_the_client_hello_the_stream_already_buffered(loop):
    # asyncio 3.14+ (gh-142352): the ClientHello that reached the StreamReader before start_tls() is handed to TLS;
    # before 3.14 it stayed in the reader and the handshake never completed.
    import sys
    if sys.version_info < (3, 14):
        pytest.skip("asyncio hands the buffered ClientHello to TLS from 3.14 on")
    buffered = []

    async def handler(reader, writer):
        await asyncio.sleep(0.2)                 # the client's ClientHello arrives meanwhile
        buffered.append(len(reader._buffer))
        await writer.start_tls(server_context())
        line = await reader.readline()
        writer.write(b"pong:" + line)
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    async def main():
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname())
        await writer.start_tls(client_context(), server_hostname="localhost")
        writer.write(b"ping\n")
        answer = await reader.readline()
        writer.close()
        await writer.wait_closed()
        await close_server(server)
        return answer

    assert run(loop, main()) == b"pong:ping\n"
    assert buffered and buffered[0] > 0, "the ClientHello was not buffered before start_tls: the test proved nothing"


def test_failed_start_tls_leaves_no_reference_cycle_to_the_transport(loop):
    # A start_tls whose handshake fails leaves nothing that keeps the raw transport alive once the caller drops
    # it, even with the cyclic GC off (asyncio 3.14+, gh-159049).
    import gc
    import sys
    import weakref
    if sys.version_info < (3, 14):
        pytest.skip("asyncio's SSLProtocol itself kept such cycles before 3.14")
    strict = ssl.create_default_context()        # does not trust the test certificate
    refs = []

    async def main():
        server, address = await tls_echo_server(loop)
        transport, protocol = await loop.create_connection(asyncio.Protocol, *address)
        refs.append(weakref.ref(transport))
        with pytest.raises(ssl.SSLCertVerificationError):
            await loop.start_tls(transport, protocol, strict, server_hostname="localhost")
        del transport, protocol
        await close_server(server)

    gc.collect()
    gc.disable()
    try:
        run(loop, main())
        assert [ref() for ref in refs] == [None]
    finally:
        gc.enable()


# ---------------------------------------------------------------------- the TLS transport itself (C on zloop)

async def connect_tls(loop, address, factory=None, **kwargs):
    """A verified TLS client connection to address: (transport, protocol), a Recorder unless factory says."""
    return await loop.create_connection(factory or (lambda: Recorder(loop)), *address, ssl=client_context(),
                                        server_hostname="localhost", **kwargs)


def test_tls_runs_on_the_c_layer(loop, is_zloop):
    # zloop's TLS connections are its C SSLProtocol under a C transport; both sides of a C server too.
    if not is_zloop:
        pytest.skip("zloop's own types")
    import zloop._zloop as core
    seen = []

    class Server(EchoServer):
        def connection_made(self, transport):
            seen.append(transport)
            super().connection_made(transport)

    async def main():
        server = await loop.create_server(Server, "127.0.0.1", 0, ssl=server_context())
        transport, proto = await connect_tls(loop, server.sockets[0].getsockname())
        assert await echo_roundtrip(transport, proto, b"c") == b"c"
        assert type(transport) is core.SSLTransport and type(seen[0]) is core.SSLTransport
        assert type(transport._ssl_protocol) is core.SSLProtocol
        assert isinstance(transport, asyncio.Transport)
        transport.close()
        await proto.lost
        await close_server(server)
    run(loop, main())


def test_tls_transport_surface(loop):
    async def main():
        server, address = await tls_echo_server(loop)
        transport, proto = await connect_tls(loop, address)
        assert not transport.can_write_eof()
        with pytest.raises(NotImplementedError):
            transport.write_eof()
        with pytest.raises(TypeError, match="data: expecting a bytes-like instance, got str"):
            transport.write("text")
        transport.write(b"")                      # nothing to send, nothing sent
        assert transport.get_protocol() is proto
        assert transport.is_reading() and not transport.is_closing()
        assert transport.get_write_buffer_limits() == (128 * 1024, 512 * 1024)
        transport.set_write_buffer_limits(high=1000)
        assert transport.get_write_buffer_limits() == (250, 1000)
        transport.set_write_buffer_limits(low=100)
        assert transport.get_write_buffer_limits() == (100, 400)
        with pytest.raises(ValueError, match="high .* must be >= low"):
            transport.set_write_buffer_limits(high=1, low=2)
        assert transport.get_write_buffer_size() == 0
        assert transport.get_read_buffer_limits() == (64 * 1024, 256 * 1024)
        assert transport.get_read_buffer_size() == 0
        obj = transport.get_extra_info("ssl_object")
        assert obj.version() in ("TLSv1.2", "TLSv1.3")
        assert transport.get_extra_info("cipher") == obj.cipher()
        assert transport.get_extra_info("compression") == obj.compression()
        assert transport.get_extra_info("sockname")[:2] == transport.get_extra_info("socket").getsockname()[:2]
        assert transport.get_extra_info("no such thing", "dflt") == "dflt"
        transport.writelines([b"a", bytearray(b"b"), memoryview(b"c")])
        assert await proto.receive(3) == b"abc"
        transport.close()
        assert transport.is_closing()
        assert await proto.lost is None
        assert proto.calls[-1] == "lost"
        await close_server(server)
    with no_fd_leak(loop):
        run(loop, main())


class BufferedRecorder(asyncio.BufferedProtocol):
    def __init__(self, loop, size):
        self.buffer = bytearray(size)
        self.data = bytearray()
        self.lost = loop.create_future()
        self.want = None
        self.loop = loop

    def connection_made(self, transport):
        self.transport = transport

    def get_buffer(self, sizehint):
        return memoryview(self.buffer)

    def buffer_updated(self, nbytes):
        self.data += self.buffer[:nbytes]
        if self.want and len(self.data) >= self.want[0] and not self.want[1].done():
            self.want[1].set_result(None)

    def connection_lost(self, exc):
        self.lost.set_result(exc)

    async def receive(self, nbytes):
        if len(self.data) < nbytes:
            self.want = (nbytes, self.loop.create_future())
            await self.want[1]
        return bytes(self.data)


@pytest.mark.parametrize("size", [7, 16 * 1024, 300 * 1024])
def test_tls_buffered_protocol(loop, size):
    payload = os.urandom((1024 if size > 1024 else 64) * 1024 + 13)   # a 7-byte buffer: ~9400 buffer_updated calls

    async def main():
        server, address = await tls_echo_server(loop)
        transport, proto = await connect_tls(loop, address, lambda: BufferedRecorder(loop, size))
        transport.write(payload)
        data = await proto.receive(len(payload))
        transport.close()
        await proto.lost
        await close_server(server)
        return data
    assert run(loop, main(), timeout=60) == payload


class FlowRecorder(Recorder):
    def __init__(self, loop):
        super().__init__(loop)
        self.paused = 0
        self.resumed = loop.create_future()

    def pause_writing(self):
        self.calls.append("pause")
        self.paused += 1

    def resume_writing(self):
        self.calls.append("resume")
        if not self.resumed.done():
            self.resumed.set_result(None)


class SlowReader(asyncio.Protocol):
    """Reads nothing until told, then echoes everything."""
    instances = []

    def __init__(self):
        SlowReader.instances.append(self)
        self.held = bytearray()

    def connection_made(self, transport):
        self.transport = transport
        transport.pause_reading()

    def data_received(self, data):
        self.transport.write(data)


def test_tls_write_flow_control_and_slow_reader_10mib(loop):
    # 10 MiB each way: the client is paused by a peer that reads nothing, resumed once it reads; all arrives.
    payload = os.urandom(10 * 1024 * 1024)
    SlowReader.instances = []

    async def main():
        server = await loop.create_server(SlowReader, "127.0.0.1", 0, ssl=server_context())
        transport, proto = await connect_tls(loop, server.sockets[0].getsockname(), lambda: FlowRecorder(loop))
        transport.set_write_buffer_limits(high=64 * 1024)
        for i in range(0, len(payload), 256 * 1024):   # the stream pauses TLS; TLS then buffers and pauses us
            transport.write(payload[i:i + 256 * 1024])
        assert proto.paused == 1 and transport.get_write_buffer_size() > 64 * 1024
        await asyncio.sleep(0.2)                  # the kernel's buffers take a few MiB meanwhile
        peer = SlowReader.instances[0].transport
        assert not peer.is_reading()
        peer.resume_reading()
        await proto.resumed
        data = await proto.receive(len(payload))
        transport.close()
        await proto.lost
        await close_server(server)
        return data
    assert run(loop, main(), timeout=120) == payload


def test_tls_read_pause_and_resume(loop):
    async def main():
        server, address = await tls_echo_server(loop)
        transport, proto = await connect_tls(loop, address)
        assert await echo_roundtrip(transport, proto, b"1") == b"1"
        transport.pause_reading()
        assert not transport.is_reading()
        assert transport._ssl_protocol._app_reading_paused   # what CPython 3.15's test_gh140947 polls
        transport.write(b"2")
        await asyncio.sleep(0.1)
        assert bytes(proto.data) == b"1"          # decrypted data waits while paused
        transport.resume_reading()
        assert transport.is_reading()
        assert not transport._ssl_protocol._app_reading_paused
        assert await proto.receive(2) == b"12"
        transport.close()
        await proto.lost
        await close_server(server)
    run(loop, main())


class CloseAfterFirst(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)
        self.transport.close()                  # close-notify after the echo


def test_tls_peer_close_notify_gives_eof_then_connection_lost(loop):
    async def main():
        server = await loop.create_server(CloseAfterFirst, "127.0.0.1", 0, ssl=server_context())
        transport, proto = await connect_tls(loop, server.sockets[0].getsockname())
        transport.write(b"bye")
        assert await proto.lost is None
        assert bytes(proto.data) == b"bye"
        assert proto.calls == ["made", "data", "eof", "lost"]
        await close_server(server)
    with no_fd_leak(loop):
        run(loop, main())


def test_tls_writes_after_close_are_dropped_with_a_warning(loop, caplog):
    async def main():
        server, address = await tls_echo_server(loop)
        transport, proto = await connect_tls(loop, address)
        transport.close()
        await proto.lost
        with caplog.at_level("WARNING", logger="asyncio"):
            for _ in range(7):
                transport.write(b"late")
        # connection_lost counted one already: from the 5th on, each is logged (asyncio's count, as its own)
        assert [r.getMessage() for r in caplog.records].count("SSL connection is closed") == 3
        await close_server(server)
    run(loop, main())


def test_tls_abort_drops_pending_data(loop):
    async def main():
        server, address = await tls_echo_server(loop)
        transport, proto = await connect_tls(loop, address)
        transport.abort()
        assert transport.is_closing()
        assert await proto.lost is None
        await close_server(server)
    with no_fd_leak(loop):
        run(loop, main())


def test_tls_handshake_timeout_message(loop):
    errors = []

    async def main():
        loop.set_exception_handler(lambda lp, ctx: errors.append(ctx))
        server = await loop.create_server(Silent, "127.0.0.1", 0)
        with pytest.raises(ConnectionAbortedError, match="SSL handshake is taking longer than 0.2 seconds"):
            await loop.create_connection(asyncio.Protocol, *server.sockets[0].getsockname(), ssl=client_context(),
                                         server_hostname="localhost", ssl_handshake_timeout=0.2)
        server.close()
        await asyncio.sleep(0.05)
    run(loop, main())
    assert errors == []                          # an OSError: logged in debug mode only, as asyncio does


class NoCloseNotify(asyncio.Protocol):
    """A raw TCP peer relaying the TLS bytes of a handshake made in memory, then silent: never answers the
    client's close-notify."""

    def __init__(self, loop):
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.obj = server_context().wrap_bio(self.incoming, self.outgoing, server_side=True)
        self.done = False

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        if self.done:
            return                               # swallows everything after the handshake
        self.incoming.write(data)
        try:
            self.obj.do_handshake()
            self.done = True
        except ssl.SSLWantReadError:
            pass
        self.transport.write(self.outgoing.read())


@pytest.mark.skipif(not PY311, reason="ssl_shutdown_timeout is a Python 3.11+ parameter")
def test_tls_shutdown_timeout_when_the_peer_never_answers_close_notify(loop):
    async def main():
        server = await loop.create_server(lambda: NoCloseNotify(loop), "127.0.0.1", 0)
        transport, proto = await connect_tls(loop, server.sockets[0].getsockname(), ssl_shutdown_timeout=0.3)
        start = loop.time()
        transport.close()
        exc = await proto.lost
        assert isinstance(exc, asyncio.TimeoutError) and str(exc) == "SSL shutdown timed out"
        assert loop.time() - start >= 0.25
        await close_server(server)
    with no_fd_leak(loop):
        run(loop, main())


def test_tls_app_exception_in_data_received_is_fatal(loop):
    errors = []

    class Raising(Recorder):
        def data_received(self, data):
            raise ZeroDivisionError

    async def main():
        loop.set_exception_handler(lambda lp, ctx: errors.append(ctx))
        server, address = await tls_echo_server(loop)
        transport, proto = await connect_tls(loop, address, lambda: Raising(loop))
        transport.write(b"boom")
        exc = await proto.lost
        assert isinstance(exc, ZeroDivisionError)
        await close_server(server)
    run(loop, main())
    assert [ctx["message"] for ctx in errors] == ["Fatal error on SSL protocol"]
    assert isinstance(errors[0]["exception"], ZeroDivisionError)


def test_python_tls_switch(tmp_path):
    # ZLOOP_TLS=python keeps asyncio's own sslproto under zloop (for comparison, or a case the C layer misses).
    import subprocess
    import sys
    import zloop
    script = tmp_path / "t.py"
    script.write_text(
        "import asyncio, sys\n"
        "sys.path.insert(0, %r)\n"
        "import zloop\n"
        "from net_helpers import server_context, client_context, EchoServer\n"
        "async def main():\n"
        "    loop = asyncio.get_running_loop()\n"
        "    server = await loop.create_server(EchoServer, '127.0.0.1', 0, ssl=server_context())\n"
        "    r, w = await asyncio.open_connection(*server.sockets[0].getsockname(), ssl=client_context(),\n"
        "                                         server_hostname='localhost')\n"
        "    w.write(b'hi\\n'); line = await r.readline()\n"
        "    print(type(w.transport).__module__, line)\n"
        "    w.close(); await w.wait_closed(); server.close()\n"
        "zloop.run(main())\n" % os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, ZLOOP_TLS="python",
               PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(zloop.__file__))))
    out = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "asyncio.sslproto b'hi\\n'"


def test_tls_context_with_its_own_sslobject_class(loop):
    # The C layer calls the _ssl object under an ssl.SSLObject: a context whose sslobject_class overrides its
    # methods gets asyncio's Python SSLProtocol instead, so those methods run.
    calls = []

    class CountingObject(ssl.SSLObject):
        def write(self, data):
            calls.append(len(data))
            return super().write(data)

    async def main():
        server, address = await tls_echo_server(loop)
        ctx = client_context()
        ctx.sslobject_class = CountingObject
        transport, proto = await loop.create_connection(lambda: Recorder(loop), *address, ssl=ctx,
                                                        server_hostname="localhost")
        assert await echo_roundtrip(transport, proto, b"counted") == b"counted"
        transport.close()
        await proto.lost
        await close_server(server)
    run(loop, main())
    assert calls == [7]


class PausingSink(asyncio.Protocol):
    """Pauses reading for a moment after every chunk; counts chunks delivered while paused (there must be none)."""

    def __init__(self, loop, expected):
        self.loop, self.expected = loop, expected
        self.received = 0
        self.while_paused = 0
        self.done = loop.create_future()

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        if not self.transport.is_reading():
            self.while_paused += 1
        self.received += len(data)
        if self.received >= self.expected:
            self.done.set_result(None)
            return
        self.transport.pause_reading()
        self.loop.call_later(0.02, self.transport.resume_reading)   # meanwhile the incoming BIO fills up


def test_tls_no_data_while_reading_is_paused(loop):
    # More than one 256 KiB of plaintext per readiness: pausing in data_received stops the rest until resumed.
    payload = os.urandom(4 * 1024 * 1024)
    sinks = []

    async def main():
        server = await loop.create_server(lambda: sinks.append(PausingSink(loop, len(payload))) or sinks[-1],
                                          "127.0.0.1", 0, ssl=server_context())
        transport, proto = await connect_tls(loop, server.sockets[0].getsockname())
        transport.write(payload)
        while not sinks or not sinks[0].done.done():
            await asyncio.sleep(0.01)
        transport.close()
        await proto.lost
        await close_server(server)
    run(loop, main(), timeout=60)
    assert sinks[0].received == len(payload) and sinks[0].while_paused == 0


def test_tls_second_close_lets_reference_counting_free_the_connection(loop):
    # As asyncio's (CPython's test_create_connection_memory_leak): a transport closed a second time (here after
    # the peer's close-notify closed it) drops its protocol, so the application protocol that stores the transport
    # does not keep the TLS objects alive in a cycle; later calls raise AttributeError.
    import gc
    import weakref
    refs = []

    async def main():
        server = await loop.create_server(CloseAfterFirst, "127.0.0.1", 0, ssl=server_context())
        ctx = client_context()
        refs.append(weakref.ref(ctx))
        transport, proto = await loop.create_connection(lambda: Recorder(loop), *server.sockets[0].getsockname(),
                                                        ssl=ctx, server_hostname="localhost")
        transport.write(b"x")
        await proto.eof
        assert transport.is_closing()
        transport.close()
        with pytest.raises(AttributeError):
            transport.is_reading()
        await proto.lost
        await close_server(server)

    gc.collect()
    gc.disable()
    try:
        run(loop, main())
        for _ in range(3):
            loop.run_until_complete(asyncio.sleep(0))
        assert refs[0]() is None
    finally:
        gc.enable()


@pytest.mark.zloop_only
def test_failed_tls_connect_leaves_no_reference_cycle_to_the_transport(loop):
    # A create_connection whose certificate check fails leaves nothing that keeps the raw transport alive, even with
    # the cyclic GC off (asyncio 3.14+, gh-159049; zloop's C TLS layer on every version). zloop only: the raw
    # transport is caught through zloop's _make_socket_transport.
    import gc
    import weakref
    strict = ssl.create_default_context()        # does not trust the test certificate
    made = []
    make_transport = loop._make_socket_transport

    def remember(*args, **kwargs):
        transport = make_transport(*args, **kwargs)
        made.append(weakref.ref(transport))
        return transport

    async def main():
        server, address = await tls_echo_server(loop)
        loop._make_socket_transport = remember
        with pytest.raises(ssl.SSLCertVerificationError):
            await loop.create_connection(asyncio.Protocol, *address, ssl=strict, server_hostname="localhost")
        del loop._make_socket_transport
        await close_server(server)

    gc.collect()
    gc.disable()
    try:
        run(loop, main())
        assert len(made) == 1 and made[0]() is None
    finally:
        gc.enable()

