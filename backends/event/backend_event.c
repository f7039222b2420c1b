/* backends/event/backend_event.c — the "event" backend: libevent 2.1 (libevent_core), one event_base per loop.
 * Plain C; owns its event_base, one persistent struct event per watched fd, a poll timer and its wake-up eventfd. */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include <event2/event.h>

#include "../../core/backend.h"
#include "../array_reserve.h"
#include "../wake_fd.h"
#include "event_timeout.h"

/* Linux wakes through one eventfd; elsewhere (or with -DZL_EVENT_WAKE_PIPE, to test that path) through a pipe. */
#if defined(__linux__) && !defined(ZL_EVENT_WAKE_PIPE)
#define ZL_EVENT_HAVE_EVENTFD 1
#include <sys/eventfd.h>
#endif

/*
 * libevent semantics this file relies on (checked against libevent 2.1.12):
 * - The base requires EV_FEATURE_O1, which on Linux means the "epoll" method without changelist
 *   (EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST is not set and IGNORE_ENV stops EVENT_EPOLL_USE_CHANGELIST from setting
 *   it). event_add/event_del then call epoll_ctl at once, so a failing watch fails in watch(), not in a later poll,
 *   and a failed event_add leaves nothing in libevent's fd map. (kqueue, the O(1) method on BSD/macOS, batches
 *   changes: there a bad fd would only show up at the next poll.)
 * - epoll reports EPOLLERR/EPOLLHUP as EV_READ|EV_WRITE, masked by each event's own interest: exactly the contract.
 * - EPOLL_CTL_DEL failing with EBADF/ENOENT/EPERM (the fd was closed first) is treated as success and only
 *   debug-logged, so unwatch/destroy of a closed fd leave no state behind in libevent.
 * - A blocking poll's timeout is event_timeout.c's business (a timerfd of its own on Linux).
 * - event_base_loop(EVLOOP_ONCE) blocks until at least one callback ran; EVLOOP_NONBLOCK makes it poll once.
 *   One epoll_wait takes 32 events at first, doubling (up to 4096) each time it fills, so a poll may report only
 *   part of the ready fds; level-triggering reports the rest next time.
 * - EINTR: epoll_dispatch turns an interrupted epoll_wait into "nothing happened" and event_base_loop then blocks
 *   again, so this backend can NOT return -EINTR. A signal ends poll only through a watched fd: the core's signal
 *   wakeup fd (Python writes to it from its C signal handler) or wake(). poll then returns the count (0 for wake).
 * - No signal event is ever added, so libevent installs no signal handler. (epoll_init still makes the evsig
 *   socketpair, two fds per base that stay idle; libevent 2.1 has no flag to skip it.)
 * - event_reinit re-creates the epoll fd, timerfd and evsig pair without touching the parent's epoll set, then
 *   re-adds every pending event; it returns -1 if any re-add failed. If it cannot make a new epoll fd it calls
 *   event_errx, which ends the process.
 */

struct zl_event_slot {
    struct event *ev;             /* made on the first watch of this fd number, reused, freed in destroy */
    int events;                   /* ZL_EV_* watched, 0 when not watched */
    unsigned fired_gen;           /* fired[fired_index] belongs to this fd when fired_gen == backend->gen */
    int fired_index;
};

struct zl_backend {
    struct event_base *base;
    struct event *wake_event;     /* persistent EV_READ on wake_rfd */
    zl_event_timeout timeout;     /* ends a blocking poll */
    int wake_rfd;
    int wake_wfd;                 /* == wake_rfd for an eventfd */
    int files_unpollable;         /* the method is epoll: regular files and directories give EPERM */
    struct zl_event_slot *slots;  /* indexed by fd */
    int slots_len;
    int watched;                  /* slots with events != 0 */
    zl_fired *fired;              /* grown only at the start of poll, so the previous result stays valid */
    int fired_cap;
    int fired_len;
    unsigned gen;                 /* poll generation, never 0 */
};

/* ---- libevent logging ---- */

/* libevent logs expected failures (EPERM for a regular file, EBADF for a closed fd) as warnings on stderr, and its
 * messages carry no information the -errno returns lack. The log callback is process-global (it also quiets any
 * other libevent user in the process), so it is set once; only EVENT_LOG_ERR, which precedes libevent ending the
 * process, still reaches stderr. */
