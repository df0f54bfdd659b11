//! Every refused input of DESIGN.md's "Refused input" table, one named row each, in both
//! data modes. A row asserts the exact errno, that nothing changed (listing, bytes, modes),
//! and which layer answered: a daemon row must leave exactly one debug line naming the
//! input and its errno, a kernel row none (the daemon was never asked), a quiet row (an
//! absence, not a refusal) none either. After all rows the daemon must still serve, and
//! its log must hold no panic.

use crate::common;
use common::{cpath, last_errno, open_fd as open};

use common::Mount;
use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Who answers a row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Layer {
    /// The kernel refuses before any request reaches the daemon: no log line.
    Kernel,
    /// The daemon refuses: exactly one debug line with the input's name and the errno.
    Daemon,
    /// The daemon answers an absence (ENODATA): not a refusal, so no log line.
    Quiet,
}

/// The fixture every row runs against: a mount holding `victim` (4 KiB of bytes, 0644)
/// and `empty` (0 bytes).
struct Fixture {
    mount: Mount,
}

impl Fixture {
    fn p(&self, name: &str) -> PathBuf {
        self.mount.section(name)
    }

    fn c(&self, name: &str) -> CString {
        cpath(&self.p(name))
    }

    /// The victim, opened read-write.
    fn victim(&self) -> OwnedFd {
        open(&self.p("victim"), libc::O_RDWR, 0).expect("open victim")
    }
}

type Check = fn(&Fixture) -> Result<(), i32>;

struct Row {
    /// The input, as DESIGN.md's table names it.
    what: &'static str,
    errno: i32,
    layer: Layer,
    /// What the daemon's log line must contain (the name as `{:?}` prints it).
    logged: &'static str,
    check: Check,
}

fn rc(r: libc::c_int) -> Result<(), i32> {
    if r == 0 { Ok(()) } else { Err(last_errno()) }
}

fn create(fx: &Fixture, name: &[u8]) -> Result<(), i32> {
    let path = fx.mount.path().join(std::ffi::OsStr::from_bytes(name));
    open(&path, libc::O_RDWR | libc::O_CREAT, 0o644).map(drop)
}

fn long(n: usize) -> Vec<u8> {
    vec![b'L'; n]
}

fn ftruncate(fx: &Fixture, size: i64) -> Result<(), i32> {
    // SAFETY: valid fd.
    rc(unsafe { libc::ftruncate(fx.victim().as_raw_fd(), size) })
}

fn fallocate(fx: &Fixture, mode: i32, off: i64, len: i64) -> Result<(), i32> {
    // SAFETY: valid fd.
    rc(unsafe { libc::fallocate(fx.victim().as_raw_fd(), mode, off, len) })
}

fn rename(fx: &Fixture, from: &[u8], to: &[u8], flags: libc::c_uint) -> Result<(), i32> {
    let mnt = fx.mount.path();
    let from = cpath(&mnt.join(std::ffi::OsStr::from_bytes(from)));
    let to = cpath(&mnt.join(std::ffi::OsStr::from_bytes(to)));
    // SAFETY: NUL-terminated paths.
    rc(unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            flags,
        )
    })
}

fn setxattr(fx: &Fixture, name: &str, attr: &str) -> Result<(), i32> {
    let attr = CString::new(attr).expect("attr name");
    // SAFETY: NUL-terminated strings; a one-byte value.
    rc(unsafe {
        libc::setxattr(
            fx.c(name).as_ptr(),
            attr.as_ptr(),
            b"1".as_ptr().cast(),
            1,
            0,
        )
    })
}

