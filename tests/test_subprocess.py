# tests/test_subprocess.py — subprocess_exec / subprocess_shell and asyncio.create_subprocess_* on every backend:
# pipes, DEVNULL, STDOUT, fds and files; cwd, env, sessions, pass_fds, close_fds, preexec_fn, user/group/umask,
# process_group; the same errors as asyncio; returncode, wait, communicate, signals, kill with open pipes; 10 MiB of
# output, 100 concurrent children; child exits learnt by pidfd, by SIGCHLD and by polling in a non-main thread,
# children that exit before the loop looks; no zombie and no fd left behind (checked after every test).
# Under ZLOOP_TEST_CONTROL=1 the tests not marked zloop_only run on stock asyncio, the reference.

import asyncio
import gc
import os
import signal
import subprocess
import sys
import threading
import time
import warnings

import pytest

import zloop._subprocess as zsub
from conftest import TIMEOUT
from net_helpers import fd_count, watched

PY = sys.executable
PIPE = asyncio.subprocess.PIPE
PY311 = sys.version_info >= (3, 11)
HAVE_PIDFD = zsub._pidfd_works()

# A payload the child can rebuild without reading it: 10 MiB, every byte value.
TEN_MIB = 10 * 1024 * 1024
PATTERN_CODE = "import sys; sys.stdout.buffer.write(bytes(range(256)) * (10 * 1024 * 1024 // 256))"


def zombie_children():
    """Pids of this process's children in the Z (zombie) state, read from /proc."""
    me = os.getpid()
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] == "Z" and int(fields[1]) == me:
            found.append(int(name))
    return found


@pytest.fixture(params=["pidfd", "sigchld"])
def watch_mode(request, backend, monkeypatch):
    """How child exits are learnt: a pidfd, or SIGCHLD + waitpid(WNOHANG) (the fallback without pidfds)."""
    if request.param == "pidfd" and not HAVE_PIDFD:
        pytest.skip("no pidfd on this system")
    if request.param == "sigchld":
        if backend == "asyncio":
            pytest.skip("zloop's child watch")
        monkeypatch.setattr(zsub, "use_pidfd", False)
    return request.param


@pytest.fixture(autouse=True)
def no_leftovers(loop):
    """Every test: no zombie children, no fd and no watched fd left once it is over, no SIGCHLD handler left."""
    loop.run_until_complete(asyncio.sleep(0))
    gc.collect()
    zombies_before = set(zombie_children())
    fds_before = fd_count()
    watched_before = watched(loop)
    sigchld_before = signal.getsignal(signal.SIGCHLD)
    yield
    # Let pending callbacks (pipe closes after the last wait) run before counting.
    if not loop.is_closed():
        for _ in range(5):
            loop.run_until_complete(asyncio.sleep(0))
        assert watched(loop) == watched_before, "the loop still watches fds"
    gc.collect()
    assert set(zombie_children()) - zombies_before == set(), "zombie children left"
    assert fd_count() <= fds_before, f"{fd_count() - fds_before} fd(s) leaked"
    assert signal.getsignal(signal.SIGCHLD) == sigchld_before


def stock_outcome(coro_factory):
    """(exception type or None) of coro_factory(loop) on stock asyncio: the reference for error cases."""
    ref = asyncio.SelectorEventLoop()
    asyncio.set_event_loop(ref)  # 3.9-3.11: the child watcher attaches to the current loop
    try:
        ref.run_until_complete(asyncio.wait_for(coro_factory(ref), TIMEOUT))
    except BaseException as exc:  # noqa: B902 - any outcome is the reference
        return type(exc)
    finally:
        asyncio.set_event_loop(None)
        ref.close()
    return None


def outcome(loop, coro):
    try:
        loop.run_until_complete(asyncio.wait_for(coro, TIMEOUT))
    except BaseException as exc:  # noqa: B902
        return type(exc)
    return None


# ---------------------------------------------------------------------- the basics


