/* core/stream_transport.c — the stream transport (TCP and Unix sockets) in C: the I/O dispatch reads straight
 * into the protocol, write() tries send() first and queues only the rest, flow control, half-close and close. */
#include "zloop.h"
#include "write_queue.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stddef.h>
#include <structmember.h>
#include <sys/socket.h>
#include <unistd.h>

#define ZL_READ_BUFFER_SIZE (256 * 1024)          /* asyncio's max_size for one read */
#define ZL_LOG_THRESHOLD_FOR_CONNLOST_WRITES 5    /* asyncio.constants */
#define ZL_DEFAULT_HIGH_WATER (64 * 1024)

typedef struct zl_stream {
    PyObject_HEAD
    PyObject *extra;                 /* asyncio.BaseTransport's _extra slot: must come right after the header */
    PyObject *weakreflist;
    zl_loop *loop;
    PyObject *sock;                  /* the socket object; NULL once connection_lost ran */
    PyObject *protocol;
    PyObject *data_received;         /* protocol.data_received, NULL for a BufferedProtocol */
    PyObject *get_buffer;            /* BufferedProtocol.get_buffer */
    PyObject *buffer_updated;        /* BufferedProtocol.buffer_updated */
    PyObject *server;
    PyObject *empty_waiter;          /* future resolved when the write queue drains (sendfile) */
    zl_write_queue out;
    Py_ssize_t high_water;
    Py_ssize_t low_water;
    int fd;
    int conn_lost;
    unsigned char closing;
    unsigned char eof_requested;     /* write_eof() called */
    unsigned char reading_paused;
    unsigned char protocol_paused;   /* pause_writing() was called */
    unsigned char protocol_connected;
    unsigned char reading;           /* registered with the loop for reading */
    unsigned char writing;
} zl_stream;

PyTypeObject *zl_stream_type;
static char *read_buffer;

/* ------------------------------------------------------------------ small helpers */

static int
stream_call_soon(zl_stream *self, PyObject *callback, PyObject *arg)
{
    PyObject *args[1] = {arg};
    zl_handle *handle = zl_handle_new(self->loop, callback, args, arg != NULL, NULL, 0, 0.0);
    if (handle == NULL) {
        return -1;
    }
    return zl_loop_enqueue(self->loop, (PyObject *)handle);
}

static int
stream_call_soon_method(zl_stream *self, const char *name, PyObject *arg)
{
    PyObject *method = PyObject_GetAttrString((PyObject *)self, name);
    if (method == NULL) {
        return -1;
    }
    int rc = stream_call_soon(self, method, arg);
    Py_DECREF(method);
    return rc;
}

static int
exception_stops_loop(void)
{
    return PyErr_ExceptionMatches(PyExc_SystemExit) || PyErr_ExceptionMatches(PyExc_KeyboardInterrupt);
}

static int stream_start_reading(zl_stream *self);
static void stream_stop_reading(zl_stream *self);
static void stream_stop_writing(zl_stream *self);
static int stream_force_close(zl_stream *self, PyObject *exc);
static int stream_close(zl_stream *self);

/* ------------------------------------------------------------------ errors */

/* asyncio's _fatal_error: report (OSErrors only in debug mode), then close at once. Consumes exc.
 * -1 only when something must stop the loop. */
static int
stream_fatal_error(zl_stream *self, PyObject *exc, const char *message)
{
    PyObject *res = PyObject_CallFunction(zl_global.transport_fatal_error, "OOs", (PyObject *)self, exc, message);
    if (res == NULL) {
        if (exception_stops_loop()) {
            Py_DECREF(exc);
            return -1;
        }
        PyErr_WriteUnraisable((PyObject *)self);
    }
    Py_XDECREF(res);
    int rc = stream_force_close(self, exc);
    Py_DECREF(exc);
    return rc;
}

static int
stream_fatal_errno(zl_stream *self, int error, const char *message)
{
    errno = error;
    PyErr_SetFromErrno(PyExc_OSError);
    return stream_fatal_error(self, zl_err_fetch(), message);
}

/* A protocol callback raised: SystemExit/KeyboardInterrupt stop the loop, anything else is fatal to the
 * connection only. */
static int
stream_protocol_failed(zl_stream *self, const char *message)
{
    if (exception_stops_loop()) {
        return -1;
    }
    return stream_fatal_error(self, zl_err_fetch(), message);
}

/* ------------------------------------------------------------------ reading */

static int
stream_on_eof(zl_stream *self)
{
    PyObject *res = PyObject_CallMethod(self->protocol, "eof_received", NULL);
    if (res == NULL) {
        return stream_protocol_failed(self, "Fatal error: protocol.eof_received() call failed.");
    }
    int keep_open = PyObject_IsTrue(res);
    Py_DECREF(res);
    if (keep_open < 0) {
        return stream_protocol_failed(self, "Fatal error: protocol.eof_received() call failed.");
    }
    if (keep_open) {
        stream_stop_reading(self);
        return 0;
    }
    return stream_close(self);
}

