/* tests/c/kqueue_shim/kqueue_shim.c — kqueue() and kevent() for Linux over epoll, for tests only: just what
 * backends/native/backend_kqueue.c uses, with FreeBSD's semantics for that subset. Not proof of BSD behaviour. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "sys/event.h"

/*
 * What is emulated (FreeBSD's kern_event.c is the model):
 * - kevent() applies the change list in order. A failed change (or any change with EV_RECEIPT) is copied to the
 *   event list with EV_ERROR and the errno in data while there is room, and then no events are collected; with no
 *   room left, kevent() returns -1 with that errno and the remaining changes are not applied.
 * - EV_ADD of a closed fd: EBADF; EV_DELETE of a filter that does not exist: ENOENT; EV_ADD of an existing knote
 *   updates it (never EEXIST). EVFILT_WRITE on a pipe whose reader is gone: EPIPE. A pipe end's filter for the
 *   direction the end cannot do is accepted and never fires.
 * - close(fd) drops the fd's knotes. The shim cannot see close(): it notices before every change and report (the
 *   epoll registration of (file, fd) is gone, or the file at the number is another one) and forgets them then.
 * - Regular files and directories are "vnodes": EVFILT_READ fires while the offset is not at end of file (data =
 *   size - offset), EVFILT_WRITE always. They are checked on every scan, not woken by writes to the file.
 * - Level-triggered fd filters (EV_CLEAR only for EVFILT_USER). EV_EOF: read side hung up (EPOLLRDHUP/EPOLLHUP),
 *   or write side hung up (EPOLLHUP, or EPOLLERR on a pipe).
 * - EVFILT_USER with NOTE_TRIGGER, callable from any thread: flag the knote, then write an eventfd that every
 *   kqueue of the process watches edge-triggered (a kqueue woken for another's trigger waits again).
 * - fork(): a kqueue is not inherited. In the child every kqueue's number is closed (after checking, through
 *   /proc/self/fdinfo, that the number still holds that kqueue's epoll set) and its state dropped.
 */

enum {
    ZL_SHIM_R = 1,                    /* an EVFILT_READ knote */
    ZL_SHIM_W = 2,                    /* an EVFILT_WRITE knote */
};

#define ZL_SHIM_TRIGGER_TAG (UINT64_C(1) << 63)
#define ZL_SHIM_WAIT_BATCH 256
#define ZL_SHIM_KNOWN_FLAGS (EV_ADD | EV_DELETE | EV_CLEAR | EV_RECEIPT)

typedef struct zl_shim_fd {
    unsigned char filters;            /* knotes that exist */
    unsigned char inert;              /* knotes that exist but never fire */
    unsigned char vnode;              /* regular file or directory: not in epoll, checked per scan */
    unsigned char fifo;
    uint32_t gen;                     /* tag of the epoll registration; events carrying another one are stale */
    dev_t dev;                        /* identity of a vnode, to notice its number was reused */
    ino_t ino;
    void *udata[2];
} zl_shim_fd;

typedef struct zl_shim_user {
    uintptr_t ident;
    unsigned char clear;              /* EV_CLEAR: reported once per trigger */
    unsigned char triggered;
    void *udata;
} zl_shim_user;

typedef struct zl_shim_kq {
    int epfd;                         /* the kqueue's number is its epoll fd's */
    uint64_t tag;                     /* epoll data of its registration of the trigger eventfd */
    zl_shim_fd *fds;
    int fds_len;
    int vnodes;
    uint32_t next_gen;
    zl_shim_user *users;
    int nusers;
    int users_cap;
} zl_shim_kq;

static pthread_mutex_t zl_shim_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t zl_shim_once = PTHREAD_ONCE_INIT;
static zl_shim_kq **zl_shim_kqs;      /* by kqueue number; an entry outlives a close() until its number is reused */
static int zl_shim_kqs_len;
static int zl_shim_trigger_fd = -1;
static uint64_t zl_shim_serial;

/* ---- small helpers ---- */

