/* backends/native/backend_epoll.c — the "native" backend on Linux: epoll, an eventfd for wake-ups.
 * Plain C; keeps each fd's events so it can re-arm a fresh epoll set after fork. */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif
#if defined(__linux__) && !defined(ZL_KQUEUE_SHIM)

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "../../core/backend.h"
#include "../wake_fd.h"

#define ZL_EPOLL_BATCH 256

struct zl_backend {
    int epfd;
    int wakefd;                       /* eventfd, watched for EPOLLIN with data.fd == -1 */
    unsigned char *interest;          /* events per fd, for re-arming after fork */
    int interest_len;
    struct epoll_event events[ZL_EPOLL_BATCH];
    zl_fired fired[ZL_EPOLL_BATCH];
};

static uint32_t
epoll_mask_of(int events)
{
    uint32_t mask = 0;
    if (events & ZL_EV_READ) {
        mask |= EPOLLIN;
    }
    if (events & ZL_EV_WRITE) {
        mask |= EPOLLOUT;
    }
    return mask;
}

static int
interest_reserve(zl_backend *b, int fd)
{
    if (fd < b->interest_len) {
        return 0;
    }
    if (fcntl(fd, F_GETFD) < 0) {
        return -errno;                 /* not open: refuse it before the table grows to its number */
    }
    int len = b->interest_len ? b->interest_len : 64;
    while (len <= fd) {
        if (len > INT32_MAX / 2) {
            return -EBADF;
        }
        len *= 2;
    }
    unsigned char *grown = realloc(b->interest, (size_t)len);
    if (grown == NULL) {
        return -ENOMEM;
    }
    memset(grown + b->interest_len, 0, (size_t)(len - b->interest_len));
    b->interest = grown;
    b->interest_len = len;
    return 0;
}

static int
epoll_ctl_fd(int epfd, int op, int fd, int events)
{
    struct epoll_event ev = {.events = epoll_mask_of(events), .data.fd = fd};
    return epoll_ctl(epfd, op, fd, &ev) < 0 ? -errno : 0;
}

static int
epoll_arm_wakefd(zl_backend *b)
{
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = -1};
    return epoll_ctl(b->epfd, EPOLL_CTL_ADD, b->wakefd, &ev) < 0 ? -errno : 0;
}

static void
native_destroy(zl_backend *b)
{
    if (b == NULL) {
        return;
    }
    if (b->epfd >= 0) {
        close(b->epfd);
    }
    if (b->wakefd >= 0) {
        close(b->wakefd);
    }
    free(b->interest);
    free(b);
}

static zl_backend *
native_create(void)
{
    zl_backend *b = calloc(1, sizeof(*b));
    if (b == NULL) {
        return NULL;
    }
    b->wakefd = -1;
    b->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (b->epfd < 0) {
        goto error;
    }
    b->wakefd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (b->wakefd < 0) {
        goto error;
    }
    int rc = epoll_arm_wakefd(b);
    if (rc < 0) {
        errno = -rc;
        goto error;
    }
    return b;

error:;
    int saved = errno;
    native_destroy(b);
    errno = saved;
    return NULL;
}

static int
native_watch(zl_backend *b, int fd, int events)
{
    if (fd < 0) {
        return -EBADF;
    }
    int rc = interest_reserve(b, fd);
    if (rc < 0) {
        return rc;
    }
    rc = epoll_ctl_fd(b->epfd, EPOLL_CTL_ADD, fd, events);
    if (rc == -EEXIST && b->interest[fd] == 0) {
        /* A closed fd's number was reused before we were told; the old registration is stale. */
        rc = epoll_ctl_fd(b->epfd, EPOLL_CTL_MOD, fd, events);
    }
    if (rc < 0) {
        return rc;
    }
    b->interest[fd] = (unsigned char)events;
    return 0;
}

static int
native_modify(zl_backend *b, int fd, int old_events, int events)
{
    (void)old_events;
    if (fd < 0 || fd >= b->interest_len) {
        return -ENOENT;
    }
    /* -ENOENT: the watched file was closed and its number now names another, which this watch never saw (the
     * kernel dropped the old registration with its file); -EBADF: closed. The watch is dead either way. */
    int rc = epoll_ctl_fd(b->epfd, EPOLL_CTL_MOD, fd, events);
    if (rc < 0) {
        return rc;
    }
    b->interest[fd] = (unsigned char)events;
    return 0;
}

