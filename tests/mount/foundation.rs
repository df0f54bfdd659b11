//! Issue 2, the foundation: named sections as files on a real FUSE mount.
//!
//! `CHECKS` is a table of named conformance checks, each a `fn(&Path)` over a mount point.
//! Every check runs on a fresh mount of a fresh store, once per data mode
//! (`common::modes()`), and a failing check names itself, its mode and the daemon's log.
//! Set `SECTIONFS_CHECK=<part of a name>` to run only the checks whose name holds it.
//!
//! Checks that need more than a path (the daemon's pid, the mode itself) are separate
//! tests at the end. Restart and command-line behaviour live in `foundation_restart.rs`
//! and `foundation_cli.rs`.

use crate::common;
use common::cpath;

use common::{CLIENTS, Client, Mount, read_meta, sh};
use std::ffi::{CString, OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::panic::{self, AssertUnwindSafe};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

type Check = fn(&Path);

/// What a check's expectations rest on. A `Posix` check asks nothing of a file system but
/// what POSIX and Linux promise of any (tmpfs included), so it also runs on a directory in
/// /dev/shm (`posix_rows_hold_on_dev_shm`): that proves its expectations, not just the
/// mount; what it checks of the contract besides (sidecars) it checks on the mount only
/// (`contract`). A `Sections` check needs the contract throughout (sidecars, refused
/// shrinks, names and node types): /dev/shm fails it, as measured.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Rule {
    Posix,
    Sections,
}
use Rule::{Posix, Sections};

/// The conformance checks, by name. Each gets a mount of its own.
const CHECKS: &[(&str, Rule, Check)] = &[
    // The file operations at the root.
    ("create_write_read_stat", Posix, create_write_read_stat),
    (
        "open_existing_missing_exclusive",
        Posix,
        open_existing_missing_exclusive,
    ),
    (
        "readdir_and_ls_list_sidecars",
        Sections,
        readdir_and_ls_list_sidecars,
    ),
    (
        "unlink_removes_name_keeps_handles",
        Posix,
        unlink_removes_name_keeps_handles,
    ),
    (
        "rename_moves_and_replaces",
        Posix,
        rename_moves_and_replaces,
    ),
    (
        "rename_refusals_change_nothing",
        Sections,
        rename_refusals_change_nothing,
    ),
    ("chmod_visible_at_once", Posix, chmod_visible_at_once),
    ("chown_visible_at_once", Posix, chown_visible_at_once),
    ("utimens_visible_at_once", Posix, utimens_visible_at_once),
    // Size rules.
    ("truncate_grows", Posix, truncate_grows),
    ("write_past_end_grows", Posix, write_past_end_grows),
    (
        "shrink_refused_nothing_changed",
        Sections,
        shrink_refused_nothing_changed,
    ),
    (
        "o_trunc_refused_on_non_empty",
        Sections,
        o_trunc_refused_on_non_empty,
    ),
    (
        "growth_seen_by_mapped_process_c_grows",
        Sections,
        growth_seen_c_grows,
    ),
    (
        "growth_seen_by_mapped_process_py_grows",
        Sections,
        growth_seen_py_grows,
    ),
    // Data path.
    (
        "pingpong_c_even_python_odd",
        Sections,
        pingpong_c_even_python_odd,
    ),
    (
        "pingpong_python_even_c_odd",
        Sections,
        pingpong_python_even_c_odd,
    ),
    (
        "fill_check_across_clients",
        Sections,
        fill_check_across_clients,
    ),
    (
        "write_read_agree_with_views",
        Posix,
        write_read_agree_with_views,
    ),
    // The sidecar.
    ("sidecar_has_every_key", Sections, sidecar_has_every_key),
    (
        "sidecar_fresh_at_every_open",
        Sections,
        sidecar_fresh_at_every_open,
    ),
    (
        "sidecar_status_per_opener",
        Sections,
        sidecar_status_per_opener,
    ),
    ("sidecar_read_only", Sections, sidecar_read_only),
    (
        "sidecar_cat_prints_whole_text",
        Sections,
        sidecar_cat_prints_whole_text,
    ),
    (
        "sidecar_escapes_odd_bytes",
        Sections,
        sidecar_escapes_odd_bytes,
    ),
    // Names and refused node types.
    ("reserved_names_refused", Sections, reserved_names_refused),
    ("name_length_limit", Sections, name_length_limit),
    ("odd_names_work", Sections, odd_names_work),
    (
        "other_node_types_refused",
        Sections,
        other_node_types_refused,
    ),
];

