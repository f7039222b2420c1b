/* backends/uring/uring_completion.c — the completion side of the "uring" backend: the provided-buffer ring that
 * multishot RECVs fill, the SEND and cancel SQEs, and the list of completions a poll hands to the core. */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>

#include "../array_reserve.h"
#include "uring_completion.h"
#include "uring_ring.h"

#define ZL_URING_BUFFERS_FIRST 64            /* in use at first; 64 more each time recvs run out */
#define ZL_URING_BUFFER_SIZE (16 * 1024)     /* one recv completion carries at most this much */
#define ZL_URING_BUFFER_GROUP 0

static void
buffer_give_back(zl_uring_completions *c, uint16_t bid, int offset)
{
    io_uring_buf_ring_add(c->buf_ring, c->buffers + (size_t)bid * ZL_URING_BUFFER_SIZE, ZL_URING_BUFFER_SIZE, bid,
                          io_uring_buf_ring_mask(ZL_URING_BUFFERS), offset);
}

int
zl_uring_buf_ring_register(struct io_uring *ring, unsigned entries, int group, struct io_uring_buf_ring **out)
{
    size_t ring_bytes = entries * sizeof(struct io_uring_buf);
    void *br = mmap(NULL, ring_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (br == MAP_FAILED) {
        return -ENOMEM;
    }
    struct io_uring_buf_reg reg;
    memset(&reg, 0, sizeof(reg));
    reg.ring_addr = (uint64_t)(uintptr_t)br;
    reg.ring_entries = entries;
    reg.bgid = (uint16_t)group;
    int rc = io_uring_register_buf_ring(ring, &reg, 0);
    if (rc < 0) {
        munmap(br, ring_bytes);
        return rc;
    }
    io_uring_buf_ring_init(br);
    *out = br;
    return 0;
}

int
zl_uring_completions_init(zl_uring_completions *c, struct io_uring *ring)
{
    memset(c, 0, sizeof(*c));
    /* The buffers are an anonymous mapping: pages cost memory only once a recv has written them. */
    void *buffers = mmap(NULL, (size_t)ZL_URING_BUFFERS * ZL_URING_BUFFER_SIZE, PROT_READ | PROT_WRITE,
                         MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    c->lent = malloc(ZL_URING_BUFFERS * sizeof(*c->lent));
    int rc = (buffers == MAP_FAILED || c->lent == NULL) ? -ENOMEM : 0;
    if (rc == 0) {
        rc = zl_uring_buf_ring_register(ring, ZL_URING_BUFFERS, ZL_URING_BUFFER_GROUP, &c->buf_ring);
    }
    if (rc < 0) {
        if (buffers != MAP_FAILED) {
            munmap(buffers, (size_t)ZL_URING_BUFFERS * ZL_URING_BUFFER_SIZE);
        }
        free(c->lent);
        c->lent = NULL;
        c->buf_ring = NULL;
        return rc;
    }
    c->buf_ring_bytes = ZL_URING_BUFFERS * sizeof(struct io_uring_buf);
    c->buffers = buffers;
    for (int i = 0; i < ZL_URING_BUFFERS_FIRST; i++) {
        buffer_give_back(c, (uint16_t)i, i);
    }
    io_uring_buf_ring_advance(c->buf_ring, ZL_URING_BUFFERS_FIRST);
    c->circulating = ZL_URING_BUFFERS_FIRST;
    return 0;
}

void
zl_uring_completions_free(zl_uring_completions *c)
{
    if (c->buf_ring != NULL) {
        munmap(c->buf_ring, c->buf_ring_bytes);
        munmap(c->buffers, (size_t)ZL_URING_BUFFERS * ZL_URING_BUFFER_SIZE);
    }
    free(c->lent);
    free(c->done);
    memset(c, 0, sizeof(*c));
}

int
zl_uring_recv_start(zl_uring_completions *c, struct io_uring *ring, int fd, uint64_t tag)
{
    if (c->buf_ring == NULL) {
        return -EOPNOTSUPP;
    }
    int err = 0;
    struct io_uring_sqe *sqe = zl_uring_get_sqe(ring, &err);
    if (sqe == NULL) {
        return err;
    }
    io_uring_prep_recv_multishot(sqe, fd, NULL, 0, 0);
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = ZL_URING_BUFFER_GROUP;
    io_uring_sqe_set_data64(sqe, tag);
    return 0;
}

int
zl_uring_send(struct io_uring *ring, int fd, uint64_t tag, const void *data, size_t len)
{
    int err = 0;
    struct io_uring_sqe *sqe = zl_uring_get_sqe(ring, &err);
    if (sqe == NULL) {
        return err;
    }
    io_uring_prep_send(sqe, fd, data, len, MSG_NOSIGNAL);
    io_uring_sqe_set_data64(sqe, tag);
    return 0;
}

int
zl_uring_sendmsg_chain(struct io_uring *ring, int fd, const zl_send_op *ops, int count)
{
    unsigned space = io_uring_sq_space_left(ring);
    if (space < (unsigned)count) {
        int rc = io_uring_submit(ring);    /* room for the whole chain, or as much of it as the queue holds */
        if (rc < 0) {
            return rc;
        }
        space = io_uring_sq_space_left(ring);
    }
    int n = space < (unsigned)count ? (int)space : count;
    if (n == 0) {
        return -EBUSY;
    }
    for (int i = 0; i < n; i++) {
        struct io_uring_sqe *sqe = io_uring_get_sqe(ring);   /* never NULL: the space was counted */
        io_uring_prep_sendmsg(sqe, fd, ops[i].msg, MSG_NOSIGNAL);
        if (i + 1 < n) {
            sqe->flags |= IOSQE_IO_LINK;   /* the last one is linked to nothing: a chain ends with it */
        }
        io_uring_sqe_set_data64(sqe, ops[i].tag);
    }
    return n;
}

int
zl_uring_cancel(struct io_uring *ring, uint64_t tag)
{
    int err = 0;
    struct io_uring_sqe *sqe = zl_uring_get_sqe(ring, &err);
    if (sqe == NULL) {
        return err;
    }
    io_uring_prep_cancel64(sqe, tag, IORING_ASYNC_CANCEL_ALL);
    sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
    io_uring_sqe_set_data64(sqe, ZL_URING_TAG_CANCEL);
    /* At once: the caller may close the fd next, and the cancelled operation's reference to the file must go
     * first (a recv still queued in the SQ is cancelled too: the kernel takes the SQ in order). */
    int rc = io_uring_submit(ring);
    return rc < 0 ? rc : 0;
}

void
zl_uring_completions_begin_poll(zl_uring_completions *c)
{
    /* The ring goes round its buffers in order: as few as the load needs keeps the bytes a recv writes and the
     * core copies in cache (all 512 cycled through made 10 KiB echoes cost more than on epoll). */
    int added = 0;
    if (c->starved && c->circulating < ZL_URING_BUFFERS) {
        for (; added < ZL_URING_BUFFERS_FIRST; added++) {
            buffer_give_back(c, (uint16_t)(c->circulating + added), added);
        }
        c->circulating += added;
    }
    c->starved = 0;
    for (int i = 0; i < c->lent_len; i++) {
        buffer_give_back(c, c->lent[i], added + i);
    }
    if (added + c->lent_len > 0) {
        io_uring_buf_ring_advance(c->buf_ring, added + c->lent_len);
    }
    c->lent_len = 0;
    c->done_len = 0;
}

zl_completion *
zl_uring_completions_push(zl_uring_completions *c, const struct io_uring_cqe *cqe)
{
    if (zl_array_reserve((void **)&c->done, &c->done_cap, c->done_len + 1, sizeof(*c->done), 64) < 0) {
        return NULL;
    }
    zl_completion *done = &c->done[c->done_len++];
    memset(done, 0, sizeof(*done));
    done->tag = cqe->user_data;
    done->result = cqe->res;
    done->flags = (cqe->flags & IORING_CQE_F_MORE) ? ZL_COMPLETION_MORE : 0;
    return done;
}

int
zl_uring_completions_take(zl_uring_completions *c, const struct io_uring_cqe *cqe)
{
    zl_completion *done = zl_uring_completions_push(c, cqe);
    if (done == NULL) {
        return -ENOMEM;
    }
    /* Out of stream buffers when all of them came back in CQEs since the last poll gave them back (each is posted
     * as the buffer is filled, before the recv that finds none); otherwise it was the datagram group's. */
    if (cqe->res == -ENOBUFS && c->lent_len >= c->circulating) {
        c->starved = 1;
    }
    if (cqe->flags & IORING_CQE_F_BUFFER) {
        uint16_t bid = (uint16_t)(cqe->flags >> IORING_CQE_BUFFER_SHIFT);
        done->data = c->buffers + (size_t)bid * ZL_URING_BUFFER_SIZE;
        c->lent[c->lent_len++] = bid;   /* at most ZL_URING_BUFFERS lent: the ring holds no more */
    }
    return 0;
}
