//! `storm job --spec <job dir>/job.json` (hidden): one attempt of a sweep job, run by a worker as a child
//! process so that torch's process-global RNG and thread pool belong to this job alone. Each step calls the
//! function its `storm` subcommand calls (pretrain with --resume, eval, backtest, export, trade) with typed
//! arguments ([`StepCall`]), in this process on its main thread; a step that completed in an earlier
//! attempt is skipped (`done/<step>`). Every step start is announced on stdout as a JSON line for the
//! worker's progress display; at the end the metrics of every step's typed result
//! (`storm_shared::run::metrics`) go into `result.json`, written atomically.
//!
//! Test hook: `STORM_FAULT` (see `storm_worker::fault`) makes matching attempts stop after their first
//! step — for pretrain, after half of its steps, so that a checkpoint exists — with a panic, an error or
//! an abrupt exit, without marking the step done or writing a result.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use storm_shared::config::{ExperimentConfig, Split};
use storm_shared::data::windows::{split_window_ends, BatchSampler, Labels};
use storm_shared::data::Panel;
use storm_shared::portfolio::report::BacktestReport;
use storm_shared::portfolio::report::{parse_index, BacktestParams};
use storm_shared::run::metrics::{
    backtest_metrics, eval_metrics, trade_metrics, train_metrics, MetricKey, TrainSummary, Value,
};
use storm_shared::run::{EvalReport, PortfolioVariant, RunDir, TradeTask};
use storm_shared::trading::task::{FeatureSource, TradeParams, TradeReport};
use storm_shared::trading::EnvConfig;
use storm_shared::train::checkpoint::{read_state, CheckpointChoice, Checkpointer};
use storm_worker::fault::{self, FaultKind, FAULT_ENV};
use storm_worker::{JobResult, JobSpec, Step, StepAnnouncement, TradeFeatures};

use super::backtest::{backtest_split, DEFAULT_CASH, DEFAULT_RISK_AVERSION, DEFAULT_RISK_FREE};
use super::trade::trade_ticker;
use super::train::{evaluate_split, export_factors, pretrain, PretrainArgs};

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
    storm_shared::atomic::sync_dir(&spec.job_dir)?;
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
        storm_shared::atomic::write_file(&marker, b"")
            .with_context(|| format!("writing {}", marker.display()))?;
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

/// A step as the call it makes: the function its `storm` subcommand calls, with typed arguments.
#[derive(Debug, Clone, PartialEq)]
pub enum StepCall {
    Pretrain(PretrainArgs),
    Eval {
        split: Split,
        device: String,
    },
    Backtest {
        split: Split,
        params: BacktestParams,
    },
    Export {
        device: String,
    },
    Trade {
        ticker: String,
        source: FeatureSource,
        params: Box<TradeParams>,
    },
}

fn parse_split(split: &str) -> Result<Split> {
    split.parse().map_err(|e: String| anyhow!(e))
}

fn source(features: TradeFeatures) -> FeatureSource {
    features.source()
}

/// The call of a step: the subcommand's arguments a job sets, the subcommand's defaults for the rest.
pub fn step_call(spec: &JobSpec, step: &Step, max_steps: Option<u64>) -> Result<StepCall> {
    let device = spec.device.clone();
    Ok(match step {
        Step::Pretrain => StepCall::Pretrain(PretrainArgs {
            config: spec.config_path(),
            out: spec.run_dir(),
            data: Some(spec.data.clone()),
            seed: None,
            overrides: Vec::new(),
            device,
            max_steps,
            resume: true,
            in_job: true,
        }),
        Step::Eval { split } => StepCall::Eval {
            split: parse_split(split)?,
            device,
        },
        Step::Backtest {
            split,
            k,
            drop,
            cost,
            index,
            delay,
        } => StepCall::Backtest {
            split: parse_split(split)?,
            params: BacktestParams {
                k: *k,
                drop: *drop,
                cost: *cost,
                cash: DEFAULT_CASH,
                risk_free: DEFAULT_RISK_FREE,
                index: parse_index(index)?,
                risk_aversion: DEFAULT_RISK_AVERSION,
                delay: *delay,
            },
        },
        Step::Export => StepCall::Export { device },
        Step::Trade {
            ticker,
            features,
            seed,
            updates,
            envs,
            window,
            eval_every,
            cost,
            algorithm,
            ppo,
            dqn,
            sac,
            delay,
        } => StepCall::Trade {
            ticker: ticker.clone(),
            source: source(*features),
            params: Box::new(TradeParams {
                seed: *seed,
                n_envs: *envs,
                n_updates: *updates,
                eval_every: *eval_every,
                window: *window,
                env: EnvConfig {
                    cost_rate: *cost,
                    initial_cash: DEFAULT_CASH,
                },
                algorithm: *algorithm,
                ppo: *ppo,
                dqn: *dqn,
                sac: *sac,
                risk_free: DEFAULT_RISK_FREE,
                delay: *delay,
            }),
        },
    })
}

