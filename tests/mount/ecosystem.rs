//! sectionfs among the system's tools: mount(8) and fstab through mount.fuse3, the scripts
//! of `mount-scripts/`, the systemd unit, `df`, `sectionfs list`, `--help` and `--version`.

use crate::common;

use common::{Mount, daemon_bin, is_mounted, run_ok, sh, umount};
use std::ffi::OsString;
use std::fs::{self, File};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

const DEADLINE: Duration = Duration::from_secs(10);

fn manifest() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn script(name: &str) -> PathBuf {
    manifest().join("mount-scripts").join(name)
}

fn text(out: &Output) -> String {
    format!(
        "status {}\n--- stdout ---\n{}--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A private temp dir holding `store/` and `mnt/`, with canonical paths.
struct Place {
    _dir: tempfile::TempDir,
    store: PathBuf,
    mnt: PathBuf,
}

fn place() -> Place {
    let dir = tempfile::Builder::new()
        .prefix("sectionfs-eco-")
        .tempdir()
        .expect("temp dir");
    let root = dir
        .path()
        .canonicalize()
        .expect("canonicalize the temp dir");
    let mnt = root.join("mnt");
    fs::create_dir(&mnt).expect("create the mount point");
    Place {
        store: root.join("store"),
        mnt,
        _dir: dir,
    }
}

/// Unmounts `mnt` on drop if a test left it mounted (lazily: a failing test may still
/// hold files), so no mount outlives the test.
struct Unmounter(PathBuf);

impl Drop for Unmounter {
    fn drop(&mut self) {
        if is_mounted(&self.0) {
            let _ = umount(&self.0, true);
        }
    }
}

/// Waits until no daemon holds the store's lock, i.e. the daemon serving it has exited.
fn wait_released(store: &Path) {
    let lock = File::open(store.join("lock")).expect("open STORE/lock");
    let deadline = Instant::now() + DEADLINE;
    // SAFETY: flock on an fd owned by `lock`.
    while unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        assert!(
            Instant::now() < deadline,
            "the daemon of {} still runs {DEADLINE:?} after umount",
            store.display()
        );
        thread::sleep(Duration::from_millis(10));
    }
}

/// Where mount.fuse3 finds `sectionfs`: mount(8) sanitizes its helpers' environment, so
/// the /bin/sh that mount.fuse3 runs it with searches the standard PATH, never the
/// caller's. /usr/local/sbin comes first in that PATH and is where no install of ours goes
/// (install.sh uses /usr/local/bin), so a link there shadows a real install without
/// touching it.
const HELPER_DIR: &str = "/usr/local/sbin";

/// Makes `sectionfs` reachable by mount.fuse3 for the test's life: links the test build
/// into HELPER_DIR, moving aside whatever was there, and puts it back on drop. A lock file
/// keeps two test runs from doing it at once.
struct HelperLink {
    link: PathBuf,
    displaced: Option<PathBuf>,
    _lock: File,
}

impl HelperLink {
    fn install() -> HelperLink {
        let lock = File::create("/run/lock/sectionfs-ecosystem-test.lock")
            .or_else(|_| File::create(std::env::temp_dir().join("sectionfs-ecosystem-test.lock")))
            .expect("create the test's lock file");
        // SAFETY: flock on an fd owned by `lock`.
        assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) }, 0);
        fs::create_dir_all(HELPER_DIR).expect("create /usr/local/sbin");
        let link = Path::new(HELPER_DIR).join("sectionfs");
        let displaced = match fs::symlink_metadata(&link) {
            Ok(_) => {
                let aside = Path::new(HELPER_DIR).join(format!(
                    "sectionfs.moved-aside-by-sectionfs-test.{}",
                    std::process::id()
                ));
                fs::rename(&link, &aside).expect("move the existing sectionfs aside");
                Some(aside)
            }
            Err(_) => None,
        };
        let mut helper = HelperLink {
            link,
            displaced,
            _lock: lock,
        };
        if let Err(e) = symlink(daemon_bin(), &helper.link) {
            helper.restore();
            panic!("link {}: {e}", helper.link.display());
        }
        helper
    }

    fn restore(&mut self) {
        if fs::read_link(&self.link).is_ok_and(|t| t == daemon_bin()) {
            let _ = fs::remove_file(&self.link);
        }
        if let Some(aside) = self.displaced.take() {
            let _ = fs::rename(&aside, &self.link);
        }
    }
}

