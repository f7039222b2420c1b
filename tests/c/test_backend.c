/* tests/c/test_backend.c — the backend contract (core/backend.h) checked on every backend in zl_backend_table.
 * Plain C, no Python: one line per check, then "N passed, N failed"; exits non-zero if any check failed. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../../core/backend.h"

#define ZL_TEST_MS 1000000LL
#define ZL_TEST_WAIT_NS (1000 * ZL_TEST_MS)  /* how long a poll may wait for something that is already ready */
#define ZL_TEST_CHECK_SECONDS 60             /* SIGALRM ends a hung check (valgrind is slow, so be generous) */
#define ZL_TEST_MAX_FDS 1024
#define ZL_TEST_MANY 200

/* ---- per-check context: the backend under test and the fds the check opened ---- */

typedef struct zl_test_ctx {
    const zl_backend_ops *ops;
    zl_backend *b;
    int fds[ZL_TEST_MAX_FDS];
    int nfds;
    char why[256];
} zl_test_ctx;

typedef int (*zl_test_check_fn)(zl_test_ctx *t);

static int zl_test_passed;
static int zl_test_failed;
static const char *volatile zl_test_current_backend = "";
static const char *volatile zl_test_current_check = "";

/* Record why the check failed; keeps the first reason. */
static void
zl_test_why(zl_test_ctx *t, const char *fmt, ...)
{
    if (t->why[0] != '\0') {
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(t->why, sizeof(t->why), fmt, ap);
    va_end(ap);
}

/* Fail the check (with a reason) unless cond holds; every check has a done: label that cleans up. */
#define ZL_TEST_REQUIRE(t, cond, ...)      \
    do {                                   \
        if (!(cond)) {                     \
            zl_test_why((t), __VA_ARGS__); \
            goto done;                     \
        }                                  \
    } while (0)

static int64_t
zl_test_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void
zl_test_sleep_ns(int64_t ns)
{
    struct timespec ts = {.tv_sec = ns / 1000000000, .tv_nsec = ns % 1000000000};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
    }
}

static int
zl_test_track(zl_test_ctx *t, int fd)
{
    for (int i = 0; i < t->nfds; i++) {
        if (t->fds[i] == fd) {
            return fd;
        }
    }
    if (fd >= 0 && t->nfds < ZL_TEST_MAX_FDS) {
        t->fds[t->nfds++] = fd;
    }
    return fd;
}

/* Close a tracked fd now (so its number can be reused) and stop tracking it. */
static void
zl_test_close(zl_test_ctx *t, int fd)
{
    for (int i = 0; i < t->nfds; i++) {
        if (t->fds[i] == fd) {
            t->fds[i] = -1;
        }
    }
    close(fd);
}

static void
zl_test_close_all(zl_test_ctx *t)
{
    for (int i = 0; i < t->nfds; i++) {
        if (t->fds[i] >= 0) {
            close(t->fds[i]);
        }
    }
    t->nfds = 0;
}

static int
zl_test_pipe(zl_test_ctx *t, int p[2])
{
    if (pipe2(p, O_CLOEXEC) < 0) {
        zl_test_why(t, "pipe2: %s", strerror(errno));
        return -1;
    }
    zl_test_track(t, p[0]);
    zl_test_track(t, p[1]);
    return 0;
}

static int
zl_test_socketpair(zl_test_ctx *t, int s[2])
{
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, s) < 0) {
        zl_test_why(t, "socketpair: %s", strerror(errno));
        return -1;
    }
    zl_test_track(t, s[0]);
    zl_test_track(t, s[1]);
    return 0;
}

static int
zl_test_put_byte(int fd)
{
    ssize_t n;
    do {
        n = write(fd, "x", 1);
    } while (n < 0 && errno == EINTR);
    return n == 1 ? 0 : -1;
}

/* Read everything a (non-blocking for this purpose) fd holds. */
static void
zl_test_drain(int fd)
{
    char buf[256];
    int flags = fcntl(fd, F_GETFL);
    fcntl(fd, F_SETFL, flags | O_NONBLOCK);
    while (read(fd, buf, sizeof(buf)) > 0) {
    }
    fcntl(fd, F_SETFL, flags);
}

/* Put the open file behind `from` at fd number `to` (closing what `to` was), the way fd reuse happens. */
static int
zl_test_move_fd(zl_test_ctx *t, int from, int to)
{
    if (from == to) {
        return 0;                      /* the new file already got that number */
    }
    if (dup3(from, to, O_CLOEXEC) < 0) {
        zl_test_why(t, "dup3: %s", strerror(errno));
        return -1;
    }
    zl_test_close(t, from);
    return 0;
}

/* ---- polling helpers ---- */

/* One poll; also checks the fired array: each fd at most once, events non-zero and only READ/WRITE bits.
 * Returns the count, or -1 with t->why set. */
static int
zl_test_poll(zl_test_ctx *t, int64_t timeout_ns, const zl_fired **fired)
{
    int n = t->ops->poll(t->b, timeout_ns, fired);
    if (n < 0) {
        zl_test_why(t, "poll(%lld) returned %d (%s)", (long long)timeout_ns, n, strerror(-n));
        return -1;
    }
    for (int i = 0; i < n; i++) {
        const zl_fired *f = &(*fired)[i];
        if (f->events == 0 || (f->events & ~(ZL_EV_READ | ZL_EV_WRITE)) != 0) {
            zl_test_why(t, "poll reported fd %d with events %#x", f->fd, (unsigned)f->events);
            return -1;
        }
        for (int j = 0; j < i; j++) {
            if ((*fired)[j].fd == f->fd) {
                zl_test_why(t, "poll reported fd %d twice", f->fd);
                return -1;
            }
        }
    }
    return n;
}

static int
zl_test_events_in(const zl_fired *fired, int n, int fd)
{
    for (int i = 0; i < n; i++) {
        if (fired[i].fd == fd) {
            return fired[i].events;
        }
    }
    return 0;
}

/* The events one poll reports for fd (0: not reported), or -1 on a poll error. */
static int
zl_test_poll_fd(zl_test_ctx *t, int64_t timeout_ns, int fd)
{
    const zl_fired *fired = NULL;
    int n = zl_test_poll(t, timeout_ns, &fired);
    return n < 0 ? -1 : zl_test_events_in(fired, n, fd);
}

static int
zl_test_flags_of(int fd)
{
    return fcntl(fd, F_GETFL);
}

/* Open fds of this process (from /proc/self/fd), or -1. */
static int
zl_test_count_open_fds(void)
{
    DIR *dir = opendir("/proc/self/fd");
    if (dir == NULL) {
        return -1;
    }
    int count = 0;
    for (struct dirent *e = readdir(dir); e != NULL; e = readdir(dir)) {
        if (e->d_name[0] != '.') {
            count++;
        }
    }
    closedir(dir);
    return count - 1;                  /* the directory's own fd */
}

/* ---- the checks: each returns 1 on success, 0 with t->why set ---- */

static int
zl_test_check_readable(zl_test_ctx *t)
{
    int ok = 0, p[2], ev;
    ZL_TEST_REQUIRE(t, zl_test_pipe(t, p) == 0, "pipe");
    int rc = t->ops->watch(t->b, p[0], ZL_EV_READ);
    ZL_TEST_REQUIRE(t, rc == 0, "watch returned %d", rc);
    ev = zl_test_poll_fd(t, 0, p[0]);
    ZL_TEST_REQUIRE(t, ev >= 0 && !(ev & ZL_EV_READ), "empty pipe reported readable (%d)", ev);
    ZL_TEST_REQUIRE(t, zl_test_put_byte(p[1]) == 0, "write");
    ev = zl_test_poll_fd(t, ZL_TEST_WAIT_NS, p[0]);
    ZL_TEST_REQUIRE(t, ev > 0 && (ev & ZL_EV_READ), "readable pipe reported as %d", ev);
    ok = 1;
done:
    return ok;
}

static int
zl_test_check_level_triggered(zl_test_ctx *t)
{
    int ok = 0, p[2], ev;
    ZL_TEST_REQUIRE(t, zl_test_pipe(t, p) == 0, "pipe");
    ZL_TEST_REQUIRE(t, t->ops->watch(t->b, p[0], ZL_EV_READ) == 0, "watch failed");
    ZL_TEST_REQUIRE(t, zl_test_put_byte(p[1]) == 0, "write");
    for (int i = 0; i < 3; i++) {
        ev = zl_test_poll_fd(t, ZL_TEST_WAIT_NS, p[0]);
        ZL_TEST_REQUIRE(t, ev > 0 && (ev & ZL_EV_READ), "poll #%d without draining reported %d", i + 1, ev);
    }
    zl_test_drain(p[0]);
    ev = zl_test_poll_fd(t, 0, p[0]);
    ZL_TEST_REQUIRE(t, ev == 0, "drained pipe still reported (%d)", ev);
    ok = 1;
done:
    return ok;
}

static int
zl_test_check_writable(zl_test_ctx *t)
{
    int ok = 0, s[2];
    ZL_TEST_REQUIRE(t, zl_test_socketpair(t, s) == 0, "socketpair");
    ZL_TEST_REQUIRE(t, t->ops->watch(t->b, s[0], ZL_EV_WRITE) == 0, "watch failed");
    int ev = zl_test_poll_fd(t, ZL_TEST_WAIT_NS, s[0]);
    ZL_TEST_REQUIRE(t, ev > 0 && (ev & ZL_EV_WRITE), "writable socket reported as %d", ev);
    ok = 1;
done:
    return ok;
}

