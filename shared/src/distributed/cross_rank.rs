//! Batch-level loss terms under data parallel. Most loss terms are means over samples, so the mean over
//! ranks of each rank's term is the global term. Contrastive (CLIP) and codebook-usage (diversity) terms
//! are not: they couple the samples of a batch. [`CrossRank`] lets a model compute them over the GLOBAL
//! batch, as one process at W×b would:
//!
//! - every rank assembles the same global inputs — its own rows with gradient, the other ranks' rows as
//!   constants — and computes the same global term `L`;
//! - its gradient is then only the part of ∂L flowing through its own samples; the trainer averages
//!   gradients over ranks, so the term is given gradient weight W ([`grad_scaled`]) and the sum of the
//!   ranks' parts is restored; parameters used directly by the term (not through samples, like CLIP's
//!   logit scale) get gradient weight 1/W on the inside, since every rank sees their full gradient.
//!
//! Values are unchanged by the gradient weights, so the logged term is `L` on every rank.

use std::sync::{Arc, Mutex, MutexGuard};

use tch::{Kind, Tensor};

use super::Collective;
use crate::error::{Error, Result};

/// A job's process group, shared by the trainer and the model.
pub type SharedCollective = Arc<Mutex<Box<dyn Collective>>>;

pub fn lock(c: &SharedCollective) -> MutexGuard<'_, Box<dyn Collective>> {
    // a panic while holding the lock leaves the group as it was; the next collective call reports errors
    c.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// `t` with the same value and its gradient multiplied by `factor`.
pub fn grad_scaled(t: &Tensor, factor: f64) -> Tensor {
    let constant = t.detach();
    &constant + (t - &constant) * factor
}

#[derive(Clone)]
pub struct CrossRank {
    comm: SharedCollective,
    world: usize,
    rank: usize,
}

impl std::fmt::Debug for CrossRank {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CrossRank(rank {} of {})", self.rank, self.world)
    }
}

impl CrossRank {
    pub fn new(comm: SharedCollective) -> CrossRank {
        let (world, rank) = {
            let c = lock(&comm);
            (c.world_size(), c.rank())
        };
        CrossRank { comm, world, rank }
    }

    pub fn world(&self) -> usize {
        self.world
    }

    /// Every rank's rows of `x` (n_r, …), concatenated in rank order; gradient flows through this rank's
    /// rows only. Ranks may hold different numbers of rows.
    pub fn gather_rows(&self, x: &Tensor) -> Result<Tensor> {
        let n = x.size()[0];
        let mut counts = vec![0.0f64; self.world];
        counts[self.rank] = n as f64;
        lock(&self.comm).all_reduce_f64(&mut counts)?;
        let counts: Vec<i64> = counts.iter().map(|&c| c as i64).collect();
        let total: i64 = counts.iter().sum();
        let offset: i64 = counts[..self.rank].iter().sum();
        let row: i64 = x.size()[1..].iter().product();
        let local = x.detach().to_kind(Kind::Float).reshape([-1]);
        let buffer = Tensor::zeros([total * row], (Kind::Float, x.device()));
        buffer.narrow(0, offset * row, n * row).copy_(&local);
        lock(&self.comm).all_reduce_sum(&buffer)?;
        let mut shape = x.size();
        shape[0] = total;
        let all = buffer.to_kind(x.kind()).reshape(&shape);
        let before = all.narrow(0, 0, offset);
        let after = all.narrow(0, offset + n, total - offset - n);
        Ok(Tensor::cat(&[before, x.shallow_clone(), after], 0))
    }

    /// Σ over ranks of `x` (any shape); gradient flows through this rank's `x` only.
    pub fn sum(&self, x: &Tensor) -> Result<Tensor> {
        let total = x.detach().to_kind(Kind::Float).reshape([-1]).copy();
        lock(&self.comm).all_reduce_sum(&total)?;
        let total = total.to_kind(x.kind()).reshape(x.size());
        Ok(x + (total - x.detach()))
    }

    /// Σ over ranks of plain numbers.
    pub fn sum_f64(&self, values: &mut [f64]) -> Result<()> {
        lock(&self.comm).all_reduce_f64(values)
    }
}

/// A failed collective inside a forward pass cannot return an error through the model interface: the term
/// becomes NaN (the step is then not taken) and the trainer's next collective call reports the failure.
pub fn or_nan(term: Result<Tensor>, like: &Tensor) -> Tensor {
    term.unwrap_or_else(|e: Error| {
        tracing::error!("cross-rank loss term: {e}");
        Tensor::full([], f64::NAN, (Kind::Float, like.device()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::distributed::Single;

    #[test]
    fn gradient_scaling_keeps_the_value() {
        let x = Tensor::from_slice(&[1.5f32, -2.0]).set_requires_grad(true);
        let y = grad_scaled(&(&x * &x).sum(Kind::Float), 3.0);
        assert_eq!(y.double_value(&[]), 6.25);
        y.backward();
        assert_eq!(Vec::<f32>::try_from(x.grad()).unwrap(), [9.0, -12.0]);
    }

    #[test]
    fn world_one_gathers_and_sums_to_itself_with_gradient() {
        let comm: SharedCollective = Arc::new(Mutex::new(Box::new(Single)));
        let cr = CrossRank::new(comm);
        let x = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0])
            .reshape([2, 2])
            .set_requires_grad(true);
        let all = cr.gather_rows(&x).unwrap();
        assert_eq!(all.size(), [2, 2]);
        let s = cr.sum(&x).unwrap();
        (all.sum(Kind::Float) + s.sum(Kind::Float) * 2.0).backward();
        assert_eq!(
            Vec::<f32>::try_from(x.grad().reshape([-1])).unwrap(),
            [3.0; 4]
        );
    }
}