static void
zl_event_log_quiet(int severity, const char *msg)
{
    if (severity == EVENT_LOG_ERR) {
        fprintf(stderr, "zloop: libevent: %s\n", msg);
    }
}

static void
zl_event_install_log_callback(void)
{
    event_set_log_callback(zl_event_log_quiet);
}

static pthread_once_t zl_event_log_once = PTHREAD_ONCE_INIT;

/* ---- conversions ---- */

static short
zl_event_libevent_mask(int events)
{
    short what = EV_PERSIST;
    if (events & ZL_EV_READ) {
        what |= EV_READ;
    }
    if (events & ZL_EV_WRITE) {
        what |= EV_WRITE;
    }
    return what;
}

static int
zl_event_events_of(short what)
{
    int events = 0;
    if (what & EV_READ) {
        events |= ZL_EV_READ;
    }
    if (what & EV_WRITE) {
        events |= ZL_EV_WRITE;
    }
    return events;
}

/* ---- wake-up fd ---- */

static int
zl_event_open_wake_fds(int *rfd, int *wfd)
{
#ifdef ZL_EVENT_HAVE_EVENTFD
    int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (fd < 0) {
        return -errno;
    }
    *rfd = *wfd = fd;
    return 0;
#else
    int fds[2];
    if (pipe(fds) < 0) {
        return -errno;
    }
    for (int i = 0; i < 2; i++) {
        if (fcntl(fds[i], F_SETFD, FD_CLOEXEC) < 0 || fcntl(fds[i], F_SETFL, O_NONBLOCK) < 0) {
            int rc = -errno;
            close(fds[0]);
            close(fds[1]);
            return rc;
        }
    }
    *rfd = fds[0];
    *wfd = fds[1];
    return 0;
#endif
}

static void
zl_event_close_wake_fds(int rfd, int wfd)
{
    if (rfd >= 0) {
        close(rfd);
    }
    if (wfd >= 0 && wfd != rfd) {
        close(wfd);
    }
}

static void
zl_event_on_wake(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    (void)arg;
    char buf[4096];
    /* An eventfd resets in one read. A pipe may hold up to its capacity (64 KiB by default) of one-byte wakes, all
     * written before this drain: 32 reads of 4 KiB empty it; a wake written meanwhile ends the next poll at once. */
    for (int i = 0; i < 32; i++) {
        ssize_t n = read(fd, buf, sizeof(buf));
        if (n < (ssize_t)sizeof(buf) && !(n < 0 && errno == EINTR)) {
            break;
        }
    }
}

/* Watch rfd with the backend's wake event (made on first use) and adopt the pair; on failure the caller still
 * owns rfd/wfd. */
static int
zl_event_arm_wake(zl_backend *b, int rfd, int wfd)
{
    if (b->wake_event == NULL) {
        b->wake_event = event_new(b->base, rfd, EV_READ | EV_PERSIST, zl_event_on_wake, b);
        if (b->wake_event == NULL) {
            return -ENOMEM;
        }
    } else if (event_assign(b->wake_event, b->base, rfd, EV_READ | EV_PERSIST, zl_event_on_wake, b) < 0) {
        return -EINVAL;
    }
    errno = 0;
    if (event_add(b->wake_event, NULL) < 0) {
        return errno ? -errno : -EIO;
    }
    b->wake_rfd = rfd;
    b->wake_wfd = wfd;
    return 0;
}

/* ---- readiness callbacks ---- */

static void
zl_event_on_ready(evutil_socket_t fd, short what, void *arg)
{
    zl_backend *b = arg;
    struct zl_event_slot *slot = &b->slots[fd];
    int events = zl_event_events_of(what);
    if (slot->fired_gen == b->gen) {
        b->fired[slot->fired_index].events |= events;
        return;
    }
    /* fired_cap >= watched was ensured when poll started, and each watched fd takes at most one entry. */
    slot->fired_gen = b->gen;
    slot->fired_index = b->fired_len;
    b->fired[b->fired_len].fd = (int)fd;
    b->fired[b->fired_len].events = events;
    b->fired_len++;
}

