//! Using sections from Rust: the `CreateFileMapping` / `OpenFileMapping` / `MapViewOfFile`
//! trio over a mounted sectionfs.
//!
//! | Windows | here |
//! |---|---|
//! | `CreateFileMapping(INVALID_HANDLE_VALUE, …, size, name)` + `GetLastError()` | [`Section::create_or_open`] → `(section, created)` |
//! | `OpenFileMapping(FILE_MAP_ALL_ACCESS, …, name)` | [`Section::open`] (`ENOENT` when absent) |
//! | `OpenFileMapping(FILE_MAP_READ, …, name)` | [`Section::open_read_only`] |
//! | a second `CreateFileMapping` with a larger size | [`Section::grow`] |
//! | `MapViewOfFile(h, …, offset, len)` / `UnmapViewOfFile` | [`Section::map`], [`Section::map_range`] / drop the view |
//! | a named mutex guarding the view | [`Section::lock`] (`flock` on the section) |
//! | `CloseHandle` | drop the [`Section`]; the section stays until [`remove`] |
//!
//! Everything here is plain syscalls on the files of the mount (open, `ftruncate`, mmap,
//! `flock`, and a read of `NAME.meta`): the client never talks to the daemon otherwise, and
//! programs in other languages doing the same syscalls share the same sections.
//!
//! Errors are the kernel's `io::Error`s with their errno (`raw_os_error()`); the README's
//! "Porting from Windows" section maps them to the Windows error codes.

pub use crate::contract::Meta;
use crate::contract::Status;
use memmap2::MmapOptions;
/// The view types, re-exported so callers need no `memmap2` dependency of their own.
pub use memmap2::{MmapMut, MmapRaw};
use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Where sections are mounted by convention.
pub const DEFAULT_MOUNT: &str = "/mnt/sections";

/// The mode a new section gets from [`Section::create_or_open`]: owner only, like the
/// default security descriptor of a Windows section (its creator's account).
pub const DEFAULT_MODE: u32 = 0o600;

/// An open handle on one named section. Dropping it closes the handle; the section and
/// every view of it stay.
#[derive(Debug)]
pub struct Section {
    file: File,
    path: PathBuf,
    writable: bool,
}

