# tests/test_datagram_completion.py — what a UDP transport must keep doing when it receives through a completion
# backend (a multishot recvmsg on uring with ZLOOP_URING_COMPLETION=1): many datagrams from several peers, the
# largest and the empty datagram, ICMP errors, pause, close/abort with the recv in flight, fd reuse, GC. Run on
# every backend too (and the asyncio control); the fork test of a multishot accept is at the end.

import asyncio
import contextvars
import gc
import os
import socket
import sys
import weakref

import pytest

from conftest import COMPLETION_KIND
from net_helpers import HAS_IPV6, accepts_in_ring, fd_count, no_fd_leak, watched
from test_fork import exit_code, run_in_child
from test_stream_completion import cloop, run  # noqa: F401 (the fixture: every backend, uring+completion, control)

HOSTS = ["127.0.0.1"] + (["::1"] if HAS_IPV6 else [])
LARGEST = {"127.0.0.1": 65507, "::1": 65527}   # the largest UDP payload over IPv4 / IPv6


class Recorder(asyncio.DatagramProtocol):
    def __init__(self):
        self.got = []
        self.errors = []
        self.events = []
        self.lost = None

    def connection_made(self, transport):
        self.transport = transport
        self.lost = asyncio.get_running_loop().create_future()

    def datagram_received(self, data, addr):
        assert type(data) is bytes
        self.got.append((data, addr))

    def error_received(self, exc):
        self.errors.append(exc)

    def connection_lost(self, exc):
        self.events.append("lost")
        if not self.lost.done():
            self.lost.set_result(exc)


class Echo(Recorder):
    def datagram_received(self, data, addr):
        super().datagram_received(data, addr)
        self.transport.sendto(data, addr)


def peer_socket(host):
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.bind((host, 0))
    sock.setblocking(False)
    return sock


async def until(predicate, what, tries=400):
    for _ in range(tries):
        if predicate():
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"timed out waiting for {what}")


def test_udp_receives_through_the_ring_on_the_completion_kind_and_unix_datagrams_stay_on_readiness(cloop, request,
                                                                                                  tmp_path):
    kind = request.node.callspec.params["cloop"]
    ring = kind == COMPLETION_KIND or accepts_in_ring(kind)   # the switch set for the whole run: uring too

    async def main():
        before = watched(cloop)
        udp, udp_proto = await cloop.create_datagram_endpoint(Recorder, local_addr=("127.0.0.1", 0))
        await asyncio.sleep(0)
        assert watched(cloop) - before == (0 if ring else 1)   # the recvmsg is in the ring, not the epoll set
        unix, unix_proto = await cloop.create_datagram_endpoint(Recorder, local_addr=str(tmp_path / "s"),
                                                                family=socket.AF_UNIX)
        await asyncio.sleep(0)
        assert watched(cloop) - before == (1 if ring else 2)   # a Unix datagram may outgrow the ring's buffers
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as peer:
            peer.sendto(b"u" * 100000, str(tmp_path / "s"))    # larger than any UDP datagram: comes whole
            await until(lambda: unix_proto.got, "the Unix datagram")
            assert unix_proto.got[0][0] == b"u" * 100000
        udp.close()
        unix.close()
        await udp_proto.lost
        await unix_proto.lost

    run(cloop, main())


@pytest.mark.parametrize("host", HOSTS)
def test_many_datagrams_from_several_peers_each_echoed_in_order_to_its_sender(cloop, host):
    async def main():
        transport, server = await cloop.create_datagram_endpoint(Echo, local_addr=(host, 0))
        address = transport.get_extra_info("sockname")
        peers = [peer_socket(host) for _ in range(4)]
        try:
            for round_ in range(10):            # 4 peers x 16 datagrams in flight at once, 10 times
                for i, peer in enumerate(peers):
                    for j in range(16):
                        peer.sendto(b"%d:%d:%d" % (round_, i, j), address)
                for i, peer in enumerate(peers):
                    for j in range(16):
                        data = await asyncio.wait_for(cloop.sock_recv(peer, 100), 5)
                        assert data == b"%d:%d:%d" % (round_, i, j)
            by_sender = {}
            for data, addr in server.got:
                by_sender.setdefault(addr[:2], []).append(data)
            assert sorted(by_sender) == sorted(p.getsockname()[:2] for p in peers)
            for i, peer in enumerate(peers):
                assert by_sender[peer.getsockname()[:2]] == [b"%d:%d:%d" % (r, i, j) for r in range(10) for j in range(16)]
        finally:
            for peer in peers:
                peer.close()
            transport.close()
        await server.lost

    with no_fd_leak(cloop):
        run(cloop, main())


