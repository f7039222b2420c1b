/* core/threadsafe_inbox.h — the records of call_soon_threadsafe calls: a ring of (callback, argument, context,
 * handle) the loop owns, each behind one ZL_INBOX_MARK in the ready queue, so the Handle returned can die at once. */
#ifndef ZL_THREADSAFE_INBOX_H
#define ZL_THREADSAFE_INBOX_H

#include <Python.h>
#include <stdint.h>

#include "handle_gc.h"   /* ZL_INBOX_MARK */

struct zl_handle;

/* One queued call_soon_threadsafe(callback[, arg]). The record owns its references, so what it will run is
 * reachable from the loop (its traverse visits them) whatever happens to the Handle returned for it; that Handle
 * holds references of its own and is an ordinary tracked object. While the Handle lives, the record runs it (its
 * state, cancel() included, is the Handle's); once it is gone, the record runs on its own. A producer thread
 * queueing thousands of calls per GIL slice thus writes 32 bytes of a ring the loop keeps, not a Handle each. */
typedef struct zl_inbox_record {
    PyObject *callback;               /* NULL once cancelled */
    PyObject *arg;                    /* the one argument, or NULL: none */
    PyObject *context;                /* NULL: the caller's context was empty, an empty one is made on use */
    struct zl_handle *handle;         /* borrowed: the Handle returned for the call while it is alive, else NULL */
} zl_inbox_record;

typedef struct zl_inbox {
    zl_inbox_record *records;
    size_t head;                      /* index of the oldest record */
    size_t len;
    size_t mask;                      /* capacity - 1; capacity is a power of two, 0 before the first push */
    uint64_t head_seq;                /* sequence number of the oldest record; a record's number never changes */
    PyObject *spare_context;          /* an empty context, owned, that records without one run in (see below) */
} zl_inbox;

/* Append a record for handle's call, taking new references to callback, arg and context (each may be NULL but
 * callback); its sequence number in *seq. -1 with MemoryError set (nothing appended). */
int zl_inbox_push(zl_inbox *inbox, struct zl_handle *handle, PyObject *callback, PyObject *arg, PyObject *context,
                  uint64_t *seq);

/* Take back the newest record (its mark could not be queued): references released. */
void zl_inbox_unpush(zl_inbox *inbox);

/* The queued record numbered seq, or NULL once it was popped or cleared. */
zl_inbox_record *zl_inbox_find(zl_inbox *inbox, uint64_t seq);

/* Remove the oldest record into *record, which then owns its references. The inbox must not be empty. */
void zl_inbox_pop(zl_inbox *inbox, zl_inbox_record *record);

/* A record whose Handle is gone and whose context was deferred runs in an empty context: the spare one (a new
 * one when there is none), given to the record by lend and taken back by reclaim once the callback returned, if
 * it is still empty and nothing else holds it. Nobody can tell it from a fresh copy of an empty context, and the
 * loop makes one context per callback that sets a variable, not one per call. -1 with an exception set. */
int zl_inbox_lend_context(zl_inbox *inbox, zl_inbox_record *record);
void zl_inbox_reclaim_context(zl_inbox *inbox, zl_inbox_record *record);

/* Cancel a queued record: its references are released (callback NULL from then on); its handle stays attached. */
void zl_inbox_record_cancel(zl_inbox_record *record);

/* Release what a record holds (not its borrowed handle). */
void zl_inbox_record_release(zl_inbox_record *record);

void zl_inbox_clear(zl_inbox *inbox);
void zl_inbox_free(zl_inbox *inbox);
int zl_inbox_traverse(zl_inbox *inbox, visitproc visit, void *arg);

#endif /* ZL_THREADSAFE_INBOX_H */
