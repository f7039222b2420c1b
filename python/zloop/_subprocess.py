"""Subprocesses of zloop.Loop: subprocess_exec / subprocess_shell and the watch on child exits, as a mixin.

The child is started by subprocess.Popen (so every argument and error is the stdlib's), its pipes are zloop pipe
transports, and asyncio's BaseSubprocessTransport ties them together, so asyncio.create_subprocess_exec/_shell
and asyncio.subprocess.Process work on top. No policy child watcher and no thread per child: each loop learns of
its children's exits itself, by
  1. a pidfd (Linux 5.3+) watched with add_reader, then waitpid(), or where there is none,
  2. SIGCHLD through the loop's add_signal_handler (main thread), then waitpid(WNOHANG) for each known child, or
  3. in another thread, waitpid(WNOHANG) for each known child on a timer that backs off from 1 ms to 100 ms.
"""

import os
import signal
import subprocess
import sys
import threading
from asyncio import base_subprocess, events, unix_events
from asyncio.log import logger

__all__ = ["SubprocessMixin", "SubprocessTransport"]

_POLL_FIRST_DELAY = 0.001
_POLL_MAX_DELAY = 0.1


def _pidfd_works():
    if not hasattr(os, "pidfd_open"):
        return False
    try:
        fd = os.pidfd_open(os.getpid())
    except OSError:  # ENOSYS on kernels before 5.3, EPERM under some seccomp filters
        return False
    os.close(fd)
    return True


# Whether new children are watched through a pidfd; the tests turn it off to exercise the other ways.
use_pidfd = _pidfd_works()


def _in_main_thread():
    return threading.current_thread() is threading.main_thread()


def _reap(popen, block):
    """The child's return code once it has exited (reaping it), else None. Sets popen.returncode."""
    if popen.returncode is not None:
        return popen.returncode  # Popen.poll() / send_signal() reaped it already; its pid may be reused by now
    try:
        pid, status = os.waitpid(popen.pid, 0 if block else os.WNOHANG)
    except ChildProcessError:
        # Someone else (a waitpid(-1) elsewhere) took the status: nothing left to learn, as asyncio reports it.
        logger.warning("child process pid %d exit status already read: will report returncode 255", popen.pid)
        returncode = 255
    else:
        if pid == 0:
            return None
        returncode = os.waitstatus_to_exitcode(status)
    popen.returncode = returncode
    return returncode


class _ChildWatch:
    """The children of one loop: pid -> [popen, callback, pidfd or None]; callback(returncode) runs in the loop."""

    def __init__(self, loop):
        self._loop = loop
        self._children = {}
        self._sigchld_handle = None  # our SIGCHLD handle in loop._signal_handlers, while installed
        self._poll_timer = None
        self._poll_delay = _POLL_FIRST_DELAY

    def __len__(self):
        return len(self._children)

    def add(self, popen, callback):
        pid = popen.pid
        if use_pidfd:
            try:
                pidfd = os.pidfd_open(pid)
            except ProcessLookupError:
                pidfd = None  # already reaped by someone else: the fallback below reports it at once
            except OSError:
                pidfd = None  # out of fds, or pidfds refused here: watch this child the other way
            if pidfd is not None:
                self._children[pid] = [popen, callback, pidfd]
                try:
                    self._loop.add_reader(pidfd, self._pidfd_ready, pid)
                except BaseException:
                    del self._children[pid]
                    os.close(pidfd)
                    raise
                return
        self._children[pid] = [popen, callback, None]
        self._watch_without_pidfd()
        # The child may have exited before any SIGCHLD handler was there to see it.
        self._loop.call_soon(self._poll_children)

    # ------------------------------------------------------------------ pidfd

    def _pidfd_ready(self, pid):
        entry = self._children.pop(pid, None)
        if entry is None:
            return
        popen, callback, pidfd = entry
        self._loop.remove_reader(pidfd)
        os.close(pidfd)
        # The pidfd is readable once the child has exited: this waitpid() does not block. The exit is published
        # in the same step as the reaping: in between, send_signal() would signal a freed (maybe reused) pid.
        callback(_reap(popen, block=True))

    # ------------------------------------------------------------------ SIGCHLD, or a timer

    def _watch_without_pidfd(self):
        loop = self._loop
        if self._sigchld_handle is not None:
            return
        if self._poll_timer is None:
            own_signal = signal.SIGCHLD not in loop._signal_handlers  # never take over the application's handler
            if own_signal and _in_main_thread():
                try:
                    loop.add_signal_handler(signal.SIGCHLD, self._poll_children)
                except (RuntimeError, ValueError, OSError):
                    pass
                else:
                    self._sigchld_handle = loop._signal_handlers[signal.SIGCHLD]
                    return
        else:
            self._poll_timer.cancel()  # a new child: look again soon, not after the backed-off delay
        self._poll_delay = _POLL_FIRST_DELAY
        self._poll_timer = loop.call_later(self._poll_delay, self._poll_tick)

    def _poll_tick(self):
        self._poll_timer = None
        self._poll_children()
        if self._has_children_without_pidfd() and self._poll_timer is None and self._sigchld_handle is None:
            self._poll_delay = min(self._poll_delay * 2, _POLL_MAX_DELAY)
            self._poll_timer = self._loop.call_later(self._poll_delay, self._poll_tick)

    def _has_children_without_pidfd(self):
        return any(entry[2] is None for entry in self._children.values())

    def _poll_children(self):
        for pid, (popen, callback, pidfd) in list(self._children.items()):
            if pidfd is not None:
                continue
            returncode = _reap(popen, block=False)
            if returncode is not None:
                del self._children[pid]
                callback(returncode)  # at once, as for a pidfd
        if not self._has_children_without_pidfd():
            self._stop_fallback()

    def _stop_fallback(self):
        handle, self._sigchld_handle = self._sigchld_handle, None
        # At interpreter shutdown Loop.close() drops its signal handlers without touching signal state.
        if handle is not None and self._loop._signal_handlers.get(signal.SIGCHLD) is handle \
                and not sys.is_finalizing():
            self._loop.remove_signal_handler(signal.SIGCHLD)
        if self._poll_timer is not None:
            self._poll_timer.cancel()
            self._poll_timer = None

    # ------------------------------------------------------------------ loop.close()

    def close(self):
        """Stop watching: close the pidfds, reap the children that have exited, drop the rest (Popen reaps them)."""
        children, self._children = self._children, {}
        for popen, _callback, pidfd in children.values():
            if pidfd is not None:
                self._loop.remove_reader(pidfd)
                os.close(pidfd)
            try:
                _reap(popen, block=False)
            except OSError:
                pass
        self._stop_fallback()


