/* core/loop.c — the LoopCore type: creation with a backend, scheduling (call_soon, call_later, call_at,
 * call_soon_threadsafe), the clock, state flags and the Python-visible methods of the C core. */
#include "zloop.h"
#include "datagram_ring.h"
#include "stream_ring.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <structmember.h>
#include <time.h>

/* ------------------------------------------------------------------ clock and small checks */

double
zl_loop_clock(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int
zl_loop_now(zl_loop *loop, double *now)
{
    if (loop->time_override == NULL) {
        *now = zl_loop_clock();
        return 0;
    }
    PyObject *value = PyObject_CallNoArgs(loop->time_override);
    if (value == NULL) {
        return -1;
    }
    *now = PyFloat_AsDouble(value);
    Py_DECREF(value);
    return *now == -1.0 && PyErr_Occurred() ? -1 : 0;
}

/* Setting or deleting `time` on the instance (mock.patch.object(loop, "time")) makes it the loop's clock. */
static int
loop_setattro(zl_loop *self, PyObject *name, PyObject *value)
{
    if (PyObject_GenericSetAttr((PyObject *)self, name, value) < 0) {
        return -1;
    }
    if (PyUnicode_Check(name) && PyUnicode_CompareWithASCIIString(name, "time") == 0) {
        Py_XINCREF(value);
        Py_XSETREF(self->time_override, value);
    }
    return 0;
}

static double
loop_clock_resolution(void)
{
    struct timespec ts;
    if (clock_getres(CLOCK_MONOTONIC, &ts) < 0) {
        return 1e-9;
    }
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int
zl_loop_check_closed(zl_loop *loop)
{
    if (loop->closed || loop->backend == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Event loop is closed");
        return -1;
    }
    return 0;
}

static int
loop_check_thread(zl_loop *loop)
{
    if (loop->thread_id != 0 && loop->thread_id != PyThread_get_thread_ident()) {
        PyErr_SetString(PyExc_RuntimeError,
                        "Non-thread-safe operation invoked on an event loop other than the current one");
        return -1;
    }
    return 0;
}

static int
loop_check_callback(zl_loop *self, PyObject *callback, const char *method)
{
    PyObject *res = PyObject_CallFunction(self->state->check_callback, "Os", callback, method);
    if (res == NULL) {
        return -1;
    }
    Py_DECREF(res);
    return 0;
}

void
zl_loop_timer_cancelled(zl_loop *loop)
{
    loop->timer_cancelled_count++;
}

int
zl_loop_enqueue(zl_loop *loop, PyObject *handle)
{
    return zl_loop_schedule(loop, handle);
}

/* ------------------------------------------------------------------ argument parsing */

/* Split a vectorcall (callback, *args, context=None) into its parts; -1 with TypeError set. */
static int
parse_callback_call(zl_loop *self, const char *method, PyObject *const *args, Py_ssize_t nargs,
                    Py_ssize_t leading, PyObject *kwnames, PyObject **context)
{
    *context = NULL;
    Py_ssize_t nkw = kwnames == NULL ? 0 : PyTuple_GET_SIZE(kwnames);
    for (Py_ssize_t i = 0; i < nkw; i++) {
        PyObject *name = PyTuple_GET_ITEM(kwnames, i);
        if (!zl_kwname_equals(name, self->state->str_context, &self->state->str_context_alias)) {
            PyErr_Format(PyExc_TypeError, "%s() got an unexpected keyword argument '%U'", method, name);
            return -1;
        }
        *context = args[nargs + i];
    }
    if (nargs < leading + 1) {
        PyErr_Format(PyExc_TypeError, "%s() missing required positional argument%s", method,
                     leading ? "s" : ": 'callback'");
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------ scheduling */

static PyObject *
loop_schedule_soon(zl_loop *self, const char *method, PyObject *const *args, Py_ssize_t nargs,
                   PyObject *kwnames, int threadsafe)
{
    PyObject *context;
    if (parse_callback_call(self, method, args, nargs, 0, kwnames, &context) < 0) {
        return NULL;
    }
    if (zl_loop_check_closed(self) < 0) {
        return NULL;
    }
    if (self->debug) {
        if (!threadsafe && loop_check_thread(self) < 0) {
            return NULL;
        }
        if (loop_check_callback(self, args[0], method) < 0) {
            return NULL;
        }
    }
    zl_handle *handle = zl_handle_new(self, args[0], args + 1, nargs - 1, context, 0, 0.0);
    if (handle == NULL) {
        return NULL;
    }
    handle->threadsafe = (unsigned char)threadsafe;
    Py_INCREF(handle);
    if (zl_loop_schedule(self, (PyObject *)handle) < 0) {
        Py_DECREF(handle);
        return NULL;
    }
    return (PyObject *)handle;
}

static PyObject *
loop_call_soon(zl_loop *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    return loop_schedule_soon(self, "call_soon", args, nargs, kwnames, 0);
}

/* call_soon_threadsafe(callback[, arg]) outside debug mode: the call is queued as an inbox record behind a mark
 * (threadsafe_inbox.h), and the Handle returned is an ordinary tracked object the queue does not hold, so one
 * nobody keeps is freed at once and reused hot from the free list. */
static PyObject *
loop_schedule_threadsafe_record(zl_loop *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *context;
    if (parse_callback_call(self, "call_soon_threadsafe", args, nargs, 0, kwnames, &context) < 0 ||
        zl_loop_check_closed(self) < 0) {
        return NULL;
    }
    zl_handle *handle = zl_handle_new(self, args[0], args + 1, nargs - 1, context, 0, 0.0);
    if (handle == NULL) {
        return NULL;
    }
    handle->threadsafe = 1;
    if (zl_inbox_push(&self->inbox, handle, handle->callback, nargs > 1 ? args[1] : NULL, handle->context,
                      &handle->seq) < 0) {
        Py_DECREF(handle);
        return NULL;
    }
    handle->in_inbox = 1;
    if (zl_loop_schedule(self, ZL_INBOX_MARK) < 0) {
        zl_inbox_unpush(&self->inbox);
        Py_DECREF(handle);
        return NULL;
    }
    zl_handle_track((PyObject *)handle);
    return (PyObject *)handle;
}

static PyObject *
loop_call_soon_threadsafe(zl_loop *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *handle = nargs <= 2 && !self->debug
                           ? loop_schedule_threadsafe_record(self, args, nargs, kwnames)
                           : loop_schedule_soon(self, "call_soon_threadsafe", args, nargs, kwnames, 1);
    if (handle == NULL) {
        return NULL;
    }
    /* Only a loop blocked in poll needs waking, and only once per poll. */
    if (self->polling && !self->wake_pending) {
        self->wake_pending = 1;
        self->ops->wake(self->backend);
    }
    return handle;
}

/* A timer already due (call_later with a delay of 0 or less, on the real clock) skips the heap: it goes to the end
 * of the due queue, which run_once merges with the heap's due timers in (deadline, sequence) order — the order
 * the heap alone would give. Only when that keeps the queue sorted, which the monotonic clock ensures. */
static int
loop_push_due_timer(zl_loop *self, zl_handle *timer)
{
    zl_ready_queue *due = &self->timers_due;
    if (due->len > 0 && ((zl_handle *)due->items[(due->head + due->len - 1) & due->mask])->when > timer->when) {
        return 1;
    }
    timer->seq = self->timer_seq++;
    if (zl_ready_queue_push(due, (PyObject *)timer) < 0) {
        return -1;
    }
    timer->scheduled = ZL_TIMER_DUE;
    return 0;
}

static PyObject *
loop_schedule_at(zl_loop *self, const char *method, double when, int due_now, PyObject *const *args,
                 Py_ssize_t nargs, PyObject *context)
{
    if (zl_loop_check_closed(self) < 0) {
        return NULL;
    }
    if (self->debug) {
        if (loop_check_thread(self) < 0 || loop_check_callback(self, args[0], method) < 0) {
            return NULL;
        }
    }
    zl_handle *timer = zl_handle_new(self, args[0], args + 1, nargs - 1, context, 1, when);
    if (timer == NULL) {
        return NULL;
    }
    Py_INCREF(timer);
    int rc = due_now ? loop_push_due_timer(self, timer) : 1;
    if (rc > 0) {
        /* A NaN deadline is due at once: NaN compares false with every key and would break the heap's order.
         * The handle keeps the NaN its when() reports, as asyncio's does. */
        double key = isnan(when) ? -INFINITY : when;
        rc = zl_timer_heap_push(&self->timers, key, self->timer_seq++, (PyObject *)timer);
        timer->scheduled = ZL_TIMER_IN_HEAP;
    }
    if (rc < 0) {
        Py_DECREF(timer);
        return NULL;
    }
    return (PyObject *)timer;
}

static int
parse_time_argument(PyObject *value, const char *none_message, double *out)
{
    if (value == Py_None) {
        PyErr_SetString(PyExc_TypeError, none_message);
        return -1;
    }
    *out = PyFloat_AsDouble(value);
    if (*out == -1.0 && PyErr_Occurred()) {
        return -1;
    }
    return 0;
}

static PyObject *
loop_call_later(zl_loop *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *context;
    double delay, now;
    if (parse_callback_call(self, "call_later", args, nargs, 1, kwnames, &context) < 0 ||
        parse_time_argument(args[0], "delay must not be None", &delay) < 0 || zl_loop_now(self, &now) < 0) {
        return NULL;
    }
    int due_now = delay <= 0.0 && self->time_override == NULL;
    return loop_schedule_at(self, "call_later", now + delay, due_now, args + 1, nargs - 1, context);
}

static PyObject *
loop_call_at(zl_loop *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *context;
    double when;
    /* asyncio refuses None, then a closed loop, and only then looks at the deadline. */
    if (parse_callback_call(self, "call_at", args, nargs, 1, kwnames, &context) < 0 ||
        (args[0] != Py_None && zl_loop_check_closed(self) < 0) ||
        parse_time_argument(args[0], "when cannot be None", &when) < 0) {
        return NULL;
    }
    PyObject *timer = loop_schedule_at(self, "call_at", when, 0, args + 1, nargs - 1, context);
    if (timer != NULL && PyLong_CheckExact(args[0])) {
        Py_INCREF(args[0]);
        ((zl_handle *)timer)->when_given = args[0];
    }
    return timer;
}

/* ------------------------------------------------------------------ lifecycle */

static PyObject *
loop_time(zl_loop *Py_UNUSED(self), PyObject *Py_UNUSED(ignored))
{
    return PyFloat_FromDouble(zl_loop_clock());
}

static PyObject *
loop_stop(zl_loop *self, PyObject *Py_UNUSED(ignored))
{
    self->stopping = 1;
    Py_RETURN_NONE;
}

static PyObject *
loop_is_running(zl_loop *self, PyObject *Py_UNUSED(ignored))
{
    return PyBool_FromLong(self->thread_id != 0);
}

static PyObject *
loop_is_closed(zl_loop *self, PyObject *Py_UNUSED(ignored))
{
    return PyBool_FromLong(self->closed || self->backend == NULL);
}

static PyObject *
loop_get_debug(zl_loop *self, PyObject *Py_UNUSED(ignored))
{
    return PyBool_FromLong(self->debug);
}

static PyObject *
loop_set_debug(zl_loop *self, PyObject *enabled)
{
    int value = PyObject_IsTrue(enabled);
    if (value < 0) {
        return NULL;
    }
    self->debug = value;
    Py_RETURN_NONE;
}

static PyObject *
loop_get_backend(zl_loop *self, PyObject *Py_UNUSED(ignored))
{
    if (self->ops == NULL) {
        Py_RETURN_NONE;   /* __init__ failed */
    }
    return PyUnicode_FromString(self->ops->name);
}

static PyObject *
loop_py_run_until_stopped(zl_loop *self, PyObject *Py_UNUSED(ignored))
{
    if (zl_loop_check_closed(self) < 0 || zl_loop_run_until_stopped(self) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
loop_py_run_once(zl_loop *self, PyObject *Py_UNUSED(ignored))
{
    if (zl_loop_check_closed(self) < 0) {
        return NULL;
    }
    if (self->stats.timing) {
        self->stats.mark = zl_ticks();   /* what the caller did since the last iteration is nobody's time */
    }
    int rc = zl_loop_run_once(self);
    zl_loop_stats_span_close(self);
    if (rc < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static void
loop_release_backend(zl_loop *self)
{
    zl_ready_queue_clear(&self->ready);
    zl_ready_queue_clear(&self->ready_later);
    zl_inbox_clear(&self->inbox);
    zl_timer_heap_clear(&self->timers);
    zl_ready_queue_clear(&self->timers_due);
    zl_io_release_all(self);
    if (self->backend != NULL) {
        self->ops->destroy(self->backend);
        self->backend = NULL;
    }
    zl_stream_ring_forget_all(self);   /* after the ring: nothing in flight any more */
    Py_CLEAR(self->dgram_flush);
}

static PyObject *
loop_close_core(zl_loop *self, PyObject *Py_UNUSED(ignored))
{
    if (self->thread_id != 0) {
        PyErr_SetString(PyExc_RuntimeError, "Cannot close a running event loop");
        return NULL;
    }
    self->closed = 1;
    loop_release_backend(self);
    Py_RETURN_NONE;
}

static PyObject *
loop_after_fork(zl_loop *self, PyObject *Py_UNUSED(ignored))
{
    if (self->backend != NULL) {
        int rc = self->ops->reinit_after_fork(self->backend);
        if (rc < 0) {
            errno = -rc;
            return PyErr_SetFromErrno(PyExc_OSError);
        }
        if (zl_dgram_ring_sends_after_fork(self) < 0) {
            return NULL;
        }
    }
    Py_RETURN_NONE;
}

static PyObject *
loop_add_reader(zl_loop *self, PyObject *const *args, Py_ssize_t nargs)
{
    return zl_loop_add_reader(self, args, nargs);
}

static PyObject *
loop_add_writer(zl_loop *self, PyObject *const *args, Py_ssize_t nargs)
{
    return zl_loop_add_writer(self, args, nargs);
}

static PyObject *
loop_remove_reader(zl_loop *self, PyObject *fileobj)
{
    return zl_loop_remove_reader(self, fileobj);
}

static PyObject *
loop_remove_writer(zl_loop *self, PyObject *fileobj)
{
    return zl_loop_remove_writer(self, fileobj);
}

static PyObject *
loop_make_handle(zl_loop *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"callback", "args", "context", NULL};
    PyObject *callback, *call_args, *context = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OO!|O:_make_handle", kwlist, &callback, &PyTuple_Type,
                                     &call_args, &context)) {
        return NULL;
    }
    PyObject *handle = (PyObject *)zl_handle_new(self, callback, &PyTuple_GET_ITEM(call_args, 0),
                                                 PyTuple_GET_SIZE(call_args), context, 0, 0.0);
    if (handle != NULL) {
        zl_handle_track(handle);   /* held from Python, queued by _enqueue maybe many times */
    }
    return handle;
}

static PyObject *
loop_enqueue_handle(zl_loop *self, PyObject *handle)
{
    if (!PyObject_TypeCheck(handle, self->state->handle_type)) {
        PyErr_Format(PyExc_TypeError, "expected a zloop Handle, got %R", handle);
        return NULL;
    }
    if (zl_loop_check_closed(self) < 0) {
        return NULL;
    }
    zl_handle_track(handle);   /* it may sit in a queue already: an untracked handle has one queue slot at most */
    Py_INCREF(handle);
    if (zl_loop_schedule(self, handle) < 0) {
        return NULL;
    }
    if (self->polling && !self->wake_pending) {
        self->wake_pending = 1;
        self->ops->wake(self->backend);
    }
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------------ type plumbing */

/* A new loop (of LoopCore or a subclass) bound to the state of the module that made LoopCore. */
static PyObject *
loop_new(PyTypeObject *type, PyObject *Py_UNUSED(args), PyObject *Py_UNUSED(kwds))
{
    PyObject *module;
    zl_state *state = zl_state_of_type(type, &module);
    if (state == NULL) {
        return NULL;
    }
    zl_loop *self = (zl_loop *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    Py_INCREF(module);
    self->module = module;
    self->state = state;
    return (PyObject *)self;
}

/* ZLOOP_URING_COMPLETION=1: stream transports read and write through the backend's completion contract where it
 * has one (uring). Off by default: docs/architecture.md, "The uring backend, level 2". */
static int
loop_completion_wanted(void)
{
    const char *value = getenv("ZLOOP_URING_COMPLETION");
    return value != NULL && strcmp(value, "1") == 0;
}

static int
loop_init(zl_loop *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"backend", NULL};
    PyObject *name_obj = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|O:LoopCore", kwlist, &name_obj)) {
        return -1;
    }
    if (self->backend != NULL || self->closed) {
        PyErr_SetString(PyExc_RuntimeError, "the loop is already initialised");
        return -1;
    }
    const char *name;
    if (name_obj != Py_None) {
        name = PyUnicode_AsUTF8(name_obj);
        if (name == NULL) {
            return -1;
        }
    } else {
        name = getenv("ZLOOP_BACKEND");
        if (name == NULL || name[0] == '\0') {
            name = zl_backend_default_name();
        }
    }
    const zl_backend_ops *ops = NULL;
    char why[512];
    self->backend = zl_backend_open(name, &ops, why, sizeof(why));
    if (self->backend == NULL) {
        int err = errno;
        if (ops == NULL) {
            PyErr_SetString(PyExc_ValueError, why);     /* no name of the list is compiled in */
        } else {
            PyObject *exc_args = Py_BuildValue("(is)", err, why);
            if (exc_args != NULL) {
                PyErr_SetObject(PyExc_OSError, exc_args);
                Py_DECREF(exc_args);
            }
        }
        return -1;
    }
    self->ops = ops;
    self->completion = ops->completions != NULL && loop_completion_wanted();
    self->wake_only_fd = -1;
    self->clock_resolution = loop_clock_resolution();
    self->slow_callback_duration = 0.1;
    zl_loop_stats_init(&self->stats);
    return 0;
}

static int
loop_traverse(zl_loop *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->module);
    Py_VISIT(self->current_handle);
    Py_VISIT(self->task_factory);
    Py_VISIT(self->time_override);
    Py_VISIT(self->dgram_flush);
    if (zl_ready_queue_traverse(&self->ready, visit, arg) < 0 ||
        zl_ready_queue_traverse(&self->ready_later, visit, arg) < 0 ||
        zl_inbox_traverse(&self->inbox, visit, arg) < 0 ||
        zl_timer_heap_traverse(&self->timers, visit, arg) < 0 ||
        zl_ready_queue_traverse(&self->timers_due, visit, arg) < 0) {
        return -1;
    }
    return zl_io_traverse(&self->io, visit, arg);
}

static int
loop_clear(zl_loop *self)
{
    Py_CLEAR(self->current_handle);
    Py_CLEAR(self->task_factory);
    Py_CLEAR(self->time_override);
    zl_ready_queue_clear(&self->ready);
    zl_ready_queue_clear(&self->ready_later);
    zl_inbox_clear(&self->inbox);
    zl_timer_heap_clear(&self->timers);
    zl_ready_queue_clear(&self->timers_due);
    zl_io_release_all(self);
    Py_CLEAR(self->dgram_flush);
    return 0;
}

static void
loop_dealloc(zl_loop *self)
{
    PyObject_GC_UnTrack(self);
    loop_clear(self);
    loop_release_backend(self);
    zl_ready_queue_free(&self->ready);
    zl_ready_queue_free(&self->ready_later);
    zl_inbox_free(&self->inbox);
    zl_timer_heap_free(&self->timers);
    zl_ready_queue_free(&self->timers_due);
    zl_loop_stats_clear(&self->stats);
    zl_io_free_slots(&self->io);
    PyObject *module = self->module;   /* the state lives until the loop is gone */
    PyTypeObject *type = Py_TYPE(self);
    type->tp_free((PyObject *)self);
    Py_XDECREF(module);
    Py_DECREF(type);
}

static PyObject *
loop_get_stopping(zl_loop *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(self->stopping);
}

static int
loop_set_stopping(zl_loop *self, PyObject *value, void *Py_UNUSED(closure))
{
    int flag = value == NULL ? 0 : PyObject_IsTrue(value);
    if (flag < 0) {
        return -1;
    }
    self->stopping = flag;
    return 0;
}

static PyObject *
loop_get_closed(zl_loop *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(self->closed);
}

static PyObject *
loop_get_thread_id(zl_loop *self, void *Py_UNUSED(closure))
{
    if (self->thread_id == 0) {
        Py_RETURN_NONE;
    }
    return PyLong_FromUnsignedLong(self->thread_id);
}

static int
loop_set_thread_id(zl_loop *self, PyObject *value, void *Py_UNUSED(closure))
{
    if (value == NULL || value == Py_None) {
        self->thread_id = 0;
        return 0;
    }
    unsigned long id = PyLong_AsUnsignedLong(value);
    if (id == (unsigned long)-1 && PyErr_Occurred()) {
        return -1;
    }
    self->thread_id = id;
    return 0;
}

static PyObject *
loop_get_current_handle(zl_loop *self, void *Py_UNUSED(closure))
{
    return zl_ref_or_none(self->current_handle);
}

static PyObject *
loop_get_debug_attr(zl_loop *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(self->debug);
}

static PyObject *
loop_get_ready_count(zl_loop *self, void *Py_UNUSED(closure))
{
    return PyLong_FromSize_t(self->ready.len + self->ready_later.len);
}

static PyObject *
loop_get_timer_count(zl_loop *self, void *Py_UNUSED(closure))
{
    return PyLong_FromSize_t(self->timers.len + self->timers_due.len);
}

static PyObject *
loop_get_timer_cancelled_count(zl_loop *self, void *Py_UNUSED(closure))
{
    return PyLong_FromSsize_t(self->timer_cancelled_count);
}

static PyObject *
loop_get_watched_count(zl_loop *self, void *Py_UNUSED(closure))
{
    return PyLong_FromLong(zl_io_wanted_count(&self->io));
}

static PyObject *
loop_get_ring_datagrams_sent(zl_loop *self, void *Py_UNUSED(closure))
{
    return PyLong_FromUnsignedLongLong(self->ring_datagrams_sent);
}

static PyObject *
loop_get_task_factory(zl_loop *self, void *Py_UNUSED(closure))
{
    return zl_ref_or_none(self->task_factory);
}

static int
loop_set_task_factory(zl_loop *self, PyObject *value, void *Py_UNUSED(closure))
{
    Py_XINCREF(value);
    Py_XSETREF(self->task_factory, value == Py_None ? NULL : value);
    if (value == Py_None) {
        Py_DECREF(value);
    }
    return 0;
}

static PyMethodDef loop_methods[] = {
    {"create_future", (PyCFunction)zl_loop_create_future, METH_NOARGS, "A new asyncio.Future attached to this loop."},
    {"create_task", (PyCFunction)(void (*)(void))zl_loop_create_task, METH_FASTCALL | METH_KEYWORDS,
     "create_task(coro, *, name=None, context=None) -> Task"},
    {"time", (PyCFunction)loop_time, METH_NOARGS, "The loop's clock: time.monotonic(), in seconds."},
    {"call_soon", (PyCFunction)(void (*)(void))loop_call_soon, METH_FASTCALL | METH_KEYWORDS,
     "call_soon(callback, *args, context=None) -> Handle"},
    {"call_soon_threadsafe", (PyCFunction)(void (*)(void))loop_call_soon_threadsafe, METH_FASTCALL | METH_KEYWORDS,
     "call_soon_threadsafe(callback, *args, context=None) -> Handle; wakes the loop if it is blocked."},
    {"call_later", (PyCFunction)(void (*)(void))loop_call_later, METH_FASTCALL | METH_KEYWORDS,
     "call_later(delay, callback, *args, context=None) -> TimerHandle"},
    {"call_at", (PyCFunction)(void (*)(void))loop_call_at, METH_FASTCALL | METH_KEYWORDS,
     "call_at(when, callback, *args, context=None) -> TimerHandle"},
    {"stop", (PyCFunction)loop_stop, METH_NOARGS, "Stop the loop after the current iteration."},
    {"is_running", (PyCFunction)loop_is_running, METH_NOARGS, "True while run_forever is running."},
    {"is_closed", (PyCFunction)loop_is_closed, METH_NOARGS, "True once close() was called."},
    {"get_debug", (PyCFunction)loop_get_debug, METH_NOARGS, "True in debug mode."},
    {"_set_debug_flag", (PyCFunction)loop_set_debug, METH_O, "Set the C core's debug flag."},
    {"get_backend", (PyCFunction)loop_get_backend, METH_NOARGS, "The name of the I/O backend this loop uses."},
    {"stats", (PyCFunction)zl_loop_stats_dict, METH_NOARGS,
     "The loop's statistics as a dict: counters always, timings while set_stats(True) (see docs/usage.md)."},
    {"set_stats", (PyCFunction)zl_loop_set_stats, METH_O, "set_stats(flag): time polls and callbacks (True/False)."},
    {"add_reader", (PyCFunction)(void (*)(void))loop_add_reader, METH_FASTCALL,
     "add_reader(fd, callback, *args) -> Handle"},
    {"add_writer", (PyCFunction)(void (*)(void))loop_add_writer, METH_FASTCALL,
     "add_writer(fd, callback, *args) -> Handle"},
    {"remove_reader", (PyCFunction)loop_remove_reader, METH_O, "remove_reader(fd) -> bool"},
    {"remove_writer", (PyCFunction)loop_remove_writer, METH_O, "remove_writer(fd) -> bool"},
    {"_sock_recv_now", (PyCFunction)(void (*)(void))zl_loop_sock_recv_now, METH_FASTCALL,
     "_sock_recv_now(fd, n) -> bytes, or None when nothing is ready (one recv, GIL held)."},
    {"_sock_send_now", (PyCFunction)(void (*)(void))zl_loop_sock_send_now, METH_FASTCALL,
     "_sock_send_now(fd, data) -> bytes sent, or None when the socket takes none now (one send, GIL held)."},
    {"_run_until_stopped", (PyCFunction)loop_py_run_until_stopped, METH_NOARGS,
     "Iterate until stop(); run_forever wraps this."},
    {"_run_once", (PyCFunction)loop_py_run_once, METH_NOARGS, "Run one iteration."},
    {"_make_handle", (PyCFunction)(void (*)(void))loop_make_handle, METH_VARARGS | METH_KEYWORDS,
     "_make_handle(callback, args, context=None) -> Handle, not scheduled."},
    {"_enqueue", (PyCFunction)loop_enqueue_handle, METH_O, "Queue a Handle to run in the next iteration (signal-safe)."},
    {"_server_clients", (PyCFunction)zl_loop_server_clients, METH_O, "The transports a Server counts, still open."},
    {"_fd_transport", (PyCFunction)zl_loop_fd_transport, METH_O, "The open transport owning an fd, or None."},
    {"_make_acceptor", (PyCFunction)(void (*)(void))zl_loop_make_acceptor, METH_VARARGS | METH_KEYWORDS,
     "_make_acceptor(sock, protocol_factory, server, backlog, on_error, report): accept in C (start() it)."},
    {"_make_socket_transport", (PyCFunction)(void (*)(void))zl_loop_make_socket_transport,
     METH_VARARGS | METH_KEYWORDS, "_make_socket_transport(sock, protocol, waiter=None, *, extra=None, server=None)"},
    {"_make_datagram_transport", (PyCFunction)(void (*)(void))zl_loop_make_datagram_transport,
     METH_VARARGS | METH_KEYWORDS, "_make_datagram_transport(sock, protocol, address=None, waiter=None, extra=None)"},
    {"_close_core", (PyCFunction)loop_close_core, METH_NOARGS, "Drop queued work and release the backend."},
    {"_after_fork", (PyCFunction)loop_after_fork, METH_NOARGS, "Re-create kernel state in a forked child."},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef loop_members[] = {
    {"slow_callback_duration", T_DOUBLE, offsetof(zl_loop, slow_callback_duration), 0,
     "In debug mode, callbacks taking longer than this (seconds) are logged."},
    {"_clock_resolution", T_DOUBLE, offsetof(zl_loop, clock_resolution), READONLY, NULL},
    {"_wake_only_fd", T_INT, offsetof(zl_loop, wake_only_fd), 0,
     "An fd whose readiness only wakes the loop (-1: none); non-blocking polls may skip it."},
    {NULL, 0, 0, 0, NULL},
};

static PyGetSetDef loop_getset[] = {
    {"_stopping", (getter)loop_get_stopping, (setter)loop_set_stopping, NULL, NULL},
    {"_closed", (getter)loop_get_closed, NULL, NULL, NULL},
    {"_thread_id", (getter)loop_get_thread_id, (setter)loop_set_thread_id, NULL, NULL},
    {"_current_handle", (getter)loop_get_current_handle, NULL, NULL, NULL},
    {"_task_factory", (getter)loop_get_task_factory, (setter)loop_set_task_factory, NULL, NULL},
    {"_debug", (getter)loop_get_debug_attr, NULL, NULL, NULL},
    {"_ready_count", (getter)loop_get_ready_count, NULL, NULL, NULL},
    {"_timer_count", (getter)loop_get_timer_count, NULL, NULL, NULL},
    {"_timer_cancelled_count", (getter)loop_get_timer_cancelled_count, NULL, NULL, NULL},
    {"_watched_fd_count", (getter)loop_get_watched_count, NULL, NULL, NULL},
    {"_ring_datagrams_sent", (getter)loop_get_ring_datagrams_sent, NULL, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot loop_slots[] = {
    {Py_tp_doc, "The C core of a zloop event loop; zloop.Loop adds the rest of asyncio's API on top."},
    {Py_tp_new, loop_new},
    {Py_tp_init, loop_init},
    {Py_tp_dealloc, loop_dealloc},
    {Py_tp_traverse, loop_traverse},
    {Py_tp_clear, loop_clear},
    {Py_tp_setattro, loop_setattro},
    {Py_tp_methods, loop_methods},
    {Py_tp_members, loop_members},
    {Py_tp_getset, loop_getset},
    {0, NULL},
};

PyType_Spec zl_loop_spec = {
    .name = "zloop._zloop.LoopCore",
    .basicsize = sizeof(zl_loop),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .slots = loop_slots,
};
