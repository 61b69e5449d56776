//! `storm eval`: a trained run's predictions for every day of a split that has a window (the history may
//! reach back before the split; features are causal), RankIC/IC with their IRs, and codebook health.
//! Writes `predictions_<split>.parquet`, `eval_<split>.json` ([`EvalReport`]) and the usage histogram.

use polars::prelude::*;
use serde::{Deserialize, Serialize};
use tch::Tensor;

use super::dir::{file_name, RunDir};
use super::trained::TrainedRun;
use crate::atomic::Staging;
use crate::config::Split;
use crate::data::windows::{split_window_ends, Labels, WindowTensors};
use crate::error::{Error, Result};
use crate::eval::frame::{predictions_frame, usage_stats};
use crate::eval::predictions::{daily_rank_ics, ic_summary, DayPredictions};
use crate::model::code_usage;
use crate::stats::hac::hac_mean_test;

/// `eval_<split>.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EvalReport {
    pub split: String,
    pub checkpoint: String,
    pub checkpoint_step: u64,
    /// `best`, `last` or `step-N`: how the checkpoint was chosen (absent in reports written before the choice existed).
    #[serde(default)]
    pub checkpoint_choice: Option<String>,
    #[serde(deserialize_with = "super::null_as_nan")]
    pub rank_ic: f64,
    #[serde(deserialize_with = "super::null_as_nan")]
    pub rank_icir: f64,
    #[serde(deserialize_with = "super::null_as_nan")]
    pub ic: f64,
    #[serde(deserialize_with = "super::null_as_nan")]
    pub icir: f64,
    /// Newey–West standard error of the RankIC (the mean of the daily series) and its t-statistic (absent
    /// in reports written before they existed; null when undefined).
    #[serde(default)]
    pub rank_ic_se: Option<f64>,
    #[serde(default)]
    pub rank_ic_t: Option<f64>,
    pub n_days: usize,
    pub n_predictions: usize,
    pub first_date: String,
    pub last_date: String,
    pub codebook_perplexity_ts: Option<f64>,
    pub codebook_perplexity_cs: Option<f64>,
    pub codebook_usage_ts: Option<f64>,
    pub codebook_usage_cs: Option<f64>,
    /// Count of each code over the split (for the usage histogram).
    pub code_counts_ts: Option<Vec<i64>>,
    pub code_counts_cs: Option<Vec<i64>>,
}

impl EvalReport {
    /// Reads the report `storm eval` wrote for `split`.
    pub fn load(run: &RunDir, split: Split) -> Result<Self> {
        super::load_json(&run.eval_json(split))
    }
}

/// Usage counts of the TS and CS codebooks over the windows ending at `ends` (None without the branch).
fn code_counts(
    run: &TrainedRun,
    tensors: &WindowTensors,
    ends: &[usize],
) -> Result<(Option<Tensor>, Option<Tensor>)> {
    let (mut ts_counts, mut cs_counts) = (None::<Tensor>, None::<Tensor>);
    let Some((model, k)) = run.model().and_then(|m| m.codebook_size().map(|k| (m, k))) else {
        return Ok((None, None));
    };
    for chunk in ends.chunks(64) {
        let batch = tensors.batch(chunk)?;
        let emb = tch::no_grad(|| model.embeddings(&batch.x));
        let add = |acc: Option<Tensor>, idx: Option<Tensor>| match (acc, idx) {
            (Some(a), Some(i)) => Some(a + code_usage(&i, k)),
            (None, Some(i)) => Some(code_usage(&i, k)),
            (a, None) => a,
        };
        ts_counts = add(ts_counts, emb.ts_codes);
        cs_counts = add(cs_counts, emb.cs_codes);
    }
    Ok((ts_counts, cs_counts))
}

