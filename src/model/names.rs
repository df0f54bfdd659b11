//! The name table: lookup, unlink, rename, and a `lifetime=handles` name going with its
//! last handle. Names map to store ids in one map keyed by namespace (`namespace::key`).

use super::section::Section;
use super::{Attr, Caller, Sections, lock, section_id};
use crate::contract::Lifetime;
use crate::error::{Error, Result};
use crate::ino::Ino;
use crate::name;
use crate::namespace::{self, Ns};
use std::ffi::{OsStr, OsString};
use std::sync::Arc;
use std::sync::atomic::Ordering;

impl Sections {
    pub(super) fn by_name(&self, ns: Ns, name: &OsStr) -> Result<Arc<Section>> {
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

    pub(super) fn unlinked(&self, id: u64) {
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

    /// Removes the name of a `lifetime=handles` section that has no handle left. Views
    /// that still map it keep its bytes (the unlink path), which go with the last of them.
    pub(super) fn vanish(&self, id: u64) {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::testing::*;

    #[test]
    fn unlink_keeps_open_handles_working() {
        let (_tmp, m) = fresh();
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
    fn lifetime_handles_names_go_with_the_last_handle() {
        let (_tmp, m) = fresh();
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
}