fn run_checks(mode: &str) {
    let only = std::env::var("SECTIONFS_CHECK").ok();
    let mut failed = Vec::new();
    let mut ran = 0;
    for &(name, _, check) in CHECKS {
        if only.as_deref().is_some_and(|f| !name.contains(f)) {
            continue;
        }
        ran += 1;
        let started = Instant::now();
        let mount = Mount::new(mode);
        // Else the `Posix` rows would skip their contract parts here too.
        assert!(contract(mount.path()), "the mount is not seen as one");
        let result = panic::catch_unwind(AssertUnwindSafe(|| check(mount.path())));
        let log = mount.log();
        // The mount goes in either case; an unclean daemon exit fails the check too.
        let unmounted = panic::catch_unwind(AssertUnwindSafe(|| mount.unmount()));
        eprintln!("{name} [{mode}]: {:?}", started.elapsed());
        if let Err(why) = result.and(unmounted) {
            failed.push(format!(
                "--- {name} [{mode}]: {}\n--- daemon log:\n{}",
                panic_text(&why),
                tail(&log, 40)
            ));
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {ran} checks failed in {mode}:\n{}",
        failed.len(),
        failed.join("\n")
    );
}

mount_test! {
    fn conformance_passthrough() {
        run_checks(common::modes()[0]);
    }
}

mount_test! {
    fn conformance_cached() {
        run_checks(common::modes()[1]);
    }
}

/// The `Posix` rows on a plain tmpfs directory (/dev/shm), each in a fresh directory: a
/// failure here is a wrong expectation, or a row that is not plain POSIX (tag it
/// `Sections`). No mount is involved.
#[test]
fn posix_rows_hold_on_dev_shm() {
    let only = std::env::var("SECTIONFS_CHECK").ok();
    let mut failed = Vec::new();
    let mut ran = 0;
    for &(name, rule, check) in CHECKS {
        if rule != Posix || only.as_deref().is_some_and(|f| !name.contains(f)) {
            continue;
        }
        ran += 1;
        let dir = tempfile::Builder::new()
            .prefix("sectionfs-posix-")
            .tempdir_in("/dev/shm")
            .expect("a temp dir in /dev/shm");
        if let Err(why) = panic::catch_unwind(AssertUnwindSafe(|| check(dir.path()))) {
            failed.push(format!("--- {name} [/dev/shm]: {}", panic_text(&why)));
        }
    }
    assert!(ran > 0 || only.is_some(), "no Posix row in CHECKS");
    assert!(
        failed.is_empty(),
        "{} of {ran} Posix checks fail on /dev/shm: wrong expectations, or not plain POSIX:\n{}",
        failed.len(),
        failed.join("\n")
    );
}

// ---------------------------------------------------------------------------------------
// Helpers

fn panic_text(p: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else {
        "(non-text panic)".into()
    }
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The errno of a call that must fail.
#[track_caller]
fn errno<T: std::fmt::Debug>(what: &str, r: io::Result<T>) -> i32 {
    match r {
        Ok(v) => panic!("{what}: succeeded ({v:?}), but must fail"),
        Err(e) => e
            .raw_os_error()
            .unwrap_or_else(|| panic!("{what}: no errno in {e}")),
    }
}

/// Asserts that a call failed with exactly `want`.
#[track_caller]
fn assert_errno<T: std::fmt::Debug>(what: &str, r: io::Result<T>, want: i32) {
    let got = errno(what, r);
    assert_eq!(
        got,
        want,
        "{what}: errno {got} ({}), want {want} ({})",
        io::Error::from_raw_os_error(got),
        io::Error::from_raw_os_error(want)
    );
}

/// A recognisable byte pattern.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32 * 7 + u32::from(seed)) as u8 % 251)
        .collect()
}

/// Creates a new section holding `data`, mode 0644.
fn put(path: &Path, data: &[u8]) {
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(path)
        .unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    f.write_all(data)
        .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

fn size(path: &Path) -> u64 {
    fs::metadata(path)
        .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
        .len()
}

/// A libc call's result as io::Result.
fn cvt(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn truncate(path: &Path, len: u64) -> io::Result<libc::c_int> {
    let c = cpath(path);
    // SAFETY: NUL-terminated path.
    cvt(unsafe { libc::truncate(c.as_ptr(), len as libc::off_t) })
}

fn renameat2(old: &Path, new: &Path, flags: libc::c_uint) -> io::Result<libc::c_int> {
    let (o, n) = (cpath(old), cpath(new));
    // SAFETY: NUL-terminated paths.
    cvt(unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            o.as_ptr(),
            libc::AT_FDCWD,
            n.as_ptr(),
            flags,
        )
    })
}

/// Sorted names in the mount's root.
fn listing(mnt: &Path) -> Vec<OsString> {
    let mut names: Vec<OsString> = fs::read_dir(mnt)
        .unwrap_or_else(|e| panic!("readdir {}: {e}", mnt.display()))
        .map(|e| e.expect("readdir entry").file_name())
        .collect();
    names.sort();
    names
}

/// Whether `mnt` is the sectionfs mount, not the /dev/shm directory a `Posix` row also
/// runs on: a `Posix` row checks the contract's additions (sidecars) only on the mount.
fn contract(mnt: &Path) -> bool {
    common::is_mounted(mnt)
}

/// The sorted listing of a directory holding `sections`: each with its sidecar on the
/// mount, alone on /dev/shm.
fn entries(mnt: &Path, sections: &[&str]) -> Vec<OsString> {
    let mut all: Vec<String> = sections.iter().map(|s| s.to_string()).collect();
    if contract(mnt) {
        all.extend(sections.iter().map(|s| format!("{s}.meta")));
    }
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    names(&all)
}

fn names(list: &[&str]) -> Vec<OsString> {
    let mut v: Vec<OsString> = list.iter().map(OsString::from).collect();
    v.sort();
    v
}

/// A MAP_SHARED view in this process.
struct View {
    ptr: *mut u8,
    len: usize,
}

impl View {
    fn new(file: &File, offset: u64, len: usize, write: bool) -> View {
        let prot = libc::PROT_READ | if write { libc::PROT_WRITE } else { 0 };
        // SAFETY: a fresh mapping of a valid fd; the kernel picks the address.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                prot,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                offset as libc::off_t,
            )
        };
        assert_ne!(
            ptr,
            libc::MAP_FAILED,
            "mmap len {len} at {offset}: {}",
            io::Error::last_os_error()
        );
        View {
            ptr: ptr.cast(),
            len,
        }
    }

    fn get(&self, i: usize) -> u8 {
        assert!(i < self.len);
        // SAFETY: in bounds of a live mapping; volatile because other processes write it.
        unsafe { self.ptr.add(i).read_volatile() }
    }
}

