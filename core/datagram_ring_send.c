/* core/datagram_ring_send.c — sending datagrams through the ring: sendto() queues, the queue goes out before the
 * next poll as one hard-linked chain of SENDMSGs per transport, completions release it (docs/architecture.md). */
#include "datagram_ring.h"
#include "stream_ring.h"

#include <errno.h>
#include <limits.h>
#include <string.h>

#define ZL_DGRAM_SEND_PENDING INT_MIN   /* a slot's result before its completion */

static uint64_t
send_slot_tag(zl_dgram_send_slot *slot)
{
    return (uint64_t)(uintptr_t)slot | ZL_RING_OP_DGRAM_SEND;
}

int
zl_dgram_ring_sends(const zl_dgram_ring *r)
{
    return r->send_on && r->t->loop->backend != NULL;
}

int
zl_dgram_ring_send_queued(zl_dgram_ring *r)
{
    zl_loop *loop = r->t->loop;
    if (r->flush_listed || r->send_inflight > 0) {
        return 0;                      /* listed already, or listed again when the chain in flight completes */
    }
    if (loop->dgram_flush == NULL && (loop->dgram_flush = PyList_New(0)) == NULL) {
        return -1;
    }
    if (PyList_Append(loop->dgram_flush, (PyObject *)r->t) < 0) {
        return -1;
    }
    r->flush_listed = 1;
    return 0;
}

/* ------------------------------------------------------------------ a chain out */

/* Whether a queued datagram can go through the ring: connected, or its destination is in C form. */
static int
send_entry_fits(const zl_dgram_ring *r, const zl_dgram_entry *e)
{
    return r->use_send || (e->to.len > 0 && e->to.len <= sizeof(((zl_dgram_send_slot *)0)->to));
}

/* Fill slot for entry e; op says the kernel where it is. */
static void
send_slot_fill(zl_dgram_ring *r, zl_dgram_send_slot *slot, const zl_dgram_entry *e, zl_send_op *op)
{
    memset(&slot->msg, 0, sizeof(slot->msg));
    slot->ring = r;
    slot->result = ZL_DGRAM_SEND_PENDING;
    Py_INCREF(e->data);
    slot->data = e->data;
    slot->iov.iov_base = PyBytes_AS_STRING(e->data);
    slot->iov.iov_len = (size_t)PyBytes_GET_SIZE(e->data);
    slot->msg.msg_iov = &slot->iov;
    slot->msg.msg_iovlen = 1;
    if (!r->use_send) {
        memcpy(&slot->to, &e->to.storage, e->to.len);
        slot->msg.msg_name = &slot->to;
        slot->msg.msg_namelen = e->to.len;
    }
    op->tag = send_slot_tag(slot);
    op->msg = &slot->msg;
}

/* The queue goes on through readiness (dgram_sendto_ready sends it in order with sendto(2)): its head needs the
 * socket module (a host name), or the ring refused the chain. Nothing is in flight. */
static int
send_by_readiness(zl_dgram_ring *r)
{
    return zl_transport_start_writing(r->t);
}

/* The caller closed the socket behind the transport's back: each queued datagram fails with EBADF, as its sendto(2)
 * would have on readiness (the number may name another file now: it is not used). */
static int
send_queue_fail_gone(zl_dgram_ring *r)
{
    zl_transport *t = r->t;
    if (PyContext_Enter(t->context) < 0) {
        return -1;
    }
    int rc = 0;
    while (rc == 0 && r->out->count > 0 && !t->conn_lost) {
        zl_dgram_entry entry = zl_dgram_queue_pop(r->out);
        zl_dgram_entry_release(&entry);
        rc = zl_dgram_ring_send_error(t, EBADF);
    }
    if (rc == 0) {
        rc = zl_transport_maybe_resume_protocol(t, r->out->bytes);
    }
    return zl_context_exit_keeping_error(t->context, rc);
}

