//! Issue 2, the foundation: the command line. Background start and stop, refusals with
//! one line on stderr, `-o` options, and the ways a foreground daemon is stopped.

use crate::common;

use common::Mount;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::thread;
use std::time::{Duration, Instant};

const DEADLINE: Duration = Duration::from_secs(10);

/// `sectionfs ARGS`, without RUST_LOG, so stderr holds only what a user sees.
fn sectionfs<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    Command::new(common::daemon_bin())
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run sectionfs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A temp dir with `mnt/` for a background mount; on drop it detaches anything still
/// mounted there (a failing test must not leave a mount behind).
struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Scratch {
        let dir = tempfile::Builder::new()
            .prefix("sectionfs-cli-")
            .tempdir()
            .unwrap();
        fs::create_dir(dir.path().join("mnt")).unwrap();
        Scratch { dir }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().canonicalize().unwrap()
    }

    fn mnt(&self) -> PathBuf {
        self.path().join("mnt")
    }

    fn store(&self) -> PathBuf {
        self.path().join("store")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let mnt = self.mnt();
        if common::is_mounted(&mnt) {
            let _ = common::umount(&mnt, true);
        }
    }
}

/// Polls `done` until it holds or the deadline passes.
fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {DEADLINE:?}");
        thread::sleep(Duration::from_millis(10));
    }
}

/// True while a process with this pid exists and is not a zombie.
fn alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // Field 3, after the parenthesised command name, is the state.
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z')),
        Err(_) => false,
    }
}

/// FUSE_SUPER_MAGIC from <linux/magic.h>.
const FUSE_SUPER_MAGIC: i64 = 0x6573_5546;

fn fs_type(path: &Path) -> i64 {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: zeroed statfs is a valid out-buffer; NUL-terminated path.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let rc = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    assert_eq!(
        rc,
        0,
        "statfs {}: {}",
        path.display(),
        io::Error::last_os_error()
    );
    st.f_type as i64
}

mount_test! {
    fn background_mount_is_live_at_exit_and_umount_stops_it() {
        let s = Scratch::new();
        let out = sectionfs([s.store(), s.mnt()]);
        assert!(
            out.status.success(),
            "{}: {}",
            out.status,
            text(&out.stderr)
        );
        // Live the moment the command returns: no waiting.
        assert_eq!(
            fs_type(&s.mnt()),
            FUSE_SUPER_MAGIC,
            "statfs right after exit"
        );
        assert!(common::is_mounted(&s.mnt()));
        let stdout = text(&out.stdout);
        assert!(
            stdout.contains(&*s.store().to_string_lossy()),
            "prints the store: {stdout:?}"
        );
        assert_eq!(text(&out.stderr), "", "nothing on stderr");
        fs::write(s.mnt().join("sec"), b"bg").unwrap();
        assert_eq!(fs::read(s.mnt().join("sec")).unwrap(), b"bg");

        // The lock file names the daemon (not the parent that already exited).
        let pid: u32 = fs::read_to_string(s.store().join("lock"))
            .unwrap()
            .trim()
            .parse()
            .expect("a pid in the store's lock");
        assert!(alive(pid), "the daemon {pid} from the lock file is running");
        let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap();
        assert!(
            text(&cmdline).contains("sectionfs"),
            "pid {pid} is sectionfs: {:?}",
            text(&cmdline)
        );

        let umount = Command::new("umount").arg(s.mnt()).output().unwrap();
        assert!(umount.status.success(), "umount: {}", text(&umount.stderr));
        eventually("the daemon exits after umount", || !alive(pid));
        assert!(!common::is_mounted(&s.mnt()));
    }
}

