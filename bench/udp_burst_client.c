/* bench/udp_burst_client.c — the load of bench/udp_burst.py: S UDP sockets, each keeping W datagrams in flight to
 * one echo server (a new one sent for each echo back), until T echoes came back in all; prints the wall seconds. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define IO_TIMEOUT_MS 10000            /* a server silent this long fails the run */
#define MAX_SOCKETS 1024

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int open_socket(int epfd, const struct sockaddr_in *server, int index)
{
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int big = 1 << 20;
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)index};
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &big, sizeof(big)) < 0 ||
        connect(fd, (const struct sockaddr *)server, sizeof(*server)) < 0 || epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
        perror("socket");
        exit(1);
    }
    return fd;
}

static void send_one(int fd, const char *payload, size_t size)
{
    if (send(fd, payload, size, 0) != (ssize_t)size) {
        perror("send");
        exit(1);
    }
}

int main(int argc, char **argv)
{
    if (argc != 6) {
        fprintf(stderr, "usage: %s PORT SOCKETS WINDOW SIZE TOTAL\n", argv[0]);
        return 2;
    }
    struct sockaddr_in server = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[1]))};
    server.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int sockets = atoi(argv[2]), window = atoi(argv[3]);
    size_t size = (size_t)atol(argv[4]);
    long total = atol(argv[5]);
    if (sockets < 1 || sockets > MAX_SOCKETS || window < 1 || size < 1 || size > 65507 || total < 1) {
        fprintf(stderr, "bad arguments\n");
        return 2;
    }
    char *payload = calloc(1, size), *reply = malloc(65536);
    int epfd = epoll_create1(EPOLL_CLOEXEC);
    int fds[MAX_SOCKETS];
    long sent = 0, received = 0;
    double start = now_s();
    for (int i = 0; i < sockets; i++) {
        fds[i] = open_socket(epfd, &server, i);
        for (int j = 0; j < window && sent < total; j++, sent++) {
            send_one(fds[i], payload, size);
        }
    }
    struct epoll_event events[64];
    while (received < total) {
        int n = epoll_wait(epfd, events, 64, IO_TIMEOUT_MS);
        if (n <= 0) {
            fprintf(stderr, "no echo for %d ms (%ld of %ld back)\n", IO_TIMEOUT_MS, received, total);
            return 1;
        }
        for (int e = 0; e < n; e++) {
            int fd = fds[events[e].data.u32];
            ssize_t got;
            while ((got = recv(fd, reply, 65536, 0)) >= 0) {
                if ((size_t)got != size) {
                    fprintf(stderr, "an echo of %zd bytes, not %zu\n", got, size);
                    return 1;
                }
                received++;
                if (sent < total) {
                    send_one(fd, payload, size);
                    sent++;
                }
            }
            if (errno != EAGAIN) {
                perror("recv");
                return 1;
            }
        }
    }
    printf("%.6f\n", now_s() - start);
    free(payload);
    free(reply);
    return 0;
}
