/* backends/uring/uring_accept.h — the multishot ACCEPTs of the "uring" backend: arming them (again after fork),
 * and closing at destroy the connections they accepted that the core never got (CQEs after the last poll). */
#ifndef ZL_URING_ACCEPT_H
#define ZL_URING_ACCEPT_H

#include <stdint.h>

#include <liburing.h>

typedef struct zl_uring_accept {
    uint64_t tag;
    int fd;                          /* the listening socket */
} zl_uring_accept;

typedef struct zl_uring_accepts {
    zl_uring_accept *armed;          /* one entry per armed accept (a tag twice: armed again before its end came) */
    int len, cap;
} zl_uring_accepts;

/* Queue a multishot accept of fd (new fds non-blocking, close-on-exec) tagged tag. 0 or -errno. */
int zl_uring_accept_start(zl_uring_accepts *a, struct io_uring *ring, int fd, uint64_t tag);
/* A CQE was taken: an accept's last one (no IORING_CQE_F_MORE) forgets it. */
void zl_uring_accepts_seen(zl_uring_accepts *a, const struct io_uring_cqe *cqe);
/* Before the ring goes: cancel every armed accept and close the fds of accept CQEs still in the ring. */
void zl_uring_accepts_close(zl_uring_accepts *a, struct io_uring *ring);
/* In a child after fork, on its new ring: arm every accept again (the parent's stay the parent's). 0 or -errno. */
int zl_uring_accepts_rearm(zl_uring_accepts *a, struct io_uring *ring);
void zl_uring_accepts_free(zl_uring_accepts *a);

#endif /* ZL_URING_ACCEPT_H */
