/* core/handle.c — Handle and TimerHandle: a callback, its arguments and its context, as returned by
 * call_soon/call_later/add_reader; creation (with a free list), running, cancelling, and the Python-visible API. */
#include "zloop.h"

#include <structmember.h>
#include <time.h>

/* The module state of a handle's types: through its loop, or its type once the GC cleared the loop. */
static zl_state *
handle_state(zl_handle *handle)
{
    if (handle->loop != NULL) {
        return handle->loop->state;
    }
    return (zl_state *)PyType_GetModuleState(Py_TYPE(handle));
}

/* ------------------------------------------------------------------ the copied context and the GC */

/* The context a handle copied for itself (call_soon without context=) is not tracked either while only the handle
 * holds it, once the loop holds many handles (ZL_UNTRACKED_CONTEXT_MIN_QUEUED): thousands of queued handles mean
 * thousands of contexts. It is tracked again before anything else can
 * reach it (a getter, the handle becoming tracked) and before the handle lets go of it, so CPython, whose context
 * dealloc expects a tracked object, only ever frees a tracked one. */
static inline void
handle_track_context(zl_handle *handle)
{
    if (handle->context_untracked) {
        handle->context_untracked = 0;
        PyObject_GC_Track(handle->context);
    }
}

static int
handle_visit_context(zl_handle *handle, visitproc visit, void *arg)
{
    PyObject *context = handle->context;
    if (!handle->context_untracked) {
        Py_VISIT(context);
        return 0;
    }
    return Py_TYPE(context)->tp_traverse(context, visit, arg);   /* what it holds, on its behalf */
}

/* A copy of an empty context is a fresh empty context: when the caller's context holds no variable and the loop
 * already holds many handles, the handle makes its own only when it runs or is asked for it (get_context,
 * _context). Nothing can tell the two apart, and the context is then made and freed next to the call, from
 * CPython's context free list while it is hot, instead of one live context per queued handle (issue 10:
 * call_soon_threadsafe from a thread, batch call_soon). With few handles queued, copying at once is cheaper. */
static int
current_context_is_empty(void)
{
    PyObject *context = PyThreadState_Get()->context;   /* NULL until the thread first uses a context */
    return context == NULL || Py_TYPE(context)->tp_as_mapping->mp_length(context) == 0;   /* cannot fail */
}

/* The record of a call_soon_threadsafe handle still queued (threadsafe_inbox.h), or NULL. */
static zl_inbox_record *
handle_inbox_record(zl_handle *handle)
{
    if (!handle->in_inbox || handle->loop == NULL) {
        return NULL;
    }
    zl_inbox_record *record = zl_inbox_find(&handle->loop->inbox, handle->seq);
    return record != NULL && record->handle == handle ? record : NULL;
}

static int
handle_make_deferred_context(zl_handle *handle)
{
    if (handle->context_deferred) {
        handle->context = PyContext_New();
        if (handle->context == NULL) {
            return -1;
        }
        handle->context_deferred = 0;
        zl_inbox_record *record = handle_inbox_record(handle);
        if (record != NULL && record->context == NULL && record->callback != NULL) {
            Py_INCREF(handle->context);   /* the record runs in the same context should the handle go first */
            record->context = handle->context;
        }
    }
    return 0;
}

/* ------------------------------------------------------------------ creation */

static zl_handle *
handle_alloc(zl_state *state, int is_timer)
{
    PyTypeObject *type = is_timer ? state->timer_handle_type : state->handle_type;
    zl_handle *handle;
    if (state->handle_freelist_len[is_timer] > 0) {
        handle = state->handle_freelist[is_timer][--state->handle_freelist_len[is_timer]];
        (void)PyObject_Init((PyObject *)handle, type);   /* takes a reference to the type */
    } else {
        handle = PyObject_GC_New(zl_handle, type);
        if (handle == NULL) {
            return NULL;
        }
    }
    handle->callback = NULL;
    handle->args = handle->inline_args;
    handle->nargs = 0;
    handle->args_tuple = NULL;
    handle->context = NULL;
    handle->loop = NULL;
    handle->source_traceback = NULL;
    handle->cancelled_repr = NULL;
    handle->weakreflist = NULL;
    handle->cancelled = 0;
    handle->running = 0;
    handle->is_timer = is_timer != 0;
    handle->context_untracked = 0;
    handle->context_deferred = 0;
    handle->scheduled = 0;
    handle->threadsafe = 0;
    handle->in_inbox = 0;
    handle->run_thread = 0;
    handle->when = 0.0;
    handle->seq = 0;
    handle->when_given = NULL;
    return handle;
}

