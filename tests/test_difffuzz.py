# tests/test_difffuzz.py — the differential fuzzer's fixed-seed, fixed-budget run (every compiled backend against stock
# asyncio, tests/difffuzz), and checks that its harness catches what it is there to catch: differences, crashes, hangs.
# The long run is `make fuzz` (docs/reliability.md, "Differential fuzzer").

import os
import signal

import pytest

pytest.importorskip("hypothesis")

from hypothesis import seed  # noqa: E402
from hypothesis.stateful import run_state_machine_as_test  # noqa: E402

from conftest import BACKENDS, python_env  # noqa: E402
from difffuzz.machine import CI_FEATURES, COUNTERS, make_machine, machine_settings  # noqa: E402
from difffuzz.runner import Fleet, compare  # noqa: E402
from difffuzz.worker import memory_cap_applies  # noqa: E402

# The CI budget: about 20 s on the 2-core development machine, most of it in run steps (sleeping).
CI_SEED = 20261205
CI_EXAMPLES = 60
CI_STEPS = 30


@pytest.fixture
def fleet():
    fleet = Fleet(BACKENDS, env=python_env(), timeout=10.0)
    yield fleet
    fleet.close()


def test_fixed_seed_run_finds_no_difference_outside_the_accepted_list(fleet):
    before = dict(COUNTERS)
    machine = make_machine(fleet, CI_FEATURES)
    run_state_machine_as_test(seed(CI_SEED)(machine), settings=machine_settings(CI_EXAMPLES, CI_STEPS))
    assert COUNTERS["sequences"] - before["sequences"] >= CI_EXAMPLES
    assert COUNTERS["steps"] - before["steps"] > CI_EXAMPLES * 5


def test_every_loop_kind_replays_the_same_program_alike(fleet):
    program = [("pair", "stream"), ("soon", ("record",)), ("later", ("float", 0.02), ("raise",)),
               ("stream", (0, 0), ()), ("send", (0, 1), ("bytes", b"ping")), ("call", 3, "write", [("bytes", b"x")]),
               ("run", 0.08), ("drain", (0, 1)), ("call", 3, "close", []), ("run", 0.08)]
    outcomes = fleet.run(program)
    assert set(outcomes) == {"asyncio", *BACKENDS}
    assert compare(outcomes) == []
    events, streams = outcomes["asyncio"][1]
    assert ("cb", (1,)) in events and ("cb", (2,)) in events and ("exception_handler", "CallbackRaised") in events
    assert streams[("t", 3)] == b"ping" and streams[("peer", (0, 1))] == b"x"
    assert ("lost", 3, None) in events and events[-1] == ("fds_left_open", 0)


def test_a_difference_is_reported():
    same = ("ok", ([("op", 0, "soon", None), ("cb", (0,))], {}))
    other = ("ok", ([("op", 0, "soon", None)], {}))
    found = compare({"asyncio": same, "native": same, "uv": other})
    assert [kind for kind, _, _ in found] == ["uv"]
    assert "('cb', (0,))" in found[0][2]


def test_a_worker_that_crashes_is_a_finding_and_is_replaced(fleet):
    outcomes = fleet.run([("selftest_signal", signal.SIGSEGV)])
    # Under make check-asan the workers inherit the ASan runtime, whose SEGV handler reports and aborts.
    killer = "SIGABRT" if "libasan" in os.environ.get("LD_PRELOAD", "") else "SIGSEGV"
    assert all(o[:2] == ("crash", f"killed by {killer}") for o in outcomes.values())
    crashed_alone = dict(outcomes, asyncio=("ok", ([], {})))
    assert len(compare(crashed_alone)) == len(BACKENDS)
    assert all(o[0] == "ok" for o in fleet.run([("pair", "stream")]).values())


def test_a_worker_that_hangs_is_a_finding_and_is_replaced():
    fleet = Fleet(BACKENDS[:1], env=python_env(), timeout=1.0)
    try:
        outcomes = fleet.run([("selftest_sleep", 60)])
        assert all(o[0] == "hang" for o in outcomes.values())
        assert all(o[0] == "ok" for o in fleet.run([("pair", "stream")]).values())
    finally:
        fleet.close()


def test_the_workers_memory_cap_is_off_under_asan_and_valgrind_only():
    assert memory_cap_applies({})
    assert memory_cap_applies({"LD_PRELOAD": "/usr/lib/libfoo.so", "ZLOOP_FUZZ_NO_MEMORY_CAP": "0"})
    assert not memory_cap_applies({"LD_PRELOAD": "/usr/lib/x86_64-linux-gnu/libasan.so.8"})
    assert not memory_cap_applies({"LD_PRELOAD": "/usr/libexec/valgrind/vgpreload_memcheck-amd64-linux.so"})
    assert not memory_cap_applies({"ZLOOP_FUZZ_NO_MEMORY_CAP": "1"})
