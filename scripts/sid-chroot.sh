#!/bin/sh
# scripts/sid-chroot.sh — a Debian unstable root with the Pythons Debian 12 lacks (3.14, 3.15) and zloop's build
# dependencies: `ensure` makes or completes it (cached), `run CMD...` runs CMD inside it in the current directory.
#
#   scripts/sid-chroot.sh ensure          create the root if missing (debootstrap + apt-get), print its path
#   scripts/sid-chroot.sh run CMD ARG...  run CMD in the root, in a private mount namespace
#
# The root lives in $ZLOOP_CHROOT (default /var/cache/zloop-chroot/sid) and is kept between runs; a machine without
# it builds it anew from the Debian mirror of its own apt sources ($ZLOOP_DEBIAN_MIRROR overrides), in about a
# minute. `run` mounts proc, a private devpts, a tmpfs /dev/shm and binds /dev's devices, /tmp and the work tree
# at their own paths, all inside a mount namespace of its own: the mounts vanish with the command, whatever way it
# ends, so nothing is left mounted to break the next run, and parallel runs do not see each other's mounts.
# Needs root (debootstrap, chroot, mount).
set -eu
top=$(cd "$(dirname "$0")/.." && pwd -P)
root=${ZLOOP_CHROOT:-/var/cache/zloop-chroot/sid}
PACKAGES="python3.14 python3.14-dev python3.14-venv libpython3.14-testsuite
python3.15 python3.15-dev python3.15-venv libpython3.15-testsuite
python3-pytest python3-cryptography
gcc make autoconf automake libtool pkg-config libuv1-dev libevent-dev liburing-dev"

die() {
    echo "sid-chroot: $*" >&2
    exit 1
}

host_mirror() {
    # The first Debian archive URI of this machine's apt sources (deb822 or one-line format).
    if [ -n "${ZLOOP_DEBIAN_MIRROR:-}" ]; then
        echo "$ZLOOP_DEBIAN_MIRROR"
        return
    fi
    uri=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null |
          sed -n 's|^URIs:[[:space:]]*\([^[:space:]]*/debian\)/*$|\1|p' | head -n 1)
    [ -n "$uri" ] || uri=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
          sed -n 's|^deb[[:space:]]\{1,\}\(\[[^]]*\][[:space:]]*\)\{0,1\}\([^[:space:]]*/debian\)/*[[:space:]].*|\2|p' |
          head -n 1)
    echo "${uri:-http://deb.debian.org/debian}"
}

check_mirror() {
    command -v wget >/dev/null 2>&1 || return 0
    wget -q --spider --timeout=20 --tries=2 "$1/dists/sid/Release" ||
        die "cannot reach the Debian mirror $1 (no network?): the sid root for Python 3.14/3.15 cannot be built"
}

# In a private mount namespace: mount what the root needs, then run "$@" chrooted in the caller's directory.
enter() {
    target=$1
    shift
    mount -t proc proc "$target/proc"
    mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts "$target/dev/pts"
    [ -e "$target/dev/ptmx" ] || touch "$target/dev/ptmx"
    mount --bind "$target/dev/pts/ptmx" "$target/dev/ptmx"
    mount -t tmpfs -o mode=1777 shm "$target/dev/shm"
    for dev in null zero full random urandom tty; do
        [ -e "$target/dev/$dev" ] || touch "$target/dev/$dev"
        mount --bind "/dev/$dev" "$target/dev/$dev"
    done
    mount --rbind /tmp "$target/tmp"
    mkdir -p "$target$top"
    mount --bind "$top" "$target$top"
    cp -f /etc/resolv.conf "$target/etc/resolv.conf" 2>/dev/null || true
    unset ZLOOP_CHROOT_NS
    exec chroot "$target" /bin/sh -c 'cd "$1" 2>/dev/null || cd /; shift; exec "$@"' sid-chroot "$PWD" "$@"
}

in_root() {
    # Run "$@" in a fresh mount namespace (see enter), chrooted into $1.
    target=$1
    shift
    ZLOOP_CHROOT_NS=1 unshare --mount --propagation private "$top/scripts/sid-chroot.sh" --enter "$target" "$@"
}

apt_in() {
    # apt-get ARG... in root $1, for at most $2 seconds.
    target=$1
    limit=$2
    shift 2
    in_root "$target" env DEBIAN_FRONTEND=noninteractive timeout "$limit" apt-get -y -qq \
        -o Acquire::Check-Valid-Until=false -o Acquire::http::Timeout=30 -o Acquire::Retries=2 "$@"
}

install_packages() {
    target=$1
    echo "sid-chroot: installing Python 3.14, 3.15 and the build dependencies into $target" >&2
    apt_in "$target" 300 update >&2 || die "apt-get update failed in $target (network?)"
    # shellcheck disable=SC2086
    apt_in "$target" 900 install --no-install-recommends $PACKAGES >/dev/null ||
        die "apt-get install failed in $target (network?)"
    in_root "$target" apt-get clean
    echo "$PACKAGES" >"$target/.zloop-packages"
}

ensure() {
    [ "$(id -u)" -eq 0 ] || die "needs root (debootstrap, chroot, mount)"
    for tool in unshare chroot flock; do
        command -v "$tool" >/dev/null 2>&1 || die "$tool not found (Debian: util-linux, coreutils)"
    done
    cache=$(dirname "$root")
    mkdir -p "$cache"
    exec 9>"$cache/.lock"
    flock -w 1800 9 || die "timed out waiting for another build of $root"
    if [ -f "$root/.zloop-packages" ] && [ "$(cat "$root/.zloop-packages")" = "$PACKAGES" ]; then
        echo "$root"
        return
    fi
    mirror=$(host_mirror)
    if [ ! -x "$root/usr/bin/apt-get" ]; then
        if ! command -v debootstrap >/dev/null 2>&1; then
            echo "sid-chroot: installing debootstrap" >&2
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null 2>&1 ||
                { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null; } ||
                die "cannot install debootstrap"
        fi
        check_mirror "$mirror"
        echo "sid-chroot: debootstrap sid from $mirror into $root" >&2
        rm -rf "$root.new"
        timeout 900 debootstrap --variant=minbase sid "$root.new" "$mirror" >"$cache/debootstrap.log" 2>&1 ||
            die "debootstrap failed or took over 15 minutes (log: $cache/debootstrap.log)"
        cp -f /etc/hosts "$root.new/etc/hosts"
        install_packages "$root.new"
        rm -rf "$root"
        mv "$root.new" "$root"
    else
        check_mirror "$mirror"
        install_packages "$root"
    fi
    echo "$root"
}

case "${1:-}" in
    ensure)
        ensure
        ;;
    run)
        shift
        [ $# -gt 0 ] || die "usage: $0 run CMD [ARG...]"
        [ -f "$root/.zloop-packages" ] || die "no root at $root: run '$0 ensure' first"
        ZLOOP_CHROOT_NS=1 exec unshare --mount --propagation private "$top/scripts/sid-chroot.sh" --enter "$root" "$@"
        ;;
    --enter)
        # Internal: the second half of in_root, inside the new mount namespace.
        [ "${ZLOOP_CHROOT_NS:-}" = 1 ] || die "--enter is internal"
        shift
        enter "$@"
        ;;
    *)
        die "usage: $0 ensure | run CMD [ARG...]"
        ;;
esac
