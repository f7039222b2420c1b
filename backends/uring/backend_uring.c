/* backends/uring/backend_uring.c — the "uring" backend on Linux: readiness from an epoll set (backends/epoll_set.c,
 * the same watches as native) and completions (uring_completion.c), both waited for through io_uring: one
 * io_uring_enter carries every queued submission, the wait and the timeout. */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

#ifdef HAVE_VALGRIND_VALGRIND_H
#include <valgrind/valgrind.h>
#endif

#include "../../core/backend.h"
#include "../epoll_set.h"
#include "uring_accept.h"
#include "uring_completion.h"
#include "uring_datagram.h"
#include "uring_ring.h"

/* Under valgrind (3.19 at least) a thread blocked in io_uring_enter keeps valgrind's lock, so no other thread runs
 * and a wake() from one never comes: waits are cut into slices this long there, with a yield between them. */
#define ZL_URING_VALGRIND_SLICE_NS 10000000

struct zl_backend {
    zl_epoll_set set;
    struct io_uring ring;
    int ring_ready;
    int epoll_poll_queued;             /* the one-shot poll of set.epfd is queued or armed in the kernel */
    int64_t wait_slice_ns;             /* longest single wait in the ring; 0: unbounded */
    zl_uring_completions comp;         /* the buffer ring and what the last poll completed */
    zl_uring_accepts accepts;          /* the multishot accepts armed */
    zl_uring_datagrams dgrams;         /* the datagram buffer group, once a recvmsg was armed */
};

static int64_t
monotonic_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int64_t
wait_slice_for_this_process(void)
{
#ifdef RUNNING_ON_VALGRIND
    if (RUNNING_ON_VALGRIND) {
        return ZL_URING_VALGRIND_SLICE_NS;
    }
#endif
    return 0;
}

static void
uring_destroy(zl_backend *b)
{
    if (b == NULL) {
        return;
    }
    if (b->ring_ready) {
        zl_uring_accepts_close(&b->accepts, &b->ring);
        io_uring_queue_exit(&b->ring);  /* cancels the poll of the epoll fd and every recv and send */
    }
    zl_uring_completions_free(&b->comp);
    zl_uring_datagrams_free(&b->dgrams);
    zl_uring_accepts_free(&b->accepts);
    zl_epoll_set_close(&b->set);
    free(b);
}

static zl_backend *
uring_create(void)
{
    zl_backend *b = calloc(1, sizeof(*b));
    if (b == NULL) {
        return NULL;
    }
    b->set.epfd = -1;
    b->set.wakefd = -1;
    int rc = zl_uring_ring_init(&b->ring);
    if (rc == 0) {
        b->ring_ready = 1;
        rc = zl_epoll_set_init(&b->set);
    }
    if (rc == 0) {
        (void)zl_uring_completions_init(&b->comp, &b->ring);   /* refused (before 5.19): readiness only */
    }
    if (rc < 0) {
        uring_destroy(b);
        errno = -rc;
        return NULL;
    }
    b->wait_slice_ns = wait_slice_for_this_process();
    return b;
}

static int
uring_watch(zl_backend *b, int fd, int events)
{
    return zl_epoll_set_watch(&b->set, fd, events);
}

static int
uring_modify(zl_backend *b, int fd, int old_events, int events)
{
    (void)old_events;
    return zl_epoll_set_modify(&b->set, fd, events);
}

static int
uring_unwatch(zl_backend *b, int fd, int old_events)
{
    (void)old_events;
    zl_epoll_set_unwatch(&b->set, fd);
    return 0;
}

/* Take every CQE: the completions for the core, and 1 if the poll of the epoll fd completed among them (it is then
 * no longer armed). -ENOMEM when the completion list could not grow (the CQEs left wait for the next poll). */
static int
reap_cqes(zl_backend *b)
{
    struct io_uring_cqe *cqe;
    unsigned head, seen = 0;
    int ready = 0, rc = 0;
    io_uring_for_each_cqe(&b->ring, head, cqe) {
        if (cqe->user_data == ZL_URING_TAG_EPOLL_READY) {
            b->epoll_poll_queued = 0;
            ready = 1;                 /* an error result too: epoll_wait then reports it */
        } else if (cqe->user_data >= ZL_COMPLETION_MIN_TAG) {
            rc = zl_uring_datagram_cqe(cqe) ? zl_uring_datagram_take(&b->dgrams, &b->comp, cqe)
                                            : zl_uring_completions_take(&b->comp, cqe);
            if (rc < 0) {
                break;
            }
            if (b->accepts.len > 0) {
                zl_uring_accepts_seen(&b->accepts, cqe);
            }
        }
        seen++;
    }
    io_uring_cq_advance(&b->ring, seen);
    return rc < 0 && !ready && b->comp.done_len == 0 ? rc : ready;
}

/* Wait in the ring until the epoll set is readable (1), a completion came (0, comp.done_len > 0), the deadline
 * passes (0), or -EINTR / -errno. */
static int
wait_for_epoll_set(zl_backend *b, int64_t deadline_ns)
{
    if (!b->epoll_poll_queued) {
        int rc = zl_uring_queue_poll_in(&b->ring, b->set.epfd, ZL_URING_TAG_EPOLL_READY);
        if (rc < 0) {
            return rc;
        }
        b->epoll_poll_queued = 1;
    }
    for (;;) {
        int64_t wait_ns = deadline_ns < 0 ? -1 : deadline_ns - monotonic_ns();
        if (deadline_ns >= 0 && wait_ns <= 0) {
            return reap_cqes(b);
        }
        if (b->wait_slice_ns > 0 && (wait_ns < 0 || wait_ns > b->wait_slice_ns)) {
            wait_ns = b->wait_slice_ns;
        }
        int rc = zl_uring_submit_and_wait(&b->ring, wait_ns);
        int ready = reap_cqes(b);
        if (ready != 0 || b->comp.done_len > 0) {
            return ready;
        }
        if (rc < 0 && rc != -ETIME && rc != -EAGAIN && rc != -EBUSY) {
            return rc;                 /* -EINTR: a signal ended the wait */
        }
        if (b->wait_slice_ns > 0) {
            sched_yield();             /* valgrind switches threads here; a short loop would wait for its quantum */
        }
        /* A timeout, or an enter that only submitted: the deadline decides. */
    }
}

