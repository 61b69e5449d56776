//! `storm`: the command-line entry point. Parses arguments, sets up logging, runs one subcommand and turns
//! any error into one clear message and a non-zero exit status.

mod allocator;
mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    allocator::tune();
    let args = cli::Cli::parse();
    cli::init_logging(args.verbose, args.log_format);
    match cli::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
