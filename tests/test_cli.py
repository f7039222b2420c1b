# tests/test_cli.py — python -m zloop: info, run (a script or a module, on each backend) and bench, as a user
# types them, in a child process.

import platform
import re
import subprocess
import sys
import textwrap

import pytest

import zloop
from conftest import BACKENDS, python_env

pytestmark = pytest.mark.zloop_only

# What a program run under `python -m zloop run` sees: its loop, its argv, its name.
PROBE = textwrap.dedent("""
    import asyncio, sys

    async def main():
        loop = asyncio.get_running_loop()
        return type(loop).__module__, loop.get_backend()

    if __name__ == "__main__":
        module, backend = asyncio.run(main())
        fresh = asyncio.new_event_loop()
        print(module, backend, type(fresh).__module__, fresh.get_backend())
        fresh.close()
        print(repr(sys.argv[1:]))
        sys.exit(int(sys.argv[1]) if sys.argv[1:] and sys.argv[1].isdigit() else 0)
""")


def zloop_cli(*args, cwd=None, env=None, timeout=60):
    return subprocess.run([sys.executable, "-m", "zloop", *map(str, args)], cwd=cwd, env=python_env(env),
                          capture_output=True, text=True, timeout=timeout)


def test_info_reports_the_build():
    proc = zloop_cli("info")
    assert proc.returncode == 0, proc.stderr
    fields = dict(re.findall(r"^([^:]+):\s+(.*)$", proc.stdout, re.M))
    info = zloop._zloop._build_info()
    assert fields["zloop"] == zloop.__version__ == info["version"]
    assert fields["backends"].replace(f"native ({info['native']})", "native").split(", ") == BACKENDS
    assert fields["default backend"] == zloop.default_backend()
    assert fields["Python"].startswith(f"CPython {platform.python_version()} ")
    for library, backend in (("libuv", "uv"), ("libevent", "event")):
        if backend in BACKENDS:
            versions = info[library]
            assert re.match(r"\d+\.\d+\.\d+", versions["runtime"]), versions
            assert fields[library] == f"{versions['runtime']} (built against {versions['compiled']})"
        else:
            assert info[library] is None and fields[library] == "not built in"


def test_info_shows_the_backend_chosen_by_the_environment(backend):
    proc = zloop_cli("info", env={"ZLOOP_BACKEND": backend})
    assert f"; ZLOOP_BACKEND={backend} in this environment" in proc.stdout


def test_run_script_on_each_backend(backend, tmp_path):
    script = tmp_path / "app.py"
    script.write_text(PROBE)
    proc = zloop_cli("run", "--backend", backend, script, "7", "--flag", "-m", "x", cwd=tmp_path)
    lines = proc.stdout.splitlines()
    assert lines[0] == f"zloop._loop {backend} zloop._loop {backend}", proc.stderr
    assert lines[1] == "['7', '--flag', '-m', 'x']"
    assert proc.returncode == 7


def test_run_module_on_each_backend(backend, tmp_path):
    (tmp_path / "probe_app.py").write_text(PROBE)
    proc = zloop_cli("run", f"--backend={backend}", "-m", "probe_app", "a b", cwd=tmp_path)
    assert proc.stdout.splitlines() == [f"zloop._loop {backend} zloop._loop {backend}", "['a b']"], proc.stderr
    assert proc.returncode == 0


def test_run_without_backend_takes_the_environment(backend, tmp_path):
    script = tmp_path / "app.py"
    script.write_text(PROBE)
    proc = zloop_cli("run", script, env={"ZLOOP_BACKEND": backend})
    assert proc.stdout.splitlines()[0] == f"zloop._loop {backend} zloop._loop {backend}", proc.stderr


def test_run_passes_the_program_error_through(tmp_path):
    script = tmp_path / "boom.py"
    script.write_text("import asyncio\nasync def main():\n    raise LookupError('boom')\nasyncio.run(main())\n")
    proc = zloop_cli("run", script)
    assert proc.returncode == 1 and "LookupError: boom" in proc.stderr


@pytest.mark.parametrize("args, message", [
    (["run", "--backend", "nope", "x.py"], "unknown backend 'nope': this zloop has " + ", ".join(BACKENDS)),
    (["run", "--backend"], "--backend needs a name: " + ", ".join(BACKENDS)),
    (["run"], "no program to run"),
    (["run", "-m"], "-m needs a module name"),
    (["run", "--stats2", "x.py"], "unknown option '--stats2' before the program"),
    (["run", "missing_script.py"], "can't open file 'missing_script.py': no such file"),
    (["serve"], "unknown command 'serve': use info, run, bench"),
    (["bench", "--loops", "asyncio,tokio"], "unknown loop tokio: here there are asyncio"),
    (["bench", "--workloads", "nothing"], "unknown workload nothing: choose from call_soon"),
    (["bench", "--seconds", "0"], "--seconds 0.0: give a budget between 0 and 600 seconds"),
])
def test_errors_name_the_fix(args, message, tmp_path):
    proc = zloop_cli(*args, cwd=tmp_path)
    assert proc.returncode == 2
    assert message in proc.stderr, proc.stderr


def test_bench_compares_asyncio_with_each_backend(backend):
    loops = ["asyncio", f"zloop:{backend}"]
    proc = zloop_cli("bench", "--seconds", "1", "--loops", ",".join(loops), "--workloads", "call_soon,sock_pingpong",
                     timeout=120)
    assert proc.returncode == 0, proc.stderr
    rows = {m.group(1): [float(v) for v in m.group(2).split(" ns")[:-1]]
            for m in re.finditer(r"^(call_soon|sock_pingpong)\s+((?:\s*\d+ ns)+)$", proc.stdout, re.M)}
    assert sorted(rows) == ["call_soon", "sock_pingpong"], proc.stdout
    assert all(len(values) == 2 and all(v > 0 for v in values) for values in rows.values()), rows
    assert re.search(rf"^CPU per op\s+asyncio\s+zloop:{backend}$", proc.stdout, re.M)
