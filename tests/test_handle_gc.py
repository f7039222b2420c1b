# tests/test_handle_gc.py — handles and the cyclic GC: a cycle through a callback's closure is collected once the
# handle ran, was cancelled, or its loop was closed or dropped, and is never freed while the handle is queued.
# zloop's queued handles are not tracked by the GC (core/handle_gc.h; docs/architecture.md, "Handles and the GC").

import asyncio
import contextvars
import gc
import threading
import warnings
import weakref

import pytest

from conftest import new_loop


class Node:
    """One end of a cycle: node.handle -> callback closure -> node."""

    value = 42


def cycle_through(schedule, first=None):
    """Make node -> handle -> closure -> node with the handle schedule(callback) returns; return (node's weakref,
    the list the callback appends node.value to, after calling first() if given)."""
    node = Node()
    seen = []

    def callback(*args):
        if first is not None:
            first()
        seen.append(node.value)

    node.handle = schedule(callback)
    return weakref.ref(node), seen


def run_one_iteration(loop):
    loop.run_until_complete(asyncio.sleep(0))


SCHEDULERS = {
    "call_soon": lambda loop: lambda cb: loop.call_soon(cb),
    "call_soon_args": lambda loop: lambda cb: loop.call_soon(cb, 1, "two", [3], {4: 4}),
    "call_later0": lambda loop: lambda cb: loop.call_later(0, cb),
    "call_at_now": lambda loop: lambda cb: loop.call_at(loop.time(), cb),
    "call_soon_threadsafe": lambda loop: lambda cb: loop.call_soon_threadsafe(cb),
}


@pytest.fixture(params=sorted(SCHEDULERS))
def schedule(request, loop):
    return SCHEDULERS[request.param](loop)


def test_cycle_collected_after_the_handle_ran(loop, schedule):
    ref, seen = cycle_through(schedule)
    run_one_iteration(loop)
    run_one_iteration(loop)
    assert seen == [42]
    gc.collect()
    assert ref() is None, "a cycle through a handle that ran was not collected"


def test_queued_handle_keeps_its_cycle_alive(loop, schedule):
    ref, seen = cycle_through(schedule)
    gc.collect()
    gc.collect()
    assert ref() is not None, "the GC freed a cycle the loop still needs"
    run_one_iteration(loop)
    run_one_iteration(loop)
    assert seen == [42]
    gc.collect()
    assert ref() is None


@pytest.mark.parametrize("delay", [None, 0, 3600])
def test_cycle_collected_after_cancel(loop, delay):
    schedule = loop.call_soon if delay is None else lambda cb: loop.call_later(delay, cb)
    ref, seen = cycle_through(schedule)
    ref().handle.cancel()
    gc.collect()
    assert ref() is None, "a cycle through a cancelled handle was not collected"
    run_one_iteration(loop)
    assert seen == []


def test_cycle_through_cancelled_handle_collected_while_it_is_still_in_the_heap(loop):
    refs = [cycle_through(lambda cb: loop.call_later(3600, cb))[0] for _ in range(5)]
    for ref in refs:
        ref().handle.cancel()
    gc.collect()
    assert [ref() for ref in refs] == [None] * 5


@pytest.mark.parametrize("delay", [None, 0, 3600])
def test_cycle_collected_after_close(backend, delay):
    loop = new_loop(backend)
    schedule = loop.call_soon if delay is None else lambda cb: loop.call_later(delay, cb)
    ref, seen = cycle_through(schedule)
    loop.close()
    gc.collect()
    assert ref() is None, "a cycle through a handle of a closed loop was not collected"
    assert seen == []


@pytest.mark.parametrize("delay", [None, 0, 3600])
def test_cycle_and_loop_collected_when_the_loop_is_dropped(backend, delay):
    loop = new_loop(backend)
    loop_ref = weakref.ref(loop)
    schedule = loop.call_soon if delay is None else lambda cb: loop.call_later(delay, cb)
    ref, _ = cycle_through(schedule)
    ref().loop = loop   # and through the loop: node -> loop -> queued handle -> closure -> node
    del loop, schedule
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)   # the unclosed loop says so when collected
        gc.collect()
        gc.collect()
    assert ref() is None, "a cycle through a dropped loop's queued handle leaked"
    assert loop_ref() is None, "the dropped loop leaked"


def test_collection_while_callbacks_run_frees_nothing_they_need(loop):
    """A collection inside a callback, with cycles through handles queued behind it, through the handle being
    run, and through a timer moved from the heap to the ready queue in this iteration."""
    results = []
    refs = []

    def collect_and_check():
        gc.collect()
        results.append("collected")

    loop.call_soon(collect_and_check)
    for _ in range(3):
        refs.append(cycle_through(loop.call_soon))
        refs.append(cycle_through(lambda cb: loop.call_later(0, cb)))
    running = cycle_through(loop.call_soon, first=gc.collect)
    run_one_iteration(loop)
    run_one_iteration(loop)
    assert results == ["collected"]
    assert running[1] == [42]
    refs.append(running)
    assert [seen for _, seen in refs] == [[42]] * 7
    gc.collect()
    assert [ref() for ref, _ in refs] == [None] * 7


