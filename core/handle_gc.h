/* core/handle_gc.h — handles and the cyclic GC: a handle owned only by its loop's ready queue or timer heap is
 * not tracked; the loop visits what it holds instead, and tracks it when it lets go while others still hold it. */
#ifndef ZL_HANDLE_GC_H
#define ZL_HANDLE_GC_H

#include <Python.h>
#include <stdint.h>

/* A ready queue item that is no handle: "run the next record of the loop's call_soon_threadsafe inbox"
 * (threadsafe_inbox.h). Never a pointer to an object, never dereferenced: release and visit skip it, the inbox is
 * released and traversed on its own. */
#define ZL_INBOX_MARK ((PyObject *)(uintptr_t)1)

/* For a container's tp_traverse, one queued handle: the handle itself when the GC tracks it, else everything the
 * handle holds (callback, arguments, context, loop, ...), on the handle's behalf. */
int zl_handle_visit_owned(PyObject *handle, visitproc visit, void *arg);

/* Track a handle that something other than one loop queue slot is about to hold (add_reader, _make_handle). */
void zl_handle_track(PyObject *handle);

/* A loop queue slot lets go of its handle: the handle becomes an ordinary tracked object when others still hold
 * it (they may be in a cycle with its callback), and is freed otherwise. */
static inline void
zl_handle_release(PyObject *handle)
{
    if (handle == ZL_INBOX_MARK) {
        return;
    }
    if (Py_REFCNT(handle) > 1) {
        zl_handle_track(handle);
    }
    Py_DECREF(handle);
}

#endif /* ZL_HANDLE_GC_H */
