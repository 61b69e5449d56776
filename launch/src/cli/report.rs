//! `storm report`: rebuild a run's report.md, and the refresh every run-writing command does at its end.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use storm_shared::run::report::write_report;
use storm_shared::run::RunDir;

#[derive(Args)]
pub struct ReportArgs {
    /// Run directory written by `storm pretrain`.
    #[arg(long)]
    pub run: PathBuf,
}

pub fn run(a: ReportArgs) -> Result<()> {
    let path = write_report(&RunDir::new(&a.run))
        .with_context(|| format!("writing the report of {}", a.run.display()))?;
    println!("wrote {}", path.display());
    Ok(())
}

/// Rebuilds report.md after a command changed the run; a failure is a warning, not the command's failure
/// (its own outputs are already written). Directories that are not runs (a `storm backtest` on a folder
/// holding only predictions) get no report.
pub fn refresh(run: &RunDir) {
    if !run.is_run() {
        return;
    }
    match write_report(run) {
        Ok(path) => tracing::info!("refreshed {}", path.display()),
        Err(e) => tracing::warn!("{} not refreshed: {e:#}", run.report_md().display()),
    }
}
