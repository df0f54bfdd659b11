#!/usr/bin/env python3
"""section_client: a plain-syscall client of sectionfs, used by the integration tests.

Same command line, output and exit codes as section_client.c, so a test can run the
C client in one process and this one in another on the same section:

  create PATH SIZE              open O_RDWR|O_CREAT 0644, grow to SIZE if smaller,
                                read PATH.meta while holding the fd:
                                prints "status=<status>" then "size=<n>"
  open PATH                     open O_RDWR (no O_CREAT): prints "size=<n>"
  fill PATH OFFSET LEN BYTE     set the range through a MAP_SHARED view: "ok"
  check PATH OFFSET LEN BYTE    verify the range through a MAP_SHARED view: "ok"
  pingpong PATH ROLE ROUNDS     ROLE even|odd; alternate increments of the
                                little-endian u64 at offset 0: "ok <counter>"
  grow-map PATH NEWSIZE BYTE    keep a view of the old size, grow, map the new
                                tail, touch each of its pages: "ok old=<o> new=<n>"
  watch-size PATH EXPECT TIMEOUT_MS
                                poll fstat until st_size == EXPECT: "ok"

Exit codes: 0 success; 2 a syscall failed ("error: <op>: <strerror> (errno=<N>)" on
stderr); 3 check mismatch, size timeout or a sidecar without status (the reason on
stdout); 4 pingpong timeout (on stdout); 64 bad command line.

Python 3.11 standard library only.
"""

import mmap
import os
import struct
import sys
import time

EXIT_SYSCALL = 2
EXIT_MISMATCH = 3
EXIT_TIMEOUT = 4
EXIT_USAGE = 64

PINGPONG_TIMEOUT_S = 30.0
# Large ranges are filled and compared in chunks so memory stays bounded.
CHUNK = 1 << 20

USAGE = """\
  section_client create PATH SIZE
  section_client open PATH
  section_client fill PATH OFFSET LEN BYTE
  section_client check PATH OFFSET LEN BYTE
  section_client pingpong PATH even|odd ROUNDS
  section_client grow-map PATH NEWSIZE BYTE
  section_client watch-size PATH EXPECT TIMEOUT_MS"""


class SyscallError(Exception):
    """An OSError tagged with the operation that raised it."""

    def __init__(self, op, err):
        super().__init__(op)
        self.op = op
        self.errno = err.errno if err.errno is not None else 0


class Usage(Exception):
    pass


def sys_call(op, fn, *args):
    """Runs one syscall wrapper; failures carry `op` for the error line."""
    try:
        return fn(*args)
    except OSError as e:
        raise SyscallError(op, e) from e


def parse_u64(s, what):
    # Digits only, like the C client: no sign, no spaces, no underscores.
    if not s.isascii() or not s.isdigit():
        raise Usage(what)
    v = int(s)
    if v >= 1 << 64:
        raise Usage(what)
    return v


def parse_byte(s):
    v = parse_u64(s, "BYTE must be 0..255")
    if v > 255:
        raise Usage("BYTE must be 0..255")
    return v


def fd_size(fd):
    return sys_call("fstat", os.fstat, fd).st_size


def map_shared(fd, length, prot, offset=0):
    return sys_call(
        "mmap", mmap.mmap, fd, length, mmap.MAP_SHARED, prot, 0, offset
    )


def check_range(size, off, length):
    if off > size or length > size - off:
        raise Usage("OFFSET+LEN is past the end of the section")


def read_sidecar(path):
    # The sidecar's st_size may be 0 under FUSE, so read to EOF.
    fd = sys_call("open-meta", os.open, path + ".meta", os.O_RDONLY)
    parts = []
    while True:
        b = sys_call("read-meta", os.read, fd, 65536)
        if not b:
            break
        parts.append(b)
    os.close(fd)
    return b"".join(parts).decode("utf-8", "surrogateescape")


def cmd_create(path, size):
    fd = sys_call("open", os.open, path, os.O_RDWR | os.O_CREAT, 0o644)
    if fd_size(fd) < size:
        sys_call("ftruncate", os.ftruncate, fd, size)
    # The fd stays open: the sidecar reports this process's own open.
    meta = read_sidecar(path)
    status = None
    for line in meta.split("\n"):
        if line.startswith("status="):
            status = line[len("status="):]
            break
    if status is None:
        print(f"no status line in {path}.meta")
        return EXIT_MISMATCH
    print(f"status={status}")
    print(f"size={fd_size(fd)}")
    os.close(fd)
    return 0


def cmd_open(path):
    fd = sys_call("open", os.open, path, os.O_RDWR)
    print(f"size={fd_size(fd)}")
    os.close(fd)
    return 0


def cmd_fill(path, off, length, byte):
    fd = sys_call("open", os.open, path, os.O_RDWR)
    size = fd_size(fd)
    check_range(size, off, length)
    if size > 0:  # mmap of length 0 is refused; an empty range needs no view
        mm = map_shared(fd, size, mmap.PROT_READ | mmap.PROT_WRITE)
        pattern = bytes([byte]) * min(length, CHUNK)
        pos, end = off, off + length
        while pos < end:
            n = min(CHUNK, end - pos)
            mm[pos:pos + n] = pattern[:n]
            pos += n
        sys_call("msync", mm.flush)
        mm.close()
    os.close(fd)
    print("ok")
    return 0


