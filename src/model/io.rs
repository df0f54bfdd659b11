//! Data requests of the cached mode (read, write, fsync) and fallocate. Passthrough data
//! never reaches the daemon.

use super::Sections;
use super::handles::Handle;
use super::section::fstat;
use super::{lock, section_id};
use crate::contract::Commit;
use crate::error::{Error, Result};
use crate::store;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

impl Sections {
    /// Reads section data (cached mode) or sidecar text.
    pub fn read(&self, fh: u64, offset: u64, size: u32) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; size as usize];
        let n = self.read_into(fh, offset, &mut buf)?;
        buf.truncate(n);
        Ok(buf)
    }

    /// Reads section data (cached mode) or sidecar text into `buf`, as much as fits;
    /// returns how much it read. The adapter passes a buffer it keeps per thread, so a
    /// read request allocates nothing (a fresh 1 MiB buffer costs 256 page faults).
    pub fn read_into(&self, fh: u64, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let handle = self.handles.get(&fh).ok_or(Error::BadHandle)?;
        match &*handle {
            Handle::Section { file, .. } => {
                let file = Arc::clone(file);
                drop(handle);
                let mut done = 0;
                while done < buf.len() {
                    match file.read_at(&mut buf[done..], offset + done as u64) {
                        Ok(0) => break,
                        Ok(n) => done += n,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                Ok(done)
            }
            Handle::Sidecar(text) => {
                let start = (offset as usize).min(text.len());
                let end = start.saturating_add(buf.len()).min(text.len());
                buf[..end - start].copy_from_slice(&text[start..end]);
                Ok(end - start)
            }
            Handle::Dir(_) => Err(Error::BadHandle),
        }
    }

    /// Writes section data (cached mode). A write past the end grows the section, and
    /// under eager commit allocates the growth first, so it fails whole with ENOSPC and
    /// leaves the size as it was. A write the store runs out of space for midway (lazy
    /// commit) is short, as on any Linux file: what was written stays, the count says how
    /// much.
    pub fn write(&self, fh: u64, offset: u64, data: &[u8]) -> Result<u32> {
        let (ino, file) = match self.handles.get(&fh).as_deref() {
            Some(Handle::Section { ino, file, .. }) => (*ino, Arc::clone(file)),
            Some(Handle::Sidecar(_)) => return Err(Error::ReadOnly),
            _ => return Err(Error::BadHandle),
        };
        let end = offset.checked_add(data.len() as u64).ok_or(Error::TooBig)?;
        let section = self.section(ino)?;
        let eager = section.commit == Commit::Eager;
        let mut growing = None;
        if end > fstat(&file)?.st_size as u64 {
            let mut st = lock(&section.state);
            let size = fstat(&file)?.st_size as u64;
            // Lazy: the write itself moves the size, so a write cut short stays short.
            self.grow(&mut st, &file, size, end, || match eager {
                true => store::grow(&file, size, end, Commit::Eager),
                false => Ok(()),
            })?;
            // The state lock is held through the write, so that what is counted and what
            // is written agree when it ends, and no `attr` sees the new size before the
            // resize hook is told.
            growing = Some((st, size));
        }
        let written = write_all(&file, offset, data);
        if let Some((mut st, size)) = growing
            && let Ok(stat) = fstat(&file)
        {
            self.account(&mut st, stat.st_size as u64);
            if stat.st_size as u64 > size {
                self.resized(ino);
            }
        }
        written
    }

    /// fallocate mode 0 or KEEP_SIZE: allocates storage for `[offset, offset + len)` in any
    /// commit mode (the SEC_RESERVE commit, VirtualAlloc MEM_COMMIT), then, unless
    /// `keep_size`, grows the section to cover it. All or nothing: ENOSPC changes no size.
    pub fn allocate(&self, ino: u64, offset: u64, len: u64, keep_size: bool) -> Result<()> {
        let apply = || -> Result<()> {
            let id = section_id(ino, Error::InvalidArgument)?;
            let end = offset.checked_add(len).ok_or(Error::TooBig)?;
            if end > i64::MAX as u64 {
                return Err(Error::TooBig);
            }
            let section = self.section(id)?;
            // Holding the state lock serializes this with every other growth of the section.
            let mut st = lock(&section.state);
            if st.read_only() {
                return Err(Error::ReadOnly);
            }
            let file = self.file_of(&section, &st)?;
            let size = fstat(&file)?.st_size as u64;
            // The quota counts sizes: storage kept past the end would escape it.
            if end > size && keep_size && self.quota.enabled() {
                return Err(Error::QuotaExceeded);
            }
            let end = if keep_size { size } else { end };
            self.grow(&mut st, &file, size, end, || {
                store::commit_range(&file, offset, len)?;
                store::grow(&file, size, end, Commit::Eager)
            })?;
            if end > size {
                self.resized(id);
            }
            Ok(())
        };
        apply().map_err(|e| self.gone(ino, e))
    }

    /// fsync of a section handle.
    pub fn sync(&self, fh: u64, datasync: bool) -> Result<()> {
        let file = match self.handles.get(&fh).as_deref() {
            Some(Handle::Section { file, .. }) => Arc::clone(file),
            Some(_) => return Ok(()),
            None => return Err(Error::BadHandle),
        };
        if datasync {
            file.sync_data()?
        } else {
            file.sync_all()?
        }
        Ok(())
    }
}

/// Writes all of `data` at `offset`, or as much as the store takes: an error after some
/// bytes is a short write, as on any Linux file.
fn write_all(file: &File, offset: u64, data: &[u8]) -> Result<u32> {
    let mut done = 0;
    while done < data.len() {
        match file.write_at(&data[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if done == 0 => return Err(e.into()),
            Err(_) => break,
        }
    }
    Ok(done as u32)
}
