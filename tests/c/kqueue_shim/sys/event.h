/* tests/c/kqueue_shim/sys/event.h — the part of BSD <sys/event.h> that backends/native/backend_kqueue.c uses, so
 * the kqueue backend builds and runs its contract tests on Linux. Implemented over epoll by ../kqueue_shim.c. */
#ifndef ZL_KQUEUE_SHIM_SYS_EVENT_H
#define ZL_KQUEUE_SHIM_SYS_EVENT_H

#include <stdint.h>
#include <time.h>

/* Filters (FreeBSD's values). Only these three exist here. */
#define EVFILT_READ (-1)
#define EVFILT_WRITE (-2)
#define EVFILT_USER (-11)

/* Change flags. EV_CLEAR is accepted for EVFILT_USER only; anything else not listed gives EINVAL. */
#define EV_ADD 0x0001
#define EV_DELETE 0x0002
#define EV_CLEAR 0x0020
#define EV_RECEIPT 0x0040

/* Returned flags. */
#define EV_ERROR 0x4000
#define EV_EOF 0x8000

/* EVFILT_USER fflags. */
#define NOTE_TRIGGER 0x01000000

struct kevent {
    uintptr_t ident;
    short filter;
    unsigned short flags;
    unsigned int fflags;
    int64_t data;
    void *udata;
};

#define EV_SET(kevp, a, b, c, d, e, f)            \
    do {                                          \
        struct kevent *zl_shim_kev_ = (kevp);     \
        zl_shim_kev_->ident = (uintptr_t)(a);     \
        zl_shim_kev_->filter = (short)(b);        \
        zl_shim_kev_->flags = (unsigned short)(c); \
        zl_shim_kev_->fflags = (unsigned int)(d); \
        zl_shim_kev_->data = (int64_t)(e);        \
        zl_shim_kev_->udata = (void *)(f);        \
    } while (0)

int kqueue(void);
int kevent(int kq, const struct kevent *changelist, int nchanges, struct kevent *eventlist, int nevents,
           const struct timespec *timeout);

#endif /* ZL_KQUEUE_SHIM_SYS_EVENT_H */
