//! `storm`: the command-line entry point. `storm data …` runs here, in a binary that does not link
//! libtorch, so preparing data does not pay for loading it (about 0.8 s at every start); every other
//! command runs in `storm-core` beside this binary, which this process becomes (exec: same pid, same
//! arguments, same environment).

use std::process::ExitCode;

use clap::Parser;
use storm_launch::{cli, exit_status, front};

fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if !front::runs_here(&args) {
        return exit_status(Err(front::become_core(&args)));
    }
    let parsed = cli::DataCli::parse_from(&args);
    cli::init_logging(parsed.log.verbose, parsed.log.log_format);
    exit_status(cli::run_data(parsed))
}
