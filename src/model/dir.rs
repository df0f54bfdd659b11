//! Directories: listings snapshotted at opendir, directory times, and the namespaces'
//! links and directories (`Global`, `Local`, `Sessions/UID`; see namespace.rs).

use super::handles::Handle;
use super::{Attr, Caller, Kind, Sections, lock};
use crate::error::{Error, Result};
use crate::ino::Ino;
use crate::name;
use crate::namespace::{self, Ns};
use std::ffi::{OsStr, OsString};
use std::sync::Arc;
use std::time::SystemTime;

/// A directory's entries as they were at opendir.
pub(super) enum Listing {
    /// The section ids of one namespace, in order.
    Sections(Ns, Vec<u64>),
    /// The user directories in `Sessions`.
    Sessions(Vec<u32>),
}

impl Sections {
    /// When a name in directory `ino` last changed (mount time if never).
    pub(super) fn dir_time(&self, ino: u64) -> SystemTime {
        *lock(&self.dir_times).get(&ino).unwrap_or(&self.mounted_at)
    }

    /// A name in namespace `ns` was made, removed or renamed: its directory's mtime and
    /// ctime move, as on /dev/shm (watchers compare a directory's mtime). The kernel
    /// refreshes the directory's attributes itself after its own create, unlink and rename
    /// (`fuse_dir_changed`), and after a `FUSE_NOTIFY_INVAL_ENTRY`.
    pub(super) fn dir_changed(&self, ns: Ns) {
        lock(&self.dir_times).insert(Ino::dir_of(ns).number(), SystemTime::now());
    }

    pub(super) fn root_attr(&self) -> Attr {
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

    /// Snapshots the root's section ids for one opendir. Names are read as the entries
    /// are listed: 8 bytes per section, where a copy of every name cost 6 MiB per `ls` of
    /// 100,000 sections (kept by the allocator long after).
    pub fn open_dir(&self) -> u64 {
        self.open_ns_dir(None)
    }

    /// Snapshots one namespace's section ids (its names are keyed `UID/NAME`).
    pub(super) fn open_ns_dir(&self, ns: Ns) -> u64 {
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
    pub(super) fn linked_name(&self, id: u64, ns: Ns) -> Option<OsString> {
        let section = self.section(id).ok()?;
        let st = lock(&section.state);
        (st.linked && st.record.namespace == ns).then(|| st.record.name.clone())
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

    pub(super) fn reserved_ino(&self, name: &OsStr) -> Ino {
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
    pub(super) fn namespace_attr(&self, caller: Caller, which: Ino) -> Result<Attr> {
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
pub(super) fn sessions_entries(uids: &[u32], offset: u64) -> Vec<(u64, Kind, OsString, u64)> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ino::Ino;
    use crate::model::testing::*;

    #[test]
    fn sidecar_is_read_only_and_listed() {
        let (_tmp, m) = fresh();
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
        assert_eq!(listed(&m, dir), [".", "..", "s", "s.meta"]);
        assert!(matches!(m.unlink(os("s.meta")), Err(Error::NotSupported)));
    }

    #[test]
    fn namespaces_keep_their_names_apart() {
        let (tmp, m) = fresh();
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
            let names = listed(&m, fh);
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
}
