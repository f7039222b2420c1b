# tests/test_net_accept.py — connections a server accepts (in C on zloop): what get_extra_info() gives for each
# address family, also when first asked after the connection is gone; the contexts the protocol factory and the
# protocol run in; a factory raising SystemExit.

import asyncio
import contextvars
import os
import socket
import tempfile

import pytest

from net_helpers import HAS_IPV6, Recorder, no_fd_leak, run

var = contextvars.ContextVar("var", default="unset")


class Keeper(asyncio.Protocol):
    """Records its transport and the extra info it was asked for at connection_made."""

    def __init__(self, loop, made, ask=True):
        self.loop = loop
        self.made = made
        self.ask = ask
        self.lost = loop.create_future()

    def connection_made(self, transport):
        self.transport = transport
        info = {name: transport.get_extra_info(name) for name in ("peername", "sockname")} if self.ask else None
        self.made.put_nowait((self, info))

    def connection_lost(self, exc):
        self.lost.set_result(exc)


async def accept_one(loop, family, address, ask=True):
    """Serve on address, connect one client socket; (server-side protocol, its info, the client socket, server)."""
    made = asyncio.Queue()
    if family == socket.AF_UNIX:
        server = await loop.create_unix_server(lambda: Keeper(loop, made, ask), address)
    else:
        server = await loop.create_server(lambda: Keeper(loop, made, ask), address, 0, family=family)
    listen_address = server.sockets[0].getsockname()
    client = socket.socket(family, socket.SOCK_STREAM)
    client.setblocking(False)
    await loop.sock_connect(client, listen_address)
    proto, info = await asyncio.wait_for(made.get(), 10)
    return proto, info, client, server


def families():
    # A wildcard listener's connections each have their own address; the others share the listener's.
    out = [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET, "0.0.0.0")]
    if HAS_IPV6:
        out += [(socket.AF_INET6, "::1"), (socket.AF_INET6, "::")]
    out.append((socket.AF_UNIX, None))
    return out


@pytest.mark.parametrize("family,host", families(), ids=lambda v: getattr(v, "name", str(v) or "path"))
@pytest.mark.parametrize("when", ["at_connection_made", "after_connection_lost"])
def test_extra_info_of_accepted_connections(loop, family, host, when):
    async def main(path):
        address = path if family == socket.AF_UNIX else host
        proto, info, client, server = await accept_one(loop, family, address, ask=when == "at_connection_made")
        expected_peer, expected_local = client.getsockname(), client.getpeername()
        if when == "after_connection_lost":
            client.close()
            await asyncio.wait_for(proto.lost, 10)
            info = {name: proto.transport.get_extra_info(name) for name in ("peername", "sockname")}
        assert info == {"peername": expected_peer, "sockname": expected_local}
        trsock = proto.transport.get_extra_info("socket")
        assert isinstance(trsock, asyncio.trsock.TransportSocket)
        assert (trsock.family, trsock.type) == (family, socket.SOCK_STREAM)
        if when == "at_connection_made":
            assert trsock.fileno() >= 0 and trsock.getpeername() == expected_peer
            client.close()
            await asyncio.wait_for(proto.lost, 10)
        else:
            assert trsock.fileno() == -1   # closed, as asyncio's socket is once the connection is lost
        assert proto.transport.get_extra_info("socket") is trsock
        server.close()
        await server.wait_closed()

    with tempfile.TemporaryDirectory(prefix="zloop-accept-") as tmp, no_fd_leak(loop):
        run(loop, main(os.path.join(tmp, "s.sock")))


def test_socket_asked_for_while_open_is_the_connection(loop):
    async def main():
        proto, _, client, server = await accept_one(loop, socket.AF_INET, "127.0.0.1", ask=False)
        trsock = proto.transport.get_extra_info("socket")
        assert trsock.getsockname() == client.getpeername()
        proto.transport.write(b"over the same fd")
        assert await asyncio.wait_for(loop.sock_recv(client, 100), 10) == b"over the same fd"
        proto.transport.close()
        await asyncio.wait_for(proto.lost, 10)
        assert await asyncio.wait_for(loop.sock_recv(client, 100), 10) == b""
        client.close()
        server.close()
        await server.wait_closed()

    with no_fd_leak(loop):
        run(loop, main())


def test_factory_and_protocol_run_in_copies_of_the_serving_context(loop):
    seen = []

    class Probe(asyncio.Protocol):
        def __init__(self):
            seen.append(("factory", var.get()))
            var.set(f"conn{len(seen)}")

        def connection_made(self, transport):
            seen.append(("made", var.get()))
            self.transport = transport

        def data_received(self, data):
            seen.append(("data", var.get()))
            self.transport.close()

    async def main():
        var.set("serving")
        server = await loop.create_server(Probe, "127.0.0.1", 0)
        var.set("changed after serving started")
        address = server.sockets[0].getsockname()
        for _ in range(2):
            transport, proto = await loop.create_connection(lambda: Recorder(loop), *address)
            transport.write(b"x")
            await asyncio.wait_for(proto.lost, 10)
        server.close()
        await server.wait_closed()

    with no_fd_leak(loop):
        run(loop, main())
    factories = [value for where, value in seen if where == "factory"]
    # Each connection's factory sees the context serving started in, not what another connection's set.
    assert factories == ["serving", "serving"]
    assert [value for where, value in seen if where == "data"] == ["conn1", "conn4"]


# Stock asyncio stops here too (SystemExit out of its accept task), but on 3.11 leaves the interpreter's AST
# recursion counter unbalanced, so a later compile in the same process fails: zloop only.
@pytest.mark.zloop_only
def test_system_exit_in_the_protocol_factory_stops_the_loop(loop):
    def factory():
        raise SystemExit(3)

    async def main():
        server = await loop.create_server(factory, "127.0.0.1", 0)
        client = socket.create_connection(server.sockets[0].getsockname())
        try:
            await asyncio.sleep(10)
        finally:
            client.close()
            server.close()

    with pytest.raises(SystemExit):
        loop.run_until_complete(asyncio.wait_for(main(), 20))
    run(loop, asyncio.sleep(0))   # the loop is usable afterwards
