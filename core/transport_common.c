/* core/transport_common.c — the logic the stream and datagram transports share over their common head: fd watching,
 * flow control, fatal errors, close/abort and connection_lost, GC and finalisation, creation, common Python API. */
#include "transport_common.h"

#include <errno.h>
#include <stddef.h>
#include <unistd.h>

/* The queue's entry count or byte total, by its offset in the transport object (see zl_transport_kind). */
static size_t
transport_queued(zl_transport *t, size_t offset)
{
    return *(const size_t *)((const char *)t + offset);
}

/* ------------------------------------------------------------------ scheduling */

/* callback(arg) (no argument when arg is NULL) on the loop's next iteration, in context (NULL: a copy of the
 * current one, as call_soon). */
static int
transport_call_soon_in(zl_transport *t, PyObject *callback, PyObject *arg, PyObject *context)
{
    if (zl_loop_check_closed(t->loop) < 0) {   /* close()/abort() after loop.close(): asyncio's RuntimeError */
        return -1;
    }
    PyObject *args[1] = {arg};
    zl_handle *handle = zl_handle_new(t->loop, callback, args, arg != NULL, context, 0, 0.0);
    if (handle == NULL) {
        return -1;
    }
    return zl_loop_enqueue(t->loop, (PyObject *)handle);
}

static int
transport_call_soon(zl_transport *t, PyObject *callback, PyObject *arg)
{
    return transport_call_soon_in(t, callback, arg, NULL);
}

static int
transport_call_soon_method_in(zl_transport *t, PyObject *name, PyObject *arg, PyObject *context)
{
    PyObject *method = PyObject_GetAttr((PyObject *)t, name);
    if (method == NULL) {
        return -1;
    }
    int rc = transport_call_soon_in(t, method, arg, context);
    Py_DECREF(method);
    return rc;
}

int
zl_transport_call_soon_method(zl_transport *t, PyObject *name, PyObject *arg)
{
    return transport_call_soon_method_in(t, name, arg, NULL);
}

int
zl_transport_call_soon_method_in_own_context(zl_transport *t, PyObject *name, PyObject *arg)
{
    return transport_call_soon_method_in(t, name, arg, t->context);
}

/* ------------------------------------------------------------------ watching the fd */

/* asyncio registers a transport's reader and writer from a handle its __init__ schedules, so the protocol's
 * readiness callbacks (data_received, buffer_updated, eof_received, resume_writing, ...) run in a copy of the
 * context current when the transport was made. The I/O dispatch calls these, which run the kind's in it. */
static int
transport_run_in_context(zl_transport *t, zl_io_fn fn, int fd)
{
    if (PyContext_Enter(t->context) < 0) {
        return -1;
    }
    return zl_context_exit_keeping_error(t->context, fn((PyObject *)t, fd));
}

static int
transport_on_readable(PyObject *owner, int fd)
{
    zl_transport *t = (zl_transport *)owner;
    return transport_run_in_context(t, t->kind->on_readable, fd);
}

static int
transport_on_writable(PyObject *owner, int fd)
{
    zl_transport *t = (zl_transport *)owner;
    return transport_run_in_context(t, t->kind->on_writable, fd);
}

