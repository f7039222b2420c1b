/* core/loop_stats.h — a loop's statistics: counters the iteration always keeps (plain increments) and timings
 * taken only while loop.set_stats(True) (or ZLOOP_STATS=1) is on, read with a cycle counter where there is one. */
#ifndef ZL_LOOP_STATS_H
#define ZL_LOOP_STATS_H

#include <Python.h>
#include <stdint.h>

typedef struct zl_loop_stats {
    /* always counted */
    uint64_t iterations;
    uint64_t callbacks;               /* handles run (timers included) */
    uint64_t timers_fired;            /* timer handles run */
    uint64_t io_events;               /* readiness events the backend reported */
    /* counted while timing is on; durations in ticks of zl_ticks() */
    int timing;
    uint64_t poll_ticks;              /* blocked in (or spent in) the backend's poll */
    uint64_t io_ticks;                /* dispatching readiness: C transport callbacks, add_reader handles queued */
    uint64_t callback_ticks;          /* running handles */
    uint64_t mark;                    /* where the last timed part ended: the next one starts there */
    uint64_t slowest_ticks;
    PyObject *slowest_repr;           /* repr of the slowest handle run (str), or NULL */
    /* handles are timed in spans: one clock read at the end of each (loop_stats.c says when spans grow) */
    uint32_t span_length;             /* handles per span: 1 until they prove cheap, then up to ZL_STATS_SPAN_MAX */
    uint32_t span_run;                /* handles run in the open span */
    uint32_t probe_left;              /* after a slow span: handles still to time one by one */
    PyObject *span_callback;          /* the open span's first callback (a reference), to name it if slow */
    uint64_t lag_samples;             /* timers found due while timing */
    double lag_sum;                   /* seconds between their deadline and the iteration that took them up */
    double lag_max;
} zl_loop_stats;

/* A monotonic tick count: the CPU's invariant cycle counter on x86-64 and arm64, else CLOCK_MONOTONIC in ns. */
uint64_t zl_ticks_slow(void);
extern _Atomic int zl_ticks_from_counter;   /* decided once per process (loop_stats.c) */

static inline uint64_t
zl_ticks(void)
{
#if defined(__x86_64__)
    if (zl_ticks_from_counter > 0) {
        uint32_t lo, hi;
        __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
        return ((uint64_t)hi << 32) | lo;
    }
#elif defined(__aarch64__)
    if (zl_ticks_from_counter > 0) {
        uint64_t value;
        __asm__ volatile("mrs %0, cntvct_el0" : "=r"(value));
        return value;
    }
#endif
    return zl_ticks_slow();
}

/* Add the ticks since the last mark to *bucket and move the mark: each timed part of an iteration (poll,
 * dispatch, each handle) runs from where the previous one ended, one counter read per part. */
static inline void
zl_loop_stats_lap(zl_loop_stats *stats, uint64_t *bucket)
{
    uint64_t now = zl_ticks();
    *bucket += now > stats->mark ? now - stats->mark : 0;
    stats->mark = now;
}

/* Timing a handle's run: a span opens at its first handle and ends when span_length handles ran (a poll or
 * the end of the run closes it sooner). Per handle: a test, an increment and a compare; the clock is read once
 * per span. */
static inline void
zl_loop_stats_span_handle_starts(zl_loop_stats *stats, PyObject *callback)
{
    if (stats->span_run++ == 0) {
        Py_XINCREF(callback);
        stats->span_callback = callback;
    }
}

/* A timer found due `late` seconds after its deadline, while timing. */
static inline void
zl_loop_stats_timer_due(zl_loop_stats *stats, double late)
{
    if (late < 0.0 || late != late) {   /* due within the clock's resolution, or a NaN from a mocked clock */
        late = 0.0;
    }
    stats->lag_samples++;
    stats->lag_sum += late;
    if (late > stats->lag_max) {
        stats->lag_max = late;
    }
}

/* A new loop's statistics: timing on when the environment says so (ZLOOP_STATS=1, anything but "" and "0"). */
void zl_loop_stats_init(zl_loop_stats *stats);

/* Drop the owned objects (the slowest callback's repr). */
void zl_loop_stats_clear(zl_loop_stats *stats);

#endif /* ZL_LOOP_STATS_H */
