# tests/test_datagram_send_completion.py — what a UDP transport must keep doing when it sends through a completion
# backend (uring with ZLOOP_URING_COMPLETION=1: sendto() queues, the queue leaves before the next poll as one
# hard-linked chain of SENDMSGs): bursts complete and in order, errors to error_received, close/abort/loop.close()
# with sends queued, a fork child, flow control. Run on every backend too (and the asyncio control).

import asyncio
import gc
import os
import select
import socket
import sys
import weakref

import pytest

from conftest import COMPLETION_KIND
from net_helpers import HAS_IPV6, accepts_in_ring, no_fd_leak
from test_datagram_completion import Recorder
from test_fork import exit_code, run_in_child
from test_stream_completion import cloop, run  # noqa: F401 (the fixture: every backend, uring+completion, control)

HOSTS = ["127.0.0.1"] + (["::1"] if HAS_IPV6 else [])


class Sender(Recorder):
    """A datagram protocol that also records flow control."""

    def pause_writing(self):
        self.events.append("pause")

    def resume_writing(self):
        self.events.append("resume")


def ring_kind(request):
    kind = request.node.callspec.params["cloop"]
    return kind == COMPLETION_KIND or accepts_in_ring(kind)


def ring_sent(loop):
    """Datagrams the loop handed to the ring so far (0 where there is no ring: the asyncio control too)."""
    return getattr(loop, "_ring_datagrams_sent", 0)


