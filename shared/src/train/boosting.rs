//! The boosting trainer of `model.kind = "lightgbm"`: builds the (day, stock) rows of the train and valid
//! splits (the same days the torch trainer uses), fits the booster with early stopping on the valid split,
//! and writes it to the run directory as LightGBM's model text. Returns the same [`TrainOutcome`] the torch
//! trainer does, with boosting rounds in place of optimizer steps.

use std::path::Path;
use std::time::Instant;

use super::trainer::TrainOutcome;
use crate::config::{ExperimentConfig, Split};
use crate::data::windows::{split_window_ends, Labels};
use crate::data::Panel;
use crate::error::{Error, Result};
use crate::eval::predictions::{booster_days, ic_summary};
use crate::model::lightgbm::{booster_params, labelled_rows, LightGbm};

/// The booster in a run directory (LightGBM's own text format; `lightgbm.Booster(model_file=…)` reads it).
pub const BOOSTER_FILE: &str = "model.lgb.txt";

/// Reads the booster a run directory holds.
pub fn load_booster(path: &Path) -> Result<LightGbm> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    LightGbm::from_model_text(&text)
        .map_err(|e| Error::Run(format!("{}: not a LightGBM model: {e}", path.display())))
}

/// Trains the booster `cfg` describes on `panel` and writes it to `<run_dir>/model.lgb.txt`.
/// `max_rounds` caps the boosting rounds below `model.lightgbm.num_boost_round` (smoke runs).
pub fn train_booster(
    cfg: &ExperimentConfig,
    panel: &Panel,
    run_dir: &Path,
    max_rounds: Option<u64>,
) -> Result<TrainOutcome> {
    let window = cfg.data.window;
    let train_days = split_window_ends(panel, &cfg.splits, Split::Train, window, Labels::Required)?;
    let valid_days = split_window_ends(panel, &cfg.splits, Split::Valid, window, Labels::Optional)?;
    let (train, valid) = (
        labelled_rows(panel, &train_days),
        labelled_rows(panel, &valid_days),
    );
    let mut options = cfg.model.lightgbm.clone();
    if let Some(cap) = max_rounds {
        options.num_boost_round = options.num_boost_round.min(cap.max(1) as usize);
    }
    let started = Instant::now();
    let booster = LightGbm::train(&booster_params(&options, cfg.train.seed), &train, &valid)?;
    let seconds = started.elapsed().as_secs_f64();
    std::fs::create_dir_all(run_dir).map_err(|e| Error::io(run_dir, e))?;
    crate::atomic::write_file(
        &run_dir.join(BOOSTER_FILE),
        booster.model_text()?.as_bytes(),
    )?;
    let fitted = booster.predict_rows(&train.x, train.n_features)?;
    let train_mse = fitted
        .iter()
        .zip(&train.y)
        .map(|(p, &y)| (p - f64::from(y)).powi(2))
        .sum::<f64>()
        / fitted.len().max(1) as f64;
    let valid_ic = ic_summary(&booster_days(&booster, panel, &valid_days)?);
    let rounds = booster.rounds() as u64;
    Ok(TrainOutcome {
        steps: rounds,
        total_steps: options.num_boost_round as u64,
        epochs_completed: 1,
        skipped_steps: 0,
        final_loss: train_mse,
        best_valid_rank_ic: valid_ic.rank_ic.is_finite().then_some(valid_ic.rank_ic),
        best_step: Some(rounds),
        last_valid: Some(valid_ic),
        seconds,
        samples_per_second: train.len() as f64 * rounds as f64 / seconds.max(1e-9),
    })
}
