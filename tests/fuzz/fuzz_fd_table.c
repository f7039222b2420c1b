/* tests/fuzz/fuzz_fd_table.c — libFuzzer harness of core/io_watch.c (the fd table) on a real loop object whose backend
 * is swapped for a recording one: add/remove_reader/writer, transport-owned C sides, handle cancels, dispatch of
 * arbitrary fired lists with re-entrant C callbacks, deferred calls, backend errors and OOM, against a model. */
#include "fuzz_common.h"
#include "zloop.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>
#include <string.h>

/* python/module.c, linked in: the extension's init, called directly instead of through an import. */
PyMODINIT_FUNC PyInit__zloop(void);

#define FD_LIMIT 4096
#define READY_MAX 4096
#define LOG_MAX 4096

/* ------------------------------------------------------------------ the recording backend */

static int backend_events[FD_LIMIT];   /* what the core asked the backend to watch */
static int backend_fail_errno;          /* the next watch/modify fails with it (once) */
static int backend_failed;

static int
backend_take_failure(void)
{
    int e = backend_fail_errno;
    backend_fail_errno = 0;
    backend_failed |= e != 0;
    return e;
}

static zl_backend *
fake_create(void)
{
    return (zl_backend *)backend_events;
}

static void
fake_destroy(zl_backend *backend)
{
    (void)backend;
}

static int
fake_watch(zl_backend *backend, int fd, int events)
{
    (void)backend;
    FUZZ_CHECK(fd >= 0 && fd < FD_LIMIT, "watch of fd %d", fd);
    FUZZ_CHECK(backend_events[fd] == 0, "watch of fd %d, already watched for %d", fd, backend_events[fd]);
    FUZZ_CHECK(events != 0 && (events & ~(ZL_EV_READ | ZL_EV_WRITE)) == 0, "watch with events %d", events);
    int e = backend_take_failure();
    if (e) {
        return -e;
    }
    backend_events[fd] = events;
    return 0;
}

static int
fake_modify(zl_backend *backend, int fd, int old_events, int events)
{
    (void)backend;
    FUZZ_CHECK(fd >= 0 && fd < FD_LIMIT && backend_events[fd] != 0, "modify of unwatched fd %d", fd);
    FUZZ_CHECK(old_events == backend_events[fd], "modify says fd %d had %d, it has %d", fd, old_events,
               backend_events[fd]);
    FUZZ_CHECK(events != 0 && events != old_events && (events & ~(ZL_EV_READ | ZL_EV_WRITE)) == 0,
               "modify from %d to %d", old_events, events);
    int e = backend_take_failure();
    if (e) {
        return -e;
    }
    backend_events[fd] = events;
    return 0;
}

static int
fake_unwatch(zl_backend *backend, int fd, int old_events)
{
    (void)backend;
    FUZZ_CHECK(fd >= 0 && fd < FD_LIMIT && backend_events[fd] != 0, "unwatch of unwatched fd %d", fd);
    FUZZ_CHECK(old_events == backend_events[fd], "unwatch says fd %d had %d, it has %d", fd, old_events,
               backend_events[fd]);
    backend_events[fd] = 0;   /* never fails: a closed fd is forgotten all the same (the contract) */
    return 0;
}

static int
fake_poll(zl_backend *backend, int64_t timeout_ns, const zl_fired **fired)
{
    (void)backend;
    (void)timeout_ns;
    *fired = NULL;
    return 0;
}

static int
fake_wake(zl_backend *backend)
{
    (void)backend;
    return 0;
}

static int
fake_reinit(zl_backend *backend)
{
    (void)backend;
    return 0;
}

static const zl_backend_ops fake_ops = {
    .name = "fuzz", .create = fake_create, .destroy = fake_destroy, .watch = fake_watch, .modify = fake_modify,
    .unwatch = fake_unwatch, .poll = fake_poll, .wake = fake_wake, .reinit_after_fork = fake_reinit,
};

/* ------------------------------------------------------------------ the model */

typedef struct model_side {
    PyObject *handle;          /* add_reader/add_writer handle (borrowed: the harness keeps its own in `handles`) */
    fuzz_item *owner;          /* or a C side's owner */
} model_side;

typedef struct model_slot {
    model_side side[2];        /* [0] read, [1] write */
    int registered;
    fuzz_item *transport_owner;   /* the transport that adopted the fd (zl_io_adopt_fd) */
} model_slot;

