//! The namespace of sections: names, inode numbers, handles, creation status, growth.
//! Plain Rust over a [`Store`]; the FUSE adapter (`fuse.rs`) only translates to it, and the
//! unit tests below drive it without a mount.
//!
//! Inode numbers are `ino.rs`'s: a section's is its store id (stable across restarts).

use crate::creds::{self, Identity};
use crate::error::{Error, Result};
use crate::ino::Ino;
use crate::meta::{Facts, IoMode, Status};
use crate::name;
use crate::namespace::{self, Ns};
use crate::quota::{self, Quota};
use crate::store::{self, Commit, FileBacking, Lifetime, Record, Store};
use crate::views::{Dev, ViewFinder};
use dashmap::DashMap;
use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long a shrink waits for other handles to go before it answers EBUSY. close(2)
/// returns before the kernel's RELEASE reaches the daemon, so a handle just closed (a
/// SQLite process that lost the race to recover a `-shm` and closed it) is still counted
/// for a moment; this covers that moment, not a holder that keeps its handle.
const SHRINK_WAIT: Duration = Duration::from_millis(300);

/// An `attach` step that has nothing to attach (the cached data mode, unit tests).
pub fn no_attach(_ino: u64, _file: &File) -> Result<()> {
    Ok(())
}

/// Who is asking: the kernel's view of the calling process.
#[derive(Clone, Copy, Debug)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
    /// The calling thread's id, as the kernel reports it.
    pub pid: u32,
}

impl Caller {
    /// The calling process (thread group): what creation status is kept per.
    pub fn process(&self) -> u32 {
        thread_group(self.pid)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Directory,
    File,
    /// `Global` and `Local` only.
    Symlink,
}

/// Attributes of an inode, in the model's terms.
#[derive(Clone, Copy, Debug)]
pub struct Attr {
    pub ino: u64,
    pub kind: Kind,
    pub size: u64,
    pub blocks: u64,
    pub atime: SystemTime,
    pub mtime: SystemTime,
    pub ctime: SystemTime,
    pub perm: u16,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
}

/// What an open or create hands back.
#[derive(Debug)]
pub struct Opened {
    pub fh: u64,
    pub ino: u64,
    /// The section's backing file, shared by all its handles (for passthrough and I/O).
    pub file: Arc<File>,
    /// What this open did: made the section, or found it there.
    pub status: Status,
}

/// One open file handle.
enum Handle {
    Section {
        ino: u64,
        pid: u32,
        file: Arc<File>,
    },
    /// The sidecar text as it was when this handle was opened.
    Sidecar(Arc<[u8]>),
    /// What a directory held at opendir: offsets index into it.
    Dir(Arc<Listing>),
}

/// A directory's entries as they were at opendir.
enum Listing {
    /// The section ids of one namespace, in order.
    Sections(Ns, Vec<u64>),
    /// The user directories in `Sessions`.
    Sessions(Vec<u32>),
}

/// Changes a setattr may ask for.
#[derive(Clone, Copy, Debug, Default)]
pub struct AttrChange {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    /// `None` leaves a time alone; `Some(None)` means "now".
    pub atime: Option<Option<SystemTime>>,
    pub mtime: Option<Option<SystemTime>>,
}

struct Section {
    id: u64,
    /// Fixed at creation.
    commit: Commit,
    state: Mutex<SectionState>,
    /// Signalled (with `state`) when a handle is released: a shrink waits on it.
    released: Condvar,
}

struct SectionState {
    record: Record,
    /// False once unlinked (or replaced by a rename): the name is gone, handles live on.
    linked: bool,
    /// Entries the kernel holds (lookup/create replies minus forgets).
    lookups: u64,
    /// The backing file, open while any handle is; no fd is held for an idle section.
    file: Option<Arc<File>>,
    handles: u32,
    /// The most recent open's answer, by anyone.
    last_status: Status,
    /// Per process (thread group) holding handles: its most recent answer and how many
    /// handles it holds. Entries go when their last handle is released.
    by_process: HashMap<u32, (Status, u32)>,
    /// The size counted against `record.uid` under `-o user_quota` (always 0 without one):
    /// the size last seen while the section holds storage, 0 once unlinked and closed.
    counted: u64,
}

/// Mount-wide choices the model needs.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// Commit mode of new sections.
    pub commit: Commit,
    /// Uid and gid of the root directory (the mounting user).
    pub owner: (u32, u32),
    /// `-o user_quota`: the most bytes of sections one uid may own.
    pub user_quota: Option<u64>,
    /// `-o lifetime`: the lifetime of new sections.
    pub lifetime: Lifetime,
}

/// Told (parent inode, name) when a name goes away without the kernel asking: a
/// `lifetime=handles` section whose last handle closed. The kernel still caches the entry.
pub type VanishHook = Box<dyn Fn(u64, &OsStr) + Send + Sync>;

/// Told a section's id when what `attach` made for it (see [`Sections::create_in`]) may
/// go: the section has no handle, and its name is gone or the kernel forgot its inode, so
/// the next open (if any) comes through a new LOOKUP and attaches anew. It may be told
/// more than once. Called under the section's lock: it must not call into the model.
pub type DetachHook = Box<dyn Fn(u64) + Send + Sync>;