static int64_t
zl_shim_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int
zl_shim_bit_of(short filter)
{
    return filter == EVFILT_READ ? ZL_SHIM_R : ZL_SHIM_W;
}

static uint32_t
zl_shim_epoll_mask(int active)
{
    return ((active & ZL_SHIM_R) ? (EPOLLIN | EPOLLRDHUP) : 0) | ((active & ZL_SHIM_W) ? EPOLLOUT : 0);
}

static uint64_t
zl_shim_data(uint32_t gen, int fd)
{
    return ((uint64_t)gen << 32) | (uint32_t)fd;
}

/* epoll_ctl for an fd entry, watching its filters in active; 0 or -1 with errno. */
static int
zl_shim_epoll_ctl(zl_shim_kq *k, int op, int fd, const zl_shim_fd *e, int active)
{
    struct epoll_event ev = {.events = zl_shim_epoll_mask(active), .data.u64 = zl_shim_data(e->gen, fd)};
    return epoll_ctl(k->epfd, op, fd, &ev);
}

static int
zl_shim_reserve(zl_shim_kq *k, int fd)
{
    if (fd < k->fds_len) {
        return 0;
    }
    int len = k->fds_len ? k->fds_len : 64;
    while (len <= fd) {
        len *= 2;
    }
    zl_shim_fd *grown = realloc(k->fds, (size_t)len * sizeof(*grown));
    if (grown == NULL) {
        return ENOMEM;
    }
    memset(grown + k->fds_len, 0, (size_t)(len - k->fds_len) * sizeof(*grown));
    k->fds = grown;
    k->fds_len = len;
    return 0;
}

static zl_shim_fd *
zl_shim_entry(zl_shim_kq *k, int fd)
{
    return fd >= 0 && fd < k->fds_len ? &k->fds[fd] : NULL;
}

/* Drop an fd's knotes from the table (the kernel side is gone already or removed by the caller). */
static void
zl_shim_forget(zl_shim_kq *k, int fd)
{
    zl_shim_fd *e = &k->fds[fd];
    if (e->vnode) {
        k->vnodes--;
    }
    memset(e, 0, sizeof(*e));
}

/* ---- noticing close(): BSD drops an fd's knotes when the fd is closed ---- */

/* 0 if fd is open (its entry forgotten if the number now holds another file), EBADF if it is closed. */
static int
zl_shim_sync_fd(zl_shim_kq *k, int fd)
{
    zl_shim_fd *e = zl_shim_entry(k, fd);
    if (fd < 0) {
        return EBADF;
    }
    if (e == NULL || e->filters == 0) {
        return fcntl(fd, F_GETFD) < 0 ? EBADF : 0;
    }
    if (e->vnode) {
        struct stat st;
        if (fstat(fd, &st) < 0) {
            zl_shim_forget(k, fd);
            return EBADF;
        }
        if (st.st_dev != e->dev || st.st_ino != e->ino) {
            zl_shim_forget(k, fd);
        }
        return 0;
    }
    if (zl_shim_epoll_ctl(k, EPOLL_CTL_MOD, fd, e, e->filters & ~e->inert) == 0) {
        return 0;                     /* epoll still holds this (file, fd): the same file */
    }
    int err = errno;
    zl_shim_forget(k, fd);            /* ENOENT/EPERM: another file has the number now */
    return err == EBADF ? EBADF : 0;
}

/* ---- EVFILT_READ / EVFILT_WRITE changes ---- */

/* FreeBSD accepts a pipe end's filter for the direction the end cannot do, and never fires it. */
static int
zl_shim_is_inert(int fd, const struct stat *st, int bit)
{
    if (!S_ISFIFO(st->st_mode)) {
        return 0;
    }
    int mode = fcntl(fd, F_GETFL) & O_ACCMODE;
    return (bit == ZL_SHIM_R && mode == O_WRONLY) || (bit == ZL_SHIM_W && mode == O_RDONLY);
}

