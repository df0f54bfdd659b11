//! The permission model (SECTIONS.md "Security", DESIGN.md "Security model"), checked with
//! real unprivileged users: A (uid 1000) and B (uid 1001) act through `setpriv` and the
//! `perm_probe` client on a mount made by root with allow_other, in both data modes.
//! Each probe answers "ok ..." or the errno's name.

use crate::common;
use crate::users;

use common::Mount;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use users::{A, B, ROOT};

/// A root mount every user may enter, like /dev/shm.
fn shared_mount(opts: &str) -> Mount {
    Mount::builder().allow_other().opts(opts).start()
}

mount_test! {
    fn a_private_section_is_closed_to_other_users(mode) {
        let m = shared_mount(mode);
        let s = m.section("secret");
        assert_eq!(A.on("open", &s, &["bc", "600", "0"]), "ok status=created");
        assert_eq!(A.on("pwrite", &s, &["0", "6"]), "ok 6");

        // B can neither use it nor learn what its sidecar says.
        for (op, more, want) in [
            ("read", &[][..], "EACCES"),
            ("write", &[], "EACCES"),
            ("open", &["b"], "EACCES"),
            ("open", &["bc", "666"], "EACCES"),
            ("open", &["rc", "666"], "EACCES"),
            ("open", &["bcx"], "EEXIST"),
            ("mapr", &[], "EACCES"),
            ("mapw", &[], "EACCES"),
            ("truncate", &["8192"], "EACCES"),
            ("utime-now", &[], "EACCES"),
            ("utime-set", &[], "EPERM"),
            ("getxattr", &["user.sectionfs.size"], "EACCES"),
            ("getxattr", &["user.sectionfs.creator_pid"], "EACCES"),
            ("unlink", &[], "EPERM"),
            ("chmod", &["666"], "EPERM"),
            ("chown", &["1001", "1001"], "EPERM"),
        ] {
            assert_eq!(B.on(op, &s, more), want, "{mode}: B {op} {more:?}");
        }
        let meta = m.section("secret.meta");
        assert_eq!(B.on("cat", &meta, &[]), "EACCES", "{mode}");
        let side = B.on("stat", &meta, &[]);
        assert!(side.starts_with("ok mode=400 uid=1000 gid=1000 "), "{side}");
        // listxattr is not a read of the file (the kernel never checks it): the daemon
        // lists no names to B.
        assert_eq!(B.on("listxattr", &s, &[]), "ok 0", "{mode}");

        // Nor take its name: rename it away, or rename a section of its own onto it.
        let stolen = m.section("stolen");
        assert_eq!(B.on("rename", &s, &[stolen.to_str().unwrap()]), "EPERM");
        let mine = m.section("mine");
        assert_eq!(B.on("open", &mine, &["bc"]), "ok status=created");
        assert_eq!(B.on("rename", &mine, &[s.to_str().unwrap()]), "EPERM");
        assert_eq!(
            B.on("stat", &mine, &[]),
            "ok mode=644 uid=1001 gid=1001 size=0"
        );
        assert_eq!(
            A.on("unlink", &mine, &[]),
            "EPERM",
            "sticky works both ways"
        );

        // Its owner may chmod it but not give it away; root may do both.
        assert_eq!(A.on("chown", &s, &["1001", "1001"]), "EPERM");
        assert_eq!(
            A.on("chown", &s, &["1000", "0"]),
            "EPERM",
            "A is not in group 0"
        );
        assert_eq!(A.on("chmod", &s, &["640"]), "ok");
        assert_eq!(ROOT.on("chown", &s, &["1001", "1001"]), "ok");
        assert_eq!(B.on("read", &s, &[]), "ok 6", "{mode}: B owns it now");
        assert_eq!(A.on("read", &s, &[]), "EACCES", "{mode}: A is now 'other'");
        assert_eq!(
            ROOT.on("cat", &s, &[]),
            "ok\nqqqqqq",
            "{mode}: bytes untouched"
        );
        assert_eq!(users::backing_files(m.store()).len(), 2, "{mode}");
        m.unmount();
    }
}

