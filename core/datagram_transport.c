/* core/datagram_transport.c — the datagram transport (UDP and Unix datagram sockets) in C: the I/O dispatch
 * receives straight into protocol.datagram_received, sendto() sends at once and queues only on EAGAIN. */
#include "zloop.h"

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
#define ZL_LOG_THRESHOLD_FOR_CONNLOST_WRITES 5    /* asyncio.constants */
#define ZL_DEFAULT_HIGH_WATER (64 * 1024)

#if PY_VERSION_HEX >= 0x030D0000
#define ZL_DGRAM_HEADER_SIZE 8     /* 3.13 counts 8 bytes of header per queued datagram */
#define ZL_DGRAM_SEND_EMPTY 1      /* and sends empty datagrams, which earlier versions drop */
#else
#define ZL_DGRAM_HEADER_SIZE 0
#define ZL_DGRAM_SEND_EMPTY 0
#endif

/* A socket address in C form; len 0 when there is none (or only Python's socket module understands it). */
typedef struct zl_sockaddr {
    struct sockaddr_storage storage;
    socklen_t len;
} zl_sockaddr;

typedef struct zl_dgram_entry {
    PyObject *data;                  /* bytes, sent as they are */
    PyObject *addr;                  /* destination as given (owned; Py_None when there is none) */
    zl_sockaddr to;                  /* its C form */
    size_t accounted;                /* what it adds to get_write_buffer_size() */
} zl_dgram_entry;

typedef struct zl_dgram_queue {
    zl_dgram_entry *entries;
    size_t head;
    size_t count;
    size_t capacity;
    size_t bytes;
} zl_dgram_queue;

typedef struct zl_datagram {
    PyObject_HEAD
    PyObject *extra;                 /* asyncio.BaseTransport's _extra slot: must come right after the header */
    PyObject *weakreflist;
    zl_loop *loop;
    PyObject *sock;                  /* the socket object; NULL once connection_lost ran */
    PyObject *protocol;
    PyObject *datagram_received;     /* protocol.datagram_received */
    PyObject *address;               /* remote address given at creation (Py_None: none) */
    PyObject *rx_addr;               /* the last sender's address object ... */
    zl_sockaddr rx_sa;               /* ... and its C form, so a peer that keeps sending costs no conversion */
    PyObject *tx_addr;               /* the last destination converted to C ... */
    zl_sockaddr tx_sa;               /* ... and that form */
    zl_dgram_queue out;
    Py_ssize_t high_water;
    Py_ssize_t low_water;
    int fd;
    int family;
    int conn_lost;
    unsigned char has_address;       /* address is truthy: sendto() checks and uses it */
    unsigned char use_send;          /* extra['peername'] is truthy: send(), not sendto(), as asyncio does */
    unsigned char native_addrs;      /* AF_INET, AF_INET6 or AF_UNIX: addresses converted in C */
    unsigned char closing;
    unsigned char reading_paused;
    unsigned char protocol_paused;
    unsigned char protocol_connected;
    unsigned char reading;
    unsigned char writing;
    unsigned char read_deferred;     /* a _read_ready handle is queued (see dgram_defer_if_busy) */
    unsigned char write_deferred;    /* a _sendto_ready handle is queued */
} zl_datagram;

PyTypeObject *zl_datagram_type;
static char *recv_buffer;
static const zl_sockaddr no_sockaddr;

/* ------------------------------------------------------------------ the send queue */

static int
dgram_queue_push(zl_dgram_queue *queue, zl_dgram_entry entry)
{
    if (queue->head + queue->count == queue->capacity) {
        if (queue->head > 0) {
            memmove(queue->entries, queue->entries + queue->head, queue->count * sizeof(zl_dgram_entry));
            queue->head = 0;
        } else {
            size_t capacity = queue->capacity ? queue->capacity * 2 : 8;
            zl_dgram_entry *entries = PyMem_Realloc(queue->entries, capacity * sizeof(zl_dgram_entry));
            if (entries == NULL) {
                PyErr_NoMemory();
                return -1;
            }
            queue->entries = entries;
            queue->capacity = capacity;
        }
    }
    Py_INCREF(entry.data);
    Py_INCREF(entry.addr);
    queue->entries[queue->head + queue->count] = entry;
    queue->count++;
    queue->bytes += entry.accounted;
    return 0;
}

/* Remove the oldest entry; the caller gets its references. The queue must not be empty. */
static zl_dgram_entry
dgram_queue_pop(zl_dgram_queue *queue)
{
    zl_dgram_entry entry = queue->entries[queue->head];
    queue->head++;
    queue->count--;
    queue->bytes -= entry.accounted;
    if (queue->count == 0) {
        queue->head = 0;
    }
    return entry;
}