static int
zl_shim_pipe_reader_gone(int fd)
{
    struct pollfd p = {.fd = fd, .events = POLLOUT};
    return poll(&p, 1, 0) == 1 && (p.revents & POLLERR);
}

/* Point epoll at the entry's active filters; a new registration gets a new generation tag. */
static int
zl_shim_epoll_set(zl_shim_kq *k, int fd, zl_shim_fd *e, int active, int is_new)
{
    if (is_new) {
        k->next_gen = (k->next_gen + 1) & 0x7fffffff;
        e->gen = k->next_gen ? k->next_gen : ++k->next_gen;
    }
    int rc = zl_shim_epoll_ctl(k, is_new ? EPOLL_CTL_ADD : EPOLL_CTL_MOD, fd, e, active);
    if (rc < 0 && is_new && errno == EEXIST) {
        rc = zl_shim_epoll_ctl(k, EPOLL_CTL_MOD, fd, e, active);   /* the same open file was closed and put back */
    }
    return rc < 0 ? errno : 0;
}

static int
zl_shim_add_fd(zl_shim_kq *k, int fd, int bit, void *udata)
{
    int err = zl_shim_reserve(k, fd);
    if (err) {
        return err;
    }
    zl_shim_fd *e = &k->fds[fd];
    if (e->filters & bit) {
        e->udata[bit - 1] = udata;    /* EV_ADD of an existing knote updates it */
        return 0;
    }
    struct stat st;
    if (fstat(fd, &st) < 0) {
        return errno;
    }
    int inert = zl_shim_is_inert(fd, &st, bit);
    if (bit == ZL_SHIM_W && S_ISFIFO(st.st_mode) && !inert && zl_shim_pipe_reader_gone(fd)) {
        return EPIPE;
    }
    int is_new = e->filters == 0;
    if (is_new) {
        e->vnode = S_ISREG(st.st_mode) || S_ISDIR(st.st_mode);
        e->fifo = S_ISFIFO(st.st_mode);
        e->dev = st.st_dev;
        e->ino = st.st_ino;
    }
    if (!e->vnode) {
        int new_inert = e->inert | (inert ? bit : 0);
        err = zl_shim_epoll_set(k, fd, e, (e->filters | bit) & ~new_inert, is_new);
        if (err) {
            return err;
        }
    } else if (is_new) {
        k->vnodes++;
    }
    e->filters |= (unsigned char)bit;
    e->inert |= (unsigned char)(inert ? bit : 0);
    e->udata[bit - 1] = udata;
    return 0;
}

static int
zl_shim_delete_fd(zl_shim_kq *k, int fd, int bit)
{
    zl_shim_fd *e = zl_shim_entry(k, fd);
    if (e == NULL || !(e->filters & bit)) {
        return ENOENT;
    }
    int left = e->filters & ~bit;
    if (!e->vnode) {
        (void)zl_shim_epoll_ctl(k, left ? EPOLL_CTL_MOD : EPOLL_CTL_DEL, fd, e, left & ~e->inert);
    }
    if (left == 0) {
        zl_shim_forget(k, fd);
    } else {
        e->filters = (unsigned char)left;
        e->inert &= (unsigned char)left;
    }
    return 0;
}

static int
zl_shim_change_fd(zl_shim_kq *k, const struct kevent *kev)
{
    if (kev->flags & EV_CLEAR) {
        return EINVAL;                /* edge-triggered fd filters are not emulated */
    }
    if (kev->ident > INT_MAX) {
        return EBADF;
    }
    int fd = (int)kev->ident;
    int bit = zl_shim_bit_of(kev->filter);
    int err = zl_shim_sync_fd(k, fd);
    if (err) {
        return err;
    }
    if (kev->flags & EV_ADD) {
        err = zl_shim_add_fd(k, fd, bit, kev->udata);
        if (err) {
            return err;
        }
    }
    if (kev->flags & EV_DELETE) {
        return zl_shim_delete_fd(k, fd, bit);
    }
    zl_shim_fd *e = zl_shim_entry(k, fd);
    return e != NULL && (e->filters & bit) ? 0 : ENOENT;
}

