/* core/datagram_queue.c — a datagram transport's send queue: a growable array of (bytes, address, C address)
 * entries in sendto() order, with the byte count get_write_buffer_size() reports. */
#include "datagram_queue.h"

#include <string.h>

int
zl_dgram_queue_push(zl_dgram_queue *queue, zl_dgram_entry entry)
{
    if (queue->head + queue->count == queue->capacity) {
        if (queue->head > 0) {
            memmove(queue->entries, queue->entries + queue->head, queue->count * sizeof(zl_dgram_entry));
            queue->head = 0;
        } else {
            size_t capacity = queue->capacity ? queue->capacity * 2 : 8;
            zl_dgram_entry *entries = PyMem_Realloc(queue->entries, capacity * sizeof(zl_dgram_entry));
            if (entries == NULL) {
                PyErr_NoMemory();
                return -1;
            }
            queue->entries = entries;
            queue->capacity = capacity;
        }
    }
    Py_INCREF(entry.data);
    Py_INCREF(entry.addr);
    queue->entries[queue->head + queue->count] = entry;
    queue->count++;
    queue->bytes += entry.accounted;
    return 0;
}

zl_dgram_entry
zl_dgram_queue_pop(zl_dgram_queue *queue)
{
    zl_dgram_entry entry = queue->entries[queue->head];
    queue->head++;
    queue->count--;
    queue->bytes -= entry.accounted;
    if (queue->count == 0) {
        queue->head = 0;
    }
    return entry;
}

void
zl_dgram_entry_release(zl_dgram_entry *entry)
{
    Py_CLEAR(entry->data);
    Py_CLEAR(entry->addr);
}

void
zl_dgram_queue_clear(zl_dgram_queue *queue)
{
    while (queue->count > 0) {
        zl_dgram_entry entry = zl_dgram_queue_pop(queue);
        zl_dgram_entry_release(&entry);
    }
}
