//! The fuser adapter: each method translates a kernel request into a call on the model
//! ([`Sections`]) and its result into a reply. No section logic lives here; only what the
//! kernel's protocol decides: TTLs, open flags, passthrough registration.

mod invalidate;
mod passthrough;
mod reply;
pub mod uring;

pub use invalidate::invalidate_kernel_caches;

use crate::cli::Switch;
use crate::contract::{LIFETIME_XATTR, XATTR_PREFIX};
use crate::error::Error;
use crate::ino::Ino;
use crate::model::{AttrChange, Sections};
use crate::name;
use dashmap::DashMap;
use fuser::{
    Errno, FileHandle, FileType, FopenFlags, Generation, INodeNo, InitFlags, KernelConfig,
    LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow,
    WriteFlags,
};
use passthrough::Registration;
use reply::{
    Inode, NEGATIVE_TTL, absent, caller, errno, file_attr, file_type, reply_xattr, system_time, ttl,
};
use std::cell::RefCell;
use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

/// Largest write the kernel sends in one request (it caps this at 1 MiB).
pub const MAX_WRITE: u32 = 1 << 20;

pub struct SectionFs {
    model: Arc<Sections>,
    /// Passthrough mode: each section's registration, made at its first open and kept as
    /// long as the kernel may open the inode again (until the model's detach hook: no
    /// handle, and unlinked or forgotten). The kernel holds the registered file, not the
    /// daemon: an idle section costs no daemon fd. The kernel allows one backing per inode
    /// while any of its files is open, so all opens share one.
    backings: Arc<DashMap<u64, Registration>>,
    /// Whether to ask the kernel for passthrough at INIT.
    want_passthrough: bool,
    /// Whether to ask for FUSE over io_uring at INIT (`On`: fail the mount without it).
    want_ring: Switch,
    /// Set at INIT when the kernel granted FUSE over io_uring.
    ring_granted: Arc<AtomicBool>,
}

