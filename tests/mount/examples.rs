//! The programs of `examples/` (C, Python, Rust) against a real mount, in both data modes:
//! each opens-or-creates, prints the creation status, grows, maps the new tail, and
//! adds to one counter they share under the section's lock.

use crate::common;

use common::{Mount, run_ok};
use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

const ROUNDS: u32 = 1500;

fn manifest() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// examples/counter.c, compiled once per test run.
fn c_example() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
        fs::create_dir_all(dir).expect("create CARGO_TARGET_TMPDIR");
        let tmp = dir.join(format!("example_counter.{}.tmp", std::process::id()));
        run_ok(
            Command::new("cc")
                .args(["-O2", "-Wall", "-Wextra", "-Werror", "-o"])
                .arg(&tmp)
                .arg(manifest().join("examples/counter.c")),
        );
        let bin = dir.join("example_counter");
        fs::rename(&tmp, &bin).expect("move the compiled example into place");
        bin
    })
    .clone()
}

/// examples/counter.rs, built by cargo (a no-op when `cargo test --all-targets` built it).
fn rust_example() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        run_ok(
            Command::new(cargo)
                .args(["build", "--quiet", "--example", "counter"])
                .current_dir(manifest()),
        );
        // The daemon binary sits in target/<profile>/, the examples one level down.
        let bin = Path::new(env!("CARGO_BIN_EXE_sectionfs"))
            .with_file_name("examples")
            .join("counter");
        assert!(bin.exists(), "{} was not built", bin.display());
        bin
    })
    .clone()
}

#[derive(Clone, Copy, Debug)]
enum Lang {
    C,
    Python,
    Rust,
}

const LANGS: [Lang; 3] = [Lang::C, Lang::Python, Lang::Rust];

fn example(lang: Lang, mnt: &Path, name: &str, rounds: u32) -> Command {
    let mut cmd = match lang {
        Lang::C => Command::new(c_example()),
        Lang::Python => {
            let mut c = Command::new("python3");
            c.arg(manifest().join("examples/counter.py"));
            c
        }
        Lang::Rust => Command::new(rust_example()),
    };
    cmd.arg(mnt).arg(name).arg(rounds.to_string());
    cmd
}

fn spawn(lang: Lang, mnt: &Path, name: &str, rounds: u32) -> Child {
    example(lang, mnt, name, rounds)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn the {lang:?} example: {e}"))
}

/// The `key=value` lines of an example's output, checked for success.
fn finish(lang: Lang, child: Child) -> Vec<(String, String)> {
    let out = child.wait_with_output().expect("wait for an example");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{lang:?} example failed with {}\n{stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .map(|l| {
            let (k, v) = l
                .split_once('=')
                .unwrap_or_else(|| panic!("{lang:?}: {l:?}"));
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

fn value<'a>(out: &'a [(String, String)], key: &str) -> &'a str {
    out.iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no {key}= in {out:?}"))
}

mount_test! {
    serial fn examples_share_one_counter(mode) {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64;
        let m = Mount::new(mode);
        let mnt = m.path();

        // Each language creates its own section: status, growth and the tail.
        for lang in LANGS {
            let name = format!("Own{lang:?}");
            let out = finish(lang, spawn(lang, mnt, &name, 3));
            assert_eq!(value(&out, "status"), "created", "{mode} {lang:?}");
            assert_eq!(value(&out, "size"), (2 * page).to_string());
            assert_eq!(value(&out, "tail"), format!("{page}+{page}"));
            assert_eq!(value(&out, "counter"), "3");
            let again = finish(lang, spawn(lang, mnt, &name, 0));
            assert_eq!(value(&again, "status"), "already_exists", "{mode} {lang:?}");
            assert_eq!(value(&again, "counter"), "3");
        }

        // All three at once on one section: no add is lost.
        let children: Vec<_> = LANGS
            .iter()
            .map(|&lang| (lang, spawn(lang, mnt, "Shared", ROUNDS)))
            .collect();
        let mut created = 0;
        for (lang, child) in children {
            let out = finish(lang, child);
            created += usize::from(value(&out, "status") == "created");
            assert_eq!(value(&out, "size"), (2 * page).to_string(), "{lang:?}");
        }
        assert_eq!(
            created, 1,
            "{mode}: exactly one process creates the section"
        );
        for lang in LANGS {
            let out = finish(lang, spawn(lang, mnt, "Shared", 0));
            assert_eq!(
                value(&out, "counter"),
                (3 * ROUNDS).to_string(),
                "{mode} {lang:?}"
            );
        }

        // The tail holds the pid of the last process to map it.
        let file = fs::File::open(m.section("Shared")).unwrap();
        let mut pid = [0u8; 8];
        file.read_exact_at(&mut pid, page).unwrap();
        assert_ne!(u64::from_le_bytes(pid), 0, "{mode}: the tail was written");
        drop(file);
        m.unmount();
    }
}

mount_test! {
    serial fn examples_refuse_bad_input() {
        let m = Mount::new("");
        for lang in LANGS {
            let out = example(lang, m.path(), "x", 1)
                .arg("extra")
                .output()
                .unwrap();
            assert_eq!(out.status.code(), Some(64), "{lang:?}: usage");
            let out = example(lang, m.path(), "no/such", 1).output().unwrap();
            assert_eq!(out.status.code(), Some(1), "{lang:?}: a failed call");
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                err.starts_with("counter: ") && err.lines().count() == 1,
                "{lang:?}: one line on stderr: {err:?}"
            );
        }
        m.unmount();
    }
}