impl Drop for View {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// Runs a client and requires its exact stdout.
#[track_caller]
fn client_says(client: Client, args: &[&OsStr], want: &str) {
    let out = client.run(args);
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout) == want,
        "{client:?} {args:?}: {}, stdout {:?} (want {want:?}), stderr {:?}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}

/// Runs `bash -c cmd`, requiring success.
#[track_caller]
fn sh_ok(cmd: &str) -> String {
    let out = sh(cmd);
    assert!(
        out.status.success(),
        "{cmd}: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `bash -c cmd`, requiring failure, and returns its stderr.
#[track_caller]
fn sh_fails(cmd: &str) -> String {
    let out = sh(cmd);
    assert!(
        !out.status.success(),
        "{cmd}: succeeded, but must fail\nstdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The value of an extended attribute.
#[track_caller]
fn getxattr(path: &Path, name: &str) -> Vec<u8> {
    let (p, n) = (cpath(path), CString::new(name).unwrap());
    let mut buf = vec![0u8; 4096];
    // SAFETY: NUL-terminated strings and a buffer valid for its length.
    let len = unsafe { libc::getxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    assert!(len >= 0, "getxattr {name}: {}", io::Error::last_os_error());
    buf.truncate(len as usize);
    buf
}

/// Waits until `name.meta` counts `n` open handles. close(2) returns before the kernel's
/// RELEASE reaches the daemon, so a count read right after a close may still hold that file.
#[track_caller]
fn handles_settle(mnt: &Path, name: &str, n: u32) {
    let want = n.to_string();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let meta = read_meta(mnt, name);
        if meta["open_handles"] == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name}.meta: open_handles={} never became {n}",
            meta["open_handles"]
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Single-quotes a path for bash.
fn q(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', "'\\''"))
}

// ---------------------------------------------------------------------------------------
// The file operations at the root

fn create_write_read_stat(mnt: &Path) {
    let s = mnt.join("sec");
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o640)
        .open(&s)
        .expect("create");
    let meta = f.metadata().expect("fstat new section");
    assert!(meta.is_file());
    assert_eq!(meta.len(), 0, "a new section has size 0");
    assert_eq!(meta.mode() & 0o7777, 0o640);
    // SAFETY: no preconditions.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    assert_eq!((meta.uid(), meta.gid()), (uid, gid), "owned by its creator");
    assert_eq!(meta.nlink(), 1);

    let data = pattern(10_000, 1);
    f.write_all(&data).expect("write");
    assert_eq!(f.metadata().unwrap().len(), 10_000, "fstat after write");
    let mut back = Vec::new();
    File::open(&s).unwrap().read_to_end(&mut back).unwrap();
    assert_eq!(back, data, "read through a second open");
    let mut buf = [0u8; 100];
    f.read_exact_at(&mut buf, 5_000).expect("pread");
    assert_eq!(&buf[..], &data[5_000..5_100]);
    drop(f);
    assert_eq!(size(&s), 10_000, "stat by path after close");
    assert_eq!(fs::read(&s).unwrap(), data, "read after close");
}

fn open_existing_missing_exclusive(mnt: &Path) {
    let s = mnt.join("sec");
    assert_errno("open missing", File::open(&s), libc::ENOENT);
    assert_errno(
        "open missing O_RDWR",
        OpenOptions::new().read(true).write(true).open(&s),
        libc::ENOENT,
    );
    put(&s, b"hello");
    assert_errno(
        "O_CREAT|O_EXCL on an existing section",
        OpenOptions::new().write(true).create_new(true).open(&s),
        libc::EEXIST,
    );
    // O_CREAT without O_EXCL opens the existing section, bytes intact.
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&s)
        .expect("O_CREAT on an existing section");
    let mut got = String::new();
    f.read_to_string(&mut got).unwrap();
    assert_eq!(got, "hello");
    f.write_all_at(b"J", 0).unwrap();
    drop(f);
    assert_eq!(fs::read(&s).unwrap(), b"Jello");
    assert_eq!(listing(mnt), entries(mnt, &["sec"]));
}

fn readdir_and_ls_list_sidecars(mnt: &Path) {
    assert_eq!(
        listing(mnt),
        Vec::<OsString>::new(),
        "a fresh mount is empty"
    );
    put(&mnt.join("alpha"), b"a");
    put(&mnt.join("beta"), &[]);
    assert_eq!(
        listing(mnt),
        names(&["alpha", "alpha.meta", "beta", "beta.meta"])
    );
    let ls = sh_ok(&format!("LC_ALL=C ls -l {}", q(mnt)));
    let line = |name: &str| {
        ls.lines()
            .find(|l| l.split_whitespace().last() == Some(name))
            .unwrap_or_else(|| panic!("ls -l lacks {name}:\n{ls}"))
            .to_string()
    };
    assert!(line("alpha").starts_with("-rw-r--r-- 1 "), "{ls}");
    assert!(line("beta").starts_with("-rw-r--r-- 1 "), "{ls}");
    assert!(line("alpha.meta").starts_with("-r--r--r-- 1 "), "{ls}");
    assert!(line("beta.meta").starts_with("-r--r--r-- 1 "), "{ls}");
    // Sizes in ls: the section's bytes, and the sidecar's text.
    let field = |l: String, i: usize| l.split_whitespace().nth(i).unwrap().to_string();
    assert_eq!(field(line("alpha"), 4), "1", "{ls}");
    let meta_len = fs::read(mnt.join("alpha.meta")).unwrap().len();
    assert_eq!(field(line("alpha.meta"), 4), meta_len.to_string(), "{ls}");
    // The root is like /dev/shm.
    let root = fs::metadata(mnt).unwrap();
    assert!(root.is_dir());
    assert_eq!(root.mode() & 0o7777, 0o1777, "root mode");
}

fn unlink_removes_name_keeps_handles(mnt: &Path) {
    let s = mnt.join("sec");
    put(&s, b"old bytes");
    let keep = OpenOptions::new().read(true).write(true).open(&s).unwrap();
    let view = View::new(&keep, 0, 9, false);
    fs::remove_file(&s).expect("unlink");
    assert_errno("stat after unlink", fs::metadata(&s), libc::ENOENT);
    assert_errno(
        "stat sidecar after unlink",
        fs::metadata(mnt.join("sec.meta")),
        libc::ENOENT,
    );
    assert_eq!(listing(mnt), Vec::<OsString>::new());
    assert_errno("unlink again", fs::remove_file(&s), libc::ENOENT);
    // The open handle and the view still work on the old data.
    let mut buf = [0u8; 9];
    keep.read_exact_at(&mut buf, 0).unwrap();
    assert_eq!(&buf, b"old bytes");
    assert_eq!(view.get(0), b'o');
    keep.write_all_at(b"O", 0).unwrap();
    keep.read_exact_at(&mut buf, 0).unwrap();
    assert_eq!(&buf, b"Old bytes");
    // The name is free for a new, empty section.
    put(&s, b"");
    assert_eq!(size(&s), 0, "a new section under the old name starts empty");
    drop(view);
    drop(keep);
    assert_eq!(size(&s), 0);
}

fn rename_moves_and_replaces(mnt: &Path) {
    let (a, b, c) = (mnt.join("a"), mnt.join("b"), mnt.join("c"));
    put(&a, b"from a");
    put(&b, b"from b");
    fs::rename(&a, &c).expect("rename a -> c");
    assert_errno("stat old name", fs::metadata(&a), libc::ENOENT);
    assert_eq!(fs::read(&c).unwrap(), b"from a");
    if contract(mnt) {
        assert_eq!(read_meta(mnt, "c")["name"], "c");
    }
    assert_eq!(listing(mnt), entries(mnt, &["b", "c"]));
    // Over an existing section: the target is replaced.
    fs::rename(&c, &b).expect("rename c -> b (replace)");
    assert_eq!(fs::read(&b).unwrap(), b"from a");
    assert_eq!(listing(mnt), entries(mnt, &["b"]));
    if contract(mnt) {
        assert_eq!(read_meta(mnt, "b")["name"], "b");
    }
    // Renaming to itself changes nothing.
    fs::rename(&b, &b).expect("rename to itself");
    assert_eq!(fs::read(&b).unwrap(), b"from a");
    // `mv` works too.
    sh_ok(&format!("mv {} {}", q(&b), q(&a)));
    assert_eq!(fs::read(&a).unwrap(), b"from a");
    assert_eq!(listing(mnt), entries(mnt, &["a"]));
}

fn rename_refusals_change_nothing(mnt: &Path) {
    let (a, b) = (mnt.join("a"), mnt.join("b"));
    put(&a, b"AAA");
    put(&b, b"BBB");
    assert_errno(
        "RENAME_NOREPLACE over a section",
        renameat2(&a, &b, libc::RENAME_NOREPLACE),
        libc::EEXIST,
    );
    assert_errno(
        "RENAME_EXCHANGE",
        renameat2(&a, &b, libc::RENAME_EXCHANGE),
        libc::EINVAL,
    );
    assert_errno(
        "rename to a .meta name",
        fs::rename(&a, mnt.join("x.meta")),
        libc::EINVAL,
    );
    assert_errno(
        "rename to a name with a backslash",
        fs::rename(&a, mnt.join("x\\y")),
        libc::EINVAL,
    );
    assert_errno(
        "rename to a 251-byte name",
        fs::rename(&a, mnt.join("n".repeat(251))),
        libc::ENAMETOOLONG,
    );
    assert_errno(
        "rename of a sidecar",
        fs::rename(mnt.join("a.meta"), mnt.join("z")),
        libc::EPERM,
    );
    assert_errno(
        "rename of a missing section",
        fs::rename(mnt.join("nope"), mnt.join("z")),
        libc::ENOENT,
    );
    assert_eq!(fs::read(&a).unwrap(), b"AAA");
    assert_eq!(fs::read(&b).unwrap(), b"BBB");
    assert_eq!(listing(mnt), names(&["a", "a.meta", "b", "b.meta"]));
    // RENAME_NOREPLACE to a free name works.
    renameat2(&a, &mnt.join("c"), libc::RENAME_NOREPLACE).expect("RENAME_NOREPLACE");
    assert_eq!(fs::read(mnt.join("c")).unwrap(), b"AAA");
}

fn chmod_visible_at_once(mnt: &Path) {
    let s = mnt.join("sec");
    put(&s, b"x");
    for mode in [0o600, 0o640, 0o604, 0o000, 0o755, 0o644] {
        fs::set_permissions(&s, fs::Permissions::from_mode(mode)).expect("chmod");
        assert_eq!(
            fs::metadata(&s).unwrap().mode() & 0o7777,
            mode,
            "stat after chmod"
        );
        // The sidecar is readable by exactly those who may read the section.
        if contract(mnt) {
            let side = fs::metadata(mnt.join("sec.meta")).unwrap().mode() & 0o7777;
            assert_eq!(side, mode & 0o444, "sidecar mode after chmod {mode:o}");
        }
    }
    // Through an open fd (fchmod) too, and `chmod` the tool.
    let f = File::open(&s).unwrap();
    f.set_permissions(fs::Permissions::from_mode(0o620))
        .unwrap();
    assert_eq!(f.metadata().unwrap().mode() & 0o7777, 0o620);
    sh_ok(&format!("chmod 0444 {}", q(&s)));
    assert_eq!(fs::metadata(&s).unwrap().mode() & 0o7777, 0o444);
    assert_eq!(fs::read(&s).unwrap(), b"x", "chmod leaves the bytes");
}

fn chown_visible_at_once(mnt: &Path) {
    let s = mnt.join("sec");
    put(&s, b"x");
    std::os::unix::fs::chown(&s, Some(1234), Some(5678)).expect("chown");
    let m = fs::metadata(&s).unwrap();
    assert_eq!((m.uid(), m.gid()), (1234, 5678), "stat after chown");
    if contract(mnt) {
        let side = fs::metadata(mnt.join("sec.meta")).unwrap();
        assert_eq!((side.uid(), side.gid()), (1234, 5678), "sidecar owner");
    }
    // Group only, then owner only.
    std::os::unix::fs::chown(&s, None, Some(42)).unwrap();
    let m = fs::metadata(&s).unwrap();
    assert_eq!((m.uid(), m.gid()), (1234, 42));
    sh_ok(&format!("chown 4321 {}", q(&s)));
    let m = fs::metadata(&s).unwrap();
    assert_eq!((m.uid(), m.gid()), (4321, 42));
    assert_eq!(m.mode() & 0o7777, 0o644, "chown by root keeps the mode");
    assert_eq!(fs::read(&s).unwrap(), b"x");
}

fn utimens_visible_at_once(mnt: &Path) {
    let s = mnt.join("sec");
    put(&s, b"x");
    let c = cpath(&s);
    let times = [
        libc::timespec {
            tv_sec: 1_000_000_000,
            tv_nsec: 123_456_789,
        },
        libc::timespec {
            tv_sec: 1_200_000_000,
            tv_nsec: 987_654_321,
        },
    ];
    // SAFETY: NUL-terminated path and two timespecs.
    cvt(unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), 0) })
        .expect("utimensat");
    let m = fs::metadata(&s).unwrap();
    assert_eq!((m.atime(), m.atime_nsec()), (1_000_000_000, 123_456_789));
    assert_eq!((m.mtime(), m.mtime_nsec()), (1_200_000_000, 987_654_321));
    // Only mtime: atime stays.
    let only_mtime = [
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        libc::timespec {
            tv_sec: 1_300_000_000,
            tv_nsec: 0,
        },
    ];
    // SAFETY: as above.
    cvt(unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), only_mtime.as_ptr(), 0) }).unwrap();
    let m = fs::metadata(&s).unwrap();
    assert_eq!((m.atime(), m.atime_nsec()), (1_000_000_000, 123_456_789));
    assert_eq!((m.mtime(), m.mtime_nsec()), (1_300_000_000, 0));
    // `touch -d` and `touch` (now).
    sh_ok(&format!("touch -d '2001-02-03 04:05:06 UTC' {}", q(&s)));
    assert_eq!(fs::metadata(&s).unwrap().mtime(), 981_173_106);
    let before = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    sh_ok(&format!("touch {}", q(&s)));
    let m = fs::metadata(&s).unwrap();
    assert!(
        m.mtime() >= before,
        "touch sets mtime to now: {}",
        m.mtime()
    );
    assert!(
        m.atime() >= before,
        "touch sets atime to now: {}",
        m.atime()
    );
    assert_eq!(fs::read(&s).unwrap(), b"x");
}

