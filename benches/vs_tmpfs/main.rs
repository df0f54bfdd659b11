//! sectionfs against /dev/shm, side by side in one run.
//!
//! ```text
//! cargo bench --bench vs_tmpfs                     # full run: both modes, 5 rounds
//! cargo bench --bench vs_tmpfs -- --quick          # tiny sizes, one round: a smoke run
//! cargo bench --bench vs_tmpfs -- --scale          # 100,000 sections (passthrough)
//! cargo bench --bench vs_tmpfs -- --only create,stat --rounds 9 --json out.json
//! cargo bench --bench vs_tmpfs -- --quick --json | python3 -m json.tool
//! cargo bench --bench vs_tmpfs -- --help
//! ```
//!
//! It mounts the release daemon (`sectionfs -f`) twice on fresh stores in /dev/shm, once
//! per data mode (passthrough and cached), and runs each workload on /dev/shm and on both
//! mounts in turn, the order rotating from round to round, so that the ratios of a row
//! come from one run on one machine state. Every workload makes its own files untimed and
//! times only its own syscalls (`workloads.rs`); the report (`report.rs`) gives per
//! operation the median, minimum and maximum over the rounds of each side, the ratio
//! sectionfs / /dev/shm, the target issue 13 sets for it and whether it is met, and the
//! machine's load beside the figures.
//!
//! Under `cargo test --all-targets` (no `--bench` argument) it runs the `--quick` form as
//! a smoke test: every workload works and makes the operations it claims, the table
//! prints, and the JSON passes Python's strict parser. It asserts nothing about speed.

#[path = "../../tests/common/mod.rs"]
mod common;

mod args;
mod json;
mod report;
mod scale;
mod sys;
mod workloads;

use args::{Args, Mode, Transport};
use common::Mount;
use report::{Load, Machine, Results, Row, Side};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use sys::{Scratch, daemon_use, take_runnable_samples};
use workloads::{FULL, Place, QUICK, WORKLOADS, Workload};

fn main() -> ExitCode {
    let (args, smoke) = Args::from_command_line();
    if !common::require_fuse() {
        return ExitCode::SUCCESS;
    }
    if std::env::var_os("RUST_LOG").is_none() {
        // SAFETY: no other thread exists yet. The daemon logs warnings only, as in use.
        unsafe { std::env::set_var("RUST_LOG", "warn") };
    }
    let scratch = Scratch::new(PathBuf::from(format!(
        "/dev/shm/sectionfs-bench-{}",
        std::process::id()
    )));
    let machine = Machine::now();
    let (report, json) = if args.scale {
        let total = if args.quick { 2_000 } else { 100_000 };
        scale::run(&scratch.0, total, args.transport, machine)
    } else {
        let results = run_workloads(&scratch.0, &args, machine);
        (results.table(), results.json())
    };
    let json = json::render(&json);
    if let Err(e) = output(&args, &report, &json) {
        eprintln!("vs_tmpfs: {e}");
        return ExitCode::FAILURE;
    }
    if smoke {
        for (what, text) in [
            ("the figures", json.as_str()),
            ("the awkward sample", &json::render(&json::awkward_sample())),
        ] {
            match json::validate_with_python(text) {
                Ok(true) => {}
                Ok(false) if std::env::var("CI").is_ok_and(|v| v == "true") => {
                    panic!("python3 is missing; CI=true requires the JSON check")
                }
                Ok(false) => eprintln!("python3 is missing: JSON of {what} not checked"),
                Err(e) => panic!("JSON of {what} is not JSON: {e}\n{text}"),
            }
        }
    }
    ExitCode::SUCCESS
}

/// The table on stdout and the JSON in a file; with `--json` alone (`-`) the JSON on
/// stdout and the table on stderr, so that stdout can be piped to a JSON tool.
fn output(args: &Args, report: &str, json: &str) -> Result<(), String> {
    let path = match &args.json {
        Some(p) if p.as_os_str() == "-" => {
            eprint!("{report}");
            print!("{json}");
            return Ok(());
        }
        Some(p) => p.clone(),
        // A smoke run never overwrites the figures of a full one.
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join(format!(
            "target/vs_tmpfs{}{}.json",
            if args.quick { "-quick" } else { "" },
            if args.scale { "-scale" } else { "" }
        )),
    };
    print!("{report}");
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    }
    std::fs::write(&path, json).map_err(|e| format!("write {}: {e}", path.display()))?;
    println!("raw figures: {}", path.display());
    Ok(())
}