static int
handle_store_args(zl_handle *handle, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs <= ZL_HANDLE_INLINE_ARGS) {
        for (Py_ssize_t i = 0; i < nargs; i++) {
            Py_INCREF(args[i]);
            handle->inline_args[i] = args[i];
        }
        handle->args = handle->inline_args;
    } else {
        if (nargs > INT_MAX) {
            PyErr_SetString(PyExc_OverflowError, "too many arguments for a callback");
            return -1;
        }
        handle->args_tuple = PyTuple_New(nargs);
        if (handle->args_tuple == NULL) {
            return -1;
        }
        for (Py_ssize_t i = 0; i < nargs; i++) {
            Py_INCREF(args[i]);
            PyTuple_SET_ITEM(handle->args_tuple, i, args[i]);
        }
        handle->args = &PyTuple_GET_ITEM(handle->args_tuple, 0);
    }
    handle->nargs = (int)nargs;
    return 0;
}

zl_handle *
zl_handle_new(zl_loop *loop, PyObject *callback, PyObject *const *args, Py_ssize_t nargs,
              PyObject *context, int is_timer, double when)
{
    zl_handle *handle = handle_alloc(loop->state, is_timer);
    if (handle == NULL) {
        return NULL;
    }
    Py_INCREF(callback);
    handle->callback = callback;
    Py_INCREF(loop);
    handle->loop = loop;
    handle->when = when;
    if (handle_store_args(handle, args, nargs) < 0) {
        goto error;
    }
    if (context == NULL || context == Py_None) {
        /* Few handles queued: a copy from the context free list is cheapest. Many: contexts they do not need yet
         * would fill memory (deferred when empty) or the collector's lists (untracked otherwise). */
        int many = loop->ready.len + loop->timers.len + loop->timers_due.len >= ZL_UNTRACKED_CONTEXT_MIN_QUEUED;
        if (many && current_context_is_empty()) {
            handle->context_deferred = 1;
        } else if ((handle->context = PyContext_CopyCurrent()) == NULL) {
            goto error;
        } else if (many) {
            PyObject_GC_UnTrack(handle->context);
            handle->context_untracked = 1;
        }
    } else {
        Py_INCREF(context);
        handle->context = context;
    }
    if (loop->debug) {
        handle->source_traceback = PyObject_CallNoArgs(loop->state->extract_stack);
        if (handle->source_traceback == NULL) {
            goto error;
        }
    }
    return handle;   /* untracked: see handle_gc.h */

error:
    Py_DECREF(handle);
    return NULL;
}

/* ------------------------------------------------------------------ teardown */

static void
handle_clear_args(zl_handle *handle)
{
    if (handle->args_tuple != NULL) {
        Py_CLEAR(handle->args_tuple);
    } else {
        for (Py_ssize_t i = 0; i < handle->nargs; i++) {
            Py_CLEAR(handle->inline_args[i]);
        }
    }
    handle->args = handle->inline_args;
    handle->nargs = 0;
}

/* The handle's record stays queued and runs on its own from now on. */
static void
handle_leave_inbox(zl_handle *handle)
{
    zl_inbox_record *record = handle_inbox_record(handle);
    if (record != NULL) {
        record->handle = NULL;
    }
    handle->in_inbox = 0;
}

static int
handle_clear(zl_handle *handle)
{
    handle_leave_inbox(handle);   /* while it still has its loop */
    Py_CLEAR(handle->callback);
    handle_clear_args(handle);
    handle_track_context(handle);
    Py_CLEAR(handle->context);
    handle->context_deferred = 0;
    Py_CLEAR(handle->loop);
    Py_CLEAR(handle->source_traceback);
    Py_CLEAR(handle->cancelled_repr);
    Py_CLEAR(handle->when_given);
    return 0;
}

static int
handle_traverse(zl_handle *handle, visitproc visit, void *arg)
{
    Py_VISIT(handle->callback);
    Py_VISIT(handle->args_tuple);
    if (handle->args_tuple == NULL) {
        for (Py_ssize_t i = 0; i < handle->nargs; i++) {
            Py_VISIT(handle->inline_args[i]);
        }
    }
    int rc = handle_visit_context(handle, visit, arg);
    if (rc != 0) {
        return rc;
    }
    Py_VISIT(handle->loop);
    Py_VISIT(Py_TYPE(handle));
    Py_VISIT(handle->source_traceback);
    Py_VISIT(handle->cancelled_repr);
    return 0;
}

