/* core/server_ring.c — accepting through completions (a backend with the completion contract, e.g. uring, with
 * ZLOOP_URING_COMPLETION=1): one multishot accept armed per served listening socket, re-armed when it ends,
 * cancelled by stop, each completion one connection served as stream_server.c serves an accept4's. */
#include "stream_ring.h"
#include "stream_server.h"

#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <unistd.h>

static uint64_t
server_ring_tag(zl_acceptor *self)
{
    return (uint64_t)(uintptr_t)self | ZL_RING_OP_ACCEPT;
}

/* Keep the acceptor alive exactly while an accept of it is armed. -1 (MemoryError) only when adding. */
static int
server_ring_keep(zl_acceptor *self)
{
    return zl_ring_users_keep(self->loop, (PyObject *)self, self->ring_armed > 0, &self->ring_kept);
}

static int
server_ring_arm(zl_acceptor *self)
{
    zl_loop *loop = self->loop;
    int rc = loop->ops->accept_start(loop->backend, self->fd, server_ring_tag(self));
    if (rc < 0) {
        errno = -rc;
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    self->ring_armed++;
    return server_ring_keep(self);
}

int
zl_server_ring_start(zl_acceptor *self)
{
    zl_loop *loop = self->loop;
    if (!loop->completion || loop->backend == NULL || loop->ops->accept_start == NULL) {
        return 0;
    }
    self->ring = 1;
    /* One still armed (stopped, its cancel's completion not come yet) is armed again when that comes. */
    if (self->ring_armed == 0 && server_ring_arm(self) < 0) {
        return -1;
    }
    return 1;
}

void
zl_server_ring_stop(zl_acceptor *self)
{
    zl_loop *loop = self->loop;
    if (self->ring_armed > 0 && loop->backend != NULL) {
        /* Submitted at once: the kernel lets go of the listening file before the server closes it. */
        (void)loop->ops->cancel(loop->backend, server_ring_tag(self));
    }
}

/* The peer's address, which a multishot accept does not give: getpeername. A connection already reset has none
 * left; it gets the family's empty address (accept4 would have given the address it came from). */
static socklen_t
server_ring_peer(zl_acceptor *self, int conn, struct sockaddr_storage *peer)
{
    socklen_t len = sizeof(*peer);
    memset(peer, 0, sizeof(*peer));
    if (getpeername(conn, (struct sockaddr *)peer, &len) == 0 && len <= sizeof(*peer)) {
        return len;
    }
    memset(peer, 0, sizeof(*peer));
    peer->ss_family = self->local.ss_family;   /* getsockname filled it, wildcard or not */
    return peer->ss_family == AF_INET    ? (socklen_t)sizeof(struct sockaddr_in)
           : peer->ss_family == AF_INET6 ? (socklen_t)sizeof(struct sockaddr_in6)
                                         : (socklen_t)sizeof(sa_family_t);
}

/* A connection the kernel accepted: served while the listening socket is open (a pause after EMFILE included: it
 * was accepted before), closed once the server closed it. */
static int
server_ring_accepted(zl_acceptor *self, int conn)
{
    if (*self->sock_fd != self->fd || self->protocol_factory == NULL) {
        (void)close(conn);
        if (self->watching) {          /* closed behind the server's back, as acceptor_on_readable finds it */
            self->watching = 0;
            zl_server_ring_stop(self);
            return zl_acceptor_accept_failed(self, EBADF);
        }
        return 0;
    }
    struct sockaddr_storage peer;
    socklen_t peer_len = server_ring_peer(self, conn, &peer);
    return zl_acceptor_serve(self, conn, (const struct sockaddr *)&peer, peer_len);
}

static int
server_ring_on_completion(zl_acceptor *self, int result)
{
    if (result >= 0) {
        return server_ring_accepted(self, result);
    }
    if (result == -ECANCELED || result == -EINTR || result == -ECONNABORTED || result == -EAGAIN ||
        !self->watching) {
        return 0;
    }
    return zl_acceptor_accept_failed(self, -result);   /* EMFILE: the server pauses (stop) and resumes later */
}

int
zl_server_ring_dispatch(zl_loop *loop, const zl_completion *c)
{
    zl_acceptor *self = (zl_acceptor *)(uintptr_t)(c->tag & ~(uint64_t)ZL_RING_OP_MASK);
    Py_INCREF(self);
    if (!(c->flags & ZL_COMPLETION_MORE)) {
        self->ring_armed--;
    }
    loop->in_io_callback = 1;
    int rc = server_ring_on_completion(self, c->result);
    loop->in_io_callback = 0;
    /* An accept that ended (an error, a full completion queue, a cancel raced by a start) while still serving. */
    if (rc == 0 && self->watching && self->ring_armed == 0 && loop->backend != NULL) {
        rc = server_ring_arm(self);
    }
    if (server_ring_keep(self) < 0) {
        rc = -1;
    }
    Py_DECREF(self);
    return rc;
}

int
zl_server_ring_forget(zl_loop *loop, PyObject *obj)
{
    if (loop->state->acceptor_type == NULL || Py_TYPE(obj) != loop->state->acceptor_type) {
        return 0;
    }
    zl_acceptor *self = (zl_acceptor *)obj;
    self->ring_armed = 0;
    self->ring_kept = 0;
    return 1;
}
