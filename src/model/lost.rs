//! Sections whose store file was removed behind the daemon's back (by hand, while
//! mounted): their name is dropped as if unlinked, with one warning, and the caller is told
//! ESTALE so that the kernel looks the name up again.

use super::{Sections, lock};
use crate::error::Error;
use crate::ino::Ino;
use crate::namespace::{self, Ns};
use std::collections::HashMap;
use std::ffi::OsString;

impl Sections {
    /// A section whose file was removed from the store behind the daemon's back (by hand,
    /// while mounted): its name is dropped as if unlinked, with one warning, so that the
    /// name can be made again. Takes the held namespace lock; returns the name dropped,
    /// for [`Sections::forget_lost`] once that lock is released.
    pub(super) fn drop_lost(
        &self,
        names: &mut HashMap<OsString, u64>,
        id: u64,
    ) -> Option<(Ns, OsString)> {
        let section = self.section(id).ok()?;
        let (ns, name) = {
            let st = lock(&section.state);
            (st.record.namespace, st.record.name.clone())
        };
        let key = namespace::key(ns, &name);
        if names.get(&*key) != Some(&id) {
            return None;
        }
        names.remove(&*key);
        crate::error::warn_limited(format_args!(
            "store: the file of section {name:?} (id {id}) was removed from the store while \
             mounted: dropping its name"
        ));
        Some((ns, name))
    }

    /// The rest of [`Sections::drop_lost`], without the namespace lock: the section is
    /// unlinked, and the kernel told to forget its entry when `invalidate`.
    pub(super) fn forget_lost(&self, id: u64, lost: Option<(Ns, OsString)>, invalidate: bool) {
        let Some((ns, name)) = lost else {
            return;
        };
        self.unlinked(id);
        if invalidate && let Some(hook) = self.on_vanish.get() {
            hook(Ino::dir_of(ns).number(), &name);
        }
    }

    /// A store error met on section `id`, as the caller sees it: a file gone from the
    /// store drops the section's name (see [`Sections::drop_lost`]) and is ESTALE, which
    /// the kernel retries with a fresh lookup. Call with no lock held.
    pub(super) fn gone(&self, id: u64, e: Error) -> Error {
        if !e.is_gone() {
            return e;
        }
        let lost = self.drop_lost(&mut lock(&self.names), id);
        self.forget_lost(id, lost, true);
        Error::Stale
    }
}