static int
stream_read_into_protocol_buffer(zl_stream *self)
{
    static const char *failed = "Fatal error: protocol.get_buffer() call failed.";
    PyObject *size_hint = PyLong_FromLong(-1);
    PyObject *buffer = size_hint ? PyObject_CallOneArg(self->get_buffer, size_hint) : NULL;
    Py_XDECREF(size_hint);
    if (buffer == NULL) {
        return stream_protocol_failed(self, failed);
    }
    Py_buffer view;
    if (PyObject_GetBuffer(buffer, &view, PyBUF_WRITABLE) < 0) {
        Py_DECREF(buffer);
        return stream_protocol_failed(self, failed);
    }
    if (view.len == 0) {
        PyBuffer_Release(&view);
        Py_DECREF(buffer);
        PyErr_SetString(PyExc_RuntimeError, "get_buffer() returned an empty buffer");
        return stream_protocol_failed(self, failed);
    }
    ssize_t n;
    do {
        n = recv(self->fd, view.buf, (size_t)view.len, 0);
    } while (n < 0 && errno == EINTR);
    int error = errno;
    PyBuffer_Release(&view);
    Py_DECREF(buffer);
    if (n < 0) {
        return (error == EAGAIN || error == EWOULDBLOCK) ? 0
                                                         : stream_fatal_errno(self, error, "Fatal read error on socket transport");
    }
    if (n == 0) {
        return stream_on_eof(self);
    }
    PyObject *count = PyLong_FromSsize_t(n);
    PyObject *res = count ? PyObject_CallOneArg(self->buffer_updated, count) : NULL;
    Py_XDECREF(count);
    if (res == NULL) {
        return stream_protocol_failed(self, "Fatal error: protocol.buffer_updated() call failed.");
    }
    Py_DECREF(res);
    return 0;
}

static int
stream_on_readable(PyObject *owner, int fd)
{
    zl_stream *self = (zl_stream *)owner;
    if (self->conn_lost || !self->reading) {
        return 0;
    }
    if (self->data_received == NULL) {
        return stream_read_into_protocol_buffer(self);
    }
    if (read_buffer == NULL && (read_buffer = PyMem_RawMalloc(ZL_READ_BUFFER_SIZE)) == NULL) {
        PyErr_NoMemory();
        return stream_fatal_error(self, zl_err_fetch(), "Fatal read error on socket transport");
    }
    ssize_t n;
    do {
        n = recv(fd, read_buffer, ZL_READ_BUFFER_SIZE, 0);
    } while (n < 0 && errno == EINTR);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            return 0;
        }
        return stream_fatal_errno(self, errno, "Fatal read error on socket transport");
    }
    if (n == 0) {
        return stream_on_eof(self);
    }
    PyObject *data = PyBytes_FromStringAndSize(read_buffer, n);
    if (data == NULL) {
        return stream_fatal_error(self, zl_err_fetch(), "Fatal read error on socket transport");
    }
    PyObject *res = PyObject_CallOneArg(self->data_received, data);
    Py_DECREF(data);
    if (res == NULL) {
        return stream_protocol_failed(self, "Fatal error: protocol.data_received() call failed.");
    }
    Py_DECREF(res);
    return 0;
}

static int
stream_is_reading(zl_stream *self)
{
    return !self->closing && !self->reading_paused;
}

static int
stream_start_reading(zl_stream *self)
{
    if (self->reading || self->conn_lost) {
        return 0;
    }
    if (zl_io_set_side(self->loop, self->fd, ZL_EV_READ, NULL, stream_on_readable, (PyObject *)self) < 0) {
        return -1;
    }
    self->reading = 1;
    return 0;
}

static void
stream_stop_reading(zl_stream *self)
{
    if (!self->reading) {
        return;
    }
    self->reading = 0;
    int was_set;
    (void)zl_io_clear_side(self->loop, self->fd, ZL_EV_READ, &was_set);
}

/* ------------------------------------------------------------------ flow control */

static void
stream_report_protocol_error(zl_stream *self, const char *message)
{
    PyObject *exc = zl_err_fetch();
    PyObject *res = PyObject_CallFunction(zl_global.transport_protocol_error, "OOs", (PyObject *)self, exc, message);
    Py_XDECREF(exc);
    if (res == NULL) {
        PyErr_WriteUnraisable((PyObject *)self);
    }
    Py_XDECREF(res);
}

static int
stream_maybe_pause_protocol(zl_stream *self)
{
    if ((Py_ssize_t)self->out.bytes <= self->high_water || self->protocol_paused) {
        return 0;
    }
    self->protocol_paused = 1;
    PyObject *res = PyObject_CallMethod(self->protocol, "pause_writing", NULL);
    if (res == NULL) {
        if (exception_stops_loop()) {
            return -1;
        }
        stream_report_protocol_error(self, "protocol.pause_writing() failed");
    }
    Py_XDECREF(res);
    return 0;
}

static int
stream_maybe_resume_protocol(zl_stream *self)
{
    if (!self->protocol_paused || (Py_ssize_t)self->out.bytes > self->low_water) {
        return 0;
    }
    self->protocol_paused = 0;
    PyObject *res = PyObject_CallMethod(self->protocol, "resume_writing", NULL);
    if (res == NULL) {
        if (exception_stops_loop()) {
            return -1;
        }
        stream_report_protocol_error(self, "protocol.resume_writing() failed");
    }
    Py_XDECREF(res);
    return 0;
}

