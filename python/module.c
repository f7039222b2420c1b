/* python/module.c — the zloop._zloop extension module: its heap types, the compiled-in backends, and its state
 * (one per interpreter) with the Python hooks the C core calls into; subinterpreters may import it. */
#include "../core/tls.h"

#include <stddef.h>

static struct PyModuleDef zloop_module;

/* Module states alive in the process, over every interpreter: tests check that subinterpreters leave none behind. */
static _Atomic long live_states;

static zl_state *
module_state(PyObject *module)
{
    return (zl_state *)PyModule_GetState(module);
}

#if PY_VERSION_HEX < 0x030B0000
/* PyType_GetModuleByDef before 3.11: the first heap type in the MRO that a zloop module made. */
static PyObject *
type_module_by_def(PyTypeObject *type, PyModuleDef *def)
{
    PyObject *mro = type->tp_mro;
    for (Py_ssize_t i = 0; mro != NULL && i < PyTuple_GET_SIZE(mro); i++) {
        PyTypeObject *base = (PyTypeObject *)PyTuple_GET_ITEM(mro, i);
        if (!(base->tp_flags & Py_TPFLAGS_HEAPTYPE)) {
            continue;
        }
        PyObject *module = ((PyHeapTypeObject *)base)->ht_module;
        if (module != NULL && PyModule_GetDef(module) == def) {
            return module;
        }
    }
    PyErr_Format(PyExc_TypeError, "PyType_GetModuleByDef: No superclass of '%s' has the given module", type->tp_name);
    return NULL;
}
#define PyType_GetModuleByDef type_module_by_def
#endif

zl_state *
zl_state_of_type(PyTypeObject *type, PyObject **module)
{
    *module = PyType_GetModuleByDef(type, &zloop_module);
    return *module == NULL ? NULL : module_state(*module);
}

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
    size_t offset;                    /* of the field in zl_state */
} hook_table[] = {
    {"report_callback_error", offsetof(zl_state, report_callback_error)},
    {"warn_slow_callback", offsetof(zl_state, warn_slow_callback)},
    {"extract_stack", offsetof(zl_state, extract_stack)},
    {"format_handle", offsetof(zl_state, format_handle)},
    {"check_callback", offsetof(zl_state, check_callback)},
    {"task_type", offsetof(zl_state, task_type)},
    {"tasks_namespace", offsetof(zl_state, tasks_namespace)},
    {"future_type", offsetof(zl_state, future_type)},
    {"set_result_unless_cancelled", offsetof(zl_state, set_result_unless_cancelled)},
    {"transport_fatal_error", offsetof(zl_state, transport_fatal_error)},
    {"transport_protocol_error", offsetof(zl_state, transport_protocol_error)},
    {"warn_send_after_lost", offsetof(zl_state, warn_send_after_lost)},
    {"transport_socket_type", offsetof(zl_state, transport_socket_type)},
    {"buffered_protocol_type", offsetof(zl_state, buffered_protocol_type)},
};

