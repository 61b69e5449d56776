//! `storm bench sweep`: what the actor runtime costs and what parallel workers buy, on a tiny synthetic
//! market (6 tickers × 700 days) and the tests' tiny model:
//! - coordinator overhead per job: no-op in-process jobs (ledger fsyncs, actor messages, job directories,
//!   aggregation), as the marginal time per job between a small and a large sweep;
//! - process overhead per job: `storm job` children with no steps (process start, libtorch load, spec and
//!   result files), same marginal measure, with 1 and 2 workers;
//! - throughput: short real training jobs (pretrain + eval valid/test) on 1..N CPU workers, wall time and
//!   speed-up over one worker.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use storm_coordinator::sweep_config::SweepConfig;
use storm_coordinator::{run_sweep, Display, Plan, SweepOptions};
use storm_shared::data::synth;
use storm_worker::{
    FnRunner, JobOutcome, JobResult, JobRunner, JobSpec, ProcessRunner, RunContext,
};

#[derive(Args)]
pub struct SweepBenchArgs {
    /// No-op jobs in the large coordinator-overhead sweep (the small one has 10).
    #[arg(long, default_value_t = 200)]
    pub noop_jobs: usize,
    /// Empty `storm job` children in the large process-overhead sweep (the small one has 2).
    #[arg(long, default_value_t = 12)]
    pub empty_jobs: usize,
    /// Training jobs in the throughput case.
    #[arg(long, default_value_t = 6)]
    pub train_jobs: usize,
    /// Optimizer steps per training job.
    #[arg(long, default_value_t = 40)]
    pub steps: u64,
    /// CPU worker counts to compare.
    #[arg(long, value_delimiter = ',', default_value = "1,2,3")]
    pub workers: Vec<usize>,
    /// Runs per throughput case; the table reports the median.
    #[arg(long, default_value_t = 3)]
    pub repeat: usize,
}

const BASE: &str = r#"
name = "bench"
[data]
source = "m.csv.gz"
window = 16
scaler_window = 32
[splits]
train = { start = "2000-01-01", end = "2001-12-31" }
valid = { start = "2002-01-01", end = "2002-03-31" }
test  = { start = "2002-04-01", end = "2003-12-31" }
[model]
patch_days = 4
embed_dim = 16
encoder_depth = 1
encoder_heads = 2
decoder_depth = 1
decoder_heads = 2
mlp_ratio = 2
codebook_size = 8
cs_stem_dim = 4
factor_hidden = 8
factor_count = 4
portfolio_count = 4
diversity_temperature = 16.0
dead_code_steps = 5
[train]
batch_size = 8
epochs = 3
warmup_epochs = 1
lr = 1e-3
"#;

/// The synthetic market, base config and a sweep of `jobs` seeds in `dir`.
fn plan(dir: &Path, jobs: usize, steps: u64, tasks: &str) -> Result<Plan> {
    let market = dir.join("m.csv.gz");
    if !market.exists() {
        let mut m = synth::generate(6, 700, 5)?;
        synth::write_market(&mut m, &market)?;
        std::fs::write(dir.join("base.toml"), BASE)?;
    }
    let seeds: Vec<String> = (0..jobs).map(|s| s.to_string()).collect();
    let path = dir.join(format!("sweep-{jobs}.toml"));
    std::fs::write(
        &path,
        format!(
            "base = \"base.toml\"\nseeds = [{}]\nmax_steps = {steps}\ntasks = [{tasks}]\n",
            seeds.join(", ")
        ),
    )?;
    Ok(SweepConfig::load(&path)?.plan(&path)?)
}

fn session(plan: &Plan, out: &Path, runner: Arc<dyn JobRunner>, workers: usize) -> Result<f64> {
    let start = Instant::now();
    let outcome = run_sweep(
        plan,
        SweepOptions {
            out: out.to_path_buf(),
            resume: false,
            devices: vec!["cpu".into(); workers],
            threads: Some(
                (std::thread::available_parallelism().map_or(1, usize::from) / workers).max(1),
            ),
            runner,
            display: Display::Quiet,
            source: None,
            cluster: None,
        },
    )?;
    let seconds = start.elapsed().as_secs_f64();
    let failed = outcome.failed();
    if !failed.is_empty() {
        anyhow::bail!(
            "{} benchmark job(s) failed, e.g. {:?}",
            failed.len(),
            failed[0].error
        );
    }
    Ok(seconds)
}

