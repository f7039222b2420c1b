# tests/frameworks/inject/zloop_fw_inject.py — what a framework-suite run changes in each Python process:
# which loop uvicorn's loop="auto" (and optionally asyncio's policy) gives, and a record of every loop that ran.
#
# Mode comes from ZLOOP_FW_MODE: "zloop" (zloop loops on ZLOOP_BACKEND) or "control" (stock asyncio);
# ZLOOP_FW_POLICY=1 in zloop mode also makes zloop asyncio's default loop (zloop.install()'s policy).
# In zloop mode blockbuster (anyio's and aiohttp's blocking-call detector) gives zloop's loop methods the
# leave it gives asyncio's methods of the same names.
# Loaded at start-up by sitecustomize.py (so subprocesses of a test get the same loops) and by the pytest
# plugin zloop_fw_plugin.py. Changes are made after the target module is imported, never by importing
# it early, so a process that does not use asyncio, uvicorn or blockbuster is left untouched.

import importlib.abc
import importlib.util
import os
import sys
import threading

MODE = os.environ.get("ZLOOP_FW_MODE", "control")
POLICY = MODE == "zloop" and os.environ.get("ZLOOP_FW_POLICY") == "1"
ZLOOP_LOOP_SPEC = "zloop:new_event_loop"

_activated = False
_seen_lock = threading.Lock()
_seen = set()          # loop kinds that started running since the last take_seen_loops()


def loop_kind(loop):
    """'zloop', 'asyncio', 'uvloop' or the loop class's module, for the record of loops that ran."""
    module = type(loop).__module__ or ""
    for kind in ("zloop", "asyncio", "uvloop"):
        if module == kind or module.startswith(kind + "."):
            return kind
    # A test's own subclass of a stock loop is still a stock loop.
    for base in type(loop).__mro__:
        if (base.__module__ or "").startswith("asyncio."):
            return "asyncio"
        if (base.__module__ or "").startswith("zloop"):
            return "zloop"
    return module or "unknown"


def take_seen_loops():
    """The loop kinds that ran since the previous call (any thread), and start a new record."""
    with _seen_lock:
        kinds = sorted(_seen)
        _seen.clear()
    return kinds


def zloop_uvicorn_loop_factory(use_subprocess=False):
    """uvicorn's LOOP_FACTORIES protocol: given use_subprocess, return a loop factory (zloop's)."""
    import zloop
    return zloop.new_event_loop


def install_zloop_policy_if_reset():
    """With ZLOOP_FW_POLICY, put zloop's policy back if a test reset or replaced it with a stock one."""
    if not POLICY:
        return
    import asyncio
    import zloop
    current = asyncio.events._event_loop_policy
    if current is None or type(current) is asyncio.DefaultEventLoopPolicy:
        asyncio.set_event_loop_policy(zloop.EventLoopPolicy())


def _after_asyncio(module):
    events = sys.modules["asyncio.events"]
    original = events._set_running_loop
    if getattr(original, "_zloop_fw", False):
        return

    def set_running_loop(loop):
        if loop is not None:
            kind = loop_kind(loop)
            with _seen_lock:
                _seen.add(kind)
        original(loop)

    set_running_loop._zloop_fw = True
    events._set_running_loop = set_running_loop
    module._set_running_loop = set_running_loop
    install_zloop_policy_if_reset()


def _after_uvicorn_config(module):
    # loop="auto" picks uvloop when it is installed; the control must be stock asyncio and the zloop run
    # zloop, so "auto" is pointed at the run's loop. Explicit choices ("asyncio", "uvloop", "module:attr")
    # keep their meaning. ZLOOP_LOOP_SPEC is what `uvicorn --loop zloop:new_event_loop` would load.
    factories = getattr(module, "LOOP_FACTORIES", None)
    if not isinstance(factories, dict) or "auto" not in factories:
        return
    if MODE == "zloop":
        factories["auto"] = __name__ + ":zloop_uvicorn_loop_factory"
    else:
        factories["auto"] = factories.get("asyncio", factories["auto"])