static int
zl_test_check_modify(zl_test_ctx *t)
{
    int ok = 0, s[2], ev, rc;
    const int rw = ZL_EV_READ | ZL_EV_WRITE;
    ZL_TEST_REQUIRE(t, zl_test_socketpair(t, s) == 0, "socketpair");
    ZL_TEST_REQUIRE(t, t->ops->watch(t->b, s[0], ZL_EV_READ) == 0, "watch failed");
    ev = zl_test_poll_fd(t, 0, s[0]);
    ZL_TEST_REQUIRE(t, ev >= 0 && !(ev & ZL_EV_READ), "idle socket reported readable (%d)", ev);
    rc = t->ops->modify(t->b, s[0], ZL_EV_READ, ZL_EV_WRITE);
    ZL_TEST_REQUIRE(t, rc == 0, "modify READ->WRITE returned %d", rc);
    ev = zl_test_poll_fd(t, ZL_TEST_WAIT_NS, s[0]);
    ZL_TEST_REQUIRE(t, ev > 0 && (ev & ZL_EV_WRITE), "after READ->WRITE reported %d", ev);
    ZL_TEST_REQUIRE(t, zl_test_put_byte(s[1]) == 0, "write");
    rc = t->ops->modify(t->b, s[0], ZL_EV_WRITE, rw);
    ZL_TEST_REQUIRE(t, rc == 0, "modify WRITE->READ|WRITE returned %d", rc);
    ev = zl_test_poll_fd(t, ZL_TEST_WAIT_NS, s[0]);
    ZL_TEST_REQUIRE(t, ev == rw, "after WRITE->READ|WRITE reported %d, want 3 in one entry", ev);
    rc = t->ops->modify(t->b, s[0], rw, ZL_EV_READ);
    ZL_TEST_REQUIRE(t, rc == 0, "modify READ|WRITE->READ returned %d", rc);
    ev = zl_test_poll_fd(t, ZL_TEST_WAIT_NS, s[0]);
    ZL_TEST_REQUIRE(t, ev > 0 && (ev & ZL_EV_READ), "after READ|WRITE->READ reported %d", ev);
    zl_test_drain(s[0]);
    ev = zl_test_poll_fd(t, 0, s[0]);
    ZL_TEST_REQUIRE(t, ev >= 0 && !(ev & ZL_EV_READ), "drained socket still reported readable (%d)", ev);
    ok = 1;
done:
    return ok;
}

static int
zl_test_check_unwatch_stops(zl_test_ctx *t)
{
    int ok = 0, p[2], ev;
    ZL_TEST_REQUIRE(t, zl_test_pipe(t, p) == 0, "pipe");
    ZL_TEST_REQUIRE(t, t->ops->watch(t->b, p[0], ZL_EV_READ) == 0, "watch failed");
    ZL_TEST_REQUIRE(t, zl_test_put_byte(p[1]) == 0, "write");
    ev = zl_test_poll_fd(t, ZL_TEST_WAIT_NS, p[0]);
    ZL_TEST_REQUIRE(t, ev > 0, "readable pipe not reported (%d)", ev);
    int rc = t->ops->unwatch(t->b, p[0], ZL_EV_READ);
    ZL_TEST_REQUIRE(t, rc == 0, "unwatch returned %d", rc);
    ev = zl_test_poll_fd(t, 0, p[0]);
    ZL_TEST_REQUIRE(t, ev == 0, "unwatched fd reported by poll(0) (%d)", ev);
    ev = zl_test_poll_fd(t, 20 * ZL_TEST_MS, p[0]);
    ZL_TEST_REQUIRE(t, ev == 0, "unwatched fd reported by poll(20ms) (%d)", ev);
    ok = 1;
done:
    return ok;
}

static int
zl_test_check_unwatch_closed(zl_test_ctx *t)
{
    int ok = 0, p[2], ev;
    ZL_TEST_REQUIRE(t, zl_test_pipe(t, p) == 0, "pipe");
    ZL_TEST_REQUIRE(t, t->ops->watch(t->b, p[0], ZL_EV_READ) == 0, "watch failed");
    ZL_TEST_REQUIRE(t, zl_test_poll_fd(t, 0, p[0]) >= 0, "poll failed");
    int fd = p[0];
    zl_test_close(t, fd);
    int rc = t->ops->unwatch(t->b, fd, ZL_EV_READ);
    ZL_TEST_REQUIRE(t, rc == 0, "unwatch of a closed fd returned %d", rc);
    ev = zl_test_poll_fd(t, 0, fd);
    ZL_TEST_REQUIRE(t, ev == 0, "poll after unwatch reported the closed fd (%d)", ev);
    ok = 1;
done:
    return ok;
}

/* The fd goes away before the backend ever applied the watch (libuv would abort() in epoll_ctl). */
static int
zl_test_check_closed_before_poll(zl_test_ctx *t)
{
    int ok = 0, p[2], f[2], rc;
    ZL_TEST_REQUIRE(t, zl_test_pipe(t, p) == 0 && zl_test_pipe(t, f) == 0, "pipe");
    ZL_TEST_REQUIRE(t, t->ops->watch(t->b, p[0], ZL_EV_READ) == 0, "watch failed");
    int fd = p[0];
    zl_test_close(t, fd);
    ZL_TEST_REQUIRE(t, zl_test_poll_fd(t, 0, -1) >= 0, "poll(0) after closing a just-watched fd failed");
    ZL_TEST_REQUIRE(t, zl_test_poll_fd(t, 2 * ZL_TEST_MS, -1) >= 0, "poll(2ms) after closing a just-watched fd failed");
    rc = t->ops->unwatch(t->b, fd, ZL_EV_READ);
    ZL_TEST_REQUIRE(t, rc == 0, "unwatch returned %d", rc);
    /* Same with the number reused by a regular file, then a modify (libuv would MOD a file epoll refuses). */
    char path[] = "/tmp/zl_test_backend_XXXXXX";
    int file = mkostemp(path, O_CLOEXEC);
    ZL_TEST_REQUIRE(t, file >= 0, "mkostemp: %s", strerror(errno));
    unlink(path);
    zl_test_track(t, file);
    ZL_TEST_REQUIRE(t, t->ops->watch(t->b, f[0], ZL_EV_READ) == 0, "watch failed");
    ZL_TEST_REQUIRE(t, zl_test_poll_fd(t, 0, -1) >= 0, "poll failed");
    ZL_TEST_REQUIRE(t, zl_test_move_fd(t, file, f[0]) == 0, "dup3");
    (void)t->ops->modify(t->b, f[0], ZL_EV_READ, ZL_EV_READ | ZL_EV_WRITE);   /* may fail: the file is not pollable */
    ZL_TEST_REQUIRE(t, zl_test_poll_fd(t, 0, -1) >= 0, "poll after the fd became a regular file failed");
    rc = t->ops->unwatch(t->b, f[0], ZL_EV_READ | ZL_EV_WRITE);
    ZL_TEST_REQUIRE(t, rc == 0, "unwatch returned %d", rc);
    ok = 1;
done:
    return ok;
}

/* A regular file: epoll refuses it with -EPERM (as asyncio's EpollSelector does); kqueue accepts it (as asyncio's
 * KqueueSelector does) and reports it readable while the offset is before the end. Either way nothing stays behind. */
static int
zl_test_check_regular_file(zl_test_ctx *t)
{
    int ok = 0, p[2], ev, rc;
    char path[] = "/tmp/zl_test_backend_XXXXXX";
    int file = zl_test_track(t, mkostemp(path, O_CLOEXEC));
    ZL_TEST_REQUIRE(t, file >= 0, "mkostemp: %s", strerror(errno));
    unlink(path);
    rc = t->ops->watch(t->b, file, ZL_EV_READ);
    ZL_TEST_REQUIRE(t, rc == -EPERM || rc == 0, "watch of a regular file returned %d, want %d (-EPERM) or 0", rc,
                    -EPERM);
    if (rc == -EPERM) {
        ev = zl_test_poll_fd(t, 0, file);
        ZL_TEST_REQUIRE(t, ev == 0, "the refused file was reported (%d)", ev);
    } else {
        ZL_TEST_REQUIRE(t, zl_test_put_byte(file) == 0 && lseek(file, 0, SEEK_SET) == 0, "write/lseek");
        ev = zl_test_poll_fd(t, ZL_TEST_WAIT_NS, file);
        ZL_TEST_REQUIRE(t, ev > 0 && (ev & ZL_EV_READ), "accepted file with unread data reported %d", ev);
        rc = t->ops->unwatch(t->b, file, ZL_EV_READ);
        ZL_TEST_REQUIRE(t, rc == 0, "unwatch of the accepted file returned %d", rc);
    }
    /* Nothing may be left behind: a pipe at the same number is watched normally. */
    ZL_TEST_REQUIRE(t, zl_test_pipe(t, p) == 0, "pipe");
    ZL_TEST_REQUIRE(t, zl_test_move_fd(t, p[0], file) == 0, "dup3");
    rc = t->ops->watch(t->b, file, ZL_EV_READ);
    ZL_TEST_REQUIRE(t, rc == 0, "watch of a pipe at the regular file's number returned %d", rc);
    ZL_TEST_REQUIRE(t, zl_test_put_byte(p[1]) == 0, "write");
    ev = zl_test_poll_fd(t, ZL_TEST_WAIT_NS, file);
    ZL_TEST_REQUIRE(t, ev > 0 && (ev & ZL_EV_READ), "pipe at the regular file's number reported %d", ev);
    ok = 1;
done:
    return ok;
}

static int
zl_test_check_closed_fd(zl_test_ctx *t)
{
    int ok = 0, p[2], rc;
    ZL_TEST_REQUIRE(t, zl_test_pipe(t, p) == 0, "pipe");
    int fd = p[0];
    zl_test_close(t, fd);
    rc = t->ops->watch(t->b, fd, ZL_EV_READ);
    ZL_TEST_REQUIRE(t, rc == -EBADF, "watch of closed fd %d returned %d, want %d (-EBADF)", fd, rc, -EBADF);
    rc = t->ops->watch(t->b, -1, ZL_EV_READ);
    ZL_TEST_REQUIRE(t, rc == -EBADF, "watch of fd -1 returned %d, want %d (-EBADF)", rc, -EBADF);
    ZL_TEST_REQUIRE(t, zl_test_poll_fd(t, 0, -1) >= 0, "poll after the refused watches failed");
    ok = 1;
done:
    return ok;
}

/* What an unwatch leaves (the uv backend keeps the stopped handle for the next watch) serves the next watches as a
 * fresh start would: a closed fd and a regular file refused, then another fd watched with its flags left alone, and
 * the fd first watched never reported again. */
