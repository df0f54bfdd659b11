//! What the performance levers must not break: long entry and attribute TTLs, cached
//! negative entries and FUSE_HANDLE_KILLPRIV_V2 still show every change at once, to this
//! process and to others, and a sidecar is never stale.

use crate::common;

use common::{Mount, read_meta};
use std::fs::{self, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::process::Command;

fn absent(path: &Path) -> bool {
    matches!(fs::metadata(path), Err(e) if e.kind() == ErrorKind::NotFound)
}

mount_test! {
    fn absent_names_appear_with_their_sidecars(opts) {
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

mount_test! {
    fn another_process_sees_growth_writes_and_mode_at_once(opts) {
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

mount_test! {
    fn writes_after_create_keep_their_bytes(opts) {
        // FUSE_HANDLE_KILLPRIV_V2 moves the suid/capability check for writes to the daemon:
        // writes of every size, on fresh and reopened handles, still land whole.
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

/// Waits until the daemon holds no handle of section `name`: close(2) returns before the
/// kernel's RELEASE reaches the daemon.
fn wait_idle(m: &Mount, name: &str) {
    let start = std::time::Instant::now();
    while read_meta(m.path(), name)["open_handles"] != "0" {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(10),
            "{name}: a handle stays open after close"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// How many times the daemon's log says `section INO WHAT` (WHAT: registered,
/// unregistered).
fn registrations(m: &Mount, ino: u64, what: &str) -> usize {
    let line = format!("passthrough: section {ino} {what}");
    m.log().lines().filter(|l| l.ends_with(&line)).count()
}

mount_test! {
    fn a_passthrough_registration_lives_as_long_as_the_kernel_inode() {
        // The lever: the backing registration is made at a section's first open and kept
        // while the kernel may open the inode again, not dropped at every last close. What
        // must hold: an unlink still frees the storage at once, and no registration serves
        // a name's new section after rename over it or unlink and create again.
        let tmpfs = common::Tmpfs::new("128m");
        let m = Mount::with_store(&tmpfs.path().join("store"), "passthrough=on");
        let base = tmpfs.used();
        let big = 16usize << 20;
        let fill = |name: &str, byte: u8, len: usize| {
            fs::write(m.section(name), vec![byte; len]).unwrap();
            wait_idle(&m, name);
        };
        let first_byte = |name: &str| {
            let mut b = [0u8; 1];
            fs::File::open(m.section(name))
                .unwrap()
                .read_exact_at(&mut b, 0)
                .unwrap();
            b[0]
        };

        // Opened again and again: one registration.
        fill("kept", 1, big);
        let ino = fs::metadata(m.section("kept")).unwrap().ino();
        for _ in 0..5 {
            assert_eq!(first_byte("kept"), 1);
        }
        wait_idle(&m, "kept");
        assert_eq!(registrations(&m, ino, "registered"), 1, "{}", m.log());
        assert_eq!(registrations(&m, ino, "unregistered"), 0);
        // Unlinked while idle: the registration goes with the name, and the storage with it,
        // before unlink returns.
        assert!(tmpfs.used() >= base + big as u64);
        fs::remove_file(m.section("kept")).unwrap();
        assert!(
            tmpfs.used() < base + (1 << 20),
            "{} bytes still used after unlink",
            tmpfs.used() - base
        );
        assert_eq!(registrations(&m, ino, "unregistered"), 1);

        // Renamed over: the name now reads the section moved there, and the replaced one's
        // storage is free.
        fill("a", b'a', big);
        assert_eq!(first_byte("a"), b'a');
        fill("b", b'b', 4096);
        assert_eq!(first_byte("b"), b'b');
        fs::rename(m.section("b"), m.section("a")).unwrap();
        assert_eq!(first_byte("a"), b'b', "rename over");
        assert_eq!(fs::metadata(m.section("a")).unwrap().len(), 4096);
        assert!(
            tmpfs.used() < base + (1 << 20),
            "the replaced section's storage"
        );

        // Unlinked and made again under the same name: a new inode, its own bytes.
        let old = fs::metadata(m.section("a")).unwrap().ino();
        fs::remove_file(m.section("a")).unwrap();
        fill("a", b'n', 3);
        let new = fs::metadata(m.section("a")).unwrap().ino();
        assert_ne!(old, new);
        assert_eq!(fs::read(m.section("a")).unwrap(), b"nnn");

        // The kernel forgets the inode (drop_caches evicts unused dentries and inodes): the
        // registration goes with it, and the next open makes a new one.
        wait_idle(&m, "a");
        fs::write("/proc/sys/vm/drop_caches", "2").unwrap();
        let start = std::time::Instant::now();
        while registrations(&m, new, "unregistered") == 0 {
            assert!(
                start.elapsed() < std::time::Duration::from_secs(10),
                "no unregistration after the kernel forgot inode {new}\n{}",
                m.log()
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(first_byte("a"), b'n');
        assert_eq!(registrations(&m, new, "registered"), 2);
        m.unmount();
    }
}

/// `st_size` by `statx`: `sync` forces a GETATTR round trip, otherwise the kernel's copy.
fn statx_size(path: &Path, sync: bool) -> u64 {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    let flags = if sync {
        libc::AT_STATX_FORCE_SYNC
    } else {
        libc::AT_STATX_SYNC_AS_STAT
    };
    // SAFETY: a valid C string and a zeroed statx buffer the call fills.
    let mut sx: libc::statx = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::statx(libc::AT_FDCWD, c.as_ptr(), flags, libc::STATX_SIZE, &mut sx) };
    assert_eq!(
        r,
        0,
        "statx {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
    sx.stx_size
}

mount_test! {
    /// A size another task has seen from the daemon is never followed by a smaller one from
    /// the kernel's cache while a growth races: the daemon drops the kernel's copy of the
    /// attributes as it grows a section, before any GETATTR can see the new size (without
    /// it, a GETATTR answered between the growth and the grower's reply returned the new
    /// size to its caller, while the cached copy stayed old until that reply was applied).
    /// Growth by ftruncate in both data modes; in cached mode also by writes past the end,
    /// under both commits (passthrough writes never reach the daemon).
    fn a_size_seen_is_never_unseen_while_another_task_grows(opts) {
        let cached = common::io_of(opts) == "cached";
        let lazy = format!("{opts},commit=lazy");
        let runs = if cached { vec![opts, lazy.as_str()] } else { vec![opts] };
        for opts in runs {
            let m = Mount::new(opts);
            let s = m.path().join("s");
            fs::write(&s, b"").unwrap();
            const STEPS: u64 = 400;
            let grower = {
                let s = s.clone();
                std::thread::spawn(move || {
                    let f = OpenOptions::new().write(true).open(&s).unwrap();
                    for step in 1..=STEPS {
                        if cached && step % 2 == 0 {
                            f.write_at(b"x", step * 4096 - 1).unwrap();
                        } else {
                            f.set_len(step * 4096).unwrap();
                        }
                    }
                })
            };
            let mut seen = 0;
            while seen < STEPS * 4096 {
                let fresh = statx_size(&s, true);
                let cached = statx_size(&s, false);
                assert!(
                    cached >= fresh && fresh >= seen,
                    "{opts}: sizes went back: seen {seen}, then {fresh} from the daemon, then \
                     {cached} from the kernel's copy"
                );
                seen = cached;
            }
            grower.join().unwrap();
            m.unmount();
        }
    }
}
