//! What the performance levers must not break: long entry and attribute TTLs, cached
//! negative entries and FUSE_HANDLE_KILLPRIV_V2 still show every change at once, to this
//! process and to others, and a sidecar is never stale.

mod common;

use common::{Mount, modes, read_meta};
use std::fs::{self, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::process::Command;

fn absent(path: &Path) -> bool {
    matches!(fs::metadata(path), Err(e) if e.kind() == ErrorKind::NotFound)
}

#[test]
fn absent_names_appear_with_their_sidecars() {
    if !common::require_fuse() {
        return;
    }
    for opts in modes() {
        let m = Mount::new(opts);
        let (sec, meta) = (m.section("late"), m.section("late.meta"));
        // Looked up while absent: the kernel may now hold a negative entry for `late`.
        assert!(absent(&sec) && absent(&meta), "{opts}");
        assert!(absent(&sec) && absent(&meta), "{opts}: asked twice");
        // Created without O_EXCL, which is what revalidates a negative entry otherwise.
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&sec)
            .unwrap_or_else(|e| panic!("{opts}: open-or-create over a missing name: {e}"));
        assert_eq!(fs::metadata(&sec).unwrap().len(), 0, "{opts}");
        assert_eq!(read_meta(m.path(), "late")["status"], "created", "{opts}");
        drop(f);

        // Rename: the old names go, the new ones come, sidecar included.
        let (moved, moved_meta) = (m.section("moved"), m.section("moved.meta"));
        assert!(absent(&moved) && absent(&moved_meta), "{opts}");
        fs::rename(&sec, &moved).unwrap();
        assert!(
            absent(&sec) && absent(&meta),
            "{opts}: old names after rename"
        );
        assert_eq!(read_meta(m.path(), "moved")["name"], "moved", "{opts}");

        // Unlink: both go at once.
        fs::remove_file(&moved).unwrap();
        assert!(
            absent(&moved) && absent(&moved_meta),
            "{opts}: after unlink"
        );
        // And the name can come back.
        fs::write(&moved, b"again").unwrap();
        assert_eq!(read_meta(m.path(), "moved")["size"], "5", "{opts}");
        m.unmount();
    }
}

#[test]
fn another_process_sees_growth_writes_and_mode_at_once() {
    if !common::require_fuse() {
        return;
    }
    for opts in modes() {
        let m = Mount::new(opts);
        let sec = m.section("shared");
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&sec)
            .unwrap();
        // This process caches the entry and its attributes.
        assert_eq!(fs::metadata(&sec).unwrap().len(), 0);
        let other = |script: &str| {
            let out = Command::new("sh")
                .arg("-c")
                .arg(script)
                .arg("sh")
                .arg(&sec)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{opts}: {script}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        };
        // Another process grows it; this one sees the size at once (no TTL wait).
        other("truncate -s 8192 \"$1\"");
        assert_eq!(fs::metadata(&sec).unwrap().len(), 8192, "{opts}");
        assert_eq!(f.metadata().unwrap().len(), 8192, "{opts}: fstat");
        // This process writes past the end; the other sees size and bytes.
        f.write_all_at(b"tail", 8192).unwrap();
        assert_eq!(other("stat -c %s \"$1\""), "8196", "{opts}");
        assert_eq!(other("tail -c 4 \"$1\""), "tail", "{opts}");
        assert_eq!(read_meta(m.path(), "shared")["size"], "8196", "{opts}");
        // Mode and owner changes by another process.
        other("chmod 600 \"$1\"");
        assert_eq!(fs::metadata(&sec).unwrap().mode() & 0o777, 0o600, "{opts}");
        drop(f);
        m.unmount();
    }
}

#[test]
fn writes_after_create_keep_their_bytes() {
    // FUSE_HANDLE_KILLPRIV_V2 moves the suid/capability check for writes to the daemon:
    // writes of every size, on fresh and reopened handles, still land whole.
    if !common::require_fuse() {
        return;
    }
    for opts in modes() {
        let m = Mount::new(opts);
        for (i, len) in [1usize, 4096, 65_536, 1 << 20].into_iter().enumerate() {
            let sec = m.section(format!("w{i}"));
            let data: Vec<u8> = (0..len).map(|b| (b % 251) as u8).collect();
            let mut f = fs::File::create(&sec).unwrap();
            f.write_all(&data).unwrap();
            drop(f);
            let f = OpenOptions::new().write(true).open(&sec).unwrap();
            f.write_all_at(&data, len as u64).unwrap();
            drop(f);
            let back = fs::read(&sec).unwrap();
            assert_eq!(back.len(), 2 * len, "{opts}");
            assert!(
                back[..len] == data[..] && back[len..] == data[..],
                "{opts}: {len}"
            );
        }
        m.unmount();
    }
}
