//! A damaged store still mounts. Every damaged entry of `STORE/sections/` is reported once
//! in the log and left aside untouched (never deleted, never a panic), while the healthy
//! sections beside it serve as before.
//!
//! "Metadata without a backing file" cannot exist: the record is an xattr on the backing
//! file itself (see DESIGN.md). Two records claiming one name are not damage but the trace
//! of a rename cut short by a crash: the newer record wins and the other file goes.

use crate::common;
use common::cpath;

use common::Mount;
use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

const RECORD_XATTR: &str = "user.sectionfs.record";

/// Makes one damaged entry at the path it is given.
type Plant = Box<dyn Fn(&Path)>;

mount_test! {
    fn a_damaged_store_mounts_and_leaves_the_damage_untouched(opts) {
        damaged_store(opts);
    }
}

fn damaged_store(opts: &str) {
    // On tmpfs, the default store's filesystem: ext4 could not even hold the oversized
    // record below (its xattrs fit in one block).
    let mut builder = tempfile::Builder::new();
    builder.prefix("sectionfs-damage-");
    let dir = if Path::new("/dev/shm").is_dir() {
        builder.tempdir_in("/dev/shm")
    } else {
        builder.tempdir()
    }
    .expect("create a temp dir for the store");
    let store = dir.path().join("store");
    {
        let mount = Mount::with_store(&store, opts);
        fs::write(mount.section("good"), b"good bytes").expect("write good");
        fs::write(mount.section("renamed"), b"replaced by the rename").expect("write renamed");
        mount.unmount();
    }
    let sections = store.join("sections");
    let (good, good_rec) = find_section(&sections, "good");
    let (renamed, renamed_rec) = find_section(&sections, "renamed");
    let good_seq = record_seq(&good_rec);
    let renamed_seq = record_seq(&renamed_rec);

    // Damage of every kind that can exist in this layout.
    let damage: Vec<(&str, Plant)> = vec![
        (
            "stray.txt",
            Box::new(|p| fs::write(p, b"not ours").unwrap()),
        ),
        (
            "000000000000abc.tmp",
            Box::new(|p| fs::write(p, b"x").unwrap()),
        ),
        // Ids must be lowercase hex, 16 digits, and in 2..2^62.
        (
            "00000000000000AB",
            Box::new(|p| fs::write(p, b"x").unwrap()),
        ),
        (
            "0000000000000000",
            Box::new(|p| fs::write(p, b"x").unwrap()),
        ),
        (
            "0000000000000001",
            Box::new(|p| fs::write(p, b"x").unwrap()),
        ),
        (
            "ffffffffffffffff",
            Box::new(|p| fs::write(p, b"x").unwrap()),
        ),
        ("subdir", Box::new(make_dir_with_file)),
        ("0000000000000100", Box::new(make_dir_with_file)),
        (
            "link",
            Box::new(|p| std::os::unix::fs::symlink("/etc/passwd", p).unwrap()),
        ),
        (
            "0000000000000101",
            Box::new({
                let target = good.clone();
                move |p| std::os::unix::fs::symlink(&target, p).unwrap()
            }),
        ),
        ("fifo", Box::new(mkfifo)),
        ("0000000000000102", Box::new(mkfifo)),
        (
            "0000000000000103",
            Box::new(|p| {
                drop(std::os::unix::net::UnixListener::bind(p).unwrap());
            }),
        ),
        // A backing file without its record.
        (
            "0000000000000104",
            Box::new(|p| fs::write(p, b"no record").unwrap()),
        ),
        (
            "0000000000000105",
            Box::new({
                let rec = renamed_as(&good_rec, "truncated", good_seq + 100);
                move |p| plant(p, b"truncated", &rec[..rec.len() / 2])
            }),
        ),
        (
            "0000000000000106",
            Box::new(|p| plant(p, b"garbage", b"\x00\xff\xfe garbage \x07\n=")),
        ),
        ("0000000000000107", Box::new(|p| plant(p, b"empty", b""))),
        (
            "0000000000000108",
            Box::new({
                let rec = renamed_as(&good_rec, "x.meta", good_seq + 101);
                move |p| plant(p, b"sidecar name", &rec)
            }),
        ),
        (
            "0000000000000109",
            Box::new({
                let rec = renamed_as(&good_rec, "a\\\\b", good_seq + 102);
                move |p| plant(p, b"backslash name", &rec)
            }),
        ),
        (
            "000000000000010a",
            Box::new({
                let rec = String::from_utf8(good_rec.clone())
                    .unwrap()
                    .replace("sectionfs-record 1", "sectionfs-record 99")
                    .into_bytes();
                move |p| plant(p, b"unknown version", &rec)
            }),
        ),
        (
            "000000000000010b",
            Box::new({
                let mut rec = renamed_as(&good_rec, "too big", good_seq + 103);
                rec.extend_from_slice(format!("future={}\n", "y".repeat(8192)).as_bytes());
                move |p| plant(p, b"too big", &rec)
            }),
        ),
        (
            "000000000000010c",
            Box::new({
                let rec = String::from_utf8(renamed_as(&good_rec, "bad uid", good_seq + 104))
                    .unwrap()
                    .lines()
                    .map(|l| {
                        if l.starts_with("uid=") {
                            "uid=99999999999".to_string()
                        } else {
                            l.to_string()
                        }
                    })
                    .map(|l| l + "\n")
                    .collect::<String>()
                    .into_bytes();
                move |p| plant(p, b"bad uid", &rec)
            }),
        ),
        // A copy of a section file, record and all: not a rename, so neither is removed.
        (
            "000000000000010d",
            Box::new({
                let rec = good_rec.clone();
                move |p| plant(p, b"a copy of good", &rec)
            }),
        ),
    ];
    let mut planted = Vec::new();
    for (name, make) in &damage {
        let path = sections.join(name);
        make(&path);
        planted.push(path);
    }
    // Interrupted renames: an older record claiming "good" (the section a rename was
    // replacing, so it goes), and a newer one claiming "renamed" (the rename's result, so
    // it wins and the file it replaced goes).
    let stale = sections.join("0000000000000200");
    plant(
        &stale,
        b"stale",
        &renamed_as(&good_rec, "good", good_seq.saturating_sub(1)),
    );
    let winner = sections.join("0000000000000201");
    plant(
        &winner,
        b"rename won",
        &renamed_as(&renamed_rec, "renamed", renamed_seq + 1000),
    );
    let before: Vec<_> = planted.iter().map(|p| snapshot(p)).collect();

    let mount = Mount::with_store(&store, opts);
    let mut names: Vec<String> = fs::read_dir(mount.path())
        .expect("list the mount")
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["good", "good.meta", "renamed", "renamed.meta"],
        "{opts}: only the healthy sections are listed\n{}",
        mount.log()
    );
    assert_eq!(fs::read(mount.section("good")).unwrap(), b"good bytes");
    assert_eq!(fs::read(mount.section("renamed")).unwrap(), b"rename won");
    // The store stays usable: a new section gets a fresh id beside the damage.
    fs::write(mount.section("fresh"), b"new").expect("create a section in a damaged store");
    assert_eq!(fs::read(mount.section("fresh")).unwrap(), b"new");

    let log = mount.log();
    for path in &planted {
        let needle = format!("leaving {path:?} aside");
        let n = log.lines().filter(|l| l.contains(&needle)).count();
        assert_eq!(n, 1, "{opts}: {path:?} reported {n} times\n{log}");
    }
    let aside = format!(" {} entries left aside", planted.len());
    assert!(log.contains(&aside), "{opts}: expected{aside}\n{log}");
    for (removed, kept) in [(&stale, &good), (&renamed, &winner)] {
        let line = log
            .lines()
            .filter(|l| l.contains("keeping the newer rename"))
            .filter(|l| l.ends_with(&*removed.file_name().unwrap().to_string_lossy()))
            .count();
        assert_eq!(
            line, 1,
            "{opts}: the removal of {removed:?} is logged once\n{log}"
        );
        assert!(
            !removed.exists(),
            "{opts}: {removed:?} (the older record) is removed"
        );
        assert!(kept.exists(), "{opts}: {kept:?} (the newer record) is kept");
    }
    for line in log.lines() {
        assert!(
            !line.contains(" ERROR ") && !line.contains("panicked"),
            "{opts}: {line}\n{log}"
        );
    }
    mount.unmount();

    for (path, was) in planted.iter().zip(&before) {
        assert_eq!(&snapshot(path), was, "{opts}: {path:?} was touched");
    }
}

