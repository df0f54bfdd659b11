#!/bin/sh
# Install sectionfs where mount(8) and fstab find it.
#
#   ./mount-scripts/install.sh              build (release) and install the binary, and the C
#                                           library (libsections, sections.h, sections.pc)
#   ./mount-scripts/install.sh --systemd    ... and the systemd unit sectionfs.service
#   ./mount-scripts/install.sh --uninstall  remove what the two above installed
#
# `mount -t fuse.sectionfs` runs mount.fuse3, which runs `sectionfs` through /bin/sh; mount(8)
# sanitizes its helpers' environment, so that shell searches the standard PATH
# (/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin), not the caller's: the
# binary must be in one of those, hence PREFIX/bin.
#
# Environment: PREFIX (default /usr/local), SECTIONFS_BIN (install this binary instead of
# building one), SYSTEMD_DIR (default /etc/systemd/system).
#
# The C library goes to PREFIX/lib, PREFIX/include and PREFIX/lib/pkgconfig, so that
# `cc prog.c $(pkg-config --cflags --libs sections)` builds against it (for a PREFIX other
# than /usr/local, add PREFIX/lib/pkgconfig to PKG_CONFIG_PATH). It needs cc and make.
set -eu

step="start"
trap 'rc=$?; [ "$rc" -eq 0 ] || echo "install.sh: failed while trying to $step (exit $rc)" >&2' EXIT

repo=$(cd "$(dirname "$0")/.." && pwd)
prefix=${PREFIX:-/usr/local}
unit_dir=${SYSTEMD_DIR:-/etc/systemd/system}
action=${1:-install}

step="read the command line"
case $action in
install | --systemd | --uninstall) ;;
*)
    echo "usage: install.sh [--systemd | --uninstall]" >&2
    trap - EXIT
    exit 64
    ;;
esac

if [ "$action" = --uninstall ]; then
    step="remove $prefix/bin/sectionfs"
    rm -f "$prefix/bin/sectionfs"
    step="remove the C library from $prefix"
    if command -v make >/dev/null 2>&1; then
        make -s -f "$repo/clients/c/Makefile" PREFIX="$prefix" uninstall
    fi
    if [ -f "$unit_dir/sectionfs.service" ]; then
        step="remove $unit_dir/sectionfs.service"
        rm -f "$unit_dir/sectionfs.service"
    fi
    echo "removed sectionfs from $prefix (stores and mounts are left as they are)"
    exit 0
fi

step="build the release binary (cargo build --release)"
if [ -n "${SECTIONFS_BIN:-}" ]; then
    bin=$SECTIONFS_BIN
else
    if [ -n "${SUDO_USER:-}" ] && [ "$SUDO_USER" != root ]; then
        # Build as the user who ran sudo: their toolchain, their target/ directory.
        sudo -u "$SUDO_USER" -H sh -lc 'cd "$1" && cargo build --release --quiet' sh "$repo"
    elif command -v cargo >/dev/null 2>&1; then
        (cd "$repo" && cargo build --release --quiet)
    else
        step="find cargo (install Rust from https://rustup.rs)"
        false
    fi
    bin=${CARGO_TARGET_DIR:-$repo/target}/release/sectionfs
fi

step="install $bin as $prefix/bin/sectionfs"
mkdir -p "$prefix/bin"
# Copy beside the target, then rename: a mount running the old binary is not disturbed.
install -m 0755 "$bin" "$prefix/bin/.sectionfs.new"
mv -f "$prefix/bin/.sectionfs.new" "$prefix/bin/sectionfs"
echo "installed $("$prefix/bin/sectionfs" --version) as $prefix/bin/sectionfs"

step="build and install the C library (make -f clients/c/Makefile install)"
if command -v cc >/dev/null 2>&1 && command -v make >/dev/null 2>&1; then
    build=$(mktemp -d)
    # Built outside the checkout, so the source tree stays clean.
    make -s -f "$repo/clients/c/Makefile" BUILDDIR="$build" PREFIX="$prefix" install
    rm -rf "$build"
    # The default prefix is in the loader's search path; tell its cache.
    if [ "$prefix" = /usr/local ] && [ "$(id -u)" = 0 ] && command -v ldconfig >/dev/null 2>&1; then
        ldconfig
    fi
    echo "installed libsections, sections.h and sections.pc under $prefix"
else
    echo "C library not installed: it needs cc and make (apt-get install gcc make)" >&2
fi

if [ "$action" = --systemd ]; then
    step="install $unit_dir/sectionfs.service"
    mkdir -p "$unit_dir"
    sed "s|/usr/local/bin/sectionfs|$prefix/bin/sectionfs|g" \
        "$repo/mount-scripts/sectionfs.service" >"$unit_dir/sectionfs.service"
    chmod 0644 "$unit_dir/sectionfs.service"
    if [ -d /run/systemd/system ]; then
        systemctl daemon-reload
    fi
    echo "installed $unit_dir/sectionfs.service; start it with: systemctl enable --now sectionfs"
fi
echo "mount with: mount -t fuse.sectionfs STORE MOUNTPOINT -o allow_other"
echo "        or a line in /etc/fstab: see $repo/mount-scripts/fstab.example"
