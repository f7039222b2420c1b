"""Run a command (the pytest suite) under valgrind memcheck and fail on zloop's own memory errors.

Python itself is not valgrind-clean, so every error report is read from valgrind's XML output and only
zloop's count: invalid reads/writes, uses of uninitialised values, invalid frees and definite leaks whose stack
reaches zloop's code before any Python frame (not Python code that a zloop callback happens to run), or whose
uninitialised value was allocated by zloop (origins are tracked).
Usage: run.py [--keep] -- COMMAND ARGS...
"""

import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET

OUR_OBJECT = "_zloop"


# A frame of the interpreter running Python code: below it, zloop is only the loop that called that code.
PYTHON_FRAME = "_PyEval_EvalFrameDefault"


def _frames(error):
    for stack in error.iter("stack"):
        for frame in stack.iter("frame"):
            yield frame.findtext("obj", ""), frame.findtext("fn", ""), frame.findtext("file", "")


def _stack_frames(stack):
    return [(frame.findtext("obj", ""), frame.findtext("fn", "")) for frame in stack.iter("frame")]


def _is_ours(error):
    stacks = list(error.iter("stack"))
    if not stacks:
        return False
    for obj, fn in _stack_frames(stacks[0]):
        if OUR_OBJECT in obj:
            return True
        if fn == PYTHON_FRAME:
            break
    # With --track-origins, the next stack is where an uninitialised value was allocated.
    return any(OUR_OBJECT in obj for stack in stacks[1:] for obj, _ in _stack_frames(stack))


def _describe(error):
    what = error.findtext("what") or error.findtext("xwhat/text") or error.findtext("kind")
    lines = [f"{error.findtext('kind')}: {what}"]
    for obj, fn, path in list(_frames(error))[:12]:
        lines.append(f"    {fn or '?'}  ({path or os.path.basename(obj)})")
    return "\n".join(lines)


def main(argv):
    keep = "--keep" in argv
    command = argv[argv.index("--") + 1:]
    # A launcher script (pyenv's shim) would put memcheck on the shell, not on Python: use the real binary.
    if command and os.path.basename(command[0]).startswith("python"):
        command[0] = sys.executable if command[0] in ("python", "python3") else command[0]
    with tempfile.TemporaryDirectory() as tmp:
        xml_path = os.path.join(tmp, "memcheck.xml")
        env = dict(os.environ, PYTHONMALLOC="malloc")
        valgrind = [
            "valgrind", "--tool=memcheck", "--leak-check=full", "--show-leak-kinds=definite",
            "--errors-for-leak-kinds=definite", "--num-callers=30", "--track-origins=yes", "--child-silent-after-fork=yes", "--xml=yes", f"--xml-file={xml_path}",
        ]
        proc = subprocess.run(valgrind + command, env=env)
        tree = ET.parse(xml_path)
        errors = [e for e in tree.getroot().iter("error")]
        ours = [e for e in errors if _is_ours(e)]
        if keep:
            os.replace(xml_path, "memcheck.xml")
    for error in ours:
        print(_describe(error), file=sys.stderr)
    print(f"valgrind: {len(errors)} error reports in all, {len(ours)} in zloop; command exit {proc.returncode}")
    if proc.returncode != 0:
        return proc.returncode
    return 1 if ours else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
