/* backends/native/backend_kqueue.c — the "native" backend on macOS and the BSDs: kqueue, with EVFILT_USER (or a
 * pipe where the kernel lacks it) for wake-ups. Plain C; keeps each fd's events to re-arm a new kqueue after fork. */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif
#if defined(__APPLE__) || defined(__FreeBSD__) || defined(__OpenBSD__) || defined(__NetBSD__) || \
    defined(__DragonFly__) || defined(ZL_KQUEUE_SHIM)

#if defined(__linux__) && !defined(_GNU_SOURCE)
#define _GNU_SOURCE                     /* the Linux test build (ZL_KQUEUE_SHIM) under -std=c11 */
#endif
#include <sys/types.h>
#include <sys/event.h>
#include <sys/time.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../../core/backend.h"
#include "../wake_fd.h"

/*
 * How kqueue differs from epoll, and what this file does about it:
 * - Read and write interest are two separate knotes (EVFILT_READ, EVFILT_WRITE). modify() adds the filters of the
 *   new set and deletes the dropped ones; poll() merges the two reports for one fd into one zl_fired entry.
 * - Changes are applied at once (one kevent() call, no event list), so watch() can return the kernel's error.
 *   The change list never goes into the waiting kevent(): an error there would come back as an EV_ERROR event.
 * - close(fd) drops the fd's knotes, and EV_ADD on an existing knote silently updates it: the kernel never says
 *   EEXIST. watch() of a number already in our table asks the kernel whether the knote still exists (EV_DELETE:
 *   ENOENT means the number was closed and reused) and puts it back if it did.
 * - A regular file is accepted, as asyncio's KqueueSelector accepts it: EVFILT_READ fires while the file offset is
 *   not at end of file, EVFILT_WRITE always. (epoll refuses regular files with EPERM; this backend does not.)
 * - EVFILT_WRITE on a pipe whose reader is gone is refused at registration by some kernels (FreeBSD, DragonFly:
 *   EPIPE; NetBSD: EBADF; OpenBSD accepts it) where epoll reports EPOLLERR. Such an fd is kept as "hung": every
 *   poll reports its watched events, as epoll would, and the caller finds EPIPE in write().
 * - A kqueue is not inherited by fork(): in the child its number is already closed (and may be reused), so
 *   reinit_after_fork() makes a new kqueue without closing the old number and re-adds every watched fd.
 */

#define ZL_KQ_BATCH 256
#define ZL_KQ_MAX_TIMEOUT_SEC 100000000  /* ~3 years; some kernels refuse larger timeouts with EINVAL */
#define ZL_KQ_WAKE_IDENT 0               /* EVFILT_USER idents are their own namespace, not fds */

#if defined(EVFILT_USER) && defined(NOTE_TRIGGER) && !defined(ZL_KQUEUE_WAKE_PIPE)
#define ZL_KQ_USER_WAKE 1
#else
#define ZL_KQ_USER_WAKE 0
#endif

typedef struct zl_kq_slot {
    unsigned char events;             /* ZL_EV_* asked for; 0: not watched */
    unsigned char hung;               /* EVFILT_WRITE refused for a gone peer: reported by every poll */
    int fired_at;                     /* during a poll: 1 + this fd's index in fired[], else 0 */
} zl_kq_slot;

struct zl_backend {
    int kq;
    int wake_pipe[2];                 /* without EVFILT_USER: read end watched, wake() writes a byte */
    zl_kq_slot *slots;                /* per fd, for merging reports and re-arming after fork */
    int slots_len;
    int hung_count;
    struct kevent events[ZL_KQ_BATCH];
    zl_fired fired[ZL_KQ_BATCH];
};

static const struct timespec zl_kq_no_wait = {0, 0};

/* ---- kevent changes ---- */

static int
zl_kq_filter_of(int event)
{
    return event == ZL_EV_READ ? EVFILT_READ : EVFILT_WRITE;
}

/* Apply n changes in one call; 0 or -errno of a failed change (the kernel may stop at the first failure). */
static int
zl_kq_submit(int kq, const struct kevent *changes, int n)
{
    int rc;
    do {
        rc = kevent(kq, changes, n, NULL, 0, &zl_kq_no_wait);
    } while (rc < 0 && errno == EINTR);
    return rc < 0 ? -errno : 0;
}

static int
zl_kq_change(int kq, int fd, int event, int flags)
{
    struct kevent change;
    EV_SET(&change, (uintptr_t)fd, zl_kq_filter_of(event), flags, 0, 0, 0);
    return zl_kq_submit(kq, &change, 1);
}

