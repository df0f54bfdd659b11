#!/bin/sh
# Build sectionfs and mount it: the README's first command.
#
#   ./mount-scripts/mount.sh [STORE [MOUNTPOINT]]      (as root, or with sudo)
#
# Installs fuse3 if it is missing (apt-get), builds the release binary, mounts
# MOUNTPOINT (default /mnt/sections) with allow_other, and prints where the store is
# and how to unmount. Without STORE the sections live in tmpfs under /dev/shm.
#
# Turns on the kernel's FUSE over io_uring (requests served on the caller's CPU: see the
# README, "FUSE over io_uring") where the kernel has it, unless SECTIONFS_KEEP_URING=1.
#
# Environment:
#   SECTIONFS_OPTIONS    more -o options, e.g. commit=lazy or passthrough=off
#   SECTIONFS_BIN        use this binary instead of building one
#   SECTIONFS_KEEP_URING leave /sys/module/fuse/parameters/enable_uring as it is
set -eu

step="start"
trap 'rc=$?; [ "$rc" -eq 0 ] || echo "mount.sh: failed while trying to $step (exit $rc)" >&2' EXIT

repo=$(cd "$(dirname "$0")/.." && pwd)
store=${1:-}
mnt=$(realpath -ms "${2:-/mnt/sections}")

# Whether a mount sits at $1, read from the mount table (a stat would fail with
# ENOTCONN on the mount of a daemon that was killed).
mounted() { awk -v m="$1" '$5 == m { found = 1 } END { exit !found }' /proc/self/mountinfo; }
opts="allow_other${SECTIONFS_OPTIONS:+,$SECTIONFS_OPTIONS}"

step="check that we run as root"
if [ "$(id -u)" -ne 0 ]; then
    echo "mount.sh: run it as root (sudo $0): it may install fuse3 and mounts with allow_other" >&2
    trap - EXIT
    exit 1
fi

step="install fuse3 (apt-get)"
if ! command -v mount.fuse3 >/dev/null 2>&1 && [ ! -x /sbin/mount.fuse3 ]; then
    echo "mount.sh: installing fuse3"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fuse3 >/dev/null
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
[ -x "$bin" ] || { step="find the binary at $bin"; false; }

step="create the mount point $mnt"
mkdir -p "$mnt"

step="check $mnt is not mounted already"
if mounted "$mnt"; then
    echo "mount.sh: $mnt is already mounted; unmount it first: $repo/mount-scripts/unmount.sh $mnt" >&2
    trap - EXIT
    exit 1
fi

step="turn on FUSE over io_uring"
uring=/sys/module/fuse/parameters/enable_uring
if [ -z "${SECTIONFS_KEEP_URING:-}" ] && [ -w "$uring" ] && [ "$(cat "$uring")" != Y ]; then
    echo Y > "$uring"
    echo "mount.sh: turned on FUSE over io_uring for this boot (echo Y > $uring)"
fi

step="mount $mnt"
if [ -n "$store" ]; then
    "$bin" -o "$opts" "$store" "$mnt"
else
    "$bin" -o "$opts" "$mnt"
fi
# The daemon printed "sectionfs: mounted MNT (store STORE, io=...)".
echo "Sections are files in $mnt; each NAME has a NAME.meta sidecar. List them with:"
echo "  $bin list $mnt"
echo "Unmount with: $repo/mount-scripts/unmount.sh $mnt   (or: umount $mnt)"
