//! Running a trained model over every window of a split: one row of scores per day, with the realised
//! next-day returns beside them (NaN where a stock has no label, e.g. the last day of the data).

use tch::Tensor;

use crate::config::ReferenceFactor;
use crate::data::windows::WindowTensors;
use crate::data::Panel;
use crate::error::Result;
use crate::model::lightgbm::LightGbm;
use crate::model::reference::reference_scores;
use crate::stats::rank_ic::{daily_rank_ic, summarize, IcSummary};

/// Scores of all stocks on one day (the last day of a window).
pub struct DayPredictions {
    pub day: usize,
    pub scores: Vec<f64>,
    /// The model's predictive std of each stock's return, for models that estimate risk.
    pub risks: Option<Vec<f64>>,
    pub labels: Vec<f64>,
}

fn rows(t: &Tensor) -> Result<Vec<f64>> {
    let flat = Vec::<f32>::try_from(
        t.to_kind(tch::Kind::Float)
            .to_device(tch::Device::Cpu)
            .flatten(0, -1),
    )?;
    Ok(flat.into_iter().map(f64::from).collect())
}

/// Predicts every window ending in `ends`, `batch_size` windows at a time, without gradients. `predict`
/// returns the scores (B, N) and optionally their predictive std (B, N).
pub fn predict_days(
    predict: impl Fn(&Tensor) -> (Tensor, Option<Tensor>),
    tensors: &WindowTensors,
    panel: &Panel,
    ends: &[usize],
    batch_size: usize,
) -> Result<Vec<DayPredictions>> {
    let n = panel.n_tickers();
    let mut out = Vec::with_capacity(ends.len());
    for chunk in ends.chunks(batch_size.max(1)) {
        let batch = tensors.batch(chunk)?;
        let (scores, risks) = tch::no_grad(|| predict(&batch.x));
        let flat = rows(&scores)?;
        let risks = risks.as_ref().map(rows).transpose()?;
        for (row, &day) in chunk.iter().enumerate() {
            out.push(DayPredictions {
                day,
                scores: flat[row * n..(row + 1) * n].to_vec(),
                risks: risks.as_ref().map(|r| r[row * n..(row + 1) * n].to_vec()),
                labels: day_labels(panel, day),
            });
        }
    }
    Ok(out)
}

/// A reference factor's scores on each day of `ends` (no model, no windows: prices up to the day).
pub fn reference_days(
    factor: ReferenceFactor,
    panel: &Panel,
    ends: &[usize],
) -> Vec<DayPredictions> {
    ends.iter()
        .map(|&day| DayPredictions {
            day,
            scores: reference_scores(factor, panel, day),
            risks: None,
            labels: day_labels(panel, day),
        })
        .collect()
}

/// A LightGBM booster's scores on each day of `ends`, from each day's own feature rows.
pub fn booster_days(
    booster: &LightGbm,
    panel: &Panel,
    ends: &[usize],
) -> Result<Vec<DayPredictions>> {
    let scores = booster.predict_days(panel, ends)?;
    Ok(ends
        .iter()
        .zip(scores)
        .map(|(&day, scores)| DayPredictions {
            day,
            scores,
            risks: None,
            labels: day_labels(panel, day),
        })
        .collect())
}

fn day_labels(panel: &Panel, day: usize) -> Vec<f64> {
    let n = panel.n_tickers();
    panel.labels[day * n..(day + 1) * n]
        .iter()
        .map(|&v| v as f64)
        .collect()
}

/// Each day's RankIC, in day order (days without a defined correlation left out).
pub fn daily_rank_ics(days: &[DayPredictions]) -> Vec<f64> {
    days.iter()
        .filter_map(|d| daily_rank_ic(&d.scores, &d.labels))
        .collect()
}

/// RankIC/IC summary of a set of predicted days.
pub fn ic_summary(days: &[DayPredictions]) -> IcSummary {
    summarize(days.iter().map(|d| (&d.scores[..], &d.labels[..])))
}