// ---------------------------------------------------------------------------------------
// Size rules

fn truncate_grows(mnt: &Path) {
    let s = mnt.join("sec");
    sh_ok(&format!("truncate -s 1M {}", q(&s)));
    assert_eq!(size(&s), 1 << 20, "truncate -s on a new section");
    assert!(
        fs::read(&s).unwrap().iter().all(|&b| b == 0),
        "growth is zeros"
    );
    let f = OpenOptions::new().read(true).write(true).open(&s).unwrap();
    f.write_all_at(b"keep", 100).unwrap();
    f.set_len(3 << 20).expect("ftruncate to grow");
    assert_eq!(
        f.metadata().unwrap().len(),
        3 << 20,
        "fstat after ftruncate"
    );
    assert_eq!(size(&s), 3 << 20, "stat after ftruncate");
    let mut buf = [0u8; 4];
    f.read_exact_at(&mut buf, 100).unwrap();
    assert_eq!(&buf, b"keep", "growth keeps the bytes");
    f.read_exact_at(&mut buf, (3 << 20) - 4).unwrap();
    assert_eq!(buf, [0; 4]);
    // Setting the current size is not a shrink.
    f.set_len(3 << 20).expect("ftruncate to the same size");
    truncate(&s, 3 << 20).expect("truncate to the same size");
    if contract(mnt) {
        assert_eq!(read_meta(mnt, "sec")["size"], (3u64 << 20).to_string());
    }
}

fn write_past_end_grows(mnt: &Path) {
    let d = mnt.join("by-dd");
    sh_ok(&format!(
        "dd if=/dev/zero of={} bs=4096 count=3 seek=2 status=none",
        q(&d)
    ));
    assert_eq!(size(&d), 5 * 4096, "dd with seek on a new section");
    let c = mnt.join("by-cat");
    sh_ok(&format!("printf 'hello, section' | cat > {}", q(&c)));
    assert_eq!(
        fs::read(&c).unwrap(),
        b"hello, section",
        "cat > new section"
    );
    // pwrite far past the end: the gap reads as zeros.
    let p = mnt.join("by-pwrite");
    put(&p, b"head");
    let f = OpenOptions::new().read(true).write(true).open(&p).unwrap();
    f.write_all_at(b"tail", 100_000).unwrap();
    assert_eq!(f.metadata().unwrap().len(), 100_004);
    let all = fs::read(&p).unwrap();
    assert_eq!(all.len(), 100_004);
    assert_eq!(&all[..4], b"head");
    assert!(all[4..100_000].iter().all(|&b| b == 0));
    assert_eq!(&all[100_000..], b"tail");
    // Appending grows too.
    sh_ok(&format!("printf more >> {}", q(&c)));
    assert_eq!(fs::read(&c).unwrap(), b"hello, sectionmore");
    if contract(mnt) {
        assert_eq!(read_meta(mnt, "by-pwrite")["size"], "100004");
    }
}

fn shrink_refused_nothing_changed(mnt: &Path) {
    let s = mnt.join("sec");
    let data = pattern(8192, 3);
    put(&s, &data);
    let unchanged = |what: &str| {
        assert_eq!(size(&s), 8192, "size after refused {what}");
        assert_eq!(fs::read(&s).unwrap(), data, "bytes after refused {what}");
    };
    // Another handle is open: every shrink is EBUSY ("not now") and changes nothing.
    let held = File::open(&s).unwrap();
    assert_errno("truncate(2) to 100", truncate(&s, 100), libc::EBUSY);
    unchanged("truncate(2)");
    assert_errno("truncate(2) to 0", truncate(&s, 0), libc::EBUSY);
    unchanged("truncate(2) to 0");
    let f = OpenOptions::new().read(true).write(true).open(&s).unwrap();
    assert_errno("ftruncate to 4095", f.set_len(4095), libc::EBUSY);
    assert_eq!(
        f.metadata().unwrap().len(),
        8192,
        "fstat after refused ftruncate"
    );
    unchanged("ftruncate");
    let err = sh_fails(&format!("truncate -s 10 {}", q(&s)));
    assert!(err.contains("Device or resource busy"), "{err}");
    unchanged("truncate -s 10");
    sh_fails(&format!("truncate -s -1 {}", q(&s)));
    unchanged("truncate -s -1");
    // A growing truncate after the refusals still works.
    f.set_len(8193).expect("grow after refusals");
    assert_eq!(size(&s), 8193);
    // The sole holder may shrink: through its own handle, then by path with none open.
    drop(held);
    wait_for_handles(mnt, "sec", 1);
    f.set_len(4096).expect("ftruncate by the sole holder");
    assert_eq!(size(&s), 4096);
    assert_eq!(
        fs::read(&s).unwrap(),
        data[..4096],
        "the bytes below the cut stay"
    );
    drop(f);
    wait_for_handles(mnt, "sec", 0);
    truncate(&s, 100).expect("truncate(2) with no handle open");
    assert_eq!(size(&s), 100);
    assert_eq!(read_meta(mnt, "sec")["size"], "100");
}

