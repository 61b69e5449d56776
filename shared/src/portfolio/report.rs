//! `storm backtest`: TopK-Drop and the benchmarks on one split of a run's predictions, their financial
//! metrics, and the outputs written atomically into the run directory:
//! `portfolio_<split>.json` (metrics + parameters), `portfolio_<split>_daily.csv` (one row per date) and
//! `wealth_<split>.png` (skipped with a warning when no font is available).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::benchmarks::{equal_weight, index_wealth, IndexPrices, IndexSource, BUILTIN_DJI};
use super::topk_drop::{run_topk_drop, TopkDropParams, TopkDropRun};
use super::{Market, WealthSeries};
use crate::atomic::Staging;
use crate::config::Split;
use crate::error::{Error, Result};
use crate::eval::run_eval::predictions_file;
use crate::stats::financial::FinancialMetrics;

/// Parses `--index`: `builtin:dji`, `none` (no index benchmark), or a path to a CSV/CSV.gz/Parquet file.
pub fn parse_index(s: &str) -> Result<Option<IndexSource>> {
    match s {
        BUILTIN_DJI => Ok(Some(IndexSource::BuiltinDji)),
        "none" => Ok(None),
        other if other.starts_with("builtin:") => Err(Error::Data(format!(
            "unknown built-in index `{other}`; expected {BUILTIN_DJI}, none or a file"
        ))),
        path => Ok(Some(IndexSource::File(PathBuf::from(path)))),
    }
}

fn index_name<S: serde::Serializer>(
    index: &Option<IndexSource>,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(
        &index
            .as_ref()
            .map_or_else(|| "none".into(), IndexSource::name),
    )
}

/// Everything `storm backtest` takes besides the run and split.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BacktestParams {
    pub k: usize,
    pub drop: usize,
    /// Cost rate per unit of traded value.
    pub cost: f64,
    pub cash: f64,
    /// Annual risk-free rate in the Sharpe ratio.
    pub risk_free: f64,
    /// The index benchmark, if any (`builtin:dji`, a file, or none).
    #[serde(serialize_with = "index_name")]
    pub index: Option<IndexSource>,
    /// η of the risk-aware variant (FactorVAE's TDrisk): rank by μ − η·σ. 0 is plain TopK-Drop.
    pub risk_aversion: f64,
}

impl BacktestParams {
    pub fn strategy(&self) -> TopkDropParams {
        TopkDropParams {
            k: self.k,
            drop: self.drop,
            cost_rate: self.cost,
            cash: self.cash,
        }
    }

    /// Checks the values as the command-line flags that carry them (messages name the flags).
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(Error::Data(msg));
        if self.k < 1 {
            return bad(format!("--k must be at least 1 (got {})", self.k));
        }
        if self.drop > self.k {
            return bad(format!(
                "--drop must be between 0 and --k = {} (got {})",
                self.k, self.drop
            ));
        }
        if !(self.cost.is_finite() && self.cost >= 0.0) {
            return bad(format!(
                "--cost must be a finite rate ≥ 0 (got {})",
                self.cost
            ));
        }
        if !(self.cash.is_finite() && self.cash > 0.0) {
            return bad(format!("--cash must be finite and > 0 (got {})", self.cash));
        }
        if !(self.risk_aversion.is_finite() && self.risk_aversion >= 0.0) {
            return bad(format!(
                "--risk-aversion must be a finite number ≥ 0 (got {})",
                self.risk_aversion
            ));
        }
        if !self.risk_free.is_finite() {
            return bad(format!(
                "--risk-free must be finite (got {})",
                self.risk_free
            ));
        }
        Ok(())
    }
}

/// The dates a backtest covers.
#[derive(Debug, Clone, Serialize)]
pub struct Period {
    pub first_date: String,
    pub last_date: String,
    /// Dates in the split (the CSV rows).
    pub n_dates: usize,
    /// Dates with a trade and a return (all but the last).
    pub n_trading_days: usize,
    pub n_stocks: usize,
}

