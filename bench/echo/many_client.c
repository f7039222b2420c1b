/* bench/echo/many_client.c — the echo benchmark's many-connections load: one process, N connections in lock-step.
 * Each round sends one message on every connection, then waits until every reply is back and checked. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define IO_TIMEOUT_MS 10000            /* a server silent this long fails the run */

/* One connection: its reply buffer and how much of the current round's reply has come back. */
struct conn {
    int fd;
    size_t received;
    unsigned char *reply;
};

struct options {
    const char *addr;
    const char *unix_path;
    int connections;
    size_t msize;
    double warmup;
    double duration;
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int fail(const char *what)
{
    fprintf(stderr, "many_client: %s: %s\n", what, strerror(errno));
    return -1;
}

static int connect_one(const struct options *o)
{
    int fd;
    if (o->unix_path) {
        struct sockaddr_un sun = {.sun_family = AF_UNIX};
        snprintf(sun.sun_path, sizeof sun.sun_path, "%s", o->unix_path);
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0 || connect(fd, (struct sockaddr *)&sun, sizeof sun) < 0)
            return fail("connect");
    } else {
        char host[64];
        const char *colon = strrchr(o->addr, ':');
        if (!colon || (size_t)(colon - o->addr) >= sizeof host) {
            errno = EINVAL;
            return fail("--addr HOST:PORT");
        }
        memcpy(host, o->addr, (size_t)(colon - o->addr));
        host[colon - o->addr] = '\0';
        struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(colon + 1))};
        if (inet_pton(AF_INET, host, &sin.sin_addr) != 1) {
            errno = EINVAL;
            return fail("--addr host");
        }
        fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0 || connect(fd, (struct sockaddr *)&sin, sizeof sin) < 0)
            return fail("connect");
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    return fd;
}

/* The message of round r on connection c: a pattern the reply must match byte for byte. */
static void fill_message(unsigned char *buf, size_t len, uint64_t round, int c)
{
    for (size_t i = 0; i < len; i++)
        buf[i] = (unsigned char)(round * 131 + (uint64_t)c * 7 + i);
}

static int send_all(int fd, const unsigned char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN) {
            struct pollfd p = {.fd = fd, .events = POLLOUT};
            if (poll(&p, 1, IO_TIMEOUT_MS) <= 0)
                return fail("send: server stuck");
            continue;
        }
        if (n <= 0)
            return fail("send");
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Read what fd has of its reply; 1 when the reply is complete and checked, 0 if more is due, -1 on error. */
static int receive_some(struct conn *c, const unsigned char *expected, size_t msize)
{
    for (;;) {
        ssize_t n = recv(c->fd, c->reply + c->received, msize - c->received, MSG_DONTWAIT);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            return 0;
        if (n <= 0) {
            if (n == 0)
                errno = ECONNRESET;
            return fail("recv");
        }
        c->received += (size_t)n;
        if (c->received < msize)
            continue;
        if (memcmp(c->reply, expected, msize) != 0) {
            fprintf(stderr, "many_client: corrupt reply\n");
            return -1;
        }
        return 1;
    }
}

/* One lock-step round: a message on every connection, then every reply. 0 or -1. */
static int run_round(int epfd, struct conn *conns, const struct options *o, unsigned char **messages,
                     uint64_t round)
{
    for (int i = 0; i < o->connections; i++) {
        fill_message(messages[i], o->msize, round, i);
        conns[i].received = 0;
        if (send_all(conns[i].fd, messages[i], o->msize) < 0)
            return -1;
    }
    int pending = o->connections;
    struct epoll_event events[256];
    while (pending > 0) {
        int n = epoll_wait(epfd, events, 256, IO_TIMEOUT_MS);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            errno = n == 0 ? ETIMEDOUT : errno;
            return fail("epoll_wait");
        }
        for (int k = 0; k < n; k++) {
            int i = events[k].data.u32;
            if (conns[i].received == o->msize)
                continue;
            int done = receive_some(&conns[i], messages[i], o->msize);
            if (done < 0)
                return -1;
            pending -= done;
        }
    }
    return 0;
}