/// One mount of the release daemon on its own store.
struct Mounted {
    mode: Mode,
    /// The mount's transport, as its sidecars say.
    transport: String,
    // Declared before the store: dropped (unmounted) first.
    mount: Mount,
    store: Scratch,
}

impl Mounted {
    fn new(scratch: &Path, mode: Mode, transport: Transport) -> Mounted {
        let store = Scratch::new(scratch.join(format!("store-{}", mode.name())));
        let opts = format!("{},{}", mode.mount_opts(), transport.mount_opt());
        let mount = Mount::with_store(&store.0, &opts);
        let probe = mount.path().join("transport-probe");
        std::fs::write(&probe, b"").expect("create a probe section");
        let transport = common::read_meta(mount.path(), "transport-probe")["transport"].clone();
        std::fs::remove_file(&probe).expect("remove the probe section");
        Mounted {
            mode,
            transport,
            mount,
            store,
        }
    }

    fn unmount(self) {
        let Mounted { mount, store, .. } = self;
        mount.unmount();
        drop(store);
    }
}

/// Runs every round of every chosen workload on /dev/shm and on each mount in turn.
fn run_workloads(scratch: &Path, args: &Args, mut machine: Machine) -> Results {
    let mut sizes = if args.quick { QUICK } else { FULL };
    if let Some(r) = args.rounds {
        sizes.rounds = r as usize;
    }
    let chosen: Vec<&'static Workload> = WORKLOADS
        .iter()
        .filter(|w| args.only.is_empty() || args.only.iter().any(|n| n == w.name))
        .collect();
    let shm = Scratch::new(scratch.join("shm"));
    let mounts: Vec<Mounted> = args
        .modes()
        .into_iter()
        .map(|m| Mounted::new(scratch, m, args.transport))
        .collect();
    machine.transports = mounts
        .iter()
        .map(|m| (m.mode.name(), m.transport.clone()))
        .collect();
    if let Some(m) = mounts.first() {
        sizes.meta_len = sidecar_len(m.mount.path());
    }
    let mut places = vec![Place {
        dir: shm.0.clone(),
        sectionfs: false,
    }];
    let mut sides = vec![Side::Shm];
    for m in &mounts {
        places.push(Place {
            dir: m.mount.path().to_path_buf(),
            sectionfs: true,
        });
        sides.push(Side::Sectionfs(m.mode));
    }
    let mut rows: Vec<Row> = chosen
        .iter()
        .map(|&workload| Row {
            workload,
            seconds: vec![Vec::new(); places.len()],
            others: Vec::new(),
        })
        .collect();
    eprintln!(
        "{} against /dev/shm: {} workload(s), {} round(s)",
        mounts
            .iter()
            .map(|m| m.mode.name())
            .collect::<Vec<_>>()
            .join(", "),
        rows.len(),
        sizes.rounds
    );
    take_runnable_samples();
    for round in 0..sizes.rounds {
        for row in &mut rows {
            // The first side of a round changes each round: none always runs first.
            for k in 0..places.len() {
                let i = (k + round) % places.len();
                let run = (row.workload.run)(&places[i], &sizes, round);
                let want = (row.workload.ops)(&sizes);
                assert_eq!(
                    run.ops,
                    want,
                    "{} on {}: timed {} operations, claims {want}",
                    row.workload.name,
                    sides[i].label(),
                    run.ops
                );
                row.seconds[i].push(run.time.as_secs_f64());
                row.others.extend(take_runnable_samples());
            }
        }
        eprint!(".");
    }
    eprintln!();
    let daemons = mounts
        .iter()
        .map(|m| (m.mode, daemon_use(m.mount.pid())))
        .collect();
    mounts.into_iter().for_each(Mounted::unmount);
    machine.load_end = Load::now();
    Results {
        sizes,
        sides,
        rows,
        daemons,
        machine,
    }
}

/// The length of a new section's sidecar, for the small file /dev/shm reads instead.
fn sidecar_len(mnt: &Path) -> usize {
    let path = sys::cpath(&mnt.join("probe"));
    let fd = sys::open(&path, libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY);
    sys::write_all(fd, &[0x42; 64]);
    sys::close(fd);
    let meta = sys::cpath(&mnt.join("probe.meta"));
    let fd = sys::open(&meta, libc::O_RDONLY);
    let len = sys::read_to_end(fd, &mut [0u8; 4096]);
    sys::close(fd);
    sys::unlink(&path);
    len
}
