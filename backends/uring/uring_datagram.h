/* backends/uring/uring_datagram.h — the datagram side of the "uring" backend: multishot RECVMSGs of UDP sockets
 * into a buffer group of their own (made at the first one), and the parsing of their completions for the core. */
#ifndef ZL_URING_DATAGRAM_H
#define ZL_URING_DATAGRAM_H

#include <stdint.h>
#include <sys/socket.h>

#include <liburing.h>

#include "uring_completion.h"

typedef struct zl_uring_datagrams {
    struct io_uring_buf_ring *buf_ring;   /* NULL until the first recvmsg_start (or after fork) */
    char *buffers;                        /* ZL_URING_DGRAM_BUFFERS buffers of ZL_URING_DGRAM_BUFFER_SIZE bytes */
    uint16_t *lent;                       /* buffer ids handed out by the last poll, given back by the next */
    int lent_len;
    struct msghdr template;               /* what every recvmsg receives: the address, no control data */
} zl_uring_datagrams;

/* Queue a multishot recvmsg of UDP socket fd tagged tag (the buffer group is made first if needed). 0 or -errno. */
int zl_uring_recvmsg_start(zl_uring_datagrams *d, struct io_uring *ring, int fd, uint64_t tag);
/* Whether cqe carries a buffer of the datagram group. */
int zl_uring_datagram_cqe(const struct io_uring_cqe *cqe);
/* Take such a CQE into the completion list: the datagram, its length and its sender. 0, or -ENOMEM. */
int zl_uring_datagram_take(zl_uring_datagrams *d, zl_uring_completions *c, const struct io_uring_cqe *cqe);
/* Before a poll: give back the buffers the last one lent. */
void zl_uring_datagrams_begin_poll(zl_uring_datagrams *d);
/* Forget the buffer group (made again at the next recvmsg_start): after fork, on the child's new ring. */
void zl_uring_datagrams_free(zl_uring_datagrams *d);

#endif /* ZL_URING_DATAGRAM_H */