impl Drop for HelperLink {
    fn drop(&mut self) {
        self.restore();
    }
}

fn require_mount_fuse3() {
    assert!(
        Path::new("/sbin/mount.fuse3").exists() || Path::new("/usr/sbin/mount.fuse3").exists(),
        "mount.fuse3 is missing: apt-get install fuse3 (.ci/run installs it)"
    );
}

mount_test! {
    serial fn mount8_and_fstab_through_mount_fuse3() {
        require_mount_fuse3();
        let p = place();
        let helper = HelperLink::install();
        let _unmount = Unmounter(p.mnt.clone());

        // mount -t fuse.sectionfs, as a user would type it.
        let out = Command::new("mount")
            .args(["-t", "fuse.sectionfs"])
            .arg(&p.store)
            .arg(&p.mnt)
            .args(["-o", "allow_other,commit=lazy"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mount -t fuse.sectionfs: {}",
            text(&out)
        );
        assert!(is_mounted(&p.mnt));
        fs::write(p.mnt.join("Frame"), b"kept").unwrap();
        let meta = common::read_meta(&p.mnt, "Frame");
        assert_eq!(meta["commit"], "lazy", "the -o options reached the daemon");
        // The background daemon logs into the store.
        assert!(p.store.join("daemon.log").exists());
        let out = Command::new("umount").arg(&p.mnt).output().unwrap();
        assert!(out.status.success(), "umount: {}", text(&out));
        wait_released(&p.store);
        assert!(!is_mounted(&p.mnt));

        // An fstab line, with the options fstab lines carry.
        let fstab = p.store.with_file_name("fstab");
        fs::write(
            &fstab,
            format!(
                "# a test fstab\n{} {} fuse.sectionfs allow_other,nofail,x-systemd.automount,commit=eager 0 0\n",
                p.store.display(),
                p.mnt.display()
            ),
        )
        .unwrap();
        let out = Command::new("mount")
            .arg("-T")
            .arg(&fstab)
            .arg(&p.mnt)
            .output()
            .unwrap();
        assert!(out.status.success(), "mount -T fstab: {}", text(&out));
        assert_eq!(fs::read(p.mnt.join("Frame")).unwrap(), b"kept");
        let out = Command::new("umount").arg(&p.mnt).output().unwrap();
        assert!(out.status.success(), "umount: {}", text(&out));
        wait_released(&p.store);

        // A bad option fails the mount with the daemon's one line, and mounts nothing.
        let out = Command::new("mount")
            .args(["-t", "fuse.sectionfs"])
            .arg(&p.store)
            .arg(&p.mnt)
            .args(["-o", "bogus"])
            .output()
            .unwrap();
        assert!(!out.status.success(), "mount -o bogus: {}", text(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("unknown mount option: bogus"),
            "{}",
            text(&out)
        );
        assert!(!is_mounted(&p.mnt));
        drop(helper);
        assert!(
            fs::read_link(Path::new(HELPER_DIR).join("sectionfs")).map_or(true, |t| t != daemon_bin()),
            "the helper link was removed"
        );
    }
}

mount_test! {
    serial fn mount_and_unmount_scripts() {
        let p = place();
        let _unmount = Unmounter(p.mnt.clone());
        let mount_sh = || {
            Command::new(script("mount.sh"))
                .arg(&p.store)
                .arg(&p.mnt)
                .env("SECTIONFS_BIN", daemon_bin())
                .env("SECTIONFS_OPTIONS", "commit=lazy")
                .output()
                .unwrap()
        };
        let out = mount_sh();
        assert!(out.status.success(), "mount.sh: {}", text(&out));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.contains(&format!("store {}", p.store.display())),
            "prints the store: {stdout}"
        );
        assert!(stdout.contains("Unmount with:"), "{stdout}");
        assert!(is_mounted(&p.mnt));
        fs::write(p.mnt.join("S"), b"x").unwrap();
        assert_eq!(common::read_meta(&p.mnt, "S")["commit"], "lazy");

        // A second mount.sh refuses, in one line.
        let out = mount_sh();
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.lines().count(), 1, "one line: {err:?}");
        assert!(err.contains("already mounted"), "{err}");

        // unmount.sh refuses a busy mount and kills nothing.
        let busy = File::open(p.mnt.join("S")).unwrap();
        let out = Command::new(script("unmount.sh"))
            .arg(&p.mnt)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        assert!(String::from_utf8_lossy(&out.stderr).contains("busy"));
        assert!(is_mounted(&p.mnt));
        drop(busy);

        let out = Command::new(script("unmount.sh"))
            .arg(&p.mnt)
            .output()
            .unwrap();
        assert!(out.status.success(), "unmount.sh: {}", text(&out));
        assert!(!is_mounted(&p.mnt));
        assert!(String::from_utf8_lossy(&out.stdout).contains("sections stay in"));
        wait_released(&p.store);

        let out = Command::new(script("unmount.sh"))
            .arg(&p.mnt)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.lines().count(), 1, "one line: {err:?}");
        assert!(err.contains("not mounted"), "{err}");
    }
}

