/* backends/uring/backend_uring.c — the "uring" backend on Linux: readiness through io_uring (one multishot
 * POLL_ADD per watched fd, changes as SQEs, one io_uring_enter per poll), an eventfd READ for wake-ups. */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../../core/backend.h"
#include "../wake_fd.h"
#include "uring_ring.h"

#define ZL_URING_BATCH 1024            /* CQEs reaped per poll, hence fired entries at most */
#define ZL_URING_SWEEP_FDS 16          /* watched numbers checked for a closed file per sweep */
#define ZL_URING_SWEEP_NS 1000000      /* at most one sweep a millisecond */

/* What the backend knows of one fd number. */
typedef struct uring_fd_watch {
    uint32_t gen;                      /* tag of this fd's poll in user_data; meaningful while armed */
    unsigned char events;              /* watched ZL_EV_* events; 0: not watched */
    unsigned char armed;               /* a poll tagged gen is queued or live in the kernel */
    unsigned char seen;                /* a CQE of poll gen was checked against dev/ino already */
    int fired_slot;                    /* index in fired[] when fired_epoch is the current poll's */
    uint32_t fired_epoch;
    dev_t dev;                         /* identity of the file watched, to tell -EEXIST from a reused number */
    ino_t ino;
} uring_fd_watch;

struct zl_backend {
    struct io_uring ring;
    int ring_ready;
    int wakefd;                        /* blocking eventfd: io_uring's READ waits on it instead of failing */
    uint64_t wake_value;               /* where the queued READ puts the counter */
    int wake_queued;
    int probe_epfd;                    /* made on demand: asks epoll whether a character device can be polled */
    uint32_t last_gen;
    uint32_t epoch;                    /* count of polls, for de-duplicating fired entries */
    uring_fd_watch *watches;
    int watches_len;
    int sweep_cursor;                  /* next number the sweep of closed files checks */
    int64_t sweep_due_ns;              /* monotonic time of the next sweep */
    int fired_count;                   /* entries of the last poll: re-checked by the next one (level) */
    zl_fired fired[ZL_URING_BATCH];
};

static uint32_t
next_gen(zl_backend *b)
{
    b->last_gen = (b->last_gen + 1) & ZL_URING_GEN_MASK;
    if (b->last_gen == 0) {
        b->last_gen = 1;
    }
    return b->last_gen;
}

static int
watches_reserve(zl_backend *b, int fd)
{
    if (fd < b->watches_len) {
        return 0;
    }
    int len = b->watches_len ? b->watches_len : 64;
    while (len <= fd) {
        if (len > INT32_MAX / 2) {
            return -EBADF;
        }
        len *= 2;
    }
    uring_fd_watch *grown = realloc(b->watches, (size_t)len * sizeof(*grown));
    if (grown == NULL) {
        return -ENOMEM;
    }
    memset(grown + b->watches_len, 0, (size_t)(len - b->watches_len) * sizeof(*grown));
    b->watches = grown;
    b->watches_len = len;
    return 0;
}

/* Queue a fresh multishot poll for fd's current events under a new generation. */
static int
watch_arm(zl_backend *b, int fd)
{
    uring_fd_watch *w = &b->watches[fd];
    uint32_t gen = next_gen(b);
    int rc = zl_uring_queue_poll_add(&b->ring, fd, w->events, gen);
    if (rc < 0) {
        return rc;
    }
    w->gen = gen;
    w->armed = 1;
    w->seen = 0;
    return 0;
}

/* Arm fd's poll and submit it at once: the kernel takes the file the number names when it issues the add, and
 * the caller may close the number before the next poll (the add would then watch whatever file reuses it). */
static int
watch_arm_now(zl_backend *b, int fd)
{
    int rc = watch_arm(b, fd);
    if (rc < 0) {
        return rc;
    }
    (void)io_uring_submit(&b->ring);   /* if refused (-EBUSY), the add stays queued for the next poll's submit */
    return 0;
}

