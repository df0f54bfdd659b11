//! Model-based test: random sequences of operations run through a real mount and, side by
//! side, through a small reference model of the contract (`../shared/spec/SECTIONS.md`).
//! Every result and every errno must agree. A failure shrinks to a minimal sequence.
//!
//! The model is written from the spec, plus the kernel's own answers where the kernel
//! decides before the daemon is asked (O_EXCL on an existing name, writes through a
//! read-only descriptor, rename onto itself). It knows nothing of inodes, handles or
//! the store: names map to sections, a section is bytes and a mode, and descriptors held
//! across operations point at sections (so unlinked sections live on behind them).
//!
//! The same operations and the same reference model also drive the daemon's model
//! (`Sections`) directly, without a mount (`Direct`, which plays the kernel's part): a
//! disagreement there is the model's, not the kernel's or the adapter's, and 4x the cases
//! run in seconds.
//!
//! One mount per mode serves every case; each case starts from an empty mount. Cases run
//! `PROPTEST_CASES` times (default below) with up to `MAX_OPS` operations each. Shrunk
//! failures are kept at the end as named tests (`replay`), run both ways.

use crate::common;
use common::{cpath, last_errno, open_fd as open};

use common::Mount;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestError, TestRunner};
use sectionfs::contract::{Commit, IoMode, Lifetime};
use sectionfs::daemon::{AttrChange, Caller, Ino, Kind, Options, Sections, Store};

/// Whether an inode number names a sidecar.
fn is_sidecar(ino: u64) -> bool {
    matches!(Ino::decode(ino), Some(Ino::Sidecar(_)))
}
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::fmt;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::OnceLock;

const DEFAULT_CASES: u32 = 128;
const MAX_OPS: usize = 30;
/// Descriptors a sequence may hold open across operations.
const SLOTS: usize = 3;
/// The umask this test runs under (set once; every create's mode is masked by it).
const UMASK: u32 = 0o022;
const MODES: [u32; 6] = [0o600, 0o644, 0o640, 0o444, 0o000, 0o777];

/// Names the sequences use, one per kind of name the spec talks about.
fn pool() -> &'static [Vec<u8>] {
    static POOL: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    POOL.get_or_init(|| {
        let long = |n: usize, tail: &[u8]| {
            let mut v = vec![b'L'; n];
            v.extend_from_slice(tail);
            v
        };
        vec![
            b"a".to_vec(),
            b"b c".to_vec(),
            "ünï".as_bytes().to_vec(),
            b".hidden".to_vec(),
            // Not UTF-8, a control byte and a newline: valid, escaped in the sidecar.
            b"raw\xff\x01\nx".to_vec(),
            long(250, b""),
            // The sidecar of "a", and of the longest name (255 bytes).
            b"a.meta".to_vec(),
            long(250, b".meta"),
            b"x\\y".to_vec(),
            long(251, b""),
            b".meta".to_vec(),
            long(251, b".meta"),
        ]
    })
}

#[derive(Clone, Copy, PartialEq, Eq)]
struct Name(usize);

impl Name {
    fn bytes(self) -> &'static [u8] {
        &pool()[self.0]
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.bytes();
        if b.len() > 40 {
            write!(
                f,
                "\"L\"x{}+{:?}",
                b.iter().take_while(|&&c| c == b'L').count(),
                { String::from_utf8_lossy(&b[b.iter().take_while(|&&c| c == b'L').count()..]) }
            )
        } else {
            write!(f, "{:?}", String::from_utf8_lossy(b))
        }
    }
}

/// Permission bits, shown in octal in a failing sequence.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Mode(u32);

impl fmt::Debug for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0o{:03o}", self.0)
    }
}

/// Where a data operation goes: a name (opened for the one operation) or a held descriptor.
#[derive(Clone, Copy, Debug)]
enum Target {
    Path(Name),
    Slot(usize),
}

/// A size or offset: absolute, or relative to the target's current end (so that shrinks
/// by one byte, appends at the end and reads across it come up often).
#[derive(Clone, Copy, Debug)]
enum At {
    Abs(u32),
    End(i16),
}

impl At {
    fn resolve(self, size: Option<u64>) -> u32 {
        match self {
            At::Abs(n) => n,
            At::End(d) => (size.unwrap_or(0) as i64 + i64::from(d)).clamp(0, 60_000) as u32,
        }
    }
}

#[derive(Clone, Debug)]
enum Op {
    /// open(O_RDWR|O_CREAT, mode), then close.
    Create(Name, Mode),
    /// open(O_RDWR|O_CREAT|O_EXCL, mode), then close.
    CreateExcl(Name, Mode),
    /// open an existing name (read-write or read-only) and hold it in a slot.
    Open(Name, usize, bool),
    Close(usize),
    /// truncate(2) by name or ftruncate(2) on a slot: growth, or a shrink (the sole
    /// holder's; EBUSY while another slot holds the section).
    Truncate(Target, At),
    /// open(O_RDWR|O_TRUNC).
    OpenTrunc(Name),
    /// pwrite at an offset, possibly past the end.
    Write(Target, At, u16, u8),
    Read(Target, At, u16),
    /// mmap(MAP_SHARED) a range inside the section, write it, munmap.
    MapWrite(Target, u32, u16, u8),
    MapRead(Target, u32, u16),
    /// renameat2, with RENAME_NOREPLACE or not.
    Rename(Name, Name, bool),
    Unlink(Name),
    Chmod(Name, Mode),
    Stat(Name),
    /// Read `NAME.meta` and check name=, size=, status=, creator_pid=, io=, commit=.
    ReadMeta(Name),
    List,
}

/// Mostly two names, so that operations meet sections that exist; every kind of name
/// now and then.
fn name() -> impl Strategy<Value = Name> {
    prop_oneof![
        10 => (0usize..2).prop_map(Name),
        3 => (2usize..6).prop_map(Name),
        2 => (0..pool().len()).prop_map(Name),
    ]
}

fn target() -> impl Strategy<Value = Target> {
    prop_oneof![
        2 => name().prop_map(Target::Path),
        1 => (0..SLOTS).prop_map(Target::Slot),
    ]
}

fn mode() -> impl Strategy<Value = Mode> {
    prop::sample::select(&MODES[..]).prop_map(Mode)
}

