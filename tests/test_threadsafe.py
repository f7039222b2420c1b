# tests/test_threadsafe.py — call_soon_threadsafe: wakes a loop blocked in its poll (with no timers at all, or
# only far ones) promptly; many threads x many calls are all delivered, in order per thread; a threadsafe handle
# asked from another thread while its callback runs waits for the callback (asyncio 3.14's _ThreadSafeHandle);
# calls keep their place among call_soon calls and their context, whether their handle is kept, dropped at once,
# cancelled or asked for its context (zloop queues a record, not the handle: core/threadsafe_inbox.h).
#
# A loop whose wake-up is broken would block forever, so every test keeps a rescue channel: a socket the loop
# watches, written to if the expected wake-up does not come in time. The bounds are generous (WAKE_BOUND,
# 5 s natively) and only check that the wake-up happens, never how fast.

import socket
import sys
import threading
import time

import pytest

from conftest import TIMEOUT, WAKE_BOUND


class LoopThread:
    """Runs `loop.run_forever()` in a worker thread, with a rescue socket that stops it."""

    def __init__(self, loop):
        self.loop = loop
        self.rsock, self.wsock = socket.socketpair()
        self.started = threading.Event()
        self.errors = []
        self.thread = threading.Thread(target=self._main, daemon=True)

    def _main(self):
        try:
            self.loop.add_reader(self.rsock, self._rescued)
            self.loop.call_soon(self.started.set)
            self.loop.run_forever()
        except BaseException as exc:
            self.errors.append(exc)
        finally:
            self.loop.remove_reader(self.rsock)

    def _rescued(self):
        self.rsock.recv(100)
        self.loop.stop()

    def __enter__(self):
        self.thread.start()
        assert self.started.wait(TIMEOUT), "the loop thread did not start"
        time.sleep(0.05)  # give it time to block in its poll (correctness does not depend on it)
        return self

    def rescue(self):
        self.wsock.send(b"x")

    def __exit__(self, *exc):
        if self.thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(0.5)
        if self.thread.is_alive():
            self.rescue()
            self.thread.join(TIMEOUT)
        self.rsock.close()
        self.wsock.close()
        assert not self.thread.is_alive(), "the loop thread could not be stopped"
        assert self.errors == []


def test_wakes_a_loop_blocked_without_timers(loop):
    with LoopThread(loop) as lt:
        started = time.monotonic()
        loop.call_soon_threadsafe(loop.stop)
        lt.thread.join(WAKE_BOUND)
        woke = not lt.thread.is_alive()
        elapsed = time.monotonic() - started
    assert woke, "call_soon_threadsafe did not wake a loop blocked in poll with no timers"
    assert elapsed < WAKE_BOUND


def test_wakes_a_loop_blocked_on_a_far_timer(loop):
    far = loop.call_later(3600, lambda: None)
    with LoopThread(loop) as lt:
        loop.call_soon_threadsafe(loop.stop)
        lt.thread.join(WAKE_BOUND)
        woke = not lt.thread.is_alive()
    far.cancel()
    assert woke, "call_soon_threadsafe did not wake a loop blocked on a far timer"


def test_repeated_wakeups_are_never_lost(loop):
    # Each round waits for the previous callback, so the loop is blocked again before the next wake-up.
    delivered = threading.Event()
    with LoopThread(loop):
        for i in range(200):
            delivered.clear()
            loop.call_soon_threadsafe(delivered.set)
            assert delivered.wait(WAKE_BOUND), f"wake-up {i} was lost"


def test_wakes_a_loop_running_in_the_main_thread(loop, run_forever):
    seen = []
    rsock, wsock = socket.socketpair()
    done = threading.Event()

    def rescue_reader():
        rsock.recv(100)
        seen.append("rescued")
        loop.stop()

    def other_thread():
        time.sleep(0.05)  # let the loop block in its poll (correctness does not depend on it)
        loop.call_soon_threadsafe(seen.append, "from-thread")
        loop.call_soon_threadsafe(loop.stop)
        if not done.wait(WAKE_BOUND):
            wsock.send(b"x")

    try:
        loop.add_reader(rsock, rescue_reader)
        t = threading.Thread(target=other_thread)
        loop.call_soon(t.start)
        run_forever(TIMEOUT * 3)
        done.set()
        t.join(TIMEOUT)
        loop.remove_reader(rsock)
    finally:
        rsock.close()
        wsock.close()
    assert seen == ["from-thread"]


