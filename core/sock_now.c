/* core/sock_now.c — the system calls of loop.sock_recv and loop.sock_sendall on a plain non-blocking socket, made
 * at once with the GIL held: "no data yet" is a None, not a BlockingIOError raised and caught in Python. */
#include "zloop.h"

#include <errno.h>
#include <limits.h>
#include <sys/socket.h>

/* Reads go through one buffer per interpreter (its module state; the GIL serialises them) and are copied out at
 * their size: a 1 KiB message costs a 1 KiB bytes, where socket.recv(256 KiB) allocates 256 KiB and shrinks it. */
#define ZL_SOCK_RECV_BUFFER_SIZE (256 * 1024)

/* The fd argument: sock.fileno() as the caller passed it (-1 for a closed socket: the call then fails with EBADF,
 * as sock.recv/sock.send on a closed socket do). */
static int
sock_fd_arg(PyObject *arg, int *fd)
{
    long value = PyLong_AsLong(arg);
    if (value == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (value < INT_MIN || value > INT_MAX) {
        PyErr_SetString(PyExc_OverflowError, "file descriptor out of range");
        return -1;
    }
    *fd = (int)value;
    return 0;
}

/* errno after a failed recv/send: 1 to try again (EINTR, after the signal handlers ran), 0 for "would block"
 * (return None), -1 with OSError (or the handler's exception) set. */
static int
sock_call_failed(int error)
{
    if (error == EINTR) {
        return PyErr_CheckSignals() < 0 ? -1 : 1;
    }
    if (error == EAGAIN || error == EWOULDBLOCK) {
        return 0;
    }
    errno = error;
    PyErr_SetFromErrno(PyExc_OSError);
    return -1;
}

/* One recv of up to size bytes into buf; n >= 0 received, -2 would block, -1 with an exception set. */
static Py_ssize_t
sock_recv_once(int fd, char *buf, Py_ssize_t size)
{
    for (;;) {
        ssize_t n = recv(fd, buf, (size_t)size, 0);
        if (n >= 0) {
            return n;
        }
        int rc = sock_call_failed(errno);
        if (rc <= 0) {
            return rc == 0 ? -2 : -1;
        }
    }
}

/* A read larger than the shared buffer goes straight into a bytes of the size asked, shrunk to what came
 * (what socket.recv does for every size). */
static PyObject *
sock_recv_large(int fd, Py_ssize_t size)
{
    PyObject *data = PyBytes_FromStringAndSize(NULL, size);
    if (data == NULL) {
        return NULL;
    }
    Py_ssize_t n = sock_recv_once(fd, PyBytes_AS_STRING(data), size);
    if (n < 0) {
        Py_DECREF(data);
        if (n == -1) {
            return NULL;
        }
        Py_RETURN_NONE;
    }
    if (n != size && _PyBytes_Resize(&data, n) < 0) {
        return NULL;
    }
    return data;
}

/* loop._sock_recv_now(sock.fileno(), n): bytes received (b"" at end of stream), or None when none are ready; the same
 * errors as sock.recv(n) otherwise. The caller checked that sock is a non-blocking socket.socket. */
PyObject *
zl_loop_sock_recv_now(PyObject *loop, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "_sock_recv_now(fd, n) takes 2 arguments");
        return NULL;
    }
    Py_ssize_t size = PyNumber_AsSsize_t(args[1], PyExc_OverflowError);
    if (size == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (size < 0) {
        PyErr_SetString(PyExc_ValueError, "negative buffersize in recv");
        return NULL;
    }
    int fd;
    if (sock_fd_arg(args[0], &fd) < 0) {
        return NULL;
    }
    if (size > ZL_SOCK_RECV_BUFFER_SIZE) {
        return sock_recv_large(fd, size);
    }
    zl_state *state = ((zl_loop *)loop)->state;
    if (state->sock_recv_buffer == NULL &&
        (state->sock_recv_buffer = PyMem_RawMalloc(ZL_SOCK_RECV_BUFFER_SIZE)) == NULL) {
        return PyErr_NoMemory();
    }
    Py_ssize_t n = sock_recv_once(fd, state->sock_recv_buffer, size);
    if (n < 0) {
        if (n == -1) {
            return NULL;
        }
        Py_RETURN_NONE;
    }
    return PyBytes_FromStringAndSize(state->sock_recv_buffer, n);
}

/* loop._sock_send_now(sock.fileno(), data): the number of bytes sent, or None when the socket cannot take any now.
 * data: any bytes-like object, as socket.send takes (the same TypeError otherwise). */
PyObject *
zl_loop_sock_send_now(PyObject *Py_UNUSED(loop), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "_sock_send_now(fd, data) takes 2 arguments");
        return NULL;
    }
    int fd;
    if (sock_fd_arg(args[0], &fd) < 0) {
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(args[1], &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    PyObject *result = NULL;
    for (;;) {
        ssize_t n = send(fd, view.buf, (size_t)view.len, 0);
        if (n >= 0) {
            result = PyLong_FromSsize_t(n);
            break;
        }
        int rc = sock_call_failed(errno);
        if (rc <= 0) {
            if (rc == 0) {
                Py_INCREF(Py_None);
                result = Py_None;
            }
            break;
        }
    }
    PyBuffer_Release(&view);
    return result;
}
