# tests/test_server_completion.py — what a server must keep doing when it accepts through a completion backend (a
# multishot accept on uring with ZLOOP_URING_COMPLETION=1): many connections at once, close with accepts in flight,
# start_serving=False, pausing and resuming, fd reuse. Run on every backend too (and the asyncio control).

import asyncio
import socket
import sys

import pytest

from net_helpers import HAS_IPV6, TIMEOUT, fd_count, no_fd_leak
from test_stream_completion import cloop, run  # noqa: F401 (the fixture: every backend, uring+completion, control)

HOSTS = ["127.0.0.1"] + (["::1"] if HAS_IPV6 else [])


class Served(asyncio.Protocol):
    """Echoes; records each connection's addresses as the server side sees them."""

    def __init__(self, made):
        self.made = made

    def connection_made(self, transport):
        self.transport = transport
        self.made.append((transport.get_extra_info("peername"), transport.get_extra_info("sockname")))

    def data_received(self, data):
        self.transport.write(data)


async def echo_once(host, port, payload):
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(payload)
        got = await reader.readexactly(len(payload))
        return got, writer.get_extra_info("sockname"), writer.get_extra_info("peername")
    finally:
        writer.close()
        await writer.wait_closed()


def blocking_connect(address):
    family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
    client = socket.socket(family, socket.SOCK_STREAM)
    client.settimeout(TIMEOUT)
    client.connect(address)
    return client


def gone_for_the_client(client):
    """The connection was closed without being served: the client reads the end, or a reset."""
    try:
        return client.recv(1) == b""
    except ConnectionResetError:
        return True


@pytest.mark.parametrize("host", HOSTS)
def test_many_connections_at_once_each_served_once_with_its_own_peer(cloop, host):
    async def main():
        made = []
        server = await cloop.create_server(lambda: Served(made), host, 0, backlog=512)
        port = server.sockets[0].getsockname()[1]
        results = await asyncio.gather(*(echo_once(host, port, b"n%d" % i) for i in range(200)))
        assert [r[0] for r in results] == [b"n%d" % i for i in range(200)]
        assert len(made) == 200
        # Each server-side peername is a client's own address, each client once.
        assert sorted(p[:2] for p, _ in made) == sorted(r[1][:2] for r in results)
        assert all(s[:2] == (host, port) for _, s in made)
        server.close()
        await server.wait_closed()

    with no_fd_leak(cloop):
        run(cloop, main())


def test_close_with_accepts_in_flight_serves_none_and_leaves_nothing_listening(cloop):
    async def main():
        made = []
        server = await cloop.create_server(lambda: Served(made), "127.0.0.1", 0)
        address = server.sockets[0].getsockname()
        await asyncio.sleep(0)
        # Connected (the kernel accepted them, or they wait in the backlog) before the loop runs again.
        clients = [blocking_connect(address) for _ in range(8)]
        server.close()
        await server.wait_closed()
        await asyncio.sleep(0.05)
        assert made == []
        for client in clients:
            assert gone_for_the_client(client)
            client.close()
        with pytest.raises(ConnectionRefusedError):
            blocking_connect(address).close()

    with no_fd_leak(cloop):
        run(cloop, main())


def test_start_serving_false_accepts_nothing_until_started(cloop):
    async def main():
        made = []
        server = await cloop.create_server(lambda: Served(made), "127.0.0.1", 0, start_serving=False)
        address = server.sockets[0].getsockname()
        with pytest.raises(ConnectionRefusedError):   # asyncio listens when serving starts
            blocking_connect(address)
        await asyncio.sleep(0.05)
        assert made == [] and not server.is_serving()
        await server.start_serving()
        client = blocking_connect(address)
        client.sendall(b"late")
        client.setblocking(False)
        got = await cloop.sock_recv(client, 4)
        assert got == b"late" and len(made) == 1
        client.close()
        server.close()
        await server.wait_closed()

    with no_fd_leak(cloop):
        run(cloop, main())


def test_pause_and_resume_while_an_accept_is_in_flight_serves_each_connection_once(cloop):
    if not hasattr(cloop, "_acceptors"):
        pytest.skip("zloop's acceptor")

    async def main():
        made = []
        server = await cloop.create_server(lambda: Served(made), "127.0.0.1", 0)
        address = server.sockets[0].getsockname()
        (acceptor,) = cloop._acceptors().values()
        for round_ in range(5):
            acceptor.stop()                  # what a pause after EMFILE does
            acceptor.start()                 # and the retry: before the stopped accept's end came
            got, _, _ = await echo_once(*address, b"r%d" % round_)
            assert got == b"r%d" % round_
        acceptor.stop()
        client = blocking_connect(address)   # waits in the backlog while paused
        await asyncio.sleep(0.05)
        assert len(made) == 5
        acceptor.start()
        client.sendall(b"resumed")
        client.setblocking(False)
        assert await cloop.sock_recv(client, 7) == b"resumed"
        assert len(made) == 6
        client.close()
        server.close()
        await server.wait_closed()

    with no_fd_leak(cloop):
        run(cloop, main())


def test_a_new_server_on_reused_fd_numbers_never_gets_the_old_ones_connections(cloop):
    async def main():
        for round_ in range(10):
            old_made, new_made = [], []
            old = await cloop.create_server(lambda: Served(old_made), "127.0.0.1", 0)
            old_fd = old.sockets[0].fileno()
            await asyncio.sleep(0)
            stale = blocking_connect(old.sockets[0].getsockname())   # accepted by the kernel, not yet served
            old.close()
            new = await cloop.create_server(lambda: Served(new_made), "127.0.0.1", 0)
            reused = new.sockets[0].fileno() == old_fd
            got, _, _ = await echo_once(*new.sockets[0].getsockname(), b"fresh")
            assert got == b"fresh"
            await asyncio.sleep(0.01)
            assert len(new_made) == 1, (round_, reused)
            assert old_made == []
            assert gone_for_the_client(stale)
            stale.close()
            new.close()
            await old.wait_closed()
            await new.wait_closed()

    with no_fd_leak(cloop):
        run(cloop, main())


@pytest.mark.skipif(sys.platform != "linux", reason="/proc/self/fd")
def test_closing_the_loop_with_a_connection_not_yet_served_closes_it(cloop):
    async def serve():
        server = await cloop.create_server(asyncio.Protocol, "127.0.0.1", 0)
        await asyncio.sleep(0)
        return server

    cloop.run_until_complete(asyncio.sleep(0))
    before = fd_count()
    server = cloop.run_until_complete(serve())
    client = blocking_connect(server.sockets[0].getsockname())   # the loop never runs again
    server.close()
    cloop.close()
    try:
        assert gone_for_the_client(client)
    finally:
        client.close()
    assert fd_count() <= before
