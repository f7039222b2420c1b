# tests/test_executor.py — run_in_executor (default and explicit executors), set_default_executor's type check,
# shutdown_default_executor (with a timeout on a stuck worker), and close() shutting the default executor down.

import asyncio
import concurrent.futures
import threading

import pytest

from conftest import TIMEOUT


def test_run_in_default_executor(loop, run):
    main_thread = threading.get_ident()

    def work(a, b):
        return a + b, threading.get_ident()

    async def main():
        return await loop.run_in_executor(None, work, 2, 3)

    result, thread = run(main())
    assert result == 5
    assert thread != main_thread


def test_run_in_executor_returns_an_asyncio_future(loop, run):
    async def main():
        fut = loop.run_in_executor(None, lambda: "x")
        assert isinstance(fut, asyncio.Future)
        assert fut.get_loop() is loop
        return await fut

    assert run(main()) == "x"


def test_run_in_explicit_executor(loop, run):
    with concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="explicit") as pool:
        async def main():
            return await loop.run_in_executor(pool, lambda: threading.current_thread().name)

        assert run(main()).startswith("explicit")


def test_executor_exception_propagates(loop, run):
    def fail():
        raise KeyError("from worker")

    async def main():
        await loop.run_in_executor(None, fail)

    with pytest.raises(KeyError):
        run(main())


def test_many_executor_jobs(loop, run):
    async def main():
        return await asyncio.gather(*(loop.run_in_executor(None, pow, i, 2) for i in range(100)))

    assert run(main()) == [i * i for i in range(100)]


def test_set_default_executor_type_check(loop, is_zloop):
    import sys
    if not is_zloop and sys.version_info < (3, 11):
        pytest.skip("stock asyncio before 3.11 only warns")
    with pytest.raises(TypeError):
        loop.set_default_executor(object())
    with pytest.raises(TypeError):
        loop.set_default_executor(None)


def test_set_default_executor_is_used(loop, run):
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="default-set")
    loop.set_default_executor(pool)

    async def main():
        return await loop.run_in_executor(None, lambda: threading.current_thread().name)

    try:
        assert run(main()).startswith("default-set")
    finally:
        pool.shutdown(wait=True)


def test_shutdown_default_executor(loop, run):
    async def main():
        await loop.run_in_executor(None, lambda: None)
        await loop.shutdown_default_executor()

    run(main())
    with pytest.raises(RuntimeError, match="Executor shutdown has been called"):
        loop.run_in_executor(None, lambda: None)


def test_shutdown_default_executor_without_executor(loop, run):
    run(loop.shutdown_default_executor())


def test_shutdown_default_executor_timeout(loop, run, is_zloop):
    import sys
    if not is_zloop and sys.version_info < (3, 13):
        pytest.skip("stock asyncio honours the timeout on a stuck worker from Python 3.13")
    release = threading.Event()
    started = threading.Event()

    def stuck():
        started.set()
        release.wait(TIMEOUT)

    async def main():
        loop.run_in_executor(None, stuck)
        await loop.run_in_executor(None, started.wait, TIMEOUT)
        with pytest.warns(RuntimeWarning, match="did not finish"):
            await loop.shutdown_default_executor(timeout=0.05)

    try:
        run(main())
    finally:
        release.set()


def test_close_shuts_the_default_executor_down(loop, run):
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    loop.set_default_executor(pool)
    run(loop.run_in_executor(None, lambda: None))
    loop.close()
    with pytest.raises(RuntimeError):
        pool.submit(lambda: None)
    pool.shutdown(wait=True)


def test_run_in_executor_on_closed_loop(loop):
    loop.close()
    with pytest.raises(RuntimeError, match="Event loop is closed"):
        loop.run_in_executor(None, lambda: None)
