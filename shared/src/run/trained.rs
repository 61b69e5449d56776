//! [`TrainedRun`]: a run directory opened for the tasks that need its model — its config, run info,
//! prepared panel and the model restored from the evaluation checkpoint ([`CheckpointChoice`]: by default the best one, else the latest),
//! loaded once.

use std::path::PathBuf;

use tch::nn::VarStore;
use tch::Device;

use super::dir::RunDir;
use super::info::RunInfo;
use crate::config::ExperimentConfig;
use crate::data::windows::WindowTensors;
use crate::data::Panel;
use crate::error::{Error, Result};
use crate::model::{build_model, FactorModel};
use crate::train::checkpoint::{load_checkpoint, CheckpointChoice};
use crate::train::trainer::evaluation_checkpoint;

pub struct TrainedRun {
    pub dir: RunDir,
    pub config: ExperimentConfig,
    pub info: RunInfo,
    pub panel: Panel,
    pub model: Box<dyn FactorModel>,
    /// Holds the model's variables (the model refers to them).
    pub vars: VarStore,
    pub checkpoint: PathBuf,
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
        let checkpoint = evaluation_checkpoint(dir.path(), config.train.keep_checkpoints, choice)?
            .ok_or_else(|| {
                Error::Run(format!(
                    "{} has no checkpoint{purpose}",
                    dir.path().display()
                ))
            })?;
        let mut vars = VarStore::new(device);
        let model = build_model(
            &vars.root(),
            &config,
            panel.n_tickers() as i64,
            panel.n_features() as i64,
            config.data.window as i64,
        )?;
        let state = load_checkpoint(&checkpoint, &mut vars, None)?;
        Ok(TrainedRun {
            dir: dir.clone(),
            config,
            info,
            panel,
            model,
            vars,
            checkpoint,
            checkpoint_step: state.step,
            choice,
            device,
        })
    }

    /// The panel's windows on the run's device.
    pub fn tensors(&self) -> Result<WindowTensors> {
        WindowTensors::new(&self.panel, self.config.data.window, self.device)
    }
}
