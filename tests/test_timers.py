# tests/test_timers.py — call_later/call_at: ordering (FIFO for equal deadlines), cancel, when(), TimerHandle repr
# and comparisons, time() on the time.monotonic() clock with sub-millisecond resolution, heap compaction.

import asyncio
import math
import random
import sys
import time
from unittest import mock

import pytest

import zloop

from conftest import WAKE_BOUND


def noop(*args):
    pass


def test_call_later_fires_in_deadline_order(loop, run_forever):
    seen = []
    for delay in (0.04, 0.0, 0.02, 0.01, 0.03):
        loop.call_later(delay, seen.append, delay)
    loop.call_later(0.05, loop.stop)
    run_forever()
    assert seen == [0.0, 0.01, 0.02, 0.03, 0.04]


@pytest.mark.zloop_only  # asyncio's heap is not stable for equal deadlines; zloop promises FIFO
def test_equal_deadlines_fire_in_scheduling_order(loop, run_forever):
    seen = []
    when = loop.time() + 0.01
    for i in range(100):
        loop.call_at(when, seen.append, i)
    loop.call_at(when, loop.stop)
    run_forever()
    assert seen == list(range(100))


def test_call_later_zero_is_fifo(loop, run_forever):
    seen = []
    for i in range(50):
        loop.call_later(0, seen.append, i)
    loop.call_later(0, loop.stop)
    run_forever()
    assert seen == list(range(50))


@pytest.mark.zloop_only  # FIFO among equal deadlines is zloop's promise, not asyncio's
def test_many_timers_fire_sorted_by_deadline_then_sequence(loop, run_forever):
    rng = random.Random(1234)
    base = loop.time() - 1.0  # all already due: they fire in one iteration, in heap order
    entries = [(base + rng.choice([0.0, 0.001, 0.002, 0.5, 0.7]) + rng.randrange(20) * 1e-3, i)
               for i in range(1000)]
    seen = []
    for when, i in entries:
        loop.call_at(when, seen.append, i)
    loop.call_soon(lambda: loop.call_soon(loop.stop))
    run_forever()
    assert seen == [i for when, i in sorted(entries)]


def test_ready_callbacks_run_before_timers_due_in_the_same_iteration(loop, run_forever):
    seen = []
    loop.call_later(0, seen.append, "timer")
    loop.call_soon(seen.append, "soon")
    loop.call_later(0, loop.stop)
    run_forever()
    assert seen == ["soon", "timer"]


def test_zero_delay_timers_merge_with_heap_timers_by_deadline(loop, run_forever):
    """call_later(0) timers (which zloop keeps out of its heap) and heap timers due in the same iteration run
    in deadline order, as from one heap."""
    seen = []

    def schedule():
        now = loop.time()
        loop.call_later(0, seen.append, "zero-1")
        loop.call_at(now - 10, seen.append, "past")          # earlier deadline, scheduled later
        loop.call_later(-5, seen.append, "negative")
        loop.call_later(0.002, seen.append, "heap")         # due only after the wait below
        time.sleep(0.005)
        loop.call_later(0, seen.append, "zero-2")           # deadline after "heap"'s
        loop.call_soon(seen.append, "soon")
        loop.call_later(0, loop.stop)

    loop.call_soon(schedule)
    run_forever()
    assert seen == ["soon", "past", "negative", "zero-1", "heap", "zero-2"]


def test_cancelled_zero_delay_timer_does_not_run(loop, run_forever):
    seen = []
    handles = [loop.call_later(0, seen.append, i) for i in range(6)]
    for h in handles[::2]:
        h.cancel()
    loop.call_later(0, loop.stop)
    run_forever()
    assert seen == [1, 3, 5]
    assert all(h.cancelled() for h in handles[::2])


def test_past_deadline_and_negative_delay_run(loop, run_forever):
    seen = []
    loop.call_at(loop.time() - 100, seen.append, "past")
    loop.call_later(-5, seen.append, "negative")
    loop.call_later(0, loop.stop)
    run_forever()
    assert seen == ["past", "negative"]


