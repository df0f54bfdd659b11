"""Named, growable shared memory on a sectionfs mount.

``SharedMemory`` behaves like ``multiprocessing.shared_memory.SharedMemory`` (``name``,
``size``, ``buf``, ``close()``, ``unlink()``, the same exceptions), with each block a
section of the mount: ``$SECTIONFS_MOUNT/NAME`` (default ``/mnt/sections``), or the
``mount=`` keyword. Existing code switches with one import::

    from sectionfs import SharedMemory      # was: from multiprocessing.shared_memory import ...

Beyond it: ``created`` (False when the section was there already: Windows'
ERROR_ALREADY_EXISTS), ``grow(size)``, ``SharedMemory.open_or_create(name, size)``,
``meta()`` (the sidecar's facts) and the module's ``list()`` of the mount's sections.

Names: ``"Global\\\\Name"`` is the mount's ``Name``, ``"Local\\\\Name"`` the caller's own
namespace (``Local/Name``); any other backslash, a ``/``, ``"."``, ``".."`` or a name
ending in ``.meta`` is a ``ValueError``.

Differences from the standard library: sections are not tracked by
``multiprocessing.resource_tracker`` (none is unlinked behind your back at exit; call
``unlink()``), and ``size`` is the section's size, never rounded up to a page.
"""

import mmap
import os
import secrets

__all__ = ["SharedMemory", "list", "DEFAULT_MOUNT"]

DEFAULT_MOUNT = "/mnt/sections"
_NAME_MAX = 250
# The sidecar's keys whose values are numbers.
_INT_KEYS = {"size", "creator_pid", "open_handles"}


def _mount_of(mount):
    if mount is not None:
        return os.fspath(mount)
    return os.environ.get("SECTIONFS_MOUNT") or DEFAULT_MOUNT


def _relative(name):
    """The section's path under the mount for a Windows-style name."""
    if not isinstance(name, str):
        raise TypeError("name must be a str")
    ns, rest = "", name
    for prefix, directory in (("Global\\", ""), ("Local\\", "Local/")):
        if name.startswith(prefix):
            ns, rest = directory, name[len(prefix):]
            break
    if (
        not rest
        or "\\" in rest
        or "/" in rest
        or "\0" in rest
        or rest in (".", "..")
        or rest.endswith(".meta")
    ):
        raise ValueError(f"invalid section name: {name!r}")
    if len(os.fsencode(rest)) > _NAME_MAX:
        raise ValueError(f"section name longer than {_NAME_MAX} bytes: {name!r}")
    return ns + rest


def _make_name():
    # Like the standard library's "psm_" names: random, and retried if taken.
    return "psm_" + secrets.token_hex(8)


