//! The backtest of one split's market, without files: TopK-Drop and the benchmarks ([`simulate`]), their
//! financial metrics as a [`BacktestReport`] ([`report`]), the per-date table ([`daily_csv`]) and display
//! labels. Running it on a run directory and writing its outputs is `crate::run::backtest`.

use std::fmt::Write as _;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::analytics::{analyse, Analytics, AnalyticsInput};
use super::benchmarks::{equal_weight, index_wealth, IndexPrices, IndexSource, BUILTIN_DJI};
use super::costs::{break_even, cost_sweep, BreakEven, CostPoint};
use super::topk_drop::{run_topk_drop, TopkDropParams, TopkDropRun};
use super::{Market, WealthSeries};
use crate::config::Split;
use crate::error::{Error, Result};
use crate::stats::financial::FinancialMetrics;

/// Parses `--index`: `builtin:dji`, `none` (no index benchmark), or a path to a CSV/CSV.gz/Parquet file.
pub fn parse_index(s: &str) -> Result<Option<IndexSource>> {
    match s {
        BUILTIN_DJI => Ok(Some(IndexSource::BuiltinDji)),
        "none" => Ok(None),
        other if other.starts_with("builtin:") => Err(Error::Backtest(format!(
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

fn index_from_name<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<IndexSource>, D::Error> {
    let name = String::deserialize(d)?;
    parse_index(&name).map_err(serde::de::Error::custom)
}

/// Everything `storm backtest` takes besides the run and split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BacktestParams {
    pub k: usize,
    pub drop: usize,
    /// Cost rate per unit of traded value.
    pub cost: f64,
    pub cash: f64,
    /// Annual risk-free rate in the Sharpe ratio.
    pub risk_free: f64,
    /// The index benchmark, if any (`builtin:dji`, a file, or none).
    #[serde(serialize_with = "index_name", deserialize_with = "index_from_name")]
    pub index: Option<IndexSource>,
    /// η of the risk-aware variant (FactorVAE's TDrisk): rank by μ − η·σ. 0 is plain TopK-Drop.
    pub risk_aversion: f64,
    /// Execution delay in trading days: 0 trades day t's scores at day t's close (the paper), 1 at day
    /// t+1's close (what a practitioner who scores after the close can do).
    #[serde(default)]
    pub delay: usize,
}

/// The largest `--delay` accepted (a month of trading days).
pub const MAX_DELAY: usize = 21;

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
        let bad = |msg: String| Err(Error::Backtest(msg));
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
        if self.delay > MAX_DELAY {
            return bad(format!(
                "--delay must be between 0 and {MAX_DELAY} trading days (got {})",
                self.delay
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
#[derive(Debug, Clone, Serialize, Deserialize)]
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
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BacktestReport {
    pub strategy: FinancialMetrics,
    pub equal_weight: FinancialMetrics,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<FinancialMetrics>,
    pub params: ReportParams,
    pub period: Period,
    /// The strategy and equal weight at 0, 1, 5 and 10 bp per side.
    #[serde(default)]
    pub cost_sweep: Vec<CostPoint>,
    /// The per-side cost at which the strategy's final wealth falls to equal weight's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub break_even: Option<BreakEven>,
    /// Relative and per-year metrics, long–short, quintiles and IC decay (`portfolio::analytics`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analytics: Option<Analytics>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReportParams {
    pub split: Split,
    #[serde(flatten)]
    pub params: BacktestParams,
}

/// The three wealth series of one backtest, and what costs do to the strategy.
pub struct Backtest {
    /// The market as traded: scores shifted by the delay.
    pub traded: Market,
    pub strategy: TopkDropRun,
    pub equal_weight: WealthSeries,
    pub index: Option<WealthSeries>,
    pub cost_sweep: Vec<CostPoint>,
    pub break_even: BreakEven,
}

/// Runs the strategy and benchmarks on `market` (no files touched).
pub fn simulate(
    market: &Market,
    params: &BacktestParams,
    index: Option<&IndexPrices>,
) -> Result<Backtest> {
    params.validate()?;
    let traded = market.delayed(params.delay);
    let strategy = params.strategy();
    Ok(Backtest {
        strategy: run_topk_drop(&traded, &strategy)?,
        cost_sweep: cost_sweep(&traded, &strategy, params.risk_free)?,
        break_even: break_even(&traded, &strategy)?,
        equal_weight: equal_weight(market, params.cost, params.cash)?,
        index: index
            .map(|prices| index_wealth(prices, &market.dates, params.cash))
            .transpose()?,
        traded,
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
    let analytics = analyse(&AnalyticsInput {
        traded: &bt.traded,
        strategy: &bt.strategy.series,
        equal_weight: &bt.equal_weight,
        index: bt.index.as_ref(),
        k: params.k,
        risk_free: rf,
    });
    Ok(BacktestReport {
        analytics: Some(analytics),
        cost_sweep: bt.cost_sweep.clone(),
        break_even: Some(bt.break_even.clone()),
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

/// Display name of the strategy in tables and charts.
pub fn strategy_label(params: &BacktestParams) -> String {
    let label = plain_strategy_label(params);
    match params.delay {
        0 => label,
        d => format!("{label}, delay {d}"),
    }
}

fn plain_strategy_label(params: &BacktestParams) -> String {
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
