//! `lifetime=handles`: a section's name goes away with its last handle, as a Windows
//! section does; views that still map it keep working, and its storage is returned once
//! the last of them is unmapped. Through real mounts, in both data modes.

use crate::common;

use common::{Mount, ViewHolder};
use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

const DEADLINE: Duration = Duration::from_secs(10);

/// Waits until `path` no longer exists. The kernel sends RELEASE after close(2) returns,
/// so the name goes shortly after, not at once.
fn wait_gone(path: &Path) {
    let start = Instant::now();
    while path.exists() {
        assert!(
            start.elapsed() < DEADLINE,
            "{} still exists after its last handle closed",
            path.display()
        );
        thread::sleep(Duration::from_millis(10));
    }
}

fn listed(m: &Mount, name: &str) -> bool {
    fs::read_dir(m.path())
        .expect("list the mount")
        .any(|e| e.expect("entry").file_name() == name)
}

mount_test! {
    fn the_name_goes_with_the_last_handle(mode) {
        let m = Mount::new(&format!("lifetime=handles,{mode}"));
        let path = m.section("s");
        let mut first = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .expect("create s");
        first.write_all(b"hello").expect("write s");
        let meta = common::read_meta(m.path(), "s");
        assert_eq!(meta["lifetime"], "handles", "{mode}");
        let mut second = fs::File::open(&path).expect("open s again");
        drop(first);
        // Give a release of the first handle every chance to arrive: the name stays.
        let mut text = String::new();
        second.read_to_string(&mut text).expect("read s");
        assert_eq!(text, "hello", "{mode}");
        assert!(
            path.exists() && listed(&m, "s"),
            "{mode}: one handle is open"
        );
        drop(second);
        wait_gone(&path);
        assert!(!listed(&m, "s"), "{mode}");
        assert!(!m.section("s.meta").exists(), "{mode}");
        // The name is free again: a new section, not the old one.
        fs::write(&path, b"new").expect("create s again");
        wait_gone(&path);
        assert!(
            fs::read_dir(m.store().join("sections"))
                .expect("list the store")
                .next()
                .is_none(),
            "{mode}: the store keeps nothing"
        );
    }
}

mount_test! {
    fn persistent_stays_the_default_and_setfattr_chooses_per_section() {
        let m = Mount::new("");
        fs::write(m.section("kept"), b"k").expect("create kept");
        assert!(m.section("kept").exists());
        // Persistent is said by saying nothing: the sidecar keeps its first eight keys only.
        assert!(!common::read_meta(m.path(), "kept").contains_key("lifetime"));
        // The shell recipe of the README: hold a handle, choose, let go.
        let dir = m.path().display();
        let out = common::sh(&format!(
            "cd {dir} && exec 3<>brief && \
             setfattr -n user.sectionfs.lifetime -v handles brief && \
             getfattr --only-values -n user.sectionfs.lifetime brief && \
             grep -x lifetime=handles brief.meta && exec 3>&-"
        ));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).starts_with("handles"));
        wait_gone(&m.section("brief"));
        assert!(m.section("kept").exists());
        // Only the two lifetimes exist.
        let bad = common::set_xattr(&m.section("kept"), "user.sectionfs.lifetime", b"forever")
            .expect_err("an unknown lifetime");
        assert_eq!(bad.raw_os_error(), Some(libc::EINVAL));
    }
}

mount_test! {
    fn a_view_outlives_the_handles(mode) {
        let m = Mount::new(&format!("lifetime=handles,{mode}"));
        let path = m.section("v");
        let mut view = ViewHolder::start(&path, 1 << 20);
        assert_eq!(view.say("fill 65"), "ok", "{mode}");
        let other = fs::read(&path).expect("read v through a second handle");
        assert!(
            other.len() == 1 << 20 && other.iter().all(|&b| b == 65),
            "{mode}"
        );
        assert_eq!(view.say("close"), "ok", "{mode}");
        if mode == "passthrough=on" {
            // The handle is closed, the view lives: on Windows, the name is gone.
            wait_gone(&path);
        } else {
            // Through the page cache, the kernel keeps the file open for the view: it is
            // released (and the name goes) only at munmap.
            assert!(path.exists(), "{mode}");
        }
        assert_eq!(view.say("check 65"), "ok", "{mode}");
        assert_eq!(view.say("fill 66"), "ok", "{mode}");
        assert_eq!(view.say("check 66"), "ok", "{mode}");
        let (status, err) = view.finish();
        assert!(status.success(), "{mode}: {err}");
        wait_gone(&path);
    }
}

mount_test! {
    fn storage_is_returned_after_the_last_view(mode) {
        let tmpfs = common::Tmpfs::new("128m");
        let m = Mount::with_store(&tmpfs.path().join("store"), &format!("lifetime=handles,{mode}"));
        let before = tmpfs.used();
        let size = 32 << 20;
        let path = m.section("big");
        let mut view = ViewHolder::start(&path, size);
        assert_eq!(view.say("fill 7"), "ok");
        assert_eq!(view.say("close"), "ok");
        assert!(
            tmpfs.used() >= before + size,
            "{mode}: the view holds the bytes"
        );
        let (status, err) = view.finish();
        assert!(status.success(), "{mode}: {err}");
        wait_gone(&path);
        let start = Instant::now();
        while tmpfs.used() > before + (1 << 20) {
            assert!(
                start.elapsed() < DEADLINE,
                "{mode}: {} bytes still used after the last view",
                tmpfs.used() - before
            );
            thread::sleep(Duration::from_millis(10));
        }
        m.unmount();
    }
}
