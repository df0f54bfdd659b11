//! Crash and restart: nothing a writer saw acknowledged is lost when the daemon dies.
//!
//! Each cycle mounts one store, starts writers that append checksummed records to their
//! own sections (by `write` and through `MAP_SHARED` views, growing them as they go) and
//! acknowledge each record once `fsync`/`msync` returned, kills the daemon with SIGKILL at
//! a random moment, clears the dead mount (`umount -l`) and mounts the same store again.
//! Every record acknowledged in any earlier cycle must then be intact, every size at least
//! the last acknowledged one, every sidecar consistent, and the new daemon's log clean.
//!
//! `SECTIONFS_CRASH_ITERATIONS` sets the number of cycles per data mode (default 20);
//! `SECTIONFS_CRASH_SEED` replays the kill points of a failed run (its seed is printed).

#[macro_use]
mod common;

use common::{Mount, ViewHolder, c_program, crc32, read_meta};
use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const DEFAULT_ITERATIONS: usize = 20;
/// The daemon dies somewhere in this window after the writers start (milliseconds).
const KILL_WINDOW_MS: (u64, u64) = (10, 500);
/// Writers stop by themselves after this long; it must exceed the kill window.
const WRITER_MAX_MS: u64 = 5_000;
/// How long writers may take to notice the dead daemon and stop.
const WRITER_DEADLINE: Duration = Duration::from_secs(20);
/// Per cycle: (subcommand of crash_writer, how many writers of that kind).
const WRITERS: [(&str, usize); 2] = [("write", 2), ("map", 2)];

mount_test! {
    fn acknowledged_writes_survive_sigkill_passthrough() {
        crash_cycles("passthrough=on", "passthrough");
    }
}

mount_test! {
    fn acknowledged_writes_survive_sigkill_cached() {
        crash_cycles("passthrough=off", "cached");
    }
}

mount_test! {
    /// In passthrough mode a view maps the backing file itself: it keeps working after the
    /// daemon dies, and what it wrote is in the section when the store is mounted again.
    fn passthrough_view_outlives_the_daemon() {
        const SIZE: u64 = 256 * 1024;
        let dir = tempfile::Builder::new()
            .prefix("sectionfs-crash-")
            .tempdir()
            .expect("create a temp dir for the store");
        let store = dir.path().join("store");
        let mut mount = Mount::with_store(&store, "passthrough=on");
        let mut view = ViewHolder::start(&mount.section("kept"), SIZE);
        assert_eq!(view.say("fill 65"), "ok");
        // The fd goes too: only the view is left holding the section.
        assert_eq!(view.say("close"), "ok");
        mount.kill9();
        // Writes through the view after the crash, msync included, must neither fault nor fail.
        assert_eq!(view.say("fill 66"), "ok");
        assert_eq!(view.say("check 66"), "ok");
        let (status, err) = view.finish();
        assert!(status.success(), "view holder: {status}\n{err}");

        let mount = Mount::with_store(&store, "passthrough=on");
        let data = std::fs::read(mount.section("kept")).expect("read the section after the restart");
        assert_eq!(data.len() as u64, SIZE);
        assert!(
            data.iter().all(|&b| b == 66),
            "the writes made through the view after the crash are not all in the store"
        );
        assert_clean_log(&mount.log(), "remount after the view outlived its daemon");
        mount.unmount();
    }
}

/// What one writer acknowledged: its section, its pid, its records and sizes.
struct Acked {
    name: String,
    pid: u32,
    /// (offset, length) of each acknowledged record; record `i` holds index `i`.
    records: Vec<(u64, u64)>,
    /// The largest size it acknowledged (records count as sizes too).
    size: u64,
    /// The size found when its records were first checked, after the crash that ended it.
    /// Later restarts must find exactly that size; the data is read again only at the end.
    checked: Option<u64>,
}

