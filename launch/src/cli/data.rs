//! `storm data …`: prepare a feature store, describe its windows, generate a synthetic market.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use storm_shared::config::{ExperimentConfig, Split};
use storm_shared::data::windows::{split_window_ends, Labels};
use storm_shared::data::{self, synth, Panel, Source};

#[derive(Subcommand)]
pub enum DataCommand {
    /// Prices (CSV, CSV.gz or Parquet, long format) → features.parquet + manifest.json.
    Prepare(PrepareArgs),
    /// Summarise a prepared directory: tickers, dates and the windows of each split.
    Describe(DescribeArgs),
    /// Write a synthetic market with a planted, documented predictable factor.
    Synth(SynthArgs),
}

#[derive(Args)]
pub struct PrepareArgs {
    /// Price file; defaults to the config's data.source, else the bundled DJ30 set.
    #[arg(long)]
    pub input: Option<PathBuf>,
    /// Output directory.
    #[arg(long)]
    pub out: PathBuf,
    /// Experiment config (its [data] table selects tickers, dates and windows).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Override a config value, e.g. --set data.scaler_window=32 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
}

#[derive(Args)]
pub struct DescribeArgs {
    /// A directory written by `storm data prepare`.
    #[arg(long)]
    pub data: PathBuf,
    /// Config whose splits and window to use (defaults: paper splits, W=64).
    #[arg(long)]
    pub config: Option<PathBuf>,
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
}

#[derive(Args)]
pub struct SynthArgs {
    /// Output file: .csv, .csv.gz or .parquet. The oracle report goes beside it as <stem>.oracle.json.
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 29)]
    pub tickers: usize,
    #[arg(long, default_value_t = 3000)]
    pub days: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

pub fn run(cmd: DataCommand) -> Result<()> {
    match cmd {
        DataCommand::Prepare(a) => prepare(a),
        DataCommand::Describe(a) => describe(a),
        DataCommand::Synth(a) => synthesize(a),
    }
}

/// Loads `path` if given, else the built-in defaults, applying overrides either way.
pub fn load_config(path: Option<&Path>, overrides: &[String]) -> Result<ExperimentConfig> {
    Ok(match path {
        Some(p) => ExperimentConfig::load(p, overrides)?,
        None => ExperimentConfig::from_toml_str("", "<defaults>", overrides)?,
    })
}

fn prepare(a: PrepareArgs) -> Result<()> {
    let cfg = load_config(a.config.as_deref(), &a.overrides)?;
    let source = match &a.input {
        Some(p) => Source::File(p.clone()),
        None => Source::parse(&cfg.data.source),
    };
    let started = Instant::now();
    let manifest = data::prepare(&cfg.data, &source, &a.out, super::show_progress())
        .with_context(|| format!("preparing features into {}", a.out.display()))?;
    println!(
        "prepared {} rows × {} features for {} tickers ({} .. {}) in {:.2}s → {}",
        manifest.rows,
        manifest.n_features,
        manifest.n_tickers,
        manifest.first_date,
        manifest.last_date,
        started.elapsed().as_secs_f64(),
        a.out.display()
    );
    Ok(())
}

fn describe(a: DescribeArgs) -> Result<()> {
    let cfg = load_config(a.config.as_deref(), &a.overrides)?;
    let panel = Panel::load(&a.data)?;
    println!(
        "{}: {} tickers × {} days × {} features ({} .. {})",
        a.data.display(),
        panel.n_tickers(),
        panel.n_days(),
        panel.n_features(),
        panel
            .dates
            .first()
            .map(|d| d.to_string())
            .unwrap_or_default(),
        panel
            .dates
            .last()
            .map(|d| d.to_string())
            .unwrap_or_default(),
    );
    println!("| split | range | windows | first window end | last window end | batch x shape |");
    println!("|---|---|---|---|---|---|");
    for split in Split::ALL {
        let range = cfg.splits.range(split);
        let labels = if split == Split::Train {
            Labels::Required
        } else {
            Labels::Optional
        };
        let ends = split_window_ends(&panel, &cfg.splits, split, cfg.data.window, labels)?;
        println!(
            "| {} | {} .. {} | {} | {} | {} | ({}, {}, {}, {}) |",
            split.name(),
            range.start,
            range.end,
            ends.len(),
            panel.dates[ends[0]],
            panel.dates[ends[ends.len() - 1]],
            cfg.train.batch_size,
            cfg.data.window,
            panel.n_tickers(),
            panel.n_features()
        );
    }
    Ok(())
}

fn synthesize(a: SynthArgs) -> Result<()> {
    let mut market = synth::generate(a.tickers, a.days, a.seed)?;
    synth::write_market(&mut market, &a.out)?;
    println!(
        "wrote {} tickers × {} days to {} (oracle RankIC {:.4}, theoretical {:.4}; report {})",
        a.tickers,
        a.days,
        a.out.display(),
        market.oracle.oracle_rank_ic,
        market.oracle.theoretical_rank_ic,
        synth::oracle_path(&a.out).display()
    );
    Ok(())
}
