/* bench/scale_floor.c — bench/scale.py's floor: a bare C epoll server doing what its hold and churn figures ask of
 * a loop's server (accept4 until the backlog is drained, epoll add, one recv, one send; no Python, no loop). */
#define _GNU_SOURCE
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define PAYLOAD 100              /* bytes each connection sends (bench/scale.py's PAYLOAD) */
#define READ_SIZE (256 * 1024)   /* the loops' transports read 256 KiB too */
#define MAX_EVENTS 64

enum mode { MODE_HOLD, MODE_CHURN };

/* What the run counts and the two samples it reports, as bench/scale.py's serve() does. */
struct tally {
    enum mode mode;
    long warm, n, count;
    long long base_rss, base_cpu_ns;
};

static char read_buffer[READ_SIZE];

static long long rss_bytes(void)
{
    long pages_total = 0, pages_resident = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f == NULL || fscanf(f, "%ld %ld", &pages_total, &pages_resident) != 2) {
        perror("statm");
        exit(1);
    }
    fclose(f);
    return (long long)pages_resident * sysconf(_SC_PAGESIZE);
}

static long long cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* One more connection echoed (hold) or closed (churn): sample at warm and at warm + n, then report and exit. */
static void tally_mark(struct tally *t)
{
    t->count++;
    if (t->count == t->warm) {
        t->base_rss = rss_bytes();
        t->base_cpu_ns = cpu_ns();
    }
    if (t->count == t->warm + t->n) {
        long long end_rss = rss_bytes(), end_cpu_ns = cpu_ns();
        printf("{\"count\": %ld, \"base\": {\"rss\": %lld, \"cpu_ns\": %lld}, \"end\": {\"rss\": %lld, \"cpu_ns\": %lld}}\n",
               t->count - t->warm, t->base_rss, t->base_cpu_ns, end_rss, end_cpu_ns);
        fflush(stdout);
        _exit(0);
    }
}

/* The soft fd limit raised to the hard one; returns it. */
static int raise_fd_limit(void)
{
    struct rlimit limit;
    getrlimit(RLIMIT_NOFILE, &limit);
    limit.rlim_cur = limit.rlim_max;
    setrlimit(RLIMIT_NOFILE, &limit);
    return (int)limit.rlim_cur;
}

/* A non-blocking listener on 127.0.0.1, an ephemeral port; TCP_NODELAY on it, which accepted sockets inherit. */
static int make_listener(int *port)
{
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof sin;
    int one = 1;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0 || setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) < 0 ||
        bind(fd, (struct sockaddr *)&sin, sizeof sin) < 0 || listen(fd, 1024) < 0 ||
        getsockname(fd, (struct sockaddr *)&sin, &len) < 0) {
        perror("listener");
        exit(1);
    }
    *port = ntohs(sin.sin_port);
    return fd;
}

static void accept_all(int epfd, int listener)
{
    int fd;
    while ((fd = accept4(listener, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
        struct epoll_event ev = {.events = EPOLLIN, .data.fd = fd};
        if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
            perror("epoll_ctl");
            exit(1);
        }
    }
}

/* One recv and the bytes sent straight back; EOF or an error closes the connection. */
static void echo_once(int fd, uint32_t *received, struct tally *t)
{
    ssize_t got = recv(fd, read_buffer, sizeof read_buffer, 0);
    if (got <= 0) {
        close(fd);
        received[fd] = 0;
        if (t->mode == MODE_CHURN) {
            tally_mark(t);
        }
        return;
    }
    if (send(fd, read_buffer, (size_t)got, MSG_NOSIGNAL) != got) {
        fprintf(stderr, "short send\n");   /* 100 bytes into an empty socket buffer: never here */
        exit(1);
    }
    uint32_t before = received[fd];
    received[fd] += (uint32_t)got;
    if (t->mode == MODE_HOLD && before < PAYLOAD && received[fd] >= PAYLOAD) {
        tally_mark(t);
    }
}

int main(int argc, char **argv)
{
    if (argc != 4 || (strcmp(argv[1], "hold") != 0 && strcmp(argv[1], "churn") != 0)) {
        fprintf(stderr, "usage: %s hold|churn WARM N\n", argv[0]);
        return 2;
    }
    struct tally t = {.mode = strcmp(argv[1], "hold") == 0 ? MODE_HOLD : MODE_CHURN,
                      .warm = atol(argv[2]), .n = atol(argv[3])};
    uint32_t *received = calloc((size_t)raise_fd_limit(), sizeof *received);
    int port;
    int listener = make_listener(&port);
    int epfd = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = listener};
    if (received == NULL || epfd < 0 || epoll_ctl(epfd, EPOLL_CTL_ADD, listener, &ev) < 0) {
        perror("setup");
        return 1;
    }
    printf("%d\n", port);
    fflush(stdout);
    struct epoll_event events[MAX_EVENTS];
    for (;;) {
        int n = epoll_wait(epfd, events, MAX_EVENTS, -1);
        for (int i = 0; i < n; i++) {
            if (events[i].data.fd == listener) {
                accept_all(epfd, listener);
            } else {
                echo_once(events[i].data.fd, received, &t);
            }
        }
    }
}
