#!/bin/sh
# Unmount a sectionfs mount and wait for its daemon to let go of the store.
#
#   ./mount-scripts/unmount.sh [MOUNTPOINT]      (default /mnt/sections)
#
# The sections stay in the store: mounting it again brings them back. A mount whose
# files are still open is refused (busy); nothing is killed.
set -eu

step="start"
trap 'rc=$?; [ "$rc" -eq 0 ] || echo "unmount.sh: failed while trying to $step (exit $rc)" >&2' EXIT
fail() { echo "unmount.sh: $*" >&2; trap - EXIT; exit 1; }

mnt=$(realpath -ms "${1:-/mnt/sections}")

step="find $mnt in the mount table"
# Field 5 is the mount point; after " - " come the type and the source (the store).
line=$(awk -v m="$mnt" '$5 == m { print; exit }' /proc/self/mountinfo)
[ -n "$line" ] || fail "$mnt is not mounted"
fstype=$(printf '%s\n' "$line" | sed 's/.* - //' | cut -d' ' -f1)
store=$(printf '%s\n' "$line" | sed 's/.* - //' | cut -d' ' -f2)
case $fstype in
fuse | fuse.sectionfs) ;;
*) fail "$mnt is a $fstype mount, not sectionfs" ;;
esac

step="unmount $mnt"
if [ "$(id -u)" -eq 0 ]; then
    umount "$mnt" 2>/dev/null || fail "$mnt is busy: close what uses it (fuser -vm $mnt), or detach it with umount -l $mnt"
else
    fusermount3 -u "$mnt" 2>/dev/null || fail "$mnt is busy or not yours: close what uses it (fuser -vm $mnt)"
fi

step="wait for the daemon to release $store"
# The daemon holds an flock on STORE/lock for its whole life.
if [ -f "$store/lock" ]; then
    flock -w 10 "$store/lock" true || fail "unmounted $mnt, but its daemon still holds $store after 10 s"
fi
echo "unmounted $mnt; the sections stay in $store (mount it again to get them back)"
