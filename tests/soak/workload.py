# tests/soak/workload.py — the server protocol and the client behaviours shared by the soak run (tests/soak/soak.py)
# and its short versions in the suite (tests/test_net_load.py): echo with flow control, and clients that stream in
# random chunks, half-close, reset (SO_LINGER 0) or stall as slow readers.

import asyncio
import collections
import socket
import struct

BEHAVIOURS = ("stream", "half_close", "reset", "stall")


class Stats(collections.Counter):
    """What the server saw: accepted, lost cleanly, lost with each exception type, pauses, resumes, bytes."""


class FlowEcho(asyncio.Protocol):
    """Echoes everything; stops reading while its transport's write buffer is over the high-water mark, so a slow
    reader pushes back instead of growing the server's memory. On EOF the transport closes once it has flushed."""

    def __init__(self, stats, transports=None):
        self.stats = stats
        self.transports = transports
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport
        self.stats["accepted"] += 1
        if self.transports is not None:
            self.transports.add(transport)

    def data_received(self, data):
        self.stats["bytes"] += len(data)
        self.transport.write(data)

    def pause_writing(self):
        self.stats["pauses"] += 1
        self.transport.pause_reading()

    def resume_writing(self):
        self.stats["resumes"] += 1
        self.transport.resume_reading()

    def eof_received(self):
        self.stats["eofs"] += 1
        return False

    def connection_lost(self, exc):
        self.stats["lost" if exc is None else "lost_" + type(exc).__name__] += 1
        if self.transports is not None:
            self.transports.discard(self.transport)
        self.transport = None


def chunks(rng, total, largest):
    """Random chunk sizes adding up to total."""
    sizes = []
    while total > 0:
        size = min(total, rng.randint(1, largest))
        sizes.append(size)
        total -= size
    return sizes


async def _open(address):
    if isinstance(address, str):
        return await asyncio.open_unix_connection(address, limit=1 << 20)
    return await asyncio.open_connection(*address, limit=1 << 20)


async def _read_exactly(reader, n, slow=None):
    """n bytes; with slow=(rng, delay), in small reads with pauses, as a client that reads slower than it sends."""
    got = bytearray()
    while len(got) < n:
        if slow is None:
            piece = await reader.read(n - len(got))
        else:
            rng, delay = slow
            piece = await reader.read(min(n - len(got), rng.randint(512, 16384)))
            await asyncio.sleep(delay)
        if not piece:
            raise ConnectionError(f"EOF after {len(got)} of {n} echoed bytes")
        got += piece
    return bytes(got)


async def _send(writer, payload, sizes):
    offset = 0
    for size in sizes:
        writer.write(payload[offset:offset + size])
        offset += size
        await writer.drain()


async def _close(writer):
    writer.close()
    try:
        await writer.wait_closed()
    except ConnectionError:
        pass


async def client_stream(address, rng, total):
    """Send total random bytes in random chunks while reading the echo; it must come back identical."""
    reader, writer = await _open(address)
    try:
        payload = rng.randbytes(total)
        sender = asyncio.ensure_future(_send(writer, payload, chunks(rng, total, 65536)))
        echoed = await _read_exactly(reader, total)
        await sender
        if echoed != payload:
            raise AssertionError("stream: the echo differs from what was sent")
        return {"bytes": total}
    finally:
        await _close(writer)


async def client_half_close(address, rng, total):
    """Send everything, then write_eof(); read until the server closes: exactly the bytes sent, then EOF."""
    reader, writer = await _open(address)
    try:
        payload = rng.randbytes(total)
        reading = asyncio.ensure_future(reader.read())   # until EOF
        await _send(writer, payload, chunks(rng, total, 65536))
        writer.write_eof()
        echoed = await reading
        if echoed != payload:
            raise AssertionError(f"half_close: {len(echoed)} bytes came back for {total}")
        return {"bytes": total, "half_closes": 1}
    finally:
        await _close(writer)


async def client_reset(address, rng, total):
    """Send part of a stream, maybe read some of the echo, then close with SO_LINGER 0: the server gets an RST."""
    reader, writer = await _open(address)
    payload = rng.randbytes(total)
    await _send(writer, payload, chunks(rng, total, 16384))
    if rng.random() < 0.5:
        await _read_exactly(reader, min(total, rng.randint(1, 4096)))
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
    await asyncio.sleep(0)
    return {"bytes": total, "resets": 1}


async def client_stall(address, rng, total):
    """Send a lot without reading, so the server's write buffer fills (pause_writing), then read slowly."""
    reader, writer = await _open(address)
    try:
        payload = rng.randbytes(total)
        sender = asyncio.ensure_future(_send(writer, payload, chunks(rng, total, 65536)))
        await asyncio.sleep(rng.uniform(0.05, 0.2))   # not reading at all: both directions back up
        echoed = await _read_exactly(reader, total, slow=(rng, 0.0005))
        await sender
        if echoed != payload:
            raise AssertionError("stall: the echo differs from what was sent")
        return {"bytes": total, "stalls": 1}
    finally:
        await _close(writer)


CLIENTS = {"stream": client_stream, "half_close": client_half_close, "reset": client_reset, "stall": client_stall}


async def run_clients(addresses, rng, count, concurrency, sizes, timeout, behaviours=BEHAVIOURS):
    """count connections, at most concurrency at once, each a behaviour (every one at least once, then at random) on a
    random address; sizes maps a behaviour to (smallest, largest) bytes. Returns the summed figures; the first failure
    raises."""
    totals = collections.Counter()
    semaphore = asyncio.Semaphore(concurrency)

    async def one(i):
        behaviour = behaviours[i] if i < len(behaviours) else rng.choice(behaviours)
        address = rng.choice(addresses)
        low, high = sizes[behaviour]
        total = rng.randint(low, high)
        async with semaphore:
            figures = await asyncio.wait_for(CLIENTS[behaviour](address, rng, total), timeout)
        totals.update(figures)
        totals["connections"] += 1

    await asyncio.gather(*(one(i) for i in range(count)))
    return totals
