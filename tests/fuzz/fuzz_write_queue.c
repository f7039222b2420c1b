/* tests/fuzz/fuzz_write_queue.c — libFuzzer harness of core/write_queue.c: chunks pointing into bytes objects are
 * flushed into a socketpair or a pipe with a small buffer; what the peer reads must be exactly what was pushed, in
 * order, with the byte count, the chunk list and the owners' references matching a model at every step. */
#include "fuzz_common.h"
#include "write_queue.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define OWNERS 4
#define OWNER_SIZE 8192
#define MODEL_MAX 8192
#define STREAM_MAX (1 << 22)

typedef struct model_chunk {
    int owner;
    size_t offset;            /* into the owner's bytes */
    size_t len;               /* left to send */
} model_chunk;

static zl_write_queue queue;
static PyObject *owners[OWNERS];
static model_chunk chunks[MODEL_MAX];
static size_t chunk_head, chunk_count;
static uint8_t *expected;     /* every byte pushed, in order */
static uint8_t *received;     /* what the peer has read */
static size_t pushed_total, sent_total, received_total;
static int fds[2];            /* fds[0] written by the queue, fds[1] the peer */
static int peer_closed;

static size_t
model_refs(int owner)
{
    size_t refs = 0;
    for (size_t i = 0; i < chunk_count; i++) {
        refs += chunks[chunk_head + i].owner == owner;
    }
    return refs;
}

static void
check_queue(void)
{
    FUZZ_CHECK(queue.count == chunk_count, "queue has %zu chunks, model %zu", queue.count, chunk_count);
    FUZZ_CHECK(queue.bytes == pushed_total - sent_total, "queue counts %zu bytes, model %zu", queue.bytes,
               pushed_total - sent_total);
    FUZZ_CHECK(queue.head + queue.count <= queue.capacity, "chunks past capacity");
    size_t bytes = 0;
    for (size_t i = 0; i < chunk_count; i++) {
        const zl_write_chunk *chunk = &queue.chunks[queue.head + i];
        const model_chunk *m = &chunks[chunk_head + i];
        FUZZ_CHECK(chunk->owner == owners[m->owner], "chunk %zu has the wrong owner", i);
        FUZZ_CHECK(chunk->data == PyBytes_AS_STRING(owners[m->owner]) + m->offset, "chunk %zu points elsewhere", i);
        FUZZ_CHECK((size_t)chunk->len == m->len && chunk->len > 0, "chunk %zu has %zd bytes, model %zu", i,
                   chunk->len, m->len);
        bytes += (size_t)chunk->len;
    }
    FUZZ_CHECK(bytes == queue.bytes, "chunks add up to %zu, queue says %zu", bytes, queue.bytes);
    for (int o = 0; o < OWNERS; o++) {
        FUZZ_CHECK((size_t)Py_REFCNT(owners[o]) == 1 + model_refs(o), "owner %d has refcount %zd for %zu chunks", o,
                   Py_REFCNT(owners[o]), model_refs(o));
    }
}

static void
op_push(int owner, size_t offset, size_t len, int fail)
{
    if (chunk_head + chunk_count >= MODEL_MAX || pushed_total + len > STREAM_MAX) {
        return;
    }
    const char *data = PyBytes_AS_STRING(owners[owner]) + offset;
    if (fail) {
        fuzz_fail_next_alloc();
    }
    int rc = zl_write_queue_push(&queue, owners[owner], data, (Py_ssize_t)len);
    int failed = fuzz_alloc_failed();
    fuzz_alloc_reset();
    if (rc < 0) {
        FUZZ_CHECK(failed, "push failed without an allocation failure");
        fuzz_expect_memory_error();
        return;
    }
    FUZZ_CHECK(!failed, "push succeeded through a failed allocation");
    chunks[chunk_head + chunk_count++] = (model_chunk){.owner = owner, .offset = offset, .len = len};
    memcpy(expected + pushed_total, data, len);
    pushed_total += len;
}

/* The queue may compact its array to the front: follow it in the model when it does. */
static void
model_follow_compaction(void)
{
    if (queue.head == 0 && chunk_head != 0) {
        memmove(chunks, chunks + chunk_head, chunk_count * sizeof(chunks[0]));
        chunk_head = 0;
    }
}

static void
model_consume(size_t sent)
{
    sent_total += sent;
    while (sent > 0) {
        model_chunk *m = &chunks[chunk_head];
        if (m->len > sent) {
            m->offset += sent;
            m->len -= sent;
            return;
        }
        sent -= m->len;
        chunk_head++;
        chunk_count--;
    }
}

static void
op_flush(void)
{
    size_t before = queue.bytes;
    ssize_t rc = zl_write_queue_flush(&queue, fds[0]);
    if (rc < 0) {
        FUZZ_CHECK(peer_closed && (rc == -EPIPE || rc == -ECONNRESET), "flush failed with errno %zd", -rc);
        FUZZ_CHECK(queue.bytes == before, "a failed flush changed the queue");
        /* What the transport does after a write error. */
        zl_write_queue_clear(&queue);
        chunk_head = chunk_count = 0;
        pushed_total = sent_total;
        return;
    }
    FUZZ_CHECK((size_t)rc <= before, "flush sent %zd of %zu bytes", rc, before);
    model_consume((size_t)rc);
    if (chunk_count == 0) {
        chunk_head = 0;
    }
}

