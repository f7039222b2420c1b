/* backends/event/event_timeout.h — how the event backend bounds a blocking poll: a timerfd of its own on Linux,
 * libevent's precise timer elsewhere (or with -DZL_EVENT_LIBEVENT_TIMER, to test that path). Plain C. */
#ifndef ZLOOP_EVENT_TIMEOUT_H
#define ZLOOP_EVENT_TIMEOUT_H

#include <stdint.h>

#include <event2/event.h>

#if defined(__linux__) && !defined(ZL_EVENT_LIBEVENT_TIMER)
#define ZL_EVENT_HAVE_TIMERFD 1
#endif

typedef struct zl_event_timeout {
    struct event *event;   /* timerfd: persistent EV_READ on fd; otherwise a libevent timer */
    int fd;                /* the timerfd, -1 without one */
    int added;             /* libevent timer: pending for the current poll */
} zl_event_timeout;

/* Flags the event_base must be made with for this mechanism. */
int zl_event_timeout_base_flags(void);
/* Ready t for base; on failure t holds nothing. */
int zl_event_timeout_init(zl_event_timeout *t, struct event_base *base);
/* Before event_base_loop(EVLOOP_ONCE): end that loop after timeout_ns (> 0), never before. */
int zl_event_timeout_arm(zl_event_timeout *t, int64_t timeout_ns);
/* After event_base_loop, whatever ended it. */
void zl_event_timeout_poll_done(zl_event_timeout *t);
/* After event_reinit in a forked child: stop sharing the parent's timerfd. */
int zl_event_timeout_renew_after_fork(zl_event_timeout *t, struct event_base *base);
/* Before event_base_free. */
void zl_event_timeout_free(zl_event_timeout *t);

#endif
