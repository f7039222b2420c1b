/* backends/wake_fd.h — the one write that wakes a backend's poll through its eventfd or self-pipe, shared by the
 * backends that wake that way (epoll, kqueue without EVFILT_USER, libevent, io_uring). No Python here. */
#ifndef ZL_WAKE_FD_H
#define ZL_WAKE_FD_H

#include <errno.h>
#include <stddef.h>
#include <unistd.h>

/* Write token (an eventfd's 8-byte count or a pipe's byte) to fd, retrying on EINTR. 0 on success and on EAGAIN
 * (the counter or pipe is full, so a wake-up is already pending), else -errno. Safe from any thread. */
static inline int
zl_wake_fd_write(int fd, const void *token, size_t size)
{
    ssize_t n;
    do {
        n = write(fd, token, size);
    } while (n < 0 && errno == EINTR);
    if (n < 0 && errno != EAGAIN) {
        return -errno;
    }
    return 0;
}

#endif
