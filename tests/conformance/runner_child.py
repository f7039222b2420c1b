"""Child process of the conformance runner: runs one test.test_asyncio module
under a chosen event loop and streams per-test results to the parent.

Run only by run.py (one process per module, restarted after a hang/crash).
Must stay importable by every CPython 3.9-3.15 (no 3.10+ syntax).

Protocol: one JSON object per line on --event-fd:
  {"ev": "list", "ids": [...], "dropped": [...], "loop_type": "...",
   "backend": loop.get_backend() or null}
  {"ev": "start", "id": ...}
  {"ev": "loop", "id": ...}      first chosen loop built during that test
  {"ev": "end", "id": ..., "outcome": pass|fail|error|skip|internal,
   "summary": ..., "detail": ..., "loops": n, "foreign": n, "dur": s}
  {"ev": "done"}
Fixture problems arrive as "end" with id "<fixture> setUpClass (mod.Cls)";
a module that fails to import as "end" with id "<module> test_x".
"""

import argparse
import faulthandler
import functools
import importlib
import json
import os
import re
import sys
import threading
import time
import traceback
import unittest

ID_PREFIX = "test.test_asyncio."
DETAIL_LIMIT = 8000
SUMMARY_LIMIT = 300

# Factory-driven variants of one test family that differ only in the stock
# selector / child watcher they use: run the first match, drop the others.
VARIANT_PREFERENCE = (r"^Select", r"Selector", r"Threaded")
FACTORY_HOOKS = ("create_event_loop", "new_loop")
# Modules whose loop hooks (create_event_loop/new_loop) get the chosen loop;
# elsewhere such hooks build mock loops that belong to the test.
FACTORY_MODULES = ("test_events", "test_sock_lowlevel", "test_sendfile",
                   "test_server", "test_buffered_proto", "test_sslproto")

_event_fd = None
_counts = {"loops": 0, "foreign": 0}
_tls = threading.local()
_emit_lock = threading.Lock()
_active = {"id": None, "loop_seen": False}


# ---------------------------------------------------------------- events

def emit(obj):
    data = (json.dumps(obj) + "\n").encode("utf-8", "replace")
    with _emit_lock:
        while data:
            written = os.write(_event_fd, data)
            data = data[written:]


def short_id(test_id):
    if test_id.startswith(ID_PREFIX):
        return test_id[len(ID_PREFIX):]
    return test_id


# ---------------------------------------------------------------- loop

def clamp_support_timeouts(timeout):
    """As regrtest does for its --timeout, cap test.support's wait bounds,
    here to half the per-test timeout, so a test's own wait expires (and
    reports where) before the watchdog declares it hung."""
    from test import support
    cap = timeout / 2.0
    for name in ("LOOPBACK_TIMEOUT", "INTERNET_TIMEOUT", "SHORT_TIMEOUT",
                 "LONG_TIMEOUT"):
        if hasattr(support, name):
            setattr(support, name, min(getattr(support, name), cap))


def resolve_factory(loop, backend):
    """Return (factory, label) for --loop; factory() -> new event loop."""
    import asyncio
    if loop == "asyncio":
        return asyncio.SelectorEventLoop, "asyncio.SelectorEventLoop"
    if loop == "uvloop":
        import uvloop
        return uvloop.new_event_loop, "uvloop.new_event_loop"
    if loop == "zloop":
        loop = "zloop:new_event_loop"
    if ":" not in loop:
        raise SystemExit("bad loop spec %r (want asyncio, uvloop, zloop "
                         "or module:callable)" % loop)
    mod_name, _, attr_path = loop.partition(":")
    obj = importlib.import_module(mod_name)
    for part in attr_path.split("."):
        obj = getattr(obj, part)
    if backend:
        obj = functools.partial(obj, backend=backend)
    return obj, loop + ("[backend=%s]" % backend if backend else "")


def make_counting_factory(factory):
    def conformance_loop_factory():
        _tls.in_factory = True
        try:
            loop = factory()
        finally:
            _tls.in_factory = False
        _counts["loops"] += 1
        if _active["id"] is not None and not _active["loop_seen"]:
            # So a test that then hangs or crashes still counts as one
            # that ran on the chosen loop.
            _active["loop_seen"] = True
            emit({"ev": "loop", "id": _active["id"]})
        return loop
    return conformance_loop_factory


def install_foreign_counter():
    """Count stock asyncio loops created outside the chosen factory."""
    from asyncio import base_events
    orig_init = base_events.BaseEventLoop.__init__

    @functools.wraps(orig_init)
    def counting_init(self, *args, **kwargs):
        if not getattr(_tls, "in_factory", False):
            _counts["foreign"] += 1
        orig_init(self, *args, **kwargs)

    base_events.BaseEventLoop.__init__ = counting_init


