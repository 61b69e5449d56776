//! The LightGBM baseline (`model.kind = "lightgbm"`, issue 14): Qlib's benchmark recipe of one row per
//! (day, stock) holding that day's features, the next-day return ranked within its day (Qlib's
//! `CSRankNorm`) as the label, and gradient-boosted regression trees fitted with mse and early stopping on
//! the valid split. The predictor is a LightGBM booster, not a torch module: it scores a day from that
//! day's feature rows only, so it sees exactly what the last day of a model's window holds.

use lightgbm3::{Booster, Dataset};
use serde_json::{json, Value};

use crate::config::LightGbmConfig;
use crate::data::Panel;
use crate::error::{Error, Result};
use crate::stats::rank_ic::average_ranks;

/// Qlib's `CSRankNorm` scale: a uniform rank in [−0.5, 0.5] times 3.46 has a standard deviation near 1.
const RANK_NORM_SCALE: f64 = 3.46;

fn lgbm(e: lightgbm3::Error) -> Error {
    Error::Model(e.to_string())
}

/// Qlib's `CSRankNorm` of one day's values: (average rank / n − 0.5) · 3.46 over the finite values, the
/// percentile rank of pandas' `rank(pct=True)`; a NaN stays NaN and is not counted in n.
pub fn cs_rank_norm(values: &[f64]) -> Vec<f64> {
    let finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    let n = finite.len() as f64;
    // the finite values' ranks, in the order they appear
    let mut ranks = average_ranks(&finite).into_iter();
    values
        .iter()
        .map(|v| match v.is_finite() {
            true => ranks
                .next()
                .map_or(f64::NAN, |rank| (rank / n - 0.5) * RANK_NORM_SCALE),
            false => f64::NAN,
        })
        .collect()
}

/// Rows of features (row-major, `n_features` per row) with one label each.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureRows {
    pub x: Vec<f32>,
    pub y: Vec<f32>,
    pub n_features: usize,
}

impl FeatureRows {
    pub fn len(&self) -> usize {
        self.y.len()
    }
    pub fn is_empty(&self) -> bool {
        self.y.is_empty()
    }
}

/// Every stock's feature row on `day`, (N × D) row-major: the day's causally scaled features.
pub fn day_features(panel: &Panel, day: usize) -> &[f32] {
    let width = panel.n_tickers() * panel.n_features();
    &panel.features[day * width..(day + 1) * width]
}

/// The training rows of `days`: one per stock present with a next-day return, its label that return's
/// `cs_rank_norm` among the day's stocks. Day t's row holds day t's features and the t → t+1 return.
pub fn labelled_rows(panel: &Panel, days: &[usize]) -> FeatureRows {
    let (n, d) = (panel.n_tickers(), panel.n_features());
    let mut rows = FeatureRows {
        x: Vec::new(),
        y: Vec::new(),
        n_features: d,
    };
    for &day in days {
        let returns: Vec<f64> = (0..n)
            .map(|j| match panel.present[day * n + j] {
                true => f64::from(panel.labels[day * n + j]),
                false => f64::NAN,
            })
            .collect();
        let features = day_features(panel, day);
        for (j, label) in cs_rank_norm(&returns).into_iter().enumerate() {
            if label.is_finite() {
                rows.x.extend_from_slice(&features[j * d..(j + 1) * d]);
                rows.y.push(label as f32);
            }
        }
    }
    rows
}

/// LightGBM's parameters for `cfg`: mse regression with the l2 metric (what early stopping watches),
/// seeded from the run seed, `deterministic` with row-wise histograms so a seed gives the same trees.
pub fn booster_params(cfg: &LightGbmConfig, seed: u64) -> Value {
    let mut params = json!({
        "objective": "regression",
        "metric": "l2",
        "learning_rate": cfg.learning_rate,
        "num_leaves": cfg.num_leaves,
        "max_depth": cfg.max_depth,
        "lambda_l1": cfg.lambda_l1,
        "lambda_l2": cfg.lambda_l2,
        "feature_fraction": cfg.colsample_bytree,
        "bagging_fraction": cfg.subsample,
        "bagging_freq": cfg.bagging_freq,
        "num_iterations": cfg.num_boost_round,
        "num_threads": cfg.threads,
        "seed": seed % i32::MAX as u64,
        "deterministic": true,
        "force_row_wise": true,
        "verbosity": -1,
    });
    if cfg.early_stopping_rounds > 0 {
        params["early_stopping_rounds"] = json!(cfg.early_stopping_rounds);
    }
    params
}

