# tests/test_tasks.py — create_future, create_task (name, context, eager_start), task factories, the C
# _asyncio Future/Task types, asyncio.run(loop_factory=), zloop.run, EventLoopPolicy/install, isinstance.

import asyncio
import contextvars
import sys
import warnings

import pytest

import zloop

from conftest import TIMEOUT

try:
    import _asyncio
except ImportError:  # pragma: no cover - CPython always has it
    _asyncio = None

PY311 = sys.version_info >= (3, 11)
PY312 = sys.version_info >= (3, 12)

var = contextvars.ContextVar("var", default="default")


def test_loop_is_an_abstract_event_loop(loop):
    assert isinstance(loop, asyncio.AbstractEventLoop)


def test_zloop_loop_class(backend):
    if backend == "asyncio":
        pytest.skip("zloop-specific")
    lp = zloop.new_event_loop(backend=backend)
    try:
        assert type(lp) is zloop.Loop
        assert issubclass(zloop.Loop, asyncio.AbstractEventLoop)
    finally:
        lp.close()


# ------------------------------------------------------------------ futures


def test_create_future_is_the_c_future(loop):
    fut = loop.create_future()
    assert isinstance(fut, asyncio.Future)
    if _asyncio is not None:
        assert type(fut) is _asyncio.Future
    assert fut.get_loop() is loop
    assert not fut.done()
    fut.cancel()


def test_future_round_trip(loop, run):
    async def main():
        fut = loop.create_future()
        loop.call_soon(fut.set_result, "value")
        return await fut

    assert run(main()) == "value"


def test_future_done_callbacks_run_in_order_on_the_loop(loop, run):
    seen = []

    async def main():
        fut = loop.create_future()
        for i in range(5):
            fut.add_done_callback(lambda f, i=i: seen.append((i, f.result())))
        fut.set_result("r")
        assert seen == []  # callbacks are scheduled, not called
        await asyncio.sleep(0)
        return list(seen)

    assert run(main()) == [(i, "r") for i in range(5)]


def test_future_exception_propagates(loop, run):
    async def main():
        fut = loop.create_future()
        loop.call_soon(fut.set_exception, KeyError("k"))
        await fut

    with pytest.raises(KeyError):
        run(main())


# ------------------------------------------------------------------ tasks


def test_create_task_is_the_c_task(loop, run):
    async def coro():
        return asyncio.current_task()

    task = loop.create_task(coro())
    assert isinstance(task, asyncio.Task)
    if _asyncio is not None:
        assert type(task) is _asyncio.Task
    assert task.get_loop() is loop
    assert run(task) is task
    assert task.done()


def test_create_task_name(loop, run):
    async def coro():
        return asyncio.current_task().get_name()

    named = loop.create_task(coro(), name="my-task")
    unnamed = loop.create_task(coro())
    assert named.get_name() == "my-task"
    assert unnamed.get_name().startswith("Task-")
    assert run(named) == "my-task"
    run(unnamed)


@pytest.mark.skipif(not PY311, reason="create_task(context=) is Python 3.11+")
def test_create_task_context(loop, run):
    ctx = contextvars.copy_context()
    ctx.run(var.set, "task-ctx")

    async def coro():
        await asyncio.sleep(0)
        value = var.get()
        var.set("changed")
        return value

    task = loop.create_task(coro(), context=ctx)
    assert run(task) == "task-ctx"
    assert ctx[var] == "changed"
    assert var.get() == "default"


@pytest.mark.skipif(PY311, reason="checks the error on Pythons before 3.11")
def test_create_task_context_rejected_before_311(loop):
    coro = asyncio.sleep(0)
    try:
        with pytest.raises(TypeError):
            loop.create_task(coro, context=contextvars.copy_context())
    finally:
        coro.close()


def test_task_runs_in_copy_of_current_context(loop, run):
    token = var.set("outer")
    try:
        async def coro():
            return var.get()
        task = loop.create_task(coro())
    finally:
        var.reset(token)
    assert run(task) == "outer"