/* ---- EVFILT_USER changes ---- */

static zl_shim_user *
zl_shim_find_user(zl_shim_kq *k, uintptr_t ident)
{
    for (int i = 0; i < k->nusers; i++) {
        if (k->users[i].ident == ident) {
            return &k->users[i];
        }
    }
    return NULL;
}

static zl_shim_user *
zl_shim_new_user(zl_shim_kq *k, uintptr_t ident)
{
    if (k->nusers == k->users_cap) {
        int cap = k->users_cap ? k->users_cap * 2 : 4;
        zl_shim_user *grown = realloc(k->users, (size_t)cap * sizeof(*grown));
        if (grown == NULL) {
            return NULL;
        }
        k->users = grown;
        k->users_cap = cap;
    }
    zl_shim_user *u = &k->users[k->nusers++];
    memset(u, 0, sizeof(*u));
    u->ident = ident;
    return u;
}

/* Wake every kqueue's waiter; the one whose knote was triggered reports it, the others wait again. */
static void
zl_shim_kick(void)
{
    uint64_t one = 1;
    ssize_t n;
    do {
        n = write(zl_shim_trigger_fd, &one, sizeof(one));
    } while (n < 0 && errno == EINTR);
}

static int
zl_shim_change_user(zl_shim_kq *k, const struct kevent *kev)
{
    zl_shim_user *u = zl_shim_find_user(k, kev->ident);
    if (u == NULL) {
        if (!(kev->flags & EV_ADD)) {
            return ENOENT;
        }
        u = zl_shim_new_user(k, kev->ident);
        if (u == NULL) {
            return ENOMEM;
        }
    }
    if (kev->flags & EV_ADD) {
        u->clear = (kev->flags & EV_CLEAR) != 0;
        u->udata = kev->udata;
    }
    if (kev->fflags & NOTE_TRIGGER) {
        u->triggered = 1;
        zl_shim_kick();
    }
    if (kev->flags & EV_DELETE) {
        *u = k->users[--k->nusers];
    }
    return 0;
}

static int
zl_shim_change(zl_shim_kq *k, const struct kevent *kev)
{
    if (kev->flags & ~ZL_SHIM_KNOWN_FLAGS) {
        return EINVAL;                /* a flag this shim does not implement */
    }
    switch (kev->filter) {
    case EVFILT_READ:
    case EVFILT_WRITE:
        return zl_shim_change_fd(k, kev);
    case EVFILT_USER:
        return zl_shim_change_user(k, kev);
    default:
        return EINVAL;
    }
}

/* ---- collecting events ---- */

static void
zl_shim_put(struct kevent *out, uintptr_t ident, short filter, unsigned short flags, int64_t data, void *udata)
{
    out->ident = ident;
    out->filter = filter;
    out->flags = flags;
    out->fflags = 0;
    out->data = data;
    out->udata = udata;
}

static int
zl_shim_collect_users(zl_shim_kq *k, struct kevent *out, int count, int nevents)
{
    for (int i = 0; i < k->nusers && count < nevents; i++) {
        zl_shim_user *u = &k->users[i];
        if (u->triggered) {
            zl_shim_put(&out[count++], u->ident, EVFILT_USER, u->clear ? EV_CLEAR : 0, 0, u->udata);
            u->triggered = !u->clear;
        }
    }
    return count;
}

static int
zl_shim_collect_vnodes(zl_shim_kq *k, struct kevent *out, int count, int nevents)
{
    for (int fd = 0; k->vnodes > 0 && fd < k->fds_len && count < nevents; fd++) {
        zl_shim_fd *e = &k->fds[fd];
        if (!e->vnode || zl_shim_sync_fd(k, fd) != 0 || e->filters == 0) {
            continue;
        }
        struct stat st;
        off_t offset = lseek(fd, 0, SEEK_CUR);
        if ((e->filters & ZL_SHIM_R) && offset >= 0 && fstat(fd, &st) == 0 && st.st_size != offset) {
            zl_shim_put(&out[count++], (uintptr_t)fd, EVFILT_READ, 0, (int64_t)(st.st_size - offset), e->udata[0]);
        }
        if ((e->filters & ZL_SHIM_W) && count < nevents) {
            zl_shim_put(&out[count++], (uintptr_t)fd, EVFILT_WRITE, 0, 0, e->udata[1]);
        }
    }
    return count;
}

