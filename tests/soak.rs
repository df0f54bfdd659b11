//! Soak: 8 worker processes (tests/clients/soak_worker.py) do mixed operations on shared
//! and private sections for a bounded time; each checks as it goes, and at the end this
//! test checks what they report against the mount: the last counter each one wrote into
//! every shared section, and the whole content of each private section. Nothing may be
//! lost, no worker may fail, the daemon may log no fault, and its memory and fd count
//! must stay flat (measured at start and end, and printed).
//!
//! `SECTIONFS_SOAK_SECS` sets the duration (default 30 s when CI=true, 10 s otherwise).

#[macro_use]
mod common;

use common::{Mount, crc32};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const WORKERS: usize = 8;
/// Layout of a shared section, as soak_worker.py writes it.
const EPOCH: u64 = 64 * 1024;
const SLOT: u64 = 4096;
/// How much the daemon's resident memory may grow over a soak.
const RSS_SLACK_KIB: u64 = 16 * 1024;
/// How long the daemon may take to process the releases of exited workers.
const SETTLE: Duration = Duration::from_secs(10);

mount_test! {
    fn soak_passthrough() {
        soak("passthrough=on");
    }
}

mount_test! {
    fn soak_cached() {
        soak("passthrough=off");
    }
}

fn soak(opts: &str) {
    let secs: f64 = std::env::var("SECTIONFS_SOAK_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if std::env::var("CI").is_ok_and(|v| v == "true") {
            30.0
        } else {
            10.0
        });
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(1);
    let mount = Mount::new(opts);
    let pid = mount.pid();
    // The mount is visible before fuser's workers open their cloned /dev/fuse fds: one
    // answered request proves they are serving, so the start count includes them. A
    // lookup of a missing name opens nothing that a late RELEASE would close again.
    assert!(
        !mount.section("soak-warmup").exists(),
        "a fresh mount is empty"
    );
    let start = Usage::of(pid);
    eprintln!(
        "soak ({opts}): {WORKERS} workers for {secs} s, seed {seed}; daemon at start: {start}"
    );

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/soak_worker.py");
    let workers: Vec<_> = (0..WORKERS)
        .map(|i| {
            Command::new("python3")
                .arg(&script)
                .arg(mount.path())
                .arg(i.to_string())
                .arg(WORKERS.to_string())
                .arg(secs.to_string())
                .arg((seed + i as u64).to_string())
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn a soak worker")
        })
        .collect();
    let reports: Vec<Report> = workers
        .into_iter()
        .enumerate()
        .map(|(i, w)| {
            let out = w.wait_with_output().expect("wait for a soak worker");
            assert!(
                out.status.success(),
                "{opts}: worker {i} failed with {}\n{}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr),
                mount.log()
            );
            Report::parse(&String::from_utf8_lossy(&out.stdout))
                .unwrap_or_else(|e| panic!("{opts}: worker {i}'s report: {e}"))
        })
        .collect();

    // Shared views were coherent: each worker's last counter in every epoch is in the file.
    for name in ["soak-shared-0", "soak-shared-1"] {
        let data = std::fs::read(mount.section(name)).expect("read a shared section");
        for r in &reports {
            for (&epoch, &counter) in r.shared.get(name).into_iter().flatten() {
                let off = (epoch * EPOCH + r.worker * SLOT) as usize;
                let got = data
                    .get(off..off + 8)
                    .map(|b| u64::from_le_bytes(b.try_into().unwrap()));
                assert_eq!(
                    got,
                    Some(counter),
                    "{opts}: {name}: worker {}'s counter in epoch {epoch}",
                    r.worker
                );
            }
        }
    }
    // Private sections hold exactly what their workers wrote.
    for r in &reports {
        let data = std::fs::read(mount.section(&r.private_name)).expect("read a private section");
        assert_eq!(
            data.len() as u64,
            r.private_size,
            "{opts}: {}: size",
            r.private_name
        );
        assert_eq!(
            crc32(&data),
            r.private_crc,
            "{opts}: {}: content",
            r.private_name
        );
    }
    let ops: u64 = reports.iter().map(|r| r.ops).sum();

    // Releases reach the daemon asynchronously after the workers exit.
    let deadline = Instant::now() + SETTLE;
    let mut end = Usage::of(pid);
    while end.fds != start.fds && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
        end = Usage::of(pid);
    }
    eprintln!("soak ({opts}): {ops} operations; daemon at end: {end} (start: {start})");
    assert_eq!(
        end.fds, start.fds,
        "{opts}: the daemon's fd count did not return to its start value"
    );
    assert!(
        end.rss_kib <= start.rss_kib + RSS_SLACK_KIB,
        "{opts}: the daemon's memory grew from {start} to {end}"
    );
    let log = mount.log();
    for line in log.lines() {
        assert!(
            !line.contains(" ERROR ") && !line.contains(" WARN ") && !line.contains("panicked"),
            "{opts}: the daemon logged a fault: {line}"
        );
    }
    mount.unmount();
}

/// The daemon's resident memory and open fds.
#[derive(Clone, Copy)]
struct Usage {
    rss_kib: u64,
    fds: usize,
}

impl Usage {
    fn of(pid: u32) -> Usage {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .expect("read the daemon's /proc status");
        let rss_kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/PID/status");
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .expect("list the daemon's fds")
            .count();
        Usage { rss_kib, fds }
    }
}

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "rss {} KiB, {} fds", self.rss_kib, self.fds)
    }
}

/// One worker's final report (see soak_worker.py).
struct Report {
    worker: u64,
    ops: u64,
    private_name: String,
    private_size: u64,
    private_crc: u32,
    /// Shared section name -> epoch -> the worker's last counter there.
    shared: BTreeMap<String, BTreeMap<u64, u64>>,
}

impl Report {
    fn parse(text: &str) -> Result<Report, String> {
        let mut r = Report {
            worker: u64::MAX,
            ops: 0,
            private_name: String::new(),
            private_size: 0,
            private_crc: 0,
            shared: BTreeMap::new(),
        };
        for line in text.lines() {
            let w: Vec<&str> = line.split(' ').collect();
            let num = |i: usize| -> Result<u64, String> {
                w.get(i)
                    .and_then(|v| v.parse().ok())
                    .ok_or_else(|| format!("bad line {line:?}"))
            };
            match (w[0], w.len()) {
                ("worker", 4) => (r.worker, r.ops) = (num(1)?, num(3)?),
                ("private", 4) => {
                    r.private_name = w[1].to_string();
                    r.private_size = num(2)?;
                    r.private_crc = u32::try_from(num(3)?).map_err(|e| e.to_string())?;
                }
                ("shared", 4) => {
                    let (epoch, counter) = (num(2)?, num(3)?);
                    r.shared
                        .entry(w[1].to_string())
                        .or_default()
                        .insert(epoch, counter);
                }
                _ => return Err(format!("bad line {line:?}")),
            }
        }
        if r.worker == u64::MAX || r.private_name.is_empty() {
            return Err(format!("incomplete report {text:?}"));
        }
        Ok(r)
    }
}
