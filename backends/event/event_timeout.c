/* backends/event/event_timeout.c — the event backend's poll timeout. libevent's precise timer costs one
 * timerfd_settime per event_base_loop, zero-timeout polls included; a timerfd of our own is set only to block. */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <sys/time.h>
#include <unistd.h>

#include "event_timeout.h"

#ifdef ZL_EVENT_HAVE_TIMERFD
#include <sys/timerfd.h>

/*
 * Linux: the base is made without EVENT_BASE_FLAG_PRECISE_TIMER, so libevent keeps no timerfd and reads the cheap
 * CLOCK_MONOTONIC_COARSE, which nothing here depends on: libevent never times anything for zloop. A blocking poll
 * arms this timerfd (CLOCK_MONOTONIC, nanoseconds, relative) and event_base_loop runs with no libevent timeout,
 * so epoll_wait blocks until an fd or the timerfd is readable. The timerfd is not disarmed after a poll that an fd
 * ended first: it fires at most once more, into a later poll, which the core treats as a spurious wake-up; the
 * next blocking poll re-arms it anyway.
 */

static void
zl_event_timeout_on_fire(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    (void)arg;
    uint64_t expirations;
    ssize_t n;
    do {
        n = read(fd, &expirations, sizeof(expirations));   /* EAGAIN: already read; nothing else can fail */
    } while (n < 0 && errno == EINTR);
}

int
zl_event_timeout_base_flags(void)
{
    return 0;
}

static int
zl_event_timeout_watch_fd(zl_event_timeout *t, struct event_base *base, int fd)
{
    if (t->event == NULL) {
        t->event = event_new(base, fd, EV_READ | EV_PERSIST, zl_event_timeout_on_fire, NULL);
        if (t->event == NULL) {
            return -ENOMEM;
        }
    } else if (event_assign(t->event, base, fd, EV_READ | EV_PERSIST, zl_event_timeout_on_fire, NULL) < 0) {
        return -EINVAL;
    }
    errno = 0;
    if (event_add(t->event, NULL) < 0) {
        return errno ? -errno : -EIO;
    }
    return 0;
}

int
zl_event_timeout_init(zl_event_timeout *t, struct event_base *base)
{
    t->event = NULL;
    t->added = 0;
    t->fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (t->fd < 0) {
        return -errno;
    }
    int rc = zl_event_timeout_watch_fd(t, base, t->fd);
    if (rc < 0) {
        zl_event_timeout_free(t);
    }
    return rc;
}

int
zl_event_timeout_arm(zl_event_timeout *t, int64_t timeout_ns)
{
    struct itimerspec spec = {
        .it_interval = {0, 0},
        .it_value = {.tv_sec = (time_t)(timeout_ns / 1000000000), .tv_nsec = (long)(timeout_ns % 1000000000)},
    };
    if (timerfd_settime(t->fd, 0, &spec, NULL) < 0) {
        return -errno;
    }
    return 0;
}

void
zl_event_timeout_poll_done(zl_event_timeout *t)
{
    (void)t;
}

int
zl_event_timeout_renew_after_fork(zl_event_timeout *t, struct event_base *base)
{
    int fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (fd < 0) {
        return -errno;
    }
    event_del(t->event);   /* on the child's new epoll set, before the inherited fd goes */
    close(t->fd);
    t->fd = fd;
    return zl_event_timeout_watch_fd(t, base, fd);
}

void
zl_event_timeout_free(zl_event_timeout *t)
{
    if (t->event != NULL) {
        event_free(t->event);
        t->event = NULL;
    }
    if (t->fd >= 0) {
        close(t->fd);
        t->fd = -1;
    }
}

#else /* libevent's own timer */

/*
 * EVENT_BASE_FLAG_PRECISE_TIMER makes the base use CLOCK_MONOTONIC (not a coarse clock whose lag could end the
 * poll before its deadline) and, where libevent has it, a timerfd: microsecond resolution.
 */

static void
zl_event_timeout_on_fire(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    /* Running at all ends event_base_loop(EVLOOP_ONCE); poll reports what the fd callbacks recorded. */
}

int
zl_event_timeout_base_flags(void)
{
    return EVENT_BASE_FLAG_PRECISE_TIMER;
}

int
zl_event_timeout_init(zl_event_timeout *t, struct event_base *base)
{
    t->fd = -1;
    t->added = 0;
    t->event = evtimer_new(base, zl_event_timeout_on_fire, NULL);
    return t->event == NULL ? -ENOMEM : 0;
}

/* The clock libevent compares against truncates to whole microseconds, which can put the deadline up to 1 us
 * early; the extra microsecond keeps "never before the deadline" true. */
static struct timeval
zl_event_timeval_of_ns(int64_t timeout_ns)
{
    int64_t usec = timeout_ns / 1000 + (timeout_ns % 1000 != 0) + 1;   /* no overflow near INT64_MAX */
    struct timeval tv = {.tv_sec = (time_t)(usec / 1000000), .tv_usec = (suseconds_t)(usec % 1000000)};
    return tv;
}

int
zl_event_timeout_arm(zl_event_timeout *t, int64_t timeout_ns)
{
    struct timeval tv = zl_event_timeval_of_ns(timeout_ns);
    if (event_add(t->event, &tv) < 0) {
        return -ENOMEM;
    }
    t->added = 1;
    return 0;
}

void
zl_event_timeout_poll_done(zl_event_timeout *t)
{
    if (t->added) {
        event_del(t->event);   /* still pending if an fd or a wake ended the loop first */
        t->added = 0;
    }
}

int
zl_event_timeout_renew_after_fork(zl_event_timeout *t, struct event_base *base)
{
    (void)t;
    (void)base;
    return 0;   /* event_reinit re-made libevent's timerfd with the rest of the base */
}

void
zl_event_timeout_free(zl_event_timeout *t)
{
    if (t->event != NULL) {
        event_free(t->event);
        t->event = NULL;
    }
}

#endif
