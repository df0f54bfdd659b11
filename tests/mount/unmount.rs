//! Unmounting: `umount` of a busy mount fails with EBUSY and changes nothing; `umount -l`
//! detaches the mount while existing views keep working. Either way the daemon exits 0
//! once the last user lets go.

use crate::common;

use common::{Mount, ViewHolder, is_mounted, read_meta, umount};
use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::Path;

mount_test! {
    fn umount_of_a_busy_mount_fails_with_ebusy_and_changes_nothing(opts) {
        let mount = Mount::new(opts);
        let path = mount.section("busy");
        fs::write(&path, b"before").expect("write the section");
        let listing = list(mount.path());

        // Busy through an open file.
        let file = File::options()
            .read(true)
            .write(true)
            .open(&path)
            .expect("open the section");
        expect_ebusy(&mount, opts);
        assert_eq!(list(mount.path()), listing, "{opts}: the listing changed");
        let mut buf = [0u8; 6];
        file.read_exact_at(&mut buf, 0)
            .expect("read through the handle");
        assert_eq!(&buf, b"before", "{opts}: the bytes changed");
        // The handle and the mount still serve.
        file.write_all_at(b"after!", 0)
            .expect("write through the handle");
        assert_eq!(fs::read(&path).unwrap(), b"after!");
        assert_eq!(read_meta(mount.path(), "busy")["size"], "6");
        drop(file);

        // Busy through a view whose file descriptor is closed.
        let mut view = ViewHolder::start(&path, 4096);
        assert_eq!(view.say("close"), "ok");
        expect_ebusy(&mount, opts);
        assert_eq!(view.say("fill 7"), "ok", "{opts}: the view after EBUSY");
        let (status, err) = view.finish();
        assert!(status.success(), "{opts}: view holder: {status}\n{err}");
        assert_eq!(fs::read(&path).unwrap(), [7u8; 4096]);

        // Released: a plain umount now works and the daemon exits 0.
        mount.unmount();
    }
}

mount_test! {
    fn lazy_umount_detaches_and_existing_views_keep_working(opts) {
        const SIZE: u64 = 64 * 1024;
        let dir = tempfile::Builder::new()
            .prefix("sectionfs-unmount-")
            .tempdir()
            .expect("create a temp dir for the store");
        let store = dir.path().join("store");
        let mount = Mount::with_store(&store, opts);
        let mut view = ViewHolder::start(&mount.section("lazy"), SIZE);
        assert_eq!(view.say("fill 1"), "ok");

        umount(mount.path(), true).unwrap_or_else(|e| panic!("{opts}: umount -l: {e}"));
        assert!(
            !is_mounted(mount.path()),
            "{opts}: still mounted after umount -l"
        );
        assert!(
            daemon_alive(mount.pid()),
            "{opts}: the daemon must keep serving the detached mount's views\n{}",
            mount.log()
        );
        // The view is served as before: writes, msync, and reads back.
        assert_eq!(view.say("fill 2"), "ok", "{opts}: the view after umount -l");
        assert_eq!(view.say("check 2"), "ok");
        let (status, err) = view.finish();
        assert!(status.success(), "{opts}: view holder: {status}\n{err}");

        // The last user is gone: the daemon exits 0 (`unmount` finds no mount left and
        // requires exactly that).
        mount.unmount();

        // What the view wrote after the detach is in the store.
        let mount = Mount::with_store(&store, opts);
        let data = fs::read(mount.section("lazy")).expect("read the section");
        assert_eq!(data.len() as u64, SIZE);
        assert!(
            data.iter().all(|&b| b == 2),
            "{opts}: the view's last writes are lost"
        );
        mount.unmount();
    }
}

fn expect_ebusy(mount: &Mount, opts: &str) {
    let err = umount(mount.path(), false).expect_err("umount of a busy mount must fail");
    assert_eq!(
        err.raw_os_error(),
        Some(libc::EBUSY),
        "{opts}: umount of a busy mount: {err}"
    );
    assert!(is_mounted(mount.path()), "{opts}: EBUSY, yet unmounted");
}

fn list(mnt: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(mnt)
        .expect("list the mount")
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Whether process `pid` (our own daemon child, not yet reaped) is still running.
fn daemon_alive(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            // The state follows the parenthesized command name.
            let state = s.rsplit(')').next().unwrap_or("").trim_start();
            !state.starts_with('Z') && !state.starts_with('X')
        })
        .unwrap_or(false)
}
