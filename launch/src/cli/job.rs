//! `storm job --spec <job dir>/job.json` (hidden): one attempt of a sweep job, run by a worker as a child
//! process so that torch's process-global RNG and thread pool belong to this job alone. Each step is the
//! corresponding `storm` subcommand (pretrain with --resume, eval, backtest, export, trade) executed in this
//! process on its main thread; a step that completed in an earlier attempt is skipped (`done/<step>`).
//! Every step start is announced on stdout as a JSON line for the worker's progress display; at the end
//! all metrics go into `result.json`, written atomically.
//!
//! Test hook: `STORM_FAULT` (see `storm_worker::fault`) makes matching attempts stop after their first
//! step — for pretrain, after half of its steps, so that a checkpoint exists — with a panic, an error or
//! an abrupt exit, without marking the step done or writing a result.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Parser};
use serde_json::Value;
use storm_shared::config::{ExperimentConfig, Split};
use storm_shared::data::windows::{split_window_ends, BatchSampler, Labels};
use storm_shared::data::Panel;
use storm_shared::train::checkpoint::{read_state, Checkpointer};
use storm_worker::fault::{self, FaultKind, FAULT_ENV};
use storm_worker::{JobResult, JobSpec, Step, StepAnnouncement, TradeFeatures};

#[derive(Args)]
pub struct JobArgs {
    /// The job description written by the worker.
    #[arg(long)]
    pub spec: PathBuf,
}

pub fn run(a: JobArgs) -> Result<()> {
    let text = std::fs::read_to_string(&a.spec)
        .with_context(|| format!("reading the job spec {}", a.spec.display()))?;
    let spec: JobSpec = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a job spec", a.spec.display()))?;
    if let Some(n) = spec.threads {
        tch::set_num_threads(n as i32);
    }
    let faults = match std::env::var(FAULT_ENV) {
        Ok(s) => fault::parse(&s).map_err(|e| anyhow!(e))?,
        Err(_) => Vec::new(),
    };
    let fault = fault::active(&faults, &spec.id, spec.attempt);
    std::fs::create_dir_all(spec.job_dir.join(storm_worker::protocol::DONE_DIR))
        .with_context(|| format!("creating {}", spec.job_dir.display()))?;
    let _lock = lock_job_dir(&spec.job_dir)?;
    let started = Instant::now();
    for (i, step) in spec.steps.iter().enumerate() {
        let key = step.key();
        let marker = spec.done_marker(step);
        if marker.exists() {
            announce(StepAnnouncement {
                storm_job_step: key,
                total_steps: None,
                resume_from: None,
                skipped: true,
            });
            continue;
        }
        let faulting = fault.is_some() && i == 0;
        let mut max_steps = spec.max_steps;
        let (mut total, mut resume_from) = (None, None);
        if matches!(step, Step::Pretrain) {
            total = total_steps(&spec).ok();
            resume_from = latest_checkpoint_step(&spec.run_dir());
            if faulting {
                let full = match (spec.max_steps, total) {
                    (Some(m), Some(t)) => m.min(t),
                    (Some(m), None) => m,
                    (None, t) => t.unwrap_or(2),
                };
                max_steps = Some((full / 2).max(1));
            }
        }
        announce(StepAnnouncement {
            storm_job_step: key.clone(),
            // the steps this attempt will reach
            total_steps: total.map(|t| max_steps.map_or(t, |m| m.min(t))),
            resume_from,
            skipped: false,
        });
        run_step(&spec, step, max_steps).with_context(|| format!("job {} step {key}", spec.id))?;
        if faulting {
            inject(fault.expect("faulting implies a fault"), &spec, &key)?;
        }
        std::fs::write(&marker, b"").with_context(|| format!("writing {}", marker.display()))?;
    }
    if let (Some(kind), true) = (fault, spec.steps.is_empty()) {
        inject(kind, &spec, "start")?;
    }
    let result = JobResult {
        job: spec.id.clone(),
        attempt: spec.attempt,
        seconds: started.elapsed().as_secs_f64(),
        metrics: collect_metrics(&spec)?,
    };
    storm_shared::atomic::write_file(&spec.result_path(), &serde_json::to_vec_pretty(&result)?)?;
    println!(
        "job {} attempt {}: {} steps done in {:.1}s → {}",
        spec.id,
        spec.attempt,
        spec.steps.len(),
        result.seconds,
        spec.result_path().display()
    );
    Ok(())
}

/// Holds an exclusive lock on `<job dir>/job.lock` for the life of this process: if an earlier attempt of
/// the job is still alive — being killed, or on a frozen host the coordinator gave up on — this one waits
/// for it (the kernel drops the lock when it dies), so two attempts never write into the same run
/// directory at once.
fn lock_job_dir(dir: &Path) -> Result<std::fs::File> {
    use std::os::fd::AsRawFd;
    let path = dir.join("job.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    // SAFETY: flock on a file descriptor we own.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        return Ok(file);
    }
    eprintln!(
        "waiting for an earlier attempt of this job to end (it holds {})",
        path.display()
    );
    // SAFETY: as above.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
        bail!(
            "locking {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        );
    }
    Ok(file)
}

