//! The training loop on one device: seeded batches, forward, a finite-loss check before every optimizer
//! step, gradient clipping, AdamW with warm-up/decay, per-step loss log, validation RankIC, checkpoints and
//! exact resume.
//!
//! Determinism: the model is initialised after `manual_seed(seed)`, every step reseeds torch's RNG from
//! (seed, step) and batch order depends only on (seed, epoch), so a run resumed from a checkpoint takes the
//! same steps as an uninterrupted one.

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
use crate::error::{Error, Result};
use crate::eval::predictions::{ic_summary, predict_days};
use crate::eval::rank_ic::IcSummary;
use crate::model::{build_model, FactorModel, ModelOutput};
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
        })
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

    /// Evaluates on valid, records it, and refreshes `best/` when it improves.
    fn evaluate_and_keep_best(&self, state: &mut TrainState) -> Result<IcSummary> {
        let summary = self.validate()?;
        let path = self.run_dir.join(VALID_LOG);
        if !path.exists() {
            Self::append(&path, "step,epoch,rank_ic,rank_icir,ic,icir,n_days")?;
        }
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
            self.checkpoints.save_best(&self.vs, &self.opt, state)?;
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
        let t = self.cfg.train.clone();
        let per_epoch = self.sampler.batches_per_epoch() as u64;
        if per_epoch == 0 {
            return Err(Error::Data("the training split has no batch".into()));
        }
        let total = self.schedule.total_steps;
        let stop_at = self.opts.max_steps.map_or(total, |m| m.min(total));
        let log_path = self.run_dir.join(LOSS_LOG);
        Self::truncate_log(&log_path, state.step)?;
        Self::truncate_log(&self.run_dir.join(VALID_LOG), state.step)?;

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
                let step_started = Instant::now();
                tch::manual_seed(step_seed(t.seed, state.step));
                let batch = self.tensors.batch(ends)?;
                let y = normalise_labels(&batch.y);
                let out = self.forward(&batch.x, &y);
                let loss = &out.loss;
                let value = loss.double_value(&[]);
                let lr = self.schedule.lr(state.step);
                self.opt.zero_grad();
                let mut grad_norm = f64::NAN;
                if value.is_finite() {
                    loss.backward();
                    grad_norm = self.opt.clip_grad_norm(t.grad_clip);
                }
                if record_step(&mut state, value, grad_norm, t.max_consecutive_nonfinite)? {
                    self.opt.step(lr);
                    final_loss = value;
                } else {
                    self.opt.zero_grad();
                }
                if state.step == 0 {
                    Self::append(&log_path, &Self::log_header(&out.terms))?;
                }
                let mut row = format!(
                    "{},{},{lr:.6e},{value:.6},{grad_norm:.4},{}",
                    state.step + 1,
                    state.epoch,
                    state.skipped_steps
                );
                let terms: Vec<(&str, f64)> = out
                    .terms
                    .iter()
                    .map(|(n, t)| (*n, t.double_value(&[])))
                    .collect();
                for (_, term) in &terms {
                    row.push_str(&format!(",{term:.6}"));
                }
                Self::append(&log_path, &row)?;
                telemetry::record_train_step(&telemetry::StepMetrics {
                    loss: value,
                    lr,
                    grad_norm,
                    skipped: !value.is_finite() || !grad_norm.is_finite(),
                    samples: ends.len() as u64,
                    seconds: step_started.elapsed().as_secs_f64(),
                    epoch: state.epoch,
                    terms: &terms,
                });
                state.step += 1;
                state.batch_in_epoch += 1;
                state.samples_seen += ends.len() as u64;
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
                if t.checkpoint_every > 0 && state.step % t.checkpoint_every == 0 {
                    self.checkpoints.save(&self.vs, &self.opt, &state)?;
                }
            }
            state.epoch += 1;
            state.batch_in_epoch = 0;
            if state.epoch % t.eval_every_epochs == 0 {
                last_valid = Some(self.evaluate_and_keep_best(&mut state)?);
                evaluated_at = Some(state.step);
            }
            if t.checkpoint_every == 0 {
                self.checkpoints.save(&self.vs, &self.opt, &state)?;
            }
        }
        if evaluated_at != Some(state.step) {
            last_valid = Some(self.evaluate_and_keep_best(&mut state)?);
        }
        self.checkpoints.save(&self.vs, &self.opt, &state)?;
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
