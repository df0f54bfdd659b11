//! The model: sections, their names, inode numbers, handles, creation status and growth.
//! Plain Rust over a [`Store`]; the FUSE adapter (`fuse/`) only translates to it, and the
//! unit tests beside each part drive it without a mount. This file is the facade: the
//! public types and the [`Sections`] value; each job is one file below, and every file
//! adds its own `impl Sections` block.
//!
//! - `names.rs`    the name table: lookup, unlink, rename, `lifetime=handles`
//! - `open.rs`     create and open, the one way a handle comes to be
//! - `section.rs`  one section's state, its store file, quota and its single `grow`
//! - `shrink.rs`   the shrink rule
//! - `handles.rs`  file handles and per-process status
//! - `attrs.rs`    attributes, sidecar facts, setattr
//! - `io.rs`       cached-mode data, fsync, fallocate
//! - `dir.rs`      directory listings and the namespaces' links and directories
//! - `load.rs`     loading a store at start-up
//! - `lost.rs`     store files removed behind the daemon's back
//!
//! Inode numbers are `ino.rs`'s: a section's is its store id (stable across restarts).

mod attrs;
mod dir;
mod handles;
mod io;
mod load;
mod lost;
mod names;
mod open;
mod section;
mod shrink;

pub use handles::thread_group;
pub use section::fstat;

use crate::contract::{Commit, IoMode, Lifetime, Status, Transport};
use crate::error::{Error, Result};
use crate::ino::Ino;
use crate::quota::Quota;
use crate::store::Store;
use crate::views::{Dev, ViewFinder};
use dashmap::DashMap;
use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use handles::Handle;
use section::Section;

/// An `attach` step that has nothing to attach (the cached data mode, unit tests).
pub fn no_attach(_ino: u64, _file: &File) -> Result<()> {
    Ok(())
}

/// Who is asking: the kernel's view of the calling process.
#[derive(Clone, Copy, Debug)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
    /// The calling thread's id, as the kernel reports it.
    pub pid: u32,
}

impl Caller {
    /// The calling process (thread group): what creation status is kept per.
    pub fn process(&self) -> u32 {
        thread_group(self.pid)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Directory,
    File,
    /// `Global` and `Local` only.
    Symlink,
}

/// Attributes of an inode, in the model's terms.
#[derive(Clone, Copy, Debug)]
pub struct Attr {
    pub ino: u64,
    pub kind: Kind,
    pub size: u64,
    pub blocks: u64,
    pub atime: SystemTime,
    pub mtime: SystemTime,
    pub ctime: SystemTime,
    pub perm: u16,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
}

/// What an open or create hands back.
#[derive(Debug)]
pub struct Opened {
    pub fh: u64,
    pub ino: u64,
    /// The section's backing file, shared by all its handles (for passthrough and I/O).
    pub file: Arc<File>,
    /// What this open did: made the section, or found it there.
    pub status: Status,
}

/// Changes a setattr may ask for.
#[derive(Clone, Copy, Debug, Default)]
pub struct AttrChange {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    /// `None` leaves a time alone; `Some(None)` means "now".
    pub atime: Option<Option<SystemTime>>,
    pub mtime: Option<Option<SystemTime>>,
}

/// Mount-wide choices the model needs.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// Commit mode of new sections.
    pub commit: Commit,
    /// Uid and gid of the root directory (the mounting user).
    pub owner: (u32, u32),
    /// `-o user_quota`: the most bytes of sections one uid may own.
    pub user_quota: Option<u64>,
    /// `-o lifetime`: the lifetime of new sections.
    pub lifetime: Lifetime,
}

/// Told (parent inode, name) when a name goes away without the kernel asking: a
/// `lifetime=handles` section whose last handle closed. The kernel still caches the entry.
pub type VanishHook = Box<dyn Fn(u64, &OsStr) + Send + Sync>;

/// Told a section's id when what `attach` made for it (see [`Sections::create_in`]) may
/// go: the section has no handle, and its name is gone or the kernel forgot its inode, so
/// the next open (if any) comes through a new LOOKUP and attaches anew. It may be told
/// more than once. Called under the section's lock: it must not call into the model.
pub type DetachHook = Box<dyn Fn(u64) + Send + Sync>;

/// Told a section's id when its size changed (a growth, or a shrink by its sole holder),
/// after the change and before any `attr` can see it: called under the section's lock,
/// which `attr` takes for its `fstat`. It must not call into the model. See DESIGN.md,
/// "Caching and TTLs", for why the kernel's copy of the size is dropped there.
pub type ResizeHook = Box<dyn Fn(u64) + Send + Sync>;

