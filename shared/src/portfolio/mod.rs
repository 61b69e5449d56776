//! Portfolio-management downstream task: turn a run's daily stock scores into a trading strategy and judge
//! it with financial metrics against simple benchmarks.
//!
//! - [`market`]: the predictions of a split as a dense (day × ticker) grid of scores and next-day returns.
//! - [`topk_drop`]: the TopK-Drop strategy (Qlib `TopkDropoutStrategy` semantics) with transaction costs.
//! - [`benchmarks`]: equal-weight buy-and-hold of the universe and an index (the embedded DJI or a file).
//! - [`analytics`]: excess return, tracking error, information ratio, Sortino, per-year returns, long–short,
//!   quintile returns and IC decay (what a Qlib-grade report adds to the six metrics).
//! - [`report`]: `storm backtest` — all three on one split, metrics, JSON/CSV/PNG outputs.
//!
//! Timing convention shared by all of them: the split's dates are D_0..D_T; a trade is made at the close of
//! D_t (t < T) and earns the stock's label of D_t (its return from the close of D_t to the close of
//! D_{t+1}); wealth V_t is marked at the close of D_t before that day's trade, so V_0 is the starting cash
//! and the costs of day t show in V_{t+1}. The last date is a valuation date only: its labels (null for the
//! last day of the data) are never used, so the backtest never earns a return beyond the split.

pub mod analytics;
pub mod benchmarks;
pub mod costs;
pub mod market;
pub mod report;
pub mod topk_drop;

#[cfg(test)]
mod tests;

use crate::error::Result;
use crate::stats::financial::FinancialMetrics;

pub use market::Market;

/// A strategy's wealth on every date (V_0..V_T) and its trading on every trading day (T values).
#[derive(Debug, Clone, PartialEq)]
pub struct WealthSeries {
    pub wealth: Vec<f64>,
    pub traded_value: Vec<f64>,
    pub cost: Vec<f64>,
}

impl WealthSeries {
    /// A series that never trades (an index).
    pub fn untraded(wealth: Vec<f64>) -> Self {
        let days = wealth.len().saturating_sub(1);
        WealthSeries {
            wealth,
            traded_value: vec![0.0; days],
            cost: vec![0.0; days],
        }
    }

    pub fn metrics(&self, risk_free: f64) -> Result<FinancialMetrics> {
        FinancialMetrics::compute(&self.wealth, &self.traded_value, &self.cost, risk_free)
    }

    /// Daily returns V_t / V_{t−1} − 1, t = 1..T.
    pub fn returns(&self) -> Vec<f64> {
        crate::stats::financial::daily_returns(&self.wealth)
    }
}
