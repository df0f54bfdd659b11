//! Mounting: open the store, mount through /dev/fuse, pick the data path, go to the
//! background once the mount is live, and unmount cleanly on SIGINT/SIGTERM.

use crate::cli::{Config, Passthrough, Switch};
use crate::contract::{IoMode, Transport};
use crate::fuse::{MAX_WRITE, SectionFs, uring};
use crate::model::{Options, Sections};
use crate::store::Store;
use fuser::{MountOption, SessionACL};
use nix::errno::Errno;
use nix::fcntl::{OFlag, openat};
use nix::mount::{MntFlags, MsFlags, umount2};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::stat::Mode;
use nix::unistd::{self, AccessFlags, ForkResult, geteuid, getgid, getuid};
use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// Mounts and serves until unmounted. In the background form, returns in the parent once
/// the mount is live (or failed); the daemon child never returns from here.
pub fn run(config: Config) -> Result<(), String> {
    check_not_mounted(&config.mountpoint)?;
    if !Path::new("/dev/fuse").exists() {
        return Err("no /dev/fuse: load the fuse module (modprobe fuse)".into());
    }
    if is_default_store(&config) {
        make_private_parent(&config.store)?;
    }
    let store = Store::open(&config.store)?;
    let owner = (getuid().as_raw(), getgid().as_raw());
    let options = Options {
        commit: config.options.commit,
        owner,
        user_quota: config.options.user_quota,
        lifetime: config.options.lifetime,
    };
    let model = Arc::new(
        Sections::load(store, options)
            .map_err(|e| format!("store {}: cannot read it: {e}", config.store.display()))?,
    );

    if config.foreground {
        return serve(&config, model, None);
    }
    // Fork before any thread exists (fuser starts its workers in serve).
    let (ready_rx, ready_tx) = unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    let (mut ready_rx, ready_tx) = (File::from(ready_rx), File::from(ready_tx));
    // SAFETY: single-threaded here (no thread exists before `serve`), so the child may
    // run any code; it only continues this program.
    match unsafe { unistd::fork() } {
        Err(e) => Err(format!("fork: {e}")),
        Ok(ForkResult::Child) => {
            drop(ready_rx);
            model.store().claim_lock();
            detach(&config);
            let code = match serve(&config, model, Some(ready_tx)) {
                Ok(()) => 0,
                Err(e) => {
                    log::error!("{e}");
                    1
                }
            };
            std::process::exit(code);
        }
        Ok(ForkResult::Parent { .. }) => {
            drop(ready_tx);
            drop(model);
            let mut answer = String::new();
            ready_rx.read_to_string(&mut answer).ok();
            match answer.strip_prefix("ok\n") {
                Some(banner) => {
                    print!("{banner}");
                    Ok(())
                }
                None if answer.is_empty() => {
                    Err("the daemon died before the mount was live".into())
                }
                None => Err(answer.trim_end().to_string()),
            }
        }
    }
}

/// Mounts, reports readiness, and runs the session until the kernel ends it.
fn serve(config: &Config, model: Arc<Sections>, ready: Option<File>) -> Result<(), String> {
    let mut ready = ready;
    let result = mount_and_run(config, model, &mut ready);
    if let (Err(e), Some(mut ready)) = (&result, ready) {
        let _ = write!(ready, "{e}");
    }
    result
}

