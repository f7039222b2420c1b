"""A FastAPI app for tests/test_servers.py (served by uvicorn): the same routes as asgi_app."""

import asyncio

from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from fastapi.responses import StreamingResponse

from asgi_app import CHUNKS, loop_info

app = FastAPI()


@app.get("/")
async def index():
    return loop_info()


@app.get("/stream")
async def stream():
    async def chunks():
        for i in range(CHUNKS):
            await asyncio.sleep(0.01)
            yield f"chunk {i}\n"
    return StreamingResponse(chunks(), media_type="text/plain")


@app.websocket("/ws")
async def ws(websocket: WebSocket):
    await websocket.accept()
    try:
        while True:
            await websocket.send_text("echo:" + await websocket.receive_text())
    except WebSocketDisconnect:
        pass
