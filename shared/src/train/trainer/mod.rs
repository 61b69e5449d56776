//! The training loop on one device: seeded batches, forward, a finite-loss check before every optimizer
//! step, gradient clipping, AdamW with warm-up/decay, per-step loss log, validation RankIC, checkpoints and
//! exact resume.
//!
//! Determinism: the model is initialised after `manual_seed(seed)`, every step reseeds torch's RNG from
//! (seed, step) and batch order depends only on (seed, epoch), so a run resumed from a checkpoint takes the
//! same steps as an uninterrupted one.
//!
//! Host reads: per step only the loss (the finite check) and the gradient norm (clipping). The loss terms
//! stay on the device ([`super::pending`]) and reach `losses.csv` once per `train.log_every`, before every
//! checkpoint, at each epoch's end and at the end of the run, so every step still has its row and a resumed
//! run redoes exactly the rows after its checkpoint.
//!
//! Data parallel (world size W > 1, see `crate::distributed`, bookkeeping in [`super::replicas`]): the
//! sampler's batch is the GLOBAL batch; rank r trains on its contiguous r-th 1/W slice. After backward the
//! gradients are averaged over ranks in flat buckets, then clipped (the norm is global and identical
//! everywhere) and applied, so the replicas stay identical. The loss is averaged over ranks before the
//! finite check (a non-finite value on any rank skips the step on all), the buffered loss terms when they
//! are logged. Rank 0 alone writes logs, checkpoints and validation (every valid day once); the others
//! receive its validation summary. Codebooks and buffers (dead-code resets use each rank's own batch) are
//! broadcast from rank 0 after every step. Loss terms that couple the samples of a batch (STORM's CLIP and
//! diversity) are computed over the global batch (`distributed::cross_rank`).

mod step;

use std::fs;
use std::path::{Path, PathBuf};

use tch::nn::VarStore;
use tch::{Device, Tensor};

use super::checkpoint::{CheckpointChoice, Checkpointer, TrainState};
use super::console::Console;
use super::grad_probe::GradProbe;
use super::loss_log::{LossLog, LossRow};
use super::optimizer::{AdamW, AdamWConfig};
use super::pending::PendingRows;
use super::replicas::Replicas;
use super::schedule::LinearWarmupDecay;
use crate::config::{ExperimentConfig, SelectBy, Split};
use crate::data::windows::{split_window_ends, BatchSampler, Labels, WindowTensors};
use crate::data::Panel;
use crate::distributed::{Collective, CrossRank};
use crate::error::{Error, Result};
use crate::eval::predictions::{ic_summary, predict_days};
use crate::model::{build_model, FactorModel, ModelOutput};
use crate::stats::rank_ic::IcSummary;
use crate::telemetry;
use step::step_seed;
pub use step::{rank_slice, record_step};

pub const LOSS_LOG: &str = "losses.csv";
pub const VALID_LOG: &str = "valid.csv";
pub const GRAD_NORM_LOG: &str = "grad_norms.csv";

#[derive(Debug, Clone)]
pub struct TrainOptions {
    pub device: Device,
    /// Stop after this many optimizer steps in total (the schedule still spans the configured epochs).
    pub max_steps: Option<u64>,
    /// Continue from the latest checkpoint in the run directory.
    pub resume: bool,
    /// A progress bar on stderr.
    pub progress: bool,
    /// One JSON progress line per optimizer step on stdout (`super::progress::TrainProgress`).
    pub progress_lines: bool,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct TrainOutcome {
    pub steps: u64,
    pub total_steps: u64,
    pub epochs_completed: u64,
    pub skipped_steps: u64,
    pub final_loss: f64,
    pub best_valid_rank_ic: Option<f64>,
    pub best_step: Option<u64>,
    pub last_valid: Option<IcSummary>,
    pub seconds: f64,
    pub samples_per_second: f64,
}

pub struct Trainer<'a> {
    cfg: &'a ExperimentConfig,
    panel: &'a Panel,
    run_dir: PathBuf,
    opts: TrainOptions,
    vs: VarStore,
    model: Box<dyn FactorModel>,
    opt: AdamW,
    tensors: WindowTensors,
    sampler: BatchSampler,
    valid_ends: Vec<usize>,
    schedule: LinearWarmupDecay,
    checkpoints: Checkpointer,
    /// The process group's replicas (world size 1: every exchange a no-op).
    replicas: Replicas,
    /// Per-term gradient norms on logging steps, for models with several loss terms.
    grad_probe: Option<GradProbe>,
}

