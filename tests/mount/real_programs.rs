//! Real programs that share memory through files, on real mounts in both data modes:
//! SQLite in WAL mode with several writer processes, one killed mid-transaction, then
//! recovered by the next opener (which cuts the stale `-shm`, a shrink); `VACUUM`,
//! `journal_mode=TRUNCATE` and `wal_checkpoint(TRUNCATE)`; `numpy.memmap(mode='w+')`
//! over an existing file; LMDB with two processes and a grown map. And the shrink rule
//! itself: the sole holder may cut a section, never while another process maps it
//! (EBUSY, the view keeping its bytes), also when that process closed its fd. And the
//! root's times, which move on create, unlink and rename as a /dev/shm directory's do.
//!
//! The Python side is `tests/clients/real_programs.py`; the test command
//! (`mount-scripts/test.sh`) puts a venv with numpy and lmdb first on PATH.

use crate::common;

use common::{Mount, ViewHolder, read_meta};
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

/// A program on the mount that takes longer than this is taken as hung.
const DEADLINE: Duration = Duration::from_secs(120);

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/real_programs.py")
}

fn py(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Command {
    let mut cmd = Command::new("python3");
    cmd.arg(script());
    for a in args {
        cmd.arg(a);
    }
    cmd
}

/// Aborts the mount's FUSE connection through fusectl: the way out of a hung request.
fn abort_connection(mount: &Mount) {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let want = mount.path().to_string_lossy().into_owned();
    let Some(minor) = info
        .lines()
        .filter(|l| l.split(' ').nth(4) == Some(want.as_str()))
        .filter_map(|l| l.split(' ').nth(2)?.split_once(':')?.1.parse::<u32>().ok())
        .next_back()
    else {
        return;
    };
    let conns = Path::new("/sys/fs/fuse/connections");
    if std::fs::read_dir(conns)
        .map(|mut d| d.next().is_none())
        .unwrap_or(true)
    {
        let _ = Command::new("mount")
            .args(["-t", "fusectl", "none"])
            .arg(conns)
            .status();
    }
    let _ = std::fs::write(conns.join(minor.to_string()).join("abort"), "1");
}

/// Waits for our own `child` with the deadline; a hang aborts the mount's connection
/// (which unblocks the child), kills the child and fails the test.
fn wait_deadline(mut child: Child, mount: &Mount, what: &str) -> Output {
    let mut out = child.stdout.take();
    let mut err = child.stderr.take();
    let reader = thread::spawn(move || {
        let mut o = Vec::new();
        if let Some(s) = out.as_mut() {
            let _ = s.read_to_end(&mut o);
        }
        o
    });
    let err_reader = thread::spawn(move || {
        let mut e = Vec::new();
        if let Some(s) = err.as_mut() {
            let _ = s.read_to_end(&mut e);
        }
        e
    });
    let start = Instant::now();
    let status = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break status;
        }
        if start.elapsed() > DEADLINE {
            abort_connection(mount);
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: no answer after {DEADLINE:?}; aborted the FUSE connection");
        }
        thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
    }
}