pub struct Sections {
    store: Store,
    options: Options,
    quota: Quota,
    passthrough: AtomicBool,
    /// Name -> id. Lock order: `names` before any section's `state`.
    names: Mutex<HashMap<OsString, u64>>,
    inodes: DashMap<u64, Arc<Section>>,
    handles: DashMap<u64, Handle>,
    next_fh: AtomicU64,
    seq: AtomicU64,
    mounted_at: SystemTime,
    /// Modification times of the root and of `Sessions/UID` (by inode) since a name in
    /// them was made, removed or renamed; a directory not in it shows `mounted_at`.
    dir_times: Mutex<HashMap<u64, SystemTime>>,
    /// Finds views that outlived their handles (passthrough mode).
    views: ViewFinder,
    /// Shrinks now waiting for releases: at most one, so that busy shrinks (which any user
    /// can repeat) never hold more than one of the workers that serve those releases.
    shrink_waiters: AtomicU32,
    on_vanish: std::sync::OnceLock<VanishHook>,
    on_detach: std::sync::OnceLock<DetachHook>,
    /// The user namespaces (`Sessions/UID`) that exist: uid -> the gid shown as the
    /// directory's group. Made on the user's first use, and for every uid with sections.
    user_dirs: Mutex<HashMap<u32, u32>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a lock would be a bug, but it must not wedge the daemon.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Sections {
    /// Loads every section from the store.
    pub fn load(store: Store, options: Options) -> std::io::Result<Sections> {
        let scan = store.scan()?;
        let max_seq = scan
            .sections
            .iter()
            .map(|f| f.record.seq)
            .max()
            .unwrap_or(0);
        let mut names = HashMap::with_capacity(scan.sections.len());
        let inodes = DashMap::with_capacity(scan.sections.len());
        let quota = Quota::new(options.user_quota);
        let mut user_dirs = HashMap::new();
        for f in scan.sections {
            if f.record.lifetime == Lifetime::Handles {
                // No handle survives a restart: the section went with the daemon, as a
                // Windows section goes with a reboot.
                log::info!(
                    "store: {:?} had lifetime=handles: removing it",
                    f.record.name
                );
                if let Err(e) = store.remove(f.id) {
                    log::warn!("store: cannot remove {:?}: {e}", f.record.name);
                }
                continue;
            }
            // A section over a file reopens it with its owner's rights as they are now:
            // the user database's groups for the recorded uid, not the recorded gid (the
            // section's group, which its owner may set to a group they have since left).
            // The path is walked as at creation (`resolve`). A file gone or out of reach
            // is left aside like a damaged entry, its record kept.
            let mut over = None;
            if let Some(b) = &f.record.backing {
                let owner = Identity::of_user(f.record.uid);
                match creds::open_as(&owner, &b.path) {
                    Ok((file, writable)) if writable || !b.writable => over = Some(file),
                    Ok(_) => {
                        log::warn!(
                            "store: leaving {:?} aside: its owner may no longer write {}",
                            f.record.name,
                            b.path.display()
                        );
                        continue;
                    }
                    Err(e) => {
                        log::warn!(
                            "store: leaving {:?} aside: cannot reopen {}: {e}",
                            f.record.name,
                            b.path.display()
                        );
                        continue;
                    }
                }
            }
            if namespace::is_reserved(f.record.namespace, &f.record.name) {
                log::warn!(
                    "store: leaving {:?} aside: that name is reserved for a namespace \
                     (rename it with an older sectionfs)",
                    f.record.name
                );
                continue;
            }
            if let Some(uid) = f.record.namespace {
                user_dirs.entry(uid).or_insert(f.record.gid);
            }
            names.insert(
                namespace::key(f.record.namespace, &f.record.name).into_owned(),
                f.id,
            );
            let mut state = SectionState::new(f.record, Status::Created, 0);
            state.file = over.map(Arc::new);
            if quota.enabled() && state.record.backing.is_none() {
                let size = store.stat(f.id).map(|s| s.st_size as u64).unwrap_or(0);
                quota.recount(state.record.uid, &mut state.counted, quota::footprint(size));
            }
            let section = Section {
                id: f.id,
                commit: state.record.commit,
                state: Mutex::new(state),
                released: Condvar::new(),
            };
            inodes.insert(f.id, Arc::new(section));
        }
        log::info!(
            "store {}: {} sections, {} entries left aside",
            store.root().display(),
            names.len(),
            scan.damaged.len()
        );
        Ok(Sections {
            store,
            options,
            quota,
            passthrough: AtomicBool::new(false),
            names: Mutex::new(names),
            inodes,
            handles: DashMap::new(),
            next_fh: AtomicU64::new(1),
            seq: AtomicU64::new(max_seq + 1),
            mounted_at: SystemTime::now(),
            dir_times: Mutex::new(HashMap::new()),
            views: ViewFinder::default(),
            shrink_waiters: AtomicU32::new(0),
            on_vanish: std::sync::OnceLock::new(),
            on_detach: std::sync::OnceLock::new(),
            user_dirs: Mutex::new(user_dirs),
        })
    }

    /// Sets the hook told about names that go away by themselves (once; later calls are
    /// ignored).
    pub fn on_vanish(&self, hook: VanishHook) {
        let _ = self.on_vanish.set(hook);
    }

    /// Sets the hook told when a section's attachment may go (once; later calls are
    /// ignored).
    pub fn on_detach(&self, hook: DetachHook) {
        let _ = self.on_detach.set(hook);
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn set_io(&self, io: IoMode) {
        self.passthrough
            .store(io == IoMode::Passthrough, Ordering::Relaxed);
    }

    /// The mount's device, as `/proc/PID/maps` shows views of its sections.
    pub fn set_mount_dev(&self, dev: Dev) {
        self.views.set_dev(dev);
    }

    pub fn io(&self) -> IoMode {
        if self.passthrough.load(Ordering::Relaxed) {
            IoMode::Passthrough
        } else {
            IoMode::Cached
        }
    }

    pub fn len(&self) -> usize {
        lock(&self.names).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn section(&self, ino: u64) -> Result<Arc<Section>> {
        self.inodes
            .get(&ino)
            .map(|s| Arc::clone(&s))
            .ok_or(Error::NotFound)
    }

    fn by_name(&self, ns: Ns, name: &OsStr) -> Result<Arc<Section>> {
        let id = *lock(&self.names)
            .get(&*namespace::key(ns, name))
            .ok_or(Error::NotFound)?;
        self.section(id)
    }

    /// Looks a name of the global namespace (the root) up.
    pub fn lookup(&self, caller: Caller, name: &OsStr) -> Result<Attr> {
        self.lookup_in(caller, None, name)
    }

    /// Looks a name up; a section's entry counts as one kernel reference until forgotten.
    pub fn lookup_in(&self, caller: Caller, ns: Ns, name: &OsStr) -> Result<Attr> {
        if namespace::is_reserved(ns, name) {
            return self.namespace_attr(caller, self.reserved_ino(name));
        }
        if let Some(stem) = name::sidecar_of(name) {
            // The sidecar of a name too long to be a section is too long itself.
            if stem.len() > name::MAX_NAME_LEN {
                return Err(Error::NameTooLong);
            }
            let section = self.by_name(ns, stem)?;
            return self.sidecar_attr(&section, caller).map_err(|e| match e {
                Error::Stale => Error::NotFound,
                e => e,
            });
        }
        if name.len() > name::MAX_NAME_LEN {
            return Err(Error::NameTooLong);
        }
        let section = self.by_name(ns, name)?;
        // A lost section's name is dropped: to a lookup it is simply absent.
        let attr = self.section_attr(&section).map_err(|e| match e {
            Error::Stale => Error::NotFound,
            e => e,
        })?;
        let mut st = lock(&section.state);
        if !st.linked {
            return Err(Error::NotFound);
        }
        st.lookups += 1;
        Ok(attr)
    }

    /// The name an inode goes by (a sidecar's is `NAME.meta`), for log lines; `None` for
    /// the root and for inodes the model no longer knows.
    pub fn name_of(&self, ino: u64) -> Option<OsString> {
        let (id, sidecar) = match Ino::decode(ino)? {
            Ino::Section(id) => (id, false),
            Ino::Sidecar(id) => (id, true),
            _ => return None,
        };
        let section = self.section(id).ok()?;
        let name = lock(&section.state).record.name.clone();
        Some(if sidecar {
            name::sidecar_name(&name)
        } else {
            name
        })
    }

    /// The kernel dropped `n` references to an inode.
    pub fn forget(&self, ino: u64, n: u64) {
        let Some(Ino::Section(id)) = Ino::decode(ino) else {
            return;
        };
        if let Ok(section) = self.section(id) {
            let mut st = lock(&section.state);
            st.lookups = st.lookups.saturating_sub(n);
            self.drop_if_gone(&section, &st);
        }
    }

    /// Forgets an unlinked section once the kernel holds nothing of it, and tells the
    /// detach hook once no open can reach the section's attachment (see [`DetachHook`]).
    /// Called at every change of `handles`, `linked` or `lookups` toward zero.
    fn drop_if_gone(&self, section: &Section, st: &SectionState) {
        if st.handles == 0
            && (!st.linked || st.lookups == 0)
            && let Some(hook) = self.on_detach.get()
        {
            hook(section.id);
        }
        if !st.linked && st.lookups == 0 && st.handles == 0 {
            self.inodes.remove(&section.id);
        }
    }

    pub fn attr(&self, caller: Caller, ino: u64) -> Result<Attr> {
        match Ino::decode(ino).ok_or(Error::NotFound)? {
            Ino::Root => Ok(self.root_attr()),
            Ino::Section(id) => self.section_attr(&*self.section(id)?),
            Ino::Sidecar(id) => self.sidecar_attr(&*self.section(id)?, caller),
            ns => self.namespace_attr(caller, ns),
        }
    }

    /// When a name in directory `ino` last changed (mount time if never).
    fn dir_time(&self, ino: u64) -> SystemTime {
        *lock(&self.dir_times).get(&ino).unwrap_or(&self.mounted_at)
    }

    /// A name in namespace `ns` was made, removed or renamed: its directory's mtime and
    /// ctime move, as on /dev/shm (watchers compare a directory's mtime). The kernel
    /// refreshes the directory's attributes itself after its own create, unlink and rename
    /// (`fuse_dir_changed`), and after a `FUSE_NOTIFY_INVAL_ENTRY`.
    fn dir_changed(&self, ns: Ns) {
        lock(&self.dir_times).insert(Ino::dir_of(ns).number(), SystemTime::now());
    }

    fn root_attr(&self) -> Attr {
        let t = self.dir_time(Ino::Root.number());
        Attr {
            ino: Ino::Root.number(),
            kind: Kind::Directory,
            size: 0,
            blocks: 0,
            atime: self.mounted_at,
            mtime: t,
            ctime: t,
            // Like /dev/shm: anyone may create, only owners may remove (sticky).
            perm: 0o1777,
            nlink: 2,
            uid: self.options.owner.0,
            gid: self.options.owner.1,
        }
    }

    /// Stats the backing file: through the open file if there is one (no path walk), by
    /// name otherwise.
    fn stat(&self, section: &Section) -> Result<libc::stat> {
        let (linked, file) = {
            let st = lock(&section.state);
            (st.linked, st.file.clone())
        };
        match file {
            Some(file) => fstat(&file),
            None if linked => {
                (self.store.stat(section.id)).map_err(|e| self.gone(section.id, e.into()))
            }
            None => Err(Error::NotFound),
        }
    }

    fn section_attr(&self, section: &Section) -> Result<Attr> {
        let stat = self.stat(section)?;
        let mut st = lock(&section.state);
        // Catches growth the daemon did not see happen (passthrough writes past the end).
        self.account(&mut st, stat.st_size as u64);
        Ok(Attr {
            ino: section.id,
            kind: Kind::File,
            size: stat.st_size as u64,
            blocks: stat.st_blocks as u64,
            atime: time(stat.st_atime, stat.st_atime_nsec),
            mtime: time(stat.st_mtime, stat.st_mtime_nsec),
            ctime: time(stat.st_ctime, stat.st_ctime_nsec),
            perm: st.record.mode as u16,
            nlink: u32::from(st.linked),
            uid: st.record.uid,
            gid: st.record.gid,
        })
    }

    fn sidecar_attr(&self, section: &Section, caller: Caller) -> Result<Attr> {
        let stat = self.stat(section)?;
        let (readable, record_mode, uid, gid) = {
            let st = lock(&section.state);
            let r = &st.record;
            (may_read(r.mode, r.uid, r.gid, caller), r.mode, r.uid, r.gid)
        };
        // The text's length follows the status and the handle count: only a reader may
        // learn it. The times are the section's own, which `stat` of it shows anyway.
        let size = if readable {
            self.facts_of(section, caller)?.render().len() as u64
        } else {
            0
        };
        Ok(Attr {
            ino: Ino::Sidecar(section.id).number(),
            kind: Kind::File,
            size,
            blocks: 0,
            atime: time(stat.st_atime, stat.st_atime_nsec),
            mtime: time(stat.st_mtime, stat.st_mtime_nsec),
            ctime: time(stat.st_ctime, stat.st_ctime_nsec),
            // Readable by exactly those who may read the section; never writable.
            perm: (record_mode & 0o444) as u16,
            nlink: 1,
            uid,
            gid,
        })
    }

    /// What the sidecar says about the section `ino` to `caller`.
    pub fn facts(&self, caller: Caller, ino: u64) -> Result<Facts> {
        let id = section_id(ino, Error::NoAttr)?;
        self.facts_of(&*self.section(id)?, caller)
    }

    /// The names of the section's `user.sectionfs.*` attributes, NUL-separated: none to
    /// a caller who may not read the section (the kernel does not check listxattr, and
    /// which names exist tells whether a section is over a file or goes with its handles).
    pub fn xattr_names(&self, caller: Caller, ino: u64) -> Result<Vec<u8>> {
        let Some(Ino::Section(id)) = Ino::decode(ino) else {
            return Ok(Vec::new());
        };
        let section = self.section(id)?;
        let readable = {
            let st = lock(&section.state);
            let r = &st.record;
            may_read(r.mode, r.uid, r.gid, caller)
        };
        if !readable {
            return Ok(Vec::new());
        }
        Ok(self.facts_of(&section, caller)?.xattr_names())
    }

    fn facts_of(&self, section: &Section, caller: Caller) -> Result<Facts> {
        let size = self.stat(section)?.st_size as u64;
        let process = caller.process();
        let st = lock(&section.state);
        let status = match st.by_process.get(&process) {
            // A reader holding its own handle sees its own most recent open.
            Some(&(status, _)) => status,
            None => st.last_status,
        };
        Ok(Facts {
            name: st.record.name.clone(),
            size,
            status,
            creator_pid: st.record.creator_pid,
            created_at: st.record.created_at,
            open_handles: st.handles,
            io: self.io(),
            commit: section.commit,
            lifetime: st.record.lifetime,
            backing: st.record.backing.as_ref().map(|b| b.path.clone()),
        })
    }

    /// Open-or-create of `name` in the global namespace.
    pub fn create(
        &self,
        caller: Caller,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
    ) -> Result<(Attr, Opened)> {
        self.create_in(caller, None, name, mode, umask, flags, no_attach)
            .map(|(attr, opened, ())| (attr, opened))
    }

    /// Open-or-create of `name` (the kernel's CREATE). Atomic with respect to every other
    /// create, open and unlink: exactly one caller gets `Status::Created`.
    ///
    /// `attach` is handed the section's inode and backing file before anything is
    /// published (the adapter registers the passthrough backing there). If it fails, the
    /// create leaves no trace: no name, no store file, no handle, no kernel reference.
    #[allow(clippy::too_many_arguments)]
    pub fn create_in<T>(
        &self,
        caller: Caller,
        ns: Ns,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        attach: impl FnOnce(u64, &File) -> Result<T>,
    ) -> Result<(Attr, Opened, T)> {
        name::validate(name)?;
        if namespace::is_reserved(ns, name) {
            return Err(Error::Exists);
        }
        let key = namespace::key(ns, name);
        // Read /proc before taking the namespace lock every create and unlink waits on.
        let pid = caller.process();
        let mut names = lock(&self.names);
        let mut lost = None;
        if let Some(&id) = names.get(&*key) {
            if flags & libc::O_EXCL != 0 {
                return Err(Error::Exists);
            }
            // The namespace lock is held through the open: an unlink in between would
            // otherwise turn this open-or-create into ENOENT.
            let section = self.section(id)?;
            // No wait for releases in flight here: the namespace lock is held.
            let st = lock(&section.state);
            match self.file_to_open(pid, &section, st, flags, false) {
                Ok((st, file)) => {
                    let (opened, attached) = self.open_locked(pid, &section, st, file, attach)?;
                    drop(names);
                    lock(&section.state).lookups += 1;
                    return Ok((self.section_attr(&section)?, opened, attached));
                }
                // Its file was removed from the store: the name is made anew below.
                Err(e) if e.is_gone() => {
                    lost = self.drop_lost(&mut names, id).map(|l| (id, l));
                }
                Err(e) => return Err(e),
            }
        }
        let record = Record {
            name: name.to_os_string(),
            uid: caller.uid,
            gid: caller.gid,
            mode: mode & !umask & 0o7777,
            creator_pid: pid,
            created_at: SystemTime::now(),
            commit: self.options.commit,
            seq: self.seq.fetch_add(1, Ordering::Relaxed),
            lifetime: self.options.lifetime,
            backing: None,
            namespace: ns,
        };
        // Even an empty section costs its owner a page: the number of sections a user
        // can make is bounded under a quota.
        let mut counted = 0;
        self.quota
            .charge(caller.uid, &mut counted, quota::footprint(0))?;
        let made = self
            .store
            .create(&record)
            .and_then(|(id, file)| match attach(id, &file) {
                Ok(attached) => Ok((id, file, attached)),
                Err(e) => {
                    if let Err(e) = self.store.remove(id) {
                        crate::error::warn_limited(format_args!(
                            "store: cannot remove a half-made section {id}: {e}"
                        ));
                    }
                    Err(e)
                }
            });
        let (id, file, attached) = match made {
            Ok(m) => m,
            Err(e) => {
                self.quota.recount(caller.uid, &mut counted, 0);
                return Err(e);
            }
        };
        let file = Arc::new(file);
        let mut state = SectionState::new(record, Status::Created, 1);
        state.file = Some(Arc::clone(&file));
        state.handles = 1;
        state.counted = counted;
        state.by_process.insert(pid, (Status::Created, 1));
        let section = Arc::new(Section {
            id,
            commit: self.options.commit,
            state: Mutex::new(state),
            released: Condvar::new(),
        });
        self.inodes.insert(id, Arc::clone(&section));
        names.insert(key.into_owned(), id);
        self.dir_changed(ns);
        drop(names);
        if let Some((lost_id, l)) = lost {
            // The kernel asked to create: it holds no entry of the old section to drop.
            self.forget_lost(lost_id, Some(l), false);
        }
        let fh = self.add_handle(Handle::Section {
            ino: id,
            pid,
            file: Arc::clone(&file),
        });
        let attr = self.section_attr(&section)?;
        Ok((
            attr,
            Opened {
                fh,
                ino: id,
                file,
                status: Status::Created,
            },
            attached,
        ))
    }

    /// `ln -s /path/to/file NAME`: a section over an existing regular file, whose bytes
    /// are that file's. The file is opened with the caller's own rights, read-write if
    /// they may write it, else read-only (and the section is then read-only for good). A
    /// relative target is a link among sections, which sectionfs does not offer.
    /// Private to its creator (0600, or 0400 read-only) until chmod.
    pub fn create_over_file(
        &self,
        caller: Caller,
        ns: Ns,
        name: &OsStr,
        target: &Path,
    ) -> Result<Attr> {
        name::validate(name)?;
        if !target.is_absolute() {
            return Err(Error::NotSupported);
        }
        if namespace::is_reserved(ns, name) {
            return Err(Error::Exists);
        }
        let key = namespace::key(ns, name);
        let who = Identity::of_caller(caller.uid, caller.gid, caller.pid);
        let (file, writable) = creds::open_as(&who, target).map_err(Error::as_caller)?;
        let pid = caller.process();
        let mut names = lock(&self.names);
        if names.contains_key(&*key) {
            return Err(Error::Exists);
        }
        let record = Record {
            name: name.to_os_string(),
            uid: caller.uid,
            gid: caller.gid,
            mode: if writable { 0o600 } else { 0o400 },
            creator_pid: pid,
            created_at: SystemTime::now(),
            commit: self.options.commit,
            seq: self.seq.fetch_add(1, Ordering::Relaxed),
            lifetime: self.options.lifetime,
            backing: Some(FileBacking {
                path: target.to_path_buf(),
                writable,
            }),
            namespace: ns,
        };
        // The store file is only the record's holder: the section's bytes are `file`'s.
        let (id, _placeholder) = self.store.create(&record)?;
        // The kernel holds the entry this creation answers with.
        let mut state = SectionState::new(record, Status::Created, 1);
        state.file = Some(Arc::new(file));
        let section = Arc::new(Section {
            id,
            commit: self.options.commit,
            state: Mutex::new(state),
            released: Condvar::new(),
        });
        self.inodes.insert(id, Arc::clone(&section));
        names.insert(key.into_owned(), id);
        self.dir_changed(ns);
        drop(names);
        log::debug!(
            "section {name:?} over {} ({})",
            target.display(),
            if writable { "read-write" } else { "read-only" }
        );
        self.section_attr(&section)
    }

    /// Opens an existing section (the kernel's OPEN).
    pub fn open(&self, caller: Caller, ino: u64, flags: i32) -> Result<Opened> {
        self.open_with(caller, ino, flags, no_attach)
            .map(|(opened, ())| opened)
    }

    /// Opens an existing section; `attach` as for [`Sections::create_in`]: if it fails,
    /// the open leaves no trace.
    pub fn open_with<T>(
        &self,
        caller: Caller,
        ino: u64,
        flags: i32,
        attach: impl FnOnce(u64, &File) -> Result<T>,
    ) -> Result<(Opened, T)> {
        let id = section_id(ino, Error::BadHandle)?;
        self.open_section(caller.process(), &*self.section(id)?, flags, true, attach)
            .map_err(|e| self.gone(id, e))
    }

    /// The section's backing file: the one its handles share, else opened for this call.
    /// An unlinked section with no handle has nothing left to open.
    fn file_of(&self, section: &Section, st: &SectionState) -> Result<Arc<File>> {
        match &st.file {
            Some(f) => Ok(Arc::clone(f)),
            None if st.linked => Ok(Arc::new(self.store.open_file(section.id)?)),
            None => Err(Error::NotFound),
        }
    }

    /// Opens `section` for process `pid` (a thread group id). `attach` runs under the
    /// section's lock, after every check and before anything is counted. `O_TRUNC` on a
    /// non-empty section is a shrink: see [`Sections::shrink_guard`]; `wait` says whether
    /// it may wait for handles being released.
    fn open_section<T>(
        &self,
        pid: u32,
        section: &Section,
        flags: i32,
        wait: bool,
        attach: impl FnOnce(u64, &File) -> Result<T>,
    ) -> Result<(Opened, T)> {
        let st = lock(&section.state);
        let (st, file) = self.file_to_open(pid, section, st, flags, wait)?;
        self.open_locked(pid, section, st, file, attach)
    }

    /// The checks of an open, its `O_TRUNC`, and the file it will share: the section's
    /// backing file. Takes and gives back the state lock (a shrink may wait without it).
    fn file_to_open<'a>(
        &self,
        pid: u32,
        section: &'a Section,
        mut st: MutexGuard<'a, SectionState>,
        flags: i32,
        wait: bool,
    ) -> Result<(MutexGuard<'a, SectionState>, Arc<File>)> {
        if st.read_only()
            && (flags & libc::O_ACCMODE != libc::O_RDONLY || flags & libc::O_TRUNC != 0)
        {
            return Err(Error::ReadOnly);
        }
        let file = self.file_of(section, &st)?;
        // The kernel asked for FUSE_ATOMIC_O_TRUNC: the truncation is this OPEN's job.
        if flags & libc::O_TRUNC != 0 && fstat(&file)?.st_size > 0 {
            st = self.shrink_guard(section, st, 0, pid, wait)?;
            file.set_len(0)?;
            self.account(&mut st, 0);
        }
        Ok((st, file))
    }

    /// An open that passed its checks: attach, then count the handle.
    fn open_locked<T>(
        &self,
        pid: u32,
        section: &Section,
        mut st: MutexGuard<'_, SectionState>,
        file: Arc<File>,
        attach: impl FnOnce(u64, &File) -> Result<T>,
    ) -> Result<(Opened, T)> {
        let attached = attach(section.id, &file)?;
        st.file = Some(Arc::clone(&file));
        st.handles += 1;
        st.last_status = Status::AlreadyExists;
        let entry = st
            .by_process
            .entry(pid)
            .or_insert((Status::AlreadyExists, 0));
        *entry = (Status::AlreadyExists, entry.1 + 1);
        drop(st);
        let fh = self.add_handle(Handle::Section {
            ino: section.id,
            pid,
            file: Arc::clone(&file),
        });
        Ok((
            Opened {
                fh,
                ino: section.id,
                file,
                status: Status::AlreadyExists,
            },
            attached,
        ))
    }

    /// A section whose file was removed from the store behind the daemon's back (by hand,
    /// while mounted): its name is dropped as if unlinked, with one warning, so that the
    /// name can be made again. Takes the held namespace lock; returns the name dropped,
    /// for [`Sections::forget_lost`] once that lock is released.
    fn drop_lost(&self, names: &mut HashMap<OsString, u64>, id: u64) -> Option<(Ns, OsString)> {
        let section = self.section(id).ok()?;
        let (ns, name) = {
            let st = lock(&section.state);
            (st.record.namespace, st.record.name.clone())
        };
        let key = namespace::key(ns, &name);
        if names.get(&*key) != Some(&id) {
            return None;
        }
        names.remove(&*key);
        crate::error::warn_limited(format_args!(
            "store: the file of section {name:?} (id {id}) was removed from the store while \
             mounted: dropping its name"
        ));
        Some((ns, name))
    }

    /// The rest of [`Sections::drop_lost`], without the namespace lock: the section is
    /// unlinked, and the kernel told to forget its entry when `invalidate`.
    fn forget_lost(&self, id: u64, lost: Option<(Ns, OsString)>, invalidate: bool) {
        let Some((ns, name)) = lost else {
            return;
        };
        self.unlinked(id);
        if invalidate && let Some(hook) = self.on_vanish.get() {
            hook(Ino::dir_of(ns).number(), &name);
        }
    }

    /// A store error met on section `id`, as the caller sees it: a file gone from the
    /// store drops the section's name (see [`Sections::drop_lost`]) and is ESTALE, which
    /// the kernel retries with a fresh lookup. Call with no lock held.
    fn gone(&self, id: u64, e: Error) -> Error {
        if !e.is_gone() {
            return e;
        }
        let lost = self.drop_lost(&mut lock(&self.names), id);
        self.forget_lost(id, lost, true);
        Error::Stale
    }

    /// Opens a sidecar: a snapshot of its text, taken now, for this reader.
    pub fn open_sidecar(&self, caller: Caller, ino: u64, flags: i32) -> Result<u64> {
        if flags & libc::O_ACCMODE != libc::O_RDONLY || flags & libc::O_TRUNC != 0 {
            return Err(Error::ReadOnly);
        }
        let Some(Ino::Sidecar(id)) = Ino::decode(ino) else {
            return Err(Error::BadHandle);
        };
        let section = self.section(id)?;
        let text = self.facts_of(&section, caller)?.render();
        Ok(self.add_handle(Handle::Sidecar(text.into())))
    }

    fn add_handle(&self, h: Handle) -> u64 {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.handles.insert(fh, h);
        fh
    }

    /// Releases a file handle (section or sidecar).
    pub fn release(&self, fh: u64) -> Result<()> {
        let (_, handle) = self.handles.remove(&fh).ok_or(Error::BadHandle)?;
        let Handle::Section { ino, pid, .. } = handle else {
            return Ok(());
        };
        let section = self.section(ino)?;
        let mut st = lock(&section.state);
        st.handles = st.handles.saturating_sub(1);
        if let Some(entry) = st.by_process.get_mut(&pid) {
            entry.1 -= 1;
            if entry.1 == 0 {
                st.by_process.remove(&pid);
                // An idle section holds no table: 100,000 of them would cost ~8 MiB.
                if st.by_process.is_empty() {
                    st.by_process = HashMap::new();
                }
                log::debug!(
                    "section {ino}: process {pid} released its last handle; \
                     {} processes tracked",
                    st.by_process.len()
                );
            }
        }
        if st.handles == 0 {
            // The last chance to see growth the daemon did not serve (passthrough writes);
            // an unlinked section's storage goes now, and its count with it.
            let size = match &st.file {
                Some(f) if st.linked => fstat(f).map(|s| s.st_size as u64).unwrap_or(st.counted),
                _ => 0,
            };
            self.account(&mut st, size);
            // A section over a file keeps that file open while it has a name: it is
            // reopened only after a restart.
            if st.record.backing.is_none() {
                st.file = None;
            }
        }
        let vanish = st.handles == 0 && st.linked && st.record.lifetime == Lifetime::Handles;
        self.drop_if_gone(&section, &st);
        drop(st);
        section.released.notify_all();
        if vanish {
            self.vanish(ino);
        }
        Ok(())
    }

    /// The shrink rule: a section may be cut only while nothing but the caller could be
    /// using the bytes it would lose, so that no view ever faults because another process
    /// cut the section (Windows refuses `SetEndOfFile` on a mapped file, and allows it once
    /// no mapping is left). That is: no handle but the caller's `own` (0 or 1), waiting up
    /// to [`SHRINK_WAIT`] for handles being released, and, in passthrough mode, no view in
    /// another process (a passthrough view outlives its handles; a cached one holds its
    /// handle until munmap, so the count covers it). `pid` is the caller's process, whose
    /// own views are its own business. Returns the state lock, held from the check through
    /// the caller's truncate so that no handle can appear in between; `Error::Busy` else.
    fn shrink_guard<'a>(
        &self,
        section: &'a Section,
        mut st: MutexGuard<'a, SectionState>,
        own: u32,
        pid: u32,
        wait: bool,
    ) -> Result<MutexGuard<'a, SectionState>> {
        if st.handles > own {
            if !wait || self.shrink_waiters.fetch_add(1, Ordering::AcqRel) > 0 {
                if wait {
                    self.shrink_waiters.fetch_sub(1, Ordering::AcqRel);
                }
                return Err(Error::Busy);
            }
            let deadline = std::time::Instant::now() + SHRINK_WAIT;
            while st.handles > own {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                if left.is_zero() {
                    break;
                }
                st = match section.released.wait_timeout(st, left) {
                    Ok((st, _)) => st,
                    Err(p) => p.into_inner().0,
                };
            }
            self.shrink_waiters.fetch_sub(1, Ordering::AcqRel);
            if st.handles > own {
                return Err(Error::Busy);
            }
        }
        if self.io() == IoMode::Passthrough
            && self.views.mapped_elsewhere(section.id, pid) != Some(false)
        {
            return Err(Error::Busy);
        }
        Ok(st)
    }

