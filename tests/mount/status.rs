//! Creation status through real mounts: the answer CreateFileMapping gives through
//! GetLastError (`created` or `already_exists`), in the sidecar and in the
//! `user.sectionfs.*` extended attributes, per process and race-free.

use crate::common;

use common::{Client, Mount, c_program, modes, read_meta, run_ok};
use std::collections::{BTreeMap, BTreeSet};
use std::fs::OpenOptions;
use std::io::ErrorKind;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// Processes opening one new name at once, and how many names each mode races for.
const RACERS: usize = 8;
const ROUNDS: usize = 50;

/// Waits until the daemon has seen every release of the section (RELEASE is sent after
/// close returns): a readiness wait with a deadline, not a timing assertion.
fn wait_no_handles(mnt: &Path, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let meta = read_meta(mnt, name);
        if meta["open_handles"] == "0" {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "handles never released: {meta:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

mount_test! {
    serial fn exactly_one_of_many_concurrent_creators_gets_created() {
        let probe = c_program("view_probe");
        for opts in modes() {
            let m = Mount::new(opts);
            let out = run_ok(
                Command::new(&probe)
                    .arg("race")
                    .arg(m.path())
                    .arg("race")
                    .arg(RACERS.to_string())
                    .arg(ROUNDS.to_string()),
            );
            // round -> (statuses, inode numbers); every line is one racer's own view.
            let mut rounds: BTreeMap<usize, (Vec<String>, BTreeSet<u64>)> = BTreeMap::new();
            let mut shared = 0;
            for line in out.lines() {
                let fields: Vec<&str> = line.split(' ').collect();
                let round: usize = fields[0].parse().unwrap();
                if fields[1] == "shared=ok" {
                    shared += 1;
                    continue;
                }
                let status = fields[2].strip_prefix("status=").unwrap();
                let xattr = fields[3].strip_prefix("xattr=").unwrap();
                assert_eq!(status, xattr, "{opts}: sidecar and xattr disagree: {line}");
                let ino = fields[4].strip_prefix("ino=").unwrap().parse().unwrap();
                let entry = rounds.entry(round).or_default();
                entry.0.push(status.to_owned());
                entry.1.insert(ino);
            }
            assert_eq!(
                shared, ROUNDS,
                "{opts}: every round shares one section\n{out}"
            );
            assert_eq!(rounds.len(), ROUNDS, "{opts}\n{out}");
            for (round, (statuses, inos)) in &rounds {
                assert_eq!(statuses.len(), RACERS, "{opts} round {round}");
                let created = statuses.iter().filter(|s| *s == "created").count();
                let found = statuses.iter().filter(|s| *s == "already_exists").count();
                assert_eq!(
                    (created, found),
                    (1, RACERS - 1),
                    "{opts} round {round}: {statuses:?}"
                );
                assert_eq!(inos.len(), 1, "{opts} round {round}: one section, {inos:?}");
            }
            // One name per round, each with its sidecar.
            assert_eq!(
                std::fs::read_dir(m.path()).unwrap().count(),
                2 * ROUNDS,
                "{opts}"
            );
            m.unmount();
        }
    }
}

mount_test! {
    serial fn exclusive_create_and_open_of_a_missing_name(opts) {
        let m = Mount::new(opts);
        let path = m.section("Excl");
        let excl = || {
            OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&path)
        };
        let first = excl().unwrap_or_else(|e| panic!("{opts}: O_EXCL on a new name: {e}"));
        assert_eq!(read_meta(m.path(), "Excl")["status"], "created", "{opts}");
        let again = excl().expect_err("O_CREAT|O_EXCL on an existing section");
        assert_eq!(again.raw_os_error(), Some(libc::EEXIST), "{opts}");
        drop(first);

        let missing = OpenOptions::new()
            .read(true)
            .write(true)
            .open(m.section("Missing"))
            .expect_err("open without O_CREAT of a missing section");
        assert_eq!(missing.kind(), ErrorKind::NotFound, "{opts}");
        // The C and Python clients get the same answers.
        for client in [Client::C, Client::Python] {
            let out = client.run(["open".as_ref(), m.section("Missing").as_os_str()]);
            assert_eq!(
                common::client_errno(&out),
                Some(libc::ENOENT),
                "{opts} {client:?}"
            );
        }
        m.unmount();
    }
}

mount_test! {
    /// A reader holding a handle sees its own most recent open; any other reader sees the
    /// most recent open by anyone.
    serial fn status_is_per_process_while_it_holds_a_handle(opts) {
        let m = Mount::new(opts);
        let path = m.section("S");
        let name = path.to_str().unwrap();

        // This test process creates S and holds it.
        let mine = common::open_or_create(&path);
        assert_eq!(read_meta(m.path(), "S")["status"], "created", "{opts}");
        // A shell without a handle: the most recent open is the creation.
        let cat = run_ok(Command::new("cat").arg(format!("{name}.meta")));
        assert!(cat.contains("status=created\n"), "{opts}: {cat}");

        // Another process opens it: it sees its own answer, in C and in Python.
        for client in [Client::C, Client::Python] {
            let out = client.ok(["create", name, "4096"]);
            assert!(
                out.starts_with("status=already_exists\n"),
                "{opts} {client:?}: {out}"
            );
        }
        // The creator still sees its own open; a shell sees the latest one.
        assert_eq!(read_meta(m.path(), "S")["status"], "created", "{opts}");
        assert_eq!(
            xattr(&path, "status"),
            "created",
            "{opts}: the xattr answers as the sidecar"
        );
        let cat = run_ok(Command::new("cat").arg(format!("{name}.meta")));
        assert!(cat.contains("status=already_exists\n"), "{opts}: {cat}");
        // Another process without a handle (python3's os.getxattr, no attr package).
        let other = run_ok(
            Command::new("python3")
                .arg("-c")
                .arg("import os, sys; print(os.getxattr(sys.argv[1], 'user.sectionfs.status').decode(), end='')")
                .arg(&path),
        );
        assert_eq!(other, "already_exists");

        // Its own second open is now its most recent one.
        let second = common::open_or_create(&path);
        assert_eq!(read_meta(m.path(), "S")["status"], "already_exists");
        drop((mine, second));
        wait_no_handles(m.path(), "S");
        m.unmount();
    }
}

/// `user.sectionfs.KEY` of `path`, read by this test process (which may hold a handle).
fn xattr(path: &Path, key: &str) -> String {
    let value = common::get_xattr(path, &format!("user.sectionfs.{key}"))
        .unwrap_or_else(|e| panic!("getxattr {}: {e}", path.display()));
    String::from_utf8(value).unwrap()
}

/// Python threads are kernel threads with their own ids: one opens, a sibling reads.
const THREADS_PY: &str = r#"
import os, subprocess, sys, threading

path = sys.argv[1]
seen = {}
opened, done = threading.Event(), threading.Event()

def opener():
    seen["opener_tid"] = threading.get_native_id()
    seen["fd"] = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    opened.set()
    done.wait()  # alive until the reader is done: the two tids are distinct

def reader():
    seen["reader_tid"] = threading.get_native_id()
    with open(path + ".meta") as f:
        seen["sidecar"] = dict(l.split("=", 1) for l in f.read().splitlines())["status"]
    seen["xattr"] = os.getxattr(path, "user.sectionfs.status").decode()

a = threading.Thread(target=opener); a.start(); opened.wait()
# Another process opens it after us: the most recent open by anyone is now its.
subprocess.run(
    [sys.executable, "-c",
     "import os, sys; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); os.close(fd)",
     path], check=True)
b = threading.Thread(target=reader); b.start(); b.join()
done.set(); a.join()
tids = {seen["opener_tid"], seen["reader_tid"], threading.get_native_id()}
assert len(tids) == 3, tids
print(f"sidecar={seen['sidecar']} xattr={seen['xattr']}")
os.close(seen["fd"])
"#;

mount_test! {
    serial fn a_thread_sees_the_answer_its_sibling_threads_open_got(opts) {
        let m = Mount::new(opts);
        let path = m.section("Threads");
        let out = run_ok(Command::new("python3").arg("-c").arg(THREADS_PY).arg(&path));
        assert_eq!(out, "sidecar=created xattr=created\n", "{opts}");
        // Without a handle, the process is like any other reader again.
        wait_no_handles(m.path(), "Threads");
        assert_eq!(
            read_meta(m.path(), "Threads")["status"],
            "already_exists",
            "{opts}"
        );
        m.unmount();
    }
}

mount_test! {
    /// The daemon keeps a process's answer only while it holds handles: every process that
    /// opens and closes is forgotten (its debug log line says how many are still tracked).
    serial fn per_process_answers_are_forgotten_when_handles_close(opts) {
        const PROCESSES: usize = 20;
        let m = Mount::new(opts);
        let path = m.section("Many");
        let keep = common::open_or_create(&path);
        for _ in 0..PROCESSES {
            Client::C.ok(["open".as_ref(), path.as_os_str()]);
        }
        drop(keep);
        wait_no_handles(m.path(), "Many");
        let log = m.log();
        let forgotten: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("released its last handle"))
            .collect();
        assert_eq!(forgotten.len(), PROCESSES + 1, "{opts}\n{log}");
        assert!(
            forgotten.iter().all(|l| l.ends_with("processes tracked")),
            "{opts}: {forgotten:?}"
        );
        assert!(
            forgotten.last().unwrap().ends_with("; 0 processes tracked"),
            "{opts}: {forgotten:?}"
        );
        m.unmount();
    }
}

