/* core/datagram_ring.h — the completion path of the datagram transport (a backend with recvmsg_start, e.g. uring,
 * with ZLOOP_URING_COMPLETION=1; UDP only): its per-transport state and the hooks datagram_transport.c gives it. */
#ifndef ZL_DATAGRAM_RING_H
#define ZL_DATAGRAM_RING_H

#include "transport_common.h"

typedef struct zl_dgram_ring {
    zl_transport *t;                 /* the transport this state is part of */
    unsigned char on;                /* this transport receives through completions */
    unsigned char recv_armed;        /* a multishot recvmsg is in the kernel (until its last completion) */
    unsigned char kept;              /* in loop->ring_users: alive while the recvmsg is armed */
    unsigned char delivery_scheduled;
    PyObject *held;                  /* (data, addr) tuples and errnos received while reading was paused (or
                                      * behind queued handles), delivered in order by _deliver_held() */
} zl_dgram_ring;

/* What datagram_transport.c gives the completion path: the protocol side of receiving. */
zl_dgram_ring *zl_dgram_ring_of(zl_transport *t);
/* The sender's address object (new reference), through the transport's cache of the last one. */
PyObject *zl_dgram_ring_sender(zl_transport *t, const void *name, unsigned name_len);
/* protocol.datagram_received(data, addr) / error_received(OSError(error)), errors reported as the readiness path
 * reports them; -1 only when the loop must stop. */
int zl_dgram_ring_received(zl_transport *t, PyObject *data, PyObject *addr);
int zl_dgram_ring_error(zl_transport *t, int error);

/* The state for a new transport of family: completions when the loop has them and it is UDP. */
void zl_dgram_ring_init(zl_dgram_ring *r, zl_transport *t, int family);
/* The transport starts or stops reading (resume/pause, close); 1 when handled here, 0 (readiness) or -1. */
int zl_dgram_ring_recv_arm(zl_dgram_ring *r);
int zl_dgram_ring_recv_disarm(zl_dgram_ring *r);
/* What was held, to the protocol while it reads (transport._deliver_held()). */
int zl_dgram_ring_deliver_held(zl_dgram_ring *r);
int zl_dgram_ring_traverse(zl_dgram_ring *r, visitproc visit, void *arg);
void zl_dgram_ring_clear(zl_dgram_ring *r);

/* The loop's side (core/stream_ring.c dispatches by the tag's operation): one completion of a recvmsg; and, once
 * the ring is gone, 1 when obj was a datagram transport, which then forgets its recvmsg. */
int zl_dgram_ring_dispatch(zl_loop *loop, const zl_completion *c);
int zl_dgram_ring_forget(zl_loop *loop, PyObject *obj);

#endif /* ZL_DATAGRAM_RING_H */
