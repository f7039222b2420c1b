/* core/sock_addr.c — raw socket addresses of connections accepted in C (kept until get_extra_info asks) and their
 * conversion to the socket module's forms: (host, port), (host, port, flowinfo, scope_id), a Unix path. */
#include "sock_addr.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stddef.h>
#include <string.h>
#include <sys/un.h>

zl_sock_addrs *
zl_sock_addrs_new(int fd, const struct sockaddr *local, socklen_t local_len, const struct sockaddr *peer,
                  socklen_t peer_len)
{
    struct sockaddr_storage own;
    if (local == NULL) {
        local = (const struct sockaddr *)&own;
        local_len = sizeof(own);
        memset(&own, 0, sizeof(own));
        if (getsockname(fd, (struct sockaddr *)&own, &local_len) < 0 || local_len > sizeof(own)) {
            local_len = 0;
        }
    }
    zl_sock_addrs *addrs = PyMem_Malloc(sizeof(zl_sock_addrs) + local_len + peer_len);
    if (addrs == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    addrs->local_len = local_len;
    addrs->peer_len = peer_len;
    memcpy(addrs->bytes, local, local_len);
    memcpy(addrs->bytes + local_len, peer, peer_len);
    return addrs;
}

socklen_t
zl_sock_addr_shared_local(int fd, struct sockaddr_storage *out)
{
    socklen_t len = sizeof(*out);
    memset(out, 0, sizeof(*out));
    if (getsockname(fd, (struct sockaddr *)out, &len) < 0 || len > sizeof(*out)) {
        return 0;
    }
    if (out->ss_family == AF_UNIX) {
        return len;
    }
    if (out->ss_family == AF_INET) {
        return ((struct sockaddr_in *)out)->sin_addr.s_addr != htonl(INADDR_ANY) ? len : 0;
    }
    if (out->ss_family == AF_INET6) {
        return !IN6_IS_ADDR_UNSPECIFIED(&((struct sockaddr_in6 *)out)->sin6_addr) ? len : 0;
    }
    return 0;
}

static PyObject *
sock_addr_host(int family, const void *address)
{
    char host[INET6_ADDRSTRLEN];
    if (inet_ntop(family, address, host, sizeof(host)) == NULL) {
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    return PyUnicode_FromString(host);
}

PyObject *
zl_sock_addr_to_py(const void *bytes, socklen_t len)
{
    struct sockaddr_storage addr;
    memset(&addr, 0, sizeof(addr));
    memcpy(&addr, bytes, len < sizeof(addr) ? len : sizeof(addr));
    if (len == 0) {
        Py_RETURN_NONE;
    }
    if (addr.ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)&addr;
        PyObject *host = sock_addr_host(AF_INET, &in->sin_addr);
        return host ? Py_BuildValue("(Ni)", host, ntohs(in->sin_port)) : NULL;
    }
    if (addr.ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&addr;
        PyObject *host = sock_addr_host(AF_INET6, &in6->sin6_addr);
        return host ? Py_BuildValue("(NiII)", host, ntohs(in6->sin6_port), (unsigned int)ntohl(in6->sin6_flowinfo),
                                    (unsigned int)in6->sin6_scope_id)
                    : NULL;
    }
    if (addr.ss_family == AF_UNIX) {
        const struct sockaddr_un *un = (const struct sockaddr_un *)&addr;
        size_t path_len = len > offsetof(struct sockaddr_un, sun_path) ? len - offsetof(struct sockaddr_un, sun_path)
                                                                        : 0;
        if (path_len > sizeof(un->sun_path)) {
            path_len = sizeof(un->sun_path);
        }
        if (path_len > 0 && un->sun_path[0] == 0) {   /* Linux's abstract namespace */
            return PyBytes_FromStringAndSize(un->sun_path, (Py_ssize_t)path_len);
        }
        return PyUnicode_DecodeFSDefaultAndSize(un->sun_path, (Py_ssize_t)strnlen(un->sun_path, path_len));
    }
    Py_RETURN_NONE;
}

PyObject *
zl_sock_addrs_local(const zl_sock_addrs *addrs)
{
    return zl_sock_addr_to_py(addrs->bytes, addrs->local_len);
}

PyObject *
zl_sock_addrs_peer(const zl_sock_addrs *addrs)
{
    return zl_sock_addr_to_py(addrs->bytes + addrs->local_len, addrs->peer_len);
}

int
zl_sock_addrs_family(const zl_sock_addrs *addrs)
{
    sa_family_t family = AF_UNSPEC;
    if (addrs->peer_len >= sizeof(family)) {
        memcpy(&family, addrs->bytes + addrs->local_len, sizeof(family));
    }
    return family;
}