/* ---- create / destroy ---- */

static struct event_base *
zl_event_new_base(void)
{
    struct event_config *cfg = event_config_new();
    if (cfg == NULL) {
        return NULL;
    }
    struct event_base *base = NULL;
    if (event_config_set_flag(cfg, EVENT_BASE_FLAG_NOLOCK) == 0
        && event_config_set_flag(cfg, EVENT_BASE_FLAG_IGNORE_ENV) == 0
        && event_config_set_flag(cfg, zl_event_timeout_base_flags()) == 0
        && event_config_require_features(cfg, EV_FEATURE_O1) == 0) {
        base = event_base_new_with_config(cfg);
    }
    event_config_free(cfg);
    return base;
}

static void
zl_event_destroy(zl_backend *b)
{
    if (b == NULL) {
        return;
    }
    for (int fd = 0; fd < b->slots_len; fd++) {
        if (b->slots[fd].ev != NULL) {
            event_free(b->slots[fd].ev);   /* event_del first: EBADF for an fd closed meanwhile is ignored */
        }
    }
    if (b->wake_event != NULL) {
        event_free(b->wake_event);
    }
    zl_event_timeout_free(&b->timeout);
    if (b->base != NULL) {
        event_base_free(b->base);
    }
    zl_event_close_wake_fds(b->wake_rfd, b->wake_wfd);
    free(b->slots);
    free(b->fired);
    free(b);
}

static zl_backend *
zl_event_create(void)
{
    pthread_once(&zl_event_log_once, zl_event_install_log_callback);
    int rc = -ENOMEM, rfd = -1, wfd = -1;
    zl_backend *b = calloc(1, sizeof(*b));
    if (b == NULL) {
        return NULL;
    }
    b->wake_rfd = b->wake_wfd = -1;
    b->timeout.fd = -1;   /* destroy() may run before the timeout is made */
    b->gen = 1;
    errno = 0;
    b->base = zl_event_new_base();
    if (b->base == NULL) {
        rc = errno ? -errno : -ENOMEM;
        goto error;
    }
    b->files_unpollable = strcmp(event_base_get_method(b->base), "epoll") == 0;
    rc = zl_event_timeout_init(&b->timeout, b->base);
    if (rc < 0) {
        goto error;
    }
    rc = zl_event_open_wake_fds(&rfd, &wfd);
    if (rc < 0) {
        goto error;
    }
    rc = zl_event_arm_wake(b, rfd, wfd);
    if (rc < 0) {
        zl_event_close_wake_fds(rfd, wfd);
        goto error;
    }
    return b;

error:
    zl_event_destroy(b);
    errno = -rc;
    return NULL;
}

/* ---- watch / modify / unwatch ---- */

static int
zl_event_reserve_slot(zl_backend *b, int fd)
{
    if (fd < b->slots_len) {
        return 0;
    }
    if (fcntl(fd, F_GETFD) < 0) {
        return -errno;                 /* not open: refuse it before the table grows to its number */
    }
    int len = b->slots_len ? b->slots_len : 64;
    while (len <= fd) {
        if (len > INT32_MAX / 2) {
            return -ENOMEM;
        }
        len *= 2;
    }
    /* A new zeroed block, not realloc + memset: calloc's fresh pages stay untouched until used, so the slots of fd
     * numbers never watched (a table doubled past 16,384 fds holds 32,768) cost no memory. */
    struct zl_event_slot *grown = calloc((size_t)len, sizeof(*grown));
    if (grown == NULL) {
        return -ENOMEM;
    }
    if (b->slots_len > 0) {
        memcpy(grown, b->slots, (size_t)b->slots_len * sizeof(*grown));
    }
    free(b->slots);
    b->slots = grown;
    b->slots_len = len;
    return 0;
}

/* Why event_add failed: libevent only says -1, and errno is what epoll_ctl left unless logging clobbered it. */
static int
zl_event_add_error(zl_backend *b, int fd, int saved_errno)
{
    if (fcntl(fd, F_GETFD) < 0 && errno == EBADF) {
        return -EBADF;
    }
    struct stat st;
    if (b->files_unpollable && fstat(fd, &st) == 0 && (S_ISREG(st.st_mode) || S_ISDIR(st.st_mode))) {
        return -EPERM;
    }
    return saved_errno ? -saved_errno : -EIO;
}

