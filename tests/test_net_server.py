# tests/test_net_server.py — create_server and each of its parameters, and the Server it returns: sockets,
# close/wait_closed (per Python version), serve_forever, start_serving, async with, close_clients/abort_clients,
# and EMFILE on accept (in a child process with a lowered RLIMIT_NOFILE).

import asyncio
import errno
import json
import socket
import sys

import pytest

from net_helpers import (HAS_IPV6, INET_HOSTS, PY311, PY312, PY313, EchoServer, Recorder, echo_roundtrip,
                         no_fd_leak, requires_ipv6, run)


async def connect(loop, address):
    return await loop.create_connection(lambda: Recorder(loop), *address[:2])


async def roundtrip(loop, address, payload=b"ping"):
    transport, proto = await connect(loop, address)
    try:
        return await echo_roundtrip(transport, proto, payload)
    finally:
        transport.close()
        await proto.lost


# ---------------------------------------------------------------------- where it listens

@pytest.mark.parametrize("host", INET_HOSTS)
def test_create_server_on_one_host(loop, host):
    async def main():
        server = await loop.create_server(EchoServer, host, 0)
        assert len(server.sockets) == 1
        sock = server.sockets[0]
        assert isinstance(sock, asyncio.trsock.TransportSocket)
        assert sock.getsockname()[0] == host
        assert await roundtrip(loop, sock.getsockname()) == b"ping"
        server.close()
        await server.wait_closed()
    run(loop, main())


@requires_ipv6
def test_create_server_on_a_list_of_hosts(loop):
    async def main():
        server = await loop.create_server(EchoServer, ["127.0.0.1", "::1", "127.0.0.1"], 0)
        families = sorted(s.family for s in server.sockets)
        assert families == sorted([socket.AF_INET, socket.AF_INET6])  # the duplicate is bound once
        for sock in server.sockets:
            assert sock.family != socket.AF_INET6 or sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY)
            assert await roundtrip(loop, sock.getsockname()) == b"ping"
        server.close()
        await server.wait_closed()
    run(loop, main())


@pytest.mark.parametrize("host", [None, ""])
def test_create_server_on_all_interfaces(loop, host):
    async def main():
        server = await loop.create_server(EchoServer, host, 0)
        hosts = {s.getsockname()[0] for s in server.sockets}
        assert "0.0.0.0" in hosts
        if HAS_IPV6:
            assert "::" in hosts
        port = [s for s in server.sockets if s.family == socket.AF_INET][0].getsockname()[1]
        assert await roundtrip(loop, ("127.0.0.1", port)) == b"ping"
        server.close()
        await server.wait_closed()
    run(loop, main())


def test_create_server_on_a_given_socket(loop):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))

    async def main():
        server = await loop.create_server(EchoServer, sock=sock)
        assert server.sockets[0].fileno() == sock.fileno()
        assert sock.gettimeout() == 0
        assert await roundtrip(loop, sock.getsockname()) == b"ping"
        server.close()
        await server.wait_closed()
        assert sock.fileno() == -1  # closing the server closes its sockets
    run(loop, main())


def test_create_server_socket_options(loop):
    async def main():
        server = await loop.create_server(EchoServer, "127.0.0.1", 0)
        assert server.sockets[0].getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR)
        server.close()
        server = await loop.create_server(EchoServer, "127.0.0.1", 0, reuse_address=False)
        assert not server.sockets[0].getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR)
        server.close()
        first = await loop.create_server(EchoServer, "127.0.0.1", 0, reuse_port=True)
        port = first.sockets[0].getsockname()[1]
        second = await loop.create_server(EchoServer, "127.0.0.1", port, reuse_port=True)
        assert second.sockets[0].getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT)
        assert await roundtrip(loop, ("127.0.0.1", port)) == b"ping"
        first.close()
        second.close()
        await first.wait_closed()
        await second.wait_closed()
    run(loop, main())


@pytest.mark.skipif(not PY313, reason="keep_alive is a Python 3.13+ parameter")
def test_create_server_keep_alive(loop):
    async def main():
        server = await loop.create_server(EchoServer, "127.0.0.1", 0, keep_alive=True)
        assert server.sockets[0].getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)
        server.close()
    run(loop, main())


