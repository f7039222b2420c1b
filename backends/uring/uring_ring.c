/* backends/uring/uring_ring.c — the io_uring ring of the "uring" backend: setup with the features it needs, the
 * SQEs it queues (multishot poll add/remove/re-arm, the wake-up read) and why a refused setup was refused. */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>

#include "../../core/backend.h"
#include "uring_ring.h"

#define ZL_URING_SQ_ENTRIES 256
#define ZL_URING_CQ_ENTRIES 4096

/* EXT_ARG: the wait's timeout rides on io_uring_enter itself; CQE_SKIP (5.17) implies multishot poll and
 * POLL_UPDATE (5.13) too. */
#define ZL_URING_NEEDED_FEATURES (IORING_FEAT_EXT_ARG | IORING_FEAT_CQE_SKIP | IORING_FEAT_NODROP)

int
zl_uring_ring_init(struct io_uring *ring)
{
    struct io_uring_params params;
    memset(&params, 0, sizeof(params));
    params.flags = IORING_SETUP_CQSIZE;
    params.cq_entries = ZL_URING_CQ_ENTRIES;
    int rc = io_uring_queue_init_params(ZL_URING_SQ_ENTRIES, ring, &params);
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

static unsigned
poll_mask_of(int events)
{
    unsigned mask = 0;
    if (events & ZL_EV_READ) {
        mask |= POLLIN;
    }
    if (events & ZL_EV_WRITE) {
        mask |= POLLOUT;
    }
    return mask;
}

int
zl_uring_queue_poll_add(struct io_uring *ring, int fd, int events, uint32_t gen)
{
    int err = 0;
    struct io_uring_sqe *sqe = zl_uring_get_sqe(ring, &err);
    if (sqe == NULL) {
        return err;
    }
    io_uring_prep_poll_multishot(sqe, fd, poll_mask_of(events));
    io_uring_sqe_set_data64(sqe, zl_uring_user_data(ZL_URING_KIND_POLL, gen, fd));
    return 0;
}

int
zl_uring_queue_poll_remove(struct io_uring *ring, int fd, uint32_t gen)
{
    int err = 0;
    struct io_uring_sqe *sqe = zl_uring_get_sqe(ring, &err);
    if (sqe == NULL) {
        return err;
    }
    /* ASYNC_CANCEL, not POLL_REMOVE: POLL_REMOVE fails with -EALREADY (and the poll lives on) while a completion
     * of the poll is in flight; a cancel marks it and the kernel ends it when that completion runs. */
    io_uring_prep_cancel64(sqe, zl_uring_user_data(ZL_URING_KIND_POLL, gen, fd), 0);
    io_uring_sqe_set_data64(sqe, zl_uring_user_data(ZL_URING_KIND_CTL, gen, fd));
    io_uring_sqe_set_flags(sqe, IOSQE_CQE_SKIP_SUCCESS);
    return 0;
}

int
zl_uring_queue_poll_recheck(struct io_uring *ring, int fd, int events, uint32_t gen)
{
    int err = 0;
    struct io_uring_sqe *sqe = zl_uring_get_sqe(ring, &err);
    if (sqe == NULL) {
        return err;
    }
    io_uring_prep_poll_update(sqe, zl_uring_user_data(ZL_URING_KIND_POLL, gen, fd), 0, poll_mask_of(events),
                              IORING_POLL_UPDATE_EVENTS | IORING_POLL_ADD_MULTI);
    io_uring_sqe_set_data64(sqe, zl_uring_user_data(ZL_URING_KIND_CTL, gen, fd));
    io_uring_sqe_set_flags(sqe, IOSQE_CQE_SKIP_SUCCESS);
    return 0;
}

int
zl_uring_queue_wake_read(struct io_uring *ring, int eventfd, uint64_t *value)
{
    int err = 0;
    struct io_uring_sqe *sqe = zl_uring_get_sqe(ring, &err);
    if (sqe == NULL) {
        return err;
    }
    io_uring_prep_read(sqe, eventfd, value, sizeof(*value), 0);
    io_uring_sqe_set_data64(sqe, zl_uring_user_data(ZL_URING_KIND_WAKE, 0, eventfd));
    return 0;
}

int
zl_uring_events_of_mask(int mask)
{
    int events = 0;
    if (mask & (POLLIN | POLLERR | POLLHUP | POLLRDHUP)) {
        events |= ZL_EV_READ;
    }
    if (mask & (POLLOUT | POLLERR | POLLHUP)) {
        events |= ZL_EV_WRITE;
    }
    return events;
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
