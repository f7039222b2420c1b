"""Event-loop selection for the echo benchmark.

A loop is named by a spec string:

    asyncio            the stock asyncio event loop
    uvloop             uvloop
    zloop              zloop with its default backend
    zloop:<backend>    zloop with one compiled backend (see zloop.backends())

zloop and uvloop are optional: a spec whose module cannot be imported is
reported as unavailable instead of failing the whole benchmark.
"""

from __future__ import annotations

import asyncio
import importlib
import platform
import sys


def _import(name):
    """Return the module `name`, or None if it cannot be imported."""
    try:
        return importlib.import_module(name)
    except Exception:  # ImportError, or a broken extension build
        return None


def zloop_backends() -> list:
    """Names of the compiled zloop backends ([] when zloop is missing)."""
    zloop = _import("zloop")
    if zloop is None or not hasattr(zloop, "backends"):
        return []
    try:
        return [str(name) for name in zloop.backends()]
    except Exception:
        return []


def default_specs() -> list:
    """asyncio, uvloop if installed, then every compiled zloop backend."""
    specs = ["asyncio"]
    if _import("uvloop") is not None:
        specs.append("uvloop")
    specs.extend(f"zloop:{name}" for name in zloop_backends())
    return specs


def unavailable_reason(spec: str):
    """None if `spec` can be built here, else a one-line reason."""
    kind, _, backend = spec.partition(":")
    if kind == "asyncio":
        return None if not backend else "asyncio takes no backend"
    if kind == "uvloop":
        if backend:
            return "uvloop takes no backend"
        return None if _import("uvloop") is not None else "uvloop is not installed"
    if kind == "zloop":
        if _import("zloop") is None:
            return "cannot import zloop (run with PYTHONPATH=python?)"
        if backend and backend not in zloop_backends():
            return f"zloop backend {backend!r} is not compiled in"
        return None
    return f"unknown loop spec {spec!r} (asyncio, uvloop, zloop[:backend])"


def new_event_loop(spec: str) -> asyncio.AbstractEventLoop:
    """Create a new, not yet running, event loop for `spec`."""
    reason = unavailable_reason(spec)
    if reason is not None:
        raise ValueError(reason)
    kind, _, backend = spec.partition(":")
    if kind == "asyncio":
        return asyncio.new_event_loop()
    if kind == "uvloop":
        return _import("uvloop").new_event_loop()
    zloop = _import("zloop")
    if backend:
        return zloop.new_event_loop(backend=backend)
    return zloop.new_event_loop()


def versions() -> dict:
    """Python and event-loop library versions, for result files."""
    info = {
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "python_build": " ".join(platform.python_build()),
        "python_executable": sys.executable,
    }
    for name in ("uvloop", "zloop"):
        module = _import(name)
        if module is not None:
            info[name] = getattr(module, "__version__", "unknown")
    if "zloop" in info:
        info["zloop_backends"] = zloop_backends()
    return info
