//! FUSE over io_uring (Linux 6.14+, when root has set
//! `/sys/module/fuse/parameters/enable_uring`): the kernel keeps one request queue per CPU
//! and hands each request to the queue of the CPU its caller runs on. Two threads per
//! queue, pinned to that CPU, serve it, each through its own ring: a request is answered
//! and the next one fetched in one `io_uring_enter`, and the wake-up stays on the caller's
//! CPU (a round trip of 14 µs here, against 37–45 µs when `/dev/fuse` wakes a worker on
//! the other, halted vCPU). FORGET, INTERRUPT and notifications stay on `/dev/fuse`, whose
//! workers keep running. See DESIGN.md, "FUSE over io_uring".
//!
//! The protocol (`include/uapi/linux/fuse.h`, `fs/fuse/dev_uring.c`): each ring entry
//! ([`entry`]) is a header buffer (`fuse_uring_req_header`) and a payload buffer,
//! registered with `FUSE_IO_URING_CMD_REGISTER`. A completion means the kernel wrote a
//! request there: the `fuse_in_header` in `in_out`, the opcode's fixed argument in
//! `op_in`, the rest in the payload. The answer goes back the same way (`fuse_out_header`
//! in `in_out`, the reply's arguments in the payload) with
//! `FUSE_IO_URING_CMD_COMMIT_AND_FETCH`, which also re-arms the entry.

mod entry;

use entry::{Buffers, EntryReply, IN_HEADER, Slot, out_header};
use fuser::{Dispatcher, Filesystem};
use io_uring::{IoUring, cqueue, opcode, squeue, types};
use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;

/// INIT flag: the daemon will serve requests through io_uring (`FUSE_OVER_IO_URING`).
pub const FUSE_OVER_IO_URING: u64 = 1 << 41;
/// Where root turns the kernel's side on.
pub const ENABLE_PARAM: &str = "/sys/module/fuse/parameters/enable_uring";

const CMD_REGISTER: u32 = 1;
const CMD_COMMIT_AND_FETCH: u32 = 2;
/// Ring entries per thread: one. The kernel hands a request to any entry of the queue
/// that is free, and its task work runs only when the entry's thread next enters the
/// kernel: a second entry of a thread busy with a long request (a shrink waiting for
/// releases) would hold the next request, that release perhaps, until that one is done.
/// With one, a busy thread has no free entry and the queue's other thread gets it; when
/// both are busy the kernel keeps the request until a COMMIT_AND_FETCH takes it.
const DEPTH: usize = 1;
/// Threads per queue, as `/dev/fuse` has two workers: a request that waits (a shrink
/// waiting for releases) never holds up the others of its CPU.
const THREADS_PER_QUEUE: usize = 2;

/// The CPUs the kernel makes queues for (`num_possible_cpus()`), as `0..n`.
fn queue_count() -> io::Result<usize> {
    let mask = std::fs::read_to_string("/sys/devices/system/cpu/possible")?;
    let mut n = 0;
    for part in mask.trim().split(',').filter(|p| !p.is_empty()) {
        let (lo, hi) = part.split_once('-').unwrap_or((part, part));
        let parse = |s: &str| {
            s.parse::<usize>()
                .map_err(|_| io::Error::other(format!("cannot parse the CPU mask {mask:?}")))
        };
        n += parse(hi)? + 1 - parse(lo)?;
    }
    Ok(n)
}

