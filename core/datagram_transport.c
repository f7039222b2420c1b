/* core/datagram_transport.c — the datagram transport (UDP and Unix datagram sockets) in C: the I/O dispatch
 * receives straight into protocol.datagram_received, sendto() sends at once and queues only on EAGAIN (through the
 * ring: queues, and the queue goes out before the next poll, core/datagram_ring_send.c). */
#include "datagram_queue.h"
#include "datagram_ring.h"
#include "sock_addr.h"
#include "transport_common.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stddef.h>
#include <string.h>
#include <structmember.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define ZL_DGRAM_MAX_SIZE (256 * 1024)            /* asyncio's max_size for one recvfrom */
#define ZL_DGRAM_UDP4_MAX 65507                   /* the largest UDP payload over IPv4 */
#define ZL_DGRAM_UDP6_MAX 65527                   /* and over IPv6 (no jumbograms) */

#if PY_VERSION_HEX >= 0x030D0000
#define ZL_DGRAM_HEADER_SIZE 8     /* 3.13 counts 8 bytes of header per queued datagram */
#define ZL_DGRAM_SEND_EMPTY 1      /* and sends empty datagrams, which earlier versions drop */
#else
#define ZL_DGRAM_HEADER_SIZE 0
#define ZL_DGRAM_SEND_EMPTY 0
#endif

typedef struct zl_datagram {
    zl_transport base;               /* loop, socket, protocol, flags, water marks: must come first */
    PyObject *datagram_received;     /* protocol.datagram_received */
    PyObject *address;               /* remote address given at creation (Py_None: none) */
    PyObject *rx_addr;               /* the last sender's address object ... */
    zl_sockaddr rx_sa;               /* ... and its C form, so a peer that keeps sending costs no conversion */
    PyObject *tx_addr;               /* the last destination converted to C ... */
    zl_sockaddr tx_sa;               /* ... and that form */
    zl_dgram_queue out;
    zl_dgram_ring ring;              /* the completion path (datagram_ring.c, datagram_ring_send.c), when in use */
    int family;
    unsigned char has_address;       /* address is truthy: sendto() checks and uses it */
    unsigned char use_send;          /* extra['peername'] is truthy: send(), not sendto(), as asyncio does */
    unsigned char native_addrs;      /* AF_INET, AF_INET6 or AF_UNIX: addresses converted in C */
} zl_datagram;

static const zl_sockaddr no_sockaddr;

/* ------------------------------------------------------------------ addresses */

static int
dgram_int_in_range(PyObject *obj, long max, long *value)
{
    if (!PyLong_CheckExact(obj)) {
        return 0;
    }
    int overflow;
    *value = PyLong_AsLongAndOverflow(obj, &overflow);
    if (*value == -1 && PyErr_Occurred()) {
        PyErr_Clear();
        return 0;
    }
    return !overflow && *value >= 0 && *value <= max;
}

/* An IP literal host as UTF-8 without embedded NULs, or NULL. */
static const char *
dgram_host_text(PyObject *host)
{
    Py_ssize_t len;
    const char *text = PyUnicode_CheckExact(host) ? PyUnicode_AsUTF8AndSize(host, &len) : NULL;
    if (text == NULL) {
        PyErr_Clear();
        return NULL;
    }
    return strlen(text) == (size_t)len ? text : NULL;
}

static int
dgram_inet_from_py(int family, PyObject *addr, zl_sockaddr *out)
{
    if (!PyTuple_CheckExact(addr)) {
        return 0;
    }
    Py_ssize_t n = PyTuple_GET_SIZE(addr);
    if (family == AF_INET ? n != 2 : (n < 2 || n > 4)) {
        return 0;
    }
    const char *host = dgram_host_text(PyTuple_GET_ITEM(addr, 0));
    long port, flowinfo = 0, scope_id = 0;
    if (host == NULL || !dgram_int_in_range(PyTuple_GET_ITEM(addr, 1), 0xffff, &port)) {
        return 0;
    }
    if (family == AF_INET) {
        struct sockaddr_in *sin = (struct sockaddr_in *)&out->storage;
        if (inet_pton(AF_INET, host, &sin->sin_addr) != 1) {
            return 0;
        }
        sin->sin_family = AF_INET;
        sin->sin_port = htons((uint16_t)port);
        out->len = sizeof(*sin);
        return 1;
    }
    if ((n > 2 && !dgram_int_in_range(PyTuple_GET_ITEM(addr, 2), 0xfffff, &flowinfo)) ||
        (n > 3 && !dgram_int_in_range(PyTuple_GET_ITEM(addr, 3), 0xffffffffL, &scope_id))) {
        return 0;
    }
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&out->storage;
    if (inet_pton(AF_INET6, host, &sin6->sin6_addr) != 1) {
        return 0;
    }
    sin6->sin6_family = AF_INET6;
    sin6->sin6_port = htons((uint16_t)port);
    sin6->sin6_flowinfo = htonl((uint32_t)flowinfo);
    sin6->sin6_scope_id = (uint32_t)scope_id;
    out->len = sizeof(*sin6);
    return 1;
}

