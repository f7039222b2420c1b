/* core/zloop.h — the core's shared types: the loop object, handles, the fd table and the module-wide state.
 * Everything declared here runs with the GIL held; only the backend's poll runs without it. */
#ifndef ZL_ZLOOP_H
#define ZL_ZLOOP_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <sys/socket.h>

#include "backend.h"
#include "interned_names.h"
#include "loop_stats.h"
#include "ready_queue.h"
#include "threadsafe_inbox.h"
#include "timer_heap.h"

typedef struct zl_loop zl_loop;
typedef struct zl_state zl_state;

/* ------------------------------------------------------------------ handles (core/handle.c) */

#define ZL_HANDLE_INLINE_ARGS 3
#define ZL_HANDLE_FREELIST_MAX 256        /* freed handles kept for reuse, per kind, in the module state */

#define ZL_TIMER_IN_HEAP 1            /* zl_handle.scheduled: in loop->timers */
#define ZL_TIMER_DUE 2                /* in loop->timers_due: already due when scheduled (call_later(0)) */

/* A handle copies the current context untracked only once the loop holds this many handles: below, the few
 * young contexts cost the collector less than tracking them back before they are freed would cost each call. */
#define ZL_UNTRACKED_CONTEXT_MIN_QUEUED 512

typedef struct zl_handle {
    PyObject_HEAD
    PyObject *callback;               /* NULL once cancelled */
    PyObject **args;                  /* inline_args, or the items of args_tuple */
    PyObject *args_tuple;             /* owns the arguments when there are more than fit inline */
    PyObject *inline_args[ZL_HANDLE_INLINE_ARGS];
    PyObject *context;                /* contextvars.Context the callback runs in */
    zl_loop *loop;
    PyObject *source_traceback;       /* debug mode only */
    PyObject *cancelled_repr;         /* debug mode: repr taken when cancelled */
    PyObject *weakreflist;
    int nargs;                        /* int, next to the flags: a handle fits 160 bytes with its GC header */
    unsigned char cancelled;
    unsigned char running;            /* its callback is executing: cancel leaves the arguments alone */
    unsigned char is_timer : 1;
    unsigned char context_untracked : 1; /* the copied context is not tracked by the GC (handle_gc.h) */
    unsigned char context_deferred : 1; /* context is NULL: the current one was empty, a fresh one is made on use */
    unsigned char threadsafe : 1;     /* from call_soon_threadsafe: other threads wait while it runs (3.14) */
    unsigned char in_inbox : 1;       /* its record (number seq) waits in loop->inbox (threadsafe_inbox.h) */
    unsigned char scheduled;          /* timers: ZL_TIMER_IN_HEAP or ZL_TIMER_DUE while the loop holds them */
    unsigned long run_thread;         /* threadsafe handles: the thread running the callback */
    double when;                      /* timers: deadline */
    uint64_t seq;                     /* timers in the due queue: their place in scheduling order; in_inbox:
                                         the number of its record */
    PyObject *when_given;             /* call_at(when) given as an int: when() returns it, as asyncio keeps it */
} zl_handle;

extern PyType_Spec zl_handle_spec;
extern PyType_Spec zl_timer_handle_spec;   /* made with Handle as its base */

/* A new Handle (or TimerHandle when is_timer) for callback(*args) in context (NULL: copy the current one). */
zl_handle *zl_handle_new(zl_loop *loop, PyObject *callback, PyObject *const *args, Py_ssize_t nargs,
                         PyObject *context, int is_timer, double when);

/* Handle types are made by the loop only (Python cannot instantiate them); 3.9 has no flag for it. */
#ifdef Py_TPFLAGS_DISALLOW_INSTANTIATION
#define ZL_TPFLAGS_NO_NEW Py_TPFLAGS_DISALLOW_INSTANTIATION
#else
#define ZL_TPFLAGS_NO_NEW 0
#endif

/* Run the handle's callback in its context. Exceptions go to the loop's exception handler;
 * returns -1 only for SystemExit/KeyboardInterrupt (or a failing handler), which must stop the loop. */
int zl_handle_run(zl_handle *handle);

/* Mark cancelled and drop the callback and arguments. */
void zl_handle_cancel(zl_handle *handle);