/// Starts the threads that serve the queues (two per CPU, pinned to it: one may wait, as a
/// shrink does for releases, while the other serves) and registers their entries. Returns
/// the threads, and whether every queue was registered (the kernel then sends requests
/// through the rings) or the first refusal (requests keep coming through `/dev/fuse`).
/// Either way the threads end by themselves when the connection does.
pub fn start<FS: Filesystem>(
    dev: BorrowedFd<'_>,
    dispatcher: &Dispatcher<FS>,
    payload: usize,
) -> (Vec<JoinHandle<()>>, io::Result<()>) {
    let mut threads = Vec::new();
    let queues = match queue_count() {
        Ok(n) => n,
        Err(e) => return (threads, Err(e)),
    };
    // One fd of the session's `/dev/fuse` for all the rings, held as long as they run.
    let dev = match dev.try_clone_to_owned() {
        Ok(dev) => Arc::new(dev),
        Err(e) => return (threads, Err(e)),
    };
    let (tx, rx) = mpsc::channel();
    for qid in 0..queues {
        for worker in 0..THREADS_PER_QUEUE {
            let (dev, dispatcher, tx) = (Arc::clone(&dev), dispatcher.clone(), tx.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("fuse-ring-{qid}.{worker}"))
                .spawn(move || match Queue::register(qid, dev, payload) {
                    Ok(mut queue) => {
                        let _ = tx.send(Ok(()));
                        drop(tx);
                        if let Err(e) = queue.serve(&dispatcher) {
                            log::error!("io_uring queue {qid}: stopped serving ({e})");
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                    }
                });
            match spawned {
                Ok(t) => threads.push(t),
                Err(e) => return (threads, Err(e)),
            }
        }
    }
    drop(tx);
    // Every thread answers once; a refusal is kept, but all are waited for.
    let mut outcome = Ok(());
    for answer in rx {
        if outcome.is_ok() {
            outcome = answer;
        }
    }
    (threads, outcome)
}

/// One CPU's queue: its ring and its entries.
struct Queue {
    qid: u16,
    /// The session's `/dev/fuse`, which every command names (one fd for all queues).
    dev: Arc<OwnedFd>,
    ring: IoUring<squeue::Entry128, cqueue::Entry>,
    slots: Vec<Arc<Slot>>,
    /// The request of the entry being served, laid out as a read of `/dev/fuse` gives it.
    request: Vec<u64>,
    /// Completions taken from the ring and not yet handled: (entry, result).
    done: Vec<(usize, i32)>,
}

impl Queue {
    /// Pins the calling thread to CPU `qid`, makes its ring and registers its entries.
    fn register(qid: usize, dev: Arc<OwnedFd>, payload: usize) -> io::Result<Queue> {
        pin_to_cpu(qid);
        let ring = make_ring()?;
        let mut queue = Queue {
            qid: qid as u16,
            dev,
            ring,
            slots: (0..DEPTH).map(|_| Slot::new(payload)).collect(),
            request: vec![0; (IN_HEADER + 128 + payload).div_ceil(8)],
            done: Vec::with_capacity(2 * DEPTH),
        };
        for i in 0..DEPTH {
            queue.push(i, CMD_REGISTER, 0)?;
        }
        queue.ring.submit()?;
        // A refused REGISTER completes at once; an accepted one only with a request,
        // which `serve` takes from `done` first.
        queue.reap();
        if let Some(&(_, refused)) = queue.done.iter().find(|(_, r)| *r < 0) {
            return Err(io::Error::from_raw_os_error(-refused));
        }
        Ok(queue)
    }

    /// Moves the ring's completions into `done`.
    fn reap(&mut self) {
        self.done.clear();
        let completions = self.ring.completion();
        self.done
            .extend(completions.map(|c| (c.user_data() as usize, c.result())));
    }

    /// Queues REGISTER or COMMIT_AND_FETCH for entry `i`; the next submit sends it.
    fn push(&mut self, i: usize, cmd: u32, commit_id: u64) -> io::Result<()> {
        // `struct fuse_uring_cmd_req`: flags, commit_id, qid, padding.
        let mut req = [0u8; 80];
        req[8..16].copy_from_slice(&commit_id.to_ne_bytes());
        req[16..18].copy_from_slice(&self.qid.to_ne_bytes());
        let iov = self.slots[i].iov.as_ptr();
        let sqe = opcode::UringCmd80::new(types::Fd(self.dev.as_raw_fd()), cmd)
            .cmd(req)
            .addr(Some(iov as u64))
            .build()
            .user_data(i as u64);
        let sqe = with_len(sqe, 2);
        // SAFETY: the iovecs and the buffers they point at live in the slot, which this
        // queue keeps as long as its ring.
        unsafe { self.ring.submission().push(&sqe) }
            .map_err(|_| io::Error::other("io_uring submission queue full"))
    }

    /// Serves requests until the connection ends.
    fn serve<FS: Filesystem>(&mut self, dispatcher: &Dispatcher<FS>) -> io::Result<()> {
        loop {
            for k in 0..self.done.len() {
                let (i, result) = self.done[k];
                if result < 0 {
                    return match -result {
                        // The connection ended (unmount, abort) or the ring is going away.
                        libc::ENOTCONN | libc::ECANCELED | libc::ENODEV | libc::ECONNABORTED => {
                            Ok(())
                        }
                        e => Err(io::Error::from_raw_os_error(e)),
                    };
                }
                let commit_id = self.handle(i, dispatcher);
                self.push(i, CMD_COMMIT_AND_FETCH, commit_id)?;
            }
            match self.ring.submitter().submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                Err(e) => return Err(e),
            }
            self.reap();
        }
    }

    /// Hands the request in entry `i` to fuser and waits for its reply. Returns the
    /// commit id.
    fn handle<FS: Filesystem>(&mut self, i: usize, dispatcher: &Dispatcher<FS>) -> u64 {
        let slot = Arc::clone(&self.slots[i]);
        let (commit_id, len) = {
            // SAFETY: the kernel completed the fetch: the entry is the daemon's.
            let b = unsafe { &*slot.buffers.get() };
            (b.header.ent.commit_id, self.gather(b))
        };
        let request = &bytes_of(&self.request)[..len.unwrap_or(0)];
        let dispatched = len.is_some()
            && std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                dispatcher.dispatch(request, Arc::new(EntryReply(Arc::clone(&slot))))
            }))
            .unwrap_or_else(|_| {
                log::error!("io_uring queue {}: a request handler panicked", self.qid);
                true
            });
        if !dispatched {
            log::warn!(
                "io_uring queue {}: malformed request, answered EIO",
                self.qid
            );
            let _ = slot.write_reply(&[IoSlice::new(&out_header(
                -libc::EIO,
                &commit_id.to_ne_bytes(),
            ))]);
        }
        slot.wait_reply();
        commit_id
    }

    /// Lays the request out as `/dev/fuse` would: `fuse_in_header` (its `len` covers all),
    /// the opcode's fixed argument, the payload. `None` if the sizes do not add up.
    fn gather(&mut self, b: &Buffers) -> Option<usize> {
        let len = u32::from_ne_bytes(b.header.in_out[..4].try_into().ok()?) as usize;
        let payload = b.header.ent.payload_sz as usize;
        let op = len.checked_sub(IN_HEADER + payload)?;
        if op > b.header.op_in.len() || payload > b.payload.len() {
            return None;
        }
        let out = bytes_of_mut(&mut self.request);
        out[..IN_HEADER].copy_from_slice(&b.header.in_out[..IN_HEADER]);
        out[IN_HEADER..IN_HEADER + op].copy_from_slice(&b.header.op_in[..op]);
        out[IN_HEADER + op..len].copy_from_slice(&b.payload[..payload]);
        Some(len)
    }
}