def test_exec_stdout_and_returncode(loop, run, watch_mode):
    async def main():
        proc = await asyncio.create_subprocess_exec(PY, "-c", "print('out'); raise SystemExit(7)", stdout=PIPE)
        out = await proc.stdout.read()
        return out, await proc.wait(), proc.returncode

    assert run(main()) == (b"out\n", 7, 7)


def test_shell(loop, run, watch_mode):
    async def main():
        proc = await asyncio.create_subprocess_shell("echo $((6 * 7)); echo err >&2; exit 3",
                                                     stdout=PIPE, stderr=PIPE)
        out, err = await proc.communicate()
        return out, err, proc.returncode

    assert run(main()) == (b"42\n", b"err\n", 3)


def test_communicate_stdin(loop, run, watch_mode):
    async def main():
        proc = await asyncio.create_subprocess_exec(
            PY, "-c", "import sys; d = sys.stdin.buffer.read(); sys.stdout.buffer.write(d[::-1])",
            stdin=PIPE, stdout=PIPE)
        return await proc.communicate(b"0123456789" * 1000), proc.returncode

    (out, err), code = run(main())
    assert out == (b"0123456789" * 1000)[::-1] and err is None and code == 0


def test_communicate_large_both_ways(loop, run):
    payload = os.urandom(3 * 1024 * 1024)

    async def main():
        proc = await asyncio.create_subprocess_exec("cat", stdin=PIPE, stdout=PIPE)
        return await proc.communicate(payload), proc.returncode

    (out, _), code = run(main())
    assert out == payload and code == 0


