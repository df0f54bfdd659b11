//! The workloads: each makes its own files untimed, times only its own syscalls (made in
//! this process; the ping-pong partner is a forked child), removes what it made untimed,
//! and reports how many operations its timed region made, which the harness checks.

use crate::sys::*;
use std::ffi::CString;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// How big each workload is.
#[derive(Clone, Copy, Debug)]
pub struct Sizes {
    /// Bytes of the sequential and mmap workloads.
    pub stream: usize,
    /// Bytes of the section the random I/O works on.
    pub random_file: usize,
    /// Random pread/pwrite operations (half each).
    pub random_ops: usize,
    /// Ping-pong round trips.
    pub round_trips: u64,
    /// Sections each metadata workload makes or touches.
    pub files: usize,
    /// Sidecar reads.
    pub meta_reads: usize,
    /// Growth steps of 1 MiB.
    pub grows: usize,
    pub rounds: usize,
    /// Length of a sidecar, for the small file /dev/shm reads instead (set by the harness
    /// from a real sidecar).
    pub meta_len: usize,
}

pub const FULL: Sizes = Sizes {
    stream: 256 * MIB,
    random_file: 64 * MIB,
    random_ops: 200_000,
    round_trips: 100_000,
    files: 10_000,
    meta_reads: 2_000,
    // 256 MiB committed per side and round: /dev/shm's fallocate and sectionfs's eager
    // commit both allocate for real.
    grows: 256,
    rounds: 5,
    meta_len: 160,
};

pub const QUICK: Sizes = Sizes {
    stream: 4 * MIB,
    random_file: MIB,
    random_ops: 200,
    round_trips: 1_000,
    files: 100,
    meta_reads: 20,
    grows: 10,
    rounds: 1,
    meta_len: 160,
};

/// Where a workload runs: the mount, or a plain directory on /dev/shm.
pub struct Place {
    pub dir: PathBuf,
    /// Whether `dir` is a sectionfs mount (it has sidecars).
    pub sectionfs: bool,
}

impl Place {
    pub fn path(&self, name: &str) -> CString {
        cpath(&self.dir.join(name))
    }

    /// `n` names `PREFIX-ROUND-I`, not yet made.
    fn names(&self, prefix: &str, round: usize, n: usize) -> Vec<CString> {
        (0..n)
            .map(|i| self.path(&format!("{prefix}{round}-{i:06}")))
            .collect()
    }
}

/// What one run of a workload measured.
pub struct Run {
    pub time: Duration,
    /// Operations made inside the timed region.
    pub ops: u64,
}

/// The ratio sectionfs / /dev/shm a row should stay under, and where it was set.
#[derive(Clone, Copy, Debug)]
pub struct Goal {
    pub max: f64,
    /// "issue 13", or "as before" for the data path's ratios that issue 13 keeps as they
    /// are (the README's earlier targets).
    pub from: &'static str,
}

const fn goal(max: f64) -> Option<Goal> {
    Some(Goal {
        max,
        from: "issue 13",
    })
}

const fn as_before(max: f64) -> Option<Goal> {
    Some(Goal {
        max,
        from: "as before",
    })
}

pub struct Workload {
    pub name: &'static str,
    pub what: &'static str,
    /// What /dev/shm does instead, where it is not the same.
    pub against: Option<&'static str>,
    /// Operations in the timed region, for the per-operation figures.
    pub ops: fn(&Sizes) -> u64,
    /// Per mode (`Mode::index`: passthrough, cached); `None`: reported only.
    pub goals: [Option<Goal>; 2],
    pub run: fn(&Place, &Sizes, usize) -> Run,
}