/* Point slot->ev at fd with events and register it; on failure nothing is registered. */
static int
zl_event_add_slot(zl_backend *b, int fd, int events)
{
    struct zl_event_slot *slot = &b->slots[fd];
    short what = zl_event_libevent_mask(events);
    if (slot->ev == NULL) {
        slot->ev = event_new(b->base, fd, what, zl_event_on_ready, b);
        if (slot->ev == NULL) {
            return -ENOMEM;
        }
    } else if (event_assign(slot->ev, b->base, fd, what, zl_event_on_ready, b) < 0) {
        return -EINVAL;
    }
    errno = 0;
    if (event_add(slot->ev, NULL) < 0) {
        return zl_event_add_error(b, fd, errno);
    }
    return 0;
}

/* watch() of an fd number we still watch: either the same file (-EEXIST) or the number was closed (and maybe
 * reused) without an unwatch, and the old watch is stale. libevent hides which: epoll_apply_one_change treats a
 * failed EPOLL_CTL_DEL (ENOENT: this file was never added; EBADF: closed) as success but leaves errno as epoll_ctl
 * set it, and nothing else on event_del's path makes a system call. So errno still 0 after event_del means the
 * file was registered, and it is put back as it was. Returns 0 once the stale watch is forgotten; the caller's
 * add then reports -EBADF for a closed fd. (Were errno ever clobbered, a duplicate watch would merely be applied
 * like a modify instead of giving -EEXIST.) */
static int
zl_event_forget_if_stale(zl_backend *b, int fd)
{
    struct zl_event_slot *slot = &b->slots[fd];
    int del_errno = ENOENT;   /* not registered in libevent at all (parked after fork, failed modify): stale */
    if (event_pending(slot->ev, EV_READ | EV_WRITE, NULL)) {
        errno = 0;
        event_del(slot->ev);
        del_errno = errno;
    }
    if (del_errno == 0) {
        (void)zl_event_add_slot(b, fd, slot->events);
        return -EEXIST;
    }
    slot->events = 0;
    b->watched--;
    return 0;
}

static int
zl_event_watch(zl_backend *b, int fd, int events)
{
    if (fd < 0) {
        return -EBADF;
    }
    int rc = zl_event_reserve_slot(b, fd);
    if (rc < 0) {
        return rc;
    }
    if (b->slots[fd].events != 0) {
        rc = zl_event_forget_if_stale(b, fd);
        if (rc < 0) {
            return rc;
        }
    }
    rc = zl_event_add_slot(b, fd, events);
    if (rc < 0) {
        return rc;
    }
    b->slots[fd].events = events;
    b->watched++;
    return 0;
}

static int
zl_event_modify(zl_backend *b, int fd, int old_events, int events)
{
    (void)old_events;
    if (fd < 0 || fd >= b->slots_len || b->slots[fd].events == 0) {
        return -ENOENT;
    }
    struct zl_event_slot *slot = &b->slots[fd];
    /* A failed EPOLL_CTL_DEL leaves its errno (see zl_event_forget_if_stale): ENOENT, the watched file was closed
     * and its number names another now; EBADF, closed. That watch is dead: adding the number again would watch
     * the other file, which asyncio's EPOLL_CTL_MOD refuses with the same errno. */
    int registered = event_pending(slot->ev, EV_READ | EV_WRITE, NULL);
    errno = 0;
    event_del(slot->ev);
    if (registered && errno != 0) {
        return -errno;
    }
    int rc = zl_event_add_slot(b, fd, events);
    if (rc < 0) {
        /* Put the old interest back; if even that fails the fd is unusable (closed) and unwatch still works. */
        (void)zl_event_add_slot(b, fd, slot->events);
        return rc;
    }
    slot->events = events;
    return 0;
}

static int
zl_event_unwatch(zl_backend *b, int fd, int old_events)
{
    (void)old_events;
    if (fd < 0 || fd >= b->slots_len || b->slots[fd].events == 0) {
        return 0;
    }
    struct zl_event_slot *slot = &b->slots[fd];
    event_del(slot->ev);   /* a closed fd makes EPOLL_CTL_DEL fail with EBADF, which libevent ignores */
    slot->events = 0;
    b->watched--;
    return 0;
}

