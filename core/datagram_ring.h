/* core/datagram_ring.h — the completion path of the datagram transport (a backend with recvmsg_start, e.g. uring,
 * with ZLOOP_URING_COMPLETION=1; UDP only): its per-transport state and the hooks datagram_transport.c gives it. */
#ifndef ZL_DATAGRAM_RING_H
#define ZL_DATAGRAM_RING_H

#include "datagram_queue.h"
#include "transport_common.h"

#include <netinet/in.h>
#include <sys/uio.h>

#define ZL_DGRAM_CHAIN_MAX 64        /* datagrams of one transport in flight at most: one linked chain */

/* One datagram in flight through a SENDMSG: what the kernel reads stays here until its completion. The slot's
 * address is its tag (with ZL_RING_OP_DGRAM_SEND): the slots are allocated once per transport and never move. */
typedef struct zl_dgram_send_slot {
    struct msghdr msg;
    struct iovec iov;
    struct zl_dgram_ring *ring;      /* whose */
    PyObject *data;                  /* the bytes (own reference: abort() may drop the queue before the kernel is
                                      * done with them) */
    union {
        struct sockaddr_in in;
        struct sockaddr_in6 in6;
    } to;                            /* the destination, unless the socket is connected */
    int result;                      /* the completion's, or ZL_DGRAM_SEND_PENDING */
} zl_dgram_send_slot;

typedef struct zl_dgram_ring {
    zl_transport *t;                 /* the transport this state is part of */
    unsigned char on;                /* this transport receives through completions */
    unsigned char recv_armed;        /* a multishot recvmsg is in the kernel (until its last completion) */
    unsigned char kept;              /* in loop->ring_users: alive while the recvmsg is armed */
    unsigned char delivery_scheduled;
    PyObject *held;                  /* (data, addr) tuples and errnos received while reading was paused (or
                                      * behind queued handles), delivered in order by _deliver_held() */
    /* sending (datagram_ring_send.c) */
    zl_dgram_queue *out;             /* the transport's queue: its first send_inflight entries are in flight */
    zl_dgram_send_slot *slots;       /* ZL_DGRAM_CHAIN_MAX, made at the first send through the ring */
    int send_inflight;               /* datagrams of the chain in the kernel (0: none) */
    int send_completed;              /* how many of them completed */
    unsigned char send_on;           /* sendto() goes through the ring */
    unsigned char use_send;          /* connected: no destination in the msghdr */
    unsigned char flush_listed;      /* in loop->dgram_flush: its queue goes out before the next poll */
    unsigned char send_dropped;      /* abort() dropped the queue while a chain was in flight */
} zl_dgram_ring;

/* What datagram_transport.c gives the completion path: the protocol side of receiving. */
zl_dgram_ring *zl_dgram_ring_of(zl_transport *t);
/* The sender's address object (new reference), through the transport's cache of the last one. */
PyObject *zl_dgram_ring_sender(zl_transport *t, const void *name, unsigned name_len);
/* protocol.datagram_received(data, addr) / error_received(OSError(error)), errors reported as the readiness path
 * reports them; -1 only when the loop must stop. */
int zl_dgram_ring_received(zl_transport *t, PyObject *data, PyObject *addr);
int zl_dgram_ring_error(zl_transport *t, int error);

/* A send of the ring failed with error: protocol.error_received(OSError), as the readiness path reports a failed
 * sendto; -1 only when the loop must stop. */
int zl_dgram_ring_send_error(zl_transport *t, int error);

/* The state for a new transport of family: completions when the loop has them and it is UDP; out is its queue
 * and use_send whether it is connected. */
void zl_dgram_ring_init(zl_dgram_ring *r, zl_transport *t, int family, zl_dgram_queue *out, int use_send);
/* The transport starts or stops reading (resume/pause, close); 1 when handled here, 0 (readiness) or -1. */
int zl_dgram_ring_recv_arm(zl_dgram_ring *r);
int zl_dgram_ring_recv_disarm(zl_dgram_ring *r);
/* Keep the transport in loop->ring_users exactly while its recvmsg is armed or a chain of its sends is in flight.
 * -1 (MemoryError) only when adding. */
int zl_dgram_ring_keep(zl_dgram_ring *r);
/* What was held, to the protocol while it reads (transport._deliver_held()). */
int zl_dgram_ring_deliver_held(zl_dgram_ring *r);
int zl_dgram_ring_traverse(zl_dgram_ring *r, visitproc visit, void *arg);
void zl_dgram_ring_clear(zl_dgram_ring *r);
/* The transport is deallocated: free the slots (nothing is in flight by then). */
void zl_dgram_ring_free(zl_dgram_ring *r);

/* Sending (datagram_ring_send.c). Whether sendto() queues for the ring (the ring is in use, UDP). */
int zl_dgram_ring_sends(const zl_dgram_ring *r);
/* A datagram was queued: the transport sends its queue before the next poll. 0, or -1 (MemoryError). */
int zl_dgram_ring_send_queued(zl_dgram_ring *r);
/* abort() or a fatal error drops the queue: cancel the chain in flight (its bytes stay alive until it ends). */
void zl_dgram_ring_send_dropped(zl_dgram_ring *r);
/* Before a poll: every listed transport queues its next chain of SENDMSGs. -1 only when the loop must stop. */
int zl_dgram_ring_flush(zl_loop *loop);
/* One SENDMSG's completion (core/stream_ring.c dispatches it). */
int zl_dgram_ring_send_dispatch(zl_loop *loop, const zl_completion *c);
/* The ring is gone (loop closed): release the chain in flight of a datagram transport. */
void zl_dgram_ring_send_forget(zl_dgram_ring *r);
/* In a fork child: the chains in flight were the parent ring's (the parent's kernel sends them); count them as
 * sent so the child's transports go on (and close) without waiting for completions that never come. */
int zl_dgram_ring_sends_after_fork(zl_loop *loop);

/* The loop's side (core/stream_ring.c dispatches by the tag's operation): one completion of a recvmsg; and, once
 * the ring is gone, 1 when obj was a datagram transport, which then forgets its recvmsg. */
int zl_dgram_ring_dispatch(zl_loop *loop, const zl_completion *c);
int zl_dgram_ring_forget(zl_loop *loop, PyObject *obj);

#endif /* ZL_DATAGRAM_RING_H */