static void
dgram_entry_release(zl_dgram_entry *entry)
{
    Py_CLEAR(entry->data);
    Py_CLEAR(entry->addr);
}

static void
dgram_queue_clear(zl_dgram_queue *queue)
{
    while (queue->count > 0) {
        zl_dgram_entry entry = dgram_queue_pop(queue);
        dgram_entry_release(&entry);
    }
}

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

static PyObject *
dgram_ip_text(int family, const void *raw)
{
    char text[INET6_ADDRSTRLEN];
    if (inet_ntop(family, raw, text, sizeof(text)) == NULL) {
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    return PyUnicode_FromString(text);
}

/* The Python form of an address recvfrom() gave, as the socket module returns it. */
static PyObject *
dgram_sockaddr_to_py(const zl_sockaddr *sa)
{
    if (sa->len == 0) {
        Py_RETURN_NONE;
    }
    const struct sockaddr *generic = (const struct sockaddr *)&sa->storage;
    if (generic->sa_family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)&sa->storage;
        PyObject *host = dgram_ip_text(AF_INET, &sin->sin_addr);
        return host == NULL ? NULL : Py_BuildValue("(Ni)", host, (int)ntohs(sin->sin_port));
    }
    if (generic->sa_family == AF_INET6) {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)&sa->storage;
        PyObject *host = dgram_ip_text(AF_INET6, &sin6->sin6_addr);
        return host == NULL ? NULL
                            : Py_BuildValue("(NiII)", host, (int)ntohs(sin6->sin6_port),
                                            (unsigned int)ntohl(sin6->sin6_flowinfo),
                                            (unsigned int)sin6->sin6_scope_id);
    }
    const struct sockaddr_un *sun = (const struct sockaddr_un *)&sa->storage;
    size_t path_len = sa->len > offsetof(struct sockaddr_un, sun_path) ? sa->len - offsetof(struct sockaddr_un, sun_path)
                                                                       : 0;
    if (path_len > sizeof(sun->sun_path)) {
        path_len = sizeof(sun->sun_path);
    }
    if (path_len > 0 && sun->sun_path[0] == '\0') {
        return PyBytes_FromStringAndSize(sun->sun_path, (Py_ssize_t)path_len);
    }
    return PyUnicode_DecodeFSDefaultAndSize(sun->sun_path, (Py_ssize_t)strnlen(sun->sun_path, path_len));
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

/* ------------------------------------------------------------------ small helpers */

static int
exception_stops_loop(void)
{
    return PyErr_ExceptionMatches(PyExc_SystemExit) || PyErr_ExceptionMatches(PyExc_KeyboardInterrupt);
}

static int
dgram_call_soon(zl_datagram *self, PyObject *callback, PyObject *arg)
{
    PyObject *args[1] = {arg};
    zl_handle *handle = zl_handle_new(self->loop, callback, args, arg != NULL, NULL, 0, 0.0);
    if (handle == NULL) {
        return -1;
    }
    return zl_loop_enqueue(self->loop, (PyObject *)handle);
}

static int
dgram_call_soon_method(zl_datagram *self, const char *name, PyObject *arg)
{
    PyObject *method = PyObject_GetAttrString((PyObject *)self, name);
    if (method == NULL) {
        return -1;
    }
    int rc = dgram_call_soon(self, method, arg);
    Py_DECREF(method);
    return rc;
}

static int dgram_force_close(zl_datagram *self, PyObject *exc);
static void dgram_stop_writing(zl_datagram *self);

/* ------------------------------------------------------------------ errors */

/* asyncio's _fatal_error: report (OSErrors only in debug mode), then close at once. Consumes exc.
 * -1 only when something must stop the loop. */
static int
dgram_fatal_error(zl_datagram *self, PyObject *exc, const char *message)
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
    int rc = dgram_force_close(self, exc);
    Py_DECREF(exc);
    return rc;
}

/* The raised exception goes to the loop's exception handler; the transport goes on. asyncio runs these
 * callbacks from a Handle, whose errors end there too. -1 for SystemExit/KeyboardInterrupt. */
