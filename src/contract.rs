//! The contract clients read: a section's creation status, data mode, commit and
//! lifetime, and the `NAME.meta` sidecar and `user.sectionfs.*` attributes that show
//! them. The daemon renders them here from one [`Facts`] snapshot (so text and attributes
//! never disagree); clients parse them here into a [`Meta`]. The round-trip test below
//! keeps both sides in step.

use crate::name;
use std::ffi::OsString;
use std::io;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

/// How a section's storage is committed (SEC_COMMIT / SEC_RESERVE).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Commit {
    /// Growth allocates the storage or fails with ENOSPC.
    Eager,
    /// Growth is sparse; storage is taken on first touch.
    Lazy,
}

impl Commit {
    pub fn as_str(self) -> &'static str {
        match self {
            Commit::Eager => "eager",
            Commit::Lazy => "lazy",
        }
    }

    pub fn parse(s: &str) -> Option<Commit> {
        match s {
            "eager" => Some(Commit::Eager),
            "lazy" => Some(Commit::Lazy),
            _ => None,
        }
    }
}

/// When a section's name goes away: at unlink only, or also with its last handle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lifetime {
    /// Like a file: the name stays until unlinked.
    Persistent,
    /// Like a Windows section: the name goes when its last handle is closed.
    Handles,
}

impl Lifetime {
    pub fn as_str(self) -> &'static str {
        match self {
            Lifetime::Persistent => "persistent",
            Lifetime::Handles => "handles",
        }
    }

    pub fn parse(s: &str) -> Option<Lifetime> {
        match s {
            "persistent" => Some(Lifetime::Persistent),
            "handles" => Some(Lifetime::Handles),
            _ => None,
        }
    }
}

/// The answer CreateFileMapping gives through GetLastError.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Created,
    AlreadyExists,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::AlreadyExists => "already_exists",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        match s {
            "created" => Some(Status::Created),
            "already_exists" => Some(Status::AlreadyExists),
            _ => None,
        }
    }
}

/// How section data moves: straight to the backing file, or through the daemon.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoMode {
    Passthrough,
    Cached,
}

impl IoMode {
    pub fn as_str(self) -> &'static str {
        match self {
            IoMode::Passthrough => "passthrough",
            IoMode::Cached => "cached",
        }
    }

    pub fn parse(s: &str) -> Option<IoMode> {
        match s {
            "passthrough" => Some(IoMode::Passthrough),
            "cached" => Some(IoMode::Cached),
            _ => None,
        }
    }
}

/// How requests reach the daemon: FUSE over io_uring (per-CPU queues) or `/dev/fuse`.
/// The mount's, shown in every sidecar.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    IoUring,
    DevFuse,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::IoUring => "io_uring",
            Transport::DevFuse => "dev_fuse",
        }
    }

    pub fn parse(s: &str) -> Option<Transport> {
        match s {
            "io_uring" => Some(Transport::IoUring),
            "dev_fuse" => Some(Transport::DevFuse),
            _ => None,
        }
    }
}

/// A snapshot of what the sidecar says about one section, for one reader.
#[derive(Clone, Debug)]
pub struct Facts {
    pub name: OsString,
    pub size: u64,
    pub status: Status,
    pub creator_pid: u32,
    pub created_at: SystemTime,
    pub open_handles: u32,
    pub io: IoMode,
    pub transport: Transport,
    pub commit: Commit,
    pub lifetime: Lifetime,
    /// The file a section was made over (`None`: its bytes are in the store).
    pub backing: Option<std::path::PathBuf>,
}

/// The prefix of the extended attributes that mirror the sidecar.
pub const XATTR_PREFIX: &str = "user.sectionfs.";
/// The one attribute that may be set: the section's lifetime (its owner's choice).
pub const LIFETIME_XATTR: &str = "user.sectionfs.lifetime";

impl Facts {
    /// Every key and value, in sidecar order.
    /// Keys past `commit` appear only when they say something: a section without
    /// `lifetime` is persistent.
    pub fn pairs(&self) -> Vec<(&'static str, String)> {
        let mut pairs = vec![
            ("name", name::escape(&self.name)),
            ("size", self.size.to_string()),
            ("status", self.status.as_str().to_string()),
            ("creator_pid", self.creator_pid.to_string()),
            ("created_at", rfc3339(self.created_at)),
            ("open_handles", self.open_handles.to_string()),
            ("io", self.io.as_str().to_string()),
            ("commit", self.commit.as_str().to_string()),
            // After the contract's keys: "more keys may follow".
            ("transport", self.transport.as_str().to_string()),
        ];
        if self.lifetime != Lifetime::Persistent {
            pairs.push(("lifetime", self.lifetime.as_str().to_string()));
        }
        if let Some(path) = &self.backing {
            let path = name::escape(path.as_os_str());
            pairs.push(("backing", format!("file:{path}")));
        }
        pairs
    }