mount_test! {
    fn a_readable_section_is_read_only_to_other_users(mode) {
        let m = shared_mount(mode);
        let s = m.section("board");
        assert_eq!(A.on("open", &s, &["bc", "644", "0"]), "ok status=created");
        assert_eq!(A.on("pwrite", &s, &["0", "4096"]), "ok 4096");
        for (op, more, want) in [
            ("read", &[][..], "ok 4096"),
            ("mapr", &[], "ok 71"),
            // FILE_MAP_COPY: a private copy is B's own to write.
            ("mapp", &[], "ok"),
            ("getxattr", &["user.sectionfs.size"], "ok 4096"),
            ("write", &[], "EACCES"),
            ("open", &["b"], "EACCES"),
            ("open", &["w"], "EACCES"),
            ("open", &["rt"], "EACCES"),
            ("mapw", &[], "EACCES"),
            ("mapw-ro", &[], "EACCES"),
            ("truncate", &["8192"], "EACCES"),
            ("unlink", &[], "EPERM"),
        ] {
            assert_eq!(B.on(op, &s, more), want, "{mode}: B {op} {more:?}");
        }
        let meta = B.on("cat", &m.section("board.meta"), &[]);
        assert!(meta.contains("\nsize=4096\n"), "{mode}: {meta}");
        // Nothing B did reached A's bytes (B's private copy included).
        assert_eq!(A.on("mapr", &s, &[]), "ok 71", "{mode}");
        assert_eq!(
            A.on("stat", &s, &[]),
            "ok mode=644 uid=1000 gid=1000 size=4096"
        );
        m.unmount();
    }
}

mount_test! {
    fn open_or_create_of_another_users_name_opens_that_section() {
        let m = shared_mount("");
        let root = A.on("stat", m.path(), &[]);
        assert_eq!(
            root, "ok mode=1777 uid=0 gid=0 size=0",
            "owned by the mounting user"
        );
        let n = m.section("named");
        assert_eq!(A.on("open", &n, &["bc", "666", "022"]), "ok status=created");
        assert_eq!(A.on("grow", &n, &["4096"]), "ok 4096");
        // CreateFileMapping of an existing name: B gets A's section, already_exists.
        assert_eq!(
            B.on("open", &n, &["rc", "600", "0"]),
            "ok status=already_exists"
        );
        assert_eq!(B.on("open", &n, &["bc", "600"]), "EACCES");
        assert_eq!(B.on("open", &n, &["bcx", "600"]), "EEXIST");
        assert_eq!(B.on("open", &n, &["rct", "600"]), "EACCES");
        assert_eq!(
            ROOT.on("stat", &n, &[]),
            "ok mode=644 uid=1000 gid=1000 size=4096",
            "A's section is as A made it"
        );
        assert_eq!(users::backing_files(m.store()).len(), 1);
        assert_eq!(B.on("ls", m.path(), &[]), "ok 2", "named and named.meta");
        // A new section takes the creator's uid and gid, and the mode less its umask.
        let b = m.section("bees");
        assert_eq!(B.on("open", &b, &["bc", "666", "027"]), "ok status=created");
        assert_eq!(
            B.on("stat", &b, &[]),
            "ok mode=640 uid=1001 gid=1001 size=0"
        );
        m.unmount();
    }
}

mount_test! {
    fn without_allow_other_only_the_mounting_user_enters() {
        let m = Mount::new("");
        users::share(&m);
        fs::write(m.section("rootsec"), b"root's").expect("root writes its own mount");
        for user in [A, B] {
            for (op, path, more) in [
                ("stat", m.path().to_path_buf(), &[][..]),
                ("ls", m.path().to_path_buf(), &[]),
                ("read", m.section("rootsec"), &[]),
                ("open", m.section("new"), &["bc"]),
            ] {
                assert_eq!(user.on(op, &path, more), "EACCES", "uid {}: {op}", user.uid);
            }
        }
        assert_eq!(ROOT.on("read", &m.section("rootsec"), &[]), "ok 6");
        m.unmount();
        // The same with allow_other: anyone enters, and the modes decide.
        let m = shared_mount("");
        assert_eq!(B.on("ls", m.path(), &[]), "ok 0");
        m.unmount();
    }
}

