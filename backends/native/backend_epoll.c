/* backends/native/backend_epoll.c — the "native" backend on Linux: epoll, an eventfd for wake-ups.
 * Plain C; the epoll set itself (watch semantics, wake-up, re-arming after fork) is backends/epoll_set.c. */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif
#if defined(__linux__) && !defined(ZL_KQUEUE_SHIM)

#include <errno.h>
#include <stdlib.h>

#include "../../core/backend.h"
#include "../epoll_set.h"

struct zl_backend {
    zl_epoll_set set;
};

static void
native_destroy(zl_backend *b)
{
    if (b == NULL) {
        return;
    }
    zl_epoll_set_close(&b->set);
    free(b);
}

static zl_backend *
native_create(void)
{
    zl_backend *b = calloc(1, sizeof(*b));
    if (b == NULL) {
        return NULL;
    }
    int rc = zl_epoll_set_init(&b->set);
    if (rc < 0) {
        free(b);
        errno = -rc;
        return NULL;
    }
    return b;
}

static int
native_watch(zl_backend *b, int fd, int events)
{
    return zl_epoll_set_watch(&b->set, fd, events);
}

static int
native_modify(zl_backend *b, int fd, int old_events, int events)
{
    (void)old_events;
    return zl_epoll_set_modify(&b->set, fd, events);
}

static int
native_unwatch(zl_backend *b, int fd, int old_events)
{
    (void)old_events;
    zl_epoll_set_unwatch(&b->set, fd);
    return 0;
}

static int
native_poll(zl_backend *b, int64_t timeout_ns, const zl_fired **fired)
{
    *fired = b->set.fired;
    return zl_epoll_set_wait(&b->set, timeout_ns);
}

static int
native_wake(zl_backend *b)
{
    return zl_epoll_set_wake(&b->set);
}

static int
native_reinit_after_fork(zl_backend *b)
{
    return zl_epoll_set_reinit_after_fork(&b->set);
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
