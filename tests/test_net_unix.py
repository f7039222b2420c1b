# tests/test_net_unix.py — Unix stream sockets: create_unix_server/create_unix_connection with paths (str, bytes,
# pathlib), the abstract namespace, given sockets, stale socket files, cleanup_socket, and argument errors.

import asyncio
import os
import pathlib
import socket
import stat
import uuid

import pytest

from net_helpers import PY311, PY313, EchoServer, Recorder, echo_roundtrip, no_fd_leak, run


async def unix_roundtrip(loop, path, payload=b"unix"):
    transport, proto = await loop.create_unix_connection(lambda: Recorder(loop), path)
    try:
        return await echo_roundtrip(transport, proto, payload)
    finally:
        transport.close()
        await proto.lost


@pytest.mark.parametrize("kind", ["str", "bytes", "pathlib"])
def test_unix_echo_with_path_types(loop, tmp_path, kind):
    path = tmp_path / "sock"
    given = {"str": str(path), "bytes": os.fsencode(str(path)), "pathlib": pathlib.Path(path)}[kind]

    async def main():
        server = await loop.create_unix_server(EchoServer, given)
        assert stat.S_ISSOCK(os.stat(path).st_mode)
        sock = server.sockets[0]
        assert isinstance(sock, asyncio.trsock.TransportSocket) and sock.family == socket.AF_UNIX
        assert await unix_roundtrip(loop, given) == b"unix"
        server.close()
        await server.wait_closed()
    run(loop, main())


@pytest.mark.parametrize("as_bytes", [False, True])
def test_unix_abstract_namespace(loop, as_bytes):
    name = "\0zloop-test-" + uuid.uuid4().hex
    address = name.encode() if as_bytes else name

    async def main():
        server = await loop.create_unix_server(EchoServer, address)
        assert await unix_roundtrip(loop, address) == b"unix"
        server.close()
        await server.wait_closed()
    run(loop, main())


def test_unix_extra_info(loop, tmp_path):
    path = str(tmp_path / "sock")

    async def main():
        server = await loop.create_unix_server(EchoServer, path)
        transport, proto = await loop.create_unix_connection(lambda: Recorder(loop), path)
        assert transport.get_extra_info("peername") == path
        assert transport.get_extra_info("socket").family == socket.AF_UNIX
        transport.close()
        await proto.lost
        server.close()
        await server.wait_closed()
    run(loop, main())


