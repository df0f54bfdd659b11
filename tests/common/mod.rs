//! Shared helpers for the mount tests: an RAII guard around one daemon and its
//! mount, the C and Python section clients, and small process helpers.
//!
//! `tests/mount/main.rs` includes it (with `#[macro_use]`, for `mount_test!`), and so do
//! the slow tiers and the benchmark; each uses a different subset of these helpers, hence
//! the module-wide `dead_code` allowance.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::ffi::{CString, OsStr};
use std::fs::{self, DirBuilder, File};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// How long the daemon may take to show its mount, and to exit after umount.
const DEADLINE: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(10);
/// How much of the daemon's log a failing test prints (debug logs run long).
const LOG_TAIL_LINES: usize = 200;

/// One running `sectionfs -f` and its mount in a private temp dir.
///
/// Dropping it unmounts, waits for the daemon and panics (unless the test is
/// already panicking) if the daemon did not exit cleanly.
pub struct Mount {
    child: Child,
    /// Set once the child has been reaped; `Child::kill` must never be sent
    /// after that, since the PID may belong to another process by then.
    exit: Option<ExitStatus>,
    mnt: PathBuf,
    store: PathBuf,
    log_path: PathBuf,
    /// Unmounted and reaped (by `unmount`, `kill9` or a failed start): `Drop` has nothing left to do.
    finished: bool,
    /// Holds mnt/, store/ (unless given) and the daemon log; dropped after `Drop::drop`.
    _dir: TempDir,
}

/// How a [`Mount`] is started: `Mount::builder().opts("passthrough=off").start()`.
/// Defaults: a fresh private store, no `-o`, the daemon logging at debug, the mount closed
/// to other users.
#[derive(Clone, Debug, Default)]
pub struct MountBuilder {
    store: Option<PathBuf>,
    opts: Vec<String>,
    log_level: Option<&'static str>,
    allow_other: bool,
}

impl MountBuilder {
    /// Serves an existing store (e.g. the store of a killed daemon, or one on a [`Tmpfs`]).
    pub fn store(mut self, store: impl AsRef<Path>) -> Self {
        self.store = Some(store.as_ref().to_path_buf());
        self
    }

    /// Adds `-o` options (comma-separated; empty adds nothing).
    pub fn opts(mut self, opts: &str) -> Self {
        if !opts.is_empty() {
            self.opts.push(opts.to_owned());
        }
        self
    }

    /// The daemon's `RUST_LOG` (default `debug`; `info` is what production logs). A
    /// `RUST_LOG` in the test's environment wins.
    pub fn log_level(mut self, level: &'static str) -> Self {
        self.log_level = Some(level);
        self
    }

    /// A root mount every user may enter, like /dev/shm: `-o allow_other`, and the
    /// directory holding the mountpoint searchable by all (it is private otherwise).
    pub fn allow_other(mut self) -> Self {
        self.allow_other = true;
        self
    }

    /// Starts the daemon and waits for its mount; panics with its log if it fails.
    pub fn start(self) -> Mount {
        self.try_start().unwrap_or_else(|e| panic!("{e}"))
    }

    /// Like `start`, but a daemon that exits or never mounts is an `Err` holding its exit
    /// status and log, for tests of refused options and mounts.
    pub fn try_start(self) -> Result<Mount, String> {
        let mut opts = self.opts;
        if self.allow_other {
            opts.insert(0, "allow_other".to_owned());
        }
        let mount = Mount::try_start_logging(
            self.store.as_deref(),
            &opts.join(","),
            self.log_level.unwrap_or("debug"),
        )?;
        if self.allow_other {
            share(&mount);
        }
        Ok(mount)
    }
}

/// Lets other users search the directory holding a mountpoint (a private temp dir
/// otherwise): the mount itself decides who may enter.
pub fn share(mount: &Mount) {
    use std::os::unix::fs::PermissionsExt;
    let parent = mount.path().parent().expect("the mountpoint has a parent");
    fs::set_permissions(parent, fs::Permissions::from_mode(0o711)).expect("chmod 0711");
}