@pytest.mark.skipif(PY313, reason="keep_alive exists from Python 3.13 on")
def test_create_server_keep_alive_is_not_a_parameter_yet(loop):
    with pytest.raises(TypeError):
        run(loop, loop.create_server(EchoServer, "127.0.0.1", 0, keep_alive=True))


def test_create_server_address_in_use(loop):
    async def main():
        first = await loop.create_server(EchoServer, "127.0.0.1", 0)
        port = first.sockets[0].getsockname()[1]
        with pytest.raises(OSError, match="error while attempting to bind on address") as info:
            await loop.create_server(EchoServer, "127.0.0.1", port)
        assert info.value.errno == errno.EADDRINUSE
        first.close()
    with no_fd_leak(loop):
        run(loop, main())


def test_create_server_argument_errors(loop):
    async def main():
        with pytest.raises(TypeError, match="ssl argument must be an SSLContext"):
            await loop.create_server(EchoServer, "127.0.0.1", 0, ssl=True)
        with pytest.raises(ValueError, match="ssl_handshake_timeout is only meaningful with ssl"):
            await loop.create_server(EchoServer, "127.0.0.1", 0, ssl_handshake_timeout=1)
        if PY311:
            with pytest.raises(ValueError, match="ssl_shutdown_timeout is only meaningful with ssl"):
                await loop.create_server(EchoServer, "127.0.0.1", 0, ssl_shutdown_timeout=1)
        with socket.socket() as sock:
            with pytest.raises(ValueError, match="can not be specified at the same time"):
                await loop.create_server(EchoServer, "127.0.0.1", 0, sock=sock)
        with pytest.raises(ValueError, match="Neither host/port nor sock were specified"):
            await loop.create_server(EchoServer)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            with pytest.raises(ValueError, match="A Stream Socket was expected"):
                await loop.create_server(EchoServer, sock=udp)
        with pytest.raises(socket.gaierror):
            await loop.create_server(EchoServer, "no-such-host.invalid", 0)
        with pytest.raises(OverflowError):
            await loop.create_server(EchoServer, "127.0.0.1", 70000)
    with no_fd_leak(loop):
        run(loop, main())


# ---------------------------------------------------------------------- the Server object

def test_server_start_serving_later(loop):
    async def main():
        server = await loop.create_server(EchoServer, "127.0.0.1", 0, start_serving=False)
        assert not server.is_serving()
        address = server.sockets[0].getsockname()
        with pytest.raises(ConnectionRefusedError):  # bound, not listening yet
            await roundtrip(loop, address)
        await server.start_serving()
        await server.start_serving()  # a second call changes nothing
        assert server.is_serving()
        assert await roundtrip(loop, address) == b"ping"
        server.close()
        assert not server.is_serving()
        await server.wait_closed()
    run(loop, main())


def test_server_basics_and_async_with(loop):
    async def main():
        server = await loop.create_server(EchoServer, "127.0.0.1", 0)
        assert server.get_loop() is loop
        assert repr(server).startswith("<") and "sockets=" in repr(server)
        async with server:
            assert server.is_serving()
            address = server.sockets[0].getsockname()
        assert server.sockets == ()
        assert not server.is_serving()
        with pytest.raises(ConnectionRefusedError):
            await connect(loop, address)
        server.close()  # closing twice is fine
    run(loop, main())


def test_wait_closed_follows_the_python_version(loop):
    async def main():
        server = await loop.create_server(EchoServer, "127.0.0.1", 0)
        transport, proto = await connect(loop, server.sockets[0].getsockname())
        await echo_roundtrip(transport, proto, b"x")
        server.close()
        waiting = loop.create_task(server.wait_closed())
        await asyncio.sleep(0.05)
        # From Python 3.12 on, wait_closed() also waits for the connections to end; before, it returned.
        assert waiting.done() is (not PY312)
        transport.close()
        await proto.lost
        await asyncio.wait_for(waiting, 5)
        await server.wait_closed()
    run(loop, main())


def test_wait_closed_before_close(loop):
    async def main():
        server = await loop.create_server(EchoServer, "127.0.0.1", 0)
        waiting = loop.create_task(server.wait_closed())
        await asyncio.sleep(0.02)
        assert not waiting.done()
        server.close()
        await asyncio.wait_for(waiting, 5)
    run(loop, main())


