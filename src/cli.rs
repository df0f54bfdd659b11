//! The command line: `sectionfs [-f] [-o OPT[,OPT...]] [STORE] MOUNTPOINT`, parsed into a
//! validated [`Config`] before anything is mounted.

use crate::contract::{Commit, Lifetime};
use clap::Parser;
use std::path::{Path, PathBuf};

#[derive(Parser, Debug)]
#[command(
    name = "sectionfs",
    version,
    about = "Windows named file mappings (sections) for Linux, as a FUSE filesystem",
    override_usage = "sectionfs [-f] [-o OPT[,OPT...]] [STORE] MOUNTPOINT\n       \
        sectionfs list [--json] MOUNTPOINT\n       \
        mount -t fuse.sectionfs STORE MOUNTPOINT [-o OPT[,OPT...]]",
    after_help = "Options for -o (comma-separated, fstab style):\n  \
        allow_other              let every user reach the mount (needs root or user_allow_other)\n  \
        ro                       mount read-only\n  \
        commit=eager|lazy        SEC_COMMIT (default: growth allocates or fails ENOSPC) or SEC_RESERVE\n  \
        passthrough=auto|on|off  data straight to the store (default auto: when the kernel allows)\n  \
        io_uring=auto|on|off     FUSE over io_uring, per-CPU queues (default auto: when the kernel\n  \
                                 offers it; root: echo Y > /sys/module/fuse/parameters/enable_uring)\n  \
        user_quota=SIZE          cap each user's total section size (e.g. 64m; k/m/g/t suffixes)\n  \
        lifetime=persistent|handles  new sections' names go at unlink only (default), or also\n  \
                                 with their last handle, as on Windows\n  \
        rw, dev, suid, exec, auto, nofail, ... are accepted and ignored, as mount(8) passes them.\n\n\
        Without STORE, sections live in /dev/shm/sectionfs-UID/MOUNTPOINT (tmpfs, private).\n\
        Logging: with -f to stderr; in the background appended to STORE/daemon.log.\n\
        List the sections of a mount: sectionfs list [--json] MOUNTPOINT\n\
        Unmount with: umount MOUNTPOINT"
)]
struct Args {
    /// Stay in the foreground until unmounted (or SIGINT/SIGTERM)
    #[arg(short, long)]
    foreground: bool,
    /// Mount options, comma-separated; may be given more than once
    #[arg(short = 'o', value_name = "OPT[,OPT...]")]
    options: Vec<String>,
    /// More logging (-v: info, -vv: debug); RUST_LOG overrides
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
    /// The directory holding the sections' bytes and records (created 0700 if missing)
    #[arg(value_name = "STORE")]
    first: PathBuf,
    /// Where the sections appear
    #[arg(value_name = "MOUNTPOINT")]
    second: Option<PathBuf>,
}

/// A kernel feature as asked for on the command line (`passthrough=`, `io_uring=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Switch {
    /// Used when the kernel and privileges allow, done without otherwise.
    Auto,
    /// Used, or no mount.
    On,
    /// Never used.
    Off,
}

/// How section data moves: straight to the store, or through the daemon (cached).
pub type Passthrough = Switch;

impl Switch {
    fn parse(key: &str, v: &str) -> Result<Switch, String> {
        match v {
            "auto" => Ok(Switch::Auto),
            "on" => Ok(Switch::On),
            "off" => Ok(Switch::Off),
            _ => Err(format!("-o {key}={v}: expected auto, on or off")),
        }
    }
}

/// Everything the mount needs, validated.
#[derive(Clone, Debug)]
pub struct Config {
    pub store: PathBuf,
    pub mountpoint: PathBuf,
    pub foreground: bool,
    pub verbose: u8,
    pub options: MountOptions,
}

/// The `-o` options sectionfs understands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountOptions {
    pub allow_other: bool,
    pub read_only: bool,
    pub commit: Commit,
    pub passthrough: Passthrough,
    /// FUSE over io_uring as the transport (default auto: when the kernel offers it).
    pub io_uring: Switch,
    /// The most bytes of sections one uid may own; `None`: no cap.
    pub user_quota: Option<u64>,
    /// Lifetime of new sections (each may change its own through an xattr).
    pub lifetime: Lifetime,
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions {
            allow_other: false,
            read_only: false,
            commit: Commit::Eager,
            passthrough: Passthrough::Auto,
            io_uring: Switch::Auto,
            user_quota: None,
            lifetime: Lifetime::Persistent,
        }
    }
}

/// Options mount(8), mount.fuse3 and fstab pass that mean nothing to sectionfs.
const IGNORED: &[&str] = &[
    "rw",
    "dev",
    "nodev",
    "suid",
    "nosuid",
    "exec",
    "noexec",
    "auto",
    "noauto",
    "nofail",
    "user",
    "nouser",
    "users",
    "defaults",
    "_netdev",
    "atime",
    "noatime",
    "relatime",
    "strictatime",
    "nodiratime",
    "async",
    "default_permissions",
];