def test_timer_arguments_and_context(loop, run_forever):
    import contextvars
    var = contextvars.ContextVar("v")
    ctx = contextvars.copy_context()
    ctx.run(var.set, "ctx")
    got = []
    loop.call_later(0, lambda *a: got.append((a, var.get("none"))), 1, 2, 3, 4, 5, context=ctx)
    loop.call_at(loop.time(), lambda *a: got.append((a, var.get("none"))), "x")
    loop.call_later(0, loop.stop)
    run_forever()
    assert got == [((1, 2, 3, 4, 5), "ctx"), (("x",), "none")]


def test_timer_never_fires_early(loop, run_forever):
    fired = []
    handles = []
    for delay in (0.001, 0.01, 0.03):
        handles.append(loop.call_later(delay, lambda: fired.append(loop.time())))
    loop.call_later(0.04, loop.stop)
    run_forever()
    assert len(fired) == 3
    resolution = getattr(loop, "_clock_resolution", 1e-9)
    for h, t in zip(handles, fired):
        assert t >= h.when() - resolution - 1e-9, "timer callback ran before its deadline"


def test_timer_wakes_a_blocked_loop(loop, run_forever):
    # Nothing else scheduled: the poll must return for the timer (generous bound, no precision check).
    started = time.monotonic()
    loop.call_later(0.05, loop.stop)
    run_forever()
    assert time.monotonic() - started < WAKE_BOUND


def test_far_timers_do_not_block_ready_work(loop, run_forever):
    seen = []
    far = loop.call_later(1e9, seen.append, "far")
    inf = loop.call_at(float("inf"), seen.append, "inf")
    started = time.monotonic()
    loop.call_soon(loop.stop)
    run_forever()
    assert seen == []
    assert time.monotonic() - started < WAKE_BOUND
    far.cancel()
    inf.cancel()


def test_call_later_argument_errors(loop, is_zloop):
    with pytest.raises(TypeError):
        loop.call_later(None, noop)
    if is_zloop or sys.version_info >= (3, 11):  # stock asyncio before 3.11 fails an assert instead
        with pytest.raises(TypeError):
            loop.call_at(None, noop)
    with pytest.raises(TypeError):
        loop.call_later("1", noop)
    with pytest.raises(TypeError):
        loop.call_later(1)
    with pytest.raises(TypeError):
        loop.call_later(1, noop, bogus=1)


def test_call_later_accepts_int_delay(loop):
    h = loop.call_later(1, noop)
    assert isinstance(h.when(), float)
    h.cancel()


# ------------------------------------------------------------------ cancel


def test_cancelled_timer_does_not_run(loop, run_forever):
    seen = []
    h = loop.call_later(0, seen.append, "x")
    h.cancel()
    assert h.cancelled()
    loop.call_later(0.01, loop.stop)
    run_forever()
    assert seen == []


def test_timer_cancelled_by_earlier_timer_in_same_iteration(loop, run_forever):
    seen = []
    when = loop.time()
    holder = []
    loop.call_at(when, lambda: holder[0].cancel())
    holder.append(loop.call_at(when, seen.append, "x"))
    loop.call_at(when, loop.stop)
    run_forever()
    assert seen == []


def test_timer_schedules_call_soon_for_next_iteration(loop, run_forever):
    seen = []

    def timer_cb():
        seen.append("timer")
        loop.call_soon(seen.append, "soon")
        loop.stop()

    loop.call_later(0, timer_cb)
    run_forever()
    assert seen == ["timer"]
    loop.call_soon(loop.stop)
    run_forever()
    assert seen == ["timer", "soon"]


# ------------------------------------------------------------------ when() and TimerHandle


def test_when_of_call_later(loop):
    t0 = loop.time()
    h = loop.call_later(10, noop)
    t1 = loop.time()
    assert t0 + 10 <= h.when() <= t1 + 10
    h.cancel()
    assert t0 + 10 <= h.when() <= t1 + 10


def test_when_of_call_at_is_exact(loop):
    when = loop.time() + 123.456789
    h = loop.call_at(when, noop)
    assert h.when() == when
    h.cancel()


def test_when_of_call_at_keeps_an_int_deadline(loop):
    # asyncio's TimerHandle keeps `when` as given; aiohttp rounds deadlines up with ceil() and checks for an int.
    when = math.ceil(loop.time() + 100)
    h = loop.call_at(when, noop)
    assert type(h.when()) is int and h.when() == when
    assert type(h._when) is int
    h.cancel()
    assert type(h.when()) is int
    later = loop.call_at(when + 1, noop)
    assert h < later and hash(h) == hash(float(when))
    later.cancel()


