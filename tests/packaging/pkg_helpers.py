# tests/packaging/pkg_helpers.py — for the install tests: the Pythons to install on, fresh venvs, pip runs.

import glob
import os
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[2]
SMOKE = SRC / "tests" / "smoke.py"
BUILD_TIMEOUT = 900
AUTOTOOLS = ("autoreconf", "autoconf", "autoheader", "automake", "aclocal", "libtoolize", "autom4te")


def _pythons():
    """Each installed CPython the project supports: $ZLOOP_PACKAGING_PYTHONS (paths), else this one plus pyenv's."""
    listed = os.environ.get("ZLOOP_PACKAGING_PYTHONS")
    if listed:
        return listed.split()
    found = {f"{sys.version_info[0]}.{sys.version_info[1]}": sys.executable}
    for minor in range(11, 16):   # the supported versions (README); 3.14/3.15 live in the chroot, not pyenv
        version = f"3.{minor}"
        candidates = sorted(glob.glob(os.path.expanduser(f"~/.pyenv/versions/{version}.*/bin/python")))
        if version not in found and candidates:
            found[version] = candidates[-1]
    return [found[v] for v in sorted(found, key=lambda v: int(v.split(".")[1]))]


PYTHONS = _pythons()


def python_version(python):
    return subprocess.run([python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                          check=True, capture_output=True, text=True).stdout.strip()


def clean_env(**extra):
    """The environment for pip and the installed zloop: no PYTHONPATH to the source tree, no LD_LIBRARY_PATH."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "LD_LIBRARY_PATH", "ZLOOP_BACKEND",
                                                            "ZLOOP_CONFIGURE_ARGS", "PYTHONDONTWRITEBYTECODE")}
    env["LD_LIBRARY_PATH"] = ""
    env.update(extra)
    return env


def run(argv, *, env=None, cwd=None, check=True, timeout=BUILD_TIMEOUT):
    proc = subprocess.run([str(a) for a in argv], env=env or clean_env(), cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{argv} failed ({proc.returncode}):\n{proc.stdout[-6000:]}\n{proc.stderr[-6000:]}")
    return proc


class Venv:
    def __init__(self, path, python):
        self.path = Path(path)
        run([python, "-m", "venv", self.path])
        self.python = self.path / "bin" / "python"

    def pip(self, *args, env=None, check=True):
        return run([self.python, "-m", "pip", "--disable-pip-version-check", *args], env=env, check=check)

    def zloop_info(self, env=None):
        """(module file, backends, default backend) of the zloop installed here, imported from outside the tree."""
        code = "import zloop; print(zloop.__file__); print(' '.join(zloop.backends())); print(zloop.default_backend())"
        out = run([self.python, "-c", code], env=env, cwd=self.path).stdout.split("\n")
        return out[0], out[1].split(), out[2]

    def smoke(self, env=None):
        proc = run([self.python, SMOKE], env=env, cwd=self.path)
        assert proc.stdout.rstrip().endswith(" 0 failed"), proc.stdout
        return proc.stdout
