/* bench/send_zc.c — whether io_uring's SEND_ZC pays for large writes here: CPU per write of 64 KiB and 1 MiB through
 * SEND against SEND_ZC, over loopback TCP and a Unix stream socket pair, and how often the kernel copied anyway.
 *
 *   cc -O2 -o /tmp/send_zc bench/send_zc.c -luring -lpthread && /tmp/send_zc [rounds]
 *
 * One sender (this thread: one SQE per write, submit and wait, a partial send resubmits the rest; SEND_ZC waits for
 * its notification before the buffer is written again), one reader thread draining the other end. Per round and
 * case: process CPU (user + system, both threads: a copy the sender saves may move to the receiving side) per write
 * and wall time; rounds interleave the cases, medians are printed. */
#define _GNU_SOURCE
#include <errno.h>
#include <liburing.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_ROUNDS 15

/* Linux 6.2's, which liburing 2.3's headers lack. */
#ifndef IORING_SEND_ZC_REPORT_USAGE
#define IORING_SEND_ZC_REPORT_USAGE (1U << 3)
#endif
#ifndef IORING_NOTIF_USAGE_ZC_COPIED
#define IORING_NOTIF_USAGE_ZC_COPIED (1U << 31)
#endif

typedef struct result {
    double cpu_us;                   /* process CPU per write */
    double wall_us;                  /* wall time per write */
    long notifs, copied;             /* SEND_ZC notifications, and those that say the kernel copied */
    int error;                       /* -errno of the first failed completion, 0 if none */
} result;

static double
now_us(clockid_t clock)
{
    struct timespec ts;
    clock_gettime(clock, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static void *
drain(void *arg)
{
    int fd = *(int *)arg;
    static char sink[1 << 20];
    while (recv(fd, sink, sizeof(sink), 0) > 0) {
    }
    return NULL;
}

static int
tcp_pair(int fds[2])
{
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(addr);
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&addr, sizeof(addr)) < 0 || listen(lfd, 1) < 0 ||
        getsockname(lfd, (struct sockaddr *)&addr, &len) < 0) {
        return -1;
    }
    fds[0] = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(fds[0], (struct sockaddr *)&addr, sizeof(addr)) < 0) {
        return -1;
    }
    fds[1] = accept(lfd, NULL, NULL);
    close(lfd);
    int one = 1;
    setsockopt(fds[0], IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return fds[1] < 0 ? -1 : 0;
}

/* One write of len bytes of buf, all of it: SEND or SEND_ZC, resubmitting the rest after a partial send. */
static int
write_all(struct io_uring *ring, int fd, const char *buf, size_t len, int zc, result *r)
{
    size_t done = 0;
    while (done < len) {
        struct io_uring_sqe *sqe = io_uring_get_sqe(ring);
        if (zc) {
            io_uring_prep_send_zc(sqe, fd, buf + done, len - done, MSG_NOSIGNAL, IORING_SEND_ZC_REPORT_USAGE);
        } else {
            io_uring_prep_send(sqe, fd, buf + done, len - done, MSG_NOSIGNAL);
        }
        io_uring_submit(ring);
        int pending = zc ? 2 : 1;    /* SEND_ZC: the result (flagged MORE), then the notification */
        while (pending > 0) {
            struct io_uring_cqe *cqe;
            if (io_uring_wait_cqe(ring, &cqe) < 0) {
                return -1;
            }
            if (cqe->flags & IORING_CQE_F_NOTIF) {
                r->notifs++;
                r->copied += ((unsigned)cqe->res & IORING_NOTIF_USAGE_ZC_COPIED) != 0;
                pending--;
            } else {
                if (cqe->res < 0) {
                    r->error = r->error ? r->error : cqe->res;
                    io_uring_cqe_seen(ring, cqe);
                    return -1;
                }
                done += (size_t)cqe->res;
                pending -= (cqe->flags & IORING_CQE_F_MORE) ? 1 : 2;   /* no MORE: no notification follows */
            }
            io_uring_cqe_seen(ring, cqe);
        }
    }
    return 0;
}

static result
measure(int unix_socket, size_t len, int zc, int writes)
{
    result r = {0};
    int fds[2];
    if (unix_socket ? socketpair(AF_UNIX, SOCK_STREAM, 0, fds) : tcp_pair(fds)) {
        perror("socket pair");
        exit(1);
    }
    struct io_uring ring;
    if (io_uring_queue_init(8, &ring, 0) < 0) {
        perror("io_uring_queue_init");
        exit(1);
    }
    char *buf = malloc(len);
    memset(buf, 'z', len);
    pthread_t reader;
    pthread_create(&reader, NULL, drain, &fds[1]);
    (void)write_all(&ring, fds[0], buf, len, zc, &r);   /* warm-up */
    r.notifs = r.copied = 0;
    double cpu0 = now_us(CLOCK_PROCESS_CPUTIME_ID), wall0 = now_us(CLOCK_MONOTONIC);
    for (int i = 0; i < writes && write_all(&ring, fds[0], buf, len, zc, &r) == 0; i++) {
    }
    r.cpu_us = (now_us(CLOCK_PROCESS_CPUTIME_ID) - cpu0) / writes;
    r.wall_us = (now_us(CLOCK_MONOTONIC) - wall0) / writes;
    shutdown(fds[0], SHUT_WR);
    pthread_join(reader, NULL);
    io_uring_queue_exit(&ring);
    close(fds[0]);
    close(fds[1]);
    free(buf);
    return r;
}

static int
by_value(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double
median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof(*v), by_value);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

int
main(int argc, char **argv)
{
    int rounds = argc > 1 ? atoi(argv[1]) : 5;
    rounds = rounds < 1 ? 1 : rounds > MAX_ROUNDS ? MAX_ROUNDS : rounds;
    const size_t sizes[] = {64 * 1024, 1024 * 1024};
    const int writes[] = {20000, 2000};
    enum { CASES = 8 };
    double cpu[CASES][MAX_ROUNDS], wall[CASES][MAX_ROUNDS];
    long notifs[CASES] = {0}, copied[CASES] = {0};
    int errors[CASES] = {0};
    for (int round = 0; round < rounds; round++) {
        for (int k = 0; k < CASES; k++) {
            int c = (k + round) % CASES;   /* the order rotates each round */
            int unix_socket = c & 1, zc = (c >> 1) & 1, s = c >> 2;
            result r = measure(unix_socket, sizes[s], zc, writes[s]);
            cpu[c][round] = r.cpu_us;
            wall[c][round] = r.wall_us;
            notifs[c] += r.notifs;
            copied[c] += r.copied;
            errors[c] = errors[c] ? errors[c] : r.error;
        }
    }
    printf("%-8s %-5s %-8s %14s %14s %10s %10s\n", "size", "sock", "op", "CPU us/write", "wall us/write", "notifs",
           "copied");
    for (int c = 0; c < CASES; c++) {
        int unix_socket = c & 1, zc = (c >> 1) & 1, s = c >> 2;
        char size[24];
        snprintf(size, sizeof(size), "%zu KiB", sizes[s] / 1024);
        if (errors[c]) {
            printf("%-8s %-5s %-8s refused: %s\n", size, unix_socket ? "unix" : "tcp", zc ? "SEND_ZC" : "SEND",
                   strerror(-errors[c]));
            continue;
        }
        printf("%-8s %-5s %-8s %14.2f %14.2f %10ld %10ld\n", size, unix_socket ? "unix" : "tcp",
               zc ? "SEND_ZC" : "SEND", median(cpu[c], rounds), median(wall[c], rounds), notifs[c], copied[c]);
    }
    return 0;
}
