//! What a Qlib-grade backtest report adds to paper 003's six metrics, computed from one backtest:
//!
//! - against each benchmark (equal weight, the index when given): annualised excess return
//!   252 · mean(r_t − b_t), tracking error √252 · std(r_t − b_t), their ratio (information ratio) and the
//!   share of days the strategy beat the benchmark;
//! - the strategy's hit rate (share of days with r_t > 0) and Sortino ratio (APY − r_f) / downside
//!   deviation, the downside deviation being √252 · √(mean_t min(r_t − r_f / 252, 0)²);
//! - one row per calendar year: each series' return over the year's trading days and the strategy's
//!   drawdown within the year;
//! - from the scores as traded (after any delay), gross of costs: the long–short spread (equal-weighted top
//!   k minus bottom k by score, each day's labels), the mean return of each score quintile, and the RankIC of
//!   each day's scores with the compounded return over the next h = 1, 5, 10 and 20 days (IC decay).
//!
//! Rankings break ties by ticker name, as TopK-Drop does. A day counts only where it has enough scored and
//! labelled names (2k for the spread, 5 for the quintiles, 2 for a RankIC).

use chrono::Datelike;
use serde::{Deserialize, Serialize};

use super::benchmarks::IndexSource;
use super::{Market, WealthSeries};
use crate::stats::financial::{annual_yield, max_drawdown, null_as_nan, sample_std, TRADING_DAYS};
use crate::stats::hac::{hac_mean_test, newey_west_lag};
use crate::stats::rank_ic::daily_rank_ic;

/// Horizons of the IC decay, in trading days.
pub const IC_HORIZONS: [usize; 4] = [1, 5, 10, 20];
/// Score buckets of the quantile returns.
pub const QUANTILES: usize = 5;

/// The strategy against one benchmark.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Relative {
    /// 252 · mean daily (strategy − benchmark) return.
    #[serde(deserialize_with = "null_as_nan")]
    pub excess_return: f64,
    /// √252 · sample std of the daily excess return.
    #[serde(deserialize_with = "null_as_nan")]
    pub tracking_error: f64,
    /// excess_return / tracking_error (NaN when the tracking error is 0).
    #[serde(deserialize_with = "null_as_nan")]
    pub information_ratio: f64,
    /// Share of trading days on which the strategy's return exceeded the benchmark's.
    #[serde(deserialize_with = "null_as_nan")]
    pub win_rate: f64,
}

/// One calendar year of the backtest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct YearRow {
    pub year: i32,
    /// Trading days whose return falls in this year (a return belongs to the date it is marked at).
    pub days: usize,
    pub strategy: f64,
    pub equal_weight: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<f64>,
    /// Maximum drawdown of the strategy within the year (from the wealth at the year's start).
    pub strategy_mdd: f64,
}

/// A daily return series summarised: annualised mean and volatility, their ratio, and the Newey–West
/// t-statistic of the daily mean.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeriesSummary {
    #[serde(deserialize_with = "null_as_nan")]
    pub annual_return: f64,
    #[serde(deserialize_with = "null_as_nan")]
    pub annual_volatility: f64,
    #[serde(deserialize_with = "null_as_nan")]
    pub sharpe: f64,
    #[serde(deserialize_with = "null_as_nan")]
    pub t_stat: f64,
    pub n_days: usize,
}

impl SeriesSummary {
    fn of(daily: &[f64], lag: Option<usize>) -> Self {
        let n = daily.len();
        let mean = if n == 0 {
            f64::NAN
        } else {
            daily.iter().sum::<f64>() / n as f64
        };
        let vol = sample_std(daily) * TRADING_DAYS.sqrt();
        SeriesSummary {
            annual_return: mean * TRADING_DAYS,
            annual_volatility: vol,
            sharpe: ratio(mean * TRADING_DAYS, vol),
            t_stat: hac_mean_test(daily, lag).t_stat,
            n_days: n,
        }
    }
}

/// The RankIC of each day's scores with the next `horizon` days' compounded return.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IcAtHorizon {
    pub horizon: usize,
    #[serde(deserialize_with = "null_as_nan")]
    pub rank_ic: f64,
    /// Newey–West t-statistic with at least `horizon` lags (the forward returns of nearby days overlap).
    #[serde(deserialize_with = "null_as_nan")]
    pub t_stat: f64,
    pub n_days: usize,
}

/// Everything below paper 003's six metrics in `portfolio_<split>.json` (`analytics`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Analytics {
    #[serde(deserialize_with = "null_as_nan")]
    pub hit_rate: f64,
    #[serde(deserialize_with = "null_as_nan")]
    pub sortino: f64,
    /// Annual risk-free rate used by ASR and Sortino.
    pub risk_free: f64,
    pub vs_equal_weight: Relative,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vs_index: Option<Relative>,
    pub years: Vec<YearRow>,
    /// k of the long–short spread (the strategy's k).
    pub long_short_k: usize,
    pub long_short: SeriesSummary,
    /// Quintile 1 (lowest scores) first.
    pub quantiles: Vec<SeriesSummary>,
    pub ic_decay: Vec<IcAtHorizon>,
}

