use sectionfs::cli::{self, CliError};
use std::process::ExitCode;

fn main() -> ExitCode {
    let config = match cli::parse(std::env::args_os()) {
        Ok(c) => c,
        Err(CliError::Clap(e)) => e.exit(),
        Err(CliError::Msg(m)) => {
            eprintln!("sectionfs: {m}");
            return ExitCode::from(2);
        }
    };
    // fuser warns when its own unmount finds the mount already gone (after `umount`),
    // which is the normal way to stop: keep its session module at error unless asked.
    let level = match config.verbose {
        0 => "warn,fuser::session=error",
        1 => "info,fuser::session=error",
        _ => "debug",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level)).init();
    match sectionfs::mount::run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sectionfs: {e}");
            ExitCode::FAILURE
        }
    }
}