/* callback(*args) with context entered (a handle's run); NULL with an exception set when either failed. */
static inline PyObject *
zl_call_in_context(PyObject *context, PyObject *callback, PyObject *const *args, Py_ssize_t nargs)
{
    if (PyContext_Enter(context) < 0) {
        return NULL;
    }
    PyObject *res = PyObject_Vectorcall(callback, args, nargs, NULL);
    if (PyContext_Exit(context) < 0) {
        Py_CLEAR(res);
    }
    return res;
}

/* Hand the raised exception to the loop's exception handler for handle; -1 if the loop must stop. */
int zl_handle_report_error(zl_handle *handle);

/* ------------------------------------------------------------------ fd table (core/io_watch.c) */

/* A C reader/writer, for transports: called from the I/O dispatch with the GIL held, no Handle in between.
 * Errors must be handled inside (reported to the exception handler); a -1 return stops the loop with the
 * exception set (SystemExit, KeyboardInterrupt). */
typedef int (*zl_io_fn)(PyObject *owner, int fd);

typedef struct zl_io_side {
    PyObject *handle;                 /* add_reader/add_writer Handle, queued when ready */
    zl_io_fn fn;                      /* or a C callback ... */
    PyObject *owner;                  /* ... and the object it is for (owned) */
    PyObject *fileobj;                /* the file object add_reader/add_writer got (not an int), so that
                                         remove_reader/remove_writer find it after it was closed */
} zl_io_side;

typedef struct zl_io_slot {
    zl_io_side read;
    zl_io_side write;
    int registered;                   /* events currently given to the backend */
    int stale;                        /* of those, the ones removed but not yet dropped from the backend */
    int stale_listed;                 /* fd is in io.stale_fds */
    uint64_t stale_since;             /* io.generation when they went stale */
    PyObject *stale_fileobj[2];       /* the file object each stale side had (read, write): owned */
    PyObject *transport_owner;        /* borrowed: the transport owning this fd (add_reader/add_writer refuse it) */
} zl_io_slot;

typedef struct zl_io_table {
    zl_io_slot *slots;                /* indexed by fd */
    int len;
    int used;                         /* 1 + the highest fd ever given a slot: slots from here on were never written,
                                         so walks of the table (GC traverse, close) stop here */
    int watched;                      /* slots with registered != 0 */
    PyObject *deferred_fn;            /* callable of the handles that run a C callback later (made on first use) */
    PyObject *deferred_context;       /* the (empty) context those handles run in */
    int *stale_fds;                   /* fds whose slot may have stale events, each once (or its stale is 0) */
    int stale_len, stale_cap;
    uint64_t generation;              /* polls so far, for stale_since */
} zl_io_table;

/* ------------------------------------------------------------------ the loop (core/loop.c, core/run_once.c) */

struct zl_loop {
    PyObject_HEAD
    zl_state *state;                  /* the state of the module that made the loop's type (module.c) */
    PyObject *module;                 /* that module, owned: the state lives as long as the loop */
    const zl_backend_ops *ops;
    zl_backend *backend;              /* NULL once closed */
    zl_ready_queue ready;
    zl_ready_queue ready_later;       /* what C I/O callbacks schedule while the dispatch runs them (see io_watch.c) */
    zl_inbox inbox;                   /* call_soon_threadsafe records, one per ZL_INBOX_MARK in the two queues above */
    zl_timer_heap timers;
    zl_ready_queue timers_due;        /* timers due when scheduled, in (deadline, sequence) order: they skip the heap
                                         and are merged with the heap's due timers in run_once.c */
    zl_io_table io;
    uint64_t timer_seq;
    Py_ssize_t timer_cancelled_count;
    double clock_resolution;
    double slow_callback_duration;
    unsigned long thread_id;          /* thread running the loop, 0 when not running */
    PyObject *current_handle;         /* debug mode: the handle being run */
    PyObject *task_factory;           /* set_task_factory(), or NULL */
    PyObject *time_override;          /* a `time` set on the instance (tests mock loop.time): the clock while set */
    int debug;
    int stopping;
    int closed;
    int in_io_callback;               /* a C I/O callback is running inside the dispatch */
    int wake_only_fd;                 /* an fd whose readiness only wakes the loop (the signal socket with no
                                         signal handlers), or -1: see run_once.c */
    volatile int polling;             /* blocked in the backend's poll, GIL released */
    volatile int wake_pending;        /* a wake() was sent for this poll */
    zl_loop_stats stats;              /* loop.stats(): counters, and timings while stats.timing (loop_stats.c) */
    unsigned char completion;         /* stream transports use the backend's completion contract (stream_ring.c) */
    PyObject *ring_users;             /* set of transports with a completion operation in flight, or NULL */
    PyObject *dgram_flush;            /* list of datagram transports whose queue goes out before the next poll */
    uint64_t ring_datagrams_sent;     /* SENDMSGs queued in the ring (loop._ring_datagrams_sent) */
};

