/* core/read_spare.h — the bytes a large stream read is received into, kept by the module state for the next such
 * read once nobody else holds it, so a read does not allocate 120 KiB and the heap's top does not churn. */
#ifndef ZL_READ_SPARE_H
#define ZL_READ_SPARE_H

#include "zloop.h"

/* A bytes of exactly `size` bytes to receive into: the kept spare when it has that size, else a new one. Its
 * content is garbage and its hash not computed. NULL with an exception set. */
PyObject *zl_read_spare_take(zl_state *state, Py_ssize_t size);

/* Hand back a bytes from zl_read_spare_take (stolen), possibly shrunk since with _PyBytes_Resize and shown to
 * Python code: kept as the spare, grown back to `size`, when this is the only reference and no spare is kept;
 * else released. Never raises. */
void zl_read_spare_give_back(zl_state *state, PyObject *data, Py_ssize_t size);

#endif