fn at(abs: u32) -> impl Strategy<Value = At> {
    prop_oneof![
        2 => (0..abs).prop_map(At::Abs),
        2 => (-3i16..=3).prop_map(At::End),
        1 => (-5000i16..5000).prop_map(At::End),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let offset = 0u32..20_000;
    prop_oneof![
        6 => (name(), mode()).prop_map(|(n, m)| Op::Create(n, m)),
        2 => (name(), mode()).prop_map(|(n, m)| Op::CreateExcl(n, m)),
        3 => (name(), 0..SLOTS, any::<bool>()).prop_map(|(n, s, w)| Op::Open(n, s, w)),
        1 => (0..SLOTS).prop_map(Op::Close),
        3 => (target(), at(40_000)).prop_map(|(t, s)| Op::Truncate(t, s)),
        1 => name().prop_map(Op::OpenTrunc),
        5 => (target(), at(20_000), 1u16..5000, any::<u8>())
            .prop_map(|(t, o, l, b)| Op::Write(t, o, l, b)),
        4 => (target(), at(20_000), 1u16..5000).prop_map(|(t, o, l)| Op::Read(t, o, l)),
        3 => (target(), offset.clone(), 1u16..9000, any::<u8>())
            .prop_map(|(t, o, l, b)| Op::MapWrite(t, o, l, b)),
        3 => (target(), offset, 1u16..9000).prop_map(|(t, o, l)| Op::MapRead(t, o, l)),
        3 => (name(), name(), any::<bool>()).prop_map(|(a, b, x)| Op::Rename(a, b, x)),
        2 => name().prop_map(Op::Unlink),
        1 => (name(), mode()).prop_map(|(n, m)| Op::Chmod(n, m)),
        2 => name().prop_map(Op::Stat),
        2 => name().prop_map(Op::ReadMeta),
        1 => Just(Op::List),
    ]
}

/// The bytes a write or a mapped write puts down: varied, so a misplaced byte shows.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| seed.wrapping_add((i as u8).wrapping_mul(31)) ^ (i >> 8) as u8)
        .collect()
}

/// The range of a mapped operation inside a section of `size` bytes (size > 0).
fn map_range(size: u64, offset: u32, len: u16) -> (u64, usize) {
    let off = u64::from(offset) % size;
    let len = u64::from(len).min(size - off).max(1);
    (off, len as usize)
}

// ---------------------------------------------------------------------------------------
// The reference model.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Status {
    Created,
    AlreadyExists,
}

struct Section {
    bytes: Vec<u8>,
    mode: u32,
    /// The answer of the most recent open of this section (all opens here are ours).
    status: Status,
}

/// What a name refers to, as a lookup answers.
enum Found {
    Section(usize),
    Sidecar(usize),
    Absent,
}

#[derive(Default)]
struct Model {
    /// Every section ever made in this case; unlinked ones live on behind descriptors.
    sections: Vec<Section>,
    names: BTreeMap<Vec<u8>, usize>,
    /// Held descriptors: (section, writable).
    slots: [Option<(usize, bool)>; SLOTS],
}

/// The spec's answer, as far as the spec decides it.
#[derive(Debug, PartialEq)]
enum Expect {
    Err(i32),
    Done,
    Bytes(Vec<u8>),
    Stat {
        size: Option<u64>,
        mode: u32,
    },
    Meta {
        name: Vec<u8>,
        size: u64,
        status: Status,
    },
    List(BTreeSet<Vec<u8>>),
    /// Succeeds with content the model does not predict (a sidecar read as a file).
    AnyOk,
}

const NAME_MAX_SPEC: usize = 250;

fn sidecar_stem(name: &[u8]) -> Option<&[u8]> {
    name.strip_suffix(b".meta").filter(|s| !s.is_empty())
}

impl Model {
    /// A lookup: a name longer than 250 bytes is refused unless it is the sidecar of an
    /// existing section; `X.meta` exists exactly when `X` does.
    fn lookup(&self, name: &[u8]) -> Result<Found, i32> {
        if let Some(stem) = sidecar_stem(name) {
            if stem.len() > NAME_MAX_SPEC {
                return Err(libc::ENAMETOOLONG);
            }
            return Ok(match self.names.get(stem) {
                Some(&id) => Found::Sidecar(id),
                None => Found::Absent,
            });
        }
        if name.len() > NAME_MAX_SPEC {
            return Err(libc::ENAMETOOLONG);
        }
        Ok(match self.names.get(name) {
            Some(&id) => Found::Section(id),
            None => Found::Absent,
        })
    }

    /// Why a name cannot be given to a new section, if it cannot.
    fn refuse_new(name: &[u8]) -> Option<i32> {
        if name.len() > NAME_MAX_SPEC {
            Some(libc::ENAMETOOLONG)
        } else if name.contains(&b'\\') || name.ends_with(b".meta") {
            Some(libc::EINVAL)
        } else {
            None
        }
    }

    /// Opens a name that must exist: the section, or an errno. `write` opens of a sidecar
    /// are EACCES; read-only ones succeed and are reported as `Ok(None)`.
    fn open_existing(&mut self, name: &[u8], write: bool) -> Result<Option<usize>, i32> {
        match self.lookup(name)? {
            Found::Absent => Err(libc::ENOENT),
            Found::Sidecar(_) if write => Err(libc::EACCES),
            Found::Sidecar(_) => Ok(None),
            Found::Section(id) => {
                self.sections[id].status = Status::AlreadyExists;
                Ok(Some(id))
            }
        }
    }

    fn create(&mut self, name: &[u8], mode: u32, exclusive: bool) -> Expect {
        match self.lookup(name) {
            Err(e) => Expect::Err(e),
            Ok(Found::Section(_) | Found::Sidecar(_)) if exclusive => Expect::Err(libc::EEXIST),
            Ok(Found::Sidecar(_)) => Expect::Err(libc::EACCES),
            Ok(Found::Section(id)) => {
                self.sections[id].status = Status::AlreadyExists;
                Expect::Done
            }
            Ok(Found::Absent) => match Model::refuse_new(name) {
                Some(e) => Expect::Err(e),
                None => {
                    self.sections.push(Section {
                        bytes: Vec::new(),
                        mode: mode & !UMASK,
                        status: Status::Created,
                    });
                    self.names.insert(name.to_vec(), self.sections.len() - 1);
                    Expect::Done
                }
            },
        }
    }

    /// The section a data operation works on, opening it by name if asked: Ok(None) for
    /// an empty slot or a read-only sidecar, which the operation then skips.
    fn target(&mut self, t: Target, write: bool) -> Result<Option<(usize, bool)>, i32> {
        match t {
            Target::Slot(s) => Ok(self.slots[s]),
            Target::Path(n) => Ok(self.open_existing(n.bytes(), write)?.map(|id| (id, true))),
        }
    }

    /// Whether a held descriptor other than slot `own` is open on section `id`.
    fn held_elsewhere(&self, id: usize, own: Option<usize>) -> bool {
        self.slots
            .iter()
            .enumerate()
            .any(|(s, slot)| Some(s) != own && matches!(slot, Some((i, _)) if *i == id))
    }

    fn size_of(&self, t: Target) -> Option<u64> {
        let id = match t {
            Target::Slot(s) => self.slots[s]?.0,
            Target::Path(n) => match self.lookup(n.bytes()) {
                Ok(Found::Section(id)) => id,
                _ => return None,
            },
        };
        Some(self.sections[id].bytes.len() as u64)
    }