static int
zl_test_check_watch_after_unwatch(zl_test_ctx *t)
{
    int ok = 0, first[2], closed[2], next[2], rc, ev;
    char path[] = "/tmp/zl_test_backend_XXXXXX";
    int file = zl_test_track(t, mkostemp(path, O_CLOEXEC));
    ZL_TEST_REQUIRE(t, file >= 0, "mkostemp: %s", strerror(errno));
    unlink(path);
    ZL_TEST_REQUIRE(t, zl_test_pipe(t, first) == 0 && zl_test_pipe(t, closed) == 0, "pipe");
    ZL_TEST_REQUIRE(t, t->ops->watch(t->b, first[0], ZL_EV_READ) == 0, "watch failed");
    ZL_TEST_REQUIRE(t, zl_test_poll_fd(t, 0, first[0]) >= 0, "poll failed");
    ZL_TEST_REQUIRE(t, t->ops->unwatch(t->b, first[0], ZL_EV_READ) == 0, "unwatch failed");
    zl_test_close(t, closed[0]);
    rc = t->ops->watch(t->b, closed[0], ZL_EV_READ);
    ZL_TEST_REQUIRE(t, rc == -EBADF, "watch of closed fd %d returned %d, want %d (-EBADF)", closed[0], rc, -EBADF);
    rc = t->ops->watch(t->b, file, ZL_EV_READ);
    ZL_TEST_REQUIRE(t, rc == -EPERM || rc == 0, "watch of a regular file returned %d", rc);
    ZL_TEST_REQUIRE(t, rc == -EPERM || t->ops->unwatch(t->b, file, ZL_EV_READ) == 0, "unwatch of the file failed");
    ZL_TEST_REQUIRE(t, zl_test_poll_fd(t, 0, -1) >= 0, "poll after the refused watches failed");
    ZL_TEST_REQUIRE(t, zl_test_pipe(t, next) == 0, "pipe");
    int flags = zl_test_flags_of(next[0]);
    ZL_TEST_REQUIRE(t, t->ops->watch(t->b, next[0], ZL_EV_READ) == 0, "watch of another pipe failed");
    ZL_TEST_REQUIRE(t, zl_test_put_byte(first[1]) == 0 && zl_test_put_byte(next[1]) == 0, "write");
    const zl_fired *fired = NULL;
    int n = zl_test_poll(t, ZL_TEST_WAIT_NS, &fired);
    ZL_TEST_REQUIRE(t, n >= 0, "poll failed");
    ev = zl_test_events_in(fired, n, next[0]);
    ZL_TEST_REQUIRE(t, ev > 0 && (ev & ZL_EV_READ), "the pipe watched last was reported %d", ev);
    ZL_TEST_REQUIRE(t, zl_test_events_in(fired, n, first[0]) == 0, "the unwatched pipe was reported");
    ZL_TEST_REQUIRE(t, zl_test_flags_of(next[0]) == flags, "watch changed the fd's flags");
    ok = 1;
done:
    return ok;
}

static int
zl_test_check_watch_twice(zl_test_ctx *t)
{
    int ok = 0, p[2], rc, ev;
    ZL_TEST_REQUIRE(t, zl_test_pipe(t, p) == 0, "pipe");
    ZL_TEST_REQUIRE(t, t->ops->watch(t->b, p[0], ZL_EV_READ) == 0, "watch failed");
    rc = t->ops->watch(t->b, p[0], ZL_EV_READ);
    ZL_TEST_REQUIRE(t, rc == -EEXIST, "second watch before any poll returned %d, want %d (-EEXIST)", rc, -EEXIST);
    ZL_TEST_REQUIRE(t, zl_test_poll_fd(t, 0, p[0]) >= 0, "poll failed");
    rc = t->ops->watch(t->b, p[0], ZL_EV_WRITE);
    ZL_TEST_REQUIRE(t, rc == -EEXIST, "second watch after a poll returned %d, want %d (-EEXIST)", rc, -EEXIST);
    ZL_TEST_REQUIRE(t, zl_test_put_byte(p[1]) == 0, "write");
    ev = zl_test_poll_fd(t, ZL_TEST_WAIT_NS, p[0]);
    ZL_TEST_REQUIRE(t, ev > 0 && (ev & ZL_EV_READ), "the first watch no longer works (%d)", ev);
    ok = 1;
done:
    return ok;
}

static int
zl_test_check_poll_zero(zl_test_ctx *t)
{
    int ok = 0, p[2];
    int64_t worst = 0;
    ZL_TEST_REQUIRE(t, zl_test_pipe(t, p) == 0, "pipe");
    for (int i = 0; i < 20; i++) {
        if (i == 10) {
            ZL_TEST_REQUIRE(t, t->ops->watch(t->b, p[0], ZL_EV_READ) == 0, "watch failed");
        }
        const zl_fired *fired;
        int64_t start = zl_test_now_ns();
        int n = zl_test_poll(t, 0, &fired);
        int64_t took = zl_test_now_ns() - start;
        worst = took > worst ? took : worst;
        ZL_TEST_REQUIRE(t, n == 0, "poll(0) with nothing ready returned %d", n);
    }
    ZL_TEST_REQUIRE(t, worst < 100 * ZL_TEST_MS, "poll(0) took %.1f ms", worst / 1e6);
    ok = 1;
done:
    return ok;
}

/* Timed polls with nothing ready: each returns 0, never before `ns`, and within `ns` + 1 s. */
static int
zl_test_timed_polls(zl_test_ctx *t, int64_t ns, int rounds, const char *when)
{
    int64_t least = INT64_MAX, most = 0;
    for (int i = 0; i < rounds; i++) {
        const zl_fired *fired;
        int64_t start = zl_test_now_ns();
        int n = zl_test_poll(t, ns, &fired);
        int64_t took = zl_test_now_ns() - start;
        if (n != 0) {
            zl_test_why(t, "poll(%.3f ms) %s returned %d", ns / 1e6, when, n);
            return 0;
        }
        least = took < least ? took : least;
        most = took > most ? took : most;
    }
    if (least < ns || most > ns + 1000 * ZL_TEST_MS) {
        zl_test_why(t, "poll(%.3f ms) %s took %.3f..%.3f ms", ns / 1e6, when, least / 1e6, most / 1e6);
        return 0;
    }
    return 1;
}

static int
zl_test_check_timeout(zl_test_ctx *t)
{
    int ok = 0, p[2], q[2];
    ZL_TEST_REQUIRE(t, zl_test_pipe(t, p) == 0 && zl_test_pipe(t, q) == 0, "pipe");
    ZL_TEST_REQUIRE(t, zl_test_timed_polls(t, 1500000, 20, "with nothing watched"), "timed polls");
    ZL_TEST_REQUIRE(t, t->ops->watch(t->b, p[0], ZL_EV_READ) == 0, "watch failed");
    ZL_TEST_REQUIRE(t, zl_test_timed_polls(t, 1500000, 10, "with one idle fd watched"), "timed polls");
    /* A handle being closed must not end the wait early. */
    ZL_TEST_REQUIRE(t, t->ops->watch(t->b, q[0], ZL_EV_READ) == 0, "watch failed");
    ZL_TEST_REQUIRE(t, zl_test_poll_fd(t, 0, -1) >= 0, "poll failed");
    ZL_TEST_REQUIRE(t, t->ops->unwatch(t->b, q[0], ZL_EV_READ) == 0, "unwatch failed");
    ZL_TEST_REQUIRE(t, zl_test_timed_polls(t, 1500000, 1, "right after an unwatch"), "timed polls");
    ZL_TEST_REQUIRE(t, zl_test_timed_polls(t, 1, 3, "of 1 ns"), "timed polls");
    ZL_TEST_REQUIRE(t, zl_test_timed_polls(t, 10 * ZL_TEST_MS, 2, "of 10 ms"), "timed polls");
    ok = 1;
done:
    return ok;
}

typedef struct zl_test_waker {
    const zl_backend_ops *ops;
    zl_backend *b;
    int64_t delay_ns;
    int rc;
} zl_test_waker;

static void *
zl_test_waker_main(void *arg)
{
    zl_test_waker *w = arg;
    zl_test_sleep_ns(w->delay_ns);
    w->rc = w->ops->wake(w->b);
    return NULL;
}

static int
zl_test_check_wake_thread(zl_test_ctx *t)
{
    int ok = 0, p[2], joined = 1, n;
    pthread_t thread;
    const zl_fired *fired;
    zl_test_waker waker = {.ops = t->ops, .b = t->b, .delay_ns = 50 * ZL_TEST_MS, .rc = 0};
    ZL_TEST_REQUIRE(t, zl_test_pipe(t, p) == 0, "pipe");
    /* An unwatch just before (a handle still closing) must not end poll(-1) by itself. */
    ZL_TEST_REQUIRE(t, t->ops->watch(t->b, p[0], ZL_EV_READ) == 0, "watch failed");
    ZL_TEST_REQUIRE(t, zl_test_poll_fd(t, 0, -1) >= 0, "poll failed");
    ZL_TEST_REQUIRE(t, t->ops->unwatch(t->b, p[0], ZL_EV_READ) == 0, "unwatch failed");
    ZL_TEST_REQUIRE(t, pthread_create(&thread, NULL, zl_test_waker_main, &waker) == 0, "pthread_create");
    joined = 0;
    int64_t start = zl_test_now_ns();
    n = zl_test_poll(t, -1, &fired);
    int64_t took = zl_test_now_ns() - start;
    pthread_join(thread, NULL);
    joined = 1;
    ZL_TEST_REQUIRE(t, waker.rc == 0, "wake returned %d", waker.rc);
    ZL_TEST_REQUIRE(t, n == 0, "woken poll(-1) returned %d", n);
    ZL_TEST_REQUIRE(t, took >= 40 * ZL_TEST_MS, "poll(-1) returned after %.1f ms, before the wake at 50 ms",
                    took / 1e6);
    ZL_TEST_REQUIRE(t, took < 2000 * ZL_TEST_MS, "poll(-1) took %.1f ms after a wake at 50 ms", took / 1e6);
    /* A wake before the poll ends the next poll. */
    ZL_TEST_REQUIRE(t, t->ops->wake(t->b) == 0, "wake failed");
    start = zl_test_now_ns();
    n = zl_test_poll(t, -1, &fired);
    took = zl_test_now_ns() - start;
    ZL_TEST_REQUIRE(t, n == 0 && took < 1000 * ZL_TEST_MS, "poll(-1) after an earlier wake: %d after %.1f ms", n,
                    took / 1e6);
    ok = 1;
done:
    if (!joined) {
        pthread_join(thread, NULL);
    }
    return ok;
}

