/* backends/uv/backend_uv.c — the "uv" backend: one uv_loop_t per zl_backend, a uv_poll_t per watched fd (stopped
 * ones kept for reuse), a uv_async_t for wake() and a uv_timer_t (armed by a uv_prepare_t) for poll timeouts. Plain
 * C; owns the loop and every handle it makes. */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/epoll.h>
#endif

#include <uv.h>

#include "../../core/backend.h"

#define ZL_UV_FIRST_SLOTS 64
#define ZL_UV_DESTROY_RUNS 16          /* uv_run rounds destroy allows for close callbacks (one is enough) */
#define ZL_UV_SPARES_MAX 1024          /* stopped poll handles kept for reuse (160 B each) */

#if UV_VERSION_MAJOR != 1
#error "zl_uv_take_spare sets a stopped uv_poll_t's io_watcher.fd: checked against libuv 1.x only"
#endif

/* A poll handle; handle.data is its backend, uv_fileno() its fd. Freed by its close callback, so it may outlive
 * its slot. Nothing else per handle: it is what a watched fd costs besides the slot. */
typedef struct zl_uv_poll {
    uv_poll_t handle;                  /* first member: a uv_poll_t* is a zl_uv_poll* */
} zl_uv_poll;

/* What the backend knows about one fd number. */
typedef struct zl_uv_slot {
    zl_uv_poll *poll;                  /* NULL: not watched (an earlier handle may still be closing) */
    uint64_t fired_seq;                /* poll sequence number in which fired[fired_index] is this fd */
    int fired_index;
    unsigned char events;              /* ZL_EV_* the core asked for */
    unsigned char started;             /* handle running; 0 once the fd was found closed under us */
    unsigned char pending;             /* fd sits in pending_fds: libuv will epoll_ctl it at the next uv_run */
#ifndef __linux__
    dev_t dev;                         /* the file watched (fstat at watch): a number reused by another file */
    ino_t ino;                         /* after a close is told from it (zl_uv_check_file) */
#endif
} zl_uv_slot;

struct zl_backend {
    uv_loop_t loop;
    uv_async_t wake_async;
    uv_timer_t timer;
    uv_prepare_t arm_timer;            /* starts timer inside uv_run, after libuv ran its due timers */
    int loop_ready;                    /* which of the four are initialised, for destroy after a failed create */
    int async_ready;
    int timer_ready;
    int prepare_ready;
    uint64_t deadline;                 /* uv_hrtime() at which the timed uv_run in progress must end */
    /* slots and pending_fds have slots_len entries, fired grows to as many at the start of a poll (never in
     * watch(): the core may still be walking the last poll's result), so poll callbacks never need to allocate. */
    zl_uv_slot *slots;
    int *pending_fds;
    zl_fired *fired;
    int slots_len;
    int fired_cap;
    int pending_len;
    int fired_len;
    uint64_t poll_seq;
    int woken;
    zl_uv_poll **spares;               /* stopped handles, watching nothing, for the next watch (zl_uv_take_spare) */
    int spares_len;
    int spares_cap;
};

/* ---- fd slots ---- */

/* *array grown from old_len to len elements of elem bytes, the new ones zeroed when zero says so. A new block, not
 * realloc + memset: calloc's fresh pages stay untouched until used, so the slots of fd numbers never watched (a
 * table doubled past 16,384 fds holds 32,768) cost no memory. */
static int
zl_uv_grow(void **array, size_t elem, int old_len, int len, int zero)
{
    char *grown = zero ? calloc((size_t)len, elem) : malloc(elem * (size_t)len);
    if (grown == NULL) {
        return -ENOMEM;
    }
    if (old_len > 0) {
        memcpy(grown, *array, elem * (size_t)old_len);
    }
    free(*array);
    *array = grown;
    return 0;
}

/* Make fd a valid index of slots and pending_fds. */
static int
zl_uv_reserve(zl_backend *b, int fd)
{
    if (fd < b->slots_len) {
        return 0;
    }
    int len = b->slots_len ? b->slots_len : ZL_UV_FIRST_SLOTS;
    while (len <= fd) {
        if (len > INT32_MAX / 2) {
            return -ENOMEM;
        }
        len *= 2;
    }
    /* Each array keeps its old contents if the other fails; slots_len only moves when both grew. */
    if (zl_uv_grow((void **)&b->slots, sizeof(*b->slots), b->slots_len, len, 1) < 0 ||
        zl_uv_grow((void **)&b->pending_fds, sizeof(*b->pending_fds), b->slots_len, len, 0) < 0) {
        return -ENOMEM;
    }
    b->slots_len = len;
    return 0;
}