fn getxattr(fx: &Fixture, name: &str, attr: &str) -> Result<(), i32> {
    let attr = CString::new(attr).expect("attr name");
    let mut buf = [0u8; 256];
    // SAFETY: NUL-terminated strings; the buffer is valid for its length.
    let n = unsafe {
        libc::getxattr(
            fx.c(name).as_ptr(),
            attr.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n < 0 { Err(last_errno()) } else { Ok(()) }
}

fn removexattr(fx: &Fixture, name: &str, attr: &str) -> Result<(), i32> {
    let attr = CString::new(attr).expect("attr name");
    // SAFETY: NUL-terminated strings.
    rc(unsafe { libc::removexattr(fx.c(name).as_ptr(), attr.as_ptr()) })
}

/// The rows that hold on any store. `big` is the errno of a growth past what the test's
/// store can ever hold (see `past_the_store`).
fn rows(big: i32) -> Vec<Row> {
    use libc::{
        EACCES, EBUSY, EEXIST, EFBIG, EINVAL, ENAMETOOLONG, ENODATA, ENOTDIR, EOPNOTSUPP, EPERM,
        FALLOC_FL_COLLAPSE_RANGE, FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, FALLOC_FL_ZERO_RANGE,
        O_CREAT, O_EXCL, O_RDWR, O_TRUNC, O_WRONLY, RENAME_EXCHANGE, RENAME_WHITEOUT, S_IFCHR,
        S_IFIFO,
    };
    let row = |what, errno, layer, logged, check| Row {
        what,
        errno,
        layer,
        logged,
        check,
    };
    let d = Layer::Daemon;
    let k = Layer::Kernel;
    let q = Layer::Quiet;
    vec![
        // Names.
        row(
            "create a name ending in .meta",
            EINVAL,
            d,
            "\"new.meta\"",
            |fx| create(fx, b"new.meta"),
        ),
        row(
            "create a name holding a backslash",
            EINVAL,
            d,
            r#""back\\slash""#,
            |fx| create(fx, b"back\\slash"),
        ),
        row(
            "create a 251-byte name",
            ENAMETOOLONG,
            d,
            "\"LLLLLLLL",
            |fx| create(fx, &long(251)),
        ),
        row(
            "create a 255-byte name",
            ENAMETOOLONG,
            d,
            "\"LLLLLLLL",
            |fx| create(fx, &long(255)),
        ),
        row(
            "create a 256-byte name",
            ENAMETOOLONG,
            d,
            "\"LLLLLLLL",
            |fx| create(fx, &long(256)),
        ),
        row(
            "create a 1025-byte name",
            ENAMETOOLONG,
            d,
            "\"LLLLLLLL",
            |fx| create(fx, &long(1025)),
        ),
        row(
            "a path longer than PATH_MAX (4096)",
            ENAMETOOLONG,
            k,
            "",
            |fx| create(fx, &long(4096)),
        ),
        row("O_CREAT|O_EXCL of a sidecar's name", EEXIST, k, "", |fx| {
            open(&fx.p("victim.meta"), O_RDWR | O_CREAT | O_EXCL, 0o644).map(drop)
        }),
        row(
            "rename onto a name ending in .meta",
            EINVAL,
            d,
            "\"x.meta\"",
            |fx| rename(fx, b"victim", b"x.meta", 0),
        ),
        row("rename onto a sidecar", EINVAL, d, "\"empty.meta\"", |fx| {
            rename(fx, b"victim", b"empty.meta", 0)
        }),
        row(
            "rename onto a name holding a backslash",
            EINVAL,
            d,
            r#""a\\b""#,
            |fx| rename(fx, b"victim", b"a\\b", 0),
        ),
        row(
            "rename onto a 251-byte name",
            ENAMETOOLONG,
            d,
            "\"LLLLLLLL",
            |fx| rename(fx, b"victim", &long(251), 0),
        ),
        row(
            "rename with RENAME_EXCHANGE",
            EINVAL,
            d,
            "\"victim\"",
            |fx| rename(fx, b"victim", b"empty", RENAME_EXCHANGE),
        ),
        row(
            "rename with RENAME_WHITEOUT",
            EINVAL,
            d,
            "\"victim\"",
            |fx| rename(fx, b"victim", b"w", RENAME_WHITEOUT),
        ),
        row("rename a sidecar", EPERM, d, "\"victim.meta\"", |fx| {
            rename(fx, b"victim.meta", b"other", 0)
        }),
        row(
            "unlink a sidecar",
            EPERM,
            d,
            "\"victim.meta\"",
            // SAFETY: NUL-terminated path.
            |fx| rc(unsafe { libc::unlink(fx.c("victim.meta").as_ptr()) }),
        ),
        // Sizes.
        // A shrink while another handle is open: busy (the sole holder may shrink).
        row(
            "truncate to a smaller size while another handle is open",
            EBUSY,
            d,
            "\"victim\"",
            |fx| {
                let _held = fx.victim();
                // SAFETY: NUL-terminated path.
                rc(unsafe { libc::truncate(fx.c("victim").as_ptr(), 10) })
            },
        ),
        row(
            "ftruncate to 0 while another handle is open",
            EBUSY,
            d,
            "\"victim\"",
            |fx| {
                let _held = fx.victim();
                ftruncate(fx, 0)
            },
        ),
        row(
            "O_TRUNC on a non-empty section while another handle is open",
            EBUSY,
            d,
            "\"victim\"",
            |fx| {
                let _held = fx.victim();
                open(&fx.p("victim"), O_RDWR | O_TRUNC, 0).map(drop)
            },
        ),
        row(
            "O_CREAT|O_TRUNC (shell >) on a non-empty section while another handle is open",
            EBUSY,
            d,
            "\"victim\"",
            |fx| {
                let _held = fx.victim();
                open(&fx.p("victim"), O_WRONLY | O_CREAT | O_TRUNC, 0o644).map(drop)
            },
        ),
        row(
            "ftruncate to 2^63 (a negative off_t)",
            EINVAL,
            k,
            "",
            |fx| ftruncate(fx, i64::MIN),
        ),
        row(
            "ftruncate to 2^64-1 (a negative off_t)",
            EINVAL,
            k,
            "",
            |fx| ftruncate(fx, -1),
        ),
        row(
            "ftruncate to 2^50, past what the store can hold",
            big,
            d,
            "\"victim\"",
            |fx| ftruncate(fx, 1 << 50),
        ),
        row("pwrite ending past 2^63-1", EINVAL, k, "", |fx| {
            // SAFETY: a one-byte buffer; valid fd.
            let n =
                unsafe { libc::pwrite(fx.victim().as_raw_fd(), b"x".as_ptr().cast(), 1, i64::MAX) };
            if n < 0 { Err(last_errno()) } else { Ok(()) }
        }),
        row("fallocate ending past 2^63-1", EFBIG, k, "", |fx| {
            fallocate(fx, 0, i64::MAX - 1, 2)
        }),
        row("fallocate PUNCH_HOLE", EOPNOTSUPP, d, "\"victim\"", |fx| {
            fallocate(fx, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, 4096)
        }),
        row("fallocate ZERO_RANGE", EOPNOTSUPP, d, "\"victim\"", |fx| {
            fallocate(fx, FALLOC_FL_ZERO_RANGE, 0, 4096)
        }),
        row("fallocate COLLAPSE_RANGE", EOPNOTSUPP, k, "", |fx| {
            fallocate(fx, FALLOC_FL_COLLAPSE_RANGE, 0, 4096)
        }),
        // Operations sectionfs does not offer.
        row(
            "mkdir",
            EPERM,
            d,
            "\"dir\"",
            // SAFETY: NUL-terminated path.
            |fx| rc(unsafe { libc::mkdir(fx.c("dir").as_ptr(), 0o755) }),
        ),
        row(
            "link",
            EPERM,
            d,
            "\"hard\"",
            // SAFETY: NUL-terminated paths.
            |fx| rc(unsafe { libc::link(fx.c("victim").as_ptr(), fx.c("hard").as_ptr()) }),
        ),
        row(
            "symlink",
            EPERM,
            d,
            "\"soft\"",
            // SAFETY: NUL-terminated paths.
            |fx| rc(unsafe { libc::symlink(c"victim".as_ptr(), fx.c("soft").as_ptr()) }),
        ),
        row(
            "mknod a fifo",
            EPERM,
            d,
            "\"fifo\"",
            // SAFETY: NUL-terminated path.
            |fx| rc(unsafe { libc::mknod(fx.c("fifo").as_ptr(), S_IFIFO | 0o600, 0) }),
        ),
        row(
            "mknod a character device",
            EPERM,
            d,
            "\"dev\"",
            // SAFETY: NUL-terminated path.
            |fx| {
                rc(unsafe {
                    libc::mknod(fx.c("dev").as_ptr(), S_IFCHR | 0o600, libc::makedev(1, 3))
                })
            },
        ),
        row(
            "rmdir a section",
            ENOTDIR,
            k,
            "",
            // SAFETY: NUL-terminated path.
            |fx| rc(unsafe { libc::rmdir(fx.c("victim").as_ptr()) }),
        ),
        // The sidecar is read-only.
        row(
            "open a sidecar for writing",
            EACCES,
            d,
            "\"victim.meta\"",
            |fx| open(&fx.p("victim.meta"), O_WRONLY, 0).map(drop),
        ),
        row(
            "open a sidecar read-write",
            EACCES,
            d,
            "\"victim.meta\"",
            |fx| open(&fx.p("victim.meta"), O_RDWR, 0).map(drop),
        ),
        row(
            "truncate a sidecar",
            EACCES,
            d,
            "\"victim.meta\"",
            // SAFETY: NUL-terminated path.
            |fx| rc(unsafe { libc::truncate(fx.c("victim.meta").as_ptr(), 0) }),
        ),
        row(
            "chmod a sidecar",
            EACCES,
            d,
            "\"victim.meta\"",
            // SAFETY: NUL-terminated path.
            |fx| rc(unsafe { libc::chmod(fx.c("victim.meta").as_ptr(), 0o666) }),
        ),
        // Extended attributes: only user.sectionfs.*, read-only.
        row("setxattr user.foo", EOPNOTSUPP, d, "\"user.foo\"", |fx| {
            setxattr(fx, "victim", "user.foo")
        }),
        row(
            "setxattr trusted.foo",
            EOPNOTSUPP,
            d,
            "\"trusted.foo\"",
            |fx| setxattr(fx, "victim", "trusted.foo"),
        ),
        row(
            "setxattr user.sectionfs.status",
            EACCES,
            d,
            "\"user.sectionfs.status\"",
            |fx| setxattr(fx, "victim", "user.sectionfs.status"),
        ),
        row(
            "removexattr user.sectionfs.status",
            EACCES,
            d,
            "\"user.sectionfs.status\"",
            |fx| removexattr(fx, "victim", "user.sectionfs.status"),
        ),
        row("getxattr user.foo", ENODATA, q, "", |fx| {
            getxattr(fx, "victim", "user.foo")
        }),
        row("removexattr user.foo", ENODATA, q, "", |fx| {
            removexattr(fx, "victim", "user.foo")
        }),
        row(
            "getxattr user.sectionfs.status of a sidecar",
            ENODATA,
            q,
            "",
            |fx| getxattr(fx, "victim.meta", "user.sectionfs.status"),
        ),
        row(
            "setxattr user.sectionfs.lifetime with a value not persistent/handles",
            EINVAL,
            d,
            "\"user.sectionfs.lifetime\"",
            |fx| setxattr(fx, "victim", "user.sectionfs.lifetime"),
        ),
        row(
            "`ln -s` to a directory, fifo, device, or anything not a regular file",
            EINVAL,
            d,
            "\"soft\"",
            // SAFETY: NUL-terminated paths.
            |fx| rc(unsafe { libc::symlink(c"/".as_ptr(), fx.c("soft").as_ptr()) }),
        ),
        row(
            "`ln -s` to a path reaching a FUSE filesystem (this mount)",
            EPERM,
            d,
            "\"soft\"",
            // A name the kernel never cached: the old daemon hung here for ever.
            // SAFETY: NUL-terminated paths.
            |fx| rc(unsafe { libc::symlink(fx.c("neverseen").as_ptr(), fx.c("soft").as_ptr()) }),
        ),
        row(
            "`ln -s` to a path reaching `/proc` (`/dev/stdin`, a magic link)",
            EPERM,
            d,
            "\"soft\"",
            // SAFETY: NUL-terminated paths.
            |fx| rc(unsafe { libc::symlink(c"/dev/stdin".as_ptr(), fx.c("soft").as_ptr()) }),
        ),
        row(
            "unlink `Global` (a reserved name at the root)",
            EPERM,
            d,
            "\"Global\"",
            // SAFETY: NUL-terminated path.
            |fx| rc(unsafe { libc::unlink(fx.c("Global").as_ptr()) }),
        ),
    ]
}

/// What a refusal must leave alone: every name, and each section's bytes and mode.
fn snapshot(mnt: &Path) -> BTreeMap<Vec<u8>, (Vec<u8>, u32)> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(mnt).expect("list the mount") {
        let name = entry.expect("read an entry").file_name();
        let path = mnt.join(&name);
        let meta = std::fs::metadata(&path).unwrap_or_else(|e| panic!("stat {name:?}: {e}"));
        let bytes = if name.as_bytes().ends_with(b".meta") {
            Vec::new()
        } else {
            std::fs::read(&path).unwrap_or_else(|e| panic!("read {name:?}: {e}"))
        };
        out.insert(name.as_bytes().to_vec(), (bytes, meta.mode()));
    }
    out
}

/// Runs one row and checks its errno, that nothing changed and the daemon's log.
fn check_row(fx: &Fixture, row: &Row, opts: &str) -> Result<(), String> {
    let before = snapshot(fx.mount.path());
    let log_start = fx.mount.log().len();
    let got = (row.check)(fx);
    // The daemon logs before it replies: its line is there once the call returned.
    let log = fx.mount.log();
    let new_lines: Vec<&str> = log[log_start..]
        .lines()
        .filter(|l| l.contains("(errno "))
        .collect();
    let fail = |why: String| Err(format!("{opts}: {}: {why}", row.what));
    if got != Err(row.errno) {
        let show = |e: i32| format!("{e} ({})", std::io::Error::from_raw_os_error(e));
        return fail(format!(
            "expected errno {}, got {}",
            show(row.errno),
            match got {
                Ok(()) => "success".to_string(),
                Err(e) => show(e),
            }
        ));
    }
    if snapshot(fx.mount.path()) != before {
        return fail("the refusal changed the mount's names, bytes or modes".into());
    }
    let want = format!("(errno {})", row.errno);
    match row.layer {
        Layer::Daemon => {
            let hits: Vec<_> = new_lines.iter().filter(|l| l.contains(&want)).collect();
            let ok = hits.len() == 1
                && hits[0].contains(" DEBUG ")
                && hits[0].contains(row.logged)
                && new_lines.len() == 1;
            if !ok {
                return fail(format!(
                    "expected one debug line with {:?} and {want}, got:\n{}",
                    row.logged,
                    new_lines.join("\n")
                ));
            }
        }
        Layer::Kernel | Layer::Quiet => {
            if !new_lines.is_empty() {
                return fail(format!(
                    "expected no log line ({:?} layer), got:\n{}",
                    row.layer,
                    new_lines.join("\n")
                ));
            }
        }
    }
    Ok(())
}

/// The still-serving check that ends every table: create, write, read back.
fn still_serves(mount: &Mount) {
    let path = mount.section("after-the-table");
    std::fs::write(&path, b"still serving").expect("create and write after the table");
    assert_eq!(std::fs::read(&path).expect("read back"), b"still serving");
    std::fs::remove_file(&path).expect("unlink");
    let log = mount.log();
    assert!(!log.contains("panicked"), "the daemon panicked:\n{log}");
}

fn fixture(mount: Mount) -> Fixture {
    std::fs::write(mount.section("victim"), vec![0xa5u8; 4096]).expect("make victim");
    std::fs::write(mount.section("empty"), b"").expect("make empty");
    Fixture { mount }
}

const EXT4_SUPER_MAGIC: libc::c_long = 0xef53;

/// A growth to 2^50 bytes fails on any store this test makes: ext4 refuses a file past
/// 16 TiB with EFBIG; elsewhere eager commit runs out of space first (ENOSPC).
fn past_the_store(store: &Path) -> i32 {
    // SAFETY: a zeroed statfs is a valid out-buffer; NUL-terminated path.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    assert_eq!(
        unsafe { libc::statfs(cpath(store).as_ptr(), &mut st) },
        0,
        "statfs the store"
    );
    if st.f_type as libc::c_long == EXT4_SUPER_MAGIC {
        libc::EFBIG
    } else {
        libc::ENOSPC
    }
}

