/* core/transport_common.h — what the stream and datagram transports share: the head of their objects (loop, socket,
 * protocol, flags, water marks) and the asyncio _SelectorTransport logic both run the same way over it. */
#ifndef ZL_TRANSPORT_COMMON_H
#define ZL_TRANSPORT_COMMON_H

#include "zloop.h"

#define ZL_LOG_THRESHOLD_FOR_CONNLOST_WRITES 5    /* asyncio.constants */
#define ZL_DEFAULT_HIGH_WATER (64 * 1024)

typedef struct zl_transport zl_transport;

/* What differs between the stream and the datagram transport where the shared code needs it: one static table
 * per transport type. Read on the close, error and Python-API paths only; the I/O dispatch is given on_readable
 * and on_writable once, when the fd is watched, and calls them as before. */
typedef struct zl_transport_kind {
    zl_io_fn on_readable;                         /* the fd's reader in the I/O dispatch ... */
    zl_io_fn on_writable;                         /* ... and its writer */
    int (*set_protocol)(zl_transport *t, PyObject *protocol);  /* take a protocol and the methods it is called by */
    void (*release_connection)(zl_transport *t);  /* after connection_lost: drop what only the connection needed */
    void (*queue_drop)(zl_transport *t);          /* abort: forget all that waits to be sent */
    size_t queue_count_offset;                    /* offsetof the queue's entry count (a size_t) in the object */
    size_t queue_bytes_offset;                    /* ... and of its byte total: get_write_buffer_size() */
    PyObject *(*make_extra)(zl_transport *t);     /* the extra dict, made when first asked (NULL: made at creation) */
    /* Optional: start or stop reading through completions instead of readiness; 1 when done so, 0 to watch the fd
     * as usual, -1 with an exception set (stream_ring.c). */
    int (*recv_arm)(zl_transport *t);
    int (*recv_disarm)(zl_transport *t);
} zl_transport_kind;

/* The head both transport objects start with (as their first member, named base). */
struct zl_transport {
    PyObject_HEAD
    PyObject *extra;                 /* asyncio.BaseTransport's _extra slot: must come right after the header */
    PyObject *weakreflist;
    PyObject *dict;                  /* instance __dict__ (made when first set): methods patched per transport */
    PyObject *context;               /* a copy of the context current at creation: readiness callbacks run in it */
    zl_loop *loop;
    PyObject *sock;                  /* the socket object (made when asked, see fd_owned); NULL once closed */
    PyObject *protocol;
    const zl_transport_kind *kind;
    Py_ssize_t high_water;
    Py_ssize_t low_water;
    int fd;
    const int *sock_fd;              /* where the socket object keeps its fd (&fd when it is not a socket.socket) */
    int conn_lost;
    unsigned char closing;
    unsigned char reading_paused;
    unsigned char protocol_paused;   /* pause_writing() was called */
    unsigned char protocol_connected;
    unsigned char reading;           /* registered with the loop for reading */
    unsigned char writing;           /* ... and for writing */
    unsigned char fd_owned;          /* made from a bare fd (accepted in C): open, no socket object asked for yet */
};

/* The connection is open: connection_lost has not closed the socket (or the bare fd) yet. */
static inline int
zl_transport_is_open(const zl_transport *t)
{
    return t->sock != NULL || t->fd_owned;
}

/* The caller closed (or detached) the socket object behind the transport's back: its number may name another
 * file by now, so the transport must not use it. asyncio's socket calls fail with EBADF then; so do ours. */
static inline int
zl_transport_sock_gone(const zl_transport *t)
{
    return *t->sock_fd != t->fd;
}

/* ------------------------------------------------------------------ scheduling */

/* The transport's own method `name`, looked up now, called with arg (none when NULL) on the next iteration. */
int zl_transport_call_soon_method(zl_transport *t, PyObject *name, PyObject *arg);
/* The same in the transport's own context, the one its protocol callbacks run in, whoever schedules it (a
 * resume_reading() from a task must not hand the task's context on to data_received or connection_lost). */
int zl_transport_call_soon_method_in_own_context(zl_transport *t, PyObject *name, PyObject *arg);

/* ------------------------------------------------------------------ watching the fd (flag checks inline) */

int zl_transport_watch(zl_transport *t, int event);
void zl_transport_unwatch(zl_transport *t, int event);

