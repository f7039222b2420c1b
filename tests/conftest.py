# tests/conftest.py — fixtures shared by the zloop pytest suite: a `loop` on every compiled backend,
# bounded run helpers, a subprocess helper, and guards that leave signal state and running loops clean.
#
# Every loop test takes the `loop` (or `backend`) fixture, so it runs once per name in zloop.backends().
# ZLOOP_TEST_CONTROL=1 adds stock asyncio as an extra "backend": the suite then checks itself against the
# reference implementation (tests marked zloop_only are skipped for it).

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

collect_ignore = ["c", "conformance", "valgrind", "frameworks", "packaging"]  # packaging: scripts/test.sh


def _time_scale():
    """How much slower than native this run is: ZLOOP_TEST_TIME_SCALE, or a guess under valgrind / ASan."""
    value = os.environ.get("ZLOOP_TEST_TIME_SCALE")
    if value:
        return max(1.0, float(value))
    preload = os.environ.get("LD_PRELOAD", "")
    if "vgpreload" in preload:
        return 30.0
    if "libasan" in preload:
        return 3.0
    return 1.0


TIME_SCALE = _time_scale()
# Upper bound for anything that must finish; generous, a loaded 2-core machine must never hit it.
TIMEOUT = 10.0 * TIME_SCALE
# Upper bound for a wake-up that must happen (thread-safe call, signal, timer): generous, never a precision check.
WAKE_BOUND = 5.0 * TIME_SCALE


def _import_zloop():
    # The lead rebuilds the extension in place from time to time; a half-written .so fails to import briefly.
    deadline = time.monotonic() + 30.0
    while True:
        try:
            import zloop
            return zloop
        except ImportError:
            if time.monotonic() > deadline:
                raise
            for name in [m for m in sys.modules if m == "zloop" or m.startswith("zloop.")]:
                del sys.modules[name]
            time.sleep(1.0)


zloop = _import_zloop()

# ZLOOP_TEST_SKIP_BACKENDS=native,uv (a comma list): leave backends out, e.g. to run one under valgrind.
BACKENDS = [b for b in zloop.backends() if b not in os.environ.get("ZLOOP_TEST_SKIP_BACKENDS", "").split(",")]
CONTROL = os.environ.get("ZLOOP_TEST_CONTROL", "") not in ("", "0")
LOOP_KINDS = BACKENDS + (["asyncio"] if CONTROL else [])
# "uring+completion": the uring backend with ZLOOP_URING_COMPLETION=1 (stream transports through completions), a
# kind of tests/test_stream_completion.py. The whole suite runs on it with ZLOOP_URING_COMPLETION=1 -k uring.
COMPLETION_KIND = "uring+completion"
COMPLETION_KINDS = [COMPLETION_KIND] if "uring" in BACKENDS else []

# Where the zloop package lives, so subprocesses import the same build.
ZLOOP_PATH = os.path.dirname(os.path.dirname(os.path.abspath(zloop.__file__)))


def pytest_configure(config):
    config.addinivalue_line("markers", "zloop_only: uses zloop-specific API; skipped for the asyncio control")


def pytest_report_header(config):
    return f"zloop backends: {', '.join(BACKENDS)} (default {zloop.default_backend()}); control: {CONTROL}"


def new_loop(kind):
    """A fresh loop of the given kind: a zloop backend name, or 'asyncio' for the control."""
    if kind == "asyncio":
        return asyncio.new_event_loop()
    if kind == COMPLETION_KIND:
        saved = os.environ.get("ZLOOP_URING_COMPLETION")
        os.environ["ZLOOP_URING_COMPLETION"] = "1"   # read when the loop is made
        try:
            return zloop.new_event_loop(backend="uring")
        finally:
            if saved is None:
                del os.environ["ZLOOP_URING_COMPLETION"]
            else:
                os.environ["ZLOOP_URING_COMPLETION"] = saved
    return zloop.new_event_loop(backend=kind)