def test_ten_mib_stdout(loop, run, watch_mode):
    async def main():
        proc = await asyncio.create_subprocess_exec(PY, "-c", PATTERN_CODE, stdout=PIPE)
        out, _ = await proc.communicate()
        return out, proc.returncode

    out, code = run(main())
    assert code == 0
    assert len(out) == TEN_MIB
    assert out == bytes(range(256)) * (TEN_MIB // 256)


def test_hundred_concurrent_children(loop, run, watch_mode):
    async def one(i):
        proc = await asyncio.create_subprocess_exec("/bin/sh", "-c", f"echo {i}; exit {i % 7}", stdout=PIPE)
        out, _ = await proc.communicate()
        return out, proc.returncode

    async def main():
        return await asyncio.gather(*[one(i) for i in range(100)])

    assert run(main(), timeout=TIMEOUT * 3) == [(b"%d\n" % i, i % 7) for i in range(100)]


def test_child_exits_before_loop_looks(loop, run, watch_mode):
    async def main():
        proc = await asyncio.create_subprocess_exec("true")
        time.sleep(0.3)  # blocks the loop: the child is a zombie before the loop polls again
        return await proc.wait()

    assert run(main()) == 0


@pytest.mark.zloop_only
@pytest.mark.parametrize("mode", ["pidfd", "sigchld", "timer"])
def test_watch_child_that_already_exited(loop, run, monkeypatch, mode):
    # The child is a zombie before the watch even starts: it is reaped and reported all the same.
    if mode == "pidfd" and not HAVE_PIDFD:
        pytest.skip("no pidfd")
    monkeypatch.setattr(zsub, "use_pidfd", mode == "pidfd")
    if mode == "timer":
        monkeypatch.setattr(zsub, "_in_main_thread", lambda: False)  # as if the loop ran in another thread
    popen = subprocess.Popen(["true"])
    deadline = time.monotonic() + TIMEOUT
    while popen.pid not in zombie_children():
        assert time.monotonic() < deadline
        time.sleep(0.01)

    async def main():
        done = loop.create_future()
        loop._child_watch().add(popen, done.set_result)
        return await done

    assert run(main()) == 0
    assert popen.returncode == 0


@pytest.mark.zloop_only
def test_timer_watch_in_a_thread(backend):
    # Without pidfds, a loop outside the main thread cannot have SIGCHLD: it polls the children on a timer.
    results = {}

    def in_thread():
        lp = zloop_new_loop(backend)
        try:
            async def main():
                procs = [await asyncio.create_subprocess_exec("/bin/sh", "-c", f"exit {i}") for i in range(20)]
                sleeper = await asyncio.create_subprocess_exec("sleep", "30", stdout=PIPE, stdin=PIPE)
                sleeper.kill()
                codes = [await p.wait() for p in procs]
                return codes, await sleeper.wait()

            results["value"] = lp.run_until_complete(asyncio.wait_for(main(), TIMEOUT))
        except BaseException as exc:  # noqa: B902
            results["error"] = exc
        finally:
            lp.close()

    saved = zsub.use_pidfd
    zsub.use_pidfd = False
    try:
        t = threading.Thread(target=in_thread)
        t.start()
        t.join(TIMEOUT * 2)
        assert not t.is_alive()
    finally:
        zsub.use_pidfd = saved
    assert "error" not in results, results.get("error")
    assert results["value"] == (list(range(20)), -signal.SIGKILL)


@pytest.mark.parametrize("mode", ["pidfd", "sigchld", "timer"])
def test_kill_never_signals_a_reaped_pid(loop, run, backend, monkeypatch, mode):
    # gh-127049 (asyncio 3.14): the exit is published in the same step as the child is reaped, so kill() in between
    # can never signal the freed (possibly reused) pid.
    if backend == "asyncio" and (mode != "pidfd" or sys.version_info < (3, 14)):
        pytest.skip("zloop's child watch modes; stock asyncio has the window before 3.14")
    if mode == "pidfd" and not HAVE_PIDFD:
        pytest.skip("no pidfd")
    if backend != "asyncio":
        monkeypatch.setattr(zsub, "use_pidfd", mode == "pidfd")
        if mode == "timer":
            monkeypatch.setattr(zsub, "_in_main_thread", lambda: False)
    reaped, stale = set(), []
    real_waitpid, real_kill = os.waitpid, os.kill

    def waitpid(pid, options):
        result = real_waitpid(pid, options)
        if result[0]:
            reaped.add(result[0])
        return result

    def kill(pid, sig):
        if pid in reaped:
            stale.append(pid)
        else:
            real_kill(pid, sig)

    async def main():
        monkeypatch.setattr(os, "waitpid", waitpid)
        monkeypatch.setattr(os, "kill", kill)
        proc = await asyncio.create_subprocess_exec(sys.executable, "-c", "import time; time.sleep(60)")
        while proc.returncode is None:
            proc.kill()
            await asyncio.sleep(0)
        return await proc.wait()

    assert run(main()) == -signal.SIGKILL
    assert stale == []


def zloop_new_loop(backend):
    import zloop
    return zloop.new_event_loop(backend=backend)


def test_protocol_events(loop, run):
    events = []

    class Proto(asyncio.SubprocessProtocol):
        def __init__(self):
            self.done = loop.create_future()
            self.out = bytearray()

        def connection_made(self, transport):
            events.append("made")

        def pipe_data_received(self, fd, data):
            self.out += data

        def pipe_connection_lost(self, fd, exc):
            events.append(("pipe_lost", fd, exc))

        def process_exited(self):
            events.append("exited")

        def connection_lost(self, exc):
            events.append(("lost", exc))
            self.done.set_result(None)

    async def main():
        transport, proto = await loop.subprocess_exec(Proto, PY, "-c", "print('hi')", stdin=None, stderr=None)
        assert transport.get_pid() > 0
        assert isinstance(transport.get_extra_info("subprocess"), subprocess.Popen)
        assert transport.get_pipe_transport(0) is None
        assert transport.get_pipe_transport(1) is not None
        await proto.done
        code = transport.get_returncode()
        transport.close()
        return bytes(proto.out), code

    assert run(main()) == (b"hi\n", 0)
    assert events[0] == "made" and events[-1] == ("lost", None)
    assert ("pipe_lost", 1, None) in events and "exited" in events


def test_transport_close_kills_running_child(loop, run):
    async def main():
        transport, proto = await loop.subprocess_exec(asyncio.SubprocessProtocol, "sleep", "30",
                                                      stdin=None, stdout=None, stderr=None)
        transport.close()
        return await transport._wait()

    assert run(main()) == -signal.SIGKILL


# ---------------------------------------------------------------------- stdin / stdout / stderr choices


def test_stderr_to_stdout(loop, run):
    async def main():
        proc = await asyncio.create_subprocess_shell("echo a; echo b >&2", stdout=PIPE,
                                                     stderr=asyncio.subprocess.STDOUT)
        out, err = await proc.communicate()
        return sorted(out.split()), err, proc.stderr

    assert run(main()) == ([b"a", b"b"], None, None)


def test_devnull_everywhere(loop, run):
    async def main():
        proc = await asyncio.create_subprocess_exec(
            PY, "-c", "import sys; print(repr(sys.stdin.read())); print('e', file=sys.stderr)",
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL)
        return await proc.communicate(), proc.returncode

    assert run(main()) == ((None, None), 0)


def test_fd_and_file_redirection(loop, run, tmp_path):
    out_path = tmp_path / "out.txt"
    in_path = tmp_path / "in.txt"
    in_path.write_bytes(b"from a file\n")

    async def main():
        with open(out_path, "wb") as out_file, open(in_path, "rb") as in_file:
            r, w = os.pipe()
            try:
                proc = await asyncio.create_subprocess_exec(
                    PY, "-c", "import sys; sys.stdout.write(sys.stdin.read()); sys.stderr.write('to fd')",
                    stdin=in_file, stdout=out_file.fileno(), stderr=w)
                os.close(w)
                w = None
                code = await proc.wait()
                err = os.read(r, 100)
            finally:
                os.close(r)
                if w is not None:
                    os.close(w)
        return code, err

    assert run(main()) == (0, b"to fd")
    assert out_path.read_bytes() == b"from a file\n"


# ---------------------------------------------------------------------- Popen options


def test_cwd_and_env(loop, run, tmp_path):
    async def main():
        proc = await asyncio.create_subprocess_exec(
            PY, "-c", "import os; print(os.getcwd()); print(os.environ['ZL_TEST_VAR'])",
            stdout=PIPE, cwd=str(tmp_path), env={"ZL_TEST_VAR": "value", "PATH": os.environ.get("PATH", "")})
        out, _ = await proc.communicate()
        return out.decode().split("\n")[:2]

    assert run(main()) == [os.path.realpath(str(tmp_path)), "value"]


def test_env_shell(loop, run):
    async def main():
        proc = await asyncio.create_subprocess_shell("echo $ZL_TEST_VAR", stdout=PIPE, env={"ZL_TEST_VAR": "sh"})
        return (await proc.communicate())[0]

    assert run(main()) == b"sh\n"


def test_start_new_session(loop, run):
    async def main():
        proc = await asyncio.create_subprocess_exec(
            PY, "-c", "import os; print(os.getsid(0) == os.getpid())", stdout=PIPE, start_new_session=True)
        return (await proc.communicate())[0]

    assert run(main()) == b"True\n"


@pytest.mark.skipif(not PY311, reason="process_group= is new in Python 3.11")
def test_process_group(loop, run):
    async def main():
        proc = await asyncio.create_subprocess_exec(
            PY, "-c", "import os; print(os.getpgid(0) == os.getpid())", stdout=PIPE, process_group=0)
        return (await proc.communicate())[0]

    assert run(main()) == b"True\n"


def test_pass_fds_and_close_fds(loop, run):
    async def main():
        r, w = os.pipe()
        try:
            code = f"import os; os.write({w}, b'passed'); os.close({w})"
            proc = await asyncio.create_subprocess_exec(PY, "-c", code, pass_fds=(w,))
            assert await proc.wait() == 0
            passed = os.read(r, 100)
            # Not passed: with close_fds (the default) the child does not have it.
            proc = await asyncio.create_subprocess_exec(PY, "-c", code, stderr=PIPE)
            _, err = await proc.communicate()
            return passed, proc.returncode, b"Bad file descriptor" in err
        finally:
            os.close(r)
            os.close(w)

    assert run(main()) == (b"passed", 1, True)


def test_close_fds_false_keeps_inheritable(loop, run):
    async def main():
        r, w = os.pipe()
        os.set_inheritable(w, True)
        try:
            code = f"import os; os.write({w}, b'inherited')"
            proc = await asyncio.create_subprocess_exec(PY, "-c", code, close_fds=False)
            assert await proc.wait() == 0
            return os.read(r, 100)
        finally:
            os.close(r)
            os.close(w)

    assert run(main()) == b"inherited"


def test_preexec_fn_and_umask(loop, run):
    async def main():
        proc = await asyncio.create_subprocess_exec(
            PY, "-c", "import os; print(os.environ.get('ZL_PRE')); print(oct(os.umask(0)))",
            stdout=PIPE, preexec_fn=lambda: os.environ.__setitem__("ZL_PRE", "ran") or os.putenv("ZL_PRE", "ran"),
            umask=0o027)
        return (await proc.communicate())[0].decode().split()

    assert run(main()) == ["ran", "0o27"]


@pytest.mark.skipif(os.geteuid() != 0, reason="changing user/group needs root")
def test_user_group_extra_groups(loop, run):
    async def main():
        # /bin/sh, not this Python: user 65534 may not be allowed to run an interpreter under /root.
        proc = await asyncio.create_subprocess_exec(
            "/bin/sh", "-c", "id -u; id -g; id -G", stdout=PIPE, user=65534, group=65534, extra_groups=[65534])
        return (await proc.communicate())[0].decode().split()

    assert run(main()) == ["65534", "65534", "65534"]


def test_preexec_fn_error(loop, run):
    def boom():
        raise ValueError("in preexec_fn")

    async def main():
        await asyncio.create_subprocess_exec("true", preexec_fn=boom)

    with pytest.raises(subprocess.SubprocessError):
        run(main())


# ---------------------------------------------------------------------- bad input: asyncio's exceptions


def _exec(*args, **kwargs):
    async def start(lp):
        proc = await asyncio.create_subprocess_exec(*args, **kwargs)
        await proc.wait()
    return start


def _shell(cmd, **kwargs):
    async def start(lp):
        proc = await asyncio.create_subprocess_shell(cmd, **kwargs)
        await proc.wait()
    return start


def _loop_exec(*args, **kwargs):
    async def start(lp):
        transport, _ = await lp.subprocess_exec(asyncio.SubprocessProtocol, *args, **kwargs)
        await transport._wait()
        transport.close()
    return start


def _loop_shell(cmd, **kwargs):
    async def start(lp):
        transport, _ = await lp.subprocess_shell(asyncio.SubprocessProtocol, cmd, **kwargs)
        await transport._wait()
        transport.close()
    return start


BAD_INPUT = {
    "missing_program": (_exec("/nonexistent/program"), FileNotFoundError),
    "missing_program_in_path": (_exec("zloop-no-such-program-here"), FileNotFoundError),
    "not_executable": (_exec("/dev/null"), PermissionError),
    "a_directory": (_exec("/tmp"), PermissionError),
    "bad_cwd": (_exec("true", cwd="/nonexistent/dir"), FileNotFoundError),
    "unknown_kwarg": (_exec("true", no_such_option=1), TypeError),
    "universal_newlines": (_exec("true", universal_newlines=True), ValueError),
    "text": (_exec("true", text=True), ValueError),
    "encoding": (_exec("true", encoding="utf-8"), ValueError),
    "errors": (_exec("true", errors="strict"), ValueError),
    "bufsize": (_exec("true", bufsize=4096), ValueError),
    "shell_in_exec": (_loop_exec("true", shell=True), ValueError),
    "no_shell_in_shell": (_loop_shell("true", shell=False), ValueError),
    "shell_text": (_shell("true", text=True), ValueError),
    "shell_bufsize": (_shell("true", bufsize=1), ValueError),
    "shell_cmd_not_str": (_loop_shell(["true"]), ValueError),
    "exec_program_not_str": (_exec(42), TypeError),
    "bad_stdout": (_exec("true", stdout="nope"), AttributeError),
    "bad_stdin_fd": (_exec("true", stdin=987654), OSError),
    "bad_user": (_exec("true", user="zloop-no-such-user"), KeyError),
    "bad_group": (_exec("true", group="zloop-no-such-group"), KeyError),
    "pass_fds_bad": (_exec("true", pass_fds=("x",)), ValueError),
    "bad_env": (_exec("true", env={"A\0": "b"}), ValueError),
    "process_group_type": (_exec("true", process_group="x"), TypeError),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUT))