    /// The operation with every relative size or offset made absolute, from the model's
    /// size of its target: the mount then runs exactly what the model predicts for.
    fn concrete(&self, op: &Op) -> Op {
        let abs = |t: Target, at: At| At::Abs(at.resolve(self.size_of(t)));
        match *op {
            Op::Truncate(t, s) => Op::Truncate(t, abs(t, s)),
            Op::Write(t, o, l, b) => Op::Write(t, abs(t, o), l, b),
            Op::Read(t, o, l) => Op::Read(t, abs(t, o), l),
            ref op => op.clone(),
        }
    }

    fn apply(&mut self, op: &Op) -> Expect {
        match *op {
            Op::Create(n, Mode(mode)) => self.create(n.bytes(), mode, false),
            Op::CreateExcl(n, Mode(mode)) => self.create(n.bytes(), mode, true),
            Op::Open(n, slot, write) => {
                self.slots[slot] = None;
                match self.open_existing(n.bytes(), write) {
                    Ok(id) => {
                        self.slots[slot] = id.map(|id| (id, write));
                        Expect::Done
                    }
                    Err(e) => Expect::Err(e),
                }
            }
            Op::Close(slot) => {
                self.slots[slot] = None;
                Expect::Done
            }
            Op::Truncate(t, size) => {
                let size = size.resolve(None);
                let id = match t {
                    Target::Slot(s) => match self.slots[s] {
                        None => return Expect::Done,
                        // ftruncate needs a descriptor open for writing.
                        Some((_, false)) => return Expect::Err(libc::EINVAL),
                        Some((id, true)) => id,
                    },
                    // truncate(2) opens nothing: it changes the status of no one.
                    Target::Path(n) => match self.lookup(n.bytes()) {
                        Err(e) => return Expect::Err(e),
                        Ok(Found::Absent) => return Expect::Err(libc::ENOENT),
                        Ok(Found::Sidecar(_)) => return Expect::Err(libc::EACCES),
                        Ok(Found::Section(id)) => id,
                    },
                };
                // A shrink is the sole holder's: EBUSY while another descriptor is held.
                let own = match t {
                    Target::Slot(s) => Some(s),
                    Target::Path(_) => None,
                };
                if (size as usize) < self.sections[id].bytes.len() && self.held_elsewhere(id, own) {
                    return Expect::Err(libc::EBUSY);
                }
                self.sections[id].bytes.resize(size as usize, 0);
                Expect::Done
            }
            Op::OpenTrunc(n) => match self.lookup(n.bytes()) {
                Err(e) => Expect::Err(e),
                Ok(Found::Absent) => Expect::Err(libc::ENOENT),
                Ok(Found::Sidecar(_)) => Expect::Err(libc::EACCES),
                Ok(Found::Section(id))
                    if !self.sections[id].bytes.is_empty() && self.held_elsewhere(id, None) =>
                {
                    Expect::Err(libc::EBUSY)
                }
                Ok(Found::Section(id)) => {
                    self.sections[id].bytes.clear();
                    self.sections[id].status = Status::AlreadyExists;
                    Expect::Done
                }
            },
            Op::Write(t, off, len, seed) => match self.target(t, true) {
                Err(e) => Expect::Err(e),
                Ok(None) => Expect::Done,
                Ok(Some((_, false))) => Expect::Err(libc::EBADF),
                Ok(Some((id, true))) => {
                    let bytes = &mut self.sections[id].bytes;
                    let (off, data) = (off.resolve(None) as usize, pattern(len as usize, seed));
                    if bytes.len() < off + data.len() {
                        bytes.resize(off + data.len(), 0);
                    }
                    bytes[off..off + data.len()].copy_from_slice(&data);
                    Expect::Done
                }
            },
            Op::Read(t, off, len) => match self.target(t, false) {
                Err(e) => Expect::Err(e),
                Ok(None) if matches!(t, Target::Path(_)) => Expect::AnyOk,
                Ok(None) => Expect::Done,
                Ok(Some((id, _))) => {
                    let bytes = &self.sections[id].bytes;
                    let start = (off.resolve(None) as usize).min(bytes.len());
                    let end = (start + len as usize).min(bytes.len());
                    Expect::Bytes(bytes[start..end].to_vec())
                }
            },
            Op::MapWrite(t, off, len, seed) => match self.target(t, true) {
                Err(e) => Expect::Err(e),
                Ok(None) => Expect::Done,
                Ok(Some((id, _))) if self.sections[id].bytes.is_empty() => Expect::Done,
                // A shared writable mapping needs a descriptor open for writing.
                Ok(Some((_, false))) => Expect::Err(libc::EACCES),
                Ok(Some((id, true))) => {
                    let bytes = &mut self.sections[id].bytes;
                    let (off, len) = map_range(bytes.len() as u64, off, len);
                    let off = off as usize;
                    bytes[off..off + len].copy_from_slice(&pattern(len, seed));
                    Expect::Done
                }
            },
            Op::MapRead(t, off, len) => match self.target(t, false) {
                Err(e) => Expect::Err(e),
                Ok(None) => Expect::Done,
                Ok(Some((id, _))) if self.sections[id].bytes.is_empty() => Expect::Done,
                Ok(Some((id, _))) => {
                    let bytes = &self.sections[id].bytes;
                    let (off, len) = map_range(bytes.len() as u64, off, len);
                    Expect::Bytes(bytes[off as usize..off as usize + len].to_vec())
                }
            },
            Op::Rename(from, to, noreplace) => self.rename(from.bytes(), to.bytes(), noreplace),
            Op::Unlink(n) => match self.lookup(n.bytes()) {
                Err(e) => Expect::Err(e),
                Ok(Found::Absent) => Expect::Err(libc::ENOENT),
                // A sidecar goes with its section, never on its own.
                Ok(Found::Sidecar(_)) => Expect::Err(libc::EPERM),
                Ok(Found::Section(_)) => {
                    self.names.remove(n.bytes());
                    Expect::Done
                }
            },
            Op::Chmod(n, Mode(mode)) => match self.lookup(n.bytes()) {
                Err(e) => Expect::Err(e),
                Ok(Found::Absent) => Expect::Err(libc::ENOENT),
                Ok(Found::Sidecar(_)) => Expect::Err(libc::EACCES),
                Ok(Found::Section(id)) => {
                    self.sections[id].mode = mode;
                    Expect::Done
                }
            },
            Op::Stat(n) => match self.lookup(n.bytes()) {
                Err(e) => Expect::Err(e),
                Ok(Found::Absent) => Expect::Err(libc::ENOENT),
                // A sidecar is readable by whoever may read its section, never writable.
                Ok(Found::Sidecar(id)) => Expect::Stat {
                    size: None,
                    mode: self.sections[id].mode & 0o444,
                },
                Ok(Found::Section(id)) => Expect::Stat {
                    size: Some(self.sections[id].bytes.len() as u64),
                    mode: self.sections[id].mode,
                },
            },
            Op::ReadMeta(n) => {
                let mut side = n.bytes().to_vec();
                side.extend_from_slice(b".meta");
                match self.lookup(&side) {
                    Err(e) => Expect::Err(e),
                    Ok(Found::Absent) => Expect::Err(libc::ENOENT),
                    Ok(Found::Sidecar(id)) => Expect::Meta {
                        name: n.bytes().to_vec(),
                        size: self.sections[id].bytes.len() as u64,
                        status: self.sections[id].status,
                    },
                    // NAME.meta.meta: NAME.meta is never a section.
                    Ok(Found::Section(_)) => unreachable!("a section named *.meta"),
                }
            }
            Op::List => Expect::List(
                self.names
                    .keys()
                    .flat_map(|n| {
                        let mut side = n.clone();
                        side.extend_from_slice(b".meta");
                        [n.clone(), side]
                    })
                    .collect(),
            ),
        }
    }