/* Queue the cancellation of fd's poll, if it has one; its late CQEs no longer match and are dropped. */
static int
watch_disarm(zl_backend *b, int fd)
{
    uring_fd_watch *w = &b->watches[fd];
    if (!w->armed) {
        return 0;
    }
    int rc = zl_uring_queue_poll_remove(&b->ring, fd, w->gen);
    if (rc < 0) {
        return rc;
    }
    w->armed = 0;
    return 0;
}

/* epoll's verdict on a character device (a tty polls, /dev/null does not): 0 or -EPERM, as epoll says. */
static int
probe_char_device(zl_backend *b, int fd)
{
    if (b->probe_epfd < 0) {
        b->probe_epfd = epoll_create1(EPOLL_CLOEXEC);
        if (b->probe_epfd < 0) {
            return -errno;
        }
    }
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = fd};
    if (epoll_ctl(b->probe_epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
        return -errno;
    }
    (void)epoll_ctl(b->probe_epfd, EPOLL_CTL_DEL, fd, &ev);
    return 0;
}

/* io_uring polls any file (a regular one is always ready); refuse what epoll refuses, as the native backend. */
static int
check_pollable(zl_backend *b, int fd, const struct stat *st)
{
    if (S_ISREG(st->st_mode) || S_ISDIR(st->st_mode) || S_ISBLK(st->st_mode)) {
        return -EPERM;
    }
    if (S_ISCHR(st->st_mode)) {
        return probe_char_device(b, fd);
    }
    return 0;
}

static void
uring_destroy(zl_backend *b)
{
    if (b == NULL) {
        return;
    }
    if (b->ring_ready) {
        io_uring_queue_exit(&b->ring);  /* cancels every poll and the wake-up read */
    }
    if (b->wakefd >= 0) {
        close(b->wakefd);
    }
    if (b->probe_epfd >= 0) {
        close(b->probe_epfd);
    }
    free(b->watches);
    free(b);
}

static zl_backend *
uring_create(void)
{
    zl_backend *b = calloc(1, sizeof(*b));
    if (b == NULL) {
        return NULL;
    }
    b->wakefd = -1;
    b->probe_epfd = -1;
    int rc = zl_uring_ring_init(&b->ring);
    if (rc < 0) {
        errno = -rc;
        goto error;
    }
    b->ring_ready = 1;
    b->wakefd = eventfd(0, EFD_CLOEXEC);
    if (b->wakefd < 0) {
        goto error;
    }
    return b;

error:;
    int saved = errno;
    uring_destroy(b);
    errno = saved;
    return NULL;
}

static int
uring_watch(zl_backend *b, int fd, int events)
{
    struct stat st;
    if (fd < 0) {
        return -EBADF;
    }
    if (fstat(fd, &st) < 0) {
        return -errno;
    }
    int rc = check_pollable(b, fd, &st);
    if (rc == 0) {
        rc = watches_reserve(b, fd);
    }
    if (rc < 0) {
        return rc;
    }
    uring_fd_watch *w = &b->watches[fd];
    if (w->events != 0) {
        if (w->dev == st.st_dev && w->ino == st.st_ino) {
            return -EEXIST;
        }
        rc = watch_disarm(b, fd);       /* a closed fd's number was reused before we were told */
        if (rc < 0) {
            return rc;
        }
    }
    w->events = (unsigned char)events;
    w->dev = st.st_dev;
    w->ino = st.st_ino;
    rc = watch_arm_now(b, fd);
    if (rc < 0) {
        w->events = 0;
    }
    return rc;
}

/* 0 if fd still names the file w watched, -ENOENT if it names another one now, -EBADF (fstat's) if closed. */
static int
watch_check_identity(const uring_fd_watch *w, int fd)
{
    struct stat st;
    if (fstat(fd, &st) < 0) {
        return -errno;
    }
    return st.st_dev == w->dev && st.st_ino == w->ino ? 0 : -ENOENT;
}

