"""An aiohttp server for tests/test_servers.py, the same routes as asgi_app, on the listening socket FD:

    python aiohttp_server.py FD run_app    web.run_app(app, sock=..., loop=zloop.new_event_loop())
    python aiohttp_server.py FD runner     asyncio.Runner(loop_factory=zloop.new_event_loop), AppRunner + SockSite
    python -m zloop run aiohttp_server.py FD policy     web.run_app(app, sock=...) on the loop asyncio gives it

CERTFILE KEYFILE after the mode: over TLS (ssl_context=).
"""

import asyncio
import signal
import socket
import ssl
import sys

from aiohttp import WSMsgType, web

import zloop
from asgi_app import CHUNKS, loop_info


async def index(request):
    return web.json_response(loop_info())


async def stream(request):
    response = web.StreamResponse(headers={"content-type": "text/plain"})
    await response.prepare(request)
    for i in range(CHUNKS):
        await asyncio.sleep(0.01)
        await response.write(f"chunk {i}\n".encode())
    await response.write_eof()
    return response


async def ws(request):
    socket_ = web.WebSocketResponse()
    await socket_.prepare(request)
    async for message in socket_:
        if message.type == WSMsgType.TEXT:
            await socket_.send_str("echo:" + message.data)
    return socket_


def make_app():
    app = web.Application()
    app.add_routes([web.get("/", index), web.get("/stream", stream), web.get("/ws", ws)])
    return app


async def serve_until_sigterm(sock, context):
    runner = web.AppRunner(make_app())
    await runner.setup()
    await web.SockSite(runner, sock, ssl_context=context).start()
    stop = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set_result, None)
    await stop
    await runner.cleanup()


def main():
    sock = socket.socket(fileno=int(sys.argv[1]))
    mode = sys.argv[2]
    context = None
    if len(sys.argv) > 4:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(sys.argv[3], sys.argv[4])
    if mode == "run_app":
        web.run_app(make_app(), sock=sock, loop=zloop.new_event_loop(), print=None, ssl_context=context)
    elif mode == "runner":
        with asyncio.Runner(loop_factory=zloop.new_event_loop) as runner:
            runner.run(serve_until_sigterm(sock, context))
    elif mode == "policy":
        web.run_app(make_app(), sock=sock, print=None, ssl_context=context)
    else:
        sys.exit(f"unknown mode {mode!r}: run_app, runner or policy")


if __name__ == "__main__":
    main()
