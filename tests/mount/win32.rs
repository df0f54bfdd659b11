//! The C library of `clients/c` (`sections.h`: CreateFileMapping, MapViewOfFile, ...),
//! installed by `mount-scripts/install.sh` into a temporary prefix and linked by real C
//! programs through `pkg-config --cflags --libs sections`; several processes share, grow
//! and race on sections of a real mount, in both data modes.

use crate::common;

use common::{Mount, run_ok};
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc::{Receiver, channel};
use std::thread;
use std::time::{Duration, Instant};

const DEADLINE: Duration = Duration::from_secs(30);

fn manifest() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A prefix that `install.sh` filled once per test binary (the test build of the daemon
/// stands in for the release build, which would take minutes).
fn prefix() -> &'static Path {
    static PREFIX: OnceLock<PathBuf> = OnceLock::new();
    PREFIX.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("win32-prefix-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        run_ok(
            Command::new(manifest().join("mount-scripts/install.sh"))
                .env("PREFIX", &dir)
                .env("SECTIONFS_BIN", common::daemon_bin()),
        );
        for f in [
            "include/sections.h",
            "lib/libsections.so",
            "lib/libsections.a",
        ] {
            assert!(dir.join(f).exists(), "install.sh did not install {f}");
        }
        dir
    })
}

/// Compiles `src` as the README says: `cc prog.c $(pkg-config --cflags --libs sections)`.
fn build(src: &Path, out: &str, flags: &str) -> PathBuf {
    let bin = prefix().join(out);
    let script = format!(
        "cc -Wall -Wextra -Werror {flags} -o '{}' '{}' $(pkg-config --cflags --libs sections)",
        bin.display(),
        src.display()
    );
    run_ok(
        Command::new("sh")
            .arg("-c")
            .arg(script)
            .env("PKG_CONFIG_PATH", prefix().join("lib/pkgconfig")),
    );
    bin
}

fn probe_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| build(&manifest().join("tests/clients/win32_probe.c"), "probe", ""))
        .clone()
}

/// A running `win32_probe` script, read line by line with a deadline.
struct Probe {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
}

impl Probe {
    fn start(mnt: &Path, script: &[&str]) -> Probe {
        Probe::start_bin(&probe_bin(), mnt, script)
    }

    fn start_bin(bin: &Path, mnt: &Path, script: &[&str]) -> Probe {
        let mut child = Command::new(bin)
            .args(script)
            .env("SECTIONFS_MOUNT", mnt)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stdin = child.stdin.take();
        Probe {
            child,
            stdin,
            lines,
        }
    }

    fn line(&mut self) -> String {
        self.lines
            .recv_timeout(DEADLINE)
            .unwrap_or_else(|e| panic!("no line from the probe within {DEADLINE:?}: {e}"))
    }

    fn expect(&mut self, want: &[&str]) {
        for w in want {
            assert_eq!(self.line(), *w);
        }
    }

    /// Ends a `wait` step.
    fn resume(&mut self) {
        let stdin = self.stdin.as_mut().expect("stdin");
        stdin.write_all(b"\n").expect("write to the probe");
        stdin.flush().expect("write to the probe");
    }