/// What [`analyse`] reads: the market as traded (scores shifted by the delay) and the three wealth series.
pub struct AnalyticsInput<'a> {
    pub traded: &'a Market,
    pub strategy: &'a WealthSeries,
    pub equal_weight: &'a WealthSeries,
    pub index: Option<&'a WealthSeries>,
    pub k: usize,
    pub risk_free: f64,
}

pub fn analyse(input: &AnalyticsInput) -> Analytics {
    let r = input.strategy.returns();
    let rf_daily = input.risk_free / TRADING_DAYS;
    let downside = (r
        .iter()
        .map(|v| (v - rf_daily).min(0.0).powi(2))
        .sum::<f64>()
        / r.len().max(1) as f64)
        .sqrt()
        * TRADING_DAYS.sqrt();
    let apy = annual_yield(&input.strategy.wealth);
    Analytics {
        hit_rate: share(&r, |v| v > 0.0),
        sortino: ratio(apy - input.risk_free, downside),
        risk_free: input.risk_free,
        vs_equal_weight: relative(&r, &input.equal_weight.returns()),
        vs_index: input.index.map(|s| relative(&r, &s.returns())),
        years: years(input),
        long_short_k: input.k,
        long_short: long_short(input.traded, input.k),
        quantiles: quantile_returns(input.traded),
        ic_decay: IC_HORIZONS
            .iter()
            .map(|&h| ic_at_horizon(input.traded, h))
            .collect(),
    }
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        a / b
    } else {
        f64::NAN
    }
}

fn share(values: &[f64], pred: impl Fn(f64) -> bool) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.iter().filter(|v| pred(**v)).count() as f64 / values.len() as f64
}

fn relative(strategy: &[f64], benchmark: &[f64]) -> Relative {
    let excess: Vec<f64> = strategy.iter().zip(benchmark).map(|(s, b)| s - b).collect();
    let mean = excess.iter().sum::<f64>() / excess.len().max(1) as f64;
    let tracking_error = sample_std(&excess) * TRADING_DAYS.sqrt();
    Relative {
        excess_return: mean * TRADING_DAYS,
        tracking_error,
        information_ratio: ratio(mean * TRADING_DAYS, tracking_error),
        win_rate: share(&excess, |v| v > 0.0),
    }
}

/// Return of V over dates first−1 ..= last (its returns marked at dates first..=last).
fn span_return(wealth: &[f64], first: usize, last: usize) -> f64 {
    wealth[last] / wealth[first - 1] - 1.0
}

fn years(input: &AnalyticsInput) -> Vec<YearRow> {
    let dates = &input.traded.dates;
    let mut rows = Vec::new();
    let mut first = 1;
    while first < dates.len() {
        let year = dates[first].year();
        let last = (first..dates.len())
            .take_while(|&t| dates[t].year() == year)
            .last()
            .unwrap_or(first);
        let of = |s: &WealthSeries| span_return(&s.wealth, first, last);
        rows.push(YearRow {
            year,
            days: last + 1 - first,
            strategy: of(input.strategy),
            equal_weight: of(input.equal_weight),
            index: input.index.map(of),
            strategy_mdd: max_drawdown(&input.strategy.wealth[first - 1..=last]),
        });
        first = last + 1;
    }
    rows
}

/// Day `t`'s names with a score and a label, by score ascending (ties: later name first, so that the
/// descending order breaks ties by name as TopK-Drop does), with their labels.
fn ranked_labels(market: &Market, t: usize) -> Vec<f64> {
    let mut names: Vec<(usize, f64, f64)> = (0..market.n_tickers())
        .filter_map(|j| Some((j, market.score(t, j)?, market.label(t, j)?)))
        .collect();
    names.sort_by(|a, b| a.1.total_cmp(&b.1).then(b.0.cmp(&a.0)));
    names.into_iter().map(|(_, _, label)| label).collect()
}

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len() as f64
}

fn long_short(market: &Market, k: usize) -> SeriesSummary {
    let daily: Vec<f64> = (0..market.n_trading_days())
        .filter_map(|t| {
            let labels = ranked_labels(market, t);
            (k >= 1 && labels.len() >= 2 * k)
                .then(|| mean(&labels[labels.len() - k..]) - mean(&labels[..k]))
        })
        .collect();
    SeriesSummary::of(&daily, None)
}

/// numpy's `array_split`: `n` items into `parts` consecutive groups whose sizes differ by at most one,
/// the larger ones first. Returns each group's start.
fn split_points(n: usize, parts: usize) -> Vec<usize> {
    let (base, extra) = (n / parts, n % parts);
    (0..=parts).map(|g| g * base + g.min(extra)).collect()
}

