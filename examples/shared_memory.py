"""shared_memory.py: multiprocessing.shared_memory code on a sectionfs mount, switched by
one import; then what sectionfs adds (creation status, growth, the sidecar's facts).

    pip install ./clients/python
    SECTIONFS_MOUNT=/mnt/sections python3 examples/shared_memory.py
"""
from multiprocessing import Process, set_start_method

import sectionfs
from sectionfs import SharedMemory  # was: from multiprocessing.shared_memory import SharedMemory


def child(name):
    shm = SharedMemory(name)  # attach by name, in another process
    shm.buf[:5] = b"hello"
    shm.close()


if __name__ == "__main__":
    set_start_method("spawn")
    shm = SharedMemory(create=True, size=4096)  # a fresh name, psm_...
    p = Process(target=child, args=(shm.name,))
    p.start()
    p.join()
    print("child wrote:", bytes(shm.buf[:5]).decode())

    # CreateFileMapping's way: open or create, and grow to the size asked.
    other = SharedMemory.open_or_create(shm.name, 8192)
    print("created:", other.created, "size:", other.size)
    print("status:", other.meta()["status"])
    shm.grow(0)  # catch up with the growth
    print("listed:", shm.name in sectionfs.list(), "size:", shm.size)
    other.close()
    shm.close()
    shm.unlink()
