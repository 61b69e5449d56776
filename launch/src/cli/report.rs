//! `storm report`: rebuild a run's report.md, and the refresh every run-writing command does at its end.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;
use storm_shared::report::write_report;

#[derive(Args)]
pub struct ReportArgs {
    /// Run directory written by `storm pretrain`.
    #[arg(long)]
    pub run: PathBuf,
}

pub fn run(a: ReportArgs) -> Result<()> {
    let path = write_report(&a.run)
        .with_context(|| format!("writing the report of {}", a.run.display()))?;
    println!("wrote {}", path.display());
    Ok(())
}

/// Rebuilds report.md after a command changed the run; a failure is a warning, not the command's failure
/// (its own outputs are already written).
pub fn refresh(run: &Path) {
    match write_report(run) {
        Ok(path) => tracing::info!("refreshed {}", path.display()),
        Err(e) => tracing::warn!("{} not refreshed: {e:#}", run.join("report.md").display()),
    }
}