impl Section {
    /// Opens the section `name` under `mount`, creating it if absent, and grows it to at
    /// least `size` bytes. Returns the section and `true` if this call created it
    /// (`false` is `ERROR_ALREADY_EXISTS`). A new section gets [`DEFAULT_MODE`].
    ///
    /// The creation status is read from `NAME.meta` while the handle is open, which
    /// describes this process's most recent open of the section: two threads of one
    /// process racing to create the same name may both read the later answer. Use
    /// [`Section::create_new`] where exactly one creator must be told so.
    ///
    /// ```no_run
    /// use sectionfs::client::Section;
    /// let (section, created) = Section::create_or_open("/mnt/sections", "Frame", 1 << 20)?;
    /// println!("{}", if created { "created" } else { "already exists" });
    /// assert!(section.size()? >= 1 << 20);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn create_or_open(
        mount: impl AsRef<Path>,
        name: impl AsRef<OsStr>,
        size: u64,
    ) -> io::Result<(Section, bool)> {
        Section::create_or_open_mode(mount, name, size, DEFAULT_MODE)
    }

    /// [`Section::create_or_open`] with the mode bits a new section gets (the umask
    /// applies, as for any file; `0o666` lets every user open it).
    pub fn create_or_open_mode(
        mount: impl AsRef<Path>,
        name: impl AsRef<OsStr>,
        size: u64,
        mode: u32,
    ) -> io::Result<(Section, bool)> {
        let section = Section::open_with(
            mount.as_ref(),
            name.as_ref(),
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .mode(mode),
            true,
        )?;
        let created = section.meta()?.status == Status::Created;
        section.grow(size)?;
        Ok((section, created))
    }

    /// Creates the section `name` of `size` bytes, failing with `EEXIST` if it exists
    /// (`O_CREAT|O_EXCL`): exactly one caller, in any process or thread, succeeds.
    pub fn create_new(
        mount: impl AsRef<Path>,
        name: impl AsRef<OsStr>,
        size: u64,
        mode: u32,
    ) -> io::Result<Section> {
        let section = Section::open_with(
            mount.as_ref(),
            name.as_ref(),
            OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(mode),
            true,
        )?;
        section.grow(size)?;
        Ok(section)
    }

    /// Opens an existing section for reading and writing; `ENOENT` if there is none.
    ///
    /// ```no_run
    /// use sectionfs::client::Section;
    /// match Section::open("/mnt/sections", "Frame") {
    ///     Ok(s) => println!("{} bytes", s.size()?),
    ///     Err(e) if e.kind() == std::io::ErrorKind::NotFound => println!("no such section"),
    ///     Err(e) => return Err(e),
    /// }
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn open(mount: impl AsRef<Path>, name: impl AsRef<OsStr>) -> io::Result<Section> {
        Section::open_with(
            mount.as_ref(),
            name.as_ref(),
            OpenOptions::new().read(true).write(true),
            true,
        )
    }

    /// Opens an existing section for reading only (`FILE_MAP_READ`): its views are
    /// read-only, and [`Section::grow`] past its size fails with `EINVAL` (the kernel's
    /// answer to `ftruncate` on a read-only handle).
    pub fn open_read_only(mount: impl AsRef<Path>, name: impl AsRef<OsStr>) -> io::Result<Section> {
        Section::open_with(
            mount.as_ref(),
            name.as_ref(),
            OpenOptions::new().read(true),
            false,
        )
    }

    /// Opens with `options`, which must ask for writing exactly when `writable`.
    fn open_with(
        mount: &Path,
        name: &OsStr,
        options: &OpenOptions,
        writable: bool,
    ) -> io::Result<Section> {
        let path = section_path(mount, name)?;
        let file = options.open(&path)?;
        Ok(Section {
            file,
            path,
            writable,
        })
    }

    /// The section's size in bytes now (it may have grown since this handle was opened).
    pub fn size(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    /// Grows the section to at least `size` bytes and returns its size afterwards. A
    /// smaller `size` changes nothing (`grow` never shrinks), as when a second
    /// `CreateFileMapping` asks for less than the section has. Every process sees the new
    /// size at once; views keep their length, so map the new tail to use it.
    ///
    /// It is `fstat`, then `ftruncate` if the section is smaller. If another process grows
    /// the section in between, the `ftruncate` is a shrink: refused (`EBUSY`) while that
    /// process still holds the section, which `grow` takes as "big enough"; but if it has
    /// already closed it and nobody maps it, the mount lets this sole holder shrink it back
    /// to `size`, as `ftruncate` would on any file. Processes that grow one section
    /// concurrently and then let go of it should grow under [`Section::lock`].
    ///
    /// Fails with `ENOSPC` when the store cannot hold the growth (`commit=eager`), leaving
    /// the size as it was.
    ///
    /// ```no_run
    /// use sectionfs::client::Section;
    /// let (section, _) = Section::create_or_open("/mnt/sections", "Log", 4096)?;
    /// let old = section.size()?;
    /// let new = section.grow(old + 4096)?;
    /// let tail = section.map_range(old, (new - old) as usize)?; // the new pages only
    /// assert_eq!(tail.len() as u64, new - old);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn grow(&self, size: u64) -> io::Result<u64> {
        let now = self.size()?;
        if size <= now {
            return Ok(now);
        }
        match self.file.set_len(size) {
            Ok(()) => Ok(size),
            // Another process grew it past `size` between our fstat and ftruncate and still
            // holds it: the ftruncate was a shrink, refused (EBUSY; EPERM from daemons
            // older than the shrink rule). The section is big enough anyway.
            Err(e) if matches!(e.raw_os_error(), Some(libc::EBUSY) | Some(libc::EPERM)) => {
                match self.size()? {
                    now if now >= size => Ok(now),
                    _ => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// Maps the whole section as it is now (`MapViewOfFile` with length 0). The view is
    /// shared (`MAP_SHARED`) with every process mapping the section, and read-only if the
    /// handle is. It keeps its length when the section grows; map the tail to reach it.
    ///
    /// The view hands out raw pointers, because other processes write the same bytes:
    /// share data through atomics (or a lock, see [`Section::lock`]) as with any shared
    /// memory.
    ///
    /// ```no_run
    /// use sectionfs::client::Section;
    /// use std::sync::atomic::{AtomicU64, Ordering};
    /// let (section, _) = Section::create_or_open("/mnt/sections", "Counter", 8)?;
    /// let view = section.map()?;
    /// // SAFETY: the view is 8-byte aligned and at least 8 bytes long; every process
    /// // touches these bytes only atomically.
    /// let counter = unsafe { AtomicU64::from_ptr(view.as_mut_ptr().cast()) };
    /// println!("counter = {}", counter.fetch_add(1, Ordering::SeqCst) + 1);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn map(&self) -> io::Result<MmapRaw> {
        let len = usize::try_from(self.size()?).map_err(|_| too_big())?;
        self.map_range(0, len)
    }

    /// Maps `len` bytes from `offset` (`MapViewOfFile` with an offset). Unlike Windows, the
    /// offset need not be a multiple of the allocation granularity. A range past the
    /// section's end is refused with `EINVAL`: grow first.
    pub fn map_range(&self, offset: u64, len: usize) -> io::Result<MmapRaw> {
        self.check_range(offset, len)?;
        let mut options = MmapOptions::new();
        options.offset(offset).len(len);
        if self.writable {
            options.map_raw(&self.file)
        } else {
            options.map_raw_read_only(&self.file)
        }
    }

    /// Maps `len` bytes from `offset` as a byte slice, for data no other process changes
    /// while the view is borrowed (filling a buffer before publishing it, say).
    ///
    /// # Safety
    /// The slice must not be read or written while another process or view writes the
    /// same bytes: Rust assumes a `&mut [u8]` is the only access to its memory. Use
    /// [`Section::map_range`] and atomics for bytes shared while they change.
    pub unsafe fn map_mut(&self, offset: u64, len: usize) -> io::Result<MmapMut> {
        self.check_range(offset, len)?;
        // SAFETY: the caller upholds exclusive access; while this handle is open no other
        // process may shrink the section (EBUSY: the sole-holder rule), so the mapped range
        // keeps its backing.
        unsafe {
            MmapOptions::new()
                .offset(offset)
                .len(len)
                .map_mut(&self.file)
        }
    }

    fn check_range(&self, offset: u64, len: usize) -> io::Result<()> {
        let end = offset.checked_add(len as u64).ok_or_else(too_big)?;
        if end > self.size()? {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{}: view [{offset}, {end}) reaches past the section's end; grow it first",
                    self.path.display()
                ),
            ));
        }
        Ok(())
    }

    /// Takes the section's lock (`flock(LOCK_EX)`), waiting for it; dropping the guard
    /// releases it. The examples in C and Python take the same lock around their updates,
    /// so all three can share one counter. It only excludes others who take it too.
    pub fn lock(&self) -> io::Result<SectionLock<'_>> {
        // std's File::lock is flock(LOCK_EX) on Linux: the lock C and Python take.
        self.file.lock()?;
        Ok(SectionLock { section: self })
    }

    /// The section's sidecar, read now. Its `status` describes this process's most recent
    /// open of the section, as long as this handle is open.
    pub fn meta(&self) -> io::Result<Meta> {
        Meta::read(&sidecar_path(&self.path))
    }

    /// The section's path in the mount.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The open file, for anything else (fstat, pread, fsync, ...).
    pub fn file(&self) -> &File {
        &self.file
    }
}

