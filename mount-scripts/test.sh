#!/bin/sh
# The README's test command: installs what the tests need on a fresh Debian machine, then
# runs every test. `.ci/run` is this script and nothing more, so CI proves the README.
#
#   ./mount-scripts/test.sh              everything (unit, mount, client and doc tests)
#   ./mount-scripts/test.sh ARGS...      `cargo test ARGS` instead (e.g. `--test mount model::`,
#                                        `--test crash`)
#
# Needs root for the apt step only when something is missing (the mount tests need root
# anyway: they mount through /dev/fuse, act as other users and set the kernel's io_uring
# switch for FUSE, which this script restores at the end).
# Environment: SECTIONFS_SOAK_SECS, SECTIONFS_CRASH_ITERATIONS, PROPTEST_CASES narrow the
# slow tiers; SECTIONFS_TEST_VENV moves the Python environment (default target/test-venv).
set -eu
cd "$(dirname "$0")/.."

# System packages: the FUSE helpers, xattr tools, a C compiler, pkg-config, Python.
need=""
command -v fusermount3 >/dev/null 2>&1 || need="$need fuse3"    # fusermount3, mount.fuse3
command -v getfattr >/dev/null 2>&1 || need="$need attr"        # getfattr/setfattr recipes
command -v cc >/dev/null 2>&1 || need="$need gcc"               # the C clients and library
command -v make >/dev/null 2>&1 || need="$need make"
command -v pkg-config >/dev/null 2>&1 || need="$need pkgconf"   # `pkg-config sections`
command -v python3 >/dev/null 2>&1 || need="$need python3"
command -v sqlite3 >/dev/null 2>&1 || need="$need sqlite3"
apt_install() {
    echo "test.sh: installing $*"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}
if [ -n "$need" ]; then
    apt_install $need
fi

if [ ! -e /dev/fuse ]; then
    echo "test.sh: /dev/fuse is missing: the mount tests cannot run" >&2
    exit 1
fi

# Python packages the client tests use, in a private environment first on PATH, so every
# `python3` a test starts has them (no change to the system's Python).
venv=${SECTIONFS_TEST_VENV:-$PWD/target/test-venv}
if [ ! -x "$venv/bin/python3" ]; then
    # Debian ships venv's pip bootstrap (ensurepip) apart, in python3-venv: a plain
    # `import ensurepip` can succeed without it, so try the real thing.
    if ! python3 -m venv "$venv" >/dev/null 2>&1; then
        rm -rf "$venv"
        apt_install python3-venv
        python3 -m venv "$venv"
    fi
fi
# wheel (with the venv's setuptools) lets the tests run `pip install ./clients/python`
# offline, with --no-build-isolation.
if ! "$venv/bin/python3" -c 'import numpy, lmdb, setuptools, wheel' >/dev/null 2>&1; then
    echo "test.sh: installing numpy, lmdb, setuptools and wheel into $venv"
    "$venv/bin/python3" -m pip install -q --disable-pip-version-check numpy lmdb setuptools wheel
fi
export PATH="$venv/bin:$PATH"
export SECTIONFS_TEST_VENV="$venv"

# FUSE over io_uring is offered only while the kernel's switch is on (root): on for the
# run, so that the default transport of the suite is the ring (the cached data mode keeps
# to /dev/fuse, and tests/mount/transport.rs turns the switch either way), then put back.
uring=/sys/module/fuse/parameters/enable_uring
if [ "$(id -u)" -eq 0 ] && [ -w "$uring" ]; then
    uring_was=$(cat "$uring")
    trap 'echo "$uring_was" > "$uring"' EXIT
    echo Y > "$uring"
fi

export CI=${CI:-true}
if [ $# -gt 0 ]; then
    cargo test "$@"
    exit
fi
cargo test --all-targets
cargo test --doc
