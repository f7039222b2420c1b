"""An AnyIO program for tests/test_servers.py on a zloop loop (anyio.run's loop_factory backend option): a TCP
echo server and client in one task group, a worker thread, a subprocess, a timeout; prints what it saw as JSON."""

import json
import sys

import anyio

import zloop
from asgi_app import loop_info


async def main():
    result = {"loop": loop_info()}

    async def handle(stream):
        async with stream:
            async for data in stream:
                await stream.send(data.upper())

    async with anyio.create_task_group() as group:
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
        port = listener.extra(anyio.abc.SocketAttribute.local_port)
        group.start_soon(listener.serve, handle)
        replies = []
        with anyio.fail_after(20):
            async with await anyio.connect_tcp("127.0.0.1", port) as client:
                for word in (b"alpha", b"beta"):
                    await client.send(word)
                    replies.append((await client.receive()).decode())
        result["echo"] = replies
        result["thread"] = await anyio.to_thread.run_sync(sum, [1, 2, 3])
        done = await anyio.run_process([sys.executable, "-c", "print('from child')"])
        result["process"] = done.stdout.decode().strip()
        with anyio.move_on_after(0.05) as scope:
            await anyio.sleep(10)
        result["timed_out"] = scope.cancelled_caught
        group.cancel_scope.cancel()
    return result


if __name__ == "__main__":
    print(json.dumps(anyio.run(main, backend="asyncio", backend_options={"loop_factory": zloop.new_event_loop})))