int
zl_transport_watch(zl_transport *t, int event)
{
    if (zl_transport_sock_gone(t)) {   /* never watch a number that may be another file's by now */
        errno = EBADF;
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    int reading = event == ZL_EV_READ;
    if (reading && t->kind->recv_arm != NULL) {
        int armed = t->kind->recv_arm(t);
        if (armed != 0) {
            return armed < 0 ? -1 : 0;
        }
    }
    zl_io_fn fn = reading ? transport_on_readable : transport_on_writable;
    if (zl_io_set_side(t->loop, t->fd, event, NULL, fn, (PyObject *)t) < 0) {
        return -1;
    }
    *(reading ? &t->reading : &t->writing) = 1;
    return 0;
}

void
zl_transport_unwatch(zl_transport *t, int event)
{
    if (event == ZL_EV_READ && t->kind->recv_disarm != NULL && t->kind->recv_disarm(t) != 0) {
        return;
    }
    *(event == ZL_EV_READ ? &t->reading : &t->writing) = 0;
    zl_io_clear_owned_side(t->loop, t->fd, event, (PyObject *)t);
}

/* ------------------------------------------------------------------ flow control */

static int
transport_call_flow_method(zl_transport *t, const char *method, const char *message)
{
    PyObject *res = PyObject_CallMethod(t->protocol, method, NULL);
    if (res != NULL) {
        Py_DECREF(res);
        return 0;
    }
    if (zl_err_stops_loop()) {
        return -1;
    }
    PyObject *exc = zl_err_fetch();
    res = PyObject_CallFunction(t->loop->state->transport_protocol_error, "OOs", (PyObject *)t, exc, message);
    Py_XDECREF(exc);
    if (res == NULL) {
        if (zl_err_stops_loop()) {
            return -1;   /* the exception handler raised it: asyncio lets it through, out of write() too */
        }
        PyErr_WriteUnraisable((PyObject *)t);
    }
    Py_XDECREF(res);
    return 0;
}

int
zl_transport_pause_protocol(zl_transport *t)
{
    return transport_call_flow_method(t, "pause_writing", "protocol.pause_writing() failed");
}

int
zl_transport_resume_protocol(zl_transport *t)
{
    return transport_call_flow_method(t, "resume_writing", "protocol.resume_writing() failed");
}

/* A water mark given as an int: a value beyond Py_ssize_t is clamped (no buffer gets that large), a negative one
 * kept for the range check. Anything else is a TypeError. */
static int
transport_water_mark(PyObject *value, Py_ssize_t *out)
{
    int overflow;
    long long v = PyLong_AsLongLongAndOverflow(value, &overflow);
    if (v == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (overflow != 0 || v > PY_SSIZE_T_MAX || v < -PY_SSIZE_T_MAX) {
        v = overflow > 0 || (overflow == 0 && v > 0) ? PY_SSIZE_T_MAX : -1;
    }
    *out = (Py_ssize_t)v;
    return 0;
}

/* asyncio's _set_write_buffer_limits: high defaults to 64 KiB or 4 * low, low to high // 4. */
static int
transport_set_limits(zl_transport *t, PyObject *high_obj, PyObject *low_obj)
{
    Py_ssize_t high = -1, low = -1;
    if ((high_obj != Py_None && transport_water_mark(high_obj, &high) < 0) ||
        (low_obj != Py_None && transport_water_mark(low_obj, &low) < 0)) {
        return -1;
    }
    if (high_obj == Py_None) {
        high = low_obj == Py_None ? ZL_DEFAULT_HIGH_WATER : low > PY_SSIZE_T_MAX / 4 ? PY_SSIZE_T_MAX : 4 * low;
    }
    if (low_obj == Py_None) {
        low = high / 4;
    }
    if (!(high >= low && low >= 0)) {
        PyErr_Format(PyExc_ValueError, "high (%zd) must be >= low (%zd) must be >= 0", high, low);
        return -1;
    }
    t->high_water = high;
    t->low_water = low;
    return 0;
}

int
zl_transport_drop_after_lost(zl_transport *t)
{
    if (t->conn_lost >= ZL_LOG_THRESHOLD_FOR_CONNLOST_WRITES) {
        PyObject *res = PyObject_CallNoArgs(t->loop->state->warn_send_after_lost);
        if (res == NULL) {
            return -1;
        }
        Py_DECREF(res);
    }
    t->conn_lost++;
    return 0;
}

/* ------------------------------------------------------------------ errors and closing */

int
zl_transport_call_connection_lost_soon(zl_transport *t, PyObject *exc)
{
    return zl_transport_call_soon_method(t, ZL_NAME(t->loop->state, _call_connection_lost), exc == NULL ? Py_None : exc);
}

/* Stop watching the fd and give it back to add_reader/add_writer. */
static void
transport_release_fd(zl_transport *t)
{
    zl_transport_stop_reading(t);
    zl_transport_stop_writing(t);
    zl_io_disown_fd(t->loop, t->fd, (PyObject *)t);
}

/* asyncio's _force_close(exc): drop the queue, stop watching, connection_lost(exc) soon. */
static int
transport_force_close(zl_transport *t, PyObject *exc)
{
    if (t->conn_lost) {
        return 0;
    }
    t->kind->queue_drop(t);
    zl_transport_stop_writing(t);
    if (!t->closing) {
        t->closing = 1;
        zl_transport_stop_reading(t);
        zl_io_disown_fd(t->loop, t->fd, (PyObject *)t);
    }
    t->conn_lost++;
    return zl_transport_call_connection_lost_soon(t, exc);
}

int
zl_transport_fatal_error(zl_transport *t, PyObject *exc, const char *message)
{
    PyObject *res = PyObject_CallFunction(t->loop->state->transport_fatal_error, "OOs", (PyObject *)t, exc, message);
    if (res == NULL) {
        if (zl_err_stops_loop()) {
            Py_DECREF(exc);
            return -1;
        }
        PyErr_WriteUnraisable((PyObject *)t);
    }
    Py_XDECREF(res);
    int rc = transport_force_close(t, exc);
    Py_DECREF(exc);
    return rc;
}

int
zl_transport_close(zl_transport *t)
{
    if (t->closing) {
        return 0;
    }
    t->closing = 1;
    zl_transport_stop_reading(t);
    zl_io_disown_fd(t->loop, t->fd, (PyObject *)t);   /* asyncio frees the fd for others once closing */
    if (transport_queued(t, t->kind->queue_count_offset) == 0) {
        t->conn_lost++;
        zl_transport_stop_writing(t);
        return zl_transport_call_connection_lost_soon(t, NULL);
    }
    return 0;
}

/* Forget the socket object; the fd check reads the transport's own copy from now on. */
static void
transport_drop_socket(zl_transport *t)
{
    t->sock_fd = &t->fd;
    t->fd_owned = 0;
    Py_CLEAR(t->sock);
}

/* Close the socket object (or the bare fd no socket object was made for), if still open, and forget it. */
static void
transport_close_socket(zl_transport *t)
{
    if (t->fd_owned) {
        t->fd_owned = 0;
        (void)close(t->fd);
        return;
    }
    if (t->sock == NULL) {
        return;
    }
    PyObject *closed = PyObject_CallMethod(t->sock, "close", NULL);
    if (closed == NULL) {
        PyErr_WriteUnraisable((PyObject *)t);
    }
    Py_XDECREF(closed);
    transport_drop_socket(t);
}

/* asyncio's _call_connection_lost; its finally: the socket closes (and a stream's server learns of it) even when
 * connection_lost raised. */
PyObject *
zl_transport_py_call_connection_lost(zl_transport *self, PyObject *exc)
{
    PyObject *res = Py_None;
    Py_INCREF(res);
    if (self->protocol_connected && self->protocol != NULL) {
        Py_DECREF(res);
        res = PyObject_CallMethodOneArg(self->protocol, ZL_NAME(self->loop->state, connection_lost), exc);
    }
    PyObject *raised = res == NULL ? zl_err_fetch() : NULL;
    transport_release_fd(self);
    transport_close_socket(self);
    Py_CLEAR(self->protocol);
    self->kind->release_connection(self);
    if (raised != NULL) {
        zl_err_restore(raised);
        return NULL;
    }
    return res;
}

/* ------------------------------------------------------------------ lifetime */

int
zl_transport_traverse(zl_transport *t, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(t));
    Py_VISIT(t->extra);
    Py_VISIT(t->dict);
    Py_VISIT(t->context);
    Py_VISIT(t->loop);
    Py_VISIT(t->sock);
    Py_VISIT(t->protocol);
    return 0;
}

void
zl_transport_clear(zl_transport *t)
{
    Py_CLEAR(t->extra);
    Py_CLEAR(t->dict);
    Py_CLEAR(t->context);
    transport_drop_socket(t);
    Py_CLEAR(t->protocol);
}

int
zl_transport_finalize_unclosed(zl_transport *t)
{
    if (!zl_transport_is_open(t)) {
        return 0;
    }
    PyObject *exc = zl_err_fetch();
    if (PyErr_ResourceWarning((PyObject *)t, 1, "unclosed transport %R", (PyObject *)t) < 0) {
        PyErr_WriteUnraisable((PyObject *)t);
    }
    if (t->loop != NULL && t->loop->backend != NULL) {
        transport_release_fd(t);
    } else if (t->loop != NULL) {
        zl_io_disown_fd(t->loop, t->fd, (PyObject *)t);   /* the closed loop still knew the fd as this one's */
    }
    transport_close_socket(t);
    zl_err_restore(exc);
    return 1;
}

int
zl_transport_dealloc_begin(zl_transport *t)
{
    if (PyObject_CallFinalizerFromDealloc((PyObject *)t) < 0) {
        return -1;
    }
    PyObject_GC_UnTrack(t);
    if (t->weakreflist != NULL) {
        PyObject_ClearWeakRefs((PyObject *)t);
    }
    return 0;
}

void
zl_transport_dealloc_end(zl_transport *t)
{
    Py_CLEAR(t->loop);
    PyTypeObject *type = Py_TYPE(t);
    type->tp_free((PyObject *)t);
    Py_DECREF(type);
}

/* ------------------------------------------------------------------ creation */

int
zl_transport_check_creatable(zl_loop *loop, PyTypeObject *type)
{
    if (loop->state->transport_socket_type == NULL || type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "zloop's transport types are not initialised");
        return -1;
    }
    return zl_loop_check_closed(loop);
}

