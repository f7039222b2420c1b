"""zloop.Loop: the C core (scheduling, timers, fds) plus the parts of asyncio's API that are not on a hot path.

Behaviour follows asyncio's BaseEventLoop and unix_events; docs/compatibility.md lists any difference.
"""

import asyncio
import concurrent.futures
import errno
import os
import signal
import socket
import sys
import threading
import warnings
import weakref
from asyncio import constants, coroutines, events, futures, tasks
from asyncio.log import logger

from . import _hooks  # noqa: F401  (installs the C core's hooks)
from ._net import NetworkingMixin
from ._udp import DatagramMixin
from ._pipes import PipeMixin
from ._subprocess import SubprocessMixin
from ._zloop import LoopCore

_PY311 = sys.version_info >= (3, 11)
_PY312 = sys.version_info >= (3, 12)

# Loops alive in this process, so a forked child can re-create their kernel state.
_live_loops = weakref.WeakSet()


def _run_until_complete_cb(fut):
    if not fut.cancelled():
        exc = fut.exception()
        if isinstance(exc, (SystemExit, KeyboardInterrupt)):
            # The exception propagates out of run_forever on its own; stopping here would hide it.
            return
    fut.get_loop().stop()


def _set_result_unless_cancelled(fut, result):
    if not fut.cancelled():
        fut.set_result(result)


