//! Finding views of a section that outlived their handles (passthrough mode).
//!
//! A passthrough mapping is re-pointed at the backing file, so the kernel sends RELEASE
//! while views may still exist: the handle count cannot tell. `/proc/PID/maps` can: the
//! kernel shows such a view with the FUSE mount's device and the section's inode number
//! (`file_user_inode`), as any mapping of the mount. Reading another process's maps takes
//! its `mmap_lock` (or the per-VMA locks), so the scan runs on a thread of its own and the
//! caller waits for it with a deadline: a process that holds its `mmap_lock` while waiting
//! on this daemon (a fault on a `MAP_PRIVATE` sidecar mapping inside a `get_user_pages`
//! that may not drop the lock, such as a read of `/proc/PID/mem`) can hold the scan, but
//! never a worker, so the request it waits on is still answered and the scan resumes.
//! Never used in cached mode, where every fault on a section waits on this daemon.

use std::fs;
use std::io::Read;
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// How long a shrink waits for the scan before it answers "busy".
const DEADLINE: Duration = Duration::from_secs(2);

/// A device number as `/proc/PID/maps` prints it: `major:minor`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dev {
    pub major: u32,
    pub minor: u32,
}

struct Job {
    ino: u64,
    except: u32,
    answer: mpsc::Sender<bool>,
}

/// The mount's device and the scanning thread (started at the first scan).
#[derive(Default)]
pub struct ViewFinder {
    dev: OnceLock<Dev>,
    jobs: Mutex<Option<SyncSender<Job>>>,
}

impl ViewFinder {
    /// Sets the mount's device (once; later calls are ignored).
    pub fn set_dev(&self, dev: Dev) {
        let _ = self.dev.set(dev);
    }

    /// Whether a process other than `except` (a thread group id) maps inode `ino` of the
    /// mount. `None` when that cannot be known in time (the scan is held up, or the
    /// mount's device is unknown): the caller must then assume a view exists.
    pub fn mapped_elsewhere(&self, ino: u64, except: u32) -> Option<bool> {
        self.dev.get()?;
        let (answer, got) = mpsc::channel();
        let job = Job {
            ino,
            except,
            answer,
        };
        {
            let mut jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
            let tx = match &*jobs {
                Some(tx) => tx.clone(),
                None => {
                    let tx = self.spawn()?;
                    *jobs = Some(tx.clone());
                    tx
                }
            };
            match tx.try_send(job) {
                Ok(()) => {}
                // Scans already queued behind a held one: this one would wait as long.
                Err(TrySendError::Full(_)) => return None,
                Err(TrySendError::Disconnected(_)) => {
                    *jobs = None;
                    return None;
                }
            }
        }
        got.recv_timeout(DEADLINE).ok()
    }

    fn spawn(&self) -> Option<SyncSender<Job>> {
        let dev = *self.dev.get()?;
        let (tx, rx) = mpsc::sync_channel::<Job>(2);
        let spawned = std::thread::Builder::new()
            .name("view-scan".into())
            .spawn(move || {
                let mut buf = Vec::new();
                for job in rx {
                    let found = scan(dev, job.ino, job.except, &mut buf);
                    // The caller may have given up waiting: nobody to tell.
                    let _ = job.answer.send(found);
                }
            });
        match spawned {
            Ok(_) => Some(tx),
            Err(e) => {
                log::warn!("cannot start the view scanner: {e}");
                None
            }
        }
    }
}

/// Whether any process but `except` maps `dev`:`ino`, from `/proc/*/maps`. Processes
/// that go away while it reads, and those whose maps the daemon may not read, are skipped.
pub fn scan(dev: Dev, ino: u64, except: u32, buf: &mut Vec<u8>) -> bool {
    let Ok(dir) = fs::read_dir("/proc") else {
        return true;
    };
    let own = std::process::id();
    for entry in dir.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        if pid == except || pid == own {
            continue;
        }
        buf.clear();
        let read = fs::File::open(format!("/proc/{pid}/maps")).and_then(|mut f| f.read_to_end(buf));
        match read {
            Ok(_) => {}
            // Gone while we looked (ENOENT, ESRCH), or more privileged than the daemon
            // (EACCES, EPERM: a process with capabilities the daemon lacks). Not seen.
            Err(_) => continue,
        }
        if maps_hold(buf, dev, ino) {
            log::debug!("view scan: process {pid} maps inode {ino}");
            return true;
        }
    }
    false
}

/// Whether a `/proc/PID/maps` text has a mapping of `dev`:`ino`.
/// A line: `start-end perms offset major:minor inode [path]`.
pub fn maps_hold(text: &[u8], dev: Dev, ino: u64) -> bool {
    text.split(|&b| b == b'\n').any(|line| {
        let mut fields = line.split(|&b| b == b' ').filter(|f| !f.is_empty()).skip(3);
        let (Some(d), Some(i)) = (fields.next(), fields.next()) else {
            return false;
        };
        parse_inode(i) == Some(ino) && parse_dev(d) == Some(dev)
    })
}

fn parse_inode(field: &[u8]) -> Option<u64> {
    std::str::from_utf8(field).ok()?.parse().ok()
}

fn parse_dev(field: &[u8]) -> Option<Dev> {
    let (major, minor) = std::str::from_utf8(field).ok()?.split_once(':')?;
    Some(Dev {
        major: u32::from_str_radix(major, 16).ok()?,
        minor: u32::from_str_radix(minor, 16).ok()?,
    })
}

/// The device of the FUSE mount at `mnt`, from `/proc/self/mountinfo` (the last mount
/// there, the one just made). Read from the table rather than by `stat`, which would ask
/// this daemon itself.
pub fn mount_dev(mnt: &[u8]) -> Option<Dev> {
    let info = fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines()
        .filter(|line| {
            // Fields: id parent MAJ:MIN root MOUNTPOINT opts [optional...] - FSTYPE ...
            let point = line.split(' ').nth(4);
            let fstype = line
                .split_once(" - ")
                .and_then(|(_, r)| r.split(' ').next());
            matches!((point, fstype), (Some(p), Some(t))
                if t.starts_with("fuse") && crate::mount::unescape_mountinfo(p) == mnt)
        })
        .filter_map(|line| {
            let (major, minor) = line.split(' ').nth(2)?.split_once(':')?;
            Some(Dev {
                major: major.parse().ok()?,
                minor: minor.parse().ok()?,
            })
        })
        .next_back()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_lines_are_matched_by_device_and_inode() {
        let dev = Dev {
            major: 0,
            minor: 0x29,
        };
        let text = b"55d0-55d1 r--p 00000000 fe:00 2 /usr/bin/x\n\
                     7f7e70cd9000-7f7e70cdb000 rw-s 00000000 00:29 2                          /m/A\n";
        assert!(maps_hold(text, dev, 2));
        assert!(!maps_hold(text, dev, 3));
        assert!(!maps_hold(
            text,
            Dev {
                major: 0,
                minor: 0x2a
            },
            2
        ));
        assert!(!maps_hold(b"", dev, 2));
        assert!(!maps_hold(b"garbage\n\n 1 2 3 4\n", dev, 2));
        // A deleted file's path says so; device and inode still decide.
        assert!(maps_hold(b"1-2 r--s 0 00:29 2 /m/A (deleted)\n", dev, 2));
    }

    #[test]
    fn a_process_own_mapping_is_found() {
        // This test process maps nothing of a fake device: no false view.
        let mut buf = Vec::new();
        let none = Dev {
            major: 4095,
            minor: 1,
        };
        assert!(!scan(none, 1, 0, &mut buf));
    }
}
