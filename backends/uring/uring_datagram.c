/* backends/uring/uring_datagram.c — the datagram side of the "uring" backend: one multishot RECVMSG per UDP socket
 * from a buffer group of its own, made at the first one, and each completion parsed into (datagram, sender). */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "uring_datagram.h"
#include "uring_ring.h"

#define ZL_URING_DGRAM_BUFFERS 64           /* a power of two: the group's ring size, all in use */
/* The recvmsg header, the address (sockaddr_in6) and IPv6's largest UDP payload (65,527 bytes) fit, so no UDP
 * datagram is ever cut short; page-sized, so a small datagram touches one page of its buffer. */
#define ZL_URING_DGRAM_BUFFER_SIZE (68 * 1024)
#define ZL_URING_DGRAM_GROUP 1
#define ZL_URING_DGRAM_FIRST_BID ZL_URING_BUFFERS   /* ids after the stream buffers': a CQE's id names its group */
#define ZL_URING_DGRAM_BYTES ((size_t)ZL_URING_DGRAM_BUFFERS * ZL_URING_DGRAM_BUFFER_SIZE)

static void
dgram_buffer_give_back(zl_uring_datagrams *d, int index, int offset)
{
    io_uring_buf_ring_add(d->buf_ring, d->buffers + (size_t)index * ZL_URING_DGRAM_BUFFER_SIZE,
                          ZL_URING_DGRAM_BUFFER_SIZE, (uint16_t)(ZL_URING_DGRAM_FIRST_BID + index),
                          io_uring_buf_ring_mask(ZL_URING_DGRAM_BUFFERS), offset);
}

/* The buffer group, on first use: a loop that never receives a datagram through the ring pays nothing. */
static int
dgram_group_init(zl_uring_datagrams *d, struct io_uring *ring)
{
    /* Anonymous: a page costs memory only once a datagram was written into it. */
    void *buffers = mmap(NULL, ZL_URING_DGRAM_BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    uint16_t *lent = malloc(ZL_URING_DGRAM_BUFFERS * sizeof(*lent));
    int rc = (buffers == MAP_FAILED || lent == NULL) ? -ENOMEM : 0;
    if (rc == 0) {
        rc = zl_uring_buf_ring_register(ring, ZL_URING_DGRAM_BUFFERS, ZL_URING_DGRAM_GROUP, &d->buf_ring);
    }
    if (rc < 0) {
        if (buffers != MAP_FAILED) {
            munmap(buffers, ZL_URING_DGRAM_BYTES);
        }
        free(lent);
        d->buf_ring = NULL;
        return rc;
    }
    d->buffers = buffers;
    d->lent = lent;
    d->lent_len = 0;
    for (int i = 0; i < ZL_URING_DGRAM_BUFFERS; i++) {
        dgram_buffer_give_back(d, i, i);
    }
    io_uring_buf_ring_advance(d->buf_ring, ZL_URING_DGRAM_BUFFERS);
    memset(&d->template, 0, sizeof(d->template));
    d->template.msg_namelen = sizeof(struct sockaddr_in6);   /* AF_INET's address fits too */
    return 0;
}

int
zl_uring_recvmsg_start(zl_uring_datagrams *d, struct io_uring *ring, int fd, uint64_t tag)
{
    int rc = d->buf_ring == NULL ? dgram_group_init(d, ring) : 0;
    if (rc < 0) {
        return rc == -EINVAL ? -EOPNOTSUPP : rc;
    }
    struct io_uring_sqe *sqe = zl_uring_get_sqe(ring, &rc);
    if (sqe == NULL) {
        return rc;
    }
    /* The kernel reads the template when it starts the recv; it lives in the backend until destroy. */
    io_uring_prep_recvmsg_multishot(sqe, fd, &d->template, 0);
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = ZL_URING_DGRAM_GROUP;
    io_uring_sqe_set_data64(sqe, tag);
    return 0;
}

int
zl_uring_datagram_cqe(const struct io_uring_cqe *cqe)
{
    return (cqe->flags & IORING_CQE_F_BUFFER) && (cqe->flags >> IORING_CQE_BUFFER_SHIFT) >= ZL_URING_DGRAM_FIRST_BID;
}

int
zl_uring_datagram_take(zl_uring_datagrams *d, zl_uring_completions *c, const struct io_uring_cqe *cqe)
{
    zl_completion *done = zl_uring_completions_push(c, cqe);
    if (done == NULL) {
        return -ENOMEM;
    }
    int index = (int)(cqe->flags >> IORING_CQE_BUFFER_SHIFT) - ZL_URING_DGRAM_FIRST_BID;
    d->lent[d->lent_len++] = (uint16_t)index;   /* at most ZL_URING_DGRAM_BUFFERS lent: the ring holds no more */
    char *buf = d->buffers + (size_t)index * ZL_URING_DGRAM_BUFFER_SIZE;
    struct io_uring_recvmsg_out *out = io_uring_recvmsg_validate(buf, cqe->res, &d->template);
    if (out == NULL) {
        done->result = -EPROTO;        /* shorter than the header the kernel writes: never seen */
        return 0;
    }
    done->data = io_uring_recvmsg_payload(out, &d->template);
    done->result = (int)io_uring_recvmsg_payload_length(out, cqe->res, &d->template);
    done->name = io_uring_recvmsg_name(out);
    done->name_len = out->namelen < d->template.msg_namelen ? out->namelen : d->template.msg_namelen;
    if (out->flags & MSG_TRUNC) {
        done->flags |= ZL_COMPLETION_TRUNCATED;
    }
    return 0;
}

void
zl_uring_datagrams_begin_poll(zl_uring_datagrams *d)
{
    for (int i = 0; i < d->lent_len; i++) {
        dgram_buffer_give_back(d, d->lent[i], i);
    }
    if (d->lent_len > 0) {
        io_uring_buf_ring_advance(d->buf_ring, d->lent_len);
    }
    d->lent_len = 0;
}

void
zl_uring_datagrams_free(zl_uring_datagrams *d)
{
    if (d->buf_ring != NULL) {
        munmap(d->buf_ring, ZL_URING_DGRAM_BUFFERS * sizeof(struct io_uring_buf));
        munmap(d->buffers, ZL_URING_DGRAM_BYTES);
    }
    free(d->lent);
    memset(d, 0, sizeof(*d));
}
