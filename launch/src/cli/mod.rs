//! Command-line surface: every subcommand and its flags.

mod backtest;
mod bench;
mod bench_dp;
mod bench_gpu;
mod bench_infer;
mod bench_sweep;
mod bench_train;
mod cluster;
mod data;
mod home;
mod job;
mod launch;
mod paper;
mod report;
mod sweep;
mod telemetry;
mod trade;
mod train;

use std::io::IsTerminal;
use std::sync::OnceLock;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "storm",
    version,
    about = "Train and evaluate STORM stock factor models"
)]
pub struct Cli {
    #[command(flatten)]
    pub log: LogArgs,
    /// Serve Prometheus metrics on /metrics (and /health) at HOST:PORT; `:PORT` or `PORT` binds 127.0.0.1.
    /// The port is offset by LOCAL_RANK when that is set (one endpoint per process).
    #[arg(long, value_name = "[HOST:]PORT", global = true)]
    pub metrics_addr: Option<String>,
    /// Keep serving metrics this many seconds after the command ends (so a scraper sees the final values).
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 0,
        requires = "metrics_addr",
        global = true
    )]
    pub metrics_linger: u64,
    #[command(subcommand)]
    pub command: Command,
}

/// The logging options every command line takes.
#[derive(clap::Args)]
pub struct LogArgs {
    /// More log output (-v info, -vv debug).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Log format on stderr: human-readable text, or one JSON object per line (progress bars are hidden).
    #[arg(long, value_enum, default_value = "text", global = true)]
    pub log_format: LogFormat,
}

/// `storm data …` alone: the command line the `storm` binary runs itself, without libtorch (src/main.rs).
#[derive(Parser)]
#[command(
    name = "storm",
    version,
    about = "Train and evaluate STORM stock factor models"
)]
pub struct DataCli {
    #[command(flatten)]
    pub log: LogArgs,
    #[command(subcommand)]
    pub command: DataOnly,
}

#[derive(Subcommand)]
pub enum DataOnly {
    /// Data pipeline: prepare features from prices, inspect windows, generate a synthetic market.
    #[command(subcommand)]
    Data(data::DataCommand),
}

/// Runs a `storm data …` command line.
pub fn run_data(cli: DataCli) -> anyhow::Result<()> {
    let DataOnly::Data(cmd) = cli.command;
    data::run(cmd)
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
    /// What a run learned: RankIC per split with HAC t-statistics, rank autocorrelation, memorisation,
    /// validation curve, gradient balance (diagnose.md).
    Diagnose(train::DiagnoseArgs),
    /// Portfolio backtest of a run's predictions: TopK-Drop vs equal weight and an index.
    Backtest(backtest::BacktestArgs),
    /// Single-stock trading: PPO on a ticker's factor embeddings (or raw features) vs Buy&Hold.
    Trade(trade::TradeArgs),
    /// Benchmarks printed as Markdown tables (recorded in BENCHMARKS.md).
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Run a storm subcommand as N data-parallel ranks (torchrun-style): `storm launch --nproc-per-node 2 --
    /// pretrain …`.
    Launch(launch::LaunchArgs),
    /// Rebuild a run directory's report.md (config, metrics tables, charts) and loss_curves.png.
    Report(report::ReportArgs),
    /// Run a sweep (seeds × config grid) on worker actors; durable, resumable; tables and charts.
    Sweep(sweep::SweepArgs),
    /// The paper protocol in one command: every model × seed pretrained, evaluated, backtested, traded;
    /// one report with every table as mean ± range.
    Paper(paper::PaperArgs),
    /// Serve jobs for a `storm sweep|paper --listen` coordinator from this machine (a remote worker host).
    Worker(cluster::WorkerArgs),
    /// One attempt of a sweep job (started by a worker; not for direct use).
    #[command(hide = true)]
    Job(job::JobArgs),
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

static LOG_FORMAT: OnceLock<LogFormat> = OnceLock::new();

pub fn init_logging(verbose: u8, format: LogFormat) {
    let _ = LOG_FORMAT.set(format);
    let level = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    // ractor_cluster warns about every closed node session; the coordinator reports lost workers itself
    let filter = tracing_subscriber::EnvFilter::try_from_env("STORM_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!("{level},ractor_cluster=error"))
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Whether commands draw progress bars: only on a terminal, and never with `--log-format json`.
pub fn show_progress() -> bool {
    LOG_FORMAT.get().is_none_or(|f| *f == LogFormat::Text) && std::io::stderr().is_terminal()
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    let server = telemetry::start(&cli)?;
    let result = dispatch(cli.command);
    telemetry::finish(server, cli.metrics_linger);
    result
}

fn dispatch(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Data(cmd) => data::run(cmd),
        Command::Bench(cmd) => bench::run(cmd),
        Command::Pretrain(a) => train::pretrain(a),
        Command::Eval(a) => train::eval(a),
        Command::Export(a) => train::export(a),
        Command::Diagnose(a) => train::diagnose(a),
        Command::Backtest(a) => backtest::run(a),
        Command::Trade(a) => trade::run(a),
        Command::Report(a) => report::run(a),
        Command::Launch(a) => launch::run(a),
        Command::Sweep(a) => sweep::run(a),
        Command::Paper(a) => paper::run(a),
        Command::Worker(a) => cluster::run_worker(a),
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
    m: &storm_shared::stats::financial::FinancialMetrics,
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
