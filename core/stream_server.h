/* core/stream_server.h — the C acceptor of a listening stream socket (stream_server.c) as its two ways of
 * accepting share it: on readiness (accept4 there) and through completions (core/server_ring.c). */
#ifndef ZL_STREAM_SERVER_H
#define ZL_STREAM_SERVER_H

#include "transport_common.h"

#include <sys/socket.h>

/* How accepted connections get TCP_NODELAY, which asyncio sets on each. Linux copies the listening socket's
 * TCP_NODELAY to the sockets it accepts, so it is set once on the listener and checked on the first connection:
 * one system call per connection saved where that holds, a setsockopt per connection where it does not. */
typedef enum zl_accept_nodelay {
    ZL_NODELAY_NONE,                 /* not TCP */
    ZL_NODELAY_PROBE,                /* set on the listener; the next connection tells whether it was inherited */
    ZL_NODELAY_INHERITED,            /* connections arrive with it */
    ZL_NODELAY_EACH,                 /* set on each connection */
} zl_accept_nodelay;

/* One listening socket being served (loop._make_acceptor): the owner of its fd's reader in the fd table, or of
 * the accept armed in the ring (kept alive meanwhile in loop->ring_users). */
typedef struct zl_acceptor {
    PyObject_HEAD
    zl_loop *loop;
    PyObject *sock;                  /* the listening socket object */
    const int *sock_fd;              /* where it keeps its fd (see zl_transport_sock_gone) */
    PyObject *protocol_factory;
    PyObject *server;                /* zloop's Server the connections report to, or None */
    PyObject *on_error;              /* on_error(exc): accept() failed (out of fds: the Server pauses us) */
    PyObject *report;                /* report(exc, protocol, transport): making a connection failed (debug) */
    PyObject *context;               /* the context serving started in: each connection runs in a copy of it */
    int fd;
    int backlog;                     /* at most this many connections per readiness */
    zl_accept_nodelay nodelay;       /* TCP: each connection gets TCP_NODELAY, as asyncio sets it */
    int watching;
    unsigned char ring;              /* accepting through the backend's completions (core/server_ring.c) */
    unsigned char ring_kept;         /* in loop->ring_users while an accept is armed */
    int ring_armed;                  /* accepts armed in the kernel whose last completion has not come */
    socklen_t local_len;             /* every connection's own address, when the socket listens on one (else 0) */
    struct sockaddr_storage local;
} zl_acceptor;

/* Protocol and transport for the accepted fd conn (closed when that fails). -1 only when the loop must stop. */
int zl_acceptor_serve(zl_acceptor *self, int conn, const struct sockaddr *peer, socklen_t peer_len);
/* accept() failed with error: the server's on_error decides (out of fds: pause). -1 only when the loop must stop. */
int zl_acceptor_accept_failed(zl_acceptor *self, int error);

/* The completion side (server_ring.c): start gives 1 when it accepts through completions, 0 when the loop
 * accepts on readiness, -1 with an exception; stop cancels the armed accept. */
int zl_server_ring_start(zl_acceptor *self);
void zl_server_ring_stop(zl_acceptor *self);
/* One accept completion of a poll (its tag's operation is ZL_RING_OP_ACCEPT). */
int zl_server_ring_dispatch(zl_loop *loop, const zl_completion *c);
/* The ring is gone: nothing is armed; 1 when obj was an acceptor (taken out of loop->ring_users by the caller). */
int zl_server_ring_forget(zl_loop *loop, PyObject *obj);

#endif /* ZL_STREAM_SERVER_H */
