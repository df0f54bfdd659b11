//! The `NAME.meta` sidecar text and the `user.sectionfs.*` attributes, both rendered from
//! one [`Facts`] snapshot so they can never disagree.

use crate::name;
use crate::store::{Commit, Lifetime};
use std::ffi::OsString;
use std::time::{SystemTime, UNIX_EPOCH};

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

/// `YYYY-MM-DDTHH:MM:SSZ` in UTC.
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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
            commit: Commit::Eager,
            lifetime: Lifetime::Handles,
            backing: Some("/srv/f".into()),
        };
        let text = String::from_utf8(f.render()).unwrap();
        assert_eq!(
            text,
            "name=a\\nb\nsize=4096\nstatus=already_exists\ncreator_pid=7\n\
             created_at=1970-01-01T00:00:00Z\nopen_handles=2\nio=cached\ncommit=eager\n\
             lifetime=handles\nbacking=file:/srv/f\n"
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
