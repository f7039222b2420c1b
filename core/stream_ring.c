/* core/stream_ring.c — the completion path of the stream transport: a multishot recv armed while the transport
 * reads, one send in flight at a time from its write queue, data held while reading is paused, and the dispatch
 * of a poll's completions to their transports, a server's accepts to core/server_ring.c (docs/architecture.md). */
#include "stream_ring.h"
#include "datagram_ring.h"
#include "stream_server.h"

#include <errno.h>
#include <fcntl.h>

/* A tag names the state (inside its transport, 8-byte aligned) and the operation: the transport stays alive
 * (loop->ring_users) while one of its operations is in flight, so no completion outlives what it names. */
static uint64_t
ring_tag(zl_stream_ring *r, unsigned op)
{
    return (uint64_t)(uintptr_t)r | op;
}

static zl_loop *
ring_loop(zl_stream_ring *r)
{
    return r->t->loop;
}

int
zl_ring_users_keep(zl_loop *loop, PyObject *user, int want, unsigned char *kept)
{
    if (want && !*kept) {
        if (loop->ring_users == NULL && (loop->ring_users = PySet_New(NULL)) == NULL) {
            return -1;
        }
        if (PySet_Add(loop->ring_users, user) < 0) {
            return -1;
        }
        *kept = 1;
    } else if (!want && *kept) {
        *kept = 0;
        if (PySet_Discard(loop->ring_users, user) < 0) {
            PyErr_WriteUnraisable(user);
        }
    }
    return 0;
}

/* Keep the transport alive exactly while an operation of it is in flight. -1 (MemoryError) only when adding. */
static int
ring_keep(zl_stream_ring *r)
{
    return zl_ring_users_keep(ring_loop(r), (PyObject *)r->t, r->recv_armed || r->send_inflight, &r->kept);
}

void
zl_stream_ring_init(zl_stream_ring *r, zl_transport *t, zl_write_queue *out)
{
    r->t = t;
    r->out = out;
    /* An fd that names no open file is left to the readiness path, which fails as asyncio does: an OSError from
     * the handle that starts reading, not a fatal error on a completion (those are not reported for OSErrors). */
    r->on = t->loop->completion && fcntl(t->fd, F_GETFD) >= 0;
}

static int
ring_fatal(zl_stream_ring *r, int error, const char *message)
{
    errno = error;
    PyErr_SetFromErrno(PyExc_OSError);
    return zl_transport_fatal_error(r->t, zl_err_fetch(), message);
}

/* ------------------------------------------------------------------ receiving */

static int
ring_recv_start(zl_stream_ring *r)
{
    zl_loop *loop = ring_loop(r);
    int rc = loop->ops->recv_start(loop->backend, r->t->fd, ring_tag(r, ZL_RING_OP_RECV));
    if (rc < 0) {
        return ring_fatal(r, -rc, "Fatal read error on socket transport");
    }
    r->recv_armed = 1;
    return ring_keep(r);
}

int
zl_ring_schedule_delivery(zl_transport *t, unsigned char *scheduled)
{
    if (*scheduled) {
        return 0;
    }
    int rc = zl_transport_call_soon_method_in_own_context(t, ZL_NAME(t->loop->state, _deliver_held), NULL);
    *scheduled = rc == 0;
    return rc;
}

static int
ring_schedule_delivery(zl_stream_ring *r)
{
    return zl_ring_schedule_delivery(r->t, &r->delivery_scheduled);
}

static int
ring_has_held(zl_stream_ring *r)
{
    return (r->held != NULL && PyList_GET_SIZE(r->held) > 0) || r->held_eof;
}

int
zl_stream_ring_recv_arm(zl_stream_ring *r)
{
    if (!zl_stream_ring_active(r)) {
        return 0;
    }
    r->t->reading = 1;
    if (ring_has_held(r) && ring_schedule_delivery(r) < 0) {
        return -1;
    }
    /* A recv still armed (its cancel not completed yet) is re-armed by its last completion. */
    if (!r->recv_armed && !r->held_eof && ring_recv_start(r) < 0) {
        return -1;
    }
    return 1;
}

int
zl_stream_ring_recv_disarm(zl_stream_ring *r)
{
    if (!zl_stream_ring_active(r)) {
        return 0;
    }
    r->t->reading = 0;
    zl_loop *loop = ring_loop(r);
    if (r->recv_armed) {
        (void)loop->ops->cancel(loop->backend, ring_tag(r, ZL_RING_OP_RECV));
    }
    return 1;
}