/// A ring whose task work runs only when its one thread waits in it (no interrupts of the
/// thread while it serves a request), falling back to a plain ring on older kernels.
fn make_ring() -> io::Result<IoUring<squeue::Entry128, cqueue::Entry>> {
    let entries = (2 * DEPTH) as u32;
    IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .build(entries)
        .or_else(|_| IoUring::builder().build(entries))
}

/// Sets `sqe->len`, which `UringCmd80` leaves 0: FUSE wants the number of iovecs there.
fn with_len(sqe: squeue::Entry128, len: u32) -> squeue::Entry128 {
    const LEN_OFFSET: usize = 24; // offsetof(struct io_uring_sqe, len)
    // SAFETY: `Entry128` is `repr(C)`: an `io_uring_sqe` then 64 bytes of command.
    let mut raw: [u8; 128] = unsafe { std::mem::transmute(sqe) };
    raw[LEN_OFFSET..LEN_OFFSET + 4].copy_from_slice(&len.to_ne_bytes());
    unsafe { std::mem::transmute::<[u8; 128], squeue::Entry128>(raw) }
}

fn pin_to_cpu(cpu: usize) {
    let mut set = nix::sched::CpuSet::new();
    let pinned = set
        .set(cpu)
        .and_then(|()| nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set));
    if let Err(e) = pinned {
        // Still correct: requests of that CPU are then answered from another one.
        log::info!("io_uring queue {cpu}: cannot pin to its CPU ({e})");
    }
}

fn bytes_of(words: &[u64]) -> &[u8] {
    // SAFETY: u64 has no padding; any byte pattern is a valid u8.
    unsafe { std::slice::from_raw_parts(words.as_ptr().cast(), words.len() * 8) }
}

fn bytes_of_mut(words: &mut [u64]) -> &mut [u8] {
    // SAFETY: as `bytes_of`, and every byte pattern is a valid u64.
    unsafe { std::slice::from_raw_parts_mut(words.as_mut_ptr().cast(), words.len() * 8) }
}