/* Queue the next chain of r's datagrams: the head of its queue, up to ZL_DGRAM_CHAIN_MAX. 0, or -1. */
static int
send_chain_submit(zl_dgram_ring *r)
{
    zl_transport *t = r->t;
    zl_dgram_queue *out = r->out;
    if (r->send_inflight > 0 || out->count == 0 || t->conn_lost || t->writing || !zl_dgram_ring_sends(r)) {
        return 0;
    }
    if (zl_transport_sock_gone(t)) {
        return send_queue_fail_gone(r);
    }
    if (!send_entry_fits(r, &out->entries[out->head])) {
        return send_by_readiness(r);
    }
    if (r->slots == NULL && (r->slots = PyMem_Calloc(ZL_DGRAM_CHAIN_MAX, sizeof(*r->slots))) == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    zl_send_op ops[ZL_DGRAM_CHAIN_MAX];
    int n = 0;
    while ((size_t)n < out->count && n < ZL_DGRAM_CHAIN_MAX && send_entry_fits(r, &out->entries[out->head + n])) {
        send_slot_fill(r, &r->slots[n], &out->entries[out->head + n], &ops[n]);
        n++;
    }
    zl_loop *loop = t->loop;
    int queued = loop->ops->sendmsg_chain(loop->backend, t->fd, ops, n);
    for (int i = queued < 0 ? 0 : queued; i < n; i++) {
        Py_CLEAR(r->slots[i].data);    /* built, not queued: the next chain takes them */
    }
    if (queued < 0) {
        return send_by_readiness(r);
    }
    r->send_inflight = queued;
    r->send_completed = 0;
    r->send_dropped = 0;
    loop->ring_datagrams_sent += (uint64_t)queued;
    return zl_dgram_ring_keep(r);
}

int
zl_dgram_ring_flush(zl_loop *loop)
{
    PyObject *list = loop->dgram_flush;
    Py_ssize_t n = list == NULL ? 0 : PyList_GET_SIZE(list);
    if (n == 0) {
        return 0;
    }
    /* The list is kept (no allocation per iteration); what an error_received() run here lists goes after n. */
    Py_INCREF(list);
    PyObject *stop = NULL;             /* a SystemExit or KeyboardInterrupt: raised once all are flushed */
    for (Py_ssize_t i = 0; i < n; i++) {
        zl_transport *t = (zl_transport *)PyList_GET_ITEM(list, i);
        zl_dgram_ring *r = zl_dgram_ring_of(t);
        r->flush_listed = 0;
        if (send_chain_submit(r) == 0) {
            continue;
        }
        if (stop == NULL && zl_err_stops_loop()) {
            stop = zl_err_fetch();
        } else {
            /* MemoryError: the datagrams stay queued, the next sendto() lists them again */
            PyErr_WriteUnraisable((PyObject *)t);
        }
    }
    int rc = PyList_SetSlice(list, 0, n, NULL);
    Py_DECREF(list);
    if (stop != NULL) {
        PyErr_Clear();
        zl_err_restore(stop);
        return -1;
    }
    return rc;
}

/* ------------------------------------------------------------------ a chain back */

/* Release the slots of the chain that completed, results into results[]; how many there were. */
static int
send_chain_release(zl_dgram_ring *r, int *results)
{
    int n = r->send_inflight;
    for (int i = 0; i < n; i++) {
        results[i] = r->slots[i].result;
        Py_CLEAR(r->slots[i].data);
    }
    r->send_inflight = 0;
    r->send_completed = 0;
    return n;
}

/* Take the sent (or failed) datagrams off the queue's head, in order. A -ECANCELED (an earlier one of the chain
 * failed) or -EAGAIN one and those after it stay at the head: sent again, ahead of newer ones. How many went. */
static int
send_chain_consume(zl_dgram_ring *r, const int *results, int n)
{
    if (r->send_dropped) {
        return 0;                      /* abort() emptied the queue: nothing of it is there any more */
    }
    int i = 0;
    for (; i < n && results[i] != -ECANCELED && results[i] != -EAGAIN && r->out->count > 0; i++) {
        zl_dgram_entry entry = zl_dgram_queue_pop(r->out);
        zl_dgram_entry_release(&entry);
    }
    return i;
}

/* What follows a completed chain, in the transport's context: errors to error_received, resume_writing, the next
 * chain or connection_lost after a close(). -1 only when the loop must stop. */
static int
send_chain_after(zl_dgram_ring *r, const int *results, int consumed, int stopped_by_eagain)
{
    zl_transport *t = r->t;
    for (int i = 0; i < consumed && !t->conn_lost; i++) {
        if (results[i] < 0 && zl_dgram_ring_send_error(t, -results[i]) < 0) {
            return -1;
        }
    }
    if (t->conn_lost) {
        return 0;
    }
    if (zl_transport_maybe_resume_protocol(t, r->out->bytes) < 0) {
        return -1;
    }
    if (r->out->count > 0) {
        return stopped_by_eagain ? send_by_readiness(r) : zl_dgram_ring_send_queued(r);
    }
    if (t->closing && !t->writing) {
        t->conn_lost++;                /* close() waited for these: as dgram_sendto_ready after the last one */
        return zl_transport_call_connection_lost_soon(t, NULL);
    }
    return 0;
}

static int
send_chain_done(zl_dgram_ring *r)
{
    int results[ZL_DGRAM_CHAIN_MAX];
    int n = send_chain_release(r, results);
    int consumed = send_chain_consume(r, results, n);
    int stopped_by_eagain = consumed < n && results[consumed] == -EAGAIN;
    zl_transport *t = r->t;
    if (PyContext_Enter(t->context) < 0) {
        return -1;
    }
    int rc = send_chain_after(r, results, consumed, stopped_by_eagain);
    return zl_context_exit_keeping_error(t->context, rc);
}

int
zl_dgram_ring_send_dispatch(zl_loop *loop, const zl_completion *c)
{
    (void)loop;
    zl_dgram_send_slot *slot = (zl_dgram_send_slot *)(uintptr_t)(c->tag & ~(uint64_t)ZL_RING_OP_MASK);
    zl_dgram_ring *r = slot->ring;
    slot->result = c->result;
    if (++r->send_completed < r->send_inflight) {
        return 0;                      /* the chain goes on: its datagrams are handled together, in order */
    }
    PyObject *owner = (PyObject *)r->t;
    Py_INCREF(owner);
    int rc = send_chain_done(r);
    if (zl_dgram_ring_keep(r) < 0) {
        rc = -1;
    }
    Py_DECREF(owner);
    return rc;
}

/* ------------------------------------------------------------------ abort, loop close, fork */

void
zl_dgram_ring_send_dropped(zl_dgram_ring *r)
{
    if (r->send_inflight == 0) {
        return;
    }
    r->send_dropped = 1;
    zl_loop *loop = r->t->loop;
    if (loop->backend == NULL) {
        return;
    }
    /* The one the kernel works on fails the rest of the chain; each is tried, as the first may just be done. */
    for (int i = 0; i < r->send_inflight; i++) {
        if (r->slots[i].result == ZL_DGRAM_SEND_PENDING) {
            (void)loop->ops->cancel(loop->backend, send_slot_tag(&r->slots[i]));
        }
    }
}

void
zl_dgram_ring_send_forget(zl_dgram_ring *r)
{
    int results[ZL_DGRAM_CHAIN_MAX];
    (void)send_chain_release(r, results);   /* the ring is gone: the queue keeps them, as unsent */
    r->flush_listed = 0;
}

/* In a fork child: what the transport had queued or in flight is the parent's to send (its kernel completes the
 * chain in flight, its next poll sends the rest), so the child drops it, and each datagram goes out once. */
static int
send_drop_inherited(zl_dgram_ring *r)
{
    zl_transport *t = r->t;
    int results[ZL_DGRAM_CHAIN_MAX];
    (void)send_chain_release(r, results);
    r->flush_listed = 0;
    zl_dgram_queue_clear(r->out);
    if (zl_dgram_ring_keep(r) < 0 || PyContext_Enter(t->context) < 0) {
        return -1;
    }
    int rc = t->conn_lost ? 0 : send_chain_after(r, results, 0, 0);
    return zl_context_exit_keeping_error(t->context, rc);
}

/* Append to list the datagram transports of users whose ring sends are queued or in flight. */
static int
send_collect_inherited(zl_loop *loop, PyObject *users, PyObject *list)
{
    PyObject *iter = users == NULL ? NULL : PyObject_GetIter(users);
    PyObject *obj;
    while (iter != NULL && (obj = PyIter_Next(iter)) != NULL) {
        int wanted = Py_TYPE(obj) == loop->state->datagram_type &&
                     (zl_dgram_ring_of((zl_transport *)obj)->send_inflight > 0 ||
                      zl_dgram_ring_of((zl_transport *)obj)->flush_listed);
        int rc = wanted ? PyList_Append(list, obj) : 0;
        Py_DECREF(obj);
        if (rc < 0) {
            break;
        }
    }
    Py_XDECREF(iter);
    return PyErr_Occurred() ? -1 : 0;
}

int
zl_dgram_ring_sends_after_fork(zl_loop *loop)
{
    PyObject *listed = loop->dgram_flush;
    loop->dgram_flush = NULL;
    PyObject *inherited = PyList_New(0);
    int rc = inherited == NULL ? -1 : 0;
    if (rc == 0 && listed != NULL) {
        rc = send_collect_inherited(loop, listed, inherited);
    }
    if (rc == 0 && loop->ring_users != NULL) {
        rc = send_collect_inherited(loop, loop->ring_users, inherited);
    }
    for (Py_ssize_t i = 0; rc == 0 && i < PyList_GET_SIZE(inherited); i++) {
        zl_dgram_ring *r = zl_dgram_ring_of((zl_transport *)PyList_GET_ITEM(inherited, i));
        if (r->send_inflight > 0 || r->flush_listed) {   /* listed twice: dropped at the first */
            rc = send_drop_inherited(r);
        }
    }
    Py_XDECREF(inherited);
    Py_XDECREF(listed);
    return rc;
}

void
zl_dgram_ring_free(zl_dgram_ring *r)
{
    PyMem_Free(r->slots);
    r->slots = NULL;
}
