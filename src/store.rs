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

use crate::contract::{Commit, Lifetime};
use crate::error::{Error, Result};
use crate::name;
use nix::errno::Errno;
use nix::fcntl::{AT_FDCWD, AtFlags, FallocateFlags, OFlag, openat};
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
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The xattr on each backing file that holds its [`Record`].
const RECORD_XATTR: &[u8] = b"user.sectionfs.record\0";
/// First line of every record; the number is the format version.
const RECORD_MAGIC: &str = "sectionfs-record 1";
/// Ids are inode numbers, so their range is the inode encoding's (`ino.rs`).
pub const FIRST_ID: u64 = crate::ino::FIRST_SECTION;
pub const MAX_ID: u64 = crate::ino::MAX_SECTION;

/// A section whose bytes live in a file outside the store (made by `ln -s /path NAME`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileBacking {
    /// Absolute, as the creator gave it; reopened by this path after a restart.
    pub path: PathBuf,
    /// False when the creator could only read the file: the section is read-only.
    pub writable: bool,
}

/// What the store keeps about a section besides its bytes and size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub name: OsString,
    pub uid: u32,
    pub gid: u32,
    /// Permission bits only (07777).
    pub mode: u32,
    pub creator_pid: u32,
    pub created_at: SystemTime,
    pub commit: Commit,
    /// Order of the last create or rename that gave this record its name. If a crash
    /// interrupts a rename over an existing section, two records claim one name: the higher
    /// `seq` is the rename's result, the lower one the section it replaced.
    pub seq: u64,
    /// Written only when not `Persistent`, so older daemons (which ignore unknown keys)
    /// read every record; a record without it is persistent.
    pub lifetime: Lifetime,
    /// Set for a section over an existing file: its store file is then an empty
    /// placeholder that carries this record. Written only when set.
    pub backing: Option<FileBacking>,
    /// The per-user namespace (`Local`) the name is in: `Some(uid)`; `None` is the global
    /// one (the root). Written only when set.
    pub namespace: Option<u32>,
}

impl Record {
    pub fn encode(&self) -> String {
        let t = self
            .created_at
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let mut text = format!(
            "{RECORD_MAGIC}\nname={}\nuid={}\ngid={}\nmode={:o}\ncreator_pid={}\n\
             created_at={}.{:09}\ncommit={}\nseq={}\n",
            name::escape(&self.name),
            self.uid,
            self.gid,
            self.mode,
            self.creator_pid,
            t.as_secs(),
            t.subsec_nanos(),
            self.commit.as_str(),
            self.seq
        );
        if self.lifetime != Lifetime::Persistent {
            text.push_str(&format!("lifetime={}\n", self.lifetime.as_str()));
        }
        if let Some(uid) = self.namespace {
            text.push_str(&format!("ns=uid:{uid}\n"));
        }
        if let Some(b) = &self.backing {
            let access = if b.writable { "rw" } else { "ro" };
            text.push_str(&format!(
                "backing=file:{}\nbacking_access={access}\n",
                name::escape(b.path.as_os_str())
            ));
        }
        text
    }