mount_test! {
    /// Every refusal: a non-zero exit, exactly one line on stderr naming what is wrong, and
    /// no mount.
    fn refusals_give_one_line_and_no_mount() {
        let s = Scratch::new();
        let file = s.path().join("a-file");
        fs::write(&file, b"x").unwrap();
        let missing = s.path().join("missing");
        let store = s.store();
        let mnt = s.mnt();
        let cases: Vec<(&str, Vec<PathBuf>, String)> = vec![
            (
                "missing mount point",
                vec![store.clone(), missing.clone()],
                missing.display().to_string(),
            ),
            (
                "mount point is a file",
                vec![store.clone(), file.clone()],
                "not a directory".into(),
            ),
            (
                "store is a file",
                vec![file.clone(), mnt.clone()],
                format!("store {}: not a directory", file.display()),
            ),
            (
                "unknown -o option",
                vec![
                    "-o".into(),
                    "rw,bogus_option".into(),
                    store.clone(),
                    mnt.clone(),
                ],
                "bogus_option".into(),
            ),
            (
                "bad -o value",
                vec![
                    "-o".into(),
                    "commit=maybe".into(),
                    store.clone(),
                    mnt.clone(),
                ],
                "commit=maybe".into(),
            ),
        ];
        for (what, args, needle) in cases {
            for foreground in [false, true] {
                let mut all: Vec<PathBuf> = Vec::new();
                if foreground {
                    all.push("-f".into());
                }
                all.extend(args.iter().cloned());
                let out = sectionfs(&all);
                let stderr = text(&out.stderr);
                assert!(
                    !common::is_mounted(&mnt),
                    "{what} (-f: {foreground}): mounted anyway"
                );
                assert!(
                    !out.status.success(),
                    "{what} (-f: {foreground}): exit {}",
                    out.status
                );
                assert_eq!(
                    stderr.lines().count(),
                    1,
                    "{what} (-f: {foreground}): one line: {stderr:?}"
                );
                assert!(
                    stderr.starts_with("sectionfs: ") && stderr.contains(&needle),
                    "{what} (-f: {foreground}): {stderr:?} lacks {needle:?}"
                );
                assert_eq!(text(&out.stdout), "", "{what}: nothing on stdout");
            }
        }
        assert!(!store.exists(), "a refused command line creates no store");
        assert_eq!(
            fs::read(&file).unwrap(),
            b"x",
            "the file in the way is untouched"
        );
    }
}

mount_test! {
    fn already_mounted_is_refused() {
        let first = Mount::new("");
        fs::write(first.section("s"), b"first").unwrap();
        let other = Scratch::new();
        for fg in [&["-f"][..], &[]] {
            let mut args: Vec<PathBuf> = fg.iter().map(PathBuf::from).collect();
            args.push(other.store());
            args.push(first.path().to_path_buf());
            let out = sectionfs(&args);
            let stderr = text(&out.stderr);
            assert!(!out.status.success(), "{fg:?}: exit {}", out.status);
            assert_eq!(stderr.lines().count(), 1, "{stderr:?}");
            assert!(
                stderr.contains("already a mount point")
                    && stderr.contains(&*first.path().to_string_lossy()),
                "{stderr:?}"
            );
        }
        // The first mount is unharmed.
        assert_eq!(fs::read(first.section("s")).unwrap(), b"first");
        first.unmount();
    }
}

#[test]
fn help_and_version() {
    let help = sectionfs(["--help"]);
    assert!(help.status.success(), "--help: {}", help.status);
    let h = text(&help.stdout);
    assert!(h.contains("Usage:") && h.contains("MOUNTPOINT"), "{h}");
    for opt in ["allow_other", "ro", "commit=", "passthrough="] {
        assert!(h.contains(opt), "--help lists {opt}: {h}");
    }
    let version = sectionfs(["--version"]);
    assert!(version.status.success(), "--version: {}", version.status);
    assert_eq!(
        text(&version.stdout).trim(),
        format!("sectionfs {}", env!("CARGO_PKG_VERSION"))
    );
}

mount_test! {
    fn read_only_mount_refuses_writes_with_erofs() {
        let dir = tempfile::Builder::new()
            .prefix("sectionfs-ro-")
            .tempdir()
            .unwrap();
        let store = dir.path().join("store");
        let rw = Mount::with_store(&store, "");
        fs::write(rw.section("s"), b"bytes").unwrap();
        rw.unmount();

        let ro = Mount::with_store(&store, "ro");
        let s = ro.section("s");
        assert_eq!(fs::read(&s).unwrap(), b"bytes", "reading works");
        assert!(
            fs::read_to_string(ro.section("s.meta"))
                .unwrap()
                .contains("size=5")
        );
        let erofs = |what: &str, r: io::Result<()>| {
            let e = r.expect_err(what);
            assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{what}: {e}");
        };
        erofs(
            "open O_RDWR",
            OpenOptions::new().read(true).write(true).open(&s).map(drop),
        );
        erofs("create", fs::write(ro.section("new"), b"x"));
        erofs(
            "truncate",
            OpenOptions::new()
                .write(true)
                .open(&s)
                .and_then(|f| f.set_len(100)),
        );
        erofs("unlink", fs::remove_file(&s));
        erofs("rename", fs::rename(&s, ro.section("t")));
        erofs(
            "chmod",
            fs::set_permissions(&s, std::os::unix::fs::PermissionsExt::from_mode(0o600)),
        );
        // A read-only fd cannot be written either.
        let f = fs::File::open(&s).unwrap();
        let e = f.write_at(b"x", 0).expect_err("write on O_RDONLY");
        assert_eq!(e.raw_os_error(), Some(libc::EBADF));
        drop(f);
        assert_eq!(fs::read(&s).unwrap(), b"bytes", "nothing changed");
        assert!(
            mount_options(ro.path()).split(',').any(|o| o == "ro"),
            "mounted ro"
        );
        ro.unmount();
    }
}