fn quantile_returns(market: &Market) -> Vec<SeriesSummary> {
    let mut daily = vec![Vec::new(); QUANTILES];
    for t in 0..market.n_trading_days() {
        let labels = ranked_labels(market, t);
        if labels.len() < QUANTILES {
            continue;
        }
        let cuts = split_points(labels.len(), QUANTILES);
        for (q, series) in daily.iter_mut().enumerate() {
            series.push(mean(&labels[cuts[q]..cuts[q + 1]]));
        }
    }
    daily.iter().map(|d| SeriesSummary::of(d, None)).collect()
}

/// RankIC of day t's scores with Π_{j<h}(1 + label_{t+j}) − 1, over days whose h labels all lie in the
/// split's trading days (t + h ≤ T).
fn ic_at_horizon(market: &Market, h: usize) -> IcAtHorizon {
    let n = market.n_tickers();
    let days = market.n_trading_days();
    let mut ics = Vec::new();
    for t in 0..(days + 1).saturating_sub(h) {
        let mut scores = Vec::with_capacity(n);
        let mut forward = Vec::with_capacity(n);
        for j in 0..n {
            let compounded =
                (0..h).try_fold(1.0, |acc, d| Some(acc * (1.0 + market.label(t + d, j)?)));
            if let (Some(s), Some(c)) = (market.score(t, j), compounded) {
                scores.push(s);
                forward.push(c - 1.0);
            }
        }
        ics.extend(daily_rank_ic(&scores, &forward));
    }
    let lag = newey_west_lag(ics.len()).max(h);
    let test = hac_mean_test(&ics, Some(lag));
    IcAtHorizon {
        horizon: h,
        rank_ic: test.mean,
        t_stat: test.t_stat,
        n_days: ics.len(),
    }
}

/// Markdown for the report and the terminal; `index` is the backtest's index benchmark (the built-in DJI
/// gets a note on dividends).
pub fn markdown(a: &Analytics, index: Option<&IndexSource>) -> String {
    use std::fmt::Write as _;
    let has_index = a.vs_index.is_some();
    let c = |v: f64| {
        if v.is_finite() {
            format!("{v:.4}")
        } else {
            "n/a".to_string()
        }
    };
    let mut md = String::new();
    let _ = writeln!(
        md,
        "Hit rate {} (share of days with a positive return), Sortino {} (risk-free rate {} per year, also in \
         ASR).\n",
        c(a.hit_rate),
        c(a.sortino),
        a.risk_free
    );
    md.push_str(
        "| against | excess return (annual) | tracking error | information ratio | days beaten |\n",
    );
    md.push_str("|---|---|---|---|---|\n");
    let mut rel = |name: &str, r: &Relative| {
        let _ = writeln!(
            md,
            "| {name} | {} | {} | {} | {} |",
            c(r.excess_return),
            c(r.tracking_error),
            c(r.information_ratio),
            c(r.win_rate)
        );
    };
    rel("Equal weight", &a.vs_equal_weight);
    if let Some(r) = &a.vs_index {
        rel("Index", r);
    }
    md.push('\n');
    md.push_str("| year | days | strategy | equal weight |");
    if has_index {
        md.push_str(" index |");
    }
    md.push_str(" strategy MDD |\n|---|---|---|---|");
    if has_index {
        md.push_str("---|");
    }
    md.push_str("---|\n");
    for y in &a.years {
        let index = y.index.map_or(String::new(), |v| format!(" {} |", c(v)));
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} |{index} {} |",
            y.year,
            y.days,
            c(y.strategy),
            c(y.equal_weight),
            c(y.strategy_mdd)
        );
    }
    md.push('\n');
    md.push_str(
        "Scores as traded, gross of costs (annualised mean, volatility, their ratio, Newey–West t of the \
         daily mean):\n\n| portfolio | return | volatility | ratio | t | days |\n|---|---|---|---|---|---|\n",
    );
    let mut row = |name: String, s: &SeriesSummary| {
        let _ = writeln!(
            md,
            "| {name} | {} | {} | {} | {} | {} |",
            c(s.annual_return),
            c(s.annual_volatility),
            c(s.sharpe),
            c(s.t_stat),
            s.n_days
        );
    };
    row(
        format!("long–short, top {0} − bottom {0}", a.long_short_k),
        &a.long_short,
    );
    for (q, s) in a.quantiles.iter().enumerate() {
        row(
            format!("score quintile {} of {}", q + 1, a.quantiles.len()),
            s,
        );
    }
    md.push_str("\n| horizon (days) | RankIC | t | days |\n|---|---|---|---|\n");
    for ic in &a.ic_decay {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} |",
            ic.horizon,
            c(ic.rank_ic),
            c(ic.t_stat),
            ic.n_days
        );
    }
    if matches!(index, Some(IndexSource::BuiltinDji)) {
        md.push_str(
            "\nThe built-in DJI is a price index (dividends not reinvested); the strategy and equal weight \
             earn adjusted-close (total) returns, so the index comparison flatters the strategy by the \
             dividend yield.\n",
        );
    }
    md
}

#[cfg(test)]
mod tests;
