# tests/test_lifecycle.py — run_forever, run_until_complete, stop, is_running, is_closed, close: the stdlib's
# errors (already running, another loop running, stopped before completion, close while running, closed loop)
# and the release of every fd a closed loop owned.

import asyncio
import gc
import os
import socket
import sys
import threading
import warnings
import weakref

import pytest

from conftest import TIMEOUT, new_loop


class Obj:
    pass


def noop(*args):
    pass


def fd_count():
    return len(os.listdir("/proc/self/fd"))


# ------------------------------------------------------------------ running and stopping


def test_is_running_inside_and_outside(loop, run_forever):
    states = []
    loop.call_soon(lambda: states.append((loop.is_running(), asyncio.get_running_loop() is loop)))
    loop.call_soon(loop.stop)
    assert not loop.is_running()
    run_forever()
    assert states == [(True, True)]
    assert not loop.is_running()
    assert asyncio._get_running_loop() is None


def test_stop_before_run_forever_runs_one_iteration(loop):
    seen = []
    loop.stop()
    loop.call_soon(seen.append, 1)
    loop.run_forever()  # returns after one iteration
    assert seen == [1]
    assert not loop.is_running()


def test_stop_finishes_the_current_iteration(loop, run_forever):
    seen = []

    def stopper():
        loop.stop()
        loop.call_soon(seen.append, "next-run")

    loop.call_soon(stopper)
    loop.call_soon(seen.append, "same-iteration")
    run_forever()
    assert seen == ["same-iteration"]
    loop.call_soon(loop.stop)
    run_forever()
    assert seen == ["same-iteration", "next-run"]


def test_run_forever_is_reusable(loop, run_forever):
    seen = []
    for i in range(5):
        loop.call_soon(seen.append, i)
        loop.call_soon(loop.stop)
        run_forever()
    assert seen == list(range(5))


def test_run_until_complete_coroutine(loop):
    async def main():
        await asyncio.sleep(0)
        await asyncio.sleep(0.001)
        return "result"

    assert loop.run_until_complete(main()) == "result"
    assert not loop.is_running()


def test_run_until_complete_future(loop):
    fut = loop.create_future()
    loop.call_soon(fut.set_result, 7)
    assert loop.run_until_complete(fut) == 7


def test_run_until_complete_done_future(loop):
    fut = loop.create_future()
    fut.set_result("done")
    assert loop.run_until_complete(fut) == "done"


def test_run_until_complete_raises_the_exception(loop):
    async def main():
        await asyncio.sleep(0)
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        loop.run_until_complete(main())
    assert not loop.is_running()
    # Still usable.
    assert loop.run_until_complete(asyncio.sleep(0, "again")) == "again"


def test_run_until_complete_cancelled(loop):
    fut = loop.create_future()
    loop.call_soon(fut.cancel)
    with pytest.raises(asyncio.CancelledError):
        loop.run_until_complete(fut)


def test_run_until_complete_rejects_non_awaitable(loop):
    with pytest.raises(TypeError):
        loop.run_until_complete(42)


def test_run_until_complete_future_of_another_loop(loop, make_loop):
    other = make_loop()
    fut = other.create_future()
    with pytest.raises(ValueError):
        loop.run_until_complete(fut)


def test_run_until_complete_stopped_before_completion(loop):
    fut = loop.create_future()
    loop.call_soon(loop.stop)
    with pytest.raises(RuntimeError, match="Event loop stopped before Future completed."):
        loop.run_until_complete(fut)
    assert not fut.done()
    assert not loop.is_running()
    # The future did not keep the stop callback: completing it later must not stop another run.
    loop.call_soon(fut.set_result, 1)
    assert loop.run_until_complete(fut) == 1


def test_get_event_loop_inside_coroutine(loop, run):
    async def main():
        return asyncio.get_event_loop() is loop, asyncio.get_running_loop() is loop

    assert run(main()) == (True, True)


