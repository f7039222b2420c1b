/* core/loop_stats.c — loop statistics: the tick clock and its calibration, timing a handle's run and keeping the
 * slowest, loop.stats() (the figures as a dict of plain numbers) and loop.set_stats(). */
#include "zloop.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#if defined(__x86_64__)
#include <cpuid.h>
#endif

_Atomic int zl_ticks_from_counter = -1;   /* -1 until zl_ticks_init decided */

/* ------------------------------------------------------------------ the tick clock */

static uint64_t
monotonic_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t
zl_ticks_slow(void)
{
    return monotonic_ns();
}

/* The cycle counter only where its rate is constant: x86-64 with an invariant TSC, arm64's generic timer. */
static int
counter_is_invariant(void)
{
#if defined(__x86_64__)
    unsigned int eax, ebx, ecx, edx;
    if (!__get_cpuid(0x80000007, &eax, &ebx, &ecx, &edx)) {
        return 0;
    }
    return (edx >> 8) & 1;
#elif defined(__aarch64__)
    return 1;
#else
    return 0;
#endif
}

/* The calibration anchor: a tick count and CLOCK_MONOTONIC read together when timing was first switched on.
 * Process-wide, like the clock it calibrates: written once under pthread_once, whichever interpreter asks first. */
static uint64_t anchor_ticks;
static uint64_t anchor_ns;
static pthread_once_t ticks_once = PTHREAD_ONCE_INIT;
static double measured_seconds_per_tick;
static pthread_once_t measure_once = PTHREAD_ONCE_INIT;

/* A handle under a microsecond is cheap: reading the clock around each would cost more than 3% of it. */
#define ZL_STATS_CHEAP_NS 1000
static uint64_t cheap_ticks = ZL_STATS_CHEAP_NS;

/* Ticks per ZL_STATS_CHEAP_NS, near enough for a threshold: counted over 50 us of CLOCK_MONOTONIC. */
static uint64_t
measure_cheap_ticks(void)
{
    uint64_t start_ns = monotonic_ns(), start_ticks = zl_ticks(), ns;
    while ((ns = monotonic_ns() - start_ns) < 50000) {
    }
    uint64_t ticks = (zl_ticks() - start_ticks) * ZL_STATS_CHEAP_NS / ns;
    return ticks > 0 ? ticks : 1;
}

static void
ticks_decide(void)
{
    anchor_ns = monotonic_ns();
    zl_ticks_from_counter = counter_is_invariant();
    anchor_ticks = zl_ticks();
    if (zl_ticks_from_counter > 0) {
        cheap_ticks = measure_cheap_ticks();
    }
}

static void
zl_ticks_init(void)
{
    pthread_once(&ticks_once, ticks_decide);
}

static void
ticks_measure(void)
{
    uint64_t elapsed_ns = monotonic_ns() - anchor_ns;
    if (elapsed_ns < 2000000) {
        struct timespec pause = {0, (long)(2000000 - elapsed_ns)};
        nanosleep(&pause, NULL);
    }
    uint64_t ticks = zl_ticks() - anchor_ticks;
    elapsed_ns = monotonic_ns() - anchor_ns;
    measured_seconds_per_tick = ticks > 0 ? (double)elapsed_ns * 1e-9 / (double)ticks : 1e-9;
}

/* Seconds per tick, measured once over the time since the anchor (at least 2 ms: waits for the rest the first
 * time), then kept, so that figures read twice convert alike. */
static double
seconds_per_tick(void)
{
    if (zl_ticks_from_counter <= 0) {   /* CLOCK_MONOTONIC nanoseconds (or timing never switched on) */
        return 1e-9;
    }
    zl_ticks_init();   /* decided already: waits until the anchor is written */
    pthread_once(&measure_once, ticks_measure);
    return measured_seconds_per_tick;
}

/* Timing starts (set_stats(True), ZLOOP_STATS, a run of the loop): from now, handles one by one. */
static void
start_timing(zl_loop_stats *stats)
{
    zl_ticks_init();
    stats->span_length = 1;
    stats->span_run = 0;
    stats->probe_left = 0;
    stats->mark = zl_ticks();
}

