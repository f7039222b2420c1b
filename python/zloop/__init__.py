"""zloop: a drop-in asyncio event loop written in C, with native (epoll/kqueue), uv and event backends.

    import zloop
    zloop.run(main())                       # or asyncio.run(main(), loop_factory=zloop.new_event_loop)
    loop = zloop.new_event_loop(backend="uv")
"""

from ._zloop import Handle, TimerHandle, backends, default_backend
from ._loop import EventLoopPolicy, Loop, install, new_event_loop, run

__all__ = [
    "EventLoopPolicy", "Handle", "Loop", "TimerHandle",
    "backends", "default_backend", "install", "new_event_loop", "run",
]
__version__ = "0.1.0"
