//! Syscall helpers, the clock and the machine's state. A failed syscall is a benchmark bug
//! or a sectionfs bug: it panics with context (the mount guards still unmount while
//! unwinding).

use std::cell::RefCell;
use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub const MIB: usize = 1 << 20;
pub const PAGE: usize = 4096;

pub fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("path without NUL")
}

#[track_caller]
pub fn check(rc: libc::c_long, what: &str) -> libc::c_long {
    if rc < 0 {
        panic!("{what}: {}", std::io::Error::last_os_error());
    }
    rc
}

pub fn open(path: &CString, flags: i32) -> i32 {
    // SAFETY: NUL-terminated path.
    let fd = unsafe { libc::open(path.as_ptr(), flags | libc::O_CLOEXEC, 0o600) };
    check(fd as _, &format!("open {path:?}")) as i32
}

pub fn close(fd: i32) {
    // SAFETY: fd is ours.
    unsafe { libc::close(fd) };
}

pub fn unlink(path: &CString) {
    // SAFETY: NUL-terminated path.
    check(unsafe { libc::unlink(path.as_ptr()) } as _, "unlink");
}

pub fn stat_size(path: &CString) -> i64 {
    // SAFETY: zeroed stat is a valid out-buffer.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid path and buffer.
    check(unsafe { libc::stat(path.as_ptr(), &mut st) } as _, "stat");
    st.st_size
}

pub fn write_all(fd: i32, buf: &[u8]) {
    let mut done = 0;
    while done < buf.len() {
        // SAFETY: valid buffer for its length.
        let n = unsafe { libc::write(fd, buf[done..].as_ptr().cast(), buf.len() - done) };
        done += check(n as _, "write") as usize;
    }
}

/// Reads until end of file; returns the bytes read.
pub fn read_to_end(fd: i32, buf: &mut [u8]) -> usize {
    let mut total = 0;
    loop {
        // SAFETY: valid buffer.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        match check(n as _, "read") {
            0 => return total,
            n => total += n as usize,
        }
    }
}

pub fn ftruncate(fd: i32, size: usize) {
    // SAFETY: plain syscall.
    check(
        unsafe { libc::ftruncate(fd, size as i64) } as _,
        "ftruncate",
    );
}

pub fn fallocate(fd: i32, offset: usize, len: usize) {
    // SAFETY: plain syscall.
    check(
        unsafe { libc::fallocate(fd, 0, offset as i64, len as i64) } as _,
        "fallocate",
    );
}

pub fn map(fd: i32, len: usize, offset: usize) -> *mut u8 {
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

pub fn unmap(p: *mut u8, len: usize) {
    // SAFETY: p was returned by mmap with this length.
    unsafe { libc::munmap(p.cast(), len) };
}

/// A file of `size` bytes filled with a pattern.
pub fn make_file(path: &CString, size: usize) {
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

thread_local! {
    /// Runnable tasks besides this one, sampled by `timed` as each timed region starts.
    static RUNNABLE: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
}

/// Times `f`, after noting how many other tasks were runnable as it started.
pub fn timed(f: impl FnOnce()) -> Duration {
    let others = runnable().saturating_sub(1);
    RUNNABLE.with(|r| r.borrow_mut().push(others));
    let t = Instant::now();
    f();
    t.elapsed()
}

/// The samples `timed` took since the last call.
pub fn take_runnable_samples() -> Vec<u32> {
    RUNNABLE.with(|r| std::mem::take(&mut *r.borrow_mut()))
}

/// Tasks running or waiting for a CPU right now, this one included (`procs_running` of
/// /proc/stat; /proc/loadavg's fourth field counts the same).
pub fn runnable() -> u32 {
    fs::read_to_string("/proc/stat")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("procs_running "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// xorshift64*: reproducible offsets without a dependency.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn shuffle(&mut self, v: &mut [usize]) {
        for i in (1..v.len()).rev() {
            v.swap(i, (self.next() % (i as u64 + 1)) as usize);
        }
    }
}

/// Removes a scratch directory (a store or the /dev/shm side) when dropped, after the
/// mount that uses it (declare it after the mount in a struct, before it in a function).
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(path: PathBuf) -> Scratch {
        use std::os::unix::fs::DirBuilderExt;
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

/// What the daemon holds, from /proc.
#[derive(Clone, Copy, Debug, Default)]
pub struct DaemonUse {
    pub fds: usize,
    pub rss_kib: u64,
}

pub fn daemon_use(pid: u32) -> DaemonUse {
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