/// The model. Locks, in the only order they are taken (DESIGN.md, "Locking"):
/// `names`, then one section's `state`, then the leaves (`dir_times`, `user_dirs`, the
/// quota's table, a shard of `inodes` or `handles`), each taken and released on its own.
/// No lock is ever held while taking one earlier in that order, and no `DashMap` guard is
/// held while taking a mutex.
pub struct Sections {
    store: Store,
    options: Options,
    /// Per-uid totals (`-o user_quota`); its table is a leaf lock, taken under `state`.
    quota: Quota,
    passthrough: AtomicBool,
    /// Whether requests come through FUSE over io_uring (shown in sidecars).
    io_uring: AtomicBool,
    /// The name table, `namespace::key(ns, name)` -> store id. First in the lock order.
    /// Held by every create, unlink, rename and `lifetime=handles` removal from "does the
    /// name exist" through the store call that makes the answer true (create, unlink,
    /// record write), so that the map and the store never disagree and exactly one create
    /// of a name gets `status=created`. Never held across a path walk of the caller's
    /// (`ln -s` opens its target first) or a wait for releases; data requests, opens by
    /// inode and getattr never take it.
    names: Mutex<HashMap<OsString, u64>>,
    /// Every section the kernel or a handle may still reach, by id (linked, or unlinked
    /// but open or remembered). A leaf: a shard is held only to clone out or remove one
    /// `Arc`; removed under that section's `state` lock (`drop_if_gone`).
    inodes: DashMap<u64, Arc<Section>>,
    /// Open handles by fh. A leaf like `inodes`: guards are dropped before any I/O.
    handles: DashMap<u64, Handle>,
    next_fh: AtomicU64,
    seq: AtomicU64,
    mounted_at: SystemTime,
    /// Modification times of the root and of `Sessions/UID` (by inode) since a name in
    /// them was made, removed or renamed; a directory not in it shows `mounted_at`. A
    /// leaf, set under `names`.
    dir_times: Mutex<HashMap<u64, SystemTime>>,
    /// Finds views that outlived their handles (passthrough mode).
    views: ViewFinder,
    /// Shrinks now waiting for releases: at most one, so that busy shrinks (which any user
    /// can repeat) never hold more than one of the workers that serve those releases.
    shrink_waiters: AtomicU32,
    on_vanish: std::sync::OnceLock<VanishHook>,
    on_detach: std::sync::OnceLock<DetachHook>,
    on_resize: std::sync::OnceLock<ResizeHook>,
    /// The user namespaces (`Sessions/UID`) that exist: uid -> the gid shown as the
    /// directory's group. Made on the user's first use, and for every uid with sections.
    /// A leaf, never held with another lock.
    user_dirs: Mutex<HashMap<u32, u32>>,
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a lock would be a bug, but it must not wedge the daemon.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Sections {
    /// Sets the hook told about names that go away by themselves (once; later calls are
    /// ignored).
    pub fn on_vanish(&self, hook: VanishHook) {
        let _ = self.on_vanish.set(hook);
    }

    /// Sets the hook told when a section's attachment may go (once; later calls are
    /// ignored).
    pub fn on_detach(&self, hook: DetachHook) {
        let _ = self.on_detach.set(hook);
    }

    /// Sets the hook told when a section's size changed (once; later calls are ignored).
    pub fn on_resize(&self, hook: ResizeHook) {
        let _ = self.on_resize.set(hook);
    }

    /// Tells the resize hook; under the section's lock.
    pub(super) fn resized(&self, id: u64) {
        if let Some(hook) = self.on_resize.get() {
            hook(id);
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn set_io(&self, io: IoMode) {
        self.passthrough
            .store(io == IoMode::Passthrough, Ordering::Relaxed);
    }

    pub fn set_transport(&self, transport: Transport) {
        self.io_uring
            .store(transport == Transport::IoUring, Ordering::Relaxed);
    }

    pub fn transport(&self) -> Transport {
        if self.io_uring.load(Ordering::Relaxed) {
            Transport::IoUring
        } else {
            Transport::DevFuse
        }
    }

    /// The mount's device, as `/proc/PID/maps` shows views of its sections.
    pub fn set_mount_dev(&self, dev: Dev) {
        self.views.set_dev(dev);
    }

    pub fn io(&self) -> IoMode {
        if self.passthrough.load(Ordering::Relaxed) {
            IoMode::Passthrough
        } else {
            IoMode::Cached
        }
    }

    pub fn len(&self) -> usize {
        lock(&self.names).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The section an inode number names; `not_a_section` for the other kinds of inode.
pub(super) fn section_id(ino: u64, not_a_section: Error) -> Result<u64> {
    match Ino::decode(ino) {
        Some(Ino::Section(id)) => Ok(id),
        Some(_) => Err(not_a_section),
        None => Err(Error::NotFound),
    }
}

pub(super) fn time(secs: i64, nsecs: i64) -> SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + Duration::new(secs as u64, nsecs as u32)
    } else {
        UNIX_EPOCH
    }
}

#[cfg(test)]
mod testing {
    //! What the unit tests of every part share.
    pub use super::*;
    pub use crate::contract::{Commit, Lifetime};
    pub use crate::store::Store;
    pub use std::ffi::OsStr;

    pub const A: Caller = Caller {
        uid: 1000,
        gid: 1000,
        // Above pid_max: no such thread, so the id is its own process.
        pid: 4_200_001,
    };

    pub const B: Caller = Caller {
        uid: 1000,
        gid: 1000,
        pid: 4_200_002,
    };

    pub fn model(dir: &std::path::Path) -> Sections {
        let store = Store::open(dir).unwrap();
        Sections::load(
            store,
            Options {
                commit: Commit::Eager,
                owner: (0, 0),
                user_quota: None,
                lifetime: Lifetime::Persistent,
            },
        )
        .unwrap()
    }

    /// A model over a new store, and the directory that holds it (keep it alive).
    pub fn fresh() -> (tempfile::TempDir, Sections) {
        let tmp = tempfile::tempdir().unwrap();
        let m = model(tmp.path());
        (tmp, m)
    }

    /// The names a directory handle lists, from the start.
    pub fn listed(m: &Sections, fh: u64) -> Vec<OsString> {
        let entries = m.read_dir(fh, 0).unwrap();
        entries.into_iter().map(|e| e.2).collect()
    }

    pub fn os(s: &str) -> &OsStr {
        OsStr::new(s)
    }

    pub fn model_with_quota(dir: &std::path::Path, commit: Commit, quota: u64) -> Sections {
        let store = Store::open(dir).unwrap();
        let options = Options {
            commit,
            owner: (0, 0),
            user_quota: Some(quota),
            lifetime: Lifetime::Persistent,
        };
        Sections::load(store, options).unwrap()
    }
}
