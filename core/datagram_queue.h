/* core/datagram_queue.h — a datagram transport's send queue: the datagrams sendto() could not send at once (or,
 * on the ring, that wait for the next submission or are in flight), in order, with their C destinations. */
#ifndef ZL_DATAGRAM_QUEUE_H
#define ZL_DATAGRAM_QUEUE_H

#include <Python.h>
#include <sys/socket.h>

/* A socket address in C form; len 0 when there is none (or only Python's socket module understands it). */
typedef struct zl_sockaddr {
    struct sockaddr_storage storage;
    socklen_t len;
} zl_sockaddr;

typedef struct zl_dgram_entry {
    PyObject *data;                  /* bytes, sent as they are */
    PyObject *addr;                  /* destination as given (owned; Py_None when there is none) */
    zl_sockaddr to;                  /* its C form */
    size_t accounted;                /* what it adds to get_write_buffer_size() */
} zl_dgram_entry;

typedef struct zl_dgram_queue {
    zl_dgram_entry *entries;
    size_t head;
    size_t count;
    size_t capacity;
    size_t bytes;
} zl_dgram_queue;

/* Append entry (its references are taken: the caller keeps its own); -1 with MemoryError set. */
int zl_dgram_queue_push(zl_dgram_queue *queue, zl_dgram_entry entry);
/* Remove the oldest entry; the caller gets its references. The queue must not be empty. */
zl_dgram_entry zl_dgram_queue_pop(zl_dgram_queue *queue);
void zl_dgram_entry_release(zl_dgram_entry *entry);
void zl_dgram_queue_clear(zl_dgram_queue *queue);

#endif /* ZL_DATAGRAM_QUEUE_H */
