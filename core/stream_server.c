/* core/stream_server.c — accepting in C: each readiness of a listening stream socket accepts up to `backlog`
 * connections (accept4, non-blocking, close-on-exec), calls the protocol factory and makes the transport in C
 * (through completions instead where the loop uses them: core/server_ring.c). */
#include "sock_addr.h"
#include "stream_server.h"
#include "transport_common.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* ------------------------------------------------------------------ watching */

static int acceptor_on_readable(PyObject *owner, int fd);

static int
acceptor_start(zl_acceptor *self)
{
    if (self->watching) {
        return 0;
    }
    if (*self->sock_fd != self->fd) {
        PyErr_SetString(PyExc_ValueError, "the listening socket is closed");
        return -1;
    }
    int ring = zl_server_ring_start(self);
    if (ring != 0) {
        self->watching = ring > 0;
        return ring > 0 ? 0 : -1;
    }
    if (zl_io_set_side(self->loop, self->fd, ZL_EV_READ, NULL, acceptor_on_readable, (PyObject *)self) < 0) {
        return -1;
    }
    self->watching = 1;
    return 0;
}

static void
acceptor_stop(zl_acceptor *self)
{
    if (self->watching) {
        self->watching = 0;
        if (self->ring) {
            zl_server_ring_stop(self);
        } else {
            zl_io_clear_owned_side(self->loop, self->fd, ZL_EV_READ, (PyObject *)self);
        }
    }
}

/* ------------------------------------------------------------------ one connection */

/* A Python hook returned res (a new reference, NULL when it raised): SystemExit and KeyboardInterrupt stop the loop
 * (-1), anything else is unraisable. */
static int
acceptor_hook_done(zl_acceptor *self, PyObject *res)
{
    if (res != NULL) {
        Py_DECREF(res);
        return 0;
    }
    if (zl_err_stops_loop()) {
        return -1;
    }
    PyErr_WriteUnraisable((PyObject *)self);
    return 0;
}

/* The protocol factory or the transport failed for a connection (already closed): the loop stops for SystemExit
 * and KeyboardInterrupt; anything else is reported in debug mode only, as asyncio does. */
static int
acceptor_connection_failed(zl_acceptor *self, PyObject *protocol)
{
    if (zl_err_stops_loop()) {
        return -1;
    }
    PyObject *exc = zl_err_fetch();
    if (!self->loop->debug) {
        Py_XDECREF(exc);
        return 0;
    }
    PyObject *res = PyObject_CallFunctionObjArgs(self->report, exc, protocol ? protocol : Py_None, Py_None, NULL);
    Py_XDECREF(exc);
    return acceptor_hook_done(self, res);
}

/* Whether conn still needs its own setsockopt(TCP_NODELAY). */
static int
acceptor_conn_needs_nodelay(zl_acceptor *self, int conn)
{
    if (self->nodelay == ZL_NODELAY_PROBE) {
        int on = 0;
        socklen_t len = sizeof(on);
        int inherited = getsockopt(conn, IPPROTO_TCP, TCP_NODELAY, &on, &len) == 0 && on;
        self->nodelay = inherited ? ZL_NODELAY_INHERITED : ZL_NODELAY_EACH;
    }
    return self->nodelay == ZL_NODELAY_EACH;
}

/* Protocol and transport for the accepted fd, in a copy of the serving context (asyncio runs each in its own
 * task, which copies it). The fd is closed when that fails. -1 only when the loop must stop. */
int
zl_acceptor_serve(zl_acceptor *self, int conn, const struct sockaddr *peer, socklen_t peer_len)
{
    PyObject *context = PyContext_Copy(self->context);
    if (context == NULL || PyContext_Enter(context) < 0) {
        Py_XDECREF(context);
        (void)close(conn);
        return acceptor_connection_failed(self, NULL);
    }
    PyObject *protocol = PyObject_CallNoArgs(self->protocol_factory);
    PyObject *transport = NULL;
    zl_sock_addrs *addrs = NULL;
    if (protocol != NULL) {
        addrs = zl_sock_addrs_new(conn, self->local_len ? (const struct sockaddr *)&self->local : NULL,
                                  self->local_len, peer, peer_len);
    }
    if (addrs != NULL) {
        Py_INCREF(context);   /* the transport's readiness callbacks run in it too */
        transport = zl_stream_accepted(self->loop, conn, addrs, acceptor_conn_needs_nodelay(self, conn), context,
                                       protocol, self->server);
    }
    int rc = 0;
    if (transport == NULL) {
        (void)close(conn);
        rc = acceptor_connection_failed(self, protocol);
    }
    Py_XDECREF(transport);
    Py_XDECREF(protocol);
    PyObject *exc = rc < 0 ? zl_err_fetch() : NULL;
    if (PyContext_Exit(context) < 0) {
        rc = acceptor_hook_done(self, NULL);
    }
    Py_DECREF(context);
    if (exc != NULL) {
        zl_err_restore(exc);
    }
    return rc;
}

