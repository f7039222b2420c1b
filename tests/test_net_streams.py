# tests/test_net_streams.py — asyncio's streams API (open_connection, start_server and the Unix variants, TLS,
# StreamWriter.start_tls, drain, wait_closed) running unchanged on the loop.

import asyncio
import os
import sys

import pytest

from net_helpers import INET_HOSTS, client_context, no_fd_leak, server_context

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def run_main(loop, coro, timeout=30):
    asyncio.set_event_loop(loop)
    return loop.run_until_complete(asyncio.wait_for(coro, timeout))


async def echo_lines(reader, writer):
    try:
        while True:
            line = await reader.readline()
            if not line:
                break
            writer.write(line.upper())
            await writer.drain()
    finally:
        writer.close()


@pytest.mark.parametrize("host", INET_HOSTS)
def test_streams_tcp(loop, host):
    async def main():
        server = await asyncio.start_server(echo_lines, host, 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection(host, port)
        for word in (b"alpha", b"beta", b"gamma"):
            writer.write(word + b"\n")
            assert await reader.readline() == word.upper() + b"\n"
        writer.write_eof()
        assert await reader.read() == b""
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()
    with no_fd_leak(loop):
        run_main(loop, main())


def test_streams_unix(loop, tmp_path):
    path = str(tmp_path / "streams.sock")

    async def main():
        server = await asyncio.start_unix_server(echo_lines, path)
        reader, writer = await asyncio.open_unix_connection(path)
        writer.write(b"unix\n")
        assert await reader.readline() == b"UNIX\n"
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()
    run_main(loop, main())


def test_streams_tls(loop):
    async def main():
        server = await asyncio.start_server(echo_lines, "127.0.0.1", 0, ssl=server_context())
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_context(),
                                                       server_hostname="localhost")
        writer.write(b"secure\n")
        assert await reader.readline() == b"SECURE\n"
        assert writer.get_extra_info("peercert")
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()
    run_main(loop, main())


@pytest.mark.skipif(sys.version_info < (3, 11), reason="StreamWriter.start_tls is Python 3.11+")
def test_streams_start_tls(loop):
    async def handle(reader, writer):
        assert await reader.readline() == b"STARTTLS\n"
        writer.write(b"GO\n")
        await writer.drain()
        await writer.start_tls(server_context())
        await echo_lines(reader, writer)

    async def main():
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname())
        writer.write(b"STARTTLS\n")
        assert await reader.readline() == b"GO\n"
        await writer.start_tls(client_context(), server_hostname="localhost")
        writer.write(b"upgraded\n")
        assert await reader.readline() == b"UPGRADED\n"
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()
    run_main(loop, main())


def test_streams_big_payload_with_drain(loop):
    payload = os.urandom(8 * 1024 * 1024)

    async def sink(reader, writer):
        data = await reader.read()
        writer.write(len(data).to_bytes(8, "big"))
        await writer.drain()
        writer.close()

    async def main():
        server = await asyncio.start_server(sink, "127.0.0.1", 0)
        reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname())
        view = memoryview(payload)
        for start in range(0, len(payload), 65536):
            writer.write(view[start:start + 65536])
            await writer.drain()
        writer.write_eof()
        assert int.from_bytes(await reader.readexactly(8), "big") == len(payload)
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()
    run_main(loop, main(), timeout=60)


def test_streams_server_as_context_manager_and_serve_forever(loop):
    async def main():
        server = await asyncio.start_server(echo_lines, "127.0.0.1", 0, start_serving=False)
        async with server:
            serving = asyncio.ensure_future(server.serve_forever())
            await asyncio.sleep(0)  # serve_forever() starts listening when it first runs
            reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname())
            writer.write(b"ctx\n")
            assert await reader.readline() == b"CTX\n"
            writer.close()
            await writer.wait_closed()
            serving.cancel()
            with pytest.raises(asyncio.CancelledError):
                await serving
        assert not server.is_serving()
    run_main(loop, main())


def test_streams_connection_refused(loop):
    from net_helpers import closed_port

    async def main():
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", closed_port())
    run_main(loop, main())


def test_streams_many_clients(loop):
    async def client(port, i):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"client %d\n" % i)
        line = await reader.readline()
        writer.close()
        await writer.wait_closed()
        return line

    async def main():
        server = await asyncio.start_server(echo_lines, "127.0.0.1", 0, backlog=300)
        port = server.sockets[0].getsockname()[1]
        lines = await asyncio.gather(*[client(port, i) for i in range(200)])
        assert lines == [b"CLIENT %d\n" % i for i in range(200)]
        server.close()
        await server.wait_closed()
    with no_fd_leak(loop):
        run_main(loop, main(), timeout=60)
