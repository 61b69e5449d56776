//! `storm backtest` on a run directory: TopK-Drop and the benchmarks on one split's predictions, and the
//! outputs written atomically: `portfolio_<split>.json` ([`BacktestReport`]), `portfolio_<split>_daily.csv`
//! (one row per date) and `wealth_<split>.png` (skipped with a warning when no font is available); the
//! risk-aware variant writes the same names with `_tdrisk`.

use std::path::{Path, PathBuf};

use super::dir::{file_name, RunDir};
use crate::atomic::Staging;
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
    /// Reads the report `storm backtest` wrote for `split` (`tdrisk`: the risk-aware variant).
    pub fn load(run: &RunDir, split: Split, tdrisk: bool) -> Result<Self> {
        super::load_json(&run.portfolio_json(split, tdrisk))
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
    let staging = Staging::new(run.path())?;
    let tdrisk = report.params.params.risk_aversion > 0.0;
    let (json_path, csv_path, png_path) = (
        run.portfolio_json(split, tdrisk),
        run.portfolio_daily_csv(split, tdrisk),
        run.wealth_png(split, tdrisk),
    );
    let (json, csv, png) = (
        file_name(&json_path),
        file_name(&csv_path),
        file_name(&png_path),
    );
    let staged_csv = staging.path(&csv);
    std::fs::write(&staged_csv, daily_csv(market, bt)).map_err(|e| Error::io(&staged_csv, e))?;
    let png_ok = match draw_wealth(&staging.path(&png), split, market, bt, report) {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!("{} not written: {e}", png_path.display());
            remove_stale(&png_path);
            false
        }
    };
    let staged_json = staging.path(&json);
    std::fs::write(&staged_json, serde_json::to_vec_pretty(report)?)
        .map_err(|e| Error::io(&staged_json, e))?;
    let mut order = vec![csv.as_str()];
    if png_ok {
        order.push(png.as_str());
    }
    order.push(json.as_str());
    staging.commit(&order)?;
    Ok(BacktestOutcome {
        report: report.clone(),
        json: json_path,
        csv: csv_path,
        png: png_ok.then_some(png_path),
    })
}

/// A chart from an earlier run would disagree with the new JSON and CSV: remove it.
pub(super) fn remove_stale(path: &Path) {
    if path.exists() {
        match std::fs::remove_file(path) {
            Ok(()) => tracing::warn!("removed the outdated {}", path.display()),
            Err(e) => tracing::warn!("could not remove the outdated {}: {e}", path.display()),
        }
    }
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
