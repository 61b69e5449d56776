//! The storm command-line tool as a library shared by its two binaries: `storm` (src/main.rs, the entry
//! point users run, which does not link libtorch) and `storm-core` (src/core.rs, every command).

pub mod allocator;
pub mod cli;
pub mod front;

/// A command's outcome as the process's: success, or one `error: …` line and a failure status.
pub fn exit_status(result: anyhow::Result<()>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
