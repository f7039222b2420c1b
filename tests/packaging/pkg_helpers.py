# tests/packaging/pkg_helpers.py — for the install tests: the Pythons to install on (here and in the Debian unstable
# root of scripts/sid-chroot.sh), fresh venvs, pip runs.

import functools
import glob
import os
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[2]
SMOKE = SRC / "tests" / "smoke.py"
SID_CHROOT = SRC / "scripts" / "sid-chroot.sh"
SUPPORTED = ("3.11", "3.12", "3.13", "3.14", "3.15")   # README; 3.14 and 3.15 from the sid root
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


@functools.lru_cache(maxsize=None)
def supported_python(version):
    """(runner, interpreter) for Python `version`: runner () for one on this machine (PYTHONS), else
    (sid-chroot.sh, "run") for /usr/bin/pythonX.Y of the sid root (3.14, 3.15; scripts/build-python.sh makes the
    root); None when there is none."""
    for python in PYTHONS:
        if python_version(python) == version:
            return (), python
    if os.environ.get("ZLOOP_NO_CHROOT") == "1":
        return None
    runner = (str(SID_CHROOT), "run")
    probe = subprocess.run([*runner, f"/usr/bin/python{version}", "-c", "import ensurepip, venv"],
                           capture_output=True, text=True, timeout=120)
    return (runner, f"/usr/bin/python{version}") if probe.returncode == 0 else None


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
    """A fresh venv of `python`; with a runner (the sid root's sid-chroot.sh run), made and used inside that root,
    where its interpreter links to (its path is in /tmp, which the root shares)."""

    def __init__(self, path, python, runner=()):
        self.path = Path(path)
        self.runner = tuple(runner)
        run([*self.runner, python, "-m", "venv", self.path])
        self.python = self.path / "bin" / "python"

    def command(self, *args):
        return [*self.runner, self.python, *args]

    def pip(self, *args, env=None, check=True):
        return run(self.command("-m", "pip", "--disable-pip-version-check", *args), env=env, check=check)

    def zloop_info(self, env=None):
        """(module file, backends, default backend) of the zloop installed here, imported from outside the tree."""
        code = "import zloop; print(zloop.__file__); print(' '.join(zloop.backends())); print(zloop.default_backend())"
        out = run(self.command("-c", code), env=env, cwd=self.path).stdout.split("\n")
        return out[0], out[1].split(), out[2]

    def smoke(self, env=None):
        proc = run(self.command(SMOKE), env=env, cwd=self.path)
        assert proc.stdout.rstrip().endswith(" 0 failed"), proc.stdout
        return proc.stdout
