//! Paths the daemon resolves on a user's behalf (`ln -s /path NAME`), attacked as real
//! unprivileged users through real root mounts with `allow_other`, in both data modes:
//! no target may hang the mount by leading back into it, no magic link may resolve in the
//! daemon's context, group rights end with membership after a restart, and a link to a
//! section never pins the mount.

use crate::common;
use crate::users;

use common::Mount;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};
use tempfile::TempDir;
use users::{A, B, User};

/// How long one `ln -s` may take before it counts as a hang.
const HANG: Duration = Duration::from_secs(10);

fn files_dir() -> TempDir {
    let dir = tempfile::Builder::new()
        .prefix("sectionfs-paths-")
        .tempdir()
        .expect("temp dir");
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod 0755");
    dir
}

/// The FUSE connection number of the mount at `mnt` (its minor device), read from
/// mountinfo so that asking never touches the mount itself.
fn connection(mnt: &Path) -> u32 {
    let table = fs::read_to_string("/proc/self/mountinfo").expect("read mountinfo");
    for line in table.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        if f.len() > 4 && Path::new(f[4]) == mnt {
            let minor = f[2].split(':').nth(1).expect("MAJ:MIN");
            return minor.parse().expect("a minor number");
        }
    }
    panic!("{} is not in mountinfo", mnt.display());
}

/// Frees a hung FUSE connection (the only way out once a daemon thread waits on its own
/// mount): `echo 1 > /sys/fs/fuse/connections/N/abort`.
fn abort_connection(n: u32) {
    let ctl = Path::new("/sys/fs/fuse/connections");
    if !ctl.join(n.to_string()).exists() {
        let _ = Command::new("mount")
            .args(["-t", "fusectl", "none"])
            .arg(ctl)
            .status();
    }
    fs::write(ctl.join(n.to_string()).join("abort"), "1").expect("abort the FUSE connection");
}

/// `ln -s TARGET LINK` as `cmd`'s user (a perm_probe command line), with a deadline. A
/// hang aborts the mount's connection (so the test fails instead of hanging) and answers
/// "HANG".
fn run_with_deadline(mut cmd: Command, conn: u32) -> String {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn perm_probe");
    let deadline = Instant::now() + HANG;
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            let out = child.wait_with_output().expect("perm_probe output");
            return String::from_utf8_lossy(&out.stdout).trim_end().to_string();
        }
        if Instant::now() >= deadline {
            abort_connection(conn);
            let _ = child.wait();
            return "HANG".into();
        }
        thread::sleep(Duration::from_millis(20));
    }
}

fn ln_s(user: User, target: &Path, link: &Path, conn: u32) -> String {
    let mut cmd = user.command(users::probe_bin());
    cmd.arg("symlink").arg(target).arg(link);
    run_with_deadline(cmd, conn)
}

/// A bind mount of a directory, undone on drop.
struct Bind(PathBuf);

impl Bind {
    fn new(from: &Path, to: &Path) -> Bind {
        common::run_ok(Command::new("mount").arg("--bind").arg(from).arg(to));
        Bind(to.to_path_buf())
    }
}

impl Drop for Bind {
    fn drop(&mut self) {
        let _ = common::umount(&self.0, true);
    }
}