/// Issue 13's table first, in its order; then the rows reported beside it.
pub const WORKLOADS: &[Workload] = &[
    Workload {
        name: "create",
        what: "create + write 64 B + close",
        against: None,
        ops: |s| s.files as u64,
        goals: [goal(6.0), goal(6.0)],
        run: create,
    },
    Workload {
        name: "open_close",
        what: "open + close of an existing section",
        against: None,
        ops: |s| s.files as u64,
        goals: [goal(6.0), goal(6.0)],
        run: open_close,
    },
    Workload {
        name: "unlink",
        what: "unlink of a 64 B section",
        against: None,
        ops: |s| s.files as u64,
        goals: [goal(4.0), goal(4.0)],
        run: unlink_sections,
    },
    Workload {
        name: "meta_read",
        what: "open + read + close of NAME.meta",
        against: Some("the same of a small file as long as a sidecar"),
        ops: |s| s.meta_reads as u64,
        goals: [goal(6.0), goal(6.0)],
        run: meta_read,
    },
    Workload {
        name: "stat",
        what: "first stat of a section after a write",
        against: None,
        ops: |s| s.files as u64,
        goals: [goal(5.0), goal(5.0)],
        run: first_stat,
    },
    Workload {
        name: "grow_mapped",
        what: "grow a mapped section by 1 MiB (ftruncate)",
        against: Some("fallocate of 1 MiB on a mapped file"),
        ops: |s| s.grows as u64,
        goals: [goal(1.5), goal(1.5)],
        run: grow_mapped,
    },
    Workload {
        name: "seq_write",
        what: "sequential write, 1 MiB writes",
        against: None,
        ops: |s| (s.stream / MIB) as u64,
        goals: [as_before(1.1), goal(1.3)],
        run: seq_write,
    },
    Workload {
        name: "mmap_write",
        what: "mmap MAP_SHARED, write every page, munmap",
        against: None,
        ops: |s| (s.stream / PAGE) as u64,
        goals: [as_before(1.1), goal(1.3)],
        run: mmap_write,
    },
    Workload {
        name: "random_4k",
        what: "random 4 KiB pread/pwrite, half each",
        against: None,
        ops: |s| s.random_ops as u64,
        goals: [as_before(1.2), goal(2.0)],
        run: random_4k,
    },
    Workload {
        name: "stat_warm",
        what: "stat of a section stat-ed since its write",
        against: None,
        ops: |s| 3 * s.files as u64,
        goals: [as_before(1.5), None],
        run: stat_warm,
    },
    Workload {
        name: "seq_read",
        what: "sequential read, 1 MiB reads",
        against: None,
        ops: |s| (s.stream / MIB) as u64,
        goals: [as_before(1.1), None],
        run: seq_read,
    },
    Workload {
        name: "ping_pong",
        what: "two processes bounce a counter in one page",
        against: None,
        ops: |s| s.round_trips,
        goals: [as_before(1.1), None],
        run: ping_pong,
    },
];

// ---------------------------------------------------------------------------------------
// Setup and cleanup shared by the metadata workloads (never timed).

const SMALL: [u8; 64] = [0x42; 64];

/// create + write 64 B + close of every name.
fn make_sections(names: &[CString]) {
    for name in names {
        let fd = open(name, libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY);
        write_all(fd, &SMALL);
        close(fd);
    }
}

/// A stat of every name, so that the kernel holds fresh attributes for each (a write
/// makes them stale on a FUSE mount).
fn stat_all(names: &[CString]) {
    for name in names {
        assert_eq!(stat_size(name), SMALL.len() as i64);
    }
}

fn unlink_all(names: &[CString]) {
    names.iter().for_each(unlink);
}

// ---------------------------------------------------------------------------------------
// The metadata workloads.

fn create(p: &Place, s: &Sizes, round: usize) -> Run {
    let names = p.names("create-", round, s.files);
    let time = timed(|| make_sections(&names));
    unlink_all(&names);
    Run {
        time,
        ops: names.len() as u64,
    }
}

fn open_close(p: &Place, s: &Sizes, round: usize) -> Run {
    let names = p.names("open-", round, s.files);
    make_sections(&names);
    // Open's path walk then finds the name and its attributes cached: the figure is the
    // open and the close, not a LOOKUP or a GETATTR.
    stat_all(&names);
    let time = timed(|| {
        for name in &names {
            close(open(name, libc::O_RDWR));
        }
    });
    unlink_all(&names);
    Run {
        time,
        ops: names.len() as u64,
    }
}

fn unlink_sections(p: &Place, s: &Sizes, round: usize) -> Run {
    let names = p.names("unlink-", round, s.files);
    make_sections(&names);
    let time = timed(|| unlink_all(&names));
    Run {
        time,
        ops: names.len() as u64,
    }
}

/// Each stat is the first since the section's write, which on sectionfs made the kernel's
/// copy of its attributes stale: a GETATTR.
fn first_stat(p: &Place, s: &Sizes, round: usize) -> Run {
    let names = p.names("stat-", round, s.files);
    make_sections(&names);
    let time = timed(|| stat_all(&names));
    unlink_all(&names);
    Run {
        time,
        ops: names.len() as u64,
    }
}

/// Warm: every name was stat-ed once since its write; three passes are timed.
fn stat_warm(p: &Place, s: &Sizes, round: usize) -> Run {
    let names = p.names("warm-", round, s.files);
    make_sections(&names);
    stat_all(&names);
    let time = timed(|| (0..3).for_each(|_| stat_all(&names)));
    unlink_all(&names);
    Run {
        time,
        ops: 3 * names.len() as u64,
    }
}

fn meta_read(p: &Place, s: &Sizes, round: usize) -> Run {
    let sections = p.names("meta-", round, s.meta_reads);
    make_sections(&sections);
    let metas: Vec<CString> = sections
        .iter()
        .map(|n| {
            let mut b = n.as_bytes().to_vec();
            b.extend_from_slice(b".meta");
            CString::new(b).expect("no NUL")
        })
        .collect();
    if !p.sectionfs {
        // /dev/shm has no sidecars: files of a sidecar's length stand in for them.
        let body = vec![b'x'; s.meta_len];
        for m in &metas {
            let fd = open(m, libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY);
            write_all(fd, &body);
            close(fd);
        }
    }
    let mut buf = [0u8; 4096];
    let mut short = 0;
    let time = timed(|| {
        for m in &metas {
            let fd = open(m, libc::O_RDONLY);
            if read_to_end(fd, &mut buf) == 0 {
                short += 1;
            }
            close(fd);
        }
    });
    assert_eq!(short, 0, "empty NAME.meta");
    if !p.sectionfs {
        unlink_all(&metas);
    }
    unlink_all(&sections);
    Run {
        time,
        ops: metas.len() as u64,
    }
}