/// Runs one step in this process.
fn run_step(spec: &JobSpec, step: &Step, max_steps: Option<u64>) -> Result<()> {
    let run = RunDir::new(spec.run_dir());
    match step_call(spec, step, max_steps)? {
        StepCall::Pretrain(args) => pretrain(args),
        StepCall::Eval { split, device } => {
            evaluate_split(&run, split, CheckpointChoice::Best, &device)
        }
        StepCall::Backtest { split, params } => {
            params.validate()?;
            backtest_split(&run, split, &params)
        }
        StepCall::Export { device } => export_factors(&run, None, CheckpointChoice::Best, &device),
        StepCall::Trade {
            ticker,
            source,
            params,
        } => {
            params.validate()?;
            trade_ticker(&run, &ticker, source, &params)
        }
    }
}

/// The metrics of one step, from the typed result it wrote.
fn step_metrics(run: &RunDir, step: &Step) -> Result<Vec<(MetricKey, Value)>> {
    Ok(match step {
        Step::Pretrain => TrainSummary::load(run)?
            .map(|s| train_metrics(&s))
            .unwrap_or_default(),
        Step::Eval { split } => {
            let split = parse_split(split)?;
            eval_metrics(split, &EvalReport::load(run, split)?)
        }
        Step::Backtest { split, delay, .. } => {
            let variant = PortfolioVariant {
                risk_aware: false,
                delay: *delay,
            };
            backtest_metrics(&BacktestReport::load(run, parse_split(split)?, variant)?)
        }
        Step::Export => Vec::new(),
        Step::Trade {
            ticker,
            features,
            algorithm,
            delay,
            ..
        } => trade_metrics(&TradeReport::load(
            run,
            ticker,
            TradeTask {
                delay: *delay,
                ..TradeTask::new(source(*features), *algorithm)
            },
        )?),
    })
}

/// Every step's metrics by name (see `storm_shared::run::metrics`).
fn collect_metrics(spec: &JobSpec) -> Result<BTreeMap<String, Value>> {
    let run = RunDir::new(spec.run_dir());
    let mut m = BTreeMap::new();
    for step in &spec.steps {
        for (key, value) in step_metrics(&run, step)? {
            m.insert(key.name(), value);
        }
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use storm_shared::trading::learner::Algorithm;
    use storm_shared::trading::ppo::PpoConfig;

    fn spec() -> JobSpec {
        JobSpec {
            id: "j".into(),
            attempt: 1,
            device: "cpu".into(),
            threads: None,
            job_dir: "/s/jobs/j".into(),
            data: "/s/data/x".into(),
            max_steps: Some(8),
            batch_size: 4,
            steps: vec![],
        }
    }

    #[test]
    fn each_step_maps_to_its_subcommands_call() {
        let spec = spec();
        let call = |step: Step| step_call(&spec, &step, Some(4)).unwrap();
        let StepCall::Pretrain(args) = call(Step::Pretrain) else {
            panic!("pretrain")
        };
        assert_eq!(args.config, PathBuf::from("/s/jobs/j/config.toml"));
        assert_eq!(args.out, PathBuf::from("/s/jobs/j/run"));
        assert_eq!(args.data, Some(PathBuf::from("/s/data/x")));
        assert_eq!(
            (args.max_steps, args.resume, args.device.as_str()),
            (Some(4), true, "cpu")
        );
        assert_eq!(
            call(Step::Eval {
                split: "valid".into()
            }),
            StepCall::Eval {
                split: Split::Valid,
                device: "cpu".into()
            }
        );
        let StepCall::Backtest { split, params } = call(Step::Backtest {
            split: "test".into(),
            k: 5,
            drop: 3,
            cost: 1e-4,
            index: "none".into(),
            delay: 1,
        }) else {
            panic!("backtest")
        };
        assert_eq!(params.delay, 1);
        assert_eq!(split, Split::Test);
        assert_eq!((params.k, params.drop, params.cost), (5, 3, 1e-4));
        assert_eq!(
            (params.cash, params.index, params.risk_aversion),
            (1e6, None, 0.0)
        );
        assert_eq!(
            call(Step::Export),
            StepCall::Export {
                device: "cpu".into()
            }
        );
        let StepCall::Trade {
            ticker,
            source,
            params,
        } = call(Step::Trade {
            ticker: "AAPL".into(),
            features: TradeFeatures::Raw,
            seed: 3,
            updates: 2,
            envs: 4,
            window: 32,
            eval_every: 1,
            cost: 1e-4,
            algorithm: Algorithm::Ppo,
            ppo: PpoConfig {
                n_steps: 8,
                ..PpoConfig::default()
            },
            dqn: Default::default(),
            sac: Default::default(),
            delay: 1,
        })
        else {
            panic!("trade")
        };
        assert_eq!(
            params.ppo.n_steps, 8,
            "the step's PPO settings reach the trainer"
        );
        assert_eq!(params.delay, 1, "the step's delay reaches the trainer");
        assert_eq!((ticker.as_str(), source), ("AAPL", FeatureSource::Raw));
        assert_eq!((params.seed, params.n_envs, params.n_updates), (3, 4, 2));
        assert_eq!((params.window, params.eval_every), (32, 1));
        assert_eq!((params.env.cost_rate, params.env.initial_cash), (1e-4, 1e6));
        assert!(params.validate().is_ok());
    }

    #[test]
    fn a_bad_split_is_an_error_not_a_panic() {
        let e = step_call(
            &spec(),
            &Step::Eval {
                split: "later".into(),
            },
            None,
        )
        .unwrap_err();
        assert!(e.to_string().contains("unknown split"), "{e}");
    }
}