impl MountOptions {
    /// Applies one comma-separated `-o` argument. Errors name the offending option.
    pub fn apply(&mut self, list: &str) -> Result<(), String> {
        for opt in list.split(',').filter(|o| !o.is_empty()) {
            let (key, value) = match opt.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (opt, None),
            };
            match (key, value) {
                ("allow_other", None) => self.allow_other = true,
                ("ro", None) => self.read_only = true,
                ("rw", None) => self.read_only = false,
                ("commit", Some(v)) => {
                    self.commit = Commit::parse(v)
                        .ok_or_else(|| format!("-o commit={v}: expected eager or lazy"))?
                }
                ("passthrough", Some(v)) => self.passthrough = Switch::parse(key, v)?,
                ("io_uring", Some(v)) => self.io_uring = Switch::parse(key, v)?,
                ("user_quota", Some(v)) => {
                    self.user_quota = Some(crate::quota::parse_size(v).ok_or_else(|| {
                        format!("-o user_quota={v}: expected a size such as 1048576 or 64m")
                    })?)
                }
                ("lifetime", Some(v)) => {
                    self.lifetime = Lifetime::parse(v)
                        .ok_or_else(|| format!("-o lifetime={v}: expected persistent or handles"))?
                }
                // systemd's and util-linux's own options (x-systemd.*, comment=...), and
                // the names mount helpers set: sectionfs names its mount itself.
                (k, _) if k.starts_with("x-") || k == "comment" => {}
                ("subtype" | "fsname", Some(_)) => {}
                (k, None) if IGNORED.contains(&k) => {}
                _ => return Err(format!("unknown mount option: {opt}")),
            }
        }
        Ok(())
    }
}

/// `sectionfs list [--json] MOUNTPOINT`.
#[derive(Parser, Debug)]
#[command(
    name = "sectionfs list",
    version,
    about = "Print the sections of a mount: name, size, owner, mode, open handles, \
             creation time, commit and io"
)]
pub struct ListArgs {
    /// One JSON array of objects instead of the table
    #[arg(long)]
    pub json: bool,
    /// A sectionfs mount point
    #[arg(value_name = "MOUNTPOINT")]
    pub mountpoint: PathBuf,
}

/// What the command line asks for.
#[derive(Debug)]
pub enum Command {
    Mount(Config),
    List(ListArgs),
}

/// Parses either form. `list` is recognised as the first argument before clap sees the
/// mount form, whose first positional (STORE) is optional and would otherwise swallow
/// it; a store directory named `list` is written `./list`.
pub fn parse_command<I, T>(args: I) -> Result<Command, CliError>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let args: Vec<std::ffi::OsString> = args.into_iter().map(Into::into).collect();
    if args.get(1).is_some_and(|a| a == "list") {
        let rest = std::iter::once(std::ffi::OsString::from("sectionfs list"))
            .chain(args.into_iter().skip(2));
        return ListArgs::try_parse_from(rest)
            .map(Command::List)
            .map_err(CliError::Clap);
    }
    parse(args).map(Command::Mount)
}

/// Parses the command line. `Err` carries clap's error (which also covers --help and
/// --version) or a message for one readable line.
pub fn parse<I, T>(args: I) -> Result<Config, CliError>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let args = Args::try_parse_from(args).map_err(CliError::Clap)?;
    let mut options = MountOptions::default();
    for o in &args.options {
        options.apply(o).map_err(CliError::Msg)?;
    }
    if options.user_quota.is_some() && options.passthrough == Passthrough::On {
        // Passthrough writes, copy_file_range, splice and sendfile past the end never
        // reach the daemon, so it could not hold the cap (DESIGN.md, "Per-user quota").
        return Err(CliError::Msg(
            "-o user_quota cannot be held with passthrough=on (growth by write would \
             bypass the daemon): use passthrough=auto or off; a mount with user_quota \
             serves data cached"
                .into(),
        ));
    }
    let (store, mountpoint) = match args.second {
        Some(m) => (Some(args.first), m),
        None => (None, args.first),
    };
    let mountpoint = check_mountpoint(&mountpoint).map_err(CliError::Msg)?;
    let store = match store {
        Some(s) => absolute(&s),
        None => default_store(&mountpoint),
    };
    Ok(Config {
        store,
        mountpoint,
        foreground: args.foreground,
        verbose: args.verbose,
        options,
    })
}

#[derive(Debug)]
pub enum CliError {
    Clap(clap::Error),
    Msg(String),
}

