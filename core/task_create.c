/* core/task_create.c — loop.create_task and loop.create_future in C: one vectorcall of asyncio's C Task/Future;
 * a task factory, debug mode or eager_start go to the Python path, zloop.Loop._create_task_slow. */
#include "zloop.h"

static PyObject *
create_task_slow(zl_loop *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *method = PyObject_GetAttrString((PyObject *)self, "_create_task_slow");
    if (method == NULL) {
        return NULL;
    }
    PyObject *task = PyObject_Vectorcall(method, args, nargs, kwnames);
    Py_DECREF(method);
    return task;
}

/* Task(coro, loop=self, name=name[, context=context]) */
static PyObject *
create_task_direct(zl_loop *self, PyObject *coro, PyObject *name, PyObject *context)
{
    PyObject *call_args[4] = {coro, (PyObject *)self, name, context};
    zl_state *state = self->state;
    PyObject *kwnames = context != NULL ? state->kwnames_loop_name_context : state->kwnames_loop_name;
    return PyObject_Vectorcall(state->task_type, call_args, 1, kwnames);
}

/* Whether asyncio.tasks.Task is still the type the fast path makes. Stock create_task looks tasks.Task up on every
 * call, and code that swaps it (CPython's tests swap in the pure-Python Task) must get the same from zloop. */
static int
task_type_is_current(zl_state *state)
{
    if (state->tasks_namespace == NULL) {
        return 1;
    }
    PyObject *current = PyDict_GetItemWithError(state->tasks_namespace, state->str_Task);   /* borrowed */
    if (current == NULL) {
        PyErr_Clear();   /* the Python path reports a missing tasks.Task */
    }
    return current == state->task_type;
}

PyObject *
zl_loop_create_task(zl_loop *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    if (zl_loop_check_closed(self) < 0) {
        return NULL;
    }
    zl_state *state = self->state;
    if (self->task_factory != NULL || self->debug || nargs != 1 || state->task_type == NULL ||
        !task_type_is_current(state)) {
        return create_task_slow(self, args, nargs, kwnames);
    }
    PyObject *name = Py_None;
    PyObject *context = NULL;
    Py_ssize_t nkw = kwnames == NULL ? 0 : PyTuple_GET_SIZE(kwnames);
    for (Py_ssize_t i = 0; i < nkw; i++) {
        PyObject *key = PyTuple_GET_ITEM(kwnames, i);
        PyObject *value = args[nargs + i];
        if (zl_kwname_equals(key, state->str_name, &state->str_name_alias)) {
            name = value;
        } else if (!zl_kwname_equals(key, state->str_context, &state->str_context_alias)) {
            /* eager_start, or a keyword this Python's Task does not take: let the Python path decide. */
            return create_task_slow(self, args, nargs, kwnames);
        } else if (value == Py_None) {
            continue;
        } else if (PY_VERSION_HEX >= 0x030B0000) {
            context = value;
        } else {
            /* a context for a Task that takes none (3.10 and older): the Python path decides. */
            return create_task_slow(self, args, nargs, kwnames);
        }
    }
    return create_task_direct(self, args[0], name, context);
}

PyObject *
zl_loop_create_future(zl_loop *self, PyObject *Py_UNUSED(ignored))
{
    zl_state *state = self->state;
    if (state->future_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "zloop is not initialised: import zloop first");
        return NULL;
    }
    PyObject *args[1] = {(PyObject *)self};
    return PyObject_Vectorcall(state->future_type, args, 0, state->kwnames_loop);
}
