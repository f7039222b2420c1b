/* core/tls.h — TLS in C: the protocol object that runs asyncio's SSLProtocol state machine over an ssl.SSLObject's
 * _ssl._SSLSocket and two ssl.MemoryBIOs (tls_protocol.c), and the transport the application sees (tls_transport.c). */
#ifndef ZL_TLS_H
#define ZL_TLS_H

#include "zloop.h"

/* asyncio.sslproto.SSLProtocolState and AppProtocolState */
enum { ZL_TLS_UNWRAPPED, ZL_TLS_DO_HANDSHAKE, ZL_TLS_WRAPPED, ZL_TLS_FLUSHING, ZL_TLS_SHUTDOWN };
enum { ZL_TLS_APP_INIT, ZL_TLS_APP_CON_MADE, ZL_TLS_APP_EOF, ZL_TLS_APP_CON_LOST };

#define ZL_TLS_MAX_SIZE (256 * 1024)          /* SSLProtocol.max_size: plaintext read per SSLObject.read */
#define ZL_TLS_RECORD_MAX (16 * 1024)         /* the most plaintext one TLS record carries */

/* zl_tls.one_record: what the record loop knows of the ciphertext since the BIO and SSLObject were last empty. */
enum {
    ZL_TLS_ONE_RECORD_NONE,      /* nothing (the BIO is asked) */
    ZL_TLS_ONE_RECORD_FED,       /* exactly one whole record came in, no SSLObject call since */
    ZL_TLS_ONE_RECORD_READING,   /* the SSLObject call running (or that ran last) is the first since */
};

/* What the TLS code of one module state holds (state->tls), made by _set_hooks(tls=...). */
typedef struct zl_tls_state {
    PyTypeObject *protocol_type;      /* zloop.SSLProtocol (an asyncio.BufferedProtocol) */
    PyTypeObject *transport_type;     /* zloop.SSLTransport (an asyncio.Transport) */
    PyObject *want_read_error;        /* ssl.SSLWantReadError */
    PyObject *syscall_error;          /* ssl.SSLSyscallError */
    PyObject *ssl_error;              /* ssl.SSLError */
    PyObject *certificate_error;      /* ssl.CertificateError */
    PyObject *timeout_error;          /* asyncio.exceptions.TimeoutError */
    PyObject *report_fatal;           /* zloop._tls.report_fatal(loop, exc, message, transport, protocol) */
    PyObject *report_error;           /* zloop._tls.report_error(loop, message, exc, transport, protocol) */
    PyObject *log;                    /* zloop._tls.log(level, message, protocol) */
    PyObject *str_read, *str_write, *str_do_handshake, *str_shutdown, *str_pending, *str_call_soon,
        *str_call_later, *str_cancel, *str_force_close, *str_abort, *str_close, *str_pause_reading,
        *str_resume_reading, *str_get_extra_info, *str_data_received, *str_buffer_updated, *str_get_buffer,
        *str_eof_received, *str_connection_made, *str_connection_lost, *str_pause_writing, *str_resume_writing,
        *str_getpeercert, *str_cipher, *str_compression, *str_set_result, *str_set_exception, *str_cancelled,
        *str_get_debug, *str_time;
    /* The _ssl methods the record loop calls, as the types' own descriptors: called without a lookup on objects of
     * exactly these types (zl_tls_call_method); MemoryBIO.pending's getset, read without one. */
    PyTypeObject *ssl_socket_type;    /* _ssl._SSLSocket */
    PyTypeObject *memory_bio_type;    /* _ssl.MemoryBIO */
    PyObject *ssl_read, *ssl_write, *ssl_pending, *bio_read, *bio_write, *bio_pending;
    int shutdown_timeout_until_lost;  /* 3.14+: the shutdown timeout runs until connection_lost */
    int closing_with_transport;       /* 3.14+: is_closing() is also true once the stream is closing */
} zl_tls_state;

typedef struct zl_tls_transport zl_tls_transport;

