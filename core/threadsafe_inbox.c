/* core/threadsafe_inbox.c — the ring of call_soon_threadsafe records: growth, lookup by sequence number, popping
 * (which detaches a live Handle), clearing and GC traversal. Runs with the GIL held, like the rest of the core. */
#include "ring_grow.h"
#include "zloop.h"

#define ZL_INBOX_MIN_CAPACITY 64

static int
inbox_grow(zl_inbox *inbox)
{
    void *records = inbox->records;
    if (zl_ring_grow(&records, sizeof(zl_inbox_record), inbox->len, &inbox->head, &inbox->mask,
                     ZL_INBOX_MIN_CAPACITY) < 0) {
        return -1;
    }
    inbox->records = records;
    return 0;
}

int
zl_inbox_push(zl_inbox *inbox, struct zl_handle *handle, PyObject *callback, PyObject *arg, PyObject *context,
              uint64_t *seq)
{
    if (inbox->records == NULL || inbox->len > inbox->mask) {
        if (inbox_grow(inbox) < 0) {
            return -1;
        }
    }
    zl_inbox_record *record = &inbox->records[(inbox->head + inbox->len) & inbox->mask];
    Py_INCREF(callback);
    record->callback = callback;
    Py_XINCREF(arg);
    record->arg = arg;
    Py_XINCREF(context);
    record->context = context;
    record->handle = handle;
    *seq = inbox->head_seq + inbox->len;
    inbox->len++;
    return 0;
}

void
zl_inbox_unpush(zl_inbox *inbox)
{
    inbox->len--;
    zl_inbox_record record = inbox->records[(inbox->head + inbox->len) & inbox->mask];
    if (record.handle != NULL) {
        record.handle->in_inbox = 0;
    }
    zl_inbox_record_release(&record);
}

zl_inbox_record *
zl_inbox_find(zl_inbox *inbox, uint64_t seq)
{
    uint64_t offset = seq - inbox->head_seq;   /* wraps to a huge value for a record already popped */
    if (offset >= inbox->len) {
        return NULL;
    }
    return &inbox->records[(inbox->head + offset) & inbox->mask];
}

void
zl_inbox_pop(zl_inbox *inbox, zl_inbox_record *record)
{
    *record = inbox->records[inbox->head];
    inbox->head = (inbox->head + 1) & inbox->mask;
    inbox->len--;
    inbox->head_seq++;
    if (record->handle != NULL) {
        record->handle->in_inbox = 0;   /* it no longer has a record to reach */
    }
}

int
zl_inbox_lend_context(zl_inbox *inbox, zl_inbox_record *record)
{
    if (inbox->spare_context != NULL) {
        record->context = inbox->spare_context;   /* taken: a callback running another record cannot share it */
        inbox->spare_context = NULL;
        return 0;
    }
    record->context = PyContext_New();
    return record->context == NULL ? -1 : 0;
}

void
zl_inbox_reclaim_context(zl_inbox *inbox, zl_inbox_record *record)
{
    PyObject *context = record->context;
    if (inbox->spare_context == NULL && Py_REFCNT(context) == 1 &&
        Py_TYPE(context)->tp_as_mapping->mp_length(context) == 0) {   /* a context's length cannot fail */
        inbox->spare_context = context;
        record->context = NULL;
    }
}

void
zl_inbox_record_cancel(zl_inbox_record *record)
{
    /* Emptied before releasing: a finalizer may queue calls, and the ring they grow moves the record. */
    zl_inbox_record dropped = *record;
    record->callback = record->arg = record->context = NULL;
    zl_inbox_record_release(&dropped);
}

void
zl_inbox_record_release(zl_inbox_record *record)
{
    Py_CLEAR(record->callback);
    Py_CLEAR(record->arg);
    Py_CLEAR(record->context);
}

void
zl_inbox_clear(zl_inbox *inbox)
{
    /* Pop before releasing: a finalizer may run arbitrary code that looks at the inbox. */
    while (inbox->len > 0) {
        zl_inbox_record record;
        zl_inbox_pop(inbox, &record);
        zl_inbox_record_release(&record);
    }
    Py_CLEAR(inbox->spare_context);
}

void
zl_inbox_free(zl_inbox *inbox)
{
    zl_inbox_clear(inbox);
    PyMem_Free(inbox->records);
    inbox->records = NULL;
    inbox->head = 0;
    inbox->mask = 0;
}

int
zl_inbox_traverse(zl_inbox *inbox, visitproc visit, void *arg)
{
    for (size_t i = 0; i < inbox->len; i++) {
        zl_inbox_record *record = &inbox->records[(inbox->head + i) & inbox->mask];
        Py_VISIT(record->callback);
        Py_VISIT(record->arg);
        Py_VISIT(record->context);
    }
    Py_VISIT(inbox->spare_context);
    return 0;
}
