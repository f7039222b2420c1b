# tests/test_tls_misuse.py — TLS against peers and callers that misbehave: handshake and shutdown timeouts, peers that
# vanish mid-handshake or keep talking after close_notify, renegotiation and key updates, a slow reader, bad arguments.
#
# Every test runs on every backend and, with ZLOOP_TEST_CONTROL=1, on stock asyncio, which fixes the expected
# outcomes; where asyncio's outcome is a quirk rather than a rule, the test runs the same scenario on a stock loop and
# compares. The misbehaving peers are driven record by record: an ssl.SSLObject over memory BIOs on a plain socket
# (BIOPeer), a plain socket, or `openssl s_server` for what the ssl module cannot trigger (renegotiation, key update).

import asyncio
import datetime
import gc
import math
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile

import pytest

from net_helpers import (PY311, TIMEOUT, EchoServer, Recorder, client_context, no_fd_leak, run, server_context,
                         tls_material, watched)

pytestmark = pytest.mark.skipif(not PY311, reason="asyncio's TLS rules tested here (timeouts, shutdown) are 3.11's")

SHORT = 0.3   # a handshake or shutdown timeout that must expire


def stock_outcome(scenario):
    """What scenario(loop) gives on a fresh stock asyncio loop: ("ok", type name of the result) or ("raise", type)."""
    stock = asyncio.SelectorEventLoop()
    try:
        return outcome(stock, scenario(stock))
    finally:
        stock.close()


def collect_and_settle(loop):
    """After a failed call: collect the dead objects (a socket a failed create_connection left to the garbage
    collector, on stock asyncio), then let the loop see the connections close."""
    gc.collect()
    run(loop, settle())


def outcome(loop, coro):
    try:
        result = loop.run_until_complete(asyncio.wait_for(coro, TIMEOUT))
    except Exception as exc:  # noqa: B902 - the outcome is the point
        return ("raise", type(exc))
    return ("ok", type(result).__name__)


async def wait_until(predicate):
    """Poll predicate() until it holds (bounded: a loaded machine gets time, a broken loop fails)."""
    for _ in range(int(TIMEOUT / 0.01)):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition never held")


async def settle():
    """Let close and connection_lost callbacks run (they are scheduled, not immediate)."""
    for _ in range(3):
        await asyncio.sleep(0.02)


# ---------------------------------------------------------------------- peers

def plain_listener(**sockopts):
    sock = socket.socket()
    for option, value in sockopts.items():
        sock.setsockopt(socket.SOL_SOCKET, getattr(socket, option), value)
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    sock.setblocking(False)
    return sock


async def plain_connection(loop, address, **sockopts):
    sock = socket.socket()
    sock.setblocking(False)
    for option, value in sockopts.items():
        sock.setsockopt(socket.SOL_SOCKET, getattr(socket, option), value)
    try:
        await loop.sock_connect(sock, address)
    except BaseException:
        sock.close()
        raise
    return sock


class BIOPeer:
    """A TLS peer the test drives step by step: an ssl.SSLObject over memory BIOs, its records moved by the loop's
    sock_* calls on a plain non-blocking socket, so the test decides what is sent, when, and what is never read."""

    def __init__(self, loop, sock, context, server_side, server_hostname=None):
        self.loop = loop
        self.sock = sock
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.obj = context.wrap_bio(self.incoming, self.outgoing, server_side=server_side,
                                    server_hostname=server_hostname)
        self.plaintext = bytearray()
        self.eof = False

    async def flush(self):
        data = self.outgoing.read()
        if data:
            await self.loop.sock_sendall(self.sock, data)

    async def _feed(self):
        data = await self.loop.sock_recv(self.sock, 65536)
        if data:
            self.incoming.write(data)
        else:
            self.incoming.write_eof()
            self.eof = True

    async def handshake(self):
        while True:
            try:
                self.obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                await self.flush()
                await self._feed()
        await self.flush()

    async def send(self, data):
        self.obj.write(data)
        await self.flush()

    async def receive(self, nbytes):
        """Read plaintext until nbytes have come in total (or close_notify / EOF); return all of it."""
        while len(self.plaintext) < nbytes and not self.eof:
            try:
                chunk = self.obj.read(65536)
            except ssl.SSLWantReadError:
                await self.flush()   # TLS 1.3 tickets and key updates may want an answer
                await self._feed()
                continue
            except ssl.SSLZeroReturnError:
                self.eof = True
                break
            if not chunk:            # close_notify
                self.eof = True
                break
            self.plaintext += chunk
        return bytes(self.plaintext)

    def close_notify(self):
        """The close_notify alert's bytes, not yet sent (our side of unwrap; we do not wait for theirs)."""
        try:
            self.obj.unwrap()
        except ssl.SSLWantReadError:
            pass
        return self.outgoing.read()

    async def read_until_eof(self):
        """Every byte the other side sends until it closes the TCP connection (b'' at EOF; a reset counts as EOF)."""
        received = bytearray()
        while True:
            try:
                data = await self.loop.sock_recv(self.sock, 65536)
            except ConnectionResetError:
                return bytes(received)
            if not data:
                return bytes(received)
            received += data


