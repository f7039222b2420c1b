/* core/write_queue.c — growing, flushing (sendmsg with up to IOV_MAX chunks) and releasing the write queue.
 * Sent chunks are released only after the syscall, with the queue already consistent. */
#include "write_queue.h"

#include <errno.h>
#include <limits.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>

#ifndef IOV_MAX
#define IOV_MAX 1024
#endif
#define ZL_WRITE_IOV_BATCH (IOV_MAX < 512 ? IOV_MAX : 512)

static int
write_queue_reserve(zl_write_queue *queue)
{
    if (queue->head + queue->count < queue->capacity) {
        return 0;
    }
    if (queue->head > 0) {
        memmove(queue->chunks, queue->chunks + queue->head, queue->count * sizeof(zl_write_chunk));
        queue->head = 0;
        if (queue->count < queue->capacity) {
            return 0;
        }
    }
    size_t capacity = queue->capacity ? queue->capacity * 2 : 16;
    zl_write_chunk *chunks = PyMem_Realloc(queue->chunks, capacity * sizeof(zl_write_chunk));
    if (chunks == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    queue->chunks = chunks;
    queue->capacity = capacity;
    return 0;
}

int
zl_write_queue_push(zl_write_queue *queue, PyObject *owner, const char *data, Py_ssize_t len)
{
    if (write_queue_reserve(queue) < 0) {
        return -1;
    }
    Py_INCREF(owner);
    queue->chunks[queue->head + queue->count] = (zl_write_chunk){.owner = owner, .data = data, .len = len};
    queue->count++;
    queue->bytes += (size_t)len;
    return 0;
}

void
zl_write_queue_consume(zl_write_queue *queue, size_t sent)
{
    queue->bytes -= sent;
    while (sent > 0) {
        zl_write_chunk *chunk = &queue->chunks[queue->head];
        if ((size_t)chunk->len > sent) {
            chunk->data += sent;
            chunk->len -= (Py_ssize_t)sent;
            return;
        }
        sent -= (size_t)chunk->len;
        PyObject *owner = chunk->owner;
        queue->head++;
        queue->count--;
        Py_DECREF(owner);
    }
    if (queue->count == 0) {
        queue->head = 0;
    }
}

ssize_t
zl_write_queue_flush(zl_write_queue *queue, int fd)
{
    size_t total = 0;
    while (queue->count > 0) {
        struct iovec iov[ZL_WRITE_IOV_BATCH];
        size_t n = queue->count < ZL_WRITE_IOV_BATCH ? queue->count : ZL_WRITE_IOV_BATCH;
        size_t batch_bytes = 0;
        for (size_t i = 0; i < n; i++) {
            zl_write_chunk *chunk = &queue->chunks[queue->head + i];
            iov[i].iov_base = (void *)chunk->data;
            iov[i].iov_len = (size_t)chunk->len;
            batch_bytes += (size_t)chunk->len;
        }
        struct msghdr msg = {.msg_iov = iov, .msg_iovlen = n};
        ssize_t sent;
        do {
            sent = sendmsg(fd, &msg, MSG_NOSIGNAL);
        } while (sent < 0 && errno == EINTR);
        if (sent < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                break;
            }
            if (errno == ENOTSOCK) {
                /* A pipe or other stream fd: the same with writev. */
                do {
                    sent = writev(fd, iov, (int)n);
                } while (sent < 0 && errno == EINTR);
                if (sent < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
                    break;
                }
            }
            if (sent < 0) {
                return -errno;
            }
        }
        zl_write_queue_consume(queue, (size_t)sent);
        total += (size_t)sent;
        if ((size_t)sent < batch_bytes) {
            break;   /* the socket buffer is full */
        }
    }
    return (ssize_t)total;
}

void
zl_write_queue_clear(zl_write_queue *queue)
{
    while (queue->count > 0) {
        PyObject *owner = queue->chunks[queue->head].owner;
        queue->head++;
        queue->count--;
        Py_DECREF(owner);
    }
    queue->head = 0;
    queue->bytes = 0;
}

void
zl_write_queue_free(zl_write_queue *queue)
{
    zl_write_queue_clear(queue);
    PyMem_Free(queue->chunks);
    queue->chunks = NULL;
    queue->capacity = 0;
}

int
zl_write_queue_traverse(zl_write_queue *queue, visitproc visit, void *arg)
{
    for (size_t i = 0; i < queue->count; i++) {
        Py_VISIT(queue->chunks[queue->head + i].owner);
    }
    return 0;
}