class SharedMemory:
    """A section of the mount, mapped shared into this process.

    ``SharedMemory(name=None, create=False, size=0, *, mount=None)``: with
    ``create=True`` makes a new section of ``size`` bytes (``FileExistsError`` if the
    name is taken; ``name=None`` picks a unique one); otherwise attaches to an existing
    one (``FileNotFoundError`` if absent) and ``size`` is ignored.
    """

    _fd = -1
    _mmap = None
    _buf = None
    _old_maps = ()

    def __init__(self, name=None, create=False, size=0, *, mount=None):
        if not size >= 0:
            raise ValueError("'size' must be a positive integer")
        if create and size == 0:
            raise ValueError("'size' must be a positive number different from zero")
        if name is None and not create:
            raise ValueError("'name' can only be None if create=True")
        self._mount = _mount_of(mount)
        self._old_maps = []
        if create:
            while True:
                chosen = _make_name() if name is None else name
                path = os.path.join(self._mount, _relative(chosen))
                try:
                    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
                except FileExistsError:
                    if name is None:
                        continue
                    raise
                break
            self._name, self._fd, self._created = chosen, fd, True
            try:
                os.ftruncate(fd, size)
            except BaseException:
                # The section this call made must not outlive its failure.
                os.close(fd)
                self._fd = -1
                os.unlink(path)
                raise
        else:
            path = os.path.join(self._mount, _relative(name))
            self._fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
            self._name, self._created = name, False
        self._map()

    @classmethod
    def open_or_create(cls, name, size, *, mount=None):
        """Attaches to section ``name``, creating it if absent (``created`` tells which),
        and grows it to ``size`` bytes if it is smaller: CreateFileMapping's way."""
        if not size > 0:
            raise ValueError("'size' must be a positive number different from zero")
        self = cls.__new__(cls)
        self._mount = _mount_of(mount)
        self._old_maps = []
        path = os.path.join(self._mount, _relative(name))
        while True:
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
                created = True
            except FileExistsError:
                try:
                    fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
                except FileNotFoundError:
                    continue  # removed between the two opens: try again
                created = False
            break
        self._name, self._fd, self._created = name, fd, created
        try:
            if os.fstat(fd).st_size < size:
                os.ftruncate(fd, size)
        except BaseException:
            os.close(fd)
            self._fd = -1
            if created:
                os.unlink(path)
            raise
        self._map()
        return self

    def _map(self):
        size = os.fstat(self._fd).st_size
        self._mmap = mmap.mmap(self._fd, size)
        self._size = size
        self._buf = memoryview(self._mmap)

    def __del__(self):
        try:
            self.close()
        except (OSError, BufferError):
            pass

    def __reduce__(self):
        return (_attach, (self._name, self._mount))

    def __repr__(self):
        return f"{self.__class__.__name__}({self._name!r}, size={self._size})"

    @property
    def name(self):
        """The section's name, as given (namespace prefix included)."""
        return self._name

    @property
    def size(self):
        """Bytes mapped: the section's size when it was mapped (or last grown)."""
        return self._size

    @property
    def buf(self):
        """A memoryview of the shared bytes."""
        return self._buf

    @property
    def created(self):
        """True if this object made the section; False if it was there already."""
        return self._created

    @property
    def path(self):
        """The section's file on the mount."""
        return os.path.join(self._mount, _relative(self._name))

    def grow(self, size):
        """Grows the section to ``size`` bytes if it is smaller (it never shrinks), then
        maps it again at its current size, which includes growth by other processes:
        ``grow(0)`` only catches up with them. ``buf`` and ``size`` are the new mapping;
        arrays made over the old ``buf`` keep their length and stay valid."""
        if not size >= 0:
            raise ValueError("'size' must be a positive integer")
        if os.fstat(self._fd).st_size < size:
            os.ftruncate(self._fd, size)
        if os.fstat(self._fd).st_size == self._size:
            return
        self._old_maps.append((self._buf, self._mmap))
        self._map()

    def meta(self):
        """The sidecar ``NAME.meta`` as a dict (its numbers as ints). Read while this
        object holds the section, ``status`` answers this process's own most recent open."""
        with open(self.path + ".meta", encoding="utf-8", errors="surrogateescape") as f:
            text = f.read()
        facts = {}
        for line in text.splitlines():
            key, sep, value = line.partition("=")
            if sep:
                facts[key] = int(value) if key in _INT_KEYS and value.isdigit() else value
        return facts

    def close(self):
        """Unmaps the section and closes its descriptor; the section stays."""
        bufs = [self._buf] + [b for b, _ in self._old_maps]
        maps = [self._mmap] + [m for _, m in self._old_maps]
        for b in bufs:
            if b is not None:
                b.release()
        for m in maps:
            if m is not None:
                m.close()
        self._buf, self._mmap, self._old_maps = None, None, []
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def unlink(self):
        """Removes the section's name (call it once, from one process). Mappings keep
        their data until they are closed."""
        os.unlink(self.path)


def _attach(name, mount):
    return SharedMemory(name, mount=mount)


def list(mount=None):  # noqa: A001 - the issue's name for it
    """The names of the mount's sections (its root, the Global namespace), sorted."""
    root = _mount_of(mount)
    return sorted(n for n in os.listdir(root) if not n.endswith(".meta"))