/// Field `n` (0: source, 2: type, 3: options) of the mount at `mnt` in /proc/self/mounts.
fn mount_field(mnt: &Path, n: usize) -> String {
    let mounts = fs::read_to_string("/proc/self/mounts").unwrap();
    let line = mounts
        .lines()
        .find(|l| l.split(' ').nth(1) == Some(&*mnt.to_string_lossy()))
        .unwrap_or_else(|| panic!("{} not in /proc/self/mounts", mnt.display()));
    line.split(' ').nth(n).unwrap().to_string()
}

fn mount_options(mnt: &Path) -> String {
    mount_field(mnt, 3)
}

mount_test! {
    /// /proc/mounts tells what the mount is: type `fuse.sectionfs`, source the store.
    fn mount_table_names_sectionfs_and_the_store() {
        let m = Mount::new("");
        assert_eq!(mount_field(m.path(), 2), "fuse.sectionfs");
        assert_eq!(mount_field(m.path(), 0), m.store().to_string_lossy());
        let findmnt = Command::new("findmnt")
            .args(["-n", "-o", "TARGET", "-t", "fuse.sectionfs"])
            .arg(m.path())
            .output();
        if let Ok(out) = findmnt {
            assert_eq!(text(&out.stdout).trim(), m.path().to_string_lossy());
        }
        m.unmount();
    }
}

mount_test! {
    fn fstab_options_are_accepted() {
        let m = Mount::new("rw,nodev,nosuid,exec,auto,nofail");
        let mut f = fs::File::create_new(m.section("s")).unwrap();
        f.write_all(b"works").unwrap();
        drop(f);
        assert_eq!(fs::read(m.section("s")).unwrap(), b"works");
        let opts = mount_options(m.path());
        for want in ["rw", "nodev", "nosuid"] {
            assert!(opts.split(',').any(|o| o == want), "{want} in {opts}");
        }
        m.unmount();
    }
}

mount_test! {
    /// SIGTERM and SIGINT make a foreground daemon unmount by itself and exit 0.
    fn signals_unmount_and_exit_zero() {
        for sig in [libc::SIGTERM, libc::SIGINT] {
            let m = Mount::new("");
            fs::write(m.section("s"), b"x").unwrap();
            // SAFETY: a signal to our own child, which the guard has not reaped.
            assert_eq!(unsafe { libc::kill(m.pid() as i32, sig) }, 0);
            // The daemon itself must take the mount away (the guard's unmount would hide it).
            eventually(&format!("signal {sig} unmounts"), || {
                !common::is_mounted(m.path())
            });
            m.unmount();
        }
    }
}

mount_test! {
    /// `umount MNT` (the tool) makes a foreground daemon exit 0; so does `fusermount3 -u`.
    fn umount_tools_stop_the_daemon() {
        let m = Mount::new("");
        let out = Command::new("umount").arg(m.path()).output().unwrap();
        assert!(out.status.success(), "umount: {}", text(&out.stderr));
        assert!(!common::is_mounted(m.path()));
        // The guard finds no mount and requires the daemon's exit status 0.
        m.unmount();

        let Ok(which) = Command::new("sh")
            .args(["-c", "command -v fusermount3"])
            .output()
        else {
            return;
        };
        if !which.status.success() {
            eprintln!(
                "fusermount3 is not installed (Debian package fuse3; .ci/run installs it): \
                 `fusermount3 -u` not tested here"
            );
            return;
        }
        let m = Mount::new("");
        let out = Command::new("fusermount3")
            .arg("-u")
            .arg(m.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "fusermount3 -u: {}",
            text(&out.stderr)
        );
        assert!(!common::is_mounted(m.path()));
        m.unmount();
    }
}
