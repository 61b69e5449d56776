//! `storm sweep`: run a sweep config (seeds × grid) on a pool of worker actors, durably, resumable; write
//! results.csv / results.md / jobs.csv (and codebook_size.png) into the sweep directory.
//!
//! Exit status: 0 when every job is done; 2 when the sweep finished but some jobs failed all their attempts
//! (the tables and report are still written and list them with their errors; `--resume` retries them);
//! 130 when interrupted by Ctrl-C (rerun with `--resume`); 1 for any other error.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::Args;
use storm_coordinator::sweep_config::SweepConfig;
use storm_coordinator::{run_sweep, Display, Plan, SweepOptions, SweepOutcome};
use storm_worker::ProcessRunner;

use super::cluster::ClusterArgs;

/// Exit status of a sweep that finished with failed jobs.
pub const EXIT_FAILED_JOBS: i32 = 2;
/// Exit status of an interrupted sweep.
pub const EXIT_INTERRUPTED: i32 = 130;

/// Which workers to start (shared by `storm sweep` and `storm paper`).
#[derive(Args, Clone)]
pub struct PoolArgs {
    /// CPU workers: cpu:N starts N workers on the CPU (default cpu:1).
    #[arg(long, conflicts_with = "devices")]
    pub workers: Option<String>,
    /// One worker per listed device, e.g. cuda:0,cuda:1 (cpu may be listed too).
    #[arg(long, value_delimiter = ',')]
    pub devices: Vec<String>,
    /// torch threads per job (default: the machine's cores divided among the workers).
    #[arg(long)]
    pub threads_per_worker: Option<usize>,
}

impl PoolArgs {
    /// The device of each worker, validated.
    pub fn devices(&self) -> Result<Vec<String>> {
        if !self.devices.is_empty() {
            for d in &self.devices {
                super::train::parse_device(d).with_context(|| format!("--devices {d}"))?;
            }
            return Ok(self.devices.clone());
        }
        let spec = self.workers.as_deref().unwrap_or("cpu:1");
        let n = match spec.split_once(':') {
            Some(("cpu", n)) => n.parse::<usize>().ok().filter(|&n| n >= 1),
            None if spec == "cpu" => Some(1),
            _ => bail!(
                "--workers {spec}: expected cpu:N (N CPU workers); for GPUs list them with --devices \
                 cuda:0,cuda:1"
            ),
        };
        let Some(n) = n else {
            bail!("--workers {spec}: N must be a whole number of at least 1, as in cpu:2");
        };
        if n > 64 {
            bail!("--workers {spec}: at most 64 workers");
        }
        Ok(vec!["cpu".to_string(); n])
    }

    /// The local workers of a coordinator: none by default when remote workers are awaited.
    pub fn local_devices(&self, listening: bool) -> Result<Vec<String>> {
        if listening && self.workers.is_none() && self.devices.is_empty() {
            return Ok(Vec::new());
        }
        self.devices()
    }

    /// Threads per job: given, or the cores shared evenly among the workers (at least 1).
    pub fn threads(&self, workers: usize) -> Option<usize> {
        if let Some(t) = self.threads_per_worker {
            return Some(t.max(1));
        }
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        Some((cores / workers.max(1)).max(1))
    }
}

#[derive(Args)]
pub struct SweepArgs {
    /// Sweep config (TOML), e.g. configs/sweeps/codebook.toml.
    #[arg(long)]
    pub config: PathBuf,
    /// Sweep directory (new, or an earlier one with --resume).
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub workers: PoolArgs,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Continue the sweep in --out: skip finished jobs, rerun the rest.
    #[arg(long)]
    pub resume: bool,
}

/// Runs a plan with the real process runner; shared by `storm sweep` and `storm paper`.
pub fn execute(
    plan: &Plan,
    out: &Path,
    workers: &PoolArgs,
    cluster: &ClusterArgs,
    resume: bool,
    source: &Path,
) -> Result<SweepOutcome> {
    let devices = workers.local_devices(cluster.listen.is_some())?;
    let cluster = cluster.options()?;
    let runner = ProcessRunner::current_exe().context("locating the storm binary")?;
    let text =
        std::fs::read_to_string(source).with_context(|| format!("reading {}", source.display()))?;
    let name = source
        .file_name()
        .map_or("config.toml".into(), |n| n.to_string_lossy().to_string());
    let remote = if cluster.is_some() {
        " + remote workers"
    } else {
        ""
    };
    eprintln!(
        "{} `{}`: {} jobs on {} local worker(s) ({}){remote} → {}",
        if resume { "resuming" } else { "starting" },
        plan.name,
        plan.jobs.len(),
        devices.len(),
        devices.join(", "),
        out.display()
    );
    let opts = SweepOptions {
        out: out.to_path_buf(),
        resume,
        threads: workers.threads(devices.len()),
        devices,
        runner: Arc::new(runner),
        display: if std::io::stderr().is_terminal() {
            Display::Bars
        } else {
            Display::Lines
        },
        source: Some((name, text)),
        cluster,
    };
    Ok(run_sweep(plan, opts)?)
}

/// Prints the outcome; exits with 130 (interrupted) or 2 (failed jobs) after the caller's final output.
pub fn conclude(outcome: &SweepOutcome, resume_hint: &str) {
    let failed = outcome.failed();
    if outcome.interrupted {
        eprintln!(
            "interrupted with {} unfinished job(s); continue with: {resume_hint}",
            outcome.unfinished().len()
        );
        std::process::exit(EXIT_INTERRUPTED);
    }
    if !failed.is_empty() {
        eprintln!("error: {} job(s) failed after every attempt:", failed.len());
        for r in &failed {
            let last = storm_worker::headline(r.error.as_deref().unwrap_or(""));
            eprintln!("  {} ({} attempts): {last}", r.id, r.attempts);
        }
        eprintln!("their errors are in the report; retry them with: {resume_hint}");
        std::process::exit(EXIT_FAILED_JOBS);
    }
}

pub fn run(a: SweepArgs) -> Result<()> {
    let cfg = SweepConfig::load(&a.config)?;
    let plan = cfg.plan(&a.config)?;
    let outcome = execute(&plan, &a.out, &a.workers, &a.cluster, a.resume, &a.config)?;
    let md = outcome.dir.join(storm_coordinator::results::RESULTS_MD);
    println!(
        "sweep `{}`: {}; results {}",
        plan.name,
        storm_coordinator::results::counts_line(&outcome.rows),
        md.display()
    );
    conclude(
        &outcome,
        &format!(
            "storm sweep --config {} --out {} --resume",
            a.config.display(),
            a.out.display()
        ),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(workers: Option<&str>, devices: &[&str]) -> PoolArgs {
        PoolArgs {
            workers: workers.map(String::from),
            devices: devices.iter().map(|s| s.to_string()).collect(),
            threads_per_worker: None,
        }
    }

    #[test]
    fn worker_specs() {
        assert_eq!(w(None, &[]).devices().unwrap(), ["cpu"]);
        assert_eq!(
            w(Some("cpu:3"), &[]).devices().unwrap(),
            ["cpu", "cpu", "cpu"]
        );
        assert_eq!(w(None, &["cpu", "cpu"]).devices().unwrap(), ["cpu", "cpu"]);
        for bad in ["cpu:0", "cpu:x", "gpu:2", "cuda:0"] {
            assert!(w(Some(bad), &[]).devices().is_err(), "{bad}");
        }
        assert!(w(None, &["tpu"]).devices().is_err());
        assert!(w(None, &[]).threads(1).unwrap() >= 1);
        assert_eq!(w(None, &[]).threads(1000), Some(1));
    }
}
