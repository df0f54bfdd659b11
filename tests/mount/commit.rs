//! Commit through real mounts on a real, size-limited store (a 16 MiB tmpfs):
//! `commit=eager` (SEC_COMMIT) allocates growth before the call returns or fails with
//! ENOSPC changing nothing; `commit=lazy` (SEC_RESERVE) grows sparsely and takes storage
//! on first touch, which is where a full store shows.

use crate::common;

use common::{Client, Mount, c_program, read_meta, run_ok};
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const MIB: u64 = 1 << 20;
/// The store's capacity.
const STORE_MIB: u64 = 16;

/// A store on a tmpfs of `STORE_MIB` MiB. Declare it before the `Mount` that uses it, so
/// the daemon is gone before the tmpfs goes.
struct SmallStore {
    store: PathBuf,
    tmpfs: common::Tmpfs,
}

impl SmallStore {
    fn new() -> SmallStore {
        let tmpfs = common::Tmpfs::new(&format!("{STORE_MIB}m"));
        SmallStore {
            store: tmpfs.store("store"),
            tmpfs,
        }
    }

    /// Free bytes in the tmpfs.
    fn free(&self) -> u64 {
        self.tmpfs.free()
    }

    /// Takes the tmpfs's free space, but `leave` bytes, with a file beside the store.
    fn fill_leaving(&self, leave: u64) -> File {
        let filler = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(self.tmpfs.path().join(format!("filler-{leave}")))
            .unwrap();
        let len = self.free().saturating_sub(leave);
        // SAFETY: valid fd.
        let rc = unsafe { libc::fallocate(filler.as_raw_fd(), 0, 0, len as i64) };
        assert_eq!(rc, 0, "fill: {}", std::io::Error::last_os_error());
        assert!(self.free() <= leave, "free {} > {leave}", self.free());
        filler
    }
}

fn size(f: &File) -> u64 {
    f.metadata().unwrap().len()
}

fn errno_of(r: std::io::Result<impl std::fmt::Debug>) -> Option<i32> {
    r.err().and_then(|e| e.raw_os_error())
}

/// Stores `byte` in `[off, off+len)` through a MAP_SHARED view, in a child process.
fn touch(path: &Path, off: u64, len: u64, byte: u8) -> Output {
    Command::new(c_program("view_probe"))
        .arg("touch")
        .arg(path)
        .args([off.to_string(), len.to_string(), byte.to_string()])
        .output()
        .unwrap()
}

fn check(path: &Path, off: u64, len: u64, byte: u8) {
    let out = Client::C.ok([
        "check".as_ref(),
        path.as_os_str(),
        off.to_string().as_ref(),
        len.to_string().as_ref(),
        byte.to_string().as_ref(),
    ]);
    assert_eq!(out, "ok\n");
}

mount_test! {
    serial fn eager_growth_is_allocated_or_fails_changing_nothing(opts) {
        let small = SmallStore::new();
        let m = Mount::with_store(&small.store, &format!("{opts},commit=eager"));
        let path = m.section("Eager");
        let f = common::open_or_create(&path);

        // Bigger than the whole store: ENOSPC, and the section is as it was.
        let free = small.free();
        assert_eq!(errno_of(f.set_len(20 * MIB)), Some(libc::ENOSPC), "{opts}");
        assert_eq!(size(&f), 0, "{opts}");
        assert_eq!(read_meta(m.path(), "Eager")["size"], "0", "{opts}");
        assert_eq!(small.free(), free, "{opts}: a failed grow keeps no storage");

        // 8 MiB fits: allocated in the store before ftruncate returns.
        f.set_len(8 * MIB).unwrap();
        assert!(free - small.free() >= 8 * MIB, "{opts}: not allocated");
        assert_eq!(read_meta(m.path(), "Eager")["commit"], "eager");
        Client::C.ok([
            "fill".as_ref(),
            path.as_os_str(),
            "0".as_ref(),
            (8 * MIB).to_string().as_ref(),
            "90".as_ref(),
        ]);

        // 17 MiB would need 9 MiB more than the 8 in use: refused, size and bytes kept.
        assert_eq!(errno_of(f.set_len(17 * MIB)), Some(libc::ENOSPC), "{opts}");
        assert_eq!(size(&f), 8 * MIB, "{opts}");
        let stat = Command::new("stat")
            .args(["-c", "%s"])
            .arg(&path)
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&stat.stdout).trim(),
            (8 * MIB).to_string()
        );
        check(&path, 0, 8 * MIB, 90);

        // The store fills up afterwards: the committed section's views never fault.
        let _filler = small.fill_leaving(0);
        let out = touch(&path, 0, 8 * MIB, 51);
        assert!(
            out.status.success(),
            "{opts}: store through a committed view: {out:?}"
        );
        check(&path, 0, 8 * MIB, 51);
        // Writes inside the size need no new storage either.
        f.write_all_at(&[7; 4096], 4 * MIB).unwrap();
        drop(f);
        m.unmount();
    }
}