def test_serve_forever(loop):
    async def main():
        server = await loop.create_server(EchoServer, "127.0.0.1", 0, start_serving=False)
        serving = loop.create_task(server.serve_forever())
        await asyncio.sleep(0.01)
        assert server.is_serving()
        with pytest.raises(RuntimeError, match="already being awaited"):
            await server.serve_forever()
        assert await roundtrip(loop, server.sockets[0].getsockname()) == b"ping"
        serving.cancel()
        with pytest.raises(asyncio.CancelledError):
            await serving
        assert not server.is_serving() and server.sockets == ()
        with pytest.raises(RuntimeError, match="is closed"):
            await server.serve_forever()
    run(loop, main())


def test_cancelled_serve_forever_closes_its_clients_from_3_14(loop):
    # asyncio 3.14+: cancelling serve_forever (Ctrl-C) closes the accepted connections, so that it ends although a
    # client hangs on; before, it closed only the listener and then waited for such a client forever.
    async def main():
        connected = loop.create_future()

        class Hanging(asyncio.Protocol):
            def connection_made(self, transport):
                connected.set_result(transport)

        server = await loop.create_server(Hanging, "127.0.0.1", 0, start_serving=False)
        serving = loop.create_task(server.serve_forever())
        await asyncio.sleep(0)   # serve_forever starts listening
        client = socket.create_connection(server.sockets[0].getsockname())
        try:
            transport = await connected
            serving.cancel()
            done, _ = await asyncio.wait([serving], timeout=2)
            return bool(done), transport.is_closing()
        finally:
            client.close()
            if not serving.done():
                await asyncio.wait([serving], timeout=5)
    closes = sys.version_info >= (3, 14)
    ends = closes or not PY312   # before 3.12, wait_closed() did not wait for the clients at all
    assert run(loop, main()) == (ends, closes)


def test_close_and_abort_clients(loop):
    async def main():
        server = await loop.create_server(EchoServer, "127.0.0.1", 0)
        if not hasattr(server, "close_clients"):
            pytest.skip("close_clients/abort_clients are Python 3.13+ in asyncio")
        address = server.sockets[0].getsockname()
        first = [await connect(loop, address) for _ in range(3)]
        for transport, proto in first:
            await echo_roundtrip(transport, proto, b"x")
        server.close_clients()
        for _, proto in first:
            await proto.lost
        second = [await connect(loop, address) for _ in range(3)]
        for transport, proto in second:
            await echo_roundtrip(transport, proto, b"y")
        server.abort_clients()
        for _, proto in second:
            await proto.lost
        server.close()
        await server.wait_closed()
    with no_fd_leak(loop):
        run(loop, main())


def test_closed_server_keeps_its_connections(loop):
    async def main():
        server = await loop.create_server(EchoServer, "127.0.0.1", 0)
        transport, proto = await connect(loop, server.sockets[0].getsockname())
        server.close()
        assert await echo_roundtrip(transport, proto, b"still here") == b"still here"
        transport.close()
        await proto.lost
        await server.wait_closed()
    run(loop, main())


def test_cancelled_wait_closed_and_serve_forever_leave_no_watcher(loop, backend):
    from net_helpers import accepts_in_ring, watched

    async def main():
        base = watched(loop)
        server = await loop.create_server(EchoServer, "127.0.0.1", 0, start_serving=False)
        serving = loop.create_task(server.serve_forever())
        await asyncio.sleep(0.01)
        assert watched(loop) == base + (0 if accepts_in_ring(backend) else 1)   # the listening socket's reader
        waiting = loop.create_task(server.wait_closed())
        await asyncio.sleep(0.01)
        waiting.cancel()
        serving.cancel()
        await asyncio.gather(waiting, serving, return_exceptions=True)
        assert watched(loop) == base
    with no_fd_leak(loop):
        run(loop, main())


def test_protocol_factory_errors_do_not_stop_the_server(loop):
    calls = []

    def factory():
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("factory failed")
        return EchoServer()

    async def main():
        server = await loop.create_server(factory, "127.0.0.1", 0)
        address = server.sockets[0].getsockname()
        transport, proto = await connect(loop, address)
        await proto.lost  # the first connection is dropped
        assert await roundtrip(loop, address) == b"ping"
        server.close()
        await server.wait_closed()
    with no_fd_leak(loop):
        run(loop, main())


