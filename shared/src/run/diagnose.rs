//! `storm diagnose`: what a trained model has learned, in one place. For each split: the daily RankIC's mean
//! with a Newey–West (HAC) t-statistic; the day-to-day rank autocorrelation of the predictions (near 1: the
//! model keeps one fixed ranking); and the correlation of the predictions with each stock's mean return over
//! the training days (memorisation of which stocks won in sample). Beside them: the validation curve per
//! evaluation (`valid.csv`) and the last gradient balance of the loss terms (`grad_norms.csv`). Writes
//! `diagnose.json` ([`DiagnoseReport`]) and `diagnose.md`.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::csv_log::CsvLog;
use super::prior_agreement::{prior_agreement, PriorAgreement};
use super::trained::TrainedRun;
use crate::config::Split;
use crate::data::windows::{split_window_ends, Labels};
use crate::data::Panel;
use crate::error::Result;
use crate::eval::predictions::{daily_rank_ics, DayPredictions};
use crate::stats::hac::{hac_mean_test, MeanTest};
use crate::stats::rank_ic::daily_rank_ic;
use crate::train::grad_probe::{shares, term_columns};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SplitDiagnosis {
    pub split: String,
    /// Daily RankIC: mean, HAC standard error, t-statistic, days, lag.
    pub rank_ic: MeanTest,
    /// Mean Spearman correlation of consecutive days' predictions.
    pub rank_autocorrelation: f64,
    /// Mean over days of the Spearman correlation of the predictions with each stock's mean training return.
    pub memorisation: f64,
    /// Prior vs posterior of the factor head (models with one; labelled days only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prior_agreement: Option<PriorAgreement>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DiagnoseReport {
    pub checkpoint: String,
    pub checkpoint_step: u64,
    pub checkpoint_choice: String,
    pub splits: Vec<SplitDiagnosis>,
    /// (step, validation RankIC) of every validation in `valid.csv`.
    pub validation_curve: Vec<(u64, f64)>,
    /// Each weighted term's gradient norm on the shared encoder at the last probed step.
    pub grad_norms: Vec<(String, f64)>,
}

/// Mean Spearman correlation of each day's scores with the previous day's (days in order).
pub fn rank_autocorrelation(days: &[DayPredictions]) -> f64 {
    mean_finite(
        days.windows(2)
            .filter_map(|w| daily_rank_ic(&w[0].scores, &w[1].scores)),
    )
}

/// Mean over days of the Spearman correlation between the scores and `reference` (one value per stock).
pub fn correlation_with(days: &[DayPredictions], reference: &[f64]) -> f64 {
    mean_finite(
        days.iter()
            .filter_map(|d| daily_rank_ic(&d.scores, reference)),
    )
}

/// Each stock's mean next-day return over `days` (NaN for a stock with no label there).
pub fn mean_returns(panel: &Panel, days: &[usize]) -> Vec<f64> {
    let n = panel.n_tickers();
    (0..n)
        .map(|s| {
            mean_finite(
                days.iter()
                    .map(|&d| panel.labels[d * n + s] as f64)
                    .filter(|v| v.is_finite()),
            )
        })
        .collect()
}

fn mean_finite(values: impl Iterator<Item = f64>) -> f64 {
    let (sum, n) = values
        .filter(|v| v.is_finite())
        .fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    if n == 0 {
        f64::NAN
    } else {
        sum / n as f64
    }
}

/// The diagnosis of one split's predicted days, given each stock's mean training return.
pub fn diagnose_days(split: Split, days: &[DayPredictions], train_means: &[f64]) -> SplitDiagnosis {
    let ics = daily_rank_ics(days);
    SplitDiagnosis {
        split: split.name().to_string(),
        rank_ic: hac_mean_test(&ics, None),
        rank_autocorrelation: rank_autocorrelation(days),
        memorisation: correlation_with(days, train_means),
        prior_agreement: None,
    }
}

