# tests/test_scheduling.py — call_soon: FIFO order, arguments, context=, callbacks scheduled while running
# wait for the next iteration, and the Handle API (cancel, cancelled, get_context, repr, _run).

import asyncio
import contextvars
import gc
import sys
import threading
import weakref

import pytest

import zloop

var = contextvars.ContextVar("var", default="default")


def context_of(handle):
    """Handle.get_context(); zloop has it on every Python, asyncio from 3.12 (the control falls back)."""
    if isinstance(handle, zloop.Handle) or sys.version_info >= (3, 12):
        return handle.get_context()
    return handle._context


class Obj:
    """Weak-referenceable argument, to see when a handle lets go of its arguments."""


def test_call_soon_runs_in_fifo_order(loop, run_forever):
    seen = []
    for i in range(200):
        loop.call_soon(seen.append, i)
    loop.call_soon(loop.stop)
    run_forever()
    assert seen == list(range(200))


def test_call_soon_passes_positional_arguments(loop, run_forever):
    got = []

    def cb(*args):
        got.append(args)

    loop.call_soon(cb)
    loop.call_soon(cb, 1)
    loop.call_soon(cb, 1, "two", 3.0)
    loop.call_soon(cb, *range(12))  # more than fit inline
    loop.call_soon(loop.stop)
    run_forever()
    assert got == [(), (1,), (1, "two", 3.0), tuple(range(12))]


def test_call_soon_rejects_unknown_keyword(loop):
    with pytest.raises(TypeError):
        loop.call_soon(print, end="")
    with pytest.raises(TypeError):
        loop.call_soon()


def test_call_soon_returns_handle(loop, is_zloop):
    h = loop.call_soon(print)
    if is_zloop:
        assert isinstance(h, zloop.Handle)
    else:
        assert isinstance(h, asyncio.Handle)
    assert h.cancelled() is False
    h.cancel()


def test_callback_return_value_is_ignored(loop, run_forever):
    loop.call_soon(lambda: 42)
    loop.call_soon(lambda: None)
    loop.call_soon(loop.stop)
    run_forever()


def test_callbacks_scheduled_while_running_wait_for_next_iteration(loop, run_forever):
    seen = []

    def first():
        seen.append("first")
        loop.call_soon(seen.append, "scheduled-by-first")
        loop.stop()  # stop after this iteration: what first scheduled must not have run yet

    loop.call_soon(first)
    loop.call_soon(seen.append, "second")
    run_forever()
    assert seen == ["first", "second"]
    loop.call_soon(loop.stop)
    run_forever()
    assert seen == ["first", "second", "scheduled-by-first"]


def test_order_across_iterations(loop, run_forever):
    seen = []

    def a():
        seen.append("a")
        loop.call_soon(seen.append, "c")

    loop.call_soon(a)
    loop.call_soon(seen.append, "b")
    loop.call_soon(lambda: loop.call_soon(loop.stop))
    run_forever()
    assert seen == ["a", "b", "c"]


def test_self_rescheduling_callback_does_not_starve_stop(loop, run_forever):
    count = [0]

    def spin():
        count[0] += 1
        if count[0] < 100000:  # bound, should the loop never stop
            loop.call_soon(spin)

    loop.call_soon(spin)
    loop.call_soon(loop.stop)
    run_forever()
    assert count[0] == 1
    loop.call_soon(loop.stop)
    run_forever()
    assert count[0] == 2


# ------------------------------------------------------------------ context


def test_default_context_is_a_copy_taken_at_call_time(loop, run_forever):
    seen = []
    token = var.set("at-schedule")
    try:
        h = loop.call_soon(lambda: seen.append(var.get()))
        var.set("changed-later")
    finally:
        var.reset(token)
    assert isinstance(context_of(h), contextvars.Context)
    loop.call_soon(loop.stop)
    run_forever()
    assert seen == ["at-schedule"]


def test_explicit_context_is_used(loop, run_forever):
    ctx = contextvars.copy_context()
    ctx.run(var.set, "in-ctx")
    seen = []
    h = loop.call_soon(lambda: seen.append(var.get()), context=ctx)
    assert context_of(h) is ctx
    loop.call_soon(loop.stop)
    run_forever()
    assert seen == ["in-ctx"]
    assert var.get() == "default"


def test_context_none_means_current_context(loop, run_forever):
    seen = []
    token = var.set("current")
    try:
        loop.call_soon(lambda: seen.append(var.get()), context=None)
    finally:
        var.reset(token)
    loop.call_soon(loop.stop)
    run_forever()
    assert seen == ["current"]


