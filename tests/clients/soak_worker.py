#!/usr/bin/env python3
"""soak_worker: one worker process of the soak test (tests/soak.rs).

  soak_worker.py MNT INDEX WORKERS SECS SEED

For SECS seconds it does random mixed operations on the mount at MNT:

- shared sections (soak-shared-0, soak-shared-1), mapped MAP_SHARED by every worker.
  A shared section is a row of 64 KiB epochs; in each epoch worker INDEX owns the u64 at
  INDEX * 4096. The worker bumps its counter in the newest epoch it knows through its
  view, reads it back with pread (the view and the file path must agree at once), and
  checks through its view that no other worker's counter ever goes backwards. Now and
  then it grows the section by one epoch (fallocate, which never shrinks) and remaps.
- its private section (soak-priv-INDEX): pwrite (also past the end), writes through a
  view, ftruncate growth, a refused shrink (EBUSY, another handle open), pread and whole-content checks
  against its own model of the bytes, and the sidecar's name and size.
- short-lived sections: create O_EXCL, a second O_EXCL (EEXIST), rename, read back under
  the new name, unlink (then ENOENT); refused names (EINVAL); listings.

At the end it checks its private section once more and reports, one fact a line:
  worker INDEX ops COUNT
  private NAME SIZE CRC            (CRC: zlib.crc32 of the private section's bytes)
  shared NAME EPOCH COUNTER        (its last counter in each epoch it wrote)

Exit codes: 0 success; 1 a check failed or a call failed unexpectedly (reason on
stderr); 64 bad command line. Python 3.11 standard library only.
"""

import errno
import mmap
import os
import random
import struct
import sys
import time
import traceback
import zlib

EPOCH = 64 * 1024
SLOT = 4096
MAX_EPOCHS = 16
SHARED = ["soak-shared-0", "soak-shared-1"]
PRIVATE_MAX = 4 << 20


class Failed(Exception):
    pass


def expect_errno(want, fn, *args):
    try:
        fn(*args)
    except OSError as e:
        if e.errno != want:
            raise Failed(f"{fn.__name__}{args}: errno {e.errno}, expected {want}") from e
        return
    raise Failed(f"{fn.__name__}{args} succeeded, expected errno {want}")


def read_meta(path):
    with open(path + ".meta", "rb") as f:
        text = f.read().decode()
    return dict(line.split("=", 1) for line in text.splitlines())


