# tests/test_servers.py — real servers and clients on zloop, each a process of its own, on every backend: uvicorn
# (--loop zloop:new_event_loop) with a plain ASGI app and with FastAPI, Hypercorn (python -m zloop run -m
# hypercorn), aiohttp's web.run_app (loop=) and asyncio.Runner(loop_factory=), python -m zloop run around a plain
# web.run_app; the clients (aiohttp, httpx) run on zloop too. Each exchange: a JSON GET that says which loop served
# it, a chunked streaming GET and, with the aiohttp client, a WebSocket echo; uvicorn and aiohttp also over TLS (the C
# TLS layer on both sides, the client verifying the server's certificate). And an AnyIO program (anyio.run with
# loop_factory). The apps are in tests/servers/. Skipped when a package is missing (requirements-dev.txt has them).

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import python_env
from net_helpers import tls_material

pytestmark = pytest.mark.zloop_only

APPS = Path(__file__).resolve().parent / "servers"
CHUNKS = "".join(f"chunk {i}\n" for i in range(5))
WS_ECHO = ["echo:one", "echo:two", "echo:three"]
EXCHANGE_TIMEOUT = 60


def _uvicorn_takes_loop_factory():
    if importlib.util.find_spec("uvicorn") is None:
        return False
    from importlib.metadata import version
    major, minor = (int(part) for part in version("uvicorn").split(".")[:2])
    return (major, minor) >= (0, 36)


def app_env(backend):
    """A child's environment: this zloop and tests/servers importable, ZLOOP_BACKEND set."""
    return python_env({"ZLOOP_BACKEND": backend, "PYTHONPATH": f"{APPS}{os.pathsep}{python_env()['PYTHONPATH']}"})


def server_argv(kind, fd, backend):
    """The command line of a server serving on the inherited listening socket fd (-tls: over TLS)."""
    zloop_run = [sys.executable, "-m", "zloop", "run", "--backend", backend]
    if kind.endswith("-tls"):
        tls = tls_material()
        if kind == "uvicorn-tls":
            return [*server_argv("uvicorn", fd, backend), "--ssl-certfile", tls.cert_file, "--ssl-keyfile", tls.key_file]
        return [*server_argv(kind[:-len("-tls")], fd, backend), tls.cert_file, tls.key_file]
    if kind == "uvicorn":
        return [sys.executable, "-m", "uvicorn", "asgi_app:app", "--fd", str(fd), "--loop", "zloop:new_event_loop"]
    if kind == "fastapi":
        return [sys.executable, "-m", "uvicorn", "fastapi_app:app", "--fd", str(fd), "--loop", "zloop:new_event_loop"]
    if kind == "hypercorn":
        # --workers 0: serve in this process; a worker process (spawned afresh) would not have zloop installed.
        return [*zloop_run, "-m", "hypercorn", "--workers", "0", "asgi_app:app", "--bind", f"fd://{fd}"]
    if kind == "aiohttp-zloop-run":
        return [*zloop_run, str(APPS / "aiohttp_server.py"), str(fd), "policy"]
    mode = kind.split("-", 1)[1]
    return [sys.executable, str(APPS / "aiohttp_server.py"), str(fd), mode]


# (server, client, what each needs)
SCENARIOS = [
    ("uvicorn", "aiohttp", ["uvicorn", "websockets", "aiohttp"]),
    ("uvicorn", "httpx", ["uvicorn", "httpx"]),
    ("fastapi", "aiohttp", ["uvicorn", "websockets", "fastapi", "aiohttp"]),
    ("hypercorn", "aiohttp", ["hypercorn", "aiohttp"]),
    ("aiohttp-run_app", "httpx", ["aiohttp", "httpx"]),
    ("aiohttp-runner", "aiohttp", ["aiohttp"]),
    ("aiohttp-zloop-run", "aiohttp", ["aiohttp"]),
    ("uvicorn-tls", "aiohttp", ["uvicorn", "websockets", "aiohttp"]),
    ("uvicorn-tls", "httpx", ["uvicorn", "httpx"]),
    ("aiohttp-runner-tls", "aiohttp", ["aiohttp"]),
]


@pytest.mark.parametrize("server, client, needs", SCENARIOS, ids=[f"{s}+{c}" for s, c, _ in SCENARIOS])
def test_server_and_client(server, client, needs, backend):
    missing = [name for name in needs if importlib.util.find_spec(name) is None]
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)} (pip install -r requirements-dev.txt)")
    if server in ("uvicorn", "uvicorn-tls", "fastapi") and not _uvicorn_takes_loop_factory():
        pytest.skip("uvicorn < 0.36 takes no --loop module:factory")
    if server.startswith("aiohttp-runner") and sys.version_info < (3, 11):
        pytest.skip("asyncio.Runner is Python 3.11+")
    env = app_env(backend)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    tls = server.endswith("-tls")
    url = ("https" if tls else "http") + "://127.0.0.1:%d" % listener.getsockname()[1]   # the certificate names it
    # The socket listens before the server starts: the client's connections wait in its backlog, no polling.
    proc = subprocess.Popen(server_argv(server, listener.fileno(), backend), pass_fds=[listener.fileno()], env=env,
                            cwd=APPS, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    listener.close()
    try:
        got = subprocess.run([sys.executable, str(APPS / "client.py"), client, url, *([tls_material().ca_file] if tls else [])],
                             env=env, capture_output=True,
                             text=True, timeout=EXCHANGE_TIMEOUT)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            _, server_err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, server_err = proc.communicate()
    assert got.returncode == 0, f"client:\n{got.stderr[-3000:]}\nserver:\n{server_err[-3000:]}"
    result = json.loads(got.stdout)
    assert result["server"] == ["zloop._loop", backend]
    assert result["client"] == ["zloop._loop", backend]
    assert "".join(result["stream"]) == CHUNKS
    if client == "aiohttp":
        assert result["ws"] == WS_ECHO
    # SIGTERM is a graceful stop for each of them; uvicorn (as on stock asyncio) then re-raises the signal.
    if server in ("uvicorn", "uvicorn-tls", "fastapi"):
        assert proc.returncode == -signal.SIGTERM and "Application shutdown complete" in server_err, server_err
    else:
        assert proc.returncode == 0, server_err[-3000:]


def test_anyio_program(backend):
    if importlib.util.find_spec("anyio") is None:
        pytest.skip("not installed: anyio (pip install -r requirements-dev.txt)")
    proc = subprocess.run([sys.executable, str(APPS / "anyio_program.py")], env=app_env(backend), capture_output=True, text=True,
                          timeout=EXCHANGE_TIMEOUT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout) == {"loop": ["zloop._loop", backend], "echo": ["ALPHA", "BETA"], "thread": 6,
                                       "process": "from child", "timed_out": True}
