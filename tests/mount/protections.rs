//! Page protections through real mounts: PAGE_READONLY (an O_RDONLY handle, or mode
//! bits without write for the caller), PAGE_WRITECOPY (MAP_PRIVATE), and views of a
//! section of size 0.

use crate::common;

use common::{Client, Mount, c_program, run_ok};
use std::fs::{self, Permissions};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Command, Output};

/// The unprivileged user the mode-bit checks run as.
const NOBODY: u32 = 65534;

fn probe(args: &[&str], path: &Path) -> Command {
    let mut cmd = Command::new(c_program("view_probe"));
    cmd.arg(args[0]).arg(path).args(&args[1..]);
    cmd
}

fn create(path: &Path, size: u64) {
    let f = common::open_or_create(path);
    f.set_len(size).unwrap();
}

fn as_nobody(mut cmd: Command) -> Output {
    cmd.uid(NOBODY).gid(NOBODY);
    cmd.output().unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

mount_test! {
    serial fn a_read_only_handle_cannot_write_or_map_for_writing(opts) {
        let m = Mount::new(opts);
        let path = m.section("RO");
        create(&path, 8192);
        let out = run_ok(&mut probe(&["readonly"], &path));
        assert_eq!(
            out,
            "map_shared_write=EACCES mprotect_write=EACCES write=EBADF \
             map_shared_read=ok open_rdwr=ok\n",
            "{opts}"
        );
        m.unmount();
    }
}

mount_test! {
    serial fn mode_bits_without_write_make_a_section_read_only(opts) {
        let m = Mount::new(&format!("allow_other,{opts}"));
        // The mount lives in a private (0700) temp dir: let the other user reach it.
        fs::set_permissions(m.path().parent().unwrap(), Permissions::from_mode(0o755)).unwrap();

        // Root's section, 0644: no write bit for others.
        let theirs = m.section("Theirs");
        create(&theirs, 8192);
        // Nobody's own section, made 0444: no write bit for its owner either.
        let own = m.section("Own");
        create(&own, 8192);
        fs::set_permissions(&own, Permissions::from_mode(0o444)).unwrap();
        std::os::unix::fs::chown(&own, Some(NOBODY), Some(NOBODY)).unwrap();

        for path in [&theirs, &own] {
            let out = as_nobody(probe(&["readonly"], path));
            assert!(out.status.success(), "{opts} {path:?}: {out:?}");
            assert_eq!(
                stdout(&out),
                "map_shared_write=EACCES mprotect_write=EACCES write=EBADF \
                 map_shared_read=ok open_rdwr=EACCES\n",
                "{opts} {path:?}"
            );
            // Nor through a path: truncate needs write permission.
            let mut grow = Command::new("truncate");
            grow.args(["-s", "1M"]).arg(path);
            let out = as_nobody(grow);
            assert!(!out.status.success(), "{opts}: truncate by nobody worked");
            assert_eq!(fs::metadata(path).unwrap().len(), 8192);
        }
        // Reading and private (copy-on-write) views stay allowed.
        let out = as_nobody(probe(&["private", "4096", "9"], &theirs));
        assert_eq!(stdout(&out), "ok first=0\n", "{opts}: {out:?}");
        m.unmount();
    }
}

mount_test! {
    serial fn private_views_see_the_section_and_keep_their_writes(opts) {
        let m = Mount::new(opts);
        let path = m.section("Cow");
        create(&path, 1 << 20);
        let name = path.as_os_str();
        Client::C.ok([
            "fill".as_ref(),
            name,
            "0".as_ref(),
            "1048576".as_ref(),
            "17".as_ref(),
        ]);
        // Through a read-only handle (FILE_MAP_COPY needs no write access).
        let out = run_ok(&mut probe(&["private", "1048576", "99"], &path));
        assert_eq!(out, "ok first=17\n", "{opts}");
        // The section and other processes' views are unchanged.
        let out = Client::Python.ok([
            "check".as_ref(),
            name,
            "0".as_ref(),
            "1048576".as_ref(),
            "17".as_ref(),
        ]);
        assert_eq!(out, "ok\n", "{opts}");
        assert_eq!(fs::read(&path).unwrap(), vec![17u8; 1 << 20], "{opts}");
        m.unmount();
    }
}

mount_test! {
    /// A section of size 0 opens and grows like any file; a view of it has no pages until it
    /// grows (Linux raises SIGBUS at the touch, where Windows refuses the mapping with
    /// ERROR_FILE_INVALID; see the README).
    serial fn an_empty_section_opens_grows_and_faults_when_touched(opts) {
        let m = Mount::new(opts);
        let path = m.section("Empty");
        create(&path, 0);
        let name = path.as_os_str();
        assert_eq!(Client::C.ok(["open".as_ref(), name]), "size=0\n");
        let out = probe(&["touch", "0", "1", "7"], &path).output().unwrap();
        assert_eq!(out.status.signal(), Some(libc::SIGBUS), "{opts}: {out:?}");

        run_ok(Command::new("truncate").args(["-s", "4096"]).arg(&path));
        let out = run_ok(&mut probe(&["touch", "0", "4096", "7"], &path));
        assert_eq!(out, "ok\n", "{opts}");
        assert_eq!(fs::read(&path).unwrap(), vec![7u8; 4096], "{opts}");
        m.unmount();
    }
}