static zl_uv_slot *
zl_uv_slot_of(zl_backend *b, int fd)
{
    if (fd < 0 || fd >= b->slots_len) {
        return NULL;
    }
    return &b->slots[fd];
}

/* Remember that libuv will (re-)register fd with epoll_ctl at its next uv_run; see zl_uv_prepare_pending. */
static void
zl_uv_mark_pending(zl_backend *b, int fd)
{
    if (!b->slots[fd].pending) {
        b->slots[fd].pending = 1;
        b->pending_fds[b->pending_len++] = fd;
    }
}

/* ---- readiness callbacks ---- */

static int
zl_uv_mask_of(int events)
{
    int mask = 0;
    if (events & ZL_EV_READ) {
        mask |= UV_READABLE;
    }
    if (events & ZL_EV_WRITE) {
        mask |= UV_WRITABLE;
    }
    return mask;
}

/* Add events for fd to this poll's fired array: one entry per fd, later events OR-ed in. */
static void
zl_uv_record(zl_backend *b, zl_uv_slot *slot, int fd, int events)
{
    if (slot->fired_seq == b->poll_seq) {
        b->fired[slot->fired_index].events |= events;
        return;
    }
    slot->fired_seq = b->poll_seq;
    slot->fired_index = b->fired_len;
    b->fired[b->fired_len].fd = fd;
    b->fired[b->fired_len].events = events;
    b->fired_len++;
}

static void zl_uv_on_poll(uv_poll_t *handle, int status, int uv_events);

/* On POLLERR libuv stops the handle and passes an error status; restart it so the fd stays level-triggered. */
static int zl_uv_register_file(zl_backend *b, int fd, zl_uv_slot *slot);

static void
zl_uv_restart_after_error(zl_backend *b, zl_uv_slot *slot, int fd)
{
    if (uv_poll_start(&slot->poll->handle, zl_uv_mask_of(slot->events), zl_uv_on_poll) == 0 &&
        zl_uv_register_file(b, fd, slot) == 0) {
        zl_uv_mark_pending(b, fd);
    } else {
        uv_poll_stop(&slot->poll->handle);
        slot->started = 0;
    }
}

static void
zl_uv_on_poll(uv_poll_t *handle, int status, int uv_events)
{
    zl_uv_poll *poll = (zl_uv_poll *)handle;
    zl_backend *b = handle->data;
    uv_os_fd_t fd;
    if (uv_fileno((uv_handle_t *)handle, &fd) < 0) {
        return;                        /* closing: replaced or unwatched */
    }
    zl_uv_slot *slot = &b->slots[fd];
    if (slot->poll != poll) {
        return;                        /* a replaced handle; it is already closing */
    }
    int events = 0;
    if (status < 0 || (uv_events & UV_DISCONNECT)) {
        events = slot->events;         /* error or hang-up: report what the fd is watched for */
    }
    if (uv_events & UV_READABLE) {
        events |= ZL_EV_READ;
    }
    if (uv_events & UV_WRITABLE) {
        events |= ZL_EV_WRITE;
    }
    if (status < 0) {
        zl_uv_restart_after_error(b, slot, fd);
    }
    zl_uv_record(b, slot, fd, events);
}

static void
zl_uv_on_wake(uv_async_t *async)
{
    ((zl_backend *)async->data)->woken = 1;
}

static void
zl_uv_on_timer(uv_timer_t *timer)
{
    (void)timer;                       /* only there to end uv_run(UV_RUN_ONCE) */
}

/*
 * Runs inside uv_run after libuv ran its due timers and just before it computes the epoll timeout, so the timer
 * started here is still pending when that timeout is taken from it. Started before uv_run instead, it could fall
 * due (the millisecond clock ticked, the thread was preempted) and run at the top of uv_run (libuv <= 1.44),
 * leaving no timer: epoll_wait(-1) then blocked until an fd or a wake() came, maybe forever.
 */
static void
zl_uv_on_prepare(uv_prepare_t *prepare)
{
    zl_backend *b = prepare->data;
    uint64_t now = uv_hrtime();
    uint64_t left_ns = b->deadline > now ? b->deadline - now : 0;
    uint64_t timeout_ms = left_ns / 1000000 + (left_ns % 1000000 != 0);   /* round up */
    uv_update_time(&b->loop);          /* the timer counts from now, not from an older cached loop time */
    uv_timer_start(&b->timer, zl_uv_on_timer, timeout_ms, 0);
}