/// `ready` is taken (written "ok" and closed) once the mount is live; if it is still
/// there when this fails, the error goes to the waiting parent through it.
fn mount_and_run(
    config: &Config,
    model: Arc<Sections>,
    ready: &mut Option<File>,
) -> Result<(), String> {
    let mnt = &config.mountpoint;
    // Under a quota every growth must reach the daemon; passthrough writes past the end
    // would not (DESIGN.md, "Per-user quota"), so such a mount serves data cached.
    let want =
        config.options.passthrough != Passthrough::Off && config.options.user_quota.is_none();
    let fs = SectionFs::new(Arc::clone(&model), want, config.options.io_uring);
    let ring_granted = fs.ring_granted();

    let mut fuse_config = fuser::Config::default();
    let mut opts = vec![
        MountOption::FSName(fs_name(&config.store)),
        MountOption::Subtype("sectionfs".into()),
        // The kernel checks mode bits and ownership on every access, as on /dev/shm.
        MountOption::DefaultPermissions,
        MountOption::NoDev,
        MountOption::NoSuid,
    ];
    if config.options.read_only {
        opts.push(MountOption::RO);
    }
    fuse_config.mount_options = opts;
    fuse_config.acl = if config.options.allow_other {
        SessionACL::All
    } else {
        SessionACL::Owner
    };
    // Two workers, each with its own /dev/fuse fd: metadata work measured 1.6x faster.
    fuse_config.n_threads = Some(2);
    fuse_config.clone_fd = true;

    // Signals go to one thread that unmounts; block them before any thread is started.
    let signals = block_signals();
    let (session, typed) = open_session(fs, mnt, &fuse_config, config)
        .map_err(|e| format!("cannot mount {}: {}", mnt.display(), mount_error(e)))?;

    crate::fuse::invalidate_kernel_caches(&model, session.notifier());
    let io = if want {
        match probe_passthrough(session.as_fd().as_raw_fd(), model.store().dir_fd()) {
            Ok(()) => IoMode::Passthrough,
            Err(e) if config.options.passthrough == Passthrough::On => {
                drop(session);
                return Err(format!(
                    "passthrough=on, but the kernel refused passthrough ({e}); \
                     it needs Linux 6.9+ and CAP_SYS_ADMIN"
                ));
            }
            Err(e) => {
                log::info!("passthrough unavailable ({e}): serving data through the page cache");
                IoMode::Cached
            }
        }
    } else {
        IoMode::Cached
    };
    model.set_io(io);
    if io == IoMode::Passthrough {
        // Views that outlive their handles are found by this device in /proc/PID/maps.
        match crate::views::mount_dev(mnt.as_os_str().as_bytes()) {
            Some(dev) => model.set_mount_dev(dev),
            None => log::warn!(
                "cannot find {} in /proc/self/mountinfo: shrinks will be refused (EBUSY)",
                mnt.display()
            ),
        }
    }
    let (transport, rings) = if ring_granted.load(Ordering::Relaxed) {
        let (rings, registered) =
            uring::start(session.as_fd(), &session.dispatcher(), MAX_WRITE as usize);
        match registered {
            Ok(()) => (Transport::IoUring, rings),
            Err(e) if config.options.io_uring == Switch::On => {
                // Unmounting ends the connection, and with it the threads that did start
                // (they hold the device open: closing the session alone would not).
                drop(session);
                drop(typed);
                rings.into_iter().for_each(|t| drop(t.join()));
                return Err(format!(
                    "io_uring=on, but the kernel refused the rings: {e}"
                ));
            }
            Err(e) => {
                log::warn!("FUSE over io_uring refused ({e}): requests come through /dev/fuse");
                (Transport::DevFuse, rings)
            }
        }
    } else {
        (Transport::DevFuse, Vec::new())
    };
    model.set_transport(transport);
    log::info!(
        "mounted {} (store {}, io={}, transport={}, commit={})",
        mnt.display(),
        config.store.display(),
        io.as_str(),
        transport.as_str(),
        config.options.commit.as_str()
    );
    let mnt_c = CString::new(mnt.as_os_str().as_bytes()).map_err(|e| e.to_string())?;
    spawn_signal_thread(signals, mnt_c);

    let banner = format!(
        "sectionfs: mounted {} (store {}, io={}, transport={})",
        mnt.display(),
        config.store.display(),
        io.as_str(),
        transport.as_str()
    );
    match ready.take() {
        // The parent prints it, then exits: the mount is live.
        Some(mut ready) => {
            let _ = writeln!(ready, "ok\n{banner}");
        }
        None => println!("{banner}"),
    }
    match session.run_with(rings) {
        Ok(()) => {}
        // After the last user of a lazily detached mount lets go, a worker may read the
        // closed connection as aborted rather than gone: the same end.
        Err(e) if e.raw_os_error() == Some(libc::ECONNABORTED) => {
            log::info!("session ended: the kernel closed the connection ({e})");
        }
        Err(e) => return Err(format!("session ended with an error: {e}")),
    }
    // The kernel ended the session: it was unmounted, nothing is left to take down.
    if let Some(typed) = typed {
        typed.disarm();
    }
    log::info!("unmounted {}", mnt.display());
    Ok(())
}

