/* backends/epoll_set.c — an epoll set of watched fds under the backend contract, with its wake-up eventfd: shared
 * by the native backend and the uring backend. Keeps each fd's events so a fresh set can be re-armed after fork. */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif
#if defined(__linux__)

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

#include "epoll_set.h"
#include "wake_fd.h"

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
interest_reserve(zl_epoll_set *set, int fd)
{
    if (fd < set->interest_len) {
        return 0;
    }
    if (fcntl(fd, F_GETFD) < 0) {
        return -errno;                 /* not open: refuse it before the table grows to its number */
    }
    int len = set->interest_len ? set->interest_len : 64;
    while (len <= fd) {
        if (len > INT32_MAX / 2) {
            return -EBADF;
        }
        len *= 2;
    }
    unsigned char *grown = realloc(set->interest, (size_t)len);
    if (grown == NULL) {
        return -ENOMEM;
    }
    memset(grown + set->interest_len, 0, (size_t)(len - set->interest_len));
    set->interest = grown;
    set->interest_len = len;
    return 0;
}

static int
epoll_ctl_fd(int epfd, int op, int fd, int events)
{
    struct epoll_event ev = {.events = epoll_mask_of(events), .data.fd = fd};
    return epoll_ctl(epfd, op, fd, &ev) < 0 ? -errno : 0;
}

/* A new epoll fd and wake-up eventfd, the eventfd watched; 0 or -errno with nothing left open. */
static int
open_epoll_and_wakefd(int *epfd_out, int *wakefd_out)
{
    int epfd = epoll_create1(EPOLL_CLOEXEC);
    if (epfd < 0) {
        return -errno;
    }
    int wakefd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = -1};
    if (wakefd < 0 || epoll_ctl(epfd, EPOLL_CTL_ADD, wakefd, &ev) < 0) {
        int saved = errno;
        if (wakefd >= 0) {
            close(wakefd);
        }
        close(epfd);
        return -saved;
    }
    *epfd_out = epfd;
    *wakefd_out = wakefd;
    return 0;
}

int
zl_epoll_set_init(zl_epoll_set *set)
{
    set->interest = NULL;
    set->interest_len = 0;
    set->woken = 0;
    set->epfd = -1;
    set->wakefd = -1;
    return open_epoll_and_wakefd(&set->epfd, &set->wakefd);
}

void
zl_epoll_set_close(zl_epoll_set *set)
{
    if (set->epfd >= 0) {
        close(set->epfd);
        set->epfd = -1;
    }
    if (set->wakefd >= 0) {
        close(set->wakefd);
        set->wakefd = -1;
    }
    free(set->interest);
    set->interest = NULL;
    set->interest_len = 0;
}

int
zl_epoll_set_watch(zl_epoll_set *set, int fd, int events)
{
    if (fd < 0) {
        return -EBADF;
    }
    int rc = interest_reserve(set, fd);
    if (rc < 0) {
        return rc;
    }
    rc = epoll_ctl_fd(set->epfd, EPOLL_CTL_ADD, fd, events);
    if (rc == -EEXIST && set->interest[fd] == 0) {
        /* A closed fd's number was reused before we were told; the old registration is stale. */
        rc = epoll_ctl_fd(set->epfd, EPOLL_CTL_MOD, fd, events);
    }
    if (rc < 0) {
        return rc;
    }
    set->interest[fd] = (unsigned char)events;
    return 0;
}

int
zl_epoll_set_modify(zl_epoll_set *set, int fd, int events)
{
    if (fd < 0 || fd >= set->interest_len) {
        return -ENOENT;
    }
    /* -ENOENT: the watched file was closed and its number now names another, which this watch never saw (the
     * kernel dropped the old registration with its file); -EBADF: closed. The watch is dead either way. */
    int rc = epoll_ctl_fd(set->epfd, EPOLL_CTL_MOD, fd, events);
    if (rc < 0) {
        return rc;
    }
    set->interest[fd] = (unsigned char)events;
    return 0;
}

void
zl_epoll_set_unwatch(zl_epoll_set *set, int fd)
{
    if (fd < 0 || fd >= set->interest_len) {
        return;
    }
    set->interest[fd] = 0;
    /* EBADF/ENOENT mean the fd was closed first and the kernel already forgot it. */
    struct epoll_event unused = {0};
    (void)epoll_ctl(set->epfd, EPOLL_CTL_DEL, fd, &unused);
}

static void
drain_wakefd(zl_epoll_set *set)
{
    uint64_t value;
    while (read(set->wakefd, &value, sizeof(value)) < 0 && errno == EINTR) {
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
epoll_wait_ns(zl_epoll_set *set, int64_t timeout_ns)
{
#ifdef SYS_epoll_pwait2
    static _Atomic int have_pwait2 = 1;   /* shared by every loop of every interpreter */
    if (have_pwait2 && timeout_ns > 0) {
        struct timespec ts = {.tv_sec = timeout_ns / 1000000000, .tv_nsec = timeout_ns % 1000000000};
        long n = syscall(SYS_epoll_pwait2, set->epfd, set->events, ZL_EPOLL_BATCH, &ts, NULL, 0);
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
    return epoll_wait(set->epfd, set->events, ZL_EPOLL_BATCH, timeout_ms);
}

int
zl_epoll_set_wait(zl_epoll_set *set, int64_t timeout_ns)
{
    int n = epoll_wait_ns(set, timeout_ns);
    if (n < 0) {
        return -errno;
    }
    int count = 0;
    set->woken = 0;
    for (int i = 0; i < n; i++) {
        int fd = set->events[i].data.fd;
        if (fd == -1) {
            drain_wakefd(set);
            set->woken = 1;
            continue;
        }
        set->fired[count].fd = fd;
        set->fired[count].events = events_of_epoll_mask(set->events[i].events);
        count++;
    }
    return count;
}

int
zl_epoll_set_wake(zl_epoll_set *set)
{
    uint64_t one = 1;
    return zl_wake_fd_write(set->wakefd, &one, sizeof(one));
}

/* Forget watched fds the child has already closed: their numbers may be reused by the fds made below. */
static void
forget_closed_fds(zl_epoll_set *set)
{
    for (int fd = 0; fd < set->interest_len; fd++) {
        if (set->interest[fd] != 0 && fcntl(fd, F_GETFD) < 0) {
            set->interest[fd] = 0;
        }
    }
}

int
zl_epoll_set_reinit_after_fork(zl_epoll_set *set)
{
    forget_closed_fds(set);
    /* Both the epoll set and the wake-up eventfd are shared with the parent after fork: replace both, or the
     * parent's wake() ends the child's poll and the child's drain eats the parent's wake-up. */
    int epfd, wakefd;
    int rc = open_epoll_and_wakefd(&epfd, &wakefd);
    if (rc < 0) {
        return rc;
    }
    close(set->epfd);
    set->epfd = epfd;
    close(set->wakefd);
    set->wakefd = wakefd;
    for (int fd = 0; fd < set->interest_len; fd++) {
        if (set->interest[fd] == 0 || fd == set->epfd || fd == set->wakefd) {
            continue;
        }
        rc = epoll_ctl_fd(set->epfd, EPOLL_CTL_ADD, fd, set->interest[fd]);
        if (rc < 0 && rc != -EBADF && rc != -EPERM) {
            return rc;
        }
    }
    return 0;
}

#endif /* __linux__ */
