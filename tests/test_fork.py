# tests/test_fork.py — os.fork(): a child gets a working new_event_loop() (timers, tasks, readers, thread-safe
# wake-ups), closing the inherited loop in the child does not disturb the parent, and the parent's loop keeps
# working. The child reports through its exit status (and a pipe for the traceback).

import asyncio
import os
import socket
import threading
import time
import traceback
import warnings

import pytest

from conftest import TIMEOUT, new_loop

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


async def exercise(loop):
    """Timers, a task, a reader and a thread-safe wake-up on `loop`; returns a value to compare."""
    await asyncio.sleep(0.01)
    a, b = socket.socketpair()
    try:
        got = loop.create_future()
        loop.add_reader(a, lambda: got.done() or got.set_result(a.recv(10)))
        threading.Thread(target=lambda: (time.sleep(0.01), b.send(b"ping"))).start()
        data = await asyncio.wait_for(got, TIMEOUT)
        loop.remove_reader(a)
    finally:
        a.close()
        b.close()
    woke = loop.create_future()
    threading.Thread(target=lambda: loop.call_soon_threadsafe(woke.set_result, "woke")).start()
    task = loop.create_task(asyncio.sleep(0, "task"))
    return data, await asyncio.wait_for(woke, TIMEOUT), await task


EXPECTED = (b"ping", "woke", "task")


def run_in_child(body):
    """Fork; run body() in the child (0 = success); return (status, traceback text) in the parent."""
    rfd, wfd = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads alive (3.12+)
        pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(rfd)
            code = 0 if body() else 2
        except BaseException:
            os.write(wfd, traceback.format_exc().encode())
        finally:
            os._exit(code)
    os.close(wfd)
    deadline = time.monotonic() + 6 * TIMEOUT
    status = None
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.01)
    else:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        status = None
    with os.fdopen(rfd, "rb") as f:
        details = f.read().decode(errors="replace")
    return status, details


def exit_code(status):
    if status is None:
        return "timeout"
    return os.WEXITSTATUS(status) if os.WIFEXITED(status) else f"signal {os.WTERMSIG(status)}"


def test_child_gets_a_working_new_loop(loop, backend, run):
    assert run(exercise(loop)) == EXPECTED  # the parent loop has been used before the fork

    def child():
        lp = new_loop(backend)
        try:
            return lp.run_until_complete(asyncio.wait_for(exercise(lp), 2 * TIMEOUT)) == EXPECTED
        finally:
            lp.close()

    status, details = run_in_child(child)
    assert exit_code(status) == 0, details
    # The parent's loop still works.
    assert run(exercise(loop)) == EXPECTED


@pytest.mark.zloop_only
def test_child_closing_the_inherited_loop_leaves_the_parent_alone(loop, backend, run):
    a, b = socket.socketpair()
    try:
        got = []
        loop.add_reader(a, lambda: got.append(a.recv(10)))
        run(asyncio.sleep(0))

        def child():
            # Tear the inherited loop down the long way: this must not touch the parent's kernel state.
            loop.remove_reader(a)
            loop.close()
            lp = new_loop(backend)
            try:
                return lp.run_until_complete(asyncio.wait_for(exercise(lp), 2 * TIMEOUT)) == EXPECTED
            finally:
                lp.close()

        status, details = run_in_child(child)
        assert exit_code(status) == 0, details

        async def wait_for_data():
            b.send(b"after")
            while not got:
                await asyncio.sleep(0.005)
            return got[0]

        assert run(wait_for_data()) == b"after"
        loop.remove_reader(a)
    finally:
        a.close()
        b.close()
    assert run(exercise(loop)) == EXPECTED


def test_fork_while_a_timer_and_thread_wakeup_are_pending(loop, backend, run):
    far = loop.call_later(3600, lambda: None)

    def child():
        lp = new_loop(backend)
        try:
            return lp.run_until_complete(asyncio.wait_for(asyncio.sleep(0.01, "ok"), 2 * TIMEOUT)) == "ok"
        finally:
            lp.close()

    status, details = run_in_child(child)
    assert exit_code(status) == 0, details
    far.cancel()
    assert run(exercise(loop)) == EXPECTED
