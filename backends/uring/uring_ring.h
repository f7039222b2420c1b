/* backends/uring/uring_ring.h — the io_uring ring of the "uring" backend: setup, the user_data layout, SQE builders.
 * Plain C on liburing; shared by backend_uring.c (the zl_backend_ops) and nothing else. */
#ifndef ZL_URING_RING_H
#define ZL_URING_RING_H

#include <stddef.h>
#include <stdint.h>

#include <liburing.h>

/* user_data of every SQE: | kind (2 bits) | generation (30 bits) | fd (32 bits) |.
 * A poll CQE whose generation is not the fd's current one belongs to a closed-and-reused number or to a poll
 * already replaced, and is dropped. */
enum {
    ZL_URING_KIND_POLL = 0,        /* a multishot POLL_ADD on a watched fd */
    ZL_URING_KIND_WAKE = 1,        /* the READ of the wake-up eventfd */
    ZL_URING_KIND_CTL = 2,         /* ASYNC_CANCEL / POLL_UPDATE: only failures post a CQE; they are ignored */
};

#define ZL_URING_GEN_MASK 0x3fffffffu

static inline uint64_t
zl_uring_user_data(unsigned kind, uint32_t gen, int fd)
{
    return ((uint64_t)kind << 62) | ((uint64_t)(gen & ZL_URING_GEN_MASK) << 32) | (uint32_t)fd;
}

static inline unsigned
zl_uring_kind_of(uint64_t user_data)
{
    return (unsigned)(user_data >> 62);
}

static inline uint32_t
zl_uring_gen_of(uint64_t user_data)
{
    return (uint32_t)(user_data >> 32) & ZL_URING_GEN_MASK;
}

static inline int
zl_uring_fd_of(uint64_t user_data)
{
    return (int)(uint32_t)user_data;
}

/* A new ring for one loop; 0 or -errno (io_uring_setup's refusal). */
int zl_uring_ring_init(struct io_uring *ring);

/* A free SQE, submitting queued ones first if the SQ is full; NULL with *err = -errno if even that fails. */
struct io_uring_sqe *zl_uring_get_sqe(struct io_uring *ring, int *err);

/* Queue a multishot poll of fd for events (ZL_EV_*), tagged with gen. 0 or -errno. */
int zl_uring_queue_poll_add(struct io_uring *ring, int fd, int events, uint32_t gen);

/* Queue the cancellation of the poll tagged (fd, gen) (an ASYNC_CANCEL). 0 or -errno. */
int zl_uring_queue_poll_remove(struct io_uring *ring, int fd, uint32_t gen);

/* Queue a re-arm of the poll tagged (fd, gen) with the same events: the kernel polls the file again and posts a
 * CQE if it is ready now, which makes the edge-triggered multishot poll level-triggered. 0 or -errno. */
int zl_uring_queue_poll_recheck(struct io_uring *ring, int fd, int events, uint32_t gen);

/* Queue a READ of the 8-byte eventfd counter into *value. 0 or -errno. */
int zl_uring_queue_wake_read(struct io_uring *ring, int eventfd, uint64_t *value);

/* The ZL_EV_* events a poll CQE's result (a poll mask) stands for. */
int zl_uring_events_of_mask(int mask);

/* Why zl_uring_ring_init failed with err, in words that name the likely cause, written into buf. */
void zl_uring_refusal_reason(int err, char *buf, size_t len);

#endif /* ZL_URING_RING_H */
