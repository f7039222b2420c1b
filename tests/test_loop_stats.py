# tests/test_loop_stats.py — loop.stats() and loop.set_stats() on every backend: the counters always kept, the
# timings kept while switched on (set_stats, ZLOOP_STATS), misuse, python -m zloop run --stats, and the
# prometheus_client exporter (zloop.prometheus; skipped without prometheus_client).

import asyncio
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from conftest import python_env

pytestmark = pytest.mark.zloop_only

COUNTERS = ("iterations", "callbacks", "timers_fired", "io_events")
TIMINGS = ("poll_seconds", "io_seconds", "callback_seconds", "slowest_callback_seconds", "lag_mean_seconds",
           "lag_max_seconds")


def busy(seconds):
    """Hold the loop for `seconds` of wall time (a callback that blocks)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def run_callbacks(loop, count):
    """Run exactly `count` callbacks (the last stops the loop)."""
    for i in range(count - 1):
        loop.call_soon(lambda: None)
    loop.call_soon(loop.stop)
    loop.run_forever()


def test_fresh_loop_has_zero_counters_and_no_timings(loop):
    loop.set_stats(False)
    stats = loop.stats()
    assert set(stats) == {*COUNTERS, *TIMINGS, "timing", "slowest_callback", "lag_samples"}
    assert all(stats[key] == 0 for key in COUNTERS)
    assert stats["timing"] is False
    assert stats["slowest_callback"] is None
    assert all(stats[key] == 0.0 and isinstance(stats[key], float) for key in TIMINGS)


def test_callbacks_and_iterations_are_counted_exactly(loop):
    before = loop.stats()
    run_callbacks(loop, 50)
    after = loop.stats()
    assert after["callbacks"] - before["callbacks"] == 50
    assert after["timers_fired"] == before["timers_fired"]
    assert after["iterations"] - before["iterations"] == 1   # all 50 were ready in the same iteration
    # A chain: each call_soon from a callback runs in the next iteration.
    left = [10]

    def chain():
        left[0] -= 1
        if left[0]:
            loop.call_soon(chain)
        else:
            loop.stop()
    loop.call_soon(chain)
    loop.run_forever()
    final = loop.stats()
    assert final["callbacks"] - after["callbacks"] == 10
    assert final["iterations"] - after["iterations"] == 10


def test_timers_fired_counts_run_timers_not_cancelled_ones(loop):
    fired = []
    for i in range(5):
        loop.call_later(0.001 * i, fired.append, i)
    loop.call_later(0.002, fired.append, "cancelled").cancel()
    loop.call_later(0.02, loop.stop)
    loop.run_forever()
    stats = loop.stats()
    assert fired == [0, 1, 2, 3, 4]
    assert stats["timers_fired"] == 6                  # five and the stop
    assert stats["callbacks"] == 6
    assert stats["iterations"] >= 2


def test_io_events_are_counted(loop):
    a, b = socket.socketpair()
    try:
        got = []

        def on_readable():
            got.append(b.recv(100))
            if len(got) == 3:
                loop.stop()
            else:
                a.send(b"x")
        loop.add_reader(b, on_readable)
        a.send(b"x")
        loop.run_forever()
        loop.remove_reader(b)
        stats = loop.stats()
        assert got == [b"x"] * 3
        assert stats["io_events"] >= 3
        assert stats["callbacks"] >= 3
    finally:
        a.close()
        b.close()


def test_io_events_from_a_transport(loop):
    before = loop.stats()["io_events"]
    assert loop.run_until_complete(asyncio.wait_for(_echo_once(), 10)) == b"ping"
    assert loop.stats()["io_events"] - before >= 3     # accept, the server's read, the client's read


def test_timings_stay_off_until_switched_on(loop):
    loop.set_stats(False)
    loop.call_soon(busy, 0.01)
    loop.call_later(0.01, loop.stop)
    loop.run_forever()
    stats = loop.stats()
    assert stats["callbacks"] == 2
    assert stats["slowest_callback"] is None
    assert all(stats[key] == 0.0 for key in TIMINGS)
    assert stats["lag_samples"] == 0


def slow_callback():
    busy(0.03)


def test_timings_record_the_slowest_callback_and_poll_time(loop):
    loop.set_stats(True)
    assert loop.stats()["timing"] is True
    marks = {}

    def stop():
        marks["stopped"] = time.monotonic()
        loop.stop()
    started = time.monotonic()
    loop.call_soon(lambda: None)
    loop.call_soon(slow_callback)
    loop.call_soon(lambda: marks.setdefault("idle", time.monotonic()))
    loop.call_later(0.1, stop)     # the loop then blocks in poll for about 70 ms
    loop.run_forever()
    stats = loop.stats()
    assert "slow_callback" in stats["slowest_callback"]
    assert 0.025 <= stats["slowest_callback_seconds"] < 10
    assert stats["callback_seconds"] >= stats["slowest_callback_seconds"]
    # Blocked from the last callback to the timer (less if the machine was too busy to run the loop on time). When
    # the process was descheduled past the timer's deadline, the timer is due at once: the loop never blocks, and
    # the few microseconds between the two marks are its own work, not poll time.
    idle = marks["stopped"] - marks["idle"]
    assert 0 <= stats["poll_seconds"] <= time.monotonic() - started
    if idle >= 0.001:
        assert idle * 0.5 <= stats["poll_seconds"]
    assert stats["lag_samples"] == 1


def test_timer_lag_measures_how_late_a_busy_loop_took_a_timer_up(loop):
    loop.set_stats(True)
    loop.call_later(0.005, loop.stop)
    loop.call_soon(busy, 0.05)            # the timer is due while this blocks the loop
    loop.run_forever()
    stats = loop.stats()
    assert stats["lag_samples"] == 1
    assert 0.03 <= stats["lag_max_seconds"] < 10
    assert stats["lag_mean_seconds"] == stats["lag_max_seconds"]


def test_a_slow_callback_among_cheap_ones_is_never_lost(loop):
    # After runs of cheap callbacks the clock is read once per span of them (up to 32): a slow one in such a span
    # is named as the span, with the span's time; when one comes back it is timed alone and named exactly.
    loop.set_stats(True)
    for _ in range(300):
        loop.call_soon(lambda: None)
    loop.call_soon(slow_callback)
    for _ in range(20):
        loop.call_soon(lambda: None)
    loop.call_soon(loop.stop)
    loop.run_forever()
    stats = loop.stats()
    first = stats["slowest_callback"]
    assert 0.025 <= stats["slowest_callback_seconds"] < 10
    assert "slow_callback" in first or (first.startswith("<one of ") and " callbacks timed together, the first <"
                                        in first), first
    assert stats["callback_seconds"] >= stats["slowest_callback_seconds"]

    # Within the next 64 handles after a slow span: timed alone. It must outlast the first run's slowest, which a
    # loaded machine can stretch past slow_callback's own 30 ms (the span descheduled).
    longer = max(0.06, stats["slowest_callback_seconds"] + 0.03)
    loop.call_soon(busy, longer)
    loop.call_soon(loop.stop)
    loop.run_forever()
    stats = loop.stats()
    assert "busy" in stats["slowest_callback"], stats["slowest_callback"]
    assert longer - 0.005 <= stats["slowest_callback_seconds"] < 10


def test_time_between_runs_is_no_callbacks_time(loop):
    loop.set_stats(True)
    run_callbacks(loop, 5)
    time.sleep(0.05)                      # outside the loop, after cheap callbacks left a span open
    loop.call_soon(lambda: None)
    loop._run_once()
    time.sleep(0.05)
    run_callbacks(loop, 5)
    stats = loop.stats()
    assert stats["callbacks"] == 11
    assert stats["callback_seconds"] < 0.04, stats
    assert stats["slowest_callback_seconds"] < 0.04, stats


def test_io_dispatch_time_is_counted_while_timing(loop):
    loop.set_stats(True)
    assert loop.run_until_complete(asyncio.wait_for(_echo_once(), 10)) == b"ping"
    stats = loop.stats()
    assert stats["io_events"] > 0
    assert stats["io_seconds"] > 0.0


async def _echo_once():
    async def echo(reader, writer):
        writer.write(await reader.read(100))
        await writer.drain()
        writer.close()
    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.sockets[0].getsockname()[1])
    writer.write(b"ping")
    data = await reader.read(100)
    writer.close()
    server.close()
    await server.wait_closed()
    return data


def test_switching_timing_off_keeps_the_figures_and_stops_adding(loop):
    loop.set_stats(True)
    loop.call_soon(slow_callback)
    loop.call_soon(loop.stop)
    loop.run_forever()
    timed = loop.stats()
    loop.set_stats(False)
    loop.call_soon(busy, 0.04)
    loop.call_soon(loop.stop)
    loop.run_forever()
    after = loop.stats()
    assert after["timing"] is False
    assert after["callbacks"] == timed["callbacks"] + 2
    for key in ("callback_seconds", "slowest_callback_seconds", "slowest_callback"):
        assert after[key] == timed[key]


async def slow_coroutine():
    busy(0.03)


def test_a_slow_task_step_is_named_by_its_task(loop):
    loop.set_stats(True)
    loop.run_until_complete(loop.create_task(slow_coroutine(), name="the-slow-one"))
    slowest = loop.stats()["slowest_callback"]
    assert slowest.startswith("<Task") and "the-slow-one" in slowest and "slow_coroutine" in slowest


def test_slowest_callback_that_cancels_its_own_handle(loop):
    loop.set_stats(True)
    handles = []

    def cancels_itself():
        handles[0].cancel()
        busy(0.02)
    handles.append(loop.call_soon(cancels_itself))
    loop.call_soon(loop.stop)
    loop.run_forever()
    stats = loop.stats()
    assert "cancels_itself" in stats["slowest_callback"]
    assert stats["slowest_callback_seconds"] >= 0.015


def test_timing_together_with_debug_mode(loop):
    loop.set_debug(True)
    loop.set_stats(True)
    loop.slow_callback_duration = 10.0        # no slow-callback warning in the log
    loop.call_soon(slow_callback)
    loop.call_soon(loop.stop)
    loop.run_forever()
    stats = loop.stats()
    assert "slow_callback" in stats["slowest_callback"]
    assert "created at" in stats["slowest_callback"]     # debug mode's repr, with where it was scheduled


def test_an_exception_in_a_timed_callback_still_goes_to_the_handler(loop):
    loop.set_stats(True)
    errors = []
    loop.set_exception_handler(lambda lp, context: errors.append(context["exception"]))

    def fails():
        busy(0.01)
        raise ValueError("boom")
    loop.call_soon(fails)
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert [type(e) for e in errors] == [ValueError]
    assert "fails" in loop.stats()["slowest_callback"]


def test_keyboard_interrupt_from_a_timed_callback_stops_the_loop(loop):
    loop.set_stats(True)

    def interrupt():
        busy(0.01)
        raise KeyboardInterrupt
    loop.call_soon(interrupt)
    with pytest.raises(KeyboardInterrupt):
        loop.run_forever()
    assert "interrupt" in loop.stats()["slowest_callback"]


@pytest.mark.parametrize("value", [1, 0, "yes", None, 1.0, [True]])
def test_set_stats_takes_only_a_bool(loop, value):
    with pytest.raises(TypeError, match="True or False"):
        loop.set_stats(value)
    assert loop.stats()["timing"] is False


def test_set_stats_argument_count(loop):
    with pytest.raises(TypeError):
        loop.set_stats()
    with pytest.raises(TypeError):
        loop.set_stats(True, True)
    with pytest.raises(TypeError):
        loop.stats(True)


def test_closed_loop_refuses_set_stats_and_keeps_its_figures(loop):
    loop.set_stats(True)
    run_callbacks(loop, 3)
    loop.close()
    with pytest.raises(RuntimeError, match="closed"):
        loop.set_stats(True)
    with pytest.raises(RuntimeError, match="closed"):
        loop.set_stats(False)
    stats = loop.stats()
    assert stats["callbacks"] == 3
    assert stats["timing"] is True


def test_stats_returns_a_new_dict_each_time(loop):
    first = loop.stats()
    first["callbacks"] = 1000
    assert loop.stats()["callbacks"] == 0
    assert loop.stats() is not loop.stats()


@pytest.mark.parametrize("value, timing", [("1", True), ("yes", True), ("0", False), ("", False)])
def test_environment_variable_switches_timing_on(backend, value, timing):
    code = "import zloop, sys; loop = zloop.new_event_loop(); print(loop.stats()['timing']); loop.close()"
    done = subprocess.run([sys.executable, "-c", code], env=python_env({"ZLOOP_BACKEND": backend,
                                                                         "ZLOOP_STATS": value}),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(timing)


def test_timing_from_the_environment_starts_at_creation(backend):
    # One iteration straight after creation (no run_forever): its poll lap starts at the loop's creation, not at 0.
    code = ("import zloop; loop = zloop.new_event_loop(); loop.call_soon(lambda: None); "
            "loop._run_once(); s = loop.stats(); print(s['iterations'], s['callbacks'], s['poll_seconds']); "
            "loop.close()")
    env = python_env({"ZLOOP_BACKEND": backend, "ZLOOP_STATS": "1"})
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    iterations, callbacks, poll_seconds = done.stdout.split()
    assert (iterations, callbacks) == ("1", "1")
    assert 0.0 <= float(poll_seconds) < 5.0


PROGRAM = textwrap.dedent("""
    import asyncio, sys

    async def main():
        for _ in range(5):
            await asyncio.sleep(0)
        for _ in range(20):   # a loaded machine can deschedule the loop past one short timer: it then never blocks
            await asyncio.sleep(0.005)

    asyncio.run(main())
    print("args", sys.argv[1:])
