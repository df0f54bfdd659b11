//! Growing a backing file: the SEC_COMMIT / SEC_RESERVE difference in one place.

use crate::contract::Commit;
use crate::error::{Error, Result};
use nix::errno::Errno;
use nix::fcntl::FallocateFlags;
use std::fs::File;
use std::io;

/// Grows `file` to `new_size` (never shrinks it). `Eager` allocates every new byte or
/// fails with ENOSPC leaving size and bytes as they were; `Lazy` only sets the size.
///
/// The size moves by fallocate mode 0 of the last byte, which only ever raises it: a
/// concurrent write past the end (passthrough writes never reach the daemon) can never be
/// cut off, as it could be by an ftruncate computed from a stale size.
pub fn grow(file: &File, old_size: u64, new_size: u64, commit: Commit) -> Result<()> {
    if new_size <= old_size {
        return Ok(());
    }
    let new = i64::try_from(new_size).map_err(|_| Error::TooBig)?;
    if commit == Commit::Eager {
        // Allocate before the size moves: a mode-0 fallocate that runs out of space may
        // leave the size half-raised (ext4 raises it extent by extent), this cannot.
        // tmpfs frees what a failed call took; blocks a disk store keeps past the end are
        // reused by the next growth and freed with the section.
        commit_range(file, old_size, new_size - old_size)?;
    }
    match fallocate(file, FallocateFlags::empty(), new - 1, 1) {
        Ok(()) => Ok(()),
        // SEC_RESERVE growth needs no storage: a store without fallocate, or one too full
        // for even the last page, still grows. The caller holds the section's lock; only a
        // passthrough write past the end can move the size meanwhile, so look again.
        Err(e)
            if commit == Commit::Lazy
                && matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP | libc::ENOSPC)) =>
        {
            if file.metadata()?.len() < new_size {
                file.set_len(new_size)?;
            }
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// Allocates storage for `[offset, offset + len)` without changing the size: the SEC_RESERVE
/// commit (VirtualAlloc MEM_COMMIT). Fails with ENOSPC when the store cannot hold it.
pub fn commit_range(file: &File, offset: u64, len: u64) -> Result<()> {
    if len == 0 {
        return Ok(());
    }
    let end = offset.checked_add(len).ok_or(Error::TooBig)?;
    let (off, end) = (
        i64::try_from(offset).map_err(|_| Error::TooBig)?,
        i64::try_from(end).map_err(|_| Error::TooBig)?,
    );
    Ok(fallocate(
        file,
        FallocateFlags::FALLOC_FL_KEEP_SIZE,
        off,
        end - off,
    )?)
}

fn fallocate(file: &File, mode: FallocateFlags, offset: i64, len: i64) -> io::Result<()> {
    loop {
        match nix::fcntl::fallocate(file, mode, offset, len) {
            Ok(()) => return Ok(()),
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grow_never_shrinks() {
        let tmp = tempfile::tempdir().unwrap();
        let f = File::create(tmp.path().join("f")).unwrap();
        grow(&f, 0, 8192, Commit::Eager).unwrap();
        assert_eq!(f.metadata().unwrap().len(), 8192);
        grow(&f, 8192, 100, Commit::Lazy).unwrap();
        assert_eq!(f.metadata().unwrap().len(), 8192);
        grow(&f, 0, 4096, Commit::Lazy).unwrap();
        assert_eq!(
            f.metadata().unwrap().len(),
            8192,
            "a stale old size cannot shrink it"
        );
        grow(&f, 8192, 1 << 20, Commit::Lazy).unwrap();
        assert_eq!(f.metadata().unwrap().len(), 1 << 20);
    }

    #[test]
    fn eager_growth_allocates_and_lazy_growth_does_not() {
        use std::os::unix::fs::MetadataExt;
        let tmp = tempfile::tempdir().unwrap();
        let f = File::create(tmp.path().join("f")).unwrap();
        let allocated = |f: &File| f.metadata().unwrap().blocks() * 512;
        grow(&f, 0, 1 << 20, Commit::Eager).unwrap();
        assert!(allocated(&f) >= 1 << 20);
        grow(&f, 1 << 20, 64 << 20, Commit::Lazy).unwrap();
        assert_eq!(f.metadata().unwrap().len(), 64 << 20);
        assert!(allocated(&f) < 2 << 20, "lazy growth stays a hole");
        commit_range(&f, 1 << 20, 1 << 20).unwrap();
        assert!(allocated(&f) >= 2 << 20);
        assert_eq!(
            f.metadata().unwrap().len(),
            64 << 20,
            "commit keeps the size"
        );
    }
}