/* Where a socket.socket keeps its fd: CPython's socket object (PySocketSockObject) holds it, an int on POSIX, right
 * after the object header, and sets it to -1 on close() and detach(). Used only when it holds the fd fileno()
 * just gave; NULL for any other object. */
const int *
zl_transport_sock_fd_field(zl_state *state, PyObject *sock, int fd)
{
    PyTypeObject *socket_type = state->socket_type;   /* this interpreter's _socket.socket */
    if (socket_type == NULL) {
        PyObject *module = PyImport_ImportModule("_socket");
        PyObject *type = module ? PyObject_GetAttrString(module, "socket") : NULL;
        Py_XDECREF(module);
        if (type == NULL || !PyType_Check(type)) {
            Py_XDECREF(type);
            PyErr_Clear();
            return NULL;
        }
        socket_type = state->socket_type = (PyTypeObject *)type;
    }
    if (socket_type->tp_basicsize < (Py_ssize_t)(sizeof(PyObject) + sizeof(int)) ||
        !PyObject_TypeCheck(sock, socket_type)) {
        return NULL;
    }
    const int *field = (const int *)(const void *)((const char *)sock + sizeof(PyObject));
    return *field == fd ? field : NULL;
}

zl_transport *
zl_transport_new_for_fd(PyTypeObject *type, const zl_transport_kind *kind, zl_loop *loop, int fd, PyObject *context)
{
    zl_transport *t = (zl_transport *)type->tp_alloc(type, 0);
    if (t == NULL) {
        Py_DECREF(context);
        return NULL;
    }
    t->context = context;
    Py_INCREF(loop);
    t->loop = loop;
    t->fd = fd;
    t->sock_fd = &t->fd;
    t->fd_owned = 1;
    t->kind = kind;
    t->high_water = ZL_DEFAULT_HIGH_WATER;
    t->low_water = ZL_DEFAULT_HIGH_WATER / 4;
    return t;
}

