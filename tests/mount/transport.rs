//! The transport: FUSE over io_uring where the kernel offers it (`-o io_uring=auto`, the
//! default), `/dev/fuse` otherwise; `io_uring=on` or no mount. The kernel offers it only
//! while root has set `/sys/module/fuse/parameters/enable_uring`: these tests set it (as
//! root; under CI=true not being able to is a failure) and put it back.

use crate::common::{self, Mount, read_meta};
use std::fs::{self, File, OpenOptions};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::{Arc, Barrier};
use std::time::Duration;

const PARAM: &str = "/sys/module/fuse/parameters/enable_uring";

/// The kernel's switch set for as long as the guard lives, and one test at a time
/// (`common::serial`): other tests mount with the default, which follows the switch.
struct KernelUring {
    was: String,
    _turn: std::sync::MutexGuard<'static, ()>,
}

/// Sets the switch; `None` (after a note) where it cannot be set and CI is not true.
fn kernel_uring(on: bool) -> Option<KernelUring> {
    let turn = common::serial();
    let set = fs::read_to_string(PARAM).and_then(|was| {
        fs::write(PARAM, if on { "Y" } else { "N" })?;
        Ok(was.trim().to_string())
    });
    match set {
        Ok(was) => Some(KernelUring { was, _turn: turn }),
        Err(e) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("cannot set {PARAM} ({e}): CI=true runs the io_uring tests as root")
        }
        Err(e) => {
            eprintln!("skipping: cannot set {PARAM} ({e}); run as root on Linux 6.14+");
            None
        }
    }
}

impl Drop for KernelUring {
    fn drop(&mut self) {
        if let Err(e) = fs::write(PARAM, &self.was) {
            eprintln!("cannot restore {PARAM} to {}: {e}", self.was);
        }
    }
}

/// The daemon's ring threads (`fuse-ring-CPU.N`) and their context switches, voluntary
/// and not: at least one per request served (a thread sleeps for the next request, or the
/// caller it woke on its CPU preempts it).
fn ring_switches(pid: u32) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    for task in fs::read_dir(format!("/proc/{pid}/task")).expect("the daemon's tasks") {
        let dir = task.expect("a task").path();
        let comm = fs::read_to_string(dir.join("comm")).unwrap_or_default();
        let comm = comm.trim();
        if !comm.starts_with("fuse-ring-") {
            continue;
        }
        let status = fs::read_to_string(dir.join("status")).unwrap_or_default();
        let switches: u64 = status
            .lines()
            .filter_map(|l| {
                l.strip_prefix("voluntary_ctxt_switches:")
                    .or_else(|| l.strip_prefix("nonvoluntary_ctxt_switches:"))
            })
            .filter_map(|v| v.trim().parse::<u64>().ok())
            .sum();
        out.push((comm.to_string(), switches));
    }
    out.sort();
    out
}

/// Switches per CPU queue, from `ring_switches`.
fn per_cpu(pid: u32, cpus: usize) -> Vec<u64> {
    let mut sums = vec![0; cpus];
    for (comm, n) in ring_switches(pid) {
        let cpu: usize = comm["fuse-ring-".len()..]
            .split('.')
            .next()
            .and_then(|c| c.parse().ok())
            .expect("fuse-ring-CPU.N");
        sums[cpu] += n;
    }
    sums
}

fn pin_to(cpu: usize) {
    let mut set = nix::sched::CpuSet::new();
    set.set(cpu).expect("a CPU number");
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set).expect("pin");
}