async def tls_connection_to_peer(loop, listener, protocol_factory, **kwargs):
    """A zloop TLS client connected to listener, and the BIOPeer server on the accepted socket, handshake done."""
    connecting = loop.create_task(loop.create_connection(protocol_factory, *listener.getsockname(),
                                                         ssl=client_context(), server_hostname="localhost", **kwargs))
    conn, _ = await loop.sock_accept(listener)
    conn.setblocking(False)
    peer = BIOPeer(loop, conn, server_context(), server_side=True)
    try:
        try:
            await peer.handshake()
        except (ssl.SSLError, OSError):
            pass   # the client gave up: its own error follows
        transport, proto = await connecting
    except BaseException:
        conn.close()
        raise
    return transport, proto, peer


async def peer_connection_to_tls_server(loop, server_address):
    """A BIOPeer client connected to a TLS server, handshake done."""
    sock = await plain_connection(loop, server_address)
    peer = BIOPeer(loop, sock, client_context(), server_side=False, server_hostname="localhost")
    await peer.handshake()
    return peer


class Announcing(Recorder):
    """A Recorder that resolves `made` with itself on connection_made: how a test gets a server's protocol."""

    def __init__(self, loop, made):
        super().__init__(loop)
        self._announce = made

    def connection_made(self, transport):
        super().connection_made(transport)
        if not self._announce.done():
            self._announce.set_result(self)


async def close_server(server):
    server.close()
    await server.wait_closed()


# ---------------------------------------------------------------------- handshake timeout

def test_client_handshake_timeout_against_a_peer_that_never_speaks_tls(loop):
    """ssl_handshake_timeout against a listener that accepts and stays silent: ConnectionAbortedError (asyncio's
    sslproto), not before the timeout, and the silent peer sees the connection closed."""
    async def main():
        with plain_listener() as listener:
            start = loop.time()
            connecting = loop.create_task(loop.create_connection(
                asyncio.Protocol, *listener.getsockname(), ssl=client_context(), server_hostname="localhost",
                ssl_handshake_timeout=SHORT))
            conn, _ = await loop.sock_accept(listener)
            with conn:
                with pytest.raises(ConnectionAbortedError):
                    await connecting
                assert loop.time() - start >= SHORT * 0.9
                conn.setblocking(False)
                peer = BIOPeer(loop, conn, server_context(), server_side=True)
                sent = await peer.read_until_eof()   # the ClientHello, then EOF
                assert sent[:1] == b"\x16"           # a TLS handshake record
        await settle()
    with no_fd_leak(loop):
        run(loop, main())


def test_server_handshake_timeout_against_a_client_that_never_speaks(loop):
    """A TLS server's ssl_handshake_timeout: a client that connects and sends nothing is disconnected after the
    timeout; its protocol never sees connection_made, and the server keeps serving."""
    made = []

    class App(asyncio.Protocol):
        def connection_made(self, transport):
            made.append(transport)

    async def main():
        server = await loop.create_server(App, "127.0.0.1", 0, ssl=server_context(), ssl_handshake_timeout=SHORT)
        address = server.sockets[0].getsockname()
        start = loop.time()
        silent = await plain_connection(loop, address)
        with silent:
            assert await asyncio.wait_for(loop.sock_recv(silent, 100), TIMEOUT) == b""
        assert loop.time() - start >= SHORT * 0.9
        assert made == []
        peer = await peer_connection_to_tls_server(loop, address)   # still serving
        with peer.sock:
            await wait_until(lambda: len(made) == 1)
        made[0].close()
        await close_server(server)
        await settle()
    with no_fd_leak(loop):
        run(loop, main())


@pytest.mark.parametrize("timeout", [math.inf, 1e9], ids=["inf", "huge"])
def test_handshake_and_shutdown_timeouts_that_never_expire(loop, timeout):
    """inf and huge timeouts are accepted (asyncio only rejects <= 0) and change nothing on a healthy peer."""
    async def main():
        with plain_listener() as listener:
            transport, proto, peer = await tls_connection_to_peer(
                loop, listener, lambda: Recorder(loop), ssl_handshake_timeout=timeout, ssl_shutdown_timeout=timeout)
            with peer.sock:
                await peer.send(b"ping")
                assert await proto.receive(4) == b"ping"
                transport.close()
                assert await peer.receive(1) == b""        # our close_notify
                await peer.loop.sock_sendall(peer.sock, peer.close_notify())
                assert await proto.lost is None
        await settle()
    with no_fd_leak(loop):
        run(loop, main())


def test_nan_timeouts_are_not_rejected(loop, is_zloop):
    """asyncio checks `timeout <= 0`, which NaN passes: the argument is accepted. The NaN timer itself is due at once
    on zloop (docs/compatibility.md, call_later(nan)), so the handshake is aborted there; stock asyncio runs it
    wherever its heap happens to put it."""
    async def main():
        with plain_listener() as listener:
            try:
                transport, _, peer = await tls_connection_to_peer(loop, listener, asyncio.Protocol,
                                                                  ssl_handshake_timeout=math.nan)
            except ConnectionAbortedError:
                assert is_zloop
                return "aborted"
            peer.sock.close()
            transport.close()
            return "connected"
    with no_fd_leak(loop):
        result = run(loop, main())
        run(loop, settle())
    if is_zloop:
        assert result == "aborted"