/// Everything about an entry that leaving it untouched preserves.
#[derive(Debug, PartialEq)]
struct Snapshot {
    kind: String,
    mode: u32,
    ino: u64,
    mtime: (i64, i64),
    content: Option<Vec<u8>>,
    link: Option<PathBuf>,
    record: Option<Vec<u8>>,
    children: Option<BTreeMap<String, Vec<u8>>>,
}

fn snapshot(path: &Path) -> Snapshot {
    let meta = fs::symlink_metadata(path).unwrap_or_else(|e| panic!("{path:?} is gone: {e}"));
    let ft = meta.file_type();
    Snapshot {
        kind: format!("{ft:?}"),
        mode: meta.mode(),
        ino: meta.ino(),
        mtime: (meta.mtime(), meta.mtime_nsec()),
        content: ft.is_file().then(|| fs::read(path).unwrap()),
        link: ft.is_symlink().then(|| fs::read_link(path).unwrap()),
        record: (ft.is_file() || ft.is_dir())
            .then(|| get_xattr(path))
            .flatten(),
        children: ft.is_dir().then(|| {
            fs::read_dir(path)
                .unwrap()
                .map(|e| {
                    let e = e.unwrap();
                    let name = e.file_name().to_string_lossy().into_owned();
                    (name, fs::read(e.path()).unwrap())
                })
                .collect()
        }),
    }
}

