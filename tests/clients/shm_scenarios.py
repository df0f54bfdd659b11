#!/usr/bin/env python3
"""shm_scenarios MOUNT: sectionfs.SharedMemory across real processes (multiprocessing,
spawn start method) on MOUNT, for tests/python_client.rs. Prints one "ok <scenario>" line
per scenario and exits 0; a failed check raises (exit 1, traceback on stderr).

numpy is required when CI=true (the test command installs it) and skipped otherwise.
"""

import multiprocessing as mp
import os
import sys

import sectionfs
from sectionfs import SharedMemory

MOUNT = sys.argv[1]
os.environ["SECTIONFS_MOUNT"] = MOUNT  # spawned children inherit it

try:
    import numpy as np
except ImportError:
    if os.environ.get("CI") == "true":
        raise
    np = None


def expect(exc, fn, *args, **kw):
    try:
        fn(*args, **kw)
    except exc:
        return
    raise AssertionError(f"{fn.__name__}{args}{kw} did not raise {exc.__name__}")


def add_slot(shm, slot, times):
    # shm arrives pickled: the child attaches to the section by name.
    arr = np.ndarray((8,), dtype=np.int64, buffer=shm.buf)
    for _ in range(times):
        arr[slot] += 1
    del arr
    shm.close()


def attach_and_fill(name, value):
    shm = SharedMemory(name)
    shm.buf[:] = bytes([value]) * shm.size
    shm.close()


def grow_and_write(name, size, text):
    shm = SharedMemory.open_or_create(name, size)
    assert not shm.created
    assert shm.size == size, shm.size
    shm.buf[size - len(text):] = text
    shm.close()


def racer(name, barrier, results):
    barrier.wait()
    shm = SharedMemory.open_or_create(name, 4096)
    results.put((shm.created, shm.meta()["status"]))
    shm.close()


def exceptions():
    expect(FileNotFoundError, SharedMemory, "absent")
    expect(ValueError, SharedMemory, "neg", create=True, size=-1)
    expect(ValueError, SharedMemory, "zero", create=True, size=0)
    expect(ValueError, SharedMemory)
    expect(ValueError, SharedMemory, "a\\b", create=True, size=1)
    expect(ValueError, SharedMemory, "x.meta", create=True, size=1)
    shm = SharedMemory("dup", create=True, size=10)
    assert shm.created and shm.size == 10 and len(shm.buf) == 10
    expect(FileExistsError, SharedMemory, "dup", create=True, size=10)
    other = SharedMemory("dup", size=999)  # size is ignored when attaching
    assert other.size == 10 and not other.created
    other.close()
    shm.unlink()
    shm.close()
    expect(FileNotFoundError, SharedMemory, "dup")
    # name=None makes a fresh name each time.
    a = SharedMemory(create=True, size=1)
    b = SharedMemory(create=True, size=1)
    assert a.name != b.name and a.name.startswith("psm_")
    for s in (a, b):
        s.unlink()
        s.close()


def shared_between_processes(ctx):
    shm = SharedMemory("counts", create=True, size=64)
    if np is not None:
        procs = [ctx.Process(target=add_slot, args=(shm, i, 200)) for i in range(4)]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
            assert p.exitcode == 0
        arr = np.ndarray((8,), dtype=np.int64, buffer=shm.buf)
        assert arr.tolist() == [200] * 4 + [0] * 4, arr.tolist()
        del arr
    p = ctx.Process(target=attach_and_fill, args=("counts", 7))
    p.start()
    p.join()
    assert p.exitcode == 0
    assert bytes(shm.buf) == b"\x07" * 64
    shm.close()
    SharedMemory("counts").unlink()


def growth(ctx):
    shm = SharedMemory("grows", create=True, size=4096)
    keep = shm.buf  # a view of the old mapping stays valid after growing
    p = ctx.Process(target=grow_and_write, args=("grows", 65536, b"tail"))
    p.start()
    p.join()
    assert p.exitcode == 0
    assert shm.size == 4096
    shm.grow(0)  # catch up with the other process's growth
    assert shm.size == 65536 and bytes(shm.buf[-4:]) == b"tail"
    shm.grow(1 << 20)
    assert shm.size == 1 << 20 and os.stat(shm.path).st_size == 1 << 20
    shm.grow(100)  # never shrinks
    assert shm.size == 1 << 20
    keep[0] = 1
    assert shm.buf[0] == 1
    if np is not None:
        arr = np.frombuffer(shm.buf, dtype=np.uint8)
        assert arr.size == 1 << 20
        del arr
    del keep
    meta = shm.meta()
    assert meta["size"] == 1 << 20 and meta["name"] == "grows", meta
    assert meta["status"] == "created"
    shm.close()
    SharedMemory("grows").unlink()


def race(ctx):
    for round_ in range(3):
        name = f"race{round_}"
        barrier = ctx.Barrier(6)
        results = ctx.Queue()
        procs = [ctx.Process(target=racer, args=(name, barrier, results)) for _ in range(6)]
        for p in procs:
            p.start()
        answers = [results.get(timeout=60) for _ in procs]
        for p in procs:
            p.join()
            assert p.exitcode == 0
        created = [a for a in answers if a[0]]
        assert len(created) == 1, answers
        # The sidecar agrees with each process's own answer.
        for was_created, status in answers:
            assert status == ("created" if was_created else "already_exists"), answers
        os.unlink(os.path.join(MOUNT, name))


def listing_and_namespaces():
    a = SharedMemory("Global\\listed", create=True, size=1)
    b = SharedMemory("Local\\mine", create=True, size=1)
    assert os.path.exists(os.path.join(MOUNT, "listed"))
    assert os.path.exists(os.path.join(MOUNT, "Local", "mine"))
    names = sectionfs.list()
    assert "listed" in names and "mine" not in names, names
    assert sectionfs.list(mount=MOUNT) == names
    c = SharedMemory.open_or_create("listed", 1, mount=MOUNT)
    assert not c.created and c.meta()["status"] == "already_exists"
    for s in (a, b, c):
        s.close()
    for s in (a, b):
        s.unlink()
    assert "listed" not in sectionfs.list()


if __name__ == "__main__":
    ctx = mp.get_context("spawn")
    exceptions()
    print("ok exceptions", flush=True)
    shared_between_processes(ctx)
    print("ok shared", "numpy" if np is not None else "without numpy", flush=True)
    growth(ctx)
    print("ok growth", flush=True)
    race(ctx)
    print("ok race", flush=True)
    listing_and_namespaces()
    print("ok listing", flush=True)
