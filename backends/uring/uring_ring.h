/* backends/uring/uring_ring.h — the io_uring ring of the "uring" backend: setup, the SQEs it queues, the bounded
 * wait, and why a refused setup was refused. Plain C on liburing; shared by backend_uring.c and nothing else. */
#ifndef ZL_URING_RING_H
#define ZL_URING_RING_H

#include <stddef.h>
#include <stdint.h>

#include <liburing.h>

/* user_data of the one-shot poll of the backend's epoll fd: it says the epoll set has readiness to collect. */
#define ZL_URING_TAG_EPOLL_READY 1u

/* A new ring for one loop; 0 or -errno (io_uring_setup's refusal). */
int zl_uring_ring_init(struct io_uring *ring);

/* A free SQE, submitting queued ones first if the SQ is full; NULL with *err = -errno if even that fails. */
struct io_uring_sqe *zl_uring_get_sqe(struct io_uring *ring, int *err);

/* Queue a one-shot poll for POLLIN of fd tagged user_data. 0 or -errno. */
int zl_uring_queue_poll_in(struct io_uring *ring, int fd, uint64_t user_data);

/* One io_uring_enter: submit what is queued, then wait until a CQE is there or timeout_ns passed (-1: no limit,
 * 0: do not wait). 0 or a count when the enter returned, -ETIME, -EINTR or another -errno. */
int zl_uring_submit_and_wait(struct io_uring *ring, int64_t timeout_ns);

/* Why zl_uring_ring_init failed with err, in words that name the likely cause, written into buf. */
void zl_uring_refusal_reason(int err, char *buf, size_t len);

#endif /* ZL_URING_RING_H */
