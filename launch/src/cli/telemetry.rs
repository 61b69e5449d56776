//! `--metrics-addr` / `--metrics-linger` for every command: start the endpoint before the command runs,
//! label it with the run, and keep serving after the command ends when asked to.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use storm_shared::run::RunDir;
use storm_shared::telemetry::{self, MetricsServer};

use super::{data::DataCommand, Cli, Command};

/// The run directory a command works on, if any.
fn run_dir(command: &Command) -> Option<&Path> {
    match command {
        Command::Pretrain(a) => Some(&a.out),
        Command::Eval(a) => Some(&a.run),
        Command::Export(a) => Some(&a.run),
        Command::Backtest(a) => Some(&a.run),
        Command::Trade(a) => Some(&a.run),
        Command::Report(a) => Some(&a.run),
        Command::Data(DataCommand::Prepare(a)) => Some(&a.out),
        _ => None,
    }
}

/// `run_id` label: the run directory's name (absolute path's last component), else the command's name.
fn run_id(command: &Command) -> String {
    let from_dir = run_dir(command)
        .and_then(|d| std::path::absolute(d).ok())
        .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()));
    from_dir.unwrap_or_else(|| match command {
        Command::Data(_) => "data".into(),
        Command::Bench(_) => "bench".into(),
        _ => "storm".into(),
    })
}

/// Starts the endpoint when `--metrics-addr` was given. Commands on an existing run also publish its
/// `storm_run_info` (`storm pretrain` does once the run is opened).
pub fn start(cli: &Cli) -> Result<Option<MetricsServer>> {
    let Some(addr) = &cli.metrics_addr else {
        return Ok(None);
    };
    let server = telemetry::start(addr, &run_id(&cli.command))
        .context("starting the metrics endpoint (--metrics-addr)")?;
    tracing::info!("serving metrics on http://{}/metrics", server.addr());
    if let Some(dir) = run_dir(&cli.command) {
        if let Ok((_, info)) = RunDir::new(dir).load() {
            telemetry::set_run_info(info.seed, &info.config_hash);
        }
    }
    Ok(Some(server))
}

/// Keeps serving `linger` seconds (whether the command succeeded or not), then stops the endpoint.
pub fn finish(server: Option<MetricsServer>, linger: u64) {
    if let (Some(server), true) = (&server, linger > 0) {
        tracing::info!(
            "command finished; serving metrics on http://{}/metrics for {linger} s more",
            server.addr()
        );
        std::thread::sleep(Duration::from_secs(linger));
    }
    drop(server);
}
