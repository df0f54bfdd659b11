//! The store: the private directory that holds every section's bytes and the facts needed
//! to bring it back after a restart. No FUSE types here.
//!
//! Layout (see DESIGN.md):
//! ```text
//! STORE/            0700, owned by the daemon's user
//!   lock            flock()ed by the one daemon serving the store; holds its pid
//!   sections/       0700
//!     0000000000000002   one backing file per section, 0600, named by its id (= inode);
//!                        its record (name, owner, mode, creation facts) is the xattr
//!                        `user.sectionfs.record` on that same file
//! ```
//! A file name never derives from a section's name, so no user-chosen text reaches a path.
//! Every file is reached relative to the `sections/` directory fd with `O_NOFOLLOW`.

mod growth;
mod record;

pub use growth::{commit_range, grow};
pub use record::{FileBacking, Record};

use crate::error::{Error, Result};
use nix::errno::Errno;
use nix::fcntl::{AT_FDCWD, AtFlags, OFlag, openat};
use nix::sys::stat::{Mode, fstatat};
use nix::sys::statvfs::{Statvfs, fstatvfs};
use nix::unistd::{UnlinkatFlags, linkat, unlinkat};
use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Ids are inode numbers, so their range is the inode encoding's (`ino.rs`).
pub const FIRST_ID: u64 = crate::ino::FIRST_SECTION;
pub const MAX_ID: u64 = crate::ino::MAX_SECTION;

/// A section found in the store at start-up.
#[derive(Debug)]
pub struct Found {
    pub id: u64,
    pub record: Record,
}

/// What a scan of the store found.
#[derive(Debug, Default)]
pub struct Scan {
    pub sections: Vec<Found>,
    /// Entries left aside, each with the reason (already logged once).
    pub damaged: Vec<(OsString, String)>,
}

/// An open store. Dropping it releases the lock.
#[derive(Debug)]
pub struct Store {
    root: PathBuf,
    /// The `sections/` directory; every backing file is reached relative to it.
    dir: OwnedFd,
    /// Held (flock) for the daemon's life: one daemon per store.
    _lock: File,
    next_id: AtomicU64,
    /// Whether `linkat(AT_EMPTY_PATH)` may name an O_TMPFILE (it needs CAP_DAC_READ_SEARCH);
    /// cleared at its first refusal, after which the /proc/self/fd path is used.
    link_by_fd: AtomicBool,
}

