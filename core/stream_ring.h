/* core/stream_ring.h — the completion path of the stream transport (a backend with the completion contract, e.g.
 * uring, with ZLOOP_URING_COMPLETION=1): its per-transport state and the hooks stream_transport.c calls. */
#ifndef ZL_STREAM_RING_H
#define ZL_STREAM_RING_H

#include "transport_common.h"
#include "write_queue.h"

/* A completion tag is the address of what it belongs to (8-byte aligned) with the operation in its low bits. */
#define ZL_RING_OP_RECV 1u
#define ZL_RING_OP_SEND 2u
#define ZL_RING_OP_ACCEPT 3u         /* a server's (core/server_ring.c): the address is its zl_acceptor */
#define ZL_RING_OP_DGRAM_RECV 4u     /* a datagram transport's recvmsg (core/datagram_ring.c) */
#define ZL_RING_OP_DGRAM_SEND 5u     /* one datagram's sendmsg: the address is its slot (core/datagram_ring_send.c) */
#define ZL_RING_OP_MASK 7u

typedef struct zl_stream_ring {
    zl_transport *t;                 /* the transport this state is part of */
    zl_write_queue *out;             /* its write queue: the send in flight is its first chunk */
    unsigned char on;                /* this transport reads and writes through completions */
    unsigned char recv_armed;        /* a multishot recv is in the kernel (until its last completion) */
    unsigned char send_inflight;     /* a send is in the kernel (at most one: byte order) */
    unsigned char held_eof;          /* end of stream came while data was held */
    unsigned char delivery_scheduled;
    unsigned char kept;              /* in loop->ring_users: alive while an operation is in flight */
    PyObject *send_owner;            /* keeps the bytes of the send in flight alive, even after abort() */
    PyObject *held;                  /* bytes received while reading was paused (or behind queued handles) */
} zl_stream_ring;

/* The transport goes through completions now: its loop uses them and is not closed (a closed loop's transports
 * read and write as on a readiness backend, as far as that still works). */
static inline int
zl_stream_ring_active(const zl_stream_ring *r)
{
    return r->on && r->t->loop->backend != NULL;
}

/* What stream_transport.c gives the completion path: the protocol side of reading and writing. */
zl_stream_ring *zl_stream_ring_of(zl_transport *t);
int zl_stream_ring_deliver(zl_transport *t, const char *data, Py_ssize_t n);   /* data to the protocol */
int zl_stream_ring_eof(zl_transport *t);                                       /* end of stream */
int zl_stream_ring_write_failed(zl_transport *t, int error);                   /* a send failed */
int zl_stream_ring_drained(zl_transport *t);                                   /* the queue is empty */

/* The state for a new transport: completions when the loop uses them. */
void zl_stream_ring_init(zl_stream_ring *r, zl_transport *t, zl_write_queue *out);
/* The transport starts or stops reading (resume/pause, close); 1 when handled here, 0 (readiness) or -1. */
int zl_stream_ring_recv_arm(zl_stream_ring *r);
int zl_stream_ring_recv_disarm(zl_stream_ring *r);
/* Data was queued: send the first chunk unless a send is in flight. 0, or -1 (fatal error reported). */
int zl_stream_ring_send_queued(zl_stream_ring *r);
/* abort() or a fatal error dropped the queue: cancel the send in flight (its bytes stay alive until it ends). */
void zl_stream_ring_queue_dropped(zl_stream_ring *r);
/* Keep n bytes of data for delivery once reading resumes: after what is held, or first (the rest of a completion the
 * protocol paused reading in). -1 with MemoryError set. */
int zl_stream_ring_hold(zl_stream_ring *r, const char *data, Py_ssize_t n, int first);
/* The held data, then the held end of stream, to the protocol while it reads (transport._deliver_held()). */
int zl_stream_ring_deliver_held(zl_stream_ring *r);
int zl_stream_ring_traverse(zl_stream_ring *r, visitproc visit, void *arg);
void zl_stream_ring_clear(zl_stream_ring *r);

/* Keep user (a transport, an acceptor) in loop->ring_users while want (*kept says whether it is). -1 (MemoryError)
 * only when adding. */
int zl_ring_users_keep(zl_loop *loop, PyObject *user, int want, unsigned char *kept);

/* transport._deliver_held() on the next iteration, in the transport's own context, unless *scheduled says it is
 * already; the stream and datagram rings' held data. 0, or -1 with an exception set. */
int zl_ring_schedule_delivery(zl_transport *t, unsigned char *scheduled);

/* The loop's side: hand the completions of a poll to their transports; forget them all once the ring is gone. */
int zl_stream_ring_dispatch(zl_loop *loop, const zl_completion *done, int count);
void zl_stream_ring_forget_all(zl_loop *loop);

#endif /* ZL_STREAM_RING_H */