mount_test! {
    fn the_store_is_private_and_sidecars_reveal_no_paths() {
        let m = shared_mount("");
        assert_eq!(
            A.on("open", &m.section("a"), &["bc", "644"]),
            "ok status=created"
        );
        assert_eq!(
            B.on("open", &m.section("b"), &["bc", "600"]),
            "ok status=created"
        );
        let store = m.store();
        for (dir, mode) in [
            (store.to_path_buf(), 0o700),
            (store.join("sections"), 0o700),
        ] {
            let meta = fs::symlink_metadata(&dir).expect("stat the store");
            assert_eq!(meta.mode() & 0o7777, mode, "{}", dir.display());
            assert_eq!(meta.uid(), 0, "owned by the daemon's user");
        }
        let files = users::backing_files(store);
        assert_eq!(files.len(), 2);
        for f in &files {
            assert!(
                f.len() == 16 && f.bytes().all(|c| c.is_ascii_hexdigit()),
                "backing file named by its id, never by a section name: {f:?}"
            );
            let meta = fs::symlink_metadata(store.join("sections").join(f)).expect("stat");
            assert_eq!(meta.mode() & 0o7777, 0o600, "{f}");
            assert_eq!(meta.uid(), 0, "{f}");
        }
        for user in [A, B] {
            assert_eq!(user.on("ls", store, &[]), "EACCES");
            let backing = store.join("sections").join(&files[0]);
            assert_eq!(user.on("read", &backing, &[]), "EACCES");
        }
        let text = ROOT.on("cat", &m.section("a.meta"), &[]);
        let store_text = store.to_string_lossy();
        assert!(!text.contains(&*store_text), "{text}");
        assert!(!text.contains("sections/"), "{text}");
        // The store's own record attribute is not one of the section's.
        assert_eq!(
            A.on("getxattr", &m.section("a"), &["user.sectionfs.record"]),
            "ENODATA"
        );
        m.unmount();
    }
}

/// A name a user tries, as bytes, and the errno it must be refused with.
type Refused = (Vec<u8>, &'static str);

/// Names users may give, and what each must come to.
fn hostile_names() -> (Vec<Vec<u8>>, Vec<Refused>) {
    let valid: Vec<Vec<u8>> = vec![
        b"...".to_vec(),
        b"..a".to_vec(),
        b"a..".to_vec(),
        b".hidden".to_vec(),
        b"sp ace".to_vec(),
        b"tab\tand\nnewline".to_vec(),
        b"\x01\x1b[31mred\x7f".to_vec(),
        b"\xff\xfe not utf-8 \xc3".to_vec(),
        "café ☃".as_bytes().to_vec(),
        b"-rf".to_vec(),
        b"%s%n".to_vec(),
        b"*?[".to_vec(),
        vec![b'x'; 250],
    ];
    let refused = vec![
        (vec![b'x'; 251], "ENAMETOOLONG"),
        (vec![b'y'; 255], "ENAMETOOLONG"),
        (vec![b'z'; 256], "ENAMETOOLONG"),
        (b"x.meta".to_vec(), "EINVAL"),
        (b"a\\b".to_vec(), "EINVAL"),
        (b"..\\..\\x".to_vec(), "EINVAL"),
        // Paths, not names: the kernel resolves them, the daemon never sees them.
        (b"..".to_vec(), "EISDIR"),
        (b"../escape".to_vec(), "EACCES"),
        (b"sub/x".to_vec(), "ENOENT"),
    ];
    (valid, refused)
}

fn entries(dir: &Path) -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = fs::read_dir(dir)
        .expect("list")
        .map(|e| e.expect("entry").file_name().as_bytes().to_vec())
        .collect();
    v.sort();
    v
}

mount_test! {
    fn hostile_names_stay_names_inside_the_store() {
        let store_dir = tempfile::tempdir().expect("temp dir for the store");
        let store = store_dir.path().join("store");
        let m = Mount::with_store(&store, "allow_other");
        users::share(&m);
        let around = m.path().parent().expect("parent").to_path_buf();
        let before = entries(&around);
        let (valid, refused) = hostile_names();
        let at = |name: &[u8]| m.path().join(OsStr::from_bytes(name));
        for name in &valid {
            let answer = B.probe([OsStr::new("open"), at(name).as_os_str(), OsStr::new("bc")]);
            assert_eq!(answer, "ok status=created", "{name:?}");
        }
        for (name, want) in &refused {
            let answer = B.probe([OsStr::new("open"), at(name).as_os_str(), OsStr::new("bc")]);
            assert_eq!(answer, *want, "{name:?}");
        }
        // Nor can anything but a section be made.
        let first = at(&valid[0]);
        for (op, args) in [
            ("mkdir", vec![at(b"d")]),
            ("mkfifo", vec![at(b"f")]),
            // A relative link (a link among sections); `ln -s /abs/file` makes a section
            // over that file, tested in tests/file_backed.rs.
            ("symlink", vec!["passwd".into(), at(b"ln")]),
            ("link", vec![first.clone(), at(b"hard")]),
        ] {
            let mut argv = vec![OsStr::new(op).to_os_string()];
            argv.extend(args.into_iter().map(|p| p.into_os_string()));
            assert_eq!(B.probe(&argv), "EPERM", "{op}");
        }

        let mut want: Vec<Vec<u8>> = valid
            .iter()
            .flat_map(|n| [n.clone(), [n.as_slice(), b".meta"].concat()])
            .collect();
        want.sort();
        assert_eq!(entries(m.path()), want, "every name listed as given");
        for name in &valid {
            let meta = fs::read(at(&[name.as_slice(), b".meta"].concat())).expect("sidecar");
            let text = String::from_utf8(meta).expect("a sidecar is UTF-8 whatever the name");
            assert!(
                text.lines().count() >= 8 && !text.chars().any(|c| c.is_control() && c != '\n'),
                "{name:?} escaped into one line: {text:?}"
            );
        }
        let files = users::backing_files(&store);
        assert_eq!(files.len(), valid.len());
        assert!(
            files
                .iter()
                .all(|f| f.len() == 16 && f.bytes().all(|c| c.is_ascii_hexdigit()))
        );
        assert_eq!(
            entries(&around),
            before,
            "nothing appeared beside the mount"
        );
        m.unmount();

        // The names come back unchanged from the store.
        let m = Mount::with_store(&store, "");
        assert_eq!(entries(m.path()), want);
        m.unmount();
    }
}