def test_changes_in_callback_stay_in_its_context(loop, run_forever):
    ctx = contextvars.copy_context()
    seen = []

    def setter():
        var.set("set-inside")

    loop.call_soon(setter, context=ctx)
    loop.call_soon(lambda: seen.append(var.get()), context=ctx)
    loop.call_soon(lambda: seen.append(var.get()))
    loop.call_soon(loop.stop)
    run_forever()
    assert seen == ["set-inside", "default"]
    assert ctx[var] == "set-inside"
    assert var.get() == "default"


def test_context_is_exited_after_an_exception(loop, run_forever):
    ctx = contextvars.copy_context()
    errors = []
    loop.set_exception_handler(lambda lp, c: errors.append(c["exception"]))

    def boom():
        var.set("boom")
        raise ZeroDivisionError

    loop.call_soon(boom, context=ctx)
    # Entering the same context again fails if the first run left it entered.
    loop.call_soon(lambda: errors.append(var.get()), context=ctx)
    loop.call_soon(loop.stop)
    run_forever()
    assert isinstance(errors[0], ZeroDivisionError)
    assert errors[1] == "boom"


def test_callbacks_scheduled_from_an_empty_context_each_get_their_own(loop, run_forever):
    # zloop makes such a handle's context only when it runs or is asked for (a copy of an empty context is a fresh
    # empty one): what one callback sets must still stay out of the others and out of the caller's context.
    seen = []

    def setter(value):
        seen.append(var.get())
        var.set(value)

    def schedule():
        for _ in range(600):    # zloop defers only once the loop holds many handles (512)
            loop.call_soon(setter, "filler")
        return [loop.call_soon(setter, "first"), loop.call_soon(setter, "second"),
                loop.call_soon(lambda: seen.append(var.get()))]

    handles = contextvars.Context().run(schedule)
    asked = context_of(handles[0])
    assert isinstance(asked, contextvars.Context) and len(asked) == 0
    assert context_of(handles[0]) is asked
    loop.call_soon(loop.stop)
    run_forever()
    assert seen == ["default"] * 603
    assert asked[var] == "first"                       # the context asked for before is the one it ran in
    assert context_of(handles[1])[var] == "second"     # made when it ran, kept as asyncio keeps its copy
    assert var not in context_of(handles[2])
    assert var.get() == "default"


def test_threadsafe_from_a_fresh_thread_copies_its_context(loop, run_forever):
    seen = []

    def record_then_set(tag):
        seen.append((tag, var.get()))
        var.set(tag)

    def produce():      # a new thread: its context was never used
        for _ in range(600):    # zloop defers only once the loop holds many handles (512)
            loop.call_soon_threadsafe(int)
        loop.call_soon_threadsafe(record_then_set, "a")
        loop.call_soon_threadsafe(record_then_set, "b")
        var.set("thread")
        loop.call_soon_threadsafe(record_then_set, "c")
        loop.call_soon_threadsafe(loop.stop)

    thread = threading.Thread(target=produce)
    thread.start()
    run_forever()
    thread.join()
    assert seen == [("a", "default"), ("b", "default"), ("c", "thread")]
    assert var.get() == "default"


def test_copies_of_an_empty_context_are_each_the_callbacks_own(loop, run_forever):
    # With many handles queued, zloop makes the copy of an empty context only when the callback runs or
    # get_context() asks: each handle must still get its own, and keep it.
    seen = []
    pending = [loop.call_later(3600, seen.append, "never") for _ in range(1000)]

    def setter(value):
        seen.append(var.get())
        var.set(value)

    def schedule():
        early = loop.call_soon(setter, "first")
        asked = context_of(early)
        timer = loop.call_later(0, setter, "second")
        return early, asked, timer

    early, asked, timer = contextvars.Context().run(schedule)
    assert isinstance(asked, contextvars.Context) and len(asked) == 0
    assert context_of(early) is asked
    loop.call_later(0.01, loop.stop)
    run_forever()
    assert seen == ["default", "default"]
    assert asked[var] == "first" and context_of(early) is asked
    assert context_of(timer)[var] == "second"
    assert var.get() == "default"
    for handle in pending:
        handle.cancel()


def test_a_reader_keeps_one_context_across_runs(loop, run_forever):
    import socket
    a, b = socket.socketpair()
    seen = []

    def on_readable():
        a.recv(1)
        seen.append(var.get())
        var.set(f"run{len(seen)}")
        if len(seen) == 2:
            loop.stop()
        else:
            b.send(b"y")

    try:
        contextvars.Context().run(loop.add_reader, a.fileno(), on_readable)
        b.send(b"x")
        run_forever()
    finally:
        loop.remove_reader(a.fileno())
        a.close()
        b.close()
    assert seen == ["default", "run1"]


# ------------------------------------------------------------------ Handle API