/* ------------------------------------------------------------------ the cyclic GC (handle_gc.h) */

int
zl_handle_visit_owned(PyObject *handle, visitproc visit, void *arg)
{
    if (handle == ZL_INBOX_MARK) {
        return 0;
    }
    if (PyObject_GC_IsTracked(handle)) {
        Py_VISIT(handle);
        return 0;
    }
    return handle_traverse((zl_handle *)handle, visit, arg);
}

void
zl_handle_track(PyObject *handle)
{
    if (!PyObject_GC_IsTracked(handle)) {
        handle_track_context((zl_handle *)handle);   /* a tracked handle's traverse visits it as an object */
        PyObject_GC_Track(handle);
    }
}

static void
handle_dealloc(zl_handle *handle)
{
    PyObject_GC_UnTrack(handle);
    if (handle->weakreflist != NULL) {
        PyObject_ClearWeakRefs((PyObject *)handle);
    }
    zl_state *state = handle_state(handle);
    handle_clear(handle);
    int is_timer = handle->is_timer;
    PyTypeObject *type = Py_TYPE(handle);
    if (state->handle_freelist_len[is_timer] < ZL_HANDLE_FREELIST_MAX) {
        state->handle_freelist[is_timer][state->handle_freelist_len[is_timer]++] = handle;
    } else {
        PyObject_GC_Del(handle);
    }
    Py_DECREF(type);   /* last: it may free the module, whose teardown frees the free list */
}

void
zl_handle_freelist_clear(zl_state *state)
{
    for (int kind = 0; kind < 2; kind++) {
        while (state->handle_freelist_len[kind] > 0) {
            PyObject_GC_Del(state->handle_freelist[kind][--state->handle_freelist_len[kind]]);
        }
    }
}

/* ------------------------------------------------------------------ running and cancelling */

int
zl_handle_report_error(zl_handle *handle)
{
    if (zl_err_stops_loop()) {
        return -1;
    }
    PyObject *exc = zl_err_fetch();
    PyObject *report = handle_state(handle)->report_callback_error;
    PyObject *res = PyObject_CallFunctionObjArgs(report, (PyObject *)handle, exc, NULL);
    Py_DECREF(exc);
    if (res != NULL) {
        Py_DECREF(res);
        return 0;
    }
    if (zl_err_stops_loop()) {
        return -1;
    }
    PyErr_WriteUnraisable((PyObject *)handle);
    return 0;
}

int
zl_handle_run(zl_handle *handle)
{
    PyObject *callback = handle->callback;
    if (callback == NULL) {
        return 0;
    }
    Py_INCREF(callback);
    Py_INCREF(handle);
    handle->running = 1;
    if (handle->threadsafe) {
        handle->run_thread = PyThread_get_thread_ident();
    }
    PyObject *res = NULL;
    if (handle_make_deferred_context(handle) == 0) {
        res = zl_call_in_context(handle->context, callback, handle->args, handle->nargs);
    }
    handle->running = 0;
    if (handle->cancelled) {
        handle_clear_args(handle);   /* cancelled by its own callback: cancel left them for us */
    }
    Py_DECREF(callback);
    int rc = 0;
    if (res == NULL) {
        rc = zl_handle_report_error(handle);
    } else {
        Py_DECREF(res);
    }
    Py_DECREF(handle);
    return rc;
}

void
zl_handle_cancel(zl_handle *handle)
{
    if (handle->cancelled) {
        return;
    }
    if (handle->is_timer && handle->scheduled == ZL_TIMER_IN_HEAP && handle->loop != NULL) {
        zl_loop_timer_cancelled(handle->loop);
    }
    handle->cancelled = 1;
    if (handle->loop != NULL && handle->loop->debug) {
        /* Keep a description in debug mode: the callback and arguments are about to go. */
        Py_XSETREF(handle->cancelled_repr, PyObject_Repr((PyObject *)handle));
        if (handle->cancelled_repr == NULL) {
            PyErr_Clear();
        }
    }
    Py_CLEAR(handle->callback);
    if (!handle->running) {
        handle_clear_args(handle);
    }
    zl_inbox_record *record = handle_inbox_record(handle);
    if (record != NULL) {
        zl_inbox_record_cancel(record);
    }
}

/* A call_soon_threadsafe handle asked about from another thread while its callback runs: wait (GIL released)
 * until the callback is done, as asyncio 3.14's _ThreadSafeHandle does with its lock; its own thread never waits. */