static int
zl_kq_fd_is_open(int fd)
{
    return fcntl(fd, F_GETFD) >= 0 || errno != EBADF;
}

/* A refused EVFILT_WRITE that means "the peer is gone", not "this fd cannot be watched". */
static int
zl_kq_is_hangup(int fd, int event, int rc)
{
    return event == ZL_EV_WRITE && (rc == -EPIPE || (rc == -EBADF && zl_kq_fd_is_open(fd)));
}

/* Undo a failed apply: drop the filters it added, restore the ones it dropped. Errors are ignored. */
static void
zl_kq_roll_back(int kq, int fd, int have, int want)
{
    for (int event = ZL_EV_READ; event <= ZL_EV_WRITE; event <<= 1) {
        if ((want & event) && !(have & event)) {
            (void)zl_kq_change(kq, fd, event, EV_DELETE);
        } else if ((have & event) && !(want & event)) {
            (void)zl_kq_change(kq, fd, event, EV_ADD);
        }
    }
}

/* The slow path of zl_kq_apply: one change per call, so each result is known. */
static int
zl_kq_apply_each(int kq, int fd, int have, int want, int *hung)
{
    int failed = 0;
    for (int event = ZL_EV_READ; event <= ZL_EV_WRITE; event <<= 1) {
        if (!(want & event)) {
            continue;
        }
        int rc = zl_kq_change(kq, fd, event, EV_ADD);
        if (rc == -EBADF && !zl_kq_fd_is_open(fd)) {
            return -EBADF;            /* closed: the kernel holds no knote for it */
        }
        if (zl_kq_is_hangup(fd, event, rc)) {
            *hung = 1;
        } else if (rc < 0 && failed == 0) {
            failed = rc;
        }
    }
    for (int event = ZL_EV_READ; event <= ZL_EV_WRITE; event <<= 1) {
        if ((have & event) && !(want & event)) {
            (void)zl_kq_change(kq, fd, event, EV_DELETE);   /* ENOENT: the number was closed and reused */
        }
    }
    if (failed < 0) {
        zl_kq_roll_back(kq, fd, have, want);
        *hung = 0;
    }
    return failed;
}

/* Make the kernel hold exactly the filters of want for fd, from have. 0 (with *hung set when EVFILT_WRITE was
 * refused because the peer is gone) or -errno with nothing changed. probe (a ZL_EV_* or 0) names a filter whose
 * knote must exist: first in the batch, a change without EV_ADD fails with ENOENT when the file it watched was
 * closed (close drops its knotes), and the kernel stops there; so a dead watch is found without an extra call,
 * and modify fails, as epoll's EPOLL_CTL_MOD does, instead of watching the file that reused the number. */
static int
zl_kq_apply(int kq, int fd, int have, int want, int probe, int *hung)
{
    struct kevent changes[5];
    int n = 0;
    *hung = 0;
    if (probe != 0) {
        EV_SET(&changes[n++], (uintptr_t)fd, zl_kq_filter_of(probe), 0, 0, 0, 0);
    }
    for (int event = ZL_EV_READ; event <= ZL_EV_WRITE; event <<= 1) {
        if (want & event) {
            EV_SET(&changes[n++], (uintptr_t)fd, zl_kq_filter_of(event), EV_ADD, 0, 0, 0);
        }
    }
    for (int event = ZL_EV_READ; event <= ZL_EV_WRITE; event <<= 1) {
        if ((have & event) && !(want & event)) {
            EV_SET(&changes[n++], (uintptr_t)fd, zl_kq_filter_of(event), EV_DELETE, 0, 0, 0);
        }
    }
    if (zl_kq_submit(kq, changes, n) == 0) {
        return 0;
    }
    if (probe != 0) {
        int rc = zl_kq_submit(kq, changes, 1);   /* only after a failure: was it the probe? */
        if (rc < 0) {
            return rc;                /* -ENOENT: reused by another file; -EBADF: closed */
        }
    }
    return zl_kq_apply_each(kq, fd, have, want, hung);
}

/* Delete fd's filters; a closed fd (EBADF) or a reused number (ENOENT) has none left, which is fine. */
static void
zl_kq_remove(int kq, int fd, int have)
{
    for (int event = ZL_EV_READ; event <= ZL_EV_WRITE; event <<= 1) {
        if (have & event) {
            (void)zl_kq_change(kq, fd, event, EV_DELETE);
        }
    }
}

/* ---- the fd table ---- */

