/* core/timer_heap.h — the timer heap: a binary min-heap of timers ordered by (deadline, sequence),
 * so timers with equal deadlines fire in the order they were scheduled. It owns one reference per timer
 * (see handle_gc.h). */
#ifndef ZL_TIMER_HEAP_H
#define ZL_TIMER_HEAP_H

#include <Python.h>
#include <stdint.h>

#include "handle_gc.h"

typedef struct zl_timer_entry {
    double when;         /* deadline on the loop's clock, seconds */
    uint64_t seq;        /* tie-breaker: scheduling order */
    PyObject *timer;     /* owned */
} zl_timer_entry;

typedef struct zl_timer_heap {
    zl_timer_entry *entries;
    size_t len;
    size_t capacity;
} zl_timer_heap;

/* Add a timer, stealing the reference. -1 with MemoryError set (the reference is then released). */
int zl_timer_heap_push(zl_timer_heap *heap, double when, uint64_t seq, PyObject *timer);

/* The earliest entry, or NULL when empty. */
static inline const zl_timer_entry *
zl_timer_heap_peek(const zl_timer_heap *heap)
{
    return heap->len > 0 ? &heap->entries[0] : NULL;
}

/* Remove the earliest entry and hand its timer's reference to the caller. The heap must not be empty. */
PyObject *zl_timer_heap_pop(zl_timer_heap *heap);

/* Drop every timer for which is_dead(timer) is true (is_dead may record that it was dropped), and re-heapify.
 * Returns how many were dropped: 0, with nothing dropped and no exception set, when memory is short. */
size_t zl_timer_heap_drop_if(zl_timer_heap *heap, int (*is_dead)(PyObject *timer));

void zl_timer_heap_clear(zl_timer_heap *heap);
void zl_timer_heap_free(zl_timer_heap *heap);
int zl_timer_heap_traverse(zl_timer_heap *heap, visitproc visit, void *arg);

#endif /* ZL_TIMER_HEAP_H */