static int
zl_test_check_wake_repeated(zl_test_ctx *t)
{
    int ok = 0, n;
    const zl_fired *fired;
    int64_t start = zl_test_now_ns();
    for (int i = 0; i < 10000; i++) {
        int rc = t->ops->wake(t->b);
        ZL_TEST_REQUIRE(t, rc == 0, "wake #%d returned %d", i, rc);
    }
    int64_t took = zl_test_now_ns() - start;
    ZL_TEST_REQUIRE(t, took < 2000 * ZL_TEST_MS, "10000 wakes took %.1f ms", took / 1e6);
    start = zl_test_now_ns();
    n = zl_test_poll(t, -1, &fired);
    took = zl_test_now_ns() - start;
    ZL_TEST_REQUIRE(t, n == 0 && took < 1000 * ZL_TEST_MS, "poll(-1) after 10000 wakes: %d after %.1f ms", n,
                    took / 1e6);
    /* The wakes coalesced: the next timed poll waits its full time. */
    ZL_TEST_REQUIRE(t, zl_test_timed_polls(t, 5 * ZL_TEST_MS, 2, "after 10000 wakes and one poll"), "timed polls");
    ok = 1;
done:
    return ok;
}

/* Closed while watched (no unwatch), number reused by a new pipe, watched again: the stale watch must not block it. */
static int
zl_test_check_reuse_without_unwatch(zl_test_ctx *t)
{
    int ok = 0, a[2], b[2], ev, rc;
    ZL_TEST_REQUIRE(t, zl_test_pipe(t, a) == 0, "pipe");
    ZL_TEST_REQUIRE(t, t->ops->watch(t->b, a[0], ZL_EV_READ) == 0, "watch failed");
    ZL_TEST_REQUIRE(t, zl_test_poll_fd(t, 0, a[0]) >= 0, "poll failed");
    ZL_TEST_REQUIRE(t, zl_test_pipe(t, b) == 0, "pipe");
    /* Closes the watched read end and puts the new pipe's read end at its number. */
    ZL_TEST_REQUIRE(t, zl_test_move_fd(t, b[0], a[0]) == 0, "dup3");
    rc = t->ops->watch(t->b, a[0], ZL_EV_READ);
    ZL_TEST_REQUIRE(t, rc == 0, "watch of the reused fd number returned %d", rc);
    ZL_TEST_REQUIRE(t, zl_test_put_byte(b[1]) == 0, "write");
    ev = zl_test_poll_fd(t, ZL_TEST_WAIT_NS, a[0]);
    ZL_TEST_REQUIRE(t, ev > 0 && (ev & ZL_EV_READ), "the new pipe was reported as %d", ev);
    ok = 1;
done:
    return ok;
}

/* unwatch then watch the same number at once (libuv: before the old handle's close callback ran). */
static int
zl_test_check_rewatch_after_unwatch(zl_test_ctx *t)
{
    int ok = 0, a[2], b[2], ev, rc;
    ZL_TEST_REQUIRE(t, zl_test_pipe(t, a) == 0, "pipe");
    ZL_TEST_REQUIRE(t, t->ops->watch(t->b, a[0], ZL_EV_READ) == 0, "watch failed");
    ZL_TEST_REQUIRE(t, zl_test_poll_fd(t, 0, a[0]) >= 0, "poll failed");
    ZL_TEST_REQUIRE(t, t->ops->unwatch(t->b, a[0], ZL_EV_READ) == 0, "unwatch failed");
    rc = t->ops->watch(t->b, a[0], ZL_EV_READ);
    ZL_TEST_REQUIRE(t, rc == 0, "re-watch of the same open fd returned %d", rc);
    ZL_TEST_REQUIRE(t, zl_test_put_byte(a[1]) == 0, "write");
    ev = zl_test_poll_fd(t, ZL_TEST_WAIT_NS, a[0]);
    ZL_TEST_REQUIRE(t, ev > 0 && (ev & ZL_EV_READ), "re-watched fd reported %d", ev);
    /* Closed, unwatched, number reused, watched: the usual order when the core sees the close late. */
    int fd = a[0];
    zl_test_close(t, fd);
    ZL_TEST_REQUIRE(t, t->ops->unwatch(t->b, fd, ZL_EV_READ) == 0, "unwatch of the closed fd failed");
    ZL_TEST_REQUIRE(t, zl_test_pipe(t, b) == 0, "pipe");
    ZL_TEST_REQUIRE(t, zl_test_move_fd(t, b[0], fd) == 0, "dup3");
    zl_test_track(t, fd);
    rc = t->ops->watch(t->b, fd, ZL_EV_READ);
    ZL_TEST_REQUIRE(t, rc == 0, "watch of the reused number returned %d", rc);
    ZL_TEST_REQUIRE(t, zl_test_put_byte(b[1]) == 0, "write");
    ev = zl_test_poll_fd(t, ZL_TEST_WAIT_NS, fd);
    ZL_TEST_REQUIRE(t, ev > 0 && (ev & ZL_EV_READ), "the new pipe was reported as %d", ev);
    ok = 1;
done:
    return ok;
}

/* A watch follows the open file, not its number (as an epoll registration does): closed without an unwatch and the
 * number reused, it never reports the new file, and modify() fails with -ENOENT (-EBADF while the number is free)
 * instead of watching it. Unwatched, the number can then be watched afresh. Both before and after the backend
 * applied the watch (libuv registers at its next run). */
static int
zl_test_check_dead_watch_after_reuse(zl_test_ctx *t)
{
    int ok = 0, s[2], r[2], ev, rc;
    for (int polled = 0; polled < 2; polled++) {
        ZL_TEST_REQUIRE(t, zl_test_socketpair(t, s) == 0 && zl_test_socketpair(t, r) == 0, "socketpair");
        ZL_TEST_REQUIRE(t, t->ops->watch(t->b, s[0], ZL_EV_READ) == 0, "watch failed");
        if (polled) {
            ZL_TEST_REQUIRE(t, zl_test_poll_fd(t, 0, s[0]) >= 0, "poll failed");
        }
        ZL_TEST_REQUIRE(t, zl_test_move_fd(t, r[0], s[0]) == 0, "dup3");
        ZL_TEST_REQUIRE(t, zl_test_put_byte(r[1]) == 0, "write");
        ev = zl_test_poll_fd(t, 20 * ZL_TEST_MS, s[0]);
        ZL_TEST_REQUIRE(t, ev == 0, "the file that reused the number was reported as %d (polled %d)", ev, polled);
        rc = t->ops->modify(t->b, s[0], ZL_EV_READ, ZL_EV_READ | ZL_EV_WRITE);
        ZL_TEST_REQUIRE(t, rc == -ENOENT, "modify of the reused number returned %d (polled %d)", rc, polled);
        ev = zl_test_poll_fd(t, 20 * ZL_TEST_MS, s[0]);
        ZL_TEST_REQUIRE(t, ev == 0, "after the failed modify the new file was reported as %d", ev);
        ZL_TEST_REQUIRE(t, t->ops->unwatch(t->b, s[0], ZL_EV_READ) == 0, "unwatch failed");
        ZL_TEST_REQUIRE(t, t->ops->watch(t->b, s[0], ZL_EV_READ) == 0, "watch of the new file failed");
        ev = zl_test_poll_fd(t, ZL_TEST_WAIT_NS, s[0]);
        ZL_TEST_REQUIRE(t, ev > 0 && (ev & ZL_EV_READ), "the new file, watched, was reported as %d", ev);
        ZL_TEST_REQUIRE(t, t->ops->unwatch(t->b, s[0], ZL_EV_READ) == 0, "unwatch failed");
        /* Closed and not reused: modify gives -EBADF. */
        ZL_TEST_REQUIRE(t, t->ops->watch(t->b, s[1], ZL_EV_READ) == 0, "watch failed");
        if (polled) {
            ZL_TEST_REQUIRE(t, zl_test_poll_fd(t, 0, s[1]) >= 0, "poll failed");
        }
        int fd = s[1];
        zl_test_close(t, fd);
        rc = t->ops->modify(t->b, fd, ZL_EV_READ, ZL_EV_READ | ZL_EV_WRITE);
        ZL_TEST_REQUIRE(t, rc == -EBADF, "modify of the closed number returned %d (polled %d)", rc, polled);
        ZL_TEST_REQUIRE(t, t->ops->unwatch(t->b, fd, ZL_EV_READ) == 0, "unwatch failed");
    }
    ok = 1;
done:
    return ok;
}

static int
zl_test_check_many_fds(zl_test_ctx *t)
{
    int ok = 0, p[2], polls = 0, seen_count = 0;
    int reads[ZL_TEST_MANY];
    unsigned char seen[ZL_TEST_MANY] = {0};
    for (int i = 0; i < ZL_TEST_MANY; i++) {
        ZL_TEST_REQUIRE(t, zl_test_pipe(t, p) == 0, "pipe #%d", i);
        reads[i] = p[0];
        int rc = t->ops->watch(t->b, p[0], ZL_EV_READ);
        ZL_TEST_REQUIRE(t, rc == 0, "watch #%d (fd %d) returned %d", i, p[0], rc);
        ZL_TEST_REQUIRE(t, zl_test_put_byte(p[1]) == 0, "write");
    }
    while (seen_count < ZL_TEST_MANY && polls < 16) {
        const zl_fired *fired;
        int n = zl_test_poll(t, ZL_TEST_WAIT_NS, &fired);
        ZL_TEST_REQUIRE(t, n >= 0, "poll failed");
        polls++;
        for (int i = 0; i < ZL_TEST_MANY; i++) {
            if (!seen[i] && (zl_test_events_in(fired, n, reads[i]) & ZL_EV_READ)) {
                seen[i] = 1;
                seen_count++;
            }
        }
    }
    ZL_TEST_REQUIRE(t, seen_count == ZL_TEST_MANY, "%d of %d readable fds reported in %d polls", seen_count,
                    ZL_TEST_MANY, polls);
    ok = 1;
done:
    return ok;
}