impl SectionFs {
    pub fn new(model: Arc<Sections>, want_passthrough: bool, want_ring: Switch) -> SectionFs {
        let backings: Arc<DashMap<u64, Registration>> = Arc::new(DashMap::new());
        let held = Arc::clone(&backings);
        model.on_detach(Box::new(move |id| {
            // Unregistered (an ioctl) now, or after the reply of an open in flight that
            // holds a clone. Never later: an unlink must have freed an idle section's
            // storage when it returns, and the registration holds the store file open.
            if let Some((_, r)) = held.remove(&id) {
                log::debug!("passthrough: section {id} unregistered");
                drop(r);
            }
        }));
        SectionFs {
            model,
            backings,
            want_passthrough,
            want_ring,
            ring_granted: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Set once INIT has granted FUSE over io_uring: the rings may then be registered.
    pub fn ring_granted(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.ring_granted)
    }
}

impl SectionFs {
    /// Names an inode for a log line.
    fn inode(&self, ino: INodeNo) -> Inode {
        Inode(ino.0, self.model.name_of(ino.0))
    }
}

impl fuser::Filesystem for SectionFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        // O_TRUNC arrives in OPEN's flags, so a refused truncate never opens anything.
        let mut caps = InitFlags::FUSE_ATOMIC_O_TRUNC;
        // The kernel then sets SB_NOSEC and stops asking for security.capability (a
        // GETXATTR round trip) before every write, passthrough writes included. What v2
        // hands the daemon, killing suid/sgid/caps on write, is moot here: the mount is
        // nosuid and setxattr of security.* is refused, so no section carries privilege.
        caps |= InitFlags::FUSE_HANDLE_KILLPRIV_V2;
        if self.want_passthrough {
            // Never together with FUSE_WRITEBACK_CACHE: that silently disables passthrough.
            caps |= InitFlags::FUSE_PASSTHROUGH;
            if config.set_max_stack_depth(1).is_err() {
                log::info!("kernel refuses a passthrough stack depth of 1");
            }
        }
        if let Err(missing) = config.add_capabilities(caps) {
            log::info!("kernel lacks capabilities {missing:?}");
        }
        let _ = config.set_max_write(MAX_WRITE);
        if self.want_ring != Switch::Off {
            // The kernel offers it only while root has set its enable_uring parameter.
            match config.add_capabilities(InitFlags::from_bits_retain(uring::FUSE_OVER_IO_URING)) {
                Ok(()) => self.ring_granted.store(true, Ordering::Relaxed),
                Err(_) if self.want_ring == Switch::On => {
                    return Err(io::Error::new(
                        io::ErrorKind::Unsupported,
                        format!(
                            "io_uring=on, but the kernel does not offer FUSE over io_uring \
                             (it needs Linux 6.14+ and, as root, echo Y > {})",
                            uring::ENABLE_PARAM
                        ),
                    ));
                }
                Err(_) => {
                    log::info!("FUSE over io_uring not offered: requests come through /dev/fuse")
                }
            }
        }
        Ok(())
    }

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        if Ino::decode(parent.0) == Some(Ino::Sessions) {
            // Never a negative entry here: a user's directory appears at its first use,
            // which the kernel cannot see coming.
            return match self.model.lookup_session(caller(req), name) {
                Ok(a) => reply.entry(&ttl(a.ino), &file_attr(&a), Generation(0)),
                Err(e) => reply.error(errno("lookup", &name, &e)),
            };
        }
        let found = self
            .model
            .namespace_of(parent.0)
            .map_err(|_| Error::NotFound)
            .and_then(|ns| self.model.lookup_in(caller(req), ns, name));
        match found {
            Ok(a) => reply.entry(&ttl(a.ino), &file_attr(&a), Generation(0)),
            Err(Error::NotFound) if name::sidecar_of(name).is_none() => {
                // Inode 0: "no such entry", cached for the TTL.
                reply.entry(&NEGATIVE_TTL, &absent(), Generation(0))
            }
            Err(e) => reply.error(errno("lookup", &name, &e)),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.model.forget(ino.0, nlookup);
    }

    fn getattr(&self, req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.model.attr(caller(req), ino.0) {
            Ok(a) => reply.attr(&ttl(a.ino), &file_attr(&a)),
            Err(e) => reply.error(errno("getattr", &self.inode(ino), &e)),
        }
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let change = AttrChange {
            mode,
            uid,
            gid,
            size,
            atime: atime.map(system_time),
            mtime: mtime.map(system_time),
        };
        match self
            .model
            .set_attr(caller(req), ino.0, fh.map(|f| f.0), change)
        {
            Ok(a) => reply.attr(&ttl(a.ino), &file_attr(&a)),
            Err(e) => reply.error(errno("setattr", &(self.inode(ino), change), &e)),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        // open(O_CREAT) arrives as CREATE; mknod(2) of a regular file arrives here and makes
        // a section, as on /dev/shm. Devices, fifos and sockets are not offered.
        if mode & libc::S_IFMT != libc::S_IFREG {
            return reply.error(errno("mknod", &(name, mode), &Error::NotSupported));
        }
        let flags = libc::O_RDWR | libc::O_CREAT | libc::O_EXCL;
        let made = self
            .model
            .namespace_of(parent.0)
            .and_then(|ns| {
                let no_attach = crate::model::no_attach;
                self.model
                    .create_in(caller(req), ns, name, mode, umask, flags, no_attach)
            })
            .and_then(|(attr, opened, ())| self.model.release(opened.fh).map(|()| attr));
        match made {
            Ok(a) => reply.entry(&ttl(a.ino), &file_attr(&a), Generation(0)),
            Err(e) => reply.error(errno("mknod", &(name, mode), &e)),
        }
    }

    fn mkdir(
        &self,
        _req: &Request,
        _parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        reply.error(errno("mkdir", &name, &Error::NotSupported));
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let removed = self
            .model
            .namespace_of(parent.0)
            .and_then(|ns| self.model.unlink_in(ns, name));
        match removed {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno("unlink", &name, &e)),
        }
    }

    fn rmdir(&self, _req: &Request, _parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        // The kernel answers ENOTDIR for a section itself: this is `Sessions` or a user's
        // namespace, which stay.
        reply.error(errno("rmdir", &name, &Error::NotSupported));
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        // `ln -s /path/to/file NAME`: a section over that file.
        let made = self.model.namespace_of(parent.0).and_then(|ns| {
            self.model
                .create_over_file(caller(req), ns, link_name, target)
        });
        match made {
            Ok(a) => {
                // The kernel refuses (EIO) an answer to SYMLINK that is not a symlink, so
                // this one entry says "symlink", valid for no time at all: the next path
                // walk looks the name up again, finds a regular file, and the kernel
                // replaces the inode (a node whose type changed is a new inode to it).
                let mut attr = file_attr(&a);
                attr.kind = FileType::Symlink;
                attr.perm = 0o777;
                attr.size = target.as_os_str().len() as u64;
                reply.entry(&Duration::ZERO, &attr, Generation(0))
            }
            Err(e) => reply.error(errno("symlink", &(link_name, target), &e)),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let flags = flags.bits();
        let result = if flags & !libc::RENAME_NOREPLACE != 0 {
            // RENAME_EXCHANGE would need two record writes: a crash between them could not
            // be told apart from a finished exchange. RENAME_WHITEOUT is for overlayfs.
            Err(Error::InvalidArgument)
        } else {
            let noreplace = flags & libc::RENAME_NOREPLACE != 0;
            self.model.namespace_of(parent.0).and_then(|old_ns| {
                let new_ns = self.model.namespace_of(newparent.0)?;
                self.model
                    .rename_in(old_ns, name, new_ns, newname, noreplace)
            })
        };
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno("rename", &(name, newname), &e)),
        }
    }

    fn link(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        reply.error(errno("link", &newname, &Error::NotSupported));
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let who = caller(req);
        if matches!(Ino::decode(ino.0), Some(Ino::Sidecar(_))) {
            return match self.model.open_sidecar(who, ino.0, flags.0) {
                // Direct I/O: the text's length is fixed only at open, and nobody maps it.
                Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::FOPEN_DIRECT_IO),
                Err(e) => reply.error(errno("open sidecar", &self.inode(ino), &e)),
            };
        }
        let attach = |ino, file: &File| self.attach(ino, file, || reply.open_backing(file));
        let (opened, backing) = match self.model.open_with(who, ino.0, flags.0, attach) {
            Ok(o) => o,
            Err(e) => return reply.error(errno("open", &(self.inode(ino), flags), &e)),
        };
        let fh = FileHandle(opened.fh);
        match backing {
            Some(b) => reply.opened_passthrough(fh, FopenFlags::empty(), &b.id),
            // KEEP_CACHE: the page cache is the one copy all mappings share; dropping it at
            // every open would cost a re-read and nothing else changes the bytes.
            None => reply.opened(fh, FopenFlags::FOPEN_KEEP_CACHE),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        thread_local! {
            /// Each worker's read buffer, grown to the largest read and reused: a data
            /// request allocates nothing.
            static BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
        }
        BUF.with_borrow_mut(|buf| {
            if buf.len() < size as usize {
                buf.resize(size as usize, 0);
            }
            match self
                .model
                .read_into(fh.0, offset, &mut buf[..size as usize])
            {
                Ok(n) => reply.data(&buf[..n]),
                Err(e) => reply.error(errno("read", &self.inode(ino), &e)),
            }
        })
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        match self.model.write(fh.0, offset, data) {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(errno("write", &(self.inode(ino), offset, data.len()), &e)),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // Nothing is buffered in the daemon. ENOSYS tells the kernel to stop sending FLUSH
        // at every close, saving a round trip per close.
        reply.error(Errno::ENOSYS);
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        // The registration stays: the model's detach hook ends it.
        match self.model.release(fh.0) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno("release", &self.inode(ino), &e)),
        }
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        match self.model.sync(fh.0, datasync) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno("fsync", &self.inode(ino), &e)),
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.model.open_dir_of(ino.0) {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(errno("opendir", &self.inode(ino), &e)),
        }
    }

    fn readlink(&self, req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.model.readlink(caller(req), ino.0) {
            Ok(target) => reply.data(&target),
            Err(e) => reply.error(errno("readlink", &self.inode(ino), &e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let entries = match self.model.read_dir(fh.0, offset) {
            Ok(e) => e,
            Err(e) => return reply.error(errno("readdir", &self.inode(ino), &e)),
        };
        for (ino, kind, name, next) in entries {
            if reply.add(INodeNo(ino), next, file_type(kind), &name) {
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.model.release_dir(fh.0);
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match self.model.store().statvfs() {
            Ok(s) => reply.statfs(
                s.blocks(),
                s.blocks_free(),
                s.blocks_available(),
                s.files(),
                s.files_free(),
                s.block_size() as u32,
                255,
                s.fragment_size() as u32,
            ),
            Err(e) => reply.error(errno("statfs", &"", &e.into())),
        }
    }

    fn setxattr(
        &self,
        req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        if name.as_bytes() == LIFETIME_XATTR.as_bytes() {
            return match self.model.set_lifetime(caller(req), ino.0, value) {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(errno("setxattr", &(self.inode(ino), name), &e)),
            };
        }
        let e = if name.as_bytes().starts_with(XATTR_PREFIX.as_bytes()) {
            Error::ReadOnly
        } else {
            Error::XattrNotSupported
        };
        reply.error(errno("setxattr", &(self.inode(ino), name), &e));
    }

    fn getxattr(&self, req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        // The kernel asks for security.* attributes on every access: answer quietly.
        let value = name
            .to_str()
            .filter(|n| n.starts_with(XATTR_PREFIX))
            .ok_or(Error::NoAttr)
            .and_then(|n| {
                let facts = self.model.facts(caller(req), ino.0)?;
                facts.xattr(n).ok_or(Error::NoAttr)
            });
        match value {
            Ok(v) => reply_xattr(reply, v.as_bytes(), size),
            Err(e) => reply.error(errno("getxattr", &(self.inode(ino), name), &e)),
        }
    }

    fn listxattr(&self, req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        match self.model.xattr_names(caller(req), ino.0) {
            Ok(names) => reply_xattr(reply, &names, size),
            Err(e) => reply.error(errno("listxattr", &self.inode(ino), &e)),
        }
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let e = if name.as_bytes().starts_with(XATTR_PREFIX.as_bytes()) {
            Error::ReadOnly
        } else {
            Error::NoAttr
        };
        reply.error(errno("removexattr", &(self.inode(ino), name), &e));
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let attach = |ino, file: &File| self.attach(ino, file, || reply.open_backing(file));
        let made = self.model.namespace_of(parent.0).and_then(|ns| {
            self.model
                .create_in(caller(req), ns, name, mode, umask, flags, attach)
        });
        let (attr, opened, backing) = match made {
            Ok(r) => r,
            Err(e) => return reply.error(errno("create", &name, &e)),
        };
        let (ttl, fa, fh) = (ttl(attr.ino), file_attr(&attr), FileHandle(opened.fh));
        match backing {
            Some(b) => {
                reply.created_passthrough(&ttl, &fa, Generation(0), fh, FopenFlags::empty(), &b.id)
            }
            None => reply.created(&ttl, &fa, Generation(0), fh, FopenFlags::FOPEN_KEEP_CACHE),
        }
    }

    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: fuser::IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: fuser::ReplyIoctl,
    ) {
        // Python and others probe every file with TCGETS: an answer, not worth a log line.
        reply.error(Errno::from_i32(Error::NoIoctl.errno()));
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        // Mode 0 and KEEP_SIZE commit storage (and mode 0 grows); punching or collapsing
        // would take storage (or size) away from a section, which never shrinks.
        let result = match mode {
            0 => self.model.allocate(ino.0, offset, length, false),
            libc::FALLOC_FL_KEEP_SIZE => self.model.allocate(ino.0, offset, length, true),
            _ => Err(Error::ModeNotSupported),
        };
        match result {
            Ok(()) => reply.ok(),
            Err(e) => {
                let what = (self.inode(ino), offset, length, mode);
                reply.error(errno("fallocate", &what, &e))
            }
        }
    }
}
