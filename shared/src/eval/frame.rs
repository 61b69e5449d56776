//! The predictions table of a split (`date`, `ticker`, `score`, optional `risk`, `label`) as the portfolio
//! backtest reads it, and codebook health from code counts.

use polars::prelude::*;
use tch::{Device, Tensor};

use crate::data::Panel;
use crate::error::Result;
use crate::eval::predictions::DayPredictions;

/// Column of the predictions file with the model's predictive std of each return (probabilistic models).
pub const RISK_COLUMN: &str = "risk";

/// Column of the predictions file with the date at whose close each row's `label` return ends (the next
/// date of the data's calendar), so a backtest can tell a skipped day from consecutive ones.
pub const LABEL_END_COLUMN: &str = "label_end";

/// (perplexity, fraction of codes used, the counts) of one codebook's usage counts.
pub fn usage_stats(counts: &Tensor) -> (f64, f64, Vec<i64>) {
    let c: Vec<i64> = Vec::<i64>::try_from(counts.to_device(Device::Cpu)).unwrap_or_default();
    let used = c.iter().filter(|&&k| k > 0).count() as f64 / c.len().max(1) as f64;
    let entropy = crate::stats::codes::count_entropy(&c);
    (entropy.exp(), used, c)
}

/// One row per (day, stock) of `days`.
pub fn predictions_frame(panel: &Panel, days: &[DayPredictions]) -> Result<DataFrame> {
    let n = panel.n_tickers();
    let rows = days.len() * n;
    let (mut dates, mut tickers, mut scores, mut risks, mut labels, mut ends) = (
        Vec::with_capacity(rows),
        Vec::with_capacity(rows),
        Vec::with_capacity(rows),
        Vec::with_capacity(rows),
        Vec::with_capacity(rows),
        Vec::with_capacity(rows),
    );
    for d in days {
        for j in 0..n {
            dates.push(panel.dates[d.day]);
            tickers.push(panel.tickers[j].as_str());
            scores.push(d.scores[j]);
            if let Some(r) = &d.risks {
                risks.push(r[j]);
            }
            labels.push(d.labels[j].is_finite().then_some(d.labels[j]));
            ends.push(panel.dates.get(d.day + 1).copied());
        }
    }
    let mut columns = vec![
        Column::new("date".into(), dates),
        Column::new("ticker".into(), tickers),
        Column::new("score".into(), scores),
    ];
    // `risk` (the predictive std) only for models that estimate it, and only when every day has it.
    if risks.len() == rows {
        columns.push(Column::new(RISK_COLUMN.into(), risks));
    }
    columns.push(Column::new("label".into(), labels));
    columns.push(Column::new(LABEL_END_COLUMN.into(), ends));
    Ok(DataFrame::new_infer_height(columns)?)
}
