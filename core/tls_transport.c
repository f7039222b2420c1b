/* core/tls_transport.c — the transport a TLS application sees: asyncio's _SSLProtocolTransport surface (write,
 * close, flow control, extra info) over the C TLS protocol, as a C type subclassing asyncio.Transport. */
#include "tls.h"

#include <stddef.h>
#include <structmember.h>

zl_tls_transport *
zl_tls_transport_new(zl_tls *protocol)
{
    zl_tls_transport *self = PyObject_GC_New(zl_tls_transport, protocol->ts->transport_type);
    if (self == NULL) {
        return NULL;
    }
    self->extra_slot = NULL;
    self->weakreflist = NULL;
    self->dict = NULL;
    Py_INCREF(protocol);
    self->protocol = protocol;
    self->closed = 0;
    PyObject_GC_Track(self);
    return self;
}

/* asyncio's transport drops its protocol at a second close() (which lets a cycle through the application's protocol
 * go by reference counting alone): later calls fail with AttributeError there, and here. */
static zl_tls *
tls_transport_protocol(zl_tls_transport *self)
{
    if (self->protocol == NULL) {
        PyErr_SetString(PyExc_AttributeError, "the TLS transport was closed twice: it has no protocol any more");
    }
    return self->protocol;
}

/* ------------------------------------------------------------------ writing */

static PyObject *
tls_transport_write(zl_tls_transport *self, PyObject *data)
{
    zl_tls *protocol = tls_transport_protocol(self);
    if (protocol == NULL) {
        return NULL;
    }
    if (!PyBytes_Check(data) && !PyByteArray_Check(data) && !PyMemoryView_Check(data)) {
        PyErr_Format(PyExc_TypeError, "data: expecting a bytes-like instance, got %.200s", Py_TYPE(data)->tp_name);
        return NULL;
    }
    Py_ssize_t len = PyObject_Length(data);
    if (len < 0) {
        return NULL;
    }
    if (len == 0) {
        Py_RETURN_NONE;
    }
    return zl_tls_none_unless(zl_tls_write_appdata(protocol, data, 1));
}

static PyObject *
tls_transport_writelines(zl_tls_transport *self, PyObject *list_of_data)
{
    zl_tls *protocol = tls_transport_protocol(self);
    if (protocol == NULL) {
        return NULL;
    }
    return zl_tls_none_unless(zl_tls_write_appdata(protocol, list_of_data, 0));
}

static PyObject *
tls_transport_write_eof(zl_tls_transport *Py_UNUSED(self), PyObject *Py_UNUSED(ignored))
{
    PyErr_SetNone(PyExc_NotImplementedError);
    return NULL;
}

static PyObject *
tls_transport_can_write_eof(zl_tls_transport *Py_UNUSED(self), PyObject *Py_UNUSED(ignored))
{
    Py_RETURN_FALSE;
}