fn run(mut cmd: Command, mount: &Mount, what: &str) -> String {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: spawn: {e}"));
    let out = wait_deadline(child, mount, what);
    assert!(
        out.status.success(),
        "{what} failed with {}\n--- stdout ---\n{}\n--- stderr ---\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        mount
            .log()
            .lines()
            .rev()
            .take(30)
            .collect::<Vec<_>>()
            .join("\n")
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn keys(text: &str) -> BTreeSet<u64> {
    text.lines().filter_map(|l| l.trim().parse().ok()).collect()
}

/// A process that stops in the middle of its work, read line by line; killed on drop.
struct Victim {
    child: Child,
    lines: BufReader<std::process::ChildStdout>,
    committed: BTreeSet<u64>,
}

impl Victim {
    fn start(db: &Path, writer: &str, rows: &str) -> Victim {
        let mut child = py(&[&"sqlite_victim", &db, &writer, &rows])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn the sqlite victim");
        let lines = BufReader::new(child.stdout.take().expect("piped stdout"));
        Victim {
            child,
            lines,
            committed: BTreeSet::new(),
        }
    }

    /// Reads its committed keys until it says "mid" (inside its open transaction).
    fn wait_mid(&mut self) {
        let start = Instant::now();
        loop {
            let mut line = String::new();
            assert!(
                self.lines.read_line(&mut line).unwrap_or(0) > 0,
                "the sqlite victim ended before its transaction"
            );
            if line.trim() == "mid" {
                return;
            }
            self.committed.insert(line.trim().parse().expect("a key"));
            assert!(start.elapsed() < DEADLINE, "the sqlite victim is stuck");
        }
    }

    /// SIGKILL to our own child, then reaps it.
    fn kill(mut self) -> BTreeSet<u64> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::mem::take(&mut self.committed)
    }
}

impl Drop for Victim {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn sqlite_recovers(opts: &str) {
    let mount = Mount::new(opts);
    let db = mount.section("app.db");
    // Victim 1 holds the write lock mid-transaction while three writers wait on it.
    let mut first = Victim::start(&db, "9", "50");
    first.wait_mid();
    let writers: Vec<Child> = (1..=3)
        .map(|w| {
            py(&[&"sqlite_writer", &db, &w.to_string(), &"150"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn a sqlite writer")
        })
        .collect();
    thread::sleep(Duration::from_millis(300));
    let mut committed = first.kill();
    for (i, w) in writers.into_iter().enumerate() {
        let out = wait_deadline(w, &mount, &format!("sqlite writer {}", i + 1));
        assert!(
            out.status.success(),
            "writer {} ({opts}): {}\n{}",
            i + 1,
            String::from_utf8_lossy(&out.stderr),
            mount
                .log()
                .lines()
                .rev()
                .take(30)
                .collect::<Vec<_>>()
                .join("\n")
        );
        committed.extend(keys(&String::from_utf8_lossy(&out.stdout)));
    }
    // Victim 2 is the last process on the database: its death leaves a stale -wal and
    // -shm, which the next opener must rebuild (it cuts the -shm to 3 bytes first).
    let mut last = Victim::start(&db, "8", "20");
    last.wait_mid();
    committed.extend(last.kill());
    let shm = mount.section("app.db-shm");
    assert!(
        std::fs::metadata(&shm).map(|m| m.len()).unwrap_or(0) > 3,
        "a stale -shm is left behind"
    );
    let found = keys(&run(
        py(&[&"sqlite_check", &db]),
        &mount,
        &format!("reopen after the kill ({opts})"),
    ));
    let missing: Vec<_> = committed.difference(&found).take(5).collect();
    assert!(
        missing.is_empty(),
        "{opts}: committed rows lost: {missing:?}"
    );
    assert_eq!(found.len(), committed.len(), "{opts}: only committed rows");
    // The sqlite3 command-line shell agrees.
    let cli = run(
        {
            let mut c = Command::new("sqlite3");
            c.arg(&db)
                .arg("PRAGMA integrity_check; SELECT count(*) FROM t;");
            c
        },
        &mount,
        "sqlite3 shell",
    );
    assert_eq!(cli.trim(), format!("ok\n{}", committed.len()), "{opts}");
    drop(mount);
}

mount_test! {
    serial fn sqlite_wal_recovers_after_a_writer_is_killed(opts) {
        sqlite_recovers(opts);
    }
}

mount_test! {
    serial fn sqlite_vacuum_and_truncating_journals_work(opts) {
        let mount = Mount::new(opts);
        let out = run(
            py(&[&"sqlite_maintenance", &mount.path()]),
            &mount,
            &format!("sqlite maintenance ({opts})"),
        );
        assert_eq!(out.trim(), "ok");
        mount.unmount();
    }
}

mount_test! {
    serial fn numpy_memmap_w_plus_over_an_existing_file(opts) {
        let mount = Mount::new(opts);
        let path = mount.section("array");
        std::fs::write(&path, vec![1u8; 64 * 1024]).expect("write the old array");
        let out = run(
            py(&[&"numpy_w_plus", &path]),
            &mount,
            &format!("numpy w+ ({opts})"),
        );
        assert_eq!(out.trim(), "ok");
        mount.unmount();
    }
}

mount_test! {
    serial fn lmdb_two_processes_and_a_grown_map(opts) {
        let mount = Mount::new(opts);
        let dir = mount.section("Local/env");
        // LMDB wants a directory; the user's namespace is one, holding data.mdb and lock.mdb.
        let dir = dir.parent().expect("Local").to_path_buf();
        let mut grow = py(&[&"lmdb_grow", &dir])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn lmdb_grow");
        let mut lines = BufReader::new(grow.stdout.take().expect("piped stdout"));
        let mut line = String::new();
        lines.read_line(&mut line).expect("read lmdb_grow");
        assert_eq!(line.trim(), "grown", "{opts}");
        let joined = run(
            py(&[&"lmdb_join", &dir]),
            &mount,
            &format!("lmdb second process ({opts})"),
        );
        assert_eq!(joined.trim(), "ok");
        let mut stdin = grow.stdin.take().expect("piped stdin");
        writeln!(stdin).expect("tell lmdb_grow");
        drop(stdin);
        grow.stdout = Some(lines.into_inner());
        let out = wait_deadline(grow, &mount, "lmdb_grow");
        assert!(
            out.status.success(),
            "lmdb_grow ({opts}): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Alone again: a smaller map cuts data.mdb (LMDB's writemap ftruncate).
        let out = run(
            py(&[&"lmdb_reopen_smaller", &dir]),
            &mount,
            &format!("lmdb reopen with a smaller map ({opts})"),
        );
        assert_eq!(out.trim(), "ok");
        mount.unmount();
    }
}

/// `truncate -s SIZE PATH` (coreutils: open, then ftruncate through its own fd).
fn truncate(path: &Path, size: u64) -> Result<(), String> {
    let out = Command::new("truncate")
        .arg("-s")
        .arg(size.to_string())
        .arg(path)
        .output()
        .expect("run truncate");
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn wait_handles(mount: &Mount, name: &str, want: &str) {
    let start = Instant::now();
    while read_meta(mount.path(), name)["open_handles"] != want {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "open_handles never reached {want}"
        );
        thread::sleep(Duration::from_millis(10));
    }
}

mount_test! {
    serial fn a_mapped_section_is_not_shrunk_and_the_sole_holder_may_shrink(opts) {
        const SIZE: u64 = 64 * 1024;
        let mount = Mount::new(opts);
        let path = mount.section("frame");
        let mut view = ViewHolder::start(&path, SIZE);
        assert_eq!(view.say("fill 171"), "ok");
        let busy = "Device or resource busy";
        // Another process, by its own fd (ftruncate) and by path (shell O_TRUNC).
        let e = truncate(&path, 4096).expect_err("shrink of a mapped section");
        assert!(e.contains(busy), "{opts}: {e}");
        let trunc = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&path)
            .expect_err("O_TRUNC of a mapped section");
        assert_eq!(trunc.raw_os_error(), Some(libc::EBUSY), "{opts}");
        assert_eq!(std::fs::metadata(&path).unwrap().len(), SIZE, "{opts}");
        assert_eq!(
            view.say("check 171"),
            "ok",
            "{opts}: the view keeps its bytes"
        );
        // The holder closes its fd but keeps its view: in passthrough mode the handle goes
        // (the view maps the backing file) and the view is found in /proc/PID/maps; in
        // cached mode the view keeps its handle until munmap.
        assert_eq!(view.say("close"), "ok");
        if opts == "passthrough=on" {
            wait_handles(&mount, "frame", "0");
        }
        let e = truncate(&path, 4096).expect_err("shrink of a section still mapped");
        assert!(e.contains(busy), "{opts}: {e}");
        assert_eq!(std::fs::metadata(&path).unwrap().len(), SIZE, "{opts}");
        assert_eq!(
            view.say("check 171"),
            "ok",
            "{opts}: the view keeps its bytes"
        );
        let (status, err) = view.finish();
        assert!(status.success(), "{opts}: view holder: {err}");
        // Nobody else holds it now: the sole holder may cut it.
        truncate(&path, 4096).unwrap_or_else(|e| panic!("{opts}: sole-holder shrink: {e}"));
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 4096, "{opts}");
        std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("{opts}: O_TRUNC by the sole holder: {e}"));
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0, "{opts}");
        assert_eq!(read_meta(mount.path(), "frame")["size"], "0");
        mount.unmount();
    }
}

fn times(dir: &Path) -> (SystemTime, SystemTime) {
    let m = std::fs::metadata(dir).unwrap_or_else(|e| panic!("stat {}: {e}", dir.display()));
    let ctime = SystemTime::UNIX_EPOCH
        + Duration::from_secs(m.ctime() as u64)
        + Duration::from_nanos(m.ctime_nsec() as u64);
    (m.modified().expect("mtime"), ctime)
}

/// Create, rename, unlink in `dir`: for each step, whether mtime and ctime moved.
fn steps(dir: &Path) -> Vec<(&'static str, bool, bool)> {
    let mut seen = Vec::new();
    let mut before = times(dir);
    let mut step = |what: &'static str, f: &dyn Fn()| {
        thread::sleep(Duration::from_millis(30));
        f();
        let now = times(dir);
        seen.push((what, now.0 > before.0, now.1 > before.1));
        before = now;
    };
    step("create", &|| {
        std::fs::write(dir.join("x"), b"1").expect("create");
    });
    step("rename", &|| {
        std::fs::rename(dir.join("x"), dir.join("y")).expect("rename");
    });
    step("unlink", &|| {
        std::fs::remove_file(dir.join("y")).expect("unlink");
    });
    seen
}

mount_test! {
    fn directory_times_move_like_dev_shm(opts) {
        let shm = tempfile::Builder::new()
            .prefix("sectionfs-times-")
            .tempdir_in("/dev/shm")
            .expect("a directory in /dev/shm");
        let expected = steps(shm.path());
        assert!(
            expected.iter().all(|&(_, m, c)| m && c),
            "/dev/shm: {expected:?}"
        );
        let mount = Mount::new(opts);
        assert_eq!(steps(mount.path()), expected, "{opts}: the root");
        // A user's namespace directory (Sessions/UID, reached through Local).
        assert_eq!(
            steps(&mount.section("Local/").join(".")),
            expected,
            "{opts}: Local/"
        );
        mount.unmount();
    }
}