fn announce(a: StepAnnouncement) {
    println!("{}", a.to_line());
}

fn inject(kind: FaultKind, spec: &JobSpec, after: &str) -> Result<()> {
    let name = match kind {
        FaultKind::Panic => "panic",
        FaultKind::Error => "error",
        FaultKind::Exit => "exit",
    };
    let what = format!(
        "{FAULT_ENV}: injected {name} in job {} attempt {} after {after}",
        spec.id, spec.attempt
    );
    match kind {
        FaultKind::Panic => panic!("{what}"),
        FaultKind::Error => bail!("{what}"),
        FaultKind::Exit => {
            eprintln!("{what}");
            std::process::exit(86)
        }
    }
}

/// Optimizer steps of the whole schedule, as the trainer computes them (for progress display).
fn total_steps(spec: &JobSpec) -> Result<u64> {
    let cfg = ExperimentConfig::load(&spec.config_path(), &[])?;
    let panel = Panel::load(&spec.data)?;
    let ends = split_window_ends(
        &panel,
        &cfg.splits,
        Split::Train,
        cfg.data.window,
        Labels::Required,
    )?;
    let bs = cfg.train.batch_size;
    let sampler = BatchSampler {
        drop_last: ends.len() >= bs,
        ends,
        batch_size: bs,
        shuffle: true,
        seed: cfg.train.seed,
    };
    Ok(sampler.batches_per_epoch() as u64 * cfg.train.epochs as u64)
}

fn latest_checkpoint_step(run: &Path) -> Option<u64> {
    let dir = Checkpointer::new(run, usize::MAX).latest()?;
    read_state(&dir).ok().map(|s| s.step)
}

/// The `storm` command line of a step.
pub fn step_args(spec: &JobSpec, step: &Step, max_steps: Option<u64>) -> Vec<String> {
    let run = spec.run_dir().display().to_string();
    let mut args: Vec<String> = match step {
        Step::Pretrain => {
            let mut a = vec![
                "pretrain".into(),
                "--config".into(),
                spec.config_path().display().to_string(),
                "--data".into(),
                spec.data.display().to_string(),
                "--out".into(),
                run,
                "--resume".into(),
            ];
            if let Some(m) = max_steps {
                a.extend(["--max-steps".into(), m.to_string()]);
            }
            a
        }
        Step::Eval { split } => vec![
            "eval".into(),
            "--run".into(),
            run,
            "--split".into(),
            split.clone(),
        ],
        Step::Backtest {
            split,
            k,
            drop,
            cost,
            index,
        } => vec![
            "backtest".into(),
            "--run".into(),
            run,
            "--split".into(),
            split.clone(),
            "--k".into(),
            k.to_string(),
            "--drop".into(),
            drop.to_string(),
            "--cost".into(),
            cost.to_string(),
            "--index".into(),
            index.clone(),
        ],
        Step::Export => vec!["export".into(), "--run".into(), run],
        Step::Trade {
            ticker,
            features,
            seed,
            updates,
            envs,
            window,
            eval_every,
            cost,
        } => vec![
            "trade".into(),
            "--run".into(),
            run,
            "--ticker".into(),
            ticker.clone(),
            "--seed".into(),
            seed.to_string(),
            "--updates".into(),
            updates.to_string(),
            "--envs".into(),
            envs.to_string(),
            "--window".into(),
            window.to_string(),
            "--eval-every".into(),
            eval_every.to_string(),
            "--cost".into(),
            cost.to_string(),
            "--features".into(),
            match features {
                TradeFeatures::Factors => "factors".into(),
                TradeFeatures::Raw => "raw".into(),
            },
        ],
    };
    if matches!(step, Step::Pretrain | Step::Eval { .. } | Step::Export) {
        args.extend(["--device".into(), spec.device.clone()]);
    }
    args
}

/// Runs one step as its `storm` subcommand, in this process.
fn run_step(spec: &JobSpec, step: &Step, max_steps: Option<u64>) -> Result<()> {
    let args = step_args(spec, step, max_steps);
    let cli = super::Cli::try_parse_from(std::iter::once("storm".to_string()).chain(args.clone()))
        .map_err(|e| anyhow!("bad step command `storm {}`: {e}", args.join(" ")))?;
    super::run(cli)
}

/// Reads a JSON report a step wrote (None if the step is not part of this job).
fn read_json(path: &Path) -> Result<Option<Value>> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            Ok(Some(serde_json::from_str(&text).with_context(|| {
                format!("{} is not JSON", path.display())
            })?))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(anyhow!("{}: {e}", path.display())),
    }
}

fn put(m: &mut BTreeMap<String, Option<f64>>, name: String, v: Option<&Value>) {
    m.insert(name, v.and_then(Value::as_f64));
}