fn crash_cycles(opts: &str, io: &str) {
    let iterations = std::env::var("SECTIONFS_CRASH_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_ITERATIONS);
    let seed = std::env::var("SECTIONFS_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
    eprintln!(
        "crash test ({opts}): {iterations} cycles, seed {seed} \
         (replay with SECTIONFS_CRASH_SEED={seed})"
    );
    let mut rng = Rng::new(seed);
    let writer = c_program("crash_writer");
    let dir = tempfile::Builder::new()
        .prefix("sectionfs-crash-")
        .tempdir()
        .expect("create a temp dir for the store");
    let store = dir.path().join("store");
    let mut acked: Vec<Acked> = Vec::new();
    let started = Instant::now();

    for cycle in 0..iterations {
        let ctx = format!("{opts}, seed {seed}, cycle {cycle}");
        let mut mount = Mount::with_store(&store, opts);
        verify(&mount, &mut acked, io, &ctx, false);

        let kill_after = Duration::from_millis(rng.range(KILL_WINDOW_MS.0, KILL_WINDOW_MS.1));
        let mut running = Vec::new();
        for (way, count) in WRITERS {
            for j in 0..count {
                let name = format!("c{cycle:03}-{way}{j}");
                running.push(Running::spawn(
                    &writer,
                    way,
                    &mount.section(&name),
                    name,
                    rng.next(),
                ));
            }
        }
        thread::sleep(kill_after);
        for w in &mut running {
            if let Ok(Some(status)) = w.child.try_wait() {
                panic!(
                    "{ctx}: writer {} stopped with {status} before the crash\n{}",
                    w.name,
                    mount.log()
                );
            }
        }
        assert_clean_log(&mount.log(), &ctx);
        mount.kill9();
        for w in running {
            acked.push(w.finish(&ctx));
        }
        let records: usize = acked.iter().map(|a| a.records.len()).sum();
        eprintln!("{ctx}: killed after {kill_after:?}; {records} records acknowledged so far");
    }

    let ctx = format!("{opts}, seed {seed}, after the last cycle");
    let mount = Mount::with_store(&store, opts);
    verify(&mount, &mut acked, io, &ctx, true);
    mount.unmount();
    eprintln!(
        "crash test ({opts}): {iterations} cycles in {:.1?}",
        started.elapsed()
    );
}

/// One writer process and the thread collecting its acknowledgements.
struct Running {
    name: String,
    child: Child,
    stdout: JoinHandle<String>,
}

impl Running {
    fn spawn(writer: &Path, way: &str, path: &Path, name: String, seed: u64) -> Running {
        let mut child = Command::new(writer)
            .arg(way)
            .arg(path)
            .arg(seed.to_string())
            .arg(WRITER_MAX_MS.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", writer.display()));
        let mut out = child.stdout.take().expect("piped stdout");
        // Read while it runs: a full pipe would hold the writer back.
        let stdout = thread::spawn(move || {
            let mut s = String::new();
            let _ = out.read_to_string(&mut s);
            s
        });
        Running {
            name,
            child,
            stdout,
        }
    }

    /// Waits for the writer to stop (it must, once the daemon is gone) and parses its acks.
    fn finish(mut self, ctx: &str) -> Acked {
        let pid = self.child.id();
        let deadline = Instant::now() + WRITER_DEADLINE;
        let status = loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "{ctx}: writer {} still running {WRITER_DEADLINE:?} after the crash",
                    self.name
                );
            }
            thread::sleep(Duration::from_millis(5));
        };
        let out = self.stdout.join().expect("ack reader thread");
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        // 0: ran out its time (a passthrough view outlives the daemon); 2: a call failed
        // with the daemon gone; 3: SIGBUS on a cached view whose pages could not be read.
        assert!(
            matches!(status.code(), Some(0 | 2 | 3)),
            "{ctx}: writer {} ended with {status}\n{err}",
            self.name
        );
        let how = match err.lines().find(|l| l.starts_with("stop: ")) {
            Some(l) => l.trim_start_matches("stop: ").to_string(),
            None => format!("{status}"),
        };
        let mut acked = Acked {
            name: self.name,
            pid,
            records: Vec::new(),
            size: 0,
            checked: None,
        };
        for line in out.lines() {
            let words: Vec<&str> = line.split(' ').collect();
            let num = |i: usize| -> u64 {
                words
                    .get(i)
                    .and_then(|w| w.parse().ok())
                    .unwrap_or_else(|| panic!("{ctx}: bad ack line {line:?}"))
            };
            match words[0] {
                "rec" => {
                    let (off, len) = (num(1), num(2));
                    acked.records.push((off, len));
                    acked.size = acked.size.max(off + len);
                }
                "size" => acked.size = acked.size.max(num(1)),
                _ => panic!("{ctx}: bad ack line {line:?}"),
            }
        }
        eprintln!(
            "{ctx}: {} acknowledged {} records, then {how}",
            acked.name,
            acked.records.len()
        );
        acked
    }
}