@pytest.mark.zloop_only  # asyncio's loop.create_task takes no eager_start before 3.14
@pytest.mark.skipif(not PY312, reason="eager tasks are Python 3.12+")
def test_create_task_eager_start(loop, run):
    steps = []

    async def quick():
        steps.append("ran")
        return 5

    async def main():
        task = loop.create_task(quick(), eager_start=True)
        # Ran synchronously to completion inside create_task.
        assert steps == ["ran"]
        assert task.done()
        lazy = loop.create_task(quick(), eager_start=False)
        assert not lazy.done()
        await lazy
        return task.result()

    assert run(main()) == 5
    assert steps == ["ran", "ran"]


@pytest.mark.skipif(PY312, reason="checks the error on Pythons before 3.12")
def test_create_task_eager_start_rejected_before_312(loop):
    coro = asyncio.sleep(0)
    try:
        with pytest.raises(TypeError):
            loop.create_task(coro, eager_start=True)
    finally:
        coro.close()


@pytest.mark.skipif(not PY312, reason="eager_task_factory is Python 3.12+")
def test_eager_task_factory(loop, run):
    steps = []

    async def child():
        steps.append("child")
        await asyncio.sleep(0)
        return "c"

    async def main():
        loop.set_task_factory(asyncio.eager_task_factory)
        task = asyncio.ensure_future(child())
        assert steps == ["child"]  # started eagerly
        return await task

    assert run(main()) == "c"
    loop.set_task_factory(None)


def test_task_factory(loop, run):
    calls = []

    def factory(lp, coro, **kwargs):
        calls.append((lp, kwargs))
        return asyncio.Task(coro, loop=lp, **kwargs)

    assert loop.get_task_factory() is None
    loop.set_task_factory(factory)
    assert loop.get_task_factory() is factory

    async def coro():
        return 3

    task = loop.create_task(coro(), name="factory-made")
    assert task.get_name() == "factory-made"
    assert run(task) == 3
    assert calls and calls[0][0] is loop
    loop.set_task_factory(None)
    assert loop.get_task_factory() is None


@pytest.mark.skipif(not PY311, reason="create_task(context=) is Python 3.11+")
def test_task_factory_receives_context(loop, run):
    got = []

    def factory(lp, coro, **kwargs):
        got.append(kwargs.get("context"))
        return asyncio.Task(coro, loop=lp, **kwargs)

    loop.set_task_factory(factory)
    ctx = contextvars.copy_context()

    async def coro():
        return None

    run(loop.create_task(coro(), context=ctx))
    assert got[0] is ctx
    loop.set_task_factory(None)


def test_set_task_factory_type_check(loop):
    with pytest.raises(TypeError):
        loop.set_task_factory(42)


def test_gather_sleep_wait_for(loop, run):
    async def worker(i):
        await asyncio.sleep(0.001 * (i % 3))
        return i

    async def main():
        results = await asyncio.gather(*(worker(i) for i in range(50)))
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.sleep(3600), 0.01)
        return results

    assert run(main()) == list(range(50))


def test_task_cancellation(loop, run):
    async def sleeper():
        await asyncio.sleep(3600)

    async def main():
        task = loop.create_task(sleeper())
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return task.cancelled()

    assert run(main()) is True


def test_all_tasks_and_current_task(loop, run):
    async def sleeper():
        await asyncio.sleep(3600)

    async def main():
        others = [loop.create_task(sleeper()) for _ in range(3)]
        current = asyncio.current_task()
        tasks = asyncio.all_tasks()
        for t in others:
            t.cancel()
        await asyncio.gather(*others, return_exceptions=True)
        return current, tasks, others

    current, tasks, others = run(main())
    assert set(others) <= tasks
    assert current in tasks


def test_many_sleep_zero_iterations(loop, run):
    async def main():
        for _ in range(5000):
            await asyncio.sleep(0)
        return "ok"

    assert run(main()) == "ok"


# ------------------------------------------------------------------ entry points