def test_run_forever_in_a_worker_thread(loop):
    seen = []
    errors = []

    def worker():
        try:
            loop.call_soon(seen.append, threading.get_ident())
            loop.call_soon(loop.stop)
            loop.run_forever()
        except BaseException as exc:  # reported to the main thread
            errors.append(exc)

    t = threading.Thread(target=worker)
    t.start()
    t.join(TIMEOUT)
    assert not t.is_alive(), "run_forever in a thread did not return"
    assert errors == []
    assert seen and seen[0] != threading.get_ident()


def test_loops_running_at_once_in_several_threads(backend):
    results = {}
    errors = []
    barrier = threading.Barrier(4, timeout=TIMEOUT)

    def worker(i):
        lp = new_loop(backend)
        try:
            async def main():
                barrier.wait()  # all four loops exist and are running
                total = 0
                for step in range(50):
                    await asyncio.sleep(0.0005 if step % 10 == 0 else 0)
                    total += step
                return total

            results[i] = lp.run_until_complete(asyncio.wait_for(main(), TIMEOUT))
        except BaseException as exc:
            errors.append(exc)
        finally:
            lp.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT * 2)
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    assert results == {i: sum(range(50)) for i in range(4)}


# ------------------------------------------------------------------ running errors


def test_run_forever_while_running(loop, run_forever, is_zloop):
    if not is_zloop and sys.version_info >= (3, 13):
        pytest.skip("stock asyncio 3.13 marks the outer loop not running after the failed nested call")
    errors = []

    def nested():
        for call in (loop.run_forever, lambda: loop.run_until_complete(loop.create_future())):
            try:
                call()
            except RuntimeError as exc:
                errors.append(str(exc))

    loop.call_soon(nested)
    loop.call_soon(loop.stop)
    run_forever()
    assert errors == ["This event loop is already running"] * 2


def test_run_until_complete_while_running_leaves_coroutine_unscheduled(loop, run):
    async def main():
        coro = asyncio.sleep(0)
        try:
            with pytest.raises(RuntimeError, match="already running"):
                loop.run_until_complete(coro)
        finally:
            coro.close()
        return True

    assert run(main())


def test_another_loop_running_in_this_thread(loop, make_loop, run_forever):
    other = make_loop()
    errors = []

    def nested():
        try:
            other.run_forever()
        except RuntimeError as exc:
            errors.append(str(exc))

    loop.call_soon(nested)
    loop.call_soon(loop.stop)
    run_forever()
    assert errors == ["Cannot run the event loop while another loop is running"]
    assert not other.is_running()


@pytest.mark.parametrize("outer_is_asyncio", [True, False], ids=["zloop-inside-asyncio", "asyncio-inside-zloop"])
def test_mixed_with_asyncio_loop_in_same_thread(loop, outer_is_asyncio):
    aio = asyncio.new_event_loop()
    outer, inner = (aio, loop) if outer_is_asyncio else (loop, aio)
    errors = []

    def nested():
        coro = asyncio.sleep(0)
        try:
            inner.run_until_complete(coro)
        except RuntimeError as exc:
            errors.append(str(exc))
        finally:
            coro.close()
        outer.stop()

    try:
        guard = outer.call_later(TIMEOUT, outer.stop)
        outer.call_soon(nested)
        outer.run_forever()
        guard.cancel()
    finally:
        aio.close()
    assert errors == ["Cannot run the event loop while another loop is running"]


def test_close_while_running(loop, run_forever):
    errors = []

    def try_close():
        try:
            loop.close()
        except RuntimeError as exc:
            errors.append(str(exc))
        loop.stop()

    loop.call_soon(try_close)
    run_forever()
    assert errors == ["Cannot close a running event loop"]
    assert not loop.is_closed()


# ------------------------------------------------------------------ closing


def test_is_closed_and_double_close(loop):
    assert not loop.is_closed()
    loop.close()
    assert loop.is_closed()
    loop.close()
    assert loop.is_closed()