/// A trained booster.
pub struct LightGbm {
    booster: Booster,
}

impl LightGbm {
    /// Fits `train` with `params` (see [`booster_params`]), stopping early on `valid`'s l2 when the
    /// parameters ask for it; the booster keeps the best round.
    pub fn train(params: &Value, train: &FeatureRows, valid: &FeatureRows) -> Result<Self> {
        if train.is_empty() || valid.is_empty() {
            return Err(Error::Data(format!(
                "LightGBM needs labelled rows in both splits; train has {}, valid {}",
                train.len(),
                valid.len()
            )));
        }
        let d = train.n_features as i32;
        let train_set = Dataset::from_slice(&train.x, &train.y, d, true).map_err(lgbm)?;
        let valid_set =
            Dataset::from_slice_with_reference(&valid.x, &valid.y, d, true, Some(&train_set))
                .map_err(lgbm)?;
        let booster =
            Booster::train_with_valid(train_set, Some(valid_set), params).map_err(lgbm)?;
        Ok(LightGbm { booster })
    }

    /// The model text LightGBM writes (`save_model`), which [`LightGbm::from_model_text`] reads back.
    pub fn model_text(&self) -> Result<String> {
        self.booster.save_string().map_err(lgbm)
    }

    pub fn from_model_text(text: &str) -> Result<Self> {
        let booster = Booster::from_string(text).map_err(lgbm)?;
        Ok(LightGbm { booster })
    }

    /// Boosting rounds (trees) the booster predicts with.
    pub fn rounds(&self) -> usize {
        self.booster.num_iterations().max(0) as usize
    }

    pub fn n_features(&self) -> usize {
        self.booster.num_features().max(0) as usize
    }

    /// One prediction per row of `x` (row-major, `n_features` wide).
    pub fn predict_rows(&self, x: &[f32], n_features: usize) -> Result<Vec<f64>> {
        if n_features != self.n_features() {
            return Err(Error::Model(format!(
                "the booster was trained on {} features, the data has {n_features}",
                self.n_features()
            )));
        }
        if x.is_empty() {
            return Ok(Vec::new());
        }
        self.booster
            .predict(x, n_features as i32, true)
            .map_err(lgbm)
    }

