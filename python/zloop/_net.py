"""Networking methods of zloop.Loop (sockets, connections, servers, TLS, DNS), as a mixin."""


class NetworkingMixin:
    """Mixed into zloop.Loop; the stream transport itself is C (Loop._make_socket_transport)."""