    /// Parses a record; `Err` says what is wrong with it. Unknown keys are ignored so that
    /// a newer daemon's records still load.
    pub fn decode(bytes: &[u8]) -> std::result::Result<Record, String> {
        let text = std::str::from_utf8(bytes).map_err(|_| "record is not UTF-8".to_string())?;
        let mut lines = text.lines();
        if lines.next() != Some(RECORD_MAGIC) {
            return Err("record has no sectionfs header".into());
        }
        let (mut name, mut uid, mut gid, mut mode, mut pid, mut created, mut commit, mut seq) =
            (None, None, None, None, None, None, None, None);
        let mut lifetime = Lifetime::Persistent;
        let (mut backing, mut access) = (None, None);
        let mut namespace = None;
        for line in lines {
            let Some((k, v)) = line.split_once('=') else {
                return Err(format!("record line without '=': {line:?}"));
            };
            let bad = || format!("bad value for {k}: {v:?}");
            match k {
                "name" => name = Some(name::unescape(v).ok_or_else(bad)?),
                "uid" => uid = Some(v.parse().map_err(|_| bad())?),
                "gid" => gid = Some(v.parse().map_err(|_| bad())?),
                "mode" => mode = Some(u32::from_str_radix(v, 8).map_err(|_| bad())? & 0o7777),
                "creator_pid" => pid = Some(v.parse().map_err(|_| bad())?),
                "created_at" => created = Some(parse_time(v).ok_or_else(bad)?),
                "commit" => commit = Some(Commit::parse(v).ok_or_else(bad)?),
                "seq" => seq = Some(v.parse().map_err(|_| bad())?),
                "lifetime" => lifetime = Lifetime::parse(v).ok_or_else(bad)?,
                "ns" => {
                    let uid = v.strip_prefix("uid:").and_then(|u| u.parse().ok());
                    namespace = Some(uid.ok_or_else(bad)?);
                }
                "backing" => {
                    let path = v
                        .strip_prefix("file:")
                        .and_then(name::unescape)
                        .map(PathBuf::from)
                        .filter(|p| p.is_absolute())
                        .ok_or_else(bad)?;
                    backing = Some(path);
                }
                "backing_access" => {
                    access = Some(match v {
                        "rw" => true,
                        "ro" => false,
                        _ => return Err(bad()),
                    })
                }
                _ => {}
            }
        }
        let missing = |k: &str| format!("record lacks {k}");
        let name = name.ok_or_else(|| missing("name"))?;
        name::validate(&name).map_err(|e| format!("record holds a bad name: {e}"))?;
        Ok(Record {
            name,
            uid: uid.ok_or_else(|| missing("uid"))?,
            gid: gid.ok_or_else(|| missing("gid"))?,
            mode: mode.ok_or_else(|| missing("mode"))?,
            creator_pid: pid.ok_or_else(|| missing("creator_pid"))?,
            created_at: created.ok_or_else(|| missing("created_at"))?,
            commit: commit.ok_or_else(|| missing("commit"))?,
            seq: seq.ok_or_else(|| missing("seq"))?,
            lifetime,
            backing: match (backing, access) {
                (Some(path), Some(writable)) => Some(FileBacking { path, writable }),
                (None, None) => None,
                _ => return Err("record has backing without backing_access, or the reverse".into()),
            },
            namespace,
        })
    }
}