@pytest.mark.parametrize("threads,calls", [(4, 500), (16, 100)])
def test_many_threads_many_calls_all_delivered_in_order(loop, run_forever, threads, calls):
    received = {t: [] for t in range(threads)}
    total = threads * calls
    count = [0]
    go = threading.Event()

    def record(t, i):
        received[t].append(i)
        count[0] += 1
        if count[0] == total:
            loop.stop()

    def producer(t):
        go.wait(TIMEOUT)
        for i in range(calls):
            loop.call_soon_threadsafe(record, t, i)

    workers = [threading.Thread(target=producer, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    loop.call_soon(go.set)
    run_forever(TIMEOUT * 3)
    for w in workers:
        w.join(TIMEOUT)
    assert count[0] == total
    for t in range(threads):
        assert received[t] == list(range(calls)), f"calls from thread {t} arrived out of order"


def test_threadsafe_handle_can_be_cancelled(loop, run_forever):
    seen = []
    handles = []
    t = threading.Thread(target=lambda: handles.append(loop.call_soon_threadsafe(seen.append, "x")))
    t.start()
    t.join(TIMEOUT)
    handles[0].cancel()
    loop.call_soon(loop.stop)
    run_forever()
    assert seen == []


def test_threadsafe_arguments_and_context(loop, run_forever):
    import contextvars
    var = contextvars.ContextVar("v", default="default")
    ctx = contextvars.copy_context()
    ctx.run(var.set, "ctx")
    seen = []

    def other_thread():
        loop.call_soon_threadsafe(lambda *a: seen.append((a, var.get())), 1, 2, 3, 4, context=ctx)
        loop.call_soon_threadsafe(loop.stop)

    loop.call_soon(lambda: threading.Thread(target=other_thread).start())
    run_forever()
    assert seen == [((1, 2, 3, 4), "ctx")]


def test_threadsafe_on_closed_loop_raises(loop):
    loop.close()
    errors = []

    def other_thread():
        try:
            loop.call_soon_threadsafe(lambda: None)
        except RuntimeError as exc:
            errors.append(str(exc))

    t = threading.Thread(target=other_thread)
    t.start()
    t.join(TIMEOUT)
    assert errors == ["Event loop is closed"]


def test_threadsafe_from_the_loop_thread_itself(loop, run_forever):
    seen = []
    loop.call_soon(lambda: loop.call_soon_threadsafe(seen.append, "self"))
    loop.call_soon(lambda: loop.call_soon(loop.stop))
    run_forever()
    assert seen == ["self"]


def _ask_while_running(loop, run_forever, ask):
    """call_soon_threadsafe a slow callback from a thread, then ask(handle) there once the callback has started;
    returns (what ask returned, whether the callback had finished by then, how often the callback ran)."""
    started, finished = threading.Event(), threading.Event()
    ran = []
    answer = {}

    def slow_callback():
        started.set()
        ran.append(1)
        time.sleep(0.2)
        finished.set()

    def other_thread():
        try:
            handle = loop.call_soon_threadsafe(slow_callback)
            if started.wait(TIMEOUT):
                answer["value"] = ask(handle)
                answer["finished"] = finished.is_set()
        finally:
            loop.call_soon_threadsafe(loop.stop)

    t = threading.Thread(target=other_thread)
    t.start()
    run_forever(TIMEOUT * 2)
    t.join(TIMEOUT)
    return answer.get("value"), answer.get("finished"), len(ran)


def _needs_threadsafe_handles(backend):
    if backend == "asyncio" and sys.version_info < (3, 14):
        pytest.skip("asyncio's call_soon_threadsafe handle locks against other threads from 3.14 on")


def test_threadsafe_handle_cancel_from_another_thread_waits_for_the_running_callback(loop, run_forever, backend):
    _needs_threadsafe_handles(backend)
    _, finished, runs = _ask_while_running(loop, run_forever, lambda handle: handle.cancel())
    assert (finished, runs) == (True, 1)


def test_threadsafe_handle_cancelled_from_another_thread_waits_for_the_running_callback(loop, run_forever, backend):
    _needs_threadsafe_handles(backend)
    cancelled, finished, runs = _ask_while_running(loop, run_forever, lambda handle: handle.cancelled())
    assert (cancelled, finished, runs) == (False, True, 1)


def test_threadsafe_handle_cancelled_by_its_own_callback_runs_to_the_end(loop, run_forever):
    handles = []
    seen = []

    def callback():
        handles[0].cancel()            # the callback's own thread: must not wait for itself
        seen.append(handles[0].cancelled())
        loop.stop()

    t = threading.Thread(target=lambda: handles.append(loop.call_soon_threadsafe(callback)))
    t.start()
    t.join(TIMEOUT)
    run_forever()
    assert seen == [True]


# ---------------------------------------------------------------- handles nobody keeps
# zloop queues call_soon_threadsafe(callback[, arg]) as a record the loop owns and returns a Handle the queue does
# not hold (core/threadsafe_inbox.h): whether that Handle is kept, dropped at once, cancelled, asked for its
# context or collected, the call behaves as asyncio's, which queues the Handle itself.

CROWD = 1000   # queued handles: past the point where zloop defers an empty context (core/handle.c)


def _in_thread(func):
    """func() in a new thread (whose context is empty), its result returned."""
    result = []
    t = threading.Thread(target=lambda: result.append(func()))
    t.start()
    t.join(TIMEOUT)
    assert result, "the thread did not finish"
    return result[0]


@pytest.mark.parametrize("crowd", [0, CROWD])
def test_threadsafe_calls_keep_their_place_among_call_soon(loop, run_forever, crowd):
    seen = []
    kept = []
    for _ in range(crowd):
        loop.call_soon(int)

    def schedule():
        loop.call_soon(seen.append, "a")
        loop.call_soon_threadsafe(seen.append, "b")                # dropped at once
        kept.append(loop.call_soon_threadsafe(seen.append, "c"))   # kept
        loop.call_soon(seen.append, "d")
        loop.call_soon_threadsafe(lambda x, y: seen.append(x + y), "e", "")   # two arguments
        loop.call_soon_threadsafe(lambda: seen.append("f"))
        loop.call_soon(loop.stop)

    loop.call_soon(schedule)
    run_forever()
    assert seen == ["a", "b", "c", "d", "e", "f"]
    assert not kept[0].cancelled()


def test_threadsafe_calls_from_threads_and_the_loop_thread_in_call_order(loop, run_forever):
    seen = []
    loop.call_soon(seen.append, 0)
    _in_thread(lambda: loop.call_soon_threadsafe(seen.append, 1))
    loop.call_soon(seen.append, 2)
    _in_thread(lambda: loop.call_soon_threadsafe(seen.append, 3))
    loop.call_soon_threadsafe(seen.append, 4)
    loop.call_soon(loop.stop)
    run_forever()
    assert seen == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("keep", [True, False])
def test_threadsafe_context_handed_out_before_the_run_is_the_one_used(loop, run_forever, keep):
    import contextvars
    var = contextvars.ContextVar("var", default="unset")
    seen = []
    for _ in range(CROWD):
        loop.call_soon(int)
    handle = _in_thread(lambda: loop.call_soon_threadsafe(lambda: seen.append(var.get())))
    context = handle._context   # get_context() from 3.12 on
    context.run(var.set, "given")
    if not keep:
        del handle
    loop.call_soon(loop.stop)
    run_forever()
    assert seen == ["given"]


@pytest.mark.parametrize("crowd", [0, CROWD])
def test_threadsafe_copies_the_calling_threads_context(loop, run_forever, crowd):
    import contextvars
    var = contextvars.ContextVar("var", default="unset")
    seen = []
    for _ in range(crowd):
        loop.call_soon(int)

    def other_thread():
        var.set("thread")
        loop.call_soon_threadsafe(lambda: seen.append(var.get()))
        var.set("later")
        loop.call_soon_threadsafe(lambda tag: seen.append((tag, var.get())), "second")

    _in_thread(other_thread)
    loop.call_soon(loop.stop)
    run_forever()
    assert seen == ["thread", ("second", "later")]


def test_threadsafe_exception_of_a_dropped_handle_reaches_the_handler(loop, run_forever):
    contexts = []
    loop.set_exception_handler(lambda lp, context: contexts.append(context))

    def failing(value):
        raise ValueError(value)

    _in_thread(lambda: loop.call_soon_threadsafe(failing, 7) and None)
    loop.call_soon(loop.stop)
    run_forever()
    assert len(contexts) == 1
    context = contexts[0]
    assert isinstance(context["exception"], ValueError) and context["exception"].args == (7,)
    assert context["message"].startswith("Exception in callback")
    assert context["handle"]._callback is failing and context["handle"]._args == (7,)
    assert "failing" in repr(context["handle"])


def test_threadsafe_system_exit_from_a_dropped_handle_stops_the_loop(loop):
    def leave():
        raise SystemExit(3)

    _in_thread(lambda: loop.call_soon_threadsafe(leave) and None)
    with pytest.raises(SystemExit):
        loop.run_forever()
    seen = []
    loop.call_soon_threadsafe(seen.append, "after")
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert seen == ["after"]


class _Arg:
    pass


def test_threadsafe_cancel_releases_the_arguments_at_once(loop, run_forever):
    import weakref
    seen = []
    arg = _Arg()
    ref = weakref.ref(arg)
    handle = loop.call_soon_threadsafe(seen.append, arg)
    del arg
    handle.cancel()
    assert ref() is None, "a cancelled threadsafe handle kept its argument"
    del handle
    loop.call_soon(loop.stop)
    run_forever()
    assert seen == []


def test_threadsafe_close_releases_what_queued_calls_hold(loop):
    import weakref
    arg, kept_arg = _Arg(), _Arg()
    refs = weakref.ref(arg), weakref.ref(kept_arg)
    loop.call_soon_threadsafe(list, arg)
    kept = loop.call_soon_threadsafe(list, kept_arg)
    del arg, kept_arg
    loop.close()
    assert refs[0]() is None, "a closed loop kept a queued call's argument"
    assert kept._args == (refs[1](),) and not kept.cancelled()   # a kept handle keeps what it holds, as asyncio's


def test_threadsafe_slow_callback_warning_when_debug_is_set_after_queueing(loop, run_forever, caplog):
    import logging
    caplog.set_level(logging.WARNING, logger="asyncio")

    def slow_threadsafe_callback():
        time.sleep(0.05)

    _in_thread(lambda: loop.call_soon_threadsafe(slow_threadsafe_callback) and None)
    loop.set_debug(True)
    loop.slow_callback_duration = 0.01
    loop.call_soon(loop.stop)
    run_forever()
    messages = [r.getMessage() for r in caplog.records if r.name == "asyncio" and r.levelno == logging.WARNING]
    assert any("slow_threadsafe_callback" in m for m in messages), messages


@pytest.mark.parametrize("crowd", [0, CROWD])
def test_threadsafe_callbacks_never_see_each_others_variables(loop, run_forever, crowd):
    import contextvars
    var = contextvars.ContextVar("var", default="unset")
    seen = []
    for _ in range(crowd):
        loop.call_soon(int)

    def set_and_keep():
        seen.append(var.get())
        var.set("leaked")

    def set_and_reset():
        seen.append(var.get())
        var.reset(var.set("reset"))

    def other_thread():   # an empty context, so zloop makes (or reuses) the callbacks' contexts itself
        for func in (set_and_reset, set_and_reset, set_and_keep, set_and_keep, set_and_reset):
            loop.call_soon_threadsafe(func)

    _in_thread(other_thread)
    loop.call_soon(loop.stop)
    run_forever()
    assert seen == ["unset"] * 5


class _SchedulesWhenFreed:
    """An argument whose finalizer queues many more thread-safe calls (the record ring grows under the cancel)."""

    def __init__(self, loop, seen):
        self.loop, self.seen = loop, seen

    def __del__(self):
        for i in range(300):
            self.loop.call_soon_threadsafe(self.seen.append, i)


def test_threadsafe_cancel_whose_release_queues_more_calls(loop, run_forever):
    seen = []
    handle = loop.call_soon_threadsafe(seen.append, _SchedulesWhenFreed(loop, seen))
    handle.cancel()
    loop.call_soon(loop.stop)
    run_forever()
    assert seen == list(range(300))
