//! Real unprivileged users for the security tests: running a program as another uid
//! (`setpriv`), the `perm_probe` client, and [`UserMount`], a mount guard whose daemon runs
//! as an unprivileged user.
//!
//! `tests/mount/main.rs` includes it beside `common`.
#![allow(dead_code)]

use crate::common;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// A user a test acts as. No passwd entry is needed: setpriv takes numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct User {
    pub uid: u32,
    pub gid: u32,
}

pub const ROOT: User = User { uid: 0, gid: 0 };
/// The two unprivileged users of every test.
pub const A: User = User {
    uid: 1000,
    gid: 1000,
};
pub const B: User = User {
    uid: 1001,
    gid: 1001,
};

const DEADLINE: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(10);

impl User {
    /// A command that runs `program` as this user, with no supplementary groups.
    pub fn command(self, program: impl AsRef<OsStr>) -> Command {
        if self == ROOT {
            return Command::new(program);
        }
        let mut cmd = Command::new("setpriv");
        cmd.arg("--reuid")
            .arg(self.uid.to_string())
            .arg("--regid")
            .arg(self.gid.to_string())
            .arg("--clear-groups")
            .arg("--")
            .arg(program);
        cmd
    }

    /// Runs `perm_probe ARGS` as this user and returns its answer: "ok ..." or an errno
    /// name such as "EACCES" (see tests/clients/perm_probe.c).
    pub fn probe<I, S>(self, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = self.command(probe_bin());
        cmd.args(args);
        let out = output(&mut cmd);
        assert!(
            out.status.success(),
            "{cmd:?} failed with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim_end().to_string()
    }

    /// `probe` for a path and more text arguments.
    pub fn on(self, op: &str, path: &Path, more: &[&str]) -> String {
        let mut args: Vec<&OsStr> = vec![OsStr::new(op), path.as_os_str()];
        args.extend(more.iter().map(OsStr::new));
        self.probe(args)
    }
}

fn output(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"))
}

/// Unprivileged users may use FUSE only if they may open /dev/fuse (fusermount3 opens it
/// as the calling user too). Debian's udev rule makes it 0666; a container may leave it
/// 0600. Give it Debian's mode, as root, for the tests that mount as a user.
pub fn open_dev_fuse_to_users() {
    let meta = fs::metadata("/dev/fuse").expect("stat /dev/fuse");
    if meta.mode() & 0o666 != 0o666 {
        eprintln!(
            "note: /dev/fuse was {:o}; giving it Debian's 0666",
            meta.mode() & 0o777
        );
        fs::set_permissions("/dev/fuse", fs::Permissions::from_mode(0o666))
            .expect("chmod 0666 /dev/fuse");
    }
}

/// True if every directory above `path` lets others search it and `path` lets them
/// read and execute it.
fn reachable_by_others(path: &Path) -> bool {
    let mode = |p: &Path| fs::metadata(p).map(|m| m.mode()).unwrap_or(0);
    mode(path) & 0o005 == 0o005
        && path
            .ancestors()
            .skip(1)
            .all(|dir| mode(dir) & 0o001 == 0o001)
}

/// `program`, where other users can run it: itself if they can reach it, else a copy in
/// `dir` (which must itself be reachable).
pub fn exposed(program: &Path, dir: &Path) -> PathBuf {
    if reachable_by_others(program) {
        return program.to_path_buf();
    }
    let name = program.file_name().expect("a program has a file name");
    let copy = dir.join(name);
    if !copy.exists() {
        fs::copy(program, &copy)
            .unwrap_or_else(|e| panic!("copy {} to {}: {e}", program.display(), dir.display()));
        fs::set_permissions(&copy, fs::Permissions::from_mode(0o755)).expect("chmod the copy");
    }
    copy
}

/// The probe, compiled once per test binary, where the test users can run it.
pub fn probe_bin() -> PathBuf {
    static BIN: OnceLock<(PathBuf, Option<TempDir>)> = OnceLock::new();
    let (bin, _keep) = BIN.get_or_init(|| {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/perm_probe.c");
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
        fs::create_dir_all(dir).expect("create CARGO_TARGET_TMPDIR");
        let tmp = dir.join(format!("perm_probe.{}.tmp", std::process::id()));
        common::run_ok(
            Command::new("cc")
                .args(["-O2", "-Wall", "-Werror", "-o"])
                .arg(&tmp)
                .arg(&src),
        );
        let bin = dir.join("perm_probe");
        fs::rename(&tmp, &bin).expect("move perm_probe into place");
        if reachable_by_others(&bin) {
            return (bin, None);
        }
        // The target directory is private: keep a copy in a temp dir others can reach.
        let keep = tempfile::Builder::new()
            .prefix("sectionfs-probe-")
            .tempdir()
            .expect("temp dir for the probe");
        fs::set_permissions(keep.path(), fs::Permissions::from_mode(0o755))
            .expect("chmod the probe's dir");
        let bin = exposed(&bin, keep.path());
        (bin, Some(keep))
    });
    bin.clone()
}

/// Lets other users search the directory holding a `common::Mount`'s mountpoint (a
/// private temp dir), so that they reach the mount. The store beside it stays 0700.
pub fn share(mount: &common::Mount) {
    common::share(mount);
}

/// Names of the backing files in a store's `sections/` directory (read as root).
pub fn backing_files(store: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(store.join("sections"))
        .expect("list the store")
        .map(|e| {
            e.expect("store entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

/// One `sectionfs -f` run by an unprivileged user (through setpriv, so the mount goes
/// through fusermount3), in a temp dir: `mnt/` and `home/` belong to the user, the
/// store is `home/store` unless the daemon is given none. Dropping it unmounts (as root),
/// waits for the daemon and requires a clean exit, like `common::Mount`.
pub struct UserMount {
    user: User,
    child: Child,
    exit: Option<ExitStatus>,
    mnt: PathBuf,
    store: Option<PathBuf>,
    log_path: PathBuf,
    finished: bool,
    _dir: TempDir,
}

impl UserMount {
    /// Mounts a fresh store in the user's `home/`.
    pub fn new(user: User, opts: &str) -> UserMount {
        UserMount::try_start(user, opts, true).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Like `new`, but a daemon that exits or never mounts is an `Err` with its log.
    pub fn try_new(user: User, opts: &str) -> Result<UserMount, String> {
        UserMount::try_start(user, opts, true)
    }

    /// Mounts with no STORE argument: the daemon picks its default store.
    pub fn with_default_store(user: User, opts: &str) -> UserMount {
        UserMount::try_start(user, opts, false).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Runs a daemon that must give up by itself (a refused option, say) and returns its
    /// log, marked "(mount left behind)" if it left its mount there.
    pub fn refused(user: User, opts: &str) -> String {
        let mut m = UserMount::spawn(user, opts, true).unwrap_or_else(|e| panic!("{e}"));
        let status = m.wait_exit();
        let left = common::is_mounted(&m.mnt);
        m.force_down();
        match status {
            None => panic!("sectionfs -o {opts} kept running\n{}", m.log()),
            Some(s) if s.success() => panic!("sectionfs -o {opts} succeeded\n{}", m.log()),
            Some(_) if left => format!("{} (mount left behind)", m.log()),
            Some(_) => m.log(),
        }
    }

    fn try_start(user: User, opts: &str, own_store: bool) -> Result<UserMount, String> {
        let mut mount = UserMount::spawn(user, opts, own_store)?;
        match mount.wait_mounted() {
            Ok(()) => Ok(mount),
            Err(why) => {
                mount.force_down();
                Err(format!(
                    "sectionfs -f -o {opts:?} as uid {}: {why}\n{}",
                    user.uid,
                    mount.log()
                ))
            }
        }
    }

    fn spawn(user: User, opts: &str, own_store: bool) -> Result<UserMount, String> {
        open_dev_fuse_to_users();
        let dir = tempfile::Builder::new()
            .prefix("sectionfs-user-")
            .tempdir()
            .expect("create a temp dir");
        let root = dir
            .path()
            .canonicalize()
            .expect("canonicalize the temp dir");
        fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).expect("chmod 0755");
        let (mnt, home) = (root.join("mnt"), root.join("home"));
        for d in [&mnt, &home] {
            fs::create_dir(d).expect("create a dir for the user");
            std::os::unix::fs::chown(d, Some(user.uid), Some(user.gid)).expect("chown");
        }
        fs::set_permissions(&home, fs::Permissions::from_mode(0o700)).expect("chmod 0700");
        let store = own_store.then(|| home.join("store"));
        let log_path = root.join("sectionfs.log");
        let log = fs::File::create(&log_path).expect("create the daemon log");
        let log_out = log.try_clone().expect("clone the log fd");

        let bin = exposed(&common::daemon_bin(), &root);
        let mut cmd = user.command(&bin);
        cmd.arg("-f");
        if !opts.is_empty() {
            cmd.arg("-o").arg(opts);
        }
        if let Some(store) = &store {
            cmd.arg(store);
        }
        cmd.arg(&mnt)
            .stdin(Stdio::null())
            .stdout(log_out)
            .stderr(log);
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "debug");
        }
        let child = cmd.spawn().map_err(|e| format!("spawn {cmd:?}: {e}"))?;
        Ok(UserMount {
            user,
            child,
            exit: None,
            mnt,
            store,
            log_path,
            finished: false,
            _dir: dir,
        })
    }

    fn wait_mounted(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.exit = Some(status);
                return Err(format!("daemon exited with {status} before mounting"));
            }
            if common::is_mounted(&self.mnt) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!("no FUSE mount after {DEADLINE:?}"));
            }
            thread::sleep(POLL);
        }
    }