mount_test! {
    serial fn eager_write_past_the_end(opts) {
        let small = SmallStore::new();
        let m = Mount::with_store(&small.store, &format!("{opts},commit=eager"));
        let f = common::open_or_create(&m.section("W"));
        let _filler = small.fill_leaving(4 * MIB);

        // A write that fits grows the section like ftruncate would.
        f.write_all_at(b"end", MIB).unwrap();
        assert_eq!(size(&f), MIB + 3);
        let far = f.write_at(b"x", 8 * MIB);
        if common::io_of(opts) == "cached" {
            // Through the daemon: the growth to 8 MiB is allocated first, so it fails
            // whole and nothing changes.
            assert_eq!(errno_of(far), Some(libc::ENOSPC), "{opts}");
            assert_eq!(size(&f), MIB + 3, "{opts}");
        } else {
            // Passthrough writes never reach the daemon: the kernel writes the backing
            // file directly and the gap stays a hole (DESIGN.md, "Commit").
            assert_eq!(far.unwrap(), 1, "{opts}");
            assert_eq!(size(&f), 8 * MIB + 1, "{opts}");
        }
        drop(f);
        m.unmount();
    }
}

mount_test! {
    serial fn lazy_growth_fits_where_eager_does_not(opts) {
        for (commit, fits) in [("eager", false), ("lazy", true)] {
            let small = SmallStore::new();
            let m = Mount::with_store(&small.store, &format!("{opts},commit={commit}"));
            let f = common::open_or_create(&m.section("Big"));
            let free = small.free();
            let grown = f.set_len(24 * MIB);
            assert_eq!(grown.is_ok(), fits, "{opts} commit={commit}: {grown:?}");
            if fits {
                assert_eq!(size(&f), 24 * MIB);
                assert!(
                    free - small.free() < MIB,
                    "{opts}: lazy growth took storage"
                );
            } else {
                assert_eq!(errno_of(grown), Some(libc::ENOSPC));
                assert_eq!(size(&f), 0);
            }
            drop(f);
            m.unmount();
        }
    }
}

mount_test! {
    /// What a full store does to a lazily committed section: a write fails with ENOSPC; a
    /// store through a view dies of SIGBUS in passthrough mode, and in cached mode lands in
    /// the page cache and fails at writeback (msync reports ENOSPC).
    serial fn lazy_storage_is_taken_on_first_touch(opts) {
        let small = SmallStore::new();
        let m = Mount::with_store(&small.store, &format!("{opts},commit=lazy"));
        let path = m.section("Lazy");
        let f = common::open_or_create(&path);
        f.set_len(24 * MIB).unwrap();
        assert_eq!(read_meta(m.path(), "Lazy")["commit"], "lazy");

        // First touches take storage while there is some.
        let free = small.free();
        f.write_all_at(&vec![1; (2 * MIB) as usize], 0).unwrap();
        let out = touch(&path, 2 * MIB, 2 * MIB, 2);
        assert!(out.status.success(), "{opts}: {out:?}");
        assert!(free - small.free() >= 4 * MIB, "{opts}");

        // SEC_RESERVE's commit: fallocate takes storage for a range up front.
        run_ok(
            Command::new("fallocate")
                .args(["-o", "8MiB", "-l", "1MiB"])
                .arg(&path),
        );
        assert_eq!(size(&f), 24 * MIB, "{opts}: fallocate inside the size");

        let _filler = small.fill_leaving(0);
        // A write into a hole: ENOSPC, nothing written, size kept.
        assert_eq!(
            errno_of(f.write_at(&[3; 4096], 12 * MIB)),
            Some(libc::ENOSPC),
            "{opts}"
        );
        assert_eq!(size(&f), 24 * MIB);
        // A store through a view into a hole.
        let out = touch(&path, 12 * MIB, 4096, 3);
        if common::io_of(opts) == "cached" {
            assert_eq!(out.status.code(), Some(2), "{opts}: {out:?}");
            assert_eq!(
                common::client_errno(&out),
                Some(libc::ENOSPC),
                "{opts}: {out:?}"
            );
        } else {
            assert_eq!(out.status.signal(), Some(libc::SIGBUS), "{opts}: {out:?}");
        }
        // What was touched or committed before stays usable, full store or not.
        let out = touch(&path, 0, 4 * MIB, 4);
        assert!(out.status.success(), "{opts}: {out:?}");
        check(&path, 0, 4 * MIB, 4);
        let out = touch(&path, 8 * MIB, MIB, 5);
        assert!(
            out.status.success(),
            "{opts}: committed by fallocate: {out:?}"
        );
        check(&path, 8 * MIB, MIB, 5);
        // Committing more fails now; reserving more does not.
        let more = Command::new("fallocate")
            .args(["-o", "16MiB", "-l", "1MiB"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(!more.status.success(), "{opts}: fallocate on a full store");
        assert_eq!(size(&f), 24 * MIB);
        f.set_len(32 * MIB).unwrap();
        assert_eq!(size(&f), 32 * MIB, "{opts}: lazy growth on a full store");
        drop(f);
        m.unmount();
    }
}