static int
dgram_report_callback_error(zl_datagram *self, const char *callback)
{
    if (exception_stops_loop()) {
        return -1;
    }
    PyObject *exc = zl_err_fetch();
    PyObject *message = PyUnicode_FromFormat("Exception in callback %s.%s()", Py_TYPE(self)->tp_name, callback);
    PyObject *res = message == NULL ? NULL
                                    : PyObject_CallFunction(zl_global.transport_protocol_error, "OOO",
                                                            (PyObject *)self, exc, message);
    Py_XDECREF(message);
    Py_XDECREF(exc);
    if (res == NULL) {
        if (exception_stops_loop()) {
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
    if (exception_stops_loop()) {
        return -1;
    }
    if (!PyErr_ExceptionMatches(PyExc_OSError)) {
        return dgram_fatal_error(self, zl_err_fetch(), fatal_message);
    }
    PyObject *exc = zl_err_fetch();
    PyObject *res = PyObject_CallMethod(self->protocol, "error_received", "O", exc);
    Py_DECREF(exc);
    if (res == NULL) {
        return 1;
    }
    Py_DECREF(res);
    return 0;
}

/* ------------------------------------------------------------------ flow control */

static int
dgram_call_flow_method(zl_datagram *self, const char *method, const char *message)
{
    PyObject *res = PyObject_CallMethod(self->protocol, method, NULL);
    if (res != NULL) {
        Py_DECREF(res);
        return 0;
    }
    if (exception_stops_loop()) {
        return -1;
    }
    PyObject *exc = zl_err_fetch();
    res = PyObject_CallFunction(zl_global.transport_protocol_error, "OOs", (PyObject *)self, exc, message);
    Py_XDECREF(exc);
    if (res == NULL) {
        if (exception_stops_loop()) {
            return -1;
        }
        PyErr_WriteUnraisable((PyObject *)self);
    }
    Py_XDECREF(res);
    return 0;
}

static int
dgram_maybe_pause_protocol(zl_datagram *self)
{
    if ((Py_ssize_t)self->out.bytes <= self->high_water || self->protocol_paused) {
        return 0;
    }
    self->protocol_paused = 1;
    return dgram_call_flow_method(self, "pause_writing", "protocol.pause_writing() failed");
}

static int
dgram_maybe_resume_protocol(zl_datagram *self)
{
    if (!self->protocol_paused || (Py_ssize_t)self->out.bytes > self->low_water) {
        return 0;
    }
    self->protocol_paused = 0;
    return dgram_call_flow_method(self, "resume_writing", "protocol.resume_writing() failed");
}

static int
dgram_set_limits(zl_datagram *self, PyObject *high_obj, PyObject *low_obj)
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

/* ------------------------------------------------------------------ reading */

/* One datagram with recvfrom() into the shared buffer. 1 with *data and *addr set, 0 if nothing was there,
 * -1 with an exception set. */
static int
dgram_recv_native(zl_datagram *self, PyObject **data, PyObject **addr)
{
    if (recv_buffer == NULL && (recv_buffer = PyMem_RawMalloc(ZL_DGRAM_MAX_SIZE)) == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    zl_sockaddr from;
    ssize_t n;
    do {
        memset(&from, 0, sizeof(from));
        from.len = sizeof(from.storage);
        n = recvfrom(self->fd, recv_buffer, ZL_DGRAM_MAX_SIZE, 0, (struct sockaddr *)&from.storage, &from.len);
    } while (n < 0 && errno == EINTR);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            return 0;
        }
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    if ((*data = PyBytes_FromStringAndSize(recv_buffer, n)) == NULL) {
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
    PyObject *res = PyObject_CallMethod(self->sock, "recvfrom", "i", ZL_DGRAM_MAX_SIZE);
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

/* asyncio runs I/O callbacks after the handles that were already waiting when it polled; the C dispatch calls
 * the transport at once. So while handles wait, the work is queued behind them as a handle calling `method`,
 * once (*queued says it is). 1 when queued, 0 to go ahead now. */
static int
dgram_defer_if_busy(zl_datagram *self, unsigned char *queued, const char *method)
{
    if (*queued) {
        return 1;
    }
    if (self->loop->ready.len == 0) {
        return 0;
    }
    if (dgram_call_soon_method(self, method, NULL) < 0) {
        PyErr_Clear();       /* no memory for a handle: do it now rather than not at all */
        return 0;
    }
    *queued = 1;
    return 1;
}

/* One datagram to the protocol. -1 only when the loop must stop (SystemExit, KeyboardInterrupt). */
static int
dgram_read_ready(zl_datagram *self)
{
    if (self->conn_lost || !self->reading) {
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
    PyObject *args[2] = {data, addr};
    PyObject *res = PyObject_Vectorcall(self->datagram_received, args, 2, NULL);
    Py_DECREF(data);
    Py_DECREF(addr);
    if (res == NULL) {
        return dgram_report_callback_error(self, "_read_ready");
    }
    Py_DECREF(res);
    return 0;
}

static int
dgram_on_readable(PyObject *owner, int Py_UNUSED(fd))
{
    zl_datagram *self = (zl_datagram *)owner;
    if (dgram_defer_if_busy(self, &self->read_deferred, "_read_ready")) {
        return 0;
    }
    return dgram_read_ready(self);
}

static int
dgram_is_reading(zl_datagram *self)
{
    return !self->closing && !self->reading_paused;
}

static int
dgram_start_reading(zl_datagram *self)
{
    if (self->reading || self->conn_lost) {
        return 0;
    }
    if (zl_io_set_side(self->loop, self->fd, ZL_EV_READ, NULL, dgram_on_readable, (PyObject *)self) < 0) {
        return -1;
    }
    self->reading = 1;
    return 0;
}

static void
dgram_stop_reading(zl_datagram *self)
{
    if (!self->reading) {
        return;
    }
    self->reading = 0;
    int was_set;
    (void)zl_io_clear_side(self->loop, self->fd, ZL_EV_READ, &was_set);
}

/* ------------------------------------------------------------------ writing */

/* Send one datagram: send() when connected, sendto() with a C address, else the socket module's sendto().
 * 1 sent, 0 would block, -1 with an exception set. */
static int
dgram_send_one(zl_datagram *self, PyObject *data, const void *buf, size_t len, PyObject *addr,
               const zl_sockaddr *to)
{
    if (!self->use_send && to->len == 0) {
        PyObject *res = PyObject_CallMethod(self->sock, "sendto", "OO", data, addr);
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
    ssize_t n;
    do {
        n = self->use_send ? send(self->fd, buf, len, MSG_NOSIGNAL)
                           : sendto(self->fd, buf, len, MSG_NOSIGNAL, (const struct sockaddr *)&to->storage, to->len);
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

static int
dgram_call_connection_lost_soon(zl_datagram *self, PyObject *exc)
{
    return dgram_call_soon_method(self, "_call_connection_lost", exc == NULL ? Py_None : exc);
}

/* The socket is writable again: send the queue in order until it would block. */
static int
dgram_sendto_ready(zl_datagram *self)
{
    while (self->out.count > 0 && self->sock != NULL) {
        /* A copy with its own references: a signal handler run by the socket module may touch the queue. */
        zl_dgram_entry next = self->out.entries[self->out.head];
        Py_INCREF(next.data);
        Py_INCREF(next.addr);
        int sent = dgram_send_one(self, next.data, PyBytes_AS_STRING(next.data), (size_t)PyBytes_GET_SIZE(next.data),
                                  next.addr, &next.to);
        dgram_entry_release(&next);
        if (sent == 0) {
            return 0;     /* still full: try again later */
        }
        if (self->out.count > 0) {
            zl_dgram_entry entry = dgram_queue_pop(&self->out);
            dgram_entry_release(&entry);
        }
        if (sent < 0) {
            /* As asyncio: the datagram is dropped, the rest waits for the next writable event. */
            int rc = dgram_classify_error(self, "Fatal write error on datagram transport");
            return rc > 0 ? dgram_report_callback_error(self, "_sendto_ready") : rc;
        }
    }
    if (dgram_maybe_resume_protocol(self) < 0) {
        return -1;
    }
    if (self->out.count > 0) {
        return 0;     /* resume_writing() queued more */
    }
    dgram_stop_writing(self);
    if (self->closing && !self->conn_lost) {
        self->conn_lost++;
        return dgram_call_connection_lost_soon(self, NULL);
    }
    return 0;
}

static int
dgram_on_writable(PyObject *owner, int Py_UNUSED(fd))
{
    zl_datagram *self = (zl_datagram *)owner;
    if (dgram_defer_if_busy(self, &self->write_deferred, "_sendto_ready")) {
        return 0;
    }
    return dgram_sendto_ready(self);
}

static int
dgram_start_writing(zl_datagram *self)
{
    if (self->writing) {
        return 0;
    }
    if (zl_io_set_side(self->loop, self->fd, ZL_EV_WRITE, NULL, dgram_on_writable, (PyObject *)self) < 0) {
        return -1;
    }
    self->writing = 1;
    return 0;
}

static void
dgram_stop_writing(zl_datagram *self)
{
    if (!self->writing) {
        return;
    }
    self->writing = 0;
    int was_set;
    (void)zl_io_clear_side(self->loop, self->fd, ZL_EV_WRITE, &was_set);
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
    int rc = dgram_queue_push(&self->out, entry);
    Py_DECREF(copy);
    if (rc < 0) {
        return -1;
    }
    return dgram_maybe_pause_protocol(self);
}

/* After the connection is lost, datagrams are dropped; asyncio warns once they keep coming. */
static int
dgram_drop_after_lost(zl_datagram *self)
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
        return dgram_start_writing(self) < 0 ? -1 : 0;
    }
    int rc = dgram_classify_error(self, "Fatal write error on datagram transport");
    return rc == 0 ? 1 : -1;    /* error_received() raising propagates to the caller, as in asyncio */
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
    if (self->conn_lost && (self->has_address || self->sock == NULL)) {
        rc = dgram_drop_after_lost(self);
        goto done;
    }
    const zl_sockaddr *to = dgram_destination(self, addr);
    if (self->out.count == 0) {
        rc = dgram_send_now(self, data, &view, addr, to);
        if (rc != 0) {
            goto done;
        }
    }
    rc = dgram_queue_datagram(self, data, &view, addr, to);
done:
    PyBuffer_Release(&view);
    if (rc < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------------ closing */

static void
dgram_release_fd(zl_datagram *self)
{
    dgram_stop_reading(self);
    dgram_stop_writing(self);
    zl_io_set_transport_owned(self->loop, self->fd, 0);
}

static int
dgram_close(zl_datagram *self)
{
    if (self->closing) {
        return 0;
    }
    self->closing = 1;
    dgram_stop_reading(self);
    zl_io_set_transport_owned(self->loop, self->fd, 0);   /* asyncio frees the fd for others once closing */
    if (self->out.count == 0) {
        self->conn_lost++;
        dgram_stop_writing(self);
        return dgram_call_connection_lost_soon(self, NULL);
    }
    return 0;
}

static int
dgram_force_close(zl_datagram *self, PyObject *exc)
{
    if (self->conn_lost) {
        return 0;
    }
    dgram_queue_clear(&self->out);
    dgram_stop_writing(self);
    if (!self->closing) {
        self->closing = 1;
        dgram_stop_reading(self);
        zl_io_set_transport_owned(self->loop, self->fd, 0);
    }
    self->conn_lost++;
    return dgram_call_connection_lost_soon(self, exc);
}

static PyObject *
dgram_py_call_connection_lost(zl_datagram *self, PyObject *exc)
{
    PyObject *res = Py_None;
    Py_INCREF(res);
    if (self->protocol_connected && self->protocol != NULL) {
        Py_DECREF(res);
        res = PyObject_CallMethod(self->protocol, "connection_lost", "O", exc);
    }
    PyObject *raised = res == NULL ? zl_err_fetch() : NULL;
    /* asyncio's finally: the socket closes even when connection_lost raised. */
    dgram_release_fd(self);
    if (self->sock != NULL) {
        PyObject *closed = PyObject_CallMethod(self->sock, "close", NULL);
        if (closed == NULL) {
            PyErr_WriteUnraisable((PyObject *)self);
        }
        Py_XDECREF(closed);
        Py_CLEAR(self->sock);
    }
    Py_CLEAR(self->protocol);
    Py_CLEAR(self->datagram_received);
    Py_CLEAR(self->rx_addr);
    Py_CLEAR(self->tx_addr);
    if (raised != NULL) {
        zl_err_restore(raised);
        return NULL;
    }
    return res;
}

/* ------------------------------------------------------------------ Python API */

static PyObject *
dgram_py_close(zl_datagram *self, PyObject *Py_UNUSED(ignored))
{
    if (dgram_close(self) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
dgram_py_abort(zl_datagram *self, PyObject *Py_UNUSED(ignored))
{
    if (dgram_force_close(self, Py_None) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
dgram_py_force_close(zl_datagram *self, PyObject *exc)
{
    if (dgram_force_close(self, exc) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
dgram_py_is_closing(zl_datagram *self, PyObject *Py_UNUSED(ignored))
{
    return PyBool_FromLong(self->closing);
}

static PyObject *
dgram_py_is_reading(zl_datagram *self, PyObject *Py_UNUSED(ignored))
{
    return PyBool_FromLong(dgram_is_reading(self));
}

static PyObject *
dgram_py_pause_reading(zl_datagram *self, PyObject *Py_UNUSED(ignored))
{
    if (dgram_is_reading(self)) {
        self->reading_paused = 1;
        dgram_stop_reading(self);
    }
    Py_RETURN_NONE;
}

static PyObject *
dgram_py_resume_reading(zl_datagram *self, PyObject *Py_UNUSED(ignored))
{
    if (self->closing || !self->reading_paused) {
        Py_RETURN_NONE;
    }
    self->reading_paused = 0;
    if (dgram_start_reading(self) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
dgram_py_read_ready(zl_datagram *self, PyObject *Py_UNUSED(ignored))
{
    self->read_deferred = 0;
    if (dgram_read_ready(self) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
dgram_py_sendto_ready(zl_datagram *self, PyObject *Py_UNUSED(ignored))
{
    self->write_deferred = 0;
    if (self->writing && dgram_sendto_ready(self) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
dgram_py_start_reading(zl_datagram *self, PyObject *Py_UNUSED(ignored))
{
    if (dgram_is_reading(self) && dgram_start_reading(self) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
dgram_py_get_write_buffer_size(zl_datagram *self, PyObject *Py_UNUSED(ignored))
{
    return PyLong_FromSize_t(self->out.bytes);
}

static PyObject *
dgram_py_get_write_buffer_limits(zl_datagram *self, PyObject *Py_UNUSED(ignored))
{
    return Py_BuildValue("(nn)", self->low_water, self->high_water);
}

static PyObject *
dgram_py_set_write_buffer_limits(zl_datagram *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"high", "low", NULL};
    PyObject *high = Py_None, *low = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|OO:set_write_buffer_limits", kwlist, &high, &low) ||
        dgram_set_limits(self, high, low) < 0 || dgram_maybe_pause_protocol(self) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static int
dgram_set_protocol(zl_datagram *self, PyObject *protocol)
{
    PyObject *datagram_received = PyObject_GetAttrString(protocol, "datagram_received");
    if (datagram_received == NULL) {
        return -1;
    }
    Py_INCREF(protocol);
    Py_XSETREF(self->protocol, protocol);
    Py_XSETREF(self->datagram_received, datagram_received);
    self->protocol_connected = 1;
    return 0;
}

static PyObject *
dgram_py_set_protocol(zl_datagram *self, PyObject *protocol)
{
    if (dgram_set_protocol(self, protocol) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
dgram_py_get_protocol(zl_datagram *self, PyObject *Py_UNUSED(ignored))
{
    return zl_ref_or_none(self->protocol);
}

static PyObject *
dgram_py_get_extra_info(zl_datagram *self, PyObject *const *args, Py_ssize_t nargs)
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
dgram_repr(zl_datagram *self)
{
    const char *state = self->sock == NULL ? " closed" : self->closing ? " closing" : "";
    return PyUnicode_FromFormat("<%s%s fd=%d read=%s write=<%s, bufsize=%zu>>", Py_TYPE(self)->tp_name, state,
                                self->fd, self->reading ? "polling" : "idle", self->writing ? "polling" : "idle",
                                self->out.bytes);
}

static PyObject *
dgram_get_loop(zl_datagram *self, void *Py_UNUSED(closure))
{
    return zl_ref_or_none(self->sock != NULL ? (PyObject *)self->loop : NULL);
}

static PyObject *
dgram_get_sock(zl_datagram *self, void *Py_UNUSED(closure))
{
    return zl_ref_or_none(self->sock);
}

static PyObject *
dgram_get_sock_fd(zl_datagram *self, void *Py_UNUSED(closure))
{
    return PyLong_FromLong(self->fd);
}

static PyObject *
dgram_get_protocol_attr(zl_datagram *self, void *Py_UNUSED(closure))
{
    return zl_ref_or_none(self->protocol);
}

static PyObject *
dgram_get_address(zl_datagram *self, void *Py_UNUSED(closure))
{
    return zl_ref_or_none(self->address);
}

static PyObject *
dgram_get_closing(zl_datagram *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(self->closing);
}

static PyObject *
dgram_get_conn_lost(zl_datagram *self, void *Py_UNUSED(closure))
{
    return PyLong_FromLong(self->conn_lost);
}

static PyObject *
dgram_get_paused(zl_datagram *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(self->reading_paused);
}

static PyObject *
dgram_get_protocol_paused(zl_datagram *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(self->protocol_paused);
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
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->extra);
    Py_VISIT(self->loop);
    Py_VISIT(self->sock);
    Py_VISIT(self->protocol);
    Py_VISIT(self->datagram_received);
    Py_VISIT(self->address);
    Py_VISIT(self->rx_addr);
    Py_VISIT(self->tx_addr);
    for (size_t i = 0; i < self->out.count; i++) {
        Py_VISIT(self->out.entries[self->out.head + i].data);
        Py_VISIT(self->out.entries[self->out.head + i].addr);
    }
    return 0;
}

static int
dgram_clear(zl_datagram *self)
{
    Py_CLEAR(self->extra);
    Py_CLEAR(self->sock);
    Py_CLEAR(self->protocol);
    Py_CLEAR(self->datagram_received);
    Py_CLEAR(self->address);
    Py_CLEAR(self->rx_addr);
    Py_CLEAR(self->tx_addr);
    dgram_queue_clear(&self->out);
    return 0;
}

static void
dgram_finalize(zl_datagram *self)
{
    if (self->sock == NULL) {
        return;
    }
    PyObject *exc = zl_err_fetch();
    if (PyErr_ResourceWarning((PyObject *)self, 1, "unclosed transport %R", (PyObject *)self) < 0) {
        PyErr_WriteUnraisable((PyObject *)self);
    }
    if (self->loop != NULL && self->loop->backend != NULL) {
        dgram_release_fd(self);
    }
    PyObject *res = PyObject_CallMethod(self->sock, "close", NULL);
    if (res == NULL) {
        PyErr_WriteUnraisable((PyObject *)self);
    }
    Py_XDECREF(res);
    Py_CLEAR(self->sock);
    zl_err_restore(exc);
}

static void
dgram_dealloc(zl_datagram *self)
{
    if (PyObject_CallFinalizerFromDealloc((PyObject *)self) < 0) {
        return;
    }
    PyObject_GC_UnTrack(self);
    if (self->weakreflist != NULL) {
        PyObject_ClearWeakRefs((PyObject *)self);
    }
    dgram_clear(self);
    PyMem_Free(self->out.entries);
    self->out.entries = NULL;
    Py_CLEAR(self->loop);
    PyTypeObject *type = Py_TYPE(self);
    type->tp_free((PyObject *)self);
    Py_DECREF(type);
}

/* ------------------------------------------------------------------ creation */

/* extra = dict(extra or {}) with 'socket', 'sockname' and 'peername' as asyncio's transports give them. */
static int
dgram_set_extra_name(PyObject *info, PyObject *sock, const char *key, const char *method, int keep_given)
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

static PyObject *
dgram_build_extra(PyObject *sock, PyObject *extra)
{
    PyObject *info = (extra == NULL || extra == Py_None) ? PyDict_New() : PyDict_Copy(extra);
    if (info == NULL) {
        return NULL;
    }
    PyObject *trsock = PyObject_CallOneArg(zl_global.transport_socket_type, sock);
    if (trsock == NULL || PyDict_SetItemString(info, "socket", trsock) < 0 ||
        dgram_set_extra_name(info, sock, "sockname", "getsockname", 0) < 0 ||
        dgram_set_extra_name(info, sock, "peername", "getpeername", 1) < 0) {
        Py_XDECREF(trsock);
        Py_DECREF(info);
        return NULL;
    }
    Py_DECREF(trsock);
    return info;
}

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

static int
dgram_register_with_loop(zl_datagram *self)
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
dgram_schedule_start(zl_datagram *self, PyObject *waiter)
{
    PyObject *connection_made = PyObject_GetAttrString(self->protocol, "connection_made");
    if (connection_made == NULL) {
        return -1;
    }
    int rc = dgram_call_soon(self, connection_made, (PyObject *)self);
    Py_DECREF(connection_made);
    if (rc < 0 || dgram_call_soon_method(self, "_start_reading", NULL) < 0) {
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

/* Socket, addresses and protocol; 0, or -1 with an exception set. */
static int
dgram_init_fields(zl_datagram *self, PyObject *sock, PyObject *protocol, PyObject *address, PyObject *extra)
{
    Py_INCREF(sock);
    self->sock = sock;
    self->family = dgram_socket_family(self->fd);
    self->native_addrs = self->family == AF_INET || self->family == AF_INET6 || self->family == AF_UNIX;
    self->high_water = ZL_DEFAULT_HIGH_WATER;
    self->low_water = ZL_DEFAULT_HIGH_WATER / 4;
    Py_INCREF(address);
    self->address = address;
    int truthy = PyObject_IsTrue(address);
    if (truthy < 0 || (self->extra = dgram_build_extra(sock, extra)) == NULL) {
        return -1;
    }
    self->has_address = (unsigned char)truthy;
    PyObject *peername = PyDict_GetItemString(self->extra, "peername");
    if ((truthy = peername == NULL ? 0 : PyObject_IsTrue(peername)) < 0) {
        return -1;
    }
    self->use_send = (unsigned char)truthy;
    return dgram_set_protocol(self, protocol);
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
    if (zl_global.transport_socket_type == NULL || zl_datagram_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "zloop's transport types are not initialised");
        return NULL;
    }
    if (zl_loop_check_closed(loop) < 0 || dgram_ensure_fd_free(loop, sock) < 0) {
        return NULL;
    }
    int fd = zl_fileobj_to_fd(sock);
    if (fd < 0) {
        return NULL;
    }
    zl_datagram *self = (zl_datagram *)zl_datagram_type->tp_alloc(zl_datagram_type, 0);
    if (self == NULL) {
        return NULL;
    }
    Py_INCREF(loop);
    self->loop = loop;
    self->fd = fd;
    if (dgram_init_fields(self, sock, protocol, address, extra) < 0 ||
        zl_io_set_transport_owned(loop, fd, 1) < 0 || dgram_register_with_loop(self) < 0 ||
        dgram_schedule_start(self, waiter) < 0) {
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

static PyMethodDef dgram_methods[] = {
    {"sendto", (PyCFunction)(void (*)(void))dgram_sendto, METH_FASTCALL | METH_KEYWORDS,
     "sendto(data, addr=None): send one datagram now; queued only when the socket buffer is full."},
    {"close", (PyCFunction)dgram_py_close, METH_NOARGS, "Close after the queued datagrams are sent."},
    {"abort", (PyCFunction)dgram_py_abort, METH_NOARGS, "Close now, dropping queued datagrams."},
    {"is_closing", (PyCFunction)dgram_py_is_closing, METH_NOARGS, "True once close() or abort() ran."},
    {"is_reading", (PyCFunction)dgram_py_is_reading, METH_NOARGS, "True unless reading is paused or closing."},
    {"pause_reading", (PyCFunction)dgram_py_pause_reading, METH_NOARGS, "Stop receiving datagrams."},
    {"resume_reading", (PyCFunction)dgram_py_resume_reading, METH_NOARGS, "Receive datagrams again."},
    {"get_write_buffer_size", (PyCFunction)dgram_py_get_write_buffer_size, METH_NOARGS, "Bytes queued."},
    {"get_write_buffer_limits", (PyCFunction)dgram_py_get_write_buffer_limits, METH_NOARGS, "(low, high)."},
    {"set_write_buffer_limits", (PyCFunction)(void (*)(void))dgram_py_set_write_buffer_limits,
     METH_VARARGS | METH_KEYWORDS, "Set the water marks for pause_writing/resume_writing."},
    {"set_protocol", (PyCFunction)dgram_py_set_protocol, METH_O, "Switch to another protocol."},
    {"get_protocol", (PyCFunction)dgram_py_get_protocol, METH_NOARGS, "The current protocol."},
    {"get_extra_info", (PyCFunction)(void (*)(void))dgram_py_get_extra_info, METH_FASTCALL,
     "get_extra_info(name, default=None): socket, sockname, peername, ..."},
    {"_start_reading", (PyCFunction)dgram_py_start_reading, METH_NOARGS, NULL},
    {"_read_ready", (PyCFunction)dgram_py_read_ready, METH_NOARGS, NULL},
    {"_sendto_ready", (PyCFunction)dgram_py_sendto_ready, METH_NOARGS, NULL},
    {"_call_connection_lost", (PyCFunction)dgram_py_call_connection_lost, METH_O, NULL},
    {"_force_close", (PyCFunction)dgram_py_force_close, METH_O, NULL},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef dgram_getset[] = {
    {"_loop", (getter)dgram_get_loop, NULL, NULL, NULL},
    {"_sock", (getter)dgram_get_sock, NULL, NULL, NULL},
    {"_sock_fd", (getter)dgram_get_sock_fd, NULL, NULL, NULL},
    {"_protocol", (getter)dgram_get_protocol_attr, NULL, NULL, NULL},
    {"_address", (getter)dgram_get_address, NULL, NULL, NULL},
    {"_closing", (getter)dgram_get_closing, NULL, NULL, NULL},
    {"_conn_lost", (getter)dgram_get_conn_lost, NULL, NULL, NULL},
    {"_paused", (getter)dgram_get_paused, NULL, NULL, NULL},
    {"_protocol_paused", (getter)dgram_get_protocol_paused, NULL, NULL, NULL},
    {"_buffer_size", (getter)dgram_get_buffer_size, NULL, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef dgram_members[] = {
    {"__weaklistoffset__", T_PYSSIZET, offsetof(zl_datagram, weakreflist), READONLY, NULL},
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
zl_datagram_type_create(PyObject *bases)
{
    PyObject *tuple;
    if (PyTuple_Check(bases)) {
        Py_INCREF(bases);
        tuple = bases;
    } else if ((tuple = PyTuple_Pack(1, bases)) == NULL) {
        return NULL;
    }
    Py_ssize_t expected = (Py_ssize_t)offsetof(zl_datagram, extra) + (Py_ssize_t)sizeof(PyObject *);
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(tuple); i++) {
        PyObject *base = PyTuple_GET_ITEM(tuple, i);
        if (!PyType_Check(base) || ((PyTypeObject *)base)->tp_basicsize != expected) {
            Py_DECREF(tuple);
            PyErr_SetString(PyExc_ImportError, "asyncio.DatagramTransport has an unexpected layout");
            return NULL;
        }
    }
    PyObject *type = PyType_FromSpecWithBases(&dgram_spec, tuple);
    Py_DECREF(tuple);
    if (type == NULL) {
        return NULL;
    }
    Py_XSETREF(zl_datagram_type, (PyTypeObject *)type);
    Py_INCREF(type);
    return type;
}