    /// Every stock's score on each of `days` (NaN where a stock has no row that day).
    pub fn predict_days(&self, panel: &Panel, days: &[usize]) -> Result<Vec<Vec<f64>>> {
        let n = panel.n_tickers();
        let mut x = Vec::with_capacity(days.len() * n * panel.n_features());
        for &day in days {
            x.extend_from_slice(day_features(panel, day));
        }
        let flat = self.predict_rows(&x, panel.n_features())?;
        Ok(days
            .iter()
            .zip(flat.chunks(n.max(1)))
            .map(|(&day, scores)| {
                scores
                    .iter()
                    .enumerate()
                    .map(|(j, &s)| {
                        if panel.present[day * n + j] {
                            s
                        } else {
                            f64::NAN
                        }
                    })
                    .collect()
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: &[f64], b: &[f64]) -> bool {
        a.len() == b.len()
            && a.iter()
                .zip(b)
                .all(|(x, y)| (x.is_nan() && y.is_nan()) || (x - y).abs() < 1e-12)
    }

    #[test]
    fn cs_rank_norm_is_qlibs_percentile_rank_centred_and_scaled() {
        // ranks 4, 1, 2.5, 2.5 of 4 → pct 1, 0.25, 0.625, 0.625 → −0.5 → × 3.46
        let out = cs_rank_norm(&[0.03, -0.01, 0.02, 0.02]);
        assert!(close(&out, &[1.73, -0.865, 0.4325, 0.4325]), "{out:?}");
        // a NaN is left out of the ranking: the other three rank 1..3 of 3
        let out = cs_rank_norm(&[0.5, f64::NAN, -0.2, 0.1]);
        let expect = [
            (1.0 - 0.5) * 3.46,
            f64::NAN,
            (1.0 / 3.0 - 0.5) * 3.46,
            (2.0 / 3.0 - 0.5) * 3.46,
        ];
        assert!(close(&out, &expect), "{out:?}");
        assert!(cs_rank_norm(&[]).is_empty());
    }

    /// 4 days × 3 stocks × 2 features; feature f of (t, j) is 100 t + 10 j + f, the label of (t, j) is
    /// the return t → t+1, stock 2 is absent on day 1.
    fn panel() -> Panel {
        let (t_len, n, d) = (4, 3, 2);
        let mut present = vec![true; t_len * n];
        present[n + 2] = false;
        let labels: Vec<f32> = (0..t_len * n)
            .map(|i| match i {
                _ if i >= (t_len - 1) * n => f32::NAN,
                _ => [0.01, -0.02, 0.03][i % n] * (1 + i / n) as f32,
            })
            .collect();
        Panel {
            dates: vec![chrono::NaiveDate::default(); t_len],
            tickers: vec!["A".into(), "B".into(), "C".into()],
            feature_names: vec!["f0".into(), "f1".into()],
            features: (0..t_len * n * d)
                .map(|i| (100 * (i / (n * d)) + 10 * (i / d % n) + i % d) as f32)
                .collect(),
            present,
            labels,
            prices: vec![1.0; t_len * n],
        }
    }

    #[test]
    fn labelled_rows_pair_a_days_features_with_its_next_day_return_rank() {
        let p = panel();
        let rows = labelled_rows(&p, &[0, 1, 3]);
        // day 0: 3 stocks; day 1: stock 2 absent; day 3: no next-day return, no rows
        assert_eq!(rows.len(), 5);
        assert_eq!(rows.x.len(), 5 * 2);
        assert_eq!(rows.n_features, 2);
        assert_eq!(rows.x, [0., 1., 10., 11., 20., 21., 100., 101., 110., 111.]);
        // day 0 returns 0.01, −0.02, 0.03 rank 2, 1, 3 of 3; day 1: 0.02, −0.04 rank 2, 1 of 2
        let y: Vec<f64> = rows.y.iter().map(|&v| f64::from(v)).collect();
        let s = 3.46;
        let expect = [
            (2.0 / 3.0 - 0.5) * s,
            (1.0 / 3.0 - 0.5) * s,
            0.5 * s,
            0.5 * s,
            0.0,
        ];
        assert!(
            y.iter().zip(expect).all(|(a, b)| (a - b).abs() < 1e-6),
            "{y:?}"
        );
        assert_eq!(day_features(&p, 2), [200., 201., 210., 211., 220., 221.]);
        // no look-ahead: later days' features leave day 0's and day 1's rows as they were
        let mut later = panel();
        for v in &mut later.features[2 * 3 * 2..] {
            *v = -1.0;
        }
        assert_eq!(labelled_rows(&later, &[0, 1]), labelled_rows(&p, &[0, 1]));
    }

    #[test]
    fn a_booster_learns_a_planted_rule_reloads_from_its_text_and_repeats_itself() {
        // the label is the rank of feature 0; feature 1 is noise
        let (rows, d) = (400usize, 2usize);
        let x: Vec<f32> = (0..rows * d)
            .map(|i| ((i * 7919 + i / d * 31) % 1000) as f32 / 1000.0)
            .collect();
        let y: Vec<f32> = (0..rows).map(|r| x[r * d] - 0.5).collect();
        let train = FeatureRows {
            x: x[..300 * d].to_vec(),
            y: y[..300].to_vec(),
            n_features: d,
        };
        let valid = FeatureRows {
            x: x[300 * d..].to_vec(),
            y: y[300..].to_vec(),
            n_features: d,
        };
        let cfg = LightGbmConfig {
            num_leaves: 8,
            lambda_l1: 0.0,
            lambda_l2: 0.0,
            num_boost_round: 40,
            early_stopping_rounds: 5,
            ..LightGbmConfig::default()
        };
        let params = booster_params(&cfg, 7);
        let model = LightGbm::train(&params, &train, &valid).unwrap();
        assert!((1..=40).contains(&model.rounds()), "{}", model.rounds());
        let pred = model.predict_rows(&valid.x, d).unwrap();
        let truth: Vec<f64> = valid.y.iter().map(|&v| f64::from(v)).collect();
        let ic = crate::stats::rank_ic::spearman(&pred, &truth).unwrap();
        assert!(ic > 0.9, "valid rank correlation {ic}");
        let text = model.model_text().unwrap();
        let again = LightGbm::from_model_text(&text).unwrap();
        assert_eq!(again.predict_rows(&valid.x, d).unwrap(), pred);
        let retrained = LightGbm::train(&params, &train, &valid).unwrap();
        assert_eq!(retrained.model_text().unwrap(), text);
        assert!(model.predict_rows(&valid.x, 3).is_err());
    }
}