    /// rename(2): the kernel looks both names up and settles "same file" and NOREPLACE
    /// itself; the rest is the spec's (sidecars stay put, new names follow the rules).
    fn rename(&mut self, from: &[u8], to: &[u8], noreplace: bool) -> Expect {
        let src = match self.lookup(from) {
            Err(e) => return Expect::Err(e),
            Ok(Found::Absent) => return Expect::Err(libc::ENOENT),
            Ok(f) => f,
        };
        let dst = match self.lookup(to) {
            Err(e) => return Expect::Err(e),
            Ok(f) => f,
        };
        match (&src, &dst) {
            (_, Found::Section(_) | Found::Sidecar(_)) if noreplace => {
                return Expect::Err(libc::EEXIST);
            }
            (Found::Section(a), Found::Section(b)) | (Found::Sidecar(a), Found::Sidecar(b))
                if a == b =>
            {
                return Expect::Done;
            }
            // A sidecar goes with its section, never on its own.
            (Found::Sidecar(_), _) => return Expect::Err(libc::EPERM),
            _ => {}
        }
        if let Some(e) = Model::refuse_new(to) {
            return Expect::Err(e);
        }
        let Found::Section(id) = src else {
            unreachable!()
        };
        self.names.remove(from);
        self.names.insert(to.to_vec(), id);
        Expect::Done
    }
}

// ---------------------------------------------------------------------------------------
// The real mount.

/// What the mount answered.
#[derive(Debug)]
enum Got {
    Done,
    Bytes(Vec<u8>),
    Stat { size: u64, mode: u32 },
    Text(Vec<u8>),
    List(BTreeSet<Vec<u8>>),
}

struct Real<'a> {
    mount: &'a Mount,
    slots: [Option<OwnedFd>; SLOTS],
}

fn check(rc: libc::c_int) -> Result<Got, i32> {
    if rc == 0 {
        Ok(Got::Done)
    } else {
        Err(last_errno())
    }
}

fn pread_all(fd: &OwnedFd, off: u64, len: usize) -> Result<Vec<u8>, i32> {
    let mut buf = vec![0u8; len];
    let mut done = 0;
    while done < len {
        // SAFETY: the buffer is valid for len - done bytes from done.
        let n = unsafe {
            libc::pread(
                fd.as_raw_fd(),
                buf[done..].as_mut_ptr().cast(),
                len - done,
                (off + done as u64) as libc::off_t,
            )
        };
        match n {
            0 => break,
            n if n < 0 => return Err(last_errno()),
            n => done += n as usize,
        }
    }
    buf.truncate(done);
    Ok(buf)
}

/// Maps `[off, off + len)` of `fd` shared and either writes `data` into it or reads it.
fn map(fd: &OwnedFd, off: u64, len: usize, data: Option<&[u8]>) -> Result<Got, i32> {
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64;
    let base = off - off % page;
    let span = (off - base) as usize + len;
    let prot = libc::PROT_READ | if data.is_some() { libc::PROT_WRITE } else { 0 };
    // SAFETY: a fresh mapping of a valid fd inside the file's size (the model's size;
    // a wrong size shows as a mismatch, or as SIGBUS failing the test).
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            span,
            prot,
            libc::MAP_SHARED,
            fd.as_raw_fd(),
            base as libc::off_t,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(last_errno());
    }
    let start = (off - base) as usize;
    // SAFETY: p..p+span is mapped; start + len <= span.
    let view = unsafe { std::slice::from_raw_parts_mut(p.cast::<u8>().add(start), len) };
    let got = match data {
        Some(d) => {
            view.copy_from_slice(d);
            Got::Done
        }
        None => Got::Bytes(view.to_vec()),
    };
    // SAFETY: unmapping exactly what was mapped; `view` is not used after this.
    unsafe { libc::munmap(p, span) };
    Ok(got)
}

impl<'a> Real<'a> {
    fn path(&self, name: &[u8]) -> PathBuf {
        self.mount.section(OsStr::from_bytes(name))
    }

    /// Empties the mount, so a case starts from nothing.
    fn clean(&mut self) {
        self.slots = Default::default();
        let dir = std::fs::read_dir(self.mount.path()).expect("list the mount");
        for entry in dir {
            let name = entry.expect("read an entry").file_name();
            if !name.as_bytes().ends_with(b".meta") {
                std::fs::remove_file(self.mount.section(&name))
                    .unwrap_or_else(|e| panic!("clean up {name:?}: {e}"));
            }
        }
    }

