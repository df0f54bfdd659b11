//! The `Global\` and `Local\` namespaces: `Global` is the root itself, `Local` the calling
//! user's own directory (`Sessions/UID`, 0700, made on first use). Through real mounts in
//! both data modes, with two unprivileged users (A = 1000, B = 1001).

use crate::common;
use crate::users;

use common::Mount;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use users::{A, B};

/// A root mount every user may enter, like /dev/shm.
fn shared_mount(store: Option<&Path>, opts: &str) -> Mount {
    let builder = Mount::builder().allow_other().opts(opts);
    match store {
        Some(s) => builder.store(s),
        None => builder,
    }
    .start()
}

fn names(dir: &Path) -> Vec<String> {
    let mut n: Vec<String> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("ls {}: {e}", dir.display()))
        .map(|e| e.expect("entry").file_name().into_string().expect("utf-8"))
        .collect();
    n.sort();
    n
}

mount_test! {
    fn each_user_has_its_own_local_and_global_is_the_root(mode) {
        let m = shared_mount(None, mode);
        let at = |p: &str| m.path().join(p);

        // Two users, one name, two sections.
        assert_eq!(A.on("pwrite", &at("Local/Name"), &["0", "3"]), "ENOENT");
        assert_eq!(
            A.on("open", &at("Local/Name"), &["bc", "600"]),
            "ok status=created"
        );
        assert_eq!(
            B.on("open", &at("Local/Name"), &["bc", "600"]),
            "ok status=created"
        );
        assert_eq!(
            A.on("pwrite", &at("Local/Name"), &["0", "3"]),
            "ok 3",
            "{mode}"
        );
        assert_eq!(
            B.on("pwrite", &at("Local/Name"), &["0", "5"]),
            "ok 5",
            "{mode}"
        );
        assert_eq!(
            A.on("stat", &at("Local/Name"), &[]),
            "ok mode=600 uid=1000 gid=1000 size=3"
        );
        assert_eq!(
            B.on("stat", &at("Local/Name"), &[]),
            "ok mode=600 uid=1001 gid=1001 size=5"
        );
        assert_eq!(
            A.on("ls", &at("Local"), &[]),
            "ok 2",
            "{mode}: Name and Name.meta"
        );

        // Each directory is its user's, 0700; neither user reaches the other's.
        for u in [A, B] {
            let dir = fs::metadata(at(&format!("Sessions/{}", u.uid))).expect("stat");
            assert!(dir.is_dir());
            assert_eq!(
                (dir.mode() & 0o7777, dir.uid(), dir.gid()),
                (0o700, u.uid, u.gid)
            );
        }
        assert_eq!(A.on("read", &at("Sessions/1001/Name"), &[]), "EACCES");
        assert_eq!(B.on("read", &at("Sessions/1000/Name"), &[]), "EACCES");
        assert_eq!(B.on("ls", &at("Sessions/1000"), &[]), "EACCES");
        assert_eq!(
            A.on("ls", &at("Sessions"), &[]),
            "EACCES",
            "no listing of users"
        );
        assert_eq!(A.on("open", &at("Sessions/1001/x"), &["bc"]), "EACCES");
        // A directory is made for its own user only.
        assert_eq!(A.on("stat", &at("Sessions/1002"), &[]), "ENOENT");
        // Nobody's Local is the global namespace.
        assert!(!at("Name").exists());

        // Global/Name is Name, for everyone.
        assert_eq!(
            A.on("open", &at("Global/Shared"), &["bc", "644"]),
            "ok status=created"
        );
        assert_eq!(
            B.on("open", &at("Shared"), &["r"]),
            "ok status=already_exists"
        );
        fs::write(at("Global/Shared"), b"through Global").expect("write as root");
        assert_eq!(fs::read(at("Shared")).expect("read"), b"through Global");
        assert_eq!(
            fs::canonicalize(at("Global/Shared")).expect("realpath"),
            at("Shared")
        );
        // The root lists sections only; the namespaces are reached by name.
        assert_eq!(names(m.path()), ["Shared", "Shared.meta"], "{mode}");
        assert_eq!(
            fs::read_link(at("Global")).expect("readlink"),
            Path::new(".")
        );
        assert_eq!(
            fs::read_link(at("Local")).expect("readlink"),
            Path::new("Sessions/0")
        );
        m.unmount();
    }
}