    /// Closes its stdin and waits for its exit (killing it past the deadline).
    fn finish(mut self) -> std::process::ExitStatus {
        drop(self.stdin.take());
        let mut exit = None;
        match common::wait_child(&mut self.child, &mut exit, DEADLINE) {
            Some(status) => status,
            None => {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("the probe did not exit within {DEADLINE:?}");
            }
        }
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        // Our own child only, and only if it was not reaped yet.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs a script to its end and returns its lines and exit status.
fn run(mnt: &Path, script: &[&str]) -> (Vec<String>, std::process::ExitStatus) {
    let mut p = Probe::start(mnt, script);
    drop(p.stdin.take());
    let status = p.finish_keep();
    let mut lines = Vec::new();
    while let Ok(l) = p.lines.recv_timeout(Duration::from_secs(5)) {
        lines.push(l);
    }
    (lines, status)
}

impl Probe {
    fn finish_keep(&mut self) -> std::process::ExitStatus {
        let mut exit = None;
        match common::wait_child(&mut self.child, &mut exit, DEADLINE) {
            Some(status) => status,
            None => panic!("the probe did not exit within {DEADLINE:?}"),
        }
    }
}

fn run_ok_lines(mnt: &Path, script: &[&str]) -> Vec<String> {
    let (lines, status) = run(mnt, script);
    assert!(status.success(), "{script:?}: {status} {lines:?}");
    lines
}

fn wait_gone(path: &Path) {
    let start = Instant::now();
    while path.exists() {
        assert!(
            start.elapsed() < DEADLINE,
            "{} still exists after its last handle and view",
            path.display()
        );
        thread::sleep(Duration::from_millis(10));
    }
}

mount_test! {
    serial fn a_windows_program_compiles_unchanged_and_shares_by_name(mode) {
        // Built once for both modes.
        static BINS: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
        let (ansi, wide) = BINS.get_or_init(|| {
            let src = manifest().join("examples/shared_memory.c");
            let text = fs::read_to_string(&src).expect("read the example");
            assert!(text.contains("#include <sections.h> /* on Windows: #include <windows.h> */"));
            (
                build(&src, "shared_memory", ""),
                build(&src, "shared_memory_w", "-DUNICODE"),
            )
        });
        let m = Mount::new(mode);
        for (writer, reader) in [(&ansi, &wide), (&wide, &ansi)] {
            let mut w = Probe::start_bin(writer, m.path(), &["write"]);
            w.expect(&["Written; press Enter to close."]);
            let read = run_ok(
                Command::new(reader)
                    .arg("read")
                    .env("SECTIONFS_MOUNT", m.path()),
            );
            assert_eq!(read, "Message from first process.\n", "{mode}");
            w.resume();
            assert!(w.finish().success(), "{mode}");
            // The writer held the only handle: the section is gone, as on Windows.
            wait_gone(&m.section("MyFileMappingObject"));
            let out = Command::new(reader)
                .arg("read")
                .env("SECTIONFS_MOUNT", m.path())
                .output()
                .expect("run the reader");
            assert_eq!(out.status.code(), Some(1), "{mode}");
            assert_eq!(
                String::from_utf8_lossy(&out.stderr),
                "Could not open file mapping object (2).\n"
            );
        }
        m.unmount();
    }
}

mount_test! {
    serial fn exactly_one_creator_among_racing_processes_and_threads(mode) {
        const RACERS: usize = 8;
        let m = Mount::new(mode);
        let gate = tempfile::tempdir().expect("temp dir");
        for round in 0..5 {
            let go = gate.path().join(format!("go{round}"));
            let name = format!("Race{round}");
            let go_arg = go.to_str().unwrap();
            let mut racers: Vec<Probe> = (0..RACERS)
                .map(|_| {
                    Probe::start(
                        m.path(),
                        &["go", go_arg, "create", &name, "4096", "rw", "wait", "close"],
                    )
                })
                .collect();
            fs::write(&go, b"").expect("open the gate");
            let mut answers = Vec::new();
            for r in &mut racers {
                r.expect(&["go=ok"]);
                answers.push(r.line());
            }
            let created = answers.iter().filter(|a| *a == "create=0").count();
            let found = answers.iter().filter(|a| *a == "create=183").count();
            assert_eq!(
                (created, found),
                (1, RACERS - 1),
                "{mode} round {round}: {answers:?}"
            );
            for mut r in racers {
                r.resume();
                r.expect(&["wait=ok", "close=ok"]);
                assert!(r.finish().success());
            }
            wait_gone(&m.section(&name));
        }
        // Threads of one process: each has its own GetLastError.
        for round in 0..5 {
            let name = format!("Threads{round}");
            assert_eq!(
                run_ok_lines(m.path(), &["threads", &name, "8", "tls"]),
                ["creators=1 exists=7 other=0", "tls=ok"],
                "{mode} round {round}"
            );
            wait_gone(&m.section(&name));
        }
        m.unmount();
    }
}

mount_test! {
    serial fn processes_share_and_grow_a_section() {
        for mode in common::modes() {
            let m = Mount::new(mode);
            let mut a = Probe::start(
                m.path(),
                &[
                    "create", "S", "4096", "rw", "map", "w", "0", "0", "write", "0", "first", "wait",
                    "size", "map", "all", "0", "0", "read", "4096", "16", "read", "0", "16", "flush",
                ],
            );
            a.expect(&["create=0", "map=ok", "write=ok"]);
            // A second CreateFileMapping with a larger size grows it (KB Q104012).
            assert_eq!(
                run_ok_lines(
                    m.path(),
                    &[
                        "create", "S", "8192", "rw", "size", "map", "w", "0", "0", "read", "0", "16",
                        "write", "4096", "tail"
                    ]
                ),
                [
                    "create=183",
                    "size=8192",
                    "map=ok",
                    "read=first",
                    "write=ok"
                ],
                "{mode}"
            );
            // A smaller size never shrinks it; a view past the end is refused.
            assert_eq!(
                run_ok_lines(
                    m.path(),
                    &[
                        "create", "S", "4096", "rw", "size", "map", "r", "4096", "8192", "map", "r",
                        "3000", "0", "open", "S", "r", "map", "r", "4096", "0", "read", "0", "8"
                    ]
                ),
                [
                    "create=183",
                    "size=8192",
                    "map=fail:5",
                    "map=fail:1132",
                    "open=0",
                    "map=ok",
                    "read=tail"
                ],
                "{mode}"
            );
            a.resume();
            a.expect(&[
                "wait=ok",
                "size=8192",
                "map=ok",
                "read=tail",
                "read=first",
                "flush=ok",
            ]);
            assert!(a.finish().success());
            wait_gone(&m.section("S"));
            assert_eq!(
                run_ok_lines(m.path(), &["open", "S", "r", "create", "Z", "0", "rw"]),
                ["open=fail:2", "create=fail:87"],
                "{mode}"
            );
            m.unmount();
        }
        // Growth the store (here: the user's quota) cannot hold is ERROR_DISK_FULL and leaves
        // no section behind; SEC_RESERVE is accepted for a section of the mount.
        let m = Mount::new("user_quota=64k,commit=lazy");
        assert_eq!(
            run_ok_lines(
                m.path(),
                &[
                    "create",
                    "Big",
                    "1048576",
                    "rw",
                    "create",
                    "Big",
                    "32768",
                    "rw+reserve",
                    "size"
                ]
            ),
            ["create=fail:112", "create=0", "size=32768"]
        );
        wait_gone(&m.section("Big"));
        m.unmount();
    }
}

mount_test! {
    serial fn readonly_views_cannot_write_and_copy_views_are_private(mode) {
        let m = Mount::new(mode);
        let mut a = Probe::start(
            m.path(),
            &[
                "create", "S", "4096", "rw", "map", "w", "0", "0", "write", "0", "shared", "wait",
                "read", "0", "16",
            ],
        );
        a.expect(&["create=0", "map=ok", "write=ok"]);
        // A read-only view: reading works, a store is the access violation (SIGSEGV).
        for script in [
            &[
                "open", "S", "r", "map", "r", "0", "0", "read", "0", "6", "write", "0", "X",
            ][..],
            &[
                "create", "S", "4096", "ro", "map", "r", "0", "0", "read", "0", "6", "write", "0",
                "X",
            ],
        ] {
            let (lines, status) = run(m.path(), script);
            assert_eq!(
                status.signal(),
                Some(libc::SIGSEGV),
                "{mode} {script:?}: {lines:?}"
            );
            assert_eq!(
                lines.last().map(String::as_str),
                Some("read=shared"),
                "{mode}"
            );
        }
        // No writable view from a read-only handle.
        assert_eq!(
            run_ok_lines(
                m.path(),
                &[
                    "open", "S", "r", "map", "w", "0", "0", "create", "S", "0", "copy"
                ]
            ),
            ["open=0", "map=fail:5", "create=fail:87"],
            "{mode}"
        );
        // FILE_MAP_COPY: private writes, from a read-only handle too.
        assert_eq!(
            run_ok_lines(
                m.path(),
                &[
                    "open", "S", "copy", "map", "copy", "0", "0", "write", "0", "private", "read",
                    "0", "16"
                ]
            ),
            ["open=0", "map=ok", "write=ok", "read=private"],
            "{mode}"
        );
        a.resume();
        a.expect(&["wait=ok", "read=shared"]);
        assert!(a.finish().success());
        // A section created PAGE_READONLY: its views cannot write either.
        let (lines, status) = run(
            m.path(),
            &[
                "create", "R", "4096", "ro", "map", "all", "0", "0", "map", "r", "0", "0", "write",
                "0", "X",
            ],
        );
        assert_eq!(lines[..3], ["create=0", "map=fail:5", "map=ok"], "{mode}");
        assert_eq!(status.signal(), Some(libc::SIGSEGV), "{mode}");
        wait_gone(&m.section("R"));
        m.unmount();
    }
}

mount_test! {
    serial fn namespaces_names_and_wide_names(mode) {
        let long = "n".repeat(251);
        let m = Mount::new(mode);
        let mut a = Probe::start(
            m.path(),
            &[
                "create",
                "Local\\N",
                "4096",
                "rw",
                "map",
                "w",
                "0",
                "0",
                "write",
                "0",
                "local",
                "create",
                "Global\\N",
                "4096",
                "rw",
                "map",
                "w",
                "0",
                "0",
                "write",
                "0",
                "global",
                "createw",
                "Grüße😀",
                "4096",
                "wait",
            ],
        );
        a.expect(&[
            "create=0", "map=ok", "write=ok", "create=0", "map=ok", "write=ok", "create=0",
        ]);
        // Global\ is the root; Local\ is the caller's own namespace, a different section.
        let uid = unsafe { libc::geteuid() };
        let local = fs::read(m.path().join(format!("Sessions/{uid}/N"))).expect("Local N");
        assert!(local.starts_with(b"local\0"), "{mode}");
        assert!(fs::read(m.section("N")).unwrap().starts_with(b"global\0"));
        assert!(
            m.section("Grüße😀").exists(),
            "{mode}: the UTF-16 name as UTF-8"
        );
        assert_eq!(
            run_ok_lines(
                m.path(),
                &[
                    "create",
                    "N",
                    "4096",
                    "rw",
                    "open",
                    "Local\\N",
                    "r",
                    "map",
                    "r",
                    "0",
                    "0",
                    "read",
                    "0",
                    "8",
                    "createw",
                    "Grüße😀",
                    "1",
                ]
            ),
            ["create=183", "open=0", "map=ok", "read=local", "create=183"],
            "{mode}"
        );
        // A backslash other than the prefix's, and what no file name can be.
        let refused: Vec<String> = [
            "a\\b",
            "Global\\a\\b",
            "Local\\",
            "Session\\1\\x",
            "a/b",
            "x.meta",
            "..",
            &long,
        ]
        .iter()
        .flat_map(|n| run_ok_lines(m.path(), &["create", n, "4096", "rw"]))
        .collect();
        assert_eq!(
            refused,
            [
                "create=fail:87",
                "create=fail:87",
                "create=fail:87",
                "create=fail:87",
                "create=fail:87",
                "create=fail:87",
                "create=fail:87",
                "create=fail:206"
            ],
            "{mode}"
        );
        a.resume();
        assert!(a.finish().success());
        wait_gone(&m.section("N"));
        wait_gone(&m.section("Grüße😀"));
        m.unmount();
    }
}

mount_test! {
    serial fn views_keep_a_section_and_the_last_one_ends_it(mode) {
        let m = Mount::new(mode);
        let mut a = Probe::start(
            m.path(),
            &[
                "create", "L", "4096", "rw", "map", "w", "0", "0", "write", "0", "kept", "close",
                "wait", "read", "0", "8", "unmap", "wait",
            ],
        );
        a.expect(&["create=0", "map=ok", "write=ok", "close=ok"]);
        // The handle is closed, the view lives: on Windows the section stays.
        assert_eq!(common::read_meta(m.path(), "L")["lifetime"], "handles");
        assert_eq!(
            run_ok_lines(
                m.path(),
                &["open", "L", "r", "map", "r", "0", "0", "read", "0", "8"]
            ),
            ["open=0", "map=ok", "read=kept"],
            "{mode}"
        );
        a.resume();
        a.expect(&["wait=ok", "read=kept", "unmap=ok"]);
        // The last view is gone: so is the section, while the process still runs.
        wait_gone(&m.section("L"));
        assert_eq!(run_ok_lines(m.path(), &["open", "L", "r"]), ["open=fail:2"]);
        assert!(a.finish().success());
        m.unmount();
    }
}

mount_test! {
    serial fn a_section_over_a_file_handle(mode) {
        let dir = tempfile::tempdir().expect("temp dir");
        let empty = dir.path().join("empty");
        fs::write(&empty, b"").unwrap();
        let m = Mount::new(mode);
        let file = dir.path().join(format!("data-{}", mode.replace('=', "-")));
        fs::write(&file, b"filedata").unwrap();
        let path = file.to_str().unwrap();
        let mut a = Probe::start(
            m.path(),
            &[
                "file", path, "8192", "F", "rw", "map", "w", "0", "0", "read", "0", "8", "write",
                "0", "FILE", "flush", "wait", "close", "unmap",
            ],
        );
        a.expect(&[
            "create=0",
            "map=ok",
            "read=filedata",
            "write=ok",
            "flush=ok",
        ]);
        // The file grew to the section's size and holds what the view wrote.
        let bytes = fs::read(&file).unwrap();
        assert_eq!(bytes.len(), 8192, "{mode}");
        assert!(
            bytes.starts_with(b"FILE\0ata"),
            "{mode}: {:?}",
            &bytes[..16]
        );
        let meta = common::read_meta(m.path(), "F");
        assert_eq!(meta["backing"], format!("file:{path}"), "{mode}");
        assert_eq!(meta["lifetime"], "handles", "{mode}");
        // Another process opens it by name; an unnamed section over the file, read-only.
        assert_eq!(
            run_ok_lines(
                m.path(),
                &[
                    "open", "F", "r", "map", "r", "0", "0", "read", "0", "4", "file", path, "0",
                    "-", "ro", "map", "r", "0", "0", "read", "0", "4", "size"
                ]
            ),
            [
                "open=0",
                "map=ok",
                "read=FILE",
                "create=0",
                "map=ok",
                "read=FILE",
                "size=8192"
            ],
            "{mode}"
        );
        // A file of size 0 with size 0, and a read-only file asked to grow.
        let empty_path = empty.to_str().unwrap();
        assert_eq!(
            run_ok_lines(
                m.path(),
                &[
                    "file",
                    empty_path,
                    "0",
                    "E",
                    "ro",
                    "file",
                    path,
                    "16384",
                    "G",
                    "ro",
                    "file",
                    path,
                    "0",
                    "Global\\a\\b",
                    "rw"
                ]
            ),
            ["create=fail:1006", "create=fail:5", "create=fail:87"],
            "{mode}"
        );
        a.resume();
        a.expect(&["wait=ok", "close=ok", "unmap=ok"]);
        assert!(a.finish().success());
        // The section goes with its last handle and view; the file stays.
        wait_gone(&m.section("F"));
        assert_eq!(fs::read(&file).unwrap().len(), 8192, "{mode}");
        m.unmount();
    }
}

mount_test! {
    serial fn the_static_library_links_too() {
        let bin = prefix().join("probe_static");
        run_ok(
            Command::new("sh")
                .arg("-c")
                .arg(format!(
                    "cc -Wall -Wextra -Werror -o '{}' '{}' $(pkg-config --cflags sections) '{}' -pthread",
                    bin.display(),
                    manifest().join("tests/clients/win32_probe.c").display(),
                    prefix().join("lib/libsections.a").display()
                ))
                .env("PKG_CONFIG_PATH", prefix().join("lib/pkgconfig")),
        );
        let m = Mount::new("");
        let mut p = Probe::start_bin(&bin, m.path(), &["create", "S", "4096", "rw", "tls"]);
        p.expect(&["create=0", "tls=ok"]);
        assert!(p.finish().success());
        wait_gone(&m.section("S"));
        m.unmount();
    }
}