#[test]
fn install_script_installs_and_uninstalls() {
    let _serial = common::serial();
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().join("prefix");
    let units = dir.path().join("units");
    let install = |arg: &str| {
        Command::new(script("install.sh"))
            .arg(arg)
            .env("PREFIX", &prefix)
            .env("SYSTEMD_DIR", &units)
            .env("SECTIONFS_BIN", daemon_bin())
            .output()
            .unwrap()
    };
    let out = install("--systemd");
    assert!(out.status.success(), "install.sh: {}", text(&out));
    let bin = prefix.join("bin/sectionfs");
    assert_eq!(
        fs::metadata(&bin).unwrap().permissions().mode() & 0o777,
        0o755
    );
    let version = run_ok(Command::new(&bin).arg("--version"));
    assert!(version.starts_with("sectionfs "), "{version}");
    let unit = fs::read_to_string(units.join("sectionfs.service")).unwrap();
    assert!(
        unit.contains(&format!("ExecStart={} -f", bin.display())),
        "the unit runs the installed binary:\n{unit}"
    );

    let out = install("--uninstall");
    assert!(
        out.status.success(),
        "install.sh --uninstall: {}",
        text(&out)
    );
    assert!(!bin.exists() && !units.join("sectionfs.service").exists());

    let out = install("--bogus");
    assert_eq!(out.status.code(), Some(64), "{}", text(&out));
}

#[test]
fn scripts_are_strict_and_never_kill_by_name() {
    let _serial = common::serial();
    for entry in fs::read_dir(manifest().join("mount-scripts")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "sh") {
            let body = fs::read_to_string(&path).unwrap();
            assert!(body.contains("\nset -eu\n"), "{}: set -eu", path.display());
            for word in ["pkill", "killall", "kill "] {
                assert!(!body.contains(word), "{}: {word}", path.display());
            }
            let out = Command::new("sh").arg("-n").arg(&path).output().unwrap();
            assert!(
                out.status.success(),
                "sh -n {}: {}",
                path.display(),
                text(&out)
            );
            let mode = fs::metadata(&path).unwrap().permissions().mode();
            assert!(mode & 0o111 != 0, "{} is executable", path.display());
        }
    }
    // The fstab example's active line is a well-formed sectionfs entry.
    let fstab = fs::read_to_string(script("fstab.example")).unwrap();
    let lines: Vec<Vec<&str>> = fstab
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(lines.len(), 1, "one active line");
    assert_eq!(lines[0].len(), 6);
    assert_eq!(lines[0][2], "fuse.sectionfs");
    let mut options = sectionfs::daemon::MountOptions::default();
    options
        .apply(lines[0][3])
        .expect("the daemon takes the example's options");
}

/// The values of the unit's `KEY=` lines, each with systemd's `-` (ignore failure) prefix
/// removed and whether it had one.
fn unit_lines(unit: &str, key: &str) -> Vec<(String, bool)> {
    unit.lines()
        .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .map(|v| (v.trim_start_matches('-').to_owned(), v.starts_with('-')))
        .collect()
}