/* Rounds until `seconds` pass; the requests echoed into *requests. 0 or -1. */
static int run_for(int epfd, struct conn *conns, const struct options *o, unsigned char **messages,
                   uint64_t *round, double seconds, uint64_t *requests)
{
    double end = now_s() + seconds;
    *requests = 0;
    while (now_s() < end) {
        if (run_round(epfd, conns, o, messages, (*round)++) < 0)
            return -1;
        *requests += (uint64_t)o->connections;
    }
    return 0;
}

static int parse_options(int argc, char **argv, struct options *o)
{
    *o = (struct options){.connections = 64, .msize = 1024, .warmup = 0.5, .duration = 3.0};
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--addr"))
            o->addr = argv[i + 1];
        else if (!strcmp(argv[i], "--unix"))
            o->unix_path = argv[i + 1];
        else if (!strcmp(argv[i], "--connections"))
            o->connections = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--msize"))
            o->msize = (size_t)atol(argv[i + 1]);
        else if (!strcmp(argv[i], "--warmup"))
            o->warmup = atof(argv[i + 1]);
        else if (!strcmp(argv[i], "--duration"))
            o->duration = atof(argv[i + 1]);
        else
            return -1;
    }
    return (o->addr || o->unix_path) && o->connections > 0 && o->connections <= 4096 && o->msize > 0 &&
           o->duration > 0 ? 0 : -1;
}

/* Protocol with run.py: prints READY after the warm-up, waits for a line on stdin, measures, prints
 * `RESULT {json}`, waits for another line (the server's CPU is read meanwhile), closes everything. */
int main(int argc, char **argv)
{
    struct options o;
    if (parse_options(argc, argv, &o) < 0) {
        fprintf(stderr, "usage: many_client (--addr HOST:PORT | --unix PATH) [--connections N] [--msize BYTES] "
                        "[--warmup S] [--duration S]\n");
        return 2;
    }
    struct conn *conns = calloc((size_t)o.connections, sizeof *conns);
    unsigned char **messages = calloc((size_t)o.connections, sizeof *messages);
    int epfd = epoll_create1(EPOLL_CLOEXEC);
    if (!conns || !messages || epfd < 0)
        {
        fail("setup");
        return 1;
    }
    for (int i = 0; i < o.connections; i++) {
        conns[i].fd = connect_one(&o);
        conns[i].reply = malloc(o.msize);
        messages[i] = malloc(o.msize);
        if (conns[i].fd < 0 || !conns[i].reply || !messages[i])
            return 1;
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
        if (epoll_ctl(epfd, EPOLL_CTL_ADD, conns[i].fd, &ev) < 0)
            {
            fail("epoll_ctl");
            return 1;
        }
    }
    uint64_t round = 0, requests = 0;
    if (run_for(epfd, conns, &o, messages, &round, o.warmup, &requests) < 0)
        return 1;
    printf("READY\n");
    fflush(stdout);
    char line[64];
    if (!fgets(line, sizeof line, stdin))
        return 1;
    double start = now_s();
    if (run_for(epfd, conns, &o, messages, &round, o.duration, &requests) < 0)
        return 1;
    double elapsed = now_s() - start;
    printf("RESULT {\"requests\": %llu, \"elapsed\": %.6f, \"rps\": %.1f, \"rounds\": %llu}\n",
           (unsigned long long)requests, elapsed, (double)requests / elapsed, (unsigned long long)round);
    fflush(stdout);
    if (!fgets(line, sizeof line, stdin))
        return 1;
    for (int i = 0; i < o.connections; i++) {
        close(conns[i].fd);
        free(conns[i].reply);
        free(messages[i]);
    }
    free(conns);
    free(messages);
    close(epfd);
    return 0;
}
