//! One section: its state behind one lock, what the store says of it (`stat`, its open
//! file), the `user_quota` count, and growth, which happens in one place ([`Sections::grow`]).

use super::{Sections, lock};
use crate::contract::{Commit, Status};
use crate::error::{Error, Result};
use crate::quota;
use crate::store::Record;
use std::collections::HashMap;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Condvar, Mutex};

pub(super) struct Section {
    pub(super) id: u64,
    /// Fixed at creation.
    pub(super) commit: Commit,
    /// Everything that changes about the section. Taken after `names` (never before it),
    /// and held across this section's own store I/O: `fstat`, truncate, growth (so that
    /// growths and the shrink rule's check-then-cut are serialized), record writes, and
    /// the detach hook (which may unregister a passthrough backing). A shrink may wait on
    /// `released` (up to 300 ms, releasing the lock; never under `names`) and for the views
    /// scan (up to 2 s, holding it; under `names` too when an open-or-create of an existing
    /// name carries `O_TRUNC` in passthrough mode).
    pub(super) state: Mutex<SectionState>,
    /// Signalled (with `state`) when a handle is released: a shrink waits on it.
    pub(super) released: Condvar,
}

pub(super) struct SectionState {
    pub(super) record: Record,
    /// False once unlinked (or replaced by a rename): the name is gone, handles live on.
    pub(super) linked: bool,
    /// Entries the kernel holds (lookup/create replies minus forgets).
    pub(super) lookups: u64,
    /// The backing file, open while any handle is; no fd is held for an idle section.
    pub(super) file: Option<Arc<File>>,
    pub(super) handles: u32,
    /// The most recent open's answer, by anyone.
    pub(super) last_status: Status,
    /// Per process (thread group) holding handles: its most recent answer and how many
    /// handles it holds. Entries go when their last handle is released.
    pub(super) by_process: HashMap<u32, (Status, u32)>,
    /// The size counted against `record.uid` under `-o user_quota` (always 0 without one):
    /// the size last seen while the section holds storage, 0 once unlinked and closed.
    pub(super) counted: u64,
}

impl Section {
    pub(super) fn new(id: u64, state: SectionState) -> Section {
        Section {
            id,
            commit: state.record.commit,
            state: Mutex::new(state),
            released: Condvar::new(),
        }
    }
}

impl SectionState {
    /// A section over a file its creator could only read.
    pub(super) fn read_only(&self) -> bool {
        matches!(&self.record.backing, Some(b) if !b.writable)
    }

    pub(super) fn new(record: Record, last_status: Status, lookups: u64) -> SectionState {
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

impl Sections {
    pub(super) fn section(&self, ino: u64) -> Result<Arc<Section>> {
        self.inodes
            .get(&ino)
            .map(|s| Arc::clone(&s))
            .ok_or(Error::NotFound)
    }

    /// Forgets an unlinked section once the kernel holds nothing of it, and tells the
    /// detach hook once no open can reach the section's attachment (see [`DetachHook`]).
    /// Called at every change of `handles`, `linked` or `lookups` toward zero.
    pub(super) fn drop_if_gone(&self, section: &Section, st: &SectionState) {
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

    /// Stats the backing file: through the open file if there is one (no path walk), by
    /// name otherwise. Under the section's lock, so that no size is seen before the resize
    /// hook was told of it (see [`ResizeHook`](super::ResizeHook)).
    pub(super) fn stat(&self, section: &Section) -> Result<libc::stat> {
        let stat = {
            let st = lock(&section.state);
            match &st.file {
                Some(file) => fstat(file),
                None if st.linked => self.store.stat(section.id).map_err(Error::from),
                None => return Err(Error::NotFound),
            }
        };
        // `gone` takes `names`, earlier in the lock order than the state lock.
        stat.map_err(|e| self.gone(section.id, e))
    }

    /// The section's backing file: the one its handles share, else opened for this call.
    /// An unlinked section with no handle has nothing left to open.
    pub(super) fn file_of(&self, section: &Section, st: &SectionState) -> Result<Arc<File>> {
        match &st.file {
            Some(f) => Ok(Arc::clone(f)),
            None if st.linked => Ok(Arc::new(self.store.open_file(section.id)?)),
            None => Err(Error::NotFound),
        }
    }

    /// The one way a section grows, called with its state lock held (which serializes
    /// the growths of one section): count `end` against the owner's quota (ENOSPC, nothing
    /// changed, past `user_quota`), then run `step`, which grows the store file from
    /// `size`; if it fails, count what the file holds now, so a refused growth leaves the
    /// count as it leaves the size. `size` is the file's size, read under the same lock.
    /// The caller tells the resize hook once the size has moved, still under the lock.
    pub(super) fn grow<T>(
        &self,
        st: &mut SectionState,
        file: &File,
        size: u64,
        end: u64,
        step: impl FnOnce() -> Result<T>,
    ) -> Result<T> {
        if end > size {
            self.account(st, size);
            self.charge(st, end)?;
        }
        step().inspect_err(|_| {
            let now = fstat(file).map(|s| s.st_size as u64).unwrap_or(size);
            self.account(st, now);
        })
    }

    /// Keeps `user_quota`'s count of a section right: `size` while it holds storage
    /// (linked, or open), nothing after.
    pub(super) fn account(&self, st: &mut SectionState, size: u64) {
        // A section over a file holds no storage of the store: its bytes are the file's.
        let holds = (st.linked || st.handles > 0) && st.record.backing.is_none();
        let bytes = if holds { quota::footprint(size) } else { 0 };
        let uid = st.record.uid;
        self.quota.recount(uid, &mut st.counted, bytes);
    }

    /// Counts a growth to `size` against the owner's quota before it happens: ENOSPC,
    /// with nothing changed, when that would pass `user_quota`.
    pub(super) fn charge(&self, st: &mut SectionState, size: u64) -> Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::testing::*;

    #[test]
    fn a_growth_the_store_refuses_gives_its_quota_back() {
        let tmp = tempfile::tempdir().unwrap();
        let m = model_with_quota(tmp.path(), Commit::Eager, 1 << 20);
        let (attr, h) = m.create(A, os("s"), 0o600, 0, libc::O_RDWR).unwrap();
        let section = m.section(attr.ino).unwrap();
        let mut st = lock(&section.state);
        let enospc =
            || -> Result<()> { Err(std::io::Error::from_raw_os_error(libc::ENOSPC).into()) };
        assert!(m.grow(&mut st, &h.file, 0, 65_536, enospc).is_err());
        assert_eq!(m.quota_used(A.uid), 4096);
        // Past the quota: refused before the store is asked.
        let asked = std::cell::Cell::new(false);
        let step = || -> Result<()> {
            asked.set(true);
            Ok(())
        };
        assert!(matches!(
            m.grow(&mut st, &h.file, 0, 2 << 20, step),
            Err(Error::QuotaExceeded)
        ));
        assert!(!asked.get());
        assert_eq!(m.quota_used(A.uid), 4096);
        drop(st);
        m.release(h.fh).unwrap();
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
