//! `storm paper`: the paper's whole protocol in one command — prepare the data once, pretrain every model of
//! a paper config for each seed, evaluate RankIC/RankICIR, backtest TopK-Drop, trade the configured stocks
//! (first `trade.seeds` seeds), and write one report (`report.md` + PNGs) with every table as mean ± range.
//! Runs as a sweep (same directory layout, ledger, --resume and exit statuses as `storm sweep`).

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;
use storm_coordinator::paper_config::{PaperConfig, PaperOverrides};
use storm_coordinator::report::{write_paper_report, PaperMeta};

use super::cluster::ClusterArgs;
use super::sweep::{conclude, execute, PoolArgs};

#[derive(Args)]
pub struct PaperArgs {
    /// dj30 (the bundled DJ30 prices) or a price file (CSV, CSV.gz or Parquet, long format).
    #[arg(long, default_value = "dj30")]
    pub data: String,
    /// Seeds per model (default: the paper config's, 10).
    #[arg(long)]
    pub seeds: Option<u64>,
    /// Output directory (the sweep directory; report.md lands here).
    #[arg(long)]
    pub out: PathBuf,
    /// Paper config: models, base experiment config, backtest and trading settings.
    #[arg(long, default_value = "configs/paper/dj30-small.toml")]
    pub config: PathBuf,
    /// Override an experiment config value for every job, e.g. --set train.epochs=2 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
    /// Stop each pretraining after this many optimizer steps (smoke runs).
    #[arg(long)]
    pub max_steps: Option<u64>,
    #[command(flatten)]
    pub workers: PoolArgs,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Continue an earlier run in --out (same flags): skip finished jobs, rerun the rest.
    #[arg(long)]
    pub resume: bool,
}

pub fn run(a: PaperArgs) -> Result<()> {
    if !a.config.is_file() {
        bail!(
            "paper config {} not found: run from the repository root or pass --config \
             configs/paper/<name>.toml",
            a.config.display()
        );
    }
    let cfg = PaperConfig::load(&a.config)?;
    let overrides = PaperOverrides {
        data: Some(a.data.clone()),
        seeds: a.seeds,
        set: a.overrides.clone(),
        max_steps: a.max_steps,
    };
    let plan = cfg.plan(&a.config, &overrides)?;
    let outcome = execute(&plan, &a.out, &a.workers, &a.cluster, a.resume, &a.config)?;
    let seeds = a.seeds.unwrap_or(cfg.seeds);
    let meta = PaperMeta {
        data: a.data.clone(),
        config: a.config.display().to_string(),
        seeds,
        trade_seeds: match cfg.trade.seeds {
            0 => seeds,
            n => n as u64,
        },
        tickers: cfg.trade.tickers.clone(),
        k: cfg.backtest.k,
        drop: cfg.backtest.drop,
        index: match cfg.backtest.index.as_str() {
            "builtin:dji" => "DJI".to_string(),
            other => std::path::Path::new(other)
                .file_name()
                .map_or(other.to_string(), |n| n.to_string_lossy().to_string()),
        },
    };
    let report = write_paper_report(&plan, &outcome, &meta)?;
    println!(
        "paper protocol `{}`: {}; report {}",
        plan.name,
        storm_coordinator::results::counts_line(&outcome.rows),
        report.display()
    );
    let mut hint = format!(
        "storm paper --config {} --data {} --out {} --resume",
        a.config.display(),
        a.data,
        a.out.display()
    );
    if let Some(s) = a.seeds {
        hint.push_str(&format!(" --seeds {s}"));
    }
    for o in &a.overrides {
        hint.push_str(&format!(" --set {o}"));
    }
    if let Some(m) = a.max_steps {
        hint.push_str(&format!(" --max-steps {m}"));
    }
    conclude(&outcome, &hint);
    Ok(())
}
