# tests/test_io_order.py — where transport callbacks run relative to handles and timers: asyncio runs every I/O
# callback as a handle queued after the handles already waiting, and what it schedules in the next iteration.
# zloop's C transports are called from the I/O dispatch and must keep that order (core/io_watch.c).
# Run with ZLOOP_TEST_CONTROL=1 to check these expectations against stock asyncio.

import asyncio
import socket

import pytest

from conftest import TIMEOUT


class OrderProtocol(asyncio.Protocol):
    """Records data_received in `events`; on_data(loop) runs inside it."""

    def __init__(self, events, on_data=None):
        self.events = events
        self.on_data = on_data
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.events.append("data")
        if self.on_data is not None:
            self.on_data()


class OrderDatagramProtocol(asyncio.DatagramProtocol):
    def __init__(self, events):
        self.events = events

    def datagram_received(self, data, addr):
        self.events.append("datagram")


async def stream_pair(loop, protocol):
    """A transport over one end of a socketpair (protocol on it) and the other end as a plain socket."""
    ours, peer = socket.socketpair()
    peer.setblocking(False)
    transport, _ = await loop.connect_accepted_socket(lambda: protocol, ours)
    return transport, peer


def run_until(loop, events, count):
    async def wait():
        deadline = loop.time() + TIMEOUT
        while len(events) < count and loop.time() < deadline:
            await asyncio.sleep(0.001)
    loop.run_until_complete(wait())


def test_handles_queued_before_the_poll_run_before_data_received(loop):
    events = []
    protocol = OrderProtocol(events)
    transport, peer = loop.run_until_complete(stream_pair(loop, protocol))
    try:
        def send_and_schedule():
            peer.send(b"x")                        # readable at the next poll ...
            loop.call_soon(events.append, "soon")  # ... behind which this handle already waits
        loop.call_soon(send_and_schedule)
        run_until(loop, events, 2)
        assert events == ["soon", "data"]
    finally:
        transport.close()
        peer.close()
        loop.run_until_complete(asyncio.sleep(0))


def read_with_a_timer_due(loop, events, on_timer):
    """A transport whose data_received schedules "scheduled by data"; the next iteration sends it data and sets
    a timer (on_timer) due in the same iteration as the read. Returns (transport, peer)."""
    protocol = OrderProtocol(events, on_data=lambda: loop.call_soon(events.append, "scheduled by data"))
    transport, peer = loop.run_until_complete(stream_pair(loop, protocol))

    def send_and_set_timer():
        peer.send(b"x")
        loop.call_at(loop.time(), on_timer)
    loop.call_soon(send_and_set_timer)
    return transport, peer


def close_pair(loop, transport, peer):
    transport.close()
    peer.close()
    loop.run_until_complete(asyncio.sleep(0))


def test_what_data_received_schedules_runs_after_the_timers_due_with_it(loop):
    events = []
    transport, peer = read_with_a_timer_due(loop, events, lambda: events.append("timer"))
    try:
        run_until(loop, events, 3)
        assert events == ["data", "timer", "scheduled by data"]
    finally:
        close_pair(loop, transport, peer)


def test_a_reader_handle_queued_first_runs_before_a_transport_read(loop):
    events = []
    protocol = OrderProtocol(events)
    transport, peer = loop.run_until_complete(stream_pair(loop, protocol))
    r, w = socket.socketpair()
    try:
        loop.add_reader(r, lambda: (events.append("reader"), loop.remove_reader(r)))

        def make_both_readable():
            w.send(b"r")
            peer.send(b"x")
        loop.call_soon(make_both_readable)
        run_until(loop, events, 2)
        # Both become readable in one poll; asyncio runs them in the order the selector reports them, which for
        # epoll is not fixed: what matters is that both ran exactly once and the reader handle was not skipped.
        assert sorted(events) == ["data", "reader"]
    finally:
        loop.remove_reader(r)
        r.close()
        w.close()
        transport.close()
        peer.close()
        loop.run_until_complete(asyncio.sleep(0))


def test_handles_queued_before_the_poll_run_before_datagram_received(loop):
    events = []
    transport, _ = loop.run_until_complete(loop.create_datagram_endpoint(
        lambda: OrderDatagramProtocol(events), local_addr=("127.0.0.1", 0)))
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        address = transport.get_extra_info("sockname")

        def send_and_schedule():
            sender.sendto(b"x", address)
            loop.call_soon(events.append, "soon")
        loop.call_soon(send_and_schedule)
        run_until(loop, events, 2)
        assert events == ["soon", "datagram"]
    finally:
        sender.close()
        transport.close()
        loop.run_until_complete(asyncio.sleep(0))


def test_a_transport_deferred_then_closed_is_not_called(loop):
    events = []
    protocol = OrderProtocol(events)
    transport, peer = loop.run_until_complete(stream_pair(loop, protocol))
    try:
        def send_then_close_first():
            peer.send(b"x")
            loop.call_soon(transport.abort)   # waits ahead of the read: the read must not reach the protocol
        loop.call_soon(send_then_close_first)
        loop.run_until_complete(asyncio.sleep(0.05))
        assert events == []
        assert transport.is_closing()
    finally:
        peer.close()
        loop.run_until_complete(asyncio.sleep(0))


@pytest.mark.parametrize("rounds", [200])
def test_deferred_reads_lose_no_data(loop, rounds):
    # Every read waits behind a handle: the stream must still arrive whole and in order.
    received = bytearray()

    class Collect(asyncio.Protocol):
        def data_received(self, data):
            received.extend(data)

    ours, peer = socket.socketpair()
    peer.setblocking(False)
    transport, _ = loop.run_until_complete(loop.connect_accepted_socket(Collect, ours))
    expected = b"".join(i.to_bytes(2, "big") for i in range(rounds))
    try:
        async def feed():
            for i in range(rounds):
                peer.send(i.to_bytes(2, "big"))
                loop.call_soon(lambda: None)   # something always waits when the read is dispatched
                await asyncio.sleep(0)
            deadline = loop.time() + TIMEOUT
            while len(received) < len(expected) and loop.time() < deadline:
                await asyncio.sleep(0.001)
        loop.run_until_complete(feed())
        assert bytes(received) == expected
    finally:
        transport.close()
        peer.close()
        loop.run_until_complete(asyncio.sleep(0))


class EofProtocol(asyncio.Protocol):
    def __init__(self, events):
        self.events = events

    def eof_received(self):
        self.events.append("eof")

    def connection_lost(self, exc):
        self.events.append("lost")


def test_a_stop_before_run_forever_leaves_what_eof_received_scheduled_for_the_next_run(loop):
    # difffuzz stop_boundary: connection_lost, scheduled when eof_received returns, is the next iteration's.
    events = []
    ours, peer = socket.socketpair()
    loop.run_until_complete(loop.connect_accepted_socket(lambda: EofProtocol(events), ours))
    peer.close()
    loop.stop()
    loop.run_forever()
    assert events == ["eof"]
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert events == ["eof", "lost"]


def test_a_stop_in_the_iteration_of_a_read_leaves_what_it_scheduled_for_the_next_run(loop):
    events = []
    transport, peer = read_with_a_timer_due(loop, events, loop.stop)
    try:
        loop.run_forever()
        assert events == ["data"]
        loop.call_soon(loop.stop)
        loop.run_forever()
        assert events == ["data", "scheduled by data"]
    finally:
        close_pair(loop, transport, peer)
