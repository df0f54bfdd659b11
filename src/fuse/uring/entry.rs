//! One ring entry: the buffers the kernel reads and writes (`struct fuse_uring_req_header`
//! and the payload), and the one reply of the request it holds.

use fuser::ReplyTransport;
use std::cell::UnsafeCell;
use std::io::{self, IoSlice};
use std::sync::{Arc, Condvar, Mutex};

/// `sizeof(struct fuse_in_header)`, `sizeof(struct fuse_out_header)`.
pub(super) const IN_HEADER: usize = 40;
pub(super) const OUT_HEADER: usize = 16;

/// `struct fuse_uring_ent_in_out`.
#[repr(C)]
#[derive(Clone, Copy)]
pub(super) struct EntInOut {
    flags: u64,
    pub(super) commit_id: u64,
    pub(super) payload_sz: u32,
    padding: u32,
    reserved: u64,
}

/// `struct fuse_uring_req_header`.
#[repr(C, align(8))]
pub(super) struct Header {
    pub(super) in_out: [u8; 128],
    pub(super) op_in: [u8; 128],
    pub(super) ent: EntInOut,
}

/// One ring entry's buffers. The kernel writes them between a fetch and its completion
/// and reads them at a commit; the daemon touches them only in between, while the entry
/// is its own.
pub(super) struct Buffers {
    pub(super) header: Header,
    pub(super) payload: Vec<u8>,
}

/// A ring entry: its buffers, and the one reply of the request it holds. The reply may be
/// sent from any thread (fuser sends it when the reply object is used or dropped); the
/// queue's thread waits for it before the commit.
pub(super) struct Slot {
    pub(super) buffers: UnsafeCell<Buffers>,
    /// What REGISTER hands the kernel: the header buffer, then the payload buffer.
    pub(super) iov: [libc::iovec; 2],
    /// (replied, the queue's thread is waiting for the reply).
    replied: Mutex<(bool, bool)>,
    done: Condvar,
}

// SAFETY: `buffers` is written by the queue's thread before dispatch (the request, read by
// the kernel) and by the one `send` of the request's reply, under `replied`; the queue's
// thread reads them again only after it saw `replied` set under the same mutex.
unsafe impl Sync for Slot {}
unsafe impl Send for Slot {}

impl Slot {
    pub(super) fn new(payload: usize) -> Arc<Slot> {
        let mut slot = Arc::new(Slot {
            iov: [libc::iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: 0,
            }; 2],
            buffers: UnsafeCell::new(Buffers {
                header: Header {
                    in_out: [0; 128],
                    op_in: [0; 128],
                    ent: EntInOut {
                        flags: 0,
                        commit_id: 0,
                        payload_sz: 0,
                        padding: 0,
                        reserved: 0,
                    },
                },
                // Zeroed memory comes from mmap: pages are only taken as requests use them.
                payload: vec![0; payload],
            }),
            replied: Mutex::new((false, false)),
            done: Condvar::new(),
        });
        let s = Arc::get_mut(&mut slot).expect("a new Arc is unique");
        let b = s.buffers.get_mut();
        s.iov = [
            libc::iovec {
                iov_base: (&raw mut b.header).cast(),
                iov_len: size_of::<Header>(),
            },
            libc::iovec {
                iov_base: b.payload.as_mut_ptr().cast(),
                iov_len: b.payload.len(),
            },
        ];
        slot
    }

    /// Writes one reply (`fuse_out_header`, then the reply's arguments) into the entry.
    pub(super) fn write_reply(&self, data: &[IoSlice<'_>]) -> io::Result<()> {
        let mut replied = self.replied.lock().unwrap_or_else(|p| p.into_inner());
        if replied.0 {
            return Err(io::Error::other("second reply to one io_uring request"));
        }
        // SAFETY: see `unsafe impl Sync`: the queue's thread waits on `replied`.
        let b = unsafe { &mut *self.buffers.get() };
        let total: usize = data.iter().map(|s| s.len()).sum();
        let result = if total < OUT_HEADER || total - OUT_HEADER > b.payload.len() {
            // Cannot happen for replies fuser builds within max_write; answer EIO rather
            // than leave the caller waiting.
            let unique = data.first().and_then(|h| h.get(8..16)).unwrap_or(&[0; 8]);
            b.header.in_out[..OUT_HEADER].copy_from_slice(&out_header(-libc::EIO, unique));
            b.header.ent.payload_sz = 0;
            Err(io::Error::other(
                "reply larger than the ring's payload buffer",
            ))
        } else {
            // The pieces, in order: the first OUT_HEADER bytes to the header, the rest to
            // the payload.
            let mut at = 0;
            for piece in data {
                let mut piece: &[u8] = piece;
                if at < OUT_HEADER {
                    let n = piece.len().min(OUT_HEADER - at);
                    b.header.in_out[at..at + n].copy_from_slice(&piece[..n]);
                    piece = &piece[n..];
                    at += n;
                }
                let p = at - OUT_HEADER;
                b.payload[p..p + piece.len()].copy_from_slice(piece);
                at += piece.len();
            }
            b.header.ent.payload_sz = (total - OUT_HEADER) as u32;
            Ok(())
        };
        replied.0 = true;
        // Mostly the reply is sent from the queue's own thread, inside dispatch: no wake.
        if replied.1 {
            self.done.notify_one();
        }
        result
    }

    pub(super) fn wait_reply(&self) {
        let mut replied = self.replied.lock().unwrap_or_else(|p| p.into_inner());
        replied.1 = true;
        while !replied.0 {
            replied = self.done.wait(replied).unwrap_or_else(|p| p.into_inner());
        }
        *replied = (false, false);
    }
}

/// A `fuse_out_header` carrying only an error.
pub(super) fn out_header(error: i32, unique: &[u8]) -> [u8; OUT_HEADER] {
    let mut h = [0u8; OUT_HEADER];
    h[..4].copy_from_slice(&(OUT_HEADER as u32).to_ne_bytes());
    h[4..8].copy_from_slice(&error.to_ne_bytes());
    h[8..16].copy_from_slice(unique);
    h
}

/// fuser's handle on a ring entry's reply.
pub(super) struct EntryReply(pub(super) Arc<Slot>);

impl ReplyTransport for EntryReply {
    fn send(&self, data: &[IoSlice<'_>]) -> io::Result<()> {
        self.0.write_reply(data)
    }
}