impl Mount {
    /// How to start one; the shorthands below cover the common cases.
    pub fn builder() -> MountBuilder {
        MountBuilder::default()
    }

    /// Mounts a fresh store. `opts` is the `-o` argument (none if empty).
    pub fn new(opts: &str) -> Mount {
        Mount::builder().opts(opts).start()
    }

    /// Mounts an existing store, e.g. the store of a killed daemon.
    pub fn with_store(store: &Path, opts: &str) -> Mount {
        Mount::builder().store(store).opts(opts).start()
    }

    /// Like `new`, but a daemon that exits or never mounts is an `Err`.
    pub fn try_new(opts: &str) -> Result<Mount, String> {
        Mount::builder().opts(opts).try_start()
    }

    /// Like `with_store`, but a daemon that exits or never mounts is an `Err`.
    pub fn try_with_store(store: &Path, opts: &str) -> Result<Mount, String> {
        Mount::builder().store(store).opts(opts).try_start()
    }

    /// Like `new`, with the daemon logging at its default level (info) instead of debug:
    /// for tests of what reaches the log in production.
    pub fn new_quiet(opts: &str) -> Mount {
        Mount::builder().opts(opts).log_level("info").start()
    }

    fn try_start_logging(store: Option<&Path>, opts: &str, level: &str) -> Result<Mount, String> {
        let (dir, root) = canonical_temp_dir("sectionfs-test-");
        let mnt = root.join("mnt");
        fs::create_dir(&mnt).expect("create the mountpoint");
        let store = match store {
            Some(store) => store.to_path_buf(),
            None => {
                let store = root.join("store");
                // The spec keeps the store private (0700).
                DirBuilder::new()
                    .mode(0o700)
                    .create(&store)
                    .expect("create the store dir");
                store
            }
        };
        let log_path = root.join("sectionfs.log");
        let log = File::create(&log_path).expect("create the daemon log");
        let log_out = log.try_clone().expect("clone the daemon log fd");

        let mut cmd = Command::new(daemon_bin());
        cmd.arg("-f");
        if !opts.is_empty() {
            cmd.arg("-o").arg(opts);
        }
        cmd.arg(&store)
            .arg(&mnt)
            .stdin(Stdio::null())
            // stdout too: inherited output would bypass the test harness capture.
            .stdout(log_out)
            .stderr(log);
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", level);
        }
        let child = cmd
            .spawn()
            .map_err(|e| format!("spawn {:?}: {e}", cmd.get_program()))?;