def test_bad_input_same_exception_as_asyncio(loop, case):
    factory, expected = BAD_INPUT[case]
    if case == "process_group_type" and not PY311:
        expected = TypeError  # unknown keyword before 3.11: TypeError as well
    reference = stock_outcome(factory)
    got = outcome(loop, factory(loop))
    assert reference is not None and issubclass(reference, expected), f"stock asyncio raised {reference}"
    assert got is reference


def test_missing_program_message(loop):
    async def main():
        await asyncio.create_subprocess_exec("/nonexistent/program")

    with pytest.raises(FileNotFoundError) as info:
        loop.run_until_complete(asyncio.wait_for(main(), TIMEOUT))
    assert info.value.filename == "/nonexistent/program"
    assert info.value.errno == 2


# ---------------------------------------------------------------------- signals, kill, wait


def test_kill_with_open_pipes_does_not_hang(loop, run, watch_mode):
    async def main():
        proc = await asyncio.create_subprocess_exec("sleep", "30", stdin=PIPE, stdout=PIPE, stderr=PIPE)
        await asyncio.sleep(0.05)
        proc.kill()
        return await asyncio.wait_for(proc.wait(), 5)

    assert run(main()) == -signal.SIGKILL


def test_kill_while_grandchild_holds_the_pipe(loop, run, watch_mode):
    # The shell is killed but its background child keeps stdout open: the exit is learnt at once and the loop
    # keeps running; wait() (3.11+: process gone and pipes closed, as in asyncio) returns once the pipe closes.
    async def main():
        proc = await asyncio.create_subprocess_shell("sleep 30 & wait", stdout=PIPE, start_new_session=True)
        await asyncio.sleep(0.1)
        proc.kill()
        started = loop.time()
        while proc.returncode is None:
            await asyncio.sleep(0.005)
        learnt_after = loop.time() - started
        os.killpg(proc.pid, signal.SIGKILL)  # the grandchild, so that the pipe closes
        assert await proc.stdout.read() == b""
        return await proc.wait(), learnt_after

    code, learnt_after = run(main())
    assert code == -signal.SIGKILL
    assert learnt_after < 5.0


