# tests/frameworks/inject/sitecustomize.py — start-up hook of every Python process of a framework-suite
# run (run.py puts this folder on PYTHONPATH), so subprocesses of a test use the same loop as the test.
#
# Does nothing unless run.py set ZLOOP_FW_MODE; see zloop_fw_inject.py for what it changes.

import os

if os.environ.get("ZLOOP_FW_MODE"):
    import zloop_fw_inject

    zloop_fw_inject.activate()
