//! Issue 2, the foundation: everything a section is comes back from its store after a
//! clean unmount and after the daemon is killed with SIGKILL, in both data modes; and one
//! store serves one daemon only.

use crate::common;

use common::{Client, Mount};
use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

/// What a section looks like from the mount: everything the store must bring back.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    size: u64,
    bytes: Vec<u8>,
    uid: u32,
    gid: u32,
    mode: u32,
    mtime: (i64, i64),
    /// The sidecar minus the keys that describe this mount, not the section.
    facts: BTreeMap<String, String>,
}

/// Every section of the mount, by raw name.
fn snapshot(mnt: &Path) -> BTreeMap<OsString, Seen> {
    let mut out = BTreeMap::new();
    for entry in fs::read_dir(mnt).expect("readdir") {
        let name = entry.expect("readdir entry").file_name();
        if name.as_bytes().ends_with(b".meta") {
            continue;
        }
        let path = mnt.join(&name);
        let m = fs::metadata(&path).expect("stat");
        let mut side = name.as_bytes().to_vec();
        side.extend_from_slice(b".meta");
        let text = fs::read_to_string(mnt.join(OsStr::from_bytes(&side))).expect("sidecar");
        let facts = text
            .lines()
            .filter_map(|l| l.split_once('='))
            .filter(|(k, _)| !["status", "open_handles", "io", "transport"].contains(k))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        out.insert(
            name,
            Seen {
                size: m.len(),
                bytes: fs::read(&path).expect("read"),
                uid: m.uid(),
                gid: m.gid(),
                mode: m.mode() & 0o7777,
                mtime: (m.mtime(), m.mtime_nsec()),
                facts,
            },
        );
    }
    out
}

fn put(mnt: &Path, name: &[u8], data: &[u8], mode: u32) {
    let path = mnt.join(OsStr::from_bytes(name));
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&path)
        .unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    f.write_all(data).unwrap();
    // create_new's mode is cut by the umask; set it exactly.
    fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
}

/// Sections of every kind the store must keep.
fn populate(mnt: &Path) {
    let pattern: Vec<u8> = (0..10_000u32).map(|i| (i * 13 % 251) as u8).collect();
    put(mnt, b"plain", &pattern, 0o640);
    std::os::unix::fs::chown(mnt.join("plain"), Some(1234), Some(5678)).unwrap();
    let long = vec![b'L'; 250];
    let odd: [&[u8]; 8] = [
        b"with space",
        " ünïcødé ☃ ".as_bytes(),
        b".hidden",
        b"..dots",
        &long,
        b"new\nline",
        b"tab\tand\x01ctl",
        b"latin1\xff",
    ];
    for (i, name) in odd.iter().enumerate() {
        put(mnt, name, &[i as u8 + 1; 7], 0o600 + i as u32 * 0o10);
    }
    put(mnt, b"empty", b"", 0o604);
    // Grown by truncate, with a byte at its very end.
    let grown = mnt.join("grown");
    put(mnt, b"grown", b"start", 0o644);
    let f = OpenOptions::new().write(true).open(&grown).unwrap();
    f.set_len(1 << 20).unwrap();
    f.write_all_at(b"E", (1 << 20) - 1).unwrap();
    // Made by another process, written through views in two more.
    let by = mnt.join("by-client");
    let arg = by.as_os_str();
    Client::C.ok([OsStr::new("create"), arg, OsStr::new("65536")]);
    Client::Python.ok([
        OsStr::new("fill"),
        arg,
        OsStr::new("0"),
        OsStr::new("65536"),
        OsStr::new("66"),
    ]);
    Client::C.ok([
        OsStr::new("fill"),
        arg,
        OsStr::new("100"),
        OsStr::new("10"),
        OsStr::new("67"),
    ]);
    // Times set explicitly, to see them come back exactly.
    let c = std::ffi::CString::new(mnt.join("empty").as_os_str().as_bytes()).unwrap();
    let times = [
        libc::timespec {
            tv_sec: 1_111_111_111,
            tv_nsec: 222,
        },
        libc::timespec {
            tv_sec: 1_333_333_333,
            tv_nsec: 444,
        },
    ];
    // SAFETY: NUL-terminated path, two timespecs.
    assert_eq!(
        unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), 0) },
        0
    );
}