@pytest.mark.skipif(not PY312, reason="asyncio.run(loop_factory=) is Python 3.12+")
def test_asyncio_run_with_loop_factory(backend):
    async def main():
        lp = asyncio.get_running_loop()
        await asyncio.sleep(0.001)
        return type(lp), getattr(lp, "get_backend", lambda: "asyncio")()

    if backend == "asyncio":
        kind, name = asyncio.run(main(), loop_factory=asyncio.new_event_loop)
    else:
        kind, name = asyncio.run(main(), loop_factory=lambda: zloop.new_event_loop(backend=backend))
        assert kind is zloop.Loop
    assert name == backend


@pytest.mark.skipif(not PY312, reason="asyncio.run(loop_factory=) is Python 3.12+")
def test_asyncio_run_with_zloop_new_event_loop():
    async def main():
        return type(asyncio.get_running_loop())

    assert asyncio.run(main(), loop_factory=zloop.new_event_loop) is zloop.Loop


@pytest.mark.zloop_only
def test_zloop_run(backend, monkeypatch):
    monkeypatch.setenv("ZLOOP_BACKEND", backend)

    async def main(x):
        lp = asyncio.get_running_loop()
        await asyncio.sleep(0.001)
        return x, type(lp), lp.get_backend(), lp.get_debug()

    assert zloop.run(main(1)) == (1, zloop.Loop, backend, False)
    assert zloop.run(main(2), debug=True) == (2, zloop.Loop, backend, True)
    assert asyncio._get_running_loop() is None


@pytest.mark.zloop_only
def test_zloop_run_closes_loop_and_cancels_leftover_tasks(backend, monkeypatch):
    monkeypatch.setenv("ZLOOP_BACKEND", backend)
    state = {}

    async def leftover():
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            state["cancelled"] = True
            raise

    async def main():
        state["loop"] = asyncio.get_running_loop()
        state["task"] = asyncio.ensure_future(leftover())
        await asyncio.sleep(0)
        return "done"

    assert zloop.run(main()) == "done"
    assert state.get("cancelled") is True
    assert state["loop"].is_closed()


def test_zloop_run_from_a_running_loop_fails_like_asyncio_run():
    async def inner():
        coro = asyncio.sleep(0)
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                with pytest.raises(RuntimeError) as info:
                    zloop.run(coro)
                import gc
                gc.collect()
        finally:
            coro.close()
        return str(info.value), [str(w.message) for w in caught]

    outer = zloop.new_event_loop()
    try:
        message, warned = outer.run_until_complete(asyncio.wait_for(inner(), TIMEOUT))
    finally:
        outer.close()
    # asyncio.run: "asyncio.run() cannot be called from a running event loop", raised before any loop is made.
    assert "cannot be called from a running event loop" in message
    assert not [w for w in warned if "never awaited" in w], warned


def test_zloop_run_rejects_non_coroutine_like_asyncio_run():
    try:
        asyncio.run(42)
    except Exception as exc:
        expected = type(exc)
    with pytest.raises(expected):
        zloop.run(42)


def test_zloop_run_propagates_exceptions():
    async def main():
        raise LookupError("x")

    with pytest.raises(LookupError):
        zloop.run(main())


@pytest.fixture
def restore_policy():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        yield
        asyncio.set_event_loop_policy(None)


def test_event_loop_policy(restore_policy):
    policy = zloop.EventLoopPolicy()
    assert isinstance(policy, asyncio.AbstractEventLoopPolicy)
    lp = policy.new_event_loop()
    try:
        assert type(lp) is zloop.Loop
        assert lp.get_backend() == zloop.default_backend()
    finally:
        lp.close()


@pytest.mark.zloop_only
def test_event_loop_policy_honours_zloop_backend(backend, monkeypatch, restore_policy):
    monkeypatch.setenv("ZLOOP_BACKEND", backend)
    lp = zloop.EventLoopPolicy().new_event_loop()
    try:
        assert lp.get_backend() == backend
    finally:
        lp.close()