    /// The sidecar's text: one `key=value` line per fact.
    pub fn render(&self) -> Vec<u8> {
        let mut s = String::with_capacity(256);
        for (k, v) in self.pairs() {
            s.push_str(k);
            s.push('=');
            s.push_str(&v);
            s.push('\n');
        }
        s.into_bytes()
    }

    /// The value of `user.sectionfs.KEY`, if KEY is a fact.
    pub fn xattr(&self, attr: &str) -> Option<String> {
        let key = attr.strip_prefix(XATTR_PREFIX)?;
        self.pairs()
            .into_iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v)
    }

    /// The NUL-separated list listxattr returns.
    pub fn xattr_names(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (k, _) in self.pairs() {
            out.extend_from_slice(XATTR_PREFIX.as_bytes());
            out.extend_from_slice(k.as_bytes());
            out.push(0);
        }
        out
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ` in UTC (whole seconds, as the contract shows `created_at`).
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs().min(i64::MAX as u64) as i64);
    match jiff::Timestamp::from_second(secs) {
        Ok(ts) => ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        // Past 9999-12-31: no such creation time is ever recorded.
        Err(_) => "9999-12-31T23:59:59Z".into(),
    }
}

/// What `NAME.meta` says about a section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Meta {
    /// The name as written in the sidecar: C-style escapes for `\`, newlines and control
    /// bytes, `\xNN` for bytes that are not UTF-8.
    pub name: String,
    pub size: u64,
    pub status: Status,
    /// The creating process (thread group id).
    pub creator_pid: u32,
    /// RFC 3339, UTC.
    pub created_at: String,
    pub open_handles: u32,
    pub io: IoMode,
    /// `dev_fuse` when the sidecar does not say (daemons before io_uring).
    pub transport: Transport,
    pub commit: Commit,
    /// `persistent` unless the sidecar says `lifetime=handles`.
    pub lifetime: Lifetime,
    /// A section over a file: that file's path, escaped as the sidecar writes it.
    pub backing: Option<String>,
}

impl Meta {
    /// Reads and parses a sidecar file.
    pub fn read(path: &Path) -> io::Result<Meta> {
        let text = std::fs::read_to_string(path)?;
        Meta::parse(&text).map_err(|why| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {why}", path.display()),
            )
        })
    }

    /// Parses sidecar text: `key=value` lines; keys it does not know are skipped, as the
    /// contract asks of readers.
    ///
    /// ```
    /// use sectionfs::client::Meta;
    /// use sectionfs::contract::Status;
    /// let text = "name=Frame\nsize=4096\nstatus=already_exists\ncreator_pid=42\n\
    ///             created_at=2026-11-22T10:00:00Z\nopen_handles=1\nio=passthrough\n\
    ///             commit=eager\nsome_future_key=1\n";
    /// let meta = Meta::parse(text)?;
    /// assert_eq!(meta.status, Status::AlreadyExists);
    /// assert_eq!((meta.size, meta.open_handles), (4096, 1));
    /// assert!(Meta::parse("name=Frame\n").is_err());
    /// # Ok::<(), String>(())
    /// ```
    pub fn parse(text: &str) -> Result<Meta, String> {
        let get = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
                .ok_or_else(|| format!("sidecar without {key}="))
        };
        let number = |key: &str| -> Result<u64, String> {
            let v = get(key)?;
            v.parse().map_err(|_| format!("{key}={v}: not a number"))
        };
        fn known<T>(key: &str, v: &str, parse: fn(&str) -> Option<T>) -> Result<T, String> {
            parse(v).ok_or_else(|| format!("{key}={v}: unknown"))
        }
        let status = known("status", get("status")?, Status::parse)?;
        let io = known("io", get("io")?, IoMode::parse)?;
        let transport = match get("transport") {
            Ok(v) => known("transport", v, Transport::parse)?,
            Err(_) => Transport::DevFuse,
        };
        let commit = known("commit", get("commit")?, Commit::parse)?;
        let lifetime = match get("lifetime") {
            Ok(v) => known("lifetime", v, Lifetime::parse)?,
            Err(_) => Lifetime::Persistent,
        };
        let backing = get("backing")
            .ok()
            .map(|v| v.strip_prefix("file:").unwrap_or(v).to_string());
        Ok(Meta {
            name: get("name")?.to_string(),
            size: number("size")?,
            status,
            creator_pid: u32::try_from(number("creator_pid")?).map_err(|e| e.to_string())?,
            created_at: get("created_at")?.to_string(),
            open_handles: u32::try_from(number("open_handles")?).map_err(|e| e.to_string())?,
            io,
            transport,
            commit,
            lifetime,
            backing,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn what_the_daemon_renders_a_client_parses() {
        for (status, io, transport, commit, lifetime, backing) in [
            (
                Status::Created,
                IoMode::Passthrough,
                Transport::IoUring,
                Commit::Eager,
                Lifetime::Persistent,
                None,
            ),
            (
                Status::AlreadyExists,
                IoMode::Cached,
                Transport::DevFuse,
                Commit::Lazy,
                Lifetime::Handles,
                Some("/srv/a b"),
            ),
        ] {
            let f = Facts {
                name: "Frame\n1".into(),
                size: 1 << 40,
                status,
                creator_pid: 4242,
                created_at: UNIX_EPOCH + std::time::Duration::from_secs(1_795_341_600),
                open_handles: 3,
                io,
                transport,
                commit,
                lifetime,
                backing: backing.map(Into::into),
            };
            let text = String::from_utf8(f.render()).unwrap();
            let m = Meta::parse(&text).unwrap();
            assert_eq!(m.name, "Frame\\n1");
            assert_eq!((m.size, m.creator_pid, m.open_handles), (1 << 40, 4242, 3));
            assert_eq!(m.created_at, "2026-11-22T10:00:00Z");
            assert_eq!(
                (m.status, m.io, m.transport, m.commit, m.lifetime),
                (status, io, transport, commit, lifetime)
            );
            assert_eq!(m.backing.as_deref(), backing);
        }
    }

    #[test]
    fn sidecar_parses_and_ignores_unknown_keys() {
        let m = Meta::parse(
            "name=a\\nb\nsize=4096\nstatus=already_exists\ncreator_pid=7\n\
             created_at=1970-01-01T00:00:00Z\nopen_handles=2\nio=cached\ncommit=lazy\nnew_key=1\n",
        )
        .unwrap();
        assert_eq!(m.name, "a\\nb");
        assert_eq!(m.size, 4096);
        assert_eq!(m.status, Status::AlreadyExists);
        assert_eq!(m.creator_pid, 7);
        assert_eq!(m.open_handles, 2);
        assert_eq!(m.io, IoMode::Cached);
        assert_eq!(m.commit, Commit::Lazy);
        assert_eq!(
            m.transport,
            Transport::DevFuse,
            "a sidecar without transport="
        );
    }

    #[test]
    fn bad_sidecars_say_what_is_wrong() {
        assert!(
            Meta::parse("name=x\n")
                .unwrap_err()
                .contains("sidecar without")
        );
        let text = "name=x\nsize=1\nstatus=maybe\ncreator_pid=1\ncreated_at=t\n\
                    open_handles=0\nio=cached\ncommit=eager\n";
        assert!(Meta::parse(text).unwrap_err().contains("status=maybe"));
    }

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(1_795_341_600)),
            "2026-11-22T10:00:00Z"
        );
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00Z"
        );
    }

    #[test]
    fn sidecar_text_and_xattrs_agree() {
        let f = Facts {
            name: "a\nb".into(),
            size: 4096,
            status: Status::AlreadyExists,
            creator_pid: 7,
            created_at: UNIX_EPOCH,
            open_handles: 2,
            io: IoMode::Cached,
            transport: Transport::IoUring,
            commit: Commit::Eager,
            lifetime: Lifetime::Handles,
            backing: Some("/srv/f".into()),
        };
        let text = String::from_utf8(f.render()).unwrap();
        assert_eq!(
            text,
            "name=a\\nb\nsize=4096\nstatus=already_exists\ncreator_pid=7\n\
             created_at=1970-01-01T00:00:00Z\nopen_handles=2\nio=cached\ncommit=eager\n\
             transport=io_uring\nlifetime=handles\nbacking=file:/srv/f\n"
        );
        assert_eq!(
            f.xattr("user.sectionfs.status").as_deref(),
            Some("already_exists")
        );
        assert_eq!(f.xattr("user.sectionfs.nope"), None);
        assert_eq!(f.xattr("size"), None);
        assert!(f.xattr_names().starts_with(b"user.sectionfs.name\0"));
    }
}