@pytest.fixture(params=LOOP_KINDS)
def backend(request):
    """The name of a compiled backend (or 'asyncio' under ZLOOP_TEST_CONTROL=1)."""
    if request.param == "asyncio" and request.node.get_closest_marker("zloop_only"):
        pytest.skip("zloop-specific")
    return request.param


@pytest.fixture
def loop(backend):
    """A new loop on `backend`, closed after the test."""
    lp = new_loop(backend)
    try:
        yield lp
    finally:
        if lp.is_running():  # a broken test left it running from another thread: nothing safe to do
            lp.call_soon_threadsafe(lp.stop)
        else:
            lp.close()
        asyncio.set_event_loop(None)


@pytest.fixture
def make_loop(backend):
    """A factory for extra loops on `backend`; all are closed after the test."""
    made = []

    def factory():
        lp = new_loop(backend)
        made.append(lp)
        return lp

    yield factory
    for lp in made:
        if not lp.is_running():
            lp.close()


@pytest.fixture
def is_zloop(backend):
    return backend != "asyncio"


@pytest.fixture
def run(loop):
    """run(awaitable, timeout=TIMEOUT): run_until_complete with an upper bound."""
    def _run(aw, timeout=TIMEOUT):
        return loop.run_until_complete(asyncio.wait_for(aw, timeout))
    return _run


@pytest.fixture
def run_forever(loop):
    """run_forever(timeout=TIMEOUT): run the loop until something calls stop(); fail if nothing does in time."""
    def _run_forever(timeout=TIMEOUT):
        expired = []

        def expire():
            expired.append(True)
            loop.stop()

        guard = loop.call_later(timeout, expire)
        try:
            loop.run_forever()
        finally:
            guard.cancel()
        assert not expired, f"the loop was not stopped within {timeout} s"
    return _run_forever


def python_env(extra=None):
    """Environment for a child Python: imports this zloop, no inherited asyncio debug settings."""
    env = dict(os.environ)
    for key in ("PYTHONASYNCIODEBUG", "PYTHONDEVMODE", "ZLOOP_BACKEND", "ZLOOP_STATS", "PYTHONWARNINGS"):
        env.pop(key, None)
    # Under valgrind the child is not traced: keep its preload libraries out of the child.
    preload = [p for p in env.get("LD_PRELOAD", "").split(":") if p and "vgpreload" not in p]
    if preload:
        env["LD_PRELOAD"] = ":".join(preload)
    else:
        env.pop("LD_PRELOAD", None)
    env["PYTHONPATH"] = ZLOOP_PATH + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.update(extra or {})
    return env


@pytest.fixture
def python_run():
    """python_run(code, *args, env=None, timeout=60, flags=()): run code in a child Python, return CompletedProcess."""
    def _python_run(code, *args, env=None, timeout=60, flags=()):
        return subprocess.run([sys.executable, *flags, "-c", code, *args], env=python_env(env),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                              timeout=timeout)
    return _python_run


@pytest.fixture(autouse=True)
def _clean_process_state():
    """Fail a test that leaves a running loop behind; restore the signal handlers and wakeup fd it changed."""
    in_main = threading.current_thread() is threading.main_thread()
    watched = (signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2, signal.SIGALRM, signal.SIGHUP)
    saved = {sig: signal.getsignal(sig) for sig in watched} if in_main else {}
    wakeup = None
    if in_main:
        wakeup = signal.set_wakeup_fd(-1)
        signal.set_wakeup_fd(wakeup)
    yield
    running = asyncio._get_running_loop()
    if running is not None:
        asyncio.events._set_running_loop(None)
    if in_main:
        for sig, handler in saved.items():
            if handler is not None and signal.getsignal(sig) is not handler:
                signal.signal(sig, handler)
        with contextlib.suppress(ValueError, OSError):
            signal.set_wakeup_fd(wakeup)
    assert running is None, "the test left a loop registered as running in this thread"
