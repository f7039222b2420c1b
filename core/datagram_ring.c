/* core/datagram_ring.c — the completion path of the datagram transport: a multishot recvmsg armed while a UDP
 * transport reads, re-armed when an empty datagram or an ICMP error ends it, datagrams held while reading is paused,
 * and cancelled at once by pause and close (docs/architecture.md, "UDP"). Sends: datagram_ring_send.c. */
#include "datagram_ring.h"
#include "stream_ring.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/socket.h>

/* The tag names the state (inside its transport, 8-byte aligned) and the operation; the transport stays alive
 * (loop->ring_users) while its recvmsg is armed, so no completion outlives what it names (stream_ring.c). */
static uint64_t
dgram_ring_tag(zl_dgram_ring *r)
{
    return (uint64_t)(uintptr_t)r | ZL_RING_OP_DGRAM_RECV;
}

int
zl_dgram_ring_keep(zl_dgram_ring *r)
{
    return zl_ring_users_keep(r->t->loop, (PyObject *)r->t, r->recv_armed || r->send_inflight > 0, &r->kept);
}

static int
dgram_ring_active(const zl_dgram_ring *r)
{
    return r->on && r->t->loop->backend != NULL;
}

void
zl_dgram_ring_init(zl_dgram_ring *r, zl_transport *t, int family, zl_dgram_queue *out, int use_send)
{
    zl_loop *loop = t->loop;
    int type = 0;
    socklen_t len = sizeof(type);
    r->t = t;
    /* UDP only: a Unix datagram may be larger than any buffer of the ring (asyncio reads up to 256 KiB), and an
     * fd that names no open file is left to the readiness path, which fails as asyncio does. */
    r->on = loop->completion && loop->ops->recvmsg_start != NULL && (family == AF_INET || family == AF_INET6) &&
            getsockopt(t->fd, SOL_SOCKET, SO_TYPE, &type, &len) == 0 && type == SOCK_DGRAM;
    r->out = out;
    r->use_send = (unsigned char)(use_send != 0);
    r->send_on = r->on && loop->ops->sendmsg_chain != NULL;
}

static int
dgram_ring_start(zl_dgram_ring *r)
{
    zl_loop *loop = r->t->loop;
    int rc = loop->ops->recvmsg_start(loop->backend, r->t->fd, dgram_ring_tag(r));
    if (rc == -EOPNOTSUPP) {
        r->on = 0;                     /* the kernel refused the buffer group: readiness, as before */
        return zl_transport_watch(r->t, ZL_EV_READ);
    }
    if (rc < 0) {
        return zl_dgram_ring_error(r->t, -rc);
    }
    r->recv_armed = 1;
    return zl_dgram_ring_keep(r);
}

static int
dgram_ring_has_held(const zl_dgram_ring *r)
{
    return r->held != NULL && PyList_GET_SIZE(r->held) > 0;
}

static int
dgram_ring_schedule_delivery(zl_dgram_ring *r)
{
    return zl_ring_schedule_delivery(r->t, &r->delivery_scheduled);
}

int
zl_dgram_ring_recv_arm(zl_dgram_ring *r)
{
    if (!dgram_ring_active(r)) {
        return 0;
    }
    r->t->reading = 1;
    if (dgram_ring_has_held(r) && dgram_ring_schedule_delivery(r) < 0) {
        return -1;
    }
    /* One still armed (its cancel not completed yet) is re-armed by its last completion. */
    if (!r->recv_armed && dgram_ring_start(r) < 0) {
        return -1;
    }
    return 1;
}

int
zl_dgram_ring_recv_disarm(zl_dgram_ring *r)
{
    if (!dgram_ring_active(r)) {
        return 0;
    }
    r->t->reading = 0;
    if (r->recv_armed) {
        /* Submitted at once: by the time connection_lost closes the socket, the kernel has let go of it. */
        (void)r->t->loop->ops->cancel(r->t->loop->backend, dgram_ring_tag(r));
    }
    return 1;
}

/* One held entry (a (data, addr) tuple or an errno) to the protocol. */
static int
dgram_ring_deliver_one(zl_dgram_ring *r, PyObject *entry)
{
    if (PyLong_CheckExact(entry)) {
        return zl_dgram_ring_error(r->t, (int)PyLong_AsLong(entry));
    }
    return zl_dgram_ring_received(r->t, PyTuple_GET_ITEM(entry, 0), PyTuple_GET_ITEM(entry, 1));
}

int
zl_dgram_ring_deliver_held(zl_dgram_ring *r)
{
    r->delivery_scheduled = 0;
    zl_transport *t = r->t;
    while (dgram_ring_has_held(r) && t->reading && !t->closing && !t->conn_lost) {
        PyObject *entry = PyList_GET_ITEM(r->held, 0);
        Py_INCREF(entry);
        int rc = PyList_SetSlice(r->held, 0, 1, NULL);
        if (rc == 0) {
            rc = dgram_ring_deliver_one(r, entry);
        }
        Py_DECREF(entry);
        if (rc < 0) {
            return -1;
        }
    }
    return 0;
}

