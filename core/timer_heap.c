/* core/timer_heap.c — sift-up/sift-down, pop and compaction of the timer heap.
 * Keys live in the heap array itself, so ordering never dereferences a timer object. */
#include "timer_heap.h"

static inline int
entry_before(const zl_timer_entry *a, const zl_timer_entry *b)
{
    return a->when < b->when || (a->when == b->when && a->seq < b->seq);
}

static void
sift_up(zl_timer_entry *entries, size_t pos)
{
    zl_timer_entry moving = entries[pos];
    while (pos > 0) {
        size_t parent = (pos - 1) / 2;
        if (!entry_before(&moving, &entries[parent])) {
            break;
        }
        entries[pos] = entries[parent];
        pos = parent;
    }
    entries[pos] = moving;
}

static void
sift_down(zl_timer_entry *entries, size_t len, size_t pos)
{
    zl_timer_entry moving = entries[pos];
    for (;;) {
        size_t child = 2 * pos + 1;
        if (child >= len) {
            break;
        }
        if (child + 1 < len && entry_before(&entries[child + 1], &entries[child])) {
            child++;
        }
        if (!entry_before(&entries[child], &moving)) {
            break;
        }
        entries[pos] = entries[child];
        pos = child;
    }
    entries[pos] = moving;
}

int
zl_timer_heap_push(zl_timer_heap *heap, double when, uint64_t seq, PyObject *timer)
{
    if (heap->len == heap->capacity) {
        size_t capacity = heap->capacity ? heap->capacity * 2 : 64;
        zl_timer_entry *entries = PyMem_Realloc(heap->entries, capacity * sizeof(zl_timer_entry));
        if (entries == NULL) {
            zl_handle_release(timer);
            PyErr_NoMemory();
            return -1;
        }
        heap->entries = entries;
        heap->capacity = capacity;
    }
    heap->entries[heap->len] = (zl_timer_entry){.when = when, .seq = seq, .timer = timer};
    sift_up(heap->entries, heap->len);
    heap->len++;
    return 0;
}

PyObject *
zl_timer_heap_pop(zl_timer_heap *heap)
{
    PyObject *timer = heap->entries[0].timer;
    heap->len--;
    if (heap->len > 0) {
        heap->entries[0] = heap->entries[heap->len];
        sift_down(heap->entries, heap->len, 0);
    }
    return timer;
}

size_t
zl_timer_heap_drop_if(zl_timer_heap *heap, int (*is_dead)(PyObject *timer))
{
    size_t kept = 0;
    size_t dropped = 0;
    PyObject **dead = PyMem_Malloc((heap->len ? heap->len : 1) * sizeof(PyObject *));
    if (dead == NULL) {
        /* Compaction only saves memory: without room to hold the dropped timers until the heap is consistent,
         * leave them to be popped lazily (releasing one here could run a finalizer that pushes mid-rebuild). */
        return 0;
    }
    for (size_t i = 0; i < heap->len; i++) {
        if (is_dead(heap->entries[i].timer)) {
            dead[dropped++] = heap->entries[i].timer;
        } else {
            heap->entries[kept++] = heap->entries[i];
        }
    }
    heap->len = kept;
    for (size_t i = kept / 2; i-- > 0;) {
        sift_down(heap->entries, heap->len, i);
    }
    /* Release the dropped timers only once the heap is consistent again: a finalizer may schedule timers. */
    for (size_t i = 0; i < dropped; i++) {
        zl_handle_release(dead[i]);
    }
    PyMem_Free(dead);
    return dropped;
}

void
zl_timer_heap_clear(zl_timer_heap *heap)
{
    while (heap->len > 0) {
        PyObject *timer = heap->entries[--heap->len].timer;
        zl_handle_release(timer);
    }
}

void
zl_timer_heap_free(zl_timer_heap *heap)
{
    zl_timer_heap_clear(heap);
    PyMem_Free(heap->entries);
    heap->entries = NULL;
    heap->capacity = 0;
}

int
zl_timer_heap_traverse(zl_timer_heap *heap, visitproc visit, void *arg)
{
    for (size_t i = 0; i < heap->len; i++) {
        int rc = zl_handle_visit_owned(heap->entries[i].timer, visit, arg);
        if (rc != 0) {
            return rc;
        }
    }
    return 0;
}
