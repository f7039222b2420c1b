/* core/stream_transport.c — the stream transport (TCP and Unix sockets) in C: the I/O dispatch reads straight
 * into the protocol, write() tries send() first and queues only the rest, flow control, half-close and close. */
#include "read_spare.h"
#include "sock_addr.h"
#include "stream_ring.h"
#include "tls.h"
#include "transport_common.h"
#include "write_queue.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stddef.h>
#include <structmember.h>
#include <sys/socket.h>
#include <unistd.h>

#define ZL_READ_BUFFER_SIZE (256 * 1024)          /* asyncio's max_size for one read */
#define ZL_DIRECT_READ_MIN (64 * 1024)            /* after a read this large, read straight into the bytes */
#define ZL_DIRECT_READ_MAX (120 * 1024)           /* under glibc's default mmap threshold: a heap allocation */

typedef struct zl_stream {
    zl_transport base;               /* loop, socket, protocol, flags, water marks: must come first */
    PyObject *data_received;         /* protocol.data_received, NULL for a BufferedProtocol */
    PyObject *get_buffer;            /* BufferedProtocol.get_buffer */
    PyObject *buffer_updated;        /* BufferedProtocol.buffer_updated */
    unsigned char unbound_calls;     /* STREAM_UNBOUND_* bits: which of the three is the class's function, called
                                        with the protocol first (stream_protocol_method) */
    PyObject *server;
    PyObject *empty_waiter;          /* future resolved when the write queue drains (sendfile) */
    zl_write_queue out;
    zl_sock_addrs *addrs;            /* accepted in C: sockname and peername until get_extra_info() asks */
    unsigned char eof_requested;     /* write_eof() called */
    unsigned char large_reads;       /* the last read was at least ZL_DIRECT_READ_MIN bytes */
    unsigned char tls;               /* the protocol is the C TLS protocol: ciphertext goes to it in C */
    zl_stream_ring ring;             /* the completion path (stream_ring.c), when the loop uses it */
} zl_stream;


enum {
    STREAM_UNBOUND_DATA_RECEIVED = 1,
    STREAM_UNBOUND_GET_BUFFER = 2,
    STREAM_UNBOUND_BUFFER_UPDATED = 4,
};

/* protocol.<name>, kept for the read path. A plain Python function reached through the protocol's class is kept as
 * the function itself and called with the protocol first (stream_call_protocol): the call the bound method would
 * make, without a 64-byte method object held by every connection. Anything else is kept as the attribute gave it.
 * Sets bit in *unbound for the first kind; NULL with an exception set on failure. */
static PyObject *
stream_protocol_method(PyObject *protocol, PyObject *name, unsigned char bit, unsigned char *unbound)
{
    PyObject *attr = PyObject_GetAttr(protocol, name);
    if (attr == NULL || !PyMethod_Check(attr) || PyMethod_GET_SELF(attr) != protocol ||
        !PyFunction_Check(PyMethod_GET_FUNCTION(attr))) {
        return attr;
    }
    PyObject *function = Py_NewRef(PyMethod_GET_FUNCTION(attr));
    Py_DECREF(attr);
    *unbound |= bit;
    return function;
}

