"""A client for tests/test_servers.py, itself on zloop: python client.py aiohttp|httpx URL [CAFILE] — GET /, the
chunked GET /stream, and (aiohttp) a WebSocket exchange on /ws; prints what it got as JSON. An https URL is verified
against CAFILE."""

import asyncio
import json
import ssl
import sys

import zloop
from asgi_app import loop_info

MESSAGES = ["one", "two", "three"]


async def with_aiohttp(url, context):
    import aiohttp
    result = {"client": loop_info()}
    connector = aiohttp.TCPConnector(ssl=context) if context else None
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30), connector=connector) as session:
        async with session.get(url + "/") as response:
            result["server"] = await response.json()
        async with session.get(url + "/stream") as response:
            result["stream"] = [chunk.decode() async for chunk in response.content.iter_any()]
        async with session.ws_connect(url + "/ws") as ws:
            result["ws"] = []
            for text in MESSAGES:
                await ws.send_str(text)
                result["ws"].append((await ws.receive(timeout=10)).data)
    return result


async def with_httpx(url, context):
    import httpx
    result = {"client": loop_info()}
    async with httpx.AsyncClient(timeout=30, verify=context or True) as client:
        result["server"] = (await client.get(url + "/")).json()
        async with client.stream("GET", url + "/stream") as response:
            result["stream"] = [chunk async for chunk in response.aiter_text()]
    return result


if __name__ == "__main__":
    client = {"aiohttp": with_aiohttp, "httpx": with_httpx}[sys.argv[1]]
    context = ssl.create_default_context(cafile=sys.argv[3]) if len(sys.argv) > 3 else None
    print(json.dumps(zloop.run(client(sys.argv[2], context))))