impl<'a> Trainer<'a> {
    pub fn new(
        cfg: &'a ExperimentConfig,
        panel: &'a Panel,
        run_dir: &Path,
        opts: TrainOptions,
    ) -> Result<Self> {
        let t = &cfg.train;
        tch::manual_seed(step_seed(t.seed, u64::MAX >> 20));
        // initialised on the CPU and then moved, so a seed gives the same initial model on every device
        // (the GPU check compares CUDA's first losses with the CPU's)
        let mut vs = VarStore::new(Device::Cpu);
        let model = build_model(
            &vs.root(),
            cfg,
            panel.n_tickers() as i64,
            panel.n_features() as i64,
            cfg.data.window as i64,
        )?;
        vs.set_device(opts.device);
        let opt = AdamW::new(
            &vs,
            AdamWConfig {
                beta1: t.beta1,
                beta2: t.beta2,
                eps: 1e-8,
                weight_decay: t.weight_decay,
            },
        );
        let train_ends = split_window_ends(
            panel,
            &cfg.splits,
            Split::Train,
            cfg.data.window,
            Labels::Required,
        )?;
        let valid_ends = split_window_ends(
            panel,
            &cfg.splits,
            Split::Valid,
            cfg.data.window,
            Labels::Optional,
        )?;
        let sampler = BatchSampler {
            drop_last: train_ends.len() >= t.batch_size,
            ends: train_ends,
            batch_size: t.batch_size,
            shuffle: true,
            seed: t.seed,
        };
        let per_epoch = sampler.batches_per_epoch() as u64;
        let schedule = LinearWarmupDecay {
            peak: t.lr,
            warmup_steps: t.warmup_epochs as u64 * per_epoch,
            total_steps: t.epochs as u64 * per_epoch,
        };
        let grad_probe = GradProbe::new(&vs, model.gradient_probe(t));
        Ok(Trainer {
            tensors: WindowTensors::new(panel, cfg.data.window, opts.device)?,
            checkpoints: Checkpointer::new(run_dir, t.keep_checkpoints),
            run_dir: run_dir.to_path_buf(),
            cfg,
            panel,
            opts,
            vs,
            model,
            opt,
            sampler,
            valid_ends,
            schedule,
            grad_probe,
            replicas: Replicas::single(),
        })
    }

    /// Trains as one rank of a data-parallel group: `train.batch_size` is the global batch and must divide
    /// by the world size. Only rank 0 shows progress.
    pub fn with_collective(mut self, comm: Box<dyn Collective>) -> Result<Self> {
        let world = comm.world_size();
        if !self.cfg.train.batch_size.is_multiple_of(world) {
            return Err(Error::Training(format!(
                "train.batch_size {} (the global batch) does not divide by the world size {world}",
                self.cfg.train.batch_size
            )));
        }
        if !comm.is_rank0() {
            self.opts.progress = false;
            self.opts.progress_lines = false;
        }
        self.replicas = Replicas::new(comm, &self.vs);
        if world > 1 {
            self.model
                .use_cross_rank(CrossRank::new(self.replicas.collective()));
        }
        Ok(self)
    }

    pub fn model(&self) -> &dyn FactorModel {
        self.model.as_ref()
    }

    fn fresh_state(&self) -> TrainState {
        TrainState::fresh(self.cfg.train.seed, self.cfg.hash())
    }

    fn initial_state(&mut self) -> Result<TrainState> {
        if !self.opts.resume {
            return match self.checkpoints.latest() {
                Some(dir) => Err(Error::Run(format!(
                    "{} already holds checkpoints (latest {}); pass --resume to continue it or choose a new --out",
                    self.run_dir.display(),
                    dir.display()
                ))),
                None => Ok(self.fresh_state()),
            };
        }
        let Some((dir, state)) = self
            .checkpoints
            .load_latest_readable(&mut self.vs, &mut self.opt)?
        else {
            return Ok(self.fresh_state());
        };
        if state.config_hash != self.cfg.hash() {
            return Err(Error::Run(format!(
                "{} was written with a different config (hash {} vs {}); resume with the run's \
                 config.toml or start a new --out",
                dir.display(),
                state.config_hash,
                self.cfg.hash()
            )));
        }
        tracing::info!(step = state.step, "resumed from {}", dir.display());
        Ok(state)
    }