/* ---- poll / wake ---- */

static void
zl_event_next_gen(zl_backend *b)
{
    b->gen++;
    if (b->gen == 0) {
        /* Wrapped: forget every slot's old generation so none can match by accident. */
        for (int fd = 0; fd < b->slots_len; fd++) {
            b->slots[fd].fired_gen = 0;
        }
        b->gen = 1;
    }
}

static int
zl_event_poll(zl_backend *b, int64_t timeout_ns, const zl_fired **fired)
{
    int rc = zl_array_reserve((void **)&b->fired, &b->fired_cap, b->watched, sizeof(*b->fired), 64);
    if (rc < 0) {
        return rc;
    }
    *fired = b->fired;
    b->fired_len = 0;
    zl_event_next_gen(b);

    int flags = EVLOOP_ONCE;
    if (timeout_ns == 0) {
        flags |= EVLOOP_NONBLOCK;
    } else if (timeout_ns > 0) {
        rc = zl_event_timeout_arm(&b->timeout, timeout_ns);
        if (rc < 0) {
            return rc;
        }
    }
    errno = 0;
    int loop_rc = event_base_loop(b->base, flags);
    int saved_errno = errno;
    zl_event_timeout_poll_done(&b->timeout);
    if (loop_rc < 0) {
        return saved_errno ? -saved_errno : -EIO;
    }
    return b->fired_len;
}

static int
zl_event_wake(zl_backend *b)
{
#ifdef ZL_EVENT_HAVE_EVENTFD
    uint64_t one = 1;
#else
    char one = 1;
#endif
    return zl_wake_fd_write(b->wake_wfd, &one, sizeof(one));
}

/* ---- fork ---- */

/* An fd the child closed before reinit cannot be re-added; take its event out of libevent first so event_reinit's
 * result means something. EPOLL_CTL_DEL on a closed fd fails with EBADF and cannot touch the parent's epoll set.
 * The slot stays watched, as the core believes: unwatch forgets it, modify reports -EBADF. */
static void
zl_event_park_closed_fds(zl_backend *b)
{
    for (int fd = 0; fd < b->slots_len; fd++) {
        if (b->slots[fd].events != 0 && fcntl(fd, F_GETFD) < 0 && errno == EBADF) {
            event_del(b->slots[fd].ev);
        }
    }
}

/* The inherited eventfd is shared with the parent: a wake() there would end polls here and the reverse. */
static int
zl_event_renew_wake(zl_backend *b)
{
    int rfd = -1, wfd = -1;
    int rc = zl_event_open_wake_fds(&rfd, &wfd);
    if (rc < 0) {
        return rc;
    }
    event_del(b->wake_event);   /* on the child's new epoll set, before the old fd goes */
    zl_event_close_wake_fds(b->wake_rfd, b->wake_wfd);
    b->wake_rfd = b->wake_wfd = -1;
    rc = zl_event_arm_wake(b, rfd, wfd);
    if (rc < 0) {
        zl_event_close_wake_fds(rfd, wfd);
    }
    return rc;
}

static int
zl_event_reinit_after_fork(zl_backend *b)
{
    zl_event_park_closed_fds(b);
    errno = 0;
    if (event_reinit(b->base) < 0) {
        return errno ? -errno : -EIO;
    }
    int rc = zl_event_renew_wake(b);
    if (rc < 0) {
        return rc;
    }
    return zl_event_timeout_renew_after_fork(&b->timeout, b->base);
}

const zl_backend_ops zl_backend_event = {
    .name = "event",
    .features = ZL_BACKEND_F_NS_TIMEOUT,   /* a timerfd (ns) on Linux, libevent's precise timer (us) elsewhere */
    .create = zl_event_create,
    .destroy = zl_event_destroy,
    .watch = zl_event_watch,
    .modify = zl_event_modify,
    .unwatch = zl_event_unwatch,
    .poll = zl_event_poll,
    .wake = zl_event_wake,
    .reinit_after_fork = zl_event_reinit_after_fork,
};
