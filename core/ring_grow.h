/* core/ring_grow.h — growth of the core's power-of-two rings (the ready queue, the threadsafe inbox): twice the
 * capacity, the live elements unwrapped to start at index 0 so that FIFO order is kept. */
#ifndef ZL_RING_GROW_H
#define ZL_RING_GROW_H

#include <Python.h>
#include <string.h>

/* *items holds len elements of size bytes from *head on, wrapping at *mask + 1 (NULL: no buffer yet). Replace it by
 * a buffer of twice the capacity (min_capacity the first time) with them at 0..len-1. -1 with MemoryError set,
 * nothing changed. */
static inline int
zl_ring_grow(void **items, size_t size, size_t len, size_t *head, size_t *mask, size_t min_capacity)
{
    size_t old_capacity = *items == NULL ? 0 : *mask + 1;
    size_t capacity = old_capacity ? old_capacity * 2 : min_capacity;
    char *grown = PyMem_Malloc(capacity * size);
    if (grown == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    size_t first = old_capacity - *head < len ? old_capacity - *head : len;   /* up to the end of the old buffer */
    if (len > 0) {
        memcpy(grown, (char *)*items + *head * size, first * size);
        memcpy(grown + first * size, *items, (len - first) * size);
    }
    PyMem_Free(*items);
    *items = grown;
    *head = 0;
    *mask = capacity - 1;
    return 0;
}

#endif /* ZL_RING_GROW_H */