    /// Validation RankIC with the current parameters.
    pub fn validate(&self) -> Result<IcSummary> {
        let days = predict_days(
            |x| (self.model.predict(x), None),
            &self.tensors,
            self.panel,
            &self.valid_ends,
            self.cfg.train.batch_size.max(32),
        )?;
        Ok(ic_summary(&days))
    }

    fn forward(&self, x: &Tensor, y: &Tensor) -> ModelOutput {
        let bf16 = self.cfg.train.bf16 && self.opts.device.is_cuda();
        tch::autocast(bf16, || self.model.forward_loss(x, y, &self.cfg.train))
    }

    /// Evaluates on valid (rank 0; the others receive its summary), records it, and refreshes `best/` when
    /// it improves.
    fn evaluate_and_keep_best(
        &mut self,
        state: &mut TrainState,
        log: &LossLog,
    ) -> Result<IcSummary> {
        let summary = self.replicas.summary_from_rank0(|| self.validate())?;
        log.append_valid(state.step, state.epoch, &summary)?;
        telemetry::record_eval(
            "valid",
            summary.rank_ic,
            summary.rank_icir,
            summary.ic,
            summary.icir,
        );
        let score = selection_score(self.cfg.train.select_by, state, summary.rank_ic);
        let better = score.is_finite() && state.best_valid_rank_ic.is_none_or(|best| score > best);
        if better {
            state.best_valid_rank_ic = Some(score);
            state.best_step = Some(state.step);
            if self.replicas.is_rank0() {
                self.checkpoints.save_best(&self.vs, &self.opt, state)?;
            }
        }
        tracing::info!(
            step = state.step,
            rank_ic = summary.rank_ic,
            rank_icir = summary.rank_icir,
            "validation"
        );
        Ok(summary)
    }

    /// Rank 0 writes checkpoint `state.step`.
    fn save_checkpoint(&self, state: &TrainState) -> Result<()> {
        if self.replicas.is_rank0() {
            self.checkpoints.save(&self.vs, &self.opt, state)?;
        }
        Ok(())
    }

    /// The buffered rows to `losses.csv` (their terms copied to the host in one transfer); returns them.
    fn flush(&self, pending: &mut PendingRows, log: &LossLog) -> Result<Vec<LossRow>> {
        let rows = pending.take(&self.replicas)?;
        log.append_steps(&rows)?;
        Ok(rows)
    }

    /// A failed step still leaves the rows before it in the log, as far as that is safe: at world size 1,
    /// and after the non-finite abort (every rank takes it at the same step, so the collective is safe).
    fn flush_after_error(
        &self,
        err: Error,
        state: &TrainState,
        pending: &mut PendingRows,
        log: &LossLog,
    ) -> Error {
        let aborted = state.consecutive_skipped >= self.cfg.train.max_consecutive_nonfinite;
        if self.replicas.world() == 1 || aborted {
            if let Err(e) = self.flush(pending, log) {
                tracing::warn!("losses.csv after a failed step: {e}");
            }
        }
        err
    }