static void
handle_wait_for_running_callback(zl_handle *handle)
{
    if (!handle->threadsafe) {
        return;
    }
    unsigned long me = PyThread_get_thread_ident();
    while (handle->running && handle->run_thread != me) {
        Py_BEGIN_ALLOW_THREADS
        struct timespec pause = {0, 500 * 1000};
        nanosleep(&pause, NULL);
        Py_END_ALLOW_THREADS
    }
}

/* ------------------------------------------------------------------ Python API */

static PyObject *
handle_py_cancel(zl_handle *handle, PyObject *Py_UNUSED(ignored))
{
    handle_wait_for_running_callback(handle);
    zl_handle_cancel(handle);
    Py_RETURN_NONE;
}

static PyObject *
handle_py_cancelled(zl_handle *handle, PyObject *Py_UNUSED(ignored))
{
    handle_wait_for_running_callback(handle);
    return PyBool_FromLong(handle->cancelled);
}

static PyObject *
handle_py_get_context(zl_handle *handle, PyObject *Py_UNUSED(ignored))
{
    if (handle_make_deferred_context(handle) < 0) {
        return NULL;
    }
    handle_track_context(handle);
    return zl_ref_or_none(handle->context);   /* NULL once the GC cleared a tracked handle */
}

static PyObject *
handle_py_run(zl_handle *handle, PyObject *Py_UNUSED(ignored))
{
    if (handle->cancelled) {
        Py_RETURN_NONE;
    }
    if (zl_handle_run(handle) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
handle_py_when(zl_handle *handle, PyObject *Py_UNUSED(ignored))
{
    if (handle->when_given != NULL) {
        Py_INCREF(handle->when_given);
        return handle->when_given;
    }
    return PyFloat_FromDouble(handle->when);
}

static PyObject *
handle_repr(zl_handle *handle)
{
    return PyObject_CallOneArg(handle_state(handle)->format_handle, (PyObject *)handle);
}

static PyObject *
handle_get_callback(zl_handle *handle, void *Py_UNUSED(closure))
{
    return zl_ref_or_none(handle->callback);
}

static PyObject *
handle_get_args(zl_handle *handle, void *Py_UNUSED(closure))
{
    if (handle->callback == NULL && !handle->running) {
        Py_RETURN_NONE;
    }
    if (handle->args_tuple != NULL) {
        Py_INCREF(handle->args_tuple);
        return handle->args_tuple;
    }
    PyObject *args = PyTuple_New(handle->nargs);
    if (args == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < handle->nargs; i++) {
        Py_INCREF(handle->inline_args[i]);
        PyTuple_SET_ITEM(args, i, handle->inline_args[i]);
    }
    return args;
}

static PyObject *
handle_get_loop(zl_handle *handle, void *Py_UNUSED(closure))
{
    return zl_ref_or_none((PyObject *)handle->loop);
}

static PyObject *
handle_get_context(zl_handle *handle, void *Py_UNUSED(closure))
{
    if (handle_make_deferred_context(handle) < 0) {
        return NULL;
    }
    handle_track_context(handle);
    return zl_ref_or_none(handle->context);
}

static PyObject *
handle_get_source_traceback(zl_handle *handle, void *Py_UNUSED(closure))
{
    return zl_ref_or_none(handle->source_traceback);
}

static PyObject *
handle_get_repr(zl_handle *handle, void *Py_UNUSED(closure))
{
    return zl_ref_or_none(handle->cancelled_repr);
}

static PyObject *
handle_get_cancelled(zl_handle *handle, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(handle->cancelled);
}

static PyObject *
handle_get_when(zl_handle *handle, void *Py_UNUSED(closure))
{
    return handle_py_when(handle, NULL);
}

static PyObject *
handle_get_scheduled(zl_handle *handle, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(handle->scheduled);
}

static PyMethodDef handle_methods[] = {
    {"cancel", (PyCFunction)handle_py_cancel, METH_NOARGS, "Cancel the callback; a no-op if it already ran."},
    {"cancelled", (PyCFunction)handle_py_cancelled, METH_NOARGS, "True if the handle was cancelled."},
    {"get_context", (PyCFunction)handle_py_get_context, METH_NOARGS, "The contextvars.Context the callback runs in."},
    {"_run", (PyCFunction)handle_py_run, METH_NOARGS, "Run the callback now, as the loop would."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef handle_getset[] = {
    {"_callback", (getter)handle_get_callback, NULL, NULL, NULL},
    {"_args", (getter)handle_get_args, NULL, NULL, NULL},
    {"_loop", (getter)handle_get_loop, NULL, NULL, NULL},
    {"_context", (getter)handle_get_context, NULL, NULL, NULL},
    {"_source_traceback", (getter)handle_get_source_traceback, NULL, NULL, NULL},
    {"_repr", (getter)handle_get_repr, NULL, NULL, NULL},
    {"_cancelled", (getter)handle_get_cancelled, NULL, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef handle_members[] = {
    {"__weaklistoffset__", T_PYSSIZET, offsetof(zl_handle, weakreflist), READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyType_Slot handle_slots[] = {
    {Py_tp_doc, "A callback scheduled on a zloop loop (call_soon, add_reader, ...)."},
    {Py_tp_dealloc, handle_dealloc},
    {Py_tp_traverse, handle_traverse},
    {Py_tp_clear, handle_clear},
    {Py_tp_repr, handle_repr},
    {Py_tp_methods, handle_methods},
    {Py_tp_getset, handle_getset},
    {Py_tp_members, handle_members},
    {0, NULL},
};

/* BASETYPE: TimerHandle's base. Made by the loop only: Python cannot instantiate either. */
PyType_Spec zl_handle_spec = {
    .name = "zloop.Handle",
    .basicsize = sizeof(zl_handle),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC | ZL_TPFLAGS_NO_NEW,
    .slots = handle_slots,
};

/* asyncio: equal when deadline, callback, arguments and cancelled state are all equal. */
static int
timer_handles_equal(zl_handle *a, zl_handle *b)
{
    if (a == b) {
        return 1;
    }
    if (a->when != b->when || a->cancelled != b->cancelled || a->nargs != b->nargs) {
        return 0;
    }
    if (a->callback == NULL || b->callback == NULL) {
        return a->callback == b->callback;
    }
    int same = PyObject_RichCompareBool(a->callback, b->callback, Py_EQ);
    for (Py_ssize_t i = 0; same == 1 && i < a->nargs; i++) {
        same = PyObject_RichCompareBool(a->args[i], b->args[i], Py_EQ);
    }
    return same;
}

static PyObject *
timer_handle_richcompare(PyObject *self, PyObject *other, int op)
{
    if (!PyObject_TypeCheck(other, handle_state((zl_handle *)self)->timer_handle_type)) {
        Py_RETURN_NOTIMPLEMENTED;
    }
    zl_handle *a = (zl_handle *)self;
    zl_handle *b = (zl_handle *)other;
    if (op == Py_EQ || op == Py_NE) {
        int same = timer_handles_equal(a, b);
        if (same < 0) {
            return NULL;
        }
        return PyBool_FromLong(op == Py_EQ ? same : !same);
    }
    if (op == Py_LE || op == Py_GE) {
        /* asyncio: strictly earlier (later), or equal in every part. */
        if (op == Py_LE ? a->when < b->when : a->when > b->when) {
            Py_RETURN_TRUE;
        }
        int same = timer_handles_equal(a, b);
        return same < 0 ? NULL : PyBool_FromLong(same);
    }
    Py_RETURN_RICHCOMPARE(a->when, b->when, op);
}

/* As asyncio: the hash of the deadline, so equal handles hash alike. */
static Py_hash_t
timer_handle_hash(PyObject *self)
{
    PyObject *when = PyFloat_FromDouble(((zl_handle *)self)->when);
    if (when == NULL) {
        return -1;
    }
    Py_hash_t hash = PyObject_Hash(when);
    Py_DECREF(when);
    return hash;
}

static PyMethodDef timer_handle_methods[] = {
    {"when", (PyCFunction)handle_py_when, METH_NOARGS, "The absolute time, on loop.time()'s clock, the callback is due."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef timer_handle_getset[] = {
    {"_when", (getter)handle_get_when, NULL, NULL, NULL},
    {"_scheduled", (getter)handle_get_scheduled, NULL, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot timer_handle_slots[] = {
    {Py_tp_doc, "A callback scheduled for a time on a zloop loop (call_later, call_at)."},
    {Py_tp_dealloc, handle_dealloc},
    {Py_tp_traverse, handle_traverse},
    {Py_tp_clear, handle_clear},
    {Py_tp_richcompare, timer_handle_richcompare},
    {Py_tp_hash, timer_handle_hash},
    {Py_tp_methods, timer_handle_methods},
    {Py_tp_getset, timer_handle_getset},
    {0, NULL},
};

PyType_Spec zl_timer_handle_spec = {
    .name = "zloop.TimerHandle",
    .basicsize = sizeof(zl_handle),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | ZL_TPFLAGS_NO_NEW,
    .slots = timer_handle_slots,
};
