"""Event-loop selection shared by the zloop benchmarks.

A *loop spec* names one loop implementation:

    asyncio          stock ``asyncio.new_event_loop()``
    uvloop           ``uvloop.new_event_loop()`` (only if uvloop imports)
    zloop:<backend>  ``zloop.new_event_loop(backend=<backend>)`` for each
                     name in ``zloop.backends()`` (only if zloop imports)
    zloop            ``zloop.new_event_loop()``, the default backend (as a
                     ``--loops`` item it means every backend, unless
                     ``select(..., expand_zloop=False)``)

Use from a script in bench/ with ``import _loops``; from one elsewhere under
bench/ with::

    sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
    import _loops
"""

import asyncio
import sys


def _import_zloop():
    try:
        import zloop
    except ImportError:
        return None
    if getattr(zloop, "__file__", None) is None:   # bare dir: not built yet
        return None
    return zloop


def _zloop_backends(zloop):
    try:
        return [str(name) for name in zloop.backends()]
    except Exception as exc:  # zloop present but broken: say so, don't hide it
        print(f"warning: zloop imported but zloop.backends() failed: {exc!r}",
              file=sys.stderr)
        return []


def available():
    """All loop specs usable in this interpreter, in canonical order."""
    specs = ["asyncio"]
    try:
        import uvloop  # noqa: F401
        specs.append("uvloop")
    except ImportError:
        pass
    zloop = _import_zloop()
    if zloop is not None:
        specs.extend("zloop:" + b for b in _zloop_backends(zloop))
    return specs


def select(arg=None, expand_zloop=True):
    """Parse a ``--loops`` value (comma separated; ``zloop`` means every
    zloop backend, or with expand_zloop=False the one spec ``zloop``, the
    default backend) into a list of specs.  None/empty selects all available.
    Asking for a loop that is not available is an error (ValueError)."""
    avail = available()
    if not arg:
        return avail
    chosen = []
    for item in (s.strip() for s in arg.split(",")):
        if not item:
            continue
        if item == "zloop":
            matches = [s for s in avail if s.startswith("zloop:")]
            if not matches:
                raise ValueError("--loops zloop: zloop is not importable or "
                                 "reports no backends")
            if not expand_zloop:
                matches = [item]
        elif item in avail:
            matches = [item]
        else:
            raise ValueError(f"loop {item!r} is not available here "
                             f"(available: {', '.join(avail)})")
        chosen.extend(m for m in matches if m not in chosen)
    return chosen


def make_loop(spec):
    """A new event loop for *spec*; checks that it is the loop asked for."""
    if spec == "asyncio":
        loop = asyncio.new_event_loop()
        expected = "asyncio"
    elif spec == "uvloop":
        import uvloop
        loop = uvloop.new_event_loop()
        expected = "uvloop"
    elif spec == "zloop" or spec.startswith("zloop:"):
        zloop = _import_zloop()
        if zloop is None:
            raise RuntimeError("zloop is not importable (PYTHONPATH=python?)")
        backend = spec.partition(":")[2]
        loop = (zloop.new_event_loop(backend=backend) if backend
                else zloop.new_event_loop())
        expected = "zloop"
    else:
        raise ValueError(f"unknown loop spec {spec!r}")
    module = type(loop).__module__.split(".")[0]
    if module != expected:
        loop.close()
        raise RuntimeError(f"{spec}: got loop class {type(loop).__module__}."
                           f"{type(loop).__qualname__}")
    return loop


def versions():
    """Versions of the loop libraries present, for benchmark reports."""
    out = {"python": sys.version.split()[0]}
    try:
        import uvloop
        out["uvloop"] = uvloop.__version__
    except ImportError:
        out["uvloop"] = None
    zloop = _import_zloop()
    if zloop is None:
        out["zloop"] = None
    else:
        out["zloop"] = str(getattr(zloop, "__version__", "unknown"))
        out["zloop_backends"] = _zloop_backends(zloop)
    return out
