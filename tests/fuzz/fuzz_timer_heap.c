/* tests/fuzz/fuzz_timer_heap.c — libFuzzer harness of core/timer_heap.c against a model (an unordered array
 * scanned for its minimum): pop order by (deadline, sequence), drop_if, references, re-entrant finalizers, OOM. */
#include "fuzz_common.h"
#include "timer_heap.h"

#include <string.h>

#define MODEL_MAX 1024   /* past four doublings of the heap array; larger only slows every check */

typedef struct model_entry {
    double when;
    uint64_t seq;
    fuzz_item *item;          /* borrowed: the heap owns the reference */
} model_entry;

static zl_timer_heap heap;
static model_entry model[MODEL_MAX];
static size_t model_len;
static uint64_t next_seq;
static long next_id;

static int
model_before(const model_entry *a, const model_entry *b)
{
    return a->when < b->when || (a->when == b->when && a->seq < b->seq);
}

static size_t
model_min(void)
{
    size_t best = 0;
    for (size_t i = 1; i < model_len; i++) {
        if (model_before(&model[i], &model[best])) {
            best = i;
        }
    }
    return best;
}

static void
model_remove(size_t i)
{
    model[i] = model[--model_len];
}

static size_t
model_find(PyObject *timer)
{
    for (size_t i = 0; i < model_len; i++) {
        if ((PyObject *)model[i].item == timer) {
            return i;
        }
    }
    FUZZ_CHECK(0, "the heap holds a timer the model does not know");
    return 0;
}

/* Every structural invariant: same size, parent <= child everywhere, and the same set of (when, seq, timer). */
static void
check_heap(void)
{
    FUZZ_CHECK(heap.len == model_len, "heap has %zu entries, model %zu", heap.len, model_len);
    FUZZ_CHECK(heap.len <= heap.capacity, "len %zu over capacity %zu", heap.len, heap.capacity);
    for (size_t i = 1; i < heap.len; i++) {
        const zl_timer_entry *parent = &heap.entries[(i - 1) / 2], *child = &heap.entries[i];
        FUZZ_CHECK(!(child->when < parent->when || (child->when == parent->when && child->seq < parent->seq)),
                   "heap order broken at %zu", i);
    }
    for (size_t i = 0; i < model_len; i++) {
        model[i].item->mark = i;
    }
    for (size_t i = 0; i < heap.len; i++) {
        size_t at = ((fuzz_item *)heap.entries[i].timer)->mark;
        FUZZ_CHECK(at < model_len && (PyObject *)model[at].item == heap.entries[i].timer, "entry %zu unknown", i);
        const model_entry *m = &model[at];
        FUZZ_CHECK(m->seq == heap.entries[i].seq && (m->when == heap.entries[i].when), "entry %zu changed key", i);
        FUZZ_CHECK(Py_REFCNT(m->item) == 1, "a queued timer has refcount %zd", Py_REFCNT(m->item));
    }
    const zl_timer_entry *head = zl_timer_heap_peek(&heap);
    FUZZ_CHECK((head == NULL) == (model_len == 0), "peek disagrees on emptiness");
    if (head != NULL) {
        FUZZ_CHECK(head->timer == (PyObject *)model[model_min()].item, "peek is not the earliest timer");
    }
}

/* Push a new item; with fail, the heap's allocation fails if it needs one. */
static void
push_item(double when, int on_dealloc, int fail, int nested)
{
    if (model_len >= MODEL_MAX) {
        return;
    }
    fuzz_item *item = fuzz_item_new(next_id++, on_dealloc);
    uint64_t seq = next_seq++;
    long freed_before = fuzz_items_freed;
    if (nested) {
        /* From a finalizer inside another call: no failure is pending, and the outer call's bookkeeping stays. */
        FUZZ_CHECK(zl_timer_heap_push(&heap, when, seq, (PyObject *)item) == 0, "a push from a finalizer failed");
        model[model_len++] = (model_entry){.when = when, .seq = seq, .item = item};
        return;
    }
    if (fail) {
        fuzz_fail_next_alloc();
    }
    int rc = zl_timer_heap_push(&heap, when, seq, (PyObject *)item);
    int failed = fuzz_alloc_failed();
    fuzz_alloc_reset();
    if (rc < 0) {
        FUZZ_CHECK(failed, "push failed without an allocation failure");
        fuzz_expect_memory_error();
        FUZZ_CHECK(fuzz_items_freed > freed_before, "a failed push kept its timer");
        return;
    }
    FUZZ_CHECK(!failed && !PyErr_Occurred(), "push succeeded through a failed allocation");
    model[model_len++] = (model_entry){.when = when, .seq = seq, .item = item};
}