fn noop_runner() -> Arc<dyn JobRunner> {
    Arc::new(FnRunner(|spec: &JobSpec, _: &RunContext| {
        let result = JobResult {
            job: spec.id.clone(),
            attempt: spec.attempt,
            seconds: 0.0,
            metrics: [("x".to_string(), Some(1.0))].into_iter().collect(),
        };
        match serde_json::to_vec(&result)
            .map_err(|e| e.to_string())
            .and_then(|b| std::fs::write(spec.result_path(), b).map_err(|e| e.to_string()))
        {
            Ok(()) => JobOutcome::Done(result),
            Err(error) => JobOutcome::Failed { error },
        }
    }))
}

fn out_dir(root: &Path, name: &str) -> PathBuf {
    root.join("sweeps").join(name)
}

pub fn run(a: SweepBenchArgs) -> Result<()> {
    let tmp = tempfile::tempdir().context("creating a scratch directory")?;
    let root = tmp.path();
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    println!("sweep runtime on {cores} cores (tiny synthetic market, tiny model)\n");

    // coordinator overhead: no-op jobs, marginal time per job
    let small = plan(root, 10, a.steps, "")?;
    let large = plan(root, a.noop_jobs.max(11), a.steps, "")?;
    let mut rows = Vec::new();
    for workers in [1usize, 2] {
        let t0 = session(
            &small,
            &out_dir(root, &format!("noop-s-{workers}")),
            noop_runner(),
            workers,
        )?;
        let t1 = session(
            &large,
            &out_dir(root, &format!("noop-l-{workers}")),
            noop_runner(),
            workers,
        )?;
        let per = (t1 - t0) / (large.jobs.len() - small.jobs.len()) as f64;
        rows.push(format!(
            "| coordinator (no-op jobs in-process) | {workers} | {} | {t1:.2} s | {:.2} ms |",
            large.jobs.len(),
            per * 1e3
        ));
    }
    // process overhead: storm job children with no steps
    let exe: Arc<dyn JobRunner> = Arc::new(ProcessRunner::current_exe()?);
    let empty = |n: usize| -> Result<Plan> {
        let mut p = plan(root, n, a.steps, "")?;
        p.jobs.iter_mut().for_each(|j| j.steps.clear());
        Ok(p)
    };
    let (small, large) = (empty(2)?, empty(a.empty_jobs.max(3))?);
    for workers in [1usize, 2] {
        let t0 = session(
            &small,
            &out_dir(root, &format!("empty-s-{workers}")),
            exe.clone(),
            workers,
        )?;
        let t1 = session(
            &large,
            &out_dir(root, &format!("empty-l-{workers}")),
            exe.clone(),
            workers,
        )?;
        let per = (t1 - t0) / (large.jobs.len() - small.jobs.len()) as f64;
        rows.push(format!(
            "| `storm job` child with no steps | {workers} | {} | {t1:.2} s | {:.0} ms |",
            large.jobs.len(),
            per * 1e3
        ));
    }
    println!("| case | workers | jobs | sweep wall time | marginal time per job |");
    println!("|---|---|---|---|---|");
    for r in &rows {
        println!("{r}");
    }

    // throughput of real jobs
    let train = plan(root, a.train_jobs, a.steps, "\"eval\"")?;
    println!(
        "\n{} jobs, each pretrain ({} steps, batch 8) + eval valid + eval test; threads per job = {cores} / workers\n",
        train.jobs.len(),
        a.steps
    );
    println!(
        "| workers | wall time (median of {}) | jobs/min | speed-up vs 1 worker |",
        a.repeat.max(1)
    );
    println!("|---|---|---|---|");
    let mut base = None;
    for &workers in &a.workers {
        let workers = workers.max(1);
        let mut times = Vec::new();
        for r in 0..a.repeat.max(1) {
            let out = out_dir(root, &format!("train-{workers}-{r}"));
            times.push(session(&train, &out, exe.clone(), workers)?);
        }
        times.sort_by(f64::total_cmp);
        let t = times[times.len() / 2];
        let base = *base.get_or_insert(t);
        println!(
            "| {workers} | {t:.1} s | {:.1} | {:.2}× |",
            train.jobs.len() as f64 * 60.0 / t,
            base / t
        );
    }
    Ok(())
}
