# tests/test_subinterpreters.py — the extension module in other interpreters: the C core still keeps process-wide
# state, so it declares itself single-interpreter (PEP 489 slots) and an import in a subinterpreter fails cleanly.

import os
import sys
import tempfile

import pytest

pytestmark = pytest.mark.skipif(sys.version_info < (3, 12), reason="per-interpreter module slots are Python 3.12+")

IMPORT_AND_REPORT = """
try:
    import zloop._zloop
except ImportError as exc:
    outcome = "ImportError: " + str(exc)
else:
    outcome = "imported"
with open({path!r}, "w") as fp:
    fp.write(outcome)
"""


def _run_in_subinterpreter(code, kind):
    """Run code in a new subinterpreter of the given kind ('isolated': its own GIL, or 'legacy': shared)."""
    try:
        import _interpreters as interpreters          # 3.13+
        interp = interpreters.create(interpreters.new_config(kind))
    except ImportError:
        import _xxsubinterpreters as interpreters     # 3.12
        interp = interpreters.create(isolated=(kind == "isolated"))
    try:
        interpreters.run_string(interp, code)
    finally:
        interpreters.destroy(interp)


@pytest.mark.parametrize("kind", ["isolated", "legacy"])
def test_import_in_a_subinterpreter_fails_cleanly(kind):
    import zloop  # noqa: F401  (loaded in the main interpreter first, as an application would)
    fd, path = tempfile.mkstemp()
    os.close(fd)
    try:
        _run_in_subinterpreter(IMPORT_AND_REPORT.format(path=path), kind)
        with open(path) as fp:
            outcome = fp.read()
    finally:
        os.unlink(path)
    assert outcome.startswith("ImportError:") and "subinterpreter" in outcome, outcome


def test_the_module_still_imports_in_the_main_interpreter_after_a_refused_one():
    _run_in_subinterpreter("try:\n    import zloop._zloop\nexcept ImportError:\n    pass\n", "isolated")
    import zloop
    loop = zloop.new_event_loop()
    try:
        assert loop.run_until_complete(_answer()) == 42
    finally:
        loop.close()


async def _answer():
    return 42