static int
uring_modify(zl_backend *b, int fd, int old_events, int events)
{
    (void)old_events;
    if (fd < 0 || fd >= b->watches_len || b->watches[fd].events == 0) {
        return -ENOENT;
    }
    uring_fd_watch *w = &b->watches[fd];
    /* The watch died with its file, as an epoll registration does: the caller unwatches it. */
    int rc = watch_check_identity(w, fd);
    if (rc < 0) {
        return rc;
    }
    /* Remove and add rather than POLL_UPDATE: a poll the kernel ended is re-armed the same way. The add is
     * submitted at once, while the number names the file just checked. */
    rc = watch_disarm(b, fd);
    if (rc < 0) {
        return rc;
    }
    int saved = w->events;
    w->events = (unsigned char)events;
    rc = watch_arm_now(b, fd);
    if (rc < 0) {
        w->events = (unsigned char)saved;
    }
    return rc;
}

static int
uring_unwatch(zl_backend *b, int fd, int old_events)
{
    (void)old_events;
    if (fd < 0 || fd >= b->watches_len || b->watches[fd].events == 0) {
        return 0;
    }
    b->watches[fd].events = 0;
    if (b->watches[fd].armed && watch_disarm(b, fd) == 0) {
        /* Submit at once: the poll holds a reference to the file, and the caller is about to close the fd. */
        (void)io_uring_submit(&b->ring);
    }
    b->watches[fd].armed = 0;
    return 0;
}

/* Level-triggered on an edge-triggered multishot poll: every fd reported by the last poll and still watched is
 * polled again by the kernel in this poll's io_uring_enter, which posts a CQE if it is still ready. */
static int
queue_level_rechecks(zl_backend *b)
{
    for (int i = 0; i < b->fired_count; i++) {
        int fd = b->fired[i].fd;
        uring_fd_watch *w = &b->watches[fd];
        if (w->events == 0 || !w->armed) {
            continue;
        }
        int rc = zl_uring_queue_poll_recheck(&b->ring, fd, w->events, w->gen);
        if (rc < 0) {
            return rc;
        }
    }
    b->fired_count = 0;
    return 0;
}

/* One io_uring_enter: submit what is queued and wait for a CQE, a wake-up or the timeout. */
static int
ring_submit_and_wait(zl_backend *b, int64_t timeout_ns)
{
    struct io_uring *ring = &b->ring;
    if (timeout_ns == 0) {
        if (io_uring_sq_ready(ring) == 0 && !io_uring_cq_has_overflow(ring)) {
            return 0;
        }
        return io_uring_submit_and_get_events(ring);
    }
    if (timeout_ns < 0) {
        return io_uring_submit_and_wait(ring, 1);
    }
    struct __kernel_timespec ts = {.tv_sec = timeout_ns / 1000000000, .tv_nsec = timeout_ns % 1000000000};
    struct io_uring_cqe *cqe;
    return io_uring_submit_and_wait_timeout(ring, &cqe, 1, &ts, NULL);
}

static void
fired_add(zl_backend *b, int fd, int events, int *count)
{
    uring_fd_watch *w = &b->watches[fd];
    if (w->fired_epoch == b->epoch) {
        b->fired[w->fired_slot].events |= events;
        return;
    }
    w->fired_epoch = b->epoch;
    w->fired_slot = *count;
    b->fired[*count].fd = fd;
    b->fired[*count].events = events;
    (*count)++;
}

/* Whether fd still names the file watched. A poll holds its file open, so a number closed while watched keeps
 * reporting the old file until the poll is cancelled. */
static int
watch_names_same_file(const uring_fd_watch *w, int fd)
{
    struct stat st;
    return fstat(fd, &st) == 0 && st.st_dev == w->dev && st.st_ino == w->ino;
}