/// Evaluates the run on `split`, writing `predictions_<split>.parquet`, `eval_<split>.json` and
/// `codebook_usage_<split>.png`.
pub fn evaluate(run: &TrainedRun, split: Split) -> Result<EvalReport> {
    let (cfg, panel) = (&run.config, &run.panel);
    let ends = split_window_ends(panel, &cfg.splits, split, cfg.data.window, Labels::Optional)?;
    let tensors = run.tensors()?;
    let days = run.predict_days(&tensors, &ends)?;
    let summary = ic_summary(&days);
    let hac = hac_mean_test(&daily_rank_ics(&days), None);
    let finite = |v: f64| v.is_finite().then_some(v);
    let (ts_counts, cs_counts) = code_counts(run, &tensors, &ends)?;
    let ts_stats = ts_counts.as_ref().map(usage_stats);
    let cs_stats = cs_counts.as_ref().map(usage_stats);
    let s = &summary;
    crate::telemetry::record_eval(split.name(), s.rank_ic, s.rank_icir, s.ic, s.icir);
    for (branch, stats) in [("ts", &ts_stats), ("cs", &cs_stats)] {
        if let Some((_, _, counts)) = stats {
            crate::telemetry::record_code_counts(branch, counts);
        }
    }
    let date = |d: usize| panel.dates[d].to_string();
    let report = EvalReport {
        split: split.name().to_string(),
        checkpoint: run.checkpoint_label(),
        checkpoint_step: run.checkpoint_step,
        checkpoint_choice: Some(run.choice.to_string()),
        rank_ic: summary.rank_ic,
        rank_icir: summary.rank_icir,
        ic: summary.ic,
        icir: summary.icir,
        rank_ic_se: finite(hac.std_error),
        rank_ic_t: finite(hac.t_stat),
        n_days: summary.n_days,
        n_predictions: days.len(),
        first_date: days.first().map(|d| date(d.day)).unwrap_or_default(),
        last_date: days.last().map(|d| date(d.day)).unwrap_or_default(),
        codebook_perplexity_ts: ts_stats.as_ref().map(|s| s.0),
        codebook_perplexity_cs: cs_stats.as_ref().map(|s| s.0),
        codebook_usage_ts: ts_stats.as_ref().map(|s| s.1),
        codebook_usage_cs: cs_stats.as_ref().map(|s| s.1),
        code_counts_ts: ts_stats.map(|s| s.2),
        code_counts_cs: cs_stats.map(|s| s.2),
    };
    write_outputs(run, split, &days, &report)?;
    draw_usage(&run.dir, split, &report);
    Ok(report)
}

fn draw_usage(dir: &RunDir, split: Split, report: &EvalReport) {
    let mut panels: Vec<(String, &[i64])> = Vec::new();
    if let Some(c) = &report.code_counts_ts {
        panels.push((format!("TS codebook usage ({} split)", split.name()), c));
    }
    if let Some(c) = &report.code_counts_cs {
        panels.push((format!("CS codebook usage ({} split)", split.name()), c));
    }
    if panels.is_empty() {
        return;
    }
    let panels: Vec<(&str, &[i64])> = panels.iter().map(|(t, c)| (t.as_str(), *c)).collect();
    let png = dir.codebook_usage_png(split);
    if let Err(e) = crate::plot::codebook_histogram(&png, &panels) {
        tracing::warn!("{} not written: {e}", png.display());
    }
}

fn write_outputs(
    run: &TrainedRun,
    split: Split,
    days: &[DayPredictions],
    report: &EvalReport,
) -> Result<()> {
    let staging = Staging::new(run.dir.path())?;
    let pred_name = file_name(&run.dir.predictions(split));
    let path = staging.path(&pred_name);
    let file = std::fs::File::create(&path).map_err(|e| Error::io(&path, e))?;
    ParquetWriter::new(file).finish(&mut predictions_frame(&run.panel, days)?)?;
    let eval_name = file_name(&run.dir.eval_json(split));
    let json_path = staging.path(&eval_name);
    std::fs::write(&json_path, serde_json::to_vec_pretty(report)?)
        .map_err(|e| Error::io(&json_path, e))?;
    staging.commit(&[pred_name.as_str(), eval_name.as_str()])
}