static int
zl_shim_collect_epoll(zl_shim_kq *k, const struct epoll_event *evs, int n, struct kevent *out, int count,
                      int nevents)
{
    for (int i = 0; i < n && count < nevents; i++) {
        uint64_t data = evs[i].data.u64;
        int fd = (int)(uint32_t)data;
        zl_shim_fd *e = (data & ZL_SHIM_TRIGGER_TAG) ? NULL : zl_shim_entry(k, fd);
        if (e == NULL || e->filters == 0 || e->vnode || e->gen != (uint32_t)(data >> 32)) {
            continue;                 /* a trigger (collected separately) or a stale registration */
        }
        if (zl_shim_sync_fd(k, fd) != 0 || e->filters == 0) {
            continue;                 /* closed or reused since: BSD would have dropped the knotes */
        }
        uint32_t m = evs[i].events;
        int active = e->filters & ~e->inert;
        if ((active & ZL_SHIM_R) && (m & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))) {
            int avail = 0;
            (void)ioctl(fd, FIONREAD, &avail);
            unsigned short eof = (m & (EPOLLRDHUP | EPOLLHUP)) ? EV_EOF : 0;
            zl_shim_put(&out[count++], (uintptr_t)fd, EVFILT_READ, eof, avail, e->udata[0]);
        }
        if ((active & ZL_SHIM_W) && count < nevents && (m & (EPOLLOUT | EPOLLERR | EPOLLHUP))) {
            unsigned short eof = ((m & EPOLLHUP) || (e->fifo && (m & EPOLLERR))) ? EV_EOF : 0;
            zl_shim_put(&out[count++], (uintptr_t)fd, EVFILT_WRITE, eof, 0, e->udata[1]);
        }
    }
    return count;
}

/* ---- waiting ---- */

static int
zl_shim_epoll_wait(int epfd, struct epoll_event *evs, int max, int64_t timeout_ns)
{
#ifdef SYS_epoll_pwait2
    static int have_pwait2 = 1;
    if (have_pwait2 && timeout_ns > 0) {
        struct timespec ts = {.tv_sec = timeout_ns / 1000000000, .tv_nsec = timeout_ns % 1000000000};
        long n = syscall(SYS_epoll_pwait2, epfd, evs, max, &ts, NULL, 0);
        if (n >= 0 || errno != ENOSYS) {
            return (int)n;
        }
        have_pwait2 = 0;
    }
#endif
    int ms = -1;
    if (timeout_ns >= 0) {
        int64_t rounded = (timeout_ns + 999999) / 1000000;
        ms = rounded > INT_MAX ? INT_MAX : (int)rounded;
    }
    return epoll_wait(epfd, evs, max, ms);
}