def test_terminate_and_send_signal(loop, run, watch_mode):
    async def main():
        proc = await asyncio.create_subprocess_exec("sleep", "30")
        proc.terminate()
        first = await proc.wait()
        # Short sleeps: a signal that lands between the interpreter's signal check and the sleep's system call
        # does not interrupt that sleep (seen with Python 3.14), so one long sleep could outlast the test.
        code = ("import signal, sys, time\n"
                "signal.signal(signal.SIGHUP, lambda *a: sys.exit(5))\n"
                "print('ready', flush=True)\n"
                "for _ in range(300): time.sleep(0.1)\n")
        proc = await asyncio.create_subprocess_exec(PY, "-c", code, stdout=PIPE)
        assert await proc.stdout.readline() == b"ready\n"
        proc.send_signal(signal.SIGHUP)
        second = await proc.wait()
        await proc.stdout.read()
        return first, second

    assert run(main()) == (-signal.SIGTERM, 5)


def test_signal_after_exit(loop, run):
    async def main():
        proc = await asyncio.create_subprocess_exec("true")
        await proc.wait()
        for _ in range(5):
            await asyncio.sleep(0)  # wait() may return before the transport is done (3.11+, exit already seen)
        # Once the transport is done, asyncio's Process raises ProcessLookupError (no process to signal).
        with pytest.raises(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        with pytest.raises(ProcessLookupError):
            proc.kill()
        return proc.returncode

    assert run(main()) == 0


def test_send_signal_race_not_255(loop, run):
    # The child exits about when the signal is sent: whoever reaps it, the return code is the real one.
    async def main():
        codes = []
        for _ in range(10):
            proc = await asyncio.create_subprocess_exec("sleep", "0.05")
            await asyncio.sleep(0.05)
            try:
                proc.send_signal(signal.SIGUSR1)
            except ProcessLookupError:
                pass
            codes.append(await proc.wait())
        return codes

    codes = run(main())
    assert 255 not in codes and all(c in (0, -signal.SIGUSR1) for c in codes)


def test_concurrent_waits_and_cancelled_wait(loop, run):
    async def main():
        proc = await asyncio.create_subprocess_exec("sleep", "0.2")
        cancelled = asyncio.ensure_future(proc.wait())
        await asyncio.sleep(0)
        cancelled.cancel()
        a, b = await asyncio.gather(proc.wait(), proc.wait())
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        return a, b, proc.returncode

    assert run(main()) == (0, 0, 0)


def test_wait_for_timeout_then_kill(loop, run):
    async def main():
        proc = await asyncio.create_subprocess_exec("sleep", "30", stdout=PIPE)
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(proc.wait(), 0.1)
        proc.kill()
        return await proc.wait()

    assert run(main()) == -signal.SIGKILL


def test_stdin_broken_pipe_in_communicate(loop, run):
    async def main():
        proc = await asyncio.create_subprocess_exec(PY, "-c", "pass", stdin=PIPE)
        await proc.wait()
        # The child never read its stdin; communicate ignores the broken pipe.
        await proc.communicate(b"x" * (1024 * 1024))
        return proc.returncode

    assert run(main()) == 0


def test_read_stdout_after_exit(loop, run):
    async def main():
        proc = await asyncio.create_subprocess_exec(PY, "-c", "print('x' * 1000)", stdout=PIPE)
        code = await proc.wait()
        return code, await proc.stdout.read()

    assert run(main()) == (0, b"x" * 1000 + b"\n")


def test_cancel_while_starting(loop, run):
    # Cancelled while its pipes are being connected: the child is killed and reaped, nothing leaks.
    async def main():
        task = asyncio.ensure_future(asyncio.create_subprocess_exec("sleep", "30", stdin=PIPE, stdout=PIPE))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0.2)

    run(main())