typedef struct model_ready {
    PyObject *handle;          /* the queued object */
    fuzz_item *owner;          /* deferred C call: for whom, which fd and event */
    int fd, event;
} model_ready;

static zl_loop *loop;
static model_slot slots[FD_LIMIT];
static model_ready ready[READY_MAX];
static size_t ready_len;
static PyObject *handles[READY_MAX];   /* every handle add_* returned, owned */
static size_t handles_len;
static fuzz_item *owners[8];           /* C-side owners, owned */
static PyObject *callback;             /* what add_reader handles would call */
static PyObject *loop_type;            /* the module's LoopCore heap type, owned */
static struct { fuzz_item *owner; int fd; } calls[LOG_MAX], expected_calls[LOG_MAX];
static size_t calls_len, expected_calls_len;

static int
side_index(int event)
{
    return event == ZL_EV_READ ? 0 : 1;
}

static int
side_set(const model_side *side)
{
    return side->handle != NULL || side->owner != NULL;
}

static size_t
owner_refs(fuzz_item *owner)
{
    size_t refs = 1;
    for (int fd = 0; fd < FD_LIMIT; fd++) {
        refs += (slots[fd].side[0].owner == owner) + (slots[fd].side[1].owner == owner);
    }
    for (size_t i = 0; i < ready_len; i++) {
        refs += ready[i].owner == owner;
    }
    return refs;
}

static void
check_table(void)
{
    zl_io_table *io = &loop->io;
    int watched = 0;
    for (int fd = 0; fd < FD_LIMIT; fd++) {
        model_slot *m = &slots[fd];
        watched += m->registered != 0;
        FUZZ_CHECK(backend_events[fd] == m->registered, "fd %d: backend has %d, model %d", fd, backend_events[fd],
                   m->registered);
        if (fd >= io->len) {
            FUZZ_CHECK(m->registered == 0 && !side_set(&m->side[0]) && !side_set(&m->side[1]) &&
                           m->transport_owner == NULL, "fd %d is past the table (%d) but set", fd, io->len);
            continue;
        }
        zl_io_slot *s = &io->slots[fd];
        FUZZ_CHECK(s->registered == m->registered, "fd %d: registered %d, model %d", fd, s->registered, m->registered);
        FUZZ_CHECK(s->transport_owner == (PyObject *)m->transport_owner, "fd %d: transport_owner differs", fd);
        zl_io_side *sides[2] = {&s->read, &s->write};
        for (int k = 0; k < 2; k++) {
            FUZZ_CHECK(sides[k]->handle == m->side[k].handle, "fd %d side %d: another handle", fd, k);
            FUZZ_CHECK(sides[k]->owner == (PyObject *)m->side[k].owner, "fd %d side %d: another owner", fd, k);
            FUZZ_CHECK((sides[k]->fn != NULL) == (m->side[k].owner != NULL), "fd %d side %d: fn set wrongly", fd, k);
        }
    }
    FUZZ_CHECK(io->watched == watched, "watched %d, model %d", io->watched, watched);
    FUZZ_CHECK(loop->ready.len == ready_len, "ready holds %zu, model %zu", loop->ready.len, ready_len);
    for (size_t i = 0; i < ready_len; i++) {
        PyObject *item = loop->ready.items[(loop->ready.head + i) & loop->ready.mask];
        if (ready[i].owner == NULL) {
            FUZZ_CHECK(item == ready[i].handle, "ready[%zu] is not the expected handle", i);
        } else {
            zl_handle *h = (zl_handle *)item;
            FUZZ_CHECK(h->nargs == 3 && h->args[0] == (PyObject *)ready[i].owner &&
                           PyLong_AsLong(h->args[1]) == ready[i].fd && PyLong_AsLong(h->args[2]) == ready[i].event,
                       "ready[%zu] is not the deferred call expected", i);
            ready[i].handle = item;
        }
    }
    for (size_t o = 0; o < sizeof(owners) / sizeof(owners[0]); o++) {
        FUZZ_CHECK((size_t)Py_REFCNT(owners[o]) == owner_refs(owners[o]), "owner %zu: refcount %zd, model %zu", o,
                   Py_REFCNT(owners[o]), owner_refs(owners[o]));
    }
    FUZZ_CHECK(calls_len == expected_calls_len, "%zu C calls, model %zu", calls_len, expected_calls_len);
    for (size_t i = 0; i < calls_len; i++) {
        FUZZ_CHECK(calls[i].owner == expected_calls[i].owner && calls[i].fd == expected_calls[i].fd,
                   "C call %zu went to the wrong owner or fd", i);
    }
}

