//! sectionfs against /dev/shm, side by side in one run.
//!
//! ```text
//! cargo bench --bench vs_tmpfs                     # full run: both modes, 5 rounds
//! cargo bench --bench vs_tmpfs -- --quick          # tiny sizes, one round
//! cargo bench --bench vs_tmpfs -- --scale          # 100,000 sections (passthrough)
//! cargo bench --bench vs_tmpfs -- --only create,stat --rounds 9 --json out.json
//! ```
//!
//! It mounts the release daemon (`sectionfs -f`) on a fresh store in /dev/shm, once per
//! data mode (passthrough, then cached), and runs every workload on the mount and on a
//! plain /dev/shm directory alternately (A B, then B A next round). Each workload times
//! only its own syscalls, in this process (a forked child for the ping-pong); setup and
//! cleanup stay outside the timed region. It prints the medians and the ratio
//! sectionfs / /dev/shm per workload and writes every raw figure to `target/vs_tmpfs.json`.
//!
//! Under `cargo test --all-targets` (no `--bench` argument) it runs the `--quick` form as
//! a smoke test: it asserts that every workload works and the table prints, never speed.

#[path = "../tests/common/mod.rs"]
mod common;

use common::Mount;
use std::ffi::CString;
use std::fmt::Write as _;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const MIB: usize = 1 << 20;
const PAGE: usize = 4096;

/// How big each workload is.
#[derive(Clone, Copy, Debug)]
struct Sizes {
    /// Bytes of the sequential and mmap workloads.
    stream: usize,
    /// Bytes of the section the random I/O works on.
    random_file: usize,
    /// Random pread/pwrite operations (half each).
    random_ops: usize,
    /// Ping-pong round trips.
    round_trips: u64,
    /// Sections made by `create`, then stat-ed, opened and unlinked.
    files: usize,
    /// Sidecar reads.
    meta_reads: usize,
    /// Growth steps of 1 MiB.
    grows: usize,
    rounds: usize,
}

const FULL: Sizes = Sizes {
    stream: 256 * MIB,
    random_file: 64 * MIB,
    random_ops: 200_000,
    round_trips: 100_000,
    files: 10_000,
    meta_reads: 2_000,
    grows: 1_000,
    rounds: 5,
};

const QUICK: Sizes = Sizes {
    stream: 4 * MIB,
    random_file: MIB,
    random_ops: 200,
    round_trips: 1_000,
    files: 100,
    meta_reads: 20,
    grows: 10,
    rounds: 1,
};

/// One side of the comparison: a directory and what the workloads left in it.
struct Target {
    dir: PathBuf,
    /// Whether `dir` is the sectionfs mount (it has sidecars).
    sectionfs: bool,
    /// Names made by `create`, used by the metadata workloads that follow it.
    names: Vec<CString>,
    round: usize,
}

impl Target {
    fn path(&self, name: &str) -> CString {
        cpath(&self.dir.join(name))
    }
}

/// Runs one workload on one target and returns the time of its timed region.
type Run = fn(&mut Target, &Sizes) -> Duration;

struct Workload {
    name: &'static str,
    what: &'static str,
    /// Operations in the timed region, for the per-operation column.
    ops: fn(&Sizes) -> u64,
    /// Target ratio in passthrough mode; `None`: report only.
    target: Option<f64>,
    run: Run,
}