class Shared:
    """One shared section, mapped whole (up to MAX_EPOCHS epochs)."""

    def __init__(self, path, index, workers):
        self.path, self.index, self.workers = path, index, workers
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        os.posix_fallocate(self.fd, 0, EPOCH)
        self.mm = None
        self.words = None
        self.counters = {}
        self.seen = {}
        self.remap()

    def epochs(self):
        return len(self.mm) // EPOCH

    def remap(self):
        size = os.fstat(self.fd).st_size
        if size % EPOCH:
            raise Failed(f"{self.path}: size {size} is not a whole number of epochs")
        want = min(size // EPOCH, MAX_EPOCHS) * EPOCH
        if self.mm is not None and len(self.mm) == want:
            return
        self.close()
        self.mm = mmap.mmap(self.fd, want, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        # An aligned u64 store through a cast memoryview is one machine store.
        self.words = memoryview(self.mm).cast("Q")

    def step(self, rng):
        self.remap()
        epoch = self.epochs() - 1
        value = self.counters.get(epoch, 0) + 1
        off = epoch * EPOCH + self.index * SLOT
        self.words[off // 8] = value
        self.counters[epoch] = value
        (back,) = struct.unpack("<Q", os.pread(self.fd, 8, off))
        if back != value:
            raise Failed(f"{self.path}@{off}: wrote {value} through the view, pread gives {back}")
        for e in range(self.epochs()):
            for w in range(self.workers):
                v = self.words[(e * EPOCH + w * SLOT) // 8]
                last = self.seen.get((e, w), 0)
                if v < last:
                    raise Failed(f"{self.path}: worker {w}'s counter in epoch {e} went back from {last} to {v}")
                self.seen[(e, w)] = v
        if rng.random() < 0.02 and self.epochs() < MAX_EPOCHS:
            os.posix_fallocate(self.fd, 0, (self.epochs() + 1) * EPOCH)
            self.remap()

    def close(self):
        if self.words is not None:
            self.words.release()
            self.words = None
        if self.mm is not None:
            self.mm.close()
            self.mm = None


class Private:
    """The worker's own section and a model of every byte it should hold."""

    def __init__(self, path):
        self.path = path
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        self.model = bytearray()

    def pwrite(self, rng):
        off = rng.randrange(0, len(self.model) + 4096)
        data = rng.randbytes(rng.randrange(1, 8192))
        if off + len(data) > PRIVATE_MAX:
            return
        if os.pwrite(self.fd, data, off) != len(data):
            raise Failed(f"{self.path}: short pwrite")
        self.put(off, data)

    def map_write(self, rng):
        if not self.model:
            return
        off = rng.randrange(0, len(self.model))
        data = rng.randbytes(min(rng.randrange(1, 16384), len(self.model) - off))
        with mmap.mmap(self.fd, len(self.model), mmap.MAP_SHARED) as mm:
            mm[off:off + len(data)] = data
            if rng.random() < 0.5:
                mm.flush()
        self.put(off, data)

    def grow(self, rng):
        size = len(self.model) + rng.randrange(1, 65536)
        if size > PRIVATE_MAX:
            return
        os.ftruncate(self.fd, size)
        self.model.extend(bytes(size - len(self.model)))

    def refused_shrink(self, rng):
        # Another handle is open: only the sole holder may shrink (EBUSY, after the
        # daemon's short wait for releases in flight).
        if self.model:
            other = os.open(self.path, os.O_RDONLY)
            try:
                expect_errno(errno.EBUSY, os.ftruncate, self.fd, len(self.model) - 1)
            finally:
                os.close(other)

    def check_range(self, rng):
        if not self.model:
            return
        off = rng.randrange(0, len(self.model))
        n = rng.randrange(1, 65536)
        got = os.pread(self.fd, n, off)
        if got != self.model[off:off + n]:
            raise Failed(f"{self.path}: pread({n}, {off}) differs from what was written")

    def check_all(self, rng=None):
        size = os.fstat(self.fd).st_size
        if size != len(self.model):
            raise Failed(f"{self.path}: size {size}, expected {len(self.model)}")
        got = os.pread(self.fd, len(self.model) + 1, 0)
        if got != self.model:
            first = next((i for i, (a, b) in enumerate(zip(got, self.model)) if a != b), None)
            raise Failed(f"{self.path}: content differs (first at {first}, len {len(got)})")

    def check_sidecar(self, rng):
        meta = read_meta(self.path)
        name = os.path.basename(self.path)
        if meta.get("name") != name or meta.get("size") != str(len(self.model)):
            raise Failed(f"{self.path}.meta: {meta}, expected name={name} size={len(self.model)}")

    def put(self, off, data):
        if off > len(self.model):
            self.model.extend(bytes(off - len(self.model)))
        self.model[off:off + len(data)] = data


def short_lived(mnt, index, serial, rng):
    """Create, refuse, rename, read back and unlink one section."""
    a = os.path.join(mnt, f"soak-tmp-{index}-{serial}")
    b = a + "-renamed"
    data = rng.randbytes(rng.randrange(0, 20000))
    fd = os.open(a, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    expect_errno(errno.EEXIST, os.open, a, os.O_RDWR | os.O_CREAT | os.O_EXCL)
    os.rename(a, b)
    expect_errno(errno.ENOENT, os.open, a, os.O_RDONLY)
    with open(b, "rb") as f:
        if f.read() != data:
            raise Failed(f"{b}: content differs after rename")
    os.unlink(b)
    expect_errno(errno.ENOENT, os.stat, b)


def refused_names(mnt, rng):
    expect_errno(errno.EINVAL, os.open, os.path.join(mnt, "soak-bad.meta"), os.O_RDWR | os.O_CREAT)
    expect_errno(errno.EINVAL, os.open, os.path.join(mnt, "soak\\bad"), os.O_RDWR | os.O_CREAT)
    expect_errno(errno.ENOENT, os.open, os.path.join(mnt, "soak-never-made"), os.O_RDWR)


def run(mnt, index, workers, secs, seed):
    rng = random.Random(seed)
    shared = [Shared(os.path.join(mnt, n), index, workers) for n in SHARED]
    private = Private(os.path.join(mnt, f"soak-priv-{index}"))
    ops = [
        (30, lambda: rng.choice(shared).step(rng)),
        (12, lambda: private.pwrite(rng)),
        (8, lambda: private.map_write(rng)),
        (4, lambda: private.grow(rng)),
        (2, lambda: private.refused_shrink(rng)),
        (10, lambda: private.check_range(rng)),
        (2, lambda: private.check_all(rng)),
        (3, lambda: private.check_sidecar(rng)),
        (4, lambda: short_lived(mnt, index, count, rng)),
        (2, lambda: refused_names(mnt, rng)),
        (2, lambda: check_listing(mnt, index)),
    ]
    weights = [w for w, _ in ops]
    count = 0
    deadline = time.monotonic() + secs
    while time.monotonic() < deadline:
        (_, op), = rng.choices(ops, weights)
        op()
        count += 1
    private.check_all()
    lines = [f"worker {index} ops {count}",
             f"private {os.path.basename(private.path)} {len(private.model)} {zlib.crc32(private.model)}"]
    for name, s in zip(SHARED, shared):
        lines += [f"shared {name} {e} {c}" for e, c in sorted(s.counters.items())]
    for s in shared:
        s.close()
        os.close(s.fd)
    os.close(private.fd)
    print("\n".join(lines), flush=True)


def check_listing(mnt, index):
    names = set(os.listdir(mnt))
    want = {f"soak-priv-{index}", f"soak-priv-{index}.meta", *SHARED}
    if not want <= names:
        raise Failed(f"listing lacks {sorted(want - names)}")


def main(argv):
    if len(argv) != 6:
        print(__doc__, file=sys.stderr)
        return 64
    mnt, index, workers, secs, seed = argv[1], int(argv[2]), int(argv[3]), float(argv[4]), int(argv[5])
    try:
        run(mnt, index, workers, secs, seed)
    except (Failed, OSError) as e:
        print(f"worker {index}: {e}", file=sys.stderr)
        traceback.print_exc()
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
