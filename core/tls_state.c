/* core/tls_state.c — what the C TLS layer keeps per module state: its two types, the ssl exception classes it
 * catches by type, the Python helpers that report errors as asyncio does, the interned method names, and the _ssl
 * methods the record loop calls. */
#include "tls.h"

#include <stddef.h>

/* The namespace attributes taken as they are, by the field they go to. */
static const struct {
    const char *name;
    size_t offset;
} tls_hook_table[] = {
    {"SSLWantReadError", offsetof(zl_tls_state, want_read_error)},
    {"SSLSyscallError", offsetof(zl_tls_state, syscall_error)},
    {"SSLError", offsetof(zl_tls_state, ssl_error)},
    {"CertificateError", offsetof(zl_tls_state, certificate_error)},
    {"TimeoutError", offsetof(zl_tls_state, timeout_error)},
    {"report_fatal", offsetof(zl_tls_state, report_fatal)},
    {"report_error", offsetof(zl_tls_state, report_error)},
    {"log", offsetof(zl_tls_state, log)},
    {"SSLSocketType", offsetof(zl_tls_state, ssl_socket_type)},
    {"MemoryBIO", offsetof(zl_tls_state, memory_bio_type)},
};

#define TLS_HOOK(ts, i) ((PyObject **)(void *)((char *)(ts) + tls_hook_table[i].offset))
#define TLS_HOOK_COUNT (sizeof(tls_hook_table) / sizeof(tls_hook_table[0]))

/* Interned method names, by field. */
static const struct {
    const char *name;
    size_t offset;
} tls_name_table[] = {
    {"read", offsetof(zl_tls_state, str_read)},
    {"write", offsetof(zl_tls_state, str_write)},
    {"do_handshake", offsetof(zl_tls_state, str_do_handshake)},
    {"shutdown", offsetof(zl_tls_state, str_shutdown)},
    {"pending", offsetof(zl_tls_state, str_pending)},
    {"call_soon", offsetof(zl_tls_state, str_call_soon)},
    {"call_later", offsetof(zl_tls_state, str_call_later)},
    {"cancel", offsetof(zl_tls_state, str_cancel)},
    {"_force_close", offsetof(zl_tls_state, str_force_close)},
    {"abort", offsetof(zl_tls_state, str_abort)},
    {"close", offsetof(zl_tls_state, str_close)},
    {"pause_reading", offsetof(zl_tls_state, str_pause_reading)},
    {"resume_reading", offsetof(zl_tls_state, str_resume_reading)},
    {"get_extra_info", offsetof(zl_tls_state, str_get_extra_info)},
    {"data_received", offsetof(zl_tls_state, str_data_received)},
    {"buffer_updated", offsetof(zl_tls_state, str_buffer_updated)},
    {"get_buffer", offsetof(zl_tls_state, str_get_buffer)},
    {"eof_received", offsetof(zl_tls_state, str_eof_received)},
    {"connection_made", offsetof(zl_tls_state, str_connection_made)},
    {"connection_lost", offsetof(zl_tls_state, str_connection_lost)},
    {"pause_writing", offsetof(zl_tls_state, str_pause_writing)},
    {"resume_writing", offsetof(zl_tls_state, str_resume_writing)},
    {"getpeercert", offsetof(zl_tls_state, str_getpeercert)},
    {"cipher", offsetof(zl_tls_state, str_cipher)},
    {"compression", offsetof(zl_tls_state, str_compression)},
    {"set_result", offsetof(zl_tls_state, str_set_result)},
    {"set_exception", offsetof(zl_tls_state, str_set_exception)},
    {"cancelled", offsetof(zl_tls_state, str_cancelled)},
    {"get_debug", offsetof(zl_tls_state, str_get_debug)},
    {"time", offsetof(zl_tls_state, str_time)},
};

#define TLS_NAME(ts, i) ((PyObject **)(void *)((char *)(ts) + tls_name_table[i].offset))
#define TLS_NAME_COUNT (sizeof(tls_name_table) / sizeof(tls_name_table[0]))

/* The descriptors of the _ssl methods (and MemoryBIO.pending) the record loop calls, by type and field: looking a
 * method up on every call costs more than a short SSLObject.read. */
static const struct {
    size_t type_offset;
    const char *name;
    size_t offset;
} tls_descr_table[] = {
    {offsetof(zl_tls_state, ssl_socket_type), "read", offsetof(zl_tls_state, ssl_read)},
    {offsetof(zl_tls_state, ssl_socket_type), "write", offsetof(zl_tls_state, ssl_write)},
    {offsetof(zl_tls_state, ssl_socket_type), "pending", offsetof(zl_tls_state, ssl_pending)},
    {offsetof(zl_tls_state, memory_bio_type), "read", offsetof(zl_tls_state, bio_read)},
    {offsetof(zl_tls_state, memory_bio_type), "write", offsetof(zl_tls_state, bio_write)},
    {offsetof(zl_tls_state, memory_bio_type), "pending", offsetof(zl_tls_state, bio_pending)},
};

#define TLS_DESCR(ts, i) ((PyObject **)(void *)((char *)(ts) + tls_descr_table[i].offset))
#define TLS_DESCR_TYPE(ts, i) (*(PyObject **)(void *)((char *)(ts) + tls_descr_table[i].type_offset))
#define TLS_DESCR_COUNT (sizeof(tls_descr_table) / sizeof(tls_descr_table[0]))

