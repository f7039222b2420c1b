# tests/packaging/test_wheel.py — a binary wheel for machines without libuv, libevent and liburing: pip wheel, then
# auditwheel repair copies the three libraries into the wheel (zloop_c.libs) and points the extension at them.
# The repaired wheel is installed into a clean venv and run with LD_LIBRARY_PATH empty: the extension must
# resolve and map only the bundled copies, and, where a private mount namespace is allowed (unshare -m), the
# smoke test passes on every backend with the system's libuv, libevent and liburing files masked by /dev/null.

import os
import subprocess
import sys
import zipfile

import pytest

from pkg_helpers import SRC, Venv, clean_env, run

LIBRARIES = ("libuv", "libevent", "liburing")
# Which libuv/libevent/liburing files the process has mapped, after a loop on every backend ran a callback.
MAPS_PROBE = """
import asyncio
import zloop
for name in zloop.backends():
    loop = zloop.new_event_loop(backend=name)
    loop.run_until_complete(asyncio.sleep(0.001))
    loop.close()
paths = set()
with open('/proc/self/maps') as maps:
    for line in maps:
        path = line.split()[-1]
        if '/libuv' in path or '/libevent' in path or '/liburing' in path:
            paths.add(path)
print(' '.join(zloop.backends()))
print('\\n'.join(sorted(paths)))
"""


def _ldd(path):
    """{library name prefix: resolved path} for libuv, libevent and liburing in ldd's output."""
    found = {}
    for line in run(["ldd", path]).stdout.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[1] == "=>" and parts[0].startswith(LIBRARIES):
            found[parts[0].split("-")[0].split(".")[0]] = os.path.realpath(parts[2])
    return found


@pytest.fixture(scope="module")
def wheels(tools, tmp_path_factory):
    """(plain wheel, repaired wheel) of the source tree, built for this Python."""
    out = tmp_path_factory.mktemp("wheels")
    run([tools.python, "-m", "pip", "wheel", "--no-deps", "-w", out / "plain", SRC])
    (plain,) = (out / "plain").glob("zloop_c-*.whl")
    proc = run([tools.path / "bin" / "auditwheel", "repair", "-w", out / "repaired", plain],
               env=clean_env(PATH=f"{tools.path / 'bin'}:{clean_env()['PATH']}"))
    (repaired,) = (out / "repaired").glob("zloop_c-*manylinux*.whl")
    return plain, repaired, proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def installed(wheels, tmp_path_factory):
    env = Venv(tmp_path_factory.mktemp("repaired") / "venv", sys.executable)
    env.pip("install", "--no-index", "--no-deps", wheels[1])
    (extension,) = env.path.glob("lib/python*/site-packages/zloop/_zloop*.so")
    return env, extension


def test_repaired_wheel_carries_both_libraries(wheels):
    plain, repaired, _ = wheels
    with zipfile.ZipFile(repaired) as whl:
        bundled = [n for n in whl.namelist() if n.startswith("zloop_c.libs/") and not n.endswith("/")]
    assert sorted(n.split("/")[1].split("-")[0].split(".")[0] for n in bundled) == ["libevent_core", "liburing", "libuv"], \
        bundled
    with zipfile.ZipFile(plain) as whl:
        assert not [n for n in whl.namelist() if ".libs/" in n]


def test_installed_extension_resolves_and_maps_only_the_bundled_copies(installed):
    env, extension = installed
    libs_dir = os.path.realpath(next(env.path.glob("lib/python*/site-packages/zloop_c.libs")))
    resolved = _ldd(extension)
    assert sorted(resolved) == ["libevent_core", "liburing", "libuv"], resolved
    assert all(path.startswith(libs_dir + "/") for path in resolved.values()), resolved
    out = run([env.python, "-c", MAPS_PROBE], env=clean_env(), cwd=env.path).stdout.splitlines()
    assert out[0].split() == ["native", "uv", "event", "uring"]
    assert out[1:] and all(os.path.realpath(path).startswith(libs_dir + "/") for path in out[1:]), out
    env.smoke()


def _masking_allowed():
    try:
        return subprocess.run(["unshare", "-m", "--propagation", "private", "true"], capture_output=True,
                              timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.mark.skipif(not _masking_allowed(), reason="unshare -m (a private mount namespace) is not permitted here")
def test_repaired_wheel_runs_with_system_libraries_masked(wheels, installed, tmp_path):
    env, _ = installed
    # The system's copies, as the plain wheel's extension (linked against them) resolves them.
    with zipfile.ZipFile(wheels[0]) as whl:
        (name,) = [n for n in whl.namelist() if n.endswith(".so")]
        whl.extract(name, tmp_path)
    system = [str(subprocess.run(["readlink", "-f", p], capture_output=True, text=True, check=True).stdout.strip())
              for p in _ldd(tmp_path / name).values()]
    assert len(system) == 3, system
    mounts = " && ".join(f"mount --bind /dev/null {p}" for p in system)

    def masked(*argv):
        script = f'{mounts} && exec "$@"'
        return run(["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh", *argv],
                   env=clean_env(), cwd=env.path, check=False)

    # The mask works: the system libuv cannot be loaded in the namespace ...
    probe = masked(env.python, "-c", f"import ctypes; ctypes.CDLL({system[0]!r})")
    assert probe.returncode != 0 and "OSError" in probe.stderr, probe.stderr
    # ... and the repaired wheel's zloop runs the smoke test on every backend there.
    proc = masked(env.python, str(SRC / "tests" / "smoke.py"))
    assert proc.returncode == 0 and proc.stdout.rstrip().endswith(" 0 failed"), proc.stdout + proc.stderr
    assert "backends ['native', 'uv', 'event', 'uring']" in proc.stdout
