//! The training loop on one device: seeded batches, forward, a finite-loss check before every optimizer
//! step, gradient clipping, AdamW with warm-up/decay, per-step loss log, validation RankIC, checkpoints and
//! exact resume.
//!
//! Determinism: the model is initialised after `manual_seed(seed)`, every step reseeds torch's RNG from
//! (seed, step) and batch order depends only on (seed, epoch), so a run resumed from a checkpoint takes the
//! same steps as an uninterrupted one.
//!
//! Data parallel (world size W > 1, see `crate::distributed`): the sampler's batch is the GLOBAL batch;
//! rank r trains on its contiguous r-th 1/W slice. After backward the gradients are averaged over ranks in
//! flat buckets, then clipped (the norm is global and identical everywhere) and applied, so the replicas stay
//! identical. Loss and loss terms are averaged over ranks before the finite check (a non-finite value on any
//! rank skips the step on all) and the log. Rank 0 alone writes logs, checkpoints and validation (every
//! valid day once); the others receive its validation summary. Codebooks and buffers (dead-code resets use
//! each rank's own batch) are broadcast from rank 0 after every step. Loss terms that couple the samples of
//! a batch (STORM's CLIP and diversity) are computed over the global batch (`distributed::cross_rank`).

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

use super::checkpoint::{load_checkpoint, Checkpointer, TrainState, BEST_DIR};
use super::optimizer::{AdamW, AdamWConfig};
use super::schedule::LinearWarmupDecay;
use crate::config::{ExperimentConfig, Split};
use crate::data::windows::{split_window_ends, BatchSampler, Labels, WindowTensors};
use crate::data::Panel;
use crate::distributed::cross_rank::lock;
use crate::distributed::{
    reduce_tensors, BucketOp, Collective, CrossRank, SharedCollective, Single,
};
use crate::error::{Error, Result};
use crate::eval::predictions::{ic_summary, predict_days};
use crate::model::{build_model, FactorModel, ModelOutput};
use crate::stats::rank_ic::IcSummary;
use crate::telemetry;

pub const LOSS_LOG: &str = "losses.csv";
pub const VALID_LOG: &str = "valid.csv";

