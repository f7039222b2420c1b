# tests/test_net_load.py — short versions of the soak run (tests/soak/soak.py, make soak): many loopback TCP and Unix
# connections that stream in random chunk sizes, half-close, reset (SO_LINGER 0) or stall as slow readers, against a
# flow-controlled echo server on the loop under test; then accepts under RLIMIT_NOFILE exhaustion (server in a child
# process). Every connection's echo must come back intact, every server transport must be lost, no fd may stay open.

import asyncio
import os
import random
import tempfile

import pytest

from net_helpers import TIMEOUT, accepts_in_ring, no_fd_leak, run, watched
from soak.server_process import ServerProcess
from soak.workload import BEHAVIOURS, FlowEcho, Stats, run_clients

SIZES = {"stream": (1, 128 * 1024), "half_close": (1, 128 * 1024), "reset": (1, 32 * 1024),
         "stall": (512 * 1024, 1024 * 1024)}
CONNECTIONS = 40


async def serve(loop, unix_path, stats, transports):
    factory = lambda: FlowEcho(stats, transports)  # noqa: E731
    tcp = await loop.create_server(factory, "127.0.0.1", 0)
    unix = await loop.create_unix_server(factory, unix_path)
    return [tcp, unix], [tcp.sockets[0].getsockname()[:2], unix_path]


async def until(predicate, what):
    for _ in range(int(TIMEOUT / 0.01)):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def load_round(loop, behaviour, seed):
    """CONNECTIONS clients of one behaviour over TCP and Unix; the server's counters once every transport is gone."""
    stats, transports, handled = Stats(), set(), []
    loop.set_exception_handler(lambda lp, context: handled.append(context))
    rng = random.Random(seed)

    async def main(unix_path):
        servers, addresses = await serve(loop, unix_path, stats, transports)
        try:
            totals = await run_clients(addresses, rng, CONNECTIONS, 20, {behaviour: SIZES[behaviour]}, timeout=30,
                                       behaviours=(behaviour,))
            await until(lambda: not transports, "the server's transports to be lost")
            return totals
        finally:
            for server in servers:
                server.close()
                await server.wait_closed()

    with tempfile.TemporaryDirectory(prefix="zloop-load-") as tmp:
        totals = run(loop, main(os.path.join(tmp, "s.sock")), timeout=60)
    assert handled == [], f"the exception handler was called: {handled[:3]}"
    return totals, stats


@pytest.mark.parametrize("behaviour", BEHAVIOURS)
def test_connections_under_load_leave_nothing_behind(loop, behaviour):
    with no_fd_leak(loop):
        totals, stats = load_round(loop, behaviour, seed=BEHAVIOURS.index(behaviour))
        watched_after = watched(loop)
    assert totals["connections"] == CONNECTIONS
    assert stats["accepted"] == CONNECTIONS
    lost = sum(n for key, n in stats.items() if key.startswith("lost"))
    assert lost == CONNECTIONS
    assert watched_after <= 1   # at most the loop's own wake-up fd
    if behaviour in ("stream", "half_close", "stall"):
        assert stats["bytes"] == totals["bytes"]
        assert stats["lost"] == CONNECTIONS, dict(stats)   # closed cleanly, no error
    if behaviour == "half_close":
        assert stats["eofs"] == CONNECTIONS
    if behaviour == "reset":
        # Reset by the peer: the transport ends with the error, as asyncio's does (never the exception handler).
        errors = {key for key in stats if key.startswith("lost_")}
        assert errors <= {"lost_ConnectionResetError", "lost_BrokenPipeError"}, dict(stats)
        assert stats["bytes"] <= totals["bytes"]
    if behaviour == "stall":
        assert stats["pauses"] > 0 and stats["resumes"] == stats["pauses"], dict(stats)


# ---------------------------------------------------------------------- accept under RLIMIT_NOFILE exhaustion

def test_accept_runs_out_of_fds_and_recovers(loop, backend):
    """With the server's fds nearly exhausted, a burst of connections: accept fails with EMFILE, the server pauses
    accepting (exception handler, 'socket.accept() out of system resource', as asyncio), keeps serving the connection
    it has, and accepts the rest once fds free up; afterwards its fds are back where they were."""
    rng = random.Random(5)
    with tempfile.TemporaryDirectory(prefix="zloop-emfile-") as tmp:
        server = ServerProcess(backend, os.path.join(tmp, "s.sock"))
        try:
            before = server.ask("sample")

            async def main():
                reader, writer = await asyncio.open_connection(*server.addresses[0])
                server.ask("limit 6")
                burst = asyncio.ensure_future(run_clients(server.addresses, rng, 16, 16,
                                                          {name: (1, 8192) for name in BEHAVIOURS}, timeout=30))
                echoed = 0
                while not burst.done():   # the established connection is served all along
                    writer.write(b"x" * 100)
                    assert await reader.readexactly(100) == b"x" * 100
                    echoed += 1
                    await asyncio.sleep(0.05)
                totals = await burst
                writer.close()
                await writer.wait_closed()
                return totals, echoed

            totals, echoed = run(loop, main(), timeout=60)
            server.ask("unlimit")
            after = server.settle(TIMEOUT, watched=before["watched"])
            _, status = server.quit(TIMEOUT)
        finally:
            server.close()
    assert status == 0
    assert totals["connections"] == 16
    assert echoed > 1
    # A multishot accept (uring, ZLOOP_URING_COMPLETION=1) took the limit when it was armed, before "limit 6": no
    # EMFILE there (docs/compatibility.md); test_net_server's EMFILE test lowers it before serving starts.
    assert after["stats"].get("emfile_pauses", 0) >= (0 if accepts_in_ring(backend) else 1), after
    assert after["stats"]["accepted"] == 16 + 1
    assert after["fds"] == before["fds"], (before, after)
    assert after["watched"] == before["watched"], (before, after)
