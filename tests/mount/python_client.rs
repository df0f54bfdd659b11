//! The Python package of `clients/python` (`sectionfs.SharedMemory`, like
//! `multiprocessing.shared_memory`): real processes started with the spawn method share,
//! grow and race on sections of a real mount, in both data modes; numpy arrays over
//! `buf`; and `pip install ./clients/python` works, offline.

use crate::common;

use common::{Mount, run_ok};
use std::path::Path;
use std::process::Command;

fn manifest() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Runs a Python script with `sectionfs` importable from `pythonpath`; requires success
/// and a clean stderr (no "Exception ignored" from a finalizer).
fn python(pythonpath: &Path, args: &[&std::ffi::OsStr], mnt: &Path) -> String {
    let out = Command::new("python3")
        .args(args)
        .env("PYTHONPATH", pythonpath)
        .env("SECTIONFS_MOUNT", mnt)
        .current_dir(std::env::temp_dir())
        .output()
        .expect("run python3");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "python3 {args:?}: {}\n{stdout}{stderr}",
        out.status
    );
    assert!(
        stderr.trim().is_empty(),
        "python3 {args:?}: stderr:\n{stderr}"
    );
    stdout
}

mount_test! {
    serial fn shared_memory_across_spawned_processes(mode) {
        let script = manifest().join("tests/clients/shm_scenarios.py");
        let m = Mount::new(mode);
        let out = python(
            &manifest().join("clients/python"),
            &[script.as_os_str(), m.path().as_os_str()],
            m.path(),
        );
        assert_eq!(
            out, "ok exceptions\nok shared numpy\nok growth\nok race\nok listing\n",
            "{mode}"
        );
        // Every scenario unlinked what it made.
        assert_eq!(
            common::sh(&format!("ls -A '{}'", m.path().display())).stdout,
            b""
        );
        m.unmount();
    }
}

mount_test! {
    serial fn pip_installs_the_package_and_the_example_runs() {
        let target = tempfile::tempdir().expect("temp dir");
        // The README's command, offline: the build uses the environment's setuptools.
        run_ok(
            Command::new("python3")
                .args([
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                    "--no-build-isolation",
                    "--no-index",
                    "--no-deps",
                    "--target",
                ])
                .arg(target.path())
                .arg("./clients/python")
                .current_dir(manifest()),
        );
        assert!(target.path().join("sectionfs/__init__.py").exists());
        let m = Mount::new("");
        let example = manifest().join("examples/shared_memory.py");
        let out = python(target.path(), &[example.as_os_str()], m.path());
        assert_eq!(
            out,
            "child wrote: hello\ncreated: False size: 8192\nstatus: already_exists\n\
             listed: True size: 8192\n"
        );
        // The installed copy is the one imported.
        let which = python(
            target.path(),
            &[
                "-c".as_ref(),
                "import sectionfs; print(sectionfs.__file__)".as_ref(),
            ],
            m.path(),
        );
        assert!(
            which.starts_with(target.path().to_str().unwrap()),
            "{which}"
        );
        m.unmount();
    }
}