def install_policy_factory(factory):
    """Make every stock default policy (including ones re-created after a
    module resets the policy to None) build loops with the chosen factory;
    this also covers asyncio.new_event_loop(), asyncio.run() and Runner."""
    import asyncio
    from asyncio import events, unix_events
    # 3.14+ deprecates the public names (they warn); the private ones are the same objects.
    policy_cls = getattr(unix_events, "_DefaultEventLoopPolicy", None) or \
        asyncio.DefaultEventLoopPolicy
    policy_cls._loop_factory = staticmethod(factory)
    getattr(events, "_set_event_loop_policy", asyncio.set_event_loop_policy)(None)


class _ClosedLoopStub:
    """Stands in for a loop already closed, for the policy-watcher half of
    test_utils.TestCase.close_loop."""
    _default_executor = None

    def close(self):
        pass


def patch_run_until_timeout():
    """test_utils.run_until() signals its timeout with futures.TimeoutError,
    which asyncio.futures no longer has (3.8+): the timeout then surfaces as
    an AttributeError. Give the name back so it reads as a TimeoutError."""
    from asyncio import futures
    if not hasattr(futures, "TimeoutError"):
        import asyncio
        futures.TimeoutError = asyncio.TimeoutError


def patch_close_loop():
    """test_utils.TestCase.close_loop (harness cleanup, not a test) reads
    loop._default_executor, a private attribute of asyncio's BaseEventLoop.
    For loops without it, do the same through the public API."""
    from test.test_asyncio import utils as test_utils
    orig = test_utils.TestCase.close_loop

    def close_loop(loop):
        if hasattr(loop, "_default_executor"):
            return orig(loop)
        if not loop.is_closed():
            loop.run_until_complete(loop.shutdown_default_executor())
        loop.close()
        return orig(_ClosedLoopStub())

    test_utils.TestCase.close_loop = staticmethod(close_loop)


# ---------------------------------------------------------------- classes

def concrete_test_classes(module):
    found = []
    for name, obj in vars(module).items():
        if (isinstance(obj, type) and issubclass(obj, unittest.TestCase)
                and obj.__module__ == module.__name__):
            found.append((name, obj))
    return found


def test_names(cls, own):
    names = vars(cls) if own else dir(cls)
    return set(n for n in names if n.startswith("test"))


def is_variant_class(cls):
    """A class that only configures inherited tests (its loop, selector or
    child watcher) and adds no test of its own."""
    inherited = set()
    for base in cls.__bases__:
        inherited |= test_names(base, own=False)
    return bool(inherited) and test_names(cls, own=True) <= inherited


def pick_variant(members):
    for pattern in VARIANT_PREFERENCE:
        for name, cls in members:
            if re.search(pattern, name):
                return name
    for name, cls in members:
        if "Proactor" not in name:
            return name
    return members[0][0]


def has_loop_hook(cls):
    return any(hasattr(cls, hook) for hook in FACTORY_HOOKS) or \
        hasattr(cls, "Watcher")


def duplicate_variants(module):
    """Names of per-selector / per-watcher duplicates to leave out: within a
    family (same bases, each with a loop hook) keep the preferred class and
    drop the members that only re-configure the inherited tests."""
    families = {}
    for name, cls in concrete_test_classes(module):
        if has_loop_hook(cls):
            families.setdefault(cls.__bases__, []).append((name, cls))
    dropped = []
    for members in families.values():
        if len(members) < 2:
            continue
        keep = pick_variant(members)
        dropped.extend(name for name, cls in members
                       if name != keep and is_variant_class(cls))
    return sorted(dropped)


def override_factories(module, factory):
    """In factory-driven modules, subclass each class with a loop hook so
    the hook returns the chosen loop; the subclass keeps the name (and
    replaces the original in the module) so test ids stay upstream's."""
    if module.__name__[len(ID_PREFIX):] not in FACTORY_MODULES:
        return

    def make_loop(self):
        return factory()

    for name, cls in concrete_test_classes(module):
        hooks = [h for h in FACTORY_HOOKS if hasattr(cls, h)]
        if not hooks:
            continue
        attrs = dict((h, make_loop) for h in hooks)
        attrs["__module__"] = cls.__module__
        attrs["__qualname__"] = cls.__qualname__
        setattr(module, name, type(name, (cls,), attrs))