class Loop(LoopCore, NetworkingMixin, DatagramMixin, PipeMixin, SubprocessMixin, asyncio.AbstractEventLoop):
    """An asyncio event loop whose core is written in C; pick the I/O backend with backend= or ZLOOP_BACKEND."""

    def __init__(self, backend=None):
        super().__init__(backend)
        self._default_executor = None
        self._executor_shutdown_called = False
        self._asyncgens = weakref.WeakSet()
        self._asyncgens_shutdown_called = False
        self._exception_handler = None
        self._signal_handlers = {}
        self._signal_rsock = None
        self._signal_wsock = None
        self._coroutine_origin_tracking_enabled = False
        self._coroutine_origin_tracking_saved_depth = None
        self.set_debug(coroutines._is_debug_mode())
        _live_loops.add(self)

    def __repr__(self):
        return (f"<{type(self).__name__} running={self.is_running()} closed={self.is_closed()} "
                f"debug={self.get_debug()} backend={self.get_backend()}>")

    def __del__(self, _warn=warnings.warn):
        if not self.is_closed():
            _warn(f"unclosed event loop {self!r}", ResourceWarning, source=self)
            if not self.is_running():
                self.close()

    # ------------------------------------------------------------------ running

    def _check_closed(self):
        if self.is_closed():
            raise RuntimeError("Event loop is closed")

    def _check_running(self):
        if self.is_running():
            raise RuntimeError("This event loop is already running")
        if events._get_running_loop() is not None:
            raise RuntimeError("Cannot run the event loop while another loop is running")

    def run_forever(self):
        """Run until stop() is called."""
        self._check_closed()
        self._check_running()
        self._set_coroutine_origin_tracking(self.get_debug())
        old_agen_hooks = sys.get_asyncgen_hooks()
        old_wakeup_fd = self._install_signal_wakeup()
        try:
            self._thread_id = threading.get_ident()
            sys.set_asyncgen_hooks(firstiter=self._asyncgen_firstiter_hook,
                                   finalizer=self._asyncgen_finalizer_hook)
            events._set_running_loop(self)
            self._run_until_stopped()
        finally:
            self._stopping = False
            self._thread_id = None
            events._set_running_loop(None)
            self._set_coroutine_origin_tracking(False)
            sys.set_asyncgen_hooks(*old_agen_hooks)
            self._restore_signal_wakeup(old_wakeup_fd)

    def run_until_complete(self, future):
        """Run until the future (or coroutine, wrapped in a Task) is done, and return its result."""
        self._check_closed()
        self._check_running()
        new_task = not futures.isfuture(future)
        future = tasks.ensure_future(future, loop=self)
        if new_task:
            # An exception raised by the new task is re-raised here; do not log it as never retrieved.
            future._log_destroy_pending = False
        future.add_done_callback(_run_until_complete_cb)
        try:
            self.run_forever()
        except BaseException:
            if new_task and future.done() and not future.cancelled():
                future.exception()  # mark it retrieved: it is about to propagate
            raise
        finally:
            future.remove_done_callback(_run_until_complete_cb)
        if not future.done():
            raise RuntimeError("Event loop stopped before Future completed.")
        return future.result()

    def close(self):
        """Close the loop: drop pending callbacks, release every fd the loop owns, shut the executor down."""
        if self.is_running():
            raise RuntimeError("Cannot close a running event loop")
        if self.is_closed():
            return
        if self.get_debug():
            logger.debug("Close %r", self)
        self._close_child_watch()
        if self._signal_handlers:
            if sys.is_finalizing():
                warnings.warn(f"Closing the loop {self!r} on interpreter shutdown stage, "
                              "skipping signal handlers removal", ResourceWarning, source=self)
                self._signal_handlers.clear()
            else:
                for sig in list(self._signal_handlers):
                    self.remove_signal_handler(sig)
        self._close_core()
        self._close_signal_socket()
        self._executor_shutdown_called = True
        executor = self._default_executor
        if executor is not None:
            self._default_executor = None
            executor.shutdown(wait=False)

    def set_debug(self, enabled):
        self._set_debug_flag(enabled)
        if self.is_running():
            self.call_soon_threadsafe(self._set_coroutine_origin_tracking, enabled)

    def _set_coroutine_origin_tracking(self, enabled):
        if bool(enabled) == bool(self._coroutine_origin_tracking_enabled):
            return
        if enabled:
            self._coroutine_origin_tracking_saved_depth = sys.get_coroutine_origin_tracking_depth()
            sys.set_coroutine_origin_tracking_depth(constants.DEBUG_STACK_DEPTH)
        else:
            sys.set_coroutine_origin_tracking_depth(self._coroutine_origin_tracking_saved_depth)
        self._coroutine_origin_tracking_enabled = enabled

    # ------------------------------------------------------------------ futures and tasks

    def _create_task_slow(self, coro, *, name=None, context=None, eager_start=None):
        # create_task (in C) comes here with a task factory, in debug mode, or with eager_start.
        self._check_closed()
        if context is not None and not _PY311:
            raise TypeError("create_task() got an unexpected keyword argument 'context'")
        if eager_start is not None and not _PY312:
            raise TypeError("create_task() got an unexpected keyword argument 'eager_start'")
        if self._task_factory is None:
            kwargs = {"loop": self, "name": name}
            if context is not None:
                kwargs["context"] = context
            if eager_start is not None:
                kwargs["eager_start"] = eager_start
            task = tasks.Task(coro, **kwargs)
            if task._source_traceback:
                del task._source_traceback[-1]
            return task
        kwargs = {}
        if context is not None:
            kwargs["context"] = context
        if eager_start is not None:
            kwargs["eager_start"] = eager_start
        task = self._task_factory(self, coro, **kwargs)
        if name is not None:
            task.set_name(name)
        return task

    def set_task_factory(self, factory):
        if factory is not None and not callable(factory):
            raise TypeError("task factory must be a callable or None")
        self._task_factory = factory

    def get_task_factory(self):
        return self._task_factory

    # ------------------------------------------------------------------ errors

    def get_exception_handler(self):
        return self._exception_handler

    def set_exception_handler(self, handler):
        if handler is not None and not callable(handler):
            raise TypeError(f"A callable object or None is expected, got {handler!r}")
        self._exception_handler = handler

    def default_exception_handler(self, context):
        """Log the context's message, exception and other keys on the asyncio logger."""
        message = context.get("message") or "Unhandled exception in event loop"
        exception = context.get("exception")
        exc_info = (type(exception), exception, exception.__traceback__) if exception is not None else False
        current = self._current_handle
        if "source_traceback" not in context and current is not None and current._source_traceback:
            context["handle_traceback"] = current._source_traceback
        lines = [message]
        for key in sorted(context):
            if key in ("message", "exception"):
                continue
            value = context[key]
            if key == "source_traceback":
                value = "Object created at (most recent call last):\n" + _format_stack(value)
            elif key == "handle_traceback":
                value = "Handle created at (most recent call last):\n" + _format_stack(value)
            else:
                value = repr(value)
            lines.append(f"{key}: {value}")
        logger.error("\n".join(lines), exc_info=exc_info)

    def call_exception_handler(self, context):
        """Pass context to the handler set with set_exception_handler, or to the default one."""
        if self._exception_handler is None:
            try:
                self.default_exception_handler(context)
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException:
                logger.error("Exception in default exception handler", exc_info=True)
            return
        try:
            self._run_custom_exception_handler(context)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            try:
                self.default_exception_handler({
                    "message": "Unhandled error in exception handler",
                    "exception": exc,
                    "context": context,
                })
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException:
                logger.error("Exception in default exception handler while handling an unexpected "
                             "error in custom exception handler", exc_info=True)

    def _run_custom_exception_handler(self, context):
        # Like asyncio 3.12+: run the handler in the context of the task, future or handle concerned.
        thing = context.get("task") or context.get("future") or context.get("handle")
        ctx = thing.get_context() if thing is not None and hasattr(thing, "get_context") else None
        if _PY312 and ctx is not None and hasattr(ctx, "run"):
            ctx.run(self._exception_handler, self, context)
        else:
            self._exception_handler(self, context)

    # ------------------------------------------------------------------ async generators

    def _asyncgen_firstiter_hook(self, agen):
        if self._asyncgens_shutdown_called:
            warnings.warn(f"asynchronous generator {agen!r} was scheduled after "
                          "loop.shutdown_asyncgens() call", ResourceWarning, source=self)
        self._asyncgens.add(agen)

    def _asyncgen_finalizer_hook(self, agen):
        self._asyncgens.discard(agen)
        if not self.is_closed():
            self.call_soon_threadsafe(self.create_task, agen.aclose())

    async def shutdown_asyncgens(self):
        """Close every asynchronous generator still alive on this loop."""
        self._asyncgens_shutdown_called = True
        if not len(self._asyncgens):
            return
        closing = list(self._asyncgens)
        self._asyncgens.clear()
        results = await tasks.gather(*[agen.aclose() for agen in closing], return_exceptions=True)
        for result, agen in zip(results, closing):
            if isinstance(result, Exception):
                self.call_exception_handler({
                    "message": f"an error occurred during closing of asynchronous generator {agen!r}",
                    "exception": result,
                    "asyncgen": agen,
                })

    # ------------------------------------------------------------------ executors

    def run_in_executor(self, executor, func, *args):
        self._check_closed()
        if self.get_debug():
            _hooks.check_callback(func, "run_in_executor")
        if executor is None:
            executor = self._default_executor
            if self._executor_shutdown_called:
                raise RuntimeError("Executor shutdown has been called")
            if executor is None:
                executor = concurrent.futures.ThreadPoolExecutor(thread_name_prefix="asyncio")
                self._default_executor = executor
        return futures.wrap_future(executor.submit(func, *args), loop=self)

    def set_default_executor(self, executor):
        if not isinstance(executor, concurrent.futures.ThreadPoolExecutor):
            raise TypeError("executor must be ThreadPoolExecutor instance")
        self._default_executor = executor

    async def shutdown_default_executor(self, timeout=None):
        """Shut the default executor down, joining its threads for at most timeout seconds."""
        self._executor_shutdown_called = True
        executor = self._default_executor
        if executor is None:
            return
        done = self.create_future()
        thread = threading.Thread(target=self._join_executor, args=(executor, done))
        thread.start()
        try:
            await tasks.wait_for(tasks.shield(done), timeout)
        except (asyncio.TimeoutError, TimeoutError):
            warnings.warn("The executor did not finishing joining its threads within "
                          f"{timeout} seconds.", RuntimeWarning, stacklevel=2)
            executor.shutdown(wait=False)
        else:
            thread.join()

    def _join_executor(self, executor, done):
        try:
            executor.shutdown(wait=True)
            if not self.is_closed():
                self.call_soon_threadsafe(_set_result_unless_cancelled, done, None)
        except Exception as exc:
            if not self.is_closed() and not done.cancelled():
                self.call_soon_threadsafe(done.set_exception, exc)

    # ------------------------------------------------------------------ signals

    def _ensure_signal_socket(self):
        if self._signal_rsock is None:
            rsock, wsock = socket.socketpair()
            rsock.setblocking(False)
            wsock.setblocking(False)
            self._signal_rsock, self._signal_wsock = rsock, wsock
            self.add_reader(rsock.fileno(), self._read_signal_numbers)
        return self._signal_wsock.fileno()

    def _close_signal_socket(self):
        if self._signal_rsock is not None:
            if not self.is_closed():
                self.remove_reader(self._signal_rsock.fileno())
            self._signal_rsock.close()
            self._signal_wsock.close()
            self._signal_rsock = self._signal_wsock = None

    def _install_signal_wakeup(self):
        # In the main thread, a signal must wake a blocked poll so that Python handlers (Ctrl-C) run at once,
        # on every backend. Another wakeup fd set by the application is left alone.
        if threading.current_thread() is not threading.main_thread():
            return None
        fd = self._ensure_signal_socket()
        try:
            old = signal.set_wakeup_fd(fd, warn_on_full_buffer=False)
        except (ValueError, OSError):
            return None
        if old == fd:
            # Ours already, left by add_signal_handler: once no handler remains, nothing was there before us.
            return -1
        if old != -1:
            try:
                signal.set_wakeup_fd(old)
            except (ValueError, OSError):
                return -1  # the application's fd was closed under it: keep ours for this run only
            return None
        return old

    def _restore_signal_wakeup(self, old):
        if old is None or self._signal_handlers:
            return
        try:
            signal.set_wakeup_fd(old)
        except (ValueError, OSError):
            pass

    def _after_fork(self):
        # In a forked child: new kernel state for the backend, and a signal socket of the child's own. The
        # inherited pair is the parent's too: a signal the child gets would wake, and be handled by, the parent.
        LoopCore._after_fork(self)
        if self._signal_wsock is None:
            return
        inherited = self._signal_wsock.fileno()
        try:
            current = signal.set_wakeup_fd(-1)
        except (ValueError, OSError):
            current = None
        self._close_signal_socket()
        if current is not None and current != inherited:
            signal.set_wakeup_fd(current)  # the application's own: leave it
        elif current is not None and (self._signal_handlers or self.is_running()):
            signal.set_wakeup_fd(self._ensure_signal_socket(), warn_on_full_buffer=False)

    def _read_signal_numbers(self):
        while True:
            try:
                data = self._signal_rsock.recv(4096)
            except (BlockingIOError, InterruptedError):
                return
            if not data:
                return
            for signum in data:
                self._handle_signal(signum)

    def _handle_signal(self, sig):
        handle = self._signal_handlers.get(sig)
        if handle is None:
            return
        if handle.cancelled():
            self.remove_signal_handler(sig)
        else:
            self._enqueue(handle)

    @staticmethod
    def _check_signal(sig):
        if not isinstance(sig, int):
            raise TypeError(f"sig must be an int, not {sig!r}")
        if sig not in signal.valid_signals():
            raise ValueError(f"invalid signal number {sig}")

    def add_signal_handler(self, sig, callback, *args):
        """Run callback(*args) in the loop when signal sig arrives (main thread only)."""
        if coroutines.iscoroutine(callback) or coroutines.iscoroutinefunction(callback):
            raise TypeError("coroutines cannot be used with add_signal_handler()")
        self._check_signal(sig)
        self._check_closed()
        try:
            signal.set_wakeup_fd(self._ensure_signal_socket(), warn_on_full_buffer=False)
        except (ValueError, OSError) as exc:
            raise RuntimeError(str(exc))
        self._signal_handlers[sig] = self._make_handle(callback, args, None)
        try:
            # A Python-level handler is needed for set_wakeup_fd to see the signal; the real work is queued.
            signal.signal(sig, _signal_noop)
            signal.siginterrupt(sig, False)
        except OSError as exc:
            del self._signal_handlers[sig]
            if not self._signal_handlers:
                try:
                    signal.set_wakeup_fd(-1)
                except (ValueError, OSError) as nexc:
                    logger.info("set_wakeup_fd(-1) failed: %s", nexc)
            if exc.errno == errno.EINVAL:
                raise RuntimeError(f"sig {sig:d} cannot be caught")
            raise

    def remove_signal_handler(self, sig):
        """Remove the handler for sig; True if there was one."""
        self._check_signal(sig)
        try:
            del self._signal_handlers[sig]
        except KeyError:
            return False
        handler = signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL
        try:
            signal.signal(sig, handler)
        except OSError as exc:
            if exc.errno == errno.EINVAL:
                raise RuntimeError(f"sig {sig:d} cannot be caught")
            raise
        if not self._signal_handlers and not self.is_running():
            try:
                signal.set_wakeup_fd(-1)
            except (ValueError, OSError) as exc:
                logger.info("set_wakeup_fd(-1) failed: %s", exc)
        return True


