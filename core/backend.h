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

/* One finished operation of the optional completion contract (below). */
typedef struct zl_completion {
    uint64_t tag;                  /* what the core gave recv_start or send */
    int result;                    /* bytes (> 0), 0 (a recv: end of stream), an accepted fd (>= 0), or -errno
                                    * (-ECANCELED after cancel) */
    unsigned flags;                /* ZL_COMPLETION_MORE: a recv or accept stays armed, more completions follow */
    const char *data;              /* a recv's bytes (result of them); valid until the next poll */
    const void *name;              /* a recvmsg's sender address (a struct sockaddr), NULL otherwise; as data */
    unsigned name_len;             /* its length */
} zl_completion;

enum {
    ZL_COMPLETION_MORE = 1,
    ZL_COMPLETION_TRUNCATED = 2,   /* a recvmsg's datagram was larger than the buffer: data holds its start */
};

/* One datagram of a sendmsg_chain: its tag and the msghdr (name, iovec, no control data) the kernel reads. */
struct msghdr;
typedef struct zl_send_op {
    uint64_t tag;
    const struct msghdr *msg;
} zl_send_op;

/* The smallest tag the core may use: smaller ones are the backend's own. */
#define ZL_COMPLETION_MIN_TAG 16u

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

    /*
     * Optional completion contract, beside the readiness one (NULL in readiness backends; "uring" has it).
     * The core hands over operations on a socket it does not watch, tagged with a uint64 >= ZL_COMPLETION_MIN_TAG
     * of its choice, and learns their outcome from completions() after each poll:
     * - Operations are queued and submitted by the next poll (one system call carries them all and the wait); a
     *   poll returns when a completion is there, as it does for readiness or a wake().
     * - The core keeps the memory of a send alive and the tag meaningful until the send's completion (the core's
     *   tag names its transport, kept alive while one of its operations is in flight, so a completion never
     *   reaches a transport that is gone or a file that reused the number).
     * - At most one send per fd in flight (the core's rule: that keeps the byte order); a partial send completes
     *   with the count taken and the core sends the rest.
     * - A recv stays armed (completions flagged ZL_COMPLETION_MORE) until it ends: end of stream, an error, or
     *   cancel(); its data lies in the backend's buffers and stays valid until the next poll. The backend
     *   re-arms a recv that ran out of buffers itself.
     * - cancel() submits at once: once it returns the kernel holds no reference to the fd for that operation
     *   other than what completes with -ECANCELED, so closing the fd right after it sends the peer's FIN at once.
     * - accept_start() arms an accept of listening socket fd that stays armed (ZL_COMPLETION_MORE) until an
     *   error or cancel(): each completion is one connection, a new non-blocking, close-on-exec fd the core owns
     *   from the moment completions() hands it out (its peer address is the core's to ask: getpeername). An
     *   armed accept holds the listening file open: cancel() before closing it. Connections the core never got
     *   (accepted after the last poll) are closed by destroy().
     * - recvmsg_start() arms a receive of datagrams on a UDP socket (AF_INET or AF_INET6) that stays armed as a
     *   recv does: each completion is one datagram, result its length (0 for an empty one), data its bytes and
     *   name its sender's address, both valid until the next poll. A datagram is never cut short on UDP (a buffer
     *   holds 65,527 bytes, IPv6's largest; ZL_COMPLETION_TRUNCATED says otherwise). A socket error (an ICMP
     *   error such as -ECONNREFUSED) ends it, and so does an empty datagram (result 0, the kernel's rule) and
     *   -ENOBUFS when the buffers ran out: the core re-arms.
     * - sendmsg_chain() queues up to count SENDMSGs of datagram socket fd, one per op, hard-linked in the order
     *   given (each starts only once the one before it completed, so the kernel keeps their order even when one
     *   waits for room in a full send buffer) and contiguous in the submission queue (nothing else between them,
     *   never split by a submit). It returns how many it queued (at least 1: fewer when the queue has no room
     *   for all, the core sends the rest in a later chain) or -errno with none queued. Each op completes with
     *   its own tag: the bytes sent, or -errno; an op that failed breaks the chain and every later op of it
     *   completes with -ECANCELED, not sent. The core keeps each msghdr, its iovec, address and bytes alive
     *   until that op's completion, and has at most one chain of a socket in flight (order across chains).
     */
    int (*recv_start)(zl_backend *backend, int fd, uint64_t tag);
    int (*send)(zl_backend *backend, int fd, uint64_t tag, const void *data, size_t len);
    int (*cancel)(zl_backend *backend, uint64_t tag);
    /* The completions the last poll collected (it returns the count, possibly with no readiness); the array and
     * the recv data stay valid until the next poll. */
    int (*completions)(zl_backend *backend, const zl_completion **done);
    int (*accept_start)(zl_backend *backend, int fd, uint64_t tag);
    int (*recvmsg_start)(zl_backend *backend, int fd, uint64_t tag);
    int (*sendmsg_chain)(zl_backend *backend, int fd, const zl_send_op *ops, int count);
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