/* Whether a CQE may come from a file whose number was closed since: the first of its poll (the readiness may
 * predate a close), a hang-up or error, or readiness the last poll reported already and its callback did not
 * consume (a callback that closed the fd without unwatching it). A fresh event of a checked poll costs nothing. */
static int
poll_cqe_is_suspicious(const zl_backend *b, const uring_fd_watch *w, int res)
{
    return !w->seen || (res & (POLLHUP | POLLERR | POLLRDHUP)) || w->fired_epoch == b->epoch - 1;
}

static void
handle_poll_cqe(zl_backend *b, const struct io_uring_cqe *cqe, int *count)
{
    int fd = zl_uring_fd_of(cqe->user_data);
    if (fd < 0 || fd >= b->watches_len) {
        return;
    }
    uring_fd_watch *w = &b->watches[fd];
    if (!w->armed || w->gen != zl_uring_gen_of(cqe->user_data)) {
        return;                        /* a cancelled poll, or one of a closed and reused number */
    }
    if (cqe->res > 0 && poll_cqe_is_suspicious(b, w, cqe->res)) {
        if (!watch_names_same_file(w, fd)) {
            /* Closed without unwatch (epoll would have dropped it with the file): let the old file go, report
             * nothing; modify then fails as the contract says, and unwatch forgets the number. */
            (void)watch_disarm(b, fd);
            return;
        }
        w->seen = 1;
    }
    if (!(cqe->flags & IORING_CQE_F_MORE)) {
        /* The kernel ended the multishot: arm a new one unless the fd failed (-EBADF: closed before the add).
         * -ECANCELED here is a level re-check the kernel could not apply (a tty's poll on two wait queues):
         * the new poll does the re-check. */
        w->armed = 0;
        if ((cqe->res >= 0 || cqe->res == -ECANCELED) && w->events != 0) {
            (void)watch_arm(b, fd);
        }
    }
    if (cqe->res > 0) {
        int events = zl_uring_events_of_mask(cqe->res);
        if (events != 0) {
            fired_add(b, fd, events, count);
        }
    }
}

/* Take up to a batch of CQEs into fired[]; *woken tells whether the wake-up READ completed among them, *seen how
 * many CQEs there were. */
static int
reap_completions(zl_backend *b, int *woken, unsigned *seen_out)
{
    struct io_uring_cqe *cqe;
    unsigned head, seen = 0;
    int count = 0;
    b->epoch++;
    io_uring_for_each_cqe(&b->ring, head, cqe) {
        if (seen == ZL_URING_BATCH) {
            break;                     /* the rest stay in the ring for the next poll */
        }
        seen++;
        switch (zl_uring_kind_of(cqe->user_data)) {
        case ZL_URING_KIND_POLL:
            handle_poll_cqe(b, cqe, &count);
            break;
        case ZL_URING_KIND_WAKE:
            b->wake_queued = 0;        /* the READ consumed every wake() so far */
            *woken = 1;
            break;
        default:
            break;                     /* a failed remove/re-check: the poll was gone already */
        }
    }
    io_uring_cq_advance(&b->ring, seen);
    *seen_out = seen;
    return count;
}

static int64_t
monotonic_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Queue what this poll needs besides the callers' changes: the level re-checks and the wake-up READ. */
static int
queue_poll_work(zl_backend *b)
{
    int rc = queue_level_rechecks(b);
    if (rc == 0 && !b->wake_queued) {
        rc = zl_uring_queue_wake_read(&b->ring, b->wakefd, &b->wake_value);
        b->wake_queued = rc == 0;
    }
    return rc;
}

/* A number closed while watched (no unwatch) leaves its file open, held by the poll, and no CQE may ever come to
 * tell: its peer would never see the close. Check a few watched numbers against the file watched, round-robin, at
 * most once a millisecond, and cancel the polls of dead watches so their files close as epoll would let them. */