/* A path (str in the filesystem encoding, or bytes; a leading NUL is Linux's abstract namespace). */
static int
dgram_unix_from_py(PyObject *addr, zl_sockaddr *out)
{
    PyObject *path;
    if (PyUnicode_CheckExact(addr)) {
        if ((path = PyUnicode_EncodeFSDefault(addr)) == NULL) {
            PyErr_Clear();
            return 0;
        }
    } else if (PyBytes_CheckExact(addr)) {
        path = addr;
        Py_INCREF(path);
    } else {
        return 0;
    }
    struct sockaddr_un *sun = (struct sockaddr_un *)&out->storage;
    const char *text = PyBytes_AS_STRING(path);
    size_t len = (size_t)PyBytes_GET_SIZE(path);
    int abstract = len > 0 && text[0] == '\0';
    int fits = abstract ? len <= sizeof(sun->sun_path) : len < sizeof(sun->sun_path);
    if (fits) {
        sun->sun_family = AF_UNIX;
        memcpy(sun->sun_path, text, len);
        out->len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len + !abstract);
    }
    Py_DECREF(path);
    return fits;
}

/* The C form of a Python address as socket.sendto() would build it; 0 when that needs Python (host names,
 * '<broadcast>', odd types) — the caller then lets the socket module do it, errors included. */
static int
dgram_sockaddr_from_py(int family, PyObject *addr, zl_sockaddr *out)
{
    memset(out, 0, sizeof(*out));
    if (family == AF_INET || family == AF_INET6) {
        return dgram_inet_from_py(family, addr, out);
    }
    if (family == AF_UNIX) {
        return dgram_unix_from_py(addr, out);
    }
    return 0;
}

/* The Python form of an address recvfrom() gave, as the socket module returns it. */
static PyObject *
dgram_sockaddr_to_py(const zl_sockaddr *sa)
{
    return zl_sock_addr_to_py(&sa->storage, sa->len);
}

/* The sender's address object: the previous one when the same peer sent again. New reference. */
static PyObject *
dgram_sender(zl_datagram *self, const zl_sockaddr *from)
{
    if (self->rx_addr != NULL && self->rx_sa.len == from->len &&
        memcmp(&self->rx_sa.storage, &from->storage, from->len) == 0) {
        Py_INCREF(self->rx_addr);
        return self->rx_addr;
    }
    PyObject *addr = dgram_sockaddr_to_py(from);
    if (addr == NULL) {
        return NULL;
    }
    Py_INCREF(addr);
    Py_XSETREF(self->rx_addr, addr);
    self->rx_sa = *from;
    /* Replies usually go back to the sender: that object's C form is known already. */
    Py_INCREF(addr);
    Py_XSETREF(self->tx_addr, addr);
    self->tx_sa = *from;
    return addr;
}

/* The C form of a destination, converted once per address object; &no_sockaddr when Python must send. */
static const zl_sockaddr *
dgram_destination(zl_datagram *self, PyObject *addr)
{
    if (self->use_send || !self->native_addrs) {
        return &no_sockaddr;
    }
    if (addr == self->tx_addr) {
        return &self->tx_sa;
    }
    zl_sockaddr sa;
    if (!dgram_sockaddr_from_py(self->family, addr, &sa)) {
        return &no_sockaddr;
    }
    Py_INCREF(addr);
    Py_XSETREF(self->tx_addr, addr);
    self->tx_sa = sa;
    return &self->tx_sa;
}

/* ------------------------------------------------------------------ errors */

/* The raised exception goes to the loop's exception handler; the transport goes on. asyncio runs these
 * callbacks from a Handle, whose errors end there too. -1 for SystemExit/KeyboardInterrupt. */
static int
dgram_report_callback_error(zl_datagram *self, const char *callback)
{
    if (zl_err_stops_loop()) {
        return -1;
    }
    PyObject *exc = zl_err_fetch();
    PyObject *message = PyUnicode_FromFormat("Exception in callback %s.%s()", Py_TYPE(self)->tp_name, callback);
    PyObject *res = message == NULL ? NULL
                                    : PyObject_CallFunction(self->base.loop->state->transport_protocol_error, "OOO",
                                                            (PyObject *)self, exc, message);
    Py_XDECREF(message);
    Py_XDECREF(exc);
    if (res == NULL) {
        if (zl_err_stops_loop()) {
            return -1;
        }
        PyErr_WriteUnraisable((PyObject *)self);
    }
    Py_XDECREF(res);
    return 0;
}

