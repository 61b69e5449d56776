//! `storm pretrain` and `storm eval`: train a model into a run directory, evaluate a run on a split.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use storm_shared::config::{ExperimentConfig, ModelKind, Split};
use storm_shared::data::Panel;
use storm_shared::distributed::{self, DistEnv};
use storm_shared::run::evaluate::evaluate;
use storm_shared::run::export::export as export_run;
use storm_shared::run::{RunDir, TrainedRun};
use storm_shared::telemetry;
use storm_shared::train::boosting::train_booster;
use storm_shared::train::checkpoint::CheckpointChoice;
use storm_shared::train::trainer::{TrainOptions, TrainOutcome, Trainer};
use tch::Device;

use super::data::load_config;

#[derive(Args, Debug, Clone, PartialEq)]
pub struct PretrainArgs {
    /// Experiment config (TOML).
    #[arg(long)]
    pub config: PathBuf,
    /// Run directory (created; holds config, data, logs, checkpoints).
    #[arg(long)]
    pub out: PathBuf,
    /// An existing prepared data directory (default: prepare the config's data into <out>/data).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Seed (overrides train.seed).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Override a config value, e.g. --set train.lr=3e-4 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Stop after this many optimizer steps (smoke runs; still evaluable and resumable).
    #[arg(long)]
    pub max_steps: Option<u64>,
    /// Continue from the latest checkpoint in --out.
    #[arg(long)]
    pub resume: bool,
    /// Set by `storm job`: the trainer reports progress as JSON lines on stdout.
    #[arg(skip)]
    pub in_job: bool,
}

#[derive(Args)]
pub struct EvalArgs {
    /// Run directory written by `storm pretrain`.
    #[arg(long)]
    pub run: PathBuf,
    /// Split to evaluate.
    #[arg(long, default_value = "test")]
    pub split: Split,
    /// Checkpoint to use: best (by validation; the latest if none), last, or step-N (a kept step).
    #[arg(long, default_value = "best")]
    pub checkpoint: CheckpointChoice,
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

pub fn parse_device(s: &str) -> Result<Device> {
    let device = match s {
        "cpu" => Device::Cpu,
        "cuda" => Device::Cuda(0),
        other => match other.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(i)) => Device::Cuda(i),
            _ => bail!("unknown device `{other}`; expected cpu, cuda or cuda:N"),
        },
    };
    if let Device::Cuda(i) = device {
        let count = tch::Cuda::device_count() as usize;
        if i >= count {
            bail!("device {s} requested but {count} CUDA device(s) are visible");
        }
    }
    Ok(device)
}

/// `storm pretrain` is one training job for `storm_job_state`: running, then succeeded or failed.
pub fn pretrain(a: PretrainArgs) -> Result<()> {
    telemetry::set_job_states(&[("running", 1)]);
    let result = train_run(&a);
    let end = if result.is_ok() {
        "succeeded"
    } else {
        "failed"
    };
    telemetry::set_job_states(&[(end, 1)]);
    // under a process group only rank 0 writes into the run directory
    if DistEnv::from_env()
        .ok()
        .flatten()
        .is_none_or(|e| e.rank == 0)
    {
        super::report::refresh(&RunDir::new(&a.out));
    }
    result
}