const WORKLOADS: &[Workload] = &[
    Workload {
        name: "seq_write",
        what: "sequential write, 1 MiB writes",
        ops: |s| (s.stream / MIB) as u64,
        target: Some(1.1),
        run: seq_write,
    },
    Workload {
        name: "seq_read",
        what: "sequential read, 1 MiB reads",
        ops: |s| (s.stream / MIB) as u64,
        target: Some(1.1),
        run: seq_read,
    },
    Workload {
        name: "mmap_write",
        what: "mmap MAP_SHARED, write every page, munmap",
        ops: |s| (s.stream / PAGE) as u64,
        target: Some(1.1),
        run: mmap_write,
    },
    Workload {
        name: "random_4k",
        what: "random 4 KiB pread/pwrite",
        ops: |s| s.random_ops as u64,
        target: Some(1.2),
        run: random_4k,
    },
    Workload {
        name: "ping_pong",
        what: "two processes, one shared page",
        ops: |s| s.round_trips,
        target: Some(1.1),
        run: ping_pong,
    },
    Workload {
        name: "create",
        what: "create + write 64 B + close",
        ops: |s| s.files as u64,
        target: Some(6.0),
        run: create,
    },
    Workload {
        name: "stat",
        what: "stat of an existing section",
        ops: |s| 3 * s.files as u64,
        target: Some(1.5),
        run: stat,
    },
    Workload {
        name: "open_close",
        what: "open + close of an existing section",
        ops: |s| s.files as u64,
        target: Some(4.0),
        run: open_close,
    },
    Workload {
        name: "meta_read",
        what: "read of NAME.meta (shm: a small file)",
        ops: |s| s.meta_reads as u64,
        target: None,
        run: meta_read,
    },
    Workload {
        name: "grow_mapped",
        what: "grow a mapped section by 1 MiB",
        ops: |s| s.grows as u64,
        target: None,
        run: grow_mapped,
    },
    Workload {
        name: "unlink",
        what: "unlink",
        ops: |s| s.files as u64,
        target: Some(6.0),
        run: unlink,
    },
];

// ---------------------------------------------------------------------------------------
// Syscall helpers: a failure is a bench bug or a sectionfs bug, so it panics with context
// (the mount guards still unmount while unwinding).

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("path without NUL")
}

#[track_caller]
fn check(rc: libc::c_long, what: &str) -> libc::c_long {
    if rc < 0 {
        panic!("{what}: {}", std::io::Error::last_os_error());
    }
    rc
}

fn open(path: &CString, flags: i32) -> i32 {
    // SAFETY: NUL-terminated path.
    let fd = unsafe { libc::open(path.as_ptr(), flags | libc::O_CLOEXEC, 0o600) };
    check(fd as _, &format!("open {path:?}")) as i32
}

fn close(fd: i32) {
    // SAFETY: fd is ours.
    unsafe { libc::close(fd) };
}

fn unlink_path(path: &CString) {
    // SAFETY: NUL-terminated path.
    check(unsafe { libc::unlink(path.as_ptr()) } as _, "unlink");
}

fn write_all(fd: i32, buf: &[u8]) {
    let mut done = 0;
    while done < buf.len() {
        // SAFETY: valid buffer for its length.
        let n = unsafe { libc::write(fd, buf[done..].as_ptr().cast(), buf.len() - done) };
        done += check(n as _, "write") as usize;
    }
}

fn ftruncate(fd: i32, size: usize) {
    // SAFETY: plain syscall.
    check(
        unsafe { libc::ftruncate(fd, size as i64) } as _,
        "ftruncate",
    );
}

fn map(fd: i32, len: usize, offset: usize) -> *mut u8 {
    // SAFETY: a fresh shared mapping of an open file.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd,
            offset as i64,
        )
    };
    if p == libc::MAP_FAILED {
        panic!("mmap: {}", std::io::Error::last_os_error());
    }
    p.cast()
}

fn unmap(p: *mut u8, len: usize) {
    // SAFETY: p was returned by mmap with this length.
    unsafe { libc::munmap(p.cast(), len) };
}

/// A file of `size` bytes filled with a pattern, made outside any timed region.
fn make_file(path: &CString, size: usize) {
    let fd = open(path, libc::O_CREAT | libc::O_EXCL | libc::O_RDWR);
    let chunk = vec![0x5au8; MIB.min(size.max(1))];
    let mut left = size;
    while left > 0 {
        let n = left.min(chunk.len());
        write_all(fd, &chunk[..n]);
        left -= n;
    }
    close(fd);
}

fn timed(f: impl FnOnce()) -> Duration {
    let t = Instant::now();
    f();
    t.elapsed()
}

/// xorshift64*: reproducible offsets without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

// ---------------------------------------------------------------------------------------
// The workloads.

fn seq_write(t: &mut Target, s: &Sizes) -> Duration {
    let path = t.path(&format!("seqw-{}", t.round));
    let buf = vec![0xa5u8; MIB];
    let d = timed(|| {
        let fd = open(&path, libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY);
        for _ in 0..s.stream / MIB {
            write_all(fd, &buf);
        }
        close(fd);
    });
    unlink_path(&path);
    d
}

