/* backends/uring/uring_completion.h — the completion side of the "uring" backend: the provided-buffer ring that
 * multishot RECVs fill, the SENDs and cancels it queues, and the completions it collects for the core. */
#ifndef ZL_URING_COMPLETION_H
#define ZL_URING_COMPLETION_H

#include <stddef.h>
#include <stdint.h>

#include <liburing.h>

#include "../../core/backend.h"

/* The stream buffers' count, a power of two: the buffer ring's size, the most in use, and the first buffer id of
 * the datagram group (uring_datagram.c), so a CQE's buffer id alone says which group it came from. */
#define ZL_URING_BUFFERS 512

/* user_data of a cancel SQE (its own CQE, on failure only, is ignored). */
#define ZL_URING_TAG_CANCEL 2u

typedef struct zl_uring_completions {
    struct io_uring_buf_ring *buf_ring;   /* NULL: not registered (the kernel lacks it), recv_start refused */
    char *buffers;                        /* ZL_URING_BUFFERS buffers of ZL_URING_BUFFER_SIZE bytes */
    size_t buf_ring_bytes;
    uint16_t *lent;                       /* buffer ids handed out by the last poll, given back by the next */
    int lent_len;
    int circulating;                      /* buffers in use so far: more join when recvs run out (-ENOBUFS) */
    int starved;                          /* a recv ran out since the last poll */
    zl_completion *done;                  /* what the last poll collected */
    int done_len, done_cap;
} zl_uring_completions;

/* Map a buffer ring of entries (a power of two) and register it as buffer group group: 0, or -errno. */
int zl_uring_buf_ring_register(struct io_uring *ring, unsigned entries, int group, struct io_uring_buf_ring **out);

/* Register the buffer ring; 0, or -errno (then recv_start refuses with -EOPNOTSUPP, sends still work). */
int zl_uring_completions_init(zl_uring_completions *c, struct io_uring *ring);
/* Free what init and later calls made; the ring must be gone (io_uring_queue_exit) or still own the buffers. */
void zl_uring_completions_free(zl_uring_completions *c);

int zl_uring_recv_start(zl_uring_completions *c, struct io_uring *ring, int fd, uint64_t tag);
int zl_uring_send(struct io_uring *ring, int fd, uint64_t tag, const void *data, size_t len);
/* Queue count hard-linked SENDMSGs of fd, contiguous (core/backend.h, sendmsg_chain): how many, or -errno. */
int zl_uring_sendmsg_chain(struct io_uring *ring, int fd, const zl_send_op *ops, int count);
int zl_uring_cancel(struct io_uring *ring, uint64_t tag);

/* Before a poll: give back the buffers the last one lent and empty the completion list. */
void zl_uring_completions_begin_poll(zl_uring_completions *c);
/* A new entry of the completion list for cqe (tag, result, flags; no data), or NULL when it could not grow. */
zl_completion *zl_uring_completions_push(zl_uring_completions *c, const struct io_uring_cqe *cqe);
/* Take one CQE that is not the backend's own: 0, or -ENOMEM (the CQE is then left for the next try). */
int zl_uring_completions_take(zl_uring_completions *c, const struct io_uring_cqe *cqe);

#endif /* ZL_URING_COMPLETION_H */