/// close(2) returns before the kernel's RELEASE reaches the daemon.
fn wait_for_handles(mnt: &Path, name: &str, n: u32) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while read_meta(mnt, name)["open_handles"] != n.to_string() {
        assert!(
            std::time::Instant::now() < deadline,
            "{name}: open_handles != {n}"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

fn o_trunc_refused_on_non_empty(mnt: &Path) {
    let s = mnt.join("sec");
    let data = pattern(5000, 9);
    put(&s, &data);
    let unchanged = |what: &str| {
        assert_eq!(size(&s), 5000, "size after refused {what}");
        assert_eq!(fs::read(&s).unwrap(), data, "bytes after refused {what}");
    };
    // While another handle holds it open, O_TRUNC is EBUSY in every form.
    let held = File::open(&s).unwrap();
    assert_errno(
        "O_WRONLY|O_TRUNC",
        OpenOptions::new().write(true).truncate(true).open(&s),
        libc::EBUSY,
    );
    unchanged("O_TRUNC");
    assert_errno(
        "O_RDWR|O_CREAT|O_TRUNC",
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&s),
        libc::EBUSY,
    );
    unchanged("O_CREAT|O_TRUNC");
    let err = sh_fails(&format!("echo replaced > {}", q(&s)));
    assert!(err.contains("Device or resource busy"), "{err}");
    unchanged("shell >");
    sh_fails(&format!(
        "dd if=/dev/zero of={} bs=1 count=1 status=none",
        q(&s)
    ));
    unchanged("dd without conv=notrunc");
    drop(held);
    // With no other handle, O_TRUNC empties it, as on /dev/shm.
    sh_ok(&format!("echo replaced > {}", q(&s)));
    assert_eq!(fs::read(&s).unwrap(), b"replaced\n");
    // O_TRUNC on an empty section truncates nothing: allowed even while held.
    let e = mnt.join("empty");
    put(&e, b"");
    let held = File::open(&e).unwrap();
    OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&e)
        .expect("O_TRUNC on an empty section");
    drop(held);
    sh_ok(&format!("echo fine > {}", q(&e)));
    assert_eq!(fs::read(&e).unwrap(), b"fine\n");
}

/// One client grows a section that this process and the other client have mapped; both
/// see the new size at once and map the new tail.
fn growth_seen(mnt: &Path, grower: Client, watcher: Client) {
    const OLD: u64 = 8192;
    const NEW: u64 = 65536 + 100;
    let s = mnt.join("sec");
    let arg = s.as_os_str();
    client_says(
        watcher,
        &[os("create"), arg, os(&OLD.to_string())],
        "status=created\nsize=8192\n",
    );
    client_says(
        watcher,
        &[os("fill"), arg, os("0"), os(&OLD.to_string()), os("1")],
        "ok\n",
    );
    // This process: an fd and a view of the old size, taken before the growth.
    let f = OpenOptions::new().read(true).write(true).open(&s).unwrap();
    let old_view = View::new(&f, 0, OLD as usize, false);
    let watch = watcher
        .command()
        .args([os("watch-size"), arg, os(&NEW.to_string()), os("20000")])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn watch-size");
    client_says(
        grower,
        &[os("grow-map"), arg, os(&NEW.to_string()), os("7")],
        &format!("ok old={OLD} new={NEW}\n"),
    );
    // At once, without waiting: the size through an fd opened before, and by path.
    assert_eq!(
        f.metadata().unwrap().len(),
        NEW,
        "fstat of an fd opened before growth"
    );
    assert_eq!(size(&s), NEW, "stat by path");
    // Map the new tail here and see the grower's bytes (it writes BYTE at the old end
    // and at the start of each following page).
    let tail = View::new(&f, OLD, (NEW - OLD) as usize, false);
    for off in [0usize, 4096, 8192, 57344] {
        assert_eq!(tail.get(off), 7, "new tail at {}", OLD as usize + off);
    }
    assert_eq!(tail.get(1), 0, "the rest of the growth is zeros");
    assert_eq!(old_view.get(0), 1, "the old view still works");
    assert_eq!(old_view.get(OLD as usize - 1), 1);
    let out = watch.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout == b"ok\n",
        "{watcher:?} watch-size: {} {:?} {:?}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The other client maps the new tail too.
    client_says(
        watcher,
        &[os("check"), arg, os(&OLD.to_string()), os("1"), os("7")],
        "ok\n",
    );
    client_says(
        watcher,
        &[os("check"), arg, os("65536"), os("1"), os("7")],
        "ok\n",
    );
    client_says(
        watcher,
        &[os("check"), arg, os("0"), os(&OLD.to_string()), os("1")],
        "ok\n",
    );
    assert_eq!(read_meta(mnt, "sec")["size"], NEW.to_string());
    // Growing to a size that is not a page multiple again, from this process.
    f.set_len(NEW + 5000).unwrap();
    client_says(
        watcher,
        &[os("open"), arg],
        &format!("size={}\n", NEW + 5000),
    );
}

fn growth_seen_c_grows(mnt: &Path) {
    growth_seen(mnt, Client::C, Client::Python);
}

fn growth_seen_py_grows(mnt: &Path) {
    growth_seen(mnt, Client::Python, Client::C);
}

// ---------------------------------------------------------------------------------------
// Data path

const PINGPONG_ROUNDS: u32 = 500;

fn pingpong(mnt: &Path, even: Client, odd: Client) {
    let s = mnt.join("counter");
    let arg = s.as_os_str();
    client_says(
        even,
        &[os("create"), arg, os("4096")],
        "status=created\nsize=4096\n",
    );
    client_says(
        odd,
        &[os("create"), arg, os("4096")],
        "status=already_exists\nsize=4096\n",
    );
    let rounds = PINGPONG_ROUNDS.to_string();
    let spawn = |c: Client, role: &str| {
        c.command()
            .args([os("pingpong"), arg, os(role), os(&rounds)])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn pingpong")
    };
    let (a, b) = (spawn(even, "even"), spawn(odd, "odd"));
    let final_count = 2 * PINGPONG_ROUNDS;
    for (who, child) in [(even, a), (odd, b)] {
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{who:?} pingpong: {} {stdout:?} {:?}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let n: u32 = stdout
            .trim()
            .strip_prefix("ok ")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{who:?} pingpong said {stdout:?}"));
        // The even side stops at 2R-1, the odd side makes the last increment.
        assert!(n == final_count || n == final_count - 1, "{who:?}: {n}");
    }
    let mut counter = [0u8; 8];
    File::open(&s)
        .unwrap()
        .read_exact_at(&mut counter, 0)
        .unwrap();
    assert_eq!(
        u64::from_le_bytes(counter),
        u64::from(final_count),
        "read() sees the views' last write"
    );
}

fn pingpong_c_even_python_odd(mnt: &Path) {
    pingpong(mnt, Client::C, Client::Python);
}

fn pingpong_python_even_c_odd(mnt: &Path) {
    pingpong(mnt, Client::Python, Client::C);
}

