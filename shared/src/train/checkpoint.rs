//! Checkpoints: `checkpoints/step-N/` holds `model.safetensors`, `optim.safetensors` and `state.json`, written
//! in a temporary directory and renamed into place, so a kill never leaves a half-written checkpoint. The last
//! K are kept; `checkpoints/best/` is a copy of the best one by validation RankIC.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tch::nn::VarStore;
use tch::Tensor;

use super::optimizer::AdamW;
use crate::error::{Error, Result};

pub const MODEL_FILE: &str = "model.safetensors";
pub const OPTIM_FILE: &str = "optim.safetensors";
pub const STATE_FILE: &str = "state.json";
pub const BEST_DIR: &str = "best";

/// Everything besides tensors that an exact resume needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Optimizer steps completed.
    pub step: u64,
    /// Epoch of the next batch and its index inside that epoch's seeded order.
    pub epoch: u64,
    pub batch_in_epoch: usize,
    pub seed: u64,
    pub config_hash: String,
    pub samples_seen: u64,
    pub skipped_steps: u64,
    pub consecutive_skipped: u64,
    /// The best value of the selection criterion (`train.select_by`) so far, and its step.
    pub best_valid_rank_ic: Option<f64>,
    pub best_step: Option<u64>,
    /// Validation RankICs of the latest evaluations (at most `SelectBy::SMOOTHING`), oldest first.
    #[serde(default)]
    pub recent_valid_rank_ics: Vec<f64>,
}

impl TrainState {
    /// The state before the first step of a run.
    pub fn fresh(seed: u64, config_hash: String) -> Self {
        TrainState {
            step: 0,
            epoch: 0,
            batch_in_epoch: 0,
            seed,
            config_hash,
            samples_seen: 0,
            skipped_steps: 0,
            consecutive_skipped: 0,
            best_valid_rank_ic: None,
            best_step: None,
            recent_valid_rank_ics: Vec::new(),
        }
    }
}

/// Which checkpoint a finished run is evaluated with: `best` (the best by validation, else the latest; the
/// default), `last`, or `step-N`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CheckpointChoice {
    #[default]
    Best,
    Last,
    Step(u64),
}

impl std::str::FromStr for CheckpointChoice {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "best" => Ok(Self::Best),
            "last" => Ok(Self::Last),
            _ => s
                .strip_prefix("step-")
                .and_then(|n| n.parse().ok())
                .map(Self::Step)
                .ok_or_else(|| format!("`{s}` is not a checkpoint: use best, last or step-N")),
        }
    }
}

impl std::fmt::Display for CheckpointChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Best => f.write_str("best"),
            Self::Last => f.write_str("last"),
            Self::Step(n) => write!(f, "step-{n}"),
        }
    }
}

pub struct Checkpointer {
    pub dir: PathBuf,
    pub keep_last: usize,
}

fn step_dir_name(step: u64) -> String {
    format!("step-{step:08}")
}

impl Checkpointer {
    pub fn new(run_dir: &Path, keep_last: usize) -> Self {
        Checkpointer {
            dir: run_dir.join("checkpoints"),
            keep_last: keep_last.max(1),
        }
    }

    /// Writes checkpoint `state.step` and prunes old ones. Returns its directory.
    pub fn save(&self, vs: &VarStore, opt: &AdamW, state: &TrainState) -> Result<PathBuf> {
        fs::create_dir_all(&self.dir).map_err(|e| Error::io(&self.dir, e))?;
        let name = step_dir_name(state.step);
        let tmp = self.dir.join(format!(".tmp-{name}"));
        write_checkpoint(&tmp, vs, opt, state)?;
        let target = self.dir.join(&name);
        if target.exists() {
            fs::remove_dir_all(&target).map_err(|e| Error::io(&target, e))?;
        }
        fs::rename(&tmp, &target).map_err(|e| Error::io(&target, e))?;
        self.prune()?;
        Ok(target)
    }

    /// Replaces `best/` with the given checkpoint's files.
    pub fn save_best(&self, vs: &VarStore, opt: &AdamW, state: &TrainState) -> Result<()> {
        let tmp = self.dir.join(".tmp-best");
        write_checkpoint(&tmp, vs, opt, state)?;
        let best = self.dir.join(BEST_DIR);
        let old = self.dir.join(".old-best");
        if best.exists() {
            fs::rename(&best, &old).map_err(|e| Error::io(&best, e))?;
        }
        fs::rename(&tmp, &best).map_err(|e| Error::io(&best, e))?;
        if old.exists() {
            fs::remove_dir_all(&old).map_err(|e| Error::io(&old, e))?;
        }
        Ok(())
    }

    /// Step directories with a complete state file, oldest first.
    pub fn list(&self) -> Vec<(u64, PathBuf)> {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut out: Vec<(u64, PathBuf)> = entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().to_string();
                let step = name.strip_prefix("step-")?.parse::<u64>().ok()?;
                e.path().join(STATE_FILE).exists().then(|| (step, e.path()))
            })
            .collect();
        out.sort_by_key(|(s, _)| *s);
        out
    }

    pub fn latest(&self) -> Option<PathBuf> {
        self.list().pop().map(|(_, p)| p)
    }

    fn prune(&self) -> Result<()> {
        let all = self.list();
        let excess = all.len().saturating_sub(self.keep_last);
        for (_, path) in all.into_iter().take(excess) {
            fs::remove_dir_all(&path).map_err(|e| Error::io(&path, e))?;
        }
        Ok(())
    }
}

fn write_checkpoint(dir: &Path, vs: &VarStore, opt: &AdamW, state: &TrainState) -> Result<()> {
    if dir.exists() {
        fs::remove_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    vs.save(dir.join(MODEL_FILE))?;
    let optim = opt.state();
    Tensor::write_safetensors(&optim, dir.join(OPTIM_FILE))?;
    let json = serde_json::to_vec_pretty(state)?;
    let path = dir.join(STATE_FILE);
    fs::write(&path, json).map_err(|e| Error::io(&path, e))
}

/// Loads a checkpoint directory into `vs` and `opt` and returns its state.
pub fn load_checkpoint(
    dir: &Path,
    vs: &mut VarStore,
    opt: Option<&mut AdamW>,
) -> Result<TrainState> {
    vs.load(dir.join(MODEL_FILE))?;
    if let Some(opt) = opt {
        let tensors = Tensor::read_safetensors(dir.join(OPTIM_FILE))?;
        opt.load_state(tensors)?;
    }
    read_state(dir)
}

pub fn read_state(dir: &Path) -> Result<TrainState> {
    let path = dir.join(STATE_FILE);
    let text = fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    serde_json::from_str(&text)
        .map_err(|e| Error::input(&path, format!("invalid checkpoint state: {e}")))
}

#[cfg(test)]
mod tests {
    use super::CheckpointChoice;

    #[test]
    fn choices_parse_and_print_back() {
        for (text, choice) in [
            ("best", CheckpointChoice::Best),
            ("last", CheckpointChoice::Last),
            ("step-120", CheckpointChoice::Step(120)),
        ] {
            assert_eq!(text.parse::<CheckpointChoice>(), Ok(choice));
            assert_eq!(choice.to_string(), text);
        }
        for bad in ["", "Best", "step-", "step-x", "120"] {
            let err = bad.parse::<CheckpointChoice>().unwrap_err();
            assert!(err.contains("best, last or step-N"), "{err}");
        }
    }
}