#[derive(Debug, Clone)]
pub struct TrainOptions {
    pub device: Device,
    /// Stop after this many optimizer steps in total (the schedule still spans the configured epochs).
    pub max_steps: Option<u64>,
    /// Continue from the latest checkpoint in the run directory.
    pub resume: bool,
    pub progress: bool,
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

/// Per-step torch seed: distinct per step, independent of how the run got there.
fn step_seed(seed: u64, step: u64) -> i64 {
    (seed.wrapping_mul(1_000_003).wrapping_add(step) & 0x7fff_ffff_ffff) as i64
}

/// Cross-sectional z-score of each window's labels (rank metrics are unaffected; the loss scale is sane).
fn normalise_labels(y: &Tensor) -> Tensor {
    let mean = y.mean_dim(-1, true, Kind::Float);
    let std = y.std_dim(-1, false, true);
    (y - mean) / (std + 1e-8)
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
    /// The process group (world size 1: [`Single`]).
    comm: SharedCollective,
    /// Variables broadcast from rank 0 after every step when W > 1: codebooks and buffers, which a rank
    /// can change from its own data (dead-code resets, usage counters).
    rank_local_vars: Vec<Tensor>,
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
        let vs = VarStore::new(opts.device);
        let model = build_model(
            &vs.root(),
            cfg,
            panel.n_tickers() as i64,
            panel.n_features() as i64,
            cfg.data.window as i64,
        )?;
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
            comm: std::sync::Arc::new(std::sync::Mutex::new(
                Box::new(Single) as Box<dyn Collective>
            )),
            rank_local_vars: Vec::new(),
        })
    }

    /// Trains as one rank of a data-parallel group: `train.batch_size` is the global batch and must divide
    /// by the world size. Only rank 0 shows progress.
    pub fn with_collective(mut self, comm: Box<dyn Collective>) -> Result<Self> {
        let world = comm.world_size();
        if !self.cfg.train.batch_size.is_multiple_of(world) {
            return Err(Error::Data(format!(
                "train.batch_size {} (the global batch) does not divide by the world size {world}",
                self.cfg.train.batch_size
            )));
        }
        if !comm.is_rank0() {
            self.opts.progress = false;
        }
        let mut vars: Vec<(String, Tensor)> = self.vs.variables().into_iter().collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        self.rank_local_vars = vars
            .into_iter()
            .filter(|(name, t)| !t.requires_grad() || name.ends_with("codebook"))
            .map(|(_, t)| t)
            .collect();
        self.comm = std::sync::Arc::new(std::sync::Mutex::new(comm));
        if world > 1 {
            self.model.use_cross_rank(CrossRank::new(self.comm.clone()));
        }
        Ok(self)
    }

    fn world(&self) -> usize {
        lock(&self.comm).world_size()
    }

    /// Every variable (parameters and buffers) from rank 0, so all replicas start identical.
    fn sync_all_variables(&mut self) -> Result<()> {
        let mut vars: Vec<(String, Tensor)> = self.vs.variables().into_iter().collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let tensors: Vec<Tensor> = vars.into_iter().map(|(_, t)| t).collect();
        reduce_tensors(lock(&self.comm).as_mut(), &tensors, BucketOp::Broadcast)
    }

    /// Checks that every rank holds the same variables (checksums compared bit for bit); a collective, so
    /// it is also a barrier.
    fn check_replicas_agree(&mut self) -> Result<()> {
        let world = self.world();
        if world == 1 {
            return Ok(());
        }
        let mut vars: Vec<(String, Tensor)> = self.vs.variables().into_iter().collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let (abs, sq) = tch::no_grad(|| {
            vars.iter().fold((0f64, 0f64), |(a, q), (_, t)| {
                let t = t.to_kind(Kind::Double);
                (
                    a + t.abs().sum(Kind::Double).double_value(&[]),
                    q + t.square().sum(Kind::Double).double_value(&[]),
                )
            })
        });
        let rank = lock(&self.comm).rank();
        let mut sums = vec![0f64; 2 * world];
        sums[2 * rank] = abs;
        sums[2 * rank + 1] = sq;
        lock(&self.comm).all_reduce_f64(&mut sums)?;
        let differs: Vec<usize> = (1..world)
            .filter(|r| {
                sums[2 * r].to_bits() != sums[0].to_bits()
                    || sums[2 * r + 1].to_bits() != sums[1].to_bits()
            })
            .collect();
        if !differs.is_empty() {
            return Err(Error::Data(format!(
                "data-parallel replicas diverged: the parameters of rank(s) {differs:?} differ from rank 0's \
                 (checkpoints hold rank 0's)"
            )));
        }
        Ok(())
    }

    /// Gradients of the trainable variables (name order), averaged over ranks.
    fn all_reduce_gradients(&mut self) -> Result<()> {
        let mut vars: Vec<(String, Tensor)> = self
            .vs
            .variables()
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let grads: Vec<Tensor> = vars
            .iter()
            .map(|(_, t)| t.grad())
            .filter(|g| g.defined())
            .collect();
        reduce_tensors(lock(&self.comm).as_mut(), &grads, BucketOp::Mean)
    }

    pub fn model(&self) -> &dyn FactorModel {
        self.model.as_ref()
    }

    fn fresh_state(&self) -> TrainState {
        TrainState {
            step: 0,
            epoch: 0,
            batch_in_epoch: 0,
            seed: self.cfg.train.seed,
            config_hash: self.cfg.hash(),
            samples_seen: 0,
            skipped_steps: 0,
            consecutive_skipped: 0,
            best_valid_rank_ic: None,
            best_step: None,
        }
    }

    fn initial_state(&mut self) -> Result<TrainState> {
        let latest = self.checkpoints.latest();
        match (self.opts.resume, latest) {
            (true, Some(dir)) => {
                let state = load_checkpoint(&dir, &mut self.vs, Some(&mut self.opt))?;
                if state.config_hash != self.cfg.hash() {
                    return Err(Error::Data(format!(
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
            (false, Some(dir)) => Err(Error::Data(format!(
                "{} already holds checkpoints (latest {}); pass --resume to continue it or choose a new --out",
                self.run_dir.display(),
                dir.display()
            ))),
            (_, None) => Ok(self.fresh_state()),
        }
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

    fn log_header(terms: &[(&str, Tensor)]) -> String {
        let mut h = String::from("step,epoch,lr,loss,grad_norm,skipped");
        for (name, _) in terms {
            h.push(',');
            h.push_str(name);
        }
        h
    }

    /// Keeps only log rows up to `step` (rows a killed run wrote after its last checkpoint are redone).
    fn truncate_log(path: &Path, step: u64) -> Result<()> {
        let Ok(text) = fs::read_to_string(path) else {
            return Ok(());
        };
        let kept: Vec<&str> = text
            .lines()
            .enumerate()
            .filter(|(i, line)| {
                *i == 0
                    || line
                        .split(',')
                        .next()
                        .and_then(|s| s.parse::<u64>().ok())
                        .is_some_and(|s| s <= step)
            })
            .map(|(_, l)| l)
            .collect();
        let mut body = kept.join("\n");
        if !body.is_empty() {
            body.push('\n');
        }
        crate::atomic::write_file(path, body.as_bytes())
    }

    fn append(path: &Path, line: &str) -> Result<()> {
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        writeln!(f, "{line}").map_err(|e| Error::io(path, e))
    }

    fn forward(&self, x: &Tensor, y: &Tensor) -> ModelOutput {
        let bf16 = self.cfg.train.bf16 && self.opts.device.is_cuda();
        tch::autocast(bf16, || self.model.forward_loss(x, y, &self.cfg.train))
    }

    /// Rank 0 validates (every valid day once) and sends the summary to the other ranks.
    fn validate_on_rank0(&mut self) -> Result<IcSummary> {
        if self.world() == 1 {
            return self.validate();
        }
        let mut values = [0.0f64; 5];
        if lock(&self.comm).is_rank0() {
            let s = self.validate()?;
            values = [s.rank_ic, s.rank_icir, s.ic, s.icir, s.n_days as f64];
        }
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let bytes = lock(&self.comm).broadcast_bytes(bytes)?;
        if bytes.len() != 40 {
            return Err(Error::Data(format!(
                "validation summary from rank 0 has {} bytes, expected 40",
                bytes.len()
            )));
        }
        let v = |i: usize| f64::from_le_bytes(bytes[8 * i..8 * i + 8].try_into().expect("8 bytes"));
        Ok(IcSummary {
            rank_ic: v(0),
            rank_icir: v(1),
            ic: v(2),
            icir: v(3),
            n_days: v(4) as usize,
        })
    }

    /// Evaluates on valid, records it, and refreshes `best/` when it improves (files: rank 0 only).
    fn evaluate_and_keep_best(&mut self, state: &mut TrainState) -> Result<IcSummary> {
        let summary = self.validate_on_rank0()?;
        let rank0 = lock(&self.comm).is_rank0();
        let path = self.run_dir.join(VALID_LOG);
        if rank0 && !path.exists() {
            Self::append(&path, "step,epoch,rank_ic,rank_icir,ic,icir,n_days")?;
        }
        if rank0 {
            Self::append(
                &path,
                &format!(
                    "{},{},{},{},{},{},{}",
                    state.step,
                    state.epoch,
                    summary.rank_ic,
                    summary.rank_icir,
                    summary.ic,
                    summary.icir,
                    summary.n_days
                ),
            )?;
        }
        telemetry::record_eval(
            "valid",
            summary.rank_ic,
            summary.rank_icir,
            summary.ic,
            summary.icir,
        );
        let better = summary.rank_ic.is_finite()
            && state
                .best_valid_rank_ic
                .is_none_or(|best| summary.rank_ic > best);
        if better {
            state.best_valid_rank_ic = Some(summary.rank_ic);
            state.best_step = Some(state.step);
            if rank0 {
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

    pub fn run(&mut self) -> Result<TrainOutcome> {
        fs::create_dir_all(&self.run_dir).map_err(|e| Error::io(&self.run_dir, e))?;
        let mut state = self.initial_state()?;
        let world = self.world();
        let rank = lock(&self.comm).rank();
        let rank0 = lock(&self.comm).is_rank0();
        if world > 1 {
            self.sync_all_variables()?;
        }
        let t = self.cfg.train.clone();
        let per_epoch = self.sampler.batches_per_epoch() as u64;
        if per_epoch == 0 {
            return Err(Error::Data("the training split has no batch".into()));
        }
        let total = self.schedule.total_steps;
        let stop_at = self.opts.max_steps.map_or(total, |m| m.min(total));
        let log_path = self.run_dir.join(LOSS_LOG);
        if rank0 {
            Self::truncate_log(&log_path, state.step)?;
            Self::truncate_log(&self.run_dir.join(VALID_LOG), state.step)?;
        }

        let bar = if self.opts.progress {
            let b = ProgressBar::new(stop_at);
            b.set_style(
                ProgressStyle::with_template(
                    "train {bar:30} {pos}/{len} steps [{elapsed}<{eta}] {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            b.set_position(state.step);
            b
        } else {
            ProgressBar::hidden()
        };
        let started = Instant::now();
        let start_samples = state.samples_seen;
        let mut final_loss = f64::NAN;
        let mut last_valid = None;
        let mut evaluated_at = None;
        'epochs: while state.step < stop_at {
            let batches = self.sampler.epoch(state.epoch);
            while state.batch_in_epoch < batches.len() {
                if state.step >= stop_at {
                    break 'epochs;
                }
                let ends = &batches[state.batch_in_epoch];
                let global_samples = ends.len() as u64;
                let local_ends = rank_slice(ends, rank, world)?;
                let step_started = Instant::now();
                tch::manual_seed(step_seed(t.seed, state.step));
                let batch = self.tensors.batch(local_ends)?;
                let y = normalise_labels(&batch.y);
                let out = self.forward(&batch.x, &y);
                let loss = &out.loss;
                let mut value = loss.double_value(&[]);
                let mut terms: Vec<(&str, f64)> = out
                    .terms
                    .iter()
                    .map(|(n, t)| (*n, t.double_value(&[])))
                    .collect();
                if world > 1 {
                    // mean over ranks; a non-finite value anywhere makes the sum non-finite everywhere
                    let mut stats: Vec<f64> = std::iter::once(value)
                        .chain(terms.iter().map(|(_, v)| *v))
                        .collect();
                    lock(&self.comm).all_reduce_f64(&mut stats)?;
                    value = stats[0] / world as f64;
                    for (term, sum) in terms.iter_mut().zip(&stats[1..]) {
                        term.1 = sum / world as f64;
                    }
                }
                let lr = self.schedule.lr(state.step);
                self.opt.zero_grad();
                let mut grad_norm = f64::NAN;
                if value.is_finite() {
                    loss.backward();
                    if world > 1 {
                        self.all_reduce_gradients()?;
                    }
                    grad_norm = self.opt.clip_grad_norm(t.grad_clip);
                }
                if record_step(&mut state, value, grad_norm, t.max_consecutive_nonfinite)? {
                    self.opt.step(lr);
                    final_loss = value;
                } else {
                    self.opt.zero_grad();
                }
                if world > 1 {
                    reduce_tensors(
                        lock(&self.comm).as_mut(),
                        &self.rank_local_vars,
                        BucketOp::Broadcast,
                    )?;
                }
                if rank0 && state.step == 0 {
                    Self::append(&log_path, &Self::log_header(&out.terms))?;
                }
                let mut row = format!(
                    "{},{},{lr:.6e},{value:.6},{grad_norm:.4},{}",
                    state.step + 1,
                    state.epoch,
                    state.skipped_steps
                );
                for (_, term) in &terms {
                    row.push_str(&format!(",{term:.6}"));
                }
                if rank0 {
                    Self::append(&log_path, &row)?;
                }
                telemetry::record_train_step(&telemetry::StepMetrics {
                    loss: value,
                    lr,
                    grad_norm,
                    skipped: !value.is_finite() || !grad_norm.is_finite(),
                    samples: local_ends.len() as u64,
                    seconds: step_started.elapsed().as_secs_f64(),
                    epoch: state.epoch,
                    terms: &terms,
                });
                state.step += 1;
                state.batch_in_epoch += 1;
                state.samples_seen += global_samples;
                bar.set_position(state.step);
                let rate = (state.samples_seen - start_samples) as f64
                    / started.elapsed().as_secs_f64().max(1e-9);
                bar.set_message(format!("loss {value:.4} | {rate:.0} samples/s"));
                if state.step % t.log_every == 0 {
                    if let Some(codes) = self.model.codebook_size() {
                        let indices = [
                            ("ts", out.ts_indices.as_ref()),
                            ("cs", out.cs_indices.as_ref()),
                        ];
                        telemetry::record_codebooks(&indices, codes);
                    }
                    tracing::info!(
                        step = state.step,
                        loss = value,
                        lr,
                        samples_per_s = rate,
                        "train"
                    );
                }
                if rank0 && t.checkpoint_every > 0 && state.step % t.checkpoint_every == 0 {
                    self.checkpoints.save(&self.vs, &self.opt, &state)?;
                }
            }
            state.epoch += 1;
            state.batch_in_epoch = 0;
            if state.epoch % t.eval_every_epochs == 0 {
                last_valid = Some(self.evaluate_and_keep_best(&mut state)?);
                evaluated_at = Some(state.step);
            }
            if rank0 && t.checkpoint_every == 0 {
                self.checkpoints.save(&self.vs, &self.opt, &state)?;
            }
        }
        if evaluated_at != Some(state.step) {
            last_valid = Some(self.evaluate_and_keep_best(&mut state)?);
        }
        if rank0 {
            self.checkpoints.save(&self.vs, &self.opt, &state)?;
        }
        // every rank ends together (and learns of a failure of rank 0's last save)
        self.check_replicas_agree()?;
        bar.finish_and_clear();
        let seconds = started.elapsed().as_secs_f64();
        Ok(TrainOutcome {
            steps: state.step,
            total_steps: total,
            epochs_completed: state.epoch,
            skipped_steps: state.skipped_steps,
            final_loss,
            best_valid_rank_ic: state.best_valid_rank_ic,
            best_step: state.best_step,
            last_valid,
            seconds,
            samples_per_second: (state.samples_seen - start_samples) as f64 / seconds.max(1e-9),
        })
    }
}

/// The finite-loss check that runs before every optimizer step: returns whether the step may be taken. A
/// non-finite loss or gradient norm skips the step (counted in the state and logged); `limit` of them in a
/// row abort training with an error.
pub fn record_step(state: &mut TrainState, loss: f64, grad_norm: f64, limit: u64) -> Result<bool> {
    if loss.is_finite() && grad_norm.is_finite() {
        state.consecutive_skipped = 0;
        return Ok(true);
    }
    state.skipped_steps += 1;
    state.consecutive_skipped += 1;
    tracing::warn!(
        step = state.step,
        loss,
        grad_norm,
        "non-finite loss or gradient: step skipped"
    );
    if state.consecutive_skipped >= limit {
        return Err(Error::Data(format!(
            "{} consecutive steps had a non-finite loss or gradient (last at step {}); lower train.lr or \
             check the data",
            state.consecutive_skipped, state.step
        )));
    }
    Ok(false)
}

/// Rank `rank`'s contiguous share of a global batch of window ends (all of it when `world` is 1).
pub fn rank_slice(ends: &[usize], rank: usize, world: usize) -> Result<&[usize]> {
    if !ends.len().is_multiple_of(world) {
        return Err(Error::Data(format!(
            "a batch of {} windows cannot be split evenly among {world} ranks (the training split is \
             smaller than train.batch_size; lower it to a multiple of the world size)",
            ends.len()
        )));
    }
    let share = ends.len() / world;
    Ok(&ends[rank * share..(rank + 1) * share])
}

/// Path of the checkpoint a finished run is evaluated with: `best/`, else the latest step.
pub fn evaluation_checkpoint(run_dir: &Path, keep: usize) -> Option<PathBuf> {
    let ckpt = Checkpointer::new(run_dir, keep);
    let best = ckpt.dir.join(BEST_DIR);
    if best.join(super::checkpoint::STATE_FILE).exists() {
        Some(best)
    } else {
        ckpt.latest()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> TrainState {
        TrainState {
            step: 7,
            epoch: 0,
            batch_in_epoch: 0,
            seed: 1,
            config_hash: String::new(),
            samples_seen: 0,
            skipped_steps: 0,
            consecutive_skipped: 0,
            best_valid_rank_ic: None,
            best_step: None,
        }
    }

    #[test]
    fn non_finite_steps_are_skipped_counted_and_abort_after_the_limit() {
        let mut s = state();
        assert!(record_step(&mut s, 1.0, 0.5, 3).unwrap());
        assert!(!record_step(&mut s, f64::NAN, f64::NAN, 3).unwrap());
        assert!(!record_step(&mut s, 1.0, f64::INFINITY, 3).unwrap());
        assert_eq!((s.skipped_steps, s.consecutive_skipped), (2, 2));
        // a finite step resets the run of skips but not the total
        assert!(record_step(&mut s, 0.9, 0.4, 3).unwrap());
        assert_eq!((s.skipped_steps, s.consecutive_skipped), (2, 0));
        for _ in 0..2 {
            assert!(!record_step(&mut s, f64::INFINITY, f64::NAN, 3).unwrap());
        }
        let err = record_step(&mut s, f64::NAN, f64::NAN, 3).unwrap_err();
        assert!(err.to_string().contains("3 consecutive steps"), "{err}");
        assert_eq!(s.skipped_steps, 5);
    }

    #[test]
    fn ranks_take_contiguous_equal_shares_of_the_global_batch() {
        let ends: Vec<usize> = (10..18).collect();
        assert_eq!(rank_slice(&ends, 0, 1).unwrap(), ends.as_slice());
        assert_eq!(rank_slice(&ends, 0, 2).unwrap(), &[10, 11, 12, 13]);
        assert_eq!(rank_slice(&ends, 1, 2).unwrap(), &[14, 15, 16, 17]);
        assert_eq!(rank_slice(&ends, 3, 4).unwrap(), &[16, 17]);
        let err = rank_slice(&ends, 0, 3).unwrap_err();
        assert!(err.to_string().contains("among 3 ranks"), "{err}");
    }

    #[test]
    fn labels_are_standardised_across_stocks() {
        let y = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 10.0, 10.0, 40.0]).view([2, 3]);
        let z = normalise_labels(&y);
        let mean = z.mean_dim(-1, false, Kind::Float);
        assert!(mean.abs().max().double_value(&[]) < 1e-6);
        let first: Vec<f32> = Vec::<f32>::try_from(z.get(0)).unwrap();
        // population std of [1, 2, 3] is sqrt(2/3), so the ends are ∓sqrt(3/2)
        let end = 1.5f32.sqrt();
        assert!((first[0] + end).abs() < 1e-5 && (first[2] - end).abs() < 1e-5);
    }
}
