/* core/ready_queue.c — growth, clearing and GC traversal of the ready queue's ring buffer.
 * Growth keeps FIFO order by unwrapping the ring into the new buffer. */
#include "ready_queue.h"
#include "ring_grow.h"

#define ZL_READY_QUEUE_MIN_CAPACITY 64

int
zl_ready_queue_grow(zl_ready_queue *queue)
{
    void *items = queue->items;
    if (zl_ring_grow(&items, sizeof(PyObject *), queue->len, &queue->head, &queue->mask,
                     ZL_READY_QUEUE_MIN_CAPACITY) < 0) {
        return -1;
    }
    queue->items = items;
    return 0;
}

void
zl_ready_queue_clear(zl_ready_queue *queue)
{
    /* Pop before releasing: a handle's finalizer may run arbitrary code that looks at the queue. */
    while (queue->len > 0) {
        PyObject *item = zl_ready_queue_pop(queue);
        zl_handle_release(item);
    }
}

void
zl_ready_queue_free(zl_ready_queue *queue)
{
    zl_ready_queue_clear(queue);
    PyMem_Free(queue->items);
    queue->items = NULL;
    queue->head = 0;
    queue->mask = 0;
}

int
zl_ready_queue_traverse(zl_ready_queue *queue, visitproc visit, void *arg)
{
    for (size_t i = 0; i < queue->len; i++) {
        int rc = zl_handle_visit_owned(queue->items[(queue->head + i) & queue->mask], visit, arg);
        if (rc != 0) {
            return rc;
        }
    }
    return 0;
}

int
zl_ready_queue_move_all(zl_ready_queue *dst, zl_ready_queue *src)
{
    while (src->len > 0) {
        if (dst->items == NULL || dst->len > dst->mask) {
            if (zl_ready_queue_grow(dst) < 0) {
                return -1;
            }
        }
        (void)zl_ready_queue_push(dst, zl_ready_queue_pop(src));
    }
    return 0;
}