/* The scan half of kevent(), called and returning with zl_shim_lock held (released while waiting). */
static int
zl_shim_scan(zl_shim_kq *k, struct kevent *out, int nevents, const struct timespec *timeout)
{
    if (timeout != NULL && (timeout->tv_sec < 0 || timeout->tv_nsec < 0 || timeout->tv_nsec >= 1000000000)) {
        return -EINVAL;
    }
    if (nevents == 0) {
        return 0;
    }
    int64_t deadline = -1;
    if (timeout != NULL) {
        int64_t sec = timeout->tv_sec > 1000000000 ? 1000000000 : (int64_t)timeout->tv_sec;   /* ~30 years */
        deadline = zl_shim_now_ns() + sec * 1000000000 + timeout->tv_nsec;
    }
    struct epoll_event evs[ZL_SHIM_WAIT_BATCH];
    for (;;) {
        int count = zl_shim_collect_users(k, out, 0, nevents);
        count = zl_shim_collect_vnodes(k, out, count, nevents);
        int64_t wait_ns = -1;
        if (count > 0) {
            wait_ns = 0;
        } else if (deadline >= 0) {
            int64_t left = deadline - zl_shim_now_ns();
            wait_ns = left > 0 ? left : 0;
        }
        int room = nevents - count;
        int n = 0;
        if (room > 0) {
            int epfd = k->epfd;
            pthread_mutex_unlock(&zl_shim_lock);
            n = zl_shim_epoll_wait(epfd, evs, room < ZL_SHIM_WAIT_BATCH ? room : ZL_SHIM_WAIT_BATCH, wait_ns);
            int saved = errno;
            pthread_mutex_lock(&zl_shim_lock);
            if (n < 0) {
                return count > 0 ? count : -saved;   /* EINTR: a signal ended the wait */
            }
        }
        count = zl_shim_collect_epoll(k, evs, n, out, count, nevents);
        if (count > 0 || wait_ns == 0) {
            return count;
        }
        /* Woken for another kqueue's trigger, or only by stale registrations: wait out the rest. */
    }
}

/* ---- the kqueue table, fork ---- */

static void
zl_shim_free(zl_shim_kq *k)
{
    free(k->fds);
    free(k->users);
    free(k);
}

/* Does fd number k->epfd still hold k's epoll set? Its fdinfo lists the trigger registration with k's tag. */
static int
zl_shim_owns_number(const zl_shim_kq *k)
{
    char path[64], want[64];
    snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", k->epfd);
    snprintf(want, sizeof(want), "data: %16llx", (unsigned long long)k->tag);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return 0;
    }
    size_t len = 0, cap = 4096;
    char *text = malloc(cap);
    ssize_t n = 0;
    while (text != NULL && (n = read(fd, text + len, cap - len - 1)) > 0) {
        len += (size_t)n;
        if (cap - len - 1 == 0) {
            char *grown = realloc(text, cap * 2);
            if (grown == NULL) {
                free(text);
                text = NULL;
                break;
            }
            text = grown;
            cap *= 2;
        }
    }
    close(fd);
    if (text == NULL) {
        return 0;
    }
    text[len] = '\0';
    int found = strstr(text, want) != NULL;
    free(text);
    return found;
}

static void
zl_shim_prepare_fork(void)
{
    pthread_mutex_lock(&zl_shim_lock);
}

static void
zl_shim_after_fork_parent(void)
{
    pthread_mutex_unlock(&zl_shim_lock);
}

/* BSD: kqueues are not inherited by fork(). Close each one's number in the child and drop its state. */
static void
zl_shim_after_fork_child(void)
{
    for (int i = 0; i < zl_shim_kqs_len; i++) {
        zl_shim_kq *k = zl_shim_kqs[i];
        if (k == NULL) {
            continue;
        }
        if (zl_shim_owns_number(k)) {
            close(k->epfd);
        }
        zl_shim_free(k);
        zl_shim_kqs[i] = NULL;
    }
    if (zl_shim_trigger_fd >= 0) {
        close(zl_shim_trigger_fd);
        zl_shim_trigger_fd = -1;
    }
    pthread_mutex_unlock(&zl_shim_lock);
}

static void
zl_shim_init(void)
{
    pthread_atfork(zl_shim_prepare_fork, zl_shim_after_fork_parent, zl_shim_after_fork_child);
}

__attribute__((destructor)) static void
zl_shim_release_all(void)
{
    for (int i = 0; i < zl_shim_kqs_len; i++) {
        if (zl_shim_kqs[i] != NULL) {
            zl_shim_free(zl_shim_kqs[i]);
        }
    }
    free(zl_shim_kqs);
    zl_shim_kqs = NULL;
    zl_shim_kqs_len = 0;
}