static inline int
zl_transport_is_reading(zl_transport *t)
{
    return !t->closing && !t->reading_paused;
}

static inline int
zl_transport_start_reading(zl_transport *t)
{
    return t->reading || t->conn_lost ? 0 : zl_transport_watch(t, ZL_EV_READ);
}

static inline int
zl_transport_start_writing(zl_transport *t)
{
    return t->writing ? 0 : zl_transport_watch(t, ZL_EV_WRITE);
}

static inline void
zl_transport_stop_reading(zl_transport *t)
{
    if (t->reading) {
        zl_transport_unwatch(t, ZL_EV_READ);
    }
}

static inline void
zl_transport_stop_writing(zl_transport *t)
{
    if (t->writing) {
        zl_transport_unwatch(t, ZL_EV_WRITE);
    }
}

/* ------------------------------------------------------------------ flow control (threshold checks inline) */

/* protocol.pause_writing() / resume_writing(), the flag already set; -1 only when the loop must stop. */
int zl_transport_pause_protocol(zl_transport *t);
int zl_transport_resume_protocol(zl_transport *t);

static inline int
zl_transport_maybe_pause_protocol(zl_transport *t, size_t queued_bytes)
{
    if ((Py_ssize_t)queued_bytes <= t->high_water || t->protocol_paused) {
        return 0;
    }
    t->protocol_paused = 1;
    return zl_transport_pause_protocol(t);
}

static inline int
zl_transport_maybe_resume_protocol(zl_transport *t, size_t queued_bytes)
{
    if (!t->protocol_paused || (Py_ssize_t)queued_bytes > t->low_water) {
        return 0;
    }
    t->protocol_paused = 0;
    return zl_transport_resume_protocol(t);
}

/* A send after the connection is lost is dropped; asyncio warns once they keep coming. 0, or -1 (warning raised). */
int zl_transport_drop_after_lost(zl_transport *t);

/* ------------------------------------------------------------------ errors and closing */

/* asyncio's _fatal_error: report (OSErrors only in debug mode), then close at once. Consumes exc.
 * -1 only when something must stop the loop. */
int zl_transport_fatal_error(zl_transport *t, PyObject *exc, const char *message);

/* close(): stop reading, and lose the connection now when nothing waits to be sent. */
int zl_transport_close(zl_transport *t);
/* Schedule _call_connection_lost(exc, or None when exc is NULL). */
int zl_transport_call_connection_lost_soon(zl_transport *t, PyObject *exc);

/* ------------------------------------------------------------------ lifetime */

int zl_transport_traverse(zl_transport *t, visitproc visit, void *arg);
void zl_transport_clear(zl_transport *t);
/* The finalizer for a transport never closed: ResourceWarning, fd released, socket closed, the raised exception
 * kept aside meanwhile. 1 when it was such a transport, 0 when connection_lost had run already. */
int zl_transport_finalize_unclosed(zl_transport *t);
/* Dealloc in two halves around the type's own clearing: begin is -1 when the finalizer resurrected the object. */
int zl_transport_dealloc_begin(zl_transport *t);
void zl_transport_dealloc_end(zl_transport *t);

/* ------------------------------------------------------------------ creation */

/* The transport types exist and the loop is open; -1 with an exception set otherwise. */
int zl_transport_check_creatable(zl_loop *loop, PyTypeObject *type);
/* A new transport of type for sock: loop, fd, socket, kind and default water marks set. */
zl_transport *zl_transport_new(PyTypeObject *type, const zl_transport_kind *kind, zl_loop *loop, PyObject *sock);
/* The same for a bare fd it now owns (the socket object made only when asked), running its callbacks in context
 * (stolen, also on failure). On failure the caller still owns fd. */
zl_transport *zl_transport_new_for_fd(PyTypeObject *type, const zl_transport_kind *kind, zl_loop *loop, int fd,
                                      PyObject *context);
/* The socket object (a borrowed reference), made now from the fd the transport owns when none was asked for yet;
 * NULL without an exception once the connection is closed, NULL with one when making it failed. */