fn train_run(a: &PretrainArgs) -> Result<()> {
    let mut overrides = a.overrides.clone();
    if let Some(seed) = a.seed {
        overrides.push(format!("train.seed={seed}"));
    }
    let cfg = load_config(Some(&a.config), &overrides)?;
    // the torchrun/Slurm env contract: one rank of a data-parallel job; `--device cuda` binds LOCAL_RANK
    let dist = DistEnv::from_env().context("reading the process-group environment")?;
    let device_name = match &dist {
        Some(env) if a.device == "cuda" => format!("cuda:{}", env.local_rank),
        _ => a.device.clone(),
    };
    let device = parse_device(&device_name)?;
    let mut comm =
        distributed::connect(dist.as_ref(), device).context("joining the process group")?;
    let rank0 = comm.is_rank0();
    let progress = super::show_progress() && rank0;
    let run = RunDir::new(&a.out);
    // rank 0 sets up the run directory (and prepares data); the others wait, then read it
    let info = if rank0 {
        let info = run
            .open(&cfg, a.data.as_deref(), &device_name, progress)
            .with_context(|| format!("setting up run {}", a.out.display()));
        if comm.world_size() > 1 {
            // a failed setup exits rank 0, which the others see at this barrier
            let info = info?;
            comm.barrier()?;
            info
        } else {
            info?
        }
    } else {
        comm.barrier()
            .context("waiting for rank 0 to set up the run directory")?;
        let (_, info) = run.load()?;
        if info.config_hash != cfg.hash() {
            bail!(
                "rank {} resolved a different config than rank 0 (hash {} vs {}); every rank needs the \
                 same --config, --set and --seed",
                comm.rank(),
                cfg.hash(),
                info.config_hash
            );
        }
        info
    };
    telemetry::set_run_info(info.seed, &info.config_hash);
    if cfg.model.kind == ModelKind::Reference {
        if rank0 {
            println!(
                "reference factor {}: nothing to train; run {} is ready for eval and backtest",
                cfg.model.reference.name(),
                run.path().display()
            );
        }
        return Ok(());
    }
    if cfg.model.kind == ModelKind::LightGbm {
        return train_lightgbm(a, &cfg, &run, &info.data_dir, comm.world_size());
    }
    telemetry::watch_gpu_memory(device);
    let panel = Panel::load(&info.data_dir)?;
    let opts = TrainOptions {
        device,
        max_steps: a.max_steps,
        resume: a.resume,
        progress,
        progress_lines: a.in_job,
    };
    let world = comm.world_size();
    let mut trainer = Trainer::new(&cfg, &panel, &a.out, opts)?.with_collective(comm)?;
    let outcome = trainer.run()?;
    if !rank0 {
        return Ok(());
    }
    let summary = run.train_json();
    std::fs::write(&summary, serde_json::to_vec_pretty(&outcome)?)
        .with_context(|| format!("writing {}", summary.display()))?;
    print_outcome(&outcome, world, run.path());
    Ok(())
}

/// `model.kind = "lightgbm"`: one boosting fit on the CPU of one process, the booster written to the run.
fn train_lightgbm(
    a: &PretrainArgs,
    cfg: &ExperimentConfig,
    run: &RunDir,
    data_dir: &Path,
    world: usize,
) -> Result<()> {
    if world > 1 {
        bail!("model.kind = \"lightgbm\" trains in one process; run it without a process group");
    }
    if a.resume && run.booster().is_file() {
        println!(
            "LightGBM booster {} is already trained; nothing to resume",
            run.booster().display()
        );
        return Ok(());
    }
    if a.device != "cpu" {
        eprintln!("LightGBM trains on the CPU (--device {} ignored)", a.device);
    }
    let panel = Panel::load(data_dir)?;
    let outcome = train_booster(cfg, &panel, run.path(), a.max_steps)
        .with_context(|| format!("training LightGBM into {}", run.path().display()))?;
    let summary = run.train_json();
    std::fs::write(&summary, serde_json::to_vec_pretty(&outcome)?)
        .with_context(|| format!("writing {}", summary.display()))?;
    println!(
        "LightGBM: kept {} of at most {} boosting rounds in {:.1}s; train mse {:.4}; valid RankIC {}; booster {}",
        outcome.steps,
        outcome.total_steps,
        outcome.seconds,
        outcome.final_loss,
        outcome.best_valid_rank_ic.map_or("n/a".into(), |v| format!("{v:.4}")),
        run.booster().display()
    );
    Ok(())
}

fn print_outcome(outcome: &TrainOutcome, world: usize, run: &Path) {
    println!(
        "trained {} / {} steps{} in {:.1}s ({:.0} samples/s); final loss {}; best valid RankIC {} at step {}; run {}",
        outcome.steps,
        outcome.total_steps,
        if world > 1 { format!(" on {world} ranks") } else { String::new() },
        outcome.seconds,
        outcome.samples_per_second,
        if outcome.final_loss.is_finite() {
            format!("{:.4}", outcome.final_loss)
        } else {
            "n/a (no step taken in this session)".to_string()
        },
        outcome.best_valid_rank_ic.map_or("n/a".into(), |v| format!("{v:.4}")),
        outcome.best_step.map_or("n/a".into(), |v| v.to_string()),
        run.display()
    );
}