/* asyncio.sslproto.SSLProtocol, in C. */
typedef struct zl_tls {
    PyObject_HEAD
    PyObject *weakreflist;
    zl_tls_state *ts;                 /* borrowed: the type holds the module */
    PyObject *loop;
    PyObject *app_protocol;           /* NULL once the connection is lost */
    PyObject *app_data_received;      /* bound methods of app_protocol (data_received, or the buffered pair) */
    PyObject *app_get_buffer;
    PyObject *app_buffer_updated;
    zl_tls_transport *app_transport;  /* NULL once the connection is lost */
    PyObject *transport;              /* the stream underneath (set by connection_made) */
    PyObject *sslcontext;
    PyObject *sslobj;                 /* the ssl.SSLObject (get_extra_info('ssl_object')) */
    PyObject *sslsock;                /* its _ssl._SSLSocket: what the record loop calls */
    PyObject *incoming, *outgoing;    /* ssl.MemoryBIO */
    PyObject *extra;                  /* dict: sslcontext, then peercert, cipher, compression, ssl_object */
    PyObject *waiter;
    PyObject *write_backlog;          /* list of data the SSLObject has not taken yet */
    PyObject *handshake_timeout_handle;
    PyObject *shutdown_timeout_handle;
    PyObject *read_bytearray;         /* get_buffer()'s buffer when a Python transport drives the protocol */
    PyObject *handshake_timeout;      /* seconds as given (a float or an int): messages show them as asyncio does */
    PyObject *shutdown_timeout;
    PyObject *handshake_start_time;   /* loop.time() at the start, in debug mode */
    Py_ssize_t write_buffer_size;
    Py_ssize_t incoming_known;        /* what the incoming BIO holds when known without asking it, else -1 */
    Py_ssize_t incoming_high, incoming_low, outgoing_high, outgoing_low;
    int state, app_state, conn_lost;
    unsigned char server_side;
    unsigned char transport_is_stream;   /* transport is zloop's C stream: writes go straight to it */
    unsigned char app_is_buffer;
    unsigned char app_transport_created;
    unsigned char ssl_writing_paused, ssl_reading_paused, app_reading_paused, app_writing_paused;
    unsigned char eof_received;
    unsigned char outgoing_dirty;     /* an SSLObject call ran since the outgoing BIO was last emptied */
    unsigned char one_record;         /* ZL_TLS_ONE_RECORD_* */
} zl_tls;

struct zl_tls_transport {
    PyObject_HEAD
    PyObject *extra_slot;             /* asyncio.BaseTransport's _extra slot (unused: get_extra_info asks the protocol) */
    PyObject *weakreflist;
    PyObject *dict;
    zl_tls *protocol;
    unsigned char closed;
};

/* None, or NULL when rc < 0 says the step failed (Python methods over int-returning steps). */
static inline PyObject *
zl_tls_none_unless(int rc)
{
    if (rc < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* args[0].<name>(*args[1:]): through descr, the method of owner, when args[0] is exactly of that type. */
static inline PyObject *
zl_tls_call_method(PyObject *descr, PyTypeObject *owner, PyObject *name, PyObject *const *args, size_t nargs)
{
    if (descr != NULL && Py_IS_TYPE(args[0], owner)) {
        return PyObject_Vectorcall(descr, args, nargs, NULL);
    }
    return PyObject_VectorcallMethod(name, args, nargs, NULL);
}

/* ------------------------------------------------------------------ protocol (tls_protocol.c) */

/* obj is a C TLS protocol of this state. */
static inline int
zl_tls_is_protocol(zl_state *state, PyObject *obj)
{
    return state->tls != NULL && Py_IS_TYPE(obj, state->tls->protocol_type);
}

/* The stream underneath received n bytes of ciphertext at buf: SSLProtocol.buffer_updated without the copy into a
 * Python buffer. -1 with an exception set when the stream must treat it as its protocol failing. */
int zl_tls_data_received(PyObject *protocol, const char *buf, Py_ssize_t n);

/* The application's write/writelines (SSLProtocol._write_appdata), abort/close and flow control. */
int zl_tls_write_appdata(zl_tls *self, PyObject *data, int single);
int zl_tls_start_shutdown(zl_tls *self);
int zl_tls_abort(zl_tls *self, PyObject *exc);
int zl_tls_control_app_writing(zl_tls *self);
int zl_tls_control_ssl_reading(zl_tls *self);
int zl_tls_resume_reading(zl_tls *self);
int zl_tls_set_app_protocol(zl_tls *self, PyObject *app_protocol);
Py_ssize_t zl_tls_write_buffer_size(zl_tls *self);
Py_ssize_t zl_tls_read_buffer_size(zl_tls *self);
/* add_flowcontrol_defaults(high, low, kb): -1 with ValueError/TypeError. */
int zl_tls_flow_limits(PyObject *high, PyObject *low, Py_ssize_t kb, Py_ssize_t *hi, Py_ssize_t *lo);

extern PyType_Spec zl_tls_protocol_spec;

/* transport.write(data) on zloop's C stream transport, without the method call (core/stream_transport.c). */
PyObject *zl_stream_write_data(PyObject *transport, PyObject *data);

/* ------------------------------------------------------------------ transport (tls_transport.c) */

zl_tls_transport *zl_tls_transport_new(zl_tls *protocol);
extern PyType_Spec zl_tls_transport_spec;

/* ------------------------------------------------------------------ state (tls_state.c) */

/* _set_hooks(tls=namespace): the namespace gives protocol_base, transport_base, ssl, exceptions and the report
 * helpers; makes the two types and adds them to the module. */
int zl_tls_setup(PyObject *module, zl_state *state, PyObject *namespace);
int zl_tls_state_traverse(zl_tls_state *ts, visitproc visit, void *arg);
/* Drop the objects (module m_clear); free frees the rest too (m_free). */
void zl_tls_state_clear(zl_tls_state *ts);
void zl_tls_state_free(zl_tls_state *ts);

#endif /* ZL_TLS_H */