/* Exit codes of the forked child in zl_test_check_fork. */
enum {
    ZL_TEST_CHILD_OK,
    ZL_TEST_CHILD_REINIT = 10,
    ZL_TEST_CHILD_NOT_READY,
    ZL_TEST_CHILD_STILL_READY,
    ZL_TEST_CHILD_WAKE,
};

static int
zl_test_fork_child(const zl_backend_ops *ops, zl_backend *b, const int applied[2], const int queued[2])
{
    const zl_fired *fired;
    int code = ZL_TEST_CHILD_OK;
    alarm(ZL_TEST_CHECK_SECONDS);
    if (ops->reinit_after_fork(b) != 0) {
        return ZL_TEST_CHILD_REINIT;
    }
    zl_test_put_byte(applied[1]);
    zl_test_put_byte(queued[1]);
    int n = ops->poll(b, ZL_TEST_WAIT_NS, &fired);
    if (n < 0 || !(zl_test_events_in(fired, n, applied[0]) & ZL_EV_READ) ||
        !(zl_test_events_in(fired, n, queued[0]) & ZL_EV_READ)) {
        code = ZL_TEST_CHILD_NOT_READY;
        goto out;
    }
    zl_test_drain(applied[0]);
    zl_test_drain(queued[0]);
    n = ops->poll(b, 0, &fired);
    if (n < 0 || zl_test_events_in(fired, n, applied[0]) || zl_test_events_in(fired, n, queued[0])) {
        code = ZL_TEST_CHILD_STILL_READY;
        goto out;
    }
    int64_t start = zl_test_now_ns();
    if (ops->wake(b) != 0 || ops->poll(b, -1, &fired) != 0 || zl_test_now_ns() - start > 1000 * ZL_TEST_MS) {
        code = ZL_TEST_CHILD_WAKE;
    }
out:
    ops->destroy(b);
    return code;
}

static int
zl_test_check_fork(zl_test_ctx *t)
{
    int ok = 0, applied[2], queued[2], status, ev;
    ZL_TEST_REQUIRE(t, zl_test_pipe(t, applied) == 0 && zl_test_pipe(t, queued) == 0, "pipe");
    ZL_TEST_REQUIRE(t, t->ops->watch(t->b, applied[0], ZL_EV_READ) == 0, "watch failed");
    ZL_TEST_REQUIRE(t, zl_test_poll_fd(t, 0, -1) >= 0, "poll failed");
    ZL_TEST_REQUIRE(t, t->ops->watch(t->b, queued[0], ZL_EV_READ) == 0, "watch failed");   /* not yet polled */
    fflush(stdout);
    pid_t pid = fork();
    ZL_TEST_REQUIRE(t, pid >= 0, "fork: %s", strerror(errno));
    if (pid == 0) {
        _exit(zl_test_fork_child(t->ops, t->b, applied, queued));
    }
    ZL_TEST_REQUIRE(t, waitpid(pid, &status, 0) == pid, "waitpid: %s", strerror(errno));
    ZL_TEST_REQUIRE(t, WIFEXITED(status) && WEXITSTATUS(status) == ZL_TEST_CHILD_OK,
               "child failed: %s %d", WIFEXITED(status) ? "exit" : "signal",
               WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
    /* The parent goes on as before. */
    ZL_TEST_REQUIRE(t, zl_test_put_byte(applied[1]) == 0, "write");
    ev = zl_test_poll_fd(t, ZL_TEST_WAIT_NS, applied[0]);
    ZL_TEST_REQUIRE(t, ev > 0 && (ev & ZL_EV_READ), "parent: readable pipe reported as %d", ev);
    zl_test_drain(applied[0]);
    ZL_TEST_REQUIRE(t, zl_test_put_byte(queued[1]) == 0, "write");
    ev = zl_test_poll_fd(t, ZL_TEST_WAIT_NS, queued[0]);
    ZL_TEST_REQUIRE(t, ev > 0 && (ev & ZL_EV_READ), "parent: pipe watched just before fork reported as %d", ev);
    zl_test_drain(queued[0]);
    ok = 1;
done:
    return ok;
}

/* After fork + reinit the two processes must not share a wake-up channel: neither may eat the other's wake. */
static int
zl_test_check_fork_wake_private(zl_test_ctx *t)
{
    int ok = 0, sync[2], status, n;
    const zl_fired *fired;
    char c;
    ZL_TEST_REQUIRE(t, zl_test_pipe(t, sync) == 0, "pipe");
    fflush(stdout);
    pid_t pid = fork();
    ZL_TEST_REQUIRE(t, pid >= 0, "fork: %s", strerror(errno));
    if (pid == 0) {
        alarm(ZL_TEST_CHECK_SECONDS);
        int code = t->ops->reinit_after_fork(t->b) == 0 ? 0 : ZL_TEST_CHILD_REINIT;
        zl_test_put_byte(sync[1]);
        int64_t start = zl_test_now_ns();
        n = code ? 0 : t->ops->poll(t->b, 300 * ZL_TEST_MS, &fired);
        if (code == 0 && (n != 0 || zl_test_now_ns() - start < 300 * ZL_TEST_MS)) {
            code = ZL_TEST_CHILD_WAKE;      /* woken by the parent's wake() */
        }
        t->ops->destroy(t->b);
        _exit(code);
    }
    ZL_TEST_REQUIRE(t, read(sync[0], &c, 1) == 1, "read from child: %s", strerror(errno));
    ZL_TEST_REQUIRE(t, t->ops->wake(t->b) == 0, "wake failed");
    ZL_TEST_REQUIRE(t, waitpid(pid, &status, 0) == pid, "waitpid: %s", strerror(errno));
    int64_t start = zl_test_now_ns();
    n = zl_test_poll(t, 2000 * ZL_TEST_MS, &fired);
    int64_t took = zl_test_now_ns() - start;
    ZL_TEST_REQUIRE(t, WIFEXITED(status) && WEXITSTATUS(status) == 0,
               "child: %s %d (%d = the parent's wake() woke the child)", WIFEXITED(status) ? "exit" : "signal",
               WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status), ZL_TEST_CHILD_WAKE);
    ZL_TEST_REQUIRE(t, n == 0 && took < 1000 * ZL_TEST_MS, "parent's own wake lost: poll returned %d after %.1f ms",
                    n, took / 1e6);
    ok = 1;
done:
    return ok;
}

/* EOF on a pipe and EPIPE-type errors are reported as the watched events, and again while they last. */
static int
zl_test_check_hangup_error(zl_test_ctx *t)
{
    int ok = 0, p[2], q[2];
    ZL_TEST_REQUIRE(t, zl_test_pipe(t, p) == 0 && zl_test_pipe(t, q) == 0, "pipe");
    ZL_TEST_REQUIRE(t, t->ops->watch(t->b, p[0], ZL_EV_READ) == 0, "watch failed");
    ZL_TEST_REQUIRE(t, t->ops->watch(t->b, q[1], ZL_EV_WRITE) == 0, "watch failed");
    ZL_TEST_REQUIRE(t, zl_test_poll_fd(t, 0, -1) >= 0, "poll failed");
    zl_test_close(t, p[1]);
    zl_test_close(t, q[0]);
    for (int round = 1; round <= 2; round++) {
        int read_ev = 0, write_ev = 0;
        for (int i = 0; i < 3 && !((read_ev & ZL_EV_READ) && (write_ev & ZL_EV_WRITE)); i++) {
            const zl_fired *fired;     /* both need not come in the same poll */
            int n = zl_test_poll(t, ZL_TEST_WAIT_NS, &fired);
            ZL_TEST_REQUIRE(t, n >= 0, "poll failed");
            read_ev |= zl_test_events_in(fired, n, p[0]);
            write_ev |= zl_test_events_in(fired, n, q[1]);
        }
        ZL_TEST_REQUIRE(t, read_ev & ZL_EV_READ, "round %d: read end of a closed pipe reported %d", round, read_ev);
        ZL_TEST_REQUIRE(t, write_ev & ZL_EV_WRITE, "round %d: write end of a closed pipe reported %d", round, write_ev);
    }
    ok = 1;
done:
    return ok;
}

static int
zl_test_check_flags_untouched(zl_test_ctx *t)
{
    int ok = 0, p[2];
    ZL_TEST_REQUIRE(t, zl_test_pipe(t, p) == 0, "pipe");
    int before = zl_test_flags_of(p[0]);
    ZL_TEST_REQUIRE(t, t->ops->watch(t->b, p[0], ZL_EV_READ) == 0, "watch failed");
    ZL_TEST_REQUIRE(t, zl_test_flags_of(p[0]) == before, "watch changed the fd flags %#x -> %#x", before,
                    zl_test_flags_of(p[0]));
    ZL_TEST_REQUIRE(t, zl_test_poll_fd(t, 0, -1) >= 0, "poll failed");
    ZL_TEST_REQUIRE(t, t->ops->modify(t->b, p[0], ZL_EV_READ, ZL_EV_READ | ZL_EV_WRITE) == 0, "modify failed");
    ZL_TEST_REQUIRE(t, zl_test_poll_fd(t, 0, -1) >= 0, "poll failed");
    ZL_TEST_REQUIRE(t, zl_test_flags_of(p[0]) == before, "modify/poll changed the fd flags");
    ZL_TEST_REQUIRE(t, t->ops->unwatch(t->b, p[0], ZL_EV_READ | ZL_EV_WRITE) == 0, "unwatch failed");
    ZL_TEST_REQUIRE(t, zl_test_poll_fd(t, 0, -1) >= 0, "poll failed");
    ZL_TEST_REQUIRE(t, zl_test_flags_of(p[0]) == before, "unwatch/poll changed the fd flags");
    ok = 1;
done:
    return ok;
}

/* destroy() with watched, half-closed and closed fds: every fd the backend made is gone, ours are still open.
 * (Memory leaks are valgrind's part: run this program under valgrind --leak-check=full.) */