/* ------------------------------------------------------------------ operations, each applied to both */

/* Expected effect of removing one side (zl_io_clear_side): a modify that fails unregisters the fd altogether. */
static void
model_clear_side(int fd, int event, int backend_fails)
{
    model_slot *m = &slots[fd];
    model_side *side = &m->side[side_index(event)];
    if (!(m->registered & event) && !side_set(side)) {
        return;
    }
    *side = (model_side){0};
    int wanted = m->registered & ~event;
    m->registered = (backend_fails && wanted != 0 && wanted != m->registered) ? 0 : wanted;
}

/* Expected effect of a failing modify through add_reader/add_writer or remove_reader/remove_writer (a dead watch):
 * the fd is unregistered and its handles dropped, not cancelled, as asyncio's selector drops the key; C sides stay. */
static void
model_forget_dead_fd(int fd)
{
    model_slot *m = &slots[fd];
    m->registered = 0;
    for (int k = 0; k < 2; k++) {
        if (m->side[k].handle != NULL) {
            m->side[k] = (model_side){0};
        }
    }
}

static void
keep_handle(PyObject *handle)
{
    FUZZ_CHECK(handles_len < READY_MAX, "too many handles");
    handles[handles_len++] = handle;
}

static int
transport_side_of(int fd, int event)
{
    return slots[fd].side[side_index(event)].owner != NULL || slots[fd].transport_owner != NULL;
}

static void
op_add_callback(int fd, int event, int fail_errno, int fail_alloc)
{
    PyObject *args[2] = {PyLong_FromLong(fd), callback};
    FUZZ_CHECK(args[0] != NULL, "out of memory");
    backend_fail_errno = fail_errno;
    backend_failed = 0;
    if (fail_alloc) {
        fuzz_fail_next_alloc();
    }
    PyObject *old = slots[fd].side[side_index(event)].handle;
    PyObject *handle = event == ZL_EV_READ ? zl_loop_add_reader(loop, args, 2) : zl_loop_add_writer(loop, args, 2);
    int alloc_failed = fuzz_alloc_failed();
    fuzz_alloc_reset();
    int wanted = slots[fd].registered | event;
    int backend_called = wanted != slots[fd].registered;
    int was_modify = backend_called && slots[fd].registered != 0;
    backend_fail_errno = 0;
    Py_DECREF(args[0]);
    if (transport_side_of(fd, event)) {
        FUZZ_CHECK(handle == NULL && PyErr_ExceptionMatches(PyExc_RuntimeError), "add on a transport's fd");
        PyErr_Clear();
        return;
    }
    if (handle == NULL) {
        FUZZ_CHECK(alloc_failed || (backend_failed && backend_called), "add failed with nothing failing");
        FUZZ_CHECK(PyErr_ExceptionMatches(alloc_failed ? PyExc_MemoryError : PyExc_OSError), "wrong exception");
        PyErr_Clear();
        if (!alloc_failed && was_modify) {
            model_forget_dead_fd(fd);
        }
        return;
    }
    FUZZ_CHECK(!backend_failed, "add succeeded through a backend failure");
    keep_handle(handle);
    if (old != NULL) {
        FUZZ_CHECK(((zl_handle *)old)->cancelled, "a replaced handle was not cancelled");
    }
    slots[fd].side[side_index(event)].handle = handle;
    slots[fd].registered = wanted;
}