static int
stream_set_limits(zl_stream *self, PyObject *high_obj, PyObject *low_obj)
{
    Py_ssize_t high = -1, low = -1;
    if (high_obj != Py_None && (high = PyLong_AsSsize_t(high_obj)) == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (low_obj != Py_None && (low = PyLong_AsSsize_t(low_obj)) == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (high_obj == Py_None) {
        high = low_obj == Py_None ? ZL_DEFAULT_HIGH_WATER : 4 * low;
    }
    if (low_obj == Py_None) {
        low = high / 4;
    }
    if (!(high >= low && low >= 0)) {
        PyErr_Format(PyExc_ValueError, "high (%zd) must be >= low (%zd) must be >= 0", high, low);
        return -1;
    }
    self->high_water = high;
    self->low_water = low;
    return 0;
}

/* ------------------------------------------------------------------ writing */

static int stream_call_connection_lost_soon(zl_stream *self, PyObject *exc);

static int
stream_resolve_empty_waiter(zl_stream *self, PyObject *exc)
{
    if (self->empty_waiter == NULL) {
        return 0;
    }
    PyObject *res = exc == NULL ? PyObject_CallMethod(self->empty_waiter, "set_result", "O", Py_None)
                                : PyObject_CallMethod(self->empty_waiter, "set_exception", "O", exc);
    Py_XDECREF(res);
    return res == NULL ? -1 : 0;
}

static int
stream_on_writable(PyObject *owner, int fd)
{
    zl_stream *self = (zl_stream *)owner;
    if (self->conn_lost) {
        return 0;
    }
    ssize_t sent = zl_write_queue_flush(&self->out, fd);
    if (sent < 0) {
        stream_stop_writing(self);
        zl_write_queue_clear(&self->out);
        errno = (int)-sent;
        PyErr_SetFromErrno(PyExc_OSError);
        PyObject *exc = zl_err_fetch();
        Py_INCREF(exc);
        int rc = stream_fatal_error(self, exc, "Fatal write error on socket transport");
        if (stream_resolve_empty_waiter(self, exc) < 0) {
            PyErr_WriteUnraisable((PyObject *)self);
        }
        Py_DECREF(exc);
        return rc;
    }
    if (stream_maybe_resume_protocol(self) < 0) {
        return -1;
    }
    if (self->out.count > 0) {
        return 0;
    }
    stream_stop_writing(self);
    if (stream_resolve_empty_waiter(self, NULL) < 0) {
        PyErr_WriteUnraisable((PyObject *)self);
    }
    if (self->closing) {
        return stream_call_connection_lost_soon(self, NULL);
    }
    if (self->eof_requested) {
        shutdown(fd, SHUT_WR);
    }
    return 0;
}

static int
stream_start_writing(zl_stream *self)
{
    if (self->writing) {
        return 0;
    }
    if (zl_io_set_side(self->loop, self->fd, ZL_EV_WRITE, NULL, stream_on_writable, (PyObject *)self) < 0) {
        return -1;
    }
    self->writing = 1;
    return 0;
}

static void
stream_stop_writing(zl_stream *self)
{
    if (!self->writing) {
        return;
    }
    self->writing = 0;
    int was_set;
    (void)zl_io_clear_side(self->loop, self->fd, ZL_EV_WRITE, &was_set);
}

/* Queue view[offset:], keeping bytes alive by reference and copying anything mutable. */
static int
stream_queue_data(zl_stream *self, PyObject *data, Py_buffer *view, Py_ssize_t offset)
{
    if (PyBytes_CheckExact(data)) {
        return zl_write_queue_push(&self->out, data, (const char *)view->buf + offset, view->len - offset);
    }
    PyObject *copy = PyBytes_FromStringAndSize((const char *)view->buf + offset, view->len - offset);
    if (copy == NULL) {
        return -1;
    }
    int rc = zl_write_queue_push(&self->out, copy, PyBytes_AS_STRING(copy), PyBytes_GET_SIZE(copy));
    Py_DECREF(copy);
    return rc;
}

static int
stream_check_writable(zl_stream *self, PyObject *data, const char *method)
{
    if (data != NULL && !PyBytes_Check(data) && !PyByteArray_Check(data) && !PyMemoryView_Check(data)) {
        PyErr_Format(PyExc_TypeError, "data argument must be a bytes-like object, not '%.100s'",
                     Py_TYPE(data)->tp_name);
        return -1;
    }
    if (self->eof_requested) {
        PyErr_Format(PyExc_RuntimeError, "Cannot call %s() after write_eof()", method);
        return -1;
    }
    if (self->empty_waiter != NULL) {
        PyErr_Format(PyExc_RuntimeError, "unable to %s; sendfile is in progress", method);
        return -1;
    }
    return 0;
}

/* After the connection is lost, writes are dropped; asyncio warns once they keep coming. */
static int
stream_drop_write_after_lost(zl_stream *self)
{
    if (self->conn_lost >= ZL_LOG_THRESHOLD_FOR_CONNLOST_WRITES) {
        PyObject *res = PyObject_CallNoArgs(zl_global.warn_send_after_lost);
        if (res == NULL) {
            return -1;
        }
        Py_DECREF(res);
    }
    self->conn_lost++;
    return 0;
}

static PyObject *
stream_write(zl_stream *self, PyObject *data)
{
    if (stream_check_writable(self, data, "write") < 0) {
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    int rc = 0;
    if (view.len == 0) {
        goto done;
    }
    if (self->conn_lost) {
        rc = stream_drop_write_after_lost(self);
        goto done;
    }
    Py_ssize_t sent = 0;
    if (self->out.count == 0) {
        ssize_t n;
        do {
            n = send(self->fd, view.buf, (size_t)view.len, MSG_NOSIGNAL);
        } while (n < 0 && errno == EINTR);
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
            int error = errno;
            PyBuffer_Release(&view);
            if (stream_fatal_errno(self, error, "Fatal write error on socket transport") < 0) {
                return NULL;
            }
            Py_RETURN_NONE;
        }
        sent = n < 0 ? 0 : n;
        if (sent == view.len) {
            goto done;
        }
        if (stream_start_writing(self) < 0) {
            rc = -1;
            goto done;
        }
    }
    rc = stream_queue_data(self, data, &view, sent);
    if (rc == 0) {
        rc = stream_maybe_pause_protocol(self);
    }
done:
    PyBuffer_Release(&view);
    if (rc < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
stream_writelines(zl_stream *self, PyObject *list_of_data)
{
    if (stream_check_writable(self, NULL, "writelines") < 0) {
        return NULL;
    }
    PyObject *items = PySequence_Fast(list_of_data, "writelines() argument must be an iterable of bytes");
    if (items == NULL) {
        return NULL;
    }
    int rc = 0;
    Py_ssize_t count = PySequence_Fast_GET_SIZE(items);
    for (Py_ssize_t i = 0; i < count && rc == 0; i++) {
        PyObject *data = PySequence_Fast_GET_ITEM(items, i);
        Py_buffer view;
        if (stream_check_writable(self, data, "writelines") < 0 || PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0) {
            rc = -1;
            break;
        }
        if (view.len > 0) {
            rc = self->conn_lost ? 0 : stream_queue_data(self, data, &view, 0);
        }
        PyBuffer_Release(&view);
    }
    Py_DECREF(items);
    if (rc < 0) {
        return NULL;
    }
    if (self->conn_lost) {
        if (count > 0 && stream_drop_write_after_lost(self) < 0) {
            return NULL;
        }
        Py_RETURN_NONE;
    }
    /* One sendmsg for all of it now; the rest when the socket is writable again. */
    if (!self->writing && self->out.count > 0) {
        if (stream_on_writable((PyObject *)self, self->fd) < 0) {
            return NULL;
        }
        if (self->out.count > 0 && !self->conn_lost && stream_start_writing(self) < 0) {
            return NULL;
        }
    }
    if (stream_maybe_pause_protocol(self) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------------ closing */

static int
stream_call_connection_lost_soon(zl_stream *self, PyObject *exc)
{
    return stream_call_soon_method(self, "_call_connection_lost", exc == NULL ? Py_None : exc);
}

static int
stream_close(zl_stream *self)
{
    if (self->closing) {
        return 0;
    }
    self->closing = 1;
    stream_stop_reading(self);
    zl_io_set_transport_owned(self->loop, self->fd, 0);   /* asyncio frees the fd for others once closing */
    if (self->out.count == 0) {
        self->conn_lost++;
        stream_stop_writing(self);
        return stream_call_connection_lost_soon(self, NULL);
    }
    return 0;
}

static int
stream_force_close(zl_stream *self, PyObject *exc)
{
    if (self->conn_lost) {
        return 0;
    }
    if (self->out.count > 0) {
        zl_write_queue_clear(&self->out);
    }
    stream_stop_writing(self);
    if (!self->closing) {
        self->closing = 1;
        stream_stop_reading(self);
        zl_io_set_transport_owned(self->loop, self->fd, 0);
    }
    self->conn_lost++;
    return stream_call_connection_lost_soon(self, exc);
}

static void
stream_release_fd(zl_stream *self)
{
    stream_stop_reading(self);
    stream_stop_writing(self);
    zl_io_set_transport_owned(self->loop, self->fd, 0);
}

static PyObject *
stream_py_call_connection_lost(zl_stream *self, PyObject *exc)
{
    PyObject *res = Py_None;
    Py_INCREF(res);
    if (self->protocol_connected && self->protocol != NULL) {
        Py_DECREF(res);
        res = PyObject_CallMethod(self->protocol, "connection_lost", "O", exc);
    }
    PyObject *raised = res == NULL ? zl_err_fetch() : NULL;
    /* asyncio's finally: the socket closes and the server learns of it even when connection_lost raised. */
    stream_release_fd(self);
    if (self->sock != NULL) {
        PyObject *closed = PyObject_CallMethod(self->sock, "close", NULL);
        if (closed == NULL) {
            PyErr_WriteUnraisable((PyObject *)self);
        }
        Py_XDECREF(closed);
        Py_CLEAR(self->sock);
    }
    Py_CLEAR(self->protocol);
    Py_CLEAR(self->data_received);
    Py_CLEAR(self->get_buffer);
    Py_CLEAR(self->buffer_updated);
    if (self->server != NULL) {
        PyObject *server = self->server;
        self->server = NULL;
        PyObject *detached = PyObject_CallMethod(server, "_detach", "O", (PyObject *)self);
        if (detached == NULL) {
            PyErr_WriteUnraisable((PyObject *)self);
        }
        Py_XDECREF(detached);
        Py_DECREF(server);
    }
    if (raised != NULL) {
        zl_err_restore(raised);
        return NULL;
    }
    return res;
}

/* ------------------------------------------------------------------ Python API */

static PyObject *
stream_py_close(zl_stream *self, PyObject *Py_UNUSED(ignored))
{
    if (stream_close(self) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
stream_py_abort(zl_stream *self, PyObject *Py_UNUSED(ignored))
{
    if (stream_force_close(self, Py_None) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
stream_py_force_close(zl_stream *self, PyObject *exc)
{
    if (stream_force_close(self, exc) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
stream_py_is_closing(zl_stream *self, PyObject *Py_UNUSED(ignored))
{
    return PyBool_FromLong(self->closing);
}

static PyObject *
stream_py_is_reading(zl_stream *self, PyObject *Py_UNUSED(ignored))
{
    return PyBool_FromLong(stream_is_reading(self));
}

static PyObject *
stream_py_pause_reading(zl_stream *self, PyObject *Py_UNUSED(ignored))
{
    if (stream_is_reading(self)) {
        self->reading_paused = 1;
        stream_stop_reading(self);
    }
    Py_RETURN_NONE;
}

static PyObject *
stream_py_resume_reading(zl_stream *self, PyObject *Py_UNUSED(ignored))
{
    if (self->closing || !self->reading_paused) {
        Py_RETURN_NONE;
    }
    self->reading_paused = 0;
    if (stream_start_reading(self) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
stream_py_start_reading(zl_stream *self, PyObject *Py_UNUSED(ignored))
{
    if (stream_is_reading(self) && stream_start_reading(self) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
stream_py_write_eof(zl_stream *self, PyObject *Py_UNUSED(ignored))
{
    if (self->closing || self->eof_requested) {
        Py_RETURN_NONE;
    }
    self->eof_requested = 1;
    if (self->out.count == 0 && shutdown(self->fd, SHUT_WR) < 0) {
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    Py_RETURN_NONE;
}

static PyObject *
stream_py_can_write_eof(zl_stream *Py_UNUSED(self), PyObject *Py_UNUSED(ignored))
{
    Py_RETURN_TRUE;
}

static PyObject *
stream_py_get_write_buffer_size(zl_stream *self, PyObject *Py_UNUSED(ignored))
{
    return PyLong_FromSize_t(self->out.bytes);
}

static PyObject *
stream_py_get_write_buffer_limits(zl_stream *self, PyObject *Py_UNUSED(ignored))
{
    return Py_BuildValue("(nn)", self->low_water, self->high_water);
}

static PyObject *
stream_py_set_write_buffer_limits(zl_stream *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"high", "low", NULL};
    PyObject *high = Py_None, *low = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|OO:set_write_buffer_limits", kwlist, &high, &low) ||
        stream_set_limits(self, high, low) < 0 || stream_maybe_pause_protocol(self) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static int
stream_set_protocol(zl_stream *self, PyObject *protocol)
{
    int buffered = PyObject_IsInstance(protocol, zl_global.buffered_protocol_type);
    if (buffered < 0) {
        return -1;
    }
    PyObject *data_received = NULL, *get_buffer = NULL, *buffer_updated = NULL;
    if (buffered) {
        get_buffer = PyObject_GetAttrString(protocol, "get_buffer");
        buffer_updated = get_buffer ? PyObject_GetAttrString(protocol, "buffer_updated") : NULL;
        if (buffer_updated == NULL) {
            Py_XDECREF(get_buffer);
            return -1;
        }
    } else if ((data_received = PyObject_GetAttrString(protocol, "data_received")) == NULL) {
        return -1;
    }
    Py_INCREF(protocol);
    Py_XSETREF(self->protocol, protocol);
    Py_XSETREF(self->data_received, data_received);
    Py_XSETREF(self->get_buffer, get_buffer);
    Py_XSETREF(self->buffer_updated, buffer_updated);
    self->protocol_connected = 1;
    return 0;
}

static PyObject *
stream_py_set_protocol(zl_stream *self, PyObject *protocol)
{
    if (stream_set_protocol(self, protocol) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
stream_py_get_protocol(zl_stream *self, PyObject *Py_UNUSED(ignored))
{
    return zl_ref_or_none(self->protocol);
}

static PyObject *
stream_py_get_extra_info(zl_stream *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 1 || nargs > 2) {
        PyErr_SetString(PyExc_TypeError, "get_extra_info(name, default=None)");
        return NULL;
    }
    PyObject *fallback = nargs == 2 ? args[1] : Py_None;
    PyObject *value = self->extra ? PyDict_GetItemWithError(self->extra, args[0]) : NULL;
    if (value == NULL && PyErr_Occurred()) {
        return NULL;
    }
    return zl_ref_or_none(value != NULL ? value : fallback);
}

static PyObject *
stream_py_make_empty_waiter(zl_stream *self, PyObject *Py_UNUSED(ignored))
{
    if (self->empty_waiter != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Empty waiter is already set");
        return NULL;
    }
    self->empty_waiter = PyObject_CallMethod((PyObject *)self->loop, "create_future", NULL);
    if (self->empty_waiter == NULL) {
        return NULL;
    }
    if (self->out.count == 0) {
        PyObject *res = PyObject_CallMethod(self->empty_waiter, "set_result", "O", Py_None);
        if (res == NULL) {
            return NULL;
        }
        Py_DECREF(res);
    }
    return zl_ref_or_none(self->empty_waiter);
}

static PyObject *
stream_py_reset_empty_waiter(zl_stream *self, PyObject *Py_UNUSED(ignored))
{
    Py_CLEAR(self->empty_waiter);
    Py_RETURN_NONE;
}

static PyObject *
stream_repr(zl_stream *self)
{
    const char *state = self->sock == NULL ? " closed" : self->closing ? " closing" : "";
    const char *read = !self->reading ? "idle" : "polling";
    return PyUnicode_FromFormat("<%s fd=%d%s read=%s write=<%s, bufsize=%zu>>", Py_TYPE(self)->tp_name, self->fd,
                                state, read, self->writing ? "polling" : "idle", self->out.bytes);
}

static PyObject *
stream_get_loop(zl_stream *self, void *Py_UNUSED(closure))
{
    return zl_ref_or_none(self->sock != NULL ? (PyObject *)self->loop : NULL);
}

static PyObject *
stream_get_sock(zl_stream *self, void *Py_UNUSED(closure))
{
    return zl_ref_or_none(self->sock);
}

static PyObject *
stream_get_protocol_attr(zl_stream *self, void *Py_UNUSED(closure))
{
    return zl_ref_or_none(self->protocol);
}

static PyObject *
stream_get_server(zl_stream *self, void *Py_UNUSED(closure))
{
    return zl_ref_or_none(self->server);
}

static PyObject *
stream_get_sock_fd(zl_stream *self, void *Py_UNUSED(closure))
{
    return PyLong_FromLong(self->fd);
}

static PyObject *
stream_get_closing(zl_stream *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(self->closing);
}

static PyObject *
stream_get_conn_lost(zl_stream *self, void *Py_UNUSED(closure))
{
    return PyLong_FromLong(self->conn_lost);
}

static PyObject *
stream_get_paused(zl_stream *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(self->reading_paused);
}

static PyObject *
stream_get_protocol_paused(zl_stream *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(self->protocol_paused);
}

static PyObject *
stream_get_eof(zl_stream *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(self->eof_requested);
}

/* ------------------------------------------------------------------ lifetime */

static int
stream_traverse(zl_stream *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->extra);
    Py_VISIT(self->loop);
    Py_VISIT(self->sock);
    Py_VISIT(self->protocol);
    Py_VISIT(self->data_received);
    Py_VISIT(self->get_buffer);
    Py_VISIT(self->buffer_updated);
    Py_VISIT(self->server);
    Py_VISIT(self->empty_waiter);
    return zl_write_queue_traverse(&self->out, visit, arg);
}

static int
stream_clear(zl_stream *self)
{
    Py_CLEAR(self->extra);
    Py_CLEAR(self->sock);
    Py_CLEAR(self->protocol);
    Py_CLEAR(self->data_received);
    Py_CLEAR(self->get_buffer);
    Py_CLEAR(self->buffer_updated);
    Py_CLEAR(self->server);
    Py_CLEAR(self->empty_waiter);
    zl_write_queue_clear(&self->out);
    return 0;
}

static void
stream_finalize(zl_stream *self)
{
    if (self->sock == NULL) {
        return;
    }
    PyObject *exc = zl_err_fetch();
    if (PyErr_ResourceWarning((PyObject *)self, 1, "unclosed transport %R", (PyObject *)self) < 0) {
        PyErr_WriteUnraisable((PyObject *)self);
    }
    if (self->loop != NULL && self->loop->backend != NULL) {
        stream_release_fd(self);
    }
    PyObject *res = PyObject_CallMethod(self->sock, "close", NULL);
    if (res == NULL) {
        PyErr_WriteUnraisable((PyObject *)self);
    }
    Py_XDECREF(res);
    Py_CLEAR(self->sock);
    if (self->server != NULL) {
        /* As asyncio's __del__: a server waiting for its clients must not wait for this one forever. */
        PyObject *server = self->server;
        self->server = NULL;
        res = PyObject_CallMethod(server, "_detach", "O", (PyObject *)self);
        if (res == NULL) {
            PyErr_WriteUnraisable((PyObject *)self);
        }
        Py_XDECREF(res);
        Py_DECREF(server);
    }
    zl_err_restore(exc);
}

static void
stream_dealloc(zl_stream *self)
{
    if (PyObject_CallFinalizerFromDealloc((PyObject *)self) < 0) {
        return;
    }
    PyObject_GC_UnTrack(self);
    if (self->weakreflist != NULL) {
        PyObject_ClearWeakRefs((PyObject *)self);
    }
    stream_clear(self);
    zl_write_queue_free(&self->out);
    Py_CLEAR(self->loop);
    PyTypeObject *type = Py_TYPE(self);
    type->tp_free((PyObject *)self);
    Py_DECREF(type);
}

/* ------------------------------------------------------------------ creation */

static void
stream_set_nodelay(int fd)
{
    int domain = 0, type = 0, protocol = 0;
    socklen_t len = sizeof(int);
    if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) < 0 ||
        getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0 ||
        getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, &protocol, &len) < 0) {
        return;
    }
    if ((domain == AF_INET || domain == AF_INET6) && type == SOCK_STREAM && protocol == IPPROTO_TCP) {
        int one = 1;
        (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    }
}

/* extra = dict(extra or {}) with 'socket', 'sockname' and 'peername' as asyncio's transports give them. */
static PyObject *
stream_build_extra(PyObject *sock, PyObject *extra)
{
    PyObject *info = (extra == NULL || extra == Py_None) ? PyDict_New() : PyDict_Copy(extra);
    if (info == NULL) {
        return NULL;
    }
    PyObject *trsock = PyObject_CallOneArg(zl_global.transport_socket_type, sock);
    if (trsock == NULL || PyDict_SetItemString(info, "socket", trsock) < 0) {
        goto error;
    }
    Py_CLEAR(trsock);
    const char *names[2] = {"sockname", "peername"};
    const char *methods[2] = {"getsockname", "getpeername"};
    for (int i = 0; i < 2; i++) {
        PyObject *key = PyUnicode_FromString(names[i]);
        int present = key ? PyDict_Contains(info, key) : -1;
        if (present < 0) {
            Py_XDECREF(key);
            goto error;
        }
        if (!present || i == 0) {
            PyObject *value = PyObject_CallMethod(sock, methods[i], NULL);
            if (value == NULL) {
                if (!PyErr_ExceptionMatches(PyExc_OSError)) {
                    Py_DECREF(key);
                    goto error;
                }
                PyErr_Clear();
                value = Py_None;
                Py_INCREF(value);
            }
            int rc = PyDict_SetItem(info, key, value);
            Py_DECREF(value);
            if (rc < 0) {
                Py_DECREF(key);
                goto error;
            }
        }
        Py_DECREF(key);
    }
    return info;

error:
    Py_XDECREF(trsock);
    Py_DECREF(info);
    return NULL;
}

static int
stream_register_with_loop(zl_stream *self)
{
    PyObject *transports = PyObject_GetAttrString((PyObject *)self->loop, "_transports");
    if (transports == NULL) {
        PyErr_Clear();
        return 0;
    }
    PyObject *fd = PyLong_FromLong(self->fd);
    int rc = fd ? PyObject_SetItem(transports, fd, (PyObject *)self) : -1;
    Py_XDECREF(fd);
    Py_DECREF(transports);
    return rc;
}

/* Schedule connection_made, the start of reading and the waiter, in that order, as asyncio does. */
static int
stream_schedule_start(zl_stream *self, PyObject *waiter)
{
    PyObject *connection_made = PyObject_GetAttrString(self->protocol, "connection_made");
    if (connection_made == NULL) {
        return -1;
    }
    int rc = stream_call_soon(self, connection_made, (PyObject *)self);
    Py_DECREF(connection_made);
    if (rc < 0 || stream_call_soon_method(self, "_start_reading", NULL) < 0) {
        return -1;
    }
    if (waiter != NULL && waiter != Py_None) {
        PyObject *args[2] = {waiter, Py_None};
        zl_handle *handle = zl_handle_new(self->loop, zl_global.set_result_unless_cancelled, args, 2, NULL, 0, 0.0);
        if (handle == NULL || zl_loop_enqueue(self->loop, (PyObject *)handle) < 0) {
            return -1;
        }
    }
    return 0;
}

PyObject *
zl_loop_make_socket_transport(zl_loop *loop, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"sock", "protocol", "waiter", "extra", "server", NULL};
    PyObject *sock, *protocol, *waiter = Py_None, *extra = Py_None, *server = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OO|O$OO:_make_socket_transport", kwlist, &sock, &protocol,
                                     &waiter, &extra, &server)) {
        return NULL;
    }
    if (zl_global.transport_socket_type == NULL || zl_stream_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "zloop's transport types are not initialised");
        return NULL;
    }
    if (zl_loop_check_closed(loop) < 0) {
        return NULL;
    }
    int fd = zl_fileobj_to_fd(sock);
    if (fd < 0) {
        return NULL;
    }
    zl_stream *self = (zl_stream *)zl_stream_type->tp_alloc(zl_stream_type, 0);
    if (self == NULL) {
        return NULL;
    }
    Py_INCREF(loop);
    self->loop = loop;
    self->fd = fd;
    Py_INCREF(sock);
    self->sock = sock;
    self->high_water = ZL_DEFAULT_HIGH_WATER;
    self->low_water = ZL_DEFAULT_HIGH_WATER / 4;
    self->extra = stream_build_extra(sock, extra);
    if (self->extra == NULL || stream_set_protocol(self, protocol) < 0) {
        goto error;
    }
    stream_set_nodelay(fd);
    if (server != Py_None) {
        Py_INCREF(server);
        self->server = server;
        PyObject *attached = PyObject_CallMethod(server, "_attach", "O", (PyObject *)self);
        if (attached == NULL) {
            goto error;
        }
        Py_DECREF(attached);
    }
    if (zl_io_set_transport_owned(loop, fd, 1) < 0 || stream_register_with_loop(self) < 0 ||
        stream_schedule_start(self, waiter) < 0) {
        goto error;
    }
    return (PyObject *)self;

error:
    /* Not handed out: forget the socket so the finalizer neither warns nor closes the caller's socket. */
    zl_io_set_transport_owned(loop, fd, 0);
    Py_CLEAR(self->sock);
    Py_DECREF(self);
    return NULL;
}

/* ------------------------------------------------------------------ type */

static PyMethodDef stream_methods[] = {
    {"write", (PyCFunction)stream_write, METH_O, "Write bytes; what the socket does not take now is queued."},
    {"writelines", (PyCFunction)stream_writelines, METH_O, "Write an iterable of bytes with one syscall."},
    {"write_eof", (PyCFunction)stream_py_write_eof, METH_NOARGS, "Close the write side after the queue drains."},
    {"can_write_eof", (PyCFunction)stream_py_can_write_eof, METH_NOARGS, "True: sockets can half-close."},
    {"close", (PyCFunction)stream_py_close, METH_NOARGS, "Close after the queued data is sent."},
    {"abort", (PyCFunction)stream_py_abort, METH_NOARGS, "Close now, dropping queued data."},
    {"is_closing", (PyCFunction)stream_py_is_closing, METH_NOARGS, "True once close() or abort() ran."},
    {"is_reading", (PyCFunction)stream_py_is_reading, METH_NOARGS, "True unless reading is paused or closing."},
    {"pause_reading", (PyCFunction)stream_py_pause_reading, METH_NOARGS, "Stop calling the protocol with data."},
    {"resume_reading", (PyCFunction)stream_py_resume_reading, METH_NOARGS, "Resume calling the protocol with data."},
    {"get_write_buffer_size", (PyCFunction)stream_py_get_write_buffer_size, METH_NOARGS, "Bytes queued."},
    {"get_write_buffer_limits", (PyCFunction)stream_py_get_write_buffer_limits, METH_NOARGS, "(low, high)."},
    {"set_write_buffer_limits", (PyCFunction)(void (*)(void))stream_py_set_write_buffer_limits,
     METH_VARARGS | METH_KEYWORDS, "Set the water marks for pause_writing/resume_writing."},
    {"set_protocol", (PyCFunction)stream_py_set_protocol, METH_O, "Switch to another protocol."},
    {"get_protocol", (PyCFunction)stream_py_get_protocol, METH_NOARGS, "The current protocol."},
    {"get_extra_info", (PyCFunction)(void (*)(void))stream_py_get_extra_info, METH_FASTCALL,
     "get_extra_info(name, default=None): socket, sockname, peername, ..."},
    {"_start_reading", (PyCFunction)stream_py_start_reading, METH_NOARGS, NULL},
    {"_call_connection_lost", (PyCFunction)stream_py_call_connection_lost, METH_O, NULL},
    {"_force_close", (PyCFunction)stream_py_force_close, METH_O, NULL},
    {"_make_empty_waiter", (PyCFunction)stream_py_make_empty_waiter, METH_NOARGS, NULL},
    {"_reset_empty_waiter", (PyCFunction)stream_py_reset_empty_waiter, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef stream_getset[] = {
    {"_loop", (getter)stream_get_loop, NULL, NULL, NULL},
    {"_sock", (getter)stream_get_sock, NULL, NULL, NULL},
    {"_sock_fd", (getter)stream_get_sock_fd, NULL, NULL, NULL},
    {"_protocol", (getter)stream_get_protocol_attr, NULL, NULL, NULL},
    {"_server", (getter)stream_get_server, NULL, NULL, NULL},
    {"_closing", (getter)stream_get_closing, NULL, NULL, NULL},
    {"_conn_lost", (getter)stream_get_conn_lost, NULL, NULL, NULL},
    {"_paused", (getter)stream_get_paused, NULL, NULL, NULL},
    {"_protocol_paused", (getter)stream_get_protocol_paused, NULL, NULL, NULL},
    {"_eof", (getter)stream_get_eof, NULL, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef stream_members[] = {
    {"__weaklistoffset__", T_PYSSIZET, offsetof(zl_stream, weakreflist), READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyType_Slot stream_slots[] = {
    {Py_tp_doc, "A TCP or Unix stream transport of a zloop loop (asyncio.Transport)."},
    {Py_tp_dealloc, stream_dealloc},
    {Py_tp_finalize, stream_finalize},
    {Py_tp_traverse, stream_traverse},
    {Py_tp_clear, stream_clear},
    {Py_tp_repr, stream_repr},
    {Py_tp_methods, stream_methods},
    {Py_tp_getset, stream_getset},
    {Py_tp_members, stream_members},
    {0, NULL},
};

static PyType_Spec stream_spec = {
    .name = "zloop.TCPTransport",
    .basicsize = sizeof(zl_stream),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .slots = stream_slots,
};

/* The transport type subclasses asyncio.Transport, whose instances hold one slot (_extra) after the header. */
PyObject *
zl_stream_type_create(PyObject *transport_base)
{
    if (!PyType_Check(transport_base) ||
        ((PyTypeObject *)transport_base)->tp_basicsize != (Py_ssize_t)offsetof(zl_stream, extra) + (Py_ssize_t)sizeof(PyObject *)) {
        PyErr_SetString(PyExc_ImportError, "asyncio.Transport has an unexpected layout");
        return NULL;
    }
    PyObject *bases = PyTuple_Pack(1, transport_base);
    if (bases == NULL) {
        return NULL;
    }
    PyObject *type = PyType_FromSpecWithBases(&stream_spec, bases);
    Py_DECREF(bases);
    if (type == NULL) {
        return NULL;
    }
    Py_XSETREF(zl_stream_type, (PyTypeObject *)type);
    Py_INCREF(type);
    return type;
}
