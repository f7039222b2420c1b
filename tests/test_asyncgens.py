# tests/test_asyncgens.py — the asyncgen hooks installed while the loop runs and restored afterwards,
# shutdown_asyncgens closing live generators, finalizing dropped generators, and errors while closing.

import asyncio
import gc
import sys
import warnings

import pytest

import zloop


def test_hooks_installed_while_running_and_restored(loop, run):
    def my_firstiter(agen):
        pass

    def my_finalizer(agen):
        pass

    old = sys.get_asyncgen_hooks()
    sys.set_asyncgen_hooks(firstiter=my_firstiter, finalizer=my_finalizer)
    try:
        async def main():
            return sys.get_asyncgen_hooks()

        inside = run(main())
        assert inside.firstiter is not None and inside.firstiter != my_firstiter
        assert inside.finalizer is not None and inside.finalizer != my_finalizer
        after = sys.get_asyncgen_hooks()
        assert after.firstiter is my_firstiter
        assert after.finalizer is my_finalizer
    finally:
        sys.set_asyncgen_hooks(*old)


def test_hooks_restored_after_an_exception(loop):
    old = sys.get_asyncgen_hooks()

    async def main():
        raise ValueError

    with pytest.raises(ValueError):
        loop.run_until_complete(main())
    assert sys.get_asyncgen_hooks() == old


def test_shutdown_asyncgens_closes_generators(loop, run):
    state = []

    async def agen(name):
        try:
            state.append(f"start {name}")
            yield 1
            yield 2
        finally:
            state.append(f"closed {name}")

    async def main():
        gens = [agen(i) for i in range(3)]
        for g in gens:
            await g.__anext__()
        await loop.shutdown_asyncgens()
        return gens

    gens = run(main())
    assert sorted(s for s in state if s.startswith("closed")) == ["closed 0", "closed 1", "closed 2"]
    del gens


def test_shutdown_asyncgens_reports_errors(loop, run):
    contexts = []
    loop.set_exception_handler(lambda lp, c: contexts.append(c))

    async def bad():
        try:
            yield 1
        finally:
            raise ValueError("in finally")

    async def main():
        g = bad()
        await g.__anext__()
        await loop.shutdown_asyncgens()
        return g

    g = run(main())
    assert len(contexts) == 1
    assert isinstance(contexts[0]["exception"], ValueError)
    assert "an error occurred during closing of asynchronous generator" in contexts[0]["message"]
    assert contexts[0]["asyncgen"] is g


def test_generator_started_after_shutdown_warns(loop, run):
    async def agen():
        yield 1

    async def main():
        await loop.shutdown_asyncgens()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            g = agen()
            await g.__anext__()
            await g.aclose()
        return [w for w in caught if issubclass(w.category, ResourceWarning)]

    caught = run(main())
    assert any("shutdown_asyncgens" in str(w.message) for w in caught)


def test_dropped_generator_is_finalized_on_the_loop(loop, run):
    state = []

    async def agen():
        try:
            yield 1
            yield 2
        finally:
            state.append(asyncio.get_running_loop() is loop)

    async def main():
        g = agen()
        await g.__anext__()
        del g
        gc.collect()
        for _ in range(10):
            if state:
                break
            await asyncio.sleep(0)
        return state

    assert run(main()) == [True]


@pytest.mark.zloop_only
def test_zloop_run_shuts_asyncgens_down(backend, monkeypatch):
    monkeypatch.setenv("ZLOOP_BACKEND", backend)
    state = []

    async def agen():
        try:
            yield 1
            yield 2
        finally:
            state.append("closed")

    async def main():
        g = agen()
        await g.__anext__()
        main.keep = g  # stays alive after main returns: only shutdown_asyncgens closes it

    zloop.run(main())
    assert state == ["closed"]
    del main.keep
