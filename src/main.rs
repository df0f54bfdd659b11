use sectionfs::daemon::{self, CliError, Command};
use std::process::ExitCode;

fn main() -> ExitCode {
    let config = match daemon::parse_command(std::env::args_os()) {
        Ok(Command::Mount(c)) => c,
        Ok(Command::List(args)) => return report(daemon::list(&args)),
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
    report(daemon::mount(config))
}

/// Exit 0, or 1 after one line on stderr.
fn report(result: Result<(), String>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sectionfs: {e}");
            ExitCode::FAILURE
        }
    }
}