static int
module_set_one_hook(PyObject *module, PyObject *name, PyObject *value)
{
    if (PyUnicode_CompareWithASCIIString(name, "transport_base") == 0) {
        /* The stream transport type subclasses asyncio.Transport, so it is made once asyncio is importable. */
        PyObject *type = zl_stream_type_create(module, value);
        if (type == NULL) {
            return -1;
        }
        return PyModule_AddObject(module, "TCPTransport", type) < 0 ? (Py_DECREF(type), -1) : 0;
    }
    if (PyUnicode_CompareWithASCIIString(name, "datagram_transport_base") == 0) {
        /* The datagram transport type subclasses asyncio.DatagramTransport (and asyncio.Transport). */
        PyObject *type = zl_datagram_type_create(module, value);
        if (type == NULL) {
            return -1;
        }
        return PyModule_AddObject(module, "UDPTransport", type) < 0 ? (Py_DECREF(type), -1) : 0;
    }
    if (PyUnicode_CompareWithASCIIString(name, "tls") == 0) {
        /* The C TLS protocol and transport types (core/tls.h), with what they call, once ssl is importable. */
        return zl_tls_setup(module, module_state(module), value);
    }
    for (size_t i = 0; i < sizeof(hook_table) / sizeof(hook_table[0]); i++) {
        if (PyUnicode_CompareWithASCIIString(name, hook_table[i].name) == 0) {
            PyObject **slot = (PyObject **)(void *)((char *)module_state(module) + hook_table[i].offset);
            Py_INCREF(value);
            Py_XSETREF(*slot, value);
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

static PyObject *
module_live_states(PyObject *Py_UNUSED(module), PyObject *Py_UNUSED(ignored))
{
    return PyLong_FromLong(live_states);
}

static PyMethodDef module_methods[] = {
    {"backends", (PyCFunction)module_backends, METH_NOARGS, "Names of the I/O backends compiled in."},
    {"default_backend", (PyCFunction)module_default_backend, METH_NOARGS,
     "The backend chosen at build time (ZLOOP_BACKEND overrides it per loop)."},
    {"_build_info", (PyCFunction)zl_build_info, METH_NOARGS,
     "What this extension was built with: version, options, libuv and libevent versions (python -m zloop info)."},
    {"_live_states", (PyCFunction)module_live_states, METH_NOARGS,
     "How many zloop module states are alive in the process, over every interpreter (tests: none leak)."},
    {"_set_hooks", (PyCFunction)(void (*)(void))module_set_hooks, METH_VARARGS | METH_KEYWORDS,
     "Install the Python helpers the C core calls (zloop does this on import)."},
    {NULL, NULL, 0, NULL},
};

/* A heap type made from spec for this module, kept in *slot (owned) and added to the module under `name`. */
static int
module_add_heap_type(PyObject *module, const char *name, PyType_Spec *spec, PyObject *base, PyTypeObject **slot)
{
    *slot = (PyTypeObject *)PyType_FromModuleAndSpec(module, spec, base);
    if (*slot == NULL) {
        return -1;
    }
    Py_INCREF(*slot);
    if (PyModule_AddObject(module, name, (PyObject *)*slot) < 0) {
        Py_DECREF(*slot);
        return -1;
    }
    return 0;
}

/* Every object the state owns, for the GC and for teardown. */
static const size_t state_objects[] = {
    offsetof(zl_state, loop_type),
    offsetof(zl_state, handle_type),
    offsetof(zl_state, timer_handle_type),
    offsetof(zl_state, stream_type),
    offsetof(zl_state, datagram_type),
    offsetof(zl_state, socket_type),
    offsetof(zl_state, acceptor_type),
    offsetof(zl_state, report_callback_error),
    offsetof(zl_state, warn_slow_callback),
    offsetof(zl_state, extract_stack),
    offsetof(zl_state, format_handle),
    offsetof(zl_state, check_callback),
    offsetof(zl_state, task_type),
    offsetof(zl_state, tasks_namespace),
    offsetof(zl_state, str_Task),
    offsetof(zl_state, set_result_unless_cancelled),
    offsetof(zl_state, transport_fatal_error),
    offsetof(zl_state, transport_protocol_error),
    offsetof(zl_state, warn_send_after_lost),
    offsetof(zl_state, transport_socket_type),
    offsetof(zl_state, buffered_protocol_type),
    offsetof(zl_state, future_type),
    offsetof(zl_state, kwnames_loop),
    offsetof(zl_state, kwnames_loop_name),
    offsetof(zl_state, kwnames_loop_name_context),
    offsetof(zl_state, str_context),
    offsetof(zl_state, str_context_alias),
    offsetof(zl_state, str_name),
    offsetof(zl_state, str_name_alias),
    offsetof(zl_state, read_spare),
};

#define STATE_OBJECT(state, i) ((PyObject **)(void *)((char *)(state) + state_objects[i]))
#define STATE_OBJECT_COUNT (sizeof(state_objects) / sizeof(state_objects[0]))

static int
module_traverse(PyObject *module, visitproc visit, void *arg)
{
    zl_state *state = module_state(module);
    for (size_t i = 0; state != NULL && i < STATE_OBJECT_COUNT; i++) {
        Py_VISIT(*STATE_OBJECT(state, i));
    }
    for (int i = 0; state != NULL && i < ZL_NAME_COUNT; i++) {
        Py_VISIT(state->names[i]);
    }
    return state == NULL ? 0 : zl_tls_state_traverse(state->tls, visit, arg);
}

static int
module_clear(PyObject *module)
{
    zl_state *state = module_state(module);
    if (state == NULL) {
        return 0;
    }
    zl_handle_freelist_clear(state);
    zl_tls_state_clear(state->tls);
    for (size_t i = 0; i < STATE_OBJECT_COUNT; i++) {
        Py_CLEAR(*STATE_OBJECT(state, i));
    }
    for (int i = 0; i < ZL_NAME_COUNT; i++) {
        Py_CLEAR(state->names[i]);
    }
    return 0;
}

static void
module_free(void *module)
{
    module_clear((PyObject *)module);
    zl_state *state = module_state((PyObject *)module);
    if (state != NULL) {
        live_states -= state->counted;
        state->counted = 0;
        PyMem_RawFree(state->read_buffer);
        PyMem_RawFree(state->recv_buffer);
        PyMem_RawFree(state->sock_recv_buffer);
        state->read_buffer = state->recv_buffer = state->sock_recv_buffer = NULL;
        zl_tls_state_free(state->tls);
        state->tls = NULL;
    }
}

static int
module_init_names(zl_state *state)
{
    state->str_context = PyUnicode_InternFromString("context");
    state->str_name = PyUnicode_InternFromString("name");
    state->str_Task = PyUnicode_InternFromString("Task");
    state->kwnames_loop = Py_BuildValue("(s)", "loop");
    state->kwnames_loop_name = Py_BuildValue("(ss)", "loop", "name");
    state->kwnames_loop_name_context = Py_BuildValue("(sss)", "loop", "name", "context");
    if (state->str_context == NULL || state->str_name == NULL || state->str_Task == NULL ||
        state->kwnames_loop == NULL || state->kwnames_loop_name == NULL || state->kwnames_loop_name_context == NULL ||
        zl_interned_names_init(state->names) < 0) {
        return -1;
    }
    return 0;
}

/* Multi-phase initialisation (PEP 489): each interpreter that imports the module gets its own module object and
 * state, so subinterpreters may load it, those with their own GIL too: no mutable C state is shared between
 * interpreters but the thread-safe machine facts of loop_stats.c and backend_epoll.c. The GIL is needed (never
 * tested without one: no free-threaded build here). */
static int
module_exec(PyObject *module)
{
    zl_state *state = module_state(module);
    state->counted = 1;
    live_states++;
    if (module_init_names(state) < 0 ||
        module_add_heap_type(module, "LoopCore", &zl_loop_spec, NULL, &state->loop_type) < 0 ||
        module_add_heap_type(module, "Handle", &zl_handle_spec, NULL, &state->handle_type) < 0 ||
        module_add_heap_type(module, "TimerHandle", &zl_timer_handle_spec, (PyObject *)state->handle_type,
                             &state->timer_handle_type) < 0) {
        return -1;
    }
    return 0;
}

static PyModuleDef_Slot module_slots[] = {
    {Py_mod_exec, module_exec},
#ifdef Py_mod_multiple_interpreters
    {Py_mod_multiple_interpreters, Py_MOD_PER_INTERPRETER_GIL_SUPPORTED},
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
    .m_size = sizeof(zl_state),
    .m_methods = module_methods,
    .m_slots = module_slots,
    .m_traverse = module_traverse,
    .m_clear = module_clear,
    .m_free = module_free,
};

PyMODINIT_FUNC
PyInit__zloop(void)
{
    return PyModuleDef_Init(&zloop_module);
}