fn parse_time(v: &str) -> Option<SystemTime> {
    let (s, n) = v.split_once('.')?;
    let (s, n): (u64, u32) = (s.parse().ok()?, n.parse().ok()?);
    if n >= 1_000_000_000 {
        return None;
    }
    UNIX_EPOCH.checked_add(Duration::new(s, n))
}

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
        let mut buf = vec![0u8; 4096];
        // SAFETY: the buffer is valid for its length; the name is NUL-terminated.
        let n = unsafe {
            libc::fgetxattr(
                file.as_raw_fd(),
                RECORD_XATTR.as_ptr().cast(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return Err(if e.raw_os_error() == Some(libc::ENODATA) {
                "backing file without a record".into()
            } else {
                format!("cannot read its record: {e}")
            });
        }
        buf.truncate(n as usize);
        Record::decode(&buf)
    }

    /// Creates a section's backing file with its record, atomically: the file appears in
    /// the store only once its record is on it. Returns its id and an open handle.
    pub fn create(&self, record: &Record) -> Result<(u64, File)> {
        // An unnamed file gets its record first, then a name: a crash leaves nothing behind.
        let unnamed = openat(&self.dir, ".", OFlag::O_TMPFILE | RW, PRIVATE);
        if let Ok(fd) = unnamed {
            let file = File::from(fd);
            set_record(&file, record)?;
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
        if let Err(e) = set_record(&file, record) {
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
        set_record(&self.open_file(id)?, record)
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

/// Grows `file` to `new_size` (never shrinks it). `Eager` allocates every new byte or
/// fails with ENOSPC leaving size and bytes as they were; `Lazy` only sets the size.
///
/// The size moves by fallocate mode 0 of the last byte, which only ever raises it: a
/// concurrent write past the end (passthrough writes never reach the daemon) can never be
/// cut off, as it could be by an ftruncate computed from a stale size.
pub fn grow(file: &File, old_size: u64, new_size: u64, commit: Commit) -> Result<()> {
    if new_size <= old_size {
        return Ok(());
    }
    let new = i64::try_from(new_size).map_err(|_| Error::TooBig)?;
    if commit == Commit::Eager {
        // Allocate before the size moves: a mode-0 fallocate that runs out of space may
        // leave the size half-raised (ext4 raises it extent by extent), this cannot.
        // tmpfs frees what a failed call took; blocks a disk store keeps past the end are
        // reused by the next growth and freed with the section.
        commit_range(file, old_size, new_size - old_size)?;
    }
    match fallocate(file, FallocateFlags::empty(), new - 1, 1) {
        Ok(()) => Ok(()),
        // SEC_RESERVE growth needs no storage: a store without fallocate, or one too full
        // for even the last page, still grows. The caller holds the section's lock; only a
        // passthrough write past the end can move the size meanwhile, so look again.
        Err(e)
            if commit == Commit::Lazy
                && matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP | libc::ENOSPC)) =>
        {
            if file.metadata()?.len() < new_size {
                file.set_len(new_size)?;
            }
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// Allocates storage for `[offset, offset + len)` without changing the size: the SEC_RESERVE
/// commit (VirtualAlloc MEM_COMMIT). Fails with ENOSPC when the store cannot hold it.
pub fn commit_range(file: &File, offset: u64, len: u64) -> Result<()> {
    if len == 0 {
        return Ok(());
    }
    let end = offset.checked_add(len).ok_or(Error::TooBig)?;
    let (off, end) = (
        i64::try_from(offset).map_err(|_| Error::TooBig)?,
        i64::try_from(end).map_err(|_| Error::TooBig)?,
    );
    Ok(fallocate(
        file,
        FallocateFlags::FALLOC_FL_KEEP_SIZE,
        off,
        end - off,
    )?)
}

fn fallocate(file: &File, mode: FallocateFlags, offset: i64, len: i64) -> io::Result<()> {
    loop {
        match nix::fcntl::fallocate(file, mode, offset, len) {
            Ok(()) => return Ok(()),
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

fn set_record(file: &File, record: &Record) -> Result<()> {
    let text = record.encode();
    // SAFETY: valid fd, NUL-terminated name, buffer valid for its length.
    let rc = unsafe {
        libc::fsetxattr(
            file.as_raw_fd(),
            RECORD_XATTR.as_ptr().cast(),
            text.as_ptr().cast(),
            text.len(),
            0,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error().into());
    }
    Ok(())
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
    // SAFETY: valid fd, NUL-terminated name, one-byte buffer.
    let rc = unsafe {
        libc::fsetxattr(
            file.as_raw_fd(),
            RECORD_XATTR.as_ptr().cast(),
            b"x".as_ptr().cast(),
            1,
            0,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
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
    use super::*;

    fn record(name: &str, seq: u64) -> Record {
        Record {
            name: name.into(),
            uid: 1000,
            gid: 100,
            mode: 0o640,
            creator_pid: 42,
            created_at: UNIX_EPOCH + Duration::new(1_700_000_000, 5),
            commit: Commit::Lazy,
            seq,
            lifetime: Lifetime::Persistent,
            backing: None,
            namespace: None,
        }
    }

    #[test]
    fn record_round_trips() {
        let r = record("we\nird name\x01 ü", 7);
        assert_eq!(Record::decode(r.encode().as_bytes()), Ok(r));
        // A persistent record reads as it did before lifetimes existed.
        assert!(!record("p", 1).encode().contains("lifetime"));
        let h = Record {
            lifetime: Lifetime::Handles,
            ..record("h", 2)
        };
        assert!(h.encode().contains("lifetime=handles\n"));
        assert_eq!(Record::decode(h.encode().as_bytes()), Ok(h));
        let f = Record {
            backing: Some(FileBacking {
                path: "/srv/data\nfile".into(),
                writable: false,
            }),
            ..record("f", 3)
        };
        let text = f.encode();
        assert!(text.contains("backing=file:/srv/data\\nfile\nbacking_access=ro\n"));
        assert_eq!(Record::decode(text.as_bytes()), Ok(f));
        let local = Record {
            namespace: Some(1000),
            ..record("l", 4)
        };
        assert!(local.encode().contains("ns=uid:1000\n"));
        assert_eq!(Record::decode(local.encode().as_bytes()), Ok(local));
        let relative = text.replace("file:/srv", "file:srv");
        assert!(Record::decode(relative.as_bytes()).is_err());
    }

    #[test]
    fn record_refuses_damage() {
        let good = record("x", 1).encode();
        assert!(Record::decode(&good.as_bytes()[..good.len() / 2]).is_err());
        assert!(Record::decode(b"garbage").is_err());
        assert!(Record::decode(b"\xff\xfe").is_err());
        assert!(Record::decode(good.replace("mode=640", "mode=9z").as_bytes()).is_err());
        assert!(Record::decode(good.replace("name=x", "name=a.meta").as_bytes()).is_err());
        // Unknown keys are fine.
        assert!(Record::decode(format!("{good}future=1\n").as_bytes()).is_ok());
    }

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
        let rec = record("n", 3).encode();
        let c = CString::new(copy.as_os_str().as_bytes()).unwrap();
        // SAFETY: NUL-terminated path and name, buffer valid for its length.
        let rc = unsafe {
            libc::setxattr(
                c.as_ptr(),
                RECORD_XATTR.as_ptr().cast(),
                rec.as_ptr().cast(),
                rec.len(),
                0,
            )
        };
        assert_eq!(rc, 0);
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

    #[test]
    fn grow_never_shrinks() {
        let tmp = tempfile::tempdir().unwrap();
        let f = File::create(tmp.path().join("f")).unwrap();
        grow(&f, 0, 8192, Commit::Eager).unwrap();
        assert_eq!(f.metadata().unwrap().len(), 8192);
        grow(&f, 8192, 100, Commit::Lazy).unwrap();
        assert_eq!(f.metadata().unwrap().len(), 8192);
        grow(&f, 0, 4096, Commit::Lazy).unwrap();
        assert_eq!(
            f.metadata().unwrap().len(),
            8192,
            "a stale old size cannot shrink it"
        );
        grow(&f, 8192, 1 << 20, Commit::Lazy).unwrap();
        assert_eq!(f.metadata().unwrap().len(), 1 << 20);
    }

    #[test]
    fn eager_growth_allocates_and_lazy_growth_does_not() {
        use std::os::unix::fs::MetadataExt;
        let tmp = tempfile::tempdir().unwrap();
        let f = File::create(tmp.path().join("f")).unwrap();
        let allocated = |f: &File| f.metadata().unwrap().blocks() * 512;
        grow(&f, 0, 1 << 20, Commit::Eager).unwrap();
        assert!(allocated(&f) >= 1 << 20);
        grow(&f, 1 << 20, 64 << 20, Commit::Lazy).unwrap();
        assert_eq!(f.metadata().unwrap().len(), 64 << 20);
        assert!(allocated(&f) < 2 << 20, "lazy growth stays a hole");
        commit_range(&f, 1 << 20, 1 << 20).unwrap();
        assert!(allocated(&f) >= 2 << 20);
        assert_eq!(
            f.metadata().unwrap().len(),
            64 << 20,
            "commit keeps the size"
        );
    }
}