def load_module_tests(module, dropped):
    """Like TestLoader.loadTestsFromModule, minus the dropped classes
    (which stay importable by name: some tests refer to siblings)."""
    loader = unittest.defaultTestLoader
    suite = unittest.TestSuite()
    for name in dir(module):
        obj = getattr(module, name)
        if (isinstance(obj, type) and issubclass(obj, unittest.TestCase)
                and name not in dropped):
            suite.addTests(loader.loadTestsFromTestCase(obj))
    return suite


# ---------------------------------------------------------------- results

def exc_summary(err):
    etype, value, _tb = err
    lines = traceback.format_exception_only(etype, value)
    text = "".join(lines).strip().splitlines()
    first = text[0] if text else etype.__name__
    return first[:SUMMARY_LIMIT]


class StreamingResult(unittest.TestResult):
    """Reports each test to the parent as it starts and ends."""

    def __init__(self, timeout, hang_file):
        super().__init__()
        self._timeout = timeout
        self._hang_file = hang_file
        self._cur = None
        # Loops made between two tests belong to the next one: 3.9/3.10's
        # IsolatedAsyncioTestCase.run() builds its loop before startTest.
        self._baseline = dict(_counts)

    def arm_watchdog(self):
        faulthandler.dump_traceback_later(self._timeout, exit=True,
                                          file=self._hang_file)

    def startTest(self, test):
        super().startTest(test)
        self._cur = {"id": short_id(test.id()), "outcome": None,
                     "summary": "", "detail": "",
                     "loops0": self._baseline["loops"],
                     "foreign0": self._baseline["foreign"],
                     "t0": time.monotonic()}
        early = _counts["loops"] > self._baseline["loops"]
        _active["id"], _active["loop_seen"] = self._cur["id"], early
        emit({"ev": "start", "id": self._cur["id"]})
        if early:
            emit({"ev": "loop", "id": self._cur["id"]})
        self.arm_watchdog()

    def stopTest(self, test):
        super().stopTest(test)
        cur, self._cur = self._cur, None
        _active["id"] = None
        self._baseline = dict(_counts)
        if cur is None:
            return
        emit({"ev": "end", "id": cur["id"],
              "outcome": cur["outcome"] or "pass",
              "summary": cur["summary"], "detail": cur["detail"],
              "loops": _counts["loops"] - cur["loops0"],
              "foreign": _counts["foreign"] - cur["foreign0"],
              "dur": round(time.monotonic() - cur["t0"], 3)})
        self.arm_watchdog()

    def _record(self, test, outcome, err=None, reason=""):
        cur = self._cur
        if cur is None or not hasattr(test, "_testMethodName") and \
                not hasattr(test, "test_case"):
            self._record_fixture(test, outcome, err, reason)
            return
        rank = {"skip": 0, "pass": 1, "fail": 2, "error": 3}
        if cur["outcome"] is not None and \
                rank[outcome] <= rank[cur["outcome"]]:
            return
        cur["outcome"] = outcome
        if err is not None:
            cur["summary"] = exc_summary(err)
            cur["detail"] = self._exc_info_to_string(err, test)[:DETAIL_LIMIT]
        else:
            cur["summary"] = reason[:SUMMARY_LIMIT]
            cur["detail"] = ""

    def _record_fixture(self, test, outcome, err, reason):
        """setUpModule/setUpClass/tearDown* problems (no test running)."""
        detail = ""
        if err is not None:
            detail = "".join(traceback.format_exception(*err))[:DETAIL_LIMIT]
        fixture_id = re.sub(r"\(%s" % re.escape(ID_PREFIX), "(", str(test))
        emit({"ev": "end", "id": "<fixture> " + fixture_id,
              "outcome": outcome,
              "summary": exc_summary(err) if err else reason[:SUMMARY_LIMIT],
              "detail": detail, "loops": 0, "foreign": 0, "dur": 0})

    def addSuccess(self, test):
        super().addSuccess(test)
        self._record(test, "pass")

    def addError(self, test, err):
        super().addError(test, err)
        self._record(test, "error", err)

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self._record(test, "fail", err)

    def addSkip(self, test, reason):
        super().addSkip(test, reason)
        self._record(test, "skip", reason=reason)

    def addExpectedFailure(self, test, err):
        super().addExpectedFailure(test, err)
        self._record(test, "pass")

    def addUnexpectedSuccess(self, test):
        super().addUnexpectedSuccess(test)
        self._record(test, "fail", reason="unexpected success")

    def addSubTest(self, test, subtest, err):
        super().addSubTest(test, subtest, err)
        if err is None:
            return
        if issubclass(err[0], test.failureException):
            self._record(test, "fail", err)
        else:
            self._record(test, "error", err)


# ---------------------------------------------------------------- main

