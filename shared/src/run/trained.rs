//! [`TrainedRun`]: a run directory opened for the tasks that need its predictor — its config, run info,
//! prepared panel and its predictor — the model restored from the evaluation checkpoint ([`CheckpointChoice`]:
//! by default the best one, else the latest), the LightGBM booster of `model.kind = "lightgbm"`, or the price
//! factor of `model.kind = "reference"` — loaded once.

use std::path::PathBuf;

use tch::nn::VarStore;
use tch::Device;

use super::dir::{RunDir, BOOSTER_FILE};
use super::info::RunInfo;
use crate::config::{ExperimentConfig, ModelKind, ReferenceFactor};
use crate::data::windows::WindowTensors;
use crate::data::Panel;
use crate::error::{Error, Result};
use crate::eval::predictions::{booster_days, predict_days, reference_days, DayPredictions};
use crate::model::lightgbm::LightGbm;
use crate::model::{build_model, FactorModel};
use crate::train::boosting::load_booster;
use crate::train::checkpoint::{load_checkpoint, CheckpointChoice};
use crate::train::trainer::evaluation_checkpoint;

/// What scores a run's days.
pub enum Scorer {
    /// A trained model and the variables it refers to.
    Model {
        model: Box<dyn FactorModel>,
        vars: VarStore,
    },
    /// A LightGBM booster (`model.lgb.txt`): a predictor that is not a torch module.
    Booster(LightGbm),
    /// A zero-training reference factor: scores come from prices, there is no checkpoint.
    Reference(ReferenceFactor),
}

pub struct TrainedRun {
    pub dir: RunDir,
    pub config: ExperimentConfig,
    pub info: RunInfo,
    pub panel: Panel,
    pub scorer: Scorer,
    /// The restored checkpoint (the booster file for LightGBM); None for a reference factor.
    pub checkpoint: Option<PathBuf>,
    /// The checkpoint's optimizer step (the booster's rounds for LightGBM).
    pub checkpoint_step: u64,
    /// How `checkpoint` was chosen.
    pub choice: CheckpointChoice,
    pub device: Device,
}

impl TrainedRun {
    /// Opens `dir` on `device`; `purpose` completes the message when there is no checkpoint
    /// ("has no checkpoint{purpose}").
    pub fn open(
        dir: &RunDir,
        device: Device,
        choice: CheckpointChoice,
        purpose: &str,
    ) -> Result<Self> {
        let (config, info) = dir.load()?;
        let panel = Panel::load(&info.data_dir)?;
        let missing =
            |what: &str| Error::Run(format!("{} has no {what}{purpose}", dir.path().display()));
        let (scorer, checkpoint, checkpoint_step) = match config.model.kind {
            ModelKind::Reference => (Scorer::Reference(config.model.reference), None, 0),
            ModelKind::LightGbm => {
                let path = dir.booster();
                if !path.is_file() {
                    return Err(missing(&format!("booster ({BOOSTER_FILE})")));
                }
                let booster = load_booster(&path)?;
                let rounds = booster.rounds() as u64;
                (Scorer::Booster(booster), Some(path), rounds)
            }
            _ => {
                let checkpoint =
                    evaluation_checkpoint(dir.path(), config.train.keep_checkpoints, choice)?
                        .ok_or_else(|| missing("checkpoint"))?;
                let mut vars = VarStore::new(device);
                let model = build_model(
                    &vars.root(),
                    &config,
                    panel.n_tickers() as i64,
                    panel.n_features() as i64,
                    config.data.window as i64,
                )?;
                let state = load_checkpoint(&checkpoint, &mut vars, None)?;
                (Scorer::Model { model, vars }, Some(checkpoint), state.step)
            }
        };
        Ok(TrainedRun {
            dir: dir.clone(),
            config,
            info,
            panel,
            scorer,
            checkpoint,
            checkpoint_step,
            choice,
            device,
        })
    }

    /// The panel's windows on the run's device.
    pub fn tensors(&self) -> Result<WindowTensors> {
        WindowTensors::new(&self.panel, self.config.data.window, self.device)
    }

    /// The checkpoint's path, or what stands in for it, for reports.
    pub fn checkpoint_label(&self) -> String {
        self.checkpoint.as_ref().map_or_else(
            || {
                format!(
                    "none (reference factor {})",
                    self.config.model.reference.name()
                )
            },
            |c| c.display().to_string(),
        )
    }

    /// The trained model; None for a reference factor.
    pub fn model(&self) -> Option<&dyn FactorModel> {
        match &self.scorer {
            Scorer::Model { model, .. } => Some(model.as_ref()),
            Scorer::Booster(_) | Scorer::Reference(_) => None,
        }
    }

    /// The trained torch model, or an error saying that a booster or a reference factor has none to
    /// `purpose`.
    pub fn require_model(&self, purpose: &str) -> Result<&dyn FactorModel> {
        self.model().ok_or_else(|| {
            let what = match self.scorer {
                Scorer::Booster(_) => "a LightGBM booster".to_string(),
                _ => format!(
                    "the reference factor {}",
                    self.config.model.reference.name()
                ),
            };
            Error::Run(format!(
                "{} is {what}: it has no torch model {purpose}",
                self.dir.path().display(),
            ))
        })
    }

    /// Scores (and the model's risk, where it has one) of every day in `ends`.
    pub fn predict_days(
        &self,
        tensors: &WindowTensors,
        ends: &[usize],
    ) -> Result<Vec<DayPredictions>> {
        match &self.scorer {
            Scorer::Model { model, .. } => predict_days(
                |x| model.predict_with_risk(x),
                tensors,
                &self.panel,
                ends,
                64,
            ),
            Scorer::Booster(booster) => booster_days(booster, &self.panel, ends),
            Scorer::Reference(factor) => Ok(reference_days(*factor, &self.panel, ends)),
        }
    }
}