        let mut mount = Mount {
            child,
            exit: None,
            mnt,
            store,
            log_path,
            finished: false,
            _dir: dir,
        };
        match mount.wait_mounted() {
            Ok(()) => Ok(mount),
            Err(why) => {
                mount.abort();
                Err(format!(
                    "sectionfs -f {opts:?} {} {}: {why}\n{}",
                    mount.store.display(),
                    mount.mnt.display(),
                    mount.log_report()
                ))
            }
        }
    }

    /// Polls until the mount shows up, failing early if the daemon exits.
    fn wait_mounted(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + DEADLINE;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => {
                    self.exit = Some(status);
                    return Err(format!("daemon exited with {status} before mounting"));
                }
                Ok(None) => {}
                Err(e) => return Err(format!("wait for the daemon: {e}")),
            }
            if is_mounted(&self.mnt) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!("no FUSE mount after {DEADLINE:?}"));
            }
            thread::sleep(POLL);
        }
    }

    /// The mountpoint.
    pub fn path(&self) -> &Path {
        &self.mnt
    }

    /// The store directory the daemon was started on.
    pub fn store(&self) -> &Path {
        &self.store
    }

    /// The path of section `name` in the mount.
    pub fn section(&self, name: impl AsRef<OsStr>) -> PathBuf {
        self.mnt.join(name.as_ref())
    }

    /// The daemon's stdout and stderr so far.
    pub fn log(&self) -> String {
        match fs::read(&self.log_path) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(e) => format!("(cannot read {}: {e})", self.log_path.display()),
        }
    }

    /// The daemon's PID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Unmounts and requires the daemon to exit with status 0 within the deadline.
    /// Fails (rather than forcing it) if something still holds the mount busy.
    pub fn unmount(mut self) {
        match self.shutdown(true) {
            Ok(status) if status.success() => {}
            Ok(status) => panic!(
                "sectionfs exited with {status} after umount\n{}",
                self.log_report()
            ),
            // Drop then cleans up by force; it does not panic a second time.
            Err(why) => panic!("{why}\n{}", self.log_report()),
        }
    }

    /// Crashes the daemon (SIGKILL to its PID only), reaps it and detaches the
    /// dead mount. The store stays, for a restart with `Mount::with_store`.
    pub fn kill9(&mut self) {
        assert!(!self.finished, "kill9 on a mount that is already finished");
        if let Ok(Some(status)) = self.child.try_wait() {
            self.exit = Some(status);
            panic!(
                "sectionfs had already exited with {status} before kill9\n{}",
                self.log_report()
            );
        }
        self.kill_and_reap();
        // The kernel keeps a dead FUSE mount (ENOTCONN) until it is unmounted.
        if is_mounted(&self.mnt)
            && let Err(e) = umount(&self.mnt, true)
        {
            panic!("umount -l {} after kill9: {e}", self.mnt.display());
        }
        self.finished = true;
    }

    /// Unmounts and reaps the daemon. `strict` (an explicit `unmount`) reports a
    /// busy mount or a daemon that will not exit; otherwise force both away:
    /// lazy unmount, then SIGKILL after the deadline.
    fn shutdown(&mut self, strict: bool) -> Result<ExitStatus, String> {
        let unmounted = if strict {
            umount_when_idle(&self.mnt)
        } else {
            umount(&self.mnt, false)
        };
        if let Err(e) = unmounted {
            // A mount that is gone already (the daemon died and took it) is not
            // an umount failure: the exit status below tells what happened.
            if is_mounted(&self.mnt) {
                if strict {
                    return Err(format!("umount {}: {e}", self.mnt.display()));
                }
                // EBUSY: a file in the mount is still open, e.g. in a panicking test.
                let _ = umount(&self.mnt, true);
            }
        }
        if let Some(status) = self.wait_exit(DEADLINE) {
            self.finished = true;
            return Ok(status);
        }
        if strict {
            return Err(format!(
                "sectionfs (pid {}) still running {DEADLINE:?} after umount",
                self.pid()
            ));
        }
        self.kill_and_reap();
        if is_mounted(&self.mnt) {
            let _ = umount(&self.mnt, true);
        }
        self.finished = true;
        Err(format!(
            "sectionfs (pid {}) still running {DEADLINE:?} after umount; killed it",
            self.pid()
        ))
    }

    /// Cleans up after a failed start: no mount must outlive the attempt.
    fn abort(&mut self) {
        self.kill_and_reap();
        if is_mounted(&self.mnt) {
            let _ = umount(&self.mnt, true);
        }
        self.finished = true;
    }

    fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        wait_child(&mut self.child, &mut self.exit, timeout)
    }

    /// SIGKILL to our own child only (`Child::kill`), never by name.
    fn kill_and_reap(&mut self) {
        if self.exit.is_some() {
            return;
        }
        let _ = self.child.kill();
        if let Ok(status) = self.child.wait() {
            self.exit = Some(status);
        }
    }

    /// The last `lines` lines of the daemon's log, framed like `log_report`.
    fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        let all: Vec<&str> = log.trim_end().lines().collect();
        let skipped = all.len().saturating_sub(lines);
        format!(
            "----- sectionfs log ({}{}) -----\n{}\n----- end of sectionfs log -----",
            self.log_path.display(),
            if skipped > 0 {
                format!(", last {lines} lines")
            } else {
                String::new()
            },
            all[skipped..].join("\n")
        )
    }

    fn log_report(&self) -> String {
        format!(
            "----- sectionfs log ({}) -----\n{}\n----- end of sectionfs log -----",
            self.log_path.display(),
            self.log().trim_end()
        )
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let result = self.shutdown(false);
        // A second panic while unwinding would abort the whole test binary. The test is
        // failing: show what the daemon said (its end, where the failure is).
        if thread::panicking() {
            eprintln!("{}", self.log_tail(LOG_TAIL_LINES));
            return;
        }
        match result {
            Ok(status) if status.success() => {}
            Ok(status) => panic!(
                "sectionfs exited with {status} after umount\n{}",
                self.log_report()
            ),
            Err(why) => panic!("{why}\n{}", self.log_report()),
        }
    }
}