fn fill_check_across_clients(mnt: &Path) {
    const LEN: u64 = 2 << 20;
    let s = mnt.join("sec");
    let arg = s.as_os_str();
    client_says(
        Client::C,
        &[os("create"), arg, os(&LEN.to_string())],
        &format!("status=created\nsize={LEN}\n"),
    );
    for (writer, reader, byte) in [
        (Client::C, Client::Python, "171"),
        (Client::Python, Client::C, "205"),
    ] {
        client_says(
            writer,
            &[os("fill"), arg, os("0"), os(&LEN.to_string()), os(byte)],
            "ok\n",
        );
        client_says(
            reader,
            &[os("check"), arg, os("0"), os(&LEN.to_string()), os(byte)],
            "ok\n",
        );
    }
    // A partial range: the rest keeps the previous byte.
    client_says(
        Client::C,
        &[os("fill"), arg, os("4000"), os("10000"), os("1")],
        "ok\n",
    );
    client_says(
        Client::Python,
        &[os("check"), arg, os("4000"), os("10000"), os("1")],
        "ok\n",
    );
    client_says(
        Client::Python,
        &[os("check"), arg, os("0"), os("4000"), os("205")],
        "ok\n",
    );
    client_says(
        Client::Python,
        &[
            os("check"),
            arg,
            os("14000"),
            os(&(LEN - 14000).to_string()),
            os("205"),
        ],
        "ok\n",
    );
    // A mismatch is reported (the check is not vacuous).
    let out = Client::C.run([os("check"), arg, os("0"), os("4001"), os("205")]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "check must see the filled byte at 4000"
    );
}

fn write_read_agree_with_views(mnt: &Path) {
    const LEN: usize = 1 << 20;
    let s = mnt.join("sec");
    let arg = s.as_os_str();
    // write() by dd, seen by both clients' views.
    sh_ok(&format!(
        "head -c {LEN} /dev/zero | tr '\\0' '\\132' | dd of={} bs=64k status=none",
        q(&s)
    ));
    assert_eq!(size(&s), LEN as u64);
    for c in CLIENTS {
        client_says(
            c,
            &[os("check"), arg, os("0"), os(&LEN.to_string()), os("90")],
            "ok\n",
        );
    }
    // Views written by each client, seen by read() through cat and std.
    for (c, byte) in [(Client::C, 0x11u8), (Client::Python, 0x22u8)] {
        client_says(
            c,
            &[
                os("fill"),
                arg,
                os("4096"),
                os("8192"),
                os(&byte.to_string()),
            ],
            "ok\n",
        );
        let got = fs::read(&s).unwrap();
        assert!(
            got[4096..12288].iter().all(|&b| b == byte),
            "{c:?} fill seen by read()"
        );
        assert!(got[..4096].iter().all(|&b| b == 90));
        assert!(got[12288..].iter().all(|&b| b == 90));
        let cat = Command::new("cat").arg(&s).output().unwrap();
        assert_eq!(cat.stdout, got, "cat and read() agree");
    }
    // A write() over a view held open in this process shows in the view at once.
    let f = OpenOptions::new().read(true).write(true).open(&s).unwrap();
    let view = View::new(&f, 0, LEN, false);
    sh_ok(&format!(
        "printf 'ABCD' | dd of={} bs=1 seek=500000 conv=notrunc status=none",
        q(&s)
    ));
    assert_eq!(
        [view.get(500_000), view.get(500_003)],
        [b'A', b'D'],
        "dd's write seen in an existing view"
    );
    // And a pwrite from this process, seen by the clients' views.
    f.write_all_at(&[0x33; 100], 700_000).unwrap();
    for c in CLIENTS {
        client_says(
            c,
            &[os("check"), arg, os("700000"), os("100"), os("51")],
            "ok\n",
        );
    }
    // Appending with cat >> grows, and the clients see the grown tail.
    sh_ok(&format!(
        "head -c 3000 /dev/zero | tr '\\0' '\\001' >> {}",
        q(&s)
    ));
    for c in CLIENTS {
        client_says(
            c,
            &[os("check"), arg, os(&LEN.to_string()), os("3000"), os("1")],
            "ok\n",
        );
    }
}

// ---------------------------------------------------------------------------------------
// The sidecar

/// Seconds since the epoch of an RFC 3339 UTC time `YYYY-MM-DDTHH:MM:SSZ`.
fn parse_rfc3339(t: &str) -> i64 {
    let b = t.as_bytes();
    assert!(
        b.len() == 20
            && b[4] == b'-'
            && b[7] == b'-'
            && b[10] == b'T'
            && b[13] == b':'
            && b[16] == b':'
            && b[19] == b'Z',
        "not RFC 3339 UTC: {t:?}"
    );
    let n = |r: std::ops::Range<usize>| -> i64 { t[r].parse().unwrap_or_else(|_| panic!("{t:?}")) };
    let (y, m, d) = (n(0..4), n(5..7), n(8..10));
    let (hh, mm, ss) = (n(11..13), n(14..16), n(17..19));
    assert!((1..=12).contains(&m) && (1..=31).contains(&d) && hh < 24 && mm < 60 && ss < 61);
    // Days from civil (Howard Hinnant).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    days * 86_400 + hh * 3600 + mm * 60 + ss
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn sidecar_has_every_key(mnt: &Path) {
    let s = mnt.join("sec");
    let before = now_secs();
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(&s)
        .unwrap();
    let after = now_secs();
    f.write_all(&[5; 5000]).unwrap();
    let text = fs::read_to_string(mnt.join("sec.meta")).unwrap();
    let keys: Vec<&str> = text
        .lines()
        .map(|l| l.split_once('=').expect(&text).0)
        .collect();
    assert_eq!(
        keys[..9],
        [
            "name",
            "size",
            "status",
            "creator_pid",
            "created_at",
            "open_handles",
            "io",
            "commit",
            "transport"
        ],
        "{text}"
    );
    let meta = read_meta(mnt, "sec");
    assert_eq!(meta["name"], "sec");
    assert_eq!(meta["size"], "5000");
    // This process created it and holds its handle.
    assert_eq!(meta["status"], "created", "{text}");
    assert_eq!(
        meta["creator_pid"],
        std::process::id().to_string(),
        "the thread group id"
    );
    let created = parse_rfc3339(&meta["created_at"]);
    assert!(
        (before..=after + 1).contains(&created),
        "created_at {created} outside [{before}, {after}]"
    );
    assert_eq!(meta["open_handles"], "1");
    assert!(
        ["passthrough", "cached"].contains(&meta["io"].as_str()),
        "{text}"
    );
    assert!(
        ["io_uring", "dev_fuse"].contains(&meta["transport"].as_str()),
        "{text}"
    );
    assert_eq!(meta["commit"], "eager", "the default commit");
    drop(f);
    handles_settle(mnt, "sec", 0);
    // A section created by another process names that process.
    let c = mnt.join("by-client");
    let out = Command::new(common::c_client())
        .args([os("create"), c.as_os_str(), os("0")])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = out.id();
    assert!(out.wait_with_output().unwrap().status.success());
    assert_eq!(read_meta(mnt, "by-client")["creator_pid"], pid.to_string());
}

fn sidecar_fresh_at_every_open(mnt: &Path) {
    let s = mnt.join("sec");
    let meta_path = mnt.join("sec.meta");
    put(&s, b"");
    handles_settle(mnt, "sec", 0);
    let cat = || sh_ok(&format!("cat {}", q(&meta_path)));
    assert!(cat().contains("\nsize=0\n"));
    sh_ok(&format!("truncate -s 4096 {}", q(&s)));
    assert!(
        cat().contains("\nsize=4096\n"),
        "size at the next cat: {}",
        cat()
    );
    let f = OpenOptions::new().read(true).write(true).open(&s).unwrap();
    f.write_all_at(b"x", 10_000).unwrap();
    assert!(cat().contains("\nsize=10001\n"), "{}", cat());
    let g = File::open(&s).unwrap();
    // This process's two handles (the shell's truncate may still be releasing its own).
    handles_settle(mnt, "sec", 2);
    drop(g);
    handles_settle(mnt, "sec", 1);
    // A sidecar fd opened before a change keeps its snapshot; a new open sees the change.
    let mut early = File::open(&meta_path).unwrap();
    f.set_len(20_000).unwrap();
    let mut old = String::new();
    early.read_to_string(&mut old).unwrap();
    assert!(old.contains("\nsize=10001\n"), "{old}");
    assert!(cat().contains("\nsize=20000\n"), "{}", cat());
    // stat of the sidecar tells the length of the text a reader gets.
    let text = fs::read(&meta_path).unwrap();
    assert_eq!(size(&meta_path), text.len() as u64);
}

fn sidecar_status_per_opener(mnt: &Path) {
    let s = mnt.join("sec");
    let arg = s.as_os_str();
    client_says(
        Client::C,
        &[os("create"), arg, os("100")],
        "status=created\nsize=100\n",
    );
    client_says(
        Client::Python,
        &[os("create"), arg, os("50")],
        "status=already_exists\nsize=100\n",
    );
    client_says(
        Client::C,
        &[os("create"), arg, os("200")],
        "status=already_exists\nsize=200\n",
    );
    // A reader without a handle: the most recent open by anyone.
    assert_eq!(read_meta(mnt, "sec")["status"], "already_exists");
    let n = mnt.join("new");
    client_says(
        Client::Python,
        &[os("create"), n.as_os_str(), os("0")],
        "status=created\nsize=0\n",
    );
    assert_eq!(read_meta(mnt, "new")["status"], "created");
    // This process holds a handle from its own O_CREAT that found the section.
    let _h = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&n)
        .unwrap();
    assert_eq!(read_meta(mnt, "new")["status"], "already_exists");
}