static PyObject *
tls_transport_test_append_write_backlog(zl_tls_transport *self, PyObject *data)
{
    zl_tls *protocol = tls_transport_protocol(self);
    if (protocol == NULL) {
        return NULL;
    }
    Py_ssize_t len = PyObject_Length(data);
    if (len < 0 || PyList_Append(protocol->write_backlog, data) < 0) {
        return NULL;
    }
    protocol->write_buffer_size += len;
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------------ closing */

static PyObject *
tls_transport_close(zl_tls_transport *self, PyObject *Py_UNUSED(ignored))
{
    if (self->closed) {
        Py_CLEAR(self->protocol);
        Py_RETURN_NONE;
    }
    self->closed = 1;
    return zl_tls_none_unless(zl_tls_start_shutdown(self->protocol));
}

static PyObject *
tls_transport_force_close(zl_tls_transport *self, PyObject *exc)
{
    self->closed = 1;
    return zl_tls_none_unless(self->protocol == NULL ? 0 : zl_tls_abort(self->protocol, exc));
}

static PyObject *
tls_transport_abort(zl_tls_transport *self, PyObject *Py_UNUSED(ignored))
{
    return tls_transport_force_close(self, Py_None);
}

static PyObject *
tls_transport_is_closing(zl_tls_transport *self, PyObject *Py_UNUSED(ignored))
{
    zl_tls *protocol = self->protocol;
    if (self->closed || protocol == NULL || !protocol->ts->closing_with_transport || protocol->transport == NULL) {
        return PyBool_FromLong(self->closed);
    }
    PyObject *name = PyUnicode_InternFromString("is_closing");
    PyObject *res = name ? PyObject_CallMethodNoArgs(protocol->transport, name) : NULL;
    Py_XDECREF(name);
    return res;
}

/* ------------------------------------------------------------------ reading */

static PyObject *
tls_transport_is_reading(zl_tls_transport *self, PyObject *Py_UNUSED(ignored))
{
    zl_tls *protocol = tls_transport_protocol(self);
    if (protocol == NULL) {
        return NULL;
    }
    return PyBool_FromLong(!protocol->app_reading_paused);
}

static PyObject *
tls_transport_pause_reading(zl_tls_transport *self, PyObject *Py_UNUSED(ignored))
{
    zl_tls *protocol = tls_transport_protocol(self);
    if (protocol == NULL) {
        return NULL;
    }
    protocol->app_reading_paused = 1;
    Py_RETURN_NONE;
}

static PyObject *
tls_transport_resume_reading(zl_tls_transport *self, PyObject *Py_UNUSED(ignored))
{
    zl_tls *protocol = tls_transport_protocol(self);
    if (protocol == NULL) {
        return NULL;
    }
    return zl_tls_none_unless(zl_tls_resume_reading(protocol));
}

/* ------------------------------------------------------------------ flow control */

static int
tls_transport_parse_limits(PyObject *args, PyObject *kwds, const char *format, PyObject **high, PyObject **low)
{
    static char *kwlist[] = {"high", "low", NULL};
    *high = *low = Py_None;
    return PyArg_ParseTupleAndKeywords(args, kwds, format, kwlist, high, low) ? 0 : -1;
}

static PyObject *
tls_transport_set_write_buffer_limits(zl_tls_transport *self, PyObject *args, PyObject *kwds)
{
    zl_tls *protocol = tls_transport_protocol(self);
    if (protocol == NULL) {
        return NULL;
    }
    PyObject *high, *low;
    Py_ssize_t hi, lo;
    if (tls_transport_parse_limits(args, kwds, "|OO:set_write_buffer_limits", &high, &low) < 0 ||
        zl_tls_flow_limits(high, low, 512, &hi, &lo) < 0) {
        return NULL;
    }
    protocol->outgoing_high = hi;
    protocol->outgoing_low = lo;
    return zl_tls_none_unless(zl_tls_control_app_writing(protocol));
}

static PyObject *
tls_transport_get_write_buffer_limits(zl_tls_transport *self, PyObject *Py_UNUSED(ignored))
{
    zl_tls *protocol = tls_transport_protocol(self);
    if (protocol == NULL) {
        return NULL;
    }
    return Py_BuildValue("(nn)", protocol->outgoing_low, protocol->outgoing_high);
}

static PyObject *
tls_transport_get_write_buffer_size(zl_tls_transport *self, PyObject *Py_UNUSED(ignored))
{
    zl_tls *protocol = tls_transport_protocol(self);
    if (protocol == NULL) {
        return NULL;
    }
    Py_ssize_t size = zl_tls_write_buffer_size(protocol);
    return size < 0 ? NULL : PyLong_FromSsize_t(size);
}

static PyObject *
tls_transport_set_read_buffer_limits(zl_tls_transport *self, PyObject *args, PyObject *kwds)
{
    zl_tls *protocol = tls_transport_protocol(self);
    if (protocol == NULL) {
        return NULL;
    }
    PyObject *high, *low;
    Py_ssize_t hi, lo;
    if (tls_transport_parse_limits(args, kwds, "|OO:set_read_buffer_limits", &high, &low) < 0 ||
        zl_tls_flow_limits(high, low, 256, &hi, &lo) < 0) {
        return NULL;
    }
    protocol->incoming_high = hi;
    protocol->incoming_low = lo;
    return zl_tls_none_unless(zl_tls_control_ssl_reading(protocol));
}

static PyObject *
tls_transport_get_read_buffer_limits(zl_tls_transport *self, PyObject *Py_UNUSED(ignored))
{
    zl_tls *protocol = tls_transport_protocol(self);
    if (protocol == NULL) {
        return NULL;
    }
    return Py_BuildValue("(nn)", protocol->incoming_low, protocol->incoming_high);
}

static PyObject *
tls_transport_get_read_buffer_size(zl_tls_transport *self, PyObject *Py_UNUSED(ignored))
{
    zl_tls *protocol = tls_transport_protocol(self);
    if (protocol == NULL) {
        return NULL;
    }
    Py_ssize_t size = zl_tls_read_buffer_size(protocol);
    return size < 0 ? NULL : PyLong_FromSsize_t(size);
}

/* ------------------------------------------------------------------ protocol and extra info */

static PyObject *
tls_transport_get_extra_info(zl_tls_transport *self, PyObject *args, PyObject *kwds)
{
    zl_tls *protocol = tls_transport_protocol(self);
    if (protocol == NULL) {
        return NULL;
    }
    static char *kwlist[] = {"name", "default", NULL};
    PyObject *name, *default_value = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|O:get_extra_info", kwlist, &name, &default_value)) {
        return NULL;
    }
    PyObject *value = PyDict_GetItemWithError(protocol->extra, name);
    if (value != NULL) {
        return Py_NewRef(value);
    }
    if (PyErr_Occurred()) {
        return NULL;
    }
    if (protocol->transport != NULL) {
        PyObject *call_args[3] = {protocol->transport, name, default_value};
        return PyObject_VectorcallMethod(protocol->ts->str_get_extra_info, call_args,
                                         3 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
    }
    return Py_NewRef(default_value);
}

static PyObject *
tls_transport_set_protocol(zl_tls_transport *self, PyObject *app_protocol)
{
    zl_tls *protocol = tls_transport_protocol(self);
    if (protocol == NULL) {
        return NULL;
    }
    return zl_tls_none_unless(zl_tls_set_app_protocol(protocol, app_protocol));
}

static PyObject *
tls_transport_get_protocol(zl_tls_transport *self, PyObject *Py_UNUSED(ignored))
{
    zl_tls *protocol = tls_transport_protocol(self);
    if (protocol == NULL) {
        return NULL;
    }
    return zl_ref_or_none(protocol->app_protocol);
}

static PyObject *
tls_transport_get_protocol_paused(zl_tls_transport *self, void *Py_UNUSED(closure))
{
    zl_tls *protocol = tls_transport_protocol(self);
    if (protocol == NULL) {
        return NULL;
    }
    return PyBool_FromLong(protocol->app_writing_paused);
}

static PyObject *
tls_transport_get_ssl_protocol(zl_tls_transport *self, void *Py_UNUSED(closure))
{
    return zl_ref_or_none((PyObject *)self->protocol);
}

static PyObject *
tls_transport_get_closed(zl_tls_transport *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(self->closed);
}

static PyObject *
tls_transport_get_loop(zl_tls_transport *self, void *Py_UNUSED(closure))
{
    return zl_ref_or_none(self->protocol ? self->protocol->loop : NULL);
}

/* ------------------------------------------------------------------ lifetime */

/* As _SSLProtocolTransport.__del__: a transport dropped unclosed warns. */
static void
tls_transport_finalize(zl_tls_transport *self)
{
    if (self->closed) {
        return;
    }
    self->closed = 1;
    PyObject *exc = zl_err_fetch();
    if (PyErr_WarnEx(PyExc_ResourceWarning, "unclosed transport <asyncio._SSLProtocolTransport object>", 1) < 0) {
        PyErr_WriteUnraisable((PyObject *)self);
    }
    zl_err_restore(exc);
}

static int
tls_transport_traverse(zl_tls_transport *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->extra_slot);
    Py_VISIT(self->dict);
    Py_VISIT(self->protocol);
    return 0;
}

