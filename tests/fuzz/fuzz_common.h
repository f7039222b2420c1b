/* tests/fuzz/fuzz_common.h — what the libFuzzer harnesses share: the embedded interpreter, a reader of the fuzz
 * input, tracked Python objects (live count, an optional action on deallocation) and allocation-failure injection. */
#ifndef ZL_FUZZ_COMMON_H
#define ZL_FUZZ_COMMON_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

/* A failed invariant is a crash libFuzzer records, with the input that caused it. */
#define FUZZ_CHECK(cond, ...)                                                                           \
    do {                                                                                                \
        if (!(cond)) {                                                                                  \
            fprintf(stderr, "%s:%d: invariant failed: %s: ", __FILE__, __LINE__, #cond);               \
            fprintf(stderr, __VA_ARGS__);                                                               \
            fputc('\n', stderr);                                                                        \
            abort();                                                                                    \
        }                                                                                               \
    } while (0)

/* Start the interpreter once, with plain malloc behind every Python allocator (so ASan sees each block the
 * structures allocate) and the failure-injecting wrapper on the PyMem domain. */
void fuzz_python_init(void);

/* ------------------------------------------------------------------ input */

typedef struct fuzz_input {
    const uint8_t *data;
    size_t left;
} fuzz_input;

static inline int
fuzz_more(const fuzz_input *in)
{
    return in->left > 0;
}

uint8_t fuzz_u8(fuzz_input *in);
uint16_t fuzz_u16(fuzz_input *in);
uint32_t fuzz_u32(fuzz_input *in);
/* A double that is never NaN: often a special value (0, -0, ±inf, huge, tiny, subnormal), else raw bits. */
double fuzz_double(fuzz_input *in);

/* ------------------------------------------------------------------ tracked objects */

typedef struct fuzz_item {
    PyObject_HEAD
    long id;
    int dead;                 /* a harness flag (e.g. "cancelled") that predicates read */
    int on_dealloc;           /* passed to fuzz_item_dealloc_hook when the item is freed */
    size_t mark;              /* free for a harness (e.g. the item's index in a model) */
} fuzz_item;

/* Items alive right now: every harness ends an input with this back at zero. */
extern long fuzz_items_live;
/* Items freed so far (a call that must release an item it was given shows here). */
extern long fuzz_items_freed;

/* Called from an item's deallocation when its on_dealloc is non-zero, with the item still readable. A harness
 * sets it to run code that re-enters the structure under test, as a finalizer can in the loop. */
extern void (*fuzz_item_dealloc_hook)(fuzz_item *item);

fuzz_item *fuzz_item_new(long id, int on_dealloc);

/* ------------------------------------------------------------------ allocation failures */

/* The next PyMem_Malloc/Calloc/Realloc fails (once). fuzz_alloc_failed() then says whether it was consumed;
 * fuzz_alloc_reset() cancels a failure nothing consumed. */
void fuzz_fail_next_alloc(void);
int fuzz_alloc_failed(void);
void fuzz_alloc_reset(void);

/* The MemoryError a failing call must have set, cleared. */
void fuzz_expect_memory_error(void);

#endif /* ZL_FUZZ_COMMON_H */
