/* backends/epoll_set.h — an epoll set of watched fds under the backend contract, with its wake-up eventfd: shared
 * by the native backend (which blocks in epoll_wait) and the uring backend (which waits for the set through its ring). */
#ifndef ZL_EPOLL_SET_H
#define ZL_EPOLL_SET_H

#include <stdint.h>
#include <sys/epoll.h>

#include "../core/backend.h"

#define ZL_EPOLL_BATCH 256

typedef struct zl_epoll_set {
    int epfd;
    int wakefd;                       /* eventfd, watched for EPOLLIN with data.fd == -1 */
    unsigned char *interest;          /* events per fd, for re-arming after fork */
    int interest_len;
    int woken;                        /* the last wait drained a wake-up */
    struct epoll_event events[ZL_EPOLL_BATCH];
    zl_fired fired[ZL_EPOLL_BATCH];
} zl_epoll_set;

/* A new epoll set with its wake-up eventfd watched. 0 or -errno (then nothing is left open). */
int zl_epoll_set_init(zl_epoll_set *set);

/* Close what init made and free the interest table. Watched fds are left open. */
void zl_epoll_set_close(zl_epoll_set *set);

/* The contract's watch, modify and unwatch (core/backend.h), as epoll_ctl gives them. */
int zl_epoll_set_watch(zl_epoll_set *set, int fd, int events);
int zl_epoll_set_modify(zl_epoll_set *set, int fd, int events);
void zl_epoll_set_unwatch(zl_epoll_set *set, int fd);

/* epoll_wait for up to timeout_ns (-1: no limit, 0: do not block, rounded up to what the kernel offers); fills
 * set->fired, drains a wake-up, and returns the count or -errno. */
int zl_epoll_set_wait(zl_epoll_set *set, int64_t timeout_ns);

/* From any thread: make the set readable (and a wait in progress return). */
int zl_epoll_set_wake(zl_epoll_set *set);

/* In a child after fork(): a new epoll set and eventfd, every watched fd still open re-added with its events. */
int zl_epoll_set_reinit_after_fork(zl_epoll_set *set);

#endif /* ZL_EPOLL_SET_H */
