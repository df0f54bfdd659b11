//! Opening a file the way another user would: the daemon runs as root, so a section over
//! an existing file (`ln -s /path NAME`) must not reach a file its creator could not.
//! The calling thread takes the caller's filesystem uid, gid and supplementary groups for
//! the walk of the path (`resolve.rs`) and the open, then goes back. All three are per
//! thread on Linux at the syscall level (glibc's `setgroups` would change every thread;
//! the raw syscall does not), so the other workers keep serving as root meanwhile.

use crate::error::{Error, Result};
use crate::resolve;
use nix::unistd::{self, Gid, Uid, User};
use std::ffi::CString;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Whose rights an open uses.
#[derive(Clone, Debug)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
}

impl Identity {
    /// The caller of a request: its uid and gid as the kernel gave them, and the
    /// supplementary groups of its thread as /proc shows them (none if /proc does not
    /// say: fewer rights, never more).
    pub fn of_caller(uid: u32, gid: u32, tid: u32) -> Identity {
        let groups = std::fs::read_to_string(format!("/proc/{tid}/status"))
            .ok()
            .and_then(|s| {
                s.lines().find_map(|l| l.strip_prefix("Groups:")).map(|g| {
                    g.split_whitespace()
                        .filter_map(|n| n.parse().ok())
                        .collect()
                })
            })
            .unwrap_or_default();
        Identity { uid, gid, groups }
    }
}

/// The group of a uid the user database does not know: the kernel's overflow gid, which
/// Debian calls `nogroup`. Such a user gets no supplementary groups.
const NO_GROUP: u32 = 65534;

impl Identity {
    /// `uid` as the user database describes it now: its primary group and the groups it
    /// belongs to (getpwuid_r, getgrouplist). What a user was given at some earlier time
    /// (a recorded gid, the groups of a process long gone) grants nothing here.
    pub fn of_user(uid: u32) -> Identity {
        let Ok(Some(user)) = User::from_uid(Uid::from_raw(uid)) else {
            return Identity {
                uid,
                gid: NO_GROUP,
                groups: Vec::new(),
            };
        };
        let gid = user.gid.as_raw();
        let groups = CString::new(user.name)
            .ok()
            .and_then(|name| unistd::getgrouplist(&name, user.gid).ok())
            // Unknown: fewer rights, never more.
            .map_or_else(|| vec![gid], |g| g.into_iter().map(Gid::as_raw).collect());
        Identity { uid, gid, groups }
    }
}

/// Switches the calling thread's filesystem identity; switches back on drop.
struct AsUser {
    groups: Vec<libc::gid_t>,
}

impl AsUser {
    fn enter(who: &Identity) -> Result<AsUser> {
        let saved = unistd::getgroups().map_err(io_error)?;
        set_thread_groups(&who.groups)?;
        unistd::setfsgid(Gid::from_raw(who.gid));
        unistd::setfsuid(Uid::from_raw(who.uid));
        let guard = AsUser {
            groups: saved.into_iter().map(Gid::as_raw).collect(),
        };
        // Both calls return the previous id, never an error; an invalid id (-1) changes
        // nothing and returns the current one: check that they took.
        let fsuid = unistd::setfsuid(Uid::from_raw(u32::MAX)).as_raw();
        let fsgid = unistd::setfsgid(Gid::from_raw(u32::MAX)).as_raw();
        if fsuid != who.uid || fsgid != who.gid {
            return Err(Error::Io(std::io::Error::from_raw_os_error(libc::EPERM)));
        }
        Ok(guard)
    }
}

impl Drop for AsUser {
    fn drop(&mut self) {
        // The daemon's own ids are its effective ones.
        unistd::setfsuid(unistd::geteuid());
        unistd::setfsgid(unistd::getegid());
        if let Err(e) = set_thread_groups(&self.groups) {
            log::error!("cannot restore the worker's groups: {e}");
        }
    }
}

fn io_error(e: nix::Error) -> Error {
    Error::Io(e.into())
}

/// Sets this thread's supplementary groups. No wrapper does this: glibc's `setgroups`
/// (and nix's, which calls it) changes every thread of the process.
fn set_thread_groups(groups: &[libc::gid_t]) -> Result<()> {
    // SAFETY: the raw syscall changes this thread only; the list is valid for its length.
    let rc = unsafe { libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    Ok(())
}

/// Opens `path` with `who`'s rights: read-write if they may write it, else read-only
/// (the `bool` says which). The path is walked by [`resolve::regular_file`] as `who`, so
/// it reaches exactly what `who` could open and never this mount, another FUSE mount or a
/// magic link (`OutOfReach`, EPERM). Only a regular file is accepted (`InvalidArgument`);
/// what they may not read is `EACCES`, as the open gave it.
pub fn open_as(who: &Identity, path: &Path) -> Result<(File, bool)> {
    let euid = unistd::geteuid().as_raw();
    // An unprivileged daemon cannot take another identity: it serves only its own user.
    if euid != 0 && who.uid != euid {
        return Err(Error::Io(std::io::Error::from_raw_os_error(libc::EACCES)));
    }
    let _as_user = if euid == 0 {
        Some(AsUser::enter(who)?)
    } else {
        None
    };
    let found = resolve::regular_file(path, who.uid)?;
    // Reopen the very inode the walk found. The kernel checks the thread's (the caller's)
    // rights on this open as on any other; /proc/self/fd of our own process passes the
    // ptrace check (same thread group) whatever the fsuid. O_NONBLOCK and O_NOCTTY are
    // belts: the walk already refused anything but a regular file.
    let proc_path = format!("/proc/self/fd/{}", found.as_raw_fd());
    let open = |flags| {
        std::fs::OpenOptions::new()
            .read(true)
            .write(flags == libc::O_RDWR)
            .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK)
            .open(&proc_path)
    };
    let (file, writable) = match open(libc::O_RDWR) {
        Ok(f) => (f, true),
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EACCES | libc::EROFS | libc::EPERM | libc::ETXTBSY)
            ) =>
        {
            (open(libc::O_RDONLY)?, false)
        }
        Err(e) => return Err(e.into()),
    };
    if !file.metadata()?.is_file() {
        return Err(Error::InvalidArgument);
    }
    Ok((file, writable))
}