static int
tls_state_fill_descriptors(zl_tls_state *ts)
{
    for (size_t i = 0; i < TLS_DESCR_COUNT; i++) {
        PyObject *type = TLS_DESCR_TYPE(ts, i);
        if (!PyType_Check(type)) {
            PyErr_Format(PyExc_TypeError, "the TLS hooks need _ssl's types, got %R", type);
            return -1;
        }
        if ((*TLS_DESCR(ts, i) = PyObject_GetAttrString(type, tls_descr_table[i].name)) == NULL) {
            return -1;
        }
    }
    if (Py_TYPE(ts->bio_pending)->tp_descr_get == NULL) {
        PyErr_SetString(PyExc_TypeError, "MemoryBIO.pending is not a descriptor");
        return -1;
    }
    return 0;
}

static int
tls_state_fill(zl_tls_state *ts, PyObject *namespace)
{
    for (size_t i = 0; i < TLS_HOOK_COUNT; i++) {
        if ((*TLS_HOOK(ts, i) = PyObject_GetAttrString(namespace, tls_hook_table[i].name)) == NULL) {
            return -1;
        }
    }
    for (size_t i = 0; i < TLS_NAME_COUNT; i++) {
        if ((*TLS_NAME(ts, i) = PyUnicode_InternFromString(tls_name_table[i].name)) == NULL) {
            return -1;
        }
    }
    static const struct {
        const char *name;
        size_t offset;
    } flags[] = {
        {"shutdown_timeout_until_lost", offsetof(zl_tls_state, shutdown_timeout_until_lost)},
        {"closing_with_transport", offsetof(zl_tls_state, closing_with_transport)},
    };
    for (size_t i = 0; i < sizeof(flags) / sizeof(flags[0]); i++) {
        PyObject *value = PyObject_GetAttrString(namespace, flags[i].name);
        int on = value ? PyObject_IsTrue(value) : -1;
        Py_XDECREF(value);
        if (on < 0) {
            return -1;
        }
        *(int *)(void *)((char *)ts + flags[i].offset) = on;
    }
    return tls_state_fill_descriptors(ts);
}

/* One of the two types, over the base the namespace names, added to the module under its short name. */
static PyTypeObject *
tls_type_create(PyObject *module, PyType_Spec *spec, PyObject *namespace, const char *base_name, const char *name)
{
    PyObject *base = PyObject_GetAttrString(namespace, base_name);
    if (base == NULL) {
        return NULL;
    }
    PyObject *type = PyType_FromModuleAndSpec(module, spec, base);
    Py_DECREF(base);
    if (type == NULL) {
        return NULL;
    }
    Py_INCREF(type);
    if (PyModule_AddObject(module, name, type) < 0) {
        Py_DECREF(type);
        Py_DECREF(type);
        return NULL;
    }
    return (PyTypeObject *)type;
}

int
zl_tls_setup(PyObject *module, zl_state *state, PyObject *namespace)
{
    if (state->tls != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "the TLS types exist already");
        return -1;
    }
    zl_tls_state *ts = PyMem_Calloc(1, sizeof(zl_tls_state));
    if (ts == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    if (tls_state_fill(ts, namespace) < 0 ||
        (ts->protocol_type = tls_type_create(module, &zl_tls_protocol_spec, namespace, "protocol_base",
                                             "SSLProtocol")) == NULL ||
        (ts->transport_type = tls_type_create(module, &zl_tls_transport_spec, namespace, "transport_base",
                                              "SSLTransport")) == NULL) {
        zl_tls_state_free(ts);
        return -1;
    }
    state->tls = ts;
    return 0;
}

int
zl_tls_state_traverse(zl_tls_state *ts, visitproc visit, void *arg)
{
    if (ts == NULL) {
        return 0;
    }
    Py_VISIT(ts->protocol_type);
    Py_VISIT(ts->transport_type);
    for (size_t i = 0; i < TLS_HOOK_COUNT; i++) {
        Py_VISIT(*TLS_HOOK(ts, i));
    }
    for (size_t i = 0; i < TLS_DESCR_COUNT; i++) {
        Py_VISIT(*TLS_DESCR(ts, i));
    }
    return 0;
}

void
zl_tls_state_clear(zl_tls_state *ts)
{
    if (ts == NULL) {
        return;
    }
    Py_CLEAR(ts->protocol_type);
    Py_CLEAR(ts->transport_type);
    for (size_t i = 0; i < TLS_HOOK_COUNT; i++) {
        Py_CLEAR(*TLS_HOOK(ts, i));
    }
    for (size_t i = 0; i < TLS_DESCR_COUNT; i++) {
        Py_CLEAR(*TLS_DESCR(ts, i));
    }
}

void
zl_tls_state_free(zl_tls_state *ts)
{
    if (ts == NULL) {
        return;
    }
    zl_tls_state_clear(ts);
    for (size_t i = 0; i < TLS_NAME_COUNT; i++) {
        Py_CLEAR(*TLS_NAME(ts, i));
    }
    PyMem_Free(ts);
}
