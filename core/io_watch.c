/* core/io_watch.c — the fd table: which handle or C callback waits on each fd for reading and writing, what was
 * asked of the backend (so no call is made that changes nothing; removals of a file object's reader or writer are
 * applied before the next blocking poll), readiness dispatch, and add/remove_reader/writer. */
#include "zloop.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sys/mman.h>
#include <sys/resource.h>

/* ------------------------------------------------------------------ fds */

/* fileno_name: the interned "fileno" of the module state, or NULL to make the name (a new str, hashed, per call). */
static int
fileobj_to_fd_named(PyObject *fileobj, PyObject *fileno_name)
{
    long fd;
    int overflow = 0;
    if (PyLong_Check(fileobj)) {
        fd = PyLong_AsLongAndOverflow(fileobj, &overflow);
    } else {
        PyObject *fileno = fileno_name != NULL ? PyObject_CallMethodNoArgs(fileobj, fileno_name)
                                               : PyObject_CallMethod(fileobj, "fileno", NULL);
        if (fileno == NULL) {
            if (!PyErr_ExceptionMatches(PyExc_AttributeError) && !PyErr_ExceptionMatches(PyExc_TypeError) &&
                !PyErr_ExceptionMatches(PyExc_ValueError)) {
                return -1;
            }
            PyErr_Clear();
            PyErr_Format(PyExc_ValueError, "Invalid file object: %R", fileobj);
            return -1;
        }
        if (!PyLong_Check(fileno)) {
            Py_DECREF(fileno);
            PyErr_Format(PyExc_ValueError, "Invalid file object: %R", fileobj);
            return -1;
        }
        fd = PyLong_AsLongAndOverflow(fileno, &overflow);
        Py_DECREF(fileno);
    }
    if (fd == -1 && PyErr_Occurred()) {
        return -1;
    }
    /* asyncio's selector: ValueError for a negative number, OverflowError for one beyond a C int. */
    if (overflow < 0) {
        PyErr_SetString(PyExc_ValueError, "Invalid file descriptor");
        return -1;
    }
    if (fd < 0 && overflow == 0) {
        PyErr_Format(PyExc_ValueError, "Invalid file descriptor: %ld", fd);
        return -1;
    }
    if (overflow > 0 || fd > INT_MAX) {
        PyErr_SetString(PyExc_OverflowError, "Python int too large to convert to C int");
        return -1;
    }
    return (int)fd;
}

int
zl_fileobj_to_fd(PyObject *fileobj)
{
    return fileobj_to_fd_named(fileobj, NULL);
}

int
zl_loop_fileobj_to_fd(zl_loop *loop, PyObject *fileobj)
{
    return fileobj_to_fd_named(fileobj, ZL_NAME(loop->state, fileno));
}

/* The table lives in an anonymous mapping: its pages stay the kernel's zero pages until a slot is written, so a
 * table sized for every fd the process may open costs memory only for the fds in use. */
