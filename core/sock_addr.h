/* core/sock_addr.h — the two addresses of a connection accepted in C, kept raw until get_extra_info() asks, and
 * their conversion to the objects the socket module gives (host/port tuples, Unix paths). */
#ifndef ZL_SOCK_ADDR_H
#define ZL_SOCK_ADDR_H

#include <Python.h>
#include <sys/socket.h>

typedef struct zl_sock_addrs {
    socklen_t local_len;             /* 0: getsockname() failed (sockname is None) */
    socklen_t peer_len;
    unsigned char bytes[];           /* the local address, then the peer's */
} zl_sock_addrs;

/* The peer address accept() gave and fd's own, in one block; NULL with MemoryError set. local is fd's own address
 * when the caller knows it (a listening socket bound to one address gives it to every connection), or NULL: asked
 * with getsockname(). */
zl_sock_addrs *zl_sock_addrs_new(int fd, const struct sockaddr *local, socklen_t local_len,
                                 const struct sockaddr *peer, socklen_t peer_len);

/* The address of listening socket fd when each of its connections has it as its own (one host address, or a Unix
 * path); 0 when it is a wildcard (the connections' own addresses differ) or unknown. */
socklen_t zl_sock_addr_shared_local(int fd, struct sockaddr_storage *out);

/* An address as CPython's makesockaddr gives it for AF_INET, AF_INET6 and AF_UNIX; None for another family or an
 * empty one. */
PyObject *zl_sock_addr_to_py(const void *addr, socklen_t len);

/* sockname and peername as socket.getsockname()/getpeername() give them. */
PyObject *zl_sock_addrs_local(const zl_sock_addrs *addrs);
PyObject *zl_sock_addrs_peer(const zl_sock_addrs *addrs);

/* The address family of the peer address. */
int zl_sock_addrs_family(const zl_sock_addrs *addrs);

#endif /* ZL_SOCK_ADDR_H */