fn check_mountpoint(p: &Path) -> Result<PathBuf, String> {
    let canon = p
        .canonicalize()
        .map_err(|e| format!("mount point {}: {e}", p.display()))?;
    if !canon.is_dir() {
        return Err(format!("mount point {}: not a directory", p.display()));
    }
    Ok(canon)
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// `/dev/shm/sectionfs-UID/ESCAPED-MOUNTPOINT`: tmpfs, like the paging file behind a
/// Windows section, and private to the mounting user.
pub fn default_store(mountpoint: &Path) -> PathBuf {
    let uid = nix::unistd::geteuid();
    Path::new("/dev/shm")
        .join(format!("sectionfs-{uid}"))
        .join(escape_path(mountpoint))
}

/// systemd-escape style: `/mnt/sections` -> `mnt-sections`, with `-` and odd bytes as \xNN.
fn escape_path(p: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let bytes = p.as_os_str().as_bytes();
    let trimmed = bytes.strip_prefix(b"/").unwrap_or(bytes);
    if trimmed.is_empty() {
        return "-".into();
    }
    let mut out = String::new();
    for (i, &c) in trimmed.iter().enumerate() {
        match c {
            b'/' => out.push('-'),
            b'.' if i == 0 => out.push_str("\\x2e"),
            c if c.is_ascii_alphanumeric() || c == b'_' || c == b'.' => out.push(c as char),
            c => out.push_str(&format!("\\x{c:02x}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_parse() {
        let mut o = MountOptions::default();
        o.apply("allow_other,commit=lazy,passthrough=off,rw,nodev,nofail,x-systemd.automount")
            .unwrap();
        assert!(o.allow_other);
        assert_eq!(o.commit, Commit::Lazy);
        assert_eq!(o.passthrough, Passthrough::Off);
        o.apply("ro").unwrap();
        assert!(o.read_only);
        assert_eq!(o.user_quota, None);
        o.apply("user_quota=16m").unwrap();
        assert_eq!(o.lifetime, Lifetime::Persistent);
        o.apply("lifetime=handles").unwrap();
        assert_eq!(o.lifetime, Lifetime::Handles);
        assert!(o.apply("lifetime=forever").unwrap_err().contains("forever"));
        assert_eq!(o.user_quota, Some(16 << 20));
        assert_eq!(o.io_uring, Switch::Auto);
        o.apply("io_uring=on").unwrap();
        assert_eq!(o.io_uring, Switch::On);
        o.apply("io_uring=off").unwrap();
        assert_eq!(o.io_uring, Switch::Off);
    }

    #[test]
    fn bad_options_are_named() {
        let mut o = MountOptions::default();
        assert!(o.apply("bogus").unwrap_err().contains("bogus"));
        assert!(
            o.apply("commit=maybe")
                .unwrap_err()
                .contains("commit=maybe")
        );
        assert!(o.apply("passthrough").unwrap_err().contains("passthrough"));
        assert!(
            o.apply("io_uring=yes")
                .unwrap_err()
                .contains("io_uring=yes")
        );
        assert!(o.apply("allow_other=1").is_err());
        assert!(o.apply("user_quota=lots").unwrap_err().contains("lots"));
        assert!(o.apply("user_quota").is_err());
        assert_eq!(
            o,
            MountOptions::default(),
            "a refused option changes nothing it named"
        );
    }

    #[test]
    fn positional_forms() {
        let tmp = tempfile::tempdir().unwrap();
        let mnt = tmp.path().to_str().unwrap();
        let c = parse(["sectionfs", mnt]).unwrap();
        assert!(c.store.starts_with("/dev/shm"));
        let c = parse(["sectionfs", "-f", "/var/store", mnt, "-o", "commit=lazy"]).unwrap();
        assert_eq!(c.store, Path::new("/var/store"));
        assert!(c.foreground);
        assert_eq!(c.options.commit, Commit::Lazy);
        assert!(matches!(
            parse(["sectionfs", "/no/such/dir"]),
            Err(CliError::Msg(_))
        ));
        assert!(matches!(
            parse(["sectionfs", "--help"]),
            Err(CliError::Clap(_))
        ));
    }

    #[test]
    fn list_is_a_subcommand() {
        let tmp = tempfile::tempdir().unwrap();
        let mnt = tmp.path().to_str().unwrap();
        match parse_command(["sectionfs", "list", "--json", mnt]).unwrap() {
            Command::List(l) => {
                assert!(l.json);
                assert_eq!(l.mountpoint, Path::new(mnt));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse_command(["sectionfs", "list"]),
            Err(CliError::Clap(_))
        ));
        // A store named list, written as a path, is the mount form.
        match parse_command(["sectionfs", "./list", mnt]).unwrap() {
            Command::Mount(c) => assert!(c.store.ends_with("list")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn mount_helper_names_are_accepted() {
        let mut o = MountOptions::default();
        o.apply("rw,allow_other,commit=lazy,dev,suid,subtype=sectionfs,fsname=/s")
            .unwrap();
        assert!(o.allow_other);
        assert_eq!(o.commit, Commit::Lazy);
    }

    #[test]
    fn mountpoints_escape() {
        assert_eq!(escape_path(Path::new("/mnt/sections")), "mnt-sections");
        assert_eq!(escape_path(Path::new("/a-b/c d")), "a\\x2db-c\\x20d");
        assert_eq!(escape_path(Path::new("/")), "-");
    }
}
