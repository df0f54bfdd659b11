//! Sections over an existing file: `ln -s /path/to/file NAME` makes a section whose bytes
//! are that file's. Through real mounts, in both data modes, with real unprivileged users
//! for the confused-deputy checks (the daemon is root; the file is opened as the caller).

use crate::common;
use crate::users;

use common::{Mount, ViewHolder};
use std::fs::{self, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use tempfile::TempDir;
use users::{A, B};

fn errno<T: std::fmt::Debug>(r: std::io::Result<T>) -> i32 {
    r.expect_err("refused").raw_os_error().expect("an errno")
}

/// A directory every user may enter, for the files sections are made over.
fn files_dir() -> TempDir {
    let dir = tempfile::Builder::new()
        .prefix("sectionfs-files-")
        .tempdir()
        .expect("temp dir");
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod 0755");
    dir
}

fn file(dir: &Path, name: &str, bytes: &[u8], mode: u32, owner: u32) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, bytes).expect("write the file");
    fs::set_permissions(&path, fs::Permissions::from_mode(mode)).expect("chmod");
    std::os::unix::fs::chown(&path, Some(owner), Some(owner)).expect("chown");
    path
}

mount_test! {
    fn views_map_the_file_and_growth_grows_it(mode) {
        let dir = files_dir();
        let m = Mount::new(mode);
        let target = file(dir.path(), mode, &[b'f'; 8192], 0o644, 0);
        let s = m.section("Over");
        symlink(&target, &s).expect("ln -s FILE NAME");
        // Shown as a regular file, not a link, owned by its creator, private to it.
        let meta = fs::symlink_metadata(&s).expect("lstat the section");
        assert!(meta.file_type().is_file(), "{mode}: {meta:?}");
        assert_eq!((meta.len(), meta.mode() & 0o7777), (8192, 0o600), "{mode}");
        let side = common::read_meta(m.path(), "Over");
        assert_eq!(
            side["backing"],
            format!("file:{}", target.display()),
            "{mode}"
        );
        assert_eq!(side["size"], "8192", "{mode}");
        assert_eq!(fs::read(&s).expect("read the section"), vec![b'f'; 8192]);

        // A write through the section lands in the file; so does a view's store.
        let mut f = OpenOptions::new().write(true).open(&s).expect("open rw");
        f.write_all(b"written").expect("write");
        drop(f);
        let mut view = ViewHolder::start(&s, 8192);
        assert_eq!(view.say("fill 86"), "ok", "{mode}");
        let bytes = fs::read(&target).expect("read the file");
        assert!(
            bytes.iter().all(|&b| b == 86),
            "{mode}: the file holds the view's bytes"
        );
        // A change to the file shows in the view (one set of pages).
        let mut t = OpenOptions::new()
            .write(true)
            .open(&target)
            .expect("open file");
        t.write_all(&[87; 8192]).expect("write the file");
        drop(t);
        if mode == "passthrough=on" {
            assert_eq!(view.say("check 87"), "ok", "{mode}");
        }
        let (status, err) = view.finish();
        assert!(status.success(), "{mode}: {err}");

        // Growth grows the file.
        let f = OpenOptions::new().write(true).open(&s).expect("open rw");
        f.set_len(1 << 20).expect("grow the section");
        drop(f);
        assert_eq!(
            fs::metadata(&target).expect("stat").len(),
            1 << 20,
            "{mode}"
        );
        assert_eq!(fs::metadata(&s).expect("stat").len(), 1 << 20, "{mode}");

        // Unlinking the section never touches the file.
        fs::remove_file(&s).expect("rm the section");
        assert!(!s.exists());
        assert_eq!(
            fs::metadata(&target).expect("the file stays").len(),
            1 << 20
        );
        assert!(
            fs::read_dir(m.store().join("sections"))
                .expect("list the store")
                .next()
                .is_none(),
            "{mode}: only the record was in the store"
        );
    }
}

mount_test! {
    fn only_absolute_paths_to_regular_files() {
        let dir = files_dir();
        let m = Mount::new("");
        let target = file(dir.path(), "t", b"x", 0o644, 0);
        fs::write(m.section("taken"), b"y").expect("create taken");
        let at = |n: &str| m.section(n);
        // A relative link would be a link among sections: not offered, as before.
        assert_eq!(errno(symlink("taken", at("rel"))), libc::EPERM);
        assert_eq!(errno(symlink(dir.path(), at("dir"))), libc::EINVAL);
        assert_eq!(errno(symlink("/dev/null", at("dev"))), libc::EINVAL);
        let fifo = dir.path().join("fifo");
        common::run_ok(std::process::Command::new("mkfifo").arg(&fifo));
        assert_eq!(errno(symlink(&fifo, at("fifo"))), libc::EINVAL);
        assert_eq!(
            errno(symlink(dir.path().join("nope"), at("gone"))),
            libc::ENOENT
        );
        assert_eq!(errno(symlink(&target, at("taken"))), libc::EEXIST);
        assert_eq!(errno(symlink(&target, at("x.meta"))), libc::EINVAL);
        // A link in the target's path is followed: the final file must be regular.
        let via = dir.path().join("via");
        symlink(&target, &via).expect("a link outside the mount");
        symlink(&via, at("via")).expect("ln -s LINK NAME");
        assert_eq!(fs::read(at("via")).expect("read"), b"x");
        let names: Vec<_> = fs::read_dir(m.path())
            .expect("ls")
            .map(|e| e.expect("entry").file_name().into_string().expect("utf-8"))
            .collect();
        assert_eq!(names.len(), 4, "{names:?}");
    }
}

