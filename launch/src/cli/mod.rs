//! Command-line surface: every subcommand and its flags.

mod backtest;
mod bench;
mod bench_sweep;
mod data;
mod job;
mod paper;
mod sweep;
mod trade;
mod train;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "storm",
    version,
    about = "Train and evaluate STORM stock factor models"
)]
pub struct Cli {
    /// More log output (-v info, -vv debug).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Data pipeline: prepare features from prices, inspect windows, generate a synthetic market.
    #[command(subcommand)]
    Data(data::DataCommand),
    /// Train a model into a run directory (checkpoints, logs, validation RankIC).
    Pretrain(train::PretrainArgs),
    /// Evaluate a run on a split: predictions, RankIC/RankICIR, codebook usage.
    Eval(train::EvalArgs),
    /// Export factor embeddings and codebook indices per (date, stock) as Parquet.
    Export(train::ExportArgs),
    /// Portfolio backtest of a run's predictions: TopK-Drop vs equal weight and an index.
    Backtest(backtest::BacktestArgs),
    /// Single-stock trading: PPO on a ticker's factor embeddings (or raw features) vs Buy&Hold.
    Trade(trade::TradeArgs),
    /// Benchmarks printed as Markdown tables (recorded in BENCHMARKS.md).
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Run a sweep (seeds × config grid) on worker actors; durable, resumable; tables and charts.
    Sweep(sweep::SweepArgs),
    /// The paper protocol in one command: every model × seed pretrained, evaluated, backtested, traded;
    /// one report with every table as mean ± range.
    Paper(paper::PaperArgs),
    /// One attempt of a sweep job (started by a worker; not for direct use).
    #[command(hide = true)]
    Job(job::JobArgs),
}

pub fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("STORM_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Data(cmd) => data::run(cmd),
        Command::Bench(cmd) => bench::run(cmd),
        Command::Pretrain(a) => train::pretrain(a),
        Command::Eval(a) => train::eval(a),
        Command::Export(a) => train::export(a),
        Command::Backtest(a) => backtest::run(a),
        Command::Trade(a) => trade::run(a),
        Command::Sweep(a) => sweep::run(a),
        Command::Paper(a) => paper::run(a),
        Command::Job(a) => job::run(a),
    }
}

/// The closing line of a command that wrote a report, a table and (unless skipped) a chart.
pub fn print_written(json: &std::path::Path, csv: &std::path::Path, png: Option<&std::path::Path>) {
    let png = png.map_or("chart skipped".into(), |p| p.display().to_string());
    println!("wrote {}, {}, {png}", json.display(), csv.display());
}

/// A metric for a Markdown table: 4 decimals, or `n/a` when undefined.
pub fn cell(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.4}")
    } else {
        "n/a".into()
    }
}

/// One Markdown row: name, APY, CW, CR, ASR, MDD, AVO, then a last column of the caller's choice.
pub fn metrics_row(
    name: &str,
    m: &storm_shared::eval::financial::FinancialMetrics,
    last: &str,
) -> String {
    format!(
        "| {name} | {} | {} | {} | {} | {} | {} | {last} |",
        cell(m.apy),
        cell(m.cw),
        cell(m.cr),
        cell(m.asr),
        cell(m.mdd),
        cell(m.avo)
    )
}
