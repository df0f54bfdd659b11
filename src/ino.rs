//! The one inode-number encoding: every number the kernel sees is made and read here.
//!
//! ```text
//! 1                         the root (FUSE's root id)
//! id, 2 ..= 2^62-1          a section: its store id, so stable across restarts
//! id | 1<<62                that section's sidecar, NAME.meta
//! 1<<63 | uid               a user's namespace directory, Sessions/UID
//! 1<<63 | 1<<40 | 1, 2, 3   the Global link, the Local link, the Sessions directory
//! ```
//! The kernel keys its dentry and page caches by these numbers, so none of them may
//! change meaning while mounted, and a section's may not across restarts (a view or an
//! open handle outlives a lookup). Numbers outside the table decode to nothing.

use crate::namespace::Ns;

/// What an inode number names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ino {
    Root,
    /// A section, by store id.
    Section(u64),
    /// The sidecar (`NAME.meta`) of the section with this store id.
    Sidecar(u64),
    /// The `Global` link at the root (to the root itself).
    Global,
    /// The `Local` link at the root (to the caller's own `Sessions/UID`).
    Local,
    /// The `Sessions` directory.
    Sessions,
    /// A user's namespace directory, `Sessions/UID`.
    UserDir(u32),
}

const ROOT: u64 = 1;
/// Set in a sidecar's number; never in a section id.
const SIDECAR_BIT: u64 = 1 << 62;
/// Set in the number of every namespace directory and link; never in a section's or a
/// sidecar's.
const NS_BIT: u64 = 1 << 63;
/// The links and `Sessions` sit above every user directory's number (uids are 32-bit).
const LINKS: u64 = NS_BIT | 1 << 40;

/// The first store id (ids 0 and 1 are never sections: 1 is the root).
pub const FIRST_SECTION: u64 = 2;
/// The largest store id: numbers above it carry the sidecar bit.
pub const MAX_SECTION: u64 = SIDECAR_BIT - 1;

impl Ino {
    /// What number `n` names, if anything.
    pub fn decode(n: u64) -> Option<Ino> {
        let section = |id| (FIRST_SECTION..=MAX_SECTION).contains(&id).then_some(id);
        if n == ROOT {
            Some(Ino::Root)
        } else if n & NS_BIT != 0 {
            match n {
                n if n & !NS_BIT <= u64::from(u32::MAX) => Some(Ino::UserDir(n as u32)),
                n if n == LINKS | 1 => Some(Ino::Global),
                n if n == LINKS | 2 => Some(Ino::Local),
                n if n == LINKS | 3 => Some(Ino::Sessions),
                _ => None,
            }
        } else if n & SIDECAR_BIT != 0 {
            section(n & !SIDECAR_BIT).map(Ino::Sidecar)
        } else {
            section(n).map(Ino::Section)
        }
    }

    /// The number the kernel sees.
    pub fn number(self) -> u64 {
        match self {
            Ino::Root => ROOT,
            Ino::Section(id) => id,
            Ino::Sidecar(id) => id | SIDECAR_BIT,
            Ino::Global => LINKS | 1,
            Ino::Local => LINKS | 2,
            Ino::Sessions => LINKS | 3,
            Ino::UserDir(uid) => NS_BIT | u64::from(uid),
        }
    }

    /// The directory that holds namespace `ns`'s names.
    pub fn dir_of(ns: Ns) -> Ino {
        match ns {
            None => Ino::Root,
            Some(uid) => Ino::UserDir(uid),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_round_trips_and_the_numbers_stay_put() {
        let all = [
            (Ino::Root, 1),
            (Ino::Section(FIRST_SECTION), 2),
            (Ino::Section(MAX_SECTION), (1 << 62) - 1),
            (Ino::Sidecar(2), 2 | 1 << 62),
            (Ino::Sidecar(MAX_SECTION), u64::MAX >> 1),
            (Ino::Global, 1 << 63 | 1 << 40 | 1),
            (Ino::Local, 1 << 63 | 1 << 40 | 2),
            (Ino::Sessions, 1 << 63 | 1 << 40 | 3),
            (Ino::UserDir(0), 1 << 63),
            (Ino::UserDir(u32::MAX), 1 << 63 | u64::from(u32::MAX)),
        ];
        for (ino, n) in all {
            assert_eq!(ino.number(), n, "{ino:?}");
            assert_eq!(Ino::decode(n), Some(ino), "{n:#x}");
        }
        for n in [0, 1 << 62, 1 << 62 | 1, 1 << 63 | 1 << 40, u64::MAX] {
            assert_eq!(Ino::decode(n), None, "{n:#x}");
        }
        assert_eq!(Ino::dir_of(None), Ino::Root);
        assert_eq!(Ino::dir_of(Some(7)), Ino::UserDir(7));
    }
}