pub fn eval(a: EvalArgs) -> Result<()> {
    evaluate_split(&RunDir::new(&a.run), a.split, a.checkpoint, &a.device)
}

/// `storm eval` (and a job's eval step): evaluate, refresh the report, print the summary.
pub fn evaluate_split(
    run: &RunDir,
    split: Split,
    checkpoint: CheckpointChoice,
    device: &str,
) -> Result<()> {
    let device = parse_device(device)?;
    telemetry::watch_gpu_memory(device);
    let report = TrainedRun::open(run, device, checkpoint, " to evaluate")
        .and_then(|trained| evaluate(&trained, split))
        .with_context(|| format!("evaluating {}", run.path().display()))?;
    super::report::refresh(run);
    println!(
        "{} split ({} .. {}, {} days): RankIC {:.4}, RankICIR {:.4}, IC {:.4}, ICIR {:.4}; \
         codebook perplexity ts {} cs {} → {}, {}",
        report.split,
        report.first_date,
        report.last_date,
        report.n_days,
        report.rank_ic,
        report.rank_icir,
        report.ic,
        report.icir,
        report
            .codebook_perplexity_ts
            .map_or("-".into(), |v| format!("{v:.1}")),
        report
            .codebook_perplexity_cs
            .map_or("-".into(), |v| format!("{v:.1}")),
        run.eval_json(split).display(),
        run.predictions(split).display(),
    );
    Ok(())
}

#[derive(Args)]
pub struct ExportArgs {
    /// Run directory written by `storm pretrain`.
    #[arg(long)]
    pub run: PathBuf,
    /// Output Parquet file (default: <run>/factors.parquet).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Checkpoint to use: best (by validation; the latest if none), last, or step-N (a kept step).
    #[arg(long, default_value = "best")]
    pub checkpoint: CheckpointChoice,
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

pub fn export(a: ExportArgs) -> Result<()> {
    export_factors(&RunDir::new(&a.run), a.out, a.checkpoint, &a.device)
}

/// `storm export` (and a job's export step): write the factors to `out` (default: the run's
/// `factors.parquet`) and print what was written.
pub fn export_factors(
    run: &RunDir,
    out: Option<PathBuf>,
    checkpoint: CheckpointChoice,
    device: &str,
) -> Result<()> {
    let device = parse_device(device)?;
    let out = out.unwrap_or_else(|| run.factors());
    let summary = TrainedRun::open(run, device, checkpoint, "")
        .and_then(|trained| export_run(&trained, &out))
        .with_context(|| format!("exporting factors of {}", run.path().display()))?;
    println!(
        "exported {} rows ({} days × all stocks, {}-dim factor embeddings + codebook indices) → {}",
        summary.rows,
        summary.days,
        summary.embedding_dim,
        out.display()
    );
    Ok(())
}

#[derive(Args)]
pub struct DiagnoseArgs {
    /// Run directory written by `storm pretrain`.
    #[arg(long)]
    pub run: PathBuf,
    /// Checkpoint to use: best (by validation; the latest if none), last, or step-N (a kept step).
    #[arg(long, default_value = "best")]
    pub checkpoint: CheckpointChoice,
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

pub fn diagnose(a: DiagnoseArgs) -> Result<()> {
    let run = RunDir::new(&a.run);
    let device = parse_device(&a.device)?;
    let report = TrainedRun::open(&run, device, a.checkpoint, " to diagnose")
        .and_then(|trained| storm_shared::run::diagnose::diagnose(&trained))
        .with_context(|| format!("diagnosing {}", run.path().display()))?;
    print!("{}", storm_shared::run::diagnose::markdown(&report));
    println!(
        "\nwrote {} and {}",
        run.diagnose_md().display(),
        run.diagnose_json().display()
    );
    Ok(())
}
