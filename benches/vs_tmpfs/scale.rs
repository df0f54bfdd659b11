//! `--scale`: many sections in one store (passthrough), against as many files on /dev/shm.
//! Per-thousand costs while creating them, stat and open of random sections when 1,000
//! exist and when all do, a full listing, and what the daemon holds with all of them.

use crate::Mounted;
use crate::args::{Mode, Transport};
use crate::json::{self, Json};
use crate::report::{Machine, fmt_time, median};
use crate::sys::*;
use std::ffi::CString;
use std::fmt::Write as _;
use std::path::Path;

/// Runs the scale test; returns its report and its JSON.
pub fn run(
    scratch: &Path,
    total: usize,
    transport: Transport,
    mut machine: Machine,
) -> (String, Json) {
    let shm = Scratch::new(scratch.join("shm-scale"));
    let mounted = Mounted::new(scratch, Mode::Passthrough, transport);
    machine.transports = vec![(Mode::Passthrough.name(), mounted.transport.clone())];
    let mount = &mounted.mount;
    eprintln!("scale: {total} sections");
    let mut used = DaemonUse::default();
    let sfs = one(mount.path(), total, || used = daemon_use(mount.pid()));
    let tmp = one(&shm.0, total, || {});
    mounted.unmount();
    machine.load_end = crate::report::Load::now();

    let mut out = String::new();
    let _ = writeln!(out, "\n{total} sections in one store (passthrough)");
    out.push_str(&machine.header());
    let _ = writeln!(
        out,
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
    for (label, r) in [("sectionfs", &sfs), ("/dev/shm", &tmp)] {
        let _ = writeln!(
            out,
            "{:<10} | {:>14} {:>14} {:>6.2} | {:>11} {:>11} | {:>11} {:>11} | {:>12}",
            label,
            fmt_time(r.first_k),
            fmt_time(r.last_k),
            r.last_k / r.first_k,
            fmt_time(r.stat_small),
            fmt_time(r.stat_all),
            fmt_time(r.open_small),
            fmt_time(r.open_all),
            fmt_time(r.ls_s / r.ls_entries.max(1) as f64),
        );
    }
    for (label, r) in [("sectionfs", &sfs), ("/dev/shm", &tmp)] {
        let _ = writeln!(
            out,
            "{label}: other tasks runnable as its timed regions began: median {}, max {}",
            median(&r.others.iter().map(|&x| f64::from(x)).collect::<Vec<_>>()),
            r.others.iter().max().copied().unwrap_or(0)
        );
    }
    let _ = writeln!(
        out,
        "daemon with {total} sections: {} fds, {} KiB resident ({:.1} MiB)",
        used.fds,
        used.rss_kib,
        used.rss_kib as f64 / 1024.0
    );
    let _ = writeln!(
        out,
        "per section: create ratio last/first thousand {:.2}; stat {:.2}x and open {:.2}x \
         at {total} against 1,000 sections",
        sfs.last_k / sfs.first_k,
        sfs.stat_all / sfs.stat_small,
        sfs.open_all / sfs.open_small,
    );
    let json = json::obj([
        ("benchmark", Json::from("vs_tmpfs --scale")),
        ("machine", machine.json()),
        ("sections", total.into()),
        ("sectionfs", sfs.json()),
        ("/dev/shm", tmp.json()),
        ("daemon_fds", used.fds.into()),
        ("daemon_rss_kib", used.rss_kib.into()),
    ]);
    (out, json)
}

struct ScaleRun {
    per_k: Vec<f64>,
    /// Medians of five thousands at each end: one noisy thousand decides nothing.
    first_k: f64,
    last_k: f64,
    /// Per operation, random names, when 1,000 sections exist and when all do.
    stat_small: f64,
    stat_all: f64,
    open_small: f64,
    open_all: f64,
    ls_entries: usize,
    ls_s: f64,
    /// Other tasks runnable as each timed region began.
    others: Vec<u32>,
}

impl ScaleRun {
    fn json(&self) -> Json {
        json::obj([
            (
                "per_thousand_create_s",
                json::arr(self.per_k.iter().copied()),
            ),
            ("stat_s_at_1k", self.stat_small.into()),
            ("stat_s_at_all", self.stat_all.into()),
            ("open_s_at_1k", self.open_small.into()),
            ("open_s_at_all", self.open_all.into()),
            ("ls_entries", self.ls_entries.into()),
            ("ls_s", self.ls_s.into()),
            ("others_runnable", json::arr(self.others.iter().copied())),
        ])
    }
}

/// `at_full` runs once every section exists and has been listed, before the unlinks.
fn one(dir: &Path, total: usize, at_full: impl FnOnce()) -> ScaleRun {
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
            rng.shuffle(&mut first);
            (stat_small, open_small) = stat_open(&names, &first);
        }
    }
    // As many names, none of them touched since its write, from the whole store.
    let mut rest: Vec<usize> = (1000.min(total)..total).collect();
    rng.shuffle(&mut rest);
    rest.truncate(1000);
    let (stat_all, open_all) = stat_open(&names, &rest);
    let (ls_entries, ls_s) = list(dir);
    at_full();
    names.iter().for_each(unlink);
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
        others: take_runnable_samples(),
    }
}

/// Seconds per stat, then per open+close, of the names at `picks`: each name's first stat
/// since its write (on sectionfs a GETATTR, as the write made the times stale), then its
/// first open since its create (an OPEN).
fn stat_open(names: &[CString], picks: &[usize]) -> (f64, f64) {
    let s = timed(|| {
        for &i in picks {
            stat_size(&names[i]);
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