mount_test! {
    serial fn xattrs_mirror_the_sidecar(opts) {
        let m = Mount::new(opts);
        let path = m.section("Attrs");
        let name = path.to_str().unwrap();
        run_ok(Command::new("truncate").args(["-s", "12345", name]));
        let meta = read_meta(m.path(), "Attrs");
        assert_eq!(meta["size"], "12345");

        // listxattr + getxattr: every sidecar key, with the same value.
        let attrs: BTreeMap<String, String> = common::list_xattrs(&path)
            .expect("listxattr")
            .iter()
            .filter_map(|k| {
                let key = k.strip_prefix("user.sectionfs.")?;
                let value = common::get_xattr(&path, k).expect("getxattr");
                Some((key.to_owned(), String::from_utf8_lossy(&value).into_owned()))
            })
            .collect();
        assert_eq!(attrs, meta, "{opts}: listxattr");

        // Python's os.listxattr / os.getxattr, which need nothing installed.
        let py = run_ok(
            Command::new("python3")
                .arg("-c")
                .arg(
                    "import os, sys\n\
                     for k in os.listxattr(sys.argv[1]):\n\
                     \x20   print(k, os.getxattr(sys.argv[1], k).decode(), sep='=')",
                )
                .arg(&path),
        );
        let listed: BTreeMap<String, String> = py
            .lines()
            .map(|l| {
                let (k, v) = l.split_once('=').unwrap();
                (
                    k.strip_prefix("user.sectionfs.").unwrap().to_owned(),
                    v.to_owned(),
                )
            })
            .collect();
        assert_eq!(listed, meta, "{opts}: os.listxattr\n{py}");

        // They are read-only, and no other attribute can be set.
        let set = common::set_xattr(&path, "user.sectionfs.status", b"created");
        assert!(set.is_err(), "{opts}: setxattr of ours succeeded");
        let set = common::set_xattr(&path, "user.other", b"x");
        assert!(set.is_err(), "{opts}: setxattr of another succeeded");
        m.unmount();
    }
}
