#!/bin/sh
# scripts/build-python.sh VERSION — print the interpreter for Python VERSION after building zloop for it in
# build-pyVERSION/ (the extension lands in python/zloop beside the others). Prints nothing if there is none.
#
# A pyenv interpreter (~/.pyenv/versions/VERSION.*) is used as it is. Python 3.14 and 3.15, which Debian 12 lacks,
# come from a Debian unstable root (scripts/sid-chroot.sh, built once and cached): zloop is configured and built
# inside it, and the printed interpreter is build-pyVERSION/chroot-python, a wrapper that runs that root's pythonVERSION
# in the caller's directory (the work tree and /tmp are visible at the same paths). ZLOOP_NO_CHROOT=1 skips them.
set -eu
cd "$(dirname "$0")/.."
version=$1
dir="build-py$version"

reconfigure_needed() {
    [ ! -f "$dir/Makefile" ] || [ configure -nt "$dir/config.status" ]
}

python=$(ls -d "$HOME"/.pyenv/versions/"$version".*/bin/python 2>/dev/null | tail -n 1 || true)
if [ -n "$python" ]; then
    mkdir -p "$dir"
    if reconfigure_needed; then
        (cd "$dir" && ../configure --quiet PYTHON="$python") >&2
    fi
    make -C "$dir" -j2 --no-print-directory >/dev/null
    echo "$python"
    exit 0
fi

case "$version" in
    3.14|3.15) ;;
    *) exit 0 ;;
esac
[ "${ZLOOP_NO_CHROOT:-0}" = 1 ] && exit 0
./scripts/sid-chroot.sh ensure >/dev/null
if [ ! -x configure ] || [ configure.ac -nt configure ] || [ Makefile.am -nt Makefile.in ]; then
    ./autogen.sh >/dev/null 2>&1      # on this machine: the root's autotools are newer
fi
mkdir -p "$dir"
wrapper="$dir/chroot-python"
cat >"$wrapper.tmp" <<EOF
#!/bin/sh
# Python $version of the Debian unstable root (scripts/sid-chroot.sh), run in the caller's directory.
exec "$(pwd -P)/scripts/sid-chroot.sh" run /usr/bin/python$version "\$@"
EOF
chmod +x "$wrapper.tmp"
mv -f "$wrapper.tmp" "$wrapper"
if reconfigure_needed; then
    ./scripts/sid-chroot.sh run sh -c "cd '$dir' && ../configure --quiet PYTHON=/usr/bin/python$version" >&2
fi
./scripts/sid-chroot.sh run make -C "$dir" -j2 --no-print-directory >/dev/null
echo "$(pwd -P)/$wrapper"
