#!/bin/sh
# scripts/bootstrap.sh — make a fresh Debian machine able to build and test zloop, then build it in build/.
# Idempotent: installs only missing Debian packages and Python packages, reconfigures only when needed.
set -eu
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

DEB_PACKAGES="autoconf automake libtool pkg-config make gcc libuv1-dev libevent-dev liburing-dev valgrind wrk"
missing=""
for pkg in $DEB_PACKAGES; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing="$missing $pkg"
done
if [ -n "$missing" ]; then
    echo "bootstrap: installing Debian packages:$missing"
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
fi

if ! "$PYTHON" -c 'import pytest, uvloop, cryptography, uvicorn, httptools, websockets, aiohttp, httpx, hypercorn, fastapi, prometheus_client, hypothesis' 2>/dev/null; then
    echo "bootstrap: installing Python packages from requirements-dev.txt"
    "$PYTHON" -m pip install -q --disable-pip-version-check -r requirements-dev.txt
fi

if [ ! -x configure ] || [ configure.ac -nt configure ] || [ Makefile.am -nt Makefile.in ]; then
    ./autogen.sh >/dev/null 2>&1
fi
mkdir -p build
if [ ! -f build/Makefile ] || [ configure -nt build/config.status ]; then
    (cd build && ../configure --quiet PYTHON="$PYTHON")
fi
make -C build -j2 --no-print-directory >/dev/null
echo "bootstrap: built zloop for $("$PYTHON" -c 'import sys; print(sys.version.split()[0])') with backends: $(PYTHONPATH=python "$PYTHON" -c 'import zloop; print(" ".join(zloop.backends()))')"
