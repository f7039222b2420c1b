# tests/test_debug.py — debug mode: set_debug/get_debug, PYTHONASYNCIODEBUG and -X dev, slow-callback
# warnings, thread-safety checks, callback checks, source tracebacks in handle reprs and error contexts.

import asyncio
import logging
import sys
import threading
import time

import pytest

from asyncio import constants

from conftest import TIMEOUT


def noop(*args):
    pass


async def a_coroutine_function():
    pass


def test_set_get_debug(loop):
    assert loop.get_debug() is False
    loop.set_debug(True)
    assert loop.get_debug() is True
    loop.set_debug(False)
    assert loop.get_debug() is False


DEBUG_PROBE = ("import zloop, sys; lp = zloop.new_event_loop({arg}); "
               "print(lp.get_debug()); lp.close()")


@pytest.mark.zloop_only
@pytest.mark.parametrize("env,flags,expected", [
    ({}, (), "False"),
    ({"PYTHONASYNCIODEBUG": "1"}, (), "True"),
    ({}, ("-X", "dev"), "True"),
    ({"PYTHONDEVMODE": "1"}, (), "True"),
], ids=["plain", "PYTHONASYNCIODEBUG", "X-dev", "PYTHONDEVMODE"])
def test_debug_from_environment(backend, python_run, env, flags, expected):
    proc = python_run(DEBUG_PROBE.format(arg=repr(backend)), env=env, flags=flags)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == expected


def test_slow_callback_warning(loop, run_forever, caplog):
    caplog.set_level(logging.WARNING, logger="asyncio")
    loop.set_debug(True)
    loop.slow_callback_duration = 0.01

    def slow():
        time.sleep(0.05)  # sleeps at least this long: always slower than the limit

    h = loop.call_soon(slow)
    loop.call_soon(loop.stop)
    run_forever()
    messages = [r.getMessage() for r in caplog.records if r.name == "asyncio" and r.levelno == logging.WARNING]
    about_slow = [m for m in messages if "slow()" in m]
    assert len(about_slow) == 1, messages
    assert about_slow[0].startswith("Executing ")
    assert "took" in about_slow[0] and about_slow[0].endswith("seconds")
    assert h is not None


def test_slow_task_step_warning_names_the_task(loop, run, caplog):
    caplog.set_level(logging.WARNING, logger="asyncio")
    loop.set_debug(True)
    loop.slow_callback_duration = 0.01

    async def slow_task():
        time.sleep(0.05)

    run(loop.create_task(slow_task(), name="the-slow-one"))
    messages = [r.getMessage() for r in caplog.records if r.name == "asyncio" and r.levelno == logging.WARNING]
    assert any("the-slow-one" in m and "took" in m for m in messages), messages


def test_no_warning_for_fast_callbacks(loop, run_forever, caplog):
    caplog.set_level(logging.WARNING, logger="asyncio")
    loop.set_debug(True)
    loop.slow_callback_duration = 60.0
    for _ in range(10):
        loop.call_soon(noop)
    loop.call_soon(loop.stop)
    run_forever()
    assert [r for r in caplog.records if "took" in r.getMessage()] == []


def test_no_slow_warning_outside_debug_mode(loop, run_forever, caplog):
    caplog.set_level(logging.WARNING, logger="asyncio")
    loop.slow_callback_duration = 0.001
    loop.call_soon(time.sleep, 0.01)
    loop.call_soon(loop.stop)
    run_forever()
    assert [r for r in caplog.records if "took" in r.getMessage()] == []


def test_slow_callback_duration_default(loop):
    assert loop.slow_callback_duration == 0.1
    loop.slow_callback_duration = 0.5
    assert loop.slow_callback_duration == 0.5


# ------------------------------------------------------------------ thread-safety checks


@pytest.mark.parametrize("method", ["call_soon", "call_later", "call_at"])
def test_non_threadsafe_call_from_another_thread_raises_in_debug(loop, method, run_forever):
    loop.set_debug(True)
    outcome = []
    calls = {
        "call_soon": lambda: loop.call_soon(noop),
        "call_later": lambda: loop.call_later(1, noop),
        "call_at": lambda: loop.call_at(loop.time() + 1, noop),
    }

    def other_thread():
        try:
            calls[method]()
            outcome.append("no error")
        except RuntimeError as exc:
            outcome.append(str(exc))
        finally:
            loop.call_soon_threadsafe(loop.stop)

    loop.call_soon(lambda: threading.Thread(target=other_thread).start())
    run_forever()
    assert len(outcome) == 1
    assert "Non-thread-safe operation invoked on an event loop other than the current one" in outcome[0]


