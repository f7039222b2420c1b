# tests/test_backends.py — backend selection: zloop.backends(), default_backend(), loop.get_backend(),
# new_event_loop(backend=...), the ZLOOP_BACKEND override (in-process and in a child), unknown names.

import asyncio

import pytest

import zloop

from conftest import BACKENDS

KNOWN = {"native", "uv", "event", "uring"}

pytestmark = pytest.mark.zloop_only


def test_backends_list():
    names = zloop.backends()
    assert isinstance(names, list)
    assert names, "no backend compiled in"
    assert all(isinstance(n, str) for n in names)
    assert len(set(names)) == len(names)
    assert "native" in names
    assert set(names) <= KNOWN
    assert zloop.backends() is not names or names == zloop.backends()  # a fresh list or an equal one


def test_backends_list_is_not_shared_state():
    names = zloop.backends()
    names.append("bogus")
    assert "bogus" not in zloop.backends()


def test_default_backend_is_compiled_in():
    assert zloop.default_backend() in zloop.backends()


def test_get_backend(loop, backend):
    assert loop.get_backend() == backend
    assert backend in repr(loop)


def test_get_backend_after_close(loop, backend):
    loop.close()
    assert loop.get_backend() == backend


def test_new_event_loop_without_override_uses_default(monkeypatch):
    monkeypatch.delenv("ZLOOP_BACKEND", raising=False)
    lp = zloop.new_event_loop()
    try:
        assert lp.get_backend() == zloop.default_backend()
    finally:
        lp.close()


def test_empty_env_means_default(monkeypatch):
    monkeypatch.setenv("ZLOOP_BACKEND", "")
    lp = zloop.new_event_loop()
    try:
        assert lp.get_backend() == zloop.default_backend()
    finally:
        lp.close()


def test_env_override_in_process(backend, monkeypatch):
    monkeypatch.setenv("ZLOOP_BACKEND", backend)
    lp = zloop.new_event_loop()
    try:
        assert lp.get_backend() == backend
        assert lp.run_until_complete(asyncio.sleep(0.001, "ok")) == "ok"
    finally:
        lp.close()


def test_argument_beats_env(backend, monkeypatch):
    monkeypatch.setenv("ZLOOP_BACKEND", "no-such-backend")
    lp = zloop.new_event_loop(backend=backend)
    try:
        assert lp.get_backend() == backend
    finally:
        lp.close()


def test_loop_class_accepts_backend(backend):
    lp = zloop.Loop(backend)
    try:
        assert lp.get_backend() == backend
    finally:
        lp.close()


# A loop whose construction fails must raise and then be finalized harmlessly. These run in a child process
# so that a crash while finalizing the half-built loop fails one test instead of the whole run.
CONSTRUCT = """
import gc, os, zloop
try:
    {expr}
except Exception as exc:
    print(type(exc).__name__ + ": " + str(exc), flush=True)
else:
    print("no exception", flush=True)
gc.collect()
print("survived", flush=True)
"""


def construct_in_child(python_run, expr, env=None):
    proc = python_run(CONSTRUCT.format(expr=expr), env=env)
    lines = proc.stdout.strip().splitlines()
    assert proc.returncode == 0 and lines[-1:] == ["survived"], (
        f"the child died (returncode {proc.returncode}) after {lines!r}:\n{proc.stderr[-2000:]}")
    return lines[0]


@pytest.mark.parametrize("name", ["bogus", "NATIVE", "epoll", "native ", "uvloop", ""])
def test_unknown_backend_argument(python_run, name):
    outcome = construct_in_child(python_run, f"zloop.new_event_loop(backend={name!r})")
    assert outcome.startswith("ValueError: ")
    for available in BACKENDS:
        assert available in outcome, f"{available!r} not named in {outcome!r}"