def test_call_at_on_a_closed_loop_refuses_before_looking_at_the_deadline(loop):
    # asyncio: None is a TypeError first, anything else a RuntimeError once closed (differential fuzzer).
    loop.close()
    with pytest.raises(TypeError):
        loop.call_at(None, noop)
    for when in ("1", [], 1.0):
        with pytest.raises(RuntimeError):
            loop.call_at(when, noop)


def test_timer_handle_type(loop, is_zloop):
    h = loop.call_later(1, noop)
    if is_zloop:
        assert isinstance(h, zloop.TimerHandle)
        assert isinstance(h, zloop.Handle)
    else:
        assert isinstance(h, asyncio.TimerHandle)
    h.cancel()


def test_timer_handle_ordering(loop):
    base = loop.time() + 100
    a = loop.call_at(base + 1, noop)
    b = loop.call_at(base + 2, noop)
    c = loop.call_at(base + 3, noop)
    assert a < b < c
    assert c > b > a
    assert a <= a and a >= a
    assert a <= b and not (b <= a)
    assert sorted([c, a, b]) == [a, b, c]
    assert a == a
    assert a != b
    assert not (a == 1)
    assert a != "x"
    with pytest.raises(TypeError):
        a < 1
    for h in (a, b, c):
        h.cancel()


def test_timer_handle_equality_follows_asyncio(loop):
    # asyncio: equal when deadline, callback, args and cancelled state are all equal.
    when = loop.time() + 100
    a = loop.call_at(when, noop, 1)
    b = loop.call_at(when, noop, 1)
    c = loop.call_at(when, noop, 2)
    d = loop.call_at(when, print, 1)
    assert a == b
    assert a != c, "TimerHandles with different arguments compare equal"
    assert a != d
    for h in (a, b, c, d):
        h.cancel()


def test_timer_handle_comparisons_match_asyncio(loop):
    # Every operator on pairs of handles agrees with asyncio.TimerHandle built from the same parts.
    import operator
    aio = asyncio.new_event_loop()
    try:
        when = loop.time() + 100
        parts = [(when, noop, (1,)), (when, noop, (1,)), (when, noop, (2,)), (when, print, (1,)),
                 (when + 1, noop, (1,)), (when - 1, noop, ())]
        ours = [loop.call_at(w, cb, *args) for w, cb, args in parts]
        refs = [asyncio.TimerHandle(w, cb, args, aio) for w, cb, args in parts]
        ops = [operator.eq, operator.ne, operator.lt, operator.le, operator.gt, operator.ge]
        for i in range(len(parts)):
            for j in range(len(parts)):
                for op in ops:
                    assert op(ours[i], ours[j]) == op(refs[i], refs[j]), (op.__name__, parts[i], parts[j])
        for h in ours:
            h.cancel()
    finally:
        aio.close()


def test_timer_handle_hash_is_consistent_with_equality(loop):
    when = loop.time() + 100
    a = loop.call_at(when, noop, 1)
    b = loop.call_at(when, noop, 1)
    assert hash(a) == hash(a)
    if a == b:
        assert hash(a) == hash(b), "equal TimerHandles have different hashes"
    assert len({a, a}) == 1
    a.cancel()
    b.cancel()


def test_timer_handle_repr_matches_asyncio(loop):
    aio = asyncio.new_event_loop()
    try:
        when = loop.time() + 50
        h = loop.call_at(when, noop, "arg")
        ref = asyncio.TimerHandle(when, noop, ("arg",), aio)
        assert repr(h) == repr(ref)
        assert f"when={when}" in repr(h)
        h.cancel()
        ref.cancel()
        assert repr(h) == repr(ref)
    finally:
        aio.close()


# ------------------------------------------------------------------ clock


def test_time_is_the_monotonic_clock(loop):
    for _ in range(100):
        before = time.monotonic()
        now = loop.time()
        after = time.monotonic()
        assert before <= now <= after


def test_time_has_sub_millisecond_resolution(loop):
    samples = [loop.time() for _ in range(2000)]
    # Not rounded to milliseconds ...
    assert any(abs(t * 1000 - round(t * 1000)) > 1e-6 for t in samples)
    # ... and successive distinct readings can be less than a millisecond apart.
    steps = [b - a for a, b in zip(samples, samples[1:]) if b > a]
    assert steps and min(steps) < 1e-3


