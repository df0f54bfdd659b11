//! How the adapter answers: the TTLs the kernel may cache an answer for, model types as
//! fuser's, and the one helper that logs a failed request and gives its errno.

use crate::error::Error;
use crate::ino::Ino;
use crate::model::{Attr, Caller, Kind};
use fuser::{Errno, FileAttr, FileType, INodeNo, ReplyXattr, Request, TimeOrNow};
use std::time::{Duration, SystemTime};

/// How long the kernel may keep a section's entry and attributes. Every change to a
/// section passes through this one kernel mount (sizes grow by setattr or by writes the
/// kernel itself tracks; names change by its create, unlink and rename), so the kernel's
/// copy stays right without asking us. Only times and block counts that mapped writes move
/// in the store go stale. Long, because an expired entry costs an open two extra round
/// trips (LOOKUP, then GETATTR for the permission check).
pub(super) const SECTION_TTL: Duration = Duration::from_secs(3600);
/// Sidecars change behind the kernel's back (status, handles, size): never cache them.
pub(super) const SIDECAR_TTL: Duration = Duration::ZERO;
/// How long the kernel may remember that a section name is absent. A section appears only
/// through this mount, whose create replaces the negative entry. Never for `NAME.meta`:
/// that name appears when `NAME` is created, which the kernel cannot connect to it.
pub(super) const NEGATIVE_TTL: Duration = SECTION_TTL;

pub(super) fn caller(req: &Request) -> Caller {
    Caller {
        uid: req.uid(),
        gid: req.gid(),
        pid: req.pid(),
    }
}

/// Logs a failed request once (refusals at debug, faults at warn) and gives its errno.
/// A missing name or attribute is an answer, not a refusal: the kernel asks for names
/// before every create and for security.* attributes before every write, so those stay
/// quiet.
pub(super) fn errno(op: &str, what: &dyn std::fmt::Debug, e: &Error) -> Errno {
    let n = e.errno();
    match e {
        Error::NotFound | Error::NoAttr => {}
        e if e.is_refusal() => log::debug!("{op} {what:?}: {e} (errno {n})"),
        e => crate::error::warn_limited(format_args!("{op} {what:?}: {e} (errno {n})")),
    }
    Errno::from_i32(n)
}

/// An inode as a log line shows it: by name, with its number.
pub(super) struct Inode(pub(super) u64, pub(super) Option<std::ffi::OsString>);

impl std::fmt::Debug for Inode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.1 {
            Some(name) => write!(f, "{name:?} (inode {})", self.0),
            None => write!(f, "inode {}", self.0),
        }
    }
}

pub(super) fn file_attr(a: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(a.ino),
        size: a.size,
        blocks: a.blocks,
        atime: a.atime,
        mtime: a.mtime,
        ctime: a.ctime,
        crtime: a.ctime,
        kind: file_type(a.kind),
        perm: a.perm,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

pub(super) fn file_type(kind: Kind) -> FileType {
    match kind {
        Kind::Directory => FileType::Directory,
        Kind::File => FileType::RegularFile,
        Kind::Symlink => FileType::Symlink,
    }
}

/// The attributes of a negative entry: only the inode number (0) is read.
pub(super) fn absent() -> FileAttr {
    FileAttr {
        ino: INodeNo(0),
        size: 0,
        blocks: 0,
        atime: SystemTime::UNIX_EPOCH,
        mtime: SystemTime::UNIX_EPOCH,
        ctime: SystemTime::UNIX_EPOCH,
        crtime: SystemTime::UNIX_EPOCH,
        kind: FileType::RegularFile,
        perm: 0,
        nlink: 0,
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

pub(super) fn ttl(ino: u64) -> Duration {
    // `Local`'s size is the length of the caller's own target.
    if matches!(Ino::decode(ino), Some(Ino::Sidecar(_) | Ino::Local)) {
        SIDECAR_TTL
    } else {
        SECTION_TTL
    }
}

pub(super) fn system_time(t: TimeOrNow) -> Option<SystemTime> {
    match t {
        TimeOrNow::SpecificTime(t) => Some(t),
        TimeOrNow::Now => None,
    }
}

pub(super) fn reply_xattr(reply: ReplyXattr, value: &[u8], size: u32) {
    if size == 0 {
        reply.size(value.len() as u32);
    } else if value.len() > size as usize {
        reply.error(Errno::from_i32(Error::Range.errno()));
    } else {
        reply.data(value);
    }
}