fn seq_read(t: &mut Target, s: &Sizes) -> Duration {
    let path = t.path(&format!("seqr-{}", t.round));
    make_file(&path, s.stream);
    let mut buf = vec![0u8; MIB];
    let mut total = 0usize;
    let d = timed(|| {
        let fd = open(&path, libc::O_RDONLY);
        loop {
            // SAFETY: valid buffer.
            let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
            match check(n as _, "read") {
                0 => break,
                n => total += n as usize,
            }
        }
        close(fd);
    });
    assert_eq!(total, s.stream, "seq_read read everything");
    unlink_path(&path);
    d
}

fn mmap_write(t: &mut Target, s: &Sizes) -> Duration {
    let path = t.path(&format!("mmap-{}", t.round));
    let d = timed(|| {
        let fd = open(&path, libc::O_CREAT | libc::O_EXCL | libc::O_RDWR);
        ftruncate(fd, s.stream);
        let p = map(fd, s.stream, 0);
        for off in (0..s.stream).step_by(PAGE) {
            // SAFETY: inside the mapping.
            unsafe { p.add(off).cast::<u64>().write_volatile(off as u64) };
        }
        unmap(p, s.stream);
        close(fd);
    });
    unlink_path(&path);
    d
}

fn random_4k(t: &mut Target, s: &Sizes) -> Duration {
    let path = t.path(&format!("rand-{}", t.round));
    make_file(&path, s.random_file);
    let fd = open(&path, libc::O_RDWR);
    let mut buf = vec![0u8; PAGE];
    let pages = (s.random_file / PAGE) as u64;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ t.round as u64);
    let d = timed(|| {
        for i in 0..s.random_ops {
            let off = (rng.next() % pages) as i64 * PAGE as i64;
            // SAFETY: valid buffer of PAGE bytes.
            let n = unsafe {
                if i % 2 == 0 {
                    libc::pread(fd, buf.as_mut_ptr().cast(), PAGE, off)
                } else {
                    libc::pwrite(fd, buf.as_ptr().cast(), PAGE, off)
                }
            };
            assert_eq!(check(n as _, "pread/pwrite") as usize, PAGE);
        }
    });
    close(fd);
    unlink_path(&path);
    d
}

/// The parent and a forked child, each with its own open and mapping of one section,
/// bounce a counter: the parent writes odd values, the child answers with the next even.
fn ping_pong(t: &mut Target, s: &Sizes) -> Duration {
    let path = t.path(&format!("pingpong-{}", t.round));
    let fd = open(&path, libc::O_CREAT | libc::O_EXCL | libc::O_RDWR);
    ftruncate(fd, PAGE);
    let p = map(fd, PAGE, 0);
    // SAFETY: the page is mapped, zeroed, and u64-aligned; only atomics touch it.
    let counter = unsafe { &*p.cast::<AtomicU64>() };
    let ready = unsafe { &*p.add(64).cast::<AtomicU64>() };
    let n = s.round_trips;
    // SAFETY: this process has no other threads; the child only makes syscalls and spins.
    let child = unsafe { libc::fork() };
    if child == 0 {
        // SAFETY: async-signal-safe calls only; _exit never returns.
        unsafe {
            let fd = libc::open(path.as_ptr(), libc::O_RDWR);
            let q = libc::mmap(
                std::ptr::null_mut(),
                PAGE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            );
            if fd < 0 || q == libc::MAP_FAILED {
                libc::_exit(1);
            }
            let counter = &*q.cast::<AtomicU64>();
            (*q.cast::<u8>().add(64).cast::<AtomicU64>()).store(1, Ordering::Release);
            for i in 0..n {
                spin_until(counter, 2 * i + 1);
                counter.store(2 * i + 2, Ordering::Release);
            }
            libc::_exit(0);
        }
    }
    check(child as _, "fork");
    spin_until(ready, 1);
    let d = timed(|| {
        for i in 0..n {
            counter.store(2 * i + 1, Ordering::Release);
            spin_until(counter, 2 * i + 2);
        }
    });
    let mut status = 0;
    // SAFETY: our own child.
    unsafe { libc::waitpid(child, &mut status, 0) };
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "ping-pong child failed ({status:#x})"
    );
    unmap(p, PAGE);
    close(fd);
    unlink_path(&path);
    d
}