mount_test! {
    fn every_refused_input_has_its_errno_one_log_line_and_changes_nothing(opts) {
        let mut failures = Vec::new();
        let fx = fixture(Mount::new(opts));
        for row in rows(past_the_store(fx.mount.store())) {
            if let Err(why) = check_row(&fx, &row, opts) {
                failures.push(why);
            }
        }
        still_serves(&fx.mount);
        fx.mount.unmount();
        assert!(
            failures.is_empty(),
            "{} rows failed:\n{}",
            failures.len(),
            failures.join("\n\n")
        );
    }
}

mount_test! {
    fn growth_past_a_full_store_is_enospc_and_changes_nothing(opts) {
        // Declared first, dropped last: the FUSE mount over it goes first.
        let tmpfs = common::Tmpfs::new("16m");
        let mut failures = Vec::new();
        let store = tmpfs.path().join(opts.replace('=', "-"));
        let fx = fixture(Mount::with_store(&store, opts));
        let mut rows = vec![
            Row {
                what: "ftruncate past the store's free space (commit=eager)",
                errno: libc::ENOSPC,
                layer: Layer::Daemon,
                logged: "\"victim\"",
                check: |fx| ftruncate(fx, 64 << 20),
            },
            Row {
                what: "fallocate past the store's free space",
                errno: libc::ENOSPC,
                layer: Layer::Daemon,
                logged: "\"victim\"",
                check: |fx| fallocate(fx, 0, 0, 64 << 20),
            },
            Row {
                what: "ftruncate to 2^63-1",
                errno: libc::ENOSPC,
                layer: Layer::Daemon,
                logged: "\"victim\"",
                check: |fx| ftruncate(fx, i64::MAX),
            },
        ];
        // A passthrough write goes straight to the backing file: the daemon never sees
        // it, so only the cached mode can refuse it whole (see DESIGN.md).
        if opts.contains("passthrough=off") {
            rows.push(Row {
                what: "pwrite past the end, past the store's free space (cached)",
                errno: libc::ENOSPC,
                layer: Layer::Daemon,
                logged: "\"victim\"",
                check: |fx| {
                    let fd = fx.victim();
                    // SAFETY: a one-byte buffer; valid fd.
                    let n =
                        unsafe { libc::pwrite(fd.as_raw_fd(), b"x".as_ptr().cast(), 1, 32 << 20) };
                    if n < 0 { Err(last_errno()) } else { Ok(()) }
                },
            });
        }
        for row in &rows {
            if let Err(why) = check_row(&fx, row, opts) {
                failures.push(why);
            }
        }
        still_serves(&fx.mount);
        fx.mount.unmount();
        assert!(
            failures.is_empty(),
            "{} rows failed:\n{}",
            failures.len(),
            failures.join("\n\n")
        );
    }
}