    pub fn path(&self) -> &Path {
        &self.mnt
    }

    pub fn section(&self, name: impl AsRef<OsStr>) -> PathBuf {
        self.mnt.join(name.as_ref())
    }

    /// The temp dir holding mnt/, home/ and the log (0755, owned by root).
    pub fn dir(&self) -> &Path {
        self.mnt.parent().expect("mnt has a parent")
    }

    pub fn store(&self) -> Option<&Path> {
        self.store.as_deref()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_else(|e| format!("(no log: {e})"))
    }

    /// Waits for the daemon to exit by itself (after the user's own unmount or a signal)
    /// and requires status 0 and the mount gone.
    pub fn wait_clean_exit(mut self) {
        let status = self.wait_exit();
        self.finished = true;
        match status {
            Some(s) if s.success() => {}
            other => panic!("sectionfs ended with {other:?}\n{}", self.log()),
        }
        assert!(
            !common::is_mounted(&self.mnt),
            "the mount outlived its daemon"
        );
    }

    fn wait_exit(&mut self) -> Option<ExitStatus> {
        common::wait_child(&mut self.child, &mut self.exit, DEADLINE)
    }

    /// Detaches the mount and kills our own child, for a failed start or a failed test.
    fn force_down(&mut self) {
        if common::is_mounted(&self.mnt) {
            let _ = common::umount(&self.mnt, true);
        }
        if self.exit.is_none() {
            let _ = self.child.kill();
            if let Ok(status) = self.child.wait() {
                self.exit = Some(status);
            }
        }
        self.finished = true;
    }
}

impl Drop for UserMount {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        // Root may unmount a user's mount with umount(2).
        let unmounted = common::umount(&self.mnt, false);
        let status = self.wait_exit();
        if status.is_none() || unmounted.is_err() {
            self.force_down();
        }
        self.finished = true;
        if thread::panicking() {
            return;
        }
        if let Err(e) = unmounted {
            panic!("umount {}: {e}\n{}", self.mnt.display(), self.log());
        }
        match status {
            Some(s) if s.success() => {}
            other => panic!(
                "sectionfs ended with {other:?} after umount\n{}",
                self.log()
            ),
        }
    }
}