static void
zl_uv_on_poll_closed(uv_handle_t *handle)
{
    free(handle);                      /* the zl_uv_poll it starts */
}

/* ---- create / destroy ---- */

/* Close every handle and let libuv run the close callbacks. */
static void
zl_uv_close_all(zl_backend *b)
{
    for (int fd = 0; fd < b->slots_len; fd++) {
        if (b->slots[fd].poll != NULL) {
            uv_close((uv_handle_t *)&b->slots[fd].poll->handle, zl_uv_on_poll_closed);
            b->slots[fd].poll = NULL;
        }
    }
    for (int i = 0; i < b->spares_len; i++) {
        uv_close((uv_handle_t *)&b->spares[i]->handle, zl_uv_on_poll_closed);
    }
    b->spares_len = 0;
    if (b->async_ready) {
        uv_close((uv_handle_t *)&b->wake_async, NULL);
        b->async_ready = 0;
    }
    if (b->timer_ready) {
        uv_close((uv_handle_t *)&b->timer, NULL);
        b->timer_ready = 0;
    }
    if (b->prepare_ready) {
        uv_close((uv_handle_t *)&b->arm_timer, NULL);
        b->prepare_ready = 0;
    }
    /* Closed handles are off libuv's watcher queue, so this run never epoll_ctl()s a user fd. */
    for (int i = 0; i < ZL_UV_DESTROY_RUNS && uv_loop_alive(&b->loop); i++) {
        uv_run(&b->loop, UV_RUN_NOWAIT);
    }
}

static void
zl_uv_destroy(zl_backend *b)
{
    if (b == NULL) {
        return;
    }
    if (b->loop_ready) {
        zl_uv_close_all(b);
        (void)uv_loop_close(&b->loop);  /* 0 once every handle is closed */
    }
    free(b->slots);
    free(b->pending_fds);
    free(b->fired);
    free(b->spares);
    free(b);
}

static zl_backend *
zl_uv_create(void)
{
    zl_backend *b = calloc(1, sizeof(*b));
    if (b == NULL) {
        return NULL;
    }
    int rc = uv_loop_init(&b->loop);
    if (rc < 0) {
        goto error;
    }
    b->loop_ready = 1;
    /* The async handle stays active and referenced: it keeps uv_run(UV_RUN_ONCE) blocking when nothing is watched. */
    rc = uv_async_init(&b->loop, &b->wake_async, zl_uv_on_wake);
    if (rc < 0) {
        goto error;
    }
    b->wake_async.data = b;
    b->async_ready = 1;
    rc = uv_timer_init(&b->loop, &b->timer);
    if (rc < 0) {
        goto error;
    }
    b->timer_ready = 1;
    rc = uv_prepare_init(&b->loop, &b->arm_timer);
    if (rc < 0) {
        goto error;
    }
    b->arm_timer.data = b;
    b->prepare_ready = 1;
    rc = zl_uv_reserve(b, ZL_UV_FIRST_SLOTS - 1);
    if (rc < 0) {
        goto error;
    }
    b->poll_seq = 1;                   /* slots start at fired_seq 0: never "already fired" */
    return b;

error:
    zl_uv_destroy(b);
    errno = -rc;
    return NULL;
}

/* ---- watch / modify / unwatch ---- */

/*
 * libuv registers a started handle with epoll_ctl by number at the start of its next uv_run (and abort()s if that
 * fails). A watch must follow the file it was made for, as an epoll registration does: when that file was closed
 * and the number reused, libuv would register (and report) the new file, which asyncio's selector never does.
 * So the file is registered in libuv's epoll set by us, with no events, as soon as its handle is started
 * (zl_uv_register_file: uv_poll_start itself deletes any registration of the number first), and libuv's own ADD
 * then retries EEXIST as a MOD of that registration. Before each uv_run, and in modify(), a second ADD checks it:
 * - EEXIST: the file registered is still there: the same file;
 * - success: no registration of this file: the watched file was closed (its registration died with it) and the
 *   number names another now; that one is deleted again: -ENOENT;
 * - an error: closed (-EBADF) or a file epoll refuses (-EPERM).
 * A failing check means a dead watch: the caller stops its handle, so it never fires. No fstat per watch: the
 * registration is the file's identity. (Off Linux, where libuv's kqueue cannot be probed so, fstat's device and
 * inode taken at watch are compared.)
 */