    pub fn run(&mut self) -> Result<TrainOutcome> {
        fs::create_dir_all(&self.run_dir).map_err(|e| Error::io(&self.run_dir, e))?;
        let mut state = self.initial_state()?;
        self.replicas.sync_from_rank0()?;
        if self.sampler.batches_per_epoch() == 0 {
            return Err(Error::Data("the training split has no batch".into()));
        }
        let total = self.schedule.total_steps;
        let stop_at = self.opts.max_steps.map_or(total, |m| m.min(total));
        let log = LossLog::open(&self.run_dir, state.step, self.replicas.is_rank0())?;
        let mut pending = PendingRows::default();
        let (bar, lines) = (self.opts.progress, self.opts.progress_lines);
        let console = Console::start(bar, lines, state.step, state.samples_seen, stop_at);
        let (mut final_loss, mut last_valid, mut evaluated_at) = (f64::NAN, None, None);
        'epochs: while state.step < stop_at {
            let batches = self.sampler.epoch(state.epoch);
            while state.batch_in_epoch < batches.len() {
                if state.step >= stop_at {
                    break 'epochs;
                }
                let ends = &batches[state.batch_in_epoch];
                let step = match self.train_step(&mut state, ends) {
                    Ok(step) => step,
                    Err(e) => return Err(self.flush_after_error(e, &state, &mut pending, &log)),
                };
                if step.taken {
                    final_loss = step.loss;
                }
                pending.push(step.row(&state), &step.out.terms);
                state.step += 1;
                state.batch_in_epoch += 1;
                state.samples_seen += ends.len() as u64;
                self.after_step(&state, &step, &mut pending, &log, &console)?;
            }
            state.epoch += 1;
            state.batch_in_epoch = 0;
            self.flush(&mut pending, &log)?;
            if state.epoch.is_multiple_of(self.cfg.train.eval_every_epochs) {
                last_valid = Some(self.evaluate_and_keep_best(&mut state, &log)?);
                evaluated_at = Some(state.step);
            }
            if self.cfg.train.checkpoint_every == 0 {
                self.save_checkpoint(&state)?;
            }
        }
        self.flush(&mut pending, &log)?;
        if evaluated_at != Some(state.step) {
            last_valid = Some(self.evaluate_and_keep_best(&mut state, &log)?);
        }
        self.save_checkpoint(&state)?;
        // every rank ends together (and learns of a failure of rank 0's last save)
        self.replicas.check_agree()?;
        console.finish();
        Ok(self.outcome(&state, final_loss, last_valid, &console))
    }

    fn outcome(
        &self,
        state: &TrainState,
        final_loss: f64,
        last_valid: Option<IcSummary>,
        console: &Console,
    ) -> TrainOutcome {
        let seconds = console.seconds();
        TrainOutcome {
            steps: state.step,
            total_steps: self.schedule.total_steps,
            epochs_completed: state.epoch,
            skipped_steps: state.skipped_steps,
            final_loss,
            best_valid_rank_ic: state.best_valid_rank_ic,
            best_step: state.best_step,
            last_valid,
            seconds,
            samples_per_second: console.samples_since_start(state.samples_seen) / seconds.max(1e-9),
        }
    }
}

/// Records a validation RankIC in `state` and returns the selection score of this evaluation.
fn selection_score(select_by: SelectBy, state: &mut TrainState, rank_ic: f64) -> f64 {
    let recent = &mut state.recent_valid_rank_ics;
    recent.push(rank_ic);
    if recent.len() > SelectBy::SMOOTHING {
        recent.remove(0);
    }
    match select_by {
        SelectBy::RankIc => rank_ic,
        SelectBy::SmoothedRankIc => recent.iter().sum::<f64>() / recent.len() as f64,
    }
}

/// Path of the checkpoint a finished run is evaluated with (see [`CheckpointChoice`]); `None` when the run
/// has no checkpoint at all. A named step that is not on disk is an error listing the kept ones.
pub fn evaluation_checkpoint(
    run_dir: &Path,
    keep: usize,
    choice: CheckpointChoice,
) -> Result<Option<PathBuf>> {
    let ckpt = Checkpointer::new(run_dir, keep);
    Ok(match choice {
        CheckpointChoice::Best if ckpt.best().is_some() => ckpt.best(),
        CheckpointChoice::Best | CheckpointChoice::Last => ckpt.latest(),
        CheckpointChoice::Step(step) => {
            let kept = ckpt.list();
            match kept.iter().find(|(s, _)| *s == step) {
                Some((_, path)) => Some(path.clone()),
                None if kept.is_empty() => None,
                None => {
                    return Err(Error::Run(format!(
                        "{} has no checkpoint at step {step}; kept steps: {}",
                        run_dir.display(),
                        kept.iter()
                            .map(|(s, _)| s.to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )))
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smoothed_selection_averages_the_last_three_evaluations() {
        let mut state = TrainState::fresh(0, String::new());
        let mut plain = state.clone();
        let smoothed: Vec<f64> = [0.03, 0.0, 0.06, -0.03]
            .iter()
            .map(|&ic| {
                assert_eq!(selection_score(SelectBy::RankIc, &mut plain, ic), ic);
                selection_score(SelectBy::SmoothedRankIc, &mut state, ic)
            })
            .collect();
        let expected = [0.03, 0.015, 0.03, 0.01];
        for (got, want) in smoothed.iter().zip(expected) {
            assert!((got - want).abs() < 1e-12, "{smoothed:?}");
        }
        assert_eq!(state.recent_valid_rank_ics, vec![0.0, 0.06, -0.03]);
    }
}
