/* core/backend.h — the one interface between zloop's core and an OS event backend.
 * A backend is a const table of plain-C functions (zl_backend_ops); the core never calls epoll, libuv or libevent itself. */
#ifndef ZL_BACKEND_H
#define ZL_BACKEND_H

#include <stddef.h>
#include <stdint.h>

/* Readiness bits, used both for what the core wants and what the backend reports. */
enum {
    ZL_EV_READ = 1,
    ZL_EV_WRITE = 2,
};

/* Feature flags a backend states about itself. */
enum {
    ZL_BACKEND_F_NS_TIMEOUT = 1,   /* poll honours timeouts finer than a millisecond */
    ZL_BACKEND_F_EDGE = 2,         /* readiness is edge-triggered (none of ours are; level is the contract) */
};

/* One ready descriptor, as poll reports it. */
typedef struct zl_fired {
    int fd;
    int events;                    /* ZL_EV_READ | ZL_EV_WRITE */
} zl_fired;

typedef struct zl_backend zl_backend;   /* a backend's private per-loop state */

/*
 * Contract (every backend, every function):
 * - One zl_backend belongs to one loop. Only wake() may be called from another thread (or a signal handler).
 * - The backend never owns, closes or changes the flags of a watched fd; the caller does. It owns only what
 *   it creates itself (an epoll fd, a uv_loop_t, an event_base, its wake-up eventfd) and releases it in destroy.
 * - Readiness is level-triggered: an fd that stays readable is reported by every poll until it is drained
 *   or unwatched.
 * - watch/modify/unwatch record interest; a backend may apply it at once or just before it blocks.
 * - Functions returning int give 0 (or a count) on success and -errno on failure, and change nothing on failure.
 * - poll() runs without the Python GIL: it must not call back into the core. It fills an array it owns with at
 *   most one entry per fd and hands it out through *fired; the array stays valid until the next poll or destroy.
 *   Error and hang-up conditions are reported as the events the fd was watched for (the caller then finds the
 *   error in recv/send). A backend may report an event the fd is no longer watched for; the core filters.
 */
typedef struct zl_backend_ops {
    const char *name;              /* "native", "uv", "event", "uring" */
    unsigned features;             /* ZL_BACKEND_F_* */

    /* New backend state, or NULL with errno set. */
    zl_backend *(*create)(void);

    /* Release everything create() and later calls made. Watched fds are left open. */
    void (*destroy)(zl_backend *backend);

    /* Start watching an fd that is not watched yet; events is non-zero. A watch follows the open file, not the
     * number: once the file is closed it never reports readiness of another file given the same number.
     * -EEXIST if that same open file is
     * watched already; a stale watch of a number that was closed and reused is replaced. An fd the OS
     * cannot poll (a regular file under epoll) gives that OS error, e.g. -EPERM; a closed fd gives -EBADF. */
    int (*watch)(zl_backend *backend, int fd, int events);

    /* Change the event set of a watched fd from old_events to events (both non-zero, different). A watch whose
     * file was closed is dead and fails: -ENOENT if the number names another file now (the new file is never
     * watched through it), -EBADF if it is closed; the caller then unwatches it. */
    int (*modify)(zl_backend *backend, int fd, int old_events, int events);

    /* Stop watching an fd. The fd may already be closed: that is not an error and still forgets it. */
    int (*unwatch)(zl_backend *backend, int fd, int old_events);

    /* Wait up to timeout_ns nanoseconds (-1: no limit, 0: do not block) for readiness or a wake().
     * A timeout is rounded up to the backend's resolution, never down. Returns how many entries *fired holds
     * (0 after a timeout or a wake), or -errno; -EINTR when a signal interrupted the wait. */
    int (*poll)(zl_backend *backend, int64_t timeout_ns, const zl_fired **fired);

    /* From any thread: make the poll in progress, or the next one, return promptly. Cheap when repeated. */
    int (*wake)(zl_backend *backend);

    /* In a child after fork(), before any other call: stop sharing kernel state with the parent and keep every
     * watched fd watched with the same events. */
    int (*reinit_after_fork)(zl_backend *backend);
} zl_backend_ops;

/* The compiled-in backends, NULL-terminated, in preference order (core/backend_registry.c). */
extern const zl_backend_ops *const zl_backend_table[];

/* The backend called name, or NULL if it was not compiled in. */
const zl_backend_ops *zl_backend_find(const char *name);

/* The name chosen by ./configure --with-backend (or the first compiled in). */
const char *zl_backend_default_name(void);

/* Each backend defines its table in its own directory. */
extern const zl_backend_ops zl_backend_native;
extern const zl_backend_ops zl_backend_uv;
extern const zl_backend_ops zl_backend_event;
extern const zl_backend_ops zl_backend_uring;

/* Open the first backend of spec (a name, or names separated by commas: "uring,native") that can be created.
 * On success sets *ops and returns the new state. On failure returns NULL with errno set, a message in why naming
 * each refusal (e.g. why io_uring_setup was refused), and *ops NULL when no name of spec is compiled in. */
zl_backend *zl_backend_open(const char *spec, const zl_backend_ops **ops, char *why, size_t why_len);

#endif /* ZL_BACKEND_H */