def test_threadsafe_call_from_another_thread_is_fine_in_debug(loop, run_forever):
    loop.set_debug(True)
    seen = []

    def other_thread():
        loop.call_soon_threadsafe(seen.append, "from-thread")
        loop.call_soon_threadsafe(loop.stop)

    loop.call_soon(lambda: threading.Thread(target=other_thread).start())
    run_forever()
    assert seen == ["from-thread"]


def test_no_thread_check_when_not_running(loop):
    loop.set_debug(True)
    errors = []

    def other_thread():
        try:
            loop.call_soon(noop).cancel()
        except RuntimeError as exc:
            errors.append(exc)

    t = threading.Thread(target=other_thread)
    t.start()
    t.join(TIMEOUT)
    assert errors == []


# ------------------------------------------------------------------ callback checks


@pytest.mark.parametrize("bad", ["coroutine-function", "coroutine", "not-callable"])
@pytest.mark.parametrize("method", ["call_soon", "call_later", "call_at", "call_soon_threadsafe"])
def test_debug_rejects_bad_callbacks_like_asyncio(loop, bad, method):
    def make():
        if bad == "coroutine":
            return a_coroutine_function()
        return {"coroutine-function": a_coroutine_function, "not-callable": 42}[bad]

    def call(lp, cb):
        if method in ("call_soon", "call_soon_threadsafe"):
            return getattr(lp, method)(cb)
        if method == "call_later":
            return lp.call_later(1, cb)
        return lp.call_at(lp.time() + 1, cb)

    aio = asyncio.new_event_loop()
    aio.set_debug(True)
    loop.set_debug(True)
    cb = make()
    try:
        with pytest.raises(TypeError) as expected:
            call(aio, cb)
        with pytest.raises(TypeError) as got:
            call(loop, cb)
        # asyncio's call_later goes through call_at and names it in the message; either name is fine.
        assert str(got.value).replace("call_later()", "call_at()") == str(expected.value)
    finally:
        aio.close()
        if bad == "coroutine":
            cb.close()


def test_run_in_executor_rejects_coroutine_function_in_debug(loop):
    loop.set_debug(True)
    with pytest.raises(TypeError):
        loop.run_in_executor(None, a_coroutine_function)


# ------------------------------------------------------------------ source tracebacks


def test_handle_repr_has_source_location_in_debug(loop):
    loop.set_debug(True)
    h = loop.call_soon(noop); line = sys._getframe().f_lineno  # noqa: E702 - same line on purpose
    t = loop.call_later(10, noop); tline = sys._getframe().f_lineno  # noqa: E702
    assert repr(h).endswith(f"created at {__file__}:{line}>"), repr(h)
    assert repr(t).endswith(f"created at {__file__}:{tline}>"), repr(t)
    assert h._source_traceback[-1][0] == __file__
    h.cancel()
    t.cancel()


def test_no_source_traceback_outside_debug(loop):
    h = loop.call_soon(noop)
    assert "created at" not in repr(h)
    assert not h._source_traceback
    h.cancel()


def test_cancelled_handle_repr_keeps_callback_in_debug(loop):
    loop.set_debug(True)
    h = loop.call_soon(noop, "argument")
    h.cancel()
    r = repr(h)
    assert "cancelled" in r
    assert "noop('argument')" in r
    assert "created at" in r


def test_error_context_has_source_traceback_in_debug(loop, run_forever, caplog):
    caplog.set_level(logging.ERROR, logger="asyncio")
    loop.set_debug(True)
    contexts = []

    def handler(lp, ctx):
        contexts.append(ctx)
        lp.default_exception_handler(ctx)

    loop.set_exception_handler(handler)
    loop.call_soon(lambda: 1 / 0)
    loop.call_soon(loop.stop)
    run_forever()
    assert len(contexts) == 1
    assert "source_traceback" in contexts[0]
    assert contexts[0]["source_traceback"][-1][0] == __file__
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "Object created at (most recent call last)" in text


def test_coroutine_origin_tracking_while_running_in_debug(loop, run):
    loop.set_debug(True)
    before = sys.get_coroutine_origin_tracking_depth()

    async def main():
        return sys.get_coroutine_origin_tracking_depth()

    assert run(main()) == constants.DEBUG_STACK_DEPTH
    assert sys.get_coroutine_origin_tracking_depth() == before


def test_set_debug_while_running(loop, run):
    async def main():
        loop.set_debug(True)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        return loop.get_debug(), sys.get_coroutine_origin_tracking_depth()

    debug, depth = run(main())
    assert debug is True
    assert depth == constants.DEBUG_STACK_DEPTH
    assert sys.get_coroutine_origin_tracking_depth() == 0