zl_transport *
zl_transport_new(PyTypeObject *type, const zl_transport_kind *kind, zl_loop *loop, PyObject *sock)
{
    int fd = zl_fileobj_to_fd(sock);
    if (fd < 0) {
        return NULL;
    }
    PyObject *context = PyContext_CopyCurrent();
    zl_transport *t = context ? zl_transport_new_for_fd(type, kind, loop, fd, context) : NULL;
    if (t == NULL) {
        return NULL;
    }
    t->fd_owned = 0;   /* the caller's socket object owns it */
    Py_INCREF(sock);
    t->sock = sock;
    t->sock_fd = zl_transport_sock_fd_field(loop->state, sock, fd);
    if (t->sock_fd == NULL) {
        t->sock_fd = &t->fd;
    }
    return t;
}

PyObject *
zl_transport_socket(zl_transport *t)
{
    if (!t->fd_owned) {
        return t->sock;
    }
    PyObject *module = PyImport_ImportModule("socket");
    PyObject *type = module ? PyObject_GetAttrString(module, "socket") : NULL;
    Py_XDECREF(module);
    PyObject *args = type ? Py_BuildValue("(iiii)", -1, -1, -1, t->fd) : NULL;
    PyObject *sock = args ? PyObject_Call(type, args, NULL) : NULL;   /* socket.socket(fileno=fd) */
    Py_XDECREF(args);
    Py_XDECREF(type);
    if (sock == NULL) {
        return NULL;
    }
    t->fd_owned = 0;
    t->sock = sock;
    t->sock_fd = zl_transport_sock_fd_field(t->loop->state, sock, t->fd);
    if (t->sock_fd == NULL) {
        t->sock_fd = &t->fd;
    }
    return sock;
}