const FINANCIAL: [&str; 7] = ["apy", "cw", "cr", "asr", "mdd", "avo", "turnover"];

fn put_financial(m: &mut BTreeMap<String, Option<f64>>, prefix: &str, v: Option<&Value>) {
    if let Some(v) = v {
        for f in FINANCIAL {
            put(m, format!("{prefix}_{f}"), v.get(f));
        }
    }
}

/// Flat metric names from the reports the steps wrote: `train_*`, `<split>_rank_ic`…, `pm_*`, `ew_*`,
/// `index_*`, `trade_<T>_*`, `trade_<T>_raw_*`, `bh_<T>_*`.
fn collect_metrics(spec: &JobSpec) -> Result<BTreeMap<String, Option<f64>>> {
    let run = spec.run_dir();
    let mut m = BTreeMap::new();
    for step in &spec.steps {
        match step {
            Step::Pretrain => {
                if let Some(t) = read_json(&run.join("train.json"))? {
                    for (name, key) in [
                        ("train_steps", "steps"),
                        ("train_seconds", "seconds"),
                        ("train_samples_per_s", "samples_per_second"),
                        ("train_final_loss", "final_loss"),
                        ("best_valid_rank_ic", "best_valid_rank_ic"),
                    ] {
                        put(&mut m, name.into(), t.get(key));
                    }
                }
            }
            Step::Eval { split } => {
                let s: Split = split.parse().map_err(|e: String| anyhow!(e))?;
                let path = run.join(storm_shared::eval::run_eval::eval_file(s));
                let e =
                    read_json(&path)?.ok_or_else(|| anyhow!("{} is missing", path.display()))?;
                for key in [
                    "rank_ic",
                    "rank_icir",
                    "ic",
                    "icir",
                    "codebook_usage_ts",
                    "codebook_usage_cs",
                    "codebook_perplexity_ts",
                    "codebook_perplexity_cs",
                ] {
                    put(&mut m, format!("{split}_{key}"), e.get(key));
                }
            }
            Step::Backtest { split, .. } => {
                let s: Split = split.parse().map_err(|e: String| anyhow!(e))?;
                let path = run.join(storm_shared::portfolio::report::report_file(s, false));
                let r =
                    read_json(&path)?.ok_or_else(|| anyhow!("{} is missing", path.display()))?;
                put_financial(&mut m, "pm", r.get("strategy"));
                put_financial(&mut m, "ew", r.get("equal_weight"));
                put_financial(&mut m, "index", r.get("index"));
            }
            Step::Export => {}
            Step::Trade {
                ticker, features, ..
            } => {
                let source = match features {
                    TradeFeatures::Factors => storm_shared::trading::task::FeatureSource::Factors,
                    TradeFeatures::Raw => storm_shared::trading::task::FeatureSource::Raw,
                };
                let path = run.join(storm_shared::trading::task::report_file(ticker, source));
                let r =
                    read_json(&path)?.ok_or_else(|| anyhow!("{} is missing", path.display()))?;
                let prefix = match features {
                    TradeFeatures::Factors => format!("trade_{ticker}"),
                    TradeFeatures::Raw => format!("trade_{ticker}_raw"),
                };
                put_financial(&mut m, &prefix, r.get("ppo"));
                put(
                    &mut m,
                    format!("{prefix}_trades"),
                    r.get("ppo").and_then(|p| p.get("trades")),
                );
                put_financial(&mut m, &format!("bh_{ticker}"), r.get("buy_and_hold"));
            }
        }
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_step_is_a_valid_storm_command_line() {
        let spec = JobSpec {
            id: "j".into(),
            attempt: 1,
            device: "cpu".into(),
            threads: None,
            job_dir: "/s/jobs/j".into(),
            data: "/s/data/x".into(),
            max_steps: Some(8),
            batch_size: 4,
            steps: vec![],
        };
        let steps = [
            Step::Pretrain,
            Step::Eval {
                split: "valid".into(),
            },
            Step::Backtest {
                split: "test".into(),
                k: 5,
                drop: 3,
                cost: 1e-4,
                index: "none".into(),
            },
            Step::Export,
            Step::Trade {
                ticker: "AAPL".into(),
                features: TradeFeatures::Raw,
                seed: 3,
                updates: 2,
                envs: 4,
                window: 32,
                eval_every: 1,
                cost: 1e-4,
            },
        ];
        for step in &steps {
            let args = step_args(&spec, step, Some(4));
            let parsed = super::super::Cli::try_parse_from(
                std::iter::once("storm".to_string()).chain(args.clone()),
            );
            assert!(
                parsed.is_ok(),
                "storm {}: {:?}",
                args.join(" "),
                parsed.err()
            );
        }
        let pretrain = step_args(&spec, &Step::Pretrain, Some(4)).join(" ");
        assert_eq!(
            pretrain,
            "pretrain --config /s/jobs/j/config.toml --data /s/data/x --out /s/jobs/j/run --resume \
             --max-steps 4 --device cpu"
        );
    }
}