PyObject *zl_transport_socket(zl_transport *t);
/* Where a socket.socket keeps its fd, when sock is one holding fd; NULL otherwise. */
const int *zl_transport_sock_fd_field(zl_state *state, PyObject *sock, int fd);
/* dict(extra or {}) with 'socket', 'sockname' and 'peername' as asyncio's transports give them. */
PyObject *zl_transport_build_extra(zl_loop *loop, PyObject *sock, PyObject *extra);
/* Own the fd (the fd table answers loop._fd_transport), schedule connection_made, _start_reading and the waiter. */
int zl_transport_open(zl_transport *t, PyObject *waiter);
/* Creation failed: drop the transport without closing the caller's socket. Returns NULL. */
PyObject *zl_transport_discard(zl_transport *t);
/* The type from spec over bases (a tuple of types whose instances hold only the _extra slot); kept in *slot too. */
PyObject *zl_transport_type_create(PyObject *module, PyType_Spec *spec, PyObject *bases, const char *layout_error,
                                   PyTypeObject **slot);

/* ------------------------------------------------------------------ Python methods and getters both types have */

PyObject *zl_transport_py_close(zl_transport *self, PyObject *ignored);
PyObject *zl_transport_py_abort(zl_transport *self, PyObject *ignored);
PyObject *zl_transport_py_force_close(zl_transport *self, PyObject *exc);
PyObject *zl_transport_py_call_connection_lost(zl_transport *self, PyObject *exc);
PyObject *zl_transport_py_is_closing(zl_transport *self, PyObject *ignored);
PyObject *zl_transport_py_is_reading(zl_transport *self, PyObject *ignored);
PyObject *zl_transport_py_pause_reading(zl_transport *self, PyObject *ignored);
PyObject *zl_transport_py_resume_reading(zl_transport *self, PyObject *ignored);
PyObject *zl_transport_py_start_reading(zl_transport *self, PyObject *ignored);
PyObject *zl_transport_py_get_write_buffer_size(zl_transport *self, PyObject *ignored);
PyObject *zl_transport_py_get_write_buffer_limits(zl_transport *self, PyObject *ignored);
PyObject *zl_transport_py_set_write_buffer_limits(zl_transport *self, PyObject *args, PyObject *kwds);
PyObject *zl_transport_py_set_protocol(zl_transport *self, PyObject *protocol);
PyObject *zl_transport_py_get_protocol(zl_transport *self, PyObject *ignored);
PyObject *zl_transport_py_get_extra_info(zl_transport *self, PyObject *const *args, Py_ssize_t nargs,
                                         PyObject *kwnames);

/* Getters of asyncio's private attributes: _loop (None once closed), _sock, _sock_fd, _protocol, ... */
PyObject *zl_transport_get_loop(zl_transport *self, void *closure);
PyObject *zl_transport_get_sock(zl_transport *self, void *closure);
PyObject *zl_transport_get_sock_fd(zl_transport *self, void *closure);
PyObject *zl_transport_get_protocol(zl_transport *self, void *closure);
PyObject *zl_transport_get_closing(zl_transport *self, void *closure);
PyObject *zl_transport_get_conn_lost(zl_transport *self, void *closure);
PyObject *zl_transport_get_paused(zl_transport *self, void *closure);
PyObject *zl_transport_get_protocol_paused(zl_transport *self, void *closure);

/* Method-table rows the two types share word for word, in the place both tables have them. */
#define ZL_TRANSPORT_BUFFER_AND_PROTOCOL_METHODS                                                                       \
    {"get_write_buffer_size", (PyCFunction)zl_transport_py_get_write_buffer_size, METH_NOARGS, "Bytes queued."},       \
    {"get_write_buffer_limits", (PyCFunction)zl_transport_py_get_write_buffer_limits, METH_NOARGS, "(low, high)."},    \
    {"set_write_buffer_limits", (PyCFunction)(void (*)(void))zl_transport_py_set_write_buffer_limits,                  \
     METH_VARARGS | METH_KEYWORDS, "Set the water marks for pause_writing/resume_writing."},                           \
    {"set_protocol", (PyCFunction)zl_transport_py_set_protocol, METH_O, "Switch to another protocol."},                \
    {"get_protocol", (PyCFunction)zl_transport_py_get_protocol, METH_NOARGS, "The current protocol."},                 \
    {"get_extra_info", (PyCFunction)(void (*)(void))zl_transport_py_get_extra_info, METH_FASTCALL | METH_KEYWORDS,     \
     "get_extra_info(name, default=None): socket, sockname, peername, ..."},                                           \
    {"_start_reading", (PyCFunction)zl_transport_py_start_reading, METH_NOARGS, NULL}

#endif /* ZL_TRANSPORT_COMMON_H */