extern PyType_Spec zl_loop_spec;

/* The loop's clock: CLOCK_MONOTONIC in seconds, the clock of time.monotonic(). */
double zl_loop_clock(void);

/* What loop.time() says: the clock, or what a `time` set on the loop instance returns, as asyncio asks self.time()
 * for its timers. -1 with an exception set when that raised or returned no number. */
int zl_loop_now(zl_loop *loop, double *now);

/* One iteration: poll, queue ready I/O and expired timers, run what was ready when it started. */
int zl_loop_run_once(zl_loop *loop);

/* Iterate until stop() is called. -1 with an exception set when something must end the loop. */
int zl_loop_run_until_stopped(zl_loop *loop);

/* Queue a handle that was just scheduled (steals the reference). What a C I/O callback schedules while the
 * dispatch runs it waits behind this iteration's I/O handles and timers, where asyncio, which runs every I/O
 * callback as a handle, would queue it. */
static inline int
zl_loop_schedule(zl_loop *loop, PyObject *handle)
{
    return zl_ready_queue_push(loop->in_io_callback ? &loop->ready_later : &loop->ready, handle);
}

/* The same, out of line. */
int zl_loop_enqueue(zl_loop *loop, PyObject *handle);

/* Called by TimerHandle.cancel for a timer still in the heap. */
void zl_loop_timer_cancelled(zl_loop *loop);

/* RuntimeError('Event loop is closed') when it is; -1 then. */
int zl_loop_check_closed(zl_loop *loop);

/* loop statistics (core/loop_stats.c): loop.stats(), loop.set_stats(flag); ending the open span of timed handles
 * (`last`: the handle that just ran, or NULL), closing it if one is open (before a poll, at the end of a run) */
PyObject *zl_loop_stats_dict(zl_loop *loop, PyObject *ignored);
PyObject *zl_loop_set_stats(zl_loop *loop, PyObject *enabled);
void zl_loop_stats_span_end(zl_loop *loop, zl_handle *last);
void zl_loop_stats_span_close(zl_loop *loop);

/* loop.create_task and create_future (core/task_create.c) */
PyObject *zl_loop_create_task(zl_loop *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames);
PyObject *zl_loop_create_future(zl_loop *self, PyObject *ignored);

/* stream transports (core/stream_transport.c) */
PyObject *zl_loop_make_socket_transport(zl_loop *loop, PyObject *args, PyObject *kwds);
PyObject *zl_stream_type_create(PyObject *module, PyObject *transport_base);
/* The transport of a connection accepted in C on fd (owned by it from then on, unless this fails: NULL), running
 * in context, with addrs (a zl_sock_addrs, core/sock_addr.h); both stolen. tcp: set TCP_NODELAY. */
struct zl_sock_addrs;
PyObject *zl_stream_accepted(zl_loop *loop, int fd, struct zl_sock_addrs *addrs, int tcp, PyObject *context,
                             PyObject *protocol, PyObject *server);

/* The server a stream transport counts in (borrowed), or NULL: none, or obj is no stream transport. */
PyObject *zl_stream_server_of(zl_state *state, PyObject *obj);

/* accepting in C (core/stream_server.c): loop._make_acceptor(sock, protocol_factory, server, backlog, on_error,
 * report) */