mount_test! {
    fn planted_links_in_the_store_are_not_followed() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = dir.path().join("store");
        let outside = dir.path().join("outside");
        fs::write(&outside, b"not a section").expect("write the bait");
        Mount::with_store(&store, "").unmount();
        // What only the daemon's own user could do: a link where a backing file would be.
        std::os::unix::fs::symlink(&outside, store.join("sections/00000000000000ff"))
            .expect("plant a link");
        let m = Mount::with_store(&store, "");
        assert_eq!(
            entries(m.path()),
            Vec::<Vec<u8>>::new(),
            "the link is no section"
        );
        fs::write(m.section("new"), b"fresh").expect("the store still works");
        m.unmount();
        assert_eq!(fs::read(&outside).expect("read the bait"), b"not a section");
        let link = fs::symlink_metadata(store.join("sections/00000000000000ff")).expect("lstat");
        assert!(link.file_type().is_symlink(), "left as it was");
    }
}

mount_test! {
    fn user_quota_caps_each_user() {
        // A quota'd mount serves data cached in both settings (auto is the default), so that
        // every growth reaches the daemon; passthrough=on cannot hold a quota and is refused.
        for mode in ["passthrough=auto", "passthrough=off"] {
            let m = shared_mount(&format!("user_quota=1m,{mode}"));
            let (a1, a2) = (m.section("a1"), m.section("a2"));
            assert_eq!(A.on("grow", &a1, &["786432"]), "ok 786432", "{mode}");
            assert_eq!(A.on("grow", &a2, &["262144"]), "ok 262144", "{mode}");
            let meta = common::read_meta(m.path(), "a2");
            assert_eq!(
                meta["io"], "cached",
                "{mode}: a quota'd mount serves data cached"
            );
            // One byte past the quota: ENOSPC, and nothing changed.
            assert_eq!(A.on("grow", &a2, &["262145"]), "ENOSPC", "{mode}");
            // Even an empty section costs a page: with the quota used up, none can be made.
            assert_eq!(A.on("open", &m.section("a3"), &["bc"]), "ENOSPC", "{mode}");
            assert_eq!(A.on("stat", &m.section("a3"), &[]), "ENOENT", "{mode}");
            assert_eq!(A.on("fallocate", &a2, &["0", "262145"]), "ENOSPC", "{mode}");
            // Storage kept past the end is no size, so the quota could not see it.
            assert_eq!(A.on("fallocate", &a2, &["0", "262145", "keep"]), "ENOSPC");
            assert_eq!(A.on("fallocate", &a2, &["0", "262144", "keep"]), "ok");
            // Every way of growing past the end meets the cap, and changes nothing.
            let past = [
                ("pwrite", ["262144", "8"]),
                ("pwrite", ["1099511627776", "1"]),
                ("copy-range", ["262144", "65536"]),
                ("splice", ["262144", "65536"]),
                ("sendfile", ["262144", "65536"]),
            ];
            for (op, args) in past {
                assert_eq!(A.on(op, &a2, &args), "ENOSPC", "{mode}: {op} {args:?}");
            }
            assert_eq!(A.on("append", &a2, &["65536"]), "ENOSPC", "{mode}: append");
            assert_eq!(
                A.on("stat", &a2, &[]),
                "ok mode=644 uid=1000 gid=1000 size=262144",
                "{mode}"
            );
            // A write that starts inside crosses the end at a page boundary, where the kernel
            // splits it: the part inside is written and the write comes back short.
            assert_eq!(A.on("pwrite", &a2, &["262140", "8"]), "ok 4");
            assert_eq!(
                A.on("pwrite", &a2, &["262136", "8"]),
                "ok 8",
                "inside is free"
            );
            // B has a quota of its own, and root is capped like anyone.
            let b = m.section("b");
            assert_eq!(B.on("grow", &b, &["1048576"]), "ok 1048576", "{mode}");
            assert_eq!(B.on("grow", &b, &["1048577"]), "ENOSPC", "{mode}");
            assert_eq!(ROOT.on("grow", &m.section("r"), &["1048577"]), "ENOSPC");
            // Unlinking gives the bytes back.
            assert_eq!(A.on("unlink", &a1, &[]), "ok");
            assert_eq!(A.on("grow", &a2, &["1048576"]), "ok 1048576", "{mode}");
            assert_eq!(A.on("grow", &a2, &["1048577"]), "ENOSPC", "{mode}");
            m.unmount();
        }
        let refused = Mount::try_new("allow_other,user_quota=1m,passthrough=on")
            .err()
            .expect("user_quota with passthrough=on must be refused");
        assert!(refused.contains("user_quota"), "{refused}");
    }
}

