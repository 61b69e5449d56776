//! `storm eval`: a trained run's predictions for every day of a split that has a window (the history may
//! reach back before the split; features are causal), RankIC/IC with their IRs, and codebook health.

use std::path::Path;

use polars::prelude::*;
use serde::Serialize;
use tch::nn::VarStore;
use tch::{Device, Tensor};

use crate::atomic::Staging;
use crate::config::Split;
use crate::data::windows::{split_window_ends, Labels, WindowTensors};
use crate::data::Panel;
use crate::error::{Error, Result};
use crate::eval::predictions::{ic_summary, predict_days, DayPredictions};
use crate::model::{build_model, code_usage};
use crate::train::checkpoint::load_checkpoint;
use crate::train::run_dir::load_run;
use crate::train::trainer::evaluation_checkpoint;

#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    pub split: String,
    pub checkpoint: String,
    pub checkpoint_step: u64,
    pub rank_ic: f64,
    pub rank_icir: f64,
    pub ic: f64,
    pub icir: f64,
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

/// Column of the predictions file with the model's predictive std of each return (probabilistic models).
pub const RISK_COLUMN: &str = "risk";

pub fn predictions_file(split: Split) -> String {
    format!("predictions_{}.parquet", split.name())
}
pub fn eval_file(split: Split) -> String {
    format!("eval_{}.json", split.name())
}

fn usage_stats(counts: &Tensor) -> (f64, f64, Vec<i64>) {
    let c: Vec<i64> = Vec::<i64>::try_from(counts.to_device(Device::Cpu)).unwrap_or_default();
    let total: i64 = c.iter().sum();
    let used = c.iter().filter(|&&k| k > 0).count() as f64 / c.len().max(1) as f64;
    let entropy: f64 = c
        .iter()
        .filter(|&&k| k > 0)
        .map(|&k| {
            let p = k as f64 / total as f64;
            -p * p.ln()
        })
        .sum();
    (entropy.exp(), used, c)
}

/// Evaluates `run_dir` on `split`, writing `predictions_<split>.parquet` and `eval_<split>.json`.
pub fn evaluate_run(run_dir: &Path, split: Split, device: Device) -> Result<EvalReport> {
    let (cfg, info) = load_run(run_dir)?;
    let panel = Panel::load(&info.data_dir)?;
    let ckpt = evaluation_checkpoint(run_dir, cfg.train.keep_checkpoints).ok_or_else(|| {
        Error::Data(format!(
            "{} has no checkpoint to evaluate",
            run_dir.display()
        ))
    })?;
    let mut vs = VarStore::new(device);
    let model = build_model(
        &vs.root(),
        &cfg,
        panel.n_tickers() as i64,
        panel.n_features() as i64,
        cfg.data.window as i64,
    )?;
    let state = load_checkpoint(&ckpt, &mut vs, None)?;
    let ends = split_window_ends(
        &panel,
        &cfg.splits,
        split,
        cfg.data.window,
        Labels::Optional,
    )?;
    let tensors = WindowTensors::new(&panel, cfg.data.window, device)?;
    let days = predict_days(|x| model.predict_with_risk(x), &tensors, &panel, &ends, 64)?;
    let summary = ic_summary(&days);

    let (mut ts_counts, mut cs_counts) = (None::<Tensor>, None::<Tensor>);
    for chunk in ends.chunks(64) {
        let Some(k) = model.codebook_size() else {
            break;
        };
        let batch = tensors.batch(chunk)?;
        let emb = tch::no_grad(|| model.embeddings(&batch.x));
        let (ts, cs) = (emb.ts_codes, emb.cs_codes);
        let add = |acc: Option<Tensor>, idx: Option<Tensor>| match (acc, idx) {
            (Some(a), Some(i)) => Some(a + code_usage(&i, k)),
            (None, Some(i)) => Some(code_usage(&i, k)),
            (a, None) => a,
        };
        ts_counts = add(ts_counts, ts);
        cs_counts = add(cs_counts, cs);
    }
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
        checkpoint: ckpt.display().to_string(),
        checkpoint_step: state.step,
        rank_ic: summary.rank_ic,
        rank_icir: summary.rank_icir,
        ic: summary.ic,
        icir: summary.icir,
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
    write_outputs(run_dir, split, &panel, &days, &report)?;
    let mut panels: Vec<(String, &[i64])> = Vec::new();
    if let Some(c) = &report.code_counts_ts {
        panels.push((format!("TS codebook usage ({} split)", split.name()), c));
    }
    if let Some(c) = &report.code_counts_cs {
        panels.push((format!("CS codebook usage ({} split)", split.name()), c));
    }
    let panels: Vec<(&str, &[i64])> = panels.iter().map(|(t, c)| (t.as_str(), *c)).collect();
    let png = run_dir.join(format!("codebook_usage_{}.png", split.name()));
    if let Err(e) = crate::plot::codebook_histogram(&png, &panels) {
        tracing::warn!("{} not written: {e}", png.display());
    }
    Ok(report)
}

fn predictions_frame(panel: &Panel, days: &[DayPredictions]) -> Result<DataFrame> {
    let n = panel.n_tickers();
    let rows = days.len() * n;
    let (mut dates, mut tickers, mut scores, mut risks, mut labels) = (
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
    Ok(DataFrame::new_infer_height(columns)?)
}

fn write_outputs(
    run_dir: &Path,
    split: Split,
    panel: &Panel,
    days: &[DayPredictions],
    report: &EvalReport,
) -> Result<()> {
    let staging = Staging::new(run_dir)?;
    let pred_name = predictions_file(split);
    let path = staging.path(&pred_name);
    let file = std::fs::File::create(&path).map_err(|e| Error::io(&path, e))?;
    ParquetWriter::new(file).finish(&mut predictions_frame(panel, days)?)?;
    let eval_name = eval_file(split);
    let json_path = staging.path(&eval_name);
    std::fs::write(&json_path, serde_json::to_vec_pretty(report)?)
        .map_err(|e| Error::io(&json_path, e))?;
    staging.commit(&[pred_name.as_str(), eval_name.as_str()])
}