def receiver(host="127.0.0.1", family=None):
    sock = socket.socket(family or (socket.AF_INET6 if ":" in host else socket.AF_INET), socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.bind((host, 0))
    sock.setblocking(False)
    return sock


async def collect(sock, count, timeout=5.0):
    """Up to count datagrams from sock, letting the loop run while none is there (the ring sends at its poll)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    got = []
    while len(got) < count and loop.time() < deadline:
        if select.select([sock], [], [], 0)[0]:
            got.append(sock.recv(65536))
        else:
            await asyncio.sleep(0.001)
    return got


@pytest.mark.parametrize("connected", [False, True], ids=["sendto", "connected"])
@pytest.mark.parametrize("host", HOSTS)
def test_a_burst_from_one_callback_arrives_complete_and_in_order_through_the_ring(cloop, request, host, connected):
    ring = ring_kind(request)

    async def main():
        with receiver(host) as rx:
            if connected:
                tr, proto = await cloop.create_datagram_endpoint(Sender, remote_addr=rx.getsockname()[:2])
            else:
                tr, proto = await cloop.create_datagram_endpoint(Sender, local_addr=(host, 0))
            before = ring_sent(cloop)
            for i in range(500):               # one callback: on the ring they all wait for the next poll
                tr.sendto(b"%05d" % i + b"." * (i % 300), None if connected else rx.getsockname())
            queued = tr.get_write_buffer_size()
            got = await collect(rx, 500)
            assert got == [b"%05d" % i + b"." * (i % 300) for i in range(500)]
            assert ring_sent(cloop) - before == (500 if ring else 0)
            assert queued > 0 if ring else queued == 0   # in flight until the completion, as the streams' bytes
            assert tr.get_write_buffer_size() == 0 and proto.errors == []
            tr.close()
            assert await proto.lost is None

    with no_fd_leak(cloop):
        run(cloop, main())


def test_unix_datagram_sends_stay_on_readiness(cloop, tmp_path):
    async def main():
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as rx:
            rx.bind(str(tmp_path / "rx"))
            rx.setblocking(False)
            tr, proto = await cloop.create_datagram_endpoint(Sender, family=socket.AF_UNIX,
                                                             remote_addr=str(tmp_path / "rx"))
            before = ring_sent(cloop)
            for i in range(50):
                tr.sendto(b"u%d" % i)
            assert await collect(rx, 50) == [b"u%d" % i for i in range(50)]
            assert ring_sent(cloop) == before      # a Unix datagram may outgrow what the ring path is for
            tr.close()
            await proto.lost

    run(cloop, main())


def test_a_failed_datagram_in_a_burst_goes_to_error_received_and_the_rest_arrive_in_order(cloop, request):
    """On the ring the oversized one breaks its chain: the kernel cancels the datagrams linked after it, which are
    sent again in order, ahead of newer ones."""
    ring = ring_kind(request)

    async def main():
        with receiver() as rx:
            tr, proto = await cloop.create_datagram_endpoint(Sender, local_addr=("127.0.0.1", 0))
            before = ring_sent(cloop)
            for i in range(10):
                tr.sendto(b"a%d" % i, rx.getsockname())
            tr.sendto(b"x" * 70000, rx.getsockname())     # larger than any UDP datagram: EMSGSIZE
            for i in range(10):
                tr.sendto(b"b%d" % i, rx.getsockname())
            got = await collect(rx, 20)
            assert got == [b"a%d" % i for i in range(10)] + [b"b%d" % i for i in range(10)]
            assert [e.errno for e in proto.errors] == [90]  # EMSGSIZE, an OSError as asyncio's
            assert type(proto.errors[0]) is OSError and not tr.is_closing()
            # 21 submitted, then the 10 cancelled behind the failed one again
            assert ring_sent(cloop) - before == (31 if ring else 0)
            tr.close()
            await proto.lost

    run(cloop, main())


def test_a_refused_connected_send_goes_to_error_received_and_the_transport_stays_open(cloop, request):
    ring = ring_kind(request)

    async def main():
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as gone:
            gone.bind(("127.0.0.1", 0))
            address = gone.getsockname()
        tr, proto = await cloop.create_datagram_endpoint(Sender, remote_addr=address)
        tr.pause_reading()                     # the ICMP error is then left for a send to meet
        before = ring_sent(cloop)
        for _ in range(200):
            tr.sendto(b"knock")
            await asyncio.sleep(0.005)
            if proto.errors:
                break
        assert isinstance(proto.errors[0], ConnectionRefusedError)
        assert not tr.is_closing()
        assert (ring_sent(cloop) > before) == ring
        tr.close()
        assert await proto.lost is None

    run(cloop, main())


def test_close_with_a_burst_queued_sends_it_all_then_loses_the_connection(cloop):
    async def main():
        with receiver() as rx:
            tr, proto = await cloop.create_datagram_endpoint(Sender, remote_addr=rx.getsockname())
            for i in range(300):
                tr.sendto(b"c%d" % i)
            tr.close()
            assert tr.is_closing()
            assert await proto.lost is None
            assert proto.events == ["lost"]
            assert await collect(rx, 300) == [b"c%d" % i for i in range(300)]

    with no_fd_leak(cloop):
        run(cloop, main())


def test_abort_with_a_burst_queued_loses_the_connection_at_once_and_frees_everything(cloop, request):
    ring = ring_kind(request)
    payload = b"a" * 1000 + b"unique-abort"

    async def main():
        with receiver() as rx:
            tr, proto = await cloop.create_datagram_endpoint(Sender, remote_addr=rx.getsockname())
            base = sys.getrefcount(payload)
            for _ in range(100):
                tr.sendto(payload)
            tr.abort()
            assert tr.get_write_buffer_size() == 0
            assert await asyncio.wait_for(proto.lost, 1) is None
            got = await collect(rx, 100, timeout=0.2)
            assert len(got) == (0 if ring else 100)   # asyncio sent each inside sendto(); the ring had not yet
            ref = weakref.ref(tr)
            del tr
            proto.transport = None
            await asyncio.sleep(0.01)
            gc.collect()
            assert ref() is None
            assert sys.getrefcount(payload) == base

    with no_fd_leak(cloop):
        run(cloop, main())


def test_loop_close_with_sends_queued_leaks_nothing(cloop, request):
    payload = b"b" * 500 + b"unique-loop-close"
    base = sys.getrefcount(payload)
    rx = receiver()
    holder = {}

    def burst():
        for _ in range(64):
            holder["tr"].sendto(payload)
        holder["tr"].close()                   # waits for them
        cloop.stop()                           # stops after this iteration: the poll that sends them is next

    async def main():
        holder["tr"], holder["proto"] = await cloop.create_datagram_endpoint(Sender, remote_addr=rx.getsockname())

    try:
        run(cloop, main())
        cloop.call_soon(burst)
        cloop.run_forever()
        cloop.close()                          # the queue (or a chain in flight) goes with the ring
        tr = holder.pop("tr")
        ref = weakref.ref(tr)
        del tr
        holder.clear()
        gc.collect()
        assert ref() is None or not ring_kind(request)   # the asyncio control keeps it in its loop's handles
        assert sys.getrefcount(payload) == base
    finally:
        rx.close()


def test_a_forked_child_sends_through_its_own_ring_and_the_parent_goes_on(cloop, request):
    if not hasattr(os, "fork"):
        pytest.skip("os.fork")
    ring = ring_kind(request)
    rx = receiver()
    tr, proto = run(cloop, cloop.create_datagram_endpoint(Sender, remote_addr=rx.getsockname()))

    def child():
        assert tr.get_write_buffer_size() == 0   # what was queued at the fork is the parent's to send
        before = ring_sent(cloop)
        for i in range(100):
            tr.sendto(b"child%d" % i)
        cloop.run_until_complete(asyncio.sleep(0.05))
        assert tr.get_write_buffer_size() == 0
        assert ring_sent(cloop) - before == (100 if ring else 0)
        tr.close()
        cloop.run_until_complete(asyncio.wait_for(proto.lost, 5))
        return True

    try:
        for i in range(10):
            tr.sendto(b"parent%d" % i)         # queued at the fork on the ring: the parent sends them, once
        status, details = run_in_child(child)
        assert exit_code(status) == 0, details

        async def rest():
            got = await collect(rx, 110)
            got += await collect(rx, 1, timeout=0.1)   # a duplicate would be there by now
            parent = [d for d in got if d.startswith(b"parent")]
            kid = [d for d in got if d.startswith(b"child")]
            assert kid == [b"child%d" % i for i in range(100)]
            assert parent == [b"parent%d" % i for i in range(10)]   # sent once, by the parent
            for i in range(5):
                tr.sendto(b"after%d" % i)
            assert await collect(rx, 5) == [b"after%d" % i for i in range(5)]

        run(cloop, rest())
    finally:
        tr.close()
        run(cloop, proto.lost)
        rx.close()


def test_a_small_send_buffer_and_a_big_burst_still_arrive_complete_and_in_order(cloop):
    async def main():
        with receiver() as rx:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
            sock.bind(("127.0.0.1", 0))
            tr, proto = await cloop.create_datagram_endpoint(Sender, sock=sock)
            for i in range(400):
                tr.sendto(b"%04d" % i + b"s" * 1400, rx.getsockname())
            got = await collect(rx, 400)
            assert [d[:4] for d in got] == [b"%04d" % i for i in range(400)]
            assert proto.errors == []
            tr.close()
            await proto.lost

    run(cloop, main())


def test_a_burst_above_the_high_water_mark_pauses_and_resumes_writing_once(cloop, request):
    ring = ring_kind(request)

    async def main():
        with receiver() as rx:
            tr, proto = await cloop.create_datagram_endpoint(Sender, remote_addr=rx.getsockname())
            tr.set_write_buffer_limits(high=8192, low=1024)
            for i in range(40):
                tr.sendto(b"%02d" % i + b"w" * 1022)
            assert proto.events == (["pause"] if ring else [])   # the ring counts them until they are sent
            got = await collect(rx, 40)
            assert len(got) == 40
            assert proto.events == (["pause", "resume"] if ring else [])
            assert tr.get_write_buffer_size() == 0
            tr.close()
            await proto.lost

    run(cloop, main())


def test_a_host_name_destination_behind_queued_datagrams_keeps_their_order(cloop, request):
    """The socket module converts a host name: on the ring such a datagram queued behind others hands the queue
    to readiness (_sendto_ready sends it in order), and the ring takes over again once it is empty."""
    ring = ring_kind(request)

    async def main():
        with receiver() as rx:
            port = rx.getsockname()[1]
            tr, proto = await cloop.create_datagram_endpoint(Sender, local_addr=("127.0.0.1", 0))
            before = ring_sent(cloop)
            for i in range(10):
                tr.sendto(b"a%d" % i, ("127.0.0.1", port))
            tr.sendto(b"by-name", ("localhost", port))
            for i in range(10):
                tr.sendto(b"b%d" % i, ("127.0.0.1", port))
            expected = [b"a%d" % i for i in range(10)] + [b"by-name"] + [b"b%d" % i for i in range(10)]
            assert await collect(rx, 21) == expected
            assert ring_sent(cloop) - before == (10 if ring else 0)
            tr.sendto(b"again", ("127.0.0.1", port))
            assert await collect(rx, 1) == [b"again"]
            assert ring_sent(cloop) - before == (11 if ring else 0)
            assert proto.errors == [] and tr.get_write_buffer_size() == 0
            tr.close()
            await proto.lost

    run(cloop, main())
