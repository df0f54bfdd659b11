//! `sectionfs list [--json] MOUNTPOINT`: the sections of a mount as a table (or JSON),
//! read the way any client reads them: the directory, each `NAME.meta`, and `stat` for
//! owner and mode. It never talks to the daemon otherwise.

use crate::cli::ListArgs;
use crate::contract::Meta;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// One section as listed.
#[derive(Clone, Debug)]
pub struct Row {
    /// The directory entry's name.
    pub name: OsString,
    /// The section's size (from its sidecar, or `stat` when the sidecar is unreadable).
    pub size: u64,
    /// The sidecar's facts; `None` for a section the caller may not read, of which the
    /// listing shows only what `stat` shows anyone.
    pub meta: Option<Meta>,
    pub uid: u32,
    pub gid: u32,
    /// Permission bits (`0o7777` of `st_mode`).
    pub mode: u32,
}

/// Prints the listing the arguments ask for.
pub fn run(args: &ListArgs) -> Result<(), String> {
    let rows = rows(&args.mountpoint).map_err(|e| format!("{}: {e}", args.mountpoint.display()))?;
    let out = if args.json { json(&rows) } else { table(&rows) };
    print!("{out}");
    Ok(())
}

/// The sections under `mount`, sorted by name. A section removed while the listing runs
/// is left out.
pub fn rows(mount: &Path) -> io::Result<Vec<Row>> {
    if !is_fuse_mount(mount)? {
        return Err(io::Error::other("not a sectionfs mount"));
    }
    let mut rows = Vec::new();
    for entry in std::fs::read_dir(mount)? {
        let entry = entry?;
        let name = entry.file_name();
        if crate::name::sidecar_of(&name).is_some() {
            continue;
        }
        let path = entry.path();
        let mut sidecar = path.clone().into_os_string();
        sidecar.push(".meta");
        let stat = match std::fs::symlink_metadata(&path) {
            Ok(s) => s,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        let meta = match Meta::read(Path::new(&sidecar)) {
            Ok(m) => Some(m),
            // Another user's private section: listed by what stat shows.
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => None,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        rows.push(Row {
            name,
            size: meta.as_ref().map_or(stat.len(), |m| m.size),
            meta,
            uid: stat.uid(),
            gid: stat.gid(),
            mode: stat.mode() & 0o7777,
        });
    }
    rows.sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
    Ok(rows)
}

/// Whether `mount` is the root of a FUSE mount (sectionfs shows as `fuse.sectionfs`; an
/// unprivileged mount through fusermount3 may show as plain `fuse`).
fn is_fuse_mount(mount: &Path) -> io::Result<bool> {
    let target = mount.canonicalize()?;
    let info = std::fs::read_to_string("/proc/self/mountinfo")?;
    Ok(info.lines().any(|line| {
        let Some((head, tail)) = line.split_once(" - ") else {
            return false;
        };
        let point = head.split(' ').nth(4).map(crate::mount::unescape_mountinfo);
        let fstype = tail.split(' ').next().unwrap_or("");
        point.as_deref() == Some(target.as_os_str().as_bytes())
            && (fstype == "fuse" || fstype.starts_with("fuse."))
    }))
}

const HEADER: [&str; 8] = [
    "NAME", "SIZE", "OWNER", "MODE", "HANDLES", "CREATED", "COMMIT", "IO",
];

/// A table with a header line and aligned columns; names are escaped to one line.
pub fn table(rows: &[Row]) -> String {
    let cells: Vec<[String; 8]> = rows
        .iter()
        .map(|r| {
            // What only a reader of the sidecar may know shows as "-" to others.
            let fact = |f: fn(&Meta) -> String| r.meta.as_ref().map_or("-".into(), f);
            [
                crate::name::escape(&r.name),
                r.size.to_string(),
                user_name(r.uid),
                format!("{:04o}", r.mode),
                fact(|m| m.open_handles.to_string()),
                fact(|m| m.created_at.clone()),
                fact(|m| m.commit.as_str().to_string()),
                fact(|m| m.io.as_str().to_string()),
            ]
        })
        .collect();
    let mut width = HEADER.map(str::len);
    for row in &cells {
        for (w, c) in width.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let header = HEADER.map(String::from);
    for row in std::iter::once(&header).chain(&cells) {
        let mut line = String::new();
        for (i, (c, w)) in row.iter().zip(width).enumerate() {
            // Numbers right-aligned, text left-aligned; no padding after the last column.
            match i {
                1 | 4 => write!(line, "{c:>w$}  "),
                7 => write!(line, "{c}"),
                _ => write!(line, "{c:<w$}  "),
            }
            .ok();
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// A JSON array with one object per section, for scripts. What only a reader of the
/// sidecar may know is `null` for the others.
pub fn json(rows: &[Row]) -> String {
    let rows: Vec<serde_json::Value> = rows
        .iter()
        .map(|r| {
            let m = r.meta.as_ref();
            serde_json::json!({
                "name": crate::name::escape(&r.name),
                "size": r.size,
                "owner": user_name(r.uid),
                "uid": r.uid,
                "gid": r.gid,
                "mode": format!("{:04o}", r.mode),
                "open_handles": m.map(|m| m.open_handles),
                "created_at": m.map(|m| &m.created_at),
                "creator_pid": m.map(|m| m.creator_pid),
                "status": m.map(|m| m.status.as_str()),
                "commit": m.map(|m| m.commit.as_str()),
                "io": m.map(|m| m.io.as_str()),
                "transport": m.map(|m| m.transport.as_str()),
            })
        })
        .collect();
    let mut out = serde_json::to_string_pretty(&rows).unwrap_or_else(|_| "[]".into());
    out.push('\n');
    out
}

/// The user's login name, or the number when the uid has no passwd entry.
fn user_name(uid: u32) -> String {
    match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
        Ok(Some(user)) => user.name,
        _ => uid.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::{Commit, IoMode, Lifetime, Status, Transport};

    fn row(name: &str, size: u64) -> Row {
        Row {
            name: name.into(),
            size,
            meta: Some(Meta {
                name: name.into(),
                size,
                status: Status::Created,
                creator_pid: 42,
                created_at: "2026-11-22T10:00:00Z".into(),
                open_handles: 1,
                io: IoMode::Passthrough,
                transport: Transport::IoUring,
                commit: Commit::Eager,
                lifetime: Lifetime::Persistent,
                backing: None,
            }),
            uid: 0,
            gid: 0,
            mode: 0o600,
        }
    }

    #[test]
    fn table_aligns_columns() {
        let t = table(&[row("Frame", 1048576), row("a b\n", 7)]);
        assert_eq!(
            t,
            "NAME      SIZE  OWNER  MODE  HANDLES  CREATED               COMMIT  IO\n\
             Frame  1048576  root   0600        1  2026-11-22T10:00:00Z  eager   passthrough\n\
             a b\\n        7  root   0600        1  2026-11-22T10:00:00Z  eager   passthrough\n"
        );
    }

    #[test]
    fn json_escapes_strings() {
        assert_eq!(json(&[]), "[]\n");
        let j = json(&[row("x\"y", 3)]);
        assert!(j.contains("\"name\": \"x\\\"y\""), "{j}");
        assert!(j.contains("\"mode\": \"0600\""), "{j}");
        assert!(j.contains("\"status\": \"created\""), "{j}");
        let private = Row {
            meta: None,
            ..row("p", 5)
        };
        let j = json(std::slice::from_ref(&private));
        assert!(j.contains("\"size\": 5,"), "{j}");
        assert!(j.contains("\"status\": null"), "{j}");
        assert!(table(&[private]).contains("   5  root   0600        -  -"));
    }

    #[test]
    fn unknown_uids_print_as_numbers() {
        assert_eq!(user_name(0), "root");
        assert_eq!(user_name(3_999_999_999), "3999999999");
    }
}
