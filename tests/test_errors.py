# tests/test_errors.py — exception handlers (call_exception_handler, default_exception_handler,
# set/get_exception_handler); an exception in a callback never stops the loop and reaches the handler with
# asyncio's context keys; KeyboardInterrupt/SystemExit escape run_forever and leave the loop reusable.

import asyncio
import gc
import logging
import socket

import pytest

from conftest import TIMEOUT


def failing_callback(*args):
    raise ZeroDivisionError("in callback")


def collect_context(lp, trigger):
    """Run trigger(lp) on a loop with a recording exception handler; return the contexts it got."""
    contexts = []
    lp.set_exception_handler(lambda l, c: contexts.append(c))
    trigger(lp)
    guard = lp.call_later(TIMEOUT, lp.stop)
    lp.call_soon(lambda: lp.call_soon(lp.stop))
    lp.run_forever()
    guard.cancel()
    return contexts


def test_exception_handler_get_set(loop):
    assert loop.get_exception_handler() is None

    def handler(lp, ctx):
        pass

    loop.set_exception_handler(handler)
    assert loop.get_exception_handler() is handler
    loop.set_exception_handler(None)
    assert loop.get_exception_handler() is None
    with pytest.raises(TypeError):
        loop.set_exception_handler("not callable")


def test_callback_exception_does_not_stop_the_loop(loop, run_forever):
    seen = []
    contexts = []
    loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))
    loop.call_soon(failing_callback)
    loop.call_soon(seen.append, "after")
    loop.call_later(0, failing_callback)
    loop.call_later(0.001, seen.append, "timer-after")
    loop.call_later(0.002, loop.stop)
    run_forever()
    assert seen == ["after", "timer-after"]
    assert len(contexts) == 2


def test_callback_exception_context_matches_asyncio(loop):
    aio = asyncio.new_event_loop()
    try:
        expected = collect_context(aio, lambda lp: lp.call_soon(failing_callback, 1, "x"))
    finally:
        aio.close()
    handles = []
    got = collect_context(loop, lambda lp: handles.append(lp.call_soon(failing_callback, 1, "x")))
    assert len(got) == len(expected) == 1
    ctx, ref = got[0], expected[0]
    assert set(ctx) == set(ref)  # message, exception, handle
    assert ctx["message"] == ref["message"]
    assert ctx["message"].startswith("Exception in callback failing_callback(")  # arguments shown before 3.13
    assert isinstance(ctx["exception"], ZeroDivisionError)
    assert ctx["exception"].__traceback__ is not None
    assert ctx["handle"] is handles[0]


def test_timer_callback_exception_context(loop):
    handles = []
    got = collect_context(loop, lambda lp: handles.append(lp.call_later(0, failing_callback)))
    assert len(got) == 1
    assert got[0]["handle"] is handles[0]
    assert isinstance(got[0]["exception"], ZeroDivisionError)


def test_reader_callback_exception_context(loop, run_forever):
    a, b = socket.socketpair()
    contexts = []
    try:
        def reader():
            a.recv(100)
            loop.remove_reader(a)
            loop.call_soon(loop.stop)
            raise ValueError("reader")

        loop.set_exception_handler(lambda lp, c: contexts.append(c))
        loop.add_reader(a, reader)
        b.send(b"x")
        run_forever()
    finally:
        a.close()
        b.close()
    assert len(contexts) == 1
    assert isinstance(contexts[0]["exception"], ValueError)
    assert "handle" in contexts[0]


def test_default_exception_handler_logs(loop, run_forever, caplog):
    caplog.set_level(logging.ERROR, logger="asyncio")
    loop.call_soon(failing_callback)
    loop.call_soon(loop.stop)
    run_forever()
    records = [r for r in caplog.records if r.name == "asyncio"]
    assert len(records) == 1
    assert records[0].getMessage().startswith("Exception in callback failing_callback()")
    assert records[0].exc_info and records[0].exc_info[0] is ZeroDivisionError


def test_call_exception_handler_without_handler_logs(loop, caplog):
    caplog.set_level(logging.ERROR, logger="asyncio")
    loop.call_exception_handler({"message": "custom message", "extra_key": "extra value"})
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "custom message" in text
    assert "extra_key: 'extra value'" in text


def test_default_exception_handler_direct(loop, caplog):
    caplog.set_level(logging.ERROR, logger="asyncio")
    try:
        raise KeyError("direct")
    except KeyError as exc:
        loop.default_exception_handler({"message": "direct call", "exception": exc})
    assert len(caplog.records) == 1
    assert caplog.records[0].getMessage().startswith("direct call")
    assert caplog.records[0].exc_info[0] is KeyError