def test_a_burst_larger_than_the_ring_buffers_comes_whole_and_in_order(cloop):
    # 200 datagrams wait in the socket before the loop runs again: more than the ring's 64 datagram buffers, so the
    # recvmsg runs out of them (-ENOBUFS) and is armed again, the rest waiting in the socket meanwhile.
    async def main():
        transport, proto = await cloop.create_datagram_endpoint(Recorder, local_addr=("127.0.0.1", 0))
        transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        address = transport.get_extra_info("sockname")
        await asyncio.sleep(0)
        with peer_socket("127.0.0.1") as peer:
            for round_ in range(3):
                for i in range(200):
                    peer.sendto(b"%d-%d" % (round_, i), address)
                await until(lambda: len(proto.got) == 200 * (round_ + 1), "the burst")
            assert [d for d, _ in proto.got] == [b"%d-%d" % (r, i) for r in range(3) for i in range(200)]
        transport.close()
        await proto.lost

    run(cloop, main())


@pytest.mark.parametrize("host", HOSTS)
def test_the_largest_udp_datagram_comes_whole_as_asyncio_reads_it(cloop, host):
    # asyncio's recvfrom reads up to 256 KiB, so a UDP datagram is never cut short; the ring's buffers hold the
    # largest one (65,507 bytes over IPv4, 65,527 over IPv6) with its header and address, so neither is it there.
    async def main():
        transport, server = await cloop.create_datagram_endpoint(Recorder, local_addr=(host, 0))
        transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        address = transport.get_extra_info("sockname")
        with peer_socket(host) as peer:
            sizes = [LARGEST[host], 1, LARGEST[host] - 1, 65536 - 100]
            for size in sizes:
                peer.sendto(bytes([size % 251]) * size, address)
            await until(lambda: len(server.got) == len(sizes), "the datagrams")
            assert [len(d) for d, _ in server.got] == sizes
            assert all(d == bytes([len(d) % 251]) * len(d) for d, _ in server.got)
            assert all(a[:2] == peer.getsockname()[:2] for _, a in server.got)
        transport.close()
        await server.lost

    run(cloop, main())


def test_an_empty_datagram_is_received_and_the_next_ones_still_are(cloop):
    async def main():
        transport, server = await cloop.create_datagram_endpoint(Recorder, local_addr=("127.0.0.1", 0))
        address = transport.get_extra_info("sockname")
        with peer_socket("127.0.0.1") as peer:
            for payload in [b"", b"after", b"", b"", b"last"]:
                peer.sendto(payload, address)
                await until(lambda: server.got and server.got[-1][0] == payload, repr(payload))
            assert [d for d, _ in server.got] == [b"", b"after", b"", b"", b"last"]
            assert {a for _, a in server.got} == {peer.getsockname()}
        transport.close()
        await server.lost

    run(cloop, main())


def test_econnrefused_goes_to_error_received_and_reading_goes_on(cloop):
    async def main():
        gone = peer_socket("127.0.0.1")
        gone_address = gone.getsockname()
        gone.close()                           # nobody listens there now: a datagram to it draws an ICMP error
        transport, proto = await cloop.create_datagram_endpoint(Recorder, remote_addr=gone_address)
        for round_ in range(3):
            transport.sendto(b"refused")
            await until(lambda: len(proto.errors) == round_ + 1, "error_received")
            assert isinstance(proto.errors[-1], ConnectionRefusedError)
        assert not transport.is_closing()
        # The port comes back: what it sends now is received.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as back:
            back.bind(gone_address)
            back.sendto(b"back", transport.get_extra_info("sockname"))
            await until(lambda: proto.got, "the datagram after the errors")
            assert proto.got == [(b"back", gone_address)]
        transport.close()
        assert await proto.lost is None

    with no_fd_leak(cloop):
        run(cloop, main())