def test_debug_mode(loop, run, caplog):
    loop.set_debug(True)

    async def main():
        proc = await asyncio.create_subprocess_exec(PY, "-c", "print(1)", stdout=PIPE)
        out = (await proc.communicate())[0]
        proc = await asyncio.create_subprocess_shell("exit 2", stdout=PIPE, stderr=asyncio.subprocess.STDOUT)
        return out, await proc.wait()

    with caplog.at_level("DEBUG", logger="asyncio"):
        assert run(main()) == (b"1\n", 2)
    loop.set_debug(False)


# ---------------------------------------------------------------------- the loop's side


@pytest.mark.zloop_only
def test_loop_close_releases_the_watch(make_loop, backend):
    other = make_loop()
    fds = fd_count()

    async def main():
        transport, _ = await other.subprocess_exec(asyncio.SubprocessProtocol, "sleep", "30",
                                                   stdin=None, stdout=None, stderr=None)
        return transport

    transport = other.run_until_complete(asyncio.wait_for(main(), TIMEOUT))
    popen = transport.get_extra_info("subprocess")
    assert len(other._child_watch()) == 1
    other.close()  # the pidfd goes; the child is not reaped by a loop that is gone
    transport.close()  # kills it
    popen.wait(TIMEOUT)  # reaped here, as the application would
    del transport
    gc.collect()
    assert fd_count() <= fds