def iter_tests(suite):
    for item in suite:
        if isinstance(item, unittest.TestSuite):
            for test in iter_tests(item):
                yield test
        else:
            yield item


def list_modules():
    import test.test_asyncio as pkg
    names = []
    for path in pkg.__path__:
        for fname in os.listdir(path):
            if fname.startswith("test_") and fname.endswith(".py"):
                names.append(fname[:-3])
    return sorted(names)


def probe(args):
    factory, label = resolve_factory(args.loop, args.backend)
    loop = factory()
    info = {"python": sys.executable,
            "version": "%d.%d.%d" % sys.version_info[:3],
            "loop_type": "%s.%s" % (type(loop).__module__,
                                    type(loop).__qualname__),
            "factory": label, "modules": list_modules(),
            "backends": None}
    if hasattr(loop, "get_backend"):
        info["backend"] = loop.get_backend()
    loop.close()
    mod_name = args.loop.partition(":")[0]
    mod = sys.modules.get(mod_name)
    if mod is not None and hasattr(mod, "backends"):
        info["backends"] = list(mod.backends())
    sys.stdout.write(json.dumps(info) + "\n")
    return 0


def load_skip_file(path):
    if not path:
        return set(), {}
    with open(path) as fp:
        data = json.load(fp)
    return set(data.get("skip", [])), dict(data.get("internal", {}))


def run_module(args, hang_file):
    skip, internal = load_skip_file(args.skip_file)
    raw_factory, _label = resolve_factory(args.loop, args.backend)
    factory = make_counting_factory(raw_factory)
    install_foreign_counter()
    install_policy_factory(factory)
    clamp_support_timeouts(args.timeout)   # before test modules import
    patch_close_loop()
    patch_run_until_timeout()

    sample = factory()
    loop_type = "%s.%s" % (type(sample).__module__, type(sample).__qualname__)
    backend = sample.get_backend() if hasattr(sample, "get_backend") else None
    sample.close()
    _counts["loops"] = 0

    try:
        module = importlib.import_module(ID_PREFIX + args.module)
    except unittest.SkipTest as exc:      # e.g. test_windows_events
        skip_id = "<module> " + args.module
        emit({"ev": "list", "ids": [skip_id], "dropped": [],
              "loop_type": loop_type, "backend": backend})
        emit({"ev": "end", "id": skip_id, "outcome": "skip",
              "summary": str(exc)[:SUMMARY_LIMIT], "detail": "",
              "loops": 0, "foreign": 0, "dur": 0})
        emit({"ev": "done"})
        return
    dropped = duplicate_variants(module)
    override_factories(module, factory)
    suite = load_module_tests(module, dropped)
    tests = list(iter_tests(suite))
    ids = [short_id(t.id()) for t in tests]
    emit({"ev": "list", "ids": ids, "dropped": dropped,
          "loop_type": loop_type, "backend": backend})

    selected = []
    for test, test_id in zip(tests, ids):
        if test_id in skip:
            continue
        if test_id in internal:
            emit({"ev": "end", "id": test_id, "outcome": "internal",
                  "summary": internal[test_id], "detail": "", "loops": 0,
                  "foreign": 0, "dur": 0})
            continue
        selected.append(test)

    result = StreamingResult(args.timeout, hang_file)
    result.arm_watchdog()
    unittest.TestSuite(selected).run(result)
    faulthandler.cancel_dump_traceback_later()
    emit({"ev": "done"})


def main():
    global _event_fd
    parser = argparse.ArgumentParser()
    parser.add_argument("--module")
    parser.add_argument("--loop", default="asyncio")
    parser.add_argument("--backend", default=None)
    parser.add_argument("--event-fd", type=int)
    parser.add_argument("--hang-file")
    parser.add_argument("--skip-file")
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--probe", action="store_true")
    args = parser.parse_args()
    if args.backend:
        os.environ["ZLOOP_BACKEND"] = args.backend
    if args.probe:
        return probe(args)

    _event_fd = args.event_fd
    os.set_inheritable(_event_fd, False)
    hang_file = open(args.hang_file, "w")
    faulthandler.enable(file=hang_file, all_threads=True)
    try:
        run_module(args, hang_file)
    except BaseException:
        emit({"ev": "end", "id": "<module> " + str(args.module),
              "outcome": "error",
              "summary": exc_summary(sys.exc_info()),
              "detail": traceback.format_exc()[:DETAIL_LIMIT],
              "loops": 0, "foreign": 0, "dur": 0})
        emit({"ev": "done"})
    sys.stdout.flush()
    sys.stderr.flush()
    # Results are in; do not let leaked non-daemon threads hang shutdown.
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