def test_install(restore_policy):
    zloop.install()
    assert isinstance(asyncio.get_event_loop_policy(), zloop.EventLoopPolicy)
    lp = asyncio.new_event_loop()
    try:
        assert type(lp) is zloop.Loop

        async def main():
            return type(asyncio.get_running_loop())

        assert lp.run_until_complete(main()) is zloop.Loop
    finally:
        lp.close()


def test_install_then_asyncio_run(restore_policy):
    zloop.install()

    async def main():
        return type(asyncio.get_running_loop())

    assert asyncio.run(main()) is zloop.Loop


def _lookup_warnings(lookup):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        lookup()
    return [(w.category, str(w.message)) for w in caught]


def test_policy_class_warns_exactly_where_asyncios_does():
    # 3.14 deprecates asyncio's policy classes (removal in 3.16): looking one up warns; before 3.14 nothing does.
    stock = _lookup_warnings(lambda: asyncio.DefaultEventLoopPolicy)
    ours = _lookup_warnings(lambda: zloop.EventLoopPolicy)
    assert [category for category, _ in ours] == [category for category, _ in stock]
    for (_, stock_text), (_, our_text) in zip(stock, ours):
        assert stock_text.replace("asyncio.DefaultEventLoopPolicy", "zloop.EventLoopPolicy") == our_text
    assert ("EventLoopPolicy" in zloop.__all__) == (not stock)


def test_install_warns_once_where_asyncio_policies_are_deprecated(restore_policy):
    stock = _lookup_warnings(lambda: asyncio.set_event_loop_policy(None))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        zloop.install()
    assert [w.category for w in caught] == [w[0] for w in stock]
    # Blamed on the caller, as asyncio's own warning is.
    assert all(w.filename == __file__ for w in caught), [(w.filename, str(w.message)) for w in caught]


def test_zloop_run_has_asyncio_runs_signature():
    import inspect
    ours = inspect.signature(zloop.run).parameters
    stock = inspect.signature(asyncio.run).parameters
    # Python 3.11's asyncio.run has no loop_factory yet; zloop.run takes one there too.
    assert [(p.name, p.kind, p.default) for p in ours.values() if p.name in stock] == \
        [(p.name, p.kind, p.default) for p in stock.values()]
    assert list(ours) == ["main", "debug", "loop_factory"]


@pytest.mark.zloop_only
def test_zloop_run_with_a_loop_factory(backend):
    made = []

    def factory():
        made.append(zloop.new_event_loop(backend=backend))
        return made[-1]

    async def main():
        return asyncio.get_running_loop()

    assert zloop.run(main(), loop_factory=factory) is made[0]
    assert len(made) == 1 and made[0].is_closed() and made[0].get_backend() == backend


# ------------------------------------------------------------------ asyncio helpers built on the loop API


@pytest.mark.skipif(not PY311, reason="asyncio.timeout is Python 3.11+")
def test_asyncio_timeout_and_reschedule(loop, run):
    async def main():
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.01):
                await asyncio.sleep(3600)
        async with asyncio.timeout(3600) as cm:
            cm.reschedule(loop.time() + 7200)
            assert cm.when() == pytest.approx(loop.time() + 7200, abs=1.0)
            await asyncio.sleep(0)
        return "ok"

    assert run(main()) == "ok"


@pytest.mark.skipif(not PY311, reason="asyncio.TaskGroup is Python 3.11+")
def test_task_group(loop, run):
    async def child(i):
        await asyncio.sleep(0.001 * i)
        return i

    async def main():
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(child(i)) for i in range(10)]
        return [t.result() for t in tasks]

    assert run(main()) == list(range(10))


def test_to_thread_keeps_context(loop, run):
    if not hasattr(asyncio, "to_thread"):
        pytest.skip("asyncio.to_thread is Python 3.9+")
    token = var.set("for-thread")
    try:
        async def main():
            return await asyncio.to_thread(var.get)
        result = run(main())
    finally:
        var.reset(token)
    assert result == "for-thread"