def test_datagrams_that_come_while_paused_wait_and_keep_their_order(cloop):
    async def main():
        transport, proto = await cloop.create_datagram_endpoint(Recorder, local_addr=("127.0.0.1", 0))
        address = transport.get_extra_info("sockname")
        with peer_socket("127.0.0.1") as peer:
            peer.sendto(b"first", address)
            await until(lambda: proto.got, "the first datagram")
            transport.pause_reading()
            for i in range(20):
                peer.sendto(b"-%d" % i, address)
            await asyncio.sleep(0.05)
            assert [d for d, _ in proto.got] == [b"first"]
            transport.resume_reading()
            transport.pause_reading()           # a pause and resume before the cancel's end came
            transport.resume_reading()
            await until(lambda: len(proto.got) == 21, "the datagrams held")
            assert [d for d, _ in proto.got] == [b"first"] + [b"-%d" % i for i in range(20)]
            peer.sendto(b"more", address)
            await until(lambda: len(proto.got) == 22, "a datagram after resuming")
        transport.close()
        await proto.lost

    run(cloop, main())


def test_datagrams_held_at_a_pause_reach_the_protocol_in_its_context_after_a_resume_from_a_task(cloop):
    # A pause in datagram_received with more datagrams already taken in (through the ring: held) and a
    # resume_reading() from a task: what follows runs in the transport's context, not the task's (CPython
    # gh-140947, fixed in asyncio 3.15; before it asyncio re-added its reader in the caller's context).
    if isinstance(cloop, asyncio.BaseEventLoop) and sys.version_info < (3, 15):
        pytest.skip("asyncio before 3.15 runs them in the resuming task's context")
    var = contextvars.ContextVar("resumer", default="unset")

    class PausingRecorder(Recorder):
        def datagram_received(self, data, addr):
            super().datagram_received(data, addr)
            self.events.append(var.get())
            if len(self.got) == 1:
                self.transport.pause_reading()

    async def resume(transport):
        var.set("task")
        transport.resume_reading()

    async def main():
        transport, proto = await cloop.create_datagram_endpoint(PausingRecorder, local_addr=("127.0.0.1", 0))
        address = transport.get_extra_info("sockname")
        with peer_socket("127.0.0.1") as peer:
            for i in range(5):                  # all there before the next poll: one completion batch
                peer.sendto(b"%d" % i, address)
            await until(lambda: proto.got, "the first datagram")
            await asyncio.sleep(0.05)
            assert len(proto.got) == 1
            await asyncio.create_task(resume(transport))
            await until(lambda: len(proto.got) == 5, "the datagrams after resuming")
        assert [d for d, _ in proto.got] == [b"%d" % i for i in range(5)]
        assert proto.events == ["unset"] * 5
        transport.close()
        await proto.lost

    run(cloop, main())


def test_close_with_the_recv_in_flight_lets_go_of_the_port_at_once(cloop):
    async def main():
        for _ in range(20):
            transport, proto = await cloop.create_datagram_endpoint(Recorder, local_addr=("127.0.0.1", 0))
            address = transport.get_extra_info("sockname")
            await asyncio.sleep(0)             # the recv is armed in the kernel
            transport.close()
            assert await proto.lost is None
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as again:
                again.bind(address)            # the socket is closed for good: its port is free
            assert proto.got == [] and proto.events == ["lost"]

    with no_fd_leak(cloop):
        run(cloop, main())


def test_abort_with_datagrams_arriving_delivers_none_after_it(cloop):
    async def main():
        transport, proto = await cloop.create_datagram_endpoint(Recorder, local_addr=("127.0.0.1", 0))
        address = transport.get_extra_info("sockname")
        with peer_socket("127.0.0.1") as peer:
            peer.sendto(b"before", address)
            await until(lambda: proto.got, "a datagram")
            for i in range(10):
                peer.sendto(b"x%d" % i, address)
            transport.abort()
            assert await proto.lost is None
            await asyncio.sleep(0.02)
            assert proto.got == [(b"before", peer.getsockname())]
            assert proto.events == ["lost"]

    with no_fd_leak(cloop):
        run(cloop, main())


def test_close_with_sends_queued_sends_them_all_first(cloop):
    async def main():
        transport, proto = await cloop.create_datagram_endpoint(Recorder, local_addr=("127.0.0.1", 0))
        with peer_socket("127.0.0.1") as peer:
            peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            for i in range(100):
                transport.sendto(b"d%d" % i, peer.getsockname())
            transport.close()
            assert await proto.lost is None
            got = []
            while True:
                try:
                    got.append(peer.recv(100))
                except BlockingIOError:
                    break
            assert got == [b"d%d" % i for i in range(100)]

    with no_fd_leak(cloop):
        run(cloop, main())