def test_default_exception_handler_without_message(loop, caplog):
    caplog.set_level(logging.ERROR, logger="asyncio")
    loop.default_exception_handler({})
    assert caplog.records[0].getMessage().startswith("Unhandled exception in event loop")


def test_call_exception_handler_uses_custom_handler(loop):
    got = []
    loop.set_exception_handler(lambda lp, ctx: got.append((lp, ctx)))
    ctx = {"message": "hello"}
    loop.call_exception_handler(ctx)
    assert got == [(loop, ctx)]


def test_failing_custom_handler_falls_back_to_default(loop, caplog):
    caplog.set_level(logging.ERROR, logger="asyncio")

    def bad_handler(lp, ctx):
        raise RuntimeError("handler broke")

    loop.set_exception_handler(bad_handler)
    loop.call_exception_handler({"message": "original"})
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "Unhandled error in exception handler" in text


def test_custom_handler_can_delegate_to_default(loop, run_forever, caplog):
    caplog.set_level(logging.ERROR, logger="asyncio")
    calls = []

    def handler(lp, ctx):
        calls.append(ctx["message"])
        lp.default_exception_handler(ctx)

    loop.set_exception_handler(handler)
    loop.call_soon(failing_callback)
    loop.call_soon(loop.stop)
    run_forever()
    assert len(calls) == 1
    assert any("Exception in callback" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
def test_handler_raising_base_exception_propagates(loop, exc_type, run_forever):
    def handler(lp, ctx):
        raise exc_type()

    loop.set_exception_handler(handler)
    loop.call_soon(failing_callback)
    guard = loop.call_later(TIMEOUT, loop.stop)
    with pytest.raises(exc_type):
        loop.run_forever()
    guard.cancel()
    assert not loop.is_running()


# ------------------------------------------------------------------ KeyboardInterrupt / SystemExit


def raise_it(exc_type):
    raise exc_type()


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
def test_base_exception_in_callback_escapes_run_forever(loop, exc_type, run_forever):
    seen = []
    handled = []
    loop.set_exception_handler(lambda lp, c: handled.append(c))
    loop.call_soon(seen.append, "before")
    loop.call_soon(raise_it, exc_type)
    loop.call_soon(seen.append, "after")
    guard = loop.call_later(TIMEOUT, loop.stop)
    with pytest.raises(exc_type):
        loop.run_forever()
    guard.cancel()
    assert handled == []  # not an error to report: it ends the run
    assert not loop.is_running()
    assert asyncio._get_running_loop() is None
    assert seen == ["before"]
    # The loop is reusable and what was still queued runs next time.
    loop.call_soon(loop.stop)
    run_forever()
    assert seen == ["before", "after"]


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
def test_base_exception_in_timer_escapes_run_forever(loop, exc_type, run):
    guard = loop.call_later(TIMEOUT, loop.stop)
    loop.call_later(0.001, raise_it, exc_type)
    with pytest.raises(exc_type):
        loop.run_forever()
    guard.cancel()
    assert run(asyncio.sleep(0, "reusable")) == "reusable"


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
def test_base_exception_in_coroutine_escapes_run_until_complete(loop, exc_type, run):
    async def main():
        await asyncio.sleep(0)
        raise exc_type()

    with pytest.raises(exc_type):
        loop.run_until_complete(main())
    assert not loop.is_running()
    assert run(asyncio.sleep(0.001, "reusable")) == "reusable"


def test_task_exception_never_retrieved_is_reported(loop, run):
    contexts = []
    loop.set_exception_handler(lambda lp, c: contexts.append(c))

    async def failing():
        raise ValueError("never retrieved")

    async def main():
        loop.create_task(failing())
        await asyncio.sleep(0)
        await asyncio.sleep(0)

    run(main())
    gc.collect()
    assert any(c.get("message") == "Task exception was never retrieved" and
               isinstance(c.get("exception"), ValueError) for c in contexts), contexts


def test_exception_in_future_callback_is_reported(loop, run):
    contexts = []
    loop.set_exception_handler(lambda lp, c: contexts.append(c))

    async def main():
        fut = loop.create_future()
        fut.add_done_callback(lambda f: 1 / 0)
        fut.set_result(None)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        return "survived"

    assert run(main()) == "survived"
    assert len(contexts) == 1
    assert isinstance(contexts[0]["exception"], ZeroDivisionError)


def test_many_failing_callbacks(loop, run_forever):
    count = []
    loop.set_exception_handler(lambda lp, c: count.append(1))
    for _ in range(500):
        loop.call_soon(failing_callback)
    loop.call_soon(loop.stop)
    run_forever()
    assert len(count) == 500
