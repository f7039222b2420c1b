"""Event-loop selection shared by the zloop benchmarks.

A *loop spec* names one loop implementation:

    asyncio          stock ``asyncio.new_event_loop()``
    uvloop           ``uvloop.new_event_loop()`` (only if uvloop imports)
    zloop:<backend>  ``zloop.new_event_loop(backend=<backend>)`` for each
                     name in ``zloop.backends()`` (only if zloop imports)
    zloop:uring+completion  the uring backend with ZLOOP_URING_COMPLETION=1
                     (stream transports through completions, issue 13 level 2)
    zloop            ``zloop.new_event_loop()``, the default backend (as a
                     ``--loops`` item it means every backend, unless
                     ``select(..., expand_zloop=False)``)

Peers that run from their own virtual environment (made by bench/peers.sh
under $ZLOOP_PEERS_DIR, default ~/.cache/zloop-bench-peers), offered only by
``select(..., peers=True)``: the caller runs such a spec's child with
``interpreter(spec)`` and ``child_env(spec)``:

    rloop            ``rloop.new_event_loop()`` (Rust), env py311
    zloop-zig        the Zig zloop from PyPI (needs Python >= 3.12 and has our
                     import name), env py312
    uvloop@3.12      uvloop in the Zig loop's interpreter: what the
                     interpreter alone changes against ``uvloop``

Use from a script in bench/ with ``import _loops``; from one elsewhere under
bench/ with::

    sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
    import _loops
"""

import asyncio
import functools
import json
import os
import subprocess
import sys

# spec -> (peer environment, module the loop comes from)
PEERS = {
    "rloop": ("py311", "rloop"),
    "zloop-zig": ("py312", "zloop"),
    "uvloop@3.12": ("py312", "uvloop"),
}


def peers_dir():
    return os.environ.get("ZLOOP_PEERS_DIR") or os.path.expanduser("~/.cache/zloop-bench-peers")


def _peer_python(spec):
    return os.path.join(peers_dir(), PEERS[spec][0], "bin", "python")


def interpreter(spec):
    """The Python a child measuring *spec* runs with."""
    return _peer_python(spec) if spec in PEERS else sys.executable


COMPLETION_SUFFIX = "+completion"
COMPLETION_ENV = "ZLOOP_URING_COMPLETION"


def child_env(spec):
    """The environment of such a child: a peer's without PYTHONPATH, which points at our own zloop."""
    env = dict(os.environ)
    if spec in PEERS:
        env.pop("PYTHONPATH", None)
    env.pop(COMPLETION_ENV, None)
    if spec.endswith(COMPLETION_SUFFIX):
        env[COMPLETION_ENV] = "1"
    return env


@functools.lru_cache(maxsize=None)
def _peer_versions(env_name):
    """{module: version} of the peer modules importable in that environment ({} when it is missing)."""
    python = os.path.join(peers_dir(), env_name, "bin", "python")
    if not os.access(python, os.X_OK):
        return {}
    modules = sorted({mod for env, mod in PEERS.values() if env == env_name})
    code = ("import importlib.metadata as m, importlib.util as u, json, sys\n"
            "print(json.dumps({'python': sys.version.split()[0], **{n: m.version(n) for n in sys.argv[1:] "
            "if u.find_spec(n)}}))")
    proc = subprocess.run([python, "-c", code, *modules], capture_output=True, text=True,
                          env=child_env("rloop"))
    return json.loads(proc.stdout) if proc.returncode == 0 else {}


def _peer_available(spec):
    env_name, module = PEERS[spec]
    return module in _peer_versions(env_name)


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


def available(peers=False):
    """All loop specs usable in this interpreter (with peers: and the peers whose environment exists), in
    canonical order."""
    specs = ["asyncio"]
    try:
        import uvloop  # noqa: F401
        specs.append("uvloop")
    except ImportError:
        pass
    zloop = _import_zloop()
    if zloop is not None:
        backends = _zloop_backends(zloop)
        specs.extend("zloop:" + b for b in backends)
        if "uring" in backends:
            specs.append("zloop:uring" + COMPLETION_SUFFIX)
    if peers:
        specs.extend(spec for spec in PEERS if _peer_available(spec))
    return specs


def select(arg=None, expand_zloop=True, peers=False):
    """Parse a ``--loops`` value (comma separated; ``zloop`` means every
    zloop backend, or with expand_zloop=False the one spec ``zloop``, the
    default backend) into a list of specs.  None/empty selects all available.
    Asking for a loop that is not available is an error (ValueError).  With peers, the peer specs are offered
    too (the caller runs them with interpreter() and child_env())."""
    avail = available(peers)
    if not arg:
        return avail
    chosen = []
    for item in (s.strip() for s in arg.split(",")):
        if not item:
            continue
        if item == "zloop":
            matches = [s for s in avail if s.startswith("zloop:") and not s.endswith(COMPLETION_SUFFIX)]
            if not matches:
                raise ValueError("--loops zloop: zloop is not importable or "
                                 "reports no backends")
            if not expand_zloop:
                matches = [item]
        elif item in avail:
            matches = [item]
        else:
            hint = " (run bench/peers.sh)" if item in PEERS else ""
            raise ValueError(f"loop {item!r} is not available here{hint} "
                             f"(available: {', '.join(avail)})")
        chosen.extend(m for m in matches if m not in chosen)
    return chosen


def make_loop(spec):
    """A new event loop for *spec*; checks that it is the loop asked for."""
    if spec == "asyncio":
        loop = asyncio.new_event_loop()
        expected = "asyncio"
    elif spec == "rloop":
        import rloop
        loop = rloop.new_event_loop()
        expected = "rloop"
    elif spec == "zloop-zig":
        import zloop
        if hasattr(zloop, "backends"):
            raise RuntimeError("zloop-zig: imported our own zloop, not the Zig one (PYTHONPATH set?)")
        loop = zloop.new_event_loop()
        expected = "zloop"
    elif spec in ("uvloop", "uvloop@3.12"):
        import uvloop
        loop = uvloop.new_event_loop()
        expected = "uvloop"
    elif spec == "zloop" or spec.startswith("zloop:"):
        zloop = _import_zloop()
        if zloop is None:
            raise RuntimeError("zloop is not importable (PYTHONPATH=python?)")
        backend, completion, _ = spec.partition(":")[2].partition(COMPLETION_SUFFIX)
        saved = os.environ.pop(COMPLETION_ENV, None)
        if completion:
            os.environ[COMPLETION_ENV] = "1"     # read when the loop is made
        try:
            loop = (zloop.new_event_loop(backend=backend) if backend
                    else zloop.new_event_loop())
        finally:
            os.environ.pop(COMPLETION_ENV, None)
            if saved is not None:
                os.environ[COMPLETION_ENV] = saved
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
    for spec, (env_name, module) in PEERS.items():
        found = _peer_versions(env_name)
        out[spec] = f"{module} {found[module]} on Python {found['python']}" if module in found else None
    return out