class SubprocessTransport(base_subprocess.BaseSubprocessTransport):
    """asyncio's subprocess transport over subprocess.Popen, zloop pipe transports and the loop's child watch."""

    def _start(self, args, shell, stdin, stdout, stderr, bufsize, **kwargs):
        self._proc = subprocess.Popen(args, shell=shell, stdin=stdin, stdout=stdout, stderr=stderr,
                                      universal_newlines=False, bufsize=bufsize, **kwargs)
        self._loop._child_watch().add(self._proc, self._child_exited)

    def _child_exited(self, returncode):
        if self._returncode is None and self._loop is not None:
            self._process_exited(returncode)


class _AppWatchedSubprocessTransport(SubprocessTransport):
    """A child whose exit the application's own asyncio child watcher reports (see _application_child_watcher)."""

    def _start(self, args, shell, stdin, stdout, stderr, bufsize, **kwargs):
        self._proc = subprocess.Popen(args, shell=shell, stdin=stdin, stdout=stdout, stderr=stderr,
                                      universal_newlines=False, bufsize=bufsize, **kwargs)


def _application_child_watcher():
    """The child watcher an application gave asyncio (set_child_watcher, or one get_child_watcher made), if any.

    zloop needs no watcher of its own, but one the application set up is honoured as asyncio's loop does,
    through Python 3.13 (watchers are gone in 3.14). asyncio's default watchers, which its policy makes by
    itself the first time a stock loop starts a child, are left aside: zloop's own pidfd watch does their job
    without a thread per child."""
    if sys.version_info >= (3, 14):
        return None
    watcher = getattr(events.get_event_loop_policy(), "_watcher", None)
    if watcher is None or not hasattr(watcher, "add_child_handler"):
        return None
    defaults = tuple(getattr(unix_events, name) for name in ("ThreadedChildWatcher", "PidfdChildWatcher")
                     if hasattr(unix_events, name))
    if type(watcher) in defaults:
        return None
    return watcher


def _format_pipe(fd):
    if fd == subprocess.PIPE:
        return "<pipe>"
    if fd == subprocess.STDOUT:
        return "<stdout>"
    return repr(fd)


def _check_popen_options(universal_newlines, shell, want_shell, bufsize, text, encoding, errors):
    # The transport hands bytes to the protocol: every text-mode option is refused, in asyncio's order.
    if universal_newlines:
        raise ValueError("universal_newlines must be False")
    if bool(shell) != want_shell:
        raise ValueError(f"shell must be {want_shell}")
    if bufsize != 0:
        raise ValueError("bufsize must be 0")
    if text:
        raise ValueError("text must be False")
    if encoding is not None:
        raise ValueError("encoding must be None")
    if errors is not None:
        raise ValueError("errors must be None")