#ifdef __linux__
static int
zl_uv_epoll_add_probe(zl_backend *b, int fd)
{
    struct epoll_event ev;
    memset(&ev, 0, sizeof(ev));
    ev.data.fd = fd;
    return epoll_ctl(uv_backend_fd(&b->loop), EPOLL_CTL_ADD, fd, &ev) < 0 ? -errno : 0;
}
#else
/* 1 if fd still names the file slot watched, 0 if another, -errno if fstat fails (closed). */
static int
zl_uv_same_file(int fd, const zl_uv_slot *slot)
{
    struct stat st;
    if (fstat(fd, &st) < 0) {
        return -errno;
    }
    return st.st_dev == slot->dev && st.st_ino == slot->ino;
}
#endif

/* Register the file fd names now as the one its just-started handle watches; 0 or -errno. */
static int
zl_uv_register_file(zl_backend *b, int fd, zl_uv_slot *slot)
{
#ifdef __linux__
    (void)slot;
    int rc = zl_uv_epoll_add_probe(b, fd);
    return rc == -EEXIST ? 0 : rc;
#else
    (void)b;
    struct stat st;
    if (fstat(fd, &st) < 0) {
        return -errno;
    }
    slot->dev = st.st_dev;
    slot->ino = st.st_ino;
    return 0;
#endif
}

static int
zl_uv_check_file(zl_backend *b, int fd, const zl_uv_slot *slot)
{
#ifdef __linux__
    (void)slot;
    int rc = zl_uv_epoll_add_probe(b, fd);
    if (rc < 0) {
        return rc == -EEXIST ? 0 : rc;
    }
    struct epoll_event ev;
    memset(&ev, 0, sizeof(ev));
    (void)epoll_ctl(uv_backend_fd(&b->loop), EPOLL_CTL_DEL, fd, &ev);
    return -ENOENT;
#else
    (void)b;
    int same = zl_uv_same_file(fd, slot);
    return same == 1 ? 0 : same < 0 ? same : -ENOENT;
#endif
}

static void
zl_uv_prepare_pending(zl_backend *b)
{
    for (int i = 0; i < b->pending_len; i++) {
        int fd = b->pending_fds[i];
        zl_uv_slot *slot = &b->slots[fd];
        slot->pending = 0;
        if (slot->poll != NULL && slot->started && zl_uv_check_file(b, fd, slot) < 0) {
            uv_poll_stop(&slot->poll->handle);
            slot->started = 0;         /* dead, still watched for the core: modify fails, unwatch forgets it */
        }
    }
    b->pending_len = 0;
}

/* ---- spare handles ----
 *
 * A new uv_poll_t costs uv_poll_init's probe of the fd (epoll_ctl add and delete) and its ioctl(FIONBIO), and us an
 * fcntl pair to undo that ioctl: four system calls. A handle whose fd is unwatched is stopped instead and kept; the
 * next watch takes it and only its number changes. A stopped handle is off libuv's watcher queue and out of its fd
 * table (uv_poll_stop), so io_watcher.fd is the one thing tying it to an fd; uv_poll_start then works from that
 * number as after uv_poll_init, which only checks the fd and stores it there (libuv 1.x, unix).
 */

/* A stopped handle for fd, or NULL when none is kept. */
static zl_uv_poll *
zl_uv_take_spare(zl_backend *b, int fd)
{
#ifndef __linux__
    return NULL;                       /* only the epoll registration checks an fd that skipped uv_poll_init */
#endif
    if (b->spares_len == 0) {
        return NULL;
    }
    zl_uv_poll *poll = b->spares[--b->spares_len];
    poll->handle.io_watcher.fd = fd;
    return poll;
}

/* Stop poll and keep it for a later watch; closed (libuv frees it in a later uv_run) when enough are kept. */
static void
zl_uv_retire(zl_backend *b, zl_uv_poll *poll)
{
    if (b->spares_len == b->spares_cap && b->spares_cap < ZL_UV_SPARES_MAX) {
        int cap = b->spares_cap ? b->spares_cap * 2 : 16;
        zl_uv_poll **spares = realloc(b->spares, (size_t)cap * sizeof(*spares));
        if (spares != NULL) {
            b->spares = spares;
            b->spares_cap = cap;
        }
    }
    if (b->spares_len < b->spares_cap) {
        uv_poll_stop(&poll->handle);   /* ignores an fd that is already closed */
        b->spares[b->spares_len++] = poll;
        return;
    }
    uv_close((uv_handle_t *)&poll->handle, zl_uv_on_poll_closed);  /* also stops it */
}