@pytest.mark.parametrize("name", sorted(KNOWN - set(BACKENDS)) or ["(all compiled)"])
def test_known_but_not_compiled_backend(python_run, name):
    if name == "(all compiled)":
        pytest.skip("every backend is compiled in")
    outcome = construct_in_child(python_run, f"zloop.new_event_loop(backend={name!r})")
    assert outcome.startswith("ValueError: ")
    assert all(b in outcome for b in BACKENDS)


def test_unknown_backend_env(python_run):
    outcome = construct_in_child(python_run, "zloop.new_event_loop()", env={"ZLOOP_BACKEND": "bogus"})
    assert outcome.startswith("ValueError: ")
    assert "bogus" in outcome
    assert all(b in outcome for b in BACKENDS)


def test_non_string_backend(python_run):
    outcome = construct_in_child(python_run, "zloop.new_event_loop(backend=123)")
    assert outcome.startswith("TypeError: ")


@pytest.mark.parametrize("call", ["get_backend()", "call_soon(print)", "call_later(1, print)", "is_closed()",
                                  "stop()", "time()", "add_reader(0, print)"])
def test_uninitialised_core_does_not_crash(python_run, call):
    # LoopCore.__new__ without __init__ (what a failed __init__ leaves behind): methods raise or answer.
    outcome = construct_in_child(python_run, f"zloop._zloop.LoopCore.__new__(zloop._zloop.LoopCore).{call}")
    assert outcome.startswith(("no exception", "RuntimeError", "ValueError", "TypeError")), outcome


def test_failed_construction_in_process(python_run):
    # The same, in this process, once the child shows it is safe.
    construct_in_child(python_run, "zloop.new_event_loop(backend='bogus')")
    with pytest.raises(ValueError):
        zloop.new_event_loop(backend="bogus")
    import gc
    gc.collect()


PROBE = """
import asyncio, zloop
lp = zloop.new_event_loop()
try:
    print(lp.get_backend(), lp.run_until_complete(asyncio.sleep(0.001, "ran")))
finally:
    lp.close()
"""


def test_env_override_in_child_process(backend, python_run):
    proc = python_run(PROBE, env={"ZLOOP_BACKEND": backend})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [backend, "ran"]


def test_default_in_child_process(python_run):
    proc = python_run(PROBE)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [zloop.default_backend(), "ran"]


def test_unknown_env_in_child_process(python_run):
    proc = python_run(PROBE, env={"ZLOOP_BACKEND": "bogus"})
    assert proc.returncode == 1, f"returncode {proc.returncode}: {proc.stderr[-2000:]}"
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("ValueError")
    assert "bogus" in last
    assert all(b in last for b in BACKENDS)


def test_zloop_run_uses_env_backend_in_child(backend, python_run):
    code = ("import asyncio, zloop\n"
            "async def main():\n"
            "    return asyncio.get_running_loop().get_backend()\n"
            "print(zloop.run(main()))\n")
    proc = python_run(code, env={"ZLOOP_BACKEND": backend})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == backend


def test_backends_are_independent():
    # Loops on every backend alive at once in one thread, used in turn.
    loops = [zloop.new_event_loop(backend=name) for name in BACKENDS]
    try:
        for lp in loops:
            assert lp.run_until_complete(asyncio.sleep(0.001, lp.get_backend())) == lp.get_backend()
    finally:
        for lp in loops:
            lp.close()


def test_backend_list_takes_the_first_that_works(backend, python_run):
    # ZLOOP_BACKEND=uring,native: names not compiled in (or whose create() fails) are passed over.
    proc = python_run(PROBE, env={"ZLOOP_BACKEND": f"no-such-backend,{backend},native"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [backend, "ran"]


def test_backend_list_of_unknown_names(python_run):
    outcome = construct_in_child(python_run, "zloop.new_event_loop(backend='bogus,nope')")
    assert outcome.startswith("ValueError: ") and "'bogus,nope'" in outcome
    assert all(b in outcome for b in BACKENDS)