fn cpu_count() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// One round trip each: an attribute the section does not have.
fn getxattr_absent(path: &Path, times: usize) {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    let mut buf = [0u8; 16];
    for _ in 0..times {
        // SAFETY: valid C strings and buffer.
        let r = unsafe {
            libc::getxattr(
                c.as_ptr(),
                c"user.absent".as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        assert_eq!(r, -1, "user.absent exists?");
    }
}

mount_test! {
    /// With io_uring=on each request is served by the ring of the CPU its caller runs on,
    /// and the sidecar says `transport=io_uring`.
    fn requests_are_served_on_the_callers_cpu(opts) {
        let Some(_uring) = kernel_uring(true) else { return };
        let m = Mount::new(&format!("{opts},io_uring=on"));
        let s = m.path().join("s");
        fs::write(&s, b"x").unwrap();
        assert_eq!(read_meta(m.path(), "s")["transport"], "io_uring", "{opts}");
        let cpus = cpu_count();
        assert_eq!(
            ring_switches(m.pid()).len(),
            2 * cpus,
            "two ring threads per CPU: {:?}",
            ring_switches(m.pid())
        );
        // Each pinned to its CPU: the wake-up of a request stays on the caller's CPU.
        for task in fs::read_dir(format!("/proc/{}/task", m.pid())).unwrap() {
            let dir = task.unwrap().path();
            let comm = fs::read_to_string(dir.join("comm")).unwrap_or_default();
            let Some(name) = comm.trim().strip_prefix("fuse-ring-") else {
                continue;
            };
            let cpu = name.split('.').next().unwrap();
            let status = fs::read_to_string(dir.join("status")).unwrap_or_default();
            let allowed = status
                .lines()
                .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
                .map(str::trim);
            assert_eq!(allowed, Some(cpu), "{opts}: fuse-ring-{name} runs on {allowed:?}");
        }
        const N: u64 = 300;
        // On a thread of its own: pinning must not outlive this test's check.
        let (pid, path) = (m.pid(), s.clone());
        std::thread::spawn(move || {
            for cpu in 0..cpus {
                pin_to(cpu);
                let before = per_cpu(pid, cpus);
                getxattr_absent(&path, N as usize);
                let after = per_cpu(pid, cpus);
                let grew: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
                assert!(grew[cpu] >= N, "{opts}: CPU {cpu}'s ring served {grew:?}");
                let elsewhere: u64 = grew.iter().sum::<u64>() - grew[cpu];
                assert!(elsewhere < N / 10, "{opts}: other rings served {grew:?}");
            }
        })
        .join()
        .unwrap();
        m.unmount();
    }
}

mount_test! {
    /// A shrink waits for the other handles to close; on one CPU, the release it waits for
    /// comes through the same queue, and the queue's second thread serves it.
    fn a_shrink_waiting_on_one_cpu_gets_its_release(opts) {
        let Some(_uring) = kernel_uring(true) else { return };
        let m = Mount::new(&format!("{opts},io_uring=on"));
        let s = m.path().join("s");
        fs::write(&s, vec![7u8; 8192]).unwrap();
        let path = s.clone();
        std::thread::spawn(move || {
            pin_to(0);
            let held = File::open(&path).unwrap();
            let f = OpenOptions::new().write(true).open(&path).unwrap();
            let go = Arc::new(Barrier::new(2));
            let closer = {
                let go = Arc::clone(&go);
                // Inherits the pinning: its RELEASE goes to CPU 0's queue as well.
                std::thread::spawn(move || {
                    go.wait();
                    std::thread::sleep(Duration::from_millis(60));
                    drop(held);
                })
            };
            go.wait();
            f.set_len(4096).expect("the shrink, once the other handle closed");
            closer.join().unwrap();
        })
        .join()
        .unwrap();
        assert_eq!(fs::metadata(&s).unwrap().len(), 4096, "{opts}");
        m.unmount();
    }
}

mount_test! {
    /// Without the kernel's consent: io_uring=on is no mount, with a message saying what
    /// to do; auto serves through /dev/fuse and says so.
    fn without_the_kernel_on_is_refused_and_auto_falls_back(opts) {
        let Some(_uring) = kernel_uring(false) else { return };
        let err = match Mount::try_new(&format!("{opts},io_uring=on")) {
            Ok(m) => panic!("{opts}: io_uring=on mounted without the kernel: {}", m.log()),
            Err(e) => e,
        };
        assert!(err.contains("io_uring=on") && err.contains(PARAM), "{opts}: {err}");

        let m = Mount::new(&format!("{opts},io_uring=auto"));
        fs::write(m.path().join("s"), b"x").unwrap();
        assert_eq!(read_meta(m.path(), "s")["transport"], "dev_fuse", "{opts}");
        assert!(ring_switches(m.pid()).is_empty(), "{opts}: ring threads without rings");
        m.unmount();
    }
}