mount_test! {
    serial fn a_target_in_this_mount_is_refused_without_hanging(mode) {
        let dir = files_dir();
        let m = Mount::new(&format!("allow_other,{mode}"));
        users::share(&m);
        let conn = connection(m.path());
        let bind_at = dir.path().join(format!("bind-{mode}"));
        fs::create_dir(&bind_at).expect("mkdir bind point");
        let bind = Bind::new(m.path(), &bind_at);
        // B's own link elsewhere that leads back into the mount.
        let b_dir = dir.path().join(format!("b-{mode}"));
        fs::create_dir(&b_dir).expect("mkdir");
        std::os::unix::fs::chown(&b_dir, Some(B.uid), Some(B.gid)).expect("chown");
        common::run_ok(
            B.command("ln")
                .arg("-s")
                .arg(m.section("neverseen3"))
                .arg(b_dir.join("into")),
        );
        let targets = [
            m.section("neverseen"),
            m.path().join("Global").join("neverseen2"),
            m.path().join("Local").join("neverseen4"),
            b_dir.join("into"),
            bind_at.join("neverseen5"),
            // The mount point itself, and a path that walks through and out again.
            m.path().to_path_buf(),
            m.path().join("..").join("x"),
        ];
        for (i, target) in targets.iter().enumerate() {
            let link = m.section(format!("X{i}"));
            let got = ln_s(B, target, &link, conn);
            assert_eq!(
                got,
                "EPERM",
                "{mode}: ln -s {} {}",
                target.display(),
                link.display()
            );
            assert!(!link.exists(), "{mode}: {}", link.display());
        }
        // The mount still serves everyone, root's ls included.
        let names = fs::read_dir(m.path()).expect("ls the root").count();
        assert_eq!(names, 0, "{mode}");
        assert!(
            m.log().contains("target path reaches a FUSE filesystem"),
            "{mode}: {}",
            m.log()
        );
        drop(bind);
        m.unmount();
    }
}

mount_test! {
    serial fn no_magic_link_resolves_through_the_daemon(mode) {
        let dir = files_dir();
        let m = Mount::new(&format!("allow_other,{mode}"));
        users::share(&m);
        let conn = connection(m.path());
        let pid = m.pid();
        // A chain B makes in a directory of its own: l1 -> l2 -> /proc/self/fd/2, and
        // one through /dev/fd.
        let b_dir = dir.path().join(format!("chain-{mode}"));
        fs::create_dir(&b_dir).expect("mkdir");
        std::os::unix::fs::chown(&b_dir, Some(B.uid), Some(B.gid)).expect("chown");
        for (link, to) in [
            ("l2", "/proc/self/fd/2"),
            ("l1", "l2"),
            ("d", "/dev/fd"),
            ("up", ".."),
        ] {
            common::run_ok(B.command("ln").arg("-s").arg(to).arg(b_dir.join(link)));
        }
        let targets: Vec<PathBuf> = vec![
            "/proc/self/fd/2".into(),
            "/proc/self/cwd/Cargo.toml".into(),
            "/proc/thread-self/fd/2".into(),
            "/proc/self/root/etc/passwd".into(),
            format!("/proc/{pid}/fd/2").into(),
            format!("/proc/{pid}/cwd/Cargo.toml").into(),
            "/dev/fd/2".into(),
            "/dev/stdin".into(),
            "/dev/stderr".into(),
            b_dir.join("l1"),
            b_dir.join("d").join("2"),
            b_dir.join("up").join(format!("chain-{mode}")).join("l2"),
            // A kernel interface filesystem, read-only or not, is never a section.
            "/sys/kernel/uevent_seqnum".into(),
        ];
        for (i, target) in targets.iter().enumerate() {
            let link = m.section(format!("M{i}"));
            let got = ln_s(B, target, &link, conn);
            assert_eq!(got, "EPERM", "{mode}: ln -s {}", target.display());
            assert!(!link.exists(), "{mode}: {}", link.display());
        }
        // What B could open itself still works, through B's own links.
        let public = dir.path().join(format!("public-{mode}"));
        fs::write(&public, b"public").expect("write");
        fs::set_permissions(&public, fs::Permissions::from_mode(0o644)).expect("chmod");
        common::run_ok(
            B.command("ln")
                .arg("-s")
                .arg(&public)
                .arg(b_dir.join("pub")),
        );
        let via = b_dir.join("up").join(format!("chain-{mode}")).join("pub");
        assert_eq!(ln_s(B, &via, &m.section("ok"), conn), "ok", "{mode}");
        assert_eq!(B.on("cat", &m.section("ok"), &[]), "ok\npublic", "{mode}");
        // fs.protected_symlinks holds as in the kernel: in sticky, world-writable /tmp-like
        // directories B follows no link A made (A owns neither the link's directory).
        let sticky = dir.path().join(format!("sticky-{mode}"));
        fs::create_dir(&sticky).expect("mkdir");
        fs::set_permissions(&sticky, fs::Permissions::from_mode(0o1777)).expect("chmod");
        common::run_ok(A.command("ln").arg("-s").arg(&public).arg(sticky.join("a")));
        let protected = fs::read_to_string("/proc/sys/fs/protected_symlinks")
            .map(|s| s.trim() != "0")
            .unwrap_or(false);
        let want = if protected { "EACCES" } else { "ok" };
        assert_eq!(
            ln_s(B, &sticky.join("a"), &m.section("a"), conn),
            want,
            "{mode}"
        );
        m.unmount();
    }
}

