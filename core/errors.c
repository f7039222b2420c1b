/* core/errors.c — taking and putting back the raised exception in one way on every supported Python
 * (PyErr_GetRaisedException from 3.12, PyErr_Fetch + normalisation before), and keeping it across a context exit. */
#include "zloop.h"

PyObject *
zl_err_fetch(void)
{
#if PY_VERSION_HEX >= 0x030C0000
    return PyErr_GetRaisedException();
#else
    PyObject *type, *value, *traceback;
    PyErr_Fetch(&type, &value, &traceback);
    if (type == NULL) {
        return NULL;
    }
    PyErr_NormalizeException(&type, &value, &traceback);
    if (traceback != NULL && value != NULL) {
        PyException_SetTraceback(value, traceback);
    }
    Py_XDECREF(type);
    Py_XDECREF(traceback);
    return value;
#endif
}

void
zl_err_restore(PyObject *exc)
{
#if PY_VERSION_HEX >= 0x030C0000
    PyErr_SetRaisedException(exc);
#else
    if (exc == NULL) {
        return;
    }
    PyObject *type = (PyObject *)Py_TYPE(exc);
    Py_INCREF(type);
    PyErr_Restore(type, exc, PyException_GetTraceback(exc));
#endif
}

int
zl_context_exit_keeping_error(PyObject *context, int rc)
{
    PyObject *exc = rc < 0 ? zl_err_fetch() : NULL;
    if (PyContext_Exit(context) < 0) {
        Py_XDECREF(exc);
        return -1;
    }
    if (exc != NULL) {
        zl_err_restore(exc);
    }
    return rc;
}
