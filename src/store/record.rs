//! A section's record: what the store keeps about it besides its bytes (name, owner,
//! mode, creation facts, lifetime, the file it is over, its namespace), as text in the
//! xattr `user.sectionfs.record` of its backing file.

use crate::contract::{Commit, Lifetime};
use crate::error::Result;
use crate::name;
use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The xattr on each backing file that holds its [`Record`].
const RECORD_XATTR: &[u8] = b"user.sectionfs.record\0";
/// First line of every record; the number is the format version.
const RECORD_MAGIC: &str = "sectionfs-record 1";
/// A section whose bytes live in a file outside the store (made by `ln -s /path NAME`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileBacking {
    /// Absolute, as the creator gave it; reopened by this path after a restart.
    pub path: PathBuf,
    /// False when the creator could only read the file: the section is read-only.
    pub writable: bool,
}

/// What the store keeps about a section besides its bytes and size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub name: OsString,
    pub uid: u32,
    pub gid: u32,
    /// Permission bits only (07777).
    pub mode: u32,
    pub creator_pid: u32,
    pub created_at: SystemTime,
    pub commit: Commit,
    /// Order of the last create or rename that gave this record its name. If a crash
    /// interrupts a rename over an existing section, two records claim one name: the higher
    /// `seq` is the rename's result, the lower one the section it replaced.
    pub seq: u64,
    /// Written only when not `Persistent`, so older daemons (which ignore unknown keys)
    /// read every record; a record without it is persistent.
    pub lifetime: Lifetime,
    /// Set for a section over an existing file: its store file is then an empty
    /// placeholder that carries this record. Written only when set.
    pub backing: Option<FileBacking>,
    /// The per-user namespace (`Local`) the name is in: `Some(uid)`; `None` is the global
    /// one (the root). Written only when set.
    pub namespace: Option<u32>,
}

impl Record {
    pub fn encode(&self) -> String {
        let t = self
            .created_at
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let mut text = format!(
            "{RECORD_MAGIC}\nname={}\nuid={}\ngid={}\nmode={:o}\ncreator_pid={}\n\
             created_at={}.{:09}\ncommit={}\nseq={}\n",
            name::escape(&self.name),
            self.uid,
            self.gid,
            self.mode,
            self.creator_pid,
            t.as_secs(),
            t.subsec_nanos(),
            self.commit.as_str(),
            self.seq
        );
        if self.lifetime != Lifetime::Persistent {
            text.push_str(&format!("lifetime={}\n", self.lifetime.as_str()));
        }
        if let Some(uid) = self.namespace {
            text.push_str(&format!("ns=uid:{uid}\n"));
        }
        if let Some(b) = &self.backing {
            let access = if b.writable { "rw" } else { "ro" };
            text.push_str(&format!(
                "backing=file:{}\nbacking_access={access}\n",
                name::escape(b.path.as_os_str())
            ));
        }
        text
    }

    /// Parses a record; `Err` says what is wrong with it. Unknown keys are ignored so that
    /// a newer daemon's records still load.
    pub fn decode(bytes: &[u8]) -> std::result::Result<Record, String> {
        let text = std::str::from_utf8(bytes).map_err(|_| "record is not UTF-8".to_string())?;
        let mut lines = text.lines();
        if lines.next() != Some(RECORD_MAGIC) {
            return Err("record has no sectionfs header".into());
        }
        let (mut name, mut uid, mut gid, mut mode, mut pid, mut created, mut commit, mut seq) =
            (None, None, None, None, None, None, None, None);
        let mut lifetime = Lifetime::Persistent;
        let (mut backing, mut access) = (None, None);
        let mut namespace = None;
        for line in lines {
            let Some((k, v)) = line.split_once('=') else {
                return Err(format!("record line without '=': {line:?}"));
            };
            let bad = || format!("bad value for {k}: {v:?}");
            match k {
                "name" => name = Some(name::unescape(v).ok_or_else(bad)?),
                "uid" => uid = Some(v.parse().map_err(|_| bad())?),
                "gid" => gid = Some(v.parse().map_err(|_| bad())?),
                "mode" => mode = Some(u32::from_str_radix(v, 8).map_err(|_| bad())? & 0o7777),
                "creator_pid" => pid = Some(v.parse().map_err(|_| bad())?),
                "created_at" => created = Some(parse_time(v).ok_or_else(bad)?),
                "commit" => commit = Some(Commit::parse(v).ok_or_else(bad)?),
                "seq" => seq = Some(v.parse().map_err(|_| bad())?),
                "lifetime" => lifetime = Lifetime::parse(v).ok_or_else(bad)?,
                "ns" => {
                    let uid = v.strip_prefix("uid:").and_then(|u| u.parse().ok());
                    namespace = Some(uid.ok_or_else(bad)?);
                }
                "backing" => {
                    let path = v
                        .strip_prefix("file:")
                        .and_then(name::unescape)
                        .map(PathBuf::from)
                        .filter(|p| p.is_absolute())
                        .ok_or_else(bad)?;
                    backing = Some(path);
                }
                "backing_access" => {
                    access = Some(match v {
                        "rw" => true,
                        "ro" => false,
                        _ => return Err(bad()),
                    })
                }
                _ => {}
            }
        }
        let missing = |k: &str| format!("record lacks {k}");
        let name = name.ok_or_else(|| missing("name"))?;
        name::validate(&name).map_err(|e| format!("record holds a bad name: {e}"))?;
        Ok(Record {
            name,
            uid: uid.ok_or_else(|| missing("uid"))?,
            gid: gid.ok_or_else(|| missing("gid"))?,
            mode: mode.ok_or_else(|| missing("mode"))?,
            creator_pid: pid.ok_or_else(|| missing("creator_pid"))?,
            created_at: created.ok_or_else(|| missing("created_at"))?,
            commit: commit.ok_or_else(|| missing("commit"))?,
            seq: seq.ok_or_else(|| missing("seq"))?,
            lifetime,
            backing: match (backing, access) {
                (Some(path), Some(writable)) => Some(FileBacking { path, writable }),
                (None, None) => None,
                _ => return Err("record has backing without backing_access, or the reverse".into()),
            },
            namespace,
        })
    }
}

