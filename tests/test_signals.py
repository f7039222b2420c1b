# tests/test_signals.py — add_signal_handler/remove_signal_handler: real signals run the handler in the loop
# (also when the loop is blocked with no timers), argument checks as asyncio's, main thread only, cleanup on
# close, the wakeup fd left as found; Ctrl-C stops zloop.run() and run_forever() cleanly in a child process.

import asyncio
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from conftest import TIMEOUT, WAKE_BOUND, python_env

pytestmark = pytest.mark.skipif(threading.current_thread() is not threading.main_thread(),
                                reason="signal tests need the main thread")


def noop(*args):
    pass


def current_wakeup_fd():
    fd = signal.set_wakeup_fd(-1)
    signal.set_wakeup_fd(fd)
    return fd


def test_signal_runs_handler_in_the_loop(loop, run_forever):
    got = []

    def handler(*args):
        got.append((args, asyncio.get_running_loop() is loop))
        loop.stop()

    loop.add_signal_handler(signal.SIGUSR1, handler, "a", 1)
    loop.call_soon(os.kill, os.getpid(), signal.SIGUSR1)
    run_forever()
    assert got == [(("a", 1), True)]
    assert loop.remove_signal_handler(signal.SIGUSR1) is True


def test_signal_handler_runs_while_the_loop_never_blocks(loop, run):
    """The loop skips non-blocking polls while only the signal socket is watched and no handler is set; once a
    handler is set, a loop that always has work queued must still see the signal."""
    got = []
    loop.add_signal_handler(signal.SIGUSR1, got.append, "signal")

    async def busy():
        for i in range(100_000):
            if i == 10:
                os.kill(os.getpid(), signal.SIGUSR1)
            if got:
                return i
            await asyncio.sleep(0)
        return None

    try:
        assert run(busy()) is not None, "the signal handler did not run while the loop was busy"
    finally:
        loop.remove_signal_handler(signal.SIGUSR1)
    assert got == ["signal"]


def test_busy_loop_without_signal_handlers_still_takes_ctrl_c(loop):
    async def busy():
        for i in range(100_000):
            if i == 10:
                os.kill(os.getpid(), signal.SIGINT)
            await asyncio.sleep(0)

    with pytest.raises(KeyboardInterrupt):
        loop.run_until_complete(busy())


def test_signal_wakes_a_loop_blocked_without_timers(loop):
    got = []
    rsock, wsock = socket.socketpair()
    started = threading.Event()
    done = threading.Event()

    def handler():
        got.append("signal")
        loop.stop()

    def rescue():
        rsock.recv(10)
        got.append("rescued")
        loop.stop()

    def killer():
        if started.wait(TIMEOUT):
            time.sleep(0.05)  # let the loop block (correctness does not depend on it)
            os.kill(os.getpid(), signal.SIGUSR1)
        if not done.wait(WAKE_BOUND):
            wsock.send(b"x")

    try:
        loop.add_signal_handler(signal.SIGUSR1, handler)
        loop.add_reader(rsock, rescue)
        loop.call_soon(started.set)
        t = threading.Thread(target=killer)
        t.start()
        loop.run_forever()  # no timer at all: only the signal (or the rescue) ends it
        done.set()
        t.join(TIMEOUT)
        loop.remove_reader(rsock)
    finally:
        rsock.close()
        wsock.close()
    assert got == ["signal"]


def test_signal_handler_exception_goes_to_the_exception_handler(loop, run_forever):
    contexts = []
    loop.set_exception_handler(lambda lp, c: contexts.append(c))

    def handler():
        loop.call_soon(loop.stop)
        raise ValueError("in signal handler")

    loop.add_signal_handler(signal.SIGUSR1, handler)
    loop.call_soon(os.kill, os.getpid(), signal.SIGUSR1)
    run_forever()
    assert len(contexts) == 1
    assert isinstance(contexts[0]["exception"], ValueError)


def test_signal_handlers_leak_no_fds(backend):
    from conftest import new_loop
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(20):
        lp = new_loop(backend)
        try:
            lp.add_signal_handler(signal.SIGUSR1, noop)
            lp.run_until_complete(asyncio.sleep(0))
            lp.remove_signal_handler(signal.SIGUSR1)
            lp.add_signal_handler(signal.SIGUSR2, noop)
        finally:
            lp.close()
    assert len(os.listdir("/proc/self/fd")) == before


def test_several_signals_and_replacement(loop, run_forever):
    got = []
    loop.add_signal_handler(signal.SIGUSR1, got.append, "old")
    loop.add_signal_handler(signal.SIGUSR1, got.append, "usr1")  # replaces
    loop.add_signal_handler(signal.SIGUSR2, got.append, "usr2")

    def fire():
        os.kill(os.getpid(), signal.SIGUSR1)
        os.kill(os.getpid(), signal.SIGUSR2)

    def check():
        if len(got) >= 2:
            loop.stop()
        else:
            loop.call_later(0.005, check)

    loop.call_soon(fire)
    loop.call_soon(check)
    run_forever()
    assert sorted(got) == ["usr1", "usr2"]


def test_remove_signal_handler_restores_default(loop):
    loop.add_signal_handler(signal.SIGUSR1, noop)
    assert signal.getsignal(signal.SIGUSR1) not in (signal.SIG_DFL, signal.SIG_IGN)
    assert loop.remove_signal_handler(signal.SIGUSR1) is True
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL
    assert loop.remove_signal_handler(signal.SIGUSR1) is False


