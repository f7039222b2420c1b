/* tests/fuzz/fuzz_ready_queue.c — libFuzzer harness of core/ready_queue.{h,c}: two queues (like ready and
 * ready_later) against FIFO models, through wrap-around growth, move_all, clear with re-entrant finalizers, OOM. */
#include "fuzz_common.h"
#include "ready_queue.h"

#include <string.h>

#define MODEL_MAX 8192

typedef struct model_fifo {
    fuzz_item *items[MODEL_MAX];   /* borrowed: the queue owns the references */
    size_t len;
} model_fifo;

static zl_ready_queue queues[2];
static model_fifo models[2];
static long next_id;

static void
model_append(model_fifo *model, fuzz_item *item)
{
    FUZZ_CHECK(model->len < MODEL_MAX, "model full");
    model->items[model->len++] = item;
}

static fuzz_item *
model_shift(model_fifo *model)
{
    fuzz_item *first = model->items[0];
    memmove(model->items, model->items + 1, --model->len * sizeof(model->items[0]));
    return first;
}

/* Same length, same items in the same order, each held once, within capacity. */
static void
check_queue(int q)
{
    zl_ready_queue *queue = &queues[q];
    model_fifo *model = &models[q];
    FUZZ_CHECK(queue->len == model->len, "queue %d holds %zu, model %zu", q, queue->len, model->len);
    if (queue->items == NULL) {
        FUZZ_CHECK(queue->len == 0, "items without a buffer");
        return;
    }
    size_t capacity = queue->mask + 1;
    FUZZ_CHECK((capacity & queue->mask) == 0, "capacity %zu is not a power of two", capacity);
    FUZZ_CHECK(queue->len <= capacity && queue->head < capacity, "len %zu head %zu capacity %zu", queue->len,
               queue->head, capacity);
    for (size_t i = 0; i < queue->len; i++) {
        PyObject *item = queue->items[(queue->head + i) & queue->mask];
        FUZZ_CHECK(item == (PyObject *)model->items[i], "queue %d position %zu: FIFO order broken", q, i);
        FUZZ_CHECK(Py_REFCNT(item) == 1, "a queued item has refcount %zd", Py_REFCNT(item));
    }
}

static void
push_item(int q, int on_dealloc, int fail, int nested)
{
    if (models[q].len >= MODEL_MAX) {
        return;
    }
    fuzz_item *item = fuzz_item_new(next_id++, on_dealloc);
    long freed_before = fuzz_items_freed;
    if (nested) {
        /* From a finalizer inside another call: no failure is pending, and the outer call's bookkeeping stays. */
        FUZZ_CHECK(zl_ready_queue_push(&queues[q], (PyObject *)item) == 0, "a push from a finalizer failed");
        model_append(&models[q], item);
        return;
    }
    if (fail) {
        fuzz_fail_next_alloc();
    }
    int rc = zl_ready_queue_push(&queues[q], (PyObject *)item);
    int failed = fuzz_alloc_failed();
    fuzz_alloc_reset();
    if (rc < 0) {
        FUZZ_CHECK(failed, "push failed without an allocation failure");
        fuzz_expect_memory_error();
        FUZZ_CHECK(fuzz_items_freed > freed_before, "a failed push kept its item");
        return;
    }
    FUZZ_CHECK(!failed, "push succeeded through a failed allocation");
    model_append(&models[q], item);
}

/* A handle's finalizer that schedules a callback on the queue being cleared or popped. */
static void
reentrant_push(fuzz_item *dying)
{
    push_item((int)(dying->id & 1), 0, 0, 1);
}

static void
op_pop(int q)
{
    if (models[q].len == 0) {
        return;
    }
    fuzz_item *expected = model_shift(&models[q]);
    PyObject *item = zl_ready_queue_pop(&queues[q]);
    FUZZ_CHECK(item == (PyObject *)expected, "pop returned %ld, expected %ld", ((fuzz_item *)item)->id, expected->id);
    check_queue(q);
    Py_DECREF(item);
}

/* move_all(dst, src): on an allocation failure, exactly the items that fit without growing moved, in order. */
static void
op_move_all(int dst, int fail)
{
    int src = 1 - dst;
    zl_ready_queue *d = &queues[dst];
    size_t room = d->items == NULL ? 0 : d->mask + 1 - d->len;
    size_t moving = models[src].len;
    if (models[dst].len + moving > MODEL_MAX) {
        return;
    }
    if (fail) {
        fuzz_fail_next_alloc();
    }
    int rc = zl_ready_queue_move_all(d, &queues[src]);
    int failed = fuzz_alloc_failed();
    fuzz_alloc_reset();
    size_t moved = moving;
    if (rc < 0) {
        FUZZ_CHECK(failed && room < moving, "move_all failed without a needed allocation failing");
        fuzz_expect_memory_error();
        moved = room;
    } else {
        FUZZ_CHECK(!failed, "move_all succeeded through a failed allocation");
    }
    for (size_t i = 0; i < moved; i++) {
        model_append(&models[dst], model_shift(&models[src]));
    }
}

static void
op_clear(int q)
{
    zl_ready_queue_clear(&queues[q]);
    /* What finalizers pushed onto this queue during the clear was popped and released by it too; what they
     * pushed onto the other queue stays. */
    models[q].len = 0;
    FUZZ_CHECK(queues[q].len == 0, "clear left %zu items", queues[q].len);
}

static size_t visited;

static int
order_visit(PyObject *obj, void *arg)
{
    model_fifo *model = arg;
    FUZZ_CHECK(visited < model->len && obj == (PyObject *)model->items[visited], "traverse out of FIFO order");
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
    memset(queues, 0, sizeof(queues));
    models[0].len = models[1].len = 0;
    while (fuzz_more(&in)) {
        uint8_t op = fuzz_u8(&in);
        int q = op & 1;
        switch ((op >> 1) % 8) {
        case 0:
        case 1:
            push_item(q, (op & 0x80) != 0, (op & 0x40) != 0, 0);
            break;
        case 2:
            for (unsigned n = fuzz_u8(&in) * 2u; n > 0; n--) {
                push_item(q, 0, 0, 0);   /* growth while the ring has wrapped */
            }
            break;
        case 3:
        case 4:
            op_pop(q);
            break;
        case 5:
            for (unsigned n = fuzz_u8(&in); n > 0; n--) {
                op_pop(q);
            }
            break;
        case 6:
            op_move_all(q, (op & 0x40) != 0);
            break;
        case 7:
            if (op & 0x80) {
                op_clear(q);
            } else {
                visited = 0;
                zl_ready_queue_traverse(&queues[q], order_visit, &models[q]);
                FUZZ_CHECK(visited == models[q].len, "traverse visited %zu of %zu", visited, models[q].len);
            }
            break;
        }
        check_queue(0);
        check_queue(1);
    }
    for (int q = 0; q < 2; q++) {
        while (models[q].len > 0) {
            op_pop(q);
        }
    }
    zl_ready_queue_free(&queues[0]);
    zl_ready_queue_free(&queues[1]);
    FUZZ_CHECK(fuzz_items_live == 0, "%ld items leaked", fuzz_items_live);
    return 0;
}