def test_unix_given_sockets(loop, tmp_path):
    path = str(tmp_path / "sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)

    async def main():
        server = await loop.create_unix_server(EchoServer, sock=listener)
        raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        raw.connect(path)
        transport, proto = await loop.create_unix_connection(lambda: Recorder(loop), sock=raw)
        assert await echo_roundtrip(transport, proto, b"given") == b"given"
        transport.close()
        await proto.lost
        server.close()
        await server.wait_closed()
    run(loop, main())


def test_stale_socket_file_is_replaced(loop, tmp_path):
    path = str(tmp_path / "sock")
    old = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old.bind(path)
    old.close()  # leaves the socket file behind

    async def main():
        server = await loop.create_unix_server(EchoServer, path)
        assert await unix_roundtrip(loop, path) == b"unix"
        server.close()
        await server.wait_closed()
    run(loop, main())


def test_a_regular_file_is_not_removed(loop, tmp_path):
    path = tmp_path / "file"
    path.write_text("keep me")
    with pytest.raises(OSError, match="is already in use"):
        run(loop, loop.create_unix_server(EchoServer, str(path)))
    assert path.read_text() == "keep me"


def test_socket_file_after_close_follows_the_python_version(loop, tmp_path):
    path = tmp_path / "sock"

    async def main():
        server = await loop.create_unix_server(EchoServer, str(path))
        server.close()
        await server.wait_closed()
    run(loop, main())
    # Python 3.13 removes the file (cleanup_socket=True by default); earlier versions leave it.
    assert path.exists() is (not PY313)


@pytest.mark.skipif(not PY313, reason="cleanup_socket is a Python 3.13+ parameter")
def test_cleanup_socket_false_keeps_the_file(loop, tmp_path):
    path = tmp_path / "sock"

    async def main():
        server = await loop.create_unix_server(EchoServer, str(path), cleanup_socket=False)
        server.close()
        await server.wait_closed()
    run(loop, main())
    assert path.exists()


@pytest.mark.skipif(not PY313, reason="cleanup_socket is a Python 3.13+ parameter")
def test_cleanup_socket_leaves_a_replaced_file(loop, tmp_path):
    path = tmp_path / "sock"

    async def main():
        server = await loop.create_unix_server(EchoServer, str(path))
        os.unlink(path)
        path.write_text("someone else's")
        server.close()
        await server.wait_closed()
    run(loop, main())
    assert path.read_text() == "someone else's"


@pytest.mark.skipif(PY313, reason="cleanup_socket exists from Python 3.13 on")
def test_cleanup_socket_is_not_a_parameter_yet(loop, tmp_path):
    with pytest.raises(TypeError):
        run(loop, loop.create_unix_server(EchoServer, str(tmp_path / "s"), cleanup_socket=False))


def test_unix_connection_errors(loop, tmp_path):
    async def main():
        with pytest.raises(FileNotFoundError):
            await loop.create_unix_connection(asyncio.Protocol, str(tmp_path / "missing"))
        stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        stale.bind(str(tmp_path / "stale"))
        stale.close()
        with pytest.raises(ConnectionRefusedError):
            await loop.create_unix_connection(asyncio.Protocol, str(tmp_path / "stale"))
    with no_fd_leak(loop):
        run(loop, main())


def test_unix_argument_errors(loop, tmp_path):
    path = str(tmp_path / "sock")

    async def main():
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            with pytest.raises(ValueError, match="can not be specified at the same time"):
                await loop.create_unix_connection(asyncio.Protocol, path, sock=sock)
            with pytest.raises(ValueError, match="can not be specified at the same time"):
                await loop.create_unix_server(EchoServer, path, sock=sock)
        with pytest.raises(ValueError, match="no path and sock were specified"):
            await loop.create_unix_connection(asyncio.Protocol)
        with pytest.raises(ValueError, match="path was not specified, and no sock specified"):
            await loop.create_unix_server(EchoServer)
        with socket.socket() as tcp:
            with pytest.raises(ValueError, match="A UNIX Domain Stream Socket was expected"):
                await loop.create_unix_connection(asyncio.Protocol, sock=tcp)
            with pytest.raises(ValueError, match="A UNIX Domain Stream Socket was expected"):
                await loop.create_unix_server(EchoServer, sock=tcp)
        with pytest.raises(ValueError, match="you have to pass server_hostname when using ssl"):
            await loop.create_unix_connection(asyncio.Protocol, path, ssl=True)
        with pytest.raises(ValueError, match="server_hostname is only meaningful with ssl"):
            await loop.create_unix_connection(asyncio.Protocol, path, server_hostname="x")
        with pytest.raises(ValueError, match="ssl_handshake_timeout is only meaningful with ssl"):
            await loop.create_unix_connection(asyncio.Protocol, path, ssl_handshake_timeout=1)
        with pytest.raises(TypeError, match="ssl argument must be an SSLContext"):
            await loop.create_unix_server(EchoServer, path, ssl=True)
        with pytest.raises(ValueError, match="ssl_handshake_timeout is only meaningful with ssl"):
            await loop.create_unix_server(EchoServer, path, ssl_handshake_timeout=1)
        if PY311:
            with pytest.raises(ValueError, match="ssl_shutdown_timeout is only meaningful with ssl"):
                await loop.create_unix_server(EchoServer, path, ssl_shutdown_timeout=1)
    with no_fd_leak(loop):
        run(loop, main())


def test_unix_big_transfer_and_half_close(loop, tmp_path):
    path = str(tmp_path / "sock")
    payload = os.urandom(10 * 1024 * 1024)

    async def main():
        server = await loop.create_unix_server(EchoServer, path)
        transport, proto = await loop.create_unix_connection(lambda: Recorder(loop), path)
        transport.write(payload)
        transport.write_eof()
        data = await proto.receive(len(payload))
        await proto.lost  # the server's protocol returns False from eof_received: it closes
        server.close()
        await server.wait_closed()
        return data
    assert run(loop, main(), timeout=60) == payload


def test_unix_many_connections_leak_no_fd(loop, tmp_path):
    path = str(tmp_path / "sock")

    async def main():
        server = await loop.create_unix_server(EchoServer, path)
        results = await asyncio.gather(*[unix_roundtrip(loop, path, b"%d" % i) for i in range(100)])
        assert results == [b"%d" % i for i in range(100)]
        server.close()
        await server.wait_closed()
    with no_fd_leak(loop):
        run(loop, main(), timeout=30)
