//! Passthrough registrations: each section's backing file registered with the kernel
//! (FUSE_DEV_IOC_BACKING_OPEN) at its first open and kept as long as the kernel may open
//! the inode again (see DESIGN.md, "Performance levers").

use super::SectionFs;
use crate::contract::IoMode;
use crate::error::Error;
use fuser::BackingId;
use std::fs::File;
use std::io;
use std::sync::Arc;

/// A section's passthrough registration (FUSE_DEV_IOC_BACKING_OPEN), and which file it
/// registered. Shared: an open in flight keeps it registered until its reply is sent, even
/// if the section is detached meanwhile; the last clone to drop unregisters it.
#[derive(Clone)]
pub(super) struct Registration {
    pub(super) id: Arc<BackingId>,
    /// (st_dev, st_ino) of the registered file.
    file: (u64, u64),
}

impl SectionFs {
    /// The attach step of an open or create (see `Sections::create_in`): in passthrough
    /// mode, the section's registration, made from `file` by `register` unless one of
    /// that same file is kept. A refused registration fails the open with EIO and the
    /// model undoes all of it. Runs under the section's lock, so it cannot race the
    /// model's detach hook.
    pub(super) fn attach(
        &self,
        ino: u64,
        file: &File,
        register: impl FnOnce() -> io::Result<BackingId>,
    ) -> Result<Option<Registration>, Error> {
        if !self.passthrough() {
            return Ok(None);
        }
        // A store file replaced by hand while its section was idle must not be served
        // through the registration of the file it replaced.
        let st = crate::model::fstat(file)?;
        let identity = (st.st_dev, st.st_ino);
        if let Some(r) = self.backings.get(&ino)
            && r.file == identity
        {
            return Ok(Some(r.clone()));
        }
        // No errno of its own: the caller sees EIO, the log the kernel's reason.
        let id = register()
            .map_err(|e| Error::Io(io::Error::other(format!("passthrough registration: {e}"))))?;
        log::debug!("passthrough: section {ino} registered");
        let r = Registration {
            id: Arc::new(id),
            file: identity,
        };
        self.backings.insert(ino, r.clone());
        Ok(Some(r))
    }

    pub(super) fn passthrough(&self) -> bool {
        self.model.io() == IoMode::Passthrough
    }
}
