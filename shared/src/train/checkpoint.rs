//! Checkpoints: `checkpoints/step-N/` holds `model.safetensors`, `optim.safetensors` and `state.json`, written
//! in a temporary directory, fsync'd and renamed into place ([`atomic::publish_dir`]), so neither a kill nor
//! a power cut leaves a half-written checkpoint or none at all. The last K are kept; `checkpoints/best/` is
//! a copy of the best one by validation RankIC. Resuming takes the newest checkpoint that reads back.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tch::nn::VarStore;
use tch::Tensor;

use super::optimizer::AdamW;
use crate::atomic;
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

/// The step of a checkpoint directory's name: `step-N`, or `.old-step-N` (the copy a rewrite of step N set
/// aside, see [`atomic::publish_dir`]); the flag says which.
fn parse_step_dir(name: &str) -> Option<(u64, bool)> {
    let (rest, published) = match name.strip_prefix(atomic::ASIDE_PREFIX) {
        Some(rest) => (rest, false),
        None => (name, true),
    };
    let step = rest.strip_prefix("step-")?.parse().ok()?;
    Some((step, published))
}

impl Checkpointer {
    pub fn new(run_dir: &Path, keep_last: usize) -> Self {
        Checkpointer {
            dir: run_dir.join("checkpoints"),
            keep_last: keep_last.max(1),
        }
    }

    /// Writes checkpoint `state.step` and prunes old ones. Returns its directory. Rewriting a step that is
    /// already on disk (the final save after an epoch-end save) replaces it without a moment in which no
    /// complete checkpoint exists.
    pub fn save(&self, vs: &VarStore, opt: &AdamW, state: &TrainState) -> Result<PathBuf> {
        fs::create_dir_all(&self.dir).map_err(|e| Error::io(&self.dir, e))?;
        let name = step_dir_name(state.step);
        let tmp = self.dir.join(format!(".tmp-{name}"));
        write_checkpoint(&tmp, vs, opt, state)?;
        let target = self.dir.join(&name);
        atomic::publish_dir(&tmp, &target)?;
        self.prune()?;
        Ok(target)
    }

    /// Replaces `best/` with the given checkpoint's files.
    pub fn save_best(&self, vs: &VarStore, opt: &AdamW, state: &TrainState) -> Result<()> {
        fs::create_dir_all(&self.dir).map_err(|e| Error::io(&self.dir, e))?;
        let tmp = self.dir.join(".tmp-best");
        write_checkpoint(&tmp, vs, opt, state)?;
        atomic::publish_dir(&tmp, &self.dir.join(BEST_DIR))
    }

    /// The `best/` checkpoint (or the copy a crash while replacing it left aside), if it is complete.
    pub fn best(&self) -> Option<PathBuf> {
        atomic::published_or_aside(&self.dir.join(BEST_DIR)).filter(|d| d.join(STATE_FILE).exists())
    }