/// The JSON written to `portfolio_<split>.json`.
#[derive(Debug, Clone, Serialize)]
pub struct BacktestReport {
    pub strategy: FinancialMetrics,
    pub equal_weight: FinancialMetrics,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<FinancialMetrics>,
    pub params: ReportParams,
    pub period: Period,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReportParams {
    pub split: Split,
    #[serde(flatten)]
    pub params: BacktestParams,
}

/// The three wealth series of one backtest.
pub struct Backtest {
    pub strategy: TopkDropRun,
    pub equal_weight: WealthSeries,
    pub index: Option<WealthSeries>,
}

/// What `run_backtest` produced and where.
pub struct BacktestOutcome {
    pub report: BacktestReport,
    pub json: PathBuf,
    pub csv: PathBuf,
    /// None when the chart was skipped (no font).
    pub png: Option<PathBuf>,
}

/// `<split>` for TopK-Drop, `<split>_tdrisk` for the risk-aware variant, so neither overwrites the other.
fn variant(split: Split, risk_aware: bool) -> String {
    if risk_aware {
        format!("{}_tdrisk", split.name())
    } else {
        split.name().to_string()
    }
}
pub fn report_file(split: Split, risk_aware: bool) -> String {
    format!("portfolio_{}.json", variant(split, risk_aware))
}
pub fn daily_file(split: Split, risk_aware: bool) -> String {
    format!("portfolio_{}_daily.csv", variant(split, risk_aware))
}
pub fn wealth_png_file(split: Split, risk_aware: bool) -> String {
    format!("wealth_{}.png", variant(split, risk_aware))
}

/// Runs the strategy and benchmarks on `market` (no files touched).
pub fn simulate(
    market: &Market,
    params: &BacktestParams,
    index: Option<&IndexPrices>,
) -> Result<Backtest> {
    params.validate()?;
    Ok(Backtest {
        strategy: run_topk_drop(market, &params.strategy())?,
        equal_weight: equal_weight(market, params.cost, params.cash)?,
        index: index
            .map(|prices| index_wealth(prices, &market.dates, params.cash))
            .transpose()?,
    })
}

/// Metrics of the three series plus the parameters and period.
pub fn report(
    market: &Market,
    split: Split,
    params: &BacktestParams,
    bt: &Backtest,
) -> Result<BacktestReport> {
    let rf = params.risk_free;
    Ok(BacktestReport {
        strategy: bt.strategy.series.metrics(rf)?,
        equal_weight: bt.equal_weight.metrics(rf)?,
        index: bt.index.as_ref().map(|s| s.metrics(rf)).transpose()?,
        params: ReportParams {
            split,
            params: params.clone(),
        },
        period: Period {
            first_date: market.dates[0].to_string(),
            last_date: market.dates[market.dates.len() - 1].to_string(),
            n_dates: market.dates.len(),
            n_trading_days: market.n_trading_days(),
            n_stocks: market.n_tickers(),
        },
    })
}

/// Loads `predictions_<split>.parquet` of `run_dir`, with a pointer to `storm eval` when it is missing.
pub fn load_split(run_dir: &Path, split: Split, risk_aversion: f64) -> Result<Market> {
    let path = run_dir.join(predictions_file(split));
    if !path.is_file() {
        return Err(Error::Data(format!(
            "{} not found: run `storm eval --run {} --split {}` first",
            path.display(),
            run_dir.display(),
            split.name()
        )));
    }
    Market::load_predictions(&path, risk_aversion)
}

/// The whole `storm backtest`: validate, load, simulate, write JSON/CSV/PNG atomically.
pub fn run_backtest(
    run_dir: &Path,
    split: Split,
    params: &BacktestParams,
) -> Result<BacktestOutcome> {
    params.validate()?;
    let market = load_split(run_dir, split, params.risk_aversion)?;
    let index = params.index.as_ref().map(IndexSource::read).transpose()?;
    let bt = simulate(&market, params, index.as_ref())?;
    let report = report(&market, split, params, &bt)?;
    let mut series = vec![
        ("strategy", &report.strategy),
        ("equal_weight", &report.equal_weight),
    ];
    series.extend(report.index.as_ref().map(|m| ("index", m)));
    crate::telemetry::record_backtest(split.name(), &series);
    write_outputs(run_dir, split, &market, &bt, &report)
}

fn write_outputs(
    run_dir: &Path,
    split: Split,
    market: &Market,
    bt: &Backtest,
    report: &BacktestReport,
) -> Result<BacktestOutcome> {
    let staging = Staging::new(run_dir)?;
    let risk_aware = report.params.params.risk_aversion > 0.0;
    let (json, csv, png) = (
        report_file(split, risk_aware),
        daily_file(split, risk_aware),
        wealth_png_file(split, risk_aware),
    );
    let csv_path = staging.path(&csv);
    std::fs::write(&csv_path, daily_csv(market, bt)).map_err(|e| Error::io(&csv_path, e))?;
    let png_ok = match draw_wealth(&staging.path(&png), split, market, bt, report) {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!("{} not written: {e}", run_dir.join(&png).display());
            remove_stale(&run_dir.join(&png));
            false
        }
    };
    let json_path = staging.path(&json);
    std::fs::write(&json_path, serde_json::to_vec_pretty(report)?)
        .map_err(|e| Error::io(&json_path, e))?;
    let mut order = vec![csv.as_str()];
    if png_ok {
        order.push(png.as_str());
    }
    order.push(json.as_str());
    staging.commit(&order)?;
    Ok(BacktestOutcome {
        report: report.clone(),
        json: run_dir.join(&json),
        csv: run_dir.join(&csv),
        png: png_ok.then(|| run_dir.join(&png)),
    })
}