mount_test! {
    fn the_file_is_opened_with_the_callers_rights(mode) {
        let dir = files_dir();
        let m = Mount::new(&format!("allow_other,{mode}"));
        users::share(&m);
        let secret = file(dir.path(), "secret", b"root only", 0o600, 0);
        let public = file(dir.path(), "public", b"read me", 0o644, 0);
        let own = file(dir.path(), "own", b"mine", 0o600, A.uid);
        let s = |n: &str| m.section(n);
        let sp = |n: &str| s(n).into_os_string().into_string().expect("utf-8 path");

        // A file A cannot read cannot become A's section.
        assert_eq!(
            A.on("symlink", &secret, &[&sp("stolen")]),
            "EACCES",
            "{mode}"
        );
        assert!(!s("stolen").exists());

        // A file A may only read gives a read-only section, whatever A does to it.
        assert_eq!(A.on("symlink", &public, &[&sp("pub")]), "ok", "{mode}");
        assert_eq!(
            A.on("stat", &s("pub"), &[]),
            format!("ok mode=400 uid={} gid={} size=7", A.uid, A.gid),
            "{mode}"
        );
        assert_eq!(A.on("cat", &s("pub"), &[]), "ok\nread me", "{mode}");
        assert_eq!(A.on("write", &s("pub"), &[]), "EACCES", "{mode}");
        assert_eq!(A.on("chmod", &s("pub"), &["666"]), "ok", "{mode}");
        for (op, more) in [
            ("write", &[][..]),
            ("pwrite", &["0", "3"][..]),
            ("mapw", &[]),
            ("grow", &["100"]),
            ("truncate", &["100"]),
            ("fallocate", &["0", "100"]),
            ("utime-now", &[]),
        ] {
            let got = A.on(op, &s("pub"), more);
            assert!(got == "EACCES" || got == "EBADF", "{mode}: {op}: {got}");
            let other = B.on(op, &s("pub"), more);
            assert!(
                other == "EACCES" || other == "EBADF",
                "{mode}: B {op}: {other}"
            );
        }
        // The first byte, in hex: the 'r' of "read me".
        assert_eq!(A.on("mapr", &s("pub"), &[]), "ok 72", "{mode}");
        assert_eq!(
            fs::read(&public).expect("read"),
            b"read me",
            "{mode}: untouched"
        );
        assert_eq!(fs::metadata(&public).expect("stat").len(), 7);

        // A file A may write gives A a read-write section, private to A.
        assert_eq!(A.on("symlink", &own, &[&sp("mine")]), "ok", "{mode}");
        assert_eq!(A.on("pwrite", &s("mine"), &["0", "2"]), "ok 2", "{mode}");
        assert_eq!(fs::read(&own).expect("read"), b"qqne", "{mode}");
        assert_eq!(B.on("read", &s("mine"), &[]), "EACCES", "{mode}");
        // Times: "now" with write permission, as on the file itself; a chosen time only
        // for the file's owner (A owns this one).
        assert_eq!(A.on("utime-set", &s("mine"), &[]), "ok", "{mode}");
        fs::set_permissions(&own, fs::Permissions::from_mode(0o666)).expect("chmod");
        std::os::unix::fs::chown(&own, Some(0), Some(0)).expect("chown");
        assert_eq!(A.on("utime-now", &s("mine"), &[]), "ok", "{mode}");
        assert_eq!(A.on("utime-set", &s("mine"), &[]), "EPERM", "{mode}");
        for f in [&secret, &public, &own] {
            fs::remove_file(f).expect("rm");
        }
        m.unmount();
    }
}

mount_test! {
    fn survives_a_restart_and_a_missing_file_is_left_aside() {
        let dir = files_dir();
        let store_dir = tempfile::tempdir().expect("temp dir");
        let store = store_dir.path().join("store");
        let kept = file(dir.path(), "kept", b"kept bytes", 0o644, 0);
        let lost = file(dir.path(), "lost", b"lost bytes", 0o644, 0);
        {
            let m = Mount::with_store(&store, "");
            symlink(&kept, m.section("kept")).expect("ln -s");
            symlink(&lost, m.section("lost")).expect("ln -s");
            fs::write(m.section("plain"), b"plain").expect("create plain");
            m.unmount();
        }
        fs::remove_file(&lost).expect("rm lost");
        let m = Mount::with_store(&store, "");
        let mut f = fs::File::open(m.section("kept")).expect("open kept after the restart");
        let mut text = String::new();
        f.read_to_string(&mut text).expect("read");
        assert_eq!(text, "kept bytes");
        f.seek(SeekFrom::Start(0)).expect("seek");
        drop(f);
        assert_eq!(
            common::read_meta(m.path(), "kept")["backing"],
            format!("file:{}", kept.display())
        );
        assert!(
            !m.section("lost").exists(),
            "a file gone: its section is left aside"
        );
        assert_eq!(fs::read(m.section("plain")).expect("read plain"), b"plain");
        assert!(m.log().contains("cannot reopen"), "{}", m.log());
        // The record is kept, untouched, for whoever puts the file back.
        assert_eq!(users::backing_files(&store).len(), 3);
    }
}
