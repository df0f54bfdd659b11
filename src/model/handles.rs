//! Open file handles (sections, sidecar snapshots, directory listings) and who holds
//! them: the per-process creation status lives and dies with a process's handles.

use super::dir::Listing;
use super::section::fstat;
use super::{Caller, Sections, lock};
use crate::contract::Lifetime;
use crate::error::{Error, Result};
use crate::ino::Ino;
use std::collections::HashMap;
use std::fs::File;
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// One open file handle.
pub(super) enum Handle {
    Section {
        ino: u64,
        pid: u32,
        file: Arc<File>,
    },
    /// The sidecar text as it was when this handle was opened.
    Sidecar(Arc<[u8]>),
    /// What a directory held at opendir: offsets index into it.
    Dir(Arc<Listing>),
}

impl Sections {
    pub(super) fn add_handle(&self, h: Handle) -> u64 {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.handles.insert(fh, h);
        fh
    }

    /// Opens a sidecar: a snapshot of its text, taken now, for this reader.
    pub fn open_sidecar(&self, caller: Caller, ino: u64, flags: i32) -> Result<u64> {
        if flags & libc::O_ACCMODE != libc::O_RDONLY || flags & libc::O_TRUNC != 0 {
            return Err(Error::ReadOnly);
        }
        let Some(Ino::Sidecar(id)) = Ino::decode(ino) else {
            return Err(Error::BadHandle);
        };
        let section = self.section(id)?;
        let text = self.facts_of(&section, caller)?.render();
        Ok(self.add_handle(Handle::Sidecar(text.into())))
    }

    /// Releases a file handle (section or sidecar).
    pub fn release(&self, fh: u64) -> Result<()> {
        let (_, handle) = self.handles.remove(&fh).ok_or(Error::BadHandle)?;
        let Handle::Section { ino, pid, .. } = handle else {
            return Ok(());
        };
        let section = self.section(ino)?;
        let mut st = lock(&section.state);
        st.handles = st.handles.saturating_sub(1);
        if let Some(entry) = st.by_process.get_mut(&pid) {
            entry.1 -= 1;
            if entry.1 == 0 {
                st.by_process.remove(&pid);
                // An idle section holds no table: 100,000 of them would cost ~8 MiB.
                if st.by_process.is_empty() {
                    st.by_process = HashMap::new();
                }
                log::debug!(
                    "section {ino}: process {pid} released its last handle; \
                     {} processes tracked",
                    st.by_process.len()
                );
            }
        }
        if st.handles == 0 {
            // The last chance to see growth the daemon did not serve (passthrough writes);
            // an unlinked section's storage goes now, and its count with it.
            let size = match &st.file {
                Some(f) if st.linked => fstat(f).map(|s| s.st_size as u64).unwrap_or(st.counted),
                _ => 0,
            };
            self.account(&mut st, size);
            // A section over a file keeps that file open while it has a name: it is
            // reopened only after a restart.
            if st.record.backing.is_none() {
                st.file = None;
            }
        }
        let vanish = st.handles == 0 && st.linked && st.record.lifetime == Lifetime::Handles;
        self.drop_if_gone(&section, &st);
        // A shrink counts itself in `shrink_waiters` under this same lock before it waits:
        // read here, the count cannot miss it. None waiting is the rule, and a notify is a
        // system call.
        let waiting = self.shrink_waiters.load(Ordering::Acquire) > 0;
        drop(st);
        if waiting {
            section.released.notify_all();
        }
        if vanish {
            self.vanish(ino);
        }
        Ok(())
    }

    pub fn release_dir(&self, fh: u64) {
        self.handles.remove(&fh);
    }
}

/// The thread group (process) of a thread id as the kernel reports it in requests.
/// Falls back to the id itself when /proc does not say (the thread is gone).
pub fn thread_group(tid: u32) -> u32 {
    // Most callers are a thread-group leader (any single-threaded process, or a main
    // thread): its own process. tgkill(tid, tid, 0) delivers nothing and fails with ESRCH
    // unless thread `tid` leads group `tid` (EPERM: it does, but is not ours to signal).
    // One syscall, where /proc/TID/status renders some 60 lines: that read was 13% of the
    // daemon's time in a create loop.
    let t = libc::c_long::from(tid);
    // SAFETY: signal 0 is a pure existence and permission probe.
    let rc = unsafe { libc::syscall(libc::SYS_tgkill, t, t, 0 as libc::c_long) };
    let leader = rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    if tid != 0 && leader {
        return tid;
    }
    let Ok(status) = std::fs::read_to_string(format!("/proc/{tid}/status")) else {
        return tid;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("Tgid:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(tid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::Status;
    use crate::model::testing::*;

    fn tracked(m: &Sections, ino: u64) -> usize {
        lock(&m.section(ino).unwrap().state).by_process.len()
    }

    #[test]
    fn per_process_answers_are_forgotten_with_the_last_handle() {
        let (_tmp, m) = fresh();
        let (attr, a1) = m.create(A, os("s"), 0o600, 0, libc::O_RDWR).unwrap();
        let a2 = m.open(A, attr.ino, libc::O_RDWR).unwrap();
        let b = m.open(B, attr.ino, libc::O_RDWR).unwrap();
        assert_eq!(tracked(&m, attr.ino), 2);
        // A's own most recent open is its second one.
        assert_eq!(m.facts(A, attr.ino).unwrap().status, Status::AlreadyExists);
        m.release(a2.fh).unwrap();
        assert_eq!(tracked(&m, attr.ino), 2, "A still holds a handle");
        m.release(a1.fh).unwrap();
        assert_eq!(tracked(&m, attr.ino), 1);
        m.release(b.fh).unwrap();
        assert_eq!(tracked(&m, attr.ino), 0);
        // Many short-lived processes leave nothing behind.
        for pid in 4_300_000..4_301_000 {
            let c = Caller { pid, ..A };
            let h = m.open(c, attr.ino, libc::O_RDONLY).unwrap();
            m.release(h.fh).unwrap();
        }
        assert_eq!(tracked(&m, attr.ino), 0);
        assert_eq!(m.facts(A, attr.ino).unwrap().open_handles, 0);
    }

    #[test]
    fn a_thread_answers_for_its_process() {
        let (_tmp, m) = fresh();
        // SAFETY: gettid has no preconditions.
        let me = Caller {
            pid: unsafe { libc::gettid() } as u32,
            ..A
        };
        let (attr, h) = m.create(me, os("s"), 0o600, 0, libc::O_RDWR).unwrap();
        let b = m.open(B, attr.ino, libc::O_RDWR).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let sibling = std::thread::spawn(move || {
            // SAFETY: as above.
            tx.send(unsafe { libc::gettid() } as u32).unwrap();
            let _ = done_rx.recv();
        });
        let tid = rx.recv().unwrap();
        assert_ne!(tid, me.pid);
        assert_eq!(thread_group(tid), std::process::id());
        let sibling_caller = Caller { pid: tid, ..A };
        // The sibling thread sees the answer this thread's open got, not B's.
        assert_eq!(
            m.facts(sibling_caller, attr.ino).unwrap().status,
            Status::Created
        );
        assert_eq!(m.facts(B, attr.ino).unwrap().status, Status::AlreadyExists);
        done_tx.send(()).unwrap();
        sibling.join().unwrap();
        m.release(h.fh).unwrap();
        m.release(b.fh).unwrap();
    }
}