static int
dgram_ring_hold(zl_dgram_ring *r, PyObject *entry)
{
    if (r->held == NULL && (r->held = PyList_New(0)) == NULL) {
        return -1;
    }
    if (PyList_Append(r->held, entry) < 0) {
        return -1;
    }
    return r->t->reading ? dgram_ring_schedule_delivery(r) : 0;
}

/* A datagram or an error: to the protocol now, or held (in order) while reading is paused, while older ones are
 * held, or while handles are queued (native's dispatch defers a read behind them the same way). */
static int
dgram_ring_on_recv(zl_dgram_ring *r, const zl_completion *c)
{
    zl_transport *t = r->t;
    int defer = !t->reading || dgram_ring_has_held(r) || t->loop->ready.len > 0;
    if (c->result < 0) {
        if (!defer) {
            return zl_dgram_ring_error(t, -c->result);
        }
        PyObject *error = PyLong_FromLong(-c->result);
        int rc = error == NULL ? -1 : dgram_ring_hold(r, error);
        Py_XDECREF(error);
        return rc;
    }
    PyObject *data = PyBytes_FromStringAndSize(c->data, c->result);
    PyObject *addr = data == NULL ? NULL : zl_dgram_ring_sender(t, c->name, c->name_len);
    int rc = -1;
    if (addr != NULL && !defer) {
        rc = zl_dgram_ring_received(t, data, addr);
    } else if (addr != NULL) {
        PyObject *entry = PyTuple_Pack(2, data, addr);
        rc = entry == NULL ? -1 : dgram_ring_hold(r, entry);
        Py_XDECREF(entry);
    }
    Py_XDECREF(data);
    Py_XDECREF(addr);
    return rc;
}

/* After a last completion: armed again while the transport reads (an empty datagram, an ICMP error, out of
 * buffers, or a cancel a resume raced), not when the socket itself is gone. */
static int
dgram_ring_rearm_after(zl_dgram_ring *r, const zl_completion *c)
{
    zl_transport *t = r->t;
    if (r->recv_armed || !t->reading || t->closing || t->conn_lost || zl_transport_sock_gone(t) ||
        c->result == -EBADF || c->result == -ENOTSOCK) {
        return 0;
    }
    return dgram_ring_start(r);
}

/* A kernel without multishot RECVMSG (before 6.0) refuses it with -EINVAL: the transport reads on readiness. */
static int
dgram_ring_fall_back(zl_dgram_ring *r)
{
    r->on = 0;
    if (!r->t->reading || r->t->closing || r->t->conn_lost || zl_transport_sock_gone(r->t)) {
        return 0;
    }
    r->t->reading = 0;
    return zl_transport_watch(r->t, ZL_EV_READ);
}

static int
dgram_ring_on_completion(zl_dgram_ring *r, const zl_completion *c)
{
    zl_transport *t = r->t;
    if (!(c->flags & ZL_COMPLETION_MORE)) {
        r->recv_armed = 0;
    }
    if (c->result == -EINVAL && !r->recv_armed) {
        return dgram_ring_fall_back(r);
    }
    if (t->closing || t->conn_lost || c->result == -ECANCELED) {
        return dgram_ring_rearm_after(r, c);    /* dropped, as a closed readiness transport reads no more */
    }
    if (PyContext_Enter(t->context) < 0) {
        return -1;
    }
    int rc = c->result == -ENOBUFS ? 0 : dgram_ring_on_recv(r, c);
    if (rc == 0) {
        rc = dgram_ring_rearm_after(r, c);
    }
    return zl_context_exit_keeping_error(t->context, rc);
}

int
zl_dgram_ring_dispatch(zl_loop *loop, const zl_completion *c)
{
    zl_dgram_ring *r = (zl_dgram_ring *)(uintptr_t)(c->tag & ~(uint64_t)ZL_RING_OP_MASK);
    PyObject *owner = (PyObject *)r->t;
    Py_INCREF(owner);
    loop->in_io_callback = 1;
    int rc = dgram_ring_on_completion(r, c);
    loop->in_io_callback = 0;
    if (zl_dgram_ring_keep(r) < 0) {
        rc = -1;
    }
    Py_DECREF(owner);
    return rc;
}

int
zl_dgram_ring_forget(zl_loop *loop, PyObject *obj)
{
    if (loop->state->datagram_type == NULL || Py_TYPE(obj) != loop->state->datagram_type) {
        return 0;
    }
    zl_dgram_ring *r = zl_dgram_ring_of((zl_transport *)obj);
    r->recv_armed = 0;
    r->kept = 0;
    zl_dgram_ring_send_forget(r);
    return 1;
}

int
zl_dgram_ring_traverse(zl_dgram_ring *r, visitproc visit, void *arg)
{
    Py_VISIT(r->held);
    for (int i = 0; i < r->send_inflight; i++) {
        Py_VISIT(r->slots[i].data);
    }
    return 0;
}

void
zl_dgram_ring_clear(zl_dgram_ring *r)
{
    Py_CLEAR(r->held);
}
