//! `[model.lightgbm]`: the gradient-boosted trees baseline (`model.kind = "lightgbm"`), with Qlib's
//! Alpha158 LightGBM benchmark parameters as defaults, and their range checks.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Qlib's `benchmarks/LightGBM/workflow_config_lightgbm_Alpha158.yaml` (mse loss) and the boosting
/// schedule of its `LGBModel` (1000 rounds, early stopping after 50 without a better validation l2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LightGbmConfig {
    pub learning_rate: f64,
    pub num_leaves: usize,
    /// Tree depth limit; -1 for none.
    pub max_depth: i32,
    pub lambda_l1: f64,
    pub lambda_l2: f64,
    /// Fraction of the features each tree sees (LightGBM's `feature_fraction`).
    pub colsample_bytree: f64,
    /// Fraction of the rows each bagging round draws (`bagging_fraction`). LightGBM only bags when
    /// `bagging_freq` > 0; Qlib sets no frequency, so at the defaults this has no effect, as in Qlib.
    pub subsample: f64,
    /// Bag every this many rounds (0: never, Qlib's recipe).
    pub bagging_freq: usize,
    /// Boosting rounds at most.
    pub num_boost_round: usize,
    /// Stop when the validation l2 has not improved for this many rounds and keep the best round
    /// (0: no early stopping, all `num_boost_round` rounds).
    pub early_stopping_rounds: usize,
    /// Threads LightGBM may use. The bundled build has no OpenMP, so training runs on one thread either
    /// way; the value is passed on for a build that has it (results are deterministic at any count).
    pub threads: usize,
}

impl Default for LightGbmConfig {
    fn default() -> Self {
        LightGbmConfig {
            learning_rate: 0.2,
            num_leaves: 210,
            max_depth: 8,
            lambda_l1: 205.6999,
            lambda_l2: 580.9768,
            colsample_bytree: 0.8879,
            subsample: 0.8789,
            bagging_freq: 0,
            num_boost_round: 1000,
            early_stopping_rounds: 50,
            threads: 1,
        }
    }
}

impl LightGbmConfig {
    /// Range checks; errors name the field under `model.lightgbm`.
    pub(super) fn validate(&self, origin: &str) -> Result<()> {
        let fail = |field: &str, msg: String| {
            Err(Error::config(
                origin,
                format!("model.lightgbm.{field}"),
                msg,
            ))
        };
        if !(self.learning_rate > 0.0 && self.learning_rate.is_finite()) {
            return fail(
                "learning_rate",
                format!("{} must be a positive number", self.learning_rate),
            );
        }
        if !(2..=131_072).contains(&self.num_leaves) {
            return fail(
                "num_leaves",
                format!("{} is out of range 2..=131072", self.num_leaves),
            );
        }
        if self.max_depth == 0 || self.max_depth < -1 {
            return fail(
                "max_depth",
                format!("{} must be at least 1, or -1 for no limit", self.max_depth),
            );
        }
        for (field, v) in [("lambda_l1", self.lambda_l1), ("lambda_l2", self.lambda_l2)] {
            if !(v >= 0.0 && v.is_finite()) {
                return fail(field, format!("{v} must be a finite number >= 0"));
            }
        }
        for (field, v) in [
            ("colsample_bytree", self.colsample_bytree),
            ("subsample", self.subsample),
        ] {
            if !(v > 0.0 && v <= 1.0) {
                return fail(field, format!("{v} must be in (0, 1]"));
            }
        }
        if !(1..=100_000).contains(&self.num_boost_round) {
            return fail(
                "num_boost_round",
                format!("{} is out of range 1..=100000", self.num_boost_round),
            );
        }
        for (field, v) in [
            ("bagging_freq", self.bagging_freq),
            ("early_stopping_rounds", self.early_stopping_rounds),
        ] {
            if v > 100_000 {
                return fail(field, format!("{v} is out of range 0..=100000"));
            }
        }
        if !(1..=1024).contains(&self.threads) {
            return fail(
                "threads",
                format!("{} is out of range 1..=1024", self.threads),
            );
        }
        Ok(())
    }
}
