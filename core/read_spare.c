/* core/read_spare.c — the module state's spare bytes for large stream reads: taken for a read, given back after
 * data_received, kept only when the loop holds the last reference to it (nothing a user holds is ever reused). */
#include "read_spare.h"

PyObject *
zl_read_spare_take(zl_state *state, Py_ssize_t size)
{
    PyObject *spare = state->read_spare;
    if (spare != NULL && Py_SIZE(spare) == size) {
        state->read_spare = NULL;
        return spare;
    }
    return PyBytes_FromStringAndSize(NULL, size);
}

/* The cached hash of data's old content is no longer valid (what _PyBytes_Resize does when the size changes). */
static void
read_spare_forget_hash(PyObject *data)
{
#if defined(__GNUC__) || defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
#endif
    ((PyBytesObject *)data)->ob_shash = -1;   /* deprecated since 3.11 for readers, still the cache in 3.11-3.15 */
#if defined(__GNUC__) || defined(__clang__)
#pragma GCC diagnostic pop
#endif
}

void
zl_read_spare_give_back(zl_state *state, PyObject *data, Py_ssize_t size)
{
#ifdef Py_GIL_DISABLED
    /* Another thread may hold a reference the count does not show yet (biased and deferred counting). */
    (void)state;
    (void)size;
    Py_DECREF(data);
#else
    if (Py_REFCNT(data) != 1 || state->read_spare != NULL) {
        Py_DECREF(data);
        return;
    }
    if (Py_SIZE(data) == size) {
        read_spare_forget_hash(data);
    } else if (_PyBytes_Resize(&data, size) < 0) {   /* grows in place when the block's tail is still free */
        PyErr_Clear();                                  /* data is gone: the next read allocates */
        return;
    }
    state->read_spare = data;
#endif
}