/* Forget the handle of a watched fd. Keeps slot->pending (the list entry). */
static void
zl_uv_drop(zl_backend *b, zl_uv_slot *slot)
{
    zl_uv_retire(b, slot->poll);
    slot->poll = NULL;
    slot->events = 0;
    slot->started = 0;
}

/*
 * watch() found a handle for fd already: -EEXIST if it still watches this very file, 0 if it is stale (the fd
 * was closed, and maybe its number reused, without an unwatch). libuv's epoll set tells: it holds (file, fd)
 * pairs, and a closed file drops out. Until libuv has registered the handle (pending) we cannot tell, and say
 * -EEXIST.
 */
static int
zl_uv_check_rewatch(zl_backend *b, int fd, const zl_uv_slot *slot)
{
    if (!slot->started) {
        return 0;
    }
    if (slot->pending) {
        return -EEXIST;
    }
#ifdef __linux__
    struct epoll_event ev;
    memset(&ev, 0, sizeof(ev));
    ev.data.fd = fd;
    if (epoll_ctl(uv_backend_fd(&b->loop), EPOLL_CTL_ADD, fd, &ev) == 0) {
        return 0;                      /* stale; dropping the old handle DELs this probe registration again */
    }
    return errno == EEXIST ? -EEXIST : -errno;
#else
    (void)b;
    (void)fd;
    return -EEXIST;
#endif
}

/* A new handle for fd, in *out. uv_poll_init sets O_NONBLOCK on the fd; the contract says a backend never changes a
 * watched fd's flags, so they are put back. */
static int
zl_uv_poll_new(zl_backend *b, int fd, zl_uv_poll **out)
{
    int fd_flags = fcntl(fd, F_GETFL);
    if (fd_flags < 0) {
        return -errno;
    }
    zl_uv_poll *poll = malloc(sizeof(*poll));
    if (poll == NULL) {
        return -ENOMEM;
    }
    int rc = uv_poll_init(&b->loop, &poll->handle, fd);
    if (!(fd_flags & O_NONBLOCK)) {
        (void)fcntl(fd, F_SETFL, fd_flags);
    }
    if (rc < 0) {
        free(poll);                    /* uv_poll_init fails before it links the handle into the loop */
        return rc;
    }
    poll->handle.data = b;             /* libuv never touches it */
    *out = poll;
    return 0;
}

static int
zl_uv_watch(zl_backend *b, int fd, int events)
{
    if (fd < 0 || (fd >= b->slots_len && fcntl(fd, F_GETFD) < 0)) {
        return -EBADF;                 /* no table grows for a closed fd */
    }
    int rc = zl_uv_reserve(b, fd);
    if (rc < 0) {
        return rc;
    }
    zl_uv_slot *slot = &b->slots[fd];
    if (slot->poll != NULL) {
        rc = zl_uv_check_rewatch(b, fd, slot);
        if (rc < 0) {
            return rc;
        }
        zl_uv_drop(b, slot);           /* stale: stopping it frees the fd number for another handle */
    }
    zl_uv_poll *poll = zl_uv_take_spare(b, fd);
    if (poll == NULL && (rc = zl_uv_poll_new(b, fd, &poll)) < 0) {
        return rc;
    }
    /* A spare skipped uv_poll_init's check of the fd: registering the file checks it (-EBADF, -EPERM) */
    rc = uv_poll_start(&poll->handle, zl_uv_mask_of(events), zl_uv_on_poll);
    if (rc == 0) {
        rc = zl_uv_register_file(b, fd, slot);
    }
    if (rc < 0) {
        zl_uv_retire(b, poll);
        return rc;
    }
    slot->poll = poll;
    slot->events = (unsigned char)events;
    slot->started = 1;
    zl_uv_mark_pending(b, fd);
    return 0;
}

static int
zl_uv_modify(zl_backend *b, int fd, int old_events, int events)
{
    (void)old_events;
    zl_uv_slot *slot = zl_uv_slot_of(b, fd);
    if (slot == NULL || slot->poll == NULL) {
        return -ENOENT;
    }
    int rc = zl_uv_check_file(b, fd, slot);   /* a dead watch fails at once, as epoll's EPOLL_CTL_MOD does */
    if (rc < 0) {
        return rc;
    }
    rc = uv_poll_start(&slot->poll->handle, zl_uv_mask_of(events), zl_uv_on_poll);
    if (rc == 0) {
        rc = zl_uv_register_file(b, fd, slot);   /* uv_poll_start deleted it: the same file, checked above */
    }
    if (rc < 0) {
        return rc;
    }
    slot->events = (unsigned char)events;
    slot->started = 1;
    zl_uv_mark_pending(b, fd);
    return 0;
}