PyObject *zl_loop_make_acceptor(zl_loop *loop, PyObject *args, PyObject *kwds);
/* loop._server_clients(server): the stream transports counted by server that still hold their fd. */
PyObject *zl_loop_server_clients(zl_loop *loop, PyObject *server);
/* loop._fd_transport(fd): the open transport owning fd, or None. */
PyObject *zl_loop_fd_transport(zl_loop *loop, PyObject *fileobj);

/* datagram transports (core/datagram_transport.c) */
PyObject *zl_loop_make_datagram_transport(zl_loop *loop, PyObject *args, PyObject *kwds);
PyObject *zl_datagram_type_create(PyObject *module, PyObject *bases);

/* fd table */
int zl_io_dispatch(zl_loop *loop, const zl_fired *fired, int count);
int zl_io_set_side(zl_loop *loop, int fd, int events, PyObject *handle, zl_io_fn fn, PyObject *owner);
int zl_io_clear_side(zl_loop *loop, int fd, int events, int *was_set);
void zl_io_release_all(zl_loop *loop);
int zl_io_adopt_fd(zl_loop *loop, int fd, PyObject *owner);
void zl_io_disown_fd(zl_loop *loop, int fd, PyObject *owner);
void zl_io_clear_owned_side(zl_loop *loop, int fd, int event, PyObject *owner);
int zl_io_traverse(zl_io_table *io, visitproc visit, void *arg);
void zl_io_free_slots(zl_io_table *io);
/* Before each poll: drop from the backend the stale events (all of them before a blocking poll). */
void zl_io_drop_stale(zl_loop *loop, int blocking);
/* The fds the loop watches for someone (stale-only registrations left out). */
int zl_io_wanted_count(zl_io_table *io);
PyObject *zl_loop_add_reader(zl_loop *loop, PyObject *const *args, Py_ssize_t nargs);
PyObject *zl_loop_add_writer(zl_loop *loop, PyObject *const *args, Py_ssize_t nargs);
PyObject *zl_loop_remove_reader(zl_loop *loop, PyObject *fileobj);
PyObject *zl_loop_remove_writer(zl_loop *loop, PyObject *fileobj);
int zl_fileobj_to_fd(PyObject *fileobj);
/* The same for a loop's add/remove calls: fileno() called through the module's interned name. */
int zl_loop_fileobj_to_fd(zl_loop *loop, PyObject *fileobj);

/* loop._sock_recv_now / loop._sock_send_now (core/sock_now.c): one recv/send on a non-blocking socket, None when
 * it would block. */
PyObject *zl_loop_sock_recv_now(PyObject *loop, PyObject *const *args, Py_ssize_t nargs);
PyObject *zl_loop_sock_send_now(PyObject *loop, PyObject *const *args, Py_ssize_t nargs);

/* ------------------------------------------------------------------ module state (python/module.c) */

/* What one zloop._zloop module object (one per interpreter) owns: its types, the Python hooks and asyncio objects
 * the core calls, interned names. Loops reach it through loop->state, handles and transports through their loop. */