#[track_caller]
fn assert_same(before: &BTreeMap<OsString, Seen>, after: &BTreeMap<OsString, Seen>, when: &str) {
    let names = |m: &BTreeMap<OsString, Seen>| m.keys().cloned().collect::<Vec<_>>();
    assert_eq!(names(after), names(before), "{when}: the names");
    for (name, want) in before {
        let got = &after[name];
        // Compare the small parts first for a readable failure.
        assert_eq!(
            (got.size, got.uid, got.gid, got.mode, got.mtime, &got.facts),
            (
                want.size,
                want.uid,
                want.gid,
                want.mode,
                want.mtime,
                &want.facts
            ),
            "{when}: {name:?}"
        );
        assert!(got.bytes == want.bytes, "{when}: the bytes of {name:?}");
    }
}

fn restart_keeps_everything(mode: &str) {
    let dir = tempfile::Builder::new()
        .prefix("sectionfs-restart-")
        .tempdir()
        .unwrap();
    let store = dir.path().join("store");

    let first = Mount::with_store(&store, mode);
    populate(first.path());
    let created = snapshot(first.path());
    assert_eq!(created.len(), 12, "{:?}", created.keys());
    assert_ne!(
        created[OsStr::new("by-client")].facts["creator_pid"],
        std::process::id().to_string(),
        "the client, not this process, created it"
    );
    first.unmount();

    // After a clean unmount.
    let mut second = Mount::with_store(&store, mode);
    assert_same(&created, &snapshot(second.path()), "after a clean unmount");
    // Changes made by the second daemon, then SIGKILL.
    let p = second.section("plain");
    OpenOptions::new()
        .write(true)
        .open(&p)
        .unwrap()
        .write_all_at(b"after restart", 20_000)
        .unwrap();
    put(second.path(), b"made-after-restart", b"new", 0o644);
    fs::set_permissions(second.section("empty"), fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::chown(second.section("with space"), Some(77), Some(88)).unwrap();
    fs::rename(second.section(".hidden"), second.section(".renamed")).unwrap();
    fs::remove_file(second.section("..dots")).unwrap();
    let changed = snapshot(second.path());
    assert_eq!(changed[OsStr::new("plain")].size, 20_013);
    second.kill9();

    // After SIGKILL.
    let third = Mount::with_store(&store, mode);
    assert_same(&changed, &snapshot(third.path()), "after kill -9");
    third.unmount();
}

mount_test! {
    fn restart_passthrough() {
        restart_keeps_everything(common::modes()[0]);
    }
}

mount_test! {
    fn restart_cached() {
        restart_keeps_everything(common::modes()[1]);
    }
}

mount_test! {
    /// A second daemon on a store that is being served is refused, in the foreground and the
    /// background form, with one line that names the store; the first mount is unharmed.
    fn second_daemon_on_a_store_is_refused() {
        let dir = tempfile::Builder::new()
            .prefix("sectionfs-twice-")
            .tempdir()
            .unwrap();
        let store = dir.path().join("store");
        let first = Mount::with_store(&store, "");
        fs::write(first.section("s"), b"first").unwrap();

        let mnt2 = dir.path().join("mnt2");
        fs::create_dir(&mnt2).unwrap();
        let out = Command::new(common::daemon_bin())
            .arg(&store)
            .arg(&mnt2)
            .env_remove("RUST_LOG")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        if common::is_mounted(&mnt2) {
            // Never leave a wrong mount behind, even when failing.
            let _ = common::umount(&mnt2, true);
            panic!("a second daemon mounted {}: {stderr}", store.display());
        }
        assert!(!out.status.success(), "second daemon exited {}", out.status);
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr:?}");
        assert!(
            stderr.contains(&*store.to_string_lossy()) && stderr.contains("already served"),
            "the message names the store: {stderr:?}"
        );
        assert!(
            stderr.contains(&format!("pid {}", first.pid())),
            "and the daemon serving it: {stderr:?}"
        );

        // The foreground form, through the guard.
        let err = match Mount::try_with_store(&store, "") {
            Ok(m) => {
                m.unmount();
                panic!("a second -f daemon mounted {}", store.display());
            }
            Err(e) => e,
        };
        assert!(err.contains("exited with exit status: 1"), "{err}");
        assert!(err.contains("already served"), "{err}");

        assert_eq!(fs::read(first.section("s")).unwrap(), b"first");
        first.unmount();
    }
}
