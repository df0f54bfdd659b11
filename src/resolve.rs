//! Resolving the path of `ln -s /path NAME` one component at a time, instead of letting
//! the kernel follow it for the daemon.
//!
//! Two things the kernel's own walk would do for a root daemon are wrong here:
//! - A path into a FUSE filesystem makes the kernel ask that filesystem's daemon. For this
//!   very mount it asks us while the SYMLINK being answered holds the parent directory's
//!   lock: the worker waits on itself forever (D state; only a fusectl abort frees it). For
//!   another FUSE mount, its daemon (any user's) decides how long we wait.
//! - A magic link (`/proc/self/fd/N`, `/proc/self/cwd`, `/dev/fd/N`, `/dev/stdin`, ...)
//!   resolves in the daemon's context, not the caller's: the daemon's own files.
//!
//! So every object the walk reaches is first placed by its mount (`statx` with an empty
//! mask: the VFS fills in the mount id and asks the filesystem nothing, FUSE included), and
//! the walk stops before looking anything up in, reading a link on, or opening a file of a
//! FUSE filesystem, /proc, or another kernel interface filesystem. Symlinks are followed
//! by reading their text, with the kernel's rules: 40 links at most (ELOOP), `..` by the
//! kernel from the directory reached, `fs.protected_symlinks` and `nosymfollow` honoured.
//! The caller's credentials are the thread's during the walk (see `creds.rs`), so every
//! lookup is checked as the caller.

use crate::error::{Error, Result};
use nix::fcntl::{AT_FDCWD, OFlag, openat, readlinkat};
use nix::sys::stat::Mode;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;

/// The kernel's MAXSYMLINKS: more links than this in one resolution is ELOOP.
const MAX_LINKS: u32 = 40;

/// Resolves `path` (absolute) with the calling thread's credentials to an `O_PATH` fd of
/// a regular file. `follower` is the thread's filesystem uid (for `protected_symlinks`).
/// A path that reaches a refused filesystem is [`Error::OutOfReach`]; a final object that
/// is not a regular file is `InvalidArgument`; the rest is the errno a lookup gave.
pub fn regular_file(path: &Path, follower: u32) -> Result<OwnedFd> {
    let text = path.as_os_str().as_bytes();
    if text.first() != Some(&b'/') {
        return Err(Error::NotSupported);
    }
    let mut walk = Walk {
        mounts: Mounts::default(),
        protected_symlinks: None,
    };
    let root = walk.node(open_path(libc::AT_FDCWD, b"/")?)?;
    let mut cur = root.dup()?;
    let mut pending = Vec::new();
    push_components(&mut pending, text);
    let mut links = 0;
    while let Some(comp) = pending.pop() {
        if cur.kind() != libc::S_IFDIR {
            return Err(errno(libc::ENOTDIR));
        }
        if comp == b"." {
            continue;
        }
        let next = walk.node(open_path(cur.fd.as_raw_fd(), &comp)?)?;
        if next.kind() == libc::S_IFLNK {
            links += 1;
            if links > MAX_LINKS {
                return Err(errno(libc::ELOOP));
            }
            walk.may_follow(&cur, &next, follower)?;
            let target = read_link(next.fd.as_raw_fd())?;
            if target.is_empty() {
                return Err(errno(libc::ENOENT));
            }
            push_components(&mut pending, &target);
            if target[0] == b'/' {
                cur = root.dup()?;
            }
            // Otherwise the link's text is relative to the directory holding it: `cur`.
            continue;
        }
        cur = next;
    }
    if cur.kind() != libc::S_IFREG {
        return Err(Error::InvalidArgument);
    }
    Ok(cur.fd)
}

/// Pushes `text`'s components onto the stack so that the first is popped first. A
/// trailing `/` becomes a final `.`, which only a directory passes (as in the kernel).
fn push_components(pending: &mut Vec<Vec<u8>>, text: &[u8]) {
    if text.ends_with(b"/") {
        pending.push(b".".to_vec());
    }
    for comp in text.split(|&b| b == b'/').rev() {
        if !comp.is_empty() {
            pending.push(comp.to_vec());
        }
    }
}

/// One object the walk reached, already placed on a filesystem the walk may use.
struct Node {
    fd: OwnedFd,
    st: libc::statx,
}

impl Node {
    fn kind(&self) -> u32 {
        u32::from(self.st.stx_mode) & libc::S_IFMT
    }

    fn dup(&self) -> Result<Node> {
        Ok(Node {
            fd: self.fd.try_clone()?,
            st: self.st,
        })
    }
}

struct Walk {
    mounts: Mounts,
    protected_symlinks: Option<bool>,
}