/* info[key] = sock.method(), None when that raises OSError; keep_given leaves a key the caller gave alone. */
static int
transport_set_extra_name(PyObject *info, PyObject *sock, const char *key, const char *method, int keep_given)
{
    PyObject *name = PyUnicode_FromString(key);
    if (name == NULL) {
        return -1;
    }
    int present = keep_given ? PyDict_Contains(info, name) : 0;
    if (present != 0) {
        Py_DECREF(name);
        return present < 0 ? -1 : 0;
    }
    PyObject *value = PyObject_CallMethod(sock, method, NULL);
    if (value == NULL && PyErr_ExceptionMatches(PyExc_OSError)) {
        PyErr_Clear();
        value = Py_None;
        Py_INCREF(value);
    }
    int rc = value == NULL ? -1 : PyDict_SetItem(info, name, value);
    Py_XDECREF(value);
    Py_DECREF(name);
    return rc;
}

PyObject *
zl_transport_build_extra(zl_loop *loop, PyObject *sock, PyObject *extra)
{
    PyObject *info = (extra == NULL || extra == Py_None) ? PyDict_New() : PyDict_Copy(extra);
    if (info == NULL) {
        return NULL;
    }
    PyObject *trsock = PyObject_CallOneArg(loop->state->transport_socket_type, sock);
    if (trsock == NULL || PyDict_SetItemString(info, "socket", trsock) < 0 ||
        transport_set_extra_name(info, sock, "sockname", "getsockname", 0) < 0 ||
        transport_set_extra_name(info, sock, "peername", "getpeername", 1) < 0) {
        Py_XDECREF(trsock);
        Py_DECREF(info);
        return NULL;
    }
    Py_DECREF(trsock);
    return info;
}

/* Schedule connection_made, the start of reading and the waiter, in that order, as asyncio does. */
static int
transport_schedule_start(zl_transport *t, PyObject *waiter)
{
    PyObject *connection_made = PyObject_GetAttr(t->protocol, ZL_NAME(t->loop->state, connection_made));
    if (connection_made == NULL) {
        return -1;
    }
    int rc = transport_call_soon(t, connection_made, (PyObject *)t);
    Py_DECREF(connection_made);
    if (rc < 0 || zl_transport_call_soon_method(t, ZL_NAME(t->loop->state, _start_reading), NULL) < 0) {
        return -1;
    }
    if (waiter != NULL && waiter != Py_None) {
        PyObject *args[2] = {waiter, Py_None};
        zl_handle *handle = zl_handle_new(t->loop, t->loop->state->set_result_unless_cancelled, args, 2, NULL, 0, 0.0);
        if (handle == NULL || zl_loop_enqueue(t->loop, (PyObject *)handle) < 0) {
            return -1;
        }
    }
    return 0;
}