mount_test! {
    fn names_in_local_follow_the_same_rules_and_the_reserved_names_stay() {
        let m = shared_mount(None, "");
        let at = |p: &str| m.path().join(p);
        let errno = |r: std::io::Result<()>| r.expect_err("refused").raw_os_error();
        assert_eq!(
            errno(fs::write(at("Local/x.meta"), b"")),
            Some(libc::EINVAL)
        );
        assert_eq!(errno(fs::write(at("Local/a\\b"), b"")), Some(libc::EINVAL));
        assert_eq!(errno(fs::create_dir(at("Local/d"))), Some(libc::EPERM));
        assert_eq!(errno(fs::write(at("Sessions/x"), b"")), Some(libc::EPERM));
        fs::write(at("Local/s"), b"local").expect("create Local/s");
        assert_eq!(names(&at("Local")), ["s", "s.meta"]);
        assert_eq!(
            common::read_meta(&at("Local"), "s")["name"],
            "s",
            "the sidecar names the section as its namespace does"
        );
        // The reserved names cannot be removed, replaced or made.
        assert_eq!(errno(fs::remove_file(at("Global"))), Some(libc::EPERM));
        assert_eq!(
            errno(fs::rename(at("Local/s"), at("Global"))),
            Some(libc::EPERM)
        );
        assert_eq!(errno(fs::remove_dir(at("Sessions/0"))), Some(libc::EPERM));
        assert_eq!(errno(fs::write(at("Local"), b"")), Some(libc::EISDIR));
        // A section moves between namespaces by rename.
        fs::rename(at("Local/s"), at("Global/moved")).expect("mv Local/s Global/moved");
        assert_eq!(fs::read(at("moved")).expect("read"), b"local");
        assert!(names(&at("Local")).is_empty());
        fs::rename(at("moved"), at("Local/back")).expect("mv moved Local/back");
        assert_eq!(names(&at("Local")), ["back", "back.meta"]);
        assert!(!at("moved").exists());
    }
}

mount_test! {
    fn local_sections_survive_a_restart_and_old_reserved_names_are_left_aside() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = dir.path().join("store");
        {
            let m = shared_mount(Some(&store), "");
            assert_eq!(
                A.on("open", &m.path().join("Local/kept"), &["bc", "600"]),
                "ok status=created"
            );
            assert_eq!(
                A.on("pwrite", &m.path().join("Local/kept"), &["0", "4"]),
                "ok 4"
            );
            fs::write(m.section("Glob"), b"old").expect("create Glob");
            m.unmount();
        }
        // A store from before namespaces may hold a section named like one: rename Glob's
        // record to "Global" behind the daemon's back.
        let glob = users::backing_files(&store)
            .into_iter()
            .map(|f| store.join("sections").join(f))
            .find(|p| {
                common::get_xattr(p, "user.sectionfs.record")
                    .is_ok_and(|r| String::from_utf8_lossy(&r).contains("name=Glob\n"))
            })
            .expect("Glob's backing file");
        let record = common::get_xattr(&glob, "user.sectionfs.record").expect("Glob's record");
        let renamed = String::from_utf8_lossy(&record).replace("name=Glob\n", "name=Global\n");
        common::set_xattr(&glob, "user.sectionfs.record", renamed.as_bytes())
            .expect("rewrite Glob's record");

        let m = shared_mount(Some(&store), "");
        assert_eq!(
            A.on("stat", &m.path().join("Local/kept"), &[]),
            "ok mode=600 uid=1000 gid=1000 size=4"
        );
        assert_eq!(B.on("stat", &m.path().join("Local/kept"), &[]), "ENOENT");
        assert_eq!(
            fs::read_link(m.path().join("Global")).expect("Global is still the link"),
            Path::new(".")
        );
        assert!(m.log().contains("reserved"), "{}", m.log());
        assert!(glob.exists(), "left aside, untouched");
    }
}

mount_test! {
    fn a_local_section_with_lifetime_handles_goes_with_its_last_handle(mode) {
        let m = Mount::new(&format!("lifetime=handles,{mode}"));
        let path = m.path().join("Local/brief");
        let f = fs::File::create(&path).expect("create Local/brief");
        assert!(path.exists());
        drop(f);
        let start = std::time::Instant::now();
        while path.exists() {
            assert!(
                start.elapsed() < std::time::Duration::from_secs(10),
                "{mode}"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(names(&m.path().join("Local")).is_empty(), "{mode}");
    }
}