/* accept() failed with error: on_error decides (out of fds: pause and retry later; else report). */
int
zl_acceptor_accept_failed(zl_acceptor *self, int error)
{
    errno = error;
    PyErr_SetFromErrno(PyExc_OSError);
    PyObject *exc = zl_err_fetch();
    PyObject *res = exc ? PyObject_CallOneArg(self->on_error, exc) : NULL;
    Py_XDECREF(exc);
    return acceptor_hook_done(self, res);
}

static int
acceptor_on_readable(PyObject *owner, int fd)
{
    zl_acceptor *self = (zl_acceptor *)owner;
    for (int i = 0; i < self->backlog && self->watching; i++) {
        if (*self->sock_fd != self->fd) {   /* closed behind the server's back: the number is not ours now */
            acceptor_stop(self);
            return zl_acceptor_accept_failed(self, EBADF);
        }
        struct sockaddr_storage peer;
        socklen_t peer_len = sizeof(peer);
        memset(&peer, 0, sizeof(peer));
        int conn;
        do {
            conn = accept4(fd, (struct sockaddr *)&peer, &peer_len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        } while (conn < 0 && errno == EINTR);
        if (conn < 0) {
            int error = errno;
            if (error == EAGAIN || error == EWOULDBLOCK || error == ECONNABORTED) {
                return 0;
            }
            return zl_acceptor_accept_failed(self, error);
        }
        if (zl_acceptor_serve(self, conn, (const struct sockaddr *)&peer, peer_len) < 0) {
            return -1;
        }
    }
    return 0;
}

/* ------------------------------------------------------------------ Python API */

static PyObject *
acceptor_py_start(zl_acceptor *self, PyObject *Py_UNUSED(ignored))
{
    if (acceptor_start(self) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
acceptor_py_stop(zl_acceptor *self, PyObject *Py_UNUSED(ignored))
{
    acceptor_stop(self);
    Py_RETURN_NONE;
}

static PyObject *
acceptor_repr(zl_acceptor *self)
{
    return PyUnicode_FromFormat("<zloop acceptor fd=%d %s>", self->fd, self->watching ? "accepting" : "paused");
}

static int
acceptor_traverse(zl_acceptor *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->loop);
    Py_VISIT(self->sock);
    Py_VISIT(self->protocol_factory);
    Py_VISIT(self->server);
    Py_VISIT(self->on_error);
    Py_VISIT(self->report);
    Py_VISIT(self->context);
    return 0;
}

static int
acceptor_clear(zl_acceptor *self)
{
    Py_CLEAR(self->sock);
    self->sock_fd = &self->fd;
    Py_CLEAR(self->protocol_factory);
    Py_CLEAR(self->server);
    Py_CLEAR(self->on_error);
    Py_CLEAR(self->report);
    Py_CLEAR(self->context);
    return 0;
}

static void
acceptor_dealloc(zl_acceptor *self)
{
    PyObject_GC_UnTrack(self);
    acceptor_clear(self);   /* the fd table holds a reference while watching: never deallocated then */
    Py_CLEAR(self->loop);
    PyTypeObject *type = Py_TYPE(self);
    type->tp_free((PyObject *)self);
    Py_DECREF(type);
}

static PyMethodDef acceptor_methods[] = {
    {"start", (PyCFunction)acceptor_py_start, METH_NOARGS, "Watch the listening socket and accept connections."},
    {"stop", (PyCFunction)acceptor_py_stop, METH_NOARGS, "Stop watching (the socket is left open)."},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot acceptor_slots[] = {
    {Py_tp_doc, "Accepts the connections of one listening socket of a zloop server, in C."},
    {Py_tp_dealloc, acceptor_dealloc},
    {Py_tp_traverse, acceptor_traverse},
    {Py_tp_clear, acceptor_clear},
    {Py_tp_repr, acceptor_repr},
    {Py_tp_methods, acceptor_methods},
    {0, NULL},
};

static PyType_Spec acceptor_spec = {
    .name = "zloop.Acceptor",
    .basicsize = sizeof(zl_acceptor),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .slots = acceptor_slots,
};

/* ------------------------------------------------------------------ the connections of a server */

/* A server's connections are found in the fd table, not kept in a set: a transport owns its fd until it closes,
 * and a closing one still waits for its writer until its queue drains (after that, abort() does nothing). */
static int
server_clients_add(zl_loop *loop, PyObject *clients, PyObject *owner, PyObject *server)
{
    if (owner == NULL || zl_stream_server_of(loop->state, owner) != server) {
        return 0;
    }
    int present = PySequence_Contains(clients, owner);
    return present != 0 ? (present < 0 ? -1 : 0) : PyList_Append(clients, owner);
}

PyObject *
zl_loop_server_clients(zl_loop *loop, PyObject *server)
{
    PyObject *clients = PyList_New(0);
    for (int fd = 0; clients != NULL && fd < loop->io.used; fd++) {
        zl_io_slot *slot = &loop->io.slots[fd];
        if (server_clients_add(loop, clients, slot->transport_owner, server) < 0 ||
            (slot->write.fn != NULL && server_clients_add(loop, clients, slot->write.owner, server) < 0)) {
            Py_CLEAR(clients);
        }
    }
    return clients;
}

PyObject *
zl_loop_fd_transport(zl_loop *loop, PyObject *fileobj)
{
    int fd = zl_fileobj_to_fd(fileobj);
    if (fd < 0) {
        return NULL;
    }
    return zl_ref_or_none(fd < loop->io.len ? loop->io.slots[fd].transport_owner : NULL);
}

/* ------------------------------------------------------------------ creation */

/* TCP over IPv4 or IPv6 (not MPTCP, not SCTP): what asyncio sets TCP_NODELAY on. */
static int
acceptor_is_tcp(int fd)
{
    int domain = 0, protocol = 0;
    socklen_t len = sizeof(int);
    if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) < 0 ||
        getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, &protocol, &len) < 0) {
        return 0;
    }
    return (domain == AF_INET || domain == AF_INET6) && protocol == IPPROTO_TCP;
}