@pytest.mark.zloop_only
def test_sigchld_handler_removed_when_idle(loop, run, monkeypatch):
    monkeypatch.setattr(zsub, "use_pidfd", False)

    async def main():
        proc = await asyncio.create_subprocess_exec("sleep", "0.05")
        installed = signal.SIGCHLD in loop._signal_handlers
        await proc.wait()
        await asyncio.sleep(0)
        return installed, signal.SIGCHLD in loop._signal_handlers

    assert run(main()) == (True, False)


@pytest.mark.zloop_only
def test_application_sigchld_handler_is_kept(loop, run, monkeypatch):
    # Without pidfds, an application's own SIGCHLD handler stays; the watch polls on a timer instead.
    monkeypatch.setattr(zsub, "use_pidfd", False)
    seen = []
    loop.add_signal_handler(signal.SIGCHLD, seen.append, "app")

    async def main():
        proc = await asyncio.create_subprocess_exec("/bin/sh", "-c", "exit 4")
        return await proc.wait()

    try:
        assert run(main()) == 4
        assert signal.SIGCHLD in loop._signal_handlers
        run(asyncio.sleep(0.05))
        assert "app" in seen  # the application's handler saw the child's SIGCHLD
    finally:
        loop.remove_signal_handler(signal.SIGCHLD)


