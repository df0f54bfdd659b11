//! Opening a file the way another user would: the daemon runs as root, so a section over
//! an existing file (`ln -s /path NAME`) must not reach a file its creator could not.
//! The calling thread takes the caller's filesystem uid, gid and supplementary groups for
//! the one open, then goes back. All three are per thread on Linux at the syscall level
//! (glibc's `setgroups` would change every thread; the raw syscall does not), so the other
//! workers keep serving as root meanwhile.

use crate::error::{Error, Result};
use std::ffi::CString;
use std::fs::File;
use std::os::fd::FromRawFd;
use std::os::unix::ffi::OsStrExt;
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

/// Switches the calling thread's filesystem identity; switches back on drop.
struct AsUser {
    groups: Vec<libc::gid_t>,
}

impl AsUser {
    fn enter(who: &Identity) -> Result<AsUser> {
        let saved = thread_groups()?;
        set_thread_groups(&who.groups)?;
        // SAFETY: setfsgid/setfsuid only change this thread's filesystem ids.
        unsafe {
            libc::setfsgid(who.gid);
            libc::setfsuid(who.uid);
        }
        // Both calls return the previous id, never an error: check that they took.
        // SAFETY: an invalid id (-1) changes nothing and returns the current one.
        let (fsuid, fsgid) = unsafe { (libc::setfsuid(u32::MAX), libc::setfsgid(u32::MAX)) };
        let guard = AsUser { groups: saved };
        if fsuid as u32 != who.uid || fsgid as u32 != who.gid {
            return Err(Error::Io(std::io::Error::from_raw_os_error(libc::EPERM)));
        }
        Ok(guard)
    }
}

impl Drop for AsUser {
    fn drop(&mut self) {
        // SAFETY: as in enter; the daemon's own ids are its effective ones.
        unsafe {
            libc::setfsuid(libc::geteuid());
            libc::setfsgid(libc::getegid());
        }
        if let Err(e) = set_thread_groups(&self.groups) {
            log::error!("cannot restore the worker's groups: {e}");
        }
    }
}

fn thread_groups() -> Result<Vec<libc::gid_t>> {
    // SAFETY: a zero size asks for the count only.
    let n = unsafe { libc::getgroups(0, std::ptr::null_mut()) };
    if n < 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    let mut groups = vec![0; n as usize];
    // SAFETY: the buffer holds n entries.
    let n = unsafe { libc::getgroups(n, groups.as_mut_ptr()) };
    if n < 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    groups.truncate(n as usize);
    Ok(groups)
}

fn set_thread_groups(groups: &[libc::gid_t]) -> Result<()> {
    // SAFETY: the raw syscall changes this thread only; the list is valid for its length.
    let rc = unsafe { libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    Ok(())
}

/// Opens `path` with `who`'s rights: read-write if they may write it, else read-only
/// (the `bool` says which). Only a regular file is accepted (`InvalidArgument`); what they
/// may not read is `EACCES`, as the open gave it.
pub fn open_as(who: &Identity, path: &Path) -> Result<(File, bool)> {
    let c = CString::new(path.as_os_str().as_bytes()).map_err(|_| Error::InvalidArgument)?;
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    // An unprivileged daemon cannot take another identity: it serves only its own user.
    if !root && who.uid != unsafe { libc::geteuid() } {
        return Err(Error::Io(std::io::Error::from_raw_os_error(libc::EACCES)));
    }
    let _as_user = if root {
        Some(AsUser::enter(who)?)
    } else {
        None
    };
    // Look before opening: opening a fifo or a device could block or act on it.
    // SAFETY: zeroed stat is a valid out-buffer; the path is NUL-terminated.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::stat(c.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Err(Error::InvalidArgument);
    }
    let base = libc::O_CLOEXEC | libc::O_NOCTTY | libc::O_NONBLOCK;
    let open = |flags| {
        // SAFETY: NUL-terminated path.
        let fd = unsafe { libc::open(c.as_ptr(), base | flags) };
        if fd < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            // SAFETY: fd was just returned by open and is owned by nobody else.
            Ok(unsafe { File::from_raw_fd(fd) })
        }
    };
    let (file, writable) = match open(libc::O_RDWR) {
        Ok(f) => (f, true),
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EACCES | libc::EROFS | libc::EPERM)
            ) =>
        {
            (open(libc::O_RDONLY)?, false)
        }
        Err(e) => return Err(e.into()),
    };
    // The path may have been swapped between the look and the open.
    if !file.metadata()?.is_file() {
        return Err(Error::InvalidArgument);
    }
    Ok((file, writable))
}