def closed_calls(loop):
    sock = socket.socket()
    calls = {
        "call_soon": lambda: loop.call_soon(noop),
        "call_later": lambda: loop.call_later(1, noop),
        "call_at": lambda: loop.call_at(1, noop),
        "call_soon_threadsafe": lambda: loop.call_soon_threadsafe(noop),
        "run_forever": loop.run_forever,
        "run_until_complete": lambda: loop.run_until_complete(loop.create_future()),
        "create_task": None,
        "add_reader": lambda: loop.add_reader(sock, noop),
        "add_writer": lambda: loop.add_writer(sock, noop),
        "run_in_executor": lambda: loop.run_in_executor(None, noop),
    }
    return calls, sock


@pytest.mark.parametrize("method", ["call_soon", "call_later", "call_at", "call_soon_threadsafe", "run_forever",
                                    "run_until_complete", "create_task", "add_reader", "add_writer",
                                    "run_in_executor"])
def test_closed_loop_methods_raise(loop, method):
    loop.close()
    calls, sock = closed_calls(loop)
    try:
        if method == "create_task":
            coro = asyncio.sleep(0)
            try:
                with pytest.raises(RuntimeError, match="^Event loop is closed$"):
                    loop.create_task(coro)
            finally:
                coro.close()
        else:
            with pytest.raises(RuntimeError, match="^Event loop is closed$"):
                calls[method]()
    finally:
        sock.close()


def test_closed_loop_remove_reader_returns_false(loop):
    a, b = socket.socketpair()
    try:
        loop.add_reader(a, noop)
        loop.close()
        assert loop.remove_reader(a) is False
        assert loop.remove_writer(a) is False
    finally:
        a.close()
        b.close()


def test_closed_loop_still_refuses_a_live_transports_fd(loop):
    # difffuzz ops_after_close: asyncio's transports outlive close(), and remove_reader checks them first.
    a, b = socket.socketpair()
    try:
        tr, _ = loop.run_until_complete(loop.connect_accepted_socket(asyncio.Protocol, a))
        loop.close()
        for remove in (loop.remove_reader, loop.remove_writer):
            for target in (a.fileno(), a):
                with pytest.raises(RuntimeError):
                    remove(target)
        with pytest.raises(RuntimeError):
            loop.add_writer(a.fileno(), noop)
        try:
            tr.close()  # closing: the fd is free again, and the closed loop answers False
        except RuntimeError:
            pass  # asyncio's call_soon(connection_lost) on the closed loop
        assert loop.remove_reader(a.fileno()) is False
        assert loop.remove_writer(a) is False
    finally:
        a.close()
        b.close()


def test_close_drops_pending_callbacks_and_timers(loop):
    soon_arg, timer_arg = Obj(), Obj()
    refs = [weakref.ref(soon_arg), weakref.ref(timer_arg)]
    loop.call_soon(noop, soon_arg)
    loop.call_later(3600, noop, timer_arg)
    del soon_arg, timer_arg
    loop.close()
    gc.collect()
    assert [r() for r in refs] == [None, None]


def test_close_releases_every_fd(backend):
    gc.collect()
    before = fd_count()
    for i in range(40):
        lp = new_loop(backend)
        a, b = socket.socketpair()
        try:
            lp.add_reader(a, noop)
            lp.add_writer(b, noop)
            guard = lp.call_later(TIMEOUT, lp.stop)
            lp.call_soon(lp.stop)
            lp.run_forever()
            # Wake machinery is used too.
            lp.call_soon_threadsafe(noop)
            guard.cancel()
            lp.run_until_complete(asyncio.sleep(0))
        finally:
            lp.close()
            a.close()
            b.close()
    gc.collect()
    after = fd_count()
    assert after == before, f"{after - before} fds leaked by 40 closed loops"


def test_unclosed_loop_warns(backend):
    lp = new_loop(backend)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        del lp
        gc.collect()
    assert any(issubclass(w.category, ResourceWarning) and "unclosed event loop" in str(w.message) for w in caught)


def test_loops_are_garbage_collected(backend):
    lp = new_loop(backend)
    lp.call_soon(noop, lp)  # a cycle through the ready queue
    lp.call_later(3600, noop, lp)  # and through the timer heap
    lp.run_until_complete(asyncio.sleep(0))
    lp.close()
    ref = weakref.ref(lp)
    del lp
    gc.collect()
    assert ref() is None