/// Predicts every split with the run's model and writes `diagnose.json` and `diagnose.md`.
pub fn diagnose(run: &TrainedRun) -> Result<DiagnoseReport> {
    let (cfg, panel) = (&run.config, &run.panel);
    let tensors = run.tensors()?;
    let ends =
        |split| split_window_ends(panel, &cfg.splits, split, cfg.data.window, Labels::Optional);
    let train_means = mean_returns(panel, &ends(Split::Train)?);
    let mut splits = Vec::new();
    for split in Split::ALL {
        let days = run.predict_days(&tensors, &ends(split)?)?;
        let mut diagnosis = diagnose_days(split, &days, &train_means);
        if let Some(model) = run.model() {
            let labelled =
                split_window_ends(panel, &cfg.splits, split, cfg.data.window, Labels::Required)?;
            diagnosis.prior_agreement = prior_agreement(model, &tensors, &labelled)?;
        }
        splits.push(diagnosis);
    }
    let validation_curve = CsvLog::read(&run.dir.valid_csv())?
        .and_then(|log| {
            let (steps, ics) = (log.column("step")?, log.column("rank_ic")?);
            Some(
                steps
                    .into_iter()
                    .zip(ics)
                    .map(|(s, ic)| (s as u64, ic))
                    .collect(),
            )
        })
        .unwrap_or_default();
    let grad_norms = CsvLog::read(&run.dir.grad_norms_csv())?
        .and_then(|log| {
            let last = log.rows.last()?;
            Some(
                term_columns(&log.columns)
                    .into_iter()
                    .map(|(i, term)| (term.to_string(), last[i]))
                    .collect(),
            )
        })
        .unwrap_or_default();
    let report = DiagnoseReport {
        checkpoint: run.checkpoint_label(),
        checkpoint_step: run.checkpoint_step,
        checkpoint_choice: run.choice.to_string(),
        splits,
        validation_curve,
        grad_norms,
    };
    crate::atomic::write_file(
        &run.dir.diagnose_json(),
        &serde_json::to_vec_pretty(&report)?,
    )?;
    crate::atomic::write_file(&run.dir.diagnose_md(), markdown(&report).as_bytes())?;
    Ok(report)
}

fn num(v: f64, digits: usize) -> String {
    if v.is_finite() {
        format!("{v:.digits$}")
    } else {
        "n/a".into()
    }
}