def test_run_coroutine_threadsafe(loop):
    import threading
    results = []

    async def add(a, b):
        await asyncio.sleep(0.001)
        return a + b

    def other_thread():
        fut = asyncio.run_coroutine_threadsafe(add(2, 3), loop)
        results.append(fut.result(TIMEOUT))
        loop.call_soon_threadsafe(loop.stop)

    t = threading.Thread(target=other_thread)
    loop.call_soon(t.start)
    guard = loop.call_later(TIMEOUT, loop.stop)
    loop.run_forever()
    guard.cancel()
    t.join(TIMEOUT)
    assert results == [5]


def test_wait_and_as_completed(loop, run):
    async def child(i):
        await asyncio.sleep(0.002 * (5 - i))
        return i

    async def main():
        tasks = [loop.create_task(child(i)) for i in range(5)]
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        assert len(done) >= 1
        order = [await f for f in asyncio.as_completed(tasks)]
        return sorted(order)

    assert run(main()) == list(range(5))


def test_shield_and_cancel_in_flight(loop, run):
    async def inner():
        await asyncio.sleep(0.01)
        return "inner"

    async def main():
        inner_task = loop.create_task(inner())
        outer = asyncio.shield(inner_task)
        await asyncio.sleep(0)
        outer.cancel()
        with pytest.raises(asyncio.CancelledError):
            await outer
        return await inner_task

    assert run(main()) == "inner"


def test_tasks_run_when_asyncio_uses_its_pure_python_running_loop(loop, backend, monkeypatch):
    # CPython's TestPyGetEventLoop swaps in asyncio's pure-Python running-loop functions and Task/Future classes;
    # the loop must still run its tasks (zloop's C tasks read _asyncio's own record of the running loop).
    from asyncio import events, futures, tasks
    if not hasattr(events, "_py__set_running_loop") or not hasattr(tasks, "_PyTask"):
        pytest.skip("no pure-Python asyncio running-loop functions here")
    if backend == "asyncio" and sys.version_info < (3, 14):
        pytest.skip("stock ensure_future asks the pure-Python get_event_loop, which has no loop set here before 3.14")
    for name in ("_get_running_loop", "_set_running_loop", "get_running_loop", "get_event_loop"):
        monkeypatch.setattr(events, name, getattr(events, "_py_" + name))
    monkeypatch.setattr(asyncio, "Task", tasks._PyTask)
    monkeypatch.setattr(tasks, "Task", tasks._PyTask)
    monkeypatch.setattr(asyncio, "Future", futures._PyFuture)
    monkeypatch.setattr(futures, "Future", futures._PyFuture)

    async def main():
        await asyncio.sleep(0.001)
        child = asyncio.ensure_future(asyncio.sleep(0, result="child"))
        return events.get_running_loop(), await child

    rescue = loop.call_later(TIMEOUT, loop.stop)   # a task that never runs must fail the test, not hang it
    try:
        assert loop.run_until_complete(main()) == (loop, "child")
    finally:
        rescue.cancel()
    assert events._get_running_loop() is None


def test_create_task_makes_a_swapped_in_task_class(loop, monkeypatch):
    # Stock create_task looks asyncio.tasks.Task up on every call; CPython's tests swap in the pure-Python Task
    # and then expect all_tasks() (the pure-Python one, which sees only those) to list the loop's tasks.
    from asyncio import tasks
    if not hasattr(tasks, "_PyTask"):
        pytest.skip("no pure-Python Task here")
    monkeypatch.setattr(tasks, "Task", tasks._PyTask)

    async def main():
        task = loop.create_task(asyncio.sleep(0, result="done"), name="swapped")
        return type(task), task.get_name(), await task

    rescue = loop.call_later(TIMEOUT, loop.stop)   # (no wait_for: asyncio.timeout needs the C current task)
    try:
        assert loop.run_until_complete(main()) == (tasks._PyTask, "swapped", "done")
    finally:
        rescue.cancel()
    monkeypatch.undo()
    task = loop.create_task(asyncio.sleep(0))
    assert type(task) is tasks.Task
    loop.run_until_complete(task)