static int
native_unwatch(zl_backend *b, int fd, int old_events)
{
    (void)old_events;
    if (fd < 0 || fd >= b->interest_len) {
        return 0;
    }
    b->interest[fd] = 0;
    /* EBADF/ENOENT mean the fd was closed first and the kernel already forgot it. */
    struct epoll_event unused = {0};
    (void)epoll_ctl(b->epfd, EPOLL_CTL_DEL, fd, &unused);
    return 0;
}

static void
drain_wakefd(zl_backend *b)
{
    uint64_t value;
    while (read(b->wakefd, &value, sizeof(value)) < 0 && errno == EINTR) {
    }
}

static int
events_of_epoll_mask(uint32_t mask)
{
    int events = 0;
    if (mask & (EPOLLIN | EPOLLERR | EPOLLHUP | EPOLLRDHUP)) {
        events |= ZL_EV_READ;
    }
    if (mask & (EPOLLOUT | EPOLLERR | EPOLLHUP)) {
        events |= ZL_EV_WRITE;
    }
    return events;
}

static int
epoll_wait_ns(zl_backend *b, int64_t timeout_ns)
{
#ifdef SYS_epoll_pwait2
    static _Atomic int have_pwait2 = 1;   /* shared by every loop of every interpreter */
    if (have_pwait2 && timeout_ns > 0) {
        struct timespec ts = {.tv_sec = timeout_ns / 1000000000, .tv_nsec = timeout_ns % 1000000000};
        long n = syscall(SYS_epoll_pwait2, b->epfd, b->events, ZL_EPOLL_BATCH, &ts, NULL, 0);
        if (n >= 0 || errno != ENOSYS) {
            return (int)n;
        }
        have_pwait2 = 0;
    }
#endif
    int timeout_ms;
    if (timeout_ns < 0) {
        timeout_ms = -1;
    } else if (timeout_ns > (int64_t)INT32_MAX * 1000000) {
        timeout_ms = INT32_MAX;
    } else {
        timeout_ms = (int)((timeout_ns + 999999) / 1000000);   /* round up: never wake before the deadline */
    }
    return epoll_wait(b->epfd, b->events, ZL_EPOLL_BATCH, timeout_ms);
}

static int
native_poll(zl_backend *b, int64_t timeout_ns, const zl_fired **fired)
{
    *fired = b->fired;
    int n = epoll_wait_ns(b, timeout_ns);
    if (n < 0) {
        return -errno;
    }
    int count = 0;
    for (int i = 0; i < n; i++) {
        int fd = b->events[i].data.fd;
        if (fd == -1) {
            drain_wakefd(b);
            continue;
        }
        b->fired[count].fd = fd;
        b->fired[count].events = events_of_epoll_mask(b->events[i].events);
        count++;
    }
    return count;
}

static int
native_wake(zl_backend *b)
{
    uint64_t one = 1;
    return zl_wake_fd_write(b->wakefd, &one, sizeof(one));
}

/* Forget watched fds the child has already closed: their numbers may be reused by the fds made below. */
static void
forget_closed_fds(zl_backend *b)
{
    for (int fd = 0; fd < b->interest_len; fd++) {
        if (b->interest[fd] != 0 && fcntl(fd, F_GETFD) < 0) {
            b->interest[fd] = 0;
        }
    }
}

static int
native_reinit_after_fork(zl_backend *b)
{
    forget_closed_fds(b);
    /* Both the epoll set and the wake-up eventfd are shared with the parent after fork: replace both, or the
     * parent's wake() ends the child's poll and the child's drain eats the parent's wake-up. */
    int epfd = epoll_create1(EPOLL_CLOEXEC);
    if (epfd < 0) {
        return -errno;
    }
    int wakefd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (wakefd < 0) {
        int saved = errno;
        close(epfd);
        return -saved;
    }
    close(b->epfd);
    b->epfd = epfd;
    close(b->wakefd);
    b->wakefd = wakefd;
    int rc = epoll_arm_wakefd(b);
    if (rc < 0) {
        return rc;
    }
    for (int fd = 0; fd < b->interest_len; fd++) {
        if (b->interest[fd] == 0 || fd == b->epfd || fd == b->wakefd) {
            continue;
        }
        rc = epoll_ctl_fd(b->epfd, EPOLL_CTL_ADD, fd, b->interest[fd]);
        if (rc < 0 && rc != -EBADF && rc != -EPERM) {
            return rc;
        }
    }
    return 0;
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

#endif /* __linux__ */