class SubprocessMixin:
    """subprocess_exec / subprocess_shell for zloop.Loop, and the child watch they use."""

    def _child_watch(self):
        watch = self.__dict__.get("_zl_child_watch")
        if watch is None:
            watch = self.__dict__["_zl_child_watch"] = _ChildWatch(self)
        return watch

    def _close_child_watch(self):
        """Called by Loop.close(): no pidfd, SIGCHLD handler or timer of the child watch outlives the loop."""
        watch = self.__dict__.pop("_zl_child_watch", None)
        if watch is not None:
            watch.close()

    async def subprocess_exec(self, protocol_factory, program, *args, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=False,
                              shell=False, bufsize=0, encoding=None, errors=None, text=None, **kwargs):
        """Run program with args; return (transport, protocol) once the child's pipes are connected."""
        _check_popen_options(universal_newlines, shell, False, bufsize, text, encoding, errors)
        protocol = protocol_factory()
        debug_log = None
        if self.get_debug():
            # The arguments are not logged: they may be long, or hold secrets.
            debug_log = f"execute program {program!r}"
            self._log_subprocess(debug_log, stdin, stdout, stderr)
        transport = await self._make_subprocess_transport(protocol, (program,) + args, False, stdin, stdout,
                                                          stderr, bufsize, **kwargs)
        if debug_log is not None:
            logger.info("%s: %r", debug_log, transport)
        return transport, protocol

    async def subprocess_shell(self, protocol_factory, cmd, *, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, universal_newlines=False, shell=True, bufsize=0,
                               encoding=None, errors=None, text=None, **kwargs):
        """Run cmd with the shell; return (transport, protocol) once the child's pipes are connected."""
        if not isinstance(cmd, (bytes, str)):
            raise ValueError("cmd must be a string")
        _check_popen_options(universal_newlines, shell, True, bufsize, text, encoding, errors)
        protocol = protocol_factory()
        debug_log = None
        if self.get_debug():
            debug_log = f"run shell command {cmd!r}"
            self._log_subprocess(debug_log, stdin, stdout, stderr)
        transport = await self._make_subprocess_transport(protocol, cmd, True, stdin, stdout, stderr, bufsize,
                                                          **kwargs)
        if debug_log is not None:
            logger.info("%s: %r", debug_log, transport)
        return transport, protocol

    async def _make_subprocess_transport(self, protocol, args, shell, stdin, stdout, stderr, bufsize,
                                         extra=None, **kwargs):
        self._check_closed()
        watcher = _application_child_watcher()
        if watcher is not None:
            return await self._make_app_watched_transport(watcher, protocol, args, shell, stdin, stdout, stderr,
                                                          bufsize, extra, **kwargs)
        waiter = self.create_future()
        transport = SubprocessTransport(self, protocol, args, shell, stdin, stdout, stderr, bufsize,
                                        waiter=waiter, extra=extra, **kwargs)
        return await self._connect_subprocess_transport(transport, waiter)

    async def _make_app_watched_transport(self, watcher, protocol, args, shell, stdin, stdout, stderr, bufsize,
                                          extra, **kwargs):
        # asyncio's unix loop: the watcher must be active, and it reports the exit from any thread. Up to 3.11
        # asyncio uses what the watcher's __enter__ returns, from 3.12 the watcher itself.
        with watcher as entered:
            if sys.version_info < (3, 12):
                watcher = entered
            if not watcher.is_active():
                raise RuntimeError("asyncio.get_child_watcher() is not activated, "
                                   "subprocess support is not installed.")
            waiter = self.create_future()
            transport = _AppWatchedSubprocessTransport(self, protocol, args, shell, stdin, stdout, stderr,
                                                       bufsize, waiter=waiter, extra=extra, **kwargs)
            watcher.add_child_handler(transport.get_pid(), self._app_watcher_callback, transport)
        return await self._connect_subprocess_transport(transport, waiter)

    def _app_watcher_callback(self, pid, returncode, transport):
        self.call_soon_threadsafe(transport._child_exited, returncode)

    async def _connect_subprocess_transport(self, transport, waiter):
        try:
            await waiter
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException:
            # Connecting the pipes failed or was cancelled: kill the child and reap it before raising.
            transport.close()
            await transport._wait()
            raise
        return transport

    def _log_subprocess(self, msg, stdin, stdout, stderr):
        info = [msg]
        if stdin is not None:
            info.append(f"stdin={_format_pipe(stdin)}")
        if stdout is not None and stderr == subprocess.STDOUT:
            info.append(f"stdout=stderr={_format_pipe(stdout)}")
        else:
            if stdout is not None:
                info.append(f"stdout={_format_pipe(stdout)}")
            if stderr is not None:
                info.append(f"stderr={_format_pipe(stderr)}")
        logger.debug(" ".join(info))
