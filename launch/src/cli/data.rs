//! `storm data …`: prepare a feature store, describe its windows, generate a synthetic market.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use storm_shared::config::{ExperimentConfig, MissingPolicy, Split};
use storm_shared::data::prepare::summarise;
use storm_shared::data::windows::{split_window_ends, Labels};
use storm_shared::data::{self, synth, Manifest, Panel, PrepareOptions, Source};

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
    /// What to do with an empty price or volume field: error (refuse the file), drop (remove the row) or
    /// ffill (carry the ticker's previous value forward; a missing volume becomes 0). Overrides the
    /// config's data.missing (default error).
    #[arg(long, value_name = "error|drop|ffill", value_parser = parse_missing)]
    pub missing: Option<MissingPolicy>,
    /// Refuse bars whose open or close lies outside [low, high] (by default they are kept with a warning).
    #[arg(long)]
    pub strict: bool,
    /// Also write features_raw.parquet: the 152 features before the causal z-score, same columns and
    /// rows as features.parquet.
    #[arg(long)]
    pub unscaled: bool,
}

fn parse_missing(s: &str) -> std::result::Result<MissingPolicy, String> {
    s.parse()
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
    let mut cfg = load_config(a.config.as_deref(), &a.overrides)?;
    if let Some(policy) = a.missing {
        cfg.data.missing = policy;
    }
    let source = match &a.input {
        Some(p) => Source::File(p.clone()),
        None => Source::parse(&cfg.data.source),
    };
    let started = Instant::now();
    let options = PrepareOptions {
        progress: super::show_progress(),
        strict: a.strict,
        unscaled: a.unscaled,
    };
    let manifest = data::prepare_with(&cfg.data, &source, &a.out, options)
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
    let manifest = Manifest::load(&a.data)?;
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
    print_input_repairs(&manifest);
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

/// The missing-value policy and its counts, and the bars kept outside [low, high].
fn print_input_repairs(m: &Manifest) {
    let cells = &m.missing_values;
    if cells.is_empty() {
        println!("missing values (policy {}): none", m.missing_policy);
    } else {
        let mut tickers: Vec<&str> = cells.iter().map(|r| r.ticker.as_str()).collect();
        tickers.dedup();
        println!(
            "missing values (policy {}): {} cell(s) in {} ticker(s): {}",
            m.missing_policy,
            cells.len(),
            tickers.len(),
            summarise(cells)
        );
    }
    println!(
        "bars with open or close outside [low, high]: {}",
        m.bars_outside_range
    );
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
