//! The command line: what `cargo bench --bench vs_tmpfs -- ARGS` accepts. clap refuses
//! anything else with a message and exit status 2.

use crate::workloads::WORKLOADS;
use clap::builder::PossibleValuesParser;
use clap::{Parser, ValueEnum};
use std::path::PathBuf;

/// A data mode of the mount.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    Passthrough,
    Cached,
}

impl Mode {
    pub const ALL: [Mode; 2] = [Mode::Passthrough, Mode::Cached];

    pub fn name(self) -> &'static str {
        match self {
            Mode::Passthrough => "passthrough",
            Mode::Cached => "cached",
        }
    }

    /// Index into a workload's per-mode targets.
    pub fn index(self) -> usize {
        self as usize
    }

    pub fn mount_opts(self) -> &'static str {
        match self {
            Mode::Passthrough => "passthrough=on",
            Mode::Cached => "passthrough=off",
        }
    }
}

/// How requests reach the daemons (`-o io_uring=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Transport {
    /// FUSE over io_uring when the kernel offers it, /dev/fuse otherwise
    Auto,
    /// FUSE over io_uring, or the run fails
    IoUring,
    /// /dev/fuse
    DevFuse,
}

impl Transport {
    pub fn mount_opt(self) -> &'static str {
        match self {
            Transport::Auto => "io_uring=auto",
            Transport::IoUring => "io_uring=on",
            Transport::DevFuse => "io_uring=off",
        }
    }
}

/// sectionfs against /dev/shm, side by side in one run.
#[derive(Debug, Parser)]
#[command(name = "vs_tmpfs", bin_name = "cargo bench --bench vs_tmpfs --", after_help = AFTER_HELP)]
pub struct Args {
    /// Tiny sizes and one round: a smoke run of a few seconds (what `cargo test` runs)
    #[arg(long)]
    pub quick: bool,

    /// Many sections in one store (100,000; 2,000 with --quick) instead of the workloads
    #[arg(long, conflicts_with_all = ["only", "mode", "rounds"])]
    pub scale: bool,

    /// Rounds of every workload (default 5; 1 with --quick)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub rounds: Option<u32>,

    /// Only these workloads, comma-separated
    #[arg(long, value_name = "NAMES", value_delimiter = ',', value_parser = workload_names())]
    pub only: Vec<String>,

    /// Only these data modes, comma-separated (default: both)
    #[arg(long, value_name = "MODES", value_delimiter = ',')]
    pub mode: Vec<Mode>,

    /// How requests reach the daemons (io_uring needs root's
    /// `echo Y > /sys/module/fuse/parameters/enable_uring`)
    #[arg(long, value_name = "T", default_value = "auto")]
    pub transport: Transport,

    /// Print the figures as JSON on stdout (the table then goes to stderr), or with PATH
    /// write them there. Default: the table on stdout, the JSON in
    /// target/vs_tmpfs[-quick][-scale].json
    #[arg(long, value_name = "PATH", num_args = 0..=1, default_missing_value = "-")]
    pub json: Option<PathBuf>,

    /// Added by `cargo bench` itself.
    #[arg(long, hide = true)]
    pub bench: bool,
}

const AFTER_HELP: &str = "\
Run it as `cargo bench --bench vs_tmpfs -- [OPTIONS]`. Without `--bench` among its
arguments (under `cargo test --all-targets`) it ignores its arguments and runs the
--quick form as a smoke test.";

fn workload_names() -> PossibleValuesParser {
    PossibleValuesParser::new(WORKLOADS.iter().map(|w| w.name))
}

impl Args {
    /// What to run: `cargo bench` passes `--bench`, `cargo test` does not. Under `cargo
    /// test` the arguments are libtest's (`--nocapture`, filters), not ours: ignored.
    pub fn from_command_line() -> (Args, bool) {
        if std::env::args().any(|a| a == "--bench") {
            (Args::parse(), false)
        } else {
            (Args::parse_from(["vs_tmpfs", "--quick"]), true)
        }
    }

    pub fn modes(&self) -> Vec<Mode> {
        if self.mode.is_empty() {
            Mode::ALL.to_vec()
        } else {
            let mut modes = Vec::new();
            for m in &self.mode {
                if !modes.contains(m) {
                    modes.push(*m);
                }
            }
            modes
        }
    }
}