fn parse_time(v: &str) -> Option<SystemTime> {
    let (s, n) = v.split_once('.')?;
    let (s, n): (u64, u32) = (s.parse().ok()?, n.parse().ok()?);
    if n >= 1_000_000_000 {
        return None;
    }
    UNIX_EPOCH.checked_add(Duration::new(s, n))
}

/// Reads the record of an open backing file; `Err` says what is wrong (for the scan's log).
pub(super) fn read(file: &File) -> std::result::Result<Record, String> {
    let mut buf = vec![0u8; 4096];
    // SAFETY: the buffer is valid for its length; the name is NUL-terminated.
    let n = unsafe {
        libc::fgetxattr(
            file.as_raw_fd(),
            RECORD_XATTR.as_ptr().cast(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n < 0 {
        let e = io::Error::last_os_error();
        return Err(if e.raw_os_error() == Some(libc::ENODATA) {
            "backing file without a record".into()
        } else {
            format!("cannot read its record: {e}")
        });
    }
    buf.truncate(n as usize);
    Record::decode(&buf)
}

/// Replaces the record of an open backing file. Atomic: one setxattr.
pub(super) fn write(file: &File, record: &Record) -> Result<()> {
    Ok(set_xattr(file, record.encode().as_bytes())?)
}

/// Sets the record xattr to `value` (also the store's probe for user xattrs). No wrapper
/// crate here has xattrs: a raw call.
pub(super) fn set_xattr(file: &File, value: &[u8]) -> io::Result<()> {
    // SAFETY: valid fd, NUL-terminated name, buffer valid for its length.
    let rc = unsafe {
        libc::fsetxattr(
            file.as_raw_fd(),
            RECORD_XATTR.as_ptr().cast(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
pub(super) fn sample(name: &str, seq: u64) -> Record {
    Record {
        name: name.into(),
        uid: 1000,
        gid: 100,
        mode: 0o640,
        creator_pid: 42,
        created_at: UNIX_EPOCH + Duration::new(1_700_000_000, 5),
        commit: Commit::Lazy,
        seq,
        lifetime: Lifetime::Persistent,
        backing: None,
        namespace: None,
    }
}

#[cfg(test)]
mod tests {
    use super::sample as record;
    use super::*;

    #[test]
    fn record_round_trips() {
        let r = record("we\nird name\x01 ü", 7);
        assert_eq!(Record::decode(r.encode().as_bytes()), Ok(r));
        // A persistent record reads as it did before lifetimes existed.
        assert!(!record("p", 1).encode().contains("lifetime"));
        let h = Record {
            lifetime: Lifetime::Handles,
            ..record("h", 2)
        };
        assert!(h.encode().contains("lifetime=handles\n"));
        assert_eq!(Record::decode(h.encode().as_bytes()), Ok(h));
        let f = Record {
            backing: Some(FileBacking {
                path: "/srv/data\nfile".into(),
                writable: false,
            }),
            ..record("f", 3)
        };
        let text = f.encode();
        assert!(text.contains("backing=file:/srv/data\\nfile\nbacking_access=ro\n"));
        assert_eq!(Record::decode(text.as_bytes()), Ok(f));
        let local = Record {
            namespace: Some(1000),
            ..record("l", 4)
        };
        assert!(local.encode().contains("ns=uid:1000\n"));
        assert_eq!(Record::decode(local.encode().as_bytes()), Ok(local));
        let relative = text.replace("file:/srv", "file:srv");
        assert!(Record::decode(relative.as_bytes()).is_err());
    }

    #[test]
    fn record_refuses_damage() {
        let good = record("x", 1).encode();
        assert!(Record::decode(&good.as_bytes()[..good.len() / 2]).is_err());
        assert!(Record::decode(b"garbage").is_err());
        assert!(Record::decode(b"\xff\xfe").is_err());
        assert!(Record::decode(good.replace("mode=640", "mode=9z").as_bytes()).is_err());
        assert!(Record::decode(good.replace("name=x", "name=a.meta").as_bytes()).is_err());
        // Unknown keys are fine.
        assert!(Record::decode(format!("{good}future=1\n").as_bytes()).is_ok());
    }
}