/// The backing file holding section `name`, and its record.
fn find_section(sections: &Path, name: &str) -> (PathBuf, Vec<u8>) {
    for e in fs::read_dir(sections).unwrap() {
        let path = e.unwrap().path();
        if let Some(rec) = get_xattr(&path)
            && String::from_utf8_lossy(&rec)
                .lines()
                .any(|l| l == format!("name={name}"))
        {
            return (path, rec);
        }
    }
    panic!("no backing file holds {name:?} in {sections:?}");
}

fn record_seq(rec: &[u8]) -> u64 {
    String::from_utf8_lossy(rec)
        .lines()
        .find_map(|l| l.strip_prefix("seq="))
        .and_then(|v| v.parse().ok())
        .expect("a record has a seq")
}

/// `rec` with its name and seq replaced.
fn renamed_as(rec: &[u8], name: &str, seq: u64) -> Vec<u8> {
    String::from_utf8_lossy(rec)
        .lines()
        .map(|l| {
            if l.starts_with("name=") {
                format!("name={name}\n")
            } else if l.starts_with("seq=") {
                format!("seq={seq}\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect::<String>()
        .into_bytes()
}

/// A backing file with `content` and `record` as its record xattr.
fn plant(path: &Path, content: &[u8], record: &[u8]) {
    fs::write(path, content).unwrap();
    let c = cpath(path);
    let name = CString::new(RECORD_XATTR).unwrap();
    // SAFETY: NUL-terminated path and name; the value is valid for its length.
    let rc = unsafe {
        libc::lsetxattr(
            c.as_ptr(),
            name.as_ptr(),
            record.as_ptr().cast(),
            record.len(),
            0,
        )
    };
    assert_eq!(
        rc,
        0,
        "setxattr {path:?}: {}",
        std::io::Error::last_os_error()
    );
}

fn get_xattr(path: &Path) -> Option<Vec<u8>> {
    let c = cpath(path);
    let name = CString::new(RECORD_XATTR).unwrap();
    let mut buf = vec![0u8; 65536];
    // SAFETY: NUL-terminated path and name; the buffer is valid for its length.
    let n = unsafe {
        libc::lgetxattr(
            c.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n < 0 {
        return None;
    }
    buf.truncate(n as usize);
    Some(buf)
}

fn make_dir_with_file(path: &Path) {
    fs::create_dir(path).unwrap();
    fs::write(path.join("inside"), b"keep me").unwrap();
}

fn mkfifo(path: &Path) {
    let c = cpath(path);
    // SAFETY: NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
}

mount_test! {
    /// A section's file removed from the store while the mount serves it (by an operator, a
    /// cleanup job): the first request that meets the loss drops the name with one warning,
    /// and the name can be made again at once, whatever that first request was.
    fn a_file_removed_while_mounted_frees_its_name(opts) {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = dir.path().join("store");
        let mount = Mount::with_store(&store, opts);
        let sections = store.join("sections");
        let firsts = ["open", "create", "truncate", "unlink", "rename", "xattr"];
        for first in firsts {
            let path = mount.section(first);
            fs::write(&path, b"old bytes").expect("write");
            // RELEASE is asynchronous: wait until the daemon holds no handle (and so no
            // open file) of the section.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while common::read_meta(mount.path(), first)["open_handles"] != "0" {
                assert!(
                    std::time::Instant::now() < deadline,
                    "{opts}: handle never released"
                );
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            let (file, _) = find_section(&sections, first);
            fs::remove_file(&file).expect("remove the section's file from the store");
            let errno = |r: std::io::Result<()>| r.err().and_then(|e| e.raw_os_error());
            let enoent = Some(libc::ENOENT);
            match first {
                "open" => {
                    let r = fs::OpenOptions::new().read(true).open(&path).map(drop);
                    assert_eq!(errno(r), enoent, "{opts}: open of a lost section");
                }
                // The kernel's entry is cached: an O_CREAT open arrives as OPEN first.
                "create" => {}
                "truncate" => {
                    let r = fs::OpenOptions::new().write(true).open(&path);
                    assert_eq!(errno(r.map(drop)), enoent, "{opts}: truncate");
                }
                "unlink" => fs::remove_file(&path).expect("unlink of a lost section"),
                "rename" => {
                    let r = fs::rename(&path, mount.section("elsewhere"));
                    assert_eq!(errno(r), enoent, "{opts}: rename of a lost section");
                }
                "xattr" => {
                    let out = std::process::Command::new("getfattr")
                        .args(["-n", "user.sectionfs.size"])
                        .arg(&path)
                        .output()
                        .expect("getfattr");
                    assert!(!out.status.success(), "{opts}: getfattr of a lost section");
                }
                _ => unreachable!(),
            }
            // The name is usable again: made anew, empty, by the next O_CREAT.
            let mut f = fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .unwrap_or_else(|e| panic!("{opts}: {first}: O_CREAT after the loss: {e}"));
            assert_eq!(
                f.metadata().expect("fstat").len(),
                0,
                "{opts}: {first}: a new, empty section"
            );
            std::io::Write::write_all(&mut f, b"new").expect("write the new section");
            drop(f);
            let meta = common::read_meta(mount.path(), first);
            assert_eq!(meta["status"], "created", "{opts}: {first}: made anew");
            assert_eq!(
                fs::read(&path).expect("read back"),
                b"new",
                "{opts}: {first}"
            );
        }
        let log = mount.log();
        let warnings = log
            .lines()
            .filter(|l| l.contains("was removed from the store while mounted"))
            .count();
        // `create` meets the loss inside the open-or-create; every other first request
        // meets it once.
        assert_eq!(
            warnings,
            firsts.len(),
            "{opts}: one warning per loss\n{log}"
        );
        mount.unmount();
    }
}