static int
zl_kq_reserve(zl_backend *b, int fd)
{
    if (fd < b->slots_len) {
        return 0;
    }
    int len = b->slots_len ? b->slots_len : 64;
    while (len <= fd) {
        if (len > INT32_MAX / 2) {
            return -ENOMEM;
        }
        len *= 2;
    }
    zl_kq_slot *grown = realloc(b->slots, (size_t)len * sizeof(*grown));
    if (grown == NULL) {
        return -ENOMEM;
    }
    memset(grown + b->slots_len, 0, (size_t)(len - b->slots_len) * sizeof(*grown));
    b->slots = grown;
    b->slots_len = len;
    return 0;
}

static void
zl_kq_slot_set(zl_backend *b, int fd, int events, int hung)
{
    zl_kq_slot *slot = &b->slots[fd];
    hung = hung && events != 0;
    b->hung_count += (hung != 0) - (slot->hung != 0);
    slot->events = (unsigned char)events;
    slot->hung = (unsigned char)hung;
}

/* The filters the kernel should hold for a slot: a hung fd has no EVFILT_WRITE knote. */
static int
zl_kq_registered(const zl_kq_slot *slot)
{
    return slot->hung ? slot->events & ~ZL_EV_WRITE : slot->events;
}

/* Is the file at a number already in the table still the one watched? 1: yes (its knotes are unchanged),
 * 0: no, the number was closed and reused (the slot is cleared), -errno: fd closed (slot cleared) or failure. */
static int
zl_kq_still_watched(zl_backend *b, int fd)
{
    int registered = zl_kq_registered(&b->slots[fd]);
    if (registered == 0) {
        /* Hung write-only watch: no knote to ask about. Treat it as stale; a second watch just replaces it. */
        zl_kq_slot_set(b, fd, 0, 0);
        return zl_kq_fd_is_open(fd) ? 0 : -EBADF;
    }
    int event = (registered & ZL_EV_READ) ? ZL_EV_READ : ZL_EV_WRITE;
    int rc = zl_kq_change(b->kq, fd, event, EV_DELETE);
    if (rc == 0) {
        int hung = 0;
        rc = zl_kq_change(b->kq, fd, event, EV_ADD);   /* put back the knote the question removed */
        if (zl_kq_is_hangup(fd, event, rc)) {
            hung = 1;
        }
        zl_kq_slot_set(b, fd, b->slots[fd].events, hung || b->slots[fd].hung);
        return 1;
    }
    zl_kq_slot_set(b, fd, 0, 0);
    if (rc == -ENOENT) {
        return 0;
    }
    return rc;
}

/* ---- the wake-up channel ---- */

#if ZL_KQ_USER_WAKE

static int
zl_kq_wake_open(zl_backend *b)
{
    struct kevent change;
    EV_SET(&change, ZL_KQ_WAKE_IDENT, EVFILT_USER, EV_ADD | EV_CLEAR, 0, 0, 0);
    return zl_kq_submit(b->kq, &change, 1);
}

static int
zl_kq_consume_wake(const zl_backend *b, const struct kevent *ev)
{
    (void)b;
    return ev->filter == EVFILT_USER;
}

static int
native_wake(zl_backend *b)
{
    struct kevent change;
    EV_SET(&change, ZL_KQ_WAKE_IDENT, EVFILT_USER, 0, NOTE_TRIGGER, 0, 0);
    return zl_kq_submit(b->kq, &change, 1);
}

#else /* a non-blocking pipe: wake() writes a byte, poll() drains it */

static int
zl_kq_set_fd_flags(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0 || fcntl(fd, F_SETFD, FD_CLOEXEC) < 0) {
        return -errno;
    }
    return 0;
}

static int
zl_kq_wake_open(zl_backend *b)
{
    if (pipe(b->wake_pipe) < 0) {
        b->wake_pipe[0] = b->wake_pipe[1] = -1;
        return -errno;
    }
    int rc = zl_kq_set_fd_flags(b->wake_pipe[0]);
    if (rc == 0) {
        rc = zl_kq_set_fd_flags(b->wake_pipe[1]);
    }
    if (rc == 0) {
        rc = zl_kq_change(b->kq, b->wake_pipe[0], ZL_EV_READ, EV_ADD);
    }
    return rc;
}

static int
zl_kq_consume_wake(const zl_backend *b, const struct kevent *ev)
{
    if (ev->filter != EVFILT_READ || ev->ident != (uintptr_t)b->wake_pipe[0]) {
        return 0;
    }
    char buf[64];
    for (;;) {
        ssize_t n = read(b->wake_pipe[0], buf, sizeof(buf));
        if (n <= 0 && !(n < 0 && errno == EINTR)) {
            return 1;                 /* drained (EAGAIN) */
        }
    }
}