mount_test! {
    fn user_quota_bounds_the_number_of_sections() {
        // 64 KiB is 16 pages: 16 empty sections, then ENOSPC; unlinking one makes room.
        let m = shared_mount("user_quota=64k");
        for i in 0..16 {
            let s = m.section(format!("s{i}"));
            assert_eq!(
                A.on("open", &s, &["bc"]),
                "ok status=created",
                "section {i}"
            );
        }
        assert_eq!(A.on("open", &m.section("s16"), &["bc"]), "ENOSPC");
        assert_eq!(A.on("unlink", &m.section("s0"), &[]), "ok");
        assert_eq!(
            A.on("open", &m.section("s16"), &["bc"]),
            "ok status=created"
        );
        // Another user is not held back by A's sections.
        assert_eq!(B.on("open", &m.section("b"), &["bc"]), "ok status=created");
        m.unmount();
    }
}

mount_test! {
    fn a_sidecar_tells_nothing_to_those_who_cannot_read_it(mode) {
        let m = shared_mount(mode);
        let s = m.section("secret");
        let meta = m.section("secret.meta");
        assert_eq!(A.on("open", &s, &["bc", "600", "0"]), "ok status=created");
        // B cannot read the sidecar, and its stat says nothing that moves with the
        // section's status or handles: size 0, the section's own times.
        let seen_by_b = B.on("stat", &meta, &[]);
        assert_eq!(seen_by_b, "ok mode=400 uid=1000 gid=1000 size=0", "{mode}");
        assert_eq!(B.on("cat", &meta, &[]), "EACCES", "{mode}");
        let (section_mtime, meta_mtime) = (
            fs::metadata(&s).expect("stat section").mtime_nsec(),
            fs::metadata(&meta).expect("stat sidecar").mtime_nsec(),
        );
        assert_eq!(meta_mtime, section_mtime, "{mode}: the section's own mtime");
        // Nor do the attribute names, which the kernel lets anyone list.
        assert_eq!(B.on("listxattr", &s, &[]), "ok 0", "{mode}");
        assert_ne!(A.on("listxattr", &s, &[]), "ok 0", "{mode}");
        // A, who may read it, sees the text's length.
        let text = fs::read(&meta).expect("read the sidecar as root");
        let seen_by_a = A.on("stat", &meta, &[]);
        assert_eq!(
            seen_by_a,
            format!("ok mode=400 uid=1000 gid=1000 size={}", text.len()),
            "{mode}"
        );
        m.unmount();
    }
}

