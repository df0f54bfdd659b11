//! The Rust client API (`sectionfs::client`) against a real mount, in both data modes:
//! create-or-open and its status, open, grow, views, the section lock, and a counter
//! shared with threads and with another process.

use crate::common;

use common::Mount;
use sectionfs::client::{self, Section};
use sectionfs::contract::{IoMode, Status};
use std::io::ErrorKind;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};

fn page() -> u64 {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as u64 }
}

/// The u64 at the start of a view.
///
/// SAFETY (callers): the view is at least 8 bytes and page-aligned.
unsafe fn cell(view: &client::MmapRaw) -> &AtomicU64 {
    unsafe { AtomicU64::from_ptr(view.as_mut_ptr().cast()) }
}

mount_test! {
    serial fn create_open_grow_and_map(mode) {
        let m = Mount::new(mode);
        let mnt = m.path();

        let (a, created) = Section::create_or_open(mnt, "Frame", 4096).unwrap();
        assert!(created, "{mode}: first create_or_open creates");
        assert_eq!(a.size().unwrap(), 4096);
        let meta = a.meta().unwrap();
        assert_eq!(meta.status, Status::Created);
        let io = if mode == "passthrough=on" {
            IoMode::Passthrough
        } else {
            IoMode::Cached
        };
        assert_eq!(meta.io, io, "{mode}");

        // A second CreateFileMapping: ERROR_ALREADY_EXISTS, and a smaller size changes nothing.
        let (b, created) = Section::create_or_open(mnt, "Frame", 100).unwrap();
        assert!(!created, "{mode}: second create_or_open finds it");
        assert_eq!(b.size().unwrap(), 4096);

        // Views of the two handles share pages.
        let va = a.map().unwrap();
        let vb = b.map().unwrap();
        assert_eq!(va.len(), 4096);
        // SAFETY: both views are a page long; the bytes are touched only here.
        unsafe {
            va.as_mut_ptr().add(100).write_volatile(0xAB);
            assert_eq!(vb.as_ptr().add(100).read_volatile(), 0xAB, "{mode}");
        }

        // Grow through one handle: the other sees the size, maps the new tail.
        assert_eq!(a.grow(3 * 4096).unwrap(), 3 * 4096);
        assert_eq!(a.grow(4096).unwrap(), 3 * 4096, "grow never shrinks");
        assert_eq!(b.size().unwrap(), 3 * 4096);
        assert_eq!(va.len(), 4096, "an existing view keeps its length");
        let tail = b.map_range(4096, 2 * 4096).unwrap();
        // SAFETY: the tail view is two pages; its last byte is inside it.
        unsafe { tail.as_mut_ptr().add(2 * 4096 - 1).write_volatile(7) };
        // A view at an unaligned offset works too (Windows would refuse it).
        let odd = a.map_range(3 * 4096 - 10, 10).unwrap();
        // SAFETY: the view is 10 bytes long.
        assert_eq!(unsafe { odd.as_ptr().add(9).read_volatile() }, 7, "{mode}");
        let past = a.map_range(3 * 4096 - 10, 11).unwrap_err();
        assert_eq!(past.kind(), ErrorKind::InvalidInput, "{past}");

        // An exclusive view for filling before publishing.
        {
            // SAFETY: nothing else touches the last page while this view is borrowed.
            let mut v = unsafe { a.map_mut(2 * 4096, 4096) }.unwrap();
            v[..5].copy_from_slice(b"hello");
        }
        let mut back = [0u8; 5];
        std::os::unix::fs::FileExt::read_exact_at(b.file(), &mut back, 2 * 4096).unwrap();
        assert_eq!(&back, b"hello", "{mode}");

        // Read-only handles give read-only views and cannot grow.
        let ro = Section::open_read_only(mnt, "Frame").unwrap();
        let rv = ro.map().unwrap();
        // SAFETY: the view is three pages.
        assert_eq!(unsafe { rv.as_ptr().add(100).read_volatile() }, 0xAB);
        let e = ro.grow(4 * 4096).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EINVAL), "{e}");

        // OpenFileMapping of a missing name; names that would leave the mount.
        let e = Section::open(mnt, "Nope").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
        for bad in ["..", "a/b", "Frame.meta", "back\\slash"] {
            let e = Section::open(mnt, bad).unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::EINVAL), "{bad}");
        }
        let e = Section::create_new(mnt, "Frame", 1, 0o600).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EEXIST));
        let fresh = Section::create_new(mnt, "Fresh", 8192, 0o640).unwrap();
        assert_eq!(fresh.size().unwrap(), 8192);
        assert_eq!(fresh.meta().unwrap().status, Status::Created);

        // Removal: the name goes, views keep the bytes.
        client::remove(mnt, "Frame").unwrap();
        assert_eq!(
            Section::open(mnt, "Frame").unwrap_err().raw_os_error(),
            Some(libc::ENOENT)
        );
        // SAFETY: as above.
        assert_eq!(unsafe { vb.as_ptr().add(100).read_volatile() }, 0xAB);
        drop((va, vb, tail, odd, rv));
        drop((a, b, ro, fresh));
        m.unmount();
    }
}

mount_test! {
    serial fn counter_shared_by_threads_and_processes(mode) {
        const ROUNDS: u64 = 2000;
        let m = Mount::new(mode);
        let mnt = m.path().to_path_buf();

        // Two threads, each with its own handle and view, adding atomically.
        std::thread::scope(|s| {
            for _ in 0..2 {
                let mnt = &mnt;
                s.spawn(move || {
                    let (sec, _) = Section::create_or_open(mnt, "Atomic", 8).unwrap();
                    let view = sec.map().unwrap();
                    // SAFETY: the view is page-aligned and 8 bytes long.
                    let c = unsafe { cell(&view) };
                    for _ in 0..ROUNDS {
                        c.fetch_add(1, Ordering::SeqCst);
                    }
                });
            }
        });
        {
            let sec = Section::open(&mnt, "Atomic").unwrap();
            let view = sec.map().unwrap();
            // SAFETY: as above.
            assert_eq!(unsafe { cell(&view) }.load(Ordering::SeqCst), 2 * ROUNDS);
        }

        // This process and the Python example, taking the section lock around each add.
        let (sec, _) = Section::create_or_open(&mnt, "Locked", page()).unwrap();
        let view = sec.map_range(0, 8).unwrap();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/counter.py");
        let child = Command::new("python3")
            .arg(script)
            .arg(&mnt)
            .arg("Locked")
            .arg(ROUNDS.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn python3 examples/counter.py");
        let p = view.as_mut_ptr().cast::<u64>();
        for _ in 0..ROUNDS {
            let _lock = sec.lock().unwrap();
            // SAFETY: the view is 8 bytes; everyone changes it only under the lock.
            unsafe { p.write_volatile(p.read_volatile() + 1) };
        }
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{mode}: counter.py: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("status=already_exists"), "{stdout}");
        let _lock = sec.lock().unwrap();
        // SAFETY: as above.
        assert_eq!(unsafe { p.read_volatile() }, 2 * ROUNDS, "{mode}");
        drop(_lock);
        assert_eq!(sec.size().unwrap(), 2 * page(), "the example grew it");
        drop((view, sec));
        m.unmount();
    }
}