static int
native_wake(zl_backend *b)
{
    return zl_wake_fd_write(b->wake_pipe[1], "", 1);
}

#endif /* ZL_KQ_USER_WAKE */

static void
zl_kq_wake_close(zl_backend *b)
{
    for (int i = 0; i < 2; i++) {
        if (b->wake_pipe[i] >= 0) {
            close(b->wake_pipe[i]);
            b->wake_pipe[i] = -1;
        }
    }
}

/* ---- create / destroy ---- */

static int
zl_kq_open(void)
{
    int kq = kqueue();
    if (kq < 0) {
        return -errno;
    }
    if (fcntl(kq, F_SETFD, FD_CLOEXEC) < 0) {
        int saved = errno;
        close(kq);
        return -saved;
    }
    return kq;
}

static void
native_destroy(zl_backend *b)
{
    if (b == NULL) {
        return;
    }
    if (b->kq >= 0) {
        close(b->kq);
    }
    zl_kq_wake_close(b);
    free(b->slots);
    free(b);
}

static zl_backend *
native_create(void)
{
    zl_backend *b = calloc(1, sizeof(*b));
    if (b == NULL) {
        return NULL;
    }
    b->wake_pipe[0] = b->wake_pipe[1] = -1;
    b->kq = zl_kq_open();
    int rc = b->kq;
    if (rc < 0) {
        goto error;
    }
    rc = zl_kq_wake_open(b);
    if (rc < 0) {
        goto error;
    }
    return b;

error:
    native_destroy(b);
    errno = -rc;
    return NULL;
}

/* ---- watch / modify / unwatch ---- */

static int
native_watch(zl_backend *b, int fd, int events)
{
    if (fd < 0) {
        return -EBADF;
    }
    int rc = zl_kq_reserve(b, fd);
    if (rc < 0) {
        return rc;
    }
    if (b->slots[fd].events != 0) {
        rc = zl_kq_still_watched(b, fd);
        if (rc != 0) {
            return rc > 0 ? -EEXIST : rc;
        }
    }
    int hung;
    rc = zl_kq_apply(b->kq, fd, 0, events, 0, &hung);
    if (rc < 0) {
        return rc;
    }
    zl_kq_slot_set(b, fd, events, hung);
    return 0;
}

static int
native_modify(zl_backend *b, int fd, int old_events, int events)
{
    (void)old_events;                 /* the table knows what the kernel holds, including a hung EVFILT_WRITE */
    if (fd < 0 || fd >= b->slots_len) {
        return -ENOENT;
    }
    int hung;
    int have = zl_kq_registered(&b->slots[fd]);
    int probe = (have & ZL_EV_READ) ? ZL_EV_READ : have;   /* 0 for a hung write-only watch: no knote to ask */
    int rc = zl_kq_apply(b->kq, fd, have, events, probe, &hung);
    if (rc < 0) {
        return rc;
    }
    zl_kq_slot_set(b, fd, events, hung);
    return 0;
}

static int
native_unwatch(zl_backend *b, int fd, int old_events)
{
    (void)old_events;
    if (fd < 0 || fd >= b->slots_len) {
        return 0;
    }
    zl_kq_remove(b->kq, fd, zl_kq_registered(&b->slots[fd]));
    zl_kq_slot_set(b, fd, 0, 0);
    return 0;
}

/* ---- poll ---- */

static const struct timespec *
zl_kq_timeout(int64_t timeout_ns, struct timespec *ts)
{
    if (timeout_ns < 0) {
        return NULL;
    }
    if (timeout_ns / 1000000000 >= ZL_KQ_MAX_TIMEOUT_SEC) {
        ts->tv_sec = ZL_KQ_MAX_TIMEOUT_SEC;   /* an early return the core treats as a timeout */
        ts->tv_nsec = 0;
    } else {
        ts->tv_sec = (time_t)(timeout_ns / 1000000000);
        ts->tv_nsec = (long)(timeout_ns % 1000000000);
    }
    return ts;
}

/* Add events for fd to this poll's fired[], merging with an entry it already has. */
static int
zl_kq_fire(zl_backend *b, int count, int fd, int events)
{
    zl_kq_slot *slot = &b->slots[fd];
    if (slot->fired_at != 0) {
        b->fired[slot->fired_at - 1].events |= events;
        return count;
    }
    if (events == 0 || count >= ZL_KQ_BATCH) {
        return count;
    }
    b->fired[count].fd = fd;
    b->fired[count].events = events;
    slot->fired_at = count + 1;
    return count + 1;
}

