# tests/test_framework_regressions.py — zloop-only failures found by running the uvicorn, AnyIO and aiohttp test
# suites on zloop (tests/frameworks/run.py), each reduced to what the framework relied on, on every backend.

import asyncio
import contextvars
import gc
import signal
import socket
import threading
from unittest import mock

import pytest

from net_helpers import closed_port, run

CONTEXT_VAR = contextvars.ContextVar("zloop_framework_regressions", default="unset")


class Capture(asyncio.Protocol):
    """Records what the context variable holds in each protocol callback."""

    def __init__(self, loop):
        self.seen = {}
        self.got_data = loop.create_future()

    def connection_made(self, transport):
        self.transport = transport
        self.seen["connection_made"] = CONTEXT_VAR.get()

    def data_received(self, data):
        self.seen["data_received"] = CONTEXT_VAR.get()
        if not self.got_data.done():
            self.got_data.set_result(data)


# ---------------------------------------------------------------------- fixed in zloop's Python package

def test_failed_connect_leaves_no_reference_cycle(loop):
    # AnyIO test_happy_eyeballs_refcycles: the connect error must not be kept alive by the list create_connection
    # gathered the errors in (asyncio clears it, gh-124859), or every failed connect leaks until a gc pass.
    async def connect_error():
        try:
            await loop.create_connection(asyncio.Protocol, "127.0.0.1", closed_port())
        except OSError as exc:
            return exc
        raise AssertionError("the connection to a closed port succeeded")

    exc = run(loop, connect_error())
    holders = [ref for ref in gc.get_referrers(exc) if isinstance(ref, list)]
    assert holders == []


# ---------------------------------------------------------------------- fixed in the C core and _loop.py

def test_protocol_callbacks_run_in_the_context_of_the_transport(loop):
    # uvicorn test_contextvars_preserved_by_default: asyncio registers a transport's reader (and so calls
    # data_received) in a copy of the context current when the transport was made, server and client side.

    async def exchange():
        CONTEXT_VAR.set("outer")
        server_side = []

        def accepted():
            server_side.append(Capture(loop))
            return server_side[-1]

        server = await loop.create_server(accepted, "127.0.0.1", 0)
        transport, client = await loop.create_connection(lambda: Capture(loop),
                                                         *server.sockets[0].getsockname()[:2])
        CONTEXT_VAR.set("changed after connecting")
        transport.write(b"ping")
        await server_side[0].got_data
        server_side[0].transport.write(b"pong")
        await client.got_data
        transport.close()
        server.close()
        await server.wait_closed()
        return server_side[0].seen, client.seen

    server_seen, client_seen = run(loop, exchange())
    assert server_seen == {"connection_made": "outer", "data_received": "outer"}
    assert client_seen == {"connection_made": "outer", "data_received": "outer"}


def test_transport_method_can_be_patched_on_the_instance(loop):
    # uvicorn test_server_keepalive_ping_timeout, aiohttp test_heartbeat_connection_closed (client and server):
    # mock.patch.object(transport, "write", ...) needs an instance __dict__, as asyncio's transports have.

    async def patch_write():
        a, b = socket.socketpair()
        with b:
            transport, _ = await loop.create_connection(asyncio.Protocol, sock=a)
            try:
                with mock.patch.object(transport, "write", side_effect=ConnectionResetError) as write:
                    with pytest.raises(ConnectionResetError):
                        transport.write(b"x")
                assert write.call_args_list == [mock.call(b"x")]
                transport.write(b"y")  # the real method again
                b.setblocking(False)  # read through the loop: a completion backend sends at its next iteration
                assert await asyncio.wait_for(loop.sock_recv(b, 1), 5) == b"y"
            finally:
                transport.close()
                await asyncio.sleep(0)

    run(loop, patch_write())


def test_remove_reader_of_a_socket_closed_since(loop):
    # AnyIO's UNIX socket streams close the socket, then remove_reader(sock) in a done callback: asyncio's
    # selector finds the registration by the object when fileno() is -1; zloop raised ValueError.
    a, b = socket.socketpair()
    with b:
        loop.add_reader(a, lambda: None)
        a.close()
        assert loop.remove_reader(a) is True
    c, d = socket.socketpair()
    with c, d:
        loop.add_writer(c, lambda: None)
        c.close()
        assert loop.remove_writer(c) is True
    with pytest.raises(ValueError):
        loop.remove_reader(a)  # not registered any more, and closed: nothing to find


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(), reason="signals need the main thread")
def test_wakeup_fd_not_left_behind_by_a_later_run(loop):
    # aiohttp run_app: the signal handlers are added in one run_until_complete and removed in the next one; the
    # wakeup fd must not stay set to the loop's socket once the loop is closed (zloop put it back after the second
    # run, and the next loop's run_forever then failed with EBADF restoring it).

    async def add():
        loop.add_signal_handler(signal.SIGUSR1, lambda: None)

    async def remove():
        loop.remove_signal_handler(signal.SIGUSR1)

    before = signal.set_wakeup_fd(-1)
    try:
        run(loop, add())
        run(loop, remove())
        loop.close()
        assert signal.set_wakeup_fd(-1) == -1
    finally:
        signal.set_wakeup_fd(before)