static int
zl_shim_table_put(zl_shim_kq *k)
{
    int fd = k->epfd;
    if (fd >= zl_shim_kqs_len) {
        int len = zl_shim_kqs_len ? zl_shim_kqs_len : 64;
        while (len <= fd) {
            len *= 2;
        }
        zl_shim_kq **grown = realloc(zl_shim_kqs, (size_t)len * sizeof(*grown));
        if (grown == NULL) {
            return ENOMEM;
        }
        memset(grown + zl_shim_kqs_len, 0, (size_t)(len - zl_shim_kqs_len) * sizeof(*grown));
        zl_shim_kqs = grown;
        zl_shim_kqs_len = len;
    }
    if (zl_shim_kqs[fd] != NULL) {
        zl_shim_free(zl_shim_kqs[fd]);   /* its owner closed it: the kernel just gave the number out again */
    }
    zl_shim_kqs[fd] = k;
    return 0;
}

static int
zl_shim_kqueue_locked(void)
{
    int err;
    if (zl_shim_trigger_fd < 0) {
        zl_shim_trigger_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (zl_shim_trigger_fd < 0) {
            return -errno;
        }
    }
    zl_shim_kq *k = calloc(1, sizeof(*k));
    if (k == NULL) {
        return -ENOMEM;
    }
    k->epfd = epoll_create1(0);       /* like kqueue(): not close-on-exec unless asked */
    if (k->epfd < 0) {
        err = errno;
        goto error;
    }
    k->tag = ZL_SHIM_TRIGGER_TAG | ++zl_shim_serial;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLET, .data.u64 = k->tag};
    if (epoll_ctl(k->epfd, EPOLL_CTL_ADD, zl_shim_trigger_fd, &ev) < 0) {
        err = errno;
        goto error;
    }
    err = zl_shim_table_put(k);
    if (err) {
        goto error;
    }
    return k->epfd;

error:
    if (k->epfd >= 0) {
        close(k->epfd);
    }
    free(k);
    return -err;
}

/* ---- the API ---- */

int
kqueue(void)
{
    pthread_once(&zl_shim_once, zl_shim_init);
    pthread_mutex_lock(&zl_shim_lock);
    int rc = zl_shim_kqueue_locked();
    pthread_mutex_unlock(&zl_shim_lock);
    if (rc < 0) {
        errno = -rc;
        return -1;
    }
    return rc;
}

/* The change list, then (if no change reported an error or receipt) the scan. Lock held. */
static int
zl_shim_kevent_locked(zl_shim_kq *k, const struct kevent *changes, int nchanges, struct kevent *events, int nevents,
                      const struct timespec *timeout)
{
    int count = 0;
    for (int i = 0; i < nchanges; i++) {
        struct kevent change = changes[i];
        change.flags &= (unsigned short)~(EV_ERROR | EV_EOF);   /* output-only flags are ignored on input */
        int err = zl_shim_change(k, &change);
        if (err == 0 && !(change.flags & EV_RECEIPT)) {
            continue;
        }
        if (count == nevents) {
            return -err;              /* no room to report it: kevent fails with it, later changes are skipped */
        }
        change.flags = EV_ERROR;
        change.data = err;
        events[count++] = change;
    }
    if (count > 0) {
        return count;
    }
    return zl_shim_scan(k, events, nevents, timeout);
}

int
kevent(int kq, const struct kevent *changelist, int nchanges, struct kevent *eventlist, int nevents,
       const struct timespec *timeout)
{
    int rc;
    pthread_mutex_lock(&zl_shim_lock);
    zl_shim_kq *k = kq >= 0 && kq < zl_shim_kqs_len ? zl_shim_kqs[kq] : NULL;
    if (k == NULL) {
        rc = -EBADF;
    } else if (nchanges < 0 || nevents < 0 || (nchanges > 0 && changelist == NULL) ||
               (nevents > 0 && eventlist == NULL)) {
        rc = -EINVAL;
    } else {
        rc = zl_shim_kevent_locked(k, changelist, nchanges, eventlist, nevents, timeout);
    }
    pthread_mutex_unlock(&zl_shim_lock);
    if (rc < 0) {
        errno = -rc;
        return -1;
    }
    return rc;
}