mount_test! {
    fn unknown_mount_options_stop_the_daemon_with_a_message_naming_them() {
        for (opts, named) in [
            ("bogus", "bogus"),
            ("commit=lazy,no_such_option=1", "no_such_option=1"),
            ("commit=maybe", "commit=maybe"),
            ("passthrough=sometimes", "passthrough=sometimes"),
            ("allow_other=yes", "allow_other=yes"),
        ] {
            match Mount::try_new(opts) {
                Ok(m) => {
                    m.unmount();
                    panic!("-o {opts} was accepted");
                }
                Err(report) => {
                    assert!(
                        report.contains("exited with exit status: 2"),
                        "-o {opts}: expected exit status 2:\n{report}"
                    );
                    assert!(
                        report.contains("sectionfs: ") && report.contains(named),
                        "-o {opts}: the message does not name {named:?}:\n{report}"
                    );
                }
            }
        }
    }
}

mount_test! {
    fn names_that_are_not_utf8_are_valid(opts) {
        let mount = Mount::new(opts);
        let name = std::ffi::OsStr::from_bytes(b"bin\xff\xfe\x01");
        std::fs::write(mount.section(name), b"bytes").expect("create a non-UTF-8 name");
        assert_eq!(
            std::fs::read(mount.section(name)).expect("read it"),
            b"bytes"
        );
        let listed: Vec<_> = std::fs::read_dir(mount.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert!(listed.iter().any(|n| n == name), "{listed:?}");
        let side =
            std::fs::read(mount.section(std::ffi::OsStr::from_bytes(b"bin\xff\xfe\x01.meta")))
                .expect("read its sidecar");
        let side = String::from_utf8(side).expect("the sidecar is text");
        assert!(
            side.starts_with("name=bin\\xff\\xfe\\x01\nsize=5\n"),
            "{side}"
        );
        assert!(
            !mount.log().contains("(errno "),
            "a valid name was refused:\n{}",
            mount.log()
        );
        mount.unmount();
    }
}