fn spin_until(v: &AtomicU64, want: u64) {
    let mut spins = 0u32;
    while v.load(Ordering::Acquire) != want {
        spins += 1;
        if spins.is_multiple_of(256) {
            // The peer should have answered within a few hundred spins; it may share this
            // core (the other is busy): let it run.
            // SAFETY: no preconditions.
            unsafe { libc::sched_yield() };
        } else {
            std::hint::spin_loop();
        }
    }
}

fn create(t: &mut Target, s: &Sizes) -> Duration {
    let names: Vec<CString> = (0..s.files)
        .map(|i| t.path(&format!("c{}-{i:06}", t.round)))
        .collect();
    let data = [0x42u8; 64];
    let d = timed(|| {
        for name in &names {
            let fd = open(name, libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY);
            write_all(fd, &data);
            close(fd);
        }
    });
    t.names = names;
    d
}

/// Warm: every name was stat-ed once since its write (untimed); three passes are timed.
/// (The first stat after a write asks the daemon: the write invalidated the times.)
fn stat(t: &mut Target, _s: &Sizes) -> Duration {
    // SAFETY: zeroed stat is a valid out-buffer.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    let mut pass = || {
        for name in &t.names {
            // SAFETY: valid path and buffer.
            check(unsafe { libc::stat(name.as_ptr(), &mut st) } as _, "stat");
            assert_eq!(st.st_size, 64);
        }
    };
    pass();
    timed(|| (0..3).for_each(|_| pass()))
}

fn open_close(t: &mut Target, _s: &Sizes) -> Duration {
    timed(|| {
        for name in &t.names {
            close(open(name, libc::O_RDWR));
        }
    })
}

fn meta_read(t: &mut Target, s: &Sizes) -> Duration {
    let names: Vec<CString> = t.names[..s.meta_reads.min(t.names.len())]
        .iter()
        .map(|n| {
            let mut b = n.as_bytes().to_vec();
            b.extend_from_slice(b".meta");
            CString::new(b).expect("no NUL")
        })
        .collect();
    if !t.sectionfs {
        // /dev/shm has no sidecars: the same reads of a small file of the same length.
        for n in &names {
            let fd = open(n, libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY);
            write_all(fd, &[b'x'; 160]);
            close(fd);
        }
    }
    let mut buf = [0u8; 4096];
    let d = timed(|| {
        for n in &names {
            let fd = open(n, libc::O_RDONLY);
            loop {
                // SAFETY: valid buffer.
                let got = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
                if check(got as _, "read meta") == 0 {
                    break;
                }
            }
            close(fd);
        }
    });
    if !t.sectionfs {
        names.iter().for_each(unlink_path);
    }
    d
}

fn grow_mapped(t: &mut Target, s: &Sizes) -> Duration {
    let path = t.path(&format!("grow-{}", t.round));
    let fd = open(&path, libc::O_CREAT | libc::O_EXCL | libc::O_RDWR);
    ftruncate(fd, MIB);
    let head = map(fd, MIB, 0);
    // SAFETY: inside the mapping.
    unsafe { head.write_volatile(1) };
    let d = timed(|| {
        for i in 1..=s.grows {
            ftruncate(fd, (i + 1) * MIB);
            let tail = map(fd, MIB, i * MIB);
            // SAFETY: inside the new mapping.
            unsafe { tail.write_volatile(1) };
            unmap(tail, MIB);
        }
    });
    unmap(head, MIB);
    close(fd);
    unlink_path(&path);
    d
}

fn unlink(t: &mut Target, _s: &Sizes) -> Duration {
    let names = std::mem::take(&mut t.names);
    timed(|| names.iter().for_each(unlink_path))
}

// ---------------------------------------------------------------------------------------
// The harness.

/// Removes a scratch directory (a store or the /dev/shm side) when dropped, after the
/// mount that uses it (declare it first).
struct Scratch(PathBuf);