impl Walk {
    /// Places `fd` by its mount and refuses the filesystems the walk never enters; then
    /// stats it for real (on a filesystem that answers from the kernel or its own disk).
    fn node(&mut self, fd: OwnedFd) -> Result<Node> {
        // An empty mask: FUSE answers it without a request and without checking that the
        // daemon may access the mount (fuse_getattr), and the VFS adds the mount id.
        let probe = statx(fd.as_raw_fd(), 0)?;
        if probe.stx_mask & libc::STATX_MNT_ID == 0 {
            return Err(Error::OutOfReach(
                "a kernel without statx mount ids (< 5.8)",
            ));
        }
        let mount = self.mounts.get(probe.stx_mnt_id)?;
        if let Some(why) = refused(&mount.fstype) {
            return Err(Error::OutOfReach(why));
        }
        let st = statx(
            fd.as_raw_fd(),
            libc::STATX_TYPE | libc::STATX_MODE | libc::STATX_UID,
        )?;
        let need = libc::STATX_TYPE | libc::STATX_MODE | libc::STATX_UID;
        if st.stx_mask & need != need {
            return Err(errno(libc::EIO));
        }
        let mut st = st;
        st.stx_mnt_id = probe.stx_mnt_id;
        Ok(Node { fd, st })
    }

    /// The kernel's checks before following a link: `nosymfollow` on its mount (ELOOP),
    /// and `fs.protected_symlinks`: in a sticky world-writable directory only a link owned
    /// by the follower or by the directory's owner is followed (EACCES).
    fn may_follow(&mut self, dir: &Node, link: &Node, follower: u32) -> Result<()> {
        if self.mounts.get(link.st.stx_mnt_id)?.nosymfollow {
            return Err(errno(libc::ELOOP));
        }
        let protected = *self.protected_symlinks.get_or_insert_with(|| {
            std::fs::read_to_string("/proc/sys/fs/protected_symlinks")
                .map(|s| s.trim() != "0")
                // Unknown: apply the rule (fewer links followed, never more).
                .unwrap_or(true)
        });
        let sticky_shared = libc::S_ISVTX | libc::S_IWOTH;
        if protected
            && link.st.stx_uid != follower
            && u32::from(dir.st.stx_mode) & sticky_shared == sticky_shared
            && dir.st.stx_uid != link.st.stx_uid
        {
            return Err(errno(libc::EACCES));
        }
        Ok(())
    }
}

/// Why a filesystem is never entered, or `None` if the walk may use it.
fn refused(fstype: &[u8]) -> Option<&'static str> {
    if fstype == b"fuse"
        || fstype == b"fuseblk"
        || fstype.starts_with(b"fuse.")
        || fstype.starts_with(b"fuseblk.")
    {
        // This mount (directly, by a bind mount, through Global/) or any other: a lookup
        // there waits on a FUSE daemon, ours included.
        return Some("a FUSE filesystem");
    }
    match fstype {
        // Magic links: /proc/self/fd/N, /proc/PID/cwd, /proc/thread-self, ...
        b"proc" => Some("/proc"),
        // Files whose open or write acts on the kernel, with the daemon's capabilities.
        b"sysfs" | b"debugfs" | b"tracefs" | b"securityfs" | b"cgroup" | b"cgroup2"
        | b"configfs" | b"bpf" | b"pstore" | b"efivarfs" | b"fusectl" | b"binfmt_misc"
        | b"selinuxfs" | b"nsfs" | b"devpts" | b"mqueue" => Some("a kernel interface filesystem"),
        _ => None,
    }
}

#[derive(Clone)]
struct Mount {
    fstype: Vec<u8>,
    nosymfollow: bool,
}

/// The daemon's mount table by mount id, read from /proc/self/mountinfo when first
/// needed and read again for an id it does not hold (a mount made since).
#[derive(Default)]
struct Mounts {
    table: HashMap<u64, Mount>,
    fresh: bool,
}

impl Mounts {
    fn get(&mut self, id: u64) -> Result<Mount> {
        if !self.table.contains_key(&id) && !self.fresh {
            self.table = read_mountinfo()?;
            self.fresh = true;
        }
        // A mount the table does not show is one detached since the walk reached it.
        self.table
            .get(&id)
            .cloned()
            .ok_or(Error::OutOfReach("a mount no longer in the mount table"))
    }
}

fn read_mountinfo() -> Result<HashMap<u64, Mount>> {
    let text = std::fs::read("/proc/self/mountinfo")?;
    Ok(parse_mountinfo(&text))
}

/// `ID PARENT MAJ:MIN ROOT POINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER`
fn parse_mountinfo(text: &[u8]) -> HashMap<u64, Mount> {
    let mut table = HashMap::new();
    for line in text.split(|&b| b == b'\n') {
        let Some(sep) = line.windows(3).position(|w| w == b" - ") else {
            continue;
        };
        let mut fields = line[..sep].split(|&b| b == b' ');
        let id = fields
            .next()
            .and_then(|f| std::str::from_utf8(f).ok())
            .and_then(|f| f.parse::<u64>().ok());
        let options = fields.nth(4).unwrap_or_default();
        let fstype = line[sep + 3..].split(|&b| b == b' ').next();
        if let (Some(id), Some(fstype)) = (id, fstype) {
            let nosymfollow = options.split(|&b| b == b',').any(|o| o == b"nosymfollow");
            table.insert(
                id,
                Mount {
                    fstype: fstype.to_vec(),
                    nosymfollow,
                },
            );
        }
    }
    table
}