static void
op_read(size_t max)
{
    if (peer_closed) {
        return;
    }
    while (max > 0) {
        uint8_t buf[65536];
        ssize_t n = read(fds[1], buf, max < sizeof(buf) ? max : sizeof(buf));
        if (n < 0) {
            FUZZ_CHECK(errno == EAGAIN || errno == EWOULDBLOCK, "peer read failed: %d", errno);
            return;
        }
        FUZZ_CHECK(n > 0, "the peer saw end of stream");
        FUZZ_CHECK(received_total + (size_t)n <= sent_total, "the peer got %zu bytes, only %zu were sent",
                   received_total + (size_t)n, sent_total);
        FUZZ_CHECK(memcmp(buf, expected + received_total, (size_t)n) == 0, "bytes %zu..%zu differ",
                   received_total, received_total + (size_t)n);
        memcpy(received + received_total, buf, (size_t)n);
        received_total += (size_t)n;
        max -= (size_t)n;
    }
}

static void
open_channel(uint8_t kind)
{
    if (kind & 1) {
        FUZZ_CHECK(pipe2(fds, O_NONBLOCK | O_CLOEXEC) == 0, "pipe2: %d", errno);
        /* The queue writes fds[1] of a pipe; keep "fds[0] is the writer" true for the rest of the harness. */
        int w = fds[1];
        fds[1] = fds[0];
        fds[0] = w;
        fcntl(fds[0], F_SETPIPE_SZ, 4096);
    } else {
        FUZZ_CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds) == 0, "socketpair: %d",
                   errno);
        int sndbuf = 1024 << (kind >> 1 & 7);
        setsockopt(fds[0], SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
    }
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_python_init();
    signal(SIGPIPE, SIG_IGN);   /* a pipe whose reader is gone: EPIPE, as in the loop */
    for (int o = 0; o < OWNERS; o++) {
        owners[o] = PyBytes_FromStringAndSize(NULL, OWNER_SIZE);
        FUZZ_CHECK(owners[o] != NULL, "out of memory");
        for (size_t i = 0; i < OWNER_SIZE; i++) {
            PyBytes_AS_STRING(owners[o])[i] = (char)(i * 31 + o * 7 + (i >> 8));
        }
    }
    expected = malloc(STREAM_MAX);
    received = malloc(STREAM_MAX);
    FUZZ_CHECK(expected != NULL && received != NULL, "out of memory");
    return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_input in = {data, size};
    memset(&queue, 0, sizeof(queue));
    chunk_head = chunk_count = 0;
    pushed_total = sent_total = received_total = 0;
    peer_closed = 0;
    open_channel(fuzz_u8(&in));
    while (fuzz_more(&in)) {
        uint8_t op = fuzz_u8(&in);
        switch (op % 8) {
        case 0:
        case 1: {
            int owner = fuzz_u8(&in) % OWNERS;
            size_t offset = fuzz_u16(&in) % OWNER_SIZE;
            size_t len = 1 + fuzz_u16(&in) % (OWNER_SIZE - offset);
            op_push(owner, offset, len, (op & 0x80) != 0);
            break;
        }
        case 2:
            for (unsigned n = 1 + fuzz_u8(&in) * 4u; n > 0; n--) {
                op_push((int)(n % OWNERS), n % OWNER_SIZE, 1 + n % 3, 0);   /* more chunks than one writev */
            }
            break;
        case 3:
        case 4:
            op_flush();
            break;
        case 5:
            op_read(1 + fuzz_u16(&in) * 8u);
            break;
        case 6:
            if ((op & 0xf0) == 0xf0 && !peer_closed) {
                close(fds[1]);
                peer_closed = 1;
            } else if (op & 0x80) {
                zl_write_queue_clear(&queue);
                chunk_head = chunk_count = 0;
                pushed_total = sent_total;   /* the unsent bytes are dropped: later pushes follow what was sent */
            }
            break;
        case 7:
            op_read(STREAM_MAX);
            break;
        }
        model_follow_compaction();
        check_queue();
    }
    /* Everything still queued reaches the peer intact. */
    while (!peer_closed && queue.count > 0) {
        op_flush();
        model_follow_compaction();
        check_queue();
        op_read(STREAM_MAX);
    }
    op_read(STREAM_MAX);
    FUZZ_CHECK(peer_closed || received_total == pushed_total, "the peer got %zu of %zu bytes", received_total,
               pushed_total);
    zl_write_queue_free(&queue);
    close(fds[0]);
    if (!peer_closed) {
        close(fds[1]);
    }
    for (int o = 0; o < OWNERS; o++) {
        FUZZ_CHECK(Py_REFCNT(owners[o]) == 1, "owner %d leaked %zd references", o, Py_REFCNT(owners[o]) - 1);
    }
    return 0;
}