# ---------------------------------------------------------------------- peers that vanish mid-handshake

@pytest.mark.parametrize("when", ["before_client_hello", "after_client_hello", "reset_after_client_hello",
                                  "plaintext_answer"])
def test_client_side_peer_closes_mid_handshake(loop, when):
    """The server end goes away (or answers in plain text) before the handshake is done: create_connection raises
    what stock asyncio raises (ConnectionResetError for a close or reset, ssl.SSLError for a non-TLS answer) and
    leaves nothing behind."""
    expected = {"before_client_hello": ConnectionResetError, "after_client_hello": ConnectionResetError,
                "reset_after_client_hello": ConnectionResetError, "plaintext_answer": ssl.SSLError}[when]

    async def main():
        with plain_listener() as listener:
            connecting = loop.create_task(loop.create_connection(
                asyncio.Protocol, *listener.getsockname(), ssl=client_context(), server_hostname="localhost"))
            conn, _ = await loop.sock_accept(listener)
            with conn:
                conn.setblocking(False)
                if when != "before_client_hello":
                    hello = await loop.sock_recv(conn, 65536)
                    assert hello[:1] == b"\x16"
                if when == "reset_after_client_hello":
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                if when == "plaintext_answer":
                    await loop.sock_sendall(conn, b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            with pytest.raises(expected):
                await connecting
        await settle()
    with no_fd_leak(loop):
        run(loop, main())
    assert watched(loop) <= 1   # at most the loop's own wake-up fd


@pytest.mark.parametrize("when", ["at_once", "half_client_hello", "reset_after_client_hello", "garbage"])
def test_server_side_peer_closes_mid_handshake(loop, when):
    """A client that disconnects (or sends garbage) during the handshake: the server's protocol never sees
    connection_made, nothing reaches the exception handler (asyncio logs handshake failures at debug level only),
    no fd is left, and the server goes on serving."""
    made, reported = [], []

    class App(asyncio.Protocol):
        def connection_made(self, transport):
            made.append(transport)

    async def main():
        loop.set_exception_handler(lambda lp, context: reported.append(context))
        server = await loop.create_server(App, "127.0.0.1", 0, ssl=server_context())
        address = server.sockets[0].getsockname()
        sock = await plain_connection(loop, address)
        with sock:
            if when == "garbage":
                await loop.sock_sendall(sock, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            elif when != "at_once":
                peer = BIOPeer(loop, sock, client_context(), server_side=False, server_hostname="localhost")
                with pytest.raises(ssl.SSLWantReadError):
                    peer.obj.do_handshake()
                hello = peer.outgoing.read()
                await loop.sock_sendall(sock, hello if when.startswith("reset") else hello[:len(hello) // 2])
                if when.startswith("reset"):
                    await asyncio.sleep(0.05)
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        await settle()
        peer = await peer_connection_to_tls_server(loop, address)
        with peer.sock:
            await peer.send(b"still serving")
            await wait_until(lambda: made)
        await settle()
        assert len(made) == 1
        made[0].close()
        await close_server(server)
        await settle()
    try:
        with no_fd_leak(loop):
            run(loop, main())
    finally:
        loop.set_exception_handler(None)
    assert reported == []


# ---------------------------------------------------------------------- after close_notify

@pytest.mark.parametrize("trailer", ["same_segment", "later_segment"])
@pytest.mark.parametrize("side", ["server", "client"])
def test_peer_sends_data_after_close_notify(loop, side, trailer):
    """The peer sends close_notify and then more bytes (plain text, as a peer that drops TLS would): the application
    gets its data, eof_received once, then connection_lost(None); nothing after close_notify is delivered; our
    side answers with its own close_notify and closes the connection."""
    async def main():
        with plain_listener() as listener:
            if side == "client":
                transport, proto, peer = await tls_connection_to_peer(loop, listener, lambda: Recorder(loop))
            else:
                made = loop.create_future()
                server = await loop.create_server(lambda: Announcing(loop, made), sock=listener, ssl=server_context())
                peer = await peer_connection_to_tls_server(loop, listener.getsockname())
                proto = await made
            with peer.sock:
                await peer.send(b"last words")
                assert await proto.receive(10) == b"last words"
                goodbye = peer.close_notify()
                if trailer == "same_segment":
                    await loop.sock_sendall(peer.sock, goodbye + b"AFTER CLOSE_NOTIFY")
                else:
                    await loop.sock_sendall(peer.sock, goodbye)
                    await asyncio.sleep(0)
                    try:
                        await loop.sock_sendall(peer.sock, b"AFTER CLOSE_NOTIFY")
                    except (BrokenPipeError, ConnectionResetError):
                        pass
                assert await proto.lost is None
                assert proto.calls == ["made", "data", "eof", "lost"]
                assert bytes(proto.data) == b"last words"
                peer.incoming.write(await peer.read_until_eof())
                peer.obj.unwrap()            # completes: their close_notify came, then the connection closed
            if side == "server":
                await close_server(server)
        await settle()
    with no_fd_leak(loop):
        run(loop, main())


# ---------------------------------------------------------------------- shutdown timeout

@pytest.mark.parametrize("side", ["client", "server"])
def test_shutdown_timeout_against_a_peer_that_never_answers_close_notify(loop, side):
    """close() sends close_notify; the peer never reads nor answers: after ssl_shutdown_timeout the connection is
    aborted and connection_lost gets TimeoutError (asyncio's sslproto), not before the timeout."""
    async def main():
        with plain_listener() as listener:
            if side == "client":
                transport, proto, peer = await tls_connection_to_peer(loop, listener, lambda: Recorder(loop),
                                                                      ssl_shutdown_timeout=SHORT)
            else:
                made = loop.create_future()
                server = await loop.create_server(lambda: Announcing(loop, made), sock=listener, ssl=server_context(),
                                                  ssl_shutdown_timeout=SHORT)
                peer = await peer_connection_to_tls_server(loop, listener.getsockname())
                proto = await made
                transport = proto.transport
            with peer.sock:
                start = loop.time()
                transport.close()
                assert transport.is_closing()
                lost = await proto.lost
                elapsed = loop.time() - start
                assert isinstance(lost, TimeoutError), repr(lost)
                assert elapsed >= SHORT * 0.9
                assert proto.calls == ["made", "lost"]
            if side == "server":
                await close_server(server)
        await settle()
    with no_fd_leak(loop):
        run(loop, main())


# ---------------------------------------------------------------------- renegotiation and key update

OPENSSL = shutil.which("openssl")
needs_openssl = pytest.mark.skipif(OPENSSL is None, reason="needs the openssl command (s_server)")


class SServer:
    """`openssl s_server` on a free loopback port: what it receives goes to a file, lines written to its stdin go
    to the client, and the one-letter lines r (renegotiate), K (TLS 1.3 key update, answer requested) and P (plain
    text down the TCP connection) make it misbehave on request. -msg logs every handshake message it sees."""

    def __init__(self, version_flag):
        material = tls_material()
        self.dir = tempfile.mkdtemp(prefix="zloop-sserver-")
        self.out_path = os.path.join(self.dir, "out")
        self.msg_path = os.path.join(self.dir, "msg")
        self.out = open(self.out_path, "wb")
        self.proc = subprocess.Popen(
            [OPENSSL, "s_server", "-accept", "127.0.0.1:0", "-naccept", "1", "-cert", material.cert_file,
             "-key", material.key_file, version_flag, "-msg", "-msgfile", self.msg_path],
            stdin=subprocess.PIPE, stdout=self.out, stderr=subprocess.STDOUT)

    def output(self):
        with open(self.out_path, "rb") as f:
            return f.read()

    def messages(self):
        try:
            with open(self.msg_path, "rb") as f:
                return f.read()
        except FileNotFoundError:
            return b""

    async def wait_for_output(self, needle, source=None):
        source = source or self.output
        for _ in range(int(TIMEOUT / 0.02)):
            if needle in source():
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"s_server exited ({self.proc.returncode}): {self.output()[-500:]!r}")
            await asyncio.sleep(0.02)
        raise AssertionError(f"s_server never printed {needle!r}: {source()[-500:]!r}")

    async def connect(self, loop):
        """A zloop TLS client connection (a Recorder) to it, once it listens."""
        await self.wait_for_output(b"ACCEPT ")
        line = next(x for x in self.output().splitlines() if x.startswith(b"ACCEPT "))
        host, _, port = line[len(b"ACCEPT "):].decode().rpartition(":")
        return await loop.create_connection(lambda: Recorder(loop), host, int(port), ssl=client_context(),
                                            server_hostname="localhost")

    def command(self, line):
        self.proc.stdin.write(line)
        self.proc.stdin.flush()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.proc.stdin.close()
        self.out.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@needs_openssl
@pytest.mark.parametrize("version_flag, command, marker", [
    pytest.param("-tls1_2", b"r\n", b"HelloRequest", id="tls1.2-renegotiation"),
    pytest.param("-tls1_3", b"K\n", b"KeyUpdate", id="tls1.3-key-update"),
])
def test_server_initiated_renegotiation_and_key_update(loop, version_flag, command, marker):
    """The ssl module cannot start a renegotiation, so the peer is `openssl s_server`: mid-connection it sends a
    TLS 1.2 HelloRequest (the client's SSLContext allows renegotiation by default, so the client must answer with
    a new ClientHello from inside a read and finish the handshake while application data keeps flowing) or a
    TLS 1.3 KeyUpdate that requests one back. Data before and after must flow both ways, in order."""
    async def main(server):
        transport, proto = await server.connect(loop)
        transport.write(b"before\n")
        await server.wait_for_output(b"before\n")
        server.command(b"hello\n")
        assert await proto.receive(6) == b"hello\n"
        hellos = server.messages().count(b"ClientHello")
        server.command(command)
        await server.wait_for_output(marker, server.messages)
        server.command(b"world\n")
        assert await proto.receive(12) == b"hello\nworld\n"
        transport.write(b"after\n")
        await server.wait_for_output(b"after\n")
        if marker == b"HelloRequest":   # the client did renegotiate: a second ClientHello reached the server
            await server.wait_for_output(b"ClientHello", server.messages)
            assert server.messages().count(b"ClientHello") > hellos
        else:                           # the client answered with its own KeyUpdate
            assert server.messages().count(b"KeyUpdate") >= 2
        transport.write(b"last\n")
        await server.wait_for_output(b"last\n")
        transport.close()
        await proto.lost
        await settle()
    with SServer(version_flag) as server, no_fd_leak(loop):
        run(loop, main(server))


@needs_openssl
def test_plaintext_injected_mid_connection(loop):
    """s_server's P command writes plain text into the TCP stream of an established TLS connection: the client's
    connection is lost with ssl.SSLError, after the data that came before it."""
    async def main(server):
        transport, proto = await server.connect(loop)
        server.command(b"ok\n")
        assert await proto.receive(3) == b"ok\n"
        server.command(b"P\n")
        lost = await proto.lost
        assert isinstance(lost, ssl.SSLError), repr(lost)
        assert bytes(proto.data) == b"ok\n"
        await settle()
    with SServer("-tls1_3") as server, no_fd_leak(loop):
        run(loop, main(server))


# ---------------------------------------------------------------------- 10 MiB both ways, slow reader

TEN_MIB = 10 * 1024 * 1024
HIGH_WATER = 64 * 1024
SMALL_BUFFERS = {"SO_RCVBUF": 64 * 1024, "SO_SNDBUF": 64 * 1024}   # so the kernel cannot absorb the whole transfer


class FlowEcho(asyncio.Protocol):
    """Echo that respects flow control: it stops reading while its writes are paused."""

    def __init__(self, report):
        self.report = report
        report.update(pauses=0, max_buffer=0, data_while_paused=0)
        self.paused = False

    def connection_made(self, transport):
        self.transport = transport
        transport.set_write_buffer_limits(high=HIGH_WATER)

    def data_received(self, data):
        self._echo(data)

    def _echo(self, data):
        if self.paused:
            self.report["data_while_paused"] += 1
        self.transport.write(data)
        self.report["max_buffer"] = max(self.report["max_buffer"], self.transport.get_write_buffer_size())

    def pause_writing(self):
        self.report["pauses"] += 1
        self.paused = True
        self.transport.pause_reading()

    def resume_writing(self):
        self.paused = False
        self.transport.resume_reading()


class BufferedFlowEcho(FlowEcho, asyncio.BufferedProtocol):
    def connection_made(self, transport):
        super().connection_made(transport)
        self.buffer = bytearray(64 * 1024)

    def get_buffer(self, sizehint):
        # A memoryview: asyncio's sslproto fills the buffer through buf[offset:], which would copy a bytearray and
        # lose every TLS record after the first (CPython issue 156275).
        return memoryview(self.buffer)

    def buffer_updated(self, nbytes):
        self._echo(bytes(self.buffer[:nbytes]))


class SlowReader(asyncio.Protocol):
    """Writes its payload as fast as flow control lets it, reads the echo slowly: it pauses reading for a while
    after every MiB. Counts data that arrives while it has paused reading (there must be none)."""

    def __init__(self, loop, expected):
        self.loop = loop
        self.expected = expected
        self.data = bytearray()
        self.done = loop.create_future()
        self.lost = loop.create_future()
        self.can_write = asyncio.Event()
        self.can_write.set()
        self.reading_paused = False
        self.data_while_paused = 0
        self.write_pauses = 0
        self.next_pause = 1024 * 1024

    def connection_made(self, transport):
        self.transport = transport
        transport.set_write_buffer_limits(high=HIGH_WATER)

    def data_received(self, data):
        if self.reading_paused:
            self.data_while_paused += 1
        self.data += data
        if len(self.data) >= self.expected:
            if not self.done.done():
                self.done.set_result(None)
        elif len(self.data) >= self.next_pause:
            self.next_pause += 1024 * 1024
            self.reading_paused = True
            self.transport.pause_reading()
            self.loop.call_later(0.05, self._resume)

    def _resume(self):
        self.reading_paused = False
        if not self.transport.is_closing():
            self.transport.resume_reading()

    def pause_writing(self):
        self.write_pauses += 1
        self.can_write.clear()

    def resume_writing(self):
        self.can_write.set()

    def connection_lost(self, exc):
        self.can_write.set()
        if not self.lost.done():
            self.lost.set_result(exc)


@pytest.mark.parametrize("server_protocol", [FlowEcho, BufferedFlowEcho], ids=["proto", "buffered"])
def test_ten_mib_both_ways_with_a_slow_reader(loop, server_protocol):
    """10 MiB up and echoed back down at once, through small socket buffers, to a client that keeps pausing its
    reads: every byte comes back equal and in order, no data_received while reading is paused on either side,
    both sides' writes get paused (flow control really engaged), and the echo's write buffer stays within its high
    water mark plus what one read can deliver."""
    payload = os.urandom(TEN_MIB)
    report = {}

    async def main():
        with plain_listener(**SMALL_BUFFERS) as listener:
            server = await loop.create_server(lambda: server_protocol(report), sock=listener, ssl=server_context())
            sock = socket.socket()
            for option, value in SMALL_BUFFERS.items():
                sock.setsockopt(socket.SOL_SOCKET, getattr(socket, option), value)
            sock.connect(listener.getsockname())
            client = SlowReader(loop, len(payload))
            transport, _ = await loop.create_connection(lambda: client, sock=sock, ssl=client_context(),
                                                        server_hostname="localhost")
            view = memoryview(payload)
            for offset in range(0, len(payload), 64 * 1024):
                await client.can_write.wait()
                transport.write(view[offset:offset + 64 * 1024])
            await client.done
            transport.close()
            await client.lost
            await close_server(server)
        await settle()
        return client

    with no_fd_leak(loop):
        client = run(loop, main(), timeout=120)
    assert len(client.data) == len(payload)
    assert client.data == payload
    assert client.data_while_paused == 0
    assert report["data_while_paused"] == 0
    assert client.write_pauses >= 1
    assert report["pauses"] >= 1
    assert report["max_buffer"] <= HIGH_WATER + 512 * 1024


# ---------------------------------------------------------------------- bad arguments

def _bad_argument_cases():
    ctx_client, ctx_server = client_context, server_context
    return {
        "server_ssl_true": lambda lp: lp.create_server(asyncio.Protocol, "127.0.0.1", 0, ssl=True),
        "start_server_ssl_true": lambda lp: asyncio.start_server(lambda r, w: None, "127.0.0.1", 0, ssl=True),
        "server_handshake_timeout_without_ssl":
            lambda lp: lp.create_server(asyncio.Protocol, "127.0.0.1", 0, ssl_handshake_timeout=1),
        "server_shutdown_timeout_without_ssl":
            lambda lp: lp.create_server(asyncio.Protocol, "127.0.0.1", 0, ssl_shutdown_timeout=1),
        "server_hostname_without_ssl":
            lambda lp: lp.create_connection(asyncio.Protocol, "127.0.0.1", 9, server_hostname="localhost"),
        "handshake_timeout_without_ssl":
            lambda lp: lp.create_connection(asyncio.Protocol, "127.0.0.1", 9, ssl_handshake_timeout=1),
        "shutdown_timeout_without_ssl":
            lambda lp: lp.create_connection(asyncio.Protocol, "127.0.0.1", 9, ssl_shutdown_timeout=1),
        "unix_server_hostname_without_ssl":
            lambda lp: lp.create_unix_connection(asyncio.Protocol, "/nonexistent", server_hostname="localhost"),
        "accepted_socket_handshake_timeout_without_ssl": _accepted_socket_with_timeout_only,
        "ssl_without_server_hostname_on_a_socket": _ssl_on_socket_without_hostname,
        "start_tls_not_a_context": _start_tls_not_a_context,
        "negative_handshake_timeout": lambda lp: _tls_connect(lp, ssl_handshake_timeout=-1),
        "zero_handshake_timeout": lambda lp: _tls_connect(lp, ssl_handshake_timeout=0),
        "negative_shutdown_timeout": lambda lp: _tls_connect(lp, ssl_shutdown_timeout=-1.5),
        "zero_shutdown_timeout": lambda lp: _tls_connect(lp, ssl_shutdown_timeout=0),
        "string_handshake_timeout": lambda lp: _tls_connect(lp, ssl_handshake_timeout="1"),
        "string_shutdown_timeout": lambda lp: _tls_connect(lp, ssl_shutdown_timeout="1"),
        "ssl_is_an_int": lambda lp: _tls_connect(lp, ssl=42),
        "ssl_is_a_string": lambda lp: _tls_connect(lp, ssl="yes"),
        "server_hostname_not_a_string": lambda lp: _tls_connect(lp, server_hostname=42),
        "client_context_on_server_side": lambda lp: _tls_connect(lp, server_ssl=ctx_client()),
        "server_context_on_client_side": lambda lp: _tls_connect(lp, ssl=ctx_server()),
    }


async def _tls_connect(lp, server_ssl=None, **kwargs):
    """A TLS connection to a fresh TLS server with kwargs overriding create_connection's TLS arguments; closed at
    once when it succeeds."""
    server = await lp.create_server(asyncio.Protocol, "127.0.0.1", 0, ssl=server_ssl or server_context())
    try:
        options = dict(ssl=client_context(), server_hostname="localhost")
        options.update(kwargs)
        transport, _ = await lp.create_connection(asyncio.Protocol, *server.sockets[0].getsockname(), **options)
        transport.close()
        return transport
    finally:
        # No wait_closed(): from 3.12 on it waits for the server's connections, and the one whose client failed
        # before its handshake only ends when that client's socket is collected (collect_and_settle).
        server.close()
        await settle()


async def _accepted_socket_with_timeout_only(lp):
    with socket.socket() as sock:
        return await lp.connect_accepted_socket(asyncio.Protocol, sock, ssl_handshake_timeout=1)


async def _ssl_on_socket_without_hostname(lp):
    with plain_listener() as listener, socket.socket() as sock:
        sock.connect(listener.getsockname())
        return await lp.create_connection(asyncio.Protocol, sock=sock, ssl=client_context())


async def _start_tls_not_a_context(lp):
    server = await lp.create_server(asyncio.Protocol, "127.0.0.1", 0)
    try:
        transport, proto = await lp.create_connection(asyncio.Protocol, *server.sockets[0].getsockname())
        try:
            return await lp.start_tls(transport, proto, "not a context", server_hostname="localhost")
        finally:
            transport.close()
    finally:
        server.close()
        await server.wait_closed()
        await settle()


EXPECTED_BAD_ARGUMENT = {
    "server_ssl_true": TypeError, "start_server_ssl_true": TypeError,
    "server_handshake_timeout_without_ssl": ValueError, "server_shutdown_timeout_without_ssl": ValueError,
    "server_hostname_without_ssl": ValueError, "handshake_timeout_without_ssl": ValueError,
    "shutdown_timeout_without_ssl": ValueError, "unix_server_hostname_without_ssl": ValueError,
    "accepted_socket_handshake_timeout_without_ssl": ValueError, "ssl_without_server_hostname_on_a_socket": ValueError,
    "start_tls_not_a_context": TypeError, "negative_handshake_timeout": ValueError, "zero_handshake_timeout": ValueError,
    "negative_shutdown_timeout": ValueError, "zero_shutdown_timeout": ValueError,
    "string_handshake_timeout": TypeError, "string_shutdown_timeout": TypeError,
    "ssl_is_an_int": AttributeError, "ssl_is_a_string": AttributeError, "server_hostname_not_a_string": AttributeError,
    "client_context_on_server_side": ConnectionResetError, "server_context_on_client_side": ssl.SSLError,
}


@pytest.mark.parametrize("case", sorted(EXPECTED_BAD_ARGUMENT))
def test_bad_arguments_raise_what_asyncio_raises(loop, case):
    """Each misuse raises the exception type stock asyncio raises for it (run here on a stock loop too, so a new
    Python's change shows up as a difference, not a silent pass), and leaves no fd behind."""
    scenario = _bad_argument_cases()[case]
    expected = stock_outcome(scenario)
    assert expected[0] == "raise" and issubclass(expected[1], EXPECTED_BAD_ARGUMENT[case]), expected
    with no_fd_leak(loop):
        assert outcome(loop, scenario(loop)) == expected
        collect_and_settle(loop)


# ---------------------------------------------------------------------- get_extra_info

def _client_certificate(directory):
    """A self-signed client-auth certificate (CN "zloop client") and its key; the server trusts it directly."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "zloop client")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(key, hashes.SHA256()))
    path = os.path.join(directory, "client.pem")
    with open(path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    return path


def _mutual_contexts(directory):
    """Server context that requires a client certificate, offers ALPN and records SNI; client context presenting
    one."""
    client_pem = _client_certificate(directory)
    server_ctx = server_context()
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    server_ctx.load_verify_locations(client_pem)
    server_ctx.set_alpn_protocols(["h2", "http/1.1"])
    seen_sni = []
    server_ctx.sni_callback = lambda obj, name, ctx: seen_sni.append(name)
    client_ctx = client_context()
    client_ctx.load_cert_chain(client_pem)
    client_ctx.set_alpn_protocols(["http/1.1"])
    return server_ctx, client_ctx, seen_sni


def test_get_extra_info_as_asyncio_gives_it(loop, tmp_path):
    """ssl_object, peercert, cipher, compression and sslcontext on both ends (client certificate, ALPN and SNI
    included) are what the SSLObject itself says; unknown keys give the default; the TLS keys survive close."""
    server_ctx, client_ctx, seen_sni = _mutual_contexts(str(tmp_path))

    async def main():
        made = loop.create_future()
        server = await loop.create_server(lambda: Announcing(loop, made), "127.0.0.1", 0, ssl=server_ctx)
        transport, proto = await loop.create_connection(lambda: Recorder(loop), *server.sockets[0].getsockname(),
                                                        ssl=client_ctx, server_hostname="localhost")
        server_proto = await made
        ends = [(transport, client_ctx, False), (server_proto.transport, server_ctx, True)]
        names = {False: "localhost", True: "zloop client"}   # the peer's commonName, seen from each end
        for end, ctx, server_side in ends:
            obj = end.get_extra_info("ssl_object")
            assert isinstance(obj, ssl.SSLObject)
            assert obj.server_side is server_side
            assert obj.server_hostname == (None if server_side else "localhost")
            assert end.get_extra_info("sslcontext") is ctx
            assert end.get_extra_info("peercert") == obj.getpeercert()
            assert dict(x[0] for x in end.get_extra_info("peercert")["subject"])["commonName"] == names[server_side]
            assert end.get_extra_info("cipher") == obj.cipher()
            assert end.get_extra_info("compression") == obj.compression()
            assert obj.selected_alpn_protocol() == "http/1.1"
            assert end.get_extra_info("no such key", "default") == "default"
            assert end.get_extra_info("no such key") is None
            assert isinstance(end.get_extra_info("socket"), asyncio.trsock.TransportSocket)
        assert seen_sni == ["localhost"]
        assert transport.get_extra_info("peername") == server_proto.transport.get_extra_info("sockname")
        cipher = transport.get_extra_info("cipher")
        transport.close()
        await proto.lost
        await server_proto.lost
        assert transport.get_extra_info("cipher") == cipher
        assert isinstance(transport.get_extra_info("ssl_object"), ssl.SSLObject)
        assert transport.get_extra_info("sslcontext") is client_ctx
        await close_server(server)
        await settle()
    with no_fd_leak(loop):
        run(loop, main())


# ---------------------------------------------------------------------- start_tls on a closing transport, writes after close

async def _start_tls_on_closing(lp):
    """start_tls on a plain transport whose close() has just been called (its connection_lost not yet run)."""
    server = await lp.create_server(asyncio.Protocol, "127.0.0.1", 0)
    try:
        transport, proto = await lp.create_connection(asyncio.Protocol, *server.sockets[0].getsockname())
        transport.close()
        assert transport.is_closing()
        return await lp.start_tls(transport, proto, client_context(), server_hostname="localhost")
    finally:
        server.close()
        await server.wait_closed()
        await settle()


def test_start_tls_on_a_closing_transport(loop):
    """What start_tls does with a transport that is already closing is asyncio's to say (3.11-3.13: it returns
    None, the handshake never starts); zloop must do the same, neither hang nor leak."""
    expected = stock_outcome(_start_tls_on_closing)
    with no_fd_leak(loop):
        assert outcome(loop, _start_tls_on_closing(loop)) == expected
        collect_and_settle(loop)


def test_writes_after_close(loop):
    """After close(): write() of bytes is dropped silently (the peer gets no more data, only close_notify),
    write() of a str still raises TypeError, write_eof() raises NotImplementedError (TLS has no half-close,
    can_write_eof() is False), writes after the connection is gone raise nothing, and a second close() is harmless.
    (A write after a *second* close() raises AttributeError on stock asyncio, whose transport drops its protocol
    then: a quirk this test leaves alone.)"""
    async def main():
        with plain_listener() as listener:
            transport, proto, peer = await tls_connection_to_peer(loop, listener, lambda: Recorder(loop))
            with peer.sock:
                assert not transport.can_write_eof()
                with pytest.raises(NotImplementedError):
                    transport.write_eof()
                transport.write(b"before")
                transport.close()
                assert transport.is_closing()
                transport.write(b"after close")
                transport.writelines([b"after", b"close"])
                with pytest.raises(TypeError):
                    transport.write("text")
                assert await peer.receive(100) == b"before"   # then close_notify: nothing written after close
                assert peer.eof
                await loop.sock_sendall(peer.sock, peer.close_notify())
                assert await proto.lost is None
                for _ in range(8):    # asyncio counts these and logs a warning past 5; never raises
                    transport.write(b"after connection_lost")
                assert transport.get_write_buffer_size() == 0
                transport.close()
        await settle()
    with no_fd_leak(loop):
        run(loop, main())


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))


class BufferedEcho(asyncio.BufferedProtocol):
    """Echoes what it is given through get_buffer/buffer_updated."""

    def connection_made(self, transport):
        self.transport = transport
        self.buffer = bytearray(64 * 1024)

    def get_buffer(self, sizehint):
        return memoryview(self.buffer)

    def buffer_updated(self, nbytes):
        self.transport.write(self.buffer[:nbytes])


def _record_bounds(ciphertext):
    """Where each TLS record of ciphertext starts, and its end."""
    bounds = [0]
    while bounds[-1] < len(ciphertext):
        bounds.append(bounds[-1] + 5 + int.from_bytes(ciphertext[bounds[-1] + 3:bounds[-1] + 5], "big"))
    return bounds


@pytest.mark.parametrize("protocol", [EchoServer, BufferedEcho], ids=["data_received", "buffered"])
def test_tls_records_whole_several_at_once_and_cut_anywhere(loop, protocol):
    # The record loop knows one whole record fed into an empty BIO without asking it: every other arrangement of
    # the ciphertext must still give all the plaintext, in order, whatever records the reads end in.
    messages = [os.urandom(size) for size in (1, 100, 1024, 5000, 16 * 1024, 20000, 3, 700)]

    async def main():
        server = await loop.create_server(protocol, "127.0.0.1", 0, ssl=server_context())
        peer = await peer_connection_to_tls_server(loop, server.sockets[0].getsockname())
        peer.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for message in messages:
            peer.obj.write(message)
        stream = peer.outgoing.read()
        bounds = _record_bounds(stream)
        cuts = sorted({*bounds[1:3],                                  # the first records one by one
                       bounds[3] + 3, bounds[4] + 1,                  # cut inside a header
                       bounds[5] + 100,                               # a record and the start of the next
                       bounds[7]})                                    # then several whole ones at once
        for start, end in zip([0, *cuts], [*cuts, len(stream)]):
            await loop.sock_sendall(peer.sock, stream[start:end])
            await asyncio.sleep(0.02)                                 # each piece in a read of its own
        echoed = await peer.receive(sum(map(len, messages)))
        peer.sock.close()
        server.close()
        await server.wait_closed()
        return echoed
    assert run(loop, main(), timeout=30) == b"".join(messages)