fn sidecar_read_only(mnt: &Path) {
    let s = mnt.join("sec");
    put(&s, b"data");
    handles_settle(mnt, "sec", 0);
    let m = mnt.join("sec.meta");
    let text = fs::read(&m).unwrap();
    assert_errno(
        "open sidecar O_WRONLY",
        OpenOptions::new().write(true).open(&m),
        libc::EACCES,
    );
    assert_errno(
        "open sidecar O_RDWR",
        OpenOptions::new().read(true).write(true).open(&m),
        libc::EACCES,
    );
    assert_errno(
        "open sidecar O_TRUNC",
        OpenOptions::new().write(true).truncate(true).open(&m),
        libc::EACCES,
    );
    assert_errno(
        "O_CREAT|O_EXCL on a sidecar",
        OpenOptions::new().write(true).create_new(true).open(&m),
        libc::EEXIST,
    );
    assert_errno("truncate(2) a sidecar", truncate(&m, 0), libc::EACCES);
    assert_errno(
        "truncate(2) a sidecar larger",
        truncate(&m, 4096),
        libc::EACCES,
    );
    assert_errno(
        "chmod a sidecar",
        fs::set_permissions(&m, fs::Permissions::from_mode(0o666)),
        libc::EACCES,
    );
    assert_errno("rm a sidecar", fs::remove_file(&m), libc::EPERM);
    let err = sh_fails(&format!("echo x > {}", q(&m)));
    assert!(err.contains("Permission denied"), "{err}");
    sh_fails(&format!("rm -f {}", q(&m)));
    sh_fails(&format!("truncate -s 0 {}", q(&m)));
    assert_eq!(fs::read(&m).unwrap(), text, "the sidecar is unchanged");
    assert_eq!(fs::read(&s).unwrap(), b"data", "the section is unchanged");
    assert_eq!(listing(mnt), names(&["sec", "sec.meta"]));
    // A sidecar without a section does not exist, and cannot be made.
    assert_errno(
        "stat an orphan sidecar",
        fs::metadata(mnt.join("nope.meta")),
        libc::ENOENT,
    );
}

fn sidecar_cat_prints_whole_text(mnt: &Path) {
    let s = mnt.join("sec");
    put(&s, &[1; 123]);
    handles_settle(mnt, "sec", 0);
    let m = mnt.join("sec.meta");
    let text = fs::read_to_string(&m).unwrap();
    let cat = sh_ok(&format!("cat {}", q(&m)));
    assert_eq!(cat, text);
    assert!(text.ends_with('\n'), "{text:?}");
    assert!(text.starts_with("name=sec\nsize=123\n"), "{text}");
    assert_eq!(text.lines().count(), 9, "{text}");
    // Small reads (1 byte at a time) give the same text.
    let mut f = File::open(&m).unwrap();
    let mut one = [0u8; 1];
    let mut slow = Vec::new();
    while f.read(&mut one).unwrap() == 1 {
        slow.push(one[0]);
    }
    assert_eq!(String::from_utf8(slow).unwrap(), text);
    // The user.sectionfs.* attributes tell the same facts.
    let size_attr = getxattr(&s, "user.sectionfs.size");
    assert_eq!(size_attr, b"123");
    assert_eq!(getxattr(&s, "user.sectionfs.name"), b"sec");
}

fn sidecar_escapes_odd_bytes(mnt: &Path) {
    let cases: [(&[u8], &str); 7] = [
        (b"new\nline", "new\\nline"),
        (b"tab\there", "tab\\x09here"),
        (b"ctl\x01\x1f\x7f\r", "ctl\\x01\\x1f\\x7f\\x0d"),
        (b"latin1\xff\xfe", "latin1\\xff\\xfe"),
        ("ünï cødé".as_bytes(), "ünï cødé"),
        // C1 NEL and the line separator: Python's splitlines() would break at them.
        ("nel\u{85}".as_bytes(), "nel\\xc2\\x85"),
        ("ls\u{2028}".as_bytes(), "ls\\xe2\\x80\\xa8"),
    ];
    for (raw, escaped) in cases {
        let name = OsStr::from_bytes(raw);
        put(&mnt.join(name), b"x");
        let mut meta_name = raw.to_vec();
        meta_name.extend_from_slice(b".meta");
        let text = fs::read(mnt.join(OsStr::from_bytes(&meta_name))).unwrap();
        let text = String::from_utf8(text).expect("the sidecar is UTF-8 text");
        assert_eq!(
            text.lines().next(),
            Some(&*format!("name={escaped}")),
            "{text:?}"
        );
        assert_eq!(text.lines().count(), 9, "one line per key: {text:?}");
    }
}

// ---------------------------------------------------------------------------------------
// Names

fn reserved_names_refused(mnt: &Path) {
    for bad in [
        "x.meta",
        ".meta",
        "a.b.meta",
        "back\\slash",
        "\\",
        "trail\\",
    ] {
        let p = mnt.join(bad);
        assert_errno(
            &format!("create {bad:?}"),
            OpenOptions::new().write(true).create_new(true).open(&p),
            libc::EINVAL,
        );
        assert_errno(
            &format!("create {bad:?} without O_EXCL"),
            OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .open(&p),
            libc::EINVAL,
        );
    }
    let err = sh_fails(&format!("touch {}", q(&mnt.join("y.meta"))));
    assert!(err.contains("Invalid argument"), "{err}");
    assert_eq!(listing(mnt), Vec::<OsString>::new(), "nothing was created");
    // `x.meta` is the sidecar once `x` exists: open for writing refuses, O_EXCL sees it.
    put(&mnt.join("x"), b"");
    assert_errno(
        "create x.meta when x exists",
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(mnt.join("x.meta")),
        libc::EACCES,
    );
    // Names that merely contain "meta" are fine.
    for ok in ["meta", "x.met", "x.meta.d", "x.META", ".metadata"] {
        put(&mnt.join(ok), b"ok");
        assert_eq!(fs::read(mnt.join(ok)).unwrap(), b"ok");
    }
}

