"""zloop: a drop-in asyncio event loop written in C, with native (epoll/kqueue), uv and event backends.

    import zloop
    zloop.run(main())                       # or asyncio.run(main(), loop_factory=zloop.new_event_loop)
    loop = zloop.new_event_loop(backend="uv")

zloop.EventLoopPolicy and zloop.install() exist where asyncio still has policies, deprecated on 3.14+ as asyncio's.
"""

from . import _loop
from ._zloop import Handle, TimerHandle, backends, default_backend
from ._loop import Loop, new_event_loop, run

__all__ = ["Handle", "Loop", "TimerHandle", "backends", "default_backend", "new_event_loop", "run"]
if hasattr(_loop, "EventLoopPolicy"):
    __all__ += ["install"]
    install = _loop.install
    if not _loop.POLICY_DEPRECATED:
        __all__ += ["EventLoopPolicy"]
        EventLoopPolicy = _loop.EventLoopPolicy
__version__ = "0.1.0"


def __getattr__(name):
    # Python 3.14+: asyncio's policy classes warn when looked up; so does zloop's.
    if name == "EventLoopPolicy" and hasattr(_loop, "EventLoopPolicy"):
        import warnings
        warnings.warn(f"'zloop.{name}' is deprecated and {_loop.POLICY_REMOVAL}", DeprecationWarning, stacklevel=2)
        return _loop.EventLoopPolicy
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