static void
op_remove_callback(int fd, int event, int fail_errno)
{
    PyObject *fd_obj = PyLong_FromLong(fd);
    FUZZ_CHECK(fd_obj != NULL, "out of memory");
    model_slot *m = &slots[fd];
    PyObject *old = m->side[side_index(event)].handle;
    int was_set = side_set(&m->side[side_index(event)]);
    backend_fail_errno = fail_errno;
    backend_failed = 0;
    PyObject *res = event == ZL_EV_READ ? zl_loop_remove_reader(loop, fd_obj) : zl_loop_remove_writer(loop, fd_obj);
    backend_fail_errno = 0;
    Py_DECREF(fd_obj);
    if (transport_side_of(fd, event)) {
        FUZZ_CHECK(res == NULL && PyErr_ExceptionMatches(PyExc_RuntimeError), "remove on a transport's fd");
        PyErr_Clear();
        return;
    }
    if (backend_failed) {
        FUZZ_CHECK(res == NULL && PyErr_ExceptionMatches(PyExc_OSError), "remove hid a failing modify");
        PyErr_Clear();
        m->side[side_index(event)] = (model_side){0};
        model_forget_dead_fd(fd);
        return;
    }
    FUZZ_CHECK(res != NULL, "remove raised");
    FUZZ_CHECK(res == (was_set ? Py_True : Py_False), "remove returned the wrong flag");
    Py_DECREF(res);
    model_clear_side(fd, event, 0);
    if (old != NULL) {
        FUZZ_CHECK(((zl_handle *)old)->cancelled, "a removed handle was not cancelled");
    }
}

static int fuzz_side_fn(PyObject *owner, int fd);

/* What a transport does when it starts reading or writing: a C side, and the fd marked as its own. */
static void
op_set_c_side(int fd, int event, fuzz_item *owner, int fail_errno)
{
    model_slot *m = &slots[fd];
    if (m->transport_owner != NULL && m->transport_owner != owner) {
        return;   /* one transport owns an fd at a time; a reused number's takeover is not modelled here */
    }
    if (m->transport_owner == NULL) {
        /* Adopting a number with no C side re-registers what its handles want: the same events, afresh. */
        FUZZ_CHECK(zl_io_adopt_fd(loop, fd, (PyObject *)owner) == 0, "adopt_fd failed");
        m->transport_owner = owner;
    }
    int wanted = m->registered | event;
    int backend_called = wanted != m->registered;
    backend_fail_errno = fail_errno;
    backend_failed = 0;
    int rc = zl_io_set_side(loop, fd, event, NULL, fuzz_side_fn, (PyObject *)owner);
    backend_fail_errno = 0;
    if (rc < 0) {
        FUZZ_CHECK(backend_failed && backend_called && PyErr_ExceptionMatches(PyExc_OSError), "set_side failed");
        PyErr_Clear();
        return;
    }
    PyObject *old = m->side[side_index(event)].handle;
    if (old != NULL) {
        FUZZ_CHECK(((zl_handle *)old)->cancelled, "a handle replaced by a C side was not cancelled");
    }
    m->side[side_index(event)] = (model_side){.owner = owner};
    m->registered = wanted;
}

static void
op_clear_c_side(int fd, int event, int fail_errno)
{
    model_slot *m = &slots[fd];
    int expect_set = side_set(&m->side[side_index(event)]);
    backend_fail_errno = fail_errno;
    backend_failed = 0;
    int was_set = -1;
    FUZZ_CHECK(zl_io_clear_side(loop, fd, event, &was_set) == 0 && !PyErr_Occurred(), "clear_side failed");
    backend_fail_errno = 0;
    FUZZ_CHECK(was_set == expect_set, "clear_side says was_set %d, model %d", was_set, expect_set);
    model_clear_side(fd, event, backend_failed);
    if (m->side[0].owner == NULL && m->side[1].owner == NULL && m->transport_owner != NULL) {
        zl_io_disown_fd(loop, fd, (PyObject *)m->transport_owner);
        m->transport_owner = NULL;
    }
}

/* ------------------------------------------------------------------ dispatch */

/* Handles the C callbacks create during one dispatch: the model stands in a placeholder for the k-th one (it
 * cannot know the object in advance) and swaps the real ones in afterwards. */
static PyObject *made_in_dispatch[LOG_MAX];
static size_t made_len, placeholders_len;

static PyObject *
placeholder(size_t k)
{
    return (PyObject *)(uintptr_t)(k + 1);
}

static int
is_placeholder(PyObject *handle)
{
    return (uintptr_t)handle <= LOG_MAX;
}

/* A transport's C callback: logs the call, then does what its owner's mark says, as a transport's data_received or
 * connection_lost can: stop reading, add a reader on a new high fd (the table grows mid-dispatch), or stop the loop. */