/// A chart from an earlier backtest would disagree with the new JSON and CSV: remove it.
fn remove_stale(path: &Path) {
    if path.exists() {
        match std::fs::remove_file(path) {
            Ok(()) => tracing::warn!("removed the outdated {}", path.display()),
            Err(e) => tracing::warn!("could not remove the outdated {}: {e}", path.display()),
        }
    }
}

/// Display name of the strategy in tables and charts.
pub fn strategy_label(params: &BacktestParams) -> String {
    if params.risk_aversion > 0.0 {
        format!(
            "TDrisk (k={}, drop={}, η={})",
            params.k, params.drop, params.risk_aversion
        )
    } else {
        format!("TopK-Drop (k={}, drop={})", params.k, params.drop)
    }
}

/// Display name of the index benchmark.
pub fn index_label(params: &BacktestParams) -> String {
    match &params.index {
        Some(IndexSource::BuiltinDji) => "Index (DJI)".to_string(),
        Some(IndexSource::File(p)) => format!(
            "Index ({})",
            p.file_name().map_or_else(
                || p.display().to_string(),
                |n| n.to_string_lossy().to_string()
            )
        ),
        None => "Index".to_string(),
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

/// A CSV field, quoted when it holds a separator or a quote.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// One row per date D_0..D_T: wealth of each series at that close (before the day's trade), the
/// strategy's daily return, and its trade at that close (the last date has none) with the names held
/// after it.
pub fn daily_csv(market: &Market, bt: &Backtest) -> String {
    let mut out = String::from("date,wealth,equal_weight_wealth");
    if bt.index.is_some() {
        out.push_str(",index_wealth");
    }
    out.push_str(",daily_return,traded_value,cost,n_holdings,holdings,buys,sells\n");
    let wealth = &bt.strategy.series.wealth;
    for (t, date) in market.dates.iter().enumerate() {
        let _ = write!(out, "{date},{},{}", wealth[t], bt.equal_weight.wealth[t]);
        if let Some(index) = &bt.index {
            let _ = write!(out, ",{}", index.wealth[t]);
        }
        let ret = if t == 0 {
            String::new()
        } else {
            (wealth[t] / wealth[t - 1] - 1.0).to_string()
        };
        let (traded, cost, holdings, buys, sells) = match bt.strategy.days.get(t) {
            Some(d) => (d.traded_value, d.cost, &d.holdings, &d.buys, &d.sells),
            None => (
                0.0,
                0.0,
                &bt.strategy.final_holdings,
                &Vec::new(),
                &Vec::new(),
            ),
        };
        let _ = writeln!(
            out,
            ",{ret},{traded},{cost},{},{},{},{}",
            holdings.len(),
            csv_field(&holdings.join(";")),
            csv_field(&buys.join(";")),
            csv_field(&sells.join(";")),
        );
    }
    out
}