def _signal_noop(signum, frame):
    """Installed for signals handled through add_signal_handler; the loop does the work."""


def _format_stack(frames):
    import traceback
    return "".join(traceback.format_list(frames)).rstrip()


def _reinit_loops_after_fork():
    for loop in list(_live_loops):
        if not loop.is_closed():
            try:
                loop._after_fork()
            except OSError:
                pass


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reinit_loops_after_fork)


def new_event_loop(backend=None):
    """A new zloop loop on the given backend (default: ZLOOP_BACKEND, else the build's default)."""
    return Loop(backend)


class EventLoopPolicy(events.BaseDefaultEventLoopPolicy):
    """An asyncio event loop policy whose loops are zloop loops."""

    def _loop_factory(self):
        return new_event_loop()


def install():
    """Make zloop the event loop of asyncio's default policy in this process."""
    asyncio.set_event_loop_policy(EventLoopPolicy())


def run(main, *, debug=None):
    """Run a coroutine on a new zloop loop, like asyncio.run, and close the loop afterwards."""
    if events._get_running_loop() is not None:
        # Like asyncio.run: fail before a loop is made (closing that loop would mask this error).
        raise RuntimeError("asyncio.run() cannot be called from a running event loop")
    if _PY311:
        with asyncio.Runner(debug=debug, loop_factory=new_event_loop) as runner:
            return runner.run(main)
    return _run_legacy(main, debug)


def _run_legacy(main, debug):
    # Python 3.9 and 3.10 have no asyncio.Runner: the same steps as their asyncio.run.
    if not coroutines.iscoroutine(main):
        raise ValueError(f"a coroutine was expected, got {main!r}")
    loop = new_event_loop()
    try:
        events.set_event_loop(loop)
        if debug is not None:
            loop.set_debug(debug)
        return loop.run_until_complete(main)
    finally:
        try:
            _cancel_all_tasks(loop)
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            events.set_event_loop(None)
            loop.close()


def _cancel_all_tasks(loop):
    pending = tasks.all_tasks(loop)
    if not pending:
        return
    for task in pending:
        task.cancel()
    loop.run_until_complete(tasks.gather(*pending, return_exceptions=True))
    for task in pending:
        if task.cancelled():
            continue
        if task.exception() is not None:
            loop.call_exception_handler({
                "message": "unhandled exception during asyncio.run() shutdown",
                "exception": task.exception(),
                "task": task,
            })