static int
fuzz_side_fn(PyObject *owner_obj, int fd)
{
    fuzz_item *owner = (fuzz_item *)owner_obj;
    FUZZ_CHECK(calls_len < LOG_MAX, "too many calls");
    calls[calls_len].owner = owner;
    calls[calls_len++].fd = fd;
    int was_set;
    switch (owner->mark) {
    case 1:
        FUZZ_CHECK(zl_io_clear_side(loop, fd, ZL_EV_READ, &was_set) == 0, "clear_side from a callback failed");
        return 0;
    case 2: {
        PyObject *args[2] = {PyLong_FromLong(fd + 1000), callback};
        PyObject *handle = zl_loop_add_reader(loop, args, 2);
        Py_DECREF(args[0]);
        if (handle == NULL) {
            FUZZ_CHECK(PyErr_ExceptionMatches(PyExc_RuntimeError), "add_reader from a callback failed otherwise");
            PyErr_Clear();
            return 0;
        }
        made_in_dispatch[made_len++] = handle;
        keep_handle(handle);
        return 0;
    }
    case 3:
        PyErr_SetNone(PyExc_KeyboardInterrupt);
        return -1;
    default:
        return 0;
    }
}

/* The model of one C call: the log entry and the callback's effect. -1 when it stops the loop. */
static int
model_call(fuzz_item *owner, int fd)
{
    FUZZ_CHECK(expected_calls_len < LOG_MAX, "too many calls");
    expected_calls[expected_calls_len].owner = owner;
    expected_calls[expected_calls_len++].fd = fd;
    switch (owner->mark) {
    case 1:
        model_clear_side(fd, ZL_EV_READ, 0);
        return 0;
    case 2: {
        int high = fd + 1000;
        if (high >= FD_LIMIT || transport_side_of(high, ZL_EV_READ)) {
            return 0;
        }
        model_side *side = &slots[high].side[0];
        side->handle = placeholder(placeholders_len++);
        slots[high].registered |= ZL_EV_READ;
        return 0;
    }
    case 3:
        return -1;
    default:
        return 0;
    }
}

static int
model_dispatch_side(int fd, int event)
{
    model_side *side = &slots[fd].side[side_index(event)];
    if (side->handle != NULL) {
        if (!is_placeholder(side->handle) && ((zl_handle *)side->handle)->cancelled) {
            model_clear_side(fd, event, 0);
            return 0;
        }
        FUZZ_CHECK(ready_len < READY_MAX, "ready model full");
        ready[ready_len++] = (model_ready){.handle = side->handle};
        return 0;
    }
    if (side->owner == NULL) {
        return 0;
    }
    if (ready_len > 0) {
        /* Something waits already: the call is deferred behind it, as a handle. */
        FUZZ_CHECK(ready_len < READY_MAX, "ready model full");
        ready[ready_len++] = (model_ready){.owner = side->owner, .fd = fd, .event = event};
        return 0;
    }
    return model_call(side->owner, fd);
}

/* Swap the handles the callbacks made for the model's placeholders. */
static void
resolve_placeholders(void)
{
    FUZZ_CHECK(made_len == placeholders_len, "callbacks made %zu handles, model %zu", made_len, placeholders_len);
    for (int fd = 0; fd < FD_LIMIT; fd++) {
        for (int k = 0; k < 2; k++) {
            PyObject **h = &slots[fd].side[k].handle;
            if (*h != NULL && is_placeholder(*h)) {
                *h = made_in_dispatch[(uintptr_t)*h - 1];
            }
        }
    }
    for (size_t i = 0; i < ready_len; i++) {
        if (ready[i].handle != NULL && is_placeholder(ready[i].handle)) {
            ready[i].handle = made_in_dispatch[(uintptr_t)ready[i].handle - 1];
        }
    }
}

/* The model over the whole fired list, as io_watch.c documents it; then the real dispatch; then compare. */
static void
op_dispatch(const zl_fired *fired, int count)
{
    int stop = 0;
    made_len = placeholders_len = 0;
    for (int i = 0; i < count && !stop; i++) {
        int fd = fired[i].fd;
        /* An fd past the table (which may grow during the dispatch) has no registered bits in the model either. */
        if (fd < 0 || fd >= FD_LIMIT) {
            continue;
        }
        if ((fired[i].events & ZL_EV_READ) && (slots[fd].registered & ZL_EV_READ)) {
            stop = model_dispatch_side(fd, ZL_EV_READ) < 0;
        }
        if (!stop && (fired[i].events & ZL_EV_WRITE) && (slots[fd].registered & ZL_EV_WRITE)) {
            stop = model_dispatch_side(fd, ZL_EV_WRITE) < 0;
        }
    }
    int rc = zl_io_dispatch(loop, fired, count);
    if (stop) {
        FUZZ_CHECK(rc < 0 && PyErr_ExceptionMatches(PyExc_KeyboardInterrupt), "the stop did not end the dispatch");
        PyErr_Clear();
    } else {
        FUZZ_CHECK(rc == 0 && !PyErr_Occurred(), "dispatch failed");
    }
    resolve_placeholders();
}