/* A poll that must not block: submit what is queued and run the task work waiting for the loop (COOP_TASKRUN; the
 * only system call, and only when there is either), take the CQEs there are, and collect the epoll set only when
 * its poll completed or is not armed (as level 1 always did). */
static int
uring_poll_now(zl_backend *b)
{
    if (io_uring_sq_ready(&b->ring) > 0 || (IO_URING_READ_ONCE(*b->ring.sq.kflags) & IORING_SQ_TASKRUN)) {
        int rc = io_uring_submit_and_get_events(&b->ring);
        if (rc < 0 && rc != -EAGAIN && rc != -EBUSY) {
            return rc;
        }
    }
    int ready = reap_cqes(b);
    if (ready < 0) {
        return ready;
    }
    return ready || !b->epoll_poll_queued ? zl_epoll_set_wait(&b->set, 0) : 0;
}

static int
uring_poll(zl_backend *b, int64_t timeout_ns, const zl_fired **fired)
{
    *fired = b->set.fired;
    zl_uring_completions_begin_poll(&b->comp);
    zl_uring_datagrams_begin_poll(&b->dgrams);
    if (timeout_ns == 0) {
        return uring_poll_now(b);
    }
    int ready = reap_cqes(b);          /* completions already there: no wait */
    if (ready != 0 || b->comp.done_len > 0) {
        return ready > 0 ? zl_epoll_set_wait(&b->set, 0) : ready;
    }
    int64_t deadline_ns = timeout_ns < 0 ? -1 : monotonic_ns() + timeout_ns;
    for (;;) {
        int rc = wait_for_epoll_set(b, deadline_ns);
        if (rc <= 0) {
            return rc;
        }
        rc = zl_epoll_set_wait(&b->set, 0);
        /* Nothing left to report (a poll completion older than the last non-blocking wait): wait on. */
        if (rc != 0 || b->set.woken || b->comp.done_len > 0) {
            return rc;
        }
    }
}

static int
uring_recv_start(zl_backend *b, int fd, uint64_t tag)
{
    return zl_uring_recv_start(&b->comp, &b->ring, fd, tag);
}

static int
uring_send(zl_backend *b, int fd, uint64_t tag, const void *data, size_t len)
{
    return zl_uring_send(&b->ring, fd, tag, data, len);
}

static int
uring_sendmsg_chain(zl_backend *b, int fd, const zl_send_op *ops, int count)
{
    return zl_uring_sendmsg_chain(&b->ring, fd, ops, count);
}

static int
uring_cancel(zl_backend *b, uint64_t tag)
{
    return zl_uring_cancel(&b->ring, tag);
}

static int
uring_completions(zl_backend *b, const zl_completion **done)
{
    *done = b->comp.done;
    return b->comp.done_len;
}

static int
uring_accept_start(zl_backend *b, int fd, uint64_t tag)
{
    return zl_uring_accept_start(&b->accepts, &b->ring, fd, tag);
}

static int
uring_recvmsg_start(zl_backend *b, int fd, uint64_t tag)
{
    return zl_uring_recvmsg_start(&b->dgrams, &b->ring, fd, tag);
}

static int
uring_wake(zl_backend *b)
{
    return zl_epoll_set_wake(&b->set);
}

static int
uring_reinit_after_fork(zl_backend *b)
{
    /* The ring (its memory is mapped shared) is the parent's too: make a new one, leave the parent's to it
     * (unmapping and closing our copy does not touch its poll), and let the next wait poll the new epoll fd. */
    struct io_uring fresh;
    int rc = zl_uring_ring_init(&fresh);
    if (rc < 0) {
        return rc;
    }
    io_uring_queue_exit(&b->ring);
    b->ring = fresh;
    b->epoll_poll_queued = 0;
    /* The buffers are the child's own copies (a private mapping); they are registered with the new ring afresh.
     * The parent's recvs and sends stay the parent's: the child's transports get no completion for them. */
    zl_uring_completions_free(&b->comp);
    (void)zl_uring_completions_init(&b->comp, &b->ring);
    zl_uring_datagrams_free(&b->dgrams);                  /* registered with the new ring at its next recvmsg */
    rc = zl_uring_accepts_rearm(&b->accepts, &b->ring);   /* the child's servers accept too, as on epoll */
    return rc < 0 ? rc : zl_epoll_set_reinit_after_fork(&b->set);
}

const zl_backend_ops zl_backend_uring = {
    .name = "uring",
    .features = ZL_BACKEND_F_NS_TIMEOUT,
    .create = uring_create,
    .destroy = uring_destroy,
    .watch = uring_watch,
    .modify = uring_modify,
    .unwatch = uring_unwatch,
    .poll = uring_poll,
    .wake = uring_wake,
    .reinit_after_fork = uring_reinit_after_fork,
    .recv_start = uring_recv_start,
    .send = uring_send,
    .cancel = uring_cancel,
    .completions = uring_completions,
    .accept_start = uring_accept_start,
    .recvmsg_start = uring_recvmsg_start,
    .sendmsg_chain = uring_sendmsg_chain,
};
