/* core/run_once.c — one iteration of the loop: drop cancelled timers, poll the backend (GIL released only when
 * it may block), queue ready I/O, expired timers, then what C I/O callbacks scheduled, and run exactly those
 * (the last ones only when the loop is not stopping). */
#include "zloop.h"
#include "datagram_ring.h"
#include "stream_ring.h"

#include <errno.h>
#include <math.h>

#define ZL_MIN_TIMERS_TO_COMPACT 100        /* asyncio's _MIN_SCHEDULED_TIMER_HANDLES */
#define ZL_MAX_POLL_SECONDS (24.0 * 3600.0) /* asyncio's MAXIMUM_SELECT_TIMEOUT */

static int
timer_is_cancelled(PyObject *timer)
{
    zl_handle *handle = (zl_handle *)timer;
    if (handle->cancelled) {
        handle->scheduled = 0;
        return 1;
    }
    return 0;
}

/* Cancelled timers leave the heap lazily; when they are most of a large heap, rebuild it without them. */
static void
drop_cancelled_timers(zl_loop *loop)
{
    size_t count = loop->timers.len;
    if (count > ZL_MIN_TIMERS_TO_COMPACT && (size_t)loop->timer_cancelled_count * 2 > count) {
        loop->timer_cancelled_count -= (Py_ssize_t)zl_timer_heap_drop_if(&loop->timers, timer_is_cancelled);
        return;
    }
    const zl_timer_entry *head;
    while ((head = zl_timer_heap_peek(&loop->timers)) != NULL && ((zl_handle *)head->timer)->cancelled) {
        PyObject *timer = zl_timer_heap_pop(&loop->timers);
        ((zl_handle *)timer)->scheduled = 0;
        loop->timer_cancelled_count--;
        zl_handle_release(timer);
    }
}

/* Nanoseconds the poll may block: 0 with work queued, -1 with nothing scheduled at all; -2 when the loop's
 * clock raised (an overridden loop.time). */
static int64_t
poll_timeout_ns(zl_loop *loop)
{
    if (loop->ready.len > 0 || loop->timers_due.len > 0 || loop->stopping) {
        return 0;
    }
    const zl_timer_entry *head = zl_timer_heap_peek(&loop->timers);
    if (head == NULL) {
        return -1;
    }
    double now;
    if (zl_loop_now(loop, &now) < 0) {
        return -2;
    }
    double delay = head->when - now;
    if (!(delay > 0.0)) {   /* due, or NaN (a clock override returning NaN): never a NaN timeout */
        return 0;
    }
    if (delay > ZL_MAX_POLL_SECONDS) {
        delay = ZL_MAX_POLL_SECONDS;
    }
    return (int64_t)ceil(delay * 1e9);
}

/* Whether a non-blocking poll could report anything worth dispatching now. Not when no fd is watched but the
 * wake-only one (the signal socket while no signal handler is set: Python-level handlers run without it): such
 * a poll could only report wake-ups, which only a blocking poll asks for and drains. So iterations with work
 * queued and no I/O (a chain of sleep(0), a future resolved by call_soon) make no syscall. */
static int
watches_io(zl_loop *loop)
{
    int watched = loop->io.watched;
    int fd = loop->wake_only_fd;
    if (loop->ring_users != NULL && PySet_GET_SIZE(loop->ring_users) > 0) {
        return 1;                      /* completions to collect */
    }
    if (watched == 1 && fd >= 0 && fd < loop->io.len && loop->io.slots[fd].registered) {
        return 0;
    }
    return watched > 0;
}