    /// Removes the name of a `lifetime=handles` section that has no handle left. Views
    /// that still map it keep its bytes (the unlink path), which go with the last of them.
    fn vanish(&self, id: u64) {
        let mut names = lock(&self.names);
        let Ok(section) = self.section(id) else {
            return;
        };
        let (ns, name) = {
            // Checked again under the namespace lock: a create may have opened it since.
            let st = lock(&section.state);
            let still = st.handles == 0 && st.linked && st.record.lifetime == Lifetime::Handles;
            let key = namespace::key(st.record.namespace, &st.record.name);
            if !still || names.get(&*key) != Some(&id) {
                return;
            }
            (st.record.namespace, st.record.name.clone())
        };
        if let Err(e) = self.store.remove(id)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            crate::error::warn_limited(format_args!(
                "section {name:?}: its last handle closed, but cannot remove it: {e}"
            ));
            return;
        }
        names.remove(&*namespace::key(ns, &name));
        self.dir_changed(ns);
        drop(names);
        self.unlinked(id);
        log::debug!("section {name:?}: last handle closed, name gone (lifetime=handles)");
        if let Some(hook) = self.on_vanish.get() {
            hook(Ino::dir_of(ns).number(), &name);
        }
    }

    /// `user.sectionfs.lifetime`: the owner (or root) chooses whether the section's name
    /// goes with its last handle. Set to `handles` while no handle is open, it goes now.
    pub fn set_lifetime(&self, caller: Caller, ino: u64, value: &[u8]) -> Result<()> {
        let id = section_id(ino, Error::ReadOnly)?;
        let lifetime = std::str::from_utf8(value)
            .ok()
            .and_then(|v| Lifetime::parse(v.trim_end_matches(['\n', '\0'])))
            .ok_or(Error::InvalidArgument)?;
        let section = self.section(id)?;
        let mut st = lock(&section.state);
        if caller.uid != 0 && caller.uid != st.record.uid {
            return Err(Error::NotOwner);
        }
        if st.record.lifetime == lifetime {
            return Ok(());
        }
        let mut record = st.record.clone();
        record.lifetime = lifetime;
        if st.linked {
            self.store.write_record(section.id, &record)?;
        }
        st.record = record;
        let vanish = st.handles == 0 && st.linked && lifetime == Lifetime::Handles;
        drop(st);
        if vanish {
            self.vanish(id);
        }
        Ok(())
    }

    /// Reads section data (cached mode) or sidecar text.
    pub fn read(&self, fh: u64, offset: u64, size: u32) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; size as usize];
        let n = self.read_into(fh, offset, &mut buf)?;
        buf.truncate(n);
        Ok(buf)
    }

    /// Reads section data (cached mode) or sidecar text into `buf`, as much as fits;
    /// returns how much it read. The adapter passes a buffer it keeps per thread, so a
    /// read request allocates nothing (a fresh 1 MiB buffer costs 256 page faults).
    pub fn read_into(&self, fh: u64, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let handle = self.handles.get(&fh).ok_or(Error::BadHandle)?;
        match &*handle {
            Handle::Section { file, .. } => {
                let file = Arc::clone(file);
                drop(handle);
                let mut done = 0;
                while done < buf.len() {
                    match file.read_at(&mut buf[done..], offset + done as u64) {
                        Ok(0) => break,
                        Ok(n) => done += n,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                Ok(done)
            }
            Handle::Sidecar(text) => {
                let start = (offset as usize).min(text.len());
                let end = start.saturating_add(buf.len()).min(text.len());
                buf[..end - start].copy_from_slice(&text[start..end]);
                Ok(end - start)
            }
            Handle::Dir(_) => Err(Error::BadHandle),
        }
    }

    /// Writes section data (cached mode). A write past the end grows the section, and
    /// under eager commit allocates the growth first, so it fails whole with ENOSPC and
    /// leaves the size as it was. A write the store runs out of space for midway (lazy
    /// commit) is short, as on any Linux file: what was written stays, the count says how
    /// much.
    pub fn write(&self, fh: u64, offset: u64, data: &[u8]) -> Result<u32> {
        let (ino, file) = match self.handles.get(&fh).as_deref() {
            Some(Handle::Section { ino, file, .. }) => (*ino, Arc::clone(file)),
            Some(Handle::Sidecar(_)) => return Err(Error::ReadOnly),
            _ => return Err(Error::BadHandle),
        };
        let end = offset.checked_add(data.len() as u64).ok_or(Error::TooBig)?;
        let section = self.section(ino)?;
        let eager = section.commit == Commit::Eager;
        // With a quota, the state lock is held through a growing write, so that what is
        // counted and what is written agree when it ends.
        let mut growing = None;
        if (eager || self.quota.enabled()) && end > fstat(&file)?.st_size as u64 {
            // The state lock serializes this with every other growth of the section.
            let mut st = lock(&section.state);
            let size = fstat(&file)?.st_size as u64;
            if end > size {
                self.account(&mut st, size);
                self.charge(&mut st, end)?;
                if eager && let Err(e) = store::grow(&file, size, end, Commit::Eager) {
                    self.account(&mut st, size);
                    return Err(e);
                }
            }
            if self.quota.enabled() {
                growing = Some(st);
            }
        }
        let mut done = 0;
        while done < data.len() {
            match file.write_at(&data[done..], offset + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if done == 0 => {
                    if let Some(mut st) = growing {
                        let size = fstat(&file).map(|s| s.st_size as u64).unwrap_or(0);
                        self.account(&mut st, size);
                    }
                    return Err(e.into());
                }
                Err(_) => break,
            }
        }
        if let Some(mut st) = growing
            && let Ok(stat) = fstat(&file)
        {
            self.account(&mut st, stat.st_size as u64);
        }
        Ok(done as u32)
    }

    /// fallocate mode 0 or KEEP_SIZE: allocates storage for `[offset, offset + len)` in any
    /// commit mode (the SEC_RESERVE commit, VirtualAlloc MEM_COMMIT), then, unless
    /// `keep_size`, grows the section to cover it. All or nothing: ENOSPC changes no size.
    pub fn allocate(&self, ino: u64, offset: u64, len: u64, keep_size: bool) -> Result<()> {
        self.allocate_checked(ino, offset, len, keep_size)
            .map_err(|e| self.gone(ino, e))
    }

    fn allocate_checked(&self, ino: u64, offset: u64, len: u64, keep_size: bool) -> Result<()> {
        let id = section_id(ino, Error::InvalidArgument)?;
        let end = offset.checked_add(len).ok_or(Error::TooBig)?;
        if end > i64::MAX as u64 {
            return Err(Error::TooBig);
        }
        let section = self.section(id)?;
        // Holding the state lock serializes this with every other growth of the section.
        let mut st = lock(&section.state);
        if st.read_only() {
            return Err(Error::ReadOnly);
        }
        let file = self.file_of(&section, &st)?;
        let size = fstat(&file)?.st_size as u64;
        if end > size && self.quota.enabled() {
            // The quota counts sizes: storage kept past the end would escape it.
            if keep_size {
                return Err(Error::QuotaExceeded);
            }
            self.account(&mut st, size);
            self.charge(&mut st, end)?;
        }
        let grown = store::commit_range(&file, offset, len).and_then(|()| {
            if keep_size {
                return Ok(());
            }
            let size = fstat(&file)?.st_size as u64;
            store::grow(&file, size, end, Commit::Eager)
        });
        if grown.is_err() {
            let now = fstat(&file).map(|s| s.st_size as u64).unwrap_or(size);
            self.account(&mut st, now);
        }
        grown
    }

    /// fsync of a section handle.
    pub fn sync(&self, fh: u64, datasync: bool) -> Result<()> {
        let file = match self.handles.get(&fh).as_deref() {
            Some(Handle::Section { file, .. }) => Arc::clone(file),
            Some(_) => return Ok(()),
            None => return Err(Error::BadHandle),
        };
        if datasync {
            file.sync_data()?
        } else {
            file.sync_all()?
        }
        Ok(())
    }

    /// setattr: size, mode, owner, times. Permission checks are the kernel's
    /// (default_permissions); this applies what it let through, all or nothing. `fh` is
    /// the handle the request came through (ftruncate), if any; a shrink is allowed only
    /// to the sole holder ([`Sections::shrink_guard`]).
    pub fn set_attr(
        &self,
        caller: Caller,
        ino: u64,
        fh: Option<u64>,
        change: AttrChange,
    ) -> Result<Attr> {
        self.apply_attr(caller, ino, fh, change)
            .map_err(|e| self.gone(ino, e))
    }

    fn apply_attr(
        &self,
        caller: Caller,
        ino: u64,
        fh: Option<u64>,
        change: AttrChange,
    ) -> Result<Attr> {
        let section = match Ino::decode(ino).ok_or(Error::NotFound)? {
            Ino::Section(id) => self.section(id)?,
            Ino::Sidecar(_) => return Err(Error::ReadOnly),
            _ => return Err(Error::NotSupported),
        };
        let mut st = lock(&section.state);
        let file = self.file_of(&section, &st)?;
        let times = change.atime.is_some() || change.mtime.is_some();
        if st.read_only() && (change.size.is_some() || times) {
            return Err(Error::ReadOnly);
        }
        // The daemon sets times as root: on a file of someone else, only "now" (which
        // write permission allows anyone), as utimensat(2) would answer the caller.
        let explicit = |t: Option<Option<SystemTime>>| matches!(t, Some(Some(_)));
        if st.record.backing.is_some()
            && (explicit(change.atime) || explicit(change.mtime))
            && caller.uid != 0
            && fstat(&file)?.st_uid != caller.uid
        {
            return Err(Error::NotOwner);
        }
        if let Some(size) = change.size {
            let current = fstat(&file)?.st_size as u64;
            if size < current {
                // A handle of this section passed with the request (ftruncate) is the
                // caller's own; truncate(2) by path passes none.
                let own = match fh.and_then(|fh| self.handles.get(&fh)).as_deref() {
                    Some(Handle::Section { ino, .. }) if *ino == section.id => 1,
                    _ => 0,
                };
                st = self.shrink_guard(&section, st, own, caller.process(), true)?;
                file.set_len(size)?;
                self.account(&mut st, size);
            } else {
                if size > i64::MAX as u64 {
                    return Err(Error::TooBig);
                }
                self.account(&mut st, current);
                self.charge(&mut st, size)?;
                // Holding the state lock serializes growth of this section.
                if let Err(e) = store::grow(&file, current, size, section.commit) {
                    let now = fstat(&file).map(|s| s.st_size as u64).unwrap_or(current);
                    self.account(&mut st, now);
                    return Err(e);
                }
            }
        }
        if change.mode.is_some() || change.uid.is_some() || change.gid.is_some() {
            let mut record = st.record.clone();
            if let Some(mode) = change.mode {
                record.mode = mode & 0o7777;
            }
            record.uid = change.uid.unwrap_or(record.uid);
            record.gid = change.gid.unwrap_or(record.gid);
            if st.linked {
                self.store.write_record(section.id, &record)?;
            }
            // The section's bytes go with it to its new owner.
            self.quota.transfer(st.record.uid, record.uid, st.counted);
            st.record = record;
        }
        if change.atime.is_some() || change.mtime.is_some() {
            let ts = |t: Option<Option<SystemTime>>| match t {
                None => libc::timespec {
                    tv_sec: 0,
                    tv_nsec: libc::UTIME_OMIT,
                },
                Some(None) => libc::timespec {
                    tv_sec: 0,
                    tv_nsec: libc::UTIME_NOW,
                },
                Some(Some(t)) => {
                    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
                    libc::timespec {
                        tv_sec: d.as_secs() as libc::time_t,
                        tv_nsec: d.subsec_nanos() as libc::c_long,
                    }
                }
            };
            let times = [ts(change.atime), ts(change.mtime)];
            // SAFETY: valid fd and two timespecs.
            if unsafe { libc::futimens(file.as_raw_fd(), times.as_ptr()) } != 0 {
                return Err(std::io::Error::last_os_error().into());
            }
        }
        drop(st);
        let _ = caller;
        self.section_attr(&section)
    }

    /// Removes a name of the global namespace.
    pub fn unlink(&self, name: &OsStr) -> Result<()> {
        self.unlink_in(None, name)
    }

    /// Removes a section's name. Handles and views keep the bytes until they close.
    pub fn unlink_in(&self, ns: Ns, name: &OsStr) -> Result<()> {
        if namespace::is_reserved(ns, name) {
            return Err(Error::NotSupported);
        }
        let key = namespace::key(ns, name);
        let mut names = lock(&self.names);
        let Some(&id) = names.get(&*key) else {
            return Err(match name::sidecar_of(name) {
                Some(stem) if names.contains_key(&*namespace::key(ns, stem)) => Error::NotSupported,
                _ => Error::NotFound,
            });
        };
        if let Err(e) = self.store.remove(id) {
            let e = Error::from(e);
            if !e.is_gone() {
                return Err(e);
            }
            // Removed from the store behind our back: what unlink wanted is done.
            let lost = self.drop_lost(&mut names, id);
            drop(names);
            self.forget_lost(id, lost, false);
            return Ok(());
        }
        names.remove(&*key);
        self.dir_changed(ns);
        drop(names);
        self.unlinked(id);
        Ok(())
    }

    fn unlinked(&self, id: u64) {
        if let Ok(section) = self.section(id) {
            let mut st = lock(&section.state);
            st.linked = false;
            if st.handles == 0 {
                self.account(&mut st, 0);
                st.file = None;
            }
            self.drop_if_gone(&section, &st);
        }
    }

    /// Keeps `user_quota`'s count of a section right: `size` while it holds storage
    /// (linked, or open), nothing after.
    fn account(&self, st: &mut SectionState, size: u64) {
        // A section over a file holds no storage of the store: its bytes are the file's.
        let holds = (st.linked || st.handles > 0) && st.record.backing.is_none();
        let bytes = if holds { quota::footprint(size) } else { 0 };
        let uid = st.record.uid;
        self.quota.recount(uid, &mut st.counted, bytes);
    }

    /// Counts a growth to `size` against the owner's quota before it happens: ENOSPC,
    /// with nothing changed, when that would pass `user_quota`.
    fn charge(&self, st: &mut SectionState, size: u64) -> Result<()> {
        if st.record.backing.is_some() {
            return Ok(());
        }
        let uid = st.record.uid;
        self.quota
            .charge(uid, &mut st.counted, quota::footprint(size))
    }

    /// Bytes of sections counted against `uid` under `-o user_quota` (0 without one).
    pub fn quota_used(&self, uid: u32) -> u64 {
        self.quota.used(uid)
    }

    /// Renames a section of the global namespace.
    pub fn rename(&self, old: &OsStr, new: &OsStr, noreplace: bool) -> Result<()> {
        self.rename_in(None, old, None, new, noreplace)
    }

    /// Renames a section, replacing any section at `new` unless `noreplace`; it may move
    /// between namespaces.
    pub fn rename_in(
        &self,
        old_ns: Ns,
        old: &OsStr,
        new_ns: Ns,
        new: &OsStr,
        noreplace: bool,
    ) -> Result<()> {
        if namespace::is_reserved(old_ns, old) || namespace::is_reserved(new_ns, new) {
            return Err(Error::NotSupported);
        }
        let (old_key, new_key) = (namespace::key(old_ns, old), namespace::key(new_ns, new));
        let mut names = lock(&self.names);
        let Some(&src) = names.get(&*old_key) else {
            return Err(match name::sidecar_of(old) {
                Some(stem) if names.contains_key(&*namespace::key(old_ns, stem)) => {
                    Error::NotSupported
                }
                _ => Error::NotFound,
            });
        };
        name::validate(new)?;
        if old_key == new_key {
            return Ok(());
        }
        let target = names.get(&*new_key).copied();
        if target.is_some() && noreplace {
            return Err(Error::Exists);
        }
        let section = self.section(src)?;
        let mut st = lock(&section.state);
        let mut record = st.record.clone();
        record.name = new.to_os_string();
        record.namespace = new_ns;
        record.seq = self.seq.fetch_add(1, Ordering::Relaxed);
        // The new record first: if the removal below never happens (crash), the next scan
        // sees two records for `new` and keeps this, the newer one.
        if let Err(e) = self.store.write_record(src, &record) {
            if !e.is_gone() {
                return Err(e);
            }
            drop(st);
            let lost = self.drop_lost(&mut names, src);
            drop(names);
            self.forget_lost(src, lost, true);
            return Err(Error::Stale);
        }
        if let Some(t) = target
            && let Err(e) = self.store.remove(t)
        {
            let _ = self.store.write_record(src, &st.record);
            return Err(e.into());
        }
        st.record = record;
        drop(st);
        names.remove(&*old_key);
        names.insert(new_key.into_owned(), src);
        self.dir_changed(old_ns);
        self.dir_changed(new_ns);
        drop(names);
        if let Some(t) = target {
            self.unlinked(t);
        }
        Ok(())
    }

    /// Snapshots the root's section ids for one opendir. Names are read as the entries
    /// are listed: 8 bytes per section, where a copy of every name cost 6 MiB per `ls` of
    /// 100,000 sections (kept by the allocator long after).
    pub fn open_dir(&self) -> u64 {
        self.open_ns_dir(None)
    }

    /// Snapshots one namespace's section ids (its names are keyed `UID/NAME`).
    fn open_ns_dir(&self, ns: Ns) -> u64 {
        let names = lock(&self.names);
        let mut ids: Vec<u64> = names
            .iter()
            .filter(|(k, _)| namespace::key_in(ns, k))
            .map(|(_, &id)| id)
            .collect();
        drop(names);
        ids.sort_unstable();
        self.add_handle(Handle::Dir(Arc::new(Listing::Sections(ns, ids))))
    }

    /// Entries of a directory handle from `offset` on: (inode, kind, name, next offset).
    /// Offsets 0 and 1 are `.` and `..`; then each section and its sidecar. The root does
    /// not list `Global`, `Local` and `Sessions`.
    pub fn read_dir(&self, fh: u64, offset: u64) -> Result<Vec<(u64, Kind, OsString, u64)>> {
        let listing = match self.handles.get(&fh).as_deref() {
            Some(Handle::Dir(listing)) => Arc::clone(listing),
            _ => return Err(Error::BadHandle),
        };
        let (ns, ids) = match &*listing {
            Listing::Sections(ns, ids) => (*ns, ids),
            Listing::Sessions(uids) => return Ok(sessions_entries(uids, offset)),
        };
        let (dot, dotdot) = match ns {
            None => (Ino::Root, Ino::Root),
            Some(uid) => (Ino::UserDir(uid), Ino::Sessions),
        };
        let mut out = Vec::new();
        let total = 2 + 2 * ids.len() as u64;
        for off in offset..total {
            let entry = match off {
                0 => (dot.number(), Kind::Directory, OsString::from(".")),
                1 => (dotdot.number(), Kind::Directory, OsString::from("..")),
                n => {
                    let id = ids[((n - 2) / 2) as usize];
                    // Gone since opendir (unlinked, replaced or moved by a rename): not listed.
                    let Some(name) = self.linked_name(id, ns) else {
                        continue;
                    };
                    if n % 2 == 0 {
                        (id, Kind::File, name)
                    } else {
                        let sidecar = Ino::Sidecar(id).number();
                        (sidecar, Kind::File, name::sidecar_name(&name))
                    }
                }
            };
            out.push((entry.0, entry.1, entry.2, off + 1));
            // The adapter stops when the kernel's buffer is full; a few hundred is plenty.
            if out.len() >= 512 {
                break;
            }
        }
        Ok(out)
    }

    /// A section's current name, unless it has lost it.
    fn linked_name(&self, id: u64, ns: Ns) -> Option<OsString> {
        let section = self.section(id).ok()?;
        let st = lock(&section.state);
        (st.linked && st.record.namespace == ns).then(|| st.record.name.clone())
    }

    pub fn release_dir(&self, fh: u64) {
        self.handles.remove(&fh);
    }
}

/// The namespaces: `Global` and `Local` at the root, `Sessions/UID` (see namespace.rs).
impl Sections {
    /// The namespace whose names are the entries of directory `parent`: the root's, or
    /// a user directory's. `Sessions` holds directories only: nothing is made there.
    pub fn namespace_of(&self, parent: u64) -> Result<Ns> {
        match Ino::decode(parent) {
            Some(Ino::Root) => Ok(None),
            Some(Ino::Sessions) => Err(Error::NotSupported),
            Some(Ino::UserDir(uid)) if lock(&self.user_dirs).contains_key(&uid) => Ok(Some(uid)),
            _ => Err(Error::NotFound),
        }
    }

    fn reserved_ino(&self, name: &OsStr) -> Ino {
        if name == namespace::GLOBAL {
            Ino::Global
        } else if name == namespace::LOCAL {
            Ino::Local
        } else {
            Ino::Sessions
        }
    }

    /// A name in `Sessions`: a user's directory. It is made when its own user first
    /// looks for it (following `Local` does), and exists for nobody else until then.
    pub fn lookup_session(&self, caller: Caller, name: &OsStr) -> Result<Attr> {
        let uid = namespace::parse_uid(name).ok_or(Error::NotFound)?;
        let mut dirs = lock(&self.user_dirs);
        if let std::collections::hash_map::Entry::Vacant(e) = dirs.entry(uid) {
            if caller.uid != uid {
                return Err(Error::NotFound);
            }
            e.insert(caller.gid);
            log::debug!("namespace of uid {uid}: made on first use");
        }
        drop(dirs);
        self.namespace_attr(caller, Ino::UserDir(uid))
    }

    /// Where a link leads: `Global` to the root itself, `Local` to the caller's own
    /// directory. The kernel asks at every path walk (no FUSE_CACHE_SYMLINKS), so each
    /// caller gets its own answer.
    pub fn readlink(&self, caller: Caller, ino: u64) -> Result<Vec<u8>> {
        match Ino::decode(ino) {
            Some(Ino::Global) => Ok(b".".to_vec()),
            Some(Ino::Local) => Ok(namespace::local_target(caller.uid)),
            _ => Err(Error::InvalidArgument),
        }
    }

    /// Opens a directory for reading: the root, `Sessions`, or a user directory.
    pub fn open_dir_of(&self, ino: u64) -> Result<u64> {
        if Ino::decode(ino) == Some(Ino::Sessions) {
            let mut uids: Vec<u32> = lock(&self.user_dirs).keys().copied().collect();
            uids.sort_unstable();
            return Ok(self.add_handle(Handle::Dir(Arc::new(Listing::Sessions(uids)))));
        }
        match self.namespace_of(ino) {
            Ok(ns) => Ok(self.open_ns_dir(ns)),
            Err(_) => Err(Error::NotADirectory),
        }
    }

    /// Attributes of the links and namespace directories (not the root's).
    fn namespace_attr(&self, caller: Caller, which: Ino) -> Result<Attr> {
        let root = self.root_attr();
        let ino = which.number();
        let link = |size: usize| Attr {
            ino,
            kind: Kind::Symlink,
            size: size as u64,
            perm: 0o777,
            nlink: 1,
            mtime: self.mounted_at,
            ctime: self.mounted_at,
            ..root
        };
        Ok(match which {
            Ino::Global => link(1),
            Ino::Local => link(namespace::local_target(caller.uid).len()),
            // Users may pass through to their own directory, not list the others.
            Ino::Sessions => Attr {
                ino,
                perm: 0o711,
                mtime: self.mounted_at,
                ctime: self.mounted_at,
                ..root
            },
            Ino::UserDir(uid) => {
                let gid = *lock(&self.user_dirs).get(&uid).ok_or(Error::NotFound)?;
                let t = self.dir_time(ino);
                Attr {
                    ino,
                    perm: 0o700,
                    uid,
                    gid,
                    mtime: t,
                    ctime: t,
                    ..root
                }
            }
            Ino::Root | Ino::Section(_) | Ino::Sidecar(_) => return Err(Error::NotFound),
        })
    }
}

/// The entries of `Sessions` from `offset` on.
fn sessions_entries(uids: &[u32], offset: u64) -> Vec<(u64, Kind, OsString, u64)> {
    let dots = [
        (Ino::Sessions.number(), OsString::from(".")),
        (Ino::Root.number(), OsString::from("..")),
    ];
    let dirs = uids
        .iter()
        .map(|&u| (Ino::UserDir(u).number(), OsString::from(u.to_string())));
    dots.into_iter()
        .chain(dirs)
        .enumerate()
        .skip(offset as usize)
        .map(|(i, (ino, name))| (ino, Kind::Directory, name, i as u64 + 1))
        .collect()
}

impl SectionState {
    /// A section over a file its creator could only read.
    fn read_only(&self) -> bool {
        matches!(&self.record.backing, Some(b) if !b.writable)
    }

    fn new(record: Record, last_status: Status, lookups: u64) -> SectionState {
        SectionState {
            record,
            linked: true,
            lookups,
            file: None,
            handles: 0,
            last_status,
            by_process: HashMap::new(),
            counted: 0,
        }
    }
}

/// Whether `caller` may read a file of this mode and owner, by its uid and primary gid
/// only (supplementary groups are not known without reading /proc: fewer rights, never
/// more). For what a non-reader may learn, not for access: the kernel checks opens.
fn may_read(mode: u32, uid: u32, gid: u32, caller: Caller) -> bool {
    caller.uid == 0
        || if caller.uid == uid {
            mode & 0o400 != 0
        } else if caller.gid == gid {
            mode & 0o040 != 0
        } else {
            mode & 0o004 != 0
        }
}

/// The section an inode number names; `not_a_section` for the other kinds of inode.
fn section_id(ino: u64, not_a_section: Error) -> Result<u64> {
    match Ino::decode(ino) {
        Some(Ino::Section(id)) => Ok(id),
        Some(_) => Err(not_a_section),
        None => Err(Error::NotFound),
    }
}

/// `fstat(2)` of an open file.
pub fn fstat(file: &File) -> Result<libc::stat> {
    // SAFETY: zeroed stat is a valid out-buffer.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid fd and out pointer.
    if unsafe { libc::fstat(file.as_raw_fd(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    Ok(st)
}

fn time(secs: i64, nsecs: i64) -> SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + Duration::new(secs as u64, nsecs as u32)
    } else {
        UNIX_EPOCH
    }
}

/// The thread group (process) of a thread id as the kernel reports it in requests.
/// Falls back to the id itself when /proc does not say (the thread is gone).
pub fn thread_group(tid: u32) -> u32 {
    // Most callers are a thread-group leader (any single-threaded process, or a main
    // thread): its own process. tgkill(tid, tid, 0) delivers nothing and fails with ESRCH
    // unless thread `tid` leads group `tid` (EPERM: it does, but is not ours to signal).
    // One syscall, where /proc/TID/status renders some 60 lines: that read was 13% of the
    // daemon's time in a create loop.
    let t = libc::c_long::from(tid);
    // SAFETY: signal 0 is a pure existence and permission probe.
    let rc = unsafe { libc::syscall(libc::SYS_tgkill, t, t, 0 as libc::c_long) };
    let leader = rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    if tid != 0 && leader {
        return tid;
    }
    let Ok(status) = std::fs::read_to_string(format!("/proc/{tid}/status")) else {
        return tid;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("Tgid:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(tid)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Caller = Caller {
        uid: 1000,
        gid: 1000,
        // Above pid_max: no such thread, so the id is its own process.
        pid: 4_200_001,
    };
    const B: Caller = Caller {
        uid: 1000,
        gid: 1000,
        pid: 4_200_002,
    };

    fn model(dir: &std::path::Path) -> Sections {
        let store = Store::open(dir).unwrap();
        Sections::load(
            store,
            Options {
                commit: Commit::Eager,
                owner: (0, 0),
                user_quota: None,
                lifetime: Lifetime::Persistent,
            },
        )
        .unwrap()
    }

    fn os(s: &str) -> &OsStr {
        OsStr::new(s)
    }

    #[test]
    fn create_then_open_reports_status_per_process() {
        let tmp = tempfile::tempdir().unwrap();
        let m = model(tmp.path());
        let (attr, a) = m.create(A, os("s"), 0o644, 0o022, libc::O_RDWR).unwrap();
        assert_eq!(a.status, Status::Created);
        assert_eq!(attr.perm, 0o644);
        let b = m.open(B, attr.ino, libc::O_RDWR).unwrap();
        assert_eq!(b.status, Status::AlreadyExists);
        assert_eq!(m.facts(A, attr.ino).unwrap().status, Status::Created);
        assert_eq!(m.facts(B, attr.ino).unwrap().status, Status::AlreadyExists);
        let shell = Caller {
            pid: 4_200_003,
            ..A
        };
        assert_eq!(
            m.facts(shell, attr.ino).unwrap().status,
            Status::AlreadyExists
        );
        assert_eq!(m.facts(shell, attr.ino).unwrap().open_handles, 2);
        m.release(b.fh).unwrap();
        // B's entry is forgotten with its last handle.
        assert_eq!(m.facts(B, attr.ino).unwrap().status, Status::AlreadyExists);
        m.release(a.fh).unwrap();
    }

    #[test]
    fn create_exclusive_and_names() {
        let tmp = tempfile::tempdir().unwrap();
        let m = model(tmp.path());
        m.create(A, os("s"), 0o600, 0, libc::O_RDWR).unwrap();
        assert!(matches!(
            m.create(A, os("s"), 0o600, 0, libc::O_RDWR | libc::O_EXCL),
            Err(Error::Exists)
        ));
        assert!(matches!(
            m.create(A, os("x.meta"), 0o600, 0, 0),
            Err(Error::InvalidName)
        ));
        assert!(matches!(
            m.create(A, os("a\\b"), 0o600, 0, 0),
            Err(Error::InvalidName)
        ));
        assert!(matches!(m.lookup(A, os("nope")), Err(Error::NotFound)));
        let sidecar = Ino::decode(m.lookup(A, os("s.meta")).unwrap().ino);
        assert!(matches!(sidecar, Some(Ino::Sidecar(_))));
    }

    #[test]
    fn sizes_grow_and_shrink_only_for_the_sole_holder() {
        let tmp = tempfile::tempdir().unwrap();
        let m = model(tmp.path());
        let (attr, h) = m.create(A, os("s"), 0o600, 0, libc::O_RDWR).unwrap();
        let size = |size| AttrChange {
            size: Some(size),
            ..Default::default()
        };
        assert_eq!(
            m.set_attr(A, attr.ino, None, size(8192)).unwrap().size,
            8192
        );
        m.write(h.fh, 10_000, b"tail").unwrap();
        assert_eq!(m.attr(A, attr.ino).unwrap().size, 10_004);
        assert_eq!(m.read(h.fh, 10_000, 100).unwrap(), b"tail");
        // By path (no handle of its own) while `h` is open: busy, unchanged.
        assert!(matches!(
            m.set_attr(A, attr.ino, None, size(10)),
            Err(Error::Busy)
        ));
        assert_eq!(m.attr(A, attr.ino).unwrap().size, 10_004);
        // Through the only handle: allowed.
        assert_eq!(
            m.set_attr(A, attr.ino, Some(h.fh), size(9000))
                .unwrap()
                .size,
            9000
        );
        // Another handle makes it busy, O_TRUNC too.
        let b = m.open(B, attr.ino, libc::O_RDWR).unwrap();
        assert!(matches!(
            m.set_attr(A, attr.ino, Some(h.fh), size(10)),
            Err(Error::Busy)
        ));
        assert!(matches!(
            m.open(A, attr.ino, libc::O_RDWR | libc::O_TRUNC),
            Err(Error::Busy)
        ));
        assert_eq!(m.attr(A, attr.ino).unwrap().size, 9000);
        assert_eq!(m.facts(A, attr.ino).unwrap().open_handles, 2);
        // A release that arrives while the shrink waits lets it through.
        std::thread::scope(|scope| {
            scope.spawn(|| {
                std::thread::sleep(Duration::from_millis(50));
                m.release(b.fh).unwrap();
            });
            assert_eq!(
                m.set_attr(A, attr.ino, Some(h.fh), size(10)).unwrap().size,
                10
            );
        });
        m.release(h.fh).unwrap();
        // O_TRUNC with no handle open: the section is cut to 0 by the open.
        let t = m.open(A, attr.ino, libc::O_RDWR | libc::O_TRUNC).unwrap();
        assert_eq!(m.attr(A, attr.ino).unwrap().size, 0);
        m.release(t.fh).unwrap();
    }

    #[test]
    fn unlink_keeps_open_handles_working() {
        let tmp = tempfile::tempdir().unwrap();
        let m = model(tmp.path());
        let (attr, h) = m.create(A, os("s"), 0o600, 0, libc::O_RDWR).unwrap();
        m.write(h.fh, 0, b"data").unwrap();
        m.unlink(os("s")).unwrap();
        assert!(matches!(m.lookup(A, os("s")), Err(Error::NotFound)));
        assert_eq!(m.read(h.fh, 0, 4).unwrap(), b"data");
        assert_eq!(m.attr(A, attr.ino).unwrap().nlink, 0);
        m.release(h.fh).unwrap();
        m.forget(attr.ino, 1);
        assert!(matches!(m.attr(A, attr.ino), Err(Error::NotFound)));
    }

    #[test]
    fn rename_replaces_and_survives_reload() {
        let tmp = tempfile::tempdir().unwrap();
        {
            let m = model(tmp.path());
            let (_, a) = m.create(A, os("a"), 0o600, 0, libc::O_RDWR).unwrap();
            m.write(a.fh, 0, b"from a").unwrap();
            m.create(A, os("b"), 0o600, 0, libc::O_RDWR).unwrap();
            assert!(matches!(
                m.rename(os("a"), os("b"), true),
                Err(Error::Exists)
            ));
            m.rename(os("a"), os("b"), false).unwrap();
            assert!(matches!(m.lookup(A, os("a")), Err(Error::NotFound)));
            assert!(matches!(
                m.rename(os("b"), os("c.meta"), false),
                Err(Error::InvalidName)
            ));
        }
        let m = model(tmp.path());
        assert_eq!(m.len(), 1);
        let attr = m.lookup(A, os("b")).unwrap();
        let h = m.open(A, attr.ino, libc::O_RDONLY).unwrap();
        assert_eq!(m.read(h.fh, 0, 6).unwrap(), b"from a");
    }

    #[test]
    fn sidecar_is_read_only_and_listed() {
        let tmp = tempfile::tempdir().unwrap();
        let m = model(tmp.path());
        let (attr, _) = m.create(A, os("s"), 0o640, 0, libc::O_RDWR).unwrap();
        let side = Ino::Sidecar(attr.ino).number();
        assert!(matches!(
            m.open_sidecar(A, side, libc::O_WRONLY),
            Err(Error::ReadOnly)
        ));
        let fh = m.open_sidecar(A, side, libc::O_RDONLY).unwrap();
        let text = String::from_utf8(m.read(fh, 0, 4096).unwrap()).unwrap();
        assert!(
            text.starts_with("name=s\nsize=0\nstatus=created\n"),
            "{text}"
        );
        assert_eq!(m.attr(A, side).unwrap().perm, 0o440);
        let dir = m.open_dir();
        let names: Vec<_> = m
            .read_dir(dir, 0)
            .unwrap()
            .into_iter()
            .map(|e| e.2)
            .collect();
        assert_eq!(names, [".", "..", "s", "s.meta"]);
        assert!(matches!(m.unlink(os("s.meta")), Err(Error::NotSupported)));
    }

    #[test]
    fn lifetime_handles_names_go_with_the_last_handle() {
        let tmp = tempfile::tempdir().unwrap();
        let m = model(tmp.path());
        let (attr, a) = m.create(A, os("s"), 0o600, 0, libc::O_RDWR).unwrap();
        // Only the owner (or root) chooses, and only known values.
        assert!(matches!(
            m.set_lifetime(Caller { uid: 1001, ..B }, attr.ino, b"handles"),
            Err(Error::NotOwner)
        ));
        assert!(matches!(
            m.set_lifetime(A, attr.ino, b"forever"),
            Err(Error::InvalidArgument)
        ));
        m.set_lifetime(A, attr.ino, b"handles").unwrap();
        assert_eq!(m.facts(A, attr.ino).unwrap().lifetime, Lifetime::Handles);
        let b = m.open(B, attr.ino, libc::O_RDWR).unwrap();
        m.write(b.fh, 0, b"kept").unwrap();
        m.release(a.fh).unwrap();
        assert!(m.lookup(A, os("s")).is_ok(), "a handle is still open");
        m.release(b.fh).unwrap();
        assert!(matches!(m.lookup(A, os("s")), Err(Error::NotFound)));
        assert!(m.is_empty());
        // Set while nothing holds it: it goes at once.
        let (p, h) = m.create(A, os("p"), 0o600, 0, libc::O_RDWR).unwrap();
        m.release(h.fh).unwrap();
        assert!(m.lookup(A, os("p")).is_ok());
        m.set_lifetime(A, p.ino, b"handles\n").unwrap();
        assert!(matches!(m.lookup(A, os("p")), Err(Error::NotFound)));
    }

    #[test]
    fn lifetime_handles_sections_do_not_survive_a_restart() {
        let tmp = tempfile::tempdir().unwrap();
        {
            let m = model(tmp.path());
            let (attr, _held) = m.create(A, os("h"), 0o600, 0, libc::O_RDWR).unwrap();
            m.set_lifetime(A, attr.ino, b"handles").unwrap();
            m.create(A, os("p"), 0o600, 0, libc::O_RDWR).unwrap();
            // The daemon ends with the handles still open.
        }
        let m = model(tmp.path());
        assert_eq!(m.len(), 1);
        assert!(m.lookup(A, os("p")).is_ok());
        assert_eq!(
            std::fs::read_dir(tmp.path().join("sections"))
                .unwrap()
                .count(),
            1
        );
    }

    #[test]
    fn namespaces_keep_their_names_apart() {
        let tmp = tempfile::tempdir().unwrap();
        let m = model(tmp.path());
        let b = Caller { uid: 1001, ..B };
        assert!(matches!(
            m.namespace_of(Ino::UserDir(1000).number()),
            Err(Error::NotFound)
        ));
        // A's directory appears at A's first look, for A only.
        assert!(matches!(
            m.lookup_session(b, os("1000")),
            Err(Error::NotFound)
        ));
        let dir = m.lookup_session(A, os("1000")).unwrap();
        assert_eq!(
            (dir.kind, dir.perm, dir.uid),
            (Kind::Directory, 0o700, 1000)
        );
        m.lookup_session(b, os("1001")).unwrap();
        let (a, _, ()) = m
            .create_in(A, Some(1000), os("n"), 0o600, 0, libc::O_RDWR, no_attach)
            .unwrap();
        let (bb, _, ()) = m
            .create_in(b, Some(1001), os("n"), 0o600, 0, libc::O_RDWR, no_attach)
            .unwrap();
        let (g, _) = m.create(A, os("n"), 0o600, 0, libc::O_RDWR).unwrap();
        assert!(a.ino != bb.ino && a.ino != g.ino);
        assert_eq!(m.lookup_in(A, Some(1000), os("n")).unwrap().ino, a.ino);
        assert_eq!(m.lookup(A, os("n")).unwrap().ino, g.ino);
        // The reserved names are links and a directory, never sections.
        assert_eq!(m.lookup(A, os("Local")).unwrap().kind, Kind::Symlink);
        assert_eq!(
            m.readlink(b, Ino::Local.number()).unwrap(),
            b"Sessions/1001"
        );
        assert!(matches!(
            m.create(A, os("Global"), 0o600, 0, libc::O_RDWR),
            Err(Error::Exists)
        ));
        assert!(matches!(m.unlink(os("Sessions")), Err(Error::NotSupported)));
        // Each directory lists its own names.
        let list = |ino| {
            let fh = m.open_dir_of(ino).unwrap();
            let names: Vec<_> = m
                .read_dir(fh, 0)
                .unwrap()
                .into_iter()
                .map(|e| e.2)
                .collect();
            m.release_dir(fh);
            names
        };
        assert_eq!(list(Ino::Root.number()), [".", "..", "n", "n.meta"]);
        assert_eq!(
            list(Ino::UserDir(1001).number()),
            [".", "..", "n", "n.meta"]
        );
        assert_eq!(list(Ino::Sessions.number()), [".", "..", "1000", "1001"]);
        // A move to another namespace, and back after a restart.
        m.rename_in(Some(1000), os("n"), None, os("from_a"), false)
            .unwrap();
        drop(m);
        let m = model(tmp.path());
        assert_eq!(m.lookup(A, os("from_a")).unwrap().ino, a.ino);
        assert_eq!(m.lookup_in(b, Some(1001), os("n")).unwrap().ino, bb.ino);
        assert!(m.namespace_of(Ino::UserDir(1001).number()).is_ok());
    }

    fn tracked(m: &Sections, ino: u64) -> usize {
        lock(&m.section(ino).unwrap().state).by_process.len()
    }

    #[test]
    fn per_process_answers_are_forgotten_with_the_last_handle() {
        let tmp = tempfile::tempdir().unwrap();
        let m = model(tmp.path());
        let (attr, a1) = m.create(A, os("s"), 0o600, 0, libc::O_RDWR).unwrap();
        let a2 = m.open(A, attr.ino, libc::O_RDWR).unwrap();
        let b = m.open(B, attr.ino, libc::O_RDWR).unwrap();
        assert_eq!(tracked(&m, attr.ino), 2);
        // A's own most recent open is its second one.
        assert_eq!(m.facts(A, attr.ino).unwrap().status, Status::AlreadyExists);
        m.release(a2.fh).unwrap();
        assert_eq!(tracked(&m, attr.ino), 2, "A still holds a handle");
        m.release(a1.fh).unwrap();
        assert_eq!(tracked(&m, attr.ino), 1);
        m.release(b.fh).unwrap();
        assert_eq!(tracked(&m, attr.ino), 0);
        // Many short-lived processes leave nothing behind.
        for pid in 4_300_000..4_301_000 {
            let c = Caller { pid, ..A };
            let h = m.open(c, attr.ino, libc::O_RDONLY).unwrap();
            m.release(h.fh).unwrap();
        }
        assert_eq!(tracked(&m, attr.ino), 0);
        assert_eq!(m.facts(A, attr.ino).unwrap().open_handles, 0);
    }

    #[test]
    fn a_thread_answers_for_its_process() {
        let tmp = tempfile::tempdir().unwrap();
        let m = model(tmp.path());
        // SAFETY: gettid has no preconditions.
        let me = Caller {
            pid: unsafe { libc::gettid() } as u32,
            ..A
        };
        let (attr, h) = m.create(me, os("s"), 0o600, 0, libc::O_RDWR).unwrap();
        let b = m.open(B, attr.ino, libc::O_RDWR).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let sibling = std::thread::spawn(move || {
            // SAFETY: as above.
            tx.send(unsafe { libc::gettid() } as u32).unwrap();
            let _ = done_rx.recv();
        });
        let tid = rx.recv().unwrap();
        assert_ne!(tid, me.pid);
        assert_eq!(thread_group(tid), std::process::id());
        let sibling_caller = Caller { pid: tid, ..A };
        // The sibling thread sees the answer this thread's open got, not B's.
        assert_eq!(
            m.facts(sibling_caller, attr.ino).unwrap().status,
            Status::Created
        );
        assert_eq!(m.facts(B, attr.ino).unwrap().status, Status::AlreadyExists);
        done_tx.send(()).unwrap();
        sibling.join().unwrap();
        m.release(h.fh).unwrap();
        m.release(b.fh).unwrap();
    }

    #[test]
    fn an_open_or_create_whose_attach_fails_leaves_no_trace() {
        let tmp = tempfile::tempdir().unwrap();
        let m = model_with_quota(tmp.path(), Commit::Eager, 1 << 20);
        let refuse = |_: u64, _: &File| -> Result<()> {
            Err(Error::Io(std::io::Error::from_raw_os_error(libc::EIO)))
        };
        // A new name: nothing published, nothing stored, nothing counted.
        let flags = libc::O_RDWR | libc::O_CREAT;
        assert!(
            m.create_in(A, None, os("s"), 0o600, 0, flags, refuse)
                .is_err()
        );
        assert!(matches!(m.lookup(A, os("s")), Err(Error::NotFound)));
        assert_eq!(m.quota_used(A.uid), 0);
        assert!(m.store().scan().unwrap().sections.is_empty());
        // An existing name: no handle, no kernel reference, no status changed.
        let (attr, h) = m.create(A, os("s"), 0o600, 0, flags).unwrap();
        m.release(h.fh).unwrap();
        assert!(
            m.create_in(B, None, os("s"), 0o600, 0, flags, refuse)
                .is_err()
        );
        assert!(m.open_with(B, attr.ino, libc::O_RDWR, refuse).is_err());
        {
            let section = m.section(attr.ino).unwrap();
            let st = lock(&section.state);
            assert_eq!((st.handles, st.lookups), (0, 1));
            assert!(st.by_process.is_empty());
            assert_eq!(st.last_status, Status::Created);
        }
        // The kernel's one reference goes: the section is forgotten.
        m.unlink(os("s")).unwrap();
        m.forget(attr.ino, 1);
        assert!(m.section(attr.ino).is_err());
        assert_eq!(m.quota_used(A.uid), 0);
    }

    fn model_with_quota(dir: &std::path::Path, commit: Commit, quota: u64) -> Sections {
        let store = Store::open(dir).unwrap();
        let options = Options {
            commit,
            owner: (0, 0),
            user_quota: Some(quota),
            lifetime: Lifetime::Persistent,
        };
        Sections::load(store, options).unwrap()
    }

    #[test]
    fn user_quota_caps_each_owner_and_follows_the_bytes() {
        let grow = |size| AttrChange {
            size: Some(size),
            ..Default::default()
        };
        let c = Caller {
            uid: 1001,
            gid: 1001,
            pid: 4_200_009,
        };
        for commit in [Commit::Eager, Commit::Lazy] {
            let tmp = tempfile::tempdir().unwrap();
            let (a_ino, b_ino) = {
                let m = model_with_quota(tmp.path(), commit, 40_960);
                let (a, ha) = m.create(A, os("a"), 0o600, 0, libc::O_RDWR).unwrap();
                let (b, hb) = m.create(A, os("b"), 0o600, 0, libc::O_RDWR).unwrap();
                m.set_attr(A, a.ino, None, grow(24_576)).unwrap();
                m.set_attr(A, b.ino, None, grow(16_384)).unwrap();
                assert_eq!(m.quota_used(1000), 40_960);
                // One byte more, by truncate or by a write past the end: refused, unchanged.
                assert!(matches!(
                    m.set_attr(A, b.ino, None, grow(16_385)),
                    Err(Error::QuotaExceeded)
                ));
                assert!(matches!(
                    m.write(hb.fh, 16_384, b"x"),
                    Err(Error::QuotaExceeded)
                ));
                assert_eq!(m.attr(A, b.ino).unwrap().size, 16_384);
                // Writes inside the size cost nothing.
                m.write(hb.fh, 0, b"inside").unwrap();
                // Another user has its own quota.
                let (cs, _) = m.create(c, os("c"), 0o600, 0, libc::O_RDWR).unwrap();
                m.set_attr(c, cs.ino, None, grow(40_960)).unwrap();
                // An unlinked section counts until its last handle goes.
                m.unlink(os("a")).unwrap();
                assert_eq!(m.quota_used(1000), 40_960);
                m.release(ha.fh).unwrap();
                assert_eq!(m.quota_used(1000), 16_384);
                // Counted in whole pages: 32,778 bytes take nine.
                m.write(hb.fh, 32_768, b"0123456789").unwrap();
                assert_eq!(m.quota_used(1000), 36_864);
                m.release(hb.fh).unwrap();
                // chown (root's) moves the bytes to the new owner, over its quota or not.
                let to_c = AttrChange {
                    uid: Some(1001),
                    gid: Some(1001),
                    ..Default::default()
                };
                m.set_attr(A, b.ino, None, to_c).unwrap();
                assert_eq!((m.quota_used(1000), m.quota_used(1001)), (0, 77_824));
                m.set_attr(
                    A,
                    b.ino,
                    None,
                    AttrChange {
                        uid: Some(1000),
                        gid: Some(1000),
                        ..Default::default()
                    },
                )
                .unwrap();
                (a.ino, b.ino)
            };
            assert!(a_ino != b_ino);
            // A restart counts the store again.
            let m = model_with_quota(tmp.path(), commit, 40_960);
            assert_eq!((m.quota_used(1000), m.quota_used(1001)), (36_864, 40_960));
            assert!(matches!(
                m.set_attr(A, b_ino, None, grow(40_961)),
                Err(Error::QuotaExceeded)
            ));
            // A rename over a section frees the replaced one's bytes.
            let (d, _) = m.create(A, os("d"), 0o600, 0, libc::O_RDWR).unwrap();
            m.set_attr(A, d.ino, None, grow(990)).unwrap();
            m.rename(os("d"), os("b"), false).unwrap();
            assert_eq!(m.quota_used(1000), 4_096);
            // An empty section costs a page: a user cannot make them without bound.
            let (_, e) = m.create(A, os("e"), 0o600, 0, libc::O_RDWR).unwrap();
            assert_eq!(m.quota_used(1000), 8_192);
            m.release(e.fh).unwrap();
            for i in 0..8 {
                m.create(A, os(&format!("f{i}")), 0o600, 0, libc::O_RDWR)
                    .unwrap();
            }
            assert!(matches!(
                m.create(A, os("one-too-many"), 0o600, 0, libc::O_RDWR),
                Err(Error::QuotaExceeded)
            ));
            assert!(matches!(
                m.lookup(A, os("one-too-many")),
                Err(Error::NotFound)
            ));
        }
    }
}
