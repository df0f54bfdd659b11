//! Mounting without root: user A (uid 1000) runs the daemon through `setpriv`, so the
//! mount goes through fusermount3 (Debian package fuse3), with the store in a directory
//! A owns. Passthrough needs CAP_SYS_ADMIN, so the cached fallback serves the data.

use crate::common;
use crate::users;

use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use users::{A, B, ROOT, User, UserMount};

/// The C section client, where user processes can run it.
fn client(m: &UserMount) -> PathBuf {
    users::exposed(&common::c_client(), m.dir())
}

fn run_as(user: User, program: &Path, args: &[&OsStr]) -> String {
    common::run_ok(user.command(program).args(args))
}

mount_test! {
    fn a_user_mounts_without_root_and_its_views_stay_coherent() {
        let m = UserMount::new(A, "");
        let client = client(&m);
        let s = m.section("counter");
        let arg = s.as_os_str();
        let os = OsStr::new;
        assert_eq!(
            run_as(A, &client, &[os("create"), arg, os("65536")]),
            "status=created\nsize=65536\n"
        );
        // passthrough=auto: the kernel refuses the unprivileged daemon, so data is cached.
        let meta = A.on("cat", &m.section("counter.meta"), &[]);
        assert!(meta.contains("\nio=cached\n"), "{meta}");
        assert!(m.log().contains("passthrough unavailable"), "{}", m.log());

        // Two of A's processes share one MAP_SHARED section through the page cache.
        run_as(
            A,
            &client,
            &[os("fill"), arg, os("4096"), os("8192"), os("171")],
        );
        run_as(
            A,
            &client,
            &[os("check"), arg, os("4096"), os("8192"), os("171")],
        );
        let rounds = "300";
        let spawn = |role: &str| {
            A.command(&client)
                .args([os("pingpong"), arg, os(role), os(rounds)])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn pingpong")
        };
        let (even, odd) = (spawn("even"), spawn("odd"));
        for (role, child) in [("even", even), ("odd", odd)] {
            let out = child.wait_with_output().expect("wait for pingpong");
            let said = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "{role}: {} {said} {:?}",
                out.status,
                out.stderr
            );
            assert!(said == "ok 600\n" || said == "ok 599\n", "{role}: {said}");
        }

        // Without allow_other nobody else enters, root included.
        for user in [B, ROOT] {
            assert_eq!(user.on("stat", m.path(), &[]), "EACCES", "uid {}", user.uid);
            assert_eq!(user.on("read", &s, &[]), "EACCES", "uid {}", user.uid);
        }
        // The root of A's mount is A's, sticky and open to all, as the model says.
        assert_eq!(
            A.on("stat", m.path(), &[]),
            "ok mode=1777 uid=1000 gid=1000 size=0"
        );

        // The store is A's own and private.
        let store = m.store().expect("a store was given");
        let meta = fs::metadata(store).expect("stat the store");
        assert_eq!((meta.uid(), meta.mode() & 0o777), (1000, 0o700));
        for f in users::backing_files(store) {
            let meta = fs::metadata(store.join("sections").join(&f)).expect("stat");
            assert_eq!((meta.uid(), meta.mode() & 0o777), (1000, 0o600), "{f}");
        }

        // A unmounts its own mount with the helper; the daemon then exits cleanly.
        common::run_ok(A.command("fusermount3").arg("-u").arg(m.path()));
        m.wait_clean_exit();
    }
}

mount_test! {
    fn sigterm_unmounts_a_users_mount() {
        let m = UserMount::new(A, "passthrough=off");
        assert_eq!(A.on("grow", &m.section("s"), &["4096"]), "ok 4096");
        // umount(2) is refused to the daemon's user: it must go through fusermount3.
        // SAFETY: kill of our own child's pid, which has not been reaped.
        assert_eq!(unsafe { libc::kill(m.pid() as i32, libc::SIGTERM) }, 0);
        m.wait_clean_exit();
    }
}

mount_test! {
    fn passthrough_on_is_refused_without_root() {
        let err = UserMount::refused(A, "passthrough=on");
        assert!(err.contains("CAP_SYS_ADMIN"), "{err}");
        assert!(!err.contains("mount left behind"), "{err}");
    }
}

/// Whether /etc/fuse.conf lets users ask for allow_other.
fn user_allow_other() -> bool {
    fs::read_to_string("/etc/fuse.conf")
        .unwrap_or_default()
        .lines()
        .any(|l| l.trim() == "user_allow_other")
}

mount_test! {
    fn allow_other_for_a_user_follows_fuse_conf() {
        match (user_allow_other(), UserMount::try_new(A, "allow_other")) {
            (false, Err(e)) => assert!(e.contains("user_allow_other"), "{e}"),
            (false, Ok(_)) => panic!("allow_other granted although fuse.conf does not allow it"),
            (true, Ok(m)) => {
                assert_eq!(
                    A.on("open", &m.section("s"), &["bc", "600"]),
                    "ok status=created"
                );
                assert_eq!(B.on("ls", m.path(), &[]), "ok 2");
                assert_eq!(B.on("read", &m.section("s"), &[]), "EACCES");
            }
            (true, Err(e)) => panic!("user_allow_other is set, yet: {e}"),
        }
    }
}

mount_test! {
    fn a_users_default_store_is_private_on_tmpfs() {
        let parent = Path::new("/dev/shm/sectionfs-1000");
        let made_parent = !parent.exists();
        let m = UserMount::with_default_store(A, "");
        // The daemon's own naming, under uid 1000's directory (this test runs as root).
        let default = sectionfs::daemon::default_store(m.path());
        let store = parent.join(default.file_name().expect("a store has a name"));
        assert_eq!(A.on("grow", &m.section("s"), &["8192"]), "ok 8192");
        for dir in [parent, &store] {
            let meta = fs::symlink_metadata(dir).expect("stat the default store");
            assert!(meta.is_dir(), "{}", dir.display());
            assert_eq!(
                (meta.uid(), meta.mode() & 0o777),
                (1000, 0o700),
                "{}",
                dir.display()
            );
        }
        assert_eq!(users::backing_files(&store).len(), 1);
        drop(m);
        fs::remove_dir_all(&store).expect("remove the test's store");
        if made_parent {
            let _ = fs::remove_dir(parent);
        }
    }
}

mount_test! {
    fn a_store_owned_by_someone_else_is_refused() {
        // A cannot serve a store it does not own (here: root's), even if it may enter it.
        let dir = tempfile::tempdir().expect("temp dir");
        let store = dir.path().join("store");
        fs::create_dir(&store).expect("create");
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
        let mnt = dir.path().join("mnt");
        fs::create_dir(&mnt).expect("create mnt");
        std::os::unix::fs::chown(&mnt, Some(1000), Some(1000)).expect("chown mnt");
        let bin = users::exposed(&common::daemon_bin(), dir.path());
        let out = A
            .command(&bin)
            .arg("-f")
            .arg(&store)
            .arg(&mnt)
            .output()
            .expect("run sectionfs as A");
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("store"), "{err}");
        assert!(!common::is_mounted(&mnt));
    }
}
