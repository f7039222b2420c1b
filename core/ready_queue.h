/* core/ready_queue.h — the ready queue: a growable ring buffer of handles waiting to run, FIFO.
 * It owns one reference to each queued handle (see handle_gc.h), or holds ZL_INBOX_MARK; push/pop are inline. */
#ifndef ZL_READY_QUEUE_H
#define ZL_READY_QUEUE_H

#include <Python.h>

#include "handle_gc.h"

typedef struct zl_ready_queue {
    PyObject **items;
    size_t head;      /* index of the oldest item */
    size_t len;
    size_t mask;      /* capacity - 1; capacity is a power of two, 0 before the first push */
} zl_ready_queue;

int zl_ready_queue_grow(zl_ready_queue *queue);
void zl_ready_queue_clear(zl_ready_queue *queue);
void zl_ready_queue_free(zl_ready_queue *queue);
int zl_ready_queue_traverse(zl_ready_queue *queue, visitproc visit, void *arg);
/* Append every item of src to dst, in order, leaving src empty. -1 with MemoryError set (src keeps the rest). */
int zl_ready_queue_move_all(zl_ready_queue *dst, zl_ready_queue *src);

/* Append a handle, stealing the caller's reference. -1 with MemoryError set (the reference is then released). */
static inline int
zl_ready_queue_push(zl_ready_queue *queue, PyObject *item)
{
    if (queue->items == NULL || queue->len > queue->mask) {
        if (zl_ready_queue_grow(queue) < 0) {
            zl_handle_release(item);
            return -1;
        }
    }
    queue->items[(queue->head + queue->len) & queue->mask] = item;
    queue->len++;
    return 0;
}

/* Remove the oldest item and hand its reference to the caller. The queue must not be empty. */
static inline PyObject *
zl_ready_queue_pop(zl_ready_queue *queue)
{
    PyObject *item = queue->items[queue->head];
    queue->head = (queue->head + 1) & queue->mask;
    queue->len--;
    return item;
}

#endif /* ZL_READY_QUEUE_H */