int
zl_stream_ring_hold(zl_stream_ring *r, const char *data, Py_ssize_t n, int first)
{
    if (r->held == NULL && (r->held = PyList_New(0)) == NULL) {
        return -1;
    }
    PyObject *bytes = PyBytes_FromStringAndSize(data, n);
    int rc = bytes ? (first ? PyList_Insert(r->held, 0, bytes) : PyList_Append(r->held, bytes)) : -1;
    Py_XDECREF(bytes);
    return rc;
}

int
zl_stream_ring_deliver_held(zl_stream_ring *r)
{
    r->delivery_scheduled = 0;
    zl_transport *t = r->t;
    while (r->held != NULL && PyList_GET_SIZE(r->held) > 0 && t->reading && !t->conn_lost) {
        PyObject *bytes = PyList_GET_ITEM(r->held, 0);
        Py_INCREF(bytes);
        int rc = PyList_SetSlice(r->held, 0, 1, NULL);
        if (rc == 0) {
            rc = zl_stream_ring_deliver(t, PyBytes_AS_STRING(bytes), PyBytes_GET_SIZE(bytes));
        }
        Py_DECREF(bytes);
        if (rc < 0) {
            return -1;
        }
    }
    if (r->held_eof && t->reading && !t->conn_lost && (r->held == NULL || PyList_GET_SIZE(r->held) == 0)) {
        r->held_eof = 0;
        return zl_stream_ring_eof(t);
    }
    return 0;
}

/* Data, end of stream or an error of the recv. Held (in order) while reading is paused, while older data is
 * held, or while handles are queued (they ran first had the readiness dispatch deferred the read behind them). */