static zl_io_slot *
io_map_slots(size_t len)
{
    void *slots = mmap(NULL, len * sizeof(zl_io_slot), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return slots == MAP_FAILED ? NULL : slots;
}

void
zl_io_free_slots(zl_io_table *io)
{
    if (io->slots != NULL) {
        (void)munmap(io->slots, (size_t)io->len * sizeof(zl_io_slot));
    }
    io->slots = NULL;
    io->len = 0;
    io->used = 0;
}

/* The table's second size, once 64 fds are not enough: every fd the process may open (RLIMIT_NOFILE's soft limit,
 * at most 65536), so that a server's table is made once and never copied while it fills. */
static size_t
io_full_len(void)
{
    struct rlimit limit;
    if (getrlimit(RLIMIT_NOFILE, &limit) < 0 || limit.rlim_cur < 128) {
        return 128;
    }
    return limit.rlim_cur > 65536 ? 65536 : (size_t)limit.rlim_cur;
}

/* Make fd an index of the table. Only an open fd may grow it (add_reader(10**8) is asyncio's EBADF at once, not
 * gigabytes of slots first): 64 slots, then the fd limit's, then twice the highest open fd seen. */
static int
io_reserve(zl_io_table *io, int fd)
{
    if (fd < io->len) {
        if (fd >= io->used) {
            io->used = fd + 1;
        }
        return 0;
    }
    if (fcntl(fd, F_GETFD) < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    size_t len = io->len == 0 ? 64 : io->len == 64 ? io_full_len() : (size_t)io->len * 2;
    while (len <= (size_t)fd) {
        len *= 2;
    }
    if (len > (size_t)INT_MAX) {
        len = (size_t)fd + 1;
    }
    zl_io_slot *slots = io_map_slots(len);
    if (slots == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    if (io->len > 0) {
        memcpy(slots, io->slots, (size_t)io->len * sizeof(zl_io_slot));
    }
    int used = io->used;
    zl_io_free_slots(io);
    io->slots = slots;
    io->len = (int)len;
    io->used = fd >= used ? fd + 1 : used;
    return 0;
}

/* Tell the backend the fd's new event set; 0, or -1 with OSError set and nothing changed. */
static int
io_apply_interest(zl_loop *loop, int fd, int wanted)
{
    zl_io_slot *slot = &loop->io.slots[fd];
    int current = slot->registered;
    if (wanted == current) {
        return 0;
    }
    int rc;
    if (current == 0) {
        rc = loop->ops->watch(loop->backend, fd, wanted);
    } else if (wanted == 0) {
        rc = loop->ops->unwatch(loop->backend, fd, current);
    } else {
        rc = loop->ops->modify(loop->backend, fd, current, wanted);
    }
    if (rc < 0) {
        errno = -rc;
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    loop->io.watched += (current == 0) - (wanted == 0);
    slot->registered = wanted;
    return 0;
}

static zl_io_side *
slot_side(zl_io_slot *slot, int event)
{
    return event == ZL_EV_READ ? &slot->read : &slot->write;
}

/* ------------------------------------------------------------------ stale events
 *
 * remove_reader(sock) followed by add_reader(sock) on the same socket object in the next iteration is what every
 * loop.sock_recv does: two epoll_ctl calls per message for nothing. So when a handle's side that was added with a
 * file object (not an int) is removed, its event stays with the backend, marked stale (the dispatch ignores it:
 * the side is empty), and the slot keeps that file object. Adding the same side again with the same object, while
 * it is stale, costs no system call: an open socket object cannot change files (closing it makes fileno() -1), and
 * the reference keeps its address from naming another one. Added with anything else, the fd is registered afresh
 * (its number may name a new file now). Stale events are dropped before a blocking poll, and before any poll once
 * they have survived one, so they last about an iteration and never make the loop wait on them.
 */

static int
side_index(int event)
{
    return event == ZL_EV_READ ? 0 : 1;
}

/* Take a side's event out of the stale set; the file object it kept is returned (owned), or NULL. */
static PyObject *
io_unstale_side(zl_io_slot *slot, int event)
{
    PyObject *fileobj = slot->stale_fileobj[side_index(event)];
    slot->stale_fileobj[side_index(event)] = NULL;
    slot->stale &= ~event;
    return fileobj;
}

/* Mark fd's event stale, keeping fileobj (the reference is stolen); -1 (nothing changed) when out of memory. */
static int
io_mark_stale(zl_io_table *io, int fd, int event, PyObject *fileobj)
{
    zl_io_slot *slot = &io->slots[fd];
    if (!slot->stale_listed) {
        if (io->stale_len == io->stale_cap) {
            int cap = io->stale_cap ? io->stale_cap * 2 : 16;
            int *fds = PyMem_Realloc(io->stale_fds, (size_t)cap * sizeof(int));
            if (fds == NULL) {
                return -1;
            }
            io->stale_fds = fds;
            io->stale_cap = cap;
        }
        io->stale_fds[io->stale_len++] = fd;
        slot->stale_listed = 1;
    }
    Py_XSETREF(slot->stale_fileobj[side_index(event)], fileobj);
    slot->stale |= event;
    slot->stale_since = io->generation;
    return 0;
}

static int io_apply_interest(zl_loop *loop, int fd, int wanted);

/* Give the backend the fd's events without the stale ones; a closed fd is forgotten. */
static void
io_drop_stale_events(zl_loop *loop, int fd)
{
    zl_io_slot *slot = &loop->io.slots[fd];
    int stale = slot->stale;
    PyObject *kept[2] = {io_unstale_side(slot, ZL_EV_READ), io_unstale_side(slot, ZL_EV_WRITE)};
    if (io_apply_interest(loop, fd, slot->registered & ~stale) < 0) {
        PyErr_Clear();
        (void)io_apply_interest(loop, fd, 0);
        loop->io.slots[fd].registered = 0;
    }
    Py_XDECREF(kept[0]);   /* last: a socket's finalizer may run Python code */
    Py_XDECREF(kept[1]);
}

void
zl_io_drop_stale(zl_loop *loop, int blocking)
{
    zl_io_table *io = &loop->io;
    int seen = io->stale_len, kept = 0;
    for (int i = 0; i < seen; i++) {
        int fd = io->stale_fds[i];   /* re-read: a finalizer may have added entries (and moved the array) */
        zl_io_slot *slot = &io->slots[fd];
        if (slot->stale != 0 && !blocking && slot->stale_since == io->generation) {
            io->stale_fds[kept++] = fd;
            continue;
        }
        slot->stale_listed = 0;
        if (slot->stale != 0) {
            io_drop_stale_events(loop, fd);
        }
    }
    int added = io->stale_len - seen;
    memmove(io->stale_fds + kept, io->stale_fds + seen, (size_t)added * sizeof(int));
    io->stale_len = kept + added;
    io->generation++;
}

int
zl_io_wanted_count(zl_io_table *io)
{
    int count = io->watched;
    for (int i = 0; i < io->stale_len; i++) {
        zl_io_slot *slot = &io->slots[io->stale_fds[i]];
        count -= slot->registered != 0 && (slot->registered & ~slot->stale) == 0;
    }
    return count;
}

/* Before (re)adding a side. Re-added with the very object its stale event was removed with, the event is taken
 * back at no cost. Otherwise the stale events are what asyncio has unregistered already: re-added with another
 * object (its number may name a new file now), the fd is registered afresh; and when nothing else is live, every
 * stale event is dropped first, so the side is watched afresh (a registration kept for a file closed since would
 * fail to change, or watch nothing). 0, or -1 with OSError set. */
static int
io_take_back_stale(zl_loop *loop, int fd, int event, PyObject *fileobj)
{
    zl_io_slot *slot = &loop->io.slots[fd];
    if (slot->stale == 0) {
        return 0;
    }
    int same = fileobj != NULL;   /* the object every stale side was removed with: the same open file */
    for (int e = ZL_EV_READ; e <= ZL_EV_WRITE; e <<= 1) {
        same &= !(slot->stale & e) || slot->stale_fileobj[side_index(e)] == fileobj;
    }
    int drop = same ? 0 : slot->stale & event;
    if (!same && (slot->registered & ~slot->stale) == 0) {
        drop = slot->stale;
    }
    if (same && (slot->stale & event)) {
        PyObject *old = io_unstale_side(slot, event);
        Py_XDECREF(old);
        return 0;
    }
    if (drop == 0) {
        return 0;
    }
    PyObject *kept[2] = {(drop & ZL_EV_READ) ? io_unstale_side(slot, ZL_EV_READ) : NULL,
                         (drop & ZL_EV_WRITE) ? io_unstale_side(slot, ZL_EV_WRITE) : NULL};
    int rc = 0;
    if (slot->registered != 0) {
        int events = slot->registered & ~(drop & ~event);
        (void)loop->ops->unwatch(loop->backend, fd, slot->registered);
        slot->registered = 0;
        loop->io.watched--;
        rc = events ? io_apply_interest(loop, fd, events) : 0;
    }
    Py_XDECREF(kept[0]);   /* last: a socket's finalizer may run Python code */
    Py_XDECREF(kept[1]);
    return rc;
}

/* Drop the references a side held (it was already taken out of its slot). */
static void
side_forget(zl_io_side side)
{
    Py_XDECREF(side.handle);
    Py_XDECREF(side.owner);
    Py_XDECREF(side.fileobj);
}

/* The same for a side replaced or removed while the loop runs: its handle is cancelled too. */
static void
side_release(zl_io_side side)
{
    if (side.handle != NULL) {
        zl_handle_cancel((zl_handle *)side.handle);
    }
    side_forget(side);
}

/*
 * A watch outlives the file it was made for when the file is closed without remove_reader/remove_writer: the
 * kernel forgets the file, and its number may name a new one. Such a watch is dead, as with asyncio's selector:
 * it never fires for the new file (each backend makes sure of it), and changing its events fails as epoll's
 * EPOLL_CTL_MOD does (FileNotFoundError when the number was reused, EBADF when it is closed), after which the
 * number is forgotten altogether (selectors' modify unregisters it), so that a new add_reader of the new file
 * works. The handles of the dead watch are dropped, not cancelled, as asyncio drops its selector key; removed is a
 * side already taken out of the slot, dropped with them. The exception set stays set.
 */
static void
io_forget_dead_fd(zl_loop *loop, int fd, zl_io_side removed)
{
    PyObject *type, *value, *traceback;
    PyErr_Fetch(&type, &value, &traceback);   /* the finalizers below may run Python code */
    zl_io_slot *slot = &loop->io.slots[fd];
    if (slot->registered != 0) {
        (void)loop->ops->unwatch(loop->backend, fd, slot->registered);
        slot->registered = 0;
        loop->io.watched--;
    }
    zl_io_side dropped[2] = {{0}, {0}};
    if (slot->read.handle != NULL) {
        dropped[0] = slot->read;
        slot->read = (zl_io_side){0};
    }
    if (slot->write.handle != NULL) {
        dropped[1] = slot->write;
        slot->write = (zl_io_side){0};
    }
    PyObject *stale[2] = {io_unstale_side(slot, ZL_EV_READ), io_unstale_side(slot, ZL_EV_WRITE)};
    side_forget(removed);
    side_forget(dropped[0]);
    side_forget(dropped[1]);
    Py_XDECREF(stale[0]);
    Py_XDECREF(stale[1]);
    PyErr_Restore(type, value, traceback);
}

/* Set a side of fd: a handle, or a C callback for owner; fileobj is what add_reader/add_writer got when it is
 * not an int (NULL otherwise). */
static int
io_set_side(zl_loop *loop, int fd, int event, PyObject *handle, zl_io_fn fn, PyObject *owner, PyObject *fileobj)
{
    /* A transport outliving its loop (resume_reading, a partial write) gets asyncio's RuntimeError. */
    if (zl_loop_check_closed(loop) < 0 || io_reserve(&loop->io, fd) < 0) {
        return -1;
    }
    if (io_take_back_stale(loop, fd, event, fileobj) < 0) {
        return -1;
    }
    zl_io_slot *slot = &loop->io.slots[fd];
    int was_registered = slot->registered;
    if (io_apply_interest(loop, fd, slot->registered | event) < 0) {
        if (was_registered != 0 && fn == NULL) {
            io_forget_dead_fd(loop, fd, (zl_io_side){0});   /* the modify of a dead watch failed */
        }
        return -1;
    }
    zl_io_side *side = slot_side(slot, event);
    zl_io_side old = *side;
    Py_XINCREF(handle);
    Py_XINCREF(owner);
    Py_XINCREF(fileobj);
    *side = (zl_io_side){.handle = handle, .fn = fn, .owner = owner, .fileobj = fileobj};
    side_release(old);
    return 0;
}

int
zl_io_set_side(zl_loop *loop, int fd, int event, PyObject *handle, zl_io_fn fn, PyObject *owner)
{
    return io_set_side(loop, fd, event, handle, fn, owner, NULL);
}

/* Remove a side of fd. strict: a dead watch whose modify fails is forgotten and the error raised (-1), as
 * remove_reader/remove_writer do in asyncio; else the fd is only unregistered and 0 returned. */
static int
io_clear_side(zl_loop *loop, int fd, int event, int *was_set, int strict)
{
    *was_set = 0;
    if (fd >= loop->io.len) {
        return 0;
    }
    zl_io_slot *slot = &loop->io.slots[fd];
    zl_io_side *side = slot_side(slot, event);
    int empty = side->handle == NULL && side->fn == NULL;
    if (empty && (!(slot->registered & event) || (slot->stale & event))) {
        return 0;
    }
    *was_set = !empty;
    zl_io_side old = *side;
    *side = (zl_io_side){0};
    if (old.handle != NULL && old.fileobj != NULL && (slot->registered & event) &&
        io_mark_stale(&loop->io, fd, event, old.fileobj) == 0) {
        old.fileobj = NULL;   /* the slot keeps it while the event is stale */
    } else if (io_apply_interest(loop, fd, slot->registered & ~event) < 0) {
        if (strict) {
            io_forget_dead_fd(loop, fd, old);
            return -1;
        }
        /* The fd was closed under us: the kernel has already forgotten it, so forget it too. */
        PyErr_Clear();
        (void)io_apply_interest(loop, fd, 0);
        slot->registered = 0;
    }
    side_release(old);
    return 0;
}

int
zl_io_clear_side(zl_loop *loop, int fd, int event, int *was_set)
{
    return io_clear_side(loop, fd, event, was_set, 0);
}

void
zl_io_release_all(zl_loop *loop)
{
    zl_io_table *io = &loop->io;
    for (int fd = 0; fd < io->used; fd++) {
        zl_io_slot *slot = &io->slots[fd];
        if (slot->registered != 0 && loop->backend != NULL) {
            (void)loop->ops->unwatch(loop->backend, fd, slot->registered);
        }
        slot->registered = 0;
        slot->stale_listed = 0;   /* transport_owner stays: asyncio refuses a live transport's fd after close() */
        zl_io_side read = slot->read, write = slot->write;
        PyObject *stale[2] = {io_unstale_side(slot, ZL_EV_READ), io_unstale_side(slot, ZL_EV_WRITE)};
        slot->read = (zl_io_side){0};
        slot->write = (zl_io_side){0};
        side_forget(read);
        side_forget(write);
        Py_XDECREF(stale[0]);
        Py_XDECREF(stale[1]);
    }
    io->watched = 0;
    PyMem_Free(io->stale_fds);
    io->stale_fds = NULL;
    io->stale_len = io->stale_cap = 0;
    Py_CLEAR(io->deferred_fn);
    Py_CLEAR(io->deferred_context);
}

/*
 * A transport's fd is its own only while its socket object holds that number. A caller who closes the socket
 * behind the transport's back frees the number, and the next socket may get it: the new owner then takes the slot
 * over (adopt), and the old transport, which finds its socket gone before any syscall, releases only what it
 * still holds (disown, clear_owned_side). asyncio's selector keeps the stale registration instead, so a new
 * transport on the reused number is never polled.
 */

/* Forget another transport's C callbacks on fd, and start the backend's watch of fd afresh: it may be of a closed
 * file whose number this one reused (the kernel forgot that file, a backend may not have). The references go
 * last, once the slot is consistent: dropping one may finalize that transport. */
static int
io_refresh_for_owner(zl_loop *loop, zl_io_slot *slot, int fd, PyObject *owner)
{
    zl_io_side dropped[2] = {{0}, {0}};
    for (int i = 0; i < 2; i++) {
        zl_io_side *side = i == 0 ? &slot->read : &slot->write;
        if (side->fn != NULL && side->owner != owner) {
            dropped[i] = *side;
            *side = (zl_io_side){0};
        }
    }
    PyObject *stale[2] = {io_unstale_side(slot, ZL_EV_READ), io_unstale_side(slot, ZL_EV_WRITE)};
    int rc = 0;
    if (slot->registered != 0) {
        (void)loop->ops->unwatch(loop->backend, fd, slot->registered);
        slot->registered = 0;
        loop->io.watched--;
        int wanted = (slot->read.handle || slot->read.fn ? ZL_EV_READ : 0) |
                     (slot->write.handle || slot->write.fn ? ZL_EV_WRITE : 0);
        rc = wanted ? io_apply_interest(loop, fd, wanted) : 0;
    }
    side_forget(dropped[0]);
    side_forget(dropped[1]);
    Py_XDECREF(stale[0]);
    Py_XDECREF(stale[1]);
    return rc;
}

int
zl_io_adopt_fd(zl_loop *loop, int fd, PyObject *owner)
{
    if (fd >= loop->io.len && fcntl(fd, F_GETFD) < 0 && errno == EBADF) {
        /* Nothing open under that number (a closed or mock socket): nothing to take over. asyncio makes such a
         * transport and fails only when it starts watching the fd, in a callback; so does zloop (set_side). */
        return 0;
    }
    if (io_reserve(&loop->io, fd) < 0) {
        return -1;
    }
    zl_io_slot *slot = &loop->io.slots[fd];
    if (io_refresh_for_owner(loop, slot, fd, owner) < 0) {
        return -1;
    }
    slot->transport_owner = owner;
    return 0;
}

void
zl_io_disown_fd(zl_loop *loop, int fd, PyObject *owner)
{
    if (fd < loop->io.len && loop->io.slots[fd].transport_owner == owner) {
        loop->io.slots[fd].transport_owner = NULL;
    }
}

void
zl_io_clear_owned_side(zl_loop *loop, int fd, int event, PyObject *owner)
{
    if (fd >= loop->io.len) {
        return;
    }
    zl_io_side *side = slot_side(&loop->io.slots[fd], event);
    if (side->handle != NULL || (side->fn != NULL && side->owner != owner)) {
        return;   /* taken over by whoever got the number next */
    }
    int was_set;
    (void)zl_io_clear_side(loop, fd, event, &was_set);
}

int
zl_io_traverse(zl_io_table *io, visitproc visit, void *arg)
{
    for (int fd = 0; fd < io->used; fd++) {
        Py_VISIT(io->slots[fd].read.handle);
        Py_VISIT(io->slots[fd].read.owner);
        Py_VISIT(io->slots[fd].read.fileobj);
        Py_VISIT(io->slots[fd].write.handle);
        Py_VISIT(io->slots[fd].write.owner);
        Py_VISIT(io->slots[fd].write.fileobj);
        Py_VISIT(io->slots[fd].stale_fileobj[0]);
        Py_VISIT(io->slots[fd].stale_fileobj[1]);
    }
    Py_VISIT(io->deferred_fn);
    Py_VISIT(io->deferred_context);
    return 0;
}

/* ------------------------------------------------------------------ dispatch */

/*
 * asyncio runs I/O callbacks as handles appended to the ready queue, after the handles already waiting when it
 * polled, and runs what those callbacks schedule in the next iteration. A C callback (a transport's reader or
 * writer) is called straight from the dispatch instead, which keeps that order as long as nothing waits in the
 * ready queue: what it schedules goes to ready_later (zl_loop_schedule), queued after this iteration's I/O
 * handles and timers. When something does wait (handles from before the poll, or an add_reader handle queued
 * earlier in this dispatch), the call is deferred: a handle queued behind them runs the C callback, if the same
 * owner still holds that side of the fd by then.
 */

/* Run the C callback of a side: -1 only when the loop must stop. The owner stays alive through the call. */
static int
io_call_side_fn(zl_io_side *side, int fd)
{
    PyObject *owner = side->owner;
    Py_INCREF(owner);
    int rc = side->fn(owner, fd);
    Py_DECREF(owner);
    return rc;
}

static PyObject *
io_run_deferred(PyObject *loop_obj, PyObject *const *args, Py_ssize_t nargs)
{
    zl_loop *loop = (zl_loop *)loop_obj;
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "_io_run_deferred(owner, fd, event)");
        return NULL;
    }
    long fd = PyLong_AsLong(args[1]);
    long event = PyLong_AsLong(args[2]);
    if ((fd == -1 || event == -1) && PyErr_Occurred()) {
        return NULL;
    }
    if (fd < 0 || fd >= loop->io.len || (event != ZL_EV_READ && event != ZL_EV_WRITE) ||
        !(loop->io.slots[fd].registered & event)) {
        Py_RETURN_NONE;
    }
    zl_io_side *side = slot_side(&loop->io.slots[fd], (int)event);
    if (side->fn == NULL || side->owner != args[0]) {
        Py_RETURN_NONE;
    }
    if (io_call_side_fn(side, (int)fd) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyMethodDef io_run_deferred_def = {"_io_run_deferred", (PyCFunction)(void (*)(void))io_run_deferred,
                                          METH_FASTCALL, NULL};

static int
io_defer_side(zl_loop *loop, zl_io_side *side, int fd, int event)
{
    zl_io_table *io = &loop->io;
    if (io->deferred_fn == NULL) {
        io->deferred_fn = PyCFunction_New(&io_run_deferred_def, (PyObject *)loop);
        io->deferred_context = PyContext_New();
        if (io->deferred_fn == NULL || io->deferred_context == NULL) {
            Py_CLEAR(io->deferred_fn);
            Py_CLEAR(io->deferred_context);
            return -1;
        }
    }
    PyObject *args[3] = {side->owner, PyLong_FromLong(fd), PyLong_FromLong(event)};
    zl_handle *handle = NULL;
    if (args[1] != NULL && args[2] != NULL) {
        handle = zl_handle_new(loop, io->deferred_fn, args, 3, io->deferred_context, 0, 0.0);
    }
    Py_XDECREF(args[1]);
    Py_XDECREF(args[2]);
    if (handle == NULL) {
        return -1;
    }
    return zl_ready_queue_push(&loop->ready, (PyObject *)handle);
}

static int
io_dispatch_side(zl_loop *loop, int fd, int event)
{
    zl_io_side *side = slot_side(&loop->io.slots[fd], event);
    if (side->handle != NULL) {
        if (((zl_handle *)side->handle)->cancelled) {
            int was_set;
            return zl_io_clear_side(loop, fd, event, &was_set);
        }
        Py_INCREF(side->handle);
        return zl_ready_queue_push(&loop->ready, side->handle);
    }
    if (side->fn == NULL) {
        return 0;
    }
    if (loop->ready.len > 0) {
        return io_defer_side(loop, side, fd, event);
    }
    loop->in_io_callback = 1;
    int rc = io_call_side_fn(side, fd);
    loop->in_io_callback = 0;
    return rc;
}

int
zl_io_dispatch(zl_loop *loop, const zl_fired *fired, int count)
{
    for (int i = 0; i < count; i++) {
        int fd = fired[i].fd;
        /* Re-read the slot each time: a C callback may have changed (or grown) the table. */
        if (fd < 0 || fd >= loop->io.len) {
            continue;
        }
        if ((fired[i].events & ZL_EV_READ) && (loop->io.slots[fd].registered & ZL_EV_READ)) {
            if (io_dispatch_side(loop, fd, ZL_EV_READ) < 0) {
                return -1;
            }
        }
        if (fd < loop->io.len && (fired[i].events & ZL_EV_WRITE) && (loop->io.slots[fd].registered & ZL_EV_WRITE)) {
            if (io_dispatch_side(loop, fd, ZL_EV_WRITE) < 0) {
                return -1;
            }
        }
    }
    return 0;
}

/* ------------------------------------------------------------------ add/remove_reader/writer */

/* asyncio refuses add_reader/remove_reader on an fd a transport owns. */
static int
io_check_no_transport(zl_loop *loop, int fd, int event)
{
    if (fd >= loop->io.len) {
        return 0;
    }
    zl_io_slot *slot = &loop->io.slots[fd];
    zl_io_side *side = slot_side(slot, event);
    if (side->fn != NULL) {
        PyErr_Format(PyExc_RuntimeError, "File descriptor %d is used by transport %R", fd, side->owner);
        return -1;
    }
    if (slot->transport_owner != NULL) {
        PyErr_Format(PyExc_RuntimeError, "File descriptor %d is used by transport", fd);
        return -1;
    }
    return 0;
}

static PyObject *
io_add_callback(zl_loop *loop, int event, const char *method, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 2) {
        PyErr_Format(PyExc_TypeError, "%s() takes at least 2 arguments (%zd given)", method, nargs);
        return NULL;
    }
    /* asyncio: a closed loop refuses any number before the selector validates it (RuntimeError, not ValueError). */
    if (PyLong_Check(args[0]) && zl_loop_check_closed(loop) < 0) {
        return NULL;
    }
    int fd = zl_loop_fileobj_to_fd(loop, args[0]);
    if (fd < 0 || zl_loop_check_closed(loop) < 0) {
        return NULL;
    }
    if (io_check_no_transport(loop, fd, event) < 0) {
        return NULL;
    }
    zl_handle *handle = zl_handle_new(loop, args[1], args + 2, nargs - 2, NULL, 0, 0.0);
    if (handle == NULL) {
        return NULL;
    }
    zl_handle_track((PyObject *)handle);   /* the fd table holds it, and queues it each time the fd is ready */
    PyObject *fileobj = PyLong_Check(args[0]) ? NULL : args[0];
    if (io_set_side(loop, fd, event, (PyObject *)handle, NULL, NULL, fileobj) < 0) {
        Py_DECREF(handle);
        return NULL;
    }
    return (PyObject *)handle;
}

/* The fd a file object was added with, for one whose fileno() now fails (closed): found by identity, as the
 * selectors module's exhaustive lookup finds it. -1 with the fileno() error kept when it was never added. */
static int
io_find_added_fileobj(zl_loop *loop, PyObject *fileobj)
{
    if (PyLong_Check(fileobj) || !PyErr_ExceptionMatches(PyExc_ValueError)) {
        return -1;
    }
    for (int fd = 0; fd < loop->io.used; fd++) {
        zl_io_slot *slot = &loop->io.slots[fd];
        if (slot->read.fileobj == fileobj || slot->write.fileobj == fileobj) {
            PyErr_Clear();
            return fd;
        }
    }
    return -1;
}

/* asyncio's remove_reader on a closed loop: a live transport's fd still raises RuntimeError (its transports
 * outlive close()), any other number answers False before it is validated. */
static PyObject *
io_remove_on_closed(zl_loop *loop, int event, PyObject *number)
{
    int overflow;
    long long n = PyLong_AsLongLongAndOverflow(number, &overflow);
    if (n == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (overflow == 0 && n >= 0 && n < loop->io.len && io_check_no_transport(loop, (int)n, event) < 0) {
        return NULL;
    }
    Py_RETURN_FALSE;
}

static PyObject *
io_remove_callback(zl_loop *loop, int event, PyObject *fileobj)
{
    if (PyLong_Check(fileobj) && loop->closed) {
        return io_remove_on_closed(loop, event, fileobj);
    }
    int fd = zl_loop_fileobj_to_fd(loop, fileobj);
    if (fd < 0 && PyErr_ExceptionMatches(PyExc_OverflowError)) {
        PyErr_Clear();
        Py_RETURN_FALSE;   /* no fd that large was ever added (asyncio's selector map has no such key) */
    }
    if (fd < 0 && (fd = io_find_added_fileobj(loop, fileobj)) < 0) {
        return NULL;
    }
    if (io_check_no_transport(loop, fd, event) < 0) {
        return NULL;
    }
    if (loop->closed) {
        Py_RETURN_FALSE;
    }
    int was_set;
    if (io_clear_side(loop, fd, event, &was_set, 1) < 0) {
        return NULL;
    }
    return PyBool_FromLong(was_set);
}

PyObject *
zl_loop_add_reader(zl_loop *loop, PyObject *const *args, Py_ssize_t nargs)
{
    return io_add_callback(loop, ZL_EV_READ, "add_reader", args, nargs);
}

PyObject *
zl_loop_add_writer(zl_loop *loop, PyObject *const *args, Py_ssize_t nargs)
{
    return io_add_callback(loop, ZL_EV_WRITE, "add_writer", args, nargs);
}

PyObject *
zl_loop_remove_reader(zl_loop *loop, PyObject *fileobj)
{
    return io_remove_callback(loop, ZL_EV_READ, fileobj);
}

PyObject *
zl_loop_remove_writer(zl_loop *loop, PyObject *fileobj)
{
    return io_remove_callback(loop, ZL_EV_WRITE, fileobj);
}
