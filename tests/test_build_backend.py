# tests/test_build_backend.py — the parts of the PEP 517 backend (python/zloop_build) that need no build: config
# settings to configure options, the wheel tag, metadata, the sdist file list. Building and installing wheels for
# real is tests/packaging (scripts/test.sh runs it once).

import email.parser
import re
import sys
import sysconfig
from pathlib import Path

import pytest

if sys.version_info < (3, 11):
    pytest.importorskip("tomli")   # pip installs it into the build environment there (pyproject.toml)

import zloop

SRC = Path(__file__).resolve().parent.parent

try:
    import zloop_build
except ImportError:
    # A sanitizer build's package directory (build-asan/pkg) holds the extension only; the build backend needs no
    # build and is imported from the source tree, after the extension under test.
    sys.path.append(str(SRC / "python"))
    import zloop_build


def test_config_settings_become_configure_options():
    settings = {"with-backend": "uv", "without-event": "true", "without-uv": "false",
                "configure-args": "--enable-asan CFLAGS='-O2 -g'"}
    assert zloop_build.configure_args(settings, environ={}) == [
        "--with-backend=uv", "--without-event", "--enable-asan", "CFLAGS=-O2 -g"]


def test_environment_variable_comes_after_config_settings():
    args = zloop_build.configure_args({"without-uv": "1"}, environ={"ZLOOP_CONFIGURE_ARGS": "--with-backend=event"})
    assert args == ["--without-uv", "--with-backend=event"]
    assert zloop_build.configure_args(None, environ={}) == []


def test_repeated_setting_keeps_every_value():
    # pip passes a list when a key is given twice.
    assert zloop_build.configure_args({"configure-args": ["--without-uv", "--without-event"]}, environ={}) == [
        "--without-uv", "--without-event"]


@pytest.mark.parametrize("settings, message", [
    ({"backend": "uv"}, "unknown config setting 'backend': zloop's are configure-args, enable-asan, with-backend"),
    ({"without-uv": "maybe"}, "use without-uv=true or without-uv=false"),
    ({"with-backend": ""}, "needs a value"),
])
def test_bad_config_setting_names_the_fix(settings, message):
    with pytest.raises(zloop_build.BuildError, match=re.escape(message)):
        zloop_build.configure_args(settings, environ={})


@pytest.mark.parametrize("arg", ["--with-python-sitedir=/x", "--with-python=/usr/bin/python3", "PYTHON=python3",
                                 "--prefix=/usr"])
def test_options_the_backend_sets_are_refused(arg):
    with pytest.raises(zloop_build.BuildError, match="is the build backend's to set"):
        zloop_build.configure_args({"configure-args": arg}, environ={})
    with pytest.raises(zloop_build.BuildError, match="is the build backend's to set"):
        zloop_build.configure_args({}, environ={"ZLOOP_CONFIGURE_ARGS": arg})


def test_wheel_tag_matches_the_interpreter():
    python, abi, platform = zloop_build.wheel_tag().split("-")
    assert python == f"cp{sys.version_info[0]}{sys.version_info[1]}"
    assert abi.startswith(python) and sysconfig.get_config_var("SOABI").startswith(f"cpython-{abi[2:]}-")
    assert platform == sysconfig.get_platform().replace("-", "_").replace(".", "_")


def test_metadata_from_pyproject_and_configure_ac(monkeypatch):
    monkeypatch.chdir(SRC)
    project = zloop_build._project(SRC)
    assert project["name"] == "zloop-c"
    # One version: AC_INIT's, which zloop.__version__ must repeat.
    assert project["version"] == zloop.__version__
    meta = email.parser.Parser().parsestr(zloop_build.metadata_text(SRC, project))
    assert (meta["Name"], meta["Version"], meta["Requires-Python"]) == ("zloop-c", zloop.__version__, ">=3.9")
    assert meta["Description-Content-Type"] == "text/markdown"
    assert meta.get_payload() == (SRC / "README.md").read_text(encoding="utf-8")
    assert "Framework :: AsyncIO" in meta.get_all("Classifier")


def test_unknown_project_key_is_refused():
    with pytest.raises(zloop_build.BuildError, match=r"does not handle \[project\] keys \['entry-points'\]"):
        zloop_build.metadata_text(SRC, {"name": "x", "version": "1", "entry-points": {}})


def test_compiled_backends_read_from_config_h(tmp_path):
    config_h = tmp_path / "config.h"
    config_h.write_text('#define ZL_DEFAULT_BACKEND "event"\n/* #undef ZL_HAVE_UV */\n#define ZL_HAVE_EVENT 1\n')
    assert zloop_build.compiled_backends(config_h) == (["native", "event"], "event")


def test_sdist_file_list_leaves_builds_and_generated_files_out():
    files = zloop_build.source_files(SRC)
    assert {"configure.ac", "Makefile.am", "pyproject.toml", "python/zloop/__init__.py",
            "python/zloop_build/__init__.py", "core/loop.c"} <= set(files)
    assert not [f for f in files if f.startswith(("build/", "build-py")) or f.endswith((".so", ".pyc", ".o"))]
    assert "configure" not in files   # regenerated fresh into the sdist


def test_normalized_name():
    assert zloop_build.normalized_name("zloop-c") == "zloop_c"
    assert zloop_build.normalized_name("Zloop.C__x") == "zloop_c_x"