// ---------------------------------------------------------------------------------------
// Growth and the data path.

/// sectionfs grows with ftruncate, which under `commit=eager` allocates in the store;
/// /dev/shm's ftruncate allocates nothing, so its side is the fallocate that does the same
/// work. Both files stay mapped (their first MiB) throughout.
fn grow_mapped(p: &Place, s: &Sizes, round: usize) -> Run {
    let path = p.path(&format!("grow-{round}"));
    let fd = open(&path, libc::O_CREAT | libc::O_EXCL | libc::O_RDWR);
    ftruncate(fd, MIB);
    let head = map(fd, MIB, 0);
    // SAFETY: inside the mapping.
    unsafe { head.write_volatile(1) };
    let time = timed(|| {
        for i in 1..=s.grows {
            if p.sectionfs {
                ftruncate(fd, (i + 1) * MIB);
            } else {
                fallocate(fd, i * MIB, MIB);
            }
        }
    });
    // The growth is visible through a new mapping of the last MiB.
    let tail = map(fd, MIB, s.grows * MIB);
    // SAFETY: inside the new mapping.
    unsafe { tail.write_volatile(1) };
    unmap(tail, MIB);
    unmap(head, MIB);
    close(fd);
    unlink(&path);
    Run {
        time,
        ops: s.grows as u64,
    }
}

fn seq_write(p: &Place, s: &Sizes, round: usize) -> Run {
    let path = p.path(&format!("seqw-{round}"));
    let buf = vec![0xa5u8; MIB];
    let writes = s.stream / MIB;
    let time = timed(|| {
        let fd = open(&path, libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY);
        for _ in 0..writes {
            write_all(fd, &buf);
        }
        close(fd);
    });
    unlink(&path);
    Run {
        time,
        ops: writes as u64,
    }
}

fn seq_read(p: &Place, s: &Sizes, round: usize) -> Run {
    let path = p.path(&format!("seqr-{round}"));
    make_file(&path, s.stream);
    let mut buf = vec![0u8; MIB];
    let mut total = 0;
    let time = timed(|| {
        let fd = open(&path, libc::O_RDONLY);
        total = read_to_end(fd, &mut buf);
        close(fd);
    });
    assert_eq!(total, s.stream, "seq_read read everything");
    unlink(&path);
    Run {
        time,
        ops: (total / MIB) as u64,
    }
}

fn mmap_write(p: &Place, s: &Sizes, round: usize) -> Run {
    let path = p.path(&format!("mmap-{round}"));
    let mut pages = 0;
    let time = timed(|| {
        let fd = open(&path, libc::O_CREAT | libc::O_EXCL | libc::O_RDWR);
        ftruncate(fd, s.stream);
        let m = map(fd, s.stream, 0);
        for off in (0..s.stream).step_by(PAGE) {
            // SAFETY: inside the mapping.
            unsafe { m.add(off).cast::<u64>().write_volatile(off as u64) };
            pages += 1;
        }
        unmap(m, s.stream);
        close(fd);
    });
    unlink(&path);
    Run { time, ops: pages }
}

fn random_4k(p: &Place, s: &Sizes, round: usize) -> Run {
    let path = p.path(&format!("rand-{round}"));
    make_file(&path, s.random_file);
    let fd = open(&path, libc::O_RDWR);
    let mut buf = vec![0u8; PAGE];
    let pages = (s.random_file / PAGE) as u64;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ round as u64);
    let time = timed(|| {
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
    unlink(&path);
    Run {
        time,
        ops: s.random_ops as u64,
    }
}

/// The parent and a forked child, each with its own open and mapping of one section,
/// bounce a counter: the parent writes odd values, the child answers with the next even.
fn ping_pong(p: &Place, s: &Sizes, round: usize) -> Run {
    let path = p.path(&format!("pingpong-{round}"));
    let fd = open(&path, libc::O_CREAT | libc::O_EXCL | libc::O_RDWR);
    ftruncate(fd, PAGE);
    let m = map(fd, PAGE, 0);
    // SAFETY: the page is mapped, zeroed, and u64-aligned; only atomics touch it.
    let counter = unsafe { &*m.cast::<AtomicU64>() };
    // SAFETY: as above, 64 bytes in.
    let ready = unsafe { &*m.add(64).cast::<AtomicU64>() };
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
    let time = timed(|| {
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
    unmap(m, PAGE);
    close(fd);
    unlink(&path);
    Run { time, ops: n }
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
