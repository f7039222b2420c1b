"""The ASGI app bench/http_bench.py serves with uvicorn: plain ASGI, no framework, so the loop and the HTTP parser are
most of what a request costs.

    GET /plaintext  -> "Hello, World!" (text/plain)
    GET /json       -> {"message": "Hello, World!"} (application/json, encoded per request)
    GET /loop       -> the class of the running event loop and, for zloop, its backend and whether loop.stats()
                       times (the harness checks them)
"""

import asyncio
import json

PLAINTEXT = b"Hello, World!"
PLAIN_HEADERS = [(b"content-type", b"text/plain"), (b"content-length", str(len(PLAINTEXT)).encode())]


def _loop_description():
    loop = asyncio.get_running_loop()
    cls = type(loop)
    get_backend = getattr(loop, "get_backend", None)
    stats = getattr(loop, "stats", None)
    return {"loop": f"{cls.__module__}.{cls.__qualname__}",
            "backend": get_backend() if get_backend is not None else None,
            "stats_timing": stats()["timing"] if stats is not None else None}


async def _respond(send, body, content_type, status=200):
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    path = scope["path"]
    if path == "/plaintext":
        await send({"type": "http.response.start", "status": 200, "headers": PLAIN_HEADERS})
        await send({"type": "http.response.body", "body": PLAINTEXT})
    elif path == "/json":
        await _respond(send, json.dumps({"message": "Hello, World!"}).encode(), b"application/json")
    elif path == "/loop":
        await _respond(send, json.dumps(_loop_description()).encode(), b"application/json")
    else:
        await _respond(send, b"not found", b"text/plain", 404)