impl Store {
    /// Opens (creating if missing) the store at `root` and takes its lock. Fails with a
    /// readable message when the store is unusable or served by another daemon.
    pub fn open(root: &Path) -> std::result::Result<Store, String> {
        let ctx = |what: &str, e: io::Error| format!("store {}: {what}: {e}", root.display());
        let created = std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(root);
        // A file in the way fails the create with EEXIST: say what is wrong with it.
        if let Err(e) = created
            && e.kind() != io::ErrorKind::AlreadyExists
        {
            return Err(ctx("cannot create", e));
        }
        let meta = std::fs::symlink_metadata(root).map_err(|e| ctx("cannot stat", e))?;
        if !meta.is_dir() {
            return Err(format!("store {}: not a directory", root.display()));
        }
        let euid = nix::unistd::geteuid().as_raw();
        if meta.uid() != euid {
            return Err(format!(
                "store {}: owned by uid {}, not by this daemon's uid {euid}",
                root.display(),
                meta.uid()
            ));
        }
        if meta.mode() & 0o777 != 0o700 {
            std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| ctx("cannot make it private (0700)", e))?;
        }
        let lock = take_lock(root)?;
        let sections = root.join("sections");
        match std::fs::DirBuilder::new().mode(0o700).create(&sections) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(ctx("cannot create sections/", e)),
        }
        let dir = open_dir(&sections).map_err(|e| ctx("cannot open sections/", e))?;
        check_xattrs(&dir)
            .map_err(|e| ctx("its filesystem does not keep user extended attributes", e))?;
        Ok(Store {
            root: root.to_path_buf(),
            dir,
            _lock: lock,
            next_id: AtomicU64::new(FIRST_ID),
            link_by_fd: AtomicBool::new(true),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Writes this process's pid into the lock file: the background daemon calls it after
    /// the fork, so the file names the process that serves the store, not its parent.
    pub fn claim_lock(&self) {
        write_pid(&self._lock);
    }

    /// Reads every section back. Damaged entries are logged once and left untouched; of
    /// two records claiming one name (a rename over a section, cut short by a crash) the
    /// newer wins and the older one, which the rename was replacing, is removed.
    pub fn scan(&self) -> io::Result<Scan> {
        let mut scan = Scan::default();
        let mut max_id = FIRST_ID - 1;
        for entry in std::fs::read_dir(self.sections_path())? {
            let entry = entry?;
            let fname = entry.file_name();
            let Some(id) = parse_id(&fname) else {
                self.damaged(&mut scan, fname, "not a section file".into());
                continue;
            };
            match self.read_record(id) {
                Ok(record) => {
                    // Only healthy ids count: a stray file named with the largest id must
                    // not use up the id space. `create` steps over ids still taken.
                    max_id = max_id.max(id);
                    scan.sections.push(Found { id, record })
                }
                Err(why) => self.damaged(&mut scan, fname, why),
            }
        }
        self.next_id.store(max_id + 1, Ordering::Relaxed);

        // By namespace and name, then newest first; of equal seqs the lower (older) id
        // first.
        scan.sections.sort_by(|a, b| {
            let (ra, rb) = (&a.record, &b.record);
            (ra.namespace, &ra.name, rb.seq, a.id).cmp(&(rb.namespace, &rb.name, ra.seq, b.id))
        });
        let same_name = |a: &Record, b: &Record| a.namespace == b.namespace && a.name == b.name;
        let mut kept: Vec<Found> = Vec::with_capacity(scan.sections.len());
        let mut copies = Vec::new();
        for f in scan.sections.drain(..) {
            match kept.last() {
                // No rename gives two records one seq: this is a copy (or a second link)
                // of a section file, not a crash to repair. Keep the first, touch neither.
                Some(winner)
                    if same_name(&winner.record, &f.record)
                        && winner.record.seq == f.record.seq =>
                {
                    let why = format!("holds the same record as {} (a copy?)", id_name(winner.id));
                    copies.push((id_name(f.id).into(), why));
                }
                Some(winner) if same_name(&winner.record, &f.record) => {
                    log::warn!(
                        "store: {} and {} both hold {:?}: keeping the newer rename, removing {}",
                        id_name(winner.id),
                        id_name(f.id),
                        f.record.name,
                        id_name(f.id)
                    );
                    if let Err(e) = self.remove(f.id) {
                        log::warn!("store: cannot remove {}: {e}", id_name(f.id));
                    }
                }
                _ => kept.push(f),
            }
        }
        scan.sections = kept;
        for (fname, why) in copies {
            self.damaged(&mut scan, fname, why);
        }
        Ok(scan)
    }

    fn damaged(&self, scan: &mut Scan, fname: OsString, why: String) {
        log::warn!(
            "store: leaving {:?} aside untouched: {why}",
            self.sections_path().join(&fname)
        );
        scan.damaged.push((fname, why));
    }

    fn read_record(&self, id: u64) -> std::result::Result<Record, String> {
        // Look before opening: opening a fifo, a socket or a device found in the store
        // could block, fail oddly or act on the device; a symlink is refused by O_NOFOLLOW.
        let st = self.stat(id).map_err(|e| format!("cannot stat: {e}"))?;
        if st.st_mode & libc::S_IFMT != libc::S_IFREG {
            return Err(format!("not a regular file ({})", file_type(st.st_mode)));
        }
        let file = self
            .open_file(id)
            .map_err(|e| format!("cannot open: {e}"))?;
        let meta = file.metadata().map_err(|e| format!("cannot stat: {e}"))?;
        if !meta.is_file() {
            return Err("not a regular file".into());
        }
        record::read(&file)
    }

    /// Creates a section's backing file with its record, atomically: the file appears in
    /// the store only once its record is on it. Returns its id and an open handle.
    pub fn create(&self, record: &Record) -> Result<(u64, File)> {
        // An unnamed file gets its record first, then a name: a crash leaves nothing behind.
        let unnamed = openat(&self.dir, ".", OFlag::O_TMPFILE | RW, PRIVATE);
        if let Ok(fd) = unnamed {
            let file = File::from(fd);
            record::write(&file, record)?;
            // An id may still be taken by a damaged entry left aside at start-up.
            loop {
                let id = self.fresh_id()?;
                match self.link_tmpfile(&file, &id_cstring(id)) {
                    Ok(()) => return Ok((id, file)),
                    Err(e) if e.raw_os_error() == Some(libc::EEXIST) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
        }
        match unnamed {
            Err(Errno::EOPNOTSUPP | Errno::EISDIR) => {}
            Err(e) => return Err(io::Error::from(e).into()),
            Ok(_) => unreachable!("handled above"),
        }
        // No O_TMPFILE on this filesystem: create by name. A crash between the two calls
        // leaves a file without a record, which the next scan reports and leaves aside.
        let (id, fd) = loop {
            let id = self.fresh_id()?;
            let flags = OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | RW;
            match openat(&self.dir, id_cstring(id).as_c_str(), flags, PRIVATE) {
                Ok(fd) => break (id, fd),
                Err(Errno::EEXIST) => continue,
                Err(e) => return Err(io::Error::from(e).into()),
            }
        };
        let file = File::from(fd);
        if let Err(e) = record::write(&file, record) {
            let _ = self.remove(id);
            return Err(e);
        }
        Ok((id, file))
    }

    /// Gives an O_TMPFILE its name in `sections/`.
    /// The next unused id, or ENOSPC once the id space is spent.
    fn fresh_id(&self) -> Result<u64> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        if id > MAX_ID {
            return Err(Error::NoSpace);
        }
        Ok(id)
    }

    fn link_tmpfile(&self, file: &File, fname: &CString) -> io::Result<()> {
        if self.link_by_fd.load(Ordering::Relaxed) {
            // AT_EMPTY_PATH needs CAP_DAC_READ_SEARCH: ENOENT or EPERM without it.
            match linkat(
                file,
                "",
                &self.dir,
                fname.as_c_str(),
                AtFlags::AT_EMPTY_PATH,
            ) {
                Ok(()) => return Ok(()),
                Err(Errno::ENOENT | Errno::EPERM) => {
                    self.link_by_fd.store(false, Ordering::Relaxed)
                }
                Err(e) => return Err(e.into()),
            }
        }
        // Through /proc: no capability needed, one path walk more.
        let proc_path = format!("/proc/self/fd/{}", file.as_raw_fd());
        let follow = AtFlags::AT_SYMLINK_FOLLOW;
        Ok(linkat(
            AT_FDCWD,
            proc_path.as_str(),
            &self.dir,
            fname.as_c_str(),
            follow,
        )?)
    }

    /// Opens a section's backing file read-write.
    pub fn open_file(&self, id: u64) -> io::Result<File> {
        let flags = RW | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK;
        let fd = openat(&self.dir, id_cstring(id).as_c_str(), flags, Mode::empty())?;
        Ok(File::from(fd))
    }

    /// Replaces a section's record (rename, chmod, chown). Atomic: one setxattr.
    pub fn write_record(&self, id: u64, record: &Record) -> Result<()> {
        record::write(&self.open_file(id)?, record)
    }

    /// Stats a section's backing file without opening it.
    pub fn stat(&self, id: u64) -> io::Result<libc::stat> {
        let name = id_cstring(id);
        Ok(fstatat(
            &self.dir,
            name.as_c_str(),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )?)
    }

    /// Removes a section's backing file. Open handles keep the bytes until they close.
    pub fn remove(&self, id: u64) -> io::Result<()> {
        let name = id_cstring(id);
        Ok(unlinkat(
            &self.dir,
            name.as_c_str(),
            UnlinkatFlags::NoRemoveDir,
        )?)
    }

    /// The store's capacity and use, for statfs.
    pub fn statvfs(&self) -> io::Result<Statvfs> {
        Ok(fstatvfs(&self.dir)?)
    }

    /// The raw fd of `sections/`, for the passthrough probe.
    pub fn dir_fd(&self) -> RawFd {
        self.dir.as_raw_fd()
    }

    fn sections_path(&self) -> PathBuf {
        self.root.join("sections")
    }
}

fn take_lock(root: &Path) -> std::result::Result<File, String> {
    let path = root.join("lock");
    let lock = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(|e| format!("store {}: cannot open its lock: {e}", root.display()))?;
    if lock.try_lock().is_err() {
        let holder = std::fs::read_to_string(&path).unwrap_or_default();
        return Err(format!(
            "store {} is already served by another sectionfs daemon (pid {}); \
             one daemon per store",
            root.display(),
            holder.trim()
        ));
    }
    write_pid(&lock);
    Ok(lock)
}

/// Replaces the lock file's text with this process's pid (best effort: the flock, not the
/// text, is what keeps a second daemon out).
fn write_pid(lock: &File) {
    use std::os::unix::fs::FileExt;
    let pid = nix::unistd::getpid();
    lock.set_len(0).ok();
    lock.write_all_at(format!("{pid}\n").as_bytes(), 0).ok();
}

fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW;
    Ok(nix::fcntl::open(path, flags, Mode::empty())?)
}

/// Fails when the store's filesystem cannot hold a record (no user xattrs).
fn check_xattrs(dir: &OwnedFd) -> io::Result<()> {
    let Ok(fd) = openat(dir, ".", OFlag::O_TMPFILE | RW, PRIVATE) else {
        // No O_TMPFILE: the first create will tell.
        return Ok(());
    };
    let file = File::from(fd);
    record::set_xattr(&file, b"x")
}

/// What kind of file a `st_mode` describes, for the log.
fn file_type(mode: libc::mode_t) -> &'static str {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => "a directory",
        libc::S_IFLNK => "a symlink",
        libc::S_IFIFO => "a fifo",
        libc::S_IFSOCK => "a socket",
        libc::S_IFCHR => "a character device",
        libc::S_IFBLK => "a block device",
        _ => "an unknown kind of file",
    }
}

