//! The shrink rule: who may cut a section, and how long a shrink waits for other handles
//! to go (DESIGN.md, "Sizes"). Growth is `section.rs`'s.

use super::Sections;
use super::section::{Section, SectionState};
use crate::contract::IoMode;
use crate::error::{Error, Result};
use std::sync::MutexGuard;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// How long a shrink waits for other handles to go before it answers EBUSY. close(2)
/// returns before the kernel's RELEASE reaches the daemon, so a handle just closed (a
/// SQLite process that lost the race to recover a `-shm` and closed it) is still counted
/// for a moment; this covers that moment, not a holder that keeps its handle.
pub(super) const SHRINK_WAIT: Duration = Duration::from_millis(300);

impl Sections {
    /// The shrink rule: a section may be cut only while nothing but the caller could be
    /// using the bytes it would lose, so that no view ever faults because another process
    /// cut the section (Windows refuses `SetEndOfFile` on a mapped file, and allows it once
    /// no mapping is left). That is: no handle but the caller's `own` (0 or 1), waiting up
    /// to [`SHRINK_WAIT`] for handles being released, and, in passthrough mode, no view in
    /// another process (a passthrough view outlives its handles; a cached one holds its
    /// handle until munmap, so the count covers it). `pid` is the caller's process, whose
    /// own views are its own business. Returns the state lock, held from the check through
    /// the caller's truncate so that no handle can appear in between; `Error::Busy` else.
    pub(super) fn shrink_guard<'a>(
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::testing::*;
    use std::time::Duration;

    #[test]
    fn sizes_grow_and_shrink_only_for_the_sole_holder() {
        let (_tmp, m) = fresh();
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
}
