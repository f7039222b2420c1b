/* core/tls_protocol.c — asyncio's SSLProtocol (3.11+) in C: handshake, record reads and writes, close-notify and
 * timeouts, flow control both ways, driving the SSLObject's _ssl._SSLSocket and its MemoryBIOs by vectorcall. */
#include "tls.h"

#include <stddef.h>
#include <structmember.h>

static const char *const tls_state_names[] = {"UNWRAPPED", "DO_HANDSHAKE", "WRAPPED", "FLUSHING", "SHUTDOWN"};

static const char *fatal_ssl_protocol = "Fatal error on SSL protocol";

/* ------------------------------------------------------------------ calls */

static inline PyObject *
tls_call0(PyObject *obj, PyObject *name)
{
    return PyObject_VectorcallMethod(name, &obj, 1 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
}

static inline PyObject *
tls_call1(PyObject *obj, PyObject *name, PyObject *arg)
{
    PyObject *args[2] = {obj, arg};
    return PyObject_VectorcallMethod(name, args, 2 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
}

static inline PyObject *
tls_call2(PyObject *obj, PyObject *name, PyObject *arg1, PyObject *arg2)
{
    PyObject *args[3] = {obj, arg1, arg2};
    return PyObject_VectorcallMethod(name, args, 3 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
}

/* A call whose result is not needed: 0, or -1 with the exception. */
static inline int
tls_done(PyObject *res)
{
    if (res == NULL) {
        return -1;
    }
    Py_DECREF(res);
    return 0;
}

/* The exception raised is one of asyncio's SSLAgainErrors (SSLWantReadError, SSLSyscallError): cleared, 1. */
static int
tls_clear_again(zl_tls *self)
{
    if (PyErr_ExceptionMatches(self->ts->want_read_error) || PyErr_ExceptionMatches(self->ts->syscall_error)) {
        PyErr_Clear();
        return 1;
    }
    return 0;
}

/* MemoryBIO.pending, through its getset when bio is a MemoryBIO: -1 with an exception on failure. */
static Py_ssize_t
tls_bio_pending(zl_tls_state *ts, PyObject *bio)
{
    PyObject *value = Py_IS_TYPE(bio, ts->memory_bio_type)
                          ? Py_TYPE(ts->bio_pending)->tp_descr_get(ts->bio_pending, bio, (PyObject *)ts->memory_bio_type)
                          : PyObject_GetAttr(bio, ts->str_pending);
    if (value == NULL) {
        return -1;
    }
    Py_ssize_t size = PyLong_AsSsize_t(value);
    Py_DECREF(value);
    return size;
}

/* self.<name> scheduled with loop.call_soon, or with loop.call_later(delay) when delay is given. */
static PyObject *
tls_schedule_method(zl_tls *self, const char *name, PyObject *delay)
{
    PyObject *method = PyObject_GetAttrString((PyObject *)self, name);
    if (method == NULL) {
        return NULL;
    }
    PyObject *handle = delay == NULL ? tls_call1(self->loop, self->ts->str_call_soon, method)
                                     : tls_call2(self->loop, self->ts->str_call_later, delay, method);
    Py_DECREF(method);
    return handle;
}

static int
tls_cancel_timer(zl_tls *self, PyObject **handle)
{
    if (*handle == NULL) {
        return 0;
    }
    PyObject *timer = *handle;
    *handle = NULL;
    int rc = tls_done(tls_call0(timer, self->ts->str_cancel));
    Py_DECREF(timer);
    return rc;
}

static int
tls_debug(zl_tls *self)
{
    PyObject *debug = tls_call0(self->loop, self->ts->str_get_debug);
    if (debug == NULL) {
        return -1;
    }
    int on = PyObject_IsTrue(debug);
    Py_DECREF(debug);
    return on;
}

/* zloop._tls.log(level, message, protocol, extra): asyncio's logger, as sslproto words it. */
static int
tls_log(zl_tls *self, const char *level, const char *message, PyObject *arg)
{
    return tls_done(PyObject_CallFunction(self->ts->log, "ssOO", level, message, (PyObject *)self,
                                          arg ? arg : Py_None));
}

/* ------------------------------------------------------------------ state */

static int
tls_set_state(zl_tls *self, int new_state)
{
    int old = self->state;
    int allowed = new_state == ZL_TLS_UNWRAPPED || (old == ZL_TLS_UNWRAPPED && new_state == ZL_TLS_DO_HANDSHAKE) ||
                  (old == ZL_TLS_DO_HANDSHAKE && new_state == ZL_TLS_WRAPPED) ||
                  (old == ZL_TLS_WRAPPED && new_state == ZL_TLS_FLUSHING) ||
                  (old == ZL_TLS_FLUSHING && new_state == ZL_TLS_SHUTDOWN);
    if (!allowed) {
        PyErr_Format(PyExc_RuntimeError, "cannot switch state from SSLProtocolState.%s to SSLProtocolState.%s",
                     tls_state_names[old], tls_state_names[new_state]);
        return -1;
    }
    self->state = new_state;
    return 0;
}

static int
tls_wakeup_waiter(zl_tls *self, PyObject *exc)
{
    if (self->waiter == NULL) {
        return 0;
    }
    PyObject *waiter = self->waiter;
    self->waiter = NULL;
    PyObject *cancelled = tls_call0(waiter, self->ts->str_cancelled);
    int rc = cancelled == NULL ? -1 : 0;
    if (cancelled != NULL && !PyObject_IsTrue(cancelled)) {
        rc = tls_done(exc != NULL ? tls_call1(waiter, self->ts->str_set_exception, exc)
                                  : tls_call1(waiter, self->ts->str_set_result, Py_None));
    }
    Py_XDECREF(cancelled);
    Py_DECREF(waiter);
    return rc;
}

/* SSLProtocol._fatal_error: the stream closes at once with exc, which is reported as asyncio reports it. */
static int
tls_fatal_error(zl_tls *self, PyObject *exc, const char *message)
{
    if (self->transport != NULL && tls_done(tls_call1(self->transport, self->ts->str_force_close, exc)) < 0) {
        return -1;
    }
    return tls_done(PyObject_CallFunction(self->ts->report_fatal, "OOsOO", self->loop, exc, message,
                                          self->transport ? self->transport : Py_None, (PyObject *)self));
}

/* `except Exception as ex: self._fatal_error(ex, message)` around a step that failed: anything else (SystemExit,
 * KeyboardInterrupt, CancelledError) goes on up. */
static int
tls_catch_fatal(zl_tls *self, const char *message)
{
    if (!PyErr_ExceptionMatches(PyExc_Exception)) {
        return -1;
    }
    PyObject *exc = zl_err_fetch();
    int rc = tls_fatal_error(self, exc, message);
    Py_DECREF(exc);
    return rc;
}

/* ------------------------------------------------------------------ flow control */

static int
tls_call_flow(zl_tls *self, PyObject *name, const char *message)
{
    if (self->app_protocol == NULL) {
        return 0;
    }
    PyObject *res = tls_call0(self->app_protocol, name);
    if (res != NULL) {
        Py_DECREF(res);
        return 0;
    }
    if (zl_err_stops_loop()) {
        return -1;
    }
    PyObject *exc = zl_err_fetch();
    int rc = tls_done(PyObject_CallFunction(self->ts->report_error, "OsOOO", self->loop, message, exc,
                                            self->app_transport ? (PyObject *)self->app_transport : Py_None,
                                            (PyObject *)self));
    Py_DECREF(exc);
    return rc;
}

Py_ssize_t
zl_tls_write_buffer_size(zl_tls *self)
{
    Py_ssize_t pending = tls_bio_pending(self->ts, self->outgoing);
    return pending < 0 ? -1 : pending + self->write_buffer_size;
}

Py_ssize_t
zl_tls_read_buffer_size(zl_tls *self)
{
    return tls_bio_pending(self->ts, self->incoming);
}

/* The incoming BIO's size as the record loop needs it: without asking the BIO when nothing read from it since it
 * was last asked (or found empty), only ciphertext was added. */
static Py_ssize_t
tls_incoming_size(zl_tls *self)
{
    return self->incoming_known >= 0 ? self->incoming_known : zl_tls_read_buffer_size(self);
}

/* An SSLObject call is about to run: it may read ciphertext from the incoming BIO and write into the outgoing one. */
static inline void
tls_before_ssl_call(zl_tls *self)
{
    self->incoming_known = -1;
    self->outgoing_dirty = 1;
    self->one_record = self->one_record == ZL_TLS_ONE_RECORD_FED ? ZL_TLS_ONE_RECORD_READING : ZL_TLS_ONE_RECORD_NONE;
}

/* SSLObject.write is about to run: as any call, except that an empty incoming BIO stays empty (a write can only take
 * from it, during a renegotiation), so an echo's reply does not make the next record's size unknown. */
static inline void
tls_before_ssl_write(zl_tls *self)
{
    Py_ssize_t known = self->incoming_known;
    tls_before_ssl_call(self);
    if (known == 0) {
        self->incoming_known = 0;
    }
}

/* The n bytes of ciphertext at buf are one whole TLS record: a 5-byte header whose last two bytes give the length
 * of what follows. */
static int
tls_is_one_record(const char *buf, Py_ssize_t n)
{
    const unsigned char *header = (const unsigned char *)buf;
    return n >= 5 && 5 + ((Py_ssize_t)header[3] << 8 | header[4]) == n;
}

static int
tls_control_app_writing_size(zl_tls *self, Py_ssize_t size)
{
    if (size >= self->outgoing_high && !self->app_writing_paused) {
        self->app_writing_paused = 1;
        return tls_call_flow(self, self->ts->str_pause_writing, "protocol.pause_writing() failed");
    }
    if (size <= self->outgoing_low && self->app_writing_paused) {
        self->app_writing_paused = 0;
        return tls_call_flow(self, self->ts->str_resume_writing, "protocol.resume_writing() failed");
    }
    return 0;
}

int
zl_tls_control_app_writing(zl_tls *self)
{
    Py_ssize_t size = zl_tls_write_buffer_size(self);
    return size < 0 ? -1 : tls_control_app_writing_size(self, size);
}

int
zl_tls_control_ssl_reading(zl_tls *self)
{
    Py_ssize_t size = tls_incoming_size(self);
    if (size < 0 || self->transport == NULL) {
        return size < 0 ? -1 : 0;
    }
    if (size >= self->incoming_high && !self->ssl_reading_paused) {
        self->ssl_reading_paused = 1;
        return tls_done(tls_call0(self->transport, self->ts->str_pause_reading));
    }
    if (size <= self->incoming_low && self->ssl_reading_paused) {
        self->ssl_reading_paused = 0;
        return tls_done(tls_call0(self->transport, self->ts->str_resume_reading));
    }
    return 0;
}

int
zl_tls_flow_limits(PyObject *high, PyObject *low, Py_ssize_t kb, Py_ssize_t *hi, Py_ssize_t *lo)
{
    int has_high = high != NULL && high != Py_None, has_low = low != NULL && low != Py_None;
    if (has_high && (*hi = PyLong_AsSsize_t(high)) == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (has_low && (*lo = PyLong_AsSsize_t(low)) == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (!has_high) {
        *hi = has_low ? 4 * *lo : kb * 1024;
    }
    if (!has_low) {
        *lo = *hi / 4;   /* Python's // for a non-negative high; a negative one fails below either way */
        if (*hi < 0 && *hi % 4 != 0) {
            *lo -= 1;
        }
    }
    if (!(*hi >= *lo && *lo >= 0)) {
        PyErr_Format(PyExc_ValueError, "high (%zd) must be >= low (%zd) must be >= 0", *hi, *lo);
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------ outgoing */

static int
tls_transport_write(zl_tls *self, PyObject *data)
{
    if (self->transport_is_stream) {
        return tls_done(zl_stream_write_data(self->transport, data));
    }
    return tls_done(tls_call1(self->transport, self->ts->str_write, data));
}

/* What the SSLObject wrote into the outgoing BIO goes to the stream in one write, unless the stream asked to
 * pause; then the application's writing is paused or resumed by what is left. */
static int
tls_process_outgoing(zl_tls *self)
{
    if (self->ssl_writing_paused || self->transport == NULL) {
        return zl_tls_control_app_writing(self);
    }
    zl_tls_state *ts = self->ts;
    PyObject *data = zl_tls_call_method(ts->bio_read, ts->memory_bio_type, ts->str_read, &self->outgoing, 1);
    if (data == NULL) {
        return -1;
    }
    self->outgoing_dirty = 0;
    int rc = PyBytes_GET_SIZE(data) > 0 ? tls_transport_write(self, data) : 0;
    Py_DECREF(data);
    if (rc < 0) {
        return -1;
    }
    /* The BIO is empty now, unless writing to the stream re-entered (pause_writing): ask it then. */
    return self->ssl_writing_paused ? zl_tls_control_app_writing(self)
                                    : tls_control_app_writing_size(self, self->write_buffer_size);
}

/* SSLObject.write(data): bytes taken into the outgoing BIO, 0 when it wants to read first, -1 on error. */
static Py_ssize_t
tls_ssl_write(zl_tls *self, PyObject *data)
{
    zl_tls_state *ts = self->ts;
    PyObject *args[2] = {self->sslsock, data};
    tls_before_ssl_write(self);
    PyObject *count = zl_tls_call_method(ts->ssl_write, ts->ssl_socket_type, ts->str_write, args, 2);
    if (count == NULL) {
        return tls_clear_again(self) ? 0 : -1;
    }
    Py_ssize_t n = PyLong_AsSsize_t(count);
    Py_DECREF(count);
    return n;
}

static int
tls_do_write(zl_tls *self)
{
    while (PyList_GET_SIZE(self->write_backlog) > 0) {
        PyObject *data = PyList_GET_ITEM(self->write_backlog, 0);
        Py_INCREF(data);
        PyObject *args[2] = {self->sslsock, data};
        tls_before_ssl_write(self);
        PyObject *count_obj = zl_tls_call_method(self->ts->ssl_write, self->ts->ssl_socket_type, self->ts->str_write,
                                                 args, 2);
        if (count_obj == NULL) {
            Py_DECREF(data);
            if (tls_clear_again(self)) {
                break;
            }
            return -1;
        }
        Py_ssize_t count = PyLong_AsSsize_t(count_obj);
        Py_DECREF(count_obj);
        Py_ssize_t data_len = PyObject_Length(data);
        int rc = count < 0 || data_len < 0 ? -1 : 0;
        if (rc == 0 && count < data_len) {
            PyObject *rest = PySequence_GetSlice(data, count, PY_SSIZE_T_MAX);
            rc = rest == NULL ? -1 : PyList_SetItem(self->write_backlog, 0, rest);
            self->write_buffer_size -= count;
        } else if (rc == 0) {
            rc = PyList_SetSlice(self->write_backlog, 0, 1, NULL);
            self->write_buffer_size -= data_len;
        }
        Py_DECREF(data);
        if (rc < 0) {
            return -1;
        }
    }
    return tls_process_outgoing(self);
}

static int
tls_backlog_append(zl_tls *self, PyObject *data)
{
    Py_ssize_t len = PyObject_Length(data);
    if (len < 0 || PyList_Append(self->write_backlog, data) < 0) {
        return -1;
    }
    self->write_buffer_size += len;
    return 0;
}

/* One write() while the connection is up and nothing waits: straight into the SSLObject, the rest queued. */
static int
tls_write_direct(zl_tls *self, PyObject *data)
{
    Py_ssize_t len = PyObject_Length(data);
    if (len < 0) {
        return -1;
    }
    Py_ssize_t count = tls_ssl_write(self, data);
    if (count < 0) {
        return tls_catch_fatal(self, fatal_ssl_protocol);
    }
    if (count < len) {
        PyObject *rest = PySequence_GetSlice(data, count, PY_SSIZE_T_MAX);
        if (rest == NULL || PyList_Append(self->write_backlog, rest) < 0) {
            Py_XDECREF(rest);
            return tls_catch_fatal(self, fatal_ssl_protocol);
        }
        Py_DECREF(rest);
        self->write_buffer_size += len - count;
    }
    if (tls_process_outgoing(self) < 0) {
        return tls_catch_fatal(self, fatal_ssl_protocol);
    }
    return 0;
}

int
zl_tls_write_appdata(zl_tls *self, PyObject *data, int single)
{
    if (self->state == ZL_TLS_FLUSHING || self->state == ZL_TLS_SHUTDOWN || self->state == ZL_TLS_UNWRAPPED) {
        if (self->conn_lost >= 5 && tls_log(self, "warning", "SSL connection is closed", NULL) < 0) {
            return -1;
        }
        self->conn_lost++;
        return 0;
    }
    if (single && self->state == ZL_TLS_WRAPPED && PyList_GET_SIZE(self->write_backlog) == 0) {
        return tls_write_direct(self, data);
    }
    if (single) {
        if (tls_backlog_append(self, data) < 0) {
            return -1;
        }
    } else {
        PyObject *iter = PyObject_GetIter(data), *item;
        if (iter == NULL) {
            return -1;
        }
        while ((item = PyIter_Next(iter)) != NULL) {
            int rc = tls_backlog_append(self, item);
            Py_DECREF(item);
            if (rc < 0) {
                break;
            }
        }
        Py_DECREF(iter);
        if (PyErr_Occurred()) {
            return -1;
        }
    }
    if (self->state == ZL_TLS_WRAPPED && tls_do_write(self) < 0) {
        return tls_catch_fatal(self, fatal_ssl_protocol);
    }
    return 0;
}

/* ------------------------------------------------------------------ incoming */

static int
tls_call_eof_received(zl_tls *self)
{
    if (self->app_state != ZL_TLS_APP_CON_MADE) {
        return 0;
    }
    self->app_state = ZL_TLS_APP_EOF;
    PyObject *keep_open = tls_call0(self->app_protocol, self->ts->str_eof_received);
    int truth = keep_open ? PyObject_IsTrue(keep_open) : -1;
    Py_XDECREF(keep_open);
    if (truth > 0) {
        return tls_log(self, "warning", "returning true from eof_received() has no effect when using ssl", NULL);
    }
    if (truth == 0) {
        return 0;
    }
    if (zl_err_stops_loop()) {
        return -1;
    }
    PyObject *exc = zl_err_fetch();
    int rc = tls_fatal_error(self, exc, "Error calling eof_received()");
    Py_DECREF(exc);
    return rc;
}

/* SSLObject.read(n, buffer) into the n bytes at buf, which exporter (when not NULL) exports exactly: the count (0 at
 * close-notify), -2 when it wants more ciphertext, -1 on error. */
static Py_ssize_t
tls_ssl_read_into(zl_tls *self, char *buf, Py_ssize_t n, PyObject *exporter)
{
    zl_tls_state *ts = self->ts;
    PyObject *view = exporter ? Py_NewRef(exporter) : PyMemoryView_FromMemory(buf, n, PyBUF_WRITE);
    PyObject *size = view ? PyLong_FromSsize_t(n) : NULL;
    PyObject *args[3] = {self->sslsock, size, view};
    tls_before_ssl_call(self);
    PyObject *count = size ? zl_tls_call_method(ts->ssl_read, ts->ssl_socket_type, ts->str_read, args, 3) : NULL;
    Py_XDECREF(size);
    Py_XDECREF(view);
    if (count == NULL) {
        return tls_clear_again(self) ? -2 : -1;
    }
    Py_ssize_t got = PyLong_AsSsize_t(count);
    Py_DECREF(count);
    return got;
}

/* A read that got less than it asked for used up its record; when neither the SSLObject (pending()) nor the
 * incoming BIO holds anything more, the next read could only raise SSLWantReadError, whose making costs more than
 * the record: 1 says skip it. Without asking either when that read was the first SSLObject call since one whole
 * record came into an empty BIO and SSLObject (ZL_TLS_ONE_RECORD_READING): it read that record. */
static int
tls_read_drained(zl_tls *self, Py_ssize_t got, Py_ssize_t asked)
{
    if (got >= asked) {
        return 0;
    }
    if (self->one_record == ZL_TLS_ONE_RECORD_READING) {
        self->one_record = ZL_TLS_ONE_RECORD_NONE;
        self->incoming_known = 0;
        return 1;
    }
    Py_ssize_t in_bio = zl_tls_read_buffer_size(self);
    if (in_bio != 0) {
        PyErr_Clear();
        return 0;
    }
    zl_tls_state *ts = self->ts;
    PyObject *pending = zl_tls_call_method(ts->ssl_pending, ts->ssl_socket_type, ts->str_pending, &self->sslsock, 1);
    int drained = pending != NULL && PyLong_Check(pending) && PyLong_AsSsize_t(pending) == 0;
    Py_XDECREF(pending);
    PyErr_Clear();
    if (drained) {
        self->incoming_known = 0;
    }
    return drained;
}

/* data_received(data), data consumed. */
static int
tls_deliver(zl_tls *self, PyObject *data)
{
    PyObject *res = self->app_data_received ? PyObject_CallOneArg(self->app_data_received, data)
                                            : tls_call1(self->app_protocol, self->ts->str_data_received, data);
    Py_DECREF(data);
    return tls_done(res);
}

/* Close-notify arrived: the application sees EOF, and our side of the shutdown starts. */
static int
tls_on_close_notify(zl_tls *self)
{
    return tls_call_eof_received(self) < 0 ? -1 : zl_tls_start_shutdown(self);
}

/* Reads until the SSLObject wants more ciphertext, has nothing more, or buf is full; *got bytes read. The last
 * read's count: 0 at close-notify, -2 when it wants more (or nothing more is there), -1 on error, > 0 when full.
 * exporter, when not NULL, exports exactly buf and size: the first read goes into it without a new memoryview. */
static Py_ssize_t
tls_read_all_into(zl_tls *self, char *buf, Py_ssize_t size, Py_ssize_t *got, PyObject *exporter)
{
    Py_ssize_t count;
    *got = 0;
    for (;;) {
        Py_ssize_t asked = size - *got;
        count = tls_ssl_read_into(self, buf + *got, asked, *got == 0 ? exporter : NULL);
        if (count <= 0) {
            return count;
        }
        *got += count;
        if (*got == size) {
            return count;
        }
        if (tls_read_drained(self, count, asked)) {
            return -2;
        }
    }
}

/* _do_read__copied: decrypt all that is there straight into a bytes sized for the ciphertext the incoming BIO
 * holds (the plaintext of whole records is smaller: each carries a header and a tag), shrunk to fit, for one
 * data_received; one record's size when the BIO is empty. When more comes (the rest of a record the SSLObject took
 * in part before), it goes on in another bytes, unless the application paused reading meanwhile. */
static int
tls_read_copied(zl_tls *self)
{
    for (;;) {
        Py_ssize_t pending = tls_incoming_size(self);
        if (pending < 0) {
            return -1;
        }
        Py_ssize_t size = pending == 0 ? ZL_TLS_RECORD_MAX : pending < ZL_TLS_MAX_SIZE ? pending : ZL_TLS_MAX_SIZE;
        PyObject *data = PyBytes_FromStringAndSize(NULL, size);
        if (data == NULL) {
            return -1;
        }
        Py_ssize_t got;
        Py_ssize_t count = tls_read_all_into(self, PyBytes_AS_STRING(data), size, &got, NULL);
        if (count == -1 || got == 0) {
            Py_DECREF(data);
            if (count == -1) {
                return -1;
            }
            return count == 0 ? tls_on_close_notify(self) : 0;
        }
        if (got < size && _PyBytes_Resize(&data, got) < 0) {
            return -1;
        }
        if (tls_deliver(self, data) < 0) {
            return -1;
        }
        if (count <= 0) {
            return count == 0 ? tls_on_close_notify(self) : 0;
        }
        if (self->app_reading_paused) {   /* the application paused in data_received: the rest waits */
            return 0;
        }
    }
}

/* _do_read__buffered: decrypt into the application's get_buffer(); when it fills up, read again soon. */
static int
tls_read_buffered(zl_tls *self)
{
    Py_ssize_t pending = tls_incoming_size(self);
    PyObject *size = pending < 0 ? NULL : PyLong_FromSsize_t(pending);
    PyObject *buffer = size ? PyObject_CallOneArg(self->app_get_buffer, size) : NULL;
    Py_XDECREF(size);
    Py_buffer view;
    if (buffer == NULL || PyObject_GetBuffer(buffer, &view, PyBUF_WRITABLE) < 0) {
        Py_XDECREF(buffer);
        return -1;
    }
    Py_ssize_t offset;
    Py_ssize_t count = tls_read_all_into(self, view.buf, view.len, &offset,
                                         PyMemoryView_Check(buffer) || PyByteArray_Check(buffer) ? buffer : NULL);
    int filled = offset == view.len && count > 0;
    PyBuffer_Release(&view);
    Py_DECREF(buffer);
    if (count == -1) {
        return -1;
    }
    if (filled) {
        PyObject *handle = tls_schedule_method(self, "_do_read", NULL);
        if (tls_done(handle) < 0) {
            return -1;
        }
    }
    if (offset > 0) {
        PyObject *n = PyLong_FromSsize_t(offset);
        PyObject *res = n ? PyObject_CallOneArg(self->app_buffer_updated, n) : NULL;
        Py_XDECREF(n);
        if (tls_done(res) < 0) {
            return -1;
        }
    }
    return count == 0 ? tls_on_close_notify(self) : 0;
}

static int
tls_do_read_steps(zl_tls *self)
{
    if (!self->app_reading_paused) {
        int rc = self->app_is_buffer ? tls_read_buffered(self) : tls_read_copied(self);
        if (rc < 0) {
            return -1;
        }
        /* No SSLObject call since the application's write emptied the outgoing BIO: nothing new to send. */
        rc = PyList_GET_SIZE(self->write_backlog) > 0 ? tls_do_write(self)
             : self->outgoing_dirty                   ? tls_process_outgoing(self)
                                                      : 0;
        if (rc < 0) {
            return -1;
        }
    }
    return zl_tls_control_ssl_reading(self);
}

static int
tls_do_read(zl_tls *self)
{
    if (self->state != ZL_TLS_WRAPPED && self->state != ZL_TLS_FLUSHING) {
        return 0;
    }
    return tls_do_read_steps(self) < 0 ? tls_catch_fatal(self, fatal_ssl_protocol) : 0;
}

/* ------------------------------------------------------------------ shutdown */

static int
tls_on_shutdown_complete(zl_tls *self, PyObject *exc)
{
    if (exc != NULL || !self->ts->shutdown_timeout_until_lost) {
        if (tls_cancel_timer(self, &self->shutdown_timeout_handle) < 0) {
            return -1;
        }
    } else if (self->shutdown_timeout_handle == NULL) {
        /* 3.14+: closing the stream flushes it first, which a peer that does not read can delay for ever; the
         * timeout stays (or starts, when the peer began the shutdown) until connection_lost. */
        self->shutdown_timeout_handle = tls_schedule_method(self, "_check_shutdown_timeout", self->shutdown_timeout);
        if (self->shutdown_timeout_handle == NULL) {
            return -1;
        }
    }
    if (exc != NULL) {
        return tls_fatal_error(self, exc, "Fatal error on transport");
    }
    PyObject *close = PyObject_GetAttr(self->transport, self->ts->str_close);
    PyObject *handle = close ? tls_call1(self->loop, self->ts->str_call_soon, close) : NULL;
    Py_XDECREF(close);
    return tls_done(handle);
}

static int
tls_do_shutdown(zl_tls *self)
{
    if (!self->eof_received) {
        tls_before_ssl_call(self);
        PyObject *res = tls_call0(self->sslsock, self->ts->str_shutdown);
        if (res == NULL) {
            if (tls_clear_again(self)) {
                return tls_process_outgoing(self);
            }
            if (!PyErr_ExceptionMatches(self->ts->ssl_error)) {
                return -1;
            }
            PyObject *exc = zl_err_fetch();
            int rc = tls_on_shutdown_complete(self, exc);
            Py_DECREF(exc);
            return rc;
        }
        Py_DECREF(res);
    }
    if (tls_process_outgoing(self) < 0 || tls_call_eof_received(self) < 0) {
        return -1;
    }
    return tls_on_shutdown_complete(self, NULL);
}

static int
tls_do_flush(zl_tls *self)
{
    if (tls_do_read(self) < 0 || tls_set_state(self, ZL_TLS_SHUTDOWN) < 0) {
        return -1;
    }
    return tls_do_shutdown(self);
}

int
zl_tls_abort(zl_tls *self, PyObject *exc)
{
    if (tls_set_state(self, ZL_TLS_UNWRAPPED) < 0 || self->transport == NULL) {
        return self->transport == NULL ? 0 : -1;
    }
    if (exc == NULL || exc == Py_None) {
        return tls_done(tls_call0(self->transport, self->ts->str_abort));
    }
    return tls_done(tls_call1(self->transport, self->ts->str_force_close, exc));
}

int
zl_tls_start_shutdown(zl_tls *self)
{
    if (self->state == ZL_TLS_FLUSHING || self->state == ZL_TLS_SHUTDOWN || self->state == ZL_TLS_UNWRAPPED) {
        return 0;
    }
    if (self->app_transport != NULL) {
        self->app_transport->closed = 1;
    }
    if (self->state == ZL_TLS_DO_HANDSHAKE) {
        return zl_tls_abort(self, NULL);
    }
    if (tls_set_state(self, ZL_TLS_FLUSHING) < 0) {
        return -1;
    }
    Py_XSETREF(self->shutdown_timeout_handle,
               tls_schedule_method(self, "_check_shutdown_timeout", self->shutdown_timeout));
    if (self->shutdown_timeout_handle == NULL) {
        return -1;
    }
    return tls_do_flush(self);
}

/* ------------------------------------------------------------------ handshake */

static int
tls_handshake_failed(zl_tls *self, PyObject *exc)
{
    if (tls_set_state(self, ZL_TLS_UNWRAPPED) < 0) {
        return -1;
    }
    int cert = PyObject_IsInstance(exc, self->ts->certificate_error);
    if (cert < 0) {
        return -1;
    }
    const char *message = cert ? "SSL handshake failed on verifying the certificate" : "SSL handshake failed";
    if (tls_fatal_error(self, exc, message) < 0) {
        return -1;
    }
    return tls_wakeup_waiter(self, exc);
}

/* The extra info the handshake makes available: peercert, cipher, compression, ssl_object. */
static int
tls_add_handshake_extra(zl_tls *self, PyObject *peercert)
{
    PyObject *cipher = tls_call0(self->sslobj, self->ts->str_cipher);
    PyObject *compression = cipher ? tls_call0(self->sslobj, self->ts->str_compression) : NULL;
    int rc = compression == NULL || PyDict_SetItemString(self->extra, "peercert", peercert) < 0 ||
                     PyDict_SetItemString(self->extra, "cipher", cipher) < 0 ||
                     PyDict_SetItemString(self->extra, "compression", compression) < 0 ||
                     PyDict_SetItemString(self->extra, "ssl_object", self->sslobj) < 0
                 ? -1
                 : 0;
    Py_XDECREF(cipher);
    Py_XDECREF(compression);
    return rc;
}

static int
tls_log_handshake_time(zl_tls *self)
{
    int debug = tls_debug(self);
    if (debug <= 0 || self->handshake_start_time == NULL) {
        return debug;
    }
    PyObject *now = tls_call0(self->loop, self->ts->str_time);
    PyObject *dt = now ? PyNumber_Subtract(now, self->handshake_start_time) : NULL;
    Py_XDECREF(now);
    int rc = dt == NULL ? -1 : tls_log(self, "handshake_done", "", dt);
    Py_XDECREF(dt);
    return rc;
}

static int
tls_on_handshake_complete(zl_tls *self, PyObject *handshake_exc)
{
    if (tls_cancel_timer(self, &self->handshake_timeout_handle) < 0) {
        return -1;
    }
    if (handshake_exc != NULL) {
        return tls_handshake_failed(self, handshake_exc);
    }
    PyObject *peercert = NULL;
    if (tls_set_state(self, ZL_TLS_WRAPPED) < 0 || (peercert = tls_call0(self->sslobj, self->ts->str_getpeercert)) == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_Exception)) {
            return -1;
        }
        PyObject *exc = zl_err_fetch();
        int rc = tls_handshake_failed(self, exc);
        Py_DECREF(exc);
        return rc;
    }
    int rc = tls_log_handshake_time(self) < 0 ? -1 : tls_add_handshake_extra(self, peercert);
    Py_DECREF(peercert);
    if (rc < 0) {
        return -1;
    }
    if (self->app_state == ZL_TLS_APP_INIT) {
        self->app_state = ZL_TLS_APP_CON_MADE;
        if (tls_done(tls_call1(self->app_protocol, self->ts->str_connection_made, (PyObject *)self->app_transport)) < 0) {
            return -1;
        }
    }
    if (tls_wakeup_waiter(self, NULL) < 0) {
        return -1;
    }
    return tls_do_read(self);
}

static int
tls_do_handshake(zl_tls *self)
{
    tls_before_ssl_call(self);
    PyObject *res = tls_call0(self->sslsock, self->ts->str_do_handshake);
    if (res != NULL) {
        Py_DECREF(res);
        return tls_on_handshake_complete(self, NULL);
    }
    if (tls_clear_again(self)) {
        return tls_process_outgoing(self);
    }
    if (!PyErr_ExceptionMatches(self->ts->ssl_error)) {
        return -1;
    }
    PyObject *exc = zl_err_fetch();
    int rc = tls_on_handshake_complete(self, exc);
    Py_DECREF(exc);
    return rc;
}

static int
tls_start_handshake(zl_tls *self)
{
    int debug = tls_debug(self);
    if (debug < 0) {
        return -1;
    }
    Py_CLEAR(self->handshake_start_time);
    if (debug) {
        if (tls_log(self, "debug", "%r starts SSL handshake", NULL) < 0 ||
            (self->handshake_start_time = tls_call0(self->loop, self->ts->str_time)) == NULL) {
            return -1;
        }
    }
    if (tls_set_state(self, ZL_TLS_DO_HANDSHAKE) < 0) {
        return -1;
    }
    Py_XSETREF(self->handshake_timeout_handle,
               tls_schedule_method(self, "_check_handshake_timeout", self->handshake_timeout));
    if (self->handshake_timeout_handle == NULL) {
        return -1;
    }
    return tls_do_handshake(self);
}

/* ------------------------------------------------------------------ what the stream underneath calls */

/* The state machine's step for new ciphertext in the incoming BIO; on failure the stream is closed (asyncio's
 * buffer_updated: `except Exception: self._transport.close(); raise`). */
static int
tls_on_incoming(zl_tls *self)
{
    int rc = 0;
    switch (self->state) {
    case ZL_TLS_DO_HANDSHAKE:
        rc = tls_do_handshake(self);
        break;
    case ZL_TLS_WRAPPED:
        rc = tls_do_read(self);
        break;
    case ZL_TLS_FLUSHING:
        rc = tls_do_flush(self);
        break;
    case ZL_TLS_SHUTDOWN:
        rc = tls_do_shutdown(self);
        break;
    default:
        break;
    }
    if (rc < 0 && self->transport != NULL && PyErr_ExceptionMatches(PyExc_Exception)) {
        PyObject *exc = zl_err_fetch();
        PyObject *res = tls_call0(self->transport, self->ts->str_close);
        Py_XDECREF(res);
        if (res == NULL) {
            Py_DECREF(exc);
            return -1;
        }
        zl_err_restore(exc);
    }
    return rc;
}

/* The n bytes of ciphertext at buf (exported by view) into the incoming BIO, then the state machine's step. */
static int
tls_feed(zl_tls *self, PyObject *view, const char *buf, Py_ssize_t n)
{
    zl_tls_state *ts = self->ts;
    PyObject *args[2] = {self->incoming, view};
    if (tls_done(zl_tls_call_method(ts->bio_write, ts->memory_bio_type, ts->str_write, args, 2)) < 0) {
        self->incoming_known = -1;
        return -1;
    }
    self->one_record = self->incoming_known == 0 && tls_is_one_record(buf, n) ? ZL_TLS_ONE_RECORD_FED
                                                                               : ZL_TLS_ONE_RECORD_NONE;
    if (self->incoming_known >= 0) {
        self->incoming_known += n;
    }
    return tls_on_incoming(self);
}

int
zl_tls_data_received(PyObject *protocol, const char *buf, Py_ssize_t n)
{
    zl_tls *self = (zl_tls *)protocol;
    PyObject *view = PyMemoryView_FromMemory((char *)buf, n, PyBUF_READ);
    if (view == NULL) {
        return -1;
    }
    Py_INCREF(self);   /* the application may drop the last reference to the stream meanwhile */
    int rc = tls_feed(self, view, buf, n);
    Py_DECREF(view);
    Py_DECREF(self);
    return rc;
}

static PyObject *
tls_py_connection_made(zl_tls *self, PyObject *transport)
{
    zl_state *state = PyType_GetModuleState(Py_TYPE(self));
    Py_INCREF(transport);
    Py_XSETREF(self->transport, transport);
    self->transport_is_stream = state != NULL && state->stream_type != NULL && Py_IS_TYPE(transport, state->stream_type);
    return zl_tls_none_unless(tls_start_handshake(self));
}

static int
tls_connection_lost_app(zl_tls *self, PyObject *exc)
{
    if (self->state == ZL_TLS_DO_HANDSHAKE ||
        (self->app_state != ZL_TLS_APP_CON_MADE && self->app_state != ZL_TLS_APP_EOF)) {
        return 0;
    }
    self->app_state = ZL_TLS_APP_CON_LOST;
    PyObject *method = PyObject_GetAttr(self->app_protocol, self->ts->str_connection_lost);
    PyObject *handle = method ? tls_call2(self->loop, self->ts->str_call_soon, method, exc) : NULL;
    Py_XDECREF(method);
    return tls_done(handle);
}

static PyObject *
tls_py_connection_lost(zl_tls *self, PyObject *exc)
{
    if (PyList_SetSlice(self->write_backlog, 0, PY_SSIZE_T_MAX, NULL) < 0 ||
        tls_done(tls_call0(self->outgoing, self->ts->str_read)) < 0) {
        return NULL;
    }
    self->write_buffer_size = 0;
    self->conn_lost++;
    if (self->app_transport != NULL) {
        self->app_transport->closed = 1;
    }
    if (tls_connection_lost_app(self, exc) < 0) {
        return NULL;
    }
    self->state = ZL_TLS_UNWRAPPED;
    Py_CLEAR(self->transport);
    Py_CLEAR(self->app_transport);
    Py_CLEAR(self->app_protocol);
    Py_CLEAR(self->app_data_received);
    Py_CLEAR(self->app_get_buffer);
    Py_CLEAR(self->app_buffer_updated);
    if (tls_wakeup_waiter(self, exc == Py_None ? NULL : exc) < 0 ||
        tls_cancel_timer(self, &self->shutdown_timeout_handle) < 0 ||
        tls_cancel_timer(self, &self->handshake_timeout_handle) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static int
tls_eof_steps(zl_tls *self, int *keep_open)
{
    switch (self->state) {
    case ZL_TLS_DO_HANDSHAKE: {
        PyObject *exc = PyObject_CallNoArgs(PyExc_ConnectionResetError);
        if (exc == NULL) {
            return -1;
        }
        int rc = tls_on_handshake_complete(self, exc);
        Py_DECREF(exc);
        return rc;
    }
    case ZL_TLS_WRAPPED:
        if (tls_set_state(self, ZL_TLS_FLUSHING) < 0) {
            return -1;
        }
        if (self->app_reading_paused) {
            *keep_open = 1;
            return 0;
        }
        return tls_do_flush(self);
    case ZL_TLS_FLUSHING:
        if (tls_do_write(self) < 0 || tls_set_state(self, ZL_TLS_SHUTDOWN) < 0) {
            return -1;
        }
        return tls_do_shutdown(self);
    case ZL_TLS_SHUTDOWN:
        return tls_do_shutdown(self);
    default:
        return 0;
    }
}

static PyObject *
tls_py_eof_received(zl_tls *self, PyObject *Py_UNUSED(ignored))
{
    self->eof_received = 1;
    int keep_open = 0;
    int debug = tls_debug(self);
    int rc = debug < 0 ? -1 : debug ? tls_log(self, "debug", "%r received EOF", NULL) : 0;
    if (rc == 0) {
        rc = tls_eof_steps(self, &keep_open);
    }
    if (rc < 0) {
        if (self->transport != NULL && PyErr_ExceptionMatches(PyExc_Exception)) {
            PyObject *exc = zl_err_fetch();
            PyObject *res = tls_call0(self->transport, self->ts->str_close);
            Py_XDECREF(res);
            if (res == NULL) {
                Py_DECREF(exc);
                return NULL;
            }
            zl_err_restore(exc);
        }
        return NULL;
    }
    if (keep_open) {
        Py_RETURN_TRUE;
    }
    Py_RETURN_NONE;
}

/* get_buffer/buffer_updated: for a transport other than zloop's stream (start_tls over another transport). */
static PyObject *
tls_py_get_buffer(zl_tls *self, PyObject *arg)
{
    Py_ssize_t want = PyLong_AsSsize_t(arg);
    if (want == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (want <= 0 || want > ZL_TLS_MAX_SIZE) {
        want = ZL_TLS_MAX_SIZE;
    }
    if (self->read_bytearray == NULL || PyByteArray_GET_SIZE(self->read_bytearray) < want) {
        Py_XSETREF(self->read_bytearray, PyByteArray_FromStringAndSize(NULL, want));
        if (self->read_bytearray == NULL) {
            return NULL;
        }
    }
    return PyMemoryView_FromObject(self->read_bytearray);
}

static PyObject *
tls_py_buffer_updated(zl_tls *self, PyObject *arg)
{
    Py_ssize_t n = PyLong_AsSsize_t(arg);
    if (n == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (self->read_bytearray == NULL || n < 0 || n > PyByteArray_GET_SIZE(self->read_bytearray)) {
        PyErr_SetString(PyExc_ValueError, "buffer_updated() without a matching get_buffer()");
        return NULL;
    }
    PyObject *copy = PyBytes_FromStringAndSize(PyByteArray_AS_STRING(self->read_bytearray), n);
    if (copy == NULL) {
        return NULL;
    }
    Py_INCREF(self);
    int rc = tls_feed(self, copy, PyBytes_AS_STRING(copy), n);
    Py_DECREF(copy);
    Py_DECREF(self);
    return zl_tls_none_unless(rc);
}

static PyObject *
tls_py_pause_writing(zl_tls *self, PyObject *Py_UNUSED(ignored))
{
    self->ssl_writing_paused = 1;
    Py_RETURN_NONE;
}

static PyObject *
tls_py_resume_writing(zl_tls *self, PyObject *Py_UNUSED(ignored))
{
    self->ssl_writing_paused = 0;
    return zl_tls_none_unless(tls_process_outgoing(self));
}

/* ------------------------------------------------------------------ scheduled steps */

static PyObject *
tls_py_do_read(zl_tls *self, PyObject *Py_UNUSED(ignored))
{
    return zl_tls_none_unless(tls_do_read(self));
}

static PyObject *
tls_py_check_handshake_timeout(zl_tls *self, PyObject *Py_UNUSED(ignored))
{
    if (self->state != ZL_TLS_DO_HANDSHAKE) {
        Py_RETURN_NONE;
    }
    PyObject *exc = PyObject_CallFunction(PyExc_ConnectionAbortedError, "N",
                                          PyUnicode_FromFormat("SSL handshake is taking longer than %S seconds: "
                                                               "aborting the connection",
                                                               self->handshake_timeout));
    if (exc == NULL) {
        return NULL;
    }
    int rc = tls_fatal_error(self, exc, "Fatal error on transport");
    Py_DECREF(exc);
    return zl_tls_none_unless(rc);
}

static PyObject *
tls_py_check_shutdown_timeout(zl_tls *self, PyObject *Py_UNUSED(ignored))
{
    if ((self->state != ZL_TLS_FLUSHING && self->state != ZL_TLS_SHUTDOWN) || self->transport == NULL) {
        Py_RETURN_NONE;
    }
    PyObject *exc = PyObject_CallFunction(self->ts->timeout_error, "s", "SSL shutdown timed out");
    if (exc == NULL) {
        return NULL;
    }
    PyObject *res = tls_call1(self->transport, self->ts->str_force_close, exc);
    Py_DECREF(exc);
    return res;
}

/* resume_reading()'s step on the next iteration. */
static PyObject *
tls_py_resume_app_reading(zl_tls *self, PyObject *Py_UNUSED(ignored))
{
    switch (self->state) {
    case ZL_TLS_WRAPPED:
        return zl_tls_none_unless(tls_do_read(self));
    case ZL_TLS_FLUSHING:
        return zl_tls_none_unless(tls_do_flush(self));
    case ZL_TLS_SHUTDOWN:
        return zl_tls_none_unless(tls_do_shutdown(self));
    default:
        Py_RETURN_NONE;
    }
}

int
zl_tls_resume_reading(zl_tls *self)
{
    if (!self->app_reading_paused) {
        return 0;
    }
    self->app_reading_paused = 0;
    return tls_done(tls_schedule_method(self, "_resume_app_reading", NULL));
}

/* ------------------------------------------------------------------ the application protocol */

int
zl_tls_set_app_protocol(zl_tls *self, PyObject *app_protocol)
{
    zl_state *state = PyType_GetModuleState(Py_TYPE(self));
    int buffered = PyObject_HasAttr(app_protocol, self->ts->str_get_buffer);
    if (buffered && (buffered = PyObject_IsInstance(app_protocol, state->buffered_protocol_type)) < 0) {
        return -1;
    }
    PyObject *get_buffer = NULL, *buffer_updated = NULL, *data_received = NULL;
    if (buffered) {
        get_buffer = PyObject_GetAttr(app_protocol, self->ts->str_get_buffer);
        buffer_updated = get_buffer ? PyObject_GetAttr(app_protocol, self->ts->str_buffer_updated) : NULL;
        if (buffer_updated == NULL) {
            Py_XDECREF(get_buffer);
            return -1;
        }
    } else if ((data_received = PyObject_GetAttr(app_protocol, self->ts->str_data_received)) == NULL) {
        PyErr_Clear();   /* asyncio looks it up when data comes: the AttributeError is raised then */
    }
    Py_INCREF(app_protocol);
    Py_XSETREF(self->app_protocol, app_protocol);
    Py_XSETREF(self->app_get_buffer, get_buffer);
    Py_XSETREF(self->app_buffer_updated, buffer_updated);
    Py_XSETREF(self->app_data_received, data_received);
    self->app_is_buffer = (unsigned char)buffered;
    return 0;
}

/* ------------------------------------------------------------------ creation and lifetime */

static int
tls_init_fields(zl_tls *self, PyObject *const *args, int server_side, int call_connection_made)
{
    /* loop, app_protocol, sslcontext, sslobj, incoming, outgoing, waiter, ..., handshake, shutdown timeouts */
    self->loop = Py_NewRef(args[0]);
    self->sslcontext = Py_NewRef(args[2]);
    self->sslobj = Py_NewRef(args[3]);
    self->incoming = Py_NewRef(args[4]);
    self->outgoing = Py_NewRef(args[5]);
    self->waiter = args[6] == Py_None ? NULL : Py_NewRef(args[6]);
    self->handshake_timeout = Py_NewRef(args[9]);
    self->shutdown_timeout = Py_NewRef(args[10]);
    self->server_side = (unsigned char)server_side;
    self->app_state = call_connection_made ? ZL_TLS_APP_INIT : ZL_TLS_APP_CON_MADE;
    self->incoming_known = -1;
    self->incoming_high = 256 * 1024;
    self->incoming_low = self->incoming_high / 4;
    self->outgoing_high = 512 * 1024;
    self->outgoing_low = self->outgoing_high / 4;
    self->sslsock = PyObject_GetAttrString(self->sslobj, "_sslobj");
    self->write_backlog = self->sslsock ? PyList_New(0) : NULL;
    self->extra = self->write_backlog ? PyDict_New() : NULL;
    if (self->extra == NULL || PyDict_SetItemString(self->extra, "sslcontext", self->sslcontext) < 0 ||
        zl_tls_set_app_protocol(self, args[1]) < 0) {
        return -1;
    }
    self->app_transport = zl_tls_transport_new(self);
    self->app_transport_created = 1;
    return self->app_transport == NULL ? -1 : 0;
}

/* SSLProtocol(loop, app_protocol, sslcontext, sslobj, incoming, outgoing, waiter, server_side,
 *             call_connection_made, ssl_handshake_timeout, ssl_shutdown_timeout): zloop._tls checks the
 * arguments and makes the SSLObject (sslcontext.wrap_bio) as SSLProtocol.__init__ does. */
static PyObject *
tls_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    PyObject *argv[11];
    int server_side, call_connection_made;
    if (kwds != NULL && PyDict_GET_SIZE(kwds) > 0) {
        PyErr_SetString(PyExc_TypeError, "SSLProtocol() takes positional arguments only");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "OOOOOOOppOO:SSLProtocol", &argv[0], &argv[1], &argv[2], &argv[3], &argv[4],
                          &argv[5], &argv[6], &server_side, &call_connection_made, &argv[9], &argv[10])) {
        return NULL;
    }
    zl_state *state = PyType_GetModuleState(type);
    zl_tls *self = (zl_tls *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->ts = state->tls;
    if (tls_init_fields(self, argv, server_side, call_connection_made) < 0) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static int
tls_traverse(zl_tls *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->loop);
    Py_VISIT(self->app_protocol);
    Py_VISIT(self->app_data_received);
    Py_VISIT(self->app_get_buffer);
    Py_VISIT(self->app_buffer_updated);
    Py_VISIT(self->app_transport);
    Py_VISIT(self->transport);
    Py_VISIT(self->sslcontext);
    Py_VISIT(self->sslobj);
    Py_VISIT(self->sslsock);
    Py_VISIT(self->incoming);
    Py_VISIT(self->outgoing);
    Py_VISIT(self->extra);
    Py_VISIT(self->waiter);
    Py_VISIT(self->write_backlog);
    Py_VISIT(self->handshake_timeout_handle);
    Py_VISIT(self->shutdown_timeout_handle);
    return 0;
}

static int
tls_clear(zl_tls *self)
{
    Py_CLEAR(self->loop);
    Py_CLEAR(self->app_protocol);
    Py_CLEAR(self->app_data_received);
    Py_CLEAR(self->app_get_buffer);
    Py_CLEAR(self->app_buffer_updated);
    Py_CLEAR(self->app_transport);
    Py_CLEAR(self->transport);
    Py_CLEAR(self->sslcontext);
    Py_CLEAR(self->sslobj);
    Py_CLEAR(self->sslsock);
    Py_CLEAR(self->incoming);
    Py_CLEAR(self->outgoing);
    Py_CLEAR(self->extra);
    Py_CLEAR(self->waiter);
    Py_CLEAR(self->write_backlog);
    Py_CLEAR(self->handshake_timeout_handle);
    Py_CLEAR(self->shutdown_timeout_handle);
    Py_CLEAR(self->handshake_timeout);
    Py_CLEAR(self->shutdown_timeout);
    Py_CLEAR(self->handshake_start_time);
    Py_CLEAR(self->read_bytearray);
    return 0;
}

static void
tls_dealloc(zl_tls *self)
{
    PyTypeObject *type = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    if (self->weakreflist != NULL) {
        PyObject_ClearWeakRefs((PyObject *)self);
    }
    tls_clear(self);
    type->tp_free(self);
    Py_DECREF(type);
}

/* ------------------------------------------------------------------ attributes */

static PyObject *
tls_get_app_transport(zl_tls *self, void *Py_UNUSED(closure))
{
    return zl_ref_or_none((PyObject *)self->app_transport);
}

static PyObject *
tls_get_app_protocol(zl_tls *self, void *Py_UNUSED(closure))
{
    return zl_ref_or_none(self->app_protocol);
}

static PyObject *
tls_get_transport(zl_tls *self, void *Py_UNUSED(closure))
{
    return zl_ref_or_none(self->transport);
}

static PyObject *
tls_get_state(zl_tls *self, void *Py_UNUSED(closure))
{
    return PyUnicode_FromString(tls_state_names[self->state]);
}

static PyMethodDef tls_methods[] = {
    {"connection_made", (PyCFunction)tls_py_connection_made, METH_O, "The stream is up: start the handshake."},
    {"connection_lost", (PyCFunction)tls_py_connection_lost, METH_O, "The stream is gone."},
    {"eof_received", (PyCFunction)tls_py_eof_received, METH_NOARGS, "The peer closed its side of the stream."},
    {"get_buffer", (PyCFunction)tls_py_get_buffer, METH_O, "Where the next ciphertext goes."},
    {"buffer_updated", (PyCFunction)tls_py_buffer_updated, METH_O, "n bytes of ciphertext arrived."},
    {"pause_writing", (PyCFunction)tls_py_pause_writing, METH_NOARGS, "The stream's buffer is full."},
    {"resume_writing", (PyCFunction)tls_py_resume_writing, METH_NOARGS, "The stream's buffer drained."},
    {"_do_read", (PyCFunction)tls_py_do_read, METH_NOARGS, NULL},
    {"_check_handshake_timeout", (PyCFunction)tls_py_check_handshake_timeout, METH_NOARGS, NULL},
    {"_check_shutdown_timeout", (PyCFunction)tls_py_check_shutdown_timeout, METH_NOARGS, NULL},
    {"_resume_app_reading", (PyCFunction)tls_py_resume_app_reading, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef tls_getset[] = {
    {"_app_transport", (getter)tls_get_app_transport, NULL, NULL, NULL},
    {"_app_protocol", (getter)tls_get_app_protocol, NULL, NULL, NULL},
    {"_transport", (getter)tls_get_transport, NULL, NULL, NULL},
    {"_state", (getter)tls_get_state, NULL, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef tls_members[] = {
    {"__weaklistoffset__", T_PYSSIZET, offsetof(zl_tls, weakreflist), READONLY, NULL},
    {"_incoming", T_OBJECT, offsetof(zl_tls, incoming), READONLY, NULL},
    {"_outgoing", T_OBJECT, offsetof(zl_tls, outgoing), READONLY, NULL},
    {"_sslobj", T_OBJECT, offsetof(zl_tls, sslobj), READONLY, NULL},
    {"_sslcontext", T_OBJECT, offsetof(zl_tls, sslcontext), READONLY, NULL},
    {"_extra", T_OBJECT, offsetof(zl_tls, extra), READONLY, NULL},
    {"_server_side", T_BOOL, offsetof(zl_tls, server_side), READONLY, NULL},
    {"_app_reading_paused", T_BOOL, offsetof(zl_tls, app_reading_paused), READONLY, NULL},   /* test_gh140947 */
    {"_ssl_reading_paused", T_BOOL, offsetof(zl_tls, ssl_reading_paused), READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyType_Slot tls_slots[] = {
    {Py_tp_doc, "asyncio's SSLProtocol in C: TLS over a stream transport (made by zloop's TLS paths)."},
    {Py_tp_new, tls_new},
    {Py_tp_dealloc, tls_dealloc},
    {Py_tp_traverse, tls_traverse},
    {Py_tp_clear, tls_clear},
    {Py_tp_methods, tls_methods},
    {Py_tp_getset, tls_getset},
    {Py_tp_members, tls_members},
    {0, NULL},
};

PyType_Spec zl_tls_protocol_spec = {
    .name = "zloop.SSLProtocol",
    .basicsize = sizeof(zl_tls),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .slots = tls_slots,
};
