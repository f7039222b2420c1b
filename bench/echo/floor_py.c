/* bench/echo/floor_py.c — the echo benchmark's Python floor: the bare C epoll server of floor_server.c inside a
 * Python process, calling server.py's own protocol objects; the least any Python event loop can cost per request. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define READ_SIZE (256 * 1024) /* as floor_server.c and the loops' transports */
#define MAX_EVENTS 64

/* What the protocol's connection_made() receives: write() sends at once, get_extra_info() knows nothing. */
typedef struct {
    PyObject_HEAD
    int fd;
    PyObject *protocol;
} floor_connection;

static char read_buffer[READ_SIZE];
static PyObject *name_data_received, *name_get_buffer, *name_buffer_updated, *minus_one;

/* Send all of data, waiting for writability on a full socket buffer: a floor has no write queue to keep. */
static PyObject *connection_write(floor_connection *self, PyObject *data)
{
    Py_buffer view;
    if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    Py_ssize_t sent = 0;
    while (sent < view.len) {
        ssize_t n = send(self->fd, (const char *)view.buf + sent, (size_t)(view.len - sent), MSG_NOSIGNAL);
        if (n >= 0) {
            sent += n;
            continue;
        }
        if (errno != EAGAIN)
            break; /* the peer is gone: the next read sees it */
        struct pollfd wait_writable = {.fd = self->fd, .events = POLLOUT};
        poll(&wait_writable, 1, -1);
    }
    PyBuffer_Release(&view);
    Py_RETURN_NONE;
}

static PyObject *connection_get_extra_info(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self, (void)args, (void)nargs;
    Py_RETURN_NONE; /* server.py's set_nodelay(None) does nothing: TCP_NODELAY is set at accept */
}

static void connection_dealloc(floor_connection *self)
{
    Py_XDECREF(self->protocol);
    PyObject_Free(self);
}

static PyMethodDef connection_methods[] = {
    {"write", (PyCFunction)connection_write, METH_O, NULL},
    {"get_extra_info", (PyCFunction)(void (*)(void))connection_get_extra_info, METH_FASTCALL, NULL},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject connection_type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "floor_py.Connection",
    .tp_basicsize = sizeof(floor_connection),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_methods = connection_methods,
    .tp_dealloc = (destructor)connection_dealloc,
};

/* A BufferedProtocol's read: get_buffer(-1), one recv into it, buffer_updated(n). 1 go on, 0 closed, -1 error. */
static int read_buffered(floor_connection *conn)
{
    PyObject *buffer = PyObject_CallMethodOneArg(conn->protocol, name_get_buffer, minus_one);
    if (buffer == NULL)
        return -1;
    Py_buffer view;
    if (PyObject_GetBuffer(buffer, &view, PyBUF_WRITABLE) < 0) {
        Py_DECREF(buffer);
        return -1;
    }
    ssize_t got = recv(conn->fd, view.buf, (size_t)view.len, 0);
    PyBuffer_Release(&view);
    Py_DECREF(buffer);
    if (got <= 0)
        return got < 0 && errno == EAGAIN;
    PyObject *count = PyLong_FromSsize_t(got);
    PyObject *result = count ? PyObject_CallMethodOneArg(conn->protocol, name_buffer_updated, count) : NULL;
    Py_XDECREF(count);
    Py_XDECREF(result);
    return result ? 1 : -1;
}

/* A Protocol's read: one recv, data_received(bytes). 1 go on, 0 closed, -1 error. */
static int read_bytes(floor_connection *conn)
{
    ssize_t got = recv(conn->fd, read_buffer, sizeof read_buffer, 0);
    if (got <= 0)
        return got < 0 && errno == EAGAIN;
    PyObject *data = PyBytes_FromStringAndSize(read_buffer, got);
    PyObject *result = data ? PyObject_CallMethodOneArg(conn->protocol, name_data_received, data) : NULL;
    Py_XDECREF(data);
    Py_XDECREF(result);
    return result ? 1 : -1;
}

static void close_connection(int epfd, floor_connection *conn)
{
    epoll_ctl(epfd, EPOLL_CTL_DEL, conn->fd, NULL);
    close(conn->fd);
    PyObject *result = PyObject_CallMethod(conn->protocol, "connection_lost", "O", Py_None);
    Py_XDECREF(result);
    Py_DECREF(conn);
}

/* Every pending connection: a protocol from the factory, connection_made(), watched for reading. */
static int accept_clients(int epfd, int listener, PyObject *factory)
{
    int fd, one = 1;
    while ((fd = accept4(listener, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one); /* fails harmlessly on unix sockets */
        floor_connection *conn = PyObject_New(floor_connection, &connection_type);
        if (conn == NULL) {
            close(fd);
            return -1;
        }
        conn->fd = fd;
        conn->protocol = PyObject_CallNoArgs(factory);
        PyObject *result = conn->protocol ? PyObject_CallMethod(conn->protocol, "connection_made", "O", conn) : NULL;
        if (result == NULL) {
            close(fd);
            conn->fd = -1;
            Py_DECREF(conn);
            return -1;
        }
        Py_DECREF(result);
        struct epoll_event event = {.events = EPOLLIN, .data.ptr = conn};
        epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &event);
    }
    return 0;
}

/* serve(listening_fd, protocol_factory, buffered): echo until a signal handler raises (SIGTERM, SIGINT). */
static PyObject *floor_serve(PyObject *module, PyObject *args)
{
    int listener, buffered;
    PyObject *factory;
    (void)module;
    if (!PyArg_ParseTuple(args, "iOp", &listener, &factory, &buffered))
        return NULL;
    int epfd = epoll_create1(EPOLL_CLOEXEC);
    if (epfd < 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    struct epoll_event events[MAX_EVENTS], listen_event = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(epfd, EPOLL_CTL_ADD, listener, &listen_event);
    for (;;) {
        int n;
        Py_BEGIN_ALLOW_THREADS
        n = epoll_wait(epfd, events, MAX_EVENTS, -1);
        Py_END_ALLOW_THREADS
        if (n < 0 && PyErr_CheckSignals() < 0)
            break;
        for (int i = 0; i < n; i++) {
            floor_connection *conn = events[i].data.ptr;
            int status = conn ? (buffered ? read_buffered(conn) : read_bytes(conn))
                              : accept_clients(epfd, listener, factory);
            if (status < 0 && conn == NULL)
                goto error;
            if (status <= 0 && conn != NULL) {
                PyErr_Clear(); /* a protocol error ends the connection, as a loop would report and close */
                close_connection(epfd, conn);
            }
        }
    }
error:
    close(epfd);
    return NULL;
}

static PyMethodDef floor_methods[] = {
    {"serve", floor_serve, METH_VARARGS, "serve(listening_fd, protocol_factory, buffered)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef floor_module = {PyModuleDef_HEAD_INIT, "floor_py", NULL, -1, floor_methods,
                                          NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit_floor_py(void)
{
    if (PyType_Ready(&connection_type) < 0)
        return NULL;
    name_data_received = PyUnicode_InternFromString("data_received");
    name_get_buffer = PyUnicode_InternFromString("get_buffer");
    name_buffer_updated = PyUnicode_InternFromString("buffer_updated");
    minus_one = PyLong_FromLong(-1);
    if (!name_data_received || !name_get_buffer || !name_buffer_updated || !minus_one)
        return NULL;
    return PyModule_Create(&floor_module);
}