static int
zl_test_check_destroy(zl_test_ctx *t)
{
    int ok = 0, p[2];
    int reads[16];
    t->ops->destroy(t->b);
    t->b = NULL;
    for (int i = 0; i < 16; i++) {
        ZL_TEST_REQUIRE(t, zl_test_pipe(t, p) == 0, "pipe");
        reads[i] = p[0];
        ZL_TEST_REQUIRE(t, zl_test_put_byte(p[1]) == 0, "write");
    }
    int before = zl_test_count_open_fds();
    t->b = t->ops->create();
    ZL_TEST_REQUIRE(t, t->b != NULL, "create failed: %s", strerror(errno));
    for (int i = 0; i < 16; i++) {
        ZL_TEST_REQUIRE(t, t->ops->watch(t->b, reads[i], i % 2 ? ZL_EV_READ : ZL_EV_READ | ZL_EV_WRITE) == 0, "watch");
    }
    ZL_TEST_REQUIRE(t, zl_test_poll_fd(t, ZL_TEST_WAIT_NS, -1) >= 0, "poll failed");
    ZL_TEST_REQUIRE(t, t->ops->unwatch(t->b, reads[0], ZL_EV_READ | ZL_EV_WRITE) == 0, "unwatch");    /* closing */
    ZL_TEST_REQUIRE(t, t->ops->modify(t->b, reads[1], ZL_EV_READ, ZL_EV_WRITE) == 0, "modify");     /* queued */
    ZL_TEST_REQUIRE(t, t->ops->wake(t->b) == 0, "wake");                                            /* pending */
    t->ops->destroy(t->b);
    t->b = NULL;
    int after = zl_test_count_open_fds();
    ZL_TEST_REQUIRE(t, before >= 0 && after == before, "open fds: %d before create, %d after destroy", before, after);
    for (int i = 0; i < 16; i++) {
        ZL_TEST_REQUIRE(t, fcntl(reads[i], F_GETFD) >= 0, "destroy closed watched fd %d", reads[i]);
    }
    ok = 1;
done:
    return ok;
}

/* ---- informational: does a signal end poll(-1) with -EINTR? (not counted: libuv retries EINTR itself) ---- */

static void
zl_test_on_usr1(int sig)
{
    (void)sig;
}

typedef struct zl_test_signaller {
    const zl_backend_ops *ops;
    zl_backend *b;
    pthread_t target;
} zl_test_signaller;

static void *
zl_test_signaller_main(void *arg)
{
    zl_test_signaller *s = arg;
    zl_test_sleep_ns(30 * ZL_TEST_MS);
    pthread_kill(s->target, SIGUSR1);
    zl_test_sleep_ns(200 * ZL_TEST_MS);
    s->ops->wake(s->b);                /* ends the poll if the signal did not */
    return NULL;
}

static void
zl_test_info_eintr(const zl_backend_ops *ops)
{
    zl_backend *b = ops->create();
    if (b == NULL) {
        return;
    }
    struct sigaction sa, old;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = zl_test_on_usr1;   /* no SA_RESTART */
    sigaction(SIGUSR1, &sa, &old);
    zl_test_signaller s = {.ops = ops, .b = b, .target = pthread_self()};
    pthread_t thread;
    if (pthread_create(&thread, NULL, zl_test_signaller_main, &s) == 0) {
        const zl_fired *fired;
        int n = ops->poll(b, -1, &fired);
        pthread_join(thread, NULL);
        printf("info [%s] signal during poll(-1): %s\n", ops->name,
               n == -EINTR ? "returns -EINTR" : "not interrupted (poll ended by a later wake)");
    }
    sigaction(SIGUSR1, &old, NULL);
    ops->destroy(b);
}

/* ---- runner ---- */

/* ---- the optional completion contract (core/backend.h): all of it or none; recv, send, end of stream, cancel ---- */

#define ZL_TEST_TAG_RECV 100u
#define ZL_TEST_TAG_SEND 200u
#define ZL_TEST_TAG_ACCEPT 300u
#define ZL_TEST_TAG_RECVMSG 400u
#define ZL_TEST_TAG_SENDMSG 500u           /* + the datagram's index in its chain */

typedef struct zl_test_done {
    int result;
    unsigned flags;
    char data[64];
    char last;                         /* the last byte of the data */
    struct sockaddr_storage name;      /* a recvmsg's sender */
    unsigned name_len;
} zl_test_done;

/* Poll until a completion tagged tag comes (copied into *out: its data is the backend's until the next poll). */
static int
zl_test_wait_completion(zl_test_ctx *t, uint64_t tag, zl_test_done *out)
{
    int64_t deadline = zl_test_now_ns() + ZL_TEST_WAIT_NS;
    while (zl_test_now_ns() < deadline) {
        const zl_fired *fired;
        if (t->ops->poll(t->b, 100 * ZL_TEST_MS, &fired) < 0) {
            continue;
        }
        const zl_completion *done;
        int count = t->ops->completions(t->b, &done);
        for (int i = 0; i < count; i++) {
            if (done[i].tag != tag) {
                continue;
            }
            out->result = done[i].result;
            out->flags = done[i].flags;
            if (done[i].result > 0 && done[i].data != NULL) {
                memcpy(out->data, done[i].data, (size_t)done[i].result < sizeof(out->data) ? (size_t)done[i].result
                                                                                        : sizeof(out->data));
                out->last = done[i].data[done[i].result - 1];
            }
            out->name_len = done[i].name != NULL && done[i].name_len <= sizeof(out->name) ? done[i].name_len : 0;
            memcpy(&out->name, done[i].name != NULL ? done[i].name : (const void *)&out->name, out->name_len);
            return 0;
        }
    }
    zl_test_why(t, "no completion tagged %llu within a second", (unsigned long long)tag);
    return -1;
}

/* Poll until tag's last completion comes (no ZL_COMPLETION_MORE); 0 when its result is result. */
static int
zl_test_wait_last(zl_test_ctx *t, uint64_t tag, int result, const char *what)
{
    zl_test_done got;
    ZL_TEST_REQUIRE(t, zl_test_wait_completion(t, tag, &got) == 0, "%s", what);
    ZL_TEST_REQUIRE(t, got.result == result && !(got.flags & ZL_COMPLETION_MORE), "%s gave %d, flags %u", what,
                    got.result, got.flags);
    return 0;
done:
    return -1;
}

static int
zl_test_has_completions(const zl_backend_ops *ops)
{
    return ops->recv_start != NULL && ops->send != NULL && ops->cancel != NULL && ops->completions != NULL &&
           ops->accept_start != NULL && ops->recvmsg_start != NULL && ops->sendmsg_chain != NULL;
}

static int
zl_test_check_completion_all_or_none(zl_test_ctx *t)
{
    int set = (t->ops->recv_start != NULL) + (t->ops->send != NULL) + (t->ops->cancel != NULL) +
              (t->ops->completions != NULL) + (t->ops->accept_start != NULL) + (t->ops->recvmsg_start != NULL) +
              (t->ops->sendmsg_chain != NULL);
    ZL_TEST_REQUIRE(t, set == 0 || set == 7, "%d of the 7 completion functions are set", set);
    return 1;
done:
    return 0;
}

/* Data in, data out, then the peer's close as a recv of 0 that ends the recv. */
static int
zl_test_check_completion_recv_send_eof(zl_test_ctx *t)
{
    if (!zl_test_has_completions(t->ops)) {
        return 1;                      /* a readiness backend: nothing more to check */
    }
    int s[2];
    zl_test_done got;
    char buf[8] = {0};
    ZL_TEST_REQUIRE(t, zl_test_socketpair(t, s) == 0, "socketpair");
    ZL_TEST_REQUIRE(t, t->ops->recv_start(t->b, s[0], ZL_TEST_TAG_RECV) == 0, "recv_start failed");
    ZL_TEST_REQUIRE(t, write(s[1], "hello", 5) == 5, "write");
    ZL_TEST_REQUIRE(t, zl_test_wait_completion(t, ZL_TEST_TAG_RECV, &got) == 0, "recv");
    ZL_TEST_REQUIRE(t, got.result == 5 && memcmp(got.data, "hello", 5) == 0, "recv gave %d bytes", got.result);
    ZL_TEST_REQUIRE(t, got.flags & ZL_COMPLETION_MORE, "a multishot recv must stay armed");
    ZL_TEST_REQUIRE(t, t->ops->send(t->b, s[0], ZL_TEST_TAG_SEND, "world", 5) == 0, "send failed");
    ZL_TEST_REQUIRE(t, zl_test_wait_completion(t, ZL_TEST_TAG_SEND, &got) == 0, "send");
    ZL_TEST_REQUIRE(t, got.result == 5, "send completed with %d", got.result);
    ZL_TEST_REQUIRE(t, read(s[1], buf, sizeof(buf)) == 5 && memcmp(buf, "world", 5) == 0, "the peer got no world");
    zl_test_close(t, s[1]);
    ZL_TEST_REQUIRE(t, zl_test_wait_last(t, ZL_TEST_TAG_RECV, 0, "end of stream") == 0, "no end of stream");
    return 1;
done:
    return 0;
}

/* cancel() ends an armed recv with -ECANCELED, and the fd closed right after it is closed for the peer at once. */
static int
zl_test_check_completion_cancel_then_close(zl_test_ctx *t)
{
    if (!zl_test_has_completions(t->ops)) {
        return 1;
    }
    int s[2];
    char buf[1];
    ZL_TEST_REQUIRE(t, zl_test_socketpair(t, s) == 0, "socketpair");
    ZL_TEST_REQUIRE(t, t->ops->recv_start(t->b, s[0], ZL_TEST_TAG_RECV) == 0, "recv_start failed");
    const zl_fired *fired;
    (void)t->ops->poll(t->b, 0, &fired);   /* submitted: armed in the kernel */
    ZL_TEST_REQUIRE(t, t->ops->cancel(t->b, ZL_TEST_TAG_RECV) == 0, "cancel failed");
    zl_test_close(t, s[0]);
    int flags = fcntl(s[1], F_GETFL);
    fcntl(s[1], F_SETFL, flags | O_NONBLOCK);
    ZL_TEST_REQUIRE(t, read(s[1], buf, 1) == 0, "the peer did not see the close at once (%s)", strerror(errno));
    ZL_TEST_REQUIRE(t, zl_test_wait_last(t, ZL_TEST_TAG_RECV, -ECANCELED, "the cancelled recv") == 0,
                    "not cancelled");
    return 1;
done:
    return 0;
}