/* The protocol stays until dealloc (or a second close()): its own tp_clear breaks the cycle. */
static int
tls_transport_clear(zl_tls_transport *self)
{
    Py_CLEAR(self->extra_slot);
    Py_CLEAR(self->dict);
    return 0;
}

static void
tls_transport_dealloc(zl_tls_transport *self)
{
    PyTypeObject *type = Py_TYPE(self);
    if (PyObject_CallFinalizerFromDealloc((PyObject *)self) < 0) {
        return;
    }
    PyObject_GC_UnTrack(self);
    if (self->weakreflist != NULL) {
        PyObject_ClearWeakRefs((PyObject *)self);
    }
    tls_transport_clear(self);
    Py_CLEAR(self->protocol);
    type->tp_free(self);
    Py_DECREF(type);
}

/* ------------------------------------------------------------------ type */

static PyMethodDef tls_transport_methods[] = {
    {"write", (PyCFunction)tls_transport_write, METH_O, "Encrypt and send data."},
    {"writelines", (PyCFunction)tls_transport_writelines, METH_O, "Encrypt and send each item of an iterable."},
    {"write_eof", (PyCFunction)tls_transport_write_eof, METH_NOARGS, "NotImplementedError, as asyncio's."},
    {"can_write_eof", (PyCFunction)tls_transport_can_write_eof, METH_NOARGS, "False: TLS cannot half-close."},
    {"close", (PyCFunction)tls_transport_close, METH_NOARGS, "Flush, send close-notify, then close."},
    {"abort", (PyCFunction)tls_transport_abort, METH_NOARGS, "Close now, dropping what waits to be sent."},
    {"is_closing", (PyCFunction)tls_transport_is_closing, METH_NOARGS, "True once close() or abort() ran."},
    {"is_reading", (PyCFunction)tls_transport_is_reading, METH_NOARGS, "False while reading is paused."},
    {"pause_reading", (PyCFunction)tls_transport_pause_reading, METH_NOARGS, "Stop calling the protocol with data."},
    {"resume_reading", (PyCFunction)tls_transport_resume_reading, METH_NOARGS, "Resume calling it."},
    {"set_write_buffer_limits", (PyCFunction)(void (*)(void))tls_transport_set_write_buffer_limits,
     METH_VARARGS | METH_KEYWORDS, "Water marks for pause_writing/resume_writing."},
    {"get_write_buffer_limits", (PyCFunction)tls_transport_get_write_buffer_limits, METH_NOARGS, "(low, high)."},
    {"get_write_buffer_size", (PyCFunction)tls_transport_get_write_buffer_size, METH_NOARGS, "Bytes queued."},
    {"set_read_buffer_limits", (PyCFunction)(void (*)(void))tls_transport_set_read_buffer_limits,
     METH_VARARGS | METH_KEYWORDS, "Water marks for pausing the stream's reading."},
    {"get_read_buffer_limits", (PyCFunction)tls_transport_get_read_buffer_limits, METH_NOARGS, "(low, high)."},
    {"get_read_buffer_size", (PyCFunction)tls_transport_get_read_buffer_size, METH_NOARGS, "Ciphertext not read."},
    {"get_extra_info", (PyCFunction)(void (*)(void))tls_transport_get_extra_info, METH_VARARGS | METH_KEYWORDS,
     "get_extra_info(name, default=None): ssl_object, peercert, cipher, ... then the stream's."},
    {"set_protocol", (PyCFunction)tls_transport_set_protocol, METH_O, "Switch to another protocol."},
    {"get_protocol", (PyCFunction)tls_transport_get_protocol, METH_NOARGS, "The current protocol."},
    {"_force_close", (PyCFunction)tls_transport_force_close, METH_O, NULL},
    {"_test__append_write_backlog", (PyCFunction)tls_transport_test_append_write_backlog, METH_O, NULL},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef tls_transport_getset[] = {
    {"_protocol_paused", (getter)tls_transport_get_protocol_paused, NULL, NULL, NULL},
    {"_ssl_protocol", (getter)tls_transport_get_ssl_protocol, NULL, NULL, NULL},
    {"_closed", (getter)tls_transport_get_closed, NULL, NULL, NULL},
    {"_loop", (getter)tls_transport_get_loop, NULL, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef tls_transport_members[] = {
    {"__weaklistoffset__", T_PYSSIZET, offsetof(zl_tls_transport, weakreflist), READONLY, NULL},
    {"__dictoffset__", T_PYSSIZET, offsetof(zl_tls_transport, dict), READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyType_Slot tls_transport_slots[] = {
    {Py_tp_doc, "The transport of a TLS connection on a zloop loop (asyncio's _SSLProtocolTransport)."},
    {Py_tp_dealloc, tls_transport_dealloc},
    {Py_tp_finalize, tls_transport_finalize},
    {Py_tp_traverse, tls_transport_traverse},
    {Py_tp_clear, tls_transport_clear},
    {Py_tp_methods, tls_transport_methods},
    {Py_tp_getset, tls_transport_getset},
    {Py_tp_members, tls_transport_members},
    {0, NULL},
};

PyType_Spec zl_tls_transport_spec = {
    .name = "zloop.SSLTransport",
    .basicsize = sizeof(zl_tls_transport),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | ZL_TPFLAGS_NO_NEW,
    .slots = tls_transport_slots,
};