/* A filter's report as ZL_EV_*: EV_EOF stays with its filter (read EOF is not "cannot write"); EV_ERROR, a failed
 * knote, stands for every event the fd is watched for. */
static int
zl_kq_events_of(const zl_kq_slot *slot, const struct kevent *ev)
{
    if (ev->flags & EV_ERROR) {
        return slot->events;
    }
    if (ev->filter == EVFILT_READ) {
        return ZL_EV_READ;
    }
    if (ev->filter == EVFILT_WRITE) {
        return ZL_EV_WRITE;
    }
    return 0;
}

static int
zl_kq_fire_hung(zl_backend *b, int count)
{
    for (int fd = 0; fd < b->slots_len && count < ZL_KQ_BATCH; fd++) {
        if (b->slots[fd].hung) {
            count = zl_kq_fire(b, count, fd, b->slots[fd].events);
        }
    }
    return count;
}

static int
native_poll(zl_backend *b, int64_t timeout_ns, const zl_fired **fired)
{
    struct timespec ts;
    int reserved = b->hung_count < ZL_KQ_BATCH / 2 ? b->hung_count : ZL_KQ_BATCH / 2;
    const struct timespec *tsp = reserved ? &zl_kq_no_wait : zl_kq_timeout(timeout_ns, &ts);
    *fired = b->fired;
    int n = kevent(b->kq, NULL, 0, b->events, ZL_KQ_BATCH - reserved, tsp);
    if (n < 0) {
        return -errno;
    }
    int count = 0;
    for (int i = 0; i < n; i++) {
        const struct kevent *ev = &b->events[i];
        if (zl_kq_consume_wake(b, ev) || ev->ident >= (uintptr_t)b->slots_len) {
            continue;
        }
        int fd = (int)ev->ident;
        if (b->slots[fd].events != 0) {
            count = zl_kq_fire(b, count, fd, zl_kq_events_of(&b->slots[fd], ev));
        }
    }
    if (b->hung_count > 0) {
        count = zl_kq_fire_hung(b, count);
    }
    for (int i = 0; i < count; i++) {
        b->slots[b->fired[i].fd].fired_at = 0;
    }
    return count;
}

/* ---- fork ---- */

/* Forget watched fds the child has already closed: their numbers may be reused by the fds made below. */
static void
zl_kq_forget_closed_fds(zl_backend *b)
{
    for (int fd = 0; fd < b->slots_len; fd++) {
        if (b->slots[fd].events != 0 && !zl_kq_fd_is_open(fd)) {
            zl_kq_slot_set(b, fd, 0, 0);
        }
    }
}

static int
zl_kq_rearm_all(zl_backend *b)
{
    for (int fd = 0; fd < b->slots_len; fd++) {
        if (b->slots[fd].events == 0) {
            continue;
        }
        int hung;
        int rc = zl_kq_apply(b->kq, fd, 0, b->slots[fd].events, 0, &hung);
        if (rc == -EBADF) {
            zl_kq_slot_set(b, fd, 0, 0);
            continue;
        }
        if (rc < 0) {
            return rc;
        }
        zl_kq_slot_set(b, fd, b->slots[fd].events, hung);
    }
    return 0;
}

static int
native_reinit_after_fork(zl_backend *b)
{
    /* The parent's kqueue was not inherited: its number is closed here and may belong to another file by now, so
     * it is dropped, not closed. The wake-up pipe (if used) was inherited: the child's copies are closed. */
    zl_kq_forget_closed_fds(b);
    zl_kq_wake_close(b);
    b->kq = zl_kq_open();
    if (b->kq < 0) {
        int rc = b->kq;
        b->kq = -1;
        return rc;
    }
    int rc = zl_kq_wake_open(b);
    if (rc < 0) {
        return rc;
    }
    return zl_kq_rearm_all(b);
}

const zl_backend_ops zl_backend_native = {
    .name = "native",
    .features = ZL_BACKEND_F_NS_TIMEOUT,
    .create = native_create,
    .destroy = native_destroy,
    .watch = native_watch,
    .modify = native_modify,
    .unwatch = native_unwatch,
    .poll = native_poll,
    .wake = native_wake,
    .reinit_after_fork = native_reinit_after_fork,
};

#endif /* kqueue platforms */
