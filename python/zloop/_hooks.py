"""Python helpers the C core calls: error reports, debug-mode stacks and warnings, handle reprs.

They are kept here, not in C, because they run only on errors or in debug mode.
"""

import inspect
import sys
from asyncio import constants, coroutines, format_helpers, futures, protocols, tasks, transports, trsock
from asyncio.log import logger

from . import _zloop


# Python 3.13 shows a callback's arguments only when told the loop is in debug mode.
# asyncio.iscoroutinefunction warns from 3.14 on; asyncio itself calls the private twin (same test, no warning).
iscoroutinefunction = getattr(coroutines, "_iscoroutinefunction", coroutines.iscoroutinefunction)
_FORMAT_TAKES_DEBUG = "debug" in inspect.signature(format_helpers._format_callback_source).parameters


def _callback_source(callback, args, debug=False):
    try:
        if _FORMAT_TAKES_DEBUG:
            return format_helpers._format_callback_source(callback, args if args is not None else (), debug=debug)
        return format_helpers._format_callback_source(callback, args if args is not None else ())
    except Exception:  # the formatting helper is private to asyncio; never let a repr fail a report
        return repr(callback)


def _debug(handle):
    loop = handle._loop
    return loop is not None and loop.get_debug()


def report_callback_error(handle, exc):
    """Hand an exception raised by a handle's callback to its loop's exception handler, as asyncio does."""
    context = {
        "message": f"Exception in callback {_callback_source(handle._callback, handle._args, _debug(handle))}",
        "exception": exc,
        "handle": handle,
    }
    if handle._source_traceback:
        context["source_traceback"] = handle._source_traceback
    handle._loop.call_exception_handler(context)


def format_handle(handle):
    """The repr of a Handle or TimerHandle, in asyncio's format."""
    if handle._repr is not None:
        return handle._repr
    info = [type(handle).__name__]
    if handle._cancelled:
        info.append("cancelled")
    if isinstance(handle, _zloop.TimerHandle):
        info.insert(2 if handle._cancelled else 1, f"when={handle._when}")
    if handle._callback is not None:
        info.append(_callback_source(handle._callback, handle._args, _debug(handle)))
    if handle._source_traceback:
        frame = handle._source_traceback[-1]
        info.append(f"created at {frame[0]}:{frame[1]}")
    return "<{}>".format(" ".join(info))


def _describe_for_slow_warning(handle):
    callback = handle._callback
    owner = getattr(callback, "__self__", None)
    if isinstance(owner, tasks.Task):
        return repr(owner)
    return str(handle)


def warn_slow_callback(loop, handle, seconds):
    logger.warning("Executing %s took %.3f seconds", _describe_for_slow_warning(handle), seconds)


def extract_stack():
    """The stack of whoever called into the loop (C methods have no frame of their own)."""
    return format_helpers.extract_stack(sys._getframe(1))


def check_callback(callback, method):
    if coroutines.iscoroutine(callback) or iscoroutinefunction(callback):
        raise TypeError(f"coroutines cannot be used with {method}()")
    if not callable(callback):
        raise TypeError(f"a callable object was expected by {method}(), got {callback!r}")


def transport_fatal_error(transport, exc, message):
    """A transport's fatal error, as asyncio's _fatal_error reports it (before the transport closes itself)."""
    if isinstance(exc, OSError):
        if transport._loop is not None and transport._loop.get_debug():
            logger.debug("%r: %s", transport, message, exc_info=True)
        return
    transport._loop.call_exception_handler({
        "message": message,
        "exception": exc,
        "transport": transport,
        "protocol": transport._protocol,
    })


def transport_protocol_error(transport, exc, message):
    """pause_writing/resume_writing raised: reported, the connection goes on."""
    transport._loop.call_exception_handler({
        "message": message,
        "exception": exc,
        "transport": transport,
        "protocol": transport._protocol,
    })


def warn_send_after_lost():
    logger.warning("socket.send() raised exception.")


_zloop._set_hooks(
    report_callback_error=report_callback_error,
    warn_slow_callback=warn_slow_callback,
    extract_stack=extract_stack,
    format_handle=format_handle,
    check_callback=check_callback,
    task_type=tasks.Task,
    tasks_namespace=vars(tasks),
    future_type=futures.Future,
    set_result_unless_cancelled=futures._set_result_unless_cancelled,
    transport_fatal_error=transport_fatal_error,
    transport_protocol_error=transport_protocol_error,
    warn_send_after_lost=warn_send_after_lost,
    transport_socket_type=trsock.TransportSocket,
    buffered_protocol_type=protocols.BufferedProtocol,
    transport_base=transports.Transport,
)

# The C stream transport supports start_tls and zero-copy sendfile, as asyncio's socket transport does.
_zloop.TCPTransport._start_tls_compatible = True
_zloop.TCPTransport._sendfile_compatible = constants._SendfileMode.TRY_NATIVE

# The datagram transport type: an asyncio.DatagramTransport, and an asyncio.Transport as asyncio's own is.
_zloop._set_hooks(datagram_transport_base=(transports.Transport, transports.DatagramTransport))
_zloop.UDPTransport.max_size = 256 * 1024
