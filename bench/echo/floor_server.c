/* bench/echo/floor_server.c — the echo benchmark's floor: a bare C epoll echo server, no Python.
 * What any loop's server CPU per request is measured above (run.py builds it with cc on first use). */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define READ_SIZE (256 * 1024) /* the loops' transports read 256 KiB too */
#define MAX_EVENTS 64

/* One client: the bytes read but not yet written back (only after a short send). */
struct connection {
    int fd;
    char *pending;
    size_t pending_len;
};

static volatile sig_atomic_t stop_requested;
static char read_buffer[READ_SIZE];

static void on_stop_signal(int signum)
{
    (void)signum;
    stop_requested = 1;
}

static void install_stop_handlers(void)
{
    struct sigaction action = {0};
    action.sa_handler = on_stop_signal; /* no SA_RESTART: epoll_wait returns EINTR */
    sigaction(SIGTERM, &action, NULL);
    sigaction(SIGINT, &action, NULL);
    signal(SIGPIPE, SIG_IGN);
}

static int fail(const char *what)
{
    perror(what);
    return -1;
}

/* A listening non-blocking socket on "HOST:PORT" (IPv4) or a unix path; its address into `where`. */
static int make_listener(const char *addr, const char *unix_path, char *where, size_t where_size)
{
    int fd;
    if (unix_path) {
        struct sockaddr_un sun = {.sun_family = AF_UNIX};
        if (strlen(unix_path) >= sizeof sun.sun_path)
            return fail("unix path too long");
        strcpy(sun.sun_path, unix_path);
        unlink(unix_path);
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0);
        if (fd < 0 || bind(fd, (struct sockaddr *)&sun, sizeof sun) < 0)
            return fail("bind unix");
        snprintf(where, where_size, "\"unix\": \"%s\"", unix_path);
    } else {
        struct sockaddr_in sin = {.sin_family = AF_INET};
        const char *colon = strrchr(addr, ':');
        char host[64];
        socklen_t len = sizeof sin;
        int one = 1;
        if (!colon || (size_t)(colon - addr) >= sizeof host)
            return fail("--addr HOST:PORT");
        memcpy(host, addr, (size_t)(colon - addr));
        host[colon - addr] = '\0';
        sin.sin_port = htons((unsigned short)atoi(colon + 1));
        if (inet_pton(AF_INET, host, &sin.sin_addr) != 1)
            return fail("IPv4 host");
        fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (fd < 0 || bind(fd, (struct sockaddr *)&sin, sizeof sin) < 0)
            return fail("bind");
        getsockname(fd, (struct sockaddr *)&sin, &len);
        snprintf(where, where_size, "\"addr\": \"%s:%u\"", host, ntohs(sin.sin_port));
    }
    if (listen(fd, 128) < 0)
        return fail("listen");
    return fd;
}

static void close_connection(struct connection *conn)
{
    close(conn->fd);
    free(conn->pending);
    free(conn);
}

static void watch(int epfd, int op, struct connection *conn, unsigned events)
{
    struct epoll_event ev = {.events = events, .data.ptr = conn};
    epoll_ctl(epfd, op, conn->fd, &ev);
}

static void accept_clients(int epfd, int listener, int is_tcp)
{
    int fd, one = 1;
    while ((fd = accept4(listener, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
        struct connection *conn = calloc(1, sizeof *conn);
        if (!conn) {
            close(fd);
            continue;
        }
        conn->fd = fd;
        if (is_tcp)
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        watch(epfd, EPOLL_CTL_ADD, conn, EPOLLIN);
    }
}

/* Send what is pending; returns -1 when the connection is dead, else 0 (EPOLLOUT asked while data is left). */
static int flush_pending(int epfd, struct connection *conn)
{
    while (conn->pending_len) {
        ssize_t n = send(conn->fd, conn->pending, conn->pending_len, MSG_NOSIGNAL);
        if (n < 0)
            return errno == EAGAIN ? 0 : -1;
        memmove(conn->pending, conn->pending + n, conn->pending_len - (size_t)n);
        conn->pending_len -= (size_t)n;
    }
    free(conn->pending);
    conn->pending = NULL;
    watch(epfd, EPOLL_CTL_MOD, conn, EPOLLIN);
    return 0;
}

/* Keep the unsent tail of `data` and wait for writability (reading stops until it is sent). */
static int keep_unsent(int epfd, struct connection *conn, const char *data, size_t len)
{
    conn->pending = malloc(len);
    if (!conn->pending)
        return -1;
    memcpy(conn->pending, data, len);
    conn->pending_len = len;
    watch(epfd, EPOLL_CTL_MOD, conn, EPOLLOUT);
    return 0;
}

/* One recv, one send back: what an echo server cannot do without. -1: close the connection. */
static int echo_once(int epfd, struct connection *conn)
{
    ssize_t got = recv(conn->fd, read_buffer, sizeof read_buffer, 0);
    if (got <= 0)
        return got < 0 && errno == EAGAIN ? 0 : -1;
    ssize_t sent = send(conn->fd, read_buffer, (size_t)got, MSG_NOSIGNAL);
    if (sent < 0) {
        if (errno != EAGAIN)
            return -1;
        sent = 0;
    }
    if (sent < got)
        return keep_unsent(epfd, conn, read_buffer + sent, (size_t)(got - sent));
    return 0;
}

static void serve(int epfd, int listener, int is_tcp)
{
    struct epoll_event events[MAX_EVENTS];
    while (!stop_requested) {
        int n = epoll_wait(epfd, events, MAX_EVENTS, -1);
        for (int i = 0; i < n; i++) {
            struct connection *conn = events[i].data.ptr;
            if (!conn) {
                accept_clients(epfd, listener, is_tcp);
                continue;
            }
            int status = conn->pending ? flush_pending(epfd, conn) : echo_once(epfd, conn);
            if (status < 0)
                close_connection(conn);
        }
    }
}

int main(int argc, char **argv)
{
    const char *addr = "127.0.0.1:0", *unix_path = NULL;
    char where[200];
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--addr") == 0)
            addr = argv[i + 1];
        else if (strcmp(argv[i], "--unix") == 0)
            unix_path = argv[i + 1];
    }
    install_stop_handlers();
    int listener = make_listener(addr, unix_path, where, sizeof where);
    int epfd = epoll_create1(0);
    if (listener < 0 || epfd < 0)
        return 1;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(epfd, EPOLL_CTL_ADD, listener, &ev);
    printf("READY {\"pid\": %d, \"loop\": \"floor\", %s}\n", (int)getpid(), where);
    fflush(stdout);
    serve(epfd, listener, unix_path == NULL);
    if (unix_path)
        unlink(unix_path);
    return 0;
}