/* Run what the dispatch queued: add_reader handles are only taken out (their callback is not the fd table's
 * business); a deferred C call runs if the same owner still holds that side, registered. */
static void
op_drain_ready(void)
{
    size_t n = ready_len;
    model_ready queued[READY_MAX];
    memcpy(queued, ready, n * sizeof(queued[0]));
    for (size_t i = 0; i < n; i++) {
        model_ready *r = &queued[i];
        memmove(ready, ready + 1, --ready_len * sizeof(ready[0]));
        PyObject *item = zl_ready_queue_pop(&loop->ready);
        FUZZ_CHECK(item == r->handle, "ready queue out of order");
        if (r->owner != NULL) {
            model_side *side = &slots[r->fd].side[side_index(r->event)];
            int expect_call = (slots[r->fd].registered & r->event) && side->owner == r->owner;
            made_len = placeholders_len = 0;
            int stop = expect_call ? model_call(r->owner, r->fd) < 0 : 0;
            int rc = zl_handle_run((zl_handle *)item);
            if (stop) {
                FUZZ_CHECK(rc < 0 && PyErr_ExceptionMatches(PyExc_KeyboardInterrupt), "the stop got lost");
                PyErr_Clear();
            } else {
                FUZZ_CHECK(rc == 0 && !PyErr_Occurred(), "a deferred call failed");
            }
            resolve_placeholders();
        }
        Py_DECREF(item);
        check_table();
    }
}

/* ------------------------------------------------------------------ driver */

static PyObject *
noop(PyObject *self, PyObject *args)
{
    (void)self;
    (void)args;
    Py_RETURN_NONE;
}

static PyMethodDef noop_def = {"noop", noop, METH_VARARGS, NULL};

/* The core grows its table only for an fd that is open (add_reader of a closed number is EBADF at once), so every
 * number the harness uses is an open file: /dev/null where the process has nothing there. */
static void
open_every_fd(void)
{
    struct rlimit limit;
    FUZZ_CHECK(getrlimit(RLIMIT_NOFILE, &limit) == 0, "getrlimit");
    if (limit.rlim_cur < FD_LIMIT + 64 && limit.rlim_max >= FD_LIMIT + 64) {
        limit.rlim_cur = FD_LIMIT + 64;
        FUZZ_CHECK(setrlimit(RLIMIT_NOFILE, &limit) == 0, "setrlimit");
    }
    FUZZ_CHECK(limit.rlim_cur >= FD_LIMIT, "RLIMIT_NOFILE is below the harness's %d fds", FD_LIMIT);
    int null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    FUZZ_CHECK(null_fd >= 0, "open /dev/null");
    for (int fd = 0; fd < FD_LIMIT; fd++) {
        if (fd != null_fd && fcntl(fd, F_GETFD) < 0) {
            FUZZ_CHECK(dup2(null_fd, fd) == fd, "dup2 onto fd %d", fd);
        }
    }
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    open_every_fd();
    fuzz_python_init();
    /* Multi-phase init (PEP 489): the module is made from its definition and a spec, then executed. */
    PyObject *def = PyInit__zloop();
    PyObject *types = PyImport_ImportModule("types");
    FUZZ_CHECK(def != NULL && types != NULL, "zloop._zloop has no definition");
    PyObject *spec = PyObject_CallMethod(types, "SimpleNamespace", "()");
    PyObject *name = PyUnicode_FromString("zloop._zloop");
    FUZZ_CHECK(spec != NULL && name != NULL && PyObject_SetAttrString(spec, "name", name) == 0, "no module spec");
    Py_DECREF(name);
    PyObject *module = PyModule_FromDefAndSpec((PyModuleDef *)def, spec);
    FUZZ_CHECK(module != NULL && PyModule_ExecDef(module, (PyModuleDef *)def) == 0,
               "zloop._zloop did not initialise");
    Py_DECREF(spec);
    Py_DECREF(types);
    loop_type = PyObject_GetAttrString(module, "LoopCore");
    FUZZ_CHECK(loop_type != NULL, "zloop._zloop has no LoopCore");
    callback = PyCFunction_New(&noop_def, NULL);
    FUZZ_CHECK(callback != NULL, "out of memory");
    for (size_t o = 0; o < sizeof(owners) / sizeof(owners[0]); o++) {
        owners[o] = fuzz_item_new((long)o, 0);
        owners[o]->mark = o % 4;   /* 0: nothing, 1: stop reading, 2: add a high reader, 3: stop the loop */
    }
    return 0;
}

