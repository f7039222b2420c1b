/* tests/fuzz/fuzz_handle_gc.c — handle_gc.h's two entry points for the harnesses that link one data structure
 * alone: their items are fuzz_items, not handles, so "track" only counts and "visit owned" visits the item. */
#include "fuzz_common.h"
#include "handle_gc.h"

long fuzz_handles_tracked;

void
zl_handle_track(PyObject *handle)
{
    FUZZ_CHECK(Py_REFCNT(handle) > 1, "a handle tracked while only the queue held it");
    fuzz_handles_tracked++;
}

int
zl_handle_visit_owned(PyObject *handle, visitproc visit, void *arg)
{
    Py_VISIT(handle);
    return 0;
}
