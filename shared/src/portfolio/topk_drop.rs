//! The TopK-Drop strategy (Qlib `TopkDropoutStrategy` semantics) simulated on a [`Market`] with
//! proportional transaction costs.
//!
//! Each trading day t (at the close of D_t):
//! 1. Rank the stocks that have a score that day: score descending, ties by ticker name.
//! 2. Sell candidates are the held names outside today's top k (held names without a score first, then the
//!    worst-ranked); at most `drop` of them are sold, the worst first.
//! 3. Buy the best-ranked names that were not held this morning and have a label today (a stock without a
//!    label cannot be bought), as many as refill the book to k names. All cash (sale proceeds after their
//!    costs, plus any cash left idle) is split equally among the buys, with each buy's cost paid out of it:
//!    each buy is cash / (n_buys · (1 + rate)).
//! 4. Held positions are never rebalanced; each earns its label of D_t (0 when the label is null).
//!
//! Costs are `rate × traded value` on both buys and sells, taken from cash. Day 0 is the same rule with an
//! empty book, so it buys the top k with equal weights of the starting cash.

use std::collections::BTreeMap;

use chrono::NaiveDate;

use super::{Market, WealthSeries};
use crate::error::{Error, Result};

/// Strategy parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TopkDropParams {
    /// Names held at most.
    pub k: usize,
    /// Names sold per day at most (0 ≤ drop ≤ k).
    pub drop: usize,
    /// Cost per unit of traded value (e.g. 1e-4 = 1 bp), on buys and sells.
    pub cost_rate: f64,
    /// Starting cash V_0.
    pub cash: f64,
}

impl TopkDropParams {
    pub fn validate(&self) -> Result<()> {
        if self.k < 1 {
            return Err(Error::Backtest(format!(
                "k must be at least 1 (got {})",
                self.k
            )));
        }
        if self.drop > self.k {
            return Err(Error::Backtest(format!(
                "drop must be between 0 and k = {} (got {})",
                self.k, self.drop
            )));
        }
        validate_cost_and_cash(self.cost_rate, self.cash)
    }
}

/// Shared by every strategy: a finite non-negative cost rate and finite positive starting cash.
pub fn validate_cost_and_cash(cost_rate: f64, cash: f64) -> Result<()> {
    if !(cost_rate.is_finite() && cost_rate >= 0.0) {
        return Err(Error::Backtest(format!(
            "cost must be a finite rate ≥ 0 (got {cost_rate})"
        )));
    }
    if !(cash.is_finite() && cash > 0.0) {
        return Err(Error::Backtest(format!(
            "cash must be finite and > 0 (got {cash})"
        )));
    }
    Ok(())
}

/// What happened on one trading day D_t.
#[derive(Debug, Clone, PartialEq)]
pub struct DayRecord {
    pub date: NaiveDate,
    /// Names sold at the close, worst-ranked first.
    pub sells: Vec<String>,
    /// Names bought at the close, best-ranked first.
    pub buys: Vec<String>,
    /// Names held after the trade (carried to the next close), by name.
    pub holdings: Vec<String>,
    /// Buys + sells at the close of D_t.
    pub traded_value: f64,
    pub cost: f64,
    /// V_t: wealth at the close before trading.
    pub wealth_before: f64,
    /// V_{t+1}: wealth at the next close, after this day's costs and returns.
    pub wealth_after: f64,
}

/// The strategy's wealth series and daily trading log.
#[derive(Debug, Clone, PartialEq)]
pub struct TopkDropRun {
    pub series: WealthSeries,
    pub days: Vec<DayRecord>,
    /// Names held after the last trade (through the final valuation date), by name.
    pub final_holdings: Vec<String>,
}

/// The book: cash plus the current value of each held position, keyed by ticker index.
struct Book {
    cash: f64,
    positions: BTreeMap<usize, f64>,
}

impl Book {
    fn wealth(&self) -> f64 {
        self.cash + self.positions.values().sum::<f64>()
    }

    /// Each position earns its label of `day`; a position without a label keeps its value.
    fn earn(&mut self, market: &Market, day: usize) {
        for (&j, value) in self.positions.iter_mut() {
            if let Some(r) = market.label(day, j) {
                *value *= 1.0 + r;
            }
        }
    }
}