/* A finalizer that schedules a timer, as a callback's __del__ may while the loop drops timers. */
static void
reentrant_push(fuzz_item *dying)
{
    if (model_len < MODEL_MAX) {
        push_item((double)(dying->id % 7), 0, 0, 1);
    }
}

static void
op_pop(void)
{
    if (model_len == 0) {
        return;
    }
    size_t expected = model_min();
    fuzz_item *item = model[expected].item;
    PyObject *timer = zl_timer_heap_pop(&heap);
    FUZZ_CHECK(timer == (PyObject *)item, "pop returned %ld, the earliest is %ld", ((fuzz_item *)timer)->id, item->id);
    model_remove(expected);
    check_heap();
    Py_DECREF(timer);   /* may push (re-entrant finalizer) */
}

static int
item_is_dead(PyObject *timer)
{
    return ((fuzz_item *)timer)->dead;
}

/* Compaction: every dead timer goes and is released once the heap is whole again (a finalizer may push); when
 * its allocation fails, nothing changes. */
static void
op_drop_dead(int fail)
{
    if (fail) {
        size_t len_before = heap.len;
        fuzz_fail_next_alloc();
        size_t dropped = zl_timer_heap_drop_if(&heap, item_is_dead);
        FUZZ_CHECK(fuzz_alloc_failed(), "drop_if made no allocation");
        FUZZ_CHECK(dropped == 0 && heap.len == len_before && !PyErr_Occurred(), "drop_if changed the heap on OOM");
        return;
    }
    size_t dead = 0;
    for (size_t i = 0; i < model_len;) {
        if (model[i].item->dead) {
            model_remove(i);
            dead++;
        } else {
            i++;
        }
    }
    size_t dropped = zl_timer_heap_drop_if(&heap, item_is_dead);
    FUZZ_CHECK(!PyErr_Occurred(), "drop_if left an exception set");
    FUZZ_CHECK(dropped == dead, "drop_if dropped %zu of %zu dead timers", dropped, dead);
}

static void
op_clear(void)
{
    zl_timer_heap_clear(&heap);
    /* What finalizers pushed during the clear was cleared with the rest. */
    model_len = 0;
    FUZZ_CHECK(heap.len == 0, "clear left %zu timers", heap.len);
}

static size_t visited;

static int
count_visit(PyObject *obj, void *arg)
{
    (void)arg;
    model_find(obj);
    visited++;
    return 0;
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_python_init();
    fuzz_item_dealloc_hook = reentrant_push;
    return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_input in = {data, size};
    memset(&heap, 0, sizeof(heap));
    model_len = 0;
    next_seq = 0;
    while (fuzz_more(&in)) {
        uint8_t op = fuzz_u8(&in);
        switch (op % 8) {
        case 0:
        case 1:
            push_item(fuzz_double(&in), (op & 0x80) != 0, (op & 0x40) != 0, 0);
            break;
        case 2:
            for (uint8_t n = fuzz_u8(&in); n > 0 && model_len < MODEL_MAX; n--) {
                push_item((double)(n % 5), 0, 0, 0);   /* a burst: growth, and long runs of equal deadlines */
            }
            break;
        case 3:
            op_pop();
            break;
        case 4:
            if (model_len > 0) {
                model[fuzz_u16(&in) % model_len].item->dead = 1;   /* "cancel" */
            }
            break;
        case 5:
            op_drop_dead((op & 0x40) != 0);
            break;
        case 6:
            visited = 0;
            zl_timer_heap_traverse(&heap, count_visit, NULL);
            FUZZ_CHECK(visited == model_len, "traverse visited %zu of %zu", visited, model_len);
            break;
        case 7:
            if ((op & 0xf0) == 0x70) {
                op_clear();
            } else {
                op_pop();
            }
            break;
        }
        check_heap();
    }
    /* Drain in order: every timer comes out, earliest first. */
    while (model_len > 0) {
        op_pop();
    }
    zl_timer_heap_free(&heap);
    FUZZ_CHECK(fuzz_items_live == 0, "%ld timers leaked", fuzz_items_live);
    return 0;
}