static int
zl_uv_unwatch(zl_backend *b, int fd, int old_events)
{
    (void)old_events;
    zl_uv_slot *slot = zl_uv_slot_of(b, fd);
    if (slot != NULL && slot->poll != NULL) {
        zl_uv_drop(b, slot);
    }
    return 0;
}

/* ---- poll / wake / fork ---- */

/* One uv_run: timeout_ns 0 does not block, -1 blocks until a callback ran, else a timer ends the wait by
 * b->deadline (zl_uv_on_prepare starts it). */
static void
zl_uv_run_once(zl_backend *b, int64_t timeout_ns)
{
    if (timeout_ns == 0) {
        uv_run(&b->loop, UV_RUN_NOWAIT);
        return;
    }
    if (timeout_ns < 0) {
        uv_run(&b->loop, UV_RUN_ONCE);
        return;
    }
    uv_prepare_start(&b->arm_timer, zl_uv_on_prepare);
    uv_run(&b->loop, UV_RUN_ONCE);
    uv_prepare_stop(&b->arm_timer);
    uv_timer_stop(&b->timer);
}

/*
 * uv_run(UV_RUN_ONCE) can end with nothing to report: it does not block while handles are closing or after a
 * callback that recorded nothing, and its timers go by a cached (maybe coarse) millisecond clock. So run it again
 * until something fired, a wake() came, or the deadline (CLOCK_MONOTONIC via uv_hrtime) has really passed.
 * libuv retries EINTR itself, so this poll never returns -EINTR.
 */
static int
zl_uv_poll_fds(zl_backend *b, int64_t timeout_ns, const zl_fired **fired)
{
    if (b->fired_cap < b->slots_len) {   /* the last poll's result is no longer in use */
        if (zl_uv_grow((void **)&b->fired, sizeof(*b->fired), 0, b->slots_len, 0) < 0) {
            return -ENOMEM;
        }
        b->fired_cap = b->slots_len;
    }
    *fired = b->fired;
    b->poll_seq++;
    b->fired_len = 0;
    b->woken = 0;
    if (timeout_ns > 0) {
        uint64_t now = uv_hrtime();
        b->deadline = (uint64_t)timeout_ns > UINT64_MAX - now ? UINT64_MAX : now + (uint64_t)timeout_ns;
    }
    for (;;) {
        zl_uv_prepare_pending(b);
        zl_uv_run_once(b, timeout_ns);
        if (b->fired_len > 0 || b->woken || timeout_ns == 0) {
            break;
        }
        if (timeout_ns > 0 && uv_hrtime() >= b->deadline) {
            break;
        }
    }
    return b->fired_len;
}

static int
zl_uv_wake(zl_backend *b)
{
    return uv_async_send(&b->wake_async);    /* async-signal-safe; a no-op while a wake is still pending */
}

static int
zl_uv_reinit_after_fork(zl_backend *b)
{
    /* New epoll fd and wake-up eventfd; libuv queues every started handle for re-registration. */
    int rc = uv_loop_fork(&b->loop);
    if (rc < 0) {
        return rc;
    }
    for (int fd = 0; fd < b->slots_len; fd++) {
        zl_uv_slot *slot = &b->slots[fd];
        if (slot->poll != NULL && slot->started) {
#ifdef __linux__
            /* The new epoll set: register each file again; one the child closed fails and its watch is dead. */
            if (zl_uv_register_file(b, fd, slot) < 0) {
                uv_poll_stop(&slot->poll->handle);
                slot->started = 0;
                continue;
            }
#endif
            zl_uv_mark_pending(b, fd);
        }
    }
    return 0;
}

const zl_backend_ops zl_backend_uv = {
    .name = "uv",
    .features = 0,                     /* millisecond timer: timeouts are rounded up to whole ms */
    .create = zl_uv_create,
    .destroy = zl_uv_destroy,
    .watch = zl_uv_watch,
    .modify = zl_uv_modify,
    .unwatch = zl_uv_unwatch,
    .poll = zl_uv_poll_fds,
    .wake = zl_uv_wake,
    .reinit_after_fork = zl_uv_reinit_after_fork,
};