fn name_length_limit(mnt: &Path) {
    let n250 = "n".repeat(250);
    put(&mnt.join(&n250), b"long");
    assert_eq!(fs::read(mnt.join(&n250)).unwrap(), b"long");
    let side = format!("{n250}.meta");
    assert_eq!(side.len(), 255);
    assert_eq!(read_meta(mnt, &n250)["name"], n250);
    assert!(listing(mnt).contains(&OsString::from(&side)));
    // 250 bytes of UTF-8 (125 two-byte characters).
    let utf8 = "é".repeat(125);
    assert_eq!(utf8.len(), 250);
    put(&mnt.join(&utf8), b"u");
    for len in [251usize, 254, 255] {
        let p = mnt.join("n".repeat(len));
        assert_errno(
            &format!("create a {len}-byte name"),
            OpenOptions::new().write(true).create_new(true).open(&p),
            libc::ENAMETOOLONG,
        );
        assert_errno(
            &format!("stat a {len}-byte name"),
            fs::metadata(&p),
            libc::ENAMETOOLONG,
        );
    }
    assert_errno(
        "a 251-byte UTF-8 name",
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(mnt.join(format!("{utf8}x"))),
        libc::ENAMETOOLONG,
    );
    // Past NAME_MAX the kernel refuses by itself.
    assert_errno(
        "create a 256-byte name",
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(mnt.join("n".repeat(256))),
        libc::ENAMETOOLONG,
    );
    assert_eq!(
        listing(mnt).len(),
        4,
        "only the two valid sections and their sidecars"
    );
}

fn odd_names_work(mnt: &Path) {
    let odd: [&[u8]; 7] = [
        b"with space",
        b" leading and trailing ",
        "ünïcødé ☃".as_bytes(),
        b".hidden",
        b"..two-dots",
        b"-dash",
        b"Case",
    ];
    for (i, raw) in odd.iter().enumerate() {
        let p = mnt.join(OsStr::from_bytes(raw));
        put(&p, &[i as u8; 3]);
        assert_eq!(fs::read(&p).unwrap(), [i as u8; 3]);
    }
    // Names are case-sensitive.
    put(&mnt.join("case"), b"lower");
    assert_eq!(fs::read(mnt.join("Case")).unwrap(), [6; 3]);
    let mut want: Vec<OsString> = Vec::new();
    for raw in odd.iter().copied().chain([&b"case"[..]]) {
        want.push(OsString::from_vec(raw.to_vec()));
        let mut m = raw.to_vec();
        m.extend_from_slice(b".meta");
        want.push(OsString::from_vec(m));
    }
    want.sort();
    assert_eq!(listing(mnt), want);
    // `ls -a` shows the hidden ones.
    let ls = sh_ok(&format!("ls -a {}", q(mnt)));
    assert!(ls.lines().any(|l| l == ".hidden"), "{ls}");
    assert!(ls.lines().any(|l| l == ".hidden.meta"), "{ls}");
}

fn other_node_types_refused(mnt: &Path) {
    put(&mnt.join("sec"), b"x");
    assert_errno("mkdir", fs::create_dir(mnt.join("dir")), libc::EPERM);
    assert_errno(
        "symlink",
        std::os::unix::fs::symlink("sec", mnt.join("link")),
        libc::EPERM,
    );
    assert_errno(
        "hard link",
        fs::hard_link(mnt.join("sec"), mnt.join("hard")),
        libc::EPERM,
    );
    let mk = |name: &str, mode: libc::mode_t, dev: libc::dev_t| {
        let c = cpath(&mnt.join(name));
        // SAFETY: NUL-terminated path.
        cvt(unsafe { libc::mknod(c.as_ptr(), mode, dev) })
    };
    assert_errno("mkfifo", mk("fifo", libc::S_IFIFO | 0o644, 0), libc::EPERM);
    assert_errno(
        "mknod socket",
        mk("sock", libc::S_IFSOCK | 0o644, 0),
        libc::EPERM,
    );
    assert_errno(
        "mknod char device",
        mk("null", libc::S_IFCHR | 0o644, libc::makedev(1, 3)),
        libc::EPERM,
    );
    let err = sh_fails(&format!("mkfifo {}", q(&mnt.join("fifo2"))));
    assert!(err.contains("Operation not permitted"), "{err}");
    assert_errno(
        "rmdir of a section",
        fs::remove_dir(mnt.join("sec")),
        libc::ENOTDIR,
    );
    assert_eq!(
        listing(mnt),
        names(&["sec", "sec.meta"]),
        "nothing else appeared"
    );
    // A plain mknod of a regular file is a create.
    mk("regular", libc::S_IFREG | 0o644, 0).expect("mknod S_IFREG");
    assert_eq!(size(&mnt.join("regular")), 0);
}

// ---------------------------------------------------------------------------------------
// Checks that need more than a mount path

mount_test! {
    /// `io=` in the sidecar names the data path the mount was asked for.
    fn sidecar_io_names_the_data_path(mode) {
        let io = common::io_of(mode);
        let mount = Mount::new(mode);
        put(&mount.section("s"), b"x");
        assert_eq!(read_meta(mount.path(), "s")["io"], io, "{mode}");
        // The daemon's own log says the same.
        assert!(
            mount.log().contains(&format!("io={io}")),
            "{mode}: {}",
            mount.log()
        );
        mount.unmount();
    }
}

mount_test! {
    /// The daemon keeps no fd per idle section: its fd count after creating (and closing)
    /// thousands of sections is small, and does not grow with the number of sections.
    fn no_fd_per_idle_section(mode) {
        const SECTIONS: usize = 2000;
        // On tmpfs, the default kind of store: removing thousands of files from the
        // disk-backed TMPDIR afterwards takes seconds here.
        let dir = tempfile::Builder::new()
            .prefix("sectionfs-fds-")
            .tempdir_in("/dev/shm")
            .expect("a temp dir on /dev/shm");
        let mount = Mount::with_store(&dir.path().join("store"), mode);
        let fds = || {
            fs::read_dir(format!("/proc/{}/fd", mount.pid()))
                .expect("read the daemon's fd table")
                .count()
        };
        // close(2) returns before the kernel's RELEASE reaches the daemon: let the last
        // few releases land (an eventual count, not a timing limit).
        let settled = |limit: usize| {
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                let n = fds();
                if n <= limit || Instant::now() > deadline {
                    return n;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        };
        put(&mount.section("warm"), b"x");
        let base = fds();
        for i in 0..SECTIONS / 2 {
            let mut f = File::create_new(mount.section(format!("s{i}"))).unwrap();
            f.write_all(&[1]).unwrap();
        }
        let half = settled(base + 2);
        for i in SECTIONS / 2..SECTIONS {
            File::create_new(mount.section(format!("s{i}"))).unwrap();
        }
        // Open, read and close every section again.
        for i in 0..SECTIONS {
            fs::read(mount.section(format!("s{i}"))).unwrap();
        }
        let full = settled(base + 2);
        assert!(
            full <= 64 && half <= 64,
            "{mode}: the daemon holds {full} fds with {SECTIONS} idle sections"
        );
        assert!(
            full <= base + 2 && half <= base + 2,
            "{mode}: fds grew with the sections: {base} -> {half} -> {full}"
        );
        // Open handles may hold files; closing them frees them again.
        let open: Vec<File> = (0..10)
            .map(|i| File::open(mount.section(format!("s{i}"))).unwrap())
            .collect();
        drop(open);
        let after = settled(base + 2);
        assert!(
            after <= base + 2,
            "{mode}: fds after closing: {base} -> {after}"
        );
        assert_eq!(listing(mount.path()).len(), 2 * (SECTIONS + 1));
        mount.unmount();
    }
}