/// Checks every acknowledged size and sidecar through the mount, and the records of each
/// section not checked before (of every section when `all`).
fn verify(mount: &Mount, acked: &mut [Acked], io: &str, ctx: &str, all: bool) {
    let listing: Vec<String> = std::fs::read_dir(mount.path())
        .unwrap_or_else(|e| panic!("{ctx}: list the mount: {e}"))
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    for a in acked {
        let path = mount.section(&a.name);
        if a.size == 0 && a.checked.is_none() && !listing.contains(&a.name) {
            // Killed before it acknowledged anything: the section may never have been made.
            continue;
        }
        assert!(
            listing.contains(&a.name) && listing.contains(&format!("{}.meta", a.name)),
            "{ctx}: {} or its sidecar is missing from the listing {listing:?}",
            a.name
        );
        // The sidecar first: this is the section's first open since the restart, so it
        // must read as restored (status=created, no handles). A later read would race the
        // kernel's asynchronous RELEASE of our own data read.
        let meta = read_meta(mount.path(), &a.name);
        let size = match a.checked {
            Some(size) if !all => {
                let now = std::fs::metadata(&path)
                    .unwrap_or_else(|e| panic!("{ctx}: stat {}: {e}", a.name))
                    .len();
                assert_eq!(now, size, "{ctx}: {} changed size across restarts", a.name);
                size
            }
            _ => check_records(&path, a, ctx),
        };
        a.checked = Some(size);
        let want = [
            ("name", a.name.clone()),
            ("size", size.to_string()),
            ("status", "created".to_string()),
            ("creator_pid", a.pid.to_string()),
            ("open_handles", "0".to_string()),
            ("io", io.to_string()),
            ("commit", "eager".to_string()),
        ];
        for (key, value) in want {
            assert_eq!(
                meta.get(key),
                Some(&value),
                "{ctx}: {}.meta: {key}\n{meta:?}",
                a.name
            );
        }
        assert!(
            meta.get("created_at").is_some_and(|t| t.ends_with('Z')),
            "{ctx}: {}.meta: created_at\n{meta:?}",
            a.name
        );
    }
    let log = mount.log();
    assert_clean_log(&log, ctx);
    assert!(
        log.contains(" 0 entries left aside"),
        "{ctx}: the store scan left entries aside after a crash\n{log}"
    );
}

/// Reads a section whole and checks every record acknowledged in it; returns its size.
fn check_records(path: &Path, a: &Acked, ctx: &str) -> u64 {
    let data = std::fs::read(path).unwrap_or_else(|e| panic!("{ctx}: read {}: {e}", a.name));
    let size = data.len() as u64;
    assert!(
        size >= a.size,
        "{ctx}: {} has {size} bytes, {} were acknowledged",
        a.name,
        a.size
    );
    for (i, &(off, len)) in a.records.iter().enumerate() {
        if let Err(why) = check_record(&data, off, len, i as u32) {
            panic!(
                "{ctx}: {} record {i} (acknowledged at {off}, {len} bytes): {why}",
                a.name
            );
        }
    }
    size
}

/// A record is [u32 len][u32 index][len bytes][u32 crc32 of all before], little-endian.
fn check_record(data: &[u8], off: u64, len: u64, index: u32) -> Result<(), String> {
    let end = off.checked_add(len).ok_or("offset overflows")?;
    if end > data.len() as u64 || len < 12 {
        return Err(format!("section ends at {}", data.len()));
    }
    let rec = &data[off as usize..end as usize];
    let u32_at = |i: usize| u32::from_le_bytes([rec[i], rec[i + 1], rec[i + 2], rec[i + 3]]);
    let (payload, got_index) = (u32_at(0) as u64, u32_at(4));
    if payload + 12 != len {
        return Err(format!("length field says {payload} payload bytes"));
    }
    if got_index != index {
        return Err(format!("index field says {got_index}"));
    }
    let crc = u32_at(len as usize - 4);
    let want = crc32(&rec[..len as usize - 4]);
    if crc != want {
        return Err(format!("crc {crc:08x}, content gives {want:08x}"));
    }
    Ok(())
}

/// No error, warning or panic in a daemon's log.
fn assert_clean_log(log: &str, ctx: &str) {
    let bad: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(" ERROR ") || l.contains(" WARN ") || l.contains("panicked"))
        .collect();
    assert!(
        bad.is_empty(),
        "{ctx}: the daemon logged faults:\n{}\n----- whole log -----\n{log}",
        bad.join("\n")
    );
}

/// xorshift64*: a small seeded generator, so a failing run can be replayed.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform-ish in `[lo, hi)`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo)
    }
}