    /// Step directories with a complete state file, oldest first; one per step (a step's set-aside copy
    /// stands in for it only while the step itself is missing).
    pub fn list(&self) -> Vec<(u64, PathBuf)> {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut steps: BTreeMap<u64, PathBuf> = BTreeMap::new();
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            let Some((step, published)) = parse_step_dir(&name) else {
                continue;
            };
            if !e.path().join(STATE_FILE).exists() {
                continue;
            }
            if published {
                steps.insert(step, e.path());
            } else {
                steps.entry(step).or_insert_with(|| e.path());
            }
        }
        steps.into_iter().collect()
    }

    pub fn latest(&self) -> Option<PathBuf> {
        self.list().pop().map(|(_, p)| p)
    }

    /// Loads the newest checkpoint that reads back completely into `vs` and `opt` and returns it with its
    /// state; `None` when there is no checkpoint. A truncated or corrupt newer one is skipped with one line
    /// on stderr saying which and why; when none can be read it is an error listing them.
    pub fn load_latest_readable(
        &self,
        vs: &mut VarStore,
        opt: &mut AdamW,
    ) -> Result<Option<(PathBuf, TrainState)>> {
        let all = self.list();
        let mut skipped = Vec::new();
        for (_, dir) in all.iter().rev() {
            match load_checkpoint(dir, vs, Some(&mut *opt)) {
                Ok(state) => return Ok(Some((dir.clone(), state))),
                Err(e) => {
                    eprintln!(
                        "resume: skipping the unreadable checkpoint {} ({e}); trying an older one",
                        dir.display()
                    );
                    skipped.push(dir.display().to_string());
                }
            }
        }
        if skipped.is_empty() {
            return Ok(None);
        }
        Err(Error::Run(format!(
            "no checkpoint in {} can be read (tried {}); move checkpoints/ away to train from the start",
            self.dir.display(),
            skipped.join(", ")
        )))
    }

    fn prune(&self) -> Result<()> {
        let all = self.list();
        let excess = all.len().saturating_sub(self.keep_last);
        for (step, _) in all.into_iter().take(excess) {
            let path = self.dir.join(step_dir_name(step));
            for p in [atomic::aside_path(&path), path] {
                if p.exists() {
                    fs::remove_dir_all(&p).map_err(|e| Error::io(&p, e))?;
                }
            }
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

/// Loads a checkpoint directory into `vs` and `opt` and returns its state. Each file's error names it.
pub fn load_checkpoint(
    dir: &Path,
    vs: &mut VarStore,
    opt: Option<&mut AdamW>,
) -> Result<TrainState> {
    let state = read_state(dir)?;
    let model = dir.join(MODEL_FILE);
    vs.load(&model)
        .map_err(|e| Error::input(&model, format!("cannot load the model: {e}")))?;
    if let Some(opt) = opt {
        let path = dir.join(OPTIM_FILE);
        let tensors = Tensor::read_safetensors(&path)
            .map_err(|e| Error::input(&path, format!("cannot load the optimizer state: {e}")))?;
        opt.load_state(tensors)?;
    }
    Ok(state)
}

pub fn read_state(dir: &Path) -> Result<TrainState> {
    let path = dir.join(STATE_FILE);
    let text = fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    serde_json::from_str(&text)
        .map_err(|e| Error::input(&path, format!("invalid checkpoint state: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::optimizer::AdamWConfig;
    use tch::{nn, Device};

    /// A one-parameter model whose value and optimizer step count say which checkpoint was loaded.
    fn model(value: f64) -> (VarStore, AdamW) {
        let vs = VarStore::new(Device::Cpu);
        let _p = vs.root().var("p", &[2], nn::Init::Const(value));
        let cfg = AdamWConfig {
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.0,
        };
        let mut opt = AdamW::new(&vs, cfg);
        opt.steps = value as i64;
        (vs, opt)
    }

    fn state(step: u64) -> TrainState {
        let mut s = TrainState::fresh(7, "h".into());
        s.step = step;
        s
    }

    fn value(vs: &VarStore) -> f64 {
        vs.variables()["p"].double_value(&[0])
    }

    /// Checkpoints at steps 1, 2, 3 whose parameter equals the step.
    fn three(run: &Path, keep: usize) -> Checkpointer {
        let ckpt = Checkpointer::new(run, keep);
        for step in 1..=3 {
            let (vs, opt) = model(step as f64);
            ckpt.save(&vs, &opt, &state(step)).unwrap();
        }
        ckpt
    }

    fn resume(ckpt: &Checkpointer) -> Result<Option<(PathBuf, TrainState)>> {
        let (mut vs, mut opt) = model(0.0);
        let got = ckpt.load_latest_readable(&mut vs, &mut opt)?;
        if let Some((_, s)) = &got {
            assert_eq!(value(&vs), s.step as f64, "the model is the checkpoint's");
            assert_eq!(
                opt.steps, s.step as i64,
                "the optimizer is the checkpoint's"
            );
        }
        Ok(got)
    }

    #[test]
    fn resume_skips_a_truncated_or_corrupt_newest_checkpoint() {
        let run = tempfile::tempdir().unwrap();
        let ckpt = three(run.path(), 3);
        assert_eq!(resume(&ckpt).unwrap().unwrap().1.step, 3);
        let newest = ckpt.latest().unwrap();
        let model_file = newest.join(MODEL_FILE);
        let len = fs::metadata(&model_file).unwrap().len();
        fs::OpenOptions::new()
            .write(true)
            .open(&model_file)
            .unwrap()
            .set_len(len / 2)
            .unwrap();
        let (dir, got) = resume(&ckpt).unwrap().unwrap();
        assert_eq!(
            (got.step, dir),
            (2, run.path().join("checkpoints/step-00000002"))
        );
        fs::write(
            ckpt.dir.join("step-00000002").join(STATE_FILE),
            "{\"step\": 2",
        )
        .unwrap();
        assert_eq!(resume(&ckpt).unwrap().unwrap().1.step, 1);
        fs::write(ckpt.dir.join("step-00000001").join(OPTIM_FILE), b"").unwrap();
        let err = resume(&ckpt).unwrap_err().to_string();
        assert!(
            err.contains("no checkpoint") && err.contains("step-00000001"),
            "{err}"
        );
        assert!(resume(&Checkpointer::new(&run.path().join("none"), 1))
            .unwrap()
            .is_none());
    }

    #[test]
    fn rewriting_the_last_step_never_leaves_no_checkpoint() {
        let run = tempfile::tempdir().unwrap();
        let ckpt = three(run.path(), 1);
        assert_eq!(ckpt.list().len(), 1);
        let target = ckpt.dir.join("step-00000003");
        // a crash inside the final save's swap: the old copy set aside, the new one not yet in
        fs::rename(&target, atomic::aside_path(&target)).unwrap();
        assert_eq!(resume(&ckpt).unwrap().unwrap().1.step, 3);
        // the final save of the same step completes the swap and leaves one clean directory
        let (vs, opt) = model(3.0);
        ckpt.save(&vs, &opt, &state(3)).unwrap();
        let names: Vec<String> = fs::read_dir(&ckpt.dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().to_string())
            .collect();
        assert_eq!(names, ["step-00000003"]);
        assert_eq!(resume(&ckpt).unwrap().unwrap().1.step, 3);
    }

    #[test]
    fn best_survives_a_crash_while_it_is_replaced() {
        let run = tempfile::tempdir().unwrap();
        let ckpt = Checkpointer::new(run.path(), 1);
        let (vs, opt) = model(1.0);
        ckpt.save_best(&vs, &opt, &state(1)).unwrap();
        ckpt.save_best(&vs, &opt, &state(2)).unwrap();
        let best = ckpt.dir.join(BEST_DIR);
        assert_eq!(ckpt.best(), Some(best.clone()));
        assert_eq!(read_state(&best).unwrap().step, 2);
        fs::rename(&best, atomic::aside_path(&best)).unwrap();
        assert_eq!(read_state(&ckpt.best().unwrap()).unwrap().step, 2);
    }

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