/// A fresh private temp dir and its canonical path: the mount table holds canonical paths,
/// and the temp dir may sit behind a symlink.
fn canonical_temp_dir(prefix: &str) -> (TempDir, PathBuf) {
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("create a temp dir");
    let path = dir
        .path()
        .canonicalize()
        .expect("canonicalize the temp dir");
    (dir, path)
}

/// The daemon binary cargo built for these tests.
pub fn daemon_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_sectionfs"))
}

/// True when FUSE is available. Without /dev/fuse a test returns early after a
/// note on stderr, except under CI=true, where skipping would hide the suite.
pub fn require_fuse() -> bool {
    if Path::new("/dev/fuse").exists() {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("/dev/fuse is missing; CI=true requires the mount tests to run");
    }
    eprintln!("skipping: /dev/fuse is missing, FUSE mount tests cannot run here");
    false
}

/// The data modes every conformance check runs in. Passthrough takes the default transport
/// (FUSE over io_uring when the kernel offers it, as `test.sh` makes it do as root); the
/// cached mode keeps to `/dev/fuse`, so that both transports serve the whole suite.
pub fn modes() -> [&'static str; 2] {
    ["passthrough=on", "passthrough=off,io_uring=off"]
}

/// The data path a mode's options ask for, as the sidecar's `io=` names it.
pub fn io_of(opts: &str) -> &'static str {
    if opts.contains("passthrough=off") {
        "cached"
    } else {
        "passthrough"
    }
}

/// Whether `/proc/self/mountinfo` lists a FUSE mount at exactly `mnt`.
pub fn is_mounted(mnt: &Path) -> bool {
    let table = fs::read("/proc/self/mountinfo").expect("read /proc/self/mountinfo");
    let want = mnt.as_os_str().as_bytes();
    table.split(|&b| b == b'\n').any(|line| {
        // Fields: id parent dev root MOUNTPOINT opts [optional...] - FSTYPE source super
        let Some(sep) = line.windows(3).position(|w| w == b" - ") else {
            return false;
        };
        let mountpoint = line[..sep].split(|&b| b == b' ').nth(4);
        let fstype = line[sep + 3..].split(|&b| b == b' ').next();
        matches!((mountpoint, fstype), (Some(mp), Some(ty))
            if ty.starts_with(b"fuse") && unescape_mountinfo(mp) == want)
    })
}

