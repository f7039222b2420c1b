# tests/test_net_dns.py — getaddrinfo/getnameinfo: the stdlib's answers, numeric hosts answered without a
# thread, names resolved off the loop's thread, errors as socket raises them.

import asyncio
import logging
import socket
import threading

import pytest

from net_helpers import HAS_IPV6, run

NUMERIC = [
    ("127.0.0.1", 80, {}),
    ("127.0.0.1", "80", {"type": socket.SOCK_STREAM}),
    (b"127.0.0.1", b"443", {"family": socket.AF_INET, "proto": socket.IPPROTO_TCP}),
    (None, 0, {"flags": socket.AI_PASSIVE, "type": socket.SOCK_STREAM}),
    ("0.0.0.0", None, {"type": socket.SOCK_DGRAM}),
]
if HAS_IPV6:
    NUMERIC += [("::1", 8080, {"type": socket.SOCK_STREAM}), ("fe80::1%1", 1, {"family": socket.AF_INET6})]


@pytest.mark.parametrize("host,port,kwargs", NUMERIC)
def test_getaddrinfo_numeric_matches_socket(loop, host, port, kwargs):
    expected = socket.getaddrinfo(host, port, **kwargs)
    assert run(loop, loop.getaddrinfo(host, port, **kwargs)) == expected


@pytest.mark.zloop_only
@pytest.mark.parametrize("host,port,kwargs", NUMERIC)
def test_getaddrinfo_numeric_needs_no_thread(loop, host, port, kwargs):
    run(loop, loop.getaddrinfo(host, port, **kwargs))
    assert loop._default_executor is None


def test_getaddrinfo_names_resolve_off_the_loop_thread(loop):
    seen = []
    real = socket.getaddrinfo

    def spy(*args, **kwargs):
        seen.append(threading.current_thread())
        return real(*args, **kwargs)

    socket.getaddrinfo = spy
    try:
        result = run(loop, loop.getaddrinfo("localhost", 80, type=socket.SOCK_STREAM))
    finally:
        socket.getaddrinfo = real
    assert result == real("localhost", 80, type=socket.SOCK_STREAM)
    assert seen and all(t is not threading.main_thread() for t in seen)


def test_getaddrinfo_service_name(loop):
    assert run(loop, loop.getaddrinfo("127.0.0.1", "http", type=socket.SOCK_STREAM)) == \
        socket.getaddrinfo("127.0.0.1", "http", type=socket.SOCK_STREAM)


@pytest.mark.parametrize("host,port,kwargs", [
    ("no-such-host.invalid", 80, {}),
    ("127.0.0.1", "no-such-service", {}),
    ("::1", 80, {"family": socket.AF_INET}),
    (None, None, {}),
])
def test_getaddrinfo_errors_are_gaierror(loop, host, port, kwargs):
    with pytest.raises(socket.gaierror):
        run(loop, loop.getaddrinfo(host, port, **kwargs))


def test_getaddrinfo_bad_argument_types(loop):
    with pytest.raises(TypeError):
        run(loop, loop.getaddrinfo(12.5, 80))


def test_getaddrinfo_debug_mode_logs(loop, caplog):
    loop.set_debug(True)
    with caplog.at_level(logging.DEBUG, logger="asyncio"):
        run(loop, loop.getaddrinfo("localhost", 80))
    assert any("Get address info localhost:80" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("sockaddr,flags", [
    (("127.0.0.1", 80), socket.NI_NUMERICHOST | socket.NI_NUMERICSERV),
    (("127.0.0.1", 80), 0),
    (("127.0.0.1", 80), socket.NI_NUMERICHOST),
])
def test_getnameinfo_matches_socket(loop, sockaddr, flags):
    assert run(loop, loop.getnameinfo(sockaddr, flags)) == socket.getnameinfo(sockaddr, flags)


@pytest.mark.zloop_only
def test_getnameinfo_numeric_needs_no_thread(loop):
    flags = socket.NI_NUMERICHOST | socket.NI_NUMERICSERV
    assert run(loop, loop.getnameinfo(("127.0.0.1", 443), flags)) == ("127.0.0.1", "443")
    assert loop._default_executor is None


def test_getnameinfo_bad_address(loop):
    with pytest.raises((TypeError, OSError)):
        run(loop, loop.getnameinfo(("127.0.0.1",), 0))


def test_cancelled_getaddrinfo_leaves_the_loop_usable(loop):
    # The lookup waits behind a blocked job in a one-thread executor: a fast resolver cannot finish it before the
    # cancel (3.14+ asyncio completes a wrapped executor future at once when the thread is already done).
    import concurrent.futures
    executor = concurrent.futures.ThreadPoolExecutor(1)
    loop.set_default_executor(executor)
    release = threading.Event()
    executor.submit(release.wait, 30)

    async def main():
        task = loop.create_task(loop.getaddrinfo("localhost", 80))
        await asyncio.sleep(0)
        task.cancel()
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await task
        return await loop.getaddrinfo("localhost", 80)
    try:
        assert run(loop, main())
    finally:
        release.set()