/* Call one of the kept protocol methods with one argument. */
static PyObject *
stream_call_protocol(zl_stream *self, PyObject *method, unsigned char bit, PyObject *arg)
{
    PyObject *protocol = Py_NewRef(self->base.protocol);   /* the call may replace it (set_protocol) */
    PyObject *args[3] = {NULL, protocol, arg};
    PyObject *res = (self->unbound_calls & bit)
                        ? PyObject_Vectorcall(method, args + 1, 2 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL)
                        : PyObject_Vectorcall(method, args + 2, 1 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
    Py_DECREF(protocol);
    return res;
}

/* ------------------------------------------------------------------ errors */

static int
stream_fatal_errno(zl_stream *self, int error, const char *message)
{
    errno = error;
    PyErr_SetFromErrno(PyExc_OSError);
    return zl_transport_fatal_error(&self->base, zl_err_fetch(), message);
}

/* A protocol callback raised: SystemExit/KeyboardInterrupt stop the loop, anything else is fatal to the
 * connection only. */
static int
stream_protocol_failed(zl_stream *self, const char *message)
{
    if (zl_err_stops_loop()) {
        return -1;
    }
    return zl_transport_fatal_error(&self->base, zl_err_fetch(), message);
}

/* ------------------------------------------------------------------ reading */

static int
stream_on_eof(zl_stream *self)
{
    PyObject *res = PyObject_CallMethodNoArgs(self->base.protocol, ZL_NAME(self->base.loop->state, eof_received));
    if (res == NULL) {
        return stream_protocol_failed(self, "Fatal error: protocol.eof_received() call failed.");
    }
    int keep_open = PyObject_IsTrue(res);
    Py_DECREF(res);
    if (keep_open < 0) {
        return stream_protocol_failed(self, "Fatal error: protocol.eof_received() call failed.");
    }
    if (keep_open) {
        zl_transport_stop_reading(&self->base);
        return 0;
    }
    return zl_transport_close(&self->base);
}

static const char stream_get_buffer_failed[] = "Fatal error: protocol.get_buffer() call failed.";
static const char stream_buffer_updated_failed[] = "Fatal error: protocol.buffer_updated() call failed.";

/* protocol.get_buffer(-1), viewed writable and not empty; -1 with an exception set (nothing held). */
static int
stream_protocol_buffer(zl_stream *self, PyObject **buffer, Py_buffer *view)
{
    PyObject *size_hint = PyLong_FromLong(-1);
    *buffer = size_hint ? stream_call_protocol(self, self->get_buffer, STREAM_UNBOUND_GET_BUFFER, size_hint) : NULL;
    Py_XDECREF(size_hint);
    if (*buffer == NULL) {
        return -1;
    }
    if (PyObject_GetBuffer(*buffer, view, PyBUF_WRITABLE) < 0) {
        Py_CLEAR(*buffer);
        return -1;
    }
    if (view->len == 0) {
        PyBuffer_Release(view);
        Py_CLEAR(*buffer);
        PyErr_SetString(PyExc_RuntimeError, "get_buffer() returned an empty buffer");
        return -1;
    }
    return 0;
}

/* protocol.buffer_updated(n); -1 with an exception set. */
static int
stream_protocol_buffer_updated(zl_stream *self, Py_ssize_t n)
{
    PyObject *count = PyLong_FromSsize_t(n);
    PyObject *res = count ? stream_call_protocol(self, self->buffer_updated, STREAM_UNBOUND_BUFFER_UPDATED, count)
                          : NULL;
    Py_XDECREF(count);
    Py_XDECREF(res);
    return res == NULL ? -1 : 0;
}

static int
stream_read_into_protocol_buffer(zl_stream *self)
{
    PyObject *buffer;
    Py_buffer view;
    if (stream_protocol_buffer(self, &buffer, &view) < 0) {
        return stream_protocol_failed(self, stream_get_buffer_failed);
    }
    ssize_t n;
    do {
        n = recv(self->base.fd, view.buf, (size_t)view.len, 0);
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
    if (stream_protocol_buffer_updated(self, n) < 0) {
        return stream_protocol_failed(self, stream_buffer_updated_failed);
    }
    return 0;
}

/* One get_buffer() / copy / buffer_updated() round for bytes a recv completed with: how many were taken, -1 (the
 * loop must stop), or -2 (the protocol failed and the connection is closing). */
static Py_ssize_t
stream_copy_into_protocol_buffer(zl_stream *self, const char *data, Py_ssize_t n)
{
    PyObject *buffer;
    Py_buffer view;
    if (stream_protocol_buffer(self, &buffer, &view) < 0) {
        return stream_protocol_failed(self, stream_get_buffer_failed) < 0 ? -1 : -2;
    }
    Py_ssize_t taken = view.len < n ? view.len : n;
    memcpy(view.buf, data, (size_t)taken);
    PyBuffer_Release(&view);
    Py_DECREF(buffer);
    if (stream_protocol_buffer_updated(self, taken) < 0) {
        return stream_protocol_failed(self, stream_buffer_updated_failed) < 0 ? -1 : -2;
    }
    return taken;
}

/* A read straight into a bytes of ZL_DIRECT_READ_MAX bytes, shrunk in place to what came: no copy out of the
 * shared buffer, and no ioctl(FIONREAD) to size it first (that was a system call per large read). The bytes is the
 * one the last large read handed over when nobody kept it (read_spare.c), so reads do not churn the heap's top.
 * 1: *data holds *n > 0 bytes, to hand back with zl_read_spare_give_back; 0: no memory, read the usual way; -1:
 * recv returned *n <= 0, errno as it left it. */
static int
stream_recv_direct(zl_state *state, int fd, PyObject **data, ssize_t *n)
{
    *data = zl_read_spare_take(state, ZL_DIRECT_READ_MAX);
    if (*data == NULL) {
        PyErr_Clear();   /* the shared buffer can still do */
        return 0;
    }
    do {
        *n = recv(fd, PyBytes_AS_STRING(*data), ZL_DIRECT_READ_MAX, 0);
    } while (*n < 0 && errno == EINTR);
    if (*n <= 0) {
        int error = errno;
        zl_read_spare_give_back(state, *data, ZL_DIRECT_READ_MAX);
        *data = NULL;
        errno = error;
        return -1;
    }
    if (*n < ZL_DIRECT_READ_MAX) {
        (void)_PyBytes_Resize(data, *n);   /* shrinking a heap block in place: cannot fail */
    }
    return 1;
}

/* One recv as a new bytes (b"" at end of stream). NULL: *n < 0 with errno set, or *n == 0 with a Python error
 * set. Small reads go through the shared buffer and are copied at their size; after a large one, the next reads
 * straight into its own bytes, for as long as the reads stay large (*direct set: give it back after use). */
static PyObject *
stream_recv_bytes(zl_stream *self, int fd, ssize_t *n, int *direct)
{
    *n = 0;
    *direct = 0;
    if (self->large_reads) {
        PyObject *data = NULL;
        int rc = stream_recv_direct(self->base.loop->state, fd, &data, n);
        if (rc > 0) {
            self->large_reads = *n >= ZL_DIRECT_READ_MIN;
            *direct = 1;
            return data;
        }
        if (rc < 0) {
            self->large_reads = 0;
            return *n == 0 ? PyBytes_FromStringAndSize(NULL, 0) : NULL;
        }
    }
    zl_state *state = self->base.loop->state;
    if (state->read_buffer == NULL && (state->read_buffer = PyMem_RawMalloc(ZL_READ_BUFFER_SIZE)) == NULL) {
        *n = 0;
        return PyErr_NoMemory();
    }
    do {
        *n = recv(fd, state->read_buffer, ZL_READ_BUFFER_SIZE, 0);
    } while (*n < 0 && errno == EINTR);
    if (*n < 0) {
        return NULL;
    }
    self->large_reads = *n >= ZL_DIRECT_READ_MIN;
    PyObject *data = PyBytes_FromStringAndSize(state->read_buffer, *n);
    if (data == NULL) {
        *n = 0;
    }
    return data;
}

/* The C TLS protocol above: one recv into the shared buffer, handed over without a Python call. */
static int
stream_read_into_tls(zl_stream *self, int fd)
{
    zl_state *state = self->base.loop->state;
    if (state->read_buffer == NULL && (state->read_buffer = PyMem_RawMalloc(ZL_READ_BUFFER_SIZE)) == NULL) {
        PyErr_NoMemory();
        return zl_transport_fatal_error(&self->base, zl_err_fetch(), "Fatal read error on socket transport");
    }
    ssize_t n;
    do {
        n = recv(fd, state->read_buffer, ZL_READ_BUFFER_SIZE, 0);
    } while (n < 0 && errno == EINTR);
    if (n < 0) {
        return (errno == EAGAIN || errno == EWOULDBLOCK) ? 0
                                                         : stream_fatal_errno(self, errno, "Fatal read error on socket transport");
    }
    if (n == 0) {
        return stream_on_eof(self);
    }
    if (zl_tls_data_received(self->base.protocol, state->read_buffer, n) < 0) {
        return stream_protocol_failed(self, stream_buffer_updated_failed);
    }
    return 0;
}

static int
stream_on_readable(PyObject *owner, int fd)
{
    zl_stream *self = (zl_stream *)owner;
    if (self->base.conn_lost || !self->base.reading) {
        return 0;
    }
    if (zl_transport_sock_gone(&self->base)) {
        return stream_fatal_errno(self, EBADF, "Fatal read error on socket transport");
    }
    if (self->tls) {
        return stream_read_into_tls(self, fd);
    }
    if (self->data_received == NULL) {
        return stream_read_into_protocol_buffer(self);
    }
    ssize_t n;
    int direct;
    PyObject *data = stream_recv_bytes(self, fd, &n, &direct);
    if (data == NULL) {
        if (n == 0) {
            return zl_transport_fatal_error(&self->base, zl_err_fetch(), "Fatal read error on socket transport");
        }
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            return 0;
        }
        return stream_fatal_errno(self, errno, "Fatal read error on socket transport");
    }
    if (n == 0) {
        Py_DECREF(data);
        return stream_on_eof(self);
    }
    PyObject *res = stream_call_protocol(self, self->data_received, STREAM_UNBOUND_DATA_RECEIVED, data);
    if (direct && res != NULL) {
        zl_read_spare_give_back(self->base.loop->state, data, ZL_DIRECT_READ_MAX);
    } else {
        Py_DECREF(data);
    }
    if (res == NULL) {
        return stream_protocol_failed(self, "Fatal error: protocol.data_received() call failed.");
    }
    Py_DECREF(res);
    return 0;
}

/* ------------------------------------------------------------------ writing */

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

static int stream_queue_drained(zl_stream *self, int fd);

/* A send failed with error: the queue is dropped and the connection lost, the sendfile waiter told. */
static int
stream_write_failed(zl_stream *self, int error)
{
    zl_transport_stop_writing(&self->base);
    zl_write_queue_clear(&self->out);
    errno = error;
    PyErr_SetFromErrno(PyExc_OSError);
    PyObject *exc = zl_err_fetch();
    Py_INCREF(exc);
    int rc = zl_transport_fatal_error(&self->base, exc, "Fatal write error on socket transport");
    if (stream_resolve_empty_waiter(self, exc) < 0) {
        PyErr_WriteUnraisable((PyObject *)self);
    }
    Py_DECREF(exc);
    return rc;
}

static int
stream_on_writable(PyObject *owner, int fd)
{
    zl_stream *self = (zl_stream *)owner;
    if (self->base.conn_lost) {
        return 0;
    }
    ssize_t sent = zl_transport_sock_gone(&self->base) ? -EBADF : zl_write_queue_flush(&self->out, fd);
    if (sent < 0) {
        return stream_write_failed(self, (int)-sent);
    }
    if (zl_transport_maybe_resume_protocol(&self->base, self->out.bytes) < 0) {
        return -1;
    }
    if (self->out.count > 0) {
        return 0;
    }
    return stream_queue_drained(self, fd);
}

/* Everything queued was sent: the sendfile waiter, a pending close or write_eof. */
static int
stream_queue_drained(zl_stream *self, int fd)
{
    zl_transport_stop_writing(&self->base);
    if (stream_resolve_empty_waiter(self, NULL) < 0) {
        PyErr_WriteUnraisable((PyObject *)self);
    }
    if (self->base.closing) {
        /* As close() with nothing queued: from here on a write() is dropped, it never reaches the fd that
         * connection_lost is about to close. */
        self->base.conn_lost++;
        return zl_transport_call_connection_lost_soon(&self->base, NULL);
    }
    if (self->eof_requested && !zl_transport_sock_gone(&self->base)) {
        shutdown(fd, SHUT_WR);
    }
    return 0;
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

/* The completion path's write: queue it all (the queue keeps the bytes alive while the kernel sends them), and
 * send the first chunk unless a send is in flight. */
static int
stream_ring_write(zl_stream *self, PyObject *data, Py_buffer *view)
{
    if (zl_transport_sock_gone(&self->base)) {
        return stream_fatal_errno(self, EBADF, "Fatal write error on socket transport");
    }
    if (stream_queue_data(self, data, view, 0) < 0 || zl_stream_ring_send_queued(&self->ring) < 0) {
        return -1;
    }
    return zl_transport_maybe_pause_protocol(&self->base, self->out.bytes);
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
    if (self->base.conn_lost) {
        rc = zl_transport_drop_after_lost(&self->base);
        goto done;
    }
    if (zl_stream_ring_active(&self->ring)) {
        rc = stream_ring_write(self, data, &view);
        goto done;
    }
    Py_ssize_t sent = 0;
    if (self->out.count == 0) {
        ssize_t n;
        if (zl_transport_sock_gone(&self->base)) {
            n = -1;
            errno = EBADF;
        } else {
            do {
                n = send(self->base.fd, view.buf, (size_t)view.len, MSG_NOSIGNAL);
            } while (n < 0 && errno == EINTR);
        }
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
            int error = errno;
            PyBuffer_Release(&view);
            if (stream_fatal_errno(self, error, "Fatal write error on socket transport") < 0) {
                return NULL;
            }
            Py_RETURN_NONE;
        }
        if (n == view.len) {
            goto done;
        }
        sent = n < 0 ? 0 : n;
        if (zl_transport_start_writing(&self->base) < 0) {
            rc = -1;
            goto done;
        }
    }
    rc = stream_queue_data(self, data, &view, sent);
    if (rc == 0) {
        rc = zl_transport_maybe_pause_protocol(&self->base, self->out.bytes);
    }
done:
    PyBuffer_Release(&view);
    if (rc < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

PyObject *
zl_stream_write_data(PyObject *transport, PyObject *data)
{
    return stream_write((zl_stream *)transport, data);
}

/* Every item of writelines() is bytes-like and gives its buffer: checked before any is queued, so a bad item
 * leaves nothing half-written (asyncio joins or wraps them all first). */
static int
stream_check_lines(zl_stream *self, PyObject *items)
{
    Py_ssize_t count = PySequence_Fast_GET_SIZE(items);
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *data = PySequence_Fast_GET_ITEM(items, i);
        if (stream_check_writable(self, data, "writelines") < 0) {
            return -1;
        }
        if (PyMemoryView_Check(data)) {   /* released, or not contiguous */
            Py_buffer view;
            if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0) {
                return -1;
            }
            PyBuffer_Release(&view);
        }
    }
    return 0;
}

static int
stream_queue_lines(zl_stream *self, PyObject *items)
{
    int rc = 0;
    Py_ssize_t count = PySequence_Fast_GET_SIZE(items);
    for (Py_ssize_t i = 0; i < count && rc == 0; i++) {
        PyObject *data = PySequence_Fast_GET_ITEM(items, i);
        Py_buffer view;
        if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0) {
            return -1;
        }
        if (view.len > 0) {
            rc = stream_queue_data(self, data, &view, 0);
        }
        PyBuffer_Release(&view);
    }
    return rc;
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
    if (stream_check_lines(self, items) < 0) {
        Py_DECREF(items);
        return NULL;
    }
    Py_ssize_t count = PySequence_Fast_GET_SIZE(items);
    int rc = self->base.conn_lost ? 0 : stream_queue_lines(self, items);
    Py_DECREF(items);
    if (self->base.conn_lost) {
        if (count > 0 && zl_transport_drop_after_lost(&self->base) < 0) {
            return NULL;
        }
        Py_RETURN_NONE;
    }
    /* One sendmsg for all of it now; the rest when the socket is writable again (also after a failure half-way:
     * what was queued must not wait for a writer nobody registered). */
    if (zl_stream_ring_active(&self->ring) && self->out.count > 0) {
        PyObject *exc = rc < 0 ? zl_err_fetch() : NULL;
        int sent = zl_stream_ring_send_queued(&self->ring);
        if (exc != NULL) {
            zl_err_restore(exc);
        } else if (sent < 0) {
            return NULL;
        }
    } else if (!self->base.writing && self->out.count > 0) {
        PyObject *exc = rc < 0 ? zl_err_fetch() : NULL;
        int flushed = stream_on_writable((PyObject *)self, self->base.fd);
        if (flushed == 0 && self->out.count > 0 && !self->base.conn_lost) {
            flushed = zl_transport_start_writing(&self->base);
        }
        if (exc != NULL) {
            zl_err_restore(exc);
        } else if (flushed < 0) {
            return NULL;
        }
    }
    if (rc < 0 || zl_transport_maybe_pause_protocol(&self->base, self->out.bytes) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------------ the completion hook (stream_ring.c) */

zl_stream_ring *
zl_stream_ring_of(zl_transport *t)
{
    return &((zl_stream *)t)->ring;
}

/* Bytes a recv completed with, to the protocol the way its kind reads: the C TLS protocol, a BufferedProtocol
 * (copied into its buffers; what is left when it pauses reading is held first in line), or data_received. */
int
zl_stream_ring_deliver(zl_transport *t, const char *data, Py_ssize_t n)
{
    zl_stream *self = (zl_stream *)t;
    if (self->tls) {
        return zl_tls_data_received(t->protocol, data, n) < 0
                   ? stream_protocol_failed(self, stream_buffer_updated_failed)
                   : 0;
    }
    if (self->data_received != NULL) {
        PyObject *bytes = PyBytes_FromStringAndSize(data, n);
        PyObject *res = bytes ? stream_call_protocol(self, self->data_received, STREAM_UNBOUND_DATA_RECEIVED, bytes)
                              : NULL;
        Py_XDECREF(bytes);
        if (res == NULL) {
            return stream_protocol_failed(self, "Fatal error: protocol.data_received() call failed.");
        }
        Py_DECREF(res);
        return 0;
    }
    while (n > 0) {
        if (!t->reading || t->conn_lost) {
            return t->conn_lost ? 0 : zl_stream_ring_hold(&self->ring, data, n, 1);
        }
        Py_ssize_t taken = stream_copy_into_protocol_buffer(self, data, n);
        if (taken < 0) {
            return taken == -2 ? 0 : -1;
        }
        data += taken;
        n -= taken;
    }
    return 0;
}

int
zl_stream_ring_eof(zl_transport *t)
{
    return stream_on_eof((zl_stream *)t);
}

int
zl_stream_ring_write_failed(zl_transport *t, int error)
{
    return stream_write_failed((zl_stream *)t, error);
}

int
zl_stream_ring_drained(zl_transport *t)
{
    return stream_queue_drained((zl_stream *)t, t->fd);
}

static int
stream_recv_arm(zl_transport *t)
{
    return zl_stream_ring_recv_arm(&((zl_stream *)t)->ring);
}

static int
stream_recv_disarm(zl_transport *t)
{
    return zl_stream_ring_recv_disarm(&((zl_stream *)t)->ring);
}

static PyObject *
stream_py_deliver_held(zl_stream *self, PyObject *Py_UNUSED(ignored))
{
    if (zl_stream_ring_deliver_held(&self->ring) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------------ what the shared code asks of a stream */

static void
stream_queue_drop(zl_transport *t)
{
    zl_stream *self = (zl_stream *)t;
    if (self->out.count > 0) {
        zl_stream_ring_queue_dropped(&self->ring);
        zl_write_queue_clear(&self->out);
    }
}

static int
stream_set_protocol(zl_transport *t, PyObject *protocol)
{
    zl_stream *self = (zl_stream *)t;
    int tls = zl_tls_is_protocol(t->loop->state, protocol);
    int buffered = tls ? 0 : PyObject_IsInstance(protocol, t->loop->state->buffered_protocol_type);
    if (buffered < 0) {
        return -1;
    }
    PyObject *data_received = NULL, *get_buffer = NULL, *buffer_updated = NULL;
    unsigned char unbound = 0;
    if (buffered) {
        get_buffer = stream_protocol_method(protocol, ZL_NAME(t->loop->state, get_buffer), STREAM_UNBOUND_GET_BUFFER,
                                            &unbound);
        buffer_updated = get_buffer ? stream_protocol_method(protocol, ZL_NAME(t->loop->state, buffer_updated),
                                                             STREAM_UNBOUND_BUFFER_UPDATED, &unbound)
                                    : NULL;
        if (buffer_updated == NULL) {
            Py_XDECREF(get_buffer);
            return -1;
        }
    } else if (!tls && (data_received = stream_protocol_method(protocol, ZL_NAME(t->loop->state, data_received),
                                                               STREAM_UNBOUND_DATA_RECEIVED, &unbound)) == NULL) {
        return -1;
    }
    self->tls = (unsigned char)tls;
    self->unbound_calls = unbound;
    Py_INCREF(protocol);
    Py_XSETREF(self->base.protocol, protocol);
    Py_XSETREF(self->data_received, data_received);
    Py_XSETREF(self->get_buffer, get_buffer);
    Py_XSETREF(self->buffer_updated, buffer_updated);
    self->base.protocol_connected = 1;
    return 0;
}

/* As asyncio: a server waiting for its clients must not wait for this one forever. No exception may be set. */
static void
stream_detach_from_server(zl_stream *self)
{
    if (self->server == NULL) {
        return;
    }
    PyObject *server = self->server;
    self->server = NULL;
    PyObject *detached = PyObject_CallMethodOneArg(server, ZL_NAME(self->base.loop->state, _detach), (PyObject *)self);
    if (detached == NULL) {
        PyErr_WriteUnraisable((PyObject *)self);
    }
    Py_XDECREF(detached);
    Py_DECREF(server);
}

static void
stream_release_connection(zl_transport *t)
{
    zl_stream *self = (zl_stream *)t;
    Py_CLEAR(self->data_received);
    Py_CLEAR(self->get_buffer);
    Py_CLEAR(self->buffer_updated);
    stream_detach_from_server(self);
}

/* A TransportSocket for the extra dict: of the socket object, or (asked only once the connection is closed) of a
 * closed socket of the same family, as asyncio's would be by then. */
static PyObject *
stream_extra_socket(zl_stream *self)
{
    PyObject *sock = zl_transport_socket(&self->base);
    if (sock != NULL) {
        return PyObject_CallOneArg(self->base.loop->state->transport_socket_type, sock);
    }
    if (PyErr_Occurred()) {
        return NULL;
    }
    PyObject *module = PyImport_ImportModule("socket");
    PyObject *closed = module ? PyObject_CallMethod(module, "socket", "ii", zl_sock_addrs_family(self->addrs),
                                                    SOCK_STREAM)
                              : NULL;
    Py_XDECREF(module);
    PyObject *res = closed ? PyObject_CallMethod(closed, "close", NULL) : NULL;
    Py_XDECREF(res);
    PyObject *trsock = res ? PyObject_CallOneArg(self->base.loop->state->transport_socket_type, closed) : NULL;
    Py_XDECREF(closed);
    return trsock;
}

/* get_extra_info() on a connection accepted in C: socket, sockname and peername, made at the first call. */
static PyObject *
stream_make_extra(zl_transport *t)
{
    zl_stream *self = (zl_stream *)t;
    if (self->addrs == NULL) {
        return PyDict_New();
    }
    PyObject *info = PyDict_New();
    PyObject *trsock = info ? stream_extra_socket(self) : NULL;
    PyObject *sockname = trsock ? zl_sock_addrs_local(self->addrs) : NULL;
    PyObject *peername = sockname ? zl_sock_addrs_peer(self->addrs) : NULL;
    int rc = peername == NULL || PyDict_SetItemString(info, "peername", peername) < 0 ||
             PyDict_SetItemString(info, "socket", trsock) < 0 || PyDict_SetItemString(info, "sockname", sockname) < 0;
    Py_XDECREF(trsock);
    Py_XDECREF(sockname);
    Py_XDECREF(peername);
    if (rc) {
        Py_XDECREF(info);
        return NULL;
    }
    PyMem_Free(self->addrs);
    self->addrs = NULL;
    return info;
}

static const zl_transport_kind stream_kind = {
    .on_readable = stream_on_readable,
    .on_writable = stream_on_writable,
    .set_protocol = stream_set_protocol,
    .release_connection = stream_release_connection,
    .queue_drop = stream_queue_drop,
    .queue_count_offset = offsetof(zl_stream, out.count),
    .queue_bytes_offset = offsetof(zl_stream, out.bytes),
    .make_extra = stream_make_extra,
    .recv_arm = stream_recv_arm,
    .recv_disarm = stream_recv_disarm,
};

/* ------------------------------------------------------------------ Python API */

static PyObject *
stream_py_write_eof(zl_stream *self, PyObject *Py_UNUSED(ignored))
{
    if (self->base.closing || self->eof_requested) {
        Py_RETURN_NONE;
    }
    self->eof_requested = 1;
    if (self->out.count == 0 && zl_transport_sock_gone(&self->base)) {
        errno = EBADF;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    if (self->out.count == 0 && shutdown(self->base.fd, SHUT_WR) < 0) {
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
stream_py_make_empty_waiter(zl_stream *self, PyObject *Py_UNUSED(ignored))
{
    if (self->empty_waiter != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Empty waiter is already set");
        return NULL;
    }
    self->empty_waiter = PyObject_CallMethod((PyObject *)self->base.loop, "create_future", NULL);
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
    const char *state = !zl_transport_is_open(&self->base) ? " closed" : self->base.closing ? " closing" : "";
    const char *read = !self->base.reading ? "idle" : "polling";
    return PyUnicode_FromFormat("<%s fd=%d%s read=%s write=<%s, bufsize=%zu>>", Py_TYPE(self)->tp_name,
                                self->base.fd, state, read, self->base.writing ? "polling" : "idle", self->out.bytes);
}

static PyObject *
stream_get_server(zl_stream *self, void *Py_UNUSED(closure))
{
    return zl_ref_or_none(self->server);
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
    int rc = zl_transport_traverse(&self->base, visit, arg);
    if (rc != 0) {
        return rc;
    }
    Py_VISIT(self->data_received);
    Py_VISIT(self->get_buffer);
    Py_VISIT(self->buffer_updated);
    Py_VISIT(self->server);
    Py_VISIT(self->empty_waiter);
    if (zl_stream_ring_traverse(&self->ring, visit, arg) < 0) {
        return -1;
    }
    return zl_write_queue_traverse(&self->out, visit, arg);
}

static int
stream_clear(zl_stream *self)
{
    zl_transport_clear(&self->base);
    Py_CLEAR(self->data_received);
    Py_CLEAR(self->get_buffer);
    Py_CLEAR(self->buffer_updated);
    Py_CLEAR(self->server);
    Py_CLEAR(self->empty_waiter);
    zl_stream_ring_clear(&self->ring);
    zl_write_queue_clear(&self->out);
    return 0;
}

static void
stream_finalize(zl_stream *self)
{
    if (!zl_transport_finalize_unclosed(&self->base) || self->server == NULL) {
        return;
    }
    PyObject *exc = zl_err_fetch();
    stream_detach_from_server(self);
    zl_err_restore(exc);
}

static void
stream_dealloc(zl_stream *self)
{
    if (zl_transport_dealloc_begin(&self->base) < 0) {
        return;
    }
    stream_clear(self);
    zl_write_queue_free(&self->out);
    PyMem_Free(self->addrs);
    zl_transport_dealloc_end(&self->base);
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

static int
stream_attach_to_server(zl_stream *self, PyObject *server)
{
    if (server == Py_None) {
        return 0;
    }
    Py_INCREF(server);
    self->server = server;
    PyObject *attached = PyObject_CallMethodOneArg(server, ZL_NAME(self->base.loop->state, _attach), (PyObject *)self);
    if (attached == NULL) {
        return -1;
    }
    Py_DECREF(attached);
    return 0;
}

/* What every new stream does once it has its protocol: TCP_NODELAY, the server's count, the fd and the first
 * callbacks. Returns the transport, or NULL (the transport discarded, the fd left to its owner). */
static PyObject *
stream_open(zl_stream *self, PyObject *server, PyObject *waiter, int tcp)
{
    zl_stream_ring_init(&self->ring, &self->base, &self->out);
    if (tcp < 0) {
        stream_set_nodelay(self->base.fd);
    } else if (tcp) {
        int one = 1;
        (void)setsockopt(self->base.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    }
    if (stream_attach_to_server(self, server) < 0) {
        Py_CLEAR(self->server);   /* never counted by the server: nothing to detach */
        return zl_transport_discard(&self->base);
    }
    if (zl_transport_open(&self->base, waiter) < 0) {
        /* Counted by the server already: uncount it, or server.wait_closed() would wait for it for ever. */
        PyObject *exc = zl_err_fetch();
        stream_detach_from_server(self);
        zl_err_restore(exc);
        return zl_transport_discard(&self->base);
    }
    return (PyObject *)self;
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
    if (zl_transport_check_creatable(loop, loop->state->stream_type) < 0) {
        return NULL;
    }
    zl_stream *self = (zl_stream *)zl_transport_new(loop->state->stream_type, &stream_kind, loop, sock);
    if (self == NULL) {
        return NULL;
    }
    self->base.extra = zl_transport_build_extra(loop, sock, extra);
    if (self->base.extra == NULL || stream_set_protocol(&self->base, protocol) < 0) {
        return zl_transport_discard(&self->base);
    }
    return stream_open(self, server, waiter, -1);
}

PyObject *
zl_stream_accepted(zl_loop *loop, int fd, zl_sock_addrs *addrs, int tcp, PyObject *context, PyObject *protocol,
                   PyObject *server)
{
    if (zl_transport_check_creatable(loop, loop->state->stream_type) < 0) {
        Py_DECREF(context);
        PyMem_Free(addrs);
        return NULL;
    }
    zl_stream *self = (zl_stream *)zl_transport_new_for_fd(loop->state->stream_type, &stream_kind, loop, fd, context);
    if (self == NULL) {
        PyMem_Free(addrs);
        return NULL;
    }
    self->addrs = addrs;
    if (stream_set_protocol(&self->base, protocol) < 0) {
        return zl_transport_discard(&self->base);
    }
    return stream_open(self, server, Py_None, tcp);
}

PyObject *
zl_stream_server_of(zl_state *state, PyObject *obj)
{
    if (state->stream_type == NULL || !PyObject_TypeCheck(obj, state->stream_type)) {
        return NULL;
    }
    return ((zl_stream *)obj)->server;
}

/* ------------------------------------------------------------------ type */

static PyMethodDef stream_methods[] = {
    {"write", (PyCFunction)stream_write, METH_O, "Write bytes; what the socket does not take now is queued."},
    {"writelines", (PyCFunction)stream_writelines, METH_O, "Write an iterable of bytes with one syscall."},
    {"write_eof", (PyCFunction)stream_py_write_eof, METH_NOARGS, "Close the write side after the queue drains."},
    {"can_write_eof", (PyCFunction)stream_py_can_write_eof, METH_NOARGS, "True: sockets can half-close."},
    {"close", (PyCFunction)zl_transport_py_close, METH_NOARGS, "Close after the queued data is sent."},
    {"abort", (PyCFunction)zl_transport_py_abort, METH_NOARGS, "Close now, dropping queued data."},
    {"is_closing", (PyCFunction)zl_transport_py_is_closing, METH_NOARGS, "True once close() or abort() ran."},
    {"is_reading", (PyCFunction)zl_transport_py_is_reading, METH_NOARGS, "True unless reading is paused or closing."},
    {"pause_reading", (PyCFunction)zl_transport_py_pause_reading, METH_NOARGS, "Stop calling the protocol with data."},
    {"resume_reading", (PyCFunction)zl_transport_py_resume_reading, METH_NOARGS,
     "Resume calling the protocol with data."},
    ZL_TRANSPORT_BUFFER_AND_PROTOCOL_METHODS,
    {"_call_connection_lost", (PyCFunction)zl_transport_py_call_connection_lost, METH_O, NULL},
    {"_force_close", (PyCFunction)zl_transport_py_force_close, METH_O, NULL},
    {"_make_empty_waiter", (PyCFunction)stream_py_make_empty_waiter, METH_NOARGS, NULL},
    {"_reset_empty_waiter", (PyCFunction)stream_py_reset_empty_waiter, METH_NOARGS, NULL},
    {"_deliver_held", (PyCFunction)stream_py_deliver_held, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef stream_getset[] = {
    {"_loop", (getter)zl_transport_get_loop, NULL, NULL, NULL},
    {"_sock", (getter)zl_transport_get_sock, NULL, NULL, NULL},
    {"_sock_fd", (getter)zl_transport_get_sock_fd, NULL, NULL, NULL},
    {"_protocol", (getter)zl_transport_get_protocol, NULL, NULL, NULL},
    {"_server", (getter)stream_get_server, NULL, NULL, NULL},
    {"_closing", (getter)zl_transport_get_closing, NULL, NULL, NULL},
    {"_conn_lost", (getter)zl_transport_get_conn_lost, NULL, NULL, NULL},
    {"_paused", (getter)zl_transport_get_paused, NULL, NULL, NULL},
    {"_protocol_paused", (getter)zl_transport_get_protocol_paused, NULL, NULL, NULL},
    {"_eof", (getter)stream_get_eof, NULL, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef stream_members[] = {
    {"__weaklistoffset__", T_PYSSIZET, offsetof(zl_transport, weakreflist), READONLY, NULL},
    {"__dictoffset__", T_PYSSIZET, offsetof(zl_transport, dict), READONLY, NULL},
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
zl_stream_type_create(PyObject *module, PyObject *transport_base)
{
    PyObject *bases = PyTuple_Pack(1, transport_base);
    if (bases == NULL) {
        return NULL;
    }
    zl_state *state = PyModule_GetState(module);
    PyObject *type = zl_transport_type_create(module, &stream_spec, bases, "asyncio.Transport has an unexpected layout",
                                              &state->stream_type);
    Py_DECREF(bases);
    return type;
}