/* A send or receive raised: an OSError (ICMP errors such as ECONNREFUSED) goes to protocol.error_received,
 * anything else but SystemExit/KeyboardInterrupt is fatal. 1 when error_received itself raised (exception set),
 * -1 when the loop must stop, 0 otherwise. */
static int
dgram_classify_error(zl_datagram *self, const char *fatal_message)
{
    if (zl_err_stops_loop()) {
        return -1;
    }
    if (!PyErr_ExceptionMatches(PyExc_OSError)) {
        return zl_transport_fatal_error(&self->base, zl_err_fetch(), fatal_message);
    }
    PyObject *exc = zl_err_fetch();
    PyObject *res = PyObject_CallMethod(self->base.protocol, "error_received", "O", exc);
    Py_DECREF(exc);
    if (res == NULL) {
        return 1;
    }
    Py_DECREF(res);
    return 0;
}

/* ------------------------------------------------------------------ reading */

/* One datagram with recvfrom() into the shared buffer. 1 with *data and *addr set, 0 if nothing was there,
 * -1 with an exception set. */
static int
dgram_recv_native(zl_datagram *self, PyObject **data, PyObject **addr)
{
    zl_state *state = self->base.loop->state;
    if (state->recv_buffer == NULL && (state->recv_buffer = PyMem_RawMalloc(ZL_DGRAM_MAX_SIZE)) == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    if (zl_transport_sock_gone(&self->base)) {
        errno = EBADF;
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    zl_sockaddr from;
    ssize_t n;
    do {
        memset(&from, 0, sizeof(from));
        from.len = sizeof(from.storage);
        n = recvfrom(self->base.fd, state->recv_buffer, ZL_DGRAM_MAX_SIZE, 0, (struct sockaddr *)&from.storage,
                     &from.len);
    } while (n < 0 && errno == EINTR);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            return 0;
        }
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    if ((*data = PyBytes_FromStringAndSize(state->recv_buffer, n)) == NULL) {
        return -1;
    }
    if ((*addr = dgram_sender(self, &from)) == NULL) {
        Py_CLEAR(*data);
        return -1;
    }
    return 1;
}

/* Families whose addresses C does not convert: the socket module's recvfrom(). */
static int
dgram_recv_python(zl_datagram *self, PyObject **data, PyObject **addr)
{
    PyObject *res = PyObject_CallMethod(self->base.sock, "recvfrom", "i", ZL_DGRAM_MAX_SIZE);
    if (res == NULL) {
        if (PyErr_ExceptionMatches(PyExc_BlockingIOError) || PyErr_ExceptionMatches(PyExc_InterruptedError)) {
            PyErr_Clear();
            return 0;
        }
        return -1;
    }
    if (!PyTuple_Check(res) || PyTuple_GET_SIZE(res) != 2) {
        Py_DECREF(res);
        PyErr_SetString(PyExc_TypeError, "socket.recvfrom() did not return (data, address)");
        return -1;
    }
    *data = PyTuple_GET_ITEM(res, 0);
    *addr = PyTuple_GET_ITEM(res, 1);
    Py_INCREF(*data);
    Py_INCREF(*addr);
    Py_DECREF(res);
    return 1;
}

/* protocol.datagram_received(data, addr); what it raises goes to the exception handler. -1 only when the loop must
 * stop. */
static int
dgram_deliver(zl_datagram *self, PyObject *data, PyObject *addr)
{
    PyObject *args[2] = {data, addr};
    PyObject *res = PyObject_Vectorcall(self->datagram_received, args, 2, NULL);
    if (res == NULL) {
        return dgram_report_callback_error(self, "_read_ready");
    }
    Py_DECREF(res);
    return 0;
}

/* One datagram to the protocol. -1 only when the loop must stop (SystemExit, KeyboardInterrupt). */
static int
dgram_read_ready(zl_datagram *self)
{
    if (self->base.conn_lost || !self->base.reading) {
        return 0;
    }
    PyObject *data = NULL, *addr = NULL;
    int got = self->native_addrs ? dgram_recv_native(self, &data, &addr) : dgram_recv_python(self, &data, &addr);
    if (got == 0) {
        return 0;
    }
    if (got < 0) {
        int rc = dgram_classify_error(self, "Fatal read error on datagram transport");
        return rc > 0 ? dgram_report_callback_error(self, "_read_ready") : rc;
    }
    int rc = dgram_deliver(self, data, addr);
    Py_DECREF(data);
    Py_DECREF(addr);
    return rc;
}

/* ------------------------------------------------------------------ the completion hooks (datagram_ring.c) */

zl_dgram_ring *
zl_dgram_ring_of(zl_transport *t)
{
    return &((zl_datagram *)t)->ring;
}

PyObject *
zl_dgram_ring_sender(zl_transport *t, const void *name, unsigned name_len)
{
    zl_sockaddr from;
    memset(&from, 0, sizeof(from));
    from.len = name_len <= sizeof(from.storage) ? (socklen_t)name_len : 0;
    memcpy(&from.storage, name, from.len);
    return dgram_sender((zl_datagram *)t, &from);
}

int
zl_dgram_ring_received(zl_transport *t, PyObject *data, PyObject *addr)
{
    return dgram_deliver((zl_datagram *)t, data, addr);
}

/* An errno of the ring, reported as the readiness path reports the same error raised in callback. */
static int
dgram_ring_report(zl_transport *t, int error, const char *fatal_message, const char *callback)
{
    zl_datagram *self = (zl_datagram *)t;
    errno = error;
    PyErr_SetFromErrno(PyExc_OSError);
    int rc = dgram_classify_error(self, fatal_message);
    return rc > 0 ? dgram_report_callback_error(self, callback) : rc;
}

int
zl_dgram_ring_error(zl_transport *t, int error)
{
    return dgram_ring_report(t, error, "Fatal read error on datagram transport", "_read_ready");
}

int
zl_dgram_ring_send_error(zl_transport *t, int error)
{
    return dgram_ring_report(t, error, "Fatal write error on datagram transport", "_sendto_ready");
}

static int
dgram_recv_arm(zl_transport *t)
{
    return zl_dgram_ring_recv_arm(&((zl_datagram *)t)->ring);
}

static int
dgram_recv_disarm(zl_transport *t)
{
    return zl_dgram_ring_recv_disarm(&((zl_datagram *)t)->ring);
}

static int
dgram_on_readable(PyObject *owner, int Py_UNUSED(fd))
{
    return dgram_read_ready((zl_datagram *)owner);
}

/* ------------------------------------------------------------------ writing */

/* Send one datagram: send() when connected, sendto() with a C address, else the socket module's sendto().
 * 1 sent, 0 would block, -1 with an exception set. */
static int
dgram_send_one(zl_datagram *self, PyObject *data, const void *buf, size_t len, PyObject *addr,
               const zl_sockaddr *to)
{
    if (!self->use_send && to->len == 0) {
        PyObject *res = PyObject_CallMethod(self->base.sock, "sendto", "OO", data, addr);
        if (res != NULL) {
            Py_DECREF(res);
            return 1;
        }
        if (PyErr_ExceptionMatches(PyExc_BlockingIOError) || PyErr_ExceptionMatches(PyExc_InterruptedError)) {
            PyErr_Clear();
            return 0;
        }
        return -1;
    }
    if (zl_transport_sock_gone(&self->base)) {
        errno = EBADF;
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    ssize_t n;
    do {
        n = self->use_send ? send(self->base.fd, buf, len, MSG_NOSIGNAL)
                           : sendto(self->base.fd, buf, len, MSG_NOSIGNAL, (const struct sockaddr *)&to->storage,
                                    to->len);
    } while (n < 0 && errno == EINTR);
    if (n >= 0) {
        return 1;
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
        return 0;
    }
    PyErr_SetFromErrno(PyExc_OSError);
    return -1;
}

/* The socket is writable again: send the queue in order until it would block. */
static int
dgram_sendto_ready(zl_datagram *self)
{
    while (self->out.count > 0 && self->base.sock != NULL) {
        /* A copy with its own references: a signal handler run by the socket module may touch the queue. */
        zl_dgram_entry next = self->out.entries[self->out.head];
        Py_INCREF(next.data);
        Py_INCREF(next.addr);
        int sent = dgram_send_one(self, next.data, PyBytes_AS_STRING(next.data), (size_t)PyBytes_GET_SIZE(next.data),
                                  next.addr, &next.to);
        zl_dgram_entry_release(&next);
        if (sent == 0) {
            return 0;     /* still full: try again later */
        }
        if (self->out.count > 0) {
            zl_dgram_entry entry = zl_dgram_queue_pop(&self->out);
            zl_dgram_entry_release(&entry);
        }
        if (sent < 0) {
            /* As asyncio: the datagram is dropped, the rest waits for the next writable event. */
            int rc = dgram_classify_error(self, "Fatal write error on datagram transport");
            return rc > 0 ? dgram_report_callback_error(self, "_sendto_ready") : rc;
        }
    }
    if (zl_transport_maybe_resume_protocol(&self->base, self->out.bytes) < 0) {
        return -1;
    }
    if (self->out.count > 0) {
        return 0;     /* resume_writing() queued more */
    }
    zl_transport_stop_writing(&self->base);
    if (self->base.closing && !self->base.conn_lost) {
        self->base.conn_lost++;
        return zl_transport_call_connection_lost_soon(&self->base, NULL);
    }
    return 0;
}

static int
dgram_on_writable(PyObject *owner, int Py_UNUSED(fd))
{
    return dgram_sendto_ready((zl_datagram *)owner);
}

/* Queue a copy of what could not be sent now (asyncio keeps bytes(data): immutable bytes need no copy). */
static int
dgram_queue_datagram(zl_datagram *self, PyObject *data, Py_buffer *view, PyObject *addr, const zl_sockaddr *to)
{
    PyObject *copy;
    if (PyBytes_CheckExact(data)) {
        copy = data;
        Py_INCREF(copy);
    } else if ((copy = PyBytes_FromStringAndSize(view->buf, view->len)) == NULL) {
        return -1;
    }
    zl_dgram_entry entry = {.data = copy, .addr = addr, .to = *to,
                            .accounted = (size_t)view->len + ZL_DGRAM_HEADER_SIZE};
    int rc = zl_dgram_queue_push(&self->out, entry);
    Py_DECREF(copy);
    if (rc < 0) {
        return -1;
    }
    return zl_transport_maybe_pause_protocol(&self->base, self->out.bytes);
}

static int
dgram_parse_sendto_args(PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames, PyObject **data,
                        PyObject **addr)
{
    *data = nargs > 0 ? args[0] : NULL;
    *addr = nargs > 1 ? args[1] : Py_None;
    Py_ssize_t nkw = kwnames == NULL ? 0 : PyTuple_GET_SIZE(kwnames);
    if (nargs > 2) {
        PyErr_Format(PyExc_TypeError, "sendto() takes at most 2 arguments (%zd given)", nargs + nkw);
        return -1;
    }
    for (Py_ssize_t i = 0; i < nkw; i++) {
        PyObject *name = PyTuple_GET_ITEM(kwnames, i);
        PyObject *value = args[nargs + i];
        if (PyUnicode_CompareWithASCIIString(name, "data") == 0 && nargs < 1) {
            *data = value;
        } else if (PyUnicode_CompareWithASCIIString(name, "addr") == 0 && nargs < 2) {
            *addr = value;
        } else {
            PyErr_Format(PyExc_TypeError, "sendto() got an unexpected or repeated keyword argument '%U'", name);
            return -1;
        }
    }
    if (*data == NULL) {
        PyErr_SetString(PyExc_TypeError, "sendto() missing required argument 'data'");
        return -1;
    }
    return 0;
}

/* The destination to use: the connected address when there is one (a different one is a ValueError). */
static int
dgram_check_destination(zl_datagram *self, PyObject **addr)
{
    if (!self->has_address) {
        return 0;
    }
    if (*addr != Py_None) {
        int same = PyObject_RichCompareBool(self->address, *addr, Py_EQ);
        if (same < 0) {
            return -1;
        }
        if (!same) {
            PyErr_Format(PyExc_ValueError, "Invalid address: must be None or %S", self->address);
            return -1;
        }
    }
    *addr = self->address;
    return 0;
}

/* Send at once when nothing is queued; 1 sent or dealt with, 0 to queue, -1 with an exception set. */
static int
dgram_send_now(zl_datagram *self, PyObject *data, Py_buffer *view, PyObject *addr, const zl_sockaddr *to)
{
    int sent = dgram_send_one(self, data, view->buf, (size_t)view->len, addr, to);
    if (sent > 0) {
        return 1;
    }
    if (sent == 0) {
        return zl_transport_start_writing(&self->base) < 0 ? -1 : 0;
    }
    int rc = dgram_classify_error(self, "Fatal write error on datagram transport");
    return rc == 0 ? 1 : -1;    /* error_received() raising propagates to the caller, as in asyncio */
}

/* Whether len bytes fit one UDP datagram of the socket's family; a larger one is sent at once (when nothing is
 * queued) so its EMSGSIZE reaches error_received inside sendto(), as on asyncio. */
static int
dgram_fits_udp(const zl_datagram *self, Py_ssize_t len)
{
    return len <= (self->family == AF_INET6 ? ZL_DGRAM_UDP6_MAX : ZL_DGRAM_UDP4_MAX);
}

static PyObject *
dgram_sendto(zl_datagram *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *data, *addr;
    if (dgram_parse_sendto_args(args, nargs, kwnames, &data, &addr) < 0) {
        return NULL;
    }
    if (!PyBytes_Check(data) && !PyByteArray_Check(data) && !PyMemoryView_Check(data)) {
        const char *name = strrchr(Py_TYPE(data)->tp_name, '.');
        PyErr_Format(PyExc_TypeError, "data argument must be a bytes-like object, not '%.200s'",
                     name != NULL ? name + 1 : Py_TYPE(data)->tp_name);
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    int rc = 0;
    if (!ZL_DGRAM_SEND_EMPTY && view.len == 0) {
        goto done;
    }
    if ((rc = dgram_check_destination(self, &addr)) < 0) {
        goto done;
    }
    if (self->base.conn_lost && (self->has_address || self->base.sock == NULL)) {
        rc = zl_transport_drop_after_lost(&self->base);
        goto done;
    }
    const zl_sockaddr *to = dgram_destination(self, addr);
    int ring = zl_dgram_ring_sends(&self->ring) && !zl_transport_sock_gone(&self->base) &&
               (self->out.count > 0 || ((self->use_send || to->len > 0) && dgram_fits_udp(self, view.len)));
    if (self->out.count == 0 && !ring) {
        rc = dgram_send_now(self, data, &view, addr, to);
        if (rc != 0) {
            goto done;
        }
    }
    rc = dgram_queue_datagram(self, data, &view, addr, to);
    if (rc == 0 && ring) {
        rc = zl_dgram_ring_send_queued(&self->ring);   /* out before the next poll, with the rest of the queue */
    }
done:
    PyBuffer_Release(&view);
    if (rc < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------------ what the shared code asks of a datagram */

static void
dgram_queue_drop(zl_transport *t)
{
    zl_dgram_ring_send_dropped(&((zl_datagram *)t)->ring);
    zl_dgram_queue_clear(&((zl_datagram *)t)->out);
}

static int
dgram_set_protocol(zl_transport *t, PyObject *protocol)
{
    zl_datagram *self = (zl_datagram *)t;
    PyObject *datagram_received = PyObject_GetAttrString(protocol, "datagram_received");
    if (datagram_received == NULL) {
        return -1;
    }
    Py_INCREF(protocol);
    Py_XSETREF(self->base.protocol, protocol);
    Py_XSETREF(self->datagram_received, datagram_received);
    self->base.protocol_connected = 1;
    return 0;
}

static void
dgram_release_connection(zl_transport *t)
{
    zl_datagram *self = (zl_datagram *)t;
    Py_CLEAR(self->datagram_received);
    Py_CLEAR(self->rx_addr);
    Py_CLEAR(self->tx_addr);
}

static const zl_transport_kind dgram_kind = {
    .on_readable = dgram_on_readable,
    .on_writable = dgram_on_writable,
    .set_protocol = dgram_set_protocol,
    .release_connection = dgram_release_connection,
    .queue_drop = dgram_queue_drop,
    .queue_count_offset = offsetof(zl_datagram, out.count),
    .queue_bytes_offset = offsetof(zl_datagram, out.bytes),
    .recv_arm = dgram_recv_arm,
    .recv_disarm = dgram_recv_disarm,
};

/* ------------------------------------------------------------------ Python API */

static PyObject *
dgram_py_read_ready(zl_datagram *self, PyObject *Py_UNUSED(ignored))
{
    if (dgram_read_ready(self) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
dgram_py_deliver_held(zl_datagram *self, PyObject *Py_UNUSED(ignored))
{
    if (zl_dgram_ring_deliver_held(&self->ring) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
dgram_py_sendto_ready(zl_datagram *self, PyObject *Py_UNUSED(ignored))
{
    if (self->base.writing && dgram_sendto_ready(self) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
dgram_repr(zl_datagram *self)
{
    const char *state = self->base.sock == NULL ? " closed" : self->base.closing ? " closing" : "";
    return PyUnicode_FromFormat("<%s%s fd=%d read=%s write=<%s, bufsize=%zu>>", Py_TYPE(self)->tp_name, state,
                                self->base.fd, self->base.reading ? "polling" : "idle",
                                self->base.writing ? "polling" : "idle", self->out.bytes);
}

static PyObject *
dgram_get_address(zl_datagram *self, void *Py_UNUSED(closure))
{
    return zl_ref_or_none(self->address);
}

static PyObject *
dgram_get_buffer_size(zl_datagram *self, void *Py_UNUSED(closure))
{
    return PyLong_FromSize_t(self->out.bytes);
}

/* ------------------------------------------------------------------ lifetime */

static int
dgram_traverse(zl_datagram *self, visitproc visit, void *arg)
{
    int rc = zl_transport_traverse(&self->base, visit, arg);
    if (rc != 0) {
        return rc;
    }
    Py_VISIT(self->datagram_received);
    Py_VISIT(self->address);
    Py_VISIT(self->rx_addr);
    Py_VISIT(self->tx_addr);
    if (zl_dgram_ring_traverse(&self->ring, visit, arg) < 0) {
        return -1;
    }
    for (size_t i = 0; i < self->out.count; i++) {
        Py_VISIT(self->out.entries[self->out.head + i].data);
        Py_VISIT(self->out.entries[self->out.head + i].addr);
    }
    return 0;
}

static int
dgram_clear(zl_datagram *self)
{
    zl_transport_clear(&self->base);
    Py_CLEAR(self->datagram_received);
    Py_CLEAR(self->address);
    Py_CLEAR(self->rx_addr);
    Py_CLEAR(self->tx_addr);
    zl_dgram_ring_clear(&self->ring);
    zl_dgram_queue_clear(&self->out);
    return 0;
}

static void
dgram_finalize(zl_datagram *self)
{
    (void)zl_transport_finalize_unclosed(&self->base);
}

static void
dgram_dealloc(zl_datagram *self)
{
    if (zl_transport_dealloc_begin(&self->base) < 0) {
        return;
    }
    dgram_clear(self);
    PyMem_Free(self->out.entries);
    self->out.entries = NULL;
    zl_dgram_ring_free(&self->ring);
    zl_transport_dealloc_end(&self->base);
}

/* ------------------------------------------------------------------ creation */

static int
dgram_socket_family(int fd)
{
    int family = AF_UNSPEC;
    socklen_t len = sizeof(family);
    if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &family, &len) < 0) {
        return AF_UNSPEC;
    }
    return family;
}

/* asyncio's _make_datagram_transport refuses an fd another live transport owns. */
static int
dgram_ensure_fd_free(zl_loop *loop, PyObject *sock)
{
    PyObject *res = PyObject_CallMethod((PyObject *)loop, "_ensure_fd_no_transport", "O", sock);
    if (res == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_AttributeError)) {
            return -1;
        }
        PyErr_Clear();
        return 0;
    }
    Py_DECREF(res);
    return 0;
}

/* Addresses, extra and protocol; 0, or -1 with an exception set. */
static int
dgram_init_fields(zl_datagram *self, PyObject *sock, PyObject *protocol, PyObject *address, PyObject *extra)
{
    self->family = dgram_socket_family(self->base.fd);
    self->native_addrs = self->family == AF_INET || self->family == AF_INET6 || self->family == AF_UNIX;
    Py_INCREF(address);
    self->address = address;
    int truthy = PyObject_IsTrue(address);
    if (truthy < 0 || (self->base.extra = zl_transport_build_extra(self->base.loop, sock, extra)) == NULL) {
        return -1;
    }
    self->has_address = (unsigned char)truthy;
    PyObject *peername = PyDict_GetItemString(self->base.extra, "peername");
    if ((truthy = peername == NULL ? 0 : PyObject_IsTrue(peername)) < 0) {
        return -1;
    }
    self->use_send = (unsigned char)truthy;
    return dgram_set_protocol(&self->base, protocol);
}

PyObject *
zl_loop_make_datagram_transport(zl_loop *loop, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"sock", "protocol", "address", "waiter", "extra", NULL};
    PyObject *sock, *protocol, *address = Py_None, *waiter = Py_None, *extra = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OO|OOO:_make_datagram_transport", kwlist, &sock, &protocol,
                                     &address, &waiter, &extra)) {
        return NULL;
    }
    if (zl_transport_check_creatable(loop, loop->state->datagram_type) < 0 || dgram_ensure_fd_free(loop, sock) < 0) {
        return NULL;
    }
    zl_datagram *self = (zl_datagram *)zl_transport_new(loop->state->datagram_type, &dgram_kind, loop, sock);
    if (self == NULL) {
        return NULL;
    }
    if (dgram_init_fields(self, sock, protocol, address, extra) < 0) {
        return zl_transport_discard(&self->base);
    }
    zl_dgram_ring_init(&self->ring, &self->base, self->family, &self->out, self->use_send);
    if (zl_transport_open(&self->base, waiter) < 0) {
        return zl_transport_discard(&self->base);
    }
    return (PyObject *)self;
}

/* ------------------------------------------------------------------ type */

static PyMethodDef dgram_methods[] = {
    {"sendto", (PyCFunction)(void (*)(void))dgram_sendto, METH_FASTCALL | METH_KEYWORDS,
     "sendto(data, addr=None): send one datagram now; queued only when the socket buffer is full."},
    {"close", (PyCFunction)zl_transport_py_close, METH_NOARGS, "Close after the queued datagrams are sent."},
    {"abort", (PyCFunction)zl_transport_py_abort, METH_NOARGS, "Close now, dropping queued datagrams."},
    {"is_closing", (PyCFunction)zl_transport_py_is_closing, METH_NOARGS, "True once close() or abort() ran."},
    {"is_reading", (PyCFunction)zl_transport_py_is_reading, METH_NOARGS, "True unless reading is paused or closing."},
    {"pause_reading", (PyCFunction)zl_transport_py_pause_reading, METH_NOARGS, "Stop receiving datagrams."},
    {"resume_reading", (PyCFunction)zl_transport_py_resume_reading, METH_NOARGS, "Receive datagrams again."},
    ZL_TRANSPORT_BUFFER_AND_PROTOCOL_METHODS,
    {"_read_ready", (PyCFunction)dgram_py_read_ready, METH_NOARGS, NULL},
    {"_sendto_ready", (PyCFunction)dgram_py_sendto_ready, METH_NOARGS, NULL},
    {"_deliver_held", (PyCFunction)dgram_py_deliver_held, METH_NOARGS, NULL},
    {"_call_connection_lost", (PyCFunction)zl_transport_py_call_connection_lost, METH_O, NULL},
    {"_force_close", (PyCFunction)zl_transport_py_force_close, METH_O, NULL},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef dgram_getset[] = {
    {"_loop", (getter)zl_transport_get_loop, NULL, NULL, NULL},
    {"_sock", (getter)zl_transport_get_sock, NULL, NULL, NULL},
    {"_sock_fd", (getter)zl_transport_get_sock_fd, NULL, NULL, NULL},
    {"_protocol", (getter)zl_transport_get_protocol, NULL, NULL, NULL},
    {"_address", (getter)dgram_get_address, NULL, NULL, NULL},
    {"_closing", (getter)zl_transport_get_closing, NULL, NULL, NULL},
    {"_conn_lost", (getter)zl_transport_get_conn_lost, NULL, NULL, NULL},
    {"_paused", (getter)zl_transport_get_paused, NULL, NULL, NULL},
    {"_protocol_paused", (getter)zl_transport_get_protocol_paused, NULL, NULL, NULL},
    {"_buffer_size", (getter)dgram_get_buffer_size, NULL, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef dgram_members[] = {
    {"__weaklistoffset__", T_PYSSIZET, offsetof(zl_transport, weakreflist), READONLY, NULL},
    {"__dictoffset__", T_PYSSIZET, offsetof(zl_transport, dict), READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyType_Slot dgram_slots[] = {
    {Py_tp_doc, "A UDP or Unix datagram transport of a zloop loop (asyncio.DatagramTransport)."},
    {Py_tp_dealloc, dgram_dealloc},
    {Py_tp_finalize, dgram_finalize},
    {Py_tp_traverse, dgram_traverse},
    {Py_tp_clear, dgram_clear},
    {Py_tp_repr, dgram_repr},
    {Py_tp_methods, dgram_methods},
    {Py_tp_getset, dgram_getset},
    {Py_tp_members, dgram_members},
    {0, NULL},
};

static PyType_Spec dgram_spec = {
    .name = "zloop.UDPTransport",
    .basicsize = sizeof(zl_datagram),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .slots = dgram_slots,
};

/* The datagram transport type subclasses the given base or bases (asyncio.DatagramTransport, and
 * asyncio.Transport as asyncio's own datagram transport does), whose instances hold one slot (_extra). */
PyObject *
zl_datagram_type_create(PyObject *module, PyObject *bases)
{
    PyObject *tuple;
    if (PyTuple_Check(bases)) {
        Py_INCREF(bases);
        tuple = bases;
    } else if ((tuple = PyTuple_Pack(1, bases)) == NULL) {
        return NULL;
    }
    zl_state *state = PyModule_GetState(module);
    PyObject *type = zl_transport_type_create(module, &dgram_spec, tuple,
                                              "asyncio.DatagramTransport has an unexpected layout",
                                              &state->datagram_type);
    Py_DECREF(tuple);
    return type;
}
