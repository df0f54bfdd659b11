//! The one error type of the model and the store, and the one place that turns it into an
//! errno. Nothing else in the crate picks errnos.

use std::fmt;
use std::io;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Why an operation on sections was refused or failed.
#[derive(Debug)]
pub enum Error {
    /// No section (or sidecar) by that name or inode.
    NotFound,
    /// `O_CREAT|O_EXCL` (or a create) on a name that exists.
    Exists,
    /// A name the contract refuses: empty, `.`/`..`, a `/`, a NUL, a backslash, or a name
    /// ending in `.meta`.
    InvalidName,
    /// A name longer than [`crate::name::MAX_NAME_LEN`] bytes.
    NameTooLong,
    /// A shrink (a smaller size, or `O_TRUNC` on a non-empty section) while another handle
    /// or a view of the section exists, or while that cannot be known in time.
    Busy,
    /// A size or offset beyond what a section may hold.
    TooBig,
    /// The store cannot hold the growth (eager commit) or the write.
    NoSpace,
    /// The growth would take the owner's sections past `-o user_quota`.
    QuotaExceeded,
    /// An operation this filesystem does not offer (mkdir, links, device nodes, ...).
    NotSupported,
    /// A section over a file whose path reaches where the daemon never looks on a
    /// caller's behalf (a FUSE filesystem, this mount included; /proc; sysfs, ...).
    OutOfReach(&'static str),
    /// The sidecar and its attributes are read-only.
    ReadOnly,
    /// The caller may not do this to a section it does not own.
    NotOwner,
    /// A flag or argument this filesystem does not take (RENAME_EXCHANGE, RENAME_WHITEOUT).
    InvalidArgument,
    /// A mode of fallocate that would take storage away (PUNCH_HOLE, ZERO_RANGE, ...).
    ModeNotSupported,
    /// A directory operation on something that is not a directory (only the root is one).
    NotADirectory,
    /// Setting an extended attribute other than ours.
    XattrNotSupported,
    /// An extended attribute that does not exist.
    NoAttr,
    /// An ioctl: a section is not a device (Python and others probe every file with TCGETS).
    NoIoctl,
    /// A value that does not fit the caller's buffer.
    Range,
    /// A handle or inode the kernel should not have sent (a stale handle).
    BadHandle,
    /// The kernel's cached entry names a section that is gone (its file was removed from
    /// the store behind the daemon's back; the name is dropped).
    Stale,
    /// What the daemon met while acting as the caller, with the caller's rights, on a
    /// path the caller named (`ln -s PATH NAME`): the caller's own EACCES, ENOENT, ELOOP.
    /// A refusal, not a fault of the daemon's.
    AsCaller(io::Error),
    /// Anything the store's filesystem reported.
    Io(io::Error),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// The errno the caller sees. Keep this the only mapping.
    pub fn errno(&self) -> i32 {
        match self {
            Error::NotFound => libc::ENOENT,
            Error::Exists => libc::EEXIST,
            // The Windows name rules (backslash, reserved suffix) are ERROR_INVALID_NAME,
            // which POSIX spells EINVAL.
            Error::InvalidName => libc::EINVAL,
            Error::NameTooLong => libc::ENAMETOOLONG,
            // A shrink is refused only while something else may use the bytes it would cut
            // (Windows: ERROR_USER_MAPPED_FILE); EBUSY says "not now", not "never", as the
            // sole holder may shrink.
            Error::Busy => libc::EBUSY,
            Error::TooBig => libc::EFBIG,
            Error::NoSpace => libc::ENOSPC,
            // Not EDQUOT: to its owner a capped store is a full one, and programs (and the
            // contract, like SEC_COMMIT's ERROR_DISK_FULL) handle ENOSPC.
            Error::QuotaExceeded => libc::ENOSPC,
            // EPERM, as for mkdir/link on a filesystem that does not offer them (vfat, procfs).
            Error::NotSupported => libc::EPERM,
            // The spec's answer for a link among sections, extended to every path the
            // daemon will not resolve for a caller: not offered, whatever the caller's rights.
            Error::OutOfReach(_) => libc::EPERM,
            // The sidecar is a view of state, like a file in /proc: writing it is EACCES.
            Error::ReadOnly => libc::EACCES,
            Error::NotOwner => libc::EPERM,
            Error::InvalidArgument => libc::EINVAL,
            // fallocate(2)'s own answer for "mode not supported by the filesystem", and the
            // kernel's for the modes it never sends (COLLAPSE_RANGE, INSERT_RANGE): tools
            // (fallocate(1), qemu, cp) take it as "not here" and fall back.
            Error::ModeNotSupported => libc::EOPNOTSUPP,
            Error::NotADirectory => libc::ENOTDIR,
            Error::XattrNotSupported => libc::EOPNOTSUPP,
            Error::NoAttr => libc::ENODATA,
            Error::NoIoctl => libc::ENOTTY,
            Error::Range => libc::ERANGE,
            Error::BadHandle => libc::EBADF,
            // The VFS retries an ESTALE path operation once with a fresh lookup, which
            // finds no such name: the caller sees ENOENT, or O_CREAT makes it anew.
            Error::Stale => libc::ESTALE,
            Error::AsCaller(e) | Error::Io(e) => match e.raw_os_error() {
                Some(libc::ENOSPC) | Some(libc::EDQUOT) => libc::ENOSPC,
                Some(n) if n > 0 => n,
                _ => libc::EIO,
            },
        }
    }

    /// True for refusals of bad input (logged at debug), false for faults (logged at warn).
    pub fn is_refusal(&self) -> bool {
        !matches!(self, Error::Io(_) | Error::BadHandle)
    }

    /// The same error, as met while acting for the caller: a store I/O error becomes the
    /// caller's own refusal.
    pub fn as_caller(self) -> Error {
        match self {
            Error::Io(e) => Error::AsCaller(e),
            e => e,
        }
    }

    /// True for the store's "no such file" (a section's file removed from the store).
    pub fn is_gone(&self) -> bool {
        matches!(self, Error::Io(e) if e.kind() == io::ErrorKind::NotFound)
    }
}

/// How many warnings may be logged in one [`WARN_WINDOW`] before the rest are counted
/// instead: what callers can cause must not make the daemon write its log without bound.
const WARN_BURST: u32 = 20;
const WARN_WINDOW: Duration = Duration::from_secs(60);

struct WarnBudget {
    since: Option<Instant>,
    used: u32,
    suppressed: u64,
}

static WARN_BUDGET: Mutex<WarnBudget> = Mutex::new(WarnBudget {
    since: None,
    used: 0,
    suppressed: 0,
});

/// Logs a fault at warn, unless `WARN_BURST` warnings were logged in the last
/// `WARN_WINDOW`; what was held back is counted and said with the next window's first.
/// Every warning a request can cause goes through here.
pub fn warn_limited(args: fmt::Arguments<'_>) {
    if !log::log_enabled!(log::Level::Warn) {
        return;
    }
    let mut b = WARN_BUDGET.lock().unwrap_or_else(|p| p.into_inner());
    let now = Instant::now();
    if b.since.is_none_or(|s| now.duration_since(s) >= WARN_WINDOW) {
        if b.suppressed > 0 {
            log::warn!(
                "{} more warnings were not logged (rate limit)",
                b.suppressed
            );
        }
        *b = WarnBudget {
            since: Some(now),
            used: 0,
            suppressed: 0,
        };
    }
    if b.used < WARN_BURST {
        b.used += 1;
        drop(b);
        log::warn!("{args}");
    } else {
        b.suppressed += 1;
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        match e.raw_os_error() {
            Some(libc::ENOSPC) | Some(libc::EDQUOT) => Error::NoSpace,
            Some(libc::EFBIG) => Error::TooBig,
            _ => Error::Io(e),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self {
            Error::NotFound => "no such section",
            Error::Exists => "section exists",
            Error::InvalidName => "invalid section name",
            Error::NameTooLong => "section name too long",
            Error::Busy => "cannot shrink: another handle or a view of the section exists",
            Error::TooBig => "size beyond the maximum",
            Error::NoSpace => "the store is full",
            Error::QuotaExceeded => "the owner's user_quota is used up",
            Error::NotSupported => "operation not offered by sectionfs",
            Error::OutOfReach(what) => return write!(f, "target path reaches {what}"),
            Error::ReadOnly => "read-only",
            Error::NotOwner => "not the section's owner",
            Error::InvalidArgument => "argument not supported",
            Error::ModeNotSupported => "fallocate mode not supported",
            Error::NotADirectory => "not a directory",
            Error::XattrNotSupported => "only user.sectionfs.* attributes exist",
            Error::NoAttr => "no such attribute",
            Error::NoIoctl => "no ioctls on sections",
            Error::Range => "value larger than the buffer",
            Error::BadHandle => "stale handle",
            Error::Stale => "section lost from the store",
            Error::AsCaller(e) => return write!(f, "as the caller: {e}"),
            Error::Io(e) => return write!(f, "store I/O: {e}"),
        };
        f.write_str(what)
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_keep_their_errno() {
        let e: Error = io::Error::from_raw_os_error(libc::EACCES).into();
        assert_eq!(e.errno(), libc::EACCES);
        let e: Error = io::Error::from_raw_os_error(libc::ENOSPC).into();
        assert!(matches!(e, Error::NoSpace));
        assert_eq!(Error::Io(io::Error::other("x")).errno(), libc::EIO);
    }
}