static int
ring_on_recv(zl_stream_ring *r, const zl_completion *c)
{
    zl_transport *t = r->t;
    if (!(c->flags & ZL_COMPLETION_MORE)) {
        r->recv_armed = 0;
    }
    if (t->closing || t->conn_lost || c->result == -ECANCELED || c->result == -ENOBUFS) {
        return 0;                      /* out of buffers: re-armed by the caller */
    }
    if (c->result < 0) {
        return ring_fatal(r, -c->result, "Fatal read error on socket transport");
    }
    int defer = !t->reading || ring_has_held(r) || ring_loop(r)->ready.len > 0;
    if (c->result > 0 &&
        (defer ? zl_stream_ring_hold(r, c->data, c->result, 0) : zl_stream_ring_deliver(t, c->data, c->result)) < 0) {
        return -1;
    }
    if (c->result == 0) {
        if (!defer) {
            return zl_stream_ring_eof(t);
        }
        r->held_eof = 1;
    }
    if (defer && t->reading && ring_schedule_delivery(r) < 0) {
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------ sending */

int
zl_stream_ring_send_queued(zl_stream_ring *r)
{
    if (r->send_inflight || r->out->count == 0) {
        return 0;
    }
    zl_write_chunk *chunk = &r->out->chunks[r->out->head];
    zl_loop *loop = ring_loop(r);
    int rc = loop->ops->send(loop->backend, r->t->fd, ring_tag(r, ZL_RING_OP_SEND), chunk->data, (size_t)chunk->len);
    if (rc < 0) {
        return zl_stream_ring_write_failed(r->t, -rc);
    }
    Py_INCREF(chunk->owner);
    r->send_owner = chunk->owner;
    r->send_inflight = 1;
    return ring_keep(r);
}

void
zl_stream_ring_queue_dropped(zl_stream_ring *r)
{
    if (!r->send_inflight) {
        return;
    }
    zl_loop *loop = ring_loop(r);
    if (loop->backend != NULL) {
        (void)loop->ops->cancel(loop->backend, ring_tag(r, ZL_RING_OP_SEND));
    }
}

static int
ring_on_send(zl_stream_ring *r, const zl_completion *c)
{
    zl_transport *t = r->t;
    r->send_inflight = 0;
    if (t->conn_lost || c->result == -ECANCELED || r->out->count == 0) {
        return 0;                      /* abort() dropped the queue */
    }
    if (c->result < 0) {
        return zl_stream_ring_write_failed(t, -c->result);
    }
    zl_write_queue_consume(r->out, (size_t)c->result);
    if (zl_transport_maybe_resume_protocol(t, r->out->bytes) < 0) {
        return -1;
    }
    if (r->out->count > 0) {
        return zl_stream_ring_send_queued(r);
    }
    return zl_stream_ring_drained(t);
}

/* ------------------------------------------------------------------ the loop's side */

static int
ring_on_completion(zl_stream_ring *r, const zl_completion *c)
{
    zl_transport *t = r->t;
    int send = (c->tag & ZL_RING_OP_MASK) == ZL_RING_OP_SEND;
    PyObject *sent_owner = send ? r->send_owner : NULL;
    if (send) {
        r->send_owner = NULL;
    }
    if (PyContext_Enter(t->context) < 0) {
        Py_XDECREF(sent_owner);
        return -1;
    }
    int rc = send ? ring_on_send(r, c) : ring_on_recv(r, c);
    /* A recv that ended (out of buffers, or after a cancel raced a resume) is re-armed while the transport reads. */
    if (rc == 0 && !send && !r->recv_armed && t->reading && !t->closing && !t->conn_lost && !r->held_eof &&
        c->result != 0 && (c->result > 0 || c->result == -ENOBUFS || c->result == -ECANCELED)) {
        rc = ring_recv_start(r);
    }
    rc = zl_context_exit_keeping_error(t->context, rc);
    Py_XDECREF(sent_owner);
    return rc;
}

static int
ring_dispatch_one(zl_loop *loop, const zl_completion *c)
{
    zl_stream_ring *r = (zl_stream_ring *)(uintptr_t)(c->tag & ~(uint64_t)ZL_RING_OP_MASK);
    PyObject *owner = (PyObject *)r->t;
    Py_INCREF(owner);
    /* What a send's completion schedules (connection_lost once close() has nothing left to send, a drain
     * waiter's wake-up) runs in this iteration, not the next: asyncio sends inside write(), so there it was
     * scheduled before this poll. A recv's is deferred as the readiness dispatch defers a read's. */
    loop->in_io_callback = (c->tag & ZL_RING_OP_MASK) != ZL_RING_OP_SEND;
    int rc = ring_on_completion(r, c);
    loop->in_io_callback = 0;
    if (rc == 0 && ring_keep(r) < 0) {
        rc = -1;
    }
    Py_DECREF(owner);
    return rc;
}

/* Every completion is handled even after one failed (a KeyboardInterrupt from a protocol): a send's completion
 * lost would leave its transport waiting for ever. The first exception is the one raised. */
int
zl_stream_ring_dispatch(zl_loop *loop, const zl_completion *done, int count)
{
    PyObject *first_exc = NULL;
    int failed = 0;
    for (int i = 0; i < count; i++) {
        unsigned op = (unsigned)(done[i].tag & ZL_RING_OP_MASK);
        int rc = op == ZL_RING_OP_ACCEPT       ? zl_server_ring_dispatch(loop, &done[i])
                 : op == ZL_RING_OP_DGRAM_RECV ? zl_dgram_ring_dispatch(loop, &done[i])
                 : op == ZL_RING_OP_DGRAM_SEND ? zl_dgram_ring_send_dispatch(loop, &done[i])
                                               : ring_dispatch_one(loop, &done[i]);
        if (rc < 0) {
            PyObject *exc = zl_err_fetch();
            failed = 1;
            if (first_exc == NULL) {
                first_exc = exc;
            } else {
                Py_XDECREF(exc);
            }
        }
    }
    if (first_exc != NULL) {
        zl_err_restore(first_exc);
    }
    return failed ? -1 : 0;
}

void
zl_stream_ring_forget_all(zl_loop *loop)
{
    PyObject *users = loop->ring_users;
    loop->ring_users = NULL;
    if (users == NULL) {
        return;
    }
    /* The ring is gone: no operation is in flight any more, nothing keeps these transports alive for one. */
    PyObject *iter = PyObject_GetIter(users);
    PyObject *transport;
    while (iter != NULL && (transport = PyIter_Next(iter)) != NULL) {
        if (zl_server_ring_forget(loop, transport) || zl_dgram_ring_forget(loop, transport)) {
            Py_DECREF(transport);
            continue;
        }
        zl_stream_ring *r = zl_stream_ring_of((zl_transport *)transport);
        r->recv_armed = 0;
        r->send_inflight = 0;
        r->kept = 0;
        Py_CLEAR(r->send_owner);
        Py_DECREF(transport);
    }
    if (iter == NULL || PyErr_Occurred()) {
        PyErr_WriteUnraisable(users);
    }
    Py_XDECREF(iter);
    Py_DECREF(users);
}

int
zl_stream_ring_traverse(zl_stream_ring *r, visitproc visit, void *arg)
{
    Py_VISIT(r->send_owner);
    Py_VISIT(r->held);
    return 0;
}

void
zl_stream_ring_clear(zl_stream_ring *r)
{
    Py_CLEAR(r->held);
    r->held_eof = 0;
    if (!r->send_inflight) {
        Py_CLEAR(r->send_owner);   /* in flight: the kernel may still read it, kept until its completion */
    }
}