/// Mounts `mnt` and opens the FUSE session on it. As root the mount is made here with the
/// type `fuse.sectionfs`: fuser's own mount(2) always names the type `fuse`, which hides
/// what the mount is from /proc/mounts, `findmnt -t` and `umount -t`. Where mount(2) is
/// refused (EPERM: not root), fuser mounts through fusermount3 as before.
fn open_session(
    fs: SectionFs,
    mnt: &Path,
    fuse_config: &fuser::Config,
    config: &Config,
) -> io::Result<(fuser::Session<SectionFs>, Option<TypedMount>)> {
    let dev = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")?;
    let mode = std::fs::metadata(mnt)?.mode();
    let mut data = format!(
        "fd={},rootmode={mode:o},user_id={},group_id={},default_permissions",
        dev.as_raw_fd(),
        getuid(),
        getgid(),
    );
    if config.options.allow_other {
        data.push_str(",allow_other");
    }
    let mut flags = MsFlags::MS_NODEV | MsFlags::MS_NOSUID;
    if config.options.read_only {
        flags |= MsFlags::MS_RDONLY;
    }
    let target = CString::new(mnt.as_os_str().as_bytes()).map_err(io::Error::other)?;
    let source = fs_name(&config.store);
    match nix::mount::mount(
        Some(source.as_str()),
        target.as_c_str(),
        Some("fuse.sectionfs"),
        flags,
        Some(data.as_str()),
    ) {
        Ok(()) => {}
        Err(Errno::EPERM) => {
            drop(dev);
            return Ok((fuser::Session::new(fs, mnt, fuse_config)?, None));
        }
        Err(e) => return Err(e.into()),
    }
    let typed = TypedMount(Some(target));
    // The session reads the kernel's INIT here; on failure `typed` takes the mount down.
    let session = fuser::Session::from_fd(fs, dev.into(), fuse_config.acl, fuse_config.clone())?;
    Ok((session, Some(typed)))
}

/// A mount made by [`open_session`]. Unless disarmed once the session has ended by an
/// unmount, dropping it detaches the mount, so no failed start leaves a dead mount behind
/// (fuser does the same for the mounts it makes).
struct TypedMount(Option<CString>);

impl TypedMount {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for TypedMount {
    fn drop(&mut self) {
        if let Some(mnt) = self.0.take() {
            let _ = umount2(mnt.as_c_str(), MntFlags::MNT_DETACH);
        }
    }
}

/// Explains the one failure an unprivileged user cannot read from the errno alone.
fn mount_error(e: io::Error) -> String {
    let euid = geteuid();
    let open = unistd::access("/dev/fuse", AccessFlags::R_OK | AccessFlags::W_OK).is_ok();
    if e.kind() == io::ErrorKind::PermissionDenied && !euid.is_root() && !open {
        // fusermount3 too opens the device as the calling user: its mode is the policy.
        return format!(
            "{e}: /dev/fuse is not open to uid {euid}, so this machine does not let \
             users mount FUSE (Debian's default mode for it is 0666)"
        );
    }
    e.to_string()
}

/// The source column of /proc/mounts: the store path, unless it holds characters that
/// mount option syntax cannot carry.
fn fs_name(store: &Path) -> String {
    match store.to_str() {
        Some(s) if !s.contains([',', ' ', '\t', '\n', '\\']) => s.to_string(),
        _ => "sectionfs".into(),
    }
}

/// Registers a throwaway file of the store as a passthrough backing and closes it again:
/// the kernel's own answer to "will passthrough work here?" (capability, privilege, and
/// the store's stacking depth all in one).
fn probe_passthrough(fuse_fd: i32, store_dir: i32) -> io::Result<()> {
    /// `struct fuse_backing_map` of <linux/fuse.h>.
    #[repr(C)]
    struct BackingMap {
        fd: i32,
        flags: u32,
        padding: u64,
    }
    // FUSE_DEV_IOC_BACKING_OPEN and _CLOSE: _IOW(FUSE_DEV_IOC_MAGIC = 229, 1 and 2, ...).
    nix::ioctl_write_ptr!(backing_open, 229, 1, BackingMap);
    nix::ioctl_write_ptr!(backing_close, 229, 2, u32);

    let probe = openat(
        // SAFETY: the store's directory fd, open for the daemon's lifetime.
        unsafe { BorrowedFd::borrow_raw(store_dir) },
        ".",
        OFlag::O_TMPFILE | OFlag::O_RDWR | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o600),
    )?;
    let map = BackingMap {
        fd: probe.as_raw_fd(),
        flags: 0,
        padding: 0,
    };
    // SAFETY: the ioctl reads one fuse_backing_map, which outlives the call.
    let id = unsafe { backing_open(fuse_fd, &map) }? as u32;
    // SAFETY: the ioctl reads one u32, which outlives the call.
    unsafe { backing_close(fuse_fd, &id) }?;
    Ok(())
}

