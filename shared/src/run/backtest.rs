//! `storm backtest` on a run directory: TopK-Drop and the benchmarks on one split's predictions, and the
//! outputs written atomically: `portfolio_<split>.json` ([`BacktestReport`]), `portfolio_<split>_daily.csv`
//! (one row per date) and `wealth_<split>.png` (skipped with a warning when no font is available); the
//! risk-aware variant writes the same names with `_tdrisk`, a delayed one with `_delay<d>`.

use std::path::{Path, PathBuf};

use super::dir::{PortfolioVariant, RunDir};
use super::publish::publish;
use crate::config::Split;
use crate::error::{Error, Result};
use crate::portfolio::benchmarks::IndexSource;
use crate::portfolio::report::{
    daily_csv, index_label, report, simulate, strategy_label, Backtest, BacktestParams,
    BacktestReport,
};
use crate::portfolio::Market;

/// What [`backtest`] produced and where.
pub struct BacktestOutcome {
    pub report: BacktestReport,
    pub json: PathBuf,
    pub csv: PathBuf,
    /// None when the chart was skipped (no font).
    pub png: Option<PathBuf>,
}

impl BacktestReport {
    /// Reads the report `storm backtest` wrote for `split` and `variant`.
    pub fn load(run: &RunDir, split: Split, variant: PortfolioVariant) -> Result<Self> {
        super::load_json(&run.portfolio_json(split, variant))
    }
}

/// Loads `predictions_<split>.parquet` of `run`, with a pointer to `storm eval` when it is missing.
pub fn load_split(run: &RunDir, split: Split, risk_aversion: f64) -> Result<Market> {
    let path = run.predictions(split);
    if !path.is_file() {
        return Err(Error::Backtest(format!(
            "{} not found: run `storm eval --run {} --split {}` first",
            path.display(),
            run.path().display(),
            split.name()
        )));
    }
    Market::load_predictions(&path, risk_aversion)
}

/// The whole `storm backtest`: validate, load, simulate, write JSON/CSV/PNG atomically.
pub fn backtest(run: &RunDir, split: Split, params: &BacktestParams) -> Result<BacktestOutcome> {
    params.validate()?;
    let market = load_split(run, split, params.risk_aversion)?;
    let index = params.index.as_ref().map(IndexSource::read).transpose()?;
    let bt = simulate(&market, params, index.as_ref())?;
    let report = report(&market, split, params, &bt)?;
    let mut series = vec![
        ("strategy", &report.strategy),
        ("equal_weight", &report.equal_weight),
    ];
    series.extend(report.index.as_ref().map(|m| ("index", m)));
    crate::telemetry::record_backtest(split.name(), &series);
    write_outputs(run, split, &market, &bt, &report)
}

fn write_outputs(
    run: &RunDir,
    split: Split,
    market: &Market,
    bt: &Backtest,
    report: &BacktestReport,
) -> Result<BacktestOutcome> {
    let v = PortfolioVariant::of(&report.params.params);
    let paths = (
        run.portfolio_json(split, v),
        run.portfolio_daily_csv(split, v),
        run.wealth_png(split, v),
    );
    let draw = |png: &Path| draw_wealth(png, split, market, bt, report);
    let files = publish(run, paths, daily_csv(market, bt), draw, report)?;
    Ok(BacktestOutcome {
        report: report.clone(),
        json: files.json,
        csv: files.csv,
        png: files.png,
    })
}

fn draw_wealth(
    path: &Path,
    split: Split,
    market: &Market,
    bt: &Backtest,
    report: &BacktestReport,
) -> Result<()> {
    let params = &report.params.params;
    let strategy = strategy_label(params);
    let index = index_label(params);
    let mut series: Vec<(&str, &[f64])> = vec![
        (strategy.as_str(), &bt.strategy.series.wealth),
        ("Equal weight", &bt.equal_weight.wealth),
    ];
    if let Some(s) = &bt.index {
        series.push((index.as_str(), &s.wealth));
    }
    let title = format!(
        "Wealth, {} split ({} .. {}), cost {}",
        split.name(),
        report.period.first_date,
        report.period.last_date,
        params.cost
    );
    crate::plot::wealth_curves(path, &title, &market.dates, &series)
}