void
zl_loop_stats_init(zl_loop_stats *stats)
{
    const char *value = getenv("ZLOOP_STATS");
    stats->timing = value != NULL && value[0] != '\0' && strcmp(value, "0") != 0;
    if (stats->timing) {
        start_timing(stats);
    }
}

void
zl_loop_stats_clear(zl_loop_stats *stats)
{
    Py_CLEAR(stats->slowest_repr);
    Py_CLEAR(stats->span_callback);
    stats->span_run = 0;
}

/* ------------------------------------------------------------------ timing a handle */

/* The task a callback steps (Task.__step, _asyncio's TaskStepMethWrapper: __self__ is the task), or NULL. */
static PyObject *
stepped_task(zl_state *state, PyObject *callback)
{
    PyObject *owner = PyObject_GetAttrString(callback, "__self__");
    if (owner == NULL) {
        PyErr_Clear();
        return NULL;
    }
    if (state->task_type == NULL || !PyObject_TypeCheck(owner, (PyTypeObject *)state->task_type)) {
        Py_DECREF(owner);
        return NULL;
    }
    return owner;
}

/* What the slowest callback was: for a task's step the task's repr (as asyncio's slow-callback warning says it),
 * else the handle's repr (`handle`: the one that just ran, still whole), or the callback's. */
static PyObject *
describe_handle(zl_state *state, zl_handle *handle, PyObject *callback)
{
    PyObject *task = stepped_task(state, callback);
    if (task != NULL) {
        PyObject *text = PyObject_Repr(task);
        Py_DECREF(task);
        return text;
    }
    if (handle != NULL && handle->callback != NULL) {
        return PyObject_Repr((PyObject *)handle);
    }
    return PyUnicode_FromFormat("<%s %R>", handle != NULL ? Py_TYPE(handle)->tp_name : "Handle", callback);
}

/* A span of several handles slower than the slowest so far: which of them it was is not known (the clock was
 * read at its ends only), so it is named as the span and its time is an upper bound for the slow one. */
static PyObject *
describe_span(zl_state *state, PyObject *first_callback, uint32_t handles)
{
    PyObject *first = describe_handle(state, NULL, first_callback);
    if (first == NULL) {
        return NULL;
    }
    PyObject *text = PyUnicode_FromFormat("<one of %u callbacks timed together, the first %U>", handles, first);
    Py_DECREF(first);
    return text;
}

static void
record_slowest(zl_loop *loop, zl_handle *last, uint32_t handles, uint64_t took)
{
    zl_loop_stats *stats = &loop->stats;
    stats->slowest_ticks = took;
    PyObject *exc = zl_err_fetch();   /* the run may have left SystemExit pending: keep it */
    PyObject *text = handles == 1 ? describe_handle(loop->state, last, stats->span_callback)
                                  : describe_span(loop->state, stats->span_callback, handles);
    if (text == NULL) {
        PyErr_Clear();   /* a repr that raised still leaves the duration */
    }
    Py_XSETREF(stats->slowest_repr, text);
    zl_err_restore(exc);
    stats->mark = zl_ticks();   /* the repr's time is nobody's callback */
}

/* How long the next spans are. A span slower than a microsecond per handle (one slow handle is enough) sends
 * the timing back to one handle per span for the next ZL_STATS_PROBE handles, so that a slow callback that
 * comes back is named exactly; cheap spans double the length up to ZL_STATS_SPAN_MAX, where the clock read
 * (about 10 ns here) costs under 1 ns per handle. */
#define ZL_STATS_SPAN_MAX 32
#define ZL_STATS_PROBE 64

static void
adapt_span_length(zl_loop_stats *stats, uint32_t handles, int slow)
{
    if (slow) {
        stats->span_length = 1;
        stats->probe_left = ZL_STATS_PROBE;
    } else if (stats->probe_left > handles) {
        stats->probe_left -= handles;
    } else {
        stats->probe_left = 0;
        if (stats->span_length < ZL_STATS_SPAN_MAX) {
            stats->span_length *= 2;
        }
    }
}

