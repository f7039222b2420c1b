/* backends/uring/uring_ring.c — the io_uring ring of the "uring" backend: setup with the features it needs, the
 * SQE it queues (a poll of the epoll fd), the submit-and-wait, and why a refused setup was refused. */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>

#include "uring_ring.h"

#define ZL_URING_SQ_ENTRIES 256
#define ZL_URING_CQ_ENTRIES 4096

/* EXT_ARG (5.11): the wait's timeout rides on io_uring_enter itself; NODROP: no CQE is ever lost; CQE_SKIP (5.17):
 * the oldest kernel the backend is tested against, which the refusal message names. */
#define ZL_URING_NEEDED_FEATURES (IORING_FEAT_EXT_ARG | IORING_FEAT_CQE_SKIP | IORING_FEAT_NODROP)

/* COOP_TASKRUN (5.19): the task work that completes an operation (a recv's copy) waits for the loop's next entry
 * into the kernel instead of interrupting it with an IPI the moment data arrives; on an idle 2-core VM the IPI and
 * the socket lock the early recv then fights for cost 1.05-1.6x native per request (docs/performance.md). A thread
 * that submitted and no longer runs the loop still runs that work when it next sleeps, makes a system call or
 * takes a tick. TASKRUN_FLAG says in the SQ ring when such work waits, so a poll that must not block enters then. */
#define ZL_URING_TASKRUN_FLAGS (IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG)

int
zl_uring_ring_init(struct io_uring *ring)
{
    struct io_uring_params params;
    memset(&params, 0, sizeof(params));
    params.flags = IORING_SETUP_CQSIZE | ZL_URING_TASKRUN_FLAGS;
    params.cq_entries = ZL_URING_CQ_ENTRIES;
    int rc = io_uring_queue_init_params(ZL_URING_SQ_ENTRIES, ring, &params);
    if (rc == -EINVAL) {               /* before 5.19: without them */
        memset(&params, 0, sizeof(params));
        params.flags = IORING_SETUP_CQSIZE;
        params.cq_entries = ZL_URING_CQ_ENTRIES;
        rc = io_uring_queue_init_params(ZL_URING_SQ_ENTRIES, ring, &params);
    }
    if (rc < 0) {
        return rc;
    }
    if ((params.features & ZL_URING_NEEDED_FEATURES) != ZL_URING_NEEDED_FEATURES) {
        io_uring_queue_exit(ring);
        return -EOPNOTSUPP;
    }
    return 0;
}

struct io_uring_sqe *
zl_uring_get_sqe(struct io_uring *ring, int *err)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(ring);
    if (sqe != NULL) {
        return sqe;
    }
    int rc = io_uring_submit(ring);
    if (rc < 0) {
        *err = rc;
        return NULL;
    }
    sqe = io_uring_get_sqe(ring);
    if (sqe == NULL) {
        *err = -EBUSY;
    }
    return sqe;
}

int
zl_uring_queue_poll_in(struct io_uring *ring, int fd, uint64_t user_data)
{
    int err = 0;
    struct io_uring_sqe *sqe = zl_uring_get_sqe(ring, &err);
    if (sqe == NULL) {
        return err;
    }
    io_uring_prep_poll_add(sqe, fd, POLLIN);
    io_uring_sqe_set_data64(sqe, user_data);
    return 0;
}

int
zl_uring_submit_and_wait(struct io_uring *ring, int64_t timeout_ns)
{
    if (timeout_ns == 0) {
        return io_uring_submit_and_get_events(ring);
    }
    if (timeout_ns < 0) {
        return io_uring_submit_and_wait(ring, 1);
    }
    /* EXT_ARG: the timeout rides on the enter itself, in nanoseconds. */
    struct __kernel_timespec ts = {.tv_sec = timeout_ns / 1000000000, .tv_nsec = timeout_ns % 1000000000};
    struct io_uring_cqe *cqe;
    return io_uring_submit_and_wait_timeout(ring, &cqe, 1, &ts, NULL);
}

/* kernel.io_uring_disabled (6.6+): 0 allowed, 1 root or kernel.io_uring_group only, 2 refused; -1 if unknown. */
static int
io_uring_disabled_sysctl(void)
{
    FILE *f = fopen("/proc/sys/kernel/io_uring_disabled", "re");
    if (f == NULL) {
        return -1;
    }
    int value = -1;
    if (fscanf(f, "%d", &value) != 1) {
        value = -1;
    }
    fclose(f);
    return value;
}

void
zl_uring_refusal_reason(int err, char *buf, size_t len)
{
    int disabled = io_uring_disabled_sysctl();
    const char *why;
    if (err == ENOSYS) {
        why = "this kernel has no io_uring (io_uring_setup is not implemented)";
    } else if (err == EOPNOTSUPP) {
        why = "this kernel's io_uring lacks what the backend needs (EXT_ARG, CQE_SKIP: Linux 5.17 or newer)";
    } else if ((err == EPERM || err == EACCES) && disabled == 2) {
        why = "io_uring is disabled by the sysctl kernel.io_uring_disabled=2";
    } else if ((err == EPERM || err == EACCES) && disabled == 1) {
        why = "io_uring is limited to root and kernel.io_uring_group by the sysctl kernel.io_uring_disabled=1";
    } else if (err == EPERM || err == EACCES) {
        why = "io_uring_setup was refused although io_uring is enabled: a seccomp profile (a container's) or an "
              "LSM policy forbids it";
    } else if (err == ENOMEM) {
        why = "io_uring_setup found no memory for the rings (RLIMIT_MEMLOCK on kernels before 5.12)";
    } else {
        why = "io_uring_setup failed";
    }
    snprintf(buf, len, "%s (%s)", why, strerror(err));
}
