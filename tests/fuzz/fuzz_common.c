/* tests/fuzz/fuzz_common.c — the embedded interpreter, the input reader, the tracked item type and the PyMem
 * wrapper that fails one allocation on request, shared by every harness in tests/fuzz. */
#include "fuzz_common.h"

#include <float.h>
#include <math.h>
#include <string.h>

/* ------------------------------------------------------------------ allocation failures */

static PyMemAllocatorEx fuzz_mem_base;
static int fuzz_fail_pending;
static int fuzz_fail_consumed;

static int
fuzz_take_failure(void)
{
    if (!fuzz_fail_pending) {
        return 0;
    }
    fuzz_fail_pending = 0;
    fuzz_fail_consumed = 1;
    return 1;
}

static void *
fuzz_mem_malloc(void *ctx, size_t size)
{
    (void)ctx;
    return fuzz_take_failure() ? NULL : fuzz_mem_base.malloc(fuzz_mem_base.ctx, size);
}

static void *
fuzz_mem_calloc(void *ctx, size_t nelem, size_t elsize)
{
    (void)ctx;
    return fuzz_take_failure() ? NULL : fuzz_mem_base.calloc(fuzz_mem_base.ctx, nelem, elsize);
}

static void *
fuzz_mem_realloc(void *ctx, void *ptr, size_t size)
{
    (void)ctx;
    return fuzz_take_failure() ? NULL : fuzz_mem_base.realloc(fuzz_mem_base.ctx, ptr, size);
}

static void
fuzz_mem_free(void *ctx, void *ptr)
{
    (void)ctx;
    fuzz_mem_base.free(fuzz_mem_base.ctx, ptr);
}

void
fuzz_fail_next_alloc(void)
{
    fuzz_fail_pending = 1;
    fuzz_fail_consumed = 0;
}

int
fuzz_alloc_failed(void)
{
    int consumed = fuzz_fail_consumed;
    fuzz_fail_consumed = 0;
    return consumed;
}

void
fuzz_alloc_reset(void)
{
    fuzz_fail_pending = 0;
    fuzz_fail_consumed = 0;
}

void
fuzz_expect_memory_error(void)
{
    FUZZ_CHECK(PyErr_ExceptionMatches(PyExc_MemoryError), "a failed allocation must leave MemoryError set");
    PyErr_Clear();
}

/* ------------------------------------------------------------------ interpreter */

void
fuzz_python_init(void)
{
    if (Py_IsInitialized()) {
        return;
    }
    PyPreConfig preconfig;
    PyPreConfig_InitPythonConfig(&preconfig);
    preconfig.allocator = PYMEM_ALLOCATOR_MALLOC;
    PyStatus status = Py_PreInitialize(&preconfig);
    if (PyStatus_Exception(status)) {
        Py_ExitStatusException(status);
    }
    Py_InitializeEx(0);
    PyMem_GetAllocator(PYMEM_DOMAIN_MEM, &fuzz_mem_base);
    PyMemAllocatorEx wrapper = {NULL, fuzz_mem_malloc, fuzz_mem_calloc, fuzz_mem_realloc, fuzz_mem_free};
    PyMem_SetAllocator(PYMEM_DOMAIN_MEM, &wrapper);
}

/* ------------------------------------------------------------------ input */

uint8_t
fuzz_u8(fuzz_input *in)
{
    if (in->left == 0) {
        return 0;
    }
    in->left--;
    return *in->data++;
}

uint16_t
fuzz_u16(fuzz_input *in)
{
    uint16_t lo = fuzz_u8(in);
    return (uint16_t)(lo | (uint16_t)fuzz_u8(in) << 8);
}

uint32_t
fuzz_u32(fuzz_input *in)
{
    uint32_t lo = fuzz_u16(in);
    return lo | (uint32_t)fuzz_u16(in) << 16;
}

double
fuzz_double(fuzz_input *in)
{
    static const double special[] = {
        0.0, -0.0, INFINITY, -INFINITY, DBL_MAX, -DBL_MAX, DBL_MIN, 4.9406564584124654e-324, 1.0, -1.0, 1e9, 1e-9,
    };
    uint8_t kind = fuzz_u8(in);
    if (kind < 64) {
        return special[kind % (sizeof(special) / sizeof(special[0]))];
    }
    if (kind < 192) {
        return (double)(fuzz_u8(in) % 16);   /* small values: many equal deadlines */
    }
    uint64_t bits = (uint64_t)fuzz_u32(in) | (uint64_t)fuzz_u32(in) << 32;
    double value;
    memcpy(&value, &bits, sizeof(value));
    return isnan(value) ? 0.5 : value;
}

/* ------------------------------------------------------------------ tracked objects */

long fuzz_items_live;
long fuzz_items_freed;
void (*fuzz_item_dealloc_hook)(fuzz_item *item);

static void
fuzz_item_dealloc(PyObject *self)
{
    fuzz_item *item = (fuzz_item *)self;
    fuzz_items_live--;
    fuzz_items_freed++;
    if (item->on_dealloc && fuzz_item_dealloc_hook != NULL) {
        fuzz_item_dealloc_hook(item);
    }
    PyObject_Free(self);
}

static PyTypeObject fuzz_item_type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "fuzz.Item",
    .tp_basicsize = sizeof(fuzz_item),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_dealloc = fuzz_item_dealloc,
};

fuzz_item *
fuzz_item_new(long id, int on_dealloc)
{
    if (!(fuzz_item_type.tp_flags & Py_TPFLAGS_READY) && PyType_Ready(&fuzz_item_type) < 0) {
        PyErr_Print();
        abort();
    }
    fuzz_item *item = PyObject_New(fuzz_item, &fuzz_item_type);
    FUZZ_CHECK(item != NULL, "out of memory");
    item->id = id;
    item->dead = 0;
    item->on_dealloc = on_dealloc;
    fuzz_items_live++;
    return item;
}