/// `diagnose.md`.
pub fn markdown(r: &DiagnoseReport) -> String {
    let mut md = format!(
        "# Diagnosis\n\nCheckpoint `{}` (step {}, chosen as `{}`).\n\n",
        r.checkpoint, r.checkpoint_step, r.checkpoint_choice
    );
    md.push_str(
        "| split | days | RankIC | HAC s.e. | t (HAC) | lag | rank autocorrelation | memorisation |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    for s in &r.splits {
        let t = &s.rank_ic;
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            s.split,
            t.n,
            num(t.mean, 4),
            num(t.std_error, 4),
            num(t.t_stat, 2),
            t.lag,
            num(s.rank_autocorrelation, 3),
            num(s.memorisation, 3)
        );
    }
    md.push_str(
        "\nRankIC: mean of the daily Spearman correlation of scores and next-day returns; its t-statistic uses \
         Newey–West standard errors (|t| > 2 ≈ 5 % two-sided). Rank autocorrelation: mean Spearman correlation \
         of consecutive days' scores (near 1: one fixed ranking). Memorisation: mean Spearman correlation of \
         the scores with each stock's mean return over the training days.\n",
    );
    let agreements: Vec<(&str, &PriorAgreement)> = r
        .splits
        .iter()
        .filter_map(|s| Some((s.split.as_str(), s.prior_agreement.as_ref()?)))
        .collect();
    if !agreements.is_empty() {
        md.push_str(
            "\n## Prior vs posterior of the factor head\n\n\
             | split | corr(μ_prior, μ_post) mean over factors | per factor | KL per factor (mean) | \
             var share α | var share β·μ_prior |\n|---|---|---|---|---|---|\n",
        );
        for (split, a) in agreements {
            let list =
                |v: &[f64], d: usize| v.iter().map(|x| num(*x, d)).collect::<Vec<_>>().join(", ");
            let finite: Vec<f64> = a
                .factor_mean_correlation
                .iter()
                .copied()
                .filter(|v| v.is_finite())
                .collect();
            let _ = writeln!(
                md,
                "| {split} | {} | {} | {} | {} | {} |",
                num(finite.iter().sum::<f64>() / finite.len() as f64, 3),
                list(&a.factor_mean_correlation, 2),
                num(
                    a.kl_per_factor.iter().sum::<f64>() / a.kl_per_factor.len() as f64,
                    3
                ),
                num(a.alpha_variance_share, 3),
                num(a.beta_variance_share, 3)
            );
        }
        md.push_str(
            "\nThe prior sees only the features; the posterior also sees the day's returns. Correlations near 0 \
             and a β·μ_prior share near 0 mean that the prediction comes from α alone: the factors carry no \
             forecast.\n",
        );
    }
    if !r.validation_curve.is_empty() {
        md.push_str("\n## Validation curve (`valid.csv`)\n\n| step | RankIC |\n|---|---|\n");
        for (step, ic) in &r.validation_curve {
            let _ = writeln!(md, "| {step} | {} |", num(*ic, 4));
        }
    }
    if !r.grad_norms.is_empty() {
        md.push_str(
            "\n## Gradient balance at the last probed step (`grad_norms.csv`)\n\n\
             | term | ‖∇ weight·term‖ on the shared encoder | share |\n|---|---|---|\n",
        );
        let norms: Vec<f64> = r.grad_norms.iter().map(|(_, v)| *v).collect();
        for ((term, v), share) in r.grad_norms.iter().zip(shares(&norms)) {
            let share = share.map_or("n/a".into(), |s| num(100.0 * s, 1) + " %");
            let _ = writeln!(md, "| {term} | {v:.3e} | {share} |");
        }
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(day: usize, scores: &[f64], labels: &[f64]) -> DayPredictions {
        DayPredictions {
            day,
            scores: scores.to_vec(),
            risks: None,
            labels: labels.to_vec(),
        }
    }

    #[test]
    fn a_planted_memoriser_is_caught_and_a_fresh_ranking_is_not() {
        let train_means = [0.03, -0.01, 0.02, 0.0];
        // the memoriser scores every day by the training means (plus a tiny drift that keeps the order)
        let memoriser: Vec<_> = (0..6)
            .map(|t| {
                let s: Vec<f64> = train_means.iter().map(|m| m + 1e-6 * t as f64).collect();
                day(t, &s, &[0.01, 0.0, -0.01, 0.02])
            })
            .collect();
        let d = diagnose_days(Split::Test, &memoriser, &train_means);
        assert!((d.memorisation - 1.0).abs() < 1e-12);
        assert!((d.rank_autocorrelation - 1.0).abs() < 1e-12);
        // its daily RankIC is Spearman((3,1,2,... ranks), labels) every day: constant, so no HAC t
        assert_eq!(d.rank_ic.n, 6);
        assert!(d.rank_ic.t_stat.is_nan());

        // a model that reverses its ranking every day: autocorrelation −1, no net memorisation
        let flip: Vec<_> = (0..4)
            .map(|t| {
                let s = if t % 2 == 0 {
                    [1.0, 2.0, 3.0, 4.0]
                } else {
                    [4.0, 3.0, 2.0, 1.0]
                };
                day(t, &s, &[f64::NAN, 0.0, 1.0, 2.0])
            })
            .collect();
        let d = diagnose_days(Split::Valid, &flip, &train_means);
        assert!((d.rank_autocorrelation + 1.0).abs() < 1e-12);
        assert!(d.memorisation.abs() < 1e-12);
        // labels with a NaN: the daily RankIC uses the three labelled stocks (±1 on alternate days)
        assert!(d.rank_ic.mean.abs() < 1e-12);
        let md = markdown(&DiagnoseReport {
            checkpoint: "c".into(),
            checkpoint_step: 3,
            checkpoint_choice: "last".into(),
            splits: vec![d],
            validation_curve: vec![(10, 0.02)],
            grad_norms: vec![("nll".into(), 3.0), ("recon_ts".into(), 1.0)],
        });
        assert!(md.contains("| valid | 4 | 0.0000 |"), "{md}");
        assert!(md.contains("| 10 | 0.0200 |"), "{md}");
        assert!(md.contains("| nll | 3.000e0 | 75.0 % |"), "{md}");
    }

    #[test]
    fn mean_returns_skip_missing_labels() {
        let panel = Panel {
            dates: vec![chrono::NaiveDate::default(); 3],
            tickers: vec!["A".into(), "B".into()],
            feature_names: vec!["f".into()],
            features: vec![0.0; 6],
            present: vec![true; 6],
            labels: vec![0.1, f32::NAN, 0.3, f32::NAN, f32::NAN, f32::NAN],
            prices: vec![1.0; 6],
        };
        let m = mean_returns(&panel, &[0, 1, 2]);
        assert!((m[0] - 0.2).abs() < 1e-6);
        assert!(m[1].is_nan());
    }
}