def _zloop_source_files():
    spec = importlib.util.find_spec("zloop")
    if spec is None or not spec.submodule_search_locations:
        return []
    folder = list(spec.submodule_search_locations)[0]
    return sorted(name for name in os.listdir(folder) if name.endswith(".py"))


def _zloop_can_block_rules(rules):
    """For blockbuster rules naming functions of asyncio's files, the same function names in zloop's files."""
    names = set()
    for filename, functions in rules:
        if filename.replace("\\", "/").startswith("asyncio/"):
            names.update(functions)
    if not names:
        return []
    return [("zloop/" + source, set(names)) for source in _zloop_source_files()]


def _after_blockbuster(module):
    # blockbuster (used by anyio's and aiohttp's suites) raises on blocking calls made while a loop runs,
    # except in the loop implementation's own methods that must make them, which it names by file and
    # function: asyncio/base_events.py subprocess_exec and sendfile, asyncio/unix_events.py
    # create_unix_server, ... In zloop mode zloop's methods of the same names get the same leave; nothing else.
    cls = getattr(module, "BlockBusterFunction", None)
    if MODE != "zloop" or cls is None or getattr(cls.__init__, "_zloop_fw", False):
        return
    original = cls.__init__

    def __init__(self, *args, **kwargs):
        rules = kwargs.get("can_block_functions")
        if rules:
            kwargs["can_block_functions"] = list(rules) + _zloop_can_block_rules(rules)
        original(self, *args, **kwargs)

    __init__._zloop_fw = True
    cls.__init__ = __init__


def _after_aiohttp_test_utils(module):
    # aiohttp's pytest plugin runs an async test that does not ask for the `loop` fixture on a loop from
    # setup_test_loop() with its default factory, asyncio.new_event_loop ("pyloop"); its loop_context()
    # has the same default. In zloop mode the default is zloop's, as for the fixture.
    if MODE != "zloop":
        return
    import asyncio
    import zloop
    for name in ("setup_test_loop", "loop_context"):
        function = getattr(module, name, None)
        function = getattr(function, "__wrapped__", function)
        defaults = getattr(function, "__defaults__", None)
        if defaults and defaults[0] is asyncio.new_event_loop:
            function.__defaults__ = (zloop.new_event_loop,) + defaults[1:]


_AFTER_IMPORT = {"asyncio": _after_asyncio, "uvicorn.config": _after_uvicorn_config,
                 "blockbuster.blockbuster": _after_blockbuster,
                 "aiohttp.test_utils": _after_aiohttp_test_utils}


class _LoaderWithCallback(importlib.abc.Loader):
    """Runs the real loader, then the callback on the fresh module; everything else is the real loader's."""

    def __init__(self, loader, callback):
        self._loader = loader
        self._callback = callback

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        module.__spec__.loader = self._loader
        module.__loader__ = self._loader
        self._callback(module)

    def __getattr__(self, name):
        return getattr(self._loader, name)


class _AfterImportFinder(importlib.abc.MetaPathFinder):
    """Finds nothing itself: wraps the real spec of the modules in _AFTER_IMPORT so they get patched."""

    def find_spec(self, fullname, path, target=None):
        callback = _AFTER_IMPORT.get(fullname)
        if callback is None:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None and spec.loader is not None and hasattr(spec.loader, "exec_module"):
                spec.loader = _LoaderWithCallback(spec.loader, callback)
                return spec
            if spec is not None:
                return None
        return None


def activate():
    """Patch now what is already imported, and on import what is not; the finder goes (back) to the front of
    sys.meta_path, ahead of finders installed since (pytest's assertion rewriter loads aiohttp.test_utils,
    a "test_*.py" file; the finder wraps that loader too). Idempotent."""
    global _activated
    finders = [finder for finder in sys.meta_path if isinstance(finder, _AfterImportFinder)]
    for finder in finders:
        sys.meta_path.remove(finder)
    sys.meta_path.insert(0, finders[0] if finders else _AfterImportFinder())
    if _activated:
        return
    _activated = True
    for name, callback in _AFTER_IMPORT.items():
        if name in sys.modules:
            callback(sys.modules[name])