int
zl_transport_open(zl_transport *t, PyObject *waiter)
{
    if (zl_io_adopt_fd(t->loop, t->fd, (PyObject *)t) < 0) {
        return -1;
    }
    return transport_schedule_start(t, waiter);
}

PyObject *
zl_transport_discard(zl_transport *t)
{
    /* Not handed out: forget the socket so the finalizer neither warns nor closes the caller's socket. */
    zl_io_disown_fd(t->loop, t->fd, (PyObject *)t);
    transport_drop_socket(t);
    Py_DECREF(t);
    return NULL;
}

PyObject *
zl_transport_type_create(PyObject *module, PyType_Spec *spec, PyObject *bases, const char *layout_error,
                         PyTypeObject **slot)
{
    Py_ssize_t expected = (Py_ssize_t)offsetof(zl_transport, extra) + (Py_ssize_t)sizeof(PyObject *);
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(bases); i++) {
        PyObject *base = PyTuple_GET_ITEM(bases, i);
        if (!PyType_Check(base) || ((PyTypeObject *)base)->tp_basicsize != expected) {
            PyErr_SetString(PyExc_ImportError, layout_error);
            return NULL;
        }
    }
    PyObject *type = PyType_FromModuleAndSpec(module, spec, bases);
    if (type == NULL) {
        return NULL;
    }
    Py_XSETREF(*slot, (PyTypeObject *)type);
    Py_INCREF(type);
    return type;
}

/* ------------------------------------------------------------------ Python methods */

