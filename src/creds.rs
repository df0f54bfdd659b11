//! Opening a file the way another user would: the daemon runs as root, so a section over
//! an existing file (`ln -s /path NAME`) must not reach a file its creator could not.
//! The calling thread takes the caller's filesystem uid, gid and supplementary groups for
//! the walk of the path (`resolve.rs`) and the open, then goes back. All three are per thread on Linux at the syscall level
//! (glibc's `setgroups` would change every thread; the raw syscall does not), so the other
//! workers keep serving as root meanwhile.

use crate::error::{Error, Result};
use crate::resolve;
use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd};
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
        let Some((name, gid)) = passwd_entry(uid) else {
            return Identity {
                uid,
                gid: NO_GROUP,
                groups: Vec::new(),
            };
        };
        let mut groups: Vec<libc::gid_t> = vec![0; 64];
        loop {
            let mut n = groups.len() as libc::c_int;
            // SAFETY: the buffer holds n entries; getgrouplist writes at most n and sets n
            // to the number it needs when that is more (returning -1).
            let rc = unsafe { libc::getgrouplist(name.as_ptr(), gid, groups.as_mut_ptr(), &mut n) };
            if rc >= 0 {
                groups.truncate(n.max(0) as usize);
                break;
            }
            if n as usize <= groups.len() || groups.len() >= 65536 {
                // No larger size asked for: fewer rights, never more.
                groups = vec![gid];
                break;
            }
            groups = vec![0; n as usize];
        }
        Identity { uid, gid, groups }
    }
}

/// The login name and primary gid of `uid`, or `None` if the user database has no entry.
fn passwd_entry(uid: u32) -> Option<(CString, u32)> {
    let mut buf: Vec<libc::c_char> = vec![0; 1024];
    loop {
        // SAFETY: zeroed passwd is a valid out-buffer.
        let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
        let mut found: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the given sizes; strings land in buf.
        let rc = unsafe { libc::getpwuid_r(uid, &mut pw, buf.as_mut_ptr(), buf.len(), &mut found) };
        if rc == libc::ERANGE && buf.len() < 1 << 20 {
            buf = vec![0; buf.len() * 4];
            continue;
        }
        if rc != 0 || found.is_null() || pw.pw_name.is_null() {
            return None;
        }
        // SAFETY: pw_name points into buf, NUL-terminated by getpwuid_r.
        let name = unsafe { std::ffi::CStr::from_ptr(pw.pw_name) }.to_owned();
        return Some((name, pw.pw_gid));
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
/// (the `bool` says which). The path is walked by [`resolve::regular_file`] as `who`, so
/// it reaches exactly what `who` could open and never this mount, another FUSE mount or a
/// magic link (`OutOfReach`, EPERM). Only a regular file is accepted (`InvalidArgument`);
/// what they may not read is `EACCES`, as the open gave it.
pub fn open_as(who: &Identity, path: &Path) -> Result<(File, bool)> {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
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
    let proc_path = CString::new(format!("/proc/self/fd/{}", found.as_raw_fd()))
        .map_err(|_| Error::InvalidArgument)?;
    let base = libc::O_CLOEXEC | libc::O_NOCTTY | libc::O_NONBLOCK;
    let open = |flags| {
        // SAFETY: NUL-terminated path.
        let fd = unsafe { libc::open(proc_path.as_ptr(), base | flags) };
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
