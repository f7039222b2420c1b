"""A plain ASGI app for tests/test_servers.py, served by uvicorn and Hypercorn: GET / says which loop serves it,
GET /stream sends a body in 5 chunks, /ws echoes WebSocket text messages."""

import asyncio
import json

CHUNKS = 5


def loop_info():
    loop = asyncio.get_running_loop()
    return [type(loop).__module__, loop.get_backend() if hasattr(loop, "get_backend") else None]


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    elif scope["type"] == "websocket":
        await receive()   # websocket.connect
        await send({"type": "websocket.accept"})
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            await send({"type": "websocket.send", "text": "echo:" + message["text"]})
    elif scope["path"] == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        for i in range(CHUNKS):
            await asyncio.sleep(0.01)
            await send({"type": "http.response.body", "body": f"chunk {i}\n".encode(), "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    else:
        body = json.dumps(loop_info()).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})