/// Tickers with a score on `day`, best first (score descending, ties by name).
pub fn rank_day(market: &Market, day: usize) -> Vec<usize> {
    let mut ranked: Vec<(usize, f64)> = (0..market.n_tickers())
        .filter_map(|j| market.score(day, j).map(|s| (j, s)))
        .collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    ranked.into_iter().map(|(j, _)| j).collect()
}

/// Held names outside the top k, worst first: unscored names (by name), then by rank descending.
fn sell_candidates(book: &Book, ranked: &[usize], k: usize) -> Vec<usize> {
    let position = |j: usize| ranked.iter().position(|&r| r == j);
    let mut out: Vec<(usize, Option<usize>)> = book
        .positions
        .keys()
        .map(|&j| (j, position(j)))
        .filter(|(_, rank)| rank.is_none_or(|r| r >= k))
        .collect();
    // Unscored names first (in name order), then ranked names from the bottom of the ranking up.
    out.sort_by(|a, b| match (a.1, b.1) {
        (None, None) => a.0.cmp(&b.0),
        (None, Some(_)) => std::cmp::Ordering::Less,
        (Some(_), None) => std::cmp::Ordering::Greater,
        (Some(x), Some(y)) => y.cmp(&x),
    });
    out.into_iter().map(|(j, _)| j).collect()
}

/// One day's trade at the close: sells then buys; returns (sells, buys, traded value, cost).
fn trade_day(
    book: &mut Book,
    market: &Market,
    day: usize,
    p: &TopkDropParams,
) -> (Vec<usize>, Vec<usize>, f64, f64) {
    let ranked = rank_day(market, day);
    let held_this_morning: Vec<usize> = book.positions.keys().copied().collect();
    let sells: Vec<usize> = sell_candidates(book, &ranked, p.k)
        .into_iter()
        .take(p.drop)
        .collect();
    let (mut traded, mut cost) = (0.0, 0.0);
    for j in &sells {
        let value = book.positions.remove(j).unwrap_or(0.0);
        traded += value;
        cost += p.cost_rate * value;
        book.cash += value * (1.0 - p.cost_rate);
    }
    let slots = if book.cash > 0.0 {
        p.k.saturating_sub(book.positions.len())
    } else {
        0
    };
    let buys: Vec<usize> = ranked
        .iter()
        .copied()
        .filter(|j| !held_this_morning.contains(j) && market.label(day, *j).is_some())
        .take(slots)
        .collect();
    if !buys.is_empty() {
        let each = book.cash / (buys.len() as f64 * (1.0 + p.cost_rate));
        for &j in &buys {
            book.positions.insert(j, each);
            traded += each;
            cost += p.cost_rate * each;
        }
        book.cash = 0.0;
    }
    (sells, buys, traded, cost)
}

fn names(market: &Market, idx: impl IntoIterator<Item = usize>) -> Vec<String> {
    idx.into_iter().map(|j| market.tickers[j].clone()).collect()
}

/// Runs TopK-Drop over every trading day of `market`.
pub fn run_topk_drop(market: &Market, p: &TopkDropParams) -> Result<TopkDropRun> {
    p.validate()?;
    let mut book = Book {
        cash: p.cash,
        positions: BTreeMap::new(),
    };
    let mut wealth = vec![p.cash];
    let mut days = Vec::with_capacity(market.n_trading_days());
    for day in 0..market.n_trading_days() {
        let wealth_before = book.wealth();
        let (sells, buys, traded_value, cost) = trade_day(&mut book, market, day, p);
        book.earn(market, day);
        let wealth_after = book.wealth();
        wealth.push(wealth_after);
        days.push(DayRecord {
            date: market.dates[day],
            sells: names(market, sells),
            buys: names(market, buys),
            holdings: names(market, book.positions.keys().copied()),
            traded_value,
            cost,
            wealth_before,
            wealth_after,
        });
    }
    let series = WealthSeries {
        wealth,
        traded_value: days.iter().map(|d| d.traded_value).collect(),
        cost: days.iter().map(|d| d.cost).collect(),
    };
    Ok(TopkDropRun {
        series,
        final_holdings: names(market, book.positions.keys().copied()),
        days,
    })
}