static void
new_loop(void)
{
    loop = (zl_loop *)PyObject_CallNoArgs(loop_type);
    FUZZ_CHECK(loop != NULL, "LoopCore() failed");
    loop->ops->destroy(loop->backend);
    loop->ops = &fake_ops;
    loop->backend = fake_ops.create();
    memset(backend_events, 0, sizeof(backend_events));
    memset(slots, 0, sizeof(slots));
    ready_len = handles_len = calls_len = expected_calls_len = 0;
}

static void
free_loop(void)
{
    /* What the loop's deallocation does first; the handles the harness holds keep the loop itself alive. */
    zl_ready_queue_clear(&loop->ready);
    zl_io_release_all(loop);
    for (int fd = 0; fd < FD_LIMIT; fd++) {
        FUZZ_CHECK(backend_events[fd] == 0, "fd %d still watched after release_all", fd);
    }
    for (size_t i = 0; i < handles_len; i++) {
        FUZZ_CHECK(Py_REFCNT(handles[i]) == 1, "a handle kept %zd references", Py_REFCNT(handles[i]) - 1);
        Py_DECREF(handles[i]);
    }
    for (size_t o = 0; o < sizeof(owners) / sizeof(owners[0]); o++) {
        FUZZ_CHECK(Py_REFCNT(owners[o]) == 1, "owner %zu kept %zd references", o, Py_REFCNT(owners[o]) - 1);
    }
    FUZZ_CHECK(Py_REFCNT(loop) == 1, "the loop kept %zd references", Py_REFCNT(loop) - 1);
    Py_DECREF(loop);
}

static int
pick_fd(fuzz_input *in)
{
    uint8_t b = fuzz_u8(in);
    return (b & 0x80) ? (int)(fuzz_u16(in) % (FD_LIMIT - 1000)) : b % 24;
}

static int
pick_errno(uint8_t op)
{
    static const int errnos[] = {EBADF, EPERM, ENOMEM, EEXIST};
    return (op & 0x80) ? errnos[(op >> 5) & 3] : 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_input in = {data, size};
    new_loop();
    while (fuzz_more(&in)) {
        uint8_t op = fuzz_u8(&in);
        int event = (op & 0x10) ? ZL_EV_WRITE : ZL_EV_READ;
        switch (op & 7) {
        case 0:
            op_add_callback(pick_fd(&in), event, pick_errno(op), (op & 0x68) == 0x68);
            break;
        case 1:
            op_remove_callback(pick_fd(&in), event, pick_errno(op));
            break;
        case 2: {
            int fd = pick_fd(&in);
            fuzz_item *owner = owners[fuzz_u8(&in) % (sizeof(owners) / sizeof(owners[0]))];
            op_set_c_side(fd, event, owner, pick_errno(op));
            break;
        }
        case 3:
            op_clear_c_side(pick_fd(&in), event, pick_errno(op));
            break;
        case 4: {
            int fd = pick_fd(&in);
            PyObject *handle = slots[fd].side[side_index(event)].handle;
            if (handle != NULL) {
                zl_handle_cancel((zl_handle *)handle);   /* handle.cancel() by the user */
            }
            break;
        }
        case 5:
        case 6: {
            zl_fired fired[8];
            int count = 1 + fuzz_u8(&in) % 8;
            for (int i = 0; i < count; i++) {
                fired[i].fd = pick_fd(&in);
                fired[i].events = 1 + fuzz_u8(&in) % 3;
            }
            op_dispatch(fired, count);
            break;
        }
        case 7:
            op_drain_ready();
            break;
        }
        check_table();
    }
    op_drain_ready();
    free_loop();
    return 0;
}