/// Held while a process owns the section's lock; see [`Section::lock`].
#[derive(Debug)]
pub struct SectionLock<'a> {
    section: &'a Section,
}

impl Drop for SectionLock<'_> {
    fn drop(&mut self) {
        // Closing the fd would release the lock too, so a failure here cannot leave it
        // held past the Section.
        let _ = self.section.file.unlock();
    }
}

/// Removes the name `name` (`unlink`): new opens fail with `ENOENT` at once, while open
/// handles and views keep the old bytes until they close. Only the section's owner (or
/// root) may remove it.
pub fn remove(mount: impl AsRef<Path>, name: impl AsRef<OsStr>) -> io::Result<()> {
    std::fs::remove_file(section_path(mount.as_ref(), name.as_ref())?)
}

/// `MOUNT/NAME`, for a name that is one valid section name (so `..` or `a/b` cannot
/// reach outside the mount). Invalid names get the errno the daemon gives them.
fn section_path(mount: &Path, name: &OsStr) -> io::Result<PathBuf> {
    crate::name::validate(name).map_err(|e| io::Error::from_raw_os_error(e.errno()))?;
    Ok(mount.join(name))
}

fn sidecar_path(section: &Path) -> PathBuf {
    let mut p = section.as_os_str().to_owned();
    p.push(".meta");
    PathBuf::from(p)
}

fn too_big() -> io::Error {
    io::Error::from_raw_os_error(crate::error::Error::TooBig.errno())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_cannot_leave_the_mount() {
        let mnt = Path::new("/mnt/sections");
        assert_eq!(
            section_path(mnt, OsStr::new("Frame")).unwrap(),
            Path::new("/mnt/sections/Frame")
        );
        for bad in ["..", ".", "a/b", "", "x.meta", "a\\b"] {
            let e = section_path(mnt, OsStr::new(bad)).unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::EINVAL), "{bad:?}");
        }
    }
}