/// The value of the unit's one `KEY=` line.
fn unit_line(unit: &str, key: &str) -> String {
    match &unit_lines(unit, key)[..] {
        [(line, _)] => line.clone(),
        lines => panic!("sectionfs.service has {} {key}= lines", lines.len()),
    }
}

/// A daemon started from the unit's ExecStart; killed (our own child, by PID) and its
/// mount and default store removed on drop if the test did not finish it.
struct UnitDaemon {
    child: Child,
    mnt: PathBuf,
}

impl Drop for UnitDaemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if is_mounted(&self.mnt) {
            let _ = umount(&self.mnt, true);
        }
        let _ = fs::remove_dir_all(sectionfs::daemon::default_store(&self.mnt));
    }
}

mount_test! {
    serial fn systemd_unit() {
        let unit = fs::read_to_string(script("sectionfs.service")).unwrap();
        let p = place();
        let mnt = p.mnt.join("sections");
        let local = |s: String| {
            s.replace("/usr/local/bin/sectionfs", daemon_bin().to_str().unwrap())
                .replace("/mnt/sections", mnt.to_str().unwrap())
        };

        // systemd-analyze verify, on a copy that names the binary this test built.
        if Command::new("systemd-analyze")
            .arg("--version")
            .output()
            .is_ok()
        {
            let dir = p.store.with_file_name("unit");
            fs::create_dir(&dir).unwrap();
            let copy = dir.join("sectionfs.service");
            fs::write(&copy, local(unit.clone())).unwrap();
            let out = Command::new("systemd-analyze")
                .arg("verify")
                .arg(&copy)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "systemd-analyze verify: {}",
                text(&out)
            );
            assert!(out.stderr.is_empty(), "no warnings: {}", text(&out));
            // The check has teeth: a unit naming a missing binary fails it.
            fs::write(
                &copy,
                unit.replace("/usr/local/bin/sectionfs", "/no/such/sectionfs"),
            )
            .unwrap();
            let out = Command::new("systemd-analyze")
                .arg("verify")
                .arg(&copy)
                .output()
                .unwrap();
            assert!(!out.status.success(), "verify accepts a missing binary");
        } else {
            eprintln!(
                "systemd-analyze not found: skipping `systemd-analyze verify` of sectionfs.service"
            );
        }

        // Run the unit's commands as systemd would: start, ready, stop with SIGTERM.
        let start = |what: &str| -> UnitDaemon {
            for (line, may_fail) in unit_lines(&unit, "ExecStartPre") {
                let pre = sh(&local(line));
                assert!(may_fail || pre.status.success(), "ExecStartPre: {}", text(&pre));
            }
            let exec = local(unit_line(&unit, "ExecStart"));
            let argv: Vec<OsString> = exec.split_whitespace().map(OsString::from).collect();
            assert!(
                argv.iter().any(|a| a == "-f"),
                "the unit runs the daemon in the foreground"
            );
            let child = Command::new(&argv[0])
                .args(&argv[1..])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("ExecStart {exec}: {e}"));
            let daemon = UnitDaemon {
                child,
                mnt: mnt.clone(),
            };
            let post = sh(&local(unit_line(&unit, "ExecStartPost")));
            assert!(
                post.status.success(),
                "{what}: ExecStartPost: {}",
                text(&post)
            );
            assert!(is_mounted(&mnt), "{what}: started means mounted");
            daemon
        };
        let stop_post = || {
            let out = sh(&local(unit_line(&unit, "ExecStopPost")));
            assert!(out.status.success(), "ExecStopPost: {}", text(&out));
        };

        let mut d = start("first start");
        fs::write(mnt.join("Unit"), b"1").unwrap();
        // SAFETY: kill(2) to our own child's PID.
        assert_eq!(unsafe { libc::kill(d.child.id() as i32, libc::SIGTERM) }, 0);
        let status = wait_child(&mut d.child);
        assert!(
            status.success(),
            "SIGTERM: the daemon exits 0, got {status}"
        );
        assert!(!is_mounted(&mnt), "SIGTERM unmounts");
        stop_post();

        // After a crash, ExecStopPost clears the dead mount so a restart can mount again.
        let mut d = start("restart");
        assert_eq!(fs::read(mnt.join("Unit")).unwrap(), b"1");
        d.child.kill().unwrap();
        d.child.wait().unwrap();
        assert!(is_mounted(&mnt), "a killed daemon leaves its mount");
        stop_post();
        assert!(!is_mounted(&mnt), "ExecStopPost detached the dead mount");
        drop(d);
    }
}