/// How every backing file is opened: read-write, never inherited by a child.
const RW: OFlag = OFlag::O_RDWR.union(OFlag::O_CLOEXEC);
/// Backing files are the daemon's alone.
const PRIVATE: Mode = Mode::S_IRUSR.union(Mode::S_IWUSR);

fn id_cstring(id: u64) -> CString {
    // A hex number never holds a NUL.
    CString::new(format!("{id:016x}")).unwrap_or_default()
}

fn id_name(id: u64) -> String {
    format!("{id:016x}")
}

fn parse_id(fname: &OsStr) -> Option<u64> {
    let b = fname.as_bytes();
    if b.len() != 16
        || !b
            .iter()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
    {
        return None;
    }
    let id = u64::from_str_radix(std::str::from_utf8(b).ok()?, 16).ok()?;
    (FIRST_ID..=MAX_ID).contains(&id).then_some(id)
}

#[cfg(test)]
mod tests {
    use super::record::{self, sample as record};
    use super::*;

    #[test]
    fn damaged_entries_neither_spend_nor_block_ids() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("s");
        let (a, _) = Store::open(&root).unwrap().create(&record("a", 1)).unwrap();
        // Damage at the largest id and at the id the next create would take.
        std::fs::write(root.join("sections").join(id_name(MAX_ID)), b"").unwrap();
        std::fs::write(root.join("sections").join(id_name(a + 1)), b"").unwrap();
        let store = Store::open(&root).unwrap();
        assert_eq!(store.scan().unwrap().damaged.len(), 2);
        let (b, _) = store.create(&record("b", 2)).unwrap();
        assert_eq!(b, a + 2, "steps over the damaged entry");
        let scan = store.scan().unwrap();
        assert_eq!(scan.sections.len(), 2);
        assert_eq!(scan.damaged.len(), 2, "damage is left untouched");
    }

    #[test]
    fn create_scan_remove() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(&tmp.path().join("s")).unwrap();
        let (a, _) = store.create(&record("a", 1)).unwrap();
        let (b, _) = store.create(&record("b", 2)).unwrap();
        assert_ne!(a, b);
        std::fs::write(tmp.path().join("s/sections/stray"), b"x").unwrap();
        let scan = store.scan().unwrap();
        assert_eq!(scan.sections.len(), 2);
        assert_eq!(scan.damaged.len(), 1);
        store.remove(a).unwrap();
        assert_eq!(store.scan().unwrap().sections.len(), 1);
        assert!(
            tmp.path().join("s/sections/stray").exists(),
            "damage is left untouched"
        );
    }

    #[test]
    fn second_open_of_a_store_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let _one = Store::open(tmp.path()).unwrap();
        let err = Store::open(tmp.path()).unwrap_err();
        assert!(err.contains("already served"), "{err}");
    }

    #[test]
    fn interrupted_rename_keeps_the_newer_record() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path()).unwrap();
        let (old, _) = store.create(&record("n", 1)).unwrap();
        let (new, _) = store.create(&record("n", 5)).unwrap();
        let scan = store.scan().unwrap();
        assert_eq!(scan.sections.len(), 1);
        assert_eq!(scan.sections[0].id, new);
        assert!(store.stat(old).is_err());
    }

    #[test]
    fn a_copied_section_file_is_left_aside_not_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path()).unwrap();
        let (id, _) = store.create(&record("n", 3)).unwrap();
        let sections = tmp.path().join("sections");
        let copy = sections.join(id_name(id + 7));
        std::fs::copy(sections.join(id_name(id)), &copy).unwrap();
        let file = std::fs::OpenOptions::new().write(true).open(&copy).unwrap();
        record::write(&file, &record("n", 3)).unwrap();
        let scan = store.scan().unwrap();
        assert_eq!(scan.sections.len(), 1);
        assert_eq!(scan.sections[0].id, id, "the older id is kept");
        assert_eq!(scan.damaged.len(), 1);
        assert!(copy.exists(), "a copy is left untouched");
    }

    #[test]
    fn odd_file_types_are_left_aside_without_opening_them() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path()).unwrap();
        let sections = tmp.path().join("sections");
        let fifo = CString::new(sections.join(id_name(9)).as_os_str().as_bytes()).unwrap();
        // SAFETY: NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        std::fs::create_dir(sections.join(id_name(10))).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", sections.join(id_name(11))).unwrap();
        let scan = store.scan().unwrap();
        assert!(scan.sections.is_empty());
        let mut why: Vec<_> = scan.damaged.iter().map(|d| d.1.as_str()).collect();
        why.sort_unstable();
        assert_eq!(
            why,
            [
                "not a regular file (a directory)",
                "not a regular file (a fifo)",
                "not a regular file (a symlink)"
            ]
        );
    }
}