def test_remove_sigint_handler_restores_default_int_handler(loop):
    loop.add_signal_handler(signal.SIGINT, noop)
    assert loop.remove_signal_handler(signal.SIGINT) is True
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_close_removes_signal_handlers(loop):
    loop.add_signal_handler(signal.SIGUSR1, noop)
    loop.add_signal_handler(signal.SIGUSR2, noop)
    loop.close()
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL
    assert signal.getsignal(signal.SIGUSR2) == signal.SIG_DFL
    assert current_wakeup_fd() == -1


def test_wakeup_fd_reset_when_last_handler_removed(loop):
    assert current_wakeup_fd() == -1
    loop.add_signal_handler(signal.SIGUSR1, noop)
    assert current_wakeup_fd() != -1
    loop.remove_signal_handler(signal.SIGUSR1)
    assert current_wakeup_fd() == -1


def test_run_forever_leaves_wakeup_fd_as_found(loop, run):
    assert current_wakeup_fd() == -1
    run(asyncio.sleep(0))
    assert current_wakeup_fd() == -1
    r, w = socket.socketpair()
    try:
        w.setblocking(False)
        signal.set_wakeup_fd(w.fileno())
        run(asyncio.sleep(0))
        assert current_wakeup_fd() == w.fileno()
    finally:
        signal.set_wakeup_fd(-1)
        r.close()
        w.close()


@pytest.mark.parametrize("sig", [0, -1, signal.NSIG, signal.NSIG + 100, 10000])
def test_invalid_signal_number(loop, sig):
    with pytest.raises(ValueError):
        loop.add_signal_handler(sig, noop)
    with pytest.raises(ValueError):
        loop.remove_signal_handler(sig)


@pytest.mark.parametrize("sig", ["SIGUSR1", 1.5, None, b"10"])
def test_non_int_signal(loop, sig):
    with pytest.raises(TypeError):
        loop.add_signal_handler(sig, noop)
    with pytest.raises(TypeError):
        loop.remove_signal_handler(sig)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGSTOP], ids=["SIGKILL", "SIGSTOP"])
def test_uncatchable_signal(loop, sig):
    with pytest.raises(RuntimeError, match=f"sig {int(sig)} cannot be caught"):
        loop.add_signal_handler(sig, noop)
    # Nothing stays registered: the wakeup fd is not left set either.
    assert current_wakeup_fd() == -1
    assert loop.remove_signal_handler(sig) is False


def test_signal_enum_is_accepted(loop):
    loop.add_signal_handler(signal.Signals.SIGUSR1, noop)
    assert loop.remove_signal_handler(signal.Signals.SIGUSR1) is True


async def a_coroutine_function():
    pass


def test_coroutine_callback_rejected(loop):
    with pytest.raises(TypeError):
        loop.add_signal_handler(signal.SIGUSR1, a_coroutine_function)
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL


def test_closed_loop(loop):
    loop.close()
    with pytest.raises(RuntimeError, match="Event loop is closed"):
        loop.add_signal_handler(signal.SIGUSR1, noop)


def test_add_signal_handler_from_another_thread(loop):
    errors = []

    def other():
        try:
            loop.add_signal_handler(signal.SIGUSR1, noop)
            errors.append("no error")
        except RuntimeError as exc:
            errors.append(exc)
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=other)
    t.start()
    t.join(TIMEOUT)
    assert len(errors) == 1 and isinstance(errors[0], RuntimeError), errors
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL


# ------------------------------------------------------------------ Ctrl-C in a child process

CTRL_C_SCRIPTS = {
    "run-sleep": """
import asyncio, sys, {mod}
async def main():
    print("ready", flush=True)
    await asyncio.sleep(3600)
{run}(main())
""",
    "run-no-timers": """
import asyncio, sys, {mod}
async def main():
    print("ready", flush=True)
    await asyncio.Event().wait()
{run}(main())
""",
    "run_forever": """
import asyncio, sys, {mod}
loop = {new_loop}()
loop.call_soon(lambda: print("ready", flush=True))
try:
    loop.run_forever()
finally:
    loop.close()
""",
}


def ctrl_c(kind, module, backend):
    if module == "zloop":
        code = CTRL_C_SCRIPTS[kind].format(mod="zloop", run="zloop.run", new_loop="zloop.new_event_loop")
        env = python_env({"ZLOOP_BACKEND": backend})
    else:
        code = CTRL_C_SCRIPTS[kind].format(mod="asyncio", run="asyncio.run", new_loop="asyncio.new_event_loop")
        env = python_env()
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, universal_newlines=True)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 6 * TIMEOUT)
        assert ready, "the child did not start"
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(0.1)  # let it block in its poll (correctness does not depend on it)
        started = time.monotonic()
        proc.send_signal(signal.SIGINT)
        try:
            out, err = proc.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{module} did not stop within {TIMEOUT} s of SIGINT ({kind})")
        return proc.returncode, err, time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


@pytest.mark.zloop_only
@pytest.mark.parametrize("kind", list(CTRL_C_SCRIPTS))
def test_ctrl_c_stops_cleanly(backend, kind):
    expected_rc, expected_err, _ = ctrl_c(kind, "asyncio", backend)
    rc, err, elapsed = ctrl_c(kind, "zloop", backend)
    assert rc == expected_rc, f"asyncio exits with {expected_rc}, zloop with {rc}:\n{err}"
    assert "KeyboardInterrupt" in err
    last = err.strip().splitlines()[-1]
    assert last == expected_err.strip().splitlines()[-1]
    for noise in ("Exception ignored", "unclosed", "was never awaited", "Task was destroyed"):
        assert noise not in err, err
    assert elapsed < TIMEOUT