static void
sweep_closed_watches(zl_backend *b)
{
    int64_t now = monotonic_ns();
    if (now < b->sweep_due_ns || b->watches_len == 0) {
        return;
    }
    b->sweep_due_ns = now + ZL_URING_SWEEP_NS;
    int checked = 0;
    for (int step = 0; step < b->watches_len && checked < ZL_URING_SWEEP_FDS; step++) {
        int fd = b->sweep_cursor;
        b->sweep_cursor = fd + 1 < b->watches_len ? fd + 1 : 0;
        uring_fd_watch *w = &b->watches[fd];
        if (!w->armed) {
            continue;
        }
        checked++;
        if (!watch_names_same_file(w, fd)) {
            (void)watch_disarm(b, fd);
        }
    }
}

static int
uring_poll(zl_backend *b, int64_t timeout_ns, const zl_fired **fired)
{
    *fired = b->fired;
    sweep_closed_watches(b);
    int rc = queue_poll_work(b);
    if (rc < 0) {
        return rc;
    }
    int64_t deadline = timeout_ns > 0 ? monotonic_ns() + timeout_ns : 0;
    for (;;) {
        int woken = 0;
        unsigned seen = 0;
        rc = ring_submit_and_wait(b, timeout_ns);
        if (rc < 0 && rc != -ETIME && rc != -EINTR && rc != -EAGAIN && rc != -EBUSY) {
            return rc;
        }
        int count = reap_completions(b, &woken, &seen);
        b->fired_count = count;
        if (count > 0 || woken || timeout_ns == 0 || rc == -ETIME) {
            return count;
        }
        if (timeout_ns > 0 && monotonic_ns() >= deadline) {
            return 0;                  /* io_uring_enter gives the submitted count, not -ETIME, if it submitted */
        }
        if (rc == -EINTR || seen == 0) {
            return -EINTR;             /* woken with no CQE before the deadline: a signal */
        }
        /* Only CQEs of cancelled or stale polls: they do not end the wait. */
        if (timeout_ns > 0) {
            timeout_ns = deadline - monotonic_ns();
            if (timeout_ns <= 0) {
                return 0;
            }
        }
    }
}

static int
uring_wake(zl_backend *b)
{
    uint64_t one = 1;
    return zl_wake_fd_write(b->wakefd, &one, sizeof(one));
}

/* Forget watched fds the child has already closed: their numbers may be reused by the fds made below. */
static void
forget_closed_fds(zl_backend *b)
{
    for (int fd = 0; fd < b->watches_len; fd++) {
        if (b->watches[fd].events != 0 && fcntl(fd, F_GETFD) < 0) {
            b->watches[fd].events = 0;
        }
    }
}

static int
uring_reinit_after_fork(zl_backend *b)
{
    forget_closed_fds(b);
    /* The ring (its memory is mapped shared) and the eventfd are the parent's too: make new ones, leave the
     * parent's to it (unmapping and closing our copies does not touch its polls), and re-arm every watch. */
    struct io_uring fresh;
    int rc = zl_uring_ring_init(&fresh);
    if (rc < 0) {
        return rc;
    }
    int wakefd = eventfd(0, EFD_CLOEXEC);
    if (wakefd < 0) {
        int saved = errno;
        io_uring_queue_exit(&fresh);
        return -saved;
    }
    io_uring_queue_exit(&b->ring);
    b->ring = fresh;
    close(b->wakefd);
    b->wakefd = wakefd;
    b->wake_queued = 0;
    if (b->probe_epfd >= 0) {
        close(b->probe_epfd);          /* shared with the parent too; made again on demand */
        b->probe_epfd = -1;
    }
    b->fired_count = 0;
    for (int fd = 0; fd < b->watches_len; fd++) {
        b->watches[fd].armed = 0;
        if (b->watches[fd].events != 0) {
            rc = watch_arm(b, fd);
            if (rc < 0) {
                return rc;
            }
        }
    }
    return 0;
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
};
