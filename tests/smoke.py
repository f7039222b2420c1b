"""A dependency-free smoke test of zloop for every compiled backend, for Pythons without pytest.

Run as: PYTHONPATH=python python tests/smoke.py   — prints one line per check and 'N passed, N failed'.
"""

import asyncio
import contextvars
import os
import signal
import socket
import sys
import threading
import time

import zloop

results = {"passed": 0, "failed": 0}
request_id = contextvars.ContextVar("request_id", default=None)


def check(name, func, backend):
    loop = zloop.new_event_loop(backend=backend)
    try:
        func(loop)
    except Exception as exc:  # report every failure, keep going
        results["failed"] += 1
        print(f"FAIL {backend:7} {name}: {exc!r}")
    else:
        results["passed"] += 1
        print(f"ok   {backend:7} {name}")
    finally:
        loop.close()


def scheduling_order(loop):
    seen = []
    loop.call_later(0.002, seen.append, "late")
    loop.call_at(loop.time() + 0.001, seen.append, "at")
    loop.call_soon(seen.append, "soon")
    loop.call_later(0.003, loop.stop)
    loop.run_forever()
    assert seen == ["soon", "at", "late"], seen


def tasks_and_context(loop):
    async def child():
        await asyncio.sleep(0)
        return request_id.get()

    async def main():
        request_id.set("r1")
        return await loop.create_task(child(), name="child")

    assert loop.run_until_complete(main()) == "r1"


def executor_and_threadsafe(loop):
    async def main():
        value = await loop.run_in_executor(None, sum, [1, 2, 3])
        fut = loop.create_future()
        threading.Thread(target=lambda: (time.sleep(0.01), loop.call_soon_threadsafe(fut.set_result, 7))).start()
        return value + await asyncio.wait_for(fut, 10)

    assert loop.run_until_complete(main()) == 13
    loop.run_until_complete(loop.shutdown_default_executor())


def reader_on_socketpair(loop):
    a, b = socket.socketpair()
    try:
        got = loop.create_future()
        loop.add_reader(a, lambda: got.set_result(a.recv(16)) if not got.done() else None)
        b.send(b"ping")
        assert loop.run_until_complete(asyncio.wait_for(got, 10)) == b"ping"
        assert loop.remove_reader(a) is True
    finally:
        a.close()
        b.close()


def signal_handler(loop):
    got = loop.create_future()
    loop.add_signal_handler(signal.SIGUSR1, got.set_result, "usr1")
    loop.call_soon(os.kill, os.getpid(), signal.SIGUSR1)
    assert loop.run_until_complete(asyncio.wait_for(got, 10)) == "usr1"
    assert loop.remove_signal_handler(signal.SIGUSR1)


def main():
    print(f"zloop on Python {sys.version.split()[0]}, backends {zloop.backends()}")
    for backend in zloop.backends():
        for check_func in (scheduling_order, tasks_and_context, executor_and_threadsafe, reader_on_socketpair,
                           signal_handler):
            check(check_func.__name__, check_func, backend)
    assert zloop.run(asyncio.sleep(0, result="done")) == "done"
    print(f"{results['passed']} passed, {results['failed']} failed")
    return 1 if results["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