/// mountinfo writes space, tab, newline and backslash in paths as `\ooo`.
fn unescape_mountinfo(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        let octal = field
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match (field[i], octal) {
            (b'\\', Some(d)) => {
                out.push((d[0] - b'0') << 6 | (d[1] - b'0') << 3 | (d[2] - b'0'));
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

/// Unmounts `path`, retrying while it is busy for up to the deadline. Another test thread
/// of this binary that is spawning a process holds a copy of the whole fd table, files of
/// this mount included, until its child's exec closes them (O_CLOEXEC): a moment's EBUSY
/// that is no leak. A file really left open still fails once the deadline passes.
fn umount_when_idle(path: &Path) -> io::Result<()> {
    let deadline = Instant::now() + DEADLINE;
    loop {
        match umount(path, false) {
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                thread::sleep(POLL)
            }
            result => return result,
        }
    }
}

/// Unmounts `path`, lazily (`umount -l`) if asked.
pub fn umount(path: &Path, lazy: bool) -> io::Result<()> {
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let flags = if lazy { libc::MNT_DETACH } else { 0 };
    // SAFETY: c_path is a valid NUL-terminated string that outlives the call.
    if unsafe { libc::umount2(c_path.as_ptr(), flags) } == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() != Some(libc::EPERM) {
        return Err(err);
    }
    // Unprivileged: only the setuid helper may unmount a user's FUSE mount.
    for helper in ["fusermount3", "fusermount"] {
        let mut cmd = Command::new(helper);
        cmd.arg(if lazy { "-uz" } else { "-u" }).arg(path);
        match cmd.output() {
            Ok(out) if out.status.success() => return Ok(()),
            Ok(out) => {
                return Err(io::Error::other(format!(
                    "{helper}: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                )));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Err(err)
}

/// A path as a C string (test paths hold no NUL).
/// `open(path, O_RDWR|O_CREAT, 0644)`: the open-or-create of CreateFileMapping; panics
/// with the path on failure.
pub fn open_or_create(path: &Path) -> File {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        .open(path)
        .unwrap_or_else(|e| panic!("open-or-create {}: {e}", path.display()))
}

pub fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("no NUL in a test path")
}

/// The errno of the libc call that just failed.
pub fn last_errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(-1)
}

/// open(2) with O_CLOEXEC: the descriptor, or the errno.
pub fn open_fd(path: &Path, flags: i32, mode: u32) -> Result<std::os::fd::OwnedFd, i32> {
    use std::os::fd::FromRawFd;
    // SAFETY: a NUL-terminated path; the fd returned is ours alone.
    let fd = unsafe { libc::open(cpath(path).as_ptr(), flags | libc::O_CLOEXEC, mode) };
    if fd < 0 {
        return Err(last_errno());
    }
    // SAFETY: fd was just returned by open.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

/// Runs `bash -c cmd` and returns its output, whatever its status.
pub fn sh(cmd: &str) -> Output {
    Command::new("bash")
        .arg("-c")
        .arg(cmd)
        .output()
        .unwrap_or_else(|e| panic!("run bash -c {cmd:?}: {e}"))
}

/// Runs `cmd`, requires exit status 0 and returns its stdout.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed with {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Parses the `key=value` lines of `<mnt>/<name>.meta`.
pub fn read_meta(mnt: &Path, name: &str) -> BTreeMap<String, String> {
    let path = mnt.join(format!("{name}.meta"));
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    text.lines()
        .map(|line| {
            let (key, value) = line.split_once('=').unwrap_or_else(|| {
                panic!("{}: line without '=': {line:?}\n{text}", path.display())
            });
            (key.to_owned(), value.to_owned())
        })
        .collect()
}

/// The C client, compiled once per test binary.
pub fn c_client() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/section_client.c");
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
        fs::create_dir_all(dir).expect("create CARGO_TARGET_TMPDIR");
        // Test binaries may run in parallel (nextest): each compiles to its own
        // file and renames it into place, so no exec sees a half-written binary.
        let tmp = dir.join(format!("section_client.{}.tmp", std::process::id()));
        run_ok(
            Command::new("cc")
                .args(["-O2", "-Wall", "-Werror", "-o"])
                .arg(&tmp)
                .arg(&src),
        );
        let bin = dir.join("section_client");
        fs::rename(&tmp, &bin)
            .unwrap_or_else(|e| panic!("rename {} to {}: {e}", tmp.display(), bin.display()));
        bin
    })
    .clone()
}

/// Another C program of `tests/clients/` (`stem` without `.c`), compiled once per test
/// binary in the same way as [`c_client`].
pub fn c_program(stem: &str) -> PathBuf {
    static BINS: std::sync::Mutex<BTreeMap<String, PathBuf>> =
        std::sync::Mutex::new(BTreeMap::new());
    let mut bins = BINS.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(bin) = bins.get(stem) {
        return bin.clone();
    }
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/clients/{stem}.c"));
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
    fs::create_dir_all(dir).expect("create CARGO_TARGET_TMPDIR");
    let tmp = dir.join(format!("{stem}.{}.tmp", std::process::id()));
    run_ok(
        Command::new("cc")
            .args(["-O2", "-Wall", "-Werror", "-o"])
            .arg(&tmp)
            .arg(&src),
    );
    let bin = dir.join(stem);
    fs::rename(&tmp, &bin)
        .unwrap_or_else(|e| panic!("rename {} to {}: {e}", tmp.display(), bin.display()));
    bins.insert(stem.to_owned(), bin.clone());
    bin
}

/// The Python client's script (run it with `python3`).
pub fn py_client() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/section_client.py")
}

/// The two section clients; they share one command line (see the sources).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Client {
    C,
    Python,
}

/// Both clients, for checks that run from each language.
pub const CLIENTS: [Client; 2] = [Client::C, Client::Python];

impl Client {
    /// A command running this client, ready for its subcommand arguments.
    pub fn command(self) -> Command {
        match self {
            Client::C => Command::new(c_client()),
            Client::Python => {
                let mut cmd = Command::new("python3");
                cmd.arg(py_client());
                cmd
            }
        }
    }

    /// Runs the client with `args` and returns its output, whatever its status.
    pub fn run<I, S>(self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = self.command();
        cmd.args(args);
        cmd.output()
            .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"))
    }

    /// Runs the client with `args`, requires success and returns its stdout.
    pub fn ok<I, S>(self, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        run_ok(self.command().args(args))
    }
}

/// The errno of a failed client run, from its `error: <op>: ... (errno=<N>)` line.
pub fn client_errno(out: &Output) -> Option<i32> {
    let stderr = String::from_utf8_lossy(&out.stderr);
    let start = stderr.rfind("(errno=")? + "(errno=".len();
    let end = start + stderr[start..].find(')')?;
    stderr[start..end].parse().ok()
}

/// A child process holding a `MAP_SHARED` view of a section (`crash_writer hold`), driven
/// line by line: it outlives daemons and mounts as a real program's view would.
pub struct ViewHolder {
    child: Child,
    stdin: Option<std::process::ChildStdin>,
    stdout: io::BufReader<std::process::ChildStdout>,
}

impl ViewHolder {
    /// Opens `path` (creating it), grows it to `size` if smaller and maps `size` bytes.
    pub fn start(path: &Path, size: u64) -> ViewHolder {
        let mut child = Command::new(c_program("crash_writer"))
            .arg("hold")
            .arg(path)
            .arg(size.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn crash_writer hold");
        let stdin = child.stdin.take();
        let stdout = io::BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut holder = ViewHolder {
            child,
            stdin,
            stdout,
        };
        let ready = holder.line();
        assert_eq!(ready, "ready", "crash_writer hold {}", path.display());
        holder
    }

    /// Sends one command (`fill BYTE`, `check BYTE`, `close`) and returns the answer line.
    pub fn say(&mut self, cmd: &str) -> String {
        use std::io::Write;
        let stdin = self.stdin.as_mut().expect("holder still has its stdin");
        writeln!(stdin, "{cmd}").expect("send to the view holder");
        stdin.flush().expect("send to the view holder");
        self.line()
    }

    /// Closes its input: it unmaps and exits. Returns its status and stderr.
    pub fn finish(mut self) -> (ExitStatus, String) {
        use std::io::Read;
        drop(self.stdin.take());
        let status = self.child.wait().expect("wait for the view holder");
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        (status, err)
    }

    fn line(&mut self) -> String {
        use std::io::BufRead;
        let mut line = String::new();
        if self.stdout.read_line(&mut line).unwrap_or(0) == 0 {
            let status = self.child.wait().expect("wait for the view holder");
            let mut err = String::new();
            if let Some(mut e) = self.child.stderr.take() {
                use std::io::Read;
                let _ = e.read_to_string(&mut err);
            }
            panic!("the view holder ended with {status}: {err}");
        }
        line.trim_end().to_owned()
    }
}

impl Drop for ViewHolder {
    fn drop(&mut self) {
        // Our own child only, and only if it was not reaped yet.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// zlib's crc32 (IEEE, reflected), as the test clients compute it. Table-driven: the
/// tests run unoptimized and check megabytes.
pub fn crc32(bytes: &[u8]) -> u32 {
    static TABLE: std::sync::OnceLock<[u32; 256]> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut t = [0u32; 256];
        for (i, e) in t.iter_mut().enumerate() {
            let mut c = i as u32;
            for _ in 0..8 {
                c = (c >> 1) ^ (0xedb8_8320 & 0u32.wrapping_sub(c & 1));
            }
            *e = c;
        }
        t
    });
    !bytes.iter().fold(!0u32, |c, &b| {
        table[((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8)
    })
}

/// Runs a test file's tests one at a time, for files whose tests spawn many processes: a
/// process spawned by one test thread holds copies of every open fd of the test binary
/// until it execs, which keeps another test's mount busy for that moment (the guard
/// retries such an EBUSY, but serial tests also keep 2 cores from thrashing).
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// Waits up to `timeout` for `child` to exit, remembering its status in `exit` (a reaped
/// child's PID may belong to another process: never signal it after this says it ended).
pub fn wait_child(
    child: &mut Child,
    exit: &mut Option<ExitStatus>,
    timeout: Duration,
) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if exit.is_some() {
            return *exit;
        }
        if let Ok(Some(status)) = child.try_wait() {
            *exit = Some(status);
            return *exit;
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(POLL);
    }
}

/// getxattr(2) in this process (no `getfattr` needed): the attribute's value.
pub fn get_xattr(path: &Path, name: &str) -> io::Result<Vec<u8>> {
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let c_name = CString::new(name).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let mut buf = vec![0u8; 64 * 1024];
    // SAFETY: NUL-terminated strings and a buffer valid for its length.
    let n = unsafe {
        libc::getxattr(
            c_path.as_ptr(),
            c_name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(n as usize);
    Ok(buf)
}

/// setxattr(2) in this process (no `setfattr` needed).
pub fn set_xattr(path: &Path, name: &str, value: &[u8]) -> io::Result<()> {
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let c_name = CString::new(name).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: NUL-terminated strings and a value valid for its length.
    let r = unsafe {
        libc::setxattr(
            c_path.as_ptr(),
            c_name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// listxattr(2) in this process: the attribute names.
pub fn list_xattrs(path: &Path) -> io::Result<Vec<String>> {
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let mut buf = vec![0u8; 64 * 1024];
    // SAFETY: a NUL-terminated path and a buffer valid for its length.
    let n = unsafe { libc::listxattr(c_path.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(buf[..n as usize]
        .split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect())
}

/// A private, size-limited tmpfs in a temp dir, for a store whose use must be measured or
/// which must run out of space. Unmounted when dropped, also when the test fails: declare
/// it before the `Mount` that serves a store on it, so that the mount goes first.
pub struct Tmpfs {
    fs: PathBuf,
    _dir: TempDir,
}

impl Tmpfs {
    /// A tmpfs of `size` (as tmpfs's `size=` takes it: `16m`, `128m`), mode 0700.
    pub fn new(size: &str) -> Tmpfs {
        let (dir, root) = canonical_temp_dir("sectionfs-tmpfs-");
        let fs = root.join("fs");
        fs::create_dir(&fs).expect("create the tmpfs mountpoint");
        run_ok(
            Command::new("mount")
                .args(["-t", "tmpfs", "-o"])
                .arg(format!("size={size},mode=0700"))
                .arg("tmpfs")
                .arg(&fs),
        );
        Tmpfs { fs, _dir: dir }
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        &self.fs
    }

    /// A fresh private store directory (0700) `name` on it, for `Mount::builder().store`.
    pub fn store(&self, name: &str) -> PathBuf {
        let store = self.fs.join(name);
        DirBuilder::new()
            .mode(0o700)
            .create(&store)
            .unwrap_or_else(|e| panic!("create {}: {e}", store.display()));
        store
    }

    fn statvfs(&self) -> libc::statvfs {
        let c = CString::new(self.fs.as_os_str().as_bytes()).expect("path without NUL");
        // SAFETY: zeroed statvfs is a valid out-buffer; the path is NUL-terminated.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
        assert_eq!(rc, 0, "statvfs: {}", io::Error::last_os_error());
        st
    }

    /// Bytes in use.
    pub fn used(&self) -> u64 {
        let st = self.statvfs();
        (st.f_blocks - st.f_bfree) * st.f_frsize
    }

    /// Bytes free.
    pub fn free(&self) -> u64 {
        let st = self.statvfs();
        st.f_bavail * st.f_frsize
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazily if need be: a FUSE mount on top that failed to go must not keep it.
        if umount(&self.fs, false).is_err()
            && let Err(e) = umount(&self.fs, true)
        {
            eprintln!("umount {}: {e}", self.fs.display());
        }
    }
}

/// The body of a `mount_test!`: runs `body` once per data mode (`modes()`), after the
/// FUSE check, one test at a time if `serial`. A failure names the mode it failed in; the
/// `Mount` guard prints the daemon's log as it goes.
pub fn each_mode(serial: bool, body: impl Fn(&'static str)) {
    if !require_fuse() {
        return;
    }
    let _turn = serial.then(self::serial);
    for opts in modes() {
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| body(opts)));
        if let Err(panic) = run {
            eprintln!("mount_test: failed in data mode {opts:?}");
            std::panic::resume_unwind(panic);
        }
    }
}

/// The body of a `mount_test!` without a mode: `body` once, after the FUSE check, one test
/// at a time if `serial`.
pub fn once(serial: bool, body: impl FnOnce()) {
    if !require_fuse() {
        return;
    }
    let _turn = serial.then(self::serial);
    body();
}

/// A test that mounts: the FUSE check (fail under CI=true, skip with a note otherwise), and
/// the body once per data mode when it takes the mode's `-o` options, e.g.
///
/// ```ignore
/// mount_test! {
///     /// What it checks.
///     fn grows_in_each_mode(opts) {
///         let m = Mount::new(opts);
///         ...
///     }
/// }
/// ```
///
/// `fn name() { ... }` runs once; `serial fn ...` takes `serial()` for the whole test (for
/// tests that spawn many processes). The test keeps its name, so `cargo test NAME` finds it.
#[allow(unused_macros)] // The slow-tier binaries and the benchmark include this file too.
macro_rules! mount_test {
    ($(#[$m:meta])* serial fn $name:ident($opts:ident) $body:block) => {
        $(#[$m])* #[test]
        fn $name() {
            $crate::common::each_mode(true, |$opts: &'static str| $body)
        }
    };
    ($(#[$m:meta])* fn $name:ident($opts:ident) $body:block) => {
        $(#[$m])* #[test]
        fn $name() {
            $crate::common::each_mode(false, |$opts: &'static str| $body)
        }
    };
    ($(#[$m:meta])* serial fn $name:ident() $body:block) => {
        $(#[$m])* #[test]
        fn $name() {
            $crate::common::once(true, || $body)
        }
    };
    ($(#[$m:meta])* fn $name:ident() $body:block) => {
        $(#[$m])* #[test]
        fn $name() {
            $crate::common::once(false, || $body)
        }
    };
}
