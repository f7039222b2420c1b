/* backends/uring/uring_accept.c — the multishot ACCEPTs of the "uring" backend: the SQE, the list of armed ones
 * (armed again in a child after fork), and at destroy the connections accepted after the last poll. */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../array_reserve.h"
#include "uring_accept.h"
#include "uring_completion.h"
#include "uring_ring.h"

static int
accepts_find(const zl_uring_accepts *a, uint64_t tag)
{
    for (int i = 0; i < a->len; i++) {
        if (a->armed[i].tag == tag) {
            return i;
        }
    }
    return -1;
}

static int
accept_queue(struct io_uring *ring, int fd, uint64_t tag)
{
    int err = 0;
    struct io_uring_sqe *sqe = zl_uring_get_sqe(ring, &err);
    if (sqe == NULL) {
        return err;
    }
    /* No address: one buffer would serve every connection of the multishot; the core asks getpeername. */
    io_uring_prep_multishot_accept(sqe, fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    io_uring_sqe_set_data64(sqe, tag);
    return 0;
}

int
zl_uring_accept_start(zl_uring_accepts *a, struct io_uring *ring, int fd, uint64_t tag)
{
    int rc = zl_array_reserve((void **)&a->armed, &a->cap, a->len + 1, sizeof(*a->armed), 8);
    if (rc == 0) {
        rc = accept_queue(ring, fd, tag);
    }
    if (rc == 0) {
        a->armed[a->len++] = (zl_uring_accept){.tag = tag, .fd = fd};
    }
    return rc;
}

int
zl_uring_accepts_rearm(zl_uring_accepts *a, struct io_uring *ring)
{
    for (int i = 0; i < a->len; i++) {
        int rc = accept_queue(ring, a->armed[i].fd, a->armed[i].tag);
        if (rc < 0) {
            return rc;
        }
    }
    return 0;
}

void
zl_uring_accepts_seen(zl_uring_accepts *a, const struct io_uring_cqe *cqe)
{
    if (cqe->flags & IORING_CQE_F_MORE) {
        return;
    }
    int i = accepts_find(a, cqe->user_data);
    if (i >= 0) {
        a->armed[i] = a->armed[--a->len];
    }
}

void
zl_uring_accepts_close(zl_uring_accepts *a, struct io_uring *ring)
{
    if (a->len == 0) {
        return;
    }
    for (int i = 0; i < a->len; i++) {
        if (zl_uring_cancel(ring, a->armed[i].tag) < 0) {
            break;                     /* what still completes is dropped with the ring, as before */
        }
    }
    (void)io_uring_submit_and_get_events(ring);   /* the accepts' last completions, posted by the cancels */
    struct io_uring_cqe *cqe;
    unsigned head, seen = 0;
    io_uring_for_each_cqe(ring, head, cqe) {
        if (cqe->res >= 0 && accepts_find(a, cqe->user_data) >= 0) {
            (void)close(cqe->res);     /* a connection the core never got */
        }
        seen++;
    }
    io_uring_cq_advance(ring, seen);
    a->len = 0;
}

void
zl_uring_accepts_free(zl_uring_accepts *a)
{
    free(a->armed);
    a->armed = NULL;
    a->len = a->cap = 0;
}