static int
poll_backend(zl_loop *loop)
{
    int64_t timeout_ns = poll_timeout_ns(loop);
    if (timeout_ns == -2) {
        return -1;
    }
    const zl_fired *fired = NULL;
    int count;
    if (loop->io.stale_len > 0) {   /* the usual case has none: no call, no generation to advance */
        zl_io_drop_stale(loop, timeout_ns != 0);
    }
    /* The datagrams sendto() queued for the ring go out with this poll's io_uring_enter, a chain per transport. */
    if (loop->dgram_flush != NULL && zl_dgram_ring_flush(loop) < 0) {
        return -1;
    }
    if (timeout_ns == 0 && !watches_io(loop)) {
        return 0;
    }
    if (loop->stats.timing) {
        zl_loop_stats_span_close(loop);   /* the handles run since the last clock read, before the poll's lap */
    }
    if (timeout_ns == 0) {
        count = loop->ops->poll(loop->backend, 0, &fired);
    } else {
        zl_backend *backend = loop->backend;
        loop->polling = 1;
        Py_BEGIN_ALLOW_THREADS
        count = loop->ops->poll(backend, timeout_ns, &fired);
        Py_END_ALLOW_THREADS
        loop->polling = 0;
        loop->wake_pending = 0;
        /* Python-level signal handlers (Ctrl-C) run here, not only when the next bytecode runs. */
        if (PyErr_CheckSignals() < 0) {
            return -1;
        }
    }
    if (loop->stats.timing) {
        zl_loop_stats_lap(&loop->stats, &loop->stats.poll_ticks);   /* since the last handle: the poll */
    }
    if (count == -EINTR) {
        return PyErr_CheckSignals();
    }
    if (count < 0) {
        errno = -count;
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    int rc = 0;
    if (count > 0) {
        loop->stats.io_events += (uint64_t)count;
        rc = zl_io_dispatch(loop, fired, count);
    }
    if (loop->completion) {
        /* Even after a failed readiness dispatch: the completions are taken from the ring, none may be lost. */
        const zl_completion *done;
        int done_count = loop->ops->completions(loop->backend, &done);
        if (done_count > 0) {
            loop->stats.io_events += (uint64_t)done_count;
            PyObject *exc = rc < 0 ? zl_err_fetch() : NULL;
            rc = zl_stream_ring_dispatch(loop, done, done_count) < 0 || exc != NULL ? -1 : 0;
            if (exc != NULL) {
                PyErr_Clear();
                zl_err_restore(exc);
            }
        }
    }
    if (loop->stats.timing) {
        zl_loop_stats_lap(&loop->stats, &loop->stats.io_ticks);
    }
    return rc;
}

/* The next timer due before end_time, from the heap or the due queue, whichever comes first in (deadline,
 * sequence) order; NULL when none is. */
static zl_handle *
pop_next_due_timer(zl_loop *loop, double end_time)
{
    const zl_timer_entry *head = zl_timer_heap_peek(&loop->timers);
    zl_ready_queue *due = &loop->timers_due;
    zl_handle *first_due = due->len > 0 ? (zl_handle *)due->items[due->head] : NULL;
    if (first_due != NULL && first_due->when < end_time &&
        (head == NULL || head->when >= end_time || first_due->when < head->when ||
         (first_due->when == head->when && first_due->seq < head->seq))) {
        return (zl_handle *)zl_ready_queue_pop(due);
    }
    if (head != NULL && head->when < end_time) {
        return (zl_handle *)zl_timer_heap_pop(&loop->timers);
    }
    return NULL;
}

static int
queue_expired_timers(zl_loop *loop)
{
    if (loop->timers.len == 0 && loop->timers_due.len == 0) {
        return 0;
    }
    double now;
    if (zl_loop_now(loop, &now) < 0) {
        return -1;
    }
    double end_time = now + loop->clock_resolution;
    size_t ready_before = loop->ready.len;
    zl_handle *timer;
    while ((timer = pop_next_due_timer(loop, end_time)) != NULL) {
        if (timer->cancelled) {
            if (timer->scheduled == ZL_TIMER_IN_HEAP) {
                loop->timer_cancelled_count--;
            }
            timer->scheduled = 0;
            zl_handle_release((PyObject *)timer);
            continue;
        }
        timer->scheduled = 0;
        if (loop->stats.timing && isfinite(timer->when)) {   /* a NaN or infinite deadline has no lag */
            zl_loop_stats_timer_due(&loop->stats, now - timer->when);
        }
        if (zl_ready_queue_push(&loop->ready, (PyObject *)timer) < 0) {
            return -1;
        }
    }
    if (loop->stats.timing && loop->ready.len > ready_before) {
        zl_loop_stats_span_close(loop);
        loop->stats.mark = zl_ticks();   /* queueing timers is not the first callback's time */
    }
    return 0;
}

/* Debug mode: remember the handle for the exception handler and log callbacks slower than the limit. */
static int
run_handle_debug(zl_loop *loop, zl_handle *handle)
{
    Py_INCREF(handle);
    Py_XSETREF(loop->current_handle, (PyObject *)handle);
    double started = zl_loop_clock();
    int rc = zl_handle_run(handle);
    double took = zl_loop_clock() - started;
    Py_CLEAR(loop->current_handle);
    if (rc == 0 && took >= loop->slow_callback_duration) {
        PyObject *res = PyObject_CallFunction(loop->state->warn_slow_callback, "OOd", (PyObject *)loop,
                                              (PyObject *)handle, took);
        if (res == NULL) {
            return -1;
        }
        Py_DECREF(res);
    }
    return rc;
}

static int
run_handle_plain_or_debug(zl_loop *loop, zl_handle *handle)
{
    return loop->debug ? run_handle_debug(loop, handle) : zl_handle_run(handle);
}

/* Statistics timing on: the handle runs in the open span of timed handles (loop_stats.c), which ends after it
 * when full: the clock is read once per span, not once per handle. */
static int
run_handle_timed(zl_loop *loop, zl_handle *handle)
{
    zl_loop_stats_span_handle_starts(&loop->stats, handle->callback);
    int rc = run_handle_plain_or_debug(loop, handle);
    if (loop->stats.span_run >= loop->stats.span_length) {
        zl_loop_stats_span_end(loop, handle);
    }
    return rc;
}

/* Debug mode, statistics timing, or both. */
static int
run_handle_instrumented(zl_loop *loop, zl_handle *handle)
{
    return loop->stats.timing ? run_handle_timed(loop, handle) : run_handle_debug(loop, handle);
}

/* A handle taken from the ready queue (or an inbox record's), unless it was cancelled. */
static int
run_queued_handle(zl_loop *loop, zl_handle *handle)
{
    if (handle->cancelled) {
        return 0;
    }
    loop->stats.callbacks++;
    loop->stats.timers_fired += handle->is_timer;
    return (loop->debug | loop->stats.timing) ? run_handle_instrumented(loop, handle) : zl_handle_run(handle);
}

/* A context for a record that deferred it: a fresh empty one, what a copy of the caller's empty one would be. */
static int
inbox_record_make_context(zl_inbox_record *record)
{
    if (record->context == NULL && (record->context = PyContext_New()) == NULL) {
        return -1;
    }
    return 0;
}

/* A Handle for a record whose own is gone, holding what the record holds. */
static zl_handle *
inbox_record_handle(zl_loop *loop, zl_inbox_record *record)
{
    if (inbox_record_make_context(record) < 0) {
        return NULL;
    }
    zl_handle *handle = zl_handle_new(loop, record->callback, &record->arg, record->arg != NULL, record->context,
                                      0, 0.0);
    if (handle != NULL) {
        handle->threadsafe = 1;
    }
    return handle;
}

/* A record whose Handle is gone, run as that Handle would have been: in its context (an empty one when deferred,
 * threadsafe_inbox.h), its exception reported with a Handle made for the report. */
static int
run_inbox_record_alone(zl_loop *loop, zl_inbox_record *record)
{
    int lent = record->context == NULL;
    if (lent && zl_inbox_lend_context(&loop->inbox, record) < 0) {
        return -1;
    }
    loop->stats.callbacks++;
    PyObject *res = zl_call_in_context(record->context, record->callback, &record->arg, record->arg != NULL);
    if (res != NULL) {
        Py_DECREF(res);
        if (lent) {
            zl_inbox_reclaim_context(&loop->inbox, record);
        }
        return 0;
    }
    if (zl_err_stops_loop()) {
        return -1;
    }
    PyObject *exc = zl_err_fetch();
    zl_handle *handle = inbox_record_handle(loop, record);
    if (handle == NULL) {
        Py_DECREF(exc);
        return -1;
    }
    zl_err_restore(exc);
    int rc = zl_handle_report_error(handle);
    Py_DECREF(handle);
    return rc;
}

/* The next call_soon_threadsafe record (its mark was just popped): through its Handle while that lives, on its
 * own otherwise; instrumented runs (debug mode, statistics timing) get a Handle made for them. */
static int
run_inbox_record(zl_loop *loop)
{
    zl_inbox_record record;
    zl_inbox_pop(&loop->inbox, &record);
    zl_handle *handle = record.handle;
    int rc = 0;
    if (handle != NULL) {
        Py_INCREF(handle);
    } else if (record.callback != NULL && (loop->debug | loop->stats.timing)) {
        handle = inbox_record_handle(loop, &record);
        rc = handle == NULL ? -1 : 0;
    } else if (record.callback != NULL) {
        rc = run_inbox_record_alone(loop, &record);
    }
    zl_inbox_record_release(&record);
    if (handle != NULL) {
        rc = run_queued_handle(loop, handle);
        Py_DECREF(handle);
    }
    return rc;
}

/* The first todo handles queued: callbacks scheduled by these callbacks wait for the next iteration. */
static int
run_ready_handles(zl_loop *loop, size_t todo)
{
    while (todo-- > 0 && loop->ready.len > 0) {
        PyObject *item = zl_ready_queue_pop(&loop->ready);
        int rc;
        if (item == ZL_INBOX_MARK) {
            rc = run_inbox_record(loop);
        } else {
            rc = run_queued_handle(loop, (zl_handle *)item);
            zl_handle_release(item);
        }
        if (rc < 0) {
            return -1;
        }
    }
    return 0;
}

int
zl_loop_run_once(zl_loop *loop)
{
    loop->stats.iterations++;
    drop_cancelled_timers(loop);
    int rc = poll_backend(loop);
    if (rc == 0) {
        rc = queue_expired_timers(loop);
    }
    /* What C I/O callbacks scheduled joins the ready queue even when the dispatch stopped half-way (a
     * KeyboardInterrupt): held aside, it would not count as work and the next poll could block for ever. */
    size_t todo = loop->ready.len, later = loop->ready_later.len;
    if (zl_ready_queue_move_all(&loop->ready, &loop->ready_later) < 0 || rc < 0) {
        return -1;
    }
    if (run_ready_handles(loop, todo) < 0) {
        return -1;
    }
    /* asyncio runs what its I/O handles scheduled in the next iteration: when the loop stops after this one,
     * that is the next run, so those handles stay queued (at the head) for it. */
    if (later == 0 || loop->stopping) {
        return 0;
    }
    return run_ready_handles(loop, later);
}

int
zl_loop_run_until_stopped(zl_loop *loop)
{
    if (loop->stats.timing) {
        loop->stats.mark = zl_ticks();   /* timed laps run from here, not from when the loop last ran */
    }
    int rc;
    do {
        if (loop->backend == NULL) {
            PyErr_SetString(PyExc_RuntimeError, "Event loop is closed");
            rc = -1;
            break;
        }
        rc = zl_loop_run_once(loop);
    } while (rc == 0 && !loop->stopping);
    if (loop->stats.timing) {
        zl_loop_stats_span_close(loop);   /* what runs between runs of the loop is no callback's time */
    }
    return rc;
}
