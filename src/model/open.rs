//! Create and open: the one way a handle comes to be. Each takes an `attach` step (the
//! adapter's passthrough registration) that runs after every check and before anything is
//! published; if it fails, nothing is left behind.

use super::handles::Handle;
use super::section::{Section, SectionState, fstat};
use super::{Attr, Caller, Opened, Sections, lock, no_attach, section_id};
use crate::contract::Status;
use crate::creds::{self, Identity};
use crate::error::{Error, Result};
use crate::name;
use crate::namespace::{self, Ns};
use crate::quota;
use crate::store::{FileBacking, Record};
use std::borrow::Cow;
use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, MutexGuard};
use std::time::SystemTime;

impl Sections {
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
                    // Read before the attach step: nothing fails after it.
                    let stat = fstat(&file)?;
                    let (opened, attached) =
                        self.open_locked(pid, &section, st, file, true, attach)?;
                    let attr = self.attr_of(id, &mut lock(&section.state), &stat);
                    return Ok((attr, opened, attached));
                }
                // Its file was removed from the store: the name is made anew below.
                Err(e) if e.is_gone() => {
                    lost = self.drop_lost(&mut names, id).map(|l| (id, l));
                }
                Err(e) => return Err(e),
            }
        }
        let record = self.new_record(caller, pid, ns, name, mode & !umask & 0o7777, None);
        // Even an empty section costs its owner a page: the number of sections a user
        // can make is bounded under a quota.
        let mut counted = 0;
        self.quota
            .charge(caller.uid, &mut counted, quota::footprint(0))?;
        // Everything that can fail happens before the section is published: the store file
        // (with its record), its `stat` for the reply, and the attach step.
        let made = self.store.create(&record).and_then(|(id, file)| {
            match fstat(&file).and_then(|stat| Ok((stat, attach(id, &file)?))) {
                Ok((stat, attached)) => Ok((id, file, stat, attached)),
                Err(e) => {
                    if let Err(e) = self.store.remove(id) {
                        crate::error::warn_limited(format_args!(
                            "store: cannot remove a half-made section {id}: {e}"
                        ));
                    }
                    Err(e)
                }
            }
        });
        let (id, file, stat, attached) = match made {
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
        let attr = self.attr_of(id, &mut state, &stat);
        self.publish(&mut names, key, ns, id, state);
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
        let backing = FileBacking {
            path: target.to_path_buf(),
            writable,
        };
        let mode = if writable { 0o600 } else { 0o400 };
        let record = self.new_record(caller, pid, ns, name, mode, Some(backing));
        let stat = fstat(&file)?;
        // The store file is only the record's holder: the section's bytes are `file`'s.
        let (id, _placeholder) = self.store.create(&record)?;
        // The kernel holds the entry this creation answers with.
        let mut state = SectionState::new(record, Status::Created, 1);
        state.file = Some(Arc::new(file));
        let attr = self.attr_of(id, &mut state, &stat);
        self.publish(&mut names, key, ns, id, state);
        drop(names);
        log::debug!(
            "section {name:?} over {} ({})",
            target.display(),
            if writable { "read-write" } else { "read-only" }
        );
        Ok(attr)
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

    /// Opens `section` for process `pid` (a thread group id). `attach` runs under the
    /// section's lock, after every check and before anything is counted. `O_TRUNC` on a
    /// non-empty section is a shrink: see [`Sections::shrink_guard`]; `wait` says whether
    /// it may wait for handles being released.
    pub(super) fn open_section<T>(
        &self,
        pid: u32,
        section: &Section,
        flags: i32,
        wait: bool,
        attach: impl FnOnce(u64, &File) -> Result<T>,
    ) -> Result<(Opened, T)> {
        let st = lock(&section.state);
        let (st, file) = self.file_to_open(pid, section, st, flags, wait)?;
        self.open_locked(pid, section, st, file, false, attach)
    }

    /// The checks of an open, its `O_TRUNC`, and the file it will share: the section's
    /// backing file. Takes and gives back the state lock (a shrink may wait without it).
    pub(super) fn file_to_open<'a>(
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

    /// A new section's record: made by `caller` (process `pid`) now, with the mount's
    /// commit mode and lifetime.
    fn new_record(
        &self,
        caller: Caller,
        pid: u32,
        ns: Ns,
        name: &OsStr,
        mode: u32,
        backing: Option<FileBacking>,
    ) -> Record {
        Record {
            name: name.to_os_string(),
            uid: caller.uid,
            gid: caller.gid,
            mode,
            creator_pid: pid,
            created_at: SystemTime::now(),
            commit: self.options.commit,
            seq: self.seq.fetch_add(1, Ordering::Relaxed),
            lifetime: self.options.lifetime,
            backing,
            namespace: ns,
        }
    }

    /// Makes a new section reachable, by id and then by name, under the held `names`:
    /// the last step of a create, after everything that can fail.
    fn publish(
        &self,
        names: &mut HashMap<OsString, u64>,
        key: Cow<'_, OsStr>,
        ns: Ns,
        id: u64,
        state: SectionState,
    ) {
        self.inodes.insert(id, Arc::new(Section::new(id, state)));
        names.insert(key.into_owned(), id);
        self.dir_changed(ns);
    }

    /// An open that passed its checks: attach, then count the handle and, when the reply
    /// carries an entry (`with_entry`: an open-or-create), the kernel's reference. Nothing
    /// fails after the attach step, so a half-made open is never undone.
    pub(super) fn open_locked<T>(
        &self,
        pid: u32,
        section: &Section,
        mut st: MutexGuard<'_, SectionState>,
        file: Arc<File>,
        with_entry: bool,
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
        st.lookups += u64::from(with_entry);
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ino::Ino;
    use crate::model::testing::*;

    #[test]
    fn create_then_open_reports_status_per_process() {
        let (_tmp, m) = fresh();
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
        let (_tmp, m) = fresh();
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
}