def test_cancel_before_run(loop, run_forever):
    seen = []
    h = loop.call_soon(seen.append, 1)
    h.cancel()
    assert h.cancelled()
    h.cancel()  # twice is fine
    assert h.cancelled()
    loop.call_soon(loop.stop)
    run_forever()
    assert seen == []


def test_cancel_from_earlier_callback_in_same_iteration(loop, run_forever):
    seen = []
    later = []
    loop.call_soon(lambda: later[0].cancel())
    later.append(loop.call_soon(seen.append, "cancelled"))
    loop.call_soon(loop.stop)
    run_forever()
    assert seen == []


def test_cancel_after_run_marks_cancelled(loop, run_forever):
    seen = []
    h = loop.call_soon(seen.append, 1)
    loop.call_soon(loop.stop)
    run_forever()
    assert seen == [1]
    h.cancel()
    assert h.cancelled()


def test_cancel_releases_callback_and_arguments(loop):
    arg = Obj()
    ref = weakref.ref(arg)

    def cb(x):
        pass

    cb_ref = weakref.ref(cb)
    h = loop.call_soon(cb, arg)
    del arg, cb
    gc.collect()
    assert ref() is not None
    h.cancel()
    gc.collect()
    assert ref() is None, "a cancelled handle keeps its arguments alive"
    assert cb_ref() is None, "a cancelled handle keeps its callback alive"
    assert h.cancelled()


def test_handle_cancelling_itself_while_running(loop, run_forever):
    holder = []
    seen = []

    def cb(x):
        holder[0].cancel()
        seen.append(x)  # the argument must still be valid here

    holder.append(loop.call_soon(cb, "arg"))
    loop.call_soon(loop.stop)
    run_forever()
    assert seen == ["arg"]
    assert holder[0].cancelled()


def test_handle_run_calls_the_callback_now(loop):
    seen = []
    h = loop.call_soon(seen.append, "x")
    h._run()
    assert seen == ["x"]


def test_handle_run_reports_exceptions_to_the_loop(loop):
    errors = []
    loop.set_exception_handler(lambda lp, c: errors.append(c))
    h = loop.call_soon(lambda: 1 / 0)
    h._run()  # must not raise
    assert len(errors) == 1
    assert isinstance(errors[0]["exception"], ZeroDivisionError)
    assert errors[0]["handle"] is h


def test_handle_run_of_cancelled_handle_does_nothing(loop):
    seen = []
    h = loop.call_soon(seen.append, "x")
    h.cancel()
    h._run()
    assert seen == []


def _reference_handle(callback, args, aio_loop):
    return asyncio.Handle(callback, args, aio_loop)


def some_callback(*args):
    pass


def test_handle_repr_matches_asyncio(loop):
    aio = asyncio.new_event_loop()
    try:
        for args in [(), (1, "a"), (None,)]:
            h = loop.call_soon(some_callback, *args)
            assert repr(h) == repr(_reference_handle(some_callback, args, aio))
            h.cancel()
            ref = _reference_handle(some_callback, args, aio)
            ref.cancel()
            assert repr(h) == repr(ref)
    finally:
        aio.close()


def test_handle_repr_matches_asyncio_in_debug(loop):
    # Python 3.13+ shows callback arguments only in debug mode; the reprs must agree either way.
    aio = asyncio.new_event_loop()
    aio.set_debug(True)
    loop.set_debug(True)
    try:
        for args in [(), (1, "a")]:
            h = loop.call_soon(some_callback, *args)
            ref = _reference_handle(some_callback, args, aio)
            assert repr(h).split(" created at ")[0] == repr(ref).split(" created at ")[0]
            h.cancel()
            ref.cancel()
            assert repr(h).split(" created at ")[0] == repr(ref).split(" created at ")[0]
    finally:
        aio.close()


def test_handle_repr_of_builtin_and_partial(loop):
    import functools
    h = loop.call_soon(print, "x")
    assert repr(h).startswith("<Handle print(")
    p = functools.partial(some_callback, 1)
    h2 = loop.call_soon(p)
    assert "some_callback" in repr(h2)
    assert repr(h2).startswith("<Handle ")
    h.cancel()
    h2.cancel()


def test_handle_get_context_returns_the_context(loop):
    ctx = contextvars.Context()
    h = loop.call_soon(print, context=ctx)
    assert context_of(h) is ctx
    h.cancel()


def test_many_handles_alive_at_once(loop, run_forever):
    # Exercise the handle free list: create, keep, drop and recreate many handles.
    kept = [loop.call_soon(some_callback, i) for i in range(1000)]
    for h in kept[::2]:
        h.cancel()
    del kept
    seen = []
    for i in range(300):
        loop.call_soon(seen.append, i)
    loop.call_soon(loop.stop)
    run_forever()
    assert seen == list(range(300))
