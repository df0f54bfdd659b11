//! Loading a store at start-up: every healthy section back under its name, with what a
//! restart changes (`lifetime=handles` sections gone, sections over files reopened with
//! their owner's current rights, quota counted again).

use super::section::{Section, SectionState};
use super::{Options, Sections};
use crate::contract::{Lifetime, Status};
use crate::creds::{self, Identity};
use crate::namespace;
use crate::quota::{self, Quota};
use crate::store::Store;
use crate::views::ViewFinder;
use dashmap::DashMap;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

impl Sections {
    /// Loads every section from the store.
    pub fn load(store: Store, options: Options) -> std::io::Result<Sections> {
        let scan = store.scan()?;
        let max_seq = scan
            .sections
            .iter()
            .map(|f| f.record.seq)
            .max()
            .unwrap_or(0);
        let mut names = HashMap::with_capacity(scan.sections.len());
        let inodes = DashMap::with_capacity(scan.sections.len());
        let quota = Quota::new(options.user_quota);
        let mut user_dirs = HashMap::new();
        for f in scan.sections {
            if f.record.lifetime == Lifetime::Handles {
                // No handle survives a restart: the section went with the daemon, as a
                // Windows section goes with a reboot.
                log::info!(
                    "store: {:?} had lifetime=handles: removing it",
                    f.record.name
                );
                if let Err(e) = store.remove(f.id) {
                    log::warn!("store: cannot remove {:?}: {e}", f.record.name);
                }
                continue;
            }
            // A section over a file reopens it with its owner's rights as they are now:
            // the user database's groups for the recorded uid, not the recorded gid (the
            // section's group, which its owner may set to a group they have since left).
            // The path is walked as at creation (`resolve`). A file gone or out of reach
            // is left aside like a damaged entry, its record kept.
            let mut over = None;
            if let Some(b) = &f.record.backing {
                let owner = Identity::of_user(f.record.uid);
                match creds::open_as(&owner, &b.path) {
                    Ok((file, writable)) if writable || !b.writable => over = Some(file),
                    Ok(_) => {
                        log::warn!(
                            "store: leaving {:?} aside: its owner may no longer write {}",
                            f.record.name,
                            b.path.display()
                        );
                        continue;
                    }
                    Err(e) => {
                        log::warn!(
                            "store: leaving {:?} aside: cannot reopen {}: {e}",
                            f.record.name,
                            b.path.display()
                        );
                        continue;
                    }
                }
            }
            if namespace::is_reserved(f.record.namespace, &f.record.name) {
                log::warn!(
                    "store: leaving {:?} aside: that name is reserved for a namespace \
                     (rename it with an older sectionfs)",
                    f.record.name
                );
                continue;
            }
            if let Some(uid) = f.record.namespace {
                user_dirs.entry(uid).or_insert(f.record.gid);
            }
            names.insert(
                namespace::key(f.record.namespace, &f.record.name).into_owned(),
                f.id,
            );
            let mut state = SectionState::new(f.record, Status::Created, 0);
            state.file = over.map(Arc::new);
            if quota.enabled() && state.record.backing.is_none() {
                let size = store.stat(f.id).map(|s| s.st_size as u64).unwrap_or(0);
                quota.recount(state.record.uid, &mut state.counted, quota::footprint(size));
            }
            inodes.insert(f.id, Arc::new(Section::new(f.id, state)));
        }
        log::info!(
            "store {}: {} sections, {} entries left aside",
            store.root().display(),
            names.len(),
            scan.damaged.len()
        );
        Ok(Sections {
            store,
            options,
            quota,
            passthrough: AtomicBool::new(false),
            io_uring: AtomicBool::new(false),
            names: Mutex::new(names),
            inodes,
            handles: DashMap::new(),
            next_fh: AtomicU64::new(1),
            seq: AtomicU64::new(max_seq + 1),
            mounted_at: SystemTime::now(),
            dir_times: Mutex::new(HashMap::new()),
            views: ViewFinder::default(),
            shrink_waiters: AtomicU32::new(0),
            on_vanish: std::sync::OnceLock::new(),
            on_detach: std::sync::OnceLock::new(),
            on_resize: std::sync::OnceLock::new(),
            user_dirs: Mutex::new(user_dirs),
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::model::testing::*;

    #[test]
    fn lifetime_handles_sections_do_not_survive_a_restart() {
        let tmp = tempfile::tempdir().unwrap();
        {
            let m = model(tmp.path());
            let (attr, _held) = m.create(A, os("h"), 0o600, 0, libc::O_RDWR).unwrap();
            m.set_lifetime(A, attr.ino, b"handles").unwrap();
            m.create(A, os("p"), 0o600, 0, libc::O_RDWR).unwrap();
            // The daemon ends with the handles still open.
        }
        let m = model(tmp.path());
        assert_eq!(m.len(), 1);
        assert!(m.lookup(A, os("p")).is_ok());
        assert_eq!(
            std::fs::read_dir(tmp.path().join("sections"))
                .unwrap()
                .count(),
            1
        );
    }
}
