/* core/write_queue.h — a stream transport's pending output: chunks that point into bytes objects the queue keeps
 * alive (no copy of immutable data), flushed with one sendmsg/writev per call. */
#ifndef ZL_WRITE_QUEUE_H
#define ZL_WRITE_QUEUE_H

#include <Python.h>
#include <sys/types.h>

typedef struct zl_write_chunk {
    PyObject *owner;          /* keeps data alive (a bytes object) */
    const char *data;         /* next byte to send */
    Py_ssize_t len;           /* bytes left in this chunk */
} zl_write_chunk;

typedef struct zl_write_queue {
    zl_write_chunk *chunks;
    size_t head;
    size_t count;             /* live chunks from head */
    size_t capacity;
    size_t bytes;             /* total bytes left to send */
} zl_write_queue;

/* Append len bytes at data, kept alive by owner (a new reference is taken). -1 with MemoryError. len must be > 0
 * (callers skip empty writes): flush would spin on a queue of empty chunks. */
int zl_write_queue_push(zl_write_queue *queue, PyObject *owner, const char *data, Py_ssize_t len);

/* Send as much as the socket takes. Returns bytes sent (0 if it would block) or -errno. */
ssize_t zl_write_queue_flush(zl_write_queue *queue, int fd);

/* Drop the first sent bytes (fully sent chunks, and advance into a partly sent one); sent <= bytes. */
void zl_write_queue_consume(zl_write_queue *queue, size_t sent);

void zl_write_queue_clear(zl_write_queue *queue);
void zl_write_queue_free(zl_write_queue *queue);
int zl_write_queue_traverse(zl_write_queue *queue, visitproc visit, void *arg);

#endif /* ZL_WRITE_QUEUE_H */