fn wait_child(child: &mut Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "the daemon still runs {DEADLINE:?} after SIGTERM"
        );
        thread::sleep(Duration::from_millis(10));
    }
}

mount_test! {
    serial fn df_list_help_and_version() {
        let m = Mount::new("passthrough=on");
        let mnt = m.path();

        // df reports the store's filesystem (statfs).
        let df = |path: &Path| run_ok(Command::new("df").args(["-B1", "--output=size"]).arg(path));
        assert_eq!(
            df(mnt),
            df(m.store()),
            "df of the mount is the store's capacity"
        );

        fs::write(mnt.join("Frame"), vec![1u8; 8192]).unwrap();
        fs::set_permissions(mnt.join("Frame"), fs::Permissions::from_mode(0o644)).unwrap();
        fs::write(mnt.join("two words"), b"").unwrap();
        fs::set_permissions(mnt.join("two words"), fs::Permissions::from_mode(0o640)).unwrap();
        let held = File::open(mnt.join("Frame")).unwrap();

        let table = run_ok(Command::new(daemon_bin()).arg("list").arg(mnt));
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3, "{table}");
        let header: Vec<&str> = lines[0].split_whitespace().collect();
        assert_eq!(
            header,
            [
                "NAME", "SIZE", "OWNER", "MODE", "HANDLES", "CREATED", "COMMIT", "IO"
            ]
        );
        let frame: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(
            &frame[..5],
            ["Frame", "8192", "root", "0644", "1"],
            "{table}"
        );
        assert_eq!(&frame[6..], ["eager", "passthrough"], "{table}");
        assert!(lines[2].starts_with("two words "), "{table}");
        assert!(lines[2].contains(" 0640 "), "{table}");

        // --json, read back by Python's json module.
        let json = run_ok(Command::new(daemon_bin()).args(["list", "--json"]).arg(mnt));
        let check = "import json, sys\n\
            rows = json.load(sys.stdin)\n\
            assert [r['name'] for r in rows] == ['Frame', 'two words'], rows\n\
            f = rows[0]\n\
            assert (f['size'], f['open_handles'], f['mode'], f['owner'], f['uid']) == (8192, 1, '0644', 'root', 0), f\n\
            assert f['status'] in ('created', 'already_exists') and f['commit'] == 'eager', f\n\
            assert f['created_at'].endswith('Z') and f['creator_pid'] > 0, f\n";
        let mut py = Command::new("python3")
            .args(["-c", check])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(&mut py.stdin.take().unwrap(), json.as_bytes()).unwrap();
        let out = py.wait_with_output().unwrap();
        assert!(out.status.success(), "{json}\n{}", text(&out));
        drop(held);

        // Not a mount: one line, exit 1.
        let out = Command::new(daemon_bin())
            .args(["list"])
            .arg(m.store())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        assert_eq!(
            String::from_utf8_lossy(&out.stderr).trim(),
            format!("sectionfs: {}: not a sectionfs mount", m.store().display())
        );

        let version = run_ok(Command::new(daemon_bin()).arg("--version"));
        assert_eq!(
            version.trim(),
            format!("sectionfs {}", env!("CARGO_PKG_VERSION"))
        );
        let help = run_ok(Command::new(daemon_bin()).arg("--help"));
        for want in [
            "sectionfs [-f] [-o OPT[,OPT...]] [STORE] MOUNTPOINT",
            "sectionfs list [--json] MOUNTPOINT",
            "mount -t fuse.sectionfs",
            "commit=eager|lazy",
            "STORE/daemon.log",
        ] {
            assert!(help.contains(want), "--help lacks {want:?}:\n{help}");
        }
        // The foreground daemon logs to stderr (the guard captures it).
        assert!(m.log().contains("mounted"), "{}", m.log());
        m.unmount();
    }
}