# ---------------------------------------------------------------------- running out of fds

EMFILE_CHILD = r"""
import asyncio, json, os, resource, socket, sys
backend = sys.argv[1]
if backend == "asyncio":
    loop = asyncio.new_event_loop()
else:
    import zloop
    loop = zloop.new_event_loop(backend=backend)
reports = []
accepted = []

def handler(loop, context):
    exc = context.get("exception")
    reports.append({"message": context.get("message"), "errno": getattr(exc, "errno", None),
                    "socket": type(context.get("socket")).__name__})

class Closer(asyncio.Protocol):
    def connection_made(self, transport):
        accepted.append(1)
        transport.close()

async def main():
    loop.set_exception_handler(handler)
    server = await loop.create_server(Closer, "127.0.0.1", 0, backlog=50, start_serving=False)
    address = server.sockets[0].getsockname()
    clients = [socket.socket() for _ in range(8)]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    in_use = len(os.listdir("/proc/self/fd"))
    resource.setrlimit(resource.RLIMIT_NOFILE, (in_use + 1, hard))  # room for about one connection at a time
    # Serving starts under the limit: a multishot accept (uring's level 2) reads it when armed, and takes the
    # connections as they connect.
    await server.start_serving()
    for c in clients:
        c.connect(address)
    deadline = loop.time() + 20
    while len(accepted) < len(clients) and loop.time() < deadline:
        await asyncio.sleep(0.02)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    for c in clients:
        c.close()
    server.close()
    await server.wait_closed()
    print(json.dumps({"reports": reports, "accepted": len(accepted), "clients": len(clients)}))

loop.run_until_complete(main())
loop.close()
"""


def test_emfile_on_accept_is_reported_and_accepting_resumes(backend, python_run):
    result = python_run(EMFILE_CHILD, backend, timeout=60)
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome["accepted"] == outcome["clients"], outcome  # every connection was served in the end
    assert outcome["reports"], "EMFILE was never reported"
    for report in outcome["reports"]:
        assert report == {"message": "socket.accept() out of system resource", "errno": errno.EMFILE,
                          "socket": "TransportSocket"}


def test_stale_accept_retry_after_close_is_harmless(loop):
    # A server closed while accepting is paused (after EMFILE) must not start watching its closed socket.
    async def main():
        server = await loop.create_server(EchoServer, "127.0.0.1", 0)
        sock = server._sockets[0]
        if not hasattr(server, "_accept_retries"):
            pytest.skip("zloop's Server")
        loop._pause_accepting(OSError(errno.EMFILE, "test"), EchoServer, sock, None, server, 100, None, None)
        server.close()
        await asyncio.sleep(0)
        assert not server._accept_retries
    loop.set_exception_handler(lambda lp, ctx: None)
    run(loop, main())


@pytest.mark.zloop_only  # asyncio leaves the new server listening when create_server() is cancelled
@pytest.mark.parametrize("unix", [False, True])
def test_cancelled_create_server_leaves_nothing_listening(loop, tmp_path, unix):
    from net_helpers import watched

    async def main():
        base = watched(loop)
        if unix:
            creating = loop.create_task(loop.create_unix_server(EchoServer, str(tmp_path / "s")))
        else:
            creating = loop.create_task(loop.create_server(EchoServer, "127.0.0.1", 0))
        await asyncio.sleep(0)  # create_server has bound, listened and yielded once
        creating.cancel()
        with pytest.raises(asyncio.CancelledError):
            await creating
        assert watched(loop) == base
    with no_fd_leak(loop):
        run(loop, main())


@pytest.mark.skipif(sys.platform != "linux", reason="Linux")
def test_server_does_not_leak_fds(loop):
    async def main():
        for _ in range(10):
            server = await loop.create_server(EchoServer, "127.0.0.1", 0)
            assert await roundtrip(loop, server.sockets[0].getsockname()) == b"ping"
            server.close()
            await server.wait_closed()
    with no_fd_leak(loop):
        run(loop, main())
