//! One optimizer step of the [`Trainer`] and the bookkeeping after it: the step itself (forward, finite
//! check, backward, gradient mean over ranks, clipping, update or skip), the per-step seed and label
//! normalisation, each rank's share of the global batch, and what a step hands to the log, telemetry, the
//! console and the periodic checkpoint.

use std::time::Instant;

use tch::{Kind, Tensor};

use super::Trainer;
use crate::error::{Error, Result};
use crate::model::ModelOutput;
use crate::telemetry;
use crate::train::checkpoint::TrainState;
use crate::train::console::Console;
use crate::train::loss_log::{LossLog, LossRow};
use crate::train::pending::PendingRows;

/// What one optimizer step leaves behind for the log, telemetry and the console.
pub(super) struct StepOutput {
    /// The model's output (its loss terms and codebook indices stay on the device).
    pub(super) out: ModelOutput,
    /// Loss as a host value, mean over ranks.
    pub(super) loss: f64,
    pub(super) grad_norm: f64,
    /// Each weighted term's gradient norm on the shared encoder (rank 0, logging steps; else empty).
    pub(super) term_grad_norms: Vec<(&'static str, f64)>,
    pub(super) lr: f64,
    /// The update was applied (the loss and gradient norm were finite).
    pub(super) taken: bool,
    /// Windows this rank trained on.
    pub(super) local_samples: u64,
    pub(super) seconds: f64,
}

/// Per-step torch seed: distinct per step, independent of how the run got there.
pub(super) fn step_seed(seed: u64, step: u64) -> i64 {
    (seed.wrapping_mul(1_000_003).wrapping_add(step) & 0x7fff_ffff_ffff) as i64
}

/// Cross-sectional z-score of each window's labels (rank metrics are unaffected; the loss scale is sane).
fn normalise_labels(y: &Tensor) -> Tensor {
    let mean = y.mean_dim(-1, true, Kind::Float);
    let std = y.std_dim(-1, false, true);
    (y - mean) / (std + 1e-8)
}

impl Trainer<'_> {
    /// One optimizer step on this rank's share of the global batch `ends`: forward, the finite-loss check
    /// (on the mean over ranks), backward, gradient mean over ranks, clipping, then the AdamW update or a
    /// skip; rank 0's codebooks and buffers go to every rank afterwards. The only host reads are the loss
    /// and the gradient norm.
    pub(super) fn train_step(
        &mut self,
        state: &mut TrainState,
        ends: &[usize],
    ) -> Result<StepOutput> {
        let t = &self.cfg.train;
        let local = rank_slice(ends, self.replicas.rank(), self.replicas.world())?;
        let started = Instant::now();
        tch::manual_seed(step_seed(t.seed, state.step));
        let batch = self.tensors.batch(local)?;
        let y = normalise_labels(&batch.y);
        let out = self.forward(&batch.x, &y);
        let mut loss = [out.loss.double_value(&[])];
        self.replicas.mean_f64(&mut loss)?;
        let [loss] = loss;
        let lr = self.schedule.lr(state.step);
        self.opt.zero_grad();
        let mut grad_norm = f64::NAN;
        let mut term_grad_norms = Vec::new();
        if loss.is_finite() {
            if let Some(probe) = self.grad_probe.as_ref().filter(|_| {
                self.replicas.is_rank0() && (state.step + 1).is_multiple_of(t.log_every)
            }) {
                term_grad_norms = probe.measure(&out.terms)?;
            }
            out.loss.backward();
            self.replicas.mean_gradients()?;
            grad_norm = self.opt.clip_grad_norm(t.grad_clip);
        }
        let taken = record_step(state, loss, grad_norm, t.max_consecutive_nonfinite)?;
        if taken {
            self.opt.step(lr);
        } else {
            self.opt.zero_grad();
        }
        self.replicas.broadcast_rank_local()?;
        Ok(StepOutput {
            out,
            loss,
            grad_norm,
            term_grad_norms,
            lr,
            taken,
            local_samples: local.len() as u64,
            seconds: started.elapsed().as_secs_f64(),
        })
    }

    /// Bookkeeping after step `state.step`: the buffered rows go to the log at log and checkpoint steps,
    /// then telemetry, the console, and the periodic checkpoint.
    pub(super) fn after_step(
        &self,
        state: &TrainState,
        step: &StepOutput,
        pending: &mut PendingRows,
        log: &LossLog,
        console: &Console,
    ) -> Result<()> {
        let t = &self.cfg.train;
        let log_now = state.step.is_multiple_of(t.log_every);
        let save_now = t.checkpoint_every > 0 && state.step.is_multiple_of(t.checkpoint_every);
        let rows = if log_now || save_now {
            self.flush(pending, log)?
        } else {
            Vec::new()
        };
        let terms = match rows.last() {
            Some(row) if log_now => row.terms.as_slice(),
            _ => &[],
        };
        telemetry::record_train_step(&telemetry::StepMetrics {
            loss: step.loss,
            lr: step.lr,
            grad_norm: step.grad_norm,
            skipped: !step.taken,
            samples: step.local_samples,
            seconds: step.seconds,
            epoch: state.epoch,
            terms,
        });
        if !step.term_grad_norms.is_empty() {
            log.append_grad_norms(state.step, &step.term_grad_norms)?;
            telemetry::record_term_grad_norms(&step.term_grad_norms);
        }
        let rate = console.step_done(state.step, state.samples_seen, step.loss);
        if log_now {
            if let Some(codes) = self.model.codebook_size() {
                let indices = [
                    ("ts", step.out.ts_indices.as_ref()),
                    ("cs", step.out.cs_indices.as_ref()),
                ];
                crate::model::record_codebook_usage(&indices, codes);
            }
            tracing::info!(
                step = state.step,
                loss = step.loss,
                lr = step.lr,
                samples_per_s = rate,
                "train"
            );
        }
        if save_now {
            self.save_checkpoint(state)?;
        }
        Ok(())
    }
}

impl StepOutput {
    /// The step's log row, its terms still on the device (`state` as the step left it).
    pub(super) fn row(&self, state: &TrainState) -> LossRow {
        LossRow {
            step: state.step + 1,
            epoch: state.epoch,
            lr: self.lr,
            loss: self.loss,
            grad_norm: self.grad_norm,
            skipped: state.skipped_steps,
            terms: Vec::new(),
        }
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
        return Err(Error::Training(format!(
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
        return Err(Error::Training(format!(
            "a batch of {} windows cannot be split evenly among {world} ranks (the training split is \
             smaller than train.batch_size; lower it to a multiple of the world size)",
            ends.len()
        )));
    }
    let share = ends.len() / world;
    Ok(&ends[rank * share..(rank + 1) * share])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> TrainState {
        TrainState {
            step: 7,
            ..TrainState::fresh(1, String::new())
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