def test_time_works_on_a_closed_loop(loop):
    loop.close()
    assert loop.time() > 0


# ------------------------------------------------------------------ heap bookkeeping (zloop internals)
# These run the loop without the run_forever fixture: its guard timer would sit in the heap too.


def run_one_iteration(loop):
    loop.call_soon(loop.stop)
    loop.run_forever()


@pytest.mark.zloop_only
def test_cancelled_count_tracks_cancellations(loop):
    assert loop._timer_count == 0
    assert loop._timer_cancelled_count == 0
    handles = [loop.call_later(3600, noop) for _ in range(10)]
    assert loop._timer_count == 10
    for h in handles[:4]:
        h.cancel()
        h.cancel()  # twice counts once
    assert loop._timer_cancelled_count == 4
    for h in handles[4:]:
        h.cancel()
    assert loop._timer_cancelled_count == 10
    run_one_iteration(loop)
    # Below the compaction threshold, cancelled timers leave the heap lazily from its head:
    # these all sit at the head, so one iteration drops them.
    assert loop._timer_count == 0
    assert loop._timer_cancelled_count == 0


@pytest.mark.zloop_only
def test_heap_is_compacted_when_cancelled_timers_dominate(loop):
    keep = [loop.call_later(3600 + i, noop) for i in range(100)]   # earliest: they stay at the head
    drop = [loop.call_later(7200 + i, noop) for i in range(900)]
    for h in drop:
        h.cancel()
    assert loop._timer_count == 1000
    assert loop._timer_cancelled_count == 900
    run_one_iteration(loop)
    assert loop._timer_count == 100
    assert loop._timer_cancelled_count == 0
    assert all(h.cancelled() for h in drop)
    assert not any(h.cancelled() for h in keep)
    for h in keep:
        h.cancel()


@pytest.mark.zloop_only
def test_cancelling_a_fired_timer_does_not_count(loop):
    h = loop.call_later(0, noop)
    loop.call_later(0, loop.stop)
    loop.run_forever()
    h.cancel()
    assert h.cancelled()
    assert loop._timer_cancelled_count == 0
    assert loop._timer_count == 0


@pytest.mark.zloop_only
def test_cancelled_timers_after_compaction_still_fire_the_rest_in_order(loop):
    seen = []
    when = loop.time() - 1.0  # all due at once
    handles = [loop.call_at(when + (i % 7) * 1e-4, seen.append, i) for i in range(500)]
    for h in handles:
        if h._args[0] % 3:
            h.cancel()
    loop.call_soon(lambda: loop.call_soon(loop.stop))
    loop.run_forever()
    assert loop._timer_count == 0
    assert loop._timer_cancelled_count == 0
    expected = sorted((i for i in range(500) if i % 3 == 0), key=lambda i: ((i % 7), i))
    assert seen == expected


def test_a_mocked_loop_time_is_the_clock_of_the_timers(loop):
    # asyncio asks self.time() when it expires timers, so tests that patch loop.time move the timers' clock
    # (aiohttp test_keepalive_expires_on_time): a timer 75 s away fires once the mocked clock reaches it.
    fired = []
    real_now = loop.time()
    with mock.patch.object(loop, "time") as time_mock:
        time_mock.return_value = real_now
        loop.call_at(real_now + 75, fired.append, "at")
        loop.call_later(75, fired.append, "later")       # call_later reads the mocked clock too

        async def step():
            await asyncio.sleep(0)
            await asyncio.sleep(0)
        loop.run_until_complete(step())
        assert fired == []
        time_mock.return_value = real_now + 75
        loop.run_until_complete(step())
        assert fired == ["at", "later"]
    assert "time" not in vars(loop)
    assert abs(loop.time() - time.monotonic()) < 1.0      # the real clock again


def test_a_mocked_loop_time_that_raises_ends_the_run(loop):
    loop.call_later(10, lambda: None)
    with mock.patch.object(loop, "time", side_effect=ZeroDivisionError):
        with pytest.raises(ZeroDivisionError):
            loop.run_until_complete(asyncio.sleep(0.01))
    loop.run_until_complete(asyncio.sleep(0))            # and the loop still works afterwards
