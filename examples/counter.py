#!/usr/bin/env python3
"""counter.py: a named section shared by processes, the way a Windows program uses
CreateFileMapping + MapViewOfFile, with the standard library on a sectionfs mount.

    python3 examples/counter.py /mnt/sections Counter 1000 &
    python3 examples/counter.py /mnt/sections Counter 1000; wait
    python3 examples/counter.py /mnt/sections Counter 0     # prints counter=2000

Same steps, output and lock as examples/counter.c (read its header), so C, Python and
Rust processes can share one counter:
  1. open-or-create, then Counter.meta says "status=created" or "status=already_exists";
  2. the section is at least one page: a little-endian u64 counter at offset 0;
  3. grow to two pages, map only the new tail, write this pid at its start;
  4. ROUNDS times: flock the section, add one to the counter, unlock.

Exit status: 0 done; 1 a call failed ("counter: <call>: <strerror>" on stderr);
64 bad command line.
"""

import errno
import fcntl
import mmap
import os
import struct
import sys

COUNTER = struct.Struct("<Q")


def created(path):
    """The sidecar's answer for this process's open (read while the fd is held)."""
    with open(path + ".meta") as meta:
        for line in meta:
            if line == "status=created\n":
                return True
            if line == "status=already_exists\n":
                return False
    raise OSError(errno.EPROTO, "no status= in " + path + ".meta")


def grow(fd, size):
    """Grows the section to at least `size`. If another process grew it past `size` first
    and still holds it, ftruncate refuses that shrink (EBUSY; EPERM from older daemons)
    and the size is fine anyway. (Every process grows to the same sizes, so a late
    ftruncate never undoes a larger growth.)"""
    if os.fstat(fd).st_size >= size:
        return
    try:
        os.ftruncate(fd, size)
    except OSError as e:
        if e.errno not in (errno.EBUSY, errno.EPERM) or os.fstat(fd).st_size < size:
            raise


def main(argv):
    if len(argv) != 4 or not argv[3].isdigit():
        print("usage: counter.py MOUNTPOINT NAME ROUNDS", file=sys.stderr)
        return 64
    path = os.path.join(argv[1], argv[2])
    rounds = int(argv[3])
    page = mmap.PAGESIZE

    # 1. Open or create, and ask the sidecar which it was.
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    print("status=" + ("created" if created(path) else "already_exists"))

    # 2. The counter's page.
    grow(fd, page)
    counter = mmap.mmap(fd, page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)

    # 3. Grow, then map only the new tail.
    grow(fd, 2 * page)
    tail = mmap.mmap(fd, page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=page)
    COUNTER.pack_into(tail, 0, os.getpid())
    print(f"size={os.fstat(fd).st_size}\ntail={page}+{page}")

    # 4. Add to the shared counter under the section's lock.
    value = 0
    for _ in range(max(rounds, 1)):
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            (value,) = COUNTER.unpack_from(counter, 0)
            if rounds > 0:
                value += 1
                COUNTER.pack_into(counter, 0, value)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    print(f"counter={value}")

    tail.close()
    counter.close()
    os.close(fd)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv))
    except OSError as e:
        print(f"counter: {e.filename or 'call'}: {e.strerror or e}", file=sys.stderr)
        sys.exit(1)
