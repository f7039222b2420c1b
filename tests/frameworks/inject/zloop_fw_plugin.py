# tests/frameworks/inject/zloop_fw_plugin.py — pytest plugin (-p zloop_fw_plugin) that run.py loads into a
# framework's own test suite: plugs zloop into the suite's loop hooks and records each test's outcome.
#
# zloop mode: anyio_backend "asyncio" gets loop_factory=zloop.new_event_loop; aiohttp's --aiohttp-loop
# "pyloop" factory becomes zloop.new_event_loop (its setup_test_loop default: zloop_fw_inject); with
# ZLOOP_FW_POLICY=1 asyncio's policy is zloop's too, reinstalled before a test if the previous one reset it.
# Both modes: the loops that ran during each test phase go into the report (zloop_fw_inject records them),
# and the controlling process appends one JSON line per report to ZLOOP_FW_RESULTS.

import json
import os

import pytest

import zloop_fw_inject as inject

LOOPS_PROPERTY = "zloop_fw_loops"

# Now, while pytest loads -p plugins: after its assertion rewriter joined sys.meta_path, before conftests
# import the framework's test helpers.
inject.activate()


def _zloop_new_event_loop():
    import zloop
    return zloop.new_event_loop


def zloop_anyio_backend(value):
    """The anyio_backend value that runs the same test on zloop; other backends are left alone."""
    if inject.MODE != "zloop":
        return value
    if value == "asyncio":
        return ("asyncio", {"loop_factory": _zloop_new_event_loop()})
    if (isinstance(value, tuple) and len(value) == 2 and value[0] == "asyncio"
            and isinstance(value[1], dict) and "loop_factory" not in value[1]
            and not value[1].get("use_uvloop")):
        return ("asyncio", dict(value[1], loop_factory=_zloop_new_event_loop()))
    return value


def pytest_configure(config):
    inject.activate()
    import asyncio  # noqa: F401  (runs the after-import patches if nothing imported asyncio yet)
    inject.install_zloop_policy_if_reset()
    path = os.environ.get("ZLOOP_FW_RESULTS")
    if path and not hasattr(config, "workerinput"):
        config.pluginmanager.register(_Recorder(path), "zloop_fw_recorder")


@pytest.hookimpl(wrapper=True)
def pytest_fixture_setup(fixturedef, request):
    result = yield
    if fixturedef.argname == "anyio_backend":
        replaced = zloop_anyio_backend(result)
        if replaced is not result:
            cached = fixturedef.cached_result
            if cached is not None:
                fixturedef.cached_result = (replaced,) + tuple(cached[1:])
            result = replaced
    return result


@pytest.hookimpl(wrapper=True)
def pytest_generate_tests(metafunc):
    # aiohttp's plugin parametrizes loop_factory from --aiohttp-loop; "pyloop" is asyncio.new_event_loop.
    if inject.MODE != "zloop" or "loop_factory" not in metafunc.fixturenames:
        return (yield)
    import asyncio
    parametrize = metafunc.parametrize

    def zloop_parametrize(argnames, argvalues, *args, **kwargs):
        if argnames == "loop_factory":
            argvalues = [_zloop_new_event_loop() if value is asyncio.new_event_loop else value
                         for value in argvalues]
        return parametrize(argnames, argvalues, *args, **kwargs)

    metafunc.parametrize = zloop_parametrize
    try:
        return (yield)
    finally:
        del metafunc.parametrize


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    inject.install_zloop_policy_if_reset()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    report.user_properties.append((LOOPS_PROPERTY, inject.take_seen_loops()))
    return report


def _short_message(report):
    crash = getattr(report.longrepr, "reprcrash", None)
    if crash is not None and getattr(crash, "message", None):
        text = crash.message
    else:
        lines = [line for line in str(report.longrepr).splitlines() if line.strip()]
        text = lines[-1] if lines else ""
    return text[:500]


class _Recorder:
    """In the controlling process only (not in xdist workers): one JSON line per test report."""

    def __init__(self, path):
        self._file = open(path, "a", buffering=1, encoding="utf-8")

    def _write(self, record):
        self._file.write(json.dumps(record) + "\n")

    def pytest_runtest_logreport(self, report):
        loops = []
        for prop in report.user_properties:
            if len(prop) == 2 and prop[0] == LOOPS_PROPERTY:
                loops = list(prop[1])
        record = {"nodeid": report.nodeid, "when": report.when, "outcome": report.outcome,
                  "xfail": hasattr(report, "wasxfail"), "duration": round(report.duration, 3),
                  "loops": loops}
        if report.failed:
            record["message"] = _short_message(report)
        self._write(record)

    def pytest_collectreport(self, report):
        if report.failed:
            self._write({"nodeid": report.nodeid or "<collection>", "when": "collect",
                         "outcome": "failed", "xfail": False, "duration": 0.0, "loops": [],
                         "message": _short_message(report)})

    def pytest_sessionfinish(self, session, exitstatus):
        self._write({"event": "sessionfinish", "exitstatus": int(exitstatus)})
        self._file.close()