/* A TCP socket listening on a free loopback port (tracked), its address in *addr; -1 on failure. */
static int
zl_test_listener(zl_test_ctx *t, struct sockaddr_in *addr)
{
    int fd = zl_test_track(t, socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    socklen_t len = sizeof(*addr);
    memset(addr, 0, sizeof(*addr));
    addr->sin_family = AF_INET;
    addr->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || bind(fd, (struct sockaddr *)addr, sizeof(*addr)) < 0 || listen(fd, 16) < 0 ||
        getsockname(fd, (struct sockaddr *)addr, &len) < 0) {
        zl_test_why(t, "listener: %s", strerror(errno));
        return -1;
    }
    return fd;
}

/* A blocking client connected to addr (tracked), or -1. */
static int
zl_test_connect(zl_test_ctx *t, const struct sockaddr_in *addr)
{
    int fd = zl_test_track(t, socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (fd < 0 || connect(fd, (const struct sockaddr *)addr, sizeof(*addr)) < 0) {
        zl_test_why(t, "connect: %s", strerror(errno));
        return -1;
    }
    return fd;
}

/* Two connections through one armed accept, each a new non-blocking close-on-exec fd; cancel ends it, and the
 * listening socket closed right after is closed for good (a connect is refused). */
static int
zl_test_check_completion_accept(zl_test_ctx *t)
{
    if (!zl_test_has_completions(t->ops)) {
        return 1;
    }
    struct sockaddr_in addr;
    zl_test_done got;
    int lfd = zl_test_listener(t, &addr);
    ZL_TEST_REQUIRE(t, lfd >= 0, "no listener");
    ZL_TEST_REQUIRE(t, t->ops->accept_start(t->b, lfd, ZL_TEST_TAG_ACCEPT) == 0, "accept_start failed");
    for (int i = 0; i < 2; i++) {
        int client = zl_test_connect(t, &addr);
        ZL_TEST_REQUIRE(t, client >= 0, "no connection");
        ZL_TEST_REQUIRE(t, zl_test_wait_completion(t, ZL_TEST_TAG_ACCEPT, &got) == 0, "accept %d", i);
        ZL_TEST_REQUIRE(t, got.result >= 0, "accept %d gave %d", i, got.result);
        int conn = zl_test_track(t, got.result);
        ZL_TEST_REQUIRE(t, got.flags & ZL_COMPLETION_MORE, "a multishot accept must stay armed");
        ZL_TEST_REQUIRE(t, (fcntl(conn, F_GETFL) & O_NONBLOCK) && (fcntl(conn, F_GETFD) & FD_CLOEXEC),
                        "the accepted fd is not non-blocking and close-on-exec");
        ZL_TEST_REQUIRE(t, write(client, "hi", 2) == 2, "write");
        struct pollfd p = {.fd = conn, .events = POLLIN};
        char buf[2];
        ZL_TEST_REQUIRE(t, poll(&p, 1, 1000) == 1 && read(conn, buf, 2) == 2, "the connection got nothing");
    }
    ZL_TEST_REQUIRE(t, t->ops->cancel(t->b, ZL_TEST_TAG_ACCEPT) == 0, "cancel failed");
    zl_test_close(t, lfd);
    int refused = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int rc = connect(refused, (const struct sockaddr *)&addr, sizeof(addr));
    int err = errno;
    close(refused);
    ZL_TEST_REQUIRE(t, rc < 0 && err == ECONNREFUSED, "the cancelled accept kept the listener open (%d, %s)", rc,
                    strerror(err));
    ZL_TEST_REQUIRE(t, zl_test_wait_last(t, ZL_TEST_TAG_ACCEPT, -ECANCELED, "the cancelled accept") == 0,
                    "not cancelled");
    return 1;
done:
    return 0;
}

/* A connection accepted after the last poll is the backend's to close at destroy: the client sees the end. */
static int
zl_test_check_completion_accept_destroy(zl_test_ctx *t)
{
    if (!zl_test_has_completions(t->ops)) {
        return 1;
    }
    struct sockaddr_in addr;
    int lfd = zl_test_listener(t, &addr);
    ZL_TEST_REQUIRE(t, lfd >= 0, "no listener");
    ZL_TEST_REQUIRE(t, t->ops->accept_start(t->b, lfd, ZL_TEST_TAG_ACCEPT) == 0, "accept_start failed");
    const zl_fired *fired;
    (void)t->ops->poll(t->b, 0, &fired);   /* submitted: armed in the kernel */
    int client = zl_test_connect(t, &addr);
    ZL_TEST_REQUIRE(t, client >= 0, "no connection");
    zl_test_sleep_ns(20 * ZL_TEST_MS);     /* accepted by the kernel meanwhile, not collected by a poll */
    t->ops->destroy(t->b);
    t->b = NULL;
    struct pollfd p = {.fd = client, .events = POLLIN};
    char buf[1];
    ZL_TEST_REQUIRE(t, poll(&p, 1, 1000) == 1, "the connection was never closed (a leaked fd)");
    ZL_TEST_REQUIRE(t, read(client, buf, 1) <= 0, "the connection sent data");
    return 1;
done:
    return 0;
}

/* A UDP socket bound to a free loopback port (tracked), its address in *addr; -1 on failure. */
static int
zl_test_udp(zl_test_ctx *t, struct sockaddr_in *addr)
{
    int fd = zl_test_track(t, socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    socklen_t len = sizeof(*addr);
    memset(addr, 0, sizeof(*addr));
    addr->sin_family = AF_INET;
    addr->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || bind(fd, (struct sockaddr *)addr, sizeof(*addr)) < 0 ||
        getsockname(fd, (struct sockaddr *)addr, &len) < 0) {
        zl_test_why(t, "udp socket: %s", strerror(errno));
        return -1;
    }
    return fd;
}

/* One datagram of len bytes (byte i is 'a' + i % 26) from "from" to "to" through the armed recvmsg: its length,
 * bytes and sender come whole, and the recvmsg stays armed, except after an empty one (the kernel's rule). */
static int
zl_test_recvmsg_one(zl_test_ctx *t, int from, const struct sockaddr_in *from_addr, const struct sockaddr_in *to,
                    size_t len)
{
    static char payload[65507];
    zl_test_done got;
    for (size_t i = 0; i < len; i++) {
        payload[i] = (char)('a' + i % 26);
    }
    ZL_TEST_REQUIRE(t, sendto(from, payload, len, 0, (const struct sockaddr *)to, sizeof(*to)) == (ssize_t)len,
                    "sendto %zu bytes: %s", len, strerror(errno));
    ZL_TEST_REQUIRE(t, zl_test_wait_completion(t, ZL_TEST_TAG_RECVMSG, &got) == 0, "recvmsg of %zu bytes", len);
    ZL_TEST_REQUIRE(t, got.result == (int)len && !(got.flags & ZL_COMPLETION_TRUNCATED), "%zu bytes came as %d (%u)",
                    len, got.result, got.flags);
    ZL_TEST_REQUIRE(t, len == 0 || (memcmp(got.data, payload, len < 64 ? len : 64) == 0 && got.last == payload[len - 1]),
                    "the %zu bytes differ", len);
    ZL_TEST_REQUIRE(t, (len > 0) == !!(got.flags & ZL_COMPLETION_MORE), "a recvmsg of %zu bytes %s armed", len,
                    len > 0 ? "did not stay" : "stayed");
    ZL_TEST_REQUIRE(t, got.name_len == sizeof(*from_addr) && memcmp(&got.name, from_addr, sizeof(*from_addr)) == 0,
                    "the sender's address is wrong (%u bytes)", got.name_len);
    return 0;
done:
    return -1;
}

/* Datagrams of 5, 0 (which ends the recvmsg) and 65,507 bytes with their sender; an ICMP error on a connected socket ends the recvmsg with
 * -ECONNREFUSED; armed again, cancel ends it. */
static int
zl_test_check_completion_recvmsg(zl_test_ctx *t)
{
    if (!zl_test_has_completions(t->ops)) {
        return 1;
    }
    struct sockaddr_in a_addr, b_addr, gone_addr;
    int a = zl_test_udp(t, &a_addr), b = zl_test_udp(t, &b_addr), gone = zl_test_udp(t, &gone_addr);
    ZL_TEST_REQUIRE(t, a >= 0 && b >= 0 && gone >= 0, "no UDP sockets");
    int big = 256 * 1024;
    setsockopt(a, SOL_SOCKET, SO_RCVBUF, &big, sizeof(big));
    ZL_TEST_REQUIRE(t, t->ops->recvmsg_start(t->b, a, ZL_TEST_TAG_RECVMSG) == 0, "recvmsg_start failed");
    ZL_TEST_REQUIRE(t, zl_test_recvmsg_one(t, b, &b_addr, &a_addr, 5) == 0, "5 bytes");
    ZL_TEST_REQUIRE(t, zl_test_recvmsg_one(t, b, &b_addr, &a_addr, 0) == 0, "an empty datagram");
    ZL_TEST_REQUIRE(t, t->ops->recvmsg_start(t->b, a, ZL_TEST_TAG_RECVMSG) == 0, "recvmsg_start again failed");
    ZL_TEST_REQUIRE(t, zl_test_recvmsg_one(t, b, &b_addr, &a_addr, 65507) == 0, "65,507 bytes");
    zl_test_close(t, gone);            /* a port nobody listens on: the next send draws an ICMP error */
    ZL_TEST_REQUIRE(t, connect(a, (const struct sockaddr *)&gone_addr, sizeof(gone_addr)) == 0, "connect");
    ZL_TEST_REQUIRE(t, send(a, "x", 1, 0) == 1, "send");
    ZL_TEST_REQUIRE(t, zl_test_wait_last(t, ZL_TEST_TAG_RECVMSG, -ECONNREFUSED, "the refused send") == 0,
                    "no ECONNREFUSED");
    ZL_TEST_REQUIRE(t, t->ops->recvmsg_start(t->b, a, ZL_TEST_TAG_RECVMSG) == 0, "recvmsg_start again failed");
    const zl_fired *fired;
    (void)t->ops->poll(t->b, 0, &fired);   /* submitted: armed in the kernel */
    ZL_TEST_REQUIRE(t, t->ops->cancel(t->b, ZL_TEST_TAG_RECVMSG) == 0, "cancel failed");
    ZL_TEST_REQUIRE(t, zl_test_wait_last(t, ZL_TEST_TAG_RECVMSG, -ECANCELED, "the cancelled recvmsg") == 0,
                    "not cancelled");
    return 1;
done:
    return 0;
}

#define ZL_TEST_CHAIN 6

/* Poll until the ZL_TEST_CHAIN completions of a chain came; results[i] is datagram i's. */
static int
zl_test_wait_chain(zl_test_ctx *t, int *results)
{
    int64_t deadline = zl_test_now_ns() + ZL_TEST_WAIT_NS;
    int seen = 0;
    while (seen < ZL_TEST_CHAIN && zl_test_now_ns() < deadline) {
        const zl_fired *fired;
        const zl_completion *done;
        (void)t->ops->poll(t->b, 100 * ZL_TEST_MS, &fired);
        int count = t->ops->completions(t->b, &done);
        for (int i = 0; i < count; i++) {
            uint64_t index = done[i].tag - ZL_TEST_TAG_SENDMSG;
            if (index < ZL_TEST_CHAIN) {
                results[index] = done[i].result;
                seen++;
            }
        }
    }
    return seen == ZL_TEST_CHAIN ? 0 : -1;
}

/* A chain of 6 linked datagrams whose third is larger than UDP allows: two are sent, in order, the third fails
 * with -EMSGSIZE, the three linked after it complete -ECANCELED and are not sent. */
static int
zl_test_check_completion_sendmsg_chain(zl_test_ctx *t)
{
    if (!zl_test_has_completions(t->ops)) {
        return 1;
    }
    static char big[70000];
    struct sockaddr_in a_addr, b_addr;
    int a = zl_test_udp(t, &a_addr), b = zl_test_udp(t, &b_addr);
    ZL_TEST_REQUIRE(t, a >= 0 && b >= 0, "no UDP sockets");
    char payload[ZL_TEST_CHAIN] = {'0', '1', '2', '3', '4', '5'};
    struct iovec iov[ZL_TEST_CHAIN];
    struct msghdr msg[ZL_TEST_CHAIN];
    zl_send_op ops[ZL_TEST_CHAIN];
    for (int i = 0; i < ZL_TEST_CHAIN; i++) {
        iov[i].iov_base = i == 2 ? big : &payload[i];
        iov[i].iov_len = i == 2 ? sizeof(big) : 1;
        memset(&msg[i], 0, sizeof(msg[i]));
        msg[i].msg_name = &b_addr;
        msg[i].msg_namelen = sizeof(b_addr);
        msg[i].msg_iov = &iov[i];
        msg[i].msg_iovlen = 1;
        ops[i].tag = ZL_TEST_TAG_SENDMSG + (uint64_t)i;
        ops[i].msg = &msg[i];
    }
    ZL_TEST_REQUIRE(t, t->ops->sendmsg_chain(t->b, a, ops, ZL_TEST_CHAIN) == ZL_TEST_CHAIN, "not all queued");
    int results[ZL_TEST_CHAIN];
    ZL_TEST_REQUIRE(t, zl_test_wait_chain(t, results) == 0, "not every completion of the chain came");
    ZL_TEST_REQUIRE(t, results[0] == 1 && results[1] == 1 && results[2] == -EMSGSIZE, "gave %d, %d, %d", results[0],
                    results[1], results[2]);
    for (int i = 3; i < ZL_TEST_CHAIN; i++) {
        ZL_TEST_REQUIRE(t, results[i] == -ECANCELED, "datagram %d after the failed one gave %d", i, results[i]);
    }
    char got[4] = {0};
    ZL_TEST_REQUIRE(t, recv(b, &got[0], 1, 0) == 1 && recv(b, &got[1], 1, 0) == 1, "the two sent did not come");
    ZL_TEST_REQUIRE(t, got[0] == '0' && got[1] == '1' && recv(b, &got[2], 1, MSG_DONTWAIT) < 0,
                    "got %.3s: not the two first, in order, and nothing else", got);
    return 1;
done:
    return 0;
}

static const struct {
    const char *name;
    zl_test_check_fn fn;
} zl_test_checks[] = {
    {"completion contract: all seven functions or none", zl_test_check_completion_all_or_none},
    {"completion: a sendmsg chain: sent in order, a failed one cancels those linked after it",
     zl_test_check_completion_sendmsg_chain},
    {"completion: multishot recvmsg: datagrams of 5, 0, 65507 bytes, sender, ECONNREFUSED, cancel",
     zl_test_check_completion_recvmsg},
    {"completion: multishot recv, send, end of stream", zl_test_check_completion_recv_send_eof},
    {"completion: cancel, then close: the peer sees it at once", zl_test_check_completion_cancel_then_close},
    {"completion: multishot accept, cancel, then close: refused at once", zl_test_check_completion_accept},
    {"completion: destroy closes connections accepted after the last poll", zl_test_check_completion_accept_destroy},
    {"pipe becomes readable, reported with ZL_EV_READ", zl_test_check_readable},
    {"level-triggered: undrained fd reported by every poll", zl_test_check_level_triggered},
    {"socketpair writable, reported with ZL_EV_WRITE", zl_test_check_writable},
    {"modify READ -> WRITE -> READ|WRITE -> READ", zl_test_check_modify},
    {"unwatch stops reports", zl_test_check_unwatch_stops},
    {"unwatch of an already-closed fd returns 0", zl_test_check_unwatch_closed},
    {"fd closed (or made a regular file) before the watch was applied: poll survives",
     zl_test_check_closed_before_poll},
    {"watch of a regular file: -EPERM (epoll) or accepted and readable before EOF (kqueue); nothing left behind",
     zl_test_check_regular_file},
    {"watch of a closed fd (and of -1) gives -EBADF", zl_test_check_closed_fd},
    {"after an unwatch: closed fd and regular file refused, next fd watched as new", zl_test_check_watch_after_unwatch},
    {"watch of a watched fd gives -EEXIST", zl_test_check_watch_twice},
    {"poll(0) does not block", zl_test_check_poll_zero},
    {"timed poll never returns before its timeout (1.5 ms, 1 ns, 10 ms)", zl_test_check_timeout},
    {"wake() from another thread ends poll(-1); an earlier wake ends the next poll", zl_test_check_wake_thread},
    {"10000 repeated wakes are cheap and coalesce", zl_test_check_wake_repeated},
    {"closed while watched + same number reopened + watch works", zl_test_check_reuse_without_unwatch},
    {"unwatch then immediate re-watch of the same number works", zl_test_check_rewatch_after_unwatch},
    {"a watch of a closed file never reports the file reusing its number", zl_test_check_dead_watch_after_reuse},
    {"200 fds watched at once are all reported", zl_test_check_many_fds},
    {"reinit_after_fork: child keeps watched fds, parent unaffected", zl_test_check_fork},
    {"after fork the parent's wake() does not wake the child", zl_test_check_fork_wake_private},
    {"hang-up and error reported as the watched events, level-triggered", zl_test_check_hangup_error},
    {"watch/modify/unwatch leave the fd's flags alone", zl_test_check_flags_untouched},
    {"destroy with fds still watched releases the backend's fds, keeps ours", zl_test_check_destroy},
};

static void
zl_test_on_alarm(int sig)
{
    (void)sig;
    const char *parts[] = {"FAIL [", zl_test_current_backend, "] ", zl_test_current_check, ": timed out\n"};
    for (size_t i = 0; i < sizeof(parts) / sizeof(parts[0]); i++) {
        ssize_t unused = write(STDOUT_FILENO, parts[i], strlen(parts[i]));
        (void)unused;
    }
    _exit(2);
}

static void
zl_test_run_check(const zl_backend_ops *ops, const char *name, zl_test_check_fn fn)
{
    zl_test_ctx t;
    memset(&t, 0, sizeof(t));
    t.ops = ops;
    zl_test_current_backend = ops->name;
    zl_test_current_check = name;
    alarm(ZL_TEST_CHECK_SECONDS);
    int ok = 0;
    t.b = ops->create();
    if (t.b == NULL) {
        zl_test_why(&t, "create failed: %s", strerror(errno));
    } else {
        ok = fn(&t);
    }
    if (t.b != NULL) {
        ops->destroy(t.b);
    }
    zl_test_close_all(&t);
    alarm(0);
    if (ok) {
        zl_test_passed++;
        printf("ok   [%s] %s\n", ops->name, name);
    } else {
        zl_test_failed++;
        printf("FAIL [%s] %s: %s\n", ops->name, name, t.why[0] ? t.why : "(no reason given)");
    }
    fflush(stdout);
}

/* Whether name is in ZLOOP_TEST_SKIP_BACKENDS (a comma list of backends to leave out, as tests/conftest.py reads it). */
static int
zl_test_skipped(const char *name)
{
    const char *list = getenv("ZLOOP_TEST_SKIP_BACKENDS");
    size_t len = strlen(name);
    for (const char *at = list; at != NULL && *at != '\0'; at = strchr(at, ',') ? strchr(at, ',') + 1 : NULL) {
        if (strncmp(at, name, len) == 0 && (at[len] == ',' || at[len] == '\0')) {
            return 1;
        }
    }
    return 0;
}

int
main(void)
{
    signal(SIGPIPE, SIG_IGN);
    signal(SIGALRM, zl_test_on_alarm);
    printf("# backends:");
    for (size_t i = 0; zl_backend_table[i] != NULL; i++) {
        printf(" %s", zl_backend_table[i]->name);
    }
    printf(" (default %s)\n", zl_backend_default_name());
    for (size_t i = 0; zl_backend_table[i] != NULL; i++) {
        const zl_backend_ops *ops = zl_backend_table[i];
        if (zl_test_skipped(ops->name)) {
            printf("skip [%s] (ZLOOP_TEST_SKIP_BACKENDS)\n", ops->name);
            continue;
        }
        for (size_t c = 0; c < sizeof(zl_test_checks) / sizeof(zl_test_checks[0]); c++) {
            zl_test_run_check(ops, zl_test_checks[c].name, zl_test_checks[c].fn);
        }
        zl_test_info_eintr(ops);
    }
    printf("%d passed, %d failed\n", zl_test_passed, zl_test_failed);
    return zl_test_failed == 0 ? 0 : 1;
}