""")


def run_with_stats(tmp_path, program, *args, backend=None):
    """python -m zloop run [--backend B] --stats prog.py args..., in a child."""
    script = tmp_path / "prog.py"
    script.write_text(program)
    choice = ["--backend", backend] if backend else []
    return subprocess.run([sys.executable, "-m", "zloop", "run", *choice, "--stats", str(script), *args],
                          env=python_env(), capture_output=True, text=True, timeout=60)


def test_run_stats_prints_the_stats_at_exit(tmp_path, backend):
    done = run_with_stats(tmp_path, PROGRAM, "--stats", backend=backend)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "args ['--stats']"      # after the program, --stats is the program's
    assert f"zloop stats: loop 1 ({backend}, closed)" in done.stderr
    lines = dict(line.split(None, 1) for line in done.stderr.splitlines()[1:])
    assert int(lines["callbacks"]) >= 7
    assert int(lines["timers_fired"]) >= 1
    assert float(lines["poll_seconds"]) > 0.0
    assert lines["slowest_callback"].startswith("<")


def test_run_stats_prints_even_when_the_program_fails(tmp_path):
    done = run_with_stats(tmp_path, "import asyncio\nasyncio.run(asyncio.sleep(0))\nraise SystemExit(3)\n")
    assert done.returncode == 3
    assert "zloop stats: loop 1" in done.stderr


def test_run_stats_without_a_loop(tmp_path):
    done = run_with_stats(tmp_path, "print('hi')\n")
    assert done.returncode == 0
    assert "made no zloop loop" in done.stderr


# ---------------------------------------------------------------- Prometheus

def test_prometheus_exporter(loop):
    prometheus_client = pytest.importorskip("prometheus_client")
    from zloop.prometheus import LoopStatsCollector
    registry = prometheus_client.CollectorRegistry()
    loop.set_stats(True)
    registry.register(LoopStatsCollector(loop, name="api"))
    loop.call_soon(slow_callback)
    loop.call_later(0.01, loop.stop)
    loop.run_forever()
    stats = loop.stats()
    text = prometheus_client.generate_latest(registry).decode()
    assert f'zloop_callbacks_total{{loop="api"}} {float(stats["callbacks"])}' in text
    assert f'zloop_timers_fired_total{{loop="api"}} {float(stats["timers_fired"])}' in text
    assert f'zloop_iterations_total{{loop="api"}} {float(stats["iterations"])}' in text
    assert 'zloop_timing{loop="api"} 1.0' in text
    assert registry.get_sample_value("zloop_callback_seconds_total", {"loop": "api"}) == stats["callback_seconds"]
    slowest = registry.get_sample_value("zloop_slowest_callback_seconds",
                                        {"loop": "api", "callback": stats["slowest_callback"]})
    assert slowest == stats["slowest_callback_seconds"] >= 0.025
    # A scrape reads the loop afresh.
    run_callbacks(loop, 4)
    assert registry.get_sample_value("zloop_callbacks_total", {"loop": "api"}) == stats["callbacks"] + 4


def test_prometheus_exporter_refuses_what_is_not_a_zloop_loop():
    pytest.importorskip("prometheus_client")
    from zloop.prometheus import LoopStatsCollector
    plain = asyncio.new_event_loop()
    try:
        with pytest.raises(TypeError, match="zloop loop"):
            LoopStatsCollector(plain)
    finally:
        plain.close()