def cmd_check(path, off, length, byte):
    fd = sys_call("open", os.open, path, os.O_RDONLY)
    size = fd_size(fd)
    check_range(size, off, length)
    if size > 0:
        mm = map_shared(fd, size, mmap.PROT_READ)
        want = bytes([byte])
        pos, end = off, off + length
        while pos < end:
            n = min(CHUNK, end - pos)
            chunk = mm[pos:pos + n]
            rest = chunk.lstrip(want)
            if rest:
                bad = pos + n - len(rest)
                print(f"mismatch at {bad}: {rest[0]}")
                return EXIT_MISMATCH
            pos += n
        mm.close()
    os.close(fd)
    print("ok")
    return 0


def load_counter(mm):
    # struct.unpack_from is not an atomic load: read until two reads agree so
    # a read racing the peer's store is never torn.
    v = struct.unpack_from("<Q", mm, 0)[0]
    while True:
        again = struct.unpack_from("<Q", mm, 0)[0]
        if again == v:
            return v
        v = again


def store_counter(mm, v):
    # Python has no atomic 8-byte store (struct writes byte by byte), so write
    # the high bytes first and the low byte last, alone: until that last store
    # the parity is unchanged and the peer keeps waiting, never acting on a
    # half-written counter.
    b = struct.pack("<Q", v)
    mm[1:8] = b[1:]
    mm[0] = b[0]


def cmd_pingpong(path, role, rounds):
    if role not in ("even", "odd"):
        raise Usage("ROLE must be even or odd")
    parity = 0 if role == "even" else 1
    fd = sys_call("open", os.open, path, os.O_RDWR)
    size = fd_size(fd)
    if size < 8:
        raise Usage("the section must hold at least 8 bytes")
    mm = map_shared(fd, min(size, mmap.PAGESIZE), mmap.PROT_READ | mmap.PROT_WRITE)
    deadline = time.monotonic() + PINGPONG_TIMEOUT_S
    done = v = spins = 0
    while done < rounds:
        v = load_counter(mm)
        if v % 2 == parity:
            v += 1
            store_counter(mm, v)
            done += 1
            spins = 0
            continue
        spins += 1
        if spins % 1024 == 0 and time.monotonic() > deadline:
            print(f"timeout at counter={v}")
            return EXIT_TIMEOUT
        # Yield first for latency; back off to a short sleep if the peer is slow.
        if spins < 10000:
            os.sched_yield()
        else:
            time.sleep(0.0005)
    print(f"ok {v}")
    mm.close()
    os.close(fd)
    return 0


def cmd_grow_map(path, newsize, byte):
    page = mmap.PAGESIZE
    fd = sys_call("open", os.open, path, os.O_RDWR)
    old = fd_size(fd)
    if newsize < old:
        raise Usage("NEWSIZE must be >= the current size")
    old_view = map_shared(fd, old, mmap.PROT_READ) if old > 0 else None
    sys_call("ftruncate", os.ftruncate, fd, newsize)
    grown = fd_size(fd)
    if grown > old:
        # mmap offsets must be page-aligned: map from the page holding `old`.
        base = old // page * page
        tail = map_shared(fd, grown - base, mmap.PROT_READ | mmap.PROT_WRITE, base)
        off = old
        while off < grown:
            tail[off - base] = byte
            off = (off // page + 1) * page
        sys_call("msync", tail.flush)
        tail.close()
    # A view must never fault because its section changed size: read every page.
    if old_view is not None:
        for off in range(0, old, page):
            old_view[off]
        old_view.close()
    os.close(fd)
    print(f"ok old={old} new={grown}")
    return 0


def cmd_watch_size(path, expect, timeout_ms):
    deadline = time.monotonic() + timeout_ms / 1000.0
    fd = sys_call("open", os.open, path, os.O_RDONLY)
    while True:
        size = fd_size(fd)
        if size == expect:
            break
        if time.monotonic() > deadline:
            print(f"timeout: size={size}")
            return EXIT_MISMATCH
        time.sleep(0.001)
    os.close(fd)
    print("ok")
    return 0


def run(argv):
    if len(argv) < 3:
        raise Usage("missing arguments")
    cmd, args = argv[1], argv[2:]
    if cmd == "create" and len(args) == 2:
        return cmd_create(args[0], parse_u64(args[1], "SIZE must be a number"))
    if cmd == "open" and len(args) == 1:
        return cmd_open(args[0])
    if cmd in ("fill", "check") and len(args) == 4:
        fn = cmd_fill if cmd == "fill" else cmd_check
        return fn(
            args[0],
            parse_u64(args[1], "OFFSET must be a number"),
            parse_u64(args[2], "LEN must be a number"),
            parse_byte(args[3]),
        )
    if cmd == "pingpong" and len(args) == 3:
        return cmd_pingpong(args[0], args[1], parse_u64(args[2], "ROUNDS must be a number"))
    if cmd == "grow-map" and len(args) == 3:
        return cmd_grow_map(
            args[0], parse_u64(args[1], "NEWSIZE must be a number"), parse_byte(args[2])
        )
    if cmd == "watch-size" and len(args) == 3:
        return cmd_watch_size(
            args[0],
            parse_u64(args[1], "EXPECT must be a number"),
            parse_u64(args[2], "TIMEOUT_MS must be a number"),
        )
    raise Usage("unknown subcommand or wrong number of arguments")


def main():
    # Results go to a pipe; make each line visible even if we are killed.
    sys.stdout.reconfigure(line_buffering=True)
    try:
        return run(sys.argv)
    except SyscallError as e:
        print(f"error: {e.op}: {os.strerror(e.errno)} (errno={e.errno})", file=sys.stderr)
        return EXIT_SYSCALL
    except Usage as e:
        print(f"usage: {e}\n{USAGE}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