struct zl_state {
    PyTypeObject *loop_type;          /* LoopCore */
    PyTypeObject *handle_type;        /* Handle */
    PyTypeObject *timer_handle_type;  /* TimerHandle */
    PyTypeObject *stream_type;        /* TCPTransport, made once asyncio is imported (_set_hooks) */
    PyTypeObject *datagram_type;      /* UDPTransport, likewise */
    PyTypeObject *socket_type;        /* _socket.socket, looked up on first use (transport_common.c) */
    PyTypeObject *acceptor_type;      /* the C accept loop of plain servers, made on first use (stream_server.c) */
    PyObject *report_callback_error;  /* zloop._hooks.report_callback_error(handle, exc) */
    PyObject *warn_slow_callback;     /* zloop._hooks.warn_slow_callback(loop, handle, seconds) */
    PyObject *extract_stack;          /* zloop._hooks.extract_stack() -> traceback for debug mode */
    PyObject *format_handle;          /* zloop._hooks.format_handle_repr(handle) -> str */
    PyObject *check_callback;         /* zloop._hooks.check_callback(callback, method_name) (debug mode) */
    PyObject *task_type;              /* asyncio.Task (the C _asyncio.Task where available) */
    PyObject *tasks_namespace;        /* vars(asyncio.tasks): create_task follows a swapped-in tasks.Task */
    PyObject *str_Task;               /* "Task" (interned) */
    PyObject *set_result_unless_cancelled;  /* asyncio.futures._set_result_unless_cancelled */
    PyObject *transport_fatal_error;  /* zloop._hooks.transport_fatal_error(transport, exc, message) */
    PyObject *transport_protocol_error; /* zloop._hooks.transport_protocol_error(transport, exc, message) */
    PyObject *warn_send_after_lost;   /* zloop._hooks.warn_send_after_lost() */
    PyObject *transport_socket_type;  /* asyncio.trsock.TransportSocket */
    PyObject *buffered_protocol_type; /* asyncio.BufferedProtocol */
    PyObject *future_type;            /* asyncio.Future (the C _asyncio.Future where available) */
    PyObject *kwnames_loop;           /* ("loop",) */
    PyObject *kwnames_loop_name;      /* ("loop", "name") */
    PyObject *kwnames_loop_name_context; /* ("loop", "name", "context") */
    PyObject *str_context;            /* "context" (interned) */
    PyObject *str_context_alias;      /* another str "context" a caller passes: see zl_kwname_equals */
    PyObject *str_name;               /* "name" (interned) */
    PyObject *str_name_alias;
    PyObject *names[ZL_NAME_COUNT];   /* interned attribute names of the per-connection paths (ZL_NAME) */
    zl_handle *handle_freelist[2][ZL_HANDLE_FREELIST_MAX];   /* [is_timer]: not objects (no type reference) */
    int handle_freelist_len[2];
    struct zl_tls_state *tls;         /* the TLS types and what they call, once _set_hooks(tls=...) ran (core/tls.h) */
    PyObject *read_spare;             /* the bytes the next large stream read goes into (read_spare.c) */
    char *read_buffer;                /* stream reads land here before becoming bytes (stream_transport.c) */
    char *recv_buffer;                /* datagrams likewise (datagram_transport.c) */
    char *sock_recv_buffer;           /* loop.sock_recv's reads on a plain socket (sock_now.c) */
    int counted;                      /* in module.c's count of live states */
};

/* Free the handles kept for reuse (module teardown). */
void zl_handle_freelist_clear(zl_state *state);

/* The state of the zloop module that made `type` or one of its bases; the module in *module (borrowed).
 * NULL with TypeError set when no zloop type is among them. */
zl_state *zl_state_of_type(PyTypeObject *type, PyObject **module);

/* A new reference to value, or to None when value is NULL (getters of optional fields). */
static inline PyObject *
zl_ref_or_none(PyObject *value)
{
    if (value == NULL) {
        Py_RETURN_NONE;
    }
    Py_INCREF(value);
    return value;
}

/* Whether the keyword name `name` (always a str) equals `interned`. Callers pass the same few string objects every
 * time, not always the interned one (3.11's _asyncio passes a static "context" of its own), so the last other object
 * that matched by value is kept in *alias (owned) and matches by identity from then on. */
static inline int
zl_kwname_equals(PyObject *name, PyObject *interned, PyObject **alias)
{
    if (name == interned || name == *alias) {
        return 1;
    }
    if (PyUnicode_Compare(name, interned) != 0) {
        return 0;
    }
    Py_INCREF(name);
    Py_XSETREF(*alias, name);
    return 1;
}

/* The raised exception is SystemExit or KeyboardInterrupt: it ends the loop instead of going to the handler. */
static inline int
zl_err_stops_loop(void)
{
    return PyErr_ExceptionMatches(PyExc_SystemExit) || PyErr_ExceptionMatches(PyExc_KeyboardInterrupt);
}

/* Exceptions across Python versions: fetch the raised exception (normalized, with traceback), or NULL. */
PyObject *zl_err_fetch(void);
void zl_err_restore(PyObject *exc);
/* PyContext_Exit(context) after a call that returned rc, its exception (rc < 0) set again afterwards; rc, or -1
 * with the exit's own error when the exit fails. */
int zl_context_exit_keeping_error(PyObject *context, int rc);

#endif /* ZL_ZLOOP_H */