mount_test! {
    serial fn a_link_to_a_cached_section_is_refused_and_the_mount_unmounts(mode) {
        let m = Mount::new(&format!("allow_other,{mode}"));
        users::share(&m);
        let conn = connection(m.path());
        assert_eq!(
            B.on("grow", &m.section("x"), &["4096"]),
            "ok 4096",
            "{mode}"
        );
        // Its name is in the kernel's cache now: the kernel would not ask the daemon.
        assert!(m.section("x").exists());
        assert_eq!(
            ln_s(B, &m.section("x"), &m.section("y"), conn),
            "EPERM",
            "{mode}"
        );
        assert_eq!(
            ln_s(ROOT_USER, &m.section("x"), &m.section("z"), conn),
            "EPERM"
        );
        assert!(!m.section("y").exists());
        // Nothing of the mount is held by its own daemon: a plain umount works and the
        // daemon exits 0 (the guard fails otherwise).
        m.unmount();
    }
}

const ROOT_USER: User = users::ROOT;

/// A group and a user made for one test with groupadd/useradd, removed on drop.
struct TempUser {
    name: String,
    group: String,
    user: User,
    gid: u32,
}

impl TempUser {
    fn new(tag: &str) -> TempUser {
        let suffix = format!("{}{}", tag, std::process::id() % 100_000);
        let group = format!("sfsg{suffix}");
        let name = format!("sfsu{suffix}");
        // Ids far from the test users A and B (1000, 1001, which must keep no passwd
        // entry of ours), the first free one from a base.
        for id in 29_100..29_200u32 {
            let taken = |db: &str| {
                Command::new("getent")
                    .args([db, &id.to_string()])
                    .stdout(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
            };
            if taken("passwd") || taken("group") {
                continue;
            }
            common::run_ok(
                Command::new("groupadd")
                    .args(["-g", &id.to_string()])
                    .arg(&group),
            );
            let made = Command::new("useradd")
                .args(["-M", "-N", "-g", "users", "-s", "/usr/sbin/nologin"])
                .args(["-u", &id.to_string(), "-G"])
                .arg(&group)
                .arg(&name)
                .status()
                .expect("useradd");
            if !made.success() {
                let _ = Command::new("groupdel").arg(&group).status();
                panic!("useradd {name} failed: {made}");
            }
            return TempUser {
                user: User { uid: id, gid: 100 },
                name,
                group,
                gid: id,
            };
        }
        panic!("no free uid in 29100..29200");
    }

    /// perm_probe as this user with its groups from the user database (`--init-groups`),
    /// `gid` as its current group (`newgrp`).
    fn probe(&self, gid: u32, args: &[&std::ffi::OsStr]) -> Command {
        let mut cmd = Command::new("setpriv");
        cmd.arg("--reuid")
            .arg(self.user.uid.to_string())
            .arg("--regid")
            .arg(gid.to_string())
            .arg("--init-groups")
            .arg("--")
            .arg(users::probe_bin())
            .args(args);
        cmd
    }

    fn leave_group(&self) {
        common::run_ok(Command::new("gpasswd").args(["-d", &self.name, &self.group]));
    }
}

impl Drop for TempUser {
    fn drop(&mut self) {
        let _ = Command::new("userdel").arg(&self.name).status();
        let _ = Command::new("groupdel").arg(&self.group).status();
    }
}

mount_test! {
    serial fn group_rights_end_with_membership_after_a_restart() {
        let dir = files_dir();
        for (i, mode) in common::modes().into_iter().enumerate() {
            let u = TempUser::new(&i.to_string());
            let shared = dir.path().join(format!("shared-{i}"));
            fs::write(&shared, b"group data").expect("write");
            fs::set_permissions(&shared, fs::Permissions::from_mode(0o660)).expect("chmod");
            std::os::unix::fs::chown(&shared, Some(0), Some(u.gid)).expect("chgrp");
            let store_dir = tempfile::tempdir().expect("temp dir");
            let store = store_dir.path().join("store");
            let opts = format!("allow_other,{mode}");
            let os = |p: &Path| p.as_os_str().to_owned();
            {
                let m = Mount::with_store(&store, &opts);
                users::share(&m);
                let conn = connection(m.path());
                // U makes the section as a member of G, with G as its current group: the
                // record's gid is G.
                let link = m.section("g");
                let cmd = u.probe(
                    u.gid,
                    &[&os(Path::new("symlink")), &os(&shared), &os(&link)],
                );
                assert_eq!(run_with_deadline(cmd, conn), "ok", "{mode}\n{}", m.log());
                let mut st = u.probe(u.gid, &[&os(Path::new("stat")), &os(&link)]);
                let got = common::run_ok(&mut st).trim().to_string();
                assert_eq!(
                    got,
                    format!("ok mode=600 uid={} gid={} size=10", u.user.uid, u.gid),
                    "{mode}"
                );
                m.unmount();
            }
            // Still a member: a restart reopens it, read-write.
            {
                let m = Mount::with_store(&store, &opts);
                users::share(&m);
                let link = m.section("g");
                let mut w = u.probe(
                    100,
                    &[
                        &os(Path::new("pwrite")),
                        &os(&link),
                        "0".as_ref(),
                        "1".as_ref(),
                    ],
                );
                assert_eq!(common::run_ok(&mut w).trim(), "ok 1", "{mode}\n{}", m.log());
                m.unmount();
            }
            // U leaves G. The record still says gid G; after a restart it grants nothing.
            u.leave_group();
            let m = Mount::with_store(&store, &opts);
            users::share(&m);
            assert!(
                !m.section("g").exists(),
                "{mode}: a former member still reaches the file\n{}",
                m.log()
            );
            assert!(
                m.log().contains("leaving \"g\" aside"),
                "{mode}: {}",
                m.log()
            );
            assert_eq!(users::backing_files(&store).len(), 1, "{mode}: record kept");
            assert_eq!(fs::read(&shared).expect("read"), b"qroup data", "{mode}");
            m.unmount();
        }
    }
}

mount_test! {
    serial fn a_uid_without_a_passwd_entry_keeps_no_group_after_a_restart() {
        let dir = files_dir();
        // B (uid 1001) has no passwd entry; the file is readable by its gid only.
        let target = dir.path().join("group-read");
        fs::write(&target, b"for gid 1001").expect("write");
        fs::set_permissions(&target, fs::Permissions::from_mode(0o640)).expect("chmod");
        std::os::unix::fs::chown(&target, Some(0), Some(B.gid)).expect("chown");
        let store_dir = tempfile::tempdir().expect("temp dir");
        let store = store_dir.path().join("store");
        {
            let m = Mount::with_store(&store, "allow_other");
            users::share(&m);
            let conn = connection(m.path());
            assert_eq!(ln_s(B, &target, &m.section("r"), conn), "ok");
            assert_eq!(B.on("cat", &m.section("r"), &[]), "ok\nfor gid 1001");
            m.unmount();
        }
        let m = Mount::with_store(&store, "allow_other");
        assert!(!m.section("r").exists(), "{}", m.log());
        assert!(m.log().contains("leaving \"r\" aside"), "{}", m.log());
        m.unmount();
    }
}