impl Scratch {
    fn new(path: PathBuf) -> Scratch {
        let _ = fs::remove_dir_all(&path);
        fs::DirBuilder::new()
            .mode(0o700)
            .recursive(true)
            .create(&path)
            .unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
        Scratch(path)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Raw seconds of one workload in one mode.
struct Figures {
    sfs: Vec<f64>,
    shm: Vec<f64>,
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// What the daemon holds, from /proc.
#[derive(Clone, Copy, Debug, Default)]
struct DaemonUse {
    fds: usize,
    rss_kib: u64,
}

fn daemon_use(pid: u32) -> DaemonUse {
    let fds = fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0);
    let rss_kib = fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    DaemonUse { fds, rss_kib }
}

struct Args {
    quick: bool,
    scale: bool,
    rounds: Option<usize>,
    only: Option<Vec<String>>,
    modes: Vec<&'static str>,
    /// Where the raw figures go; by default target/vs_tmpfs[-quick][-scale].json, so a
    /// smoke run never overwrites the figures of a full one.
    json: Option<PathBuf>,
}

fn parse_args() -> Args {
    let mut args = std::env::args().skip(1);
    let mut out = Args {
        // Without --bench (cargo test): the smoke form.
        quick: !std::env::args().any(|a| a == "--bench"),
        scale: false,
        rounds: None,
        only: None,
        modes: vec!["passthrough", "cached"],
        json: None,
    };
    while let Some(a) = args.next() {
        match a.as_str() {
            "--bench" => {}
            "--quick" => out.quick = true,
            "--scale" => out.scale = true,
            "--rounds" => out.rounds = args.next().and_then(|v| v.parse().ok()),
            "--only" => {
                out.only = args
                    .next()
                    .map(|v| v.split(',').map(str::to_string).collect())
            }
            "--mode" => match args.next().as_deref() {
                Some("passthrough") => out.modes = vec!["passthrough"],
                Some("cached") => out.modes = vec!["cached"],
                other => panic!("--mode passthrough|cached, not {other:?}"),
            },
            "--json" => out.json = Some(args.next().expect("--json PATH").into()),
            // libtest-style filters and flags from `cargo test`: nothing to filter here.
            _ => {}
        }
    }
    out
}

fn mount_opts(mode: &str) -> &'static str {
    if mode == "passthrough" {
        "passthrough=on"
    } else {
        "passthrough=off"
    }
}

fn main() {
    if !common::require_fuse() {
        return;
    }
    let args = parse_args();
    if std::env::var_os("RUST_LOG").is_none() {
        // SAFETY: no other thread exists yet. The daemon logs warnings only, as in use.
        unsafe { std::env::set_var("RUST_LOG", "warn") };
    }
    let scratch = Scratch::new(PathBuf::from(format!(
        "/dev/shm/sectionfs-bench-{}",
        std::process::id()
    )));
    let mut json = String::new();
    let _ = write!(json, "{{\n  \"machine\": {},\n", machine_json());
    if args.scale {
        let scale = run_scale(&scratch.0, if args.quick { 2_000 } else { 100_000 });
        let _ = write!(json, "  \"scale\": {scale}\n}}\n");
    } else {
        let mut sizes = if args.quick { QUICK } else { FULL };
        sizes.rounds = args.rounds.unwrap_or(sizes.rounds);
        let workloads: Vec<&Workload> = WORKLOADS
            .iter()
            .filter(|w| {
                args.only
                    .as_ref()
                    .is_none_or(|o| o.iter().any(|n| n == w.name))
            })
            .collect();
        let mut results = Vec::new();
        for &mode in &args.modes {
            results.push((mode, run_mode(&scratch.0, mode, &workloads, &sizes)));
        }
        print_table(&workloads, &sizes, &results);
        json.push_str("  \"modes\": {\n");
        for (i, (mode, (figs, used))) in results.iter().enumerate() {
            let _ = writeln!(
                json,
                "    \"{mode}\": {{\"daemon_fds\": {}, \"daemon_rss_kib\": {}, \"workloads\": {{",
                used.fds, used.rss_kib
            );
            for (j, (w, f)) in workloads.iter().zip(figs).enumerate() {
                let _ = writeln!(
                    json,
                    "      \"{}\": {{\"ops\": {}, \"sectionfs_s\": {:?}, \"shm_s\": {:?}}}{}",
                    w.name,
                    (w.ops)(&sizes),
                    f.sfs,
                    f.shm,
                    if j + 1 < figs.len() { "," } else { "" }
                );
            }
            let _ = writeln!(
                json,
                "    }}}}{}",
                if i + 1 < results.len() { "," } else { "" }
            );
        }
        json.push_str("  }\n}\n");
    }
    let path = args.json.clone().unwrap_or_else(|| {
        let name = format!(
            "target/vs_tmpfs{}{}.json",
            if args.quick { "-quick" } else { "" },
            if args.scale { "-scale" } else { "" }
        );
        Path::new(env!("CARGO_MANIFEST_DIR")).join(name)
    });
    if let Some(dir) = path.parent() {
        let _ = fs::create_dir_all(dir);
    }
    match fs::write(&path, json) {
        Ok(()) => println!("raw figures: {}", path.display()),
        Err(e) => panic!("write {}: {e}", path.display()),
    }
}

fn machine_json() -> String {
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_default();
    format!(
        "{{\"nproc\": {nproc}, \"kernel\": {:?}, \"cpu\": {:?}}}",
        kernel.trim(),
        cpu
    )
}

/// Mounts sectionfs in `mode` on a fresh store and runs every round of every workload,
/// alternating sectionfs and /dev/shm.
fn run_mode(
    scratch: &Path,
    mode: &str,
    workloads: &[&Workload],
    sizes: &Sizes,
) -> (Vec<Figures>, DaemonUse) {
    let store = Scratch::new(scratch.join(format!("store-{mode}")));
    let shm = Scratch::new(scratch.join(format!("shm-{mode}")));
    let mount = Mount::with_store(&store.0, mount_opts(mode));
    let mut sfs = Target {
        dir: mount.path().to_path_buf(),
        sectionfs: true,
        names: Vec::new(),
        round: 0,
    };
    let mut tmp = Target {
        dir: shm.0.clone(),
        sectionfs: false,
        names: Vec::new(),
        round: 0,
    };
    let mut figs: Vec<Figures> = workloads
        .iter()
        .map(|_| Figures {
            sfs: Vec::new(),
            shm: Vec::new(),
        })
        .collect();
    eprintln!("{mode}: {} rounds", sizes.rounds);
    for round in 0..sizes.rounds {
        sfs.round = round;
        tmp.round = round;
        for (w, f) in workloads.iter().zip(figs.iter_mut()) {
            // A B, then B A: neither side always runs on a warmer machine.
            if round % 2 == 0 {
                f.sfs.push((w.run)(&mut sfs, sizes).as_secs_f64());
                f.shm.push((w.run)(&mut tmp, sizes).as_secs_f64());
            } else {
                f.shm.push((w.run)(&mut tmp, sizes).as_secs_f64());
                f.sfs.push((w.run)(&mut sfs, sizes).as_secs_f64());
            }
        }
        // Names left by a create without its unlink (--only): not carried into the next round.
        for t in [&mut sfs, &mut tmp] {
            std::mem::take(&mut t.names).iter().for_each(unlink_path);
        }
        eprint!(".");
    }
    eprintln!();
    let used = daemon_use(mount.pid());
    mount.unmount();
    (figs, used)
}

fn fmt_time(secs: f64) -> String {
    if secs >= 1.0 {
        format!("{secs:.2} s")
    } else if secs >= 1e-3 {
        format!("{:.1} ms", secs * 1e3)
    } else {
        format!("{:.2} µs", secs * 1e6)
    }
}

fn print_table(
    workloads: &[&Workload],
    sizes: &Sizes,
    results: &[(&str, (Vec<Figures>, DaemonUse))],
) {
    println!();
    println!(
        "sectionfs / /dev/shm, medians of {} round(s); per-op time in brackets",
        sizes.rounds
    );
    let mut header = format!("{:<12} {:<44}", "workload", "what");
    for (mode, _) in results {
        let _ = write!(
            header,
            " | {:>22} {:>22} {:>6}",
            "/dev/shm",
            format!("sectionfs {mode}"),
            "ratio"
        );
    }
    header.push_str(" | target");
    println!("{header}");
    println!("{}", "-".repeat(header.chars().count()));
    for (i, w) in workloads.iter().enumerate() {
        let ops = (w.ops)(sizes) as f64;
        let mut line = format!("{:<12} {:<44}", w.name, w.what);
        let mut verdict = String::new();
        for (mode, (figs, _)) in results {
            let (shm, sfs) = (median(&figs[i].shm), median(&figs[i].sfs));
            let ratio = sfs / shm;
            let _ = write!(
                line,
                " | {:>22} {:>22} {:>6.2}",
                format!("{} [{}]", fmt_time(shm), fmt_time(shm / ops)),
                format!("{} [{}]", fmt_time(sfs), fmt_time(sfs / ops)),
                ratio
            );
            if *mode == "passthrough" {
                verdict = match w.target {
                    Some(t) if ratio <= t => format!("<= {t} ok"),
                    Some(t) => format!("<= {t} MISSED"),
                    None => "report".into(),
                };
            }
        }
        println!("{line} | {verdict}");
    }
    for (mode, (_, used)) in results {
        println!(
            "daemon ({mode}) at the end: {} fds, {} KiB resident",
            used.fds, used.rss_kib
        );
    }
    println!();
}

// ---------------------------------------------------------------------------------------
// --scale: many sections in one store.

/// Per-thousand costs while creating `total` sections (medians of the first and the last
/// five thousands), stat and open of random sections when 1,000 exist and when all do,
/// a full listing, and what the daemon holds with all of them. Returns its JSON.
fn run_scale(scratch: &Path, total: usize) -> String {
    let store = Scratch::new(scratch.join("store-scale"));
    let shm = Scratch::new(scratch.join("shm-scale"));
    let mount = Mount::with_store(&store.0, "passthrough=on");
    let mut json = String::from("{");
    eprintln!("scale: {total} sections");
    let mut lines = Vec::new();
    for (label, dir) in [
        ("sectionfs", mount.path().to_path_buf()),
        ("/dev/shm", shm.0.clone()),
    ] {
        let mut use_ = None;
        let r = scale_one(&dir, total, || {
            if label == "sectionfs" {
                use_ = Some(daemon_use(mount.pid()));
            }
        });
        lines.push((label, r, use_));
    }
    println!();
    println!("{total} sections in one store (passthrough)");
    println!(
        "{:<10} | {:>14} {:>14} {:>6} | {:>11} {:>11} | {:>11} {:>11} | {:>12}",
        "",
        "1k creates:1st",
        "last",
        "ratio",
        "stat @1k",
        "stat @all",
        "open @1k",
        "open @all",
        "ls per entry"
    );
    for (label, r, _) in &lines {
        println!(
            "{:<10} | {:>14} {:>14} {:>6.2} | {:>11} {:>11} | {:>11} {:>11} | {:>12}",
            label,
            fmt_time(r.first_k),
            fmt_time(r.last_k),
            r.last_k / r.first_k,
            fmt_time(r.stat_small),
            fmt_time(r.stat_all),
            fmt_time(r.open_small),
            fmt_time(r.open_all),
            fmt_time(r.ls_per_entry),
        );
        let _ = write!(
            json,
            "{:?}: {{\"per_thousand_create_s\": {:?}, \"stat_s_at_1k\": {}, \"stat_s_at_all\": {}, \
             \"open_s_at_1k\": {}, \"open_s_at_all\": {}, \"ls_entries\": {}, \"ls_s\": {}}}, ",
            label,
            r.per_k,
            r.stat_small,
            r.stat_all,
            r.open_small,
            r.open_all,
            r.ls_entries,
            r.ls_s
        );
    }
    let used = lines[0].2.unwrap_or_default();
    println!(
        "daemon with {total} sections: {} fds, {} KiB resident ({:.1} MiB)",
        used.fds,
        used.rss_kib,
        used.rss_kib as f64 / 1024.0
    );
    println!(
        "per section: create ratio last/first thousand {:.2}; stat {:.2}x and open {:.2}x \
         at {total} against 1,000 sections",
        lines[0].1.last_k / lines[0].1.first_k,
        lines[0].1.stat_all / lines[0].1.stat_small,
        lines[0].1.open_all / lines[0].1.open_small,
    );
    println!();
    let _ = write!(
        json,
        "\"sections\": {total}, \"daemon_fds\": {}, \"daemon_rss_kib\": {}}}",
        used.fds, used.rss_kib
    );
    mount.unmount();
    json
}

struct ScaleRun {
    per_k: Vec<f64>,
    first_k: f64,
    last_k: f64,
    /// Per operation, random names, when 1,000 sections exist and when all do.
    stat_small: f64,
    stat_all: f64,
    open_small: f64,
    open_all: f64,
    ls_entries: usize,
    ls_s: f64,
    ls_per_entry: f64,
}

/// `at_full` runs once every section exists and has been listed, before the unlinks.
fn scale_one(dir: &Path, total: usize, at_full: impl FnOnce()) -> ScaleRun {
    let names: Vec<CString> = (0..total)
        .map(|i| cpath(&dir.join(format!("s{i:07}"))))
        .collect();
    let data = [0x42u8; 64];
    let mut per_k = Vec::new();
    let (mut stat_small, mut open_small) = (0.0, 0.0);
    let mut rng = Rng(0x1234_5678_9abc_def1);
    for (k, chunk) in names.chunks(1000).enumerate() {
        per_k.push(
            timed(|| {
                for name in chunk {
                    let fd = open(name, libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY);
                    write_all(fd, &data);
                    close(fd);
                }
            })
            .as_secs_f64(),
        );
        if k == 0 {
            let mut first: Vec<usize> = (0..chunk.len()).collect();
            shuffle(&mut first, &mut rng);
            (stat_small, open_small) = stat_open(&names, &first);
        }
    }
    // As many names, none of them touched since its write, from the whole store.
    let mut rest: Vec<usize> = (1000.min(total)..total).collect();
    shuffle(&mut rest, &mut rng);
    rest.truncate(1000);
    let (stat_all, open_all) = stat_open(&names, &rest);
    let (ls_entries, ls_s) = list(dir);
    at_full();
    for name in &names {
        unlink_path(name);
    }
    // Medians of five thousands at each end: one noisy thousand decides nothing.
    let ends = 5.min(per_k.len());
    ScaleRun {
        first_k: median(&per_k[..ends]),
        last_k: median(&per_k[per_k.len() - ends..]),
        per_k,
        stat_small,
        stat_all,
        open_small,
        open_all,
        ls_entries,
        ls_s,
        ls_per_entry: ls_s / ls_entries.max(1) as f64,
    }
}

fn shuffle(v: &mut [usize], rng: &mut Rng) {
    for i in (1..v.len()).rev() {
        v.swap(i, (rng.next() % (i as u64 + 1)) as usize);
    }
}

/// Seconds per stat, then per open+close, of the names at `picks`: each name's first stat
/// since its write (on sectionfs a GETATTR, as the write made the times stale), then its
/// first open since its create (an OPEN).
fn stat_open(names: &[CString], picks: &[usize]) -> (f64, f64) {
    // SAFETY: zeroed stat is a valid out-buffer.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    let s = timed(|| {
        for &i in picks {
            // SAFETY: valid path and buffer.
            check(
                unsafe { libc::stat(names[i].as_ptr(), &mut st) } as _,
                "stat",
            );
        }
    });
    let o = timed(|| {
        for &i in picks {
            close(open(&names[i], libc::O_RDWR));
        }
    });
    let n = picks.len().max(1) as f64;
    (s.as_secs_f64() / n, o.as_secs_f64() / n)
}

/// Lists a directory with getdents64 (opendir/readdir): entries and seconds.
fn list(dir: &Path) -> (usize, f64) {
    let path = cpath(dir);
    let mut n = 0;
    let d = timed(|| {
        // SAFETY: NUL-terminated path; the stream is closed below.
        let stream = unsafe { libc::opendir(path.as_ptr()) };
        assert!(!stream.is_null(), "opendir {path:?}");
        // SAFETY: a valid stream until closedir.
        while !unsafe { libc::readdir(stream) }.is_null() {
            n += 1;
        }
        // SAFETY: as above.
        unsafe { libc::closedir(stream) };
    });
    (n, d.as_secs_f64())
}