void
zl_loop_stats_span_end(zl_loop *loop, zl_handle *last)
{
    zl_loop_stats *stats = &loop->stats;
    uint32_t handles = stats->span_run;
    uint64_t now = zl_ticks();
    uint64_t took = now > stats->mark ? now - stats->mark : 0;
    stats->mark = now;
    stats->callback_ticks += took;
    int slow = took >= handles * cheap_ticks;
    /* A span of cheap handles slower than the slowest may hide one just above it: only a single handle, or a
     * span that a slow handle made slow, can say what the slowest was. */
    if (took > stats->slowest_ticks && stats->span_callback != NULL && (handles == 1 || slow)) {
        record_slowest(loop, handles == 1 ? last : NULL, handles, took);
    }
    adapt_span_length(stats, handles, slow);
    stats->span_run = 0;
    Py_CLEAR(stats->span_callback);
}

void
zl_loop_stats_span_close(zl_loop *loop)
{
    if (loop->stats.span_run > 0) {
        zl_loop_stats_span_end(loop, NULL);
    }
}

/* ------------------------------------------------------------------ Python API */

static int
set_item(PyObject *dict, const char *key, PyObject *value)
{
    if (value == NULL) {
        return -1;
    }
    int rc = PyDict_SetItemString(dict, key, value);
    Py_DECREF(value);
    return rc;
}

static int
fill_counters(PyObject *dict, const zl_loop_stats *stats)
{
    return set_item(dict, "iterations", PyLong_FromUnsignedLongLong(stats->iterations)) < 0 ||
           set_item(dict, "callbacks", PyLong_FromUnsignedLongLong(stats->callbacks)) < 0 ||
           set_item(dict, "timers_fired", PyLong_FromUnsignedLongLong(stats->timers_fired)) < 0 ||
           set_item(dict, "io_events", PyLong_FromUnsignedLongLong(stats->io_events)) < 0
               ? -1 : 0;
}

static int
fill_timings(PyObject *dict, const zl_loop_stats *stats)
{
    double tick = stats->poll_ticks || stats->io_ticks || stats->callback_ticks ? seconds_per_tick() : 1e-9;
    double lag_mean = stats->lag_samples ? stats->lag_sum / (double)stats->lag_samples : 0.0;
    return set_item(dict, "timing", PyBool_FromLong(stats->timing)) < 0 ||
           set_item(dict, "poll_seconds", PyFloat_FromDouble((double)stats->poll_ticks * tick)) < 0 ||
           set_item(dict, "io_seconds", PyFloat_FromDouble((double)stats->io_ticks * tick)) < 0 ||
           set_item(dict, "callback_seconds", PyFloat_FromDouble((double)stats->callback_ticks * tick)) < 0 ||
           set_item(dict, "slowest_callback", zl_ref_or_none(stats->slowest_repr)) < 0 ||
           set_item(dict, "slowest_callback_seconds", PyFloat_FromDouble((double)stats->slowest_ticks * tick)) < 0 ||
           set_item(dict, "lag_samples", PyLong_FromUnsignedLongLong(stats->lag_samples)) < 0 ||
           set_item(dict, "lag_mean_seconds", PyFloat_FromDouble(lag_mean)) < 0 ||
           set_item(dict, "lag_max_seconds", PyFloat_FromDouble(stats->lag_max)) < 0
               ? -1 : 0;
}

PyObject *
zl_loop_stats_dict(zl_loop *loop, PyObject *Py_UNUSED(ignored))
{
    PyObject *dict = PyDict_New();
    if (dict == NULL) {
        return NULL;
    }
    if (fill_counters(dict, &loop->stats) < 0 || fill_timings(dict, &loop->stats) < 0) {
        Py_DECREF(dict);
        return NULL;
    }
    return dict;
}

PyObject *
zl_loop_set_stats(zl_loop *loop, PyObject *enabled)
{
    if (!PyBool_Check(enabled)) {
        PyErr_Format(PyExc_TypeError, "set_stats() takes True or False, not %.100s", Py_TYPE(enabled)->tp_name);
        return NULL;
    }
    if (zl_loop_check_closed(loop) < 0) {
        return NULL;
    }
    if (enabled == Py_True && !loop->stats.timing) {
        start_timing(&loop->stats);   /* switched on by a callback: the next handle times from here */
    } else if (enabled == Py_False) {
        zl_loop_stats_span_close(loop);   /* switched off by a callback: the span so far still counts */
    }
    loop->stats.timing = enabled == Py_True;
    Py_RETURN_NONE;
}