fn errno(n: i32) -> Error {
    Error::Io(io::Error::from_raw_os_error(n))
}

/// `openat(dir, name, O_PATH | O_NOFOLLOW)`: a handle on the object itself, no open of it.
fn open_path(dir: RawFd, name: &[u8]) -> Result<OwnedFd> {
    let dir = if dir == libc::AT_FDCWD {
        AT_FDCWD
    } else {
        // SAFETY: `dir` is an fd of the walk's, open for the whole call.
        unsafe { BorrowedFd::borrow_raw(dir) }
    };
    let flags = OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    // A NUL in a name cannot be sent to the kernel: nix refuses it (EINVAL).
    Ok(openat(dir, OsStr::from_bytes(name), flags, Mode::empty()).map_err(io::Error::from)?)
}

/// `statx` of the fd itself, from the caches only (`AT_STATX_DONT_SYNC`).
fn statx(fd: RawFd, mask: u32) -> Result<libc::statx> {
    // SAFETY: zeroed statx is a valid out-buffer.
    let mut st: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: empty NUL-terminated path with AT_EMPTY_PATH: the fd itself.
    let rc = unsafe {
        libc::statx(
            fd,
            c"".as_ptr(),
            libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW | libc::AT_STATX_DONT_SYNC,
            mask,
            &mut st,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error().into());
    }
    Ok(st)
}

/// The text of the symlink `fd` (an `O_PATH` fd of the link itself).
fn read_link(fd: RawFd) -> Result<Vec<u8>> {
    // SAFETY: `fd` is an fd of the walk's, open for the whole call.
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    // Empty path: the link the fd is.
    let target = readlinkat(fd, "").map_err(io::Error::from)?;
    Ok(target.into_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn mountinfo_lines_give_type_and_nosymfollow() {
        let text = b"22 1 0:21 / /proc rw,nosuid - proc proc rw\n\
                     40 22 0:40 / /mnt/s rw,nosymfollow shared:1 - fuse.sectionfs x rw\n\
                     junk\n";
        let t = parse_mountinfo(text);
        assert_eq!(t[&22].fstype, b"proc");
        assert!(!t[&22].nosymfollow);
        assert_eq!(t[&40].fstype, b"fuse.sectionfs");
        assert!(t[&40].nosymfollow);
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn refused_filesystems() {
        for t in [
            "fuse",
            "fuse.sectionfs",
            "fuseblk",
            "proc",
            "sysfs",
            "cgroup2",
        ] {
            assert!(refused(t.as_bytes()).is_some(), "{t}");
        }
        for t in ["ext4", "tmpfs", "xfs", "btrfs", "overlay", "fusefoo"] {
            assert!(refused(t.as_bytes()).is_none(), "{t}");
        }
    }

    #[test]
    fn walks_links_and_refuses_proc() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        symlink("f", dir.path().join("rel")).unwrap();
        symlink(&file, dir.path().join("abs")).unwrap();
        symlink("../", dir.path().join("up")).unwrap();
        symlink("loop", dir.path().join("loop")).unwrap();
        symlink("/proc/self/fd/0", dir.path().join("magic")).unwrap();
        let me = nix::unistd::geteuid().as_raw();
        let ok = |p: &Path| regular_file(p, me).map(|_| ());
        assert!(ok(&file).is_ok());
        assert!(ok(&dir.path().join("rel")).is_ok());
        assert!(ok(&dir.path().join("abs")).is_ok());
        let name = dir.path().file_name().unwrap();
        assert!(ok(&dir.path().join("up").join(name).join("f")).is_ok());
        let code = |p: &Path| regular_file(p, me).map(|_| ()).unwrap_err().errno();
        assert_eq!(code(&dir.path().join("loop")), libc::ELOOP);
        assert_eq!(code(&dir.path().join("f/")), libc::ENOTDIR);
        assert_eq!(code(&dir.path().join("f/x")), libc::ENOTDIR);
        assert_eq!(code(&dir.path().join("nope")), libc::ENOENT);
        assert_eq!(code(dir.path()), libc::EINVAL);
        assert_eq!(code(&dir.path().join("magic")), libc::EPERM);
        assert_eq!(code(Path::new("/proc/self/fd/0")), libc::EPERM);
        assert_eq!(code(Path::new("/dev/stdin")), libc::EPERM);
        assert_eq!(code(Path::new("relative")), libc::EPERM);
    }
}