def test_a_new_transport_on_a_reused_fd_number_never_gets_the_old_ones_datagrams(cloop):
    async def main():
        for round_ in range(10):
            old_t, old = await cloop.create_datagram_endpoint(Recorder, local_addr=("127.0.0.1", 0))
            old_fd = old_t.get_extra_info("socket").fileno()
            await asyncio.sleep(0)
            old_t.close()
            await old.lost                     # its socket is closed; its cancelled recv may not have ended yet
            new_t, new = await cloop.create_datagram_endpoint(Recorder, local_addr=("127.0.0.1", 0))
            reused = new_t.get_extra_info("socket").fileno() == old_fd
            with peer_socket("127.0.0.1") as peer:
                peer.sendto(b"fresh%d" % round_, new_t.get_extra_info("sockname"))
                await until(lambda: new.got, "the datagram")
                sender = peer.getsockname()
            await asyncio.sleep(0.01)
            assert new.got == [(b"fresh%d" % round_, sender)], (round_, reused)
            assert old.got == []
            new_t.close()
            await new.lost

    with no_fd_leak(cloop):
        run(cloop, main())


def test_sendto_after_close_raises_nothing_and_sends_nothing(cloop):
    async def main():
        with peer_socket("127.0.0.1") as peer:
            transport, proto = await cloop.create_datagram_endpoint(Recorder, remote_addr=peer.getsockname())
            transport.close()
            transport.sendto(b"late")          # dropped: the connection is lost (asyncio counts, then warns)
            await proto.lost
            transport.sendto(b"later")
            await asyncio.sleep(0.01)
            with pytest.raises(BlockingIOError):
                peer.recv(100)
            assert proto.errors == []

    run(cloop, main())


def test_a_closed_transport_is_freed_once_its_recv_ended(cloop):
    async def main():
        transport, proto = await cloop.create_datagram_endpoint(Recorder, local_addr=("127.0.0.1", 0))
        await asyncio.sleep(0)
        ref = weakref.ref(transport)
        transport.close()
        await proto.lost
        await asyncio.sleep(0.01)              # the cancelled recv's completion
        del transport
        proto.transport = None
        return ref

    ref = run(cloop, main())
    gc.collect()
    assert ref() is None


# ---------------------------------------------------------------------- fork: the accepts of the inherited loop

def test_a_forked_child_accepts_on_the_inherited_server_through_its_own_ring(cloop):
    """docs/architecture.md, "Fork": the backend arms a server's accepts again on the child's new ring, so the
    child's copy of the loop serves the inherited listening socket (as on epoll), and leaks nothing doing it."""
    if not hasattr(cloop, "_acceptors") or not hasattr(os, "fork"):
        pytest.skip("zloop's acceptor, os.fork")

    class Served(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport

        def data_received(self, data):
            self.transport.write(b"pid %d: " % os.getpid() + data)

    async def echo(address, payload):
        reader, writer = await asyncio.open_connection(*address)
        try:
            writer.write(payload)
            return await reader.readuntil(payload)
        finally:
            writer.close()
            await writer.wait_closed()

    server = run(cloop, cloop.create_server(Served, "127.0.0.1", 0))
    address = server.sockets[0].getsockname()
    assert run(cloop, echo(address, b"before")) == b"pid %d: before" % os.getpid()
    (acceptor,) = cloop._acceptors().values()
    go_r, go_w = os.pipe()

    def child():
        os.read(go_r, 1)                       # the parent no longer accepts: every connection is the child's
        before = None
        for i in range(5):
            got = cloop.run_until_complete(asyncio.wait_for(echo(address, b"child%d" % i), 10))
            assert got == b"pid %d: child%d" % (os.getpid(), i)
            if before is None:
                gc.collect()
                before = fd_count()            # after the first run: what the child's loop keeps open
        cloop.run_until_complete(asyncio.sleep(0.01))
        gc.collect()
        assert fd_count() <= before, sorted(os.listdir("/proc/self/fd"))
        return True

    try:
        status, details = fork_then(child, lambda: (acceptor.stop(), os.write(go_w, b"g")))
        assert exit_code(status) == 0, details
        acceptor.start()
        assert run(cloop, echo(address, b"after")) == b"pid %d: after" % os.getpid()
    finally:
        os.close(go_r)
        os.close(go_w)
        server.close()
        run(cloop, server.wait_closed())


def fork_then(body, in_parent):
    """run_in_child(body), with in_parent() run in the parent right after the fork."""
    real_fork = os.fork

    def fork():
        pid = real_fork()
        if pid != 0:
            in_parent()
        return pid

    os.fork = fork
    try:
        return run_in_child(body)
    finally:
        os.fork = real_fork