    /// The descriptor a data operation uses: a held slot, or a name opened now.
    fn fd(&self, t: Target, flags: i32) -> Result<Option<FdRef<'_>>, i32> {
        match t {
            Target::Slot(s) => Ok(self.slots[s].as_ref().map(FdRef::Held)),
            Target::Path(n) => open(&self.path(n.bytes()), flags, 0).map(|fd| Some(FdRef::Own(fd))),
        }
    }

    /// Runs one operation. `size` is the model's size of a mapped operation's target:
    /// the range to map is chosen inside it.
    fn run(&mut self, op: &Op, size: Option<u64>) -> Result<Got, i32> {
        match *op {
            Op::Create(n, Mode(mode)) => {
                open(&self.path(n.bytes()), libc::O_RDWR | libc::O_CREAT, mode).map(|_| Got::Done)
            }
            Op::CreateExcl(n, Mode(mode)) => {
                let flags = libc::O_RDWR | libc::O_CREAT | libc::O_EXCL;
                open(&self.path(n.bytes()), flags, mode).map(|_| Got::Done)
            }
            Op::Open(n, slot, write) => {
                self.slots[slot] = None;
                let flags = if write { libc::O_RDWR } else { libc::O_RDONLY };
                let fd = open(&self.path(n.bytes()), flags, 0)?;
                // A sidecar opened read-only is not held: only sections are.
                if !n.bytes().ends_with(b".meta") {
                    self.slots[slot] = Some(fd);
                }
                Ok(Got::Done)
            }
            Op::Close(slot) => {
                self.slots[slot] = None;
                Ok(Got::Done)
            }
            Op::Truncate(Target::Path(n), size) => {
                let p = cpath(&self.path(n.bytes()));
                // SAFETY: NUL-terminated path.
                check(unsafe { libc::truncate(p.as_ptr(), size.resolve(None) as libc::off_t) })
            }
            Op::Truncate(Target::Slot(s), size) => match &self.slots[s] {
                None => Ok(Got::Done),
                // SAFETY: valid fd.
                Some(fd) => check(unsafe {
                    libc::ftruncate(fd.as_raw_fd(), size.resolve(None) as libc::off_t)
                }),
            },
            Op::OpenTrunc(n) => {
                open(&self.path(n.bytes()), libc::O_RDWR | libc::O_TRUNC, 0).map(|_| Got::Done)
            }
            Op::Write(t, off, len, seed) => {
                let Some(fd) = self.fd(t, libc::O_WRONLY)? else {
                    return Ok(Got::Done);
                };
                let data = pattern(len as usize, seed);
                // SAFETY: the buffer is valid for its length.
                let n = unsafe {
                    libc::pwrite(
                        fd.raw(),
                        data.as_ptr().cast(),
                        data.len(),
                        off.resolve(None) as libc::off_t,
                    )
                };
                match n {
                    n if n < 0 => Err(last_errno()),
                    n if n as usize == data.len() => Ok(Got::Done),
                    n => panic!("short write: {n} of {} bytes", data.len()),
                }
            }
            Op::Read(t, off, len) => match self.fd(t, libc::O_RDONLY)? {
                None => Ok(Got::Done),
                Some(fd) => {
                    pread_all(fd.get(), u64::from(off.resolve(None)), len as usize).map(Got::Bytes)
                }
            },
            Op::MapWrite(t, off, len, seed) => {
                let Some(fd) = self.fd(t, libc::O_RDWR)? else {
                    return Ok(Got::Done);
                };
                match size {
                    None | Some(0) => Ok(Got::Done),
                    Some(size) => {
                        let (off, len) = map_range(size, off, len);
                        map(fd.get(), off, len, Some(&pattern(len, seed)))
                    }
                }
            }
            Op::MapRead(t, off, len) => {
                let flags = match t {
                    Target::Path(_) => libc::O_RDONLY,
                    Target::Slot(_) => 0,
                };
                let Some(fd) = self.fd(t, flags)? else {
                    return Ok(Got::Done);
                };
                match size {
                    None | Some(0) => Ok(Got::Done),
                    Some(size) => {
                        let (off, len) = map_range(size, off, len);
                        map(fd.get(), off, len, None)
                    }
                }
            }
            Op::Rename(from, to, noreplace) => {
                let (a, b) = (
                    cpath(&self.path(from.bytes())),
                    cpath(&self.path(to.bytes())),
                );
                let flags = if noreplace { libc::RENAME_NOREPLACE } else { 0 };
                // SAFETY: NUL-terminated paths.
                check(unsafe {
                    libc::renameat2(
                        libc::AT_FDCWD,
                        a.as_ptr(),
                        libc::AT_FDCWD,
                        b.as_ptr(),
                        flags,
                    )
                })
            }
            Op::Unlink(n) => {
                let p = cpath(&self.path(n.bytes()));
                // SAFETY: NUL-terminated path.
                check(unsafe { libc::unlink(p.as_ptr()) })
            }
            Op::Chmod(n, Mode(mode)) => {
                let p = cpath(&self.path(n.bytes()));
                // SAFETY: NUL-terminated path.
                check(unsafe { libc::chmod(p.as_ptr(), mode) })
            }
            Op::Stat(n) => {
                let p = cpath(&self.path(n.bytes()));
                // SAFETY: zeroed stat is a valid out-buffer; NUL-terminated path.
                let mut st: libc::stat = unsafe { std::mem::zeroed() };
                if unsafe { libc::stat(p.as_ptr(), &mut st) } != 0 {
                    return Err(last_errno());
                }
                assert_eq!(
                    st.st_mode & libc::S_IFMT,
                    libc::S_IFREG,
                    "not a regular file"
                );
                Ok(Got::Stat {
                    size: st.st_size as u64,
                    mode: st.st_mode & 0o7777,
                })
            }
            Op::ReadMeta(n) => {
                let mut side = n.bytes().to_vec();
                side.extend_from_slice(b".meta");
                let fd = open(&self.path(&side), libc::O_RDONLY, 0)?;
                pread_all(&fd, 0, 64 * 1024).map(Got::Text)
            }
            Op::List => {
                let dir = std::fs::read_dir(self.mount.path())
                    .map_err(|e| e.raw_os_error().unwrap_or(-1))?;
                let mut names = BTreeSet::new();
                for e in dir {
                    let e = e.map_err(|e| e.raw_os_error().unwrap_or(-1))?;
                    names.insert(e.file_name().as_bytes().to_vec());
                }
                Ok(Got::List(names))
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// The model itself, without a mount.

/// The daemon's model (`sectionfs::daemon::Sections`) driven directly, with the kernel's
/// part played here as the mount test meets it: LOOKUP before every path operation (and
/// ENAMETOOLONG past 255 bytes before it), O_EXCL on an existing name, the access mode of a
/// held descriptor (EBADF, EINVAL, EACCES), rename's "same file" and NOREPLACE, and a
/// mapped range read or written through the handle. The caller is this process as root,
/// whom the mount's `default_permissions` lets through.
struct Direct {
    sections: Sections,
    /// (handle, inode, opened for writing)
    slots: [Option<(u64, u64, bool)>; SLOTS],
    _store: tempfile::TempDir,
}

/// The kernel's own limit on a name (NAME_MAX).
const KERNEL_NAME_MAX: usize = 255;

impl Direct {
    fn new() -> Direct {
        let dir = tempfile::Builder::new()
            .prefix("sectionfs-model-")
            .tempdir()
            .expect("a temp dir for the store");
        let store = Store::open(&dir.path().join("store")).expect("open a store");
        let options = Options {
            commit: Commit::Eager,
            owner: (0, 0),
            user_quota: None,
            lifetime: Lifetime::Persistent,
        };
        let sections = Sections::load(store, options).expect("load an empty store");
        // What the sidecars say: this driver serves data as the cached mode does.
        sections.set_io(IoMode::Cached);
        Direct {
            sections,
            slots: Default::default(),
            _store: dir,
        }
    }

    fn caller() -> Caller {
        Caller {
            uid: 0,
            gid: 0,
            pid: std::process::id(),
        }
    }

    /// The kernel's LOOKUP of a name at the root: its inode, or an errno.
    fn lookup(&self, name: &[u8]) -> Result<u64, i32> {
        if name.len() > KERNEL_NAME_MAX {
            return Err(libc::ENAMETOOLONG);
        }
        self.sections
            .lookup(Direct::caller(), OsStr::from_bytes(name))
            .map(|a| a.ino)
            .map_err(|e| e.errno())
    }

    /// open(2) of a name: LOOKUP, then OPEN (of a section or a sidecar), or CREATE if
    /// absent and O_CREAT is asked. Returns (handle, inode).
    fn open(&self, name: &[u8], flags: i32, mode: u32) -> Result<(u64, u64), i32> {
        let caller = Direct::caller();
        match self.lookup(name) {
            Ok(_) if flags & libc::O_CREAT != 0 && flags & libc::O_EXCL != 0 => Err(libc::EEXIST),
            Ok(ino) if is_sidecar(ino) => self
                .sections
                .open_sidecar(caller, ino, flags & !libc::O_CREAT)
                .map(|fh| (fh, ino))
                .map_err(|e| e.errno()),
            Ok(ino) => self
                .sections
                .open(caller, ino, flags & !(libc::O_CREAT | libc::O_EXCL))
                .map(|o| (o.fh, ino))
                .map_err(|e| e.errno()),
            Err(libc::ENOENT) if flags & libc::O_CREAT != 0 => self
                .sections
                .create(caller, OsStr::from_bytes(name), mode, UMASK, flags)
                .map(|(attr, o)| (o.fh, attr.ino))
                .map_err(|e| e.errno()),
            Err(e) => Err(e),
        }
    }

    fn release(&self, fh: u64) {
        self.sections.release(fh).expect("release a handle");
    }

    fn read(&self, fh: u64, off: u64, len: usize) -> Result<Vec<u8>, i32> {
        self.sections
            .read(fh, off, len as u32)
            .map_err(|e| e.errno())
    }

    fn write(&self, fh: u64, off: u64, data: &[u8]) -> Result<Got, i32> {
        match self.sections.write(fh, off, data) {
            Ok(n) if n as usize == data.len() => Ok(Got::Done),
            Ok(n) => panic!("short write: {n} of {} bytes", data.len()),
            Err(e) => Err(e.errno()),
        }
    }

    fn set_attr(&self, ino: u64, fh: Option<u64>, change: AttrChange) -> Result<Got, i32> {
        self.sections
            .set_attr(Direct::caller(), ino, fh, change)
            .map(|_| Got::Done)
            .map_err(|e| e.errno())
    }

    /// The handle a data operation uses: (handle, inode, writable, opened here).
    fn handle(&self, t: Target, flags: i32) -> Result<Option<(u64, u64, bool, bool)>, i32> {
        match t {
            Target::Slot(s) => Ok(self.slots[s].map(|(fh, ino, w)| (fh, ino, w, false))),
            Target::Path(n) => {
                let (fh, ino) = self.open(n.bytes(), flags, 0)?;
                Ok(Some((
                    fh,
                    ino,
                    flags & libc::O_ACCMODE != libc::O_RDONLY,
                    true,
                )))
            }
        }
    }

    /// Runs `f` on the handle of `t`, releasing it after if it was opened for this.
    fn with_handle(
        &self,
        t: Target,
        flags: i32,
        f: impl FnOnce(u64, u64, bool) -> Result<Got, i32>,
    ) -> Result<Got, i32> {
        match self.handle(t, flags)? {
            None => Ok(Got::Done),
            Some((fh, ino, writable, own)) => {
                let r = f(fh, ino, writable);
                if own {
                    self.release(fh);
                }
                r
            }
        }
    }

    fn list(&self) -> BTreeSet<Vec<u8>> {
        let fh = self.sections.open_dir();
        let mut names = BTreeSet::new();
        let mut offset = 0;
        loop {
            let entries = self.sections.read_dir(fh, offset).expect("read the root");
            let Some(&(_, _, _, next)) = entries.last() else {
                break;
            };
            for (_, _, name, _) in entries {
                if name != "." && name != ".." {
                    names.insert(name.as_bytes().to_vec());
                }
            }
            offset = next;
        }
        self.sections.release_dir(fh);
        names
    }

    fn close_slot(&mut self, slot: usize) {
        if let Some((fh, _, _)) = self.slots[slot].take() {
            self.release(fh);
        }
    }
}

impl System for Direct {
    fn clean(&mut self) {
        for slot in 0..SLOTS {
            self.close_slot(slot);
        }
        for name in self.list() {
            if !name.ends_with(b".meta") {
                self.sections
                    .unlink(OsStr::from_bytes(&name))
                    .unwrap_or_else(|e| panic!("clean up {name:?}: {e}"));
            }
        }
    }

    fn end_case(&mut self) {
        for slot in 0..SLOTS {
            self.close_slot(slot);
        }
    }

    fn read_all(&mut self, name: &[u8]) -> Result<Vec<u8>, String> {
        let (fh, _) = self
            .open(name, libc::O_RDONLY, 0)
            .map_err(|e| format!("open: errno {e}"))?;
        let mut data = Vec::new();
        loop {
            let chunk = self.read(fh, data.len() as u64, 1 << 20);
            match chunk {
                Ok(c) if c.is_empty() => break,
                Ok(c) => data.extend_from_slice(&c),
                Err(e) => {
                    self.release(fh);
                    return Err(format!("read: errno {e}"));
                }
            }
        }
        self.release(fh);
        Ok(data)
    }

    fn run(&mut self, op: &Op, size: Option<u64>) -> Result<Got, i32> {
        match *op {
            Op::Create(n, Mode(mode)) => {
                let (fh, _) = self.open(n.bytes(), libc::O_RDWR | libc::O_CREAT, mode)?;
                self.release(fh);
                Ok(Got::Done)
            }
            Op::CreateExcl(n, Mode(mode)) => {
                let flags = libc::O_RDWR | libc::O_CREAT | libc::O_EXCL;
                let (fh, _) = self.open(n.bytes(), flags, mode)?;
                self.release(fh);
                Ok(Got::Done)
            }
            Op::Open(n, slot, write) => {
                self.close_slot(slot);
                let flags = if write { libc::O_RDWR } else { libc::O_RDONLY };
                let (fh, ino) = self.open(n.bytes(), flags, 0)?;
                // A sidecar opened read-only is not held: only sections are.
                if is_sidecar(ino) {
                    self.release(fh);
                } else {
                    self.slots[slot] = Some((fh, ino, write));
                }
                Ok(Got::Done)
            }
            Op::Close(slot) => {
                self.close_slot(slot);
                Ok(Got::Done)
            }
            Op::Truncate(Target::Path(n), size) => {
                let ino = self.lookup(n.bytes())?;
                let size = Some(u64::from(size.resolve(None)));
                self.set_attr(
                    ino,
                    None,
                    AttrChange {
                        size,
                        ..Default::default()
                    },
                )
            }
            Op::Truncate(Target::Slot(s), size) => match self.slots[s] {
                None => Ok(Got::Done),
                // The kernel refuses ftruncate through a read-only descriptor.
                Some((_, _, false)) => Err(libc::EINVAL),
                Some((fh, ino, true)) => {
                    let size = Some(u64::from(size.resolve(None)));
                    self.set_attr(
                        ino,
                        Some(fh),
                        AttrChange {
                            size,
                            ..Default::default()
                        },
                    )
                }
            },
            Op::OpenTrunc(n) => {
                let (fh, _) = self.open(n.bytes(), libc::O_RDWR | libc::O_TRUNC, 0)?;
                self.release(fh);
                Ok(Got::Done)
            }
            Op::Write(t, off, len, seed) => {
                self.with_handle(t, libc::O_WRONLY, |fh, _, writable| {
                    if !writable {
                        // The kernel's answer to write(2) on a read-only descriptor.
                        return Err(libc::EBADF);
                    }
                    self.write(
                        fh,
                        u64::from(off.resolve(None)),
                        &pattern(len as usize, seed),
                    )
                })
            }
            Op::Read(t, off, len) => self.with_handle(t, libc::O_RDONLY, |fh, _, _| {
                self.read(fh, u64::from(off.resolve(None)), len as usize)
                    .map(Got::Bytes)
            }),
            Op::MapWrite(t, off, len, seed) => self.with_handle(t, libc::O_RDWR, |fh, _, w| {
                match size {
                    None | Some(0) => Ok(Got::Done),
                    // mmap(PROT_WRITE, MAP_SHARED) needs a descriptor open for writing.
                    Some(_) if !w => Err(libc::EACCES),
                    Some(size) => {
                        let (off, len) = map_range(size, off, len);
                        self.write(fh, off, &pattern(len, seed))
                    }
                }
            }),
            Op::MapRead(t, off, len) => {
                self.with_handle(t, libc::O_RDONLY, |fh, _, _| match size {
                    None | Some(0) => Ok(Got::Done),
                    Some(size) => {
                        let (off, len) = map_range(size, off, len);
                        self.read(fh, off, len).map(Got::Bytes)
                    }
                })
            }
            Op::Rename(from, to, noreplace) => {
                // The kernel looks both names up, then settles NOREPLACE and "same file".
                let src = self.lookup(from.bytes())?;
                let dst = match self.lookup(to.bytes()) {
                    Ok(ino) => Some(ino),
                    Err(libc::ENOENT) => None,
                    Err(e) => return Err(e),
                };
                if noreplace && dst.is_some() {
                    return Err(libc::EEXIST);
                }
                if dst == Some(src) {
                    return Ok(Got::Done);
                }
                self.sections
                    .rename(
                        OsStr::from_bytes(from.bytes()),
                        OsStr::from_bytes(to.bytes()),
                        noreplace,
                    )
                    .map(|()| Got::Done)
                    .map_err(|e| e.errno())
            }
            Op::Unlink(n) => {
                self.lookup(n.bytes())?;
                self.sections
                    .unlink(OsStr::from_bytes(n.bytes()))
                    .map(|()| Got::Done)
                    .map_err(|e| e.errno())
            }
            Op::Chmod(n, Mode(mode)) => {
                let ino = self.lookup(n.bytes())?;
                self.set_attr(
                    ino,
                    None,
                    AttrChange {
                        mode: Some(mode),
                        ..Default::default()
                    },
                )
            }
            Op::Stat(n) => {
                let ino = self.lookup(n.bytes())?;
                let attr = self
                    .sections
                    .attr(Direct::caller(), ino)
                    .map_err(|e| e.errno())?;
                assert_eq!(attr.kind, Kind::File, "not a regular file");
                Ok(Got::Stat {
                    size: attr.size,
                    mode: u32::from(attr.perm),
                })
            }
            Op::ReadMeta(n) => {
                let mut side = n.bytes().to_vec();
                side.extend_from_slice(b".meta");
                let (fh, _) = self.open(&side, libc::O_RDONLY, 0)?;
                let text = self.read(fh, 0, 64 * 1024);
                self.release(fh);
                text.map(Got::Text)
            }
            Op::List => Ok(Got::List(self.list())),
        }
    }
}

/// What a sequence runs on: the real mount, or the model without one.
trait System {
    /// Empties it, so a case starts from nothing.
    fn clean(&mut self);
    /// Closes what a case left open.
    fn end_case(&mut self);
    /// A section's bytes, for the final comparison.
    fn read_all(&mut self, name: &[u8]) -> Result<Vec<u8>, String>;
    /// Runs one operation. `size` is the model's size of a mapped operation's target:
    /// the range to map is chosen inside it.
    fn run(&mut self, op: &Op, size: Option<u64>) -> Result<Got, i32>;
}

impl System for Real<'_> {
    fn clean(&mut self) {
        Real::clean(self)
    }

    fn end_case(&mut self) {
        self.slots = Default::default();
    }

    fn read_all(&mut self, name: &[u8]) -> Result<Vec<u8>, String> {
        std::fs::read(self.path(name)).map_err(|e| e.to_string())
    }

    fn run(&mut self, op: &Op, size: Option<u64>) -> Result<Got, i32> {
        Real::run(self, op, size)
    }
}

enum FdRef<'a> {
    Held(&'a OwnedFd),
    Own(OwnedFd),
}

impl FdRef<'_> {
    fn get(&self) -> &OwnedFd {
        match self {
            FdRef::Held(fd) => fd,
            FdRef::Own(fd) => fd,
        }
    }

    fn raw(&self) -> i32 {
        self.get().as_raw_fd()
    }
}

/// The sidecar escaping the spec describes: `\\`, `\n`, `\xNN` for other control bytes
/// (and, so the line stays text, for bytes that are not UTF-8).
fn spec_escape(name: &[u8]) -> String {
    let mut out = String::new();
    for chunk in name.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                    out.push_str(&format!("\\x{:02x}", c as u32))
                }
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

fn compare(expect: &Expect, got: &Result<Got, i32>, io: &str) -> Result<(), String> {
    let meta_fields = |text: &[u8]| -> BTreeMap<String, String> {
        String::from_utf8_lossy(text)
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let ok = match (expect, got) {
        (Expect::Err(e), Err(g)) => e == g,
        (Expect::Done, Ok(Got::Done)) => true,
        (Expect::AnyOk, Ok(_)) => true,
        (Expect::Bytes(e), Ok(Got::Bytes(g))) => e == g,
        (Expect::Stat { size, mode }, Ok(Got::Stat { size: gs, mode: gm })) => {
            size.is_none_or(|s| s == *gs) && mode == gm
        }
        (Expect::List(e), Ok(Got::List(g))) => e == g,
        (Expect::Meta { name, size, status }, Ok(Got::Text(text))) => {
            let f = meta_fields(text);
            let status = match status {
                Status::Created => "created",
                Status::AlreadyExists => "already_exists",
            };
            let want = [
                ("name", spec_escape(name)),
                ("size", size.to_string()),
                ("status", status.to_string()),
                ("creator_pid", std::process::id().to_string()),
                ("io", io.to_string()),
                ("commit", "eager".to_string()),
            ];
            let bad: Vec<_> = want.iter().filter(|(k, v)| f.get(*k) != Some(v)).collect();
            if !bad.is_empty() {
                return Err(format!(
                    "sidecar fields differ: want {bad:?}\n--- sidecar ---\n{}",
                    String::from_utf8_lossy(text)
                ));
            }
            true
        }
        _ => false,
    };
    if ok {
        return Ok(());
    }
    let show = |r: &Result<Got, i32>| match r {
        Err(e) => format!("errno {e} ({})", std::io::Error::from_raw_os_error(*e)),
        Ok(Got::Bytes(b)) if b.len() > 64 => format!("{} bytes", b.len()),
        Ok(g) => format!("{g:?}"),
    };
    let want = match expect {
        Expect::Err(e) => format!("errno {e} ({})", std::io::Error::from_raw_os_error(*e)),
        Expect::Bytes(b) if b.len() > 64 => format!("{} bytes", b.len()),
        e => format!("{e:?}"),
    };
    Err(format!("expected {want}, got {}", show(got)))
}

/// Runs one sequence on a system (the mount, or the model without one) and the reference
/// model; the first disagreement fails it.
fn run_case(sys: &mut dyn System, io: &str, ops: &[Op]) -> Result<(), TestCaseError> {
    sys.clean();
    let mut model = Model::default();
    for (i, op) in ops.iter().enumerate() {
        let op = &model.concrete(op);
        let size = match op {
            Op::MapWrite(t, ..) | Op::MapRead(t, ..) => model.size_of(*t),
            _ => None,
        };
        let expect = model.apply(op);
        let got = sys.run(op, size);
        if let Err(why) = compare(&expect, &got, io) {
            return Err(TestCaseError::fail(format!("op {i} {op:?}: {why}")));
        }
    }
    // Whatever happened, the whole namespace and every byte must still agree.
    let listing = model.apply(&Op::List);
    if let Err(why) = compare(&listing, &sys.run(&Op::List, None), io) {
        return Err(TestCaseError::fail(format!("final listing: {why}")));
    }
    for (name, &id) in &model.names {
        let data = sys
            .read_all(name)
            .map_err(|e| TestCaseError::fail(format!("final read of {name:?}: {e}")))?;
        if data != model.sections[id].bytes {
            return Err(TestCaseError::fail(format!(
                "final bytes of {:?} differ ({} bytes, model {})",
                String::from_utf8_lossy(name),
                data.len(),
                model.sections[id].bytes.len()
            )));
        }
    }
    sys.end_case();
    Ok(())
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_CASES)
}

/// Random sequences on `sys`; panics with the shrunk sequence on a disagreement.
fn run_random(what: &str, sys: &mut dyn System, io: &str, cases: u32) {
    let config = Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let sys = RefCell::new(sys);
    let result = runner.run(&prop::collection::vec(op(), 1..=MAX_OPS), |ops| {
        run_case(*sys.borrow_mut(), io, &ops)
    });
    match result {
        Ok(()) => {}
        Err(TestError::Fail(why, ops)) => panic!(
            "{what}: disagrees with the reference model.\n{why}\nminimal sequence (keep it \
             as a named test with `replay`):\n{ops:#?}"
        ),
        Err(e) => panic!("{what}: {e}"),
    }
}

/// The model without a mount: many more cases than the mount runs, in less time.
#[test]
fn the_model_itself_agrees_with_the_reference() {
    // SAFETY: umask has no preconditions. Every test in this module sets the same value.
    unsafe { libc::umask(UMASK as libc::mode_t) };
    run_random(
        "the model (no mount)",
        &mut Direct::new(),
        "cached",
        cases() * 4,
    );
}

/// One fixed sequence (a shrunk failure kept as a regression test) on the model without a
/// mount and through a mount in each data mode.
fn replay(ops: &[Op]) {
    // SAFETY: as above.
    unsafe { libc::umask(UMASK as libc::mode_t) };
    if let Err(why) = run_case(&mut Direct::new(), "cached", ops) {
        panic!("the model (no mount): {why}");
    }
    common::each_mode(false, |opts| {
        let mount = Mount::new(opts);
        let mut real = Real {
            mount: &mount,
            slots: Default::default(),
        };
        if let Err(why) = run_case(&mut real, common::io_of(opts), ops) {
            panic!("{opts}: {why}");
        }
        drop(real);
        mount.unmount();
    });
}

fn check_mode(opts: &str) {
    // SAFETY: umask has no preconditions. Every test in this module sets the same value.
    unsafe { libc::umask(UMASK as libc::mode_t) };
    let mount = Mount::new(opts);
    let mut real = Real {
        mount: &mount,
        slots: Default::default(),
    };
    run_random(opts, &mut real, common::io_of(opts), cases());
    drop(real);
    assert!(
        !mount.log().contains("panicked"),
        "the daemon panicked:\n{}",
        mount.log()
    );
    mount.unmount();
}

mount_test! {
    fn passthrough_agrees_with_the_model() {
        check_mode(common::modes()[0]);
    }
}

mount_test! {
    fn cached_agrees_with_the_model() {
        check_mode(common::modes()[1]);
    }
}

// ---------------------------------------------------------------------------------------
// Shrunk sequences, kept: each runs on the model without a mount and through a mount in
// each data mode. Add a failure's minimal sequence here under a name saying what broke.

/// `"a"`, and `Name(6)` is its sidecar `"a.meta"` (see `pool`).
const A: Name = Name(0);

/// A deliberately broken shrink check shrank to this: a shrink while another descriptor
/// holds the section is EBUSY and changes nothing.
#[test]
fn regression_shrink_while_another_descriptor_holds_it_is_ebusy() {
    replay(&[
        Op::Create(A, Mode(0o644)),
        Op::Truncate(Target::Path(A), At::Abs(100)),
        Op::Open(A, 0, true),
        Op::Truncate(Target::Path(A), At::End(-1)),
        Op::Close(0),
        Op::Truncate(Target::Path(A), At::End(-1)),
    ]);
}

/// A deliberately broken status update shrank to this: the second open-or-create of a
/// name finds it there, and the sidecar says so.
#[test]
fn regression_the_second_create_reports_already_exists() {
    replay(&[
        Op::Create(A, Mode(0o600)),
        Op::ReadMeta(A),
        Op::Create(A, Mode(0o600)),
        Op::ReadMeta(A),
    ]);
}

/// A section renamed onto a sidecar's name (its own) is refused; both names stay.
#[test]
fn regression_rename_onto_a_sidecar_name_is_refused() {
    replay(&[
        Op::Create(A, Mode(0o644)),
        Op::Rename(A, Name(6), false),
        Op::Rename(A, Name(6), true),
        Op::List,
    ]);
}
