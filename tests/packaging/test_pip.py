# tests/packaging/test_pip.py — pip install from source, as a user does it, in fresh venvs: a clone on every
# supported Python (3.14 and 3.15 in the sid root), the sdist on every installed Python (with autotools made
# unavailable), the source tree, a git URL, pip wheel with config settings, the environment variable, and a
# machine without libuv.

import subprocess
import sys
import tarfile

import pytest

from pkg_helpers import PYTHONS, SRC, SUPPORTED, clean_env, python_version, run, supported_python

ALL_BACKENDS = ["native", "uv", "event", "uring"]


@pytest.mark.parametrize("version", SUPPORTED)
def test_pip_install_clone_on_every_supported_python(version, make_venv, tmp_path):
    # `pip install <clone>` of the committed tree (no configure in it: the build backend runs autogen.sh), each
    # version with a clone of its own; 3.14 and 3.15 inside the sid root, where the venv, the build and the
    # smoke test run (pip needs no index: the build backend is in the tree and requires nothing on 3.11+).
    found = supported_python(version)
    if found is None:
        pytest.skip(f"no Python {version} here (pyenv for 3.11-3.13; scripts/sid-chroot.sh ensure for 3.14/3.15)")
    runner, python = found
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", "--no-hardlinks", SRC, clone], check=True)
    env = make_venv(python, runner=runner)
    assert run(env.command("-c", "import sys; print('%d.%d' % sys.version_info[:2])")).stdout.strip() == version
    env.pip("install", "--no-index", clone)
    module, backends, default = env.zloop_info()
    assert module.startswith(str(env.path)), module
    assert (backends, default) == (ALL_BACKENDS, "native")
    assert "0 failed" in env.smoke()
    info = run(env.command("-m", "zloop", "info"), cwd=env.path).stdout
    assert f"Python:            CPython {version}." in info and "installed as:      zloop-c 0.1.0" in info, info


def test_sdist_carries_configure_and_no_build_output(sdist):
    with tarfile.open(sdist) as tar:
        names = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
        configure = tar.getmember(f"{sdist.name[:-len('.tar.gz')]}/configure")
    assert configure.mode & 0o111, "configure must stay executable"
    assert {"configure", "Makefile.in", "config.h.in", "aclocal.m4", "build-aux/install-sh", "build-aux/ltmain.sh",
            "build-aux/py-compile", "PKG-INFO", "pyproject.toml", "configure.ac", "Makefile.am",
            "python/zloop_build/__init__.py", "python/zloop/__init__.py", "core/loop.c", "tests/smoke.py"} <= names
    assert not [n for n in names if n.startswith(("build/", "build-py", "autom4te.cache"))
                or n.endswith((".so", ".o", ".pyc", ".la"))]


@pytest.mark.parametrize("python", PYTHONS, ids=python_version)
def test_install_sdist_without_autotools(python, sdist, no_autotools, make_venv):
    env = make_venv(python)
    env.pip("install", sdist, env=clean_env(PATH=no_autotools))
    module, backends, default = env.zloop_info()
    assert module.startswith(str(env.path)), module
    assert (backends, default) == (ALL_BACKENDS, "native")
    env.smoke()
    info = run([env.python, "-m", "zloop", "info"], env=clean_env(), cwd=env.path).stdout
    assert "installed as:      zloop-c 0.1.0" in info and "backends:          native (epoll), uv, event, uring" in info, info


def _tree_state():
    return subprocess.run(["git", "status", "--porcelain", "--ignored", "--untracked-files=all"], cwd=SRC,
                          check=True, capture_output=True, text=True).stdout


def test_pip_install_source_tree_leaves_it_untouched(make_venv):
    before = _tree_state()
    env = make_venv()
    env.pip("install", SRC)
    assert env.zloop_info()[1] == ALL_BACKENDS
    env.smoke()
    assert _tree_state() == before


def test_pip_install_git_url(make_venv, tmp_path):
    # A clone of the committed tree (no configure in it: the backend runs autogen.sh), on the newest Python here.
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", "--no-hardlinks", SRC, clone], check=True)
    env = make_venv(PYTHONS[-1])
    env.pip("install", f"git+file://{clone}")
    assert env.zloop_info()[1:] == (ALL_BACKENDS, "native")
    env.smoke()


def test_pip_wheel_with_config_settings(make_venv, tmp_path):
    env = make_venv()
    env.pip("wheel", "--no-deps", "-w", tmp_path / "wheels", SRC,
            "--config-settings=with-backend=uv", "--config-settings=without-event=true")
    (wheel,) = (tmp_path / "wheels").glob("zloop_c-*.whl")
    cp = f"cp{sys.version_info[0]}{sys.version_info[1]}"
    assert wheel.name.startswith(f"zloop_c-0.1.0-{cp}-{cp}-"), wheel.name
    env.pip("install", wheel)
    assert env.zloop_info()[1:] == (["native", "uv", "uring"], "uv")
    env.smoke()


def test_environment_variable_and_missing_libuv(make_venv, pkgconfig_without_libuv):
    # No libuv for configure to find: the uv backend is left out with a warning, the install succeeds.
    env = make_venv()
    proc = env.pip("install", "-v", SRC, env=clean_env(ZLOOP_CONFIGURE_ARGS="--with-backend=event",
                                                       PKG_CONFIG_LIBDIR=pkgconfig_without_libuv))
    assert "libuv >= 1.30 not found: the uv backend is left out (install the Debian package libuv1-dev" \
        in proc.stdout + proc.stderr
    assert env.zloop_info()[1:] == (["native", "event"], "event")
    env.smoke()


def test_asking_for_a_missing_backend_fails_with_the_fix(make_venv, pkgconfig_without_libuv):
    env = make_venv()
    proc = env.pip("install", SRC, "--config-settings=with-backend=uv", check=False,
                   env=clean_env(PKG_CONFIG_LIBDIR=pkgconfig_without_libuv))
    assert proc.returncode != 0
    assert "the uv backend needs libuv >= 1.30: install the Debian package libuv1-dev" in proc.stdout + proc.stderr


def test_unknown_config_setting_fails_with_the_known_ones(make_venv, tmp_path):
    env = make_venv()
    proc = env.pip("wheel", "--no-deps", "-w", tmp_path, SRC, "--config-settings=backend=uv", check=False)
    assert proc.returncode != 0
    assert "unknown config setting 'backend': zloop's are configure-args" in proc.stdout + proc.stderr