def test_handle_held_from_python_after_it_ran(loop):
    def callback(x):
        pass

    def context_of(handle):   # Handle.get_context() is new in 3.12
        return handle.get_context() if hasattr(handle, "get_context") else handle._context

    handle = loop.call_soon(callback, "arg")
    context = context_of(handle)
    run_one_iteration(loop)
    assert context_of(handle) is context
    assert not handle.cancelled()
    assert "callback" in repr(handle)
    handle.cancel()
    assert handle.cancelled()
    assert context_of(handle) is context
    gc.collect()
    assert context_of(handle) is context


VAR = contextvars.ContextVar("test_handle_gc")


def cycle_through_context(schedule):
    """node -> handle -> its copied context -> VAR's value -> node, made in a context of its own; return (node's
    weakref, the list the callback appends what it sees in VAR to)."""
    seen = []

    def callback():
        seen.append(VAR.get().value)

    def make():
        node = Node()
        VAR.set(node)
        node.handle = schedule(callback)
        return weakref.ref(node)

    return contextvars.copy_context().run(make), seen


def crowd(loop, count):
    """Queue count handles that do nothing: past a few hundred queued handles, zloop also leaves the contexts
    handles copy untracked (core/handle.c), a path of its own."""
    for _ in range(count):
        loop.call_soon(int)


@pytest.mark.parametrize("queued", [0, 1000])
@pytest.mark.parametrize("delay", [None, 0, 3600])
def test_cycle_through_the_copied_context(loop, delay, queued):
    crowd(loop, queued)
    schedule = loop.call_soon if delay is None else lambda cb: loop.call_later(delay, cb)
    ran, ran_seen = cycle_through_context(schedule)
    cancelled, cancelled_seen = cycle_through_context(schedule)
    cancelled().handle.cancel()
    exposed, _ = cycle_through_context(schedule)
    context = exposed().handle._context   # handed out to Python while queued
    gc.collect()
    assert ran() is not None, "the GC freed what a queued handle's context holds"
    assert context.get(VAR) is exposed()
    del context
    if delay != 3600:
        run_one_iteration(loop)
        run_one_iteration(loop)
        assert ran_seen == [42]
    assert cancelled_seen == []
    loop.close()
    gc.collect()
    assert (ran(), cancelled(), exposed()) == (None, None, None), "a cycle through a handle's context leaked"


@pytest.mark.zloop_only
def test_queued_handles_are_not_tracked_by_the_gc(loop):
    soon = loop.call_soon(lambda: None)
    timer = loop.call_later(3600, lambda: None)
    assert not gc.is_tracked(soon)
    assert not gc.is_tracked(timer)
    assert gc.is_tracked(timer.get_context()), "a context handed out must be tracked"
    run_one_iteration(loop)
    # Still held here once the loop let go of it: an ordinary tracked object from then on.
    assert gc.is_tracked(soon)
    timer.cancel()
    loop.close()
    assert gc.is_tracked(timer)


@pytest.mark.zloop_only
def test_gc_referents_of_the_loop_reach_what_queued_handles_hold(loop):
    marker = Node()
    loop.call_soon(lambda x: None, marker)
    assert any(obj is marker for obj in gc.get_referents(loop))


def test_collections_at_every_allocation_free_nothing_in_use(loop, run):
    """With the collector run on (nearly) every allocation: handles queued, run, cancelled, due timers, contexts
    handed out, thread-safe calls; every cycle made is collected in the end."""
    refs = []
    seen = []

    async def churn():
        for i in range(200):
            node = Node()
            VAR.set(node)
            node.soon = loop.call_soon(seen.append, node)
            node.due = loop.call_later(0, seen.append, node)
            node.later = loop.call_later(3600, seen.append, node)
            node.later.cancel()
            if i % 3 == 0:
                node.due.cancel()
            if i % 5 == 0:
                node.context = node.soon._context
            refs.append(weakref.ref(node))
            if i % 40 == 0:
                await asyncio.sleep(0)
        producer = threading.Thread(target=lambda: [loop.call_soon_threadsafe(seen.append, j) for j in range(100)])
        producer.start()
        producer.join()
        await asyncio.sleep(0.01)

    crowd(loop, 1000)
    thresholds = gc.get_threshold()
    gc.set_threshold(1, 1, 1)
    try:
        run(churn())
    finally:
        gc.set_threshold(*thresholds)
    assert len(seen) == 200 + (200 - 67) + 100
    seen.clear()
    loop.close()
    gc.collect()
    assert sum(ref() is not None for ref in refs) == 0