fn block_signals() -> SigSet {
    let mut set = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        set.add(s);
    }
    if let Err(e) = set.thread_block() {
        log::warn!("cannot block SIGINT/SIGTERM/SIGHUP: {e}");
    }
    set
}

/// Names that go away by themselves (lifetime=handles) are still in the kernel's dentry
/// cache: a thread of its own tells the kernel, since a worker that writes a notification
/// can wait on a directory lock held by a request only the workers can answer.
/// On SIGINT/SIGTERM/SIGHUP: unmount. If files are still in use, detach lazily: the
/// daemon keeps serving them and exits when the last one goes.
fn spawn_signal_thread(set: SigSet, mnt: CString) {
    let spawned = std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            // The set is blocked in every thread: only this wait takes its signals.
            let Ok(sig) = set.wait() else {
                return;
            };
            log::info!("signal {sig}: unmounting {:?}", mnt);
            if let Err(e) = unmount(&mnt, false) {
                log::info!("umount: {e}; detaching lazily");
                if let Err(e) = unmount(&mnt, true) {
                    log::warn!("umount -l: {e}");
                }
            }
        });
    if let Err(e) = spawned {
        log::warn!("no signal thread ({e}): SIGTERM will not unmount");
    }
}

/// Unmounts through umount(2), or through fusermount3 when that is refused (a user's mount).
fn unmount(mnt: &CString, lazy: bool) -> io::Result<()> {
    let flags = if lazy {
        MntFlags::MNT_DETACH
    } else {
        MntFlags::empty()
    };
    match umount2(mnt.as_c_str(), flags) {
        Ok(()) => return Ok(()),
        Err(Errno::EPERM) => {}
        Err(e) => return Err(e.into()),
    }
    // A user's own FUSE mount: only the setuid helper (Debian package fuse3) may unmount it.
    let out = std::process::Command::new("fusermount3")
        .arg(if lazy { "-uz" } else { "-u" })
        .arg("--")
        .arg(OsStr::from_bytes(mnt.as_bytes()))
        .stdin(std::process::Stdio::null())
        .output()?;
    if out.status.success() {
        return Ok(());
    }
    Err(io::Error::other(format!(
        "fusermount3 -u: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    )))
}

/// The background daemon: its own session, stdin/stdout on /dev/null, and its log
/// appended to STORE/daemon.log.
fn detach(config: &Config) {
    let _ = unistd::setsid();
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        let _ = unistd::dup2_stdin(&null);
        let _ = unistd::dup2_stdout(&null);
    }
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(config.store.join("daemon.log"));
    if let Ok(log) = log {
        let _ = unistd::dup2_stderr(&log);
    }
}

/// Refuses a mount point that already has a mount on it.
fn check_not_mounted(mnt: &Path) -> Result<(), String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let target = mnt.as_os_str().as_bytes();
    for line in info.lines() {
        if let Some(point) = line.split(' ').nth(4)
            && unescape_mountinfo(point) == target
        {
            return Err(format!("{} is already a mount point", mnt.display()));
        }
    }
    Ok(())
}

/// /proc/self/mountinfo writes space, tab, newline and backslash as \ooo.
pub fn unescape_mountinfo(field: &str) -> Vec<u8> {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            let octal = std::str::from_utf8(&b[i + 1..i + 4]).ok();
            if let Some(v) = octal.and_then(|o| u8::from_str_radix(o, 8).ok()) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

fn is_default_store(config: &Config) -> bool {
    config.store == crate::cli::default_store(&config.mountpoint)
}

/// The default store's parent lives in world-writable /dev/shm: make sure it is ours and
/// private, so nobody can plant a directory or a link there first.
fn make_private_parent(store: &Path) -> Result<(), String> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    let Some(parent) = store.parent() else {
        return Ok(());
    };
    match std::fs::DirBuilder::new().mode(0o700).create(parent) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(format!("{}: {e}", parent.display())),
    }
    let meta =
        std::fs::symlink_metadata(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    let uid = geteuid().as_raw();
    if !meta.is_dir() || meta.uid() != uid || meta.mode() & 0o077 != 0 {
        return Err(format!(
            "{} is not a private directory of uid {uid}; remove it or give a STORE",
            parent.display()
        ));
    }
    Ok(())
}