/* None, or NULL when rc says the call failed. */
static PyObject *
transport_none_unless_failed(int rc)
{
    if (rc < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

PyObject *
zl_transport_py_close(zl_transport *self, PyObject *Py_UNUSED(ignored))
{
    return transport_none_unless_failed(zl_transport_close(self));
}

PyObject *
zl_transport_py_abort(zl_transport *self, PyObject *Py_UNUSED(ignored))
{
    return transport_none_unless_failed(transport_force_close(self, Py_None));
}

PyObject *
zl_transport_py_force_close(zl_transport *self, PyObject *exc)
{
    return transport_none_unless_failed(transport_force_close(self, exc));
}

PyObject *
zl_transport_py_is_closing(zl_transport *self, PyObject *Py_UNUSED(ignored))
{
    return PyBool_FromLong(self->closing);
}

PyObject *
zl_transport_py_is_reading(zl_transport *self, PyObject *Py_UNUSED(ignored))
{
    return PyBool_FromLong(zl_transport_is_reading(self));
}

PyObject *
zl_transport_py_pause_reading(zl_transport *self, PyObject *Py_UNUSED(ignored))
{
    if (zl_transport_is_reading(self)) {
        self->reading_paused = 1;
        zl_transport_stop_reading(self);
    }
    Py_RETURN_NONE;
}

PyObject *
zl_transport_py_resume_reading(zl_transport *self, PyObject *Py_UNUSED(ignored))
{
    if (self->closing || !self->reading_paused) {
        Py_RETURN_NONE;
    }
    self->reading_paused = 0;
    return transport_none_unless_failed(zl_transport_start_reading(self));
}

PyObject *
zl_transport_py_start_reading(zl_transport *self, PyObject *Py_UNUSED(ignored))
{
    int rc = zl_transport_is_reading(self) ? zl_transport_start_reading(self) : 0;
    return transport_none_unless_failed(rc);
}

PyObject *
zl_transport_py_get_write_buffer_size(zl_transport *self, PyObject *Py_UNUSED(ignored))
{
    return PyLong_FromSize_t(transport_queued(self, self->kind->queue_bytes_offset));
}

PyObject *
zl_transport_py_get_write_buffer_limits(zl_transport *self, PyObject *Py_UNUSED(ignored))
{
    return Py_BuildValue("(nn)", self->low_water, self->high_water);
}

PyObject *
zl_transport_py_set_write_buffer_limits(zl_transport *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"high", "low", NULL};
    PyObject *high = Py_None, *low = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|OO:set_write_buffer_limits", kwlist, &high, &low) ||
        transport_set_limits(self, high, low) < 0 ||
        zl_transport_maybe_pause_protocol(self, transport_queued(self, self->kind->queue_bytes_offset)) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

PyObject *
zl_transport_py_set_protocol(zl_transport *self, PyObject *protocol)
{
    return transport_none_unless_failed(self->kind->set_protocol(self, protocol));
}

PyObject *
zl_transport_py_get_protocol(zl_transport *self, PyObject *Py_UNUSED(ignored))
{
    return zl_ref_or_none(self->protocol);
}

/* get_extra_info(name, default=None), either argument by keyword as well. */
PyObject *
zl_transport_py_get_extra_info(zl_transport *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *given[2] = {nargs > 0 ? args[0] : NULL, nargs > 1 ? args[1] : NULL};
    Py_ssize_t nkw = kwnames == NULL ? 0 : PyTuple_GET_SIZE(kwnames);
    for (Py_ssize_t i = 0; i < nkw && nargs <= 2; i++) {
        PyObject *key = PyTuple_GET_ITEM(kwnames, i);
        int slot = PyUnicode_CompareWithASCIIString(key, "name") == 0      ? 0
                   : PyUnicode_CompareWithASCIIString(key, "default") == 0 ? 1
                                                                            : -1;
        if (slot < 0 || given[slot] != NULL) {
            PyErr_Format(PyExc_TypeError, "get_extra_info() got %s keyword argument '%U'",
                         slot < 0 ? "an unexpected" : "multiple values for", key);
            return NULL;
        }
        given[slot] = args[nargs + i];
    }
    if (nargs > 2 || given[0] == NULL) {
        PyErr_SetString(PyExc_TypeError, "get_extra_info(name, default=None)");
        return NULL;
    }
    if (self->extra == NULL && self->kind->make_extra != NULL &&
        (self->extra = self->kind->make_extra(self)) == NULL) {
        return NULL;
    }
    PyObject *value = self->extra ? PyDict_GetItemWithError(self->extra, given[0]) : NULL;
    if (value == NULL && PyErr_Occurred()) {
        return NULL;
    }
    return zl_ref_or_none(value != NULL ? value : given[1]);
}

/* ------------------------------------------------------------------ getters (asyncio's private attributes) */

PyObject *
zl_transport_get_loop(zl_transport *self, void *Py_UNUSED(closure))
{
    return zl_ref_or_none(zl_transport_is_open(self) ? (PyObject *)self->loop : NULL);
}

PyObject *
zl_transport_get_sock(zl_transport *self, void *Py_UNUSED(closure))
{
    PyObject *sock = zl_transport_socket(self);
    return sock == NULL && PyErr_Occurred() ? NULL : zl_ref_or_none(sock);
}

PyObject *
zl_transport_get_sock_fd(zl_transport *self, void *Py_UNUSED(closure))
{
    return PyLong_FromLong(self->fd);
}

PyObject *
zl_transport_get_protocol(zl_transport *self, void *Py_UNUSED(closure))
{
    return zl_ref_or_none(self->protocol);
}

PyObject *
zl_transport_get_closing(zl_transport *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(self->closing);
}

PyObject *
zl_transport_get_conn_lost(zl_transport *self, void *Py_UNUSED(closure))
{
    return PyLong_FromLong(self->conn_lost);
}

PyObject *
zl_transport_get_paused(zl_transport *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(self->reading_paused);
}

PyObject *
zl_transport_get_protocol_paused(zl_transport *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(self->protocol_paused);
}
