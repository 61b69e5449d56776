//! `storm-core`: every storm command. Users run `storm`, which handles `storm data …` itself and becomes
//! this binary (exec, same process) for everything else. Parses arguments, sets up logging, runs one
//! subcommand and turns any error into one clear message and a non-zero exit status.

use std::process::ExitCode;

use clap::Parser;
use storm_launch::{allocator, cli, exit_status};

fn main() -> ExitCode {
    allocator::tune();
    let args = cli::Cli::parse();
    cli::init_logging(args.log.verbose, args.log.log_format);
    exit_status(cli::run(args))
}