mount_test! {
    fn sectionfs_list_works_for_every_user() {
        let m = shared_mount("passthrough=auto");
        assert_eq!(
            A.on("open", &m.section("private"), &["bc", "600", "0"]),
            "ok status=created"
        );
        assert_eq!(A.on("pwrite", &m.section("private"), &["0", "5"]), "ok 5");
        assert_eq!(
            B.on("open", &m.section("shared"), &["bc", "644", "0"]),
            "ok status=created"
        );
        let bins = tempfile::Builder::new()
            .prefix("sectionfs-list-")
            .tempdir()
            .expect("temp dir");
        fs::set_permissions(bins.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
        let bin = users::exposed(&common::daemon_bin(), bins.path());
        for user in [A, B] {
            let out = user
                .command(&bin)
                .arg("list")
                .arg(m.path())
                .output()
                .expect("run sectionfs list");
            let (stdout, stderr) = (
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
            );
            assert!(out.status.success(), "uid {}: {stderr}", user.uid);
            let line = |n: &str| {
                stdout
                    .lines()
                    .find(|l| l.starts_with(&format!("{n} ")))
                    .unwrap_or_else(|| panic!("uid {}: no {n} in\n{stdout}", user.uid))
                    .split_whitespace()
                    .map(String::from)
                    .collect::<Vec<_>>()
            };
            // NAME SIZE OWNER MODE HANDLES CREATED COMMIT IO
            let private = line("private");
            assert_eq!(private[1], "5", "uid {}: the size stat shows", user.uid);
            assert_eq!(private[3], "0600");
            if user == B {
                assert_eq!(&private[4..], ["-", "-", "-", "-"], "what B may not read");
            } else {
                assert_eq!(private[6], "eager", "A reads its own sidecar");
            }
            assert_eq!(line("shared")[6], "eager", "uid {}", user.uid);
            let json = user
                .command(&bin)
                .args(["list", "--json"])
                .arg(m.path())
                .output()
                .expect("run sectionfs list --json");
            assert!(json.status.success(), "uid {}: --json", user.uid);
        }
        m.unmount();
    }
}

/// An overlayfs mount for a test, unmounted on drop.
struct Overlay {
    dir: tempfile::TempDir,
}

impl Overlay {
    fn new() -> Overlay {
        let dir = tempfile::tempdir().expect("temp dir for an overlay");
        for d in ["lower", "upper", "work", "merged"] {
            fs::create_dir(dir.path().join(d)).expect("overlay dir");
        }
        let p = |d: &str| dir.path().join(d).display().to_string();
        let opts = format!(
            "lowerdir={},upperdir={},workdir={}",
            p("lower"),
            p("upper"),
            p("work")
        );
        common::run_ok(
            std::process::Command::new("mount")
                .args(["-t", "overlay", "overlay", "-o", &opts])
                .arg(p("merged")),
        );
        Overlay { dir }
    }

    fn merged(&self) -> std::path::PathBuf {
        self.dir.path().join("merged")
    }
}

impl Drop for Overlay {
    fn drop(&mut self) {
        // Lazily: a daemon that still holds the file (a test that failed) lets go later.
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.merged())
            .status();
    }
}

mount_test! {
    fn users_cannot_flood_the_log(mode) {
        let m = Mount::new_quiet(&format!("allow_other,{mode}"));
        users::share(&m);
        let mut overlay = None;
        // What a caller causes is a refusal, logged at debug: nothing at the default level.
        let before = m.log().len();
        let loop_ = format!(
            "i=0; while [ $i -lt 150 ]; do \
               ln -s /etc/shadow {0}/s$i; ln -s /nonexistent/x {0}/n$i; \
               ln -s /root/.bashrc {0}/r$i; i=$((i+1)); done 2>/dev/null",
            m.path().display()
        );
        let status = B.command("sh").args(["-c", &loop_]).status().expect("sh");
        assert!(status.success());
        assert_eq!(B.on("stat", &m.section("s0"), &[]), "ENOENT", "{mode}");
        let grown = m.log()[before..].to_string();
        assert!(grown.len() < 1024, "{mode}: the log grew by\n{grown}");
        if mode == "passthrough=on" {
            // A fault a caller can repeat (a file the kernel cannot pass through: its
            // stack is too deep) is a warning, but at most a burst of them.
            let target = overlay.insert(Overlay::new()).merged().join("f");
            fs::write(&target, b"on an overlay").expect("write the overlay file");
            let section = m.section("over");
            std::os::unix::fs::symlink(&target, &section).expect("ln -s");
            for _ in 0..100 {
                let e = fs::File::open(&section).expect_err("passthrough of an overlay file");
                assert_eq!(e.raw_os_error(), Some(libc::EIO));
            }
            let warnings = m.log().lines().filter(|l| l.contains("WARN")).count();
            assert!(warnings <= 20, "{mode}: {warnings} warnings\n{}", m.log());
            assert!(warnings >= 1, "{mode}: the fault is reported\n{}", m.log());
        }
        m.unmount();
        drop(overlay);
    }
}
