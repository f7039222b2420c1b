/* python/module.c — the zloop._zloop extension module: its types, the list of compiled-in backends, and the
 * Python hooks (error reporting, debug helpers) the C core calls into, kept in one module-wide state. */
#include "../core/zloop.h"

zl_state zl_global;

static PyObject *
module_backends(PyObject *Py_UNUSED(module), PyObject *Py_UNUSED(ignored))
{
    PyObject *names = PyList_New(0);
    if (names == NULL) {
        return NULL;
    }
    for (size_t i = 0; zl_backend_table[i] != NULL; i++) {
        PyObject *name = PyUnicode_FromString(zl_backend_table[i]->name);
        if (name == NULL || PyList_Append(names, name) < 0) {
            Py_XDECREF(name);
            Py_DECREF(names);
            return NULL;
        }
        Py_DECREF(name);
    }
    return names;
}

static PyObject *
module_default_backend(PyObject *Py_UNUSED(module), PyObject *Py_UNUSED(ignored))
{
    return PyUnicode_FromString(zl_backend_default_name());
}

/* The Python objects the core calls, by the keyword _set_hooks takes them under. */
static const struct {
    const char *name;
    PyObject **slot;
} hook_table[] = {
    {"report_callback_error", &zl_global.report_callback_error},
    {"warn_slow_callback", &zl_global.warn_slow_callback},
    {"extract_stack", &zl_global.extract_stack},
    {"format_handle", &zl_global.format_handle},
    {"check_callback", &zl_global.check_callback},
    {"task_type", &zl_global.task_type},
    {"tasks_namespace", &zl_global.tasks_namespace},
    {"future_type", &zl_global.future_type},
    {"set_result_unless_cancelled", &zl_global.set_result_unless_cancelled},
    {"transport_fatal_error", &zl_global.transport_fatal_error},
    {"transport_protocol_error", &zl_global.transport_protocol_error},
    {"warn_send_after_lost", &zl_global.warn_send_after_lost},
    {"transport_socket_type", &zl_global.transport_socket_type},
    {"buffered_protocol_type", &zl_global.buffered_protocol_type},
};

static int
module_set_one_hook(PyObject *module, PyObject *name, PyObject *value)
{
    if (PyUnicode_CompareWithASCIIString(name, "transport_base") == 0) {
        /* The stream transport type subclasses asyncio.Transport, so it is made once asyncio is importable. */
        PyObject *type = zl_stream_type_create(value);
        if (type == NULL) {
            return -1;
        }
        return PyModule_AddObject(module, "TCPTransport", type) < 0 ? (Py_DECREF(type), -1) : 0;
    }
    if (PyUnicode_CompareWithASCIIString(name, "datagram_transport_base") == 0) {
        /* The datagram transport type subclasses asyncio.DatagramTransport (and asyncio.Transport). */
        PyObject *type = zl_datagram_type_create(value);
        if (type == NULL) {
            return -1;
        }
        return PyModule_AddObject(module, "UDPTransport", type) < 0 ? (Py_DECREF(type), -1) : 0;
    }
    for (size_t i = 0; i < sizeof(hook_table) / sizeof(hook_table[0]); i++) {
        if (PyUnicode_CompareWithASCIIString(name, hook_table[i].name) == 0) {
            Py_INCREF(value);
            Py_XSETREF(*hook_table[i].slot, value);
            return 0;
        }
    }
    PyErr_Format(PyExc_TypeError, "_set_hooks() got an unexpected keyword argument '%U'", name);
    return -1;
}

static PyObject *
module_set_hooks(PyObject *module, PyObject *args, PyObject *kwds)
{
    if (PyTuple_GET_SIZE(args) != 0) {
        PyErr_SetString(PyExc_TypeError, "_set_hooks() takes keyword arguments only");
        return NULL;
    }
    PyObject *name, *value;
    Py_ssize_t pos = 0;
    while (kwds != NULL && PyDict_Next(kwds, &pos, &name, &value)) {
        if (module_set_one_hook(module, name, value) < 0) {
            return NULL;
        }
    }
    Py_RETURN_NONE;
}

