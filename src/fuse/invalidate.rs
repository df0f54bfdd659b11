//! The kernel's caches of what the model changes by itself: the attributes of a section
//! whose size changed, and names that went without the kernel asking.

use crate::ino::Ino;
use crate::model::Sections;

/// Wires the model's hooks to the kernel's caches. A resize drops the kernel's copy of the
/// section's attributes at once, from the request that made it (an attribute-only
/// invalidation takes no inode lock, so it cannot wait on the caller); a name that went
/// by itself is invalidated from a thread of its own (an entry invalidation takes the
/// directory's lock, which a caller in a request may hold).
pub fn invalidate_kernel_caches(model: &Sections, notifier: fuser::Notifier) {
    let attrs = notifier.clone();
    model.on_resize(Box::new(move |id| {
        let ino = fuser::INodeNo(Ino::Section(id).number());
        // ENOENT: the kernel holds no inode for it, so no attributes either.
        if let Err(e) = attrs.inval_inode(ino, -1, 0)
            && e.raw_os_error() != Some(libc::ENOENT)
        {
            log::debug!("invalidate the attributes of section {id}: {e}");
        }
    }));
    let (tx, rx) = std::sync::mpsc::channel::<(u64, std::ffi::OsString)>();
    let spawned = std::thread::Builder::new()
        .name("invalidate".into())
        .spawn(move || {
            for (parent, name) in rx {
                // ENOENT: the kernel had already dropped the entry.
                if let Err(e) = notifier.inval_entry(fuser::INodeNo(parent), &name)
                    && e.raw_os_error() != Some(libc::ENOENT)
                {
                    log::debug!("invalidate {name:?}: {e}");
                }
            }
        });
    match spawned {
        Ok(_) => {
            model.on_vanish(Box::new(move |parent, name| {
                let _ = tx.send((parent, name.to_os_string()));
            }));
        }
        Err(e) => log::warn!("cannot start the invalidation thread: {e}"),
    }
}