static zl_accept_nodelay
acceptor_nodelay_for(int fd)
{
    if (!acceptor_is_tcp(fd)) {
        return ZL_NODELAY_NONE;
    }
    int one = 1;
    return setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) == 0 ? ZL_NODELAY_PROBE : ZL_NODELAY_EACH;
}

PyObject *
zl_loop_make_acceptor(zl_loop *loop, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"sock", "protocol_factory", "server", "backlog", "on_error", "report", NULL};
    PyObject *sock, *protocol_factory, *server, *on_error, *report;
    int backlog;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOOiOO:_make_acceptor", kwlist, &sock, &protocol_factory, &server,
                                     &backlog, &on_error, &report) ||
        zl_loop_check_closed(loop) < 0) {
        return NULL;
    }
    zl_state *state = loop->state;
    if (state->acceptor_type == NULL &&
        (state->acceptor_type = (PyTypeObject *)PyType_FromModuleAndSpec(loop->module, &acceptor_spec, NULL)) == NULL) {
        return NULL;
    }
    int fd = zl_fileobj_to_fd(sock);
    PyObject *context = fd < 0 ? NULL : PyContext_CopyCurrent();
    zl_acceptor *self = context ? PyObject_GC_New(zl_acceptor, state->acceptor_type) : NULL;
    if (self == NULL) {
        Py_XDECREF(context);
        return NULL;
    }
    self->loop = (zl_loop *)Py_NewRef(loop);
    self->sock = Py_NewRef(sock);
    self->sock_fd = zl_transport_sock_fd_field(state, sock, fd);
    if (self->sock_fd == NULL) {
        self->sock_fd = &self->fd;
    }
    self->protocol_factory = Py_NewRef(protocol_factory);
    self->server = Py_NewRef(server);
    self->on_error = Py_NewRef(on_error);
    self->report = Py_NewRef(report);
    self->context = context;
    self->fd = fd;
    self->backlog = backlog > 1 ? backlog : 1;
    self->nodelay = acceptor_nodelay_for(fd);
    self->watching = 0;
    self->ring = 0;
    self->ring_kept = 0;
    self->ring_armed = 0;
    self->local_len = zl_sock_addr_shared_local(fd, &self->local);
    PyObject_GC_Track(self);
    return (PyObject *)self;
}