@pytest.mark.zloop_only
def test_child_reaped_by_someone_else_reports_255(loop, run, caplog):
    # A waitpid(-1)-style reaper elsewhere took the status: the transport still finishes (255, as asyncio).
    async def main():
        proc = await asyncio.create_subprocess_exec("sleep", "0.1")
        popen = proc._transport.get_extra_info("subprocess")
        os.waitpid(popen.pid, 0)  # steals the status behind everyone's back
        return await proc.wait()

    with caplog.at_level("WARNING", logger="asyncio"):
        assert run(main()) == 255
    assert "exit status already read" in caplog.text


@pytest.mark.zloop_only
def test_create_subprocess_in_a_thread(backend):
    # No policy child watcher is involved (asyncio 3.9-3.11 needs one attached to a main-thread loop): a zloop
    # loop in any thread runs children, whatever the Python version.
    results = {}

    def in_thread():
        lp = zloop_new_loop(backend)
        try:
            async def main():
                proc = await asyncio.create_subprocess_exec(PY, "-c", "print('ok')", stdout=PIPE)
                return (await proc.communicate())[0], proc.returncode

            results["value"] = lp.run_until_complete(asyncio.wait_for(main(), TIMEOUT))
        except BaseException as exc:  # noqa: B902
            results["error"] = exc
        finally:
            lp.close()

    t = threading.Thread(target=in_thread)
    t.start()
    t.join(TIMEOUT * 2)
    assert not t.is_alive()
    assert results.get("value") == (b"ok\n", 0), results.get("error")


# ---------------------------------------------------------------------- an application's own child watcher

@pytest.mark.skipif(sys.version_info >= (3, 14), reason="child watchers are gone in 3.14")
def test_an_inactive_application_child_watcher_is_honoured_like_asyncio(loop):
    # asyncio's unix loop refuses to start a child through a watcher the application set and did not activate.
    from unittest import mock
    watcher = mock.create_autospec(asyncio.AbstractChildWatcher,
                                   **{"__enter__.return_value.is_active.return_value": False})
    watcher.is_active.return_value = False   # 3.12+ asks the watcher itself, not what __enter__ returns
    policy = asyncio.get_event_loop_policy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        saved = getattr(policy, "_watcher", None)
        policy._watcher = watcher
    try:
        async def main():
            with pytest.raises(RuntimeError, match="not activated"):
                await asyncio.create_subprocess_exec(sys.executable, "-c", "pass")
        loop.run_until_complete(asyncio.wait_for(main(), 30))
    finally:
        policy._watcher = saved
    watcher.add_child_handler.assert_not_called()
    asked = mock.call.__enter__().is_active() if sys.version_info < (3, 12) else mock.call.is_active()
    assert watcher.mock_calls[:2] == [mock.call.__enter__(), asked]
