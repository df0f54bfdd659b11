//! Attributes of sections and sidecars, and what a sidecar says (`Facts`); setattr.

use super::handles::Handle;
use super::section::{Section, SectionState, fstat};
use super::{Attr, AttrChange, Caller, Kind, Sections, lock, section_id, time};
use crate::contract::Facts;
use crate::error::{Error, Result};
use crate::ino::Ino;
use crate::store;
use std::os::fd::AsRawFd;
use std::time::{SystemTime, UNIX_EPOCH};

impl Sections {
    pub fn attr(&self, caller: Caller, ino: u64) -> Result<Attr> {
        match Ino::decode(ino).ok_or(Error::NotFound)? {
            Ino::Root => Ok(self.root_attr()),
            Ino::Section(id) => self.section_attr(&*self.section(id)?),
            Ino::Sidecar(id) => self.sidecar_attr(&*self.section(id)?, caller),
            ns => self.namespace_attr(caller, ns),
        }
    }

    pub(super) fn section_attr(&self, section: &Section) -> Result<Attr> {
        let stat = self.stat(section)?;
        Ok(self.attr_of(section.id, &mut lock(&section.state), &stat))
    }

    /// A section's attributes from a `stat` of its file, under its state lock.
    pub(super) fn attr_of(&self, id: u64, st: &mut SectionState, stat: &libc::stat) -> Attr {
        // Catches growth the daemon did not see happen (passthrough writes past the end).
        self.account(st, stat.st_size as u64);
        Attr {
            ino: id,
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
        }
    }

    pub(super) fn sidecar_attr(&self, section: &Section, caller: Caller) -> Result<Attr> {
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

    pub(super) fn facts_of(&self, section: &Section, caller: Caller) -> Result<Facts> {
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
            transport: self.transport(),
            commit: section.commit,
            lifetime: st.record.lifetime,
            backing: st.record.backing.as_ref().map(|b| b.path.clone()),
        })
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
        let apply = || -> Result<Attr> {
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
                    self.resized(section.id);
                } else {
                    if size > i64::MAX as u64 {
                        return Err(Error::TooBig);
                    }
                    self.grow(&mut st, &file, current, size, || {
                        store::grow(&file, current, size, section.commit)
                    })?;
                    if size > current {
                        self.resized(section.id);
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
        };
        apply().map_err(|e| self.gone(ino, e))
    }
}

/// Whether `caller` may read a file of this mode and owner, by its uid and primary gid
/// only (supplementary groups are not known without reading /proc: fewer rights, never
/// more). For what a non-reader may learn, not for access: the kernel checks opens.
pub(super) fn may_read(mode: u32, uid: u32, gid: u32, caller: Caller) -> bool {
    caller.uid == 0
        || if caller.uid == uid {
            mode & 0o400 != 0
        } else if caller.gid == gid {
            mode & 0o040 != 0
        } else {
            mode & 0o004 != 0
        }
}