PyObject *zl_build_info(PyObject *module, PyObject *ignored);   /* build_info.c */

static PyMethodDef module_methods[] = {
    {"backends", (PyCFunction)module_backends, METH_NOARGS, "Names of the I/O backends compiled in."},
    {"default_backend", (PyCFunction)module_default_backend, METH_NOARGS,
     "The backend chosen at build time (ZLOOP_BACKEND overrides it per loop)."},
    {"_build_info", (PyCFunction)zl_build_info, METH_NOARGS,
     "What this extension was built with: version, options, libuv and libevent versions (python -m zloop info)."},
    {"_set_hooks", (PyCFunction)(void (*)(void))module_set_hooks, METH_VARARGS | METH_KEYWORDS,
     "Install the Python helpers the C core calls (zloop does this on import)."},
    {NULL, NULL, 0, NULL},
};

static int
module_add_type(PyObject *module, const char *name, PyTypeObject *type)
{
    if (PyType_Ready(type) < 0) {
        return -1;
    }
    Py_INCREF(type);
    if (PyModule_AddObject(module, name, (PyObject *)type) < 0) {
        Py_DECREF(type);
        return -1;
    }
    return 0;
}

/* Multi-phase initialisation (PEP 489). The core still keeps process-wide state (zl_global, free lists), so the
 * module says so: the main interpreter only (an import in any subinterpreter raises ImportError), and the GIL is
 * needed (never tested without one). */
static int
module_exec(PyObject *module)
{
    if (PyInterpreterState_Get() != PyInterpreterState_Main()) {
        /* The slot below stops isolated subinterpreters only; a legacy one would overwrite zl_global's hooks with
         * its own objects under the main interpreter's loops. */
        PyErr_SetString(PyExc_ImportError,
                        "zloop._zloop does not support loading in subinterpreters (its C state is process-wide)");
        return -1;
    }
    if (zl_global.str_context == NULL) {
        zl_global.str_context = PyUnicode_InternFromString("context");
        zl_global.str_name = PyUnicode_InternFromString("name");
        zl_global.str_Task = PyUnicode_InternFromString("Task");
        if (zl_global.str_context == NULL || zl_global.str_name == NULL || zl_global.str_Task == NULL) {
            return -1;
        }
    }
    if (zl_global.kwnames_loop_name == NULL) {
        zl_global.kwnames_loop = Py_BuildValue("(s)", "loop");
        zl_global.kwnames_loop_name = Py_BuildValue("(ss)", "loop", "name");
        zl_global.kwnames_loop_name_context = Py_BuildValue("(sss)", "loop", "name", "context");
        if (zl_global.kwnames_loop == NULL || zl_global.kwnames_loop_name == NULL ||
            zl_global.kwnames_loop_name_context == NULL) {
            return -1;
        }
    }
    if (module_add_type(module, "LoopCore", &zl_loop_type) < 0 ||
        module_add_type(module, "Handle", &zl_handle_type) < 0 ||
        module_add_type(module, "TimerHandle", &zl_timer_handle_type) < 0) {
        return -1;
    }
    return 0;
}

static PyModuleDef_Slot module_slots[] = {
    {Py_mod_exec, module_exec},
#ifdef Py_mod_multiple_interpreters
    {Py_mod_multiple_interpreters, Py_MOD_MULTIPLE_INTERPRETERS_NOT_SUPPORTED},
#endif
#ifdef Py_mod_gil
    {Py_mod_gil, Py_MOD_GIL_USED},
#endif
    {0, NULL},
};

static struct PyModuleDef zloop_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "zloop._zloop",
    .m_doc = "The C core of zloop: loop, handles, timers and I/O backends.",
    .m_size = 0,
    .m_methods = module_methods,
    .m_slots = module_slots,
};

PyMODINIT_FUNC
PyInit__zloop(void)
{
    return PyModuleDef_Init(&zloop_module);
}
